/* Latency histogram, clock, RSS sampling and blocking I/O helpers. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

static int bucket_of(uint64_t us) {
  if (us < 128) return (int)us;

  int exponent = 63 - __builtin_clzll(us); /* 7 or more */
  int bucket = 128 + (exponent - 7) * 64 + (int)((us >> (exponent - 6)) & 63);
  return bucket < BENCH_HIST_BUCKETS ? bucket : BENCH_HIST_BUCKETS - 1;
}

/* The lowest value that falls into `bucket`. */
static uint64_t bucket_value(int bucket) {
  if (bucket < 128) return (uint64_t)bucket;

  int exponent = (bucket - 128) / 64 + 7;
  uint64_t mantissa = (uint64_t)((bucket - 128) % 64) + 64;
  return mantissa << (exponent - 6);
}

void bench_hist_add(bench_hist *hist, uint64_t us) {
  hist->buckets[bucket_of(us)]++;
  hist->count++;
  if (us > hist->max_us) hist->max_us = us;
}

void bench_hist_merge(bench_hist *into, const bench_hist *from) {
  for (int i = 0; i < BENCH_HIST_BUCKETS; i++) into->buckets[i] += from->buckets[i];
  into->count += from->count;
  if (from->max_us > into->max_us) into->max_us = from->max_us;
}

uint64_t bench_hist_quantile(const bench_hist *hist, double q) {
  if (hist->count == 0) return 0;

  uint64_t rank = (uint64_t)(q * (double)(hist->count - 1)) + 1;
  uint64_t seen = 0;
  for (int i = 0; i < BENCH_HIST_BUCKETS; i++) {
    seen += hist->buckets[i];
    if (seen >= rank) return bucket_value(i);
  }
  return hist->max_us;
}

int64_t bench_now_ns(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
}

int64_t bench_rss_bytes(int pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/status", pid);
  FILE *file = fopen(path, "r");
  if (!file) return -1;

  char line[256];
  int64_t kib = -1;
  while (fgets(line, sizeof line, file)) {
    long long value;
    if (sscanf(line, "VmRSS: %lld kB", &value) == 1) {
      kib = value;
      break;
    }
  }
  fclose(file);
  return kib < 0 ? -1 : kib * 1024;
}

int bench_write_all(int fd, const void *data, size_t len) {
  const char *p = data;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

int bench_read_all(int fd, void *data, size_t len) {
  char *p = data;
  while (len > 0) {
    ssize_t n = read(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}
