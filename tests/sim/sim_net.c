#include "sim_net.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hark/pubsub.h"

#define SIM_MAX_NODES 16
#define SIM_MAX_SHARDS 64
#define SIM_OWNERS 64

static void sim_fail(const char *what) {
  fprintf(stderr, "sim_net: %s\n", what);
  abort();
}

static void *sim_alloc(size_t size) {
  void *p = calloc(1, size ? size : 1);
  if (p == NULL) sim_fail("out of memory");
  return p;
}

static char *sim_strndup(const char *s, size_t len) {
  char *copy = sim_alloc(len + 1);
  memcpy(copy, s, len);
  return copy;
}

/* ---- events ---- */

typedef enum event_kind { EVENT_TIMER, EVENT_DELIVER } event_kind;

/* A timer firing or a message arriving. A timer event is stale when the
 * node restarted or rescheduled the shard since. */
typedef struct event {
  uint64_t at_ms;
  uint64_t seq; /* ties break in scheduling order */
  event_kind kind;
  sim_node *node; /* the timer's node, or the recipient */
  unsigned shard;
  uint64_t generation;
  unsigned incarnation;
  char *from;
  char *topic;
  size_t topic_len;
  unsigned char *data;
  size_t len;
} event;

typedef struct event_list {
  event **items;
  size_t count;
  size_t cap;
} event_list;

struct sim_node {
  sim_net *net;
  char *name;
  unsigned pool_size;
  hark_tracker_replication_options options;
  bool has_options;
  hark_tracker *tracker;
  unsigned incarnation;
  bool paused;
  bool deaf;
  int64_t clock_offset_ms; /* added to the network clock on this node */
  uint64_t timer_generation[SIM_MAX_SHARDS];
  event_list deferred; /* events that arrived while paused */
  hark_subscriber owners[SIM_OWNERS];
  sim_diff *diffs;
  size_t diff_count;
  size_t diff_cap;
};

struct sim_net {
  uint64_t now_ms;
  uint64_t rng;
  uint64_t seq;
  event_list queue; /* a binary min-heap on (at_ms, seq) */
  event_list held;
  sim_faults faults;
  sim_filter_fn filter;
  void *filter_ctx;
  sim_tap_fn tap;
  void *tap_ctx;
  sim_inspect_fn inspect;
  void *inspect_ctx;
  sim_observer_fn observer;
  void *observer_ctx;
  bool halted;
  sim_node *nodes[SIM_MAX_NODES];
  size_t node_count;
  bool cut[SIM_MAX_NODES][SIM_MAX_NODES]; /* [from][to]: messages from -> to are lost */
};

static void list_push(event_list *list, event *ev) {
  if (list->count == list->cap) {
    list->cap = list->cap ? list->cap * 2 : 64;
    list->items = realloc(list->items, list->cap * sizeof(*list->items));
    if (list->items == NULL) sim_fail("out of memory");
  }
  list->items[list->count++] = ev;
}

static bool event_before(const event *a, const event *b) {
  return a->at_ms != b->at_ms ? a->at_ms < b->at_ms : a->seq < b->seq;
}

static void heap_push(sim_net *net, event *ev) {
  ev->seq = net->seq++;
  event_list *heap = &net->queue;
  list_push(heap, ev);
  size_t i = heap->count - 1;
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (!event_before(heap->items[i], heap->items[parent])) break;
    event *tmp = heap->items[i];
    heap->items[i] = heap->items[parent];
    heap->items[parent] = tmp;
    i = parent;
  }
}

static event *heap_pop(sim_net *net) {
  event_list *heap = &net->queue;
  event *top = heap->items[0];
  heap->items[0] = heap->items[--heap->count];
  size_t i = 0;
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, min = i;
    if (l < heap->count && event_before(heap->items[l], heap->items[min])) min = l;
    if (r < heap->count && event_before(heap->items[r], heap->items[min])) min = r;
    if (min == i) break;
    event *tmp = heap->items[i];
    heap->items[i] = heap->items[min];
    heap->items[min] = tmp;
    i = min;
  }
  return top;
}

static void event_free(event *ev) {
  free(ev->from);
  free(ev->topic);
  free(ev->data);
  free(ev);
}

/* ---- network ---- */

sim_net *sim_net_new(uint64_t seed) {
  sim_net *net = sim_alloc(sizeof(*net));
  net->rng = seed * 0x9e3779b97f4a7c15ULL + 0x2545f4914f6cdd1dULL;
  /* A plausible wall clock, so vsns and phx_refs look like real ones. */
  net->now_ms = 1733300000000ULL;
  return net;
}

static void node_free(sim_node *node);

void sim_net_free(sim_net *net) {
  for (size_t i = 0; i < net->node_count; i++) node_free(net->nodes[i]);
  for (size_t i = 0; i < net->queue.count; i++) event_free(net->queue.items[i]);
  for (size_t i = 0; i < net->held.count; i++) event_free(net->held.items[i]);
  free(net->queue.items);
  free(net->held.items);
  free(net);
}

uint64_t sim_net_now_ms(const sim_net *net) {
  return net->now_ms;
}

/* splitmix64 */
uint64_t sim_net_random(sim_net *net) {
  uint64_t z = (net->rng += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static double random_unit(sim_net *net) {
  return (double)(sim_net_random(net) >> 11) / (double)(1ULL << 53);
}

void sim_net_set_faults(sim_net *net, const sim_faults *faults) {
  net->faults = faults ? *faults : (sim_faults){0};
}

void sim_net_set_filter(sim_net *net, sim_filter_fn fn, void *ctx) {
  net->filter = fn;
  net->filter_ctx = ctx;
}

void sim_net_set_tap(sim_net *net, sim_tap_fn fn, void *ctx) {
  net->tap = fn;
  net->tap_ctx = ctx;
}

void sim_net_set_inspector(sim_net *net, sim_inspect_fn fn, void *ctx) {
  net->inspect = fn;
  net->inspect_ctx = ctx;
}

void sim_net_set_observer(sim_net *net, sim_observer_fn fn, void *ctx) {
  net->observer = fn;
  net->observer_ctx = ctx;
}

void sim_net_halt(sim_net *net) {
  net->halted = true;
}

bool sim_net_halted(const sim_net *net) {
  return net->halted;
}

size_t sim_net_held_count(const sim_net *net) { return net->held.count; }

size_t sim_net_release_held(sim_net *net) {
  size_t count = net->held.count;
  for (size_t i = 0; i < count; i++) {
    event *ev = net->held.items[i];
    ev->at_ms = net->now_ms;
    heap_push(net, ev);
  }
  net->held.count = 0;
  return count;
}

static long node_index(const sim_net *net, const char *name) {
  for (size_t i = 0; i < net->node_count; i++) {
    if (strcmp(net->nodes[i]->name, name) == 0) return (long)i;
  }
  return -1;
}

sim_node *sim_net_node(sim_net *net, const char *name) {
  long i = node_index(net, name);
  return i < 0 ? NULL : net->nodes[i];
}

void sim_net_cut(sim_net *net, const char *a, const char *b, bool cut) {
  long i = node_index(net, a), k = node_index(net, b);
  if (i < 0 || k < 0) sim_fail("cut: unknown node");
  net->cut[i][k] = net->cut[k][i] = cut;
}

void sim_net_cut_oneway(sim_net *net, const char *from, const char *to, bool cut) {
  long i = node_index(net, from), k = node_index(net, to);
  if (i < 0 || k < 0) sim_fail("cut: unknown node");
  net->cut[i][k] = cut;
}

void sim_net_heal_all(sim_net *net) {
  memset(net->cut, 0, sizeof(net->cut));
}

size_t sim_net_node_count(const sim_net *net) {
  return net->node_count;
}

sim_node *sim_net_node_at(sim_net *net, size_t i) {
  return i < net->node_count ? net->nodes[i] : NULL;
}

size_t sim_net_in_flight(const sim_net *net) {
  size_t count = 0;
  for (size_t i = 0; i < net->queue.count; i++) {
    if (net->queue.items[i]->kind == EVENT_DELIVER) count++;
  }
  return count;
}

static bool pending_from(const event *ev, const char *from, const sim_node *to) {
  return ev->kind == EVENT_DELIVER && ev->node == to && strcmp(ev->from, from) == 0;
}

size_t sim_net_pending_from(const sim_net *net, const char *from, const sim_node *to) {
  size_t count = 0;
  for (size_t i = 0; i < net->queue.count; i++) count += pending_from(net->queue.items[i], from, to);
  for (size_t i = 0; i < net->held.count; i++) count += pending_from(net->held.items[i], from, to);
  for (size_t i = 0; i < to->deferred.count; i++) {
    count += pending_from(to->deferred.items[i], from, to);
  }
  return count;
}

static event *message_event(sim_node *to, const char *from, const char *topic, size_t topic_len,
                            const void *data, size_t len) {
  event *ev = sim_alloc(sizeof(*ev));
  ev->kind = EVENT_DELIVER;
  ev->node = to;
  ev->from = sim_strndup(from, strlen(from));
  ev->topic = sim_strndup(topic, topic_len);
  ev->topic_len = topic_len;
  ev->data = sim_alloc(len);
  memcpy(ev->data, data, len);
  ev->len = len;
  return ev;
}

static uint64_t random_delay(sim_net *net) {
  uint64_t lo = net->faults.min_delay_ms, hi = net->faults.max_delay_ms;
  if (hi <= lo) return lo;
  return lo + sim_net_random(net) % (hi - lo + 1);
}

/* Sends one message to one recipient through the filter and the faults. */
static void route(sim_net *net, sim_node *from, sim_node *to, const char *topic,
                  size_t topic_len, const void *data, size_t len) {
  if (net->cut[node_index(net, from->name)][node_index(net, to->name)]) return;
  sim_msg msg = {from->name, to->name, topic, topic_len, data, len};
  sim_verdict verdict = net->filter ? net->filter(net->filter_ctx, &msg) : SIM_DELIVER;
  if (verdict == SIM_DROP) return;
  if (verdict == SIM_HOLD) {
    list_push(&net->held, message_event(to, from->name, topic, topic_len, data, len));
    return;
  }
  if (random_unit(net) < net->faults.drop) return;
  int copies = random_unit(net) < net->faults.duplicate ? 2 : 1;
  for (int i = 0; i < copies; i++) {
    event *ev = message_event(to, from->name, topic, topic_len, data, len);
    ev->at_ms = net->now_ms + random_delay(net);
    heap_push(net, ev);
  }
}

/* ---- the env of one node ---- */

uint64_t sim_node_now_ms(const sim_node *node) {
  return node->net->now_ms + (uint64_t)node->clock_offset_ms;
}

static uint64_t env_now_ms(void *ctx) {
  return sim_node_now_ms(ctx);
}

static uint64_t env_random(void *ctx) {
  sim_node *node = ctx;
  return sim_net_random(node->net);
}

static void env_schedule(void *ctx, unsigned shard, uint64_t delay_ms) {
  sim_node *node = ctx;
  if (shard >= SIM_MAX_SHARDS) sim_fail("schedule: shard out of range");
  event *ev = sim_alloc(sizeof(*ev));
  ev->kind = EVENT_TIMER;
  ev->node = node;
  ev->shard = shard;
  ev->generation = ++node->timer_generation[shard];
  ev->incarnation = node->incarnation;
  ev->at_ms = node->net->now_ms + delay_ms;
  heap_push(node->net, ev);
}

static void env_send(void *ctx, const char *to, const char *topic, size_t topic_len,
                     const void *data, size_t len) {
  sim_node *node = ctx;
  sim_net *net = node->net;
  if (net->tap) {
    sim_msg msg = {node->name, to, topic, topic_len, data, len};
    net->tap(net->tap_ctx, &msg);
  }
  for (size_t i = 0; i < net->node_count; i++) {
    sim_node *peer = net->nodes[i];
    if (peer == node) continue;
    if (to != NULL && strcmp(to, peer->name) != 0) continue;
    route(net, node, peer, topic, topic_len, data, len);
  }
}

/* The node's clock in nanoseconds, plus 16 us per incarnation. The tracker
 * takes its vsn from this clock in microseconds (plus the shard index). So
 * a restart in the same virtual millisecond, or after the clock stepped
 * back to an earlier one, still gets a new vsn, for up to 62 incarnations
 * of a node with up to 16 shards. */
static uint64_t tracker_now_ns(void *ctx) {
  sim_node *node = ctx;
  return sim_node_now_ms(node) * 1000000ULL + (uint64_t)node->incarnation * 16000ULL;
}

static void record_diffs(sim_node *node, const char *topic, size_t topic_len,
                         const hark_tracker_entry *entries, size_t count, bool join) {
  for (size_t i = 0; i < count; i++) {
    if (node->diff_count == node->diff_cap) {
      node->diff_cap = node->diff_cap ? node->diff_cap * 2 : 64;
      node->diffs = realloc(node->diffs, node->diff_cap * sizeof(*node->diffs));
      if (node->diffs == NULL) sim_fail("out of memory");
    }
    node->diffs[node->diff_count++] = (sim_diff){
        .owner = entries[i].owner,
        .topic = sim_strndup(topic, topic_len),
        .key = sim_strndup(entries[i].key, entries[i].key_len),
        .meta = sim_strndup(entries[i].meta, entries[i].meta_len),
        .join = join,
        .at_ms = node->net->now_ms,
    };
  }
}

static void on_diff(void *ctx, const char *topic, size_t topic_len,
                    const hark_tracker_entry *joins, size_t join_count,
                    const hark_tracker_entry *leaves, size_t leave_count) {
  sim_node *node = ctx;
  record_diffs(node, topic, topic_len, leaves, leave_count, false);
  record_diffs(node, topic, topic_len, joins, join_count, true);
}

static void start_tracker(sim_node *node) {
  node->incarnation++;
  hark_tracker_options options = {
      .node_name = node->name,
      .pool_size = node->pool_size,
      .on_diff = on_diff,
      .ctx = node,
      .now_ns = tracker_now_ns,
      .clock_ctx = node,
  };
  if (hark_tracker_create(&node->tracker, &options) != 0) sim_fail("tracker create failed");
  hark_tracker_env env = {node, env_now_ms, env_schedule, env_random, env_send};
  if (hark_tracker_start_replication(node->tracker, "sim",
                                     node->has_options ? &node->options : NULL, &env) != 0) {
    sim_fail("start replication failed");
  }
}

sim_node *sim_net_start_node(sim_net *net, const char *name, unsigned pool_size,
                             const hark_tracker_replication_options *options) {
  if (net->node_count == SIM_MAX_NODES || node_index(net, name) >= 0) sim_fail("bad node");
  if (pool_size > SIM_MAX_SHARDS) sim_fail("pool size too large");
  sim_node *node = sim_alloc(sizeof(*node));
  node->net = net;
  node->name = sim_strndup(name, strlen(name));
  node->pool_size = pool_size ? pool_size : 1;
  if (options) {
    node->options = *options;
    node->has_options = true;
  }
  net->nodes[net->node_count++] = node;
  start_tracker(node);
  return node;
}

hark_tracker *sim_node_tracker(sim_node *node) {
  return node->tracker;
}

const char *sim_node_name(const sim_node *node) {
  return node->name;
}

const hark_subscriber *sim_node_owner(sim_node *node, unsigned i) {
  if (i >= SIM_OWNERS) sim_fail("owner out of range");
  return &node->owners[i];
}

static void drop_deferred(sim_node *node) {
  for (size_t i = 0; i < node->deferred.count; i++) event_free(node->deferred.items[i]);
  node->deferred.count = 0;
}

void sim_node_kill(sim_node *node) {
  hark_tracker_destroy(node->tracker);
  node->tracker = NULL;
  node->paused = false;
  drop_deferred(node);
}

void sim_node_restart(sim_node *node) {
  if (node->tracker != NULL) sim_fail("restart of a live node");
  start_tracker(node);
}

bool sim_node_alive(const sim_node *node) {
  return node->tracker != NULL;
}

void sim_node_pause(sim_node *node, bool paused) {
  node->paused = paused;
  if (paused) return;
  /* Resume: what waited runs now, in the order it arrived. */
  for (size_t i = 0; i < node->deferred.count; i++) {
    event *ev = node->deferred.items[i];
    ev->at_ms = node->net->now_ms;
    heap_push(node->net, ev);
  }
  node->deferred.count = 0;
}

bool sim_node_paused(const sim_node *node) {
  return node->paused;
}

void sim_node_jump_clock(sim_node *node, int64_t delta_ms) {
  node->clock_offset_ms += delta_ms;
}

int64_t sim_node_clock_offset(const sim_node *node) {
  return node->clock_offset_ms;
}

unsigned sim_node_incarnation(const sim_node *node) {
  return node->incarnation;
}

void sim_node_deaf(sim_node *node, bool deaf) {
  node->deaf = deaf;
}

static void node_free(sim_node *node) {
  if (node->tracker) hark_tracker_destroy(node->tracker);
  drop_deferred(node);
  free(node->deferred.items);
  sim_node_clear_diffs(node);
  free(node->diffs);
  free(node->name);
  free(node);
}

/* ---- running ---- */

static void run_event(sim_net *net, event *ev) {
  sim_node *node = ev->node;
  bool stale = node->tracker == NULL;
  if (ev->kind == EVENT_TIMER) {
    stale = stale || ev->incarnation != node->incarnation ||
            ev->generation != node->timer_generation[ev->shard];
  }
  if (!stale && ev->kind == EVENT_DELIVER && node->deaf) stale = true;
  if (stale) {
    event_free(ev);
    return;
  }
  if (node->paused) {
    list_push(&node->deferred, ev);
    return;
  }
  if (ev->kind == EVENT_TIMER) {
    hark_tracker_on_timer(node->tracker, ev->shard);
  } else {
    if (net->inspect) {
      sim_msg msg = {ev->from, node->name, ev->topic, ev->topic_len, ev->data, ev->len};
      net->inspect(net->inspect_ctx, node, &msg);
    }
    hark_tracker_receive(node->tracker, ev->topic, ev->topic_len, ev->data, ev->len);
  }
  event_free(ev);
  if (net->observer) net->observer(net->observer_ctx, node);
}

void sim_net_run_for(sim_net *net, uint64_t ms) {
  if (net->halted) return;
  uint64_t end = net->now_ms + ms;
  while (net->queue.count > 0 && net->queue.items[0]->at_ms <= end) {
    if (net->halted) return;
    event *ev = heap_pop(net);
    if (ev->at_ms > net->now_ms) net->now_ms = ev->at_ms;
    run_event(net, ev);
  }
  net->now_ms = end;
}

/* ---- tracking and reading ---- */

static void check(int rc, const char *what) {
  if (rc != 0) {
    fprintf(stderr, "sim_net: %s failed: %s\n", what, hark_strerror(rc));
    abort();
  }
}

void sim_node_track(sim_node *node, unsigned owner, const char *topic, const char *key,
                    const char *meta) {
  check(hark_tracker_track(node->tracker, sim_node_owner(node, owner), topic, strlen(topic), key,
                           strlen(key), meta, meta ? strlen(meta) : 0, NULL),
        "track");
}

void sim_node_update(sim_node *node, unsigned owner, const char *topic, const char *key,
                     const char *meta) {
  check(hark_tracker_update(node->tracker, sim_node_owner(node, owner), topic, strlen(topic), key,
                            strlen(key), meta, meta ? strlen(meta) : 0, NULL),
        "update");
}

void sim_node_untrack(sim_node *node, unsigned owner, const char *topic, const char *key) {
  hark_tracker_untrack(node->tracker, sim_node_owner(node, owner), topic, strlen(topic), key,
                       strlen(key));
}

typedef struct string_list {
  char **items;
  size_t count;
  size_t cap;
} string_list;

static void collect_entry(void *ctx, const hark_tracker_entry *entry) {
  string_list *list = ctx;
  if (list->count == list->cap) {
    list->cap = list->cap ? list->cap * 2 : 16;
    list->items = realloc(list->items, list->cap * sizeof(*list->items));
    if (list->items == NULL) sim_fail("out of memory");
  }
  size_t size = entry->key_len + entry->meta_len + 32;
  char *item = sim_alloc(size);
  snprintf(item, size, "%016" PRIx64 "/%.*s=%.*s", entry->owner, (int)entry->key_len, entry->key,
           (int)entry->meta_len, entry->meta);
  list->items[list->count++] = item;
}

static int compare_strings(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

char *sim_node_list(sim_node *node, const char *topic) {
  string_list list = {0};
  if (node->tracker) hark_tracker_list(node->tracker, topic, strlen(topic), collect_entry, &list);
  if (list.count > 1) qsort(list.items, list.count, sizeof(*list.items), compare_strings);
  size_t total = 1;
  for (size_t i = 0; i < list.count; i++) total += strlen(list.items[i]) + 1;
  char *out = sim_alloc(total);
  for (size_t i = 0; i < list.count; i++) {
    strcat(out, list.items[i]);
    if (i + 1 < list.count) strcat(out, "\n");
    free(list.items[i]);
  }
  free(list.items);
  return out;
}

size_t sim_node_diff_count(const sim_node *node) {
  return node->diff_count;
}

const sim_diff *sim_node_diff(const sim_node *node, size_t i) {
  return i < node->diff_count ? &node->diffs[i] : NULL;
}

size_t sim_node_count_diffs(const sim_node *node, const char *topic, const char *key, bool join) {
  size_t count = 0;
  for (size_t i = 0; i < node->diff_count; i++) {
    const sim_diff *d = &node->diffs[i];
    if (d->join != join || strcmp(d->topic, topic) != 0) continue;
    if (key == NULL || strcmp(d->key, key) == 0) count++;
  }
  return count;
}

void sim_node_clear_diffs(sim_node *node) {
  for (size_t i = 0; i < node->diff_count; i++) {
    free(node->diffs[i].topic);
    free(node->diffs[i].key);
    free(node->diffs[i].meta);
  }
  node->diff_count = 0;
}

typedef struct replica_query {
  const char *name;
  bool found;
  hark_replica_status status;
  uint64_t vsn;
} replica_query;

static void find_replica(void *ctx, unsigned shard, const char *name, uint64_t vsn,
                         hark_replica_status status, uint64_t last_heard_ms) {
  replica_query *q = ctx;
  (void)last_heard_ms;
  if (shard != 0 || strcmp(name, q->name) != 0) return;
  q->found = true;
  q->status = status;
  q->vsn = vsn;
}

bool sim_node_replica(sim_node *node, const char *name, hark_replica_status *status,
                      uint64_t *vsn) {
  replica_query q = {.name = name};
  if (node->tracker) hark_tracker_replicas(node->tracker, find_replica, &q);
  if (q.found && status) *status = q.status;
  if (q.found && vsn) *vsn = q.vsn;
  return q.found;
}
