/* A per-state allocator of small blocks (the tracker state's entries and
 * topic records), and the allocation of large randomly accessed arrays on
 * huge pages.
 *
 * Blocks are carved from chunks that the pool owns, so a block costs no
 * malloc header and no call into malloc. Chunks come from malloc and grow
 * from 64 KiB to 1 MiB. A freed block goes on the free list of its size
 * class (multiples of 16 bytes), and the next block of that class reuses it.
 * Chunk memory is released only when the pool is destroyed, into a
 * process-wide cache that the next pools take chunks from (see pool.c).
 * Blocks larger than HARK__POOL_MAX_BLOCK come from malloc and go back to
 * free.
 *
 * Under AddressSanitizer every block comes from malloc, so that the
 * sanitizer still detects a use of a freed entry. The pool is not
 * thread-safe, like the state that owns it. A zeroed struct is an empty
 * pool. */
#ifndef HARK_TRACKER_POOL_H
#define HARK_TRACKER_POOL_H

#include <stdbool.h>
#include <stddef.h>

#define HARK__POOL_GRAIN 16
#define HARK__POOL_CLASSES 64
#define HARK__POOL_MAX_BLOCK (HARK__POOL_GRAIN * HARK__POOL_CLASSES)

typedef struct hark__pool {
  char *next; /* the unused rest of the newest chunk */
  char *end;
  void *chunks;      /* every chunk, linked through its first word */
  size_t chunk_size; /* the size of the next chunk; 0 before the first */
  void *free_lists[HARK__POOL_CLASSES]; /* freed blocks by class, linked through their first word */
} hark__pool;

/* Returns a block of at least `size` bytes aligned to 16, or NULL when out of
 * memory. */
void *hark__pool_alloc(hark__pool *pool, size_t size);

/* Frees a block. `size` is the size it was allocated with, or any size above
 * HARK__POOL_MAX_BLOCK for a block of that kind. */
void hark__pool_free(hark__pool *pool, void *block, size_t size);

/* Frees every chunk, and with them every block from a chunk. The caller
 * frees the blocks larger than HARK__POOL_MAX_BLOCK, and under
 * AddressSanitizer every block, with hark__pool_free first. */
void hark__pool_destroy(hark__pool *pool);

/* Returns `size` bytes aligned to 2 MiB and advised for transparent huge
 * pages, for large arrays that are accessed at random. The memory is not
 * zeroed. Free it with hark__free_huge. Returns NULL when out of memory. */
void *hark__alloc_huge(size_t size);

/* Frees an array from hark__alloc_huge; `size` is the size it was
 * allocated with. */
void hark__free_huge(void *data, size_t size);

/* Grows an array of `size` bytes, of which `used` are in use, to at least
 * *new_size bytes, like realloc. From 2 MiB on, the array moves to a block
 * from hark__alloc_huge of a power-of-two size, which the cache can keep
 * when it is freed. Sets *new_size to the usable size and *huge when the
 * array is such a block. Returns the array, or NULL when out of memory (the
 * old array is unchanged). */
void *hark__realloc_large(void *data, size_t size, size_t used, size_t *new_size, bool *huge);

/* Frees an array from hark__realloc_large; `size` and `huge` as it set them. */
void hark__free_large(void *data, size_t size, bool huge);

/* Frees the memory that destroyed pools and hark__free_huge keep for reuse
 * (up to 128 MiB per process). For measuring memory, and for a process that
 * will not create large states again. */
void hark__pool_release_cache(void);

#endif
