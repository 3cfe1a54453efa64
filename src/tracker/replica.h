/* Records of the remote replicas a shard hears from, keyed by node name:
 * at most one vsn per name. Time is always passed in by the caller, in
 * wall-clock milliseconds; nothing here reads a clock. */
#ifndef HARK_TRACKER_REPLICA_H
#define HARK_TRACKER_REPLICA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tracker/clock.h"

typedef enum hark__replica_status {
  HARK__REPLICA_UP = 0,
  HARK__REPLICA_DOWN = 1,
  HARK__REPLICA_PERMDOWN = 2,
} hark__replica_status;

/* One replica record. The map owns `name`. */
typedef struct hark__replica {
  char *name;
  size_t name_len;
  uint64_t vsn;
  bool has_heartbeat; /* false until the first heartbeat */
  uint64_t last_heartbeat_ms;
  hark__replica_status status;
} hark__replica;

/* A copy of a record's fields without the name, returned by the updates
 * below. `present` is false when there was no record. */
typedef struct hark__replica_info {
  bool present;
  uint64_t vsn;
  bool has_heartbeat;
  uint64_t last_heartbeat_ms;
  hark__replica_status status;
} hark__replica_info;

typedef struct hark__replica_map {
  hark__replica *items;
  size_t count;
  size_t cap;
} hark__replica_map;

/* A fresh vsn: wall-clock microseconds plus a positive number unique within
 * the process (both from the caller), so a restart is a new replica. */
static inline uint64_t hark__replica_vsn(uint64_t now_us, uint64_t unique) {
  return now_us + unique;
}

static inline hark__rref hark__replica_ref(const hark__replica *replica) {
  hark__rref ref = {replica->name, replica->name_len, replica->vsn};
  return ref;
}

const hark__replica *hark__replica_find(const hark__replica_map *map, const char *name,
                                        size_t name_len);

/* Records a heartbeat from `ref` at `now_ms`: the record for its name gets
 * the vsn, status up and the timestamp, whether it was up, down or absent.
 * `previous` receives the record as it was. Returns 0 or -1 (out of memory,
 * map unchanged). */
int hark__replica_put_heartbeat(hark__replica_map *map, hark__rref ref, uint64_t now_ms,
                                hark__replica_info *previous);

/* Checks the replica named `name` for silence at `now_ms`. With
 * downtime = now_ms - last heartbeat: above permdown_ms it is removed and
 * reported as permdown; above down_ms it becomes down; otherwise unchanged.
 * Both comparisons are strict. `before` and `after` receive the record
 * before and after. */
void hark__replica_detect_down(hark__replica_map *map, const char *name, size_t name_len,
                               uint64_t down_ms, uint64_t permdown_ms, uint64_t now_ms,
                               hark__replica_info *before, hark__replica_info *after);

/* The record with this name and vsn, or NULL when the name is unknown or its
 * vsn differs. */
const hark__replica *hark__replica_fetch_by_ref(const hark__replica_map *map, hark__rref ref);

/* Removes the record of `name`. */
void hark__replica_remove(hark__replica_map *map, const char *name, size_t name_len);

void hark__replica_map_free(hark__replica_map *map);

#endif
