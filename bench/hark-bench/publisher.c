/* The fan-out publisher: POST /api/broadcast over a few keep-alive HTTP
 * connections, each with at most one request in flight, at a fixed rate. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/buf.h"
#include "bench.h"

enum { MAX_PUBLISHERS = 256 };

/* One keep-alive connection. `in` collects the response bytes; it is freed
 * by bench_publish before it returns. */
typedef struct http_conn {
  int fd;
  int busy; /* a request is waiting for its response */
  hark_buf in;
} http_conn;

static int open_http(const bench_options *options) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;

  struct sockaddr_in remote = {.sin_family = AF_INET, .sin_port = htons((uint16_t)options->port)};
  inet_pton(AF_INET, options->host, &remote.sin_addr);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, (struct sockaddr *)&remote, sizeof remote) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

/* Parses one whole response from conn->in. Returns its status code and
 * removes it, or returns 0 while it is incomplete.
 * NOTE: only Content-Length bodies are read, as harkd's API sends them; a
 * chunked response would be misparsed. */
static int take_response(http_conn *conn) {
  char *end = memmem(conn->in.data, conn->in.len, "\r\n\r\n", 4);
  if (!end) return 0;

  size_t header_len = (size_t)(end + 4 - conn->in.data);
  size_t body_len = 0;
  char *length = memmem(conn->in.data, header_len, "Content-Length:", 15);
  if (!length) length = memmem(conn->in.data, header_len, "content-length:", 15);
  if (length) body_len = strtoul(length + 15, NULL, 10);
  if (conn->in.len < header_len + body_len) return 0;

  int status = 0;
  if (conn->in.len > 12) status = atoi(conn->in.data + 9);
  hark_buf_consume(&conn->in, header_len + body_len);
  return status > 0 ? status : 599;
}

static void reconnect(const bench_options *options, int epoll_fd, http_conn *conn) {
  epoll_ctl(epoll_fd, EPOLL_CTL_DEL, conn->fd, NULL);
  close(conn->fd);
  hark_buf_reset(&conn->in);
  conn->busy = 0;
  conn->fd = open_http(options);
  if (conn->fd < 0) return;

  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = conn};
  epoll_ctl(epoll_fd, EPOLL_CTL_ADD, conn->fd, &ev);
}

static void on_response_bytes(const bench_options *options, int epoll_fd, http_conn *conn,
                              bench_publish_result *result) {
  char chunk[4096];
  ssize_t n = recv(conn->fd, chunk, sizeof chunk, 0);
  if (n <= 0) {
    if (conn->busy) result->failed++;
    reconnect(options, epoll_fd, conn);
    return;
  }

  hark_buf_append(&conn->in, chunk, (size_t)n);
  int status;
  while ((status = take_response(conn)) != 0) {
    if (status == 200) result->ok++;
    else result->failed++;
    conn->busy = 0;
  }
}

static int send_broadcast(http_conn *conn, const char *topic, uint64_t seq, const char *pad) {
  char body[8192];
  int body_len = snprintf(body, sizeof body,
                          "{\"topic\":\"%s\",\"event\":\"msg\",\"payload\":" BENCH_TIME_KEY
                          "%lld,\"seq\":%llu,\"pad\":\"%s\"}}",
                          topic, (long long)bench_now_ns(), (unsigned long long)seq, pad);

  char request[8192 + 256];
  int len = snprintf(request, sizeof request,
                     "POST /api/broadcast HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
                     body_len, body);
  conn->busy = 1;
  return bench_write_all(conn->fd, request, (size_t)len);
}

static http_conn *free_conn(http_conn *conns, int count) {
  for (int i = 0; i < count; i++)
    if (conns[i].fd >= 0 && !conns[i].busy) return &conns[i];
  return NULL;
}

static int any_busy(const http_conn *conns, int count) {
  for (int i = 0; i < count; i++)
    if (conns[i].fd >= 0 && conns[i].busy) return 1;
  return 0;
}

int bench_publish(const bench_options *options, const char *topic, bench_publish_result *result) {
  memset(result, 0, sizeof *result);
  int count = options->publishers < MAX_PUBLISHERS ? options->publishers : MAX_PUBLISHERS;
  http_conn conns[MAX_PUBLISHERS] = {0};
  int epoll_fd = epoll_create1(0);
  for (int i = 0; i < count; i++) {
    conns[i].fd = open_http(options);
    if (conns[i].fd < 0) {
      fprintf(stderr, "hark-bench: connect to %s:%d for publishing failed: %s; is harkd running there?\n",
              options->host, options->port, strerror(errno));
      close(epoll_fd);
      return -1;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &conns[i]};
    epoll_ctl(epoll_fd, EPOLL_CTL_ADD, conns[i].fd, &ev);
  }

  char pad[4097];
  int pad_len = options->payload_bytes < 4096 ? options->payload_bytes : 4096;
  memset(pad, 'x', (size_t)pad_len);
  pad[pad_len] = '\0';

  /* Publishing stops at the end of the duration even when harkd responded
   * too slowly for all of them to go out; result->skipped counts the rest. */
  uint64_t total = (uint64_t)(options->rate * options->duration_s);
  int64_t start = bench_now_ns();
  int64_t end = start + (int64_t)(options->duration_s * 1e9);
  int64_t response_deadline = 0;
  while (result->sent < total || any_busy(conns, count)) {
    int64_t now = bench_now_ns();
    if (result->sent < total && now >= end) {
      result->skipped = total - result->sent;
      total = result->sent;
    }
    int64_t due = start + (int64_t)((double)result->sent * 1e9 / options->rate);
    http_conn *conn = result->sent < total && now >= due ? free_conn(conns, count) : NULL;
    if (conn) {
      if (result->sent == 0) result->first_ns = now;
      if (now - due > 1000000) result->late++;
      if (send_broadcast(conn, topic, result->sent, pad) != 0) {
        result->failed++;
        reconnect(options, epoll_fd, conn);
      }
      result->sent++;
      result->last_ns = now;
      continue;
    }

    /* After the last request, wait at most 10 s for the responses. */
    if (result->sent >= total) {
      if (response_deadline == 0) response_deadline = now + 10000000000LL;
      if (now > response_deadline) break;
    }

    /* Sleep until the next publish is due, or until a response frees a
     * connection when every one is busy. */
    int64_t wait_ns = result->sent >= total || now >= due ? 10000000 : due - now;
    if (wait_ns > 10000000) wait_ns = 10000000;
    struct timespec timeout = {.tv_sec = 0, .tv_nsec = (long)wait_ns};
    struct epoll_event events[MAX_PUBLISHERS];
    int n = epoll_pwait2(epoll_fd, events, MAX_PUBLISHERS, &timeout, NULL);
    for (int i = 0; i < n; i++) on_response_bytes(options, epoll_fd, events[i].data.ptr, result);
  }

  for (int i = 0; i < count; i++) {
    if (conns[i].busy) result->failed++;
    if (conns[i].fd >= 0) close(conns[i].fd);
    hark_buf_free(&conns[i].in);
  }
  close(epoll_fd);
  return 0;
}
