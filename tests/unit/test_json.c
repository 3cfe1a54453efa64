/* Unit tests for the validating JSON scanner in src/base/json.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/json.h"

/* A test input with an explicit length, so inputs may contain NUL bytes. */
typedef struct text {
  const char *data;
  size_t len;
} text;

#define T(literal)                                                                                 \
  { literal, sizeof(literal) - 1 }

static const text valid_cases[] = {
    /* numbers */
    T("0"),
    T("-0"),
    T("1"),
    T("-1"),
    T("1234567890"),
    T("0.5"),
    T("-0.5"),
    T("10.25"),
    T("1e5"),
    T("1E5"),
    T("1e+5"),
    T("1e-5"),
    T("0e0"),
    T("-0.0e-0"),
    T("1.5E+10"),
    T("123456789012345678901234567890"),
    /* literals */
    T("true"),
    T("false"),
    T("null"),
    /* strings and escapes */
    T("\"\""),
    T("\"abc\""),
    T("\"\\\" \\\\ \\/ \\b \\f \\n \\r \\t\""),
    T("\"\\u0041\""),
    T("\"\\u00e9\\u00E9\""),
    T("\"\\u0000\""),
    T("\"\\uFFFF\""),
    T("\"\\uD83D\\uDE00\""),
    T("\"\\ud83d\\ude00\""),
    T("\"\\uDBFF\\uDFFF\""),
    T("\"\xc3\xa9\""),
    T("\"\xe2\x82\xac\""),
    T("\"\xf0\x9f\x98\x80\""),
    T("\"\xf4\x8f\xbf\xbf\""),
    T("\"\x7f\""),
    T("\"/\""),
    T("\"'\""),
    /* containers */
    T("[]"),
    T("{}"),
    T("[ ]"),
    T("{ }"),
    T("[1,2,3]"),
    T("{\"a\":1}"),
    T("{\"a\":1,\"a\":2}"),
    T("{\"\":\"\"}"),
    T("[[[]]]"),
    T("[{}]"),
    T("{\"a\":{\"b\":{\"c\":null}}}"),
    T("[\"x\",true,false,null,-1.5e3,{\"k\":[]}]"),
    T(" \t\n\r[ 1 , { \"a\" : [ ] } ] \n"),
    T("  \"padded\"  "),
};

static const text invalid_cases[] = {
    /* empty input */
    T(""),
    T(" "),
    T("\n\t"),
    /* numbers */
    T("01"),
    T("00"),
    T("-"),
    T("-01"),
    T("+1"),
    T(".5"),
    T("-.5"),
    T("1."),
    T("1.e5"),
    T("1e"),
    T("1e+"),
    T("1E-"),
    T("0x10"),
    T("--1"),
    T("-a"),
    T("NaN"),
    T("Infinity"),
    T("-Infinity"),
    T("1 2"),
    /* literals */
    T("tru"),
    T("truex"),
    T("True"),
    T("nul"),
    T("nulll"),
    T("fals"),
    T("undefined"),
    /* strings */
    T("\""),
    T("\"abc"),
    T("'a'"),
    T("\"\\x\""),
    T("\"\\'\""),
    T("\"\\\""),
    T("\"\\u12\""),
    T("\"\\u12G4\""),
    T("\"\\U0041\""),
    T("\"\\uD83D\""),
    T("\"\\uDE00\""),
    T("\"\\uD83Dx\""),
    T("\"\\uD83D\\u0041\""),
    T("\"\\uD83D\\uD83D\""),
    T("\"\\uD83D\\n\""),
    T("\"\\uDE00\\uD83D\""),
    T("\"a\nb\""),
    T("\"\t\""),
    T("\"\x1f\""),
    T("\"a\0b\""),
    /* raw bytes that are not UTF-8 */
    T("\"\xff\""),
    T("\"\x80\""),
    T("\"\xc3\""),
    T("\"\xc3\"x"),
    T("\"\xc0\xaf\""),
    T("\"\xe0\x80\xaf\""),
    T("\"\xed\xa0\x80\""),
    T("\"\xf4\x90\x80\x80\""),
    T("\"\xe2\x82\""),
    T("\"\xf0\x9f\x98\""),
    /* containers */
    T("["),
    T("]"),
    T("{"),
    T("}"),
    T("[1,]"),
    T("[,1]"),
    T("[,]"),
    T("[1 2]"),
    T("[1,,2]"),
    T("{\"a\"}"),
    T("{\"a\":}"),
    T("{\"a\":1,}"),
    T("{,}"),
    T("{a:1}"),
    T("{1:1}"),
    T("{\"a\" 1}"),
    T("{\"a\":1 \"b\":2}"),
    T("{\"a\"::1}"),
    T("[}"),
    T("{]"),
    T("[\"a\":1]"),
    /* trailing data */
    T("[1]]"),
    T("[1]x"),
    T("{}{}"),
    T("[] []"),
    T("1,"),
    T("\"a\"\"b\""),
    T("null\0"),
    T("\xef\xbb\xbf[]"),
};

static void json_valid_accepts_valid_table(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof valid_cases / sizeof valid_cases[0]; i++) {
    const text *c = &valid_cases[i];
    if (!hark_json_valid(c->data, c->len)) {
      fail_msg("rejected valid case %zu: %.*s", i, (int)c->len, c->data);
    }
  }
}

static void json_valid_rejects_invalid_table(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof invalid_cases / sizeof invalid_cases[0]; i++) {
    const text *c = &invalid_cases[i];
    if (hark_json_valid(c->data, c->len)) {
      fail_msg("accepted invalid case %zu: %.*s", i, (int)c->len, c->data);
    }
  }
}

/* Builds `depth` nested arrays, or `depth` opening brackets only when !close. */
static char *nested_arrays(size_t depth, int close, size_t *len) {
  *len = close ? depth * 2 : depth;
  char *s = malloc(*len);
  assert_non_null(s);
  memset(s, '[', depth);
  if (close) memset(s + depth, ']', depth);
  return s;
}

static void json_valid_depth_limit(void **state) {
  (void)state;
  size_t len;

  char *ok = nested_arrays(HARK_JSON_MAX_DEPTH, 1, &len);
  assert_true(hark_json_valid(ok, len));
  free(ok);

  char *deep = nested_arrays(HARK_JSON_MAX_DEPTH + 1, 1, &len);
  assert_false(hark_json_valid(deep, len));
  assert_int_equal(hark_json_skip_value(deep, len), -1);
  free(deep);
}

static void json_valid_depth_limit_objects(void **state) {
  (void)state;
  hark_buf doc = {0};

  /* {"a":{"a":...{}...}} with 64 objects, then the same with 65. */
  for (int depth = HARK_JSON_MAX_DEPTH; depth <= HARK_JSON_MAX_DEPTH + 1; depth++) {
    hark_buf_reset(&doc);
    for (int i = 1; i < depth; i++) assert_int_equal(hark_buf_append_str(&doc, "{\"a\":"), 0);
    assert_int_equal(hark_buf_append_str(&doc, "{}"), 0);
    for (int i = 1; i < depth; i++) assert_int_equal(hark_buf_append_byte(&doc, '}'), 0);
    assert_int_equal(hark_json_valid(doc.data, doc.len), depth == HARK_JSON_MAX_DEPTH);
  }
  hark_buf_free(&doc);
}

static void json_valid_deep_nesting_no_crash(void **state) {
  (void)state;
  size_t len;

  char *open = nested_arrays(1024 * 1024, 0, &len);
  assert_false(hark_json_valid(open, len));
  free(open);

  char *closed = nested_arrays(100000, 1, &len);
  assert_false(hark_json_valid(closed, len));
  free(closed);
}

static void json_skip_value_offsets(void **state) {
  (void)state;
  assert_int_equal(hark_json_skip_value("  [1, 2] rest", 13), 8);
  assert_int_equal(hark_json_skip_value("\"a\" x", 5), 3);
  assert_int_equal(hark_json_skip_value("12,", 3), 2);
  assert_int_equal(hark_json_skip_value("null]", 5), 4);
  assert_int_equal(hark_json_skip_value("{\"a\":[1]},{}", 12), 9);
  assert_int_equal(hark_json_skip_value("{", 1), -1);
  assert_int_equal(hark_json_skip_value("", 0), -1);
  assert_int_equal(hark_json_skip_value("   ", 3), -1);
  assert_int_equal(hark_json_skip_value("[1,]", 4), -1);
}

/* Runs hark_json_object_get on a NUL-terminated document. */
static int object_get(const char *doc, const char *key, const char **value, size_t *value_len) {
  *value = NULL;
  *value_len = 0;
  return hark_json_object_get(doc, strlen(doc), key, value, value_len);
}

static void assert_member(const char *doc, const char *key, const char *expected) {
  const char *value;
  size_t value_len;
  assert_int_equal(object_get(doc, key, &value, &value_len), 1);
  assert_int_equal(value_len, strlen(expected));
  assert_memory_equal(value, expected, value_len);
}

static void object_get_finds_members(void **state) {
  (void)state;
  const char *doc = " { \"topic\" : \"room:1\" , \"n\":-1.5e3,\"obj\":{\"x\":[1, 2]},\"z\":null } ";
  assert_member(doc, "topic", "\"room:1\"");
  assert_member(doc, "n", "-1.5e3");
  assert_member(doc, "obj", "{\"x\":[1, 2]}");
  assert_member(doc, "z", "null");
}

static void object_get_missing_and_nested(void **state) {
  (void)state;
  const char *value;
  size_t value_len;

  assert_int_equal(object_get("{\"a\":{\"topic\":1}}", "topic", &value, &value_len), 0);
  assert_int_equal(object_get("{\"a\":[\"topic\"]}", "topic", &value, &value_len), 0);
  assert_int_equal(object_get("{\"a\":\"topic\"}", "topic", &value, &value_len), 0);
  assert_int_equal(object_get("{}", "topic", &value, &value_len), 0);
  assert_int_equal(object_get("{\"top\":1}", "topic", &value, &value_len), 0);
  assert_int_equal(object_get("{\"topics\":1}", "topic", &value, &value_len), 0);
  assert_int_equal(object_get("{\"a\":1}", "", &value, &value_len), 0);
  assert_null(value);
}

static void object_get_duplicate_key_last_wins(void **state) {
  (void)state;
  assert_member("{\"a\":1,\"b\":2,\"a\":3}", "a", "3");
}

static void object_get_escaped_key(void **state) {
  (void)state;
  assert_member("{\"\\u0074opic\":\"x\"}", "topic", "\"x\"");
  assert_member("{\"a\\/b\":true}", "a/b", "true");
  assert_member("{\"\\u00e9\":1}", "\xc3\xa9", "1");
  assert_member("{\"\":2}", "", "2");
}

static void object_get_rejects_non_objects(void **state) {
  (void)state;
  const char *value;
  size_t value_len;

  assert_int_equal(object_get("[1]", "a", &value, &value_len), -1);
  assert_int_equal(object_get("\"a\"", "a", &value, &value_len), -1);
  assert_int_equal(object_get("1", "a", &value, &value_len), -1);
  assert_int_equal(object_get("null", "a", &value, &value_len), -1);
  assert_int_equal(object_get("", "a", &value, &value_len), -1);
  /* The member is found before the error, but the whole object must be valid. */
  assert_int_equal(object_get("{\"a\":1,\"b\":}", "a", &value, &value_len), -1);
  assert_int_equal(object_get("{\"a\":1} x", "a", &value, &value_len), -1);
}

/* Decodes a NUL-terminated token and checks the bytes it yields. */
static void assert_decodes(const char *token, const char *expected, size_t expected_len) {
  hark_buf out = {0};
  assert_int_equal(hark_json_decode_string(token, strlen(token), &out), 0);
  assert_int_equal(out.len, expected_len);
  if (expected_len > 0) assert_memory_equal(out.data, expected, expected_len);
  hark_buf_free(&out);
}

static void decode_string_escapes(void **state) {
  (void)state;
  assert_decodes("\"\"", "", 0);
  assert_decodes("\"plain\"", "plain", 5);
  assert_decodes("\"a\\nb\"", "a\nb", 3);
  assert_decodes("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"", "\"\\/\b\f\n\r\t", 8);
  assert_decodes("\"\\u0041\"", "A", 1);
  assert_decodes("\"\\u0000\"", "\0", 1);
  assert_decodes("\"\\u00e9\"", "\xc3\xa9", 2);
  assert_decodes("\"\\u20AC\"", "\xe2\x82\xac", 3);
  assert_decodes("\"\\uD83D\\uDE00\"", "\xf0\x9f\x98\x80", 4);
  assert_decodes("\"\\uDBFF\\uDFFF\"", "\xf4\x8f\xbf\xbf", 4);
  assert_decodes("\"room:\\u00e9!\"", "room:\xc3\xa9!", 8);
  assert_decodes("\"\xc3\xa9\"", "\xc3\xa9", 2);
}

static void decode_string_appends(void **state) {
  (void)state;
  hark_buf out = {0};
  assert_int_equal(hark_buf_append_str(&out, "x:"), 0);
  assert_int_equal(hark_json_decode_string("\"y\"", 3, &out), 0);
  assert_int_equal(out.len, 3);
  assert_memory_equal(out.data, "x:y", 3);
  hark_buf_free(&out);
}

static void decode_string_rejects_invalid(void **state) {
  (void)state;
  static const char *const tokens[] = {
      "",     "\"",          "abc",         "\"abc",   "\"a\" ",   "\"a\"\"",  "1",
      "null", "\"\\uD83D\"", "\"\\uDE00\"", "\"\\x\"", "\"\xff\"", "\"a\tb\"", "[\"a\"]",
  };
  hark_buf out = {0};
  for (size_t i = 0; i < sizeof tokens / sizeof tokens[0]; i++) {
    if (hark_json_decode_string(tokens[i], strlen(tokens[i]), &out) != -1) {
      fail_msg("decoded invalid token %zu: %s", i, tokens[i]);
    }
  }
  hark_buf_free(&out);
}

static void assert_appends(const char *s, size_t len, const char *expected) {
  hark_buf out = {0};
  assert_int_equal(hark_json_append_string(&out, s, len), 0);
  assert_int_equal(out.len, strlen(expected));
  assert_memory_equal(out.data, expected, out.len);
  hark_buf_free(&out);
}

static void append_string_escapes(void **state) {
  (void)state;
  assert_appends("", 0, "\"\"");
  assert_appends("room:1", 6, "\"room:1\"");
  assert_appends("a\"b\\c", 5, "\"a\\\"b\\\\c\"");
  assert_appends("\b\f\n\r\t", 5, "\"\\b\\f\\n\\r\\t\"");
  assert_appends("\x01\x1f", 2, "\"\\u0001\\u001f\"");
  assert_appends("\0", 1, "\"\\u0000\"");
  assert_appends("a/b\x7f", 4, "\"a/b\x7f\"");
  assert_appends("\xc3\xa9\xf0\x9f\x98\x80", 6, "\"\xc3\xa9\xf0\x9f\x98\x80\"");
}

static void append_string_rejects_bad_utf8(void **state) {
  (void)state;
  hark_buf out = {0};
  assert_int_equal(hark_buf_append_str(&out, "keep"), 0);
  assert_int_equal(hark_json_append_string(&out, "\xff", 1), -1);
  assert_int_equal(hark_json_append_string(&out, "\xc3", 1), -1);
  assert_int_equal(hark_json_append_string(&out, "\xed\xa0\x80", 3), -1);
  assert_int_equal(out.len, 4);
  hark_buf_free(&out);
}

static void append_string_round_trip(void **state) {
  (void)state;
  /* Every byte 0x00-0x7F plus multi-byte characters of each length. */
  char original[128 + 9];
  for (int i = 0; i < 128; i++) original[i] = (char)i;
  memcpy(original + 128, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9);

  hark_buf encoded = {0};
  hark_buf decoded = {0};
  assert_int_equal(hark_json_append_string(&encoded, original, sizeof original), 0);
  assert_true(hark_json_valid(encoded.data, encoded.len));
  assert_int_equal(hark_json_decode_string(encoded.data, encoded.len, &decoded), 0);
  assert_int_equal(decoded.len, sizeof original);
  assert_memory_equal(decoded.data, original, sizeof original);
  hark_buf_free(&encoded);
  hark_buf_free(&decoded);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(json_valid_accepts_valid_table),
      cmocka_unit_test(json_valid_rejects_invalid_table),
      cmocka_unit_test(json_valid_depth_limit),
      cmocka_unit_test(json_valid_depth_limit_objects),
      cmocka_unit_test(json_valid_deep_nesting_no_crash),
      cmocka_unit_test(json_skip_value_offsets),
      cmocka_unit_test(object_get_finds_members),
      cmocka_unit_test(object_get_missing_and_nested),
      cmocka_unit_test(object_get_duplicate_key_last_wins),
      cmocka_unit_test(object_get_escaped_key),
      cmocka_unit_test(object_get_rejects_non_objects),
      cmocka_unit_test(decode_string_escapes),
      cmocka_unit_test(decode_string_appends),
      cmocka_unit_test(decode_string_rejects_invalid),
      cmocka_unit_test(append_string_escapes),
      cmocka_unit_test(append_string_rejects_bad_utf8),
      cmocka_unit_test(append_string_round_trip),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
