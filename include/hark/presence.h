/* hark Presence: the Tracker wired to PubSub, as Phoenix.Presence does.
 *
 * Every change that the tracker reports is broadcast on its topic, to the
 * subscribers on this node, as the event "presence_diff" with the payload
 * {"joins": {KEY: {"metas": [...]}}, "leaves": {...}}. Other nodes broadcast
 * the same diffs to their own subscribers once replication reaches them.
 *
 * Threading: like the tracker, one thread. */
#ifndef HARK_PRESENCE_H
#define HARK_PRESENCE_H

#include <jansson.h>
#include <stddef.h>

#include "hark/pubsub.h"
#include "hark/tracker.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hark_presence hark_presence;

/* Enriches the entry of one key, {"metas": [...]}, before it is listed or
 * broadcast: the hook may add members to `entry` (for example a user record
 * loaded from a cache) but must keep "metas". It runs for every key of every
 * list and diff, so it must be fast; it runs on the presence thread. */
typedef void (*hark_presence_fetch_fn)(void *ctx, const char *topic, size_t topic_len,
                                       const char *key, size_t key_len, json_t *entry);

typedef struct hark_presence_options {
  hark_pubsub *pubsub;          /* required; diffs are local broadcasts on it */
  /* The dispatcher for diffs, looked up by name at each broadcast; NULL means
   * the default one. harkd passes its channel fastlane. */
  const char *dispatcher_name;
  const char *node_name;        /* required; the tracker's replica name */
  unsigned pool_size;           /* tracker shards; 0 means 1 */
  hark_presence_fetch_fn fetch; /* may be NULL */
  void *fetch_ctx;
} hark_presence_options;

/* Creates a presence with its own tracker. Returns 0, HARK_EINVAL or
 * HARK_ENOMEM. */
int hark_presence_create(hark_presence **out, const hark_presence_options *options);
void hark_presence_destroy(hark_presence *presence);

/* The underlying tracker, for reads and for replication. Owned by presence. */
hark_tracker *hark_presence_tracker(hark_presence *presence);

/* The tracker's track, update, untrack and untrack_all; each change is
 * broadcast as a presence_diff before the call returns. */
int hark_presence_track(hark_presence *presence, const hark_subscriber *owner, const char *topic,
                        size_t topic_len, const char *key, size_t key_len, const char *meta,
                        size_t meta_len, char ref[HARK_TRACKER_REF_SIZE]);
int hark_presence_update(hark_presence *presence, const hark_subscriber *owner,
                         const char *topic, size_t topic_len, const char *key, size_t key_len,
                         const char *meta, size_t meta_len, char ref[HARK_TRACKER_REF_SIZE]);
void hark_presence_untrack(hark_presence *presence, const hark_subscriber *owner,
                           const char *topic, size_t topic_len, const char *key, size_t key_len);
void hark_presence_untrack_all(hark_presence *presence, const hark_subscriber *owner);

/* Returns the topic's presences as JSON text {KEY: {"metas": [...]}, ...},
 * "{}" for an unknown topic, in a malloc'd NUL-terminated string that the
 * caller frees; stores its length in *len. Returns NULL when out of memory. */
char *hark_presence_list(hark_presence *presence, const char *topic, size_t topic_len,
                         size_t *len);

/* Returns {"metas": [...]} for one key as a malloc'd string that the caller
 * frees, or NULL when the key has no presence on the topic (or out of
 * memory). */
char *hark_presence_get_by_key(hark_presence *presence, const char *topic, size_t topic_len,
                               const char *key, size_t key_len, size_t *len);

#ifdef __cplusplus
}
#endif

#endif
