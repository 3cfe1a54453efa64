/* libFuzzer target for channel message decoding (src/server/channel_codec.c)
 * with the V1 and V2 JSON serializers and V2 binary frames. A decoded message
 * must satisfy the codec's contract, and re-encoding it must give a frame
 * that decodes to the same fields. */
#include <assert.h>
#include <stdint.h>
#include <string.h>

#include "base/json.h"
#include "server/channel_codec.h"

static int span_equal(hark_span a, hark_span b) {
  return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

static void check_round_trip(hark_serializer serializer, const hark_channel_msg *msg) {
  /* Refs and payloads are JSON; binary payloads have no JSON form. */
  if (msg->binary) return;
  assert(hark_json_valid(msg->join_ref.ptr, msg->join_ref.len));
  assert(hark_json_valid(msg->ref.ptr, msg->ref.len));
  assert(hark_json_valid(msg->payload.ptr, msg->payload.len));

  hark_buf frame = {0};
  if (hark_channel_encode(&frame, serializer, msg->join_ref, msg->ref, msg->topic, msg->event,
                          msg->payload) != 0) {
    hark_buf_free(&frame);
    return;
  }
  hark_channel_decoder decoder = {0};
  hark_channel_msg again;
  int rc = hark_channel_decode(&decoder, serializer, 0, frame.data, frame.len, &again);
  assert(rc == 0);
  assert(span_equal(again.topic, msg->topic));
  assert(span_equal(again.event, msg->event));
  assert(span_equal(again.ref, msg->ref));
  if (serializer == HARK_SERIALIZER_V2) assert(span_equal(again.join_ref, msg->join_ref));
  hark_channel_decoder_free(&decoder);
  hark_buf_free(&frame);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  hark_channel_decoder decoder = {0};
  hark_channel_msg msg;
  static const hark_serializer serializers[] = {HARK_SERIALIZER_V1, HARK_SERIALIZER_V2};

  for (int s = 0; s < 2; s++) {
    for (int binary = 0; binary < 2; binary++) {
      if (hark_channel_decode(&decoder, serializers[s], binary, (const char *)data, size, &msg) == 0)
        check_round_trip(serializers[s], &msg);
      else
        assert(decoder.error != NULL);
    }
  }
  hark_channel_decoder_free(&decoder);
  return 0;
}
