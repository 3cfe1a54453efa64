/* Delta generations: a few merged window deltas that cover the most recent
 * changes, so that a lagging replica can be sent a small delta instead of
 * the full state.
 *
 * Generation i contains the most recent contiguous window whose size
 * (values plus dots) stays within cap i. With increasing caps, the windows
 * are nested. */
#ifndef HARK_TRACKER_DELTA_GENERATION_H
#define HARK_TRACKER_DELTA_GENERATION_H

#include <stddef.h>
#include <stdint.h>

#include "tracker/delta.h"
#include "tracker/state.h"

typedef struct hark__generations {
  hark__delta **deltas; /* `count` deltas, owned; count is 0 or cap_count */
  size_t count;
  const uint64_t *caps; /* borrowed; size caps in increasing order */
  size_t cap_count;
} hark__generations;

/* Sets up empty generations with the given caps (borrowed, must outlive). */
void hark__generations_init(hark__generations *gens, const uint64_t *caps, size_t cap_count);
void hark__generations_clear(hark__generations *gens);

/* Pushes `delta` (borrowed) into every generation. Empty generations are
 * first seeded with the pending delta of `parent`. Then each generation, in
 * order, is merged with `delta`:
 * - a contiguous merge within the cap replaces the generation;
 * - a contiguous merge above the cap is dropped, and the generation becomes
 *   the previous (smaller, newer) level's result, or `delta` for the first;
 * - a merge that is not contiguous leaves the generation unchanged.
 * Returns 0, or -1 when out of memory. The generations are then cleared,
 * which only costs a full transfer later. */
int hark__generations_push(hark__generations *gens, const hark__state *parent,
                           const hark__delta *delta);

/* Builds the payload for a requester with clock `remote_clock`. It is the
 * smallest generation whose range, restricted to the clock's replicas, is
 * non-empty, starts within what the requester has and ends beyond it, pruned
 * for the requester. When no generation fits, it is the full extract of
 * `state`. Returns a new delta, or NULL when out of memory.
 * `*from_generation` receives the generation index, or -1 for a full
 * extract. */
hark__delta *hark__generations_extract(const hark__generations *gens, const hark__state *state,
                                       hark__rref remote_ref, const hark__clock *remote_clock,
                                       long *from_generation);

/* Removes a replica's range, dots and values from every generation. */
int hark__generations_remove_replica(hark__generations *gens, hark__rref ref);

#endif
