/*
 * The relay's two halves and what passes between them.  relay_sched.c owns
 * the queue's messages, the destinations (one per recipient domain) with
 * their routes, circuit breakers and pacing, and every durable record;
 * relay_client.c owns SMTP connections to primaries.  The scheduler opens a
 * connection for a destination and hands it one job at a time; the client
 * fills in each recipient's result and gives the job back.  Nothing in the
 * client writes to the queue.
 */
#ifndef MXEDGE_RELAY_CLIENT_H
#define MXEDGE_RELAY_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "queue_file.h"
#include "relay_mx.h"
#include "relay_reply.h"

struct relay_conn;
struct relay_dest;
struct relay_msg;

/* One recipient's result from one attempt. */
struct relay_result {
	enum queue_rcpt_state state;	/* PENDING: not reached (the connection ended first) */
	char status[RELAY_REPLY_STATUS_MAX];
	char reply[QUEUE_REPLY_MAX + 1];	/* one line, no control octets */
};

/*
 * The recipients of one message that go to one destination, for one
 * attempt.  The envelope belongs to the scheduler's attempt and outlives
 * the job.
 */
struct relay_job {
	struct relay_job *next;			/* destination queue */
	struct relay_msg *msg;
	struct relay_dest *dest;
	const struct queue_envelope *env;
	size_t nrcpts;
	size_t *rcpt;				/* indices into env->rcpts */
	struct relay_result *res;		/* one per rcpt[] */
	char remote[DNS_NAME_BUF];		/* host that answered, for the DSN */
	bool tls;				/* the transaction ran under TLS */
	bool started;				/* a connection took it */
	bool busy;				/* scheduler: counted in its destination's busy */
	bool parked;				/* scheduler: settled without being tried */
};

/* What a connection needs to know about its destination. */
struct relay_conn_params {
	const char *domain;			/* for logs */
	const struct relay_mx_target *targets;	/* tried in order (copied) */
	size_t ntargets;
	bool tls_required;			/* domain policy relay_tls require */
	struct tls_creds *creds;		/* client credentials (a reference is taken) */
};

/* Open a connection: try each target until one greets us and is ready. */
struct relay_conn *relay_conn_open(struct relay_dest *dest, const struct relay_conn_params *p);
/* Run job on a ready, idle connection; the result comes back through relay_sched_job_done(). */
void relay_conn_send(struct relay_conn *c, struct relay_job *job);
/* End an idle connection politely (QUIT); relay_sched_conn_closed() follows. */
void relay_conn_quit(struct relay_conn *c);

/* Implemented by the scheduler, called by the client. */

/* c is ready and idle (after set-up, or after a job): give it a job or let it idle. */
void relay_sched_conn_ready(struct relay_conn *c, struct relay_dest *dest);
/* A job's results are filled in; the job is the scheduler's again. */
void relay_sched_job_done(struct relay_job *job);
/*
 * c is gone (freed right after this returns).  setup_failed: no target ever
 * got as far as a ready session (connection refused, timeout, bad greeting,
 * TLS required but not possible); status/why describe the last failure.
 */
void relay_sched_conn_closed(struct relay_conn *c, struct relay_dest *dest, bool setup_failed,
    const char *status, const char *why);

#endif
