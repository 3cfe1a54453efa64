/* A mailbox: a queue of calls that any thread may post and that the thread
 * running one libuv loop runs, in the order they were posted. It is how the
 * worker threads of harkd talk to each other without sharing data. */
#ifndef HARK_BASE_MAILBOX_H
#define HARK_BASE_MAILBOX_H

#include <pthread.h>
#include <uv.h>

/* A posted call. `discard` is 1 when the mailbox is closing: the call must
 * then only free what `arg` owns. */
typedef void (*hark_mail_fn)(void *ctx, void *arg, int discard);

typedef struct hark_mail hark_mail;

/* Embedded in its owner, which must not move it after init. */
typedef struct hark_mailbox {
  uv_async_t async;          /* wakes the owning loop; async.data is the mailbox */
  pthread_mutex_t lock;      /* guards head, tail and closed */
  hark_mail *head, *tail;
  int closed;
  void (*on_closed)(struct hark_mailbox *mailbox);
} hark_mailbox;

/* Initializes the mailbox on `loop`; call on the loop's thread. Returns 0 or
 * a libuv error code. */
int hark_mailbox_init(hark_mailbox *mailbox, uv_loop_t *loop);

/* Queues fn(ctx, arg, 0) to run on the mailbox's loop. Safe from any thread.
 * Returns 0, or -1 when out of memory or when the mailbox is closed; fn then
 * never runs, and the caller still owns `arg`. */
int hark_mailbox_post(hark_mailbox *mailbox, hark_mail_fn fn, void *ctx, void *arg);

/* Runs every queued call now. Call on the loop's thread. */
void hark_mailbox_drain(hark_mailbox *mailbox);

/* Refuses new posts, runs the calls still queued with discard set (so that
 * each frees what its arg owns) and closes the async handle. Call on the loop's thread;
 * `on_closed` (may be NULL) runs once the handle is closed, after which the
 * memory may go. */
void hark_mailbox_close(hark_mailbox *mailbox, void (*on_closed)(hark_mailbox *mailbox));

#endif
