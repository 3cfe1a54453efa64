/* The public replication calls of hark/tracker.h: options, start, timer,
 * receive, graceful permdown, replica listing and counters. The protocol
 * itself is in replication.c. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "hark/tracker.h"
#include "tracker/replication.h"
#include "tracker/shard.h"
#include "tracker/wire.h"

#define TOPIC_PREFIX "phx_presence:"
#define TOPIC_SHARD "_shard"

/* Upper bound of every period, about 31 years in milliseconds, so sums and
 * products of periods cannot overflow. */
#define MAX_PERIOD_MS 1000000000000ULL

void hark_tracker_replication_defaults(hark_tracker_replication_options *options) {
  *options = (hark_tracker_replication_options){
      .broadcast_period_ms = 1500,
      .max_silent_periods = 10,
      .down_period_ms = 1500 * 10 * 2,
      .permdown_period_ms = 1200000,
      .clock_sample_periods = 2,
      .max_delta_sizes = {100, 1000, 10000},
      .max_delta_sizes_count = 3,
  };
}

static const char *validate_sizes(const hark_tracker_replication_options *options) {
  if (options->max_delta_sizes_count > 8) return "max_delta_sizes_count must be at most 8";
  for (size_t i = 0; i < options->max_delta_sizes_count; i++) {
    if (options->max_delta_sizes[i] == 0) return "max_delta_sizes must be larger than 0";
    if (i > 0 && options->max_delta_sizes[i] <= options->max_delta_sizes[i - 1]) {
      return "max_delta_sizes must be increasing";
    }
  }
  return NULL;
}

int hark_tracker_replication_validate(const hark_tracker_replication_options *options,
                                      const char **error) {
  const char *message = NULL;
  if (options == NULL) {
    message = "options are missing";
  } else if (options->broadcast_period_ms < 1 || options->broadcast_period_ms > MAX_PERIOD_MS) {
    message = "broadcast_period must be between 1 ms and 10^12 ms";
  } else if (options->down_period_ms < 2 * options->broadcast_period_ms) {
    /* The two relations first and in this order, as Phoenix checks them. */
    message = "down_period must be at least twice as large as the broadcast_period";
  } else if (options->permdown_period_ms <= options->down_period_ms) {
    message = "permdown_period must be larger than the down_period";
  } else if (options->permdown_period_ms > MAX_PERIOD_MS) {
    message = "permdown_period must be at most 10^12 ms";
  } else if (options->clock_sample_periods < 1) {
    message = "clock_sample_periods must be at least 1";
  } else {
    message = validate_sizes(options);
  }
  if (error != NULL) *error = message;
  return message == NULL ? 0 : HARK_EINVAL;
}

/* ---- start ---- */

static bool env_complete(const hark_tracker_env *env) {
  return env != NULL && env->now_ms && env->schedule && env->random && env->send;
}

static int set_topics(hark__replication *repl) {
  for (unsigned i = 0; i < repl->pool_size; i++) {
    hark__shard_replication *s = &repl->shards[i];
    size_t cap = sizeof(TOPIC_PREFIX) + repl->name_len + sizeof(TOPIC_SHARD) + 12;
    s->topic = malloc(cap);
    if (s->topic == NULL) return HARK_ENOMEM;
    int n = snprintf(s->topic, cap, TOPIC_PREFIX "%s" TOPIC_SHARD "%u", repl->name, i);
    s->topic_len = (size_t)n;
  }
  return 0;
}

static hark__replication *replication_new(hark_tracker *tracker, const char *name,
                                          const hark_tracker_replication_options *options,
                                          const hark_tracker_env *env) {
  hark__replication *repl = calloc(1, sizeof(*repl));
  if (repl == NULL) return NULL;
  repl->tracker = tracker;
  repl->pool_size = hark_tracker_pool_size(tracker);
  repl->options = *options;
  repl->env = *env;
  repl->name_len = strlen(name);
  repl->name = strdup(name);
  repl->shards = calloc(repl->pool_size, sizeof(*repl->shards));
  if (repl->name == NULL || repl->shards == NULL || set_topics(repl) != 0) {
    repl->refs = 1;
    hark__replication_release(repl);
    return NULL;
  }
  for (size_t i = 0; i < options->max_delta_sizes_count; i++) {
    repl->delta_caps[i] = options->max_delta_sizes[i];
  }
  return repl;
}

/* Hands the replication to every shard and schedules each first tick at a
 * random delay in [0, period / 4], so the shards do not tick together. */
static void attach_shards(hark_tracker *tracker, hark__replication *repl) {
  const hark_tracker_replication_options *o = &repl->options;
  repl->refs = repl->pool_size;
  for (unsigned i = 0; i < repl->pool_size; i++) {
    hark__shard *shard = hark__tracker_shard(tracker, i);
    shard->replication = repl;
    hark__generations_clear(&shard->generations);
    hark__generations_init(&shard->generations, repl->delta_caps, o->max_delta_sizes_count);
    shard->silent_periods = o->max_silent_periods; /* so the first tick sends */
    shard->current_sample_count = o->clock_sample_periods;
  }
  for (unsigned i = 0; i < repl->pool_size; i++) {
    uint64_t jitter = repl->env.random(repl->env.ctx) % (o->broadcast_period_ms / 4 + 1);
    repl->env.schedule(repl->env.ctx, i, jitter);
  }
}

int hark_tracker_start_replication(hark_tracker *tracker, const char *name,
                                   const hark_tracker_replication_options *options,
                                   const hark_tracker_env *env) {
  if (tracker == NULL || name == NULL || name[0] == '\0' || !env_complete(env)) {
    return HARK_EINVAL;
  }
  hark_tracker_replication_options resolved;
  if (options == NULL) hark_tracker_replication_defaults(&resolved);
  else resolved = *options;
  if (resolved.max_delta_sizes_count == 0) {
    static const size_t defaults[3] = {100, 1000, 10000};
    memcpy(resolved.max_delta_sizes, defaults, sizeof(defaults));
    resolved.max_delta_sizes_count = 3;
  }
  const char *error;
  if (hark_tracker_replication_validate(&resolved, &error) != 0) {
    HARK_WARN("tracker.invalid_options", "tracker=%s error=\"%s\"", name, error);
    return HARK_EINVAL;
  }
  if (hark__tracker_shard(tracker, 0)->replication != NULL) return HARK_EINVAL;

  hark__replication *repl = replication_new(tracker, name, &resolved, env);
  if (repl == NULL) return HARK_ENOMEM;
  attach_shards(tracker, repl);
  HARK_INFO("tracker.replication_started",
            "tracker=%s shards=%u broadcast_period_ms=%" PRIu64 " down_period_ms=%" PRIu64
            " permdown_period_ms=%" PRIu64,
            name, repl->pool_size, resolved.broadcast_period_ms, resolved.down_period_ms,
            resolved.permdown_period_ms);
  return 0;
}

int hark__replication_set_teardown(hark_tracker *tracker, void (*teardown)(void *ctx),
                                   void *ctx) {
  hark__replication *repl = hark__tracker_shard(tracker, 0)->replication;
  if (repl == NULL) return HARK_EINVAL;
  repl->teardown = teardown;
  repl->teardown_ctx = ctx;
  return 0;
}

static hark__replication *replication_of(hark_tracker *tracker) {
  if (tracker == NULL) return NULL;
  return hark__tracker_shard(tracker, 0)->replication;
}

void hark_tracker_on_timer(hark_tracker *tracker, unsigned shard) {
  hark__replication *repl = replication_of(tracker);
  if (repl == NULL || shard >= repl->pool_size) return;
  hark__replication_tick(repl, hark__tracker_shard(tracker, shard));
}

/* ---- receive ---- */

/* Finds the shard of a topic "phx_presence:<name>_shard<i>". Returns the
 * index, or -1 for a topic of another tracker or a malformed one. */
static long shard_of_topic(const hark__replication *repl, const char *topic, size_t len) {
  size_t prefix = sizeof(TOPIC_PREFIX) - 1, marker = sizeof(TOPIC_SHARD) - 1;
  size_t head = prefix + repl->name_len + marker;
  if (topic == NULL || len <= head || len > head + 10) return -1;
  if (memcmp(topic, TOPIC_PREFIX, prefix) != 0 ||
      memcmp(topic + prefix, repl->name, repl->name_len) != 0 ||
      memcmp(topic + prefix + repl->name_len, TOPIC_SHARD, marker) != 0) {
    return -1;
  }
  uint64_t index = 0;
  for (size_t i = head; i < len; i++) {
    if (topic[i] < '0' || topic[i] > '9') return -1;
    index = index * 10 + (uint64_t)(topic[i] - '0');
  }
  /* Only the canonical spelling: no leading zeros. */
  if (topic[head] == '0' && len > head + 1) return -1;
  return index < repl->pool_size ? (long)index : -1;
}

/* Counts an invalid message and logs it, at most once a second with the
 * number suppressed since. */
static void reject(hark__replication *repl, const char *reason, size_t len) {
  repl->stats.invalid_messages++;
  uint64_t now = repl->env.now_ms(repl->env.ctx);
  if (repl->invalid_logged_ms != 0 && now - repl->invalid_logged_ms < 1000) {
    repl->invalid_suppressed++;
    return;
  }
  HARK_WARN("tracker.invalid_message",
            "tracker=%s reason=\"%s\" bytes=%zu suppressed=%" PRIu64, repl->name, reason, len,
            repl->invalid_suppressed);
  repl->invalid_logged_ms = now ? now : 1;
  repl->invalid_suppressed = 0;
}

int hark_tracker_receive(hark_tracker *tracker, const char *topic, size_t topic_len,
                         const void *data, size_t len) {
  hark__replication *repl = replication_of(tracker);
  if (repl == NULL) return HARK_EINVAL;
  repl->stats.bytes_received += len;

  long index = shard_of_topic(repl, topic, topic_len);
  if (index < 0) {
    reject(repl, "unknown topic", len);
    return HARK_EINVAL;
  }
  hark__wire_msg msg;
  const char *error = NULL;
  int rc = hark__wire_decode(data, len, &msg, &error);
  if (rc != 0) {
    reject(repl, error, len);
    return HARK_EINVAL;
  }

  hark__shard *shard = hark__tracker_shard(tracker, (unsigned)index);
  hark__rref self = hark__state_self(shard->state);
  /* This node's own echo, or another node configured with our name. */
  bool own_name = msg.from.name_len == self.name_len &&
                  memcmp(msg.from.name, self.name, self.name_len) == 0;
  if (!repl->stopped && !own_name) hark__replication_handle(repl, shard, &msg);
  hark__wire_msg_free(&msg);
  return 0;
}

/* ---- graceful permdown, replicas and counters ---- */

void hark_tracker_graceful_permdown(hark_tracker *tracker) {
  hark__replication *repl = replication_of(tracker);
  if (repl == NULL || repl->stopped) return;
  for (unsigned i = 0; i < repl->pool_size; i++) {
    hark__replication_send_permdown(repl, hark__tracker_shard(tracker, i));
  }
  /* Another heartbeat would bring this replica back up on the peers. */
  repl->stopped = true;
  HARK_INFO("tracker.graceful_permdown", "tracker=%s shards=%u", repl->name, repl->pool_size);
}

static hark_replica_status public_status(hark__replica_status status) {
  switch (status) {
  case HARK__REPLICA_UP:
    return HARK_REPLICA_UP;
  case HARK__REPLICA_DOWN:
    return HARK_REPLICA_DOWN;
  case HARK__REPLICA_PERMDOWN:
    break;
  }
  return HARK_REPLICA_PERMDOWN;
}

void hark_tracker_replicas(hark_tracker *tracker, hark_tracker_replica_fn fn, void *ctx) {
  if (tracker == NULL || fn == NULL) return;
  for (unsigned i = 0; i < hark_tracker_pool_size(tracker); i++) {
    const hark__replica_map *map = &hark__tracker_shard(tracker, i)->replicas;
    for (size_t k = 0; k < map->count; k++) {
      const hark__replica *r = &map->items[k];
      fn(ctx, i, r->name, r->vsn, public_status(r->status), r->last_heartbeat_ms);
    }
  }
}

void hark_tracker_get_stats(hark_tracker *tracker, hark_tracker_stats *out) {
  hark__replication *repl = replication_of(tracker);
  *out = repl != NULL ? repl->stats : (hark_tracker_stats){0};
}
