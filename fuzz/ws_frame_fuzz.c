/* libFuzzer target for the WebSocket frame parser (src/server/ws_frame.c).
 *
 * The input is fed to a parser in pieces whose sizes come from the input's
 * first byte, the way reads split a stream, and every event is checked
 * against the parser's contract. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/utf8.h"
#include "server/ws_frame.h"

#define MAX_MESSAGE 4096

static void check_event(const hark_ws_event *event) {
  switch (event->kind) {
    case HARK_WS_EVENT_MESSAGE:
      assert(event->len <= MAX_MESSAGE);
      assert(event->opcode == HARK_WS_OP_TEXT || event->opcode == HARK_WS_OP_BINARY);
      if (event->opcode == HARK_WS_OP_TEXT) assert(hark_utf8_valid(event->data, event->len));
      break;
    case HARK_WS_EVENT_PING:
    case HARK_WS_EVENT_PONG:
      assert(event->len <= 125);
      break;
    case HARK_WS_EVENT_CLOSE:
      assert(event->len <= 123);
      break;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  size_t step = (size_t)(data[0] % 17) + 1;
  data++;
  size--;

  /* The parser unmasks in place, so it works on a writable copy that grows
   * by `step` bytes at a time, as a connection's input buffer would. */
  char *buffer = malloc(size + 1);
  size_t have = 0, fed = 0;
  hark_ws_parser parser;
  hark_ws_parser_init(&parser, MAX_MESSAGE);

  while (fed < size) {
    size_t piece = size - fed < step ? size - fed : step;
    memcpy(buffer + have, data + fed, piece);
    have += piece;
    fed += piece;

    int rc = 1;
    while (have > 0 && rc == 1) {
      size_t consumed = 0;
      hark_ws_event event;
      int has_event = 0;
      rc = hark_ws_parse(&parser, buffer, have, &consumed, &event, &has_event);
      if (rc < 0) {
        assert(parser.error != NULL);
        assert(rc == -1002 || rc == -1007 || rc == -1009 || rc == -1011);
        goto done;
      }
      if (rc == 1) {
        assert(consumed > 0 && consumed <= have);
        if (has_event) check_event(&event);
        memmove(buffer, buffer + consumed, have - consumed);
        have -= consumed;
      }
    }
  }

done:
  hark_ws_parser_free(&parser);
  free(buffer);
  return 0;
}
