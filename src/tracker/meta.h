/* Stamping a caller's meta with phx_ref (and phx_ref_prev) by splicing JSON
 * text, without building a tree. */
#ifndef HARK_TRACKER_META_H
#define HARK_TRACKER_META_H

#include <stddef.h>

/* The bytes that stamping adds to a meta at most: the members
 * ,"phx_ref":"<16>" and ,"phx_ref_prev":"<16>", and "{}" for an empty meta. */
#define HARK__META_STAMP_EXTRA 80

/* Writes the stored form of `meta` to `out`, which must have room for
 * meta_len + HARK__META_STAMP_EXTRA bytes, and stores its length (no NUL is
 * written) in *out_len.
 *
 * `meta` must be one JSON object (NULL or blank means {}). The output is that
 * object as compact JSON, members in the caller's order, without any member
 * named "phx_ref" or "phx_ref_prev" (a caller must not forge refs), then
 * "phx_ref": ref and, when `prev` is not NULL, "phx_ref_prev": prev. When a
 * name occurs more than once, only its last member is kept. Strings and
 * numbers are copied byte for byte. `ref` and `prev` are URL-safe base64 of at
 * most 16 characters.
 *
 * Returns 0, or HARK_EINVAL when `meta` is not a valid JSON object, nests
 * deeper than HARK_JSON_MAX_DEPTH, contains the escape \u0000, or has a
 * number that jansson could not load (an integer outside int64, or a real
 * that overflows a double). The last two keep every stored meta loadable by
 * jansson, which the presence layer uses on stored metas. */
int hark__meta_stamp(const char *meta, size_t meta_len, const char *ref, const char *prev,
                     char *out, size_t *out_len);

#endif
