/* harkd: a Phoenix Channels compatible WebSocket server. This file reads the
 * command line, wires the layers together and handles signals. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"
#include "hark/presence.h"
#include "hark/pubsub.h"
#include "server/server.h"

#define EXIT_USAGE 2
#define MAX_PRESENCE_PATTERNS 64

typedef struct harkd {
  uv_loop_t *loop;
  hark_pubsub *pubsub;
  hark_presence *presence;
  hark_server *server;
  const char *presence_patterns[MAX_PRESENCE_PATTERNS];
  size_t presence_pattern_count;
  int presence_off;
  uv_signal_t sigint, sigterm;
  char host[INET6_ADDRSTRLEN];
  char node_name[256];
  char phoenix_js[1024];
} harkd;

static void usage(FILE *out) {
  fprintf(out,
          "Usage: harkd [OPTIONS]\n"
          "\n"
          "A Phoenix Channels compatible WebSocket server with PubSub.\n"
          "\n"
          "Options:\n"
          "  --listen HOST:PORT         address to listen on (default 127.0.0.1:4000,\n"
          "                             or $HARK_LISTEN); port 0 picks a free port\n"
          "  --max-message-bytes N      largest WebSocket message accepted, in bytes\n"
          "                             (default 1048576); larger ones get close code 1009\n"
          "  --idle-timeout-ms N        close a WebSocket that sends nothing for N ms\n"
          "                             (default 60000)\n"
          "  --max-channels N           channels one socket may join (default 100)\n"
          "  --max-body-bytes N         largest HTTP request body, in bytes (default 1048576)\n"
          "  --max-output-bytes N       bytes queued for a socket that reads too slowly before\n"
          "                             it is closed (default 16777216)\n"
          "  --max-connections N        open connections in total (default 100000)\n"
          "  --max-connections-per-ip N open connections from one client address (default 1000)\n"
          "  --handshake-timeout-ms N   time to send a whole HTTP request, including the\n"
          "                             WebSocket upgrade (default 10000)\n"
          "  --presence PATTERN         track presence on topics matching this glob ('*' any\n"
          "                             bytes, '?' one byte); repeatable; default '*'\n"
          "  --no-presence              turn presence off on every topic\n"
          "  --web-root DIR             folder of the demo page (default: the source tree's web/)\n"
          "  --phoenix-js FILE          phoenix.mjs served at /assets/phoenix.mjs (default: from\n"
          "                             node_modules/phoenix in the source tree)\n"
          "  --log-level LEVEL          debug, info, warn or error (default info)\n"
          "  --help                     show this help and exit\n"
          "  --version                  show the version and exit\n");
}

static int usage_error(const char *fmt, const char *value) {
  fprintf(stderr, "harkd: ");
  fprintf(stderr, fmt, value);
  fprintf(stderr, "\nTry 'harkd --help' for the list of options.\n");
  return EXIT_USAGE;
}

/* Parses a decimal number in [min, max]. Returns 0 or -1. */
static int parse_number(const char *text, unsigned long long min, unsigned long long max,
                        unsigned long long *out) {
  if (!text[0] || text[0] == '-' || text[0] == '+') return -1;
  char *end;
  errno = 0;
  unsigned long long value = strtoull(text, &end, 10);
  if (errno || *end || value < min || value > max) return -1;
  *out = value;
  return 0;
}

/* Splits "HOST:PORT" or "[V6]:PORT" and checks both parts. */
static int parse_listen(const char *text, harkd *d, int *port) {
  const char *colon = strrchr(text, ':');
  if (!colon) return -1;
  size_t host_len = (size_t)(colon - text);
  const char *host = text;
  if (host_len >= 2 && host[0] == '[' && host[host_len - 1] == ']') {
    host++;
    host_len -= 2;
  }
  if (host_len == 0 || host_len >= sizeof d->host) return -1;
  memcpy(d->host, host, host_len);
  d->host[host_len] = '\0';
  if (strcmp(d->host, "localhost") == 0) strcpy(d->host, "127.0.0.1");

  struct sockaddr_in6 addr;
  if (uv_ip4_addr(d->host, 0, (struct sockaddr_in *)&addr) != 0 &&
      uv_ip6_addr(d->host, 0, &addr) != 0)
    return -1;

  unsigned long long value;
  if (parse_number(colon + 1, 0, 65535, &value) != 0) return -1;
  *port = (int)value;
  return 0;
}

enum {
  OPT_LISTEN = 256, OPT_MAX_MESSAGE, OPT_IDLE, OPT_MAX_CHANNELS, OPT_MAX_BODY, OPT_WEB_ROOT,
  OPT_PHOENIX_JS, OPT_LOG_LEVEL, OPT_HELP, OPT_VERSION, OPT_PRESENCE, OPT_NO_PRESENCE,
  OPT_MAX_OUTPUT, OPT_MAX_CONNECTIONS, OPT_MAX_CONNECTIONS_PER_IP, OPT_HANDSHAKE_TIMEOUT,
};

static const struct option long_options[] = {
    {"listen", required_argument, NULL, OPT_LISTEN},
    {"max-message-bytes", required_argument, NULL, OPT_MAX_MESSAGE},
    {"idle-timeout-ms", required_argument, NULL, OPT_IDLE},
    {"max-channels", required_argument, NULL, OPT_MAX_CHANNELS},
    {"max-body-bytes", required_argument, NULL, OPT_MAX_BODY},
    {"web-root", required_argument, NULL, OPT_WEB_ROOT},
    {"phoenix-js", required_argument, NULL, OPT_PHOENIX_JS},
    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
    {"max-output-bytes", required_argument, NULL, OPT_MAX_OUTPUT},
    {"max-connections", required_argument, NULL, OPT_MAX_CONNECTIONS},
    {"max-connections-per-ip", required_argument, NULL, OPT_MAX_CONNECTIONS_PER_IP},
    {"handshake-timeout-ms", required_argument, NULL, OPT_HANDSHAKE_TIMEOUT},
    {"presence", required_argument, NULL, OPT_PRESENCE},
    {"no-presence", no_argument, NULL, OPT_NO_PRESENCE},
    {"help", no_argument, NULL, OPT_HELP},
    {"version", no_argument, NULL, OPT_VERSION},
    {NULL, 0, NULL, 0},
};

/* Parses the command line into `config`. Returns -1 to continue, or an exit
 * status. */
static int parse_args(int argc, char **argv, harkd *d, hark_server_config *config) {
  const char *listen = getenv("HARK_LISTEN");
  if (listen && !*listen) listen = NULL;
  unsigned long long n;
  int opt;

  opterr = 0;
  while ((opt = getopt_long(argc, argv, ":", long_options, NULL)) != -1) {
    switch (opt) {
      case OPT_LISTEN: listen = optarg; break;
      case OPT_MAX_MESSAGE:
        if (parse_number(optarg, 1, 1ULL << 31, &n) != 0)
          return usage_error("invalid --max-message-bytes '%s': expected a number of bytes from 1 to 2147483648", optarg);
        config->max_message_bytes = (size_t)n;
        break;
      case OPT_IDLE:
        if (parse_number(optarg, 1, 86400000ULL, &n) != 0)
          return usage_error("invalid --idle-timeout-ms '%s': expected milliseconds from 1 to 86400000", optarg);
        config->idle_timeout_ms = n;
        break;
      case OPT_MAX_CHANNELS:
        if (parse_number(optarg, 1, 1000000, &n) != 0)
          return usage_error("invalid --max-channels '%s': expected a number from 1 to 1000000", optarg);
        config->max_channels = (unsigned)n;
        break;
      case OPT_MAX_BODY:
        if (parse_number(optarg, 1, 1ULL << 31, &n) != 0)
          return usage_error("invalid --max-body-bytes '%s': expected a number of bytes from 1 to 2147483648", optarg);
        config->max_body_bytes = (size_t)n;
        break;
      case OPT_PRESENCE:
        if (!optarg[0]) return usage_error("invalid --presence '%s': expected a glob pattern", optarg);
        if (d->presence_pattern_count == MAX_PRESENCE_PATTERNS)
          return usage_error("too many --presence patterns (the limit is 64): '%s'", optarg);
        d->presence_patterns[d->presence_pattern_count++] = optarg;
        break;
      case OPT_NO_PRESENCE: d->presence_off = 1; break;
      case OPT_MAX_OUTPUT:
        if (parse_number(optarg, 1024, 1ULL << 34, &n) != 0)
          return usage_error("invalid --max-output-bytes '%s': expected a number of bytes from 1024 to 17179869184", optarg);
        config->max_output_bytes = (size_t)n;
        break;
      case OPT_MAX_CONNECTIONS:
        if (parse_number(optarg, 1, 10000000, &n) != 0)
          return usage_error("invalid --max-connections '%s': expected a number from 1 to 10000000", optarg);
        config->max_connections = (size_t)n;
        break;
      case OPT_MAX_CONNECTIONS_PER_IP:
        if (parse_number(optarg, 1, 10000000, &n) != 0)
          return usage_error("invalid --max-connections-per-ip '%s': expected a number from 1 to 10000000", optarg);
        config->max_connections_per_ip = (size_t)n;
        break;
      case OPT_HANDSHAKE_TIMEOUT:
        if (parse_number(optarg, 1, 3600000, &n) != 0)
          return usage_error("invalid --handshake-timeout-ms '%s': expected milliseconds from 1 to 3600000", optarg);
        config->handshake_timeout_ms = n;
        break;
      case OPT_WEB_ROOT: config->web_root = optarg; break;
      case OPT_PHOENIX_JS: config->phoenix_js = optarg; break;
      case OPT_LOG_LEVEL: {
        hark_log_level level;
        if (hark_log_parse_level(optarg, &level) != 0)
          return usage_error("invalid --log-level '%s': expected debug, info, warn or error", optarg);
        hark_log_set_level(level);
        break;
      }
      case OPT_HELP: usage(stdout); return 0;
      case OPT_VERSION: printf("harkd %s\n", HARK_VERSION); return 0;
      case ':': return usage_error("option '%s' needs a value", argv[optind - 1]);
      default: return usage_error("unknown option '%s'", argv[optind - 1]);
    }
  }
  if (optind < argc) return usage_error("unexpected argument '%s'", argv[optind]);

  if (listen && parse_listen(listen, d, &config->port) != 0)
    return usage_error("invalid listen address '%s': expected HOST:PORT, e.g. 127.0.0.1:4000", listen);
  if (!listen) parse_listen("127.0.0.1:4000", d, &config->port);
  if (d->presence_off && d->presence_pattern_count > 0)
    return usage_error("%s", "--presence and --no-presence cannot be combined");
  if (d->presence_pattern_count == 0) d->presence_patterns[d->presence_pattern_count++] = "*";
  config->host = d->host;
  return -1;
}

static void on_shutdown_done(hark_server *server, void *arg) {
  harkd *d = arg;
  (void)server;
  uv_stop(d->loop);
}

static void on_signal(uv_signal_t *handle, int signum) {
  harkd *d = handle->data;
  HARK_INFO("signal_received", "signal=%s", signum == SIGINT ? "SIGINT" : "SIGTERM");
  uv_signal_stop(&d->sigint);
  uv_signal_stop(&d->sigterm);
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

static int run(harkd *d, hark_server_config *config) {
  d->loop = uv_default_loop();
  snprintf(d->node_name, sizeof d->node_name, "harkd@%s:%d", config->host, config->port);
  hark_pubsub_options options = {.node_name = d->node_name, .pool_size = 1};
  int rc = hark_pubsub_create(&d->pubsub, d->loop, &options);
  if (rc != 0) {
    HARK_ERROR("startup_failed", "what=pubsub error=\"%s\"", hark_strerror(rc));
    return 1;
  }
  if (!d->presence_off) {
    hark_presence_options presence_options = {.pubsub = d->pubsub,
                                              .dispatcher_name = HARK_CHANNELS_DISPATCHER,
                                              .node_name = d->node_name};
    rc = hark_presence_create(&d->presence, &presence_options);
    if (rc != 0) {
      HARK_ERROR("startup_failed", "what=presence error=\"%s\"", hark_strerror(rc));
      return 1;
    }
    config->presence = d->presence;
    config->presence_patterns = d->presence_patterns;
    config->presence_pattern_count = d->presence_pattern_count;
  }
  d->server = hark_server_create(d->loop, d->pubsub, config);
  if (!d->server) {
    HARK_ERROR("startup_failed", "what=server error=\"out of memory\"");
    return 1;
  }

  rc = hark_server_listen(d->server);
  if (rc != 0) {
    HARK_ERROR("listen_failed", "addr=%s:%d error=\"%s\"", config->host, config->port, uv_strerror(rc));
    return 1;
  }
  check_demo_files(config);

  uv_signal_init(d->loop, &d->sigint);
  uv_signal_init(d->loop, &d->sigterm);
  d->sigint.data = d->sigterm.data = d;
  uv_signal_start(&d->sigint, on_signal, SIGINT);
  uv_signal_start(&d->sigterm, on_signal, SIGTERM);

  /* IPv6 addresses are written in brackets, as --listen takes them. */
  int v6 = strchr(config->host, ':') != NULL;
  HARK_INFO("listening", "addr=%s%s%s:%d version=%s web_root=\"%s\"", v6 ? "[" : "",
            config->host, v6 ? "]" : "", hark_server_port(d->server), HARK_VERSION,
            config->web_root);
  uv_run(d->loop, UV_RUN_DEFAULT);
  HARK_INFO("stopped", "addr=%s%s%s:%d", v6 ? "[" : "", config->host, v6 ? "]" : "",
            hark_server_port(d->server));
  return 0;
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  harkd d;
  memset(&d, 0, sizeof d);

  hark_server_config config;
  hark_server_config_defaults(&config);
  config.web_root = HARK_DEFAULT_WEB_ROOT;
  snprintf(d.phoenix_js, sizeof d.phoenix_js, "%s/phoenix/priv/static/phoenix.mjs",
           HARK_DEFAULT_NODE_MODULES);
  config.phoenix_js = d.phoenix_js;

  int status = parse_args(argc, argv, &d, &config);
  if (status >= 0) return status;

  status = run(&d, &config);

  /* Tear down in reverse order; every handle must be closed before the loop. */
  if (d.server) hark_server_destroy(d.server);
  if (d.presence) hark_presence_destroy(d.presence);
  if (d.pubsub) hark_pubsub_destroy(d.pubsub);
  if (d.loop) {
    uv_walk(d.loop, close_walk_cb, NULL);
    uv_run(d.loop, UV_RUN_DEFAULT);
    uv_loop_close(d.loop);
  }
  return status;
}
