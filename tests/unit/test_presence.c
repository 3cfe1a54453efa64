/* Unit tests for Presence on the real pubsub and tracker: the list and
 * get_by_key JSON shapes, the presence_diff broadcast of every track,
 * untrack, untrack_all and update, the fetch hook, argument errors, and
 * destroy with entries left. Diffs are captured by a plain subscriber of
 * the topic through the default dispatcher. Most tests run with one tracker
 * shard and with eight. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "hark/presence.h"

#define TOPIC(s) s, sizeof(s) - 1
#define KEY(s) s, sizeof(s) - 1
#define META(s) s, sizeof(s) - 1

static const char room1[] = "room:1";
static const char room2[] = "room:2";

/* ---- A subscriber that records every message it receives ---- */

typedef struct record {
  char *topic;
  char *event;
  char *payload;
  size_t payload_len;
} record;

typedef struct recorder {
  hark_subscriber sub;
  record items[64];
  size_t count;
} recorder;

static char *copy_text(const char *bytes, size_t len) {
  char *text = malloc(len + 1);
  assert_non_null(text);
  if (len > 0) memcpy(text, bytes, len);
  text[len] = '\0';
  return text;
}

static void recorder_on_message(hark_subscriber *sub, const char *topic, size_t topic_len,
                                const hark_message *msg) {
  recorder *r = (recorder *)sub;
  assert_true(r->count < sizeof r->items / sizeof r->items[0]);
  record *item = &r->items[r->count++];
  item->topic = copy_text(topic, topic_len);
  item->event = copy_text(msg->event, msg->event_len);
  item->payload = copy_text(msg->payload, msg->payload_len);
  item->payload_len = msg->payload_len;
}

/* Frees what was recorded so far and starts counting from zero. */
static void recorder_clear(recorder *r) {
  for (size_t i = 0; i < r->count; i++) {
    free(r->items[i].topic);
    free(r->items[i].event);
    free(r->items[i].payload);
  }
  r->count = 0;
}

/* ---- Fixture: a loop, a pubsub, a presence and a recorder on two topics ---- */

typedef struct fixture {
  uv_loop_t loop;
  hark_pubsub *ps;
  hark_presence *presence;
  recorder rec;
  /* Owners are only compared by address, so they need no subscription. */
  hark_subscriber owners[4];
  /* Calls made to the fetch hook, when a test installs it. */
  int fetch_calls;
} fixture;

static void add_user_field(void *ctx, const char *topic, size_t topic_len, const char *key,
                           size_t key_len, json_t *entry);

static int setup_fixture(void **state, unsigned pool_size, int with_fetch) {
  fixture *fx = calloc(1, sizeof *fx);
  if (!fx || uv_loop_init(&fx->loop) != 0) return -1;

  hark_pubsub_options ps_options = {.node_name = "node-a", .pool_size = 1};
  if (hark_pubsub_create(&fx->ps, &fx->loop, &ps_options) != 0) return -1;

  hark_presence_options options = {.pubsub = fx->ps, .node_name = "node-a",
                                   .pool_size = pool_size};
  if (with_fetch) {
    options.fetch = add_user_field;
    options.fetch_ctx = fx;
  }
  if (hark_presence_create(&fx->presence, &options) != 0) return -1;

  fx->rec.sub.on_message = recorder_on_message;
  if (hark_pubsub_subscribe(fx->ps, &fx->rec.sub, TOPIC(room1), NULL) != 0) return -1;
  if (hark_pubsub_subscribe(fx->ps, &fx->rec.sub, TOPIC(room2), NULL) != 0) return -1;
  *state = fx;
  return 0;
}

static int setup_pool1(void **state) { return setup_fixture(state, 1, 0); }
static int setup_pool8(void **state) { return setup_fixture(state, 8, 0); }
static int setup_fetch(void **state) { return setup_fixture(state, 1, 1); }

static int teardown(void **state) {
  fixture *fx = *state;
  hark_presence_destroy(fx->presence);
  hark_pubsub_unsubscribe_all(fx->ps, &fx->rec.sub);
  hark_pubsub_destroy(fx->ps);
  recorder_clear(&fx->rec);
  if (uv_loop_close(&fx->loop) != 0) return -1;
  free(fx);
  return 0;
}

/* ---- JSON helpers ---- */

/* Parses JSON text, failing the test on invalid JSON or a duplicate object
 * key, so a meta with two "phx_ref" members is caught. */
static json_t *parse(const char *text, size_t len) {
  json_error_t error;
  json_t *value = json_loadb(text, len, JSON_REJECT_DUPLICATES, &error);
  if (!value) fail_msg("invalid JSON (%s): %.*s", error.text, (int)len, text);
  return value;
}

static void assert_json_equal(json_t *expected, json_t *actual) {
  if (json_equal(expected, actual)) return;
  char *e = json_dumps(expected, JSON_COMPACT | JSON_SORT_KEYS);
  char *a = json_dumps(actual, JSON_COMPACT | JSON_SORT_KEYS);
  fail_msg("JSON differs\n  expected: %s\n  actual:   %s", e, a);
}

/* Returns the topic's list as parsed JSON, which the caller decrefs. */
static json_t *list_json(fixture *fx, const char *topic, size_t topic_len) {
  size_t len = 0;
  char *text = hark_presence_list(fx->presence, topic, topic_len, &len);
  assert_non_null(text);
  assert_int_equal(len, strlen(text));
  json_t *value = parse(text, len);
  free(text);
  return value;
}

/* Checks that exactly one message was recorded since the last clear, that
 * it is a presence_diff on `topic`, and returns its payload parsed. */
static json_t *only_diff(fixture *fx, const char *topic) {
  assert_int_equal(fx->rec.count, 1);
  record *item = &fx->rec.items[0];
  assert_string_equal(item->topic, topic);
  assert_string_equal(item->event, "presence_diff");
  json_t *diff = parse(item->payload, item->payload_len);
  assert_int_equal(json_object_size(diff), 2);
  assert_true(json_is_object(json_object_get(diff, "joins")));
  assert_true(json_is_object(json_object_get(diff, "leaves")));
  return diff;
}

/* A phx_ref is 16 characters of URL-safe base64. */
static void assert_valid_ref(const char *ref) {
  assert_non_null(ref);
  assert_int_equal(strlen(ref), HARK_TRACKER_REF_SIZE - 1);
  for (const char *c = ref; *c; c++) {
    int ok = (*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') ||
             *c == '-' || *c == '_';
    if (!ok) fail_msg("phx_ref \"%s\" has a character outside URL-safe base64", ref);
  }
}

static const char *meta_ref(json_t *meta, const char *name) {
  return json_string_value(json_object_get(meta, name));
}

/* Tracks, checks success and stores the new phx_ref in `ref`. */
static void track_ok(fixture *fx, int owner, const char *topic, const char *key, const char *meta,
                     char ref[HARK_TRACKER_REF_SIZE]) {
  int rc = hark_presence_track(fx->presence, &fx->owners[owner], topic, strlen(topic), key,
                               strlen(key), meta, meta ? strlen(meta) : 0, ref);
  assert_int_equal(rc, 0);
  assert_valid_ref(ref);
}

/* ---- list and get_by_key ---- */

static void test_list_unknown_topic(void **state) {
  fixture *fx = *state;
  size_t len = 99;
  char *text = hark_presence_list(fx->presence, TOPIC("room:nobody"), &len);
  assert_non_null(text);
  assert_string_equal(text, "{}");
  assert_int_equal(len, 2);
  free(text);

  text = hark_presence_list(fx->presence, "", 0, &len);
  assert_non_null(text);
  assert_string_equal(text, "{}");
  free(text);
  assert_int_equal(fx->rec.count, 0);
}

static void test_list_groups_by_key(void **state) {
  fixture *fx = *state;
  char a[HARK_TRACKER_REF_SIZE], b[HARK_TRACKER_REF_SIZE], c[HARK_TRACKER_REF_SIZE];
  track_ok(fx, 0, room1, "alice", "{\"device\":\"phone\"}", a);
  track_ok(fx, 1, room1, "bob", "{\"device\":\"desk\"}", b);
  track_ok(fx, 2, room1, "alice", "{\"device\":\"laptop\"}", c);
  assert_string_not_equal(a, b);
  assert_string_not_equal(a, c);
  assert_string_not_equal(b, c);

  /* Two owners under one key make one key with both metas, in tracking
   * order. */
  json_t *expected = json_pack(
      "{s:{s:[{s:s,s:s},{s:s,s:s}]},s:{s:[{s:s,s:s}]}}", "alice", "metas", "device", "phone",
      "phx_ref", a, "device", "laptop", "phx_ref", c, "bob", "metas", "device", "desk", "phx_ref", b);
  json_t *list = list_json(fx, TOPIC(room1));
  assert_json_equal(expected, list);
  json_decref(list);
  json_decref(expected);

  /* The other topic is untouched. */
  list = list_json(fx, TOPIC(room2));
  assert_int_equal(json_object_size(list), 0);
  json_decref(list);
}

static void test_list_escapes_keys(void **state) {
  fixture *fx = *state;
  char a[HARK_TRACKER_REF_SIZE], b[HARK_TRACKER_REF_SIZE];
  const char quoted[] = "a \"quoted\" \\ key\n";
  const char accented[] = "caf\xc3\xa9 \xe2\x9c\x93";
  track_ok(fx, 0, room1, quoted, NULL, a);
  track_ok(fx, 1, room1, accented, NULL, b);

  json_t *list = list_json(fx, TOPIC(room1));
  assert_int_equal(json_object_size(list), 2);
  json_t *metas = json_object_get(json_object_get(list, quoted), "metas");
  assert_int_equal(json_array_size(metas), 1);
  assert_string_equal(meta_ref(json_array_get(metas, 0), "phx_ref"), a);
  metas = json_object_get(json_object_get(list, accented), "metas");
  assert_int_equal(json_array_size(metas), 1);
  assert_string_equal(meta_ref(json_array_get(metas, 0), "phx_ref"), b);
  json_decref(list);
}

static void test_get_by_key(void **state) {
  fixture *fx = *state;
  char a[HARK_TRACKER_REF_SIZE], b[HARK_TRACKER_REF_SIZE], c[HARK_TRACKER_REF_SIZE];
  track_ok(fx, 0, room1, "alice", "{\"n\":1}", a);
  track_ok(fx, 1, room1, "alice", "{\"n\":2}", b);
  track_ok(fx, 2, room1, "bob", "{\"n\":3}", c);

  size_t len = 0;
  char *text = hark_presence_get_by_key(fx->presence, TOPIC(room1), KEY("alice"), &len);
  assert_non_null(text);
  assert_int_equal(len, strlen(text));
  json_t *entry = parse(text, len);
  json_t *expected = json_pack("{s:[{s:i,s:s},{s:i,s:s}]}", "metas", "n", 1, "phx_ref", a, "n", 2,
                               "phx_ref", b);
  assert_json_equal(expected, entry);
  json_decref(expected);
  json_decref(entry);
  free(text);

  assert_null(hark_presence_get_by_key(fx->presence, TOPIC(room1), KEY("carol"), &len));
  assert_null(hark_presence_get_by_key(fx->presence, TOPIC(room2), KEY("alice"), &len));
  assert_null(hark_presence_get_by_key(fx->presence, TOPIC(room1), KEY("alic"), &len));

  /* After the last meta of a key leaves, the key is gone. */
  hark_presence_untrack(fx->presence, &fx->owners[2], TOPIC(room1), KEY("bob"));
  assert_null(hark_presence_get_by_key(fx->presence, TOPIC(room1), KEY("bob"), &len));
}

/* ---- Diffs ---- */

static void test_track_broadcasts_join(void **state) {
  fixture *fx = *state;
  char ref[HARK_TRACKER_REF_SIZE];
  track_ok(fx, 0, room1, "alice", "{\"status\":\"away\",\"n\":[1,2]}", ref);

  json_t *diff = only_diff(fx, room1);
  json_t *expected = json_pack("{s:{s:{s:[{s:s,s:[i,i],s:s}]}},s:{}}", "joins", "alice", "metas",
                               "status", "away", "n", 1, 2, "phx_ref", ref, "leaves");
  assert_json_equal(expected, diff);
  json_decref(expected);

  /* The list shows the same meta as the diff. */
  json_t *list = list_json(fx, TOPIC(room1));
  assert_json_equal(json_object_get(diff, "joins"), list);
  json_decref(list);
  json_decref(diff);
}

static void test_track_empty_meta(void **state) {
  fixture *fx = *state;
  char a[HARK_TRACKER_REF_SIZE], b[HARK_TRACKER_REF_SIZE];

  /* NULL and the empty string both mean {}. */
  track_ok(fx, 0, room1, "alice", NULL, a);
  track_ok(fx, 1, room1, "bob", "", b);
  json_t *expected = json_pack("{s:{s:[{s:s}]},s:{s:[{s:s}]}}", "alice", "metas", "phx_ref", a,
                               "bob", "metas", "phx_ref", b);
  json_t *list = list_json(fx, TOPIC(room1));
  assert_json_equal(expected, list);
  json_decref(list);
  json_decref(expected);
  assert_int_equal(fx->rec.count, 2);
}

/* The tracker's phx_ref replaces one that the caller put in the meta, so a
 * client cannot forge another client's ref. */
static void test_track_replaces_caller_ref(void **state) {
  fixture *fx = *state;
  char ref[HARK_TRACKER_REF_SIZE];
  track_ok(fx, 0, room1, "alice", "{\"phx_ref\":\"forged\",\"x\":1}", ref);
  assert_string_not_equal(ref, "forged");

  /* parse() rejects duplicate members, so one phx_ref is in the text. */
  json_t *diff = only_diff(fx, room1);
  json_t *meta = json_array_get(json_object_get(json_object_get(json_object_get(diff, "joins"),
                                                                "alice"), "metas"), 0);
  assert_string_equal(meta_ref(meta, "phx_ref"), ref);
  json_decref(diff);

  json_t *list = list_json(fx, TOPIC(room1));
  meta = json_array_get(json_object_get(json_object_get(list, "alice"), "metas"), 0);
  assert_string_equal(meta_ref(meta, "phx_ref"), ref);
  json_decref(list);
}

static void test_untrack_broadcasts_leave(void **state) {
  fixture *fx = *state;
  char a[HARK_TRACKER_REF_SIZE], b[HARK_TRACKER_REF_SIZE];
  track_ok(fx, 0, room1, "alice", "{\"n\":1}", a);
  track_ok(fx, 1, room1, "alice", "{\"n\":2}", b);
  recorder_clear(&fx->rec);

  hark_presence_untrack(fx->presence, &fx->owners[0], TOPIC(room1), KEY("alice"));
  json_t *diff = only_diff(fx, room1);
  json_t *expected = json_pack("{s:{},s:{s:{s:[{s:i,s:s}]}}}", "joins", "leaves", "alice", "metas",
                               "n", 1, "phx_ref", a);
  assert_json_equal(expected, diff);
  json_decref(expected);
  json_decref(diff);

  /* The other owner's meta stays. */
  json_t *list = list_json(fx, TOPIC(room1));
  expected = json_pack("{s:{s:[{s:i,s:s}]}}", "alice", "metas", "n", 2, "phx_ref", b);
  assert_json_equal(expected, list);
  json_decref(expected);
  json_decref(list);
}

static void test_untrack_nothing_is_silent(void **state) {
  fixture *fx = *state;
  char ref[HARK_TRACKER_REF_SIZE];
  track_ok(fx, 0, room1, "alice", NULL, ref);
  recorder_clear(&fx->rec);

  /* Wrong key, wrong owner, wrong topic: nothing changes, so no diff. */
  hark_presence_untrack(fx->presence, &fx->owners[0], TOPIC(room1), KEY("bob"));
  hark_presence_untrack(fx->presence, &fx->owners[1], TOPIC(room1), KEY("alice"));
  hark_presence_untrack(fx->presence, &fx->owners[0], TOPIC(room2), KEY("alice"));
  hark_presence_untrack_all(fx->presence, &fx->owners[3]);
  assert_int_equal(fx->rec.count, 0);

  json_t *list = list_json(fx, TOPIC(room1));
  assert_int_equal(json_object_size(list), 1);
  json_decref(list);
}

/* untrack_all sends one diff per topic, with every key of the owner on that
 * topic. */
static void test_untrack_all_one_diff_per_topic(void **state) {
  fixture *fx = *state;
  char a[HARK_TRACKER_REF_SIZE], b[HARK_TRACKER_REF_SIZE], c[HARK_TRACKER_REF_SIZE];
  char d[HARK_TRACKER_REF_SIZE];
  track_ok(fx, 0, room1, "alice", "{\"n\":1}", a);
  track_ok(fx, 0, room1, "alice-tab", "{\"n\":2}", b);
  track_ok(fx, 0, room2, "alice", "{\"n\":3}", c);
  track_ok(fx, 1, room1, "bob", "{\"n\":4}", d);
  recorder_clear(&fx->rec);

  hark_presence_untrack_all(fx->presence, &fx->owners[0]);
  assert_int_equal(fx->rec.count, 2);
  int seen_room1 = 0, seen_room2 = 0;
  for (size_t i = 0; i < fx->rec.count; i++) {
    record *item = &fx->rec.items[i];
    assert_string_equal(item->event, "presence_diff");
    json_t *diff = parse(item->payload, item->payload_len);
    json_t *expected;
    if (strcmp(item->topic, room1) == 0) {
      seen_room1++;
      expected = json_pack("{s:{},s:{s:{s:[{s:i,s:s}]},s:{s:[{s:i,s:s}]}}}", "joins", "leaves",
                           "alice", "metas", "n", 1, "phx_ref", a, "alice-tab", "metas", "n", 2,
                           "phx_ref", b);
    } else {
      assert_string_equal(item->topic, room2);
      seen_room2++;
      expected = json_pack("{s:{},s:{s:{s:[{s:i,s:s}]}}}", "joins", "leaves", "alice", "metas",
                           "n", 3, "phx_ref", c);
    }
    assert_json_equal(expected, diff);
    json_decref(expected);
    json_decref(diff);
  }
  assert_int_equal(seen_room1, 1);
  assert_int_equal(seen_room2, 1);

  json_t *list = list_json(fx, TOPIC(room1));
  json_t *expected = json_pack("{s:{s:[{s:i,s:s}]}}", "bob", "metas", "n", 4, "phx_ref", d);
  assert_json_equal(expected, list);
  json_decref(expected);
  json_decref(list);
  list = list_json(fx, TOPIC(room2));
  assert_int_equal(json_object_size(list), 0);
  json_decref(list);
}

static void test_update_replaces_meta(void **state) {
  fixture *fx = *state;
  char old_ref[HARK_TRACKER_REF_SIZE], other[HARK_TRACKER_REF_SIZE];
  track_ok(fx, 0, room1, "alice", "{\"status\":\"online\"}", old_ref);
  track_ok(fx, 1, room1, "alice", "{\"status\":\"idle\"}", other);
  recorder_clear(&fx->rec);

  char new_ref[HARK_TRACKER_REF_SIZE] = "";
  int rc = hark_presence_update(fx->presence, &fx->owners[0], TOPIC(room1), KEY("alice"),
                                META("{\"status\":\"away\",\"typing\":true}"), new_ref);
  assert_int_equal(rc, 0);
  assert_valid_ref(new_ref);
  assert_string_not_equal(new_ref, old_ref);

  /* One diff: the new meta in joins, the old one in leaves, same key. */
  json_t *diff = only_diff(fx, room1);
  json_t *expected = json_pack(
      "{s:{s:{s:[{s:s,s:b,s:s,s:s}]}},s:{s:{s:[{s:s,s:s}]}}}", "joins", "alice", "metas", "status",
      "away", "typing", 1, "phx_ref", new_ref, "phx_ref_prev", old_ref, "leaves", "alice", "metas",
      "status", "online", "phx_ref", old_ref);
  assert_json_equal(expected, diff);
  json_decref(expected);
  json_decref(diff);

  /* The list replaces the meta (no merge with the old fields) and keeps the
   * other owner's. */
  json_t *list = list_json(fx, TOPIC(room1));
  json_t *metas = json_object_get(json_object_get(list, "alice"), "metas");
  assert_int_equal(json_array_size(metas), 2);
  int found_new = 0, found_other = 0;
  for (size_t i = 0; i < 2; i++) {
    json_t *meta = json_array_get(metas, i);
    const char *ref = meta_ref(meta, "phx_ref");
    if (strcmp(ref, new_ref) == 0) {
      found_new++;
      assert_string_equal(meta_ref(meta, "phx_ref_prev"), old_ref);
      assert_string_equal(meta_ref(meta, "status"), "away");
    } else {
      assert_string_equal(ref, other);
      found_other++;
      assert_null(json_object_get(meta, "phx_ref_prev"));
    }
  }
  assert_int_equal(found_new, 1);
  assert_int_equal(found_other, 1);
  json_decref(list);

  /* A second update chains phx_ref_prev to the first update's ref. */
  recorder_clear(&fx->rec);
  char third_ref[HARK_TRACKER_REF_SIZE] = "";
  rc = hark_presence_update(fx->presence, &fx->owners[0], TOPIC(room1), KEY("alice"), META("{}"),
                            third_ref);
  assert_int_equal(rc, 0);
  diff = only_diff(fx, room1);
  expected = json_pack("{s:{s:{s:[{s:s,s:s}]}},s:{s:{s:[{s:s,s:b,s:s,s:s}]}}}", "joins", "alice",
                       "metas", "phx_ref", third_ref, "phx_ref_prev", new_ref, "leaves", "alice",
                       "metas", "status", "away", "typing", 1, "phx_ref", new_ref, "phx_ref_prev",
                       old_ref);
  assert_json_equal(expected, diff);
  json_decref(expected);
  json_decref(diff);
}

static void test_update_without_presence(void **state) {
  fixture *fx = *state;
  char ref[HARK_TRACKER_REF_SIZE];
  assert_int_equal(hark_presence_update(fx->presence, &fx->owners[0], TOPIC(room1), KEY("alice"),
                                        META("{}"), ref),
                   HARK_ENOENT);

  /* Tracked under another key, topic or owner is still not tracked. */
  track_ok(fx, 0, room1, "alice", NULL, ref);
  recorder_clear(&fx->rec);
  assert_int_equal(hark_presence_update(fx->presence, &fx->owners[0], TOPIC(room1), KEY("bob"),
                                        META("{}"), ref),
                   HARK_ENOENT);
  assert_int_equal(hark_presence_update(fx->presence, &fx->owners[0], TOPIC(room2), KEY("alice"),
                                        META("{}"), ref),
                   HARK_ENOENT);
  assert_int_equal(hark_presence_update(fx->presence, &fx->owners[1], TOPIC(room1), KEY("alice"),
                                        META("{}"), ref),
                   HARK_ENOENT);
  assert_int_equal(fx->rec.count, 0);

  /* After an untrack the entry is gone for update too. */
  hark_presence_untrack(fx->presence, &fx->owners[0], TOPIC(room1), KEY("alice"));
  recorder_clear(&fx->rec);
  assert_int_equal(hark_presence_update(fx->presence, &fx->owners[0], TOPIC(room1), KEY("alice"),
                                        META("{}"), ref),
                   HARK_ENOENT);
  assert_int_equal(fx->rec.count, 0);
}

/* ---- Errors ---- */

static void test_track_invalid_utf8_key(void **state) {
  fixture *fx = *state;
  static const char *bad_keys[] = {"\xff", "ab\xc3", "\xc0\xaf", "\xed\xa0\x80"};
  for (size_t i = 0; i < sizeof bad_keys / sizeof bad_keys[0]; i++) {
    char ref[HARK_TRACKER_REF_SIZE];
    int rc = hark_presence_track(fx->presence, &fx->owners[0], TOPIC(room1), bad_keys[i],
                                 strlen(bad_keys[i]), META("{}"), ref);
    assert_int_equal(rc, HARK_EINVAL);
  }
  assert_int_equal(fx->rec.count, 0);
  json_t *list = list_json(fx, TOPIC(room1));
  assert_int_equal(json_object_size(list), 0);
  json_decref(list);
}

static void test_meta_not_object(void **state) {
  fixture *fx = *state;
  static const char *bad_metas[] = {"[1,2]", "\"text\"", "42", "null", "true", "{\"a\":",
                                    "not json", "{} {}"};
  for (size_t i = 0; i < sizeof bad_metas / sizeof bad_metas[0]; i++) {
    char ref[HARK_TRACKER_REF_SIZE];
    int rc = hark_presence_track(fx->presence, &fx->owners[0], TOPIC(room1), KEY("alice"),
                                 bad_metas[i], strlen(bad_metas[i]), ref);
    if (rc != HARK_EINVAL) fail_msg("track with meta %s returned %d", bad_metas[i], rc);
  }
  assert_int_equal(fx->rec.count, 0);

  /* An update with a bad meta leaves the entry as it was. */
  char ref[HARK_TRACKER_REF_SIZE];
  track_ok(fx, 0, room1, "alice", "{\"n\":1}", ref);
  recorder_clear(&fx->rec);
  for (size_t i = 0; i < sizeof bad_metas / sizeof bad_metas[0]; i++) {
    char new_ref[HARK_TRACKER_REF_SIZE];
    int rc = hark_presence_update(fx->presence, &fx->owners[0], TOPIC(room1), KEY("alice"),
                                  bad_metas[i], strlen(bad_metas[i]), new_ref);
    if (rc != HARK_EINVAL) fail_msg("update with meta %s returned %d", bad_metas[i], rc);
  }
  assert_int_equal(fx->rec.count, 0);
  json_t *list = list_json(fx, TOPIC(room1));
  json_t *expected = json_pack("{s:{s:[{s:i,s:s}]}}", "alice", "metas", "n", 1, "phx_ref", ref);
  assert_json_equal(expected, list);
  json_decref(expected);
  json_decref(list);
}

static void test_track_twice_already(void **state) {
  fixture *fx = *state;
  char ref[HARK_TRACKER_REF_SIZE], again[HARK_TRACKER_REF_SIZE];
  track_ok(fx, 0, room1, "alice", "{\"n\":1}", ref);
  recorder_clear(&fx->rec);

  int rc = hark_presence_track(fx->presence, &fx->owners[0], TOPIC(room1), KEY("alice"),
                               META("{\"n\":2}"), again);
  assert_int_equal(rc, HARK_EALREADY);
  assert_int_equal(fx->rec.count, 0);
  json_t *list = list_json(fx, TOPIC(room1));
  json_t *expected = json_pack("{s:{s:[{s:i,s:s}]}}", "alice", "metas", "n", 1, "phx_ref", ref);
  assert_json_equal(expected, list);
  json_decref(expected);
  json_decref(list);

  /* The same owner under another key or on another topic is a new entry. */
  track_ok(fx, 0, room1, "alice-2", NULL, again);
  track_ok(fx, 0, room2, "alice", NULL, again);
  assert_int_equal(fx->rec.count, 2);
}

static void test_create_invalid_options(void **state) {
  fixture *fx = *state;
  hark_presence *presence = NULL;
  assert_int_equal(hark_presence_create(&presence, NULL), HARK_EINVAL);

  hark_presence_options options = {.pubsub = NULL, .node_name = "node-a"};
  assert_int_equal(hark_presence_create(&presence, &options), HARK_EINVAL);
  options = (hark_presence_options){.pubsub = fx->ps, .node_name = NULL};
  assert_int_equal(hark_presence_create(&presence, &options), HARK_EINVAL);
  options = (hark_presence_options){.pubsub = fx->ps, .node_name = ""};
  assert_int_equal(hark_presence_create(&presence, &options), HARK_EINVAL);
  assert_null(presence);

  /* destroy(NULL) is a no-op. */
  hark_presence_destroy(NULL);
}

/* ---- The fetch hook ---- */

/* Adds "user": {"name": KEY} next to "metas", as an application would add a
 * user record. It also counts calls and checks its arguments. */
static void add_user_field(void *ctx, const char *topic, size_t topic_len, const char *key,
                           size_t key_len, json_t *entry) {
  fixture *fx = ctx;
  fx->fetch_calls++;
  assert_true(topic_len == strlen(room1));
  assert_true(memcmp(topic, room1, topic_len) == 0 || memcmp(topic, room2, topic_len) == 0);
  assert_true(json_is_array(json_object_get(entry, "metas")));
  json_object_set_new(entry, "user", json_pack("{s:s%}", "name", key, key_len));
}

static void assert_user_field(json_t *entry, const char *name) {
  json_t *user = json_object_get(entry, "user");
  assert_non_null(user);
  assert_string_equal(json_string_value(json_object_get(user, "name")), name);
  assert_true(json_is_array(json_object_get(entry, "metas")));
}

static void test_fetch_adds_fields(void **state) {
  fixture *fx = *state;
  char a[HARK_TRACKER_REF_SIZE], b[HARK_TRACKER_REF_SIZE];
  track_ok(fx, 0, room1, "alice", "{\"n\":1}", a);
  json_t *diff = only_diff(fx, room1);
  json_t *expected = json_pack("{s:{s:{s:[{s:i,s:s}],s:{s:s}}},s:{}}", "joins", "alice", "metas",
                               "n", 1, "phx_ref", a, "user", "name", "alice", "leaves");
  assert_json_equal(expected, diff);
  json_decref(expected);
  json_decref(diff);
  track_ok(fx, 1, room1, "bob", "{\"n\":2}", b);

  /* list: every key is fetched. */
  int calls_before = fx->fetch_calls;
  json_t *list = list_json(fx, TOPIC(room1));
  assert_int_equal(fx->fetch_calls - calls_before, 2);
  assert_int_equal(json_object_size(list), 2);
  assert_user_field(json_object_get(list, "alice"), "alice");
  assert_user_field(json_object_get(list, "bob"), "bob");
  json_decref(list);

  /* get_by_key */
  size_t len;
  char *text = hark_presence_get_by_key(fx->presence, TOPIC(room1), KEY("bob"), &len);
  assert_non_null(text);
  json_t *entry = parse(text, len);
  free(text);
  expected = json_pack("{s:[{s:i,s:s}],s:{s:s}}", "metas", "n", 2, "phx_ref", b, "user", "name",
                       "bob");
  assert_json_equal(expected, entry);
  json_decref(expected);
  json_decref(entry);

  /* An update's diff has the field on both sides, and a leave on its side. */
  recorder_clear(&fx->rec);
  char c[HARK_TRACKER_REF_SIZE];
  assert_int_equal(hark_presence_update(fx->presence, &fx->owners[0], TOPIC(room1), KEY("alice"),
                                        META("{\"n\":3}"), c),
                   0);
  diff = only_diff(fx, room1);
  assert_user_field(json_object_get(json_object_get(diff, "joins"), "alice"), "alice");
  assert_user_field(json_object_get(json_object_get(diff, "leaves"), "alice"), "alice");
  json_decref(diff);

  recorder_clear(&fx->rec);
  hark_presence_untrack(fx->presence, &fx->owners[1], TOPIC(room1), KEY("bob"));
  diff = only_diff(fx, room1);
  assert_int_equal(json_object_size(json_object_get(diff, "joins")), 0);
  assert_user_field(json_object_get(json_object_get(diff, "leaves"), "bob"), "bob");
  json_decref(diff);
}

/* ---- Dispatchers and lifetime ---- */

typedef struct counting_dispatcher {
  hark_dispatcher dispatcher;
  int calls;
  size_t entries;
} counting_dispatcher;

static void count_dispatch(void *ctx, const char *topic, size_t topic_len,
                           const hark_dispatch_entry *entries, size_t count,
                           const hark_subscriber *from, const hark_message *msg) {
  (void)topic;
  (void)topic_len;
  (void)entries;
  counting_dispatcher *d = ctx;
  assert_null(from);
  assert_int_equal(msg->event_len, strlen("presence_diff"));
  assert_memory_equal(msg->event, "presence_diff", msg->event_len);
  d->calls++;
  d->entries += count;
}

/* With dispatcher_name set, diffs go through that dispatcher and not the
 * default one; an unregistered name broadcasts nothing. */
static void test_named_dispatcher(void **state) {
  fixture *fx = *state;
  counting_dispatcher counter = {.dispatcher = {.name = "counting", .dispatch = count_dispatch}};
  counter.dispatcher.ctx = &counter;
  assert_int_equal(hark_pubsub_register_dispatcher(fx->ps, &counter.dispatcher), 0);

  hark_presence *named = NULL, *missing = NULL;
  hark_presence_options options = {.pubsub = fx->ps, .node_name = "node-a",
                                   .dispatcher_name = "counting"};
  assert_int_equal(hark_presence_create(&named, &options), 0);
  options.dispatcher_name = "not-registered";
  assert_int_equal(hark_presence_create(&missing, &options), 0);

  char ref[HARK_TRACKER_REF_SIZE];
  assert_int_equal(hark_presence_track(named, &fx->owners[0], TOPIC(room1), KEY("alice"), NULL, 0,
                                       ref),
                   0);
  assert_int_equal(counter.calls, 1);
  assert_int_equal(counter.entries, 1);
  assert_int_equal(fx->rec.count, 0);

  assert_int_equal(hark_presence_track(missing, &fx->owners[0], TOPIC(room1), KEY("alice"), NULL,
                                       0, ref),
                   0);
  assert_int_equal(counter.calls, 1);
  assert_int_equal(fx->rec.count, 0);

  hark_presence_destroy(named);
  hark_presence_destroy(missing);
}

/* Destroy with entries on many topics and keys frees everything (the
 * sanitizer build checks for leaks) and broadcasts nothing. */
static void test_destroy_with_entries(void **state) {
  fixture *fx = *state;
  hark_presence *presence = NULL;
  hark_presence_options options = {.pubsub = fx->ps, .node_name = "node-b", .pool_size = 4};
  assert_int_equal(hark_presence_create(&presence, &options), 0);
  assert_non_null(hark_presence_tracker(presence));

  char topic[32], key[32], ref[HARK_TRACKER_REF_SIZE];
  for (int t = 0; t < 20; t++) {
    snprintf(topic, sizeof topic, "room:%d", t);
    for (int k = 0; k < 3; k++) {
      snprintf(key, sizeof key, "user-%d", k);
      for (int o = 0; o < 4; o++) {
        int rc = hark_presence_track(presence, &fx->owners[o], topic, strlen(topic), key,
                                     strlen(key), META("{\"pad\":\"xxxxxxxxxxxxxxxx\"}"), ref);
        assert_int_equal(rc, 0);
      }
    }
  }
  assert_int_equal(hark_tracker_count(hark_presence_tracker(presence), TOPIC("room:7")), 12);
  json_t *list;
  size_t len;
  char *text = hark_presence_list(presence, TOPIC("room:7"), &len);
  assert_non_null(text);
  list = parse(text, len);
  free(text);
  assert_int_equal(json_object_size(list), 3);
  assert_int_equal(json_array_size(json_object_get(json_object_get(list, "user-2"), "metas")), 4);
  json_decref(list);

  /* The recorder saw the diffs on room:1 and room:2 only. */
  assert_int_equal(fx->rec.count, 24);
  recorder_clear(&fx->rec);
  hark_presence_destroy(presence);
  assert_int_equal(fx->rec.count, 0);
}

#define BOTH_POOLS(fn) \
  cmocka_unit_test_setup_teardown(fn, setup_pool1, teardown), \
      cmocka_unit_test_setup_teardown(fn, setup_pool8, teardown)

int main(void) {
  const struct CMUnitTest tests[] = {
      BOTH_POOLS(test_list_unknown_topic),
      BOTH_POOLS(test_list_groups_by_key),
      BOTH_POOLS(test_list_escapes_keys),
      BOTH_POOLS(test_get_by_key),
      BOTH_POOLS(test_track_broadcasts_join),
      BOTH_POOLS(test_track_empty_meta),
      BOTH_POOLS(test_track_replaces_caller_ref),
      BOTH_POOLS(test_untrack_broadcasts_leave),
      BOTH_POOLS(test_untrack_nothing_is_silent),
      BOTH_POOLS(test_untrack_all_one_diff_per_topic),
      BOTH_POOLS(test_update_replaces_meta),
      BOTH_POOLS(test_update_without_presence),
      BOTH_POOLS(test_track_invalid_utf8_key),
      BOTH_POOLS(test_meta_not_object),
      BOTH_POOLS(test_track_twice_already),
      cmocka_unit_test_setup_teardown(test_create_invalid_options, setup_pool1, teardown),
      cmocka_unit_test_setup_teardown(test_fetch_adds_fields, setup_fetch, teardown),
      cmocka_unit_test_setup_teardown(test_named_dispatcher, setup_pool1, teardown),
      cmocka_unit_test_setup_teardown(test_destroy_with_entries, setup_pool1, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
