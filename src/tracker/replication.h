/* The replication protocol of one tracker: heartbeats, clock sampling,
 * transfer requests and acks, replica up/down/permdown and graceful
 * permdown, as Phoenix.Tracker.Shard runs them, per shard.
 *
 * Deliberate differences from Phoenix.Tracker 2.2.0:
 * - a heartbeat delta carries only this replica's own changes: removals
 *   observed from other replicas are not relayed (a replica that missed
 *   the original delta catches up through clock sampling and transfers);
 * - a remote clock is reduced to the replicas this shard has up before it
 *   is sampled, so a replica that this shard does not know, has down or
 *   has permdowned never causes a transfer request;
 * - a replica replaced by a new vsn, or gone by graceful permdown, is
 *   retired: its late heartbeats are ignored for permdown_period instead
 *   of bringing it back up;
 * - a heartbeat with a lower vsn than the up record of its node, heard
 *   within down_period, is ignored: it comes from the previous instance,
 *   reordered after the new one's first heartbeat;
 * - messages from this node's own name are ignored;
 * - a transfer reply excludes the requester's own entries (Phoenix passes
 *   the bare node name and so sends them back), and so a delta reply is
 *   merged but not pushed into the generations (see receive_transfer_ack). */
#ifndef HARK_TRACKER_REPLICATION_H
#define HARK_TRACKER_REPLICATION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hark/tracker.h"
#include "tracker/shard.h"
#include "tracker/wire.h"

/* A replica that must not come back: its name is owned. */
typedef struct hark__retired {
  char *name;
  size_t name_len;
  uint64_t vsn;
  uint64_t since_ms;
} hark__retired;

/* Replication fields of one shard that hark__shard does not have. */
typedef struct hark__shard_replication {
  char *topic; /* "phx_presence:<name>_shard<i>", owned */
  size_t topic_len;
  uint64_t next_request_id;
  hark__retired *retired;
  size_t retired_count;
  size_t retired_cap;
} hark__shard_replication;

/* The replication of one tracker, shared by its shards. Each shard holds a
 * reference; the last hark__replication_release frees it. */
typedef struct hark__replication {
  hark_tracker *tracker; /* borrowed; the tracker owns this object through its shards */
  char *name;            /* the tracker name in shard topics, owned */
  size_t name_len;
  unsigned pool_size;
  unsigned refs;
  hark_tracker_replication_options options;
  uint64_t delta_caps[8]; /* borrowed by every shard's generations */
  hark_tracker_env env;
  hark_tracker_stats stats;
  bool stopped; /* set by graceful permdown: no more ticks or messages */
  hark__shard_replication *shards;

  /* Called once when the last reference is released, for a host that
   * must free what its env uses (timers, subscriptions). */
  void (*teardown)(void *ctx);
  void *teardown_ctx;

  /* Rate limit of the warning for invalid messages. */
  uint64_t invalid_logged_ms;
  uint64_t invalid_suppressed;
} hark__replication;

/* One heartbeat tick of `shard`: broadcast, sample clocks, detect downs and
 * schedule the next tick. */
void hark__replication_tick(hark__replication *repl, hark__shard *shard);

/* Handles a decoded message addressed to `shard`. */
void hark__replication_handle(hark__replication *repl, hark__shard *shard,
                              const hark__wire_msg *msg);

/* Broadcasts this shard's graceful permdown. */
void hark__replication_send_permdown(hark__replication *repl, hark__shard *shard);

/* Sends an encoded message on the shard's topic, to `node` or to every other
 * node when `node` is NULL, and counts the bytes. */
void hark__replication_send(hark__replication *repl, hark__shard *shard, const char *node,
                            const hark_buf *bytes);

/* Drops one shard's reference; the last one runs the teardown and frees. */
void hark__replication_release(hark__replication *repl);

/* Sets the teardown hook of a tracker's replication. Returns 0, or
 * HARK_EINVAL when replication has not started. */
int hark__replication_set_teardown(hark_tracker *tracker, void (*teardown)(void *ctx),
                                   void *ctx);

#endif
