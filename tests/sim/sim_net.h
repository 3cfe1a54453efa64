/* A deterministic in-memory cluster for tracker replication tests: several
 * trackers in one process, a virtual clock, timers as an event queue and a
 * simulated network that can drop, delay, duplicate, reorder, hold and cut
 * messages under a seeded PRNG. Nothing reads the real clock, so a run is
 * a pure function of its seed and the test's calls.
 *
 * Every call runs on the test's thread. Nodes are addressed by name; a
 * killed node stays known by name and can be restarted with a new vsn. */
#ifndef HARK_SIM_NET_H
#define HARK_SIM_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hark/tracker.h"

typedef struct sim_net sim_net;
typedef struct sim_node sim_node;

/* Network faults, applied to each message per recipient. */
typedef struct sim_faults {
  double drop;           /* probability that a message is lost */
  double duplicate;      /* probability that it is delivered twice */
  uint64_t min_delay_ms; /* delivery delay, uniform in [min, max]; a range reorders */
  uint64_t max_delay_ms;
} sim_faults;

/* One message in flight. `to` is NULL in the tap for a broadcast. */
typedef struct sim_msg {
  const char *from;
  const char *to;
  const char *topic;
  size_t topic_len;
  const unsigned char *data;
  size_t len;
} sim_msg;

typedef enum sim_verdict {
  SIM_DELIVER, /* apply the faults and deliver */
  SIM_DROP,    /* lose it */
  SIM_HOLD,    /* keep it until sim_net_release_held */
} sim_verdict;

/* Decides the fate of one message to one recipient, before the faults. */
typedef sim_verdict (*sim_filter_fn)(void *ctx, const sim_msg *msg);
/* Sees every message as it is sent, once per send call. */
typedef void (*sim_tap_fn)(void *ctx, const sim_msg *msg);
/* Sees a message just before the recipient's tracker receives it. */
typedef void (*sim_inspect_fn)(void *ctx, sim_node *to, const sim_msg *msg);
/* Runs after a timer or a delivery has run on `node`. */
typedef void (*sim_observer_fn)(void *ctx, sim_node *node);

/* One reported diff item. */
typedef struct sim_diff {
  uint64_t owner;
  char *topic;
  char *key;
  char *meta;
  bool join;
  uint64_t at_ms;
} sim_diff;

sim_net *sim_net_new(uint64_t seed);
/* Destroys every node and frees the network. */
void sim_net_free(sim_net *net);

uint64_t sim_net_now_ms(const sim_net *net);
uint64_t sim_net_random(sim_net *net);
void sim_net_set_faults(sim_net *net, const sim_faults *faults);
void sim_net_set_filter(sim_net *net, sim_filter_fn fn, void *ctx);
void sim_net_set_tap(sim_net *net, sim_tap_fn fn, void *ctx);
void sim_net_set_inspector(sim_net *net, sim_inspect_fn fn, void *ctx);
void sim_net_set_observer(sim_net *net, sim_observer_fn fn, void *ctx);
/* Makes the running sim_net_run_for return after the current event and
 * every later one return at once; virtual time stops advancing. */
void sim_net_halt(sim_net *net);
bool sim_net_halted(const sim_net *net);
/* Number of messages held back by a hold rule and not yet released. */
size_t sim_net_held_count(const sim_net *net);

/* Schedules every held message for delivery now, in the order held.
 * Returns how many. */
size_t sim_net_release_held(sim_net *net);
/* Cuts (or heals) the link between two nodes in both directions. */
void sim_net_cut(sim_net *net, const char *a, const char *b, bool cut);
/* Cuts (or heals) only the direction from `from` to `to`. */
void sim_net_cut_oneway(sim_net *net, const char *from, const char *to, bool cut);
/* Heals every cut link. */
void sim_net_heal_all(sim_net *net);
/* Runs timers and deliveries in time order for `ms` of virtual time. */
void sim_net_run_for(sim_net *net, uint64_t ms);
/* Messages sent and not yet delivered, dropped or held. */
size_t sim_net_in_flight(const sim_net *net);
/* Messages from the node named `from` to `to` that `to` has not handled
 * yet: in flight, held, or waiting for `to` to resume. */
size_t sim_net_pending_from(const sim_net *net, const char *from, const sim_node *to);

/* Starts a node: a tracker named `name` with `pool_size` shards that
 * replicates as tracker "sim" with `options` (NULL for defaults). */
sim_node *sim_net_start_node(sim_net *net, const char *name, unsigned pool_size,
                             const hark_tracker_replication_options *options);
sim_node *sim_net_node(sim_net *net, const char *name);

hark_tracker *sim_node_tracker(sim_node *node);
const char *sim_node_name(const sim_node *node);
/* A fake owner for track calls, stable for the node's lifetime. i < 64. */
const hark_subscriber *sim_node_owner(sim_node *node, unsigned i);

/* Destroys the tracker without a word to the peers, as a crash does. */
void sim_node_kill(sim_node *node);
/* Starts a new tracker under the same name (a new vsn). */
void sim_node_restart(sim_node *node);
bool sim_node_alive(const sim_node *node);
/* A paused node runs no timer and receives nothing; both wait for resume. */
void sim_node_pause(sim_node *node, bool paused);
bool sim_node_paused(const sim_node *node);
/* A deaf node loses everything sent to it. */
void sim_node_deaf(sim_node *node, bool deaf);
/* Moves the node's wall clock (what its env's now_ms and its phx_refs
 * read) by `delta_ms`, forward or backward. The network's clock and the
 * other nodes are unaffected. The offset stays for the node's lifetime,
 * restarts included. */
void sim_node_jump_clock(sim_node *node, int64_t delta_ms);
int64_t sim_node_clock_offset(const sim_node *node);
/* The node's wall clock in milliseconds. */
uint64_t sim_node_now_ms(const sim_node *node);
/* How many times the node's tracker was started: 1 after the first start. */
unsigned sim_node_incarnation(const sim_node *node);

/* Convenience wrappers that assert success. */
void sim_node_track(sim_node *node, unsigned owner, const char *topic, const char *key,
                    const char *meta);
void sim_node_update(sim_node *node, unsigned owner, const char *topic, const char *key,
                     const char *meta);
void sim_node_untrack(sim_node *node, unsigned owner, const char *topic, const char *key);

/* The number of nodes started so far, and the i-th in start order. */
size_t sim_net_node_count(const sim_net *net);
sim_node *sim_net_node_at(sim_net *net, size_t i);

/* The visible entries of a topic as one string: "owner/key=meta" items
 * sorted and joined by '\n'. Replicas store the origin's meta bytes, so
 * equal lists mean equal entries. The caller frees it. */
char *sim_node_list(sim_node *node, const char *topic);

/* The diffs the node reported since start or the last clear. */
size_t sim_node_diff_count(const sim_node *node);
const sim_diff *sim_node_diff(const sim_node *node, size_t i);
size_t sim_node_count_diffs(const sim_node *node, const char *topic, const char *key, bool join);
void sim_node_clear_diffs(sim_node *node);

/* The replica record of `name` on shard 0, as hark_tracker_replicas
 * reports it. Returns false when there is none. */
bool sim_node_replica(sim_node *node, const char *name, hark_replica_status *status,
                      uint64_t *vsn);

#endif
