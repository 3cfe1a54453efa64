#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "server/ip_table.h"

static hark_ip_key key_of(uint32_t n) {
  hark_ip_key key;
  memset(&key, 0, sizeof key);
  memcpy(key.bytes + 12, &n, sizeof n);
  return key;
}

static void ip_table_counts_per_address(void **state) {
  (void)state;
  hark_ip_table table = {0};
  hark_ip_key a = key_of(1), b = key_of(2);
  assert_int_equal(hark_ip_table_add(&table, &a), 1);
  assert_int_equal(hark_ip_table_add(&table, &a), 2);
  assert_int_equal(hark_ip_table_add(&table, &b), 1);
  assert_int_equal(hark_ip_table_count(&table, &a), 2);
  hark_ip_table_remove(&table, &a);
  assert_int_equal(hark_ip_table_count(&table, &a), 1);
  hark_ip_table_remove(&table, &a);
  assert_int_equal(hark_ip_table_count(&table, &a), 0);
  assert_int_equal(hark_ip_table_count(&table, &b), 1);
  assert_int_equal(table.used, 1);
  hark_ip_table_free(&table);
}

static void ip_table_remove_unknown_is_noop(void **state) {
  (void)state;
  hark_ip_table table = {0};
  hark_ip_key a = key_of(7);
  hark_ip_table_remove(&table, &a);
  assert_int_equal(hark_ip_table_add(&table, &a), 1);
  hark_ip_key b = key_of(8);
  hark_ip_table_remove(&table, &b);
  assert_int_equal(hark_ip_table_count(&table, &a), 1);
  hark_ip_table_free(&table);
}

/* Adds and removes many addresses in a scrambled order, checking every count
 * against a plain array, which exercises growth and backward shifts. */
static void ip_table_matches_reference_model(void **state) {
  (void)state;
  enum { N = 5000 };
  static uint32_t expected[N];
  memset(expected, 0, sizeof expected);
  hark_ip_table table = {0};
  uint32_t seed = 12345;

  for (int step = 0; step < 200000; step++) {
    seed = seed * 1103515245u + 12345u;
    uint32_t n = (seed >> 8) % N;
    hark_ip_key key = key_of(n);
    if ((seed >> 20) % 3 == 0 && expected[n] > 0) {
      hark_ip_table_remove(&table, &key);
      expected[n]--;
    } else {
      assert_int_equal(hark_ip_table_add(&table, &key), ++expected[n]);
    }
  }

  uint32_t used = 0;
  for (uint32_t n = 0; n < N; n++) {
    hark_ip_key key = key_of(n);
    assert_int_equal(hark_ip_table_count(&table, &key), expected[n]);
    used += expected[n] > 0;
  }
  assert_int_equal(table.used, used);
  hark_ip_table_free(&table);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(ip_table_counts_per_address),
      cmocka_unit_test(ip_table_remove_unknown_is_noop),
      cmocka_unit_test(ip_table_matches_reference_model),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
