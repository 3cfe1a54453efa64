/* Linear probing with backward-shift deletion, so no tombstones build up as
 * clients come and go. */
#include "server/ip_table.h"

#include <stdlib.h>
#include <string.h>

static uint32_t hash_key(const hark_ip_key *key) {
  uint64_t h = 1469598103934665603ULL;
  for (int i = 0; i < 16; i++) h = (h ^ key->bytes[i]) * 1099511628211ULL;
  return (uint32_t)(h ^ (h >> 32));
}

static uint32_t find_slot(const hark_ip_table *table, const hark_ip_key *key) {
  uint32_t mask = table->capacity - 1;
  uint32_t i = hash_key(key) & mask;
  while (table->slots[i].count != 0 && memcmp(&table->slots[i].key, key, sizeof *key) != 0)
    i = (i + 1) & mask;
  return i;
}

static int grow(hark_ip_table *table) {
  uint32_t capacity = table->capacity ? table->capacity * 2 : 64;
  hark_ip_slot *old = table->slots;
  uint32_t old_capacity = table->capacity;
  table->slots = calloc(capacity, sizeof *table->slots);
  if (!table->slots) {
    table->slots = old;
    return -1;
  }
  table->capacity = capacity;
  for (uint32_t i = 0; i < old_capacity; i++)
    if (old[i].count != 0) table->slots[find_slot(table, &old[i].key)] = old[i];
  free(old);
  return 0;
}

uint32_t hark_ip_table_add(hark_ip_table *table, const hark_ip_key *key) {
  /* Keep the load at most one half, so probes stay short. */
  if ((table->used + 1) * 2 > table->capacity && grow(table) != 0) return 0;
  hark_ip_slot *slot = &table->slots[find_slot(table, key)];
  if (slot->count == 0) {
    slot->key = *key;
    table->used++;
  }
  return ++slot->count;
}

uint32_t hark_ip_table_count(const hark_ip_table *table, const hark_ip_key *key) {
  if (table->capacity == 0) return 0;
  return table->slots[find_slot(table, key)].count;
}

void hark_ip_table_remove(hark_ip_table *table, const hark_ip_key *key) {
  if (table->capacity == 0) return;
  uint32_t mask = table->capacity - 1;
  uint32_t hole = find_slot(table, key);
  if (table->slots[hole].count == 0 || --table->slots[hole].count > 0) return;
  table->used--;

  /* Shift later entries of the probe run back into the hole, unless an
   * entry already sits at or after its home slot relative to the hole. */
  uint32_t i = hole;
  for (;;) {
    i = (i + 1) & mask;
    if (table->slots[i].count == 0) break;
    uint32_t home = hash_key(&table->slots[i].key) & mask;
    int home_in_gap = hole <= i ? (home > hole && home <= i) : (home > hole || home <= i);
    if (home_in_gap) continue;
    table->slots[hole] = table->slots[i];
    hole = i;
  }
  table->slots[hole].count = 0;
}

void hark_ip_table_free(hark_ip_table *table) {
  free(table->slots);
  *table = (hark_ip_table){0};
}
