#include "tracker/pool.h"

#include <stdlib.h>
#include <sys/mman.h>

#if defined(__SANITIZE_ADDRESS__)
#define POOL_USES_MALLOC 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define POOL_USES_MALLOC 1
#endif
#endif
#ifndef POOL_USES_MALLOC
#define POOL_USES_MALLOC 0
#endif

#define FIRST_CHUNK_SIZE ((size_t)64 << 10)
/* Chunks stop growing at 1 MiB. In bench_tracker, 2 MiB chunks on huge
 * pages made a large merge faster but creating states and extracting slower
 * and far less steady, because the kernel zeroes each fresh huge page whole. */
#define MAX_CHUNK_SIZE ((size_t)1 << 20)
#define HUGE_PAGE_SIZE ((size_t)2 << 20)

/* The chunk header: the link to the previous chunk, padded so that blocks
 * stay 16-byte aligned (malloc returns 16-byte aligned memory). */
#define CHUNK_HEADER HARK__POOL_GRAIN

static size_t class_of(size_t size) {
  return (size + HARK__POOL_GRAIN - 1) / HARK__POOL_GRAIN - 1;
}

/* Allocates the next chunk and makes it the current one. The rest of the old
 * chunk stays unused: it is smaller than the block that did not fit. */
static int add_chunk(hark__pool *pool) {
  size_t size = pool->chunk_size ? pool->chunk_size : FIRST_CHUNK_SIZE;
  char *chunk = malloc(size);
  if (chunk == NULL) return -1;

  *(void **)chunk = pool->chunks;
  pool->chunks = chunk;
  pool->next = chunk + CHUNK_HEADER;
  pool->end = chunk + size;
  pool->chunk_size = size < MAX_CHUNK_SIZE ? size * 2 : size;
  return 0;
}

void *hark__pool_alloc(hark__pool *pool, size_t size) {
  if (POOL_USES_MALLOC || size > HARK__POOL_MAX_BLOCK) return malloc(size ? size : 1);
  if (size == 0) size = 1;

  size_t class = class_of(size);
  void *block = pool->free_lists[class];
  if (block != NULL) {
    pool->free_lists[class] = *(void **)block;
    return block;
  }

  size_t rounded = (class + 1) * HARK__POOL_GRAIN;
  if ((size_t)(pool->end - pool->next) < rounded && add_chunk(pool) != 0) return NULL;
  block = pool->next;
  pool->next += rounded;
  return block;
}

void hark__pool_free(hark__pool *pool, void *block, size_t size) {
  if (block == NULL) return;
  if (POOL_USES_MALLOC || size > HARK__POOL_MAX_BLOCK) {
    free(block);
    return;
  }
  if (size == 0) size = 1;

  size_t class = class_of(size);
  *(void **)block = pool->free_lists[class];
  pool->free_lists[class] = block;
}

void hark__pool_destroy(hark__pool *pool) {
  void *chunk = pool->chunks;
  while (chunk != NULL) {
    void *previous = *(void **)chunk;
    free(chunk);
    chunk = previous;
  }
  *pool = (hark__pool){0};
}

void *hark__alloc_huge(size_t size) {
  size_t rounded = (size + HUGE_PAGE_SIZE - 1) & ~(HUGE_PAGE_SIZE - 1);
  void *data = aligned_alloc(HUGE_PAGE_SIZE, rounded);
#ifdef MADV_HUGEPAGE
  /* Only advice: without transparent huge pages the memory still works. */
  if (data != NULL) madvise(data, rounded, MADV_HUGEPAGE);
#endif
  return data;
}
