/* The WebSocket side of a connection: the upgrade handshake, then frames in
 * and out. Complete messages go to the channel layer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "base/log.h"
#include "server/config.h"
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

/* phoenix.js sends its authToken as the subprotocol
 * "base64url.bearer.phx.<token in standard base64, '=' removed>": btoa's
 * alphabet, despite the name. */
#define AUTH_TOKEN_PREFIX "base64url.bearer.phx."

static int base64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

/* Decodes unpadded standard base64 into `out`. Returns 0, or -1 for a byte
 * outside the alphabet, a length that no encoding has, or a result longer
 * than a token may be. */
static int decode_base64(const char *text, size_t len, hark_buf *out) {
  while (len > 0 && text[len - 1] == '=') len--;
  if (len % 4 == 1 || len / 4 * 3 > HARK_JWT_MAX_TOKEN_BYTES) return -1;
  uint32_t bits = 0;
  int bit_count = 0;
  for (size_t i = 0; i < len; i++) {
    int value = base64_value(text[i]);
    if (value < 0) return -1;
    bits = (bits << 6) | (uint32_t)value;
    bit_count += 6;
    if (bit_count >= 8) {
      bit_count -= 8;
      if (hark_buf_append_byte(out, (char)((bits >> bit_count) & 0xff)) != 0) return -1;
    }
  }
  return 0;
}

/* Finds the auth token entry in a Sec-WebSocket-Protocol value. Returns 1
 * and the entry's base64 part, or 0 when there is none. */
static int find_auth_subprotocol(const char *value, size_t len, const char **b64, size_t *b64_len) {
  size_t prefix_len = strlen(AUTH_TOKEN_PREFIX);
  size_t pos = 0;
  while (pos < len) {
    while (pos < len && (value[pos] == ' ' || value[pos] == '\t' || value[pos] == ',')) pos++;
    size_t start = pos;
    while (pos < len && value[pos] != ',') pos++;
    size_t end = pos;
    while (end > start && (value[end - 1] == ' ' || value[end - 1] == '\t')) end--;
    if (end - start >= prefix_len && memcmp(value + start, AUTH_TOKEN_PREFIX, prefix_len) == 0) {
      *b64 = value + start + prefix_len;
      *b64_len = end - start - prefix_len;
      return 1;
    }
  }
  return 0;
}

static void reject_upgrade(hark_conn *conn, int status, const char *reason, const char *headers) {
  HARK_CLIENT_WARN(conn->server, "websocket_rejected", "conn=%llu peer=%s status=%d reason=\"%s\"",
            (unsigned long long)conn->id, hark_conn_peer(conn), status, reason);
  conn->close_after_response = 1;
  hark_http_respond_error(conn, status, reason, headers);
}

/* Checks the handshake headers (RFC 6455 section 4.2.1). On success stores
 * the Sec-WebSocket-Accept value and whether the "phoenix" subprotocol is to
 * be echoed, and returns 0; otherwise replies with the error and returns -1. */
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

  /* An absent vsn means V1; a present but empty one must not. */
  const char *value = NULL;
  if (found == 1) value = vsn.data ? vsn.data : "";
  int rc = found < 0 ? -1 : hark_serializer_from_vsn(value, vsn.len, &conn->serializer);

  if (rc != 0) {
    char quoted[80];
    hark_log_quote(quoted, sizeof quoted, vsn.data ? vsn.data : "", vsn.len);
    HARK_CLIENT_WARN(conn->server, "websocket_rejected",
                     "conn=%llu peer=%s status=403 reason=\"unsupported vsn\" vsn=%s",
                     (unsigned long long)conn->id, hark_conn_peer(conn), quoted);
    conn->close_after_response = 1;
    hark_http_respond_error(conn, 403, "unsupported protocol version (vsn); use 1.0.0 or 2.0.0", NULL);
  }
  hark_buf_free(&vsn);
  return rc != 0 ? -1 : 0;
}

/* check_origin: a browser page of another site must not open a socket
 * that carries its user's credentials. Sends 403 and returns -1 when the
 * Origin header is not allowed. */
static int check_origin(hark_conn *conn, const hark_security_config *security) {
  size_t origin_len, host_len = 0;
  const char *origin = hark_http_header_get(conn->request, "origin", &origin_len);
  const char *host = security->host;
  if (host) {
    host_len = strlen(host);
  } else {
    size_t header_len;
    const char *header = hark_http_header_get(conn->request, "host", &header_len);
    if (header) host = hark_origin_host_of(header, header_len, &host_len);
  }
  if (hark_origin_allowed(&security->origin, origin, origin_len, host, host_len)) return 0;

  char quoted[160];
  hark_log_quote(quoted, sizeof quoted, origin, origin_len);
  HARK_CLIENT_WARN(conn->server, "websocket_rejected", "conn=%llu peer=%s status=403 reason=\"origin not allowed\" origin=%s",
                   (unsigned long long)conn->id, hark_conn_peer(conn), quoted);
  conn->close_after_response = 1;
  hark_http_respond_error(conn, 403, "origin not allowed", NULL);
  return -1;
}

/* Reads the connection token: the authToken subprotocol, or else the
 * "token" connect param. Returns 1 with the token in `token`, 0 when there
 * is none, -1 when the subprotocol entry is not valid base64. */
static int read_token(hark_conn *conn, const char *query, size_t query_len, hark_buf *token) {
  size_t len;
  const char *b64;
  size_t b64_len;
  const char *protocols = hark_http_header_get(conn->request, "sec-websocket-protocol", &len);
  if (protocols && find_auth_subprotocol(protocols, len, &b64, &b64_len))
    return decode_base64(b64, b64_len, token) == 0 ? 1 : -1;
  int found = query ? hark_query_get(query, query_len, "token", token) : 0;
  return found == 1 && token->len > 0 ? 1 : (found < 0 ? -1 : 0);
}

/* Verifies the connection token, when tokens are configured, and keeps its
 * claims on the connection. A socket without a token is anonymous; a socket
 * with a bad one is rejected with 403. The token itself is never logged.
 * Returns 0, or -1 after sending the 403 response. */
static int authenticate(hark_conn *conn, const hark_security_config *security, const char *query,
                        size_t query_len) {
  hark_buf token = {0};
  int found = read_token(conn, query, query_len, &token);
  const char *reason = "the token is not valid base64";
  int rc = found < 0 ? -1 : 0;
  if (found == 1 && security->verifier)
    rc = hark_jwt_verify_connection(security->verifier, token.data, token.len, (int64_t)time(NULL),
                                    &conn->claims, &reason);
  hark_buf_free(&token);
  if (rc == 0) return 0;

  HARK_CLIENT_WARN(conn->server, "websocket_rejected", "conn=%llu peer=%s status=403 reason=\"invalid token\" error=\"%s\"",
                   (unsigned long long)conn->id, hark_conn_peer(conn), reason);
  conn->close_after_response = 1;
  char message[160];
  snprintf(message, sizeof message, "invalid token: %s", reason);
  hark_http_respond_error(conn, 403, message, NULL);
  return -1;
}

static void start_rate_limit(hark_conn *conn) {
  unsigned rate = conn->server->config.max_messages_per_second;
  uint32_t burst = rate > UINT32_MAX / 2 ? UINT32_MAX : 2 * rate;
  hark_token_bucket_init(&conn->rate, rate, burst, hark_now_ms(conn->server));
}

void hark_ws_upgrade(hark_conn *conn, const char *path, size_t path_len, const char *query,
                     size_t query_len, char *rest, size_t rest_len) {
  (void)path;
  (void)path_len;
  char accept[29];
  int echo_phoenix;
  if (check_handshake(conn, accept, &echo_phoenix) != 0) return;
  if (negotiate_serializer(conn, query, query_len) != 0) return;
  const hark_security_config *security = conn->server->config.security;
  if (security && check_origin(conn, security) != 0) return;
  if (security && authenticate(conn, security, query, query_len) != 0) return;

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
  start_rate_limit(conn);
  HARK_DEBUG("websocket_opened", "conn=%llu peer=%s serializer=V%d", (unsigned long long)conn->id,
             hark_conn_peer(conn), (int)conn->serializer);
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

/* Returns 1 when the socket may send another message now; otherwise closes
 * it with 1008 and returns 0. */
static int within_rate(hark_conn *conn) {
  if (hark_token_bucket_take(&conn->rate, hark_now_ms(conn->server))) return 1;
  HARK_CLIENT_WARN(conn->server, "rate_limit_exceeded", "conn=%llu peer=%s limit_per_s=%llu close_code=1008",
                   (unsigned long long)conn->id, hark_conn_peer(conn), (unsigned long long)conn->rate.rate_per_s);
  hark_ws_close(conn, HARK_WS_CLOSE_POLICY, "message rate limit exceeded");
  return 0;
}

static void handle_event(hark_conn *conn, const hark_ws_event *event) {
  /* Only data messages count. A ping flood costs pongs, which the output
   * limit bounds, as it bounds any reader that does not read. */
  if (event->kind == HARK_WS_EVENT_MESSAGE && !within_rate(conn)) return;
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
      /* Echo the peer's code. A close without a code gets a close without one. */
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
                (unsigned long long)conn->id, hark_conn_peer(conn), -rc, conn->ws.error ? conn->ws.error : "");
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
