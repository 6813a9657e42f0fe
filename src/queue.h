/*
 * The queue: where accepted mail lives until every recipient has a final
 * result.  One interface, the filesystem spool behind it (queue_fs.c),
 * following the file format of queue_file.h.  The SMTP server writes
 * messages through a queue_writer; the relay reads them, records
 * per-recipient results in the journal and removes finished messages.
 *
 * Durability contract (write order, documented once, followed everywhere):
 *   1. spool/tmp/<id>: open with O_CREAT|O_EXCL, write envelope + body,
 *      checking every short write;
 *   2. fsync(file); close(file), checked;
 *   3. rename into spool/queue/<id> (never replacing a file), and create
 *      its journal spool/queue/<id>.st holding only its header (not synced:
 *      step 4 makes its name durable, so a later append needs no directory
 *      fsync, and a torn header is simply rewritten);
 *   4. fsync(spool/queue) (one fsync covers every rename done since the
 *      previous one: group commit);
 *   5. only then the commit callback reports success and the session says 250.
 * Any failure: the message's file is unlinked (from tmp/, or from queue/
 * again when the directory fsync failed), the callback reports failure and
 * the session says 451 4.3.0.  A failed fsync is never retried on the same
 * data.  A crash before step 5 leaves either a temp file (removed at start)
 * or a complete message in queue/ whose sender never saw the 250: it is
 * delivered (the sender may send it again: a duplicate, never a loss).
 *
 * Journal appends (per-recipient results) are write + fsync of <id>.st before
 * the caller acts on them (e.g. before moving on, never sending twice after a
 * crash except in the window between the primary's 250 and that fsync).
 *
 * Threads: the slow steps (fsync, close, rename, directory fsync) run on
 * worker threads; every callback is delivered on the event loop.  Every
 * queue_* function is for the loop's thread only, between queue_init() and
 * queue_shutdown() (ENXIO otherwise), except queue_journal_append() and
 * queue_remove(): those may run on any thread, concurrently, as long as
 * none is still running when queue_shutdown() starts (their counters are
 * atomic).  Two appends to one message must not overlap (the relay sends
 * each message's records to one worker, in order); an append racing the
 * message's removal can at worst leave an orphan journal, which
 * queue_scan() removes.
 */
#ifndef MXEDGE_QUEUE_H
#define MXEDGE_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "queue_file.h"

struct event_base;
struct queue_writer;

/*
 * Open the spool under spool_dir (an existing directory): create tmp/,
 * queue/ and corrupt/ (0700) if missing, remove temp files a crash left in
 * tmp/ (their senders never got a 250), start the worker threads.  Call it
 * on the loop's thread before anything can open a writer.  0, or -1 with a
 * message in err.  Counters (stats.h): queue.committed, queue.commit_failed,
 * queue.file_fsyncs, queue.dir_fsyncs, queue.corrupt, queue.removed,
 * queue.journal_appends.
 */
int queue_init(struct event_base *base, const char *spool_dir, char *err, size_t errsize);
/*
 * Stop the workers after they finished the commits they hold, and run those
 * commits' callbacks (from here: the loop is no longer dispatching; a
 * writer opened from one of them fails with ESHUTDOWN).  Writers not yet
 * committed stay their owners' to abort (their temp files are removed by
 * the next queue_init()); never commit them.  Call before event_base_free().
 */
void queue_shutdown(void);

/* Free bytes in the spool filesystem (statvfs f_bavail: what a non-root user may use), or -1. */
long long queue_free_space(void);

/*
 * Start writing a message: encodes the envelope (EINVAL if it is invalid,
 * before any file exists), creates spool/tmp/<env->id> with O_EXCL
 * (EEXIST if that id is in use).  The writer keeps its own copy of env.
 * NULL on error, errno set; the session answers 451 4.3.0.
 */
struct queue_writer *queue_writer_open(const struct queue_envelope *env);
/*
 * Append body bytes (after dot-unstuffing).  Buffered in 64 KiB chunks and
 * written from the caller's thread; the first write error is remembered and
 * fails the commit, later bytes are only counted.
 */
void queue_writer_body(struct queue_writer *w, const void *p, size_t len);
/* Bytes passed to queue_writer_body() so far (for the SIZE limit). */
uint64_t queue_writer_body_len(const struct queue_writer *w);
/*
 * Finish and make durable (steps 1-5 above); the writer belongs to the
 * queue from now on (never abort it).  cb runs on the event loop exactly
 * once, never from within this call, with ok true only when the message is
 * in queue/ and the directory was synced; id is valid during the call.  On
 * failure the reason is logged (event=queue_commit_failed id=... step=...).
 * After a successful commit cb runs first (the client gets its 250 at once),
 * then the arrival callback.
 */
typedef void (*queue_commit_cb)(bool ok, const char *id, void *arg);
void queue_writer_commit(struct queue_writer *w, queue_commit_cb cb, void *arg);
/* Drop an unfinished message (client went away, message rejected); NULL-safe. */
void queue_writer_abort(struct queue_writer **wp);

/*
 * Called (on the loop) for every message that enters the queue, with its
 * envelope (valid during the call only), right after its commit callback:
 * the relay scheduler registers itself here.  NULL: nobody listens.
 */
typedef void (*queue_arrival_cb)(const struct queue_envelope *env, void *arg);
void queue_set_arrival_cb(queue_arrival_cb cb, void *arg);

/*
 * Reading side, for the relay and `mxedge queue`.  queue_scan() visits every
 * message in queue/, in id (arrival) order, with its envelope (journal
 * applied; valid during the call only).  Torn or corrupt files, journals that
 * are damaged or belong to another id, and names that are not queue ids are
 * moved to corrupt/ and logged (event=queue_corrupt), never delivered and
 * never deleted; journals whose message is gone (a crash inside
 * queue_remove) are removed.  Messages still being committed are skipped:
 * the arrival callback reports them.  So with the arrival callback set
 * before the scan, or in the same loop turn after it, every message is
 * reported exactly once.  The callback may call queue_load, queue_remove and
 * queue_journal_append.  Returns the number of messages visited, or -1.
 */
typedef void (*queue_scan_cb)(const struct queue_envelope *env, void *arg);
int queue_scan(queue_scan_cb cb, void *arg);

/*
 * Load one message's envelope (journal applied), verifying the whole file.
 * 0, or -1 with errno: ENOENT (gone), EINVAL (not a queue id), EBADMSG (the
 * file or its journal is damaged: moved to corrupt/), or an I/O error.
 * env is initialised first, so id must not point into it; clear env with
 * queue_envelope_clear() after success.
 */
int queue_load(const char *id, struct queue_envelope *env);
/*
 * Open the message for reading its body, after verifying its checksum:
 * returns an fd (O_CLOEXEC, read with pread) and the body's offset and
 * length, or -1 with errno as for queue_load().  The caller closes the fd.
 */
int queue_body_open(const char *id, uint64_t *off, uint64_t *len);

/*
 * Append one journal record (RCPT, RETRY or HOLD; ID is written by the
 * queue) and fsync it, on the caller's thread: about one disk flush.  A torn
 * tail left by a crash is cut off first.  0, or -1 with errno: ENOENT (no
 * such message), EINVAL (bad id or record), EBADMSG (the journal is damaged
 * in the middle: nothing written), or the write/fsync error, after which the
 * record may or may not be on disk (never retried: treat it as not recorded,
 * i.e. the recipient may be tried again after a crash).
 */
int queue_journal_append(const char *id, const struct queue_journal_rec *rec);
/*
 * Remove a finished message: unlinks queue/<id> now (ENOENT if it is not
 * there) and its journal after the next directory fsync, done by the commit
 * worker (grouped with commits, never on the loop).  The message goes first
 * because a crash between the two must never leave a message without its
 * journal (every recipient pending again: a resend); an orphan journal is
 * harmless and queue_scan() removes it.  A crash before that fsync may bring
 * the message back together with its journal, whose final records make the
 * relay remove it again (a message deleted by the operator with recipients
 * still pending would be retried).  0 or -1.
 */
int queue_remove(const char *id);

#endif
