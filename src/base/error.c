#include "hark/error.h"

#include <uv.h>

const char *hark_strerror(int code) {
  switch (code) {
    case HARK_OK: return "success";
    case HARK_EINVAL: return "invalid argument";
    case HARK_ENOMEM: return "out of memory";
    case HARK_EEXIST: return "name already registered";
    case HARK_EADAPTER: return "cluster adapter failed";
    case HARK_EALREADY: return "already tracked";
    case HARK_ENOENT: return "no presence";
    default: return code < 0 ? uv_strerror(code) : "unknown error";
  }
}

const char *hark_err_name(int code) {
  switch (code) {
    case HARK_OK: return "HARK_OK";
    case HARK_EINVAL: return "HARK_EINVAL";
    case HARK_ENOMEM: return "HARK_ENOMEM";
    case HARK_EEXIST: return "HARK_EEXIST";
    case HARK_EADAPTER: return "HARK_EADAPTER";
    case HARK_EALREADY: return "HARK_EALREADY";
    case HARK_ENOENT: return "HARK_ENOENT";
    default: return code < 0 ? uv_err_name(code) : "unknown";
  }
}
