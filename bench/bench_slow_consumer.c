/* Slow-consumer benchmark: does a socket that never reads raise the latency
 * of the other clients of harkd?
 *
 * The program starts harkd itself (`--listen 127.0.0.1:0 --no-presence
 * --max-output-bytes N`) and reads its port from the `msg=listening` line on
 * harkd's stderr. It opens K WebSocket clients that read everything ("readers")
 * and joins them to one topic. A keep-alive HTTP connection then publishes
 * broadcasts to that topic through POST /api/broadcast at a fixed rate R, each
 * with a payload object of P bytes that carries its send time
 * (CLOCK_MONOTONIC ns). The readers record the publish-to-receipt latency.
 *
 * Each run, with a fresh harkd, has these stages:
 * - warmup (1 s, not reported);
 * - baseline: no slow consumer;
 * - quiesce: publishing stops until the readers have every message, then S
 *   slow consumers connect and join the same topic, and never read again;
 * - fill: publishing resumes until harkd has logged `slow_consumer_closed`
 *   for every slow consumer, or until the fill time limit;
 * - after: publishing goes on for a while with the slow consumers closed;
 * - drain: publishing stops until the readers have every message.
 * Then the program reads each slow consumer's socket to the end, to confirm
 * that harkd closed it, and stops harkd.
 *
 * Latency is taken from the send time in the payload ("sent") and from the
 * message's scheduled time ("scheduled"), which also counts the time a
 * message waited because the previous request's response had not arrived.
 * harkd's RSS (VmRSS in /proc/PID/status) is sampled every 100 ms.
 *
 * One thread runs everything with epoll: the readers, the publisher, harkd's
 * stderr and a timerfd at the publishing rate. Connection setup uses blocking
 * sockets while nothing is being published.
 *
 * Output: key=value lines, one per run and stage, then the medians over the
 * runs and the ratios fill/baseline and after/baseline.
 *
 * Usage: bench_slow_consumer [options] [HARKD_PATH]   (default ./build/harkd)
 * Run with --help for the options. Build with -DCMAKE_BUILD_TYPE=Release. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>

#include "base/buf.h"
#include "server/ws_frame.h"

#define TOPIC "room:bench"
#define WARMUP_NS 1000000000ULL
#define QUIESCE_MAX_NS 3000000000ULL
#define DRAIN_MAX_NS 3000000000ULL
#define RSS_SAMPLE_NS 100000000ULL
/* harkd closes a WebSocket that sends nothing for 60 s by default, so the
 * readers send a Phoenix heartbeat well inside that. */
#define HEARTBEAT_NS 15000000000ULL
#define SETUP_TIMEOUT_MS 5000
#define CONFIRM_TIMEOUT_MS 5000
#define READ_CHUNK 65536

/* epoll tags: small values name the fixed sources, readers start at TAG_READER. */
enum { TAG_TIMER = 1, TAG_STDERR, TAG_PUBLISHER, TAG_READER = 16 };

/* Measured phases, indexes into run_result.phases. */
enum { PHASE_WARMUP, PHASE_BASELINE, PHASE_FILL, PHASE_AFTER, PHASE_COUNT };
static const char *const phase_names[PHASE_COUNT] = {"warmup", "baseline", "fill", "after"};

typedef enum stage {
  STAGE_WARMUP,
  STAGE_BASELINE,
  STAGE_QUIESCE,
  STAGE_FILL,
  STAGE_AFTER,
  STAGE_DRAIN,
  STAGE_DONE,
} stage;

typedef struct options {
  const char *harkd;
  int clients;
  int slow;
  int rate;
  size_t payload;
  size_t max_output;
  double baseline_s;
  double after_s;
  double fill_max_s;
  int runs;
} options;

/* A growable array of latencies in nanoseconds. */
typedef struct samples {
  uint64_t *ns;
  size_t len, cap;
} samples;

typedef struct phase_result {
  samples sent;                /* receipt time minus send time */
  samples scheduled;           /* receipt time minus scheduled time */
  uint64_t messages;           /* broadcasts published in the phase */
  uint64_t deliveries;         /* deliveries of those broadcasts to readers */
  uint64_t received_in_window; /* deliveries of any broadcast received while the phase was current */
  uint64_t start_ns, end_ns;
  long rss_max_kib;
} phase_result;

typedef struct run_result {
  phase_result phases[PHASE_COUNT];
  long rss_start_kib; /* after the readers joined */
  long rss_end_kib;   /* after the drain, before harkd stops */
  int slow_closed_logged;
  int slow_closed_confirmed;
  int readers_closed;
  int fill_timed_out;
  uint64_t publish_late;   /* messages sent after their scheduled time had passed by a period */
  uint64_t publish_skipped; /* scheduled messages dropped because 64 were already waiting */
  uint64_t publish_errors; /* responses other than 200 */
  int harkd_other_lines;   /* warn and error lines other than slow_consumer_closed */
} run_result;

typedef struct reader {
  int fd;
  hark_buf in;
  bool closed;
} reader;

typedef struct slow_client {
  int fd;
  uint16_t local_port;
  bool close_logged;
} slow_client;

typedef struct bench {
  const options *opts;
  pid_t harkd_pid;
  int harkd_stderr;
  hark_buf harkd_lines;
  uint16_t port;

  int epoll_fd;
  int timer_fd;
  uint64_t period_ns;
  uint64_t next_sched_ns; /* scheduled time of the next message */
  uint64_t last_rss_ns;
  uint64_t last_heartbeat_ns;

  reader *readers;
  slow_client *slows;
  int slow_open; /* slow consumers connected so far */

  int pub_fd;
  hark_buf pub_in;
  hark_buf request;
  bool pub_waiting; /* a request is out and its response has not arrived */
  uint64_t pub_due; /* scheduled messages not yet sent */
  uint64_t due_sched[64];

  stage stage;
  uint64_t stage_start_ns;
  int phase;
  bool publishing;

  uint64_t seq;            /* messages published so far */
  uint8_t *phase_of_seq;   /* phase in which each message was published */
  size_t phase_of_seq_cap;
  uint64_t delivered_total;

  run_result *result;
} bench;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
  fprintf(stderr, "bench_slow_consumer: %s failed: %s\n", what, strerror(errno));
  exit(1);
}

static void fail(const char *message) {
  fprintf(stderr, "bench_slow_consumer: %s\n", message);
  exit(1);
}

static void samples_push(samples *s, uint64_t ns) {
  if (s->len == s->cap) {
    s->cap = s->cap ? s->cap * 2 : 4096;
    s->ns = realloc(s->ns, s->cap * sizeof *s->ns);
    if (!s->ns) fail("out of memory for latency samples");
  }
  s->ns[s->len++] = ns;
}

static int compare_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static int compare_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Returns the q-quantile (nearest rank) of sorted samples in microseconds, 0 when empty. */
static double quantile_us(const samples *s, double q) {
  if (s->len == 0) return 0;
  size_t index = (size_t)(q * (double)(s->len - 1) + 0.5);
  return (double)s->ns[index] / 1000.0;
}

/* ---- harkd process ---- */

static long read_rss_kib(pid_t pid) {
  char path[64], line[256];
  snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  long kib = -1;
  while (fgets(line, sizeof line, f))
    if (strncmp(line, "VmRSS:", 6) == 0) kib = strtol(line + 6, NULL, 10);
  fclose(f);
  return kib;
}

static void set_nonblocking(int fd, bool on) {
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK) < 0)
    die("fcntl");
}

static void spawn_harkd(bench *b) {
  int fds[2];
  if (pipe(fds) != 0) die("pipe");
  char max_output[32];
  snprintf(max_output, sizeof max_output, "%zu", b->opts->max_output);

  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    /* harkd must not outlive the benchmark if the benchmark is killed. */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    dup2(fds[1], STDERR_FILENO);
    close(fds[0]);
    close(fds[1]);
    /* The `listening` line is logged at info level, so warn would hide the
     * port. Info adds no line per connection or message. */
    execl(b->opts->harkd, b->opts->harkd, "--listen", "127.0.0.1:0", "--no-presence",
          "--max-output-bytes", max_output, "--log-level", "info", (char *)NULL);
    fprintf(stderr, "bench_slow_consumer: cannot run %s: %s\n", b->opts->harkd, strerror(errno));
    _exit(127);
  }
  close(fds[1]);
  b->harkd_pid = pid;
  b->harkd_stderr = fds[0];
}

static void stop_harkd(bench *b) {
  kill(b->harkd_pid, SIGTERM);
  for (int i = 0; i < 500; i++) {
    if (waitpid(b->harkd_pid, NULL, WNOHANG) == b->harkd_pid) return;
    usleep(10000);
  }
  fprintf(stderr, "bench_slow_consumer: harkd pid=%d did not stop within 5 s of SIGTERM; killing it\n",
          (int)b->harkd_pid);
  kill(b->harkd_pid, SIGKILL);
  waitpid(b->harkd_pid, NULL, 0);
}

/* Handles one whole line of harkd's stderr. */
static void handle_harkd_line(bench *b, char *line) {
  const char *listening = strstr(line, "msg=listening addr=127.0.0.1:");
  if (listening && b->port == 0) {
    b->port = (uint16_t)atoi(listening + strlen("msg=listening addr=127.0.0.1:"));
    return;
  }

  if (strstr(line, "msg=slow_consumer_closed")) {
    const char *peer = strstr(line, "peer=127.0.0.1:");
    int port = peer ? atoi(peer + strlen("peer=127.0.0.1:")) : -1;
    for (int i = 0; i < b->slow_open; i++) {
      if (b->slows[i].local_port == port && !b->slows[i].close_logged) {
        b->slows[i].close_logged = true;
        if (b->result) b->result->slow_closed_logged++;
        return;
      }
    }
    /* The line names a reader or the publisher, which should never happen, so it is printed. */
  } else if (!strstr(line, "level=warn") && !strstr(line, "level=error")) {
    return;
  }
  if (b->result) b->result->harkd_other_lines++;
  fprintf(stderr, "harkd: %s\n", line);
}

/* Reads what harkd wrote to stderr and handles each whole line. Returns false at end of file. */
static bool read_harkd_stderr(bench *b) {
  if (hark_buf_reserve(&b->harkd_lines, 4096) != 0) fail("out of memory");
  ssize_t n = read(b->harkd_stderr, b->harkd_lines.data + b->harkd_lines.len,
                   b->harkd_lines.cap - b->harkd_lines.len);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return true;
  if (n <= 0) return false;
  b->harkd_lines.len += (size_t)n;

  char *start = b->harkd_lines.data;
  char *end = start + b->harkd_lines.len;
  char *newline;
  while ((newline = memchr(start, '\n', (size_t)(end - start)))) {
    *newline = '\0';
    handle_harkd_line(b, start);
    start = newline + 1;
  }
  hark_buf_consume(&b->harkd_lines, (size_t)(start - b->harkd_lines.data));
  return true;
}

static void wait_for_port(bench *b) {
  uint64_t deadline = now_ns() + (uint64_t)SETUP_TIMEOUT_MS * 1000000ULL;
  while (b->port == 0) {
    struct pollfd p = {.fd = b->harkd_stderr, .events = POLLIN};
    if (now_ns() > deadline) fail("timed out after 5 s waiting for harkd to log msg=listening");
    if (poll(&p, 1, 100) < 0 && errno != EINTR) die("poll");
    if ((p.revents & (POLLIN | POLLHUP)) && !read_harkd_stderr(b))
      fail("harkd exited before it logged msg=listening");
  }
}

/* ---- blocking setup I/O ---- */

static int tcp_connect(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) die("socket");
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) die("connect");
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  /* A blocking send to a harkd that stopped reading fails instead of hanging. */
  struct timeval timeout = {.tv_sec = 5};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
  return fd;
}

static void write_all(int fd, const char *data, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, data, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) die("write");
    data += n;
    len -= (size_t)n;
  }
}

/* Reads more bytes into `in`, waiting at most SETUP_TIMEOUT_MS. */
static void read_more(int fd, hark_buf *in, const char *what) {
  struct pollfd p = {.fd = fd, .events = POLLIN};
  int ready = poll(&p, 1, SETUP_TIMEOUT_MS);
  if (ready == 0) {
    fprintf(stderr, "bench_slow_consumer: timed out waiting for %s\n", what);
    exit(1);
  }
  if (hark_buf_reserve(in, 4096) != 0) fail("out of memory");
  ssize_t n = read(fd, in->data + in->len, in->cap - in->len);
  if (n <= 0) {
    fprintf(stderr, "bench_slow_consumer: connection closed while waiting for %s\n", what);
    exit(1);
  }
  in->len += (size_t)n;
}

static size_t find_header_end(const hark_buf *in) {
  for (size_t i = 0; i + 3 < in->len; i++)
    if (memcmp(in->data + i, "\r\n\r\n", 4) == 0) return i + 4;
  return 0;
}

/* Parses one unmasked server frame at the start of `data`. Returns its total
 * length, 0 when more bytes are needed, or -1 for a masked frame. */
static long parse_server_frame(const uint8_t *data, size_t len, int *opcode, const uint8_t **payload,
                               size_t *payload_len) {
  if (len < 2) return 0;
  if (data[1] & 0x80) return -1;
  size_t header = 2;
  uint64_t length = data[1] & 0x7F;
  if (length == 126) {
    header = 4;
    if (len < header) return 0;
    length = ((uint64_t)data[2] << 8) | data[3];
  } else if (length == 127) {
    header = 10;
    if (len < header) return 0;
    length = 0;
    for (int i = 2; i < 10; i++) length = (length << 8) | data[i];
  }
  if (len - header < length) return 0;
  *opcode = data[0] & 0x0F;
  *payload = data + header;
  *payload_len = (size_t)length;
  return (long)(header + length);
}

static void send_text(int fd, const char *text) {
  hark_buf frame = {0};
  if (hark_ws_encode_client_frame(&frame, 1, HARK_WS_OP_TEXT, text, strlen(text), (uint32_t)rand()) != 0)
    fail("out of memory");
  write_all(fd, frame.data, frame.len);
  hark_buf_free(&frame);
}

/* Opens a WebSocket, joins TOPIC and waits for the join reply. Bytes that
 * follow the reply stay in `in`. */
static int open_joined_socket(uint16_t port, hark_buf *in) {
  int fd = tcp_connect(port);
  char request[256];
  int len = snprintf(request, sizeof request,
                     "GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\nHost: 127.0.0.1:%u\r\n"
                     "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: aGFyay1iZW5jaC1zbG93IQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                     (unsigned)port);
  write_all(fd, request, (size_t)len);

  size_t head;
  while ((head = find_header_end(in)) == 0) read_more(fd, in, "the WebSocket upgrade response");
  if (in->len < 12 || memcmp(in->data, "HTTP/1.1 101", 12) != 0) fail("harkd refused the WebSocket upgrade");
  hark_buf_consume(in, head);

  send_text(fd, "[\"1\",\"1\",\"" TOPIC "\",\"phx_join\",{}]");
  for (;;) {
    int opcode;
    const uint8_t *payload;
    size_t payload_len;
    long frame = parse_server_frame((const uint8_t *)in->data, in->len, &opcode, &payload, &payload_len);
    if (frame < 0) fail("harkd sent a masked frame");
    if (frame == 0) {
      read_more(fd, in, "the phx_join reply");
      continue;
    }
    bool ok = payload_len > 20 && memcmp(payload, "[\"1\",\"1\",", 9) == 0 &&
              strstr((const char *)payload, "\"status\":\"ok\"") != NULL;
    hark_buf_consume(in, (size_t)frame);
    if (!ok) fail("harkd did not accept the phx_join");
    return fd;
  }
}

/* ---- the event loop ---- */

static void epoll_add(bench *b, int fd, uint64_t tag) {
  struct epoll_event event = {.events = EPOLLIN, .data.u64 = tag};
  if (epoll_ctl(b->epoll_fd, EPOLL_CTL_ADD, fd, &event) != 0) die("epoll_ctl");
}

static void record_rss(bench *b) {
  long kib = read_rss_kib(b->harkd_pid);
  phase_result *phase = &b->result->phases[b->phase];
  if (kib > phase->rss_max_kib) phase->rss_max_kib = kib;
}

/* Parses the decimal number that follows `key` in `text`. Returns false when absent. */
static bool find_number(const uint8_t *text, size_t len, const char *key, uint64_t *out) {
  size_t key_len = strlen(key);
  for (size_t i = 0; i + key_len < len; i++) {
    if (memcmp(text + i, key, key_len) != 0) continue;
    uint64_t value = 0;
    size_t j = i + key_len;
    if (j >= len || !isdigit(text[j])) return false;
    while (j < len && isdigit(text[j])) value = value * 10 + (uint64_t)(text[j++] - '0');
    *out = value;
    return true;
  }
  return false;
}

static void handle_broadcast(bench *b, const uint8_t *payload, size_t len, uint64_t received_ns) {
  /* The payload object starts with "t", so the search stops early. */
  const uint8_t *object = memchr(payload, '{', len);
  if (!object) return;
  size_t rest = len - (size_t)(object - payload);
  uint64_t sent, scheduled, seq;
  if (!find_number(object, rest, "{\"t\":", &sent) || !find_number(object, rest, ",\"s\":", &scheduled) ||
      !find_number(object, rest, ",\"seq\":", &seq) || seq >= b->seq)
    return;

  phase_result *phase = &b->result->phases[b->phase_of_seq[seq]];
  samples_push(&phase->sent, received_ns - sent);
  samples_push(&phase->scheduled, received_ns - scheduled);
  phase->deliveries++;
  b->result->phases[b->phase].received_in_window++;
  b->delivered_total++;
}

static void reader_closed(bench *b, reader *r) {
  if (r->closed) return;
  r->closed = true;
  b->result->readers_closed++;
  epoll_ctl(b->epoll_fd, EPOLL_CTL_DEL, r->fd, NULL);
  fprintf(stderr, "bench_slow_consumer: harkd closed a reader (fd=%d)\n", r->fd);
}

static void handle_reader(bench *b, reader *r) {
  if (hark_buf_reserve(&r->in, READ_CHUNK) != 0) fail("out of memory");
  ssize_t n = read(r->fd, r->in.data + r->in.len, r->in.cap - r->in.len);
  uint64_t received_ns = now_ns();
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n <= 0) {
    reader_closed(b, r);
    return;
  }
  r->in.len += (size_t)n;

  size_t offset = 0;
  for (;;) {
    int opcode;
    const uint8_t *payload;
    size_t payload_len;
    long frame = parse_server_frame((const uint8_t *)r->in.data + offset, r->in.len - offset, &opcode,
                                    &payload, &payload_len);
    if (frame <= 0) break;
    offset += (size_t)frame;
    if (opcode == HARK_WS_OP_CLOSE) {
      reader_closed(b, r);
      break;
    }
    if (opcode == HARK_WS_OP_TEXT) handle_broadcast(b, payload, payload_len, received_ns);
  }
  hark_buf_consume(&r->in, offset);
}

static void send_heartbeats(bench *b) {
  for (int i = 0; i < b->opts->clients; i++)
    if (!b->readers[i].closed) send_text(b->readers[i].fd, "[null,\"hb\",\"phoenix\",\"heartbeat\",{}]");
}

/* Sends the next due message. Its "t" is the time just before the write. */
static void publish_one(bench *b, uint64_t scheduled_ns) {
  static char pad[1 << 16];
  if (pad[0] != 'x') memset(pad, 'x', sizeof pad);

  uint64_t seq = b->seq;
  if (seq >= b->phase_of_seq_cap) {
    b->phase_of_seq_cap = b->phase_of_seq_cap ? b->phase_of_seq_cap * 2 : 65536;
    b->phase_of_seq = realloc(b->phase_of_seq, b->phase_of_seq_cap);
    if (!b->phase_of_seq) fail("out of memory");
  }
  b->phase_of_seq[seq] = (uint8_t)b->phase;

  uint64_t sent = now_ns();
  char head[160];
  int head_len = snprintf(head, sizeof head, "{\"t\":%llu,\"s\":%llu,\"seq\":%llu,\"pad\":\"",
                          (unsigned long long)sent, (unsigned long long)scheduled_ns, (unsigned long long)seq);
  size_t pad_len = b->opts->payload > (size_t)head_len + 2 ? b->opts->payload - (size_t)head_len - 2 : 0;
  static const char body_start[] = "{\"topic\":\"" TOPIC "\",\"event\":\"tick\",\"payload\":";
  size_t body_len = strlen(body_start) + (size_t)head_len + pad_len + 3;

  hark_buf *req = &b->request;
  hark_buf_reset(req);
  hark_buf_printf(req, "POST /api/broadcast HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  "Content-Length: %zu\r\n\r\n%s%s", body_len, body_start, head);
  hark_buf_append(req, pad, pad_len);
  if (hark_buf_append_str(req, "\"}}") != 0) fail("out of memory");
  write_all(b->pub_fd, req->data, req->len);

  if (sent > scheduled_ns + b->period_ns) b->result->publish_late++;
  b->result->phases[b->phase].messages++;
  b->seq++;
  b->pub_waiting = true;
}

static void publish_due(bench *b) {
  if (b->pub_waiting || b->pub_due == 0) return;
  uint64_t scheduled = b->due_sched[0];
  b->pub_due--;
  memmove(b->due_sched, b->due_sched + 1, b->pub_due * sizeof *b->due_sched);
  publish_one(b, scheduled);
}

/* Reads HTTP responses on the publisher connection. */
static void handle_publisher(bench *b) {
  hark_buf *in = &b->pub_in;
  if (hark_buf_reserve(in, 4096) != 0) fail("out of memory");
  ssize_t n = read(b->pub_fd, in->data + in->len, in->cap - in->len);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n <= 0) fail("harkd closed the publisher's HTTP connection");
  in->len += (size_t)n;

  size_t head;
  while ((head = find_header_end(in)) != 0) {
    size_t content_length = 0;
    for (size_t i = 0; i + 15 < head; i++)
      if (strncasecmp(in->data + i, "\ncontent-length:", 16) == 0)
        content_length = strtoul(in->data + i + 16, NULL, 10);
    if (in->len < head + content_length) return;
    if (in->len < 12 || memcmp(in->data, "HTTP/1.1 200", 12) != 0) {
      b->result->publish_errors++;
      fprintf(stderr, "bench_slow_consumer: broadcast failed: %.*s\n", (int)(head + content_length), in->data);
    }
    hark_buf_consume(in, head + content_length);
    b->pub_waiting = false;
    publish_due(b);
  }
}

static void arm_timer(bench *b) {
  uint64_t first = now_ns() + b->period_ns;
  struct itimerspec spec = {
      .it_value = {.tv_sec = (time_t)(first / 1000000000ULL), .tv_nsec = (long)(first % 1000000000ULL)},
      .it_interval = {.tv_sec = (time_t)(b->period_ns / 1000000000ULL),
                      .tv_nsec = (long)(b->period_ns % 1000000000ULL)},
  };
  if (timerfd_settime(b->timer_fd, TFD_TIMER_ABSTIME, &spec, NULL) != 0) die("timerfd_settime");
  b->next_sched_ns = first;
}

static void start_stage(bench *b, stage next, int phase, bool publishing) {
  uint64_t now = now_ns();
  /* A phase's window runs from the stage that starts it to the moment
   * publishing stops or the next phase begins. */
  if (b->publishing && (!publishing || b->phase != phase)) b->result->phases[b->phase].end_ns = now;
  if (b->phase != phase) b->result->phases[phase].start_ns = now;
  b->stage = next;
  b->stage_start_ns = now;
  b->phase = phase;
  if (publishing && !b->publishing) arm_timer(b);
  b->publishing = publishing;
  if (!publishing) b->pub_due = 0;
}

static void open_slow_consumers(bench *b) {
  for (int i = 0; i < b->opts->slow; i++) {
    hark_buf in = {0};
    slow_client *slow = &b->slows[i];
    slow->fd = open_joined_socket(b->port, &in);
    hark_buf_free(&in);
    struct sockaddr_in local;
    socklen_t local_len = sizeof local;
    if (getsockname(slow->fd, (struct sockaddr *)&local, &local_len) != 0) die("getsockname");
    slow->local_port = ntohs(local.sin_port);
    slow->close_logged = false;
    b->slow_open = i + 1;
  }
}

static bool all_delivered(const bench *b) {
  int open_readers = 0;
  for (int i = 0; i < b->opts->clients; i++) open_readers += !b->readers[i].closed;
  return !b->pub_waiting && b->delivered_total >= (uint64_t)open_readers * b->seq;
}

/* Moves to the next stage when the current one is over. */
static void advance_stage(bench *b) {
  uint64_t elapsed = now_ns() - b->stage_start_ns;
  const options *o = b->opts;
  switch (b->stage) {
  case STAGE_WARMUP:
    if (elapsed >= WARMUP_NS) start_stage(b, STAGE_BASELINE, PHASE_BASELINE, true);
    break;
  case STAGE_BASELINE:
    if (elapsed >= (uint64_t)(o->baseline_s * 1e9)) start_stage(b, STAGE_QUIESCE, PHASE_BASELINE, false);
    break;
  case STAGE_QUIESCE:
    if (all_delivered(b) || elapsed >= QUIESCE_MAX_NS) {
      open_slow_consumers(b);
      start_stage(b, STAGE_FILL, PHASE_FILL, true);
    }
    break;
  case STAGE_FILL:
    if (b->result->slow_closed_logged >= o->slow) {
      start_stage(b, STAGE_AFTER, PHASE_AFTER, true);
    } else if (elapsed >= (uint64_t)(o->fill_max_s * 1e9)) {
      b->result->fill_timed_out = 1;
      start_stage(b, STAGE_AFTER, PHASE_AFTER, true);
    }
    break;
  case STAGE_AFTER:
    if (elapsed >= (uint64_t)(o->after_s * 1e9)) start_stage(b, STAGE_DRAIN, PHASE_AFTER, false);
    break;
  case STAGE_DRAIN:
    if (all_delivered(b) || elapsed >= DRAIN_MAX_NS) b->stage = STAGE_DONE;
    break;
  case STAGE_DONE:
    break;
  }
}

static void handle_timer(bench *b) {
  uint64_t expirations = 0;
  if (read(b->timer_fd, &expirations, sizeof expirations) != sizeof expirations) return;
  uint64_t now = now_ns();

  if (b->publishing) {
    for (uint64_t i = 0; i < expirations; i++) {
      if (b->pub_due < sizeof b->due_sched / sizeof b->due_sched[0]) b->due_sched[b->pub_due++] = b->next_sched_ns;
      else b->result->publish_skipped++;
      b->next_sched_ns += b->period_ns;
    }
    publish_due(b);
  }
  if (now - b->last_rss_ns >= RSS_SAMPLE_NS) {
    record_rss(b);
    b->last_rss_ns = now;
  }
  if (now - b->last_heartbeat_ns >= HEARTBEAT_NS) {
    send_heartbeats(b);
    b->last_heartbeat_ns = now;
  }
  advance_stage(b);
}

static void run_loop(bench *b) {
  struct epoll_event events[256];
  while (b->stage != STAGE_DONE) {
    int n = epoll_wait(b->epoll_fd, events, 256, 100);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) die("epoll_wait");
    for (int i = 0; i < n; i++) {
      uint64_t tag = events[i].data.u64;
      if (tag == TAG_TIMER) handle_timer(b);
      else if (tag == TAG_PUBLISHER) handle_publisher(b);
      else if (tag == TAG_STDERR && !read_harkd_stderr(b)) fail("harkd exited during the run");
      else if (tag >= TAG_READER) handle_reader(b, &b->readers[tag - TAG_READER]);
    }
    advance_stage(b);
  }
}

/* Reads each slow consumer's socket to its end: an end of file or a reset
 * confirms that harkd closed it. Also keeps reading harkd's stderr, so a
 * slow_consumer_closed line logged late still counts. */
static void confirm_slow_closes(bench *b) {
  static char sink[READ_CHUNK];
  uint64_t deadline = now_ns() + (uint64_t)CONFIRM_TIMEOUT_MS * 1000000ULL;
  int remaining = b->slow_open;
  bool *done = calloc((size_t)b->slow_open + 1, sizeof *done);
  if (!done) fail("out of memory");
  for (int i = 0; i < b->slow_open; i++) set_nonblocking(b->slows[i].fd, true);

  while (remaining > 0 && now_ns() < deadline) {
    read_harkd_stderr(b);
    for (int i = 0; i < b->slow_open; i++) {
      if (done[i]) continue;
      ssize_t n;
      while ((n = read(b->slows[i].fd, sink, sizeof sink)) > 0) {}
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        done[i] = true;
        remaining--;
        b->result->slow_closed_confirmed++;
      }
    }
    usleep(1000);
  }
  free(done);
}

static void open_readers(bench *b) {
  for (int i = 0; i < b->opts->clients; i++) {
    reader *r = &b->readers[i];
    memset(r, 0, sizeof *r);
    r->fd = open_joined_socket(b->port, &r->in);
    set_nonblocking(r->fd, true);
    epoll_add(b, r->fd, TAG_READER + (uint64_t)i);
  }
}

static void close_all(bench *b) {
  for (int i = 0; i < b->opts->clients; i++) {
    close(b->readers[i].fd);
    hark_buf_free(&b->readers[i].in);
  }
  for (int i = 0; i < b->slow_open; i++) close(b->slows[i].fd);
  close(b->pub_fd);
  close(b->timer_fd);
  close(b->epoll_fd);
  close(b->harkd_stderr);
  hark_buf_free(&b->pub_in);
  hark_buf_free(&b->request);
  hark_buf_free(&b->harkd_lines);
  free(b->phase_of_seq);
  free(b->readers);
  free(b->slows);
}

static void run_once(const options *opts, run_result *result) {
  bench b = {.opts = opts, .result = result, .period_ns = 1000000000ULL / (uint64_t)opts->rate};
  memset(result, 0, sizeof *result);
  b.readers = calloc((size_t)opts->clients, sizeof *b.readers);
  b.slows = calloc((size_t)opts->slow + 1, sizeof *b.slows);
  if (!b.readers || !b.slows) fail("out of memory");

  spawn_harkd(&b);
  wait_for_port(&b);
  set_nonblocking(b.harkd_stderr, true);

  b.epoll_fd = epoll_create1(0);
  b.timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
  if (b.epoll_fd < 0 || b.timer_fd < 0) die("epoll_create1 or timerfd_create");
  epoll_add(&b, b.timer_fd, TAG_TIMER);
  epoll_add(&b, b.harkd_stderr, TAG_STDERR);

  open_readers(&b);
  b.pub_fd = tcp_connect(b.port);
  epoll_add(&b, b.pub_fd, TAG_PUBLISHER);
  result->rss_start_kib = read_rss_kib(b.harkd_pid);
  b.last_rss_ns = b.last_heartbeat_ns = now_ns();

  b.phase = PHASE_WARMUP;
  result->phases[PHASE_WARMUP].start_ns = now_ns();
  start_stage(&b, STAGE_WARMUP, PHASE_WARMUP, true);
  run_loop(&b);

  result->rss_end_kib = read_rss_kib(b.harkd_pid);
  confirm_slow_closes(&b);
  stop_harkd(&b);
  close_all(&b);
}

/* ---- reporting ---- */

typedef struct phase_summary {
  double p50_us, p99_us, max_us;
  double sched_p99_us, sched_max_us;
  double deliveries_per_s;
  double duration_s;
  long lost;
  long rss_max_kib;
} phase_summary;

static phase_summary summarize(phase_result *phase, int clients) {
  phase_summary s = {0};
  qsort(phase->sent.ns, phase->sent.len, sizeof *phase->sent.ns, compare_u64);
  qsort(phase->scheduled.ns, phase->scheduled.len, sizeof *phase->scheduled.ns, compare_u64);
  s.p50_us = quantile_us(&phase->sent, 0.50);
  s.p99_us = quantile_us(&phase->sent, 0.99);
  s.max_us = quantile_us(&phase->sent, 1.0);
  s.sched_p99_us = quantile_us(&phase->scheduled, 0.99);
  s.sched_max_us = quantile_us(&phase->scheduled, 1.0);
  s.duration_s = (double)(phase->end_ns - phase->start_ns) / 1e9;
  s.deliveries_per_s = s.duration_s > 0 ? (double)phase->received_in_window / s.duration_s : 0;
  s.lost = (long)(phase->messages * (uint64_t)clients) - (long)phase->deliveries;
  s.rss_max_kib = phase->rss_max_kib;
  return s;
}

static void print_summary(const char *prefix, const char *phase, const phase_summary *s) {
  printf("%s phase=%s duration_s=%.2f p50_us=%.0f p99_us=%.0f max_us=%.0f sched_p99_us=%.0f "
         "sched_max_us=%.0f deliveries_per_s=%.0f lost=%ld rss_max_kib=%ld\n",
         prefix, phase, s->duration_s, s->p50_us, s->p99_us, s->max_us, s->sched_p99_us, s->sched_max_us,
         s->deliveries_per_s, s->lost, s->rss_max_kib);
}

static double median(double *values, int count) {
  qsort(values, (size_t)count, sizeof *values, compare_double);
  return count % 2 ? values[count / 2] : (values[count / 2 - 1] + values[count / 2]) / 2;
}

/* The median of one field of phase_summary over the runs. */
#define MEDIAN_FIELD(out, all, runs, phase, field)                      \
  do {                                                                   \
    double values_[64];                                                  \
    for (int r_ = 0; r_ < (runs); r_++) values_[r_] = (double)(all)[r_][phase].field; \
    (out).field = median(values_, (runs));                               \
  } while (0)

static void print_medians(phase_summary all[][PHASE_COUNT], int runs) {
  phase_summary medians[PHASE_COUNT];
  for (int p = PHASE_BASELINE; p < PHASE_COUNT; p++) {
    MEDIAN_FIELD(medians[p], all, runs, p, p50_us);
    MEDIAN_FIELD(medians[p], all, runs, p, p99_us);
    MEDIAN_FIELD(medians[p], all, runs, p, max_us);
    MEDIAN_FIELD(medians[p], all, runs, p, sched_p99_us);
    MEDIAN_FIELD(medians[p], all, runs, p, sched_max_us);
    MEDIAN_FIELD(medians[p], all, runs, p, deliveries_per_s);
    MEDIAN_FIELD(medians[p], all, runs, p, duration_s);
    MEDIAN_FIELD(medians[p], all, runs, p, lost);
    MEDIAN_FIELD(medians[p], all, runs, p, rss_max_kib);
    print_summary("median", phase_names[p], &medians[p]);
  }

  const phase_summary *base = &medians[PHASE_BASELINE];
  for (int p = PHASE_FILL; p < PHASE_COUNT; p++) {
    const phase_summary *m = &medians[p];
    printf("ratio phase=%s/baseline p50=%.2f p99=%.2f max=%.2f sched_p99=%.2f deliveries_per_s=%.2f\n",
           phase_names[p], m->p50_us / base->p50_us, m->p99_us / base->p99_us, m->max_us / base->max_us,
           m->sched_p99_us / base->sched_p99_us, m->deliveries_per_s / base->deliveries_per_s);
  }
}

/* ---- options ---- */

static void usage(FILE *out) {
  fprintf(out,
          "Usage: bench_slow_consumer [OPTIONS] [HARKD_PATH]\n"
          "Starts harkd (default ./build/harkd) and measures broadcast latency to well-behaved\n"
          "WebSocket clients, first alone, then while slow consumers fill their output queues.\n"
          "  --clients K           readers that read everything (100)\n"
          "  --slow S              slow consumers that never read (20)\n"
          "  --rate R              broadcasts per second (200)\n"
          "  --payload P           bytes of each broadcast's payload object (4096)\n"
          "  --max-output-bytes N  harkd's --max-output-bytes (4194304)\n"
          "  --baseline-s D        seconds of the baseline phase (10)\n"
          "  --after-s D           seconds of publishing after the slow consumers closed (10)\n"
          "  --fill-max-s D        longest wait for every slow consumer to be closed (60)\n"
          "  --runs N              runs, each with a fresh harkd (3, at most 64)\n"
          "  --quick               small sizes to check that the program works\n");
}

static double number_arg(const char *flag, const char *value, double min, double max) {
  char *end;
  double parsed = value ? strtod(value, &end) : 0;
  if (!value || *end != '\0' || parsed < min || parsed > max) {
    fprintf(stderr, "bench_slow_consumer: %s needs a number from %g to %g, got \"%s\"\n", flag, min, max,
            value ? value : "");
    exit(2);
  }
  return parsed;
}

static void parse_options(int argc, char **argv, options *o) {
  *o = (options){.harkd = "./build/harkd", .clients = 100, .slow = 20, .rate = 200, .payload = 4096,
                 .max_output = 4 * 1024 * 1024, .baseline_s = 10, .after_s = 10, .fill_max_s = 60, .runs = 3};
  for (int i = 1; i < argc; i++) {
    const char *flag = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(flag, "--help") == 0) {
      usage(stdout);
      exit(0);
    } else if (strcmp(flag, "--quick") == 0) {
      o->clients = 10, o->slow = 3, o->baseline_s = 2, o->after_s = 2, o->runs = 1;
      o->max_output = 1024 * 1024;
      continue;
    } else if (flag[0] != '-') {
      o->harkd = flag;
      continue;
    }
    i++;
    if (strcmp(flag, "--clients") == 0) o->clients = (int)number_arg(flag, value, 1, 900);
    else if (strcmp(flag, "--slow") == 0) o->slow = (int)number_arg(flag, value, 0, 90);
    else if (strcmp(flag, "--rate") == 0) o->rate = (int)number_arg(flag, value, 1, 10000);
    else if (strcmp(flag, "--payload") == 0) o->payload = (size_t)number_arg(flag, value, 64, 65536);
    else if (strcmp(flag, "--max-output-bytes") == 0) o->max_output = (size_t)number_arg(flag, value, 1024, 1e10);
    else if (strcmp(flag, "--baseline-s") == 0) o->baseline_s = number_arg(flag, value, 0.5, 3600);
    else if (strcmp(flag, "--after-s") == 0) o->after_s = number_arg(flag, value, 0.5, 3600);
    else if (strcmp(flag, "--fill-max-s") == 0) o->fill_max_s = number_arg(flag, value, 1, 3600);
    else if (strcmp(flag, "--runs") == 0) o->runs = (int)number_arg(flag, value, 1, 64);
    else {
      fprintf(stderr, "bench_slow_consumer: unknown option %s\n", flag);
      usage(stderr);
      exit(2);
    }
  }
  if (access(o->harkd, X_OK) != 0) {
    fprintf(stderr, "bench_slow_consumer: harkd not found or not executable at %s: pass its path\n", o->harkd);
    exit(2);
  }
}

int main(int argc, char **argv) {
  options opts;
  parse_options(argc, argv, &opts);
  signal(SIGPIPE, SIG_IGN);
  srand((unsigned)now_ns());

  printf("config clients=%d slow=%d rate=%d payload=%zu max_output_bytes=%zu baseline_s=%.1f after_s=%.1f "
         "runs=%d\n", opts.clients, opts.slow, opts.rate, opts.payload, opts.max_output, opts.baseline_s,
         opts.after_s, opts.runs);
  fflush(stdout);

  phase_summary (*summaries)[PHASE_COUNT] = calloc((size_t)opts.runs, sizeof *summaries);
  if (!summaries) fail("out of memory");
  for (int run = 0; run < opts.runs; run++) {
    run_result result;
    run_once(&opts, &result);

    char prefix[32];
    snprintf(prefix, sizeof prefix, "run=%d", run + 1);
    for (int p = PHASE_BASELINE; p < PHASE_COUNT; p++) {
      summaries[run][p] = summarize(&result.phases[p], opts.clients);
      print_summary(prefix, phase_names[p], &summaries[run][p]);
    }
    printf("%s slow_closed_logged=%d slow_closed_confirmed=%d fill_timed_out=%d readers_closed=%d "
           "publish_late=%llu publish_skipped=%llu publish_errors=%llu harkd_other_warnings=%d rss_start_kib=%ld rss_end_kib=%ld\n",
           prefix, result.slow_closed_logged, result.slow_closed_confirmed, result.fill_timed_out,
           result.readers_closed, (unsigned long long)result.publish_late,
           (unsigned long long)result.publish_skipped,
           (unsigned long long)result.publish_errors, result.harkd_other_lines, result.rss_start_kib,
           result.rss_end_kib);
    fflush(stdout);
    for (int p = 0; p < PHASE_COUNT; p++) {
      free(result.phases[p].sent.ns);
      free(result.phases[p].scheduled.ns);
    }
  }

  print_medians(summaries, opts.runs);
  free(summaries);
  return 0;
}
