#include "server/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

/* Where a load reports its error. */
typedef struct loader {
  const char *name;      /* the config file's path, or what stands for it */
  const char *base_dir;  /* for relative file names; NULL: the working directory */
  char *error;
  size_t error_cap;
} loader;

/* Secret bytes read from the file or the environment. Wiped when freed. */
typedef struct secret {
  char *data;
  size_t len;
} secret;

static void secret_free(secret *s) {
  if (s->data) OPENSSL_cleanse(s->data, s->len);
  free(s->data);
  s->data = NULL;
  s->len = 0;
}

static int fail(loader *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(loader *l, const char *fmt, ...) {
  int n = snprintf(l->error, l->error_cap, "%s: ", l->name);
  if (n < 0 || (size_t)n >= l->error_cap) return -1;
  va_list args;
  va_start(args, fmt);
  vsnprintf(l->error + n, l->error_cap - (size_t)n, fmt, args);
  va_end(args);
  return -1;
}

static const char *const top_level_keys[] = {
    "host", "algorithm", "secret", "secret_file", "public_key_file", "issuer", "audience",
    "leeway_seconds", "api_key", "api_key_file", "check_origin", "topics",
};

static const char *const topic_keys[] = {
    "pattern", "join", "publish", "presence", "client_meta", "max_meta_bytes",
};

/* Rejects a key that is not in `known`, so that a misspelt setting cannot
 * silently leave a default (such as an open topic) in place. */
static int check_keys(loader *l, const json_t *object, const char *where,
                      const char *const *known, size_t count) {
  const char *key;
  json_t *value;
  json_object_foreach((json_t *)object, key, value) {
    size_t i = 0;
    while (i < count && strcmp(key, known[i]) != 0) i++;
    if (i == count) return fail(l, "unknown key \"%s\"%s%s", key, where[0] ? " in " : "", where);
  }
  return 0;
}

/* Returns the string member `key`, or NULL when absent; -1 in *rc when it is
 * present but not a non-empty string. */
static const char *get_string(loader *l, const json_t *object, const char *key, int *rc) {
  json_t *value = json_object_get(object, key);
  if (!value) return NULL;
  if (!json_is_string(value) || json_string_length(value) == 0) {
    *rc = fail(l, "\"%s\" must be a non-empty string", key);
    return NULL;
  }
  return json_string_value(value);
}

/* Reads a whole file (at most HARK_MAX_KEY_FILE_BYTES) into `out`, with a
 * NUL after it. Relative names are resolved against the config file's
 * folder. */
static int read_file(loader *l, const char *key, const char *name, secret *out) {
  char path[4096];
  if (name[0] == '/' || !l->base_dir) snprintf(path, sizeof path, "%s", name);
  else snprintf(path, sizeof path, "%s/%s", l->base_dir, name);

  FILE *file = fopen(path, "rb");
  if (!file) return fail(l, "cannot read %s \"%s\": %s", key, path, strerror(errno));
  out->data = malloc(HARK_MAX_KEY_FILE_BYTES + 1);
  if (!out->data) {
    fclose(file);
    return fail(l, "out of memory reading %s", key);
  }
  out->len = fread(out->data, 1, HARK_MAX_KEY_FILE_BYTES + 1, file);
  int read_error = ferror(file);
  fclose(file);

  if (read_error) {
    secret_free(out);
    return fail(l, "cannot read %s \"%s\": read error", key, path);
  }
  if (out->len > HARK_MAX_KEY_FILE_BYTES) {
    secret_free(out);
    return fail(l, "%s \"%s\" is larger than %d bytes", key, path, HARK_MAX_KEY_FILE_BYTES);
  }
  out->data[out->len] = '\0';
  return 0;
}

/* A secret or API key file usually ends in a newline that is no part of it. */
static void strip_line_end(secret *s) {
  while (s->len > 0 && (s->data[s->len - 1] == '\n' || s->data[s->len - 1] == '\r'))
    s->data[--s->len] = '\0';
}

static int copy_secret(loader *l, const char *value, secret *out) {
  out->len = strlen(value);
  out->data = malloc(out->len + 1);
  if (!out->data) return fail(l, "out of memory");
  memcpy(out->data, value, out->len + 1);
  return 0;
}

/* Reads `key` or `file_key` (not both) from the file, or the environment
 * value when neither is set. Leaves `out` empty when there is none. */
static int load_secret(loader *l, const json_t *root, const char *key, const char *file_key,
                       const char *env_value, secret *out) {
  int rc = 0;
  const char *inline_value = get_string(l, root, key, &rc);
  const char *file = get_string(l, root, file_key, &rc);
  if (rc != 0) return rc;
  if (inline_value && file) return fail(l, "set either \"%s\" or \"%s\", not both", key, file_key);

  if (file) {
    if (read_file(l, file_key, file, out) != 0) return -1;
    strip_line_end(out);
    return 0;
  }
  if (inline_value) return copy_secret(l, inline_value, out);
  if (env_value && env_value[0]) return copy_secret(l, env_value, out);
  return 0;
}

static int parse_algorithm(loader *l, const json_t *root, int has_public_key, hark_jwt_alg *alg) {
  int rc = 0;
  const char *name = get_string(l, root, "algorithm", &rc);
  if (rc != 0) return rc;
  if (!name) {
    if (has_public_key)
      return fail(l, "\"algorithm\" is required with \"public_key_file\": \"RS256\" or \"ES256\"");
    *alg = HARK_JWT_HS256;
    return 0;
  }
  if (strcmp(name, "HS256") == 0) *alg = HARK_JWT_HS256;
  else if (strcmp(name, "RS256") == 0) *alg = HARK_JWT_RS256;
  else if (strcmp(name, "ES256") == 0) *alg = HARK_JWT_ES256;
  else return fail(l, "\"algorithm\" must be \"HS256\", \"RS256\" or \"ES256\"");
  return 0;
}

static int parse_leeway(loader *l, const json_t *root, int64_t *leeway) {
  json_t *value = json_object_get(root, "leeway_seconds");
  if (!value) return 0;
  if (!json_is_integer(value) || json_integer_value(value) < 0 || json_integer_value(value) > 3600)
    return fail(l, "\"leeway_seconds\" must be an integer from 0 to 3600");
  *leeway = json_integer_value(value);
  return 0;
}

/* Builds the token verifier from secret, secret_file, public_key_file or
 * HARK_JWT_SECRET, with algorithm, issuer, audience and leeway_seconds. */
static int load_verifier(loader *l, const json_t *root, const hark_config_env *env,
                         hark_security_config *out) {
  int rc = 0;
  const char *key_file = get_string(l, root, "public_key_file", &rc);
  const char *issuer = get_string(l, root, "issuer", &rc);
  const char *audience = get_string(l, root, "audience", &rc);
  if (rc != 0) return rc;
  int file_has_secret = json_object_get(root, "secret") || json_object_get(root, "secret_file");
  if (key_file && file_has_secret)
    return fail(l, "set either a secret or \"public_key_file\", not both");

  hark_jwt_config jwt;
  hark_jwt_config_init(&jwt);
  jwt.issuer = issuer;
  jwt.audience = audience;
  if (parse_algorithm(l, root, key_file != NULL, &jwt.alg) != 0 || parse_leeway(l, root, &jwt.leeway_s) != 0)
    return -1;

  /* The environment's secret is used only when the file names no key. */
  secret material = {0};
  if (key_file) rc = read_file(l, "public_key_file", key_file, &material);
  else rc = load_secret(l, root, "secret", "secret_file", env ? env->jwt_secret : NULL, &material);
  if (rc != 0) return -1;

  if (!material.data) {
    if (json_object_get(root, "algorithm") || issuer || audience || json_object_get(root, "leeway_seconds"))
      return fail(l, "token settings are given but no \"secret\", \"secret_file\" or \"public_key_file\"");
    return 0;
  }

  if (key_file) {
    jwt.public_key_pem = material.data;
    jwt.public_key_pem_len = material.len;
  } else {
    jwt.secret = (const unsigned char *)material.data;
    jwt.secret_len = material.len;
  }
  const char *reason = NULL;
  rc = hark_jwt_verifier_create(&out->verifier, &jwt, &reason);
  secret_free(&material);
  if (rc != 0) {
    const char *what = key_file ? "public_key_file" : "secret";
    return fail(l, "%s: %s", what, reason ? reason : hark_strerror(rc));
  }
  return 0;
}

static int load_api_key(loader *l, const json_t *root, const hark_config_env *env,
                        hark_security_config *out) {
  secret key = {0};
  if (load_secret(l, root, "api_key", "api_key_file", env ? env->api_key : NULL, &key) != 0) return -1;
  if (!key.data) return 0;

  /* The key travels in an Authorization header, so it must be a header token. */
  int printable = 1;
  for (size_t i = 0; i < key.len; i++)
    if (key.data[i] <= 0x20 || key.data[i] >= 0x7f) printable = 0;
  if (key.len < HARK_MIN_API_KEY_BYTES || !printable) {
    secret_free(&key);
    return fail(l, "the API key must be at least %d visible ASCII characters without spaces",
                HARK_MIN_API_KEY_BYTES);
  }

  out->api_key_dummy = calloc(1, key.len);
  if (!out->api_key_dummy) {
    secret_free(&key);
    return fail(l, "out of memory");
  }
  out->api_key = key.data;
  out->api_key_len = key.len;
  return 0;
}

static int load_origin_list(loader *l, const json_t *list, hark_origin_check *check) {
  size_t count = json_array_size(list);
  if (count == 0) return fail(l, "\"check_origin\" must not be an empty list; use false to allow every origin");
  check->allowed = calloc(count, sizeof *check->allowed);
  if (!check->allowed) return fail(l, "out of memory");
  check->mode = HARK_ORIGIN_LIST;

  for (size_t i = 0; i < count; i++) {
    json_t *entry = json_array_get(list, i);
    const char *reason = NULL;
    if (!json_is_string(entry))
      return fail(l, "check_origin[%zu] must be a string such as \"https://example.com\"", i);
    if (hark_origin_parse_entry(json_string_value(entry), &check->allowed[i], &reason) != 0)
      return fail(l, "check_origin[%zu] \"%s\": %s; write \"//host\" or \"scheme://host[:port]\"", i,
                  json_string_value(entry), reason);
    check->allowed_count++;
  }
  return 0;
}

/* check_origin: false, true or a list of origins. Without it, the check is
 * on (true) when tokens are configured, because a page of another site could
 * otherwise connect with the cookies or tokens of the browser's user. */
static int load_origin(loader *l, const json_t *root, hark_security_config *out) {
  json_t *value = json_object_get(root, "check_origin");
  if (!value) {
    out->origin.mode = out->verifier ? HARK_ORIGIN_HOST : HARK_ORIGIN_OFF;
    return 0;
  }
  if (json_is_boolean(value)) {
    out->origin.mode = json_is_true(value) ? HARK_ORIGIN_HOST : HARK_ORIGIN_OFF;
    return 0;
  }
  if (json_is_array(value)) return load_origin_list(l, value, &out->origin);
  return fail(l, "\"check_origin\" must be true, false or a list of origins");
}

static int parse_rule_access(loader *l, const json_t *topic, size_t index, const char *key,
                             int have_tokens, hark_access *out) {
  json_t *value = json_object_get(topic, key);
  if (!value) return 0;
  if (!json_is_string(value) || hark_access_parse(json_string_value(value), out) != 0)
    return fail(l, "topics[%zu].%s must be \"anyone\", \"authenticated\", \"claims\" or \"none\"",
                index, key);
  if ((*out == HARK_ACCESS_AUTHENTICATED || *out == HARK_ACCESS_CLAIMS) && !have_tokens)
    return fail(l, "topics[%zu].%s is \"%s\", but no \"secret\", \"secret_file\" or "
                "\"public_key_file\" is configured to verify tokens", index, key, hark_access_name(*out));
  return 0;
}

static int parse_rule_flag(loader *l, const json_t *topic, size_t index, const char *key, int *out) {
  json_t *value = json_object_get(topic, key);
  if (!value) return 0;
  if (!json_is_boolean(value)) return fail(l, "topics[%zu].%s must be true or false", index, key);
  *out = json_is_true(value);
  return 0;
}

static int parse_rule(loader *l, const json_t *topic, size_t index, int have_tokens,
                      hark_topic_rule *rule) {
  char where[48];
  snprintf(where, sizeof where, "topics[%zu]", index);
  if (!json_is_object(topic)) return fail(l, "%s must be an object", where);
  if (check_keys(l, topic, where, topic_keys, sizeof topic_keys / sizeof topic_keys[0]) != 0) return -1;

  json_t *pattern = json_object_get(topic, "pattern");
  if (!json_is_string(pattern) || json_string_length(pattern) == 0 ||
      strlen(json_string_value(pattern)) != json_string_length(pattern))
    return fail(l, "%s.pattern must be a non-empty glob pattern such as \"room:*\"", where);

  json_t *max_meta = json_object_get(topic, "max_meta_bytes");
  if (max_meta) {
    json_int_t bytes = json_is_integer(max_meta) ? json_integer_value(max_meta) : -1;
    if (bytes < 2 || bytes > 1048576)
      return fail(l, "%s.max_meta_bytes must be an integer from 2 to 1048576", where);
    rule->max_meta_bytes = (size_t)bytes;
  }

  if (parse_rule_access(l, topic, index, "join", have_tokens, &rule->join) != 0 ||
      parse_rule_access(l, topic, index, "publish", have_tokens, &rule->publish) != 0 ||
      parse_rule_flag(l, topic, index, "presence", &rule->presence) != 0 ||
      parse_rule_flag(l, topic, index, "client_meta", &rule->client_meta) != 0)
    return -1;

  rule->pattern = strdup(json_string_value(pattern));
  if (!rule->pattern) return fail(l, "out of memory");
  return 0;
}

static int load_topics(loader *l, const json_t *root, hark_security_config *out) {
  hark_topic_policy_init(&out->topics, out->verifier != NULL);
  json_t *topics = json_object_get(root, "topics");
  if (!topics) return 0;
  if (!json_is_array(topics)) return fail(l, "\"topics\" must be a list of objects");

  size_t count = json_array_size(topics);
  if (count == 0) return 0;
  out->topics.rules = calloc(count, sizeof *out->topics.rules);
  if (!out->topics.rules) return fail(l, "out of memory");

  for (size_t i = 0; i < count; i++) {
    hark_topic_rule *rule = &out->topics.rules[i];
    hark_topic_rule_defaults(rule);
    if (parse_rule(l, json_array_get(topics, i), i, out->verifier != NULL, rule) != 0) return -1;
    out->topics.rule_count++;
  }
  return 0;
}

static int load_host(loader *l, const json_t *root, hark_security_config *out) {
  int rc = 0;
  const char *host = get_string(l, root, "host", &rc);
  if (rc != 0 || !host) return rc;

  /* The host is compared with the host of an Origin header, so it has the
   * same form: a name or an address, without scheme or port. */
  hark_origin parsed;
  char origin[300];
  int n = snprintf(origin, sizeof origin, "http://%s", host);
  if (n < 0 || (size_t)n >= sizeof origin || hark_origin_parse(origin, (size_t)n, &parsed) != 0 ||
      parsed.port != 80 || strchr(host, ':'))
    return fail(l, "\"host\" must be a host name such as \"chat.example.com\", without scheme or port");
  out->host = strdup(parsed.host);
  return out->host ? 0 : fail(l, "out of memory");
}

static int load_root(loader *l, const json_t *root, const hark_config_env *env,
                     hark_security_config *out) {
  if (!json_is_object(root)) return fail(l, "the config must be a JSON object");
  if (check_keys(l, root, "", top_level_keys, sizeof top_level_keys / sizeof top_level_keys[0]) != 0)
    return -1;
  if (load_verifier(l, root, env, out) != 0) return -1;
  if (load_api_key(l, root, env, out) != 0) return -1;
  if (load_origin(l, root, out) != 0) return -1;
  if (load_topics(l, root, out) != 0) return -1;
  return load_host(l, root, out);
}

/* Parses the JSON text. jansson's message may quote the text near the
 * error, which could be part of a secret, so only its first part is kept. */
static json_t *parse_json(loader *l, const char *text, size_t len) {
  json_error_t json_error;
  json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &json_error);
  if (root) return root;
  char *near = strstr(json_error.text, " near ");
  if (near) *near = '\0';
  fail(l, "invalid JSON at line %d, column %d: %s", json_error.line, json_error.column, json_error.text);
  return NULL;
}

int hark_security_config_load_text(hark_security_config *out, const char *text, size_t len,
                                   const char *name, const char *base_dir,
                                   const hark_config_env *env, char *error, size_t error_cap) {
  loader l = {.name = name ? name : "config", .base_dir = base_dir, .error = error,
              .error_cap = error_cap};
  memset(out, 0, sizeof *out);
  if (error_cap > 0) error[0] = '\0';

  json_t *root = text ? parse_json(&l, text, len) : json_object();
  if (!root) return -1;
  int rc = load_root(&l, root, env, out);
  json_decref(root);
  if (rc != 0) hark_security_config_free(out);
  return rc;
}

int hark_security_config_load(hark_security_config *out, const char *path,
                              const hark_config_env *env, char *error, size_t error_cap) {
  if (!path) return hark_security_config_load_text(out, NULL, 0, NULL, NULL, env, error, error_cap);

  loader l = {.name = path, .error = error, .error_cap = error_cap};
  memset(out, 0, sizeof *out);
  secret text = {0};
  if (read_file(&l, "the config file", path, &text) != 0) return -1;

  char base_dir[4096];
  snprintf(base_dir, sizeof base_dir, "%s", path);
  char *slash = strrchr(base_dir, '/');
  if (slash == base_dir) slash[1] = '\0';
  else if (slash) *slash = '\0';

  /* The text may hold inline secrets, so it is wiped like one. */
  int rc = hark_security_config_load_text(out, text.data, text.len, path, slash ? base_dir : NULL,
                                          env, error, error_cap);
  secret_free(&text);
  return rc;
}

void hark_security_config_free(hark_security_config *config) {
  hark_jwt_verifier_free(config->verifier);
  if (config->api_key) OPENSSL_cleanse(config->api_key, config->api_key_len);
  free(config->api_key);
  free(config->api_key_dummy);
  hark_origin_check_free(&config->origin);
  hark_topic_policy_free(&config->topics);
  free(config->host);
  memset(config, 0, sizeof *config);
}

int hark_security_config_is_open(const hark_security_config *config) {
  return !config || (!config->verifier && !config->api_key);
}

int hark_api_key_matches(const hark_security_config *config, const char *candidate, size_t len) {
  if (!config || !config->api_key) return 0;
  int same_length = len == config->api_key_len;
  const char *compared = same_length ? candidate : config->api_key_dummy;
  int differs = CRYPTO_memcmp(compared, config->api_key, config->api_key_len);
  return same_length & (differs == 0);
}

int hark_address_is_loopback(const char *host) {
  unsigned char bytes[16];
  if (inet_pton(AF_INET, host, bytes) == 1) return bytes[0] == 127;
  if (inet_pton(AF_INET6, host, bytes) != 1) return 0;

  static const unsigned char loopback6[16] = {[15] = 1};
  static const unsigned char mapped_prefix[12] = {[10] = 0xff, [11] = 0xff};
  if (memcmp(bytes, loopback6, 16) == 0) return 1;
  return memcmp(bytes, mapped_prefix, 12) == 0 && bytes[12] == 127;
}
