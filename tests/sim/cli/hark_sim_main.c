/* hark-sim: runs the tracker cluster simulator on random or scripted fault
 * schedules. See docs/simulation.md. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "sim_cluster.h"
#include "sim_scenarios.h"

static const char USAGE[] =
    "usage: hark-sim [options]\n"
    "  --seed N          run the random schedule of seed N\n"
    "  --keep LIST       with --seed: apply only these events (\"0,4,7-9\"), as printed\n"
    "                    by a failing run\n"
    "  --seeds N         run N random seeds, starting at --from\n"
    "  --soak SECONDS    run random seeds, starting at --from, for SECONDS seconds\n"
    "  --from N          the first seed of --seeds and --soak (default 1)\n"
    "  --scenario NAME   run one scripted scenario, or \"all\"; --list shows them\n"
    "  --print           print each schedule before running it\n"
    "  --no-shrink       report a failure without shrinking its schedule\n"
    "  --keep-going      with --seeds or --soak: go on after a failing seed\n"
    "  --shrink-runs N   the maximum runs spent shrinking (default 600)\n"
    "Exits with 1 when an invariant fails, 2 on a usage error.\n";

typedef struct cli {
  bool has_seed;
  uint64_t seed;
  const char *keep;
  uint64_t seeds;
  double soak_seconds;
  uint64_t from;
  const char *scenario;
  bool list;
  bool print;
  bool shrink;
  bool keep_going;
  size_t shrink_runs;
} cli;

typedef struct totals {
  uint64_t runs, failures, virtual_ms, checks, full, delta, requested;
} totals;

static double seconds_since(const struct timespec *start) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

static bool parse_u64(const char *text, uint64_t *out) {
  char *end;
  unsigned long long value = strtoull(text, &end, 10);
  if (end == text || *end != '\0') return false;
  *out = value;
  return true;
}

static int parse_args(int argc, char **argv, cli *c) {
  *c = (cli){.from = 1, .shrink = true, .shrink_runs = 600};
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i];
    const char *value = i + 1 < argc ? argv[i + 1] : NULL;
    uint64_t number = 0;
    bool takes_value = strcmp(arg, "--seed") == 0 || strcmp(arg, "--keep") == 0 ||
                       strcmp(arg, "--seeds") == 0 || strcmp(arg, "--soak") == 0 ||
                       strcmp(arg, "--from") == 0 || strcmp(arg, "--scenario") == 0 ||
                       strcmp(arg, "--shrink-runs") == 0;
    if (takes_value && value == NULL) {
      fprintf(stderr, "hark-sim: %s needs a value\n%s", arg, USAGE);
      return -1;
    }
    bool numeric = takes_value && strcmp(arg, "--keep") != 0 && strcmp(arg, "--scenario") != 0;
    if (numeric && !parse_u64(value, &number)) {
      fprintf(stderr, "hark-sim: invalid number for %s: %s\n", arg, value);
      return -1;
    }
    if (strcmp(arg, "--seed") == 0) c->has_seed = true, c->seed = number;
    else if (strcmp(arg, "--keep") == 0) c->keep = value;
    else if (strcmp(arg, "--seeds") == 0) c->seeds = number;
    else if (strcmp(arg, "--soak") == 0) c->soak_seconds = (double)number;
    else if (strcmp(arg, "--from") == 0) c->from = number;
    else if (strcmp(arg, "--scenario") == 0) c->scenario = value;
    else if (strcmp(arg, "--shrink-runs") == 0) c->shrink_runs = (size_t)number;
    else if (strcmp(arg, "--list") == 0) c->list = true;
    else if (strcmp(arg, "--print") == 0) c->print = true;
    else if (strcmp(arg, "--no-shrink") == 0) c->shrink = false;
    else if (strcmp(arg, "--keep-going") == 0) c->keep_going = true;
    else if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
      fputs(USAGE, stdout);
      exit(0);
    } else {
      fprintf(stderr, "hark-sim: unknown option %s\n%s", arg, USAGE);
      return -1;
    }
    if (takes_value) i++;
  }
  if (c->keep != NULL && !c->has_seed) {
    fprintf(stderr, "hark-sim: --keep needs --seed\n");
    return -1;
  }
  return 0;
}

static void report_failure(const cli *c, const sim_schedule *schedule, const sim_report *report,
                           const char *label, bool *keep) {
  printf("FAIL %s: invariant \"%s\" at t=%" PRIu64 "ms, after event #%zu\n%s\n", label,
         report->invariant, report->at_ms, report->event_index, report->message);
  if (c->shrink && schedule->config.seed != 0 && c->scenario == NULL) {
    size_t before = 0;
    for (size_t i = 0; i < schedule->count; i++) before += keep[i];
    size_t after = sim_shrink(schedule, keep, report->invariant, c->shrink_runs);
    printf("shrunk from %zu to %zu events; the shortest failing schedule:\n", before, after);
    sim_report shrunk;
    if (!sim_run(schedule, keep, &shrunk)) {
      printf("it fails with \"%s\" at t=%" PRIu64 "ms:\n%s\n", shrunk.invariant, shrunk.at_ms,
             shrunk.message);
    }
  } else {
    printf("the failing schedule:\n");
  }
  sim_schedule_print(stdout, schedule, keep);
  if (c->scenario == NULL) {
    char *list = malloc(schedule->count * 12 + 16);
    if (list != NULL) {
      sim_keep_format(schedule, keep, list, schedule->count * 12 + 16);
      printf("replay: hark-sim --seed %" PRIu64 " --keep %s\n", schedule->config.seed, list);
      free(list);
    }
  }
}

/* Runs one schedule; returns false when it failed (and was reported). */
static bool run_one(const cli *c, const sim_schedule *schedule, const char *label, bool *keep,
                    totals *t) {
  if (c->print) {
    printf("%s:\n", label);
    sim_schedule_print(stdout, schedule, keep);
  }
  sim_report report;
  bool ok = sim_run(schedule, keep, &report);
  t->runs++;
  t->virtual_ms += report.virtual_ms;
  t->checks += report.checks;
  t->full += report.transfers_sent_full;
  t->delta += report.transfers_sent_delta;
  t->requested += report.transfers_requested;
  if (!ok) {
    t->failures++;
    report_failure(c, schedule, &report, label, keep);
  }
  return ok;
}

static bool run_seed(const cli *c, uint64_t seed, const char *keep_text, totals *t) {
  sim_schedule schedule;
  sim_schedule_generate(seed, &schedule);
  bool *keep = malloc((schedule.count + 1) * sizeof(*keep));
  if (keep == NULL) abort();
  for (size_t i = 0; i < schedule.count; i++) keep[i] = true;
  bool ok = true;
  if (keep_text != NULL && sim_keep_parse(keep_text, keep, schedule.count) != 0) {
    fprintf(stderr, "hark-sim: invalid --keep list for seed %" PRIu64 " (%zu events): %s\n",
            seed, schedule.count, keep_text);
    ok = false;
  } else {
    char label[48];
    snprintf(label, sizeof(label), "seed %" PRIu64, seed);
    ok = run_one(c, &schedule, label, keep, t);
  }
  free(keep);
  sim_schedule_free(&schedule);
  return ok;
}

static bool run_scenarios(const cli *c, totals *t) {
  bool ok = true, found = false;
  for (size_t i = 0; i < sim_scenario_count(); i++) {
    const char *name = sim_scenario_name(i);
    if (strcmp(c->scenario, "all") != 0 && strcmp(c->scenario, name) != 0) continue;
    found = true;
    sim_schedule schedule;
    sim_scenario_build(i, &schedule);
    bool *keep = malloc((schedule.count + 1) * sizeof(*keep));
    if (keep == NULL) abort();
    for (size_t k = 0; k < schedule.count; k++) keep[k] = true;
    bool passed = run_one(c, &schedule, name, keep, t);
    printf("%s %s\n", passed ? "ok  " : "FAIL", name);
    ok = ok && passed;
    free(keep);
    sim_schedule_free(&schedule);
  }
  if (!found) {
    fprintf(stderr, "hark-sim: unknown scenario %s; --list shows them\n", c->scenario);
    return false;
  }
  return ok;
}

int main(int argc, char **argv) {
  cli c;
  if (parse_args(argc, argv, &c) != 0) return 2;
  /* The trackers log every replica up and down; a soak would drown in it. */
  hark_log_set_level(getenv("HARK_SIM_TRACE") ? HARK_LOG_DEBUG : HARK_LOG_ERROR);
  if (c.list) {
    for (size_t i = 0; i < sim_scenario_count(); i++) printf("%s\n", sim_scenario_name(i));
    return 0;
  }

  struct timespec start;
  clock_gettime(CLOCK_MONOTONIC, &start);
  totals t = {0};
  bool ok = true;
  uint64_t last_seed = c.from;
  if (c.scenario != NULL) {
    ok = run_scenarios(&c, &t);
  } else if (c.has_seed) {
    ok = run_seed(&c, c.seed, c.keep, &t);
    last_seed = c.seed;
  } else if (c.seeds > 0 || c.soak_seconds > 0) {
    for (uint64_t seed = c.from; ok || c.keep_going; seed++) {
      if (c.seeds > 0 && seed - c.from >= c.seeds) break;
      if (c.seeds == 0 && seconds_since(&start) >= c.soak_seconds) break;
      ok = run_seed(&c, seed, NULL, &t) && ok;
      last_seed = seed;
      fflush(stdout);
    }
  } else {
    fputs(USAGE, stderr);
    return 2;
  }

  printf("%s: %" PRIu64 " runs, %" PRIu64 " failed (last seed %" PRIu64 "), %.1f s, %.0f virtual s, %" PRIu64
         " checks, transfers: %" PRIu64 " requested, %" PRIu64 " delta, %" PRIu64 " full\n",
         ok ? "ok" : "FAILED", t.runs, t.failures, last_seed, seconds_since(&start),
         (double)t.virtual_ms / 1000.0, t.checks, t.requested, t.delta, t.full);
  return ok ? 0 : 1;
}
