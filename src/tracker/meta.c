#include "tracker/meta.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/json.h"
#include "hark/error.h"

/* One member of the caller's object, as raw text: the name token with its
 * quotes, and the value. */
typedef struct member {
  const char *name;
  size_t name_len;
  const char *value;
  size_t value_len;
} member;

/* A growable list of members; the first few live on the stack. */
typedef struct member_list {
  member *items;
  size_t count;
  size_t cap;
  member inline_items[16];
} member_list;

static bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static size_t skip_space(const char *data, size_t len, size_t pos) {
  while (pos < len && is_space(data[pos])) pos++;
  return pos;
}

static int members_add(member_list *list, const member *m) {
  if (list->count == list->cap) {
    size_t cap = list->cap * 2;
    member *grown = malloc(cap * sizeof(*grown));
    if (grown == NULL) return -1;
    memcpy(grown, list->items, list->count * sizeof(*grown));
    if (list->items != list->inline_items) free(list->items);
    list->items = grown;
    list->cap = cap;
  }
  list->items[list->count++] = *m;
  return 0;
}

/* Splits the object that starts at data[pos] ('{') into its members. The
 * whole text has been validated, so every scan below succeeds. */
static int split_members(const char *data, size_t len, size_t pos, member_list *list) {
  pos = skip_space(data, len, pos + 1);
  while (data[pos] != '}') {
    member m;
    m.name = data + pos;
    m.name_len = (size_t)hark_json_skip_value(m.name, len - pos);
    pos = skip_space(data, len, pos + m.name_len); /* at the ':' */
    pos = skip_space(data, len, pos + 1);
    m.value = data + pos;
    m.value_len = (size_t)hark_json_skip_value(m.value, len - pos);
    if (members_add(list, &m) != 0) return HARK_ENOMEM;

    pos = skip_space(data, len, pos + m.value_len);
    if (data[pos] == ',') pos = skip_space(data, len, pos + 1);
  }
  return 0;
}

/* Compares the decoded names of two valid string tokens. Returns 1 when
 * equal, 0 when not, -1 when out of memory. Tokens without escapes compare
 * as raw bytes. */
static int names_equal(const char *a, size_t a_len, const char *b, size_t b_len) {
  bool escaped = memchr(a, '\\', a_len) != NULL || memchr(b, '\\', b_len) != NULL;
  if (!escaped) return a_len == b_len && memcmp(a, b, a_len) == 0;

  hark_buf da = {0}, db = {0};
  int rc = -1;
  if (hark_json_decode_string(a, a_len, &da) == 0 && hark_json_decode_string(b, b_len, &db) == 0) {
    rc = da.len == db.len && (da.len == 0 || memcmp(da.data, db.data, da.len) == 0);
  }
  hark_buf_free(&da);
  hark_buf_free(&db);
  return rc;
}

static int name_is(const member *m, const char *token) {
  return names_equal(m->name, m->name_len, token, strlen(token));
}

/* Returns 1 when member i is to be dropped: it is a ref the tracker sets, or
 * a later member has the same name (jansson kept the last one too). Returns -1
 * when out of memory. */
static int member_dropped(const member_list *list, size_t i) {
  const member *m = &list->items[i];
  int rc = name_is(m, "\"phx_ref\"");
  if (rc == 0) rc = name_is(m, "\"phx_ref_prev\"");

  for (size_t j = i + 1; rc == 0 && j < list->count; j++) {
    rc = names_equal(m->name, m->name_len, list->items[j].name, list->items[j].name_len);
  }
  return rc;
}

/* Returns the offset past the string token that starts at text[pos], or 0
 * when it contains \u0000, which jansson rejects. The token is valid. */
static size_t string_end(const char *text, size_t pos) {
  for (pos++;; pos++) {
    if (text[pos] == '"') return pos + 1;
    if (text[pos] != '\\') continue;
    if (text[pos + 1] == 'u' && memcmp(text + pos + 2, "0000", 4) == 0) return 0;
    pos++;
  }
}

static bool is_number_char(char c) {
  return (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E';
}

/* True when jansson can load the valid number token [text, text+len): an
 * integer must fit int64, a real must not overflow a double. The token is
 * followed by a byte that ends it, so strtod stops there. */
static bool number_loadable(const char *text, size_t len) {
  bool real = memchr(text, '.', len) || memchr(text, 'e', len) || memchr(text, 'E', len);
  if (real) {
    errno = 0;
    double value = strtod(text, NULL);
    return !(errno == ERANGE && isinf(value));
  }

  bool negative = text[0] == '-';
  const char *digits = text + negative;
  size_t count = len - negative;
  const char *max = negative ? "9223372036854775808" : "9223372036854775807";
  if (count < 19) return true;
  return count == 19 && memcmp(digits, max, 19) <= 0;
}

/* Copies a valid JSON value, dropping the whitespace outside its strings.
 * Returns the bytes written, or -1 when the value holds something jansson
 * cannot load (see hark__meta_stamp). */
static long copy_compact(char *out, const char *value, size_t len) {
  size_t n = 0;
  size_t pos = 0;
  while (pos < len) {
    char c = value[pos];
    size_t end = pos + 1;
    if (c == '"') {
      end = string_end(value, pos);
      if (end == 0) return -1;
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      while (end < len && is_number_char(value[end])) end++;
      if (!number_loadable(value + pos, end - pos)) return -1;
    } else if (is_space(c)) {
      pos = end;
      continue;
    }
    memcpy(out + n, value + pos, end - pos);
    n += end - pos;
    pos = end;
  }
  return (long)n;
}

static size_t put_ref(char *out, const char *name, const char *ref) {
  size_t n = 0;
  size_t name_len = strlen(name), ref_len = strlen(ref);
  memcpy(out + n, name, name_len);
  n += name_len;
  out[n++] = '"';
  memcpy(out + n, ref, ref_len);
  n += ref_len;
  out[n++] = '"';
  return n;
}

/* Writes the kept members, comma-separated. Returns the bytes written, or a
 * negative HARK_E* code. */
static long write_members(const member_list *list, char *out) {
  long n = 0;
  for (size_t i = 0; i < list->count; i++) {
    int dropped = member_dropped(list, i);
    if (dropped < 0) return HARK_ENOMEM;
    if (dropped) continue;

    const member *m = &list->items[i];
    if (n > 0) out[n++] = ',';
    long name = copy_compact(out + n, m->name, m->name_len);
    if (name < 0) return HARK_EINVAL;
    n += name;
    out[n++] = ':';
    long value = copy_compact(out + n, m->value, m->value_len);
    if (value < 0) return HARK_EINVAL;
    n += value;
  }
  return n;
}

int hark__meta_stamp(const char *meta, size_t meta_len, const char *ref, const char *prev,
                     char *out, size_t *out_len) {
  member_list list = {.cap = 16};
  list.items = list.inline_items;

  if (meta != NULL && skip_space(meta, meta_len, 0) < meta_len) {
    size_t start = skip_space(meta, meta_len, 0);
    if (meta[start] != '{' || !hark_json_valid(meta, meta_len)) return HARK_EINVAL;
    int rc = split_members(meta, meta_len, start, &list);
    if (rc != 0) {
      if (list.items != list.inline_items) free(list.items);
      return rc;
    }
  }

  out[0] = '{';
  long n = write_members(&list, out + 1);
  if (list.items != list.inline_items) free(list.items);
  if (n < 0) return (int)n;

  size_t at = 1 + (size_t)n;
  if (n > 0) out[at++] = ',';
  at += put_ref(out + at, "\"phx_ref\":", ref);
  if (prev != NULL) {
    out[at++] = ',';
    at += put_ref(out + at, "\"phx_ref_prev\":", prev);
  }
  out[at++] = '}';
  *out_len = at;
  return 0;
}
