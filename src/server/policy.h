/* Topic policies: who may join a topic, who may publish on it, and how
 * presence behaves there. A policy is a list of rules, each for the topics
 * that match a glob pattern (base/glob.h); the first matching rule wins. */
#ifndef HARK_SERVER_POLICY_H
#define HARK_SERVER_POLICY_H

#include <stddef.h>

#include <jansson.h>

/* The default for a rule's max_meta_bytes. */
#define HARK_DEFAULT_MAX_META_BYTES 4096

/* Who may join or publish. */
typedef enum hark_access {
  HARK_ACCESS_ANYONE = 0,         /* any socket, with or without a token */
  HARK_ACCESS_AUTHENTICATED = 1,  /* a socket that connected with a valid token */
  HARK_ACCESS_CLAIMS = 2,         /* the token's join or publish patterns must match the topic */
  HARK_ACCESS_NONE = 3,           /* no socket; the HTTP API may still broadcast */
} hark_access;

typedef struct hark_topic_rule {
  char *pattern;          /* owned glob pattern, NUL-terminated */
  hark_access join;
  hark_access publish;
  int presence;           /* -1: as the --presence patterns say; 0: off; 1: on */
  int client_meta;        /* 1 when the client may send its own presence meta */
  size_t max_meta_bytes;  /* largest client meta, as JSON text */
} hark_topic_rule;

/* The rules of a server. With no rules, `fallback` applies to every topic;
 * with rules, a topic that matches none is denied. */
typedef struct hark_topic_policy {
  hark_topic_rule *rules;  /* owned array of rule_count rules */
  size_t rule_count;
  hark_topic_rule fallback;
} hark_topic_policy;

/* Fills `rule` with the defaults of a configured rule: anyone may join and
 * publish, presence as --presence says, client meta allowed up to
 * HARK_DEFAULT_MAX_META_BYTES. The pattern is left NULL. */
void hark_topic_rule_defaults(hark_topic_rule *rule);

/* Starts an empty policy. Its fallback lets anyone join and publish when
 * `tokens_configured` is 0 (open mode), and requires the token's claims for
 * both when it is 1. */
void hark_topic_policy_init(hark_topic_policy *policy, int tokens_configured);

/* Frees the rules and their patterns. */
void hark_topic_policy_free(hark_topic_policy *policy);

/* Returns the rule for `topic`: the first rule whose pattern matches, the
 * fallback when there are no rules, or NULL when no rule matches (the topic
 * is denied). The rule is borrowed from the policy. */
const hark_topic_rule *hark_topic_policy_find(const hark_topic_policy *policy, const char *topic,
                                              size_t topic_len);

/* Parses "anyone", "authenticated", "claims" or "none". Returns 0 or -1. */
int hark_access_parse(const char *name, hark_access *out);
const char *hark_access_name(hark_access access);

/* Decides one access rule. `claims` are the verified claims of the socket's
 * connection token, or NULL for a socket without one; `globs` is the claim
 * that HARK_ACCESS_CLAIMS checks (join or publish patterns); `granted` is 1
 * when a valid channel token grants this topic. Returns 1 to allow. */
int hark_access_allows(hark_access access, const json_t *claims, const json_t *globs,
                       const char *topic, size_t topic_len, int granted);

/* Returns 1 when a socket with `claims` (NULL: none) may join `topic` under
 * `rule` (NULL: denied). `channel_token_valid` is 1 when the join carried a
 * valid channel token for this topic. */
int hark_policy_may_join(const hark_topic_rule *rule, const json_t *claims, const char *topic,
                         size_t topic_len, int channel_token_valid);

/* Returns 1 when the socket may publish on `topic`. `channel_grant` is 1
 * when the channel token it joined with has publish patterns that match the
 * topic. */
int hark_policy_may_publish(const hark_topic_rule *rule, const json_t *claims, const char *topic,
                            size_t topic_len, int channel_grant);

#endif
