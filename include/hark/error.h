/* Error codes shared by every libhark call. A call that can fail returns 0 or
 * a negative code. libuv's codes pass through unchanged; hark's own codes sit
 * below -4096 (UV_ERRNO_MAX), so the two sets never collide. */
#ifndef HARK_ERROR_H
#define HARK_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

enum {
  HARK_OK = 0,
  HARK_EINVAL = -5001,   /* an argument is invalid (missing node name, NULL pointer, ...) */
  HARK_ENOMEM = -5002,   /* out of memory; nothing was changed */
  HARK_EEXIST = -5003,   /* a name is already registered */
  HARK_EADAPTER = -5004, /* the cluster adapter failed; local delivery was skipped */
  HARK_EALREADY = -5005, /* track: (owner, topic, key) is already tracked */
  HARK_ENOENT = -5006,   /* update: nothing is tracked for (owner, topic, key) */
};

/* Returns a static English description of a HARK_E* or libuv error code. */
const char *hark_strerror(int code);

/* Returns the code's name, such as "HARK_EINVAL" or "ECONNREFUSED". */
const char *hark_err_name(int code);

#ifdef __cplusplus
}
#endif

#endif
