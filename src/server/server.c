/* Connection management: accept, read, batched writes, idle sweeps and the
 * graceful shutdown. Protocol handling lives in http.c, websocket.c and
 * channels.c. */
#include "server/server.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/log.h"
#include "server/conn.h"

#define SHUTDOWN_GRACE_MS 3000
/* How long a closing connection waits for the peer to close its side. */
#define LINGER_MS 2000
/* The memory around one queued frame: its allocation header and queue slot. */
#define FRAME_OVERHEAD_BYTES 64
#define CLIENT_LOG_LINES_PER_SECOND 50

void hark_server_config_defaults(hark_server_config *config) {
  memset(config, 0, sizeof *config);
  config->host = "127.0.0.1";
  config->port = 4000;
  config->max_message_bytes = 1024 * 1024;
  config->idle_timeout_ms = 60000;
  config->max_channels = 100;
  config->max_header_bytes = 16 * 1024;
  config->max_body_bytes = 1024 * 1024;
  config->max_output_bytes = 16 * 1024 * 1024;
  config->max_connections = 100000;
  config->max_connections_per_ip = 1000;
  config->handshake_timeout_ms = 10000;
  config->max_messages_per_second = HARK_DEFAULT_MAX_MESSAGES_PER_SECOND;
  config->max_topic_bytes = HARK_DEFAULT_MAX_TOPIC_BYTES;
  config->max_event_bytes = HARK_DEFAULT_MAX_EVENT_BYTES;
}

uint64_t hark_now_ms(const hark_server *server) { return uv_now(server->loop); }

static int shared_init(hark_server_shared *shared) {
  memset(shared, 0, sizeof *shared);
  atomic_init(&shared->connections, 0);
  return pthread_mutex_init(&shared->lock, NULL) == 0 ? 0 : -1;
}

static void shared_fini(hark_server_shared *shared) {
  hark_ip_table_free(&shared->ip_counts);
  pthread_mutex_destroy(&shared->lock);
}

hark_server_shared *hark_server_shared_create(void) {
  hark_server_shared *shared = malloc(sizeof *shared);
  if (shared && shared_init(shared) != 0) {
    free(shared);
    return NULL;
  }
  return shared;
}

void hark_server_shared_free(hark_server_shared *shared) {
  if (!shared) return;
  shared_fini(shared);
  free(shared);
}

/* Adds a connection from `ip` and returns the address's count, or 0 when
 * out of memory. */
static uint32_t ip_count_add(hark_server *server, const hark_ip_key *ip) {
  pthread_mutex_lock(&server->shared->lock);
  uint32_t count = hark_ip_table_add(&server->shared->ip_counts, ip);
  pthread_mutex_unlock(&server->shared->lock);
  return count;
}

static void ip_count_remove(hark_server *server, const hark_ip_key *ip) {
  pthread_mutex_lock(&server->shared->lock);
  hark_ip_table_remove(&server->shared->ip_counts, ip);
  pthread_mutex_unlock(&server->shared->lock);
}

/* The window is shared by every worker, so the limit applies to the whole process. */
int hark_server_log_allowed(hark_server *server) {
  hark_server_shared *shared = server->shared;
  uint64_t now = hark_now_ms(server);
  unsigned suppressed = 0;
  int allowed = 0;

  pthread_mutex_lock(&shared->lock);
  /* Each loop caches its own time, so another worker's window may start a
   * little after `now`. */
  if (now >= shared->log_window_ms && now - shared->log_window_ms >= 1000) {
    suppressed = shared->log_suppressed;
    shared->log_window_ms = now;
    shared->log_lines = 0;
    shared->log_suppressed = 0;
  }
  if (shared->log_lines < CLIENT_LOG_LINES_PER_SECOND) {
    shared->log_lines++;
    allowed = 1;
  } else {
    shared->log_suppressed++;
  }
  pthread_mutex_unlock(&shared->lock);

  if (suppressed > 0)
    HARK_WARN("log_lines_suppressed", "count=%u reason=\"more than %d client error lines per second\"",
              suppressed, CLIENT_LOG_LINES_PER_SECOND);
  return allowed;
}

static void conn_list_remove(hark_server *server, hark_conn *conn) {
  if (conn->prev) conn->prev->next = conn->next;
  else server->conns = conn->next;
  if (conn->next) conn->next->prev = conn->prev;
  conn->prev = conn->next = NULL;
}

static void dirty_list_remove(hark_server *server, hark_conn *conn) {
  hark_conn **link = &server->dirty;
  while (*link && *link != conn) link = &(*link)->dirty_next;
  if (*link) *link = conn->dirty_next;
  conn->dirty = 0;
}

static void release_frames(hark_shared_bytes **frames, size_t count) {
  for (size_t i = 0; i < count; i++) hark_shared_bytes_unref(frames[i]);
}

static void maybe_finish_shutdown(hark_server *server) {
  if (!server->shutting_down || server->conn_count > 0 || !server->shutdown_done) return;

  void (*done)(hark_server *, void *) = server->shutdown_done;
  server->shutdown_done = NULL;
  uv_timer_stop(&server->shutdown_timer);
  HARK_INFO("shutdown_complete", "connections=0");
  done(server, server->shutdown_arg);
}

/* The last step of a connection's life: everything it owns is freed here. */
static void on_conn_closed(uv_handle_t *handle) {
  hark_conn *conn = (hark_conn *)handle;
  hark_server *server = conn->server;

  if (conn->dirty) dirty_list_remove(server, conn);
  release_frames(conn->pending, conn->pending_count);
  release_frames(conn->inflight, conn->inflight_count);
  free(conn->pending);
  free(conn->inflight);
  hark_buf_free(&conn->input);
  hark_ws_parser_free(&conn->ws);
  free(conn->params);
  free(conn);

  server->conn_count--;
  atomic_fetch_sub(&server->shared->connections, 1);
  maybe_finish_shutdown(server);
}

void hark_conn_abort(hark_conn *conn) {
  if (conn->closed) return;
  conn->closed = 1;
  conn->state = HARK_CONN_CLOSING;

  HARK_DEBUG("connection_closed", "conn=%llu peer=%s", (unsigned long long)conn->id, hark_conn_peer(conn));
  hark_channels_leave_all(conn);
  hark_api_cancel_pending(conn);
  hark_http_free(conn);
  if (conn->ip_counted) ip_count_remove(conn->server, &conn->ip);
  conn->ip_counted = 0;
  conn_list_remove(conn->server, conn);
  uv_read_stop((uv_stream_t *)&conn->tcp);
  uv_close((uv_handle_t *)&conn->tcp, on_conn_closed);
}

/* After our FIN the connection lingers, reading and discarding, until the
 * peer closes its side or the sweeper's linger deadline passes. Closing at
 * once could make the kernel reply to unread input with a reset, which can
 * destroy our close frame before the peer reads it. */
static void on_shutdown_written(uv_shutdown_t *req, int status) {
  hark_conn *conn = req->data;
  free(req);
  if (status < 0) hark_conn_abort(conn);
}

/* Sends our FIN once. flush_conn can run twice with nothing queued, from a
 * write callback and then from the flusher. A second uv_shutdown fails with
 * ENOTCONN, and aborting then resets the connection, so the peer would lose
 * the frames it has not read yet. */
static void half_close(hark_conn *conn) {
  if (conn->shutdown_started) return;
  conn->shutdown_started = 1;
  uv_shutdown_t *req = malloc(sizeof *req);
  if (!req || uv_shutdown(req, (uv_stream_t *)&conn->tcp, on_shutdown_written) != 0) {
    free(req);
    hark_conn_abort(conn);
    return;
  }
  req->data = conn;
}

void hark_conn_finish(hark_conn *conn) {
  if (conn->closed || conn->state == HARK_CONN_CLOSING) return;
  conn->state = HARK_CONN_CLOSING;
  conn->closing_since_ms = hark_now_ms(conn->server);
  hark_channels_leave_all(conn);
  if (conn->awaiting_response) {
    /* The linger reads what the peer still sends. */
    hark_api_cancel_pending(conn);
    hark_conn_resume_reading(conn);
  }

  /* Half-close now if nothing is queued; otherwise the write path does it. */
  conn->shutdown_after_write = 1;
  if (!conn->writing && conn->pending_count == 0 && !conn->dirty) half_close(conn);
}

/* Returns what a queued frame counts against max_output_bytes: its bytes
 * plus the allocation and queue slot around it. A flood of tiny frames is so
 * bounded by real memory, not by payload bytes alone. */
static size_t frame_cost(const hark_shared_bytes *bytes) {
  return bytes->len + FRAME_OVERHEAD_BYTES;
}

static void mark_dirty(hark_conn *conn) {
  if (conn->dirty) return;
  conn->dirty = 1;
  conn->dirty_next = conn->server->dirty;
  conn->server->dirty = conn;
}

void hark_conn_send(hark_conn *conn, hark_shared_bytes *bytes) {
  if (conn->closed || conn->shutdown_after_write) {
    hark_shared_bytes_unref(bytes);
    return;
  }

  /* A socket that does not read what it is sent is closed rather than
   * allowed to hold unbounded memory. The close waits for the next flush, so
   * a dispatcher that is looping over subscribers never finds a channel
   * freed under it. */
  size_t cost = frame_cost(bytes);
  if (conn->overflowed || conn->queued_bytes + cost > conn->server->config.max_output_bytes) {
    hark_shared_bytes_unref(bytes);
    if (!conn->overflowed)
      HARK_CLIENT_WARN(conn->server, "slow_consumer_closed", "conn=%llu peer=%s queued_bytes=%zu limit=%zu",
                (unsigned long long)conn->id, hark_conn_peer(conn), conn->queued_bytes,
                conn->server->config.max_output_bytes);
    conn->overflowed = 1;
    mark_dirty(conn);
    return;
  }

  if (conn->pending_count == conn->pending_cap) {
    size_t cap = conn->pending_cap ? conn->pending_cap * 2 : 4;
    hark_shared_bytes **grown = realloc(conn->pending, cap * sizeof *grown);
    if (!grown) {
      hark_shared_bytes_unref(bytes);
      HARK_ERROR("out_of_memory", "conn=%llu what=output_queue", (unsigned long long)conn->id);
      conn->overflowed = 1;
      mark_dirty(conn);
      return;
    }
    conn->pending = grown;
    conn->pending_cap = cap;
  }

  conn->pending[conn->pending_count++] = bytes;
  conn->queued_bytes += cost;
  mark_dirty(conn);
}

int hark_conn_send_copy(hark_conn *conn, const void *data, size_t len) {
  hark_shared_bytes *bytes = hark_shared_bytes_new(len);
  if (!bytes) return -1;
  memcpy(bytes->data, data, len);
  hark_conn_send(conn, bytes);
  return 0;
}

static void flush_conn(hark_conn *conn);

static void on_written(uv_write_t *req, int status) {
  hark_conn *conn = req->data;
  free(req);
  for (size_t i = 0; i < conn->inflight_count; i++) conn->queued_bytes -= frame_cost(conn->inflight[i]);
  release_frames(conn->inflight, conn->inflight_count);
  conn->inflight_count = 0;
  conn->writing = 0;

  /* An idle connection keeps no queue arrays; a busy one makes one small
   * allocation per write, next to the write's own system call. */
  free(conn->inflight);
  conn->inflight = NULL;
  conn->inflight_cap = 0;
  if (conn->closed) return;

  if (status < 0) {
    HARK_DEBUG("write_failed", "conn=%llu error=%s", (unsigned long long)conn->id,
               uv_err_name(status));
    hark_conn_abort(conn);
    return;
  }
  flush_conn(conn);
}

/* Hands every queued frame of `conn` to one uv_write (one writev). */
static void flush_conn(hark_conn *conn) {
  if (conn->closed) return;
  if (conn->overflowed) {
    hark_conn_abort(conn);
    return;
  }
  if (conn->writing) return;
  if (conn->pending_count == 0) {
    if (conn->shutdown_after_write) half_close(conn);
    return;
  }

  uv_buf_t stack_bufs[64];
  uv_buf_t *bufs = stack_bufs;
  if (conn->pending_count > 64) {
    bufs = malloc(conn->pending_count * sizeof *bufs);
    if (!bufs) {
      hark_conn_abort(conn);
      return;
    }
  }
  for (size_t i = 0; i < conn->pending_count; i++)
    bufs[i] = uv_buf_init(conn->pending[i]->data, (unsigned)conn->pending[i]->len);

  /* The pending and in-flight arrays swap roles, so no frame is copied. */
  hark_shared_bytes **spare = conn->inflight;
  size_t spare_cap = conn->inflight_cap;
  conn->inflight = conn->pending;
  conn->inflight_cap = conn->pending_cap;
  conn->inflight_count = conn->pending_count;
  conn->pending = spare;
  conn->pending_cap = spare_cap;
  conn->pending_count = 0;

  /* The request lives only while a write is in flight, so an idle
   * connection does not carry one. */
  uv_write_t *req = malloc(sizeof *req);
  int rc = req ? 0 : UV_ENOMEM;
  conn->writing = 1;
  if (req) {
    req->data = conn;
    rc = uv_write(req, (uv_stream_t *)&conn->tcp, bufs, (unsigned)conn->inflight_count, on_written);
  }
  if (bufs != stack_bufs) free(bufs);
  if (rc != 0) {
    free(req);
    conn->writing = 0;
    HARK_DEBUG("write_failed", "conn=%llu error=%s", (unsigned long long)conn->id, uv_err_name(rc));
    hark_conn_abort(conn);
  }
}

/* Runs once per loop iteration, before the loop blocks: each socket with
 * queued frames gets at most one writev. */
static void on_flush(uv_prepare_t *handle) {
  hark_server *server = handle->data;
  while (server->dirty) {
    hark_conn *conn = server->dirty;
    server->dirty = conn->dirty_next;
    conn->dirty = 0;
    conn->dirty_next = NULL;
    flush_conn(conn);
  }
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf) {
  hark_conn *conn = (hark_conn *)handle;
  (void)suggested;
  *buf = uv_buf_init(conn->server->read_buffer, sizeof conn->server->read_buffer);
}

/* Input is parsed straight from the server's shared read buffer. Only the
 * bytes of an incomplete request or frame are copied into conn->input, so an
 * idle connection keeps no read buffer. */
void hark_conn_feed(hark_conn *conn, char *data, size_t len) {
  /* A closing connection only drains what the peer still sends. */
  if (conn->state == HARK_CONN_CLOSING || conn->closed) return;

  conn->last_read_ms = hark_now_ms(conn->server);
  if (conn->input.len > 0) {
    if (hark_buf_append(&conn->input, data, len) != 0) {
      HARK_ERROR("out_of_memory", "conn=%llu what=input", (unsigned long long)conn->id);
      hark_conn_abort(conn);
      return;
    }
    data = conn->input.data;
    len = conn->input.len;
  }

  if (conn->state == HARK_CONN_HTTP) hark_http_on_data(conn, data, len);
  else if (conn->state == HARK_CONN_WS) hark_ws_on_data(conn, data, len);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

void hark_conn_pause_reading(hark_conn *conn) {
  if (!conn->closed) uv_read_stop((uv_stream_t *)&conn->tcp);
}

void hark_conn_resume_reading(hark_conn *conn) {
  if (!conn->closed) uv_read_start((uv_stream_t *)&conn->tcp, on_alloc, on_read);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  hark_conn *conn = (hark_conn *)stream;
  if (nread == 0) return;
  if (nread < 0) {
    if (nread != UV_EOF)
      HARK_DEBUG("read_failed", "conn=%llu error=%s", (unsigned long long)conn->id,
                 uv_err_name((int)nread));
    hark_conn_abort(conn);
    return;
  }
  hark_conn_feed(conn, buf->base, (size_t)nread);
}

/* Stores the peer's address key and port. The text form is made only when
 * a log line needs it, so an idle connection does not keep it. */
static void read_peer(hark_conn *conn) {
  struct sockaddr_storage addr;
  int len = sizeof addr;
  memset(&conn->ip, 0, sizeof conn->ip);
  conn->peer_port = 0;
  if (uv_tcp_getpeername(&conn->tcp, (struct sockaddr *)&addr, &len) != 0) return;
  if (addr.ss_family == AF_INET6) {
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&addr;
    conn->peer_port = ntohs(a6->sin6_port);
    memcpy(conn->ip.bytes, &a6->sin6_addr, 16);
  } else {
    struct sockaddr_in *a4 = (struct sockaddr_in *)&addr;
    conn->peer_port = ntohs(a4->sin_port);
    conn->ip.bytes[10] = conn->ip.bytes[11] = 0xff;
    memcpy(conn->ip.bytes + 12, &a4->sin_addr, 4);
  }
}

/* An IPv4-mapped key is shown as IPv4, as the client connected. */
const char *hark_conn_peer(const hark_conn *conn) {
  static _Thread_local char text[INET6_ADDRSTRLEN + 8];
  if (conn->detached) return "detached";

  static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  char host[INET6_ADDRSTRLEN] = "?";
  if (memcmp(conn->ip.bytes, mapped, sizeof mapped) == 0)
    uv_inet_ntop(AF_INET, conn->ip.bytes + 12, host, sizeof host);
  else
    uv_inet_ntop(AF_INET6, conn->ip.bytes, host, sizeof host);
  snprintf(text, sizeof text, "%s:%u", host, (unsigned)conn->peer_port);
  return text;
}

/* Checks the connection limits for a new connection. Returns NULL when it
 * may stay, or the reason it must be turned away. */
static const char *admit(hark_server *server, hark_conn *conn) {
  if (atomic_load(&server->shared->connections) > server->config.max_connections)
    return "too many connections";
  uint32_t count = ip_count_add(server, &conn->ip);
  if (count == 0) return "out of memory";
  conn->ip_counted = 1;
  if (count > server->config.max_connections_per_ip) return "too many connections from this address";
  return NULL;
}

/* Allocates a connection with an initialized (unconnected) TCP handle and
 * links it into the server's list. */
static hark_conn *conn_new(hark_server *server) {
  hark_conn *conn = calloc(1, sizeof *conn);
  if (!conn) return NULL;
  conn->server = server;
  /* Ids come from the shared counter, so they are unique across workers. */
  conn->id = atomic_fetch_add(&server->shared->next_conn_id, 1) + 1;
  uv_tcp_init(server->loop, &conn->tcp);
  server->conn_count++;
  atomic_fetch_add(&server->shared->connections, 1);
  conn->next = server->conns;
  if (server->conns) server->conns->prev = conn;
  server->conns = conn;
  return conn;
}

hark_conn *hark_conn_create_detached(hark_server *server) {
  hark_conn *conn = conn_new(server);
  if (!conn) return NULL;
  conn->detached = 1;
  conn->last_read_ms = conn->request_started_ms = hark_now_ms(server);
  if (hark_http_start(conn) != 0) {
    hark_conn_abort(conn);
    return NULL;
  }
  return conn;
}

static void on_connection(uv_stream_t *listener, int status) {
  hark_server *server = listener->data;
  if (status < 0) {
    HARK_CLIENT_WARN(server, "accept_failed", "error=%s", uv_err_name(status));
    return;
  }

  hark_conn *conn = conn_new(server);
  if (!conn) {
    HARK_ERROR("out_of_memory", "what=connection");
    return;
  }

  int rc = uv_accept(listener, (uv_stream_t *)&conn->tcp);
  if (rc != 0 || hark_http_start(conn) != 0) {
    HARK_CLIENT_WARN(server, "accept_failed", "error=%s", rc ? uv_err_name(rc) : "out of memory");
    hark_conn_abort(conn);
    return;
  }
  uv_tcp_nodelay(&conn->tcp, 1);
  read_peer(conn);
  conn->last_read_ms = conn->request_started_ms = hark_now_ms(server);
  HARK_DEBUG("connection_opened", "conn=%llu peer=%s worker=%u", (unsigned long long)conn->id,
             hark_conn_peer(conn), server->worker);
  uv_read_start((uv_stream_t *)&conn->tcp, on_alloc, on_read);

  const char *rejection = admit(server, conn);
  if (rejection) {
    HARK_CLIENT_WARN(server, "connection_rejected", "conn=%llu peer=%s status=503 reason=\"%s\"",
                     (unsigned long long)conn->id, hark_conn_peer(conn), rejection);
    conn->close_after_response = 1;
    hark_http_respond_error(conn, 503, rejection, "Retry-After: 5\r\n");
    hark_conn_finish(conn);
  }
}

/* Closes WebSockets that have sent nothing for idle_timeout_ms, and HTTP
 * connections idle for as long (keep-alive or a stalled request). */
static void on_sweep(uv_timer_t *timer) {
  hark_server *server = timer->data;
  uint64_t now = hark_now_ms(server);
  hark_conn *conn = server->conns;
  while (conn) {
    hark_conn *next = conn->next;
    if (conn->state == HARK_CONN_CLOSING) {
      if (now - conn->closing_since_ms >= LINGER_MS) hark_conn_abort(conn);
    } else if (conn->state == HARK_CONN_HTTP && conn->request_started_ms &&
               now - conn->request_started_ms >= server->config.handshake_timeout_ms) {
      HARK_CLIENT_INFO(server, "request_timeout", "conn=%llu peer=%s timeout_ms=%llu",
                       (unsigned long long)conn->id, hark_conn_peer(conn),
                       (unsigned long long)server->config.handshake_timeout_ms);
      conn->close_after_response = 1;
      hark_http_respond_error(conn, 408, "request not completed in time", NULL);
      hark_conn_finish(conn);
    } else if (now - conn->last_read_ms >= server->config.idle_timeout_ms) {
      HARK_CLIENT_INFO(server, "idle_timeout", "conn=%llu peer=%s idle_ms=%llu", (unsigned long long)conn->id,
                hark_conn_peer(conn), (unsigned long long)(now - conn->last_read_ms));
      if (conn->state == HARK_CONN_WS) hark_ws_close(conn, HARK_WS_CLOSE_GOING_AWAY, "idle timeout");
      else hark_conn_abort(conn);
    }
    conn = next;
  }
}

hark_server *hark_server_create(uv_loop_t *loop, hark_pubsub *pubsub,
                                const hark_server_config *config) {
  hark_server *server = calloc(1, sizeof *server);
  if (!server) return NULL;
  server->loop = loop;
  server->pubsub = pubsub;
  server->config = *config;
  server->worker = hark_pubsub_group_member(pubsub);
  server->is_home = server->worker == 0;
  server->shared = config->shared ? config->shared : &server->own_shared;
  if (!config->shared && shared_init(&server->own_shared) != 0) {
    free(server);
    return NULL;
  }
  hark_http_settings_init(&server->http_settings);
  hark_channels_init_dispatcher(server);

  uv_prepare_init(loop, &server->flusher);
  server->flusher.data = server;
  uv_prepare_start(&server->flusher, on_flush);
  uv_timer_init(loop, &server->sweeper);
  server->sweeper.data = server;
  uv_timer_init(loop, &server->shutdown_timer);
  server->shutdown_timer.data = server;
  return server;
}

/* Binds a socket with SO_REUSEPORT, so the servers of every worker can
 * listen on the same port. Returns 0 or a libuv error code. */
static int bind_reuse_port(uv_tcp_t *listener, const struct sockaddr *addr) {
  socklen_t len = addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
  int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return uv_translate_sys_error(errno);
  int on = 1;
  int rc = 0;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) != 0 ||
      setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) != 0 || bind(fd, addr, len) != 0)
    rc = uv_translate_sys_error(errno);
  if (rc == 0) rc = uv_tcp_open(listener, fd);
  if (rc != 0) close(fd);
  return rc;
}

/* Binds the listener. Workers share one port, and the first worker binds it
 * once without sharing. So a port bound by another process fails with
 * EADDRINUSE instead of being shared, and port 0 becomes one real port for
 * every worker. */
static int bind_listener(hark_server *server, struct sockaddr_storage *addr) {
  if (!server->config.shared) return uv_tcp_bind(&server->listener, (struct sockaddr *)addr, 0);

  if (server->is_home) {
    uv_tcp_t probe;
    uv_tcp_init(server->loop, &probe);
    int rc = uv_tcp_bind(&probe, (struct sockaddr *)addr, 0);
    if (rc == 0) rc = uv_listen((uv_stream_t *)&probe, 1, NULL);
    int len = sizeof *addr;
    if (rc == 0) rc = uv_tcp_getsockname(&probe, (struct sockaddr *)addr, &len);
    uv_close((uv_handle_t *)&probe, NULL);
    uv_run(server->loop, UV_RUN_NOWAIT);
    if (rc != 0) return rc;
  }
  return bind_reuse_port(&server->listener, (struct sockaddr *)addr);
}

int hark_server_listen(hark_server *server) {
  struct sockaddr_storage addr;
  int rc = uv_ip4_addr(server->config.host, server->config.port, (struct sockaddr_in *)&addr);
  if (rc != 0)
    rc = uv_ip6_addr(server->config.host, server->config.port, (struct sockaddr_in6 *)&addr);
  if (rc != 0) return rc;

  uv_tcp_init(server->loop, &server->listener);
  server->listener.data = server;
  server->listening = 1;
  rc = bind_listener(server, &addr);
  if (rc == 0) rc = uv_listen((uv_stream_t *)&server->listener, 1024, on_connection);
  if (rc != 0) return rc;

  int len = sizeof addr;
  uv_tcp_getsockname(&server->listener, (struct sockaddr *)&addr, &len);
  server->port = ntohs(((struct sockaddr_in *)&addr)->sin_port);

  /* Sweep often enough that a socket is closed within about a quarter of
   * the timeout after it expires. */
  uint64_t shortest = server->config.idle_timeout_ms < server->config.handshake_timeout_ms
                          ? server->config.idle_timeout_ms
                          : server->config.handshake_timeout_ms;
  uint64_t period = shortest / 4;
  if (period < 10) period = 10;
  if (period > 1000) period = 1000;
  uv_timer_start(&server->sweeper, on_sweep, period, period);
  return 0;
}

int hark_server_port(const hark_server *server) { return server->port; }

static void on_shutdown_deadline(uv_timer_t *timer) {
  hark_server *server = timer->data;
  HARK_WARN("shutdown_forced", "connections=%zu grace_ms=%d", server->conn_count, SHUTDOWN_GRACE_MS);
  hark_conn *conn = server->conns;
  while (conn) {
    hark_conn *next = conn->next;
    hark_conn_abort(conn);
    conn = next;
  }
}

void hark_server_shutdown(hark_server *server, void (*done)(hark_server *, void *), void *arg) {
  server->shutting_down = 1;
  server->shutdown_done = done;
  server->shutdown_arg = arg;
  HARK_INFO("shutdown_started", "connections=%zu", server->conn_count);

  if (server->listening) {
    uv_close((uv_handle_t *)&server->listener, NULL);
    server->listening = 0;
  }
  hark_conn *conn = server->conns;
  while (conn) {
    hark_conn *next = conn->next;
    if (conn->state == HARK_CONN_WS) hark_ws_close(conn, HARK_WS_CLOSE_GOING_AWAY, "server shutting down");
    else if (conn->state == HARK_CONN_HTTP) hark_conn_abort(conn);
    conn = next;
  }

  uv_timer_start(&server->shutdown_timer, on_shutdown_deadline, SHUTDOWN_GRACE_MS, 0);
  maybe_finish_shutdown(server);
}

void hark_server_destroy(hark_server *server) {
  if (!server) return;
  uv_close((uv_handle_t *)&server->flusher, NULL);
  uv_close((uv_handle_t *)&server->sweeper, NULL);
  uv_close((uv_handle_t *)&server->shutdown_timer, NULL);
  if (server->shared == &server->own_shared) shared_fini(&server->own_shared);
  hark_channel_decoder_free(&server->decoder);
  hark_static_files_free(server);
  if (server->listening) uv_close((uv_handle_t *)&server->listener, NULL);
  /* The handles are embedded in `server`, so the loop must run their close
   * callbacks before the memory goes: run it once here. */
  uv_run(server->loop, UV_RUN_NOWAIT);
  free(server);
}
