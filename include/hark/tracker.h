/* hark Tracker: who or what is present on each topic, kept in a CRDT that
 * replicas can merge, as Phoenix.Tracker does.
 *
 * An entry is (owner, topic, key) with a meta, a JSON object. The tracker adds
 * "phx_ref" to every meta it stores, and "phx_ref_prev" after an update.
 * Every change is reported to the diff callback, once per topic, after it is
 * applied and before the call that made it returns. Callbacks (diff and read
 * callbacks) must not call back into the tracker to change it: the entries
 * they receive point into tracker memory that a change could free.
 *
 * The tracker is split into pool_size shards by a hash of the topic that is
 * the same on every node, so each topic lives in exactly one shard.
 *
 * Threading: all calls must come from one thread, the one that owns the
 * tracker. */
#ifndef HARK_TRACKER_H
#define HARK_TRACKER_H

#include <stddef.h>
#include <stdint.h>

#include "hark/pubsub.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hark_tracker hark_tracker;

/* A phx_ref: 16 characters of URL-safe base64 and a NUL. */
#define HARK_TRACKER_REF_SIZE 17

/* One presence as reported to callbacks. Every pointer is borrowed for the
 * duration of the callback. `owner` is the owner's id: for an entry tracked
 * on this node it is the owner pointer cast to uintptr_t; for an entry from
 * another replica it is that replica's id for its owner. `meta` is a JSON
 * object that includes "phx_ref". */
typedef struct hark_tracker_entry {
  uint64_t owner;
  const char *key;
  size_t key_len;
  const char *meta;
  size_t meta_len;
} hark_tracker_entry;

/* The diff callback: the joins and leaves of one topic caused by one
 * operation. An update reports the same key in both: the new meta in joins,
 * the old one in leaves. */
typedef void (*hark_tracker_diff_fn)(void *ctx, const char *topic, size_t topic_len,
                                     const hark_tracker_entry *joins, size_t join_count,
                                     const hark_tracker_entry *leaves, size_t leave_count);

typedef void (*hark_tracker_entry_fn)(void *ctx, const hark_tracker_entry *entry);

typedef struct hark_tracker_options {
  const char *node_name;  /* required; the replica name; copied */
  unsigned pool_size;     /* shards; 0 means 1 */
  hark_tracker_diff_fn on_diff; /* may be NULL */
  void *ctx;              /* passed to on_diff */
  /* The wall clock in nanoseconds, used in phx_refs. NULL means
   * clock_gettime(CLOCK_REALTIME). A simulator passes its virtual clock. */
  uint64_t (*now_ns)(void *clock_ctx);
  void *clock_ctx;
} hark_tracker_options;

/* Creates a tracker. Returns 0, HARK_EINVAL (no node name) or HARK_ENOMEM. */
int hark_tracker_create(hark_tracker **out, const hark_tracker_options *options);
void hark_tracker_destroy(hark_tracker *tracker);

/* Tracks `owner` on `topic` under `key` with `meta`, a JSON object (NULL or
 * empty means {}). Stores the new phx_ref in `ref` when it is not NULL.
 * Returns 0, HARK_EALREADY, HARK_EINVAL (meta is not a JSON object that
 * jansson can load, or the key is longer than 65535 bytes) or HARK_ENOMEM. */
int hark_tracker_track(hark_tracker *tracker, const hark_subscriber *owner, const char *topic,
                       size_t topic_len, const char *key, size_t key_len, const char *meta,
                       size_t meta_len, char ref[HARK_TRACKER_REF_SIZE]);

/* Removes one entry. Nothing tracked is fine. */
void hark_tracker_untrack(hark_tracker *tracker, const hark_subscriber *owner, const char *topic,
                          size_t topic_len, const char *key, size_t key_len);

/* Removes every entry of `owner` on every topic, as when the owner closes. */
void hark_tracker_untrack_all(hark_tracker *tracker, const hark_subscriber *owner);

/* Replaces the meta of an entry, atomically for readers. The new meta gets a
 * new phx_ref and phx_ref_prev set to the old one. Returns 0, HARK_ENOENT,
 * HARK_EINVAL or HARK_ENOMEM. */
int hark_tracker_update(hark_tracker *tracker, const hark_subscriber *owner, const char *topic,
                        size_t topic_len, const char *key, size_t key_len, const char *meta,
                        size_t meta_len, char ref[HARK_TRACKER_REF_SIZE]);

/* Calls `fn` for every entry on `topic` whose replica is not down, in a
 * stable order (grouped by key, then in tracking order). */
void hark_tracker_list(hark_tracker *tracker, const char *topic, size_t topic_len,
                       hark_tracker_entry_fn fn, void *ctx);

/* Calls `fn` for every entry on `topic` with `key`, skipping down replicas. */
void hark_tracker_get_by_key(hark_tracker *tracker, const char *topic, size_t topic_len,
                             const char *key, size_t key_len, hark_tracker_entry_fn fn,
                             void *ctx);

/* Number of entries on `topic`, skipping down replicas. */
size_t hark_tracker_count(hark_tracker *tracker, const char *topic, size_t topic_len);

unsigned hark_tracker_pool_size(const hark_tracker *tracker);


/* Replication: the shards of trackers with the same name on different nodes
 * exchange heartbeats, deltas and transfers, as Phoenix.Tracker's shards do.
 * The module reads no clock, starts no timer and opens no socket itself: the
 * host passes all three in a hark_tracker_env, so a simulator can drive it in
 * virtual time. */

typedef struct hark_tracker_replication_options {
  uint64_t broadcast_period_ms;  /* heartbeat tick; Phoenix default 1500 */
  unsigned max_silent_periods;   /* ticks without changes before an empty heartbeat; 10 */
  uint64_t down_period_ms;       /* silence before a replica is down; default
                                    broadcast_period * max_silent_periods * 2 */
  uint64_t permdown_period_ms;   /* silence before a replica is forgotten; 1,200,000 */
  unsigned clock_sample_periods; /* ticks between transfer decisions; 2 */
  size_t max_delta_sizes[8];     /* delta generation caps; 100, 1000, 10000 */
  size_t max_delta_sizes_count;  /* 0 means the three defaults */
} hark_tracker_replication_options;

/* Fills `options` with Phoenix's defaults. */
void hark_tracker_replication_defaults(hark_tracker_replication_options *options);

/* Checks the options as Phoenix does: down_period at least twice the
 * broadcast period, permdown_period larger than down_period, sizes
 * increasing. Returns 0, or HARK_EINVAL with *error set to a static message
 * that names the options. */
int hark_tracker_replication_validate(const hark_tracker_replication_options *options,
                                      const char **error);

/* The host side of replication. */
typedef struct hark_tracker_env {
  void *ctx;
  /* Wall-clock milliseconds, used for heartbeat bookkeeping. */
  uint64_t (*now_ms)(void *ctx);
  /* Asks for hark_tracker_on_timer(tracker, shard) after `delay_ms`,
   * replacing any earlier request for that shard. */
  void (*schedule)(void *ctx, unsigned shard, uint64_t delay_ms);
  /* A uniformly random 64-bit number, for the first tick's jitter. */
  uint64_t (*random)(void *ctx);
  /* Sends `data` on `topic` to the node named `node`, or to every other node
   * when `node` is NULL. Delivery may fail silently (at-most-once). */
  void (*send)(void *ctx, const char *node, const char *topic, size_t topic_len,
               const void *data, size_t len);
} hark_tracker_env;

/* Starts replicating every shard. The env struct is copied. Each shard's
 * messages use the topic "phx_presence:<name>_shard<i>"; the host must
 * deliver what arrives on those topics to hark_tracker_receive. Returns 0 or
 * HARK_EINVAL. */
int hark_tracker_start_replication(hark_tracker *tracker, const char *name,
                                   const hark_tracker_replication_options *options,
                                   const hark_tracker_env *env);

/* The shard's timer fired: send a heartbeat, request transfers, detect
 * downs, and schedule the next tick. */
void hark_tracker_on_timer(hark_tracker *tracker, unsigned shard);

/* Handles a message received on a shard topic. Malformed or foreign input is
 * dropped, counted and logged; it never changes the state. Returns 0, or
 * HARK_EINVAL when the message was dropped. */
int hark_tracker_receive(hark_tracker *tracker, const char *topic, size_t topic_len,
                         const void *data, size_t len);

/* Tells the other nodes to drop this node's entries now (graceful permdown),
 * as on a clean shutdown. */
void hark_tracker_graceful_permdown(hark_tracker *tracker);

typedef enum hark_replica_status {
  HARK_REPLICA_UP,
  HARK_REPLICA_DOWN,
  HARK_REPLICA_PERMDOWN,
} hark_replica_status;

/* Calls `fn` for each known remote replica of each shard. `last_heard_ms`
 * is the wall-clock time of its last heartbeat. */
typedef void (*hark_tracker_replica_fn)(void *ctx, unsigned shard, const char *name,
                                        uint64_t vsn, hark_replica_status status,
                                        uint64_t last_heard_ms);
void hark_tracker_replicas(hark_tracker *tracker, hark_tracker_replica_fn fn, void *ctx);

/* Wires replication to a pubsub instance on a libuv loop: shard topics are
 * subscribed on `pubsub`, messages go out with broadcast_from and
 * direct_broadcast, and ticks run on uv timers. The tracker's node name must
 * be the pubsub node name. Returns 0, HARK_EINVAL or HARK_ENOMEM. */
int hark_tracker_replicate_over_pubsub(hark_tracker *tracker, hark_pubsub *pubsub,
                                       const char *name,
                                       const hark_tracker_replication_options *options);

/* Counters for tests and benchmarks. */
typedef struct hark_tracker_stats {
  uint64_t heartbeats_sent, heartbeats_received;
  uint64_t transfers_requested, transfers_sent_delta, transfers_sent_full;
  uint64_t bytes_sent, bytes_received;
  uint64_t invalid_messages;
  uint64_t replicas_down, replicas_permdown;
} hark_tracker_stats;
void hark_tracker_get_stats(hark_tracker *tracker, hark_tracker_stats *out);

#ifdef __cplusplus
}
#endif

#endif
