/* harkd: a Phoenix Channels compatible WebSocket server. This file wires the
 * layers together, joins the cluster when asked, and handles signals. */
#include <signal.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"
#include "cli/options.h"
#include "hark/presence.h"
#include "hark/pubsub.h"
#include "hark/redis.h"
#include "server/config.h"
#include "server/server.h"

/* The tracker name that every node uses for presence, so the shards of all
 * nodes talk on the same topics. */
#define PRESENCE_TRACKER_NAME "hark_presence"

typedef struct harkd harkd;

/* A worker thread other than the main one, which is worker 0. Each has its
 * own loop, pubsub group member and server. */
typedef struct harkd_worker {
  harkd *d;
  unsigned index;
  uv_thread_t thread;
  uv_sem_t ready;               /* posted once the worker listens, or failed to */
  int status;                   /* 0, or the libuv error of a failed start */
  int running;                  /* the thread was created */
  uv_loop_t loop;
  hark_pubsub *pubsub;
  hark_server *server;
  hark_server_config config;
} harkd_worker;

struct harkd {
  harkd_options options;
  uv_loop_t *loop;
  hark_pubsub_group *group;     /* NULL with one worker */
  hark_server_shared *shared;
  harkd_worker *workers;        /* [1, options.workers); index 0 unused */
  hark_pubsub *pubsub;
  hark_pubsub_adapter redis;
  hark_presence *presence;
  hark_server *server;
  uv_signal_t sigint, sigterm;
  hark_security_config security;
};

static void on_shutdown_done(hark_server *server, void *arg) {
  harkd *d = arg;
  (void)server;
  uv_stop(d->loop);
}

static void on_worker_shutdown_done(hark_server *server, void *arg) {
  harkd_worker *w = arg;
  (void)server;
  uv_stop(&w->loop);
}

/* Runs on a worker's thread, posted by the main thread. */
static void worker_shutdown(void *arg, int discard) {
  harkd_worker *w = arg;
  if (!discard) hark_server_shutdown(w->server, on_worker_shutdown_done, w);
}

/* Tells every running worker to close its sockets and stop its loop. */
static void stop_workers(harkd *d) {
  for (unsigned i = 1; i < d->options.workers; i++) {
    harkd_worker *w = &d->workers[i];
    if (!w->running || w->status != 0) continue;
    if (hark_pubsub_group_post(d->group, i, worker_shutdown, w) != 0)
      HARK_ERROR("worker_stop_failed", "worker=%u", i);
  }
}

/* Stops cleanly: the other nodes get a message to drop this node's presences
 * at once, then every socket gets close code 1001. */
static void on_signal(uv_signal_t *handle, int signum) {
  harkd *d = handle->data;
  HARK_INFO("signal_received", "signal=%s", signum == SIGINT ? "SIGINT" : "SIGTERM");
  uv_signal_stop(&d->sigint);
  uv_signal_stop(&d->sigterm);
  if (d->options.cluster_url && d->presence)
    hark_tracker_graceful_permdown(hark_presence_tracker(d->presence));
  stop_workers(d);
  hark_server_shutdown(d->server, on_shutdown_done, d);
}

static void close_walk_cb(uv_handle_t *handle, void *arg) {
  (void)arg;
  if (!uv_is_closing(handle)) uv_close(handle, NULL);
}

static void check_demo_files(const hark_server_config *config) {
  char index[1100];
  snprintf(index, sizeof index, "%s/index.html", config->web_root);
  if (access(index, R_OK) != 0)
    HARK_WARN("demo_asset_missing", "path=\"%s\" hint=\"pass --web-root with the folder of index.html\"",
              index);
  if (access(config->phoenix_js, R_OK) != 0)
    HARK_WARN("demo_asset_missing", "path=\"%s\" hint=\"run npm ci, or pass --phoenix-js\"",
              config->phoenix_js);
}

/* The default node name: the host name and the listen port. With port 0 the
 * port is not known yet, so the process id replaces it. */
static void choose_node_name(harkd_options *options) {
  if (options->node_name[0]) return;
  char host[200] = "localhost";
  gethostname(host, sizeof host - 1);
  if (options->server.port != 0)
    snprintf(options->node_name, sizeof options->node_name, "%s:%d", host, options->server.port);
  else
    snprintf(options->node_name, sizeof options->node_name, "%s:pid%ld", host, (long)getpid());
}

static int create_pubsub(harkd *d) {
  hark_pubsub_options pubsub_options = {.node_name = d->options.node_name, .pool_size = 1,
                                        .group = d->group, .group_member = 0};
  if (d->options.cluster_url) {
    hark_redis_options redis_options = {.url = d->options.cluster_url,
                                        .channel_prefix = d->options.redis_prefix,
                                        .sharded = d->options.redis_sharded};
    int rc = hark_redis_adapter_create(&d->redis, d->loop, &redis_options);
    if (rc != 0) {
      HARK_ERROR("startup_failed", "what=redis_adapter error=\"%s\"", hark_strerror(rc));
      return -1;
    }
    pubsub_options.adapter = &d->redis;
  }

  int rc = hark_pubsub_create(&d->pubsub, d->loop, &pubsub_options);
  if (rc != 0) {
    HARK_ERROR("startup_failed", "what=pubsub error=\"%s\"", hark_strerror(rc));
    return -1;
  }
  return 0;
}

/* An idle node heartbeats every max_silent_periods + 1 periods; a down
 * period shorter than that marks idle peers down between heartbeats. */
static void warn_about_flapping(const hark_tracker_replication_options *r) {
  uint64_t idle_interval = r->broadcast_period_ms * (r->max_silent_periods + 1);
  if (r->down_period_ms <= idle_interval)
    HARK_WARN("replication_settings", "down_period_ms=%llu idle_heartbeat_ms=%llu "
              "hint=\"idle peers will be marked down between heartbeats; raise --down-period-ms "
              "or lower --max-silent-periods\"",
              (unsigned long long)r->down_period_ms, (unsigned long long)idle_interval);
}

static int create_presence(harkd *d) {
  harkd_options *options = &d->options;
  if (options->presence_off) return 0;

  hark_presence_options presence_options = {.pubsub = d->pubsub,
                                            .dispatcher_name = HARK_CHANNELS_DISPATCHER,
                                            .node_name = options->node_name,
                                            .pool_size = options->pool_size};
  int rc = hark_presence_create(&d->presence, &presence_options);
  if (rc == 0 && options->cluster_url) warn_about_flapping(&options->replication);
  if (rc == 0 && options->cluster_url)
    rc = hark_tracker_replicate_over_pubsub(hark_presence_tracker(d->presence), d->pubsub,
                                            PRESENCE_TRACKER_NAME, &options->replication);
  if (rc != 0) {
    HARK_ERROR("startup_failed", "what=presence error=\"%s\"", hark_strerror(rc));
    return -1;
  }

  options->server.presence = d->presence;
  options->server.presence_patterns = options->presence_patterns;
  options->server.presence_pattern_count = options->presence_pattern_count;
  return 0;
}

static void log_listening(harkd *d, const char *what) {
  const hark_server_config *config = &d->options.server;
  /* IPv6 addresses are written in brackets, as --listen takes them. */
  int v6 = strchr(config->host, ':') != NULL;
  HARK_INFO(what, "addr=%s%s%s:%d node=\"%s\" cluster=%s workers=%u version=%s", v6 ? "[" : "",
            config->host, v6 ? "]" : "", hark_server_port(d->server), d->options.node_name,
            d->options.cluster_url ? "redis" : "none", d->options.workers, HARK_VERSION);
}

/* Loads --config and the secrets in the environment, and decides the mode.
 * Returns -1 to go on, or an exit status: 2 for an invalid config, 1 for an
 * open server on a non-loopback address without --insecure. */
static int load_security(harkd *d) {
  harkd_options *options = &d->options;
  hark_config_env env = {.jwt_secret = getenv("HARK_JWT_SECRET"), .api_key = getenv("HARK_API_KEY")};
  char error[1024];
  if (hark_security_config_load(&d->security, options->config_path, &env, error, sizeof error) != 0) {
    fprintf(stderr, "harkd: invalid config: %s\n", error);
    return HARKD_EXIT_USAGE;
  }
  options->server.security = &d->security;

  int open = hark_security_config_is_open(&d->security);
  int loopback = hark_address_is_loopback(options->server.host);
  if (open && !loopback && !options->insecure) {
    HARK_ERROR("startup_failed", "what=security addr=%s error=\"no token secret or API key is configured, so "
               "harkd only listens on loopback; configure auth (--config, HARK_JWT_SECRET, HARK_API_KEY) "
               "or pass --insecure\"", options->server.host);
    return 1;
  }
  return -1;
}

/* One line at start that says who may connect. It follows a successful
 * listen, so a start that fails logs only its error. */
static void log_security_mode(const harkd *d) {
  static const char *const origin_modes[] = {"off", "host", "list"};
  int open = hark_security_config_is_open(&d->security);
  int loopback = hark_address_is_loopback(d->options.server.host);
  HARK_INFO("security_mode", "mode=%s tokens=%s api_key=%s check_origin=%s topic_rules=%zu%s",
            open ? "open" : "auth", d->security.verifier ? "on" : "off", d->security.api_key ? "on" : "off",
            origin_modes[d->security.origin.mode], d->security.topics.rule_count,
            open && loopback ? " note=\"open development mode: anyone on this machine may connect; listening on loopback only\""
            : open ? " note=\"open mode on a non-loopback address (--insecure): anyone may connect\"" : "");
}

/* The body of a worker thread: its own loop, pubsub member and server on
 * the shared port. It reports its start through w->ready, then serves until
 * the main thread tells it to stop. */
static void worker_main(void *arg) {
  harkd_worker *w = arg;
  hark_pubsub_options pubsub_options = {.node_name = w->d->options.node_name, .pool_size = 1,
                                        .group = w->d->group, .group_member = w->index};
  int rc = uv_loop_init(&w->loop);
  if (rc != 0) {
    w->status = rc;
    uv_sem_post(&w->ready);
    return;
  }
  rc = hark_pubsub_create(&w->pubsub, &w->loop, &pubsub_options) == 0 ? 0 : UV_ENOMEM;
  if (rc == 0) w->server = hark_server_create(&w->loop, w->pubsub, &w->config);
  if (rc == 0 && !w->server) rc = UV_ENOMEM;
  if (rc == 0) rc = hark_server_listen(w->server);
  w->status = rc;
  uv_sem_post(&w->ready);

  if (rc == 0) {
    HARK_INFO("worker_started", "worker=%u", w->index);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    HARK_INFO("worker_stopped", "worker=%u", w->index);
  }
  if (w->server) hark_server_destroy(w->server);
  if (w->pubsub) hark_pubsub_destroy(w->pubsub);
  uv_walk(&w->loop, close_walk_cb, NULL);
  uv_run(&w->loop, UV_RUN_DEFAULT);
  uv_loop_close(&w->loop);
}

/* Starts workers 1 to N-1 on the port worker 0 bound. Returns 0, or -1 after
 * logging the first failure. */
static int start_workers(harkd *d) {
  unsigned count = d->options.workers;
  for (unsigned i = 1; i < count; i++) {
    harkd_worker *w = &d->workers[i];
    w->d = d;
    w->index = i;
    w->config = d->options.server;
    w->config.port = hark_server_port(d->server);
    if (uv_sem_init(&w->ready, 0) != 0) return -1;
    int rc = uv_thread_create(&w->thread, worker_main, w);
    if (rc == 0) {
      w->running = 1;
      uv_sem_wait(&w->ready);
      rc = w->status;
    }
    uv_sem_destroy(&w->ready);
    if (rc != 0) {
      w->status = rc;
      HARK_ERROR("startup_failed", "what=worker worker=%u error=\"%s\"", i, uv_strerror(rc));
      return -1;
    }
  }
  return 0;
}

static void join_workers(harkd *d) {
  if (!d->workers) return;
  for (unsigned i = 1; i < d->options.workers; i++)
    if (d->workers[i].running) uv_thread_join(&d->workers[i].thread);
}

/* Chooses the worker count and makes what the workers share. */
static int prepare_workers(harkd *d) {
  harkd_options *options = &d->options;
  if (options->workers == 0) {
    unsigned cores = uv_available_parallelism();
    if (cores < 1) cores = 1;
    if (cores > HARKD_MAX_WORKERS) cores = HARKD_MAX_WORKERS;
    options->workers = cores;
  }
  if (options->workers == 1) return 0;

  d->workers = calloc(options->workers, sizeof *d->workers);
  d->shared = hark_server_shared_create();
  if (!d->workers || !d->shared || hark_pubsub_group_create(&d->group, options->workers) != 0) {
    HARK_ERROR("startup_failed", "what=workers error=\"out of memory\"");
    return -1;
  }
  options->server.shared = d->shared;
  return 0;
}

/* Descriptors kept free for Redis, files and logs. */
#define FILE_RESERVE 64

/* Lowers max_connections to fit the open-file limit and returns that limit,
 * or 0 when nothing changed. Each connection uses a file descriptor, and past
 * the limit libuv accepts and closes connections silently. With the cap
 * lowered, clients over it get the documented 503 instead. */
static unsigned long long fit_connections_to_file_limit(hark_server_config *config) {
  struct rlimit limit;
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return 0;
  size_t fit = limit.rlim_cur > FILE_RESERVE ? (size_t)limit.rlim_cur - FILE_RESERVE : 1;
  if (config->max_connections <= fit) return 0;
  config->max_connections = fit;
  return (unsigned long long)limit.rlim_cur;
}

static int run(harkd *d) {
  hark_server_config *config = &d->options.server;
  d->loop = uv_default_loop();
  choose_node_name(&d->options);
  config->node_name = d->options.node_name;

  int security_status = load_security(d);
  if (security_status >= 0) return security_status;
  unsigned long long file_limit = fit_connections_to_file_limit(config);
  if (prepare_workers(d) != 0 || create_pubsub(d) != 0 || create_presence(d) != 0) return 1;
  config->cluster_adapter_ctx = d->options.cluster_url ? d->redis.ctx : NULL;
  d->server = hark_server_create(d->loop, d->pubsub, config);
  if (!d->server) {
    HARK_ERROR("startup_failed", "what=server error=\"out of memory\"");
    return 1;
  }

  int rc = hark_server_listen(d->server);
  if (rc != 0) {
    HARK_ERROR("listen_failed", "addr=%s:%d error=\"%s\"", config->host, config->port, uv_strerror(rc));
    return 1;
  }
  if (start_workers(d) != 0) {
    stop_workers(d);
    return 1;
  }
  check_demo_files(config);
  log_security_mode(d);

  uv_signal_init(d->loop, &d->sigint);
  uv_signal_init(d->loop, &d->sigterm);
  d->sigint.data = d->sigterm.data = d;
  uv_signal_start(&d->sigint, on_signal, SIGINT);
  uv_signal_start(&d->sigterm, on_signal, SIGTERM);

  /* Logged once listening works, so a failed start stays one line. */
  if (file_limit)
    HARK_INFO("max_connections_lowered", "max_connections=%zu open_file_limit=%llu reserve=%d",
              config->max_connections, file_limit, FILE_RESERVE);
  log_listening(d, "listening");
  uv_run(d->loop, UV_RUN_DEFAULT);
  log_listening(d, "stopped");
  return 0;
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  static harkd d;

  hark_server_config_defaults(&d.options.server);
  d.options.server.web_root = HARK_DEFAULT_WEB_ROOT;
  snprintf(d.options.phoenix_js, sizeof d.options.phoenix_js,
           "%s/phoenix/priv/static/phoenix.mjs", HARK_DEFAULT_NODE_MODULES);
  d.options.server.phoenix_js = d.options.phoenix_js;

  int status = harkd_parse_options(argc, argv, &d.options);
  if (status >= 0) return status;

  status = run(&d);
  join_workers(&d);

  /* Tear down in reverse order. The pubsub goes last but one: destroying it
   * closes the Redis connections after their queued commands are written.
   * Every handle must be closed before the loop. */
  if (d.server) hark_server_destroy(d.server);
  hark_security_config_free(&d.security);
  if (d.presence) hark_presence_destroy(d.presence);
  if (d.pubsub) hark_pubsub_destroy(d.pubsub);
  if (d.loop) {
    uv_walk(d.loop, close_walk_cb, NULL);
    uv_run(d.loop, UV_RUN_DEFAULT);
    uv_loop_close(d.loop);
  }
  hark_pubsub_group_destroy(d.group);
  hark_server_shared_free(d.shared);
  free(d.workers);
  return status;
}
