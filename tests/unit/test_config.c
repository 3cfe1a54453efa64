#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "server/config.h"

#define SECRET "0123456789abcdef0123456789abcdef"
#define API_KEY "api-key-0123456789abcdef"

/* A temporary folder with the key files, made when the group starts, so no
 * key material lives in the repository. */
static char dir[64];

static void write_file(const char *name, const char *text) {
  char path[256];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *file = fopen(path, "w");
  assert_non_null(file);
  fputs(text, file);
  fclose(file);
}

/* Writes the public half of a new key as a SubjectPublicKeyInfo PEM. */
static void write_public_key(const char *name, EVP_PKEY *key) {
  char path[256];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *file = fopen(path, "w");
  assert_non_null(file);
  assert_int_equal(PEM_write_PUBKEY(file, key), 1);
  fclose(file);
  EVP_PKEY_free(key);
}

static int setup_files(void **state) {
  (void)state;
  snprintf(dir, sizeof dir, "/tmp/hark-test-config-XXXXXX");
  if (!mkdtemp(dir)) return -1;
  write_file("secret.txt", SECRET "\n");
  write_file("short.txt", "too short\n");
  write_file("api.key", API_KEY "\r\n");
  write_file("not-a-key.pem", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n");
  write_public_key("rsa.pem", EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048));
  write_public_key("ec.pem", EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256"));
  write_file("config.json", "{\"secret_file\": \"secret.txt\", \"api_key_file\": \"api.key\"}");
  write_file("bad.json", "{\"secret\": \"" SECRET "\",, }");
  return 0;
}

static int remove_files(void **state) {
  (void)state;
  static const char *const names[] = {"secret.txt", "short.txt", "api.key", "not-a-key.pem",
                                      "rsa.pem", "ec.pem", "config.json", "bad.json"};
  char path[256];
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    unlink(path);
  }
  rmdir(dir);
  return 0;
}

/* Loads `json` with files resolved in the temporary folder. */
static int load(hark_security_config *config, const char *json, const hark_config_env *env,
                char *error, size_t cap) {
  return hark_security_config_load_text(config, json, json ? strlen(json) : 0, "test.json", dir, env,
                                        error, cap);
}

static void config_empty_is_open(void **state) {
  (void)state;
  hark_security_config config;
  char error[256];
  assert_int_equal(load(&config, "{}", NULL, error, sizeof error), 0);
  assert_true(hark_security_config_is_open(&config));
  assert_null(config.verifier);
  assert_null(config.api_key);
  assert_int_equal(config.origin.mode, HARK_ORIGIN_OFF);
  assert_int_equal(config.topics.rule_count, 0);
  assert_int_equal(config.topics.fallback.join, HARK_ACCESS_ANYONE);
  hark_security_config_free(&config);

  assert_int_equal(load(&config, NULL, NULL, error, sizeof error), 0);
  assert_true(hark_security_config_is_open(&config));
  hark_security_config_free(&config);
}

static void config_secret_turns_auth_on(void **state) {
  (void)state;
  hark_security_config config;
  char error[256];
  assert_int_equal(load(&config, "{\"secret\":\"" SECRET "\"}", NULL, error, sizeof error), 0);
  assert_false(hark_security_config_is_open(&config));
  assert_non_null(config.verifier);
  assert_int_equal(config.origin.mode, HARK_ORIGIN_HOST);
  assert_int_equal(config.topics.fallback.join, HARK_ACCESS_CLAIMS);
  assert_int_equal(config.topics.fallback.publish, HARK_ACCESS_CLAIMS);
  hark_security_config_free(&config);
}

static void config_reads_files(void **state) {
  (void)state;
  hark_security_config config;
  char error[256];
  char path[256];
  snprintf(path, sizeof path, "%s/config.json", dir);
  assert_int_equal(hark_security_config_load(&config, path, NULL, error, sizeof error), 0);
  assert_non_null(config.verifier);
  assert_int_equal(config.api_key_len, strlen(API_KEY));
  assert_memory_equal(config.api_key, API_KEY, strlen(API_KEY));
  hark_security_config_free(&config);
}

static void config_reads_public_keys(void **state) {
  (void)state;
  hark_security_config config;
  char error[256];
  assert_int_equal(load(&config, "{\"algorithm\":\"RS256\",\"public_key_file\":\"rsa.pem\"}", NULL,
                        error, sizeof error), 0);
  assert_non_null(config.verifier);
  hark_security_config_free(&config);
  assert_int_equal(load(&config, "{\"algorithm\":\"ES256\",\"public_key_file\":\"ec.pem\",\"issuer\":\"i\","
                        "\"audience\":\"a\",\"leeway_seconds\":5}", NULL, error, sizeof error), 0);
  assert_non_null(config.verifier);
  hark_security_config_free(&config);
}

static void config_env_secrets(void **state) {
  (void)state;
  hark_security_config config;
  char error[256];
  hark_config_env env = {.jwt_secret = SECRET, .api_key = API_KEY};
  assert_int_equal(load(&config, NULL, &env, error, sizeof error), 0);
  assert_non_null(config.verifier);
  assert_true(hark_api_key_matches(&config, API_KEY, strlen(API_KEY)));
  hark_security_config_free(&config);

  /* A key named in the file wins over the environment. */
  assert_int_equal(load(&config, "{\"api_key\":\"file-key-0123456789\"}", &env, error, sizeof error), 0);
  assert_false(hark_api_key_matches(&config, API_KEY, strlen(API_KEY)));
  assert_true(hark_api_key_matches(&config, "file-key-0123456789", 19));
  hark_security_config_free(&config);

  hark_config_env empty = {.jwt_secret = "", .api_key = ""};
  assert_int_equal(load(&config, NULL, &empty, error, sizeof error), 0);
  assert_true(hark_security_config_is_open(&config));
  hark_security_config_free(&config);
}

static void config_origin_settings(void **state) {
  (void)state;
  hark_security_config config;
  char error[256];
  assert_int_equal(load(&config, "{\"secret\":\"" SECRET "\",\"check_origin\":false}", NULL, error,
                        sizeof error), 0);
  assert_int_equal(config.origin.mode, HARK_ORIGIN_OFF);
  hark_security_config_free(&config);

  assert_int_equal(load(&config, "{\"check_origin\":true,\"host\":\"Chat.Example.com\"}", NULL, error,
                        sizeof error), 0);
  assert_int_equal(config.origin.mode, HARK_ORIGIN_HOST);
  assert_string_equal(config.host, "chat.example.com");
  hark_security_config_free(&config);

  assert_int_equal(load(&config, "{\"check_origin\":[\"https://a.example\",\"//*.b.example\"]}", NULL,
                        error, sizeof error), 0);
  assert_int_equal(config.origin.mode, HARK_ORIGIN_LIST);
  assert_int_equal(config.origin.allowed_count, 2);
  assert_string_equal(config.origin.allowed[1].host, "b.example");
  assert_true(config.origin.allowed[1].any_subdomain);
  hark_security_config_free(&config);
}

static void config_topic_rules(void **state) {
  (void)state;
  hark_security_config config;
  char error[256];
  const char *json =
      "{\"secret\":\"" SECRET "\",\"topics\":["
      "{\"pattern\":\"room:*\",\"join\":\"authenticated\",\"publish\":\"claims\",\"presence\":true,"
      "\"client_meta\":false,\"max_meta_bytes\":100},"
      "{\"pattern\":\"public:*\",\"join\":\"anyone\",\"publish\":\"none\",\"presence\":false}]}";
  assert_int_equal(load(&config, json, NULL, error, sizeof error), 0);
  assert_int_equal(config.topics.rule_count, 2);
  const hark_topic_rule *room = &config.topics.rules[0];
  assert_string_equal(room->pattern, "room:*");
  assert_int_equal(room->join, HARK_ACCESS_AUTHENTICATED);
  assert_int_equal(room->publish, HARK_ACCESS_CLAIMS);
  assert_int_equal(room->presence, 1);
  assert_int_equal(room->client_meta, 0);
  assert_int_equal(room->max_meta_bytes, 100);
  const hark_topic_rule *pub = &config.topics.rules[1];
  assert_int_equal(pub->join, HARK_ACCESS_ANYONE);
  assert_int_equal(pub->publish, HARK_ACCESS_NONE);
  assert_int_equal(pub->presence, 0);
  assert_int_equal(pub->client_meta, 1);
  assert_int_equal(pub->max_meta_bytes, HARK_DEFAULT_MAX_META_BYTES);
  assert_null(hark_topic_policy_find(&config.topics, "user:1", 6));
  hark_security_config_free(&config);
}

/* Each invalid config and a part of the message it must give. */
static const struct {
  const char *json;
  const char *message;
} invalid_configs[] = {
    {"{", "invalid JSON at line"},
    {"[]", "must be a JSON object"},
    {"{\"a\":1,\"a\":2}", "invalid JSON"},
    {"{\"secrett\":\"x\"}", "unknown key \"secrett\""},
    {"{\"secret\":5}", "\"secret\" must be a non-empty string"},
    {"{\"secret\":\"\"}", "\"secret\" must be a non-empty string"},
    {"{\"secret\":\"short\"}", "secret:"},
    {"{\"secret\":\"" SECRET "\",\"secret_file\":\"secret.txt\"}", "either \"secret\" or \"secret_file\""},
    {"{\"secret\":\"" SECRET "\",\"public_key_file\":\"rsa.pem\",\"algorithm\":\"RS256\"}", "not both"},
    {"{\"secret_file\":\"missing.txt\"}", "cannot read secret_file"},
    {"{\"secret_file\":\"short.txt\"}", "secret:"},
    {"{\"secret\":\"" SECRET "\",\"algorithm\":\"none\"}", "\"algorithm\" must be"},
    {"{\"secret\":\"" SECRET "\",\"algorithm\":\"RS256\"}", "secret:"},
    {"{\"public_key_file\":\"rsa.pem\"}", "\"algorithm\" is required"},
    {"{\"public_key_file\":\"rsa.pem\",\"algorithm\":\"ES256\"}", "public_key_file:"},
    {"{\"public_key_file\":\"ec.pem\",\"algorithm\":\"HS256\"}", "public_key_file:"},
    {"{\"public_key_file\":\"not-a-key.pem\",\"algorithm\":\"RS256\"}", "public_key_file:"},
    {"{\"public_key_file\":\"missing.pem\",\"algorithm\":\"RS256\"}", "cannot read public_key_file"},
    {"{\"issuer\":\"me\"}", "no \"secret\""},
    {"{\"secret\":\"" SECRET "\",\"leeway_seconds\":-1}", "leeway_seconds"},
    {"{\"secret\":\"" SECRET "\",\"leeway_seconds\":\"5\"}", "leeway_seconds"},
    {"{\"api_key\":\"short\"}", "at least 16"},
    {"{\"api_key\":\"has a space in it 0123\"}", "at least 16"},
    {"{\"api_key\":\"" API_KEY "\",\"api_key_file\":\"api.key\"}", "not both"},
    {"{\"api_key_file\":\"missing.key\"}", "cannot read api_key_file"},
    {"{\"check_origin\":\"yes\"}", "\"check_origin\" must be"},
    {"{\"check_origin\":[]}", "must not be an empty list"},
    {"{\"check_origin\":[5]}", "check_origin[0] must be a string"},
    {"{\"check_origin\":[\"//ok.example\",\"example.com\"]}", "check_origin[1] \"example.com\""},
    {"{\"check_origin\":[\"https://\"]}", "check_origin[0]"},
    {"{\"host\":\"https://example.com\"}", "\"host\" must be a host name"},
    {"{\"host\":\"example.com:4000\"}", "\"host\" must be a host name"},
    {"{\"topics\":{}}", "\"topics\" must be a list"},
    {"{\"topics\":[5]}", "topics[0] must be an object"},
    {"{\"topics\":[{\"join\":\"anyone\"}]}", "topics[0].pattern"},
    {"{\"topics\":[{\"pattern\":\"\"}]}", "topics[0].pattern"},
    {"{\"topics\":[{\"pattern\":\"a\\u0000b\"}]}", "invalid JSON"},
    {"{\"topics\":[{\"pattern\":\"*\",\"jion\":\"anyone\"}]}", "unknown key \"jion\" in topics[0]"},
    {"{\"topics\":[{\"pattern\":\"*\"},{\"pattern\":\"*\",\"join\":\"everyone\"}]}", "topics[1].join must be"},
    {"{\"topics\":[{\"pattern\":\"*\",\"publish\":1}]}", "topics[0].publish must be"},
    {"{\"topics\":[{\"pattern\":\"*\",\"join\":\"claims\"}]}", "topics[0].join is \"claims\", but no"},
    {"{\"topics\":[{\"pattern\":\"*\",\"publish\":\"authenticated\"}]}", "topics[0].publish is \"authenticated\""},
    {"{\"topics\":[{\"pattern\":\"*\",\"presence\":\"yes\"}]}", "topics[0].presence must be true or false"},
    {"{\"topics\":[{\"pattern\":\"*\",\"client_meta\":0}]}", "topics[0].client_meta must be true or false"},
    {"{\"topics\":[{\"pattern\":\"*\",\"max_meta_bytes\":1}]}", "topics[0].max_meta_bytes"},
    {"{\"topics\":[{\"pattern\":\"*\",\"max_meta_bytes\":2000000}]}", "topics[0].max_meta_bytes"},
    {"{\"topics\":[{\"pattern\":\"*\",\"max_meta_bytes\":1.5}]}", "topics[0].max_meta_bytes"},
};

static void config_rejects_invalid(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof invalid_configs / sizeof invalid_configs[0]; i++) {
    hark_security_config config;
    char error[512];
    if (load(&config, invalid_configs[i].json, NULL, error, sizeof error) == 0)
      fail_msg("accepted %s", invalid_configs[i].json);
    if (!strstr(error, invalid_configs[i].message))
      fail_msg("config %s: message \"%s\" lacks \"%s\"", invalid_configs[i].json, error,
               invalid_configs[i].message);
    if (strncmp(error, "test.json: ", 11) != 0) fail_msg("message \"%s\" does not name the file", error);
    assert_null(config.verifier);
    assert_null(config.api_key);
  }
}

static void config_errors_hide_secrets(void **state) {
  (void)state;
  hark_security_config config;
  char error[512];
  assert_int_equal(load(&config, "{\"secret\":\"" SECRET "\" \"x\"}", NULL, error, sizeof error), -1);
  assert_null(strstr(error, SECRET));
  assert_int_equal(load(&config, "{\"api_key\":\"a-secret-but-bad key\"}", NULL, error, sizeof error), -1);
  assert_null(strstr(error, "a-secret"));
}

static void config_missing_file(void **state) {
  (void)state;
  hark_security_config config;
  char error[512];
  char path[256];
  snprintf(path, sizeof path, "%s/none.json", dir);
  assert_int_equal(hark_security_config_load(&config, path, NULL, error, sizeof error), -1);
  assert_non_null(strstr(error, "none.json"));
  assert_non_null(strstr(error, "No such file"));

  snprintf(path, sizeof path, "%s/bad.json", dir);
  assert_int_equal(hark_security_config_load(&config, path, NULL, error, sizeof error), -1);
  assert_non_null(strstr(error, "bad.json: invalid JSON at line 1"));
  assert_null(strstr(error, SECRET));
}

static void api_key_compare(void **state) {
  (void)state;
  hark_security_config config;
  char error[256];
  assert_int_equal(load(&config, "{\"api_key\":\"" API_KEY "\"}", NULL, error, sizeof error), 0);
  assert_true(hark_api_key_matches(&config, API_KEY, strlen(API_KEY)));
  assert_false(hark_api_key_matches(&config, API_KEY, strlen(API_KEY) - 1));
  assert_false(hark_api_key_matches(&config, API_KEY "x", strlen(API_KEY) + 1));
  assert_false(hark_api_key_matches(&config, "", 0));
  char wrong[] = API_KEY;
  wrong[sizeof wrong - 2] ^= 1;
  assert_false(hark_api_key_matches(&config, wrong, strlen(wrong)));
  hark_security_config_free(&config);

  assert_int_equal(load(&config, "{}", NULL, error, sizeof error), 0);
  assert_false(hark_api_key_matches(&config, API_KEY, strlen(API_KEY)));
  hark_security_config_free(&config);
}

static void loopback_addresses(void **state) {
  (void)state;
  assert_true(hark_address_is_loopback("127.0.0.1"));
  assert_true(hark_address_is_loopback("127.1.2.3"));
  assert_true(hark_address_is_loopback("::1"));
  assert_true(hark_address_is_loopback("::ffff:127.0.0.1"));
  assert_false(hark_address_is_loopback("0.0.0.0"));
  assert_false(hark_address_is_loopback("::"));
  assert_false(hark_address_is_loopback("10.0.0.1"));
  assert_false(hark_address_is_loopback("128.0.0.1"));
  assert_false(hark_address_is_loopback("::ffff:10.0.0.1"));
  assert_false(hark_address_is_loopback("localhost"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(config_empty_is_open),
      cmocka_unit_test(config_secret_turns_auth_on),
      cmocka_unit_test(config_reads_files),
      cmocka_unit_test(config_reads_public_keys),
      cmocka_unit_test(config_env_secrets),
      cmocka_unit_test(config_origin_settings),
      cmocka_unit_test(config_topic_rules),
      cmocka_unit_test(config_rejects_invalid),
      cmocka_unit_test(config_errors_hide_secrets),
      cmocka_unit_test(config_missing_file),
      cmocka_unit_test(api_key_compare),
      cmocka_unit_test(loopback_addresses),
  };
  return cmocka_run_group_tests(tests, setup_files, remove_files);
}
