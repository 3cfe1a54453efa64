/* Random schedules, shrinking and printing for sim_cluster. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "sim_cluster.h"

static void *checked_realloc(void *p, size_t size) {
  p = realloc(p, size);
  if (p == NULL) {
    fprintf(stderr, "sim_schedule: out of memory\n");
    abort();
  }
  return p;
}

/* splitmix64, separate from the network's generator so that the schedule
 * of a seed does not depend on how the network consumes randomness. */
static uint64_t next_random(uint64_t *state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static uint64_t below(uint64_t *rng, uint64_t bound) {
  return bound == 0 ? 0 : next_random(rng) % bound;
}

typedef struct builder {
  sim_schedule *schedule;
  size_t cap;
} builder;

static sim_event *add(builder *b, uint64_t at_ms, sim_event_kind kind, unsigned node) {
  sim_schedule *s = b->schedule;
  if (s->count == b->cap) {
    b->cap = b->cap ? b->cap * 2 : 64;
    s->events = checked_realloc(s->events, b->cap * sizeof(*s->events));
  }
  sim_event *ev = &s->events[s->count++];
  *ev = (sim_event){.at_ms = at_ms, .kind = kind, .node = node};
  return ev;
}

sim_config sim_config_scripted(unsigned nodes) {
  sim_config c = {.seed = 1, .node_count = nodes, .pool_size = 1, .chaos_ms = 0};
  hark_tracker_replication_defaults(&c.options);
  c.options.broadcast_period_ms = 100;
  c.options.max_silent_periods = 2;
  c.options.down_period_ms = 1000;
  c.options.permdown_period_ms = 5000;
  c.options.clock_sample_periods = 2;
  return c;
}

static void random_config(uint64_t *rng, sim_config *c) {
  c->node_count = 2 + (unsigned)below(rng, SIM_CLUSTER_MAX_NODES - 1);
  c->pool_size = below(rng, 3) == 0 ? 2 : 1;
  hark_tracker_replication_options *o = &c->options;
  hark_tracker_replication_defaults(o);
  o->broadcast_period_ms = 100;
  o->max_silent_periods = 1 + (unsigned)below(rng, 4);
  uint64_t beat = o->broadcast_period_ms * (o->max_silent_periods + 1);
  o->down_period_ms = 2 * beat + below(rng, 500);
  o->permdown_period_ms = 3 * o->down_period_ms + below(rng, 3000);
  o->clock_sample_periods = 1 + (unsigned)below(rng, 3);
  static const size_t caps[3][3] = {{4, 16, 64}, {2, 5, 6}, {100, 1000, 10000}};
  memcpy(o->max_delta_sizes, caps[below(rng, 3)], sizeof(caps[0]));
  o->max_delta_sizes_count = 3;

  c->faults.drop = below(rng, 3) == 0 ? 0.0 : (double)below(rng, 30) / 100.0;
  c->faults.duplicate = (double)below(rng, 15) / 100.0;
  c->faults.max_delay_ms = below(rng, 4) == 0 ? 0 : below(rng, 200);
  c->chaos_ms = 4000 + below(rng, 12000);
}

/* A fault's duration: mostly below down_period, sometimes past it, and
 * sometimes past permdown_period. */
static uint64_t random_duration(uint64_t *rng, const sim_config *c) {
  uint64_t down = c->options.down_period_ms, permdown = c->options.permdown_period_ms;
  switch (below(rng, 6)) {
  case 0:
    return below(rng, 60);
  case 1:
  case 2:
    return below(rng, down);
  case 3:
  case 4:
    return down + below(rng, down);
  default:
    return permdown + below(rng, permdown / 2);
  }
}

static void add_fault(builder *b, uint64_t *rng, const sim_config *c) {
  unsigned nodes = c->node_count;
  uint64_t start = below(rng, c->chaos_ms);
  uint64_t end = start + random_duration(rng, c);
  if (end > c->chaos_ms) end = c->chaos_ms;
  unsigned node = (unsigned)below(rng, nodes);
  sim_event *ev;
  switch (below(rng, 8)) {
  case 0:
    ev = add(b, start, SIM_EV_PARTITION, 0);
    ev->groups = (uint32_t)(1 + below(rng, (1u << nodes) - 2));
    add(b, end, SIM_EV_HEAL, 0);
    break;
  case 1:
    ev = add(b, start, SIM_EV_CUT_ONEWAY, node);
    ev->other = (node + 1 + (unsigned)below(rng, nodes - 1)) % nodes;
    add(b, end, SIM_EV_HEAL, 0);
    break;
  case 2:
    add(b, start, SIM_EV_CRASH, node);
    if (below(rng, 4) != 0) add(b, end, SIM_EV_RESTART, node);
    break;
  case 3:
    add(b, start, SIM_EV_PAUSE, node);
    add(b, end, SIM_EV_RESUME, node);
    break;
  case 4:
    add(b, start, SIM_EV_GRACEFUL, node);
    if (below(rng, 2) != 0) add(b, end, SIM_EV_RESTART, node);
    break;
  case 5: {
    ev = add(b, start, SIM_EV_CLOCK_JUMP, node);
    int64_t size = (int64_t)below(rng, 2 * c->options.down_period_ms) + 1;
    ev->jump_ms = below(rng, 2) ? size : -size;
    break;
  }
  default:
    ev = add(b, start, SIM_EV_FAULTS, 0);
    ev->drop = (double)below(rng, 50) / 100.0;
    ev->duplicate = (double)below(rng, 30) / 100.0;
    ev->max_delay_ms = below(rng, 400);
    break;
  }
}

static void add_operations(builder *b, uint64_t *rng, const sim_config *c) {
  uint64_t gap = 20 + below(rng, 80);
  size_t count = (size_t)(c->chaos_ms / gap);
  for (size_t i = 0; i < count; i++) {
    sim_event *ev = add(b, below(rng, c->chaos_ms), SIM_EV_OP, (unsigned)below(rng, c->node_count));
    ev->owner = (unsigned)below(rng, SIM_CLUSTER_OWNERS);
    ev->topic = (unsigned)below(rng, SIM_CLUSTER_TOPICS);
    ev->key = (unsigned)below(rng, SIM_CLUSTER_KEYS);
    ev->choice = (unsigned)below(rng, 64);
  }
}

void sim_schedule_generate(uint64_t seed, sim_schedule *out) {
  *out = (sim_schedule){0};
  uint64_t rng = seed ^ 0x6a09e667f3bcc909ULL;
  sim_config *c = &out->config;
  c->seed = seed;
  random_config(&rng, c);
  builder b = {out, 0};
  add_operations(&b, &rng, c);
  unsigned faults = (unsigned)below(&rng, 8);
  for (unsigned i = 0; i < faults; i++) add_fault(&b, &rng, c);
  /* A stable sort, so events at the same time keep their order of
   * generation on every C library (qsort is not stable). */
  for (size_t i = 1; i < out->count; i++) {
    sim_event ev = out->events[i];
    size_t k = i;
    while (k > 0 && out->events[k - 1].at_ms > ev.at_ms) {
      out->events[k] = out->events[k - 1];
      k--;
    }
    out->events[k] = ev;
  }
}

void sim_schedule_free(sim_schedule *schedule) {
  free(schedule->events);
  *schedule = (sim_schedule){0};
}

/* ---- shrinking ---- */

static bool still_fails(const sim_schedule *schedule, const bool *keep, const char *invariant) {
  sim_report report;
  if (sim_run(schedule, keep, &report)) return false;
  return invariant == NULL || strcmp(report.invariant, invariant) == 0;
}

static size_t kept_count(const bool *keep, size_t count) {
  size_t n = 0;
  for (size_t i = 0; i < count; i++) n += keep[i];
  return n;
}

/* Tries to drop `chunk` kept events starting at the kept position `from`.
 * Returns true when the run still fails without them (they stay dropped). */
static bool try_drop(const sim_schedule *schedule, bool *keep, size_t from, size_t chunk,
                     const char *invariant) {
  bool *trial = checked_realloc(NULL, schedule->count * sizeof(*trial));
  memcpy(trial, keep, schedule->count * sizeof(*trial));
  size_t seen = 0, dropped = 0;
  for (size_t i = 0; i < schedule->count && dropped < chunk; i++) {
    if (!trial[i]) continue;
    if (seen++ >= from) {
      trial[i] = false;
      dropped++;
    }
  }
  bool fails = dropped > 0 && still_fails(schedule, trial, invariant);
  if (fails) memcpy(keep, trial, schedule->count * sizeof(*trial));
  free(trial);
  return fails;
}

size_t sim_shrink(const sim_schedule *schedule, bool *keep, const char *invariant,
                  size_t max_runs) {
  size_t runs = 0;
  size_t chunk = kept_count(keep, schedule->count) / 2;
  if (chunk == 0) chunk = 1;
  while (runs < max_runs) {
    bool progress = false;
    size_t from = 0;
    while (runs < max_runs && from < kept_count(keep, schedule->count)) {
      runs++;
      if (try_drop(schedule, keep, from, chunk, invariant)) progress = true;
      else from += chunk;
    }
    if (chunk == 1 && !progress) break;
    if (!progress || chunk > kept_count(keep, schedule->count)) chunk = chunk / 2 ? chunk / 2 : 1;
  }
  return kept_count(keep, schedule->count);
}

/* ---- printing ---- */

static const char *kind_name(sim_event_kind kind) {
  switch (kind) {
  case SIM_EV_OP: return "op";
  case SIM_EV_PARTITION: return "partition";
  case SIM_EV_CUT_ONEWAY: return "cut-oneway";
  case SIM_EV_HEAL: return "heal";
  case SIM_EV_CRASH: return "crash";
  case SIM_EV_RESTART: return "restart";
  case SIM_EV_PAUSE: return "pause";
  case SIM_EV_RESUME: return "resume";
  case SIM_EV_GRACEFUL: return "graceful-permdown";
  case SIM_EV_CLOCK_JUMP: return "clock-jump";
  case SIM_EV_FAULTS: return "faults";
  }
  return "?";
}

static void print_event(FILE *out, size_t index, const sim_event *ev) {
  fprintf(out, "  #%zu t=%" PRIu64 "ms %s", index, ev->at_ms, kind_name(ev->kind));
  switch (ev->kind) {
  case SIM_EV_OP:
    fprintf(out, " n%u owner=%u topic=%u key=k%u choice=%u", ev->node, ev->owner, ev->topic,
            ev->key, ev->choice % 8);
    break;
  case SIM_EV_PARTITION:
    fprintf(out, " groups=0x%x", (unsigned)ev->groups);
    break;
  case SIM_EV_CUT_ONEWAY:
    fprintf(out, " n%u->n%u", ev->node, ev->other);
    break;
  case SIM_EV_CLOCK_JUMP:
    fprintf(out, " n%u by %+" PRId64 "ms", ev->node, ev->jump_ms);
    break;
  case SIM_EV_FAULTS:
    fprintf(out, " drop=%.2f duplicate=%.2f max_delay=%" PRIu64 "ms", ev->drop, ev->duplicate,
            ev->max_delay_ms);
    break;
  case SIM_EV_HEAL:
    break;
  default:
    fprintf(out, " n%u", ev->node);
    break;
  }
  fputc('\n', out);
}

void sim_schedule_print(FILE *out, const sim_schedule *schedule, const bool *keep) {
  const sim_config *c = &schedule->config;
  const hark_tracker_replication_options *o = &c->options;
  fprintf(out,
          "  config: seed=%" PRIu64 " nodes=%u shards=%u period=%" PRIu64
          "ms silent=%u down=%" PRIu64 "ms permdown=%" PRIu64
          "ms samples=%u caps=%zu/%zu/%zu drop=%.2f duplicate=%.2f max_delay=%" PRIu64
          "ms chaos=%" PRIu64 "ms\n",
          c->seed, c->node_count, c->pool_size, o->broadcast_period_ms, o->max_silent_periods,
          o->down_period_ms, o->permdown_period_ms, o->clock_sample_periods,
          o->max_delta_sizes[0], o->max_delta_sizes[1], o->max_delta_sizes[2], c->faults.drop,
          c->faults.duplicate, c->faults.max_delay_ms, c->chaos_ms);
  for (size_t i = 0; i < schedule->count; i++) {
    if (keep == NULL || keep[i]) print_event(out, i, &schedule->events[i]);
  }
}

void sim_keep_format(const sim_schedule *schedule, const bool *keep, char *out, size_t cap) {
  size_t used = 0;
  out[0] = '\0';
  for (size_t i = 0; i < schedule->count; i++) {
    if (!keep[i]) continue;
    size_t end = i;
    while (end + 1 < schedule->count && keep[end + 1]) end++;
    int n = end > i ? snprintf(out + used, cap - used, "%s%zu-%zu", used ? "," : "", i, end)
                    : snprintf(out + used, cap - used, "%s%zu", used ? "," : "", i);
    if (n < 0 || (size_t)n >= cap - used) {
      out[used] = '\0';
      return;
    }
    used += (size_t)n;
    i = end;
  }
  if (used == 0) snprintf(out, cap, "none");
}

int sim_keep_parse(const char *text, bool *keep, size_t count) {
  memset(keep, 0, count * sizeof(*keep));
  if (strcmp(text, "none") == 0) return 0;
  const char *p = text;
  while (*p) {
    char *end;
    unsigned long lo = strtoul(p, &end, 10), hi = lo;
    if (end == p) return -1;
    p = end;
    if (*p == '-') {
      hi = strtoul(p + 1, &end, 10);
      if (end == p + 1) return -1;
      p = end;
    }
    if (hi < lo || hi >= count) return -1;
    for (unsigned long i = lo; i <= hi; i++) keep[i] = true;
    if (*p == ',') p++;
    else if (*p != '\0') return -1;
  }
  return 0;
}
