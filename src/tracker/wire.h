/* The binary wire format of the tracker's replication messages.
 *
 * A message starts with the format version byte and the message type, then a
 * replica table (name and vsn of every replica the message mentions), then
 * the fields of its type, which refer to replicas by table index. Integers
 * are unsigned LEB128 varints; strings are a varint length and the bytes.
 *
 *   heartbeat          from, clock, payload flag (0 empty, 1 window delta),
 *                      [delta]
 *   transfer_req       from, request id, clock
 *   transfer_ack       from, request id, delta (window delta or full extract)
 *   graceful_permdown  from
 *
 * A delta is its kind, its creator, one section per replica (flags, context,
 * range start and end, cloud intervals), a topic table, and its values
 * (replica, counter, owner, topic index, key, meta). Counters and owners are
 * stored as differences from the previous value, so runs of joins from one
 * replica cost a byte or two each for the tag.
 *
 * The decoder accepts exactly what the encoder produces from a valid state
 * and rejects everything else: truncation, trailing bytes, non-minimal
 * varints, bad indexes, duplicate replicas, tags or clock keys, unsorted or
 * adjacent cloud intervals, counters above HARK__WIRE_MAX_COUNTER, range
 * starts above ends, keys longer than HARK__MAX_KEY_LEN and metas that are
 * not JSON objects. Counts are checked against the bytes left before
 * anything is allocated, so memory stays proportional to the input. */
#ifndef HARK_TRACKER_WIRE_H
#define HARK_TRACKER_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "base/buf.h"
#include "tracker/clock.h"
#include "tracker/delta.h"

#define HARK__WIRE_VERSION 1

/* The largest counter the format carries: 2^48 events are far beyond any
 * replica's lifetime, and the bound keeps sums of dot counts from
 * overflowing. */
#define HARK__WIRE_MAX_COUNTER ((uint64_t)1 << 48)

/* The most replicas one message may mention. Lookups in a delta's replica
 * table are linear, so the bound also caps the decoder's work.
 * NOTE: a shard with more live replicas than this cannot replicate; it is
 * far above the cluster sizes Phoenix is used with. */
#define HARK__WIRE_MAX_REPLICAS 1024

typedef enum hark__wire_type {
  HARK__WIRE_HEARTBEAT = 1,
  HARK__WIRE_TRANSFER_REQ = 2,
  HARK__WIRE_TRANSFER_ACK = 3,
  HARK__WIRE_GRACEFUL_PERMDOWN = 4,
} hark__wire_type;

/* A decoded message. It owns `from_name`, `clock` and `payload`. */
typedef struct hark__wire_msg {
  hark__wire_type type;
  char *from_name;
  hark__rref from; /* points into from_name */
  uint64_t request_id;  /* transfer_req and transfer_ack */
  hark__clock clock;    /* heartbeat and transfer_req */
  hark__delta *payload; /* heartbeat (NULL when empty) and transfer_ack */
} hark__wire_msg;

/* Appends the encoding of one message to `out`. `clock` is read for
 * heartbeats and transfer requests, `payload` for heartbeats (NULL for an
 * empty one) and transfer acks. Returns 0, HARK_EINVAL (a field the format
 * cannot carry, such as a counter above HARK__WIRE_MAX_COUNTER) or
 * HARK_ENOMEM; on error `out` is restored to its previous length. */
int hark__wire_encode(hark_buf *out, hark__wire_type type, hark__rref from, uint64_t request_id,
                      const hark__clock *clock, const hark__delta *payload);

/* Decodes one whole message. Returns 0 and fills *msg (free it with
 * hark__wire_msg_free), HARK_EINVAL for malformed input with *error set to
 * a static description, or HARK_ENOMEM. On error *msg is zeroed. */
int hark__wire_decode(const void *data, size_t len, hark__wire_msg *msg, const char **error);

void hark__wire_msg_free(hark__wire_msg *msg);

#endif
