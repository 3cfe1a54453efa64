/* harkd's security settings: the JSON config file (--config FILE) and the
 * HARK_JWT_SECRET and HARK_API_KEY environment variables, checked and turned
 * into a token verifier, an API key, an origin check and topic policies.
 * docs/security.md describes the format. */
#ifndef HARK_SERVER_CONFIG_H
#define HARK_SERVER_CONFIG_H

#include <stddef.h>

#include "server/jwt.h"
#include "server/origin.h"
#include "server/policy.h"

/* API keys shorter than this are rejected as guessable. */
#define HARK_MIN_API_KEY_BYTES 16

/* Secrets, keys and API keys read from files may not be larger than this. */
#define HARK_MAX_KEY_FILE_BYTES 65536

typedef struct hark_security_config {
  /* Connection and channel token verifier (owned), or NULL when no secret
   * or public key is configured: tokens are then ignored. */
  hark_jwt_verifier *verifier;
  /* The HTTP API key (owned, wiped on free), or NULL: the API is open. */
  char *api_key;
  size_t api_key_len;
  /* api_key_len bytes that a candidate of another length is compared with,
   * so a wrong length costs the same time as a wrong key. */
  char *api_key_dummy;
  hark_origin_check origin;
  hark_topic_policy topics;
  /* The host name the server is reached by (owned), for check_origin true,
   * or NULL to use the Host header of each request. */
  char *host;
} hark_security_config;

/* Secrets from the environment: HARK_JWT_SECRET (an HS256 secret) and
 * HARK_API_KEY. Either may be NULL. A config file setting wins over them. */
typedef struct hark_config_env {
  const char *jwt_secret;
  const char *api_key;
} hark_config_env;

/* Loads the config file at `path` (NULL: no file, only `env`) into `out`.
 * Relative file names in the file are resolved against the file's folder.
 * Returns 0, or -1 with a message in `error` that names the key or file at
 * fault and never contains a secret. On failure `out` has nothing to free. */
int hark_security_config_load(hark_security_config *out, const char *path,
                              const hark_config_env *env, char *error, size_t error_cap);

/* Like hark_security_config_load for a JSON text already in memory (NULL:
 * none). `base_dir` resolves relative file names; `name` is what error
 * messages call the text. */
int hark_security_config_load_text(hark_security_config *out, const char *text, size_t len,
                                   const char *name, const char *base_dir,
                                   const hark_config_env *env, char *error, size_t error_cap);

void hark_security_config_free(hark_security_config *config);

/* Returns 1 when neither tokens nor an API key are configured: the server
 * then runs in open development mode. */
int hark_security_config_is_open(const hark_security_config *config);

/* Compares `candidate` with the configured API key in time that depends only
 * on the key's length. Returns 1 on a match, 0 otherwise (also when no key
 * is configured). */
int hark_api_key_matches(const hark_security_config *config, const char *candidate, size_t len);

/* Returns 1 when `host`, a numeric IPv4 or IPv6 address, is a loopback
 * address (127.0.0.0/8, ::1, or ::ffff:127.0.0.0/104), else 0. */
int hark_address_is_loopback(const char *host);

#endif
