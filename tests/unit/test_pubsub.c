/* Unit tests for the pubsub layer on one node: the Phoenix.PubSub adapter
 * suite (run for pool sizes 1 and 8), option checks, the adapter hooks, and
 * subscribe or unsubscribe calls made from inside a dispatch. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "hark/pubsub.h"

#define TOPIC(s) s, sizeof(s) - 1

/* ---- Fixtures ---- */

typedef struct fixture {
  uv_loop_t loop;
  hark_pubsub *ps;
  unsigned pool_size;
} fixture;

static int setup_with_pool(void **state, unsigned pool_size) {
  fixture *fx = calloc(1, sizeof *fx);
  if (fx == NULL) return -1;
  if (uv_loop_init(&fx->loop) != 0) return -1;

  fx->pool_size = pool_size;
  hark_pubsub_options options = {.node_name = "node-a", .pool_size = pool_size};
  if (hark_pubsub_create(&fx->ps, &fx->loop, &options) != HARK_OK) return -1;
  *state = fx;
  return 0;
}

static int setup_pool1(void **state) { return setup_with_pool(state, 1); }
static int setup_pool8(void **state) { return setup_with_pool(state, 8); }

static int teardown(void **state) {
  fixture *fx = *state;
  hark_pubsub_destroy(fx->ps);
  uv_loop_close(&fx->loop);
  free(fx);
  return 0;
}

/* A subscriber that records what it receives. */
typedef struct probe {
  hark_subscriber sub;
  int received;
  char topic[64];
  char event[64];
  char payload[64];
} probe;

static void copy_bytes(char *out, size_t cap, const char *bytes, size_t len) {
  if (len >= cap) len = cap - 1;
  if (len > 0) memcpy(out, bytes, len);
  out[len] = '\0';
}

static void probe_on_message(hark_subscriber *sub, const char *topic, size_t topic_len,
                             const hark_message *msg) {
  probe *p = (probe *)sub;
  p->received++;
  copy_bytes(p->topic, sizeof p->topic, topic, topic_len);
  copy_bytes(p->event, sizeof p->event, msg->event, msg->event_len);
  copy_bytes(p->payload, sizeof p->payload, msg->payload, msg->payload_len);
}

static void probe_init(probe *p) {
  memset(p, 0, sizeof *p);
  p->sub.on_message = probe_on_message;
}

static const hark_message hello = {
    .event = "new_msg", .event_len = 7, .payload = "{\"body\":\"hi\"}", .payload_len = 13};

/* A dispatcher that records every call and copies the entries it got. */
#define RECORD_MAX 64

typedef struct recorder {
  int calls;
  size_t total;
  hark_dispatch_entry entries[RECORD_MAX];
  const hark_subscriber *from[RECORD_MAX];
  size_t call_sizes[RECORD_MAX];
  char topic[64];
} recorder;

static void record_dispatch(void *ctx, const char *topic, size_t topic_len,
                            const hark_dispatch_entry *entries, size_t count,
                            const hark_subscriber *from, const hark_message *msg) {
  (void)msg;
  recorder *rec = ctx;
  if (rec->calls < RECORD_MAX) {
    rec->from[rec->calls] = from;
    rec->call_sizes[rec->calls] = count;
  }
  rec->calls++;
  for (size_t i = 0; i < count && rec->total < RECORD_MAX; i++) {
    rec->entries[rec->total++] = entries[i];
  }
  copy_bytes(rec->topic, sizeof rec->topic, topic, topic_len);
}

/* ---- Phoenix.PubSub adapter suite ---- */

static void node_name_is_copied(void **state) {
  (void)state;
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  char name[] = "node-copy";
  hark_pubsub_options options = {.node_name = name};
  hark_pubsub *ps = NULL;

  assert_int_equal(hark_pubsub_create(&ps, &loop, &options), HARK_OK);
  name[0] = 'X';
  assert_string_equal(hark_pubsub_node_name(ps), "node-copy");
  assert_ptr_equal(hark_pubsub_loop(ps), &loop);

  hark_pubsub_destroy(ps);
  assert_int_equal(uv_loop_close(&loop), 0);
}

static void subscribe_then_unsubscribe_counts(void **state) {
  fixture *fx = *state;
  probe p;
  probe_init(&p);
  recorder rec = {0};
  hark_dispatcher capture = {.name = "capture", .dispatch = record_dispatch, .ctx = &rec};

  assert_int_equal(hark_pubsub_subscriber_count(fx->ps, TOPIC("room:1")), 0);
  assert_int_equal(hark_pubsub_subscribe(fx->ps, &p.sub, TOPIC("room:1"), NULL), HARK_OK);
  assert_int_equal(hark_pubsub_subscriber_count(fx->ps, TOPIC("room:1")), 1);

  assert_int_equal(hark_pubsub_local_broadcast(fx->ps, TOPIC("room:1"), &hello, &capture), 0);
  assert_int_equal(rec.total, 1);
  assert_ptr_equal(rec.entries[0].sub, &p.sub);
  assert_null(rec.entries[0].metadata);

  hark_pubsub_unsubscribe(fx->ps, &p.sub, TOPIC("room:1"));
  assert_int_equal(hark_pubsub_subscriber_count(fx->ps, TOPIC("room:1")), 0);
  assert_null(p.sub.internal_);
}

static void broadcast_delivers_to_subscriber(void **state) {
  fixture *fx = *state;
  probe p;
  probe_init(&p);
  assert_int_equal(hark_pubsub_subscribe(fx->ps, &p.sub, TOPIC("room:1"), NULL), HARK_OK);

  assert_int_equal(hark_pubsub_broadcast(fx->ps, TOPIC("room:1"), &hello, NULL), HARK_OK);
  assert_int_equal(p.received, 1);
  assert_string_equal(p.topic, "room:1");
  assert_string_equal(p.event, "new_msg");
  assert_string_equal(p.payload, "{\"body\":\"hi\"}");

  assert_int_equal(hark_pubsub_broadcast(fx->ps, TOPIC("room:1"), &hello, NULL), HARK_OK);
  assert_int_equal(p.received, 2);
  hark_pubsub_unsubscribe_all(fx->ps, &p.sub);
}

static void broadcast_skips_other_topics(void **state) {
  fixture *fx = *state;
  probe in_room1;
  probe in_room2;
  probe_init(&in_room1);
  probe_init(&in_room2);
  assert_int_equal(hark_pubsub_subscribe(fx->ps, &in_room1.sub, TOPIC("room:1"), NULL), HARK_OK);
  assert_int_equal(hark_pubsub_subscribe(fx->ps, &in_room2.sub, TOPIC("room:2"), NULL), HARK_OK);

  assert_int_equal(hark_pubsub_broadcast(fx->ps, TOPIC("room:1"), &hello, NULL), HARK_OK);
  assert_int_equal(in_room1.received, 1);
  assert_int_equal(in_room2.received, 0);

  /* A topic that is a prefix of another is a different topic. */
  assert_int_equal(hark_pubsub_broadcast(fx->ps, TOPIC("room:"), &hello, NULL), HARK_OK);
  assert_int_equal(in_room1.received, 1);
  assert_int_equal(in_room2.received, 0);

  hark_pubsub_unsubscribe_all(fx->ps, &in_room1.sub);
  hark_pubsub_unsubscribe_all(fx->ps, &in_room2.sub);
}

static void broadcast_from_skips_sender(void **state) {
  fixture *fx = *state;
  probe sender;
  probe other;
  probe_init(&sender);
  probe_init(&other);
  assert_int_equal(hark_pubsub_subscribe(fx->ps, &sender.sub, TOPIC("room:1"), NULL), HARK_OK);
  assert_int_equal(hark_pubsub_subscribe(fx->ps, &other.sub, TOPIC("room:1"), NULL), HARK_OK);

  assert_int_equal(
      hark_pubsub_broadcast_from(fx->ps, &sender.sub, TOPIC("room:1"), &hello, NULL), HARK_OK);
  assert_int_equal(sender.received, 0);
  assert_int_equal(other.received, 1);

  hark_pubsub_unsubscribe_all(fx->ps, &sender.sub);
  hark_pubsub_unsubscribe_all(fx->ps, &other.sub);
}

static void unsubscribe_unknown_topic_is_noop(void **state) {
  fixture *fx = *state;
  probe p;
  probe_init(&p);

  hark_pubsub_unsubscribe(fx->ps, &p.sub, TOPIC("never"));
  assert_int_equal(hark_pubsub_subscriber_count(fx->ps, TOPIC("never")), 0);
  assert_null(p.sub.internal_);

  /* Also when the subscriber is subscribed to something else. */
  assert_int_equal(hark_pubsub_subscribe(fx->ps, &p.sub, TOPIC("room:1"), NULL), HARK_OK);
  hark_pubsub_unsubscribe(fx->ps, &p.sub, TOPIC("never"));
  assert_int_equal(hark_pubsub_subscriber_count(fx->ps, TOPIC("never")), 0);
  assert_int_equal(hark_pubsub_subscriber_count(fx->ps, TOPIC("room:1")), 1);
  hark_pubsub_unsubscribe_all(fx->ps, &p.sub);
}

static void direct_broadcast_to_self_delivers(void **state) {
  fixture *fx = *state;
  probe p;
  probe_init(&p);
  assert_int_equal(hark_pubsub_subscribe(fx->ps, &p.sub, TOPIC("room:1"), NULL), HARK_OK);

  assert_int_equal(hark_pubsub_direct_broadcast(fx->ps, "node-a", TOPIC("room:1"), &hello, NULL),
                   HARK_OK);
  assert_int_equal(p.received, 1);
  hark_pubsub_unsubscribe_all(fx->ps, &p.sub);
}

static void direct_broadcast_to_unknown_drops(void **state) {
  fixture *fx = *state;
  probe p;
  probe_init(&p);
  assert_int_equal(hark_pubsub_subscribe(fx->ps, &p.sub, TOPIC("room:1"), NULL), HARK_OK);

  assert_int_equal(
      hark_pubsub_direct_broadcast(fx->ps, "node-unknown", TOPIC("room:1"), &hello, NULL),
      HARK_OK);
  assert_int_equal(p.received, 0);
  hark_pubsub_unsubscribe_all(fx->ps, &p.sub);
}

static void local_broadcast_delivers(void **state) {
  fixture *fx = *state;
  probe p;
  probe_init(&p);
  assert_int_equal(hark_pubsub_subscribe(fx->ps, &p.sub, TOPIC("room:1"), NULL), HARK_OK);

  assert_int_equal(hark_pubsub_local_broadcast(fx->ps, TOPIC("room:1"), &hello, NULL), HARK_OK);
  assert_int_equal(p.received, 1);
  assert_string_equal(p.event, "new_msg");
  hark_pubsub_unsubscribe_all(fx->ps, &p.sub);
}

static void local_broadcast_from_skips_sender(void **state) {
  fixture *fx = *state;
  probe sender;
  probe other;
  probe_init(&sender);
  probe_init(&other);
  assert_int_equal(hark_pubsub_subscribe(fx->ps, &sender.sub, TOPIC("room:1"), NULL), HARK_OK);
  assert_int_equal(hark_pubsub_subscribe(fx->ps, &other.sub, TOPIC("room:1"), NULL), HARK_OK);

  assert_int_equal(
      hark_pubsub_local_broadcast_from(fx->ps, &sender.sub, TOPIC("room:1"), &hello, NULL),
      HARK_OK);
  assert_int_equal(sender.received, 0);
  assert_int_equal(other.received, 1);

  hark_pubsub_unsubscribe_all(fx->ps, &sender.sub);
  hark_pubsub_unsubscribe_all(fx->ps, &other.sub);
}

/* Checks that one call of the recorder saw both entries of `sub`. */
static void assert_both_entries(const recorder *rec, const hark_subscriber *sub, void *special,
                                const hark_subscriber *expected_from) {
  assert_int_equal(rec->calls, 1);
  assert_int_equal(rec->total, 2);
  assert_ptr_equal(rec->from[0], expected_from);
  assert_ptr_equal(rec->entries[0].sub, sub);
  assert_ptr_equal(rec->entries[1].sub, sub);

  int saw_null = rec->entries[0].metadata == NULL || rec->entries[1].metadata == NULL;
  int saw_special = rec->entries[0].metadata == special || rec->entries[1].metadata == special;
  assert_true(saw_null);
  assert_true(saw_special);
}

static void custom_dispatcher_gets_both_entries(void **state) {
  fixture *fx = *state;
  probe p;
  probe_init(&p);
  int special = 0;
  recorder rec = {0};
  hark_dispatcher custom = {.name = "custom", .dispatch = record_dispatch, .ctx = &rec};
  assert_int_equal(hark_pubsub_register_dispatcher(fx->ps, &custom), HARK_OK);
  assert_int_equal(hark_pubsub_subscribe(fx->ps, &p.sub, TOPIC("room:1"), NULL), HARK_OK);
  assert_int_equal(hark_pubsub_subscribe(fx->ps, &p.sub, TOPIC("room:1"), &special), HARK_OK);

  assert_int_equal(hark_pubsub_broadcast(fx->ps, TOPIC("room:1"), &hello, &custom), HARK_OK);
  assert_both_entries(&rec, &p.sub, &special, NULL);
  assert_string_equal(rec.topic, "room:1");

  memset(&rec, 0, sizeof rec);
  assert_int_equal(hark_pubsub_broadcast_from(fx->ps, &p.sub, TOPIC("room:1"), &hello, &custom),
                   HARK_OK);
  assert_both_entries(&rec, &p.sub, &special, &p.sub);

  memset(&rec, 0, sizeof rec);
  assert_int_equal(hark_pubsub_local_broadcast(fx->ps, TOPIC("room:1"), &hello, &custom), HARK_OK);
  assert_both_entries(&rec, &p.sub, &special, NULL);

  memset(&rec, 0, sizeof rec);
  assert_int_equal(
      hark_pubsub_local_broadcast_from(fx->ps, &p.sub, TOPIC("room:1"), &hello, &custom), HARK_OK);
  assert_both_entries(&rec, &p.sub, &special, &p.sub);

  memset(&rec, 0, sizeof rec);
  assert_int_equal(hark_pubsub_direct_broadcast(fx->ps, "node-a", TOPIC("room:1"), &hello, &custom),
                   HARK_OK);
  assert_both_entries(&rec, &p.sub, &special, NULL);

  /* The default dispatcher delivers once per entry. */
  assert_int_equal(hark_pubsub_broadcast(fx->ps, TOPIC("room:1"), &hello, NULL), HARK_OK);
  assert_int_equal(p.received, 2);

  hark_pubsub_unsubscribe(fx->ps, &p.sub, TOPIC("room:1"));
  assert_int_equal(hark_pubsub_subscriber_count(fx->ps, TOPIC("room:1")), 0);
}

/* ---- Pool size and partitions ---- */

static void pool_size_is_reported(void **state) {
  (void)state;
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  const unsigned requested[] = {0, 1, 3, 8};
  const unsigned expected[] = {1, 1, 3, 8};

  for (size_t i = 0; i < sizeof requested / sizeof requested[0]; i++) {
    hark_pubsub_options options = {.node_name = "node-a", .pool_size = requested[i]};
    hark_pubsub *ps = NULL;
    assert_int_equal(hark_pubsub_create(&ps, &loop, &options), HARK_OK);
    assert_int_equal(hark_pubsub_pool_size(ps), expected[i]);
    hark_pubsub_destroy(ps);
  }
  assert_int_equal(uv_loop_close(&loop), 0);
}

static void dispatch_runs_once_per_partition(void **state) {
  fixture *fx = *state;
  enum { N = 48 };
  probe probes[N];
  recorder rec = {0};
  hark_dispatcher custom = {.name = "custom", .dispatch = record_dispatch, .ctx = &rec};
  for (int i = 0; i < N; i++) {
    probe_init(&probes[i]);
    assert_int_equal(hark_pubsub_subscribe(fx->ps, &probes[i].sub, TOPIC("room:1"), NULL), HARK_OK);
  }

  assert_int_equal(hark_pubsub_local_broadcast(fx->ps, TOPIC("room:1"), &hello, &custom), HARK_OK);
  assert_int_equal(rec.total, N);
  assert_in_range(rec.calls, 1, fx->pool_size);
  if (fx->pool_size == 1) assert_int_equal(rec.calls, 1);
  /* 48 subscribers over 8 partitions all landing in one is practically
   * impossible with a working hash. */
  if (fx->pool_size == 8) assert_true(rec.calls > 1);

  size_t sum = 0;
  for (int c = 0; c < rec.calls; c++) {
    assert_true(rec.call_sizes[c] > 0);
    sum += rec.call_sizes[c];
  }
  assert_int_equal(sum, N);

  for (int i = 0; i < N; i++) hark_pubsub_unsubscribe_all(fx->ps, &probes[i].sub);
}

/* ---- Options ---- */

static void create_rejects_invalid_options(void **state) {
  (void)state;
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  hark_pubsub *sentinel = (hark_pubsub *)&loop;
  hark_pubsub *ps = sentinel;

  hark_pubsub_options no_name = {.node_name = NULL};
  assert_int_equal(hark_pubsub_create(&ps, &loop, &no_name), HARK_EINVAL);
  assert_ptr_equal(ps, sentinel);

  hark_pubsub_options empty_name = {.node_name = ""};
  assert_int_equal(hark_pubsub_create(&ps, &loop, &empty_name), HARK_EINVAL);
  assert_ptr_equal(ps, sentinel);

  hark_pubsub_options good = {.node_name = "node-a"};
  assert_int_equal(hark_pubsub_create(&ps, NULL, &good), HARK_EINVAL);
  assert_int_equal(hark_pubsub_create(&ps, &loop, NULL), HARK_EINVAL);
  assert_int_equal(hark_pubsub_create(NULL, &loop, &good), HARK_EINVAL);
  assert_ptr_equal(ps, sentinel);

  hark_pubsub_options huge_pool = {.node_name = "node-a", .pool_size = 1u << 20};
  assert_int_equal(hark_pubsub_create(&ps, &loop, &huge_pool), HARK_EINVAL);
  assert_ptr_equal(ps, sentinel);

  assert_int_equal(uv_loop_close(&loop), 0);
}

static int noop_broadcast(void *ctx, const char *topic, size_t topic_len, const hark_message *msg,
                          const char *dispatcher_name) {
  (void)ctx, (void)topic, (void)topic_len, (void)msg, (void)dispatcher_name;
  return 0;
}

static void create_rejects_incomplete_adapter(void **state) {
  (void)state;
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  hark_pubsub *ps = NULL;

  /* The two broadcast callbacks are required; the hooks are not. */
  hark_pubsub_adapter adapter = {.name = "half", .broadcast = noop_broadcast};
  hark_pubsub_options options = {.node_name = "node-a", .adapter = &adapter};
  assert_int_equal(hark_pubsub_create(&ps, &loop, &options), HARK_EINVAL);
  assert_null(ps);

  assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- Dispatcher registry ---- */

static void dispatcher_registry_rules(void **state) {
  fixture *fx = *state;
  recorder rec = {0};
  hark_dispatcher custom = {.name = "custom", .dispatch = record_dispatch, .ctx = &rec};
  hark_dispatcher same_name = custom;
  hark_dispatcher no_name = {.name = NULL, .dispatch = record_dispatch};
  hark_dispatcher empty_name = {.name = "", .dispatch = record_dispatch};
  hark_dispatcher no_function = {.name = "nothing"};

  const hark_dispatcher *builtin = hark_pubsub_find_dispatcher(fx->ps, "default");
  assert_non_null(builtin);
  assert_string_equal(builtin->name, "default");

  assert_int_equal(hark_pubsub_register_dispatcher(fx->ps, &custom), HARK_OK);
  assert_ptr_equal(hark_pubsub_find_dispatcher(fx->ps, "custom"), &custom);
  assert_int_equal(hark_pubsub_register_dispatcher(fx->ps, &same_name), HARK_EEXIST);
  assert_int_equal(hark_pubsub_register_dispatcher(fx->ps, &no_name), HARK_EINVAL);
  assert_int_equal(hark_pubsub_register_dispatcher(fx->ps, &empty_name), HARK_EINVAL);
  assert_int_equal(hark_pubsub_register_dispatcher(fx->ps, &no_function), HARK_EINVAL);
  assert_null(hark_pubsub_find_dispatcher(fx->ps, "missing"));
}

static void local_dispatch_uses_named_dispatcher(void **state) {
  fixture *fx = *state;
  probe p;
  probe_init(&p);
  recorder rec = {0};
  hark_dispatcher custom = {.name = "custom", .dispatch = record_dispatch, .ctx = &rec};
  assert_int_equal(hark_pubsub_register_dispatcher(fx->ps, &custom), HARK_OK);
  assert_int_equal(hark_pubsub_subscribe(fx->ps, &p.sub, TOPIC("room:1"), NULL), HARK_OK);

  assert_int_equal(hark_pubsub_local_dispatch(fx->ps, TOPIC("room:1"), &hello, "custom"), HARK_OK);
  assert_int_equal(rec.calls, 1);
  assert_null(rec.from[0]);
  assert_int_equal(p.received, 0);

  assert_int_equal(hark_pubsub_local_dispatch(fx->ps, TOPIC("room:1"), &hello, "default"), HARK_OK);
  assert_int_equal(p.received, 1);

  assert_int_equal(hark_pubsub_local_dispatch(fx->ps, TOPIC("room:1"), &hello, "missing"),
                   HARK_EINVAL);
  assert_int_equal(rec.calls, 1);
  assert_int_equal(p.received, 1);
  hark_pubsub_unsubscribe_all(fx->ps, &p.sub);
}

/* ---- Topics and subscribers ---- */

static void duplicate_subscribe_delivers_twice(void **state) {
  fixture *fx = *state;
  probe p;
  probe_init(&p);
  assert_int_equal(hark_pubsub_subscribe(fx->ps, &p.sub, TOPIC("room:1"), NULL), HARK_OK);
  assert_int_equal(hark_pubsub_subscribe(fx->ps, &p.sub, TOPIC("room:1"), NULL), HARK_OK);
  assert_int_equal(hark_pubsub_subscriber_count(fx->ps, TOPIC("room:1")), 2);

  assert_int_equal(hark_pubsub_broadcast(fx->ps, TOPIC("room:1"), &hello, NULL), HARK_OK);
  assert_int_equal(p.received, 2);

  /* Unsubscribe removes both entries at once. */
  hark_pubsub_unsubscribe(fx->ps, &p.sub, TOPIC("room:1"));
  assert_int_equal(hark_pubsub_subscriber_count(fx->ps, TOPIC("room:1")), 0);
  assert_null(p.sub.internal_);
}

static void topics_are_exact_byte_strings(void **state) {
  fixture *fx = *state;
  probe with_nul;
  probe empty;
  probe_init(&with_nul);
  probe_init(&empty);
  assert_int_equal(hark_pubsub_subscribe(fx->ps, &with_nul.sub, "a\0b", 3, NULL), HARK_OK);
  assert_int_equal(hark_pubsub_subscribe(fx->ps, &empty.sub, "", 0, NULL), HARK_OK);

  assert_int_equal(hark_pubsub_broadcast(fx->ps, "a\0c", 3, &hello, NULL), HARK_OK);
  assert_int_equal(hark_pubsub_broadcast(fx->ps, "a", 1, &hello, NULL), HARK_OK);
  assert_int_equal(with_nul.received, 0);
  assert_int_equal(empty.received, 0);

  assert_int_equal(hark_pubsub_broadcast(fx->ps, "a\0b", 3, &hello, NULL), HARK_OK);
  assert_int_equal(with_nul.received, 1);
  assert_int_equal(hark_pubsub_broadcast(fx->ps, NULL, 0, &hello, NULL), HARK_OK);
  assert_int_equal(empty.received, 1);

  hark_pubsub_unsubscribe_all(fx->ps, &with_nul.sub);
  hark_pubsub_unsubscribe_all(fx->ps, &empty.sub);
}

static void invalid_arguments_are_rejected(void **state) {
  fixture *fx = *state;
  probe p;
  probe_init(&p);

  assert_int_equal(hark_pubsub_subscribe(fx->ps, NULL, TOPIC("room:1"), NULL), HARK_EINVAL);
  assert_int_equal(hark_pubsub_subscribe(fx->ps, &p.sub, NULL, 4, NULL), HARK_EINVAL);
  assert_int_equal(hark_pubsub_broadcast(fx->ps, TOPIC("room:1"), NULL, NULL), HARK_EINVAL);
  assert_int_equal(hark_pubsub_local_broadcast(fx->ps, NULL, 4, &hello, NULL), HARK_EINVAL);
  assert_int_equal(hark_pubsub_direct_broadcast(fx->ps, NULL, TOPIC("room:1"), &hello, NULL),
                   HARK_EINVAL);
  assert_int_equal(hark_pubsub_local_dispatch(fx->ps, TOPIC("room:1"), &hello, NULL), HARK_EINVAL);
  assert_null(p.sub.internal_);
}

/* Many topics exercise the hash map's growth and backward-shift deletion:
 * after removing every other topic, each remaining one must still be found. */
static void many_topics_stay_findable(void **state) {
  fixture *fx = *state;
  enum { TOPICS = 2000 };
  probe p;
  probe_init(&p);
  char name[32];

  for (int i = 0; i < TOPICS; i++) {
    int len = snprintf(name, sizeof name, "topic:%d", i);
    assert_int_equal(hark_pubsub_subscribe(fx->ps, &p.sub, name, (size_t)len, NULL), HARK_OK);
  }
  for (int i = 0; i < TOPICS; i += 2) {
    int len = snprintf(name, sizeof name, "topic:%d", i);
    hark_pubsub_unsubscribe(fx->ps, &p.sub, name, (size_t)len);
  }
  for (int i = 0; i < TOPICS; i++) {
    int len = snprintf(name, sizeof name, "topic:%d", i);
    size_t expected = (size_t)(i % 2);
    assert_int_equal(hark_pubsub_subscriber_count(fx->ps, name, (size_t)len), expected);
  }

  assert_int_equal(hark_pubsub_broadcast(fx->ps, TOPIC("topic:1999"), &hello, NULL), HARK_OK);
  assert_int_equal(p.received, 1);
  hark_pubsub_unsubscribe_all(fx->ps, &p.sub);
  assert_null(p.sub.internal_);
  assert_int_equal(hark_pubsub_subscriber_count(fx->ps, TOPIC("topic:1")), 0);
}

/* Unsubscribing 10,000 subscribers in a scrambled order keeps every
 * back-reference right: the count drops by one each time and the subscribers
 * left are exactly the ones still receiving. */
static void mass_unsubscribe_keeps_backrefs(void **state) {
  fixture *fx = *state;
  enum { N = 10000 };
  probe *probes = calloc(N, sizeof *probes);
  assert_non_null(probes);
  for (int i = 0; i < N; i++) {
    probe_init(&probes[i]);
    assert_int_equal(hark_pubsub_subscribe(fx->ps, &probes[i].sub, TOPIC("big"), NULL), HARK_OK);
    assert_int_equal(hark_pubsub_subscribe(fx->ps, &probes[i].sub, TOPIC("side"), NULL), HARK_OK);
  }

  /* 7919 is prime, so i * 7919 mod N visits every index once. */
  for (int step = 0; step < N / 2; step++) {
    int victim = (int)(((long)step * 7919) % N);
    hark_pubsub_unsubscribe(fx->ps, &probes[victim].sub, TOPIC("big"));
    assert_int_equal(hark_pubsub_subscriber_count(fx->ps, TOPIC("big")), (size_t)(N - step - 1));
  }

  assert_int_equal(hark_pubsub_broadcast(fx->ps, TOPIC("big"), &hello, NULL), HARK_OK);
  int delivered = 0;
  for (int step = 0; step < N; step++) {
    int index = (int)(((long)step * 7919) % N);
    int expected = step < N / 2 ? 0 : 1;
    assert_int_equal(probes[index].received, expected);
    delivered += probes[index].received;
  }
  assert_int_equal(delivered, N / 2);
  assert_int_equal(hark_pubsub_subscriber_count(fx->ps, TOPIC("side")), N);

  for (int i = 0; i < N; i++) hark_pubsub_unsubscribe_all(fx->ps, &probes[i].sub);
  assert_int_equal(hark_pubsub_subscriber_count(fx->ps, TOPIC("big")), 0);
  assert_int_equal(hark_pubsub_subscriber_count(fx->ps, TOPIC("side")), 0);
  for (int i = 0; i < N; i++) assert_null(probes[i].sub.internal_);
  free(probes);
}

static void subscriber_on_two_instances(void **state) {
  fixture *fx = *state;
  hark_pubsub_options options = {.node_name = "node-b", .pool_size = fx->pool_size};
  hark_pubsub *other = NULL;
  assert_int_equal(hark_pubsub_create(&other, &fx->loop, &options), HARK_OK);
  probe p;
  probe_init(&p);

  assert_int_equal(hark_pubsub_subscribe(fx->ps, &p.sub, TOPIC("room:1"), NULL), HARK_OK);
  assert_int_equal(hark_pubsub_subscribe(other, &p.sub, TOPIC("room:1"), NULL), HARK_OK);
  assert_int_equal(hark_pubsub_broadcast(other, TOPIC("room:1"), &hello, NULL), HARK_OK);
  assert_int_equal(p.received, 1);

  hark_pubsub_unsubscribe_all(fx->ps, &p.sub);
  assert_int_equal(hark_pubsub_subscriber_count(other, TOPIC("room:1")), 1);
  assert_int_equal(hark_pubsub_broadcast(other, TOPIC("room:1"), &hello, NULL), HARK_OK);
  assert_int_equal(p.received, 2);

  /* Destroying an instance drops the subscriber's state for it. */
  hark_pubsub_destroy(other);
  assert_null(p.sub.internal_);
}

static void destroy_releases_live_subscriptions(void **state) {
  (void)state;
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  hark_pubsub_options options = {.node_name = "node-a", .pool_size = 4};
  hark_pubsub *ps = NULL;
  assert_int_equal(hark_pubsub_create(&ps, &loop, &options), HARK_OK);
  probe probes[10];
  for (int i = 0; i < 10; i++) {
    probe_init(&probes[i]);
    assert_int_equal(hark_pubsub_subscribe(ps, &probes[i].sub, TOPIC("a"), NULL), HARK_OK);
    assert_int_equal(hark_pubsub_subscribe(ps, &probes[i].sub, TOPIC("b"), NULL), HARK_OK);
  }

  hark_pubsub_destroy(ps);
  for (int i = 0; i < 10; i++) assert_null(probes[i].sub.internal_);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- Adapter ---- */

typedef struct fake_adapter {
  int broadcasts;
  int direct_broadcasts;
  int result;
  int added;
  int removed;
  int destroyed;
  char node[32];
  char topic[64];
  char dispatcher[32];
  const probe *local_probe; /* checked to see the order of remote and local delivery */
  int local_seen_at_broadcast;
} fake_adapter;

static int fake_broadcast(void *ctx, const char *topic, size_t topic_len, const hark_message *msg,
                          const char *dispatcher_name) {
  (void)msg;
  fake_adapter *fa = ctx;
  fa->broadcasts++;
  copy_bytes(fa->topic, sizeof fa->topic, topic, topic_len);
  copy_bytes(fa->dispatcher, sizeof fa->dispatcher, dispatcher_name, strlen(dispatcher_name));
  if (fa->local_probe != NULL) fa->local_seen_at_broadcast = fa->local_probe->received;
  return fa->result;
}

static int fake_direct_broadcast(void *ctx, const char *node_name, const char *topic,
                                 size_t topic_len, const hark_message *msg,
                                 const char *dispatcher_name) {
  (void)msg;
  fake_adapter *fa = ctx;
  fa->direct_broadcasts++;
  copy_bytes(fa->node, sizeof fa->node, node_name, strlen(node_name));
  copy_bytes(fa->topic, sizeof fa->topic, topic, topic_len);
  copy_bytes(fa->dispatcher, sizeof fa->dispatcher, dispatcher_name, strlen(dispatcher_name));
  return fa->result;
}

static void fake_topic_added(void *ctx, const char *topic, size_t topic_len) {
  (void)topic, (void)topic_len;
  ((fake_adapter *)ctx)->added++;
}

static void fake_topic_removed(void *ctx, const char *topic, size_t topic_len) {
  (void)topic, (void)topic_len;
  ((fake_adapter *)ctx)->removed++;
}

static void fake_destroy(void *ctx) { ((fake_adapter *)ctx)->destroyed++; }

typedef struct adapter_fixture {
  uv_loop_t loop;
  hark_pubsub *ps;
  fake_adapter fake;
} adapter_fixture;

static int setup_adapter(void **state, unsigned pool_size) {
  adapter_fixture *fx = calloc(1, sizeof *fx);
  if (fx == NULL || uv_loop_init(&fx->loop) != 0) return -1;

  hark_pubsub_adapter adapter = {
      .name = "fake",
      .ctx = &fx->fake,
      .broadcast = fake_broadcast,
      .direct_broadcast = fake_direct_broadcast,
      .topic_added = fake_topic_added,
      .topic_removed = fake_topic_removed,
      .destroy = fake_destroy,
  };
  hark_pubsub_options options = {
      .node_name = "node-a", .pool_size = pool_size, .adapter = &adapter};
  if (hark_pubsub_create(&fx->ps, &fx->loop, &options) != HARK_OK) return -1;
  *state = fx;
  return 0;
}

static int setup_adapter_pool1(void **state) { return setup_adapter(state, 1); }
static int setup_adapter_pool8(void **state) { return setup_adapter(state, 8); }

static int teardown_adapter(void **state) {
  adapter_fixture *fx = *state;
  hark_pubsub_destroy(fx->ps);
  int destroyed = fx->fake.destroyed;
  uv_loop_close(&fx->loop);
  free(fx);
  return destroyed == 1 ? 0 : -1;
}

static void adapter_broadcast_precedes_local(void **state) {
  adapter_fixture *fx = *state;
  probe p;
  probe_init(&p);
  fx->fake.local_probe = &p;
  fx->fake.local_seen_at_broadcast = -1;
  assert_int_equal(hark_pubsub_subscribe(fx->ps, &p.sub, TOPIC("room:1"), NULL), HARK_OK);

  assert_int_equal(hark_pubsub_broadcast(fx->ps, TOPIC("room:1"), &hello, NULL), HARK_OK);
  assert_int_equal(fx->fake.broadcasts, 1);
  assert_int_equal(fx->fake.local_seen_at_broadcast, 0);
  assert_int_equal(p.received, 1);
  assert_string_equal(fx->fake.topic, "room:1");
  assert_string_equal(fx->fake.dispatcher, "default");

  /* local_broadcast never reaches the adapter. */
  assert_int_equal(hark_pubsub_local_broadcast(fx->ps, TOPIC("room:1"), &hello, NULL), HARK_OK);
  assert_int_equal(fx->fake.broadcasts, 1);
  assert_int_equal(p.received, 2);
  hark_pubsub_unsubscribe_all(fx->ps, &p.sub);
}

static void adapter_error_skips_local(void **state) {
  adapter_fixture *fx = *state;
  probe p;
  probe_init(&p);
  assert_int_equal(hark_pubsub_subscribe(fx->ps, &p.sub, TOPIC("room:1"), NULL), HARK_OK);

  fx->fake.result = HARK_EADAPTER;
  assert_int_equal(hark_pubsub_broadcast(fx->ps, TOPIC("room:1"), &hello, NULL), HARK_EADAPTER);
  assert_int_equal(
      hark_pubsub_broadcast_from(fx->ps, NULL, TOPIC("room:1"), &hello, NULL), HARK_EADAPTER);
  assert_int_equal(p.received, 0);

  /* A positive return is not a valid code and is reported as an adapter failure. */
  fx->fake.result = 7;
  assert_int_equal(hark_pubsub_broadcast(fx->ps, TOPIC("room:1"), &hello, NULL), HARK_EADAPTER);
  assert_int_equal(p.received, 0);
  hark_pubsub_unsubscribe_all(fx->ps, &p.sub);
}

static void adapter_direct_broadcast_routes(void **state) {
  adapter_fixture *fx = *state;
  probe p;
  probe_init(&p);
  recorder rec = {0};
  hark_dispatcher custom = {.name = "custom", .dispatch = record_dispatch, .ctx = &rec};
  assert_int_equal(hark_pubsub_register_dispatcher(fx->ps, &custom), HARK_OK);
  assert_int_equal(hark_pubsub_subscribe(fx->ps, &p.sub, TOPIC("room:1"), NULL), HARK_OK);

  assert_int_equal(
      hark_pubsub_direct_broadcast(fx->ps, "node-b", TOPIC("room:1"), &hello, &custom), HARK_OK);
  assert_int_equal(fx->fake.direct_broadcasts, 1);
  assert_string_equal(fx->fake.node, "node-b");
  assert_string_equal(fx->fake.dispatcher, "custom");
  assert_int_equal(rec.calls, 0);

  assert_int_equal(hark_pubsub_direct_broadcast(fx->ps, "node-a", TOPIC("room:1"), &hello, NULL),
                   HARK_OK);
  assert_int_equal(fx->fake.direct_broadcasts, 1);
  assert_int_equal(p.received, 1);

  fx->fake.result = HARK_EADAPTER;
  assert_int_equal(hark_pubsub_direct_broadcast(fx->ps, "node-b", TOPIC("room:1"), &hello, NULL),
                   HARK_EADAPTER);
  hark_pubsub_unsubscribe_all(fx->ps, &p.sub);
}

static void adapter_rejects_unregistered_dispatcher(void **state) {
  adapter_fixture *fx = *state;
  probe p;
  probe_init(&p);
  recorder rec = {0};
  hark_dispatcher unregistered = {.name = "unregistered", .dispatch = record_dispatch, .ctx = &rec};
  assert_int_equal(hark_pubsub_subscribe(fx->ps, &p.sub, TOPIC("room:1"), NULL), HARK_OK);

  assert_int_equal(hark_pubsub_broadcast(fx->ps, TOPIC("room:1"), &hello, &unregistered),
                   HARK_EINVAL);
  assert_int_equal(
      hark_pubsub_direct_broadcast(fx->ps, "node-b", TOPIC("room:1"), &hello, &unregistered),
      HARK_EINVAL);
  assert_int_equal(fx->fake.broadcasts, 0);
  assert_int_equal(fx->fake.direct_broadcasts, 0);
  assert_int_equal(rec.calls, 0);

  /* Local-only calls never need the name. */
  assert_int_equal(hark_pubsub_local_broadcast(fx->ps, TOPIC("room:1"), &hello, &unregistered),
                   HARK_OK);
  assert_int_equal(rec.calls, 1);
  hark_pubsub_unsubscribe_all(fx->ps, &p.sub);
}

static void adapter_hooks_track_first_and_last(void **state) {
  adapter_fixture *fx = *state;
  enum { N = 20 };
  probe probes[N];
  for (int i = 0; i < N; i++) {
    probe_init(&probes[i]);
    assert_int_equal(hark_pubsub_subscribe(fx->ps, &probes[i].sub, TOPIC("room:1"), NULL), HARK_OK);
    assert_int_equal(fx->fake.added, 1);
  }
  assert_int_equal(hark_pubsub_subscribe(fx->ps, &probes[0].sub, TOPIC("room:2"), NULL), HARK_OK);
  assert_int_equal(fx->fake.added, 2);

  for (int i = 0; i < N - 1; i++) {
    hark_pubsub_unsubscribe(fx->ps, &probes[i].sub, TOPIC("room:1"));
    assert_int_equal(fx->fake.removed, 0);
  }
  hark_pubsub_unsubscribe_all(fx->ps, &probes[N - 1].sub);
  assert_int_equal(fx->fake.removed, 1);

  hark_pubsub_unsubscribe_all(fx->ps, &probes[0].sub);
  assert_int_equal(fx->fake.removed, 2);

  /* A topic that comes back is announced again. */
  assert_int_equal(hark_pubsub_subscribe(fx->ps, &probes[0].sub, TOPIC("room:1"), NULL), HARK_OK);
  assert_int_equal(fx->fake.added, 3);
  hark_pubsub_unsubscribe_all(fx->ps, &probes[0].sub);
  assert_int_equal(fx->fake.removed, 3);
}

/* ---- Changes made during a dispatch ---- */

/* A subscriber whose callback runs a scripted action. */
typedef struct actor {
  hark_subscriber sub;
  hark_pubsub *ps;
  int received;
  int *received_by_index; /* outlives the actor, for actors that get freed */
  int index;
  void (*action)(struct actor *self, const char *topic, size_t topic_len);
  struct actor **targets;
  size_t target_count;
  int depth;
} actor;

static void actor_on_message(hark_subscriber *sub, const char *topic, size_t topic_len,
                             const hark_message *msg) {
  (void)msg;
  actor *self = (actor *)sub;
  self->received++;
  if (self->received_by_index != NULL) self->received_by_index[self->index]++;
  if (self->action != NULL) self->action(self, topic, topic_len);
}

static actor *actor_new(hark_pubsub *ps, int index, int *received_by_index) {
  actor *a = calloc(1, sizeof *a);
  assert_non_null(a);
  a->sub.on_message = actor_on_message;
  a->ps = ps;
  a->index = index;
  a->received_by_index = received_by_index;
  return a;
}

static void unsubscribe_self(actor *self, const char *topic, size_t topic_len) {
  hark_pubsub_unsubscribe(self->ps, &self->sub, topic, topic_len);
}

static void callback_unsubscribes_itself(void **state) {
  fixture *fx = *state;
  enum { N = 30 };
  actor *actors[N];
  for (int i = 0; i < N; i++) {
    actors[i] = actor_new(fx->ps, i, NULL);
    actors[i]->action = unsubscribe_self;
    assert_int_equal(hark_pubsub_subscribe(fx->ps, &actors[i]->sub, TOPIC("room:1"), NULL),
                     HARK_OK);
  }

  assert_int_equal(hark_pubsub_broadcast(fx->ps, TOPIC("room:1"), &hello, NULL), HARK_OK);
  for (int i = 0; i < N; i++) assert_int_equal(actors[i]->received, 1);
  assert_int_equal(hark_pubsub_subscriber_count(fx->ps, TOPIC("room:1")), 0);

  assert_int_equal(hark_pubsub_broadcast(fx->ps, TOPIC("room:1"), &hello, NULL), HARK_OK);
  for (int i = 0; i < N; i++) {
    assert_int_equal(actors[i]->received, 1);
    assert_null(actors[i]->sub.internal_);
    free(actors[i]);
  }
}

/* The first actor to run unsubscribes and frees every other actor. Under
 * AddressSanitizer a call into a freed actor fails the test. */
static void unsubscribe_and_free_others(actor *self, const char *topic, size_t topic_len) {
  (void)topic, (void)topic_len;
  for (size_t i = 0; i < self->target_count; i++) {
    actor *target = self->targets[i];
    if (target == NULL || target == self) continue;
    hark_pubsub_unsubscribe_all(self->ps, &target->sub);
    free(target);
    self->targets[i] = NULL;
  }
}

static void callback_frees_other_subscribers(void **state) {
  fixture *fx = *state;
  enum { N = 40 };
  actor *actors[N];
  int received[N] = {0};
  for (int i = 0; i < N; i++) {
    actors[i] = actor_new(fx->ps, i, received);
    actors[i]->action = unsubscribe_and_free_others;
    actors[i]->targets = actors;
    actors[i]->target_count = N;
    assert_int_equal(hark_pubsub_subscribe(fx->ps, &actors[i]->sub, TOPIC("room:1"), NULL),
                     HARK_OK);
    assert_int_equal(hark_pubsub_subscribe(fx->ps, &actors[i]->sub, TOPIC("room:2"), NULL),
                     HARK_OK);
  }

  assert_int_equal(hark_pubsub_broadcast(fx->ps, TOPIC("room:1"), &hello, NULL), HARK_OK);

  int delivered = 0;
  int survivors = 0;
  for (int i = 0; i < N; i++) {
    delivered += received[i];
    if (actors[i] != NULL) survivors++;
  }
  assert_int_equal(delivered, 1);
  assert_int_equal(survivors, 1);
  assert_int_equal(hark_pubsub_subscriber_count(fx->ps, TOPIC("room:1")), 1);
  assert_int_equal(hark_pubsub_subscriber_count(fx->ps, TOPIC("room:2")), 1);

  for (int i = 0; i < N; i++) {
    if (actors[i] == NULL) continue;
    hark_pubsub_unsubscribe_all(fx->ps, &actors[i]->sub);
    free(actors[i]);
  }
}

/* A custom dispatcher that unsubscribes every entry's subscriber before
 * looking at the entries: they must all still be passed, unchanged. */
typedef struct unsubscribing_dispatcher {
  hark_pubsub *ps;
  size_t seen;
  size_t count_before;
  int mismatches;
} unsubscribing_dispatcher;

static void unsubscribe_all_then_read(void *ctx, const char *topic, size_t topic_len,
                                      const hark_dispatch_entry *entries, size_t count,
                                      const hark_subscriber *from, const hark_message *msg) {
  (void)topic, (void)topic_len, (void)from, (void)msg;
  unsubscribing_dispatcher *ud = ctx;
  hark_dispatch_entry before[64];
  size_t copied = count < 64 ? count : 64;
  memcpy(before, entries, copied * sizeof *entries);

  for (size_t i = 0; i < count; i++) hark_pubsub_unsubscribe_all(ud->ps, entries[i].sub);
  for (size_t i = 0; i < copied; i++) {
    if (entries[i].sub != before[i].sub || entries[i].metadata != before[i].metadata) {
      ud->mismatches++;
    }
  }
  ud->seen += count;
}

static void removed_entries_stay_passed(void **state) {
  fixture *fx = *state;
  enum { N = 32 };
  probe probes[N];
  unsubscribing_dispatcher ud = {.ps = fx->ps};
  hark_dispatcher custom = {.name = "unsub", .dispatch = unsubscribe_all_then_read, .ctx = &ud};
  for (int i = 0; i < N; i++) {
    probe_init(&probes[i]);
    assert_int_equal(hark_pubsub_subscribe(fx->ps, &probes[i].sub, TOPIC("room:1"), &probes[i]),
                     HARK_OK);
  }

  assert_int_equal(hark_pubsub_local_broadcast(fx->ps, TOPIC("room:1"), &hello, &custom), HARK_OK);
  assert_int_equal(ud.seen, N);
  assert_int_equal(ud.mismatches, 0);
  assert_int_equal(hark_pubsub_subscriber_count(fx->ps, TOPIC("room:1")), 0);
  for (int i = 0; i < N; i++) assert_null(probes[i].sub.internal_);
}

/* Each callback subscribes new actors to the topic being dispatched, enough
 * to force the entry array to grow several times mid-dispatch. A newcomer is
 * not passed to the call that was running when it subscribed. With several
 * partitions it may land in one dispatched later in the same broadcast and
 * get the message there, as with Phoenix's partitioned Registry. */
static void subscribe_newcomers(actor *self, const char *topic, size_t topic_len) {
  for (size_t i = 0; i < self->target_count; i++) {
    actor *newcomer = self->targets[i];
    assert_int_equal(hark_pubsub_subscribe(self->ps, &newcomer->sub, topic, topic_len, NULL),
                     HARK_OK);
  }
  self->action = NULL;
}

static void callback_subscribes_during_dispatch(void **state) {
  fixture *fx = *state;
  enum { FIRST = 4, NEWCOMERS = 25 };
  actor *first[FIRST];
  actor *newcomers[FIRST][NEWCOMERS];
  for (int i = 0; i < FIRST; i++) {
    first[i] = actor_new(fx->ps, i, NULL);
    first[i]->action = subscribe_newcomers;
    first[i]->targets = newcomers[i];
    first[i]->target_count = NEWCOMERS;
    for (int j = 0; j < NEWCOMERS; j++) newcomers[i][j] = actor_new(fx->ps, j, NULL);
    assert_int_equal(hark_pubsub_subscribe(fx->ps, &first[i]->sub, TOPIC("room:1"), NULL), HARK_OK);
  }

  assert_int_equal(hark_pubsub_broadcast(fx->ps, TOPIC("room:1"), &hello, NULL), HARK_OK);
  assert_int_equal(hark_pubsub_subscriber_count(fx->ps, TOPIC("room:1")), FIRST * (1 + NEWCOMERS));
  int early[FIRST][NEWCOMERS];
  for (int i = 0; i < FIRST; i++) {
    assert_int_equal(first[i]->received, 1);
    for (int j = 0; j < NEWCOMERS; j++) {
      early[i][j] = newcomers[i][j]->received;
      if (fx->pool_size == 1) assert_int_equal(early[i][j], 0);
      else assert_in_range(early[i][j], 0, 1);
    }
  }

  assert_int_equal(hark_pubsub_broadcast(fx->ps, TOPIC("room:1"), &hello, NULL), HARK_OK);
  for (int i = 0; i < FIRST; i++) {
    assert_int_equal(first[i]->received, 2);
    for (int j = 0; j < NEWCOMERS; j++) {
      assert_int_equal(newcomers[i][j]->received, early[i][j] + 1);
      hark_pubsub_unsubscribe_all(fx->ps, &newcomers[i][j]->sub);
      free(newcomers[i][j]);
    }
    hark_pubsub_unsubscribe_all(fx->ps, &first[i]->sub);
    free(first[i]);
  }
}

/* The first actor to run unsubscribes all the others, then broadcasts on the
 * same topic again from inside the dispatch. The nested dispatch must reach
 * only that actor, and the outer one must not call the removed actors. */
static void unsubscribe_others_and_rebroadcast(actor *self, const char *topic, size_t topic_len) {
  if (self->depth > 0) return;
  self->depth++;
  for (size_t i = 0; i < self->target_count; i++) {
    actor *target = self->targets[i];
    if (target != self) hark_pubsub_unsubscribe_all(self->ps, &target->sub);
    target->action = NULL;
  }
  assert_int_equal(hark_pubsub_broadcast(self->ps, topic, topic_len, &hello, NULL), HARK_OK);
  self->depth--;
}

static void nested_broadcast_after_removal(void **state) {
  fixture *fx = *state;
  enum { N = 24 };
  actor *actors[N];
  recorder rec = {0};
  hark_dispatcher custom = {.name = "custom", .dispatch = record_dispatch, .ctx = &rec};
  for (int i = 0; i < N; i++) {
    actors[i] = actor_new(fx->ps, i, NULL);
    actors[i]->action = unsubscribe_others_and_rebroadcast;
    actors[i]->targets = actors;
    actors[i]->target_count = N;
    assert_int_equal(hark_pubsub_subscribe(fx->ps, &actors[i]->sub, TOPIC("room:1"), NULL),
                     HARK_OK);
  }

  assert_int_equal(hark_pubsub_broadcast(fx->ps, TOPIC("room:1"), &hello, NULL), HARK_OK);
  int total = 0;
  int twice = 0;
  for (int i = 0; i < N; i++) {
    total += actors[i]->received;
    if (actors[i]->received == 2) twice++;
  }
  /* The first actor to run acted, so it got the outer and the nested message
   * and the removed actors got nothing. */
  assert_int_equal(twice, 1);
  assert_int_equal(total, 2);
  assert_int_equal(hark_pubsub_subscriber_count(fx->ps, TOPIC("room:1")), 1);

  /* A custom dispatcher now gets exactly the one remaining entry. */
  assert_int_equal(hark_pubsub_local_broadcast(fx->ps, TOPIC("room:1"), &hello, &custom), HARK_OK);
  assert_int_equal(rec.total, 1);

  for (int i = 0; i < N; i++) {
    hark_pubsub_unsubscribe_all(fx->ps, &actors[i]->sub);
    free(actors[i]);
  }
}

/* Unsubscribing everyone mid-dispatch, then subscribing again afterwards,
 * calls each hook once per change and leaves the topic usable. */
static void unsubscribe_every_actor(actor *self, const char *topic, size_t topic_len) {
  (void)topic, (void)topic_len;
  for (size_t i = 0; i < self->target_count; i++) {
    hark_pubsub_unsubscribe_all(self->ps, &self->targets[i]->sub);
    self->targets[i]->action = NULL;
  }
}

static void last_entry_removed_mid_dispatch(void **state) {
  adapter_fixture *fx = *state;
  enum { N = 16 };
  actor *actors[N];
  for (int i = 0; i < N; i++) {
    actors[i] = actor_new(fx->ps, i, NULL);
    actors[i]->action = unsubscribe_every_actor;
    actors[i]->targets = actors;
    actors[i]->target_count = N;
    assert_int_equal(hark_pubsub_subscribe(fx->ps, &actors[i]->sub, TOPIC("room:1"), NULL),
                     HARK_OK);
  }
  assert_int_equal(fx->fake.added, 1);

  assert_int_equal(hark_pubsub_local_broadcast(fx->ps, TOPIC("room:1"), &hello, NULL), HARK_OK);
  assert_int_equal(fx->fake.removed, 1);
  assert_int_equal(hark_pubsub_subscriber_count(fx->ps, TOPIC("room:1")), 0);

  int delivered = 0;
  for (int i = 0; i < N; i++) delivered += actors[i]->received;
  assert_int_equal(delivered, 1);

  int before = actors[0]->received;
  assert_int_equal(hark_pubsub_subscribe(fx->ps, &actors[0]->sub, TOPIC("room:1"), NULL), HARK_OK);
  assert_int_equal(fx->fake.added, 2);
  assert_int_equal(hark_pubsub_local_broadcast(fx->ps, TOPIC("room:1"), &hello, NULL), HARK_OK);
  assert_int_equal(actors[0]->received, before + 1);

  for (int i = 0; i < N; i++) {
    hark_pubsub_unsubscribe_all(fx->ps, &actors[i]->sub);
    free(actors[i]);
  }
  assert_int_equal(fx->fake.removed, 2);
}

/* ---- Errors ---- */

static void strerror_describes_codes(void **state) {
  (void)state;
  assert_string_equal(hark_strerror(HARK_OK), "success");
  assert_string_equal(hark_strerror(HARK_EINVAL), "invalid argument");
  assert_string_equal(hark_strerror(HARK_ENOMEM), "out of memory");
  assert_string_equal(hark_strerror(HARK_EEXIST), "name already registered");
  assert_string_equal(hark_strerror(HARK_EADAPTER), "cluster adapter failed");
  assert_non_null(hark_strerror(UV_ECONNREFUSED));
  assert_string_equal(hark_strerror(12345), "unknown error");
}

#define BOTH_POOLS(f) \
  {#f "_pool1", f, setup_pool1, teardown, NULL}, {#f "_pool8", f, setup_pool8, teardown, NULL}
#define BOTH_POOLS_ADAPTER(f)                                             \
  {#f "_pool1", f, setup_adapter_pool1, teardown_adapter, NULL},          \
  {#f "_pool8", f, setup_adapter_pool8, teardown_adapter, NULL}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(node_name_is_copied),
      BOTH_POOLS(subscribe_then_unsubscribe_counts),
      BOTH_POOLS(broadcast_delivers_to_subscriber),
      BOTH_POOLS(broadcast_skips_other_topics),
      BOTH_POOLS(broadcast_from_skips_sender),
      BOTH_POOLS(unsubscribe_unknown_topic_is_noop),
      BOTH_POOLS(direct_broadcast_to_self_delivers),
      BOTH_POOLS(direct_broadcast_to_unknown_drops),
      BOTH_POOLS(local_broadcast_delivers),
      BOTH_POOLS(local_broadcast_from_skips_sender),
      BOTH_POOLS(custom_dispatcher_gets_both_entries),
      cmocka_unit_test(pool_size_is_reported),
      BOTH_POOLS(dispatch_runs_once_per_partition),
      cmocka_unit_test(create_rejects_invalid_options),
      cmocka_unit_test(create_rejects_incomplete_adapter),
      BOTH_POOLS(dispatcher_registry_rules),
      BOTH_POOLS(local_dispatch_uses_named_dispatcher),
      BOTH_POOLS(duplicate_subscribe_delivers_twice),
      BOTH_POOLS(topics_are_exact_byte_strings),
      BOTH_POOLS(invalid_arguments_are_rejected),
      BOTH_POOLS(many_topics_stay_findable),
      BOTH_POOLS(mass_unsubscribe_keeps_backrefs),
      BOTH_POOLS(subscriber_on_two_instances),
      cmocka_unit_test(destroy_releases_live_subscriptions),
      BOTH_POOLS_ADAPTER(adapter_broadcast_precedes_local),
      BOTH_POOLS_ADAPTER(adapter_error_skips_local),
      BOTH_POOLS_ADAPTER(adapter_direct_broadcast_routes),
      BOTH_POOLS_ADAPTER(adapter_rejects_unregistered_dispatcher),
      BOTH_POOLS_ADAPTER(adapter_hooks_track_first_and_last),
      BOTH_POOLS(callback_unsubscribes_itself),
      BOTH_POOLS(callback_frees_other_subscribers),
      BOTH_POOLS(removed_entries_stay_passed),
      BOTH_POOLS(callback_subscribes_during_dispatch),
      BOTH_POOLS(nested_broadcast_after_removal),
      BOTH_POOLS_ADAPTER(last_entry_removed_mid_dispatch),
      cmocka_unit_test(strerror_describes_codes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
