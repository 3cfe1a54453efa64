#include "server/origin.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int is_scheme_char(char c, int first) {
  if (isalpha((unsigned char)c)) return 1;
  return !first && (isdigit((unsigned char)c) || c == '+' || c == '-' || c == '.');
}

static int is_host_char(char c, int bracketed) {
  if (bracketed) return isxdigit((unsigned char)c) || c == ':' || c == '.';
  return isalnum((unsigned char)c) || c == '-' || c == '.' || c == '_';
}

static int default_port(const char *scheme) {
  if (strcmp(scheme, "http") == 0 || strcmp(scheme, "ws") == 0) return 80;
  if (strcmp(scheme, "https") == 0 || strcmp(scheme, "wss") == 0) return 443;
  return -1;
}

/* Reads "scheme:" before "//", or nothing when the text starts with "//".
 * Returns the offset of the "//", or -1. */
static long parse_scheme(const char *text, size_t len, hark_origin *out) {
  if (len >= 2 && text[0] == '/' && text[1] == '/') return 0;

  size_t i = 0;
  while (i < len && is_scheme_char(text[i], i == 0)) i++;
  if (i == 0 || i > HARK_ORIGIN_MAX_SCHEME || len - i < 3 || memcmp(text + i, "://", 3) != 0)
    return -1;
  for (size_t k = 0; k < i; k++) out->scheme[k] = (char)tolower((unsigned char)text[k]);
  out->scheme[i] = '\0';
  return (long)i + 1;
}

static int parse_port(const char *text, size_t len, int *port) {
  if (len == 0 || len > 5) return -1;
  int value = 0;
  for (size_t i = 0; i < len; i++) {
    if (!isdigit((unsigned char)text[i])) return -1;
    value = value * 10 + (text[i] - '0');
  }
  if (value > 65535) return -1;
  *port = value;
  return 0;
}

/* Parses "host[:port]" or "[v6][:port]" into out->host and out->port. */
static int parse_authority(const char *text, size_t len, hark_origin *out) {
  const char *host = text;
  size_t host_len;
  size_t rest;
  int bracketed = len > 0 && text[0] == '[';

  if (bracketed) {
    const char *close = memchr(text, ']', len);
    if (!close) return -1;
    host = text + 1;
    host_len = (size_t)(close - host);
    rest = (size_t)(close - text) + 1;
  } else {
    const char *colon = memchr(text, ':', len);
    host_len = colon ? (size_t)(colon - text) : len;
    rest = host_len;
  }

  if (host_len == 0 || host_len > HARK_ORIGIN_MAX_HOST) return -1;
  for (size_t i = 0; i < host_len; i++) {
    if (!is_host_char(host[i], bracketed)) return -1;
    out->host[i] = (char)tolower((unsigned char)host[i]);
  }
  out->host[host_len] = '\0';

  if (rest == len) return 0;
  if (text[rest] != ':') return -1;
  return parse_port(text + rest + 1, len - rest - 1, &out->port);
}

/* Shared by both parsers. `entry` allows "//host", "*." and a trailing path. */
static int parse(const char *text, size_t len, hark_origin *out, int entry, const char **error) {
  memset(out, 0, sizeof *out);
  out->port = -1;
  *error = "expected scheme://host[:port]";

  long slashes = parse_scheme(text, len, out);
  if (slashes < 0 || (!entry && out->scheme[0] == '\0')) return -1;
  const char *authority = text + slashes + 2;
  size_t rest = len - (size_t)slashes - 2;

  size_t authority_len = 0;
  while (authority_len < rest && authority[authority_len] != '/' && authority[authority_len] != '?' &&
         authority[authority_len] != '#')
    authority_len++;
  if (!entry && authority_len != rest) return -1;
  if (memchr(authority, '@', authority_len)) {
    *error = "an origin has no user name or password";
    return -1;
  }

  if (entry && authority_len >= 2 && authority[0] == '*' && authority[1] == '.') {
    out->any_subdomain = 1;
    authority += 2;
    authority_len -= 2;
  }
  if (authority_len == 0 || authority[0] == ':') {
    *error = "the origin has no host";
    return -1;
  }
  if (parse_authority(authority, authority_len, out) != 0) {
    *error = "invalid host or port";
    return -1;
  }

  if (out->port < 0 && out->scheme[0]) out->port = default_port(out->scheme);
  return 0;
}

int hark_origin_parse(const char *text, size_t len, hark_origin *out) {
  const char *error;
  return parse(text, len, out, 0, &error);
}

int hark_origin_parse_entry(const char *text, hark_origin *out, const char **error) {
  const char *ignored;
  return parse(text, strlen(text), out, 1, error ? error : &ignored);
}

static int host_matches(const hark_origin *allowed, const char *host) {
  if (strcmp(allowed->host, host) == 0) return 1;
  if (!allowed->any_subdomain) return 0;

  /* "*.example.com" matches "a.example.com", not "badexample.com". */
  size_t host_len = strlen(host), suffix_len = strlen(allowed->host);
  return host_len > suffix_len + 1 && host[host_len - suffix_len - 1] == '.' &&
         strcmp(host + host_len - suffix_len, allowed->host) == 0;
}

int hark_origin_matches(const hark_origin *allowed, const hark_origin *origin) {
  if (allowed->scheme[0] && strcmp(allowed->scheme, origin->scheme) != 0) return 0;
  if (allowed->port >= 0 && allowed->port != origin->port) return 0;
  return host_matches(allowed, origin->host);
}

int hark_origin_allowed(const hark_origin_check *check, const char *origin, size_t origin_len,
                        const char *server_host, size_t server_host_len) {
  if (!origin || check->mode == HARK_ORIGIN_OFF) return 1;

  hark_origin parsed;
  if (hark_origin_parse(origin, origin_len, &parsed) != 0) return 0;

  if (check->mode == HARK_ORIGIN_HOST) {
    /* Scheme and port are not compared: a page served over https on the
     * standard port may open a socket on another port of the same host. */
    return server_host && server_host_len > 0 && strlen(parsed.host) == server_host_len &&
           strncasecmp(parsed.host, server_host, server_host_len) == 0;
  }
  for (size_t i = 0; i < check->allowed_count; i++)
    if (hark_origin_matches(&check->allowed[i], &parsed)) return 1;
  return 0;
}

const char *hark_origin_host_of(const char *value, size_t len, size_t *host_len) {
  if (len > 0 && value[0] == '[') {
    const char *close = memchr(value, ']', len);
    *host_len = close ? (size_t)(close - value - 1) : len - 1;
    return value + 1;
  }
  const char *colon = memchr(value, ':', len);
  *host_len = colon ? (size_t)(colon - value) : len;
  return value;
}

void hark_origin_check_free(hark_origin_check *check) {
  free(check->allowed);
  check->allowed = NULL;
  check->allowed_count = 0;
  check->mode = HARK_ORIGIN_OFF;
}
