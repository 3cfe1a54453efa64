#include "server/policy.h"

#include <stdlib.h>
#include <string.h>

#include "base/glob.h"
#include "server/jwt.h"

void hark_topic_rule_defaults(hark_topic_rule *rule) {
  memset(rule, 0, sizeof *rule);
  rule->join = HARK_ACCESS_ANYONE;
  rule->publish = HARK_ACCESS_ANYONE;
  rule->presence = -1;
  rule->client_meta = 1;
  rule->max_meta_bytes = HARK_DEFAULT_MAX_META_BYTES;
}

void hark_topic_policy_init(hark_topic_policy *policy, int tokens_configured) {
  memset(policy, 0, sizeof *policy);
  hark_topic_rule_defaults(&policy->fallback);
  if (tokens_configured) {
    policy->fallback.join = HARK_ACCESS_CLAIMS;
    policy->fallback.publish = HARK_ACCESS_CLAIMS;
  }
}

void hark_topic_policy_free(hark_topic_policy *policy) {
  for (size_t i = 0; i < policy->rule_count; i++) free(policy->rules[i].pattern);
  free(policy->rules);
  policy->rules = NULL;
  policy->rule_count = 0;
}

const hark_topic_rule *hark_topic_policy_find(const hark_topic_policy *policy, const char *topic,
                                              size_t topic_len) {
  if (policy->rule_count == 0) return &policy->fallback;
  for (size_t i = 0; i < policy->rule_count; i++)
    if (hark_glob_match(policy->rules[i].pattern, topic, topic_len)) return &policy->rules[i];
  return NULL;
}

static const char *const access_names[] = {"anyone", "authenticated", "claims", "none"};

int hark_access_parse(const char *name, hark_access *out) {
  for (int i = 0; i < 4; i++) {
    if (strcmp(name, access_names[i]) == 0) {
      *out = (hark_access)i;
      return 0;
    }
  }
  return -1;
}

const char *hark_access_name(hark_access access) {
  return (unsigned)access < 4 ? access_names[access] : "invalid";
}

int hark_access_allows(hark_access access, const json_t *claims, const json_t *globs,
                       const char *topic, size_t topic_len, int granted) {
  switch (access) {
    case HARK_ACCESS_ANYONE: return 1;
    case HARK_ACCESS_AUTHENTICATED: return claims != NULL;
    case HARK_ACCESS_CLAIMS:
      if (granted) return 1;
      return claims != NULL && hark_jwt_globs_match(globs, topic, topic_len);
    case HARK_ACCESS_NONE: return 0;
  }
  return 0;
}

int hark_policy_may_join(const hark_topic_rule *rule, const json_t *claims, const char *topic,
                         size_t topic_len, int channel_token_valid) {
  if (!rule) return 0;
  const json_t *globs = claims ? hark_jwt_claims_join(claims) : NULL;
  return hark_access_allows(rule->join, claims, globs, topic, topic_len, channel_token_valid);
}

int hark_policy_may_publish(const hark_topic_rule *rule, const json_t *claims, const char *topic,
                            size_t topic_len, int channel_grant) {
  if (!rule) return 0;
  const json_t *globs = claims ? hark_jwt_claims_publish(claims) : NULL;
  return hark_access_allows(rule->publish, claims, globs, topic, topic_len, channel_grant);
}
