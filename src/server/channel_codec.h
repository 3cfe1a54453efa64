/* Phoenix Channels message encoding and decoding for the V1 JSON, V2 JSON and
 * V2 binary serializers. Payloads are validated but never re-encoded: their
 * bytes are forwarded exactly as they arrived. */
#ifndef HARK_SERVER_CHANNEL_CODEC_H
#define HARK_SERVER_CHANNEL_CODEC_H

#include <stddef.h>

#include "base/buf.h"
#include "base/json.h"

typedef enum hark_serializer {
  HARK_SERIALIZER_V1 = 1, /* vsn 1.x: JSON objects; text only; no join_ref sent */
  HARK_SERIALIZER_V2 = 2, /* vsn 2.x: JSON arrays, plus binary frames */
} hark_serializer;

/* Maps a `vsn` query value to a serializer: NULL (absent) means V1; "1.0.0"
 * and other 1.0.x versions mean V1; 2.0.x means V2. Returns 0, or -1 for
 * anything else (the connect is then rejected with HTTP 403). */
int hark_serializer_from_vsn(const char *vsn, size_t len, hark_serializer *out);

typedef struct hark_span {
  const char *ptr;
  size_t len;
} hark_span;

/* A decoded client message. Spans point into the input frame or into the
 * decoder's `scratch` buffer, so they are valid until the next decode or
 * until the input is released.
 *
 * join_ref and ref are canonical JSON tokens: "null", a number as sent, or a
 * string re-escaped in one fixed way, so two refs are equal exactly when
 * their tokens are byte-equal. They are echoed into replies as they are.
 * topic and event are the unescaped UTF-8 string values.
 * payload is the raw JSON text of the payload, or raw bytes when `binary`. */
typedef struct hark_channel_msg {
  hark_span join_ref;
  hark_span ref;
  hark_span topic;
  hark_span event;
  hark_span payload;
  int binary;
} hark_channel_msg;

typedef struct hark_channel_decoder {
  hark_buf scratch;      /* owned storage for unescaped strings and refs */
  const char *error;     /* static text describing the last decode failure */
} hark_channel_decoder;

void hark_channel_decoder_free(hark_channel_decoder *decoder);

/* Decodes one text frame (V1 object or V2 array) or one V2 binary frame
 * (kind 0 push). Returns 0, or -1 with decoder->error set when the frame is
 * not valid JSON, has the wrong shape, lacks a required field, has a topic or
 * event that is not a string, or (binary) is truncated or of another kind.
 * Nesting deeper than 64 levels is rejected. */
int hark_channel_decode(hark_channel_decoder *decoder, hark_serializer serializer, int binary,
                        const char *data, size_t len, hark_channel_msg *out);

/* Appends the text of a frame `[join_ref, ref, topic, event, payload]` (V2) or
 * `{"topic","event","payload","ref"}` (V1, which never carries join_ref).
 * join_ref and ref are JSON tokens ("null" for none); topic and event are
 * plain strings that get escaped; payload is raw JSON text. Returns 0 or -1. */
int hark_channel_encode(hark_buf *out, hark_serializer serializer, hark_span join_ref,
                        hark_span ref, hark_span topic, hark_span event, hark_span payload);

/* Appends a phx_reply frame whose payload is
 * {"status": <status>, "response": <response JSON>}. Returns 0 or -1. */
int hark_channel_encode_reply(hark_buf *out, hark_serializer serializer, hark_span join_ref,
                              hark_span ref, hark_span topic, const char *status,
                              hark_span response);

/* Appends a V2 binary broadcast frame: the kind byte 2, one length byte each
 * for topic and event, then topic, event and the raw payload bytes. A topic or
 * event over 255 bytes makes it fail with -1. */
int hark_channel_encode_binary_broadcast(hark_buf *out, hark_span topic, hark_span event,
                                         hark_span payload);

#endif
