#include "base/buf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int hark_buf_grow_capacity(size_t cap, size_t need, size_t *out) {
  if (cap == 0) cap = 64;
  while (cap < need) {
    if (cap > SIZE_MAX / 2) return -1;
    cap *= 2;
  }
  *out = cap;
  return 0;
}

int hark_buf_reserve(hark_buf *buf, size_t extra) {
  if (buf->cap - buf->len >= extra) return 0;

  size_t need = buf->len + extra;
  size_t cap;
  if (need < buf->len || hark_buf_grow_capacity(buf->cap, need, &cap) != 0) return -1;

  char *data = realloc(buf->data, cap);
  if (!data) return -1;
  buf->data = data;
  buf->cap = cap;
  return 0;
}

int hark_buf_append(hark_buf *buf, const void *data, size_t len) {
  if (len == 0) return 0;
  if (hark_buf_reserve(buf, len) != 0) return -1;
  memcpy(buf->data + buf->len, data, len);
  buf->len += len;
  return 0;
}

int hark_buf_append_str(hark_buf *buf, const char *s) { return hark_buf_append(buf, s, strlen(s)); }

int hark_buf_append_byte(hark_buf *buf, char c) { return hark_buf_append(buf, &c, 1); }

int hark_buf_printf(hark_buf *buf, const char *fmt, ...) {
  va_list args;
  va_start(args, fmt);
  int need = vsnprintf(NULL, 0, fmt, args);
  va_end(args);
  if (need < 0 || hark_buf_reserve(buf, (size_t)need + 1) != 0) return -1;

  va_start(args, fmt);
  vsnprintf(buf->data + buf->len, (size_t)need + 1, fmt, args);
  va_end(args);
  buf->len += (size_t)need;
  return 0;
}

void hark_buf_consume(hark_buf *buf, size_t n) {
  if (n >= buf->len) {
    buf->len = 0;
    return;
  }
  memmove(buf->data, buf->data + n, buf->len - n);
  buf->len -= n;
}

void hark_buf_reset(hark_buf *buf) { buf->len = 0; }

void hark_buf_free(hark_buf *buf) {
  free(buf->data);
  buf->data = NULL;
  buf->len = buf->cap = 0;
}

hark_shared_bytes *hark_shared_bytes_new(size_t len) {
  hark_shared_bytes *bytes = malloc(sizeof *bytes + len);
  if (!bytes) return NULL;
  atomic_init(&bytes->refs, 1);
  bytes->len = len;
  return bytes;
}

hark_shared_bytes *hark_shared_bytes_ref(hark_shared_bytes *bytes) {
  atomic_fetch_add_explicit(&bytes->refs, 1, memory_order_relaxed);
  return bytes;
}

void hark_shared_bytes_unref(hark_shared_bytes *bytes) {
  if (!bytes) return;
  if (atomic_fetch_sub_explicit(&bytes->refs, 1, memory_order_acq_rel) == 1) free(bytes);
}
