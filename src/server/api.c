/* The HTTP API (/healthz, /api/broadcast) and the demo page's static files. */
#include <errno.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/json.h"
#include "base/log.h"
#include "hark/redis.h"
#include "server/config.h"
#include "server/conn.h"

static int path_is(const char *path, size_t len, const char *expected) {
  return strlen(expected) == len && memcmp(path, expected, len) == 0;
}

static void reply_bad_request(hark_conn *conn, const char *message) {
  HARK_CLIENT_WARN(conn->server, "api_request_rejected", "conn=%llu peer=%s status=400 reason=\"%s\"",
            (unsigned long long)conn->id, hark_conn_peer(conn), message);
  hark_http_respond_error(conn, 400, message, NULL);
}

/* Reads the string member `key` of the request body into `out`. Returns 0, or
 * -1 after replying 400. */
static int body_string(hark_conn *conn, const char *key, hark_buf *out) {
  const hark_buf *body = &conn->request->body;
  const char *value;
  size_t value_len;
  char message[96];

  int found = hark_json_object_get(body->data, body->len, key, &value, &value_len);
  if (found == 0) {
    snprintf(message, sizeof message, "missing field \"%s\"", key);
    reply_bad_request(conn, message);
    return -1;
  }
  if (value[0] != '"' || hark_json_decode_string(value, value_len, out) != 0) {
    snprintf(message, sizeof message, "field \"%s\" must be a string", key);
    reply_bad_request(conn, message);
    return -1;
  }
  if (out->len == 0) {
    snprintf(message, sizeof message, "field \"%s\" must not be empty", key);
    reply_bad_request(conn, message);
    return -1;
  }
  return 0;
}

/* POST /api/broadcast {"topic": string, "event": string, "payload": object}.
 * The payload's bytes are forwarded as they arrived. */
static void handle_broadcast(hark_conn *conn) {
  const hark_buf *body = &conn->request->body;
  const char *payload;
  size_t payload_len;
  if (!hark_json_valid(body->data, body->len)) {
    reply_bad_request(conn, "request body is not valid JSON (RFC 8259, UTF-8, nesting at most 64 deep)");
    return;
  }
  if (hark_json_object_get(body->data, body->len, "payload", &payload, &payload_len) < 0) {
    reply_bad_request(conn, "request body must be a JSON object");
    return;
  }

  hark_buf topic = {0}, event = {0};
  if (body_string(conn, "topic", &topic) != 0 || body_string(conn, "event", &event) != 0)
    goto done;
  const hark_server_config *config = &conn->server->config;
  if (topic.len > config->max_topic_bytes || event.len > config->max_event_bytes) {
    char message[96];
    snprintf(message, sizeof message, "field \"%s\" is longer than %zu bytes",
             topic.len > config->max_topic_bytes ? "topic" : "event",
             topic.len > config->max_topic_bytes ? config->max_topic_bytes : config->max_event_bytes);
    reply_bad_request(conn, message);
    goto done;
  }
  if (event.len >= 4 && memcmp(event.data, "phx_", 4) == 0) {
    reply_bad_request(conn, "field \"event\" must not start with phx_: those events are reserved");
    goto done;
  }
  int found = hark_json_object_get(body->data, body->len, "payload", &payload, &payload_len);
  if (found == 0) {
    reply_bad_request(conn, "missing field \"payload\"");
    goto done;
  }
  if (payload[0] != '{') {
    reply_bad_request(conn, "field \"payload\" must be a JSON object");
    goto done;
  }

  hark_message msg = {.event = event.data, .event_len = event.len,
                      .payload = payload, .payload_len = payload_len};
  int rc = hark_pubsub_broadcast(conn->server->pubsub, topic.data, topic.len, &msg,
                                 &conn->server->fastlane);
  if (rc != 0) {
    HARK_ERROR("broadcast_failed", "conn=%llu error=\"%s\"", (unsigned long long)conn->id,
               hark_strerror(rc));
    hark_http_respond_error(conn, 503, hark_strerror(rc), NULL);
    goto done;
  }
  static const char ok[] = "{\"status\":\"ok\"}";
  hark_http_respond(conn, 200, "application/json", ok, sizeof ok - 1, NULL);

done:
  hark_buf_free(&topic);
  hark_buf_free(&event);
}

/* ---- Responses built on the home worker ----
 *
 * The tracker and the Redis link live on the home worker. Another worker
 * posts such a request to the home as a call, and the home builds the body
 * and posts the call back for the response. The call has two references:
 * one for the waiting connection and one for the round trip. The home reads
 * only the call's copy of the config, because the worker's server may be
 * freed before the home runs the call. */
typedef enum api_call_kind { CALL_PRESENCE, CALL_CLUSTER } api_call_kind;

struct hark_api_call {
  atomic_uint refs;
  api_call_kind kind;
  hark_conn *conn;               /* NULL once the connection forgot it; worker thread only */
  hark_server_config config;     /* a copy; the objects it points to live as long as the process */
  hark_pubsub_group *group;
  unsigned worker;
  hark_buf topic;
  hark_buf body;                 /* computed on the home */
  int ok;
};

static int build_cluster(const hark_server_config *config, hark_buf *out);

static int build_presence(const hark_server_config *config, const hark_buf *topic, hark_buf *out) {
  size_t len;
  char *list = hark_presence_list(config->presence, topic->data, topic->len, &len);
  int rc = list ? hark_buf_append(out, list, len) : -1;
  free(list);
  return rc;
}

/* Builds the body of a presence or cluster request. Runs on the home
 * worker. Returns 0 or -1 (out of memory). */
static int build_body(api_call_kind kind, const hark_server_config *config, const hark_buf *topic,
                      hark_buf *body) {
  if (kind == CALL_PRESENCE) return build_presence(config, topic, body);
  return build_cluster(config, body);
}

static void respond_computed(hark_conn *conn, int ok, const hark_buf *body) {
  if (ok) hark_http_respond(conn, 200, "application/json", body->data, body->len, NULL);
  else hark_http_respond_error(conn, 503, "out of memory", NULL);
}

static void api_call_unref(struct hark_api_call *call) {
  if (atomic_fetch_sub_explicit(&call->refs, 1, memory_order_acq_rel) != 1) return;
  hark_buf_free(&call->topic);
  hark_buf_free(&call->body);
  free(call);
}

/* Ends the round trip on the worker: sends the response if the connection
 * still waits for it. */
static void run_response(void *arg, int discard) {
  struct hark_api_call *call = arg;
  hark_conn *conn = call->conn;
  if (!discard && conn) {
    conn->pending_call = NULL;
    call->conn = NULL;
    respond_computed(conn, call->ok, &call->body);
    hark_http_resume(conn);
    api_call_unref(call);
  }
  api_call_unref(call);
}

static void run_on_home(void *arg, int discard) {
  struct hark_api_call *call = arg;
  if (discard) {
    api_call_unref(call);
    return;
  }
  call->ok = build_body(call->kind, &call->config, &call->topic, &call->body) == 0;
  if (hark_pubsub_group_post(call->group, call->worker, run_response, call) != 0) {
    HARK_ERROR("api_response_failed", "worker=%u error=\"the worker's mailbox rejected the call\"", call->worker);
    api_call_unref(call);
  }
}

void hark_api_cancel_pending(hark_conn *conn) {
  struct hark_api_call *call = conn->pending_call;
  conn->pending_call = NULL;
  conn->awaiting_response = 0;
  if (!call) return;
  call->conn = NULL;
  api_call_unref(call);
}

/* Builds the response on this worker when it is the home, or posts a call
 * to the home. Takes over `topic`. */
static void respond_from_home(hark_conn *conn, api_call_kind kind, hark_buf *topic) {
  const hark_server_config *config = &conn->server->config;
  if (conn->server->is_home) {
    hark_buf body = {0};
    respond_computed(conn, build_body(kind, config, topic, &body) == 0, &body);
    hark_buf_free(&body);
    hark_buf_free(topic);
    return;
  }

  struct hark_api_call *call = calloc(1, sizeof *call);
  if (!call) {
    HARK_ERROR("out_of_memory", "conn=%llu what=api_call", (unsigned long long)conn->id);
    hark_buf_free(topic);
    hark_http_respond_error(conn, 503, "out of memory", NULL);
    return;
  }
  *call = (struct hark_api_call){.kind = kind, .conn = conn, .config = *config,
                                 .group = hark_pubsub_group_of(conn->server->pubsub),
                                 .worker = conn->server->worker, .topic = *topic};
  atomic_init(&call->refs, 2);
  *topic = (hark_buf){0};
  if (hark_pubsub_group_post(call->group, 0, run_on_home, call) != 0) {
    HARK_ERROR("api_call_failed", "conn=%llu worker=%u error=\"worker 0 is not running\"",
               (unsigned long long)conn->id, call->worker);
    api_call_unref(call);
    api_call_unref(call);
    hark_http_respond_error(conn, 503, "the home worker is not running", NULL);
    return;
  }
  conn->pending_call = call;
  conn->awaiting_response = 1;
}

/* GET /api/presence/TOPIC: the topic's presences, {} for an unknown topic.
 * The topic is percent-decoded, so "room%3A1" and "room:1" are the same. */
static void handle_presence(hark_conn *conn, const char *encoded, size_t encoded_len) {
  if (!conn->server->config.presence) {
    hark_http_respond_error(conn, 404, "presence is not enabled", NULL);
    return;
  }

  hark_buf topic = {0};
  if (encoded_len == 0 || hark_percent_decode(&topic, encoded, encoded_len, 0) != 0) {
    reply_bad_request(conn, "missing topic: use /api/presence/TOPIC");
    hark_buf_free(&topic);
    return;
  }
  respond_from_home(conn, CALL_PRESENCE, &topic);
}

static void append_replica(void *ctx, unsigned shard, const char *name, uint64_t vsn,
                           hark_replica_status status, uint64_t last_heard_ms) {
  hark_buf *out = ctx;
  static const char *const names[] = {"up", "down", "permdown"};
  if (out->data[out->len - 1] != '[') hark_buf_append_byte(out, ',');
  hark_buf_printf(out, "{\"shard\":%u,\"name\":", shard);
  hark_json_append_string(out, name, strlen(name));
  hark_buf_printf(out, ",\"vsn\":%llu,\"status\":\"%s\",\"last_heard_ms\":%llu}",
                  (unsigned long long)vsn, names[status], (unsigned long long)last_heard_ms);
}

static void append_cluster_counters(hark_buf *out, const hark_server_config *config) {
  if (config->cluster_adapter_ctx) {
    hark_redis_stats redis;
    hark_redis_adapter_stats(config->cluster_adapter_ctx, &redis);
    hark_buf_printf(out,
                    ",\"redis\":{\"connected\":%s,\"published\":%llu,\"received\":%llu,"
                    "\"dropped\":%llu,\"invalid\":%llu,\"unknown_dispatcher\":%llu,"
                    "\"reconnects\":%llu}",
                    redis.connected ? "true" : "false", (unsigned long long)redis.published,
                    (unsigned long long)redis.received, (unsigned long long)redis.dropped,
                    (unsigned long long)redis.invalid, (unsigned long long)redis.unknown_dispatcher,
                    (unsigned long long)redis.reconnects);
  }
  if (config->presence) {
    hark_tracker_stats t;
    hark_tracker_get_stats(hark_presence_tracker(config->presence), &t);
    hark_buf_printf(out,
                    ",\"tracker\":{\"heartbeats_sent\":%llu,\"heartbeats_received\":%llu,"
                    "\"transfers_requested\":%llu,\"transfers_sent_delta\":%llu,"
                    "\"transfers_sent_full\":%llu,\"bytes_sent\":%llu,\"bytes_received\":%llu,"
                    "\"invalid_messages\":%llu,\"replicas_down\":%llu,\"replicas_permdown\":%llu}",
                    (unsigned long long)t.heartbeats_sent, (unsigned long long)t.heartbeats_received,
                    (unsigned long long)t.transfers_requested,
                    (unsigned long long)t.transfers_sent_delta,
                    (unsigned long long)t.transfers_sent_full, (unsigned long long)t.bytes_sent,
                    (unsigned long long)t.bytes_received, (unsigned long long)t.invalid_messages,
                    (unsigned long long)t.replicas_down, (unsigned long long)t.replicas_permdown);
  }
}

/* The body of GET /api/cluster: this node, its Redis link, and the
 * replicas it has seen, with their status and when each was last heard
 * from. Runs on the home worker. Returns 0 or -1 (out of memory). */
static int build_cluster(const hark_server_config *config, hark_buf *out) {
  const char *node = config->node_name ? config->node_name : "";
  hark_buf_append_str(out, "{\"node\":");
  hark_json_append_string(out, node, strlen(node));
  hark_buf_printf(out, ",\"cluster\":%s", config->cluster_adapter_ctx ? "\"redis\"" : "null");
  append_cluster_counters(out, config);

  hark_buf_append_str(out, ",\"replicas\":[");
  if (config->presence)
    hark_tracker_replicas(hark_presence_tracker(config->presence), append_replica, out);
  return hark_buf_append_str(out, "]}");
}

static void handle_cluster(hark_conn *conn) {
  hark_buf none = {0};
  respond_from_home(conn, CALL_CLUSTER, &none);
}

static const char *content_type_for(const char *name) {
  const char *dot = strrchr(name, '.');
  if (!dot) return "application/octet-stream";
  if (strcmp(dot, ".html") == 0) return "text/html; charset=utf-8";
  if (strcmp(dot, ".js") == 0 || strcmp(dot, ".mjs") == 0) return "text/javascript; charset=utf-8";
  if (strcmp(dot, ".css") == 0) return "text/css; charset=utf-8";
  if (strcmp(dot, ".svg") == 0) return "image/svg+xml";
  if (strcmp(dot, ".png") == 0) return "image/png";
  if (strcmp(dot, ".ico") == 0) return "image/x-icon";
  return "application/octet-stream";
}

/* Replies with the contents of `file`, from the static file cache. */
static void send_file(hark_conn *conn, const char *file) {
  hark_shared_bytes *body = hark_static_file_get(conn->server, file);
  if (!body) {
    HARK_CLIENT_WARN(conn->server, "static_file_missing", "conn=%llu path=\"%s\" error=\"%s\"",
                     (unsigned long long)conn->id, file, strerror(errno));
    hark_http_respond_error(conn, 404, "not found", NULL);
    return;
  }
  hark_http_respond_shared(conn, 200, content_type_for(file), body);
  hark_shared_bytes_unref(body);
}

/* A name in the web root: letters, digits, '-', '_' and one inner '.', so no
 * request can leave the folder. */
static int static_name_valid(const char *name, size_t len) {
  if (len == 0 || len > 64 || name[0] == '.') return 0;
  int dots = 0;
  for (size_t i = 0; i < len; i++) {
    char c = name[i];
    if (c == '.') dots++;
    else if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '-' || c == '_'))
      return 0;
  }
  return dots == 1 && name[len - 1] != '.';
}

static int method_allowed(hark_conn *conn, int method, int allowed, const char *allow_header) {
  if (method == allowed || (allowed == HTTP_GET && method == HTTP_HEAD)) return 1;
  HARK_CLIENT_WARN(conn->server, "api_request_rejected", "conn=%llu peer=%s status=405 method=%s",
            (unsigned long long)conn->id, hark_conn_peer(conn), llhttp_method_name((llhttp_method_t)method));
  hark_http_respond_error(conn, 405, "method not allowed", allow_header);
  return 0;
}

static void serve_static(hark_conn *conn, const char *path, size_t len) {
  const hark_server_config *config = &conn->server->config;
  char file[1024];
  if (path_is(path, len, "/")) {
    snprintf(file, sizeof file, "%s/index.html", config->web_root);
  } else if (path_is(path, len, "/assets/phoenix.mjs")) {
    snprintf(file, sizeof file, "%s", config->phoenix_js);
  } else {
    snprintf(file, sizeof file, "%s/%.*s", config->web_root, (int)len - 1, path + 1);
  }
  send_file(conn, file);
}

/* Paths under /api/ need "Authorization: Bearer KEY" when an API key is
 * configured. Returns 1 when the request may go on; otherwise replies 401
 * and returns 0. Neither the key nor the header is logged. */
int hark_api_key_accepted(hark_conn *conn, const char *path, size_t len) {
  const hark_security_config *security = conn->server->config.security;
  if (len < 5 || memcmp(path, "/api/", 5) != 0 || !security || !security->api_key) return 1;

  size_t header_len;
  const char *header = hark_http_header_get(conn->request, "authorization", &header_len);
  const char *reason = "missing API key";
  if (header && header_len > 7 && strncasecmp(header, "Bearer ", 7) == 0) {
    if (hark_api_key_matches(security, header + 7, header_len - 7)) return 1;
    reason = "wrong API key";
  }
  HARK_CLIENT_WARN(conn->server, "api_request_rejected", "conn=%llu peer=%s status=401 reason=\"%s\"",
                   (unsigned long long)conn->id, hark_conn_peer(conn), reason);
  hark_http_respond_error(conn, 401, "missing or wrong API key: send Authorization: Bearer KEY",
                          "WWW-Authenticate: Bearer\r\n");
  return 0;
}

int hark_api_route(hark_conn *conn, int method, const char *path, size_t len) {
  if (!hark_api_key_accepted(conn, path, len)) return 1;
  if (path_is(path, len, "/healthz")) {
    if (method_allowed(conn, method, HTTP_GET, "Allow: GET, HEAD\r\n")) {
      static const char ok[] = "{\"status\":\"ok\"}";
      hark_http_respond(conn, 200, "application/json", ok, sizeof ok - 1, NULL);
    }
    return 1;
  }

  if (path_is(path, len, "/api/broadcast")) {
    if (method_allowed(conn, method, HTTP_POST, "Allow: POST\r\n")) handle_broadcast(conn);
    return 1;
  }

  if (path_is(path, len, "/api/cluster")) {
    if (method_allowed(conn, method, HTTP_GET, "Allow: GET, HEAD\r\n")) handle_cluster(conn);
    return 1;
  }

  static const char presence_prefix[] = "/api/presence/";
  size_t prefix_len = sizeof presence_prefix - 1;
  if (len >= prefix_len && memcmp(path, presence_prefix, prefix_len) == 0) {
    if (method_allowed(conn, method, HTTP_GET, "Allow: GET, HEAD\r\n"))
      handle_presence(conn, path + prefix_len, len - prefix_len);
    return 1;
  }

  int is_static = path_is(path, len, "/") || path_is(path, len, "/assets/phoenix.mjs") ||
                  (len > 1 && static_name_valid(path + 1, len - 1));
  if (!is_static || !conn->server->config.web_root) return 0;
  if (method_allowed(conn, method, HTTP_GET, "Allow: GET, HEAD\r\n")) serve_static(conn, path, len);
  return 1;
}
