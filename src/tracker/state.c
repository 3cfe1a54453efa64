#include "tracker/state.h"

#include <assert.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "hark/tracker.h"
#include "tracker/pool.h"
#include "tracker/table.h"

/* A topic with at least one entry, or still referenced by a detached entry
 * that a change list keeps alive. The name follows the struct. */
typedef struct topic_rec {
  uint64_t hash;
  size_t refs;   /* entries pointing here, detached ones included */
  size_t live;   /* entries stored in the state */
  bool in_table; /* reachable through state->topics; false once live drops to 0 */
  hark__entry *head;
  hark__entry *tail;
  size_t len;
  char name[];
} topic_rec;

/* Flags that live only during one merge: every entry's flags are 0 between
 * operations. Only the merge's leaves carry flags, so apply_leaves (or the
 * merge's cleanup on error) can clear all of them. */
enum {
  ENTRY_LEAVING = 1u << 0,  /* selected as an observed remove by the merge in progress */
  ENTRY_REPLACED = 1u << 1, /* a leave that the merge in progress overwrote in place */
};

/* One stored entry. It sits in the by_key table, its topic's list (tracking
 * order) and its replica's list. An own entry is also in its owner's chain
 * (the head is in by_owner), and a remote entry is also in the by_tag table.
 * Remote entries are never looked up by owner on a hot path, so they skip
 * that index and leave owner_prev and owner_next NULL. Own entries are never
 * looked up by tag (a merge only observes removals of other replicas'
 * entries), so they skip by_tag. The own replica's list is sorted by
 * counter, because joins append and an update moves the entry to the tail.
 *
 * One block of the state's pool holds the entry, its key and the meta it
 * was created with (one allocation and one free per entry). An update or an
 * overwriting merge points `meta` at a separate malloc'd copy instead; the
 * inline bytes then stay unused until the entry is freed. */
struct hark__entry {
  topic_rec *topic;
  uint64_t owner;
  uint64_t counter;
  char *meta; /* inline_meta(e), or a malloc'd block that the entry owns */
  hark__entry *topic_prev, *topic_next;
  hark__entry *owner_prev, *owner_next;
  hark__entry *replica_prev, *replica_next; /* also links detached entries in a change list */
  uint32_t slot; /* the tag's replica, an index into state->slots */
  uint32_t meta_len;
  uint16_t key_len;
  uint8_t flags;
  uint8_t block_units; /* the pool block's size in HARK__POOL_GRAIN units; 0 for a malloc'd one */
  uint32_t key_hash; /* the entry's hash in by_key, kept to skip rehashing on removal */
  char key[];        /* key_len bytes, then the inline meta and its NUL */
};

static char *inline_meta(const hark__entry *e) {
  return (char *)e->key + e->key_len;
}

/* The size to pass to hark__pool_free for the entry's block. */
static size_t entry_block_size(const hark__entry *e) {
  return e->block_units ? (size_t)e->block_units * HARK__POOL_GRAIN : SIZE_MAX;
}

static size_t topic_block_size(const topic_rec *rec) {
  return sizeof(*rec) + rec->len + 1;
}

/* Frees the entry's meta unless it is the inline one. */
static void free_meta(hark__entry *e, char *meta) {
  if (meta != inline_meta(e)) free(meta);
}

/* What the state stores about one replica. A slot is live while the replica
 * is in the context or in the replicas map; permdown frees it for reuse. */
typedef struct replica_slot {
  char *name;
  size_t name_len;
  uint64_t vsn;
  bool live;
  bool in_context;
  hark__status status;
  uint64_t context;
  hark__dotset cloud;       /* remote dots seen out of order; always empty for self */
  hark__dotset delta_cloud; /* the pending delta's dots for this replica, see below */
  hark__entry *head, *tail; /* entries tagged by this replica */
  size_t entry_count;
} replica_slot;

/* The pending delta is kept implicitly, because a copy of every change would
 * double the memory of a busy tracker:
 * - its range is {self: delta_start} -> {self: context[self]};
 * - its dots are every own counter in (delta_start, context[self]], plus the
 *   explicit dots in each slot's delta_cloud (tombstones of own entries older
 *   than the window, and remote tags whose removal was observed);
 * - its values are the own entries with counter > delta_start, which are
 *   exactly the entries added in the window and still present.
 * hark__state_delta builds the explicit value. */
struct hark__state {
  hark__pool *pool;    /* entries and topic records; a pointer, so a const state can free into it */
  replica_slot *slots; /* slot 0 is this replica */
  size_t slot_count;
  size_t slot_cap;
  size_t down_count; /* live slots with status down; queries skip the filter when 0 */
  hark__table topics;
  hark__table by_key;
  hark__table by_tag;
  hark__table by_owner;
  size_t entry_count;
  uint64_t delta_start;
  size_t delta_values; /* own entries with counter > delta_start */
};

#define SELF 0u

/* ---- hashing and lookups ---- */

static uint32_t topic_hash32(uint64_t hash) {
  return (uint32_t)(hash ^ (hash >> 32));
}

static uint32_t key_hash(uint64_t topic_hash, uint32_t slot, uint64_t owner, const char *key,
                         size_t key_len) {
  uint64_t seed = hark__hash_mix(topic_hash ^ hark__hash_mix(owner * 0x9e3779b97f4a7c15ULL + slot));
  uint64_t h = hark__hash_bytes(seed, key, key_len);
  return (uint32_t)(h ^ (h >> 32));
}

static uint32_t tag_hash(uint32_t slot, uint64_t counter) {
  return (uint32_t)hark__hash_mix(counter * 0x9e3779b97f4a7c15ULL + slot);
}

static uint32_t owner_hash(uint32_t slot, uint64_t owner) {
  return (uint32_t)hark__hash_mix(owner ^ ((uint64_t)slot << 56) ^ 0x5bd1e995ULL);
}

/* The identity of one entry, (replica slot, owner, topic, key), with its
 * hashes computed once. The strings are borrowed from the caller. */
typedef struct entry_lookup {
  uint32_t slot;
  uint32_t key_hash; /* the hash in by_key */
  uint64_t owner;
  uint64_t topic_hash;
  const char *topic;
  size_t topic_len;
  const char *key;
  size_t key_len;
} entry_lookup;

static entry_lookup make_lookup(uint32_t slot, uint64_t owner, const char *topic,
                                size_t topic_len, const char *key, size_t key_len) {
  entry_lookup at = {.slot = slot, .owner = owner, .topic = topic, .topic_len = topic_len,
                     .key = key, .key_len = key_len};
  at.topic_hash = hark__hash_bytes(0, topic, topic_len);
  at.key_hash = key_hash(at.topic_hash, slot, owner, key, key_len);
  return at;
}


static topic_rec *find_topic(const hark__state *state, const char *topic, size_t len,
                             uint64_t hash) {
  hark__table_iter it = hark__table_probe(&state->topics, topic_hash32(hash));
  topic_rec *rec;
  while ((rec = hark__table_next(&state->topics, &it)) != NULL) {
    if (rec->hash == hash && rec->len == len && memcmp(rec->name, topic, len) == 0) return rec;
  }
  return NULL;
}

/* Finds an entry whose by_key hash `hash` the caller has computed. */
static hark__entry *find_entry_hashed(const hark__state *state, const topic_rec *rec,
                                      uint32_t slot, uint64_t owner, const char *key,
                                      size_t key_len, uint32_t hash) {
  if (rec == NULL) return NULL;
  hark__table_iter it = hark__table_probe(&state->by_key, hash);
  hark__entry *e;
  while ((e = hark__table_next(&state->by_key, &it)) != NULL) {
    if (e->topic == rec && e->slot == slot && e->owner == owner && e->key_len == key_len &&
        memcmp(e->key, key, key_len) == 0) {
      return e;
    }
  }
  return NULL;
}

static hark__entry *find_entry(const hark__state *state, const topic_rec *rec, uint32_t slot,
                               uint64_t owner, const char *key, size_t key_len) {
  if (rec == NULL) return NULL;
  return find_entry_hashed(state, rec, slot, owner, key, key_len,
                           key_hash(rec->hash, slot, owner, key, key_len));
}

/* Starts loading the table slots that a lookup of `at` and the insertion or
 * removal of its entry probe: topics, by_key and, for an own entry,
 * by_owner. The tables are far larger than the cache, so issuing the three
 * misses together costs about one memory stall instead of three in a row.
 * Forced inline for the reason given at hark__table_prefetch. */
__attribute__((always_inline)) static inline void prefetch_lookup(const hark__state *state,
                                                             const entry_lookup *at) {
  hark__table_prefetch(&state->topics, topic_hash32(at->topic_hash));
  hark__table_prefetch(&state->by_key, at->key_hash);
  if (at->slot == SELF) hark__table_prefetch(&state->by_owner, owner_hash(SELF, at->owner));
}

static hark__entry *find_lookup(const hark__state *state, const topic_rec *rec,
                                const entry_lookup *at) {
  return find_entry_hashed(state, rec, at->slot, at->owner, at->key, at->key_len, at->key_hash);
}

static hark__entry *find_by_tag(const hark__state *state, uint32_t slot, uint64_t counter) {
  hark__table_iter it = hark__table_probe(&state->by_tag, tag_hash(slot, counter));
  hark__entry *e;
  while ((e = hark__table_next(&state->by_tag, &it)) != NULL) {
    if (e->slot == slot && e->counter == counter) return e;
  }
  return NULL;
}

static hark__entry *owner_head(const hark__state *state, uint32_t slot, uint64_t owner) {
  hark__table_iter it = hark__table_probe(&state->by_owner, owner_hash(slot, owner));
  hark__entry *e;
  while ((e = hark__table_next(&state->by_owner, &it)) != NULL) {
    if (e->slot == slot && e->owner == owner) return e;
  }
  return NULL;
}

static long find_slot(const hark__state *state, hark__rref ref) {
  for (size_t i = 0; i < state->slot_count; i++) {
    const replica_slot *s = &state->slots[i];
    if (!s->live || s->vsn != ref.vsn || s->name_len != ref.name_len) continue;
    if (ref.name_len == 0 || memcmp(s->name, ref.name, ref.name_len) == 0) return (long)i;
  }
  return -1;
}

static hark__rref slot_ref(const hark__state *state, uint32_t slot) {
  const replica_slot *s = &state->slots[slot];
  hark__rref ref = {s->name, s->name_len, s->vsn};
  return ref;
}

/* Returns the index of a new live slot for `ref`, reusing a freed one. */
static long add_slot(hark__state *state, hark__rref ref) {
  size_t index = state->slot_count;
  for (size_t i = 0; i < state->slot_count; i++) {
    if (!state->slots[i].live) {
      index = i;
      break;
    }
  }
  if (index == state->slot_count && state->slot_count == state->slot_cap) {
    size_t cap = state->slot_cap ? state->slot_cap * 2 : 4;
    replica_slot *slots = realloc(state->slots, cap * sizeof(*slots));
    if (slots == NULL) return -1;
    state->slots = slots;
    state->slot_cap = cap;
  }

  char *name = malloc(ref.name_len + 1);
  if (name == NULL) return -1;
  if (ref.name_len > 0) memcpy(name, ref.name, ref.name_len);
  name[ref.name_len] = '\0';

  state->slots[index] = (replica_slot){.name = name, .name_len = ref.name_len, .vsn = ref.vsn,
                                       .live = true};
  if (index == state->slot_count) state->slot_count++;
  return (long)index;
}

/* ---- change lists ---- */

static void free_entry(hark__pool *pool, hark__entry *e) {
  topic_rec *rec = e->topic;
  free_meta(e, e->meta);
  hark__pool_free(pool, e, entry_block_size(e));
  if (--rec->refs == 0) hark__pool_free(pool, rec, topic_block_size(rec));
}

static int changes_reserve(hark__changes *changes, size_t items, size_t old_metas) {
  if (changes == NULL) return 0;
  if (changes->count + items > changes->cap) {
    size_t cap = changes->cap ? changes->cap : 8;
    while (cap < changes->count + items) cap *= 2;
    /* A large merge's list takes megabytes: reuse freed ones. */
    size_t size = cap * sizeof(hark__change);
    hark__change *grown =
        hark__realloc_large(changes->items, changes->cap * sizeof(hark__change),
                            changes->count * sizeof(hark__change), &size, &changes->items_huge);
    if (grown == NULL) return -1;
    changes->items = grown;
    changes->cap = size / sizeof(hark__change);
  }
  if (changes->old_meta_count + old_metas > changes->old_meta_cap) {
    size_t cap = changes->old_meta_cap ? changes->old_meta_cap : 4;
    while (cap < changes->old_meta_count + old_metas) cap *= 2;
    char **grown = realloc(changes->old_metas, cap * sizeof(*grown));
    if (grown == NULL) return -1;
    changes->old_metas = grown;
    changes->old_meta_cap = cap;
  }
  return 0;
}

/* Ties the list to `state`. A list serves one state, whose pool receives
 * its detached entries when it is cleared. */
static void changes_bind(hark__changes *changes, const hark__state *state) {
  assert(changes->state == NULL || changes->state == state);
  changes->state = state;
}

/* Records one change; the caller has reserved room. */
static void changes_add(hark__changes *changes, const hark__state *state, const hark__entry *e,
                        const char *meta, size_t meta_len, bool join) {
  if (changes == NULL) return;
  changes_bind(changes, state);
  changes->items[changes->count++] = (hark__change){e, meta, meta_len, join};
}

/* Hands a detached entry to the change list, or frees it when there is none. */
static void changes_keep_entry(hark__changes *changes, const hark__state *state, hark__entry *e) {
  if (changes == NULL) {
    free_entry(state->pool, e);
    return;
  }
  changes_bind(changes, state);
  e->replica_next = changes->detached;
  changes->detached = e;
}

/* Hands the replaced meta `meta` of the live entry `e` to the change list,
 * or frees it when there is none. An inline meta needs neither: it lives as
 * long as the entry. */
static void changes_keep_meta(hark__changes *changes, hark__entry *e, char *meta) {
  if (meta == inline_meta(e)) return;
  if (changes == NULL) {
    free(meta);
    return;
  }
  changes->old_metas[changes->old_meta_count++] = meta;
}

void hark__changes_clear(hark__changes *changes) {
  while (changes->detached != NULL) {
    hark__entry *e = changes->detached;
    changes->detached = e->replica_next;
    free_entry(changes->state->pool, e);
  }
  for (size_t i = 0; i < changes->old_meta_count; i++) free(changes->old_metas[i]);
  hark__free_large(changes->items, changes->cap * sizeof(hark__change), changes->items_huge);
  free(changes->old_metas);
  *changes = (hark__changes){0};
}

void hark__entry_view_of(const hark__state *state, const hark__entry *e, hark__entry_view *view) {
  view->replica = slot_ref(state, e->slot);
  view->counter = e->counter;
  view->owner = e->owner;
  view->topic = e->topic->name;
  view->topic_len = e->topic->len;
  view->key = e->key;
  view->key_len = e->key_len;
  view->meta = e->meta;
  view->meta_len = e->meta_len;
}

void hark__change_view(const hark__changes *changes, size_t i, hark__entry_view *view) {
  const hark__change *change = &changes->items[i];
  hark__entry_view_of(changes->state, change->entry, view);
  view->meta = change->meta;
  view->meta_len = change->meta_len;
}

/* ---- creating and removing entries ---- */

/* Adds a topic record; the caller has checked that the topic is absent. */
static topic_rec *add_topic(hark__state *state, const char *topic, size_t len, uint64_t hash) {
  topic_rec *rec = hark__pool_alloc(state->pool, sizeof(*rec) + len + 1);
  if (rec == NULL) return NULL;
  *rec = (topic_rec){.hash = hash, .in_table = true, .len = len};
  if (len > 0) memcpy(rec->name, topic, len);
  rec->name[len] = '\0';
  if (hark__table_insert(&state->topics, topic_hash32(hash), rec) != 0) {
    hark__pool_free(state->pool, rec, topic_block_size(rec));
    return NULL;
  }
  return rec;
}

static void drop_topic_if_empty(hark__state *state, topic_rec *rec) {
  if (rec->live > 0 || !rec->in_table) return;
  hark__table_remove(&state->topics, topic_hash32(rec->hash), rec);
  rec->in_table = false;
  if (rec->refs == 0) hark__pool_free(state->pool, rec, topic_block_size(rec));
}

/* Adds an own entry to its owner's chain, right after the head. */
static void link_owner(hark__state *state, hark__entry *e) {
  e->owner_prev = e->owner_next = NULL;
  if (e->slot != SELF) return;

  hark__entry *head = owner_head(state, e->slot, e->owner);
  e->owner_prev = head;
  e->owner_next = head ? head->owner_next : NULL;
  if (head) {
    if (head->owner_next) head->owner_next->owner_prev = e;
    head->owner_next = e;
  } else {
    hark__table_insert(&state->by_owner, owner_hash(e->slot, e->owner), e);
  }
}

static void unlink_owner(hark__state *state, hark__entry *e) {
  if (e->slot != SELF) return;

  uint32_t oh = owner_hash(e->slot, e->owner);
  if (e->owner_prev) {
    e->owner_prev->owner_next = e->owner_next;
  } else if (e->owner_next) {
    hark__table_replace(&state->by_owner, oh, e, e->owner_next);
  } else {
    hark__table_remove(&state->by_owner, oh, e);
  }
  if (e->owner_next) e->owner_next->owner_prev = e->owner_prev;
}

static void link_entry(hark__state *state, hark__entry *e) {
  topic_rec *rec = e->topic;
  e->topic_prev = rec->tail;
  e->topic_next = NULL;
  if (rec->tail) rec->tail->topic_next = e;
  else rec->head = e;
  rec->tail = e;
  rec->live++;
  rec->refs++;

  link_owner(state, e);

  replica_slot *s = &state->slots[e->slot];
  e->replica_prev = s->tail;
  e->replica_next = NULL;
  if (s->tail) s->tail->replica_next = e;
  else s->head = e;
  s->tail = e;
  s->entry_count++;

  /* Both tables file entries under their replica's slot, so that
   * remove_down_replicas can drop a replica's entries in one pass. */
  hark__table_insert_group(&state->by_key, e->key_hash, e->slot, e);
  if (e->slot != SELF) {
    hark__table_insert_group(&state->by_tag, tag_hash(e->slot, e->counter), e->slot, e);
  }
  state->entry_count++;
}

static void unlink_from_replica(hark__state *state, hark__entry *e) {
  replica_slot *s = &state->slots[e->slot];
  if (e->replica_prev) e->replica_prev->replica_next = e->replica_next;
  else s->head = e->replica_next;
  if (e->replica_next) e->replica_next->replica_prev = e->replica_prev;
  else s->tail = e->replica_prev;
  e->replica_prev = e->replica_next = NULL;
}

/* Removes an entry from every structure except the by_key and by_tag tables,
 * which the caller updates. */
static void unlink_entry_lists(hark__state *state, hark__entry *e) {
  topic_rec *rec = e->topic;
  if (e->topic_prev) e->topic_prev->topic_next = e->topic_next;
  else rec->head = e->topic_next;
  if (e->topic_next) e->topic_next->topic_prev = e->topic_prev;
  else rec->tail = e->topic_prev;
  rec->live--;

  unlink_owner(state, e);
  unlink_from_replica(state, e);
  state->slots[e->slot].entry_count--;
  state->entry_count--;
  drop_topic_if_empty(state, rec);
}

/* Removes an entry from every structure; the caller frees or keeps it. */
static void unlink_entry(hark__state *state, hark__entry *e) {
  unlink_entry_lists(state, e);
  hark__table_remove(&state->by_key, e->key_hash, e);
  if (e->slot != SELF) hark__table_remove(&state->by_tag, tag_hash(e->slot, e->counter), e);
}

/* Makes room for `extra` entries of replica `slot`: own entries go into
 * by_owner, remote ones into by_tag. */
static int reserve_tables(hark__state *state, size_t extra, uint32_t slot) {
  if (hark__table_reserve(&state->by_key, extra) != 0) return -1;
  if (slot != SELF && hark__table_reserve(&state->by_tag, extra) != 0) return -1;
  if (slot == SELF && hark__table_reserve(&state->by_owner, extra) != 0) return -1;
  return 0;
}

/* Allocates and links a new entry. `rec` is the topic's record, or NULL when
 * the topic has none yet. Returns the entry, or NULL when out of memory (the
 * state is unchanged). */
static hark__entry *add_entry(hark__state *state, const entry_lookup *at, uint64_t counter,
                              topic_rec *rec, const char *meta, size_t meta_len) {
  uint32_t slot = at->slot;
  size_t key_len = at->key_len;
  if (key_len > HARK__MAX_KEY_LEN || meta_len > UINT32_MAX) return NULL;
  if (reserve_tables(state, 1, slot) != 0) return NULL;

  size_t size = offsetof(hark__entry, key) + key_len + meta_len + 1;
  hark__entry *e = hark__pool_alloc(state->pool, size);
  if (e == NULL) return NULL;
  e->block_units = size <= HARK__POOL_MAX_BLOCK
                       ? (uint8_t)((size + HARK__POOL_GRAIN - 1) / HARK__POOL_GRAIN)
                       : 0;
  if (rec == NULL) rec = add_topic(state, at->topic, at->topic_len, at->topic_hash);
  if (rec == NULL) {
    hark__pool_free(state->pool, e, entry_block_size(e));
    return NULL;
  }

  e->topic = rec;
  e->owner = at->owner;
  e->counter = counter;
  e->slot = slot;
  e->key_len = (uint16_t)key_len;
  e->meta_len = (uint32_t)meta_len;
  e->flags = 0;
  e->key_hash = at->key_hash;
  if (key_len > 0) memcpy(e->key, at->key, key_len);
  e->meta = inline_meta(e);
  if (meta_len > 0) memcpy(e->meta, meta, meta_len);
  e->meta[meta_len] = '\0';
  link_entry(state, e);
  return e;
}

static void change_counter(hark__state *state, hark__entry *e, uint64_t counter) {
  if (e->slot == SELF) {
    e->counter = counter;
    return;
  }
  hark__table_remove(&state->by_tag, tag_hash(e->slot, e->counter), e);
  e->counter = counter;
  /* Cannot fail: the table just lost one element and keeps its capacity. */
  hark__table_insert_group(&state->by_tag, tag_hash(e->slot, counter), e->slot, e);
}

/* ---- creation ---- */

hark__state *hark__state_new(hark__rref self) {
  hark__state *state = calloc(1, sizeof(*state));
  if (state == NULL) return NULL;
  state->pool = calloc(1, sizeof(*state->pool));
  if (state->pool == NULL || add_slot(state, self) != 0) {
    free(state->pool);
    free(state);
    return NULL;
  }
  state->slots[SELF].in_context = true;
  state->slots[SELF].status = HARK__STATUS_UP;
  /* There are far fewer topics than entries in a tracker, so a sparse topic
   * table costs little memory. It shortens the probes of every join and
   * leave, whose slot lines are cold when the state is. */
  state->topics.sparse = true;
  return state;
}

static void free_slot_entries(hark__pool *pool, replica_slot *s) {
  hark__entry *e = s->head;
  while (e != NULL) {
    hark__entry *next = e->replica_next;
    free_meta(e, e->meta);
    hark__pool_free(pool, e, entry_block_size(e));
    e = next;
  }
  s->head = s->tail = NULL;
}

void hark__state_free(hark__state *state) {
  if (state == NULL) return;
  for (size_t i = 0; i < state->slot_count; i++) {
    replica_slot *s = &state->slots[i];
    if (!s->live) continue;
    free_slot_entries(state->pool, s);
    free(s->name);
    hark__dotset_free(&s->cloud);
    hark__dotset_free(&s->delta_cloud);
  }
  /* Topic records still in the table have no other refs. */
  for (size_t i = 0; i < state->topics.cap; i++) {
    topic_rec *rec = state->topics.slots[i].ptr;
    if (rec != NULL) hark__pool_free(state->pool, rec, topic_block_size(rec));
  }
  hark__pool_destroy(state->pool);
  free(state->pool);
  hark__table_free(&state->topics);
  hark__table_free(&state->by_key);
  hark__table_free(&state->by_tag);
  hark__table_free(&state->by_owner);
  free(state->slots);
  free(state);
}

hark__rref hark__state_self(const hark__state *state) {
  return slot_ref(state, SELF);
}

/* ---- local operations ---- */

static hark__entry *find_own(const hark__state *state, uint64_t owner, const char *topic,
                             size_t topic_len, const char *key, size_t key_len) {
  entry_lookup at = make_lookup(SELF, owner, topic, topic_len, key, key_len);
  prefetch_lookup(state, &at);
  hark__entry *e = find_lookup(state, find_topic(state, topic, topic_len, at.topic_hash), &at);
  /* Unlinking touches the entry's neighbours in the replica's list. */
  if (e != NULL && e->replica_prev != NULL) __builtin_prefetch(e->replica_prev);
  if (e != NULL && e->replica_next != NULL) __builtin_prefetch(e->replica_next);
  return e;
}

int hark__state_join(hark__state *state, uint64_t owner, const char *topic, size_t topic_len,
                     const char *key, size_t key_len, const char *meta, size_t meta_len,
                     hark__changes *changes) {
  if (key_len > HARK__MAX_KEY_LEN) return HARK_EINVAL;
  entry_lookup at = make_lookup(SELF, owner, topic, topic_len, key, key_len);
  prefetch_lookup(state, &at);
  topic_rec *rec = find_topic(state, topic, topic_len, at.topic_hash);
  if (find_lookup(state, rec, &at)) return HARK_EALREADY;
  if (changes_reserve(changes, 1, 0) != 0) return HARK_ENOMEM;

  uint64_t counter = state->slots[SELF].context + 1;
  hark__entry *e = add_entry(state, &at, counter, rec, meta, meta_len);
  if (e == NULL) return HARK_ENOMEM;

  state->slots[SELF].context = counter;
  state->delta_values++;
  changes_add(changes, state, e, e->meta, e->meta_len, true);
  return 0;
}

/* Takes an own entry's tag out of the pending delta's values, or records it
 * as a tombstone when the entry predates the delta. */
static int tombstone_own(hark__state *state, const hark__entry *e) {
  if (e->counter > state->delta_start) {
    state->delta_values--;
    return 0;
  }
  return hark__dotset_add(&state->slots[SELF].delta_cloud, e->counter);
}

static int leave_entry(hark__state *state, hark__entry *e, hark__changes *changes) {
  if (changes_reserve(changes, 1, 0) != 0) return HARK_ENOMEM;
  if (tombstone_own(state, e) != 0) return HARK_ENOMEM;

  unlink_entry(state, e);
  state->slots[SELF].context++; /* the removal is an event of its own */
  changes_add(changes, state, e, e->meta, e->meta_len, false);
  changes_keep_entry(changes, state, e);
  return 0;
}

int hark__state_leave(hark__state *state, uint64_t owner, const char *topic, size_t topic_len,
                      const char *key, size_t key_len, hark__changes *changes) {
  hark__entry *e = find_own(state, owner, topic, topic_len, key, key_len);
  if (e == NULL) return HARK_ENOENT;
  return leave_entry(state, e, changes);
}

int hark__state_leave_join(hark__state *state, uint64_t owner, const char *topic,
                           size_t topic_len, const char *key, size_t key_len, const char *meta,
                           size_t meta_len, hark__changes *changes) {
  hark__entry *e = find_own(state, owner, topic, topic_len, key, key_len);
  if (e == NULL) return HARK_ENOENT;
  if (meta_len > UINT32_MAX) return HARK_ENOMEM;

  char *new_meta = malloc(meta_len + 1);
  if (new_meta == NULL || changes_reserve(changes, 2, 1) != 0 || tombstone_own(state, e) != 0) {
    free(new_meta);
    return HARK_ENOMEM;
  }
  if (meta_len > 0) memcpy(new_meta, meta, meta_len);
  new_meta[meta_len] = '\0';

  /* Two events: the removal of the old tag, then the addition of the new
   * one. The row is overwritten in place, so readers never miss it. */
  replica_slot *self = &state->slots[SELF];
  self->context += 2;
  change_counter(state, e, self->context);
  unlink_from_replica(state, e);
  e->replica_prev = self->tail;
  if (self->tail) self->tail->replica_next = e;
  else self->head = e;
  self->tail = e;
  state->delta_values++;

  char *old_meta = e->meta;
  size_t old_len = e->meta_len;
  e->meta = new_meta;
  e->meta_len = (uint32_t)meta_len;
  changes_add(changes, state, e, old_meta, old_len, false);
  changes_add(changes, state, e, e->meta, e->meta_len, true);
  changes_keep_meta(changes, e, old_meta);
  return 0;
}

int hark__state_leave_owner(hark__state *state, uint64_t owner, hark__changes *changes) {
  hark__entry *e = owner_head(state, SELF, owner);
  while (e != NULL) {
    hark__entry *next = e->owner_next;
    int rc = leave_entry(state, e, changes);
    if (rc != 0) return rc;
    e = next;
  }
  return 0;
}

/* ---- queries ---- */

bool hark__state_entry_visible(const hark__state *state, const hark__entry *e) {
  return state->down_count == 0 || state->slots[e->slot].status != HARK__STATUS_DOWN;
}

const hark__entry *hark__state_get_by_owner_key(const hark__state *state, hark__rref replica,
                                                uint64_t owner, const char *topic,
                                                size_t topic_len, const char *key,
                                                size_t key_len) {
  long slot = find_slot(state, replica);
  if (slot < 0) return NULL;
  uint64_t hash = hark__hash_bytes(0, topic, topic_len);
  return find_entry(state, find_topic(state, topic, topic_len, hash), (uint32_t)slot, owner, key,
                    key_len);
}

void hark__state_get_by_owner(const hark__state *state, hark__rref replica, uint64_t owner,
                              hark__entry_cb fn, void *ctx) {
  long slot = find_slot(state, replica);
  if (slot < 0) return;
  if (slot == SELF) {
    for (hark__entry *e = owner_head(state, SELF, owner); e; e = e->owner_next) fn(ctx, e);
    return;
  }

  /* Remote entries have no owner index: walk the replica's entries. */
  for (hark__entry *e = state->slots[slot].head; e; e = e->replica_next) {
    if (e->owner == owner) fn(ctx, e);
  }
}

static const topic_rec *lookup_topic(const hark__state *state, const char *topic, size_t len) {
  return find_topic(state, topic, len, hark__hash_bytes(0, topic, len));
}

void hark__state_get_by_topic(const hark__state *state, const char *topic, size_t topic_len,
                              hark__entry_cb fn, void *ctx) {
  const topic_rec *rec = lookup_topic(state, topic, topic_len);
  if (rec == NULL) return;
  for (hark__entry *e = rec->head; e; e = e->topic_next) {
    if (hark__state_entry_visible(state, e)) fn(ctx, e);
  }
}

void hark__state_get_by_key(const hark__state *state, const char *topic, size_t topic_len,
                            const char *key, size_t key_len, hark__entry_cb fn, void *ctx) {
  const topic_rec *rec = lookup_topic(state, topic, topic_len);
  if (rec == NULL) return;
  for (hark__entry *e = rec->head; e; e = e->topic_next) {
    if (e->key_len != key_len || memcmp(e->key, key, key_len) != 0) continue;
    if (hark__state_entry_visible(state, e)) fn(ctx, e);
  }
}

size_t hark__state_topic_count(const hark__state *state, const char *topic, size_t topic_len) {
  const topic_rec *rec = lookup_topic(state, topic, topic_len);
  if (rec == NULL) return 0;
  if (state->down_count == 0) return rec->live;

  size_t count = 0;
  for (hark__entry *e = rec->head; e; e = e->topic_next) count += hark__state_entry_visible(state, e);
  return count;
}

static void each_entry(const hark__state *state, bool visible_only, hark__entry_cb fn, void *ctx) {
  for (size_t i = 0; i < state->slot_count; i++) {
    const replica_slot *s = &state->slots[i];
    if (!s->live || (visible_only && s->status == HARK__STATUS_DOWN)) continue;
    for (hark__entry *e = s->head; e; e = e->replica_next) fn(ctx, e);
  }
}

void hark__state_online_list(const hark__state *state, hark__entry_cb fn, void *ctx) {
  each_entry(state, true, fn, ctx);
}

void hark__state_all_entries(const hark__state *state, hark__entry_cb fn, void *ctx) {
  each_entry(state, false, fn, ctx);
}

size_t hark__state_entry_count(const hark__state *state) {
  return state->entry_count;
}

/* ---- pending delta ---- */

bool hark__state_has_delta(const hark__state *state) {
  if (state->slots[SELF].context > state->delta_start) return true;
  for (size_t i = 0; i < state->slot_count; i++) {
    if (state->slots[i].live && state->slots[i].delta_cloud.count > 0) return true;
  }
  return false;
}

uint64_t hark__state_delta_size(const hark__state *state) {
  uint64_t size = state->delta_values + (state->slots[SELF].context - state->delta_start);
  for (size_t i = 0; i < state->slot_count; i++) {
    if (state->slots[i].live) size += hark__dotset_size(&state->slots[i].delta_cloud);
  }
  return size;
}

static int add_delta_values(const hark__state *state, hark__delta *delta) {
  const replica_slot *self = &state->slots[SELF];
  size_t count = 0, bytes = 0;
  const hark__entry *first = self->tail;
  for (const hark__entry *e = self->tail; e && e->counter > state->delta_start;
       e = e->replica_prev) {
    count++;
    bytes += e->topic->len + e->key_len + e->meta_len;
    first = e;
  }
  if (count == 0) return 0;
  if (hark__delta_reserve_values(delta, count, bytes) != 0) return -1;

  for (const hark__entry *e = first; e; e = e->replica_next) {
    if (hark__delta_add_value(delta, delta->creator, e->counter, e->owner, e->topic->name,
                              e->topic->len, e->key, e->key_len, e->meta, e->meta_len) != 0) {
      return -1;
    }
  }
  return 0;
}

hark__delta *hark__state_delta(const hark__state *state) {
  hark__delta *delta = hark__delta_new(HARK__DELTA_WINDOW, hark__state_self(state));
  if (delta == NULL) return NULL;

  const replica_slot *self = &state->slots[SELF];
  hark__delta_replica *own = &delta->replicas[delta->creator];
  own->has_start = own->has_end = true;
  own->start = state->delta_start;
  own->end = self->context;
  if (hark__dotset_copy(&own->cloud, &self->delta_cloud) != 0) goto fail;
  if (self->context > state->delta_start &&
      hark__dotset_add_range(&own->cloud, state->delta_start + 1, self->context) != 0) {
    goto fail;
  }

  for (size_t i = 1; i < state->slot_count; i++) {
    const replica_slot *s = &state->slots[i];
    if (!s->live || s->delta_cloud.count == 0) continue;
    long index = hark__delta_replica_index(delta, slot_ref(state, (uint32_t)i), true);
    if (index < 0 || hark__dotset_copy(&delta->replicas[index].cloud, &s->delta_cloud) != 0) {
      goto fail;
    }
  }
  if (add_delta_values(state, delta) != 0) goto fail;
  return delta;

fail:
  hark__delta_free(delta);
  return NULL;
}

void hark__state_reset_delta(hark__state *state) {
  state->delta_start = state->slots[SELF].context;
  state->delta_values = 0;
  for (size_t i = 0; i < state->slot_count; i++) hark__dotset_clear(&state->slots[i].delta_cloud);
}

/* ---- compaction and merge ---- */

static void compact_slot(replica_slot *s) {
  hark__dotset *cloud = &s->cloud;
  size_t drop = 0;
  while (drop < cloud->count && cloud->iv[drop].lo <= s->context + 1) {
    if (cloud->iv[drop].hi > s->context) s->context = cloud->iv[drop].hi;
    drop++;
  }
  if (drop == 0) return;
  memmove(cloud->iv, cloud->iv + drop, (cloud->count - drop) * sizeof(*cloud->iv));
  cloud->count -= drop;
}

void hark__state_compact(hark__state *state) {
  for (size_t i = 0; i < state->slot_count; i++) {
    replica_slot *s = &state->slots[i];
    if (s->live && s->in_context) compact_slot(s);
  }
}

static bool seen_locally(const hark__state *state, uint32_t slot, uint64_t counter) {
  const replica_slot *s = &state->slots[slot];
  return counter <= s->context || hark__dotset_contains(&s->cloud, counter);
}

/* Everything a merge works with, so the steps can be separate functions. */
typedef struct merge_run {
  hark__state *state;
  const hark__delta *remote;
  hark__changes *changes;
  long *slot_of;            /* remote replica index -> local slot, or -1 */
  hark__delta_index values; /* the remote's values by tag */
  size_t *joins;            /* remote value indexes that are candidate joins */
  size_t join_count;
  hark__entry **leaves; /* local entries whose removal the remote observed */
  size_t leave_count;
  size_t leave_cap;
} merge_run;

static int map_remote_replicas(merge_run *run) {
  const hark__delta *remote = run->remote;
  run->slot_of = malloc((remote->replica_count + 1) * sizeof(*run->slot_of));
  if (run->slot_of == NULL) return -1;
  for (size_t i = 0; i < remote->replica_count; i++) {
    long slot = find_slot(run->state, hark__delta_ref(remote, i));
    if (slot >= 0 && !run->state->slots[slot].in_context) slot = -1;
    run->slot_of[i] = slot;
  }
  return 0;
}

/* Step 1: the remote values whose tags are unseen here, judged against the
 * context and clouds as they were before this merge. */
static int select_joins(merge_run *run) {
  const hark__delta *remote = run->remote;
  run->joins = malloc((remote->value_count + 1) * sizeof(*run->joins));
  if (run->joins == NULL) return -1;

  for (size_t i = 0; i < remote->value_count; i++) {
    const hark__delta_value *v = &remote->values[i];
    long slot = run->slot_of[v->replica];
    /* Our own dots are always covered by our own context. */
    if (slot <= 0) continue;
    if (seen_locally(run->state, (uint32_t)slot, v->counter)) continue;
    run->joins[run->join_count++] = i;
  }
  return 0;
}

static int add_leave(merge_run *run, hark__entry *e) {
  if (run->leave_count == run->leave_cap) {
    size_t cap = run->leave_cap ? run->leave_cap * 2 : 16;
    hark__entry **grown = realloc(run->leaves, cap * sizeof(*grown));
    if (grown == NULL) return -1;
    run->leaves = grown;
    run->leave_cap = cap;
  }
  e->flags |= ENTRY_LEAVING;
  run->leaves[run->leave_count++] = e;
  return 0;
}

static bool removal_observed(const merge_run *run, long replica, const hark__entry *e) {
  if (!hark__delta_has_seen(run->remote, replica, e->counter)) return false;
  return hark__delta_index_find(&run->values, (uint32_t)replica, e->counter) < 0;
}

/* Builds the remote's tag index on first use: a merge that can observe no
 * removal (the common case for a new replica's extract) never needs it. */
static int need_value_index(merge_run *run) {
  if (run->values.slots != NULL) return 0;
  return hark__delta_index_build(&run->values, run->remote);
}

/* Step 2: the local entries of the remote's replicas that the remote has seen
 * but no longer contains. Only replicas named by the remote can qualify, and for
 * each one the smaller side is walked: the remote's dots (a window delta) or
 * the local entries of that replica. */
static int select_leaves(merge_run *run) {
  const hark__delta *remote = run->remote;
  for (size_t i = 0; i < remote->replica_count; i++) {
    long slot = run->slot_of[i];
    if (slot <= 0) continue;
    const replica_slot *s = &run->state->slots[slot];
    const hark__delta_replica *r = &remote->replicas[i];
    if (s->entry_count == 0 || (!r->has_context && r->cloud.count == 0)) continue;
    if (need_value_index(run) != 0) return -1;

    if (!r->has_context && hark__dotset_size(&r->cloud) < s->entry_count) {
      for (size_t k = 0; k < r->cloud.count; k++) {
        for (uint64_t n = r->cloud.iv[k].lo; n <= r->cloud.iv[k].hi; n++) {
          hark__entry *e = find_by_tag(run->state, (uint32_t)slot, n);
          if (e && removal_observed(run, (long)i, e) && add_leave(run, e) != 0) return -1;
        }
      }
      continue;
    }
    for (hark__entry *e = s->head; e; e = e->replica_next) {
      if (removal_observed(run, (long)i, e) && add_leave(run, e) != 0) return -1;
    }
  }
  return 0;
}

/* Step 3: puts the removed tags into our pending delta, so that we relay the
 * removals. Then folds in the remote's clouds, and its context for an extract. */
static int fold_remote_knowledge(merge_run *run) {
  hark__state *state = run->state;
  for (size_t i = 0; i < run->leave_count; i++) {
    const hark__entry *e = run->leaves[i];
    if (hark__dotset_add(&state->slots[e->slot].delta_cloud, e->counter) != 0) return -1;
  }

  const hark__delta *remote = run->remote;
  for (size_t i = 0; i < remote->replica_count; i++) {
    long slot = run->slot_of[i];
    if (slot <= 0) continue;
    replica_slot *s = &state->slots[slot];
    const hark__delta_replica *r = &remote->replicas[i];
    if (hark__dotset_union(&s->cloud, &r->cloud) != 0) return -1;
    if (r->has_context && r->context > s->context) s->context = r->context;
  }
  return 0;
}

/* The change list for a merged change to an entry of `slot`: none while
 * that replica is down. Its entries are hidden then, so a change to one is
 * not a change of what list returns. Their leaves were reported when it
 * went down, and replica_up reports them as joins when it comes back. */
static hark__changes *changes_for(const merge_run *run, uint32_t slot) {
  return run->state->slots[slot].status == HARK__STATUS_DOWN ? NULL : run->changes;
}

/* Overwrites `e` in place with a newer remote value: readers never see the
 * entry missing. The old meta is reported as a leave. */
static int overwrite_entry(merge_run *run, hark__entry *e, const hark__value_view *v) {
  char *meta = malloc(v->meta_len + 1);
  if (meta == NULL || v->meta_len > UINT32_MAX) {
    free(meta);
    return -1;
  }
  if (v->meta_len > 0) memcpy(meta, v->meta, v->meta_len);
  meta[v->meta_len] = '\0';

  char *old_meta = e->meta;
  size_t old_len = e->meta_len;
  change_counter(run->state, e, v->counter);
  e->meta = meta;
  e->meta_len = (uint32_t)v->meta_len;
  /* Only a leave's flags are cleared at the end of the merge. A stale flag on
   * any other entry would make a later merge skip its observed remove, and
   * the entry would stay forever. */
  if (e->flags & ENTRY_LEAVING) e->flags |= ENTRY_REPLACED;
  hark__changes *changes = changes_for(run, e->slot);
  changes_add(changes, run->state, e, old_meta, old_len, false);
  changes_add(changes, run->state, e, e->meta, e->meta_len, true);
  changes_keep_meta(changes, e, old_meta);
  return 0;
}

static void prefetch_table(const hark__table *table, uint32_t hash) {
  hark__table_prefetch(table, hash);
}

/* Computes the lookup of join `j` and starts loading the table slots that
 * it will probe. The tables are far larger than the cache, so each probe is
 * otherwise a memory stall. */
static void prepare_join(const merge_run *run, size_t j, entry_lookup *at) {
  const hark__state *state = run->state;
  hark__value_view v;
  hark__delta_value_at(run->remote, run->joins[j], &v);
  uint32_t slot = (uint32_t)run->slot_of[run->remote->values[run->joins[j]].replica];
  *at = make_lookup(slot, v.owner, v.topic, v.topic_len, v.key, v.key_len);
  prefetch_table(&state->topics, topic_hash32(at->topic_hash));
  prefetch_table(&state->by_key, at->key_hash);
  prefetch_table(&state->by_tag, tag_hash(slot, v.counter));
}

/* Starts loading the topic record that join `at` will compare, once its
 * table slot has had time to arrive. */
static void prefetch_join_topic(const merge_run *run, const entry_lookup *at) {
  const hark__table *topics = &run->state->topics;
  hark__table_iter it = hark__table_probe(topics, topic_hash32(at->topic_hash));
  const topic_rec *rec = hark__table_next(topics, &it);
  if (rec != NULL) {
    __builtin_prefetch(rec);
    __builtin_prefetch(&rec->tail);
  }
}

/* The lookups of the next joins are computed PREFETCH_DISTANCE joins ahead
 * and kept in a ring, so each join's hashes are computed once. */
#define PREFETCH_DISTANCE 8
#define TOPIC_PREFETCH_DISTANCE 4

/* Step 4: adds the joins. A join for a (topic, owner, key) that is already
 * stored replaces it when newer, and is dropped when older: the newer value
 * of one replica's entry always wins, whatever order data arrives in. */
static int apply_join(merge_run *run, size_t j, const entry_lookup *at) {
  hark__state *state = run->state;
  hark__value_view v;
  hark__delta_value_at(run->remote, run->joins[j], &v);
  if (v.key_len > HARK__MAX_KEY_LEN) return 0;
  topic_rec *rec = find_topic(state, v.topic, v.topic_len, at->topic_hash);
  hark__entry *existing = find_lookup(state, rec, at);

  if (existing != NULL) {
    if (existing->counter >= v.counter) return 0;
    return overwrite_entry(run, existing, &v);
  }
  hark__entry *e = add_entry(state, at, v.counter, rec, v.meta, v.meta_len);
  if (e == NULL) return -1;
  changes_add(changes_for(run, at->slot), state, e, e->meta, e->meta_len, true);
  return 0;
}

static int apply_joins(merge_run *run) {
  hark__state *state = run->state;
  /* Merged entries are never our own, so by_owner needs no room. */
  if (reserve_tables(state, run->join_count, SELF + 1) != 0) return -1;

  entry_lookup ring[PREFETCH_DISTANCE];
  size_t count = run->join_count;
  for (size_t j = 0; j < count && j < PREFETCH_DISTANCE; j++) prepare_join(run, j, &ring[j]);

  for (size_t j = 0; j < count; j++) {
    size_t ahead = j + TOPIC_PREFETCH_DISTANCE;
    if (ahead < count) prefetch_join_topic(run, &ring[ahead % PREFETCH_DISTANCE]);
    entry_lookup at = ring[j % PREFETCH_DISTANCE];
    if (j + PREFETCH_DISTANCE < count) {
      prepare_join(run, j + PREFETCH_DISTANCE, &ring[j % PREFETCH_DISTANCE]);
    }
    if (apply_join(run, j, &at) != 0) return -1;
  }
  return 0;
}

/* Step 5: removes the observed removes that no join replaced. */
static void apply_leaves(merge_run *run) {
  for (size_t i = 0; i < run->leave_count; i++) {
    hark__entry *e = run->leaves[i];
    bool replaced = e->flags & ENTRY_REPLACED;
    e->flags = 0;
    if (replaced) continue;
    hark__changes *changes = changes_for(run, e->slot);
    unlink_entry(run->state, e);
    changes_add(changes, run->state, e, e->meta, e->meta_len, false);
    changes_keep_entry(changes, run->state, e);
  }
}

int hark__state_merge(hark__state *state, const hark__delta *remote, hark__changes *changes) {
  merge_run run = {.state = state, .remote = remote, .changes = changes};
  int rc = HARK_ENOMEM;

  if (map_remote_replicas(&run) != 0 || select_joins(&run) != 0 || select_leaves(&run) != 0) {
    goto done;
  }
  /* Room for a leave and a join per candidate, so changes_add below never
   * needs to grow the list. */
  if (changes_reserve(changes, 2 * (run.join_count + run.leave_count), run.join_count) != 0 ||
      fold_remote_knowledge(&run) != 0) {
    goto done;
  }
  if (apply_joins(&run) == 0) rc = 0;
  apply_leaves(&run);
  /* apply_leaves cleared every leave's flags, and without a change list it
   * freed the entries, so the cleanup below must not touch them. */
  run.leave_count = 0;
  hark__state_compact(state);

done:
  for (size_t i = 0; i < run.leave_count; i++) run.leaves[i]->flags = 0;
  free(run.slot_of);
  free(run.joins);
  free(run.leaves);
  hark__delta_index_free(&run.values);
  return rc;
}

/* ---- extract ---- */

static int add_slot_values(const hark__state *state, uint32_t slot, hark__delta *delta,
                           uint32_t index) {
  const replica_slot *s = &state->slots[slot];
  /* One pass over the entries: reserve the count and a guess of the bytes,
   * and let the arena grow when the guess is short. */
  if (hark__delta_reserve_values(delta, s->entry_count, s->entry_count * 64) != 0) return -1;

  for (const hark__entry *e = s->head; e; e = e->replica_next) {
    if (hark__delta_add_value(delta, index, e->counter, e->owner, e->topic->name, e->topic->len,
                              e->key, e->key_len, e->meta, e->meta_len) != 0) {
      return -1;
    }
  }
  return 0;
}

hark__delta *hark__state_extract(const hark__state *state, hark__rref remote_ref,
                                 const hark__clock *remote_clock) {
  hark__delta *delta = hark__delta_new(HARK__DELTA_FULL, hark__state_self(state));
  if (delta == NULL) return NULL;

  for (size_t i = 0; i < state->slot_count; i++) {
    const replica_slot *s = &state->slots[i];
    hark__rref ref = slot_ref(state, (uint32_t)i);
    if (!s->live || !s->in_context || !hark__clock_get(remote_clock, ref, NULL)) continue;

    long index = hark__delta_replica_index(delta, ref, true);
    if (index < 0) goto fail;
    hark__delta_replica *r = &delta->replicas[index];
    r->has_context = true;
    r->context = s->context;
    if (hark__dotset_copy(&r->cloud, &s->cloud) != 0) goto fail;

    /* The requester has its own entries already. */
    if (hark__rref_equal(ref, remote_ref)) continue;
    if (add_slot_values(state, (uint32_t)i, delta, (uint32_t)index) != 0) goto fail;
  }
  return delta;

fail:
  hark__delta_free(delta);
  return NULL;
}

/* ---- replica status ---- */

static int report_slot(hark__state *state, uint32_t slot, bool join, hark__changes *changes) {
  replica_slot *s = &state->slots[slot];
  if (changes_reserve(changes, s->entry_count, 0) != 0) return HARK_ENOMEM;
  for (hark__entry *e = s->head; e; e = e->replica_next) {
    changes_add(changes, state, e, e->meta, e->meta_len, join);
  }
  return 0;
}

static void set_status(hark__state *state, replica_slot *s, hark__status status) {
  if (s->status == HARK__STATUS_DOWN) state->down_count--;
  if (status == HARK__STATUS_DOWN) state->down_count++;
  s->status = status;
}

int hark__state_replica_up(hark__state *state, hark__rref ref, hark__changes *changes) {
  long slot = find_slot(state, ref);
  if (slot < 0) slot = add_slot(state, ref);
  if (slot < 0) return HARK_ENOMEM;

  replica_slot *s = &state->slots[slot];
  if (changes_reserve(changes, s->entry_count, 0) != 0) return HARK_ENOMEM;
  if (!s->in_context) {
    s->in_context = true;
    s->context = 0;
  }
  set_status(state, s, HARK__STATUS_UP);
  return report_slot(state, (uint32_t)slot, true, changes);
}

int hark__state_replica_down(hark__state *state, hark__rref ref, hark__changes *changes) {
  long slot = find_slot(state, ref);
  if (slot < 0) slot = add_slot(state, ref);
  if (slot < 0) return HARK_ENOMEM;

  replica_slot *s = &state->slots[slot];
  if (changes_reserve(changes, s->entry_count, 0) != 0) return HARK_ENOMEM;
  set_status(state, s, HARK__STATUS_DOWN);
  return report_slot(state, (uint32_t)slot, false, changes);
}

/* Starts loading the entry's neighbours and table slots that unlink_entry
 * touches (only the lists' lines when `lists_only`), except the topic table
 * slot, which needs the topic record loaded first (see prefetch_topic_slot). */
static void prefetch_unlink(const hark__state *state, const hark__entry *e, bool lists_only) {
  __builtin_prefetch(e->topic);
  if (e->topic_prev) __builtin_prefetch(e->topic_prev);
  if (e->topic_next) __builtin_prefetch(e->topic_next);
  if (lists_only) return;
  hark__table_prefetch(&state->by_key, e->key_hash);
  if (e->slot != SELF) hark__table_prefetch(&state->by_tag, tag_hash(e->slot, e->counter));
  if (e->slot == SELF) hark__table_prefetch(&state->by_owner, owner_hash(e->slot, e->owner));
}

static void prefetch_topic_slot(const hark__state *state, const hark__entry *e) {
  hark__table_prefetch(&state->topics, topic_hash32(e->topic->hash));
}

static hark__entry *advance(hark__entry *e, size_t steps) {
  while (e != NULL && steps-- > 0) e = e->replica_next;
  return e;
}

#define UNLINK_PREFETCH_DISTANCE 16

/* Unlinks and frees every entry of `slot`. The tables are far larger than
 * the cache, so each entry's lines are prefetched a few entries ahead: `far`
 * loads the entry's own lines, `near` then the topic table slot.
 *
 * When the replica has at least an eighth of the entries, its by_key and
 * by_tag slots are dropped afterwards in one sequential pass per table
 * (hark__table_remove_group), which is cheaper than that many random
 * removals with backward shifts. */
static void free_slot_entries_linked(hark__state *state, uint32_t slot) {
  replica_slot *s = &state->slots[slot];
  bool by_group = s->entry_count * 8 >= state->by_key.count;
  hark__entry *near = advance(s->head, UNLINK_PREFETCH_DISTANCE / 2);
  hark__entry *far = advance(near, UNLINK_PREFETCH_DISTANCE / 2);
  while (s->head != NULL) {
    if (far != NULL) {
      prefetch_unlink(state, far, by_group);
      far = far->replica_next;
    }
    if (near != NULL) {
      prefetch_topic_slot(state, near);
      near = near->replica_next;
    }
    hark__entry *e = s->head;
    if (by_group) unlink_entry_lists(state, e);
    else unlink_entry(state, e);
    free_entry(state->pool, e);
  }
  if (by_group) {
    hark__table_remove_group(&state->by_key, slot);
    hark__table_remove_group(&state->by_tag, slot);
  }
}

void hark__state_remove_down_replicas(hark__state *state, hark__rref ref) {
  long slot = find_slot(state, ref);
  if (slot <= 0) return; /* unknown, or ourselves */

  free_slot_entries_linked(state, (uint32_t)slot);
  replica_slot *s = &state->slots[slot];
  set_status(state, s, HARK__STATUS_NONE);
  free(s->name);
  hark__dotset_free(&s->cloud);
  hark__dotset_free(&s->delta_cloud);
  *s = (replica_slot){0};
}

hark__status hark__state_replica_status(const hark__state *state, hark__rref ref) {
  long slot = find_slot(state, ref);
  return slot < 0 ? HARK__STATUS_NONE : state->slots[slot].status;
}

int hark__state_down_replicas(const hark__state *state, hark__clock *out) {
  hark__clock clock = {0};
  for (size_t i = 0; i < state->slot_count; i++) {
    const replica_slot *s = &state->slots[i];
    if (!s->live || s->status != HARK__STATUS_DOWN) continue;
    if (hark__clock_set(&clock, slot_ref(state, (uint32_t)i), s->context) != 0) {
      hark__clock_free(&clock);
      return -1;
    }
  }
  hark__clock_free(out);
  *out = clock;
  return 0;
}

static int context_clock(const hark__state *state, bool skip_down, hark__clock *out) {
  hark__clock clock = {0};
  for (size_t i = 0; i < state->slot_count; i++) {
    const replica_slot *s = &state->slots[i];
    if (!s->live || !s->in_context) continue;
    if (skip_down && s->status == HARK__STATUS_DOWN) continue;
    if (hark__clock_set(&clock, slot_ref(state, (uint32_t)i), s->context) != 0) {
      hark__clock_free(&clock);
      return -1;
    }
  }
  hark__clock_free(out);
  *out = clock;
  return 0;
}

int hark__state_context(const hark__state *state, hark__clock *out) {
  return context_clock(state, false, out);
}

int hark__state_clocks(const hark__state *state, hark__clock *out) {
  return context_clock(state, true, out);
}

const hark__dotset *hark__state_cloud(const hark__state *state, hark__rref ref) {
  long slot = find_slot(state, ref);
  if (slot < 0 || !state->slots[slot].in_context) return NULL;
  return &state->slots[slot].cloud;
}

/* ---- self-check ---- */

const char *hark__state_check_indexes(const hark__state *state) {
  for (size_t s = 0; s < state->slot_count; s++) {
    const replica_slot *slot = &state->slots[s];
    for (const hark__entry *e = slot->head; e != NULL; e = e->replica_next) {
      if (e->slot != s) return "an entry sits in another replica's list";
      if (find_entry(state, e->topic, e->slot, e->owner, e->key, e->key_len) != e) {
        return "an entry is missing from by_key";
      }
      if (e->slot != SELF && find_by_tag(state, e->slot, e->counter) != e) {
        return "an entry is missing from by_tag";
      }
      if (e->slot == SELF) {
        const hark__entry *head = owner_head(state, e->slot, e->owner);
        const hark__entry *p = head;
        while (p != NULL && p != e) p = p->owner_next;
        if (p == NULL) return "an own entry is missing from its owner's chain";
      }
    }
  }
  return NULL;
}
