/* Growable byte buffers, and reference-counted immutable byte blocks that many
 * sockets can write without copying. */
#ifndef HARK_BASE_BUF_H
#define HARK_BASE_BUF_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>

/* A growable buffer. A zeroed struct is an empty buffer; the owner frees
 * `data` with hark_buf_free. `data` is not NUL-terminated unless the caller
 * appends a NUL. */
typedef struct hark_buf {
  char *data;
  size_t len;
  size_t cap;
} hark_buf;

/* Computes the capacity a buffer of capacity `cap` grows to for `need`
 * bytes: doubling, from 64 bytes for an empty one. Returns 0 with *out set,
 * or -1 when the size would overflow. */
int hark_buf_grow_capacity(size_t cap, size_t need, size_t *out);

/* Makes room for `extra` more bytes. Returns 0, or -1 when out of memory. */
int hark_buf_reserve(hark_buf *buf, size_t extra);
int hark_buf_append(hark_buf *buf, const void *data, size_t len);
int hark_buf_append_str(hark_buf *buf, const char *s);
int hark_buf_append_byte(hark_buf *buf, char c);
int hark_buf_printf(hark_buf *buf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Removes the first `n` bytes (n <= len). */
void hark_buf_consume(hark_buf *buf, size_t n);
void hark_buf_reset(hark_buf *buf);
void hark_buf_free(hark_buf *buf);

/* An immutable block of bytes shared by reference count. The creator holds the
 * first reference; whoever drops the last one frees the block. The count is
 * atomic, so references may be dropped on any thread. */
typedef struct hark_shared_bytes {
  atomic_uint refs;
  size_t len;
  char data[];
} hark_shared_bytes;

/* Allocates a block of `len` bytes with one reference, contents undefined.
 * Returns NULL when out of memory. */
hark_shared_bytes *hark_shared_bytes_new(size_t len);
hark_shared_bytes *hark_shared_bytes_ref(hark_shared_bytes *bytes);
void hark_shared_bytes_unref(hark_shared_bytes *bytes);

#endif
