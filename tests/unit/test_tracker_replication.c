/* Replication protocol tests: several trackers in one process exchange
 * heartbeats, deltas and transfers over the simulated network of
 * tests/sim, in virtual time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "hark/tracker.h"
#include "tracker/shard.h"
#include "tracker/wire.h"

/* NOTE: included as source until the build has a sim library target. */
#include "sim_net.h"

#define PERIOD 100
#define DOWN 1000
#define PERMDOWN 5000

static hark_tracker_replication_options test_options(void) {
  hark_tracker_replication_options o;
  hark_tracker_replication_defaults(&o);
  o.broadcast_period_ms = PERIOD;
  o.max_silent_periods = 2;
  o.down_period_ms = DOWN;
  o.permdown_period_ms = PERMDOWN;
  o.clock_sample_periods = 2;
  return o;
}

static sim_node *start(sim_net *net, const char *name) {
  hark_tracker_replication_options o = test_options();
  return sim_net_start_node(net, name, 1, &o);
}

static int compare_keys(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Compares the keys of a topic's entries, sorted and joined by ','. */
static void assert_list(sim_node *node, const char *topic, const char *expected_keys) {
  char *list = sim_node_list(node, topic);
  char *items[64];
  size_t count = 0;
  for (char *line = strtok(list, "\n"); line && count < 64; line = strtok(NULL, "\n")) {
    char *key = strchr(line, '/') + 1;
    *strchr(key, '=') = '\0';
    items[count++] = key;
  }
  qsort(items, count, sizeof(*items), compare_keys);
  char keys[1024] = "";
  for (size_t i = 0; i < count; i++) {
    if (keys[0]) strcat(keys, ",");
    strcat(keys, items[i]);
  }
  free(list);
  if (strcmp(keys, expected_keys) != 0) {
    fail_msg("%s lists [%s] on %s, expected [%s]", sim_node_name(node), keys, topic,
             expected_keys);
  }
}

static void assert_same_lists(sim_node *a, sim_node *b, const char *topic) {
  char *x = sim_node_list(a, topic), *y = sim_node_list(b, topic);
  if (strcmp(x, y) != 0) {
    fail_msg("%s and %s differ on %s:\n%s\n--\n%s", sim_node_name(a), sim_node_name(b), topic, x,
             y);
  }
  free(x);
  free(y);
}

static size_t stored_entries(sim_node *node) {
  return hark__state_entry_count(hark__tracker_shard(sim_node_tracker(node), 0)->state);
}

static hark_tracker_stats stats_of(sim_node *node) {
  hark_tracker_stats s;
  hark_tracker_get_stats(sim_node_tracker(node), &s);
  return s;
}

/* ---- a tap that decodes every message ---- */

typedef struct wire_record {
  char from[16];
  char to[16];
  hark__wire_type type;
  uint64_t request_id;
  bool has_payload;
  bool full;
  bool relays; /* a heartbeat delta with data of a replica other than its sender */
} wire_record;

typedef struct wire_log {
  wire_record items[8192];
  size_t count;
} wire_log;

static bool delta_relays(const hark__delta *delta) {
  for (size_t i = 0; i < delta->replica_count; i++) {
    if (i == delta->creator) continue;
    if (delta->replicas[i].cloud.count > 0) return true;
  }
  for (size_t i = 0; i < delta->value_count; i++) {
    if (delta->values[i].replica != delta->creator) return true;
  }
  return false;
}

static void tap(void *ctx, const sim_msg *msg) {
  wire_log *log = ctx;
  hark__wire_msg decoded;
  assert_int_equal(hark__wire_decode(msg->data, msg->len, &decoded, NULL), 0);
  if (log->count < sizeof(log->items) / sizeof(log->items[0])) {
    wire_record *r = &log->items[log->count++];
    snprintf(r->from, sizeof(r->from), "%s", msg->from);
    snprintf(r->to, sizeof(r->to), "%s", msg->to ? msg->to : "*");
    r->type = decoded.type;
    r->request_id = decoded.request_id;
    r->has_payload = decoded.payload != NULL;
    r->full = decoded.payload && decoded.payload->kind == HARK__DELTA_FULL;
    r->relays = decoded.type == HARK__WIRE_HEARTBEAT && decoded.payload &&
                delta_relays(decoded.payload);
  }
  hark__wire_msg_free(&decoded);
}

static size_t count_records(const wire_log *log, const char *from, hark__wire_type type) {
  size_t n = 0;
  for (size_t i = 0; i < log->count; i++) {
    if (log->items[i].type == type && (!from || strcmp(log->items[i].from, from) == 0)) n++;
  }
  return n;
}

/* ---- options ---- */

static void validate_options(void **unused) {
  (void)unused;
  hark_tracker_replication_options o;
  const char *error = NULL;
  hark_tracker_replication_defaults(&o);
  assert_int_equal(hark_tracker_replication_validate(&o, &error), 0);
  assert_null(error);
  assert_int_equal(o.down_period_ms, 30000);

  o.down_period_ms = 1;
  o.permdown_period_ms = 0; /* also wrong, but the down period is checked first */
  assert_int_equal(hark_tracker_replication_validate(&o, &error), HARK_EINVAL);
  assert_string_equal(error, "down_period must be at least twice as large as the broadcast_period");

  hark_tracker_replication_defaults(&o);
  o.permdown_period_ms = o.down_period_ms;
  assert_int_equal(hark_tracker_replication_validate(&o, &error), HARK_EINVAL);
  assert_string_equal(error, "permdown_period must be larger than the down_period");

  hark_tracker_replication_defaults(&o);
  o.broadcast_period_ms = 0;
  assert_int_equal(hark_tracker_replication_validate(&o, &error), HARK_EINVAL);

  hark_tracker_replication_defaults(&o);
  o.max_delta_sizes[1] = 100;
  assert_int_equal(hark_tracker_replication_validate(&o, &error), HARK_EINVAL);
  assert_string_equal(error, "max_delta_sizes must be increasing");

  hark_tracker_replication_defaults(&o);
  o.clock_sample_periods = 0;
  assert_int_equal(hark_tracker_replication_validate(&o, &error), HARK_EINVAL);
}

/* ---- basic replication ---- */

static void heartbeats_repeat(void **unused) {
  (void)unused;
  sim_net *net = sim_net_new(1);
  wire_log *log = calloc(1, sizeof(*log));
  sim_net_set_tap(net, tap, log);
  start(net, "a");
  start(net, "b");
  sim_net_run_for(net, 3000);

  /* An empty heartbeat every max_silent_periods + 1 ticks: about 10 in 3 s. */
  size_t beats = count_records(log, "a", HARK__WIRE_HEARTBEAT);
  assert_in_range(beats, 9, 11);
  assert_int_equal(stats_of(sim_net_node(net, "a")).heartbeats_sent, beats);
  assert_true(stats_of(sim_net_node(net, "b")).heartbeats_received >= beats - 1);
  free(log);
  sim_net_free(net);
}

static void tracks_emit_joins(void **unused) {
  (void)unused;
  sim_net *net = sim_net_new(2);
  sim_node *a = start(net, "a"), *b = start(net, "b");
  sim_net_run_for(net, 500);

  sim_node_track(a, 0, "room", "alice", "{\"x\":1}");
  assert_int_equal(sim_node_count_diffs(a, "room", "alice", true), 1);
  sim_net_run_for(net, 300);
  assert_int_equal(sim_node_count_diffs(b, "room", "alice", true), 1);
  assert_list(b, "room", "alice");

  sim_node_track(b, 0, "room", "bob", "{}");
  sim_net_run_for(net, 300);
  assert_int_equal(sim_node_count_diffs(a, "room", "bob", true), 1);
  assert_list(a, "room", "alice,bob");
  assert_same_lists(a, b, "room");
  sim_net_free(net);
}

static void update_emits_leave_and_join(void **unused) {
  (void)unused;
  sim_net *net = sim_net_new(3);
  sim_node *a = start(net, "a"), *b = start(net, "b");
  sim_net_run_for(net, 500);
  sim_node_track(a, 0, "room", "alice", "{\"v\":1}");
  sim_net_run_for(net, 300);
  sim_node_clear_diffs(b);

  sim_node_update(a, 0, "room", "alice", "{\"v\":2}");
  sim_net_run_for(net, 300);
  assert_int_equal(sim_node_diff_count(b), 2);
  const sim_diff *leave = sim_node_diff(b, 0), *join = sim_node_diff(b, 1);
  assert_false(leave->join);
  assert_non_null(strstr(leave->meta, "\"v\":1"));
  assert_true(join->join);
  assert_non_null(strstr(join->meta, "\"v\":2"));
  assert_non_null(strstr(join->meta, "phx_ref_prev"));
  assert_same_lists(a, b, "room");
  sim_net_free(net);
}

static void untrack_all_leaves_remotely(void **unused) {
  (void)unused;
  sim_net *net = sim_net_new(4);
  sim_node *a = start(net, "a"), *b = start(net, "b");
  sim_net_run_for(net, 500);
  sim_node_track(a, 0, "t1", "alice", "{}");
  sim_node_track(a, 0, "t2", "alice", "{}");
  sim_node_track(a, 1, "t1", "bob", "{}");
  sim_net_run_for(net, 300);
  assert_list(b, "t1", "alice,bob");

  hark_tracker_untrack_all(sim_node_tracker(a), sim_node_owner(a, 0));
  sim_net_run_for(net, 300);
  assert_int_equal(sim_node_count_diffs(b, "t1", "alice", false), 1);
  assert_int_equal(sim_node_count_diffs(b, "t2", "alice", false), 1);
  assert_list(b, "t1", "bob");
  assert_list(b, "t2", "");
  sim_net_free(net);
}

/* ---- lifecycle ---- */

static void deaf_node_catches_up(void **unused) {
  (void)unused;
  sim_net *net = sim_net_new(5);
  wire_log *log = calloc(1, sizeof(*log));
  sim_net_set_tap(net, tap, log);
  sim_node *primary = start(net, "primary");
  sim_node_deaf(primary, true);
  sim_node *node1 = start(net, "node1");
  sim_net_run_for(net, 300);
  sim_node_track(node1, 0, "room", "n1", "{}");
  sim_net_run_for(net, 500);
  assert_list(primary, "room", "");

  sim_node_deaf(primary, false);
  sim_net_run_for(net, 1000);
  assert_list(primary, "room", "n1");

  /* Primary asked node1, and node1 answered with the same request id. */
  bool matched = false;
  for (size_t i = 0; i < log->count; i++) {
    const wire_record *req = &log->items[i];
    if (req->type != HARK__WIRE_TRANSFER_REQ || strcmp(req->from, "primary") != 0) continue;
    assert_string_equal(req->to, "node1");
    for (size_t k = i + 1; k < log->count; k++) {
      const wire_record *ack = &log->items[k];
      if (ack->type == HARK__WIRE_TRANSFER_ACK && strcmp(ack->from, "node1") == 0 &&
          strcmp(ack->to, "primary") == 0 && ack->request_id == req->request_id) {
        matched = true;
      }
    }
  }
  assert_true(matched);
  size_t beats = count_records(log, "primary", HARK__WIRE_HEARTBEAT);
  sim_net_run_for(net, 1000);
  assert_true(count_records(log, "primary", HARK__WIRE_HEARTBEAT) > beats);
  free(log);
  sim_net_free(net);
}

static void killed_node_goes_down_then_permdown(void **unused) {
  (void)unused;
  sim_net *net = sim_net_new(6);
  sim_node *a = start(net, "a"), *b = start(net, "b");
  sim_net_run_for(net, 500);
  sim_node_track(b, 0, "room", "bob", "{}");
  sim_net_run_for(net, 300);
  assert_list(a, "room", "bob");

  /* b heartbeats at least every 300 ms, so a has heard from it within 300
   * ms of the kill: silence stays below DOWN for DOWN - 400 ms more and
   * is above it after another 600 ms. */
  sim_node_kill(b);
  sim_net_run_for(net, DOWN - 400);
  hark_replica_status status;
  assert_true(sim_node_replica(a, "b", &status, NULL));
  assert_int_equal(status, HARK_REPLICA_UP);

  sim_net_run_for(net, 600);
  assert_true(sim_node_replica(a, "b", &status, NULL));
  assert_int_equal(status, HARK_REPLICA_DOWN);
  assert_int_equal(sim_node_count_diffs(a, "room", "bob", false), 1);
  assert_list(a, "room", "");
  assert_int_equal(stored_entries(a), 1); /* hidden, not deleted */

  sim_net_run_for(net, PERMDOWN);
  assert_false(sim_node_replica(a, "b", NULL, NULL));
  assert_int_equal(stored_entries(a), 0);
  assert_int_equal(sim_node_count_diffs(a, "room", "bob", false), 1);
  assert_int_equal(stats_of(a).replicas_down, 1);
  assert_int_equal(stats_of(a).replicas_permdown, 1);
  sim_net_free(net);
}

static void restarted_node_replaces_old_vsn(void **unused) {
  (void)unused;
  sim_net *net = sim_net_new(7);
  sim_node *a = start(net, "a"), *b = start(net, "b"), *c = start(net, "c");
  sim_net_run_for(net, 500);
  sim_node_track(b, 0, "room", "old", "{}");
  sim_net_run_for(net, 300);
  assert_list(a, "room", "old");
  uint64_t old_vsn;
  assert_true(sim_node_replica(a, "b", NULL, &old_vsn));

  sim_node_kill(b);
  sim_net_run_for(net, 200);
  sim_node_restart(b);
  sim_node_clear_diffs(b);
  sim_node_track(b, 0, "room", "new", "{}");
  sim_net_run_for(net, 1000);

  uint64_t new_vsn;
  hark_replica_status status;
  assert_true(sim_node_replica(a, "b", &status, &new_vsn));
  assert_int_equal(status, HARK_REPLICA_UP);
  assert_true(new_vsn != old_vsn);
  assert_int_equal(sim_node_count_diffs(a, "room", "old", false), 1);
  assert_list(a, "room", "new");
  assert_list(c, "room", "new");
  assert_list(b, "room", "new");

  /* The old entry never returns, on any node, in any later exchange. */
  sim_net_run_for(net, 2 * PERMDOWN);
  assert_int_equal(sim_node_count_diffs(a, "room", "old", true), 1);
  assert_int_equal(sim_node_count_diffs(c, "room", "old", true), 1);
  assert_int_equal(sim_node_count_diffs(b, "room", "old", true), 0);
  assert_list(a, "room", "new");
  assert_list(c, "room", "new");
  assert_int_equal(stored_entries(a), 1);
  sim_net_free(net);
}

static void paused_node_comes_back(void **unused) {
  (void)unused;
  sim_net *net = sim_net_new(8);
  sim_node *a = start(net, "a"), *b = start(net, "b");
  sim_net_run_for(net, 500);
  sim_node_track(b, 0, "room", "bob", "{}");
  sim_net_run_for(net, 300);
  uint64_t vsn_before;
  assert_true(sim_node_replica(a, "b", NULL, &vsn_before));

  sim_node_pause(b, true);
  sim_net_run_for(net, DOWN + 300);
  hark_replica_status status;
  assert_true(sim_node_replica(a, "b", &status, NULL));
  assert_int_equal(status, HARK_REPLICA_DOWN);
  assert_int_equal(sim_node_count_diffs(a, "room", "bob", false), 1);
  assert_list(a, "room", "");

  sim_node_pause(b, false);
  sim_net_run_for(net, 1000);
  uint64_t vsn_after;
  assert_true(sim_node_replica(a, "b", &status, &vsn_after));
  assert_int_equal(status, HARK_REPLICA_UP);
  assert_int_equal(vsn_after, vsn_before);
  assert_int_equal(sim_node_count_diffs(a, "room", "bob", true), 2);
  assert_list(a, "room", "bob");
  assert_list(b, "room", "bob");
  sim_net_free(net);
}

static void graceful_permdown_drops_at_once(void **unused) {
  (void)unused;
  sim_net *net = sim_net_new(9);
  sim_node *a = start(net, "a"), *b = start(net, "b");
  sim_net_run_for(net, 500);
  sim_node_track(b, 0, "room", "bob", "{}");
  sim_net_run_for(net, 300);
  assert_list(a, "room", "bob");

  hark_tracker_graceful_permdown(sim_node_tracker(b));
  sim_net_run_for(net, 1);
  assert_int_equal(sim_node_count_diffs(a, "room", "bob", false), 1);
  assert_list(a, "room", "");
  assert_false(sim_node_replica(a, "b", NULL, NULL));
  assert_int_equal(stored_entries(a), 0);

  /* b sends nothing more, so it does not come back up. */
  sim_net_run_for(net, 2000);
  assert_false(sim_node_replica(a, "b", NULL, NULL));
  assert_list(a, "room", "");
  sim_net_free(net);
}

static void invalid_message_changes_nothing(void **unused) {
  (void)unused;
  sim_net *net = sim_net_new(10);
  sim_node *a = start(net, "a"), *b = start(net, "b");
  sim_net_run_for(net, 500);
  sim_node_track(b, 0, "room", "bob", "{}");
  sim_net_run_for(net, 300);

  /* A real heartbeat delta from a third replica, cut short by one byte. */
  hark__state *state = hark__state_new((hark__rref){"x", 1, 5});
  assert_int_equal(hark__state_join(state, 1, "room", 4, "xavier", 6, "{}", 2, NULL), 0);
  hark__delta *delta = hark__state_delta(state);
  hark__clock clock = {0};
  hark_buf buf = {0};
  assert_int_equal(hark__wire_encode(&buf, HARK__WIRE_HEARTBEAT, (hark__rref){"x", 1, 5}, 0,
                                     &clock, delta),
                   0);
  const char *topic = "phx_presence:sim_shard0";
  hark_tracker *tracker = sim_node_tracker(a);
  assert_int_equal(hark_tracker_receive(tracker, topic, strlen(topic), buf.data, buf.len - 1),
                   HARK_EINVAL);
  assert_int_equal(hark_tracker_receive(tracker, "other", 5, buf.data, buf.len), HARK_EINVAL);
  assert_int_equal(stats_of(a).invalid_messages, 2);
  assert_false(sim_node_replica(a, "x", NULL, NULL));
  assert_list(a, "room", "bob");

  /* The whole message is accepted. */
  assert_int_equal(hark_tracker_receive(tracker, topic, strlen(topic), buf.data, buf.len), 0);
  assert_list(a, "room", "bob,xavier");

  hark_buf_free(&buf);
  hark__delta_free(delta);
  hark__state_free(state);
  sim_net_free(net);
}

/* ---- defects of Phoenix.Tracker that hark fixes ---- */

/* Holds every transfer ack to "c" while set. */
static sim_verdict hold_acks_to_c(void *ctx, const sim_msg *msg) {
  bool *holding = ctx;
  if (!*holding || strcmp(msg->to, "c") != 0) return SIM_DELIVER;
  return msg->data[1] == HARK__WIRE_TRANSFER_ACK ? SIM_HOLD : SIM_DELIVER;
}

/* A transfer reply built before an update reaches a new node after the
 * update's delta: the newer meta must stay. */
static void stale_transfer_reply_ignored(void **unused) {
  (void)unused;
  sim_net *net = sim_net_new(11);
  bool holding = true;
  sim_net_set_filter(net, hold_acks_to_c, &holding);
  sim_node *a = start(net, "a"), *b = start(net, "b");
  sim_net_run_for(net, 500);
  sim_node_track(a, 0, "room", "alice", "{\"v\":1}");
  sim_net_run_for(net, 500);
  assert_list(b, "room", "alice");

  /* c starts and asks for the state; every answer is held back. */
  sim_node *c = start(net, "c");
  sim_net_run_for(net, 1000);
  assert_list(c, "room", "");
  assert_true(sim_net_held_count(net) > 0);

  sim_node_update(a, 0, "room", "alice", "{\"v\":2}");
  sim_net_run_for(net, 300);
  char *list = sim_node_list(c, "room");
  assert_non_null(strstr(list, "\"v\":2"));
  free(list);

  holding = false;
  sim_node_clear_diffs(c);
  assert_true(sim_net_release_held(net) > 0);
  sim_net_run_for(net, 1);
  list = sim_node_list(c, "room");
  assert_non_null(strstr(list, "\"v\":2"));
  assert_null(strstr(list, "\"v\":1"));
  free(list);
  for (size_t i = 0; i < sim_node_diff_count(c); i++) {
    assert_null(strstr(sim_node_diff(c, i)->meta, "\"v\":1"));
  }

  sim_net_run_for(net, 2000);
  assert_same_lists(a, c, "room");
  assert_same_lists(b, c, "room");
  sim_net_free(net);
}

/* After a rolling restart, full transfers stop once the new replicas have
 * caught up, instead of recurring for permdown_period. */
static void rolling_restart_settles(void **unused) {
  (void)unused;
  sim_net *net = sim_net_new(12);
  sim_node *a = start(net, "a"), *b = start(net, "b"), *c = start(net, "c");
  sim_net_run_for(net, 500);
  sim_node_track(a, 0, "room", "alice", "{}");
  sim_node_track(b, 0, "room", "bob", "{}");
  sim_node_track(c, 0, "room", "carol", "{}");
  sim_net_run_for(net, 1000);

  /* b restarts under its name with a new vsn while a and c are up. */
  sim_node_kill(b);
  sim_net_run_for(net, 300);
  sim_node_restart(b);
  sim_node_track(b, 0, "room", "bob2", "{}");
  sim_net_run_for(net, 1000);
  assert_list(a, "room", "alice,bob2,carol");
  assert_list(b, "room", "alice,bob2,carol");

  /* c goes away for good, and d starts while the others hold c down. */
  sim_node_kill(c);
  sim_net_run_for(net, DOWN + 300);
  hark_replica_status status;
  assert_true(sim_node_replica(a, "c", &status, NULL));
  assert_int_equal(status, HARK_REPLICA_DOWN);
  sim_node *d = start(net, "d");
  sim_net_run_for(net, 1000);
  assert_list(d, "room", "alice,bob2");

  uint64_t full_before = stats_of(a).transfers_sent_full + stats_of(b).transfers_sent_full +
                         stats_of(d).transfers_sent_full;
  uint64_t requests_before = stats_of(d).transfers_requested;
  sim_net_run_for(net, PERMDOWN);
  uint64_t full_after = stats_of(a).transfers_sent_full + stats_of(b).transfers_sent_full +
                        stats_of(d).transfers_sent_full;
  /* With down replicas in the clocks, d would ask a and b for a full
   * state at every clock sample: about 2 * 5000 / 200 = 50 transfers. */
  assert_in_range(full_after - full_before, 0, 2);
  assert_in_range(stats_of(d).transfers_requested - requests_before, 0, 2);
  assert_list(d, "room", "alice,bob2");
  sim_net_free(net);
}

/* Drops heartbeats with a delta from "a" to "c" while set. */
static sim_verdict drop_deltas_a_to_c(void *ctx, const sim_msg *msg) {
  bool *dropping = ctx;
  if (!*dropping || strcmp(msg->from, "a") != 0 || strcmp(msg->to, "c") != 0) return SIM_DELIVER;
  hark__wire_msg decoded;
  assert_int_equal(hark__wire_decode(msg->data, msg->len, &decoded, NULL), 0);
  bool has_delta = decoded.type == HARK__WIRE_HEARTBEAT && decoded.payload != NULL;
  hark__wire_msg_free(&decoded);
  return has_delta ? SIM_DROP : SIM_DELIVER;
}

/* A removal is sent by its owner only; a replica that missed it catches
 * up through clock sampling and a transfer. */
static void removals_not_relayed(void **unused) {
  (void)unused;
  sim_net *net = sim_net_new(13);
  wire_log *log = calloc(1, sizeof(*log));
  bool dropping = false;
  sim_net_set_tap(net, tap, log);
  sim_net_set_filter(net, drop_deltas_a_to_c, &dropping);
  sim_node *a = start(net, "a"), *b = start(net, "b"), *c = start(net, "c");
  sim_net_run_for(net, 500);
  sim_node_track(a, 0, "room", "alice", "{}");
  sim_node_track(a, 1, "room", "anna", "{}");
  sim_net_run_for(net, 500);
  assert_list(c, "room", "alice,anna");

  dropping = true;
  sim_node_untrack(a, 0, "room", "alice");
  sim_net_run_for(net, 2 * PERIOD);
  dropping = false;
  assert_list(b, "room", "anna");

  /* b merged the removal but never sends it on. */
  uint64_t requests_before = stats_of(c).transfers_requested;
  sim_net_run_for(net, 1500);
  for (size_t i = 0; i < log->count; i++) {
    if (log->items[i].relays) fail_msg("%s relayed another replica's data", log->items[i].from);
  }
  assert_list(c, "room", "anna");
  assert_int_equal(sim_node_count_diffs(c, "room", "alice", false), 1);
  assert_true(stats_of(c).transfers_requested > requests_before);
  free(log);
  sim_net_free(net);
}

/* ---- randomized convergence ---- */

static const char *const TOPICS[] = {"t0", "t1", "t2", "t3"};
#define TOPIC_COUNT 4
#define KEYS 6

typedef struct model {
  bool tracked[3][8][TOPIC_COUNT][KEYS];
} model;

static void random_operation(sim_net *net, sim_node **nodes, model *m) {
  unsigned n = (unsigned)(sim_net_random(net) % 3);
  unsigned owner = (unsigned)(sim_net_random(net) % 8);
  unsigned topic = (unsigned)(sim_net_random(net) % TOPIC_COUNT);
  unsigned key = (unsigned)(sim_net_random(net) % KEYS);
  char key_name[8], meta[32];
  snprintf(key_name, sizeof(key_name), "k%u", key);
  snprintf(meta, sizeof(meta), "{\"r\":%u}", (unsigned)(sim_net_random(net) % 1000));
  bool *tracked = &m->tracked[n][owner][topic][key];
  unsigned choice = (unsigned)(sim_net_random(net) % 3);

  if (!*tracked) {
    sim_node_track(nodes[n], owner, TOPICS[topic], key_name, meta);
    *tracked = true;
  } else if (choice == 0) {
    sim_node_update(nodes[n], owner, TOPICS[topic], key_name, meta);
  } else if (choice == 1) {
    sim_node_untrack(nodes[n], owner, TOPICS[topic], key_name);
    *tracked = false;
  } else {
    hark_tracker_untrack_all(sim_node_tracker(nodes[n]), sim_node_owner(nodes[n], owner));
    for (unsigned t = 0; t < TOPIC_COUNT; t++) {
      for (unsigned k = 0; k < KEYS; k++) m->tracked[n][owner][t][k] = false;
    }
  }
}

static size_t model_count(const model *m, unsigned topic) {
  size_t count = 0;
  for (unsigned n = 0; n < 3; n++) {
    for (unsigned o = 0; o < 8; o++) {
      for (unsigned k = 0; k < KEYS; k++) count += m->tracked[n][o][topic][k];
    }
  }
  return count;
}

static size_t line_count(const char *s) {
  if (*s == '\0') return 0;
  size_t n = 1;
  for (; *s; s++) n += *s == '\n';
  return n;
}

/* Runs 400 random operations on three nodes of two shards each while the
 * network drops a `drop` share of the messages, then checks that the nodes
 * converge to the model once the faults stop. */
static void converge_with_seed(uint64_t seed, double drop) {
  sim_net *net = sim_net_new(seed);
  hark_tracker_replication_options o = test_options();
  o.max_delta_sizes[0] = 4; /* small generations, so deltas and full extracts both occur */
  o.max_delta_sizes[1] = 16;
  o.max_delta_sizes[2] = 64;
  sim_node *nodes[3] = {sim_net_start_node(net, "n0", 2, &o), sim_net_start_node(net, "n1", 2, &o),
                        sim_net_start_node(net, "n2", 2, &o)};
  sim_faults faults = {.drop = drop, .duplicate = 0.1, .min_delay_ms = 0, .max_delay_ms = 150};
  sim_net_set_faults(net, &faults);
  model m = {0};

  for (int step = 0; step < 400; step++) {
    random_operation(net, nodes, &m);
    sim_net_run_for(net, sim_net_random(net) % 60);
  }

  sim_net_set_faults(net, NULL);
  sim_net_run_for(net, 4000);
  for (unsigned t = 0; t < TOPIC_COUNT; t++) {
    assert_same_lists(nodes[0], nodes[1], TOPICS[t]);
    assert_same_lists(nodes[0], nodes[2], TOPICS[t]);
    char *list = sim_node_list(nodes[0], TOPICS[t]);
    assert_int_equal(line_count(list), model_count(&m, t));
    free(list);
  }
  sim_net_free(net);
}

static void random_faults_converge(void **unused) {
  (void)unused;
  for (uint64_t seed = 100; seed < 106; seed++) converge_with_seed(seed, 0.2);
}

/* Runs 121 seeds at 30% loss. A remote entry that a newer value had
 * overwritten in place used to outlive its owner's removal on one node,
 * because a stale merge flag made the full extract's observed remove skip
 * it. Seeds 209, 210, 229, 241, 261, 271, 294 and 301 showed it. */
static void heavy_loss_converges(void **unused) {
  (void)unused;
  for (uint64_t seed = 200; seed <= 320; seed++) converge_with_seed(seed, 0.3);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(validate_options),
      cmocka_unit_test(heartbeats_repeat),
      cmocka_unit_test(tracks_emit_joins),
      cmocka_unit_test(update_emits_leave_and_join),
      cmocka_unit_test(untrack_all_leaves_remotely),
      cmocka_unit_test(deaf_node_catches_up),
      cmocka_unit_test(killed_node_goes_down_then_permdown),
      cmocka_unit_test(restarted_node_replaces_old_vsn),
      cmocka_unit_test(paused_node_comes_back),
      cmocka_unit_test(graceful_permdown_drops_at_once),
      cmocka_unit_test(invalid_message_changes_nothing),
      cmocka_unit_test(stale_transfer_reply_ignored),
      cmocka_unit_test(rolling_restart_settles),
      cmocka_unit_test(removals_not_relayed),
      cmocka_unit_test(random_faults_converge),
      cmocka_unit_test(heavy_loss_converges),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
