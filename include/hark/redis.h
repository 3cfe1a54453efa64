/* A PubSub cluster adapter over Redis pub/sub (hiredis, on the libuv loop).
 *
 * Each topic maps to a Redis channel under a namespace, and a node listens to
 * a topic's channel only while it has a local subscriber. direct_broadcast
 * uses one channel per node. Messages between nodes are binary envelopes that
 * carry the origin node, the dispatcher name, the topic, the event and the
 * payload; a node ignores its own echoes.
 *
 * Delivery is at-most-once, as in Phoenix.PubSub: while Redis is unreachable
 * the adapter reconnects with backoff and jitter, and broadcasts made
 * meanwhile are dropped, counted and logged. */
#ifndef HARK_REDIS_H
#define HARK_REDIS_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "hark/pubsub.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hark_redis_options {
  const char *url;              /* "redis://HOST[:PORT][/DB]"; required */
  const char *channel_prefix;   /* namespace of the Redis channels; NULL means "hark" */
  int sharded;                  /* use SSUBSCRIBE and SPUBLISH (Redis 7 cluster) */
  uint64_t reconnect_min_ms;    /* first retry delay; 0 means 100 */
  uint64_t reconnect_max_ms;    /* largest retry delay; 0 means 5000 */
} hark_redis_options;

typedef struct hark_redis_stats {
  uint64_t published;           /* envelopes sent */
  uint64_t received;            /* envelopes from other nodes dispatched locally */
  uint64_t dropped;             /* broadcasts dropped while disconnected */
  uint64_t invalid;             /* envelopes that failed to decode */
  uint64_t reconnects;          /* connections made after the first */
  uint64_t unknown_dispatcher;  /* envelopes dropped: dispatcher name not registered here */
  int connected;                /* 1 while both Redis connections are up */
} hark_redis_stats;

/* Parses "redis://HOST[:PORT][/DB]". HOST is a name, an IPv4 address or an
 * IPv6 address in brackets; PORT is 1-65535 (default 6379); DB is
 * 0-2147483647, and *db is -1 when the URL has none. Credentials, TLS, query
 * and fragment are rejected. Returns 0, or HARK_EINVAL with *error (may be
 * NULL) set to a static description. */
int hark_redis_url_parse(const char *url, char *host, size_t host_size, int *port, int *db,
                         const char **error);

/* Fills `adapter` with a Redis adapter for `loop`; pass it in
 * hark_pubsub_options.adapter. It connects when the pubsub instance attaches
 * it. hark_pubsub_destroy closes its handles, and their close callbacks free
 * its memory, so run the loop after the destroy (uv_run until it returns 0)
 * before uv_loop_close. An adapter never attached is freed by calling its
 * destroy callback. Node names longer than 255 bytes are not supported: the
 * adapter then stays offline and its broadcasts return HARK_EINVAL. Returns
 * 0, HARK_EINVAL (bad URL, or a channel prefix that is empty, longer than 200
 * bytes or has bytes outside [A-Za-z0-9_.:-]) or HARK_ENOMEM. */
int hark_redis_adapter_create(hark_pubsub_adapter *adapter, uv_loop_t *loop,
                              const hark_redis_options *options);

/* Reads the counters of an adapter made by hark_redis_adapter_create, given
 * its ctx. */
void hark_redis_adapter_stats(void *adapter_ctx, hark_redis_stats *out);

#ifdef __cplusplus
}
#endif

#endif
