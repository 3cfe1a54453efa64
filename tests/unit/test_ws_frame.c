/* Unit tests for the WebSocket frame parser, the frame encoders and the
 * handshake accept key. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "server/ws_frame.h"

/* The masking key of the examples in RFC 6455 section 5.7. */
#define TEST_MASK 0x37fa213du

/* A limit large enough for every test that is not about the limit. */
#define TEST_MAX_MESSAGE (1024 * 1024)

typedef struct parse_result {
  int rc;
  size_t consumed;
  int has_event;
  hark_ws_event event;
} parse_result;

static parse_result parse(hark_ws_parser *parser, char *data, size_t len) {
  parse_result result;
  memset(&result, 0, sizeof result);
  result.rc = hark_ws_parse(parser, data, len, &result.consumed, &result.event, &result.has_event);
  return result;
}

/* Appends a masked client frame to `out`. */
static void add_frame(hark_buf *out, int fin, int opcode, const void *payload, size_t len) {
  assert_int_equal(hark_ws_encode_client_frame(out, fin, opcode, payload, len, TEST_MASK), 0);
}

static void add_text(hark_buf *out, int fin, int opcode, const char *text) {
  add_frame(out, fin, opcode, text, strlen(text));
}

/* Parses a buffer that contains exactly one frame, and checks that the whole
 * frame was consumed. */
static parse_result parse_whole(hark_ws_parser *parser, hark_buf *frame) {
  parse_result result = parse(parser, frame->data, frame->len);
  if (result.rc == 1) assert_int_equal(result.consumed, frame->len);
  return result;
}

/* Parses one frame built from `bytes` and returns the result code. The bytes
 * are copied because parsing unmasks in place. */
static int parse_bytes_rc(hark_ws_parser *parser, const void *bytes, size_t len) {
  char copy[256];
  assert_true(len <= sizeof copy);
  memcpy(copy, bytes, len);
  return parse(parser, copy, len).rc;
}

static int parse_fresh_rc(const void *bytes, size_t len) {
  hark_ws_parser parser;
  hark_ws_parser_init(&parser, TEST_MAX_MESSAGE);
  int rc = parse_bytes_rc(&parser, bytes, len);
  if (rc < 0) assert_non_null(parser.error);
  hark_ws_parser_free(&parser);
  return rc;
}

static void assert_message(const parse_result *result, int opcode, const char *text) {
  assert_int_equal(result->rc, 1);
  assert_int_equal(result->has_event, 1);
  assert_int_equal(result->event.kind, HARK_WS_EVENT_MESSAGE);
  assert_int_equal(result->event.opcode, opcode);
  assert_int_equal(result->event.len, strlen(text));
  assert_memory_equal(result->event.data, text, strlen(text));
}

/* ---- single frames ---- */

static void ws_frame_parses_rfc_masked_hello(void **state) {
  (void)state;
  /* The masked "Hello" example of RFC 6455 section 5.7. */
  char frame[] = {(char)0x81, (char)0x85, 0x37, (char)0xfa, 0x21, 0x3d,
                  0x7f,       (char)0x9f, 0x4d, 0x51,       0x58};
  hark_ws_parser parser;
  hark_ws_parser_init(&parser, TEST_MAX_MESSAGE);

  parse_result result = parse(&parser, frame, sizeof frame);

  assert_message(&result, HARK_WS_OP_TEXT, "Hello");
  assert_int_equal(result.consumed, sizeof frame);
  assert_ptr_equal(result.event.data, frame + 6);
  hark_ws_parser_free(&parser);
}

static void ws_frame_client_encoder_matches_rfc(void **state) {
  (void)state;
  const uint8_t expected[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58};
  hark_buf out = {0};

  add_text(&out, 1, HARK_WS_OP_TEXT, "Hello");

  assert_int_equal(out.len, sizeof expected);
  assert_memory_equal(out.data, expected, sizeof expected);
  hark_buf_free(&out);
}

static void ws_frame_parses_binary_in_place(void **state) {
  (void)state;
  const char payload[] = {0, 1, 2, (char)0xFF, (char)0xC0};
  hark_buf frame = {0};
  add_frame(&frame, 1, HARK_WS_OP_BINARY, payload, sizeof payload);
  hark_ws_parser parser;
  hark_ws_parser_init(&parser, TEST_MAX_MESSAGE);

  parse_result result = parse_whole(&parser, &frame);

  assert_int_equal(result.rc, 1);
  assert_int_equal(result.event.opcode, HARK_WS_OP_BINARY);
  assert_int_equal(result.event.len, sizeof payload);
  assert_memory_equal(result.event.data, payload, sizeof payload);
  assert_ptr_equal(result.event.data, frame.data + 6);
  hark_ws_parser_free(&parser);
  hark_buf_free(&frame);
}

static void ws_frame_parses_empty_text(void **state) {
  (void)state;
  hark_buf frame = {0};
  add_text(&frame, 1, HARK_WS_OP_TEXT, "");
  hark_ws_parser parser;
  hark_ws_parser_init(&parser, TEST_MAX_MESSAGE);

  parse_result result = parse_whole(&parser, &frame);

  assert_message(&result, HARK_WS_OP_TEXT, "");
  assert_non_null(result.event.data);
  hark_ws_parser_free(&parser);
  hark_buf_free(&frame);
}

static void ws_frame_parses_one_frame_per_call(void **state) {
  (void)state;
  hark_buf frames = {0};
  add_text(&frames, 1, HARK_WS_OP_TEXT, "first");
  add_text(&frames, 1, HARK_WS_OP_PING, "p");
  add_text(&frames, 1, HARK_WS_OP_TEXT, "second");
  hark_ws_parser parser;
  hark_ws_parser_init(&parser, TEST_MAX_MESSAGE);

  parse_result first = parse(&parser, frames.data, frames.len);
  assert_message(&first, HARK_WS_OP_TEXT, "first");
  assert_int_equal(first.consumed, 6 + 5);

  size_t offset = first.consumed;
  parse_result ping = parse(&parser, frames.data + offset, frames.len - offset);
  assert_int_equal(ping.rc, 1);
  assert_int_equal(ping.event.kind, HARK_WS_EVENT_PING);
  assert_int_equal(ping.consumed, 6 + 1);

  offset += ping.consumed;
  parse_result second = parse(&parser, frames.data + offset, frames.len - offset);
  assert_message(&second, HARK_WS_OP_TEXT, "second");
  assert_int_equal(offset + second.consumed, frames.len);

  hark_ws_parser_free(&parser);
  hark_buf_free(&frames);
}

/* ---- header checks ---- */

static void ws_frame_rejects_unmasked_frame(void **state) {
  (void)state;
  /* The unmasked "Hello" example of RFC 6455 section 5.7. */
  const uint8_t frame[] = {0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f};

  assert_int_equal(parse_fresh_rc(frame, sizeof frame), -HARK_WS_CLOSE_PROTOCOL_ERROR);
  /* The mask bit is in the second byte, so two bytes are enough to reject. */
  assert_int_equal(parse_fresh_rc(frame, 2), -HARK_WS_CLOSE_PROTOCOL_ERROR);
  assert_int_equal(parse_fresh_rc(frame, 1), 0);
}

static void ws_frame_rejects_reserved_bits(void **state) {
  (void)state;
  const uint8_t bits[] = {0x40, 0x20, 0x10};

  for (size_t i = 0; i < sizeof bits; i++) {
    hark_buf frame = {0};
    add_text(&frame, 1, HARK_WS_OP_TEXT, "x");
    frame.data[0] = (char)(frame.data[0] | bits[i]);

    assert_int_equal(parse_fresh_rc(frame.data, frame.len), -HARK_WS_CLOSE_PROTOCOL_ERROR);
    assert_int_equal(parse_fresh_rc(frame.data, 1), -HARK_WS_CLOSE_PROTOCOL_ERROR);
    hark_buf_free(&frame);
  }
}

static void ws_frame_rejects_unknown_opcodes(void **state) {
  (void)state;
  const int opcodes[] = {0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF};

  for (size_t i = 0; i < sizeof opcodes / sizeof opcodes[0]; i++) {
    hark_buf frame = {0};
    add_text(&frame, 1, opcodes[i], "x");

    int rc = parse_fresh_rc(frame.data, frame.len);
    if (rc != -HARK_WS_CLOSE_PROTOCOL_ERROR) fail_msg("opcode 0x%X: rc %d", opcodes[i], rc);
    hark_buf_free(&frame);
  }
}

static void ws_frame_rejects_fragmented_control(void **state) {
  (void)state;
  const int opcodes[] = {HARK_WS_OP_CLOSE, HARK_WS_OP_PING, HARK_WS_OP_PONG};

  for (size_t i = 0; i < 3; i++) {
    hark_buf frame = {0};
    add_text(&frame, 0, opcodes[i], "");

    int rc = parse_fresh_rc(frame.data, frame.len);
    if (rc != -HARK_WS_CLOSE_PROTOCOL_ERROR) fail_msg("opcode 0x%X: rc %d", opcodes[i], rc);
    hark_buf_free(&frame);
  }
}

static void ws_frame_limits_control_payload(void **state) {
  (void)state;
  char payload[126];
  memset(payload, 'p', sizeof payload);
  const int opcodes[] = {HARK_WS_OP_PING, HARK_WS_OP_PONG, HARK_WS_OP_CLOSE};

  for (size_t i = 0; i < 3; i++) {
    hark_buf frame = {0};
    add_frame(&frame, 1, opcodes[i], payload, 126);
    assert_int_equal(parse_fresh_rc(frame.data, frame.len), -HARK_WS_CLOSE_PROTOCOL_ERROR);
    /* The length is in the second byte, so two bytes are enough to reject. */
    assert_int_equal(parse_fresh_rc(frame.data, 2), -HARK_WS_CLOSE_PROTOCOL_ERROR);
    hark_buf_free(&frame);
  }

  /* 125 bytes is the largest allowed control payload. */
  hark_buf frame = {0};
  add_frame(&frame, 1, HARK_WS_OP_PING, payload, 125);
  hark_ws_parser parser;
  hark_ws_parser_init(&parser, TEST_MAX_MESSAGE);
  parse_result result = parse_whole(&parser, &frame);
  assert_int_equal(result.rc, 1);
  assert_int_equal(result.event.kind, HARK_WS_EVENT_PING);
  assert_int_equal(result.event.len, 125);
  assert_memory_equal(result.event.data, payload, 125);
  hark_ws_parser_free(&parser);
  hark_buf_free(&frame);
}

static void ws_frame_rejects_nonminimal_16bit_length(void **state) {
  (void)state;
  /* FIN+text, MASK+126, length 125 in 16 bits, mask key. */
  const uint8_t frame[] = {0x81, 0xFE, 0x00, 0x7D, 0, 0, 0, 0};

  assert_int_equal(parse_fresh_rc(frame, sizeof frame), -HARK_WS_CLOSE_PROTOCOL_ERROR);
  /* The check does not wait for the mask key or the payload. */
  assert_int_equal(parse_fresh_rc(frame, 4), -HARK_WS_CLOSE_PROTOCOL_ERROR);
  assert_int_equal(parse_fresh_rc(frame, 3), 0);
}

static void ws_frame_rejects_nonminimal_64bit_length(void **state) {
  (void)state;
  /* FIN+text, MASK+127, length 65535 in 64 bits. */
  const uint8_t frame[] = {0x81, 0xFF, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0, 0, 0, 0};

  assert_int_equal(parse_fresh_rc(frame, sizeof frame), -HARK_WS_CLOSE_PROTOCOL_ERROR);
  assert_int_equal(parse_fresh_rc(frame, 10), -HARK_WS_CLOSE_PROTOCOL_ERROR);
  assert_int_equal(parse_fresh_rc(frame, 9), 0);
}

static void ws_frame_rejects_64bit_length_top_bit(void **state) {
  (void)state;
  const uint8_t frame[] = {0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0};

  assert_int_equal(parse_fresh_rc(frame, sizeof frame), -HARK_WS_CLOSE_PROTOCOL_ERROR);
}

/* ---- fragmentation ---- */

static void ws_frame_rejects_orphan_continuation(void **state) {
  (void)state;
  hark_buf frame = {0};
  add_text(&frame, 1, HARK_WS_OP_CONTINUATION, "x");

  assert_int_equal(parse_fresh_rc(frame.data, frame.len), -HARK_WS_CLOSE_PROTOCOL_ERROR);
  assert_int_equal(parse_fresh_rc(frame.data, 1), -HARK_WS_CLOSE_PROTOCOL_ERROR);
  hark_buf_free(&frame);
}

static void ws_frame_rejects_message_inside_fragmented(void **state) {
  (void)state;
  const int opcodes[] = {HARK_WS_OP_TEXT, HARK_WS_OP_BINARY};

  for (size_t i = 0; i < 2; i++) {
    hark_ws_parser parser;
    hark_ws_parser_init(&parser, TEST_MAX_MESSAGE);
    hark_buf first = {0};
    hark_buf second = {0};
    add_text(&first, 0, HARK_WS_OP_TEXT, "part");
    add_text(&second, 1, opcodes[i], "new");

    parse_result result = parse_whole(&parser, &first);
    assert_int_equal(result.rc, 1);
    assert_int_equal(result.has_event, 0);
    assert_int_equal(parse_whole(&parser, &second).rc, -HARK_WS_CLOSE_PROTOCOL_ERROR);
    assert_non_null(parser.error);

    hark_buf_free(&first);
    hark_buf_free(&second);
    hark_ws_parser_free(&parser);
  }
}

static void ws_frame_reassembles_with_interleaved_control(void **state) {
  (void)state;
  hark_ws_parser parser;
  hark_ws_parser_init(&parser, TEST_MAX_MESSAGE);
  hark_buf frames[5] = {{0}};
  add_text(&frames[0], 0, HARK_WS_OP_TEXT, "Hel");
  add_text(&frames[1], 1, HARK_WS_OP_PING, "ping data");
  add_text(&frames[2], 0, HARK_WS_OP_CONTINUATION, "lo ");
  add_text(&frames[3], 1, HARK_WS_OP_PONG, "");
  add_text(&frames[4], 1, HARK_WS_OP_CONTINUATION, "world");

  parse_result result = parse_whole(&parser, &frames[0]);
  assert_int_equal(result.rc, 1);
  assert_int_equal(result.has_event, 0);
  assert_int_equal(parser.fragment_opcode, HARK_WS_OP_TEXT);

  result = parse_whole(&parser, &frames[1]);
  assert_int_equal(result.rc, 1);
  assert_int_equal(result.has_event, 1);
  assert_int_equal(result.event.kind, HARK_WS_EVENT_PING);
  assert_int_equal(result.event.len, 9);
  assert_memory_equal(result.event.data, "ping data", 9);

  result = parse_whole(&parser, &frames[2]);
  assert_int_equal(result.rc, 1);
  assert_int_equal(result.has_event, 0);

  result = parse_whole(&parser, &frames[3]);
  assert_int_equal(result.rc, 1);
  assert_int_equal(result.event.kind, HARK_WS_EVENT_PONG);
  assert_int_equal(result.event.len, 0);

  result = parse_whole(&parser, &frames[4]);
  assert_message(&result, HARK_WS_OP_TEXT, "Hello world");
  assert_ptr_equal(result.event.data, parser.fragments.data);
  assert_int_equal(parser.fragment_opcode, 0);

  for (size_t i = 0; i < 5; i++) hark_buf_free(&frames[i]);
  hark_ws_parser_free(&parser);
}

static void ws_frame_reassembles_binary_then_accepts_new(void **state) {
  (void)state;
  hark_ws_parser parser;
  hark_ws_parser_init(&parser, TEST_MAX_MESSAGE);
  hark_buf frames = {0};
  add_text(&frames, 0, HARK_WS_OP_BINARY, "ab");
  add_text(&frames, 1, HARK_WS_OP_CONTINUATION, "cd");
  add_text(&frames, 1, HARK_WS_OP_TEXT, "next");

  size_t offset = 0;
  parse_result result = parse(&parser, frames.data, frames.len);
  assert_int_equal(result.has_event, 0);
  offset += result.consumed;

  result = parse(&parser, frames.data + offset, frames.len - offset);
  assert_message(&result, HARK_WS_OP_BINARY, "abcd");
  offset += result.consumed;

  /* After the message, a continuation is an error again and a new message is
   * accepted; the reassembly buffer is emptied. */
  result = parse(&parser, frames.data + offset, frames.len - offset);
  assert_message(&result, HARK_WS_OP_TEXT, "next");
  assert_int_equal(parser.fragments.len, 0);

  hark_buf orphan = {0};
  add_text(&orphan, 1, HARK_WS_OP_CONTINUATION, "x");
  assert_int_equal(parse_whole(&parser, &orphan).rc, -HARK_WS_CLOSE_PROTOCOL_ERROR);

  hark_buf_free(&orphan);
  hark_buf_free(&frames);
  hark_ws_parser_free(&parser);
}

static void ws_frame_reassembles_empty_fragments(void **state) {
  (void)state;
  hark_ws_parser parser;
  hark_ws_parser_init(&parser, TEST_MAX_MESSAGE);
  hark_buf first = {0};
  hark_buf last = {0};
  add_text(&first, 0, HARK_WS_OP_TEXT, "");
  add_text(&last, 1, HARK_WS_OP_CONTINUATION, "");

  assert_int_equal(parse_whole(&parser, &first).has_event, 0);
  parse_result result = parse_whole(&parser, &last);
  assert_message(&result, HARK_WS_OP_TEXT, "");
  assert_non_null(result.event.data);

  hark_buf_free(&first);
  hark_buf_free(&last);
  hark_ws_parser_free(&parser);
}

/* ---- lengths ---- */

static void ws_frame_parses_length_boundaries(void **state) {
  (void)state;
  const size_t lengths[] = {0, 1, 125, 126, 127, 65535, 65536, 70000};
  const size_t header_lengths[] = {6, 6, 6, 8, 8, 8, 14, 14};

  for (size_t i = 0; i < sizeof lengths / sizeof lengths[0]; i++) {
    size_t len = lengths[i];
    char *payload = malloc(len + 1);
    assert_non_null(payload);
    for (size_t k = 0; k < len; k++) payload[k] = (char)('a' + k % 26);

    hark_buf frame = {0};
    add_frame(&frame, 1, HARK_WS_OP_TEXT, payload, len);
    assert_int_equal(frame.len, header_lengths[i] + len);

    hark_ws_parser parser;
    hark_ws_parser_init(&parser, TEST_MAX_MESSAGE);
    parse_result result = parse_whole(&parser, &frame);
    assert_int_equal(result.rc, 1);
    assert_int_equal(result.event.len, len);
    assert_memory_equal(result.event.data, payload, len);
    assert_ptr_equal(result.event.data, frame.data + header_lengths[i]);

    /* One byte short of the frame is not enough. The frame is built again
     * because parsing unmasked it in place. */
    hark_ws_parser_free(&parser);
    hark_ws_parser_init(&parser, TEST_MAX_MESSAGE);
    hark_buf_reset(&frame);
    add_frame(&frame, 1, HARK_WS_OP_TEXT, payload, len);
    assert_int_equal(parse(&parser, frame.data, frame.len - 1).rc, 0);

    hark_ws_parser_free(&parser);
    hark_buf_free(&frame);
    free(payload);
  }
}

/* ---- size limit ---- */

static void ws_frame_limits_message_size_from_header(void **state) {
  (void)state;
  char payload[1001];
  memset(payload, 'x', sizeof payload);
  hark_ws_parser parser;

  /* Exactly the limit is accepted. */
  hark_buf frame = {0};
  add_frame(&frame, 1, HARK_WS_OP_TEXT, payload, 1000);
  hark_ws_parser_init(&parser, 1000);
  assert_int_equal(parse_whole(&parser, &frame).rc, 1);
  hark_ws_parser_free(&parser);

  /* One byte over is rejected from the 4-byte header alone, before the mask
   * key and the payload arrive. */
  hark_buf_reset(&frame);
  add_frame(&frame, 1, HARK_WS_OP_BINARY, payload, 1001);
  hark_ws_parser_init(&parser, 1000);
  assert_int_equal(parse(&parser, frame.data, 4).rc, -HARK_WS_CLOSE_TOO_BIG);
  assert_non_null(parser.error);
  hark_ws_parser_free(&parser);

  hark_ws_parser_init(&parser, 1000);
  assert_int_equal(parse(&parser, frame.data, 3).rc, 0);
  hark_ws_parser_free(&parser);

  hark_buf_free(&frame);
}

static void ws_frame_limits_huge_64bit_length(void **state) {
  (void)state;
  /* Length 2^62, far beyond any limit and any buffer. */
  const uint8_t frame[] = {0x82, 0xFF, 0x40, 0, 0, 0, 0, 0, 0, 0};

  assert_int_equal(parse_fresh_rc(frame, sizeof frame), -HARK_WS_CLOSE_TOO_BIG);
}

static void ws_frame_limits_sum_of_fragments(void **state) {
  (void)state;
  char payload[600];
  memset(payload, 'x', sizeof payload);
  hark_ws_parser parser;
  hark_ws_parser_init(&parser, 1000);
  hark_buf first = {0};
  hark_buf second = {0};
  hark_buf ping = {0};
  add_frame(&first, 0, HARK_WS_OP_TEXT, payload, 600);
  add_frame(&second, 1, HARK_WS_OP_CONTINUATION, payload, 401);
  add_frame(&ping, 1, HARK_WS_OP_PING, payload, 125);

  assert_int_equal(parse_whole(&parser, &first).rc, 1);
  /* Control frames do not count towards the message. */
  assert_int_equal(parse_whole(&parser, &ping).rc, 1);
  assert_int_equal(parse(&parser, second.data, 4).rc, -HARK_WS_CLOSE_TOO_BIG);

  hark_buf_free(&first);
  hark_buf_free(&second);
  hark_buf_free(&ping);
  hark_ws_parser_free(&parser);
}

static void ws_frame_accepts_fragments_at_limit(void **state) {
  (void)state;
  char payload[500];
  memset(payload, 'y', sizeof payload);
  hark_ws_parser parser;
  hark_ws_parser_init(&parser, 1000);
  hark_buf first = {0};
  hark_buf second = {0};
  add_frame(&first, 0, HARK_WS_OP_TEXT, payload, 500);
  add_frame(&second, 1, HARK_WS_OP_CONTINUATION, payload, 500);

  assert_int_equal(parse_whole(&parser, &first).rc, 1);
  parse_result result = parse_whole(&parser, &second);
  assert_int_equal(result.rc, 1);
  assert_int_equal(result.event.len, 1000);

  hark_buf_free(&first);
  hark_buf_free(&second);
  hark_ws_parser_free(&parser);
}

/* ---- partial input ---- */

/* Feeds a stream of frames one byte more at a time, as a slow socket would,
 * and checks that every prefix short of a whole frame returns 0 without
 * touching the bytes, and that each frame parses once complete. */
static void ws_frame_parses_input_byte_by_byte(void **state) {
  (void)state;
  char big[300];
  memset(big, 'b', sizeof big);
  hark_buf stream = {0};
  add_text(&stream, 1, HARK_WS_OP_TEXT, "short");
  add_frame(&stream, 1, HARK_WS_OP_BINARY, big, sizeof big);
  add_text(&stream, 0, HARK_WS_OP_TEXT, "frag");
  add_text(&stream, 1, HARK_WS_OP_PING, "ping");
  add_text(&stream, 1, HARK_WS_OP_CONTINUATION, "mented");
  add_frame(&stream, 1, HARK_WS_OP_CLOSE, "\x03\xE8" "bye", 5);

  hark_ws_parser parser;
  hark_ws_parser_init(&parser, TEST_MAX_MESSAGE);
  hark_buf snapshot = {0};
  assert_int_equal(hark_buf_append(&snapshot, stream.data, stream.len), 0);

  size_t start = 0;
  int events = 0;
  hark_ws_event last;
  while (start < stream.len) {
    size_t avail = 0;
    parse_result result;
    do {
      avail++;
      assert_true(start + avail <= stream.len);
      result = parse(&parser, stream.data + start, avail);
      if (result.rc == 0) {
        assert_int_equal(result.consumed, 0);
        assert_memory_equal(stream.data + start, snapshot.data + start, avail);
      }
    } while (result.rc == 0);

    assert_int_equal(result.rc, 1);
    assert_int_equal(result.consumed, avail);
    events += result.has_event;
    if (result.has_event) last = result.event;
    if (result.has_event && result.event.opcode == HARK_WS_OP_TEXT) {
      assert_int_equal(result.event.kind, HARK_WS_EVENT_MESSAGE);
    }
    start += avail;
  }

  assert_int_equal(events, 5);
  assert_int_equal(last.kind, HARK_WS_EVENT_CLOSE);
  assert_int_equal(last.close_code, 1000);
  assert_int_equal(last.len, 3);
  assert_memory_equal(last.data, "bye", 3);

  hark_buf_free(&snapshot);
  hark_buf_free(&stream);
  hark_ws_parser_free(&parser);
}

/* ---- UTF-8 ---- */

static void ws_frame_rejects_invalid_utf8_text(void **state) {
  (void)state;
  hark_buf frame = {0};
  add_text(&frame, 1, HARK_WS_OP_TEXT, "bad \xC0\xAF");

  assert_int_equal(parse_fresh_rc(frame.data, frame.len), -HARK_WS_CLOSE_INVALID_PAYLOAD);

  /* The same bytes are fine in a binary message. */
  hark_buf_reset(&frame);
  add_text(&frame, 1, HARK_WS_OP_BINARY, "bad \xC0\xAF");
  assert_int_equal(parse_fresh_rc(frame.data, frame.len), 1);
  hark_buf_free(&frame);
}

static void ws_frame_checks_utf8_of_whole_message(void **state) {
  (void)state;
  hark_ws_parser parser;
  hark_ws_parser_init(&parser, TEST_MAX_MESSAGE);
  hark_buf frames[4] = {{0}};
  /* "é" (C3 A9) split across two fragments is valid once reassembled. */
  add_text(&frames[0], 0, HARK_WS_OP_TEXT, "caf\xC3");
  add_text(&frames[1], 1, HARK_WS_OP_CONTINUATION, "\xA9");
  /* A surrogate split across fragments is not. */
  add_text(&frames[2], 0, HARK_WS_OP_TEXT, "\xED");
  add_text(&frames[3], 1, HARK_WS_OP_CONTINUATION, "\xA0\x80");

  assert_int_equal(parse_whole(&parser, &frames[0]).rc, 1);
  parse_result result = parse_whole(&parser, &frames[1]);
  assert_message(&result, HARK_WS_OP_TEXT, "caf\xC3\xA9");

  assert_int_equal(parse_whole(&parser, &frames[2]).rc, 1);
  assert_int_equal(parse_whole(&parser, &frames[3]).rc, -HARK_WS_CLOSE_INVALID_PAYLOAD);

  for (size_t i = 0; i < 4; i++) hark_buf_free(&frames[i]);
  hark_ws_parser_free(&parser);
}

/* ---- close frames ---- */

static parse_result parse_close_body(hark_ws_parser *parser, const void *body, size_t len,
                                     hark_buf *frame) {
  hark_buf_reset(frame);
  add_frame(frame, 1, HARK_WS_OP_CLOSE, body, len);
  hark_ws_parser_init(parser, TEST_MAX_MESSAGE);
  return parse_whole(parser, frame);
}

static void ws_frame_parses_close_without_body(void **state) {
  (void)state;
  hark_ws_parser parser;
  hark_buf frame = {0};

  parse_result result = parse_close_body(&parser, NULL, 0, &frame);

  assert_int_equal(result.rc, 1);
  assert_int_equal(result.has_event, 1);
  assert_int_equal(result.event.kind, HARK_WS_EVENT_CLOSE);
  assert_int_equal(result.event.close_code, HARK_WS_CLOSE_NO_STATUS);
  assert_int_equal(result.event.len, 0);
  hark_ws_parser_free(&parser);
  hark_buf_free(&frame);
}

static void ws_frame_parses_close_code_and_reason(void **state) {
  (void)state;
  hark_ws_parser parser;
  hark_buf frame = {0};

  parse_result result = parse_close_body(&parser, "\x0F\xA0going \xE2\x86\x92", 11, &frame);

  assert_int_equal(result.rc, 1);
  assert_int_equal(result.event.kind, HARK_WS_EVENT_CLOSE);
  assert_int_equal(result.event.close_code, 4000);
  assert_int_equal(result.event.len, 9);
  assert_memory_equal(result.event.data, "going \xE2\x86\x92", 9);
  hark_ws_parser_free(&parser);
  hark_buf_free(&frame);
}

static void ws_frame_rejects_one_byte_close(void **state) {
  (void)state;
  hark_ws_parser parser;
  hark_ws_parser_init(&parser, TEST_MAX_MESSAGE);
  hark_buf frame = {0};
  add_frame(&frame, 1, HARK_WS_OP_CLOSE, "\x03", 1);
  /* The byte after the frame would complete code 1000 if the parser read two
   * bytes from a 1-byte body. */
  assert_int_equal(hark_buf_append_byte(&frame, (char)0xE8), 0);

  parse_result result = parse(&parser, frame.data, frame.len);

  assert_int_equal(result.rc, -HARK_WS_CLOSE_PROTOCOL_ERROR);
  hark_ws_parser_free(&parser);
  hark_buf_free(&frame);
}

static void ws_frame_checks_close_codes(void **state) {
  (void)state;
  const uint16_t allowed[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010,
                              1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999};
  const uint16_t rejected[] = {0,    1,    999,  1004, 1005, 1006, 1015,
                               1016, 1100, 2000, 2999, 5000, 9999, 65535};
  hark_ws_parser parser;
  hark_buf frame = {0};

  for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++) {
    char body[2] = {(char)(allowed[i] >> 8), (char)allowed[i]};
    parse_result result = parse_close_body(&parser, body, 2, &frame);
    if (result.rc != 1) fail_msg("code %u rejected with %d", allowed[i], result.rc);
    assert_int_equal(result.event.close_code, allowed[i]);
    assert_int_equal(result.event.len, 0);
    hark_ws_parser_free(&parser);
  }

  for (size_t i = 0; i < sizeof rejected / sizeof rejected[0]; i++) {
    char body[2] = {(char)(rejected[i] >> 8), (char)rejected[i]};
    parse_result result = parse_close_body(&parser, body, 2, &frame);
    if (result.rc != -HARK_WS_CLOSE_PROTOCOL_ERROR) {
      fail_msg("code %u: rc %d", rejected[i], result.rc);
    }
    hark_ws_parser_free(&parser);
  }
  hark_buf_free(&frame);
}

static void ws_frame_rejects_invalid_close_reason(void **state) {
  (void)state;
  hark_ws_parser parser;
  hark_buf frame = {0};

  parse_result result = parse_close_body(&parser, "\x03\xE8\xFF", 3, &frame);

  assert_int_equal(result.rc, -HARK_WS_CLOSE_INVALID_PAYLOAD);
  hark_ws_parser_free(&parser);
  hark_buf_free(&frame);
}

/* ---- server encoders ---- */

static void ws_frame_encodes_each_length_form(void **state) {
  (void)state;
  uint8_t header[10];

  assert_int_equal(hark_ws_encode_header(header, HARK_WS_OP_TEXT, 0), 2);
  assert_memory_equal(header, ((uint8_t[]){0x81, 0x00}), 2);

  assert_int_equal(hark_ws_encode_header(header, HARK_WS_OP_BINARY, 125), 2);
  assert_memory_equal(header, ((uint8_t[]){0x82, 0x7D}), 2);

  assert_int_equal(hark_ws_encode_header(header, HARK_WS_OP_TEXT, 126), 4);
  assert_memory_equal(header, ((uint8_t[]){0x81, 0x7E, 0x00, 0x7E}), 4);

  assert_int_equal(hark_ws_encode_header(header, HARK_WS_OP_TEXT, 65535), 4);
  assert_memory_equal(header, ((uint8_t[]){0x81, 0x7E, 0xFF, 0xFF}), 4);

  assert_int_equal(hark_ws_encode_header(header, HARK_WS_OP_TEXT, 65536), 10);
  assert_memory_equal(header, ((uint8_t[]){0x81, 0x7F, 0, 0, 0, 0, 0, 0x01, 0, 0}), 10);

  assert_int_equal(hark_ws_encode_header(header, HARK_WS_OP_PONG, (size_t)0x0102030405ULL), 10);
  assert_memory_equal(header, ((uint8_t[]){0x8A, 0x7F, 0, 0, 0, 0x01, 0x02, 0x03, 0x04, 0x05}),
                      10);
}

static void ws_frame_encodes_whole_frame(void **state) {
  (void)state;
  hark_buf out = {0};

  assert_int_equal(hark_ws_encode_frame(&out, HARK_WS_OP_TEXT, "Hello", 5), 0);
  /* The unmasked "Hello" example of RFC 6455 section 5.7. */
  assert_int_equal(out.len, 7);
  assert_memory_equal(out.data, "\x81\x05Hello", 7);

  assert_int_equal(hark_ws_encode_frame(&out, HARK_WS_OP_PING, NULL, 0), 0);
  assert_int_equal(out.len, 9);
  assert_memory_equal(out.data + 7, "\x89\x00", 2);
  hark_buf_free(&out);
}

static void ws_frame_encodes_close(void **state) {
  (void)state;
  hark_buf out = {0};

  assert_int_equal(hark_ws_encode_close(&out, 1000, "bye"), 0);
  assert_int_equal(out.len, 7);
  assert_memory_equal(out.data, "\x88\x05\x03\xE8" "bye", 7);

  hark_buf_reset(&out);
  assert_int_equal(hark_ws_encode_close(&out, HARK_WS_CLOSE_TOO_BIG, NULL), 0);
  assert_int_equal(out.len, 4);
  assert_memory_equal(out.data, "\x88\x02\x03\xF1", 4);

  /* 1005 must not be sent, so it becomes an empty close body. */
  hark_buf_reset(&out);
  assert_int_equal(hark_ws_encode_close(&out, HARK_WS_CLOSE_NO_STATUS, "ignored"), 0);
  assert_int_equal(out.len, 2);
  assert_memory_equal(out.data, "\x88\x00", 2);
  hark_buf_free(&out);
}

static void ws_frame_cuts_long_close_reason(void **state) {
  (void)state;
  char reason[200];
  memset(reason, 'r', sizeof reason - 1);
  reason[sizeof reason - 1] = '\0';
  hark_buf out = {0};

  assert_int_equal(hark_ws_encode_close(&out, 1011, reason), 0);
  assert_int_equal(out.len, 2 + 125);
  assert_int_equal((uint8_t)out.data[1], 125);

  /* A 2-byte character straddling byte 123 of the reason is dropped whole. */
  memset(reason, 'r', 122);
  strcpy(reason + 122, "\xC3\xA9tail");
  hark_buf_reset(&out);
  assert_int_equal(hark_ws_encode_close(&out, 1011, reason), 0);
  assert_int_equal(out.len, 2 + 2 + 122);
  assert_int_equal((uint8_t)out.data[1], 124);
  assert_memory_equal(out.data + 4, reason, 122);
  hark_buf_free(&out);
}

/* The server's close frame must parse back to the same code and reason once
 * masked as a client would send it. */
static void ws_frame_close_round_trips(void **state) {
  (void)state;
  hark_buf server = {0};
  assert_int_equal(hark_ws_encode_close(&server, 1008, "policy"), 0);
  hark_buf client = {0};
  add_frame(&client, 1, HARK_WS_OP_CLOSE, server.data + 2, server.len - 2);
  hark_ws_parser parser;
  hark_ws_parser_init(&parser, TEST_MAX_MESSAGE);

  parse_result result = parse_whole(&parser, &client);

  assert_int_equal(result.rc, 1);
  assert_int_equal(result.event.close_code, 1008);
  assert_int_equal(result.event.len, 6);
  assert_memory_equal(result.event.data, "policy", 6);
  hark_ws_parser_free(&parser);
  hark_buf_free(&client);
  hark_buf_free(&server);
}

static void ws_frame_client_encoder_clears_fin(void **state) {
  (void)state;
  hark_buf out = {0};

  add_text(&out, 0, HARK_WS_OP_TEXT, "abc");

  assert_int_equal((uint8_t)out.data[0], 0x01);
  assert_int_equal((uint8_t)out.data[1], 0x83);
  hark_buf_free(&out);
}

/* ---- reassembly memory ---- */

static void ws_frame_releases_large_reassembly_buffer(void **state) {
  (void)state;
  size_t len = 100 * 1024;
  char *payload = malloc(len);
  assert_non_null(payload);
  memset(payload, 'z', len);
  hark_ws_parser parser;
  hark_ws_parser_init(&parser, TEST_MAX_MESSAGE);
  hark_buf frames = {0};
  add_frame(&frames, 0, HARK_WS_OP_BINARY, payload, len);
  add_frame(&frames, 1, HARK_WS_OP_CONTINUATION, payload, len);
  add_text(&frames, 1, HARK_WS_OP_PING, "");

  parse_result result = parse(&parser, frames.data, frames.len);
  size_t offset = result.consumed;
  result = parse(&parser, frames.data + offset, frames.len - offset);
  assert_int_equal(result.event.len, 2 * len);
  offset += result.consumed;

  result = parse(&parser, frames.data + offset, frames.len - offset);
  assert_int_equal(result.event.kind, HARK_WS_EVENT_PING);
  assert_int_equal(parser.fragments.cap, 0);

  hark_buf_free(&frames);
  hark_ws_parser_free(&parser);
  free(payload);
}

/* ---- accept key ---- */

static void ws_frame_accept_key_matches_rfc(void **state) {
  (void)state;
  const char *key = "dGhlIHNhbXBsZSBub25jZQ==";
  char out[29];

  assert_int_equal(hark_ws_accept_key(key, strlen(key), out), 0);
  assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");

  const char *padded = " \tdGhlIHNhbXBsZSBub25jZQ== ";
  memset(out, 0, sizeof out);
  assert_int_equal(hark_ws_accept_key(padded, strlen(padded), out), 0);
  assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

static void ws_frame_accept_key_rejects_bad_keys(void **state) {
  (void)state;
  const char *bad[] = {
      "",
      "dGhlIHNhbXBsZSBub25jZQ=",     /* 23 characters */
      "dGhlIHNhbXBsZSBub25jZQ===",   /* 25 characters */
      "dGhlIHNhbXBsZSBub25jZQAA",    /* no padding: 18 bytes */
      "dGhlIHNhbXBsZSBub25jZQA=",    /* one '=': 17 bytes */
      "dGhlIHNhbXBsZSBub25j=Q==",    /* '=' inside the data */
      "dGhlIHNhbXBsZSBub25jZ!==",    /* not in the alphabet */
      "dGhlIHNhbXBsZSBub25j Q==",    /* inner space */
      "dGhlIHNhbXBsZSBub25jZR==",    /* non-zero bits before the padding */
      "dGhlIHNhbXBsZSBub25jZQ==dGhl", /* trailing data */
      "the sample nonce",            /* the 16 raw bytes, not base64 */
  };
  char out[29];

  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    if (hark_ws_accept_key(bad[i], strlen(bad[i]), out) != -1) fail_msg("accepted \"%s\"", bad[i]);
  }

  /* The length given is what counts, not the NUL. */
  const char *key = "dGhlIHNhbXBsZSBub25jZQ==";
  assert_int_equal(hark_ws_accept_key(key, 23, out), -1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(ws_frame_parses_rfc_masked_hello),
      cmocka_unit_test(ws_frame_client_encoder_matches_rfc),
      cmocka_unit_test(ws_frame_parses_binary_in_place),
      cmocka_unit_test(ws_frame_parses_empty_text),
      cmocka_unit_test(ws_frame_parses_one_frame_per_call),
      cmocka_unit_test(ws_frame_rejects_unmasked_frame),
      cmocka_unit_test(ws_frame_rejects_reserved_bits),
      cmocka_unit_test(ws_frame_rejects_unknown_opcodes),
      cmocka_unit_test(ws_frame_rejects_fragmented_control),
      cmocka_unit_test(ws_frame_limits_control_payload),
      cmocka_unit_test(ws_frame_rejects_nonminimal_16bit_length),
      cmocka_unit_test(ws_frame_rejects_nonminimal_64bit_length),
      cmocka_unit_test(ws_frame_rejects_64bit_length_top_bit),
      cmocka_unit_test(ws_frame_rejects_orphan_continuation),
      cmocka_unit_test(ws_frame_rejects_message_inside_fragmented),
      cmocka_unit_test(ws_frame_reassembles_with_interleaved_control),
      cmocka_unit_test(ws_frame_reassembles_binary_then_accepts_new),
      cmocka_unit_test(ws_frame_reassembles_empty_fragments),
      cmocka_unit_test(ws_frame_parses_length_boundaries),
      cmocka_unit_test(ws_frame_limits_message_size_from_header),
      cmocka_unit_test(ws_frame_limits_huge_64bit_length),
      cmocka_unit_test(ws_frame_limits_sum_of_fragments),
      cmocka_unit_test(ws_frame_accepts_fragments_at_limit),
      cmocka_unit_test(ws_frame_parses_input_byte_by_byte),
      cmocka_unit_test(ws_frame_rejects_invalid_utf8_text),
      cmocka_unit_test(ws_frame_checks_utf8_of_whole_message),
      cmocka_unit_test(ws_frame_parses_close_without_body),
      cmocka_unit_test(ws_frame_parses_close_code_and_reason),
      cmocka_unit_test(ws_frame_rejects_one_byte_close),
      cmocka_unit_test(ws_frame_checks_close_codes),
      cmocka_unit_test(ws_frame_rejects_invalid_close_reason),
      cmocka_unit_test(ws_frame_encodes_each_length_form),
      cmocka_unit_test(ws_frame_encodes_whole_frame),
      cmocka_unit_test(ws_frame_encodes_close),
      cmocka_unit_test(ws_frame_cuts_long_close_reason),
      cmocka_unit_test(ws_frame_close_round_trips),
      cmocka_unit_test(ws_frame_client_encoder_clears_fin),
      cmocka_unit_test(ws_frame_releases_large_reassembly_buffer),
      cmocka_unit_test(ws_frame_accept_key_matches_rfc),
      cmocka_unit_test(ws_frame_accept_key_rejects_bad_keys),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
