/* The envelope that carries one broadcast between nodes through Redis.
 *
 * Layout (version 1), with every length an unsigned LEB128 varint of at most
 * 5 bytes in its shortest form:
 *
 *   u8 version (1)
 *   varint origin length,     origin bytes      (node name, 1..255 bytes, no NUL)
 *   varint dispatcher length, dispatcher bytes  (1..255 bytes, no NUL)
 *   varint topic length,      topic bytes       (0..HARK_ENVELOPE_MAX_TOPIC)
 *   varint event length,      event bytes       (0..HARK_ENVELOPE_MAX_EVENT)
 *   varint payload length,    payload bytes     (0..HARK_ENVELOPE_MAX_PAYLOAD)
 *   u8 flags                  (bit 0: binary payload; other bits must be 0)
 *
 * Nothing may follow the flags byte. The payload is carried as the bytes the
 * sender was given, so it is encoded once per broadcast, whatever the number
 * of receiving nodes. */
#ifndef HARK_PUBSUB_ENVELOPE_H
#define HARK_PUBSUB_ENVELOPE_H

#include <stddef.h>

#include "hark/pubsub.h"

#define HARK_ENVELOPE_VERSION 1
#define HARK_ENVELOPE_MAX_NAME 255
#define HARK_ENVELOPE_MAX_TOPIC 65535
#define HARK_ENVELOPE_MAX_EVENT 65535
/* Redis rejects bulk strings above 512 MiB (proto-max-bulk-len), so a larger
 * envelope could never be published. */
#define HARK_ENVELOPE_MAX_PAYLOAD (512u * 1024 * 1024 - 256 * 1024)

/* A decoded or to-be-encoded envelope. Every pointer is borrowed: after a
 * decode they point into the input buffer, so they are valid as long as it. */
typedef struct hark__envelope {
  const char *origin;
  size_t origin_len;
  const char *dispatcher;
  size_t dispatcher_len;
  const char *topic;
  size_t topic_len;
  hark_message msg;
} hark__envelope;

/* Returns the encoded size of `env`, or 0 when a field is out of the bounds
 * above (an empty or too long name, a name with a NUL byte, a too long topic,
 * event or payload). */
size_t hark__envelope_size(const hark__envelope *env);

/* Writes `env` to `out`, which has room for hark__envelope_size(env) bytes
 * (non-zero). Returns the number of bytes written. */
size_t hark__envelope_write(const hark__envelope *env, unsigned char *out);

/* Decodes `len` bytes. Returns 0, or HARK_EINVAL with *error (may be NULL)
 * set to a static description when the input is truncated, has trailing
 * bytes, another version, unknown flags, a non-minimal or too long varint, or
 * a field out of bounds. */
int hark__envelope_decode(const void *data, size_t len, hark__envelope *out, const char **error);

#endif
