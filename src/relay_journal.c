/*
 * The relay's journal workers.  This file owns a few threads that do
 * nothing but call queue_journal_append() for records the scheduler hands
 * them, and queue_remove() for finished messages, so that no fsync and no
 * unlink waiting for the filesystem's journal ever runs on the event loop;
 * results come back through an eventfd.  A message's records always go to the same thread
 * (chosen by a hash of its id) and are appended in submission order, so the
 * journal reads as the scheduler wrote it.
 *
 * Threads: a worker touches only its own queue (under the lock) and the
 * request it took; queue_journal_append() and queue_remove() are safe on
 * any thread (queue.h: files by name, atomic counters, one log write per
 * line), so the workers run them in parallel.  Everything else, every
 * callback included, runs on the loop.
 * Failure: a failed append is counted in the request and reported to its
 * callback; the scheduler decides what that means.  At shutdown the
 * workers finish their queues first.
 */
#include "config.h"

#include <errno.h>
#include <event2/event.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "daemon.h"
#include "log.h"
#include "queue.h"
#include "relay_journal.h"

#define RELAY_JOURNAL_THREADS 4

struct relay_jreq {
	struct relay_jreq *next;
	char id[QUEUE_ID_MAX + 1];
	struct queue_journal_rec *recs;	/* append these to id's journal, or */
	char (*rm)[QUEUE_ID_MAX + 1];	/* remove these messages */
	int *rm_results;
	size_t n;
	unsigned int failed;
	int err;
	relay_journal_cb done;
	relay_remove_cb rm_done;
	void *arg;
};

struct relay_jworker {
	pthread_t thread;
	struct relay_jreq *head, **tail;
	bool started;
};

static struct {
	bool running;
	bool stop;
	int efd;
	struct event *ev;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct relay_jworker w[RELAY_JOURNAL_THREADS];
	struct relay_jreq *done_head, **done_tail;
	size_t pending;
} J = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };

static void *
relay_journal_main(void *arg)
{
	struct relay_jworker *w = arg;
	struct relay_jreq *r;
	uint64_t one = 1;
	size_t i;

	for (;;) {
		pthread_mutex_lock(&J.mu);
		while (w->head == NULL && !J.stop)
			pthread_cond_wait(&J.cv, &J.mu);
		if ((r = w->head) == NULL) {
			pthread_mutex_unlock(&J.mu);
			return NULL;
		}
		w->head = r->next;
		if (w->head == NULL)
			w->tail = &w->head;
		pthread_mutex_unlock(&J.mu);

		for (i = 0; r->rm != NULL && i < r->n; i++)
			r->rm_results[i] = queue_remove(r->rm[i]) == -1 ? errno : 0;
		for (i = 0; r->recs != NULL && i < r->n; i++)
			if (queue_journal_append(r->id, &r->recs[i]) == -1) {
				r->failed++;
				r->err = errno;
			}

		pthread_mutex_lock(&J.mu);
		r->next = NULL;
		*J.done_tail = r;
		J.done_tail = &r->next;
		pthread_mutex_unlock(&J.mu);
		while (write(J.efd, &one, sizeof(one)) == -1 && errno == EINTR)
			continue;
	}
}

static void
relay_journal_on_done(evutil_socket_t fd, short what, void *arg)
{
	struct relay_jreq *list, *r;
	uint64_t n;

	while (read(J.efd, &n, sizeof(n)) == -1 && errno == EINTR)
		continue;
	pthread_mutex_lock(&J.mu);
	list = J.done_head;
	J.done_head = NULL;
	J.done_tail = &J.done_head;
	pthread_mutex_unlock(&J.mu);
	while ((r = list) != NULL) {
		list = r->next;
		J.pending--;
		if (r->done != NULL)
			r->done(r->failed, r->err, r->arg);
		if (r->rm_done != NULL)
			r->rm_done(r->rm_results, r->arg);
		free(r->recs);
		free(r->rm);
		free(r);
		daemon_release();
	}
}

int
relay_journal_init(struct event_base *base)
{
	sigset_t all, old;
	int i;

	if (J.running)
		return 0;
	J.done_tail = &J.done_head;
	J.stop = false;
	if ((J.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) == -1)
		return -1;
	if ((J.ev = event_new(base, J.efd, EV_READ | EV_PERSIST, relay_journal_on_done,
	    NULL)) == NULL || event_add(J.ev, NULL) == -1) {
		close(J.efd);
		return -1;
	}
	/* Signals belong to the loop (libevent's handlers), not to the workers. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (i = 0; i < RELAY_JOURNAL_THREADS; i++) {
		J.w[i].head = NULL;
		J.w[i].tail = &J.w[i].head;
		if (pthread_create(&J.w[i].thread, NULL, relay_journal_main, &J.w[i]) != 0)
			break;
		J.w[i].started = true;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (i < RELAY_JOURNAL_THREADS)
		log_warnx("event=relay_journal_thread_failed started=%d", i);
	if (i == 0) {
		event_free(J.ev);
		close(J.efd);
		return -1;
	}
	J.running = true;
	return 0;
}

void
relay_journal_shutdown(void)
{
	struct relay_jreq *r;
	int i;

	if (!J.running)
		return;
	pthread_mutex_lock(&J.mu);
	J.stop = true;
	pthread_cond_broadcast(&J.cv);
	pthread_mutex_unlock(&J.mu);
	for (i = 0; i < RELAY_JOURNAL_THREADS; i++)
		if (J.w[i].started) {
			pthread_join(J.w[i].thread, NULL);
			J.w[i].started = false;
		}
	while ((r = J.done_head) != NULL) {
		J.done_head = r->next;
		free(r->recs);
		free(r->rm);
		free(r);
	}
	J.done_tail = &J.done_head;
	event_free(J.ev);
	close(J.efd);
	J.running = false;
}

/* Hand r to the worker for key; takes a daemon hold until r is reported back. */
static void
relay_journal_enqueue(struct relay_jreq *r, const char *key)
{
	struct relay_jworker *w;
	uint32_t h = 2166136261u;
	int nthreads = 0, i;

	for (i = 0; i < RELAY_JOURNAL_THREADS; i++)
		if (J.w[i].started)
			nthreads = i + 1;
	for (; *key != '\0'; key++)
		h = (h ^ (unsigned char)*key) * 16777619u;
	w = &J.w[h % (uint32_t)nthreads];
	/* Work in flight must finish before a graceful exit. */
	daemon_hold();
	J.pending++;
	pthread_mutex_lock(&J.mu);
	*w->tail = r;
	w->tail = &r->next;
	pthread_cond_broadcast(&J.cv);
	pthread_mutex_unlock(&J.mu);
}

int
relay_journal_submit(const char *id, const struct queue_journal_rec *recs, size_t n,
    relay_journal_cb done, void *arg)
{
	struct relay_jreq *r;

	if (!J.running) {
		errno = ENXIO;
		return -1;
	}
	if ((r = calloc(1, sizeof(*r))) == NULL ||
	    (r->recs = calloc(n ? n : 1, sizeof(*r->recs))) == NULL ||
	    mx_strlcpy(r->id, id, sizeof(r->id)) == -1) {
		if (r != NULL)
			free(r->recs);
		free(r);
		errno = ENOMEM;
		return -1;
	}
	memcpy(r->recs, recs, n * sizeof(*recs));
	r->n = n;
	r->done = done;
	r->arg = arg;
	relay_journal_enqueue(r, id);
	return 0;
}

int
relay_journal_remove(const char (*ids)[QUEUE_ID_MAX + 1], size_t n, int *results,
    relay_remove_cb done, void *arg)
{
	struct relay_jreq *r;

	if (!J.running || n == 0) {
		errno = ENXIO;
		return -1;
	}
	if ((r = calloc(1, sizeof(*r))) == NULL ||
	    (r->rm = calloc(n, sizeof(*r->rm))) == NULL) {
		free(r);
		errno = ENOMEM;
		return -1;
	}
	memcpy(r->rm, ids, n * sizeof(*ids));
	r->rm_results = results;
	r->n = n;
	r->rm_done = done;
	r->arg = arg;
	/* Behind any record still on its way to the first message's journal. */
	relay_journal_enqueue(r, ids[0]);
	return 0;
}

size_t
relay_journal_pending(void)
{
	return J.pending;
}
