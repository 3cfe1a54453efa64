/* Mailbox: a mutex-guarded singly linked list plus a uv_async_t. Posts are
 * rare next to the work each call does (one per broadcast per worker, not
 * one per delivery), so a lock-free queue would buy little. */
#include "base/mailbox.h"

#include <stdlib.h>

struct hark_mail {
  hark_mail_fn fn;
  void *ctx;
  void *arg;
  hark_mail *next;
};

/* Takes the whole queue under the lock and runs it outside, so a call may
 * post again (to this mailbox too) without deadlock. Calls posted meanwhile
 * run on the next wake-up. */
static void run_queue(hark_mailbox *mailbox, int discard) {
  pthread_mutex_lock(&mailbox->lock);
  hark_mail *mail = mailbox->head;
  mailbox->head = mailbox->tail = NULL;
  pthread_mutex_unlock(&mailbox->lock);

  while (mail) {
    hark_mail *next = mail->next;
    mail->fn(mail->ctx, mail->arg, discard);
    free(mail);
    mail = next;
  }
}

void hark_mailbox_drain(hark_mailbox *mailbox) { run_queue(mailbox, 0); }

static void on_wake(uv_async_t *async) { run_queue(async->data, 0); }

int hark_mailbox_init(hark_mailbox *mailbox, uv_loop_t *loop) {
  mailbox->head = mailbox->tail = NULL;
  mailbox->closed = 0;
  mailbox->on_closed = NULL;
  if (pthread_mutex_init(&mailbox->lock, NULL) != 0) return UV_ENOMEM;

  int rc = uv_async_init(loop, &mailbox->async, on_wake);
  if (rc != 0) {
    pthread_mutex_destroy(&mailbox->lock);
    return rc;
  }
  mailbox->async.data = mailbox;
  return 0;
}

int hark_mailbox_post(hark_mailbox *mailbox, hark_mail_fn fn, void *ctx, void *arg) {
  hark_mail *mail = malloc(sizeof *mail);
  if (!mail) return -1;
  *mail = (hark_mail){fn, ctx, arg, NULL};

  pthread_mutex_lock(&mailbox->lock);
  int closed = mailbox->closed;
  if (!closed) {
    if (mailbox->tail) mailbox->tail->next = mail;
    else mailbox->head = mail;
    mailbox->tail = mail;
    /* Sent under the lock, so a close that takes the lock afterwards never
     * races a wake-up on a handle being closed. uv_async_send coalesces:
     * many posts before the loop wakes cost one wake-up. */
    uv_async_send(&mailbox->async);
  }
  pthread_mutex_unlock(&mailbox->lock);

  if (closed) {
    free(mail);
    return -1;
  }
  return 0;
}

static void on_async_closed(uv_handle_t *handle) {
  hark_mailbox *mailbox = handle->data;
  pthread_mutex_destroy(&mailbox->lock);
  if (mailbox->on_closed) mailbox->on_closed(mailbox);
}

void hark_mailbox_close(hark_mailbox *mailbox, void (*on_closed)(hark_mailbox *mailbox)) {
  pthread_mutex_lock(&mailbox->lock);
  mailbox->closed = 1;
  pthread_mutex_unlock(&mailbox->lock);

  run_queue(mailbox, 1);
  mailbox->on_closed = on_closed;
  uv_close((uv_handle_t *)&mailbox->async, on_async_closed);
}
