/* Encoding and strict decoding of the inter-node envelope (layout in envelope.h). */
#include "pubsub/envelope.h"

#include <stdint.h>
#include <string.h>

/* A u32 needs at most 5 LEB128 bytes. */
#define VARINT_MAX_BYTES 5
#define FLAG_BINARY 0x01u

static size_t varint_size(size_t value) {
  size_t n = 1;
  while (value >= 0x80) {
    value >>= 7;
    n++;
  }
  return n;
}

static size_t varint_write(size_t value, unsigned char *out) {
  size_t n = 0;
  while (value >= 0x80) {
    out[n++] = (unsigned char)(value | 0x80);
    value >>= 7;
  }
  out[n++] = (unsigned char)value;
  return n;
}

static int name_is_valid(const char *name, size_t len) {
  if (len == 0 || len > HARK_ENVELOPE_MAX_NAME) return 0;
  return memchr(name, '\0', len) == NULL;
}

size_t hark__envelope_size(const hark__envelope *env) {
  if (!name_is_valid(env->origin, env->origin_len)) return 0;
  if (!name_is_valid(env->dispatcher, env->dispatcher_len)) return 0;
  if (env->topic_len > HARK_ENVELOPE_MAX_TOPIC) return 0;
  if (env->msg.event_len > HARK_ENVELOPE_MAX_EVENT) return 0;
  if (env->msg.payload_len > HARK_ENVELOPE_MAX_PAYLOAD) return 0;

  size_t size = 2; /* version and flags */
  size += varint_size(env->origin_len) + env->origin_len;
  size += varint_size(env->dispatcher_len) + env->dispatcher_len;
  size += varint_size(env->topic_len) + env->topic_len;
  size += varint_size(env->msg.event_len) + env->msg.event_len;
  size += varint_size(env->msg.payload_len) + env->msg.payload_len;
  return size;
}

static size_t field_write(const char *bytes, size_t len, unsigned char *out) {
  size_t n = varint_write(len, out);
  if (len > 0) memcpy(out + n, bytes, len);
  return n + len;
}

size_t hark__envelope_write(const hark__envelope *env, unsigned char *out) {
  size_t n = 0;
  out[n++] = HARK_ENVELOPE_VERSION;
  n += field_write(env->origin, env->origin_len, out + n);
  n += field_write(env->dispatcher, env->dispatcher_len, out + n);
  n += field_write(env->topic, env->topic_len, out + n);
  n += field_write(env->msg.event, env->msg.event_len, out + n);
  n += field_write(env->msg.payload, env->msg.payload_len, out + n);
  out[n++] = env->msg.binary ? FLAG_BINARY : 0;
  return n;
}

/* ---- Decoding ---- */

typedef struct reader {
  const unsigned char *p;
  size_t left;
  const char *error;
} reader;

static int fail(reader *r, const char *error) {
  if (r->error == NULL) r->error = error;
  return -1;
}

/* Reads a shortest-form varint of at most 5 bytes whose value fits 32 bits. */
static int read_varint(reader *r, size_t *out) {
  uint64_t value = 0;
  for (size_t i = 0; i < VARINT_MAX_BYTES; i++) {
    if (r->left == 0) return fail(r, "truncated length");
    unsigned char byte = *r->p++;
    r->left--;
    value |= (uint64_t)(byte & 0x7f) << (7 * i);
    if ((byte & 0x80) == 0) {
      if (byte == 0 && i > 0) return fail(r, "length not in shortest form");
      if (value > UINT32_MAX) return fail(r, "length above 32 bits");
      *out = (size_t)value;
      return 0;
    }
  }
  return fail(r, "length longer than 5 bytes");
}

/* Reads a length and that many bytes, with the length at most `max`. */
static int read_field(reader *r, size_t max, const char *too_long, const char **bytes,
                      size_t *len) {
  size_t n;
  if (read_varint(r, &n) != 0) return -1;
  if (n > max) return fail(r, too_long);
  if (n > r->left) return fail(r, "length beyond the end of the envelope");
  *bytes = (const char *)r->p;
  *len = n;
  r->p += n;
  r->left -= n;
  return 0;
}

static int read_name(reader *r, const char *what_invalid, const char **bytes, size_t *len) {
  if (read_field(r, HARK_ENVELOPE_MAX_NAME, what_invalid, bytes, len) != 0) return -1;
  if (!name_is_valid(*bytes, *len)) return fail(r, what_invalid);
  return 0;
}

static int read_all(reader *r, hark__envelope *env) {
  if (r->left == 0) return fail(r, "empty envelope");
  if (*r->p != HARK_ENVELOPE_VERSION) return fail(r, "unknown envelope version");
  r->p++;
  r->left--;

  if (read_name(r, "invalid origin node name", &env->origin, &env->origin_len) != 0) return -1;
  if (read_name(r, "invalid dispatcher name", &env->dispatcher, &env->dispatcher_len) != 0)
    return -1;
  if (read_field(r, HARK_ENVELOPE_MAX_TOPIC, "topic too long", &env->topic, &env->topic_len) != 0)
    return -1;
  if (read_field(r, HARK_ENVELOPE_MAX_EVENT, "event too long", &env->msg.event,
                 &env->msg.event_len) != 0)
    return -1;
  if (read_field(r, HARK_ENVELOPE_MAX_PAYLOAD, "payload too long", &env->msg.payload,
                 &env->msg.payload_len) != 0)
    return -1;

  if (r->left == 0) return fail(r, "truncated flags");
  unsigned char flags = *r->p;
  r->p++;
  r->left--;
  if ((flags & ~FLAG_BINARY) != 0) return fail(r, "unknown flags");
  env->msg.binary = (flags & FLAG_BINARY) != 0;

  if (r->left != 0) return fail(r, "trailing bytes after the envelope");
  return 0;
}

int hark__envelope_decode(const void *data, size_t len, hark__envelope *out, const char **error) {
  reader r = {.p = data, .left = len, .error = NULL};
  hark__envelope env;
  memset(&env, 0, sizeof env);

  if (data == NULL && len > 0) r.error = "no input";
  if (r.error == NULL && read_all(&r, &env) == 0) {
    *out = env;
    return HARK_OK;
  }
  if (error != NULL) *error = r.error;
  return HARK_EINVAL;
}
