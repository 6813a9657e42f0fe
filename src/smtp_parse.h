/*
 * Pure SMTP wire parsing for the inbound server: splitting the command stream
 * into CRLF lines, parsing one command line (verbs, MAIL/RCPT paths, ESMTP
 * and DSN parameters), and the DATA-phase state machine (dot-unstuffing,
 * exact CRLF.CRLF end, bare CR/LF detection, Received: counting).  No I/O:
 * the session feeds bytes and acts on the results.
 */
#ifndef MXEDGE_SMTP_PARSE_H
#define MXEDGE_SMTP_PARSE_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

/* RFC 5321 §4.5.3.1 limits, in octets. */
#define SMTP_LINE_MAX 512		/* command line, including CRLF */
/*
 * Extensions may lengthen command lines (RFC 5321 §4.5.3.1.4): DSN adds
 * 100 octets to MAIL and 500 to RCPT (RFC 3461 §4), SIZE 26 to MAIL (RFC
 * 1870).  MAIL and RCPT lines may be this long, CRLF included, so the
 * session's line splitter should use it; other commands keep SMTP_LINE_MAX.
 */
#define SMTP_COMMAND_MAX 1024
#define SMTP_LOCAL_MAX 64		/* local part, as given (quotes included) */
#define SMTP_DOMAIN_MAX 255		/* domain or address literal */
#define SMTP_PATH_MAX 256		/* "<" [source route ":"] mailbox ">" */
#define SMTP_DATA_LINE_MAX 1000		/* text line in DATA, including CRLF */
/* "local@domain" as smtp_path_format() writes it, without the NUL. */
#define SMTP_MAILBOX_MAX (SMTP_LOCAL_MAX + 1 + SMTP_DOMAIN_MAX)
/* RFC 3461 limits on the encoded (xtext) values. */
#define SMTP_ENVID_MAX 100
#define SMTP_ORCPT_MAX 500

enum smtp_cmd {
	SMTP_CMD_UNKNOWN = 0,
	SMTP_CMD_HELO,
	SMTP_CMD_EHLO,
	SMTP_CMD_MAIL,
	SMTP_CMD_RCPT,
	SMTP_CMD_DATA,
	SMTP_CMD_RSET,
	SMTP_CMD_NOOP,
	SMTP_CMD_QUIT,
	SMTP_CMD_VRFY,
	SMTP_CMD_EXPN,
	SMTP_CMD_HELP,
	SMTP_CMD_STARTTLS,
	SMTP_CMD_BDAT,
	SMTP_CMD_AUTH,
};

/* What a rejected line should be answered with; all strings are static. */
struct smtp_parse_error {
	int code;		/* 500, 501, 552, 553, 555 */
	const char *status;	/* enhanced status code, "5.5.2" */
	const char *text;	/* reply text, no CRLF */
};

enum smtp_domain_kind {
	SMTP_DOMAIN_NONE = 0,	/* null path or bare <postmaster> */
	SMTP_DOMAIN_NAME,	/* LDH labels (or U-labels under SMTPUTF8) */
	SMTP_DOMAIN_IPV4,	/* [192.0.2.1] */
	SMTP_DOMAIN_IPV6,	/* [IPv6:2001:db8::1] */
};

struct smtp_path {
	bool null;		/* MAIL FROM:<> */
	bool postmaster;	/* RCPT TO:<postmaster> without a domain (any case) */
	bool source_route;	/* "@a,@b:" was present; it is dropped */
	bool quoted;		/* local part is a quoted-string */
	bool utf8;		/* non-ASCII octets in the local part or domain */
	enum smtp_domain_kind kind;
	/* Local part exactly as given, quotes and backslashes included. */
	char local[SMTP_LOCAL_MAX + 1];
	size_t local_len;
	/*
	 * Names: lower-cased (ASCII only).  Literals: canonical text from
	 * inet_ntop, "[192.0.2.1]" or "[IPv6:2001:db8::1]", and the binary
	 * address in addr4/addr6.
	 */
	char domain[SMTP_DOMAIN_MAX + 1];
	size_t domain_len;
	struct in_addr addr4;
	struct in6_addr addr6;
};

/* Bits of smtp_params.present: which parameters were given. */
#define SMTP_PARAM_SIZE		0x0001u
#define SMTP_PARAM_BODY		0x0002u
#define SMTP_PARAM_SMTPUTF8	0x0004u
#define SMTP_PARAM_RET		0x0008u
#define SMTP_PARAM_ENVID	0x0010u
#define SMTP_PARAM_NOTIFY	0x0020u
#define SMTP_PARAM_ORCPT	0x0040u

enum smtp_body {
	SMTP_BODY_NONE = 0,	/* not given */
	SMTP_BODY_7BIT,
	SMTP_BODY_8BITMIME,
};

enum smtp_ret {
	SMTP_RET_NONE = 0,	/* not given */
	SMTP_RET_FULL,
	SMTP_RET_HDRS,
};

/* NOTIFY= bits; NEVER excludes the others. */
#define SMTP_NOTIFY_NEVER	0x01u
#define SMTP_NOTIFY_SUCCESS	0x02u
#define SMTP_NOTIFY_FAILURE	0x04u
#define SMTP_NOTIFY_DELAY	0x08u

struct smtp_params {
	unsigned int present;	/* SMTP_PARAM_* */
	uint64_t size;		/* SIZE= */
	enum smtp_body body;
	enum smtp_ret ret;
	unsigned int notify;	/* SMTP_NOTIFY_* */
	char envid[SMTP_ENVID_MAX + 1];	/* xtext as given */
	char orcpt[SMTP_ORCPT_MAX + 1];	/* "addr-type;xtext" as given */
};

struct smtp_command {
	enum smtp_cmd cmd;
	/*
	 * Everything after the verb and its space, trailing spaces removed;
	 * a view into the caller's line (len 0 when absent).
	 */
	struct mx_view arg;
	/* HELO/EHLO: the argument is a valid domain or address literal. */
	bool helo_valid;
	/* MAIL/RCPT. */
	struct smtp_path path;
	struct smtp_params params;
	/* BDAT. */
	uint64_t bdat_size;
	bool bdat_last;
};

/* Flags for smtp_command_parse(). */
#define SMTP_PARSE_SMTPUTF8 0x01u	/* RCPT inside a MAIL ... SMTPUTF8 transaction */

/*
 * Parse one command line, given WITHOUT its CRLF (at most SMTP_LINE_MAX - 2
 * octets, SMTP_COMMAND_MAX - 2 for MAIL and RCPT).  Fills *out (views point into line) and returns 0, or returns -1
 * with *err set to the reply to send; out->cmd is still set when the verb
 * was recognised.  NUL, CR and LF anywhere are refused.  Paths: RFC 5321
 * syntax and limits, checked before anything is copied; non-ASCII needs
 * SMTPUTF8 (the MAIL parameter, or flags for RCPT) and must be UTF-8.
 * MAIL takes SIZE, BODY, SMTPUTF8, RET, ENVID; RCPT takes NOTIFY, ORCPT;
 * anything else is 555 5.5.4, a repeated parameter 501 5.5.4.
 */
int smtp_command_parse(const char *line, size_t len, unsigned int flags,
    struct smtp_command *out, struct smtp_parse_error *err);

/* Static name of a command ("MAIL"), "UNKNOWN" for SMTP_CMD_UNKNOWN. */
const char *smtp_cmd_name(enum smtp_cmd cmd);

/*
 * The canonical mailbox text: "local@domain" (local as given, domain
 * normalised), "" for the null path, "postmaster" for bare <postmaster>.
 * buf should hold SMTP_MAILBOX_MAX + 1.  Returns 0, or -1 if it did not fit.
 */
int smtp_path_format(const struct smtp_path *p, char *buf, size_t size);

/*
 * Address syntax that has been used to relay through a backup MX (PITFALLS
 * 15).  Valid syntax, but the session must not relay such an address.
 */
#define SMTP_RELAY_PERCENT	0x01u	/* unquoted '%' in the local part */
#define SMTP_RELAY_BANG		0x02u	/* unquoted '!' in the local part */
#define SMTP_RELAY_QUOTED	0x04u	/* quoted local part holding '@', '%' or '!' */
#define SMTP_RELAY_ROUTE	0x08u	/* a source route was given */
#define SMTP_RELAY_LITERAL	0x10u	/* the domain is an address literal */
unsigned int smtp_path_relay_flags(const struct smtp_path *p);

/*
 * Line splitter for the command phase.  Call with the unconsumed input,
 * always starting where the previous call's *consumed left off, and drain
 * *consumed bytes after every call whatever the result:
 *  MORE  wait for more input;
 *  OK    *line is one line without its CRLF;
 *  BAD   a bad line ended: answer 500 and go on.  errors says why.
 * Only CRLF ends a good line.  A bare LF ends a bad line (so a client using
 * LF alone gets one 500 per line); a bare CR or a NUL makes the line bad but
 * does not end it.  A line longer than max (CRLF included) is discarded up
 * to its end, which is then reported once as BAD with SMTP_LINE_TOO_LONG.
 */
enum smtp_line_result {
	SMTP_LINE_MORE = 0,
	SMTP_LINE_OK,
	SMTP_LINE_BAD,
};

#define SMTP_LINE_BARE_CR	0x01u
#define SMTP_LINE_BARE_LF	0x02u
#define SMTP_LINE_NUL		0x04u
#define SMTP_LINE_TOO_LONG	0x08u

struct smtp_line_splitter {
	size_t max;		/* including CRLF; SMTP_COMMAND_MAX for commands */
	bool discarding;	/* inside an over-long line */
	unsigned int errors;	/* carried while discarding */
};

void smtp_line_init(struct smtp_line_splitter *s, size_t max);
enum smtp_line_result smtp_line_next(struct smtp_line_splitter *s, const unsigned char *buf,
    size_t len, struct mx_view *line, size_t *consumed, unsigned int *errors);

/*
 * DATA phase: feed the bytes after "354" until DONE.  Unstuffed body bytes
 * (CRLF kept, the final ".CRLF" removed) go to emit() as they are decoded,
 * usually as views into the input.  Only CRLF "." CRLF ends the data (the
 * DATA command's own CRLF counts as the first); bare CR and bare LF are
 * flagged and never end a line for this purpose.  flags never stop the
 * machine: the session keeps feeding to the real end, then answers 5xx if
 * any rejecting flag is set.  emit() keeps being called while flags are set;
 * a session that has given up on the message ignores it.
 */
#define SMTP_DATA_BARE_CR	0x01u	/* reject (smuggling) */
#define SMTP_DATA_BARE_LF	0x02u	/* reject (smuggling) */
#define SMTP_DATA_LINE_TOO_LONG	0x04u	/* reject: a line over SMTP_DATA_LINE_MAX */
#define SMTP_DATA_TOO_BIG	0x08u	/* reject with 552: over max_size */
#define SMTP_DATA_NUL		0x10u	/* informational: a NUL octet in the body */
#define SMTP_DATA_REJECT (SMTP_DATA_BARE_CR | SMTP_DATA_BARE_LF | \
	SMTP_DATA_LINE_TOO_LONG | SMTP_DATA_TOO_BIG)

enum smtp_data_result {
	SMTP_DATA_MORE = 0,	/* all input consumed, not finished */
	SMTP_DATA_DONE,		/* end seen; bytes after *consumed are commands */
};

struct smtp_data {
	/* Set by smtp_data_init(). */
	uint64_t max_size;	/* 0: no cap */
	void (*emit)(void *arg, const unsigned char *p, size_t len);
	void *arg;
	/* Results, valid at any time. */
	unsigned int flags;	/* SMTP_DATA_* */
	uint64_t size;		/* unstuffed octets emitted so far */
	uint32_t received;	/* "Received:" header fields in the header section */
	bool done;
	/* Internal state. */
	int state;
	size_t line_len;	/* unstuffed octets of the current line */
	bool in_header;
	bool bol;		/* the next emitted octet starts a line */
	bool prev_cr;
	int hdr_match;
};

void smtp_data_init(struct smtp_data *d, uint64_t max_size,
    void (*emit)(void *arg, const unsigned char *p, size_t len), void *arg);
enum smtp_data_result smtp_data_feed(struct smtp_data *d, const unsigned char *buf, size_t len,
    size_t *consumed);

#endif
