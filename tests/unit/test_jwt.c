#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "base/json.h"
#include "server/jwt.h"

/* Keys are generated when the group starts, so no key material lives in the
 * repository. Tokens are signed by the small signer below. */

#define NOW 1700000000
#define HS_HEADER "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"
#define RS_HEADER "{\"alg\":\"RS256\",\"typ\":\"JWT\"}"
#define ES_HEADER "{\"alg\":\"ES256\",\"typ\":\"JWT\"}"

static const unsigned char SECRET[] = "0123456789abcdef0123456789abcdef-test-secret";
static const unsigned char OTHER_SECRET[] = "fedcba9876543210fedcba9876543210-other-secret";

typedef struct test_keys {
  EVP_PKEY *rsa;
  EVP_PKEY *rsa_other;
  EVP_PKEY *ec;
  EVP_PKEY *ec_other;
  char *rsa_pem;
  char *rsa_1024_pem;
  char *ec_pem;
  char *ec_p384_pem;
  char *rsa_private_pem;
} test_keys;

static test_keys keys;

/* How a test token is signed. The alg in the header is chosen separately,
 * so tests can sign with one algorithm and claim another. */
typedef struct signer {
  hark_jwt_alg alg;
  const unsigned char *secret;
  size_t secret_len;
  EVP_PKEY *key;
} signer;

/* ---- Encoding and signing ---- */

/* Appends the unpadded base64url encoding of data to out (NUL-terminated). */
static void append_base64url(char *out, const void *data, size_t len) {
  size_t start = strlen(out);
  unsigned char *encoded = (unsigned char *)out + start;
  int n = EVP_EncodeBlock(encoded, data, (int)len);
  assert_true(n >= 0);

  for (int i = 0; i < n; i++) {
    if (encoded[i] == '+') encoded[i] = '-';
    if (encoded[i] == '/') encoded[i] = '_';
  }
  while (n > 0 && encoded[n - 1] == '=') n--;
  encoded[n] = '\0';
}

/* Decodes unpadded base64url (test data only, so no strict checks). */
static size_t decode_base64url(const char *text, unsigned char *out) {
  size_t len = strlen(text);
  char *padded = calloc(len + 4, 1);
  assert_non_null(padded);
  for (size_t i = 0; i < len; i++) {
    padded[i] = text[i];
    if (text[i] == '-') padded[i] = '+';
    if (text[i] == '_') padded[i] = '/';
  }
  size_t pad = (4 - len % 4) % 4;
  memset(padded + len, '=', pad);

  int n = EVP_DecodeBlock(out, (unsigned char *)padded, (int)(len + pad));
  assert_true(n >= 0);
  free(padded);
  return (size_t)n - pad;
}

static size_t sign_hmac(const signer *s, const char *input, unsigned char *out) {
  unsigned int len = 0;
  assert_non_null(HMAC(EVP_sha256(), s->secret, (int)s->secret_len, (const unsigned char *)input,
                       strlen(input), out, &len));
  return len;
}

static size_t sign_digest(EVP_PKEY *key, const char *input, unsigned char *out, size_t cap) {
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  assert_non_null(ctx);
  assert_int_equal(EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key), 1);

  size_t len = cap;
  assert_int_equal(EVP_DigestSign(ctx, out, &len, (const unsigned char *)input, strlen(input)), 1);
  EVP_MD_CTX_free(ctx);
  return len;
}

/* ES256 in JWS: the DER signature from OpenSSL becomes r || s, 32 bytes each. */
static size_t sign_es256(EVP_PKEY *key, const char *input, unsigned char *out) {
  unsigned char der[128];
  size_t der_len = sign_digest(key, input, der, sizeof der);

  const unsigned char *cursor = der;
  ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &cursor, (long)der_len);
  assert_non_null(sig);
  assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_r(sig), out, 32), 32);
  assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_s(sig), out + 32, 32), 32);
  ECDSA_SIG_free(sig);
  return 64;
}

/* Returns "b64(header).b64(payload)" in a buffer with room for a signature
 * (caller frees). */
static char *signing_input(const char *header_json, const char *payload_json) {
  size_t cap = (strlen(header_json) + strlen(payload_json)) * 2 + 1024;
  char *out = calloc(cap, 1);
  assert_non_null(out);
  append_base64url(out, header_json, strlen(header_json));
  strcat(out, ".");
  append_base64url(out, payload_json, strlen(payload_json));
  return out;
}

/* Returns a signed compact token (caller frees). */
static char *sign_token(const signer *s, const char *header_json, const char *payload_json) {
  char *token = signing_input(header_json, payload_json);
  unsigned char signature[1024];
  size_t len = 0;

  if (s->alg == HARK_JWT_HS256) len = sign_hmac(s, token, signature);
  if (s->alg == HARK_JWT_RS256) len = sign_digest(s->key, token, signature, sizeof signature);
  if (s->alg == HARK_JWT_ES256) len = sign_es256(s->key, token, signature);

  strcat(token, ".");
  append_base64url(token, signature, len);
  return token;
}

/* Returns header.payload. with an explicit signature (caller frees). */
static char *token_with_signature(const char *header_json, const char *payload_json,
                                  const unsigned char *signature, size_t len) {
  char *token = signing_input(header_json, payload_json);
  strcat(token, ".");
  append_base64url(token, signature, len);
  return token;
}

static const signer HS = {HARK_JWT_HS256, SECRET, sizeof SECRET - 1, NULL};

static char *hs_token(const char *payload_json) { return sign_token(&HS, HS_HEADER, payload_json); }

static char *rs_token(const char *payload_json) {
  signer s = {HARK_JWT_RS256, NULL, 0, keys.rsa};
  return sign_token(&s, RS_HEADER, payload_json);
}

static char *es_token(const char *payload_json) {
  signer s = {HARK_JWT_ES256, NULL, 0, keys.ec};
  return sign_token(&s, ES_HEADER, payload_json);
}

/* ---- Key generation ---- */

static char *public_pem(EVP_PKEY *key) {
  BIO *bio = BIO_new(BIO_s_mem());
  assert_non_null(bio);
  assert_int_equal(PEM_write_bio_PUBKEY(bio, key), 1);

  char *data = NULL;
  long len = BIO_get_mem_data(bio, &data);
  char *pem = strndup(data, (size_t)len);
  BIO_free(bio);
  return pem;
}

static char *private_pem(EVP_PKEY *key) {
  BIO *bio = BIO_new(BIO_s_mem());
  assert_non_null(bio);
  assert_int_equal(PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL), 1);

  char *data = NULL;
  long len = BIO_get_mem_data(bio, &data);
  char *pem = strndup(data, (size_t)len);
  BIO_free(bio);
  return pem;
}

static int generate_keys(void **state) {
  (void)state;
  keys.rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
  keys.rsa_other = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
  keys.ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  keys.ec_other = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  EVP_PKEY *rsa_1024 = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
  EVP_PKEY *ec_p384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
  if (!keys.rsa || !keys.rsa_other || !keys.ec || !keys.ec_other || !rsa_1024 || !ec_p384) {
    return -1;
  }

  keys.rsa_pem = public_pem(keys.rsa);
  keys.rsa_1024_pem = public_pem(rsa_1024);
  keys.ec_pem = public_pem(keys.ec);
  keys.ec_p384_pem = public_pem(ec_p384);
  keys.rsa_private_pem = private_pem(keys.rsa);
  EVP_PKEY_free(rsa_1024);
  EVP_PKEY_free(ec_p384);
  return 0;
}

static int free_keys(void **state) {
  (void)state;
  EVP_PKEY_free(keys.rsa);
  EVP_PKEY_free(keys.rsa_other);
  EVP_PKEY_free(keys.ec);
  EVP_PKEY_free(keys.ec_other);
  free(keys.rsa_pem);
  free(keys.rsa_1024_pem);
  free(keys.ec_pem);
  free(keys.ec_p384_pem);
  free(keys.rsa_private_pem);
  return 0;
}

/* ---- Verifier helpers ---- */

static hark_jwt_verifier *create_or_fail(const hark_jwt_config *config) {
  hark_jwt_verifier *verifier = NULL;
  const char *error = NULL;
  int rc = hark_jwt_verifier_create(&verifier, config, &error);
  if (rc != 0) fail_msg("verifier create failed: %s", error);
  return verifier;
}

static hark_jwt_verifier *hs_verifier(void) {
  hark_jwt_config config;
  hark_jwt_config_init(&config);
  config.alg = HARK_JWT_HS256;
  config.secret = SECRET;
  config.secret_len = sizeof SECRET - 1;
  return create_or_fail(&config);
}

static hark_jwt_verifier *pem_verifier(hark_jwt_alg alg, const char *pem) {
  hark_jwt_config config;
  hark_jwt_config_init(&config);
  config.alg = alg;
  config.public_key_pem = pem;
  config.public_key_pem_len = strlen(pem);
  return create_or_fail(&config);
}

/* Verifies at NOW and returns the code. Checks that a failure leaves no
 * claims and has a reason, and that success returns claims. */
static int verify_at(const hark_jwt_verifier *verifier, const char *token, int64_t now) {
  json_t *claims = (json_t *)&claims; /* not NULL, so a missing reset shows */
  const char *error = NULL;
  int rc = hark_jwt_verify(verifier, token, strlen(token), now, &claims, &error);

  if (rc == 0) {
    assert_non_null(claims);
    json_decref(claims);
  } else {
    assert_null(claims);
    assert_non_null(error);
  }
  return rc;
}

static int verify(const hark_jwt_verifier *verifier, const char *token) {
  return verify_at(verifier, token, NOW);
}

/* Verifies and frees `token`, so a test can pass a fresh token inline. */
static int verify_owned(const hark_jwt_verifier *verifier, char *token) {
  int rc = verify(verifier, token);
  free(token);
  return rc;
}

/* Returns the reason of a verification at `now` that must fail. */
static const char *reason_at(const hark_jwt_verifier *verifier, const char *token, int64_t now) {
  json_t *claims = NULL;
  const char *error = NULL;
  int rc = hark_jwt_verify(verifier, token, strlen(token), now, &claims, &error);
  assert_int_not_equal(rc, 0);
  return error;
}

static const char *reason_for(const hark_jwt_verifier *verifier, const char *token) {
  return reason_at(verifier, token, NOW);
}

/* ---- Valid tokens ---- */

static void hs256_valid_token(void **state) {
  (void)state;
  hark_jwt_verifier *verifier = hs_verifier();
  char *token = hs_token("{\"sub\":\"user-1\",\"exp\":1700000100}");

  json_t *claims = NULL;
  const char *error = NULL;
  assert_int_equal(hark_jwt_verify(verifier, token, strlen(token), NOW, &claims, &error), 0);
  assert_string_equal(hark_jwt_claims_sub(claims), "user-1");

  json_decref(claims);
  free(token);
  hark_jwt_verifier_free(verifier);
}

static void rs256_valid_token(void **state) {
  (void)state;
  hark_jwt_verifier *verifier = pem_verifier(HARK_JWT_RS256, keys.rsa_pem);
  char *token = rs_token("{\"sub\":\"user-2\"}");

  json_t *claims = NULL;
  assert_int_equal(hark_jwt_verify(verifier, token, strlen(token), NOW, &claims, NULL), 0);
  assert_string_equal(hark_jwt_claims_sub(claims), "user-2");

  json_decref(claims);
  free(token);
  hark_jwt_verifier_free(verifier);
}

static void es256_valid_token(void **state) {
  (void)state;
  hark_jwt_verifier *verifier = pem_verifier(HARK_JWT_ES256, keys.ec_pem);

  /* ECDSA signatures are randomized, and r or s has a leading zero byte in
   * about 1 of 128 signatures, so several are checked. */
  for (int i = 0; i < 20; i++) {
    char *token = es_token("{\"sub\":\"user-3\"}");
    json_t *claims = NULL;
    assert_int_equal(hark_jwt_verify(verifier, token, strlen(token), NOW, &claims, NULL), 0);
    assert_string_equal(hark_jwt_claims_sub(claims), "user-3");
    json_decref(claims);
    free(token);
  }

  hark_jwt_verifier_free(verifier);
}

/* RFC 7515 appendix A.1: the HS256 example JWS and its 64-byte key. */
static void rfc7515_hs256_known_answer(void **state) {
  (void)state;
  static const char key_text[] =
      "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";
  static const char token[] =
      "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9"
      ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFt"
      "cGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
      ".dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
  unsigned char key[128];
  size_t key_len = decode_base64url(key_text, key);
  assert_int_equal(key_len, 64);

  hark_jwt_config config;
  hark_jwt_config_init(&config);
  config.alg = HARK_JWT_HS256;
  config.secret = key;
  config.secret_len = key_len;
  config.issuer = "joe";
  hark_jwt_verifier *verifier = create_or_fail(&config);

  /* The example's exp is 1300819380 (2011-03-22). */
  json_t *claims = NULL;
  assert_int_equal(hark_jwt_verify(verifier, token, strlen(token), 1300819000, &claims, NULL), 0);
  assert_true(json_is_true(json_object_get(claims, "http://example.com/is_root")));
  json_decref(claims);
  assert_int_equal(verify_at(verifier, token, 1300819380 + 30), HARK_JWT_EEXPIRED);

  /* One changed signature character must fail. */
  char tampered[sizeof token];
  memcpy(tampered, token, sizeof token);
  tampered[sizeof token - 3] = tampered[sizeof token - 3] == 'j' ? 'k' : 'j';
  assert_int_equal(verify_at(verifier, tampered, 1300819000), HARK_JWT_ESIGNATURE);

  hark_jwt_verifier_free(verifier);
}

/* ---- Token syntax ---- */

static void token_needs_three_segments(void **state) {
  (void)state;
  hark_jwt_verifier *verifier = hs_verifier();
  char *good = hs_token("{}");
  char buffer[2048];

  assert_int_equal(verify(verifier, ""), HARK_JWT_EMALFORMED);
  assert_int_equal(verify(verifier, "abc"), HARK_JWT_EMALFORMED);
  assert_int_equal(verify(verifier, "abc.def"), HARK_JWT_EMALFORMED);
  assert_int_equal(verify(verifier, ".."), HARK_JWT_EMALFORMED);

  snprintf(buffer, sizeof buffer, "%s.", good);
  assert_int_equal(verify(verifier, buffer), HARK_JWT_EMALFORMED);
  snprintf(buffer, sizeof buffer, "%s.abcd", good);
  assert_int_equal(verify(verifier, buffer), HARK_JWT_EMALFORMED);

  assert_int_equal(verify(verifier, good), 0);
  free(good);
  hark_jwt_verifier_free(verifier);
}

static void padding_is_rejected(void **state) {
  (void)state;
  hark_jwt_verifier *verifier = hs_verifier();
  /* A 32-byte HMAC encodes to 43 characters, so padded base64 adds one '='. */
  char *good = hs_token("{\"sub\":\"a\"}");
  char buffer[2048];

  snprintf(buffer, sizeof buffer, "%s=", good);
  assert_int_equal(verify(verifier, buffer), HARK_JWT_EMALFORMED);

  /* The payload {"sub":"a"} is 11 bytes: 15 characters, and padded base64
   * adds one '=' to make 16. */
  const char *second_dot = strrchr(good, '.');
  snprintf(buffer, sizeof buffer, "%.*s=%s", (int)(second_dot - good), good, second_dot);
  assert_int_equal(verify(verifier, buffer), HARK_JWT_EMALFORMED);

  free(good);
  hark_jwt_verifier_free(verifier);
}

static void non_base64url_characters_rejected(void **state) {
  (void)state;
  hark_jwt_verifier *verifier = hs_verifier();
  char *good = hs_token("{\"sub\":\"a\"}");
  const char bad_chars[] = {'+', '/', ' ', '\n', '"', '\x80', '\0'};

  for (size_t i = 0; i < sizeof bad_chars; i++) {
    char *token = strdup(good);
    token[3] = bad_chars[i];
    json_t *claims = NULL;
    assert_int_equal(hark_jwt_verify(verifier, token, strlen(good), NOW, &claims, NULL),
                     HARK_JWT_EMALFORMED);
    assert_null(claims);
    free(token);
  }

  free(good);
  hark_jwt_verifier_free(verifier);
}

/* The last character of a 43-character segment carries 4 bits of data and 2
 * unused bits. Setting an unused bit decodes to the same bytes, but such a
 * text is not the canonical encoding and must be rejected. */
static void noncanonical_trailing_bits_rejected(void **state) {
  (void)state;
  static const char alphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  hark_jwt_verifier *verifier = hs_verifier();
  char *token = hs_token("{\"sub\":\"a\"}");
  size_t last = strlen(token) - 1;

  const char *position = strchr(alphabet, token[last]);
  assert_non_null(position);
  int value = (int)(position - alphabet);
  assert_int_equal(value & 3, 0);
  token[last] = alphabet[value | 1];

  assert_int_equal(verify(verifier, token), HARK_JWT_EMALFORMED);
  free(token);
  hark_jwt_verifier_free(verifier);
}

static void segment_length_one_mod_four_rejected(void **state) {
  (void)state;
  hark_jwt_verifier *verifier = hs_verifier();
  char *good = hs_token("{\"sub\":\"a\"}");
  char buffer[2048];

  snprintf(buffer, sizeof buffer, "%sA", good); /* 43 + 1 = 44: valid length, bad bits */
  assert_int_not_equal(verify(verifier, buffer), 0);
  snprintf(buffer, sizeof buffer, "%sAA", good); /* 45 = 1 mod 4 */
  assert_int_equal(verify(verifier, buffer), HARK_JWT_EMALFORMED);

  free(good);
  hark_jwt_verifier_free(verifier);
}

static void header_must_be_json_object(void **state) {
  (void)state;
  hark_jwt_verifier *verifier = hs_verifier();

  assert_int_equal(verify_owned(verifier, sign_token(&HS, "[\"HS256\"]", "{}")),
                   HARK_JWT_EMALFORMED);
  assert_int_equal(verify_owned(verifier, sign_token(&HS, "\"HS256\"", "{}")),
                   HARK_JWT_EMALFORMED);
  assert_int_equal(verify_owned(verifier, sign_token(&HS, "{\"alg\":\"HS256\"", "{}")),
                   HARK_JWT_EMALFORMED);
  assert_int_equal(verify_owned(verifier, sign_token(&HS, "", "{}")), HARK_JWT_EMALFORMED);
  assert_int_equal(verify_owned(verifier, sign_token(&HS, "{\"alg\":\"HS256\"} x", "{}")),
                   HARK_JWT_EMALFORMED);

  hark_jwt_verifier_free(verifier);
}

static void payload_must_be_json_object(void **state) {
  (void)state;
  hark_jwt_verifier *verifier = hs_verifier();

  assert_int_equal(verify_owned(verifier, hs_token("[]")), HARK_JWT_EMALFORMED);
  assert_int_equal(verify_owned(verifier, hs_token("\"sub\"")), HARK_JWT_EMALFORMED);
  assert_int_equal(verify_owned(verifier, hs_token("42")), HARK_JWT_EMALFORMED);
  assert_int_equal(verify_owned(verifier, hs_token("{\"sub\":")), HARK_JWT_EMALFORMED);
  assert_int_equal(verify_owned(verifier, hs_token("")), HARK_JWT_EMALFORMED);
  assert_int_equal(verify_owned(verifier, hs_token("{\"sub\":\"\xff\"}")), HARK_JWT_EMALFORMED);
  assert_int_equal(verify_owned(verifier, hs_token("{\"sub\":\"a\\u0000b\"}")),
                   HARK_JWT_EMALFORMED);
  assert_int_equal(verify_owned(verifier, hs_token(" {} ")), 0);

  hark_jwt_verifier_free(verifier);
}

static void duplicate_claims_rejected(void **state) {
  (void)state;
  hark_jwt_verifier *verifier = hs_verifier();

  assert_int_equal(verify_owned(verifier, hs_token("{\"sub\":\"a\",\"sub\":\"admin\"}")),
                   HARK_JWT_EMALFORMED);
  assert_int_equal(verify_owned(verifier, sign_token(&HS, "{\"alg\":\"none\",\"alg\":\"HS256\"}",
                                                     "{}")),
                   HARK_JWT_EMALFORMED);

  hark_jwt_verifier_free(verifier);
}

/* Fills payload with {"sub":"x","pad":"aaa..."} such that the signed token
 * is `target` bytes long, and returns the token. */
static char *hs_token_of_length(size_t target) {
  char *payload = malloc(target + 64);
  assert_non_null(payload);

  /* Base64url makes 4 characters of 3 bytes, so start near the target. */
  for (size_t pad = target * 3 / 4 - 128; pad < target; pad++) {
    snprintf(payload, target + 64, "{\"sub\":\"x\",\"pad\":\"%0*d\"}", (int)pad, 0);
    char *token = hs_token(payload);
    if (strlen(token) == target) {
      free(payload);
      return token;
    }
    free(token);
  }
  fail_msg("no padding gives a token of %zu bytes", target);
  return NULL;
}

static void token_length_limit(void **state) {
  (void)state;
  hark_jwt_verifier *verifier = hs_verifier();

  char *longest = hs_token_of_length(HARK_JWT_MAX_TOKEN_BYTES);
  assert_int_equal(verify(verifier, longest), 0);

  char *too_long = hs_token_of_length(HARK_JWT_MAX_TOKEN_BYTES + 1);
  assert_int_equal(verify(verifier, too_long), HARK_JWT_EMALFORMED);
  assert_string_equal(reason_for(verifier, too_long), "malformed token: longer than 8192 bytes");

  free(longest);
  free(too_long);
  hark_jwt_verifier_free(verifier);
}

/* Returns {"x": [[...[]...]]} with `depth` nested arrays (caller frees). */
static char *nested_payload(int depth) {
  char *payload = malloc((size_t)depth * 2 + 16);
  assert_non_null(payload);
  char *cursor = payload + sprintf(payload, "{\"x\":");
  for (int i = 0; i < depth; i++) *cursor++ = '[';
  for (int i = 0; i < depth; i++) *cursor++ = ']';
  strcpy(cursor, "}");
  return payload;
}

static void nesting_depth_limited(void **state) {
  (void)state;
  hark_jwt_verifier *verifier = hs_verifier();

  /* The object itself is one level, so 63 arrays reach the limit of 64. */
  char *deepest = nested_payload(HARK_JSON_MAX_DEPTH - 1);
  char *too_deep = nested_payload(HARK_JSON_MAX_DEPTH);
  char *far_too_deep = nested_payload(1000);

  assert_int_equal(verify_owned(verifier, hs_token(deepest)), 0);
  assert_int_equal(verify_owned(verifier, hs_token(too_deep)), HARK_JWT_EMALFORMED);
  assert_int_equal(verify_owned(verifier, hs_token(far_too_deep)), HARK_JWT_EMALFORMED);

  free(deepest);
  free(too_deep);
  free(far_too_deep);
  hark_jwt_verifier_free(verifier);
}

/* ---- Algorithm ---- */

static void alg_none_rejected_in_any_case(void **state) {
  (void)state;
  const char *headers[] = {"{\"alg\":\"none\"}", "{\"alg\":\"None\"}", "{\"alg\":\"NONE\"}",
                           "{\"alg\":\"nOnE\"}"};
  hark_jwt_verifier *verifier = hs_verifier();

  for (size_t i = 0; i < sizeof headers / sizeof headers[0]; i++) {
    /* Unsigned: an empty signature segment. */
    char *unsigned_token = token_with_signature(headers[i], "{\"sub\":\"admin\"}", NULL, 0);
    assert_int_equal(verify_owned(verifier, unsigned_token), HARK_JWT_EALGORITHM);

    /* Even with a valid HMAC over the input. */
    char *signed_token = sign_token(&HS, headers[i], "{\"sub\":\"admin\"}");
    assert_int_equal(verify_owned(verifier, signed_token), HARK_JWT_EALGORITHM);
  }

  hark_jwt_verifier_free(verifier);
}

static void alg_must_match_exactly(void **state) {
  (void)state;
  hark_jwt_verifier *verifier = hs_verifier();

  assert_int_equal(verify_owned(verifier, sign_token(&HS, "{\"alg\":\"hs256\"}", "{}")),
                   HARK_JWT_EALGORITHM);
  assert_int_equal(verify_owned(verifier, sign_token(&HS, "{\"alg\":\"HS256 \"}", "{}")),
                   HARK_JWT_EALGORITHM);
  assert_int_equal(verify_owned(verifier, sign_token(&HS, "{\"alg\":\"HS384\"}", "{}")),
                   HARK_JWT_EALGORITHM);
  assert_int_equal(verify_owned(verifier, sign_token(&HS, "{\"alg\":\"HS256\\u0000\"}", "{}")),
                   HARK_JWT_EMALFORMED);
  assert_int_equal(verify_owned(verifier, sign_token(&HS, "{\"typ\":\"JWT\"}", "{}")),
                   HARK_JWT_EMALFORMED);
  assert_int_equal(verify_owned(verifier, sign_token(&HS, "{\"alg\":256}", "{}")),
                   HARK_JWT_EMALFORMED);
  assert_int_equal(verify_owned(verifier, sign_token(&HS, "{\"alg\":\"HS256\"}", "{}")), 0);

  hark_jwt_verifier_free(verifier);
}

/* An attacker who has the public key signs HS256 with the PEM text as the
 * HMAC secret. A verifier that took alg from the token would accept it. */
static void hs256_with_public_key_rejected(void **state) {
  (void)state;
  const char *pems[] = {keys.rsa_pem, keys.ec_pem};
  const hark_jwt_alg algs[] = {HARK_JWT_RS256, HARK_JWT_ES256};

  for (size_t i = 0; i < 2; i++) {
    hark_jwt_verifier *verifier = pem_verifier(algs[i], pems[i]);
    signer attacker = {HARK_JWT_HS256, (const unsigned char *)pems[i], strlen(pems[i]), NULL};

    char *token = sign_token(&attacker, HS_HEADER, "{\"sub\":\"admin\"}");
    assert_int_equal(verify(verifier, token), HARK_JWT_EALGORITHM);
    assert_string_equal(reason_for(verifier, token), "algorithm not allowed");

    free(token);
    hark_jwt_verifier_free(verifier);
  }
}

static void rs256_and_es256_not_interchangeable(void **state) {
  (void)state;
  hark_jwt_verifier *rs = pem_verifier(HARK_JWT_RS256, keys.rsa_pem);
  hark_jwt_verifier *es = pem_verifier(HARK_JWT_ES256, keys.ec_pem);

  assert_int_equal(verify_owned(es, rs_token("{}")), HARK_JWT_EALGORITHM);
  assert_int_equal(verify_owned(rs, es_token("{}")), HARK_JWT_EALGORITHM);

  /* The header claims the configured algorithm, but the signature was made
   * with the other one: the signature check fails. */
  signer ec_signer = {HARK_JWT_ES256, NULL, 0, keys.ec};
  assert_int_equal(verify_owned(rs, sign_token(&ec_signer, RS_HEADER, "{}")),
                   HARK_JWT_ESIGNATURE);
  signer rsa_signer = {HARK_JWT_RS256, NULL, 0, keys.rsa};
  assert_int_equal(verify_owned(es, sign_token(&rsa_signer, ES_HEADER, "{}")),
                   HARK_JWT_ESIGNATURE);

  hark_jwt_verifier_free(rs);
  hark_jwt_verifier_free(es);
}

static void crit_header_rejected(void **state) {
  (void)state;
  hark_jwt_verifier *verifier = hs_verifier();

  char *token = sign_token(&HS, "{\"alg\":\"HS256\",\"crit\":[\"exp\"],\"exp\":1}", "{}");
  assert_int_equal(verify(verifier, token), HARK_JWT_EALGORITHM);
  assert_string_equal(reason_for(verifier, token), "header parameter crit is not supported");
  free(token);

  assert_int_equal(verify_owned(verifier, sign_token(&HS, "{\"alg\":\"HS256\",\"crit\":[]}", "{}")),
                   HARK_JWT_EALGORITHM);

  hark_jwt_verifier_free(verifier);
}

static void kid_header_ignored(void **state) {
  (void)state;
  hark_jwt_verifier *verifier = hs_verifier();

  assert_int_equal(
      verify_owned(verifier, sign_token(&HS, "{\"alg\":\"HS256\",\"kid\":\"any-key\"}", "{}")), 0);
  assert_int_equal(verify_owned(verifier, sign_token(&HS, "{\"alg\":\"HS256\",\"kid\":7}", "{}")),
                   0);

  hark_jwt_verifier_free(verifier);
}

/* ---- Signatures ---- */

static void other_key_rejected(void **state) {
  (void)state;
  hark_jwt_verifier *hs = hs_verifier();
  hark_jwt_verifier *rs = pem_verifier(HARK_JWT_RS256, keys.rsa_pem);
  hark_jwt_verifier *es = pem_verifier(HARK_JWT_ES256, keys.ec_pem);
  signer hs_other = {HARK_JWT_HS256, OTHER_SECRET, sizeof OTHER_SECRET - 1, NULL};
  signer rs_other = {HARK_JWT_RS256, NULL, 0, keys.rsa_other};
  signer es_other = {HARK_JWT_ES256, NULL, 0, keys.ec_other};

  assert_int_equal(verify_owned(hs, sign_token(&hs_other, HS_HEADER, "{}")), HARK_JWT_ESIGNATURE);
  assert_int_equal(verify_owned(rs, sign_token(&rs_other, RS_HEADER, "{}")), HARK_JWT_ESIGNATURE);
  assert_int_equal(verify_owned(es, sign_token(&es_other, ES_HEADER, "{}")), HARK_JWT_ESIGNATURE);

  char *token = sign_token(&hs_other, HS_HEADER, "{}");
  assert_string_equal(reason_for(hs, token), "signature does not match");
  free(token);

  hark_jwt_verifier_free(hs);
  hark_jwt_verifier_free(rs);
  hark_jwt_verifier_free(es);
}

/* Swaps the payload of `token` for another one, keeping its signature. */
static char *swap_payload(const char *token, const char *payload_json) {
  const char *first = strchr(token, '.');
  const char *second = strchr(first + 1, '.');
  char *out = calloc(strlen(token) + strlen(payload_json) * 2 + 16, 1);
  assert_non_null(out);

  memcpy(out, token, (size_t)(first - token) + 1);
  append_base64url(out, payload_json, strlen(payload_json));
  strcat(out, second);
  return out;
}

static void tampered_payload_rejected(void **state) {
  (void)state;
  hark_jwt_verifier *verifiers[] = {hs_verifier(), pem_verifier(HARK_JWT_RS256, keys.rsa_pem),
                                    pem_verifier(HARK_JWT_ES256, keys.ec_pem)};
  char *tokens[] = {hs_token("{\"sub\":\"alice\"}"), rs_token("{\"sub\":\"alice\"}"),
                    es_token("{\"sub\":\"alice\"}")};

  for (size_t i = 0; i < 3; i++) {
    assert_int_equal(verify(verifiers[i], tokens[i]), 0);
    char *tampered = swap_payload(tokens[i], "{\"sub\":\"admin\"}");
    assert_int_equal(verify_owned(verifiers[i], tampered), HARK_JWT_ESIGNATURE);
    free(tokens[i]);
    hark_jwt_verifier_free(verifiers[i]);
  }
}

static void signature_length_checked(void **state) {
  (void)state;
  hark_jwt_verifier *hs = hs_verifier();
  hark_jwt_verifier *rs = pem_verifier(HARK_JWT_RS256, keys.rsa_pem);
  hark_jwt_verifier *es = pem_verifier(HARK_JWT_ES256, keys.ec_pem);
  unsigned char zeros[600] = {0};
  const size_t hs_lengths[] = {0, 31, 33, 64};
  const size_t rs_lengths[] = {0, 255, 257, 512};
  const size_t es_lengths[] = {0, 63, 65, 70, 72};

  for (size_t i = 0; i < 4; i++) {
    char *token = token_with_signature(HS_HEADER, "{}", zeros, hs_lengths[i]);
    assert_int_equal(verify_owned(hs, token), HARK_JWT_ESIGNATURE);
    token = token_with_signature(RS_HEADER, "{}", zeros, rs_lengths[i]);
    assert_int_equal(verify_owned(rs, token), HARK_JWT_ESIGNATURE);
  }
  for (size_t i = 0; i < 5; i++) {
    char *token = token_with_signature(ES_HEADER, "{}", zeros, es_lengths[i]);
    assert_string_equal(reason_for(es, token), "signature has the wrong length");
    free(token);
  }

  hark_jwt_verifier_free(hs);
  hark_jwt_verifier_free(rs);
  hark_jwt_verifier_free(es);
}

/* JWS carries ES256 as raw r || s. The DER form that OpenSSL produces must
 * not be accepted, and neither must r = s = 0 or all-ones values. */
static void es256_needs_raw_signature(void **state) {
  (void)state;
  hark_jwt_verifier *es = pem_verifier(HARK_JWT_ES256, keys.ec_pem);
  char *input = signing_input(ES_HEADER, "{}");
  unsigned char der[128];
  size_t der_len = sign_digest(keys.ec, input, der, sizeof der);
  free(input);

  char *token = token_with_signature(ES_HEADER, "{}", der, der_len);
  assert_int_equal(verify_owned(es, token), HARK_JWT_ESIGNATURE);

  unsigned char raw[64];
  memset(raw, 0, sizeof raw);
  assert_int_equal(verify_owned(es, token_with_signature(ES_HEADER, "{}", raw, 64)),
                   HARK_JWT_ESIGNATURE);
  memset(raw, 0xff, sizeof raw);
  assert_int_equal(verify_owned(es, token_with_signature(ES_HEADER, "{}", raw, 64)),
                   HARK_JWT_ESIGNATURE);

  hark_jwt_verifier_free(es);
}

/* ---- Time claims ---- */

static void exp_checked_with_leeway(void **state) {
  (void)state;
  hark_jwt_verifier *verifier = hs_verifier();
  char *token = hs_token("{\"exp\":1700000000}");

  assert_int_equal(verify_at(verifier, token, 1700000000 - 1000), 0);
  assert_int_equal(verify_at(verifier, token, 1700000000 + 29), 0);
  assert_int_equal(verify_at(verifier, token, 1700000000 + 30), HARK_JWT_EEXPIRED);
  assert_int_equal(verify_at(verifier, token, 1700000000 + 5000), HARK_JWT_EEXPIRED);
  assert_string_equal(reason_at(verifier, token, 1700000000 + 30), "token expired");

  free(token);
  hark_jwt_verifier_free(verifier);
}

static void exp_without_leeway(void **state) {
  (void)state;
  hark_jwt_config config;
  hark_jwt_config_init(&config);
  assert_int_equal(config.leeway_s, 30);
  config.alg = HARK_JWT_HS256;
  config.secret = SECRET;
  config.secret_len = sizeof SECRET - 1;
  config.leeway_s = 0;
  hark_jwt_verifier *verifier = create_or_fail(&config);
  char *token = hs_token("{\"exp\":1700000000,\"nbf\":1699999000}");

  assert_int_equal(verify_at(verifier, token, 1699999999), 0);
  assert_int_equal(verify_at(verifier, token, 1700000000), HARK_JWT_EEXPIRED);
  assert_int_equal(verify_at(verifier, token, 1699999000), 0);
  assert_int_equal(verify_at(verifier, token, 1699998999), HARK_JWT_ENOTYETVALID);

  free(token);
  hark_jwt_verifier_free(verifier);
}

static void fractional_exp_accepted(void **state) {
  (void)state;
  hark_jwt_verifier *verifier = hs_verifier();
  char *token = hs_token("{\"exp\":1699999970.5}");

  assert_int_equal(verify_at(verifier, token, 1700000000), 0);
  assert_int_equal(verify_at(verifier, token, 1700000001), HARK_JWT_EEXPIRED);

  free(token);
  hark_jwt_verifier_free(verifier);
}

static void nbf_checked_with_leeway(void **state) {
  (void)state;
  hark_jwt_verifier *verifier = hs_verifier();
  char *token = hs_token("{\"nbf\":1700000000}");

  assert_int_equal(verify_at(verifier, token, 1700000000 + 1000), 0);
  assert_int_equal(verify_at(verifier, token, 1700000000 - 30), 0);
  assert_int_equal(verify_at(verifier, token, 1700000000 - 31), HARK_JWT_ENOTYETVALID);
  assert_string_equal(reason_at(verifier, token, 1700000000 - 31), "token not yet valid");

  free(token);
  hark_jwt_verifier_free(verifier);
}

static void time_claims_must_be_numbers(void **state) {
  (void)state;
  hark_jwt_verifier *verifier = hs_verifier();
  const char *payloads[] = {
      "{\"exp\":\"1800000000\"}", "{\"exp\":true}", "{\"exp\":null}", "{\"exp\":[1800000000]}",
      "{\"nbf\":\"0\"}",          "{\"nbf\":{}}",   "{\"exp\":99999999999999999999999}",
  };

  for (size_t i = 0; i < sizeof payloads / sizeof payloads[0]; i++) {
    assert_int_equal(verify_owned(verifier, hs_token(payloads[i])), HARK_JWT_EMALFORMED);
  }

  hark_jwt_verifier_free(verifier);
}

static void iat_ignored_and_exp_optional(void **state) {
  (void)state;
  hark_jwt_verifier *verifier = hs_verifier();

  assert_int_equal(verify_owned(verifier, hs_token("{\"iat\":1900000000}")), 0);
  assert_int_equal(verify_owned(verifier, hs_token("{\"iat\":\"yesterday\"}")), 0);
  /* No exp: accepted at any time. */
  char *token = hs_token("{\"sub\":\"a\"}");
  assert_int_equal(verify_at(verifier, token, INT64_MAX / 2), 0);
  free(token);

  hark_jwt_verifier_free(verifier);
}

/* ---- Issuer and audience ---- */

static hark_jwt_verifier *hs_verifier_for(const char *issuer, const char *audience) {
  hark_jwt_config config;
  hark_jwt_config_init(&config);
  config.alg = HARK_JWT_HS256;
  config.secret = SECRET;
  config.secret_len = sizeof SECRET - 1;
  config.issuer = issuer;
  config.audience = audience;
  return create_or_fail(&config);
}

static void issuer_checked_when_configured(void **state) {
  (void)state;
  hark_jwt_verifier *verifier = hs_verifier_for("https://auth.example", NULL);

  assert_int_equal(verify_owned(verifier, hs_token("{\"iss\":\"https://auth.example\"}")), 0);
  assert_int_equal(verify_owned(verifier, hs_token("{\"iss\":\"https://evil.example\"}")),
                   HARK_JWT_EISSUER);
  assert_int_equal(verify_owned(verifier, hs_token("{\"iss\":\"https://auth.example/\"}")),
                   HARK_JWT_EISSUER);
  assert_int_equal(verify_owned(verifier, hs_token("{\"sub\":\"a\"}")), HARK_JWT_EISSUER);
  assert_int_equal(verify_owned(verifier, hs_token("{\"iss\":[\"https://auth.example\"]}")),
                   HARK_JWT_EMALFORMED);

  char *token = hs_token("{\"iss\":\"other\"}");
  assert_string_equal(reason_for(verifier, token), "issuer does not match");
  free(token);
  hark_jwt_verifier_free(verifier);

  /* Without an issuer in the config, iss is ignored. */
  verifier = hs_verifier();
  assert_int_equal(verify_owned(verifier, hs_token("{\"iss\":42}")), 0);
  hark_jwt_verifier_free(verifier);
}

static void audience_string_or_array(void **state) {
  (void)state;
  hark_jwt_verifier *verifier = hs_verifier_for(NULL, "hark");

  assert_int_equal(verify_owned(verifier, hs_token("{\"aud\":\"hark\"}")), 0);
  assert_int_equal(verify_owned(verifier, hs_token("{\"aud\":[\"api\",\"hark\"]}")), 0);
  assert_int_equal(verify_owned(verifier, hs_token("{\"aud\":\"harkd\"}")), HARK_JWT_EAUDIENCE);
  assert_int_equal(verify_owned(verifier, hs_token("{\"aud\":[\"api\",\"web\"]}")),
                   HARK_JWT_EAUDIENCE);
  assert_int_equal(verify_owned(verifier, hs_token("{\"aud\":[]}")), HARK_JWT_EAUDIENCE);
  assert_int_equal(verify_owned(verifier, hs_token("{\"sub\":\"a\"}")), HARK_JWT_EAUDIENCE);
  assert_int_equal(verify_owned(verifier, hs_token("{\"aud\":[\"hark\",1]}")),
                   HARK_JWT_EMALFORMED);
  assert_int_equal(verify_owned(verifier, hs_token("{\"aud\":{\"hark\":true}}")),
                   HARK_JWT_EMALFORMED);

  char *token = hs_token("{\"aud\":\"web\"}");
  assert_string_equal(reason_for(verifier, token), "audience does not match");
  free(token);
  hark_jwt_verifier_free(verifier);

  /* Without an audience in the config, aud is ignored. */
  verifier = hs_verifier();
  assert_int_equal(verify_owned(verifier, hs_token("{\"aud\":\"anything\"}")), 0);
  hark_jwt_verifier_free(verifier);
}

/* ---- Verifier creation ---- */

/* Returns the code of hark_jwt_verifier_create and checks that a failure
 * leaves no verifier and gives a reason. */
static int create_rc(const hark_jwt_config *config) {
  hark_jwt_verifier *verifier = (hark_jwt_verifier *)&verifier;
  const char *error = NULL;
  int rc = hark_jwt_verifier_create(&verifier, config, &error);

  if (rc == 0) {
    assert_non_null(verifier);
    hark_jwt_verifier_free(verifier);
  } else {
    assert_null(verifier);
    assert_non_null(error);
  }
  return rc;
}

static void create_rejects_bad_secrets(void **state) {
  (void)state;
  unsigned char secret[64];
  memset(secret, 'k', sizeof secret);
  hark_jwt_config config;
  hark_jwt_config_init(&config);
  config.alg = HARK_JWT_HS256;

  assert_int_equal(create_rc(&config), HARK_EINVAL);
  config.secret = secret;
  config.secret_len = 0;
  assert_int_equal(create_rc(&config), HARK_EINVAL);
  config.secret_len = 31;
  assert_int_equal(create_rc(&config), HARK_EINVAL);
  config.secret_len = 32;
  assert_int_equal(create_rc(&config), 0);

  /* A PEM makes no sense for HS256. */
  config.public_key_pem = keys.rsa_pem;
  config.public_key_pem_len = strlen(keys.rsa_pem);
  assert_int_equal(create_rc(&config), HARK_EINVAL);

  hark_jwt_verifier *verifier = NULL;
  const char *error = NULL;
  config.public_key_pem = NULL;
  config.public_key_pem_len = 0;
  config.secret_len = 16;
  assert_int_equal(hark_jwt_verifier_create(&verifier, &config, &error), HARK_EINVAL);
  assert_string_equal(
      error, "HS256 secret is shorter than 32 bytes (use a random secret of at least 32)");
}

static void create_checks_key_type(void **state) {
  (void)state;
  static const char not_pem[] = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
  struct {
    hark_jwt_alg alg;
    const char *pem;
    int rc;
  } cases[] = {
      {HARK_JWT_RS256, keys.rsa_pem, 0},
      {HARK_JWT_ES256, keys.ec_pem, 0},
      {HARK_JWT_RS256, keys.ec_pem, HARK_EINVAL},
      {HARK_JWT_ES256, keys.rsa_pem, HARK_EINVAL},
      {HARK_JWT_ES256, keys.ec_p384_pem, HARK_EINVAL},
      {HARK_JWT_RS256, keys.rsa_1024_pem, HARK_EINVAL},
      {HARK_JWT_RS256, keys.rsa_private_pem, HARK_EINVAL},
      {HARK_JWT_RS256, not_pem, HARK_EINVAL},
      {HARK_JWT_ES256, "garbage", HARK_EINVAL},
      {HARK_JWT_RS256, "", HARK_EINVAL},
  };

  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    hark_jwt_config config;
    hark_jwt_config_init(&config);
    config.alg = cases[i].alg;
    config.public_key_pem = cases[i].pem;
    config.public_key_pem_len = strlen(cases[i].pem);
    assert_int_equal(create_rc(&config), cases[i].rc);
  }
}

static void create_rejects_bad_settings(void **state) {
  (void)state;
  hark_jwt_config config;
  hark_jwt_config_init(&config);
  config.secret = SECRET;
  config.secret_len = sizeof SECRET - 1;

  /* alg not set */
  assert_int_equal(create_rc(&config), HARK_EINVAL);
  config.alg = (hark_jwt_alg)99;
  assert_int_equal(create_rc(&config), HARK_EINVAL);

  /* A secret makes no sense for RS256. */
  config.alg = HARK_JWT_RS256;
  config.public_key_pem = keys.rsa_pem;
  config.public_key_pem_len = strlen(keys.rsa_pem);
  assert_int_equal(create_rc(&config), HARK_EINVAL);

  config.alg = HARK_JWT_HS256;
  config.public_key_pem = NULL;
  config.public_key_pem_len = 0;
  config.leeway_s = -1;
  assert_int_equal(create_rc(&config), HARK_EINVAL);
  config.leeway_s = 0;
  config.issuer = "";
  assert_int_equal(create_rc(&config), HARK_EINVAL);
  config.issuer = NULL;
  config.audience = "";
  assert_int_equal(create_rc(&config), HARK_EINVAL);
  config.audience = "hark";
  assert_int_equal(create_rc(&config), 0);

  assert_int_equal(hark_jwt_verifier_create(NULL, &config, NULL), HARK_EINVAL);
  hark_jwt_verifier_free(NULL);
}

/* ---- Claims ---- */

static void claim_accessors(void **state) {
  (void)state;
  hark_jwt_verifier *verifier = hs_verifier();
  char *token = hs_token("{\"sub\":\"u-9\",\"presence\":{\"name\":\"Ann\"},"
                         "\"join\":[\"room:*\",\"user:u-9\"],\"publish\":[\"room:lobby\"]}");

  json_t *claims = NULL;
  assert_int_equal(hark_jwt_verify(verifier, token, strlen(token), NOW, &claims, NULL), 0);
  assert_string_equal(hark_jwt_claims_sub(claims), "u-9");
  assert_string_equal(json_string_value(json_object_get(hark_jwt_claims_presence(claims), "name")),
                      "Ann");
  assert_int_equal(json_array_size(hark_jwt_claims_join(claims)), 2);
  assert_int_equal(json_array_size(hark_jwt_claims_publish(claims)), 1);
  assert_null(hark_jwt_claims_channel(claims));

  json_t *join = hark_jwt_claims_join(claims);
  json_t *publish = hark_jwt_claims_publish(claims);
  assert_true(hark_jwt_globs_match(join, "room:42", 7));
  assert_true(hark_jwt_globs_match(join, "user:u-9", 8));
  assert_false(hark_jwt_globs_match(join, "user:u-1", 8));
  assert_true(hark_jwt_globs_match(publish, "room:lobby", 10));
  assert_false(hark_jwt_globs_match(publish, "room:other", 10));

  json_decref(claims);
  free(token);

  /* Absent claims give NULL, and NULL globs match nothing. */
  token = hs_token("{}");
  assert_int_equal(hark_jwt_verify(verifier, token, strlen(token), NOW, &claims, NULL), 0);
  assert_null(hark_jwt_claims_sub(claims));
  assert_null(hark_jwt_claims_presence(claims));
  assert_null(hark_jwt_claims_join(claims));
  assert_null(hark_jwt_claims_publish(claims));
  assert_false(hark_jwt_globs_match(hark_jwt_claims_join(claims), "room:1", 6));
  json_decref(claims);
  free(token);

  hark_jwt_verifier_free(verifier);
}

static void claim_types_checked(void **state) {
  (void)state;
  hark_jwt_verifier *verifier = hs_verifier();
  const char *payloads[] = {
      "{\"sub\":42}",           "{\"sub\":null}",           "{\"presence\":[]}",
      "{\"presence\":\"x\"}",   "{\"join\":\"room:*\"}",    "{\"join\":[\"room:*\",1]}",
      "{\"publish\":{}}",       "{\"publish\":[null]}",     "{\"channel\":[\"room:1\"]}",
  };

  for (size_t i = 0; i < sizeof payloads / sizeof payloads[0]; i++) {
    assert_int_equal(verify_owned(verifier, hs_token(payloads[i])), HARK_JWT_EMALFORMED);
  }
  assert_int_equal(verify_owned(verifier, hs_token("{\"join\":[],\"publish\":[]}")), 0);

  hark_jwt_verifier_free(verifier);
}

static int verify_channel(const hark_jwt_verifier *verifier, char *token, const char *topic,
                          const char *connection_sub) {
  json_t *claims = (json_t *)&claims;
  const char *error = NULL;
  int rc = hark_jwt_verify_channel(verifier, token, strlen(token), NOW, topic, strlen(topic),
                                   connection_sub, &claims, &error);
  if (rc == 0) {
    assert_string_equal(hark_jwt_claims_channel(claims), topic);
    json_decref(claims);
  } else {
    assert_null(claims);
    assert_non_null(error);
  }
  free(token);
  return rc;
}

static void channel_token_grants_one_topic(void **state) {
  (void)state;
  hark_jwt_verifier *verifier = hs_verifier();

  assert_int_equal(verify_channel(verifier, hs_token("{\"channel\":\"room:1\"}"), "room:1", "u-1"),
                   0);
  assert_int_equal(verify_channel(verifier, hs_token("{\"channel\":\"room:1\"}"), "room:1", NULL),
                   0);
  assert_int_equal(verify_channel(verifier, hs_token("{\"channel\":\"room:1\"}"), "room:2", "u-1"),
                   HARK_JWT_ECHANNEL);
  assert_int_equal(verify_channel(verifier, hs_token("{\"channel\":\"room:1\"}"), "room:10", "u-1"),
                   HARK_JWT_ECHANNEL);
  /* The channel claim is a topic, not a glob. */
  assert_int_equal(verify_channel(verifier, hs_token("{\"channel\":\"room:*\"}"), "room:1", "u-1"),
                   HARK_JWT_ECHANNEL);
  assert_int_equal(verify_channel(verifier, hs_token("{\"sub\":\"u-1\"}"), "room:1", "u-1"),
                   HARK_JWT_ECHANNEL);
  /* An expired channel token fails like any other token. */
  assert_int_equal(verify_channel(verifier, hs_token("{\"channel\":\"room:1\",\"exp\":1}"),
                                  "room:1", "u-1"),
                   HARK_JWT_EEXPIRED);

  hark_jwt_verifier_free(verifier);
}

static void channel_token_sub_must_match(void **state) {
  (void)state;
  hark_jwt_verifier *verifier = hs_verifier();
  const char *payload = "{\"channel\":\"room:1\",\"sub\":\"u-1\"}";

  assert_int_equal(verify_channel(verifier, hs_token(payload), "room:1", "u-1"), 0);
  assert_int_equal(verify_channel(verifier, hs_token(payload), "room:1", "u-2"), HARK_JWT_ESUBJECT);
  assert_int_equal(verify_channel(verifier, hs_token(payload), "room:1", "u-1 "),
                   HARK_JWT_ESUBJECT);
  assert_int_equal(verify_channel(verifier, hs_token(payload), "room:1", NULL), HARK_JWT_ESUBJECT);

  hark_jwt_verifier_free(verifier);
}

static void connection_rejects_channel_token(void **state) {
  (void)state;
  hark_jwt_verifier *verifier = hs_verifier();
  char *channel_token = hs_token("{\"channel\":\"room:1\",\"sub\":\"u-1\"}");
  char *connection_token = hs_token("{\"sub\":\"u-1\"}");

  json_t *claims = (json_t *)&claims;
  const char *error = NULL;
  assert_int_equal(hark_jwt_verify_connection(verifier, channel_token, strlen(channel_token), NOW,
                                              &claims, &error),
                   HARK_JWT_ECHANNEL);
  assert_null(claims);
  assert_string_equal(error, "channel token cannot be used as a connection token");

  assert_int_equal(hark_jwt_verify_connection(verifier, connection_token,
                                              strlen(connection_token), NOW, &claims, &error),
                   0);
  assert_string_equal(hark_jwt_claims_sub(claims), "u-1");
  json_decref(claims);

  free(channel_token);
  free(connection_token);
  hark_jwt_verifier_free(verifier);
}

/* Reasons are static strings, so no part of a token can leak into logs. */
static void reason_never_contains_token(void **state) {
  (void)state;
  hark_jwt_verifier *verifier = hs_verifier_for("iss-x", "aud-x");
  const char *payloads[] = {"{\"sub\":\"SECRETSUB\",\"exp\":1}", "{\"iss\":\"SECRETISS\"}",
                            "{\"iss\":\"iss-x\",\"aud\":\"SECRETAUD\"}", "{\"sub\":SECRET}"};

  for (size_t i = 0; i < sizeof payloads / sizeof payloads[0]; i++) {
    char *token = hs_token(payloads[i]);
    const char *reason = reason_for(verifier, token);
    assert_null(strstr(reason, "SECRET"));
    assert_null(strstr(reason, token));
    free(token);
  }

  hark_jwt_verifier_free(verifier);
}

static void null_arguments_rejected(void **state) {
  (void)state;
  hark_jwt_verifier *verifier = hs_verifier();
  json_t *claims = NULL;

  assert_int_equal(hark_jwt_verify(NULL, "a.b.c", 5, NOW, &claims, NULL), HARK_EINVAL);
  assert_int_equal(hark_jwt_verify(verifier, NULL, 5, NOW, &claims, NULL), HARK_EINVAL);
  assert_int_equal(hark_jwt_verify(verifier, "a.b.c", 5, NOW, NULL, NULL), HARK_EINVAL);
  assert_int_equal(hark_jwt_verify(verifier, NULL, 0, NOW, &claims, NULL), HARK_JWT_EMALFORMED);

  hark_jwt_verifier_free(verifier);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(hs256_valid_token),
      cmocka_unit_test(rs256_valid_token),
      cmocka_unit_test(es256_valid_token),
      cmocka_unit_test(rfc7515_hs256_known_answer),
      cmocka_unit_test(token_needs_three_segments),
      cmocka_unit_test(padding_is_rejected),
      cmocka_unit_test(non_base64url_characters_rejected),
      cmocka_unit_test(noncanonical_trailing_bits_rejected),
      cmocka_unit_test(segment_length_one_mod_four_rejected),
      cmocka_unit_test(header_must_be_json_object),
      cmocka_unit_test(payload_must_be_json_object),
      cmocka_unit_test(duplicate_claims_rejected),
      cmocka_unit_test(token_length_limit),
      cmocka_unit_test(nesting_depth_limited),
      cmocka_unit_test(alg_none_rejected_in_any_case),
      cmocka_unit_test(alg_must_match_exactly),
      cmocka_unit_test(hs256_with_public_key_rejected),
      cmocka_unit_test(rs256_and_es256_not_interchangeable),
      cmocka_unit_test(crit_header_rejected),
      cmocka_unit_test(kid_header_ignored),
      cmocka_unit_test(other_key_rejected),
      cmocka_unit_test(tampered_payload_rejected),
      cmocka_unit_test(signature_length_checked),
      cmocka_unit_test(es256_needs_raw_signature),
      cmocka_unit_test(exp_checked_with_leeway),
      cmocka_unit_test(exp_without_leeway),
      cmocka_unit_test(fractional_exp_accepted),
      cmocka_unit_test(nbf_checked_with_leeway),
      cmocka_unit_test(time_claims_must_be_numbers),
      cmocka_unit_test(iat_ignored_and_exp_optional),
      cmocka_unit_test(issuer_checked_when_configured),
      cmocka_unit_test(audience_string_or_array),
      cmocka_unit_test(create_rejects_bad_secrets),
      cmocka_unit_test(create_checks_key_type),
      cmocka_unit_test(create_rejects_bad_settings),
      cmocka_unit_test(claim_accessors),
      cmocka_unit_test(claim_types_checked),
      cmocka_unit_test(channel_token_grants_one_topic),
      cmocka_unit_test(channel_token_sub_must_match),
      cmocka_unit_test(connection_rejects_channel_token),
      cmocka_unit_test(reason_never_contains_token),
      cmocka_unit_test(null_arguments_rejected),
  };
  return cmocka_run_group_tests(tests, generate_keys, free_keys);
}
