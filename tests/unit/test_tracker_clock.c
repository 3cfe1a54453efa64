/* Clock and clock set tests: dominance, bounds, filtering and the trimming
 * rules of append_clock. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tracker/clock.h"

/* Replica "x" with vsn 1. */
static hark__rref ref(const char *name) {
  hark__rref r = {name, strlen(name), 1};
  return r;
}

/* Builds a clock from "a1 b2 c3": one-letter replica names and counters. */
static hark__clock clock_of(const char *spec) {
  hark__clock clock = {0};
  for (const char *p = spec; *p; p++) {
    if (*p == ' ') continue;
    char name[2] = {p[0], 0};
    uint64_t counter = 0;
    while (p[1] >= '0' && p[1] <= '9') counter = counter * 10 + (uint64_t)(*++p - '0');
    hark__rref r = {strdup(name), 1, 1};
    assert_int_equal(hark__clock_set(&clock, r, counter), 0);
    free((void *)r.name);
  }
  return clock;
}

static uint64_t counter_of(const hark__clock *clock, const char *name) {
  uint64_t counter = 0;
  assert_true(hark__clock_get(clock, ref(name), &counter));
  return counter;
}

static void dominates_cases(void **unused) {
  (void)unused;
  hark__clock abc = clock_of("a1 b2 c3");
  hark__clock ab = clock_of("a1 b2");
  hark__clock bcd = clock_of("b2 c3 d1");

  assert_true(hark__clock_dominates(&abc, &ab));
  assert_false(hark__clock_dominates(&abc, &bcd));
  assert_false(hark__clock_dominates(&ab, &abc));
  assert_true(hark__clock_dominates(&abc, &abc));
  assert_true(hark__clock_dominates(&ab, &ab));

  hark__clock_free(&abc);
  hark__clock_free(&ab);
  hark__clock_free(&bcd);
}

static void dominates_or_equal_cases(void **unused) {
  (void)unused;
  hark__clock empty = {0};
  hark__clock a1 = clock_of("a1");
  hark__clock a2 = clock_of("a2");
  hark__clock a1b5 = clock_of("a1 b5");

  assert_true(hark__clock_dominates_or_equal(&empty, &empty));
  assert_false(hark__clock_dominates_or_equal(&empty, &a1));
  assert_true(hark__clock_dominates_or_equal(&a2, &a1));
  assert_false(hark__clock_dominates_or_equal(&a1, &a2));
  /* Keys only in the second clock are ignored. */
  assert_true(hark__clock_dominates_or_equal(&a1, &a1b5));

  hark__clock_free(&a1);
  hark__clock_free(&a2);
  hark__clock_free(&a1b5);
}

static void clockset_keeps_covered_set(void **unused) {
  (void)unused;
  hark__clockset set = {0};
  hark__clock bcd = clock_of("b2 c3 d1");
  hark__clock ab = clock_of("a1 b2");
  hark__clock abc = clock_of("a1 b2 c3");

  assert_int_equal(hark__clockset_append(&set, ref("x"), &bcd), 0);
  assert_int_equal(hark__clockset_append(&set, ref("y"), &ab), 0);
  assert_int_equal(set.count, 2);

  /* abc dominates member ab, but the members' maximum a1 b2 c3 d1 covers it. */
  assert_int_equal(hark__clockset_append(&set, ref("z"), &abc), 0);
  assert_int_equal(set.count, 2);
  assert_true(hark__rref_equal(hark__clockset_ref(&set, 0), ref("x")));
  assert_true(hark__rref_equal(hark__clockset_ref(&set, 1), ref("y")));

  /* Re-adding a member changes nothing. */
  assert_int_equal(hark__clockset_append(&set, ref("y"), &ab), 0);
  assert_int_equal(set.count, 2);

  hark__clockset_free(&set);
  hark__clock_free(&bcd);
  hark__clock_free(&ab);
  hark__clock_free(&abc);
}

static void clockset_adds_concurrent_clock(void **unused) {
  (void)unused;
  hark__clockset set = {0};
  hark__clock abc = clock_of("a1 b2 c3");
  hark__clock ab = clock_of("a1 b2");
  hark__clock bcd = clock_of("b2 c3 d1");

  assert_int_equal(hark__clockset_append(&set, ref("x"), &abc), 0);
  /* ab is covered by abc, so the set keeps one member. */
  assert_int_equal(hark__clockset_append(&set, ref("y"), &ab), 0);
  assert_int_equal(set.count, 1);

  /* bcd is concurrent with the maximum a1 b2 c3: it is added. */
  assert_int_equal(hark__clockset_append(&set, ref("z"), &bcd), 0);
  assert_int_equal(set.count, 2);
  assert_true(hark__rref_equal(hark__clockset_ref(&set, 0), ref("x")));
  assert_true(hark__rref_equal(hark__clockset_ref(&set, 1), ref("z")));

  hark__clockset_free(&set);
  hark__clock_free(&abc);
  hark__clock_free(&ab);
  hark__clock_free(&bcd);
}

static void clockset_keeps_all_three_concurrent(void **unused) {
  (void)unused;
  /* Built by hand: [abc, ab] is a set that appending cannot produce, but the
   * rule for a concurrent clock must keep the members it does not dominate. */
  hark__clockset set = {0};
  hark__clock abc = clock_of("a1 b2 c3");
  hark__clock ab = clock_of("a1 b2");
  hark__clock bcd = clock_of("b2 c3 d1");
  set.items = calloc(4, sizeof(*set.items));
  set.cap = 4;
  set.items[0] = (hark__clockset_item){strdup("x"), 1, 1, {0}};
  set.items[1] = (hark__clockset_item){strdup("y"), 1, 1, {0}};
  assert_int_equal(hark__clock_copy(&set.items[0].clock, &abc), 0);
  assert_int_equal(hark__clock_copy(&set.items[1].clock, &ab), 0);
  set.count = 2;

  assert_int_equal(hark__clockset_append(&set, ref("z"), &bcd), 0);
  assert_int_equal(set.count, 3);

  hark__clockset_free(&set);
  hark__clock_free(&abc);
  hark__clock_free(&ab);
  hark__clock_free(&bcd);
}

static void clockset_collapses_equal_clocks(void **unused) {
  (void)unused;
  hark__clockset set = {0};
  hark__clock ab = clock_of("a1 b2");
  hark__clock empty = {0};

  assert_int_equal(hark__clockset_append(&set, ref("x"), &ab), 0);
  assert_int_equal(hark__clockset_append(&set, ref("y"), &ab), 0);
  assert_int_equal(set.count, 1);
  assert_true(hark__rref_equal(hark__clockset_ref(&set, 0), ref("y")));

  /* An empty clock changes nothing. */
  assert_int_equal(hark__clockset_append(&set, ref("z"), &empty), 0);
  assert_int_equal(set.count, 1);

  hark__clockset_free(&set);
  hark__clock_free(&ab);
}

static void upperbound_cases(void **unused) {
  (void)unused;
  hark__clock a = clock_of("a1 b2 c3");
  hark__clock b = clock_of("a3 b1 e5");
  hark__clock empty = {0};
  hark__clock out = {0};

  assert_int_equal(hark__clock_upperbound(&out, &a, &b), 0);
  assert_int_equal(out.count, 4);
  assert_int_equal(counter_of(&out, "a"), 3);
  assert_int_equal(counter_of(&out, "b"), 2);
  assert_int_equal(counter_of(&out, "c"), 3);
  assert_int_equal(counter_of(&out, "e"), 5);

  assert_int_equal(hark__clock_upperbound(&out, &a, &empty), 0);
  assert_true(hark__clock_equal(&out, &a));
  assert_int_equal(hark__clock_upperbound(&out, &empty, &a), 0);
  assert_true(hark__clock_equal(&out, &a));

  hark__clock_free(&a);
  hark__clock_free(&b);
  hark__clock_free(&out);
}

static void lowerbound_cases(void **unused) {
  (void)unused;
  hark__clock a = clock_of("a1 b2 c3");
  hark__clock b = clock_of("a3 b1 e5");
  hark__clock out = {0};

  assert_int_equal(hark__clock_lowerbound(&out, &a, &b), 0);
  assert_int_equal(out.count, 4);
  assert_int_equal(counter_of(&out, "a"), 1);
  assert_int_equal(counter_of(&out, "b"), 1);
  assert_int_equal(counter_of(&out, "c"), 3);
  assert_int_equal(counter_of(&out, "e"), 5);

  hark__clock_free(&a);
  hark__clock_free(&b);
  hark__clock_free(&out);
}

static void filter_and_list_replicas(void **unused) {
  (void)unused;
  hark__clock a = clock_of("a1 b2 c3");
  hark__clock out = {0};
  hark__rref keep[] = {ref("a"), ref("c"), ref("z")};

  assert_int_equal(hark__clock_filter_replicas(&out, &a, keep, 3), 0);
  assert_int_equal(out.count, 2);
  assert_int_equal(counter_of(&out, "a"), 1);
  assert_int_equal(counter_of(&out, "c"), 3);
  assert_false(hark__clock_get(&out, ref("b"), NULL));

  /* The replicas of a clock are its keys. */
  assert_int_equal(a.count, 3);
  assert_true(hark__rref_equal(hark__clock_ref(&a, 0), ref("a")));
  assert_true(hark__rref_equal(hark__clock_ref(&a, 1), ref("b")));
  assert_true(hark__rref_equal(hark__clock_ref(&a, 2), ref("c")));

  hark__clock_free(&a);
  hark__clock_free(&out);
}

static void rref_compares_name_and_vsn(void **unused) {
  (void)unused;
  hark__rref a1 = {"node", 4, 1};
  hark__rref a2 = {"node", 4, 2};
  hark__rref b1 = {"nodf", 4, 1};
  assert_true(hark__rref_equal(a1, a1));
  assert_false(hark__rref_equal(a1, a2));
  assert_false(hark__rref_equal(a1, b1));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(dominates_cases),
      cmocka_unit_test(dominates_or_equal_cases),
      cmocka_unit_test(clockset_keeps_covered_set),
      cmocka_unit_test(clockset_adds_concurrent_clock),
      cmocka_unit_test(clockset_keeps_all_three_concurrent),
      cmocka_unit_test(clockset_collapses_equal_clocks),
      cmocka_unit_test(upperbound_cases),
      cmocka_unit_test(lowerbound_cases),
      cmocka_unit_test(filter_and_list_replicas),
      cmocka_unit_test(rref_compares_name_and_vsn),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
