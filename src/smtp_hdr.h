/*
 * The header section of an incoming message, held in memory while the
 * message streams in, so that the session can put its own fields on top,
 * remove forged Authentication-Results fields that carry our authserv-id
 * (RFC 8601 §5), show the fields to milters and apply their changes before
 * anything reaches the spool.  Pure code: the session feeds the unstuffed
 * message octets and writes what comes out.
 *
 * The header section ends at the first empty line, or at the first line
 * that is not a header field (no "name:" and not a continuation).  In the
 * second case an empty line is inserted before that line, so that the
 * client's first body line can never fold into a field above it (ours
 * included).  Only the lines are judged here; bare CR and LF are the DATA
 * machine's business (smtp_parse.h), which rejects such messages anyway.
 */
#ifndef MXEDGE_SMTP_HDR_H
#define MXEDGE_SMTP_HDR_H

#include <stdbool.h>
#include <stddef.h>

#include "util.h"

#define SMTP_HDR_SECTION_MAX (1024u * 1024u)	/* header section octets we hold (then 552) */

struct smtp_hdr {
	/*
	 * Our fields (smtp_hdr_add), then the client's header section; once
	 * done, the section is buf[0..end) and buf[end..) is the start of the
	 * body part: an empty line, then whatever followed it in the feed.
	 */
	struct mx_buf buf;
	size_t max;		/* client octets we take */
	size_t base;		/* where the client's octets start */
	size_t line;		/* start of the line being collected */
	size_t end;		/* once done: end of the header section */
	bool done;
	bool body;		/* once done: buf[end] starts with the empty line */
	bool inserted;		/* that empty line is ours (the client had none) */
	bool too_big;		/* over the limit: done, and the message must be refused (552) */
	bool error;		/* out of memory: done, and the message must be refused (451) */
};

void smtp_hdr_init(struct smtp_hdr *h, size_t max);
void smtp_hdr_free(struct smtp_hdr *h);
/* Append whole fields of ours (CRLF-terminated) before the client's; 0 or -1. */
int smtp_hdr_add(struct smtp_hdr *h, const void *p, size_t len);
/*
 * Feed message octets while !done.  Returns how many were taken; when the
 * header section ended within them, done is set and the octets after the
 * returned count belong to the body (after buf[end..)).  Over the limit
 * (or out of memory), too_big (error) and done are set and everything is
 * taken.
 */
size_t smtp_hdr_feed(struct smtp_hdr *h, const unsigned char *p, size_t len);
/* The message ended inside the header section: every line fed is part of it. */
void smtp_hdr_finish(struct smtp_hdr *h);
/*
 * Once done: remove the client's Authentication-Results fields whose
 * authserv-id is ours.  Returns how many were removed.
 */
size_t smtp_hdr_strip_authres(struct smtp_hdr *h, const char *authserv_id);

#endif
