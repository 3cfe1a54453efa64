/* libFuzzer target for the inter-node envelope decoder (src/pubsub/envelope.c).
 *
 * Each input is decoded. When it decodes, every field must lie inside the
 * input, and encoding the result again must give the same bytes, because the
 * format has exactly one encoding per envelope (shortest-form varints, no
 * trailing bytes). Seed inputs are in fuzz/corpus/envelope. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pubsub/envelope.h"

static void check_inside(const uint8_t *data, size_t size, const char *field, size_t len) {
  if (len == 0) return;
  const uint8_t *p = (const uint8_t *)field;
  if (p < data || p + len > data + size) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  hark__envelope env;
  const char *error = NULL;
  if (hark__envelope_decode(data, size, &env, &error) != HARK_OK) {
    if (error == NULL) abort();
    return 0;
  }

  check_inside(data, size, env.origin, env.origin_len);
  check_inside(data, size, env.dispatcher, env.dispatcher_len);
  check_inside(data, size, env.topic, env.topic_len);
  check_inside(data, size, env.msg.event, env.msg.event_len);
  check_inside(data, size, env.msg.payload, env.msg.payload_len);

  size_t encoded_size = hark__envelope_size(&env);
  if (encoded_size != size) abort();
  unsigned char *encoded = malloc(size);
  if (encoded == NULL) return 0;
  if (hark__envelope_write(&env, encoded) != size || memcmp(encoded, data, size) != 0) abort();
  free(encoded);
  return 0;
}
