/*
 * The Sendmail milter protocol, version 6, MTA side: packet framing, the
 * encoders for what we send and a strict decoder for what milters answer.
 * Pure code: no sockets, no event loop (milter.c does the talking).
 *
 * A packet is a 4-octet length in network order, then that many octets:
 * one command octet and its data.  Everything a milter sends is untrusted:
 * lengths are checked against a cap before anything is read, strings must
 * end in a NUL inside the packet, a REPLYCODE must be a valid 4xx/5xx SMTP
 * reply (PITFALLS 28), header names and values are checked before they can
 * reach a spool file.
 */
#ifndef MXEDGE_MILTER_PROTO_H
#define MXEDGE_MILTER_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define MILTER_VERSION 6		/* what we offer */
#define MILTER_VERSION_MIN 2		/* oldest milter we talk to */
#define MILTER_CHUNK_MAX 65535		/* body octets per BODY packet (libmilter's limit) */
/* Largest packet (command octet + data) we accept: a 64 KiB chunk and some slack. */
#define MILTER_PACKET_MAX (65536 + 1024)
#define MILTER_REPLY_LINE_MAX 512	/* one line of a REPLYCODE, RFC 5321 §4.5.3.1.5 */
#define MILTER_REPLY_LINES_MAX 32	/* libmilter's smfi_setmlreply limit */
#define MILTER_HEADER_NAME_MAX 256
#define MILTER_HEADER_LINE_MAX 998	/* RFC 5322 §2.1.1 */
#define MILTER_SYMLIST_MAX 1024		/* one stage's macro list from SETSYMLIST */

/* Commands, MTA to milter. */
#define MILTER_C_ABORT		'A'
#define MILTER_C_BODY		'B'
#define MILTER_C_CONNECT	'C'
#define MILTER_C_MACRO		'D'
#define MILTER_C_BODYEOB	'E'
#define MILTER_C_HELO		'H'
#define MILTER_C_QUIT_NC	'K'
#define MILTER_C_HEADER		'L'
#define MILTER_C_MAIL		'M'
#define MILTER_C_EOH		'N'
#define MILTER_C_OPTNEG		'O'
#define MILTER_C_QUIT		'Q'
#define MILTER_C_RCPT		'R'
#define MILTER_C_DATA		'T'
#define MILTER_C_UNKNOWN	'U'

/* Replies and modifications, milter to MTA. */
#define MILTER_R_ADDRCPT	'+'
#define MILTER_R_DELRCPT	'-'
#define MILTER_R_ADDRCPT_PAR	'2'
#define MILTER_R_SHUTDOWN	'4'
#define MILTER_R_ACCEPT		'a'
#define MILTER_R_REPLBODY	'b'
#define MILTER_R_CONTINUE	'c'
#define MILTER_R_DISCARD	'd'
#define MILTER_R_CHGFROM	'e'
#define MILTER_R_CONN_FAIL	'f'
#define MILTER_R_ADDHEADER	'h'
#define MILTER_R_INSHEADER	'i'
#define MILTER_R_SETSYMLIST	'l'
#define MILTER_R_CHGHEADER	'm'
#define MILTER_R_PROGRESS	'p'
#define MILTER_R_QUARANTINE	'q'
#define MILTER_R_REJECT		'r'
#define MILTER_R_SKIP		's'
#define MILTER_R_TEMPFAIL	't'
#define MILTER_R_REPLYCODE	'y'
#define MILTER_R_OPTNEG		'O'

/* Actions a milter may take (OPTNEG "actions"). */
#define MILTER_ACT_ADDHDRS	0x001u
#define MILTER_ACT_CHGBODY	0x002u
#define MILTER_ACT_ADDRCPT	0x004u
#define MILTER_ACT_DELRCPT	0x008u
#define MILTER_ACT_CHGHDRS	0x010u
#define MILTER_ACT_QUARANTINE	0x020u
#define MILTER_ACT_CHGFROM	0x040u
#define MILTER_ACT_ADDRCPT_PAR	0x080u
#define MILTER_ACT_SETSYMLIST	0x100u
#define MILTER_ACT_ALL		0x1ffu

/* Protocol steps (OPTNEG "protocol"): what not to send, what not to answer. */
#define MILTER_P_NOCONNECT	0x00000001u
#define MILTER_P_NOHELO		0x00000002u
#define MILTER_P_NOMAIL		0x00000004u
#define MILTER_P_NORCPT		0x00000008u
#define MILTER_P_NOBODY		0x00000010u
#define MILTER_P_NOHDRS		0x00000020u
#define MILTER_P_NOEOH		0x00000040u
#define MILTER_P_NR_HDR		0x00000080u
#define MILTER_P_NOUNKNOWN	0x00000100u
#define MILTER_P_NODATA		0x00000200u
#define MILTER_P_SKIP		0x00000400u	/* we understand SKIP */
#define MILTER_P_RCPT_REJ	0x00000800u	/* send rejected recipients too */
#define MILTER_P_NR_CONN	0x00001000u
#define MILTER_P_NR_HELO	0x00002000u
#define MILTER_P_NR_MAIL	0x00004000u
#define MILTER_P_NR_RCPT	0x00008000u
#define MILTER_P_NR_DATA	0x00010000u
#define MILTER_P_NR_UNKN	0x00020000u
#define MILTER_P_NR_EOH		0x00040000u
#define MILTER_P_NR_BODY	0x00080000u
#define MILTER_P_HDR_LEADSPC	0x00100000u	/* header values keep their leading space */
#define MILTER_P_MDS_256K	0x10000000u
#define MILTER_P_MDS_1M		0x20000000u

/*
 * What we offer: every step we can leave out, every no-reply bit, SKIP and
 * HDR_LEADSPC.  Not RCPT_REJ (we never send rejected recipients) and not
 * the larger data sizes (we keep packets within 64 KiB).
 */
#define MILTER_P_OFFER	(MILTER_P_NOCONNECT | MILTER_P_NOHELO | MILTER_P_NOMAIL | \
    MILTER_P_NORCPT | MILTER_P_NOBODY | MILTER_P_NOHDRS | MILTER_P_NOEOH | MILTER_P_NR_HDR | \
    MILTER_P_NOUNKNOWN | MILTER_P_NODATA | MILTER_P_SKIP | MILTER_P_NR_CONN | \
    MILTER_P_NR_HELO | MILTER_P_NR_MAIL | MILTER_P_NR_RCPT | MILTER_P_NR_DATA | \
    MILTER_P_NR_UNKN | MILTER_P_NR_EOH | MILTER_P_NR_BODY | MILTER_P_HDR_LEADSPC)

/* Macro stages (SETSYMLIST), in libmilter's numbering. */
enum milter_stage {
	MILTER_STAGE_CONNECT = 0,
	MILTER_STAGE_HELO,
	MILTER_STAGE_MAIL,
	MILTER_STAGE_RCPT,
	MILTER_STAGE_DATA,
	MILTER_STAGE_EOM,
	MILTER_STAGE_EOH,
	MILTER_NSTAGES
};

/* One macro: name as milters know it ("j", "{client_addr}"); NULL value = not sent. */
struct milter_macro {
	const char *name;
	const char *value;
};

/*
 * Encoders: each appends one whole packet to b and returns 0, or -1 (errno
 * EMSGSIZE when the packet would exceed MILTER_PACKET_MAX, EINVAL for a bad
 * argument, ENOMEM) with b unchanged.
 */
int milter_put_optneg(struct mx_buf *b, uint32_t version, uint32_t actions, uint32_t protocol);
/* cmd is the command the macros precede (MILTER_C_CONNECT, ...). */
int milter_put_macros(struct mx_buf *b, char cmd, const struct milter_macro *m, size_t n);
/*
 * family: 'L' (unix), '4', '6', or 'U' (unknown: only the host name is sent).
 * addr is the address text without brackets; port in host order.
 */
int milter_put_connect(struct mx_buf *b, const char *hostname, char family, uint16_t port,
    const char *addr);
int milter_put_helo(struct mx_buf *b, const char *helo);
/* path is "<a@b>" as on the wire; args are ESMTP parameters ("SIZE=100"). */
int milter_put_mail(struct mx_buf *b, const char *path, const char *const *args, size_t nargs);
int milter_put_rcpt(struct mx_buf *b, const char *path, const char *const *args, size_t nargs);
int milter_put_header(struct mx_buf *b, const char *name, const char *value);
int milter_put_body(struct mx_buf *b, const void *data, size_t len);	/* len <= MILTER_CHUNK_MAX */
/* Commands without data: MILTER_C_DATA, _EOH, _BODYEOB, _ABORT, _QUIT, _QUIT_NC. */
int milter_put_simple(struct mx_buf *b, char cmd);

/* Framing. */
enum milter_parse {
	MILTER_PARSE_MORE = 0,	/* not a whole packet yet */
	MILTER_PARSE_DONE,	/* *pkt filled; pkt->size octets consumed */
	MILTER_PARSE_ERROR,	/* length 0 or over the cap: the stream is unusable */
};

struct milter_packet {
	unsigned char cmd;
	struct mx_view data;	/* after the command octet; views the input */
	size_t size;		/* 4 + length: octets to consume */
};

/* Look at the first packet in p[0..len).  max caps the length field (<= MILTER_PACKET_MAX). */
enum milter_parse milter_packet_parse(const unsigned char *p, size_t len, size_t max,
    struct milter_packet *pkt, const char **err);

enum milter_reply_kind {
	MILTER_RK_ACCEPT = 0,
	MILTER_RK_CONTINUE,
	MILTER_RK_REJECT,
	MILTER_RK_TEMPFAIL,
	MILTER_RK_DISCARD,
	MILTER_RK_REPLYCODE,
	MILTER_RK_SKIP,
	MILTER_RK_PROGRESS,
	MILTER_RK_SHUTDOWN,	/* '4': 421 and close */
	MILTER_RK_CONN_FAIL,	/* 'f': likewise */
	MILTER_RK_ADDHEADER,
	MILTER_RK_INSHEADER,
	MILTER_RK_CHGHEADER,
	MILTER_RK_QUARANTINE,
	MILTER_RK_ADDRCPT,
	MILTER_RK_ADDRCPT_PAR,
	MILTER_RK_DELRCPT,
	MILTER_RK_CHGFROM,
	MILTER_RK_REPLBODY,
	MILTER_RK_OPTNEG,
};

/*
 * A decoded reply.  Strings point into the packet and end with a NUL that
 * lies inside it; they stay valid as long as the packet's bytes do.
 */
struct milter_reply {
	enum milter_reply_kind kind;
	uint32_t index;		/* INSHEADER position, CHGHEADER occurrence */
	const char *name;	/* header name */
	const char *value;	/* header value, recipient, sender, quarantine reason, reply text */
	const char *args;	/* ADDRCPT_PAR, CHGFROM: ESMTP arguments, or NULL */
	struct mx_view body;	/* REPLBODY */
	int code;		/* REPLYCODE: the SMTP code (421..599) */
	/* OPTNEG */
	uint32_t version;
	uint32_t actions;
	uint32_t protocol;
	const char *symlist[MILTER_NSTAGES];	/* SETSYMLIST per stage, or NULL */
};

/* Decode a packet from a milter.  0, or -1 with *err a static message. */
int milter_reply_decode(const struct milter_packet *pkt, struct milter_reply *r,
    const char **err);

/* True for the replies that end a command (accept ... replycode, shutdown, conn_fail). */
bool milter_reply_is_final(enum milter_reply_kind kind);

/*
 * Check a REPLYCODE text: one or more lines "CODE[-| ]TEXT" separated by
 * CRLF, every line the same 4xx or 5xx code, an enhanced status code (if
 * present) of the same class, printable ASCII, each line at most
 * MILTER_REPLY_LINE_MAX octets, at most MILTER_REPLY_LINES_MAX lines.
 * 0 with *code set, or -1 with *err.
 */
int milter_replycode_check(const char *text, size_t len, int *code, const char **err);

/* A header name: 1..MILTER_HEADER_NAME_MAX printable ASCII octets, no ':'. */
bool milter_header_name_ok(const char *name);
/*
 * A header value from a milter, made safe for the spool: line breaks are
 * allowed only as folding (LF or CRLF followed by a space or tab) and come
 * out as CRLF; no other CR, LF or NUL; no physical line (with the name on
 * the first) over MILTER_HEADER_LINE_MAX.  Appends to out; 0 or -1 with *err.
 */
int milter_header_value_normalize(const char *name, const char *value, struct mx_buf *out,
    const char **err);

/*
 * Split a message's header section: at p (a message as the session spooled
 * it, CRLF line endings), return 1 with the next header field's name and
 * value (what follows the colon, up to the final CRLF, folding CRLFs kept)
 * and *used the octets it took, CRLF included; or 0 at the end of the
 * header section, with *used 2 when a blank line ends it and 0 when the
 * body starts without one (a line that is not a header field).
 */
int milter_header_next(const unsigned char *p, size_t len, struct mx_view *name,
    struct mx_view *value, size_t *used);

/* Is macro name (with or without braces) in a SETSYMLIST list ("{a} b {c}")? */
bool milter_symlist_has(const char *list, const char *name);

enum milter_mod_kind {
	MILTER_MOD_ADDHEADER = 0,	/* append name: value */
	MILTER_MOD_INSHEADER,		/* insert at index (0 = top) */
	MILTER_MOD_CHGHEADER,		/* index-th (from 1) name: value; value "" deletes */
	MILTER_MOD_ADDRCPT,		/* value = recipient, args may be set */
	MILTER_MOD_DELRCPT,
	MILTER_MOD_CHGFROM,		/* value = new sender, args may be set */
};

/*
 * One modification from a milter at end of message (milter.c fills them).
 * Header values are validated and normalised by
 * milter_header_value_normalize() (folding as CRLF + WSP, no other
 * CR/LF/NUL, lines within 998 octets) and carry no leading space.
 */
struct milter_mod {
	enum milter_mod_kind kind;
	uint32_t index;
	char *name;
	char *value;
	char *args;			/* or NULL */
	const char *milter;		/* which milter asked */
};

/*
 * Apply the header modifications among mods, in order, to a message's
 * header section hdr[0..len) (the header fields with their CRLFs, without
 * the blank line), as libmilter defines them: add appends; insert puts the
 * field before the index-th field (0 = first; past the end appends);
 * change replaces the index-th field (from 1) of that name, compared
 * without case, or deletes it when the value is empty, and appends the
 * field when there are fewer of that name.  Other kinds are skipped.  The
 * new section is appended to out.  0, or -1 (ENOMEM, or EINVAL when hdr
 * is not a header section).
 */
int milter_headers_apply(const unsigned char *hdr, size_t len, const struct milter_mod *mods,
    size_t n, struct mx_buf *out);

const char *milter_reply_kind_name(enum milter_reply_kind kind);

#endif
