#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "server/origin.h"

/* Returns 1 when `origin` passes a list check with the single entry `entry`. */
static int list_allows(const char *entry, const char *origin) {
  hark_origin allowed;
  const char *error = NULL;
  assert_int_equal(hark_origin_parse_entry(entry, &allowed, &error), 0);
  hark_origin_check check = {.mode = HARK_ORIGIN_LIST, .allowed = &allowed, .allowed_count = 1};
  return hark_origin_allowed(&check, origin, strlen(origin), NULL, 0);
}

static void origin_parse_fills_default_ports(void **state) {
  (void)state;
  hark_origin o;
  assert_int_equal(hark_origin_parse("https://Example.COM", 19, &o), 0);
  assert_string_equal(o.scheme, "https");
  assert_string_equal(o.host, "example.com");
  assert_int_equal(o.port, 443);

  assert_int_equal(hark_origin_parse("http://a.b:8080", 15, &o), 0);
  assert_int_equal(o.port, 8080);
  assert_int_equal(hark_origin_parse("http://a.b", 10, &o), 0);
  assert_int_equal(o.port, 80);
  assert_int_equal(hark_origin_parse("app://a.b", 9, &o), 0);
  assert_int_equal(o.port, -1);
  assert_int_equal(hark_origin_parse("http://[::1]:4000", 17, &o), 0);
  assert_string_equal(o.host, "::1");
  assert_int_equal(o.port, 4000);
}

static void origin_parse_rejects_malformed(void **state) {
  (void)state;
  static const char *const bad[] = {
      "null", "", "example.com", "//example.com", "http://", "http://:80", "http://a.b:",
      "http://a.b:99999", "http://a.b:8x", "http://user@a.b", "http://a.b/path", "http://a b",
      "http://[::1", "1http://a.b",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    hark_origin o;
    if (hark_origin_parse(bad[i], strlen(bad[i]), &o) == 0) fail_msg("accepted \"%s\"", bad[i]);
  }
}

static void entry_without_host_is_error(void **state) {
  (void)state;
  static const char *const bad[] = {"example.com", "https://", "//", "", "*.", "//:4000",
                                    "https://user@example.com"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    hark_origin o;
    const char *error = NULL;
    if (hark_origin_parse_entry(bad[i], &o, &error) == 0) fail_msg("accepted \"%s\"", bad[i]);
    assert_non_null(error);
  }
}

static void entry_omitted_parts_are_wildcards(void **state) {
  (void)state;
  assert_true(list_allows("//example.com", "https://example.com"));
  assert_true(list_allows("//example.com", "http://example.com:8080"));
  assert_false(list_allows("//example.com", "https://other.com"));

  assert_true(list_allows("https://example.com", "https://example.com"));
  assert_false(list_allows("https://example.com", "http://example.com"));
  /* A scheme with a default port implies it, as in the origin. */
  assert_false(list_allows("https://example.com", "https://example.com:8443"));
  assert_true(list_allows("https://example.com:8443", "https://example.com:8443"));
  assert_true(list_allows("//example.com:8443", "wss://example.com:8443"));
  assert_false(list_allows("//example.com:8443", "https://example.com"));
}

static void entry_wildcard_matches_subdomains(void **state) {
  (void)state;
  assert_true(list_allows("//*.example.com", "https://example.com"));
  assert_true(list_allows("//*.example.com", "https://chat.example.com"));
  assert_true(list_allows("//*.example.com", "https://a.b.example.com"));
  assert_false(list_allows("//*.example.com", "https://badexample.com"));
  assert_false(list_allows("//*.example.com", "https://example.com.evil.org"));
  assert_false(list_allows("//example.com", "https://chat.example.com"));
}

static void entry_host_compare_ignores_case(void **state) {
  (void)state;
  assert_true(list_allows("HTTPS://Example.com", "https://EXAMPLE.com"));
}

static void check_without_origin_allows(void **state) {
  (void)state;
  hark_origin_check check = {.mode = HARK_ORIGIN_HOST};
  assert_true(hark_origin_allowed(&check, NULL, 0, "example.com", 11));
  check.mode = HARK_ORIGIN_LIST;
  assert_true(hark_origin_allowed(&check, NULL, 0, NULL, 0));
}

static void check_off_allows_everything(void **state) {
  (void)state;
  hark_origin_check check = {.mode = HARK_ORIGIN_OFF};
  assert_true(hark_origin_allowed(&check, "https://evil.org", 16, "example.com", 11));
  assert_true(hark_origin_allowed(&check, "null", 4, "example.com", 11));
}

static void check_host_compares_host_only(void **state) {
  (void)state;
  hark_origin_check check = {.mode = HARK_ORIGIN_HOST};
  const char *o1 = "https://example.com";
  const char *o2 = "http://EXAMPLE.com:9999";
  const char *o3 = "https://example.com.evil.org";
  assert_true(hark_origin_allowed(&check, o1, strlen(o1), "example.com", 11));
  assert_true(hark_origin_allowed(&check, o2, strlen(o2), "example.com", 11));
  assert_false(hark_origin_allowed(&check, o3, strlen(o3), "example.com", 11));
  assert_false(hark_origin_allowed(&check, "null", 4, "example.com", 11));
  assert_false(hark_origin_allowed(&check, o1, strlen(o1), NULL, 0));
}

static void check_list_tries_every_entry(void **state) {
  (void)state;
  hark_origin entries[2];
  assert_int_equal(hark_origin_parse_entry("https://a.example", &entries[0], NULL), 0);
  assert_int_equal(hark_origin_parse_entry("//b.example", &entries[1], NULL), 0);
  hark_origin_check check = {.mode = HARK_ORIGIN_LIST, .allowed = entries, .allowed_count = 2};
  const char *b = "http://b.example:3000";
  const char *c = "https://c.example";
  assert_true(hark_origin_allowed(&check, b, strlen(b), NULL, 0));
  assert_false(hark_origin_allowed(&check, c, strlen(c), NULL, 0));
}

static void host_of_strips_port(void **state) {
  (void)state;
  size_t len;
  const char *host = hark_origin_host_of("example.com:4000", 16, &len);
  assert_int_equal(len, 11);
  assert_memory_equal(host, "example.com", 11);
  host = hark_origin_host_of("[::1]:4000", 10, &len);
  assert_int_equal(len, 3);
  assert_memory_equal(host, "::1", 3);
  host = hark_origin_host_of("example.com", 11, &len);
  assert_int_equal(len, 11);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(origin_parse_fills_default_ports),
      cmocka_unit_test(origin_parse_rejects_malformed),
      cmocka_unit_test(entry_without_host_is_error),
      cmocka_unit_test(entry_omitted_parts_are_wildcards),
      cmocka_unit_test(entry_wildcard_matches_subdomains),
      cmocka_unit_test(entry_host_compare_ignores_case),
      cmocka_unit_test(check_without_origin_allows),
      cmocka_unit_test(check_off_allows_everything),
      cmocka_unit_test(check_host_compares_host_only),
      cmocka_unit_test(check_list_tries_every_entry),
      cmocka_unit_test(host_of_strips_port),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
