#include "tracker/delta.h"

#include <stdlib.h>
#include <string.h>

#include "tracker/pool.h"
#include "tracker/table.h"

hark__delta *hark__delta_new(hark__delta_kind kind, hark__rref creator) {
  hark__delta *delta = calloc(1, sizeof(*delta));
  if (delta == NULL) return NULL;
  delta->kind = kind;
  long index = hark__delta_replica_index(delta, creator, true);
  if (index < 0) {
    hark__delta_free(delta);
    return NULL;
  }
  delta->creator = (uint32_t)index;
  return delta;
}

void hark__delta_free(hark__delta *delta) {
  if (delta == NULL) return;
  for (size_t i = 0; i < delta->replica_count; i++) {
    free(delta->replicas[i].name);
    hark__dotset_free(&delta->replicas[i].cloud);
  }
  free(delta->replicas);
  hark__free_large(delta->values, delta->value_cap * sizeof(*delta->values), delta->values_huge);
  hark__free_large(delta->bytes.data, delta->bytes.cap, delta->bytes_huge);
  free(delta);
}

long hark__delta_find_replica(const hark__delta *delta, hark__rref ref) {
  for (size_t i = 0; i < delta->replica_count; i++) {
    if (hark__rref_equal(hark__delta_ref(delta, i), ref)) return (long)i;
  }
  return -1;
}

long hark__delta_replica_index(hark__delta *delta, hark__rref ref, bool create) {
  long found = hark__delta_find_replica(delta, ref);
  if (found >= 0 || !create) return found;

  if (delta->replica_count == delta->replica_cap) {
    size_t cap = delta->replica_cap ? delta->replica_cap * 2 : 4;
    hark__delta_replica *replicas = realloc(delta->replicas, cap * sizeof(*replicas));
    if (replicas == NULL) return -1;
    delta->replicas = replicas;
    delta->replica_cap = cap;
  }
  char *name = malloc(ref.name_len + 1);
  if (name == NULL) return -1;
  if (ref.name_len > 0) memcpy(name, ref.name, ref.name_len);
  name[ref.name_len] = '\0';

  delta->replicas[delta->replica_count] =
      (hark__delta_replica){.name = name, .name_len = ref.name_len, .vsn = ref.vsn};
  return (long)delta->replica_count++;
}

/* Grows the string arena to room for `extra` more bytes. A full extract's
 * arena takes megabytes, so it comes from hark__realloc_large, which reuses
 * freed arrays instead of faulting in fresh pages. */
static int reserve_bytes(hark__delta *delta, size_t extra) {
  hark_buf *buf = &delta->bytes;
  if (buf->cap - buf->len >= extra) return 0;
  size_t need = buf->len + extra;
  size_t cap;
  if (need < buf->len || hark_buf_grow_capacity(buf->cap, need, &cap) != 0) return -1;

  char *data = hark__realloc_large(buf->data, buf->cap, buf->len, &cap, &delta->bytes_huge);
  if (data == NULL) return -1;
  buf->data = data;
  buf->cap = cap;
  return 0;
}

int hark__delta_reserve_values(hark__delta *delta, size_t count, size_t bytes) {
  if (delta->value_count + count > delta->value_cap) {
    size_t cap = delta->value_cap ? delta->value_cap : 16;
    while (cap < delta->value_count + count) cap *= 2;
    size_t old_size = delta->value_cap * sizeof(*delta->values);
    size_t size = cap * sizeof(*delta->values);
    hark__delta_value *values =
        hark__realloc_large(delta->values, old_size, delta->value_count * sizeof(*values), &size,
                            &delta->values_huge);
    if (values == NULL) return -1;
    delta->values = values;
    delta->value_cap = size / sizeof(*values);
  }
  return reserve_bytes(delta, bytes);
}

int hark__delta_add_value(hark__delta *delta, uint32_t replica, uint64_t counter, uint64_t owner,
                          const char *topic, size_t topic_len, const char *key, size_t key_len,
                          const char *meta, size_t meta_len) {
  if (topic_len > UINT32_MAX || key_len > UINT32_MAX || meta_len > UINT32_MAX) return -1;
  if (hark__delta_reserve_values(delta, 1, topic_len + key_len + meta_len) != 0) return -1;

  hark__delta_value *value = &delta->values[delta->value_count++];
  *value = (hark__delta_value){.replica = replica,
                               .topic_len = (uint32_t)topic_len,
                               .key_len = (uint32_t)key_len,
                               .meta_len = (uint32_t)meta_len,
                               .counter = counter,
                               .owner = owner,
                               .offset = delta->bytes.len};
  /* The reserve above guarantees that these appends do not fail. */
  hark_buf_append(&delta->bytes, topic, topic_len);
  hark_buf_append(&delta->bytes, key, key_len);
  hark_buf_append(&delta->bytes, meta, meta_len);
  return 0;
}

void hark__delta_value_at(const hark__delta *delta, size_t i, hark__value_view *view) {
  const hark__delta_value *value = &delta->values[i];
  const char *base = delta->bytes.data + value->offset;
  view->replica = hark__delta_ref(delta, value->replica);
  view->counter = value->counter;
  view->owner = value->owner;
  view->topic = base;
  view->topic_len = value->topic_len;
  view->key = base + value->topic_len;
  view->key_len = value->key_len;
  view->meta = base + value->topic_len + value->key_len;
  view->meta_len = value->meta_len;
}

int hark__delta_range_clock(const hark__delta *delta, bool end, hark__clock *out) {
  hark__clock clock = {0};
  for (size_t i = 0; i < delta->replica_count; i++) {
    const hark__delta_replica *r = &delta->replicas[i];
    if (end ? !r->has_end : !r->has_start) continue;
    if (hark__clock_set(&clock, hark__delta_ref(delta, i), end ? r->end : r->start) != 0) {
      hark__clock_free(&clock);
      return -1;
    }
  }
  hark__clock_free(out);
  *out = clock;
  return 0;
}

uint64_t hark__delta_size(const hark__delta *delta) {
  uint64_t size = delta->value_count;
  for (size_t i = 0; i < delta->replica_count; i++) {
    size += hark__dotset_size(&delta->replicas[i].cloud);
  }
  return size;
}

static uint32_t tag_hash(uint32_t replica, uint64_t counter) {
  return (uint32_t)hark__hash_mix(counter * 0x9e3779b97f4a7c15ULL + replica);
}

int hark__delta_index_build(hark__delta_index *index, const hark__delta *delta) {
  size_t cap = 16;
  while (cap < delta->value_count * 2) cap *= 2;
  *index = (hark__delta_index){.delta = delta, .cap = cap};
  index->slots = calloc(cap, sizeof(*index->slots));
  if (index->slots == NULL) return -1;

  for (size_t i = 0; i < delta->value_count; i++) {
    const hark__delta_value *value = &delta->values[i];
    size_t slot = tag_hash(value->replica, value->counter) & (cap - 1);
    while (index->slots[slot] != 0) slot = (slot + 1) & (cap - 1);
    index->slots[slot] = (uint32_t)i + 1;
  }
  return 0;
}

long hark__delta_index_find(const hark__delta_index *index, uint32_t replica, uint64_t counter) {
  size_t mask = index->cap - 1;
  for (size_t slot = tag_hash(replica, counter) & mask; index->slots[slot] != 0;
       slot = (slot + 1) & mask) {
    const hark__delta_value *value = &index->delta->values[index->slots[slot] - 1];
    if (value->replica == replica && value->counter == counter) return index->slots[slot] - 1;
  }
  return -1;
}

void hark__delta_index_free(hark__delta_index *index) {
  free(index->slots);
  *index = (hark__delta_index){0};
}

bool hark__delta_has_seen(const hark__delta *delta, long replica, uint64_t counter) {
  if (replica < 0) return false;
  const hark__delta_replica *r = &delta->replicas[replica];
  if (r->has_context && counter <= r->context) return true;
  return hark__dotset_contains(&r->cloud, counter);
}

/* Copies `value` of `src` into `dst`, mapping its replica through `map`. */
static int copy_value(hark__delta *dst, const hark__delta *src, size_t i, const long *map) {
  hark__value_view view;
  hark__delta_value_at(src, i, &view);
  return hark__delta_add_value(dst, (uint32_t)map[src->values[i].replica], view.counter,
                               view.owner, view.topic, view.topic_len, view.key, view.key_len,
                               view.meta, view.meta_len);
}

/* Adds every replica of `src` to `dst` and stores the index mapping in *map
 * (caller frees). */
static int map_replicas(hark__delta *dst, const hark__delta *src, long **map) {
  *map = malloc((src->replica_count + 1) * sizeof(**map));
  if (*map == NULL) return -1;
  for (size_t i = 0; i < src->replica_count; i++) {
    (*map)[i] = hark__delta_replica_index(dst, hark__delta_ref(src, i), true);
    if ((*map)[i] < 0) return -1;
  }
  return 0;
}

static int copy_replica_fields(hark__delta_replica *dst, const hark__delta_replica *src) {
  dst->has_context = src->has_context;
  dst->has_start = src->has_start;
  dst->has_end = src->has_end;
  dst->context = src->context;
  dst->start = src->start;
  dst->end = src->end;
  return hark__dotset_copy(&dst->cloud, &src->cloud);
}

hark__delta *hark__delta_copy(const hark__delta *delta) {
  hark__delta *copy = hark__delta_new(delta->kind, hark__delta_ref(delta, delta->creator));
  long *map = NULL;
  if (copy == NULL || map_replicas(copy, delta, &map) != 0) goto fail;

  for (size_t i = 0; i < delta->replica_count; i++) {
    if (copy_replica_fields(&copy->replicas[map[i]], &delta->replicas[i]) != 0) goto fail;
  }
  if (hark__delta_reserve_values(copy, delta->value_count, delta->bytes.len) != 0) goto fail;
  for (size_t i = 0; i < delta->value_count; i++) {
    if (copy_value(copy, delta, i, map) != 0) goto fail;
  }
  free(map);
  return copy;

fail:
  free(map);
  hark__delta_free(copy);
  return NULL;
}

/* Per-key min (start) and max (end) of the two ranges, over the union of the
 * keys. */
static void merge_range(hark__delta_replica *out, const hark__delta_replica *in) {
  if (in->has_start) {
    out->start = out->has_start && out->start < in->start ? out->start : in->start;
    out->has_start = true;
  }
  if (in->has_end) {
    out->end = out->has_end && out->end > in->end ? out->end : in->end;
    out->has_end = true;
  }
}

static int check_contiguous(const hark__delta *local, const hark__delta *remote, bool *contiguous) {
  hark__clock local_start = {0}, local_end = {0}, remote_start = {0}, remote_end = {0};
  int rc = -1;
  if (hark__delta_range_clock(local, false, &local_start) != 0 ||
      hark__delta_range_clock(local, true, &local_end) != 0 ||
      hark__delta_range_clock(remote, false, &remote_start) != 0 ||
      hark__delta_range_clock(remote, true, &remote_end) != 0) {
    goto done;
  }
  *contiguous = hark__clock_dominates_or_equal(&remote_end, &local_start) &&
                hark__clock_dominates_or_equal(&local_end, &remote_start);
  rc = 0;

done:
  hark__clock_free(&local_start);
  hark__clock_free(&local_end);
  hark__clock_free(&remote_start);
  hark__clock_free(&remote_end);
  return rc;
}

/* Adds to `out` the values of `from` that survive the merge with `other`:
 * those that `other` also contains, or whose tag `other` has not seen. When
 * `only_absent` is set, values that `other` contains are skipped instead,
 * because they were taken from the other side already. */
static int keep_values(hark__delta *out, const hark__delta *from, const hark__delta *other,
                       const hark__delta_index *other_index, const long *out_map,
                       const long *other_map, bool only_absent) {
  for (size_t i = 0; i < from->value_count; i++) {
    const hark__delta_value *value = &from->values[i];
    long in_other = -1;
    if (other_map[value->replica] >= 0) {
      in_other = hark__delta_index_find(other_index, (uint32_t)other_map[value->replica],
                                        value->counter);
    }
    bool seen = hark__delta_has_seen(other, other_map[value->replica], value->counter);
    bool keep = only_absent ? (in_other < 0 && !seen) : (in_other >= 0 || !seen);
    if (keep && copy_value(out, from, i, out_map) != 0) return -1;
  }
  return 0;
}

/* For every replica of `a`, its index in `b` or -1. Caller frees. */
static long *index_map(const hark__delta *a, const hark__delta *b) {
  long *map = malloc((a->replica_count + 1) * sizeof(*map));
  if (map == NULL) return NULL;
  for (size_t i = 0; i < a->replica_count; i++) {
    map[i] = hark__delta_find_replica(b, hark__delta_ref(a, i));
  }
  return map;
}

int hark__delta_merge(const hark__delta *local, const hark__delta *remote, hark__delta **out) {
  *out = NULL;
  bool contiguous = false;
  if (check_contiguous(local, remote, &contiguous) != 0) return -1;
  if (!contiguous) return HARK__NOT_CONTIGUOUS;

  hark__delta *merged = hark__delta_new(local->kind, hark__delta_ref(local, local->creator));
  long *local_out = NULL, *remote_out = NULL, *local_in_remote = NULL, *remote_in_local = NULL;
  hark__delta_index local_index = {0}, remote_index = {0};
  if (merged == NULL || map_replicas(merged, local, &local_out) != 0 ||
      map_replicas(merged, remote, &remote_out) != 0) {
    goto fail;
  }
  local_in_remote = index_map(local, remote);
  remote_in_local = index_map(remote, local);
  if (local_in_remote == NULL || remote_in_local == NULL) goto fail;

  /* Ranges: per-key min of the starts and max of the ends. Clouds: union. */
  for (size_t i = 0; i < local->replica_count; i++) {
    if (copy_replica_fields(&merged->replicas[local_out[i]], &local->replicas[i]) != 0) goto fail;
  }
  for (size_t i = 0; i < remote->replica_count; i++) {
    hark__delta_replica *r = &merged->replicas[remote_out[i]];
    merge_range(r, &remote->replicas[i]);
    if (hark__dotset_union(&r->cloud, &remote->replicas[i].cloud) != 0) goto fail;
  }

  if (hark__delta_index_build(&local_index, local) != 0 ||
      hark__delta_index_build(&remote_index, remote) != 0) {
    goto fail;
  }
  if (keep_values(merged, local, remote, &remote_index, local_out, local_in_remote, false) != 0 ||
      keep_values(merged, remote, local, &local_index, remote_out, remote_in_local, true) != 0) {
    goto fail;
  }

  hark__delta_index_free(&local_index);
  hark__delta_index_free(&remote_index);
  free(local_out);
  free(remote_out);
  free(local_in_remote);
  free(remote_in_local);
  *out = merged;
  return 0;

fail:
  hark__delta_index_free(&local_index);
  hark__delta_index_free(&remote_index);
  free(local_out);
  free(remote_out);
  free(local_in_remote);
  free(remote_in_local);
  hark__delta_free(merged);
  return -1;
}

/* Copies the replicas with keep_replica[i] set, with their fields, and the
 * values whose replica has keep_value_of_replica set. */
static hark__delta *filter_copy(const hark__delta *delta, const bool *keep_replica,
                                const bool *keep_value_of_replica) {
  hark__delta *copy = hark__delta_new(delta->kind, hark__delta_ref(delta, delta->creator));
  long *map = calloc(delta->replica_count + 1, sizeof(*map));
  if (copy == NULL || map == NULL) goto fail;

  for (size_t i = 0; i < delta->replica_count; i++) {
    map[i] = -1;
    if (!keep_replica[i] && i != delta->creator) continue;
    map[i] = hark__delta_replica_index(copy, hark__delta_ref(delta, i), true);
    if (map[i] < 0) goto fail;
    if (!keep_replica[i]) continue; /* the creator stays named, with no data */
    if (copy_replica_fields(&copy->replicas[map[i]], &delta->replicas[i]) != 0) goto fail;
  }
  for (size_t i = 0; i < delta->value_count; i++) {
    if (!keep_value_of_replica[delta->values[i].replica]) continue;
    if (copy_value(copy, delta, i, map) != 0) goto fail;
  }
  free(map);
  return copy;

fail:
  free(map);
  hark__delta_free(copy);
  return NULL;
}

hark__delta *hark__delta_extract(const hark__delta *delta, hark__rref remote_ref,
                                 const hark__clock *remote_clock) {
  size_t n = delta->replica_count;
  bool *keep = calloc(2 * n + 1, sizeof(*keep));
  if (keep == NULL) return NULL;
  bool *keep_values_of = keep + n;

  for (size_t i = 0; i < n; i++) {
    hark__rref ref = hark__delta_ref(delta, i);
    keep[i] = hark__clock_get(remote_clock, ref, NULL);
    keep_values_of[i] = keep[i] && !hark__rref_equal(ref, remote_ref);
  }
  hark__delta *copy = filter_copy(delta, keep, keep_values_of);
  free(keep);
  return copy;
}

int hark__delta_remove_replica(hark__delta *delta, hark__rref ref) {
  long index = hark__delta_find_replica(delta, ref);
  if (index < 0) return 0;

  size_t n = delta->replica_count;
  bool *keep = calloc(2 * n + 1, sizeof(*keep));
  if (keep == NULL) return -1;
  for (size_t i = 0; i < n; i++) keep[i] = keep[n + i] = (long)i != index;
  hark__delta *copy = filter_copy(delta, keep, keep + n);
  free(keep);
  if (copy == NULL) return -1;

  /* Swap the contents so the caller's pointer stays valid. */
  hark__delta old = *delta;
  *delta = *copy;
  *copy = old;
  hark__delta_free(copy);
  return 0;
}
