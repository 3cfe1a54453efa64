/* A worker process: opens its share of the WebSocket connections with one
 * epoll loop, joins the topics, keeps the heartbeats going and counts what
 * arrives. It reports to the parent over a socketpair: once when every
 * connection is set up, and once after the measured phase has drained. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/buf.h"
#include "bench.h"
#include "server/ws_frame.h"

enum client_state { CLIENT_IDLE, CLIENT_CONNECTING, CLIENT_HANDSHAKE, CLIENT_OPEN, CLIENT_DEAD };

/* Churn connections cycle through these: a join is in flight, or the socket
 * is on the topic. */
enum churn_state { CHURN_OUT, CHURN_JOINING, CHURN_IN };

enum worker_phase { PHASE_SETUP, PHASE_READY, PHASE_RUN, PHASE_DRAIN, PHASE_DONE };

enum { MAX_CONNECT_RETRIES = 5, CONTROL_TAG = UINT32_MAX };

#define HEARTBEAT_INTERVAL_NS 30000000000LL
#define SETUP_TIMEOUT_NS 300000000000LL

/* One WebSocket connection. `in` contains an incomplete frame (or the handshake
 * response) between reads, and `out` the bytes the socket did not take yet.
 * Both are owned here and freed when the connection closes. */
typedef struct client {
  int fd;
  int state;
  int index;       /* global connection number */
  int retries;
  int joins_pending;
  int churn_state;
  uint32_t churn_join_ref;
  int64_t join_sent_ns;
  int64_t next_heartbeat_ns;
  uint64_t received;
  uint64_t next_ref;
  hark_buf in;
  hark_buf out;
} client;

/* The worker's state: one per process, so it is a file-scope variable. */
static struct {
  const bench_options *options;
  int epoll_fd;
  int control;
  int first;
  int count;
  client *clients;
  int *connect_queue; /* slots waiting for a connect, used as a stack */
  int queued;
  int in_flight;
  int settled; /* connections whose setup succeeded or finally failed */
  int phase;
  int64_t setup_started_ns;
  int64_t phase_started_ns;
  int64_t last_receipt_ns;
  int64_t drain_deadline_ns;
  uint64_t expected_per_member;
  uint64_t actions_done; /* rooms pushes or churn joins in this phase */
  int cursor;            /* next client for a push or a churn join */
  uint64_t churn_counter;
  uint32_t mask_state;
  hark_buf frame; /* scratch buffer for encoding */
  bench_worker_stats stats;
  char scratch[1 << 16];
} w;

static int is_churner(int index) {
  const bench_options *o = w.options;
  return o->scenario == BENCH_CHURN && index >= o->connections - o->churners;
}

static void topic_name(const client *c, int k, char *out, size_t cap) {
  const bench_options *o = w.options;
  switch (o->scenario) {
  case BENCH_ROOMS:
    snprintf(out, cap, "room:%d", c->index / o->room_size);
    break;
  case BENCH_CHURN:
    snprintf(out, cap, "%s", BENCH_CHURN_TOPIC);
    break;
  case BENCH_FANOUT:
    if (k == 0) snprintf(out, cap, "%s", BENCH_FANOUT_TOPIC);
    else snprintf(out, cap, "bench:extra:%d", k);
    break;
  default:
    snprintf(out, cap, "bench:idle:%d", k);
  }
}

static int topics_for(const client *c) {
  const bench_options *o = w.options;
  if (is_churner(c->index)) return 0;
  if (o->scenario == BENCH_ROOMS || o->scenario == BENCH_CHURN) return 1;
  return o->topics_per_conn;
}

static uint32_t next_mask(void) {
  w.mask_state ^= w.mask_state << 13;
  w.mask_state ^= w.mask_state >> 17;
  w.mask_state ^= w.mask_state << 5;
  return w.mask_state;
}

static void set_events(client *c, uint32_t events) {
  struct epoll_event ev = {.events = events, .data.u32 = (uint32_t)(c - w.clients)};
  epoll_ctl(w.epoll_fd, EPOLL_CTL_MOD, c->fd, &ev);
}

static void close_client(client *c) {
  if (c->fd >= 0) close(c->fd);
  c->fd = -1;
  c->state = CLIENT_DEAD;
  hark_buf_free(&c->in);
  hark_buf_free(&c->out);
}

/* Called when a connection ends before its setup finished: it goes back on
 * the queue, or counts as failed after MAX_CONNECT_RETRIES. */
static void fail_setup(client *c) {
  int was_connecting = c->state == CLIENT_CONNECTING || c->state == CLIENT_HANDSHAKE;
  close_client(c);
  if (was_connecting) w.in_flight--;

  if (c->retries < MAX_CONNECT_RETRIES) {
    c->retries++;
    c->state = CLIENT_IDLE;
    w.connect_queue[w.queued++] = (int)(c - w.clients);
    return;
  }
  w.stats.connect_failed++;
  w.settled++;
}

/* Handles a connection that ends after the upgrade. */
static void lose_client(client *c) {
  if (w.phase != PHASE_DONE) w.stats.closed_by_server++;
  if (c->joins_pending > 0) {
    w.stats.join_failed += (uint64_t)c->joins_pending;
    c->joins_pending = 0;
    w.settled++;
  }
  close_client(c);
}

static void send_bytes(client *c, const char *data, size_t len) {
  if (c->state == CLIENT_DEAD) return;

  if (c->out.len == 0) {
    ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);
    if (n == (ssize_t)len) return;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
      if (c->state == CLIENT_HANDSHAKE) fail_setup(c);
      else lose_client(c);
      return;
    }
    if (n > 0) {
      data += n;
      len -= (size_t)n;
    }
    set_events(c, EPOLLIN | EPOLLOUT);
  }
  hark_buf_append(&c->out, data, len);
}

/* Sends one V2 message as a masked text frame. */
static void send_message(client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void send_message(client *c, const char *fmt, ...) {
  char text[4096 + 256];
  va_list args;
  va_start(args, fmt);
  int len = vsnprintf(text, sizeof text, fmt, args);
  va_end(args);
  if (len < 0 || (size_t)len >= sizeof text) return;

  hark_buf_reset(&w.frame);
  hark_ws_encode_client_frame(&w.frame, 1, HARK_WS_OP_TEXT, text, (size_t)len, next_mask());
  send_bytes(c, w.frame.data, w.frame.len);
}

static void start_connect(client *c) {
  const bench_options *o = w.options;
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (c->fd < 0) {
    fprintf(stderr, "hark-bench: socket() failed: %s\n", strerror(errno));
    c->retries = MAX_CONNECT_RETRIES;
    c->state = CLIENT_IDLE;
    fail_setup(c);
    return;
  }

  /* The port is picked at connect() from the whole 4-tuple, so each source
   * address has its own ephemeral range. */
  int one = 1;
  setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
  struct sockaddr_in local = {.sin_family = AF_INET};
  local.sin_addr.s_addr = htonl(0x7f000002u + (uint32_t)(c->index % o->source_addrs));
  struct sockaddr_in remote = {.sin_family = AF_INET, .sin_port = htons((uint16_t)o->port)};
  inet_pton(AF_INET, o->host, &remote.sin_addr);

  c->state = CLIENT_CONNECTING;
  w.in_flight++;
  if (bind(c->fd, (struct sockaddr *)&local, sizeof local) != 0 ||
      (connect(c->fd, (struct sockaddr *)&remote, sizeof remote) != 0 && errno != EINPROGRESS)) {
    fail_setup(c);
    return;
  }
  struct epoll_event ev = {.events = EPOLLOUT, .data.u32 = (uint32_t)(c - w.clients)};
  epoll_ctl(w.epoll_fd, EPOLL_CTL_ADD, c->fd, &ev);
}

static void send_handshake(client *c) {
  int error = 0;
  socklen_t error_len = sizeof error;
  getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &error, &error_len);
  if (error != 0) {
    fail_setup(c);
    return;
  }

  char request[512];
  int len = snprintf(request, sizeof request,
                     "GET /socket/websocket?vsn=2.0.0&user_id=%s%d HTTP/1.1\r\n"
                     "Host: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n",
                     is_churner(c->index) ? "churn" : "member", c->index, w.options->host,
                     w.options->port);
  c->state = CLIENT_HANDSHAKE;
  set_events(c, EPOLLIN);
  send_bytes(c, request, (size_t)len);
}

static void send_setup_joins(client *c) {
  int topics = topics_for(c);
  c->joins_pending = topics;
  if (topics == 0) {
    w.settled++;
    return;
  }

  for (int k = 0; k < topics; k++) {
    char topic[64];
    topic_name(c, k, topic, sizeof topic);
    send_message(c, "[\"%d\",\"j%d\",\"%s\",\"phx_join\",{}]", k + 1, k + 1, topic);
  }
}

/* A V2 message split into its five elements. Strings point inside the frame
 * without their quotes; a null element has ptr NULL. */
typedef struct v2_span {
  const char *ptr;
  size_t len;
} v2_span;

/* Reads a null or a JSON string at *p. harkd writes refs, topics and events
 * in a canonical spelling, and the generator's own contain no escapes, so
 * escapes are skipped over but not decoded. */
static int read_element(const char **p, const char *end, v2_span *out) {
  const char *s = *p;
  if (end - s >= 4 && memcmp(s, "null", 4) == 0) {
    out->ptr = NULL;
    out->len = 0;
    *p = s + 4;
    return 0;
  }
  if (s >= end || *s != '"') return -1;

  const char *q = s + 1;
  while (q < end && *q != '"') q += *q == '\\' ? 2 : 1;
  if (q >= end) return -1;
  out->ptr = s + 1;
  out->len = (size_t)(q - s - 1);
  *p = q + 1;
  return 0;
}

static int split_v2(const char *data, size_t len, v2_span parts[4], const char **payload,
                    size_t *payload_len) {
  const char *p = data, *end = data + len;
  if (len < 2 || *p != '[' || end[-1] != ']') return -1;
  p++;

  for (int i = 0; i < 4; i++) {
    if (read_element(&p, end, &parts[i]) != 0 || p >= end || *p != ',') return -1;
    p++;
  }
  *payload = p;
  *payload_len = (size_t)(end - 1 - p);
  return 0;
}

static int span_is(v2_span span, const char *text) {
  return span.ptr && span.len == strlen(text) && memcmp(span.ptr, text, span.len) == 0;
}

static void on_setup_join_reply(client *c, int ok) {
  if (ok) w.stats.joined++;
  else w.stats.join_failed++;

  if (c->joins_pending > 0 && --c->joins_pending == 0) w.settled++;
}

static void on_reply(client *c, v2_span ref, const char *payload, size_t payload_len) {
  int ok = memmem(payload, payload_len, "\"status\":\"ok\"", 13) != NULL;
  if (!ref.ptr || ref.len == 0) return;

  switch (ref.ptr[0]) {
  case 'j':
    on_setup_join_reply(c, ok);
    break;
  case 'h':
    if (ok) w.stats.heartbeats_ok++;
    break;
  case 'p':
    if (ok) {
      w.stats.pushes_ok++;
      w.stats.expected_rooms += (uint64_t)(w.options->room_size - 1);
    }
    break;
  case 'c':
    if (c->churn_state != CHURN_JOINING) break;
    c->churn_state = ok ? CHURN_IN : CHURN_OUT;
    if (ok) {
      w.stats.churn_joins_ok++;
      bench_hist_add(&w.stats.latency, (uint64_t)(bench_now_ns() - c->join_sent_ns) / 1000);
    }
    break;
  default:
    break;
  }
}

/* Records a broadcast that carries a publish time. */
static void on_timed_broadcast(client *c, const char *payload, size_t payload_len) {
  size_t key_len = strlen(BENCH_TIME_KEY);
  if (payload_len <= key_len || memcmp(payload, BENCH_TIME_KEY, key_len) != 0) return;

  int64_t sent_ns = 0;
  for (size_t i = key_len; i < payload_len && payload[i] >= '0' && payload[i] <= '9'; i++)
    sent_ns = sent_ns * 10 + (payload[i] - '0');

  int64_t now = bench_now_ns();
  c->received++;
  w.stats.delivered++;
  w.last_receipt_ns = now;
  bench_hist_add(&w.stats.latency, now > sent_ns ? (uint64_t)(now - sent_ns) / 1000 : 0);
}

static void on_text(client *c, const char *data, size_t len) {
  v2_span parts[4];
  const char *payload;
  size_t payload_len;
  if (split_v2(data, len, parts, &payload, &payload_len) != 0) return;

  v2_span event = parts[3];
  if (span_is(event, "phx_reply")) on_reply(c, parts[1], payload, payload_len);
  else if (span_is(event, "presence_diff")) w.stats.presence_diffs++;
  else if (span_is(event, "presence_state")) w.stats.presence_states++;
  else if (!parts[0].ptr && !parts[1].ptr) on_timed_broadcast(c, payload, payload_len);
}

/* Parses whole server frames (unmasked) from data. Returns the bytes consumed;
 * a partial frame at the end is left for the next read. */
static size_t consume_frames(client *c, char *data, size_t len) {
  size_t used = 0;
  while (c->state == CLIENT_OPEN && len - used >= 2) {
    const uint8_t *h = (const uint8_t *)data + used;
    size_t header = 2, payload_len = h[1] & 0x7f;
    if (payload_len == 126) {
      header = 4;
      if (len - used < header) break;
      payload_len = (size_t)h[2] << 8 | h[3];
    } else if (payload_len == 127) {
      header = 10;
      if (len - used < header) break;
      payload_len = 0;
      for (int i = 2; i < 10; i++) payload_len = payload_len << 8 | h[i];
    }
    if (len - used < header + payload_len) break;

    int opcode = h[0] & 0x0f;
    char *payload = data + used + header;
    used += header + payload_len;
    if ((h[1] & 0x80) || !(h[0] & 0x80) || opcode == HARK_WS_OP_CLOSE) {
      /* harkd never masks or fragments; a close ends the connection. */
      lose_client(c);
      break;
    }
    if (opcode == HARK_WS_OP_TEXT) on_text(c, payload, payload_len);
    else if (opcode == HARK_WS_OP_PING) {
      hark_buf_reset(&w.frame);
      hark_ws_encode_client_frame(&w.frame, 1, HARK_WS_OP_PONG, payload, payload_len, next_mask());
      send_bytes(c, w.frame.data, w.frame.len);
    }
  }
  return used;
}

/* Reads the HTTP response to the upgrade from c->in. Returns the offset of
 * the first WebSocket byte, 0 while the headers are incomplete, or -1 when
 * the upgrade was refused. */
static long finish_handshake(client *c) {
  char *end = memmem(c->in.data, c->in.len, "\r\n\r\n", 4);
  if (!end) return c->in.len > 8192 ? -1 : 0;
  if (c->in.len < 12 || memcmp(c->in.data, "HTTP/1.1 101", 12) != 0) return -1;

  c->state = CLIENT_OPEN;
  c->next_heartbeat_ns = bench_now_ns() + HEARTBEAT_INTERVAL_NS;
  w.in_flight--;
  w.stats.connected++;
  send_setup_joins(c);
  return end + 4 - c->in.data;
}

static void on_readable(client *c) {
  ssize_t n = recv(c->fd, w.scratch, sizeof w.scratch, 0);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
  if (n <= 0) {
    if (c->state == CLIENT_HANDSHAKE) fail_setup(c);
    else lose_client(c);
    return;
  }

  if (c->state == CLIENT_HANDSHAKE) {
    hark_buf_append(&c->in, w.scratch, (size_t)n);
    long start = finish_handshake(c);
    if (start < 0) fail_setup(c);
    if (start <= 0) return;
    hark_buf_consume(&c->in, (size_t)start);
  } else if (c->in.len > 0) {
    hark_buf_append(&c->in, w.scratch, (size_t)n);
  } else {
    /* Common case: parse straight from the scratch buffer, keep the rest. */
    size_t used = consume_frames(c, w.scratch, (size_t)n);
    if (c->state == CLIENT_OPEN && used < (size_t)n)
      hark_buf_append(&c->in, w.scratch + used, (size_t)n - used);
    return;
  }

  size_t used = consume_frames(c, c->in.data, c->in.len);
  if (c->state == CLIENT_OPEN) hark_buf_consume(&c->in, used);
}

static void on_writable(client *c) {
  if (c->state == CLIENT_CONNECTING) {
    send_handshake(c);
    return;
  }

  ssize_t n = send(c->fd, c->out.data, c->out.len, MSG_NOSIGNAL);
  if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
    lose_client(c);
    return;
  }
  if (n > 0) hark_buf_consume(&c->out, (size_t)n);
  if (c->out.len == 0) set_events(c, EPOLLIN);
}

static void pump_connects(void) {
  while (w.queued > 0 && w.in_flight < w.options->max_handshakes)
    start_connect(&w.clients[w.connect_queue[--w.queued]]);
}

static void send_heartbeats(int64_t now) {
  for (int i = 0; i < w.count; i++) {
    client *c = &w.clients[i];
    if (c->state != CLIENT_OPEN || now < c->next_heartbeat_ns) continue;
    c->next_heartbeat_ns = now + HEARTBEAT_INTERVAL_NS;
    send_message(c, "[null,\"h%llu\",\"phoenix\",\"heartbeat\",{}]",
                 (unsigned long long)++c->next_ref);
  }
}

/* Moves the cursor to the next open client that `accept` takes, or returns
 * NULL after one full round without one. */
static client *next_client(int (*accept)(const client *)) {
  for (int tries = 0; tries < w.count; tries++) {
    client *c = &w.clients[w.cursor];
    w.cursor = (w.cursor + 1) % w.count;
    if (c->state == CLIENT_OPEN && accept(c)) return c;
  }
  return NULL;
}

static int is_room_member(const client *c) {
  return c->joins_pending == 0;
}

static int is_free_churner(const client *c) {
  return is_churner(c->index) && c->churn_state != CHURN_JOINING;
}

static void push_room_message(client *c) {
  char pad[4097];
  int pad_len = w.options->payload_bytes < 4096 ? w.options->payload_bytes : 4096;
  memset(pad, 'x', (size_t)pad_len);
  pad[pad_len] = '\0';

  char topic[64];
  topic_name(c, 0, topic, sizeof topic);
  w.stats.pushes_sent++;
  send_message(c, "[\"1\",\"p%llu\",\"%s\",\"msg\"," BENCH_TIME_KEY "%lld,\"pad\":\"%s\"}]",
               (unsigned long long)++c->next_ref, topic, (long long)bench_now_ns(), pad);
}

static void leave_churn_topic(client *c) {
  w.stats.churn_leaves++;
  send_message(c, "[\"c%u\",\"l%llu\",\"%s\",\"phx_leave\",{}]", c->churn_join_ref,
               (unsigned long long)++c->next_ref, BENCH_CHURN_TOPIC);
  c->churn_state = CHURN_OUT;
}

/* One churn step: a churner on the topic leaves it, then joins again under a
 * new join_ref; one that is off the topic only joins. */
static void churn_once(client *c) {
  if (c->churn_state == CHURN_IN) leave_churn_topic(c);

  c->churn_join_ref = (uint32_t)++w.churn_counter;
  c->churn_state = CHURN_JOINING;
  c->join_sent_ns = bench_now_ns();
  w.stats.churn_joins++;
  send_message(c, "[\"c%u\",\"c%u\",\"%s\",\"phx_join\",{}]", c->churn_join_ref, c->churn_join_ref,
               BENCH_CHURN_TOPIC);
}

/* This worker's share of the scenario's action rate, per second. */
static double local_rate(void) {
  const bench_options *o = w.options;
  if (o->scenario == BENCH_ROOMS) return o->rate * w.count;
  if (o->scenario != BENCH_CHURN || o->churners == 0) return 0;

  int mine = 0;
  for (int i = 0; i < w.count; i++) mine += is_churner(w.clients[i].index);
  return o->rate * mine / o->churners;
}

/* Issues the pushes or churn joins that are due, spread evenly over time. */
static void run_actions(int64_t now) {
  double elapsed_s = (double)(now - w.phase_started_ns) / 1e9;
  uint64_t due = (uint64_t)(elapsed_s * local_rate());
  int churn = w.options->scenario == BENCH_CHURN;

  while (w.actions_done < due) {
    client *c = next_client(churn ? is_free_churner : is_room_member);
    if (!c) break;
    if (churn) churn_once(c);
    else push_room_message(c);
    w.actions_done++;
  }
  /* Actions that found no free connection are dropped, not queued. */
  w.actions_done = due;
}

static void send_report(void) {
  w.stats.last_receipt_ns = w.last_receipt_ns;
  if (bench_write_all(w.control, &w.stats, sizeof w.stats) != 0) exit(1);
}

static void start_drain(void) {
  for (int i = 0; i < w.count; i++) {
    client *c = &w.clients[i];
    if (c->state == CLIENT_OPEN && is_churner(c->index) && c->churn_state != CHURN_OUT)
      leave_churn_topic(c);
  }
  w.phase = PHASE_DRAIN;
  w.drain_deadline_ns = bench_now_ns() + (int64_t)(w.options->drain_s * 1e9);
  if (w.last_receipt_ns < bench_now_ns()) w.last_receipt_ns = bench_now_ns();
}

/* Fan-out is drained when every open member has every broadcast; the other
 * scenarios when nothing has arrived for a second. */
static int drained(int64_t now) {
  if (now >= w.drain_deadline_ns) return 1;
  if (w.options->scenario != BENCH_FANOUT) return now - w.last_receipt_ns > 1000000000LL;

  for (int i = 0; i < w.count; i++) {
    const client *c = &w.clients[i];
    if (c->state == CLIENT_OPEN && c->received < w.expected_per_member) return 0;
  }
  return 1;
}

static void on_control(void) {
  char command;
  if (bench_read_all(w.control, &command, 1) != 0) exit(1);

  if (command == BENCH_CMD_GO) {
    w.phase = PHASE_RUN;
    w.phase_started_ns = bench_now_ns();
  } else if (command == BENCH_CMD_STOP) {
    if (bench_read_all(w.control, &w.expected_per_member, sizeof w.expected_per_member) != 0) exit(1);
    start_drain();
  } else {
    exit(0);
  }
}

static void tick(int64_t now) {
  pump_connects();
  if (w.phase == PHASE_SETUP &&
      (w.settled >= w.count || now - w.setup_started_ns > SETUP_TIMEOUT_NS)) {
    w.phase = PHASE_READY;
    send_report();
  }
  if (w.phase == PHASE_RUN) run_actions(now);
  if (w.phase == PHASE_DRAIN && drained(now)) {
    w.phase = PHASE_DONE;
    send_report();
  }
}

static void init_worker(const bench_options *options, int first, int count, int control) {
  w.options = options;
  w.first = first;
  w.count = count;
  w.control = control;
  w.mask_state = 0x9e3779b9u ^ (uint32_t)first;
  w.clients = calloc((size_t)count, sizeof *w.clients);
  w.connect_queue = calloc((size_t)count, sizeof *w.connect_queue);
  if (!w.clients || !w.connect_queue) {
    fprintf(stderr, "hark-bench: out of memory for %d connections\n", count);
    exit(1);
  }

  /* The stack pops from the end, so connection `first` is tried first. */
  for (int i = 0; i < count; i++) {
    w.clients[i].fd = -1;
    w.clients[i].index = first + i;
    w.connect_queue[count - 1 - i] = i;
  }
  w.queued = count;

  w.epoll_fd = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.u32 = CONTROL_TAG};
  epoll_ctl(w.epoll_fd, EPOLL_CTL_ADD, control, &ev);
  w.setup_started_ns = bench_now_ns();
}

void bench_worker_run(const bench_options *options, int first, int count, int control) {
  init_worker(options, first, count, control);
  struct epoll_event events[256];
  int64_t last_sweep = 0;

  for (;;) {
    int busy = w.phase == PHASE_RUN && options->scenario != BENCH_FANOUT;
    int n = epoll_wait(w.epoll_fd, events, 256, busy ? 1 : 20);
    for (int i = 0; i < n; i++) {
      if (events[i].data.u32 == CONTROL_TAG) {
        on_control();
        continue;
      }
      client *c = &w.clients[events[i].data.u32];
      if (c->state == CLIENT_DEAD || c->state == CLIENT_IDLE) continue;
      if (events[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP) && c->state == CLIENT_CONNECTING)
        on_writable(c);
      else if (events[i].events & EPOLLOUT) on_writable(c);
      if (c->state != CLIENT_DEAD && c->state != CLIENT_IDLE && c->state != CLIENT_CONNECTING &&
          events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
        on_readable(c);
    }

    int64_t now = bench_now_ns();
    if (now - last_sweep > 100000000LL) {
      send_heartbeats(now);
      last_sweep = now;
    }
    tick(now);
  }
}
