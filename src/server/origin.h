/* The WebSocket origin check (check_origin): which pages may open a socket.
 * A browser sends the page's origin in the Origin header; other clients send
 * none, and a request without one is always allowed, because the check guards
 * browsers against cross-site WebSocket hijacking, not against other
 * programs. */
#ifndef HARK_SERVER_ORIGIN_H
#define HARK_SERVER_ORIGIN_H

#include <stddef.h>

#define HARK_ORIGIN_MAX_SCHEME 32
#define HARK_ORIGIN_MAX_HOST 255

/* A parsed origin, or an entry of the allowed list. Strings are lower case;
 * an IPv6 host is kept without its brackets. In an entry, an empty scheme
 * and a port of -1 match anything, and `any_subdomain` means the entry was
 * written "*.HOST", which matches HOST and every name that ends in ".HOST". */
typedef struct hark_origin {
  char scheme[HARK_ORIGIN_MAX_SCHEME + 1];
  char host[HARK_ORIGIN_MAX_HOST + 1];
  int port;
  int any_subdomain;
} hark_origin;

typedef enum hark_origin_mode {
  HARK_ORIGIN_OFF = 0,   /* check_origin false: every origin is allowed */
  HARK_ORIGIN_HOST = 1,  /* check_origin true: the origin's host must be the server's host */
  HARK_ORIGIN_LIST = 2,  /* check_origin [...]: the origin must match an entry */
} hark_origin_mode;

typedef struct hark_origin_check {
  hark_origin_mode mode;
  hark_origin *allowed;  /* owned array, for HARK_ORIGIN_LIST */
  size_t allowed_count;
} hark_origin_check;

/* Parses an Origin header value, "scheme://host[:port]". Without a port, http
 * and ws mean 80, https and wss mean 443, and other schemes leave the port at
 * -1. Returns 0, or -1 for anything else, including the value "null" that
 * browsers send for sandboxed pages and local files. */
int hark_origin_parse(const char *text, size_t len, hark_origin *out);

/* Parses an entry of the allowed list: "scheme://host[:port]" or
 * "//host[:port]", where the host may start with "*.". A missing scheme or
 * port matches any, except that a scheme with a known default port (see
 * hark_origin_parse) implies that port, as in the origin itself. Returns 0, or
 * -1 with *error set to a static reason, for example when the entry has no
 * host. */
int hark_origin_parse_entry(const char *text, hark_origin *out, const char **error);

/* Returns 1 when `origin` matches the list entry `allowed`, else 0. */
int hark_origin_matches(const hark_origin *allowed, const hark_origin *origin);

/* Decides whether a WebSocket request may go on. `origin` is the Origin
 * header (NULL when absent). `server_host` is the host the server is known
 * by, without a port, used in HARK_ORIGIN_HOST mode; NULL or empty there
 * means no origin can match. Returns 1 to allow, 0 to reject. */
int hark_origin_allowed(const hark_origin_check *check, const char *origin, size_t origin_len,
                        const char *server_host, size_t server_host_len);

/* Returns the host part of a Host header value ("example.com:4000",
 * "[::1]:4000"): sets *host_len and returns a pointer into `value`. IPv6
 * brackets are removed. */
const char *hark_origin_host_of(const char *value, size_t len, size_t *host_len);

void hark_origin_check_free(hark_origin_check *check);

#endif
