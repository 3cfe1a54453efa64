#include "tracker/replication.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"

/* ---- helpers ---- */

static hark__shard_replication *shard_repl(hark__replication *repl, const hark__shard *shard) {
  return &repl->shards[shard->index];
}

static hark__rref self_ref(const hark__shard *shard) {
  return hark__state_self(shard->state);
}

static uint64_t now_ms(const hark__replication *repl) {
  return repl->env.now_ms(repl->env.ctx);
}

/* Quotes a peer-supplied name for a log line. */
static const char *quoted(char *out, size_t cap, hark__rref ref) {
  return hark_log_quote(out, cap, ref.name, ref.name_len);
}

static void report(hark__replication *repl, hark__changes *changes) {
  hark__tracker_report(repl->tracker, changes);
  hark__changes_clear(changes);
}

void hark__replication_send(hark__replication *repl, hark__shard *shard, const char *node,
                            const hark_buf *bytes) {
  const hark__shard_replication *s = shard_repl(repl, shard);
  repl->stats.bytes_sent += bytes->len;
  repl->env.send(repl->env.ctx, node, s->topic, s->topic_len, bytes->data, bytes->len);
}

/* Encodes and sends one message. An encoding failure is logged: the
 * message is lost, which the protocol repairs like any lost message. */
static bool send_message(hark__replication *repl, hark__shard *shard, const char *node,
                         hark__wire_type type, uint64_t request_id, const hark__clock *clock,
                         const hark__delta *payload) {
  hark_buf bytes = {0};
  int rc = hark__wire_encode(&bytes, type, self_ref(shard), request_id, clock, payload);
  if (rc == 0) hark__replication_send(repl, shard, node, &bytes);
  else HARK_ERROR("tracker.encode_failed", "tracker=%s shard=%u type=%d error=%s", repl->name,
                  shard->index, (int)type, hark_err_name(rc));
  hark_buf_free(&bytes);
  return rc == 0;
}

/* ---- retired replicas ---- */

static bool is_retired(hark__replication *repl, hark__shard *shard, hark__rref ref) {
  hark__shard_replication *s = shard_repl(repl, shard);
  for (size_t i = 0; i < s->retired_count; i++) {
    hark__retired *r = &s->retired[i];
    hark__rref retired = {r->name, r->name_len, r->vsn};
    if (hark__rref_equal(retired, ref)) return true;
  }
  return false;
}

/* Remembers a replica that must not come back. Out of memory only loses the
 * guard against its late heartbeats. */
static void retire(hark__replication *repl, hark__shard *shard, hark__rref ref) {
  hark__shard_replication *s = shard_repl(repl, shard);
  if (is_retired(repl, shard, ref)) return;
  if (s->retired_count == s->retired_cap) {
    size_t cap = s->retired_cap ? s->retired_cap * 2 : 4;
    hark__retired *grown = realloc(s->retired, cap * sizeof(*grown));
    if (grown == NULL) return;
    s->retired = grown;
    s->retired_cap = cap;
  }
  char *name = malloc(ref.name_len + 1);
  if (name == NULL) return;
  memcpy(name, ref.name, ref.name_len);
  name[ref.name_len] = '\0';
  s->retired[s->retired_count++] = (hark__retired){name, ref.name_len, ref.vsn, now_ms(repl)};
}

/* Forgets retirements older than permdown_period: a message delayed that
 * long is not expected. */
static void expire_retired(hark__replication *repl, hark__shard *shard, uint64_t now) {
  hark__shard_replication *s = shard_repl(repl, shard);
  for (size_t i = s->retired_count; i-- > 0;) {
    /* A retirement stamped ahead of now (the clock stepped back) is kept. */
    uint64_t since = s->retired[i].since_ms;
    if (now <= since || now - since <= repl->options.permdown_period_ms) continue;
    free(s->retired[i].name);
    s->retired[i] = s->retired[--s->retired_count];
  }
}

/* ---- replica lifecycle ---- */

static void replica_up(hark__replication *repl, hark__shard *shard, hark__rref ref) {
  char name[96];
  HARK_INFO("tracker.replica_up", "tracker=%s shard=%u replica=%s vsn=%" PRIu64, repl->name,
            shard->index, quoted(name, sizeof(name), ref), ref.vsn);
  hark__changes changes = {0};
  if (hark__state_replica_up(shard->state, ref, &changes) != 0) {
    HARK_ERROR("tracker.replica_up_failed", "tracker=%s shard=%u replica=%s error=ENOMEM",
               repl->name, shard->index, name);
  }
  report(repl, &changes);
}

static void replica_down(hark__replication *repl, hark__shard *shard, hark__rref ref) {
  char name[96];
  HARK_INFO("tracker.replica_down", "tracker=%s shard=%u replica=%s vsn=%" PRIu64, repl->name,
            shard->index, quoted(name, sizeof(name), ref), ref.vsn);
  repl->stats.replicas_down++;
  hark__changes changes = {0};
  if (hark__state_replica_down(shard->state, ref, &changes) != 0) {
    HARK_ERROR("tracker.replica_down_failed", "tracker=%s shard=%u replica=%s error=ENOMEM",
               repl->name, shard->index, name);
  }
  report(repl, &changes);
}

/* Deletes the replica's entries, context and generation data. Its leaves
 * were reported when it went down. The record is removed only while it
 * still holds this vsn: after a restart it holds the new one. */
static void replica_permdown(hark__replication *repl, hark__shard *shard, hark__rref ref) {
  char name[96];
  HARK_INFO("tracker.replica_permdown", "tracker=%s shard=%u replica=%s vsn=%" PRIu64, repl->name,
            shard->index, quoted(name, sizeof(name), ref), ref.vsn);
  repl->stats.replicas_permdown++;
  hark__state_remove_down_replicas(shard->state, ref);
  /* Failing to prune only costs a full transfer later. */
  if (hark__generations_remove_replica(&shard->generations, ref) != 0) {
    hark__generations_clear(&shard->generations);
  }
  if (hark__replica_fetch_by_ref(&shard->replicas, ref) != NULL) {
    hark__replica_remove(&shard->replicas, ref.name, ref.name_len);
  }
}

/* Whether `from` is an older instance of a node whose newer instance is up
 * here. A vsn is the instance's start time in wall-clock microseconds (plus
 * a small number), so a lower vsn means an earlier start. A heartbeat of an
 * old instance can arrive after the new one's, since the network may reorder
 * them. Taking it would permdown and retire the live instance, so it is
 * ignored while the newer one was heard within down_period. After that the
 * lower vsn is taken: a node whose clock stepped back before a restart gets
 * a lower vsn, and its predecessor has gone silent by then. */
static bool superseded(hark__replication *repl, hark__shard *shard, hark__rref from) {
  const hark__replica *record = hark__replica_find(&shard->replicas, from.name, from.name_len);
  if (record == NULL || record->vsn <= from.vsn || record->status != HARK__REPLICA_UP) {
    return false;
  }
  uint64_t now = now_ms(repl);
  uint64_t silence = now > record->last_heartbeat_ms ? now - record->last_heartbeat_ms : 0;
  return silence <= repl->options.down_period_ms;
}

/* Applies a heartbeat from `from` to the replica records, as in
 * Phoenix.Tracker.Shard: a new replica goes up, a down one comes back up,
 * and a new vsn for a known name replaces the old one (down, permdown,
 * then up). Returns false when the heartbeat must be ignored. */
static bool handle_heartbeat(hark__replication *repl, hark__shard *shard, hark__rref from) {
  if (is_retired(repl, shard, from)) return false;
  if (superseded(repl, shard, from)) return false;

  hark__replica_info previous;
  if (hark__replica_put_heartbeat(&shard->replicas, from, now_ms(repl), &previous) != 0) {
    HARK_ERROR("tracker.heartbeat_failed", "tracker=%s shard=%u error=ENOMEM", repl->name,
               shard->index);
    return false;
  }
  if (!previous.present) {
    replica_up(repl, shard, from);
  } else if (previous.vsn == from.vsn) {
    if (previous.status == HARK__REPLICA_DOWN) replica_up(repl, shard, from);
  } else {
    hark__rref old = {from.name, from.name_len, previous.vsn};
    if (previous.status == HARK__REPLICA_UP) replica_down(repl, shard, old);
    replica_permdown(repl, shard, old);
    retire(repl, shard, old);
    replica_up(repl, shard, from);
  }
  return true;
}

/* Checks every record for silence at the tick. A long silence can skip
 * straight from up to permdown, which still reports the leaves first. */
static void detect_downs(hark__replication *repl, hark__shard *shard, uint64_t now) {
  hark__replica_map *map = &shard->replicas;
  /* Backwards, because a permdown moves the last record into its slot. */
  for (size_t i = map->count; i-- > 0;) {
    size_t name_len = map->items[i].name_len;
    char *name = malloc(name_len + 1);
    if (name == NULL) return;
    memcpy(name, map->items[i].name, name_len + 1);

    hark__replica_info before, after;
    hark__replica_detect_down(map, name, name_len, repl->options.down_period_ms,
                              repl->options.permdown_period_ms, now, &before, &after);
    hark__rref ref = {name, name_len, before.vsn};
    bool was_up = before.status == HARK__REPLICA_UP;
    if (after.status == HARK__REPLICA_DOWN && was_up) {
      replica_down(repl, shard, ref);
    } else if (after.status == HARK__REPLICA_PERMDOWN) {
      if (was_up) replica_down(repl, shard, ref);
      replica_permdown(repl, shard, ref);
    }
    free(name);
  }
}

/* ---- the tick ---- */

/* Removes what other replicas changed from a pending delta, leaving this
 * replica's own changes. The state puts observed remote removals into its
 * pending delta (Phoenix relays them); they are not sent on. */
static int strip_relayed(hark__delta *delta) {
  while (delta->replica_count > 1) {
    size_t victim = delta->creator == 0 ? 1 : 0;
    size_t before = delta->replica_count;
    if (hark__delta_remove_replica(delta, hark__delta_ref(delta, victim)) != 0) return -1;
    if (delta->replica_count == before) return -1;
  }
  return 0;
}

static bool has_own_changes(const hark__delta *delta) {
  const hark__delta_replica *own = &delta->replicas[delta->creator];
  return delta->value_count > 0 || own->cloud.count > 0 ||
         (own->has_start && own->has_end && own->start != own->end);
}

static void send_heartbeat(hark__replication *repl, hark__shard *shard,
                           const hark__delta *delta) {
  hark__clock clock = {0};
  if (hark__state_clocks(shard->state, &clock) != 0) {
    HARK_ERROR("tracker.heartbeat_failed", "tracker=%s shard=%u error=ENOMEM", repl->name,
               shard->index);
    return;
  }
  if (send_message(repl, shard, NULL, HARK__WIRE_HEARTBEAT, 0, &clock, delta)) {
    repl->stats.heartbeats_sent++;
  }
  hark__clock_free(&clock);
}

/* Takes the pending delta and resets it. Returns the delta with only this
 * replica's changes, or NULL when there were none (or memory ran out, in
 * which case the pending delta is kept for the next tick). */
static hark__delta *take_delta(hark__replication *repl, hark__shard *shard) {
  if (!hark__state_has_delta(shard->state)) return NULL;
  hark__delta *delta = hark__state_delta(shard->state);
  if (delta == NULL || strip_relayed(delta) != 0) {
    HARK_ERROR("tracker.delta_failed", "tracker=%s shard=%u error=ENOMEM", repl->name,
               shard->index);
    hark__delta_free(delta);
    return NULL;
  }
  hark__state_reset_delta(shard->state);
  hark__state_compact(shard->state);
  if (has_own_changes(delta)) return delta;
  hark__delta_free(delta);
  return NULL;
}

/* Broadcasts the pending delta, or an empty heartbeat after
 * max_silent_periods ticks without one. */
static void broadcast_heartbeat(hark__replication *repl, hark__shard *shard) {
  hark__delta *delta = take_delta(repl, shard);
  if (delta != NULL) {
    send_heartbeat(repl, shard, delta);
    shard->silent_periods = 0;
    if (hark__generations_push(&shard->generations, shard->state, delta) != 0) {
      HARK_WARN("tracker.generations_cleared", "tracker=%s shard=%u error=ENOMEM", repl->name,
                shard->index);
    }
    hark__delta_free(delta);
    return;
  }
  if (shard->silent_periods >= repl->options.max_silent_periods) {
    send_heartbeat(repl, shard, NULL);
    shard->silent_periods = 0;
  } else {
    shard->silent_periods++;
  }
}

static void request_transfer(hark__replication *repl, hark__shard *shard, hark__rref target,
                             const hark__clock *clock) {
  hark__shard_replication *s = shard_repl(repl, shard);
  uint64_t request_id = ++s->next_request_id;
  /* The env takes the node as a C string; wire names never hold a NUL. */
  char *node = malloc(target.name_len + 1);
  if (node == NULL) return;
  memcpy(node, target.name, target.name_len);
  node[target.name_len] = '\0';

  char name[96];
  HARK_DEBUG("tracker.transfer_req_sent",
             "tracker=%s shard=%u to=%s vsn=%" PRIu64 " request_id=%" PRIu64, repl->name,
             shard->index, quoted(name, sizeof(name), target), target.vsn, request_id);
  if (send_message(repl, shard, node, HARK__WIRE_TRANSFER_REQ, request_id, clock, NULL)) {
    repl->stats.transfers_requested++;
  }
  free(node);
}

/* Every clock_sample_periods ticks: asks the replicas whose clocks are
 * needed to cover everything seen, with this replica's own clock in the
 * set, for what this replica lacks. */
static void sample_clocks(hark__replication *repl, hark__shard *shard) {
  if (shard->current_sample_count > 1) {
    shard->current_sample_count--;
    return;
  }
  shard->current_sample_count = repl->options.clock_sample_periods;

  hark__clock own = {0};
  if (hark__state_clocks(shard->state, &own) != 0 ||
      hark__clockset_append(&shard->pending_clockset, self_ref(shard), &own) != 0) {
    HARK_ERROR("tracker.sample_failed", "tracker=%s shard=%u error=ENOMEM", repl->name,
               shard->index);
  } else {
    const hark__clockset *set = &shard->pending_clockset;
    for (size_t i = 0; i < set->count; i++) {
      hark__rref target = hark__clockset_ref(set, i);
      if (!hark__rref_equal(target, self_ref(shard))) request_transfer(repl, shard, target, &own);
    }
  }
  hark__clock_free(&own);
  hark__clockset_clear(&shard->pending_clockset);
}

void hark__replication_tick(hark__replication *repl, hark__shard *shard) {
  if (repl->stopped) return;
  uint64_t now = now_ms(repl);
  broadcast_heartbeat(repl, shard);
  sample_clocks(repl, shard);
  detect_downs(repl, shard, now);
  expire_retired(repl, shard, now);
  repl->env.schedule(repl->env.ctx, shard->index, repl->options.broadcast_period_ms);
}

/* ---- receiving ---- */

/* Merges a remote delta or extract and reports its joins and leaves. */
static void merge(hark__replication *repl, hark__shard *shard, const hark__delta *payload) {
  hark__changes changes = {0};
  if (hark__state_merge(shard->state, payload, &changes) != 0) {
    HARK_ERROR("tracker.merge_failed", "tracker=%s shard=%u error=ENOMEM", repl->name,
               shard->index);
  }
  report(repl, &changes);
}

static void push_generation(hark__replication *repl, hark__shard *shard,
                            const hark__delta *delta) {
  if (hark__generations_push(&shard->generations, shard->state, delta) != 0) {
    HARK_WARN("tracker.generations_cleared", "tracker=%s shard=%u error=ENOMEM", repl->name,
              shard->index);
  }
}

/* Keeps the keys of `remote` that this shard has up in its own clocks. A
 * key this shard cannot merge (an unknown, down or permdowned replica)
 * would only make the remote clock look ahead forever. */
static int sampled_clock(const hark__shard *shard, const hark__clock *remote, hark__clock *out) {
  hark__clock own = {0};
  if (hark__state_clocks(shard->state, &own) != 0) return -1;
  hark__rref *refs = malloc((own.count + 1) * sizeof(*refs));
  int rc = -1;
  if (refs != NULL) {
    for (size_t i = 0; i < own.count; i++) refs[i] = hark__clock_ref(&own, i);
    rc = hark__clock_filter_replicas(out, remote, refs, own.count);
  }
  free(refs);
  hark__clock_free(&own);
  return rc;
}

static void receive_heartbeat(hark__replication *repl, hark__shard *shard,
                              const hark__wire_msg *msg) {
  if (!handle_heartbeat(repl, shard, msg->from)) return;
  repl->stats.heartbeats_received++;
  if (msg->payload != NULL) merge(repl, shard, msg->payload);

  hark__clock clock = {0};
  if (sampled_clock(shard, &msg->clock, &clock) != 0 ||
      hark__clockset_append(&shard->pending_clockset, msg->from, &clock) != 0) {
    HARK_ERROR("tracker.sample_failed", "tracker=%s shard=%u error=ENOMEM", repl->name,
               shard->index);
  }
  hark__clock_free(&clock);
  if (msg->payload != NULL) push_generation(repl, shard, msg->payload);
}

static void receive_transfer_req(hark__replication *repl, hark__shard *shard,
                                 const hark__wire_msg *msg) {
  char name[96];
  HARK_DEBUG("tracker.transfer_req_received",
             "tracker=%s shard=%u from=%s vsn=%" PRIu64 " request_id=%" PRIu64, repl->name,
             shard->index, quoted(name, sizeof(name), msg->from), msg->from.vsn,
             msg->request_id);
  long generation = -1;
  hark__delta *payload =
      hark__generations_extract(&shard->generations, shard->state, msg->from, &msg->clock,
                                &generation);
  if (payload == NULL) {
    HARK_ERROR("tracker.extract_failed", "tracker=%s shard=%u error=ENOMEM", repl->name,
               shard->index);
    return;
  }
  HARK_DEBUG("tracker.transfer_ack_sent",
             "tracker=%s shard=%u to=%s request_id=%" PRIu64 " generation=%ld values=%zu",
             repl->name, shard->index, name, msg->request_id, generation, payload->value_count);
  if (send_message(repl, shard, msg->from_name, HARK__WIRE_TRANSFER_ACK, msg->request_id, NULL,
                   payload)) {
    if (generation < 0) repl->stats.transfers_sent_full++;
    else repl->stats.transfers_sent_delta++;
  }
  hark__delta_free(payload);
}

static void receive_transfer_ack(hark__replication *repl, hark__shard *shard,
                                 const hark__wire_msg *msg) {
  char name[96];
  HARK_DEBUG("tracker.transfer_ack_received",
             "tracker=%s shard=%u from=%s request_id=%" PRIu64 " full=%d values=%zu",
             repl->name, shard->index, quoted(name, sizeof(name), msg->from), msg->request_id,
             msg->payload->kind == HARK__DELTA_FULL, msg->payload->value_count);
  merge(repl, shard, msg->payload);
  /* A delta ack is not pushed into the generations, unlike in Phoenix: it
   * leaves out this replica's own values but keeps their dots, so a
   * generation merged with it would drop those values and later tell
   * another requester that they were removed. */
  if (msg->payload->kind == HARK__DELTA_FULL) hark__generations_clear(&shard->generations);
}

/* A peer shutting down cleanly: its entries leave at once, but only for the
 * vsn this shard knows, so a late message from an old instance cannot take
 * down a restarted one. */
static void receive_permdown(hark__replication *repl, hark__shard *shard,
                             const hark__wire_msg *msg) {
  const hark__replica *record = hark__replica_fetch_by_ref(&shard->replicas, msg->from);
  if (record == NULL) return;
  if (record->status == HARK__REPLICA_UP) replica_down(repl, shard, msg->from);
  replica_permdown(repl, shard, msg->from);
  retire(repl, shard, msg->from);
}

void hark__replication_handle(hark__replication *repl, hark__shard *shard,
                              const hark__wire_msg *msg) {
  switch (msg->type) {
  case HARK__WIRE_HEARTBEAT:
    receive_heartbeat(repl, shard, msg);
    break;
  case HARK__WIRE_TRANSFER_REQ:
    receive_transfer_req(repl, shard, msg);
    break;
  case HARK__WIRE_TRANSFER_ACK:
    receive_transfer_ack(repl, shard, msg);
    break;
  case HARK__WIRE_GRACEFUL_PERMDOWN:
    receive_permdown(repl, shard, msg);
    break;
  }
}

void hark__replication_send_permdown(hark__replication *repl, hark__shard *shard) {
  send_message(repl, shard, NULL, HARK__WIRE_GRACEFUL_PERMDOWN, 0, NULL, NULL);
}

/* ---- lifetime ---- */

void hark__replication_release(hark__replication *repl) {
  if (--repl->refs > 0) return;
  if (repl->teardown != NULL) repl->teardown(repl->teardown_ctx);
  for (unsigned i = 0; repl->shards != NULL && i < repl->pool_size; i++) {
    hark__shard_replication *s = &repl->shards[i];
    for (size_t k = 0; k < s->retired_count; k++) free(s->retired[k].name);
    free(s->retired);
    free(s->topic);
  }
  free(repl->shards);
  free(repl->name);
  free(repl);
}
