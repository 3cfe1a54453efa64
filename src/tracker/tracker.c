/* The local tracker API: routes each topic to its shard, stamps metas with
 * phx_ref and phx_ref_prev, applies the change to the shard's CRDT state and
 * reports it to the diff callback. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/json.h"
#include "hark/tracker.h"
#include "tracker/meta.h"
#include "tracker/shard.h"
#include "tracker/table.h"

struct hark_tracker {
  char *node_name;
  size_t node_name_len;
  unsigned pool_size;
  hark__shard *shards; /* pool_size shards; never moved after creation */
  hark_tracker_diff_fn on_diff;
  void *ctx;
  uint64_t (*now_ns)(void *clock_ctx);
  void *clock_ctx;
  uint64_t ref_counter; /* its low 16 bits go into each phx_ref */
};

static uint64_t wall_clock_ns(void *unused) {
  (void)unused;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

int hark_tracker_create(hark_tracker **out, const hark_tracker_options *options) {
  if (out == NULL || options == NULL || options->node_name == NULL || options->node_name[0] == 0) {
    return HARK_EINVAL;
  }
  hark_tracker *t = calloc(1, sizeof(*t));
  if (t == NULL) return HARK_ENOMEM;

  t->node_name_len = strlen(options->node_name);
  t->node_name = malloc(t->node_name_len + 1);
  t->pool_size = options->pool_size ? options->pool_size : 1;
  t->shards = calloc(t->pool_size, sizeof(*t->shards));
  t->on_diff = options->on_diff;
  t->ctx = options->ctx;
  t->now_ns = options->now_ns ? options->now_ns : wall_clock_ns;
  t->clock_ctx = options->clock_ctx;
  if (t->node_name == NULL || t->shards == NULL) goto fail;
  memcpy(t->node_name, options->node_name, t->node_name_len + 1);

  /* vsn: wall-clock microseconds plus a number unique within this tracker,
   * so that a restarted node is a new replica for its peers. */
  uint64_t now_us = t->now_ns(t->clock_ctx) / 1000;
  for (unsigned i = 0; i < t->pool_size; i++) {
    if (hark__shard_init(&t->shards[i], t->node_name, t->node_name_len, i, now_us + i + 1) != 0) {
      goto fail;
    }
  }
  *out = t;
  return 0;

fail:
  hark_tracker_destroy(t);
  return HARK_ENOMEM;
}

void hark_tracker_destroy(hark_tracker *tracker) {
  if (tracker == NULL) return;
  if (tracker->shards != NULL) {
    for (unsigned i = 0; i < tracker->pool_size; i++) hark__shard_destroy(&tracker->shards[i]);
  }
  free(tracker->shards);
  free(tracker->node_name);
  free(tracker);
}

unsigned hark_tracker_pool_size(const hark_tracker *tracker) {
  return tracker->pool_size;
}

hark__shard *hark__tracker_shard(hark_tracker *tracker, unsigned index) {
  return index < tracker->pool_size ? &tracker->shards[index] : NULL;
}

static hark__shard *shard_of(hark_tracker *tracker, const char *topic, size_t topic_len) {
  return &tracker->shards[hark__shard_for_topic(topic, topic_len, tracker->pool_size)];
}

/* ---- phx_ref and metas ---- */

static const char base64url[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* A phx_ref: 64-bit wall-clock nanoseconds, the shard's 16-bit hash and the
 * low 16 bits of the tracker's counter, big-endian, as 16 characters of
 * URL-safe base64 (12 bytes need no padding). */
static void make_ref(hark_tracker *tracker, const hark__shard *shard,
                     char ref[HARK_TRACKER_REF_SIZE]) {
  uint64_t ns = tracker->now_ns(tracker->clock_ctx);
  uint16_t counter = (uint16_t)++tracker->ref_counter;
  unsigned char raw[12];
  for (int i = 0; i < 8; i++) raw[i] = (unsigned char)(ns >> (56 - 8 * i));
  raw[8] = (unsigned char)(shard->ref_hash >> 8);
  raw[9] = (unsigned char)shard->ref_hash;
  raw[10] = (unsigned char)(counter >> 8);
  raw[11] = (unsigned char)counter;

  for (int i = 0; i < 4; i++) {
    uint32_t group = (uint32_t)raw[3 * i] << 16 | (uint32_t)raw[3 * i + 1] << 8 | raw[3 * i + 2];
    ref[4 * i] = base64url[(group >> 18) & 63];
    ref[4 * i + 1] = base64url[(group >> 12) & 63];
    ref[4 * i + 2] = base64url[(group >> 6) & 63];
    ref[4 * i + 3] = base64url[group & 63];
  }
  ref[16] = '\0';
}

/* The stored meta of one operation. It lives in `local` when it fits, so
 * that a typical track does not allocate; the state copies it. */
typedef struct stamped_meta {
  char *text; /* `local` or a malloc'd block, freed by stamped_meta_free */
  size_t len;
  char local[256];
} stamped_meta;

/* Stamps `meta` with `ref` (and `prev` when not NULL) into *out. Returns 0,
 * HARK_EINVAL (not a JSON object; see hark__meta_stamp) or HARK_ENOMEM. */
static int stamp_meta(const char *meta, size_t len, const char *ref, const char *prev,
                      stamped_meta *out) {
  if (meta == NULL) len = 0;
  out->text = out->local;
  if (len > sizeof(out->local) - HARK__META_STAMP_EXTRA) {
    if (len > SIZE_MAX - HARK__META_STAMP_EXTRA) return HARK_ENOMEM;
    out->text = malloc(len + HARK__META_STAMP_EXTRA);
    if (out->text == NULL) return HARK_ENOMEM;
  }

  int rc = hark__meta_stamp(meta, len, ref, prev, out->text, &out->len);
  if (rc != 0 && out->text != out->local) free(out->text);
  return rc;
}

static void stamped_meta_free(stamped_meta *stamped) {
  if (stamped->text != stamped->local) free(stamped->text);
}

/* ---- diff reporting ---- */

/* The changes of one topic, in the order the topics first appear. */
typedef struct topic_group {
  const char *topic;
  size_t topic_len;
  size_t joins;  /* count, then offset into the joins array */
  size_t leaves; /* count, then offset into the leaves array */
  size_t join_fill;
  size_t leave_fill;
} topic_group;

static hark_tracker_entry entry_of(const hark__entry_view *view) {
  hark_tracker_entry entry = {view->owner, view->key, view->key_len, view->meta, view->meta_len};
  return entry;
}

/* Assigns each change to a group; group_of[i] receives the group index. */
static size_t group_changes(const hark__changes *changes, topic_group *groups, size_t *group_of,
                            hark__table *by_topic) {
  size_t count = 0;
  for (size_t i = 0; i < changes->count; i++) {
    hark__entry_view view;
    hark__change_view(changes, i, &view);
    uint32_t hash = (uint32_t)hark__hash_bytes(0, view.topic, view.topic_len);

    hark__table_iter it = hark__table_probe(by_topic, hash);
    topic_group *group;
    while ((group = hark__table_next(by_topic, &it)) != NULL) {
      if (group->topic_len == view.topic_len &&
          memcmp(group->topic, view.topic, view.topic_len) == 0) {
        break;
      }
    }
    if (group == NULL) {
      group = &groups[count++];
      *group = (topic_group){.topic = view.topic, .topic_len = view.topic_len};
      hark__table_insert(by_topic, hash, group); /* reserved by the caller */
    }
    if (changes->items[i].join) group->joins++;
    else group->leaves++;
    group_of[i] = (size_t)(group - groups);
  }
  return count;
}

/* NOTE: the entries passed to on_diff point into the shard's state, so the
 * callback may read the tracker but must not change it: a track or untrack
 * from inside the callback could free entries of the topics reported after
 * it. */
void hark__tracker_report(hark_tracker *tracker, const hark__changes *changes) {
  if (tracker->on_diff == NULL || changes->count == 0) return;

  size_t n = changes->count;
  topic_group *groups = malloc(n * sizeof(*groups));
  size_t *group_of = malloc(n * sizeof(*group_of));
  hark_tracker_entry *joins = malloc(n * sizeof(*joins));
  hark_tracker_entry *leaves = malloc(n * sizeof(*leaves));
  hark__table by_topic = {0};
  if (!groups || !group_of || !joins || !leaves || hark__table_reserve(&by_topic, n) != 0) {
    /* NOTE: when memory runs out here the diff is lost; the state change
     * itself has been applied. */
    goto done;
  }

  size_t group_count = group_changes(changes, groups, group_of, &by_topic);
  size_t join_at = 0, leave_at = 0;
  for (size_t g = 0; g < group_count; g++) {
    size_t j = groups[g].joins, l = groups[g].leaves;
    groups[g].joins = groups[g].join_fill = join_at;
    groups[g].leaves = groups[g].leave_fill = leave_at;
    join_at += j;
    leave_at += l;
  }
  for (size_t i = 0; i < n; i++) {
    hark__entry_view view;
    hark__change_view(changes, i, &view);
    topic_group *group = &groups[group_of[i]];
    if (changes->items[i].join) joins[group->join_fill++] = entry_of(&view);
    else leaves[group->leave_fill++] = entry_of(&view);
  }
  for (size_t g = 0; g < group_count; g++) {
    topic_group *group = &groups[g];
    tracker->on_diff(tracker->ctx, group->topic, group->topic_len, joins + group->joins,
                     group->join_fill - group->joins, leaves + group->leaves,
                     group->leave_fill - group->leaves);
  }

done:
  hark__table_free(&by_topic);
  free(groups);
  free(group_of);
  free(joins);
  free(leaves);
}

/* ---- operations ---- */

static uint64_t owner_id(const hark_subscriber *owner) {
  return (uint64_t)(uintptr_t)owner;
}

static bool valid_bytes(const char *data, size_t len) {
  return data != NULL || len == 0;
}

static void copy_ref(char *out, const char *ref) {
  if (out != NULL) memcpy(out, ref, HARK_TRACKER_REF_SIZE);
}

/* The state call that stores a meta: hark__state_join or
 * hark__state_leave_join, which share this signature. */
typedef int (*store_fn)(hark__state *state, uint64_t owner, const char *topic, size_t topic_len,
                        const char *key, size_t key_len, const char *meta, size_t meta_len,
                        hark__changes *changes);

/* Stamps `meta` with a new phx_ref (and `prev_ref` when not NULL), stores it
 * with `store`, reports the diff and copies the new ref into `ref`. */
static int store_meta(hark_tracker *tracker, hark__shard *shard, store_fn store,
                      const hark_subscriber *owner, const char *topic, size_t topic_len,
                      const char *key, size_t key_len, const char *meta, size_t meta_len,
                      const char *prev_ref, char ref[HARK_TRACKER_REF_SIZE]) {
  char new_ref[HARK_TRACKER_REF_SIZE];
  make_ref(tracker, shard, new_ref);
  stamped_meta stamped;
  int rc = stamp_meta(meta, meta_len, new_ref, prev_ref, &stamped);
  if (rc != 0) return rc;

  hark__changes changes = {0};
  rc = store(shard->state, owner_id(owner), topic, topic_len, key, key_len, stamped.text,
             stamped.len, &changes);
  stamped_meta_free(&stamped);
  if (rc == 0) {
    hark__tracker_report(tracker, &changes);
    copy_ref(ref, new_ref);
  }
  hark__changes_clear(&changes);
  return rc;
}

int hark_tracker_track(hark_tracker *tracker, const hark_subscriber *owner, const char *topic,
                       size_t topic_len, const char *key, size_t key_len, const char *meta,
                       size_t meta_len, char ref[HARK_TRACKER_REF_SIZE]) {
  if (tracker == NULL || owner == NULL || !valid_bytes(topic, topic_len) ||
      !valid_bytes(key, key_len)) {
    return HARK_EINVAL;
  }
  hark__shard *shard = shard_of(tracker, topic, topic_len);
  hark__rref self = hark__state_self(shard->state);
  if (hark__state_get_by_owner_key(shard->state, self, owner_id(owner), topic, topic_len, key,
                                   key_len) != NULL) {
    return HARK_EALREADY;
  }

  return store_meta(tracker, shard, hark__state_join, owner, topic, topic_len, key, key_len, meta,
                    meta_len, NULL, ref);
}

void hark_tracker_untrack(hark_tracker *tracker, const hark_subscriber *owner, const char *topic,
                          size_t topic_len, const char *key, size_t key_len) {
  if (tracker == NULL || owner == NULL || !valid_bytes(topic, topic_len) ||
      !valid_bytes(key, key_len)) {
    return;
  }
  hark__shard *shard = shard_of(tracker, topic, topic_len);
  hark__changes changes = {0};
  if (hark__state_leave(shard->state, owner_id(owner), topic, topic_len, key, key_len,
                        &changes) == 0) {
    hark__tracker_report(tracker, &changes);
  }
  hark__changes_clear(&changes);
}

void hark_tracker_untrack_all(hark_tracker *tracker, const hark_subscriber *owner) {
  if (tracker == NULL || owner == NULL) return;
  for (unsigned i = 0; i < tracker->pool_size; i++) {
    hark__changes changes = {0};
    /* NOTE: out of memory can stop this shard's removal part way; the entries
     * removed so far are reported. */
    hark__state_leave_owner(tracker->shards[i].state, owner_id(owner), &changes);
    hark__tracker_report(tracker, &changes);
    hark__changes_clear(&changes);
  }
}

/* Copies the phx_ref of a stored meta into `out`; empty when it has none. */
static void stored_ref(const hark__entry_view *view, char out[HARK_TRACKER_REF_SIZE]) {
  const char *value;
  size_t len;
  out[0] = '\0';
  if (hark_json_object_get(view->meta, view->meta_len, "phx_ref", &value, &len) != 1) return;
  if (len < 2 || value[0] != '"' || len - 2 >= HARK_TRACKER_REF_SIZE) return;
  memcpy(out, value + 1, len - 2);
  out[len - 2] = '\0';
}

int hark_tracker_update(hark_tracker *tracker, const hark_subscriber *owner, const char *topic,
                        size_t topic_len, const char *key, size_t key_len, const char *meta,
                        size_t meta_len, char ref[HARK_TRACKER_REF_SIZE]) {
  if (tracker == NULL || owner == NULL || !valid_bytes(topic, topic_len) ||
      !valid_bytes(key, key_len)) {
    return HARK_EINVAL;
  }
  hark__shard *shard = shard_of(tracker, topic, topic_len);
  const hark__entry *entry = hark__state_get_by_owner_key(
      shard->state, hark__state_self(shard->state), owner_id(owner), topic, topic_len, key,
      key_len);
  if (entry == NULL) return HARK_ENOENT;

  hark__entry_view old;
  hark__entry_view_of(shard->state, entry, &old);
  char prev_ref[HARK_TRACKER_REF_SIZE];
  stored_ref(&old, prev_ref);

  return store_meta(tracker, shard, hark__state_leave_join, owner, topic, topic_len, key, key_len,
                    meta, meta_len, prev_ref, ref);
}

/* ---- reads ---- */

typedef struct entry_list {
  const hark__entry **items;
  size_t count;
  size_t cap;
  bool failed;
} entry_list;

static void collect(void *ctx, const hark__entry *entry) {
  entry_list *list = ctx;
  if (list->count == list->cap) {
    size_t cap = list->cap ? list->cap * 2 : 16;
    const hark__entry **grown = realloc(list->items, cap * sizeof(*grown));
    if (grown == NULL) {
      list->failed = true;
      return;
    }
    list->items = grown;
    list->cap = cap;
  }
  list->items[list->count++] = entry;
}

typedef struct key_group {
  const char *key;
  size_t key_len;
  size_t count; /* entries, then the next output position */
} key_group;

/* Orders `list` by key, keys in order of first appearance, keeping the
 * tracking order within a key (a stable counting sort). */
static int group_by_key(const hark__state *state, entry_list *list) {
  size_t n = list->count;
  key_group *groups = malloc(n * sizeof(*groups));
  size_t *group_of = malloc(n * sizeof(*group_of));
  const hark__entry **sorted = malloc(n * sizeof(*sorted));
  hark__table by_key = {0};
  int rc = -1;
  if (!groups || !group_of || !sorted || hark__table_reserve(&by_key, n) != 0) goto done;

  size_t group_count = 0;
  for (size_t i = 0; i < n; i++) {
    hark__entry_view view;
    hark__entry_view_of(state, list->items[i], &view);
    uint32_t hash = (uint32_t)hark__hash_bytes(0, view.key, view.key_len);
    hark__table_iter it = hark__table_probe(&by_key, hash);
    key_group *group;
    while ((group = hark__table_next(&by_key, &it)) != NULL) {
      if (group->key_len == view.key_len && memcmp(group->key, view.key, view.key_len) == 0) break;
    }
    if (group == NULL) {
      group = &groups[group_count++];
      *group = (key_group){view.key, view.key_len, 0};
      hark__table_insert(&by_key, hash, group);
    }
    group->count++;
    group_of[i] = (size_t)(group - groups);
  }

  size_t at = 0;
  for (size_t g = 0; g < group_count; g++) {
    size_t count = groups[g].count;
    groups[g].count = at;
    at += count;
  }
  for (size_t i = 0; i < n; i++) sorted[groups[group_of[i]].count++] = list->items[i];
  memcpy(list->items, sorted, n * sizeof(*sorted));
  rc = 0;

done:
  hark__table_free(&by_key);
  free(groups);
  free(group_of);
  free(sorted);
  return rc;
}

static void emit(const hark__state *state, const hark__entry *entry, hark_tracker_entry_fn fn,
                 void *ctx) {
  hark__entry_view view;
  hark__entry_view_of(state, entry, &view);
  hark_tracker_entry out = entry_of(&view);
  fn(ctx, &out);
}

void hark_tracker_list(hark_tracker *tracker, const char *topic, size_t topic_len,
                       hark_tracker_entry_fn fn, void *ctx) {
  if (tracker == NULL || fn == NULL || !valid_bytes(topic, topic_len)) return;
  const hark__state *state = shard_of(tracker, topic, topic_len)->state;

  entry_list list = {0};
  hark__state_get_by_topic(state, topic, topic_len, collect, &list);
  /* Two or fewer entries are grouped whatever their keys. NOTE: when memory
   * runs out, the list may be incomplete or in plain tracking order. */
  if (!list.failed && list.count > 2) group_by_key(state, &list);
  for (size_t i = 0; i < list.count; i++) emit(state, list.items[i], fn, ctx);
  free(list.items);
}

typedef struct emit_ctx {
  const hark__state *state;
  hark_tracker_entry_fn fn;
  void *ctx;
} emit_ctx;

static void emit_each(void *ctx, const hark__entry *entry) {
  emit_ctx *e = ctx;
  emit(e->state, entry, e->fn, e->ctx);
}

void hark_tracker_get_by_key(hark_tracker *tracker, const char *topic, size_t topic_len,
                             const char *key, size_t key_len, hark_tracker_entry_fn fn,
                             void *ctx) {
  if (tracker == NULL || fn == NULL || !valid_bytes(topic, topic_len) ||
      !valid_bytes(key, key_len)) {
    return;
  }
  emit_ctx e = {shard_of(tracker, topic, topic_len)->state, fn, ctx};
  hark__state_get_by_key(e.state, topic, topic_len, key, key_len, emit_each, &e);
}

size_t hark_tracker_count(hark_tracker *tracker, const char *topic, size_t topic_len) {
  if (tracker == NULL || !valid_bytes(topic, topic_len)) return 0;
  return hark__state_topic_count(shard_of(tracker, topic, topic_len)->state, topic, topic_len);
}
