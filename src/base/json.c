#include "base/json.h"

#include <string.h>

#include "base/utf8.h"

/* The scanner is iterative: nesting is tracked in a fixed stack of
 * HARK_JSON_MAX_DEPTH entries, so hostile input such as a megabyte of '['
 * costs no C stack and is rejected at depth HARK_JSON_MAX_DEPTH + 1. */

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

static int is_digit(char c) { return c >= '0' && c <= '9'; }

static size_t skip_space(const char *data, size_t len, size_t pos) {
  while (pos < len && is_space(data[pos])) pos++;
  return pos;
}

static int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Reads the 4 hex digits at data[pos]. Returns the code unit, or -1. */
static long read_hex4(const char *data, size_t len, size_t pos) {
  if (len - pos < 4) return -1;

  long unit = 0;
  for (size_t i = 0; i < 4; i++) {
    int digit = hex_value(data[pos + i]);
    if (digit < 0) return -1;
    unit = unit * 16 + digit;
  }
  return unit;
}

static int is_high_surrogate(long unit) { return unit >= 0xD800 && unit <= 0xDBFF; }

static int is_low_surrogate(long unit) { return unit >= 0xDC00 && unit <= 0xDFFF; }

/* Reads the \u escape whose 'u' is at data[pos], plus the low half when it
 * starts a surrogate pair. Stores the code point and returns the offset just
 * past the escape, or 0 when the escape is invalid or a surrogate is unpaired. */
static size_t read_unicode_escape(const char *data, size_t len, size_t pos, long *code_point) {
  long unit = read_hex4(data, len, pos + 1);
  if (unit < 0 || is_low_surrogate(unit)) return 0;
  pos += 5;

  if (!is_high_surrogate(unit)) {
    *code_point = unit;
    return pos;
  }

  if (len - pos < 6 || data[pos] != '\\' || data[pos + 1] != 'u') return 0;
  long low = read_hex4(data, len, pos + 2);
  if (!is_low_surrogate(low)) return 0;

  *code_point = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
  return pos + 6;
}

/* Returns the length of the run of plain string bytes at data[pos]: bytes
 * that are not '"', '\\' or a control character. */
static size_t plain_run(const char *data, size_t len, size_t pos) {
  size_t end = pos;
  while (end < len) {
    unsigned char c = (unsigned char)data[end];
    if (c == '"' || c == '\\' || c < 0x20) break;
    end++;
  }
  return end - pos;
}

/* Scans the string whose opening quote is at data[pos]. Returns the offset
 * past the closing quote, or 0 when the string is invalid. Runs of plain bytes
 * are checked as UTF-8 as a whole: no byte of a multi-byte sequence can be a
 * quote, a backslash or a control character, so a run never splits a valid
 * sequence. */
static size_t scan_string(const char *data, size_t len, size_t pos) {
  pos++;
  for (;;) {
    size_t run = plain_run(data, len, pos);
    if (!hark_utf8_valid(data + pos, run)) return 0;
    pos += run;
    if (pos >= len) return 0;

    char c = data[pos];
    if (c == '"') return pos + 1;
    if (c != '\\' || pos + 1 >= len) return 0;

    char escape = data[pos + 1];
    if (escape == 'u') {
      long code_point;
      pos = read_unicode_escape(data, len, pos + 1, &code_point);
      if (pos == 0) return 0;
    } else if (strchr("\"\\/bfnrt", escape) != NULL && escape != '\0') {
      pos += 2;
    } else {
      return 0;
    }
  }
}

static size_t scan_digits(const char *data, size_t len, size_t pos) {
  while (pos < len && is_digit(data[pos])) pos++;
  return pos;
}

/* Scans the number at data[pos]: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
 * Returns the offset past it, or 0 when it is invalid. */
static size_t scan_number(const char *data, size_t len, size_t pos) {
  if (pos < len && data[pos] == '-') pos++;
  if (pos >= len || !is_digit(data[pos])) return 0;
  pos = data[pos] == '0' ? pos + 1 : scan_digits(data, len, pos);

  if (pos < len && data[pos] == '.') {
    size_t start = ++pos;
    pos = scan_digits(data, len, pos);
    if (pos == start) return 0;
  }

  if (pos < len && (data[pos] == 'e' || data[pos] == 'E')) {
    pos++;
    if (pos < len && (data[pos] == '+' || data[pos] == '-')) pos++;
    size_t start = pos;
    pos = scan_digits(data, len, pos);
    if (pos == start) return 0;
  }
  return pos;
}

static size_t scan_literal(const char *data, size_t len, size_t pos, const char *word) {
  size_t n = strlen(word);
  if (len - pos < n || memcmp(data + pos, word, n) != 0) return 0;
  return pos + n;
}

/* Scans a string, number or literal at data[pos]. Returns the offset past it,
 * or 0 when it is invalid. */
static size_t scan_scalar(const char *data, size_t len, size_t pos) {
  switch (data[pos]) {
  case '"':
    return scan_string(data, len, pos);
  case 't':
    return scan_literal(data, len, pos, "true");
  case 'f':
    return scan_literal(data, len, pos, "false");
  case 'n':
    return scan_literal(data, len, pos, "null");
  default:
    return scan_number(data, len, pos);
  }
}

/* Scans `"key" :` with whitespace around the colon, starting at a key's
 * opening quote. Returns the offset past the colon and its trailing
 * whitespace, or 0. */
static size_t scan_member_key(const char *data, size_t len, size_t pos) {
  if (pos >= len || data[pos] != '"') return 0;
  pos = scan_string(data, len, pos);
  if (pos == 0) return 0;

  pos = skip_space(data, len, pos);
  if (pos >= len || data[pos] != ':') return 0;
  return skip_space(data, len, pos + 1);
}

/* Scans one value of any type starting exactly at data[pos] (no leading
 * whitespace). Returns the offset past it, or 0 when it is invalid.
 *
 * `open` contains the closing bracket expected at each open level. The loop
 * alternates between reading a value (after which the position is just past
 * it) and reading what follows it inside the enclosing container. */
static size_t scan_value(const char *data, size_t len, size_t pos) {
  char open[HARK_JSON_MAX_DEPTH];
  size_t depth = 0;

  for (;;) {
    /* Read a value, descending into containers. */
    if (pos >= len) return 0;
    char c = data[pos];
    if (c == '[' || c == '{') {
      if (depth == HARK_JSON_MAX_DEPTH) return 0;
      open[depth++] = c == '[' ? ']' : '}';
      pos = skip_space(data, len, pos + 1);
      if (pos < len && data[pos] == open[depth - 1]) {
        depth--;
        pos++;
      } else {
        if (c == '{' && (pos = scan_member_key(data, len, pos)) == 0) return 0;
        continue;
      }
    } else {
      pos = scan_scalar(data, len, pos);
      if (pos == 0) return 0;
    }

    /* Close finished containers until a ',' starts the next value. */
    for (;;) {
      if (depth == 0) return pos;
      pos = skip_space(data, len, pos);
      if (pos >= len) return 0;
      if (data[pos] == open[depth - 1]) {
        depth--;
        pos++;
        continue;
      }
      if (data[pos] != ',') return 0;

      pos = skip_space(data, len, pos + 1);
      if (open[depth - 1] == '}' && (pos = scan_member_key(data, len, pos)) == 0) return 0;
      break;
    }
  }
}

int hark_json_valid(const char *data, size_t len) {
  size_t pos = skip_space(data, len, 0);
  pos = scan_value(data, len, pos);
  if (pos == 0) return 0;
  return skip_space(data, len, pos) == len;
}

long hark_json_skip_value(const char *data, size_t len) {
  size_t pos = skip_space(data, len, 0);
  pos = scan_value(data, len, pos);
  return pos == 0 ? -1 : (long)pos;
}

/* Appends code point `cp` (at most U+10FFFF, no surrogate) as UTF-8 to a
 * buffer that already has room for 4 more bytes. */
static void put_utf8(hark_buf *out, long cp) {
  char *p = out->data + out->len;
  size_t n;

  if (cp < 0x80) {
    p[0] = (char)cp;
    n = 1;
  } else if (cp < 0x800) {
    p[0] = (char)(0xC0 | (cp >> 6));
    p[1] = (char)(0x80 | (cp & 0x3F));
    n = 2;
  } else if (cp < 0x10000) {
    p[0] = (char)(0xE0 | (cp >> 12));
    p[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    p[2] = (char)(0x80 | (cp & 0x3F));
    n = 3;
  } else {
    p[0] = (char)(0xF0 | (cp >> 18));
    p[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    p[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    p[3] = (char)(0x80 | (cp & 0x3F));
    n = 4;
  }
  out->len += n;
}

/* Returns the byte that a one-letter escape such as \n decodes to. */
static char short_escape_value(char escape) {
  switch (escape) {
  case 'b':
    return '\b';
  case 'f':
    return '\f';
  case 'n':
    return '\n';
  case 'r':
    return '\r';
  case 't':
    return '\t';
  default: /* '"', '\\' and '/' decode to themselves. */
    return escape;
  }
}

int hark_json_decode_string(const char *token, size_t len, hark_buf *out) {
  if (len < 2 || token[0] != '"' || scan_string(token, len, 0) != len) return -1;

  /* Decoding never lengthens the text: an escape of 2, 6 or 12 bytes becomes
   * 1, at most 3, or 4 bytes. So one reservation covers every write below. */
  if (hark_buf_reserve(out, len) != 0) return -1;

  size_t pos = 1;
  size_t end = len - 1;
  while (pos < end) {
    size_t run = plain_run(token, end, pos);
    memcpy(out->data + out->len, token + pos, run);
    out->len += run;
    pos += run;
    if (pos >= end) break;

    /* token[pos] is a backslash: the scan above accepted every escape. */
    if (token[pos + 1] == 'u') {
      long code_point = 0;
      pos = read_unicode_escape(token, end, pos + 1, &code_point);
      put_utf8(out, code_point);
    } else {
      out->data[out->len++] = short_escape_value(token[pos + 1]);
      pos += 2;
    }
  }
  return 0;
}

/* Returns the escape for byte c (without the backslash) when c needs one in
 * a JSON string, as a letter, 'u' for \u00XX, or 0 when c is written as is. */
static char escape_letter(unsigned char c) {
  switch (c) {
  case '"':
    return '"';
  case '\\':
    return '\\';
  case '\b':
    return 'b';
  case '\f':
    return 'f';
  case '\n':
    return 'n';
  case '\r':
    return 'r';
  case '\t':
    return 't';
  default:
    return c < 0x20 ? 'u' : 0;
  }
}

/* Returns the length of `s` once escaped, quotes included. */
static size_t escaped_length(const char *s, size_t len) {
  size_t total = len + 2;
  for (size_t i = 0; i < len; i++) {
    char letter = escape_letter((unsigned char)s[i]);
    if (letter == 'u') {
      total += 5; /* \u00XX replaces one byte */
    } else if (letter != 0) {
      total += 1;
    }
  }
  return total;
}

/* Reserves exactly the escaped length, so a caller that reserved at least
 * 6 * len + 2 bytes beforehand may pass `s` pointing into `out` itself. */
int hark_json_append_string(hark_buf *out, const char *s, size_t len) {
  static const char hex[] = "0123456789abcdef";

  if (!hark_utf8_valid(s, len)) return -1;
  if (hark_buf_reserve(out, escaped_length(s, len)) != 0) return -1;

  char *p = out->data + out->len;
  *p++ = '"';
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    char letter = escape_letter(c);
    if (letter == 0) {
      *p++ = (char)c;
    } else if (letter == 'u') {
      memcpy(p, "\\u00", 4);
      p[4] = hex[c >> 4];
      p[5] = hex[c & 0xF];
      p += 6;
    } else {
      p[0] = '\\';
      p[1] = letter;
      p += 2;
    }
  }
  *p++ = '"';

  out->len = (size_t)(p - out->data);
  return 0;
}

/* Returns 1 when the valid string token [token, token+len) decodes to exactly
 * the `key_len` bytes of `key`. Decodes one escape at a time, so no memory is
 * needed. */
static int string_token_equals(const char *token, size_t len, const char *key, size_t key_len) {
  size_t pos = 1;
  size_t end = len - 1;
  size_t matched = 0;

  while (pos < end) {
    size_t run = plain_run(token, end, pos);
    if (run > key_len - matched || memcmp(token + pos, key + matched, run) != 0) return 0;
    matched += run;
    pos += run;
    if (pos >= end) break;

    char bytes[4];
    hark_buf decoded = {bytes, 0, sizeof bytes};
    if (token[pos + 1] == 'u') {
      long code_point = 0;
      pos = read_unicode_escape(token, end, pos + 1, &code_point);
      put_utf8(&decoded, code_point);
    } else {
      bytes[decoded.len++] = short_escape_value(token[pos + 1]);
      pos += 2;
    }
    if (decoded.len > key_len - matched || memcmp(bytes, key + matched, decoded.len) != 0) return 0;
    matched += decoded.len;
  }
  return matched == key_len;
}

int hark_json_object_get(const char *data, size_t len, const char *key, const char **value,
                         size_t *value_len) {
  if (!hark_json_valid(data, len)) return -1;
  size_t pos = skip_space(data, len, 0);
  if (data[pos] != '{') return -1;

  /* The whole text is valid, so each step below only locates tokens. */
  size_t key_len = strlen(key);
  int found = 0;
  pos = skip_space(data, len, pos + 1);
  while (data[pos] != '}') {
    size_t key_end = scan_string(data, len, pos);
    int is_match = string_token_equals(data + pos, key_end - pos, key, key_len);
    size_t value_start = skip_space(data, len, skip_space(data, len, key_end) + 1);
    size_t value_end = scan_value(data, len, value_start);

    if (is_match) {
      *value = data + value_start;
      *value_len = value_end - value_start;
      found = 1;
    }

    pos = skip_space(data, len, value_end);
    if (data[pos] == ',') pos = skip_space(data, len, pos + 1);
  }
  return found;
}
