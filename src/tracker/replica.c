#include "tracker/replica.h"

#include <stdlib.h>
#include <string.h>

static size_t find_index(const hark__replica_map *map, const char *name, size_t name_len) {
  for (size_t i = 0; i < map->count; i++) {
    const hark__replica *r = &map->items[i];
    if (r->name_len == name_len && (name_len == 0 || memcmp(r->name, name, name_len) == 0)) {
      return i;
    }
  }
  return SIZE_MAX;
}

const hark__replica *hark__replica_find(const hark__replica_map *map, const char *name,
                                        size_t name_len) {
  size_t i = find_index(map, name, name_len);
  return i == SIZE_MAX ? NULL : &map->items[i];
}

static hark__replica_info info_of(const hark__replica *r) {
  hark__replica_info info = {0};
  if (r == NULL) return info;
  info.present = true;
  info.vsn = r->vsn;
  info.has_heartbeat = r->has_heartbeat;
  info.last_heartbeat_ms = r->last_heartbeat_ms;
  info.status = r->status;
  return info;
}

int hark__replica_put_heartbeat(hark__replica_map *map, hark__rref ref, uint64_t now_ms,
                                hark__replica_info *previous) {
  size_t i = find_index(map, ref.name, ref.name_len);
  *previous = info_of(i == SIZE_MAX ? NULL : &map->items[i]);

  if (i == SIZE_MAX) {
    if (map->count == map->cap) {
      size_t cap = map->cap ? map->cap * 2 : 4;
      hark__replica *items = realloc(map->items, cap * sizeof(*items));
      if (items == NULL) return -1;
      map->items = items;
      map->cap = cap;
    }
    char *name = malloc(ref.name_len + 1);
    if (name == NULL) return -1;
    if (ref.name_len > 0) memcpy(name, ref.name, ref.name_len);
    name[ref.name_len] = '\0';
    i = map->count++;
    map->items[i] = (hark__replica){.name = name, .name_len = ref.name_len};
  }

  hark__replica *r = &map->items[i];
  r->vsn = ref.vsn;
  r->has_heartbeat = true;
  r->last_heartbeat_ms = now_ms;
  r->status = HARK__REPLICA_UP;
  return 0;
}

void hark__replica_detect_down(hark__replica_map *map, const char *name, size_t name_len,
                               uint64_t down_ms, uint64_t permdown_ms, uint64_t now_ms,
                               hark__replica_info *before, hark__replica_info *after) {
  size_t i = find_index(map, name, name_len);
  hark__replica *r = i == SIZE_MAX ? NULL : &map->items[i];
  *before = info_of(r);
  *after = *before;
  if (r == NULL || !r->has_heartbeat) return;

  /* A timestamp ahead of now (a wall-clock step back) counts as no silence. */
  uint64_t downtime = now_ms > r->last_heartbeat_ms ? now_ms - r->last_heartbeat_ms : 0;
  if (downtime > permdown_ms) {
    after->status = HARK__REPLICA_PERMDOWN;
    hark__replica_remove(map, name, name_len);
  } else if (downtime > down_ms) {
    r->status = HARK__REPLICA_DOWN;
    after->status = HARK__REPLICA_DOWN;
  }
}

const hark__replica *hark__replica_fetch_by_ref(const hark__replica_map *map, hark__rref ref) {
  const hark__replica *r = hark__replica_find(map, ref.name, ref.name_len);
  return (r != NULL && r->vsn == ref.vsn) ? r : NULL;
}

void hark__replica_remove(hark__replica_map *map, const char *name, size_t name_len) {
  size_t i = find_index(map, name, name_len);
  if (i == SIZE_MAX) return;
  free(map->items[i].name);
  map->items[i] = map->items[--map->count];
}

void hark__replica_map_free(hark__replica_map *map) {
  for (size_t i = 0; i < map->count; i++) free(map->items[i].name);
  free(map->items);
  *map = (hark__replica_map){0};
}
