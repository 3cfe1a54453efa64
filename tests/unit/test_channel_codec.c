/* Unit tests for the Phoenix Channels message codec in
 * src/server/channel_codec.c: vsn mapping, V1 and V2 text decoding, V2 binary
 * decoding and the exact bytes of every encoder. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "server/channel_codec.h"

static hark_span span_of(const char *s) {
  hark_span span = {s, strlen(s)};
  return span;
}

static void assert_span(hark_span span, const char *expected, size_t expected_len) {
  if (span.len != expected_len || memcmp(span.ptr, expected, expected_len) != 0) {
    fail_msg("span is '%.*s' (%zu bytes), expected '%.*s' (%zu bytes)", (int)span.len, span.ptr,
             span.len, (int)expected_len, expected, expected_len);
  }
}

static void assert_span_str(hark_span span, const char *expected) {
  assert_span(span, expected, strlen(expected));
}

/* ---- vsn ---- */

typedef struct vsn_case {
  const char *vsn;
  int rc;
  hark_serializer serializer;
} vsn_case;

static void vsn_maps_versions(void **state) {
  (void)state;
  static const vsn_case cases[] = {
      {"1.0.0", 0, HARK_SERIALIZER_V1},
      {"1.0.1", 0, HARK_SERIALIZER_V1},
      {"1.0.10", 0, HARK_SERIALIZER_V1},
      {"2.0.0", 0, HARK_SERIALIZER_V2},
      {"2.0.7", 0, HARK_SERIALIZER_V2},
      {"2.0.123", 0, HARK_SERIALIZER_V2},
      {"1.1.0", -1, 0},
      {"2.1.0", -1, 0},
      {"2.10.0", -1, 0},
      {"0.9.0", -1, 0},
      {"3.0.0", -1, 0},
      {"12.0.0", -1, 0},
      {"01.0.0", -1, 0},
      {"1.00.0", -1, 0},
      {"2.0.00", -1, 0},
      {"2.0.01", -1, 0},
      {"1.0", -1, 0},
      {"2", -1, 0},
      {"", -1, 0},
      {"2.0.0-rc.1", -1, 0},
      {"2.0.0+build", -1, 0},
      {"v2.0.0", -1, 0},
      {" 2.0.0", -1, 0},
      {"2.0.0 ", -1, 0},
      {"2.0.0.", -1, 0},
      {"2.0.0.0", -1, 0},
      {"2..0", -1, 0},
      {"2.0.", -1, 0},
      {"2.0.x", -1, 0},
      {"-2.0.0", -1, 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    hark_serializer got = 0;
    int rc = hark_serializer_from_vsn(cases[i].vsn, strlen(cases[i].vsn), &got);
    if (rc != cases[i].rc) fail_msg("vsn '%s': rc %d, expected %d", cases[i].vsn, rc, cases[i].rc);
    if (rc == 0 && got != cases[i].serializer) {
      fail_msg("vsn '%s': serializer %d", cases[i].vsn, got);
    }
  }
}

static void vsn_absent_and_length(void **state) {
  (void)state;
  hark_serializer got = 0;
  assert_int_equal(hark_serializer_from_vsn(NULL, 0, &got), 0);
  assert_int_equal(got, HARK_SERIALIZER_V1);

  /* Only `len` bytes count: the value need not be NUL-terminated. */
  assert_int_equal(hark_serializer_from_vsn("2.0.0&x=1", 5, &got), 0);
  assert_int_equal(got, HARK_SERIALIZER_V2);
  assert_int_equal(hark_serializer_from_vsn("2.0.0", 4, &got), -1);
}

/* ---- decoding helpers ---- */

typedef struct expected_msg {
  const char *join_ref;
  const char *ref;
  const char *topic;
  const char *event;
  const char *payload;
} expected_msg;

static void assert_msg(const hark_channel_msg *msg, const expected_msg *want) {
  assert_span_str(msg->join_ref, want->join_ref);
  assert_span_str(msg->ref, want->ref);
  assert_span_str(msg->topic, want->topic);
  assert_span_str(msg->event, want->event);
  assert_span_str(msg->payload, want->payload);
}

static void assert_text_decodes(hark_serializer serializer, const char *frame,
                                const expected_msg *want) {
  hark_channel_decoder decoder = {0};
  hark_channel_msg msg;
  int rc = hark_channel_decode(&decoder, serializer, 0, frame, strlen(frame), &msg);
  if (rc != 0) fail_msg("frame %s rejected: %s", frame, decoder.error);
  assert_false(msg.binary);
  assert_msg(&msg, want);
  hark_channel_decoder_free(&decoder);
}

static void assert_text_rejected(hark_serializer serializer, const char *frame) {
  hark_channel_decoder decoder = {0};
  hark_channel_msg msg;
  if (hark_channel_decode(&decoder, serializer, 0, frame, strlen(frame), &msg) != -1) {
    fail_msg("frame accepted: %s", frame);
  }
  assert_non_null(decoder.error);
  hark_channel_decoder_free(&decoder);
}

/* ---- V2 text ---- */

static void v2_decodes_spec_examples(void **state) {
  (void)state;
  assert_text_decodes(
      HARK_SERIALIZER_V2, "[\"1\",\"1\",\"room:1\",\"phx_join\",{\"token\":\"abc\"}]",
      &(expected_msg){"\"1\"", "\"1\"", "room:1", "phx_join", "{\"token\":\"abc\"}"});
  assert_text_decodes(HARK_SERIALIZER_V2, "[\"1\",\"4\",\"room:1\",\"new_msg\",{\"body\":\"hi\"}]",
                      &(expected_msg){"\"1\"", "\"4\"", "room:1", "new_msg", "{\"body\":\"hi\"}"});
  assert_text_decodes(HARK_SERIALIZER_V2, "[null,\"1\",\"phoenix\",\"heartbeat\",{}]",
                      &(expected_msg){"null", "\"1\"", "phoenix", "heartbeat", "{}"});
  assert_text_decodes(HARK_SERIALIZER_V2, "[\"1\",\"7\",\"room:1\",\"phx_leave\",{}]",
                      &(expected_msg){"\"1\"", "\"7\"", "room:1", "phx_leave", "{}"});
}

static void v2_whitespace_and_extras(void **state) {
  (void)state;
  assert_text_decodes(HARK_SERIALIZER_V2, " [ \"1\" , \"2\" , \"t\" , \"e\" , { \"a\" : 1 } ] \n",
                      &(expected_msg){"\"1\"", "\"2\"", "t", "e", "{ \"a\" : 1 }"});
  assert_text_decodes(HARK_SERIALIZER_V2, "[\"1\",\"2\",\"t\",\"e\",{},\"extra\",[1,{}],null]",
                      &(expected_msg){"\"1\"", "\"2\"", "t", "e", "{}"});
}

static void v2_numeric_refs_and_payload_types(void **state) {
  (void)state;
  assert_text_decodes(HARK_SERIALIZER_V2, "[5,-1.5e3,\"t\",\"e\",{}]",
                      &(expected_msg){"5", "-1.5e3", "t", "e", "{}"});
  assert_text_decodes(HARK_SERIALIZER_V2, "[null,null,\"t\",\"e\",[1,2]]",
                      &(expected_msg){"null", "null", "t", "e", "[1,2]"});
  assert_text_decodes(HARK_SERIALIZER_V2, "[null,null,\"t\",\"e\",\"text\"]",
                      &(expected_msg){"null", "null", "t", "e", "\"text\""});
  assert_text_decodes(HARK_SERIALIZER_V2, "[null,null,\"\",\"\",null]",
                      &(expected_msg){"null", "null", "", "", "null"});
}

static void v2_decodes_escaped_strings(void **state) {
  (void)state;
  assert_text_decodes(HARK_SERIALIZER_V2, "[null,\"1\",\"room:\\u00e9\",\"a\\\"b\\n\",{}]",
                      &(expected_msg){"null", "\"1\"", "room:\xc3\xa9", "a\"b\n", "{}"});
  assert_text_decodes(HARK_SERIALIZER_V2, "[null,\"1\",\"\\uD83D\\uDE00\",\"e\",{}]",
                      &(expected_msg){"null", "\"1\"", "\xf0\x9f\x98\x80", "e", "{}"});
}

/* Two spellings of one string ref must give byte-equal tokens. */
static void assert_same_ref(const char *ref_a, const char *ref_b, const char *token) {
  char frame[256];
  snprintf(frame, sizeof frame, "[%s,%s,\"t\",\"e\",{}]", ref_a, ref_b);
  assert_text_decodes(HARK_SERIALIZER_V2, frame, &(expected_msg){token, token, "t", "e", "{}"});
}

static void v2_refs_are_canonical(void **state) {
  (void)state;
  assert_same_ref("\"\\u0031\"", "\"1\"", "\"1\"");
  assert_same_ref("\"a\\/b\"", "\"a/b\"", "\"a/b\"");
  assert_same_ref("\"\\u000a\"", "\"\\n\"", "\"\\n\"");
  assert_same_ref("\"\\u0001\"", "\"\\u0001\"", "\"\\u0001\"");
  assert_same_ref("\"\\u00e9\"", "\"\xc3\xa9\"", "\"\xc3\xa9\"");
  assert_same_ref("\"\\u0022\"", "\"\\\"\"", "\"\\\"\"");
}

static void v2_rejects_bad_shapes(void **state) {
  (void)state;
  static const char *const frames[] = {
      "",
      "   ",
      "[]",
      "[\"1\",\"1\",\"t\",\"e\"]",
      "[\"1\"]",
      "{\"topic\":\"t\",\"event\":\"e\",\"payload\":{},\"ref\":\"1\"}",
      "\"text\"",
      "42",
      "null",
      "[\"1\",\"1\",\"t\",\"e\",{}",
      "[\"1\",\"1\",\"t\",\"e\",{}] x",
      "[\"1\",\"1\",\"t\",\"e\",{},]",
      "[\"1\",\"1\",\"t\",\"e\",{\"a\":\"\\uD800\"}]",
      "[\"1\",\"1\",\"t\",\"e\",{},\"\xff\"]",
      /* wrong types */
      "[\"1\",\"1\",1,\"e\",{}]",
      "[\"1\",\"1\",null,\"e\",{}]",
      "[\"1\",\"1\",\"t\",[\"e\"],{}]",
      "[\"1\",\"1\",\"t\",false,{}]",
      "[true,\"1\",\"t\",\"e\",{}]",
      "[\"1\",{},\"t\",\"e\",{}]",
      "[[\"1\"],\"1\",\"t\",\"e\",{}]",
  };
  for (size_t i = 0; i < sizeof frames / sizeof frames[0]; i++) {
    assert_text_rejected(HARK_SERIALIZER_V2, frames[i]);
  }
}

/* The frame's own array is one level, so a payload may nest 63 more. */
static void v2_depth_limit(void **state) {
  (void)state;
  for (int depth = HARK_JSON_MAX_DEPTH - 1; depth <= HARK_JSON_MAX_DEPTH; depth++) {
    char frame[512];
    int n = snprintf(frame, sizeof frame, "[null,null,\"t\",\"e\",");
    for (int i = 0; i < depth; i++) frame[n++] = '[';
    for (int i = 0; i < depth; i++) frame[n++] = ']';
    frame[n++] = ']';
    frame[n] = '\0';

    hark_channel_decoder decoder = {0};
    hark_channel_msg msg;
    int rc = hark_channel_decode(&decoder, HARK_SERIALIZER_V2, 0, frame, (size_t)n, &msg);
    assert_int_equal(rc, depth == HARK_JSON_MAX_DEPTH - 1 ? 0 : -1);
    hark_channel_decoder_free(&decoder);
  }
}

/* Scratch grows while one frame is decoded. Every span must still point at
 * the right bytes afterwards. */
static void v2_long_escaped_fields(void **state) {
  (void)state;
  const size_t count = 5000;
  hark_buf frame = {0};
  hark_buf topic = {0};
  assert_int_equal(hark_buf_append_str(&frame, "[\"\\u0041j\",\""), 0);
  for (size_t i = 0; i < count; i++) {
    assert_int_equal(hark_buf_append_str(&frame, "\\u00e9"), 0);
    assert_int_equal(hark_buf_append_str(&topic, "\xc3\xa9"), 0);
  }
  assert_int_equal(hark_buf_append_str(&frame, "\",\""), 0);
  for (size_t i = 0; i < count; i++) assert_int_equal(hark_buf_append_str(&frame, "\\u00e9"), 0);
  assert_int_equal(hark_buf_append_str(&frame, "\",\"\\u0065v\",{}]"), 0);

  hark_channel_decoder decoder = {0};
  hark_channel_msg msg;
  assert_int_equal(
      hark_channel_decode(&decoder, HARK_SERIALIZER_V2, 0, frame.data, frame.len, &msg), 0);
  assert_span_str(msg.join_ref, "\"Aj\"");
  assert_int_equal(msg.ref.len, topic.len + 2);
  assert_memory_equal(msg.ref.ptr + 1, topic.data, topic.len);
  assert_span(msg.topic, topic.data, topic.len);
  assert_span_str(msg.event, "ev");

  /* A second decode with the same decoder starts from an empty scratch. */
  const char *small = "[null,\"9\",\"x\",\"y\",{}]";
  assert_int_equal(hark_channel_decode(&decoder, HARK_SERIALIZER_V2, 0, small, strlen(small), &msg),
                   0);
  assert_msg(&msg, &(expected_msg){"null", "\"9\"", "x", "y", "{}"});

  hark_channel_decoder_free(&decoder);
  hark_buf_free(&frame);
  hark_buf_free(&topic);
}

/* ---- V1 text ---- */

static void v1_decodes_objects(void **state) {
  (void)state;
  assert_text_decodes(HARK_SERIALIZER_V1,
                      "{\"topic\":\"room:1\",\"event\":\"phx_join\",\"payload\":{},\"ref\":\"1\"}",
                      &(expected_msg){"null", "\"1\"", "room:1", "phx_join", "{}"});
  assert_text_decodes(HARK_SERIALIZER_V1,
                      " { \"ref\" : \"3\" , \"join_ref\" : \"2\" , \"payload\" : [1] , \"event\" : "
                      "\"e\" , \"topic\" : \"t\" } ",
                      &(expected_msg){"\"2\"", "\"3\"", "t", "e", "[1]"});
  assert_text_decodes(HARK_SERIALIZER_V1,
                      "{\"topic\":\"phoenix\",\"event\":\"heartbeat\",\"payload\":{},\"ref\":null}",
                      &(expected_msg){"null", "null", "phoenix", "heartbeat", "{}"});
}

static void v1_keys_escapes_and_duplicates(void **state) {
  (void)state;
  assert_text_decodes(HARK_SERIALIZER_V1,
                      "{\"\\u0074opic\":\"room:\\u00e9\",\"event\":\"e\",\"payload\":{},\"ref\":"
                      "\"\\u0031\",\"x\":1}",
                      &(expected_msg){"null", "\"1\"", "room:\xc3\xa9", "e", "{}"});
  assert_text_decodes(
      HARK_SERIALIZER_V1,
      "{\"topic\":\"a\",\"event\":\"e\",\"payload\":{},\"ref\":\"1\",\"topic\":\"b\"}",
      &(expected_msg){"null", "\"1\"", "b", "e", "{}"});
  /* A key nested inside the payload is not a top-level key. */
  assert_text_decodes(
      HARK_SERIALIZER_V1,
      "{\"topic\":\"t\",\"event\":\"e\",\"payload\":{\"join_ref\":\"9\"},\"ref\":\"1\"}",
      &(expected_msg){"null", "\"1\"", "t", "e", "{\"join_ref\":\"9\"}"});
}

static void v1_rejects_bad_objects(void **state) {
  (void)state;
  static const char *const frames[] = {
      /* each required key missing in turn */
      "{\"event\":\"e\",\"payload\":{},\"ref\":\"1\"}",
      "{\"topic\":\"t\",\"payload\":{},\"ref\":\"1\"}",
      "{\"topic\":\"t\",\"event\":\"e\",\"ref\":\"1\"}",
      "{\"topic\":\"t\",\"event\":\"e\",\"payload\":{}}",
      "{\"topic\":\"t\",\"event\":\"e\",\"payload\":{\"ref\":\"1\"}}",
      "{}",
      /* wrong types */
      "{\"topic\":1,\"event\":\"e\",\"payload\":{},\"ref\":\"1\"}",
      "{\"topic\":\"t\",\"event\":null,\"payload\":{},\"ref\":\"1\"}",
      "{\"topic\":\"t\",\"event\":\"e\",\"payload\":{},\"ref\":[]}",
      "{\"topic\":\"t\",\"event\":\"e\",\"payload\":{},\"ref\":\"1\",\"join_ref\":true}",
      /* not an object */
      "[null,\"1\",\"t\",\"e\",{}]",
      "\"t\"",
      "",
      "{\"topic\":\"t\",\"event\":\"e\",\"payload\":{},\"ref\":\"1\"",
      "{\"topic\":\"t\",\"event\":\"e\",\"payload\":{},\"ref\":\"1\"}}",
  };
  for (size_t i = 0; i < sizeof frames / sizeof frames[0]; i++) {
    assert_text_rejected(HARK_SERIALIZER_V1, frames[i]);
  }
}

/* ---- V2 binary ---- */

static int decode_binary(hark_channel_decoder *decoder, hark_serializer serializer,
                         const char *frame, size_t len, hark_channel_msg *msg) {
  return hark_channel_decode(decoder, serializer, 1, frame, len, msg);
}

static void binary_decodes_spec_push(void **state) {
  (void)state;
  static const char frame[] = "\x00\x02\x01\x03\x02"
                              "10"
                              "1"
                              "top"
                              "ev"
                              "\x01";
  hark_channel_decoder decoder = {0};
  hark_channel_msg msg;
  assert_int_equal(decode_binary(&decoder, HARK_SERIALIZER_V2, frame, sizeof frame - 1, &msg), 0);
  assert_true(msg.binary);
  assert_span_str(msg.join_ref, "\"10\"");
  assert_span_str(msg.ref, "\"1\"");
  assert_span_str(msg.topic, "top");
  assert_span_str(msg.event, "ev");
  assert_span(msg.payload, "\x01", 1);
  hark_channel_decoder_free(&decoder);
}

static void binary_empty_refs_and_payload(void **state) {
  (void)state;
  static const char frame[] = "\x00\x00\x00\x01\x01"
                              "t"
                              "e";
  hark_channel_decoder decoder = {0};
  hark_channel_msg msg;
  assert_int_equal(decode_binary(&decoder, HARK_SERIALIZER_V2, frame, sizeof frame - 1, &msg), 0);
  assert_span_str(msg.join_ref, "null");
  assert_span_str(msg.ref, "null");
  assert_span_str(msg.topic, "t");
  assert_span_str(msg.event, "e");
  assert_int_equal(msg.payload.len, 0);
  hark_channel_decoder_free(&decoder);
}

/* A binary ref equals the same ref sent in a text frame, even when it has
 * characters that JSON escapes. */
static void binary_refs_match_text_refs(void **state) {
  (void)state;
  static const char frame[] = "\x00\x03\x02\x01\x01"
                              "a\"b"
                              "\n1"
                              "t"
                              "e"
                              "\xff\x00";
  const char *text = "[\"a\\\"b\",\"\\u000a1\",\"t\",\"e\",{}]";
  hark_channel_decoder decoder = {0};
  hark_channel_msg msg;
  assert_int_equal(decode_binary(&decoder, HARK_SERIALIZER_V2, frame, sizeof frame - 1, &msg), 0);
  assert_span_str(msg.join_ref, "\"a\\\"b\"");
  assert_span_str(msg.ref, "\"\\n1\"");
  assert_span(msg.payload, "\xff\x00", 2);

  assert_int_equal(hark_channel_decode(&decoder, HARK_SERIALIZER_V2, 0, text, strlen(text), &msg),
                   0);
  assert_span_str(msg.join_ref, "\"a\\\"b\"");
  assert_span_str(msg.ref, "\"\\n1\"");
  hark_channel_decoder_free(&decoder);
}

static void assert_binary_rejected(hark_serializer serializer, const char *frame, size_t len) {
  hark_channel_decoder decoder = {0};
  hark_channel_msg msg;
  assert_int_equal(decode_binary(&decoder, serializer, frame, len, &msg), -1);
  assert_non_null(decoder.error);
  hark_channel_decoder_free(&decoder);
}

static void binary_rejects_bad_frames(void **state) {
  (void)state;
  static const char push[] = "\x00\x02\x01\x03\x02"
                             "10"
                             "1"
                             "top"
                             "ev";
  /* Every cut that loses part of the header or of a field. */
  for (size_t len = 0; len < sizeof push - 1; len++) {
    assert_binary_rejected(HARK_SERIALIZER_V2, push, len);
  }

  assert_binary_rejected(HARK_SERIALIZER_V2,
                         "\x01\x02\x01\x03\x02"
                         "10"
                         "1"
                         "top"
                         "ok",
                         13);
  assert_binary_rejected(HARK_SERIALIZER_V2,
                         "\x02\x03\x02"
                         "top"
                         "ev"
                         "\x01",
                         9);
  assert_binary_rejected(HARK_SERIALIZER_V2, "\x07", 1);
  assert_binary_rejected(HARK_SERIALIZER_V1, push, sizeof push - 1);

  /* Invalid UTF-8 in each of the four fields. */
  assert_binary_rejected(HARK_SERIALIZER_V2,
                         "\x00\x01\x01\x01\x01"
                         "\xff"
                         "1"
                         "t"
                         "e",
                         9);
  assert_binary_rejected(HARK_SERIALIZER_V2,
                         "\x00\x01\x01\x01\x01"
                         "1"
                         "\xc3"
                         "t"
                         "e",
                         9);
  assert_binary_rejected(HARK_SERIALIZER_V2,
                         "\x00\x01\x01\x01\x01"
                         "1"
                         "1"
                         "\x80"
                         "e",
                         9);
  assert_binary_rejected(HARK_SERIALIZER_V2,
                         "\x00\x01\x01\x01\x02"
                         "1"
                         "1"
                         "t"
                         "\xed\xa0",
                         10);
}

/* ---- encoders ---- */

static void assert_buf(const hark_buf *buf, const char *expected, size_t expected_len) {
  if (buf->len != expected_len || memcmp(buf->data, expected, expected_len) != 0) {
    fail_msg("output '%.*s', expected '%.*s'", (int)buf->len, buf->data, (int)expected_len,
             expected);
  }
}

static void assert_buf_str(const hark_buf *buf, const char *expected) {
  assert_buf(buf, expected, strlen(expected));
}

static void encode_v2_exact_bytes(void **state) {
  (void)state;
  hark_buf out = {0};
  assert_int_equal(hark_channel_encode(&out, HARK_SERIALIZER_V2, span_of("\"1\""), span_of("null"),
                                       span_of("room:1"), span_of("new_msg"),
                                       span_of("{\"body\":\"hi\"}")),
                   0);
  assert_buf_str(&out, "[\"1\",null,\"room:1\",\"new_msg\",{\"body\":\"hi\"}]");

  hark_buf_reset(&out);
  assert_int_equal(hark_channel_encode(&out, HARK_SERIALIZER_V2, span_of("null"), span_of("null"),
                                       span_of("room:\"\xc3\xa9\""), span_of("a\nb"),
                                       span_of("{}")),
                   0);
  assert_buf_str(&out, "[null,null,\"room:\\\"\xc3\xa9\\\"\",\"a\\nb\",{}]");
  hark_buf_free(&out);
}

static void encode_v1_exact_bytes(void **state) {
  (void)state;
  hark_buf out = {0};
  assert_int_equal(hark_channel_encode(&out, HARK_SERIALIZER_V1, span_of("\"1\""), span_of("\"2\""),
                                       span_of("room:1"), span_of("new_msg"), span_of("{\"a\":1}")),
                   0);
  assert_buf_str(
      &out, "{\"topic\":\"room:1\",\"event\":\"new_msg\",\"payload\":{\"a\":1},\"ref\":\"2\"}");

  hark_buf_reset(&out);
  assert_int_equal(hark_channel_encode(&out, HARK_SERIALIZER_V1, span_of("null"), span_of("null"),
                                       span_of("t"), span_of("e"), span_of("[]")),
                   0);
  assert_buf_str(&out, "{\"topic\":\"t\",\"event\":\"e\",\"payload\":[],\"ref\":null}");
  hark_buf_free(&out);
}

static void encode_reply_exact_bytes(void **state) {
  (void)state;
  hark_buf out = {0};
  assert_int_equal(hark_channel_encode_reply(&out, HARK_SERIALIZER_V2, span_of("null"),
                                             span_of("\"1\""), span_of("phoenix"), "ok",
                                             span_of("{}")),
                   0);
  assert_buf_str(&out,
                 "[null,\"1\",\"phoenix\",\"phx_reply\",{\"status\":\"ok\",\"response\":{}}]");

  hark_buf_reset(&out);
  assert_int_equal(hark_channel_encode_reply(&out, HARK_SERIALIZER_V1, span_of("\"1\""),
                                             span_of("\"2\""), span_of("room:1"), "error",
                                             span_of("{\"reason\":\"unmatched topic\"}")),
                   0);
  assert_buf_str(&out, "{\"topic\":\"room:1\",\"event\":\"phx_reply\",\"payload\":{\"status\":"
                       "\"error\",\"response\":{\"reason\":\"unmatched topic\"}},\"ref\":\"2\"}");
  hark_buf_free(&out);
}

static void encode_appends_and_rolls_back(void **state) {
  (void)state;
  hark_buf out = {0};
  assert_int_equal(hark_buf_append_str(&out, "keep"), 0);
  assert_int_equal(hark_channel_encode(&out, HARK_SERIALIZER_V2, span_of("null"), span_of("null"),
                                       span_of("t"), span_of("e"), span_of("{}")),
                   0);
  assert_buf_str(&out, "keep[null,null,\"t\",\"e\",{}]");

  /* A topic that is not UTF-8 fails and leaves the buffer as it was. */
  size_t before = out.len;
  assert_int_equal(hark_channel_encode(&out, HARK_SERIALIZER_V2, span_of("null"), span_of("null"),
                                       span_of("\xff"), span_of("e"), span_of("{}")),
                   -1);
  assert_int_equal(hark_channel_encode_reply(&out, HARK_SERIALIZER_V1, span_of("null"),
                                             span_of("null"), span_of("t"), "\xc3", span_of("{}")),
                   -1);
  assert_int_equal(out.len, before);
  hark_buf_free(&out);
}

/* What the encoder writes, the decoder reads back field for field. */
static void encode_decode_round_trip(void **state) {
  (void)state;
  for (hark_serializer s = HARK_SERIALIZER_V1; s <= HARK_SERIALIZER_V2; s++) {
    hark_buf out = {0};
    assert_int_equal(hark_channel_encode(&out, s, span_of("\"7\""), span_of("\"8\""),
                                         span_of("room:\t\xc3\xa9"), span_of("ev\"nt"),
                                         span_of("{\"k\":[1,2]}")),
                     0);

    hark_channel_decoder decoder = {0};
    hark_channel_msg msg;
    assert_int_equal(hark_channel_decode(&decoder, s, 0, out.data, out.len, &msg), 0);
    assert_span_str(msg.join_ref, s == HARK_SERIALIZER_V2 ? "\"7\"" : "null");
    assert_span_str(msg.ref, "\"8\"");
    assert_span_str(msg.topic, "room:\t\xc3\xa9");
    assert_span_str(msg.event, "ev\"nt");
    assert_span_str(msg.payload, "{\"k\":[1,2]}");
    hark_channel_decoder_free(&decoder);
    hark_buf_free(&out);
  }
}

static void encode_binary_broadcast_bytes(void **state) {
  (void)state;
  hark_buf out = {0};
  assert_int_equal(hark_channel_encode_binary_broadcast(&out, span_of("top"), span_of("some-event"),
                                                        (hark_span){"\x01\x01", 2}),
                   0);
  static const char expected[] = "\x02\x03\x0a"
                                 "top"
                                 "some-event"
                                 "\x01\x01";
  assert_buf(&out, expected, sizeof expected - 1);
  hark_buf_free(&out);
}

static void encode_binary_broadcast_limits(void **state) {
  (void)state;
  char field[256];
  memset(field, 'x', sizeof field);
  hark_buf out = {0};

  assert_int_equal(hark_channel_encode_binary_broadcast(&out, (hark_span){field, 255}, span_of("e"),
                                                        (hark_span){NULL, 0}),
                   0);
  assert_int_equal(out.len, 3 + 255 + 1);
  assert_int_equal((unsigned char)out.data[1], 255);

  hark_buf_reset(&out);
  assert_int_equal(hark_channel_encode_binary_broadcast(&out, (hark_span){field, 256}, span_of("e"),
                                                        span_of("p")),
                   -1);
  assert_int_equal(hark_channel_encode_binary_broadcast(&out, span_of("t"), (hark_span){field, 256},
                                                        span_of("p")),
                   -1);
  assert_int_equal(out.len, 0);
  hark_buf_free(&out);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(vsn_maps_versions),
      cmocka_unit_test(vsn_absent_and_length),
      cmocka_unit_test(v2_decodes_spec_examples),
      cmocka_unit_test(v2_whitespace_and_extras),
      cmocka_unit_test(v2_numeric_refs_and_payload_types),
      cmocka_unit_test(v2_decodes_escaped_strings),
      cmocka_unit_test(v2_refs_are_canonical),
      cmocka_unit_test(v2_rejects_bad_shapes),
      cmocka_unit_test(v2_depth_limit),
      cmocka_unit_test(v2_long_escaped_fields),
      cmocka_unit_test(v1_decodes_objects),
      cmocka_unit_test(v1_keys_escapes_and_duplicates),
      cmocka_unit_test(v1_rejects_bad_objects),
      cmocka_unit_test(binary_decodes_spec_push),
      cmocka_unit_test(binary_empty_refs_and_payload),
      cmocka_unit_test(binary_refs_match_text_refs),
      cmocka_unit_test(binary_rejects_bad_frames),
      cmocka_unit_test(encode_v2_exact_bytes),
      cmocka_unit_test(encode_v1_exact_bytes),
      cmocka_unit_test(encode_reply_exact_bytes),
      cmocka_unit_test(encode_appends_and_rolls_back),
      cmocka_unit_test(encode_decode_round_trip),
      cmocka_unit_test(encode_binary_broadcast_bytes),
      cmocka_unit_test(encode_binary_broadcast_limits),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
