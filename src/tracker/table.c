#include "tracker/table.h"

#include <stdlib.h>
#include <string.h>

#include "tracker/pool.h"

/* Slot arrays of at least this many bytes get 2 MiB transparent huge pages
 * where the kernel offers them. A lookup lands on a random slot, so with
 * 4 KiB pages nearly every probe into a table of several MiB also misses the
 * TLB, and filling a fresh table takes one page fault per 4 KiB. */
#define HUGE_MIN_BYTES ((size_t)2 << 20)

/* Returns `cap` zeroed slots, or NULL when out of memory. Free with
 * free_slots. */
static hark__table_slot *alloc_slots(size_t cap) {
  size_t bytes = cap * sizeof(hark__table_slot);
  if (bytes < HUGE_MIN_BYTES) return calloc(cap, sizeof(hark__table_slot));

  hark__table_slot *slots = hark__alloc_huge(bytes);
  if (slots != NULL) memset(slots, 0, bytes);
  return slots;
}

static void free_slots(hark__table_slot *slots, size_t cap) {
  size_t bytes = cap * sizeof(hark__table_slot);
  if (bytes < HUGE_MIN_BYTES) free(slots);
  else hark__free_huge(slots, bytes);
}

static int table_resize(hark__table *table, size_t cap) {
  hark__table_slot *slots = alloc_slots(cap);
  if (slots == NULL) return -1;

  size_t mask = cap - 1;
  for (size_t i = 0; i < table->cap; i++) {
    if (table->slots[i].ptr == NULL) continue;
    size_t slot = table->slots[i].hash & mask;
    while (slots[slot].ptr != NULL) slot = (slot + 1) & mask;
    slots[slot] = table->slots[i];
  }

  /* A smaller array fits no later growth of this table, so it goes back to
   * malloc rather than into the cache, where it would stay unused. */
  free(table->slots);
  table->slots = slots;
  table->cap = cap;
  return 0;
}

int hark__table_reserve(hark__table *table, size_t extra) {
  size_t need = table->count + extra;
  size_t max_load_num = table->sparse ? 1 : 4, max_load_den = table->sparse ? 2 : 5;
  if (need * max_load_den <= table->cap * max_load_num) return 0;

  size_t cap = table->cap ? table->cap : 8;
  while (need * max_load_den > cap * max_load_num) cap *= 2;
  return table_resize(table, cap);
}

int hark__table_insert_group(hark__table *table, uint32_t hash, uint32_t group, void *ptr) {
  if (hark__table_reserve(table, 1) != 0) return -1;

  size_t mask = table->cap - 1;
  size_t slot = hash & mask;
  while (table->slots[slot].ptr != NULL) slot = (slot + 1) & mask;
  table->slots[slot] = (hark__table_slot){.ptr = ptr, .hash = hash, .group = group};
  table->count++;
  return 0;
}

int hark__table_insert(hark__table *table, uint32_t hash, void *ptr) {
  return hark__table_insert_group(table, hash, 0, ptr);
}

size_t hark__table_remove_group(hark__table *table, uint32_t group) {
  if (table->count == 0) return 0;
  /* An empty slot from before the removal, where the pass below starts (the
   * load is below 1, so one exists). No probe run crosses it. A hole that
   * the removal makes can lie inside a run. A pass started there can move an
   * element of that run into the hole, onto the probe path of elements
   * placed later in the pass, and the end of the pass may empty it again. */
  size_t start = 0;
  while (table->slots[start].ptr != NULL) start++;

  size_t removed = 0;
  for (size_t i = 0; i < table->cap; i++) {
    if (table->slots[i].ptr != NULL && table->slots[i].group == group) {
      table->slots[i].ptr = NULL;
      removed++;
    }
  }
  if (removed == 0) return 0;
  table->count -= removed;

  /* The holes may cut probe runs short. Walk the slots once, starting after
   * `start`, and re-insert each element from its home slot. It lands at or
   * before its old position, and the elements already visited stay
   * reachable, so every run is whole again after one pass. */
  size_t mask = table->cap - 1;
  for (size_t k = 1; k <= table->cap; k++) {
    size_t i = (start + k) & mask;
    if (table->slots[i].ptr == NULL) continue;
    hark__table_slot moved = table->slots[i];
    table->slots[i].ptr = NULL;
    size_t slot = moved.hash & mask;
    while (table->slots[slot].ptr != NULL) slot = (slot + 1) & mask;
    table->slots[slot] = moved;
  }
  return removed;
}

static size_t find_slot(const hark__table *table, uint32_t hash, const void *ptr) {
  if (table->cap == 0) return SIZE_MAX;
  size_t mask = table->cap - 1;
  for (size_t slot = hash & mask; table->slots[slot].ptr != NULL; slot = (slot + 1) & mask) {
    if (table->slots[slot].ptr == ptr) return slot;
  }
  return SIZE_MAX;
}

int hark__table_remove(hark__table *table, uint32_t hash, const void *ptr) {
  size_t hole = find_slot(table, hash, ptr);
  if (hole == SIZE_MAX) return 0;

  /* Backward-shift deletion: pull later members of the probe run into the
   * hole when their home slot lies at or before it (cyclically). */
  size_t mask = table->cap - 1;
  size_t next = (hole + 1) & mask;
  while (table->slots[next].ptr != NULL) {
    size_t home = table->slots[next].hash & mask;
    size_t dist_next = (next - home) & mask;
    size_t dist_hole = (hole - home) & mask;
    if (dist_hole < dist_next) {
      table->slots[hole] = table->slots[next];
      hole = next;
    }
    next = (next + 1) & mask;
  }
  table->slots[hole].ptr = NULL;
  table->count--;
  return 1;
}

void hark__table_replace(hark__table *table, uint32_t hash, const void *old_ptr, void *new_ptr) {
  size_t slot = find_slot(table, hash, old_ptr);
  if (slot != SIZE_MAX) table->slots[slot].ptr = new_ptr;
}

void hark__table_free(hark__table *table) {
  free_slots(table->slots, table->cap);
  *table = (hark__table){.sparse = table->sparse};
}
