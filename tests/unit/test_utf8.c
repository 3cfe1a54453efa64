/* Unit tests for the strict UTF-8 validator. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/utf8.h"

typedef struct utf8_case {
  const char *name;
  const char *bytes;
  size_t len;
} utf8_case;

#define CASE(name, literal) {name, literal, sizeof(literal) - 1}

static void utf8_accepts_valid_text(void **state) {
  (void)state;
  static const utf8_case cases[] = {
      CASE("empty", ""),
      CASE("ascii", "hello, world"),
      CASE("nul byte", "a\0b"),
      CASE("U+0080, smallest 2-byte", "\xC2\x80"),
      CASE("U+07FF, largest 2-byte", "\xDF\xBF"),
      CASE("U+0800, smallest 3-byte", "\xE0\xA0\x80"),
      CASE("U+D7FF, below the surrogates", "\xED\x9F\xBF"),
      CASE("U+E000, above the surrogates", "\xEE\x80\x80"),
      CASE("U+FFFD replacement character", "\xEF\xBF\xBD"),
      CASE("U+FFFF noncharacter", "\xEF\xBF\xBF"),
      CASE("U+10000, smallest 4-byte", "\xF0\x90\x80\x80"),
      CASE("U+10FFFF, largest code point", "\xF4\x8F\xBF\xBF"),
      CASE("greek", "\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5"),
      CASE("emoji between ascii", "abcdefgh\xF0\x9F\x98\x80ijklmnopq"),
  };

  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    if (!hark_utf8_valid(cases[i].bytes, cases[i].len)) fail_msg("rejected: %s", cases[i].name);
  }
}

static void utf8_rejects_invalid_text(void **state) {
  (void)state;
  static const utf8_case cases[] = {
      CASE("lone continuation byte", "\x80"),
      CASE("continuation byte after ascii", "abc\xBF"),
      CASE("overlong '/' in 2 bytes", "\xC0\xAF"),
      CASE("overlong U+007F in 2 bytes", "\xC1\xBF"),
      CASE("overlong U+07FF in 3 bytes", "\xE0\x9F\xBF"),
      CASE("overlong U+FFFF in 4 bytes", "\xF0\x8F\xBF\xBF"),
      CASE("overlong NUL in 3 bytes", "\xE0\x80\x80"),
      CASE("surrogate U+D800", "\xED\xA0\x80"),
      CASE("surrogate U+DFFF", "\xED\xBF\xBF"),
      CASE("surrogate pair as two sequences", "\xED\xA0\x80\xED\xB0\x80"),
      CASE("U+110000, above the maximum", "\xF4\x90\x80\x80"),
      CASE("lead byte F5", "\xF5\x80\x80\x80"),
      CASE("lead byte FF", "\xFF"),
      CASE("lead byte FE", "\xFE"),
      CASE("5-byte form", "\xF8\x88\x80\x80\x80"),
      CASE("truncated 2-byte at end", "ab\xC2"),
      CASE("truncated 3-byte at end", "ab\xE2\x82"),
      CASE("truncated 4-byte at end", "ab\xF0\x9F\x98"),
      CASE("2-byte lead followed by ascii", "\xC2" "A"),
      CASE("3-byte with ascii third byte", "\xE2\x82" "A"),
      CASE("4-byte with ascii fourth byte", "\xF0\x9F\x98" "A"),
      CASE("valid then invalid", "\xCE\xBA\xE1\xBD\xB9\xCF\x83\xCE\xBC\xCE\xB5\xED\xA0\x80" "tail"),
  };

  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    if (hark_utf8_valid(cases[i].bytes, cases[i].len)) fail_msg("accepted: %s", cases[i].name);
  }
}

/* The 8-byte ASCII fast path must not skip a non-ASCII byte in any position,
 * whatever the alignment of the input. */
static void utf8_checks_every_byte_position(void **state) {
  (void)state;
  char text[64];

  for (size_t bad = 0; bad < 40; bad++) {
    for (size_t start = 0; start < 8; start++) {
      memset(text, 'a', sizeof text);
      text[start + bad] = (char)0x80;
      assert_int_equal(hark_utf8_valid(text + start, 48), 0);

      text[start + bad] = (char)0xC3;
      text[start + bad + 1] = (char)0xA9;
      assert_int_equal(hark_utf8_valid(text + start, 48), 1);
    }
  }
}

static void utf8_checks_only_given_length(void **state) {
  (void)state;
  const char text[] = "abc\xFF";

  assert_int_equal(hark_utf8_valid(text, 3), 1);
  assert_int_equal(hark_utf8_valid(text, 4), 0);
  assert_int_equal(hark_utf8_valid("\xE2\x82\xAC", 2), 0);
  assert_int_equal(hark_utf8_valid("\xE2\x82\xAC", 3), 1);
}

/* Every code point from U+0000 to U+10FFFF, encoded by hand, must be
 * accepted except the surrogates, which must be rejected. */
static void utf8_agrees_on_all_code_points(void **state) {
  (void)state;
  unsigned char bytes[4];

  for (uint32_t cp = 0; cp <= 0x10FFFF; cp++) {
    size_t n;
    if (cp < 0x80) {
      bytes[0] = (unsigned char)cp;
      n = 1;
    } else if (cp < 0x800) {
      bytes[0] = (unsigned char)(0xC0 | (cp >> 6));
      bytes[1] = (unsigned char)(0x80 | (cp & 0x3F));
      n = 2;
    } else if (cp < 0x10000) {
      bytes[0] = (unsigned char)(0xE0 | (cp >> 12));
      bytes[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
      bytes[2] = (unsigned char)(0x80 | (cp & 0x3F));
      n = 3;
    } else {
      bytes[0] = (unsigned char)(0xF0 | (cp >> 18));
      bytes[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
      bytes[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
      bytes[3] = (unsigned char)(0x80 | (cp & 0x3F));
      n = 4;
    }

    int expected = !(cp >= 0xD800 && cp <= 0xDFFF);
    if (hark_utf8_valid((const char *)bytes, n) != expected) {
      fail_msg("U+%04X: expected %d", (unsigned)cp, expected);
    }
  }
}

/* A slow reference: decodes each sequence into its code point and then checks
 * the value, where hark_utf8_valid checks byte ranges instead. */
static int reference_valid(const unsigned char *s, size_t len) {
  size_t i = 0;

  while (i < len) {
    unsigned char lead = s[i];
    size_t n;
    uint32_t cp;
    uint32_t min;

    if (lead < 0x80) {
      i++;
      continue;
    } else if ((lead & 0xE0) == 0xC0) {
      n = 2;
      cp = lead & 0x1F;
      min = 0x80;
    } else if ((lead & 0xF0) == 0xE0) {
      n = 3;
      cp = lead & 0x0F;
      min = 0x800;
    } else if ((lead & 0xF8) == 0xF0) {
      n = 4;
      cp = lead & 0x07;
      min = 0x10000;
    } else {
      return 0;
    }

    if (len - i < n) return 0;
    for (size_t k = 1; k < n; k++) {
      if ((s[i + k] & 0xC0) != 0x80) return 0;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    i += n;
  }
  return 1;
}

/* Compares with the reference on every string of 1 to 3 bytes, and on 4-byte
 * strings with every first and second byte and a sample of the others. */
static void utf8_matches_reference_exhaustively(void **state) {
  (void)state;
  unsigned char b[4];

  for (uint32_t v = 0; v < (1u << 24); v++) {
    b[0] = (unsigned char)(v >> 16);
    b[1] = (unsigned char)(v >> 8);
    b[2] = (unsigned char)v;
    for (size_t n = 1; n <= 3; n++) {
      if (n < 3 && (v & 0xFF) != 0) continue;
      if (n < 2 && (v & 0xFFFF) != 0) continue;
      if (hark_utf8_valid((const char *)b, n) != reference_valid(b, n)) {
        fail_msg("mismatch on %zu bytes %02X %02X %02X", n, b[0], b[1], b[2]);
      }
    }
  }

  static const unsigned char samples[] = {0x00, 0x41, 0x7F, 0x80, 0xBF, 0xC0, 0xF4, 0xFF};
  for (uint32_t v = 0; v < (1u << 16); v++) {
    for (size_t x = 0; x < sizeof samples; x++) {
      for (size_t y = 0; y < sizeof samples; y++) {
        b[0] = (unsigned char)(v >> 8);
        b[1] = (unsigned char)v;
        b[2] = samples[x];
        b[3] = samples[y];
        if (hark_utf8_valid((const char *)b, 4) != reference_valid(b, 4)) {
          fail_msg("mismatch on 4 bytes %02X %02X %02X %02X", b[0], b[1], b[2], b[3]);
        }
      }
    }
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(utf8_accepts_valid_text),
      cmocka_unit_test(utf8_rejects_invalid_text),
      cmocka_unit_test(utf8_checks_every_byte_position),
      cmocka_unit_test(utf8_checks_only_given_length),
      cmocka_unit_test(utf8_agrees_on_all_code_points),
      cmocka_unit_test(utf8_matches_reference_exhaustively),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
