/* Flags, their checks and the help text. Numeric flags are described by one
 * table, so each gets the same parsing and the same error message. */
#include "cli/options.h"

#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "hark/redis.h"

static const char usage_text[] =
    "Usage: harkd [OPTIONS]\n"
    "\n"
    "A Phoenix Channels compatible WebSocket server with PubSub and Presence.\n"
    "\n"
    "Server:\n"
    "  --listen HOST:PORT           address to listen on (default 127.0.0.1:4000, or\n"
    "                               $HARK_LISTEN); port 0 picks a free port\n"
    "  --max-message-bytes N        largest WebSocket message, in bytes (default 1048576);\n"
    "                               larger ones get close code 1009\n"
    "  --idle-timeout-ms N          close a WebSocket that sends nothing for N ms (60000)\n"
    "  --handshake-timeout-ms N     time to send a whole HTTP request, including the\n"
    "                               WebSocket upgrade (10000)\n"
    "  --max-channels N             channels one socket may join (100)\n"
    "  --max-body-bytes N           largest HTTP request body, in bytes (1048576)\n"
    "  --max-output-bytes N         bytes queued for a socket that reads too slowly before\n"
    "                               it is closed (16777216)\n"
    "  --workers N                  threads that serve connections (the number of cores)\n"
    "  --max-connections N          open connections in total (100000)\n"
    "  --max-connections-per-ip N   open connections from one client address (1000)\n"
    "  --web-root DIR               folder of the demo page (default: the source tree's web/)\n"
    "  --phoenix-js FILE            phoenix.mjs served at /assets/phoenix.mjs (default:\n"
    "                               node_modules/phoenix in the source tree)\n"
    "  --log-level LEVEL            debug, info, warn or error (info)\n"
    "\n"
    "Security:\n"
    "  --config FILE                JSON file with tokens, API key, origin check and\n"
    "                               topic policies (see docs/security.md)\n"
    "  --insecure                   allow a non-loopback --listen address without any\n"
    "                               token secret or API key\n"
    "  --max-messages-per-second N  messages one socket may send per second, with\n"
    "                               bursts of twice that (100); more get close code 1008\n"
    "  --max-topic-bytes N          longest topic, in bytes (255)\n"
    "  --max-event-bytes N          longest event name, in bytes (255)\n"
    "\n"
    "Presence:\n"
    "  --presence PATTERN           track presence on topics matching this glob ('*' any\n"
    "                               bytes, '?' one byte); repeatable; default '*'\n"
    "  --no-presence                turn presence off on every topic\n"
    "  --pool-size N                tracker shards (1); equal on every node of a cluster\n"
    "\n"
    "Cluster:\n"
    "  --cluster redis://HOST:PORT[/DB]  join the nodes that share this Redis (or\n"
    "                               $HARK_CLUSTER); without it harkd runs alone\n"
    "  --node-name NAME             this node's name, unique in the cluster (default:\n"
    "                               the host name and the port)\n"
    "  --redis-prefix PREFIX        namespace of the Redis channels (hark)\n"
    "  --redis-sharded              use sharded pub/sub (SSUBSCRIBE), for Redis Cluster\n"
    "  --broadcast-period-ms N      tracker heartbeat period (1500)\n"
    "  --max-silent-periods N       periods without changes before an empty heartbeat (10)\n"
    "  --down-period-ms N           silence before a node's presences leave\n"
    "                               (default broadcast period x max silent periods x 2)\n"
    "  --permdown-period-ms N       silence before a node is forgotten (1200000)\n"
    "  --clock-sample-periods N     periods between catch-up decisions (2)\n"
    "  --max-delta-sizes A,B,C      sizes of the kept delta generations (100,1000,10000)\n"
    "\n"
    "  --help                       show this help and exit\n"
    "  --version                    show the version and exit\n";

enum number_kind { KIND_SIZE, KIND_U64, KIND_UNSIGNED };

typedef struct number_flag {
  const char *name;
  unsigned long long min, max;
  const char *unit;
  size_t offset; /* of the field in harkd_options */
  enum number_kind kind;
} number_flag;

#define FIELD(f) offsetof(harkd_options, f)

static const number_flag number_flags[] = {
    {"max-message-bytes", 1, 1ULL << 31, "bytes", FIELD(server.max_message_bytes), KIND_SIZE},
    {"idle-timeout-ms", 1, 86400000, "milliseconds", FIELD(server.idle_timeout_ms), KIND_U64},
    {"handshake-timeout-ms", 1, 3600000, "milliseconds", FIELD(server.handshake_timeout_ms), KIND_U64},
    {"max-channels", 1, 1000000, "channels", FIELD(server.max_channels), KIND_UNSIGNED},
    {"max-body-bytes", 1, 1ULL << 31, "bytes", FIELD(server.max_body_bytes), KIND_SIZE},
    {"max-output-bytes", 1024, 1ULL << 34, "bytes", FIELD(server.max_output_bytes), KIND_SIZE},
    {"max-connections", 1, 10000000, "connections", FIELD(server.max_connections), KIND_SIZE},
    {"max-connections-per-ip", 1, 10000000, "connections", FIELD(server.max_connections_per_ip), KIND_SIZE},
    {"pool-size", 1, 1024, "shards", FIELD(pool_size), KIND_UNSIGNED},
    {"workers", 1, HARKD_MAX_WORKERS, "threads", FIELD(workers), KIND_UNSIGNED},
    {"broadcast-period-ms", 1, 3600000, "milliseconds", FIELD(replication.broadcast_period_ms), KIND_U64},
    {"max-silent-periods", 1, 1000000, "periods", FIELD(replication.max_silent_periods), KIND_UNSIGNED},
    {"down-period-ms", 1, 86400000, "milliseconds", FIELD(replication.down_period_ms), KIND_U64},
    {"permdown-period-ms", 1, 604800000, "milliseconds", FIELD(replication.permdown_period_ms), KIND_U64},
    {"clock-sample-periods", 1, 1000000, "periods", FIELD(replication.clock_sample_periods), KIND_UNSIGNED},
    {"max-messages-per-second", 1, 1000000, "messages", FIELD(server.max_messages_per_second), KIND_UNSIGNED},
    {"max-topic-bytes", 16, 65535, "bytes", FIELD(server.max_topic_bytes), KIND_SIZE},
    {"max-event-bytes", 16, 65535, "bytes", FIELD(server.max_event_bytes), KIND_SIZE},
};

#define NUMBER_FLAG_COUNT (sizeof number_flags / sizeof number_flags[0])

enum {
  OPT_LISTEN = 1000, OPT_WEB_ROOT, OPT_PHOENIX_JS, OPT_LOG_LEVEL, OPT_PRESENCE, OPT_NO_PRESENCE,
  OPT_CLUSTER, OPT_NODE_NAME, OPT_REDIS_PREFIX, OPT_REDIS_SHARDED, OPT_MAX_DELTA_SIZES,
  OPT_HELP, OPT_VERSION, OPT_CONFIG, OPT_INSECURE,
};

static const struct option named_options[] = {
    {"listen", required_argument, NULL, OPT_LISTEN},
    {"web-root", required_argument, NULL, OPT_WEB_ROOT},
    {"phoenix-js", required_argument, NULL, OPT_PHOENIX_JS},
    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
    {"presence", required_argument, NULL, OPT_PRESENCE},
    {"no-presence", no_argument, NULL, OPT_NO_PRESENCE},
    {"cluster", required_argument, NULL, OPT_CLUSTER},
    {"node-name", required_argument, NULL, OPT_NODE_NAME},
    {"redis-prefix", required_argument, NULL, OPT_REDIS_PREFIX},
    {"redis-sharded", no_argument, NULL, OPT_REDIS_SHARDED},
    {"max-delta-sizes", required_argument, NULL, OPT_MAX_DELTA_SIZES},
    {"config", required_argument, NULL, OPT_CONFIG},
    {"insecure", no_argument, NULL, OPT_INSECURE},
    {"help", no_argument, NULL, OPT_HELP},
    {"version", no_argument, NULL, OPT_VERSION},
};

#define NAMED_OPTION_COUNT (sizeof named_options / sizeof named_options[0])

static int usage_error(const char *fmt, const char *value) {
  fprintf(stderr, "harkd: ");
  fprintf(stderr, fmt, value);
  fprintf(stderr, "\nTry 'harkd --help' for the list of options.\n");
  return HARKD_EXIT_USAGE;
}

/* Parses a decimal number in [min, max]. Returns 0 or -1. */
static int parse_number(const char *text, unsigned long long min, unsigned long long max,
                        unsigned long long *out) {
  if (!text[0] || text[0] == '-' || text[0] == '+') return -1;
  char *end;
  errno = 0;
  unsigned long long value = strtoull(text, &end, 10);
  if (errno || *end || value < min || value > max) return -1;
  *out = value;
  return 0;
}

static int set_number(harkd_options *options, const number_flag *flag, const char *text) {
  unsigned long long value;
  if (parse_number(text, flag->min, flag->max, &value) != 0) {
    fprintf(stderr, "harkd: invalid --%s '%s': expected %s from %llu to %llu\n", flag->name, text,
            flag->unit, flag->min, flag->max);
    fprintf(stderr, "Try 'harkd --help' for the list of options.\n");
    return HARKD_EXIT_USAGE;
  }

  char *field = (char *)options + flag->offset;
  switch (flag->kind) {
    case KIND_SIZE: *(size_t *)field = (size_t)value; break;
    case KIND_U64: *(uint64_t *)field = value; break;
    case KIND_UNSIGNED: *(unsigned *)field = (unsigned)value; break;
  }
  return -1;
}

/* Splits "HOST:PORT" or "[V6]:PORT" and checks both parts. */
static int parse_listen(const char *text, harkd_options *options) {
  const char *colon = strrchr(text, ':');
  if (!colon) return -1;
  size_t host_len = (size_t)(colon - text);
  const char *host = text;
  if (host_len >= 2 && host[0] == '[' && host[host_len - 1] == ']') {
    host++;
    host_len -= 2;
  }
  if (host_len == 0 || host_len >= sizeof options->host) return -1;
  memcpy(options->host, host, host_len);
  options->host[host_len] = '\0';
  if (strcmp(options->host, "localhost") == 0) strcpy(options->host, "127.0.0.1");

  struct sockaddr_in6 addr;
  if (uv_ip4_addr(options->host, 0, (struct sockaddr_in *)&addr) != 0 &&
      uv_ip6_addr(options->host, 0, &addr) != 0)
    return -1;

  unsigned long long port;
  if (parse_number(colon + 1, 0, 65535, &port) != 0) return -1;
  options->server.port = (int)port;
  return 0;
}

/* Parses "100,1000,10000": increasing sizes, at most 8. */
static int parse_delta_sizes(const char *text, harkd_options *options) {
  hark_tracker_replication_options *r = &options->replication;
  char copy[256];
  if (strlen(text) >= sizeof copy) return -1;
  strcpy(copy, text);

  r->max_delta_sizes_count = 0;
  char *save = NULL;
  for (char *part = strtok_r(copy, ",", &save); part; part = strtok_r(NULL, ",", &save)) {
    unsigned long long size;
    if (r->max_delta_sizes_count == 8 || parse_number(part, 1, 100000000, &size) != 0) return -1;
    r->max_delta_sizes[r->max_delta_sizes_count++] = (size_t)size;
  }
  return r->max_delta_sizes_count > 0 ? 0 : -1;
}

static int add_presence_pattern(harkd_options *options, const char *pattern) {
  if (!pattern[0]) return usage_error("invalid --presence '%s': expected a glob pattern", pattern);
  if (options->presence_pattern_count == HARKD_MAX_PRESENCE_PATTERNS)
    return usage_error("too many --presence patterns (the limit is 64): '%s'", pattern);
  options->presence_patterns[options->presence_pattern_count++] = pattern;
  return -1;
}

/* Handles one named (non-numeric) option. Returns -1 to go on, or an exit
 * status. */
static int apply_named(harkd_options *options, int opt, const char *arg, const char **listen) {
  switch (opt) {
    case OPT_LISTEN: *listen = arg; return -1;
    case OPT_WEB_ROOT: options->server.web_root = arg; return -1;
    case OPT_PHOENIX_JS: options->server.phoenix_js = arg; return -1;
    case OPT_LOG_LEVEL: {
      hark_log_level level;
      if (hark_log_parse_level(arg, &level) != 0)
        return usage_error("invalid --log-level '%s': expected debug, info, warn or error", arg);
      hark_log_set_level(level);
      return -1;
    }
    case OPT_PRESENCE: return add_presence_pattern(options, arg);
    case OPT_NO_PRESENCE: options->presence_off = 1; return -1;
    case OPT_CLUSTER: options->cluster_url = arg; return -1;
    case OPT_NODE_NAME:
      if (!arg[0] || strlen(arg) >= sizeof options->node_name)
        return usage_error("invalid --node-name '%s': expected 1 to 255 bytes", arg);
      strcpy(options->node_name, arg);
      return -1;
    case OPT_REDIS_PREFIX:
      if (!arg[0]) return usage_error("invalid --redis-prefix '%s': expected a non-empty prefix", arg);
      options->redis_prefix = arg;
      return -1;
    case OPT_REDIS_SHARDED: options->redis_sharded = 1; return -1;
    case OPT_MAX_DELTA_SIZES:
      if (parse_delta_sizes(arg, options) != 0)
        return usage_error("invalid --max-delta-sizes '%s': expected up to 8 sizes such as 100,1000,10000", arg);
      return -1;
    case OPT_CONFIG: options->config_path = arg; return -1;
    case OPT_INSECURE: options->insecure = 1; return -1;
    case OPT_HELP: fputs(usage_text, stdout); return 0;
    case OPT_VERSION: printf("harkd %s\n", HARK_VERSION); return 0;
    default: return -1;
  }
}

/* Checks what only the whole command line can tell. */
static int check_combined(harkd_options *options, const char *listen) {
  if (listen && parse_listen(listen, options) != 0)
    return usage_error("invalid listen address '%s': expected HOST:PORT, e.g. 127.0.0.1:4000", listen);
  if (!listen) parse_listen("127.0.0.1:4000", options);
  options->server.host = options->host;

  if (options->presence_off && options->presence_pattern_count > 0)
    return usage_error("%s", "--presence and --no-presence cannot be combined");
  if (options->presence_pattern_count == 0) add_presence_pattern(options, "*");

  if (options->cluster_url) {
    char host[256];
    int port, db;
    const char *error;
    if (hark_redis_url_parse(options->cluster_url, host, sizeof host, &port, &db, &error) != 0) {
      fprintf(stderr, "harkd: invalid --cluster '%s': %s\n", options->cluster_url, error);
      return HARKD_EXIT_USAGE;
    }
  }

  /* Phoenix derives the down period from the heartbeat settings unless it
   * is given. */
  hark_tracker_replication_options *r = &options->replication;
  if (r->down_period_ms == 0) r->down_period_ms = r->broadcast_period_ms * r->max_silent_periods * 2;

  const char *error;
  if (hark_tracker_replication_validate(&options->replication, &error) != 0)
    return usage_error("invalid replication periods: %s", error);
  return -1;
}

/* getopt_long's table: the named options, then one entry per numeric flag,
 * whose value is 2000 plus its index in number_flags. */
static void build_long_options(struct option *out) {
  size_t n = 0;
  for (size_t i = 0; i < NAMED_OPTION_COUNT; i++) out[n++] = named_options[i];
  for (size_t i = 0; i < NUMBER_FLAG_COUNT; i++)
    out[n++] = (struct option){number_flags[i].name, required_argument, NULL, 2000 + (int)i};
  out[n] = (struct option){NULL, 0, NULL, 0};
}

int harkd_parse_options(int argc, char **argv, harkd_options *options) {
  hark_tracker_replication_defaults(&options->replication);
  options->replication.down_period_ms = 0;
  options->pool_size = 1;

  struct option long_options[NAMED_OPTION_COUNT + NUMBER_FLAG_COUNT + 1];
  build_long_options(long_options);

  const char *listen = getenv("HARK_LISTEN");
  if (listen && !*listen) listen = NULL;
  const char *cluster = getenv("HARK_CLUSTER");
  if (cluster && *cluster) options->cluster_url = cluster;

  int opt, status;
  opterr = 0;
  while ((opt = getopt_long(argc, argv, ":", long_options, NULL)) != -1) {
    if (opt == ':') return usage_error("option '%s' needs a value", argv[optind - 1]);
    if (opt == '?') return usage_error("unknown option '%s'", argv[optind - 1]);
    if (opt >= 2000) status = set_number(options, &number_flags[opt - 2000], optarg);
    else status = apply_named(options, opt, optarg, &listen);
    if (status >= 0) return status;
  }
  if (optind < argc) return usage_error("unexpected argument '%s'", argv[optind]);
  return check_combined(options, listen);
}
