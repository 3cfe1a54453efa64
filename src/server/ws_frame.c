#include "server/ws_frame.h"

#include <string.h>

#include <openssl/evp.h>

#include "base/utf8.h"

/* Appended to the client key before hashing (RFC 6455 section 1.3). */
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/* Payload limit of control frames (RFC 6455 section 5.5). */
#define WS_MAX_CONTROL_PAYLOAD 125

/* Above this capacity the reassembly buffer is released after each message
 * instead of kept, so that one large fragmented message does not pin its
 * memory for the rest of the connection. */
#define WS_KEEP_FRAGMENT_CAPACITY (64 * 1024)

/* The fixed part of a frame header, as read from the wire. */
typedef struct frame_header {
  int fin;
  int opcode;
  uint64_t payload_len;
  size_t header_len; /* bytes before the payload, the mask key included */
  uint8_t mask[4];
} frame_header;

void hark_ws_parser_init(hark_ws_parser *parser, size_t max_message) {
  memset(parser, 0, sizeof *parser);
  parser->max_message = max_message > UINT32_MAX ? UINT32_MAX : (uint32_t)max_message;
}

void hark_ws_parser_free(hark_ws_parser *parser) {
  hark_buf_free(&parser->fragments);
  parser->fragment_opcode = 0;
}

static int fail(hark_ws_parser *parser, int code, const char *error) {
  parser->error = error;
  return -code;
}

static int is_control(int opcode) { return opcode >= HARK_WS_OP_CLOSE; }

static int is_known_opcode(int opcode) {
  switch (opcode) {
  case HARK_WS_OP_CONTINUATION:
  case HARK_WS_OP_TEXT:
  case HARK_WS_OP_BINARY:
  case HARK_WS_OP_CLOSE:
  case HARK_WS_OP_PING:
  case HARK_WS_OP_PONG:
    return 1;
  default:
    return 0;
  }
}

/* Checks the first header byte: reserved bits, opcode, and whether the frame
 * fits the fragmentation state. Returns 0 or a negative close code. */
static int check_first_byte(hark_ws_parser *parser, uint8_t byte) {
  int fin = (byte & 0x80) != 0;
  int opcode = byte & 0x0F;

  /* No extension is ever negotiated, so the RSV bits must all be 0. */
  if (byte & 0x70) return fail(parser, HARK_WS_CLOSE_PROTOCOL_ERROR, "reserved bits set");
  if (!is_known_opcode(opcode)) return fail(parser, HARK_WS_CLOSE_PROTOCOL_ERROR, "unknown opcode");

  if (is_control(opcode)) {
    if (!fin) return fail(parser, HARK_WS_CLOSE_PROTOCOL_ERROR, "fragmented control frame");
    return 0;
  }

  if (opcode == HARK_WS_OP_CONTINUATION && parser->fragment_opcode == 0) {
    return fail(parser, HARK_WS_CLOSE_PROTOCOL_ERROR, "continuation frame without a message");
  }
  if (opcode != HARK_WS_OP_CONTINUATION && parser->fragment_opcode != 0) {
    return fail(parser, HARK_WS_CLOSE_PROTOCOL_ERROR, "new message inside a fragmented message");
  }
  return 0;
}

static uint64_t read_be(const uint8_t *p, size_t n) {
  uint64_t value = 0;
  for (size_t i = 0; i < n; i++) value = (value << 8) | p[i];
  return value;
}

/* Reads the 16-bit or 64-bit extended payload length that follows a 7-bit
 * length of 126 or 127, and rejects lengths that a shorter form could have
 * encoded (RFC 6455 section 5.2 requires the minimal form). Returns 1 with
 * *payload_len set, 0 when more bytes are needed, or a negative close code. */
static int read_extended_length(hark_ws_parser *parser, const uint8_t *p, size_t len,
                                uint8_t len7, uint64_t *payload_len, size_t *extra) {
  if (len7 < 126) {
    *payload_len = len7;
    *extra = 0;
    return 1;
  }

  *extra = len7 == 126 ? 2 : 8;
  if (len < 2 + *extra) return 0;
  *payload_len = read_be(p + 2, *extra);

  if (len7 == 126 && *payload_len < 126) {
    return fail(parser, HARK_WS_CLOSE_PROTOCOL_ERROR, "16-bit length below 126");
  }
  if (len7 == 127 && (*payload_len >> 63) != 0) {
    return fail(parser, HARK_WS_CLOSE_PROTOCOL_ERROR, "64-bit length with the top bit set");
  }
  if (len7 == 127 && *payload_len < 65536) {
    return fail(parser, HARK_WS_CLOSE_PROTOCOL_ERROR, "64-bit length below 65536");
  }
  return 1;
}

/* Rejects a data frame that would take the message past max_message. The
 * bytes reassembled so far never exceed max_message, so the subtraction
 * cannot wrap. */
static int check_message_size(hark_ws_parser *parser, const frame_header *header) {
  if (is_control(header->opcode)) return 0;

  size_t so_far = parser->fragment_opcode != 0 ? parser->fragments.len : 0;
  if (header->payload_len > parser->max_message - so_far) {
    return fail(parser, HARK_WS_CLOSE_TOO_BIG, "message larger than the limit");
  }
  return 0;
}

/* Reads and checks a frame header from the available bytes. Every check runs
 * as soon as the bytes it needs have arrived, so that a bad or oversized
 * frame is rejected before its payload is waited for. Returns 1 with *header
 * filled, 0 when more bytes are needed, or a negative close code. */
static int read_header(hark_ws_parser *parser, const uint8_t *p, size_t len,
                       frame_header *header) {
  if (len < 1) return 0;
  int rc = check_first_byte(parser, p[0]);
  if (rc < 0) return rc;
  header->fin = (p[0] & 0x80) != 0;
  header->opcode = p[0] & 0x0F;

  if (len < 2) return 0;
  if (!(p[1] & 0x80)) return fail(parser, HARK_WS_CLOSE_PROTOCOL_ERROR, "unmasked client frame");
  uint8_t len7 = p[1] & 0x7F;
  if (is_control(header->opcode) && len7 > WS_MAX_CONTROL_PAYLOAD) {
    return fail(parser, HARK_WS_CLOSE_PROTOCOL_ERROR, "control frame longer than 125 bytes");
  }

  size_t extra;
  rc = read_extended_length(parser, p, len, len7, &header->payload_len, &extra);
  if (rc <= 0) return rc;
  rc = check_message_size(parser, header);
  if (rc < 0) return rc;

  header->header_len = 2 + extra + 4;
  if (len < header->header_len) return 0;
  memcpy(header->mask, p + 2 + extra, 4);
  return 1;
}

/* XORs `len` bytes with the repeating 4-byte mask, 8 bytes at a time where
 * possible. The mask starts at offset 0 of `data`. */
static void apply_mask(char *data, size_t len, const uint8_t mask[4]) {
  uint8_t mask8[8];
  memcpy(mask8, mask, 4);
  memcpy(mask8 + 4, mask, 4);
  uint64_t mask64;
  memcpy(&mask64, mask8, 8);

  size_t i = 0;
  for (; len - i >= 8; i += 8) {
    uint64_t word;
    memcpy(&word, data + i, 8);
    word ^= mask64;
    memcpy(data + i, &word, 8);
  }
  for (; i < len; i++) data[i] = (char)(data[i] ^ mask[i & 3]);
}

/* Returns 1 when a close code may appear in a close frame on the wire
 * (RFC 6455 section 7.4 and the IANA registry): 1000-1003, 1007-1014, and the
 * ranges 3000-3999 (registered) and 4000-4999 (private use). */
static int is_valid_close_code(uint16_t code) {
  if (code >= 1000 && code <= 1003) return 1;
  if (code >= 1007 && code <= 1014) return 1;
  return code >= 3000 && code <= 4999;
}

/* Fills *event for a close frame: the code (1005 when the body is empty) and
 * the reason. Returns 0 or a negative close code. */
static int read_close(hark_ws_parser *parser, char *payload, size_t len, hark_ws_event *event) {
  event->close_code = HARK_WS_CLOSE_NO_STATUS;
  event->data = payload;
  event->len = 0;
  if (len == 0) return 0;

  if (len == 1) return fail(parser, HARK_WS_CLOSE_PROTOCOL_ERROR, "close frame with a 1-byte body");
  uint16_t code = (uint16_t)read_be((const uint8_t *)payload, 2);
  if (!is_valid_close_code(code)) {
    return fail(parser, HARK_WS_CLOSE_PROTOCOL_ERROR, "close code not allowed on the wire");
  }
  if (!hark_utf8_valid(payload + 2, len - 2)) {
    return fail(parser, HARK_WS_CLOSE_INVALID_PAYLOAD, "close reason is not valid UTF-8");
  }

  event->close_code = code;
  event->data = payload + 2;
  event->len = len - 2;
  return 0;
}

static int handle_control(hark_ws_parser *parser, const frame_header *header, char *payload,
                          size_t len, hark_ws_event *event) {
  event->opcode = header->opcode;
  event->close_code = 0;
  event->data = payload;
  event->len = len;

  switch (header->opcode) {
  case HARK_WS_OP_PING:
    event->kind = HARK_WS_EVENT_PING;
    return 0;
  case HARK_WS_OP_PONG:
    event->kind = HARK_WS_EVENT_PONG;
    return 0;
  default:
    event->kind = HARK_WS_EVENT_CLOSE;
    return read_close(parser, payload, len, event);
  }
}

/* Fills *event with a complete message, after checking that a text message is
 * valid UTF-8. Returns 0 or a negative close code. */
static int deliver_message(hark_ws_parser *parser, int opcode, char *data, size_t len,
                           hark_ws_event *event) {
  if (opcode == HARK_WS_OP_TEXT && !hark_utf8_valid(data, len)) {
    return fail(parser, HARK_WS_CLOSE_INVALID_PAYLOAD, "text message is not valid UTF-8");
  }

  event->kind = HARK_WS_EVENT_MESSAGE;
  event->opcode = opcode;
  event->data = data;
  event->len = len;
  event->close_code = 0;
  return 0;
}

/* Handles a text, binary or continuation frame. An unfragmented message is
 * delivered in place, pointing into the caller's buffer; fragments are copied
 * into parser->fragments until the final one arrives. Returns 1 when *event
 * contains a message, 0 when the frame was a non-final fragment, or a negative
 * close code. */
static int handle_data(hark_ws_parser *parser, const frame_header *header, char *payload,
                       size_t len, hark_ws_event *event) {
  if (header->opcode != HARK_WS_OP_CONTINUATION && header->fin) {
    int rc = deliver_message(parser, header->opcode, payload, len, event);
    return rc < 0 ? rc : 1;
  }

  if (header->opcode != HARK_WS_OP_CONTINUATION) parser->fragment_opcode = header->opcode;
  if (hark_buf_append(&parser->fragments, payload, len) != 0) {
    return fail(parser, HARK_WS_CLOSE_INTERNAL_ERROR, "out of memory reassembling a message");
  }
  if (!header->fin) return 0;

  /* The message is complete. fragment_opcode goes back to 0, and the next
   * call empties the buffer, so event->data stays valid until then. An empty
   * buffer may have no storage yet, so point at the frame instead. */
  int opcode = parser->fragment_opcode;
  parser->fragment_opcode = 0;
  char *data = parser->fragments.len > 0 ? parser->fragments.data : payload;
  int rc = deliver_message(parser, opcode, data, parser->fragments.len, event);
  return rc < 0 ? rc : 1;
}

/* Empties the reassembly buffer once its message has been delivered. */
static void release_delivered_message(hark_ws_parser *parser) {
  if (parser->fragment_opcode != 0) return;

  if (parser->fragments.cap > WS_KEEP_FRAGMENT_CAPACITY) {
    hark_buf_free(&parser->fragments);
  } else {
    hark_buf_reset(&parser->fragments);
  }
}

int hark_ws_parse(hark_ws_parser *parser, char *data, size_t len, size_t *consumed,
                  hark_ws_event *event, int *has_event) {
  *consumed = 0;
  *has_event = 0;
  release_delivered_message(parser);

  frame_header header;
  int rc = read_header(parser, (const uint8_t *)data, len, &header);
  if (rc <= 0) return rc;
  /* read_header checked payload_len against max_message (a size_t), or
   * against 125 for control frames, so the cast below keeps every bit. */
  if (len - header.header_len < header.payload_len) return 0;

  char *payload = data + header.header_len;
  size_t payload_len = (size_t)header.payload_len;
  apply_mask(payload, payload_len, header.mask);

  if (is_control(header.opcode)) {
    rc = handle_control(parser, &header, payload, payload_len, event);
    if (rc < 0) return rc;
    *has_event = 1;
  } else {
    rc = handle_data(parser, &header, payload, payload_len, event);
    if (rc < 0) return rc;
    *has_event = rc;
  }

  *consumed = header.header_len + payload_len;
  return 1;
}

size_t hark_ws_encode_header(uint8_t out[10], int opcode, size_t payload_len) {
  out[0] = (uint8_t)(0x80 | (opcode & 0x0F));

  if (payload_len < 126) {
    out[1] = (uint8_t)payload_len;
    return 2;
  }

  if (payload_len <= 0xFFFF) {
    out[1] = 126;
    out[2] = (uint8_t)(payload_len >> 8);
    out[3] = (uint8_t)payload_len;
    return 4;
  }

  out[1] = 127;
  uint64_t len64 = payload_len;
  for (int i = 0; i < 8; i++) out[2 + i] = (uint8_t)(len64 >> (56 - 8 * i));
  return 10;
}

int hark_ws_encode_frame(hark_buf *out, int opcode, const void *payload, size_t len) {
  uint8_t header[10];
  size_t header_len = hark_ws_encode_header(header, opcode, len);

  if (hark_buf_reserve(out, header_len + len) != 0) return -1;
  hark_buf_append(out, header, header_len);
  hark_buf_append(out, payload, len);
  return 0;
}

/* Returns the longest prefix of `reason` that fits in `max` bytes without
 * splitting a UTF-8 sequence, so that a cut reason stays valid UTF-8. */
static size_t fit_reason(const char *reason, size_t max) {
  size_t len = strlen(reason);
  if (len <= max) return len;

  len = max;
  while (len > 0 && ((unsigned char)reason[len] & 0xC0) == 0x80) len--;
  return len;
}

int hark_ws_encode_close(hark_buf *out, uint16_t code, const char *reason) {
  /* 1005 means "no code" and must never be sent, so it becomes an empty body,
   * which is how a close without a code is echoed. */
  if (code == HARK_WS_CLOSE_NO_STATUS) return hark_ws_encode_frame(out, HARK_WS_OP_CLOSE, NULL, 0);

  char body[WS_MAX_CONTROL_PAYLOAD];
  body[0] = (char)(code >> 8);
  body[1] = (char)code;
  size_t reason_len = reason ? fit_reason(reason, sizeof body - 2) : 0;
  if (reason_len > 0) memcpy(body + 2, reason, reason_len);

  return hark_ws_encode_frame(out, HARK_WS_OP_CLOSE, body, 2 + reason_len);
}

int hark_ws_encode_client_frame(hark_buf *out, int fin, int opcode, const void *payload,
                                size_t len, uint32_t mask) {
  uint8_t header[14];
  size_t header_len = hark_ws_encode_header(header, opcode, len);
  if (!fin) header[0] &= 0x7F;
  header[1] |= 0x80;

  uint8_t mask_bytes[4] = {(uint8_t)(mask >> 24), (uint8_t)(mask >> 16), (uint8_t)(mask >> 8),
                           (uint8_t)mask};
  memcpy(header + header_len, mask_bytes, 4);
  header_len += 4;

  if (hark_buf_reserve(out, header_len + len) != 0) return -1;
  hark_buf_append(out, header, header_len);
  char *start = out->data + out->len;
  hark_buf_append(out, payload, len);
  apply_mask(start, len, mask_bytes);
  return 0;
}

/* Returns 1 for the characters of the base64 alphabet (RFC 4648 section 4). */
static int is_base64_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
         c == '/';
}

/* Returns 1 when key is the canonical base64 encoding of 16 bytes: 22
 * alphabet characters and "==". The last character before the padding
 * carries 2 data bits and 4 bits that must be zero, so only A, Q, g and w
 * are allowed there. */
static int is_valid_key(const char *key, size_t len) {
  if (len != 24 || key[22] != '=' || key[23] != '=') return 0;

  for (size_t i = 0; i < 22; i++) {
    if (!is_base64_char(key[i])) return 0;
  }
  return strchr("AQgw", key[21]) != NULL;
}

int hark_ws_accept_key(const char *key, size_t key_len, char out[29]) {
  /* Header values may carry optional whitespace around them (RFC 9110
   * section 5.5). */
  while (key_len > 0 && (key[0] == ' ' || key[0] == '\t')) {
    key++;
    key_len--;
  }
  while (key_len > 0 && (key[key_len - 1] == ' ' || key[key_len - 1] == '\t')) key_len--;

  if (!is_valid_key(key, key_len)) return -1;
  unsigned char decoded[18];
  /* EVP_DecodeBlock counts padding as data, so 24 characters give 18 bytes,
   * of which the last 2 are the zero bytes that "==" stands for. */
  if (EVP_DecodeBlock(decoded, (const unsigned char *)key, (int)key_len) != 18) return -1;

  char input[24 + sizeof WS_GUID - 1];
  memcpy(input, key, 24);
  memcpy(input + 24, WS_GUID, sizeof WS_GUID - 1);

  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_len = 0;
  if (EVP_Digest(input, sizeof input, digest, &digest_len, EVP_sha1(), NULL) != 1) return -1;
  if (digest_len != 20) return -1;

  /* 20 bytes encode to 28 characters, and EVP_EncodeBlock adds the NUL. */
  if (EVP_EncodeBlock((unsigned char *)out, digest, 20) != 28) return -1;
  return 0;
}
