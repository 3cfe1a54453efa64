/* Private types of the pubsub layer: the per-topic registry record and the
 * hash map that finds it by topic bytes. */
#ifndef HARK_PUBSUB_INTERNAL_H
#define HARK_PUBSUB_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "hark/pubsub.h"

typedef struct hark__sub_state hark__sub_state;

/* Back-reference from an entry to the subscription that owns it: the
 * subscriber's state and the index of the matching ref in its `refs` array.
 * `state` is NULL once the entry was removed while a dispatch was reading the
 * array; the entry then waits for compaction. */
typedef struct hark__entry_owner {
  hark__sub_state *state;
  size_t ref;
} hark__entry_owner;

/* An entry array with a link in front, so that an array replaced during a
 * dispatch can wait on a list without another allocation. */
typedef struct hark__entry_block {
  struct hark__entry_block *next_retired;
  hark_dispatch_entry entries[];
} hark__entry_block;

/* The entries of one topic in one registry partition.
 *
 * Invariants: `block->entries` and `owners` have `count` used slots, of which `dead`
 * are removed ones. While `dispatching` is non-zero a dispatcher may be
 * reading `block->entries`, so no entry in [0, count) moves or changes and the array
 * is never reallocated in place. When `dispatching` is zero, `dead` is zero
 * and `retired` is empty. */
typedef struct hark__partition {
  hark__entry_block *block; /* NULL until the first entry */
  hark__entry_owner *owners;
  size_t count;
  size_t cap;
  size_t dead;
  unsigned dispatching;        /* dispatcher calls now reading this array */
  hark__entry_block *retired;  /* replaced arrays, freed when dispatching drops to 0 */
} hark__partition;

/* One topic with at least one entry, or pinned by a call in progress. The
 * name is stored after `parts` and is NUL-terminated. */
typedef struct hark__topic {
  uint64_t hash;
  const char *name;
  size_t len;
  size_t live;   /* entries not removed, across all partitions */
  unsigned pins; /* calls in progress that hold this pointer; it is not freed meanwhile */
  hark__partition parts[];
} hark__topic;

/* Open-addressing hash map from topic bytes to topic records, with linear
 * probing and backward-shift deletion. A zeroed struct is an empty map. The
 * map does not own the records. */
typedef struct hark__topic_map {
  hark__topic **slots;
  size_t cap; /* 0 or a power of two */
  size_t count;
} hark__topic_map;

/* One subscriber's subscriptions in one instance: where each of its entries
 * sits. Created by the subscriber's first subscribe on that instance and freed
 * when its last entry goes, so a subscriber with no subscriptions uses no
 * memory. Reached from hark_subscriber.internal_, a list with one state per
 * instance the subscriber is subscribed on. */
typedef struct hark__sub_ref {
  hark__topic *topic;
  size_t index; /* in topic->parts[state->partition] */
} hark__sub_ref;

struct hark__sub_state {
  hark_pubsub *ps;
  hark_subscriber *sub;
  hark__sub_state *next_of_sub; /* the same subscriber's state on another instance */
  hark__sub_state *prev;        /* in ps->states */
  hark__sub_state *next;
  unsigned partition; /* fixed by hashing the subscriber pointer */
  hark__sub_ref *refs;       /* &first_ref while cap is 1, else malloc'd */
  size_t count;
  size_t cap;
  hark__sub_ref first_ref;
};

/* A dispatcher call in progress, innermost first. The default dispatcher uses
 * it to skip entries removed during the call. `index` maps positions in
 * `entries` to positions in the partition, or is NULL when `entries` is the
 * partition's own array. */
typedef struct hark__dispatch_frame {
  const hark__partition *part;
  const hark_dispatch_entry *entries;
  size_t count;
  const size_t *index;
  struct hark__dispatch_frame *prev;
} hark__dispatch_frame;

struct hark_pubsub {
  uv_loop_t *loop;
  char *node_name;
  unsigned pool_size;
  int has_adapter;
  hark_pubsub_adapter adapter; /* copied; valid when has_adapter */
  hark_dispatcher default_dispatcher;
  const hark_dispatcher **dispatchers; /* borrowed; they outlive the instance */
  size_t dispatcher_count;
  size_t dispatcher_cap;
  hark__topic_map topics;    /* owns the topic records */
  hark__sub_state *states;   /* owns every subscriber state of this instance */
  hark__dispatch_frame *frame;
  hark_pubsub_group *group;  /* NULL, or the group this instance is a member of */
  unsigned group_member;
};

/* Registry operations (registry.c). */
void hark__registry_free(hark_pubsub *ps);
void hark__partition_end_dispatch(hark__partition *part);
void hark__topic_unpin(hark_pubsub *ps, hark__topic *topic);

/* The default dispatcher (dispatch.c); `ctx` is the instance. */
void hark__default_dispatch(void *ctx, const char *topic, size_t topic_len,
                            const hark_dispatch_entry *entries, size_t count,
                            const hark_subscriber *from, const hark_message *msg);

/* Dispatches to this instance's subscribers only (dispatch.c). */
void hark__dispatch_local(hark_pubsub *ps, const hark_subscriber *from, const char *topic,
                          size_t topic_len, const hark_message *msg,
                          const hark_dispatcher *dispatcher);

/* Groups (group.c). join registers `ps` as a member; leave unregisters it
 * and drops the messages queued for it. interest records that the member
 * gained (added = 1) or lost its first or last subscriber to a topic.
 * group_dispatch delivers on this member and on every other member with a
 * subscriber, and with `uplink` also sends through member 0's adapter. */
int hark__group_join(hark_pubsub *ps, hark_pubsub_group *group, unsigned index);
void hark__group_leave(hark_pubsub *ps);
void hark__group_interest(hark_pubsub *ps, const char *topic, size_t len, int added);
void hark__group_dispatch(hark_pubsub *ps, const hark_subscriber *from, const char *topic,
                          size_t topic_len, const hark_message *msg,
                          const hark_dispatcher *dispatcher, int uplink, const char *node_name);

/* Calls fn for every topic with a subscriber on this node: on any member of
 * the instance's group, or on the instance alone. Stops at the first
 * non-zero result and returns it. In a group, fn runs under the group lock
 * and must not call back into pubsub. */
int hark__node_topics(hark_pubsub *ps, int (*fn)(void *ctx, const char *topic, size_t len),
                      void *ctx);

uint64_t hark__hash_bytes(const char *bytes, size_t len);

hark__topic *hark__topic_map_find(const hark__topic_map *map, const char *name, size_t len,
                                  uint64_t hash);

/* Inserts `topic`, which must not be in the map yet. Returns 0, or
 * HARK_ENOMEM with the map unchanged. */
int hark__topic_map_insert(hark__topic_map *map, hark__topic *topic);

/* Removes `topic`, which must be in the map. */
void hark__topic_map_remove(hark__topic_map *map, const hark__topic *topic);

/* Frees the slot array, not the records. */
void hark__topic_map_free(hark__topic_map *map);

#endif
