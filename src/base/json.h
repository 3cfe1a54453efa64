/* A small validating JSON scanner. It checks and locates values without
 * building a tree, so that payloads can be forwarded byte for byte. */
#ifndef HARK_BASE_JSON_H
#define HARK_BASE_JSON_H

#include <stddef.h>

#include "base/buf.h"

/* The deepest nesting of arrays and objects that the scanner accepts. */
#define HARK_JSON_MAX_DEPTH 64

/* Returns 1 when [data, data+len) is exactly one valid JSON value (RFC 8259:
 * strings must be valid UTF-8 with valid escapes; surrounding whitespace is
 * allowed; nesting at most HARK_JSON_MAX_DEPTH), else 0. */
int hark_json_valid(const char *data, size_t len);

/* Scans one JSON value starting at data[0] (after optional whitespace).
 * Returns the offset just past the value, or -1 when it is invalid. The
 * value's first byte tells its type: '{', '[', '"', 't', 'f', 'n', or a
 * digit or '-'. */
long hark_json_skip_value(const char *data, size_t len);

/* Looks up the member `key` of the top-level JSON object in data. On success
 * stores the raw text of its value (no surrounding whitespace) and returns 1.
 * Returns 0 when the object has no such member, and -1 when data is not one
 * valid JSON object. A repeated key yields its last occurrence. */
int hark_json_object_get(const char *data, size_t len, const char *key, const char **value,
                         size_t *value_len);

/* Appends the decoded value of the JSON string token [token, token+len)
 * (quotes included) to out. Returns 0, or -1 when the token is not a valid
 * string or memory ran out. */
int hark_json_decode_string(const char *token, size_t len, hark_buf *out);

/* Appends `s` as a JSON string literal, quotes included, escaping '"', '\\'
 * and control characters. `s` must be valid UTF-8. Returns 0 or -1. */
int hark_json_append_string(hark_buf *out, const char *s, size_t len);

#endif
