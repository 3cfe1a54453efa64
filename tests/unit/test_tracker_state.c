/* State CRDT tests: several states in one process acting as replicas of one
 * shard, exchanging deltas and full extracts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "hark/tracker.h"
#include "tracker/state.h"
#include "tracker/table.h"

/* ---- helpers ---- */

static hark__rref ref(const char *name) {
  hark__rref r = {name, strlen(name), 1};
  return r;
}

static hark__state *new_state(const char *name) {
  hark__state *state = hark__state_new(ref(name));
  assert_non_null(state);
  return state;
}

static void join(hark__state *s, uint64_t owner, const char *topic, const char *key,
                 const char *meta) {
  assert_int_equal(hark__state_join(s, owner, topic, strlen(topic), key, strlen(key), meta,
                                    strlen(meta), NULL),
                   0);
}

static void leave(hark__state *s, uint64_t owner, const char *topic, const char *key) {
  assert_int_equal(hark__state_leave(s, owner, topic, strlen(topic), key, strlen(key), NULL), 0);
}

static void update(hark__state *s, uint64_t owner, const char *topic, const char *key,
                   const char *meta) {
  assert_int_equal(hark__state_leave_join(s, owner, topic, strlen(topic), key, strlen(key), meta,
                                          strlen(meta), NULL),
                   0);
}

static void up(hark__state *s, hark__state *other) {
  assert_int_equal(hark__state_replica_up(s, hark__state_self(other), NULL), 0);
}

/* Joins and leaves of one operation, as "key=meta" strings sorted into one
 * line per kind, so a test can compare them whole. */
typedef struct diff {
  char joins[512];
  char leaves[512];
  size_t join_count;
  size_t leave_count;
} diff;

static int compare_strings(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static void render(const hark__changes *changes, bool join, char *out, size_t cap,
                   size_t *count) {
  char *items[64];
  size_t n = 0;
  for (size_t i = 0; i < changes->count; i++) {
    if (changes->items[i].join != join) continue;
    hark__entry_view view;
    hark__change_view(changes, i, &view);
    assert_true(n < 64);
    items[n] = malloc(view.key_len + view.meta_len + 2);
    sprintf(items[n], "%.*s=%.*s", (int)view.key_len, view.key, (int)view.meta_len, view.meta);
    n++;
  }
  qsort(items, n, sizeof(*items), compare_strings);
  out[0] = '\0';
  for (size_t i = 0; i < n; i++) {
    if (i > 0) strncat(out, " ", cap - strlen(out) - 1);
    strncat(out, items[i], cap - strlen(out) - 1);
    free(items[i]);
  }
  *count = n;
}

static diff diff_of(const hark__changes *changes) {
  diff d;
  render(changes, true, d.joins, sizeof(d.joins), &d.join_count);
  render(changes, false, d.leaves, sizeof(d.leaves), &d.leave_count);
  return d;
}

/* Merges `payload` into `s` and returns the diff. Frees the payload. */
static diff merge(hark__state *s, hark__delta *payload) {
  assert_non_null(payload);
  hark__changes changes = {0};
  assert_int_equal(hark__state_merge(s, payload, &changes), 0);
  diff d = diff_of(&changes);
  hark__changes_clear(&changes);
  hark__delta_free(payload);
  return d;
}

/* The full extract of `from` for requester `to`, with `to`'s clock. */
static hark__delta *extract_for(const hark__state *from, const hark__state *to) {
  hark__clock clock = {0};
  assert_int_equal(hark__state_clocks(to, &clock), 0);
  hark__delta *payload = hark__state_extract(from, hark__state_self(to), &clock);
  hark__clock_free(&clock);
  return payload;
}

/* The pending delta of `s`, after which the delta is reset. */
static hark__delta *take_delta(hark__state *s) {
  hark__delta *delta = hark__state_delta(s);
  assert_non_null(delta);
  hark__state_reset_delta(s);
  return delta;
}

typedef struct listing {
  char text[1024];
} listing;

static void append_key(void *ctx, const hark__entry *entry) {
  listing *l = ctx;
  (void)entry;
  (void)l;
}

/* The keys of a topic's visible entries, sorted, separated by spaces. */
typedef struct key_list {
  const hark__state *state;
  char *items[256];
  size_t count;
} key_list;

static void collect_key(void *ctx, const hark__entry *entry) {
  key_list *list = ctx;
  hark__entry_view view;
  hark__entry_view_of(list->state, entry, &view);
  list->items[list->count] = malloc(view.key_len + view.meta_len + 2);
  sprintf(list->items[list->count], "%.*s=%.*s", (int)view.key_len, view.key, (int)view.meta_len,
          view.meta);
  list->count++;
}

static listing join_list(key_list *list) {
  listing out = {{0}};
  qsort(list->items, list->count, sizeof(char *), compare_strings);
  for (size_t i = 0; i < list->count; i++) {
    if (i > 0) strcat(out.text, " ");
    strcat(out.text, list->items[i]);
    free(list->items[i]);
  }
  return out;
}

static listing topic_list(const hark__state *s, const char *topic) {
  key_list list = {.state = s};
  hark__state_get_by_topic(s, topic, strlen(topic), collect_key, &list);
  return join_list(&list);
}

static listing online(const hark__state *s) {
  key_list list = {.state = s};
  hark__state_online_list(s, collect_key, &list);
  return join_list(&list);
}

static uint64_t context_of(const hark__state *s, const hark__state *replica) {
  hark__clock clock = {0};
  uint64_t counter = UINT64_MAX;
  assert_int_equal(hark__state_context(s, &clock), 0);
  hark__clock_get(&clock, hark__state_self(replica), &counter);
  hark__clock_free(&clock);
  return counter;
}

/* ---- single state ---- */

static void fresh_extract_is_empty(void **unused) {
  (void)unused;
  hark__state *a = new_state("a");
  hark__delta *payload = extract_for(a, a);
  assert_non_null(payload);
  assert_int_equal(payload->value_count, 0);
  hark__delta_free(payload);
  hark__state_free(a);
}

static void join_then_leave(void **unused) {
  (void)unused;
  hark__state *a = new_state("a");
  join(a, 1, "lobby", "alice", "{}");
  assert_string_equal(topic_list(a, "lobby").text, "alice={}");
  assert_int_equal(hark__state_topic_count(a, "lobby", 5), 1);

  leave(a, 1, "lobby", "alice");
  assert_string_equal(topic_list(a, "lobby").text, "");
  assert_int_equal(hark__state_entry_count(a), 0);
  assert_int_equal(hark__state_leave(a, 1, "lobby", 5, "alice", 5, NULL), HARK_ENOENT);
  hark__state_free(a);
}

static void duplicate_join_rejected(void **unused) {
  (void)unused;
  hark__state *a = new_state("a");
  join(a, 1, "lobby", "alice", "{}");
  assert_int_equal(hark__state_join(a, 1, "lobby", 5, "alice", 5, "{}", 2, NULL), HARK_EALREADY);
  /* Another owner, topic or key is a separate entry. */
  join(a, 2, "lobby", "alice", "{}");
  join(a, 1, "other", "alice", "{}");
  join(a, 1, "lobby", "bob", "{}");
  assert_int_equal(hark__state_entry_count(a), 4);
  hark__state_free(a);
}

/* ---- two replicas exchanging full extracts ---- */

static void extract_exchange_joins_once(void **unused) {
  (void)unused;
  hark__state *a = new_state("a");
  hark__state *b = new_state("b");
  up(a, b);
  up(b, a);
  join(a, 1, "lobby", "alice", "{\"n\":1}");
  join(b, 2, "lobby", "bob", "{\"n\":2}");

  diff d = merge(b, extract_for(a, b));
  assert_string_equal(d.joins, "alice={\"n\":1}");
  assert_int_equal(d.leave_count, 0);
  assert_string_equal(topic_list(b, "lobby").text, "alice={\"n\":1} bob={\"n\":2}");

  /* Merging the same extract again changes nothing. */
  hark__clock before = {0}, after = {0};
  hark__state_context(b, &before);
  d = merge(b, extract_for(a, b));
  assert_int_equal(d.join_count + d.leave_count, 0);
  hark__state_context(b, &after);
  assert_true(hark__clock_equal(&before, &after));
  assert_int_equal(hark__state_entry_count(b), 2);

  /* The owner index has the remote entry under (a, 1). */
  assert_non_null(hark__state_get_by_owner_key(b, ref("a"), 1, "lobby", 5, "alice", 5));
  assert_null(hark__state_get_by_owner_key(b, ref("b"), 1, "lobby", 5, "alice", 5));

  hark__clock_free(&before);
  hark__clock_free(&after);
  hark__state_free(a);
  hark__state_free(b);
}

static void extract_exchange_leave_and_update(void **unused) {
  (void)unused;
  hark__state *a = new_state("a");
  hark__state *b = new_state("b");
  up(a, b);
  up(b, a);
  join(a, 1, "lobby", "alice", "{}");
  join(a, 1, "lobby", "carol", "{}");
  merge(b, extract_for(a, b));

  /* A leave on A is a leave on B. */
  leave(a, 1, "lobby", "alice");
  diff d = merge(b, extract_for(a, b));
  assert_int_equal(d.join_count, 0);
  assert_string_equal(d.leaves, "alice={}");
  assert_null(hark__state_get_by_owner_key(b, ref("a"), 1, "lobby", 5, "alice", 5));
  assert_string_equal(topic_list(b, "lobby").text, "carol={}");

  /* A later join on B reaches A. */
  join(b, 2, "lobby", "bob", "{}");
  d = merge(a, extract_for(b, a));
  assert_string_equal(d.joins, "bob={}");
  assert_string_equal(online(a).text, online(b).text);

  /* An update on B is a join with the new meta and a leave with the old. */
  update(b, 2, "lobby", "bob", "{\"away\":true}");
  d = merge(a, extract_for(b, a));
  assert_string_equal(d.joins, "bob={\"away\":true}");
  assert_string_equal(d.leaves, "bob={}");
  assert_string_equal(topic_list(a, "lobby").text, "bob={\"away\":true} carol={}");
  assert_non_null(hark__state_get_by_owner_key(a, ref("b"), 2, "lobby", 5, "bob", 3));
  assert_string_equal(online(a).text, online(b).text);

  hark__state_free(a);
  hark__state_free(b);
}

static void netsplit_hides_and_restores(void **unused) {
  (void)unused;
  hark__state *a = new_state("a");
  hark__state *b = new_state("b");
  up(a, b);
  up(b, a);
  join(a, 1, "lobby", "alice", "{}");
  join(b, 2, "lobby", "bob", "{}");
  merge(a, extract_for(b, a));
  assert_string_equal(topic_list(a, "lobby").text, "alice={} bob={}");

  hark__changes changes = {0};
  assert_int_equal(hark__state_replica_down(a, ref("b"), &changes), 0);
  diff d = diff_of(&changes);
  hark__changes_clear(&changes);
  assert_string_equal(d.leaves, "bob={}");
  assert_int_equal(d.join_count, 0);
  assert_string_equal(topic_list(a, "lobby").text, "alice={}");
  assert_int_equal(hark__state_topic_count(a, "lobby", 5), 1);
  assert_int_equal(hark__state_replica_status(a, ref("b")), HARK__STATUS_DOWN);

  /* Merging B while it is down reports nothing new. */
  d = merge(a, extract_for(b, a));
  assert_int_equal(d.join_count + d.leave_count, 0);

  /* Local changes meanwhile behave normally. */
  join(a, 1, "lobby", "dave", "{}");
  assert_string_equal(topic_list(a, "lobby").text, "alice={} dave={}");

  assert_int_equal(hark__state_replica_up(a, ref("b"), &changes), 0);
  d = diff_of(&changes);
  hark__changes_clear(&changes);
  assert_string_equal(d.joins, "bob={}");
  assert_string_equal(topic_list(a, "lobby").text, "alice={} bob={} dave={}");

  hark__state_free(a);
  hark__state_free(b);
}

typedef struct row_list {
  const hark__state *state;
  hark__entry_view rows[8];
  size_t count;
} row_list;

static void collect_row(void *ctx, const hark__entry *entry) {
  row_list *list = ctx;
  hark__entry_view_of(list->state, entry, &list->rows[list->count++]);
}

static void get_by_owner_rows(void **unused) {
  (void)unused;
  hark__state *a = new_state("a");
  join(a, 7, "lobby", "alice", "{\"x\":1}");

  row_list list = {.state = a};
  hark__state_get_by_owner(a, ref("a"), 7, collect_row, &list);
  assert_int_equal(list.count, 1);
  assert_true(hark__rref_equal(list.rows[0].replica, ref("a")));
  assert_int_equal(list.rows[0].counter, 1);
  assert_int_equal(list.rows[0].owner, 7);
  assert_memory_equal(list.rows[0].topic, "lobby", 5);
  assert_memory_equal(list.rows[0].key, "alice", 5);
  assert_memory_equal(list.rows[0].meta, "{\"x\":1}", 7);

  assert_non_null(hark__state_get_by_owner_key(a, ref("a"), 7, "lobby", 5, "alice", 5));
  assert_null(hark__state_get_by_owner_key(a, ref("a"), 7, "lobbx", 5, "alice", 5));
  assert_null(hark__state_get_by_owner_key(a, ref("a"), 7, "lobby", 5, "alicx", 5));
  list.count = 0;
  hark__state_get_by_owner(a, ref("a"), 8, collect_row, &list);
  assert_int_equal(list.count, 0);
  hark__state_free(a);
}

static void get_by_key_rows(void **unused) {
  (void)unused;
  hark__state *a = new_state("a");
  join(a, 1, "lobby", "alice", "{\"tab\":1}");
  join(a, 2, "lobby", "alice", "{\"tab\":2}");
  join(a, 3, "lobby", "bob", "{}");

  row_list list = {.state = a};
  hark__state_get_by_key(a, "lobby", 5, "alice", 5, collect_row, &list);
  assert_int_equal(list.count, 2);
  assert_int_equal(list.rows[0].owner, 1);
  assert_int_equal(list.rows[1].owner, 2);

  list.count = 0;
  hark__state_get_by_key(a, "lobby", 5, "nobody", 6, collect_row, &list);
  assert_int_equal(list.count, 0);
  hark__state_get_by_key(a, "other", 5, "alice", 5, collect_row, &list);
  assert_int_equal(list.count, 0);
  hark__state_free(a);
}

static void get_by_topic_filters_down(void **unused) {
  (void)unused;
  hark__state *a = new_state("a");
  hark__state *b = new_state("b");
  hark__state *c = new_state("c");
  up(a, b);
  up(a, c);
  up(b, a);
  up(c, a);
  /* replica_up puts the new replicas in the context at 0. */
  assert_int_equal(context_of(a, b), 0);
  assert_int_equal(context_of(a, c), 0);

  join(a, 1, "lobby", "alice", "{}");
  join(b, 2, "lobby", "bob", "{}");
  join(c, 3, "lobby", "carol", "{}");
  merge(a, extract_for(b, a));
  merge(a, extract_for(c, a));
  assert_string_equal(topic_list(a, "lobby").text, "alice={} bob={} carol={}");

  hark__state_replica_down(a, ref("b"), NULL);
  assert_string_equal(topic_list(a, "lobby").text, "alice={} carol={}");
  hark__state_replica_down(a, ref("c"), NULL);
  assert_string_equal(topic_list(a, "lobby").text, "alice={}");
  assert_string_equal(topic_list(a, "nowhere").text, "");

  hark__state_free(a);
  hark__state_free(b);
  hark__state_free(c);
}

static void remove_down_replicas_forgets(void **unused) {
  (void)unused;
  hark__state *a = new_state("a");
  hark__state *b = new_state("b");
  up(a, b);
  up(b, a);
  join(b, 2, "lobby", "bob", "{}");
  join(b, 2, "other", "bob", "{}");
  merge(a, extract_for(b, a));
  assert_int_equal(hark__state_entry_count(a), 2);

  hark__state_replica_down(a, ref("b"), NULL);
  hark__state_remove_down_replicas(a, ref("b"));
  assert_int_equal(hark__state_entry_count(a), 0);
  assert_null(hark__state_get_by_owner_key(a, ref("b"), 2, "lobby", 5, "bob", 3));
  assert_int_equal(context_of(a, b), UINT64_MAX);

  /* Coming back up does not resurrect the entries. */
  hark__changes changes = {0};
  hark__state_replica_up(a, ref("b"), &changes);
  assert_int_equal(changes.count, 0);
  hark__changes_clear(&changes);
  assert_int_equal(hark__state_entry_count(a), 0);

  hark__state_free(a);
  hark__state_free(b);
}

/* A table filled with long probe runs loses one group and must still find
 * every other element, even where the removed slots split a run. */
static void table_remove_group_keeps_others(void **unused) {
  (void)unused;
  enum { COUNT = 600 };
  static int items[COUNT];
  hark__table table = {0};
  for (int i = 0; i < COUNT; i++) {
    items[i] = i;
    /* 7 home slots only: every probe run is long and crosses the wrap. */
    uint32_t hash = (uint32_t)(i % 7) * 0x9e3779b1u;
    assert_int_equal(hark__table_insert_group(&table, hash, (uint32_t)(i % 3), &items[i]), 0);
  }

  assert_int_equal(hark__table_remove_group(&table, 1), COUNT / 3);
  assert_int_equal(table.count, COUNT - COUNT / 3);
  assert_int_equal(hark__table_remove_group(&table, 1), 0);

  for (int i = 0; i < COUNT; i++) {
    uint32_t hash = (uint32_t)(i % 7) * 0x9e3779b1u;
    hark__table_iter it = hark__table_probe(&table, hash);
    bool found = false;
    void *ptr;
    while ((ptr = hark__table_next(&table, &it)) != NULL) found |= ptr == &items[i];
    assert_int_equal(found, i % 3 != 1);
  }
  hark__table_free(&table);
}

static void merge_quietly(hark__state *s, hark__delta *payload) {
  assert_non_null(payload);
  assert_int_equal(hark__state_merge(s, payload, NULL), 0);
  hark__delta_free(payload);
}

/* Removing a replica that has most entries drops its table slots in bulk;
 * the other replica's entries must stay reachable by key and by tag. */
static void remove_down_replicas_keeps_others(void **unused) {
  (void)unused;
  enum { PER_REPLICA = 60 };
  hark__state *a = new_state("a");
  hark__state *b = new_state("b");
  hark__state *c = new_state("c");
  up(a, b);
  up(a, c);
  up(b, a);
  up(c, a);
  char topic[32], key[32];
  for (int i = 0; i < PER_REPLICA; i++) {
    snprintf(topic, sizeof(topic), "t%d", i % 5);
    snprintf(key, sizeof(key), "k%d", i);
    join(b, (uint64_t)i, topic, key, "{}");
    join(c, (uint64_t)i, topic, key, "{}");
  }
  merge_quietly(a, extract_for(b, a));
  merge_quietly(a, extract_for(c, a));
  assert_int_equal(hark__state_entry_count(a), 2 * PER_REPLICA);

  hark__state_replica_down(a, ref("b"), NULL);
  hark__state_remove_down_replicas(a, ref("b"));
  assert_int_equal(hark__state_entry_count(a), PER_REPLICA);
  for (int i = 0; i < PER_REPLICA; i++) {
    snprintf(topic, sizeof(topic), "t%d", i % 5);
    snprintf(key, sizeof(key), "k%d", i);
    assert_null(hark__state_get_by_owner_key(a, ref("b"), (uint64_t)i, topic, strlen(topic), key,
                                             strlen(key)));
    assert_non_null(hark__state_get_by_owner_key(a, ref("c"), (uint64_t)i, topic, strlen(topic),
                                                 key, strlen(key)));
  }

  /* A window delta with one removal: a finds the removed entry by its tag. */
  hark__state_reset_delta(c);
  leave(c, 7, "t2", "k7");
  merge_quietly(a, take_delta(c));
  assert_int_equal(hark__state_entry_count(a), PER_REPLICA - 1);
  assert_null(hark__state_get_by_owner_key(a, ref("c"), 7, "t2", 2, "k7", 2));

  hark__state_free(a);
  hark__state_free(b);
  hark__state_free(c);
}

/* Phoenix keeps a permdowned replica in its replicas map as down forever.
 * Here permdown deletes it, so the down list does not grow without bound. */
static void permdown_forgets_replica_status(void **unused) {
  (void)unused;
  hark__state *a = new_state("a");
  for (int i = 0; i < 50; i++) {
    char name[16];
    snprintf(name, sizeof(name), "r%d", i);
    hark__rref r = {name, strlen(name), (uint64_t)i + 1};
    hark__state_replica_up(a, r, NULL);
    hark__state_replica_down(a, r, NULL);
    hark__state_remove_down_replicas(a, r);
    assert_int_equal(hark__state_replica_status(a, r), HARK__STATUS_NONE);
  }
  hark__clock down = {0}, clocks = {0};
  assert_int_equal(hark__state_down_replicas(a, &down), 0);
  assert_int_equal(down.count, 0);
  assert_int_equal(hark__state_clocks(a, &clocks), 0);
  assert_int_equal(clocks.count, 1);
  hark__clock_free(&down);
  hark__clock_free(&clocks);
  hark__state_free(a);
}

/* ---- deltas ---- */

static void worked_example_and_basic_deltas(void **unused) {
  (void)unused;
  hark__state *a = new_state("a");
  hark__state *b = new_state("b");
  up(a, b);
  up(b, a);

  /* 1. A tracks alice: context {a:1}, delta range {a:0} -> {a:1}. */
  join(a, 1, "lobby", "alice", "{}");
  assert_int_equal(context_of(a, a), 1);
  hark__delta *delta = hark__state_delta(a);
  assert_int_equal(delta->value_count, 1);
  assert_int_equal(delta->replicas[0].start, 0);
  assert_int_equal(delta->replicas[0].end, 1);
  assert_int_equal(hark__dotset_size(&delta->replicas[0].cloud), 1);
  assert_true(hark__dotset_contains(&delta->replicas[0].cloud, 1));
  hark__delta_free(delta);

  /* 2. B merges it: a join, and B's context for A advances to 1. */
  diff d = merge(b, take_delta(a));
  assert_string_equal(d.joins, "alice={}");
  assert_int_equal(context_of(b, a), 1);
  assert_int_equal(hark__state_cloud(b, ref("a"))->count, 0);

  /* 3. A untracks alice: clouds {1, 2}, no values, range {a:1} -> {a:2}. */
  leave(a, 1, "lobby", "alice");
  delta = hark__state_delta(a);
  assert_int_equal(delta->value_count, 0);
  assert_int_equal(delta->replicas[0].start, 1);
  assert_int_equal(delta->replicas[0].end, 2);
  assert_int_equal(hark__dotset_size(&delta->replicas[0].cloud), 2);
  hark__delta_free(delta);

  /* 4. B merges it: a leave, context {a:2}, and B relays the tombstone. */
  assert_false(hark__state_has_delta(b));
  d = merge(b, take_delta(a));
  assert_string_equal(d.leaves, "alice={}");
  assert_int_equal(d.join_count, 0);
  assert_int_equal(context_of(b, a), 2);
  assert_true(hark__state_has_delta(b));
  hark__delta *relay = hark__state_delta(b);
  long ai = hark__delta_find_replica(relay, ref("a"));
  assert_true(ai >= 0);
  assert_true(hark__dotset_contains(&relay->replicas[ai].cloud, 1));
  hark__delta_free(relay);

  /* A joins again: B's clock for A reaches 3 and its clouds are empty. */
  join(a, 1, "lobby", "alice", "{}");
  d = merge(b, take_delta(a));
  assert_string_equal(d.joins, "alice={}");
  assert_int_equal(context_of(b, a), 3);
  assert_int_equal(hark__state_cloud(b, ref("a"))->count, 0);

  hark__state_free(a);
  hark__state_free(b);
}

static void update_delta_has_three_dots(void **unused) {
  (void)unused;
  hark__state *a = new_state("a");
  join(a, 1, "lobby", "alice", "{}");
  hark__state_reset_delta(a);
  update(a, 1, "lobby", "alice", "{\"v\":2}");

  hark__delta *delta = hark__state_delta(a);
  /* Dots: the old tag 1, the removal 2 and the addition 3; values: tag 3. */
  assert_int_equal(hark__dotset_size(&delta->replicas[0].cloud), 3);
  for (uint64_t n = 1; n <= 3; n++) assert_true(hark__dotset_contains(&delta->replicas[0].cloud, n));
  assert_int_equal(delta->value_count, 1);
  assert_int_equal(delta->values[0].counter, 3);
  assert_int_equal(hark__state_delta_size(a), 4);
  assert_int_equal(hark__delta_size(delta), 4);
  hark__delta_free(delta);
  hark__state_free(a);
}

static void delta_merge_not_contiguous(void **unused) {
  (void)unused;
  hark__state *a = new_state("a");
  join(a, 1, "lobby", "u1", "{}");
  hark__delta *first = take_delta(a); /* 0 -> 1 */
  join(a, 1, "lobby", "u2", "{}");
  hark__state_reset_delta(a);         /* skip 1 -> 2 */
  join(a, 1, "lobby", "u3", "{}");
  hark__delta *third = take_delta(a); /* 2 -> 3 */

  hark__delta *out = NULL;
  assert_int_equal(hark__delta_merge(first, third, &out), HARK__NOT_CONTIGUOUS);
  assert_null(out);
  assert_int_equal(hark__delta_merge(third, first, &out), HARK__NOT_CONTIGUOUS);
  assert_null(out);

  hark__delta_free(first);
  hark__delta_free(third);
  hark__state_free(a);
}

static void extract_only_known_replicas(void **unused) {
  (void)unused;
  hark__state *s1 = new_state("s1");
  hark__state *s2 = new_state("s2");
  hark__state *s3 = new_state("s3");
  up(s1, s2);
  up(s2, s1);
  up(s2, s3);
  up(s3, s2);
  join(s1, 1, "lobby", "one", "{}");
  join(s3, 3, "lobby", "three", "{}");
  merge(s2, extract_for(s1, s2));
  merge(s2, extract_for(s3, s2));
  assert_int_equal(hark__state_entry_count(s2), 2);

  /* S1's clock has only s1 and s2, so S3's entry and replica are left out. */
  hark__delta *payload = extract_for(s2, s1);
  assert_int_equal(payload->value_count, 0); /* s1's own entry is excluded too */
  assert_true(hark__delta_find_replica(payload, ref("s3")) < 0);
  hark__delta_free(payload);

  hark__state_free(s1);
  hark__state_free(s2);
  hark__state_free(s3);
}

static void delta_merge_independent_replicas(void **unused) {
  (void)unused;
  hark__state *s1 = new_state("s1");
  hark__state *s2 = new_state("s2");
  join(s1, 1, "lobby", "one", "{}");
  join(s2, 2, "lobby", "two", "{}");
  hark__delta *d1 = take_delta(s1);
  hark__delta *d2 = take_delta(s2);

  hark__delta *out = NULL;
  assert_int_equal(hark__delta_merge(d1, d2, &out), 0);
  assert_int_equal(out->value_count, 2);
  long i1 = hark__delta_find_replica(out, ref("s1"));
  long i2 = hark__delta_find_replica(out, ref("s2"));
  assert_true(hark__dotset_contains(&out->replicas[i1].cloud, 1));
  assert_true(hark__dotset_contains(&out->replicas[i2].cloud, 1));
  assert_int_equal(out->replicas[i2].end, 1);

  hark__delta_free(out);
  hark__delta_free(d1);
  hark__delta_free(d2);
  hark__state_free(s1);
  hark__state_free(s2);
}

static void delta_merge_with_removes(void **unused) {
  (void)unused;
  hark__state *s1 = new_state("s1");
  hark__state *s2 = new_state("s2");
  up(s1, s2);
  up(s2, s1);
  join(s1, 1, "lobby", "private", "{}");
  hark__delta *d1 = take_delta(s1);
  merge(s2, hark__delta_copy(d1));
  hark__state_reset_delta(s2); /* drop the relay of s1's join, nothing to relay yet */

  /* S2 adds concurrently: the add survives the merge, and is idempotent. */
  join(s2, 2, "lobby", "public", "{}");
  hark__delta *d2 = take_delta(s2);
  hark__delta *out = NULL;
  assert_int_equal(hark__delta_merge(d1, d2, &out), 0);
  assert_int_equal(out->value_count, 2);
  hark__delta *again = NULL;
  assert_int_equal(hark__delta_merge(out, d2, &again), 0);
  assert_int_equal(again->value_count, 2);
  assert_int_equal(hark__delta_size(again), hark__delta_size(out));
  hark__delta_free(again);

  /* S1 removes "private"; merged into the combined delta, the value goes and
   * its dot stays as a tombstone. */
  leave(s1, 1, "lobby", "private");
  hark__delta *d3 = take_delta(s1);
  hark__delta *merged = NULL;
  assert_int_equal(hark__delta_merge(out, d3, &merged), 0);
  assert_int_equal(merged->value_count, 1);
  hark__value_view view;
  hark__delta_value_at(merged, 0, &view);
  assert_memory_equal(view.key, "public", 6);
  long i1 = hark__delta_find_replica(merged, ref("s1"));
  assert_true(hark__dotset_contains(&merged->replicas[i1].cloud, 1));
  assert_true(hark__dotset_contains(&merged->replicas[i1].cloud, 2));

  hark__delta_free(merged);
  hark__delta_free(out);
  hark__delta_free(d1);
  hark__delta_free(d2);
  hark__delta_free(d3);
  hark__state_free(s1);
  hark__state_free(s2);
}

/* ---- fixed upstream problems ---- */

/* C merges A's newest delta first, then B's older full extract, which still
 * contains alice's first meta. Phoenix re-adds the old value, because its dot
 * is neither in C's context (still 0) nor in C's clouds (which start at the
 * newer delta's dots). The newer meta must win, with no leave reported. */
static void stale_extract_keeps_newer_value(void **unused) {
  (void)unused;
  hark__state *a = new_state("a");
  hark__state *b = new_state("b");
  hark__state *c = new_state("c");
  up(a, b);
  up(b, a);

  join(a, 1, "lobby", "alice", "{\"v\":1}"); /* (a,1) */
  merge(b, take_delta(a));
  update(a, 1, "lobby", "alice", "{\"v\":2}"); /* tombstone 1, dots 2 and 3 */
  hark__state_reset_delta(a);                  /* B misses this delta */
  update(a, 1, "lobby", "alice", "{\"v\":3}"); /* tombstone 3, dots 4 and 5 */
  hark__delta *newest = take_delta(a);

  up(c, a);
  up(c, b);
  diff d = merge(c, newest);
  assert_string_equal(d.joins, "alice={\"v\":3}");
  assert_int_equal(context_of(c, a), 0); /* dots 3..5 wait in the cloud */

  d = merge(c, extract_for(b, c));
  assert_int_equal(d.join_count, 0);
  assert_int_equal(d.leave_count, 0);
  assert_string_equal(topic_list(c, "lobby").text, "alice={\"v\":3}");

  /* The state stays consistent: A's later leave removes the entry on C. */
  leave(a, 1, "lobby", "alice");
  d = merge(c, take_delta(a));
  assert_string_equal(d.leaves, "alice={\"v\":3}");
  assert_int_equal(hark__state_entry_count(c), 0);

  hark__state_free(a);
  hark__state_free(b);
  hark__state_free(c);
}

/* The same stale value arriving as a window delta is dropped too. */
static void stale_delta_keeps_newer_value(void **unused) {
  (void)unused;
  hark__state *a = new_state("a");
  hark__state *c = new_state("c");
  up(c, a);
  join(a, 1, "lobby", "alice", "{\"v\":1}");
  hark__delta *old = take_delta(a);
  hark__state_reset_delta(a);
  update(a, 1, "lobby", "alice", "{\"v\":2}");
  hark__delta *middle = take_delta(a); /* tombstone 1, dots 2, 3 */
  hark__delta_free(middle);
  update(a, 1, "lobby", "alice", "{\"v\":3}");

  merge(c, take_delta(a)); /* tombstone 3, dots 4, 5: C has v3 at (a,5) */
  diff d = merge(c, old);  /* (a,1) is unseen by C but older than (a,5) */
  assert_int_equal(d.join_count + d.leave_count, 0);
  assert_string_equal(topic_list(c, "lobby").text, "alice={\"v\":3}");

  hark__state_free(a);
  hark__state_free(c);
}

/* A merge that overwrites an entry in place, without observing the old
 * tag's removal, must leave nothing behind that stops a later merge from
 * removing the entry. */
static void overwritten_entry_removed_later(void **unused) {
  (void)unused;
  hark__state *a = new_state("a");
  hark__state *x = new_state("x");
  up(a, x);
  up(x, a);

  join(a, 7, "t", "k", "{\"v\":1}"); /* (a,1) */
  merge(x, extract_for(a, x));
  hark__state_reset_delta(a);
  leave(a, 7, "t", "k");               /* tombstone 1, dot 2: x misses this delta */
  hark__state_reset_delta(a);
  join(a, 7, "t", "k", "{\"v\":2}"); /* (a,3), in a delta of dot 3 only */
  diff d = merge(x, take_delta(a));
  assert_string_equal(d.joins, "k={\"v\":2}");
  assert_string_equal(d.leaves, "k={\"v\":1}");
  assert_int_equal(hark__state_entry_count(x), 1);

  leave(a, 7, "t", "k"); /* tombstone 3, dot 4 */
  d = merge(x, extract_for(a, x));
  assert_int_equal(d.join_count, 0);
  assert_string_equal(d.leaves, "k={\"v\":2}");
  assert_int_equal(hark__state_entry_count(x), 0);
  assert_string_equal(topic_list(x, "t").text, "");
  assert_int_equal(context_of(x, a), 4);

  hark__state_free(a);
  hark__state_free(x);
}

/* Phoenix passes the requester's bare name, so the exclusion never matches
 * and the requester's own entries are sent back. Here the requester's
 * entries are left out, and only for the exact (name, vsn). */
static void extract_excludes_requester_entries(void **unused) {
  (void)unused;
  hark__state *a = new_state("a");
  hark__state *b = new_state("b");
  hark__rref b_old = {"b", 1, 0}; /* an earlier vsn of node b */
  hark__state *b0 = hark__state_new(b_old);
  up(a, b);
  up(b, a);
  up(a, b0);
  up(b0, a);
  join(b, 2, "lobby", "bob", "{}");
  join(b0, 9, "lobby", "old-bob", "{}");
  merge(a, extract_for(b, a));
  merge(a, extract_for(b0, a));
  join(a, 1, "lobby", "alice", "{}");

  hark__clock clock = {0};
  hark__state_clocks(b, &clock);
  assert_int_equal(hark__clock_set(&clock, b_old, 1), 0);
  hark__delta *payload = hark__state_extract(a, hark__state_self(b), &clock);
  hark__clock_free(&clock);

  /* alice and the old vsn's entry are sent; bob, b's own, is not. */
  assert_int_equal(payload->value_count, 2);
  for (size_t i = 0; i < payload->value_count; i++) {
    hark__value_view view;
    hark__delta_value_at(payload, i, &view);
    assert_false(hark__rref_equal(view.replica, hark__state_self(b)));
  }
  hark__delta_free(payload);
  hark__state_free(a);
  hark__state_free(b);
  hark__state_free(b0);
}

/* ---- random operations between three replicas ---- */

#define RANDOM_STATES 3
#define RANDOM_STEPS 4000

typedef struct rng {
  uint64_t s;
} rng;

static uint32_t next_random(rng *r) {
  r->s ^= r->s << 13;
  r->s ^= r->s >> 7;
  r->s ^= r->s << 17;
  return (uint32_t)(r->s >> 11);
}

typedef struct pending {
  hark__delta *delta;
  int to;
} pending;

typedef struct entry_dump {
  const hark__state *state;
  char *rows[4096];
  size_t count;
} entry_dump;

static void dump_row(void *ctx, const hark__entry *entry) {
  entry_dump *dump = ctx;
  hark__entry_view v;
  hark__entry_view_of(dump->state, entry, &v);
  char *row = malloc(v.topic_len + v.key_len + v.meta_len + v.replica.name_len + 64);
  sprintf(row, "%.*s/%llu/%.*s/%.*s/%llu=%.*s", (int)v.replica.name_len, v.replica.name,
          (unsigned long long)v.owner, (int)v.topic_len, v.topic, (int)v.key_len, v.key,
          (unsigned long long)v.counter, (int)v.meta_len, v.meta);
  assert_true(dump->count < 4096);
  dump->rows[dump->count++] = row;
}

static void dump_free(entry_dump *dump) {
  for (size_t i = 0; i < dump->count; i++) free(dump->rows[i]);
}

/* Does one random local operation on `s`; returns the dots it used. */
static uint64_t random_local_op(hark__state *s, rng *r) {
  static const char *topics[] = {"t0", "t1", "t2"};
  static const char *keys[] = {"k0", "k1", "k2"};
  uint64_t owner = next_random(r) % 4;
  const char *topic = topics[next_random(r) % 3];
  const char *key = keys[next_random(r) % 3];
  char meta[32];
  snprintf(meta, sizeof(meta), "{\"v\":%u}", next_random(r) % 1000);

  switch (next_random(r) % 3) {
  case 0:
    return hark__state_join(s, owner, topic, 2, key, 2, meta, strlen(meta), NULL) == 0 ? 1 : 0;
  case 1:
    return hark__state_leave(s, owner, topic, 2, key, 2, NULL) == 0 ? 1 : 0;
  default:
    return hark__state_leave_join(s, owner, topic, 2, key, 2, meta, strlen(meta), NULL) == 0 ? 2
                                                                                             : 0;
  }
}

static void random_operations_converge(void **unused) {
  (void)unused;
  for (uint64_t seed = 1; seed <= 20; seed++) {
    rng r = {seed * 0x9e3779b97f4a7c15ULL};
    hark__state *states[RANDOM_STATES];
    uint64_t dots[RANDOM_STATES] = {0};
    const char *names[RANDOM_STATES] = {"a", "b", "c"};
    for (int i = 0; i < RANDOM_STATES; i++) states[i] = new_state(names[i]);
    for (int i = 0; i < RANDOM_STATES; i++) {
      for (int j = 0; j < RANDOM_STATES; j++) {
        if (i != j) up(states[i], states[j]);
      }
    }

    /* Deltas travel through a queue and are delivered in random order, some
     * of them never; full extracts are exchanged now and then. */
    pending queue[64];
    size_t queued = 0;
    for (int step = 0; step < RANDOM_STEPS; step++) {
      int i = (int)(next_random(&r) % RANDOM_STATES);
      uint32_t action = next_random(&r) % 10;
      if (action < 6) {
        dots[i] += random_local_op(states[i], &r);
      } else if (action < 8 && queued + RANDOM_STATES <= 64) {
        hark__delta *delta = take_delta(states[i]);
        for (int j = 0; j < RANDOM_STATES; j++) {
          if (j == i || next_random(&r) % 4 == 0) continue;
          queue[queued++] = (pending){hark__delta_copy(delta), j};
        }
        hark__delta_free(delta);
      } else if (action < 9 && queued > 0) {
        size_t k = next_random(&r) % queued;
        hark__changes changes = {0};
        assert_int_equal(hark__state_merge(states[queue[k].to], queue[k].delta, &changes), 0);
        hark__changes_clear(&changes);
        hark__delta_free(queue[k].delta);
        queue[k] = queue[--queued];
      } else {
        int j = (int)(next_random(&r) % RANDOM_STATES);
        if (j != i) merge(states[j], extract_for(states[i], states[j]));
      }
    }
    while (queued > 0) hark__delta_free(queue[--queued].delta);

    /* Full exchange, twice, so that every replica has seen everything. */
    for (int round = 0; round < 2; round++) {
      for (int i = 0; i < RANDOM_STATES; i++) {
        for (int j = 0; j < RANDOM_STATES; j++) {
          if (i != j) merge(states[j], extract_for(states[i], states[j]));
        }
      }
    }

    entry_dump dumps[RANDOM_STATES];
    for (int i = 0; i < RANDOM_STATES; i++) {
      dumps[i] = (entry_dump){.state = states[i]};
      hark__state_online_list(states[i], dump_row, &dumps[i]);
      qsort(dumps[i].rows, dumps[i].count, sizeof(char *), compare_strings);
      /* Invariant: at most one row per (replica, owner, topic, key). The
       * rows sort by that prefix, which ends at the fourth '/'. */
      for (size_t k = 1; k < dumps[i].count; k++) {
        const char *a = dumps[i].rows[k - 1], *b = dumps[i].rows[k];
        size_t prefix = 0;
        for (int slashes = 0; a[prefix] && slashes < 4; prefix++) slashes += a[prefix] == '/';
        assert_false(strncmp(a, b, prefix) == 0);
      }
      /* Invariant: the own counter equals the dots this replica created. */
      assert_int_equal(context_of(states[i], states[i]), dots[i]);
    }
    for (int i = 1; i < RANDOM_STATES; i++) {
      assert_int_equal(dumps[i].count, dumps[0].count);
      for (size_t k = 0; k < dumps[0].count; k++) {
        assert_string_equal(dumps[i].rows[k], dumps[0].rows[k]);
      }
      /* Every replica's context agrees on every replica's counter. */
      for (int j = 0; j < RANDOM_STATES; j++) {
        assert_int_equal(context_of(states[i], states[j]), context_of(states[0], states[j]));
      }
    }
    for (int i = 0; i < RANDOM_STATES; i++) {
      dump_free(&dumps[i]);
      hark__state_free(states[i]);
    }
  }
}

int main(void) {
  (void)append_key;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(fresh_extract_is_empty),
      cmocka_unit_test(join_then_leave),
      cmocka_unit_test(duplicate_join_rejected),
      cmocka_unit_test(extract_exchange_joins_once),
      cmocka_unit_test(extract_exchange_leave_and_update),
      cmocka_unit_test(netsplit_hides_and_restores),
      cmocka_unit_test(get_by_owner_rows),
      cmocka_unit_test(get_by_key_rows),
      cmocka_unit_test(get_by_topic_filters_down),
      cmocka_unit_test(remove_down_replicas_forgets),
      cmocka_unit_test(table_remove_group_keeps_others),
      cmocka_unit_test(remove_down_replicas_keeps_others),
      cmocka_unit_test(permdown_forgets_replica_status),
      cmocka_unit_test(worked_example_and_basic_deltas),
      cmocka_unit_test(update_delta_has_three_dots),
      cmocka_unit_test(delta_merge_not_contiguous),
      cmocka_unit_test(extract_only_known_replicas),
      cmocka_unit_test(delta_merge_independent_replicas),
      cmocka_unit_test(delta_merge_with_removes),
      cmocka_unit_test(stale_extract_keeps_newer_value),
      cmocka_unit_test(stale_delta_keeps_newer_value),
      cmocka_unit_test(overwritten_entry_removed_later),
      cmocka_unit_test(extract_excludes_requester_entries),
      cmocka_unit_test(random_operations_converge),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
