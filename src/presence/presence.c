/* Presence: groups tracker entries by key into Phoenix's presence JSON and
 * broadcasts every tracker diff as "presence_diff" on its topic. */
#include "hark/presence.h"

#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/json.h"
#include "base/log.h"
#include "base/utf8.h"

struct hark_presence {
  hark_pubsub *pubsub;
  hark_tracker *tracker;
  char *dispatcher_name;
  hark_presence_fetch_fn fetch;
  void *fetch_ctx;
};

/* One entry while grouping; `order` keeps tracker order within a key. */
typedef struct grouped_entry {
  const char *key;
  size_t key_len;
  const char *meta;
  size_t meta_len;
  size_t order;
} grouped_entry;

static int compare_grouped(const void *a, const void *b) {
  const grouped_entry *x = a, *y = b;
  size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
  int c = memcmp(x->key, y->key, n);
  if (c != 0) return c;
  if (x->key_len != y->key_len) return x->key_len < y->key_len ? -1 : 1;
  return x->order < y->order ? -1 : (x->order > y->order ? 1 : 0);
}

/* Appends the value for one key, {"metas":[...]} plus what the fetch hook
 * adds. */
static int append_key_entry(hark_presence *presence, hark_buf *out, const char *topic,
                            size_t topic_len, const grouped_entry *first, size_t count) {
  size_t start = out->len;
  int rc = hark_buf_append_str(out, "{\"metas\":[");
  for (size_t i = 0; rc == 0 && i < count; i++) {
    if (i > 0) rc = hark_buf_append_byte(out, ',');
    if (rc == 0) rc = hark_buf_append(out, first[i].meta, first[i].meta_len);
  }
  if (rc == 0) rc = hark_buf_append_str(out, "]}");
  if (rc != 0 || !presence->fetch) return rc;

  /* The hook works on a jansson object; re-encode what it returns. */
  json_t *entry = json_loadb(out->data + start, out->len - start, 0, NULL);
  if (!entry) return -1;
  presence->fetch(presence->fetch_ctx, topic, topic_len, first->key, first->key_len, entry);
  char *text = json_dumps(entry, JSON_COMPACT | JSON_PRESERVE_ORDER);
  json_decref(entry);
  if (!text) return -1;
  out->len = start;
  rc = hark_buf_append_str(out, text);
  free(text);
  return rc;
}

/* Appends {KEY: {"metas": [...]}, ...} for `entries`, which it sorts. */
static int append_grouped(hark_presence *presence, hark_buf *out, const char *topic,
                          size_t topic_len, grouped_entry *entries, size_t count) {
  if (count > 1) qsort(entries, count, sizeof *entries, compare_grouped);
  int rc = hark_buf_append_byte(out, '{');
  size_t i = 0;
  while (rc == 0 && i < count) {
    size_t j = i + 1;
    while (j < count && entries[j].key_len == entries[i].key_len &&
           memcmp(entries[j].key, entries[i].key, entries[i].key_len) == 0)
      j++;

    if (i > 0) rc = hark_buf_append_byte(out, ',');
    if (rc == 0) rc = hark_json_append_string(out, entries[i].key, entries[i].key_len);
    if (rc == 0) rc = hark_buf_append_byte(out, ':');
    if (rc == 0) rc = append_key_entry(presence, out, topic, topic_len, entries + i, j - i);
    i = j;
  }
  if (rc == 0) rc = hark_buf_append_byte(out, '}');
  return rc;
}

static grouped_entry *to_grouped(const hark_tracker_entry *entries, size_t count) {
  grouped_entry *grouped = malloc((count ? count : 1) * sizeof *grouped);
  if (!grouped) return NULL;
  for (size_t i = 0; i < count; i++) {
    grouped[i] = (grouped_entry){entries[i].key, entries[i].key_len, entries[i].meta,
                                 entries[i].meta_len, i};
  }
  return grouped;
}

/* Broadcasts a presence_diff payload to this node's subscribers of `topic`. */
static void broadcast_diff(hark_presence *presence, const char *topic, size_t topic_len,
                           const hark_buf *payload) {
  const hark_dispatcher *dispatcher = NULL;
  if (presence->dispatcher_name) {
    dispatcher = hark_pubsub_find_dispatcher(presence->pubsub, presence->dispatcher_name);
    if (!dispatcher) {
      HARK_ERROR("presence_diff_failed", "dispatcher=\"%s\" error=\"dispatcher not registered\"",
                 presence->dispatcher_name);
      return;
    }
  }
  hark_message msg = {.event = "presence_diff", .event_len = 13, .payload = payload->data,
                      .payload_len = payload->len};
  hark_pubsub_local_broadcast(presence->pubsub, topic, topic_len, &msg, dispatcher);
}

/* The tracker's diff callback: one presence_diff broadcast per topic. */
static void on_diff(void *ctx, const char *topic, size_t topic_len,
                    const hark_tracker_entry *joins, size_t join_count,
                    const hark_tracker_entry *leaves, size_t leave_count) {
  hark_presence *presence = ctx;
  grouped_entry *grouped_joins = to_grouped(joins, join_count);
  grouped_entry *grouped_leaves = to_grouped(leaves, leave_count);
  hark_buf payload = {0};

  int rc = grouped_joins && grouped_leaves ? 0 : -1;
  if (rc == 0) rc = hark_buf_append_str(&payload, "{\"joins\":");
  if (rc == 0) rc = append_grouped(presence, &payload, topic, topic_len, grouped_joins, join_count);
  if (rc == 0) rc = hark_buf_append_str(&payload, ",\"leaves\":");
  if (rc == 0) rc = append_grouped(presence, &payload, topic, topic_len, grouped_leaves, leave_count);
  if (rc == 0) rc = hark_buf_append_byte(&payload, '}');

  if (rc == 0)
    broadcast_diff(presence, topic, topic_len, &payload);
  else
    HARK_ERROR("presence_diff_failed", "topic_bytes=%zu joins=%zu leaves=%zu error=\"out of memory\"",
               topic_len, join_count, leave_count);
  hark_buf_free(&payload);
  free(grouped_joins);
  free(grouped_leaves);
}

int hark_presence_create(hark_presence **out, const hark_presence_options *options) {
  if (!options || !options->pubsub || !options->node_name || !options->node_name[0])
    return HARK_EINVAL;
  hark_presence *presence = calloc(1, sizeof *presence);
  if (!presence) return HARK_ENOMEM;
  presence->pubsub = options->pubsub;
  presence->fetch = options->fetch;
  presence->fetch_ctx = options->fetch_ctx;
  if (options->dispatcher_name) {
    presence->dispatcher_name = strdup(options->dispatcher_name);
    if (!presence->dispatcher_name) {
      free(presence);
      return HARK_ENOMEM;
    }
  }

  hark_tracker_options tracker_options = {.node_name = options->node_name,
                                          .pool_size = options->pool_size,
                                          .on_diff = on_diff,
                                          .ctx = presence};
  int rc = hark_tracker_create(&presence->tracker, &tracker_options);
  if (rc != 0) {
    free(presence->dispatcher_name);
    free(presence);
    return rc;
  }
  *out = presence;
  return 0;
}

void hark_presence_destroy(hark_presence *presence) {
  if (!presence) return;
  hark_tracker_destroy(presence->tracker);
  free(presence->dispatcher_name);
  free(presence);
}

hark_tracker *hark_presence_tracker(hark_presence *presence) { return presence->tracker; }

int hark_presence_track(hark_presence *presence, const hark_subscriber *owner, const char *topic,
                        size_t topic_len, const char *key, size_t key_len, const char *meta,
                        size_t meta_len, char ref[HARK_TRACKER_REF_SIZE]) {
  /* Keys become JSON object keys, so they must be text. */
  if (!hark_utf8_valid(key, key_len)) return HARK_EINVAL;
  return hark_tracker_track(presence->tracker, owner, topic, topic_len, key, key_len, meta,
                            meta_len, ref);
}

int hark_presence_update(hark_presence *presence, const hark_subscriber *owner,
                         const char *topic, size_t topic_len, const char *key, size_t key_len,
                         const char *meta, size_t meta_len, char ref[HARK_TRACKER_REF_SIZE]) {
  return hark_tracker_update(presence->tracker, owner, topic, topic_len, key, key_len, meta,
                             meta_len, ref);
}

void hark_presence_untrack(hark_presence *presence, const hark_subscriber *owner,
                           const char *topic, size_t topic_len, const char *key, size_t key_len) {
  hark_tracker_untrack(presence->tracker, owner, topic, topic_len, key, key_len);
}

void hark_presence_untrack_all(hark_presence *presence, const hark_subscriber *owner) {
  hark_tracker_untrack_all(presence->tracker, owner);
}

/* Collects entries from a tracker read. The tracker lends each entry only
 * for the callback, so keys and metas are copied into `text`, and their
 * offsets kept until the read is over. */
typedef struct collector {
  hark_buf text;
  grouped_entry *entries;
  size_t count, cap;
  int failed;
} collector;

static void collect_entry(void *ctx, const hark_tracker_entry *entry) {
  collector *c = ctx;
  if (c->failed) return;
  if (c->count == c->cap) {
    size_t cap = c->cap ? c->cap * 2 : 16;
    grouped_entry *grown = realloc(c->entries, cap * sizeof *grown);
    if (!grown) {
      c->failed = 1;
      return;
    }
    c->entries = grown;
    c->cap = cap;
  }

  /* Offsets for now; turned into pointers once `text` stops moving. */
  grouped_entry *g = &c->entries[c->count];
  g->key = (const char *)(uintptr_t)c->text.len;
  g->key_len = entry->key_len;
  g->meta = (const char *)(uintptr_t)(c->text.len + entry->key_len);
  g->meta_len = entry->meta_len;
  g->order = c->count;
  if (hark_buf_append(&c->text, entry->key, entry->key_len) != 0 ||
      hark_buf_append(&c->text, entry->meta, entry->meta_len) != 0) {
    c->failed = 1;
    return;
  }
  c->count++;
}

static void collector_resolve(collector *c) {
  for (size_t i = 0; i < c->count; i++) {
    c->entries[i].key = c->text.data + (uintptr_t)c->entries[i].key;
    c->entries[i].meta = c->text.data + (uintptr_t)c->entries[i].meta;
  }
}

static void collector_free(collector *c) {
  hark_buf_free(&c->text);
  free(c->entries);
}

/* Turns a finished buffer into a NUL-terminated string owned by the caller. */
static char *finish_text(hark_buf *out, int rc, size_t *len) {
  if (rc == 0) rc = hark_buf_append_byte(out, '\0');
  if (rc != 0) {
    hark_buf_free(out);
    return NULL;
  }
  *len = out->len - 1;
  return out->data;
}

char *hark_presence_list(hark_presence *presence, const char *topic, size_t topic_len,
                         size_t *len) {
  collector c = {0};
  hark_tracker_list(presence->tracker, topic, topic_len, collect_entry, &c);
  collector_resolve(&c);

  hark_buf out = {0};
  int rc = c.failed ? -1 : append_grouped(presence, &out, topic, topic_len, c.entries, c.count);
  collector_free(&c);
  return finish_text(&out, rc, len);
}

char *hark_presence_get_by_key(hark_presence *presence, const char *topic, size_t topic_len,
                               const char *key, size_t key_len, size_t *len) {
  collector c = {0};
  hark_tracker_get_by_key(presence->tracker, topic, topic_len, key, key_len, collect_entry, &c);
  collector_resolve(&c);
  if (c.failed || c.count == 0) {
    collector_free(&c);
    return NULL;
  }

  hark_buf out = {0};
  int rc = append_key_entry(presence, &out, topic, topic_len, c.entries, c.count);
  collector_free(&c);
  return finish_text(&out, rc, len);
}
