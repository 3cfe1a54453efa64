/* Unit tests for the mailbox: FIFO order per posting thread, posts after
 * close, calls discarded at close, and calls that post again while the queue
 * drains. Every test runs its loop on the test's main thread, and a watchdog
 * timer fails a test that would otherwise hang. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/mailbox.h"

#define WATCHDOG_MS 20000

/* ---- Watchdog ---- */

static void on_watchdog(uv_timer_t *timer) {
  (void)timer;
  fprintf(stderr, "test_mailbox: timed out: the loop still ran after %d ms\n", WATCHDOG_MS);
  abort();
}

/* Starts an unreferenced timer, so that it never keeps the loop alive. */
static void watchdog_start(uv_loop_t *loop, uv_timer_t *timer) {
  assert_int_equal(uv_timer_init(loop, timer), 0);
  assert_int_equal(uv_timer_start(timer, on_watchdog, WATCHDOG_MS, 0), 0);
  uv_unref((uv_handle_t *)timer);
}

static void watchdog_stop(uv_timer_t *timer) { uv_close((uv_handle_t *)timer, NULL); }

/* ---- Call recording ---- */

#define MAX_RECORDS 64

/* What the calls of one test did, in the order they ran. */
typedef struct journal {
  int count;
  int args[MAX_RECORDS];
  int discards[MAX_RECORDS];
  int closed_calls;
  hark_mailbox *closed_mailbox;
} journal;

/* Records the int that `arg` points to and frees it: the call owns arg. */
static void record_and_free(void *ctx, void *arg, int discard) {
  journal *j = ctx;
  assert_true(j->count < MAX_RECORDS);
  j->args[j->count] = *(int *)arg;
  j->discards[j->count] = discard;
  j->count++;
  free(arg);
}

static int *new_int(int value) {
  int *p = malloc(sizeof *p);
  assert_non_null(p);
  *p = value;
  return p;
}

static journal *closed_journal;

static void on_closed(hark_mailbox *mailbox) {
  closed_journal->closed_calls++;
  closed_journal->closed_mailbox = mailbox;
}

/* Closes the mailbox and runs the loop until the async handle is closed. */
static void close_and_finish(uv_loop_t *loop, hark_mailbox *mailbox, journal *j) {
  closed_journal = j;
  hark_mailbox_close(mailbox, on_closed);
  assert_int_equal(uv_run(loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(j->closed_calls, 1);
  assert_ptr_equal(j->closed_mailbox, mailbox);
}

/* ---- FIFO per posting thread ---- */

#define POSTERS 4
#define POSTS_PER_THREAD 20000

typedef struct post_item {
  int thread;
  int seq;
} post_item;

typedef struct fifo_state {
  hark_mailbox mailbox;
  uv_thread_t loop_thread;
  post_item *items; /* POSTERS * POSTS_PER_THREAD, owned by the test */
  int next_seq[POSTERS];
  int out_of_order;
  int wrong_thread;
  int discarded;
  int received;
  int post_failures[POSTERS];
} fifo_state;

typedef struct poster {
  fifo_state *state;
  int thread;
} poster;

static void on_fifo_call(void *ctx, void *arg, int discard) {
  fifo_state *state = ctx;
  post_item *item = arg;
  uv_thread_t self = uv_thread_self();

  if (!uv_thread_equal(&self, &state->loop_thread)) state->wrong_thread++;
  if (discard) {
    state->discarded++;
    return;
  }
  if (item->seq != state->next_seq[item->thread]) state->out_of_order++;
  state->next_seq[item->thread] = item->seq + 1;
  state->received++;

  /* The last call closes the mailbox, which ends the loop. */
  if (state->received == POSTERS * POSTS_PER_THREAD) hark_mailbox_close(&state->mailbox, NULL);
}

static void poster_main(void *arg) {
  poster *p = arg;
  fifo_state *state = p->state;
  for (int seq = 0; seq < POSTS_PER_THREAD; seq++) {
    post_item *item = &state->items[p->thread * POSTS_PER_THREAD + seq];
    *item = (post_item){p->thread, seq};
    if (hark_mailbox_post(&state->mailbox, on_fifo_call, state, item) != 0)
      state->post_failures[p->thread]++;
  }
}

static void mailbox_fifo_per_thread(void **unused) {
  (void)unused;
  uv_loop_t loop;
  uv_timer_t watchdog;
  assert_int_equal(uv_loop_init(&loop), 0);
  watchdog_start(&loop, &watchdog);

  fifo_state *state = calloc(1, sizeof *state);
  assert_non_null(state);
  state->items = calloc(POSTERS * POSTS_PER_THREAD, sizeof *state->items);
  assert_non_null(state->items);
  state->loop_thread = uv_thread_self();
  assert_int_equal(hark_mailbox_init(&state->mailbox, &loop), 0);

  uv_thread_t threads[POSTERS];
  poster posters[POSTERS];
  for (int i = 0; i < POSTERS; i++) {
    posters[i] = (poster){state, i};
    assert_int_equal(uv_thread_create(&threads[i], poster_main, &posters[i]), 0);
  }

  /* The open async handle keeps the loop running until the last call
   * closes the mailbox. */
  uv_run(&loop, UV_RUN_DEFAULT);
  for (int i = 0; i < POSTERS; i++) assert_int_equal(uv_thread_join(&threads[i]), 0);

  for (int i = 0; i < POSTERS; i++) {
    assert_int_equal(state->post_failures[i], 0);
    assert_int_equal(state->next_seq[i], POSTS_PER_THREAD);
  }
  assert_int_equal(state->received, POSTERS * POSTS_PER_THREAD);
  assert_int_equal(state->out_of_order, 0);
  assert_int_equal(state->wrong_thread, 0);
  assert_int_equal(state->discarded, 0);

  watchdog_stop(&watchdog);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&loop), 0);
  free(state->items);
  free(state);
}

/* ---- Posts after close ---- */

static void fail_if_called(void *ctx, void *arg, int discard) {
  (void)ctx;
  (void)arg;
  (void)discard;
  fail_msg("a call posted after close ran");
}

typedef struct late_poster {
  hark_mailbox *mailbox;
  int *arg;
  int rc;
} late_poster;

static void late_poster_main(void *arg) {
  late_poster *p = arg;
  p->rc = hark_mailbox_post(p->mailbox, fail_if_called, NULL, p->arg);
}

static void mailbox_post_after_close_fails(void **unused) {
  (void)unused;
  uv_loop_t loop;
  hark_mailbox mailbox;
  journal j = {0};
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(hark_mailbox_init(&mailbox, &loop), 0);

  closed_journal = &j;
  hark_mailbox_close(&mailbox, on_closed);

  /* The caller keeps arg: freeing it here would be a double free, under
   * ASan, if the mailbox had freed it too. */
  int *arg = new_int(7);
  assert_int_equal(hark_mailbox_post(&mailbox, fail_if_called, NULL, arg), -1);
  assert_int_equal(*arg, 7);

  /* The same from another thread, before the loop closes the handle. */
  late_poster p = {&mailbox, arg, 0};
  uv_thread_t thread;
  assert_int_equal(uv_thread_create(&thread, late_poster_main, &p), 0);
  assert_int_equal(uv_thread_join(&thread), 0);
  assert_int_equal(p.rc, -1);
  assert_int_equal(*arg, 7);
  free(arg);

  assert_int_equal(j.closed_calls, 0);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(j.closed_calls, 1);
  assert_ptr_equal(j.closed_mailbox, &mailbox);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- Calls queued at close ---- */

static void mailbox_close_discards_queued(void **unused) {
  (void)unused;
  uv_loop_t loop;
  hark_mailbox mailbox;
  journal j = {0};
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(hark_mailbox_init(&mailbox, &loop), 0);

  /* One call runs normally first, so discard is seen to change. */
  assert_int_equal(hark_mailbox_post(&mailbox, record_and_free, &j, new_int(0)), 0);
  hark_mailbox_drain(&mailbox);
  assert_int_equal(j.count, 1);
  assert_int_equal(j.discards[0], 0);

  for (int i = 1; i <= 3; i++)
    assert_int_equal(hark_mailbox_post(&mailbox, record_and_free, &j, new_int(i)), 0);
  assert_int_equal(j.count, 1);

  /* close runs the queued calls before it returns, in FIFO order. */
  closed_journal = &j;
  hark_mailbox_close(&mailbox, on_closed);
  assert_int_equal(j.count, 4);
  for (int i = 1; i <= 3; i++) {
    assert_int_equal(j.args[i], i);
    assert_int_equal(j.discards[i], 1);
  }

  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(j.closed_calls, 1);
  assert_int_equal(j.count, 4);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* A call queued at close that tries to post again: the mailbox is already
 * closed, so the post fails and the call keeps what it meant to post. */
typedef struct repost_at_close {
  hark_mailbox *mailbox;
  int ran;
  int discard;
  int rc;
} repost_at_close;

static void try_repost(void *ctx, void *arg, int discard) {
  repost_at_close *r = ctx;
  (void)arg;
  r->ran++;
  r->discard = discard;
  int *value = new_int(1);
  r->rc = hark_mailbox_post(r->mailbox, fail_if_called, NULL, value);
  free(value);
}

static void mailbox_close_rejects_repost(void **unused) {
  (void)unused;
  uv_loop_t loop;
  hark_mailbox mailbox;
  journal j = {0};
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(hark_mailbox_init(&mailbox, &loop), 0);

  repost_at_close r = {&mailbox, 0, 0, 0};
  assert_int_equal(hark_mailbox_post(&mailbox, try_repost, &r, NULL), 0);
  close_and_finish(&loop, &mailbox, &j);

  assert_int_equal(r.ran, 1);
  assert_int_equal(r.discard, 1);
  assert_int_equal(r.rc, -1);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- Posting during a drain ---- */

typedef struct chain {
  hark_mailbox *mailbox;
  int ran;
  int limit;
  int post_failures;
  int discards;
} chain;

/* Posts itself again until it has run `limit` times. */
static void chain_step(void *ctx, void *arg, int discard) {
  chain *c = ctx;
  (void)arg;
  if (discard) {
    c->discards++;
    return;
  }
  c->ran++;
  if (c->ran < c->limit && hark_mailbox_post(c->mailbox, chain_step, c, NULL) != 0)
    c->post_failures++;
}

static void mailbox_repost_runs_next_drain(void **unused) {
  (void)unused;
  uv_loop_t loop;
  hark_mailbox mailbox;
  journal j = {0};
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(hark_mailbox_init(&mailbox, &loop), 0);

  /* A call posted during a drain waits for the next one: a call that always
   * posts itself would otherwise starve the loop. */
  chain c = {&mailbox, 0, 3, 0, 0};
  assert_int_equal(hark_mailbox_post(&mailbox, chain_step, &c, NULL), 0);
  hark_mailbox_drain(&mailbox);
  assert_int_equal(c.ran, 1);
  hark_mailbox_drain(&mailbox);
  assert_int_equal(c.ran, 2);
  hark_mailbox_drain(&mailbox);
  assert_int_equal(c.ran, 3);
  hark_mailbox_drain(&mailbox);
  assert_int_equal(c.ran, 3);
  assert_int_equal(c.post_failures, 0);

  close_and_finish(&loop, &mailbox, &j);
  assert_int_equal(c.discards, 0);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* Posts itself again until it has run `limit` times, then closes the
 * mailbox, which ends the loop. */
static void chain_until_closed(void *ctx, void *arg, int discard) {
  chain *c = ctx;
  (void)arg;
  if (discard) {
    c->discards++;
    return;
  }
  c->ran++;
  if (c->ran == c->limit) {
    hark_mailbox_close(c->mailbox, NULL);
    return;
  }
  if (hark_mailbox_post(c->mailbox, chain_until_closed, c, NULL) != 0) c->post_failures++;
}

static void mailbox_repost_wakes_loop(void **unused) {
  (void)unused;
  uv_loop_t loop;
  uv_timer_t watchdog;
  hark_mailbox mailbox;
  assert_int_equal(uv_loop_init(&loop), 0);
  watchdog_start(&loop, &watchdog);
  assert_int_equal(hark_mailbox_init(&mailbox, &loop), 0);

  /* Each run posts the next one, so the loop must wake up once per call. */
  chain c = {&mailbox, 0, 1000, 0, 0};
  assert_int_equal(hark_mailbox_post(&mailbox, chain_until_closed, &c, NULL), 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(c.ran, c.limit);
  assert_int_equal(c.post_failures, 0);
  assert_int_equal(c.discards, 0);

  watchdog_stop(&watchdog);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(mailbox_fifo_per_thread),
      cmocka_unit_test(mailbox_post_after_close_fails),
      cmocka_unit_test(mailbox_close_discards_queued),
      cmocka_unit_test(mailbox_close_rejects_repost),
      cmocka_unit_test(mailbox_repost_runs_next_drain),
      cmocka_unit_test(mailbox_repost_wakes_loop),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
