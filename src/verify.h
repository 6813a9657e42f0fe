/*
 * Recipient verification for domains with `--recipients verify`: before we
 * accept a recipient, the domain's primary is asked whether it would take
 * it (a probe: EHLO, MAIL FROM:<postmaster@OUR-HOSTNAME>, RCPT TO, RSET,
 * QUIT, over STARTTLS when offered), so that unknown users are refused at
 * our door instead of bounced later (backscatter, PITFALLS 17).
 *
 * Answers are cached in memory: accepted for verify_positive_ttl, refused
 * for verify_negative_ttl; temporary answers and failures are not cached.
 * Probes for the same address share one connection; each domain has at
 * most a few probes at once and a bounded start rate, the rest wait in a
 * bounded queue.  Every probe ends within verify_timeout.
 */
#ifndef MXEDGE_VERIFY_H
#define MXEDGE_VERIFY_H

#include <stdbool.h>

#include "daemon.h"
#include "registry.h"

struct verify_query;

enum verify_status {
	VERIFY_ACCEPTED = 0,	/* the primary answered 2xx to RCPT */
	VERIFY_REFUSED,		/* 5xx: not a recipient there */
	VERIFY_TEMPFAIL,	/* 4xx: the primary could not say now */
	VERIFY_UNAVAILABLE,	/* no route, no connection, no usable dialogue, timeout */
};

struct verify_result {
	enum verify_status status;
	/* The primary's reply summarised, or why it could not be asked; for logs. */
	const char *reply;
};

/* The result is valid during the call only; the query is over. */
typedef void (*verify_cb)(const struct verify_result *res, void *arg);

extern const struct daemon_module verify_module;

/* A cached answer for addr ("local@domain"): 1 with *refused set, or 0. */
int verify_cached(const char *addr, bool *refused);
/*
 * Ask d's primary about addr.  cb runs once, from the event loop, never
 * from inside this call.  NULL when no probe can be started (errno EAGAIN:
 * too many probes wait for this domain; ENOMEM; ENXIO: module not
 * running); cb is not called then.
 */
struct verify_query *verify_start(const struct domain *d, const char *addr, verify_cb cb,
    void *arg);
/* Forget a pending query: its callback will not be called.  NULL is fine. */
void verify_cancel(struct verify_query **qp);

const char *verify_status_name(enum verify_status st);

#endif
