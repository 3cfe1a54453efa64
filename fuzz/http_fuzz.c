/* libFuzzer target for HTTP request parsing, the WebSocket upgrade and
 * everything behind it (frames, channels, presence, the HTTP API), through a
 * real hark_server whose connection has no socket behind it.
 *
 * The first input byte chooses where the rest is split in two reads, so
 * requests and frames also arrive cut at arbitrary points. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "hark/presence.h"
#include "server/conn.h"

static uv_loop_t loop;
static hark_pubsub *pubsub;
static hark_presence *presence;
static hark_server *server;
static const char *const patterns[] = {"room:*"};

static void set_up(void) {
  hark_log_set_level(HARK_LOG_ERROR);
  uv_loop_init(&loop);
  hark_pubsub_options pubsub_options = {.node_name = "fuzz"};
  hark_pubsub_create(&pubsub, &loop, &pubsub_options);
  hark_presence_options presence_options = {.pubsub = pubsub,
                                            .dispatcher_name = HARK_CHANNELS_DISPATCHER,
                                            .node_name = "fuzz"};
  hark_presence_create(&presence, &presence_options);

  hark_server_config config;
  hark_server_config_defaults(&config);
  config.max_message_bytes = 64 * 1024;
  config.max_body_bytes = 64 * 1024;
  config.presence = presence;
  config.presence_patterns = patterns;
  config.presence_pattern_count = 1;
  config.node_name = "fuzz";
  server = hark_server_create(&loop, pubsub, &config);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!server) set_up();
  if (size < 1) return 0;
  size_t split = size > 1 ? data[0] % size : 0;
  data++;
  size--;
  if (split > size) split = size;

  /* The server unmasks frames in place, so it reads from a writable copy. */
  char *copy = malloc(size + 1);
  memcpy(copy, data, size);

  hark_conn *conn = hark_conn_create_detached(server);
  if (conn) {
    hark_conn_feed(conn, copy, split);
    if (!conn->closed) hark_conn_feed(conn, copy + split, size - split);
    hark_conn_abort(conn);
  }

  /* Runs the close callbacks and the output flush, which frees the
   * connection and its queued frames. */
  uv_run(&loop, UV_RUN_NOWAIT);
  uv_run(&loop, UV_RUN_NOWAIT);
  free(copy);
  return 0;
}
