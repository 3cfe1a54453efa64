/* libFuzzer target for the JWT verifier (src/server/jwt.c).
 *
 * Each input is used twice:
 *  1. as a raw token, verified by an HS256, an RS256 and an ES256 verifier
 *     through every entry point, with the claims accessors run on success;
 *  2. when it contains a newline, as "header JSON \n payload JSON", which
 *     this target encodes and signs with the HS256 secret. A fuzzer cannot
 *     forge signatures, so this is how mutated JSON reaches the header and
 *     claims checks behind the signature.
 *
 * Seed inputs are in fuzz/corpus/jwt. The valid RS256 and ES256 seeds were
 * signed with throwaway private keys that were deleted afterwards; only the
 * public halves below remain. Sanitizers report crashes and leaks. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "server/jwt.h"

/* 2023-11-14, between the nbf and exp of the valid seeds. */
#define FUZZ_NOW 1700000000

static const unsigned char FUZZ_SECRET[] = "hark-fuzz-secret-not-for-production-use";

static const char FUZZ_RSA_PUBLIC_PEM[] =
    "-----BEGIN PUBLIC KEY-----\n"
    "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA01O8Y6nk5VBQ+0Ex+TXH\n"
    "wr01Zrbmm4oYHQjtNrwv5lAv95AqtnJGqZubGyrKHp19Dy2slbRYMCbGpM92d0I/\n"
    "6TOQstilJAKAUbeGjZXEemqzr++SXUqDr78aBPq3OpdINjCiTaif9xx5HgsDO824\n"
    "sWG64KGyFoPXcfkNNVKMaoNlefbIdWUwphJQwsIzN0F8L9pgz2GN3zHMObudQdpY\n"
    "is2D9V+2oOyYC3x31fWc/iJ3H0XW1laqiEnCcQqd79WywNp4jVgQVbONKUDnEnra\n"
    "E8P2kQDnfY5OTIQxGgT6L/COARfdUcwVrQlWnSXrbUXlyBunDPjWW+kZkiJWe3lF\n"
    "MQIDAQAB\n"
    "-----END PUBLIC KEY-----\n";

static const char FUZZ_EC_PUBLIC_PEM[] =
    "-----BEGIN PUBLIC KEY-----\n"
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEutubfeT+ewO+gKbdPWGpS5P4OPDW\n"
    "Sw8OoCpZJt1fF98vonJ49O/BFDS85NkyV3lxKLF5RXrGcSUO5OZmn9jw8Q==\n"
    "-----END PUBLIC KEY-----\n";

/* Created once and kept for the whole run; libFuzzer has no teardown hook,
 * and LeakSanitizer does not report memory that globals still reach. */
static hark_jwt_verifier *verifiers[4];
static size_t verifier_count;

static void add_verifier(hark_jwt_config *config) {
  const char *error = NULL;
  if (hark_jwt_verifier_create(&verifiers[verifier_count], config, &error) != 0) {
    abort(); /* the fuzz setup is wrong, not the input */
  }
  verifier_count++;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  hark_jwt_config config;

  hark_jwt_config_init(&config);
  config.alg = HARK_JWT_HS256;
  config.secret = FUZZ_SECRET;
  config.secret_len = sizeof FUZZ_SECRET - 1;
  add_verifier(&config);

  config.issuer = "fuzz";
  config.audience = "hark";
  add_verifier(&config);

  hark_jwt_config_init(&config);
  config.alg = HARK_JWT_RS256;
  config.public_key_pem = FUZZ_RSA_PUBLIC_PEM;
  config.public_key_pem_len = sizeof FUZZ_RSA_PUBLIC_PEM - 1;
  add_verifier(&config);

  config.alg = HARK_JWT_ES256;
  config.public_key_pem = FUZZ_EC_PUBLIC_PEM;
  config.public_key_pem_len = sizeof FUZZ_EC_PUBLIC_PEM - 1;
  add_verifier(&config);
  return 0;
}

/* Runs every accessor on verified claims, then drops the reference. */
static void use_claims(json_t *claims) {
  static const char topic[] = "room:1";
  const char *sub = hark_jwt_claims_sub(claims);
  const char *channel = hark_jwt_claims_channel(claims);
  json_t *presence = hark_jwt_claims_presence(claims);

  if (sub != NULL && strlen(sub) > HARK_JWT_MAX_TOKEN_BYTES) abort();
  if (channel != NULL && strlen(channel) > HARK_JWT_MAX_TOKEN_BYTES) abort();
  if (presence != NULL && !json_is_object(presence)) abort();
  hark_jwt_globs_match(hark_jwt_claims_join(claims), topic, sizeof topic - 1);
  hark_jwt_globs_match(hark_jwt_claims_publish(claims), topic, sizeof topic - 1);
  json_decref(claims);
}

static void verify_all(const hark_jwt_verifier *verifier, const char *token, size_t len) {
  static const char topic[] = "room:1";
  json_t *claims = NULL;
  const char *error = NULL;

  if (hark_jwt_verify(verifier, token, len, FUZZ_NOW, &claims, &error) == 0) use_claims(claims);
  else if (claims != NULL || error == NULL) abort();

  if (hark_jwt_verify_connection(verifier, token, len, FUZZ_NOW, &claims, &error) == 0) {
    use_claims(claims);
  }

  if (hark_jwt_verify_channel(verifier, token, len, FUZZ_NOW, topic, sizeof topic - 1, "u-1",
                              &claims, &error) == 0) {
    use_claims(claims);
  }
}

/* Appends the unpadded base64url encoding of data at out + *len. */
static void append_base64url(char *out, size_t *len, const uint8_t *data, size_t data_len) {
  unsigned char *encoded = (unsigned char *)out + *len;
  int n = EVP_EncodeBlock(encoded, data, (int)data_len);

  for (int i = 0; i < n; i++) {
    if (encoded[i] == '+') encoded[i] = '-';
    if (encoded[i] == '/') encoded[i] = '_';
  }
  while (n > 0 && encoded[n - 1] == '=') n--;
  *len += (size_t)n;
}

/* Builds b64(header).b64(payload).b64(HMAC) from "header\npayload" and
 * verifies it with the HS256 verifiers. */
static void verify_signed_by_target(const uint8_t *data, size_t size) {
  const uint8_t *newline = memchr(data, '\n', size);
  if (newline == NULL) return;

  /* Base64 needs 4 characters per 3 bytes, plus the dots, the signature and
   * EVP_EncodeBlock's NUL. */
  char *token = malloc(size / 3 * 4 + 128);
  if (token == NULL) return;

  size_t len = 0;
  size_t header_len = (size_t)(newline - data);
  append_base64url(token, &len, data, header_len);
  token[len++] = '.';
  append_base64url(token, &len, newline + 1, size - header_len - 1);

  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_len = 0;
  if (HMAC(EVP_sha256(), FUZZ_SECRET, (int)(sizeof FUZZ_SECRET - 1), (const unsigned char *)token,
           len, mac, &mac_len) != NULL) {
    token[len++] = '.';
    append_base64url(token, &len, mac, mac_len);
    verify_all(verifiers[0], token, len);
    verify_all(verifiers[1], token, len);
  }
  free(token);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* Inputs far above the token limit only test the length check. */
  if (size > 2 * HARK_JWT_MAX_TOKEN_BYTES) return 0;

  for (size_t i = 0; i < verifier_count; i++) verify_all(verifiers[i], (const char *)data, size);
  verify_signed_by_target(data, size);
  return 0;
}
