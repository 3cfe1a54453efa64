/* Structured logging to stderr: one line per event, with a timestamp, a level,
 * a message name and key=value fields. */
#ifndef HARK_BASE_LOG_H
#define HARK_BASE_LOG_H

#include <stddef.h>

typedef enum hark_log_level {
  HARK_LOG_DEBUG = 0,
  HARK_LOG_INFO = 1,
  HARK_LOG_WARN = 2,
  HARK_LOG_ERROR = 3,
} hark_log_level;

/* Sets the lowest level that is written. The default is HARK_LOG_INFO. */
void hark_log_set_level(hark_log_level level);

/* Parses "debug", "info", "warn" or "error". Returns 0, or -1 for any other name. */
int hark_log_parse_level(const char *name, hark_log_level *level);

int hark_log_enabled(hark_log_level level);

/* Writes `<time> level=<level> msg=<msg> <fields>` and a newline to stderr in
 * one write(2), so lines from several threads never interleave. `fields` is a
 * printf format for the key=value pairs; values that come from clients must go
 * through hark_log_quote first. */
void hark_log_write(hark_log_level level, const char *msg, const char *fields, ...)
    __attribute__((format(printf, 3, 4)));

/* Copies `len` bytes of `s` into `out` as a double-quoted string in which
 * quotes, backslashes and control bytes are escaped, truncating to fit `cap`
 * (cap >= 8). Returns `out`. Used for untrusted values such as topics. */
const char *hark_log_quote(char *out, size_t cap, const char *s, size_t len);

#define HARK_DEBUG(msg, ...) \
  do { if (hark_log_enabled(HARK_LOG_DEBUG)) hark_log_write(HARK_LOG_DEBUG, msg, __VA_ARGS__); } while (0)
#define HARK_INFO(msg, ...) hark_log_write(HARK_LOG_INFO, msg, __VA_ARGS__)
#define HARK_WARN(msg, ...) hark_log_write(HARK_LOG_WARN, msg, __VA_ARGS__)
#define HARK_ERROR(msg, ...) hark_log_write(HARK_LOG_ERROR, msg, __VA_ARGS__)

#endif
