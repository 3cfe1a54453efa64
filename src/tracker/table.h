/* An open-addressing hash table of pointers, shared by the tracker's indexes.
 *
 * The table stores (hash, pointer) pairs with linear probing and
 * backward-shift deletion, so there are no tombstones. It does not own the
 * pointed-to elements and does not compare keys. A lookup walks the probe
 * sequence of a hash, and the caller compares each candidate. A zeroed struct
 * is an empty table. */
#ifndef HARK_TRACKER_TABLE_H
#define HARK_TRACKER_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One slot. The hash sits next to the pointer, so a probe touches one cache
 * line instead of one in each of two arrays. */
typedef struct hark__table_slot {
  void *ptr;     /* NULL marks an empty slot */
  uint32_t hash; /* meaningful only where ptr != NULL */
  uint32_t group; /* a caller's id for hark__table_remove_group; 0 by default */
} hark__table_slot;

typedef struct hark__table {
  hark__table_slot *slots;
  size_t cap; /* 0 or a power of two */
  size_t count;
  /* A max load of 1/2 instead of 4/5 when set: shorter probe runs, so fewer
   * cold slot lines per operation, for up to twice the slot memory. */
  bool sparse;
} hark__table;

/* A probe position: start with hark__table_probe and advance with
 * hark__table_next until it returns NULL. */
typedef struct hark__table_iter {
  size_t slot;
  uint32_t hash;
} hark__table_iter;

static inline void *hark__table_next(const hark__table *table, hark__table_iter *it) {
  if (table->cap == 0) return NULL;
  size_t mask = table->cap - 1;

  while (table->slots[it->slot].ptr != NULL) {
    const hark__table_slot *slot = &table->slots[it->slot];
    it->slot = (it->slot + 1) & mask;
    if (slot->hash == it->hash) return slot->ptr;
  }
  return NULL;
}

static inline hark__table_iter hark__table_probe(const hark__table *table, uint32_t hash) {
  hark__table_iter it = {.slot = table->cap ? (hash & (table->cap - 1)) : 0, .hash = hash};
  return it;
}

/* Makes room for `extra` more elements without another allocation, keeping
 * the load at or below 4/5, or 1/2 for a sparse table (the tables hold one
 * pointer per presence, so their load sets much of the memory per presence).
 * Returns 0, or -1 when out of memory (the table is unchanged). */
int hark__table_reserve(hark__table *table, size_t extra);

/* Inserts `ptr` under `hash`. The caller has checked that it is absent.
 * Returns 0, or -1 when out of memory (the table is unchanged). */
int hark__table_insert(hark__table *table, uint32_t hash, void *ptr);

/* Inserts like hark__table_insert, filing `ptr` under `group`. The group
 * uses the slot's padding, so it costs no memory. */
int hark__table_insert_group(hark__table *table, uint32_t hash, uint32_t group, void *ptr);

/* Removes every element filed under `group`, in one sequential pass over the
 * slots and a second one that moves the remaining elements back towards
 * their home slots. Removing a large share of a table this way avoids a
 * random access and a backward shift per element. Returns the number
 * removed. */
size_t hark__table_remove_group(hark__table *table, uint32_t group);

/* Removes the slot that contains exactly `ptr` under `hash`. Returns 1 when it
 * was found, else 0. */
int hark__table_remove(hark__table *table, uint32_t hash, const void *ptr);

/* Replaces the stored pointer `old_ptr` under `hash` by `new_ptr`, in place. */
void hark__table_replace(hark__table *table, uint32_t hash, const void *old_ptr, void *new_ptr);

void hark__table_free(hark__table *table);

/* Starts loading the slot where a probe for `hash` begins, ahead of a
 * lookup the caller makes next. It is forced inline because GCC 12 at -O2
 * removed the calls to an out-of-line prefetch helper as dead code (seen in
 * -fdump-tree-all and objdump output). */
__attribute__((always_inline)) static inline void hark__table_prefetch(const hark__table *table,
                                                                    uint32_t hash) {
  if (table->cap > 0) __builtin_prefetch(&table->slots[hash & (table->cap - 1)]);
}

/* Hashes used by the tracker's tables. They are process-local and never leave
 * the process, unlike the shard hash in tracker.c. */
static inline uint64_t hark__hash_mix(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

static inline uint64_t hark__hash_bytes(uint64_t seed, const void *data, size_t len) {
  const unsigned char *p = data;
  uint64_t h = 0xcbf29ce484222325ULL ^ seed;
  for (size_t i = 0; i < len; i++) {
    h ^= p[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

#endif
