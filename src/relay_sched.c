/*
 * The relay scheduler: which queued message is tried when, where, and what
 * happens with each recipient's result.  It owns the in-memory schedule
 * (rebuilt from the spool at start, fed by the queue's arrival callback), a
 * destination per recipient domain (its route from the registry and DNS,
 * its connections, its circuit breaker and drain pacing), the attempts in
 * flight, every durable record of a result, and the delivery status
 * notifications.
 *
 * Durability: a result is recorded before it is acted on.  A message whose
 * recipients are all delivered is removed (the queue makes the unlink
 * durable with a directory fsync shortly after); otherwise DELIVERED and
 * DEFERRED records and a RETRY record are appended to its journal before it
 * is rescheduled, so a delivered recipient is never sent again after a
 * crash, except in the window between the primary's 250 and that record.
 * A DSN is committed to the queue before the FAILED records that caused it:
 * a crash in between may send it twice, never zero times.  Nothing is
 * journaled for a recipient that was not tried (the destination's breaker
 * was open, or the daemon was stopping): a crash there costs an early retry.
 *
 * Trust: the spool and the registry are ours; replies from primaries reach
 * us only as the client's bounded one-line summaries.  Failure: a journal
 * or DSN that cannot be written is logged and the message stays queued.
 */
#include "config.h"

#include <errno.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "addr.h"
#include "daemon.h"
#include "dns.h"
#include "listen.h"
#include "log.h"
#include "queue.h"
#include "relay_bounce.h"
#include "relay_client.h"
#include "relay_journal.h"
#include "relay_sched.h"
#include "stats.h"
#include "tls.h"

#define USEC 1000000ull
#define RELAY_ROUTE_TTL 60		/* seconds a route is reused */
#define RELAY_DNS_TIMEOUT 20		/* seconds per lookup */
#define RELAY_BREAKER_FAILURES 3	/* consecutive connection failures that open it */
#define RELAY_RAMP_RATE0 4		/* messages per second when a destination comes back */
#define RELAY_RAMP_RATE_MAX 1024	/* ... doubled each interval up to this, then unpaced */
#define RELAY_RAMP_STEP_USEC USEC	/* the interval */
#define RELAY_ACTIVE_MAX 5000		/* attempts in flight (each holds an envelope) */
#define RELAY_START_BATCH 256		/* attempts started per loop turn */
#define RELAY_DSN_FULL_MAX (10u * 1024 * 1024)	/* RET=FULL up to this, headers above */
#define RELAY_DSN_HEADERS_MAX (256u * 1024)
#define RELAY_OURS_MAX 64
#define RELAY_DEST_BUCKETS 1024
#define RELAY_DEST_IDLE_GC (600 * USEC)
/*
 * Finished messages are removed in batches this often, so that one
 * directory fsync in the queue covers many unlinks instead of one each: on
 * a real disk that fsync rate is what limits the whole backup MX.  It adds
 * at most this much to the window in which a crash makes a delivered
 * message go out again.
 */
#define RELAY_REMOVE_BATCH_USEC 20000

enum relay_breaker {
	RB_CLOSED = 0,		/* normal */
	RB_OPEN,		/* down: nothing is tried until down_until */
	RB_PROBE,		/* one connection to see whether it is back */
	RB_RAMP,		/* back: connections and rate grow step by step */
};

static const char *const breaker_names[] = { "closed", "open", "probe", "ramp" };

enum relay_route_state {
	RR_NONE = 0,
	RR_RESOLVING,
	RR_READY,
};

/* Deferral reasons, for status. */
enum relay_reason {
	RR_REASON_CONNECT = 0,	/* 4.4.1: no connection */
	RR_REASON_DNS,		/* 4.4.3/4.4.4: routing */
	RR_REASON_TLS,		/* 4.7.x */
	RR_REASON_REPLY,	/* the primary said 4xx */
	RR_REASON_LOST,		/* 4.4.2: connection lost, bad reply */
	RR_REASON_LOCAL,	/* 4.3.x: our side */
	RR_REASON_BREAKER,	/* not tried: destination down */
	RR_NREASONS
};

static const char *const reason_names[] = {
	"connect", "dns", "tls", "reply", "connection_lost", "local", "breaker"
};

struct relay_addr_query {
	struct relay_dest *dest;
	size_t i;
	struct dns_query *q;
};

struct relay_dest {
	struct relay_dest *hnext;
	struct relay_dest *all_next, *all_prev;
	struct relay_dest *starved_next;
	bool starved;
	char domain[DNS_NAME_BUF];

	/* Route. */
	enum relay_route_state route;
	bool route_fresh;		/* just resolved: use it even if it expires at once */
	uint64_t route_expires;
	struct relay_mx_plan *plan;
	struct dns_query *q_mx;
	struct relay_addr_query aq[RELAY_MX_HOSTS_MAX];
	size_t addr_pending;
	bool tls_required;
	bool allow_v4;
	uint16_t port;

	/* Work. */
	struct relay_job *qhead, **qtail;
	size_t queued;
	size_t nconns, nbusy;
	struct relay_conn **idle;
	size_t nidle, idle_cap;

	/* Circuit breaker and pacing. */
	enum relay_breaker breaker;
	unsigned int fails;		/* consecutive set-up failures */
	unsigned int opens;		/* consecutive openings, for the backoff */
	uint64_t down_until;
	char down_why[QUEUE_REPLY_MAX + 1];
	unsigned int ramp_conc;
	unsigned int ramp_rate;
	uint64_t next_token;
	uint64_t ramp_next_step;
	struct event *ev_timer;
	uint64_t timer_at;		/* when ev_timer fires, if pending */
	uint64_t last_used;
};

struct relay_attempt;

struct relay_msg {
	struct relay_msg *hnext;
	char id[QUEUE_ID_MAX + 1];
	char sender[QUEUE_ADDR_MAX + 1];
	int64_t arrival;
	uint64_t due;			/* usec, wall clock */
	size_t heap_i;			/* SIZE_MAX: not in the heap */
	uint32_t attempts;
	uint32_t nrcpts, npending;
	bool held, deleted, restored;
	bool removing;			/* finished; in the next removal batch */
	struct relay_attempt *att;	/* an attempt is in flight */
};

struct relay_attempt {
	struct relay_msg *msg;
	struct queue_envelope env;
	struct relay_job **jobs;
	size_t njobs, left;
	int64_t *prev_updated;		/* rcpt updated times as loaded (delay warnings) */
	bool *journaled;		/* DELIVERED already recorded this attempt */
	bool dsn_pending;
	/* Decided by attempt_finish(), carried out by attempt_done(). */
	bool all_final, any_tried;
	uint64_t next;
	int64_t deadline;
};

/* A DSN being committed, and what to do once it is durable. */
struct relay_dsn {
	struct relay_attempt *att;	/* NULL for a delay warning */
};

#define HEAP_NONE ((size_t)-1)

static struct {
	bool running, stopping;
	struct event *ev_due;
	struct event *ev_gc;
	struct event *ev_rm;
	struct relay_msg **rm;		/* waiting for the next removal batch */
	size_t nrm, rm_cap;
	struct tls_creds *creds;
	struct sockaddr_storage ours[RELAY_OURS_MAX];
	size_t nours;

	struct relay_msg **buckets;
	size_t nbuckets, nmsgs;
	struct relay_msg **heap;
	size_t nheap, heap_cap;
	size_t active;			/* attempts in flight */
	size_t held;

	struct relay_dest *dest_buckets[RELAY_DEST_BUCKETS];
	struct relay_dest *dests;
	size_t ndests;
	struct relay_dest *starved_head, **starved_tail;
	size_t total_conns;
} S;

static unsigned long long *c_delivered, *c_deferred, *c_bounced, *c_expired, *c_dsn,
    *c_dsn_suppressed, *c_dsn_failed, *c_breaker_open, *c_journal_failed, *c_removed,
    *c_warnings;
static unsigned long long reasons[RR_NREASONS];

static void relay_dest_kick(struct relay_dest *d);
static void relay_attempt_end(struct relay_attempt *att);
static void relay_due_arm(void);

/* ---- Time and randomness ------------------------------------------------ */

static uint64_t
wall_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * USEC + (uint64_t)ts.tv_nsec / 1000u;
}

static uint32_t
relay_rng(void *arg)
{
	return mx_random_u32();
}

/* A uniformly random part of span, [0, span). */
static uint64_t
jitter(uint64_t span)
{
	uint64_t r;

	if (span == 0)
		return 0;
	mx_random(&r, sizeof(r));
	return r % span;
}

/* retry_min doubling per attempt up to retry_max, in usec. */
static uint64_t
backoff_usec(uint32_t attempts)
{
	uint64_t b = (uint64_t)mxd->conf->queue_retry_min * USEC;
	uint64_t max = (uint64_t)mxd->conf->queue_retry_max * USEC;
	uint32_t i;

	for (i = 1; i < attempts && b < max; i++)
		b *= 2;
	return b < max ? b : max;
}

/* ---- Messages: hash by id, heap by due time ----------------------------- */

static size_t
hash_str(const char *s, size_t n)
{
	uint32_t h = 2166136261u;

	for (; *s != '\0'; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h & (n - 1);
}

static struct relay_msg *
msg_find(const char *id)
{
	struct relay_msg *m;

	if (S.nbuckets == 0)
		return NULL;
	for (m = S.buckets[hash_str(id, S.nbuckets)]; m != NULL; m = m->hnext)
		if (strcmp(m->id, id) == 0)
			return m;
	return NULL;
}

static int
msg_hash_grow(void)
{
	struct relay_msg **nb, *m, *next;
	size_t n = S.nbuckets ? S.nbuckets * 2 : 1024, i, h;

	if ((nb = calloc(n, sizeof(*nb))) == NULL)
		return -1;
	for (i = 0; i < S.nbuckets; i++)
		for (m = S.buckets[i]; m != NULL; m = next) {
			next = m->hnext;
			h = hash_str(m->id, n);
			m->hnext = nb[h];
			nb[h] = m;
		}
	free(S.buckets);
	S.buckets = nb;
	S.nbuckets = n;
	return 0;
}

static bool
heap_less(size_t a, size_t b)
{
	return S.heap[a]->due < S.heap[b]->due;
}

static void
heap_swap(size_t a, size_t b)
{
	struct relay_msg *t = S.heap[a];

	S.heap[a] = S.heap[b];
	S.heap[b] = t;
	S.heap[a]->heap_i = a;
	S.heap[b]->heap_i = b;
}

static void
heap_up(size_t i)
{
	while (i > 0 && heap_less(i, (i - 1) / 2)) {
		heap_swap(i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
}

static void
heap_down(size_t i)
{
	size_t l, r, m;

	for (;;) {
		l = 2 * i + 1;
		r = l + 1;
		m = i;
		if (l < S.nheap && heap_less(l, m))
			m = l;
		if (r < S.nheap && heap_less(r, m))
			m = r;
		if (m == i)
			return;
		heap_swap(i, m);
		i = m;
	}
}

static void
heap_remove(struct relay_msg *m)
{
	size_t i = m->heap_i;

	if (i == HEAP_NONE)
		return;
	m->heap_i = HEAP_NONE;
	if (i == --S.nheap)
		return;
	S.heap[i] = S.heap[S.nheap];
	S.heap[i]->heap_i = i;
	heap_up(i);
	heap_down(S.heap[i]->heap_i);
}

/* (Re)schedule m at due; the heap never holds held, active or deleted messages. */
static void
msg_schedule(struct relay_msg *m, uint64_t due)
{
	m->due = due;
	if (m->held || m->deleted || m->removing || m->att != NULL) {
		heap_remove(m);
		return;
	}
	if (m->heap_i == HEAP_NONE) {
		if (S.nheap == S.heap_cap) {
			size_t n = S.heap_cap ? S.heap_cap * 2 : 1024;
			struct relay_msg **nh = realloc(S.heap, n * sizeof(*nh));

			if (nh == NULL) {
				log_warnx("event=relay_out_of_memory id=%s", m->id);
				return;
			}
			S.heap = nh;
			S.heap_cap = n;
		}
		m->heap_i = S.nheap;
		S.heap[S.nheap++] = m;
		heap_up(m->heap_i);
	} else {
		heap_up(m->heap_i);
		heap_down(m->heap_i);
	}
	relay_due_arm();
}

static void
msg_forget(struct relay_msg *m)
{
	struct relay_msg **pp;

	heap_remove(m);
	for (pp = &S.buckets[hash_str(m->id, S.nbuckets)]; *pp != NULL; pp = &(*pp)->hnext)
		if (*pp == m) {
			*pp = m->hnext;
			break;
		}
	if (m->held)
		S.held--;
	S.nmsgs--;
	free(m);
}

static void
msg_count_pending(struct relay_msg *m, const struct queue_envelope *env)
{
	size_t i;

	m->nrcpts = (uint32_t)env->nrcpts;
	m->npending = 0;
	for (i = 0; i < env->nrcpts; i++)
		if (env->rcpts[i].state == QUEUE_RCPT_PENDING ||
		    env->rcpts[i].state == QUEUE_RCPT_DEFERRED)
			m->npending++;
}

/* A message the scheduler learns about (scan or arrival); NULL if known already. */
static struct relay_msg *
msg_add(const struct queue_envelope *env, bool restored)
{
	struct relay_msg *m;
	size_t h;

	if (msg_find(env->id) != NULL)
		return NULL;
	if (S.nmsgs >= S.nbuckets && msg_hash_grow() == -1)
		return NULL;
	if ((m = calloc(1, sizeof(*m))) == NULL)
		return NULL;
	memcpy(m->id, env->id, sizeof(m->id));
	memcpy(m->sender, env->sender, sizeof(m->sender));
	m->arrival = env->arrival;
	m->attempts = env->attempts;
	m->held = env->held;
	m->restored = restored;
	m->heap_i = HEAP_NONE;
	msg_count_pending(m, env);
	h = hash_str(m->id, S.nbuckets);
	m->hnext = S.buckets[h];
	S.buckets[h] = m;
	S.nmsgs++;
	if (m->held)
		S.held++;
	return m;
}

/* A batch of finished messages on its way out of the spool. */
struct relay_rm_batch {
	size_t n;
	struct relay_msg **msgs;
	int *results;
	char (*ids)[QUEUE_ID_MAX + 1];
};

static void
relay_rm_batch_free(struct relay_rm_batch *b)
{
	free(b->msgs);
	free(b->results);
	free(b->ids);
	free(b);
}

static void
relay_removed(int *results, void *arg)
{
	struct relay_rm_batch *b = arg;
	struct relay_msg *m;
	size_t i;

	for (i = 0; i < b->n; i++) {
		m = b->msgs[i];
		if (results[i] != 0 && results[i] != ENOENT) {
			errno = results[i];
			log_warn("event=relay_remove_failed id=%s", m->id);
			if (!m->deleted) {
				/* Still there: it will be tried (and found finished) again. */
				m->removing = false;
				msg_schedule(m, wall_usec() + backoff_usec(1));
				continue;
			}
		}
		if (!m->deleted)
			(*c_removed)++;
		msg_forget(m);
	}
	relay_rm_batch_free(b);
}

static void
relay_on_remove(evutil_socket_t fd, short what, void *arg)
{
	struct relay_rm_batch *b;
	size_t i, n = S.nrm;

	if (n == 0)
		return;
	S.nrm = 0;
	evtimer_del(S.ev_rm);
	if ((b = calloc(1, sizeof(*b))) != NULL &&
	    (b->msgs = calloc(n, sizeof(*b->msgs))) != NULL &&
	    (b->results = calloc(n, sizeof(*b->results))) != NULL &&
	    (b->ids = calloc(n, sizeof(*b->ids))) != NULL) {
		b->n = n;
		for (i = 0; i < n; i++) {
			b->msgs[i] = S.rm[i];
			memcpy(b->ids[i], S.rm[i]->id, sizeof(b->ids[i]));
		}
		if (relay_journal_remove((const char (*)[QUEUE_ID_MAX + 1])b->ids, n, b->results,
		    relay_removed, b) == 0) {
			daemon_release();
			return;
		}
	}
	/* No workers or no memory: remove them here. */
	if (b != NULL && b->msgs != NULL && b->results != NULL) {
		for (i = 0; i < n; i++)
			b->results[i] = queue_remove(b->msgs[i]->id) == -1 ? errno : 0;
		b->n = n;
		relay_removed(b->results, b);
	} else {
		for (i = 0; i < n; i++) {
			if (queue_remove(S.rm[i]->id) == -1 && errno != ENOENT)
				log_warn("event=relay_remove_failed id=%s", S.rm[i]->id);
			msg_forget(S.rm[i]);
		}
		if (b != NULL)
			relay_rm_batch_free(b);
	}
	daemon_release();
}

/* m is finished (or deleted): remove it with the next batch. */
static void
msg_remove_later(struct relay_msg *m)
{
	struct timeval tv = { 0, RELAY_REMOVE_BATCH_USEC };

	heap_remove(m);
	if (m->removing)
		return;
	if (S.nrm == S.rm_cap) {
		size_t n = S.rm_cap ? S.rm_cap * 2 : 256;
		struct relay_msg **nr = realloc(S.rm, n * sizeof(*nr));

		if (nr == NULL) {
			/* No room to batch it: remove it now. */
			if (queue_remove(m->id) == -1 && errno != ENOENT)
				log_warn("event=relay_remove_failed id=%s", m->id);
			msg_forget(m);
			return;
		}
		S.rm = nr;
		S.rm_cap = n;
	}
	m->removing = true;
	S.rm[S.nrm++] = m;
	if (S.nrm == 1) {
		/* A graceful exit waits for the batch. */
		daemon_hold();
		if (S.stopping)
			tv.tv_usec = 0;
		evtimer_add(S.ev_rm, &tv);
	}
}

/* ---- Journal ------------------------------------------------------------ */

/* A RCPT record for rcpt i (appended later, off the loop, by relay_journal). */
static void
rec_rcpt(struct queue_journal_rec *rec, size_t i, enum queue_rcpt_state st, const char *reply)
{
	memset(rec, 0, sizeof(*rec));
	rec->type = QUEUE_JOURNAL_RCPT;
	rec->rcpt = (uint32_t)i;
	rec->state = st;
	rec->time = mx_time_now();
	if (mx_strlcpy(rec->reply, reply, sizeof(rec->reply)) == -1)
		memcpy(rec->reply + sizeof(rec->reply) - 4, "...", 4);
}

static void
journal_failed_cb(unsigned int failed, int err, void *arg)
{
	if (failed > 0)
		*c_journal_failed += failed;
}

/* ---- Destinations -------------------------------------------------------- */

static struct relay_dest *
dest_find(const char *domain)
{
	struct relay_dest *d;

	for (d = S.dest_buckets[hash_str(domain, RELAY_DEST_BUCKETS)]; d != NULL; d = d->hnext)
		if (strcmp(d->domain, domain) == 0)
			return d;
	return NULL;
}

static void dest_on_timer(evutil_socket_t fd, short what, void *arg);

static struct relay_dest *
dest_get(const char *domain, bool ramp)
{
	struct relay_dest *d;
	size_t h;

	if ((d = dest_find(domain)) != NULL)
		return d;
	if ((d = calloc(1, sizeof(*d))) == NULL)
		return NULL;
	if (mx_strlcpy(d->domain, domain, sizeof(d->domain)) == -1 ||
	    (d->ev_timer = evtimer_new(mxd->base, dest_on_timer, d)) == NULL) {
		free(d);
		return NULL;
	}
	d->qtail = &d->qhead;
	d->last_used = wall_usec();
	if (ramp) {
		/* A backlog from before a restart drains like a destination coming back. */
		d->breaker = RB_RAMP;
		d->ramp_conc = 1;
		d->ramp_rate = RELAY_RAMP_RATE0;
		d->ramp_next_step = wall_usec() + RELAY_RAMP_STEP_USEC;
	}
	h = hash_str(domain, RELAY_DEST_BUCKETS);
	d->hnext = S.dest_buckets[h];
	S.dest_buckets[h] = d;
	d->all_next = S.dests;
	if (S.dests != NULL)
		S.dests->all_prev = d;
	S.dests = d;
	S.ndests++;
	return d;
}

static void
dest_route_cancel(struct relay_dest *d)
{
	size_t i;

	dns_cancel(&d->q_mx);
	for (i = 0; i < RELAY_MX_HOSTS_MAX; i++)
		dns_cancel(&d->aq[i].q);
	d->addr_pending = 0;
}

static void
dest_free(struct relay_dest *d)
{
	struct relay_dest **pp;

	for (pp = &S.dest_buckets[hash_str(d->domain, RELAY_DEST_BUCKETS)]; *pp != NULL;
	    pp = &(*pp)->hnext)
		if (*pp == d) {
			*pp = d->hnext;
			break;
		}
	if (d->all_prev != NULL)
		d->all_prev->all_next = d->all_next;
	else
		S.dests = d->all_next;
	if (d->all_next != NULL)
		d->all_next->all_prev = d->all_prev;
	S.ndests--;
	dest_route_cancel(d);
	event_free(d->ev_timer);
	free(d->plan);
	free(d->idle);
	free(d);
}

static unsigned int
dest_limit(const struct relay_dest *d)
{
	unsigned int lim = (unsigned int)mxd->conf->relay_destination_concurrency;

	switch (d->breaker) {
	case RB_OPEN:
		return 0;
	case RB_PROBE:
		return 1;
	case RB_RAMP:
		return d->ramp_conc < lim ? d->ramp_conc : lim;
	case RB_CLOSED:
	default:
		return lim;
	}
}

static void
dest_timer_at(struct relay_dest *d, uint64_t when)
{
	uint64_t now = wall_usec(), dt = when > now ? when - now : 0;
	struct timeval tv;

	tv.tv_sec = (time_t)(dt / USEC);
	tv.tv_usec = (suseconds_t)(dt % USEC);
	/* One timer serves pacing and ramp steps: keep the earlier wake-up. */
	if (!evtimer_pending(d->ev_timer, NULL) || when < d->timer_at) {
		d->timer_at = when;
		evtimer_add(d->ev_timer, &tv);
	}
}

/* Ramp: double connections and rate every interval without a failure. */
static void
dest_ramp_step(struct relay_dest *d, uint64_t now)
{
	unsigned int lim = (unsigned int)mxd->conf->relay_destination_concurrency;

	if (d->breaker != RB_RAMP || now < d->ramp_next_step)
		return;
	d->ramp_next_step = now + RELAY_RAMP_STEP_USEC;
	if (d->fails > 0)
		return;
	if (d->ramp_conc < lim)
		d->ramp_conc *= 2;
	if (d->ramp_rate < RELAY_RAMP_RATE_MAX)
		d->ramp_rate *= 2;
	if (d->ramp_conc >= lim && d->ramp_rate >= RELAY_RAMP_RATE_MAX) {
		d->breaker = RB_CLOSED;
		d->opens = 0;
		log_info("event=relay_dest_recovered domain=%s", d->domain);
	}
}

/* May another message start now?  Paced while ramping. */
static bool
dest_token(struct relay_dest *d, uint64_t now)
{
	if (d->breaker != RB_RAMP)
		return true;
	if (d->next_token > now) {
		dest_timer_at(d, d->next_token);
		return false;
	}
	if (d->next_token + USEC < now)
		d->next_token = now;	/* no credit for idle time */
	d->next_token += USEC / d->ramp_rate;
	return true;
}

static struct relay_job *
dest_pop(struct relay_dest *d)
{
	struct relay_job *j = d->qhead;

	if (j == NULL)
		return NULL;
	d->qhead = j->next;
	if (d->qhead == NULL)
		d->qtail = &d->qhead;
	j->next = NULL;
	d->queued--;
	return j;
}

/* Every recipient still waiting gets this result; the job goes back to its attempt. */
static void
job_settle(struct relay_job *job, enum queue_rcpt_state st, const char *status,
    const char *reply, bool parked)
{
	size_t i;

	for (i = 0; i < job->nrcpts; i++) {
		struct relay_result *r = &job->res[i];

		if (r->state != QUEUE_RCPT_PENDING)
			continue;
		r->state = st;
		mx_strlcpy(r->status, status, sizeof(r->status));
		if (mx_strlcpy(r->reply, reply, sizeof(r->reply)) == -1)
			memcpy(r->reply + sizeof(r->reply) - 4, "...", 4);
	}
	job->parked = parked;
	relay_sched_job_done(job);
}

/* Every queued job gets the same outcome (route decisions, breaker). */
static void
dest_settle_all(struct relay_dest *d, enum queue_rcpt_state st, const char *status,
    const char *reply, bool parked)
{
	struct relay_job *j;

	while ((j = dest_pop(d)) != NULL) {
		j->dest = NULL;		/* not counted as busy */
		job_settle(j, st, status, reply, parked);
	}
}

static void
dest_open_breaker(struct relay_dest *d, const char *why)
{
	uint64_t now = wall_usec(), span;
	char reply[QUEUE_REPLY_MAX + 1], safe[LOG_SAFE_MAX];

	d->opens++;
	span = backoff_usec(d->opens);
	d->breaker = RB_OPEN;
	d->down_until = now + span;
	d->fails = 0;
	mx_strlcpy(d->down_why, why, sizeof(d->down_why));
	(*c_breaker_open)++;
	log_safe(safe, sizeof(safe), why, strlen(why));
	log_warnx("event=relay_dest_down domain=%s retry_in_s=%llu error=%s", d->domain,
	    (unsigned long long)(span / USEC), safe);
	if (mx_snprintf(reply, sizeof(reply), "451 4.4.1 %s", why) == -1)
		memcpy(reply + sizeof(reply) - 4, "...", 4);
	dest_settle_all(d, QUEUE_RCPT_DEFERRED, "4.4.1", reply, true);
}

/* ---- Routing ------------------------------------------------------------- */

static void
dest_route_done(struct relay_dest *d)
{
	struct relay_mx_plan *p = d->plan;
	char why[LOG_SAFE_MAX];

	relay_mx_plan_route(p, S.ours, S.nours, mxd->conf->allow_private_targets, d->allow_v4,
	    d->port);
	d->route = RR_READY;
	d->route_fresh = true;
	d->route_expires = p->result == RELAY_MX_TEMPFAIL ? 0 :
	    wall_usec() + (uint64_t)RELAY_ROUTE_TTL * USEC;
	log_safe(why, sizeof(why), p->text, strlen(p->text));
	log_info("event=relay_route domain=%s result=%s targets=%zu refused=%zu%s%s",
	    d->domain, p->result == RELAY_MX_ROUTE ? "route" : p->result == RELAY_MX_BOUNCE ?
	    "bounce" : "tempfail", p->ntargets, p->refused, p->text[0] ? " why=" : "",
	    p->text[0] ? why : "");
	relay_dest_kick(d);
}

static void
dest_addr_cb(const struct dns_result *res, void *arg)
{
	struct relay_addr_query *aq = arg;
	struct relay_dest *d = aq->dest;

	aq->q = NULL;
	relay_mx_host_addrs(d->plan, aq->i, res->status, res->addrs, res->naddrs);
	if (--d->addr_pending == 0)
		dest_route_done(d);
}

static void
dest_resolve_hosts(struct relay_dest *d)
{
	struct relay_mx_plan *p = d->plan;
	size_t i, n = p->nhosts;

	if (p->result != RELAY_MX_ROUTE) {
		dest_route_done(d);
		return;
	}
	d->addr_pending = n;
	for (i = 0; i < n; i++) {
		struct addr_hostport hp;
		struct sockaddr_storage ss;
		socklen_t sl;
		const char *err;

		/* A literal relay host needs no lookup. */
		if (addr_parse_hostport(p->hosts[i].name, 0, &hp, &err) == 0 &&
		    hp.kind != ADDR_HOST_NAME && addr_hostport_sockaddr(&hp, &ss, &sl) == 0) {
			relay_mx_host_addrs(p, i, DNS_OK, &ss, 1);
			d->addr_pending--;
			continue;
		}
		d->aq[i].dest = d;
		d->aq[i].i = i;
		/*
		 * A as well even when IPv4 is not allowed: a host with one of our
		 * IPv4 addresses is us, and relay_mx_plan_route() needs to see it.
		 */
		d->aq[i].q = dns_lookup_addrs(mxd->dns, p->hosts[i].name, true, true,
		    RELAY_DNS_TIMEOUT, dest_addr_cb, &d->aq[i]);
		if (d->aq[i].q == NULL) {
			relay_mx_host_addrs(p, i, DNS_ERROR, NULL, 0);
			d->addr_pending--;
		}
	}
	if (d->addr_pending == 0)
		dest_route_done(d);
}

static void
dest_mx_cb(const struct dns_result *res, void *arg)
{
	struct relay_dest *d = arg;
	struct relay_mx_record recs[DNS_RR_MAX];
	size_t n = 0;

	d->q_mx = NULL;
	if (res->status == DNS_OK && res->answer != NULL)
		n = relay_mx_records(res->answer, recs, DNS_RR_MAX);
	relay_mx_plan_mx(d->plan, d->domain, res->status, recs, n, mxd->conf->hostname,
	    relay_rng, NULL);
	dest_resolve_hosts(d);
}

static void
dest_route_start(struct relay_dest *d)
{
	const struct domain *dom;
	struct addr_hostport hp;
	int r = 1;

	dest_route_cancel(d);
	if (d->plan == NULL && (d->plan = malloc(sizeof(*d->plan))) == NULL) {
		dest_settle_all(d, QUEUE_RCPT_DEFERRED, "4.3.0", "451 4.3.0 out of memory", false);
		return;
	}
	d->route = RR_RESOLVING;
	dom = domain_table_exact(mxd->domains, d->domain, strlen(d->domain));
	d->port = (uint16_t)mxd->conf->relay_mx_port;
	if (dom != NULL) {
		d->tls_required = dom->relay_tls == REG_TLS_REQUIRE;
		d->allow_v4 = mxd->conf->relay_allow_ipv4;
		r = domain_relay_target(dom, &hp);
	} else {
		/*
		 * Not one of our customers: a DSN going back to a sender on the
		 * internet, which may well be IPv4-only.
		 */
		d->tls_required = false;
		d->allow_v4 = true;
	}
	if (r == 0) {
		relay_mx_plan_explicit(d->plan, d->domain, hp.host);
		d->port = hp.port != 0 ? hp.port : 25;
		dest_resolve_hosts(d);
		return;
	}
	if (r == -1) {
		relay_mx_plan_explicit(d->plan, d->domain, "");
		dest_route_done(d);
		return;
	}
	memset(d->plan, 0, sizeof(*d->plan));
	d->q_mx = dns_lookup_mx(mxd->dns, d->domain, RELAY_DNS_TIMEOUT, dest_mx_cb, d);
	if (d->q_mx == NULL) {
		relay_mx_plan_mx(d->plan, d->domain, DNS_ERROR, NULL, 0, mxd->conf->hostname,
		    relay_rng, NULL);
		dest_route_done(d);
	}
}

/* ---- Driving a destination ------------------------------------------------ */

static void
starved_add(struct relay_dest *d)
{
	if (d->starved)
		return;
	d->starved = true;
	d->starved_next = NULL;
	*S.starved_tail = d;
	S.starved_tail = &d->starved_next;
}

static void
starved_run(void)
{
	struct relay_dest *d;

	while (S.starved_head != NULL &&
	    S.total_conns < (size_t)mxd->conf->relay_max_concurrency) {
		d = S.starved_head;
		S.starved_head = d->starved_next;
		if (S.starved_head == NULL)
			S.starved_tail = &S.starved_head;
		d->starved = false;
		relay_dest_kick(d);
	}
}

static void
dest_give(struct relay_dest *d, struct relay_conn *c, struct relay_job *j)
{
	d->nbusy++;
	j->busy = true;
	relay_conn_send(c, j);
}

static void
relay_dest_kick(struct relay_dest *d)
{
	struct relay_conn_params p;
	struct relay_conn *c;
	struct relay_job *j;
	char reply[QUEUE_REPLY_MAX + 1];
	uint64_t now = wall_usec();
	size_t waiting;

	d->last_used = now;
	if (d->queued == 0)
		return;
	if (S.stopping) {
		dest_settle_all(d, QUEUE_RCPT_DEFERRED, "4.3.2",
		    "451 4.3.2 not tried: mxedged is shutting down", true);
		return;
	}
	if (d->route == RR_RESOLVING)
		return;
	if (d->route == RR_NONE ||
	    (now >= d->route_expires && !d->route_fresh && d->nconns == 0)) {
		dest_route_start(d);
		return;
	}
	d->route_fresh = false;
	if (d->plan->result != RELAY_MX_ROUTE) {
		bool bounce = d->plan->result == RELAY_MX_BOUNCE;

		if (mx_snprintf(reply, sizeof(reply), "%03d %s %s", d->plan->code,
		    d->plan->status, d->plan->text) == -1)
			memcpy(reply + sizeof(reply) - 4, "...", 4);
		dest_settle_all(d, bounce ? QUEUE_RCPT_FAILED : QUEUE_RCPT_DEFERRED,
		    d->plan->status, reply, false);
		return;
	}
	if (d->breaker == RB_OPEN) {
		if (now < d->down_until) {
			if (mx_snprintf(reply, sizeof(reply), "451 4.4.1 not tried: %s is down: %s",
			    d->domain, d->down_why) == -1)
				memcpy(reply + sizeof(reply) - 4, "...", 4);
			dest_settle_all(d, QUEUE_RCPT_DEFERRED, "4.4.1", reply, true);
			return;
		}
		d->breaker = RB_PROBE;
		log_info("event=relay_dest_probe domain=%s", d->domain);
	}
	dest_ramp_step(d, now);
	if (d->breaker == RB_RAMP)
		dest_timer_at(d, d->ramp_next_step);

	/* Idle connections first: no set-up cost. */
	while (d->queued > 0 && d->nidle > 0) {
		if (!dest_token(d, now))
			return;
		c = d->idle[--d->nidle];
		dest_give(d, c, dest_pop(d));
	}
	/* Then new connections, no more than there are jobs waiting for one. */
	for (;;) {
		waiting = d->nconns - d->nbusy - d->nidle;	/* still setting up */
		if (d->queued <= waiting || d->nconns >= dest_limit(d))
			return;
		if (S.total_conns >= (size_t)mxd->conf->relay_max_concurrency) {
			starved_add(d);
			return;
		}
		memset(&p, 0, sizeof(p));
		p.domain = d->domain;
		p.targets = d->plan->targets;
		p.ntargets = d->plan->ntargets;
		p.tls_required = d->tls_required;
		p.creds = S.creds;
		if (relay_conn_open(d, &p) == NULL) {
			j = dest_pop(d);
			j->dest = NULL;
			job_settle(j, QUEUE_RCPT_DEFERRED, "4.3.0",
			    "451 4.3.0 cannot open a connection (out of memory)", false);
			return;
		}
		d->nconns++;
		S.total_conns++;
	}
}

static void
dest_on_timer(evutil_socket_t fd, short what, void *arg)
{
	relay_dest_kick(arg);
}

void
relay_sched_conn_ready(struct relay_conn *c, struct relay_dest *d)
{
	uint64_t now = wall_usec();

	d->fails = 0;
	if (d->breaker == RB_PROBE) {
		d->breaker = RB_RAMP;
		d->ramp_conc = 1;
		d->ramp_rate = RELAY_RAMP_RATE0;
		d->next_token = now;
		d->ramp_next_step = now + RELAY_RAMP_STEP_USEC;
		log_info("event=relay_dest_up domain=%s drain=ramp", d->domain);
	}
	if (S.stopping) {
		relay_conn_quit(c);
		return;
	}
	if (d->queued > 0 && dest_token(d, now)) {
		dest_give(d, c, dest_pop(d));
		return;
	}
	if (d->nidle == d->idle_cap) {
		size_t n = d->idle_cap ? d->idle_cap * 2 : 4;
		struct relay_conn **ni = realloc(d->idle, n * sizeof(*ni));

		if (ni == NULL) {
			relay_conn_quit(c);
			return;
		}
		d->idle = ni;
		d->idle_cap = n;
	}
	d->idle[d->nidle++] = c;
}

void
relay_sched_conn_closed(struct relay_conn *c, struct relay_dest *d, bool setup_failed,
    const char *status, const char *why)
{
	char reply[QUEUE_REPLY_MAX + 1];
	struct relay_job *j;
	size_t i;

	for (i = 0; i < d->nidle; i++)
		if (d->idle[i] == c) {
			d->idle[i] = d->idle[--d->nidle];
			break;
		}
	d->nconns--;
	S.total_conns--;
	if (setup_failed) {
		d->fails++;
		if (mx_snprintf(reply, sizeof(reply), "451 %s %s", status, why) == -1)
			memcpy(reply + sizeof(reply) - 4, "...", 4);
		/* The connection was opened for the job at the head: that attempt failed. */
		if ((j = dest_pop(d)) != NULL) {
			j->dest = NULL;
			mx_strlcpy(j->remote, d->plan != NULL && d->plan->ntargets > 0 ?
			    d->plan->targets[0].name : "", sizeof(j->remote));
			job_settle(j, QUEUE_RCPT_DEFERRED, status, reply, false);
		}
		if (d->breaker == RB_PROBE || d->fails >= RELAY_BREAKER_FAILURES) {
			dest_open_breaker(d, why);
		} else if (d->breaker == RB_RAMP) {
			/* Slow down again before trying harder. */
			d->ramp_conc = 1;
			d->ramp_rate = RELAY_RAMP_RATE0;
		}
		/* A failing route may have changed: look it up again next time. */
		d->route_expires = 0;
	}
	if (!S.stopping) {
		relay_dest_kick(d);
		starved_run();
	}
}

/* ---- Attempts ------------------------------------------------------------ */

static const char *
rcpt_domain(const char *addr)
{
	const char *at = strrchr(addr, '@');

	return at != NULL ? at + 1 : NULL;
}

static int64_t
domain_lifetime(const char *domain)
{
	const struct domain *dom = NULL;

	if (domain != NULL)
		dom = domain_table_exact(mxd->domains, domain, strlen(domain));
	if (dom != NULL && dom->lifetime > 0)
		return dom->lifetime;
	return mxd->conf->queue_lifetime;
}

static void
attempt_free(struct relay_attempt *att)
{
	size_t i;

	for (i = 0; i < att->njobs; i++)
		free(att->jobs[i]);
	free(att->jobs);
	free(att->prev_updated);
	free(att->journaled);
	queue_envelope_clear(&att->env);
	free(att);
}

static struct relay_job *
job_new(struct relay_attempt *att, size_t n)
{
	struct relay_job *j;
	size_t sz = sizeof(*j) + n * sizeof(size_t) + n * sizeof(struct relay_result);

	if ((j = calloc(1, sz)) == NULL)
		return NULL;
	j->rcpt = (size_t *)(void *)(j + 1);
	j->res = (struct relay_result *)(void *)(j->rcpt + n);
	j->msg = att->msg;
	j->env = &att->env;
	return j;
}

static enum relay_reason
reason_of(const char *status, bool parked)
{
	if (parked)
		return RR_REASON_BREAKER;
	if (strncmp(status, "4.4.1", 5) == 0)
		return RR_REASON_CONNECT;
	if (strncmp(status, "4.4.3", 5) == 0 || strncmp(status, "4.4.4", 5) == 0)
		return RR_REASON_DNS;
	if (strncmp(status, "4.7.", 4) == 0)
		return RR_REASON_TLS;
	if (strncmp(status, "4.4.2", 5) == 0)
		return RR_REASON_LOST;
	if (strncmp(status, "4.3.", 4) == 0)
		return RR_REASON_LOCAL;
	return RR_REASON_REPLY;
}

/* Group the waiting recipients by domain and queue one job per destination. */
static void
attempt_start(struct relay_msg *m)
{
	struct relay_attempt *att;
	struct relay_job *j;
	char dom[DNS_NAME_BUF], reply[QUEUE_REPLY_MAX + 1];
	struct relay_dest **dests;
	const char *rd, *err;
	size_t i, k, n;
	bool *taken;

	if ((att = calloc(1, sizeof(*att))) == NULL)
		return;
	att->msg = m;
	if (queue_load(m->id, &att->env) == -1) {
		int e = errno;

		free(att);
		if (e == ENOENT || e == EBADMSG) {
			log_info("event=relay_gone id=%s reason=%s", m->id,
			    e == ENOENT ? "removed" : "corrupt");
			msg_forget(m);
			return;
		}
		log_warnx("event=relay_load_failed id=%s error=\"%s\"", m->id, strerror(e));
		msg_schedule(m, wall_usec() + backoff_usec(1));
		return;
	}
	msg_count_pending(m, &att->env);
	m->attempts = att->env.attempts;
	/* m->held, not the journal's: a HOLD record may still be on its way to the disk. */
	if (m->held) {
		attempt_free(att);
		return;
	}
	n = att->env.nrcpts;
	att->prev_updated = calloc(n ? n : 1, sizeof(*att->prev_updated));
	att->journaled = calloc(n ? n : 1, sizeof(*att->journaled));
	att->jobs = calloc(n ? n : 1, sizeof(*att->jobs));
	taken = calloc(n ? n : 1, sizeof(*taken));
	if (att->prev_updated == NULL || att->journaled == NULL || att->jobs == NULL ||
	    taken == NULL) {
		free(taken);
		attempt_free(att);
		msg_schedule(m, wall_usec() + backoff_usec(1));
		return;
	}
	for (i = 0; i < n; i++) {
		att->prev_updated[i] = att->env.rcpts[i].updated;
		if (att->env.rcpts[i].state == QUEUE_RCPT_DELIVERED ||
		    att->env.rcpts[i].state == QUEUE_RCPT_FAILED)
			taken[i] = true;
	}
	m->att = att;
	heap_remove(m);
	S.active++;

	for (i = 0; i < n; i++) {
		size_t cnt = 0;

		if (taken[i])
			continue;
		rd = rcpt_domain(att->env.rcpts[i].addr);
		if (rd == NULL || addr_domain_normalize(rd, strlen(rd), dom, &err) == -1)
			dom[0] = '\0';
		for (k = i; k < n; k++) {
			const char *kd = rcpt_domain(att->env.rcpts[k].addr);

			if (!taken[k] && kd != NULL && rd != NULL && strcasecmp(kd, rd) == 0)
				cnt++;
		}
		if (cnt == 0)
			cnt = 1;
		if ((j = job_new(att, cnt)) == NULL)
			break;
		att->jobs[att->njobs++] = j;
		for (k = i; k < n && j->nrcpts < cnt; k++) {
			const char *kd = rcpt_domain(att->env.rcpts[k].addr);

			if (taken[k] || (k != i && (kd == NULL || rd == NULL ||
			    strcasecmp(kd, rd) != 0)))
				continue;
			taken[k] = true;
			j->rcpt[j->nrcpts++] = k;
		}
	}
	free(taken);
	if (att->njobs == 0) {
		relay_attempt_end(att);
		return;
	}
	if ((dests = calloc(att->njobs, sizeof(*dests))) == NULL) {
		/* Nothing queued yet: try again later. */
		m->att = NULL;
		S.active--;
		attempt_free(att);
		msg_schedule(m, wall_usec() + backoff_usec(1));
		return;
	}
	/* One extra reference: jobs may finish (and end the attempt) while we queue them. */
	att->left = att->njobs + 1;
	for (i = 0; i < att->njobs; i++) {
		struct relay_dest *d = NULL;

		j = att->jobs[i];
		rd = rcpt_domain(att->env.rcpts[j->rcpt[0]].addr);
		if (rd != NULL && addr_domain_normalize(rd, strlen(rd), dom, &err) == 0)
			d = dest_get(dom, m->restored && m->attempts > 0);
		if (d == NULL) {
			mx_snprintf(reply, sizeof(reply), "550 5.1.2 bad destination domain "
			    "in <%s>", att->env.rcpts[j->rcpt[0]].addr);
			job_settle(j, QUEUE_RCPT_FAILED, "5.1.2", reply, false);
			continue;
		}
		j->dest = d;
		dests[i] = d;
		*d->qtail = j;
		d->qtail = &j->next;
		d->queued++;
	}
	for (i = 0; i < att->njobs; i++)
		if (dests[i] != NULL)
			relay_dest_kick(dests[i]);
	free(dests);
	if (--att->left == 0)
		relay_attempt_end(att);
}

void
relay_sched_job_done(struct relay_job *job)
{
	struct relay_attempt *att = job->msg->att;
	struct relay_msg *m = job->msg;
	int64_t now = mx_time_now(), deadline;
	const char *rd;
	size_t i;

	if (job->busy) {
		job->dest->nbusy--;
		job->busy = false;
	}
	job->dest = NULL;
	rd = job->nrcpts > 0 ? rcpt_domain(att->env.rcpts[job->rcpt[0]].addr) : NULL;
	deadline = m->arrival + domain_lifetime(rd);
	for (i = 0; i < job->nrcpts; i++) {
		struct relay_result *r = &job->res[i];

		if (r->state == QUEUE_RCPT_PENDING) {
			r->state = QUEUE_RCPT_DEFERRED;
			mx_strlcpy(r->status, "4.4.2", sizeof(r->status));
			mx_strlcpy(r->reply, "451 4.4.2 not attempted", sizeof(r->reply));
		}
		/* Lifetime is per message (PITFALLS 23): it ends at arrival + lifetime. */
		if (r->state == QUEUE_RCPT_DEFERRED && now >= deadline) {
			(*c_expired)++;
			r->state = QUEUE_RCPT_FAILED;
			mx_strlcpy(r->status, "4.4.7", sizeof(r->status));
			/* Giving up is a decision, parked or not: it is recorded and reported. */
			job->parked = false;
		}
	}
	/*
	 * Delivered recipients of a multi-destination message: record them now,
	 * not when the slowest destination is done.  Later records of this
	 * message queue up behind these on the same journal worker.
	 */
	if (att->left > 1) {
		struct queue_journal_rec rec;

		for (i = 0; i < job->nrcpts; i++) {
			if (job->res[i].state != QUEUE_RCPT_DELIVERED)
				continue;
			rec_rcpt(&rec, job->rcpt[i], QUEUE_RCPT_DELIVERED, job->res[i].reply);
			if (relay_journal_submit(m->id, &rec, 1, journal_failed_cb, NULL) == 0)
				att->journaled[job->rcpt[i]] = true;
		}
	}
	if (--att->left == 0)
		relay_attempt_end(att);
}

/* Log one line per recipient result. */
static void
log_result(const struct relay_attempt *att, const struct relay_job *j, size_t i,
    const char *what)
{
	char to[LOG_SAFE_MAX], reply[LOG_SAFE_MAX];
	const struct queue_rcpt *rc = &att->env.rcpts[j->rcpt[i]];

	log_safe(to, sizeof(to), rc->addr, strlen(rc->addr));
	log_safe(reply, sizeof(reply), j->res[i].reply, strlen(j->res[i].reply));
	log_info("event=relay_result id=%s to=%s relay=%s status=%s dsn=%s attempts=%u "
	    "delay_s=%lld tls=%s reply=%s", att->msg->id, to, j->remote[0] ? j->remote : "-", what,
	    j->res[i].status, att->msg->attempts + 1,
	    (long long)(mx_time_now() - att->msg->arrival), j->tls ? "yes" : "no", reply);
}

static bool
notify_allows(const struct queue_rcpt *rc, unsigned int bit)
{
	if (rc->notify & QUEUE_NOTIFY_NEVER)
		return false;
	/* RFC 3461 §4.1: no NOTIFY means FAILURE (and DELAY at our discretion). */
	return rc->notify == 0 || (rc->notify & bit);
}

static void relay_dsn_done(bool ok, const char *id, void *arg);

/*
 * Compose and queue a DSN about the listed recipients of att's message.
 * Returns 0 when the DSN was handed to the queue (done_cb follows), -1 if
 * it could not be built.
 */
static int
dsn_queue(struct relay_attempt *att, enum relay_bounce_action action,
    const struct relay_bounce_rcpt *brc, size_t nbrc, int64_t retry_until, void *cbarg)
{
	const struct queue_envelope *oenv = &att->env;
	struct queue_envelope env;
	struct queue_writer *w;
	struct queue_rcpt *rc;
	struct relay_bounce b;
	struct mx_buf out;
	unsigned char *orig = NULL;
	uint64_t off = 0, len = 0, want;
	char boundary[96], msgid[160];
	const char *p;
	int fd;
	ssize_t got = 0;

	memset(&b, 0, sizeof(b));
	queue_envelope_init(&env);
	mx_buf_init(&out, 0);
	if (queue_id_generate(env.id) == -1)
		goto fail;
	fd = queue_body_open(oenv->id, &off, &len);
	if (fd != -1) {
		bool full = oenv->ret == QUEUE_RET_FULL && action == RELAY_BOUNCE_FAILED &&
		    len <= RELAY_DSN_FULL_MAX;

		want = full ? len : (len < RELAY_DSN_HEADERS_MAX ? len : RELAY_DSN_HEADERS_MAX);
		if ((orig = malloc(want ? want : 1)) != NULL)
			got = pread(fd, orig, want, (off_t)off);
		close(fd);
		if (orig == NULL || got < 0 || (uint64_t)got != want)
			goto fail;
		b.full = full;
	}
	mx_snprintf(boundary, sizeof(boundary), "=_mxedge_%s_%08x%08x", env.id,
	    mx_random_u32(), mx_random_u32());
	mx_snprintf(msgid, sizeof(msgid), "%s.dsn@%s", env.id, mxd->conf->hostname);
	b.action = action;
	b.reporting_mta = mxd->conf->hostname;
	b.queue_id = oenv->id;
	b.message_id = msgid;
	b.boundary = boundary;
	b.sender = oenv->sender;
	b.envid = oenv->envid;
	b.arrival = oenv->arrival;
	b.now = mx_time_now();
	b.retry_until = retry_until;
	b.rcpts = brc;
	b.nrcpts = nbrc;
	b.eight_bit = oenv->body == QUEUE_BODY_8BITMIME || oenv->smtputf8;
	if (relay_bounce_compose(&b, orig, (size_t)got, &out) == -1)
		goto fail;

	env.arrival = mx_time_now();
	env.next_attempt = env.arrival;
	env.sender[0] = '\0';		/* a DSN never gets a DSN */
	mx_strlcpy(env.helo, mxd->conf->hostname, sizeof(env.helo));
	env.body = b.eight_bit ? QUEUE_BODY_8BITMIME : QUEUE_BODY_7BIT;
	/*
	 * Our own header is ASCII; only a UTF-8 address to send it to needs
	 * SMTPUTF8 (the original's 8-bit header inside is 8BITMIME's business).
	 */
	for (p = oenv->sender; *p != '\0'; p++)
		if ((unsigned char)*p >= 0x80)
			env.smtputf8 = true;
	if ((rc = queue_envelope_add_rcpt(&env)) == NULL)
		goto fail;
	mx_strlcpy(rc->addr, oenv->sender, sizeof(rc->addr));
	if ((w = queue_writer_open(&env)) == NULL)
		goto fail;
	queue_writer_body(w, out.data, out.len);
	log_info("event=relay_dsn id=%s dsn_id=%s action=%s to=<%s> rcpts=%zu", oenv->id,
	    env.id, action == RELAY_BOUNCE_FAILED ? "failed" : "delayed", oenv->sender, nbrc);
	queue_writer_commit(w, relay_dsn_done, cbarg);
	free(orig);
	mx_buf_free(&out);
	queue_envelope_clear(&env);
	return 0;
fail:
	log_warnx("event=relay_dsn_failed id=%s error=\"%s\"", oenv->id, strerror(errno));
	free(orig);
	mx_buf_free(&out);
	queue_envelope_clear(&env);
	return -1;
}

static void attempt_finish(struct relay_attempt *att, bool dsn_ok);
static void attempt_recorded(unsigned int failed, int err, void *arg);
static void attempt_abandon(struct relay_attempt *att);
static void attempt_done(unsigned int failed, int err, void *arg);

static void
relay_dsn_done(bool ok, const char *id, void *arg)
{
	struct relay_attempt *att = arg;

	if (ok)
		(*c_dsn)++;
	else
		(*c_dsn_failed)++;
	if (att != NULL)
		attempt_finish(att, ok);
}

/* Facts for the DSN about rcpt k of job j. */
static void
dsn_rcpt(const struct relay_attempt *att, const struct relay_job *j, size_t k,
    struct relay_bounce_rcpt *out)
{
	const struct queue_rcpt *rc = &att->env.rcpts[j->rcpt[k]];

	out->addr = rc->addr;
	out->orcpt = rc->orcpt;
	out->status = j->res[k].status;
	/* Only a reply the primary really sent is its Diagnostic-Code. */
	out->diag = j->res[k].reply;
	out->remote_mta = j->remote;
	out->last_attempt = j->parked ? 0 : mx_time_now();
}

/* All jobs are back: decide, record, tell the sender, reschedule or remove. */
static void
relay_attempt_end(struct relay_attempt *att)
{
	struct relay_msg *m = att->msg;
	struct queue_journal_rec *recs;
	size_t i, k, nrecs = 0;
	bool all_done = true, any_tried = false;

	for (i = 0; i < att->njobs; i++) {
		const struct relay_job *j = att->jobs[i];

		if (!j->parked)
			any_tried = true;
		for (k = 0; k < j->nrcpts; k++) {
			const char *what = j->res[k].state == QUEUE_RCPT_DELIVERED ? "sent" :
			    j->res[k].state == QUEUE_RCPT_FAILED ? "bounced" : "deferred";

			if (j->res[k].state == QUEUE_RCPT_DEFERRED)
				all_done = false;
			if (j->res[k].state == QUEUE_RCPT_DELIVERED)
				(*c_delivered)++;
			else if (j->res[k].state == QUEUE_RCPT_FAILED)
				(*c_bounced)++;
			else {
				(*c_deferred)++;
				reasons[reason_of(j->res[k].status, j->parked)]++;
			}
			log_result(att, j, k, what);
		}
	}
	if (m->deleted) {
		attempt_finish(att, true);
		return;
	}
	/* Not tried at all (breaker open, shutting down): nothing to record. */
	if (!any_tried) {
		attempt_finish(att, true);
		return;
	}
	/* Everything delivered: removing the message is the record. */
	if (all_done) {
		bool any_failed = false;

		for (i = 0; i < att->njobs; i++)
			for (k = 0; k < att->jobs[i]->nrcpts; k++)
				if (att->jobs[i]->res[k].state == QUEUE_RCPT_FAILED)
					any_failed = true;
		if (!any_failed) {
			attempt_finish(att, true);
			return;
		}
	}
	/* Record delivered and deferred results before acting on them. */
	if ((recs = calloc(att->env.nrcpts ? att->env.nrcpts : 1, sizeof(*recs))) == NULL) {
		attempt_abandon(att);
		return;
	}
	for (i = 0; i < att->njobs; i++) {
		const struct relay_job *j = att->jobs[i];

		for (k = 0; k < j->nrcpts; k++) {
			size_t r = j->rcpt[k];

			if (j->res[k].state == QUEUE_RCPT_DELIVERED && !att->journaled[r]) {
				rec_rcpt(&recs[nrecs++], r, QUEUE_RCPT_DELIVERED, j->res[k].reply);
				att->journaled[r] = true;
			} else if (j->res[k].state == QUEUE_RCPT_DEFERRED && !j->parked) {
				rec_rcpt(&recs[nrecs++], r, QUEUE_RCPT_DEFERRED, j->res[k].reply);
			}
		}
	}
	if (nrecs > 0 && relay_journal_submit(m->id, recs, nrecs, attempt_recorded, att) == 0) {
		free(recs);
		return;		/* attempt_recorded() goes on */
	}
	free(recs);
	attempt_recorded(nrecs > 0 ? (unsigned int)nrecs : 0, nrecs > 0 ? ENOMEM : 0, att);
}

/* The DELIVERED and DEFERRED records are durable (or failed, counted): now the DSN. */
static void
attempt_recorded(unsigned int failed, int err, void *arg)
{
	struct relay_attempt *att = arg;
	struct relay_msg *m = att->msg;
	struct relay_bounce_rcpt *brc = NULL;
	size_t i, k, nb = 0;

	if (failed > 0)
		*c_journal_failed += failed;
	/* Failures the sender wants to hear about. */
	if ((brc = calloc(att->env.nrcpts ? att->env.nrcpts : 1, sizeof(*brc))) != NULL) {
		for (i = 0; i < att->njobs; i++) {
			const struct relay_job *j = att->jobs[i];

			for (k = 0; k < j->nrcpts; k++)
				if (j->res[k].state == QUEUE_RCPT_FAILED &&
				    notify_allows(&att->env.rcpts[j->rcpt[k]],
				    QUEUE_NOTIFY_FAILURE))
					dsn_rcpt(att, j, k, &brc[nb++]);
		}
	}
	if (nb > 0 && m->sender[0] == '\0') {
		/* A bounce has a null sender: it never bounces (no loops, no backscatter). */
		(*c_dsn_suppressed)++;
		log_info("event=relay_dsn_suppressed id=%s reason=null_sender rcpts=%zu",
		    m->id, nb);
		nb = 0;
	}
	if (nb > 0) {
		att->dsn_pending = true;
		if (dsn_queue(att, RELAY_BOUNCE_FAILED, brc, nb, 0, att) == 0) {
			free(brc);
			return;		/* relay_dsn_done() finishes */
		}
		free(brc);
		attempt_finish(att, false);
		return;
	}
	free(brc);
	attempt_finish(att, true);
}

/* Delay warnings (queue_delay_warning): once per recipient, when it first crosses the age. */
static void
attempt_warn(struct relay_attempt *att, int64_t retry_until)
{
	struct relay_bounce_rcpt *brc;
	int64_t warn_at = att->env.arrival + mxd->conf->queue_delay_warning;
	int64_t now = mx_time_now();
	size_t i, k, nb = 0;

	if (mxd->conf->queue_delay_warning <= 0 || now < warn_at || att->msg->sender[0] == '\0')
		return;
	if ((brc = calloc(att->env.nrcpts ? att->env.nrcpts : 1, sizeof(*brc))) == NULL)
		return;
	for (i = 0; i < att->njobs; i++) {
		const struct relay_job *j = att->jobs[i];

		for (k = 0; k < j->nrcpts; k++) {
			size_t r = j->rcpt[k];

			/* A deferral recorded after warn_at means the warning went out then. */
			if (j->res[k].state != QUEUE_RCPT_DEFERRED || j->parked ||
			    att->prev_updated[r] >= warn_at ||
			    !notify_allows(&att->env.rcpts[r], QUEUE_NOTIFY_DELAY))
				continue;
			dsn_rcpt(att, j, k, &brc[nb++]);
		}
	}
	if (nb > 0 && dsn_queue(att, RELAY_BOUNCE_DELAYED, brc, nb, retry_until, NULL) == 0)
		(*c_warnings)++;
	free(brc);
}

/*
 * Out of memory for the records: the attempt is dropped without a record
 * and the message is tried again later (nothing is lost; a delivered
 * recipient may be sent twice, which the log says).
 */
static void
attempt_abandon(struct relay_attempt *att)
{
	struct relay_msg *m = att->msg;

	log_warnx("event=relay_record_failed id=%s error=\"out of memory\"", m->id);
	m->att = NULL;
	S.active--;
	attempt_free(att);
	msg_schedule(m, wall_usec() + backoff_usec(1));
}

/* After the DSN (if any) is durable: FAILED and RETRY records, then remove or reschedule. */
static void
attempt_finish(struct relay_attempt *att, bool dsn_ok)
{
	struct relay_msg *m = att->msg;
	struct queue_journal_rec *recs;
	uint64_t now = wall_usec(), next = 0, base, down = 0;
	int64_t deadline = 0, dl;
	size_t i, k, nrecs = 0;
	bool all_final = true, any_tried = false, record_failed;

	/* Without a durable DSN the failures stay unrecorded: tried (and bounced) again. */
	record_failed = (dsn_ok || !att->dsn_pending) && !m->deleted;
	if ((recs = calloc(att->env.nrcpts + 1, sizeof(*recs))) == NULL) {
		attempt_abandon(att);
		return;
	}
	for (i = 0; i < att->njobs; i++) {
		struct relay_job *j = att->jobs[i];
		const char *rd;

		if (!j->parked)
			any_tried = true;
		rd = j->nrcpts > 0 ? rcpt_domain(att->env.rcpts[j->rcpt[0]].addr) : NULL;
		dl = m->arrival + domain_lifetime(rd);
		if (deadline == 0 || dl < deadline)
			deadline = dl;
		for (k = 0; k < j->nrcpts; k++) {
			size_t r = j->rcpt[k];

			switch (j->res[k].state) {
			case QUEUE_RCPT_DELIVERED:
				att->env.rcpts[r].state = QUEUE_RCPT_DELIVERED;
				break;
			case QUEUE_RCPT_FAILED:
				if (!record_failed) {
					all_final = false;
					break;
				}
				rec_rcpt(&recs[nrecs++], r, QUEUE_RCPT_FAILED, j->res[k].reply);
				att->env.rcpts[r].state = QUEUE_RCPT_FAILED;
				break;
			default:
				all_final = false;
				if (j->parked) {
					/* Parked: due again when its destination may be back. */
					struct relay_dest *d = NULL;
					const char *dd = rcpt_domain(att->env.rcpts[r].addr);
					char dom[DNS_NAME_BUF];
					const char *err;

					if (dd != NULL && addr_domain_normalize(dd, strlen(dd), dom,
					    &err) == 0)
						d = dest_find(dom);
					if (d != NULL && d->down_until > down)
						down = d->down_until;
				}
				break;
			}
		}
	}
	msg_count_pending(m, &att->env);
	att->all_final = all_final;
	att->any_tried = any_tried;

	if (!m->deleted && !all_final && !(S.stopping && !any_tried)) {
		if (!any_tried) {
			/* Parked by an open breaker: spread the wake-ups, record nothing. */
			base = backoff_usec(m->attempts > 0 ? m->attempts : 1);
			next = (down > now ? down : now + base) + jitter(base / 4 + 1);
		} else {
			m->attempts++;
			base = backoff_usec(m->attempts);
			/* Jitter: a queue deferred together does not come back together. */
			next = now + base - jitter(base / 4 + 1);
			if (down > next)
				next = down + jitter(base / 4 + 1);
			if (deadline > 0 && next > (uint64_t)deadline * USEC &&
			    (uint64_t)deadline * USEC > now)
				next = (uint64_t)deadline * USEC;
			memset(&recs[nrecs], 0, sizeof(recs[0]));
			recs[nrecs].type = QUEUE_JOURNAL_RETRY;
			recs[nrecs].time = (int64_t)((next + USEC - 1) / USEC);
			recs[nrecs].attempts = m->attempts;
			nrecs++;
		}
	}
	att->next = next;
	att->deadline = deadline;
	if (nrecs > 0 && relay_journal_submit(m->id, recs, nrecs, attempt_done, att) == 0) {
		free(recs);
		return;		/* attempt_done() ends it */
	}
	free(recs);
	attempt_done(nrecs > 0 ? (unsigned int)nrecs : 0, nrecs > 0 ? ENOMEM : 0, att);
}

/* Everything about this attempt is recorded: remove the message or schedule the next try. */
static void
attempt_done(unsigned int failed, int err, void *arg)
{
	struct relay_attempt *att = arg;
	struct relay_msg *m = att->msg;

	if (failed > 0)
		*c_journal_failed += failed;
	m->att = NULL;
	if (S.active-- == RELAY_ACTIVE_MAX)
		relay_due_arm();	/* the schedule waited for room */

	if (m->deleted || att->all_final) {
		attempt_free(att);
		msg_remove_later(m);
		return;
	}
	if (S.stopping && !att->any_tried) {
		attempt_free(att);
		return;		/* reloaded at the next start */
	}
	/* The message went away under us (deleted by hand, or moved to corrupt/). */
	if (failed > 0 && err == ENOENT) {
		attempt_free(att);
		msg_forget(m);
		return;
	}
	if (att->any_tried)
		attempt_warn(att, att->deadline);
	msg_schedule(m, att->next);
	attempt_free(att);
}

/* ---- The schedule --------------------------------------------------------- */

static void
relay_on_due(evutil_socket_t fd, short what, void *arg)
{
	uint64_t now = wall_usec();
	struct relay_msg *m;
	size_t started = 0;

	while (S.nheap > 0 && !S.stopping) {
		m = S.heap[0];
		if (m->due > now)
			break;
		if (S.active >= RELAY_ACTIVE_MAX)
			return;		/* attempt_finish() re-arms as attempts end */
		if (started++ >= RELAY_START_BATCH) {
			/* Let the loop breathe: the rest next turn. */
			struct timeval tv = { 0, 0 };

			evtimer_add(S.ev_due, &tv);
			return;
		}
		heap_remove(m);
		attempt_start(m);
	}
	relay_due_arm();
}

static void
relay_due_arm(void)
{
	struct timeval tv;
	uint64_t now, dt;

	if (S.ev_due == NULL || S.stopping)
		return;
	if (S.nheap == 0) {
		evtimer_del(S.ev_due);
		return;
	}
	now = wall_usec();
	dt = S.heap[0]->due > now ? S.heap[0]->due - now : 0;
	if (S.active >= RELAY_ACTIVE_MAX && dt == 0)
		dt = 100000;	/* full: look again shortly */
	tv.tv_sec = (time_t)(dt / USEC);
	tv.tv_usec = (suseconds_t)(dt % USEC);
	evtimer_add(S.ev_due, &tv);
}

static void
relay_on_arrival(const struct queue_envelope *env, void *arg)
{
	struct relay_msg *m;
	uint64_t now = wall_usec(), due;

	if (!S.running || (m = msg_add(env, false)) == NULL)
		return;
	due = (uint64_t)env->next_attempt * USEC;
	msg_schedule(m, due > now ? due : now);
}

static void
relay_on_scan(const struct queue_envelope *env, void *arg)
{
	struct relay_msg *m;
	uint64_t now = wall_usec(), due;

	if ((m = msg_add(env, true)) == NULL)
		return;
	if (m->held)
		return;
	due = (uint64_t)env->next_attempt * USEC;
	/* Overdue messages from before the restart: spread them over a few seconds. */
	msg_schedule(m, due > now ? due : now + jitter(2 * USEC));
}

/* Destinations nobody used for a while, with nothing to remember. */
static void
relay_on_gc(evutil_socket_t fd, short what, void *arg)
{
	struct relay_dest *d, *next;
	uint64_t now = wall_usec();

	for (d = S.dests; d != NULL; d = next) {
		next = d->all_next;
		if (d->queued == 0 && d->nconns == 0 && !d->starved &&
		    (d->breaker == RB_CLOSED || d->breaker == RB_RAMP) &&
		    d->route != RR_RESOLVING && now - d->last_used > RELAY_DEST_IDLE_GC)
			dest_free(d);
	}
}

/*
 * Our own addresses, for "a host with one of our addresses is us": the
 * SMTP listening addresses, and every interface address behind a wildcard.
 */
static void
relay_find_ours(void)
{
	S.nours = (size_t)listen_our_addresses(mxd->conf, S.ours, RELAY_OURS_MAX);
}

static int
relay_load_creds(char *err, size_t errsize)
{
	struct tls_creds *nc;

	nc = tls_creds_client(mxd->conf->relay_tls_priority, NULL, err, errsize);
	if (nc == NULL)
		return -1;
	tls_creds_unref(&S.creds);
	S.creds = nc;
	return 0;
}

int
relay_sched_start(char *err, size_t errsize)
{
	struct timeval gc = { 60, 0 };
	char terr[256];
	int n;

	c_delivered = stats_counter("relay.delivered");
	c_deferred = stats_counter("relay.deferred");
	c_bounced = stats_counter("relay.bounced");
	c_expired = stats_counter("relay.expired");
	c_dsn = stats_counter("relay.dsn_queued");
	c_dsn_suppressed = stats_counter("relay.dsn_suppressed");
	c_dsn_failed = stats_counter("relay.dsn_failed");
	c_warnings = stats_counter("relay.delay_warnings");
	c_breaker_open = stats_counter("relay.breaker_opened");
	c_journal_failed = stats_counter("relay.journal_failed");
	c_removed = stats_counter("relay.messages_done");
	S.starved_tail = &S.starved_head;
	if (relay_journal_init(mxd->base) == -1) {
		mx_snprintf(err, errsize, "cannot start the journal workers: %s", strerror(errno));
		return -1;
	}
	if (relay_load_creds(terr, sizeof(terr)) == -1)
		log_warnx("event=relay_tls_unavailable error=\"%s\" starttls=no", terr);
	relay_find_ours();
	if ((S.ev_due = evtimer_new(mxd->base, relay_on_due, NULL)) == NULL ||
	    (S.ev_rm = evtimer_new(mxd->base, relay_on_remove, NULL)) == NULL ||
	    (S.ev_gc = event_new(mxd->base, -1, EV_PERSIST, relay_on_gc, NULL)) == NULL ||
	    event_add(S.ev_gc, &gc) == -1) {
		mx_snprintf(err, errsize, "cannot create timers");
		return -1;
	}
	S.running = true;
	queue_set_arrival_cb(relay_on_arrival, NULL);
	if ((n = queue_scan(relay_on_scan, NULL)) == -1) {
		mx_snprintf(err, errsize, "cannot read the queue: %s", strerror(errno));
		return -1;
	}
	log_info("event=relay_ready messages=%zu held=%zu our_addresses=%zu starttls=%s", S.nmsgs,
	    S.held, S.nours, S.creds != NULL ? "yes" : "no");
	relay_due_arm();
	return 0;
}

void
relay_sched_reload(void)
{
	char err[256];

	if (!S.running)
		return;
	if (relay_load_creds(err, sizeof(err)) == -1)
		log_warnx("event=relay_tls_reload_failed error=\"%s\"", err);
	relay_find_ours();
	/* Routes are looked up again with the new config and registry. */
	{
		struct relay_dest *d;

		for (d = S.dests; d != NULL; d = d->all_next)
			d->route_expires = 0;
	}
}

void
relay_sched_stop(void)
{
	struct relay_dest *d;
	size_t i;

	if (!S.running)
		return;
	S.stopping = true;
	queue_set_arrival_cb(NULL, NULL);
	if (S.nrm > 0)
		relay_on_remove(-1, 0, NULL);
	if (S.ev_due != NULL)
		evtimer_del(S.ev_due);
	/* Transactions in flight finish (they hold the daemon); nothing new starts. */
	for (d = S.dests; d != NULL; d = d->all_next) {
		for (i = d->nidle; i > 0; i--)
			relay_conn_quit(d->idle[i - 1]);
		relay_dest_kick(d);
		dest_route_cancel(d);
		evtimer_del(d->ev_timer);
	}
}

/* ---- Queue commands --------------------------------------------------------- */

static const char *
msg_state(const struct relay_msg *m)
{
	if (m->removing)
		return "done";
	if (m->att != NULL)
		return "active";
	if (m->held)
		return "held";
	if (m->attempts > 0)
		return "deferred";
	return "queued";
}

static int
msg_cmp(const void *a, const void *b)
{
	return strcmp((*(struct relay_msg *const *)a)->id, (*(struct relay_msg *const *)b)->id);
}

int
relay_sched_list(struct mx_buf *out, bool json)
{
	struct relay_msg **all, *m;
	int64_t now = mx_time_now();
	size_t i, n = 0;

	if ((all = calloc(S.nmsgs ? S.nmsgs : 1, sizeof(*all))) == NULL)
		return -1;
	for (i = 0; i < S.nbuckets; i++)
		for (m = S.buckets[i]; m != NULL; m = m->hnext)
			all[n++] = m;
	qsort(all, n, sizeof(*all), msg_cmp);
	if (json)
		mx_buf_addstr(out, "{\"messages\":[");
	else if (n > 0)
		mx_buf_printf(out, "%-20s %8s %-8s %4s %5s %8s  %s\n", "ID", "AGE", "STATE",
		    "TRY", "RCPTS", "NEXT", "SENDER");
	for (i = 0; i < n; i++) {
		long long next;

		m = all[i];
		next = m->heap_i != HEAP_NONE ? (long long)(m->due / USEC) - now : -1;
		if (next < 0 && m->heap_i != HEAP_NONE)
			next = 0;
		if (json) {
			mx_buf_printf(out, "%s{\"id\":\"%s\",\"arrival\":%lld,\"age\":%lld,"
			    "\"state\":\"%s\",\"attempts\":%u,\"recipients\":%u,\"pending\":%u,"
			    "\"next_attempt\":%lld,\"sender\":", i ? "," : "", m->id,
			    (long long)m->arrival, (long long)(now - m->arrival), msg_state(m),
			    m->attempts, m->nrcpts, m->npending,
			    m->heap_i != HEAP_NONE ? (long long)(m->due / USEC) : 0);
			mx_buf_json_str(out, m->sender);
			mx_buf_addstr(out, "}");
		} else {
			char sender[LOG_SAFE_MAX];

			log_safe(sender, sizeof(sender), m->sender, strlen(m->sender));
			mx_buf_printf(out, "%-20s %7llds %-8s %4u %2u/%-2u %7llds  <%s>\n", m->id,
			    (long long)(now - m->arrival), msg_state(m), m->attempts, m->npending,
			    m->nrcpts, next, m->sender[0] ? sender : "");
		}
	}
	if (json)
		mx_buf_printf(out, "],\"count\":%zu}\n", n);
	else
		mx_buf_printf(out, "%zu message%s\n", n, n == 1 ? "" : "s");
	free(all);
	return 0;
}

static const char *
rcpt_state_name(enum queue_rcpt_state st)
{
	switch (st) {
	case QUEUE_RCPT_DELIVERED:
		return "delivered";
	case QUEUE_RCPT_FAILED:
		return "failed";
	case QUEUE_RCPT_DEFERRED:
		return "deferred";
	case QUEUE_RCPT_PENDING:
	default:
		return "pending";
	}
}

static int
id_check(const char *id, char *err, size_t errsize)
{
	if (!queue_id_valid(id)) {
		mx_snprintf(err, errsize, "not a queue id");
		return -1;
	}
	return 0;
}

int
relay_sched_show(const char *id, bool json, struct mx_buf *out, char *err, size_t errsize)
{
	struct queue_envelope env;
	struct relay_msg *m;
	char safe[LOG_SAFE_MAX];
	uint64_t off, len;
	size_t i;
	int fd;

	if (id_check(id, err, errsize) == -1)
		return -1;
	if (queue_load(id, &env) == -1) {
		mx_snprintf(err, errsize, "no message %s in the queue", id);
		return -1;
	}
	len = 0;
	if ((fd = queue_body_open(id, &off, &len)) != -1)
		close(fd);
	m = msg_find(id);
	if (json) {
		mx_buf_printf(out, "{\"id\":\"%s\",\"arrival\":%lld,\"state\":\"%s\","
		    "\"attempts\":%u,\"next_attempt\":%lld,\"held\":%s,\"size\":%llu,\"sender\":",
		    env.id, (long long)env.arrival, m != NULL ? msg_state(m) : "unknown",
		    env.attempts, (long long)env.next_attempt, env.held ? "true" : "false",
		    (unsigned long long)len);
		mx_buf_json_str(out, env.sender);
		mx_buf_addstr(out, ",\"client\":");
		mx_buf_json_str(out, env.client_addr);
		mx_buf_addstr(out, ",\"helo\":");
		mx_buf_json_str(out, env.helo);
		mx_buf_printf(out, ",\"smtputf8\":%s,\"body\":\"%s\",\"recipients\":[",
		    env.smtputf8 ? "true" : "false", env.body == QUEUE_BODY_8BITMIME ? "8bitmime" :
		    "7bit");
		for (i = 0; i < env.nrcpts; i++) {
			const struct queue_rcpt *rc = &env.rcpts[i];

			mx_buf_printf(out, "%s{\"address\":", i ? "," : "");
			mx_buf_json_str(out, rc->addr);
			mx_buf_printf(out, ",\"state\":\"%s\",\"updated\":%lld,\"reply\":",
			    rcpt_state_name(rc->state), (long long)rc->updated);
			mx_buf_json_str(out, rc->reply);
			mx_buf_addstr(out, "}");
		}
		mx_buf_addstr(out, "]}\n");
	} else {
		mx_buf_printf(out, "id: %s\narrival: %lld\nstate: %s\nattempts: %u\n"
		    "next_attempt: %lld\nheld: %s\nsize: %llu\n", env.id, (long long)env.arrival,
		    m != NULL ? msg_state(m) : "unknown", env.attempts, (long long)env.next_attempt,
		    env.held ? "yes" : "no", (unsigned long long)len);
		log_safe(safe, sizeof(safe), env.sender, strlen(env.sender));
		mx_buf_printf(out, "sender: <%s>\n", env.sender[0] ? safe : "");
		log_safe(safe, sizeof(safe), env.client_addr, strlen(env.client_addr));
		mx_buf_printf(out, "client: %s\n", env.client_addr[0] ? safe : "-");
		for (i = 0; i < env.nrcpts; i++) {
			const struct queue_rcpt *rc = &env.rcpts[i];
			char reply[LOG_SAFE_MAX];

			log_safe(safe, sizeof(safe), rc->addr, strlen(rc->addr));
			mx_buf_printf(out, "recipient: <%s> %s", safe, rcpt_state_name(rc->state));
			if (rc->reply[0] != '\0') {
				/* Journal text has no control octets; quote it as it is. */
				mx_strlcpy(reply, rc->reply, sizeof(reply));
				mx_buf_printf(out, " (%s)", reply);
			}
			mx_buf_addstr(out, "\n");
		}
	}
	queue_envelope_clear(&env);
	return 0;
}

/* Destinations whose breaker is open are probed at once. */
static void
relay_breakers_reset(void)
{
	struct relay_dest *d;

	for (d = S.dests; d != NULL; d = d->all_next)
		if (d->breaker == RB_OPEN)
			d->down_until = 0;
}

long
relay_sched_flush(const char *id, char *err, size_t errsize)
{
	struct relay_msg *m;
	uint64_t now = wall_usec();
	long n = 0;
	size_t i;

	if (id != NULL) {
		if (id_check(id, err, errsize) == -1)
			return -1;
		if ((m = msg_find(id)) == NULL) {
			mx_snprintf(err, errsize, "no message %s in the queue", id);
			return -1;
		}
		if (m->held) {
			mx_snprintf(err, errsize, "message %s is held; release it first", id);
			return -1;
		}
		relay_breakers_reset();
		if (m->att == NULL)
			msg_schedule(m, now);
		return 1;
	}
	relay_breakers_reset();
	for (i = 0; i < S.nheap; i++) {
		S.heap[i]->due = now;
		n++;
	}
	/* All equal now: the heap order holds trivially. */
	relay_due_arm();
	return n;
}

int
relay_sched_delete(const char *id, char *err, size_t errsize)
{
	struct relay_msg *m;

	if (id_check(id, err, errsize) == -1)
		return -1;
	m = msg_find(id);
	if (m != NULL && m->removing) {
		m->deleted = true;	/* finished anyway: it goes with the next batch */
		return 0;
	}
	if (m != NULL && m->att != NULL) {
		/* Removed when the delivery in progress ends; no DSN, no retry. */
		m->deleted = true;
		log_info("event=relay_delete id=%s when=after_attempt", id);
		return 0;
	}
	if (queue_remove(id) == -1) {
		mx_snprintf(err, errsize, errno == ENOENT ? "no message %s in the queue" :
		    "cannot remove %s", id);
		return -1;
	}
	if (m != NULL)
		msg_forget(m);
	log_info("event=relay_delete id=%s", id);
	return 0;
}

int
relay_sched_hold(const char *id, bool hold, char *err, size_t errsize)
{
	struct queue_journal_rec rec;
	struct relay_msg *m;

	if (id_check(id, err, errsize) == -1)
		return -1;
	if ((m = msg_find(id)) == NULL) {
		mx_snprintf(err, errsize, "no message %s in the queue", id);
		return -1;
	}
	memset(&rec, 0, sizeof(rec));
	rec.type = QUEUE_JOURNAL_HOLD;
	rec.held = hold;
	/* Through the journal workers, behind any record of this message still in flight. */
	if (relay_journal_submit(id, &rec, 1, journal_failed_cb, NULL) == -1) {
		mx_snprintf(err, errsize, "cannot record it: %s", strerror(errno));
		return -1;
	}
	if (hold && !m->held) {
		m->held = true;
		S.held++;
		heap_remove(m);
	} else if (!hold && m->held) {
		m->held = false;
		S.held--;
		msg_schedule(m, wall_usec());
	}
	log_info("event=relay_%s id=%s", hold ? "hold" : "release", id);
	return 0;
}

int
relay_sched_status(struct mx_buf *json)
{
	struct relay_msg *m;
	struct relay_dest *d;
	int64_t oldest = 0, now = mx_time_now();
	size_t i, down = 0, deferred = 0;
	int r = 0;

	for (i = 0; i < S.nbuckets; i++)
		for (m = S.buckets[i]; m != NULL; m = m->hnext) {
			if (oldest == 0 || m->arrival < oldest)
				oldest = m->arrival;
			if (m->attempts > 0 && m->att == NULL && !m->held)
				deferred++;
		}
	for (d = S.dests; d != NULL; d = d->all_next)
		if (d->breaker == RB_OPEN || d->breaker == RB_PROBE)
			down++;
	r |= mx_buf_printf(json, "\"queue\":{\"size\":%zu,\"oldest_age\":%lld,\"active\":%zu,"
	    "\"deferred\":%zu,\"held\":%zu,\"connections\":%zu,\"destinations\":%zu,"
	    "\"destinations_down\":%zu,\"delivered\":%llu,\"bounced\":%llu,\"expired\":%llu,"
	    "\"dsn_queued\":%llu,\"deferrals\":{", S.nmsgs,
	    (long long)(oldest ? now - oldest : 0), S.active, deferred, S.held, S.total_conns,
	    S.ndests, down, c_delivered ? *c_delivered : 0, c_bounced ? *c_bounced : 0,
	    c_expired ? *c_expired : 0, c_dsn ? *c_dsn : 0);
	for (i = 0; i < RR_NREASONS; i++)
		r |= mx_buf_printf(json, "%s\"%s\":%llu", i ? "," : "", reason_names[i],
		    reasons[i]);
	r |= mx_buf_addstr(json, "},\"down\":[");
	i = 0;
	for (d = S.dests; d != NULL; d = d->all_next) {
		if (d->breaker == RB_CLOSED)
			continue;
		r |= mx_buf_printf(json, "%s{\"domain\":", i++ ? "," : "");
		r |= mx_buf_json_str(json, d->domain);
		r |= mx_buf_printf(json, ",\"breaker\":\"%s\",\"retry_in\":%lld}",
		    breaker_names[d->breaker], d->down_until > wall_usec() ?
		    (long long)((d->down_until - wall_usec()) / USEC) : 0);
	}
	r |= mx_buf_addstr(json, "]}");
	return r;
}
