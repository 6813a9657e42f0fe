/*
 * TLS ClientHello reader for the front: fed the first bytes of a connection as
 * they arrive, it answers need-more, reject (with a reason and the alert to
 * send) or done (SNI, ALPN, and exactly which bytes were the hello records).
 * Pure code: no I/O, no logging, no clock.  The caller owns the deadline.
 */
#ifndef MXEDGE_FRONT_HELLO_H
#define MXEDGE_FRONT_HELLO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define FRONT_HELLO_MAX_DEFAULT 16384	/* record bytes, headers included */
#define FRONT_HELLO_SNI_MAX 255		/* octets of a host_name */
#define FRONT_ALERT_LEN 7		/* one alert record */

enum front_hello_result {
	FRONT_HELLO_MORE = 0,	/* every byte was taken; feed more */
	FRONT_HELLO_DONE,	/* complete and valid; read the results */
	FRONT_HELLO_REJECT,	/* see front_hello_reason() and front_hello_alert() */
};

enum front_hello_reason {
	FRONT_HELLO_OK = 0,
	FRONT_HELLO_ERR_NOT_TLS,	/* first byte is no TLS content type */
	FRONT_HELLO_ERR_SSLV2,		/* SSLv2-style record header */
	FRONT_HELLO_ERR_ALERT,		/* the client opened with an alert record */
	FRONT_HELLO_ERR_CONTENT_TYPE,	/* first record is CCS, application data... */
	FRONT_HELLO_ERR_INTERLEAVED,	/* a non-handshake record among the hello records */
	FRONT_HELLO_ERR_RECORD_VERSION,	/* record version outside 0x0300..0x0304 */
	FRONT_HELLO_ERR_RECORD_EMPTY,	/* zero-length handshake record */
	FRONT_HELLO_ERR_RECORD_OVERFLOW,	/* record longer than 2^14 */
	FRONT_HELLO_ERR_MSG_TYPE,	/* first handshake message is not client_hello */
	FRONT_HELLO_ERR_TOO_LARGE,	/* beyond the configured cap */
	FRONT_HELLO_ERR_TRAILING,	/* more handshake bytes after the hello in its record */
	FRONT_HELLO_ERR_CLIENT_VERSION,	/* legacy_version is not 3.x */
	FRONT_HELLO_ERR_DECODE,		/* fixed fields do not fit the message */
	FRONT_HELLO_ERR_EXTENSIONS,	/* extension lengths do not add up */
	FRONT_HELLO_ERR_DUP_EXTENSION,	/* an extension type sent twice */
	FRONT_HELLO_ERR_SNI_DECODE,	/* server_name lengths do not add up */
	FRONT_HELLO_ERR_SNI_TYPE,	/* a name_type other than host_name(0) */
	FRONT_HELLO_ERR_SNI_EMPTY,	/* zero-length host_name */
	FRONT_HELLO_ERR_SNI_NAME,	/* too long, or a byte outside letters, digits, "-._" */
	FRONT_HELLO_ERR_ALPN_DECODE,	/* ALPN lengths do not add up, or an empty name */
	FRONT_HELLO_ERR_NOMEM,
};

/* TLS AlertDescription values (RFC 8446 section 6) the front may send. */
enum front_alert {
	FRONT_ALERT_CLOSE_NOTIFY = 0,
	FRONT_ALERT_UNEXPECTED_MESSAGE = 10,
	FRONT_ALERT_RECORD_OVERFLOW = 22,
	FRONT_ALERT_HANDSHAKE_FAILURE = 40,
	FRONT_ALERT_ILLEGAL_PARAMETER = 47,
	FRONT_ALERT_DECODE_ERROR = 50,
	FRONT_ALERT_PROTOCOL_VERSION = 70,
	FRONT_ALERT_INTERNAL_ERROR = 80,
	FRONT_ALERT_MISSING_EXTENSION = 109,
	FRONT_ALERT_UNRECOGNIZED_NAME = 112,
};

/*
 * Parser state.  Embed it or allocate it; the fields are private to
 * front_hello.c and are only here so that no allocation is needed per
 * connection.
 */
struct front_hello {
	const unsigned char *raw;	/* the hello records: caller's data or buf */
	unsigned char *buf;		/* owned copy of the records, when needed */
	unsigned char *msgbuf;		/* owned reassembly when split over records */
	const unsigned char *msg;	/* the handshake message, header included */
	size_t max;
	size_t rawlen;
	size_t bufcap;
	size_t msglen;			/* 4 + body length, 0 until known */
	size_t msghave;			/* handshake bytes seen so far */
	size_t recleft;			/* payload bytes still due in this record */
	size_t sni_off, sni_len;	/* into msg */
	size_t alpn_off, alpn_len;	/* the protocol_name_list, into msg */
	uint32_t records;
	uint16_t version;		/* ClientHello.legacy_version */
	unsigned char hdr[5];		/* record header being collected */
	unsigned char hshdr[4];		/* handshake header being collected */
	uint8_t hdrhave;
	uint8_t state;
	uint8_t reason;
	uint8_t flags;
};

/* max_bytes caps the record bytes buffered (0 means FRONT_HELLO_MAX_DEFAULT). */
void front_hello_init(struct front_hello *h, size_t max_bytes);
/* Release owned storage; h may be initialised again afterwards. */
void front_hello_clear(struct front_hello *h);

/*
 * Feed the next bytes of the connection.  *consumed is how many of them
 * belong to the hello records: all of them on MORE, up to the end of the
 * record that completes the hello on DONE.  Bytes beyond that (pipelined
 * data) are the caller's, to forward unchanged after the hello.  After DONE
 * or REJECT, further calls change nothing and consume nothing.
 *
 * Zero copy: when the whole hello arrives in a single call, its bytes are not
 * copied and every view below points into that call's data, which must then
 * stay unchanged for as long as the views are used, or be handed over with
 * front_hello_save() first.  Otherwise the parser holds its own copy.
 */
enum front_hello_result front_hello_feed(struct front_hello *h, const void *data,
    size_t len, size_t *consumed);

/* Copy the hello into storage the parser owns, so the fed buffer may be reused.  0 or -1. */
int front_hello_save(struct front_hello *h);

/* After DONE.  Views stay valid until front_hello_clear() (see the zero-copy note). */
bool front_hello_has_sni(const struct front_hello *h);
struct mx_view front_hello_sni(const struct front_hello *h);	/* host_name, as sent */
bool front_hello_has_alpn(const struct front_hello *h);
struct mx_view front_hello_alpn(const struct front_hello *h);	/* protocol_name_list body */
bool front_hello_has_ech(const struct front_hello *h);	/* encrypted_client_hello present */
uint16_t front_hello_version(const struct front_hello *h);	/* ClientHello.legacy_version */
/* The hello records exactly as received: replay these to the backend. */
struct mx_view front_hello_raw(const struct front_hello *h);
size_t front_hello_records(const struct front_hello *h);

/*
 * Walk a protocol_name_list: *it starts as front_hello_alpn(); each call
 * stores the next protocol name in *proto and returns true, false at the end.
 */
bool front_hello_alpn_next(struct mx_view *it, struct mx_view *proto);

/* After REJECT. */
enum front_hello_reason front_hello_reason(const struct front_hello *h);
const char *front_hello_reason_str(enum front_hello_reason reason);
/* Whether to answer with a fatal alert, and which one; false: just close. */
bool front_hello_alert(const struct front_hello *h, enum front_alert *alert);

/* Write a fatal alert record into out; returns FRONT_ALERT_LEN. */
size_t front_alert_write(unsigned char out[FRONT_ALERT_LEN], enum front_alert alert);

#endif
