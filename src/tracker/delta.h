/* Deltas and extracts: the self-contained values that replicas exchange.
 *
 * A window delta contains the changes of one replica since its last reset: the
 * dots it created or tombstoned (per replica), the entries it added that are
 * still present, and the counter range it covers (start and end clocks). A
 * full extract contains a replica's whole state as seen by one requester: the
 * context and clouds pruned to the requester's replicas, and every entry of
 * those replicas.
 *
 * Both carry their own replica table (name and vsn, copied), and values refer
 * to replicas by index into that table, so a value never points into the
 * state that produced it. A delta is immutable once built, except through the
 * functions below that return a new one. A codec can walk a delta with the
 * read accessors and rebuild it with the constructor functions. */
#ifndef HARK_TRACKER_DELTA_H
#define HARK_TRACKER_DELTA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "tracker/clock.h"
#include "tracker/dotset.h"

typedef enum hark__delta_kind {
  HARK__DELTA_WINDOW = 0, /* changes since a reset; context empty, range set */
  HARK__DELTA_FULL = 1,   /* a full extract; context set, no range */
} hark__delta_kind;

/* One replica mentioned by a delta. The delta owns `name` and `cloud`. */
typedef struct hark__delta_replica {
  char *name;
  size_t name_len;
  uint64_t vsn;
  bool has_context; /* full extracts: the context counter below is set */
  bool has_start;   /* window deltas: range start for this replica */
  bool has_end;     /* window deltas: range end for this replica */
  uint64_t context;
  uint64_t start;
  uint64_t end;
  hark__dotset cloud; /* dots seen out of order (extract) or created (window) */
} hark__delta_replica;

/* One entry in a delta, tagged (replica, counter). The strings live in the
 * delta's byte arena at `offset`: topic, then key, then meta. */
typedef struct hark__delta_value {
  uint32_t replica; /* index into the delta's replica table */
  uint32_t topic_len;
  uint32_t key_len;
  uint32_t meta_len;
  uint64_t counter;
  uint64_t owner;
  size_t offset;
} hark__delta_value;

typedef struct hark__delta {
  hark__delta_kind kind;
  uint32_t creator; /* index of the replica that built it */
  hark__delta_replica *replicas;
  size_t replica_count;
  size_t replica_cap;
  hark__delta_value *values;
  size_t value_count;
  size_t value_cap;
  hark_buf bytes; /* arena of value strings */
  /* Set when `values` or `bytes.data` is a block from hark__realloc_large's
   * cache, which only the delta functions may grow or free. */
  bool values_huge;
  bool bytes_huge;
} hark__delta;

/* A borrowed view of one value, valid while the delta lives. */
typedef struct hark__value_view {
  hark__rref replica;
  uint64_t counter;
  uint64_t owner;
  const char *topic;
  size_t topic_len;
  const char *key;
  size_t key_len;
  const char *meta;
  size_t meta_len;
} hark__value_view;

/* Construction. hark__delta_new returns NULL when out of memory; the others
 * return 0, or -1 when out of memory. */
hark__delta *hark__delta_new(hark__delta_kind kind, hark__rref creator);
void hark__delta_free(hark__delta *delta);
hark__delta *hark__delta_copy(const hark__delta *delta);

/* Returns the index of `ref` in the replica table, adding it when `create`
 * is true. Returns -1 when absent (and not created) or out of memory. */
long hark__delta_replica_index(hark__delta *delta, hark__rref ref, bool create);
long hark__delta_find_replica(const hark__delta *delta, hark__rref ref);

int hark__delta_add_value(hark__delta *delta, uint32_t replica, uint64_t counter, uint64_t owner,
                          const char *topic, size_t topic_len, const char *key, size_t key_len,
                          const char *meta, size_t meta_len);
int hark__delta_reserve_values(hark__delta *delta, size_t count, size_t bytes);

/* Reading. */
static inline hark__rref hark__delta_ref(const hark__delta *delta, size_t replica) {
  const hark__delta_replica *r = &delta->replicas[replica];
  hark__rref ref = {r->name, r->name_len, r->vsn};
  return ref;
}

void hark__delta_value_at(const hark__delta *delta, size_t i, hark__value_view *view);

/* The delta's range start or end as a clock (window deltas). */
int hark__delta_range_clock(const hark__delta *delta, bool end, hark__clock *out);

/* Values plus dots, the measure used by the delta generation caps. */
uint64_t hark__delta_size(const hark__delta *delta);

/* A tag index over a delta's values, for membership tests. */
typedef struct hark__delta_index {
  const hark__delta *delta; /* borrowed; must outlive the index */
  uint32_t *slots;          /* value index + 1; 0 marks an empty slot */
  size_t cap;               /* a power of two */
} hark__delta_index;

int hark__delta_index_build(hark__delta_index *index, const hark__delta *delta);
/* Returns the value index of tag (replica index, counter), or -1. */
long hark__delta_index_find(const hark__delta_index *index, uint32_t replica, uint64_t counter);
void hark__delta_index_free(hark__delta_index *index);

/* True when the tag (ref, counter) is seen by the delta: covered by its
 * context or present in its cloud. */
bool hark__delta_has_seen(const hark__delta *delta, long replica, uint64_t counter);

/* Merges two window deltas. When their ranges are not contiguous, returns
 * HARK__NOT_CONTIGUOUS and leaves *out NULL. Otherwise stores a new delta in
 * *out (creator and kind of `local`) and returns 0. Returns -1 when out of
 * memory. */
#define HARK__NOT_CONTIGUOUS 1
int hark__delta_merge(const hark__delta *local, const hark__delta *remote, hark__delta **out);

/* Prunes a window delta for a requester: clouds and range keep only the keys
 * of `remote_clock`, and values keep only tags whose replica is a key of
 * `remote_clock` and is not `remote_ref`. Returns a new delta or NULL. */
hark__delta *hark__delta_extract(const hark__delta *delta, hark__rref remote_ref,
                                 const hark__clock *remote_clock);

/* Removes everything about `ref` (range, dots, values) from a delta, in
 * place. Returns 0 or -1 (when out of memory, the delta is unchanged). */
int hark__delta_remove_replica(hark__delta *delta, hark__rref ref);

#endif
