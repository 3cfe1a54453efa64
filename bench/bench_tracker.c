/* Tracker benchmark: the State CRDT operations of phoenix_pubsub's
 * script/bench.exs at the same sizes, and tracker throughput and memory.
 *
 * CRDT rows (each run builds everything again; medians of RUNS runs):
 * - create: two states of 100,000 entries each; s1 spreads them over 10,000
 *   topics, s2 puts each on its own topic;
 * - extract: s2's full extract for s1;
 * - merge / merge again: that extract into s1, twice (the second is a no-op);
 * - get_by_topic, get_by_owner, get_by_owner_key: single lookups on s1;
 * - delta create: 500 joins and 500 leaves on s2, then building the delta;
 * - delta merge: that delta into s1;
 * - replica_down: s2 down on s1 (reports its 100,000 entries as leaves);
 * - remove_down_replicas: s2's entries dropped from s1.
 * Unlike Phoenix's script, s1 and s2 mark each other up first, because a
 * merge ignores values of replicas that are not up.
 *
 * Tracker rows: hark_tracker_track calls per second for pool_size 1 and 2,
 * with 200,000 presences on 1,000 topics, with no meta and with the meta
 * {"online_at":1733300000000,"device":"web"}. Memory: heap bytes per presence
 * excluding its meta. It is the mallinfo2() in-use byte count (heap chunks
 * plus separately mapped ones) after tracking minus before, less the 31 bytes
 * of the stored meta text, which lives inside the entry's block.
 *
 * The Phoenix figures are the medians of 3 runs of script/bench.exs (and of a
 * track loop) on the same machine kind, given with the task. Build with
 * -DCMAKE_BUILD_TYPE=Release. */
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hark/tracker.h"
#include "tracker/pool.h"
#include "tracker/state.h"

#define RUNS 5
#define SIZE 100000
#define TOPIC_SIZE (SIZE / 10)
#define DELTA_SIZE 1000
#define TRACKS 200000
#define TRACK_TOPICS 1000

enum {
  ROW_CREATE,
  ROW_EXTRACT,
  ROW_MERGE,
  ROW_MERGE_AGAIN,
  ROW_GET_BY_TOPIC,
  ROW_GET_BY_OWNER,
  ROW_GET_BY_OWNER_KEY,
  ROW_DELTA_CREATE,
  ROW_DELTA_MERGE,
  ROW_REPLICA_DOWN,
  ROW_REMOVE_DOWN,
  ROW_COUNT
};

static const char *row_names[ROW_COUNT] = {
    "create 2 x 100000 entries", "extract 100000",       "merge 100000 into 100000",
    "merge again",               "get_by_topic",         "get_by_owner",
    "get_by_owner_key",          "delta create 1000",    "delta merge 1000",
    "replica_down 100000",       "remove_down_replicas",
};

/* Phoenix 2.2.0 figures in ms; 0 where the task gave none. */
static const double phoenix_ms[ROW_COUNT] = {3570, 150, 830, 150, 0, 0, 0, 22, 32, 78, 440};

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int compare_doubles(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *values, size_t n) {
  qsort(values, n, sizeof(*values), compare_doubles);
  return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

static void must(int ok, const char *what) {
  if (!ok) {
    fprintf(stderr, "bench_tracker: %s failed\n", what);
    exit(1);
  }
}

static size_t sink;

static void count_entry(void *ctx, const hark__entry *entry) {
  (void)ctx, (void)entry;
  sink++;
}

/* Writes `prefix`, the decimal digits of `n` and `suffix` to `out` and returns
 * the length (no NUL). The CRDT rows build 600,000 such strings, and
 * snprintf alone took about a quarter of the create row, which measures the
 * state, not the C library's formatter. */
static size_t format_number(char *out, const char *prefix, uint64_t n, const char *suffix) {
  char digits[20];
  size_t count = 0;
  do {
    digits[count++] = (char)('0' + n % 10);
    n /= 10;
  } while (n > 0);

  size_t len = strlen(prefix);
  memcpy(out, prefix, len);
  while (count > 0) out[len++] = digits[--count];
  size_t suffix_len = strlen(suffix);
  memcpy(out + len, suffix, suffix_len);
  return len + suffix_len;
}

static void join_numbered(hark__state *s, uint64_t owner, const char *topic, size_t topic_len,
                          int i) {
  char key[32], meta[48];
  size_t key_len = format_number(key, "user", (uint64_t)i, "");
  size_t meta_len = format_number(meta, "{\"name\":", (uint64_t)i, "}");
  must(hark__state_join(s, owner, topic, topic_len, key, key_len, meta, meta_len, NULL) == 0,
       "join");
}

/* One run of every CRDT row; times[row] receives milliseconds. */
static void crdt_run(double *times) {
  hark__rref r1 = {"s1", 2, 1}, r2 = {"s2", 2, 2};
  char topic[32];
  double t = now_ms();
  hark__state *s1 = hark__state_new(r1);
  hark__state *s2 = hark__state_new(r2);
  for (int i = 1; i <= SIZE; i++) {
    size_t topic_len = format_number(topic, "topic", (uint64_t)i * 2654435761u % TOPIC_SIZE, "");
    join_numbered(s1, (uint64_t)i, topic, topic_len, i);
  }
  for (int i = 1; i <= SIZE; i++) {
    size_t topic_len = format_number(topic, "topic", (uint64_t)i, "");
    join_numbered(s2, (uint64_t)i, topic, topic_len, i);
  }
  times[ROW_CREATE] = now_ms() - t;

  uint64_t user = SIZE + 1;
  join_numbered(s1, user, "topic100", 8, 100);
  must(hark__state_replica_up(s1, r2, NULL) == 0, "replica_up");
  must(hark__state_replica_up(s2, r1, NULL) == 0, "replica_up");

  hark__clock clock = {0};
  must(hark__state_context(s2, &clock) == 0, "context");
  t = now_ms();
  hark__delta *extract = hark__state_extract(s2, r1, &clock);
  times[ROW_EXTRACT] = now_ms() - t;
  must(extract != NULL && extract->value_count == SIZE, "extract");
  hark__clock_free(&clock);

  hark__changes changes = {0};
  t = now_ms();
  must(hark__state_merge(s1, extract, &changes) == 0, "merge");
  times[ROW_MERGE] = now_ms() - t;
  must(changes.count == SIZE, "merge joins");
  hark__changes_clear(&changes);

  t = now_ms();
  must(hark__state_merge(s1, extract, &changes) == 0, "merge again");
  times[ROW_MERGE_AGAIN] = now_ms() - t;
  must(changes.count == 0, "merge again is a no-op");
  hark__changes_clear(&changes);

  t = now_ms();
  hark__state_get_by_topic(s1, "topic10", 7, count_entry, NULL);
  times[ROW_GET_BY_TOPIC] = now_ms() - t;
  t = now_ms();
  hark__state_get_by_owner(s1, r1, user, count_entry, NULL);
  times[ROW_GET_BY_OWNER] = now_ms() - t;
  t = now_ms();
  must(hark__state_get_by_owner_key(s1, r1, user, "topic100", 8, "user100", 7) != NULL,
       "get_by_owner_key");
  times[ROW_GET_BY_OWNER_KEY] = now_ms() - t;

  hark__state_compact(s1);
  hark__state_compact(s2);
  hark__state_reset_delta(s2);
  t = now_ms();
  for (int i = 1; i <= DELTA_SIZE / 2; i++) {
    size_t topic_len = format_number(topic, "delta", (uint64_t)i, "");
    join_numbered(s2, (uint64_t)(2 * SIZE + i), topic, topic_len, i);
    char old_topic[32], old_key[32];
    size_t tl = format_number(old_topic, "topic", (uint64_t)i, "");
    size_t kl = format_number(old_key, "user", (uint64_t)i, "");
    must(hark__state_leave(s2, (uint64_t)i, old_topic, tl, old_key, kl, NULL) == 0, "leave");
  }
  hark__delta *delta = hark__state_delta(s2);
  times[ROW_DELTA_CREATE] = now_ms() - t;
  must(delta != NULL, "delta");

  t = now_ms();
  must(hark__state_merge(s1, delta, &changes) == 0, "delta merge");
  times[ROW_DELTA_MERGE] = now_ms() - t;
  must(changes.count == DELTA_SIZE, "delta merge changes");
  hark__changes_clear(&changes);

  t = now_ms();
  must(hark__state_replica_down(s1, r2, &changes) == 0, "replica_down");
  times[ROW_REPLICA_DOWN] = now_ms() - t;
  must(changes.count == SIZE, "replica_down leaves");
  hark__changes_clear(&changes);

  t = now_ms();
  hark__state_remove_down_replicas(s1, r2);
  times[ROW_REMOVE_DOWN] = now_ms() - t;
  must(hark__state_entry_count(s1) == SIZE + 1, "remove_down_replicas");

  hark__delta_free(extract);
  hark__delta_free(delta);
  hark__state_free(s1);
  hark__state_free(s2);
}

static void print_crdt_rows(void) {
  double samples[ROW_COUNT][RUNS];
  for (int run = 0; run < RUNS; run++) {
    double times[ROW_COUNT];
    crdt_run(times);
    for (int row = 0; row < ROW_COUNT; row++) samples[row][run] = times[row];
  }

  printf("%-28s %12s %12s %10s\n", "operation", "hark ms", "phoenix ms", "ratio");
  for (int row = 0; row < ROW_COUNT; row++) {
    double ms = median(samples[row], RUNS);
    if (phoenix_ms[row] > 0) {
      printf("%-28s %12.3f %12.0f %9.0fx\n", row_names[row], ms, phoenix_ms[row],
             phoenix_ms[row] / ms);
    } else {
      printf("%-28s %12.3f %12s %10s\n", row_names[row], ms, "-", "-");
    }
  }
}

static hark_subscriber *owners;

/* Tracks TRACKS presences; returns the seconds taken. */
static double track_run(unsigned pool_size, const char *meta, hark_tracker **out) {
  hark_tracker_options options = {.node_name = "bench@127.0.0.1", .pool_size = pool_size};
  hark_tracker *tracker;
  must(hark_tracker_create(&tracker, &options) == 0, "tracker create");

  char topic[32], key[32];
  size_t meta_len = meta ? strlen(meta) : 0;
  double t = now_ms();
  for (int i = 0; i < TRACKS; i++) {
    int tl = snprintf(topic, sizeof(topic), "room:%d", i % TRACK_TOPICS);
    int kl = snprintf(key, sizeof(key), "user%d", i);
    must(hark_tracker_track(tracker, &owners[i], topic, (size_t)tl, key, (size_t)kl, meta,
                            meta_len, NULL) == 0,
         "track");
  }
  double seconds = (now_ms() - t) / 1e3;
  *out = tracker;
  return seconds;
}

static void print_track_rows(void) {
  static const char *metas[] = {NULL, "{\"online_at\":1733300000000,\"device\":\"web\"}"};
  static const double phoenix_per_s[] = {10700, 21000};
  owners = calloc(TRACKS, sizeof(*owners));
  must(owners != NULL, "owners");

  printf("\n%-28s %12s %12s %10s\n", "track", "hark /s", "phoenix /s", "ratio");
  for (unsigned pool = 1; pool <= 2; pool++) {
    for (int m = 0; m < 2; m++) {
      double rates[RUNS];
      for (int run = 0; run < RUNS; run++) {
        hark_tracker *tracker;
        rates[run] = TRACKS / track_run(pool, metas[m], &tracker);
        hark_tracker_destroy(tracker);
      }
      double rate = median(rates, RUNS);
      char label[64];
      snprintf(label, sizeof(label), "pool_size %u, %s", pool, metas[m] ? "meta" : "no meta");
      printf("%-28s %12.0f %12.0f %9.0fx\n", label, rate, phoenix_per_s[pool - 1],
             rate / phoenix_per_s[pool - 1]);
    }
  }
}

/* Heap bytes in use: chunks on the heap plus chunks that malloc mapped on
 * their own (large tables and the state's pool chunks can be either). */
static size_t heap_in_use(void) {
  struct mallinfo2 info = mallinfo2();
  return info.uordblks + info.hblkhd;
}

static void print_memory_row(void) {
  /* Freed state memory that the pool cache keeps would otherwise be reused
   * and not counted. */
  hark__pool_release_cache();
  malloc_trim(0);
  size_t before = heap_in_use();
  hark_tracker *tracker;
  track_run(1, NULL, &tracker);
  size_t after = heap_in_use();

  /* The stored meta is {"phx_ref":"<16 chars>"}: 30 bytes and a NUL, stored
   * inside the entry's own allocation, so it costs exactly its bytes. */
  double per_presence = (double)(after - before) / TRACKS;
  double meta = 31;
  printf("\n%-28s %12.0f bytes (all heap %.0f, of which meta %.0f; phoenix 1200-1600)\n",
         "memory per presence", per_presence - meta, per_presence, meta);
  hark_tracker_destroy(tracker);
  free(owners);
}

/* "bench_tracker crdt" runs only the CRDT rows, for profiling them. */
int main(int argc, char **argv) {
  print_crdt_rows();
  if (argc > 1 && strcmp(argv[1], "crdt") == 0) return 0;
  print_track_rows();
  print_memory_row();
  printf("(sink %zu)\n", sink);
  return 0;
}
