/*
 * The filesystem spool: spool_dir/tmp for messages being written,
 * spool_dir/queue for committed messages and their journals, and
 * spool_dir/corrupt for files recovery refused.  This file owns every
 * open, write, fsync, rename and unlink under spool_dir; the format itself
 * is queue_file.c's.
 *
 * Write path (queue.h documents the order): the SMTP session streams the
 * body into a writer, which buffers it in user space and writes it from the
 * event loop in large chunks (page-cache writes are cheap).  Commit hands
 * the writer to a pool of sync threads, each doing fsync -> close ->
 * rename tmp/<id> -> queue/<id> for one message; one committer thread then
 * takes every message renamed so far and covers them all with ONE fsync of
 * queue/ (group commit), and the results go back to the loop through an
 * eventfd.  Parallel file fsyncs matter: ext4 merges concurrent fsyncs into
 * one journal commit, so a single thread doing them one by one manages a
 * few hundred per second where a pool reaches the disk's limit.
 *
 * Trust: nothing read back from the spool is trusted.  queue_file.c
 * verifies every file (END record, checksum); whatever fails is moved to
 * corrupt/ and logged, never delivered and never deleted.  Queue ids from
 * callers are checked with queue_id_valid() before they become file names.
 *
 * Failure: a failed write, fsync, close or rename fails that message only
 * (its file is unlinked and the commit callback says ok=false); a failed
 * fsync is never retried on the same data, because after a write-back
 * error the kernel may already have dropped the dirty pages (PostgreSQL's
 * "fsyncgate").  A failed directory fsync fails every message of its
 * batch, and their files are unlinked from queue/ again.
 *
 * Threads: the worker threads touch only the writers handed to them, the
 * directory fds and the lists under q.mu; they never call libevent, the
 * log or the stats.  queue_journal_append() and queue_remove() may also run
 * on other threads (the relay's journal workers): they use only the
 * directory fds, which stay fixed from queue_init() to queue_shutdown(),
 * q.mu, the log, and the two shared (atomic) counters c_journal and
 * c_removed; every other counter belongs to the loop's thread.  Everything
 * else runs on the event loop.
 *
 * Test-only fault injection, read once by queue_init() (documented in
 * doc/ARCHITECTURE.md; never set these in production):
 *   MXEDGE_FAULT_FSYNC=N    the Nth fsync() of the spool fails with EIO
 *   MXEDGE_FAULT_FSYNC=N+   ... and every fsync after it
 *   MXEDGE_FAULT_WRITE=N[+] the same for write(), failing with ENOSPC
 *   MXEDGE_FAULT_FREE=BYTES queue_free_space() reports BYTES
 * fsyncs are counted across files, directories and journals, in the order
 * they happen (several threads: only deterministic with one message at a
 * time).
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "log.h"
#include "queue.h"
#include "stats.h"

#ifndef QUEUE_SYNC_THREADS
#define QUEUE_SYNC_THREADS 16		/* concurrent file fsyncs */
#endif
#define QUEUE_WRITE_CHUNK 65536		/* body bytes buffered before a write() */
#define QUEUE_JOURNAL_READ_MAX (16u * 1024 * 1024)
#define QUEUE_JOURNAL_SUFFIX ".st"

/*
 * A message being written.  On the loop until queue_writer_commit(); then
 * owned by whichever list of q it is on; back on the loop for the callback.
 */
struct queue_writer {
	struct queue_writer *next;		/* sync, commit or done list */
	struct queue_writer *live_prev;		/* every writer not yet finished */
	struct queue_writer *live_next;
	struct queue_envelope env;		/* copy, for the arrival callback */
	struct queue_file_writer fw;
	int fd;
	unsigned char *buf;
	size_t buflen;
	uint64_t body_len;
	int error;				/* first errno seen; 0 while all is well */
	const char *step;			/* what failed */
	bool ok;				/* in queue/, directory synced */
	bool renamed;
	queue_commit_cb cb;
	void *arg;
};

/* A journal to unlink once the directory fsync covered its message's unlink. */
struct queue_rm {
	struct queue_rm *next;
	char id[QUEUE_ID_MAX + 1];
};

struct queue_list {
	struct queue_writer *head;
	struct queue_writer **tail;
};

struct queue_fault {
	unsigned long n;		/* 0: off */
	bool after;			/* and every one after the Nth */
	atomic_ulong count;
};

static struct {
	bool running;
	bool draining;			/* in queue_shutdown(): no new commits */
	struct event_base *base;
	int spool_fd, tmp_fd, queue_fd, corrupt_fd;
	int efd;
	struct event *ev_done;

	pthread_mutex_t mu;
	pthread_cond_t sync_cv;
	pthread_cond_t commit_cv;
	struct queue_list sync_q;	/* waiting for fsync + rename */
	struct queue_list commit_q;	/* waiting for the directory fsync */
	struct queue_list done_q;	/* waiting for the loop */
	struct queue_rm *rm_q;
	bool stop_sync, stop_commit;
	unsigned long long file_fsyncs, dir_fsyncs;	/* not yet added to the counters */
	pthread_t sync_th[QUEUE_SYNC_THREADS];
	int nsync;
	pthread_t commit_th;
	bool commit_started;

	/* The loop's side. */
	struct queue_writer *live;
	queue_arrival_cb arrival;
	void *arrival_arg;
	unsigned long long *c_committed, *c_failed, *c_file_fsyncs, *c_dir_fsyncs;
	unsigned long long *c_corrupt;
	/* Also incremented by whichever thread calls queue_journal_append/queue_remove. */
	atomic_ullong *c_removed, *c_journal;
} q = {
	.spool_fd = -1, .tmp_fd = -1, .queue_fd = -1, .corrupt_fd = -1, .efd = -1,
};

static struct queue_fault fault_fsync, fault_write;
static long long fault_free = -1;

/* Fault injection and checked syscalls --------------------------------- */

static void
fault_parse(struct queue_fault *f, const char *name)
{
	const char *s = getenv(name);
	char *end;

	f->n = 0;
	f->after = false;
	atomic_store(&f->count, 0);
	if (s == NULL || *s == '\0')
		return;
	errno = 0;
	f->n = strtoul(s, &end, 10);
	if (errno != 0 || end == s || (*end != '\0' && strcmp(end, "+") != 0)) {
		log_warnx("event=queue_fault_ignored variable=%s", name);
		f->n = 0;
		return;
	}
	f->after = *end == '+';
	if (f->n != 0)
		log_warnx("event=queue_fault_armed variable=%s value=%s test_only=yes", name, s);
}

static bool
fault_hit(struct queue_fault *f)
{
	unsigned long c;

	if (f->n == 0)
		return false;
	c = atomic_fetch_add(&f->count, 1) + 1;
	return c == f->n || (f->after && c > f->n);
}

static int
spool_fsync(int fd)
{
	if (fault_hit(&fault_fsync)) {
		errno = EIO;
		return -1;
	}
	return fsync(fd);
}

/* Write all n bytes at the current offset (off < 0) or at off. */
static int
spool_write(int fd, const void *p, size_t n, off_t off)
{
	const unsigned char *b = p;

	while (n > 0) {
		ssize_t r;

		if (fault_hit(&fault_write)) {
			errno = ENOSPC;
			return -1;
		}
		r = off < 0 ? write(fd, b, n) : pwrite(fd, b, n, off);
		if (r == -1) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (r == 0) {
			errno = EIO;
			return -1;
		}
		b += r;
		n -= (size_t)r;
		if (off >= 0)
			off += r;
	}
	return 0;
}

/* rename(2) that never replaces an existing file (queue ids are unique, files are not). */
static int
spool_rename(int from_fd, const char *from, int to_fd, const char *to)
{
	if (renameat2(from_fd, from, to_fd, to, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL && errno != ENOSYS)
		return -1;
	/* A filesystem without RENAME_NOREPLACE: check, then rename (we are the only writer). */
	if (faccessat(to_fd, to, F_OK, AT_SYMLINK_NOFOLLOW) == 0) {
		errno = EEXIST;
		return -1;
	}
	return renameat(from_fd, from, to_fd, to);
}

static int
journal_name(char *out, size_t size, const char *id)
{
	return mx_snprintf(out, size, "%s%s", id, QUEUE_JOURNAL_SUFFIX);
}

static void
list_init(struct queue_list *l)
{
	l->head = NULL;
	l->tail = &l->head;
}

static void
list_push(struct queue_list *l, struct queue_writer *w)
{
	w->next = NULL;
	*l->tail = w;
	l->tail = &w->next;
}

/* Take the whole list. */
static struct queue_writer *
list_take(struct queue_list *l)
{
	struct queue_writer *w = l->head;

	list_init(l);
	return w;
}

/* Worker threads -------------------------------------------------------- */

static void
notify_loop(void)
{
	uint64_t one = 1;
	ssize_t r;

	do
		r = write(q.efd, &one, sizeof(one));
	while (r == -1 && errno == EINTR);
	/* EAGAIN: the counter is saturated, so the loop will wake up anyway. */
}

static void
writer_fail(struct queue_writer *w, const char *step, int err)
{
	if (w->error == 0) {
		w->error = err != 0 ? err : EIO;
		w->step = step;
	}
}

/*
 * Steps 2 and 3 of the write order for one message.  Any failure unlinks
 * the temp file; a failed fsync is final (never retried).
 */
static void
sync_one(struct queue_writer *w)
{
	if (spool_fsync(w->fd) == -1) {
		writer_fail(w, "fsync", errno);
		close(w->fd);
	} else if (close(w->fd) == -1)
		writer_fail(w, "close", errno);
	w->fd = -1;
	if (w->error == 0 && spool_rename(q.tmp_fd, w->env.id, q.queue_fd, w->env.id) == -1)
		writer_fail(w, "rename", errno);
	if (w->error != 0) {
		unlinkat(q.tmp_fd, w->env.id, 0);
		return;
	}
	w->renamed = true;
}

/*
 * Give the committed message its journal now, so that the directory fsync
 * of the batch also covers the journal's name and a later append needs only
 * a file fsync.  The content is not synced: a torn header is rewritten by
 * the first append.  Failing here is harmless (the append creates it).
 */
static void
journal_precreate(const char *id)
{
	struct mx_buf b;
	char name[QUEUE_ID_MAX + sizeof(QUEUE_JOURNAL_SUFFIX)];
	int fd;

	if (journal_name(name, sizeof(name), id) == -1)
		return;
	mx_buf_init(&b, 0);
	if (queue_journal_begin(id, &b) == 0) {
		fd = openat(q.queue_fd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
		    0600);
		/* Not through spool_write(): injected faults count message and record writes only. */
		if (fd != -1) {
			if (pwrite(fd, b.data, b.len, 0) != (ssize_t)b.len)
				(void)ftruncate(fd, 0);
			close(fd);
		}
	}
	mx_buf_free(&b);
}

static void *
sync_main(void *arg)
{
	struct queue_writer *w;

	for (;;) {
		pthread_mutex_lock(&q.mu);
		while (q.sync_q.head == NULL && !q.stop_sync)
			pthread_cond_wait(&q.sync_cv, &q.mu);
		if (q.sync_q.head == NULL) {
			pthread_mutex_unlock(&q.mu);
			return NULL;
		}
		w = q.sync_q.head;
		if ((q.sync_q.head = w->next) == NULL)
			q.sync_q.tail = &q.sync_q.head;
		pthread_mutex_unlock(&q.mu);

		sync_one(w);
		if (w->renamed)
			journal_precreate(w->env.id);

		pthread_mutex_lock(&q.mu);
		q.file_fsyncs++;
		list_push(&q.commit_q, w);
		pthread_cond_signal(&q.commit_cv);
		pthread_mutex_unlock(&q.mu);
	}
}

/*
 * Step 4 for everything renamed since the last round: one directory fsync
 * per batch.  While it runs, the sync threads finish more messages, so the
 * batches grow with the load.
 */
static void *
commit_main(void *arg)
{
	struct queue_writer *batch, *w;
	struct queue_rm *rms, *rm;
	char name[QUEUE_ID_MAX + sizeof(QUEUE_JOURNAL_SUFFIX)];
	bool need_sync;
	int err;

	for (;;) {
		pthread_mutex_lock(&q.mu);
		while (q.commit_q.head == NULL && q.rm_q == NULL && !q.stop_commit)
			pthread_cond_wait(&q.commit_cv, &q.mu);
		if (q.commit_q.head == NULL && q.rm_q == NULL) {
			pthread_mutex_unlock(&q.mu);
			return NULL;
		}
		batch = list_take(&q.commit_q);
		err = 0;
		rms = q.rm_q;
		q.rm_q = NULL;
		pthread_mutex_unlock(&q.mu);

		need_sync = rms != NULL;
		for (w = batch; w != NULL; w = w->next)
			if (w->renamed)
				need_sync = true;
		if (need_sync) {
			err = spool_fsync(q.queue_fd) == -1 ? errno : 0;
			for (w = batch; w != NULL; w = w->next) {
				if (!w->renamed)
					continue;
				if (err == 0) {
					w->ok = true;
					continue;
				}
				/* Not durable: take it back so that no 451'd message is ever sent. */
				writer_fail(w, "directory fsync", err);
				unlinkat(q.queue_fd, w->env.id, 0);
				if (journal_name(name, sizeof(name), w->env.id) == 0)
					unlinkat(q.queue_fd, name, 0);
			}
		}
		/* Journals go only after their message's unlink is durable (see queue_remove). */
		while ((rm = rms) != NULL) {
			rms = rm->next;
			if (err == 0 && journal_name(name, sizeof(name), rm->id) == 0)
				unlinkat(q.queue_fd, name, 0);
			free(rm);
		}

		pthread_mutex_lock(&q.mu);
		if (need_sync)
			q.dir_fsyncs++;
		while ((w = batch) != NULL) {
			batch = w->next;
			list_push(&q.done_q, w);
		}
		pthread_mutex_unlock(&q.mu);
		notify_loop();
	}
}

/* The loop's side ------------------------------------------------------- */

static void
live_add(struct queue_writer *w)
{
	w->live_prev = NULL;
	w->live_next = q.live;
	if (q.live != NULL)
		q.live->live_prev = w;
	q.live = w;
}

static void
live_del(struct queue_writer *w)
{
	if (w->live_prev != NULL)
		w->live_prev->live_next = w->live_next;
	else if (q.live == w)
		q.live = w->live_next;
	if (w->live_next != NULL)
		w->live_next->live_prev = w->live_prev;
	w->live_prev = w->live_next = NULL;
}

static bool
live_has(const char *id)
{
	struct queue_writer *w;

	for (w = q.live; w != NULL; w = w->live_next)
		if (strcmp(w->env.id, id) == 0)
			return true;
	return false;
}

static void
writer_free(struct queue_writer *w)
{
	if (w->fd != -1)
		close(w->fd);
	queue_envelope_clear(&w->env);
	free(w->buf);
	free(w);
}

/* Report finished commits: the callback first (the client's 250), then the arrival. */
static void
done_drain(void)
{
	struct queue_writer *list, *w;

	pthread_mutex_lock(&q.mu);
	list = list_take(&q.done_q);
	*q.c_file_fsyncs += q.file_fsyncs;
	*q.c_dir_fsyncs += q.dir_fsyncs;
	q.file_fsyncs = q.dir_fsyncs = 0;
	pthread_mutex_unlock(&q.mu);

	while ((w = list) != NULL) {
		list = w->next;
		live_del(w);
		if (w->ok) {
			(*q.c_committed)++;
			log_debug("event=queue_committed id=%s body_len=%llu rcpts=%zu", w->env.id,
			    (unsigned long long)w->body_len, w->env.nrcpts);
		} else {
			(*q.c_failed)++;
			log_warnx("event=queue_commit_failed id=%s step=\"%s\" error=\"%s\"",
			    w->env.id, w->step != NULL ? w->step : "write", strerror(w->error));
		}
		if (w->cb != NULL)
			w->cb(w->ok, w->env.id, w->arg);
		if (w->ok && q.arrival != NULL)
			q.arrival(&w->env, q.arrival_arg);
		writer_free(w);
	}
}

static void
on_done(evutil_socket_t fd, short what, void *arg)
{
	uint64_t n;

	while (read(q.efd, &n, sizeof(n)) == -1 && errno == EINTR)
		continue;
	done_drain();
}

/* Hand a writer to the loop with its failure (no worker involved). */
static void
writer_finish_failed(struct queue_writer *w)
{
	if (w->fd != -1) {
		close(w->fd);
		w->fd = -1;
	}
	unlinkat(q.tmp_fd, w->env.id, 0);
	pthread_mutex_lock(&q.mu);
	list_push(&q.done_q, w);
	pthread_mutex_unlock(&q.mu);
	notify_loop();
}

/* Unlink id's journal after the next directory fsync (done by the commit worker). */
static int
journal_unlink_later(const char *id)
{
	struct queue_rm *rm;

	if ((rm = calloc(1, sizeof(*rm))) == NULL)
		return -1;
	memcpy(rm->id, id, strlen(id) + 1);
	pthread_mutex_lock(&q.mu);
	rm->next = q.rm_q;
	q.rm_q = rm;
	pthread_cond_signal(&q.commit_cv);
	pthread_mutex_unlock(&q.mu);
	return 0;
}

/* Init and shutdown ----------------------------------------------------- */

static int
open_subdir(const char *name, bool *created)
{
	if (mkdirat(q.spool_fd, name, 0700) == 0)
		*created = true;
	else if (errno != EEXIST)
		return -1;
	return openat(q.spool_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
}

/* Names in a directory, sorted (queue ids sort by arrival).  NULL on error. */
static char **
dir_names(int dfd, size_t *np)
{
	char **names = NULL, **nn;
	size_t n = 0, cap = 0;
	struct dirent *de;
	DIR *d;
	int fd;

	*np = 0;
	if ((fd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1)
		return NULL;
	if ((d = fdopendir(fd)) == NULL) {
		close(fd);
		return NULL;
	}
	while ((errno = 0, de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (n == cap) {
			cap = cap == 0 ? 64 : cap * 2;
			if ((nn = realloc(names, cap * sizeof(*names))) == NULL)
				goto fail;
			names = nn;
		}
		if ((names[n] = strdup(de->d_name)) == NULL)
			goto fail;
		n++;
	}
	if (errno != 0)
		goto fail;
	closedir(d);
	if (names == NULL && (names = malloc(sizeof(*names))) == NULL)
		return NULL;
	*np = n;
	return names;
fail:
	while (n > 0)
		free(names[--n]);
	free(names);
	closedir(d);
	return NULL;
}

static void
names_free(char **names, size_t n)
{
	while (n > 0)
		free(names[--n]);
	free(names);
}

static int
name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Temp files left by a crash: their senders never got a 250. */
static void
tmp_clean(void)
{
	char **names;
	size_t n, i, removed = 0;

	if ((names = dir_names(q.tmp_fd, &n)) == NULL) {
		log_warn("event=queue_tmp_scan_failed");
		return;
	}
	for (i = 0; i < n; i++) {
		if (unlinkat(q.tmp_fd, names[i], 0) == 0)
			removed++;
		else
			log_warn("event=queue_tmp_unlink_failed name=%s", names[i]);
	}
	names_free(names, n);
	if (removed > 0)
		log_info("event=queue_tmp_cleaned files=%zu", removed);
}

static void
close_fd(int *fd)
{
	if (*fd != -1)
		close(*fd);
	*fd = -1;
}

static void
threads_stop(void)
{
	int i;

	pthread_mutex_lock(&q.mu);
	q.stop_sync = true;
	pthread_cond_broadcast(&q.sync_cv);
	pthread_mutex_unlock(&q.mu);
	for (i = 0; i < q.nsync; i++)
		pthread_join(q.sync_th[i], NULL);
	q.nsync = 0;
	if (q.commit_started) {
		pthread_mutex_lock(&q.mu);
		q.stop_commit = true;
		pthread_cond_broadcast(&q.commit_cv);
		pthread_mutex_unlock(&q.mu);
		pthread_join(q.commit_th, NULL);
		q.commit_started = false;
	}
}

static int
threads_start(void)
{
	sigset_t all, old;
	int i, rc = 0;

	/* Signals belong to the loop (libevent's handlers), not to the workers. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	if ((rc = pthread_create(&q.commit_th, NULL, commit_main, NULL)) == 0) {
		q.commit_started = true;
		for (i = 0; i < QUEUE_SYNC_THREADS; i++) {
			if ((rc = pthread_create(&q.sync_th[i], NULL, sync_main, NULL)) != 0)
				break;
			q.nsync++;
		}
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		threads_stop();
		errno = rc;
		return -1;
	}
	return 0;
}

static void
state_close(void)
{
	if (q.ev_done != NULL) {
		event_free(q.ev_done);
		q.ev_done = NULL;
	}
	close_fd(&q.efd);
	close_fd(&q.tmp_fd);
	close_fd(&q.queue_fd);
	close_fd(&q.corrupt_fd);
	close_fd(&q.spool_fd);
}

int
queue_init(struct event_base *base, const char *spool_dir, char *err, size_t errsize)
{
	const char *step;
	bool created = false;
	const char *s;

	if (q.running) {
		mx_snprintf(err, errsize, "queue already initialised");
		errno = EBUSY;
		return -1;
	}
	q.base = base;
	q.live = NULL;
	q.stop_sync = q.stop_commit = false;
	q.file_fsyncs = q.dir_fsyncs = 0;
	q.rm_q = NULL;
	list_init(&q.sync_q);
	list_init(&q.commit_q);
	list_init(&q.done_q);

	step = "open";
	if ((q.spool_fd = open(spool_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1)
		goto fail;
	step = "tmp/";
	if ((q.tmp_fd = open_subdir("tmp", &created)) == -1)
		goto fail;
	step = "queue/";
	if ((q.queue_fd = open_subdir("queue", &created)) == -1)
		goto fail;
	step = "corrupt/";
	if ((q.corrupt_fd = open_subdir("corrupt", &created)) == -1)
		goto fail;
	step = "fsync";
	if (created && fsync(q.spool_fd) == -1)
		goto fail;
	step = "eventfd";
	if ((q.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) == -1)
		goto fail;
	step = "event";
	if ((q.ev_done = event_new(base, q.efd, EV_READ | EV_PERSIST, on_done, NULL)) == NULL ||
	    event_add(q.ev_done, NULL) == -1) {
		errno = ENOMEM;
		goto fail;
	}

	/* Before any writer can exist: every temp file now is a crash's leftover. */
	tmp_clean();

	fault_parse(&fault_fsync, "MXEDGE_FAULT_FSYNC");
	fault_parse(&fault_write, "MXEDGE_FAULT_WRITE");
	fault_free = -1;
	if ((s = getenv("MXEDGE_FAULT_FREE")) != NULL && *s != '\0') {
		long long v;

		if (mx_parse_llong(s, 0, LLONG_MAX, &v) == 0) {
			fault_free = v;
			log_warnx("event=queue_fault_armed variable=MXEDGE_FAULT_FREE value=%lld "
			    "test_only=yes", v);
		}
	}

	q.c_committed = stats_counter("queue.committed");
	q.c_failed = stats_counter("queue.commit_failed");
	q.c_file_fsyncs = stats_counter("queue.file_fsyncs");
	q.c_dir_fsyncs = stats_counter("queue.dir_fsyncs");
	q.c_corrupt = stats_counter("queue.corrupt");
	q.c_removed = stats_counter_shared("queue.removed");
	q.c_journal = stats_counter_shared("queue.journal_appends");

	step = "threads";
	if (threads_start() == -1)
		goto fail;
	q.running = true;
	log_info("event=queue_ready spool=%s sync_threads=%d", spool_dir, QUEUE_SYNC_THREADS);
	return 0;
fail:
	mx_snprintf(err, errsize, "spool %s: %s: %s", spool_dir, step, strerror(errno));
	state_close();
	return -1;
}

void
queue_shutdown(void)
{
	if (!q.running)
		return;
	/* The workers finish what they hold; its callbacks run here, exactly once. */
	q.draining = true;
	threads_stop();
	while (q.done_q.head != NULL)
		done_drain();
	while (q.live != NULL)
		live_del(q.live);	/* unfinished writers stay their owners' to abort */
	state_close();
	q.running = false;
	q.draining = false;
}

long long
queue_free_space(void)
{
	struct statvfs sv;

	if (!q.running) {
		errno = ENXIO;
		return -1;
	}
	if (fault_free >= 0)
		return fault_free;
	if (fstatvfs(q.spool_fd, &sv) == -1)
		return -1;
	if (sv.f_frsize == 0)
		sv.f_frsize = sv.f_bsize;
	if (sv.f_frsize != 0 &&
	    (unsigned long long)sv.f_bavail > (unsigned long long)LLONG_MAX / sv.f_frsize)
		return LLONG_MAX;
	return (long long)((unsigned long long)sv.f_bavail * sv.f_frsize);
}

void
queue_set_arrival_cb(queue_arrival_cb cb, void *arg)
{
	q.arrival = cb;
	q.arrival_arg = arg;
}

/* Writer ---------------------------------------------------------------- */

static int
envelope_copy(struct queue_envelope *dst, const struct queue_envelope *src)
{
	*dst = *src;
	dst->rcpts = NULL;
	dst->nrcpts = dst->rcpts_cap = 0;
	if (src->nrcpts == 0)
		return 0;
	if ((dst->rcpts = calloc(src->nrcpts, sizeof(*dst->rcpts))) == NULL)
		return -1;
	memcpy(dst->rcpts, src->rcpts, src->nrcpts * sizeof(*dst->rcpts));
	dst->nrcpts = dst->rcpts_cap = src->nrcpts;
	return 0;
}

static void
writer_flush(struct queue_writer *w)
{
	if (w->buflen > 0 && w->error == 0 && spool_write(w->fd, w->buf, w->buflen, -1) == -1)
		writer_fail(w, "write", errno);
	w->buflen = 0;
}

static void
writer_put(struct queue_writer *w, const void *p, size_t len)
{
	if (w->error != 0)
		return;
	if (w->buflen + len > QUEUE_WRITE_CHUNK)
		writer_flush(w);
	if (len >= QUEUE_WRITE_CHUNK) {
		if (w->error == 0 && spool_write(w->fd, p, len, -1) == -1)
			writer_fail(w, "write", errno);
		return;
	}
	memcpy(w->buf + w->buflen, p, len);
	w->buflen += len;
}

struct queue_writer *
queue_writer_open(const struct queue_envelope *env)
{
	struct queue_writer *w;
	struct mx_buf hdr;
	int e;

	if (!q.running || q.draining) {
		errno = q.running ? ESHUTDOWN : ENXIO;
		return NULL;
	}
	if (!queue_id_valid(env->id)) {
		errno = EINVAL;
		return NULL;
	}
	if ((w = calloc(1, sizeof(*w))) == NULL)
		return NULL;
	w->fd = -1;
	if ((w->buf = malloc(QUEUE_WRITE_CHUNK)) == NULL || envelope_copy(&w->env, env) == -1) {
		writer_free(w);
		errno = ENOMEM;
		return NULL;
	}
	/* Encode before creating the file, so a refused envelope leaves nothing behind. */
	mx_buf_init(&hdr, QUEUE_ENVELOPE_MAX);
	if (queue_file_begin(&w->fw, env, &hdr) == -1) {
		e = errno;
		mx_buf_free(&hdr);
		writer_free(w);
		errno = e;
		return NULL;
	}
	w->fd = openat(q.tmp_fd, env->id, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
	    0600);
	if (w->fd == -1) {
		e = errno;
		mx_buf_free(&hdr);
		writer_free(w);
		errno = e;
		return NULL;
	}
	writer_put(w, hdr.data, hdr.len);
	mx_buf_free(&hdr);
	if (w->error != 0) {
		e = w->error;
		unlinkat(q.tmp_fd, env->id, 0);
		writer_free(w);
		errno = e;
		return NULL;
	}
	live_add(w);
	return w;
}

void
queue_writer_body(struct queue_writer *w, const void *p, size_t len)
{
	w->body_len += len;
	if (w->error != 0 || len == 0)
		return;
	queue_file_body(&w->fw, p, len);
	writer_put(w, p, len);
}

uint64_t
queue_writer_body_len(const struct queue_writer *w)
{
	return w->body_len;
}

void
queue_writer_commit(struct queue_writer *w, queue_commit_cb cb, void *arg)
{
	struct mx_buf end;

	w->cb = cb;
	w->arg = arg;
	mx_buf_init(&end, 0);
	if (w->error == 0) {
		if (queue_file_finish(&w->fw, &end) == -1)
			writer_fail(w, "encode", errno);
		else
			writer_put(w, end.data, end.len);
		writer_flush(w);
	}
	mx_buf_free(&end);
	free(w->buf);
	w->buf = NULL;
	if (w->error == 0 && q.draining)
		writer_fail(w, "shutdown", ESHUTDOWN);
	if (w->error != 0) {
		writer_finish_failed(w);
		return;
	}
	pthread_mutex_lock(&q.mu);
	list_push(&q.sync_q, w);
	pthread_cond_signal(&q.sync_cv);
	pthread_mutex_unlock(&q.mu);
}

void
queue_writer_abort(struct queue_writer **wp)
{
	struct queue_writer *w = *wp;

	if (w == NULL)
		return;
	*wp = NULL;
	if (w->fd != -1) {
		close(w->fd);
		w->fd = -1;
	}
	if (q.running)
		unlinkat(q.tmp_fd, w->env.id, 0);
	live_del(w);
	writer_free(w);
}

/* Reading side ---------------------------------------------------------- */

/* Read a whole regular file of at most max bytes from an open fd (EFBIG otherwise). */
static int
read_fd_all(int fd, unsigned char **p, size_t *len, size_t max)
{
	struct stat sb;
	size_t off = 0;

	*p = NULL;
	*len = 0;
	if (fstat(fd, &sb) == -1)
		return -1;
	if (!S_ISREG(sb.st_mode) || (uint64_t)sb.st_size > max) {
		errno = EFBIG;
		return -1;
	}
	if ((*p = malloc(sb.st_size > 0 ? (size_t)sb.st_size : 1)) == NULL)
		return -1;
	while (off < (size_t)sb.st_size) {
		ssize_t r = pread(fd, *p + off, (size_t)sb.st_size - off, (off_t)off);

		if (r == -1 && errno == EINTR)
			continue;
		if (r == -1) {
			free(*p);
			*p = NULL;
			return -1;
		}
		if (r == 0)
			break;
		off += (size_t)r;
	}
	*len = off;
	return 0;
}

/* The same by name; *p NULL with 0 when the file does not exist. */
static int
read_small(int dfd, const char *name, unsigned char **p, size_t *len, size_t max)
{
	int fd, rc, e;

	*p = NULL;
	*len = 0;
	if ((fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)) == -1)
		return errno == ENOENT ? 0 : -1;
	rc = read_fd_all(fd, p, len, max);
	e = errno;
	close(fd);
	errno = e;
	return rc;
}

/*
 * Move a file refused by recovery to corrupt/, keeping the name (or the
 * name with a numeric suffix when corrupt/ already holds one).
 */
static void
move_corrupt(const char *name, const char *reason)
{
	char safe[LOG_SAFE_MAX], dst[NAME_MAX + 1];
	int i;

	log_safe(safe, sizeof(safe), name, strlen(name));
	for (i = 0; i < 1000; i++) {
		if ((i == 0 ? mx_strlcpy(dst, name, sizeof(dst)) :
		    mx_snprintf(dst, sizeof(dst), "%s.%d", name, i)) == -1)
			break;
		if (spool_rename(q.queue_fd, name, q.corrupt_fd, dst) == 0) {
			(*q.c_corrupt)++;
			log_warnx("event=queue_corrupt name=%s reason=\"%s\" moved_to=corrupt/%s",
			    safe, reason, dst);
			if (spool_fsync(q.corrupt_fd) == -1 || spool_fsync(q.queue_fd) == -1)
				log_warn("event=queue_corrupt_fsync_failed name=%s", safe);
			return;
		}
		if (errno != EEXIST)
			break;
	}
	log_warn("event=queue_corrupt_move_failed name=%s reason=\"%s\"", safe, reason);
}

/* A message and its journal go to corrupt/ together. */
static void
message_move_corrupt(const char *id, const char *reason)
{
	char jname[QUEUE_ID_MAX + sizeof(QUEUE_JOURNAL_SUFFIX)];

	move_corrupt(id, reason);
	if (journal_name(jname, sizeof(jname), id) == 0 &&
	    faccessat(q.queue_fd, jname, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
		move_corrupt(jname, reason);
}

/*
 * Open and verify queue/<id>, apply its journal.  0; -1 with errno ENOENT
 * (gone) or another errno (I/O); -2 when the files are refused, with the
 * reason.  On 0, *fdp (if not NULL) is the open message file.
 */
static int
message_read(const char *id, struct queue_envelope *env, struct queue_file_info *info,
    int *fdp, const char **reason)
{
	struct queue_journal_info ji;
	enum queue_file_status st;
	char jname[QUEUE_ID_MAX + sizeof(QUEUE_JOURNAL_SUFFIX)];
	unsigned char *jp;
	struct stat sb;
	size_t jlen;
	int fd, e;

	queue_envelope_init(env);
	if (fstatat(q.queue_fd, id, &sb, AT_SYMLINK_NOFOLLOW) == -1)
		return -1;
	if (!S_ISREG(sb.st_mode)) {
		*reason = "not a regular file";
		return -2;
	}
	if ((fd = openat(q.queue_fd, id, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK)) == -1)
		return -1;
	st = queue_file_read_fd(fd, env, info);
	if (st == QUEUE_FILE_IO || st == QUEUE_FILE_NOMEM) {
		e = st == QUEUE_FILE_IO ? errno : ENOMEM;
		close(fd);
		errno = e;
		return -1;
	}
	if (st != QUEUE_FILE_OK) {
		close(fd);
		*reason = queue_file_strerror(st);
		return -2;
	}
	if (strcmp(env->id, id) != 0) {
		close(fd);
		queue_envelope_clear(env);
		*reason = "queue id in the file differs from its name";
		return -2;
	}
	if (journal_name(jname, sizeof(jname), id) == -1 ||
	    read_small(q.queue_fd, jname, &jp, &jlen, QUEUE_JOURNAL_READ_MAX) == -1) {
		e = errno;
		close(fd);
		queue_envelope_clear(env);
		if (e == EFBIG) {
			*reason = "journal too large or not a regular file";
			return -2;
		}
		errno = e;
		return -1;
	}
	if (jp != NULL) {
		if (queue_journal_apply(env, jp, jlen, &ji) == -1 || ji.corrupt) {
			free(jp);
			close(fd);
			queue_envelope_clear(env);
			*reason = "journal corrupt";
			return -2;
		}
		if (ji.torn)
			log_info("event=queue_journal_torn id=%s valid_len=%zu len=%zu", id,
			    ji.valid_len, jlen);
		free(jp);
	}
	if (fdp != NULL)
		*fdp = fd;
	else
		close(fd);
	return 0;
}

/* A journal name: "<valid id>.st"; sets id. */
static bool
is_journal_name(const char *name, char id[QUEUE_ID_MAX + 1])
{
	size_t n = strlen(name), sl = strlen(QUEUE_JOURNAL_SUFFIX);

	if (n <= sl || n - sl > QUEUE_ID_MAX || strcmp(name + n - sl, QUEUE_JOURNAL_SUFFIX) != 0)
		return false;
	memcpy(id, name, n - sl);
	id[n - sl] = '\0';
	return queue_id_valid(id);
}

int
queue_scan(queue_scan_cb cb, void *arg)
{
	struct queue_envelope env;
	struct queue_file_info info;
	const char *reason = NULL;
	char **names, id[QUEUE_ID_MAX + 1];
	size_t n, i;
	int visited = 0, r;

	if (!q.running) {
		errno = ENXIO;
		return -1;
	}
	if ((names = dir_names(q.queue_fd, &n)) == NULL)
		return -1;
	qsort(names, n, sizeof(*names), name_cmp);
	for (i = 0; i < n; i++) {
		const char *name = names[i];

		if (is_journal_name(name, id)) {
			/*
			 * Orphan: a crash between queue_remove()'s two steps, or a
			 * queue_remove() from this scan's callback.  Either way it goes
			 * after a directory fsync, like queue_remove()'s own.
			 */
			if (faccessat(q.queue_fd, id, F_OK, AT_SYMLINK_NOFOLLOW) == -1 &&
			    errno == ENOENT &&
			    faccessat(q.queue_fd, name, F_OK, AT_SYMLINK_NOFOLLOW) == 0 &&
			    journal_unlink_later(id) == 0)
				log_info("event=queue_orphan_journal id=%s action=remove", id);
			continue;
		}
		if (!queue_id_valid(name)) {
			move_corrupt(name, "not a queue file name");
			continue;
		}
		/* Still being committed: the arrival callback will report it. */
		if (live_has(name))
			continue;
		r = message_read(name, &env, &info, NULL, &reason);
		if (r == -2) {
			message_move_corrupt(name, reason);
			continue;
		}
		if (r == -1) {
			if (errno != ENOENT)
				log_warn("event=queue_read_failed id=%s", name);
			continue;
		}
		visited++;
		cb(&env, arg);
		queue_envelope_clear(&env);
	}
	names_free(names, n);
	return visited;
}

int
queue_load(const char *id, struct queue_envelope *env)
{
	struct queue_file_info info;
	const char *reason = NULL;
	int r;

	queue_envelope_init(env);
	if (!q.running) {
		errno = ENXIO;
		return -1;
	}
	if (!queue_id_valid(id)) {
		errno = EINVAL;
		return -1;
	}
	if ((r = message_read(id, env, &info, NULL, &reason)) == -2) {
		message_move_corrupt(id, reason);
		errno = EBADMSG;
		return -1;
	}
	return r;
}

int
queue_body_open(const char *id, uint64_t *off, uint64_t *len)
{
	struct queue_envelope env;
	struct queue_file_info info;
	const char *reason = NULL;
	int r, fd = -1;

	if (!q.running) {
		errno = ENXIO;
		return -1;
	}
	if (!queue_id_valid(id)) {
		errno = EINVAL;
		return -1;
	}
	if ((r = message_read(id, &env, &info, &fd, &reason)) == -2) {
		message_move_corrupt(id, reason);
		errno = EBADMSG;
		return -1;
	}
	if (r == -1)
		return -1;
	queue_envelope_clear(&env);
	*off = info.body_off;
	*len = info.body_len;
	return fd;
}

/*
 * Where the next journal record goes: the end of the last good record, 0
 * for a journal that must be started afresh (empty, or torn inside its
 * header), -1 (EBADMSG) for damage that recovery should look at.
 */
static long long
journal_valid_len(const unsigned char *p, size_t len, const char *id)
{
	struct queue_journal_rec rec;
	enum queue_journal_result r;
	size_t off = 0, valid;

	r = queue_journal_next(p, len, &off, &rec);
	if (r == QUEUE_JOURNAL_END || r == QUEUE_JOURNAL_TORN)
		return 0;
	if (r == QUEUE_JOURNAL_BAD || rec.type != QUEUE_JOURNAL_ID || strcmp(rec.id, id) != 0)
		goto bad;
	valid = off;
	for (;;) {
		r = queue_journal_next(p, len, &off, &rec);
		if (r == QUEUE_JOURNAL_END || r == QUEUE_JOURNAL_TORN)
			return (long long)valid;
		if (r == QUEUE_JOURNAL_BAD)
			goto bad;
		valid = off;
	}
bad:
	errno = EBADMSG;
	return -1;
}

int
queue_journal_append(const char *id, const struct queue_journal_rec *rec)
{
	char jname[QUEUE_ID_MAX + sizeof(QUEUE_JOURNAL_SUFFIX)];
	struct mx_buf out, recb;
	unsigned char *p = NULL;
	struct stat sb;
	long long valid = 0;
	size_t len = 0;
	bool created = false;
	int fd = -1, rc = -1, e;

	if (!q.running) {
		errno = ENXIO;
		return -1;
	}
	if (!queue_id_valid(id) || rec->type == QUEUE_JOURNAL_ID ||
	    journal_name(jname, sizeof(jname), id) == -1) {
		errno = EINVAL;
		return -1;
	}
	mx_buf_init(&out, 0);
	mx_buf_init(&recb, 0);
	/* Refuse bad values before touching the file. */
	if (queue_journal_encode(rec, &recb) == -1)
		goto out;
	/* Never a journal without its message. */
	if (fstatat(q.queue_fd, id, &sb, AT_SYMLINK_NOFOLLOW) == -1)
		goto out;

	fd = openat(q.queue_fd, jname, O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd == -1 && errno == ENOENT) {
		fd = openat(q.queue_fd, jname, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
		    0600);
		created = fd != -1;
	}
	if (fd == -1)
		goto out;
	if (!created) {
		if (read_fd_all(fd, &p, &len, QUEUE_JOURNAL_READ_MAX) == -1) {
			if (errno == EFBIG)
				errno = EBADMSG;
			goto out;
		}
		if ((valid = journal_valid_len(p, len, id)) == -1)
			goto out;
		/* A torn tail from a crash: the new record must not follow garbage. */
		if ((size_t)valid < len && ftruncate(fd, (off_t)valid) == -1)
			goto out;
	}
	if (valid == 0 && queue_journal_begin(id, &out) == -1)
		goto out;
	if (mx_buf_add(&out, recb.data, recb.len) == -1)
		goto out;
	if (spool_write(fd, out.data, out.len, (off_t)valid) == -1)
		goto out;
	if (spool_fsync(fd) == -1)
		goto out;
	if (close(fd) == -1) {
		fd = -1;
		goto out;
	}
	fd = -1;
	/* Normally queue_writer_commit() made the name durable already. */
	if (created && spool_fsync(q.queue_fd) == -1)
		goto out;
	atomic_fetch_add_explicit(q.c_journal, 1, memory_order_relaxed);
	rc = 0;
out:
	e = errno;
	if (fd != -1)
		close(fd);
	if (rc == -1) {
		char safe[LOG_SAFE_MAX];

		log_safe(safe, sizeof(safe), id, strnlen(id, QUEUE_ID_MAX + 1));
		log_warnx("event=queue_journal_failed id=%s error=\"%s\"", safe, strerror(e));
	}
	free(p);
	mx_buf_free(&out);
	mx_buf_free(&recb);
	errno = e;
	return rc;
}

int
queue_remove(const char *id)
{
	if (!q.running) {
		errno = ENXIO;
		return -1;
	}
	if (!queue_id_valid(id)) {
		errno = EINVAL;
		return -1;
	}
	if (unlinkat(q.queue_fd, id, 0) == -1)
		return -1;
	atomic_fetch_add_explicit(q.c_removed, 1, memory_order_relaxed);
	/*
	 * The journal waits for the directory fsync that makes this unlink
	 * durable.  Without memory for that, it stays: an orphan journal is
	 * harmless, and the next queue_scan() removes it.
	 */
	if (journal_unlink_later(id) == -1)
		log_warn("event=queue_journal_unlink_deferred id=%s", id);
	return 0;
}
