/* A group: the pubsub instances of one node's threads, joined so that they
 * behave as one node.
 *
 * Each member has a mailbox on its own loop. The group keeps, per topic, a
 * bit mask of the members that have a subscriber to it, so a broadcast wakes
 * only the members that deliver it. A broadcast that crosses threads is
 * copied once into a reference-counted message for every receiving member,
 * and the last member to finish with it frees it.
 *
 * Locking: group->lock guards the interest map and each member's `ps`. Posts
 * to a mailbox may happen under it (the mailbox lock nests inside); nothing
 * ever takes the group lock while holding a mailbox lock. No lock is held
 * while a dispatcher runs. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/mailbox.h"
#include "pubsub/internal.h"

#define MAX_MEMBERS 64

/* A topic that at least one member subscribes to. */
typedef struct interest {
  struct interest *next;
  uint64_t hash;
  uint64_t members; /* bit i: member i has a subscriber */
  size_t len;
  char name[];
} interest;

typedef struct member {
  hark_pubsub_group *group;
  unsigned index;
  hark_pubsub *ps;  /* set while the mailbox is open: after join, before leave */
  int claimed;      /* an instance joined as this member; never reset after leave */
  hark_mailbox mailbox;
} member;

struct hark_pubsub_group {
  pthread_mutex_t lock;
  unsigned count;
  interest **buckets;
  size_t bucket_count; /* a power of two */
  size_t interest_count;
  member members[];
};

typedef enum msg_kind { MSG_DELIVER, MSG_UPLINK_BROADCAST, MSG_UPLINK_DIRECT } msg_kind;

/* One broadcast on its way to other members. Immutable once posted, except
 * for the cache and the count. Every string is inside `bytes`. */
typedef struct group_msg {
  atomic_uint refs;
  void (*release)(void *value);   /* the dispatcher's, for the cache slots */
  hark_message_cache cache;
  const char *topic;
  size_t topic_len;
  const char *dispatcher_name;
  const char *node_name;          /* MSG_UPLINK_DIRECT only */
  hark_message msg;
  char bytes[];
} group_msg;

/* ---- Group lifetime ---- */

int hark_pubsub_group_create(hark_pubsub_group **out, unsigned members) {
  if (out == NULL || members == 0 || members > MAX_MEMBERS) return HARK_EINVAL;
  hark_pubsub_group *group = calloc(1, sizeof *group + members * sizeof(member));
  if (group == NULL) return HARK_ENOMEM;

  group->bucket_count = 256;
  group->buckets = calloc(group->bucket_count, sizeof *group->buckets);
  if (group->buckets == NULL || pthread_mutex_init(&group->lock, NULL) != 0) {
    free(group->buckets);
    free(group);
    return HARK_ENOMEM;
  }
  group->count = members;
  for (unsigned i = 0; i < members; i++) {
    group->members[i].group = group;
    group->members[i].index = i;
  }
  *out = group;
  return HARK_OK;
}

void hark_pubsub_group_destroy(hark_pubsub_group *group) {
  if (group == NULL) return;
  for (size_t b = 0; b < group->bucket_count; b++) {
    interest *it = group->buckets[b];
    while (it) {
      interest *next = it->next;
      free(it);
      it = next;
    }
  }
  free(group->buckets);
  pthread_mutex_destroy(&group->lock);
  free(group);
}

hark_pubsub_group *hark_pubsub_group_of(const hark_pubsub *ps) {
  return ps ? ps->group : NULL;
}

unsigned hark_pubsub_group_member(const hark_pubsub *ps) {
  return ps ? ps->group_member : 0;
}

/* ---- The interest map ---- */

/* Returns the slot that contains, or would contain, the topic's record. */
static interest **interest_slot(hark_pubsub_group *group, const char *topic, size_t len,
                                uint64_t hash) {
  interest **link = &group->buckets[hash & (group->bucket_count - 1)];
  while (*link && !((*link)->hash == hash && (*link)->len == len &&
                    memcmp((*link)->name, topic, len) == 0))
    link = &(*link)->next;
  return link;
}

/* Doubles the bucket array at one record per bucket. A failed allocation
 * keeps the old array, which still works, only with longer chains. */
static void interest_grow(hark_pubsub_group *group) {
  if (group->interest_count < group->bucket_count) return;
  size_t count = group->bucket_count * 2;
  interest **buckets = calloc(count, sizeof *buckets);
  if (buckets == NULL) return;
  for (size_t b = 0; b < group->bucket_count; b++) {
    interest *it = group->buckets[b];
    while (it) {
      interest *next = it->next;
      it->next = buckets[it->hash & (count - 1)];
      buckets[it->hash & (count - 1)] = it;
      it = next;
    }
  }
  free(group->buckets);
  group->buckets = buckets;
  group->bucket_count = count;
}

/* The members with a subscriber to the topic. Called with the lock held. */
static uint64_t interested_members(hark_pubsub_group *group, const char *topic, size_t len) {
  interest *it = *interest_slot(group, topic, len, hark__hash_bytes(topic, len));
  return it ? it->members : 0;
}

/* Walks the interest map under the lock. */
static int group_topics(hark_pubsub_group *group, int (*fn)(void *, const char *, size_t),
                        void *ctx) {
  int rc = HARK_OK;
  pthread_mutex_lock(&group->lock);
  for (size_t b = 0; b < group->bucket_count && rc == HARK_OK; b++)
    for (interest *it = group->buckets[b]; it && rc == HARK_OK; it = it->next)
      rc = fn(ctx, it->name, it->len);
  pthread_mutex_unlock(&group->lock);
  return rc;
}

int hark__node_topics(hark_pubsub *ps, int (*fn)(void *ctx, const char *topic, size_t len),
                      void *ctx) {
  if (ps->group != NULL) return group_topics(ps->group, fn, ctx);

  const hark__topic_map *topics = &ps->topics;
  for (size_t i = 0; i < topics->cap; i++) {
    const hark__topic *topic = topics->slots[i];
    if (topic == NULL || topic->live == 0) continue;
    int rc = fn(ctx, topic->name, topic->len);
    if (rc != HARK_OK) return rc;
  }
  return HARK_OK;
}

/* ---- Posting ---- */

typedef struct user_call {
  void (*fn)(void *arg, int discard);
  void *arg;
} user_call;

static void run_user_call(void *ctx, void *arg, int discard) {
  user_call *call = arg;
  (void)ctx;
  call->fn(call->arg, discard);
  free(call);
}

/* Posts to a member with the lock held. Returns 0, HARK_EINVAL when the
 * member is gone, or HARK_ENOMEM. */
static int post_locked(member *m, hark_mail_fn fn, void *arg) {
  if (m->ps == NULL) return HARK_EINVAL;
  return hark_mailbox_post(&m->mailbox, fn, m, arg) == 0 ? HARK_OK : HARK_ENOMEM;
}

int hark_pubsub_group_post(hark_pubsub_group *group, unsigned index,
                           void (*fn)(void *arg, int discard), void *arg) {
  if (group == NULL || fn == NULL || index >= group->count) return HARK_EINVAL;
  user_call *call = malloc(sizeof *call);
  if (call == NULL) return HARK_ENOMEM;
  *call = (user_call){fn, arg};

  pthread_mutex_lock(&group->lock);
  int rc = post_locked(&group->members[index], run_user_call, call);
  pthread_mutex_unlock(&group->lock);
  if (rc != HARK_OK) free(call);
  return rc;
}

/* ---- Adapter hooks on member 0 ---- */

typedef struct topic_change {
  int added;
  size_t len;
  char name[];
} topic_change;

static void run_topic_change(void *ctx, void *arg, int discard) {
  member *m = ctx;
  topic_change *change = arg;
  hark_pubsub *ps = m->ps;
  if (!discard && ps && ps->has_adapter) {
    if (change->added && ps->adapter.topic_added)
      ps->adapter.topic_added(ps->adapter.ctx, change->name, change->len);
    if (!change->added && ps->adapter.topic_removed)
      ps->adapter.topic_removed(ps->adapter.ctx, change->name, change->len);
  }
  free(change);
}

/* Tells member 0's adapter that the node as a whole gained or lost its
 * interest in a topic. Every change is posted under the lock, even by
 * member 0 itself, so the adapter gets them in the order they happened. */
static void post_topic_change(hark_pubsub_group *group, const char *topic, size_t len, int added) {
  member *home = &group->members[0];
  if (home->ps == NULL || !home->ps->has_adapter) return;
  topic_change *change = malloc(sizeof *change + len);
  if (change == NULL) {
    HARK_ERROR("pubsub_group_failed", "what=topic_change added=%d error=\"out of memory\"", added);
    return;
  }

  /* Filled before the post: member 0 may run and free it at once. */
  change->added = added;
  change->len = len;
  memcpy(change->name, topic, len);
  if (post_locked(home, run_topic_change, change) != 0) {
    HARK_ERROR("pubsub_group_failed", "what=topic_change added=%d error=\"out of memory\"", added);
    free(change);
  }
}

void hark__group_interest(hark_pubsub *ps, const char *topic, size_t len, int added) {
  hark_pubsub_group *group = ps->group;
  uint64_t bit = UINT64_C(1) << ps->group_member;
  uint64_t hash = hark__hash_bytes(topic, len);

  pthread_mutex_lock(&group->lock);
  interest **slot = interest_slot(group, topic, len, hash);
  interest *it = *slot;
  if (added && it == NULL) {
    it = malloc(sizeof *it + len);
    if (it == NULL) {
      pthread_mutex_unlock(&group->lock);
      HARK_ERROR("pubsub_group_failed", "what=interest member=%u error=\"out of memory\"",
                 ps->group_member);
      return;
    }
    *it = (interest){NULL, hash, 0, len};
    memcpy(it->name, topic, len);
    *slot = it;
    group->interest_count++;
    post_topic_change(group, topic, len, 1);
    interest_grow(group);
  }
  if (it && added) it->members |= bit;
  if (it && !added) {
    it->members &= ~bit;
    if (it->members == 0) {
      *slot = it->next;
      group->interest_count--;
      post_topic_change(group, topic, len, 0);
      free(it);
    }
  }
  pthread_mutex_unlock(&group->lock);
}

/* ---- Messages between members ---- */

static void msg_unref(group_msg *gm) {
  if (atomic_fetch_sub_explicit(&gm->refs, 1, memory_order_acq_rel) != 1) return;
  for (int i = 0; i < HARK_MESSAGE_CACHE_SLOTS; i++) {
    void *value = atomic_load_explicit(&gm->cache.slots[i], memory_order_acquire);
    if (value && gm->release) gm->release(value);
  }
  free(gm);
}

/* Copies the message, its topic and the names it needs into one block. */
static group_msg *msg_new(const char *topic, size_t topic_len, const hark_message *msg,
                          const hark_dispatcher *dispatcher, const char *node_name) {
  size_t name_len = strlen(dispatcher->name) + 1;
  size_t node_len = node_name ? strlen(node_name) + 1 : 0;
  size_t size = topic_len + msg->event_len + msg->payload_len + name_len + node_len;
  group_msg *gm = calloc(1, sizeof *gm + size);
  if (gm == NULL) return NULL;

  char *p = gm->bytes;
  memcpy(p, topic, topic_len);
  gm->topic = p;
  gm->topic_len = topic_len;
  p += topic_len;
  memcpy(p, msg->event, msg->event_len);
  gm->msg.event = p;
  gm->msg.event_len = msg->event_len;
  p += msg->event_len;
  memcpy(p, msg->payload, msg->payload_len);
  gm->msg.payload = p;
  gm->msg.payload_len = msg->payload_len;
  p += msg->payload_len;
  memcpy(p, dispatcher->name, name_len);
  gm->dispatcher_name = p;
  p += name_len;
  if (node_name) {
    memcpy(p, node_name, node_len);
    gm->node_name = p;
  }

  gm->msg.binary = msg->binary;
  gm->msg.cache = &gm->cache;
  gm->release = dispatcher->release;
  atomic_init(&gm->refs, 1);
  return gm;
}

static void run_deliver(void *ctx, void *arg, int discard) {
  member *m = ctx;
  group_msg *gm = arg;
  if (!discard && m->ps) {
    const hark_dispatcher *dispatcher = hark_pubsub_find_dispatcher(m->ps, gm->dispatcher_name);
    if (dispatcher)
      hark__dispatch_local(m->ps, NULL, gm->topic, gm->topic_len, &gm->msg, dispatcher);
    else
      HARK_ERROR("pubsub_group_failed", "what=deliver member=%u dispatcher=\"%s\" "
                 "error=\"dispatcher not registered on this member\"", m->index, gm->dispatcher_name);
  }
  msg_unref(gm);
}

/* Runs on member 0: sends a message from another member to the other nodes. */
static void run_uplink(void *ctx, void *arg, int discard) {
  member *m = ctx;
  group_msg *gm = arg;
  hark_pubsub *ps = m->ps;
  if (!discard && ps && ps->has_adapter) {
    int rc = gm->node_name
                 ? ps->adapter.direct_broadcast(ps->adapter.ctx, gm->node_name, gm->topic,
                                                gm->topic_len, &gm->msg, gm->dispatcher_name)
                 : ps->adapter.broadcast(ps->adapter.ctx, gm->topic, gm->topic_len, &gm->msg,
                                         gm->dispatcher_name);
    if (rc != 0)
      HARK_WARN("cluster_broadcast_failed", "adapter=%s topic_bytes=%zu error=%d",
                ps->adapter.name ? ps->adapter.name : "?", gm->topic_len, rc);
  }
  msg_unref(gm);
}

/* Posts `gm` to `m` with one more reference. */
static void post_msg(member *m, hark_mail_fn fn, group_msg *gm) {
  atomic_fetch_add_explicit(&gm->refs, 1, memory_order_relaxed);
  if (post_locked(m, fn, gm) != 0) {
    atomic_fetch_sub_explicit(&gm->refs, 1, memory_order_relaxed);
    if (m->ps != NULL)
      HARK_ERROR("pubsub_group_failed", "what=post member=%u error=\"out of memory\"", m->index);
  }
}

/* Posts a message to every other member with a subscriber to its topic
 * (unless it is a direct send to another node), and, when `uplink` is set,
 * to member 0 for its adapter. */
static void send_to_members(hark_pubsub *ps, group_msg *gm, int uplink) {
  hark_pubsub_group *group = ps->group;
  pthread_mutex_lock(&group->lock);
  uint64_t targets = 0;
  if (!gm->node_name) targets = interested_members(group, gm->topic, gm->topic_len);
  targets &= ~(UINT64_C(1) << ps->group_member);
  for (unsigned i = 0; i < group->count; i++)
    if (targets & (UINT64_C(1) << i)) post_msg(&group->members[i], run_deliver, gm);
  if (uplink) post_msg(&group->members[0], run_uplink, gm);
  pthread_mutex_unlock(&group->lock);
}

/* Dispatches on this member and passes the message on. `uplink` makes member
 * 0 send it to the other nodes, and `node_name` makes that a direct
 * send. When no other member needs the message it is not copied. */
void hark__group_dispatch(hark_pubsub *ps, const hark_subscriber *from, const char *topic,
                          size_t topic_len, const hark_message *msg,
                          const hark_dispatcher *dispatcher, int uplink, const char *node_name) {
  hark_pubsub_group *group = ps->group;
  uint64_t self = UINT64_C(1) << ps->group_member;
  pthread_mutex_lock(&group->lock);
  uint64_t others = interested_members(group, topic, topic_len) & ~self;
  hark_pubsub *home = group->members[0].ps;
  if (home == NULL || !home->has_adapter) uplink = 0;
  pthread_mutex_unlock(&group->lock);

  /* A dispatcher without a registered name cannot be found by the others.
   * A direct send to another node is never delivered here. */
  int named = dispatcher->name && hark_pubsub_find_dispatcher(ps, dispatcher->name) == dispatcher;
  if (node_name != NULL && (!uplink || !named)) return;
  if ((others == 0 && !uplink) || !named) {
    hark__dispatch_local(ps, from, topic, topic_len, msg, dispatcher);
    return;
  }

  group_msg *gm = msg_new(topic, topic_len, msg, dispatcher, node_name);
  if (gm == NULL) {
    HARK_ERROR("pubsub_group_failed", "what=copy member=%u topic_bytes=%zu error=\"out of memory\"",
               ps->group_member, topic_len);
    hark__dispatch_local(ps, from, topic, topic_len, msg, dispatcher);
    return;
  }

  /* Local delivery first, through the shared cache, so the frames it
   * encodes are there for the other members. */
  if (!node_name) hark__dispatch_local(ps, from, topic, topic_len, &gm->msg, dispatcher);
  send_to_members(ps, gm, uplink);
  msg_unref(gm);
}

/* ---- Members ---- */

int hark__group_join(hark_pubsub *ps, hark_pubsub_group *group, unsigned index) {
  if (index >= group->count) return HARK_EINVAL;
  member *m = &group->members[index];

  /* `claimed` reserves the index while the mailbox is made, so two instances
   * can never join as the same member. */
  pthread_mutex_lock(&group->lock);
  int already_claimed = m->claimed;
  m->claimed = 1;
  pthread_mutex_unlock(&group->lock);
  if (already_claimed) return HARK_EEXIST;
  if (hark_mailbox_init(&m->mailbox, ps->loop) != 0) {
    pthread_mutex_lock(&group->lock);
    m->claimed = 0;
    pthread_mutex_unlock(&group->lock);
    return HARK_ENOMEM;
  }

  pthread_mutex_lock(&group->lock);
  m->ps = ps;
  pthread_mutex_unlock(&group->lock);
  ps->group = group;
  ps->group_member = index;
  return HARK_OK;
}

/* Removes the member's bit from every topic. Its subscribers are about to
 * go with the instance. Topics no member wants any more are reported to
 * member 0's adapter, unless the member leaving is member 0, whose adapter
 * is already destroyed. */
static void drop_interests_locked(hark_pubsub_group *group, uint64_t bit) {
  for (size_t b = 0; b < group->bucket_count; b++) {
    interest **link = &group->buckets[b];
    while (*link) {
      interest *it = *link;
      it->members &= ~bit;
      if (it->members != 0) {
        link = &it->next;
        continue;
      }
      *link = it->next;
      group->interest_count--;
      if (bit != 1) post_topic_change(group, it->name, it->len, 0);
      free(it);
    }
  }
}

void hark__group_leave(hark_pubsub *ps) {
  hark_pubsub_group *group = ps->group;
  member *m = &group->members[ps->group_member];

  pthread_mutex_lock(&group->lock);
  m->ps = NULL;
  drop_interests_locked(group, UINT64_C(1) << ps->group_member);
  pthread_mutex_unlock(&group->lock);

  /* Messages still queued are freed without being delivered. */
  hark_mailbox_close(&m->mailbox, NULL);
}
