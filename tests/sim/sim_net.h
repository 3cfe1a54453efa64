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

/* One reported diff item. */
typedef struct sim_diff {
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
/* Number of messages held back by a hold rule and not yet released. */
size_t sim_net_held_count(const sim_net *net);

/* Schedules every held message for delivery now, in the order held.
 * Returns how many. */
size_t sim_net_release_held(sim_net *net);
/* Cuts (or heals) the link between two nodes in both directions. */
void sim_net_cut(sim_net *net, const char *a, const char *b, bool cut);
/* Runs timers and deliveries in time order for `ms` of virtual time. */
void sim_net_run_for(sim_net *net, uint64_t ms);
/* Messages sent and not yet delivered, dropped or held. */
size_t sim_net_in_flight(const sim_net *net);

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
/* A deaf node loses everything sent to it. */
void sim_node_deaf(sim_node *node, bool deaf);

/* Convenience wrappers that assert success. */
void sim_node_track(sim_node *node, unsigned owner, const char *topic, const char *key,
                    const char *meta);
void sim_node_update(sim_node *node, unsigned owner, const char *topic, const char *key,
                     const char *meta);
void sim_node_untrack(sim_node *node, unsigned owner, const char *topic, const char *key);

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
