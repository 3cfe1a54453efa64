#include "server/channel_codec.h"

#include <string.h>

#include "base/utf8.h"

/* The V2 binary push header: the kind byte, then one length byte for each of
 * join_ref, ref, topic and event. */
#define BINARY_PUSH_HEADER_BYTES 5
#define BINARY_KIND_PUSH 0
#define BINARY_KIND_BROADCAST 2
#define BINARY_FIELD_MAX_BYTES 255

static const char NULL_TOKEN[] = "null";

/* ---- vsn negotiation ---- */

/* Reads one semantic-version number (digits, no leading zero) at s[*pos],
 * stores its text and leaves *pos past it. Returns 0, or -1 when there is none. */
static int read_version_number(const char *s, size_t len, size_t *pos, hark_span *number) {
  size_t start = *pos;
  while (*pos < len && s[*pos] >= '0' && s[*pos] <= '9') (*pos)++;

  number->ptr = s + start;
  number->len = *pos - start;
  if (number->len == 0 || (number->len > 1 && s[start] == '0')) return -1;
  return 0;
}

/* Reads the '.' at s[*pos]. Returns 0, or -1 when there is none. */
static int read_dot(const char *s, size_t len, size_t *pos) {
  if (*pos >= len || s[*pos] != '.') return -1;
  (*pos)++;
  return 0;
}

static int span_equals(hark_span span, const char *text) {
  return span.len == strlen(text) && memcmp(span.ptr, text, span.len) == 0;
}

/* Phoenix accepts vsn values that match `~> 1.0.0` (V1) or `~> 2.0.0` (V2),
 * that is MAJOR.0.PATCH for MAJOR 1 or 2. This parser is stricter than a full
 * semantic-version parser: pre-release and build suffixes are rejected. */
int hark_serializer_from_vsn(const char *vsn, size_t len, hark_serializer *out) {
  if (vsn == NULL) {
    *out = HARK_SERIALIZER_V1;
    return 0;
  }

  hark_span major;
  hark_span minor;
  hark_span patch;
  size_t pos = 0;
  if (read_version_number(vsn, len, &pos, &major) != 0 || read_dot(vsn, len, &pos) != 0 ||
      read_version_number(vsn, len, &pos, &minor) != 0 || read_dot(vsn, len, &pos) != 0 ||
      read_version_number(vsn, len, &pos, &patch) != 0 || pos != len) {
    return -1;
  }

  if (!span_equals(minor, "0")) return -1;
  if (span_equals(major, "1")) {
    *out = HARK_SERIALIZER_V1;
  } else if (span_equals(major, "2")) {
    *out = HARK_SERIALIZER_V2;
  } else {
    return -1;
  }
  return 0;
}

/* ---- decoding ---- */

/* A decoded field whose bytes are either in the input frame or in the
 * decoder's scratch buffer. Scratch grows by realloc while a frame is decoded,
 * so scratch fields keep an offset and get their pointer once decoding ends. */
typedef struct field {
  const char *ptr; /* bytes outside scratch, when !in_scratch */
  size_t offset;   /* start in scratch, when in_scratch */
  size_t len;
  int in_scratch;
} field;

typedef struct fields {
  field join_ref;
  field ref;
  field topic;
  field event;
  field payload;
} fields;

static field input_field(const char *ptr, size_t len) {
  field f = {ptr, 0, len, 0};
  return f;
}

static hark_span resolve(const hark_channel_decoder *decoder, field f) {
  hark_span span = {f.in_scratch ? decoder->scratch.data + f.offset : f.ptr, f.len};
  return span;
}

static int fail(hark_channel_decoder *decoder, const char *error) {
  decoder->error = error;
  return -1;
}

/* Appends `len` bytes of UTF-8 as a JSON string token to scratch. */
static int append_ref_token(hark_channel_decoder *decoder, const char *s, size_t len, field *out) {
  size_t start = decoder->scratch.len;
  if (hark_json_append_string(&decoder->scratch, s, len) != 0) return -1;

  out->in_scratch = 1;
  out->offset = start;
  out->len = decoder->scratch.len - start;
  return 0;
}

/* Decodes a string token into scratch and stores where its value lies. */
static int decode_string_field(hark_channel_decoder *decoder, const char *token, size_t len,
                               field *out) {
  size_t start = decoder->scratch.len;
  if (hark_json_decode_string(token, len, &decoder->scratch) != 0) return -1;

  out->in_scratch = 1;
  out->offset = start;
  out->len = decoder->scratch.len - start;
  return 0;
}

/* Turns a ref token into its canonical form: null and numbers stay as sent,
 * and a string is decoded and escaped again in the one way that
 * hark_json_append_string writes, so "\u0031" and "1" give the same token. */
static int canonical_ref(hark_channel_decoder *decoder, const char *token, size_t len, field *out) {
  char first = token[0];
  if (first == 'n') {
    *out = input_field(NULL_TOKEN, 4);
    return 0;
  }
  if (first == '-' || (first >= '0' && first <= '9')) {
    *out = input_field(token, len);
    return 0;
  }
  if (first != '"') return fail(decoder, "join_ref and ref must be null, a string or a number");

  field decoded;
  if (decode_string_field(decoder, token, len, &decoded) != 0) {
    return fail(decoder, "out of memory");
  }

  /* Escaping at most multiplies the length by 6, plus 2 quotes. With that
   * room reserved, hark_json_append_string does not reallocate, so it may
   * read the decoded bytes from scratch itself. The decoded copy is then
   * replaced by the escaped one. */
  if (hark_buf_reserve(&decoder->scratch, decoded.len * 6 + 2) != 0) {
    return fail(decoder, "out of memory");
  }
  const char *value = decoder->scratch.data + decoded.offset;
  if (append_ref_token(decoder, value, decoded.len, out) != 0) {
    return fail(decoder, "out of memory");
  }

  memmove(decoder->scratch.data + decoded.offset, decoder->scratch.data + out->offset, out->len);
  out->offset = decoded.offset;
  decoder->scratch.len = decoded.offset + out->len;
  return 0;
}

static int string_field(hark_channel_decoder *decoder, const char *token, size_t len, field *out,
                        const char *type_error) {
  if (token[0] != '"') return fail(decoder, type_error);
  if (decode_string_field(decoder, token, len, out) != 0) return fail(decoder, "out of memory");
  return 0;
}

/* Stores the refs, topic and event from their raw JSON tokens. */
static int decode_json_fields(hark_channel_decoder *decoder, const hark_span *join_ref,
                              const hark_span *ref, const hark_span *topic, const hark_span *event,
                              fields *out) {
  if (canonical_ref(decoder, join_ref->ptr, join_ref->len, &out->join_ref) != 0) return -1;
  if (canonical_ref(decoder, ref->ptr, ref->len, &out->ref) != 0) return -1;
  if (string_field(decoder, topic->ptr, topic->len, &out->topic, "topic must be a string") != 0) {
    return -1;
  }
  return string_field(decoder, event->ptr, event->len, &out->event, "event must be a string");
}

static size_t skip_space(const char *data, size_t len, size_t pos) {
  while (pos < len &&
         (data[pos] == ' ' || data[pos] == '\t' || data[pos] == '\n' || data[pos] == '\r'))
    pos++;
  return pos;
}

/* Locates the value at data[pos] in text already known to be valid JSON.
 * Returns the offset past it. */
static size_t locate_value(const char *data, size_t len, size_t pos, hark_span *out) {
  long n = hark_json_skip_value(data + pos, len - pos);
  out->ptr = data + pos;
  out->len = (size_t)n;
  return pos + (size_t)n;
}

/* V2 text: [join_ref, ref, topic, event, payload, ...], extras ignored. */
static int decode_v2_text(hark_channel_decoder *decoder, const char *data, size_t len,
                          fields *out) {
  size_t pos = skip_space(data, len, 0);
  if (data[pos] != '[') {
    return fail(decoder, "expected a JSON array [join_ref, ref, topic, event, payload]");
  }

  hark_span element[5];
  pos = skip_space(data, len, pos + 1);
  for (size_t i = 0; i < 5; i++) {
    if (data[pos] == ']') return fail(decoder, "expected at least 5 array elements");
    pos = locate_value(data, len, pos, &element[i]);
    pos = skip_space(data, len, pos);
    if (data[pos] == ',') pos = skip_space(data, len, pos + 1);
  }

  out->payload = input_field(element[4].ptr, element[4].len);
  return decode_json_fields(decoder, &element[0], &element[1], &element[2], &element[3], out);
}

/* Returns 1 when the JSON string token `key` decodes to `name`. Decodes into
 * the unused end of scratch only when the key has escapes. */
static int key_equals(hark_channel_decoder *decoder, const hark_span *key, const char *name) {
  size_t name_len = strlen(name);
  if (memchr(key->ptr, '\\', key->len) == NULL) {
    return key->len == name_len + 2 && memcmp(key->ptr + 1, name, name_len) == 0;
  }

  size_t start = decoder->scratch.len;
  if (hark_json_decode_string(key->ptr, key->len, &decoder->scratch) != 0) return 0;
  size_t decoded_len = decoder->scratch.len - start;
  int equal = decoded_len == name_len && memcmp(decoder->scratch.data + start, name, name_len) == 0;
  decoder->scratch.len = start;
  return equal;
}

/* V1 text: {"topic", "event", "payload", "ref", optional "join_ref"}. A
 * repeated key counts by its last occurrence, as in a decoded map. */
static int decode_v1_text(hark_channel_decoder *decoder, const char *data, size_t len,
                          fields *out) {
  static const char *const names[] = {"join_ref", "ref", "topic", "event", "payload"};
  hark_span member[5] = {{NULL, 0}};

  size_t pos = skip_space(data, len, 0);
  if (data[pos] != '{') {
    return fail(decoder, "expected a JSON object with topic, event, payload and ref");
  }

  pos = skip_space(data, len, pos + 1);
  while (data[pos] != '}') {
    hark_span key;
    hark_span value;
    pos = locate_value(data, len, pos, &key);
    pos = skip_space(data, len, skip_space(data, len, pos) + 1);
    pos = locate_value(data, len, pos, &value);

    for (size_t i = 0; i < 5; i++) {
      if (key_equals(decoder, &key, names[i])) member[i] = value;
    }

    pos = skip_space(data, len, pos);
    if (data[pos] == ',') pos = skip_space(data, len, pos + 1);
  }

  for (size_t i = 1; i < 5; i++) {
    if (member[i].ptr == NULL) {
      return fail(decoder, "missing one of the keys topic, event, payload, ref");
    }
  }
  if (member[0].ptr == NULL) member[0] = (hark_span){NULL_TOKEN, 4};

  out->payload = input_field(member[4].ptr, member[4].len);
  return decode_json_fields(decoder, &member[0], &member[1], &member[2], &member[3], out);
}

/* A binary ref is raw UTF-8. It becomes a JSON string token so it compares
 * equal to the same ref sent in a text frame. An empty field means null. */
static int binary_ref(hark_channel_decoder *decoder, const char *bytes, size_t len, field *out) {
  if (len == 0) {
    *out = input_field(NULL_TOKEN, 4);
    return 0;
  }
  if (append_ref_token(decoder, bytes, len, out) != 0) return fail(decoder, "out of memory");
  return 0;
}

/* V2 binary push: 0, join_ref_len, ref_len, topic_len, event_len, then the
 * four fields and the payload as the rest of the frame. */
static int decode_v2_binary(hark_channel_decoder *decoder, const char *data, size_t len,
                            fields *out) {
  const unsigned char *bytes = (const unsigned char *)data;
  if (len < 1) return fail(decoder, "truncated binary frame");
  if (bytes[0] != BINARY_KIND_PUSH) return fail(decoder, "binary frame kind is not 0 (push)");
  if (len < BINARY_PUSH_HEADER_BYTES) return fail(decoder, "truncated binary frame");

  size_t pos = BINARY_PUSH_HEADER_BYTES;
  const char *start[4];
  for (size_t i = 0; i < 4; i++) {
    size_t n = bytes[1 + i];
    if (len - pos < n) return fail(decoder, "truncated binary frame");
    if (!hark_utf8_valid(data + pos, n)) {
      return fail(decoder, "binary frame field is not valid UTF-8");
    }
    start[i] = data + pos;
    pos += n;
  }

  if (binary_ref(decoder, start[0], bytes[1], &out->join_ref) != 0) return -1;
  if (binary_ref(decoder, start[1], bytes[2], &out->ref) != 0) return -1;
  out->topic = input_field(start[2], bytes[3]);
  out->event = input_field(start[3], bytes[4]);
  out->payload = input_field(data + pos, len - pos);
  return 0;
}

static int decode_text(hark_channel_decoder *decoder, hark_serializer serializer, const char *data,
                       size_t len, fields *out) {
  /* Validating first lets the shape checks walk the text without checking
   * each token again. */
  if (!hark_json_valid(data, len)) return fail(decoder, "invalid JSON");
  if (serializer == HARK_SERIALIZER_V2) return decode_v2_text(decoder, data, len, out);
  return decode_v1_text(decoder, data, len, out);
}

void hark_channel_decoder_free(hark_channel_decoder *decoder) {
  hark_buf_free(&decoder->scratch);
  decoder->error = NULL;
}

int hark_channel_decode(hark_channel_decoder *decoder, hark_serializer serializer, int binary,
                        const char *data, size_t len, hark_channel_msg *out) {
  fields decoded;
  memset(&decoded, 0, sizeof decoded);
  hark_buf_reset(&decoder->scratch);
  decoder->error = NULL;

  int rc;
  if (serializer != HARK_SERIALIZER_V1 && serializer != HARK_SERIALIZER_V2) {
    rc = fail(decoder, "unknown serializer");
  } else if (!binary) {
    rc = decode_text(decoder, serializer, data, len, &decoded);
  } else if (serializer == HARK_SERIALIZER_V2) {
    rc = decode_v2_binary(decoder, data, len, &decoded);
  } else {
    rc = fail(decoder, "binary frames need serializer V2 (vsn 2.0.0)");
  }
  if (rc != 0) return -1;

  out->join_ref = resolve(decoder, decoded.join_ref);
  out->ref = resolve(decoder, decoded.ref);
  out->topic = resolve(decoder, decoded.topic);
  out->event = resolve(decoder, decoded.event);
  out->payload = resolve(decoder, decoded.payload);
  out->binary = binary != 0;
  return 0;
}

/* ---- encoding ---- */

static const hark_span EMPTY_OBJECT = {"{}", 2};

/* Payloads and responses are raw JSON text. An empty span is written as {}
 * so that the frame stays valid JSON. */
static hark_span json_or_empty_object(hark_span json) {
  return json.len == 0 ? EMPTY_OBJECT : json;
}

/* Appends the part of a frame before the payload. */
static int append_head(hark_buf *out, hark_serializer serializer, hark_span join_ref, hark_span ref,
                       hark_span topic, hark_span event) {
  if (serializer == HARK_SERIALIZER_V1) {
    /* V1 never carries join_ref, and its ref goes after the payload. */
    (void)join_ref;
    (void)ref;
    if (hark_buf_append_str(out, "{\"topic\":") != 0) return -1;
    if (hark_json_append_string(out, topic.ptr, topic.len) != 0) return -1;
    if (hark_buf_append_str(out, ",\"event\":") != 0) return -1;
    if (hark_json_append_string(out, event.ptr, event.len) != 0) return -1;
    return hark_buf_append_str(out, ",\"payload\":");
  }

  if (hark_buf_append_byte(out, '[') != 0) return -1;
  if (hark_buf_append(out, join_ref.ptr, join_ref.len) != 0) return -1;
  if (hark_buf_append_byte(out, ',') != 0) return -1;
  if (hark_buf_append(out, ref.ptr, ref.len) != 0) return -1;
  if (hark_buf_append_byte(out, ',') != 0) return -1;
  if (hark_json_append_string(out, topic.ptr, topic.len) != 0) return -1;
  if (hark_buf_append_byte(out, ',') != 0) return -1;
  if (hark_json_append_string(out, event.ptr, event.len) != 0) return -1;
  return hark_buf_append_byte(out, ',');
}

/* Appends the part of a frame after the payload. */
static int append_tail(hark_buf *out, hark_serializer serializer, hark_span ref) {
  if (serializer == HARK_SERIALIZER_V1) {
    if (hark_buf_append_str(out, ",\"ref\":") != 0) return -1;
    if (hark_buf_append(out, ref.ptr, ref.len) != 0) return -1;
    return hark_buf_append_byte(out, '}');
  }
  return hark_buf_append_byte(out, ']');
}

/* Empty refs are written as null, so a zeroed span is safe to pass. */
static hark_span token_or_null(hark_span token) {
  if (token.len == 0) return (hark_span){NULL_TOKEN, 4};
  return token;
}

int hark_channel_encode(hark_buf *out, hark_serializer serializer, hark_span join_ref,
                        hark_span ref, hark_span topic, hark_span event, hark_span payload) {
  size_t start = out->len;
  join_ref = token_or_null(join_ref);
  ref = token_or_null(ref);
  payload = json_or_empty_object(payload);

  /* On failure `out` is cut back, so it never contains half a frame. */
  if (append_head(out, serializer, join_ref, ref, topic, event) != 0 ||
      hark_buf_append(out, payload.ptr, payload.len) != 0 ||
      append_tail(out, serializer, ref) != 0) {
    out->len = start;
    return -1;
  }
  return 0;
}

int hark_channel_encode_reply(hark_buf *out, hark_serializer serializer, hark_span join_ref,
                              hark_span ref, hark_span topic, const char *status,
                              hark_span response) {
  static const hark_span reply_event = {"phx_reply", 9};
  size_t start = out->len;
  join_ref = token_or_null(join_ref);
  ref = token_or_null(ref);
  response = json_or_empty_object(response);

  if (append_head(out, serializer, join_ref, ref, topic, reply_event) != 0 ||
      hark_buf_append_str(out, "{\"status\":") != 0 ||
      hark_json_append_string(out, status, strlen(status)) != 0 ||
      hark_buf_append_str(out, ",\"response\":") != 0 ||
      hark_buf_append(out, response.ptr, response.len) != 0 ||
      hark_buf_append_byte(out, '}') != 0 || append_tail(out, serializer, ref) != 0) {
    out->len = start;
    return -1;
  }
  return 0;
}

int hark_channel_encode_binary_broadcast(hark_buf *out, hark_span topic, hark_span event,
                                         hark_span payload) {
  if (topic.len > BINARY_FIELD_MAX_BYTES || event.len > BINARY_FIELD_MAX_BYTES) return -1;

  size_t start = out->len;
  unsigned char header[3] = {BINARY_KIND_BROADCAST, (unsigned char)topic.len,
                             (unsigned char)event.len};
  if (hark_buf_append(out, header, sizeof header) != 0 ||
      hark_buf_append(out, topic.ptr, topic.len) != 0 ||
      hark_buf_append(out, event.ptr, event.len) != 0 ||
      hark_buf_append(out, payload.ptr, payload.len) != 0) {
    out->len = start;
    return -1;
  }
  return 0;
}
