/* Strict UTF-8 validation (RFC 3629). */
#ifndef HARK_BASE_UTF8_H
#define HARK_BASE_UTF8_H

#include <stddef.h>

/* Returns 1 when the `len` bytes at `s` are well-formed UTF-8, else 0.
 * Overlong encodings, UTF-16 surrogates (U+D800 to U+DFFF), code points above
 * U+10FFFF and truncated sequences are invalid. NUL bytes are valid. */
int hark_utf8_valid(const char *s, size_t len);

#endif
