/* Unit tests for the inter-node envelope: round trips and every kind of
 * malformed input the decoder must reject. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "pubsub/envelope.h"

static hark__envelope sample(void) {
  return (hark__envelope){.origin = "node-a",
                          .origin_len = 6,
                          .dispatcher = "default",
                          .dispatcher_len = 7,
                          .topic = "room:1",
                          .topic_len = 6,
                          .msg = {.event = "new_msg",
                                  .event_len = 7,
                                  .payload = "{\"body\":\"hi\"}",
                                  .payload_len = 13,
                                  .binary = 0}};
}

/* Encodes into a fresh buffer; the caller frees it. */
static unsigned char *encode(const hark__envelope *env, size_t *len) {
  *len = hark__envelope_size(env);
  assert_true(*len > 0);
  unsigned char *buf = malloc(*len);
  assert_non_null(buf);
  assert_int_equal(hark__envelope_write(env, buf), *len);
  return buf;
}

static void assert_same(const hark__envelope *a, const hark__envelope *b) {
  assert_int_equal(a->origin_len, b->origin_len);
  assert_memory_equal(a->origin, b->origin, a->origin_len);
  assert_int_equal(a->dispatcher_len, b->dispatcher_len);
  assert_memory_equal(a->dispatcher, b->dispatcher, a->dispatcher_len);
  assert_int_equal(a->topic_len, b->topic_len);
  if (a->topic_len) assert_memory_equal(a->topic, b->topic, a->topic_len);
  assert_int_equal(a->msg.event_len, b->msg.event_len);
  if (a->msg.event_len) assert_memory_equal(a->msg.event, b->msg.event, a->msg.event_len);
  assert_int_equal(a->msg.payload_len, b->msg.payload_len);
  if (a->msg.payload_len)
    assert_memory_equal(a->msg.payload, b->msg.payload, a->msg.payload_len);
  assert_int_equal(a->msg.binary, b->msg.binary);
}

static void assert_rejected(const unsigned char *data, size_t len, const char *expected_error) {
  hark__envelope out;
  const char *error = NULL;
  assert_int_equal(hark__envelope_decode(data, len, &out, &error), HARK_EINVAL);
  assert_non_null(error);
  if (expected_error != NULL) assert_string_equal(error, expected_error);
}

/* ---- Round trips ---- */

static void test_round_trip_text(void **state) {
  (void)state;
  hark__envelope env = sample();
  size_t len;
  unsigned char *buf = encode(&env, &len);
  assert_int_equal(buf[0], HARK_ENVELOPE_VERSION);

  hark__envelope out;
  assert_int_equal(hark__envelope_decode(buf, len, &out, NULL), HARK_OK);
  assert_same(&env, &out);
  free(buf);
}

static void test_round_trip_binary_with_nul_bytes(void **state) {
  (void)state;
  static const char payload[] = {0, 1, 2, (char)0xff, 0};
  static const char topic[] = {'a', 0, '*', '?', '['};
  hark__envelope env = sample();
  env.topic = topic;
  env.topic_len = sizeof topic;
  env.msg.payload = payload;
  env.msg.payload_len = sizeof payload;
  env.msg.binary = 1;
  size_t len;
  unsigned char *buf = encode(&env, &len);

  hark__envelope out;
  assert_int_equal(hark__envelope_decode(buf, len, &out, NULL), HARK_OK);
  assert_same(&env, &out);
  free(buf);
}

static void test_round_trip_empty_fields(void **state) {
  (void)state;
  hark__envelope env = sample();
  env.topic = "";
  env.topic_len = 0;
  env.msg.event = NULL;
  env.msg.event_len = 0;
  env.msg.payload = NULL;
  env.msg.payload_len = 0;
  size_t len;
  unsigned char *buf = encode(&env, &len);
  assert_int_equal(len, 1 + 7 + 8 + 1 + 1 + 1 + 1);

  hark__envelope out;
  assert_int_equal(hark__envelope_decode(buf, len, &out, NULL), HARK_OK);
  assert_same(&env, &out);
  free(buf);
}

static void test_round_trip_multibyte_lengths(void **state) {
  (void)state;
  char name[HARK_ENVELOPE_MAX_NAME];
  memset(name, 'n', sizeof name);
  size_t payload_len = 300000; /* a 3-byte varint */
  char *payload = malloc(payload_len);
  assert_non_null(payload);
  memset(payload, 'p', payload_len);
  char *topic = malloc(HARK_ENVELOPE_MAX_TOPIC);
  assert_non_null(topic);
  memset(topic, 't', HARK_ENVELOPE_MAX_TOPIC);

  hark__envelope env = sample();
  env.origin = name;
  env.origin_len = sizeof name;
  env.topic = topic;
  env.topic_len = HARK_ENVELOPE_MAX_TOPIC;
  env.msg.payload = payload;
  env.msg.payload_len = payload_len;
  size_t len;
  unsigned char *buf = encode(&env, &len);

  hark__envelope out;
  assert_int_equal(hark__envelope_decode(buf, len, &out, NULL), HARK_OK);
  assert_same(&env, &out);
  free(buf);
  free(topic);
  free(payload);
}

/* ---- Encoder bounds ---- */

static void test_size_rejects_bad_fields(void **state) {
  (void)state;
  char long_name[HARK_ENVELOPE_MAX_NAME + 1];
  memset(long_name, 'x', sizeof long_name);

  hark__envelope env = sample();
  env.origin_len = 0;
  assert_int_equal(hark__envelope_size(&env), 0);

  env = sample();
  env.origin = long_name;
  env.origin_len = sizeof long_name;
  assert_int_equal(hark__envelope_size(&env), 0);

  env = sample();
  env.dispatcher = "de\0fault";
  env.dispatcher_len = 8;
  assert_int_equal(hark__envelope_size(&env), 0);

  env = sample();
  env.topic_len = HARK_ENVELOPE_MAX_TOPIC + 1;
  assert_int_equal(hark__envelope_size(&env), 0);

  env = sample();
  env.msg.event_len = HARK_ENVELOPE_MAX_EVENT + 1;
  assert_int_equal(hark__envelope_size(&env), 0);

  env = sample();
  env.msg.payload_len = (size_t)HARK_ENVELOPE_MAX_PAYLOAD + 1;
  assert_int_equal(hark__envelope_size(&env), 0);
}

/* ---- Malformed input ---- */

static void test_decode_rejects_empty(void **state) {
  (void)state;
  assert_rejected((const unsigned char *)"", 0, "empty envelope");
  assert_rejected(NULL, 0, "empty envelope");
}

static void test_decode_rejects_other_version(void **state) {
  (void)state;
  hark__envelope env = sample();
  size_t len;
  unsigned char *buf = encode(&env, &len);
  buf[0] = 2;
  assert_rejected(buf, len, "unknown envelope version");
  buf[0] = 0;
  assert_rejected(buf, len, "unknown envelope version");
  free(buf);
}

static void test_decode_rejects_every_truncation(void **state) {
  (void)state;
  hark__envelope env = sample();
  size_t len;
  unsigned char *buf = encode(&env, &len);
  for (size_t cut = 0; cut < len; cut++) {
    /* A copy of exactly `cut` bytes, so ASan catches any read past it. */
    unsigned char *prefix = malloc(cut ? cut : 1);
    assert_non_null(prefix);
    memcpy(prefix, buf, cut);
    assert_rejected(prefix, cut, NULL);
    free(prefix);
  }
  free(buf);
}

static void test_decode_rejects_trailing_byte(void **state) {
  (void)state;
  hark__envelope env = sample();
  size_t len;
  unsigned char *buf = encode(&env, &len);
  unsigned char *longer = malloc(len + 1);
  assert_non_null(longer);
  memcpy(longer, buf, len);
  longer[len] = 0;
  assert_rejected(longer, len + 1, "trailing bytes after the envelope");
  free(longer);
  free(buf);
}

static void test_decode_rejects_unknown_flags(void **state) {
  (void)state;
  hark__envelope env = sample();
  size_t len;
  unsigned char *buf = encode(&env, &len);
  buf[len - 1] = 0x02;
  assert_rejected(buf, len, "unknown flags");
  buf[len - 1] = 0x81;
  assert_rejected(buf, len, "unknown flags");
  free(buf);
}

static void test_decode_rejects_bad_varints(void **state) {
  (void)state;
  /* Origin length 1 written in two bytes. */
  static const unsigned char non_minimal[] = {1, 0x81, 0x00, 'a'};
  assert_rejected(non_minimal, sizeof non_minimal, "length not in shortest form");

  static const unsigned char six_bytes[] = {1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01};
  assert_rejected(six_bytes, sizeof six_bytes, "length longer than 5 bytes");

  /* 2^32 in five bytes. */
  static const unsigned char above_u32[] = {1, 0x80, 0x80, 0x80, 0x80, 0x10};
  assert_rejected(above_u32, sizeof above_u32, "length above 32 bits");

  static const unsigned char cut_varint[] = {1, 0x80};
  assert_rejected(cut_varint, sizeof cut_varint, "truncated length");
}

static void test_decode_rejects_length_beyond_buffer(void **state) {
  (void)state;
  static const unsigned char origin_past_end[] = {1, 10, 'a', 'b'};
  assert_rejected(origin_past_end, sizeof origin_past_end, "length beyond the end of the envelope");

  /* A payload length of 2^32 - 1 with a few bytes after it. */
  static const unsigned char payload_past_end[] = {1, 1, 'a', 1, 'd', 0, 0,
                                                   0xff, 0xff, 0xff, 0xff, 0x0f, 'x', 0};
  assert_rejected(payload_past_end, sizeof payload_past_end, "payload too long");

  static const unsigned char payload_short[] = {1, 1, 'a', 1, 'd', 0, 0, 5, 'x', 0};
  assert_rejected(payload_short, sizeof payload_short, "length beyond the end of the envelope");
}

static void test_decode_rejects_bad_names(void **state) {
  (void)state;
  static const unsigned char empty_origin[] = {1, 0, 1, 'd', 0, 0, 0, 0};
  assert_rejected(empty_origin, sizeof empty_origin, "invalid origin node name");

  static const unsigned char nul_origin[] = {1, 2, 'a', 0, 1, 'd', 0, 0, 0, 0};
  assert_rejected(nul_origin, sizeof nul_origin, "invalid origin node name");

  static const unsigned char empty_dispatcher[] = {1, 1, 'a', 0, 0, 0, 0, 0};
  assert_rejected(empty_dispatcher, sizeof empty_dispatcher, "invalid dispatcher name");

  static const unsigned char nul_dispatcher[] = {1, 1, 'a', 1, 0, 0, 0, 0, 0};
  assert_rejected(nul_dispatcher, sizeof nul_dispatcher, "invalid dispatcher name");

  /* Origin of 256 bytes (0x80 0x02). */
  unsigned char long_origin[3 + 256 + 6];
  memset(long_origin, 'o', sizeof long_origin);
  long_origin[0] = 1;
  long_origin[1] = 0x80;
  long_origin[2] = 0x02;
  assert_rejected(long_origin, sizeof long_origin, "invalid origin node name");
}

static void test_decode_rejects_oversized_topic_and_event(void **state) {
  (void)state;
  /* Topic length 65536 (0x80 0x80 0x04), the bytes absent. */
  static const unsigned char topic[] = {1, 1, 'a', 1, 'd', 0x80, 0x80, 0x04};
  assert_rejected(topic, sizeof topic, "topic too long");

  static const unsigned char event[] = {1, 1, 'a', 1, 'd', 0, 0x80, 0x80, 0x04};
  assert_rejected(event, sizeof event, "event too long");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_round_trip_text),
      cmocka_unit_test(test_round_trip_binary_with_nul_bytes),
      cmocka_unit_test(test_round_trip_empty_fields),
      cmocka_unit_test(test_round_trip_multibyte_lengths),
      cmocka_unit_test(test_size_rejects_bad_fields),
      cmocka_unit_test(test_decode_rejects_empty),
      cmocka_unit_test(test_decode_rejects_other_version),
      cmocka_unit_test(test_decode_rejects_every_truncation),
      cmocka_unit_test(test_decode_rejects_trailing_byte),
      cmocka_unit_test(test_decode_rejects_unknown_flags),
      cmocka_unit_test(test_decode_rejects_bad_varints),
      cmocka_unit_test(test_decode_rejects_length_beyond_buffer),
      cmocka_unit_test(test_decode_rejects_bad_names),
      cmocka_unit_test(test_decode_rejects_oversized_topic_and_event),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
