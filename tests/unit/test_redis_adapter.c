/* Tests of the Redis cluster adapter against a real redis-server: several
 * pubsub instances ("nodes") with different names share one libuv loop and
 * one Redis, each through its own adapter. The group setup starts
 * redis-server on a free loopback port; one test kills and restarts it. Every
 * wait has a deadline, so a broken adapter fails a test instead of hanging. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "hark/redis.h"
#include "pubsub/envelope.h"

#define TOPIC(s) s, sizeof(s) - 1
#define WAIT_MS 3000

/* ---- redis-server ---- */

static pid_t redis_pid;
static int redis_port;

static int pick_free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof addr;
  if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 ||
      getsockname(fd, (struct sockaddr *)&addr, &len) != 0)
    return -1;
  close(fd);
  return ntohs(addr.sin_port);
}

static void sleep_ms(long ms) {
  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static redisContext *redis_connect_sync(void) {
  struct timeval timeout = {.tv_sec = 1};
  redisContext *c = redisConnectWithTimeout("127.0.0.1", redis_port, timeout);
  if (c != NULL && c->err) {
    redisFree(c);
    return NULL;
  }
  return c;
}

static int redis_start(void) {
  char port[16];
  snprintf(port, sizeof port, "%d", redis_port);
  redis_pid = fork();
  if (redis_pid < 0) return -1;
  if (redis_pid == 0) {
    freopen("/dev/null", "w", stdout);
    execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
           "--appendonly", "no", (char *)NULL);
    _exit(127);
  }

  for (int i = 0; i < 300; i++) {
    redisContext *c = redis_connect_sync();
    if (c != NULL) {
      redisFree(c);
      return 0;
    }
    sleep_ms(10);
  }
  return -1;
}

static void redis_stop(void) {
  if (redis_pid <= 0) return;
  kill(redis_pid, SIGKILL);
  waitpid(redis_pid, NULL, 0);
  redis_pid = 0;
}

static int group_setup(void **state) {
  (void)state;
  redis_port = pick_free_port();
  if (redis_port <= 0) return -1;
  return redis_start();
}

static int group_teardown(void **state) {
  (void)state;
  redis_stop();
  return 0;
}

/* Runs a command on a fresh synchronous connection. The caller frees the
 * reply with freeReplyObject. */
static redisReply *redis_run(const char *format, ...) {
  redisContext *c = redis_connect_sync();
  assert_non_null(c);
  va_list ap;
  va_start(ap, format);
  redisReply *reply = redisvCommand(c, format, ap);
  va_end(ap);
  redisFree(c);
  assert_non_null(reply);
  return reply;
}

/* Number of subscribers of `channel`, from PUBSUB NUMSUB or SHARDNUMSUB. */
static long long redis_numsub(const char *channel, size_t len, int sharded) {
  redisReply *reply = redis_run(sharded ? "PUBSUB SHARDNUMSUB %b" : "PUBSUB NUMSUB %b", channel, len);
  assert_int_equal(reply->type, REDIS_REPLY_ARRAY);
  assert_int_equal(reply->elements, 2);
  long long n = reply->element[1]->integer;
  freeReplyObject(reply);
  return n;
}

/* ---- Loop helpers ---- */

typedef struct world {
  uv_loop_t loop;
  uv_timer_t tick; /* wakes uv_run(UV_RUN_ONCE) so waits can check deadlines */
} world;

static uint64_t now_ms(void) { return uv_hrtime() / 1000000; }

static void on_tick(uv_timer_t *timer) { (void)timer; }

static void world_init(world *w) {
  assert_int_equal(uv_loop_init(&w->loop), 0);
  uv_timer_init(&w->loop, &w->tick);
  uv_timer_start(&w->tick, on_tick, 2, 2);
}

static void run_for(world *w, uint64_t ms) {
  uint64_t end = now_ms() + ms;
  while (now_ms() < end) uv_run(&w->loop, UV_RUN_ONCE);
}

typedef int (*condition_fn)(void *arg);

/* Runs the loop until `condition` holds. Returns 1, or 0 after WAIT_MS. */
static int run_until(world *w, condition_fn condition, void *arg) {
  uint64_t end = now_ms() + WAIT_MS;
  while (!condition(arg)) {
    if (now_ms() > end) return 0;
    uv_run(&w->loop, UV_RUN_ONCE);
  }
  return 1;
}

/* Closes the tick timer and runs the loop until every handle has closed, so
 * the adapters' memory is freed and uv_loop_close succeeds. */
static void world_close(world *w) {
  uv_close((uv_handle_t *)&w->tick, NULL);
  uint64_t end = now_ms() + WAIT_MS;
  while (uv_run(&w->loop, UV_RUN_NOWAIT) != 0) assert_true(now_ms() < end);
  assert_int_equal(uv_loop_close(&w->loop), 0);
}

/* ---- Nodes ---- */

typedef struct node {
  hark_pubsub *ps;
  hark_pubsub_adapter adapter;
  const char *prefix;
  int sharded;
} node;

static void node_start(world *w, node *n, const char *name, const char *prefix, int sharded) {
  char url[64];
  snprintf(url, sizeof url, "redis://127.0.0.1:%d/3", redis_port);
  hark_redis_options options = {.url = url,
                                .channel_prefix = prefix,
                                .sharded = sharded,
                                .reconnect_min_ms = 10,
                                .reconnect_max_ms = 100};
  n->prefix = prefix;
  n->sharded = sharded;
  assert_int_equal(hark_redis_adapter_create(&n->adapter, &w->loop, &options), HARK_OK);
  hark_pubsub_options ps_options = {.node_name = name, .adapter = &n->adapter};
  assert_int_equal(hark_pubsub_create(&n->ps, &w->loop, &ps_options), HARK_OK);
}

static hark_redis_stats node_stats(const node *n) {
  hark_redis_stats stats;
  hark_redis_adapter_stats(n->adapter.ctx, &stats);
  return stats;
}

typedef struct node_list {
  node *nodes;
  size_t count;
} node_list;

static int all_connected(void *arg) {
  node_list *list = arg;
  for (size_t i = 0; i < list->count; i++)
    if (!node_stats(&list->nodes[i]).connected) return 0;
  return 1;
}

static int none_connected(void *arg) {
  node_list *list = arg;
  for (size_t i = 0; i < list->count; i++)
    if (node_stats(&list->nodes[i]).connected) return 0;
  return 1;
}

/* Builds the channel name the adapter uses for a topic or node name. */
static size_t channel_name(const node *n, char kind, const char *name, size_t len, char *out) {
  size_t k = (size_t)sprintf(out, "%s:%c:", n->prefix, kind);
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)name[i];
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
        c == '.' || c == ':' || c == '-')
      out[k++] = (char)c;
    else
      k += (size_t)sprintf(out + k, "%%%02X", c);
  }
  out[k] = '\0';
  return k;
}

typedef struct numsub_wait {
  world *w;
  char channel[512];
  size_t len;
  int sharded;
  long long expected;
} numsub_wait;

static int numsub_reached(void *arg) {
  numsub_wait *wait = arg;
  if (redis_numsub(wait->channel, wait->len, wait->sharded) == wait->expected) return 1;
  run_for(wait->w, 5);
  return 0;
}

/* Waits until `expected` connections listen to the channel of a topic ('t')
 * or node ('n'). */
static void wait_numsub(world *w, const node *n, char kind, const char *name, size_t len,
                        long long expected) {
  numsub_wait wait = {.w = w, .sharded = n->sharded, .expected = expected};
  wait.len = channel_name(n, kind, name, len, wait.channel);
  assert_true(run_until(w, numsub_reached, &wait));
}

static void nodes_start(world *w, node *nodes, size_t count, const char *prefix, int sharded) {
  static const char *const names[] = {"node-a", "node-b", "node-c"};
  world_init(w);
  for (size_t i = 0; i < count; i++) node_start(w, &nodes[i], names[i], prefix, sharded);
  node_list list = {nodes, count};
  assert_true(run_until(w, all_connected, &list));
  for (size_t i = 0; i < count; i++)
    wait_numsub(w, &nodes[i], 'n', names[i], strlen(names[i]), 1);
}

static void nodes_stop(world *w, node *nodes, size_t count) {
  for (size_t i = 0; i < count; i++) hark_pubsub_destroy(nodes[i].ps);
  world_close(w);
}

/* ---- Probes ---- */

typedef struct probe {
  hark_subscriber sub;
  int received;
  char topic[64];
  size_t topic_len;
  char event[64];
  char payload[64];
  int binary;
} probe;

static void copy_bytes(char *out, size_t cap, const char *bytes, size_t len) {
  if (len >= cap) len = cap - 1;
  if (len > 0) memcpy(out, bytes, len);
  out[len] = '\0';
}

static void probe_on_message(hark_subscriber *sub, const char *topic, size_t topic_len,
                             const hark_message *msg) {
  probe *p = (probe *)sub;
  p->received++;
  copy_bytes(p->topic, sizeof p->topic, topic, topic_len);
  p->topic_len = topic_len;
  copy_bytes(p->event, sizeof p->event, msg->event, msg->event_len);
  copy_bytes(p->payload, sizeof p->payload, msg->payload, msg->payload_len);
  p->binary = msg->binary;
}

static void probe_init(probe *p) {
  memset(p, 0, sizeof *p);
  p->sub.on_message = probe_on_message;
}

static int probe_got_one(void *arg) { return ((probe *)arg)->received >= 1; }

static const hark_message hello = {
    .event = "new_msg", .event_len = 7, .payload = "{\"body\":\"hi\"}", .payload_len = 13};

/* ---- Delivery ---- */

static void test_broadcast_reaches_all_nodes_once(void **state) {
  (void)state;
  world w;
  node nodes[3];
  nodes_start(&w, nodes, 3, "bcast", 0);
  probe pa, pb, pc;
  probe_init(&pa);
  probe_init(&pb);
  probe_init(&pc);
  assert_int_equal(hark_pubsub_subscribe(nodes[0].ps, &pa.sub, TOPIC("room:1"), NULL), 0);
  assert_int_equal(hark_pubsub_subscribe(nodes[1].ps, &pb.sub, TOPIC("room:1"), NULL), 0);
  assert_int_equal(hark_pubsub_subscribe(nodes[2].ps, &pc.sub, TOPIC("room:1"), NULL), 0);
  wait_numsub(&w, &nodes[0], 't', TOPIC("room:1"), 3);

  assert_int_equal(hark_pubsub_broadcast(nodes[0].ps, TOPIC("room:1"), &hello, NULL), 0);
  assert_int_equal(pa.received, 1); /* local delivery is synchronous */
  assert_true(run_until(&w, probe_got_one, &pb));
  assert_true(run_until(&w, probe_got_one, &pc));
  run_for(&w, 50); /* an echo of A's own broadcast would arrive by now */

  assert_int_equal(pa.received, 1);
  assert_int_equal(pb.received, 1);
  assert_int_equal(pc.received, 1);
  assert_string_equal(pb.topic, "room:1");
  assert_string_equal(pb.event, "new_msg");
  assert_string_equal(pb.payload, "{\"body\":\"hi\"}");
  assert_int_equal(pb.binary, 0);
  assert_int_equal(node_stats(&nodes[0]).published, 1);
  assert_int_equal(node_stats(&nodes[0]).received, 0);
  assert_int_equal(node_stats(&nodes[1]).received, 1);
  assert_int_equal(node_stats(&nodes[2]).received, 1);

  /* A second broadcast, from another node and with a binary payload. */
  hark_message raw = {.event = "bin", .event_len = 3, .payload = "\0\1\2", .payload_len = 3,
                      .binary = 1};
  assert_int_equal(hark_pubsub_broadcast(nodes[2].ps, TOPIC("room:1"), &raw, NULL), 0);
  pa.received = pb.received = 0;
  assert_true(run_until(&w, probe_got_one, &pa));
  assert_true(run_until(&w, probe_got_one, &pb));
  assert_int_equal(pa.binary, 1);
  assert_string_equal(pa.event, "bin");

  hark_pubsub_unsubscribe_all(nodes[0].ps, &pa.sub);
  hark_pubsub_unsubscribe_all(nodes[1].ps, &pb.sub);
  hark_pubsub_unsubscribe_all(nodes[2].ps, &pc.sub);
  nodes_stop(&w, nodes, 3);
}

static void test_local_broadcast_and_from(void **state) {
  (void)state;
  world w;
  node nodes[2];
  nodes_start(&w, nodes, 2, "local", 0);
  probe pa, pb;
  probe_init(&pa);
  probe_init(&pb);
  hark_pubsub_subscribe(nodes[0].ps, &pa.sub, TOPIC("room"), NULL);
  hark_pubsub_subscribe(nodes[1].ps, &pb.sub, TOPIC("room"), NULL);
  wait_numsub(&w, &nodes[0], 't', TOPIC("room"), 2);

  assert_int_equal(hark_pubsub_local_broadcast(nodes[0].ps, TOPIC("room"), &hello, NULL), 0);
  run_for(&w, 50);
  assert_int_equal(pa.received, 1);
  assert_int_equal(pb.received, 0);

  assert_int_equal(hark_pubsub_broadcast_from(nodes[0].ps, &pa.sub, TOPIC("room"), &hello, NULL),
                   0);
  assert_true(run_until(&w, probe_got_one, &pb));
  run_for(&w, 30);
  assert_int_equal(pa.received, 1); /* the sender is skipped locally */
  assert_int_equal(pb.received, 1);

  hark_pubsub_unsubscribe_all(nodes[0].ps, &pa.sub);
  hark_pubsub_unsubscribe_all(nodes[1].ps, &pb.sub);
  nodes_stop(&w, nodes, 2);
}

static void test_direct_broadcast_one_node(void **state) {
  (void)state;
  world w;
  node nodes[3];
  nodes_start(&w, nodes, 3, "direct", 0);
  probe p[3];
  for (int i = 0; i < 3; i++) {
    probe_init(&p[i]);
    hark_pubsub_subscribe(nodes[i].ps, &p[i].sub, TOPIC("room"), NULL);
  }
  wait_numsub(&w, &nodes[0], 't', TOPIC("room"), 3);

  assert_int_equal(hark_pubsub_direct_broadcast(nodes[0].ps, "node-b", TOPIC("room"), &hello, NULL),
                   0);
  assert_true(run_until(&w, probe_got_one, &p[1]));
  run_for(&w, 50);
  assert_int_equal(p[0].received, 0);
  assert_int_equal(p[1].received, 1);
  assert_int_equal(p[2].received, 0);

  assert_int_equal(
      hark_pubsub_direct_broadcast(nodes[0].ps, "node-x", TOPIC("room"), &hello, NULL), 0);
  run_for(&w, 50);
  assert_int_equal(p[0].received, 0);
  assert_int_equal(p[1].received, 1);
  assert_int_equal(p[2].received, 0);

  for (int i = 0; i < 3; i++) hark_pubsub_unsubscribe_all(nodes[i].ps, &p[i].sub);
  nodes_stop(&w, nodes, 3);
}

/* ---- Subscriptions ---- */

static void test_subscribes_only_needed_topics(void **state) {
  (void)state;
  world w;
  node nodes[2];
  nodes_start(&w, nodes, 2, "needed", 0);
  probe p1, p2;
  probe_init(&p1);
  probe_init(&p2);

  /* Only node B subscribes: one connection listens, none before. */
  assert_int_equal(redis_numsub(TOPIC("needed:t:only-b"), 0), 0);
  hark_pubsub_subscribe(nodes[1].ps, &p1.sub, TOPIC("only-b"), NULL);
  hark_pubsub_subscribe(nodes[1].ps, &p2.sub, TOPIC("only-b"), NULL);
  wait_numsub(&w, &nodes[1], 't', TOPIC("only-b"), 1);

  redisReply *reply = redis_run("PUBSUB CHANNELS needed:*");
  assert_int_equal(reply->type, REDIS_REPLY_ARRAY);
  assert_int_equal(reply->elements, 3); /* two node channels and one topic */
  freeReplyObject(reply);

  /* The subscription stays while one local subscriber is left. */
  hark_pubsub_unsubscribe(nodes[1].ps, &p1.sub, TOPIC("only-b"));
  run_for(&w, 50);
  assert_int_equal(redis_numsub(TOPIC("needed:t:only-b"), 0), 1);
  hark_pubsub_unsubscribe(nodes[1].ps, &p2.sub, TOPIC("only-b"));
  wait_numsub(&w, &nodes[1], 't', TOPIC("only-b"), 0);

  /* Quick subscribe, unsubscribe, subscribe ends subscribed. */
  hark_pubsub_subscribe(nodes[1].ps, &p1.sub, TOPIC("flip"), NULL);
  hark_pubsub_unsubscribe(nodes[1].ps, &p1.sub, TOPIC("flip"));
  hark_pubsub_subscribe(nodes[1].ps, &p1.sub, TOPIC("flip"), NULL);
  wait_numsub(&w, &nodes[1], 't', TOPIC("flip"), 1);
  assert_int_equal(hark_pubsub_broadcast(nodes[0].ps, TOPIC("flip"), &hello, NULL), 0);
  assert_true(run_until(&w, probe_got_one, &p1));

  hark_pubsub_unsubscribe_all(nodes[1].ps, &p1.sub);
  nodes_stop(&w, nodes, 2);
}

static void test_topics_with_any_bytes(void **state) {
  (void)state;
  world w;
  node nodes[2];
  nodes_start(&w, nodes, 2, "weird", 0);
  static const char topic[] = {'a', 0, ' ', '*', '?', '[', '%', (char)0xff, '\n'};
  probe pb;
  probe_init(&pb);
  assert_int_equal(redis_numsub(TOPIC("weird:t:a%00%20%2A%3F%5B%25%FF%0A"), 0), 0);
  hark_pubsub_subscribe(nodes[1].ps, &pb.sub, topic, sizeof topic, NULL);
  wait_numsub(&w, &nodes[1], 't', topic, sizeof topic, 1);
  assert_int_equal(redis_numsub(TOPIC("weird:t:a%00%20%2A%3F%5B%25%FF%0A"), 0), 1);

  /* A topic that a glob would match must not receive. */
  probe other;
  probe_init(&other);
  hark_pubsub_subscribe(nodes[1].ps, &other.sub, TOPIC("a"), NULL);
  wait_numsub(&w, &nodes[1], 't', TOPIC("a"), 1);

  assert_int_equal(hark_pubsub_broadcast(nodes[0].ps, topic, sizeof topic, &hello, NULL), 0);
  assert_true(run_until(&w, probe_got_one, &pb));
  run_for(&w, 30);
  assert_int_equal(pb.topic_len, sizeof topic);
  assert_memory_equal(pb.topic, topic, sizeof topic);
  assert_int_equal(other.received, 0);

  hark_pubsub_unsubscribe_all(nodes[1].ps, &pb.sub);
  hark_pubsub_unsubscribe_all(nodes[1].ps, &other.sub);
  nodes_stop(&w, nodes, 2);
}

/* ---- Dispatchers ---- */

typedef struct counting {
  int calls;
  size_t entries;
  char event[32];
} counting;

static void counting_dispatch(void *ctx, const char *topic, size_t topic_len,
                              const hark_dispatch_entry *entries, size_t count,
                              const hark_subscriber *from, const hark_message *msg) {
  (void)topic;
  (void)topic_len;
  (void)entries;
  (void)from;
  counting *c = ctx;
  c->calls++;
  c->entries += count;
  copy_bytes(c->event, sizeof c->event, msg->event, msg->event_len);
}

static int counting_called(void *arg) { return ((counting *)arg)->calls >= 1; }

static void test_custom_dispatcher_by_name(void **state) {
  (void)state;
  world w;
  node nodes[2];
  nodes_start(&w, nodes, 2, "disp", 0);
  counting on_a = {0}, on_b = {0};
  hark_dispatcher da = {.name = "counting", .dispatch = counting_dispatch, .ctx = &on_a};
  hark_dispatcher db = {.name = "counting", .dispatch = counting_dispatch, .ctx = &on_b};
  hark_dispatcher only_a = {.name = "only-a", .dispatch = counting_dispatch, .ctx = &on_a};
  assert_int_equal(hark_pubsub_register_dispatcher(nodes[0].ps, &da), 0);
  assert_int_equal(hark_pubsub_register_dispatcher(nodes[1].ps, &db), 0);
  assert_int_equal(hark_pubsub_register_dispatcher(nodes[0].ps, &only_a), 0);
  probe pb;
  probe_init(&pb);
  hark_pubsub_subscribe(nodes[1].ps, &pb.sub, TOPIC("room"), NULL);
  wait_numsub(&w, &nodes[1], 't', TOPIC("room"), 1);

  assert_int_equal(hark_pubsub_broadcast(nodes[0].ps, TOPIC("room"), &hello, &da), 0);
  assert_true(run_until(&w, counting_called, &on_b));
  assert_int_equal(on_b.entries, 1);
  assert_string_equal(on_b.event, "new_msg");
  assert_int_equal(pb.received, 0); /* the default dispatcher was not used */

  /* Node B has no dispatcher called "only-a": the envelope is dropped. */
  assert_int_equal(hark_pubsub_broadcast(nodes[0].ps, TOPIC("room"), &hello, &only_a), 0);
  run_for(&w, 100);
  assert_int_equal(node_stats(&nodes[1]).unknown_dispatcher, 1);
  assert_int_equal(on_b.calls, 1);
  assert_int_equal(pb.received, 0);

  hark_pubsub_unsubscribe_all(nodes[1].ps, &pb.sub);
  nodes_stop(&w, nodes, 2);
}

/* ---- Invalid traffic ---- */

typedef struct stat_wait {
  node *n;
  uint64_t invalid;
} stat_wait;

static int invalid_reached(void *arg) {
  stat_wait *wait = arg;
  return node_stats(wait->n).invalid >= wait->invalid;
}

static void publish_raw(const char *channel, const void *data, size_t len) {
  redisReply *reply = redis_run("PUBLISH %s %b", channel, data, len);
  assert_int_equal(reply->type, REDIS_REPLY_INTEGER);
  freeReplyObject(reply);
}

static void test_invalid_envelopes_counted(void **state) {
  (void)state;
  world w;
  node nodes[2];
  nodes_start(&w, nodes, 2, "bad", 0);
  probe pb;
  probe_init(&pb);
  hark_pubsub_subscribe(nodes[1].ps, &pb.sub, TOPIC("room"), NULL);
  wait_numsub(&w, &nodes[1], 't', TOPIC("room"), 1);

  hark__envelope env = {.origin = "node-x", .origin_len = 6, .dispatcher = "default",
                        .dispatcher_len = 7, .topic = "room", .topic_len = 4, .msg = hello};
  unsigned char valid[128];
  size_t len = hark__envelope_write(&env, valid);
  publish_raw("bad:t:room", "garbage bytes", 13);
  publish_raw("bad:t:room", valid, len - 3); /* truncated */
  valid[0] = 9;
  publish_raw("bad:t:room", valid, len); /* wrong version */
  valid[0] = HARK_ENVELOPE_VERSION;
  publish_raw("bad:n:node-b", "", 0);
  /* A valid envelope for topic "room" on another topic's channel. */
  hark_pubsub_subscribe(nodes[1].ps, &pb.sub, TOPIC("other"), NULL);
  wait_numsub(&w, &nodes[1], 't', TOPIC("other"), 1);
  publish_raw("bad:t:other", valid, len);

  stat_wait wait = {.n = &nodes[1], .invalid = 5};
  assert_true(run_until(&w, invalid_reached, &wait));
  assert_int_equal(pb.received, 0);

  /* A valid envelope from another node is delivered, and valid traffic goes on. */
  publish_raw("bad:t:room", valid, len);
  assert_true(run_until(&w, probe_got_one, &pb));
  assert_int_equal(hark_pubsub_broadcast(nodes[0].ps, TOPIC("room"), &hello, NULL), 0);
  pb.received = 0;
  assert_true(run_until(&w, probe_got_one, &pb));
  assert_int_equal(node_stats(&nodes[1]).invalid, 5);
  assert_int_equal(node_stats(&nodes[1]).connected, 1);

  hark_pubsub_unsubscribe_all(nodes[1].ps, &pb.sub);
  nodes_stop(&w, nodes, 2);
}

/* ---- Outage ---- */

static void test_reconnects_after_redis_restart(void **state) {
  (void)state;
  world w;
  node nodes[2];
  nodes_start(&w, nodes, 2, "restart", 0);
  probe pa, pb;
  probe_init(&pa);
  probe_init(&pb);
  hark_pubsub_subscribe(nodes[0].ps, &pa.sub, TOPIC("room"), NULL);
  hark_pubsub_subscribe(nodes[1].ps, &pb.sub, TOPIC("room"), NULL);
  wait_numsub(&w, &nodes[0], 't', TOPIC("room"), 2);

  redis_stop();
  node_list list = {nodes, 2};
  assert_true(run_until(&w, none_connected, &list));

  /* Dropped and counted, but still delivered locally. */
  assert_int_equal(hark_pubsub_broadcast(nodes[0].ps, TOPIC("room"), &hello, NULL), 0);
  assert_int_equal(pa.received, 1);
  assert_int_equal(node_stats(&nodes[0]).dropped, 1);
  assert_int_equal(node_stats(&nodes[0]).published, 0);
  run_for(&w, 150); /* a few retries fail */

  assert_int_equal(redis_start(), 0);
  assert_true(run_until(&w, all_connected, &list));
  wait_numsub(&w, &nodes[0], 't', TOPIC("room"), 2);
  wait_numsub(&w, &nodes[1], 'n', TOPIC("node-b"), 1);
  assert_int_equal(pb.received, 0);
  assert_true(node_stats(&nodes[0]).reconnects >= 2); /* both links */
  assert_true(node_stats(&nodes[1]).reconnects >= 2);

  assert_int_equal(hark_pubsub_broadcast(nodes[0].ps, TOPIC("room"), &hello, NULL), 0);
  assert_true(run_until(&w, probe_got_one, &pb));
  assert_int_equal(hark_pubsub_direct_broadcast(nodes[1].ps, "node-a", TOPIC("room"), &hello, NULL),
                   0);
  pa.received = 0;
  assert_true(run_until(&w, probe_got_one, &pa));

  hark_pubsub_unsubscribe_all(nodes[0].ps, &pa.sub);
  hark_pubsub_unsubscribe_all(nodes[1].ps, &pb.sub);
  nodes_stop(&w, nodes, 2);
}

/* ---- Sharded pub/sub ---- */

static void test_sharded_mode(void **state) {
  (void)state;
  world w;
  node nodes[2];
  nodes_start(&w, nodes, 2, "shard", 1);
  probe pa, pb;
  probe_init(&pa);
  probe_init(&pb);
  hark_pubsub_subscribe(nodes[0].ps, &pa.sub, TOPIC("room"), NULL);
  hark_pubsub_subscribe(nodes[1].ps, &pb.sub, TOPIC("room"), NULL);
  wait_numsub(&w, &nodes[0], 't', TOPIC("room"), 2);
  assert_int_equal(redis_numsub(TOPIC("shard:t:room"), 0), 0); /* no plain SUBSCRIBE */

  assert_int_equal(hark_pubsub_broadcast(nodes[0].ps, TOPIC("room"), &hello, NULL), 0);
  assert_true(run_until(&w, probe_got_one, &pb));
  run_for(&w, 30);
  assert_int_equal(pa.received, 1);

  assert_int_equal(hark_pubsub_direct_broadcast(nodes[1].ps, "node-a", TOPIC("room"), &hello, NULL),
                   0);
  pa.received = 0;
  assert_true(run_until(&w, probe_got_one, &pa));

  hark_pubsub_unsubscribe(nodes[1].ps, &pb.sub, TOPIC("room"));
  wait_numsub(&w, &nodes[0], 't', TOPIC("room"), 1);

  hark_pubsub_unsubscribe_all(nodes[0].ps, &pa.sub);
  nodes_stop(&w, nodes, 2);
}

/* ---- Life cycle and options ---- */

static void test_destroy_while_connecting(void **state) {
  (void)state;
  world w;
  world_init(&w);
  /* Nothing listens on port 1: connects fail and retries are scheduled. */
  hark_redis_options options = {.url = "redis://127.0.0.1:1", .reconnect_min_ms = 1,
                                .reconnect_max_ms = 5};
  hark_pubsub_adapter adapter;
  assert_int_equal(hark_redis_adapter_create(&adapter, &w.loop, &options), HARK_OK);
  hark_pubsub_options ps_options = {.node_name = "lonely", .adapter = &adapter};
  hark_pubsub *ps;
  assert_int_equal(hark_pubsub_create(&ps, &w.loop, &ps_options), HARK_OK);
  run_for(&w, 30);

  hark_redis_stats stats;
  hark_redis_adapter_stats(adapter.ctx, &stats);
  assert_int_equal(stats.connected, 0);
  probe p;
  probe_init(&p);
  hark_pubsub_subscribe(ps, &p.sub, TOPIC("room"), NULL);
  assert_int_equal(hark_pubsub_broadcast(ps, TOPIC("room"), &hello, NULL), 0);
  assert_int_equal(p.received, 1);
  hark_redis_adapter_stats(adapter.ctx, &stats);
  assert_int_equal(stats.dropped, 1);

  hark_pubsub_unsubscribe_all(ps, &p.sub);
  hark_pubsub_destroy(ps);
  world_close(&w);
}

static void test_create_rejects_bad_options(void **state) {
  (void)state;
  uv_loop_t loop;
  uv_loop_init(&loop);
  hark_pubsub_adapter adapter;
  hark_redis_options options = {.url = "http://127.0.0.1:6379"};
  assert_int_equal(hark_redis_adapter_create(&adapter, &loop, &options), HARK_EINVAL);
  options.url = NULL;
  assert_int_equal(hark_redis_adapter_create(&adapter, &loop, &options), HARK_EINVAL);

  options.url = "redis://127.0.0.1:6379";
  options.channel_prefix = "";
  assert_int_equal(hark_redis_adapter_create(&adapter, &loop, &options), HARK_EINVAL);
  options.channel_prefix = "has space";
  assert_int_equal(hark_redis_adapter_create(&adapter, &loop, &options), HARK_EINVAL);
  options.channel_prefix = "glob*";
  assert_int_equal(hark_redis_adapter_create(&adapter, &loop, &options), HARK_EINVAL);

  /* An adapter never attached is freed by its destroy callback. */
  options.channel_prefix = "app";
  assert_int_equal(hark_redis_adapter_create(&adapter, &loop, &options), HARK_OK);
  assert_string_equal(adapter.name, "redis");
  adapter.destroy(adapter.ctx);
  assert_int_equal(uv_loop_close(&loop), 0);
}

typedef struct url_case {
  const char *url;
  const char *host;
  int port;
  int db;
} url_case;

static void test_url_parse_valid(void **state) {
  (void)state;
  static const url_case cases[] = {
      {"redis://127.0.0.1:6379", "127.0.0.1", 6379, -1},
      {"redis://localhost:1/0", "localhost", 1, 0},
      {"redis://redis.internal:65535/15", "redis.internal", 65535, 15},
      {"redis://[::1]:7000/2", "::1", 7000, 2},
      {"redis://[fe80::1:2]:7000", "fe80::1:2", 7000, -1},
      {"redis://host", "host", 6379, -1},
      {"redis://host:6380/", "host", 6380, -1},
      {"redis://h:1/2147483647", "h", 1, 2147483647},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char host[64];
    int port = 0, db = 0;
    const char *error = "unset";
    assert_int_equal(hark_redis_url_parse(cases[i].url, host, sizeof host, &port, &db, &error),
                     HARK_OK);
    assert_null(error);
    assert_string_equal(host, cases[i].host);
    assert_int_equal(port, cases[i].port);
    assert_int_equal(db, cases[i].db);
  }
}

typedef struct bad_url {
  const char *url;
  const char *error;
} bad_url;

static void test_url_parse_invalid(void **state) {
  (void)state;
  static const bad_url cases[] = {
      {"", "URL must start with redis://"},
      {"http://h:1", "URL must start with redis://"},
      {"rediss://h:1", "TLS (rediss://) is not supported"},
      {"redis://", "missing host"},
      {"redis://:6379", "missing host"},
      {"redis://h:0", "port must be a number from 1 to 65535"},
      {"redis://h:65536", "port must be a number from 1 to 65535"},
      {"redis://h:", "port must be a number from 1 to 65535"},
      {"redis://h:-1", "port must be a number from 1 to 65535"},
      {"redis://h:12a", "port must be a number from 1 to 65535"},
      {"redis://h:1/x", "database must be a number from 0 to 2147483647"},
      {"redis://h:1/-1", "database must be a number from 0 to 2147483647"},
      {"redis://h:1/2147483648", "database must be a number from 0 to 2147483647"},
      {"redis://h:1/1/2", "database must be a number from 0 to 2147483647"},
      {"redis://user:secret@h:1", "credentials in the URL are not supported"},
      {"redis://h:1/0?timeout=1", "database must be a number from 0 to 2147483647"},
      {"redis://h:1?x", "query and fragment are not supported"},
      {"redis://::1:6379", "IPv6 addresses must be written in brackets, as [::1]"},
      {"redis://[::1:6379", "missing ']' after the IPv6 address"},
      {"redis://[nope]:1", "invalid IPv6 address"},
      {"redis://[]:1", "invalid IPv6 address"},
      {"redis://[::1]x", "unexpected characters after the host"},
      {"redis://h st:1", "invalid character in the host"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char host[64];
    int port, db;
    const char *error = NULL;
    assert_int_equal(hark_redis_url_parse(cases[i].url, host, sizeof host, &port, &db, &error),
                     HARK_EINVAL);
    assert_non_null(error);
    assert_string_equal(error, cases[i].error);
  }

  char small[4];
  int port, db;
  const char *error = NULL;
  assert_int_equal(hark_redis_url_parse("redis://longhost:1", small, sizeof small, &port, &db,
                                        &error),
                   HARK_EINVAL);
  assert_string_equal(error, "host too long");
  assert_int_equal(hark_redis_url_parse(NULL, small, sizeof small, &port, &db, &error),
                   HARK_EINVAL);
  assert_string_equal(error, "missing URL");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_url_parse_valid),
      cmocka_unit_test(test_url_parse_invalid),
      cmocka_unit_test(test_create_rejects_bad_options),
      cmocka_unit_test(test_destroy_while_connecting),
      cmocka_unit_test(test_broadcast_reaches_all_nodes_once),
      cmocka_unit_test(test_local_broadcast_and_from),
      cmocka_unit_test(test_direct_broadcast_one_node),
      cmocka_unit_test(test_subscribes_only_needed_topics),
      cmocka_unit_test(test_topics_with_any_bytes),
      cmocka_unit_test(test_custom_dispatcher_by_name),
      cmocka_unit_test(test_invalid_envelopes_counted),
      cmocka_unit_test(test_sharded_mode),
      cmocka_unit_test(test_reconnects_after_redis_restart),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
