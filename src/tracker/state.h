/* The tracker's CRDT: an observed-remove set of presence entries, replicated
 * between the replicas of one shard.
 *
 * An entry is (topic, owner, key) with a meta, the meta being opaque bytes to
 * the CRDT. Every entry carries a tag (replica, counter): the event of the
 * replica that added it. Each replica keeps a context, a version vector of the
 * counters of each replica it has seen, and clouds, the counters
 * seen out of order. A remote entry is added on merge when its tag is unseen,
 * and a local copy of a remote entry is removed when the remote has seen its
 * tag but no longer contains it. Only the owning replica removes its own
 * entries. An owner id is only unique within its replica, so an entry's
 * owner is (tag replica, owner).
 *
 * The state is pure: it does no I/O, reads no clock and writes no log.
 *
 * Deliberate differences from Phoenix.Tracker.State 2.2.0:
 * - a merge never re-adds an entry older than the one held for the same
 *   (topic, owner, key), so a stale full extract cannot overwrite newer data;
 * - a merge that overwrites an entry without observing its removal reports
 *   the old meta as a leave;
 * - an observed remove keeps the removed tag seen (Phoenix deletes it from the
 *   clouds, which can stall the context below it);
 * - remove_down_replicas also deletes the replica's up/down status;
 * - extract leaves out the requester's own entries, matching name and vsn;
 * - the replica's own dots are never stored in its clouds: they are always
 *   covered by its own context counter. */
#ifndef HARK_TRACKER_STATE_H
#define HARK_TRACKER_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tracker/clock.h"
#include "tracker/delta.h"

/* The maximum key length in bytes. Longer keys are rejected on join and
 * skipped on merge. */
#define HARK__MAX_KEY_LEN 65535

typedef struct hark__state hark__state;
typedef struct hark__entry hark__entry;

typedef enum hark__status {
  HARK__STATUS_NONE = 0, /* not in the replicas map */
  HARK__STATUS_UP = 1,
  HARK__STATUS_DOWN = 2,
} hark__status;

/* One stored entry, read through the accessors below. */
typedef struct hark__entry_view {
  hark__rref replica; /* the tag's replica, which also owns the owner id */
  uint64_t counter;   /* the tag's counter */
  uint64_t owner;
  const char *topic;
  size_t topic_len;
  const char *key;
  size_t key_len;
  const char *meta;
  size_t meta_len;
} hark__entry_view;

/* The joins and leaves caused by one operation. Join items point to live
 * entries. Leave items point to entries detached from the state, which the
 * list keeps alive, or to a live entry whose meta was replaced, with the old
 * meta kept by the list. Items are valid until the state changes again or
 * the list is cleared. A list contains the changes of one state only, because
 * clearing it returns the detached entries to that state's allocator: clear
 * it before freeing the state or using it with another one. */
typedef struct hark__change {
  const hark__entry *entry;
  const char *meta; /* the meta to report: the new one for a join, the old one for a leave */
  size_t meta_len;
  bool join;
} hark__change;

typedef struct hark__changes {
  hark__change *items;
  size_t count;
  size_t cap;
  const hark__state *state; /* the state the items come from */
  hark__entry *detached;    /* removed entries, freed with the list */
  char **old_metas;         /* replaced metas, freed with the list */
  size_t old_meta_count;
  size_t old_meta_cap;
  bool items_huge; /* `items` is a block from hark__realloc_large's cache */
} hark__changes;

/* Views one change; `view->meta` is the change's meta. */
void hark__change_view(const hark__changes *changes, size_t i, hark__entry_view *view);
void hark__changes_clear(hark__changes *changes);

/* Creates a state for replica `self` (copied). Returns NULL when out of memory. */
hark__state *hark__state_new(hark__rref self);
void hark__state_free(hark__state *state);
hark__rref hark__state_self(const hark__state *state);

/* Local operations, on entries owned by this replica. Each may record its
 * joins and leaves in `changes` (NULL to skip). */

/* Adds an entry; `meta` is copied. Returns 0, HARK_EALREADY when (owner,
 * topic, key) is already present, HARK_EINVAL for a key longer than
 * HARK__MAX_KEY_LEN, or HARK_ENOMEM. */
int hark__state_join(hark__state *state, uint64_t owner, const char *topic, size_t topic_len,
                     const char *key, size_t key_len, const char *meta, size_t meta_len,
                     hark__changes *changes);

/* Removes an entry. Returns 0 or HARK_ENOENT. HARK_ENOMEM is possible only
 * when `changes` is set or a tombstone cannot be stored. */
int hark__state_leave(hark__state *state, uint64_t owner, const char *topic, size_t topic_len,
                      const char *key, size_t key_len, hark__changes *changes);

/* Replaces an entry's meta in place (an update: two events, the removal of
 * the old tag and the addition of a new one). Returns 0, HARK_ENOENT or
 * HARK_ENOMEM. */
int hark__state_leave_join(hark__state *state, uint64_t owner, const char *topic,
                           size_t topic_len, const char *key, size_t key_len, const char *meta,
                           size_t meta_len, hark__changes *changes);

/* Removes every entry of a local owner. Returns 0 or HARK_ENOMEM. */
int hark__state_leave_owner(hark__state *state, uint64_t owner, hark__changes *changes);

/* Lookups. get_by_owner* do not hide down replicas; the others do. Entries
 * are visited in tracking order (remote ones in the order they were merged;
 * an update keeps the position). The callback must not change the state.
 * get_by_owner is indexed for this replica's owners only; for a remote
 * replica it walks all of that replica's entries. */
typedef void (*hark__entry_cb)(void *ctx, const hark__entry *entry);

const hark__entry *hark__state_get_by_owner_key(const hark__state *state, hark__rref replica,
                                                uint64_t owner, const char *topic,
                                                size_t topic_len, const char *key,
                                                size_t key_len);
void hark__state_get_by_owner(const hark__state *state, hark__rref replica, uint64_t owner,
                              hark__entry_cb fn, void *ctx);
void hark__state_get_by_topic(const hark__state *state, const char *topic, size_t topic_len,
                              hark__entry_cb fn, void *ctx);
void hark__state_get_by_key(const hark__state *state, const char *topic, size_t topic_len,
                            const char *key, size_t key_len, hark__entry_cb fn, void *ctx);
size_t hark__state_topic_count(const hark__state *state, const char *topic, size_t topic_len);
void hark__state_online_list(const hark__state *state, hark__entry_cb fn, void *ctx);
/* Every stored entry, down replicas included. */
void hark__state_all_entries(const hark__state *state, hark__entry_cb fn, void *ctx);
size_t hark__state_entry_count(const hark__state *state);

void hark__entry_view_of(const hark__state *state, const hark__entry *entry,
                         hark__entry_view *view);
bool hark__state_entry_visible(const hark__state *state, const hark__entry *entry);

/* The pending delta: every change since the last reset. */
bool hark__state_has_delta(const hark__state *state);
uint64_t hark__state_delta_size(const hark__state *state);
/* Builds the pending delta as a self-contained value. NULL when out of memory. */
hark__delta *hark__state_delta(const hark__state *state);
/* Starts a new, empty pending delta at the current counter. */
void hark__state_reset_delta(hark__state *state);

/* Advances each replica's context over the contiguous dots of its cloud. */
void hark__state_compact(hark__state *state);

/* Merges a window delta or a full extract from another replica and records
 * the joins and leaves. Values of replicas absent from the context are
 * ignored. Returns 0 or HARK_ENOMEM; after HARK_ENOMEM the state is
 * consistent but the merge may be partial. */
int hark__state_merge(hark__state *state, const hark__delta *remote, hark__changes *changes);

/* Builds a full extract for the requester `remote_ref` whose clock is
 * `remote_clock`: context and clouds pruned to the clock's keys, and the
 * entries of those replicas except the requester's own. NULL when out of
 * memory. */
hark__delta *hark__state_extract(const hark__state *state, hark__rref remote_ref,
                                 const hark__clock *remote_clock);

/* Replica status. replica_up adds the replica to the context (at 0 when new)
 * and reports its stored entries as joins. replica_down hides its entries and
 * reports them as leaves. remove_down_replicas deletes the replica, its
 * status and its entries, and reports nothing. Return 0 or HARK_ENOMEM. */
int hark__state_replica_up(hark__state *state, hark__rref ref, hark__changes *changes);
int hark__state_replica_down(hark__state *state, hark__rref ref, hark__changes *changes);
void hark__state_remove_down_replicas(hark__state *state, hark__rref ref);
hark__status hark__state_replica_status(const hark__state *state, hark__rref ref);
/* The refs with status down, in *out (caller frees the clock). */
int hark__state_down_replicas(const hark__state *state, hark__clock *out);

/* The full context, and the context without down replicas (what heartbeats
 * advertise). `out` is replaced. Return 0 or -1. */
int hark__state_context(const hark__state *state, hark__clock *out);
int hark__state_clocks(const hark__state *state, hark__clock *out);
/* The cloud of one replica, or NULL when the replica is not in the context. */
const hark__dotset *hark__state_cloud(const hark__state *state, hark__rref ref);

/* Checks that every stored entry can be found through the indexes (by key,
 * by tag and by owner). Returns NULL, or a static description of the first
 * inconsistency. Read-only; it walks every entry, so it is for tests. */
const char *hark__state_check_indexes(const hark__state *state);

#endif
