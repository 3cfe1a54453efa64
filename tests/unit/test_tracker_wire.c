/* Wire codec tests: round trips of every message type, the size of a join,
 * and rejection of malformed input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "hark/error.h"
#include "tracker/state.h"
#include "tracker/wire.h"

static hark__rref ref(const char *name, uint64_t vsn) {
  hark__rref r = {name, strlen(name), vsn};
  return r;
}

static void join(hark__state *state, uint64_t owner, const char *topic, const char *key,
                 const char *meta) {
  assert_int_equal(hark__state_join(state, owner, topic, strlen(topic), key, strlen(key), meta,
                                    strlen(meta), NULL),
                   0);
}

static void assert_dotsets_equal(const hark__dotset *a, const hark__dotset *b) {
  assert_true(hark__dotset_equal(a, b));
}

/* Compares two deltas field by field; replicas may be in another order. */
static void assert_deltas_equal(const hark__delta *a, const hark__delta *b) {
  assert_int_equal(a->kind, b->kind);
  assert_true(hark__rref_equal(hark__delta_ref(a, a->creator), hark__delta_ref(b, b->creator)));
  for (size_t i = 0; i < a->replica_count; i++) {
    long k = hark__delta_find_replica(b, hark__delta_ref(a, i));
    assert_true(k >= 0);
    const hark__delta_replica *x = &a->replicas[i], *y = &b->replicas[k];
    assert_int_equal(x->has_context, y->has_context);
    assert_int_equal(x->has_start, y->has_start);
    assert_int_equal(x->has_end, y->has_end);
    if (x->has_context) assert_int_equal(x->context, y->context);
    if (x->has_start) assert_int_equal(x->start, y->start);
    if (x->has_end) assert_int_equal(x->end, y->end);
    assert_dotsets_equal(&x->cloud, &y->cloud);
  }
  assert_int_equal(a->value_count, b->value_count);
  for (size_t i = 0; i < a->value_count; i++) {
    hark__value_view v, w;
    hark__delta_value_at(a, i, &v);
    hark__delta_value_at(b, i, &w);
    assert_true(hark__rref_equal(v.replica, w.replica));
    assert_int_equal(v.counter, w.counter);
    assert_int_equal(v.owner, w.owner);
    assert_memory_equal(v.topic, w.topic, v.topic_len);
    assert_int_equal(v.topic_len, w.topic_len);
    assert_int_equal(v.key_len, w.key_len);
    assert_memory_equal(v.key, w.key, v.key_len);
    assert_int_equal(v.meta_len, w.meta_len);
    assert_memory_equal(v.meta, w.meta, v.meta_len);
  }
}

/* A state of replica "a" that knows "b", with joins, an update and a leave. */
static hark__state *sample_state(void) {
  hark__state *state = hark__state_new(ref("a", 11));
  assert_non_null(state);
  assert_int_equal(hark__state_replica_up(state, ref("b", 22), NULL), 0);
  join(state, 1, "room:lobby", "alice", "{\"n\":1}");
  join(state, 2, "room:lobby", "bob", "{\"n\":2}");
  join(state, 0xffffffffffffULL, "room:other", "carol", "{}");
  assert_int_equal(hark__state_leave_join(state, 2, "room:lobby", 10, "bob", 3, "{\"n\":3}", 7,
                                          NULL),
                   0);
  assert_int_equal(hark__state_leave(state, 1, "room:lobby", 10, "alice", 5, NULL), 0);
  return state;
}

static void heartbeat_round_trip(void **unused) {
  (void)unused;
  hark__state *state = sample_state();
  hark__delta *delta = hark__state_delta(state);
  hark__clock clock = {0};
  assert_int_equal(hark__state_clocks(state, &clock), 0);

  hark_buf buf = {0};
  assert_int_equal(hark__wire_encode(&buf, HARK__WIRE_HEARTBEAT, ref("a", 11), 0, &clock, delta),
                   0);
  assert_int_equal((unsigned char)buf.data[0], HARK__WIRE_VERSION);

  hark__wire_msg msg;
  const char *error = NULL;
  assert_int_equal(hark__wire_decode(buf.data, buf.len, &msg, &error), 0);
  assert_int_equal(msg.type, HARK__WIRE_HEARTBEAT);
  assert_true(hark__rref_equal(msg.from, ref("a", 11)));
  assert_true(hark__clock_equal(&msg.clock, &clock));
  assert_non_null(msg.payload);
  assert_deltas_equal(delta, msg.payload);

  hark__wire_msg_free(&msg);
  hark_buf_free(&buf);
  hark__clock_free(&clock);
  hark__delta_free(delta);
  hark__state_free(state);
}

static void empty_heartbeat_round_trip(void **unused) {
  (void)unused;
  hark__clock clock = {0};
  assert_int_equal(hark__clock_set(&clock, ref("a", 11), 5), 0);
  assert_int_equal(hark__clock_set(&clock, ref("b", 22), 0), 0);
  hark_buf buf = {0};
  assert_int_equal(hark__wire_encode(&buf, HARK__WIRE_HEARTBEAT, ref("a", 11), 0, &clock, NULL),
                   0);
  hark__wire_msg msg;
  assert_int_equal(hark__wire_decode(buf.data, buf.len, &msg, NULL), 0);
  assert_null(msg.payload);
  assert_true(hark__clock_equal(&msg.clock, &clock));
  hark__wire_msg_free(&msg);
  hark_buf_free(&buf);
  hark__clock_free(&clock);
}

static void transfer_round_trip(void **unused) {
  (void)unused;
  hark__state *state = sample_state();
  hark__clock clock = {0};
  assert_int_equal(hark__clock_set(&clock, ref("a", 11), 0), 0);
  assert_int_equal(hark__clock_set(&clock, ref("b", 22), 0), 0);
  hark__delta *extract = hark__state_extract(state, ref("b", 22), &clock);
  assert_non_null(extract);

  hark_buf buf = {0};
  assert_int_equal(hark__wire_encode(&buf, HARK__WIRE_TRANSFER_REQ, ref("b", 22), 77, &clock,
                                     NULL),
                   0);
  hark__wire_msg msg;
  assert_int_equal(hark__wire_decode(buf.data, buf.len, &msg, NULL), 0);
  assert_int_equal(msg.type, HARK__WIRE_TRANSFER_REQ);
  assert_int_equal(msg.request_id, 77);
  assert_true(hark__clock_equal(&msg.clock, &clock));
  hark__wire_msg_free(&msg);

  hark_buf_reset(&buf);
  assert_int_equal(hark__wire_encode(&buf, HARK__WIRE_TRANSFER_ACK, ref("a", 11), 77, NULL,
                                     extract),
                   0);
  assert_int_equal(hark__wire_decode(buf.data, buf.len, &msg, NULL), 0);
  assert_int_equal(msg.type, HARK__WIRE_TRANSFER_ACK);
  assert_int_equal(msg.request_id, 77);
  assert_int_equal(msg.payload->kind, HARK__DELTA_FULL);
  assert_deltas_equal(extract, msg.payload);
  hark__wire_msg_free(&msg);

  hark_buf_reset(&buf);
  assert_int_equal(hark__wire_encode(&buf, HARK__WIRE_GRACEFUL_PERMDOWN, ref("a", 11), 0, NULL,
                                     NULL),
                   0);
  assert_int_equal(hark__wire_decode(buf.data, buf.len, &msg, NULL), 0);
  assert_int_equal(msg.type, HARK__WIRE_GRACEFUL_PERMDOWN);
  assert_true(hark__rref_equal(msg.from, ref("a", 11)));
  hark__wire_msg_free(&msg);

  hark_buf_free(&buf);
  hark__clock_free(&clock);
  hark__delta_free(extract);
  hark__state_free(state);
}

/* The target is at most about 100 bytes per join of a small meta. */
static void join_costs_under_100_bytes(void **unused) {
  (void)unused;
  enum { JOINS = 1000 };
  hark__state *state = hark__state_new(ref("node-a@10.0.0.1", 1733300000000001ULL));
  uint64_t owner_base = 0x7f3a12345000ULL;
  for (int i = 0; i < JOINS; i++) {
    char key[17], meta[96];
    snprintf(key, sizeof(key), "user-%011d", i);
    snprintf(meta, sizeof(meta), "{\"online_at\":1733300000000,\"phx_ref\":\"GO4jrlG6h43-%04d\"}",
             i % 10000);
    join(state, owner_base + 64 * (uint64_t)i, "room:lobby", key, meta);
  }
  hark__delta *delta = hark__state_delta(state);
  hark__clock clock = {0};
  assert_int_equal(hark__state_clocks(state, &clock), 0);
  hark_buf buf = {0};
  assert_int_equal(hark__wire_encode(&buf, HARK__WIRE_HEARTBEAT, hark__state_self(state), 0,
                                     &clock, delta),
                   0);
  double per_join = (double)buf.len / JOINS;
  print_message("heartbeat of %d joins: %zu bytes, %.1f bytes per join "
                "(16-byte key, 56-byte meta)\n",
                JOINS, buf.len, per_join);
  assert_true(per_join <= 100.0);

  hark_buf_free(&buf);
  hark__clock_free(&clock);
  hark__delta_free(delta);
  hark__state_free(state);
}

/* ---- malformed input ---- */

static hark_buf valid_heartbeat(void) {
  hark__state *state = sample_state();
  hark__delta *delta = hark__state_delta(state);
  hark__clock clock = {0};
  assert_int_equal(hark__state_clocks(state, &clock), 0);
  hark_buf buf = {0};
  assert_int_equal(hark__wire_encode(&buf, HARK__WIRE_HEARTBEAT, ref("a", 11), 0, &clock, delta),
                   0);
  hark__clock_free(&clock);
  hark__delta_free(delta);
  hark__state_free(state);
  return buf;
}

static void assert_rejected(const void *data, size_t len, const char *expected) {
  hark__wire_msg msg;
  const char *error = NULL;
  int rc = hark__wire_decode(data, len, &msg, &error);
  if (rc != HARK_EINVAL) fail_msg("accepted %zu bytes; expected \"%s\"", len, expected ? expected : "any error");
  if (expected != NULL && strcmp(error, expected) != 0) {
    fail_msg("error \"%s\", expected \"%s\"", error, expected);
  }
  assert_null(msg.payload);
  assert_null(msg.from_name);
}

static void every_truncation_rejected(void **unused) {
  (void)unused;
  hark_buf buf = valid_heartbeat();
  for (size_t len = 0; len < buf.len; len++) assert_rejected(buf.data, len, NULL);
  hark_buf_free(&buf);
}

static void trailing_byte_rejected(void **unused) {
  (void)unused;
  hark_buf buf = valid_heartbeat();
  hark_buf_append_byte(&buf, 0);
  assert_rejected(buf.data, buf.len, "trailing bytes");
  hark_buf_free(&buf);
}

/* A tiny builder for hand-made messages. */
typedef struct builder {
  unsigned char bytes[512];
  size_t len;
} builder;

static void put(builder *b, uint64_t byte) {
  b->bytes[b->len++] = (unsigned char)byte;
}

static void var(builder *b, uint64_t v) {
  do {
    uint8_t byte = v & 0x7f;
    v >>= 7;
    put(b, v ? byte | 0x80 : byte);
  } while (v);
}

static void str(builder *b, const char *s) {
  var(b, strlen(s));
  for (size_t i = 0; s[i]; i++) put(b, (unsigned char)s[i]);
}

/* Version, type, a table of "a"/1 and "b"/2, and from = 0. */
static void header(builder *b, uint8_t type) {
  put(b, HARK__WIRE_VERSION);
  put(b, type);
  var(b, 2);
  str(b, "a");
  var(b, 1);
  str(b, "b");
  var(b, 2);
  var(b, 0);
}

/* An ack carrying a window delta whose values the caller appends. */
static void ack_start(builder *b, size_t sections) {
  header(b, HARK__WIRE_TRANSFER_ACK);
  var(b, 9);  /* request id */
  put(b, 0);  /* window */
  var(b, 0);  /* creator */
  var(b, sections);
}

static void section(builder *b, uint64_t replica, uint8_t flags, uint64_t start, uint64_t end) {
  var(b, replica);
  put(b, flags);
  if (flags & 2) var(b, start);
  if (flags & 4) var(b, end);
}

static void one_value(builder *b, uint64_t replica, uint64_t counter_z, const char *meta) {
  var(b, 1); /* topics */
  str(b, "t");
  var(b, 1); /* values */
  var(b, replica);
  var(b, counter_z);
  var(b, 0); /* owner */
  var(b, 0); /* topic */
  str(b, "k");
  str(b, meta);
}

static void hand_made_ack_accepted(void **unused) {
  (void)unused;
  builder b = {0};
  ack_start(&b, 1);
  section(&b, 0, 6, 0, 1);
  var(&b, 1);  /* one interval */
  var(&b, 0);  /* gap: starts at 1 */
  var(&b, 0);  /* length - 1 */
  one_value(&b, 0, 2, "{}"); /* zigzag 2 = +1 */
  hark__wire_msg msg;
  const char *error = NULL;
  int rc = hark__wire_decode(b.bytes, b.len, &msg, &error);
  if (rc != 0) fail_msg("rejected: %s", error);
  assert_int_equal(msg.payload->value_count, 1);
  assert_int_equal(msg.payload->values[0].counter, 1);
  hark__wire_msg_free(&msg);
}

static void bad_headers_rejected(void **unused) {
  (void)unused;
  builder b = {0};
  put(&b, 99);
  put(&b, 1);
  assert_rejected(b.bytes, b.len, "unsupported format version");

  b.len = 0;
  put(&b, HARK__WIRE_VERSION);
  put(&b, 9);
  assert_rejected(b.bytes, b.len, "unknown message type");

  b.len = 0;
  put(&b, HARK__WIRE_VERSION);
  put(&b, HARK__WIRE_GRACEFUL_PERMDOWN);
  var(&b, 1000); /* more replicas than bytes */
  assert_rejected(b.bytes, b.len, "count exceeds the message size");

  b.len = 0;
  put(&b, HARK__WIRE_VERSION);
  put(&b, HARK__WIRE_GRACEFUL_PERMDOWN);
  var(&b, 2);
  str(&b, "a");
  var(&b, 1);
  str(&b, "a");
  var(&b, 1);
  var(&b, 0);
  assert_rejected(b.bytes, b.len, "duplicate replica");

  b.len = 0;
  put(&b, HARK__WIRE_VERSION);
  put(&b, HARK__WIRE_GRACEFUL_PERMDOWN);
  var(&b, 1);
  str(&b, "a");
  put(&b, 0x81); /* vsn 1 spelled in two bytes */
  put(&b, 0x00);
  var(&b, 0);
  assert_rejected(b.bytes, b.len, "varint is not minimal");

  b.len = 0;
  header(&b, HARK__WIRE_HEARTBEAT);
  var(&b, 1);
  var(&b, 2); /* clock key index out of range */
  var(&b, 0);
  assert_rejected(b.bytes, b.len, "index out of range");

  b.len = 0;
  header(&b, HARK__WIRE_HEARTBEAT);
  var(&b, 2);
  var(&b, 1);
  var(&b, 5);
  var(&b, 1);
  var(&b, 6);
  put(&b, 0);
  assert_rejected(b.bytes, b.len, "duplicate clock key");

  b.len = 0;
  header(&b, HARK__WIRE_HEARTBEAT);
  var(&b, 0);
  put(&b, 2);
  assert_rejected(b.bytes, b.len, "invalid payload flag");
}

static void bad_deltas_rejected(void **unused) {
  (void)unused;
  builder b = {0};
  ack_start(&b, 1);
  section(&b, 0, 6, 5, 4);
  var(&b, 0);
  assert_rejected(b.bytes, b.len, "range start above range end");

  b.len = 0;
  ack_start(&b, 1);
  section(&b, 0, 1, 0, 0); /* a context in a window delta */
  var(&b, 5);
  var(&b, 0);
  assert_rejected(b.bytes, b.len, "section fields do not match the delta kind");

  b.len = 0;
  ack_start(&b, 2);
  section(&b, 1, 0, 0, 0);
  var(&b, 0);
  section(&b, 1, 0, 0, 0);
  var(&b, 0);
  assert_rejected(b.bytes, b.len, "duplicate delta section");

  b.len = 0;
  ack_start(&b, 1);
  section(&b, 1, 0, 0, 0);
  var(&b, 2);
  var(&b, 0);
  var(&b, 3); /* 1..4 */
  var(&b, 0); /* then 5.., adjacent */
  var(&b, 0);
  assert_rejected(b.bytes, b.len, "adjacent cloud intervals");

  b.len = 0;
  ack_start(&b, 1);
  section(&b, 1, 0, 0, 0);
  var(&b, 1);
  var(&b, HARK__WIRE_MAX_COUNTER);
  var(&b, 0);
  assert_rejected(b.bytes, b.len, "counter out of range");

  b.len = 0;
  ack_start(&b, 0);
  one_value(&b, 1, 2, "[1]");
  assert_rejected(b.bytes, b.len, "meta is not a JSON object");

  b.len = 0;
  ack_start(&b, 0);
  one_value(&b, 1, 0, "{}"); /* counter 0 */
  assert_rejected(b.bytes, b.len, "counter out of range");

  b.len = 0;
  ack_start(&b, 0);
  var(&b, 1);
  str(&b, "t");
  var(&b, 2);
  for (int i = 0; i < 2; i++) { /* the same tag (b, 1) twice */
    var(&b, 1);
    var(&b, i == 0 ? 2 : 0);
    var(&b, 0);
    var(&b, 0);
    str(&b, i == 0 ? "k1" : "k2");
    str(&b, "{}");
  }
  assert_rejected(b.bytes, b.len, "duplicate tag");

}

/* Flipping bytes of a valid message must never crash the decoder; most
 * flips are rejected, and what is accepted re-encodes. */
static void flipped_bytes_never_crash(void **unused) {
  (void)unused;
  hark_buf buf = valid_heartbeat();
  uint64_t rng = 42;
  size_t accepted = 0;
  for (int round = 0; round < 20000; round++) {
    char *copy = malloc(buf.len);
    memcpy(copy, buf.data, buf.len);
    for (int k = 0; k < 1 + round % 3; k++) {
      rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
      copy[(rng >> 33) % buf.len] ^= (char)(1u << ((rng >> 20) % 8));
    }
    hark__wire_msg msg;
    if (hark__wire_decode(copy, buf.len, &msg, NULL) == 0) {
      accepted++;
      hark_buf again = {0};
      assert_int_equal(hark__wire_encode(&again, msg.type, msg.from, msg.request_id, &msg.clock,
                                         msg.payload),
                       0);
      hark_buf_free(&again);
      hark__wire_msg_free(&msg);
    }
    free(copy);
  }
  print_message("%zu of 20000 mutated messages decoded\n", accepted);
  hark_buf_free(&buf);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(heartbeat_round_trip),
      cmocka_unit_test(empty_heartbeat_round_trip),
      cmocka_unit_test(transfer_round_trip),
      cmocka_unit_test(join_costs_under_100_bytes),
      cmocka_unit_test(every_truncation_rejected),
      cmocka_unit_test(trailing_byte_rejected),
      cmocka_unit_test(hand_made_ack_accepted),
      cmocka_unit_test(bad_headers_rejected),
      cmocka_unit_test(bad_deltas_rejected),
      cmocka_unit_test(flipped_bytes_never_crash),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
