/* Replication over a hark_pubsub instance on a libuv loop: the env of
 * hark_tracker_start_replication built from uv timers, the wall clock and
 * pubsub broadcasts.
 *
 * Messages travel with the dispatcher "hark.tracker", which every node
 * registers. On receipt it hands the bytes to hark_tracker_receive for the
 * tracker subscribers of the topic, and passes the message unchanged to any
 * other subscriber (a test spy, for instance). The tracker's own subscriber
 * on each shard topic also tells cluster adapters to listen to it. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "hark/tracker.h"
#include "tracker/replication.h"
#include "tracker/shard.h"

#define DISPATCHER_NAME "hark.tracker"
#define EVENT_NAME "phx_presence"

typedef struct pubsub_env pubsub_env;

typedef struct shard_timer {
  uv_timer_t handle;
  pubsub_env *env;
  unsigned shard;
} shard_timer;

/* Freed by the close callback of its last timer, because libuv may touch a
 * handle until its close callback has run. */
struct pubsub_env {
  hark_tracker *tracker;
  hark_pubsub *pubsub;
  hark_subscriber subscriber; /* subscribed to every shard topic */
  uint64_t random_state;
  unsigned timer_count;
  unsigned open_timers;
  shard_timer timers[];
};

/* ---- env callbacks ---- */

static uint64_t env_now_ms(void *ctx) {
  (void)ctx;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void on_timer(uv_timer_t *handle) {
  shard_timer *timer = handle->data;
  hark_tracker_on_timer(timer->env->tracker, timer->shard);
}

static void env_schedule(void *ctx, unsigned shard, uint64_t delay_ms) {
  pubsub_env *env = ctx;
  if (shard >= env->timer_count) return;
  uv_timer_start(&env->timers[shard].handle, on_timer, delay_ms, 0);
}

/* xorshift64*: only the first tick's jitter uses it. */
static uint64_t env_random(void *ctx) {
  pubsub_env *env = ctx;
  uint64_t x = env->random_state;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  env->random_state = x;
  return x * 0x2545f4914f6cdd1dULL;
}

static void tracker_subscriber_message(hark_subscriber *sub, const char *topic, size_t topic_len,
                                       const hark_message *msg);

static void dispatch(void *ctx, const char *topic, size_t topic_len,
                     const hark_dispatch_entry *entries, size_t count,
                     const hark_subscriber *from, const hark_message *msg) {
  (void)ctx;
  for (size_t i = 0; i < count; i++) {
    hark_subscriber *sub = entries[i].sub;
    if (sub == from || sub->on_message == NULL) continue;
    sub->on_message(sub, topic, topic_len, msg);
  }
}

static const hark_dispatcher tracker_dispatcher = {.name = DISPATCHER_NAME, .dispatch = dispatch};

static void tracker_subscriber_message(hark_subscriber *sub, const char *topic, size_t topic_len,
                                       const hark_message *msg) {
  pubsub_env *env = sub->data;
  hark_tracker_receive(env->tracker, topic, topic_len, msg->payload, msg->payload_len);
}

static void env_send(void *ctx, const char *node, const char *topic, size_t topic_len,
                     const void *data, size_t len) {
  pubsub_env *env = ctx;
  hark_message msg = {.event = EVENT_NAME, .event_len = sizeof(EVENT_NAME) - 1, .payload = data,
                      .payload_len = len, .binary = 1};
  int rc;
  if (node == NULL) {
    rc = hark_pubsub_broadcast_from(env->pubsub, &env->subscriber, topic, topic_len, &msg,
                                    &tracker_dispatcher);
  } else {
    rc = hark_pubsub_direct_broadcast(env->pubsub, node, topic, topic_len, &msg,
                                      &tracker_dispatcher);
  }
  /* Delivery is at-most-once: heartbeats and transfers repair a loss. */
  if (rc != 0) HARK_DEBUG("tracker.send_failed", "error=%s bytes=%zu", hark_err_name(rc), len);
}

/* ---- lifetime ---- */

static void on_timer_closed(uv_handle_t *handle) {
  shard_timer *timer = handle->data;
  pubsub_env *env = timer->env;
  if (--env->open_timers == 0) free(env);
}

static void close_env(pubsub_env *env) {
  hark_pubsub_unsubscribe_all(env->pubsub, &env->subscriber);
  if (env->open_timers == 0) {
    free(env);
    return;
  }
  unsigned count = env->open_timers;
  for (unsigned i = 0; i < count; i++) uv_close((uv_handle_t *)&env->timers[i].handle, on_timer_closed);
}

static void teardown(void *ctx) {
  close_env(ctx);
}

static int register_dispatcher(hark_pubsub *pubsub) {
  int rc = hark_pubsub_register_dispatcher(pubsub, &tracker_dispatcher);
  if (rc != HARK_EEXIST) return rc;
  /* Another tracker on this instance registered it already. */
  const hark_dispatcher *found = hark_pubsub_find_dispatcher(pubsub, DISPATCHER_NAME);
  return found != NULL && found->dispatch == dispatch ? 0 : HARK_EEXIST;
}

static pubsub_env *env_new(hark_tracker *tracker, hark_pubsub *pubsub) {
  unsigned count = hark_tracker_pool_size(tracker);
  pubsub_env *env = calloc(1, sizeof(*env) + count * sizeof(env->timers[0]));
  if (env == NULL) return NULL;
  env->tracker = tracker;
  env->pubsub = pubsub;
  env->subscriber.on_message = tracker_subscriber_message;
  env->subscriber.data = env;
  env->random_state = env_now_ms(NULL) ^ (uint64_t)(uintptr_t)env ^ 0x9e3779b97f4a7c15ULL;
  env->timer_count = count;
  uv_loop_t *loop = hark_pubsub_loop(pubsub);
  for (unsigned i = 0; i < count; i++) {
    env->timers[i].env = env;
    env->timers[i].shard = i;
    env->timers[i].handle.data = &env->timers[i];
    uv_timer_init(loop, &env->timers[i].handle);
    env->open_timers++;
  }
  return env;
}

static int subscribe_topics(pubsub_env *env, const char *name) {
  size_t cap = strlen(name) + 48;
  char *topic = malloc(cap);
  if (topic == NULL) return HARK_ENOMEM;
  int rc = 0;
  for (unsigned i = 0; rc == 0 && i < env->timer_count; i++) {
    int n = snprintf(topic, cap, "phx_presence:%s_shard%u", name, i);
    rc = hark_pubsub_subscribe(env->pubsub, &env->subscriber, topic, (size_t)n, NULL);
  }
  free(topic);
  return rc;
}

static bool same_node_name(hark_tracker *tracker, hark_pubsub *pubsub) {
  hark__rref self = hark__state_self(hark__tracker_shard(tracker, 0)->state);
  const char *node = hark_pubsub_node_name(pubsub);
  return strlen(node) == self.name_len && memcmp(node, self.name, self.name_len) == 0;
}

int hark_tracker_replicate_over_pubsub(hark_tracker *tracker, hark_pubsub *pubsub,
                                       const char *name,
                                       const hark_tracker_replication_options *options) {
  if (tracker == NULL || pubsub == NULL || name == NULL || name[0] == '\0') return HARK_EINVAL;
  if (!same_node_name(tracker, pubsub)) return HARK_EINVAL;
  int rc = register_dispatcher(pubsub);
  if (rc != 0) return rc;

  pubsub_env *env = env_new(tracker, pubsub);
  if (env == NULL) return HARK_ENOMEM;
  hark_tracker_env host = {env, env_now_ms, env_schedule, env_random, env_send};
  rc = subscribe_topics(env, name);
  if (rc == 0) rc = hark_tracker_start_replication(tracker, name, options, &host);
  if (rc != 0) {
    close_env(env);
    return rc;
  }
  /* From here the tracker owns the env: destroying it runs the teardown. */
  return hark__replication_set_teardown(tracker, teardown, env);
}
