/* Internal types shared by the server's modules: one hark_conn per accepted
 * TCP connection, which starts as HTTP and may be upgraded to a WebSocket. */
#ifndef HARK_SERVER_CONN_H
#define HARK_SERVER_CONN_H

#include <llhttp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <uv.h>

#include "base/buf.h"
#include "base/log.h"
#include "hark/pubsub.h"
#include "server/channel_codec.h"
#include "server/ip_table.h"
#include "server/policy.h"
#include "server/ratelimit.h"
#include "server/server.h"
#include "server/ws_frame.h"

#define HARK_HTTP_MAX_HEADERS 64

typedef enum hark_conn_state {
  HARK_CONN_HTTP,      /* reading HTTP requests */
  HARK_CONN_WS,        /* an open WebSocket */
  HARK_CONN_CLOSING,   /* no more input is read; output is flushed, then closed */
} hark_conn_state;

typedef struct hark_http_header {
  uint32_t name_off, name_len, value_off, value_len; /* offsets into request.text */
} hark_http_header;

/* The request being parsed. Freed (reset) after each response. */
typedef struct hark_http_request {
  llhttp_t parser;
  hark_buf text;               /* URL and header bytes; header spans index into it */
  hark_buf body;
  uint32_t url_len;            /* the URL is text[0, url_len) */
  hark_http_header headers[HARK_HTTP_MAX_HEADERS];
  unsigned header_count;
  int in_value;                /* the parser is inside a header value */
  int complete;                /* on_message_complete ran */
  int error_status;            /* set by a callback that rejected the request */
  const char *error_text;
} hark_http_request;

typedef struct hark_channel hark_channel;
typedef struct hark_presence_ticket hark_presence_ticket;

/* The demo page's files, read once and kept while their size and mtime stay
 * the same, so serving them costs a stat and no copy. */
#define HARK_STATIC_CACHE_SLOTS 16
typedef struct hark_static_file {
  char *path;                   /* owned; NULL for a free slot */
  hark_shared_bytes *body;      /* one reference owned by the cache */
  int64_t mtime_ns;
  int64_t size;
} hark_static_file;

/* The fields are ordered so that small ones share words: thousands of idle
 * connections are mostly this struct. */
typedef struct hark_conn {
  uv_tcp_t tcp;                 /* first member: the handle's address is the conn's */
  hark_server *server;
  uint64_t id;
  hark_conn_state state;
  hark_serializer serializer;
  uint16_t peer_port;                    /* with ip: the client's address */
  unsigned detached : 1;                 /* made by hark_conn_create_detached */
  unsigned ip_counted : 1;               /* counted in the shared ip_counts */
  unsigned dirty : 1;                    /* on the server's dirty list */
  unsigned close_after_response : 1;
  /* Worker 0 builds the response to the current request: reading is
   * paused, and `pending_call` (counted by the call) leads back here. */
  unsigned awaiting_response : 1;
  unsigned writing : 1;
  unsigned shutdown_after_write : 1;     /* half-close once output is written */
  unsigned shutdown_started : 1;         /* uv_shutdown was called */
  unsigned closed : 1;                   /* uv_close was called */
  unsigned overflowed : 1;               /* output limit hit; closed at the next flush */
  unsigned channel_count;
  uint32_t params_len;
  uint64_t last_read_ms;
  uint64_t closing_since_ms;             /* when hark_conn_finish ran */
  uint64_t request_started_ms;           /* start of the HTTP request being read, or 0 */
  hark_ip_key ip;

  struct hark_conn *prev, *next;         /* the server's list of connections */
  struct hark_conn *dirty_next;          /* the server's list of conns with output */

  hark_buf input;                        /* unparsed bytes kept between reads */

  /* HTTP state; NULL once upgraded. */
  hark_http_request *request;
  struct hark_api_call *pending_call;

  /* WebSocket state. */
  hark_ws_parser ws;
  char *params;                          /* connect params (query string), owned */
  hark_channel *channels;                /* doubly linked list of joined channels */
  /* The verified claims of the connection token (owned, freed by
   * hark_channels_leave_all), or NULL for a socket without a token. */
  json_t *claims;
  hark_token_bucket rate;                /* messages the socket may still send */

  /* Output: frames waiting to be written, and frames handed to uv_write. */
  hark_shared_bytes **pending;
  hark_shared_bytes **inflight;
  uint32_t pending_count, pending_cap;
  uint32_t inflight_count, inflight_cap;
  size_t queued_bytes;                   /* pending plus in-flight, with overhead */
} hark_conn;

/* A channel: one joined topic of one socket. It is the pubsub subscriber and
 * is its own subscription metadata, so the fastlane dispatcher finds the
 * socket and serializer directly. */
struct hark_channel {
  hark_subscriber sub;
  hark_conn *conn;
  hark_channel *prev, *next;
  /* Presence: the key this channel is tracked under (owned), or NULL when the
   * topic has presence off, and the join time put into every meta. */
  char *presence_key;
  size_t presence_key_len;
  uint64_t online_at;
  /* On a worker other than the home: the channel's presence on the home
   * (one reference owned by the channel), or NULL. */
  hark_presence_ticket *ticket;
  /* Set from the join until presence_state arrives from the home; diffs
   * meanwhile are dropped, since the state includes them. */
  int awaiting_state;
  /* The topic's policy rule (owned by the server's security config), or
   * NULL when the server has none, and whether the channel token of the
   * join allows publishing here. */
  const hark_topic_rule *rule;
  int publish_granted;
  uint32_t join_ref_len;        /* the JSON token follows the topic's NUL */
  uint32_t topic_len;
  char topic[];                 /* NUL-terminated, then the join_ref */
};

struct hark_server_shared {
  pthread_mutex_t lock;          /* guards ip_counts and the log window */
  hark_ip_table ip_counts;
  uint64_t log_window_ms;        /* start of the current one-second window */
  unsigned log_lines, log_suppressed;
  atomic_size_t connections;     /* open on every worker */
  atomic_uint_fast64_t next_conn_id;
};

struct hark_server {
  uv_loop_t *loop;
  /* The group member index of this worker, and whether it owns presence:
   * worker 0, or the only server. */
  unsigned worker;
  int is_home;
  hark_server_shared *shared;            /* config.shared, or &own_shared */
  hark_server_shared own_shared;
  hark_pubsub *pubsub;
  hark_server_config config;
  uv_tcp_t listener;
  int listening;
  int port;
  uv_prepare_t flusher;                  /* writes queued output before the loop polls */
  uv_timer_t sweeper;                    /* closes idle sockets */
  uv_timer_t shutdown_timer;
  hark_conn *conns;
  hark_conn *dirty;
  size_t conn_count;                     /* on this worker */
  hark_static_file static_files[HARK_STATIC_CACHE_SLOTS];
  llhttp_settings_t http_settings;
  hark_dispatcher fastlane;
  hark_channel_decoder decoder;          /* shared by this worker's sockets */
  char read_buffer[65536];               /* shared by every read callback */
  int shutting_down;
  void (*shutdown_done)(hark_server *server, void *arg);
  void *shutdown_arg;
};

uint64_t hark_now_ms(const hark_server *server);

/* Returns 1 when a log line about a client's fault may be written now. Such
 * lines are limited to CLIENT_LOG_LINES_PER_SECOND per server, so a client
 * cannot flood the log; a line then reports how many were dropped. */
int hark_server_log_allowed(hark_server *server);

#define HARK_CLIENT_WARN(server, msg, ...) \
  do { if (hark_server_log_allowed(server)) HARK_WARN(msg, __VA_ARGS__); } while (0)
#define HARK_CLIENT_INFO(server, msg, ...) \
  do { if (hark_server_log_allowed(server)) HARK_INFO(msg, __VA_ARGS__); } while (0)

/* The client's "ADDRESS:PORT" for log lines, in a per-thread buffer that
 * the next call overwrites. */
const char *hark_conn_peer(const hark_conn *conn);

/* Handles bytes read from the connection. `data` is writable: WebSocket
 * payloads are unmasked in place. */
void hark_conn_feed(hark_conn *conn, char *data, size_t len);

/* Stop and restart reading from the socket, while worker 0 builds the
 * response to a request. */
void hark_conn_pause_reading(hark_conn *conn);
void hark_conn_resume_reading(hark_conn *conn);

/* Creates a connection with no socket behind it, for fuzzing and tests: feed
 * it with hark_conn_feed; its output fails to write and closes it. */
hark_conn *hark_conn_create_detached(hark_server *server);

/* Output. hark_conn_send takes over one reference to `bytes`. */
void hark_conn_send(hark_conn *conn, hark_shared_bytes *bytes);
int hark_conn_send_copy(hark_conn *conn, const void *data, size_t len);
/* Stops reading, lets queued output drain, then closes the connection. */
void hark_conn_finish(hark_conn *conn);
/* Closes at once, dropping queued output. */
void hark_conn_abort(hark_conn *conn);

/* HTTP (http.c). */
void hark_http_settings_init(llhttp_settings_t *settings);
int hark_http_start(hark_conn *conn);
void hark_http_free(hark_conn *conn);
void hark_http_on_data(hark_conn *conn, char *data, size_t len);
/* Ends a request that set awaiting_response once its response is queued,
 * then parses the input that followed it. */
void hark_http_resume(hark_conn *conn);
int hark_http_respond(hark_conn *conn, int status, const char *content_type, const char *body,
                      size_t body_len, const char *extra_headers);
int hark_http_respond_error(hark_conn *conn, int status, const char *message,
                            const char *extra_headers);
/* Like hark_http_respond, but the body is a shared block that is queued
 * without a copy; takes over nothing (the caller keeps its reference). */
int hark_http_respond_shared(hark_conn *conn, int status, const char *content_type,
                             hark_shared_bytes *body);

/* Static files (static_files.c). Returns the file's contents with one new
 * reference for the caller, or NULL with errno set. */
hark_shared_bytes *hark_static_file_get(hark_server *server, const char *path);
void hark_static_files_free(hark_server *server);
const char *hark_http_header_get(const hark_http_request *request, const char *name,
                                 size_t *len);

/* Appends the percent-decoded form of [s, s+len) to `out`. In query strings
 * '+' means a space, in paths it does not. A '%' not followed by two hex
 * digits is kept as it is. Returns 0 or -1 (out of memory). */
int hark_percent_decode(hark_buf *out, const char *s, size_t len, int plus_is_space);

/* Returns 1 when the request may go on: it is not for /api/, no API key is
 * configured, or it carries the right key. Otherwise answers 401 and returns
 * 0. */
int hark_api_key_accepted(hark_conn *conn, const char *path, size_t len);

/* The HTTP API and static files (api.c); returns 1 when a route matched. */
int hark_api_route(hark_conn *conn, int method, const char *path, size_t path_len);
/* Drops the pending call of a closing connection; its response is discarded. */
void hark_api_cancel_pending(hark_conn *conn);

/* WebSocket (websocket.c). */
void hark_ws_upgrade(hark_conn *conn, const char *path, size_t path_len, const char *query,
                     size_t query_len, char *rest, size_t rest_len);
void hark_ws_on_data(hark_conn *conn, char *data, size_t len);
/* Sends a close frame with `code` and `reason` and finishes the connection. */
void hark_ws_close(hark_conn *conn, uint16_t code, const char *reason);

/* Presence for channels (channel_presence.c). A join on a presence topic is
 * checked before the join reply (prepare), and tracked after it (start), so
 * a bad meta fails the join and presence_state follows the ok reply. */
typedef struct hark_presence_join {
  hark_buf key;
  char *meta;         /* JSON text, malloc'd by jansson */
} hark_presence_join;

/* `rule` (NULL: none) may turn presence on or off for its topics, ahead of
 * the --presence patterns. */
int hark_channel_presence_enabled(const hark_server *server, const hark_topic_rule *rule,
                                  const char *topic, size_t topic_len);
/* Returns 0, or -1 with *reason set when the join must be rejected. `rule`
 * (NULL: the defaults) says whether the client may send meta, and how much. */
int hark_channel_presence_prepare(hark_conn *conn, const hark_topic_rule *rule, const char *payload,
                                  size_t payload_len, hark_presence_join *join, const char **reason);
/* Pushes presence_state to the channel, then tracks it. Frees `join`. */
void hark_channel_presence_start(hark_channel *ch, hark_presence_join *join);
void hark_channel_presence_discard(hark_presence_join *join);
/* Handles a presence_update push; returns NULL on success or the error reason. */
const char *hark_channel_presence_update(hark_channel *ch, const char *payload, size_t payload_len);
void hark_channel_presence_leave(hark_channel *ch);

/* Channels (channels.c). */
void hark_channel_push(hark_channel *ch, const char *event, const char *payload, size_t len);
void hark_channels_init_dispatcher(hark_server *server);
void hark_channels_on_message(hark_conn *conn, int binary, char *data, size_t len);
void hark_channels_leave_all(hark_conn *conn);

#endif
