/* Presence on channels: a socket that joins a presence topic is tracked
 * under the sub claim of its token, or in open mode under its user_id
 * connect param, or else under an id made up for the connection. Its meta is
 * {"online_at": <unix ms>}, plus the presence claim of its token, plus the
 * "meta" object of its join payload, in that order of precedence. */
#include <jansson.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/glob.h"
#include "base/json.h"
#include "base/log.h"
#include "base/utf8.h"
#include "server/config.h"
#include "server/conn.h"

#define MAX_USER_ID_BYTES 256

int hark_channel_presence_enabled(const hark_server *server, const hark_topic_rule *rule,
                                  const char *topic, size_t topic_len) {
  if (!server->config.presence) return 0;
  if (rule && rule->presence >= 0) return rule->presence;
  for (size_t i = 0; i < server->config.presence_pattern_count; i++)
    if (hark_glob_match(server->config.presence_patterns[i], topic, topic_len)) return 1;
  return 0;
}

static uint64_t unix_ms(void) {
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  return (uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_nsec / 1000000;
}

/* A process-wide random value, drawn once. */
static uint64_t process_salt(void) {
  static _Atomic uint64_t salt;
  uint64_t value = atomic_load_explicit(&salt, memory_order_relaxed);
  if (value != 0) return value;

  if (uv_random(NULL, NULL, &value, sizeof value, 0, NULL) != 0)
    value = unix_ms() ^ ((uint64_t)uv_os_getpid() << 32);
  value |= 1;
  uint64_t expected = 0;
  if (!atomic_compare_exchange_strong(&salt, &expected, value)) value = expected;
  return value;
}

/* The presence key of a socket without user_id: 16 hex digits derived from
 * its connection id, so the connection stores nothing for it. The mix is a
 * bijection of (id ^ salt), so two connections never share a key, and the
 * salt keeps keys from revealing connection ids. */
static void anonymous_key(const hark_conn *conn, char out[17]) {
  uint64_t x = conn->id ^ process_salt();
  x = (x ^ (x >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  x = (x ^ (x >> 27)) * UINT64_C(0x94d049bb133111eb);
  x ^= x >> 31;

  static const char hex[] = "0123456789abcdef";
  for (int i = 15; i >= 0; i--) {
    out[i] = hex[x & 15];
    x >>= 4;
  }
  out[16] = '\0';
}

/* Once tokens are configured, a user_id param is no proof of identity, so
 * only the token's sub names a socket; without sub the socket is anonymous. */
static int choose_key(hark_conn *conn, hark_buf *key, const char **reason) {
  const char *sub = conn->claims ? hark_jwt_claims_sub(conn->claims) : NULL;
  if (sub) return hark_buf_append_str(key, sub) == 0 ? 0 : -1;

  const hark_security_config *security = conn->server->config.security;
  int tokens_configured = security && security->verifier;
  int found = conn->params && !tokens_configured
                  ? hark_query_get(conn->params, conn->params_len, "user_id", key)
                  : 0;
  if (found < 0) {
    *reason = "out of memory";
    return -1;
  }
  if (found == 1 && key->len > 0) {
    if (key->len > MAX_USER_ID_BYTES || !hark_utf8_valid(key->data, key->len)) {
      *reason = "invalid user_id: it must be UTF-8 text of at most 256 bytes";
      return -1;
    }
    return 0;
  }
  hark_buf_reset(key);
  char anonymous[17];
  anonymous_key(conn, anonymous);
  return hark_buf_append_str(key, anonymous) == 0 ? 0 : -1;
}

/* The meta settings of a topic: its rule's, or the defaults. */
static void meta_limits(const hark_topic_rule *rule, int *client_meta, size_t *max_bytes) {
  *client_meta = rule ? rule->client_meta : 1;
  *max_bytes = rule ? rule->max_meta_bytes : HARK_MAX_CLIENT_META_BYTES;
}

/* Finds the client's meta, the "meta" member of `payload`, and checks it
 * against the topic's rule. Returns 1 with the meta, 0 when there is none,
 * or -1 with *reason set. */
static int find_client_meta(const hark_topic_rule *rule, const char *payload, size_t payload_len,
                            int meta_required, const char **value, size_t *value_len,
                            const char **reason) {
  static _Thread_local char too_large[64];
  int client_meta;
  size_t max_bytes;
  meta_limits(rule, &client_meta, &max_bytes);

  int found = payload_len ? hark_json_object_get(payload, payload_len, "meta", value, value_len) : 0;
  if (found == 1 && !client_meta) {
    *reason = "client meta is not allowed on this topic";
    return -1;
  }
  if (found <= 0 && meta_required) {
    *reason = "payload must be an object with a \"meta\" object";
    return -1;
  }
  if (found == 1 && (*value)[0] != '{') {
    *reason = "meta must be a JSON object";
    return -1;
  }
  if (found == 1 && *value_len > max_bytes) {
    /* Each worker thread handles one message at a time, so one buffer per
     * thread is enough. */
    snprintf(too_large, sizeof too_large, "meta is larger than %zu bytes", max_bytes);
    *reason = too_large;
    return -1;
  }
  return found == 1;
}

/* Builds {"online_at": online_at, ...presence claim, ...client meta} as
 * compact JSON text. Earlier members win: the server's online_at over
 * everything, and the meta the backend signed over the client's. */
static char *build_meta(uint64_t online_at, const json_t *claims, const hark_topic_rule *rule,
                        const char *payload, size_t payload_len, int meta_required,
                        const char **reason) {
  const char *value = NULL;
  size_t value_len = 0;
  int found = find_client_meta(rule, payload, payload_len, meta_required, &value, &value_len, reason);
  if (found < 0) return NULL;

  /* jansson stores integers in 64 bits and rejects "\u0000" in keys, so
   * such a meta is rejected rather than silently changed. */
  json_t *client = NULL;
  if (found == 1) {
    client = json_loadb(value, value_len, 0, NULL);
    if (!client) {
      *reason = "meta could not be decoded: integers must fit in 64 bits and text must not contain \\u0000";
      return NULL;
    }
  }
  json_t *meta = json_object();
  json_object_set_new(meta, "online_at", json_integer((json_int_t)online_at));
  json_t *vouched = claims ? hark_jwt_claims_presence(claims) : NULL;
  if (vouched) json_object_update_missing(meta, vouched);
  if (client) json_object_update_missing(meta, client);
  json_decref(client);
  char *text = json_dumps(meta, JSON_COMPACT | JSON_PRESERVE_ORDER);
  json_decref(meta);
  if (!text) *reason = "out of memory";
  return text;
}

int hark_channel_presence_prepare(hark_conn *conn, const hark_topic_rule *rule, const char *payload,
                                  size_t payload_len, hark_presence_join *join, const char **reason) {
  memset(join, 0, sizeof *join);
  if (choose_key(conn, &join->key, reason) != 0) {
    hark_buf_free(&join->key);
    return -1;
  }
  join->meta = build_meta(unix_ms(), conn->claims, rule, payload, payload_len, 0, reason);
  if (!join->meta) {
    hark_buf_free(&join->key);
    return -1;
  }
  return 0;
}

void hark_channel_presence_discard(hark_presence_join *join) {
  hark_buf_free(&join->key);
  free(join->meta);
  join->meta = NULL;
}

/* ---- Presence on another worker ----
 *
 * The tracker lives on the home worker. A channel on another worker is
 * tracked there under a ticket: the ticket's `owner` is the tracker owner,
 * and `ch` leads back to the channel. Calls go to the home and replies come
 * back through the pubsub group, in order, so the presence_state of a join
 * reaches the channel before the presence_diff of its own track. Every
 * presence_diff also comes from the home, through the same queue. A diff
 * that reaches the channel before its state is already part of that state,
 * so the fastlane drops it (awaiting_state). No call blocks the worker:
 * each is a post to the home's mailbox. */
struct hark_presence_ticket {
  atomic_uint refs;              /* the channel's, plus one per call in flight */
  hark_subscriber owner;
  hark_channel *ch;              /* read and cleared on the channel's thread only */
  unsigned worker;               /* the channel's group member */
};

typedef enum presence_call_kind { CALL_TRACK, CALL_UPDATE, CALL_UNTRACK, CALL_STATE } presence_call_kind;

/* One call to the home, or the state going back. Owns its strings and one
 * ticket reference. */
typedef struct presence_call {
  presence_call_kind kind;
  hark_presence_ticket *ticket;
  hark_presence *presence;
  hark_pubsub_group *group;
  char *topic, *key, *meta;      /* malloc'd; meta is the state list for CALL_STATE */
  size_t topic_len, key_len, meta_len;
} presence_call;

static void ticket_unref(hark_presence_ticket *ticket) {
  if (atomic_fetch_sub_explicit(&ticket->refs, 1, memory_order_acq_rel) == 1) free(ticket);
}

static void call_free(presence_call *call) {
  ticket_unref(call->ticket);
  free(call->topic);
  free(call->key);
  free(call->meta);
  free(call);
}

static void run_call(void *arg, int discard);

/* Posts `call` to `member`. On failure logs, frees it and returns -1. */
static int post_call(presence_call *call, unsigned member) {
  int rc = hark_pubsub_group_post(call->group, member, run_call, call);
  if (rc == 0) return 0;
  HARK_ERROR("presence_call_failed", "kind=%d member=%u error=\"%s\"", (int)call->kind, member,
             hark_strerror(rc));
  call_free(call);
  return -1;
}

/* On the home: lists the topic for the joiner, sends the list back, then
 * tracks. */
static void home_track(presence_call *call) {
  size_t len = 0;
  char *list = hark_presence_list(call->presence, call->topic, call->topic_len, &len);
  presence_call *state = calloc(1, sizeof *state);
  if (!list) HARK_ERROR("presence_state_failed", "worker=%u error=\"out of memory\"", call->ticket->worker);
  if (state) {
    /* Sent even without a list: it ends the channel's wait for its state. */
    atomic_fetch_add_explicit(&call->ticket->refs, 1, memory_order_relaxed);
    *state = (presence_call){.kind = CALL_STATE, .ticket = call->ticket, .group = call->group,
                             .meta = list, .meta_len = len};
    post_call(state, call->ticket->worker);
  } else {
    HARK_ERROR("presence_state_failed", "worker=%u error=\"out of memory\"", call->ticket->worker);
    free(list);
  }

  int rc = hark_presence_track(call->presence, &call->ticket->owner, call->topic, call->topic_len,
                               call->key, call->key_len, call->meta, call->meta_len, NULL);
  if (rc != 0)
    HARK_ERROR("presence_track_failed", "worker=%u error=\"%s\"", call->ticket->worker,
               hark_strerror(rc));
}

static void run_call(void *arg, int discard) {
  presence_call *call = arg;
  if (!discard) {
    int rc = 0;
    switch (call->kind) {
    case CALL_TRACK: home_track(call); break;
    case CALL_UPDATE:
      rc = hark_presence_update(call->presence, &call->ticket->owner, call->topic, call->topic_len,
                                call->key, call->key_len, call->meta, call->meta_len, NULL);
      break;
    case CALL_UNTRACK: hark_presence_untrack_all(call->presence, &call->ticket->owner); break;
    case CALL_STATE:
      /* Runs on the channel's thread, the only one that touches ch. */
      if (call->ticket->ch) {
        call->ticket->ch->awaiting_state = 0;
        if (call->meta)
          hark_channel_push(call->ticket->ch, "presence_state", call->meta, call->meta_len);
      }
      break;
    }
    if (rc != 0)
      HARK_WARN("presence_update_failed", "worker=%u error=\"%s\"", call->ticket->worker,
                hark_strerror(rc));
  }
  call_free(call);
}

/* Builds a call to the home for channel `ch`, taking a ticket reference and
 * copies of the strings. Returns NULL when out of memory. */
static presence_call *call_new(hark_channel *ch, presence_call_kind kind, const char *key,
                               size_t key_len, const char *meta) {
  presence_call *call = calloc(1, sizeof *call);
  if (!call) return NULL;
  *call = (presence_call){.kind = kind, .ticket = ch->ticket,
                          .presence = ch->conn->server->config.presence,
                          .group = hark_pubsub_group_of(ch->conn->server->pubsub),
                          .topic_len = ch->topic_len, .key_len = key_len,
                          .meta_len = meta ? strlen(meta) : 0};
  atomic_fetch_add_explicit(&ch->ticket->refs, 1, memory_order_relaxed);
  call->topic = malloc(ch->topic_len + 1);
  call->key = key ? malloc(key_len + 1) : NULL;
  call->meta = meta ? strdup(meta) : NULL;
  if (!call->topic || (key && !call->key) || (meta && !call->meta)) {
    call_free(call);
    return NULL;
  }
  memcpy(call->topic, ch->topic, ch->topic_len + 1);
  if (key) memcpy(call->key, key, key_len);
  return call;
}

/* Tracks a channel of a worker other than the home through a ticket.
 * Returns 0 or -1 (out of memory). */
static int start_remote(hark_channel *ch, hark_presence_join *join) {
  hark_presence_ticket *ticket = calloc(1, sizeof *ticket);
  if (!ticket) return -1;
  atomic_init(&ticket->refs, 1);
  ticket->ch = ch;
  ticket->worker = ch->conn->server->worker;
  ch->ticket = ticket;
  ch->awaiting_state = 1;

  presence_call *call = call_new(ch, CALL_TRACK, join->key.data, join->key.len, join->meta);
  if (!call || post_call(call, 0) != 0) {
    ch->ticket = NULL;
    ch->awaiting_state = 0;
    ticket_unref(ticket);
    return -1;
  }
  return 0;
}

/* On the home: pushes the state, then tracks, so the state lists everyone
 * but this socket, and the joiner then learns of itself from the
 * presence_diff that every subscriber gets. */
static int start_local(hark_channel *ch, hark_presence_join *join) {
  hark_presence *presence = ch->conn->server->config.presence;
  size_t list_len;
  char *list = hark_presence_list(presence, ch->topic, ch->topic_len, &list_len);
  if (list) hark_channel_push(ch, "presence_state", list, list_len);
  free(list);

  int rc = hark_presence_track(presence, &ch->sub, ch->topic, ch->topic_len, join->key.data,
                               join->key.len, join->meta, strlen(join->meta), NULL);
  if (rc != 0)
    HARK_ERROR("presence_track_failed", "conn=%llu error=\"%s\"", (unsigned long long)ch->conn->id,
               hark_strerror(rc));
  return rc == 0 ? 0 : -1;
}

void hark_channel_presence_start(hark_channel *ch, hark_presence_join *join) {
  json_t *parsed = json_loads(join->meta, 0, NULL);
  json_t *online_at = parsed ? json_object_get(parsed, "online_at") : NULL;
  ch->online_at = online_at ? (uint64_t)json_integer_value(online_at) : unix_ms();
  json_decref(parsed);

  int rc = ch->conn->server->is_home ? start_local(ch, join) : start_remote(ch, join);
  if (rc == 0) {
    ch->presence_key = join->key.data;
    ch->presence_key_len = join->key.len;
    join->key = (hark_buf){0};
  } else if (!ch->conn->server->is_home) {
    HARK_ERROR("presence_track_failed", "conn=%llu error=\"out of memory\"",
               (unsigned long long)ch->conn->id);
  }
  hark_channel_presence_discard(join);
}

const char *hark_channel_presence_update(hark_channel *ch, const char *payload, size_t payload_len) {
  if (!ch->presence_key) return "presence is not enabled for this topic";

  const char *reason = NULL;
  char *meta = build_meta(ch->online_at, ch->conn->claims, ch->rule, payload, payload_len, 1, &reason);
  if (!meta) return reason;
  int rc = 0;
  if (ch->ticket) {
    /* NOTE: the reply is ok once the call is posted. The home applies it
     * later, and a failure there is only logged. */
    presence_call *call = call_new(ch, CALL_UPDATE, ch->presence_key, ch->presence_key_len, meta);
    if (call) {
      post_call(call, 0);
    } else {
      rc = HARK_ENOMEM;
    }
  } else {
    rc = hark_presence_update(ch->conn->server->config.presence, &ch->sub, ch->topic,
                              ch->topic_len, ch->presence_key, ch->presence_key_len, meta,
                              strlen(meta), NULL);
  }
  free(meta);
  return rc == 0 ? NULL : hark_strerror(rc);
}

void hark_channel_presence_leave(hark_channel *ch) {
  if (!ch->presence_key) return;
  if (ch->ticket) {
    presence_call *call = call_new(ch, CALL_UNTRACK, NULL, 0, NULL);
    /* NOTE: when this call cannot be made (out of memory), the presence
     * stays on the home until the process restarts. */
    if (call) {
      post_call(call, 0);
    } else {
      HARK_ERROR("presence_untrack_failed", "conn=%llu error=\"out of memory\"",
                 (unsigned long long)ch->conn->id);
    }
    ch->ticket->ch = NULL;
    ticket_unref(ch->ticket);
    ch->ticket = NULL;
  } else {
    hark_presence_untrack_all(ch->conn->server->config.presence, &ch->sub);
  }
  free(ch->presence_key);
  ch->presence_key = NULL;
}
