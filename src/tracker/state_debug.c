#include "tracker/state_debug.h"

#include <string.h>

#include "tracker/shard.h"
#include "tracker/wire.h"

uint64_t hark__debug_vsn(hark_tracker *tracker, unsigned shard) {
  return hark__state_self(hark__tracker_shard(tracker, shard)->state).vsn;
}

unsigned hark__debug_shard_for_topic(const char *topic, size_t topic_len, unsigned pool_size) {
  return hark__shard_for_topic(topic, topic_len, pool_size);
}

typedef struct entry_count {
  const hark__state *state;
  hark__rref ref;
  size_t found;
} entry_count;

static void count_entry(void *ctx, const hark__entry *entry) {
  entry_count *count = ctx;
  hark__entry_view view;
  hark__entry_view_of(count->state, entry, &view);
  if (hark__rref_equal(view.replica, count->ref)) count->found++;
}

/* Whether a delta has a range, dots or values of `ref`. A delta may still
 * name a removed replica that created it, with no data. */
static bool delta_holds(const hark__delta *delta, hark__rref ref) {
  long k = hark__delta_find_replica(delta, ref);
  if (k < 0) return false;
  const hark__delta_replica *replica = &delta->replicas[k];
  if (replica->has_start || replica->has_end || replica->cloud.count > 0) return true;
  for (size_t i = 0; i < delta->value_count; i++) {
    if (delta->values[i].replica == (uint32_t)k) return true;
  }
  return false;
}

const char *hark__debug_leftover(hark_tracker *tracker, unsigned shard, const char *name,
                                 uint64_t vsn) {
  const hark__shard *sh = hark__tracker_shard(tracker, shard);
  hark__rref ref = {name, strlen(name), vsn};
  if (hark__state_replica_status(sh->state, ref) != HARK__STATUS_NONE) return "a status";
  if (hark__state_cloud(sh->state, ref) != NULL) return "a context entry";
  if (hark__replica_fetch_by_ref(&sh->replicas, ref) != NULL) return "a replica record";

  entry_count count = {sh->state, ref, 0};
  hark__state_all_entries(sh->state, count_entry, &count);
  if (count.found > 0) return "entries";
  for (size_t g = 0; g < sh->generations.count; g++) {
    if (delta_holds(sh->generations.deltas[g], ref)) return "generation data";
  }
  return NULL;
}

int hark__debug_message_type(const void *data, size_t len, bool *full) {
  hark__wire_msg msg;
  if (hark__wire_decode(data, len, &msg, NULL) != 0) return -1;
  int type = (int)msg.type;
  *full = msg.payload != NULL && msg.payload->kind == HARK__DELTA_FULL;
  hark__wire_msg_free(&msg);
  return type;
}

/* Written from the definition of bridging, apart from the generation code
 * that it checks. */
static bool bridges(const hark__delta *gen, const hark__clock *clock) {
  bool ahead = false;
  for (size_t i = 0; i < clock->count; i++) {
    long k = hark__delta_find_replica(gen, hark__clock_ref(clock, i));
    if (k < 0) continue;
    const hark__delta_replica *replica = &gen->replicas[k];
    uint64_t have = clock->items[i].counter;
    uint64_t start = replica->has_start ? replica->start : 0;
    if (start > have) return false;
    if (replica->has_end && replica->end > have) ahead = true;
  }
  return ahead;
}

int hark__debug_generation_bridges(hark_tracker *tracker, unsigned shard, const void *request,
                                   size_t len) {
  hark__wire_msg msg;
  if (hark__wire_decode(request, len, &msg, NULL) != 0) return -1;
  const hark__generations *gens = &hark__tracker_shard(tracker, shard)->generations;
  int found = 0;
  for (size_t g = 0; g < gens->count && !found; g++) found = bridges(gens->deltas[g], &msg.clock);
  hark__wire_msg_free(&msg);
  return found;
}

const char *hark__debug_check_indexes(hark_tracker *tracker) {
  for (unsigned i = 0; i < hark_tracker_pool_size(tracker); i++) {
    const char *problem = hark__state_check_indexes(hark__tracker_shard(tracker, i)->state);
    if (problem != NULL) return problem;
  }
  return NULL;
}
