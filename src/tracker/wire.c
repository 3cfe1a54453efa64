#include "tracker/wire.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "base/json.h"
#include "hark/error.h"
#include "tracker/state.h"

enum {
  SECTION_CONTEXT = 1u << 0,
  SECTION_START = 1u << 1,
  SECTION_END = 1u << 2,
  SECTION_FLAGS = SECTION_CONTEXT | SECTION_START | SECTION_END,
};

/* ---- encoding ---- */

static int put_byte(hark_buf *out, uint8_t byte) {
  return hark_buf_append(out, &byte, 1);
}

static int put_varint(hark_buf *out, uint64_t value) {
  uint8_t bytes[10];
  size_t n = 0;
  do {
    uint8_t byte = value & 0x7f;
    value >>= 7;
    bytes[n++] = value ? (byte | 0x80) : byte;
  } while (value);
  return hark_buf_append(out, bytes, n);
}

static int put_string(hark_buf *out, const char *s, size_t len) {
  if (put_varint(out, len) != 0) return -1;
  return len == 0 ? 0 : hark_buf_append(out, s, len);
}

/* Zigzag mapping of a difference, so a small step either way is small. */
static uint64_t zigzag(uint64_t value, uint64_t previous) {
  uint64_t d = value - previous;
  return (d << 1) ^ (uint64_t)-(int64_t)(d >> 63);
}

static uint64_t unzigzag(uint64_t z, uint64_t previous) {
  uint64_t d = (z >> 1) ^ (uint64_t)-(int64_t)(z & 1);
  return previous + d;
}

/* The replica table being built: borrowed refs, found by linear search
 * because a message names few replicas. */
typedef struct ref_table {
  hark__rref *refs;
  size_t count;
  size_t cap;
} ref_table;

static long ref_index(ref_table *table, hark__rref ref) {
  for (size_t i = 0; i < table->count; i++) {
    if (hark__rref_equal(table->refs[i], ref)) return (long)i;
  }
  if (table->count == HARK__WIRE_MAX_REPLICAS) return -1;
  if (table->count == table->cap) {
    size_t cap = table->cap ? table->cap * 2 : 8;
    hark__rref *refs = realloc(table->refs, cap * sizeof(*refs));
    if (refs == NULL) return -1;
    table->refs = refs;
    table->cap = cap;
  }
  table->refs[table->count] = ref;
  return (long)table->count++;
}

static int collect_refs(ref_table *table, hark__rref from, const hark__clock *clock,
                        const hark__delta *payload) {
  if (ref_index(table, from) < 0) return -1;
  for (size_t i = 0; clock != NULL && i < clock->count; i++) {
    if (ref_index(table, hark__clock_ref(clock, i)) < 0) return -1;
  }
  for (size_t i = 0; payload != NULL && i < payload->replica_count; i++) {
    if (ref_index(table, hark__delta_ref(payload, i)) < 0) return -1;
  }
  return 0;
}

/* An open-addressing map from topic bytes to topic table index, used while
 * encoding the values of one delta. */
typedef struct topic_map {
  uint32_t *slots; /* topic index + 1; 0 is empty */
  size_t cap;      /* a power of two */
  const char **names;
  size_t *lens;
  size_t count;
} topic_map;

static uint64_t hash_topic(const char *s, size_t len) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < len; i++) {
    h ^= (unsigned char)s[i];
    h *= 0x100000001b3ULL;
  }
  return h ^ (h >> 29);
}

static int topic_map_init(topic_map *map, size_t max_topics) {
  map->cap = 16;
  while (map->cap < max_topics * 2) map->cap *= 2;
  map->slots = calloc(map->cap, sizeof(*map->slots));
  map->names = malloc((max_topics + 1) * sizeof(*map->names));
  map->lens = malloc((max_topics + 1) * sizeof(*map->lens));
  map->count = 0;
  return map->slots && map->names && map->lens ? 0 : -1;
}

static void topic_map_free(topic_map *map) {
  free(map->slots);
  free(map->names);
  free(map->lens);
}

/* Returns the index of the topic, adding it when new. The map was sized for
 * every value, so it never fills. */
static size_t topic_map_index(topic_map *map, const char *s, size_t len) {
  size_t mask = map->cap - 1;
  size_t slot = hash_topic(s, len) & mask;
  while (map->slots[slot] != 0) {
    size_t i = map->slots[slot] - 1;
    if (map->lens[i] == len && (len == 0 || memcmp(map->names[i], s, len) == 0)) return i;
    slot = (slot + 1) & mask;
  }
  map->names[map->count] = s;
  map->lens[map->count] = len;
  map->slots[slot] = (uint32_t)++map->count;
  return map->count - 1;
}

static bool counter_ok(uint64_t counter) {
  return counter <= HARK__WIRE_MAX_COUNTER;
}

static int put_section(hark_buf *out, ref_table *table, const hark__delta *delta, size_t i) {
  const hark__delta_replica *r = &delta->replicas[i];
  uint8_t flags = (uint8_t)((r->has_context ? SECTION_CONTEXT : 0) |
                            (r->has_start ? SECTION_START : 0) | (r->has_end ? SECTION_END : 0));
  if (!counter_ok(r->context) || !counter_ok(r->start) || !counter_ok(r->end)) return HARK_EINVAL;

  int rc = put_varint(out, (uint64_t)ref_index(table, hark__delta_ref(delta, i)));
  rc |= put_byte(out, flags);
  if (r->has_context) rc |= put_varint(out, r->context);
  if (r->has_start) rc |= put_varint(out, r->start);
  if (r->has_end) rc |= put_varint(out, r->end);
  rc |= put_varint(out, r->cloud.count);

  /* Each interval as the gap after the previous one and its length - 1. */
  uint64_t previous_hi = 0;
  for (size_t k = 0; k < r->cloud.count; k++) {
    const hark__interval *iv = &r->cloud.iv[k];
    if (iv->lo <= previous_hi || iv->hi < iv->lo || !counter_ok(iv->hi)) return HARK_EINVAL;
    rc |= put_varint(out, iv->lo - previous_hi - 1);
    rc |= put_varint(out, iv->hi - iv->lo);
    previous_hi = iv->hi;
  }
  return rc ? HARK_ENOMEM : 0;
}

static int put_values(hark_buf *out, ref_table *table, const hark__delta *delta) {
  topic_map topics = {0};
  uint32_t *topic_of = malloc((delta->value_count + 1) * sizeof(*topic_of));
  int rc = HARK_ENOMEM;
  if (topic_of == NULL || topic_map_init(&topics, delta->value_count) != 0) goto done;

  for (size_t i = 0; i < delta->value_count; i++) {
    hark__value_view v;
    hark__delta_value_at(delta, i, &v);
    topic_of[i] = (uint32_t)topic_map_index(&topics, v.topic, v.topic_len);
  }
  int failed = put_varint(out, topics.count);
  for (size_t i = 0; i < topics.count; i++) {
    failed |= put_string(out, topics.names[i], topics.lens[i]);
  }

  failed |= put_varint(out, delta->value_count);
  uint64_t previous_counter = 0, previous_owner = 0;
  for (size_t i = 0; i < delta->value_count; i++) {
    hark__value_view v;
    hark__delta_value_at(delta, i, &v);
    if (v.counter == 0 || !counter_ok(v.counter)) {
      rc = HARK_EINVAL;
      goto done;
    }
    failed |= put_varint(out, (uint64_t)ref_index(table, v.replica));
    failed |= put_varint(out, zigzag(v.counter, previous_counter));
    failed |= put_varint(out, zigzag(v.owner, previous_owner));
    failed |= put_varint(out, topic_of[i]);
    failed |= put_string(out, v.key, v.key_len);
    failed |= put_string(out, v.meta, v.meta_len);
    previous_counter = v.counter;
    previous_owner = v.owner;
  }
  rc = failed ? HARK_ENOMEM : 0;

done:
  topic_map_free(&topics);
  free(topic_of);
  return rc;
}

static int put_delta(hark_buf *out, ref_table *table, const hark__delta *delta) {
  /* A rough guess of the size, so the values rarely regrow the buffer. */
  if (hark_buf_reserve(out, delta->bytes.len + 16 * delta->value_count + 64) != 0) {
    return HARK_ENOMEM;
  }
  int failed = put_byte(out, (uint8_t)delta->kind);
  failed |= put_varint(out, (uint64_t)ref_index(table, hark__delta_ref(delta, delta->creator)));
  failed |= put_varint(out, delta->replica_count);
  if (failed) return HARK_ENOMEM;

  for (size_t i = 0; i < delta->replica_count; i++) {
    int rc = put_section(out, table, delta, i);
    if (rc != 0) return rc;
  }
  return put_values(out, table, delta);
}

static int put_clock(hark_buf *out, ref_table *table, const hark__clock *clock) {
  int failed = put_varint(out, clock->count);
  for (size_t i = 0; i < clock->count; i++) {
    if (!counter_ok(clock->items[i].counter)) return HARK_EINVAL;
    failed |= put_varint(out, (uint64_t)ref_index(table, hark__clock_ref(clock, i)));
    failed |= put_varint(out, clock->items[i].counter);
  }
  return failed ? HARK_ENOMEM : 0;
}

static int put_header(hark_buf *out, hark__wire_type type, const ref_table *table) {
  int failed = put_byte(out, HARK__WIRE_VERSION);
  failed |= put_byte(out, (uint8_t)type);
  failed |= put_varint(out, table->count);
  for (size_t i = 0; i < table->count; i++) {
    if (table->refs[i].name_len == 0) return HARK_EINVAL;
    failed |= put_string(out, table->refs[i].name, table->refs[i].name_len);
    failed |= put_varint(out, table->refs[i].vsn);
  }
  failed |= put_varint(out, 0); /* `from` is always the first table entry */
  return failed ? HARK_ENOMEM : 0;
}

static int put_body(hark_buf *out, ref_table *table, hark__wire_type type, uint64_t request_id,
                    const hark__clock *clock, const hark__delta *payload) {
  int rc = 0;
  switch (type) {
  case HARK__WIRE_HEARTBEAT:
    rc = put_clock(out, table, clock);
    if (rc == 0) rc = put_byte(out, payload != NULL) ? HARK_ENOMEM : 0;
    if (rc == 0 && payload != NULL) rc = put_delta(out, table, payload);
    return rc;
  case HARK__WIRE_TRANSFER_REQ:
    if (put_varint(out, request_id) != 0) return HARK_ENOMEM;
    return put_clock(out, table, clock);
  case HARK__WIRE_TRANSFER_ACK:
    if (put_varint(out, request_id) != 0) return HARK_ENOMEM;
    return put_delta(out, table, payload);
  case HARK__WIRE_GRACEFUL_PERMDOWN:
    return 0;
  }
  return HARK_EINVAL;
}

static bool has_required_fields(hark__wire_type type, const hark__clock *clock,
                                const hark__delta *payload) {
  switch (type) {
  case HARK__WIRE_HEARTBEAT:
    return clock != NULL && (payload == NULL || payload->kind == HARK__DELTA_WINDOW);
  case HARK__WIRE_TRANSFER_REQ:
    return clock != NULL;
  case HARK__WIRE_TRANSFER_ACK:
    return payload != NULL;
  case HARK__WIRE_GRACEFUL_PERMDOWN:
    return true;
  }
  return false;
}

int hark__wire_encode(hark_buf *out, hark__wire_type type, hark__rref from, uint64_t request_id,
                      const hark__clock *clock, const hark__delta *payload) {
  if (!has_required_fields(type, clock, payload)) return HARK_EINVAL;
  if (type != HARK__WIRE_HEARTBEAT && type != HARK__WIRE_TRANSFER_REQ) clock = NULL;
  if (type != HARK__WIRE_HEARTBEAT && type != HARK__WIRE_TRANSFER_ACK) payload = NULL;

  size_t start = out->len;
  ref_table table = {0};
  int rc = collect_refs(&table, from, clock, payload) != 0 ? HARK_EINVAL : 0;
  if (rc == 0) rc = put_header(out, type, &table);
  if (rc == 0) rc = put_body(out, &table, type, request_id, clock, payload);
  free(table.refs);
  if (rc != 0) out->len = start;
  return rc;
}

/* ---- decoding ---- */

typedef struct reader {
  const uint8_t *p;
  const uint8_t *end;
  const char *error; /* the first error; later ones are ignored */
} reader;

static bool fail(reader *r, const char *error) {
  if (r->error == NULL) r->error = error;
  r->p = r->end;
  return false;
}

static size_t remaining(const reader *r) {
  return (size_t)(r->end - r->p);
}

static bool get_byte(reader *r, uint8_t *out) {
  if (r->p == r->end) return fail(r, "truncated message");
  *out = *r->p++;
  return true;
}

/* Reads a minimal LEB128 varint of at most 64 bits. */
static bool get_varint(reader *r, uint64_t *out) {
  uint64_t value = 0;
  for (unsigned shift = 0; shift < 70; shift += 7) {
    uint8_t byte;
    if (!get_byte(r, &byte)) return false;
    if (shift == 63 && byte > 1) return fail(r, "varint overflows 64 bits");
    value |= (uint64_t)(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) {
      if (byte == 0 && shift > 0) return fail(r, "varint is not minimal");
      *out = value;
      return true;
    }
  }
  return fail(r, "varint overflows 64 bits");
}

/* Reads a count of items that take at least `min_bytes` each, so a count
 * larger than the input can hold is rejected before anything is allocated. */
static bool get_count(reader *r, size_t min_bytes, size_t *out) {
  uint64_t n;
  if (!get_varint(r, &n)) return false;
  if (n > remaining(r) / min_bytes) return fail(r, "count exceeds the message size");
  *out = (size_t)n;
  return true;
}

static bool get_string(reader *r, const char **s, size_t *len) {
  uint64_t n;
  if (!get_varint(r, &n)) return false;
  if (n > remaining(r)) return fail(r, "string length exceeds the message size");
  *s = (const char *)r->p;
  *len = (size_t)n;
  r->p += n;
  return true;
}

static bool get_index(reader *r, size_t limit, size_t *out) {
  uint64_t n;
  if (!get_varint(r, &n)) return false;
  if (n >= limit) return fail(r, "index out of range");
  *out = (size_t)n;
  return true;
}

static bool get_counter(reader *r, uint64_t *out) {
  if (!get_varint(r, out)) return false;
  if (!counter_ok(*out)) return fail(r, "counter out of range");
  return true;
}

/* The message's replica table, borrowed from the input. */
typedef struct decode_run {
  reader r;
  hark__rref *refs;
  size_t ref_count;
  bool *seen; /* per replica index, scratch for duplicate checks */
} decode_run;

static bool get_refs(decode_run *run) {
  reader *r = &run->r;
  /* A replica takes at least 3 bytes: length, one name byte, vsn. */
  if (!get_count(r, 3, &run->ref_count)) return false;
  if (run->ref_count == 0) return fail(r, "empty replica table");
  if (run->ref_count > HARK__WIRE_MAX_REPLICAS) return fail(r, "too many replicas");
  run->refs = malloc(run->ref_count * sizeof(*run->refs));
  run->seen = malloc(run->ref_count * sizeof(*run->seen));
  if (run->refs == NULL || run->seen == NULL) return false;

  for (size_t i = 0; i < run->ref_count; i++) {
    hark__rref *ref = &run->refs[i];
    if (!get_string(r, &ref->name, &ref->name_len) || !get_varint(r, &ref->vsn)) return false;
    if (ref->name_len == 0) return fail(r, "empty replica name");
    if (memchr(ref->name, '\0', ref->name_len) != NULL) return fail(r, "NUL in replica name");
    for (size_t k = 0; k < i; k++) {
      if (hark__rref_equal(run->refs[k], *ref)) return fail(r, "duplicate replica");
    }
  }
  return true;
}

static void clear_seen(decode_run *run) {
  memset(run->seen, 0, run->ref_count * sizeof(*run->seen));
}

static bool get_clock(decode_run *run, hark__clock *clock) {
  reader *r = &run->r;
  size_t count;
  if (!get_count(r, 2, &count)) return false;
  clear_seen(run);
  for (size_t i = 0; i < count; i++) {
    size_t index;
    uint64_t counter;
    if (!get_index(r, run->ref_count, &index) || !get_counter(r, &counter)) return false;
    if (run->seen[index]) return fail(r, "duplicate clock key");
    run->seen[index] = true;
    if (hark__clock_set(clock, run->refs[index], counter) != 0) return false;
  }
  return true;
}

static bool get_cloud(reader *r, hark__dotset *cloud) {
  size_t count;
  if (!get_count(r, 2, &count)) return false;
  uint64_t previous_hi = 0;
  for (size_t k = 0; k < count; k++) {
    uint64_t gap, length;
    if (!get_varint(r, &gap) || !get_varint(r, &length)) return false;
    /* Intervals are sorted, disjoint and not adjacent: after the first,
     * the gap is at least one counter. */
    if (k > 0 && gap == 0) return fail(r, "adjacent cloud intervals");
    if (gap > HARK__WIRE_MAX_COUNTER || length > HARK__WIRE_MAX_COUNTER) {
      return fail(r, "counter out of range");
    }
    uint64_t lo = previous_hi + 1 + gap;
    uint64_t hi = lo + length;
    if (!counter_ok(hi)) return fail(r, "counter out of range");
    if (hark__dotset_add_range(cloud, lo, hi) != 0) return false;
    previous_hi = hi;
  }
  return true;
}

static bool get_section(decode_run *run, hark__delta *delta) {
  reader *r = &run->r;
  size_t index;
  uint8_t flags;
  if (!get_index(r, run->ref_count, &index) || !get_byte(r, &flags)) return false;
  if (run->seen[index]) return fail(r, "duplicate delta section");
  run->seen[index] = true;
  if (flags & ~SECTION_FLAGS) return fail(r, "unknown section flags");
  bool full = delta->kind == HARK__DELTA_FULL;
  if (full ? (flags & (SECTION_START | SECTION_END)) : (flags & SECTION_CONTEXT)) {
    return fail(r, "section fields do not match the delta kind");
  }

  long at = hark__delta_replica_index(delta, run->refs[index], true);
  if (at < 0) return false;
  hark__delta_replica *section = &delta->replicas[at];
  section->has_context = flags & SECTION_CONTEXT;
  section->has_start = flags & SECTION_START;
  section->has_end = flags & SECTION_END;
  if (section->has_context && !get_counter(r, &section->context)) return false;
  if (section->has_start && !get_counter(r, &section->start)) return false;
  if (section->has_end && !get_counter(r, &section->end)) return false;
  if (section->has_start && section->has_end && section->start > section->end) {
    return fail(r, "range start above range end");
  }
  return get_cloud(r, &section->cloud);
}

/* The topic table, borrowed from the input. */
typedef struct topic_table {
  const char **names;
  size_t *lens;
  size_t count;
} topic_table;

static bool get_topics(reader *r, topic_table *topics) {
  if (!get_count(r, 1, &topics->count)) return false;
  topics->names = malloc((topics->count + 1) * sizeof(*topics->names));
  topics->lens = malloc((topics->count + 1) * sizeof(*topics->lens));
  if (topics->names == NULL || topics->lens == NULL) return false;
  for (size_t i = 0; i < topics->count; i++) {
    if (!get_string(r, &topics->names[i], &topics->lens[i])) return false;
  }
  return true;
}

static bool is_json_object(const char *s, size_t len) {
  size_t i = 0;
  while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) i++;
  return i < len && s[i] == '{' && hark_json_valid(s, len);
}

/* Maps message replica indexes to the delta's own indexes, adding
 * replicas that have values but no section. */
static long delta_index_of(decode_run *run, hark__delta *delta, long *map, size_t index) {
  if (map[index] < 0) map[index] = hark__delta_replica_index(delta, run->refs[index], true);
  return map[index];
}

static bool get_value(decode_run *run, hark__delta *delta, const topic_table *topics, long *map,
                      uint64_t *previous_counter, uint64_t *previous_owner) {
  reader *r = &run->r;
  size_t index, topic;
  uint64_t z_counter, z_owner;
  const char *key, *meta;
  size_t key_len, meta_len;
  if (!get_index(r, run->ref_count, &index) || !get_varint(r, &z_counter) ||
      !get_varint(r, &z_owner) || !get_index(r, topics->count, &topic) ||
      !get_string(r, &key, &key_len) || !get_string(r, &meta, &meta_len)) {
    return false;
  }
  uint64_t counter = unzigzag(z_counter, *previous_counter);
  uint64_t owner = unzigzag(z_owner, *previous_owner);
  if (counter == 0 || !counter_ok(counter)) return fail(r, "counter out of range");
  if (key_len > HARK__MAX_KEY_LEN) return fail(r, "key too long");
  if (meta_len > UINT32_MAX || topics->lens[topic] > UINT32_MAX) return fail(r, "value too long");
  if (!is_json_object(meta, meta_len)) return fail(r, "meta is not a JSON object");

  long at = delta_index_of(run, delta, map, index);
  if (at < 0) return false;
  if (hark__delta_add_value(delta, (uint32_t)at, counter, owner, topics->names[topic],
                            topics->lens[topic], key, key_len, meta, meta_len) != 0) {
    return false;
  }
  *previous_counter = counter;
  *previous_owner = owner;
  return true;
}

/* Rejects a delta that holds one tag twice: the state stores one entry per
 * tag. */
static bool unique_tags(reader *r, const hark__delta *delta) {
  hark__delta_index index;
  if (hark__delta_index_build(&index, delta) != 0) return false;
  bool ok = true;
  for (size_t i = 0; ok && i < delta->value_count; i++) {
    const hark__delta_value *v = &delta->values[i];
    ok = hark__delta_index_find(&index, v->replica, v->counter) == (long)i;
  }
  hark__delta_index_free(&index);
  return ok || fail(r, "duplicate tag");
}

static bool get_values(decode_run *run, hark__delta *delta) {
  reader *r = &run->r;
  topic_table topics = {0};
  long *map = malloc(run->ref_count * sizeof(*map));
  bool ok = map != NULL && get_topics(r, &topics);

  size_t count = 0;
  /* A value takes at least 6 bytes: replica, counter, owner, topic, two
   * lengths. The meta check raises the real minimum to 8. */
  if (ok) ok = get_count(r, 6, &count);
  if (ok) ok = hark__delta_reserve_values(delta, count, 0) == 0;
  for (size_t i = 0; ok && i < run->ref_count; i++) {
    map[i] = hark__delta_find_replica(delta, run->refs[i]);
  }
  uint64_t previous_counter = 0, previous_owner = 0;
  for (size_t i = 0; ok && i < count; i++) {
    ok = get_value(run, delta, &topics, map, &previous_counter, &previous_owner);
  }
  if (ok) ok = unique_tags(r, delta);

  free(map);
  free(topics.names);
  free(topics.lens);
  return ok;
}

static bool get_delta(decode_run *run, hark__delta **out) {
  reader *r = &run->r;
  uint8_t kind;
  size_t creator, sections;
  if (!get_byte(r, &kind) || !get_index(r, run->ref_count, &creator)) return false;
  if (kind != HARK__DELTA_WINDOW && kind != HARK__DELTA_FULL) return fail(r, "unknown delta kind");
  if (!get_count(r, 3, &sections)) return false;

  *out = hark__delta_new((hark__delta_kind)kind, run->refs[creator]);
  if (*out == NULL) return false;
  clear_seen(run);
  for (size_t i = 0; i < sections; i++) {
    if (!get_section(run, *out)) return false;
  }
  return get_values(run, *out);
}

static bool get_body(decode_run *run, hark__wire_msg *msg) {
  reader *r = &run->r;
  uint8_t flag;
  switch (msg->type) {
  case HARK__WIRE_HEARTBEAT:
    if (!get_clock(run, &msg->clock) || !get_byte(r, &flag)) return false;
    if (flag > 1) return fail(r, "invalid payload flag");
    if (flag == 0) return true;
    if (!get_delta(run, &msg->payload)) return false;
    if (msg->payload->kind != HARK__DELTA_WINDOW) return fail(r, "heartbeat carries a full extract");
    return true;
  case HARK__WIRE_TRANSFER_REQ:
    return get_varint(r, &msg->request_id) && get_clock(run, &msg->clock);
  case HARK__WIRE_TRANSFER_ACK:
    return get_varint(r, &msg->request_id) && get_delta(run, &msg->payload);
  case HARK__WIRE_GRACEFUL_PERMDOWN:
    return true;
  }
  return fail(r, "unknown message type");
}

static bool get_message(decode_run *run, hark__wire_msg *msg) {
  reader *r = &run->r;
  uint8_t version, type;
  size_t from;
  if (!get_byte(r, &version)) return false;
  if (version != HARK__WIRE_VERSION) return fail(r, "unsupported format version");
  if (!get_byte(r, &type)) return false;
  if (type < HARK__WIRE_HEARTBEAT || type > HARK__WIRE_GRACEFUL_PERMDOWN) {
    return fail(r, "unknown message type");
  }
  msg->type = (hark__wire_type)type;
  if (!get_refs(run) || !get_index(r, run->ref_count, &from)) return false;
  if (from != 0) return fail(r, "sender is not the first replica");

  hark__rref sender = run->refs[0];
  msg->from_name = malloc(sender.name_len + 1);
  if (msg->from_name == NULL) return false;
  memcpy(msg->from_name, sender.name, sender.name_len);
  msg->from_name[sender.name_len] = '\0';
  msg->from = (hark__rref){msg->from_name, sender.name_len, sender.vsn};

  if (!get_body(run, msg)) return false;
  if (r->p != r->end) return fail(r, "trailing bytes");
  return true;
}

int hark__wire_decode(const void *data, size_t len, hark__wire_msg *msg, const char **error) {
  *msg = (hark__wire_msg){0};
  decode_run run = {.r = {.p = data, .end = (const uint8_t *)data + len}};
  if (data == NULL) run.r.end = run.r.p;

  bool ok = get_message(&run, msg);
  free(run.refs);
  free(run.seen);
  if (ok) return 0;

  hark__wire_msg_free(msg);
  if (error != NULL) *error = run.r.error ? run.r.error : "out of memory";
  return run.r.error ? HARK_EINVAL : HARK_ENOMEM;
}

void hark__wire_msg_free(hark__wire_msg *msg) {
  free(msg->from_name);
  hark__clock_free(&msg->clock);
  hark__delta_free(msg->payload);
  *msg = (hark__wire_msg){0};
}
