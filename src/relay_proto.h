/*
 * What the relay client writes: MAIL and RCPT command lines with the ESMTP
 * parameters the server offered, and the DATA stream with dot-stuffing and
 * CRLF-only line ends.  Pure code, no I/O; output goes into an mx_buf.
 */
#ifndef MXEDGE_RELAY_PROTO_H
#define MXEDGE_RELAY_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "queue_file.h"
#include "relay_reply.h"
#include "util.h"

/*
 * "MAIL FROM:<sender>[ SIZE=n][ BODY=8BITMIME][ SMTPUTF8][ RET=..][ ENVID=..]\r\n",
 * each parameter only when the server offered its extension (RELAY_EXT_*
 * in ext).  size is the body's length in octets.  Returns 0, or -1 (EINVAL:
 * a control octet or '<'/'>' in the address; ENOMEM/EMSGSIZE from out).
 */
int relay_proto_mail(const struct queue_envelope *env, unsigned int ext, uint64_t size,
    struct mx_buf *out);
/* "RCPT TO:<addr>[ NOTIFY=..][ ORCPT=..]\r\n" (DSN parameters only with RELAY_EXT_DSN). */
int relay_proto_rcpt(const struct queue_rcpt *rcpt, unsigned int ext, struct mx_buf *out);

/*
 * The DATA stream.  Body octets (stored unstuffed, CRLF line ends) go
 * through feed(); a "." at the start of a line is doubled, and any CR or LF
 * that is not part of a CRLF pair becomes CRLF, so the primary never sees a
 * bare CR or LF (whatever the spool holds).  finish() ends the last line if
 * needed and appends ".\r\n".
 */
struct relay_stuffer {
	bool bol;		/* the next octet starts a line */
	bool cr;		/* a CR is held, waiting to see an LF */
	uint64_t in;		/* octets fed */
	uint64_t out;		/* octets produced */
	uint64_t fixed;		/* bare CR or LF turned into CRLF */
};

void relay_stuffer_init(struct relay_stuffer *s);
int relay_stuffer_feed(struct relay_stuffer *s, const unsigned char *p, size_t len,
    struct mx_buf *out);
int relay_stuffer_finish(struct relay_stuffer *s, struct mx_buf *out);

/*
 * Decode RFC 3461 xtext ("a+2Bb" -> "a+b") into out; -1 on bad syntax, a
 * decoded control octet, or if it does not fit.
 */
int relay_xtext_decode(const char *in, char *out, size_t size);

#endif
