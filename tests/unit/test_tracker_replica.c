/* Replica record tests: vsn, heartbeats, down and permdown detection. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "tracker/replica.h"

static hark__rref ref(const char *name, uint64_t vsn) {
  hark__rref r = {name, strlen(name), vsn};
  return r;
}

static void vsn_differs_per_start(void **unused) {
  (void)unused;
  uint64_t a = hark__replica_vsn(1000, 1);
  uint64_t b = hark__replica_vsn(1000, 2);
  assert_true(a != b);
  assert_int_equal(hark__replica_vsn(5000, 1), 5001);
}

static void ref_is_name_and_vsn(void **unused) {
  (void)unused;
  hark__replica_map map = {0};
  hark__replica_info previous;
  assert_int_equal(hark__replica_put_heartbeat(&map, ref("node1", 7), 100, &previous), 0);
  const hark__replica *r = hark__replica_find(&map, "node1", 5);
  assert_non_null(r);
  hark__rref got = hark__replica_ref(r);
  assert_true(hark__rref_equal(got, ref("node1", 7)));
  hark__replica_map_free(&map);
}

static void heartbeat_inserts_unknown(void **unused) {
  (void)unused;
  hark__replica_map map = {0};
  hark__replica_info previous;
  assert_int_equal(hark__replica_put_heartbeat(&map, ref("node1", 7), 100, &previous), 0);
  assert_false(previous.present);

  const hark__replica *r = hark__replica_find(&map, "node1", 5);
  assert_non_null(r);
  assert_int_equal(r->status, HARK__REPLICA_UP);
  assert_true(r->has_heartbeat);
  assert_int_equal(r->last_heartbeat_ms, 100);
  hark__replica_map_free(&map);
}

static void heartbeat_marks_known_up(void **unused) {
  (void)unused;
  hark__replica_map map = {0};
  hark__replica_info previous, before, after;
  assert_int_equal(hark__replica_put_heartbeat(&map, ref("node1", 7), 100, &previous), 0);
  hark__replica_detect_down(&map, "node1", 5, 5, 10, 106, &before, &after);
  assert_int_equal(after.status, HARK__REPLICA_DOWN);

  assert_int_equal(hark__replica_put_heartbeat(&map, ref("node1", 7), 200, &previous), 0);
  assert_true(previous.present);
  assert_int_equal(previous.status, HARK__REPLICA_DOWN);
  assert_int_equal(previous.last_heartbeat_ms, 100);
  assert_int_equal(previous.vsn, 7);

  const hark__replica *r = hark__replica_find(&map, "node1", 5);
  assert_int_equal(r->status, HARK__REPLICA_UP);
  assert_int_equal(r->vsn, 7);
  assert_int_equal(r->last_heartbeat_ms, 200);

  /* An up record is refreshed the same way. */
  assert_int_equal(hark__replica_put_heartbeat(&map, ref("node1", 7), 300, &previous), 0);
  assert_int_equal(previous.status, HARK__REPLICA_UP);
  assert_int_equal(r->last_heartbeat_ms, 300);
  hark__replica_map_free(&map);
}

static void detect_down_after_down_period(void **unused) {
  (void)unused;
  hark__replica_map map = {0};
  hark__replica_info previous, before, after;
  hark__replica_put_heartbeat(&map, ref("node1", 7), 100, &previous);

  hark__replica_detect_down(&map, "node1", 5, 5, 10, 106, &before, &after);
  assert_int_equal(before.status, HARK__REPLICA_UP);
  assert_int_equal(after.status, HARK__REPLICA_DOWN);
  assert_non_null(hark__replica_find(&map, "node1", 5));
  assert_int_equal(hark__replica_find(&map, "node1", 5)->status, HARK__REPLICA_DOWN);

  /* Exactly down_ms of silence is not down: the comparison is strict. */
  hark__replica_map fresh = {0};
  hark__replica_put_heartbeat(&fresh, ref("node2", 1), 100, &previous);
  hark__replica_detect_down(&fresh, "node2", 5, 5, 10, 105, &before, &after);
  assert_int_equal(after.status, HARK__REPLICA_UP);

  hark__replica_map_free(&map);
  hark__replica_map_free(&fresh);
}

static void detect_permdown_removes_record(void **unused) {
  (void)unused;
  hark__replica_map map = {0};
  hark__replica_info previous, before, after;
  hark__replica_put_heartbeat(&map, ref("node1", 7), 100, &previous);

  hark__replica_detect_down(&map, "node1", 5, 5, 10, 111, &before, &after);
  assert_int_equal(before.status, HARK__REPLICA_UP);
  assert_int_equal(after.status, HARK__REPLICA_PERMDOWN);
  assert_null(hark__replica_find(&map, "node1", 5));
  assert_int_equal(map.count, 0);

  /* Exactly permdown_ms of silence is only down. */
  hark__replica_put_heartbeat(&map, ref("node1", 7), 100, &previous);
  hark__replica_detect_down(&map, "node1", 5, 5, 10, 110, &before, &after);
  assert_int_equal(after.status, HARK__REPLICA_DOWN);
  hark__replica_map_free(&map);
}

static void detect_down_without_silence(void **unused) {
  (void)unused;
  hark__replica_map map = {0};
  hark__replica_info previous, before, after;
  hark__replica_put_heartbeat(&map, ref("node1", 7), 100, &previous);
  hark__replica_detect_down(&map, "node1", 5, 5, 10, 100, &before, &after);
  assert_int_equal(before.status, HARK__REPLICA_UP);
  assert_int_equal(after.status, HARK__REPLICA_UP);
  assert_int_equal(after.last_heartbeat_ms, 100);
  hark__replica_map_free(&map);
}

static void fetch_by_ref_matches_vsn(void **unused) {
  (void)unused;
  hark__replica_map map = {0};
  hark__replica_info previous;
  hark__replica_put_heartbeat(&map, ref("node1", 7), 100, &previous);
  assert_non_null(hark__replica_fetch_by_ref(&map, ref("node1", 7)));
  assert_null(hark__replica_fetch_by_ref(&map, ref("node1", 8)));
  assert_null(hark__replica_fetch_by_ref(&map, ref("node2", 7)));

  /* A new vsn under the same name replaces the old one. */
  hark__replica_put_heartbeat(&map, ref("node1", 9), 200, &previous);
  assert_int_equal(previous.vsn, 7);
  assert_null(hark__replica_fetch_by_ref(&map, ref("node1", 7)));
  assert_non_null(hark__replica_fetch_by_ref(&map, ref("node1", 9)));
  assert_int_equal(map.count, 1);
  hark__replica_map_free(&map);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(vsn_differs_per_start),
      cmocka_unit_test(ref_is_name_and_vsn),
      cmocka_unit_test(heartbeat_inserts_unknown),
      cmocka_unit_test(heartbeat_marks_known_up),
      cmocka_unit_test(detect_down_after_down_period),
      cmocka_unit_test(detect_permdown_removes_record),
      cmocka_unit_test(detect_down_without_silence),
      cmocka_unit_test(fetch_by_ref_matches_vsn),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
