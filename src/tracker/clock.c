#include "tracker/clock.h"

#include <stdlib.h>
#include <string.h>

bool hark__rref_equal(hark__rref a, hark__rref b) {
  return a.vsn == b.vsn && a.name_len == b.name_len &&
         (a.name_len == 0 || memcmp(a.name, b.name, a.name_len) == 0);
}

static char *copy_name(const char *name, size_t len) {
  char *copy = malloc(len + 1);
  if (copy == NULL) return NULL;
  if (len > 0) memcpy(copy, name, len);
  copy[len] = '\0';
  return copy;
}

static size_t find(const hark__clock *clock, hark__rref ref) {
  for (size_t i = 0; i < clock->count; i++) {
    if (hark__rref_equal(hark__clock_ref(clock, i), ref)) return i;
  }
  return SIZE_MAX;
}

int hark__clock_set(hark__clock *clock, hark__rref ref, uint64_t counter) {
  size_t i = find(clock, ref);
  if (i != SIZE_MAX) {
    clock->items[i].counter = counter;
    return 0;
  }

  if (clock->count == clock->cap) {
    size_t cap = clock->cap ? clock->cap * 2 : 4;
    hark__clock_item *items = realloc(clock->items, cap * sizeof(*items));
    if (items == NULL) return -1;
    clock->items = items;
    clock->cap = cap;
  }
  char *name = copy_name(ref.name, ref.name_len);
  if (name == NULL) return -1;
  clock->items[clock->count++] = (hark__clock_item){name, ref.name_len, ref.vsn, counter};
  return 0;
}

bool hark__clock_get(const hark__clock *clock, hark__rref ref, uint64_t *counter) {
  size_t i = find(clock, ref);
  if (i == SIZE_MAX) return false;
  if (counter != NULL) *counter = clock->items[i].counter;
  return true;
}

void hark__clock_remove(hark__clock *clock, hark__rref ref) {
  size_t i = find(clock, ref);
  if (i == SIZE_MAX) return;
  free(clock->items[i].name);
  clock->items[i] = clock->items[--clock->count];
}

int hark__clock_copy(hark__clock *dst, const hark__clock *src) {
  hark__clock copy = {0};
  for (size_t i = 0; i < src->count; i++) {
    if (hark__clock_set(&copy, hark__clock_ref(src, i), src->items[i].counter) != 0) {
      hark__clock_free(&copy);
      return -1;
    }
  }
  hark__clock_free(dst);
  *dst = copy;
  return 0;
}

bool hark__clock_equal(const hark__clock *a, const hark__clock *b) {
  if (a->count != b->count) return false;
  for (size_t i = 0; i < a->count; i++) {
    uint64_t other;
    if (!hark__clock_get(b, hark__clock_ref(a, i), &other)) return false;
    if (other != a->items[i].counter) return false;
  }
  return true;
}

void hark__clock_free(hark__clock *clock) {
  for (size_t i = 0; i < clock->count; i++) free(clock->items[i].name);
  free(clock->items);
  *clock = (hark__clock){0};
}

static uint64_t get_or_zero(const hark__clock *clock, hark__rref ref) {
  uint64_t counter = 0;
  hark__clock_get(clock, ref, &counter);
  return counter;
}

bool hark__clock_dominates(const hark__clock *a, const hark__clock *b) {
  if (a->count < b->count) return false;
  for (size_t i = 0; i < b->count; i++) {
    if (get_or_zero(a, hark__clock_ref(b, i)) < b->items[i].counter) return false;
  }
  return true;
}

bool hark__clock_dominates_or_equal(const hark__clock *a, const hark__clock *b) {
  if (a->count == 0) return b->count == 0;
  for (size_t i = 0; i < a->count; i++) {
    if (a->items[i].counter < get_or_zero(b, hark__clock_ref(a, i))) return false;
  }
  return true;
}

/* Builds the union of keys; `pick_max` chooses between max and min where both
 * clocks have the key. */
static int combine(hark__clock *out, const hark__clock *a, const hark__clock *b, bool pick_max) {
  hark__clock result = {0};
  if (hark__clock_copy(&result, a) != 0) return -1;

  for (size_t i = 0; i < b->count; i++) {
    hark__rref ref = hark__clock_ref(b, i);
    uint64_t mine;
    uint64_t theirs = b->items[i].counter;
    uint64_t value = theirs;
    if (hark__clock_get(&result, ref, &mine)) {
      bool keep_mine = pick_max ? mine > theirs : mine < theirs;
      if (keep_mine) value = mine;
    }
    if (hark__clock_set(&result, ref, value) != 0) {
      hark__clock_free(&result);
      return -1;
    }
  }

  hark__clock_free(out);
  *out = result;
  return 0;
}

int hark__clock_upperbound(hark__clock *out, const hark__clock *a, const hark__clock *b) {
  return combine(out, a, b, true);
}

int hark__clock_lowerbound(hark__clock *out, const hark__clock *a, const hark__clock *b) {
  return combine(out, a, b, false);
}

int hark__clock_filter_replicas(hark__clock *out, const hark__clock *clock, const hark__rref *refs,
                                size_t ref_count) {
  hark__clock result = {0};
  for (size_t i = 0; i < ref_count; i++) {
    uint64_t counter;
    if (!hark__clock_get(clock, refs[i], &counter)) continue;
    if (hark__clock_set(&result, refs[i], counter) != 0) {
      hark__clock_free(&result);
      return -1;
    }
  }
  hark__clock_free(out);
  *out = result;
  return 0;
}

static void item_free(hark__clockset_item *item) {
  free(item->name);
  hark__clock_free(&item->clock);
}

static int item_init(hark__clockset_item *item, hark__rref ref, const hark__clock *clock) {
  *item = (hark__clockset_item){0};
  item->name = copy_name(ref.name, ref.name_len);
  if (item->name == NULL) return -1;
  item->name_len = ref.name_len;
  item->vsn = ref.vsn;
  if (hark__clock_copy(&item->clock, clock) != 0) {
    free(item->name);
    return -1;
  }
  return 0;
}

int hark__clockset_append(hark__clockset *set, hark__rref ref, const hark__clock *clock) {
  if (clock->count == 0) return 0;

  hark__clock big = {0};
  for (size_t i = 0; i < set->count; i++) {
    hark__clock next = {0};
    if (hark__clock_upperbound(&next, &big, &set->items[i].clock) != 0) {
      hark__clock_free(&big);
      return -1;
    }
    hark__clock_free(&big);
    big = next;
  }
  bool covers_all = hark__clock_dominates(clock, &big);
  bool covered = !covers_all && hark__clock_dominates(&big, clock);
  hark__clock_free(&big);
  if (covered) return 0;

  /* Prepare the new member and room for it before changing the set, so a
   * failed allocation leaves the set as it was. */
  hark__clockset_item item;
  if (item_init(&item, ref, clock) != 0) return -1;
  if (set->count == set->cap) {
    size_t cap = set->cap ? set->cap * 2 : 4;
    hark__clockset_item *items = realloc(set->items, cap * sizeof(*items));
    if (items == NULL) {
      item_free(&item);
      return -1;
    }
    set->items = items;
    set->cap = cap;
  }

  /* Drop the members the new clock dominates; when it dominates the maximum
   * of them all, that is every member. */
  size_t kept = 0;
  for (size_t i = 0; i < set->count; i++) {
    if (covers_all || hark__clock_dominates(clock, &set->items[i].clock)) {
      item_free(&set->items[i]);
    } else {
      set->items[kept++] = set->items[i];
    }
  }
  set->count = kept;
  set->items[set->count++] = item;
  return 0;
}

void hark__clockset_clear(hark__clockset *set) {
  for (size_t i = 0; i < set->count; i++) item_free(&set->items[i]);
  set->count = 0;
}

void hark__clockset_free(hark__clockset *set) {
  hark__clockset_clear(set);
  free(set->items);
  *set = (hark__clockset){0};
}
