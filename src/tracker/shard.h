/* One tracker shard: the CRDT state of the topics that hash to it, its delta
 * generations and its records of the remote replicas, plus the fields the
 * replication protocol (heartbeats, clock sampling, transfers) works with.
 * The replication itself is not part of this file. */
#ifndef HARK_TRACKER_SHARD_H
#define HARK_TRACKER_SHARD_H

#include <stddef.h>
#include <stdint.h>

#include "hark/tracker.h"
#include "tracker/clock.h"
#include "tracker/delta_generation.h"
#include "tracker/replica.h"
#include "tracker/state.h"

/* Default size caps of the delta generations, as in Phoenix.Tracker. */
#define HARK__DEFAULT_DELTA_CAPS {100, 1000, 10000}

typedef struct hark__shard {
  unsigned index;
  hark__state *state;             /* owns this shard's entries; its self ref is the replica id */
  hark__generations generations;  /* recent deltas for catch-up transfers */
  hark__replica_map replicas;     /* remote replicas by node name */
  uint64_t delta_caps[3];         /* generation caps, referenced by `generations` */
  uint16_t ref_hash;              /* 16-bit hash of node name and shard index, in phx_refs */

  /* Replication bookkeeping, driven by the replication module. */
  hark__clockset pending_clockset; /* remote clocks gathered since the last sample */
  unsigned current_sample_count;   /* ticks left before the next transfer decision */
  unsigned silent_periods;         /* ticks since the last heartbeat was sent */
  /* Set by hark_tracker_start_replication, shared by all shards of the
   * tracker; NULL before. hark__shard_destroy releases it. */
  struct hark__replication *replication;
} hark__shard;

/* Initializes shard `index` of node `node_name` with replica vsn `vsn`.
 * The shard must not move afterwards, because its generations borrow
 * `delta_caps`. Returns 0 or HARK_ENOMEM. */
int hark__shard_init(hark__shard *shard, const char *node_name, size_t node_name_len,
                     unsigned index, uint64_t vsn);
void hark__shard_destroy(hark__shard *shard);

/* The shard index of a topic: FNV-1a 64 of the topic bytes, modulo the pool
 * size. Every node must route a topic to the same shard index, so this
 * function must never change. */
unsigned hark__shard_for_topic(const char *topic, size_t topic_len, unsigned pool_size);

/* Access for the replication module. */
hark__shard *hark__tracker_shard(hark_tracker *tracker, unsigned index);

/* Reports a change list to the tracker's diff callback: one call per topic,
 * with every join and leave of that topic. */
void hark__tracker_report(hark_tracker *tracker, const hark__changes *changes);

#endif
