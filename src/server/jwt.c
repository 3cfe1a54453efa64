#include "server/jwt.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/obj_mac.h>
#include <openssl/objects.h>
#include <openssl/pem.h>

#include "base/glob.h"
#include "base/json.h"

/* HS256 signatures are one SHA-256 output. */
#define HS256_SIGNATURE_BYTES 32

/* ES256 signatures in JWS are r and s, each padded to 32 bytes and
 * concatenated (RFC 7518 section 3.4), where OpenSSL expects DER. */
#define ES256_SCALAR_BYTES 32
#define ES256_SIGNATURE_BYTES (2 * ES256_SCALAR_BYTES)

/* The DER form of an ECDSA P-256 signature is at most 72 bytes: a sequence
 * header of 2 bytes and two INTEGERs of up to 2 + 33 bytes each. */
#define ES256_MAX_DER_BYTES 72

/* A base64url segment decodes to at most 3/4 of its length, and a segment is
 * shorter than the whole token. */
#define MAX_DECODED_BYTES (HARK_JWT_MAX_TOKEN_BYTES / 4 * 3)

struct hark_jwt_verifier {
  hark_jwt_alg alg;
  unsigned char *secret; /* HS256: owned copy, wiped on free */
  size_t secret_len;
  EVP_PKEY *key;  /* RS256 and ES256: owned public key */
  char *issuer;   /* owned copy, or NULL when iss is not checked */
  char *audience; /* owned copy, or NULL when aud is not checked */
  int64_t leeway_s;
};

/* The three segments of a compact JWS. Each points into the caller's token. */
typedef struct jws_segments {
  const char *header;
  size_t header_len;
  const char *payload;
  size_t payload_len;
  const char *signature;
  size_t signature_len;
  size_t signing_input_len; /* header "." payload, which starts at header */
} jws_segments;

static int fail(const char **error, int code, const char *reason) {
  if (error) *error = reason;
  return code;
}

static const char *alg_name(hark_jwt_alg alg) {
  switch (alg) {
  case HARK_JWT_HS256: return "HS256";
  case HARK_JWT_RS256: return "RS256";
  case HARK_JWT_ES256: return "ES256";
  default: return NULL;
  }
}

/* ---- Configuration ---- */

void hark_jwt_config_init(hark_jwt_config *config) {
  memset(config, 0, sizeof *config);
  config->leeway_s = HARK_JWT_DEFAULT_LEEWAY_S;
}

/* Checks the settings that need no key parsing. */
static int check_config(const hark_jwt_config *config, const char **error) {
  if (alg_name(config->alg) == NULL) {
    return fail(error, HARK_EINVAL, "JWT algorithm must be HS256, RS256 or ES256");
  }

  int has_secret = config->secret != NULL || config->secret_len > 0;
  int has_pem = config->public_key_pem != NULL || config->public_key_pem_len > 0;
  if (config->alg == HARK_JWT_HS256) {
    if (has_pem) return fail(error, HARK_EINVAL, "HS256 takes a secret, not a public key PEM");
    if (config->secret == NULL || config->secret_len == 0) {
      return fail(error, HARK_EINVAL, "HS256 needs a secret, but the secret is empty");
    }
    if (config->secret_len < HARK_JWT_MIN_SECRET_BYTES) {
      return fail(error, HARK_EINVAL,
                  "HS256 secret is shorter than 32 bytes (use a random secret of at least 32)");
    }
    if (config->secret_len > INT_MAX) return fail(error, HARK_EINVAL, "HS256 secret is too long");
  } else {
    if (has_secret) {
      return fail(error, HARK_EINVAL, "RS256 and ES256 take a public key PEM, not a secret");
    }
    if (config->public_key_pem == NULL || config->public_key_pem_len == 0) {
      return fail(error, HARK_EINVAL, "RS256 and ES256 need a public key PEM, but it is empty");
    }
  }

  if (config->issuer != NULL && config->issuer[0] == '\0') {
    return fail(error, HARK_EINVAL, "JWT issuer is empty (leave it unset to skip the iss check)");
  }
  if (config->audience != NULL && config->audience[0] == '\0') {
    return fail(error, HARK_EINVAL, "JWT audience is empty (leave it unset to skip the aud check)");
  }
  if (config->leeway_s < 0) return fail(error, HARK_EINVAL, "JWT leeway must not be negative");
  return 0;
}

/* Returns 1 when an EC key is on P-256. OpenSSL may name the group by its
 * SEC name ("prime256v1") or its NIST name ("P-256"). */
static int is_p256_key(const EVP_PKEY *key) {
  char group[64];
  if (EVP_PKEY_get_group_name(key, group, sizeof group, NULL) != 1) return 0;

  int nid = OBJ_txt2nid(group);
  if (nid == NID_undef) nid = EC_curve_nist2nid(group);
  return nid == NID_X9_62_prime256v1;
}

/* Checks that the key fits the algorithm. Returns 0 or HARK_EINVAL. */
static int check_key_type(hark_jwt_alg alg, const EVP_PKEY *key, const char **error) {
  if (alg == HARK_JWT_RS256) {
    /* RSA-PSS keys are a separate type, so this also rejects them. */
    if (!EVP_PKEY_is_a(key, "RSA")) {
      return fail(error, HARK_EINVAL, "RS256 needs an RSA public key");
    }
    if (EVP_PKEY_get_bits(key) < HARK_JWT_MIN_RSA_BITS) {
      return fail(error, HARK_EINVAL, "RS256 public key is shorter than 2048 bits");
    }
    return 0;
  }

  if (!EVP_PKEY_is_a(key, "EC")) return fail(error, HARK_EINVAL, "ES256 needs an EC public key");
  if (!is_p256_key(key)) return fail(error, HARK_EINVAL, "ES256 needs a key on curve P-256");
  return 0;
}

/* Parses the PEM into verifier->key. */
static int load_public_key(hark_jwt_verifier *verifier, const hark_jwt_config *config,
                           const char **error) {
  if (config->public_key_pem_len > INT_MAX) {
    return fail(error, HARK_EINVAL, "public key PEM is too long");
  }

  BIO *bio = BIO_new_mem_buf(config->public_key_pem, (int)config->public_key_pem_len);
  if (bio == NULL) return fail(error, HARK_ENOMEM, "out of memory");
  verifier->key = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
  BIO_free(bio);

  if (verifier->key == NULL) {
    /* Leave no parse errors on this thread's OpenSSL error queue, where a
     * later TLS call would find them. */
    ERR_clear_error();
    return fail(error, HARK_EINVAL,
                "public key is not a valid PEM public key (expected BEGIN PUBLIC KEY)");
  }

  int rc = check_key_type(config->alg, verifier->key, error);
  ERR_clear_error();
  return rc;
}

static char *copy_string(const char *s) {
  if (s == NULL) return NULL;
  return strdup(s);
}

int hark_jwt_verifier_create(hark_jwt_verifier **out, const hark_jwt_config *config,
                             const char **error) {
  if (out == NULL || config == NULL) return fail(error, HARK_EINVAL, "missing argument");
  *out = NULL;

  int rc = check_config(config, error);
  if (rc != 0) return rc;

  hark_jwt_verifier *verifier = calloc(1, sizeof *verifier);
  if (verifier == NULL) return fail(error, HARK_ENOMEM, "out of memory");
  verifier->alg = config->alg;
  verifier->leeway_s = config->leeway_s;

  verifier->issuer = copy_string(config->issuer);
  verifier->audience = copy_string(config->audience);
  if ((config->issuer && !verifier->issuer) || (config->audience && !verifier->audience)) {
    rc = fail(error, HARK_ENOMEM, "out of memory");
    goto fail;
  }

  if (config->alg == HARK_JWT_HS256) {
    verifier->secret = malloc(config->secret_len);
    if (verifier->secret == NULL) {
      rc = fail(error, HARK_ENOMEM, "out of memory");
      goto fail;
    }
    memcpy(verifier->secret, config->secret, config->secret_len);
    verifier->secret_len = config->secret_len;
  } else {
    rc = load_public_key(verifier, config, error);
    if (rc != 0) goto fail;
  }

  *out = verifier;
  return 0;

fail:
  hark_jwt_verifier_free(verifier);
  return rc;
}

void hark_jwt_verifier_free(hark_jwt_verifier *verifier) {
  if (verifier == NULL) return;

  if (verifier->secret != NULL) OPENSSL_cleanse(verifier->secret, verifier->secret_len);
  free(verifier->secret);
  EVP_PKEY_free(verifier->key);
  free(verifier->issuer);
  free(verifier->audience);
  free(verifier);
}

/* ---- Compact serialization ---- */

/* Returns the 6-bit value of a base64url character (RFC 4648 section 5), or
 * -1 for any other byte, '=' padding included. */
static int base64url_value(unsigned char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '-') return 62;
  if (c == '_') return 63;
  return -1;
}

/* Returns 1 when the segment has only base64url characters and a length
 * that unpadded base64url can have (never 1 more than a multiple of 4). */
static int is_base64url_segment(const char *s, size_t len) {
  if (len % 4 == 1) return 0;
  for (size_t i = 0; i < len; i++) {
    if (base64url_value((unsigned char)s[i]) < 0) return 0;
  }
  return 1;
}

/* Decodes a segment that passed is_base64url_segment into `out` (room for
 * MAX_DECODED_BYTES). Returns -1 when the bits left over after the last
 * whole byte are not zero: such a text is not the canonical encoding, and
 * accepting it would let several token texts carry one signature. */
static int base64url_decode(const char *s, size_t len, unsigned char *out, size_t *out_len) {
  uint32_t bits = 0;
  int bit_count = 0;
  size_t n = 0;

  for (size_t i = 0; i < len; i++) {
    bits = (bits << 6) | (uint32_t)base64url_value((unsigned char)s[i]);
    bit_count += 6;
    if (bit_count >= 8) {
      bit_count -= 8;
      out[n++] = (unsigned char)(bits >> bit_count);
      bits &= (1u << bit_count) - 1;
    }
  }

  if (bits != 0) return -1;
  *out_len = n;
  return 0;
}

/* Splits the token at its two dots and checks the alphabet of each part. */
static int split_token(const char *token, size_t len, jws_segments *segments, const char **error) {
  if (len == 0) return fail(error, HARK_JWT_EMALFORMED, "malformed token: empty");
  if (len > HARK_JWT_MAX_TOKEN_BYTES) {
    return fail(error, HARK_JWT_EMALFORMED, "malformed token: longer than 8192 bytes");
  }

  const char *first = memchr(token, '.', len);
  const char *second = first ? memchr(first + 1, '.', len - (size_t)(first + 1 - token)) : NULL;
  const char *end = token + len;
  if (second == NULL || memchr(second + 1, '.', (size_t)(end - second - 1)) != NULL) {
    return fail(error, HARK_JWT_EMALFORMED, "malformed token: expected three dot-separated parts");
  }

  segments->header = token;
  segments->header_len = (size_t)(first - token);
  segments->payload = first + 1;
  segments->payload_len = (size_t)(second - first - 1);
  segments->signature = second + 1;
  segments->signature_len = (size_t)(end - second - 1);
  segments->signing_input_len = (size_t)(second - token);

  if (!is_base64url_segment(segments->header, segments->header_len) ||
      !is_base64url_segment(segments->payload, segments->payload_len) ||
      !is_base64url_segment(segments->signature, segments->signature_len)) {
    return fail(error, HARK_JWT_EMALFORMED, "malformed token: a part is not unpadded base64url");
  }
  return 0;
}

/* Decodes a segment and parses it as one JSON object. Duplicate member names
 * are rejected because parsers disagree on which one wins. On success
 * stores a new reference in *object. */
static int decode_json_object(const char *segment, size_t len, const char *malformed_reason,
                              json_t **object, const char **error) {
  unsigned char decoded[MAX_DECODED_BYTES];
  size_t decoded_len = 0;
  if (base64url_decode(segment, len, decoded, &decoded_len) != 0) {
    return fail(error, HARK_JWT_EMALFORMED, "malformed token: a part is not canonical base64url");
  }

  /* The scanner bounds the nesting depth before jansson, whose own limit
   * (2048 in jansson 2.14) is far deeper and recursive. */
  if (!hark_json_valid((const char *)decoded, decoded_len)) {
    return fail(error, HARK_JWT_EMALFORMED, malformed_reason);
  }

  json_error_t json_error;
  *object = json_loadb((const char *)decoded, decoded_len, JSON_REJECT_DUPLICATES, &json_error);
  if (*object == NULL) {
    if (json_error_code(&json_error) == json_error_out_of_memory) {
      return fail(error, HARK_ENOMEM, "out of memory");
    }
    return fail(error, HARK_JWT_EMALFORMED, malformed_reason);
  }
  if (!json_is_object(*object)) {
    json_decref(*object);
    *object = NULL;
    return fail(error, HARK_JWT_EMALFORMED, malformed_reason);
  }
  return 0;
}

/* Checks alg and crit. Only the configured algorithm is accepted, which
 * rules out "none" in any spelling and tokens that pick another algorithm,
 * such as HS256 with the public key PEM as the secret. */
static int check_header(const hark_jwt_verifier *verifier, const jws_segments *segments,
                        const char **error) {
  json_t *header = NULL;
  int rc = decode_json_object(segments->header, segments->header_len,
                              "malformed token: header is not a JSON object", &header, error);
  if (rc != 0) return rc;

  const json_t *alg = json_object_get(header, "alg");
  if (alg == NULL || !json_is_string(alg)) {
    rc = fail(error, HARK_JWT_EMALFORMED, "malformed token: header alg is missing or not a string");
  } else if (strcmp(json_string_value(alg), alg_name(verifier->alg)) != 0) {
    rc = fail(error, HARK_JWT_EALGORITHM, "algorithm not allowed");
  } else if (json_object_get(header, "crit") != NULL) {
    /* No header extension is understood, and RFC 7515 section 4.1.11 makes a
     * token with an unknown critical extension invalid. */
    rc = fail(error, HARK_JWT_EALGORITHM, "header parameter crit is not supported");
  }

  json_decref(header);
  return rc;
}

/* ---- Signatures ---- */

static int verify_hs256(const hark_jwt_verifier *verifier, const unsigned char *data,
                        size_t data_len, const unsigned char *signature, size_t signature_len,
                        const char **error) {
  if (signature_len != HS256_SIGNATURE_BYTES) {
    return fail(error, HARK_JWT_ESIGNATURE, "signature has the wrong length");
  }

  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_len = 0;
  if (HMAC(EVP_sha256(), verifier->secret, (int)verifier->secret_len, data, data_len, mac,
           &mac_len) == NULL || mac_len != HS256_SIGNATURE_BYTES) {
    ERR_clear_error();
    return fail(error, HARK_ENOMEM, "HMAC-SHA256 failed");
  }

  /* Constant time, so the time taken does not reveal how many leading bytes
   * of a forged signature are right. */
  if (CRYPTO_memcmp(mac, signature, HS256_SIGNATURE_BYTES) != 0) {
    return fail(error, HARK_JWT_ESIGNATURE, "signature does not match");
  }
  return 0;
}

/* Runs EVP_DigestVerify with SHA-256. Returns 1 for a match, 0 for a
 * mismatch, and -1 when OpenSSL fails for another reason. */
static int digest_verify_sha256(EVP_PKEY *key, const unsigned char *data, size_t data_len,
                                const unsigned char *signature, size_t signature_len) {
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  if (ctx == NULL) return -1;

  int result = -1;
  if (EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, key) == 1) {
    /* EVP_DigestVerify returns 1 for a match, 0 for a mismatch and a
     * negative value for a signature it cannot decode: both are mismatches. */
    result = EVP_DigestVerify(ctx, signature, signature_len, data, data_len) == 1;
  }

  EVP_MD_CTX_free(ctx);
  ERR_clear_error();
  return result;
}

/* Converts the JWS form r || s into DER. Returns the DER length, or 0 when
 * OpenSSL runs out of memory. */
static size_t es256_raw_to_der(const unsigned char raw[ES256_SIGNATURE_BYTES],
                               unsigned char der[ES256_MAX_DER_BYTES]) {
  ECDSA_SIG *sig = ECDSA_SIG_new();
  BIGNUM *r = BN_bin2bn(raw, ES256_SCALAR_BYTES, NULL);
  BIGNUM *s = BN_bin2bn(raw + ES256_SCALAR_BYTES, ES256_SCALAR_BYTES, NULL);
  size_t der_len = 0;

  if (sig != NULL && r != NULL && s != NULL && ECDSA_SIG_set0(sig, r, s) == 1) {
    r = NULL; /* owned by sig now */
    s = NULL;
    int needed = i2d_ECDSA_SIG(sig, NULL);
    unsigned char *cursor = der;
    if (needed > 0 && needed <= ES256_MAX_DER_BYTES && i2d_ECDSA_SIG(sig, &cursor) == needed) {
      der_len = (size_t)needed;
    }
  }

  BN_free(r);
  BN_free(s);
  ECDSA_SIG_free(sig);
  return der_len;
}

static int verify_public_key(const hark_jwt_verifier *verifier, const unsigned char *data,
                             size_t data_len, const unsigned char *signature,
                             size_t signature_len, const char **error) {
  unsigned char der[ES256_MAX_DER_BYTES];

  if (verifier->alg == HARK_JWT_ES256) {
    if (signature_len != ES256_SIGNATURE_BYTES) {
      return fail(error, HARK_JWT_ESIGNATURE, "signature has the wrong length");
    }
    signature_len = es256_raw_to_der(signature, der);
    if (signature_len == 0) return fail(error, HARK_ENOMEM, "out of memory");
    signature = der;
  } else if (signature_len != (size_t)EVP_PKEY_get_size(verifier->key)) {
    /* An RSASSA-PKCS1-v1_5 signature is exactly as long as the modulus. */
    return fail(error, HARK_JWT_ESIGNATURE, "signature has the wrong length");
  }

  int result = digest_verify_sha256(verifier->key, data, data_len, signature, signature_len);
  if (result < 0) return fail(error, HARK_ENOMEM, "signature verification failed in OpenSSL");
  if (result == 0) return fail(error, HARK_JWT_ESIGNATURE, "signature does not match");
  return 0;
}

/* Verifies the signature over the ASCII bytes header "." payload
 * (RFC 7515 section 5.2). */
static int check_signature(const hark_jwt_verifier *verifier, const jws_segments *segments,
                           const char **error) {
  unsigned char signature[MAX_DECODED_BYTES];
  size_t signature_len = 0;
  if (base64url_decode(segments->signature, segments->signature_len, signature, &signature_len)) {
    return fail(error, HARK_JWT_EMALFORMED, "malformed token: a part is not canonical base64url");
  }

  const unsigned char *data = (const unsigned char *)segments->header;
  size_t data_len = segments->signing_input_len;
  if (verifier->alg == HARK_JWT_HS256) {
    return verify_hs256(verifier, data, data_len, signature, signature_len, error);
  }
  return verify_public_key(verifier, data, data_len, signature, signature_len, error);
}

/* ---- Claims ---- */

/* Checks exp and nbf, which RFC 7519 section 2 defines as NumericDate:
 * seconds since the epoch, possibly with a fraction. A double stores every
 * whole second up to 2^53 exactly, far beyond any real date. */
static int check_time_claims(const hark_jwt_verifier *verifier, const json_t *claims, int64_t now,
                             const char **error) {
  const json_t *exp = json_object_get(claims, "exp");
  const json_t *nbf = json_object_get(claims, "nbf");
  double now_s = (double)now;
  double leeway_s = (double)verifier->leeway_s;

  if (exp != NULL) {
    if (!json_is_number(exp)) {
      return fail(error, HARK_JWT_EMALFORMED, "malformed token: exp is not a number");
    }
    if (!(now_s < json_number_value(exp) + leeway_s)) {
      return fail(error, HARK_JWT_EEXPIRED, "token expired");
    }
  }

  if (nbf != NULL) {
    if (!json_is_number(nbf)) {
      return fail(error, HARK_JWT_EMALFORMED, "malformed token: nbf is not a number");
    }
    if (!(now_s >= json_number_value(nbf) - leeway_s)) {
      return fail(error, HARK_JWT_ENOTYETVALID, "token not yet valid");
    }
  }
  return 0;
}

static int string_equals(const json_t *value, const char *expected) {
  size_t expected_len = strlen(expected);
  return json_string_length(value) == expected_len &&
         memcmp(json_string_value(value), expected, expected_len) == 0;
}

static int check_issuer(const hark_jwt_verifier *verifier, const json_t *claims,
                        const char **error) {
  if (verifier->issuer == NULL) return 0;

  const json_t *iss = json_object_get(claims, "iss");
  if (iss == NULL) return fail(error, HARK_JWT_EISSUER, "token has no iss claim");
  if (!json_is_string(iss)) {
    return fail(error, HARK_JWT_EMALFORMED, "malformed token: iss is not a string");
  }
  if (!string_equals(iss, verifier->issuer)) {
    return fail(error, HARK_JWT_EISSUER, "issuer does not match");
  }
  return 0;
}

/* aud may be one string or an array of strings (RFC 7519 section 4.1.3). */
static int check_audience(const hark_jwt_verifier *verifier, const json_t *claims,
                          const char **error) {
  if (verifier->audience == NULL) return 0;

  const json_t *aud = json_object_get(claims, "aud");
  if (aud == NULL) return fail(error, HARK_JWT_EAUDIENCE, "token has no aud claim");
  if (json_is_string(aud)) {
    if (string_equals(aud, verifier->audience)) return 0;
    return fail(error, HARK_JWT_EAUDIENCE, "audience does not match");
  }
  if (!json_is_array(aud)) {
    return fail(error, HARK_JWT_EMALFORMED, "malformed token: aud is not a string or an array");
  }

  int found = 0;
  size_t index;
  const json_t *element;
  json_array_foreach(aud, index, element) {
    if (!json_is_string(element)) {
      return fail(error, HARK_JWT_EMALFORMED,
                  "malformed token: aud array has a non-string element");
    }
    if (string_equals(element, verifier->audience)) found = 1;
  }
  if (!found) return fail(error, HARK_JWT_EAUDIENCE, "audience does not match");
  return 0;
}

static int is_string_array(const json_t *value) {
  if (!json_is_array(value)) return 0;

  size_t index;
  const json_t *element;
  json_array_foreach(value, index, element) {
    if (!json_is_string(element)) return 0;
  }
  return 1;
}

/* Checks the types of the claims that the accessors return, so that callers
 * can use them without checking again. */
static int check_claim_types(const json_t *claims, const char **error) {
  const json_t *sub = json_object_get(claims, "sub");
  const json_t *channel = json_object_get(claims, "channel");
  const json_t *presence = json_object_get(claims, "presence");
  const json_t *join = json_object_get(claims, "join");
  const json_t *publish = json_object_get(claims, "publish");

  if (sub != NULL && !json_is_string(sub)) {
    return fail(error, HARK_JWT_EMALFORMED, "malformed token: sub is not a string");
  }
  if (channel != NULL && !json_is_string(channel)) {
    return fail(error, HARK_JWT_EMALFORMED, "malformed token: channel is not a string");
  }
  if (presence != NULL && !json_is_object(presence)) {
    return fail(error, HARK_JWT_EMALFORMED, "malformed token: presence is not an object");
  }
  if (join != NULL && !is_string_array(join)) {
    return fail(error, HARK_JWT_EMALFORMED, "malformed token: join is not an array of strings");
  }
  if (publish != NULL && !is_string_array(publish)) {
    return fail(error, HARK_JWT_EMALFORMED, "malformed token: publish is not an array of strings");
  }
  return 0;
}

static int check_claims(const hark_jwt_verifier *verifier, const json_t *claims, int64_t now,
                        const char **error) {
  int rc = check_time_claims(verifier, claims, now, error);
  if (rc == 0) rc = check_issuer(verifier, claims, error);
  if (rc == 0) rc = check_audience(verifier, claims, error);
  if (rc == 0) rc = check_claim_types(claims, error);
  return rc;
}

/* ---- Verification ---- */

int hark_jwt_verify(const hark_jwt_verifier *verifier, const char *token, size_t len, int64_t now,
                    json_t **claims, const char **error) {
  if (claims == NULL) return fail(error, HARK_EINVAL, "missing argument");
  *claims = NULL;
  if (verifier == NULL || (token == NULL && len > 0)) {
    return fail(error, HARK_EINVAL, "missing argument");
  }

  jws_segments segments;
  int rc = split_token(token, len, &segments, error);
  if (rc != 0) return rc;

  rc = check_header(verifier, &segments, error);
  if (rc != 0) return rc;

  /* The signature is checked before the payload is parsed, so the JSON
   * parser only parses payloads that the key holder signed. */
  rc = check_signature(verifier, &segments, error);
  if (rc != 0) return rc;

  json_t *payload = NULL;
  rc = decode_json_object(segments.payload, segments.payload_len,
                          "malformed token: payload is not a JSON object", &payload, error);
  if (rc != 0) return rc;

  rc = check_claims(verifier, payload, now, error);
  if (rc != 0) {
    json_decref(payload);
    return rc;
  }

  *claims = payload;
  return 0;
}

int hark_jwt_verify_connection(const hark_jwt_verifier *verifier, const char *token, size_t len,
                               int64_t now, json_t **claims, const char **error) {
  int rc = hark_jwt_verify(verifier, token, len, now, claims, error);
  if (rc != 0) return rc;

  if (json_object_get(*claims, "channel") != NULL) {
    json_decref(*claims);
    *claims = NULL;
    return fail(error, HARK_JWT_ECHANNEL, "channel token cannot be used as a connection token");
  }
  return 0;
}

/* Checks a verified channel token against the topic and the connection. */
static int check_channel_grant(const json_t *claims, const char *topic, size_t topic_len,
                               const char *connection_sub, const char **error) {
  const json_t *channel = json_object_get(claims, "channel");
  if (channel == NULL) return fail(error, HARK_JWT_ECHANNEL, "channel token has no channel claim");
  if (json_string_length(channel) != topic_len ||
      memcmp(json_string_value(channel), topic, topic_len) != 0) {
    return fail(error, HARK_JWT_ECHANNEL, "channel token is for another topic");
  }

  const json_t *sub = json_object_get(claims, "sub");
  if (sub != NULL && (connection_sub == NULL || !string_equals(sub, connection_sub))) {
    return fail(error, HARK_JWT_ESUBJECT, "channel token sub does not match the connection");
  }
  return 0;
}

int hark_jwt_verify_channel(const hark_jwt_verifier *verifier, const char *token, size_t len,
                            int64_t now, const char *topic, size_t topic_len,
                            const char *connection_sub, json_t **claims, const char **error) {
  if (topic == NULL && topic_len > 0) {
    if (claims != NULL) *claims = NULL;
    return fail(error, HARK_EINVAL, "missing argument");
  }

  int rc = hark_jwt_verify(verifier, token, len, now, claims, error);
  if (rc != 0) return rc;

  rc = check_channel_grant(*claims, topic ? topic : "", topic_len, connection_sub, error);
  if (rc != 0) {
    json_decref(*claims);
    *claims = NULL;
  }
  return rc;
}

/* ---- Accessors ---- */

const char *hark_jwt_claims_sub(const json_t *claims) {
  return json_string_value(json_object_get(claims, "sub"));
}

json_t *hark_jwt_claims_presence(const json_t *claims) {
  json_t *presence = json_object_get(claims, "presence");
  return json_is_object(presence) ? presence : NULL;
}

json_t *hark_jwt_claims_join(const json_t *claims) {
  json_t *join = json_object_get(claims, "join");
  return json_is_array(join) ? join : NULL;
}

json_t *hark_jwt_claims_publish(const json_t *claims) {
  json_t *publish = json_object_get(claims, "publish");
  return json_is_array(publish) ? publish : NULL;
}

const char *hark_jwt_claims_channel(const json_t *claims) {
  return json_string_value(json_object_get(claims, "channel"));
}

int hark_jwt_globs_match(const json_t *globs, const char *topic, size_t topic_len) {
  if (!json_is_array(globs)) return 0;

  size_t index;
  const json_t *pattern;
  json_array_foreach(globs, index, pattern) {
    const char *text = json_string_value(pattern);
    if (text != NULL && hark_glob_match(text, topic, topic_len)) return 1;
  }
  return 0;
}
