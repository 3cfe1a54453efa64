/* hark-bench: command line, worker processes, the scenario's phases and the
 * summary. See the "Load generator" section of docs/benchmarks.md. */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

enum { MAX_WORKERS = 64, RESERVED_FILES = 2000 };

/* Connections one worker opens by default: its open-file limit less a
 * reserve for the epoll, control and log descriptors. With the common limit
 * of 20,000 that is 18,000. */
static int connections_per_worker(void) {
  struct rlimit limit;
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return 18000;
  long usable = (long)limit.rlim_cur - RESERVED_FILES;
  return usable < 1000 ? 1000 : (int)usable;
}

typedef struct worker_handle {
  pid_t pid;
  int control;
} worker_handle;

static const char usage[] =
    "usage: hark-bench --scenario idle|fanout|rooms|churn [options]\n"
    "  --host ADDR            harkd's IPv4 address (127.0.0.1)\n"
    "  --port N               harkd's port (4000)\n"
    "  --connections N        WebSocket connections in total (1000)\n"
    "  --topics N             idle, fan-out: topics each connection joins (1)\n"
    "  --rate R               fan-out: broadcasts/s; rooms: pushes/s per member;\n"
    "                         churn: joins/s (10)\n"
    "  --duration S           length of the measured phase, in seconds (10)\n"
    "  --room-size N          rooms: members per room (5)\n"
    "  --churners N           churn: connections that join and leave; the other\n"
    "                         connections stay on the topic (100)\n"
    "  --payload-bytes N      padding added to each payload, 0 to 4096 (0)\n"
    "  --source-addrs N       loopback source addresses, from 127.0.0.2 (one per\n"
    "                         20,000 connections, at least 2)\n"
    "  --workers N            worker processes (one per open-file limit less 2,000\n"
    "                         connections: 18,000 with a limit of 20,000)\n"
    "  --publishers N         fan-out: keep-alive HTTP connections, each with one\n"
    "                         request in flight (64)\n"
    "  --max-handshakes N     connection attempts in flight per worker (200)\n"
    "  --drain S              max wait for late messages after the phase (30)\n"
    "  --settle S             wait before sampling RSS, in seconds (3)\n"
    "  --harkd-pid PID        sample this process's VmRSS\n"
    "  --csv FILE             append the summary as a CSV row\n"
    "  --label TEXT           copied into the summary\n";

static int parse_scenario(const char *name, bench_scenario *out) {
  static const char *names[] = {"idle", "fanout", "rooms", "churn"};
  for (int i = 0; i < 4; i++) {
    if (strcmp(name, names[i]) == 0) {
      *out = (bench_scenario)i;
      return 0;
    }
  }
  return -1;
}

static const char *scenario_name(bench_scenario scenario) {
  static const char *names[] = {"idle", "fanout", "rooms", "churn"};
  return names[scenario];
}

static double number_arg(const char *flag, const char *value, double min, double max) {
  char *end;
  errno = 0;
  double number = strtod(value, &end);
  if (errno != 0 || *end != '\0' || end == value || number < min || number > max) {
    fprintf(stderr, "hark-bench: invalid value for %s: \"%s\" (expected %g to %g)\n", flag, value,
            min, max);
    exit(2);
  }
  return number;
}

static void set_defaults(bench_options *o) {
  *o = (bench_options){
      .scenario = BENCH_IDLE,
      .host = "127.0.0.1",
      .port = 4000,
      .connections = 1000,
      .topics_per_conn = 1,
      .rate = 10,
      .duration_s = 10,
      .room_size = 5,
      .churners = 100,
      .publishers = 64,
      .max_handshakes = 200,
      .drain_s = 30,
      .settle_s = 3,
      .label = "-",
  };
}

static void parse_options(int argc, char **argv, bench_options *o) {
  static const struct option longopts[] = {
      {"scenario", 1, 0, 's'},      {"host", 1, 0, 'H'},          {"port", 1, 0, 'p'},
      {"connections", 1, 0, 'n'},   {"topics", 1, 0, 't'},        {"rate", 1, 0, 'r'},
      {"duration", 1, 0, 'd'},      {"room-size", 1, 0, 'm'},     {"churners", 1, 0, 'c'},
      {"payload-bytes", 1, 0, 'b'}, {"source-addrs", 1, 0, 'a'},  {"workers", 1, 0, 'w'},
      {"publishers", 1, 0, 'P'},    {"max-handshakes", 1, 0, 'k'}, {"drain", 1, 0, 'D'},
      {"settle", 1, 0, 'S'},        {"harkd-pid", 1, 0, 'i'},     {"csv", 1, 0, 'f'},
      {"label", 1, 0, 'l'},         {"help", 0, 0, 'h'},          {0, 0, 0, 0},
  };
  set_defaults(o);
  int opt;
  while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
    switch (opt) {
    case 's':
      if (parse_scenario(optarg, &o->scenario) != 0) {
        fprintf(stderr, "hark-bench: unknown scenario \"%s\"; use idle, fanout, rooms or churn\n",
                optarg);
        exit(2);
      }
      break;
    case 'H': o->host = optarg; break;
    case 'p': o->port = (int)number_arg("--port", optarg, 1, 65535); break;
    case 'n': o->connections = (int)number_arg("--connections", optarg, 1, 1000000); break;
    case 't': o->topics_per_conn = (int)number_arg("--topics", optarg, 1, 1000); break;
    case 'r': o->rate = number_arg("--rate", optarg, 0.001, 1e7); break;
    case 'd': o->duration_s = number_arg("--duration", optarg, 0, 86400); break;
    case 'm': o->room_size = (int)number_arg("--room-size", optarg, 2, 100000); break;
    case 'c': o->churners = (int)number_arg("--churners", optarg, 1, 1000000); break;
    case 'b': o->payload_bytes = (int)number_arg("--payload-bytes", optarg, 0, 4096); break;
    case 'a': o->source_addrs = (int)number_arg("--source-addrs", optarg, 1, 250); break;
    case 'w': o->workers = (int)number_arg("--workers", optarg, 1, MAX_WORKERS); break;
    case 'P': o->publishers = (int)number_arg("--publishers", optarg, 1, 256); break;
    case 'k': o->max_handshakes = (int)number_arg("--max-handshakes", optarg, 1, 100000); break;
    case 'D': o->drain_s = number_arg("--drain", optarg, 0, 3600); break;
    case 'S': o->settle_s = number_arg("--settle", optarg, 0, 3600); break;
    case 'i': o->harkd_pid = (int)number_arg("--harkd-pid", optarg, 1, 1e9); break;
    case 'f': o->csv_path = optarg; break;
    case 'l': o->label = optarg; break;
    case 'h': fputs(usage, stdout); exit(0);
    default: fputs(usage, stderr); exit(2);
    }
  }
  if (optind < argc) {
    fprintf(stderr, "hark-bench: unexpected argument \"%s\"\n%s", argv[optind], usage);
    exit(2);
  }

  if (o->scenario == BENCH_CHURN && o->churners >= o->connections) {
    fprintf(stderr, "hark-bench: --churners (%d) must be less than --connections (%d)\n",
            o->churners, o->connections);
    exit(2);
  }
  /* 20,000 connections per address stay well inside the default ephemeral
   * port range (32768 to 60999). */
  if (o->source_addrs == 0) {
    o->source_addrs = o->connections / 20000 + 1;
    if (o->source_addrs < 2) o->source_addrs = 2;
  }
  if (o->workers == 0) {
    int per_worker = connections_per_worker();
    o->workers = (o->connections + per_worker - 1) / per_worker;
  }
  if (o->workers > MAX_WORKERS) {
    fprintf(stderr, "hark-bench: %d connections need more than %d workers; raise the open-file limit\n",
            o->connections, MAX_WORKERS);
    exit(2);
  }
}

/* Forks the workers. Rooms never straddle two workers, so each worker's share
 * is a multiple of the room size except the last. */
static int start_workers(const bench_options *o, worker_handle *workers) {
  int unit = o->scenario == BENCH_ROOMS ? o->room_size : 1;
  int units = (o->connections + unit - 1) / unit;
  int first = 0;
  for (int i = 0; i < o->workers; i++) {
    int share = (units / o->workers + (i < units % o->workers)) * unit;
    if (first + share > o->connections) share = o->connections - first;

    int pair[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, pair) != 0) return -1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
      close(pair[0]);
      for (int j = 0; j < i; j++) close(workers[j].control);
      bench_worker_run(o, first, share, pair[1]);
    }
    close(pair[1]);
    workers[i] = (worker_handle){.pid = pid, .control = pair[0]};
    first += share;
  }
  return 0;
}

static void send_command(const bench_options *o, worker_handle *workers, char command,
                         uint64_t argument) {
  for (int i = 0; i < o->workers; i++) {
    char message[1 + sizeof argument];
    message[0] = command;
    memcpy(message + 1, &argument, sizeof argument);
    size_t len = command == BENCH_CMD_STOP ? sizeof message : 1;
    if (bench_write_all(workers[i].control, message, len) != 0)
      fprintf(stderr, "hark-bench: worker %d is gone\n", (int)workers[i].pid);
  }
}

/* Reads one report from every worker and merges them into `total`. Returns
 * -1 when a worker died. */
static int collect(const bench_options *o, worker_handle *workers, bench_worker_stats *total) {
  static bench_worker_stats report;
  memset(total, 0, sizeof *total);
  for (int i = 0; i < o->workers; i++) {
    if (bench_read_all(workers[i].control, &report, sizeof report) != 0) {
      fprintf(stderr, "hark-bench: worker %d exited without a report\n", (int)workers[i].pid);
      return -1;
    }
    uint64_t *into = (uint64_t *)total, *from = (uint64_t *)&report;
    size_t counters = offsetof(bench_worker_stats, last_receipt_ns) / sizeof(uint64_t);
    for (size_t k = 0; k < counters; k++) into[k] += from[k];
    if (report.last_receipt_ns > total->last_receipt_ns) total->last_receipt_ns = report.last_receipt_ns;
    bench_hist_merge(&total->latency, &report.latency);
  }
  return 0;
}

static void sleep_s(double seconds) {
  struct timespec ts = {.tv_sec = (time_t)seconds,
                        .tv_nsec = (long)((seconds - (double)(time_t)seconds) * 1e9)};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* Sleeps `seconds` while sampling RSS every 200 ms; returns the largest. */
static int64_t watch_rss(const bench_options *o, double seconds) {
  int64_t peak = bench_rss_bytes(o->harkd_pid);
  int64_t end = bench_now_ns() + (int64_t)(seconds * 1e9);
  while (bench_now_ns() < end) {
    sleep_s(0.2);
    int64_t rss = bench_rss_bytes(o->harkd_pid);
    if (rss > peak) peak = rss;
  }
  return peak;
}

/* Everything the summary line reports. -1 marks a figure that does not
 * apply to the scenario or was not measured. */
typedef struct bench_summary {
  double setup_s;
  int64_t rss_baseline, rss_loaded, rss_peak, rss_after;
  bench_publish_result publish;
  int64_t phase_start_ns;
  uint64_t expected;
  bench_worker_stats stats;
} bench_summary;

static int run_phase(const bench_options *o, worker_handle *workers, bench_summary *s) {
  uint64_t expected_per_member = 0;
  s->phase_start_ns = bench_now_ns();
  send_command(o, workers, BENCH_CMD_GO, 0);

  if (o->scenario == BENCH_FANOUT) {
    if (bench_publish(o, BENCH_FANOUT_TOPIC, &s->publish) != 0) return -1;
    s->phase_start_ns = s->publish.first_ns;
    expected_per_member = s->publish.ok;
  } else if (o->scenario != BENCH_IDLE) {
    s->rss_peak = watch_rss(o, o->duration_s);
  }

  send_command(o, workers, BENCH_CMD_STOP, expected_per_member);
  if (collect(o, workers, &s->stats) != 0) return -1;
  if (o->scenario != BENCH_IDLE && o->harkd_pid) {
    sleep_s(o->settle_s);
    s->rss_after = bench_rss_bytes(o->harkd_pid);
  }
  return 0;
}

static void compute_expected(const bench_options *o, bench_summary *s) {
  if (o->scenario == BENCH_FANOUT) s->expected = s->publish.ok * (s->stats.joined / (uint64_t)o->topics_per_conn);
  if (o->scenario == BENCH_ROOMS) s->expected = s->stats.expected_rooms;
}

/* One key and its formatted value. Every scenario reports the same keys in
 * the same order, so CSV rows of all scenarios share one header. */
typedef struct field {
  const char *key;
  char value[64];
} field;

/* Returns the achieved publishes per second. It is below --rate when harkd
 * responds to the HTTP requests more slowly than they are due. */
static double publish_rate(const bench_options *o, const bench_summary *s) {
  if (o->scenario == BENCH_ROOMS) return o->duration_s > 0 ? (double)s->stats.pushes_ok / o->duration_s : 0;
  if (o->scenario != BENCH_FANOUT || s->publish.last_ns <= s->publish.first_ns) return 0;
  return (double)(s->publish.sent - 1) * 1e9 / (double)(s->publish.last_ns - s->publish.first_ns);
}

static int fill_fields(const bench_options *o, const bench_summary *s, field *f) {
  const bench_worker_stats *st = &s->stats;
  int n = 0;
#define FIELD(k, ...) (f[n].key = k, snprintf(f[n].value, sizeof f[n].value, __VA_ARGS__), n++)
#define BYTES(k, v) ((v) >= 0 ? FIELD(k, "%lld", (long long)(v)) : FIELD(k, "-"))
  int measured = o->scenario != BENCH_IDLE;
  double phase_s = st->last_receipt_ns > s->phase_start_ns
                       ? (double)(st->last_receipt_ns - s->phase_start_ns) / 1e9 : 0;
  FIELD("scenario", "%s", scenario_name(o->scenario));
  FIELD("label", "%s", o->label);
  FIELD("conns", "%d", o->connections);
  FIELD("topics", "%d", o->topics_per_conn);
  FIELD("rate", "%g", o->rate);
  FIELD("duration_s", "%g", measured ? o->duration_s : 0);
  FIELD("workers", "%d", o->workers);
  FIELD("connected", "%llu", (unsigned long long)st->connected);
  FIELD("connect_failed", "%llu", (unsigned long long)st->connect_failed);
  FIELD("joined", "%llu", (unsigned long long)st->joined);
  FIELD("join_failed", "%llu", (unsigned long long)st->join_failed);
  FIELD("closed_by_server", "%llu", (unsigned long long)st->closed_by_server);
  FIELD("setup_s", "%.2f", s->setup_s);
  BYTES("rss_baseline", s->rss_baseline);
  BYTES("rss_loaded", s->rss_loaded);
  if (s->rss_baseline >= 0 && s->rss_loaded >= 0 && st->connected > 0)
    FIELD("rss_per_conn", "%.0f", (double)(s->rss_loaded - s->rss_baseline) / (double)st->connected);
  else FIELD("rss_per_conn", "-");
  BYTES("rss_peak", measured ? s->rss_peak : -1);
  BYTES("rss_after", measured ? s->rss_after : -1);
  if (measured && s->rss_after >= 0 && s->rss_loaded >= 0) FIELD("rss_growth", "%lld", (long long)(s->rss_after - s->rss_loaded));
  else FIELD("rss_growth", "-");
  FIELD("published", "%llu", (unsigned long long)(o->scenario == BENCH_ROOMS ? st->pushes_ok : s->publish.ok));
  FIELD("publish_failed", "%llu", (unsigned long long)(o->scenario == BENCH_ROOMS ? st->pushes_sent - st->pushes_ok : s->publish.failed));
  FIELD("publish_late", "%llu", (unsigned long long)s->publish.late);
  FIELD("publish_skipped", "%llu", (unsigned long long)s->publish.skipped);
  FIELD("publish_rate", "%.1f", publish_rate(o, s));
  FIELD("expected", "%llu", (unsigned long long)s->expected);
  FIELD("delivered", "%llu", (unsigned long long)st->delivered);
  FIELD("missing", "%lld", (long long)(s->expected - st->delivered));
  FIELD("deliveries_per_s", "%.0f", phase_s > 0 ? (double)st->delivered / phase_s : 0);
  FIELD("p50_ms", "%.3f", (double)bench_hist_quantile(&st->latency, 0.50) / 1000);
  FIELD("p99_ms", "%.3f", (double)bench_hist_quantile(&st->latency, 0.99) / 1000);
  FIELD("max_ms", "%.3f", (double)st->latency.max_us / 1000);
  FIELD("churn_joins", "%llu", (unsigned long long)st->churn_joins);
  FIELD("churn_joins_ok", "%llu", (unsigned long long)st->churn_joins_ok);
  FIELD("presence_diffs", "%llu", (unsigned long long)st->presence_diffs);
  FIELD("presence_states", "%llu", (unsigned long long)st->presence_states);
#undef FIELD
#undef BYTES
  return n;
}

static void write_csv(const char *path, const field *fields, int n) {
  struct stat info;
  int new_file = stat(path, &info) != 0 || info.st_size == 0;
  FILE *csv = fopen(path, "a");
  if (!csv) {
    fprintf(stderr, "hark-bench: cannot open %s: %s\n", path, strerror(errno));
    return;
  }
  for (int i = 0; new_file && i < n; i++) fprintf(csv, "%s%c", fields[i].key, i + 1 < n ? ',' : '\n');
  for (int i = 0; i < n; i++) fprintf(csv, "%s%c", fields[i].value, i + 1 < n ? ',' : '\n');
  fclose(csv);
}

static void report(const bench_options *o, const bench_summary *s) {
  field fields[48];
  int n = fill_fields(o, s, fields);
  printf("hark-bench");
  for (int i = 0; i < n; i++) printf(" %s=%s", fields[i].key, fields[i].value);
  printf("\n");
  fflush(stdout);
  if (o->csv_path) write_csv(o->csv_path, fields, n);
}

int main(int argc, char **argv) {
  bench_options options;
  parse_options(argc, argv, &options);
  signal(SIGPIPE, SIG_IGN);

  static bench_summary summary;
  summary.rss_baseline = summary.rss_loaded = summary.rss_peak = summary.rss_after = -1;
  if (options.harkd_pid) summary.rss_baseline = bench_rss_bytes(options.harkd_pid);

  worker_handle workers[MAX_WORKERS];
  int64_t setup_start = bench_now_ns();
  if (start_workers(&options, workers) != 0) {
    fprintf(stderr, "hark-bench: cannot start workers: %s\n", strerror(errno));
    return 1;
  }
  int status = collect(&options, workers, &summary.stats) == 0 ? 0 : 1;
  summary.setup_s = (double)(bench_now_ns() - setup_start) / 1e9;
  fprintf(stderr, "hark-bench: setup done in %.1f s: connected=%llu connect_failed=%llu joined=%llu join_failed=%llu\n",
          summary.setup_s, (unsigned long long)summary.stats.connected,
          (unsigned long long)summary.stats.connect_failed, (unsigned long long)summary.stats.joined,
          (unsigned long long)summary.stats.join_failed);

  if (status == 0 && options.harkd_pid) {
    sleep_s(options.settle_s);
    summary.rss_loaded = bench_rss_bytes(options.harkd_pid);
  }
  if (status == 0 && run_phase(&options, workers, &summary) != 0) status = 1;
  compute_expected(&options, &summary);

  send_command(&options, workers, BENCH_CMD_EXIT, 0);
  for (int i = 0; i < options.workers; i++) waitpid(workers[i].pid, NULL, 0);
  if (status == 0) report(&options, &summary);
  return status;
}
