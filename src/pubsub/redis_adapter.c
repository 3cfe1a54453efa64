/* The Redis cluster adapter (declared in hark/redis.h).
 *
 * Each adapter has two connections ("links") to one Redis server. The
 * subscriber link is in pub/sub mode and receives envelopes. The publisher
 * link sends PUBLISH (or SPUBLISH), which a connection in pub/sub mode cannot
 * do. Each link
 * is a non-blocking socket watched by a uv_poll_t. Commands are written in
 * RESP by this file and replies are parsed by hiredis's redisReader.
 *
 * The hiredis 0.14.1 async layer (redisAsyncContext) is not used because its
 * pub/sub bookkeeping knows only SUBSCRIBE and PSUBSCRIBE: the first
 * "smessage" on an SSUBSCRIBEd connection hits an assertion in
 * redisProcessCallbacks and aborts the process. Owning the socket also lets
 * writes use MSG_NOSIGNAL, so a Redis restart never raises SIGPIPE.
 *
 * Channels: `<prefix>:t:<topic>` per topic and `<prefix>:n:<node>` per node,
 * where every byte outside [A-Za-z0-9_.:-] of the topic or node name is
 * written as %XX. The escaping is injective, and no channel contains a glob
 * character or a NUL byte.
 *
 * Life cycle: create parses the options; attach starts both links; a link that
 * fails closes its socket and retries after a backoff with full jitter;
 * destroy closes everything, and the memory is freed by the handles' close
 * callbacks, so the loop must run once more after hark_pubsub_destroy. */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "base/buf.h"
#include "base/json.h"
#include "base/log.h"
#include "hark/redis.h"
#include "pubsub/envelope.h"
#include "pubsub/internal.h"

#define DEFAULT_PREFIX "hark"
#define DEFAULT_RECONNECT_MIN_MS 100
#define DEFAULT_RECONNECT_MAX_MS 5000
#define MAX_PREFIX_LEN 200
/* Bytes a link may hold for a slow Redis before broadcasts are dropped. */
#define MAX_PENDING_OUTPUT (64u * 1024 * 1024)
/* Room for the RESP array and bulk headers of one command. */
#define COMMAND_OVERHEAD 64
#define READ_CHUNK 65536
#define LOG_LINES_PER_SECOND 5

/* ---- Rate-limited logging ---- */

/* At most LOG_LINES_PER_SECOND lines per second for one kind of event; the
 * next line written reports how many were left out. */
typedef struct log_limiter {
  uint64_t window_start_ms;
  unsigned lines;
  uint64_t suppressed;
} log_limiter;

/* Returns 1 when a line may be written now, with *suppressed set to the number
 * of lines left out since the last written one. */
static int log_limiter_allow(log_limiter *limiter, uint64_t now_ms, uint64_t *suppressed) {
  if (now_ms - limiter->window_start_ms >= 1000) {
    limiter->window_start_ms = now_ms;
    limiter->lines = 0;
  }
  if (limiter->lines >= LOG_LINES_PER_SECOND) {
    limiter->suppressed++;
    return 0;
  }
  limiter->lines++;
  *suppressed = limiter->suppressed;
  limiter->suppressed = 0;
  return 1;
}

/* ---- Types ---- */

typedef enum link_state {
  LINK_IDLE,       /* no socket; a retry may be scheduled */
  LINK_CONNECTING, /* TCP connect in progress */
  LINK_HANDSHAKE,  /* SELECT or PING sent, reply awaited */
  LINK_READY,
} link_state;

typedef struct redis_adapter redis_adapter;

/* A socket and its poll handle. It is freed by the poll handle's close
 * callback, which also closes the descriptor, so it can outlive its link. */
typedef struct link_socket {
  uv_poll_t poll;
  int fd;
} link_socket;

typedef struct redis_link {
  redis_adapter *adapter;
  const char *role; /* "subscriber" or "publisher", for logs */
  int is_subscriber;
  link_state state;
  link_socket *sock;   /* owned; non-NULL unless LINK_IDLE */
  int poll_events;     /* events the poll handle watches */
  redisReader *reader; /* owned; non-NULL unless LINK_IDLE */
  hark_buf out;        /* owned; bytes not yet written to the socket */
  uv_timer_t retry_timer;
  unsigned attempt;    /* failed attempts since the link was last ready */
  int ever_ready;
  log_limiter reply_error_log;
} redis_link;

struct redis_adapter {
  uv_loop_t *loop;
  hark_pubsub *ps; /* set by attach; NULL after destroy */
  char host[256];
  int port;
  int db; /* -1: no SELECT */
  char *prefix; /* owned */
  size_t prefix_len;
  int sharded;
  uint64_t reconnect_min_ms;
  uint64_t reconnect_max_ms;
  uint64_t rng_state;

  const char *node_name; /* borrowed from the instance */
  size_t node_name_len;
  int node_name_invalid; /* too long for the envelope: the adapter stays offline */

  redis_link sub;
  redis_link pub;
  unsigned open_timers; /* the adapter is freed when both timers have closed */

  hark_redis_stats stats;
  log_limiter drop_log;
  log_limiter invalid_log;
  log_limiter dispatcher_log;
};

static void link_fail(redis_link *link, const char *error);
static void link_connect(redis_link *link);
static void on_poll(uv_poll_t *handle, int status, int events);

/* ---- Channel names ---- */

static int byte_is_plain(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == ':' || c == '-';
}

static size_t escaped_size(const char *bytes, size_t len) {
  size_t size = 0;
  for (size_t i = 0; i < len; i++) size += byte_is_plain((unsigned char)bytes[i]) ? 1 : 3;
  return size;
}

static size_t escape_write(const char *bytes, size_t len, char *out) {
  static const char hex[] = "0123456789ABCDEF";
  size_t n = 0;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)bytes[i];
    if (byte_is_plain(c)) {
      out[n++] = (char)c;
    } else {
      out[n++] = '%';
      out[n++] = hex[c >> 4];
      out[n++] = hex[c & 0x0f];
    }
  }
  return n;
}

static size_t channel_size(const redis_adapter *ad, const char *name, size_t len) {
  return ad->prefix_len + 3 + escaped_size(name, len);
}

/* `kind` is 't' for a topic channel and 'n' for a node channel. */
static size_t channel_write(const redis_adapter *ad, char kind, const char *name, size_t len,
                            char *out) {
  memcpy(out, ad->prefix, ad->prefix_len);
  size_t n = ad->prefix_len;
  out[n++] = ':';
  out[n++] = kind;
  out[n++] = ':';
  return n + escape_write(name, len, out + n);
}

/* Checks that `channel` is this node's channel, or the channel of `topic`, so
 * an envelope published to one topic's channel cannot reach another topic. */
static int channel_carries_topic(const redis_adapter *ad, const char *channel, size_t channel_len,
                                 const char *topic, size_t topic_len) {
  size_t head = ad->prefix_len + 3;
  if (channel_len < head || memcmp(channel, ad->prefix, ad->prefix_len) != 0) return 0;
  /* Redis delivers on a node channel only what this link subscribed to. */
  if (memcmp(channel + ad->prefix_len, ":n:", 3) == 0) return 1;
  if (memcmp(channel + ad->prefix_len, ":t:", 3) != 0) return 0;
  if (head + escaped_size(topic, topic_len) != channel_len) return 0;

  const char *p = channel + head;
  for (size_t i = 0; i < topic_len; i++) {
    char escaped[3];
    size_t n = escape_write(topic + i, 1, escaped);
    if (memcmp(p, escaped, n) != 0) return 0;
    p += n;
  }
  return 1;
}

/* ---- RESP commands ---- */

static size_t write_header(char *out, char type, size_t value) {
  return (size_t)sprintf(out, "%c%zu\r\n", type, value);
}

static size_t write_bulk(char *out, const char *bytes, size_t len) {
  size_t n = write_header(out, '$', len);
  memcpy(out + n, bytes, len);
  n += len;
  out[n++] = '\r';
  out[n++] = '\n';
  return n;
}

/* Appends `command channel`, where the channel is made of `kind` and `name`.
 * Returns 0 or HARK_ENOMEM (nothing appended). */
static int append_channel_command(redis_link *link, const char *command, char kind,
                                  const char *name, size_t name_len) {
  const redis_adapter *ad = link->adapter;
  size_t channel_len = channel_size(ad, name, name_len);
  if (hark_buf_reserve(&link->out, COMMAND_OVERHEAD + strlen(command) + channel_len) != 0)
    return HARK_ENOMEM;

  char *p = link->out.data + link->out.len;
  p += write_header(p, '*', 2);
  p += write_bulk(p, command, strlen(command));
  p += write_header(p, '$', channel_len);
  p += channel_write(ad, kind, name, name_len, p);
  *p++ = '\r';
  *p++ = '\n';
  link->out.len = (size_t)(p - link->out.data);
  return HARK_OK;
}

static int append_handshake(redis_link *link) {
  const redis_adapter *ad = link->adapter;
  char command[64];
  char db[16];
  size_t n;
  if (ad->db >= 0) {
    size_t db_len = (size_t)snprintf(db, sizeof db, "%d", ad->db);
    n = write_header(command, '*', 2);
    n += write_bulk(command + n, "SELECT", 6);
    n += write_bulk(command + n, db, db_len);
  } else {
    n = write_header(command, '*', 1);
    n += write_bulk(command + n, "PING", 4);
  }
  return hark_buf_append(&link->out, command, n) == 0 ? HARK_OK : HARK_ENOMEM;
}

/* ---- Socket I/O ---- */

static void socket_closed(uv_handle_t *handle) {
  link_socket *sock = (link_socket *)handle;
  close(sock->fd);
  free(sock);
}

static void link_watch(redis_link *link, int events) {
  if (link->sock == NULL || link->poll_events == events) return;
  link->poll_events = events;
  uv_poll_start(&link->sock->poll, events, on_poll);
}

/* Writes what the socket takes now. Returns 0, or an errno value when the
 * connection is broken. It never fails the link itself, because it runs
 * inside broadcast and subscribe calls while a dispatch may be reading
 * replies of the same link further up the stack. The unsent bytes keep
 * UV_WRITABLE armed, so the poll callback meets the error on its next run. */
static int link_flush(redis_link *link) {
  int error = 0;
  while (link->sock != NULL && link->out.len > 0) {
    ssize_t n = send(link->sock->fd, link->out.data, link->out.len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      hark_buf_consume(&link->out, (size_t)n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) error = errno;
      break;
    }
  }
  if (link->state != LINK_CONNECTING)
    link_watch(link, UV_READABLE | (link->out.len > 0 ? UV_WRITABLE : 0));
  return error;
}

static void link_close_socket(redis_link *link) {
  if (link->sock != NULL) {
    uv_close((uv_handle_t *)&link->sock->poll, socket_closed);
    link->sock = NULL;
  }
  link->poll_events = 0;
  if (link->reader != NULL) redisReaderFree(link->reader);
  link->reader = NULL;
  hark_buf_free(&link->out);
}

/* ---- Reconnection ---- */

static uint64_t next_random(redis_adapter *ad) {
  /* xorshift64: enough to spread the retries of many nodes. */
  uint64_t x = ad->rng_state;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  ad->rng_state = x;
  return x;
}

/* Full jitter: a uniform delay in [0, min(max, min * 2^(attempt - 1))]. */
static uint64_t backoff_delay(redis_adapter *ad, unsigned attempt) {
  uint64_t ceiling = ad->reconnect_max_ms;
  unsigned shift = attempt > 0 ? attempt - 1 : 0;
  if (shift < 32 && (ad->reconnect_min_ms << shift) >> shift == ad->reconnect_min_ms &&
      (ad->reconnect_min_ms << shift) < ceiling)
    ceiling = ad->reconnect_min_ms << shift;
  return next_random(ad) % (ceiling + 1);
}

static void update_connected(redis_adapter *ad) {
  ad->stats.connected = ad->sub.state == LINK_READY && ad->pub.state == LINK_READY;
}

static void on_retry(uv_timer_t *timer) {
  redis_link *link = timer->data;
  link_connect(link);
}

/* Closes the link's connection and schedules the next attempt. Broadcasts
 * still waiting in the output buffer are lost, as delivery is at-most-once. */
static void link_fail(redis_link *link, const char *error) {
  redis_adapter *ad = link->adapter;
  int was_ready = link->state == LINK_READY;
  link_close_socket(link);
  link->state = LINK_IDLE;
  update_connected(ad);

  if (was_ready) {
    HARK_WARN("redis_disconnected", "link=%s host=%s port=%d error=\"%s\"", link->role, ad->host,
              ad->port, error);
  }
  link->attempt++;
  uint64_t delay = backoff_delay(ad, link->attempt);
  HARK_WARN("redis_reconnect_scheduled", "link=%s host=%s port=%d attempt=%u delay_ms=%llu error=\"%s\"",
            link->role, ad->host, ad->port, link->attempt, (unsigned long long)delay, error);
  uv_timer_start(&link->retry_timer, on_retry, delay, 0);
}

/* ---- Replies ---- */

static int reply_is(const redisReply *reply, const char *text) {
  size_t len = strlen(text);
  return reply->type == REDIS_REPLY_STRING && reply->len == len &&
         strncasecmp(reply->str, text, len) == 0;
}

static void log_reply_error(redis_link *link, const redisReply *reply) {
  redis_adapter *ad = link->adapter;
  uint64_t suppressed;
  if (!log_limiter_allow(&link->reply_error_log, uv_now(ad->loop), &suppressed)) return;
  char quoted[256];
  HARK_WARN("redis_command_failed", "link=%s error=%s suppressed=%llu", link->role,
            hark_log_quote(quoted, sizeof quoted, reply->str, reply->len),
            (unsigned long long)suppressed);
}

/* Returns 0, or -1 when the link failed. */
static int handle_handshake_reply(redis_link *link, const redisReply *reply) {
  redis_adapter *ad = link->adapter;
  if (reply->type != REDIS_REPLY_STATUS) {
    char quoted[256];
    const char *text = reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply";
    size_t len = reply->type == REDIS_REPLY_ERROR ? reply->len : strlen(text);
    HARK_ERROR("redis_handshake_failed", "link=%s db=%d error=%s", link->role, ad->db,
               hark_log_quote(quoted, sizeof quoted, text, len));
    link_fail(link, ad->db >= 0 ? "SELECT failed" : "PING failed");
    return -1;
  }

  link->state = LINK_READY;
  link->attempt = 0;
  if (link->ever_ready) ad->stats.reconnects++;
  HARK_INFO(link->ever_ready ? "redis_reconnected" : "redis_connected",
            "link=%s host=%s port=%d db=%d sharded=%d", link->role, ad->host, ad->port, ad->db,
            ad->sharded);
  link->ever_ready = 1;
  update_connected(ad);
  return 0;
}

static void count_invalid(redis_adapter *ad, const char *error, const char *channel,
                          size_t channel_len) {
  ad->stats.invalid++;
  uint64_t suppressed;
  if (!log_limiter_allow(&ad->invalid_log, uv_now(ad->loop), &suppressed)) return;
  char quoted[160];
  HARK_WARN("redis_invalid_envelope", "channel=%s error=\"%s\" invalid=%llu suppressed=%llu",
            hark_log_quote(quoted, sizeof quoted, channel, channel_len), error,
            (unsigned long long)ad->stats.invalid, (unsigned long long)suppressed);
}

static void dispatch_envelope(redis_adapter *ad, const hark__envelope *env) {
  /* A payload not marked binary is JSON text by the hark_message contract,
   * and dispatchers forward it to clients as it is, so another node's bad
   * JSON stops here. */
  if (!env->msg.binary && !hark_json_valid(env->msg.payload, env->msg.payload_len)) {
    count_invalid(ad, "payload is not valid JSON", env->topic, env->topic_len);
    return;
  }

  char dispatcher[HARK_ENVELOPE_MAX_NAME + 1];
  memcpy(dispatcher, env->dispatcher, env->dispatcher_len);
  dispatcher[env->dispatcher_len] = '\0';

  int rc = hark_pubsub_local_dispatch(ad->ps, env->topic, env->topic_len, &env->msg, dispatcher);
  if (rc == HARK_OK) {
    ad->stats.received++;
    return;
  }

  ad->stats.unknown_dispatcher++;
  uint64_t suppressed;
  if (!log_limiter_allow(&ad->dispatcher_log, uv_now(ad->loop), &suppressed)) return;
  char quoted[HARK_ENVELOPE_MAX_NAME * 4 + 8];
  char origin[HARK_ENVELOPE_MAX_NAME * 4 + 8];
  HARK_WARN("redis_unknown_dispatcher", "dispatcher=%s origin=%s dropped=%llu suppressed=%llu",
            hark_log_quote(quoted, sizeof quoted, env->dispatcher, env->dispatcher_len),
            hark_log_quote(origin, sizeof origin, env->origin, env->origin_len),
            (unsigned long long)ad->stats.unknown_dispatcher, (unsigned long long)suppressed);
}

static void handle_message(redis_adapter *ad, const redisReply *channel, const redisReply *data) {
  hark__envelope env;
  const char *error = NULL;
  if (hark__envelope_decode(data->str, data->len, &env, &error) != HARK_OK) {
    count_invalid(ad, error, channel->str, channel->len);
    return;
  }

  /* Redis sends a node its own broadcasts back on topic channels. */
  if (env.origin_len == ad->node_name_len &&
      memcmp(env.origin, ad->node_name, env.origin_len) == 0)
    return;

  if (!channel_carries_topic(ad, channel->str, channel->len, env.topic, env.topic_len)) {
    count_invalid(ad, "topic does not match the channel", channel->str, channel->len);
    return;
  }
  if (ad->ps != NULL) dispatch_envelope(ad, &env);
}

/* Replies on the subscriber link: pushed messages, and confirmations of
 * (S)SUBSCRIBE and (S)UNSUBSCRIBE, which need no action. */
static void handle_subscriber_reply(redis_link *link, const redisReply *reply) {
  if (reply->type == REDIS_REPLY_ERROR) {
    log_reply_error(link, reply);
    return;
  }
  if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3) return;

  const redisReply *kind = reply->element[0];
  const redisReply *channel = reply->element[1];
  const redisReply *data = reply->element[2];
  if (!reply_is(kind, "message") && !reply_is(kind, "smessage")) return;
  if (channel->type != REDIS_REPLY_STRING || data->type != REDIS_REPLY_STRING) return;
  handle_message(link->adapter, channel, data);
}

/* Returns 0, or -1 when the link failed. */
static int handle_reply(redis_link *link, const redisReply *reply) {
  if (link->state == LINK_HANDSHAKE) return handle_handshake_reply(link, reply);
  if (link->is_subscriber) {
    handle_subscriber_reply(link, reply);
  } else if (reply->type == REDIS_REPLY_ERROR) {
    log_reply_error(link, reply);
  }
  return 0;
}

/* Returns 0, or -1 when the link failed. */
static int link_read(redis_link *link) {
  char chunk[READ_CHUNK];
  ssize_t n = recv(link->sock->fd, chunk, sizeof chunk, 0);
  if (n == 0) {
    link_fail(link, "connection closed by Redis");
    return -1;
  }
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return 0;
    link_fail(link, strerror(errno));
    return -1;
  }
  if (redisReaderFeed(link->reader, chunk, (size_t)n) != REDIS_OK) {
    link_fail(link, "out of memory");
    return -1;
  }

  for (;;) {
    void *reply = NULL;
    if (redisReaderGetReply(link->reader, &reply) != REDIS_OK) {
      link_fail(link, "invalid reply from Redis");
      return -1;
    }
    if (reply == NULL) return 0;
    int rc = handle_reply(link, reply);
    freeReplyObject(reply);
    if (rc != 0) return -1;
  }
}

/* ---- Connecting ---- */

typedef struct topic_subscription {
  redis_link *link;
  const char *command;
} topic_subscription;

static int subscribe_topic(void *ctx, const char *topic, size_t len) {
  topic_subscription *sub = ctx;
  return append_channel_command(sub->link, sub->command, 't', topic, len) == 0 ? HARK_OK
                                                                              : HARK_ENOMEM;
}

/* Queues SUBSCRIBE for this node's channel and every topic with a
 * subscriber on this node (on any thread of its group). One channel per command, because SSUBSCRIBE with several
 * channels fails unless they hash to one slot. */
static int subscribe_all(redis_link *link) {
  redis_adapter *ad = link->adapter;
  const char *command = ad->sharded ? "SSUBSCRIBE" : "SUBSCRIBE";
  if (append_channel_command(link, command, 'n', ad->node_name, ad->node_name_len) != 0)
    return HARK_ENOMEM;

  topic_subscription sub = {link, command};
  return hark__node_topics(ad->ps, subscribe_topic, &sub);
}

static void connect_finished(redis_link *link) {
  int error = 0;
  socklen_t len = sizeof error;
  if (getsockopt(link->sock->fd, SOL_SOCKET, SO_ERROR, &error, &len) != 0) error = errno;
  if (error != 0) {
    link_fail(link, strerror(error));
    return;
  }

  int one = 1;
  setsockopt(link->sock->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  link->reader = redisReaderCreate();
  link->state = LINK_HANDSHAKE;
  if (link->reader == NULL || append_handshake(link) != 0 ||
      (link->is_subscriber && subscribe_all(link) != 0)) {
    link_fail(link, "out of memory");
    return;
  }
  error = link_flush(link);
  if (error != 0) link_fail(link, strerror(error));
}

static void on_poll(uv_poll_t *handle, int status, int events) {
  redis_link *link = handle->data;
  /* libuv reports a socket error (POLLERR) as UV_EBADF; SO_ERROR holds the
   * real cause, such as ECONNREFUSED. */
  if (status < 0) {
    int error = 0;
    socklen_t len = sizeof error;
    getsockopt(link->sock->fd, SOL_SOCKET, SO_ERROR, &error, &len);
    link_fail(link, error != 0 ? strerror(error) : uv_strerror(status));
    return;
  }
  if (link->state == LINK_CONNECTING) {
    if (events & (UV_WRITABLE | UV_DISCONNECT)) connect_finished(link);
    return;
  }
  if ((events & UV_READABLE) && link_read(link) != 0) return;
  if (link->sock != NULL && (events & UV_WRITABLE)) {
    int error = link_flush(link);
    if (error != 0) link_fail(link, strerror(error));
  }
}

/* Opens a non-blocking socket and starts connecting it. Returns 0, or an
 * error text for link_fail. */
static const char *start_socket(redis_link *link) {
  redis_adapter *ad = link->adapter;
  char port[8];
  snprintf(port, sizeof port, "%d", ad->port);
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
  struct addrinfo *addresses = NULL;
  /* NOTE: getaddrinfo blocks the loop while a host name is resolved. IP
   * addresses and names in /etc/hosts return at once. */
  int rc = getaddrinfo(ad->host, port, &hints, &addresses);
  if (rc != 0) return gai_strerror(rc);

  int fd = socket(addresses->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    freeaddrinfo(addresses);
    return strerror(errno);
  }
  rc = connect(fd, addresses->ai_addr, addresses->ai_addrlen);
  int connect_errno = errno;
  freeaddrinfo(addresses);
  if (rc != 0 && connect_errno != EINPROGRESS) {
    close(fd);
    return strerror(connect_errno);
  }

  link_socket *sock = calloc(1, sizeof *sock);
  if (sock == NULL || uv_poll_init_socket(ad->loop, &sock->poll, fd) != 0) {
    free(sock);
    close(fd);
    return "cannot watch the socket";
  }
  sock->fd = fd;
  sock->poll.data = link;
  link->sock = sock;
  link->poll_events = UV_WRITABLE;
  uv_poll_start(&sock->poll, UV_WRITABLE, on_poll);
  return NULL;
}

static void link_connect(redis_link *link) {
  link->state = LINK_CONNECTING;
  const char *error = start_socket(link);
  if (error != NULL) link_fail(link, error);
}

/* ---- Adapter callbacks ---- */

static void drop_broadcast(redis_adapter *ad) {
  ad->stats.dropped++;
  uint64_t suppressed;
  if (!log_limiter_allow(&ad->drop_log, uv_now(ad->loop), &suppressed)) return;
  HARK_WARN("redis_broadcast_dropped", "reason=%s dropped=%llu suppressed=%llu",
            ad->pub.state == LINK_READY ? "output_buffer_full" : "not_connected",
            (unsigned long long)ad->stats.dropped, (unsigned long long)suppressed);
}

/* Appends one PUBLISH of an envelope to the channel named by `kind` and
 * `name`. The envelope is written straight into the output buffer. */
static int publish(redis_adapter *ad, char kind, const char *name, size_t name_len,
                   const char *topic, size_t topic_len, const hark_message *msg,
                   const char *dispatcher_name) {
  if (ad->node_name_invalid || dispatcher_name == NULL) return HARK_EINVAL;
  hark__envelope env = {.origin = ad->node_name,
                        .origin_len = ad->node_name_len,
                        .dispatcher = dispatcher_name,
                        .dispatcher_len = strlen(dispatcher_name),
                        .topic = topic,
                        .topic_len = topic_len,
                        .msg = *msg};
  size_t envelope_len = hark__envelope_size(&env);
  if (envelope_len == 0) return HARK_EINVAL;

  redis_link *link = &ad->pub;
  size_t channel_len = channel_size(ad, name, name_len);
  size_t need = COMMAND_OVERHEAD + channel_len + envelope_len;
  if (link->state != LINK_READY || link->out.len + need > MAX_PENDING_OUTPUT) {
    drop_broadcast(ad);
    return HARK_OK;
  }
  if (hark_buf_reserve(&link->out, need) != 0) return HARK_ENOMEM;

  /* NOTE: sharded mode sends every command over one connection. That works
   * on a standalone Redis 7 or behind a cluster-aware proxy, but MOVED
   * redirects of a Redis Cluster are not followed. */
  const char *command = ad->sharded ? "SPUBLISH" : "PUBLISH";
  char *p = link->out.data + link->out.len;
  p += write_header(p, '*', 3);
  p += write_bulk(p, command, strlen(command));
  p += write_header(p, '$', channel_len);
  p += channel_write(ad, kind, name, name_len, p);
  *p++ = '\r';
  *p++ = '\n';
  p += write_header(p, '$', envelope_len);
  p += hark__envelope_write(&env, (unsigned char *)p);
  *p++ = '\r';
  *p++ = '\n';
  link->out.len = (size_t)(p - link->out.data);

  ad->stats.published++;
  link_flush(link);
  return HARK_OK;
}

/* While the publisher link is down, a broadcast is dropped and counted, and
 * 0 is returned, so the local subscribers still receive it: delivery is
 * at-most-once, as with Phoenix.PubSub, and a Redis outage degrades a node to
 * a node alone rather than failing its own broadcasts. */
static int redis_broadcast(void *ctx, const char *topic, size_t topic_len, const hark_message *msg,
                           const char *dispatcher_name) {
  return publish(ctx, 't', topic, topic_len, topic, topic_len, msg, dispatcher_name);
}

static int redis_direct_broadcast(void *ctx, const char *node_name, const char *topic,
                                  size_t topic_len, const hark_message *msg,
                                  const char *dispatcher_name) {
  if (node_name == NULL) return HARK_EINVAL;
  return publish(ctx, 'n', node_name, strlen(node_name), topic, topic_len, msg, dispatcher_name);
}

/* Sends (S)SUBSCRIBE or (S)UNSUBSCRIBE for a topic when the subscriber link
 * has a connection; otherwise the next connection subscribes to every topic
 * with local subscribers. */
static void send_topic_command(redis_adapter *ad, const char *command, const char *topic,
                               size_t topic_len) {
  redis_link *link = &ad->sub;
  if (link->state != LINK_HANDSHAKE && link->state != LINK_READY) return;
  if (append_channel_command(link, command, 't', topic, topic_len) != 0) {
    /* The next reconnection repairs the subscriptions. */
    link_close_socket(link);
    link->state = LINK_IDLE;
    update_connected(ad);
    HARK_ERROR("redis_subscribe_failed", "command=%s error=\"out of memory\"", command);
    uv_timer_start(&link->retry_timer, on_retry, 0, 0);
    return;
  }
  link_flush(link);
}

static void redis_topic_added(void *ctx, const char *topic, size_t topic_len) {
  redis_adapter *ad = ctx;
  send_topic_command(ad, ad->sharded ? "SSUBSCRIBE" : "SUBSCRIBE", topic, topic_len);
}

static void redis_topic_removed(void *ctx, const char *topic, size_t topic_len) {
  redis_adapter *ad = ctx;
  send_topic_command(ad, ad->sharded ? "SUNSUBSCRIBE" : "UNSUBSCRIBE", topic, topic_len);
}

static void link_init(redis_adapter *ad, redis_link *link, const char *role, int is_subscriber) {
  link->adapter = ad;
  link->role = role;
  link->is_subscriber = is_subscriber;
  uv_timer_init(ad->loop, &link->retry_timer);
  link->retry_timer.data = link;
  ad->open_timers++;
}

static void redis_attach(void *ctx, hark_pubsub *ps) {
  redis_adapter *ad = ctx;
  ad->ps = ps;
  ad->node_name = hark_pubsub_node_name(ps);
  ad->node_name_len = strlen(ad->node_name);
  ad->rng_state = (uv_hrtime() ^ (uint64_t)(uintptr_t)ad) | 1;
  link_init(ad, &ad->sub, "subscriber", 1);
  link_init(ad, &ad->pub, "publisher", 0);

  if (ad->node_name_len > HARK_ENVELOPE_MAX_NAME) {
    ad->node_name_invalid = 1;
    HARK_ERROR("redis_adapter_disabled", "error=\"node name longer than %d bytes\"",
               HARK_ENVELOPE_MAX_NAME);
    return;
  }
  link_connect(&ad->sub);
  link_connect(&ad->pub);
}

static void adapter_free(redis_adapter *ad) {
  free(ad->prefix);
  free(ad);
}

static void timer_closed(uv_handle_t *handle) {
  redis_link *link = handle->data;
  redis_adapter *ad = link->adapter;
  if (--ad->open_timers == 0) adapter_free(ad);
}

/* Writes what the socket takes at once, so commands queued just before the
 * destroy usually reach Redis, then closes the socket. */
static void link_shutdown(redis_link *link) {
  if (link->state == LINK_HANDSHAKE || link->state == LINK_READY) link_flush(link);
  link_close_socket(link);
  link->state = LINK_IDLE;
  uv_timer_stop(&link->retry_timer);
  uv_close((uv_handle_t *)&link->retry_timer, timer_closed);
}

static void redis_destroy(void *ctx) {
  redis_adapter *ad = ctx;
  ad->ps = NULL;
  if (ad->open_timers == 0) {
    /* Never attached: no handle was made. */
    adapter_free(ad);
    return;
  }
  link_shutdown(&ad->sub);
  link_shutdown(&ad->pub);
}

/* ---- Public functions ---- */

static int parse_decimal(const char *s, size_t len, long max, long *out) {
  if (len == 0 || len > 10) return -1;
  long value = 0;
  for (size_t i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9') return -1;
    value = value * 10 + (s[i] - '0');
  }
  if (value > max) return -1;
  *out = value;
  return 0;
}

static int host_char_ok(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '-' || c == '_';
}

/* Splits "HOST[:PORT]" where HOST is a name, an IPv4 address or "[IPv6]". */
static const char *parse_host_port(const char *s, size_t len, char *host, size_t host_size,
                                   int *port) {
  const char *host_start = s;
  size_t host_len;
  const char *rest;
  if (len > 0 && s[0] == '[') {
    const char *close = memchr(s, ']', len);
    if (close == NULL) return "missing ']' after the IPv6 address";
    host_start = s + 1;
    host_len = (size_t)(close - host_start);
    rest = close + 1;
    if (host_len == 0 || host_len >= 64) return "invalid IPv6 address";
    char v6[64];
    unsigned char ignored[16];
    memcpy(v6, host_start, host_len);
    v6[host_len] = '\0';
    if (inet_pton(AF_INET6, v6, ignored) != 1) return "invalid IPv6 address";
  } else {
    const char *colon = memchr(s, ':', len);
    host_len = colon != NULL ? (size_t)(colon - s) : len;
    rest = s + host_len;
    if (colon != NULL && memchr(colon + 1, ':', len - host_len - 1) != NULL)
      return "IPv6 addresses must be written in brackets, as [::1]";
    if (host_len == 0) return "missing host";
    for (size_t i = 0; i < host_len; i++)
      if (!host_char_ok(s[i])) return "invalid character in the host";
  }
  if (host_len >= host_size) return "host too long";

  size_t rest_len = len - (size_t)(rest - s);
  long value = 6379;
  if (rest_len > 0) {
    if (rest[0] != ':') return "unexpected characters after the host";
    if (parse_decimal(rest + 1, rest_len - 1, 65535, &value) != 0 || value == 0)
      return "port must be a number from 1 to 65535";
  }
  memcpy(host, host_start, host_len);
  host[host_len] = '\0';
  *port = (int)value;
  return NULL;
}

static const char *parse_url(const char *url, char *host, size_t host_size, int *port, int *db) {
  static const char scheme[] = "redis://";
  if (url == NULL || host == NULL || port == NULL || db == NULL || host_size == 0)
    return "missing URL";
  if (strncmp(url, "rediss://", 9) == 0) return "TLS (rediss://) is not supported";
  if (strncmp(url, scheme, sizeof scheme - 1) != 0) return "URL must start with redis://";

  const char *authority = url + sizeof scheme - 1;
  size_t authority_len = strcspn(authority, "/?#@");
  const char *after = authority + authority_len;
  if (*after == '@' || memchr(authority, '@', strlen(authority)) != NULL)
    return "credentials in the URL are not supported";
  if (*after == '?' || *after == '#') return "query and fragment are not supported";

  const char *error = parse_host_port(authority, authority_len, host, host_size, port);
  if (error != NULL) return error;

  *db = -1;
  if (*after == '/' && after[1] != '\0') {
    long value;
    if (parse_decimal(after + 1, strlen(after + 1), 2147483647L, &value) != 0)
      return "database must be a number from 0 to 2147483647";
    *db = (int)value;
  }
  return NULL;
}

int hark_redis_url_parse(const char *url, char *host, size_t host_size, int *port, int *db,
                         const char **error) {
  const char *message = parse_url(url, host, host_size, port, db);
  if (error != NULL) *error = message;
  return message == NULL ? HARK_OK : HARK_EINVAL;
}

static int check_options(const hark_redis_options *options, const char **prefix) {
  *prefix = options->channel_prefix != NULL ? options->channel_prefix : DEFAULT_PREFIX;
  size_t len = strlen(*prefix);
  if (len == 0 || len > MAX_PREFIX_LEN) return HARK_EINVAL;
  for (size_t i = 0; i < len; i++)
    if (!byte_is_plain((unsigned char)(*prefix)[i])) return HARK_EINVAL;
  return HARK_OK;
}

int hark_redis_adapter_create(hark_pubsub_adapter *adapter, uv_loop_t *loop,
                              const hark_redis_options *options) {
  if (adapter == NULL || loop == NULL || options == NULL) return HARK_EINVAL;
  const char *prefix;
  if (check_options(options, &prefix) != HARK_OK) return HARK_EINVAL;

  redis_adapter *ad = calloc(1, sizeof *ad);
  if (ad == NULL) return HARK_ENOMEM;
  const char *error = NULL;
  if (hark_redis_url_parse(options->url, ad->host, sizeof ad->host, &ad->port, &ad->db, &error) !=
      HARK_OK) {
    HARK_ERROR("redis_url_invalid", "error=\"%s\"", error);
    free(ad);
    return HARK_EINVAL;
  }
  ad->prefix = strdup(prefix);
  if (ad->prefix == NULL) {
    free(ad);
    return HARK_ENOMEM;
  }

  ad->loop = loop;
  ad->prefix_len = strlen(prefix);
  ad->sharded = options->sharded != 0;
  ad->reconnect_min_ms = options->reconnect_min_ms ? options->reconnect_min_ms
                                                   : DEFAULT_RECONNECT_MIN_MS;
  ad->reconnect_max_ms = options->reconnect_max_ms ? options->reconnect_max_ms
                                                   : DEFAULT_RECONNECT_MAX_MS;
  if (ad->reconnect_max_ms < ad->reconnect_min_ms) ad->reconnect_max_ms = ad->reconnect_min_ms;

  *adapter = (hark_pubsub_adapter){.name = "redis",
                                   .ctx = ad,
                                   .broadcast = redis_broadcast,
                                   .direct_broadcast = redis_direct_broadcast,
                                   .topic_added = redis_topic_added,
                                   .topic_removed = redis_topic_removed,
                                   .attach = redis_attach,
                                   .destroy = redis_destroy};
  return HARK_OK;
}

void hark_redis_adapter_stats(void *adapter_ctx, hark_redis_stats *out) {
  const redis_adapter *ad = adapter_ctx;
  *out = ad->stats;
}
