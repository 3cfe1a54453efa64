/* The WebSocket side of a connection: the upgrade handshake, then frames in
 * and out. Complete messages go to the channel layer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/log.h"
#include "server/conn.h"

/* Input buffers larger than this are freed once empty. */
#define INPUT_KEEP_BYTES (64 * 1024)

/* Returns 1 when the comma-separated header value contains `token`, compared
 * without regard to case. */
static int header_has_token(const char *value, size_t len, const char *token) {
  size_t token_len = strlen(token);
  size_t pos = 0;
  while (pos < len) {
    while (pos < len && (value[pos] == ' ' || value[pos] == '\t' || value[pos] == ',')) pos++;
    size_t start = pos;
    while (pos < len && value[pos] != ',') pos++;
    size_t end = pos;
    while (end > start && (value[end - 1] == ' ' || value[end - 1] == '\t')) end--;
    if (end - start == token_len && strncasecmp(value + start, token, token_len) == 0) return 1;
  }
  return 0;
}

static void reject_upgrade(hark_conn *conn, int status, const char *reason, const char *headers) {
  HARK_CLIENT_WARN(conn->server, "websocket_rejected", "conn=%llu peer=%s status=%d reason=\"%s\"",
            (unsigned long long)conn->id, conn->peer, status, reason);
  conn->close_after_response = 1;
  hark_http_respond_error(conn, status, reason, headers);
}

/* Checks the handshake headers (RFC 6455 section 4.2.1). On success stores
 * the Sec-WebSocket-Accept value and whether the "phoenix" subprotocol is to
 * be echoed, and returns 0; otherwise answers and returns -1. */
static int check_handshake(hark_conn *conn, char accept[29], int *echo_phoenix) {
  const hark_http_request *request = conn->request;
  size_t len;
  const char *value;

  if (request->parser.method != HTTP_GET) {
    reject_upgrade(conn, 400, "WebSocket connections must use GET", NULL);
    return -1;
  }
  value = hark_http_header_get(request, "upgrade", &len);
  int upgrade_ok = value && header_has_token(value, len, "websocket");
  value = hark_http_header_get(request, "connection", &len);
  if (!upgrade_ok || !value || !header_has_token(value, len, "upgrade")) {
    reject_upgrade(conn, 400, "expected a WebSocket upgrade request", NULL);
    return -1;
  }

  value = hark_http_header_get(request, "sec-websocket-version", &len);
  if (!value || len != 2 || memcmp(value, "13", 2) != 0) {
    reject_upgrade(conn, 426, "unsupported WebSocket version; use 13", "Sec-WebSocket-Version: 13\r\n");
    return -1;
  }
  value = hark_http_header_get(request, "sec-websocket-key", &len);
  if (!value || hark_ws_accept_key(value, len, accept) != 0) {
    reject_upgrade(conn, 400, "missing or invalid Sec-WebSocket-Key", NULL);
    return -1;
  }

  /* The Phoenix client asks for subprotocols only when it sends an auth
   * token, and then always includes "phoenix", which must be echoed. */
  *echo_phoenix = 0;
  value = hark_http_header_get(request, "sec-websocket-protocol", &len);
  if (value) {
    if (!header_has_token(value, len, "phoenix")) {
      reject_upgrade(conn, 403, "no supported WebSocket subprotocol requested", NULL);
      return -1;
    }
    *echo_phoenix = 1;
  }
  return 0;
}

static int negotiate_serializer(hark_conn *conn, const char *query, size_t query_len) {
  hark_buf vsn = {0};
  int found = query ? hark_query_get(query, query_len, "vsn", &vsn) : 0;
  int rc = hark_serializer_from_vsn(found == 1 ? (vsn.data ? vsn.data : "") : NULL, vsn.len,
                                    &conn->serializer);
  if (rc != 0 || found < 0) {
    char quoted[80];
    hark_log_quote(quoted, sizeof quoted, vsn.data ? vsn.data : "", vsn.len);
    HARK_CLIENT_WARN(conn->server, "websocket_rejected", "conn=%llu peer=%s status=403 reason=\"unsupported vsn\" vsn=%s",
              (unsigned long long)conn->id, conn->peer, quoted);
    conn->close_after_response = 1;
    hark_http_respond_error(conn, 403, "unsupported protocol version (vsn); use 1.0.0 or 2.0.0", NULL);
  }
  hark_buf_free(&vsn);
  return rc != 0 || found < 0 ? -1 : 0;
}

void hark_ws_upgrade(hark_conn *conn, const char *path, size_t path_len, const char *query,
                     size_t query_len, char *rest, size_t rest_len) {
  (void)path;
  (void)path_len;
  char accept[29];
  int echo_phoenix;
  if (check_handshake(conn, accept, &echo_phoenix) != 0) return;
  if (negotiate_serializer(conn, query, query_len) != 0) return;

  char response[256];
  int n = snprintf(response, sizeof response,
                   "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n%s\r\n",
                   accept, echo_phoenix ? "Sec-WebSocket-Protocol: phoenix\r\n" : "");
  if (hark_conn_send_copy(conn, response, (size_t)n) != 0) {
    hark_conn_abort(conn);
    return;
  }

  if (query_len > 0) {
    conn->params = malloc(query_len);
    if (!conn->params) {
      hark_conn_abort(conn);
      return;
    }
    memcpy(conn->params, query, query_len);
    conn->params_len = query_len;
  }

  hark_http_free(conn);
  conn->state = HARK_CONN_WS;
  hark_ws_parser_init(&conn->ws, conn->server->config.max_message_bytes);
  HARK_DEBUG("websocket_opened", "conn=%llu peer=%s serializer=V%d", (unsigned long long)conn->id,
             conn->peer, (int)conn->serializer);
  if (rest_len > 0) hark_ws_on_data(conn, rest, rest_len);
}

void hark_ws_close(hark_conn *conn, uint16_t code, const char *reason) {
  if (conn->state != HARK_CONN_WS) return;
  hark_buf frame = {0};
  if (hark_ws_encode_close(&frame, code, reason) == 0) hark_conn_send_copy(conn, frame.data, frame.len);
  hark_buf_free(&frame);
  hark_conn_finish(conn);
}

static void send_control(hark_conn *conn, int opcode, const char *data, size_t len) {
  hark_buf frame = {0};
  if (hark_ws_encode_frame(&frame, opcode, data, len) == 0) hark_conn_send_copy(conn, frame.data, frame.len);
  hark_buf_free(&frame);
}

static void handle_event(hark_conn *conn, const hark_ws_event *event) {
  switch (event->kind) {
    case HARK_WS_EVENT_MESSAGE:
      hark_channels_on_message(conn, event->opcode == HARK_WS_OP_BINARY, event->data, event->len);
      break;
    case HARK_WS_EVENT_PING:
      send_control(conn, HARK_WS_OP_PONG, event->data, event->len);
      break;
    case HARK_WS_EVENT_PONG:
      break;
    case HARK_WS_EVENT_CLOSE:
      HARK_DEBUG("websocket_close_received", "conn=%llu code=%u", (unsigned long long)conn->id,
                 (unsigned)event->close_code);
      /* Echo the peer's code; a close without a code is answered without one. */
      if (event->close_code == HARK_WS_CLOSE_NO_STATUS) {
        send_control(conn, HARK_WS_OP_CLOSE, NULL, 0);
        hark_conn_finish(conn);
      } else {
        hark_ws_close(conn, event->close_code, NULL);
      }
      break;
  }
}

/* Keeps the unparsed tail [data, data+len) in conn->input for the next read.
 * The tail may already lie inside conn->input. */
static void keep_tail(hark_conn *conn, const char *data, size_t len) {
  hark_buf *input = &conn->input;
  if (input->len > 0 && data >= input->data && data <= input->data + input->len) {
    hark_buf_consume(input, (size_t)(data - input->data));
    input->len = len;

    /* A large message grew the buffer; an idle socket should not keep it. */
    if (len == 0 && input->cap > INPUT_KEEP_BYTES) hark_buf_free(input);
    return;
  }
  hark_buf_reset(input);
  if (hark_buf_append(input, data, len) != 0) {
    HARK_ERROR("out_of_memory", "conn=%llu what=input", (unsigned long long)conn->id);
    hark_conn_abort(conn);
  }
}

void hark_ws_on_data(hark_conn *conn, char *data, size_t len) {
  while (conn->state == HARK_CONN_WS && len > 0) {
    size_t consumed = 0;
    hark_ws_event event;
    int has_event = 0;
    int rc = hark_ws_parse(&conn->ws, data, len, &consumed, &event, &has_event);
    if (rc < 0) {
      HARK_CLIENT_WARN(conn->server, "websocket_protocol_error", "conn=%llu peer=%s close_code=%d reason=\"%s\"",
                (unsigned long long)conn->id, conn->peer, -rc, conn->ws.error ? conn->ws.error : "");
      hark_ws_close(conn, (uint16_t)-rc, conn->ws.error);
      return;
    }
    if (rc == 0) break;

    data += consumed;
    len -= consumed;
    if (has_event) handle_event(conn, &event);
  }

  if (conn->state == HARK_CONN_WS) keep_tail(conn, data, len);
  else hark_buf_reset(&conn->input);
}
