#include "sim_cluster.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "hark/error.h"
/* By path: the simulator has no src/ include path, and this header needs
 * none. */
#include "../../src/tracker/state_debug.h"

/* Wire message types, as in the tracker's wire format. */
enum { WIRE_TRANSFER_REQ = 2, WIRE_TRANSFER_ACK = 3, WIRE_GRACEFUL_PERMDOWN = 4 };

#define MAX_INCARNATIONS 60

static const char *const TOPIC_NAMES[SIM_CLUSTER_TOPICS] = {"room:a", "room:b", "lobby"};
static const char *const NODE_NAMES[SIM_CLUSTER_MAX_NODES] = {"n0", "n1", "n2", "n3", "n4"};

static void die(const char *what) {
  fprintf(stderr, "sim_cluster: %s\n", what);
  abort();
}

/* ---- run state ---- */

/* The entry an id (the "id" field of a meta) was created for. Every track
 * and update gets a new id, so an id names one entry version. */
typedef struct id_info {
  unsigned node, incarnation, owner, topic, key;
} id_info;

/* What one node's diffs add up to, per topic: the count and the sum of the
 * entries' hashes, which list must match. */
typedef struct replay {
  uint64_t count;
  uint64_t sum;
} replay;

/* Node Y's record of node X's incarnations, per shard. */
typedef struct purge_view {
  unsigned held;        /* the incarnation in Y's replica record, 0 for none */
  unsigned purged_upto; /* every dead incarnation <= this one was dropped by Y */
} purge_view;

/* The transfer request a node is handling, kept until it sends the ack. */
typedef struct pending_request {
  bool set;
  unsigned shard;
  char from[16];
  unsigned char *data; /* the encoded request, owned */
  size_t len;
} pending_request;

typedef struct run {
  const sim_schedule *schedule;
  const sim_config *config;
  sim_net *net;
  sim_node *nodes[SIM_CLUSTER_MAX_NODES];
  sim_report *report;
  uint64_t start_ms;
  size_t event_index;
  bool trace; /* HARK_SIM_TRACE is set: print every diff to stderr */

  bool dead[SIM_CLUSTER_MAX_NODES][MAX_INCARNATIONS + 1];
  uint64_t vsn[SIM_CLUSTER_MAX_NODES][MAX_INCARNATIONS + 1][SIM_CLUSTER_MAX_SHARDS];

  id_info *ids; /* index 0 unused */
  size_t id_count, id_cap;
  unsigned tracked[SIM_CLUSTER_MAX_NODES][SIM_CLUSTER_OWNERS][SIM_CLUSTER_TOPICS]
                  [SIM_CLUSTER_KEYS]; /* the live id, 0 when not tracked */

  replay replays[SIM_CLUSTER_MAX_NODES][SIM_CLUSTER_TOPICS];
  purge_view purge[SIM_CLUSTER_MAX_NODES][SIM_CLUSTER_MAX_SHARDS][SIM_CLUSTER_MAX_NODES];
  pending_request request[SIM_CLUSTER_MAX_NODES];
  int permdown_from[SIM_CLUSTER_MAX_NODES]; /* sender of the graceful permdown being handled, or -1 */
} run;

static void fail(run *r, const char *invariant, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Records the first violation and halts the network. */
static void fail(run *r, const char *invariant, const char *fmt, ...) {
  if (r->report->failed) return;
  r->report->failed = true;
  r->report->invariant = invariant;
  r->report->at_ms = sim_net_now_ms(r->net) - r->start_ms;
  r->report->event_index = r->event_index;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->report->message, sizeof(r->report->message), fmt, ap);
  va_end(ap);
  sim_net_halt(r->net);
}

static bool node_live(const run *r, unsigned n) {
  return sim_node_alive(r->nodes[n]);
}

static unsigned node_of(const run *r, const char *name) {
  for (unsigned n = 0; n < r->config->node_count; n++) {
    if (strcmp(NODE_NAMES[n], name) == 0) return n;
  }
  die("unknown node name");
  return 0;
}

static unsigned incarnation(const run *r, unsigned n) {
  return sim_node_incarnation(r->nodes[n]);
}

/* The owner handle passed to track calls. The tracker never dereferences
 * an owner: it uses the address as the owner id and hashes it. A heap
 * address changes with ASLR, so a handle made from the seed keeps a run a
 * pure function of its schedule. */
static const hark_subscriber *owner_handle(const run *r, unsigned node, unsigned owner) {
  /* Laid out like an array of owners per node on the heap. */
  uint64_t z = r->config->seed * 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 31)) * 0xbf58476d1ce4e5b9ULL;
  uint64_t base = 0x550000000000ULL + ((z >> 20) & 0xffffffff0ULL);
  return (const hark_subscriber *)(uintptr_t)(base + node * 0x2000 + owner * 0x18);
}

static uint64_t fnv(uint64_t h, const void *data, size_t len) {
  const unsigned char *p = data;
  for (size_t i = 0; i < len; i++) h = (h ^ p[i]) * 0x100000001b3ULL;
  return h;
}

static uint64_t entry_hash(const char *topic, uint64_t owner, const char *key, size_t key_len,
                           const char *meta, size_t meta_len) {
  uint64_t h = fnv(0xcbf29ce484222325ULL, topic, strlen(topic) + 1);
  h = fnv(h, &owner, sizeof(owner));
  h = fnv(h, key, key_len);
  h = fnv(h ^ 0xff, meta, meta_len);
  return h * 0x9e3779b97f4a7c15ULL + (h >> 29);
}

/* The "id" of a meta, or 0 when it has none. */
static unsigned meta_id(const char *meta, size_t len) {
  char buf[256];
  if (len >= sizeof(buf)) len = sizeof(buf) - 1;
  memcpy(buf, meta, len);
  buf[len] = '\0';
  const char *p = strstr(buf, "\"id\":");
  return p ? (unsigned)strtoul(p + 5, NULL, 10) : 0;
}

static unsigned topic_index(const char *topic) {
  for (unsigned t = 0; t < SIM_CLUSTER_TOPICS; t++) {
    if (strcmp(TOPIC_NAMES[t], topic) == 0) return t;
  }
  return SIM_CLUSTER_TOPICS;
}

static unsigned shard_of(const run *r, unsigned topic) {
  const char *name = TOPIC_NAMES[topic];
  return hark__debug_shard_for_topic(name, strlen(name), r->config->pool_size);
}

/* ---- no resurrection ---- */

/* Whether entry version `id`, seen on node `y` in `topic`, belongs to an
 * incarnation that `y` has already dropped. */
static bool resurrected(const run *r, unsigned y, unsigned topic, unsigned id) {
  if (id == 0 || id >= r->id_count) return false;
  const id_info *info = &r->ids[id];
  if (info->node == y) return info->incarnation != incarnation(r, y);
  const purge_view *view = &r->purge[y][shard_of(r, topic)][info->node];
  return r->dead[info->node][info->incarnation] && info->incarnation <= view->purged_upto;
}

static unsigned incarnation_of_vsn(const run *r, unsigned x, unsigned shard, uint64_t vsn) {
  for (unsigned k = 1; k <= incarnation(r, x) && k <= MAX_INCARNATIONS; k++) {
    if (r->vsn[x][k][shard] == vsn) return k;
  }
  return 0;
}

typedef struct replica_scan {
  const run *r;
  unsigned held[SIM_CLUSTER_MAX_SHARDS][SIM_CLUSTER_MAX_NODES];
} replica_scan;

static void scan_replica(void *ctx, unsigned shard, const char *name, uint64_t vsn,
                         hark_replica_status status, uint64_t last_heard_ms) {
  replica_scan *scan = ctx;
  (void)status;
  (void)last_heard_ms;
  unsigned x = node_of(scan->r, name);
  scan->held[shard][x] = incarnation_of_vsn(scan->r, x, shard, vsn);
}

static void check_no_leak(run *r, unsigned y, unsigned shard, unsigned x, unsigned upto);

/* Follows node y's replica records: a record that moves to a newer
 * incarnation drops every older one. A record of a dead incarnation that
 * disappears drops it when a graceful permdown removed it, or when nothing
 * that incarnation sent is still on its way to y. A permdown for silence
 * is not final while such messages remain: a heartbeat sent before the
 * death may still bring the same vsn back up, as Phoenix.Tracker does for
 * a replica that heartbeats again. */
static void update_purges(run *r, unsigned y) {
  replica_scan scan = {.r = r};
  hark_tracker_replicas(sim_node_tracker(r->nodes[y]), scan_replica, &scan);
  for (unsigned s = 0; s < r->config->pool_size; s++) {
    for (unsigned x = 0; x < r->config->node_count; x++) {
      if (x == y) continue;
      purge_view *view = &r->purge[y][s][x];
      unsigned now_held = scan.held[s][x];
      unsigned before = view->purged_upto;
      if (now_held > 0 && now_held - 1 > view->purged_upto) view->purged_upto = now_held - 1;
      bool gone = now_held == 0 && view->held > 0 && r->dead[x][view->held] &&
                  view->held > view->purged_upto;
      if (gone && (r->permdown_from[y] == (int)x ||
                   sim_net_pending_from(r->net, NODE_NAMES[x], r->nodes[y]) == 0)) {
        view->purged_upto = view->held;
      }
      view->held = now_held;
      if (view->purged_upto > before) check_no_leak(r, y, s, x, view->purged_upto);
    }
  }
}

/* ---- no leak ---- */

/* Checks that shard `shard` of node y keeps nothing of node x's dead
 * incarnations up to `upto`. */
static void check_no_leak(run *r, unsigned y, unsigned shard, unsigned x, unsigned upto) {
  hark_tracker *tracker = sim_node_tracker(r->nodes[y]);
  for (unsigned k = 1; k <= upto && k <= MAX_INCARNATIONS; k++) {
    if (!r->dead[x][k] || r->vsn[x][k][shard] == 0) continue;
    const char *what = hark__debug_leftover(tracker, shard, NODE_NAMES[x], r->vsn[x][k][shard]);
    if (what != NULL) {
      fail(r, "no leak", "%s shard %u still holds %s of dropped replica %s incarnation %u",
           NODE_NAMES[y], shard, what, NODE_NAMES[x], k);
      return;
    }
  }
}

/* ---- diff replay ---- */

/* Applies the diffs node y reported since the last call to its replay,
 * checking that no leave removes what was not there and no join brings
 * back a dropped entry. */
static void consume_diffs(run *r, unsigned y) {
  sim_node *node = r->nodes[y];
  for (size_t i = 0; i < sim_node_diff_count(node); i++) {
    const sim_diff *d = sim_node_diff(node, i);
    unsigned topic = topic_index(d->topic);
    if (topic == SIM_CLUSTER_TOPICS) {
      fail(r, "diff replay", "%s reported a diff on unknown topic %s", NODE_NAMES[y], d->topic);
      break;
    }
    replay *rp = &r->replays[y][topic];
    if (r->trace) {
      fprintf(stderr, "t=%" PRIu64 " %s %s %s %016" PRIx64 "/%s=%s\n",
              sim_net_now_ms(r->net) - r->start_ms, NODE_NAMES[y], d->join ? "join" : "leave",
              d->topic, d->owner, d->key, d->meta);
    }
    uint64_t h = entry_hash(d->topic, d->owner, d->key, strlen(d->key), d->meta, strlen(d->meta));
    if (d->join) {
      rp->count++;
      rp->sum += h;
      if (resurrected(r, y, topic, meta_id(d->meta, strlen(d->meta)))) {
        fail(r, "no resurrection", "%s reported a join of dropped entry %s/%s=%s", NODE_NAMES[y],
             d->topic, d->key, d->meta);
        break;
      }
    } else {
      if (rp->count == 0) {
        fail(r, "diff replay", "%s reported a leave of %s/%s=%s with nothing joined",
             NODE_NAMES[y], d->topic, d->key, d->meta);
        break;
      }
      rp->count--;
      rp->sum -= h;
    }
  }
  sim_node_clear_diffs(node);
}

typedef struct list_scan {
  run *r;
  unsigned node, topic;
  uint64_t count, sum;
  unsigned resurrected_id;
} list_scan;

static void scan_listed(void *ctx, const hark_tracker_entry *e) {
  list_scan *scan = ctx;
  scan->count++;
  scan->sum += entry_hash(TOPIC_NAMES[scan->topic], e->owner, e->key, e->key_len, e->meta,
                          e->meta_len);
  unsigned id = meta_id(e->meta, e->meta_len);
  if (resurrected(scan->r, scan->node, scan->topic, id)) scan->resurrected_id = id;
}

/* Runs every check that must pass after any single event on node y. */
static void check_node(run *r, unsigned y) {
  if (r->report->failed || !node_live(r, y)) return;
  r->report->checks++;
  update_purges(r, y);
  consume_diffs(r, y);
  hark_tracker *tracker = sim_node_tracker(r->nodes[y]);
  const char *problem = hark__debug_check_indexes(tracker);
  if (problem != NULL) fail(r, "index consistency", "%s: %s", NODE_NAMES[y], problem);
  for (unsigned t = 0; t < SIM_CLUSTER_TOPICS && !r->report->failed; t++) {
    list_scan scan = {r, y, t, 0, 0, 0};
    const char *name = TOPIC_NAMES[t];
    hark_tracker_list(tracker, name, strlen(name), scan_listed, &scan);
    if (scan.resurrected_id != 0) {
      const id_info *info = &r->ids[scan.resurrected_id];
      fail(r, "no resurrection", "%s lists entry id %u of %s incarnation %u, which it dropped",
           NODE_NAMES[y], scan.resurrected_id, NODE_NAMES[info->node], info->incarnation);
    } else if (scan.count != r->replays[y][t].count || scan.sum != r->replays[y][t].sum) {
      char *list = sim_node_list(r->nodes[y], name);
      fail(r, "diff replay",
           "%s lists %" PRIu64 " entries on %s but its diffs add up to %" PRIu64
           " (or to other entries); list:\n%s",
           NODE_NAMES[y], scan.count, name, r->replays[y][t].count, list);
      free(list);
    }
  }
}

static void observe(void *ctx, sim_node *node) {
  run *r = ctx;
  if (r->trace) {
    fprintf(stderr, "t=%" PRIu64 " %s handled an event\n", sim_net_now_ms(r->net) - r->start_ms,
            sim_node_name(node));
  }
  unsigned y = node_of(r, sim_node_name(node));
  check_node(r, y);
  r->permdown_from[y] = -1;
}

/* ---- bounded catch-up: a full transfer only when no generation fits ---- */

static unsigned shard_of_topic_name(const char *topic, size_t len) {
  unsigned index = 0;
  size_t i = len;
  while (i > 0 && topic[i - 1] >= '0' && topic[i - 1] <= '9') i--;
  for (; i < len; i++) index = index * 10 + (unsigned)(topic[i] - '0');
  return index;
}

/* Keeps a copy of a transfer request that node `to` is about to handle,
 * for the check of its ack in tap_ack. */
static void inspect(void *ctx, sim_node *to, const sim_msg *msg) {
  run *r = ctx;
  if (msg->len >= 2 && msg->data[1] == WIRE_GRACEFUL_PERMDOWN) {
    r->permdown_from[node_of(r, sim_node_name(to))] = (int)node_of(r, msg->from);
  }
  if (msg->len < 2 || msg->data[1] != WIRE_TRANSFER_REQ) return;
  pending_request *req = &r->request[node_of(r, sim_node_name(to))];
  free(req->data);
  req->data = malloc(msg->len);
  if (req->data == NULL) die("out of memory");
  memcpy(req->data, msg->data, msg->len);
  req->len = msg->len;
  req->set = true;
  req->shard = shard_of_topic_name(msg->topic, msg->topic_len);
  snprintf(req->from, sizeof(req->from), "%s", msg->from);
}

/* Checks that a full transfer goes only to a requester whose clock no
 * delta generation bridges. */
static void tap_ack(void *ctx, const sim_msg *msg) {
  run *r = ctx;
  if (msg->len < 2 || msg->data[1] != WIRE_TRANSFER_ACK || msg->to == NULL) return;
  unsigned responder = node_of(r, msg->from);
  pending_request *req = &r->request[responder];
  if (!req->set || strcmp(req->from, msg->to) != 0) return;
  req->set = false;
  bool full = false;
  if (hark__debug_message_type(msg->data, msg->len, &full) != WIRE_TRANSFER_ACK) {
    fail(r, "bounded catch-up", "%s sent a transfer ack that does not decode", msg->from);
    return;
  }
  if (!full) return;
  hark_tracker *tracker = sim_node_tracker(r->nodes[responder]);
  if (hark__debug_generation_bridges(tracker, req->shard, req->data, req->len) == 1) {
    fail(r, "bounded catch-up",
         "%s sent %s a full transfer on shard %u although a delta generation bridges its clock",
         msg->from, msg->to, req->shard);
  }
}

/* ---- applying events ---- */

static void remember_vsns(run *r, unsigned n) {
  unsigned k = incarnation(r, n);
  if (k > MAX_INCARNATIONS) die("too many incarnations of one node");
  hark_tracker *tracker = sim_node_tracker(r->nodes[n]);
  for (unsigned s = 0; s < r->config->pool_size; s++) r->vsn[n][k][s] = hark__debug_vsn(tracker, s);
}

static void add_stats(run *r, unsigned n) {
  hark_tracker_stats s;
  hark_tracker_get_stats(sim_node_tracker(r->nodes[n]), &s);
  sim_report *rep = r->report;
  rep->transfers_requested += s.transfers_requested;
  rep->transfers_sent_full += s.transfers_sent_full;
  rep->transfers_sent_delta += s.transfers_sent_delta;
  rep->heartbeats_sent += s.heartbeats_sent;
  rep->bytes_sent += s.bytes_sent;
  rep->replicas_down += s.replicas_down;
  rep->replicas_permdown += s.replicas_permdown;
}

/* The owners of a dead incarnation are gone with it. */
static void bury(run *r, unsigned n) {
  add_stats(r, n);
  r->dead[n][incarnation(r, n)] = true;
  memset(r->tracked[n], 0, sizeof(r->tracked[n]));
  memset(r->replays[n], 0, sizeof(r->replays[n]));
  /* A new incarnation has no record of any other replica yet. */
  memset(r->purge[n], 0, sizeof(r->purge[n]));
  r->request[n].set = false;
  sim_node_kill(r->nodes[n]);
  sim_node_clear_diffs(r->nodes[n]);
}

static unsigned new_id(run *r, unsigned n, unsigned owner, unsigned topic, unsigned key) {
  if (r->id_count >= r->id_cap) {
    r->id_cap = r->id_cap ? r->id_cap * 2 : 256;
    r->ids = realloc(r->ids, r->id_cap * sizeof(*r->ids));
    if (r->ids == NULL) die("out of memory");
  }
  r->ids[r->id_count] = (id_info){n, incarnation(r, n), owner, topic, key};
  return (unsigned)r->id_count++;
}

static void apply_op(run *r, const sim_event *ev) {
  unsigned n = ev->node;
  sim_node *node = r->nodes[n];
  const hark_subscriber *owner = owner_handle(r, n, ev->owner);
  hark_tracker *tracker = sim_node_tracker(node);
  const char *topic = TOPIC_NAMES[ev->topic];
  char key[8], meta[32];
  snprintf(key, sizeof(key), "k%u", ev->key);
  unsigned *slot = &r->tracked[n][ev->owner][ev->topic][ev->key];
  unsigned choice = ev->choice % 8;

  if (*slot == 0 && choice == 7) {
    hark_tracker_untrack(tracker, owner, topic, strlen(topic), key, strlen(key));
    if (sim_node_diff_count(node) != 0) {
      fail(r, "workload", "%s: untrack of an entry never tracked reported a diff", NODE_NAMES[n]);
    }
    return;
  }
  if (*slot == 0 || choice == 0 || choice == 1 || choice == 2 || choice == 7) {
    unsigned id = new_id(r, n, ev->owner, ev->topic, ev->key);
    snprintf(meta, sizeof(meta), "{\"id\":%u}", id);
    int rc = *slot == 0 ? hark_tracker_track(tracker, owner, topic, strlen(topic), key,
                                             strlen(key), meta, strlen(meta), NULL)
                        : hark_tracker_update(tracker, owner, topic, strlen(topic), key,
                                              strlen(key), meta, strlen(meta), NULL);
    if (rc != 0) fail(r, "workload", "%s: track or update failed: %s", NODE_NAMES[n], hark_strerror(rc));
    *slot = id;
  } else if (choice == 3 || choice == 4) {
    hark_tracker_untrack(tracker, owner, topic, strlen(topic), key, strlen(key));
    *slot = 0;
  } else if (choice == 5) {
    hark_tracker_untrack_all(tracker, owner);
    memset(r->tracked[n][ev->owner], 0, sizeof(r->tracked[n][ev->owner]));
  } else {
    int rc = hark_tracker_track(tracker, owner, topic, strlen(topic), key, strlen(key), "{}", 2,
                                NULL);
    if (rc != HARK_EALREADY) {
      fail(r, "workload", "%s: a duplicate track returned %s, expected HARK_EALREADY",
           NODE_NAMES[n], hark_strerror(rc));
    }
  }
}

static void start_again(run *r, unsigned n) {
  sim_node_restart(r->nodes[n]);
  remember_vsns(r, n);
}

static void apply_partition(run *r, uint32_t groups) {
  for (unsigned a = 0; a < r->config->node_count; a++) {
    for (unsigned b = a + 1; b < r->config->node_count; b++) {
      bool split = ((groups >> a) & 1u) != ((groups >> b) & 1u);
      if (split) sim_net_cut(r->net, NODE_NAMES[a], NODE_NAMES[b], true);
    }
  }
}

/* Applies one event and returns the node it touched, or -1. */
static int apply_event(run *r, const sim_event *ev) {
  unsigned n = ev->node;
  sim_node *node = ev->node < r->config->node_count ? r->nodes[n] : NULL;
  bool live = node != NULL && node_live(r, n);
  switch (ev->kind) {
  case SIM_EV_OP:
    if (!live || sim_node_paused(node)) return -1;
    apply_op(r, ev);
    return (int)n;
  case SIM_EV_PARTITION:
    apply_partition(r, ev->groups);
    return -1;
  case SIM_EV_CUT_ONEWAY:
    if (ev->other >= r->config->node_count || ev->other == n) return -1;
    sim_net_cut_oneway(r->net, NODE_NAMES[n], NODE_NAMES[ev->other], true);
    return -1;
  case SIM_EV_HEAL:
    sim_net_heal_all(r->net);
    return -1;
  case SIM_EV_CRASH:
    if (live) bury(r, n);
    return -1;
  case SIM_EV_RESTART:
    if (node == NULL || live) return -1;
    start_again(r, n);
    return (int)n;
  case SIM_EV_PAUSE:
  case SIM_EV_RESUME:
    if (!live) return -1;
    sim_node_pause(node, ev->kind == SIM_EV_PAUSE);
    return -1;
  case SIM_EV_GRACEFUL:
    if (!live || sim_node_paused(node)) return -1;
    hark_tracker_graceful_permdown(sim_node_tracker(node));
    bury(r, n);
    return -1;
  case SIM_EV_CLOCK_JUMP:
    if (node == NULL) return -1;
    sim_node_jump_clock(node, ev->jump_ms);
    return -1;
  case SIM_EV_FAULTS: {
    sim_faults f = {ev->drop, ev->duplicate, 0, ev->max_delay_ms};
    sim_net_set_faults(r->net, &f);
    return -1;
  }
  }
  return -1;
}

/* ---- final checks ---- */

static int compare_ids(const void *a, const void *b) {
  unsigned x = *(const unsigned *)a, y = *(const unsigned *)b;
  return x < y ? -1 : x > y;
}

typedef struct id_list {
  run *r;
  unsigned topic;
  unsigned items[SIM_CLUSTER_MAX_NODES * SIM_CLUSTER_OWNERS * SIM_CLUSTER_KEYS + 8];
  size_t count;
  bool overflow;
  unsigned mislabeled; /* an id listed under another owner, topic or key */
} id_list;

/* Collects the ids of a list and checks that each is listed with the
 * owner, topic and key it was tracked with. */
static void collect_id(void *ctx, const hark_tracker_entry *e) {
  id_list *list = ctx;
  if (list->count == sizeof(list->items) / sizeof(list->items[0])) {
    list->overflow = true;
    return;
  }
  unsigned id = meta_id(e->meta, e->meta_len);
  list->items[list->count++] = id;
  if (id == 0 || id >= list->r->id_count) {
    list->mislabeled = id ? id : UINT32_MAX;
    return;
  }
  const id_info *info = &list->r->ids[id];
  char key[8];
  snprintf(key, sizeof(key), "k%u", info->key);
  uint64_t owner = (uint64_t)(uintptr_t)owner_handle(list->r, info->node, info->owner);
  if (info->topic != list->topic || e->owner != owner || e->key_len != strlen(key) ||
      memcmp(e->key, key, e->key_len) != 0) {
    list->mislabeled = id;
  }
}

/* Writes the ids of sorted list `a` missing from sorted list `b`, each with
 * the node, incarnation, owner and key it was tracked with. */
static void describe_difference(const run *r, const id_list *a, const id_list *b, char *out,
                                size_t cap) {
  size_t used = 0, k = 0;
  out[0] = '\0';
  for (size_t i = 0; i < a->count && used + 1 < cap; i++) {
    while (k < b->count && b->items[k] < a->items[i]) k++;
    if (k < b->count && b->items[k] == a->items[i]) continue;
    unsigned id = a->items[i];
    int n = id > 0 && id < r->id_count
                ? snprintf(out + used, cap - used, "%s%u (n%u#%u owner %u k%u)", used ? ", " : "",
                           id, r->ids[id].node, r->ids[id].incarnation, r->ids[id].owner,
                           r->ids[id].key)
                : snprintf(out + used, cap - used, "%s%u", used ? ", " : "", id);
    if (n < 0) break;
    used += (size_t)n < cap - used ? (size_t)n : cap - used - 1;
  }
  if (used == 0) snprintf(out, cap, "none");
}

/* Every live node lists the same entries, which are exactly those the live
 * owners hold. */
static void check_convergence(run *r, const char *when) {
  for (unsigned t = 0; t < SIM_CLUSTER_TOPICS && !r->report->failed; t++) {
    id_list expected = {0};
    for (unsigned n = 0; n < r->config->node_count; n++) {
      if (!node_live(r, n)) continue;
      for (unsigned o = 0; o < SIM_CLUSTER_OWNERS; o++) {
        for (unsigned k = 0; k < SIM_CLUSTER_KEYS; k++) {
          unsigned id = r->tracked[n][o][t][k];
          if (id != 0) expected.items[expected.count++] = id;
        }
      }
    }
    qsort(expected.items, expected.count, sizeof(unsigned), compare_ids);
    char *first = NULL;
    for (unsigned n = 0; n < r->config->node_count && !r->report->failed; n++) {
      if (!node_live(r, n)) continue;
      const char *name = TOPIC_NAMES[t];
      id_list listed = {.r = r, .topic = t};
      hark_tracker_list(sim_node_tracker(r->nodes[n]), name, strlen(name), collect_id, &listed);
      qsort(listed.items, listed.count, sizeof(unsigned), compare_ids);
      char *list = sim_node_list(r->nodes[n], name);
      if (listed.mislabeled != 0) {
        fail(r, "convergence", "%s: %s lists id %u under another owner, topic or key:\n%s", when,
             NODE_NAMES[n], listed.mislabeled, list);
      } else if (listed.overflow || listed.count != expected.count ||
          memcmp(listed.items, expected.items, listed.count * sizeof(unsigned)) != 0) {
        char extra[384], missing[384];
        describe_difference(r, &listed, &expected, extra, sizeof(extra));
        describe_difference(r, &expected, &listed, missing, sizeof(missing));
        fail(r, "convergence", "%s: %s lists %zu entries on %s, the live owners hold %zu; extra: %s; missing: %s",
             when, NODE_NAMES[n], listed.count, name, expected.count, extra, missing);
      } else if (first != NULL && strcmp(first, list) != 0) {
        fail(r, "convergence", "%s: nodes list different metas on %s:\n%s\n--\n%s", when, name,
             first, list);
      }
      if (first == NULL) first = list;
      else free(list);
    }
    free(first);
  }
}

/* After permdown_period, no live node keeps anything of a dead incarnation. */
static void check_all_dropped(run *r) {
  for (unsigned y = 0; y < r->config->node_count && !r->report->failed; y++) {
    if (!node_live(r, y)) continue;
    update_purges(r, y);
    for (unsigned s = 0; s < r->config->pool_size; s++) {
      for (unsigned x = 0; x < r->config->node_count; x++) {
        if (x == y) continue;
        unsigned last_dead = 0;
        for (unsigned k = 1; k <= incarnation(r, x) && k <= MAX_INCARNATIONS; k++) {
          if (r->dead[x][k]) last_dead = k;
        }
        check_no_leak(r, y, s, x, last_dead);
      }
    }
  }
}

typedef struct transfer_totals {
  uint64_t requested, full, delta;
} transfer_totals;

static transfer_totals live_transfers(run *r) {
  transfer_totals t = {0};
  for (unsigned n = 0; n < r->config->node_count; n++) {
    if (!node_live(r, n)) continue;
    hark_tracker_stats s;
    hark_tracker_get_stats(sim_node_tracker(r->nodes[n]), &s);
    t.requested += s.transfers_requested;
    t.full += s.transfers_sent_full;
    t.delta += s.transfers_sent_delta;
  }
  return t;
}

static int64_t max_back_jump(const run *r) {
  int64_t worst = 0;
  for (unsigned n = 0; n < r->config->node_count; n++) {
    int64_t offset = sim_node_clock_offset(r->nodes[n]);
    if (-offset > worst) worst = -offset;
  }
  return worst;
}

/* Runs the final phase. It heals every fault, waits and checks
 * convergence. Then it waits past permdown_period and checks that dead
 * replicas are gone everywhere, and last that the settled cluster sends no
 * transfer. */
static void final_phase(run *r) {
  const hark_tracker_replication_options *o = &r->config->options;
  sim_net_heal_all(r->net);
  sim_net_set_faults(r->net, NULL);
  for (unsigned n = 0; n < r->config->node_count; n++) {
    if (node_live(r, n)) sim_node_pause(r->nodes[n], false);
  }
  uint64_t period = o->broadcast_period_ms;
  uint64_t beat = period * (o->max_silent_periods + 1);
  uint64_t back = (uint64_t)max_back_jump(r);
  uint64_t quiet = o->down_period_ms + back + 4 * beat + 8 * o->clock_sample_periods * period;
  sim_net_run_for(r->net, quiet);
  if (r->report->failed) return;
  check_convergence(r, "after the quiet time");
  if (r->report->failed) return;

  sim_net_run_for(r->net, o->permdown_period_ms + back + 2 * beat);
  if (r->report->failed) return;
  check_all_dropped(r);
  check_convergence(r, "after permdown_period");
  if (r->report->failed) return;

  transfer_totals before = live_transfers(r);
  sim_net_run_for(r->net, 4 * beat + 4 * o->clock_sample_periods * period);
  transfer_totals after = live_transfers(r);
  if (!r->report->failed && (after.requested != before.requested || after.full != before.full)) {
    fail(r, "bounded catch-up",
         "a settled cluster still transfers: %" PRIu64 " requests and %" PRIu64
         " full transfers in the last %" PRIu64 " ms",
         after.requested - before.requested, after.full - before.full,
         4 * beat + 4 * o->clock_sample_periods * period);
  }
}

/* ---- running ---- */

static void start_nodes(run *r) {
  for (unsigned n = 0; n < r->config->node_count; n++) {
    r->nodes[n] = sim_net_start_node(r->net, NODE_NAMES[n], r->config->pool_size,
                                     &r->config->options);
    remember_vsns(r, n);
  }
}

bool sim_run(const sim_schedule *schedule, const bool *keep, sim_report *report) {
  *report = (sim_report){0};
  run *r = calloc(1, sizeof(*r));
  if (r == NULL) die("out of memory");
  r->schedule = schedule;
  r->config = &schedule->config;
  r->report = report;
  r->id_count = 1;
  r->trace = getenv("HARK_SIM_TRACE") != NULL;
  for (unsigned n = 0; n < SIM_CLUSTER_MAX_NODES; n++) r->permdown_from[n] = -1;
  if (r->config->node_count < 1 || r->config->node_count > SIM_CLUSTER_MAX_NODES ||
      r->config->pool_size < 1 || r->config->pool_size > SIM_CLUSTER_MAX_SHARDS) {
    die("config out of range");
  }
  r->net = sim_net_new(r->config->seed);
  r->start_ms = sim_net_now_ms(r->net);
  sim_net_set_faults(r->net, &r->config->faults);
  sim_net_set_observer(r->net, observe, r);
  sim_net_set_inspector(r->net, inspect, r);
  sim_net_set_tap(r->net, tap_ack, r);
  start_nodes(r);

  for (size_t i = 0; i < schedule->count && !report->failed; i++) {
    if (keep != NULL && !keep[i]) continue;
    const sim_event *ev = &schedule->events[i];
    uint64_t now = sim_net_now_ms(r->net) - r->start_ms;
    if (ev->at_ms > now) sim_net_run_for(r->net, ev->at_ms - now);
    if (report->failed) break;
    r->event_index = i;
    int touched = apply_event(r, ev);
    if (touched >= 0) check_node(r, (unsigned)touched);
  }
  if (!report->failed) {
    uint64_t now = sim_net_now_ms(r->net) - r->start_ms;
    if (r->config->chaos_ms > now) sim_net_run_for(r->net, r->config->chaos_ms - now);
  }
  if (!report->failed) final_phase(r);

  for (unsigned n = 0; n < r->config->node_count; n++) {
    if (node_live(r, n)) add_stats(r, n);
    free(r->request[n].data);
  }
  report->virtual_ms = sim_net_now_ms(r->net) - r->start_ms;
  sim_net_free(r->net);
  free(r->ids);
  free(r);
  return !report->failed;
}
