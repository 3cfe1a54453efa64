/* HTTP/1.1 request parsing with llhttp, keep-alive, size limits and
 * responses. Routing hands each complete request to the WebSocket upgrade or
 * to the API. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/json.h"
#include "base/log.h"
#include "server/conn.h"

/* The error_status of a request that a parser callback has already replied to. */
#define ALREADY_ANSWERED (-1)

static hark_conn *conn_of(llhttp_t *parser) { return parser->data; }

/* Rejects the request from inside a parser callback. */
static int reject(hark_http_request *request, int status, const char *text) {
  request->error_status = status;
  request->error_text = text;
  return -1;
}

static int append_head_bytes(hark_conn *conn, const char *at, size_t len) {
  hark_http_request *request = conn->request;
  if (request->text.len + len > conn->server->config.max_header_bytes)
    return reject(request, 431, "request line and headers are too large");
  if (hark_buf_append(&request->text, at, len) != 0)
    return reject(request, 503, "out of memory");
  return 0;
}

static int on_message_begin(llhttp_t *parser) {
  hark_conn *conn = conn_of(parser);
  conn->request_started_ms = hark_now_ms(conn->server);
  return 0;
}

static int on_url(llhttp_t *parser, const char *at, size_t len) {
  hark_conn *conn = conn_of(parser);
  if (append_head_bytes(conn, at, len) != 0) return -1;
  conn->request->url_len = (uint32_t)conn->request->text.len;
  return 0;
}

static int on_header_field(llhttp_t *parser, const char *at, size_t len) {
  hark_conn *conn = conn_of(parser);
  hark_http_request *request = conn->request;

  /* llhttp may deliver one name in several pieces; a new header starts
   * when a name follows a value. */
  if (request->in_value || request->header_count == 0) {
    if (request->header_count == HARK_HTTP_MAX_HEADERS)
      return reject(request, 431, "too many headers");
    hark_http_header *header = &request->headers[request->header_count++];
    header->name_off = (uint32_t)request->text.len;
    header->name_len = 0;
    header->value_off = 0;
    header->value_len = 0;
    request->in_value = 0;
  }
  if (append_head_bytes(conn, at, len) != 0) return -1;
  request->headers[request->header_count - 1].name_len += (uint32_t)len;
  return 0;
}

static int on_header_value(llhttp_t *parser, const char *at, size_t len) {
  hark_conn *conn = conn_of(parser);
  hark_http_request *request = conn->request;
  hark_http_header *header = &request->headers[request->header_count - 1];
  if (!request->in_value) {
    header->value_off = (uint32_t)request->text.len;
    request->in_value = 1;
  }
  if (append_head_bytes(conn, at, len) != 0) return -1;
  header->value_len += (uint32_t)len;
  return 0;
}

static void skip_absolute_form(const char **url, size_t *len);

/* The request's path, without the query string or an absolute-form prefix. */
static void request_path(const hark_http_request *request, const char **path, size_t *len) {
  const char *url = request->text.data ? request->text.data : "";
  size_t url_len = request->url_len;
  skip_absolute_form(&url, &url_len);
  const char *query = memchr(url, '?', url_len);
  *path = url;
  *len = query ? (size_t)(query - url) : url_len;
}

static int on_headers_complete(llhttp_t *parser) {
  hark_conn *conn = conn_of(parser);

  /* The API key is checked before any body is read, so a client without it
   * cannot make the server buffer bodies. */
  const char *path;
  size_t path_len;
  request_path(conn->request, &path, &path_len);
  if (!hark_api_key_accepted(conn, path, path_len)) {
    conn->request->error_status = ALREADY_ANSWERED;
    return -1;
  }

  if ((parser->flags & F_CONTENT_LENGTH) &&
      parser->content_length > conn->server->config.max_body_bytes)
    return reject(conn->request, 413, "request body is too large");

  /* A client that waits for "100 Continue" before sending its body (curl
   * does for larger bodies) gets it at once. */
  size_t len;
  const char *expect = hark_http_header_get(conn->request, "expect", &len);
  if (expect && len == 12 && strncasecmp(expect, "100-continue", 12) == 0) {
    static const char go_on[] = "HTTP/1.1 100 Continue\r\n\r\n";
    hark_conn_send_copy(conn, go_on, sizeof go_on - 1);
  }
  return 0;
}

static int on_body(llhttp_t *parser, const char *at, size_t len) {
  hark_conn *conn = conn_of(parser);
  hark_http_request *request = conn->request;
  if (request->body.len + len > conn->server->config.max_body_bytes)
    return reject(request, 413, "request body is too large");
  if (hark_buf_append(&request->body, at, len) != 0) return reject(request, 503, "out of memory");
  return 0;
}

/* Pauses the parser so that the request is handled before the next one in
 * the same read is parsed. Responses so go out in request order. */
static int on_message_complete(llhttp_t *parser) {
  conn_of(parser)->request->complete = 1;
  return HPE_PAUSED;
}

void hark_http_settings_init(llhttp_settings_t *settings) {
  llhttp_settings_init(settings);
  settings->on_message_begin = on_message_begin;
  settings->on_url = on_url;
  settings->on_header_field = on_header_field;
  settings->on_header_value = on_header_value;
  settings->on_headers_complete = on_headers_complete;
  settings->on_body = on_body;
  settings->on_message_complete = on_message_complete;
}

static void request_reset(hark_conn *conn) {
  hark_http_request *request = conn->request;
  conn->request_started_ms = 0;
  hark_buf_reset(&request->text);
  hark_buf_reset(&request->body);
  request->url_len = 0;
  request->header_count = 0;
  request->in_value = 0;
  request->complete = 0;
  request->error_status = 0;
  request->error_text = NULL;
}

int hark_http_start(hark_conn *conn) {
  conn->request = calloc(1, sizeof *conn->request);
  if (!conn->request) return -1;
  llhttp_init(&conn->request->parser, HTTP_REQUEST, &conn->server->http_settings);
  conn->request->parser.data = conn;
  return 0;
}

void hark_http_free(hark_conn *conn) {
  if (!conn->request) return;
  hark_buf_free(&conn->request->text);
  hark_buf_free(&conn->request->body);
  free(conn->request);
  conn->request = NULL;
}

const char *hark_http_header_get(const hark_http_request *request, const char *name, size_t *len) {
  size_t name_len = strlen(name);
  for (unsigned i = 0; i < request->header_count; i++) {
    const hark_http_header *header = &request->headers[i];
    if (header->name_len == name_len &&
        strncasecmp(request->text.data + header->name_off, name, name_len) == 0) {
      *len = header->value_len;
      return header->value_len ? request->text.data + header->value_off : "";
    }
  }
  return NULL;
}

static const char *status_text(int status) {
  switch (status) {
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Content Too Large";
    case 408: return "Request Timeout";
    case 426: return "Upgrade Required";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Unknown";
  }
}

/* Appends the status line and headers of a response with a body of
 * `body_len` bytes. */
static int append_head(hark_buf *out, hark_conn *conn, int status, const char *content_type,
                       size_t body_len, const char *extra_headers) {
  return hark_buf_printf(out,
                         "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                         "Cache-Control: no-store\r\nConnection: %s\r\n%s\r\n",
                         status, status_text(status), content_type, body_len,
                         conn->close_after_response ? "close" : "keep-alive",
                         extra_headers ? extra_headers : "");
}

/* A response to HEAD keeps Content-Length but carries no body. */
static int is_head(const hark_conn *conn) {
  return conn->request && conn->request->parser.method == HTTP_HEAD;
}

int hark_http_respond(hark_conn *conn, int status, const char *content_type, const char *body,
                      size_t body_len, const char *extra_headers) {
  hark_buf out = {0};
  int rc = append_head(&out, conn, status, content_type, body_len, extra_headers);
  if (rc == 0 && !is_head(conn)) rc = hark_buf_append(&out, body, body_len);
  if (rc == 0) rc = hark_conn_send_copy(conn, out.data, out.len);
  hark_buf_free(&out);
  return rc;
}

int hark_http_respond_shared(hark_conn *conn, int status, const char *content_type,
                             hark_shared_bytes *body) {
  hark_buf out = {0};
  int rc = append_head(&out, conn, status, content_type, body->len, NULL);
  if (rc == 0) rc = hark_conn_send_copy(conn, out.data, out.len);
  if (rc == 0 && !is_head(conn)) hark_conn_send(conn, hark_shared_bytes_ref(body));
  hark_buf_free(&out);
  return rc;
}

int hark_http_respond_error(hark_conn *conn, int status, const char *message,
                            const char *extra_headers) {
  hark_buf body = {0};
  int rc = hark_buf_append_str(&body, "{\"error\":");
  if (rc == 0) rc = hark_json_append_string(&body, message, strlen(message));
  if (rc == 0) rc = hark_buf_append_str(&body, "}");
  if (rc == 0)
    rc = hark_http_respond(conn, status, "application/json", body.data, body.len, extra_headers);
  hark_buf_free(&body);
  return rc;
}

static void log_rejected(hark_conn *conn, int status, const char *reason) {
  HARK_CLIENT_WARN(conn->server, "http_request_rejected", "conn=%llu peer=%s status=%d reason=\"%s\"",
            (unsigned long long)conn->id, hark_conn_peer(conn), status, reason);
}

/* Replies to a request the parser rejected, then closes, because the rest of
 * the stream cannot be trusted to start at a request boundary. */
static void fail_request(hark_conn *conn, llhttp_errno_t err) {
  hark_http_request *request = conn->request;
  if (request->error_status == ALREADY_ANSWERED) {
    conn->close_after_response = 1;
    hark_conn_finish(conn);
    return;
  }
  int status = request->error_status ? request->error_status : 400;
  const char *text = request->error_text;
  char detail[160];
  if (!text) {
    snprintf(detail, sizeof detail, "malformed HTTP request: %s", llhttp_errno_name(err));
    text = detail;
  }
  log_rejected(conn, status, text);
  conn->close_after_response = 1;
  hark_http_respond_error(conn, status, text, NULL);
  hark_conn_finish(conn);
}

/* Turns an absolute-form target ("http://host:port/path?q") into its path
 * and query, which servers must accept (RFC 9112 section 3.2.2). */
static void skip_absolute_form(const char **url, size_t *len) {
  static const char *const schemes[] = {"http://", "https://", "ws://", "wss://"};
  for (size_t i = 0; i < sizeof schemes / sizeof schemes[0]; i++) {
    size_t scheme_len = strlen(schemes[i]);
    if (*len < scheme_len || strncasecmp(*url, schemes[i], scheme_len) != 0) continue;
    const char *authority = *url + scheme_len;
    const char *path = memchr(authority, '/', *len - scheme_len);
    if (!path) {
      *url = "/";
      *len = 1;
    } else {
      *len -= (size_t)(path - *url);
      *url = path;
    }
    return;
  }
}

/* Routes one complete request. `rest` contains the bytes after it. */
static void handle_request(hark_conn *conn, char *rest, size_t rest_len) {
  hark_http_request *request = conn->request;
  const char *url = request->text.data;
  size_t url_len = request->url_len;
  skip_absolute_form(&url, &url_len);
  if (url_len == 0 || url[0] != '/') {
    conn->close_after_response = 1;
    log_rejected(conn, 400, "request target must be an absolute path");
    hark_http_respond_error(conn, 400, "request target must be an absolute path", NULL);
    return;
  }

  const char *query = memchr(url, '?', url_len);
  size_t path_len = query ? (size_t)(query - url) : url_len;
  size_t query_len = query ? url_len - path_len - 1 : 0;
  if (query) query++;

  static const char ws_path[] = "/socket/websocket";
  if (path_len == sizeof ws_path - 1 && memcmp(url, ws_path, path_len) == 0) {
    hark_ws_upgrade(conn, url, path_len, query, query_len, rest, rest_len);
    return;
  }

  /* llhttp stops at a request with an Upgrade header and does not resume
   * HTTP parsing after it, so such a request on another path ends the
   * connection after its response. */
  if (request->parser.upgrade) conn->close_after_response = 1;
  if (!hark_api_route(conn, request->parser.method, url, path_len))
    hark_http_respond_error(conn, 404, "not found", NULL);
}

/* Ends the request whose response was just queued. Returns 1 when the next
 * one may be parsed. */
static int end_request(hark_conn *conn) {
  if (conn->state != HARK_CONN_HTTP) return 0;
  if (conn->close_after_response || conn->overflowed) {
    hark_conn_finish(conn);
    return 0;
  }
  request_reset(conn);
  llhttp_resume(&conn->request->parser);
  return 1;
}

/* A request whose response comes from worker 0: reading stops, and the
 * bytes after the request wait in conn->input until hark_http_resume. */
static void wait_for_response(hark_conn *conn, const char *rest, size_t rest_len) {
  hark_conn_pause_reading(conn);
  hark_buf saved = {0};
  if (rest_len > 0 && hark_buf_append(&saved, rest, rest_len) != 0) {
    HARK_ERROR("out_of_memory", "conn=%llu what=input", (unsigned long long)conn->id);
    hark_conn_abort(conn);
    return;
  }
  hark_buf_free(&conn->input);
  conn->input = saved;
}

void hark_http_on_data(hark_conn *conn, char *data, size_t len) {
  while (conn->state == HARK_CONN_HTTP && len > 0) {
    hark_http_request *request = conn->request;
    llhttp_errno_t err = llhttp_execute(&request->parser, data, len);
    if (err == HPE_OK) break;
    if (err != HPE_PAUSED && err != HPE_PAUSED_UPGRADE) {
      fail_request(conn, err);
      break;
    }

    size_t used = (size_t)(llhttp_get_error_pos(&request->parser) - data);
    data += used;
    len -= used;
    conn->close_after_response = !llhttp_should_keep_alive(&request->parser);
    handle_request(conn, data, len);
    if (conn->awaiting_response) {
      wait_for_response(conn, data, len);
      return;
    }

    /* An upgrade consumed the rest of the input; a finished or closing
     * connection stops here. */
    if (!end_request(conn)) break;
  }

  /* llhttp copies what it needs through the callbacks, so an HTTP
   * connection never keeps raw input between reads. */
  if (conn->state == HARK_CONN_HTTP || conn->state == HARK_CONN_CLOSING) hark_buf_reset(&conn->input);
}

void hark_http_resume(hark_conn *conn) {
  conn->awaiting_response = 0;
  /* Reading restarts first, because a connection that end_request finishes
   * lingers reading until the peer's FIN arrives. */
  hark_conn_resume_reading(conn);
  if (!end_request(conn)) return;

  hark_buf saved = conn->input;
  conn->input = (hark_buf){0};
  if (saved.len > 0) hark_http_on_data(conn, saved.data, saved.len);
  hark_buf_free(&saved);
}
