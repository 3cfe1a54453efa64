/* harkd's server: HTTP/1.1 on libuv, WebSocket, Phoenix Channels and the
 * HTTP API, all on one loop. */
#ifndef HARK_SERVER_SERVER_H
#define HARK_SERVER_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "base/buf.h"
#include "hark/presence.h"
#include "hark/pubsub.h"

typedef struct hark_server hark_server;
typedef struct hark_security_config hark_security_config;

/* What the servers on the worker threads of one harkd share: the counts
 * behind max_connections and max_connections_per_ip, so that the limits
 * hold for the whole process. Freed after every server that uses it. */
typedef struct hark_server_shared hark_server_shared;
hark_server_shared *hark_server_shared_create(void);
void hark_server_shared_free(hark_server_shared *shared);

/* What the server knows about a socket when it asks the policy. */
typedef struct hark_socket_info {
  uint64_t id;
  const char *peer;   /* "ADDRESS:PORT" */
  /* The connect params: the raw query string of the WebSocket request,
   * without the '?'. Read a value with hark_query_get. */
  const char *params;
  size_t params_len;
} hark_socket_info;

/* Finds `key` in a query string and appends its percent-decoded value to
 * `out`. Returns 1 when found, 0 when absent, -1 when out of memory. Empty
 * pairs are skipped. */
int hark_query_get(const char *query, size_t len, const char *key, hark_buf *out);

/* Per-topic access decisions. Each callback returns 0 to allow; any other
 * value denies, and *reason (a static string) becomes the "reason" of the
 * error reply. A NULL callback allows everything, which is the default until
 * access control is configured. */
typedef struct hark_channel_policy {
  void *ctx;
  int (*authorize_join)(void *ctx, const hark_socket_info *socket, const char *topic,
                        size_t topic_len, const char *payload, size_t payload_len,
                        const char **reason);
  int (*authorize_publish)(void *ctx, const hark_socket_info *socket, const char *topic,
                           size_t topic_len, const char *event, size_t event_len,
                           const char **reason);
} hark_channel_policy;

typedef struct hark_server_config {
  const char *host;              /* address to bind, e.g. "127.0.0.1" */
  int port;                      /* 0 lets the kernel choose */
  size_t max_message_bytes;      /* WebSocket message limit; larger gets close 1009 */
  uint64_t idle_timeout_ms;      /* close a WebSocket silent for this long */
  unsigned max_channels;         /* channels one socket may join */
  size_t max_header_bytes;       /* request line plus headers */
  size_t max_body_bytes;         /* HTTP request body */
  size_t max_output_bytes;       /* bytes queued for one socket before it is closed */
  size_t max_connections;        /* open connections in total */
  size_t max_connections_per_ip; /* open connections from one client address */
  uint64_t handshake_timeout_ms; /* time to send a whole HTTP request (and so the upgrade) */
  const char *web_root;          /* folder of the demo page */
  const char *phoenix_js;        /* path of phoenix.mjs from the npm package */
  hark_channel_policy policy;
  /* Presence, or NULL for none. Topics matching one of the glob patterns
   * track each joining socket. The server does not own these. */
  hark_presence *presence;
  const char *const *presence_patterns;
  size_t presence_pattern_count;
  /* Shown by GET /api/cluster. cluster_adapter_ctx is the Redis adapter's
   * ctx, or NULL on a single node. */
  const char *node_name;
  void *cluster_adapter_ctx;
  /* Tokens, topic policies, the API key and the origin check
   * (server/config.h), not owned; NULL allows everyone everything, as an
   * empty config file does. */
  const hark_security_config *security;
  /* Per-socket limits; 0 means the HARK_DEFAULT_ value below. A socket may
   * send a burst of twice max_messages_per_second messages. */
  unsigned max_messages_per_second;
  size_t max_topic_bytes;
  size_t max_event_bytes;
  /* Workers: NULL for a server alone. Otherwise every worker's server gets
   * the same shared counts and listens on the same port with SO_REUSEPORT,
   * so the kernel spreads connections over them. The worker whose pubsub is
   * member 0 of its group owns the presence tracker; the others reach it
   * through the group. */
  hark_server_shared *shared;
} hark_server_config;

/* WebSocket data messages one socket may send per second on average; the
 * next one over the limit gets close code 1008. */
#define HARK_DEFAULT_MAX_MESSAGES_PER_SECOND 100
/* 255 bytes is the most a V2 binary frame can carry for a topic or event. */
#define HARK_DEFAULT_MAX_TOPIC_BYTES 255
#define HARK_DEFAULT_MAX_EVENT_BYTES 255

/* The name under which the server registers its channel fastlane dispatcher;
 * presence diffs use it to reach sockets. */
#define HARK_CHANNELS_DISPATCHER "hark.channels.fastlane"

/* The largest meta object a client may send in a join or presence_update,
 * unless a topic policy sets its own max_meta_bytes. */
#define HARK_MAX_CLIENT_META_BYTES 4096

/* Fills `config` with the documented defaults. */
void hark_server_config_defaults(hark_server_config *config);

/* Creates a server on `loop` that publishes through `pubsub`. The config's
 * strings must outlive the server. Returns NULL when out of memory. */
hark_server *hark_server_create(uv_loop_t *loop, hark_pubsub *pubsub,
                                const hark_server_config *config);

/* Binds and listens. Returns 0, or a libuv error code (e.g. UV_EADDRINUSE).
 * With config.shared set, the first server to listen checks that no other
 * process has the port, and the others then share it.
 * On success, the bound port is available from hark_server_port. */
int hark_server_listen(hark_server *server);
int hark_server_port(const hark_server *server);

/* Stops accepting, sends close 1001 to every WebSocket, closes every
 * connection once its output is written (or after a short grace period),
 * then calls `done`. */
void hark_server_shutdown(hark_server *server, void (*done)(hark_server *server, void *arg),
                          void *arg);

/* Frees the server. Call after the shutdown's `done` callback ran and the loop
 * has processed the close callbacks. */
void hark_server_destroy(hark_server *server);

#endif
