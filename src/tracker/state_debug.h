/* Read-only views of a tracker's replication state, for the cluster
 * simulator in tests/sim. Nothing here changes the state.
 *
 * The header uses only public and standard types, so that code outside
 * the library (which has no src/ include path) can include it by a
 * relative path. */
#ifndef HARK_TRACKER_STATE_DEBUG_H
#define HARK_TRACKER_STATE_DEBUG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hark/tracker.h"

/* The vsn of the tracker's replica on `shard`. */
uint64_t hark__debug_vsn(hark_tracker *tracker, unsigned shard);

/* The shard index of a topic (the tracker's routing). */
unsigned hark__debug_shard_for_topic(const char *topic, size_t topic_len, unsigned pool_size);

/* Finds what `shard` still stores of replica (name, vsn). Returns NULL when
 * nothing, or a static description of the first thing found: "a status",
 * "a context entry", "a replica record", "entries" or "generation data" (a
 * range, dots or values in a delta generation). */
const char *hark__debug_leftover(hark_tracker *tracker, unsigned shard, const char *name,
                                 uint64_t vsn);

/* Decodes an encoded replication message: returns its wire type (1
 * heartbeat, 2 transfer request, 3 transfer ack, 4 graceful permdown), and
 * sets *full when its payload is a full extract. Returns -1 when it does
 * not decode. */
int hark__debug_message_type(const void *data, size_t len, bool *full);

/* Checks whether one of the shard's delta generations bridges the clock of
 * the encoded transfer request `request`. A generation bridges it when it
 * starts at or below the requester's counter for every replica of that
 * clock, and ends above it for at least one. Returns 1 or 0, or -1 when the
 * request does not decode. */
int hark__debug_generation_bridges(hark_tracker *tracker, unsigned shard, const void *request,
                                   size_t len);

/* Checks every shard's indexes (hark__state_check_indexes). Returns NULL,
 * or a static description of the first inconsistency. */
const char *hark__debug_check_indexes(hark_tracker *tracker);

#endif
