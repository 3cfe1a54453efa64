/* A set of event counters (the dots of one replica), kept as sorted,
 * disjoint, non-adjacent closed intervals. A window delta's dots and a
 * replica's cloud are mostly runs of consecutive counters, so a run of any
 * length costs one interval. A zeroed struct is an empty set. */
#ifndef HARK_TRACKER_DOTSET_H
#define HARK_TRACKER_DOTSET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct hark__interval {
  uint64_t lo; /* first counter, >= 1 */
  uint64_t hi; /* last counter, >= lo */
} hark__interval;

typedef struct hark__dotset {
  hark__interval *iv;
  size_t count;
  size_t cap;
} hark__dotset;

bool hark__dotset_contains(const hark__dotset *set, uint64_t n);

/* Adds the counters lo..hi (lo <= hi). Returns 0, or -1 when out of memory
 * (the set is unchanged). */
int hark__dotset_add_range(hark__dotset *set, uint64_t lo, uint64_t hi);
int hark__dotset_add(hark__dotset *set, uint64_t n);

/* Removes one counter. Splitting an interval may allocate: returns 0, or -1
 * when out of memory (the set is unchanged). */
int hark__dotset_remove(hark__dotset *set, uint64_t n);

/* Adds every counter of `src` to `dst`. Returns 0 or -1 (dst unchanged). */
int hark__dotset_union(hark__dotset *dst, const hark__dotset *src);

int hark__dotset_copy(hark__dotset *dst, const hark__dotset *src);

/* The number of counters in the set. */
uint64_t hark__dotset_size(const hark__dotset *set);

bool hark__dotset_equal(const hark__dotset *a, const hark__dotset *b);

/* Removes every counter <= n. */
void hark__dotset_drop_upto(hark__dotset *set, uint64_t n);

void hark__dotset_clear(hark__dotset *set);
void hark__dotset_free(hark__dotset *set);

#endif
