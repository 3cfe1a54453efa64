/* In-process PubSub fan-out benchmark: deliveries per second through
 * hark_pubsub_local_broadcast, with the default dispatcher and with a custom
 * dispatcher shaped like the channel fastlane.
 *
 * Case A: 10,000 subscribers on one topic, 100 broadcasts per run.
 * Case B: 1,000 topics with 10 subscribers each, one broadcast to every topic
 *         per round, 1,000 rounds per run.
 *
 * Each case runs RUNS times and prints the median, next to a baseline measured
 * in the same process: a plain loop that calls each subscriber's on_message
 * through its function pointer, over an array of the same subscribers. The
 * baseline is a ceiling, because it does no topic lookup and no dispatch.
 * Output is one key=value line per case. Build with
 * -DCMAKE_BUILD_TYPE=Release for meaningful figures. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hark/pubsub.h"

#define RUNS 11
#define A_SUBSCRIBERS 10000
#define A_BROADCASTS 100
#define B_TOPICS 1000
#define B_PER_TOPIC 10
#define B_ROUNDS 1000

/* What every delivery touches, so that no work can be optimized away. */
typedef struct sink {
  uint64_t deliveries;
  uint64_t payload_bytes;
} sink;

static sink total;

static const hark_message message = {
    .event = "new_msg", .event_len = 7, .payload = "{\"body\":\"hello\"}", .payload_len = 16};

__attribute__((noinline)) static void count_message(hark_subscriber *sub, const char *topic,
                                                    size_t topic_len, const hark_message *msg) {
  (void)topic, (void)topic_len;
  sink *s = sub->data;
  s->deliveries++;
  s->payload_bytes += msg->payload_len;
}

/* The fastlane shape: one call per partition, a loop over the entries that
 * skips the sender and reads each entry's metadata. */
static void fastlane_dispatch(void *ctx, const char *topic, size_t topic_len,
                              const hark_dispatch_entry *entries, size_t count,
                              const hark_subscriber *from, const hark_message *msg) {
  (void)topic, (void)topic_len;
  sink *s = ctx;
  for (size_t i = 0; i < count; i++) {
    if (entries[i].sub == from) continue;
    const sink *target = entries[i].metadata;
    s->deliveries += target != NULL;
    s->payload_bytes += msg->payload_len;
  }
}

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int compare_doubles(const void *a, const void *b) {
  double x = *(const double *)a;
  double y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *values, size_t n) {
  qsort(values, n, sizeof *values, compare_doubles);
  return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

/* ---- Workload set-up ---- */

typedef struct workload {
  hark_pubsub *ps;
  hark_subscriber *subs; /* topics * per_topic subscribers, topic-major */
  char (*names)[32];
  size_t name_lens[B_TOPICS];
  size_t topics;
  size_t per_topic;
} workload;

static int workload_init(workload *w, uv_loop_t *loop, unsigned pool_size, size_t topics,
                         size_t per_topic) {
  memset(w, 0, sizeof *w);
  hark_pubsub_options options = {.node_name = "bench", .pool_size = pool_size};
  if (hark_pubsub_create(&w->ps, loop, &options) != HARK_OK) return -1;

  w->topics = topics;
  w->per_topic = per_topic;
  w->subs = calloc(topics * per_topic, sizeof *w->subs);
  w->names = calloc(topics, sizeof *w->names);
  if (w->subs == NULL || w->names == NULL) return -1;

  for (size_t t = 0; t < topics; t++) {
    w->name_lens[t] = (size_t)snprintf(w->names[t], sizeof w->names[t], "room:%zu", t);
    for (size_t i = 0; i < per_topic; i++) {
      hark_subscriber *sub = &w->subs[t * per_topic + i];
      sub->on_message = count_message;
      sub->data = &total;
      if (hark_pubsub_subscribe(w->ps, sub, w->names[t], w->name_lens[t], &total) != HARK_OK) {
        return -1;
      }
    }
  }
  return 0;
}

static void workload_free(workload *w) {
  hark_pubsub_destroy(w->ps);
  free(w->subs);
  free(w->names);
}

/* ---- Timed runs ---- */

/* Broadcasts `rounds` times to every topic and returns deliveries per second. */
static double run_broadcasts(const workload *w, size_t rounds, const hark_dispatcher *dispatcher) {
  uint64_t before = total.deliveries;
  double start = now_seconds();
  for (size_t r = 0; r < rounds; r++) {
    for (size_t t = 0; t < w->topics; t++) {
      hark_pubsub_local_broadcast(w->ps, w->names[t], w->name_lens[t], &message, dispatcher);
    }
  }
  double elapsed = now_seconds() - start;
  return (double)(total.deliveries - before) / elapsed;
}

/* The ceiling: the same on_message calls from a plain loop over an array of
 * subscriber pointers, one array per topic. */
static double run_baseline(const workload *w, hark_subscriber **array, size_t rounds) {
  size_t n = w->topics * w->per_topic;
  for (size_t i = 0; i < n; i++) array[i] = &w->subs[i];

  uint64_t before = total.deliveries;
  double start = now_seconds();
  for (size_t r = 0; r < rounds; r++) {
    for (size_t t = 0; t < w->topics; t++) {
      hark_subscriber **row = array + t * w->per_topic;
      for (size_t i = 0; i < w->per_topic; i++) {
        row[i]->on_message(row[i], w->names[t], w->name_lens[t], &message);
      }
    }
  }
  double elapsed = now_seconds() - start;
  return (double)(total.deliveries - before) / elapsed;
}

static int run_case(const char *name, unsigned pool_size, size_t topics, size_t per_topic,
                    size_t rounds) {
  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0) return -1;
  workload w;
  if (workload_init(&w, &loop, pool_size, topics, per_topic) != 0) return -1;
  hark_subscriber **array = calloc(topics * per_topic, sizeof *array);
  if (array == NULL) return -1;
  hark_dispatcher fastlane = {.name = "fastlane", .dispatch = fastlane_dispatch, .ctx = &total};

  double with_default[RUNS];
  double with_fastlane[RUNS];
  double baseline[RUNS];
  run_broadcasts(&w, 1, NULL); /* warm the caches once */
  for (int i = 0; i < RUNS; i++) {
    with_default[i] = run_broadcasts(&w, rounds, NULL);
    with_fastlane[i] = run_broadcasts(&w, rounds, &fastlane);
    baseline[i] = run_baseline(&w, array, rounds);
  }

  double base = median(baseline, RUNS);
  double def = median(with_default, RUNS);
  double fast = median(with_fastlane, RUNS);
  const char *shape = "case=%s dispatcher=%s pool_size=%u topics=%zu subscribers_per_topic=%zu "
                      "rounds=%zu runs=%d deliveries_per_sec=%.0f baseline_per_sec=%.0f "
                      "ratio=%.2f\n";
  printf(shape, name, "default", pool_size, topics, per_topic, rounds, RUNS, def, base, def / base);
  printf(shape, name, "fastlane", pool_size, topics, per_topic, rounds, RUNS, fast, base,
         fast / base);

  free(array);
  workload_free(&w);
  uv_loop_close(&loop);
  return 0;
}

int main(void) {
  const unsigned pools[] = {1, 8};
  for (size_t i = 0; i < sizeof pools / sizeof pools[0]; i++) {
    if (run_case("A", pools[i], 1, A_SUBSCRIBERS, A_BROADCASTS) != 0) goto fail;
    if (run_case("B", pools[i], B_TOPICS, B_PER_TOPIC, B_ROUNDS) != 0) goto fail;
  }
  fprintf(stderr, "checksum deliveries=%llu payload_bytes=%llu\n",
          (unsigned long long)total.deliveries, (unsigned long long)total.payload_bytes);
  return 0;

fail:
  fprintf(stderr, "bench_pubsub: set-up failed (out of memory or invalid options)\n");
  return 1;
}
