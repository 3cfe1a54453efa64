#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "server/ratelimit.h"

/* Takes tokens until one is refused; returns how many were taken. */
static unsigned drain(hark_token_bucket *bucket, uint64_t now_ms) {
  unsigned taken = 0;
  while (hark_token_bucket_take(bucket, now_ms) && taken < 1000000) taken++;
  return taken;
}

static void bucket_allows_burst_then_rejects(void **state) {
  (void)state;
  hark_token_bucket bucket;
  hark_token_bucket_init(&bucket, 100, 200, 5000);
  assert_int_equal(drain(&bucket, 5000), 200);
  assert_int_equal(hark_token_bucket_take(&bucket, 5000), 0);
}

static void bucket_refills_at_rate(void **state) {
  (void)state;
  hark_token_bucket bucket;
  hark_token_bucket_init(&bucket, 100, 200, 0);
  drain(&bucket, 0);

  /* 100 per second is one token per 10 ms. */
  assert_int_equal(hark_token_bucket_take(&bucket, 9), 0);
  assert_int_equal(hark_token_bucket_take(&bucket, 10), 1);
  assert_int_equal(hark_token_bucket_take(&bucket, 10), 0);
  assert_int_equal(drain(&bucket, 510), 50);
}

static void bucket_keeps_fractions(void **state) {
  (void)state;
  hark_token_bucket bucket;
  hark_token_bucket_init(&bucket, 3, 1, 0);
  assert_int_equal(drain(&bucket, 0), 1);

  /* 3 per second: a token needs 333.3 ms, and 3 small steps add up to it. */
  assert_int_equal(hark_token_bucket_take(&bucket, 111), 0);
  assert_int_equal(hark_token_bucket_take(&bucket, 222), 0);
  assert_int_equal(hark_token_bucket_take(&bucket, 334), 1);
}

static void bucket_caps_at_burst(void **state) {
  (void)state;
  hark_token_bucket bucket;
  hark_token_bucket_init(&bucket, 100, 200, 0);
  drain(&bucket, 0);
  assert_int_equal(drain(&bucket, 3600000), 200);
  assert_int_equal(drain(&bucket, UINT64_MAX), 200);
}

static void bucket_ignores_backwards_clock(void **state) {
  (void)state;
  hark_token_bucket bucket;
  hark_token_bucket_init(&bucket, 100, 2, 1000);
  assert_int_equal(drain(&bucket, 1000), 2);
  assert_int_equal(hark_token_bucket_take(&bucket, 500), 0);
  assert_int_equal(hark_token_bucket_take(&bucket, 1009), 0);
  assert_int_equal(hark_token_bucket_take(&bucket, 1010), 1);
}

static void bucket_rate_zero_is_unlimited(void **state) {
  (void)state;
  hark_token_bucket bucket;
  hark_token_bucket_init(&bucket, 0, 0, 0);
  for (int i = 0; i < 100000; i++) assert_int_equal(hark_token_bucket_take(&bucket, 0), 1);
}

static void bucket_burst_zero_becomes_one(void **state) {
  (void)state;
  hark_token_bucket bucket;
  hark_token_bucket_init(&bucket, 10, 0, 0);
  assert_int_equal(drain(&bucket, 0), 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(bucket_allows_burst_then_rejects),
      cmocka_unit_test(bucket_refills_at_rate),
      cmocka_unit_test(bucket_keeps_fractions),
      cmocka_unit_test(bucket_caps_at_burst),
      cmocka_unit_test(bucket_ignores_backwards_clock),
      cmocka_unit_test(bucket_rate_zero_is_unlimited),
      cmocka_unit_test(bucket_burst_zero_becomes_one),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
