/* Tracker API tests: track, update, untrack and the reads, for several pool
 * sizes, and the diffs reported for each operation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "hark/tracker.h"

/* ---- diff recording ---- */

typedef struct recorded_entry {
  uint64_t owner;
  char key[64];
  char meta[256];
} recorded_entry;

typedef struct recorded_call {
  char topic[64];
  recorded_entry joins[8];
  recorded_entry leaves[8];
  size_t join_count;
  size_t leave_count;
} recorded_call;

typedef struct recorder {
  recorded_call calls[512];
  size_t count;
} recorder;

static void copy_entry(recorded_entry *out, const hark_tracker_entry *in) {
  out->owner = in->owner;
  snprintf(out->key, sizeof(out->key), "%.*s", (int)in->key_len, in->key);
  snprintf(out->meta, sizeof(out->meta), "%.*s", (int)in->meta_len, in->meta);
}

static void record_diff(void *ctx, const char *topic, size_t topic_len,
                        const hark_tracker_entry *joins, size_t join_count,
                        const hark_tracker_entry *leaves, size_t leave_count) {
  recorder *r = ctx;
  assert_true(r->count < 512);
  assert_true(join_count + leave_count > 0);
  recorded_call *call = &r->calls[r->count++];
  snprintf(call->topic, sizeof(call->topic), "%.*s", (int)topic_len, topic);
  call->join_count = join_count;
  call->leave_count = leave_count;
  for (size_t i = 0; i < join_count && i < 8; i++) copy_entry(&call->joins[i], &joins[i]);
  for (size_t i = 0; i < leave_count && i < 8; i++) copy_entry(&call->leaves[i], &leaves[i]);
}

static uint64_t fixed_now(void *ctx) {
  return *(uint64_t *)ctx;
}

typedef struct fixture {
  hark_tracker *tracker;
  recorder diffs;
  uint64_t now_ns;
  hark_subscriber owners[4];
} fixture;

static fixture *setup(unsigned pool_size) {
  fixture *f = calloc(1, sizeof(*f));
  f->now_ns = 1700000000123456789ULL;
  hark_tracker_options options = {.node_name = "node1",
                                  .pool_size = pool_size,
                                  .on_diff = record_diff,
                                  .ctx = &f->diffs,
                                  .now_ns = fixed_now,
                                  .clock_ctx = &f->now_ns};
  assert_int_equal(hark_tracker_create(&f->tracker, &options), 0);
  assert_int_equal(hark_tracker_pool_size(f->tracker), pool_size ? pool_size : 1);
  return f;
}

static void teardown(fixture *f) {
  hark_tracker_destroy(f->tracker);
  free(f);
}

static uint64_t id_of(const hark_subscriber *owner) {
  return (uint64_t)(uintptr_t)owner;
}

static int track(fixture *f, int owner, const char *topic, const char *key, const char *meta,
                 char ref[HARK_TRACKER_REF_SIZE]) {
  return hark_tracker_track(f->tracker, &f->owners[owner], topic, strlen(topic), key, strlen(key),
                            meta, meta ? strlen(meta) : 0, ref);
}

/* ---- reading lists ---- */

typedef struct listed {
  recorded_entry entries[128];
  size_t count;
} listed;

static void collect(void *ctx, const hark_tracker_entry *entry) {
  listed *l = ctx;
  assert_true(l->count < 128);
  copy_entry(&l->entries[l->count++], entry);
}

static listed list(fixture *f, const char *topic) {
  listed l = {.count = 0};
  hark_tracker_list(f->tracker, topic, strlen(topic), collect, &l);
  assert_int_equal(hark_tracker_count(f->tracker, topic, strlen(topic)), l.count);
  return l;
}

/* The value of a string member in a compact JSON object, or "" when absent. */
static const char *member(const char *meta, const char *name) {
  static char value[64];
  char pattern[64];
  snprintf(pattern, sizeof(pattern), "\"%s\":\"", name);
  const char *at = strstr(meta, pattern);
  value[0] = '\0';
  if (at == NULL) return value;
  at += strlen(pattern);
  size_t len = strcspn(at, "\"");
  snprintf(value, sizeof(value), "%.*s", (int)len, at);
  return value;
}

/* ---- pool checklist, run for several pool sizes ---- */

static const unsigned pool_sizes[] = {1, 2, 8, 512};

static void track_returns_ref_listed(void **unused) {
  (void)unused;
  for (size_t p = 0; p < 4; p++) {
    fixture *f = setup(pool_sizes[p]);
    char ref[HARK_TRACKER_REF_SIZE];
    assert_int_equal(track(f, 0, "room:1", "me", "{\"name\":\"me\"}", ref), 0);

    listed l = list(f, "room:1");
    assert_int_equal(l.count, 1);
    assert_string_equal(l.entries[0].key, "me");
    assert_int_equal(l.entries[0].owner, id_of(&f->owners[0]));
    assert_string_equal(member(l.entries[0].meta, "phx_ref"), ref);
    assert_string_equal(member(l.entries[0].meta, "name"), "me");
    teardown(f);
  }
}

static void one_owner_on_many_topics(void **unused) {
  (void)unused;
  for (size_t p = 0; p < 4; p++) {
    fixture *f = setup(pool_sizes[p]);
    char refs[100][HARK_TRACKER_REF_SIZE];
    char topic[32];
    for (int i = 0; i < 100; i++) {
      snprintf(topic, sizeof(topic), "topic%d", i);
      assert_int_equal(track(f, 0, topic, "me", NULL, refs[i]), 0);
    }
    for (int i = 0; i < 100; i++) {
      snprintf(topic, sizeof(topic), "topic%d", i);
      listed l = list(f, topic);
      assert_int_equal(l.count, 1);
      assert_string_equal(member(l.entries[0].meta, "phx_ref"), refs[i]);
    }

    /* untrack on every topic empties them all. */
    for (int i = 0; i < 100; i++) {
      snprintf(topic, sizeof(topic), "topic%d", i);
      hark_tracker_untrack(f->tracker, &f->owners[0], topic, strlen(topic), "me", 2);
    }
    for (int i = 0; i < 100; i++) {
      snprintf(topic, sizeof(topic), "topic%d", i);
      assert_int_equal(list(f, topic).count, 0);
    }
    teardown(f);
  }
}

static void untrack_all_across_shards(void **unused) {
  (void)unused;
  for (size_t p = 0; p < 4; p++) {
    fixture *f = setup(pool_sizes[p]);
    char topic[32];
    for (int i = 0; i < 100; i++) {
      snprintf(topic, sizeof(topic), "topic%d", i);
      assert_int_equal(track(f, 0, topic, "me", NULL, NULL), 0);
      assert_int_equal(track(f, 0, topic, "me-too", NULL, NULL), 0);
      assert_int_equal(track(f, 1, topic, "other", NULL, NULL), 0);
    }
    f->diffs.count = 0;
    hark_tracker_untrack_all(f->tracker, &f->owners[0]);

    /* One diff per topic, carrying both of the owner's leaves. */
    assert_int_equal(f->diffs.count, 100);
    for (size_t c = 0; c < f->diffs.count; c++) {
      assert_int_equal(f->diffs.calls[c].join_count, 0);
      assert_int_equal(f->diffs.calls[c].leave_count, 2);
    }
    for (int i = 0; i < 100; i++) {
      snprintf(topic, sizeof(topic), "topic%d", i);
      listed l = list(f, topic);
      assert_int_equal(l.count, 1);
      assert_string_equal(l.entries[0].key, "other");
    }
    teardown(f);
  }
}

static void update_sets_ref_and_prev(void **unused) {
  (void)unused;
  for (size_t p = 0; p < 4; p++) {
    fixture *f = setup(pool_sizes[p]);
    char ref[HARK_TRACKER_REF_SIZE], new_ref[HARK_TRACKER_REF_SIZE];
    assert_int_equal(track(f, 0, "room:1", "me", "{\"status\":\"online\"}", ref), 0);
    assert_int_equal(hark_tracker_update(f->tracker, &f->owners[0], "room:1", 6, "me", 2,
                                         "{\"status\":\"away\"}", 17, new_ref),
                     0);
    assert_string_not_equal(ref, new_ref);

    listed l = list(f, "room:1");
    assert_int_equal(l.count, 1);
    assert_string_equal(member(l.entries[0].meta, "status"), "away");
    assert_string_equal(member(l.entries[0].meta, "phx_ref"), new_ref);
    assert_string_equal(member(l.entries[0].meta, "phx_ref_prev"), ref);
    teardown(f);
  }
}

/* ---- errors ---- */

static void duplicate_track_rejected(void **unused) {
  (void)unused;
  fixture *f = setup(2);
  assert_int_equal(track(f, 0, "room:1", "me", NULL, NULL), 0);
  f->diffs.count = 0;
  assert_int_equal(track(f, 0, "room:1", "me", NULL, NULL), HARK_EALREADY);
  assert_int_equal(f->diffs.count, 0);

  /* Same owner on another topic or key, or another owner: accepted. */
  assert_int_equal(track(f, 0, "room:2", "me", NULL, NULL), 0);
  assert_int_equal(track(f, 0, "room:1", "me2", NULL, NULL), 0);
  assert_int_equal(track(f, 1, "room:1", "me", NULL, NULL), 0);
  assert_int_equal(list(f, "room:1").count, 3);
  teardown(f);
}

static void update_without_presence(void **unused) {
  (void)unused;
  fixture *f = setup(1);
  char ref[HARK_TRACKER_REF_SIZE] = "unchanged";
  assert_int_equal(hark_tracker_update(f->tracker, &f->owners[0], "room:1", 6, "me", 2, "{}", 2,
                                       ref),
                   HARK_ENOENT);
  assert_string_equal(ref, "unchanged");
  assert_int_equal(f->diffs.count, 0);
  teardown(f);
}

static void untrack_of_nothing(void **unused) {
  (void)unused;
  fixture *f = setup(1);
  hark_tracker_untrack(f->tracker, &f->owners[0], "room:1", 6, "me", 2);
  hark_tracker_untrack_all(f->tracker, &f->owners[0]);
  assert_int_equal(f->diffs.count, 0);

  /* untrack of one key keeps the owner's other keys. */
  assert_int_equal(track(f, 0, "room:1", "a", NULL, NULL), 0);
  assert_int_equal(track(f, 0, "room:1", "b", NULL, NULL), 0);
  hark_tracker_untrack(f->tracker, &f->owners[0], "room:1", 6, "a", 1);
  listed l = list(f, "room:1");
  assert_int_equal(l.count, 1);
  assert_string_equal(l.entries[0].key, "b");
  teardown(f);
}

static void invalid_meta_rejected(void **unused) {
  (void)unused;
  static const char *invalid[] = {"[1,2]", "\"text\"", "{\"a\":", "42", "null", "{} {}"};
  fixture *f = setup(1);
  for (size_t i = 0; i < sizeof(invalid) / sizeof(*invalid); i++) {
    assert_int_equal(track(f, 0, "room:1", "me", invalid[i], NULL), HARK_EINVAL);
  }
  assert_int_equal(list(f, "room:1").count, 0);
  assert_int_equal(f->diffs.count, 0);

  assert_int_equal(track(f, 0, "room:1", "me", NULL, NULL), 0);
  assert_int_equal(hark_tracker_update(f->tracker, &f->owners[0], "room:1", 6, "me", 2, "[]", 2,
                                       NULL),
                   HARK_EINVAL);
  assert_int_equal(f->diffs.count, 1);
  teardown(f);
}

static void empty_meta_is_object(void **unused) {
  (void)unused;
  fixture *f = setup(1);
  char ref[HARK_TRACKER_REF_SIZE];
  assert_int_equal(track(f, 0, "room:1", "a", NULL, ref), 0);
  assert_int_equal(hark_tracker_track(f->tracker, &f->owners[0], "room:1", 6, "b", 1, "", 0, NULL),
                   0);
  listed l = list(f, "room:1");
  char expected[64];
  snprintf(expected, sizeof(expected), "{\"phx_ref\":\"%s\"}", ref);
  assert_string_equal(l.entries[0].meta, expected);
  assert_int_equal(strlen(l.entries[1].meta), strlen(expected));
  teardown(f);
}

static void update_with_empty_meta(void **unused) {
  (void)unused;
  fixture *f = setup(1);
  char ref[HARK_TRACKER_REF_SIZE], new_ref[HARK_TRACKER_REF_SIZE];
  assert_int_equal(track(f, 0, "room:1", "a", "{\"x\":1}", ref), 0);
  assert_int_equal(
      hark_tracker_update(f->tracker, &f->owners[0], "room:1", 6, "a", 1, NULL, 0, new_ref), 0);
  listed l = list(f, "room:1");
  char expected[128];
  snprintf(expected, sizeof(expected), "{\"phx_ref\":\"%s\",\"phx_ref_prev\":\"%s\"}", new_ref,
           ref);
  assert_string_equal(l.entries[0].meta, expected);
  teardown(f);
}

static void meta_keeps_key_order(void **unused) {
  (void)unused;
  fixture *f = setup(1);
  char ref[HARK_TRACKER_REF_SIZE];
  assert_int_equal(track(f, 0, "room:1", "a", "{ \"z\": 1, \"a\": [1, 2], \"m\": {\"x\": null} }",
                         ref),
                   0);
  listed l = list(f, "room:1");
  char expected[128];
  snprintf(expected, sizeof(expected), "{\"z\":1,\"a\":[1,2],\"m\":{\"x\":null},\"phx_ref\":\"%s\"}",
           ref);
  assert_string_equal(l.entries[0].meta, expected);
  teardown(f);
}

/* Tracks `meta` for key "a" on room:1 and checks the stored meta against
 * `expected_members`, the compact members that come before phx_ref. */
static void assert_stored_meta(const char *meta, const char *expected_members) {
  fixture *f = setup(1);
  char ref[HARK_TRACKER_REF_SIZE];
  assert_int_equal(track(f, 0, "room:1", "a", meta, ref), 0);
  listed l = list(f, "room:1");
  assert_int_equal(l.count, 1);

  char expected[4096];
  snprintf(expected, sizeof(expected), "{%s%s\"phx_ref\":\"%s\"}", expected_members,
           expected_members[0] ? "," : "", ref);
  assert_string_equal(l.entries[0].meta, expected);
  teardown(f);
}

static void forged_refs_removed(void **unused) {
  (void)unused;
  assert_stored_meta("{\"phx_ref\":\"forged\",\"n\":1,\"phx_ref_prev\":\"old\"}", "\"n\":1");
  /* An escaped name is the same name. */
  assert_stored_meta("{\"phx\\u005fref\":\"forged\",\"n\":1}", "\"n\":1");
  assert_stored_meta("{\"phx_ref\":{\"nested\":[1]}}", "");
  /* Only top-level members are refs. */
  assert_stored_meta("{\"m\":{\"phx_ref\":\"x\"}}", "\"m\":{\"phx_ref\":\"x\"}");
}

static void forged_ref_removed_on_update(void **unused) {
  (void)unused;
  fixture *f = setup(1);
  char ref[HARK_TRACKER_REF_SIZE], new_ref[HARK_TRACKER_REF_SIZE];
  assert_int_equal(track(f, 0, "room:1", "a", NULL, ref), 0);
  const char *meta = "{\"phx_ref_prev\":\"forged\",\"n\":2,\"phx_ref\":\"forged\"}";
  assert_int_equal(hark_tracker_update(f->tracker, &f->owners[0], "room:1", 6, "a", 1, meta,
                                       strlen(meta), new_ref),
                   0);
  listed l = list(f, "room:1");
  char expected[128];
  snprintf(expected, sizeof(expected), "{\"n\":2,\"phx_ref\":\"%s\",\"phx_ref_prev\":\"%s\"}",
           new_ref, ref);
  assert_string_equal(l.entries[0].meta, expected);
  teardown(f);
}

static void meta_made_compact(void **unused) {
  (void)unused;
  assert_stored_meta(" \n{ \"s\" : \"a b\\t\\\" c\" ,\r\n \"x\":[ 1 , { \"y\" : true } ] } \n",
                     "\"s\":\"a b\\t\\\" c\",\"x\":[1,{\"y\":true}]");
  assert_stored_meta("{\"online_at\":1733300000000,\"device\":\"web\"}",
                     "\"online_at\":1733300000000,\"device\":\"web\"");
  assert_stored_meta("{}", "");
  assert_stored_meta("{\"n\":-1.5e3,\"u\":\"\\u00e9\xc3\xa9\"}", "\"n\":-1.5e3,\"u\":\"\\u00e9\xc3\xa9\"");
}

static void duplicate_member_keeps_last(void **unused) {
  (void)unused;
  assert_stored_meta("{\"a\":1,\"b\":2,\"a\":3}", "\"b\":2,\"a\":3");
  assert_stored_meta("{\"\\u0061\":1,\"a\":3}", "\"a\":3");
}

static void unloadable_meta_rejected(void **unused) {
  (void)unused;
  static const char *invalid[] = {
      "{\"a\":\"x\\u0000y\"}",         /* jansson rejects NUL in strings */
      "{\"a\\u0000\":1}",               /* and in names */
      "{\"a\":9223372036854775808}",    /* above int64 */
      "{\"a\":-9223372036854775809}",   /* below int64 */
      "{\"a\":123456789012345678901}",  /* far above int64 */
      "{\"a\":1e400}",                  /* overflows a double */
      "{\"a\":\"\xff\"}",               /* not UTF-8 */
      "{\"a\":1,}",                     /* trailing comma */
      "{'a':1}",
      " ",
  };
  fixture *f = setup(1);
  for (size_t i = 0; i < sizeof(invalid) / sizeof(*invalid); i++) {
    int expected = i + 1 == sizeof(invalid) / sizeof(*invalid) ? 0 : HARK_EINVAL;
    assert_int_equal(track(f, 0, "room:1", "me", invalid[i], NULL), expected);
  }
  assert_int_equal(list(f, "room:1").count, 1);
  teardown(f);

  assert_stored_meta("{\"a\":9223372036854775807,\"b\":-9223372036854775808}",
                     "\"a\":9223372036854775807,\"b\":-9223372036854775808");
  assert_stored_meta("{\"a\":\"\\\\u0000\"}", "\"a\":\"\\\\u0000\"");
}

static void long_meta_stored(void **unused) {
  (void)unused;
  /* Long enough that the stamped meta no longer fits the stack buffer of a
   * typical track, short enough for the recorder's 256-byte copy. */
  char meta[2100], members[2048];
  size_t at = (size_t)snprintf(members, sizeof(members), "\"pad\":\"");
  for (int i = 0; i < 190; i++) members[at++] = (char)('a' + i % 26);
  members[at++] = '"';
  members[at] = '\0';
  snprintf(meta, sizeof(meta), "{ %s }", members);
  assert_stored_meta(meta, members);
}

/* ---- refs ---- */

static void ref_format(void **unused) {
  (void)unused;
  fixture *f = setup(4);
  char refs[3][HARK_TRACKER_REF_SIZE];
  for (int i = 0; i < 3; i++) {
    assert_int_equal(track(f, i, "room:1", "me", NULL, refs[i]), 0);
    assert_int_equal(strlen(refs[i]), 16);
    for (int c = 0; c < 16; c++) {
      char ch = refs[i][c];
      bool url_safe = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
                      (ch >= '0' && ch <= '9') || ch == '-' || ch == '_';
      assert_true(url_safe);
    }
  }
  /* The clock is fixed, so only the counter differs: refs are still unique. */
  assert_string_not_equal(refs[0], refs[1]);
  assert_string_not_equal(refs[1], refs[2]);

  /* The first 64 bits are the clock's nanoseconds, big-endian: 1.7e18 ns
   * starts with the bytes 0x17 0x97 0x9c, which encode as "F5ec". */
  assert_memory_equal(refs[0], "F5ec", 4);
  teardown(f);
}

/* ---- diffs ---- */

static void diff_for_track(void **unused) {
  (void)unused;
  fixture *f = setup(2);
  char ref[HARK_TRACKER_REF_SIZE];
  assert_int_equal(track(f, 0, "room:1", "me", "{\"n\":1}", ref), 0);

  assert_int_equal(f->diffs.count, 1);
  recorded_call *call = &f->diffs.calls[0];
  assert_string_equal(call->topic, "room:1");
  assert_int_equal(call->join_count, 1);
  assert_int_equal(call->leave_count, 0);
  assert_string_equal(call->joins[0].key, "me");
  assert_int_equal(call->joins[0].owner, id_of(&f->owners[0]));
  char expected[64];
  snprintf(expected, sizeof(expected), "{\"n\":1,\"phx_ref\":\"%s\"}", ref);
  assert_string_equal(call->joins[0].meta, expected);
  teardown(f);
}

static void diff_for_update(void **unused) {
  (void)unused;
  fixture *f = setup(2);
  char ref[HARK_TRACKER_REF_SIZE], new_ref[HARK_TRACKER_REF_SIZE];
  assert_int_equal(track(f, 0, "room:1", "me", "{\"n\":1}", ref), 0);
  assert_int_equal(hark_tracker_update(f->tracker, &f->owners[0], "room:1", 6, "me", 2,
                                       "{\"n\":2}", 7, new_ref),
                   0);

  assert_int_equal(f->diffs.count, 2);
  recorded_call *call = &f->diffs.calls[1];
  assert_string_equal(call->topic, "room:1");
  assert_int_equal(call->join_count, 1);
  assert_int_equal(call->leave_count, 1);
  char old_meta[64], new_meta[96];
  snprintf(old_meta, sizeof(old_meta), "{\"n\":1,\"phx_ref\":\"%s\"}", ref);
  snprintf(new_meta, sizeof(new_meta), "{\"n\":2,\"phx_ref\":\"%s\",\"phx_ref_prev\":\"%s\"}",
           new_ref, ref);
  assert_string_equal(call->leaves[0].meta, old_meta);
  assert_string_equal(call->joins[0].meta, new_meta);
  assert_string_equal(call->joins[0].key, "me");
  assert_string_equal(call->leaves[0].key, "me");
  teardown(f);
}

static void diff_for_untrack(void **unused) {
  (void)unused;
  fixture *f = setup(2);
  char ref[HARK_TRACKER_REF_SIZE];
  assert_int_equal(track(f, 0, "room:1", "me", NULL, ref), 0);
  hark_tracker_untrack(f->tracker, &f->owners[0], "room:1", 6, "me", 2);

  assert_int_equal(f->diffs.count, 2);
  recorded_call *call = &f->diffs.calls[1];
  assert_int_equal(call->join_count, 0);
  assert_int_equal(call->leave_count, 1);
  assert_string_equal(call->leaves[0].key, "me");
  assert_string_equal(member(call->leaves[0].meta, "phx_ref"), ref);
  teardown(f);
}

static void diff_for_untrack_all(void **unused) {
  (void)unused;
  fixture *f = setup(1);
  assert_int_equal(track(f, 0, "room:1", "a", NULL, NULL), 0);
  assert_int_equal(track(f, 0, "room:2", "b", NULL, NULL), 0);
  assert_int_equal(track(f, 0, "room:1", "c", NULL, NULL), 0);
  f->diffs.count = 0;
  hark_tracker_untrack_all(f->tracker, &f->owners[0]);

  assert_int_equal(f->diffs.count, 2);
  for (size_t c = 0; c < 2; c++) {
    recorded_call *call = &f->diffs.calls[c];
    assert_int_equal(call->join_count, 0);
    if (strcmp(call->topic, "room:1") == 0) {
      assert_int_equal(call->leave_count, 2);
    } else {
      assert_string_equal(call->topic, "room:2");
      assert_int_equal(call->leave_count, 1);
      assert_string_equal(call->leaves[0].key, "b");
    }
  }
  teardown(f);
}

/* ---- reads ---- */

static void list_groups_by_key(void **unused) {
  (void)unused;
  fixture *f = setup(1);
  assert_int_equal(track(f, 0, "room:1", "bob", "{\"i\":1}", NULL), 0);
  assert_int_equal(track(f, 0, "room:1", "alice", "{\"i\":2}", NULL), 0);
  assert_int_equal(track(f, 1, "room:1", "bob", "{\"i\":3}", NULL), 0);
  assert_int_equal(track(f, 2, "room:1", "carol", "{\"i\":4}", NULL), 0);
  assert_int_equal(track(f, 2, "room:1", "alice", "{\"i\":5}", NULL), 0);

  listed l = list(f, "room:1");
  assert_int_equal(l.count, 5);
  static const char *keys[] = {"bob", "bob", "alice", "alice", "carol"};
  static const char *order[] = {"\"i\":1", "\"i\":3", "\"i\":2", "\"i\":5", "\"i\":4"};
  for (int i = 0; i < 5; i++) {
    assert_string_equal(l.entries[i].key, keys[i]);
    assert_non_null(strstr(l.entries[i].meta, order[i]));
  }

  /* An update keeps the entry's place. */
  assert_int_equal(hark_tracker_update(f->tracker, &f->owners[0], "room:1", 6, "bob", 3,
                                       "{\"i\":6}", 7, NULL),
                   0);
  l = list(f, "room:1");
  assert_non_null(strstr(l.entries[0].meta, "\"i\":6"));
  teardown(f);
}

static void get_by_key_lists_owners(void **unused) {
  (void)unused;
  fixture *f = setup(8);
  assert_int_equal(track(f, 0, "room:1", "alice", NULL, NULL), 0);
  assert_int_equal(track(f, 1, "room:1", "alice", NULL, NULL), 0);
  assert_int_equal(track(f, 2, "room:1", "bob", NULL, NULL), 0);

  listed l = {.count = 0};
  hark_tracker_get_by_key(f->tracker, "room:1", 6, "alice", 5, collect, &l);
  assert_int_equal(l.count, 2);
  assert_int_equal(l.entries[0].owner, id_of(&f->owners[0]));
  assert_int_equal(l.entries[1].owner, id_of(&f->owners[1]));

  l.count = 0;
  hark_tracker_get_by_key(f->tracker, "room:1", 6, "nobody", 6, collect, &l);
  hark_tracker_get_by_key(f->tracker, "room:9", 6, "alice", 5, collect, &l);
  assert_int_equal(l.count, 0);
  assert_int_equal(hark_tracker_count(f->tracker, "room:9", 6), 0);
  teardown(f);
}

static void create_requires_node_name(void **unused) {
  (void)unused;
  hark_tracker *tracker = NULL;
  hark_tracker_options options = {.node_name = NULL};
  assert_int_equal(hark_tracker_create(&tracker, &options), HARK_EINVAL);
  options.node_name = "";
  assert_int_equal(hark_tracker_create(&tracker, &options), HARK_EINVAL);
  assert_null(tracker);

  /* pool_size 0 means 1, and the wall clock is the default. */
  options.node_name = "n";
  assert_int_equal(hark_tracker_create(&tracker, &options), 0);
  assert_int_equal(hark_tracker_pool_size(tracker), 1);
  hark_subscriber owner = {0};
  char ref[HARK_TRACKER_REF_SIZE];
  assert_int_equal(hark_tracker_track(tracker, &owner, "t", 1, "k", 1, NULL, 0, ref), 0);
  assert_int_equal(strlen(ref), 16);
  hark_tracker_destroy(tracker);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(track_returns_ref_listed),
      cmocka_unit_test(one_owner_on_many_topics),
      cmocka_unit_test(untrack_all_across_shards),
      cmocka_unit_test(update_sets_ref_and_prev),
      cmocka_unit_test(duplicate_track_rejected),
      cmocka_unit_test(update_without_presence),
      cmocka_unit_test(untrack_of_nothing),
      cmocka_unit_test(invalid_meta_rejected),
      cmocka_unit_test(empty_meta_is_object),
      cmocka_unit_test(update_with_empty_meta),
      cmocka_unit_test(meta_keeps_key_order),
      cmocka_unit_test(forged_refs_removed),
      cmocka_unit_test(forged_ref_removed_on_update),
      cmocka_unit_test(meta_made_compact),
      cmocka_unit_test(duplicate_member_keeps_last),
      cmocka_unit_test(unloadable_meta_rejected),
      cmocka_unit_test(long_meta_stored),
      cmocka_unit_test(ref_format),
      cmocka_unit_test(diff_for_track),
      cmocka_unit_test(diff_for_update),
      cmocka_unit_test(diff_for_untrack),
      cmocka_unit_test(diff_for_untrack_all),
      cmocka_unit_test(list_groups_by_key),
      cmocka_unit_test(get_by_key_lists_owners),
      cmocka_unit_test(create_requires_node_name),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
