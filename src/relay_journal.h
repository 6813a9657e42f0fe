/*
 * Journal appends and removals off the event loop.  queue_journal_append()
 * writes and fsyncs, and the unlink in queue_remove() can wait for the
 * filesystem's journal commit: a few milliseconds each on a real disk, for
 * every message.  The relay hands them to a few worker threads instead and
 * hears back on the loop.  Records of one message always go to the same
 * worker, in the order submitted, so they land in the journal in that order.
 */
#ifndef MXEDGE_RELAY_JOURNAL_H
#define MXEDGE_RELAY_JOURNAL_H

#include <stddef.h>

#include "queue_file.h"

struct event_base;

int relay_journal_init(struct event_base *base);
/* Waits for the workers to finish what they hold (their callbacks are not run). */
void relay_journal_shutdown(void);

/*
 * Append recs (copied) to id's journal, in order.  done (may be NULL) runs
 * on the loop afterwards with the number of records that failed (each
 * failure is logged by the queue) and errno of the last failure.  Returns
 * 0, or -1 (ENOMEM, or not initialised) when nothing was submitted and done
 * will not run.
 */
typedef void (*relay_journal_cb)(unsigned int failed, int err, void *arg);
int relay_journal_submit(const char *id, const struct queue_journal_rec *recs, size_t n,
    relay_journal_cb done, void *arg);
/*
 * Remove the n finished messages ids[] (queue_remove(), whose unlink can
 * wait for the filesystem's journal commit: never on the loop).  done runs
 * on the loop with results[i] = 0 or the errno of ids[i]'s removal; results
 * is the caller's, n long, and must stay valid until then.
 */
typedef void (*relay_remove_cb)(int *results, void *arg);
int relay_journal_remove(const char (*ids)[QUEUE_ID_MAX + 1], size_t n, int *results,
    relay_remove_cb done, void *arg);
/* Requests submitted and not yet reported back. */
size_t relay_journal_pending(void);

#endif
