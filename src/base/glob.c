#include "base/glob.h"

#include <string.h>

int hark_glob_match(const char *pattern, const char *text, size_t text_len) {
  size_t pattern_len = strlen(pattern);
  size_t p = 0, t = 0;

  /* On a mismatch after a '*', retry with the star taking one more byte:
   * remembering only the last star suffices for '*' and '?' patterns. */
  size_t star = (size_t)-1, star_text = 0;
  while (t < text_len) {
    if (p < pattern_len && (pattern[p] == '?' || pattern[p] == text[t])) {
      p++;
      t++;
    } else if (p < pattern_len && pattern[p] == '*') {
      star = p++;
      star_text = t;
    } else if (star != (size_t)-1) {
      p = star + 1;
      t = ++star_text;
    } else {
      return 0;
    }
  }
  while (p < pattern_len && pattern[p] == '*') p++;
  return p == pattern_len;
}
