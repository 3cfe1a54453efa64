/* WebSocket (RFC 6455) framing without I/O: a parser for client frames and
 * encoders for server frames. The connection code feeds it bytes and acts on
 * the events it returns. */
#ifndef HARK_SERVER_WS_FRAME_H
#define HARK_SERVER_WS_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"

enum {
  HARK_WS_OP_CONTINUATION = 0x0,
  HARK_WS_OP_TEXT = 0x1,
  HARK_WS_OP_BINARY = 0x2,
  HARK_WS_OP_CLOSE = 0x8,
  HARK_WS_OP_PING = 0x9,
  HARK_WS_OP_PONG = 0xA,
};

/* Close status codes used by the server (RFC 6455 section 7.4.1). */
enum {
  HARK_WS_CLOSE_NORMAL = 1000,
  HARK_WS_CLOSE_GOING_AWAY = 1001,
  HARK_WS_CLOSE_PROTOCOL_ERROR = 1002,
  HARK_WS_CLOSE_UNSUPPORTED_DATA = 1003,
  HARK_WS_CLOSE_NO_STATUS = 1005,
  HARK_WS_CLOSE_INVALID_PAYLOAD = 1007,
  HARK_WS_CLOSE_POLICY = 1008,
  HARK_WS_CLOSE_TOO_BIG = 1009,
  HARK_WS_CLOSE_INTERNAL_ERROR = 1011,
  HARK_WS_CLOSE_TRY_AGAIN_LATER = 1013,
};

typedef enum hark_ws_event_kind {
  HARK_WS_EVENT_MESSAGE, /* a complete text or binary message */
  HARK_WS_EVENT_PING,
  HARK_WS_EVENT_PONG,
  HARK_WS_EVENT_CLOSE,
} hark_ws_event_kind;

typedef struct hark_ws_event {
  hark_ws_event_kind kind;
  int opcode; /* HARK_WS_OP_TEXT or HARK_WS_OP_BINARY for messages */
  /* The unmasked payload. It points into the caller's input or into the
   * parser's reassembly buffer, and is valid until the next call on the
   * parser. For a close it is the reason text, without the code. */
  char *data;
  size_t len;
  /* For a close: the received code, or 1005 when the frame had no body. */
  uint16_t close_code;
} hark_ws_event;

/* Parser state for one connection. Initialize with hark_ws_parser_init and
 * release with hark_ws_parser_free. */
typedef struct hark_ws_parser {
  hark_buf fragments;   /* payload of a fragmented message so far */
  uint32_t max_message; /* limit on a (reassembled) message, in bytes */
  int fragment_opcode;  /* opcode of that message, or 0 when none is open */
  const char *error;    /* static text describing the last protocol error */
} hark_ws_parser;

/* `max_message` above UINT32_MAX is lowered to it; every connection has a
 * parser, so the limit is kept in 32 bits. */
void hark_ws_parser_init(hark_ws_parser *parser, size_t max_message);
void hark_ws_parser_free(hark_ws_parser *parser);

/* Parses at most one frame from `data` (client frames, which must be masked).
 * Unmasks the payload in place, which is why `data` is writable.
 *
 * Returns:
 *   0  when `data` does not yet hold a whole frame; *consumed is 0, and the
 *      caller calls again with more bytes appended;
 *   1  when a frame was consumed (*consumed > 0). If it completed a message or
 *      was a control frame, *event is filled and *has_event is 1; a
 *      non-final fragment sets *has_event to 0;
 *   a negative close code (-1002, -1007, -1009) on a protocol violation, or
 *      -1011 when memory for reassembly runs out, with parser->error set. The
 *      caller sends that close code and stops reading.
 *
 * Checks: the mask bit, reserved bits, unknown opcodes, control frames that
 * are fragmented or longer than 125 bytes, continuation without a message,
 * a new message inside a fragmented one, lengths not in their minimal form,
 * the 64-bit length's top bit, and close codes that may not be sent on the
 * wire (all 1002). The message size limit (1009) is checked from the header
 * before the payload arrives. Text messages and close reasons must be valid
 * UTF-8 (1007). */
int hark_ws_parse(hark_ws_parser *parser, char *data, size_t len, size_t *consumed,
                  hark_ws_event *event, int *has_event);

/* Writes the header of an unmasked, final server frame into `out` and returns
 * its length (2, 4 or 10 bytes). */
size_t hark_ws_encode_header(uint8_t out[10], int opcode, size_t payload_len);

/* Appends a whole unmasked server frame to `out`. Returns 0 or -1 (no memory). */
int hark_ws_encode_frame(hark_buf *out, int opcode, const void *payload, size_t len);

/* Appends a close frame with `code` and a reason, or no reason when `reason`
 * is NULL. A long reason is cut at a UTF-8 character boundary to fit the
 * 125-byte control frame limit. Code 1005 (HARK_WS_CLOSE_NO_STATUS) may not
 * be sent on the wire, so it gives a close frame with an empty body, which is
 * the echo of a close that had no code. Returns 0 or -1 (no memory). */
int hark_ws_encode_close(hark_buf *out, uint16_t code, const char *reason);

/* Appends a masked client frame, with `fin` and `opcode` as given. Used by
 * tests and the load generator. Returns 0 or -1. */
int hark_ws_encode_client_frame(hark_buf *out, int fin, int opcode, const void *payload,
                                size_t len, uint32_t mask);

/* Computes Sec-WebSocket-Accept for a client key: base64(SHA-1(key + GUID)).
 * `out` receives 28 characters and a NUL. Spaces and tabs around the key are
 * ignored. Returns 0, or -1 when the key is not the canonical base64 encoding
 * of 16 bytes. */
int hark_ws_accept_key(const char *key, size_t key_len, char out[29]);

#endif
