/* URL query strings, as the Phoenix client writes them: key=value pairs
 * joined by '&', percent-encoded, possibly with empty pairs. */
#include <string.h>

#include "server/conn.h"

static int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

int hark_percent_decode(hark_buf *out, const char *s, size_t len, int plus_is_space) {
  for (size_t i = 0; i < len; i++) {
    char c = s[i];
    if (c == '+' && plus_is_space) c = ' ';
    if (c == '%') {
      int hi = i + 1 < len ? hex_value(s[i + 1]) : -1;
      int lo = i + 2 < len ? hex_value(s[i + 2]) : -1;
      if (hi >= 0 && lo >= 0) {
        c = (char)(hi * 16 + lo);
        i += 2;
      }
    }
    if (hark_buf_append_byte(out, c) != 0) return -1;
  }
  return 0;
}

int hark_query_get(const char *query, size_t len, const char *key, hark_buf *out) {
  size_t key_len = strlen(key);
  size_t pos = 0;
  while (pos < len) {
    const char *pair = query + pos;
    const char *amp = memchr(pair, '&', len - pos);
    size_t pair_len = amp ? (size_t)(amp - pair) : len - pos;
    pos += pair_len + 1;
    if (pair_len == 0) continue;

    const char *eq = memchr(pair, '=', pair_len);
    size_t name_len = eq ? (size_t)(eq - pair) : pair_len;
    if (name_len != key_len || memcmp(pair, key, key_len) != 0) continue;

    const char *value = eq ? eq + 1 : pair + pair_len;
    size_t value_len = eq ? pair_len - name_len - 1 : 0;
    return hark_percent_decode(out, value, value_len, 1) == 0 ? 1 : -1;
  }
  return 0;
}
