/*
 * SPF, the pure parts: the messages between the daemon and its SPF helper
 * process, the Received-SPF (RFC 7208 §9.1) and Authentication-Results
 * (RFC 8601) header fields we add, and the test for a forged
 * Authentication-Results field that carries our authserv-id (RFC 8601 §5:
 * such fields must be removed).  No I/O; spf.c and spf_helper.c do that.
 *
 * The helper is the less trusted side (it runs libspf2 over DNS answers
 * from anyone), so every decoder checks every length and refuses NULs and
 * control octets in strings.
 */
#ifndef MXEDGE_SPF_PROTO_H
#define MXEDGE_SPF_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define SPF_HELO_MAX 255
#define SPF_SENDER_MAX 512	/* local@domain, SMTPUTF8 allowed */
#define SPF_COMMENT_MAX 512
#define SPF_NAME_MAX 255	/* resolver, receiver */
#define SPF_MSG_MAX 2048	/* one datagram on the helper socket */

enum spf_res {
	SPF_RES_NONE = 0,
	SPF_RES_NEUTRAL,
	SPF_RES_PASS,
	SPF_RES_FAIL,
	SPF_RES_SOFTFAIL,
	SPF_RES_TEMPERROR,
	SPF_RES_PERMERROR,
	SPF_NRES
};

/* "none", "neutral", "pass", ... (RFC 7208 §2.6 names, lower case). */
const char *spf_res_name(enum spf_res r);

/* Daemon -> helper: check one client. */
struct spf_query_msg {
	uint32_t id;
	int family;			/* AF_INET or AF_INET6 */
	unsigned char addr[16];		/* IPv4 in the first 4 octets */
	char helo[SPF_HELO_MAX + 1];
	char sender[SPF_SENDER_MAX + 1];	/* "" for the null sender */
};

/* Helper -> daemon: the answer. */
struct spf_reply_msg {
	uint32_t id;
	enum spf_res result;
	bool helo_identity;		/* the HELO name was checked (null sender) */
	char comment[SPF_COMMENT_MAX + 1];	/* printable ASCII, may be "" */
};

/* Daemon -> helper, first and after a reload. */
struct spf_config_msg {
	uint32_t timeout;		/* seconds for one check */
	bool log_stderr;
	uint8_t log_level;
	char resolver[SPF_NAME_MAX + 1];	/* "system" or "ADDRESS@PORT" */
	char receiver[SPF_NAME_MAX + 1];	/* our host name, for comments */
};

enum spf_msg_type {
	SPF_MSG_INVALID = 0,
	SPF_MSG_CONFIG,
	SPF_MSG_QUERY,
	SPF_MSG_REPLY,
};

/* Encoders: the message's length (<= size), or -1 when a field is out of bounds. */
int spf_msg_put_config(const struct spf_config_msg *m, unsigned char *buf, size_t size);
int spf_msg_put_query(const struct spf_query_msg *m, unsigned char *buf, size_t size);
int spf_msg_put_reply(const struct spf_reply_msg *m, unsigned char *buf, size_t size);
/* What a datagram is; SPF_MSG_INVALID for anything else. */
enum spf_msg_type spf_msg_type(const unsigned char *buf, size_t len);
/* Decoders: 0, or -1 when the datagram is malformed (lengths, NULs, controls). */
int spf_msg_get_config(const unsigned char *buf, size_t len, struct spf_config_msg *m);
int spf_msg_get_query(const unsigned char *buf, size_t len, struct spf_query_msg *m);
int spf_msg_get_reply(const unsigned char *buf, size_t len, struct spf_reply_msg *m);

/* What the header fields say; strings may be NULL (left out). */
struct spf_header_info {
	enum spf_res result;
	bool helo_identity;
	const char *comment;		/* from the helper */
	const char *receiver;		/* our host name */
	const char *client_ip;		/* text, no brackets */
	const char *sender;		/* MAIL FROM address without <>; "" for the null sender */
	const char *helo;
	const char *authserv_id;	/* Authentication-Results only */
};

/*
 * Append a whole header field, CRLF included, folded so that lines stay
 * short: "Received-SPF: pass (comment) receiver=...; client-ip=...;
 * envelope-from=...; helo=...; identity=mailfrom".  Values that are not
 * dot-atoms are quoted; control octets become '?'.  0 or -1 (ENOMEM).
 */
int spf_format_received(struct mx_buf *out, const struct spf_header_info *h);
/* "Authentication-Results: ID; spf=pass smtp.mailfrom=a@b" (smtp.helo for the HELO identity). */
int spf_format_authres(struct mx_buf *out, const struct spf_header_info *h);

/*
 * Is this header field (as received: "Name: value", folding kept, without
 * the final CRLF) an Authentication-Results field whose authserv-id is
 * ours?  Comments and quoting are understood; when the value cannot be
 * parsed, any mention of our id counts as ours (removing too much is
 * safe, letting a forgery through is not).
 */
bool spf_authres_is_ours(const char *field, size_t len, const char *authserv_id);

#endif
