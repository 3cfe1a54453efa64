/* Glob patterns for topics: '*' matches any run of bytes (including none and
 * including ':'), '?' matches one byte, and every other byte matches itself.
 * There are no character classes and no escapes. */
#ifndef HARK_BASE_GLOB_H
#define HARK_BASE_GLOB_H

#include <stddef.h>

/* Returns 1 when `text` matches `pattern` (a NUL-terminated string), else 0.
 * Runs in O(pattern length x text length) at worst, with no recursion. */
int hark_glob_match(const char *pattern, const char *text, size_t text_len);

#endif
