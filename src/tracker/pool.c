#include "tracker/pool.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
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

/* The chunk header: the link to the previous chunk and the chunk's size, so
 * that blocks stay 16-byte aligned (malloc returns 16-byte aligned memory). */
#define CHUNK_HEADER HARK__POOL_GRAIN

/* The freed memory that the cache keeps at most. */
#define CACHE_MAX_BYTES ((size_t)128 << 20)
#define CACHE_MIN_SIZE FIRST_CHUNK_SIZE
#define CACHE_CLASSES 16

/* Memory that destroyed pools and freed huge arrays gave back, kept for the
 * next ones. Fresh memory costs a page fault and the kernel's zeroing per
 * page. In bench_tracker these took about a third of a large merge, because
 * glibc returned the previous state's memory to the kernel. The lists hold
 * blocks whose size is CACHE_MIN_SIZE << class, linked through their first
 * word. Every state of the process shares the cache, so a spin lock guards
 * it. The lock is taken once per chunk or array, not per block. */
typedef struct block_cache {
  atomic_flag lock;
  void *chunks[CACHE_CLASSES]; /* pool chunks, aligned as malloc aligns */
  void *huge[CACHE_CLASSES];   /* arrays from hark__alloc_huge, aligned to 2 MiB */
  size_t bytes;
} block_cache;

static block_cache cache = {.lock = ATOMIC_FLAG_INIT};

static void cache_lock(void) {
  while (atomic_flag_test_and_set_explicit(&cache.lock, memory_order_acquire)) {
  }
}

static void cache_unlock(void) {
  atomic_flag_clear_explicit(&cache.lock, memory_order_release);
}

/* The class of a block of `size` bytes, or -1 when the cache does not keep
 * blocks of that size. */
static int cache_class(size_t size) {
  for (int class = 0; class < CACHE_CLASSES; class++) {
    if (size == CACHE_MIN_SIZE << class) return class;
  }
  return -1;
}

static void *cache_take(void **lists, size_t size) {
  int class = cache_class(size);
  if (class < 0) return NULL;

  cache_lock();
  void *block = lists[class];
  if (block != NULL) {
    lists[class] = *(void **)block;
    cache.bytes -= size;
  }
  cache_unlock();
  return block;
}

/* Keeps `block` for reuse. Returns false when the cache is full or does not
 * keep that size, and the caller frees the block. */
static bool cache_put(void **lists, void *block, size_t size) {
  /* Under AddressSanitizer freed memory goes back to malloc, so that the
   * sanitizer detects a use after free. */
  int class = cache_class(size);
  if (POOL_USES_MALLOC || class < 0) return false;

  cache_lock();
  bool has_room = cache.bytes + size <= CACHE_MAX_BYTES;
  if (has_room) {
    *(void **)block = lists[class];
    lists[class] = block;
    cache.bytes += size;
  }
  cache_unlock();
  return has_room;
}

static size_t class_of(size_t size) {
  return (size + HARK__POOL_GRAIN - 1) / HARK__POOL_GRAIN - 1;
}

/* Allocates the next chunk and makes it the current one. The rest of the old
 * chunk stays unused: it is smaller than the block that did not fit. */
static int add_chunk(hark__pool *pool) {
  size_t size = pool->chunk_size ? pool->chunk_size : FIRST_CHUNK_SIZE;
  char *chunk = cache_take(cache.chunks, size);
  if (chunk == NULL) chunk = malloc(size);
  if (chunk == NULL) return -1;

  *(void **)chunk = pool->chunks;
  ((size_t *)chunk)[1] = size;
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
    if (!cache_put(cache.chunks, chunk, ((size_t *)chunk)[1])) free(chunk);
    chunk = previous;
  }
  *pool = (hark__pool){0};
}

static size_t huge_rounded(size_t size) {
  return (size + HUGE_PAGE_SIZE - 1) & ~(HUGE_PAGE_SIZE - 1);
}

void *hark__alloc_huge(size_t size) {
  size_t rounded = huge_rounded(size);
  void *cached = cache_take(cache.huge, rounded);
  if (cached != NULL) return cached;

  void *data = aligned_alloc(HUGE_PAGE_SIZE, rounded);
#ifdef MADV_HUGEPAGE
  /* Only advice: without transparent huge pages the memory still works. */
  if (data != NULL) madvise(data, rounded, MADV_HUGEPAGE);
#endif
  return data;
}

void hark__free_huge(void *data, size_t size) {
  if (data == NULL) return;
  if (!cache_put(cache.huge, data, huge_rounded(size))) free(data);
}

void hark__pool_release_cache(void) {
  cache_lock();
  for (int class = 0; class < CACHE_CLASSES; class++) {
    void **lists[] = {&cache.chunks[class], &cache.huge[class]};
    for (size_t i = 0; i < 2; i++) {
      while (*lists[i] != NULL) {
        void *block = *lists[i];
        *lists[i] = *(void **)block;
        free(block);
      }
    }
  }
  cache.bytes = 0;
  cache_unlock();
}

void *hark__realloc_large(void *data, size_t size, size_t used, size_t *new_size, bool *huge) {
  if (!*huge && *new_size < HUGE_PAGE_SIZE) return realloc(data, *new_size);

  size_t rounded = HUGE_PAGE_SIZE;
  while (rounded < *new_size) rounded *= 2;
  void *grown = hark__alloc_huge(rounded);
  if (grown == NULL) return NULL;
  if (used > 0) memcpy(grown, data, used);
  hark__free_large(data, size, *huge);
  *new_size = rounded;
  *huge = true;
  return grown;
}

void hark__free_large(void *data, size_t size, bool huge) {
  if (huge) hark__free_huge(data, size);
  else free(data);
}
