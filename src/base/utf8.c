#include "base/utf8.h"

#include <stdint.h>
#include <string.h>

/* The high bit of each of 8 bytes: a word with none of them set is ASCII. */
#define HIGH_BITS UINT64_C(0x8080808080808080)

/* Returns the length of the ASCII prefix of [s, s+len). */
static size_t skip_ascii(const unsigned char *s, size_t len) {
  size_t i = 0;

  /* memcpy keeps the 8-byte loads free of alignment and aliasing issues; the
   * compiler turns it into a single load. */
  while (len - i >= 8) {
    uint64_t word;
    memcpy(&word, s + i, sizeof word);
    if (word & HIGH_BITS) break;
    i += 8;
  }

  while (i < len && s[i] < 0x80) i++;
  return i;
}

/* Returns the length of the multi-byte sequence at s[0] (2, 3 or 4 bytes),
 * or 0 when it is not well-formed. `avail` is the number of bytes left.
 * The ranges allowed for the first two bytes come from the table in RFC 3629
 * section 4. They exclude overlongs (C0, C1, E0 80-9F, F0 80-8F), surrogates
 * (ED A0-BF) and code points above U+10FFFF (F4 90-BF, F5-FF). */
static size_t sequence_length(const unsigned char *s, size_t avail) {
  unsigned char lead = s[0];
  size_t need;
  unsigned char low = 0x80;
  unsigned char high = 0xBF;

  if (lead >= 0xC2 && lead <= 0xDF) {
    need = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    need = 3;
    if (lead == 0xE0) low = 0xA0;
    if (lead == 0xED) high = 0x9F;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    need = 4;
    if (lead == 0xF0) low = 0x90;
    if (lead == 0xF4) high = 0x8F;
  } else {
    return 0;
  }

  if (avail < need) return 0;
  if (s[1] < low || s[1] > high) return 0;
  for (size_t i = 2; i < need; i++) {
    if ((s[i] & 0xC0) != 0x80) return 0;
  }
  return need;
}

int hark_utf8_valid(const char *s, size_t len) {
  const unsigned char *bytes = (const unsigned char *)s;
  size_t i = 0;

  while (i < len) {
    i += skip_ascii(bytes + i, len - i);
    if (i == len) break;

    size_t n = sequence_length(bytes + i, len - i);
    if (n == 0) return 0;
    i += n;
  }
  return 1;
}
