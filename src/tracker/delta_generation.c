#include "tracker/delta_generation.h"

#include <stdbool.h>
#include <stdlib.h>

void hark__generations_init(hark__generations *gens, const uint64_t *caps, size_t cap_count) {
  *gens = (hark__generations){.caps = caps, .cap_count = cap_count};
}

void hark__generations_clear(hark__generations *gens) {
  for (size_t i = 0; i < gens->count; i++) hark__delta_free(gens->deltas[i]);
  free(gens->deltas);
  gens->deltas = NULL;
  gens->count = 0;
}

static int seed(hark__generations *gens, const hark__state *parent) {
  gens->deltas = calloc(gens->cap_count + 1, sizeof(*gens->deltas));
  if (gens->deltas == NULL) return -1;
  gens->count = gens->cap_count;
  for (size_t i = 0; i < gens->count; i++) {
    gens->deltas[i] = hark__state_delta(parent);
    if (gens->deltas[i] == NULL) return -1;
  }
  return 0;
}

int hark__generations_push(hark__generations *gens, const hark__state *parent,
                           const hark__delta *delta) {
  if (gens->count == 0 && seed(gens, parent) != 0) goto fail;

  /* `prev` is what the previous level became (or `delta` itself), borrowed
   * from the generations or the caller. */
  const hark__delta *prev = delta;
  hark__delta *prev_owned = NULL; /* a merge result that no generation kept */
  for (size_t i = 0; i < gens->count; i++) {
    hark__delta *merged = NULL;
    int rc = hark__delta_merge(gens->deltas[i], delta, &merged);
    if (rc < 0) goto fail_owned;
    if (rc == HARK__NOT_CONTIGUOUS) {
      prev = gens->deltas[i];
      continue;
    }

    if (hark__delta_size(merged) <= gens->caps[i]) {
      hark__delta_free(gens->deltas[i]);
      gens->deltas[i] = merged;
      prev = merged;
      continue;
    }
    hark__delta *copy = hark__delta_copy(prev);
    if (copy == NULL) {
      hark__delta_free(merged);
      goto fail_owned;
    }
    hark__delta_free(gens->deltas[i]);
    gens->deltas[i] = copy;
    hark__delta_free(prev_owned);
    prev_owned = merged;
    prev = merged;
  }
  hark__delta_free(prev_owned);
  return 0;

fail_owned:
  hark__delta_free(prev_owned);
fail:
  hark__generations_clear(gens);
  return -1;
}

static bool restricted_range(const hark__delta *gen, const hark__clock *remote_clock,
                             hark__clock *start, hark__clock *end) {
  hark__clock full_start = {0}, full_end = {0};
  bool ok = hark__delta_range_clock(gen, false, &full_start) == 0 &&
            hark__delta_range_clock(gen, true, &full_end) == 0;
  for (size_t i = 0; ok && i < remote_clock->count; i++) {
    hark__rref ref = hark__clock_ref(remote_clock, i);
    uint64_t counter;
    if (hark__clock_get(&full_start, ref, &counter)) ok = hark__clock_set(start, ref, counter) == 0;
    if (ok && hark__clock_get(&full_end, ref, &counter)) ok = hark__clock_set(end, ref, counter) == 0;
  }
  hark__clock_free(&full_start);
  hark__clock_free(&full_end);
  return ok;
}

/* Whether generation `gen` bridges the requester's clock: non-empty on the
 * requester's replicas, no gap before its start, and something new. */
static int bridges(const hark__delta *gen, const hark__clock *remote_clock) {
  hark__clock start = {0}, end = {0};
  int result = -1;
  if (restricted_range(gen, remote_clock, &start, &end)) {
    result = !hark__clock_dominates_or_equal(&start, &end) &&
             hark__clock_dominates_or_equal(remote_clock, &start) &&
             !hark__clock_dominates(remote_clock, &end);
  }
  hark__clock_free(&start);
  hark__clock_free(&end);
  return result;
}

hark__delta *hark__generations_extract(const hark__generations *gens, const hark__state *state,
                                       hark__rref remote_ref, const hark__clock *remote_clock,
                                       long *from_generation) {
  for (size_t i = 0; i < gens->count; i++) {
    int found = bridges(gens->deltas[i], remote_clock);
    if (found < 0) return NULL;
    if (found) {
      if (from_generation) *from_generation = (long)i;
      return hark__delta_extract(gens->deltas[i], remote_ref, remote_clock);
    }
  }
  if (from_generation) *from_generation = -1;
  return hark__state_extract(state, remote_ref, remote_clock);
}

int hark__generations_remove_replica(hark__generations *gens, hark__rref ref) {
  for (size_t i = 0; i < gens->count; i++) {
    if (hark__delta_remove_replica(gens->deltas[i], ref) != 0) return -1;
  }
  return 0;
}
