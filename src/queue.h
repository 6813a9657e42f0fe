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
 *   3. rename into spool/queue/<id>;
 *   4. fsync(spool/queue) (one fsync may cover several renames: group commit);
 *   5. only then the commit callback reports success and the session says 250.
 * Any failure: the temp file is unlinked, the callback reports failure and the
 * session says 451 4.3.0.  A failed fsync is never retried on the same data.
 *
 * Journal appends (per-recipient results) are write + fsync of <id>.st before
 * the caller acts on them (e.g. before moving on, never sending twice after a
 * crash except in the window between the primary's 250 and that fsync).
 *
 * Threads: the slow steps (fsync, rename, directory fsync) may run on a
 * worker thread; every callback is delivered on the event loop.
 */
#ifndef MXEDGE_QUEUE_H
#define MXEDGE_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "queue_file.h"

struct event_base;
struct queue_writer;

/* Open the spool under spool_dir (creating tmp/, queue/, corrupt/), start workers. */
int queue_init(struct event_base *base, const char *spool_dir, char *err, size_t errsize);
void queue_shutdown(void);

/* Free bytes in the spool filesystem (statvfs, for the unprivileged user), or -1. */
long long queue_free_space(void);

/*
 * Start writing a message: creates spool/tmp/<env->id> and writes the
 * envelope.  NULL on error (errno set; the session answers 451 4.3.0).
 */
struct queue_writer *queue_writer_open(const struct queue_envelope *env);
/* Append body bytes (buffered; errors are remembered and reported by commit). */
void queue_writer_body(struct queue_writer *w, const void *p, size_t len);
/* Bytes of body written so far. */
uint64_t queue_writer_body_len(const struct queue_writer *w);
/*
 * Finish and make durable (steps 1-5 above).  The callback runs on the event
 * loop exactly once, with ok true only when the message is in queue/ and the
 * directory was synced; the writer is freed by the queue either way.
 */
typedef void (*queue_commit_cb)(bool ok, const char *id, void *arg);
void queue_writer_commit(struct queue_writer *w, queue_commit_cb cb, void *arg);
/* Drop an unfinished message (client went away, message rejected). */
void queue_writer_abort(struct queue_writer **wp);

/*
 * Called (on the loop) for every message that enters the queue, with its
 * envelope: the relay scheduler registers itself here.  NULL: nobody listens.
 */
typedef void (*queue_arrival_cb)(const struct queue_envelope *env, void *arg);
void queue_set_arrival_cb(queue_arrival_cb cb, void *arg);

/*
 * Reading side, for the relay and `mxedge queue`.  At start, queue_scan()
 * visits every message in queue/ with its envelope (journal applied); torn
 * or corrupt files are moved to corrupt/ and logged, never delivered and
 * never deleted.  Temp files left by a crash are removed.
 */
typedef void (*queue_scan_cb)(const struct queue_envelope *env, void *arg);
int queue_scan(queue_scan_cb cb, void *arg);

/* Load one message's envelope (journal applied).  0, or -1 (errno ENOENT if gone). */
int queue_load(const char *id, struct queue_envelope *env);
/*
 * Open the message for reading its body: returns an fd positioned nowhere in
 * particular, with the body's offset and length.  The caller closes the fd.
 */
int queue_body_open(const char *id, uint64_t *off, uint64_t *len);

/* Append one journal record and fsync it (synchronous; small).  0 or -1. */
int queue_journal_append(const char *id, const struct queue_journal_rec *rec);
/* Remove a finished message and its journal.  0 or -1. */
int queue_remove(const char *id);

#endif
