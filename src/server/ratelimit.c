#include "server/ratelimit.h"

void hark_token_bucket_init(hark_token_bucket *bucket, uint32_t rate_per_s, uint32_t burst,
                            uint64_t now_ms) {
  if (burst < 1) burst = 1;
  if (burst > HARK_TOKEN_BURST_MAX) burst = HARK_TOKEN_BURST_MAX;
  bucket->rate_per_s = rate_per_s;
  bucket->capacity_milli = burst * 1000;
  bucket->tokens_milli = bucket->capacity_milli;
  bucket->last_ms = now_ms;
}

int hark_token_bucket_take(hark_token_bucket *bucket, uint64_t now_ms) {
  if (bucket->rate_per_s == 0) return 1;

  if (now_ms > bucket->last_ms) {
    /* Past the time that fills an empty bucket, the bucket is full, which
     * also keeps the product below from overflowing after a long pause. */
    uint64_t elapsed = now_ms - bucket->last_ms;
    uint64_t fill_ms = bucket->capacity_milli / bucket->rate_per_s + 1;
    uint64_t tokens = bucket->capacity_milli;
    if (elapsed < fill_ms) tokens = bucket->tokens_milli + elapsed * bucket->rate_per_s;
    if (tokens > bucket->capacity_milli) tokens = bucket->capacity_milli;
    bucket->tokens_milli = (uint32_t)tokens;
    bucket->last_ms = now_ms;
  }

  if (bucket->tokens_milli < 1000) return 0;
  bucket->tokens_milli -= 1000;
  return 1;
}
