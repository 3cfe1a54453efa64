/* Local dispatch, the default dispatcher and the broadcast family. */
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "pubsub/internal.h"

/* ---- The default dispatcher ---- */

static int entry_removed(const hark__dispatch_frame *frame, size_t position) {
  size_t index = frame->index != NULL ? frame->index[position] : position;
  return frame->part->owners[index].state == NULL;
}

/* Returns where `entries` starts inside the array of `frame`, or SIZE_MAX
 * when the caller passed an array of its own (a custom dispatcher may hand a
 * filtered copy to the default one). */
static size_t offset_in_frame(const hark__dispatch_frame *frame, const hark_dispatch_entry *entries,
                              size_t count) {
  if (frame == NULL) return SIZE_MAX;

  uintptr_t begin = (uintptr_t)frame->entries;
  uintptr_t end = (uintptr_t)(frame->entries + frame->count);
  uintptr_t start = (uintptr_t)entries;
  if (start < begin || start >= end) return SIZE_MAX;

  size_t offset = (size_t)(start - begin) / sizeof *entries;
  if (offset + count > frame->count) return SIZE_MAX;
  return offset;
}

/* Calls on_message for every entry except `from`. It also skips entries
 * removed during this dispatch, so a subscriber that a callback unsubscribed
 * and released is never called afterwards. */
void hark__default_dispatch(void *ctx, const char *topic, size_t topic_len,
                            const hark_dispatch_entry *entries, size_t count,
                            const hark_subscriber *from, const hark_message *msg) {
  const hark_pubsub *ps = ctx;
  const hark__dispatch_frame *frame = ps->frame;
  size_t offset = offset_in_frame(frame, entries, count);

  for (size_t i = 0; i < count; i++) {
    hark_subscriber *sub = entries[i].sub;
    if (sub == from) continue;
    if (offset != SIZE_MAX && frame->part->dead != 0 && entry_removed(frame, offset + i)) continue;
    if (sub->on_message != NULL) sub->on_message(sub, topic, topic_len, msg);
  }
}

/* ---- Local dispatch ---- */

/* Copies the live entries of `part` into one new block, with their indexes
 * in the partition after them, and points `frame` at the copy. Returns the
 * block (the caller frees it) or NULL when out of memory. */
static void *copy_live_entries(const hark__partition *part, hark__dispatch_frame *frame) {
  size_t live = part->count - part->dead;
  hark_dispatch_entry *copy = malloc(live * (sizeof *copy + sizeof(size_t)));
  if (copy == NULL) return NULL;

  size_t *index = (size_t *)(copy + live);
  size_t n = 0;
  for (size_t i = 0; i < part->count; i++) {
    if (part->owners[i].state == NULL) continue;
    copy[n] = part->block->entries[i];
    index[n] = i;
    n++;
  }
  frame->entries = copy;
  frame->count = live;
  frame->index = index;
  return copy;
}

static void dispatch_partition(hark_pubsub *ps, hark__topic *topic, hark__partition *part,
                               const hark_subscriber *from, const hark_message *msg,
                               const hark_dispatcher *dispatcher) {
  hark__dispatch_frame frame = {
      .part = part,
      .entries = part->block->entries,
      .count = part->count,
      .index = NULL,
      .prev = ps->frame,
  };

  /* Dead entries exist only while an outer dispatch reads this array, which
   * this call is nested in. They must not be passed, and the array cannot be
   * compacted under the outer call, so this call gets a copy. */
  void *copy = NULL;
  if (part->dead != 0) {
    copy = copy_live_entries(part, &frame);
    if (copy == NULL) {
      char quoted[128];
      HARK_WARN("pubsub_dispatch_dropped", "reason=out_of_memory topic=%s entries=%zu",
                hark_log_quote(quoted, sizeof quoted, topic->name, topic->len),
                part->count - part->dead);
      return;
    }
  }

  part->dispatching++;
  ps->frame = &frame;
  dispatcher->dispatch(dispatcher->ctx, topic->name, topic->len, frame.entries, frame.count, from,
                       msg);
  ps->frame = frame.prev;
  hark__partition_end_dispatch(part);
  free(copy);
}

/* Calls the dispatcher once per partition that has entries for the topic.
 * The topic is pinned meanwhile, because callbacks may remove its last
 * entry. */
void hark__dispatch_local(hark_pubsub *ps, const hark_subscriber *from, const char *topic,
                          size_t topic_len, const hark_message *msg,
                          const hark_dispatcher *dispatcher) {
  uint64_t hash = hark__hash_bytes(topic, topic_len);
  hark__topic *record = hark__topic_map_find(&ps->topics, topic, topic_len, hash);
  if (record == NULL) return;

  record->pins++;
  for (unsigned i = 0; i < ps->pool_size; i++) {
    hark__partition *part = &record->parts[i];
    if (part->count == part->dead) continue;
    dispatch_partition(ps, record, part, from, msg, dispatcher);
  }
  hark__topic_unpin(ps, record);
}

/* ---- The broadcast family ---- */

static int check_arguments(const hark_pubsub *ps, const char *topic, size_t topic_len,
                           const hark_message *msg) {
  if (ps == NULL || msg == NULL || (topic == NULL && topic_len > 0)) return HARK_EINVAL;
  return HARK_OK;
}

/* Picks the default dispatcher for NULL. With an adapter, the dispatcher's
 * name must be registered, because other nodes look it up by that name. */
static int resolve_dispatcher(const hark_pubsub *ps, const hark_dispatcher *requested,
                              const hark_dispatcher **out) {
  const hark_dispatcher *dispatcher = requested != NULL ? requested : &ps->default_dispatcher;
  if (dispatcher->dispatch == NULL) return HARK_EINVAL;
  if (ps->has_adapter) {
    if (dispatcher->name == NULL) return HARK_EINVAL;
    if (hark_pubsub_find_dispatcher(ps, dispatcher->name) == NULL) return HARK_EINVAL;
  }
  *out = dispatcher;
  return HARK_OK;
}

/* Adapters return 0 or a HARK_E* code; any other non-zero value is reported
 * as HARK_EADAPTER. */
static int adapter_result(int rc) {
  if (rc == 0) return HARK_OK;
  return rc < 0 ? rc : HARK_EADAPTER;
}

/* Delivers on this instance and, in a group, on the other members. A
 * message passed on from a dispatch may carry that broadcast's cache, which
 * contains frames of another topic, so every new broadcast starts without
 * one. */
static void dispatch_everywhere(hark_pubsub *ps, const hark_subscriber *from, const char *topic,
                                size_t topic_len, const hark_message *given,
                                const hark_dispatcher *dispatcher, int uplink) {
  hark_message fresh = *given;
  fresh.cache = NULL;
  const hark_message *msg = &fresh;
  if (ps->group != NULL)
    hark__group_dispatch(ps, from, topic, topic_len, msg, dispatcher, uplink, NULL);
  else
    hark__dispatch_local(ps, from, topic, topic_len, msg, dispatcher);
}

static int broadcast_common(hark_pubsub *ps, const hark_subscriber *from, const char *topic,
                            size_t topic_len, const hark_message *msg,
                            const hark_dispatcher *requested) {
  int rc = check_arguments(ps, topic, topic_len, msg);
  if (rc != HARK_OK) return rc;
  const hark_dispatcher *dispatcher;
  rc = resolve_dispatcher(ps, requested, &dispatcher);
  if (rc != HARK_OK) return rc;

  /* As in Phoenix, local subscribers get the message only when the other
   * nodes were reached. Remote nodes never learn `from`. */
  if (ps->has_adapter) {
    rc = adapter_result(
        ps->adapter.broadcast(ps->adapter.ctx, topic, topic_len, msg, dispatcher->name));
    if (rc != HARK_OK) return rc;
  }
  /* A member other than 0 has no adapter of its own: member 0 sends for it. */
  int uplink = ps->group != NULL && ps->group_member != 0;
  dispatch_everywhere(ps, from, topic, topic_len, msg, dispatcher, uplink);
  return HARK_OK;
}

static int local_broadcast_common(hark_pubsub *ps, const hark_subscriber *from, const char *topic,
                                  size_t topic_len, const hark_message *msg,
                                  const hark_dispatcher *requested) {
  int rc = check_arguments(ps, topic, topic_len, msg);
  if (rc != HARK_OK) return rc;
  const hark_dispatcher *dispatcher = requested != NULL ? requested : &ps->default_dispatcher;
  if (dispatcher->dispatch == NULL) return HARK_EINVAL;

  dispatch_everywhere(ps, from, topic, topic_len, msg, dispatcher, 0);
  return HARK_OK;
}

int hark_pubsub_broadcast(hark_pubsub *ps, const char *topic, size_t topic_len,
                          const hark_message *msg, const hark_dispatcher *dispatcher) {
  return broadcast_common(ps, NULL, topic, topic_len, msg, dispatcher);
}

int hark_pubsub_broadcast_from(hark_pubsub *ps, const hark_subscriber *from, const char *topic,
                               size_t topic_len, const hark_message *msg,
                               const hark_dispatcher *dispatcher) {
  return broadcast_common(ps, from, topic, topic_len, msg, dispatcher);
}

int hark_pubsub_local_broadcast(hark_pubsub *ps, const char *topic, size_t topic_len,
                                const hark_message *msg, const hark_dispatcher *dispatcher) {
  return local_broadcast_common(ps, NULL, topic, topic_len, msg, dispatcher);
}

int hark_pubsub_local_broadcast_from(hark_pubsub *ps, const hark_subscriber *from,
                                     const char *topic, size_t topic_len,
                                     const hark_message *msg, const hark_dispatcher *dispatcher) {
  return local_broadcast_common(ps, from, topic, topic_len, msg, dispatcher);
}

int hark_pubsub_direct_broadcast(hark_pubsub *ps, const char *node_name, const char *topic,
                                 size_t topic_len, const hark_message *msg,
                                 const hark_dispatcher *dispatcher) {
  int rc = check_arguments(ps, topic, topic_len, msg);
  if (rc != HARK_OK) return rc;
  if (node_name == NULL) return HARK_EINVAL;

  if (strcmp(node_name, ps->node_name) == 0) {
    return local_broadcast_common(ps, NULL, topic, topic_len, msg, dispatcher);
  }
  if (ps->group != NULL && ps->group_member != 0) {
    const hark_dispatcher *resolved = dispatcher != NULL ? dispatcher : &ps->default_dispatcher;
    hark__group_dispatch(ps, NULL, topic, topic_len, msg, resolved, 1, node_name);
    return HARK_OK;
  }
  if (!ps->has_adapter) return HARK_OK;

  const hark_dispatcher *resolved;
  rc = resolve_dispatcher(ps, dispatcher, &resolved);
  if (rc != HARK_OK) return rc;
  return adapter_result(ps->adapter.direct_broadcast(ps->adapter.ctx, node_name, topic, topic_len,
                                                     msg, resolved->name));
}

int hark_pubsub_local_dispatch(hark_pubsub *ps, const char *topic, size_t topic_len,
                               const hark_message *msg, const char *dispatcher_name) {
  int rc = check_arguments(ps, topic, topic_len, msg);
  if (rc != HARK_OK) return rc;
  if (dispatcher_name == NULL) return HARK_EINVAL;

  const hark_dispatcher *dispatcher = hark_pubsub_find_dispatcher(ps, dispatcher_name);
  if (dispatcher == NULL) return HARK_EINVAL;

  dispatch_everywhere(ps, NULL, topic, topic_len, msg, dispatcher, 0);
  return HARK_OK;
}
