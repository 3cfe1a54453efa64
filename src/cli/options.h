/* harkd's command line. */
#ifndef HARK_CLI_OPTIONS_H
#define HARK_CLI_OPTIONS_H

#include <netinet/in.h>
#include <stddef.h>

#include "hark/tracker.h"
#include "server/server.h"

#define HARKD_EXIT_USAGE 2
#define HARKD_MAX_PRESENCE_PATTERNS 64
#define HARKD_MAX_WORKERS 64

typedef struct harkd_options {
  hark_server_config server;            /* strings point into argv or this struct */
  char host[INET6_ADDRSTRLEN];
  char node_name[256];                  /* empty until chosen */
  char phoenix_js[1024];
  const char *cluster_url;              /* NULL: one node */
  const char *redis_prefix;
  int redis_sharded;
  unsigned pool_size;                   /* tracker shards */
  unsigned workers;                     /* threads; 0 until chosen: the number of cores */
  hark_tracker_replication_options replication;
  const char *presence_patterns[HARKD_MAX_PRESENCE_PATTERNS];
  size_t presence_pattern_count;
  int presence_off;
  const char *config_path;              /* --config FILE, or NULL */
  int insecure;                         /* --insecure: open mode may listen beyond loopback */
} harkd_options;

/* Parses argv and the HARK_LISTEN and HARK_CLUSTER environment variables into
 * `options`. Returns -1 to go on, or an exit status: 0 after --help or
 * --version, HARKD_EXIT_USAGE after an error, which it has printed. */
int harkd_parse_options(int argc, char **argv, harkd_options *options);

#endif
