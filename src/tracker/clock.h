/* Replica references, clocks and clock sets.
 *
 * A replica reference names one tracker shard instance: its node name and a
 * version (vsn) that is new at every start. A clock (a version vector) maps
 * replica references to event counters. A clock set is a small list of
 * (replica, clock) pairs that together cover the highest clock seen, used to
 * choose which replicas to ask for missing data. */
#ifndef HARK_TRACKER_CLOCK_H
#define HARK_TRACKER_CLOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A borrowed view of a replica reference. */
typedef struct hark__rref {
  const char *name;
  size_t name_len;
  uint64_t vsn;
} hark__rref;

bool hark__rref_equal(hark__rref a, hark__rref b);

/* One clock entry. The clock owns `name`. */
typedef struct hark__clock_item {
  char *name;
  size_t name_len;
  uint64_t vsn;
  uint64_t counter;
} hark__clock_item;

/* A map from replica reference to counter, as an unsorted array: clocks
 * have one entry per replica of a shard, so they stay small. A zeroed struct
 * is an empty clock. */
typedef struct hark__clock {
  hark__clock_item *items;
  size_t count;
  size_t cap;
} hark__clock;

static inline hark__rref hark__clock_ref(const hark__clock *clock, size_t i) {
  hark__rref ref = {clock->items[i].name, clock->items[i].name_len, clock->items[i].vsn};
  return ref;
}

/* Sets the counter of `ref`, adding it (with a copy of its name) when absent.
 * Returns 0, or -1 when out of memory (the clock is unchanged). */
int hark__clock_set(hark__clock *clock, hark__rref ref, uint64_t counter);

/* Stores the counter of `ref` in *counter and returns true, or returns false
 * when the clock has no such key. `counter` may be NULL. */
bool hark__clock_get(const hark__clock *clock, hark__rref ref, uint64_t *counter);

void hark__clock_remove(hark__clock *clock, hark__rref ref);
int hark__clock_copy(hark__clock *dst, const hark__clock *src);
bool hark__clock_equal(const hark__clock *a, const hark__clock *b);
void hark__clock_free(hark__clock *clock);

/* True when `a` has at least as many keys as `b` and, for every key of `b`,
 * a's counter (0 when absent) is >= b's. Reflexive. */
bool hark__clock_dominates(const hark__clock *a, const hark__clock *b);

/* True when both are empty; false when only `a` is empty; otherwise true when
 * for every key of `a`, a's counter is >= b's (0 when absent). Keys only in
 * `b` are ignored. */
bool hark__clock_dominates_or_equal(const hark__clock *a, const hark__clock *b);

/* Per-key maximum (upperbound) or minimum (lowerbound) over the union of the
 * keys; a key present in one clock only keeps its value. `out` must be a
 * different clock from `a` and `b`; it is replaced. Return 0 or -1. */
int hark__clock_upperbound(hark__clock *out, const hark__clock *a, const hark__clock *b);
int hark__clock_lowerbound(hark__clock *out, const hark__clock *a, const hark__clock *b);

/* Keeps in `out` only the keys of `clock` that are listed in `refs`. */
int hark__clock_filter_replicas(hark__clock *out, const hark__clock *clock, const hark__rref *refs,
                                size_t ref_count);

/* One member of a clock set. The set owns `name` and `clock`. */
typedef struct hark__clockset_item {
  char *name;
  size_t name_len;
  uint64_t vsn;
  hark__clock clock;
} hark__clockset_item;

typedef struct hark__clockset {
  hark__clockset_item *items;
  size_t count;
  size_t cap;
} hark__clockset;

/* Appends the clock of replica `ref` to the set, keeping only the members
 * needed to cover the per-key maximum of everything appended:
 * - an empty clock changes nothing;
 * - a clock that dominates the maximum of the members replaces them all (so
 *   equal clocks collapse into the last one appended);
 * - a clock that the maximum of the members dominates changes nothing, even
 *   when it dominates one member;
 * - otherwise the members it dominates are dropped and it is added.
 * Returns 0, or -1 when out of memory (the set is unchanged). */
int hark__clockset_append(hark__clockset *set, hark__rref ref, const hark__clock *clock);

static inline hark__rref hark__clockset_ref(const hark__clockset *set, size_t i) {
  hark__rref ref = {set->items[i].name, set->items[i].name_len, set->items[i].vsn};
  return ref;
}

void hark__clockset_clear(hark__clockset *set);
void hark__clockset_free(hark__clockset *set);

#endif
