/* Phoenix Channels over a WebSocket: routing of each client message, joins
 * and leaves, and the fastlane dispatcher that encodes a broadcast once per
 * serializer and writes the same bytes to every subscribed socket. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/json.h"
#include "base/log.h"
#include "server/config.h"
#include "server/conn.h"

static const hark_span null_token = {"null", 4};
static const hark_span empty_object = {"{}", 2};

static hark_span span_of(const char *s) { return (hark_span){s, strlen(s)}; }

static int span_eq(hark_span a, const char *s) {
  return a.len == strlen(s) && memcmp(a.ptr, s, a.len) == 0;
}

static int is_null(hark_span token) { return span_eq(token, "null"); }

/* Wraps a JSON text in a WebSocket frame and queues it on `conn`. */
static void send_frame(hark_conn *conn, int opcode, const hark_buf *body) {
  uint8_t header[10];
  size_t header_len = hark_ws_encode_header(header, opcode, body->len);
  hark_shared_bytes *frame = hark_shared_bytes_new(header_len + body->len);
  if (!frame) {
    HARK_ERROR("out_of_memory", "conn=%llu what=frame", (unsigned long long)conn->id);
    return;
  }
  memcpy(frame->data, header, header_len);
  memcpy(frame->data + header_len, body->data, body->len);
  hark_conn_send(conn, frame);
}

static void send_reply(hark_conn *conn, hark_span join_ref, hark_span ref, hark_span topic,
                       const char *status, hark_span response) {
  hark_buf body = {0};
  if (hark_channel_encode_reply(&body, conn->serializer, join_ref, ref, topic, status, response) == 0)
    send_frame(conn, HARK_WS_OP_TEXT, &body);
  hark_buf_free(&body);
}

/* Sends an error reply whose response is {"reason": reason}. */
static void send_error(hark_conn *conn, hark_span join_ref, hark_span ref, hark_span topic,
                       const char *reason) {
  hark_buf response = {0};
  if (hark_buf_append_str(&response, "{\"reason\":") == 0 &&
      hark_json_append_string(&response, reason, strlen(reason)) == 0 &&
      hark_buf_append_byte(&response, '}') == 0)
    send_reply(conn, join_ref, ref, topic, "error",
               (hark_span){response.data, response.len});
  hark_buf_free(&response);
}

static void send_message(hark_conn *conn, hark_span join_ref, hark_span ref, hark_span topic,
                         const char *event, hark_span payload) {
  hark_buf body = {0};
  if (hark_channel_encode(&body, conn->serializer, join_ref, ref, topic, span_of(event), payload) == 0)
    send_frame(conn, HARK_WS_OP_TEXT, &body);
  hark_buf_free(&body);
}

static hark_channel *find_channel(hark_conn *conn, hark_span topic) {
  for (hark_channel *ch = conn->channels; ch; ch = ch->next)
    if (ch->topic_len == topic.len && memcmp(ch->topic, topic.ptr, topic.len) == 0) return ch;
  return NULL;
}

static hark_span channel_join_ref(const hark_channel *ch) {
  return (hark_span){ch->topic + ch->topic_len + 1, ch->join_ref_len};
}

void hark_channel_push(hark_channel *ch, const char *event, const char *payload, size_t len) {
  hark_span join_ref = channel_join_ref(ch);
  send_message(ch->conn, join_ref, null_token, (hark_span){ch->topic, ch->topic_len}, event,
               (hark_span){payload, len});
}

/* Unsubscribes and frees a channel. */
static void channel_remove(hark_conn *conn, hark_channel *ch) {
  /* Unsubscribe first, so the channel does not get its own leave diff. */
  hark_pubsub_unsubscribe_all(conn->server->pubsub, &ch->sub);
  hark_channel_presence_leave(ch);
  if (ch->prev) ch->prev->next = ch->next;
  else conn->channels = ch->next;
  if (ch->next) ch->next->prev = ch->prev;
  conn->channel_count--;
  free(ch);
}

/* One allocation contains the channel, its topic and its join_ref. */
static hark_channel *channel_add(hark_conn *conn, hark_span topic, hark_span join_ref) {
  hark_channel *ch = calloc(1, sizeof *ch + topic.len + 1 + join_ref.len);
  if (!ch) return NULL;
  memcpy(ch->topic, topic.ptr, topic.len);
  ch->topic_len = topic.len;
  memcpy(ch->topic + topic.len + 1, join_ref.ptr, join_ref.len);
  ch->join_ref_len = join_ref.len;
  ch->conn = conn;
  ch->sub.data = ch;

  if (hark_pubsub_subscribe(conn->server->pubsub, &ch->sub, ch->topic, ch->topic_len, ch) != 0) {
    free(ch);
    return NULL;
  }
  ch->next = conn->channels;
  if (conn->channels) conn->channels->prev = ch;
  conn->channels = ch;
  conn->channel_count++;
  return ch;
}

static hark_socket_info socket_info(const hark_conn *conn) {
  return (hark_socket_info){.id = conn->id, .peer = hark_conn_peer(conn), .params = conn->params,
                            .params_len = conn->params_len};
}

static void log_topic_event(const char *what, hark_conn *conn, hark_span topic, const char *detail) {
  char quoted[160];
  hark_log_quote(quoted, sizeof quoted, topic.ptr, topic.len);
  HARK_CLIENT_INFO(conn->server, what, "conn=%llu peer=%s topic=%s reason=\"%s\"", (unsigned long long)conn->id,
            hark_conn_peer(conn), quoted, detail);
}

/* Verifies the "channel_token" string of a join payload, which grants this
 * one topic, and reports whether its publish claim covers the topic too.
 * Returns 1 when there is no such token (nothing to verify), 0 when it is
 * valid, -1 with *reason set when it is not. */
static int check_channel_token(hark_conn *conn, const hark_channel_msg *msg, int *valid,
                               int *publish_granted, const char **reason) {
  const hark_security_config *security = conn->server->config.security;
  const char *value;
  size_t value_len;
  if (msg->binary || !security->verifier ||
      hark_json_object_get(msg->payload.ptr, msg->payload.len, "channel_token", &value, &value_len) != 1)
    return 1;

  hark_buf token = {0};
  if (value[0] != '"' || hark_json_decode_string(value, value_len, &token) != 0) {
    hark_buf_free(&token);
    *reason = "channel_token is not a string";
    return -1;
  }
  json_t *claims = NULL;
  const char *sub = conn->claims ? hark_jwt_claims_sub(conn->claims) : NULL;
  int rc = hark_jwt_verify_channel(security->verifier, token.data ? token.data : "", token.len,
                                   (int64_t)time(NULL), msg->topic.ptr, msg->topic.len, sub, &claims,
                                   reason);
  hark_buf_free(&token);
  if (rc != 0) return -1;

  *valid = 1;
  *publish_granted = hark_jwt_globs_match(hark_jwt_claims_publish(claims), msg->topic.ptr, msg->topic.len);
  json_decref(claims);
  return 0;
}

/* Applies the topic policy of the server's security config to a join.
 * Returns 0 with the topic's rule, or -1 with the reason to log. The client
 * gets only "unauthorized". */
static int authorize_join(hark_conn *conn, const hark_channel_msg *msg, const hark_topic_rule **rule,
                          int *publish_granted, const char **reason) {
  const hark_security_config *security = conn->server->config.security;
  *rule = hark_topic_policy_find(&security->topics, msg->topic.ptr, msg->topic.len);
  if (!*rule) {
    *reason = "no topic policy matches the topic";
    return -1;
  }

  /* A channel token that is present must be valid, even where the
   * connection token alone would do, so a forged one is always noticed. */
  int channel_token_valid = 0;
  if (check_channel_token(conn, msg, &channel_token_valid, publish_granted, reason) < 0) return -1;

  if (!hark_policy_may_join(*rule, conn->claims, msg->topic.ptr, msg->topic.len, channel_token_valid)) {
    *reason = conn->claims ? "the token does not grant this topic" : "the topic needs a token";
    return -1;
  }
  return 0;
}

/* Replies to a join with an error, logging `why`, then closes the channel
 * the join replaced, if any. */
static void reject_join(hark_conn *conn, const hark_channel_msg *msg, hark_span join_ref,
                        const char *why, const char *reason, hark_span old_join_ref) {
  log_topic_event("join_rejected", conn, msg->topic, why);
  send_error(conn, join_ref, msg->ref, msg->topic, reason);
  if (old_join_ref.ptr)
    send_message(conn, old_join_ref, old_join_ref, msg->topic, "phx_close", empty_object);
}

/* Checks a join and makes its channel. `old_join_ref` names the channel the
 * join replaced (ptr NULL for none), which gets phx_close right after the
 * reply. */
static void join_channel(hark_conn *conn, const hark_channel_msg *msg, hark_span join_ref,
                         hark_span old_join_ref) {
  if (conn->channel_count >= conn->server->config.max_channels) {
    reject_join(conn, msg, join_ref, "too many channels joined", "too many channels joined",
                old_join_ref);
    return;
  }

  const hark_channel_policy *policy = &conn->server->config.policy;
  const char *reason = "unauthorized";
  hark_socket_info info = socket_info(conn);
  if (policy->authorize_join &&
      policy->authorize_join(policy->ctx, &info, msg->topic.ptr, msg->topic.len, msg->payload.ptr,
                             msg->payload.len, &reason) != 0) {
    reject_join(conn, msg, join_ref, reason, reason, old_join_ref);
    return;
  }

  const hark_topic_rule *rule = NULL;
  int publish_granted = 0;
  if (conn->server->config.security &&
      authorize_join(conn, msg, &rule, &publish_granted, &reason) != 0) {
    reject_join(conn, msg, join_ref, reason, "unauthorized", old_join_ref);
    return;
  }

  hark_presence_join presence_join = {0};
  int with_presence = hark_channel_presence_enabled(conn->server, rule, msg->topic.ptr, msg->topic.len);
  if (with_presence &&
      hark_channel_presence_prepare(conn, rule, msg->payload.ptr, msg->payload.len, &presence_join,
                                    &reason) != 0) {
    reject_join(conn, msg, join_ref, reason, reason, old_join_ref);
    return;
  }

  hark_channel *ch = channel_add(conn, msg->topic, join_ref);
  if (!ch) {
    HARK_ERROR("out_of_memory", "conn=%llu what=channel", (unsigned long long)conn->id);
    reject_join(conn, msg, join_ref, "out of memory", "join failed", old_join_ref);
    if (with_presence) hark_channel_presence_discard(&presence_join);
    return;
  }
  ch->rule = rule;
  ch->publish_granted = publish_granted;
  send_reply(conn, join_ref, msg->ref, msg->topic, "ok", empty_object);
  if (old_join_ref.ptr)
    send_message(conn, old_join_ref, old_join_ref, msg->topic, "phx_close", empty_object);
  if (with_presence) hark_channel_presence_start(ch, &presence_join);
}

/* phx_join. A join on a topic that already has a channel ends that channel
 * first, whether or not the new join succeeds, as Phoenix does. The reply to
 * the new join goes out first, then the old channel gets phx_close with its
 * own join_ref, so the client can tell the two apart. */
static void handle_join(hark_conn *conn, const hark_channel_msg *msg) {
  /* V1 clients may send no join_ref; the join's ref then identifies it. */
  hark_span join_ref = is_null(msg->join_ref) ? msg->ref : msg->join_ref;

  hark_channel *existing = find_channel(conn, msg->topic);
  char *old_copy = NULL;
  hark_span old_join_ref = {NULL, 0};
  if (existing) {
    old_copy = malloc(existing->join_ref_len);
    if (old_copy) {
      memcpy(old_copy, channel_join_ref(existing).ptr, existing->join_ref_len);
      old_join_ref = (hark_span){old_copy, existing->join_ref_len};
    }
    channel_remove(conn, existing);
  }

  join_channel(conn, msg, join_ref, old_join_ref);
  free(old_copy);
}

/* phx_leave on a joined topic: ok, then phx_close, both with the channel's
 * join_ref. */
static void handle_leave(hark_conn *conn, hark_channel *ch, const hark_channel_msg *msg) {
  hark_span join_ref = channel_join_ref(ch);
  send_reply(conn, join_ref, msg->ref, msg->topic, "ok", empty_object);
  send_message(conn, join_ref, join_ref, msg->topic, "phx_close", empty_object);
  channel_remove(conn, ch);
}

/* Any other event on a joined topic is published to the topic's other
 * subscribers, and the sender gets an ok reply. */
static void handle_publish(hark_conn *conn, hark_channel *ch, const hark_channel_msg *msg) {
  hark_span join_ref = channel_join_ref(ch);
  if (msg->event.len >= 4 && memcmp(msg->event.ptr, "phx_", 4) == 0) {
    send_error(conn, join_ref, msg->ref, msg->topic, "reserved event");
    return;
  }
  if (span_eq(msg->event, "presence_update")) {
    const char *error = msg->binary ? "payload must be a JSON object"
                                    : hark_channel_presence_update(ch, msg->payload.ptr, msg->payload.len);
    if (error) send_error(conn, join_ref, msg->ref, msg->topic, error);
    else send_reply(conn, join_ref, msg->ref, msg->topic, "ok", empty_object);
    return;
  }
  if (!msg->binary && (msg->payload.len == 0 || msg->payload.ptr[0] != '{')) {
    send_error(conn, join_ref, msg->ref, msg->topic, "payload must be a JSON object");
    return;
  }

  if (conn->server->config.security &&
      !hark_policy_may_publish(ch->rule, conn->claims, ch->topic, ch->topic_len, ch->publish_granted)) {
    log_topic_event("publish_rejected", conn, msg->topic,
                    conn->claims ? "the token does not grant publishing here" : "publishing here needs a token");
    send_error(conn, join_ref, msg->ref, msg->topic, "unauthorized");
    return;
  }

  const hark_channel_policy *policy = &conn->server->config.policy;
  const char *reason = "unauthorized";
  hark_socket_info info = socket_info(conn);
  if (policy->authorize_publish &&
      policy->authorize_publish(policy->ctx, &info, msg->topic.ptr, msg->topic.len,
                                msg->event.ptr, msg->event.len, &reason) != 0) {
    log_topic_event("publish_rejected", conn, msg->topic, reason);
    send_error(conn, join_ref, msg->ref, msg->topic, reason);
    return;
  }

  hark_message out = {.event = msg->event.ptr, .event_len = msg->event.len,
                      .payload = msg->payload.ptr, .payload_len = msg->payload.len,
                      .binary = msg->binary};
  int rc = hark_pubsub_broadcast_from(conn->server->pubsub, &ch->sub, ch->topic, ch->topic_len,
                                      &out, &conn->server->fastlane);
  if (rc != 0) {
    send_error(conn, join_ref, msg->ref, msg->topic, "broadcast failed");
    return;
  }
  send_reply(conn, join_ref, msg->ref, msg->topic, "ok", empty_object);
}

/* Rejects a topic or event longer than the server's limits with an error
 * reply. Returns 0 when both fit. */
static int check_lengths(hark_conn *conn, const hark_channel_msg *msg, int is_join) {
  const hark_server_config *config = &conn->server->config;
  size_t max_topic = config->max_topic_bytes;
  size_t max_event = config->max_event_bytes;
  char reason[64];
  if (msg->topic.len > max_topic)
    snprintf(reason, sizeof reason, "topic is longer than %zu bytes", max_topic);
  else if (msg->event.len > max_event)
    snprintf(reason, sizeof reason, "event is longer than %zu bytes", max_event);
  else
    return 0;

  HARK_CLIENT_INFO(conn->server, "message_rejected", "conn=%llu peer=%s topic_bytes=%zu event_bytes=%zu reason=\"%s\"",
                   (unsigned long long)conn->id, hark_conn_peer(conn), msg->topic.len, msg->event.len, reason);
  /* A join's reply carries the join's ref as its join_ref, as in handle_join. */
  hark_span join_ref = is_join && is_null(msg->join_ref) ? msg->ref : msg->join_ref;
  send_error(conn, join_ref, msg->ref, msg->topic, reason);
  return -1;
}

/* Routes one decoded message, following the order in which the Phoenix
 * socket layer checks the cases. */
static void route(hark_conn *conn, const hark_channel_msg *msg) {
  int is_join = span_eq(msg->event, "phx_join");
  int is_leave = span_eq(msg->event, "phx_leave");
  if (check_lengths(conn, msg, is_join) != 0) return;

  if (span_eq(msg->topic, "phoenix") && span_eq(msg->event, "heartbeat")) {
    send_reply(conn, null_token, msg->ref, msg->topic, "ok", empty_object);
    return;
  }
  if (is_join) {
    handle_join(conn, msg);
    return;
  }

  hark_channel *ch = find_channel(conn, msg->topic);
  if (!ch) {
    if (is_leave) send_reply(conn, msg->join_ref, msg->ref, msg->topic, "ok", empty_object);
    else send_error(conn, null_token, msg->ref, msg->topic, "unmatched topic");
    return;
  }

  /* A message for an earlier join of this topic is stale: drop it. */
  if (!is_null(msg->join_ref) &&
      (msg->join_ref.len != ch->join_ref_len || memcmp(msg->join_ref.ptr, channel_join_ref(ch).ptr, ch->join_ref_len) != 0)) {
    HARK_DEBUG("stale_message_dropped", "conn=%llu", (unsigned long long)conn->id);
    return;
  }
  if (is_leave) handle_leave(conn, ch, msg);
  else handle_publish(conn, ch, msg);
}

void hark_channels_on_message(hark_conn *conn, int binary, char *data, size_t len) {
  hark_channel_msg msg;
  /* The decoder is the worker's: a message is decoded and handled before
   * the next one, and nothing keeps pointers into its scratch space. */
  hark_channel_decoder *decoder = &conn->server->decoder;
  if (hark_channel_decode(decoder, conn->serializer, binary, data, len, &msg) != 0) {
    const char *error = decoder->error ? decoder->error : "invalid message";
    HARK_CLIENT_WARN(conn->server, "invalid_channel_message", "conn=%llu peer=%s binary=%d reason=\"%s\"",
              (unsigned long long)conn->id, hark_conn_peer(conn), binary, error);
    uint16_t code = binary && conn->serializer == HARK_SERIALIZER_V1 ? HARK_WS_CLOSE_UNSUPPORTED_DATA
                                                                     : HARK_WS_CLOSE_INVALID_PAYLOAD;
    hark_ws_close(conn, code, error);
    return;
  }
  route(conn, &msg);
}

/* Runs on every close path (hark_conn_finish and hark_conn_abort), after
 * which no message of the socket is handled, so its claims go too. */
void hark_channels_leave_all(hark_conn *conn) {
  while (conn->channels) channel_remove(conn, conn->channels);
  json_decref(conn->claims);
  conn->claims = NULL;
}

/* Encodes one broadcast for one kind of socket. kind 0: V1 text, 1: V2 text,
 * 2: V2 binary. Returns a frame with one reference, or NULL. */
static hark_shared_bytes *encode_broadcast(int kind, const char *topic, size_t topic_len,
                                           const hark_message *msg) {
  hark_buf body = {0};
  hark_span t = {topic, topic_len}, e = {msg->event, msg->event_len},
            p = {msg->payload, msg->payload_len};
  int rc = kind == 2 ? hark_channel_encode_binary_broadcast(&body, t, e, p)
                     : hark_channel_encode(&body, kind == 0 ? HARK_SERIALIZER_V1 : HARK_SERIALIZER_V2,
                                           null_token, null_token, t, e, p);
  hark_shared_bytes *frame = NULL;
  if (rc == 0) {
    uint8_t header[10];
    size_t header_len = hark_ws_encode_header(header, kind == 2 ? HARK_WS_OP_BINARY : HARK_WS_OP_TEXT,
                                              body.len);
    frame = hark_shared_bytes_new(header_len + body.len);
    if (frame) {
      memcpy(frame->data, header, header_len);
      memcpy(frame->data + header_len, body.data, body.len);
    }
  }
  hark_buf_free(&body);
  return frame;
}

/* Returns the frame of `kind` for a broadcast, with one reference for the
 * caller. When the message reaches several worker threads, the first one
 * to need a kind encodes it and stores it in the message's cache, and the
 * others take a reference to the same bytes. */
static hark_shared_bytes *shared_frame(int kind, const char *topic, size_t topic_len,
                                       const hark_message *msg) {
  _Atomic(void *) *slot = msg->cache ? &msg->cache->slots[kind] : NULL;
  hark_shared_bytes *cached = slot ? atomic_load_explicit(slot, memory_order_acquire) : NULL;
  if (cached) return hark_shared_bytes_ref(cached);

  hark_shared_bytes *frame = encode_broadcast(kind, topic, topic_len, msg);
  if (!frame) {
    HARK_ERROR("broadcast_encode_failed", "kind=%d topic_bytes=%zu", kind, topic_len);
    return NULL;
  }
  if (!slot) return frame;

  /* The cache keeps one reference of its own. Losing the race means another
   * thread stored its frame first: use that one. */
  void *expected = NULL;
  hark_shared_bytes_ref(frame);
  if (atomic_compare_exchange_strong_explicit(slot, &expected, frame, memory_order_acq_rel,
                                              memory_order_acquire))
    return frame;
  hark_shared_bytes_unref(frame);
  hark_shared_bytes_unref(frame);
  return hark_shared_bytes_ref(expected);
}

static void release_cached_frame(void *value) { hark_shared_bytes_unref(value); }

/* The fastlane: every subscriber here is a channel (its metadata). The frame
 * for each serializer is encoded at most once per call and the same bytes are
 * queued on every socket. V1 sockets cannot receive binary payloads and are
 * skipped for them. */
static void fastlane_dispatch(void *ctx, const char *topic, size_t topic_len,
                              const hark_dispatch_entry *entries, size_t count,
                              const hark_subscriber *from, const hark_message *msg) {
  (void)ctx;
  hark_shared_bytes *frames[3] = {NULL, NULL, NULL};
  int tried[3] = {0, 0, 0};
  static const char diff_event[] = "presence_diff";
  int is_diff = msg->event_len == sizeof diff_event - 1 &&
                memcmp(msg->event, diff_event, sizeof diff_event - 1) == 0;

  for (size_t i = 0; i < count; i++) {
    if (entries[i].sub == from) continue;
    hark_channel *ch = entries[i].metadata;
    if (is_diff && ch->awaiting_state) continue;
    hark_conn *conn = ch->conn;
    int kind = msg->binary ? 2 : (conn->serializer == HARK_SERIALIZER_V1 ? 0 : 1);
    if (msg->binary && conn->serializer == HARK_SERIALIZER_V1) continue;

    if (!tried[kind]) {
      tried[kind] = 1;
      frames[kind] = shared_frame(kind, topic, topic_len, msg);
    }
    if (frames[kind]) hark_conn_send(conn, hark_shared_bytes_ref(frames[kind]));
  }

  for (int k = 0; k < 3; k++) hark_shared_bytes_unref(frames[k]);
}

void hark_channels_init_dispatcher(hark_server *server) {
  server->fastlane.name = HARK_CHANNELS_DISPATCHER;
  server->fastlane.dispatch = fastlane_dispatch;
  server->fastlane.ctx = server;
  server->fastlane.release = release_cached_frame;
  hark_pubsub_register_dispatcher(server->pubsub, &server->fastlane);
}
