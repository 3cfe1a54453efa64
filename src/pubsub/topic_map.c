/* The topic hash map and the byte hash it uses. */
#include <stdlib.h>
#include <string.h>

#include "pubsub/internal.h"

/* Odd 64-bit constants with well-mixed bits, from the hexadecimal digits of
 * pi, e and the golden ratio. Other such constants would do as well. The hash
 * only spreads topics within one process and does not resist chosen inputs. */
#define HASH_SEED 0x243f6a8885a308d3ULL
#define HASH_K1 0xb7e151628aed2a6bULL
#define HASH_K2 0x9e3779b97f4a7c15ULL

#define MAP_MIN_CAP 16

/* Multiplies to 128 bits and folds the halves together, so every input bit
 * reaches every output bit. */
static uint64_t fold_multiply(uint64_t a, uint64_t b) {
  __extension__ typedef unsigned __int128 u128;
  u128 product = (u128)a * b;
  return (uint64_t)product ^ (uint64_t)(product >> 64);
}

static uint64_t load64(const char *p) {
  uint64_t v;
  memcpy(&v, p, sizeof v);
  return v;
}

/* Loads up to 8 bytes, zero-filling the rest. */
static uint64_t load_partial(const char *p, size_t len) {
  uint64_t v = 0;
  if (len > 0) memcpy(&v, p, len);
  return v;
}

uint64_t hark__hash_bytes(const char *bytes, size_t len) {
  uint64_t h = HASH_SEED ^ fold_multiply(len, HASH_K1);
  size_t left = len;
  const char *p = bytes;

  while (left > 16) {
    h = fold_multiply(load64(p) ^ HASH_K1 ^ h, load64(p + 8) ^ HASH_K2);
    p += 16;
    left -= 16;
  }

  uint64_t a;
  uint64_t b;
  if (left > 8) {
    a = load64(p);
    b = load_partial(p + 8, left - 8);
  } else {
    a = load_partial(p, left);
    b = 0;
  }
  h = fold_multiply(a ^ HASH_K1 ^ h, b ^ HASH_K2 ^ left);
  return fold_multiply(h, HASH_K2);
}

static int topic_matches(const hark__topic *topic, const char *name, size_t len, uint64_t hash) {
  if (topic->hash != hash || topic->len != len) return 0;
  return len == 0 || memcmp(topic->name, name, len) == 0;
}

hark__topic *hark__topic_map_find(const hark__topic_map *map, const char *name, size_t len,
                                  uint64_t hash) {
  if (map->cap == 0) return NULL;

  size_t mask = map->cap - 1;
  for (size_t i = (size_t)hash & mask;; i = (i + 1) & mask) {
    hark__topic *topic = map->slots[i];
    if (topic == NULL) return NULL;
    if (topic_matches(topic, name, len, hash)) return topic;
  }
}

static void place(hark__topic **slots, size_t cap, hark__topic *topic) {
  size_t mask = cap - 1;
  size_t i = (size_t)topic->hash & mask;
  while (slots[i] != NULL) i = (i + 1) & mask;
  slots[i] = topic;
}

static int grow(hark__topic_map *map) {
  size_t cap = map->cap ? map->cap * 2 : MAP_MIN_CAP;
  hark__topic **slots = calloc(cap, sizeof *slots);
  if (slots == NULL) return HARK_ENOMEM;

  for (size_t i = 0; i < map->cap; i++) {
    if (map->slots[i] != NULL) place(slots, cap, map->slots[i]);
  }
  free(map->slots);
  map->slots = slots;
  map->cap = cap;
  return HARK_OK;
}

int hark__topic_map_insert(hark__topic_map *map, hark__topic *topic) {
  /* Keep the load factor at or below 3/4 so probe runs stay short. */
  if ((map->count + 1) * 4 > map->cap * 3) {
    int rc = grow(map);
    if (rc != HARK_OK) return rc;
  }
  place(map->slots, map->cap, topic);
  map->count++;
  return HARK_OK;
}

void hark__topic_map_remove(hark__topic_map *map, const hark__topic *topic) {
  size_t mask = map->cap - 1;
  size_t hole = (size_t)topic->hash & mask;
  while (map->slots[hole] != topic) hole = (hole + 1) & mask;

  /* Backward-shift deletion: a later record in the same probe run moves into
   * the hole when the hole lies on its path from its home slot, which is when
   * its distance from home is at least its distance from the hole. The run
   * then stays unbroken without tombstones. */
  for (size_t j = (hole + 1) & mask; map->slots[j] != NULL; j = (j + 1) & mask) {
    size_t home = (size_t)map->slots[j]->hash & mask;
    if (((j - home) & mask) >= ((j - hole) & mask)) {
      map->slots[hole] = map->slots[j];
      hole = j;
    }
  }
  map->slots[hole] = NULL;
  map->count--;
}

void hark__topic_map_free(hark__topic_map *map) {
  free(map->slots);
  map->slots = NULL;
  map->cap = 0;
  map->count = 0;
}
