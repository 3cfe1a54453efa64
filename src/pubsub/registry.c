/* The subscription registry: topic records with one entry array per
 * partition, and per-subscriber back-references so that removing an entry
 * costs O(1) plus a scan of that subscriber's own subscriptions, whatever the
 * number of subscribers on the topic. */
#include <stdlib.h>
#include <string.h>

#include "pubsub/internal.h"

#define ENTRY_MIN_CAP 4

/* ---- Subscriber states ---- */

/* Spreads subscriber addresses over the partitions. Addresses share their
 * low bits (alignment), so they go through a Fibonacci multiply first and the
 * high half is mapped onto [0, pool_size) with a multiply-shift. */
static unsigned partition_of(const hark_pubsub *ps, const hark_subscriber *sub) {
  if (ps->pool_size == 1) return 0;
  uint64_t mixed = (uint64_t)(uintptr_t)sub * 0x9e3779b97f4a7c15ULL;
  return (unsigned)(((mixed >> 32) * ps->pool_size) >> 32);
}

static hark__sub_state *find_state(const hark_pubsub *ps, const hark_subscriber *sub) {
  for (hark__sub_state *st = sub->internal_; st != NULL; st = st->next_of_sub) {
    if (st->ps == ps) return st;
  }
  return NULL;
}

static hark__sub_state *state_new(hark_pubsub *ps, hark_subscriber *sub) {
  hark__sub_state *st = calloc(1, sizeof *st);
  if (st == NULL) return NULL;

  st->ps = ps;
  st->sub = sub;
  st->partition = partition_of(ps, sub);

  st->next_of_sub = sub->internal_;
  sub->internal_ = st;

  st->next = ps->states;
  if (ps->states != NULL) ps->states->prev = st;
  ps->states = st;
  return st;
}

/* Unlinks a state from its subscriber and its instance and frees it. */
static void state_free(hark__sub_state *st) {
  hark__sub_state **link = (hark__sub_state **)&st->sub->internal_;
  while (*link != st) link = &(*link)->next_of_sub;
  *link = st->next_of_sub;

  if (st->prev != NULL) st->prev->next = st->next;
  else st->ps->states = st->next;
  if (st->next != NULL) st->next->prev = st->prev;

  if (st->refs != &st->first_ref) free(st->refs);
  free(st);
}

/* The first subscription sits in the state itself: most subscribers (a
 * socket's channel) have exactly one, and then need no array. */
static int reserve_ref(hark__sub_state *st) {
  if (st->count < st->cap) return HARK_OK;
  if (st->cap == 0) {
    st->refs = &st->first_ref;
    st->cap = 1;
    return HARK_OK;
  }

  size_t cap = st->cap * 2;
  int inline_now = st->refs == &st->first_ref;
  hark__sub_ref *refs = inline_now ? malloc(cap * sizeof *refs) : realloc(st->refs, cap * sizeof *refs);
  if (refs == NULL) return HARK_ENOMEM;
  if (inline_now) refs[0] = st->first_ref;
  st->refs = refs;
  st->cap = cap;
  return HARK_OK;
}

/* ---- Topic records ---- */

static hark__topic *topic_new(const hark_pubsub *ps, const char *name, size_t len, uint64_t hash) {
  size_t parts_size = ps->pool_size * sizeof(hark__partition);
  hark__topic *topic = calloc(1, sizeof *topic + parts_size + len + 1);
  if (topic == NULL) return NULL;

  char *copy = (char *)topic + sizeof *topic + parts_size;
  if (len > 0) memcpy(copy, name, len);
  copy[len] = '\0';
  topic->name = copy;
  topic->len = len;
  topic->hash = hash;
  return topic;
}

static void free_retired(hark__partition *part) {
  while (part->retired != NULL) {
    hark__entry_block *next = part->retired->next_retired;
    free(part->retired);
    part->retired = next;
  }
}

static void topic_free(const hark_pubsub *ps, hark__topic *topic) {
  for (unsigned i = 0; i < ps->pool_size; i++) {
    hark__partition *part = &topic->parts[i];
    free_retired(part);
    free(part->block);
    free(part->owners);
  }
  free(topic);
}

/* Frees the record of a topic that has no entries left. A call in progress
 * that pinned it frees it instead when it unpins. */
static void topic_release_if_unused(hark_pubsub *ps, hark__topic *topic) {
  if (topic->live != 0 || topic->pins != 0) return;
  hark__topic_map_remove(&ps->topics, topic);
  topic_free(ps, topic);
}

void hark__topic_unpin(hark_pubsub *ps, hark__topic *topic) {
  topic->pins--;
  topic_release_if_unused(ps, topic);
}

/* Runs after entries of `topic` were removed. When the last one went, it calls
 * the adapter's topic_removed hook and frees the record. The topic stays pinned during the hook,
 * because the hook may subscribe or unsubscribe on it. */
static void topic_after_removal(hark_pubsub *ps, hark__topic *topic) {
  if (topic->live != 0) return;

  if (ps->group != NULL) {
    hark__group_interest(ps, topic->name, topic->len, 0);
  } else if (ps->has_adapter && ps->adapter.topic_removed != NULL) {
    topic->pins++;
    ps->adapter.topic_removed(ps->adapter.ctx, topic->name, topic->len);
    topic->pins--;
  }
  topic_release_if_unused(ps, topic);
}

/* ---- Entry arrays ---- */

/* Makes room for one more entry. While a dispatcher reads the array it must
 * not move, so growth then copies into a new array and keeps the old one on
 * the retired list until the dispatch ends. */
static int reserve_entry(hark__partition *part) {
  if (part->count < part->cap) return HARK_OK;

  size_t cap = part->cap ? part->cap * 2 : ENTRY_MIN_CAP;
  hark__entry_owner *owners = realloc(part->owners, cap * sizeof *owners);
  if (owners == NULL) return HARK_ENOMEM;
  part->owners = owners;

  size_t block_size = sizeof(hark__entry_block) + cap * sizeof(hark_dispatch_entry);
  hark__entry_block *block;
  if (part->dispatching == 0 || part->block == NULL) {
    block = realloc(part->block, block_size);
    if (block == NULL) return HARK_ENOMEM;
  } else {
    block = malloc(block_size);
    if (block == NULL) return HARK_ENOMEM;
    memcpy(block->entries, part->block->entries, part->count * sizeof(hark_dispatch_entry));
    part->block->next_retired = part->retired;
    part->retired = part->block;
  }
  block->next_retired = NULL;
  part->block = block;
  part->cap = cap;
  return HARK_OK;
}

/* Points the subscriber's ref at the entry's new index after a move. */
static void fix_owner_ref(const hark__partition *part, size_t index) {
  const hark__entry_owner *owner = &part->owners[index];
  owner->state->refs[owner->ref].index = index;
}

static void move_entry(hark__partition *part, size_t from, size_t to) {
  part->block->entries[to] = part->block->entries[from];
  part->owners[to] = part->owners[from];
  fix_owner_ref(part, to);
}

/* Halves an array that is at most a quarter full, so a topic that shrank
 * does not keep its peak memory. A failed realloc leaves it as it is. */
static void shrink_entries(hark__partition *part) {
  if (part->cap <= ENTRY_MIN_CAP || part->count * 4 > part->cap) return;

  size_t cap = part->cap / 2;
  hark__entry_block *block =
      realloc(part->block, sizeof(hark__entry_block) + cap * sizeof(hark_dispatch_entry));
  if (block == NULL) return;
  part->block = block;

  hark__entry_owner *owners = realloc(part->owners, cap * sizeof *owners);
  if (owners != NULL) part->owners = owners;
  part->cap = cap;
}

/* Removes the entry at `index` by moving the last one into its place. Only
 * valid when no dispatcher reads the array. */
static void swap_remove_entry(hark__partition *part, size_t index) {
  size_t last = part->count - 1;
  if (index != last) move_entry(part, last, index);
  part->count--;
  shrink_entries(part);
}

/* Drops the entries that were removed during a dispatch, keeping the order of
 * the others. */
static void compact_entries(hark__partition *part) {
  size_t kept = 0;
  for (size_t i = 0; i < part->count; i++) {
    if (part->owners[i].state == NULL) continue;
    if (i != kept) move_entry(part, i, kept);
    kept++;
  }
  part->count = kept;
  part->dead = 0;
  shrink_entries(part);
}

void hark__partition_end_dispatch(hark__partition *part) {
  part->dispatching--;
  if (part->dispatching != 0) return;

  free_retired(part);
  if (part->dead != 0) compact_entries(part);
}

/* ---- Subscribe and unsubscribe ---- */

static void append_entry(hark__topic *topic, hark__sub_state *st, void *metadata) {
  hark__partition *part = &topic->parts[st->partition];
  size_t index = part->count++;
  part->block->entries[index] = (hark_dispatch_entry){.sub = st->sub, .metadata = metadata};
  part->owners[index] = (hark__entry_owner){.state = st, .ref = st->count};
  st->refs[st->count++] = (hark__sub_ref){.topic = topic, .index = index};
  topic->live++;
}

int hark_pubsub_subscribe(hark_pubsub *ps, hark_subscriber *sub, const char *topic,
                          size_t topic_len, void *metadata) {
  if (ps == NULL || sub == NULL || (topic == NULL && topic_len > 0)) return HARK_EINVAL;

  /* Everything that can fail is allocated before the registry changes, and
   * undone on failure, so ENOMEM leaves no trace. */
  uint64_t hash = hark__hash_bytes(topic, topic_len);
  hark__topic *record = hark__topic_map_find(&ps->topics, topic, topic_len, hash);
  int created_topic = 0;
  if (record == NULL) {
    record = topic_new(ps, topic, topic_len, hash);
    if (record == NULL) return HARK_ENOMEM;
    if (hark__topic_map_insert(&ps->topics, record) != HARK_OK) {
      topic_free(ps, record);
      return HARK_ENOMEM;
    }
    created_topic = 1;
  }

  hark__sub_state *st = find_state(ps, sub);
  int created_state = 0;
  if (st == NULL) {
    st = state_new(ps, sub);
    if (st == NULL) goto fail;
    created_state = 1;
  }
  if (reserve_ref(st) != HARK_OK) goto fail;
  if (reserve_entry(&record->parts[st->partition]) != HARK_OK) goto fail;

  append_entry(record, st, metadata);
  if (record->live == 1 && ps->group != NULL) {
    hark__group_interest(ps, record->name, record->len, 1);
  } else if (record->live == 1 && ps->has_adapter && ps->adapter.topic_added != NULL) {
    ps->adapter.topic_added(ps->adapter.ctx, record->name, record->len);
  }
  return HARK_OK;

fail:
  if (created_state) state_free(st);
  if (created_topic) {
    hark__topic_map_remove(&ps->topics, record);
    topic_free(ps, record);
  }
  return HARK_ENOMEM;
}

/* Removes the subscription at st->refs[r]. The entry goes at once, or is
 * marked dead when a dispatcher is reading its array. Frees neither the state
 * nor the topic: callers do that after, in a safe order. */
static void remove_ref(hark__sub_state *st, size_t r) {
  hark__sub_ref ref = st->refs[r];
  hark__partition *part = &ref.topic->parts[st->partition];

  size_t last = --st->count;
  if (r != last) {
    st->refs[r] = st->refs[last];
    hark__sub_ref moved = st->refs[r];
    moved.topic->parts[st->partition].owners[moved.index].ref = r;
  }

  if (part->dispatching != 0) {
    part->owners[ref.index].state = NULL;
    part->dead++;
  } else {
    swap_remove_entry(part, ref.index);
  }
  ref.topic->live--;
}

static size_t find_last_ref(const hark__sub_state *st, const hark__topic *topic) {
  for (size_t r = st->count; r > 0; r--) {
    if (st->refs[r - 1].topic == topic) return r - 1;
  }
  return SIZE_MAX;
}

void hark_pubsub_unsubscribe(hark_pubsub *ps, hark_subscriber *sub, const char *topic,
                             size_t topic_len) {
  if (ps == NULL || sub == NULL || (topic == NULL && topic_len > 0)) return;

  uint64_t hash = hark__hash_bytes(topic, topic_len);
  hark__topic *record = hark__topic_map_find(&ps->topics, topic, topic_len, hash);
  hark__sub_state *st = find_state(ps, sub);
  if (record == NULL || st == NULL) return;

  /* NOTE: finding the entries scans this subscriber's subscriptions, so the
   * cost grows with the topics one subscriber holds, not with the
   * subscribers of the topic. */
  int removed = 0;
  size_t r;
  while ((r = find_last_ref(st, record)) != SIZE_MAX) {
    remove_ref(st, r);
    removed = 1;
  }
  if (!removed) return;

  if (st->count == 0) state_free(st);
  topic_after_removal(ps, record);
}

void hark_pubsub_unsubscribe_all(hark_pubsub *ps, hark_subscriber *sub) {
  if (ps == NULL || sub == NULL) return;

  /* The state is looked up again on every step because the topic_removed
   * hook may subscribe or unsubscribe this subscriber. */
  hark__sub_state *st;
  while ((st = find_state(ps, sub)) != NULL) {
    hark__topic *topic = st->refs[st->count - 1].topic;
    remove_ref(st, st->count - 1);
    if (st->count == 0) state_free(st);
    topic_after_removal(ps, topic);
  }
}

size_t hark_pubsub_subscriber_count(const hark_pubsub *ps, const char *topic, size_t topic_len) {
  if (ps == NULL || (topic == NULL && topic_len > 0)) return 0;

  uint64_t hash = hark__hash_bytes(topic, topic_len);
  const hark__topic *record = hark__topic_map_find(&ps->topics, topic, topic_len, hash);
  return record != NULL ? record->live : 0;
}

/* Frees every subscriber state and topic record. Subscribers are left with no
 * state for this instance, so their owners may free them. */
void hark__registry_free(hark_pubsub *ps) {
  while (ps->states != NULL) state_free(ps->states);

  for (size_t i = 0; i < ps->topics.cap; i++) {
    if (ps->topics.slots[i] != NULL) topic_free(ps, ps->topics.slots[i]);
  }
  hark__topic_map_free(&ps->topics);
}
