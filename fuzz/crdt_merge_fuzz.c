/* libFuzzer target for the tracker's wire decoder and CRDT merge
 * (src/tracker/wire.c, src/tracker/state.c).
 *
 * Each input is decoded as one replication message. When it decodes, its
 * payload is merged into a state of replica "a" that already holds entries
 * and knows replicas "b" and "c", and pushed into delta generations. The
 * target then checks that the state still lists consistently and that a
 * full exchange with the state of "b" converges on the entries of "c"
 * (the replica a message may speak for; it cannot speak for "b" itself,
 * whose own state is the reference). Sanitizers report crashes and leaks.
 *
 * scripts/fuzz.sh builds it with clang and runs it from the seeds in
 * fuzz/corpus/crdt_merge. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tracker/delta_generation.h"
#include "tracker/state.h"
#include "tracker/wire.h"

static hark__rref ref(const char *name, uint64_t vsn) {
  hark__rref r = {name, strlen(name), vsn};
  return r;
}

static void require(int ok, const char *what) {
  if (!ok) {
    fprintf(stderr, "invariant failed: %s\n", what);
    abort();
  }
}

static void join(hark__state *state, uint64_t owner, const char *topic, const char *key) {
  require(hark__state_join(state, owner, topic, strlen(topic), key, strlen(key), "{}", 2, NULL) == 0,
          "join");
}

/* States of "a" and "b", both knowing "c", with a few entries each. */
static void make_states(hark__state **a, hark__state **b) {
  *a = hark__state_new(ref("a", 1));
  *b = hark__state_new(ref("b", 2));
  require(*a && *b, "state_new");
  require(hark__state_replica_up(*a, ref("b", 2), NULL) == 0, "up");
  require(hark__state_replica_up(*a, ref("c", 3), NULL) == 0, "up");
  require(hark__state_replica_up(*b, ref("a", 1), NULL) == 0, "up");
  require(hark__state_replica_up(*b, ref("c", 3), NULL) == 0, "up");
  join(*a, 1, "room", "alice");
  join(*a, 2, "room", "anna");
  join(*b, 1, "room", "bob");
}

static void merge(hark__state *to, const hark__delta *delta) {
  hark__changes changes = {0};
  require(hark__state_merge(to, delta, &changes) == 0, "merge");
  hark__changes_clear(&changes);
}

/* Sends `from`'s full extract to `to`. */
static void exchange(hark__state *to, hark__state *from) {
  hark__clock clock = {0};
  require(hark__state_clocks(to, &clock) == 0, "clocks");
  hark__delta *extract = hark__state_extract(from, hark__state_self(to), &clock);
  require(extract != NULL, "extract");
  merge(to, extract);
  hark__delta_free(extract);
  hark__clock_free(&clock);
}

typedef struct walk {
  const hark__state *state;
  size_t count;
  size_t of_c;
  uint64_t sum_c; /* a checksum of c's tags */
} walk;

static void visit(void *ctx, const hark__entry *entry) {
  walk *w = ctx;
  hark__entry_view v;
  hark__entry_view_of(w->state, entry, &v);
  w->count++;
  require(hark__state_get_by_owner_key(w->state, v.replica, v.owner, v.topic, v.topic_len, v.key,
                                       v.key_len) == entry,
          "entry found by its key");
  if (hark__rref_equal(v.replica, ref("c", 3))) {
    w->of_c++;
    w->sum_c += v.counter * 2654435761u + v.owner;
  }
}

static walk walk_state(const hark__state *state) {
  walk w = {.state = state};
  hark__state_all_entries(state, visit, &w);
  require(w.count == hark__state_entry_count(state), "entry count matches the entries");
  return w;
}

static int mentions_b(const hark__delta *delta) {
  return hark__delta_find_replica(delta, ref("b", 2)) >= 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  hark__wire_msg msg;
  if (hark__wire_decode(data, size, &msg, NULL) != 0) return 0;

  /* Whatever decodes must encode again. */
  hark_buf again = {0};
  require(hark__wire_encode(&again, msg.type, msg.from, msg.request_id, &msg.clock, msg.payload) ==
              0,
          "re-encode");
  hark_buf_free(&again);
  if (msg.payload == NULL) {
    hark__wire_msg_free(&msg);
    return 0;
  }

  hark__state *a, *b;
  make_states(&a, &b);
  hark__state_reset_delta(a);
  merge(a, msg.payload);
  walk_state(a);

  static const uint64_t caps[3] = {4, 16, 64};
  hark__generations gens;
  hark__generations_init(&gens, caps, 3);
  if (msg.payload->kind == HARK__DELTA_WINDOW) hark__generations_push(&gens, a, msg.payload);
  hark__generations_clear(&gens);

  /* A message that speaks for b (b's own state is the reference) can make
   * a and b disagree by design; the convergence check skips it. */
  if (!mentions_b(msg.payload)) {
    exchange(b, a);
    exchange(a, b);
    walk wa = walk_state(a), wb = walk_state(b);
    require(wa.of_c == wb.of_c, "a and b hold the same number of c's entries");
    require(wa.sum_c == wb.sum_c, "a and b hold the same entries of c");
  }

  hark__state_free(a);
  hark__state_free(b);
  hark__wire_msg_free(&msg);
  return 0;
}
