#include "tracker/dotset.h"

#include <stdlib.h>
#include <string.h>

/* The index of the first interval whose hi >= n (count when none). */
static size_t lower_index(const hark__dotset *set, uint64_t n) {
  size_t lo = 0;
  size_t hi = set->count;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (set->iv[mid].hi < n) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

bool hark__dotset_contains(const hark__dotset *set, uint64_t n) {
  size_t i = lower_index(set, n);
  return i < set->count && set->iv[i].lo <= n;
}

static int reserve(hark__dotset *set, size_t extra) {
  if (set->count + extra <= set->cap) return 0;
  size_t cap = set->cap ? set->cap * 2 : 4;
  while (cap < set->count + extra) cap *= 2;
  hark__interval *iv = realloc(set->iv, cap * sizeof(*iv));
  if (iv == NULL) return -1;
  set->iv = iv;
  set->cap = cap;
  return 0;
}

int hark__dotset_add_range(hark__dotset *set, uint64_t lo, uint64_t hi) {
  /* First interval that touches or follows [lo, hi]: its hi >= lo - 1. */
  size_t first = lower_index(set, lo > 0 ? lo - 1 : 0);
  size_t last = first;
  while (last < set->count && set->iv[last].lo <= hi + 1) last++;

  if (first == last) {
    if (reserve(set, 1) != 0) return -1;
    memmove(&set->iv[first + 1], &set->iv[first], (set->count - first) * sizeof(*set->iv));
    set->iv[first] = (hark__interval){lo, hi};
    set->count++;
    return 0;
  }

  /* Intervals first..last-1 overlap or touch [lo, hi]: fold them into one. */
  hark__interval merged = {lo < set->iv[first].lo ? lo : set->iv[first].lo,
                           hi > set->iv[last - 1].hi ? hi : set->iv[last - 1].hi};
  set->iv[first] = merged;
  memmove(&set->iv[first + 1], &set->iv[last], (set->count - last) * sizeof(*set->iv));
  set->count -= last - first - 1;
  return 0;
}

int hark__dotset_add(hark__dotset *set, uint64_t n) {
  return hark__dotset_add_range(set, n, n);
}

int hark__dotset_remove(hark__dotset *set, uint64_t n) {
  size_t i = lower_index(set, n);
  if (i == set->count || set->iv[i].lo > n) return 0;

  hark__interval *cur = &set->iv[i];
  if (cur->lo == n && cur->hi == n) {
    memmove(cur, cur + 1, (set->count - i - 1) * sizeof(*cur));
    set->count--;
  } else if (cur->lo == n) {
    cur->lo++;
  } else if (cur->hi == n) {
    cur->hi--;
  } else {
    if (reserve(set, 1) != 0) return -1;
    cur = &set->iv[i];
    memmove(cur + 2, cur + 1, (set->count - i - 1) * sizeof(*cur));
    cur[1] = (hark__interval){n + 1, cur->hi};
    cur->hi = n - 1;
    set->count++;
  }
  return 0;
}

int hark__dotset_union(hark__dotset *dst, const hark__dotset *src) {
  if (src->count == 0) return 0;
  if (dst->count == 0) return hark__dotset_copy(dst, src);

  /* A linear merge into a new array, so that a big union costs one pass. */
  size_t cap = dst->count + src->count;
  hark__interval *out = malloc(cap * sizeof(*out));
  if (out == NULL) return -1;

  size_t i = 0, j = 0, n = 0;
  while (i < dst->count || j < src->count) {
    hark__interval next;
    if (j == src->count || (i < dst->count && dst->iv[i].lo <= src->iv[j].lo)) {
      next = dst->iv[i++];
    } else {
      next = src->iv[j++];
    }
    if (n > 0 && next.lo <= out[n - 1].hi + 1) {
      if (next.hi > out[n - 1].hi) out[n - 1].hi = next.hi;
    } else {
      out[n++] = next;
    }
  }

  free(dst->iv);
  dst->iv = out;
  dst->count = n;
  dst->cap = cap;
  return 0;
}

int hark__dotset_copy(hark__dotset *dst, const hark__dotset *src) {
  hark__dotset copy = {0};
  if (src->count > 0) {
    copy.iv = malloc(src->count * sizeof(*copy.iv));
    if (copy.iv == NULL) return -1;
    memcpy(copy.iv, src->iv, src->count * sizeof(*copy.iv));
    copy.count = copy.cap = src->count;
  }
  free(dst->iv);
  *dst = copy;
  return 0;
}

uint64_t hark__dotset_size(const hark__dotset *set) {
  uint64_t total = 0;
  for (size_t i = 0; i < set->count; i++) total += set->iv[i].hi - set->iv[i].lo + 1;
  return total;
}

bool hark__dotset_equal(const hark__dotset *a, const hark__dotset *b) {
  if (a->count != b->count) return false;
  return a->count == 0 || memcmp(a->iv, b->iv, a->count * sizeof(*a->iv)) == 0;
}

void hark__dotset_drop_upto(hark__dotset *set, uint64_t n) {
  size_t i = 0;
  while (i < set->count && set->iv[i].hi <= n) i++;
  if (i > 0) memmove(set->iv, &set->iv[i], (set->count - i) * sizeof(*set->iv));
  set->count -= i;
  if (set->count > 0 && set->iv[0].lo <= n) set->iv[0].lo = n + 1;
}

void hark__dotset_clear(hark__dotset *set) {
  set->count = 0;
}

void hark__dotset_free(hark__dotset *set) {
  free(set->iv);
  *set = (hark__dotset){0};
}
