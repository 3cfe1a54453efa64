/* A fault-injecting cluster simulator for tracker replication.
 *
 * A schedule is a list of timed events. Workload events track, update,
 * untrack and make owners exit. Fault events partition the network, cut one
 * direction, heal, crash nodes, restart them under a new vsn, pause them,
 * shut them down gracefully, move their clocks and change the per-message
 * loss, duplication and delay. sim_run
 * plays a schedule on the trackers of sim_net, through the same replication
 * code as harkd, and checks these invariants:
 *
 * - diff replay: on each node, the joins and leaves reported to the diff
 *   callback, replayed from empty, equal what list returns, after every
 *   event;
 * - no resurrection: once a node has dropped a dead replica (replaced by its
 *   successor's vsn, gracefully permdowned, or permdowned for silence with
 *   none of its messages still on the way), that replica's entries never
 *   show again on that node, and a restarted node never shows its own
 *   earlier entries;
 * - no leak: a dropped replica leaves no status, context, cloud, entry,
 *   generation data or replica record behind;
 * - convergence: after the faults heal and a quiet time, every live node
 *   lists the same entries, exactly the ones the live owners hold;
 * - bounded catch-up: a full transfer is sent only when no delta generation
 *   bridges the requester's clock, and a settled cluster sends no transfer.
 *
 * A run is a pure function of the schedule: the network's randomness comes
 * from the schedule's seed. */
#ifndef HARK_SIM_CLUSTER_H
#define HARK_SIM_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "hark/tracker.h"
#include "sim_net.h"

#define SIM_CLUSTER_MAX_NODES 5
#define SIM_CLUSTER_MAX_SHARDS 2
#define SIM_CLUSTER_OWNERS 6
#define SIM_CLUSTER_TOPICS 3
#define SIM_CLUSTER_KEYS 4

typedef enum sim_event_kind {
  SIM_EV_OP,         /* a workload operation of `owner` on (topic, key), see below */
  SIM_EV_PARTITION,  /* cut every link between the nodes in `groups` and the others */
  SIM_EV_CUT_ONEWAY, /* lose every message from `node` to `other` */
  SIM_EV_HEAL,       /* heal every cut */
  SIM_EV_CRASH,      /* destroy the tracker without a word */
  SIM_EV_RESTART,    /* start a crashed or stopped node again, under a new vsn */
  SIM_EV_PAUSE,      /* stop running timers and receiving (as a stopped VM) */
  SIM_EV_RESUME,
  SIM_EV_GRACEFUL,   /* graceful permdown, then the tracker is destroyed */
  SIM_EV_CLOCK_JUMP, /* move the node's wall clock by `jump_ms` */
  SIM_EV_FAULTS,     /* set the network's loss, duplication and delay */
} sim_event_kind;

/* One event. A workload operation is resolved when it runs, against the
 * owner's entries at that time, so that removing events keeps a schedule
 * valid:
 * - the entry is not tracked: `choice` % 8 == 7 untracks it (a no-op),
 *   anything else tracks it;
 * - it is tracked: `choice` % 8 in 0-2 updates it, 3-4 untracks it, 5 makes
 *   the owner exit (untrack_all), 6 tracks it again (expects HARK_EALREADY),
 *   7 updates it.
 * An event whose node cannot take it (dead, paused, already up) is skipped. */
typedef struct sim_event {
  uint64_t at_ms; /* from the start of the run */
  sim_event_kind kind;
  unsigned node;
  unsigned other;
  unsigned owner, topic, key, choice;
  uint32_t groups; /* a bit per node index */
  int64_t jump_ms;
  double drop, duplicate;
  uint64_t max_delay_ms;
} sim_event;

typedef struct sim_config {
  uint64_t seed; /* the network's randomness */
  unsigned node_count;
  unsigned pool_size;
  hark_tracker_replication_options options;
  sim_faults faults;   /* from the start until the first SIM_EV_FAULTS */
  uint64_t chaos_ms;   /* when the final phase starts: every fault heals */
} sim_config;

typedef struct sim_schedule {
  sim_config config;
  sim_event *events; /* sorted by at_ms; owned */
  size_t count;
} sim_schedule;

/* Builds the random schedule of `seed`. Free it with sim_schedule_free. */
void sim_schedule_generate(uint64_t seed, sim_schedule *out);
void sim_schedule_free(sim_schedule *schedule);
/* The config scripted scenarios start from: `nodes` nodes, one shard, no
 * network faults, short periods (100 ms ticks, 1 s down, 5 s permdown). */
sim_config sim_config_scripted(unsigned nodes);

/* The outcome of one run. */
typedef struct sim_report {
  bool failed;
  const char *invariant; /* a static name when failed */
  char message[1024];
  uint64_t at_ms;      /* virtual time of the failure, from the start */
  size_t event_index;  /* the last schedule event applied before it */
  /* Totals over every incarnation of every node. */
  uint64_t transfers_requested, transfers_sent_full, transfers_sent_delta;
  uint64_t heartbeats_sent, bytes_sent, replicas_down, replicas_permdown;
  uint64_t checks;     /* observer checks done */
  uint64_t virtual_ms; /* length of the run */
} sim_report;

/* Plays `schedule`, applying only the events whose `keep` flag is set (NULL
 * keeps all). Returns true when no invariant failed. */
bool sim_run(const sim_schedule *schedule, const bool *keep, sim_report *report);

/* Removes events from `keep` while the run still fails with the same
 * invariant, for at most `max_runs` runs. Returns the number of events
 * kept. */
size_t sim_shrink(const sim_schedule *schedule, bool *keep, const char *invariant,
                  size_t max_runs);

/* Prints the kept events, one a line. */
void sim_schedule_print(FILE *out, const sim_schedule *schedule, const bool *keep);
/* Writes the kept event indices as "0,3,5-9" into `out`. */
void sim_keep_format(const sim_schedule *schedule, const bool *keep, char *out, size_t cap);
/* Parses such a list into `keep` (count flags). Returns 0, or -1 when it
 * is malformed or names an index out of range. */
int sim_keep_parse(const char *text, bool *keep, size_t count);

#endif
