/* A small cache of the demo page's files. Each request still stats the
 * file, so an edited page is served fresh without a restart. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "server/conn.h"

#define MAX_STATIC_FILE_BYTES (4 * 1024 * 1024)

static int64_t mtime_ns(const struct stat *st) {
  return (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

/* Reads a whole regular file of `size` bytes into a new shared block. */
static hark_shared_bytes *read_file(const char *path, size_t size) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  hark_shared_bytes *body = hark_shared_bytes_new(size);
  if (body && size > 0 && fread(body->data, 1, size, f) != size) {
    hark_shared_bytes_unref(body);
    body = NULL;
    errno = EIO;
  }
  fclose(f);
  return body;
}

static hark_static_file *find_slot(hark_server *server, const char *path) {
  hark_static_file *free_slot = NULL;
  for (int i = 0; i < HARK_STATIC_CACHE_SLOTS; i++) {
    hark_static_file *slot = &server->static_files[i];
    if (slot->path && strcmp(slot->path, path) == 0) return slot;
    if (!slot->path && !free_slot) free_slot = slot;
  }
  /* All slots taken: reuse the first one. The demo page has a handful of
   * files, so this only happens if the web root is much larger. */
  return free_slot ? free_slot : &server->static_files[0];
}

static void slot_clear(hark_static_file *slot) {
  free(slot->path);
  hark_shared_bytes_unref(slot->body);
  *slot = (hark_static_file){0};
}

hark_shared_bytes *hark_static_file_get(hark_server *server, const char *path) {
  struct stat st;
  if (stat(path, &st) != 0) return NULL;
  if (!S_ISREG(st.st_mode) || st.st_size > MAX_STATIC_FILE_BYTES) {
    errno = S_ISREG(st.st_mode) ? EFBIG : ENOENT;
    return NULL;
  }

  hark_static_file *slot = find_slot(server, path);
  if (slot->path && strcmp(slot->path, path) == 0 && slot->size == st.st_size &&
      slot->mtime_ns == mtime_ns(&st))
    return hark_shared_bytes_ref(slot->body);

  hark_shared_bytes *body = read_file(path, (size_t)st.st_size);
  if (!body) return NULL;
  slot_clear(slot);
  slot->path = strdup(path);
  if (!slot->path) return body;
  slot->body = hark_shared_bytes_ref(body);
  slot->size = st.st_size;
  slot->mtime_ns = mtime_ns(&st);
  return body;
}

void hark_static_files_free(hark_server *server) {
  for (int i = 0; i < HARK_STATIC_CACHE_SLOTS; i++) slot_clear(&server->static_files[i]);
}
