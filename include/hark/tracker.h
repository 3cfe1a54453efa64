/* hark Tracker: who or what is present on each topic, kept in a CRDT that
 * replicas can merge, as Phoenix.Tracker does.
 *
 * An entry is (owner, topic, key) with a meta, a JSON object. The tracker adds
 * "phx_ref" to every meta it stores, and "phx_ref_prev" after an update.
 * Every change is reported to the diff callback, once per topic, after it is
 * applied and before the call that made it returns. Callbacks (diff and read
 * callbacks) must not call back into the tracker to change it: the entries
 * they receive point into tracker memory that a change could free.
 *
 * The tracker is split into pool_size shards by a hash of the topic that is
 * the same on every node, so each topic lives in exactly one shard.
 *
 * Threading: all calls must come from one thread, the one that owns the
 * tracker. */
#ifndef HARK_TRACKER_H
#define HARK_TRACKER_H

#include <stddef.h>
#include <stdint.h>

#include "hark/pubsub.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hark_tracker hark_tracker;

/* A phx_ref: 16 characters of URL-safe base64 and a NUL. */
#define HARK_TRACKER_REF_SIZE 17

/* One presence as reported to callbacks. Every pointer is borrowed for the
 * duration of the callback. `owner` is the owner's id: for an entry tracked
 * on this node it is the owner pointer cast to uintptr_t; for an entry from
 * another replica it is that replica's id for its owner. `meta` is a JSON
 * object that includes "phx_ref". */
typedef struct hark_tracker_entry {
  uint64_t owner;
  const char *key;
  size_t key_len;
  const char *meta;
  size_t meta_len;
} hark_tracker_entry;

/* The diff callback: the joins and leaves of one topic caused by one
 * operation. An update reports the same key in both: the new meta in joins,
 * the old one in leaves. */
typedef void (*hark_tracker_diff_fn)(void *ctx, const char *topic, size_t topic_len,
                                     const hark_tracker_entry *joins, size_t join_count,
                                     const hark_tracker_entry *leaves, size_t leave_count);

typedef void (*hark_tracker_entry_fn)(void *ctx, const hark_tracker_entry *entry);

typedef struct hark_tracker_options {
  const char *node_name;  /* required; the replica name; copied */
  unsigned pool_size;     /* shards; 0 means 1 */
  hark_tracker_diff_fn on_diff; /* may be NULL */
  void *ctx;              /* passed to on_diff */
  /* The wall clock in nanoseconds, used in phx_refs. NULL means
   * clock_gettime(CLOCK_REALTIME). A simulator passes its virtual clock. */
  uint64_t (*now_ns)(void *clock_ctx);
  void *clock_ctx;
} hark_tracker_options;

/* Creates a tracker. Returns 0, HARK_EINVAL (no node name) or HARK_ENOMEM. */
int hark_tracker_create(hark_tracker **out, const hark_tracker_options *options);
void hark_tracker_destroy(hark_tracker *tracker);

/* Tracks `owner` on `topic` under `key` with `meta`, a JSON object (NULL or
 * empty means {}). Stores the new phx_ref in `ref` when it is not NULL.
 * Returns 0, HARK_EALREADY, HARK_EINVAL (meta is not a JSON object that
 * jansson can load, or the key is longer than 65535 bytes) or HARK_ENOMEM. */
int hark_tracker_track(hark_tracker *tracker, const hark_subscriber *owner, const char *topic,
                       size_t topic_len, const char *key, size_t key_len, const char *meta,
                       size_t meta_len, char ref[HARK_TRACKER_REF_SIZE]);

/* Removes one entry. Nothing tracked is fine. */
void hark_tracker_untrack(hark_tracker *tracker, const hark_subscriber *owner, const char *topic,
                          size_t topic_len, const char *key, size_t key_len);

/* Removes every entry of `owner` on every topic, as when the owner closes. */
void hark_tracker_untrack_all(hark_tracker *tracker, const hark_subscriber *owner);

/* Replaces the meta of an entry, atomically for readers. The new meta gets a
 * new phx_ref and phx_ref_prev set to the old one. Returns 0, HARK_ENOENT,
 * HARK_EINVAL or HARK_ENOMEM. */
int hark_tracker_update(hark_tracker *tracker, const hark_subscriber *owner, const char *topic,
                        size_t topic_len, const char *key, size_t key_len, const char *meta,
                        size_t meta_len, char ref[HARK_TRACKER_REF_SIZE]);

/* Calls `fn` for every entry on `topic` whose replica is not down, in a
 * stable order (grouped by key, then in tracking order). */
void hark_tracker_list(hark_tracker *tracker, const char *topic, size_t topic_len,
                       hark_tracker_entry_fn fn, void *ctx);

/* Calls `fn` for every entry on `topic` with `key`, skipping down replicas. */
void hark_tracker_get_by_key(hark_tracker *tracker, const char *topic, size_t topic_len,
                             const char *key, size_t key_len, hark_tracker_entry_fn fn,
                             void *ctx);

/* Number of entries on `topic`, skipping down replicas. */
size_t hark_tracker_count(hark_tracker *tracker, const char *topic, size_t topic_len);

unsigned hark_tracker_pool_size(const hark_tracker *tracker);

#ifdef __cplusplus
}
#endif

#endif
