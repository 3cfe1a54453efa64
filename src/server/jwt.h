/* JSON Web Token (RFC 7519) verification for connection and channel tokens,
 * without I/O: the caller passes the token bytes and the current time.
 *
 * A verifier accepts exactly one algorithm with one key: HS256 with a shared
 * secret, RS256 with an RSA public key, or ES256 with an EC P-256 public key.
 * Only the compact JWS form is accepted (three base64url segments without
 * padding). JWE, JWKS, key ids and unsigned ("none") tokens are not. */
#ifndef HARK_SERVER_JWT_H
#define HARK_SERVER_JWT_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "hark/error.h"

/* Verification failures. Config and memory errors use HARK_EINVAL and
 * HARK_ENOMEM from hark/error.h. */
enum {
  HARK_JWT_EMALFORMED = -5101,   /* not a well-formed token, or a claim of the wrong type */
  HARK_JWT_EALGORITHM = -5102,   /* header alg is not the configured algorithm, or crit is set */
  HARK_JWT_ESIGNATURE = -5103,   /* signature does not match the key */
  HARK_JWT_EEXPIRED = -5104,     /* now >= exp + leeway */
  HARK_JWT_ENOTYETVALID = -5105, /* now < nbf - leeway */
  HARK_JWT_EISSUER = -5106,      /* iss missing or not the configured issuer */
  HARK_JWT_EAUDIENCE = -5107,    /* aud missing or without the configured audience */
  HARK_JWT_ECHANNEL = -5108,     /* channel missing or wrong, or a channel token used to connect */
  HARK_JWT_ESUBJECT = -5109,     /* channel token's sub is not the connection's sub */
};

/* The maximum token length, in bytes. A connection token travels in a URL
 * query or a WebSocket subprotocol header, so it is small in practice. */
#define HARK_JWT_MAX_TOKEN_BYTES 8192

/* HMAC-SHA256 keys shorter than the hash output are weak (RFC 7518 section
 * 3.2 requires at least 256 bits), so shorter secrets are rejected. */
#define HARK_JWT_MIN_SECRET_BYTES 32

/* RSA keys below 2048 bits are rejected (RFC 7518 section 3.3). */
#define HARK_JWT_MIN_RSA_BITS 2048

/* The leeway that hark_jwt_config_init sets, in seconds. */
#define HARK_JWT_DEFAULT_LEEWAY_S 30

typedef enum hark_jwt_alg {
  HARK_JWT_HS256 = 1,
  HARK_JWT_RS256 = 2,
  HARK_JWT_ES256 = 3,
} hark_jwt_alg;

/* Verifier settings. Fill in with hark_jwt_config_init first. Every pointer is
 * borrowed for the length of hark_jwt_verifier_create, which copies or
 * parses what it keeps. */
typedef struct hark_jwt_config {
  hark_jwt_alg alg;
  /* HS256 only: the shared secret, at least HARK_JWT_MIN_SECRET_BYTES. */
  const unsigned char *secret;
  size_t secret_len;
  /* RS256 and ES256 only: a SubjectPublicKeyInfo PEM ("BEGIN PUBLIC KEY").
   * RS256 needs an RSA key of at least HARK_JWT_MIN_RSA_BITS, ES256 a P-256
   * key. */
  const char *public_key_pem;
  size_t public_key_pem_len;
  /* When set, tokens must carry this exact iss. NULL: iss is not checked. */
  const char *issuer;
  /* When set, tokens must carry aud equal to this string, or an aud array
   * with this string as one element. NULL: aud is not checked. */
  const char *audience;
  /* Clock skew allowed when checking exp and nbf, in seconds (>= 0). */
  int64_t leeway_s;
} hark_jwt_config;

/* An immutable verifier. Verifying does not modify it, and OpenSSL 3 allows
 * several threads to use one key at once as long as none modifies it
 * (openssl-threads(7)), so one verifier may serve several threads. */
typedef struct hark_jwt_verifier hark_jwt_verifier;

/* Sets every field to its default: no algorithm, no key, no issuer or
 * audience check, and a leeway of HARK_JWT_DEFAULT_LEEWAY_S. */
void hark_jwt_config_init(hark_jwt_config *config);

/* Creates a verifier (new, caller frees with hark_jwt_verifier_free).
 * Returns 0, HARK_ENOMEM, or HARK_EINVAL with *error set to a static English
 * reason: unknown algorithm, a secret or a PEM given for the wrong algorithm,
 * a missing or short secret, a PEM that does not parse, a key of the wrong
 * type, curve or size, or a negative leeway. `error` may be NULL. */
int hark_jwt_verifier_create(hark_jwt_verifier **out, const hark_jwt_config *config,
                             const char **error);

/* Frees the verifier and wipes its secret. Accepts NULL. */
void hark_jwt_verifier_free(hark_jwt_verifier *verifier);

/* Verifies the compact JWS `token` (`len` bytes, no NUL needed) at the time
 * `now` (unix seconds).
 *
 * On success returns 0 and stores the payload in *claims (new reference,
 * caller calls json_decref). On failure returns a HARK_JWT_E* code or
 * HARK_ENOMEM, sets *claims to NULL and *error to a static English reason
 * that never contains token text. `error` may be NULL.
 *
 * Checks run in this order. First the length and the segment syntax
 * (base64url alphabet, no padding, canonical trailing bits). Then the header:
 * a JSON object whose alg is exactly the configured algorithm, without crit.
 * Then the signature, where an HMAC is compared in constant time. Last the
 * payload: a JSON object without duplicate keys and nested at most
 * HARK_JSON_MAX_DEPTH deep, then exp, nbf, iss and aud, and the types of the
 * claims that the accessors below return. kid is ignored because a verifier
 * has one key, and iat is ignored.
 *
 * NOTE: a token without exp never expires. The backend that signs tokens
 * decides whether to set exp. */
int hark_jwt_verify(const hark_jwt_verifier *verifier, const char *token, size_t len, int64_t now,
                    json_t **claims, const char **error);

/* Verifies a connection token: hark_jwt_verify, and then rejects a token
 * that has a channel claim (HARK_JWT_ECHANNEL), so that a channel token,
 * which may have been handed to a third party, cannot open a connection. */
int hark_jwt_verify_connection(const hark_jwt_verifier *verifier, const char *token, size_t len,
                               int64_t now, json_t **claims, const char **error);

/* Verifies a channel token, which grants joining one more topic: runs
 * hark_jwt_verify, then requires the channel claim to equal `topic` byte for
 * byte (HARK_JWT_ECHANNEL otherwise). When the token has sub, it must equal
 * `connection_sub` (HARK_JWT_ESUBJECT otherwise, also when connection_sub is
 * NULL for an anonymous connection). Claims and errors as hark_jwt_verify. */
int hark_jwt_verify_channel(const hark_jwt_verifier *verifier, const char *token, size_t len,
                            int64_t now, const char *topic, size_t topic_len,
                            const char *connection_sub, json_t **claims, const char **error);

/* Accessors for verified claims. Each returns a borrowed reference (valid
 * while `claims` is), or NULL when the claim is absent. hark_jwt_verify has
 * already rejected tokens where a claim has the wrong type. */

/* The sub claim: the identity of the client. */
const char *hark_jwt_claims_sub(const json_t *claims);

/* The presence claim: an object of presence meta that the backend vouches for. */
json_t *hark_jwt_claims_presence(const json_t *claims);

/* The join and publish claims: arrays of topic glob patterns (base/glob.h). */
json_t *hark_jwt_claims_join(const json_t *claims);
json_t *hark_jwt_claims_publish(const json_t *claims);

/* The channel claim of a channel token: the topic it grants. */
const char *hark_jwt_claims_channel(const json_t *claims);

/* Returns 1 when `topic` matches one of the glob patterns in `globs` (an
 * array of strings from hark_jwt_claims_join or _publish), else 0. NULL
 * globs match nothing, so the caller decides what an absent claim means. */
int hark_jwt_globs_match(const json_t *globs, const char *topic, size_t topic_len);

#endif
