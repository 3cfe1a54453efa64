/* hark-bench: a load generator for harkd. The parent process forks workers
 * that hold the WebSocket connections and sends them start and stop
 * commands. It publishes broadcasts over the HTTP API, samples harkd's RSS
 * and merges the workers' counters into one summary line. */
#ifndef HARK_BENCH_H
#define HARK_BENCH_H

#include <stddef.h>
#include <stdint.h>

typedef enum bench_scenario {
  BENCH_IDLE,
  BENCH_FANOUT,
  BENCH_ROOMS,
  BENCH_CHURN,
} bench_scenario;

/* Settings from the command line; the workers get a copy through fork. */
typedef struct bench_options {
  bench_scenario scenario;
  const char *host;         /* harkd's address, an IPv4 literal */
  int port;
  int connections;          /* total WebSocket connections */
  int topics_per_conn;      /* idle and fan-out: topics each connection joins */
  double rate;              /* fan-out: broadcasts/s; rooms: pushes/s per member;
                               churn: joins/s */
  double duration_s;        /* length of the measured phase */
  int room_size;            /* rooms: members per room */
  int churners;             /* churn: connections that join and leave */
  int payload_bytes;        /* padding added to each broadcast payload */
  int source_addrs;         /* loopback source addresses 127.0.0.2 and up */
  int workers;              /* worker processes; 0 picks them from the open-file limit */
  int publishers;           /* fan-out: keep-alive HTTP connections */
  int max_handshakes;       /* connection attempts in flight per worker */
  double drain_s;           /* max wait for late deliveries after the phase */
  double settle_s;          /* idle and churn: wait before sampling RSS */
  int harkd_pid;            /* 0 when RSS is not sampled */
  const char *csv_path;     /* NULL: no CSV */
  const char *label;        /* free text copied into the summary */
} bench_options;

/* Latency histogram in microseconds. Values below 128 have a bucket each;
 * above, each power of two is split into 64 buckets, so a reported value is
 * within 1/64 (1.6 %) of the true one. */
enum { BENCH_HIST_BUCKETS = 128 + 57 * 64 };

typedef struct bench_hist {
  uint64_t count;
  uint64_t max_us;
  uint64_t buckets[BENCH_HIST_BUCKETS];
} bench_hist;

void bench_hist_add(bench_hist *hist, uint64_t us);
void bench_hist_merge(bench_hist *into, const bench_hist *from);
/* Returns the value at quantile q (0..1), in microseconds, or 0 when empty. */
uint64_t bench_hist_quantile(const bench_hist *hist, double q);

/* Counters one worker sends to the parent when it stops. */
typedef struct bench_worker_stats {
  uint64_t connected;        /* WebSocket upgrades that succeeded */
  uint64_t connect_failed;   /* connects or upgrades that failed */
  uint64_t joined;           /* ok replies to the setup joins */
  uint64_t join_failed;      /* error replies or missing replies */
  uint64_t closed_by_server; /* connections harkd closed or reset */
  uint64_t delivered;        /* broadcasts received */
  uint64_t pushes_sent;      /* rooms: pushes sent by members */
  uint64_t pushes_ok;        /* rooms: ok replies to them */
  uint64_t churn_joins;      /* churn: joins sent */
  uint64_t churn_joins_ok;   /* churn: ok replies to them */
  uint64_t churn_leaves;     /* churn: leaves sent */
  uint64_t presence_diffs;   /* presence_diff messages received */
  uint64_t presence_states;  /* presence_state messages received */
  uint64_t heartbeats_ok;    /* heartbeat replies */
  uint64_t expected_rooms;   /* rooms: deliveries owed for the ok pushes */
  int64_t last_receipt_ns;   /* CLOCK_MONOTONIC of the last broadcast */
  bench_hist latency;        /* publish to receipt (fan-out, rooms) or join
                                to reply (churn) */
} bench_worker_stats;

/* Commands from the parent to a worker, one byte each on the control socket. */
enum {
  BENCH_CMD_GO = 'g',   /* start the measured phase */
  BENCH_CMD_STOP = 's', /* end it, followed by a uint64 of expected
                           broadcasts per subscriber; the worker drains and
                           replies with its bench_worker_stats */
  BENCH_CMD_EXIT = 'x', /* close every connection and exit */
};

int64_t bench_now_ns(void);
/* Reads VmRSS of `pid` in bytes, or returns -1. */
int64_t bench_rss_bytes(int pid);
/* Writes or reads exactly `len` bytes, retrying on EINTR. Return 0 or -1. */
int bench_write_all(int fd, const void *data, size_t len);
int bench_read_all(int fd, void *data, size_t len);

/* Runs one worker over connections [first, first + count) of the total and
 * never returns. `control` is the worker's end of the socketpair. */
void bench_worker_run(const bench_options *options, int first, int count, int control)
    __attribute__((noreturn));

/* Fan-out publisher: POSTs broadcasts to /api/broadcast on the topic at
 * options->rate for options->duration_s, over options->publishers keep-alive
 * connections with one request in flight on each. So at most that many
 * broadcasts wait in harkd, and when harkd is slower than the rate the
 * publishes go out late or not at all. Fills the counts and returns 0, or -1
 * when no HTTP connection could be opened. */
typedef struct bench_publish_result {
  uint64_t sent;
  uint64_t ok;          /* 200 responses */
  uint64_t failed;      /* other statuses, or lost with a closed connection */
  uint64_t late;        /* sent more than 1 ms after their scheduled time */
  uint64_t skipped;     /* not sent because the duration was over */
  int64_t first_ns;
  int64_t last_ns;
} bench_publish_result;

int bench_publish(const bench_options *options, const char *topic, bench_publish_result *result);

/* Topic names shared by the parent and the workers. */
#define BENCH_FANOUT_TOPIC "bench:fanout"
#define BENCH_CHURN_TOPIC "presence:churn"
/* Marker that starts a payload with a publish time; the workers find the
 * time by this prefix. */
#define BENCH_TIME_KEY "{\"bench_t\":"

#endif
