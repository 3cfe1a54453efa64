#include "tracker/shard.h"

#include <stdio.h>
#include <string.h>

#include "tracker/replication.h"
#include "tracker/table.h"

unsigned hark__shard_for_topic(const char *topic, size_t topic_len, unsigned pool_size) {
  /* FNV-1a 64 with its standard offset basis and prime. */
  const unsigned char *p = (const unsigned char *)topic;
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < topic_len; i++) {
    h ^= p[i];
    h *= 0x100000001b3ULL;
  }
  return pool_size <= 1 ? 0 : (unsigned)(h % pool_size);
}

static uint16_t shard_ref_hash(const char *node_name, size_t len, unsigned index) {
  char suffix[16];
  int n = snprintf(suffix, sizeof(suffix), "/%u", index);
  uint64_t h = hark__hash_bytes(0, node_name, len);
  h = hark__hash_bytes(h, suffix, (size_t)n);
  return (uint16_t)(h ^ (h >> 16) ^ (h >> 32) ^ (h >> 48));
}

int hark__shard_init(hark__shard *shard, const char *node_name, size_t node_name_len,
                     unsigned index, uint64_t vsn) {
  static const uint64_t caps[3] = HARK__DEFAULT_DELTA_CAPS;
  *shard = (hark__shard){.index = index};
  memcpy(shard->delta_caps, caps, sizeof(caps));

  hark__rref self = {node_name, node_name_len, vsn};
  shard->state = hark__state_new(self);
  if (shard->state == NULL) return HARK_ENOMEM;

  hark__generations_init(&shard->generations, shard->delta_caps, 3);
  shard->ref_hash = shard_ref_hash(node_name, node_name_len, index);
  return 0;
}

void hark__shard_destroy(hark__shard *shard) {
  hark__generations_clear(&shard->generations);
  hark__replica_map_free(&shard->replicas);
  hark__clockset_free(&shard->pending_clockset);
  hark__state_free(shard->state);
  shard->state = NULL;
  /* Last, because the generations borrow the replication's delta caps. */
  if (shard->replication != NULL) hark__replication_release(shard->replication);
  shard->replication = NULL;
}
