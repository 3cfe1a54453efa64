/* Unit tests for pubsub groups: instances on several threads, one libuv loop
 * each, joined into one node.
 *
 * The main thread drives every test. It runs code on a member's thread with
 * hark_pubsub_group_post and waits for it with a latch. To learn that a
 * member has run every message from another member, it makes that other
 * member post a call after its messages. Every wait is bounded, and each
 * loop has a watchdog timer, so a broken build fails rather than hangs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "hark/pubsub.h"

#define TOPIC(s) s, sizeof(s) - 1
#define NODE "node-a"
#define MAX_WORKERS 4
#define WAIT_MS 20000
#define WATCHDOG_MS 60000

/* ---- Latches: bounded waits on the main thread ---- */

typedef struct latch {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  int count;
} latch;

static void latch_init(latch *l) {
  pthread_mutex_init(&l->lock, NULL);
  pthread_cond_init(&l->cond, NULL);
  l->count = 0;
}

static void latch_destroy(latch *l) {
  pthread_cond_destroy(&l->cond);
  pthread_mutex_destroy(&l->lock);
}

static void latch_add(latch *l) {
  pthread_mutex_lock(&l->lock);
  l->count++;
  pthread_cond_broadcast(&l->cond);
  pthread_mutex_unlock(&l->lock);
}

/* A group call that counts the latch `arg` down, whether it runs or is
 * discarded. */
static void latch_add_call(void *arg, int discard) {
  (void)discard;
  latch_add(arg);
}

/* Waits until the latch has counted to `target`, and fails the test after
 * WAIT_MS. */
static void latch_wait(latch *l, int target) {
  struct timespec deadline;
  clock_gettime(CLOCK_REALTIME, &deadline);
  deadline.tv_sec += WAIT_MS / 1000;

  pthread_mutex_lock(&l->lock);
  int rc = 0;
  while (l->count < target && rc == 0) rc = pthread_cond_timedwait(&l->cond, &l->lock, &deadline);
  int count = l->count;
  pthread_mutex_unlock(&l->lock);
  if (count < target) fail_msg("timed out after %d ms: latch at %d of %d", WAIT_MS, count, target);
}

/* ---- Workers: one thread, loop and member instance each ---- */

typedef struct worker {
  unsigned index;
  hark_pubsub_group *group;
  const hark_pubsub_adapter *adapter;   /* NULL, or member 0's adapter */
  const hark_dispatcher *extra;         /* registered after create when set */
  uv_thread_t thread;
  uv_loop_t loop;
  uv_check_t check;
  uv_timer_t watchdog;
  hark_pubsub *ps;
  atomic_int iterations;                /* loop iterations, counted after each poll */
  int create_rc;
  latch started;
} worker;

static void on_check(uv_check_t *check) {
  worker *w = check->data;
  atomic_fetch_add(&w->iterations, 1);
}

static void on_watchdog(uv_timer_t *timer) {
  worker *w = timer->data;
  fprintf(stderr, "test_pubsub_group: member %u timed out: its loop still ran after %d ms\n",
          w->index, WATCHDOG_MS);
  abort();
}

/* Closes the handles the worker owns, so that its loop ends. */
static void worker_close_handles(worker *w) {
  uv_close((uv_handle_t *)&w->check, NULL);
  uv_close((uv_handle_t *)&w->watchdog, NULL);
}

static void worker_main(void *arg) {
  worker *w = arg;
  uv_loop_init(&w->loop);
  uv_check_init(&w->loop, &w->check);
  w->check.data = w;
  uv_check_start(&w->check, on_check);
  uv_timer_init(&w->loop, &w->watchdog);
  w->watchdog.data = w;
  uv_timer_start(&w->watchdog, on_watchdog, WATCHDOG_MS, 0);

  hark_pubsub_options options = {
      .node_name = NODE, .adapter = w->adapter, .group = w->group, .group_member = w->index};
  w->create_rc = hark_pubsub_create(&w->ps, &w->loop, &options);
  if (w->create_rc == HARK_OK && w->extra != NULL)
    w->create_rc = hark_pubsub_register_dispatcher(w->ps, w->extra);
  if (w->create_rc != HARK_OK) worker_close_handles(w);
  latch_add(&w->started);

  /* The member's mailbox and the check handle keep the loop running until
   * worker_stop's call destroys the instance and closes the handles. */
  uv_run(&w->loop, UV_RUN_DEFAULT);
  uv_loop_close(&w->loop);
}

static void worker_start(worker *w, hark_pubsub_group *group, unsigned index) {
  w->index = index;
  w->group = group;
  atomic_init(&w->iterations, 0);
  latch_init(&w->started);
  assert_int_equal(uv_thread_create(&w->thread, worker_main, w), 0);
  latch_wait(&w->started, 1);
  assert_int_equal(w->create_rc, HARK_OK);
}

/* A call for a worker's thread, run with run_on. */
typedef void (*worker_fn)(worker *w, void *arg);

typedef struct call {
  worker *w;
  worker_fn fn;
  void *arg;
  int discarded;
  latch done;
} call;

static void run_call(void *arg, int discard) {
  call *c = arg;
  if (discard) c->discarded = 1;
  else c->fn(c->w, c->arg);
  latch_add(&c->done);
}

/* Posts fn(w, arg) to the worker's loop without waiting. */
static call *run_on_async(worker *w, worker_fn fn, void *arg) {
  call *c = calloc(1, sizeof *c);
  assert_non_null(c);
  *c = (call){.w = w, .fn = fn, .arg = arg};
  latch_init(&c->done);
  assert_int_equal(hark_pubsub_group_post(w->group, w->index, run_call, c), HARK_OK);
  return c;
}

static void call_wait(call *c) {
  latch_wait(&c->done, 1);
  assert_int_equal(c->discarded, 0);
  latch_destroy(&c->done);
  free(c);
}

/* Runs fn(w, arg) on the worker's thread and waits until it has run. */
static void run_on(worker *w, worker_fn fn, void *arg) { call_wait(run_on_async(w, fn, arg)); }

static void stop_on_thread(worker *w, void *arg) {
  (void)arg;
  hark_pubsub_destroy(w->ps);
  w->ps = NULL;
  worker_close_handles(w);
}

/* Destroys the worker's instance on its thread and joins the thread. The
 * call's latch is signalled before the loop ends, so the wait is bounded. */
static void worker_stop(worker *w) {
  if (w->ps != NULL) run_on(w, stop_on_thread, NULL);
  assert_int_equal(uv_thread_join(&w->thread), 0);
  latch_destroy(&w->started);
}

typedef struct sync_request {
  worker *to;
  latch reached;
  int rc;
} sync_request;

/* Posts latch_add_call to the request's member, from `from`'s thread. */
static void post_latch(worker *from, void *arg) {
  sync_request *request = arg;
  request->rc = hark_pubsub_group_post(from->group, request->to->index, latch_add_call,
                                       &request->reached);
}

/* Returns once `to` has run every message that `from` posted to it so far:
 * the group runs one sender's posts to a member in order. */
static void sync_through(worker *from, worker *to) {
  sync_request request = {.to = to};
  latch_init(&request.reached);
  run_on(from, post_latch, &request);
  assert_int_equal(request.rc, HARK_OK);
  latch_wait(&request.reached, 1);
  latch_destroy(&request.reached);
}

/* Waits until every member has run what `from` sent it. */
static void sync_all(worker *workers, unsigned count, worker *from) {
  for (unsigned i = 0; i < count; i++)
    if (&workers[i] != from) sync_through(from, &workers[i]);
}

/* A group of `count` members, each started on its own thread. */
typedef struct cluster {
  hark_pubsub_group *group;
  unsigned count;
  worker workers[MAX_WORKERS];
} cluster;

static cluster *cluster_start(unsigned count, const hark_pubsub_adapter *adapter,
                              const hark_dispatcher *extra) {
  cluster *c = calloc(1, sizeof *c);
  assert_non_null(c);
  c->count = count;
  assert_int_equal(hark_pubsub_group_create(&c->group, count), HARK_OK);
  c->workers[0].adapter = adapter;
  for (unsigned i = 0; i < count; i++) {
    c->workers[i].extra = extra;
    worker_start(&c->workers[i], c->group, i);
  }
  return c;
}

static void cluster_stop(cluster *c) {
  for (unsigned i = 0; i < c->count; i++) worker_stop(&c->workers[i]);
  hark_pubsub_group_destroy(c->group);
  free(c);
}

/* ---- Subscribers ---- */

#define MAX_SEEN 2048

/* A subscriber that counts deliveries and keeps their payloads in order.
 * It lives on one member's thread, and the main thread reads it after a sync. */
typedef struct probe {
  hark_subscriber sub;
  int received;
  char payload[64];
  int wrong_thread;
  uv_thread_t owner;
  int seen_count;
  int seen[MAX_SEEN]; /* the integers that payloads "<sender>:<seq>" carry, as sender * 100000 + seq */
} probe;

static void copy_bytes(char *out, size_t cap, const char *bytes, size_t len) {
  if (len >= cap) len = cap - 1;
  if (len > 0) memcpy(out, bytes, len);
  out[len] = '\0';
}

static void probe_on_message(hark_subscriber *sub, const char *topic, size_t topic_len,
                             const hark_message *msg) {
  probe *p = (probe *)sub;
  (void)topic;
  (void)topic_len;
  uv_thread_t self = uv_thread_self();
  if (!uv_thread_equal(&self, &p->owner)) p->wrong_thread++;

  p->received++;
  copy_bytes(p->payload, sizeof p->payload, msg->payload, msg->payload_len);
  unsigned sender, seq;
  if (sscanf(p->payload, "%u:%u", &sender, &seq) == 2 && p->seen_count < MAX_SEEN)
    p->seen[p->seen_count++] = (int)(sender * 100000 + seq);
}

typedef struct subscription {
  probe *probe;
  const char *topic;
  int rc;
} subscription;

static void subscribe_on_thread(worker *w, void *arg) {
  subscription *s = arg;
  s->probe->owner = uv_thread_self();
  s->rc = hark_pubsub_subscribe(w->ps, &s->probe->sub, s->topic, strlen(s->topic), NULL);
}

static void unsubscribe_on_thread(worker *w, void *arg) {
  subscription *s = arg;
  hark_pubsub_unsubscribe(w->ps, &s->probe->sub, s->topic, strlen(s->topic));
}

static probe *subscribe(worker *w, const char *topic) {
  probe *p = calloc(1, sizeof *p);
  assert_non_null(p);
  p->sub.on_message = probe_on_message;
  subscription s = {p, topic, 0};
  run_on(w, subscribe_on_thread, &s);
  assert_int_equal(s.rc, HARK_OK);
  return p;
}

static void unsubscribe(worker *w, probe *p, const char *topic) {
  subscription s = {p, topic, 0};
  run_on(w, unsubscribe_on_thread, &s);
}

/* ---- Broadcasts run on a member's thread ---- */

typedef enum send_kind { SEND_BROADCAST, SEND_FROM, SEND_LOCAL, SEND_DIRECT } send_kind;

typedef struct outgoing {
  send_kind kind;
  const char *topic;
  const char *payload;
  const hark_subscriber *from;
  const char *node_name;           /* SEND_DIRECT */
  const hark_dispatcher *dispatcher;
  int rc;
} outgoing;

static void send_on_thread(worker *w, void *arg) {
  outgoing *s = arg;
  hark_message msg = {.event = "ev", .event_len = 2, .payload = s->payload,
                      .payload_len = strlen(s->payload)};
  size_t len = strlen(s->topic);
  switch (s->kind) {
    case SEND_BROADCAST:
      s->rc = hark_pubsub_broadcast(w->ps, s->topic, len, &msg, s->dispatcher);
      break;
    case SEND_FROM:
      s->rc = hark_pubsub_broadcast_from(w->ps, s->from, s->topic, len, &msg, s->dispatcher);
      break;
    case SEND_LOCAL:
      s->rc = hark_pubsub_local_broadcast(w->ps, s->topic, len, &msg, s->dispatcher);
      break;
    case SEND_DIRECT:
      s->rc = hark_pubsub_direct_broadcast(w->ps, s->node_name, s->topic, len, &msg,
                                           s->dispatcher);
      break;
  }
}

/* Sends one message from member `w` and returns the call's result. */
static int send_from_member(worker *w, outgoing s) {
  run_on(w, send_on_thread, &s);
  return s.rc;
}

/* Returns the worker's loop iterations once its loop is idle. The check
 * handle counts an iteration after the calls it ran, so a count read right
 * after a sync may still miss that sync's own iteration. The pause lets it
 * land. It also lets a wrong wake-up happen before the next post, which
 * would otherwise share its iteration. */
static int idle_loop_iterations(worker *w) {
  uv_sleep(50);
  return atomic_load(&w->iterations);
}

/* ---- Fan-out between members ---- */

static void group_two_members_both_ways(void **unused) {
  (void)unused;
  cluster *c = cluster_start(2, NULL, NULL);
  worker *w = c->workers;
  probe *p0 = subscribe(&w[0], "room");
  probe *p1 = subscribe(&w[1], "room");

  assert_int_equal(send_from_member(&w[1], (outgoing){.topic = "room", .payload = "from-1"}), HARK_OK);
  sync_all(w, c->count, &w[1]);
  assert_int_equal(p0->received, 1);
  assert_string_equal(p0->payload, "from-1");
  assert_int_equal(p1->received, 1);

  assert_int_equal(send_from_member(&w[0], (outgoing){.topic = "room", .payload = "from-0"}), HARK_OK);
  sync_all(w, c->count, &w[0]);
  assert_int_equal(p0->received, 2);
  assert_int_equal(p1->received, 2);
  assert_string_equal(p1->payload, "from-0");
  assert_int_equal(p0->wrong_thread, 0);
  assert_int_equal(p1->wrong_thread, 0);

  unsubscribe(&w[0], p0, "room");
  unsubscribe(&w[1], p1, "room");
  cluster_stop(c);
  free(p0);
  free(p1);
}

static void group_broadcast_skips_idle_member(void **unused) {
  (void)unused;
  cluster *c = cluster_start(3, NULL, NULL);
  worker *w = c->workers;
  probe *a0 = subscribe(&w[0], "a");
  probe *a2 = subscribe(&w[2], "a");
  probe *b0 = subscribe(&w[0], "b");

  assert_int_equal(send_from_member(&w[1], (outgoing){.topic = "a", .payload = "one"}), HARK_OK);
  sync_all(w, c->count, &w[1]);
  assert_int_equal(a0->received, 1);
  assert_int_equal(a2->received, 1);
  assert_string_equal(a2->payload, "one");
  assert_int_equal(b0->received, 0);

  /* Member 2 has no subscriber to "b", so a broadcast to it must not wake
   * member 2's loop: each wake-up runs one more loop iteration. */
  int before2 = idle_loop_iterations(&w[2]);
  int before0 = idle_loop_iterations(&w[0]);
  assert_int_equal(send_from_member(&w[1], (outgoing){.topic = "b", .payload = "two"}), HARK_OK);
  sync_through(&w[1], &w[0]);
  assert_int_equal(idle_loop_iterations(&w[2]), before2);
  assert_true(idle_loop_iterations(&w[0]) > before0);
  assert_int_equal(b0->received, 1);
  assert_int_equal(a0->received, 1);
  assert_int_equal(a2->received, 1);

  unsubscribe(&w[0], a0, "a");
  unsubscribe(&w[2], a2, "a");
  unsubscribe(&w[0], b0, "b");
  cluster_stop(c);
  free(a0);
  free(a2);
  free(b0);
}

/* Member 0 without an adapter has no other nodes to send to, so with no
 * subscriber it must not be woken either. */
static void group_broadcast_skips_idle_member0(void **unused) {
  (void)unused;
  cluster *c = cluster_start(3, NULL, NULL);
  worker *w = c->workers;
  probe *p2 = subscribe(&w[2], "a");

  int before0 = idle_loop_iterations(&w[0]);
  assert_int_equal(send_from_member(&w[1], (outgoing){.topic = "a", .payload = "one"}), HARK_OK);
  sync_through(&w[1], &w[2]);
  assert_int_equal(p2->received, 1);
  assert_int_equal(idle_loop_iterations(&w[0]), before0);

  unsubscribe(&w[2], p2, "a");
  cluster_stop(c);
  free(p2);
}

static void group_broadcast_from_skips_sender(void **unused) {
  (void)unused;
  cluster *c = cluster_start(3, NULL, NULL);
  worker *w = c->workers;
  probe *sender = subscribe(&w[1], "room");
  probe *neighbor = subscribe(&w[1], "room");
  probe *p0 = subscribe(&w[0], "room");
  probe *p2 = subscribe(&w[2], "room");

  outgoing s = {.kind = SEND_FROM, .topic = "room", .payload = "hi", .from = &sender->sub};
  assert_int_equal(send_from_member(&w[1], s), HARK_OK);
  sync_all(w, c->count, &w[1]);
  assert_int_equal(sender->received, 0);
  assert_int_equal(neighbor->received, 1);
  assert_int_equal(p0->received, 1);
  assert_int_equal(p2->received, 1);

  unsubscribe(&w[1], sender, "room");
  unsubscribe(&w[1], neighbor, "room");
  unsubscribe(&w[0], p0, "room");
  unsubscribe(&w[2], p2, "room");
  cluster_stop(c);
  free(sender);
  free(neighbor);
  free(p0);
  free(p2);
}

/* ---- Per-sender order ---- */

#define ORDERED_MESSAGES 1000

static void send_many_on_thread(worker *w, void *arg) {
  int *failures = arg;
  for (unsigned seq = 0; seq < ORDERED_MESSAGES; seq++) {
    char payload[32];
    snprintf(payload, sizeof payload, "%u:%u", w->index, seq);
    hark_message msg = {.event = "ev", .event_len = 2, .payload = payload,
                        .payload_len = strlen(payload)};
    if (hark_pubsub_broadcast(w->ps, TOPIC("seq"), &msg, NULL) != HARK_OK) (*failures)++;
  }
}

static void group_keeps_per_sender_order(void **unused) {
  (void)unused;
  cluster *c = cluster_start(3, NULL, NULL);
  worker *w = c->workers;
  probe *p0 = subscribe(&w[0], "seq");

  /* Members 1 and 2 send at the same time, so their messages interleave on
   * member 0. Each sender's own messages must stay in order. */
  int failures1 = 0, failures2 = 0;
  call *send1 = run_on_async(&w[1], send_many_on_thread, &failures1);
  call *send2 = run_on_async(&w[2], send_many_on_thread, &failures2);
  call_wait(send1);
  call_wait(send2);
  sync_through(&w[1], &w[0]);
  sync_through(&w[2], &w[0]);
  assert_int_equal(failures1, 0);
  assert_int_equal(failures2, 0);

  assert_int_equal(p0->received, 2 * ORDERED_MESSAGES);
  assert_int_equal(p0->seen_count, 2 * ORDERED_MESSAGES);
  int next[3] = {0, 0, 0};
  for (int i = 0; i < p0->seen_count; i++) {
    int sender = p0->seen[i] / 100000;
    int seq = p0->seen[i] % 100000;
    assert_in_range(sender, 1, 2);
    assert_int_equal(seq, next[sender]);
    next[sender]++;
  }
  assert_int_equal(next[1], ORDERED_MESSAGES);
  assert_int_equal(next[2], ORDERED_MESSAGES);

  unsubscribe(&w[0], p0, "seq");
  cluster_stop(c);
  free(p0);
}

/* ---- Member 0's adapter ---- */

typedef enum adapter_event { EV_BROADCAST, EV_DIRECT, EV_ADDED, EV_REMOVED } adapter_event;

#define MAX_EVENTS 64

typedef struct record {
  adapter_event kind;
  char topic[32];
  char node[32];
  char payload[32];
  char dispatcher[32];
} record;

/* Records every adapter call. The adapter runs on member 0's thread, and the
 * main thread reads the records after a sync, under the lock. */
typedef struct recorder {
  pthread_mutex_t lock;
  int count;
  record records[MAX_EVENTS];
  uv_thread_t owner;
  int wrong_thread;
  int attached;
  int destroyed;
} recorder;

static void recorder_add(recorder *r, adapter_event kind, const char *topic, size_t topic_len,
                         const char *node, const hark_message *msg, const char *dispatcher) {
  uv_thread_t self = uv_thread_self();
  pthread_mutex_lock(&r->lock);
  if (r->attached && !uv_thread_equal(&self, &r->owner)) r->wrong_thread++;
  if (r->count < MAX_EVENTS) {
    record *rec = &r->records[r->count++];
    memset(rec, 0, sizeof *rec);
    rec->kind = kind;
    copy_bytes(rec->topic, sizeof rec->topic, topic, topic_len);
    if (node) copy_bytes(rec->node, sizeof rec->node, node, strlen(node));
    if (msg) copy_bytes(rec->payload, sizeof rec->payload, msg->payload, msg->payload_len);
    if (dispatcher) copy_bytes(rec->dispatcher, sizeof rec->dispatcher, dispatcher, strlen(dispatcher));
  }
  pthread_mutex_unlock(&r->lock);
}

static int rec_broadcast(void *ctx, const char *topic, size_t topic_len, const hark_message *msg,
                         const char *dispatcher_name) {
  recorder_add(ctx, EV_BROADCAST, topic, topic_len, NULL, msg, dispatcher_name);
  return 0;
}

static int rec_direct(void *ctx, const char *node_name, const char *topic, size_t topic_len,
                      const hark_message *msg, const char *dispatcher_name) {
  recorder_add(ctx, EV_DIRECT, topic, topic_len, node_name, msg, dispatcher_name);
  return 0;
}

static void rec_added(void *ctx, const char *topic, size_t topic_len) {
  recorder_add(ctx, EV_ADDED, topic, topic_len, NULL, NULL, NULL);
}

static void rec_removed(void *ctx, const char *topic, size_t topic_len) {
  recorder_add(ctx, EV_REMOVED, topic, topic_len, NULL, NULL, NULL);
}

static void rec_attach(void *ctx, hark_pubsub *ps) {
  recorder *r = ctx;
  (void)ps;
  pthread_mutex_lock(&r->lock);
  r->owner = uv_thread_self();
  r->attached++;
  pthread_mutex_unlock(&r->lock);
}

static void rec_destroy(void *ctx) {
  recorder *r = ctx;
  pthread_mutex_lock(&r->lock);
  r->destroyed++;
  pthread_mutex_unlock(&r->lock);
}

static recorder *recorder_new(hark_pubsub_adapter *adapter) {
  recorder *r = calloc(1, sizeof *r);
  assert_non_null(r);
  pthread_mutex_init(&r->lock, NULL);
  *adapter = (hark_pubsub_adapter){.name = "recorder",
                                   .ctx = r,
                                   .broadcast = rec_broadcast,
                                   .direct_broadcast = rec_direct,
                                   .topic_added = rec_added,
                                   .topic_removed = rec_removed,
                                   .attach = rec_attach,
                                   .destroy = rec_destroy};
  return r;
}

static void recorder_free(recorder *r) {
  pthread_mutex_destroy(&r->lock);
  free(r);
}

/* Copies the records out under the lock and returns how many there are. */
static int recorder_snapshot(recorder *r, record *out) {
  pthread_mutex_lock(&r->lock);
  int count = r->count;
  memcpy(out, r->records, sizeof r->records);
  pthread_mutex_unlock(&r->lock);
  return count;
}

static int count_kind(const record *records, int count, adapter_event kind) {
  int n = 0;
  for (int i = 0; i < count; i++)
    if (records[i].kind == kind) n++;
  return n;
}

static void group_uplinks_to_member0_adapter(void **unused) {
  (void)unused;
  hark_pubsub_adapter adapter;
  recorder *r = recorder_new(&adapter);
  cluster *c = cluster_start(3, &adapter, NULL);
  worker *w = c->workers;
  record records[MAX_EVENTS];
  probe *p0 = subscribe(&w[0], "room");
  sync_through(&w[0], &w[0]);
  int base = recorder_snapshot(r, records);
  assert_int_equal(base, 1);
  assert_int_equal(records[0].kind, EV_ADDED);

  /* A broadcast on member 1 goes to the other nodes through member 0. */
  assert_int_equal(send_from_member(&w[1], (outgoing){.topic = "room", .payload = "up"}), HARK_OK);
  sync_through(&w[1], &w[0]);
  assert_int_equal(recorder_snapshot(r, records), base + 1);
  assert_int_equal(records[base].kind, EV_BROADCAST);
  assert_string_equal(records[base].topic, "room");
  assert_string_equal(records[base].payload, "up");
  assert_string_equal(records[base].dispatcher, "default");
  assert_int_equal(p0->received, 1);

  /* A direct broadcast to another node goes to the adapter only. */
  outgoing direct = {.kind = SEND_DIRECT, .topic = "room", .payload = "dm", .node_name = "node-b"};
  assert_int_equal(send_from_member(&w[2], direct), HARK_OK);
  sync_through(&w[2], &w[0]);
  assert_int_equal(recorder_snapshot(r, records), base + 2);
  assert_int_equal(records[base + 1].kind, EV_DIRECT);
  assert_string_equal(records[base + 1].node, "node-b");
  assert_string_equal(records[base + 1].topic, "room");
  assert_string_equal(records[base + 1].payload, "dm");
  assert_string_equal(records[base + 1].dispatcher, "default");
  assert_int_equal(p0->received, 1);

  /* This node's own name delivers on every member, without the adapter. */
  direct.node_name = NODE;
  direct.payload = "self";
  assert_int_equal(send_from_member(&w[1], direct), HARK_OK);
  sync_through(&w[1], &w[0]);
  assert_int_equal(p0->received, 2);
  assert_string_equal(p0->payload, "self");

  /* A local broadcast reaches the other members but not the other nodes. */
  assert_int_equal(send_from_member(&w[2], (outgoing){.kind = SEND_LOCAL, .topic = "room",
                                                  .payload = "local"}),
                   HARK_OK);
  sync_through(&w[2], &w[0]);
  assert_int_equal(p0->received, 3);
  assert_string_equal(p0->payload, "local");

  /* A broadcast on member 0 itself calls the adapter directly, once. */
  assert_int_equal(send_from_member(&w[0], (outgoing){.topic = "room", .payload = "home"}), HARK_OK);
  sync_all(w, c->count, &w[0]);
  int count = recorder_snapshot(r, records);
  assert_int_equal(count, base + 3);
  assert_int_equal(records[base + 2].kind, EV_BROADCAST);
  assert_string_equal(records[base + 2].payload, "home");
  assert_int_equal(count_kind(records, count, EV_BROADCAST), 2);
  assert_int_equal(count_kind(records, count, EV_DIRECT), 1);
  assert_int_equal(r->wrong_thread, 0);

  unsubscribe(&w[0], p0, "room");
  cluster_stop(c);
  assert_int_equal(r->attached, 1);
  assert_int_equal(r->destroyed, 1);
  recorder_free(r);
  free(p0);
}

/* Counts its calls; registered on no member, so other members cannot find
 * it by name. */
static atomic_int unregistered_calls;

static void unregistered_dispatch(void *ctx, const char *topic, size_t topic_len,
                                  const hark_dispatch_entry *entries, size_t count,
                                  const hark_subscriber *from, const hark_message *msg) {
  (void)ctx;
  (void)topic;
  (void)topic_len;
  (void)entries;
  (void)count;
  (void)from;
  (void)msg;
  atomic_fetch_add(&unregistered_calls, 1);
}

static const hark_dispatcher unregistered = {.name = "unregistered",
                                             .dispatch = unregistered_dispatch};

/* A direct broadcast to another node never reaches this node's subscribers,
 * whatever dispatcher it names. */
static void group_direct_skips_local_subscribers(void **unused) {
  (void)unused;
  hark_pubsub_adapter adapter;
  recorder *r = recorder_new(&adapter);
  cluster *c = cluster_start(2, &adapter, NULL);
  worker *w = c->workers;
  probe *p0 = subscribe(&w[0], "room");
  probe *p1 = subscribe(&w[1], "room");
  atomic_store(&unregistered_calls, 0);

  outgoing direct = {.kind = SEND_DIRECT, .topic = "room", .payload = "dm", .node_name = "node-b"};
  assert_int_equal(send_from_member(&w[1], direct), HARK_OK);
  direct.dispatcher = &unregistered;
  send_from_member(&w[1], direct);
  sync_all(w, c->count, &w[1]);
  assert_int_equal(p0->received, 0);
  assert_int_equal(p1->received, 0);
  assert_int_equal(atomic_load(&unregistered_calls), 0);

  unsubscribe(&w[0], p0, "room");
  unsubscribe(&w[1], p1, "room");
  cluster_stop(c);
  recorder_free(r);
  free(p0);
  free(p1);
}

static void group_local_broadcast_reaches_members(void **unused) {
  (void)unused;
  hark_pubsub_adapter adapter;
  recorder *r = recorder_new(&adapter);
  cluster *c = cluster_start(3, &adapter, NULL);
  worker *w = c->workers;
  probe *p0 = subscribe(&w[0], "room");
  probe *p1 = subscribe(&w[1], "room");
  probe *p2 = subscribe(&w[2], "room");

  outgoing s = {.kind = SEND_LOCAL, .topic = "room", .payload = "local"};
  assert_int_equal(send_from_member(&w[1], s), HARK_OK);
  sync_all(w, c->count, &w[1]);
  assert_int_equal(p0->received, 1);
  assert_int_equal(p1->received, 1);
  assert_int_equal(p2->received, 1);
  assert_string_equal(p2->payload, "local");

  record records[MAX_EVENTS];
  int count = recorder_snapshot(r, records);
  assert_int_equal(count_kind(records, count, EV_BROADCAST), 0);
  assert_int_equal(count_kind(records, count, EV_DIRECT), 0);

  unsubscribe(&w[0], p0, "room");
  unsubscribe(&w[1], p1, "room");
  unsubscribe(&w[2], p2, "room");
  cluster_stop(c);
  recorder_free(r);
  free(p0);
  free(p1);
  free(p2);
}

/* Returns the adapter's topic events after every member has run what it
 * sent member 0. */
static int topic_events(cluster *c, recorder *r, record *records, adapter_event kind) {
  for (unsigned i = 0; i < c->count; i++) sync_through(&c->workers[i], &c->workers[0]);
  return count_kind(records, recorder_snapshot(r, records), kind);
}

static void group_topic_hooks_follow_node(void **unused) {
  (void)unused;
  hark_pubsub_adapter adapter;
  recorder *r = recorder_new(&adapter);
  cluster *c = cluster_start(3, &adapter, NULL);
  worker *w = c->workers;
  record records[MAX_EVENTS];

  probe *p1 = subscribe(&w[1], "t");
  assert_int_equal(topic_events(c, r, records, EV_ADDED), 1);
  assert_string_equal(records[0].topic, "t");
  probe *p2 = subscribe(&w[2], "t");
  probe *p0 = subscribe(&w[0], "t");
  probe *p1b = subscribe(&w[1], "t");
  assert_int_equal(topic_events(c, r, records, EV_ADDED), 1);
  assert_int_equal(topic_events(c, r, records, EV_REMOVED), 0);

  unsubscribe(&w[1], p1, "t");
  unsubscribe(&w[0], p0, "t");
  unsubscribe(&w[1], p1b, "t");
  assert_int_equal(topic_events(c, r, records, EV_REMOVED), 0);
  unsubscribe(&w[2], p2, "t");
  assert_int_equal(topic_events(c, r, records, EV_REMOVED), 1);
  int count = recorder_snapshot(r, records);
  assert_int_equal(count, 2);
  assert_int_equal(records[1].kind, EV_REMOVED);
  assert_string_equal(records[1].topic, "t");

  /* The node may gain the topic again. */
  probe *again = subscribe(&w[2], "t");
  assert_int_equal(topic_events(c, r, records, EV_ADDED), 2);
  unsubscribe(&w[2], again, "t");
  assert_int_equal(topic_events(c, r, records, EV_REMOVED), 2);
  assert_int_equal(r->wrong_thread, 0);

  cluster_stop(c);
  recorder_free(r);
  free(p0);
  free(p1);
  free(p1b);
  free(p2);
  free(again);
}

/* ---- Options and joins, on the main thread ---- */

static void group_rejects_adapter_on_member1(void **unused) {
  (void)unused;
  hark_pubsub_group *group;
  assert_int_equal(hark_pubsub_group_create(&group, 2), HARK_OK);
  hark_pubsub_adapter adapter;
  recorder *r = recorder_new(&adapter);
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);

  hark_pubsub *ps = NULL;
  hark_pubsub_options options = {
      .node_name = NODE, .adapter = &adapter, .group = group, .group_member = 1};
  assert_int_equal(hark_pubsub_create(&ps, &loop, &options), HARK_EINVAL);
  assert_null(ps);
  assert_int_equal(r->attached, 0);

  /* Member 1 is still free for an instance without an adapter. */
  options.adapter = NULL;
  assert_int_equal(hark_pubsub_create(&ps, &loop, &options), HARK_OK);
  assert_ptr_equal(hark_pubsub_group_of(ps), group);
  assert_int_equal(hark_pubsub_group_member(ps), 1);
  hark_pubsub_destroy(ps);

  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&loop), 0);
  hark_pubsub_group_destroy(group);
  recorder_free(r);
}

static void group_rejects_bad_joins(void **unused) {
  (void)unused;
  hark_pubsub_group *group;
  assert_int_equal(hark_pubsub_group_create(&group, 2), HARK_OK);
  uv_loop_t loop_a, loop_b;
  assert_int_equal(uv_loop_init(&loop_a), 0);
  assert_int_equal(uv_loop_init(&loop_b), 0);

  hark_pubsub *first = NULL, *second = NULL;
  hark_pubsub_options options = {.node_name = NODE, .group = group, .group_member = 0};
  assert_int_equal(hark_pubsub_create(&first, &loop_a, &options), HARK_OK);
  assert_int_equal(hark_pubsub_create(&second, &loop_b, &options), HARK_EEXIST);
  assert_null(second);

  options.group_member = 2;
  assert_int_equal(hark_pubsub_create(&second, &loop_b, &options), HARK_EINVAL);
  assert_null(second);

  /* Posts to a member without an instance, or to no member, fail. */
  latch never;
  latch_init(&never);
  assert_int_equal(hark_pubsub_group_post(group, 1, latch_add_call, &never), HARK_EINVAL);
  assert_int_equal(hark_pubsub_group_post(group, 2, latch_add_call, &never), HARK_EINVAL);
  assert_int_equal(never.count, 0);
  latch_destroy(&never);

  hark_pubsub_destroy(first);
  assert_int_equal(uv_run(&loop_a, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&loop_a), 0);
  assert_int_equal(uv_loop_close(&loop_b), 0);
  hark_pubsub_group_destroy(group);

  hark_pubsub_group *none = NULL;
  assert_int_equal(hark_pubsub_group_create(&none, 0), HARK_EINVAL);
  assert_int_equal(hark_pubsub_group_create(&none, 65), HARK_EINVAL);
  assert_null(none);
}

/* ---- A dispatcher that shares one value per broadcast ---- */

/* The shared value: what an encoder would build once per broadcast. */
typedef struct encoded {
  int serial;
} encoded;

static atomic_int computed;
static atomic_int released;
static atomic_int lost_races;
static atomic_int cacheless;

static void release_encoded(void *value) {
  atomic_fetch_add(&released, 1);
  free(value);
}

/* Returns the broadcast's shared value, building it when no member has.
 * A member that loses the race to store its value frees its own. */
static encoded *shared_value(const hark_message *msg) {
  if (msg->cache == NULL) {
    atomic_fetch_add(&cacheless, 1);
    return NULL;
  }
  void *current = atomic_load(&msg->cache->slots[0]);
  if (current != NULL) return current;

  /* This runs on a member's thread, where a cmocka failure cannot unwind. */
  encoded *mine = malloc(sizeof *mine);
  if (mine == NULL) abort();
  mine->serial = atomic_fetch_add(&computed, 1) + 1;
  void *expected = NULL;
  if (atomic_compare_exchange_strong(&msg->cache->slots[0], &expected, mine)) return mine;
  atomic_fetch_add(&lost_races, 1);
  free(mine);
  return expected;
}

/* Delivers to each probe and stores the serial of the value it used in the
 * probe's payload. */
static void caching_dispatch(void *ctx, const char *topic, size_t topic_len,
                             const hark_dispatch_entry *entries, size_t count,
                             const hark_subscriber *from, const hark_message *msg) {
  (void)ctx;
  encoded *value = shared_value(msg);
  for (size_t i = 0; i < count; i++) {
    if (entries[i].sub == from) continue;
    probe *p = (probe *)entries[i].sub;
    p->received++;
    snprintf(p->payload, sizeof p->payload, "%d", value ? value->serial : -1);
  }
  (void)topic;
  (void)topic_len;
}

static const hark_dispatcher caching = {
    .name = "caching", .dispatch = caching_dispatch, .release = release_encoded};

static void reset_cache_counters(void) {
  atomic_store(&computed, 0);
  atomic_store(&released, 0);
  atomic_store(&lost_races, 0);
  atomic_store(&cacheless, 0);
}

static void group_cache_computed_once(void **unused) {
  (void)unused;
  reset_cache_counters();
  cluster *c = cluster_start(3, NULL, &caching);
  worker *w = c->workers;
  probe *p[3];
  for (int i = 0; i < 3; i++) p[i] = subscribe(&w[i], "room");

  outgoing s = {.topic = "room", .payload = "x", .dispatcher = &caching};
  assert_int_equal(send_from_member(&w[1], s), HARK_OK);
  sync_all(w, c->count, &w[1]);

  /* The sender delivers first, so it builds the value and the others find
   * it. The last member to finish releases it. */
  for (int i = 0; i < 3; i++) {
    assert_int_equal(p[i]->received, 1);
    assert_string_equal(p[i]->payload, "1");
  }
  assert_int_equal(atomic_load(&computed), 1);
  assert_int_equal(atomic_load(&lost_races), 0);
  assert_int_equal(atomic_load(&released), 1);
  assert_int_equal(atomic_load(&cacheless), 0);

  /* Without a subscriber on the sender, the receivers may race to build the
   * value. The loser frees its own value, and the stored one is released
   * once. */
  unsubscribe(&w[1], p[1], "room");
  reset_cache_counters();
  assert_int_equal(send_from_member(&w[1], s), HARK_OK);
  sync_all(w, c->count, &w[1]);
  assert_int_equal(p[0]->received, 2);
  assert_int_equal(p[2]->received, 2);
  assert_string_equal(p[0]->payload, p[2]->payload);
  assert_int_equal(atomic_load(&computed) - atomic_load(&lost_races), 1);
  assert_int_equal(atomic_load(&released), 1);

  unsubscribe(&w[0], p[0], "room");
  unsubscribe(&w[2], p[2], "room");
  cluster_stop(c);
  for (int i = 0; i < 3; i++) free(p[i]);
}

static void group_single_member_has_no_cache(void **unused) {
  (void)unused;
  reset_cache_counters();
  cluster *c = cluster_start(2, NULL, &caching);
  worker *w = c->workers;
  probe *p0 = subscribe(&w[0], "room");

  /* No other member subscribes, so the message is not copied and carries
   * no cache. */
  outgoing s = {.topic = "room", .payload = "x", .dispatcher = &caching};
  assert_int_equal(send_from_member(&w[0], s), HARK_OK);
  assert_int_equal(p0->received, 1);
  assert_string_equal(p0->payload, "-1");
  assert_int_equal(atomic_load(&cacheless), 1);
  assert_int_equal(atomic_load(&released), 0);

  unsubscribe(&w[0], p0, "room");
  cluster_stop(c);
  free(p0);
}

/* ---- Destroying a member with queued messages ---- */

#define QUEUED_MESSAGES 200

typedef struct blocker {
  latch entered;
  latch gate;
  int discards;
} blocker;

static void count_discard(void *arg, int discard) {
  blocker *b = arg;
  if (discard) b->discards++;
}

/* Holds member 0's loop until the gate opens, then destroys the instance
 * while the messages sent meanwhile are still queued. */
static void block_then_destroy(worker *w, void *arg) {
  blocker *b = arg;
  latch_add(&b->entered);
  latch_wait(&b->gate, 1);
  hark_pubsub_destroy(w->ps);
  w->ps = NULL;
  worker_close_handles(w);
}

static void send_queued_on_thread(worker *w, void *arg) {
  int *failures = arg;
  for (int i = 0; i < QUEUED_MESSAGES; i++) {
    hark_message msg = {.event = "ev", .event_len = 2, .payload = "queued", .payload_len = 6};
    if (hark_pubsub_broadcast(w->ps, TOPIC("room"), &msg, &caching) != HARK_OK) (*failures)++;
  }
}

static void group_destroy_frees_queued(void **unused) {
  (void)unused;
  reset_cache_counters();
  cluster *c = cluster_start(2, NULL, &caching);
  worker *w = c->workers;
  probe *p0 = subscribe(&w[0], "room");
  probe *p1 = subscribe(&w[1], "room");

  blocker b = {.discards = 0};
  latch_init(&b.entered);
  latch_init(&b.gate);
  call *hold = run_on_async(&w[0], block_then_destroy, &b);
  latch_wait(&b.entered, 1);

  /* Member 1 delivers each message itself, storing a cached value, and
   * queues a copy for member 0, which is blocked. */
  int failures = 0;
  run_on(&w[1], send_queued_on_thread, &failures);
  assert_int_equal(failures, 0);
  assert_int_equal(p1->received, QUEUED_MESSAGES);
  assert_int_equal(hark_pubsub_group_post(c->group, 0, count_discard, &b), HARK_OK);

  latch_add(&b.gate);
  call_wait(hold);
  assert_int_equal(uv_thread_join(&w[0].thread), 0);
  latch_destroy(&w[0].started);

  /* The queued copies were dropped, and each cached value was released
   * with the last copy. */
  assert_int_equal(p0->received, 0);
  assert_int_equal(b.discards, 1);
  assert_int_equal(atomic_load(&computed), QUEUED_MESSAGES);
  assert_int_equal(atomic_load(&released), QUEUED_MESSAGES);

  /* Member 0 is gone: posts to it fail, and member 1 still delivers. */
  assert_int_equal(hark_pubsub_group_post(c->group, 0, count_discard, &b), HARK_EINVAL);
  run_on(&w[1], send_queued_on_thread, &failures);
  assert_int_equal(failures, 0);
  assert_int_equal(p1->received, 2 * QUEUED_MESSAGES);
  assert_int_equal(atomic_load(&released), atomic_load(&computed));

  unsubscribe(&w[1], p1, "room");
  worker_stop(&w[1]);
  hark_pubsub_group_destroy(c->group);
  free(c);
  latch_destroy(&b.entered);
  latch_destroy(&b.gate);
  free(p0);
  free(p1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(group_two_members_both_ways),
      cmocka_unit_test(group_broadcast_skips_idle_member),
      cmocka_unit_test(group_broadcast_skips_idle_member0),
      cmocka_unit_test(group_broadcast_from_skips_sender),
      cmocka_unit_test(group_keeps_per_sender_order),
      cmocka_unit_test(group_uplinks_to_member0_adapter),
      cmocka_unit_test(group_direct_skips_local_subscribers),
      cmocka_unit_test(group_local_broadcast_reaches_members),
      cmocka_unit_test(group_topic_hooks_follow_node),
      cmocka_unit_test(group_rejects_adapter_on_member1),
      cmocka_unit_test(group_rejects_bad_joins),
      cmocka_unit_test(group_cache_computed_once),
      cmocka_unit_test(group_single_member_has_no_cache),
      cmocka_unit_test(group_destroy_frees_queued),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
