#include "base/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_int min_level = HARK_LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void hark_log_set_level(hark_log_level level) { atomic_store(&min_level, (int)level); }

int hark_log_parse_level(const char *name, hark_log_level *level) {
  for (int i = 0; i < 4; i++) {
    if (strcmp(name, level_names[i]) == 0) {
      *level = (hark_log_level)i;
      return 0;
    }
  }
  return -1;
}

int hark_log_enabled(hark_log_level level) { return (int)level >= atomic_load(&min_level); }

void hark_log_write(hark_log_level level, const char *msg, const char *fields, ...) {
  if (!hark_log_enabled(level)) return;

  char line[2048];
  struct timespec now;
  struct tm utc;
  clock_gettime(CLOCK_REALTIME, &now);
  gmtime_r(&now.tv_sec, &utc);
  int n = (int)strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &utc);
  n += snprintf(line + n, sizeof line - (size_t)n, ".%03ldZ level=%s msg=%s ",
                now.tv_nsec / 1000000, level_names[level], msg);

  va_list args;
  va_start(args, fields);
  int written = vsnprintf(line + n, sizeof line - (size_t)n, fields, args);
  va_end(args);

  /* A line that did not fit is cut, and still ends with a newline. */
  size_t len = (size_t)n + (written > 0 ? (size_t)written : 0);
  if (len > sizeof line - 1) len = sizeof line - 1;
  line[len++] = '\n';
  ssize_t ignored = write(STDERR_FILENO, line, len);
  (void)ignored;
}

const char *hark_log_quote(char *out, size_t cap, const char *s, size_t len) {
  static const char hex[] = "0123456789abcdef";
  size_t o = 0;
  out[o++] = '"';

  /* Keep room for a 4-byte escape, "...", the closing quote and the NUL. */
  for (size_t i = 0; i < len; i++) {
    if (o + 9 > cap) {
      memcpy(out + o, "...", 3);
      o += 3;
      break;
    }
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      out[o++] = '\\';
      out[o++] = (char)c;
    } else if (c < 0x20 || c == 0x7f) {
      out[o++] = '\\';
      out[o++] = 'x';
      out[o++] = hex[c >> 4];
      out[o++] = hex[c & 15];
    } else {
      out[o++] = (char)c;
    }
  }
  out[o++] = '"';
  out[o] = '\0';
  return out;
}
