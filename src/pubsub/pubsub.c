/* A pubsub instance: creation, destruction and named dispatchers. The registry is in registry.c and dispatch in dispatch.c. */
#include <stdlib.h>
#include <string.h>

#include "pubsub/internal.h"

/* Each topic record contains one partition header per pool slot, so a bound on
 * the pool size keeps a typo from turning every subscribe into ENOMEM. */
#define MAX_POOL_SIZE 1024

static int check_options(uv_loop_t *loop, const hark_pubsub_options *options) {
  if (loop == NULL || options == NULL) return HARK_EINVAL;
  if (options->node_name == NULL || options->node_name[0] == '\0') return HARK_EINVAL;
  if (options->pool_size > MAX_POOL_SIZE) return HARK_EINVAL;

  if (options->group != NULL && options->adapter != NULL && options->group_member != 0)
    return HARK_EINVAL;

  const hark_pubsub_adapter *adapter = options->adapter;
  if (adapter != NULL && (adapter->broadcast == NULL || adapter->direct_broadcast == NULL)) {
    return HARK_EINVAL;
  }
  return HARK_OK;
}

int hark_pubsub_create(hark_pubsub **out, uv_loop_t *loop, const hark_pubsub_options *options) {
  if (out == NULL) return HARK_EINVAL;
  int rc = check_options(loop, options);
  if (rc != HARK_OK) return rc;

  hark_pubsub *ps = calloc(1, sizeof *ps);
  if (ps == NULL) return HARK_ENOMEM;
  ps->node_name = strdup(options->node_name);
  if (ps->node_name == NULL) goto fail;

  ps->loop = loop;
  ps->pool_size = options->pool_size != 0 ? options->pool_size : 1;
  if (options->adapter != NULL) {
    ps->adapter = *options->adapter;
    ps->has_adapter = 1;
  }

  ps->default_dispatcher = (hark_dispatcher){
      .name = "default", .dispatch = hark__default_dispatch, .ctx = ps};
  if (hark_pubsub_register_dispatcher(ps, &ps->default_dispatcher) != HARK_OK) goto fail;
  if (options->group != NULL) {
    rc = hark__group_join(ps, options->group, options->group_member);
    if (rc != HARK_OK) {
      free(ps->dispatchers);
      free(ps->node_name);
      free(ps);
      return rc;
    }
  }

  /* The adapter learns its instance last, when the instance is complete, so
   * it may deliver received messages from then on. */
  if (ps->has_adapter && ps->adapter.attach != NULL) ps->adapter.attach(ps->adapter.ctx, ps);

  *out = ps;
  return HARK_OK;

fail:
  free(ps->dispatchers);
  free(ps->node_name);
  free(ps);
  return HARK_ENOMEM;
}

void hark_pubsub_destroy(hark_pubsub *ps) {
  if (ps == NULL) return;

  /* The adapter goes first, while the instance still works, so that its
   * destroy may unsubscribe its own subscribers. */
  if (ps->has_adapter && ps->adapter.destroy != NULL) ps->adapter.destroy(ps->adapter.ctx);
  if (ps->group != NULL) hark__group_leave(ps);

  hark__registry_free(ps);
  free(ps->dispatchers);
  free(ps->node_name);
  free(ps);
}

const char *hark_pubsub_node_name(const hark_pubsub *ps) { return ps->node_name; }

uv_loop_t *hark_pubsub_loop(const hark_pubsub *ps) { return ps->loop; }

unsigned hark_pubsub_pool_size(const hark_pubsub *ps) { return ps->pool_size; }

int hark_pubsub_register_dispatcher(hark_pubsub *ps, const hark_dispatcher *dispatcher) {
  if (ps == NULL || dispatcher == NULL || dispatcher->dispatch == NULL) return HARK_EINVAL;
  if (dispatcher->name == NULL || dispatcher->name[0] == '\0') return HARK_EINVAL;
  if (hark_pubsub_find_dispatcher(ps, dispatcher->name) != NULL) return HARK_EEXIST;

  if (ps->dispatcher_count == ps->dispatcher_cap) {
    size_t cap = ps->dispatcher_cap ? ps->dispatcher_cap * 2 : 4;
    const hark_dispatcher **grown = realloc(ps->dispatchers, cap * sizeof *grown);
    if (grown == NULL) return HARK_ENOMEM;
    ps->dispatchers = grown;
    ps->dispatcher_cap = cap;
  }
  ps->dispatchers[ps->dispatcher_count++] = dispatcher;
  return HARK_OK;
}

/* A linear scan: an instance has a handful of dispatchers. */
const hark_dispatcher *hark_pubsub_find_dispatcher(const hark_pubsub *ps, const char *name) {
  if (ps == NULL || name == NULL) return NULL;
  for (size_t i = 0; i < ps->dispatcher_count; i++) {
    if (strcmp(ps->dispatchers[i]->name, name) == 0) return ps->dispatchers[i];
  }
  return NULL;
}
