/*
 * SMTP replies as the relay client reads them from a primary: a strictly
 * bounded, resumable parser for single- and multi-line replies (RFC 5321
 * §4.2), the enhanced status code (RFC 3463), the EHLO keywords we act on,
 * and a one-line summary safe to store in the queue journal and to put in a
 * DSN.  Pure code: the caller feeds bytes, the parser copies what it keeps,
 * so nothing here points into a network buffer after a call returns.
 *
 * A primary is untrusted (PITFALLS 21: a reply text once became a command in
 * a queue file): every line is bounded, every continuation must carry the
 * same code, and NUL or a CR that does not end the line rejects the reply.
 */
#ifndef MXEDGE_RELAY_REPLY_H
#define MXEDGE_RELAY_REPLY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RELAY_REPLY_LINE_MAX 512	/* one reply line, CRLF included (RFC 5321 §4.5.3.1.5) */
#define RELAY_REPLY_LINES_MAX 100	/* lines in one reply */
#define RELAY_REPLY_TEXT_MAX 4096	/* text kept, all lines together */
#define RELAY_REPLY_STATUS_MAX 12	/* "5.123.123" and a NUL */
/* A summary fits the journal's reply field (QUEUE_REPLY_MAX). */
#define RELAY_REPLY_SUMMARY_MAX 512

enum relay_reply_result {
	RELAY_REPLY_MORE = 0,	/* all input consumed, the reply is not complete */
	RELAY_REPLY_DONE,	/* a whole reply parsed; input after *consumed is the next one */
	RELAY_REPLY_BAD,	/* malformed: give up on this connection */
};

/* One complete reply. */
struct relay_reply {
	int code;				/* 200..599 */
	char status[RELAY_REPLY_STATUS_MAX];	/* "5.1.1" from the first line, or "" */
	size_t nlines;
	bool truncated;				/* some text did not fit and was dropped */
	/*
	 * The text of each line after "NNN-"/"NNN " (and after the enhanced
	 * status code when the line carries one), NUL-separated in text[],
	 * line[i] its offset.  Only printable ASCII and TAB, and octets
	 * >= 0x80; never CR, LF or NUL.
	 */
	uint16_t line[RELAY_REPLY_LINES_MAX];
	char text[RELAY_REPLY_TEXT_MAX];
	size_t text_len;
};

struct relay_reply_parser {
	struct relay_reply reply;	/* being filled; copied out on DONE */
	unsigned char buf[RELAY_REPLY_LINE_MAX];	/* the current line */
	size_t len;
	size_t total;			/* octets of this reply so far */
	bool cr;			/* the last octet was CR */
	const char *error;		/* after BAD */
};

void relay_reply_init(struct relay_reply_parser *p);
/*
 * Feed octets.  On DONE *out holds the reply, *consumed tells how much input
 * it used, and the parser is ready for the next reply.  On MORE all input was
 * consumed.  On BAD the parser stays failed (p->error says why) until
 * relay_reply_init().  Any split of the input gives the same result.
 */
enum relay_reply_result relay_reply_feed(struct relay_reply_parser *p, const unsigned char *buf,
    size_t len, size_t *consumed, struct relay_reply *out);

/* Text of line i (NUL-terminated), or "" when i is out of range. */
const char *relay_reply_line(const struct relay_reply *r, size_t i);

/*
 * "550 5.1.1 text of the first line text of the next ...": code, status
 * (when given) and the lines joined with spaces, control octets and
 * non-ASCII replaced by '?', cut at size - 1 with "..." to show it.  Always
 * NUL-terminates (size >= 8).  Returns buf.
 */
const char *relay_reply_summary(const struct relay_reply *r, char *buf, size_t size);

/*
 * The enhanced status code to report for r: its own when it has one of the
 * right class, else a default for the code's class ("2.0.0", "4.0.0",
 * "5.0.0").  Copied into out (RELAY_REPLY_STATUS_MAX).
 */
void relay_reply_status(const struct relay_reply *r, char *out);

/* Extensions from an EHLO reply that the client acts on. */
#define RELAY_EXT_PIPELINING	0x0001u
#define RELAY_EXT_SIZE		0x0002u
#define RELAY_EXT_8BITMIME	0x0004u
#define RELAY_EXT_SMTPUTF8	0x0008u
#define RELAY_EXT_DSN		0x0010u
#define RELAY_EXT_STARTTLS	0x0020u
#define RELAY_EXT_ENHANCED	0x0040u	/* ENHANCEDSTATUSCODES */
#define RELAY_EXT_CHUNKING	0x0080u	/* noted, never used */

struct relay_ehlo {
	unsigned int ext;	/* RELAY_EXT_* */
	uint64_t size_max;	/* SIZE n; 0 when not given or no limit */
};

/* Keywords from the lines after the first (the greeting line), case-insensitively. */
void relay_ehlo_parse(const struct relay_reply *r, struct relay_ehlo *out);

#endif
