#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "server/policy.h"

#define T(s) s, strlen(s)

static json_t *claims_of(const char *text) {
  json_t *claims = json_loads(text, 0, NULL);
  assert_non_null(claims);
  return claims;
}

/* Appends a rule with `pattern` and the given join and publish access. */
static hark_topic_rule *add_rule(hark_topic_policy *policy, const char *pattern, hark_access join,
                                 hark_access publish) {
  policy->rules = realloc(policy->rules, (policy->rule_count + 1) * sizeof *policy->rules);
  assert_non_null(policy->rules);
  hark_topic_rule *rule = &policy->rules[policy->rule_count++];
  hark_topic_rule_defaults(rule);
  rule->pattern = strdup(pattern);
  rule->join = join;
  rule->publish = publish;
  return rule;
}

static void access_names_round_trip(void **state) {
  (void)state;
  static const char *const names[] = {"anyone", "authenticated", "claims", "none"};
  for (int i = 0; i < 4; i++) {
    hark_access access;
    assert_int_equal(hark_access_parse(names[i], &access), 0);
    assert_int_equal(access, i);
    assert_string_equal(hark_access_name(access), names[i]);
  }
  hark_access access;
  assert_int_equal(hark_access_parse("Anyone", &access), -1);
  assert_int_equal(hark_access_parse("", &access), -1);
}

static void access_anyone_allows_anonymous(void **state) {
  (void)state;
  assert_true(hark_access_allows(HARK_ACCESS_ANYONE, NULL, NULL, T("room:1"), 0));
}

static void access_authenticated_needs_token(void **state) {
  (void)state;
  json_t *claims = claims_of("{\"sub\":\"alice\"}");
  assert_false(hark_access_allows(HARK_ACCESS_AUTHENTICATED, NULL, NULL, T("room:1"), 0));
  assert_true(hark_access_allows(HARK_ACCESS_AUTHENTICATED, claims, NULL, T("room:1"), 0));
  json_decref(claims);
}

static void access_claims_match_patterns(void **state) {
  (void)state;
  json_t *claims = claims_of("{\"sub\":\"alice\",\"join\":[\"room:*\",\"user:alice\"]}");
  json_t *globs = json_object_get(claims, "join");
  assert_true(hark_access_allows(HARK_ACCESS_CLAIMS, claims, globs, T("room:1"), 0));
  assert_true(hark_access_allows(HARK_ACCESS_CLAIMS, claims, globs, T("user:alice"), 0));
  assert_false(hark_access_allows(HARK_ACCESS_CLAIMS, claims, globs, T("user:bob"), 0));
  /* A token without the claim grants nothing. */
  assert_false(hark_access_allows(HARK_ACCESS_CLAIMS, claims, NULL, T("room:1"), 0));
  assert_false(hark_access_allows(HARK_ACCESS_CLAIMS, NULL, NULL, T("room:1"), 0));
  json_decref(claims);
}

static void access_claims_accepts_channel_grant(void **state) {
  (void)state;
  assert_true(hark_access_allows(HARK_ACCESS_CLAIMS, NULL, NULL, T("room:1"), 1));
  json_t *claims = claims_of("{\"sub\":\"alice\",\"join\":[]}");
  assert_true(hark_access_allows(HARK_ACCESS_CLAIMS, claims, json_object_get(claims, "join"),
                                 T("room:1"), 1));
  json_decref(claims);
}

static void access_grant_only_helps_claims(void **state) {
  (void)state;
  assert_false(hark_access_allows(HARK_ACCESS_NONE, NULL, NULL, T("room:1"), 1));
  assert_false(hark_access_allows(HARK_ACCESS_AUTHENTICATED, NULL, NULL, T("room:1"), 1));
}

static void access_none_denies_everyone(void **state) {
  (void)state;
  json_t *claims = claims_of("{\"sub\":\"alice\",\"join\":[\"*\"]}");
  assert_false(hark_access_allows(HARK_ACCESS_NONE, claims, json_object_get(claims, "join"),
                                  T("room:1"), 0));
  json_decref(claims);
}

static void policy_open_defaults(void **state) {
  (void)state;
  hark_topic_policy policy;
  hark_topic_policy_init(&policy, 0);
  const hark_topic_rule *rule = hark_topic_policy_find(&policy, T("anything"));
  assert_non_null(rule);
  assert_int_equal(rule->join, HARK_ACCESS_ANYONE);
  assert_int_equal(rule->publish, HARK_ACCESS_ANYONE);
  assert_int_equal(rule->presence, -1);
  assert_int_equal(rule->client_meta, 1);
  assert_int_equal(rule->max_meta_bytes, HARK_DEFAULT_MAX_META_BYTES);
  assert_true(hark_policy_may_join(rule, NULL, T("anything"), 0));
  assert_true(hark_policy_may_publish(rule, NULL, T("anything"), 0));
  hark_topic_policy_free(&policy);
}

static void policy_token_defaults_need_claims(void **state) {
  (void)state;
  hark_topic_policy policy;
  hark_topic_policy_init(&policy, 1);
  const hark_topic_rule *rule = hark_topic_policy_find(&policy, T("room:1"));
  assert_int_equal(rule->join, HARK_ACCESS_CLAIMS);
  assert_int_equal(rule->publish, HARK_ACCESS_CLAIMS);

  json_t *claims = claims_of("{\"sub\":\"a\",\"join\":[\"room:*\"],\"publish\":[\"room:2\"]}");
  assert_false(hark_policy_may_join(rule, NULL, T("room:1"), 0));
  assert_true(hark_policy_may_join(rule, claims, T("room:1"), 0));
  assert_false(hark_policy_may_publish(rule, claims, T("room:1"), 0));
  assert_true(hark_policy_may_publish(rule, claims, T("room:2"), 0));
  assert_true(hark_policy_may_publish(rule, claims, T("room:1"), 1));
  json_decref(claims);
  hark_topic_policy_free(&policy);
}

static void policy_first_match_wins(void **state) {
  (void)state;
  hark_topic_policy policy;
  hark_topic_policy_init(&policy, 1);
  add_rule(&policy, "room:admin", HARK_ACCESS_NONE, HARK_ACCESS_NONE);
  add_rule(&policy, "room:*", HARK_ACCESS_ANYONE, HARK_ACCESS_AUTHENTICATED);
  add_rule(&policy, "*", HARK_ACCESS_CLAIMS, HARK_ACCESS_CLAIMS);

  assert_ptr_equal(hark_topic_policy_find(&policy, T("room:admin")), &policy.rules[0]);
  assert_ptr_equal(hark_topic_policy_find(&policy, T("room:lobby")), &policy.rules[1]);
  assert_ptr_equal(hark_topic_policy_find(&policy, T("user:1")), &policy.rules[2]);

  const hark_topic_rule *admin = hark_topic_policy_find(&policy, T("room:admin"));
  json_t *claims = claims_of("{\"sub\":\"a\",\"join\":[\"*\"]}");
  assert_false(hark_policy_may_join(admin, claims, T("room:admin"), 0));
  const hark_topic_rule *lobby = hark_topic_policy_find(&policy, T("room:lobby"));
  assert_true(hark_policy_may_join(lobby, NULL, T("room:lobby"), 0));
  assert_false(hark_policy_may_publish(lobby, NULL, T("room:lobby"), 0));
  assert_true(hark_policy_may_publish(lobby, claims, T("room:lobby"), 0));
  json_decref(claims);
  hark_topic_policy_free(&policy);
}

static void policy_unmatched_topic_denied(void **state) {
  (void)state;
  hark_topic_policy policy;
  hark_topic_policy_init(&policy, 0);
  add_rule(&policy, "room:*", HARK_ACCESS_ANYONE, HARK_ACCESS_ANYONE);
  assert_null(hark_topic_policy_find(&policy, T("user:1")));
  assert_false(hark_policy_may_join(NULL, NULL, T("user:1"), 0));
  assert_false(hark_policy_may_join(NULL, NULL, T("user:1"), 1));
  assert_false(hark_policy_may_publish(NULL, NULL, T("user:1"), 1));
  hark_topic_policy_free(&policy);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(access_names_round_trip),
      cmocka_unit_test(access_anyone_allows_anonymous),
      cmocka_unit_test(access_authenticated_needs_token),
      cmocka_unit_test(access_claims_match_patterns),
      cmocka_unit_test(access_claims_accepts_channel_grant),
      cmocka_unit_test(access_grant_only_helps_claims),
      cmocka_unit_test(access_none_denies_everyone),
      cmocka_unit_test(policy_open_defaults),
      cmocka_unit_test(policy_token_defaults_need_claims),
      cmocka_unit_test(policy_first_match_wins),
      cmocka_unit_test(policy_unmatched_topic_denied),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
