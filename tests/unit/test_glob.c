#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "base/glob.h"

static int match(const char *pattern, const char *text) {
  return hark_glob_match(pattern, text, strlen(text));
}

static void glob_star_matches_any_run(void **state) {
  (void)state;
  assert_true(match("*", ""));
  assert_true(match("*", "room:lobby"));
  assert_true(match("room:*", "room:"));
  assert_true(match("room:*", "room:lobby"));
  assert_true(match("room:*:chat", "room:a:b:chat"));
  assert_true(match("*lobby", "room:lobby"));
  assert_true(match("a*b*c", "aXXbYYc"));
  assert_false(match("room:*", "rooms:lobby"));
  assert_false(match("room:*:chat", "room:a:b:chatter"));
  assert_false(match("a*b*c", "aXXbYY"));
}

static void glob_question_matches_one_byte(void **state) {
  (void)state;
  assert_true(match("room:?", "room:1"));
  assert_false(match("room:?", "room:"));
  assert_false(match("room:?", "room:12"));
  assert_true(match("??", "ab"));
}

static void glob_literal_needs_exact_text(void **state) {
  (void)state;
  assert_true(match("room:lobby", "room:lobby"));
  assert_false(match("room:lobby", "room:lobb"));
  assert_false(match("room:lobby", "room:lobbyX"));
  assert_true(match("", ""));
  assert_false(match("", "x"));
}

static void glob_text_with_nul_bytes(void **state) {
  (void)state;
  const char text[] = {'a', '\0', 'b'};
  assert_true(hark_glob_match("a*b", text, sizeof text));
  assert_true(hark_glob_match("a?b", text, sizeof text));
  assert_false(hark_glob_match("ab", text, sizeof text));
}

static void glob_many_stars_is_not_exponential(void **state) {
  (void)state;
  char text[4001];
  memset(text, 'a', 4000);
  text[4000] = '\0';
  assert_false(match("*a*a*a*a*a*a*a*a*a*a*b", text));
  assert_true(match("*a*a*a*a*a*a*a*a*a*a*", text));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(glob_star_matches_any_run),
      cmocka_unit_test(glob_question_matches_one_byte),
      cmocka_unit_test(glob_literal_needs_exact_text),
      cmocka_unit_test(glob_text_with_nul_bytes),
      cmocka_unit_test(glob_many_stars_is_not_exponential),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
