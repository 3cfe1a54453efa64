/* A token bucket that limits how many messages one WebSocket may send per
 * second. It reads no clock: the caller passes the time in milliseconds. */
#ifndef HARK_SERVER_RATELIMIT_H
#define HARK_SERVER_RATELIMIT_H

#include <stdint.h>

/* Tokens are counted in thousandths, so a rate of R per second adds exactly
 * R thousandths per millisecond and no floating point is needed. */
typedef struct hark_token_bucket {
  uint32_t rate_per_s;      /* tokens added per second; 0 turns the limit off */
  uint32_t capacity_milli;  /* burst x 1000 */
  uint32_t tokens_milli;
  uint64_t last_ms;
} hark_token_bucket;

/* The largest burst: the counts are kept in 32 bits, since every connection
 * has a bucket. */
#define HARK_TOKEN_BURST_MAX (UINT32_MAX / 1000)

/* Starts a full bucket at `now_ms`: `burst` messages may come at once, then
 * `rate_per_s` per second. A rate of 0 allows everything. A burst below 1 is
 * raised to 1, so a positive rate never blocks every message. A burst above
 * HARK_TOKEN_BURST_MAX is lowered to it. */
void hark_token_bucket_init(hark_token_bucket *bucket, uint32_t rate_per_s, uint32_t burst,
                            uint64_t now_ms);

/* Refills the bucket for the time since the last call, then takes one token.
 * Returns 1 when a token was taken (the message is allowed), 0 when the
 * bucket is empty. A clock that goes backwards adds nothing. */
int hark_token_bucket_take(hark_token_bucket *bucket, uint64_t now_ms);

#endif
