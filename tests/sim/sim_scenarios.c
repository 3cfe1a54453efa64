#include "sim_scenarios.h"

#include <stdlib.h>
#include <string.h>

/* Nodes: n0 is the "primary" of the Phoenix tests, n1 and n2 the others.
 * The scripted config ticks every 100 ms, downs after 1 s and permdowns
 * after 5 s. */

typedef struct script {
  sim_schedule *s;
  size_t cap;
} script;

static sim_event *at(script *sc, uint64_t ms, sim_event_kind kind, unsigned node) {
  sim_schedule *s = sc->s;
  if (s->count == sc->cap) {
    sc->cap = sc->cap ? sc->cap * 2 : 16;
    s->events = realloc(s->events, sc->cap * sizeof(*s->events));
    if (s->events == NULL) abort();
  }
  sim_event *ev = &s->events[s->count++];
  *ev = (sim_event){.at_ms = ms, .kind = kind, .node = node};
  return ev;
}

/* A workload operation; `choice` as documented for sim_event. */
static void op(script *sc, uint64_t ms, unsigned node, unsigned owner, unsigned topic,
               unsigned key, unsigned choice) {
  sim_event *ev = at(sc, ms, SIM_EV_OP, node);
  ev->owner = owner;
  ev->topic = topic;
  ev->key = key;
  ev->choice = choice;
}

enum { TRACK = 0, UPDATE = 1, UNTRACK = 3, EXIT = 5, DUPLICATE = 6, UNTRACK_ABSENT = 7 };

/* Heartbeats repeat: the cluster stays up with no work, and a settled
 * cluster sends no transfer. */
static void heartbeats_repeat(script *sc) {
  sc->s->config.chaos_ms = 3000;
}

/* With n0 deaf, n1 tracks; once n0 hears again it catches up by transfer. */
static void deaf_primary_catches_up(script *sc) {
  sim_event *cut = at(sc, 0, SIM_EV_CUT_ONEWAY, 1);
  cut->other = 0;
  op(sc, 300, 1, 0, 0, 0, TRACK);
  at(sc, 1500, SIM_EV_HEAL, 0);
  sc->s->config.chaos_ms = 2000;
}

/* n1 is killed and permdowned, then restarts under a new vsn and tracks:
 * its old entry is gone from every node. */
static void killed_shard_permdowned(script *sc) {
  op(sc, 200, 1, 0, 0, 0, TRACK);
  op(sc, 250, 2, 0, 0, 1, TRACK);
  at(sc, 500, SIM_EV_CRASH, 1);
  at(sc, 500 + 2 * 5000, SIM_EV_RESTART, 1);
  op(sc, 10600, 1, 0, 0, 2, TRACK);
  sc->s->config.chaos_ms = 11000;
}

/* Suspend and resume keep the vsn; kill, restart under a new vsn, track,
 * kill again, and the final phase waits past permdown. */
static void replica_lifecycle(script *sc) {
  op(sc, 200, 1, 0, 0, 0, TRACK);
  op(sc, 200, 2, 0, 0, 1, TRACK);
  at(sc, 500, SIM_EV_PAUSE, 1);
  at(sc, 2000, SIM_EV_RESUME, 1);
  at(sc, 3000, SIM_EV_CRASH, 1);
  at(sc, 4500, SIM_EV_RESTART, 1);
  op(sc, 4600, 1, 0, 0, 2, TRACK);
  at(sc, 5500, SIM_EV_CRASH, 1);
  sc->s->config.chaos_ms = 6000;
}

/* Local and remote tracks, then both owners exit. */
static void owners_exit(script *sc) {
  op(sc, 200, 0, 0, 0, 0, TRACK);
  op(sc, 200, 1, 0, 0, 1, TRACK);
  op(sc, 200, 1, 0, 1, 1, TRACK);
  op(sc, 800, 0, 0, 0, 0, EXIT);
  op(sc, 800, 1, 0, 0, 1, EXIT);
  sc->s->config.chaos_ms = 1500;
}

/* A killed node's entry is hidden after down_period and dropped after
 * permdown_period. */
static void killed_node_hidden(script *sc) {
  op(sc, 200, 1, 0, 0, 0, TRACK);
  at(sc, 500, SIM_EV_CRASH, 1);
  sc->s->config.chaos_ms = 1000;
}

/* Untrack of nothing, untrack of one topic, owner exit, update and a
 * duplicate track. */
static void untrack_and_update(script *sc) {
  op(sc, 100, 0, 0, 0, 0, UNTRACK_ABSENT);
  op(sc, 200, 0, 0, 0, 0, TRACK);
  op(sc, 200, 0, 0, 1, 0, TRACK);
  op(sc, 200, 0, 0, 1, 1, TRACK);
  op(sc, 400, 0, 0, 0, 0, DUPLICATE);
  op(sc, 500, 0, 0, 0, 0, UPDATE);
  op(sc, 600, 0, 0, 1, 0, UNTRACK);
  op(sc, 700, 1, 1, 2, 0, TRACK);
  op(sc, 800, 1, 1, 2, 0, UPDATE);
  op(sc, 900, 0, 0, 0, 0, EXIT);
  sc->s->config.chaos_ms = 1500;
}

/* A graceful permdown removes n1's entries at once on every node. */
static void graceful_permdown(script *sc) {
  op(sc, 200, 1, 0, 0, 0, TRACK);
  at(sc, 500, SIM_EV_GRACEFUL, 1);
  sc->s->config.chaos_ms = 800;
}

/* A restart 5 ms after a crash, on a network that delays messages up to
 * 150 ms, so the old vsn's last heartbeats can arrive after the new
 * vsn's first ones. */
static void restart_reordered(script *sc) {
  sc->s->config.faults = (sim_faults){.min_delay_ms = 0, .max_delay_ms = 150};
  op(sc, 100, 1, 0, 0, 0, TRACK);
  for (unsigned i = 0; i < 6; i++) {
    uint64_t t = 400 + 700 * (uint64_t)i;
    at(sc, t, SIM_EV_CRASH, 1);
    at(sc, t + 5, SIM_EV_RESTART, 1);
    op(sc, t + 10, 1, 0, 0, i % SIM_CLUSTER_KEYS, TRACK);
  }
  sc->s->config.chaos_ms = 5000;
}

/* A partition longer than permdown_period, with work on both sides. */
static void partition_past_permdown(script *sc) {
  op(sc, 100, 0, 0, 0, 0, TRACK);
  op(sc, 100, 1, 0, 0, 1, TRACK);
  sim_event *p = at(sc, 300, SIM_EV_PARTITION, 0);
  p->groups = 1u; /* n0 alone */
  op(sc, 2000, 0, 1, 0, 2, TRACK);
  op(sc, 2000, 2, 0, 0, 3, TRACK);
  op(sc, 3000, 1, 0, 0, 1, UNTRACK);
  at(sc, 300 + 6500, SIM_EV_HEAL, 0);
  sc->s->config.chaos_ms = 7000;
}

/* n0 cannot reach n1, but n1 reaches n0, for three seconds. */
static void asymmetric_cut(script *sc) {
  op(sc, 100, 0, 0, 0, 0, TRACK);
  sim_event *cut = at(sc, 300, SIM_EV_CUT_ONEWAY, 0);
  cut->other = 1;
  op(sc, 800, 0, 0, 0, 0, UPDATE);
  op(sc, 900, 1, 0, 1, 0, TRACK);
  op(sc, 1500, 0, 1, 0, 1, TRACK);
  at(sc, 3300, SIM_EV_HEAL, 0);
  sc->s->config.chaos_ms = 3500;
}

/* n1's clock steps back 1.5 s and later forward 6 s (past permdown) while
 * n2 crashes. */
static void clock_jumps(script *sc) {
  op(sc, 100, 1, 0, 0, 0, TRACK);
  op(sc, 100, 2, 0, 0, 1, TRACK);
  sim_event *back = at(sc, 500, SIM_EV_CLOCK_JUMP, 1);
  back->jump_ms = -1500;
  at(sc, 600, SIM_EV_CRASH, 2);
  op(sc, 700, 1, 0, 0, 2, TRACK);
  sim_event *fwd = at(sc, 2500, SIM_EV_CLOCK_JUMP, 1);
  fwd->jump_ms = 6000;
  op(sc, 2600, 0, 0, 0, 3, TRACK);
  at(sc, 3000, SIM_EV_RESTART, 2);
  sc->s->config.chaos_ms = 4000;
}

/* n2 misses a few of n0's deltas (a one-way cut for 250 ms) and catches
 * up by transfer. With caps {100, 1000, 10000} a generation bridges its
 * clock, so the catch-up is a delta transfer. */
static void missed_deltas(script *sc) {
  op(sc, 1000, 0, 0, 0, 0, TRACK);
  sim_event *cut = at(sc, 1500, SIM_EV_CUT_ONEWAY, 0);
  cut->other = 2;
  op(sc, 1510, 0, 1, 0, 1, TRACK);
  op(sc, 1610, 0, 2, 0, 2, TRACK);
  at(sc, 1750, SIM_EV_HEAL, 0);
  sc->s->config.chaos_ms = 2500;
}

typedef struct scenario {
  const char *name;
  unsigned nodes;
  void (*build)(script *sc);
} scenario;

static const scenario SCENARIOS[] = {
    {"heartbeats-repeat", 2, heartbeats_repeat},
    {"deaf-primary-catches-up", 2, deaf_primary_catches_up},
    {"killed-shard-permdowned", 3, killed_shard_permdowned},
    {"replica-lifecycle", 3, replica_lifecycle},
    {"owners-exit", 2, owners_exit},
    {"killed-node-hidden", 2, killed_node_hidden},
    {"untrack-and-update", 2, untrack_and_update},
    {"graceful-permdown", 2, graceful_permdown},
    {"restart-reordered", 3, restart_reordered},
    {"partition-past-permdown", 3, partition_past_permdown},
    {"asymmetric-cut", 2, asymmetric_cut},
    {"clock-jumps", 3, clock_jumps},
    {"missed-deltas", 3, missed_deltas},
};

size_t sim_scenario_count(void) {
  return sizeof(SCENARIOS) / sizeof(SCENARIOS[0]);
}

const char *sim_scenario_name(size_t i) {
  return i < sim_scenario_count() ? SCENARIOS[i].name : NULL;
}

long sim_scenario_find(const char *name) {
  for (size_t i = 0; i < sim_scenario_count(); i++) {
    if (strcmp(SCENARIOS[i].name, name) == 0) return (long)i;
  }
  return -1;
}

void sim_scenario_build(size_t i, sim_schedule *out) {
  *out = (sim_schedule){.config = sim_config_scripted(SCENARIOS[i].nodes)};
  script sc = {out, 0};
  SCENARIOS[i].build(&sc);
}
