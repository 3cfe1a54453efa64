/* Delta generation tests: nested windows, contiguity, replica removal and
 * the choice of what to send a requester. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tracker/delta_generation.h"

static hark__rref ref(const char *name) {
  hark__rref r = {name, strlen(name), 1};
  return r;
}

static void join(hark__state *s, const char *key) {
  assert_int_equal(hark__state_join(s, 1, "lobby", 5, key, strlen(key), "{}", 2, NULL), 0);
}

static hark__delta *take_delta(hark__state *s) {
  hark__delta *delta = hark__state_delta(s);
  assert_non_null(delta);
  hark__state_reset_delta(s);
  return delta;
}

/* The keys of a delta's values, sorted and joined with spaces. */
static int compare_strings(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static const char *keys_of(const hark__delta *delta) {
  static char out[256];
  char *keys[32];
  size_t n = delta->value_count;
  assert_true(n <= 32);
  for (size_t i = 0; i < n; i++) {
    hark__value_view view;
    hark__delta_value_at(delta, i, &view);
    keys[i] = strndup(view.key, view.key_len);
  }
  qsort(keys, n, sizeof(*keys), compare_strings);
  out[0] = '\0';
  for (size_t i = 0; i < n; i++) {
    if (i > 0) strcat(out, " ");
    strcat(out, keys[i]);
    free(keys[i]);
  }
  return out;
}

/* Pushes the pending delta of `s` the way a shard does at a heartbeat:
 * reset first, then push what was taken. */
static void push_own(hark__generations *gens, hark__state *s) {
  hark__delta *delta = take_delta(s);
  assert_int_equal(hark__generations_push(gens, s, delta), 0);
  hark__delta_free(delta);
}

static void generations_nest(void **unused) {
  (void)unused;
  static const uint64_t caps[] = {2, 5, 6};
  hark__generations gens;
  hark__generations_init(&gens, caps, 3);
  hark__state *s1 = hark__state_new(ref("s1"));
  hark__state *s2 = hark__state_new(ref("s2"));
  hark__state_replica_up(s1, ref("s2"), NULL);
  hark__state_replica_up(s2, ref("s1"), NULL);

  join(s1, "u1");
  push_own(&gens, s1);
  assert_string_equal(keys_of(gens.deltas[0]), "u1");
  assert_string_equal(keys_of(gens.deltas[1]), "u1");
  assert_string_equal(keys_of(gens.deltas[2]), "u1");

  join(s1, "u2");
  push_own(&gens, s1);
  assert_string_equal(keys_of(gens.deltas[0]), "u2");
  assert_string_equal(keys_of(gens.deltas[1]), "u1 u2");
  assert_string_equal(keys_of(gens.deltas[2]), "u1 u2");

  join(s1, "u3");
  push_own(&gens, s1);
  assert_string_equal(keys_of(gens.deltas[0]), "u3");
  assert_string_equal(keys_of(gens.deltas[1]), "u2 u3");
  assert_string_equal(keys_of(gens.deltas[2]), "u1 u2 u3");

  join(s1, "u4");
  push_own(&gens, s1);
  assert_string_equal(keys_of(gens.deltas[0]), "u4");
  assert_string_equal(keys_of(gens.deltas[1]), "u3 u4");
  assert_string_equal(keys_of(gens.deltas[2]), "u2 u3 u4");

  /* A remote delta (u5 from s2) merges into every generation that fits. */
  join(s2, "u5");
  hark__delta *remote = take_delta(s2);
  assert_int_equal(hark__generations_push(&gens, s1, remote), 0);
  assert_string_equal(keys_of(gens.deltas[0]), "u5");
  assert_string_equal(keys_of(gens.deltas[1]), "u4 u5");

  /* Pushing the same delta again changes nothing. */
  uint64_t sizes[3];
  for (int i = 0; i < 3; i++) sizes[i] = hark__delta_size(gens.deltas[i]);
  assert_int_equal(hark__generations_push(&gens, s1, remote), 0);
  for (int i = 0; i < 3; i++) assert_int_equal(hark__delta_size(gens.deltas[i]), sizes[i]);
  hark__delta_free(remote);

  /* A tombstone for u5: gen1 keeps no values but both of s2's dots. */
  assert_int_equal(hark__state_leave(s2, 1, "lobby", 5, "u5", 2, NULL), 0);
  hark__delta *tombstone = take_delta(s2);
  assert_int_equal(hark__generations_push(&gens, s1, tombstone), 0);
  hark__delta_free(tombstone);
  assert_string_equal(keys_of(gens.deltas[0]), "");
  long i2 = hark__delta_find_replica(gens.deltas[0], ref("s2"));
  assert_true(i2 >= 0);
  assert_true(hark__dotset_contains(&gens.deltas[0]->replicas[i2].cloud, 1));
  assert_true(hark__dotset_contains(&gens.deltas[0]->replicas[i2].cloud, 2));

  hark__generations_clear(&gens);
  hark__state_free(s1);
  hark__state_free(s2);
}

static void gap_is_not_merged(void **unused) {
  (void)unused;
  static const uint64_t caps[] = {10, 100};
  hark__generations gens;
  hark__generations_init(&gens, caps, 2);
  hark__state *s1 = hark__state_new(ref("s1"));

  join(s1, "u1");
  push_own(&gens, s1);
  join(s1, "u2");
  hark__state_reset_delta(s1); /* this delta is lost */
  join(s1, "u3");
  push_own(&gens, s1);

  assert_string_equal(keys_of(gens.deltas[0]), "u1");
  assert_string_equal(keys_of(gens.deltas[1]), "u1");

  hark__generations_clear(&gens);
  hark__state_free(s1);
}

static void remove_replica_from_generations(void **unused) {
  (void)unused;
  static const uint64_t caps[] = {10, 100};
  hark__generations gens;
  hark__generations_init(&gens, caps, 2);
  hark__state *s1 = hark__state_new(ref("s1"));
  hark__state *s2 = hark__state_new(ref("s2"));
  hark__state_replica_up(s1, ref("s2"), NULL);

  join(s1, "u1");
  push_own(&gens, s1);
  join(s2, "u2");
  hark__delta *remote = take_delta(s2);
  assert_int_equal(hark__generations_push(&gens, s1, remote), 0);
  hark__delta_free(remote);
  assert_string_equal(keys_of(gens.deltas[0]), "u1 u2");

  assert_int_equal(hark__generations_remove_replica(&gens, ref("s2")), 0);
  for (size_t i = 0; i < gens.count; i++) {
    assert_string_equal(keys_of(gens.deltas[i]), "u1");
    assert_true(hark__delta_find_replica(gens.deltas[i], ref("s2")) < 0);
  }

  /* Merging the pruned generation into a fresh state where s2 is up gives no
   * join for s2's entry. */
  hark__state *fresh = hark__state_new(ref("s3"));
  hark__state_replica_up(fresh, ref("s2"), NULL);
  hark__changes changes = {0};
  assert_int_equal(hark__state_merge(fresh, gens.deltas[0], &changes), 0);
  assert_int_equal(changes.count, 0);
  hark__changes_clear(&changes);

  hark__generations_clear(&gens);
  hark__state_free(s1);
  hark__state_free(s2);
  hark__state_free(fresh);
}

static void extract_without_generations_is_full(void **unused) {
  (void)unused;
  static const uint64_t caps[] = {10};
  hark__generations gens;
  hark__generations_init(&gens, caps, 1);
  hark__state *s1 = hark__state_new(ref("s1"));
  join(s1, "u1");

  hark__clock remote = {0};
  hark__clock_set(&remote, ref("s1"), 0);
  long from = 0;
  hark__delta *payload = hark__generations_extract(&gens, s1, ref("s2"), &remote, &from);
  assert_non_null(payload);
  assert_int_equal(from, -1);
  assert_int_equal(payload->kind, HARK__DELTA_FULL);
  assert_string_equal(keys_of(payload), "u1");
  assert_true(payload->replicas[payload->creator].has_context);

  hark__delta_free(payload);
  hark__clock_free(&remote);
  hark__state_free(s1);
}

static void extract_picks_bridging_generation(void **unused) {
  (void)unused;
  hark__state *s1 = hark__state_new(ref("r1"));
  join(s1, "u1");
  hark__delta *d2 = take_delta(s1); /* r1: 0 -> 1 */
  join(s1, "u2");
  hark__delta *d3 = take_delta(s1); /* r1: 1 -> 2 */

  static const uint64_t caps[] = {10, 100};
  hark__generations gens;
  hark__generations_init(&gens, caps, 2);
  gens.deltas = calloc(2, sizeof(*gens.deltas));
  gens.deltas[0] = d2;
  gens.deltas[1] = d3;
  gens.count = 2;

  hark__clock remote = {0};
  hark__clock_set(&remote, ref("r1"), 1);
  long from = -2;
  hark__delta *payload = hark__generations_extract(&gens, s1, ref("r2"), &remote, &from);
  assert_int_equal(from, 1);
  assert_int_equal(payload->kind, HARK__DELTA_WINDOW);
  assert_string_equal(keys_of(payload), "u2");

  hark__delta_free(payload);
  hark__clock_free(&remote);
  hark__generations_clear(&gens);
  hark__state_free(s1);
}

static void extract_skips_empty_pruned_range(void **unused) {
  (void)unused;
  /* gen1 makes progress only on r3, unknown to the requester: after pruning
   * to {r1, r2} its range is empty, so gen2 is chosen and pruned. */
  hark__state *r1 = hark__state_new(ref("r1"));
  hark__state *r2 = hark__state_new(ref("r2"));
  hark__state *r3 = hark__state_new(ref("r3"));
  join(r3, "u3");
  hark__delta *gen1 = take_delta(r3);
  join(r2, "u2");
  hark__delta *d2 = take_delta(r2);
  hark__delta *gen2 = NULL;
  assert_int_equal(hark__delta_merge(d2, gen1, &gen2), 0);
  hark__delta_free(d2);
  join(r1, "u1");

  static const uint64_t caps[] = {10, 100};
  hark__generations gens;
  hark__generations_init(&gens, caps, 2);
  gens.deltas = calloc(2, sizeof(*gens.deltas));
  gens.deltas[0] = gen1;
  gens.deltas[1] = gen2;
  gens.count = 2;

  hark__clock remote = {0};
  hark__clock_set(&remote, ref("r1"), 0);
  hark__clock_set(&remote, ref("r2"), 0);
  long from = -2;
  hark__delta *payload = hark__generations_extract(&gens, r1, ref("r1"), &remote, &from);
  assert_int_equal(from, 1);
  assert_string_equal(keys_of(payload), "u2");
  assert_true(hark__delta_find_replica(payload, ref("r3")) < 0);
  long i2 = hark__delta_find_replica(payload, ref("r2"));
  assert_true(i2 >= 0);
  assert_true(payload->replicas[i2].has_start && payload->replicas[i2].has_end);
  assert_int_equal(payload->replicas[i2].end, 1);

  hark__delta_free(payload);
  hark__clock_free(&remote);
  hark__generations_clear(&gens);
  hark__state_free(r1);
  hark__state_free(r2);
  hark__state_free(r3);
}

static void extract_judges_known_replicas_only(void **unused) {
  (void)unused;
  /* gen1 covers r1 0 -> 1 plus progress on r2. The requester's clock has
   * only r1, at 1, so gen1 brings nothing new, but gen2 (r1 0 -> 2) does. */
  hark__state *r1 = hark__state_new(ref("r1"));
  hark__state *r2 = hark__state_new(ref("r2"));
  join(r1, "a");
  hark__delta *first = take_delta(r1);
  join(r2, "b");
  hark__delta *other = take_delta(r2);
  hark__delta *gen1 = NULL;
  assert_int_equal(hark__delta_merge(first, other, &gen1), 0);
  join(r1, "c");
  hark__delta *second = take_delta(r1);
  hark__delta *gen2 = NULL;
  assert_int_equal(hark__delta_merge(first, second, &gen2), 0);
  hark__delta_free(first);
  hark__delta_free(second);
  hark__delta_free(other);

  static const uint64_t caps[] = {10, 100};
  hark__generations gens;
  hark__generations_init(&gens, caps, 2);
  gens.deltas = calloc(2, sizeof(*gens.deltas));
  gens.deltas[0] = gen1;
  gens.deltas[1] = gen2;
  gens.count = 2;

  hark__clock remote = {0};
  hark__clock_set(&remote, ref("r1"), 1);
  long from = -2;
  hark__delta *payload = hark__generations_extract(&gens, r1, ref("r9"), &remote, &from);
  assert_int_equal(from, 1);
  assert_string_equal(keys_of(payload), "a c");

  hark__delta_free(payload);
  hark__clock_free(&remote);
  hark__generations_clear(&gens);
  hark__state_free(r1);
  hark__state_free(r2);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(generations_nest),
      cmocka_unit_test(gap_is_not_merged),
      cmocka_unit_test(remove_replica_from_generations),
      cmocka_unit_test(extract_without_generations_is_full),
      cmocka_unit_test(extract_picks_bridging_generation),
      cmocka_unit_test(extract_skips_empty_pruned_range),
      cmocka_unit_test(extract_judges_known_replicas_only),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
