/*
 * Delivery status notifications (RFC 3464): the multipart/report message the
 * relay sends to an envelope sender when recipients failed (or, optionally,
 * are delayed).  Pure composition: the scheduler decides who gets one,
 * gathers the facts, reads the original message and queues the result with
 * a null sender, so a bounce can never bounce.
 */
#ifndef MXEDGE_RELAY_BOUNCE_H
#define MXEDGE_RELAY_BOUNCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

enum relay_bounce_action {
	RELAY_BOUNCE_FAILED = 0,
	RELAY_BOUNCE_DELAYED,
};

struct relay_bounce_rcpt {
	const char *addr;		/* the recipient as queued */
	const char *orcpt;		/* "addr-type;xtext" from ORCPT, or "" */
	const char *status;		/* "5.1.1" */
	const char *diag;		/* the primary's reply, one line, or "" */
	const char *remote_mta;		/* host that said it, or "" */
	int64_t last_attempt;		/* 0: no attempt was made */
};

struct relay_bounce {
	enum relay_bounce_action action;
	const char *reporting_mta;	/* our hostname */
	const char *queue_id;		/* of the original message */
	const char *message_id;		/* for our Message-ID: "<message_id>" */
	const char *boundary;		/* unique token; must not occur in the original */
	const char *sender;		/* the original envelope sender: our To: */
	const char *envid;		/* ENVID (xtext) or "" */
	int64_t arrival;		/* of the original */
	int64_t now;
	int64_t retry_until;		/* DELAYED: when we give up */
	const struct relay_bounce_rcpt *rcpts;
	size_t nrcpts;
	/*
	 * What to return: the whole message (RET=FULL) as message/rfc822, or
	 * its header section as text/rfc822-headers.  eight_bit: the original
	 * may hold 8-bit octets, so the part says "8bit".
	 */
	bool full;
	bool eight_bit;
};

/*
 * Append the whole DSN (header and body, CRLF line ends, not dot-stuffed) to
 * out.  orig is the original message, or at least its header section when
 * !full (anything after the header section is ignored then; a caller
 * that will not read a huge message whole asks for the headers).  Returns 0, or -1
 * (EINVAL: missing fields; ENOMEM/EMSGSIZE from out).
 */
int relay_bounce_compose(const struct relay_bounce *b, const unsigned char *orig,
    size_t origlen, struct mx_buf *out);

/* Length of the header section of msg (through the empty line), or len if it has none. */
size_t relay_bounce_header_len(const unsigned char *msg, size_t len);

/* "Tue, 01 Dec 2026 14:50:36 +0000" (RFC 5322, UTC); buf of at least 32. */
const char *relay_bounce_date(int64_t t, char *buf, size_t size);

#endif
