/* Cluster benchmark: three hark nodes in one process, joined through a
 * redis-server that the benchmark starts on a free loopback port.
 *
 * Each node runs on its own thread with its own uv loop, a hark_pubsub with
 * the Redis adapter, and a hark_tracker (pool_size 1) replicated with
 * hark_tracker_replicate_over_pubsub. Every tracker and pubsub call runs on
 * the owning node's thread: the main thread posts work to a node through a
 * uv_async_t and waits for it (node_call). Times are CLOCK_MONOTONIC, which
 * every thread shares.
 *
 * Scenarios (each run starts three fresh nodes; a line per run, then a line
 * with the medians of RUNS runs):
 * - track: N presences tracked on node 1 as fast as possible (one owner per
 *   presence, TOPIC_COUNT topics), timed from the first track until the sum
 *   of hark_tracker_count over the topics equals N on nodes 2 and 3. The same
 *   runs give the bytes per join and the replicas_down counters.
 * - idle: the size and spacing of node 1's heartbeats when nothing changes.
 * - latency: node 1 broadcasts 5,000 messages at 1,000 per second with a
 *   monotonic timestamp. A subscriber on node 2 (and one on node 1) records
 *   the delay. Baselines: redis-server PING round trips and a plain hiredis
 *   PUBLISH to SUBSCRIBE hop, in the same run.
 * - kill: node 3's loop stops without a graceful permdown; the time until
 *   its presences leave on nodes 1 and 2.
 *
 * Usage: bench_cluster [--quick] [track|idle|latency|kill]...
 * --quick uses small sizes to check that the program works. Build with
 * -DCMAKE_BUILD_TYPE=Release for figures. */
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <uv.h>

#include "base/log.h"
#include "hark/pubsub.h"
#include "hark/redis.h"
#include "hark/tracker.h"
#include "pubsub/envelope.h"

#define RUNS 3
#define NODE_COUNT 3
#define TOPIC_COUNT 100
#define META "{\"online_at\":1733300000000}"
#define TRACKER_NAME "hark_presence"
#define SHARD_TOPIC "phx_presence:" TRACKER_NAME "_shard0"
/* The Redis channel of SHARD_TOPIC with the adapter's default prefix. */
#define SHARD_CHANNEL "hark:t:" SHARD_TOPIC
/* The dispatcher and event names that src/tracker/pubsub_env.c sends
 * replication messages with; used only to compute their envelope size. */
#define TRACKER_DISPATCHER "hark.tracker"
#define TRACKER_EVENT "phx_presence"
#define LATENCY_TOPIC "bench:latency"
#define RAW_CHANNEL "bench:raw"
#define MAX_SENDS 256

static bool quick;

/* ---- Time and statistics ---- */

static uint64_t mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(unsigned ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* Sleeps until the monotonic time `deadline_ns`. */
static void sleep_until(uint64_t deadline_ns) {
  struct timespec ts = {(time_t)(deadline_ns / 1000000000u), (long)(deadline_ns % 1000000000u)};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
  }
}

static int compare_doubles(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Nearest-rank percentile of `n` values, which it sorts; 0 for none. */
static double percentile(double *values, size_t n, double p) {
  if (n == 0) return 0;
  qsort(values, n, sizeof *values, compare_doubles);
  size_t rank = (size_t)(p * (double)n + 0.999999);
  if (rank < 1) rank = 1;
  if (rank > n) rank = n;
  return values[rank - 1];
}

static double median3(double a, double b, double c) {
  double v[3] = {a, b, c};
  return percentile(v, 3, 0.5);
}

/* The median over RUNS runs of field `f` in an array of result structs. */
#define MEDIAN(results, f) median3((results)[0].f, (results)[1].f, (results)[2].f)

/* ---- redis-server ---- */

static pid_t redis_pid = -1;
static int redis_port;
static char redis_url[64];

/* Returns a loopback port that was free a moment ago, or -1. */
static int pick_free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof addr;
  int port = -1;
  if (bind(fd, (struct sockaddr *)&addr, sizeof addr) == 0 &&
      getsockname(fd, (struct sockaddr *)&addr, &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  close(fd);
  return port;
}

static void redis_stop(void) {
  if (redis_pid <= 0) return;
  kill(redis_pid, SIGTERM);
  waitpid(redis_pid, NULL, 0);
  redis_pid = -1;
}

static void exit_on_signal(int signo) {
  (void)signo;
  if (redis_pid > 0) kill(redis_pid, SIGTERM);
  _exit(1);
}

/* Connects to the benchmark's redis-server. Returns NULL when it does not
 * accept the connection. */
static redisContext *redis_connect(void) {
  struct timeval timeout = {2, 0};
  redisContext *c = redisConnectWithTimeout("127.0.0.1", redis_port, timeout);
  if (c != NULL && c->err) {
    redisFree(c);
    return NULL;
  }
  return c;
}

static bool redis_ping(redisContext *c) {
  redisReply *reply = redisCommand(c, "PING");
  bool ok = reply != NULL && reply->type == REDIS_REPLY_STATUS && strcmp(reply->str, "PONG") == 0;
  if (reply != NULL) freeReplyObject(reply);
  return ok;
}

/* Starts redis-server without persistence and waits up to 5 s for PING. The
 * child gets SIGTERM if this process dies first. Returns 0 or -1. */
static int redis_start(void) {
  redis_port = pick_free_port();
  if (redis_port < 0) return -1;
  char port[16];
  snprintf(port, sizeof port, "%d", redis_port);
  snprintf(redis_url, sizeof redis_url, "redis://127.0.0.1:%d", redis_port);

  redis_pid = fork();
  if (redis_pid < 0) return -1;
  if (redis_pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (freopen("/dev/null", "w", stdout) == NULL) _exit(126);
    execl("/usr/bin/redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1",
          "--save", "", "--appendonly", "no", (char *)NULL);
    _exit(127);
  }
  for (int i = 0; i < 100; i++) {
    redisContext *c = redis_connect();
    bool up = c != NULL && redis_ping(c);
    if (c != NULL) redisFree(c);
    if (up) return 0;
    sleep_ms(50);
  }
  fprintf(stderr, "redis-server on port %d did not respond to PING within 5 s\n", redis_port);
  return -1;
}

/* Reads total_net_input_bytes and total_net_output_bytes from INFO stats. */
static void redis_net_bytes(redisContext *c, uint64_t *in, uint64_t *out) {
  *in = *out = 0;
  redisReply *reply = redisCommand(c, "INFO stats");
  if (reply == NULL) return;
  if (reply->type == REDIS_REPLY_STRING) {
    const char *p = strstr(reply->str, "total_net_input_bytes:");
    if (p != NULL) *in = strtoull(p + strlen("total_net_input_bytes:"), NULL, 10);
    p = strstr(reply->str, "total_net_output_bytes:");
    if (p != NULL) *out = strtoull(p + strlen("total_net_output_bytes:"), NULL, 10);
  }
  freeReplyObject(reply);
}

/* ---- Wire sizes ---- */

static size_t decimal_digits(size_t value) {
  size_t digits = 1;
  while (value >= 10) {
    value /= 10;
    digits++;
  }
  return digits;
}

/* Bytes of a RESP bulk string of `len` bytes: "$<len>\r\n<bytes>\r\n". */
static size_t bulk_size(size_t len) {
  return 1 + decimal_digits(len) + 2 + len + 2;
}

/* Bytes on each Redis connection for one replication message of
 * `payload_len` bytes from `origin`. The node sends "PUBLISH channel
 * envelope", and Redis sends each subscriber "message channel envelope".
 * Both are three-element RESP arrays with a 7-byte first element, so one
 * size covers both directions. */
static size_t replication_wire_size(const char *origin, size_t payload_len) {
  hark__envelope env = {
      .origin = origin,
      .origin_len = strlen(origin),
      .dispatcher = TRACKER_DISPATCHER,
      .dispatcher_len = strlen(TRACKER_DISPATCHER),
      .topic = SHARD_TOPIC,
      .topic_len = strlen(SHARD_TOPIC),
      .msg = {.event = TRACKER_EVENT, .event_len = strlen(TRACKER_EVENT), .payload_len = payload_len,
              .binary = 1},
  };
  size_t envelope = hark__envelope_size(&env);
  return 4 + bulk_size(7) + bulk_size(strlen(SHARD_CHANNEL)) + bulk_size(envelope);
}

/* ---- Nodes ---- */

typedef struct node node;
typedef void (*node_fn)(node *n, void *arg);

/* A replication message this node sent, seen by its spy subscriber. */
typedef struct sent_record {
  uint64_t at_ns;
  size_t len;
  int type; /* the wire message type byte: 1 heartbeat, 4 graceful permdown */
} sent_record;

/* Latency samples of one receiving subscriber: delays[seq] in µs, or -1. */
typedef struct latency_log {
  double *delays_us;
  size_t capacity;
  size_t received;
  bool probe_seen;
} latency_log;

struct node {
  char name[32];
  hark_tracker_replication_options replication;

  /* Owned by the node's thread between node_open and node_close. */
  uv_loop_t loop;
  uv_async_t wake;
  uv_timer_t sampler; /* runs every 1 ms while a watch is active */
  uv_timer_t sender;  /* the latency scenario's broadcasts */
  hark_pubsub *pubsub;
  void *adapter_ctx;
  hark_tracker *tracker;
  hark_subscriber spy;      /* on SHARD_TOPIC; records this node's own sends */
  hark_subscriber receiver; /* on LATENCY_TOPIC */
  int open_status;

  /* The watch: the first time the summed topic count equals `target`. */
  bool watching;
  size_t watch_target;
  size_t watch_count;
  size_t watch_max;
  uint64_t watch_reached_ns;
  uint64_t watch_reached_wall_ms;

  bool spying;
  sent_record sends[MAX_SENDS];
  size_t send_count;

  latency_log latency;
  size_t latency_total; /* messages the sender sends */
  size_t latency_sent;
  uint64_t latency_start_ns;

  /* Guarded by `lock`: one posted call at a time, from the main thread. */
  pthread_t thread;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  node_fn pending;
  void *pending_arg;
  bool pending_done;
  bool opened;
  bool frozen;
};

static char topic_names[TOPIC_COUNT][16];
static size_t topic_lens[TOPIC_COUNT];

static size_t summed_count(node *n) {
  size_t total = 0;
  for (int t = 0; t < TOPIC_COUNT; t++) {
    total += hark_tracker_count(n->tracker, topic_names[t], topic_lens[t]);
  }
  return total;
}

static void on_sample(uv_timer_t *timer) {
  node *n = timer->data;
  if (!n->watching) return;
  n->watch_count = summed_count(n);
  if (n->watch_count > n->watch_max) n->watch_max = n->watch_count;
  if (n->watch_reached_ns == 0 && n->watch_count == n->watch_target) {
    n->watch_reached_ns = mono_ns();
    n->watch_reached_wall_ms = wall_ms();
  }
}

/* The spy receives every message on the shard topic: this node's own
 * heartbeats (delivered locally by broadcast_from) and the other nodes' ones.
 * The tracker wire header is version, type, replica count and then the first
 * replica's name, which is the sender. With fewer than 128 replicas and names
 * under 128 bytes, each of those varints is one byte. */
static void on_spy_message(hark_subscriber *sub, const char *topic, size_t topic_len,
                           const hark_message *msg) {
  (void)topic;
  (void)topic_len;
  node *n = sub->data;
  const unsigned char *p = (const unsigned char *)msg->payload;
  size_t name_len = strlen(n->name);
  bool own = msg->payload_len > 4 + name_len && p[3] == name_len &&
             memcmp(p + 4, n->name, name_len) == 0;
  if (!n->spying || !own || n->send_count == MAX_SENDS) return;
  n->sends[n->send_count++] = (sent_record){mono_ns(), msg->payload_len, p[1]};
}

/* Latency payloads are the JSON array "[<seq>,<monotonic ns>]", because the
 * adapter's receiver rejects a text payload that is not JSON. */
static void on_latency_message(hark_subscriber *sub, const char *topic, size_t topic_len,
                               const hark_message *msg) {
  (void)topic;
  (void)topic_len;
  uint64_t now = mono_ns();
  node *n = sub->data;
  latency_log *log = &n->latency;
  if (msg->event_len == 5 && memcmp(msg->event, "probe", 5) == 0) {
    log->probe_seen = true;
    return;
  }
  char text[48];
  if (msg->payload_len >= sizeof text || log->delays_us == NULL) return;
  memcpy(text, msg->payload, msg->payload_len);
  text[msg->payload_len] = '\0';
  char *end;
  size_t seq = strtoull(text + 1, &end, 10);
  uint64_t sent = strtoull(end + 1, NULL, 10);
  if (seq >= log->capacity || log->delays_us[seq] >= 0) return;
  log->delays_us[seq] = (double)(now - sent) / 1e3;
  log->received++;
}

static void on_wake(uv_async_t *handle) {
  node *n = handle->data;
  pthread_mutex_lock(&n->lock);
  node_fn fn = n->pending;
  void *arg = n->pending_arg;
  n->pending = NULL;
  pthread_mutex_unlock(&n->lock);
  if (fn == NULL) return;

  fn(n, arg);

  pthread_mutex_lock(&n->lock);
  n->pending_done = true;
  pthread_cond_broadcast(&n->cond);
  pthread_mutex_unlock(&n->lock);
}

/* Runs `fn(n, arg)` on the node's loop thread and waits for it to return. */
static void node_call(node *n, node_fn fn, void *arg) {
  pthread_mutex_lock(&n->lock);
  n->pending = fn;
  n->pending_arg = arg;
  n->pending_done = false;
  pthread_mutex_unlock(&n->lock);
  uv_async_send(&n->wake);
  pthread_mutex_lock(&n->lock);
  while (!n->pending_done) pthread_cond_wait(&n->cond, &n->lock);
  pthread_mutex_unlock(&n->lock);
}

/* Creates the pubsub instance with its Redis adapter and the tracker, and
 * subscribes the spy to the shard topic so that the adapter's first
 * connection already listens to it. Replication starts later, in
 * start_replication, once every adapter is connected: a first heartbeat sent
 * before that would be dropped, and the next one comes only after
 * max_silent_periods. Returns 0 or a HARK_E* code. */
static int node_open(node *n) {
  hark_pubsub_adapter adapter;
  hark_redis_options redis_options = {.url = redis_url};
  int rc = hark_redis_adapter_create(&adapter, &n->loop, &redis_options);
  if (rc != 0) return rc;
  n->adapter_ctx = adapter.ctx;
  hark_pubsub_options pubsub_options = {.node_name = n->name, .pool_size = 1,
                                        .adapter = &adapter};
  rc = hark_pubsub_create(&n->pubsub, &n->loop, &pubsub_options);
  if (rc != 0) {
    adapter.destroy(adapter.ctx);
    return rc;
  }

  hark_tracker_options tracker_options = {.node_name = n->name, .pool_size = 1};
  rc = hark_tracker_create(&n->tracker, &tracker_options);
  if (rc != 0) return rc;
  n->spy = (hark_subscriber){.on_message = on_spy_message, .data = n};
  n->receiver = (hark_subscriber){.on_message = on_latency_message, .data = n};
  return hark_pubsub_subscribe(n->pubsub, &n->spy, SHARD_TOPIC, strlen(SHARD_TOPIC), NULL);
}

/* Destroys the tracker first, because its replication unsubscribes from the
 * pubsub instance. The loop then runs until every handle has closed. */
static void node_close(node *n) {
  uv_timer_stop(&n->sampler);
  uv_timer_stop(&n->sender);
  if (n->pubsub != NULL) {
    hark_pubsub_unsubscribe_all(n->pubsub, &n->spy);
    hark_pubsub_unsubscribe_all(n->pubsub, &n->receiver);
  }
  if (n->tracker != NULL) hark_tracker_destroy(n->tracker);
  if (n->pubsub != NULL) hark_pubsub_destroy(n->pubsub);
  n->tracker = NULL;
  n->pubsub = NULL;
  uv_close((uv_handle_t *)&n->wake, NULL);
  uv_close((uv_handle_t *)&n->sampler, NULL);
  uv_close((uv_handle_t *)&n->sender, NULL);
}

static void close_call(node *n, void *arg) {
  (void)arg;
  node_close(n);
}

static void freeze_call(node *n, void *arg) {
  (void)arg;
  n->frozen = true;
  uv_stop(&n->loop);
}

static void *node_main(void *arg) {
  node *n = arg;
  uv_loop_init(&n->loop);
  uv_async_init(&n->loop, &n->wake, on_wake);
  uv_timer_init(&n->loop, &n->sampler);
  uv_timer_init(&n->loop, &n->sender);
  n->wake.data = n;
  n->sampler.data = n;
  n->sender.data = n;
  int rc = node_open(n);

  pthread_mutex_lock(&n->lock);
  n->open_status = rc;
  n->opened = true;
  pthread_cond_broadcast(&n->cond);
  pthread_mutex_unlock(&n->lock);

  uv_run(&n->loop, UV_RUN_DEFAULT);
  if (n->frozen) {
    /* The kill scenario: the loop stopped with every handle open, as if the
     * process hung. Wait for the main thread, then clean up. */
    pthread_mutex_lock(&n->lock);
    while (n->frozen) pthread_cond_wait(&n->cond, &n->lock);
    pthread_mutex_unlock(&n->lock);
    node_close(n);
    uv_run(&n->loop, UV_RUN_DEFAULT);
  }
  if (uv_loop_close(&n->loop) != 0) fprintf(stderr, "node %s: loop still has handles\n", n->name);
  return NULL;
}

/* Starts the node's thread and waits for its set-up. Returns false when the
 * thread could not start; a set-up error is left in n->open_status. */
static bool node_start(node *n, int index, const hark_tracker_replication_options *replication) {
  memset(n, 0, sizeof *n);
  snprintf(n->name, sizeof n->name, "bench-n%d", index + 1);
  n->replication = *replication;
  pthread_mutex_init(&n->lock, NULL);
  pthread_cond_init(&n->cond, NULL);
  if (pthread_create(&n->thread, NULL, node_main, n) != 0) return false;

  pthread_mutex_lock(&n->lock);
  while (!n->opened) pthread_cond_wait(&n->cond, &n->lock);
  pthread_mutex_unlock(&n->lock);
  if (n->open_status != 0) {
    fprintf(stderr, "node %s: set-up failed: %s\n", n->name, hark_strerror(n->open_status));
  }
  return true;
}

/* Stops a node: a frozen one is released, a running one closed by a call. */
static void node_stop(node *n) {
  pthread_mutex_lock(&n->lock);
  bool frozen = n->frozen;
  n->frozen = false;
  pthread_cond_broadcast(&n->cond);
  pthread_mutex_unlock(&n->lock);
  if (!frozen) node_call(n, close_call, NULL);
  pthread_join(n->thread, NULL);
  pthread_mutex_destroy(&n->lock);
  pthread_cond_destroy(&n->cond);
}

/* ---- Calls run on a node's thread ---- */

typedef struct node_status {
  bool connected;
  unsigned replicas_up;
  hark_tracker_stats stats;
  hark_redis_stats redis;
  size_t count;
  size_t watch_max;
  uint64_t watch_reached_ns;
  uint64_t watch_reached_wall_ms;
  uint64_t last_heard_ms; /* of the replica named in `peer`, if any */
  const char *peer;
} node_status;

static void count_replica(void *ctx, unsigned shard, const char *name, uint64_t vsn,
                          hark_replica_status status, uint64_t last_heard_ms) {
  (void)shard;
  (void)vsn;
  node_status *out = ctx;
  if (status == HARK_REPLICA_UP) out->replicas_up++;
  if (out->peer != NULL && strcmp(name, out->peer) == 0) out->last_heard_ms = last_heard_ms;
}

static void status_call(node *n, void *arg) {
  node_status *out = arg;
  hark_redis_adapter_stats(n->adapter_ctx, &out->redis);
  out->connected = out->redis.connected;
  out->replicas_up = 0;
  hark_tracker_replicas(n->tracker, count_replica, out);
  hark_tracker_get_stats(n->tracker, &out->stats);
  out->count = summed_count(n);
  out->watch_max = n->watch_max;
  out->watch_reached_ns = n->watch_reached_ns;
  out->watch_reached_wall_ms = n->watch_reached_wall_ms;
}

static node_status node_status_of(node *n, const char *peer) {
  node_status status = {.peer = peer};
  node_call(n, status_call, &status);
  return status;
}

static void start_replication_call(node *n, void *arg) {
  int *rc = arg;
  *rc = hark_tracker_replicate_over_pubsub(n->tracker, n->pubsub, TRACKER_NAME, &n->replication);
}

static void watch_call(node *n, void *arg) {
  n->watching = true;
  n->watch_target = *(size_t *)arg;
  n->watch_count = 0;
  n->watch_max = 0;
  n->watch_reached_ns = 0;
  uv_timer_start(&n->sampler, on_sample, 0, 1);
}

static void unwatch_call(node *n, void *arg) {
  (void)arg;
  n->watching = false;
  uv_timer_stop(&n->sampler);
}

static void spy_call(node *n, void *arg) {
  n->spying = *(bool *)arg;
  if (n->spying) n->send_count = 0;
}

/* Copies the spy's records; the caller passes a MAX_SENDS array. */
typedef struct sends_copy {
  sent_record *records;
  size_t count;
} sends_copy;

static void sends_call(node *n, void *arg) {
  sends_copy *copy = arg;
  memcpy(copy->records, n->sends, n->send_count * sizeof *n->sends);
  copy->count = n->send_count;
}

/* ---- The cluster ---- */

typedef struct cluster {
  node nodes[NODE_COUNT];
  int started;
} cluster;

static void cluster_stop(cluster *c) {
  for (int i = 0; i < c->started; i++) node_stop(&c->nodes[i]);
  c->started = 0;
}

/* Polls `ready(c)` every 10 ms for up to `timeout_ms`. */
static bool wait_for(cluster *c, bool (*ready)(cluster *c), unsigned timeout_ms) {
  uint64_t deadline = mono_ns() + (uint64_t)timeout_ms * 1000000u;
  while (!ready(c)) {
    if (mono_ns() > deadline) return false;
    sleep_ms(10);
  }
  return true;
}

static bool all_connected(cluster *c) {
  for (int i = 0; i < NODE_COUNT; i++) {
    if (!node_status_of(&c->nodes[i], NULL).connected) return false;
  }
  return true;
}

static bool all_peers_up(cluster *c) {
  for (int i = 0; i < NODE_COUNT; i++) {
    if (node_status_of(&c->nodes[i], NULL).replicas_up != NODE_COUNT - 1) return false;
  }
  return true;
}

/* Starts three nodes, waits until their adapters are connected, starts
 * replication on each and waits until every node has the two others up.
 * Returns 0, or -1 after stopping what was started. */
static int cluster_start(cluster *c, const hark_tracker_replication_options *replication) {
  memset(c, 0, sizeof *c);
  for (int i = 0; i < NODE_COUNT; i++) {
    if (!node_start(&c->nodes[i], i, replication)) goto failed;
    c->started++;
    if (c->nodes[i].open_status != 0) goto failed;
  }
  if (!wait_for(c, all_connected, 5000)) {
    fprintf(stderr, "the Redis adapters did not connect within 5 s\n");
    goto failed;
  }
  /* The SUBSCRIBE of the shard channel follows the PING on each link, so
   * Redis has usually processed it by the time of the PING reply. The pause
   * covers the case where Redis read them in separate batches. */
  sleep_ms(20);
  for (int i = 0; i < NODE_COUNT; i++) {
    int rc = 0;
    node_call(&c->nodes[i], start_replication_call, &rc);
    if (rc != 0) {
      fprintf(stderr, "replication did not start: %s\n", hark_strerror(rc));
      goto failed;
    }
  }
  /* NOTE: a node's first heartbeat can reach a node whose replication has
   * not started yet (the calls above are microseconds apart). That node drops
   * it with a redis_unknown_dispatcher warning, and the two nodes have each
   * other up only after the next empty heartbeat, max_silent_periods + 1
   * periods later. */
  unsigned timeout_ms = (unsigned)(replication->broadcast_period_ms *
                                   (replication->max_silent_periods + 3));
  if (!wait_for(c, all_peers_up, timeout_ms)) {
    fprintf(stderr, "the nodes did not see each other within %u ms\n", timeout_ms);
    goto failed;
  }
  return 0;

failed:
  cluster_stop(c);
  return -1;
}

static hark_tracker_replication_options replication_options(uint64_t period_ms) {
  hark_tracker_replication_options options;
  hark_tracker_replication_defaults(&options);
  options.broadcast_period_ms = period_ms;
  options.down_period_ms = period_ms * options.max_silent_periods * 2;
  return options;
}

/* ---- Scenario: track ---- */

/* The presences of one run: one owner per presence, keys "user:<i>". */
typedef struct presences {
  size_t count;
  hark_subscriber *owners;
  char (*keys)[16];
  size_t *key_lens;
  uint64_t first_track_ns;
  uint64_t last_track_ns;
  int failures;
} presences;

static int presences_init(presences *p, size_t count) {
  memset(p, 0, sizeof *p);
  p->count = count;
  p->owners = calloc(count, sizeof *p->owners);
  p->keys = calloc(count, sizeof *p->keys);
  p->key_lens = calloc(count, sizeof *p->key_lens);
  if (p->owners == NULL || p->keys == NULL || p->key_lens == NULL) return -1;
  for (size_t i = 0; i < count; i++) {
    p->key_lens[i] = (size_t)snprintf(p->keys[i], sizeof p->keys[i], "user:%zu", i);
  }
  return 0;
}

static void presences_free(presences *p) {
  free(p->owners);
  free(p->keys);
  free(p->key_lens);
}

static void track_call(node *n, void *arg) {
  presences *p = arg;
  p->first_track_ns = mono_ns();
  for (size_t i = 0; i < p->count; i++) {
    int t = (int)(i % TOPIC_COUNT);
    int rc = hark_tracker_track(n->tracker, &p->owners[i], topic_names[t], topic_lens[t],
                                p->keys[i], p->key_lens[i], META, strlen(META), NULL);
    if (rc != 0) p->failures++;
  }
  p->last_track_ns = mono_ns();
}

typedef struct track_result {
  double visible_ms;      /* first track until N on both other nodes */
  double local_ms;        /* tracking N on node 1 itself */
  double tick_wait_ms;    /* last track until node 1 sent the delta */
  double send_to_visible_ms;
  double payload_per_join; /* tracker bytes_sent on node 1 / N */
  double wire_per_join;    /* bytes per peer connection / N, computed */
  double redis_out_per_join; /* INFO total_net_output_bytes / N, all copies */
  double heartbeats;
  double transfers;
  double replicas_down;   /* summed over the three nodes */
  double max_count;       /* the largest count seen on nodes 2 and 3 */
  bool ok;
} track_result;

static bool reached(cluster *c, int from, int to) {
  for (int i = from; i <= to; i++) {
    if (node_status_of(&c->nodes[i], NULL).watch_reached_ns == 0) return false;
  }
  return true;
}

static bool peers_reached(cluster *c) {
  return reached(c, 1, 2);
}

/* Fills the byte figures from node 1's sends during the run. */
static void measure_sends(cluster *c, track_result *r, size_t count) {
  static sent_record records[MAX_SENDS];
  sends_copy copy = {records, 0};
  node_call(&c->nodes[0], sends_call, &copy);
  double wire = 0;
  for (size_t i = 0; i < copy.count; i++) {
    wire += (double)replication_wire_size(c->nodes[0].name, records[i].len);
  }
  r->wire_per_join = wire / (double)count;
}

/* Finds node 1's first send after tracking that is large enough to carry
 * the N joins (at least one byte each). */
static uint64_t delta_send_ns(cluster *c, const presences *p) {
  static sent_record records[MAX_SENDS];
  sends_copy copy = {records, 0};
  node_call(&c->nodes[0], sends_call, &copy);
  for (size_t i = 0; i < copy.count; i++) {
    if (records[i].at_ns >= p->first_track_ns && records[i].len >= p->count) {
      return records[i].at_ns;
    }
  }
  return 0;
}

static void finish_track(cluster *c, track_result *r, const presences *p,
                         const node_status *before, redisContext *redis, uint64_t out_before) {
  uint64_t in_after, out_after;
  redis_net_bytes(redis, &in_after, &out_after);
  node_status after = node_status_of(&c->nodes[0], NULL);
  uint64_t last = 0;
  for (int i = 1; i < NODE_COUNT; i++) {
    node_status s = node_status_of(&c->nodes[i], NULL);
    if (s.watch_reached_ns > last) last = s.watch_reached_ns;
    if ((double)s.watch_max > r->max_count) r->max_count = (double)s.watch_max;
  }
  double n = (double)p->count;
  r->visible_ms = (double)(last - p->first_track_ns) / 1e6;
  r->local_ms = (double)(p->last_track_ns - p->first_track_ns) / 1e6;
  uint64_t sent = delta_send_ns(c, p);
  if (sent != 0) {
    r->tick_wait_ms = (double)(sent - p->last_track_ns) / 1e6;
    r->send_to_visible_ms = (double)(last - sent) / 1e6;
  }
  r->payload_per_join = (double)(after.stats.bytes_sent - before->stats.bytes_sent) / n;
  r->redis_out_per_join = (double)(out_after - out_before) / n;
  r->heartbeats = (double)(after.stats.heartbeats_sent - before->stats.heartbeats_sent);
  measure_sends(c, r, p->count);
}

/* Counts replicas_down and transfers on every node. */
static void count_downs(cluster *c, track_result *r) {
  r->replicas_down = 0;
  r->transfers = 0;
  for (int i = 0; i < NODE_COUNT; i++) {
    node_status s = node_status_of(&c->nodes[i], NULL);
    r->replicas_down += (double)s.stats.replicas_down;
    r->transfers += (double)(s.stats.transfers_sent_delta + s.stats.transfers_sent_full);
  }
}

static bool run_track(size_t count, uint64_t period_ms, redisContext *redis, track_result *r) {
  memset(r, 0, sizeof *r);
  presences p;
  cluster c;
  hark_tracker_replication_options options = replication_options(period_ms);
  if (presences_init(&p, count) != 0 || cluster_start(&c, &options) != 0) {
    presences_free(&p);
    return false;
  }

  uint64_t in_before, out_before;
  redis_net_bytes(redis, &in_before, &out_before);
  node_status before = node_status_of(&c.nodes[0], NULL);
  bool on = true;
  node_call(&c.nodes[0], spy_call, &on);
  for (int i = 1; i < NODE_COUNT; i++) node_call(&c.nodes[i], watch_call, &count);

  node_call(&c.nodes[0], track_call, &p);
  unsigned timeout_ms = (unsigned)(period_ms * 20 + count / 10);
  r->ok = p.failures == 0 && wait_for(&c, peers_reached, timeout_ms);
  if (r->ok) {
    finish_track(&c, r, &p, &before, redis, out_before);
    /* A peer stalled by a merge would be declared down only after
     * down_period, so wait a little longer than that before counting. */
    if (period_ms <= 100) sleep_ms((unsigned)options.down_period_ms + 500);
    count_downs(&c, r);
  } else {
    fprintf(stderr, "track run failed: failures=%d counts=%zu,%zu after %u ms\n", p.failures,
            node_status_of(&c.nodes[1], NULL).count, node_status_of(&c.nodes[2], NULL).count,
            timeout_ms);
  }
  for (int i = 1; i < NODE_COUNT; i++) node_call(&c.nodes[i], unwatch_call, NULL);
  cluster_stop(&c);
  presences_free(&p);
  return r->ok;
}

static void print_track_run(int run, size_t count, uint64_t period_ms, const track_result *r) {
  printf("run=%d scenario=track presences=%zu period_ms=%llu visible_ms=%.1f local_ms=%.1f "
         "tick_wait_ms=%.1f send_to_visible_ms=%.1f payload_bytes_per_join=%.1f "
         "wire_bytes_per_join_per_peer=%.1f heartbeats=%.0f replicas_down=%.0f\n",
         run, count, (unsigned long long)period_ms, r->visible_ms, r->local_ms, r->tick_wait_ms,
         r->send_to_visible_ms, r->payload_per_join, r->wire_per_join, r->heartbeats,
         r->replicas_down);
  fflush(stdout);
}

/* Phoenix figures (seconds) given with the task, for the same sizes. */
static double phoenix_visible_s(size_t count, uint64_t period_ms) {
  if (count == 10000) return period_ms == 100 ? 0.51 : 1.53;
  if (count == 100000) return period_ms == 100 ? 5.9 : 9.1;
  return 0;
}

static void scenario_track(size_t count, uint64_t period_ms, redisContext *redis) {
  track_result results[RUNS];
  for (int run = 0; run < RUNS; run++) {
    if (!run_track(count, period_ms, redis, &results[run])) return;
    print_track_run(run + 1, count, period_ms, &results[run]);
  }
  double downs = 0, max_count = 0;
  for (int run = 0; run < RUNS; run++) {
    downs += results[run].replicas_down;
    if (results[run].max_count > max_count) max_count = results[run].max_count;
  }
  printf("scenario=track presences=%zu period_ms=%llu runs=%d visible_ms=%.1f local_ms=%.1f "
         "tick_wait_ms=%.1f send_to_visible_ms=%.1f payload_bytes_per_join=%.1f "
         "wire_bytes_per_join_per_peer=%.1f redis_out_bytes_per_join=%.1f heartbeats=%.0f "
         "transfers=%.0f replicas_down_total=%.0f max_count_seen=%.0f phoenix_ms=%.0f\n",
         count, (unsigned long long)period_ms, RUNS, MEDIAN(results, visible_ms),
         MEDIAN(results, local_ms), MEDIAN(results, tick_wait_ms),
         MEDIAN(results, send_to_visible_ms), MEDIAN(results, payload_per_join),
         MEDIAN(results, wire_per_join), MEDIAN(results, redis_out_per_join),
         MEDIAN(results, heartbeats), MEDIAN(results, transfers), downs, max_count,
         phoenix_visible_s(count, period_ms) * 1000);
  fflush(stdout);
}

/* ---- Scenario: idle heartbeats ---- */

typedef struct idle_result {
  double payload_bytes;   /* median size of node 1's empty heartbeats */
  double wire_bytes;      /* the same with envelope and RESP framing */
  double interval_ms;     /* median time between them */
  double heartbeats;      /* sent by node 1 in the window */
  double stats_bytes;     /* bytes_sent / heartbeats_sent in the window */
  double transfers;       /* requested by node 1 in the window */
} idle_result;

static bool run_idle(uint64_t period_ms, unsigned window_ms, idle_result *r) {
  memset(r, 0, sizeof *r);
  cluster c;
  hark_tracker_replication_options options = replication_options(period_ms);
  if (cluster_start(&c, &options) != 0) return false;
  /* Let the first ticks and any clock sampling settle. */
  sleep_ms((unsigned)period_ms * 15);

  node_status before = node_status_of(&c.nodes[0], NULL);
  bool on = true;
  node_call(&c.nodes[0], spy_call, &on);
  sleep_ms(window_ms);
  on = false;
  node_call(&c.nodes[0], spy_call, &on);
  node_status after = node_status_of(&c.nodes[0], NULL);

  static sent_record records[MAX_SENDS];
  sends_copy copy = {records, 0};
  node_call(&c.nodes[0], sends_call, &copy);
  double sizes[MAX_SENDS], gaps[MAX_SENDS];
  for (size_t i = 0; i < copy.count; i++) {
    sizes[i] = (double)records[i].len;
    if (i > 0) gaps[i - 1] = (double)(records[i].at_ns - records[i - 1].at_ns) / 1e6;
  }
  r->payload_bytes = percentile(sizes, copy.count, 0.5);
  r->wire_bytes = (double)replication_wire_size(c.nodes[0].name, (size_t)r->payload_bytes);
  r->interval_ms = copy.count > 1 ? percentile(gaps, copy.count - 1, 0.5) : 0;
  uint64_t beats = after.stats.heartbeats_sent - before.stats.heartbeats_sent;
  r->heartbeats = (double)beats;
  r->stats_bytes = beats ? (double)(after.stats.bytes_sent - before.stats.bytes_sent) / (double)beats
                         : 0;
  r->transfers = (double)(after.stats.transfers_requested - before.stats.transfers_requested);
  cluster_stop(&c);
  return true;
}

static void scenario_idle(void) {
  uint64_t period_ms = 100;
  unsigned window_ms = quick ? 2500 : 6700;
  idle_result results[RUNS];
  for (int run = 0; run < RUNS; run++) {
    if (!run_idle(period_ms, window_ms, &results[run])) return;
    idle_result *r = &results[run];
    printf("run=%d scenario=idle period_ms=%llu heartbeats=%.0f payload_bytes=%.0f "
           "wire_bytes_per_peer=%.0f interval_ms=%.1f transfers_requested=%.0f\n",
           run + 1, (unsigned long long)period_ms, r->heartbeats, r->payload_bytes,
           r->wire_bytes, r->interval_ms, r->transfers);
    fflush(stdout);
  }
  double interval = MEDIAN(results, interval_ms);
  printf("scenario=idle period_ms=%llu window_ms=%u runs=%d payload_bytes=%.0f "
         "stats_bytes_per_heartbeat=%.1f wire_bytes_per_peer=%.0f interval_ms=%.1f "
         "interval_periods=%.2f transfers_requested=%.0f phoenix_bytes=186 phoenix_periods=11\n",
         (unsigned long long)period_ms, window_ms, RUNS, MEDIAN(results, payload_bytes),
         MEDIAN(results, stats_bytes), MEDIAN(results, wire_bytes), interval,
         interval / (double)period_ms, MEDIAN(results, transfers));
  fflush(stdout);
}

/* ---- Scenario: latency ---- */

typedef struct latency_stats {
  double p50_us, p99_us, max_us;
  double lost;
} latency_stats;

static latency_stats summarize(double *delays_us, size_t count) {
  latency_stats s = {0};
  size_t valid = 0;
  for (size_t i = 0; i < count; i++) {
    if (delays_us[i] >= 0) delays_us[valid++] = delays_us[i];
  }
  s.lost = (double)(count - valid);
  s.p50_us = percentile(delays_us, valid, 0.50);
  s.p99_us = percentile(delays_us, valid, 0.99);
  s.max_us = valid ? delays_us[valid - 1] : 0;
  return s;
}

static void send_latency_message(node *n, size_t seq) {
  char payload[48];
  int len = snprintf(payload, sizeof payload, "[%zu,%llu]", seq, (unsigned long long)mono_ns());
  hark_message msg = {.event = "m", .event_len = 1, .payload = payload, .payload_len = (size_t)len};
  hark_pubsub_broadcast(n->pubsub, LATENCY_TOPIC, strlen(LATENCY_TOPIC), &msg, NULL);
}

/* Sends the messages that are due: message i at start + i ms, so a late
 * timer callback catches up and the average rate stays 1,000 per second. */
static void on_send_tick(uv_timer_t *timer) {
  node *n = timer->data;
  uint64_t due = (mono_ns() - n->latency_start_ns) / 1000000u + 1;
  while (n->latency_sent < n->latency_total && n->latency_sent < due) {
    send_latency_message(n, n->latency_sent++);
  }
  if (n->latency_sent == n->latency_total) uv_timer_stop(timer);
}

static void start_sending_call(node *n, void *arg) {
  n->latency_total = *(size_t *)arg;
  n->latency_sent = 0;
  n->latency_start_ns = mono_ns();
  uv_timer_start(&n->sender, on_send_tick, 0, 1);
}

static void probe_call(node *n, void *arg) {
  (void)arg;
  hark_message msg = {.event = "probe", .event_len = 5, .payload = "{}", .payload_len = 2};
  hark_pubsub_broadcast(n->pubsub, LATENCY_TOPIC, strlen(LATENCY_TOPIC), &msg, NULL);
}

static void receive_call(node *n, void *arg) {
  latency_log *log = arg;
  if (log->delays_us == NULL) {
    hark_pubsub_unsubscribe_all(n->pubsub, &n->receiver);
    n->latency = (latency_log){0};
    return;
  }
  n->latency = *log;
  hark_pubsub_subscribe(n->pubsub, &n->receiver, LATENCY_TOPIC, strlen(LATENCY_TOPIC), NULL);
}

static void read_log_call(node *n, void *arg) {
  *(latency_log *)arg = n->latency;
}

static latency_log node_log(node *n) {
  latency_log log;
  node_call(n, read_log_call, &log);
  return log;
}

static bool remote_probe_seen(cluster *c) {
  node_call(&c->nodes[0], probe_call, NULL);
  return node_log(&c->nodes[1]).probe_seen;
}

static bool all_received(cluster *c) {
  latency_log log = node_log(&c->nodes[1]);
  return log.received == log.capacity;
}

/* Runs the hark part: node 1 broadcasts, subscribers on nodes 1 and 2. */
static bool run_hark_latency(size_t count, latency_stats *remote, latency_stats *local) {
  cluster c;
  hark_tracker_replication_options options = replication_options(1500);
  if (cluster_start(&c, &options) != 0) return false;
  double *remote_us = malloc(count * sizeof *remote_us);
  double *local_us = malloc(count * sizeof *local_us);
  for (size_t i = 0; i < count; i++) remote_us[i] = local_us[i] = -1;
  latency_log remote_log = {remote_us, count, 0, false};
  latency_log local_log = {local_us, count, 0, false};
  node_call(&c.nodes[1], receive_call, &remote_log);
  node_call(&c.nodes[0], receive_call, &local_log);

  /* The SUBSCRIBE of node 2 must reach Redis before the first message. */
  bool ok = wait_for(&c, remote_probe_seen, 2000);
  if (ok) {
    node_call(&c.nodes[0], start_sending_call, &count);
    /* Losses are counted rather than waited for beyond the grace time. */
    wait_for(&c, all_received, (unsigned)count + 2000);
    latency_log empty = {0};
    node_call(&c.nodes[1], receive_call, &empty);
    node_call(&c.nodes[0], receive_call, &empty);
    *remote = summarize(remote_us, count);
    *local = summarize(local_us, count);
  }
  cluster_stop(&c);
  free(remote_us);
  free(local_us);
  return ok;
}

/* The plain Redis hop: a hiredis subscriber blocked in redisGetReply. */
typedef struct raw_subscriber {
  redisContext *context;
  double *delays_us;
  size_t count;
  size_t received;
} raw_subscriber;

static void *raw_subscriber_main(void *arg) {
  raw_subscriber *s = arg;
  while (s->received < s->count) {
    redisReply *reply = NULL;
    if (redisGetReply(s->context, (void **)&reply) != REDIS_OK || reply == NULL) break;
    uint64_t now = mono_ns();
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 3 &&
        strcmp(reply->element[0]->str, "message") == 0) {
      char *end;
      size_t seq = strtoull(reply->element[2]->str + 1, &end, 10);
      uint64_t sent = strtoull(end + 1, NULL, 10);
      bool stop = seq == SIZE_MAX;
      if (!stop && seq < s->count) {
        s->delays_us[seq] = (double)(now - sent) / 1e3;
        s->received++;
      }
      freeReplyObject(reply);
      if (stop) break;
      continue;
    }
    freeReplyObject(reply);
  }
  return NULL;
}

/* Sends `count` PUBLISH commands at 1,000 per second from a hiredis client
 * to a hiredis subscriber on another thread. */
static bool run_raw_latency(size_t count, latency_stats *out) {
  raw_subscriber s = {redis_connect(), malloc(count * sizeof(double)), count, 0};
  redisContext *pub = redis_connect();
  if (s.context == NULL || pub == NULL || s.delays_us == NULL) return false;
  for (size_t i = 0; i < count; i++) s.delays_us[i] = -1;
  redisReply *reply = redisCommand(s.context, "SUBSCRIBE " RAW_CHANNEL);
  if (reply != NULL) freeReplyObject(reply);
  pthread_t thread;
  pthread_create(&thread, NULL, raw_subscriber_main, &s);

  uint64_t start = mono_ns();
  for (size_t i = 0; i < count; i++) {
    sleep_until(start + i * 1000000u);
    char payload[48];
    snprintf(payload, sizeof payload, "[%zu,%llu]", i, (unsigned long long)mono_ns());
    reply = redisCommand(pub, "PUBLISH " RAW_CHANNEL " %s", payload);
    if (reply != NULL) freeReplyObject(reply);
  }
  sleep_ms(500);
  reply = redisCommand(pub, "PUBLISH " RAW_CHANNEL " [%zu,0]", (size_t)SIZE_MAX);
  if (reply != NULL) freeReplyObject(reply);
  pthread_join(thread, NULL);
  *out = summarize(s.delays_us, count);
  free(s.delays_us);
  redisFree(s.context);
  redisFree(pub);
  return true;
}

/* PING round trips, one per millisecond. */
static latency_stats run_ping(redisContext *redis, size_t count) {
  double *rtt_us = malloc(count * sizeof *rtt_us);
  uint64_t start = mono_ns();
  for (size_t i = 0; i < count; i++) {
    sleep_until(start + i * 1000000u);
    uint64_t before = mono_ns();
    rtt_us[i] = redis_ping(redis) ? (double)(mono_ns() - before) / 1e3 : -1;
  }
  latency_stats s = summarize(rtt_us, count);
  free(rtt_us);
  return s;
}

typedef struct latency_result {
  latency_stats remote, local, raw, ping;
} latency_result;

static void scenario_latency(redisContext *redis) {
  size_t count = quick ? 500 : 5000;
  latency_result results[RUNS];
  for (int run = 0; run < RUNS; run++) {
    latency_result *r = &results[run];
    if (!run_hark_latency(count, &r->remote, &r->local)) return;
    if (!run_raw_latency(count, &r->raw)) return;
    r->ping = run_ping(redis, count / 5);
    printf("run=%d scenario=latency messages=%zu remote_p50_us=%.0f remote_p99_us=%.0f "
           "remote_max_us=%.0f remote_lost=%.0f local_p50_us=%.2f raw_redis_p50_us=%.0f "
           "raw_redis_p99_us=%.0f ping_p50_us=%.0f ping_p99_us=%.0f\n",
           run + 1, count, r->remote.p50_us, r->remote.p99_us, r->remote.max_us, r->remote.lost,
           r->local.p50_us, r->raw.p50_us, r->raw.p99_us, r->ping.p50_us, r->ping.p99_us);
    fflush(stdout);
  }
  printf("scenario=latency rate_per_s=1000 messages=%zu runs=%d remote_p50_us=%.0f "
         "remote_p99_us=%.0f remote_max_us=%.0f remote_lost=%.0f local_p50_us=%.2f "
         "local_p99_us=%.2f local_max_us=%.1f raw_redis_p50_us=%.0f raw_redis_p99_us=%.0f "
         "raw_redis_max_us=%.0f ping_p50_us=%.0f ping_p99_us=%.0f phoenix_p50_us=209 "
         "phoenix_p99_us=1160\n",
         count, RUNS, MEDIAN(results, remote.p50_us), MEDIAN(results, remote.p99_us),
         MEDIAN(results, remote.max_us), MEDIAN(results, remote.lost),
         MEDIAN(results, local.p50_us), MEDIAN(results, local.p99_us),
         MEDIAN(results, local.max_us), MEDIAN(results, raw.p50_us), MEDIAN(results, raw.p99_us),
         MEDIAN(results, raw.max_us), MEDIAN(results, ping.p50_us), MEDIAN(results, ping.p99_us));
  fflush(stdout);
}

/* ---- Scenario: kill ---- */

typedef struct kill_result {
  double leave_ms[2];           /* freeze until count 0 on nodes 1 and 2 */
  double after_heartbeat_ms;    /* node 1: last heartbeat heard until count 0 */
  double replicas_down;         /* node 1's counter */
} kill_result;

static bool others_see(cluster *c, size_t count) {
  for (int i = 0; i < 2; i++) {
    if (node_status_of(&c->nodes[i], NULL).count != count) return false;
  }
  return true;
}

static bool others_see_presences(cluster *c) {
  return others_see(c, quick ? 1000 : 10000);
}

static bool presences_gone(cluster *c) {
  return reached(c, 0, 1);
}

static bool run_kill(const hark_tracker_replication_options *options, size_t count,
                     kill_result *r) {
  memset(r, 0, sizeof *r);
  presences p;
  cluster c;
  if (presences_init(&p, count) != 0 || cluster_start(&c, options) != 0) {
    presences_free(&p);
    return false;
  }
  node_call(&c.nodes[2], track_call, &p);
  bool ok = wait_for(&c, others_see_presences, 10000);
  size_t zero = 0;
  if (ok) {
    /* Freeze at a random point of node 3's heartbeat cycle. */
    sleep_ms(300 + (unsigned)(mono_ns() % 700));
    for (int i = 0; i < 2; i++) node_call(&c.nodes[i], watch_call, &zero);
    uint64_t frozen_ns = mono_ns();
    node_call(&c.nodes[2], freeze_call, NULL);
    ok = wait_for(&c, presences_gone, (unsigned)options->down_period_ms * 5);
    for (int i = 0; ok && i < 2; i++) {
      node_status s = node_status_of(&c.nodes[i], c.nodes[2].name);
      r->leave_ms[i] = (double)(s.watch_reached_ns - frozen_ns) / 1e6;
      if (i == 0) {
        r->after_heartbeat_ms = (double)(s.watch_reached_wall_ms - s.last_heard_ms);
        r->replicas_down = (double)s.stats.replicas_down;
      }
    }
    for (int i = 0; i < 2; i++) node_call(&c.nodes[i], unwatch_call, NULL);
  }
  if (!ok) fprintf(stderr, "kill run failed\n");
  cluster_stop(&c);
  presences_free(&p);
  return ok;
}

static void scenario_kill(void) {
  hark_tracker_replication_options options = replication_options(100);
  /* An empty heartbeat every 5 periods (500 ms), so the 1,000 ms down
   * period spans two of them, as Phoenix's defaults do (11 periods of
   * silence against a down period of 20). */
  options.max_silent_periods = 4;
  options.down_period_ms = 1000;
  options.permdown_period_ms = 60000;
  size_t count = quick ? 1000 : 10000;
  kill_result results[RUNS];
  for (int run = 0; run < RUNS; run++) {
    if (!run_kill(&options, count, &results[run])) return;
    kill_result *r = &results[run];
    printf("run=%d scenario=kill presences=%zu node1_leave_ms=%.0f node2_leave_ms=%.0f "
           "node1_after_last_heartbeat_ms=%.0f node1_replicas_down=%.0f\n",
           run + 1, count, r->leave_ms[0], r->leave_ms[1], r->after_heartbeat_ms,
           r->replicas_down);
    fflush(stdout);
  }
  printf("scenario=kill presences=%zu period_ms=100 max_silent_periods=4 down_period_ms=1000 "
         "runs=%d node1_leave_ms=%.0f node2_leave_ms=%.0f node1_after_last_heartbeat_ms=%.0f\n",
         count, RUNS, MEDIAN(results, leave_ms[0]), MEDIAN(results, leave_ms[1]),
         MEDIAN(results, after_heartbeat_ms));
  fflush(stdout);
}

/* ---- main ---- */

static bool scenario_selected(int argc, char **argv, const char *name) {
  bool any = false;
  for (int i = 1; i < argc; i++) {
    if (argv[i][0] == '-') continue;
    any = true;
    if (strcmp(argv[i], name) == 0) return true;
  }
  return !any;
}

static void print_machine(void) {
  char model[128] = "unknown";
  FILE *f = fopen("/proc/cpuinfo", "r");
  char line[256];
  while (f != NULL && fgets(line, sizeof line, f) != NULL) {
    if (strncmp(line, "model name", 10) != 0) continue;
    const char *colon = strchr(line, ':');
    if (colon != NULL) snprintf(model, sizeof model, "%s", colon + 2);
    model[strcspn(model, "\n")] = '\0';
    break;
  }
  if (f != NULL) fclose(f);
  printf("machine nproc=%ld cpu=\"%s\" redis_port=%d\n", sysconf(_SC_NPROCESSORS_ONLN), model,
         redis_port);
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--quick") == 0) quick = true;
  }
  hark_log_set_level(HARK_LOG_WARN);
  signal(SIGINT, exit_on_signal);
  signal(SIGTERM, exit_on_signal);
  signal(SIGPIPE, SIG_IGN);
  for (int t = 0; t < TOPIC_COUNT; t++) {
    topic_lens[t] = (size_t)snprintf(topic_names[t], sizeof topic_names[t], "room:%d", t);
  }
  if (redis_start() != 0) {
    redis_stop();
    return 1;
  }
  redisContext *redis = redis_connect();
  if (redis == NULL) {
    redis_stop();
    return 1;
  }
  print_machine();
  fflush(stdout);

  size_t sizes[2] = {quick ? 1000 : 10000, quick ? 10000 : 100000};
  uint64_t periods[2] = {100, 1500};
  for (int s = 0; s < 2 && scenario_selected(argc, argv, "track"); s++) {
    for (int p = 0; p < 2; p++) scenario_track(sizes[s], periods[p], redis);
  }
  if (scenario_selected(argc, argv, "idle")) scenario_idle();
  if (scenario_selected(argc, argv, "latency")) scenario_latency(redis);
  if (scenario_selected(argc, argv, "kill")) scenario_kill();

  redisFree(redis);
  redis_stop();
  return 0;
}
