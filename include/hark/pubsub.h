/* hark PubSub: subscribers on one node or many receive messages by topic.
 *
 * The model follows Phoenix.PubSub. A subscriber is a caller-owned struct; it
 * subscribes to exact topic strings (no patterns) with an optional metadata
 * pointer. A broadcast hands every matching (subscriber, metadata) entry to a
 * dispatcher, which decides what delivery means. The default dispatcher calls
 * each subscriber's `on_message` callback and skips the sender in the `_from`
 * variants.
 *
 * Threading: an instance belongs to the libuv loop it was created on, and
 * every call must be made from that loop's thread. A node that runs one
 * loop per thread joins one instance per loop into a group, which then
 * behaves as one node (see hark_pubsub_group_create).
 *
 * Delivery is at-most-once and synchronous for local subscribers: every
 * dispatch has run when a broadcast call returns. */
#ifndef HARK_PUBSUB_H
#define HARK_PUBSUB_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "hark/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hark_pubsub hark_pubsub;
typedef struct hark_pubsub_group hark_pubsub_group;
typedef struct hark_subscriber hark_subscriber;

/* Slots that the dispatchers on the threads of a group share for one
 * broadcast, so that work such as encoding a frame is done once per node
 * rather than once per thread. A dispatcher that finds a slot empty may
 * store a value with an atomic compare-and-swap. The dispatcher's `release`
 * frees the value once the broadcast is done on every thread. */
#define HARK_MESSAGE_CACHE_SLOTS 4
typedef struct hark_message_cache {
  _Atomic(void *) slots[HARK_MESSAGE_CACHE_SLOTS];
} hark_message_cache;

/* A message: an event name and a payload, both byte strings that need not be
 * NUL-terminated. `binary` is set when the payload is raw bytes; otherwise it
 * is JSON text. The local registry never interprets either, but the Redis
 * adapter drops a text payload from another node that is not valid JSON. The bytes are borrowed for
 * the duration of the call that receives the message. */
typedef struct hark_message {
  const char *event;
  size_t event_len;
  const char *payload;
  size_t payload_len;
  int binary;
  /* Set by the pubsub layer when the message reaches more than one thread of
   * a group; NULL otherwise. Callers leave it NULL. */
  hark_message_cache *cache;
} hark_message;

/* Called by the default dispatcher for each delivery. `topic` is borrowed. */
typedef void (*hark_message_cb)(hark_subscriber *sub, const char *topic, size_t topic_len,
                                const hark_message *msg);

/* A subscriber is allocated and owned by the caller, who fills in `on_message`
 * and `data` and zeroes `internal_` before subscribing. It must stay valid
 * until it has no subscriptions left: call hark_pubsub_unsubscribe_all (on
 * every instance it is subscribed on) before freeing it. A custom dispatcher
 * that is running may still be passed a subscriber unsubscribed during its
 * call, so with custom dispatchers free it only after the dispatch returns,
 * for example from a uv_close callback. */
struct hark_subscriber {
  hark_message_cb on_message;
  void *data;
  /* Private to the pubsub layer: the subscriber's subscriptions. */
  void *internal_;
};

/* One matching subscription, as seen by a dispatcher. */
typedef struct hark_dispatch_entry {
  hark_subscriber *sub;
  void *metadata;
} hark_dispatch_entry;

/* A dispatcher receives every matching entry of one registry partition in one
 * call, so it can do per-broadcast work (such as encoding a frame) once per
 * call rather than once per subscriber. `from` is the sender to skip, or NULL.
 * The entry array is valid only during the call. A dispatcher may subscribe
 * and unsubscribe (itself or others) during the call: entries removed during
 * the call are still passed in this call, added ones are not. An entry added
 * to a partition that is dispatched later in the same broadcast is passed
 * there. The default dispatcher skips entries removed during its call, so a
 * subscriber unsubscribed and freed by an on_message callback is never
 * called. */
typedef void (*hark_dispatch_fn)(void *ctx, const char *topic, size_t topic_len,
                                 const hark_dispatch_entry *entries, size_t count,
                                 const hark_subscriber *from, const hark_message *msg);

/* A named dispatcher. Names travel between nodes, so every node registers the
 * same dispatchers under the same names. The struct must outlive the instance
 * it is registered with. */
typedef struct hark_dispatcher {
  const char *name;
  hark_dispatch_fn dispatch;
  void *ctx;
  /* Releases a value the dispatcher stored in msg->cache; may be NULL for a
   * dispatcher that never stores one. It may run on any thread of the group. */
  void (*release)(void *value);
} hark_dispatcher;

/* The cluster adapter interface. An adapter sends broadcasts to the other
 * nodes and, on receipt, calls hark_pubsub_local_dispatch on its own node.
 * Every callback may be NULL except the two broadcasts. */
typedef struct hark_pubsub_adapter {
  const char *name;
  void *ctx;
  /* Delivers to every other node (not this one). Returns 0 or a HARK_E* code. */
  int (*broadcast)(void *ctx, const char *topic, size_t topic_len, const hark_message *msg,
                   const char *dispatcher_name);
  /* Delivers to the node called `node_name`, which is never this node. An
   * unknown node is not an error: the message is dropped and 0 returned. */
  int (*direct_broadcast)(void *ctx, const char *node_name, const char *topic, size_t topic_len,
                          const hark_message *msg, const char *dispatcher_name);
  /* The first local subscription to a topic was made, or the last one removed,
   * so an adapter may listen to only the topics this node needs. */
  void (*topic_added)(void *ctx, const char *topic, size_t topic_len);
  void (*topic_removed)(void *ctx, const char *topic, size_t topic_len);
  /* Called once when the instance is created, with the instance, so the
   * adapter can call hark_pubsub_local_dispatch and read the node name. */
  void (*attach)(void *ctx, hark_pubsub *ps);
  /* Called once when the instance is destroyed. */
  void (*destroy)(void *ctx);
} hark_pubsub_adapter;

typedef struct hark_pubsub_options {
  const char *node_name;  /* required; copied */
  unsigned pool_size;     /* registry partitions; 0 means 1, above 1024 is HARK_EINVAL */
  /* NULL means the local adapter: a node alone, for which broadcast reaches
   * local subscribers only. The struct is copied. */
  const hark_pubsub_adapter *adapter;
  /* The group this instance joins as member `group_member`, or NULL. Every
   * member has the same node name and registers the same dispatchers. Only
   * member 0 may have an adapter: the other members reach other nodes
   * through it. */
  hark_pubsub_group *group;
  unsigned group_member;
} hark_pubsub_options;

/* A group joins instances on several threads of one process into one node.
 * A broadcast on any member reaches the subscribers of every member, through
 * each member's loop, and members without a subscriber to the topic are not
 * woken. Messages from one member reach another in the order they were
 * sent. A member other than 0 passes calls that reach other nodes to member
 * 0 and returns 0 at once, so member 0 logs any adapter error.
 *
 * Creates a group of `members` instances (1 to 64). Returns 0, HARK_EINVAL
 * or HARK_ENOMEM. */
int hark_pubsub_group_create(hark_pubsub_group **out, unsigned members);

/* Frees the group. Every member instance must be destroyed first, and each
 * member's loop run once afterwards so that its wake-up handle closes. */
void hark_pubsub_group_destroy(hark_pubsub_group *group);

/* Runs fn(arg, 0) on the loop of member `member`, after every message this
 * thread sent to that member before. Returns 0, or HARK_EINVAL for no such
 * member or one whose instance is destroyed, or HARK_ENOMEM; fn has then not
 * run and `arg` is still the caller's. A call still queued when the member's
 * instance is destroyed runs with discard set to 1 and must only free `arg`. */
int hark_pubsub_group_post(hark_pubsub_group *group, unsigned member,
                           void (*fn)(void *arg, int discard), void *arg);

/* The group of `ps` and its member index, or NULL and 0. */
hark_pubsub_group *hark_pubsub_group_of(const hark_pubsub *ps);
unsigned hark_pubsub_group_member(const hark_pubsub *ps);

/* Creates an instance on `loop`. A group member must be created on its
 * loop's thread. On success stores it in *out and returns 0;
 * otherwise returns HARK_EINVAL or HARK_ENOMEM and leaves *out untouched. An
 * adapter without its two broadcast callbacks is HARK_EINVAL. */
int hark_pubsub_create(hark_pubsub **out, uv_loop_t *loop, const hark_pubsub_options *options);

/* Destroys the instance and every subscription in it. Subscribers are not
 * freed: they belong to their owners. Calls the adapter's destroy first, and
 * no topic_removed hook. Must not be called from inside a dispatch. */
void hark_pubsub_destroy(hark_pubsub *ps);

const char *hark_pubsub_node_name(const hark_pubsub *ps);
uv_loop_t *hark_pubsub_loop(const hark_pubsub *ps);
unsigned hark_pubsub_pool_size(const hark_pubsub *ps);

/* Registers a dispatcher under its name. Returns HARK_EEXIST when the name is
 * taken, HARK_EINVAL for a NULL or empty name. The default dispatcher is
 * registered as "default" by create. */
int hark_pubsub_register_dispatcher(hark_pubsub *ps, const hark_dispatcher *dispatcher);
const hark_dispatcher *hark_pubsub_find_dispatcher(const hark_pubsub *ps, const char *name);

/* Subscribes `sub` to `topic` with `metadata` (may be NULL). Subscribing twice
 * makes two entries and two deliveries, as in Phoenix. The empty topic is a
 * valid topic. Returns 0, HARK_ENOMEM (nothing changed), or HARK_EINVAL for a
 * NULL `sub` or a NULL `topic` with a non-zero length. */
int hark_pubsub_subscribe(hark_pubsub *ps, hark_subscriber *sub, const char *topic,
                          size_t topic_len, void *metadata);

/* Removes every entry of `sub` for `topic`. Unknown topics are fine. */
void hark_pubsub_unsubscribe(hark_pubsub *ps, hark_subscriber *sub, const char *topic,
                             size_t topic_len);

/* Removes every entry of `sub`, as when a subscriber exits. */
void hark_pubsub_unsubscribe_all(hark_pubsub *ps, hark_subscriber *sub);

/* Number of entries for a topic on this node. */
size_t hark_pubsub_subscriber_count(const hark_pubsub *ps, const char *topic, size_t topic_len);

/* The broadcast family. `dispatcher` may be NULL for the default one. When an
 * adapter is in use, the calls that reach other nodes return HARK_EINVAL
 * unless its name is registered, because other nodes find it by name. Every
 * call returns HARK_EINVAL for a NULL `msg` or a NULL `topic` with a non-zero
 * length. An adapter result that is positive is returned as HARK_EADAPTER.
 *
 * broadcast: to the other nodes through the adapter, then, only if that
 *   succeeded, to local subscribers. Returns 0 or the adapter's error.
 * broadcast_from: the same, skipping `from` locally.
 * local_broadcast, local_broadcast_from: this node only; return 0.
 * direct_broadcast: to the node named `node_name`. This node's own name
 *   delivers locally. Another name goes to the adapter's direct_broadcast and
 *   returns its result; without an adapter it delivers nothing and returns 0. */
int hark_pubsub_broadcast(hark_pubsub *ps, const char *topic, size_t topic_len,
                          const hark_message *msg, const hark_dispatcher *dispatcher);
int hark_pubsub_broadcast_from(hark_pubsub *ps, const hark_subscriber *from, const char *topic,
                               size_t topic_len, const hark_message *msg,
                               const hark_dispatcher *dispatcher);
int hark_pubsub_local_broadcast(hark_pubsub *ps, const char *topic, size_t topic_len,
                                const hark_message *msg, const hark_dispatcher *dispatcher);
int hark_pubsub_local_broadcast_from(hark_pubsub *ps, const hark_subscriber *from,
                                     const char *topic, size_t topic_len,
                                     const hark_message *msg, const hark_dispatcher *dispatcher);
int hark_pubsub_direct_broadcast(hark_pubsub *ps, const char *node_name, const char *topic,
                                 size_t topic_len, const hark_message *msg,
                                 const hark_dispatcher *dispatcher);

/* For adapters: dispatches a message received from another node to local
 * subscribers with the dispatcher registered under `dispatcher_name`. An
 * unknown dispatcher name drops the message and returns HARK_EINVAL. */
int hark_pubsub_local_dispatch(hark_pubsub *ps, const char *topic, size_t topic_len,
                               const hark_message *msg, const char *dispatcher_name);

#ifdef __cplusplus
}
#endif

#endif
