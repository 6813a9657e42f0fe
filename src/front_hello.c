/*
 * ClientHello reader for the TLS front.  It owns the bytes of the hello
 * records from the moment they are fed until front_hello_clear(), and
 * nothing else: it does no I/O and keeps no clock.  Everything it reads is
 * hostile.  It works in two steps: a record scanner that follows record and
 * handshake headers across any segmentation, taking no byte beyond the record
 * that completes the ClientHello, then, once the whole message is there, one
 * bounds-checked pass over the message that finds SNI, ALPN and ECH.  The
 * routing decision is taken on these fields while the backend reads the same
 * bytes, so anything ambiguous (a second server_name, lengths that disagree)
 * is rejected rather than guessed at.  It fails by answering REJECT with a
 * reason and the alert to send; its only other failure is ENOMEM, reported
 * the same way.  Client data is only ever copied into buffers sized from the
 * bytes actually received and bounded by the cap.
 */
#include <stdlib.h>
#include <string.h>

#include "front_hello.h"

#define TLS_CT_CHANGE_CIPHER_SPEC 20
#define TLS_CT_ALERT 21
#define TLS_CT_HANDSHAKE 22
#define TLS_CT_APPLICATION_DATA 23
#define TLS_CT_HEARTBEAT 24
#define TLS_HS_CLIENT_HELLO 1
#define TLS_RECORD_MAX 16384		/* 2^14, RFC 8446 section 5.1 */
#define TLS_RECORD_HDR 5
#define TLS_HS_HDR 4

#define EXT_SERVER_NAME 0
#define EXT_ALPN 16
#define EXT_ECH 0xfe0d

#define HELLO_F_SNI 0x01
#define HELLO_F_ALPN 0x02
#define HELLO_F_ECH 0x04

#define HELLO_BUF_MIN 1024

/* Reading cursor over the reassembled message; every read is checked. */
struct hello_cur {
	const unsigned char *p;
	size_t n;
};

static const char *const hello_reason_str[] = {
	[FRONT_HELLO_OK] = "ok",
	[FRONT_HELLO_ERR_NOT_TLS] = "not TLS",
	[FRONT_HELLO_ERR_SSLV2] = "SSLv2-style hello",
	[FRONT_HELLO_ERR_ALERT] = "alert before hello",
	[FRONT_HELLO_ERR_CONTENT_TYPE] = "first record not handshake",
	[FRONT_HELLO_ERR_INTERLEAVED] = "non-handshake record inside hello",
	[FRONT_HELLO_ERR_RECORD_VERSION] = "bad record version",
	[FRONT_HELLO_ERR_RECORD_EMPTY] = "empty handshake record",
	[FRONT_HELLO_ERR_RECORD_OVERFLOW] = "record longer than 2^14",
	[FRONT_HELLO_ERR_MSG_TYPE] = "handshake message not client_hello",
	[FRONT_HELLO_ERR_TOO_LARGE] = "hello too large",
	[FRONT_HELLO_ERR_TRAILING] = "extra handshake bytes after hello",
	[FRONT_HELLO_ERR_CLIENT_VERSION] = "bad client version",
	[FRONT_HELLO_ERR_DECODE] = "malformed hello",
	[FRONT_HELLO_ERR_EXTENSIONS] = "malformed extensions",
	[FRONT_HELLO_ERR_DUP_EXTENSION] = "duplicate extension",
	[FRONT_HELLO_ERR_SNI_DECODE] = "malformed server_name",
	[FRONT_HELLO_ERR_SNI_TYPE] = "server_name type not host_name",
	[FRONT_HELLO_ERR_SNI_EMPTY] = "empty server name",
	[FRONT_HELLO_ERR_SNI_NAME] = "invalid server name",
	[FRONT_HELLO_ERR_ALPN_DECODE] = "malformed ALPN",
	[FRONT_HELLO_ERR_NOMEM] = "out of memory",
};

/*
 * Bytes a host_name may hold: letters, digits, '-', '.', and '_' (seen in
 * the wild).  The routing layer normalises further; here we only keep out
 * what could confuse logs or lookups.
 */
static const unsigned char hello_name_ok[256] = {
	['-'] = 1, ['.'] = 1, ['_'] = 1,
	['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1,
	['5'] = 1, ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1,
	['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1,
	['G'] = 1, ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1,
	['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1,
	['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1,
	['Y'] = 1, ['Z'] = 1,
	['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1,
	['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1,
	['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1,
	['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
	['y'] = 1, ['z'] = 1,
};

static enum front_hello_result
hello_fail(struct front_hello *h, enum front_hello_reason reason)
{
	h->state = FRONT_HELLO_REJECT;
	h->reason = reason;
	return FRONT_HELLO_REJECT;
}

static bool
cur_u8(struct hello_cur *c, size_t *v)
{
	if (c->n < 1)
		return false;
	*v = c->p[0];
	c->p++;
	c->n--;
	return true;
}

static bool
cur_u16(struct hello_cur *c, size_t *v)
{
	if (c->n < 2)
		return false;
	*v = (size_t)c->p[0] << 8 | c->p[1];
	c->p += 2;
	c->n -= 2;
	return true;
}

/* Split off the next len bytes as *sub. */
static bool
cur_sub(struct hello_cur *c, size_t len, struct hello_cur *sub)
{
	if (c->n < len)
		return false;
	sub->p = c->p;
	sub->n = len;
	c->p += len;
	c->n -= len;
	return true;
}

/* An opaque vector with a one- or two-byte length prefix. */
static bool
cur_vec(struct hello_cur *c, int prefix, struct hello_cur *sub)
{
	size_t len;

	if (!(prefix == 1 ? cur_u8(c, &len) : cur_u16(c, &len)))
		return false;
	return cur_sub(c, len, sub);
}

/*
 * Check the record header byte just collected (hdr[hdrhave - 1]), so that
 * a connection that is not TLS at all is refused on its first byte.
 */
static int
hello_check_header(struct front_hello *h)
{
	unsigned char b = h->hdr[h->hdrhave - 1];

	switch (h->hdrhave) {
	case 1:
		if (b == TLS_CT_HANDSHAKE)
			return 0;
		if (h->records > 0)
			hello_fail(h, FRONT_HELLO_ERR_INTERLEAVED);
		else if (b == TLS_CT_ALERT)
			hello_fail(h, FRONT_HELLO_ERR_ALERT);
		else if (b == TLS_CT_CHANGE_CIPHER_SPEC || b == TLS_CT_APPLICATION_DATA ||
		    b == TLS_CT_HEARTBEAT)
			hello_fail(h, FRONT_HELLO_ERR_CONTENT_TYPE);
		else if (b & 0x80)
			hello_fail(h, FRONT_HELLO_ERR_SSLV2);
		else
			hello_fail(h, FRONT_HELLO_ERR_NOT_TLS);
		return -1;
	case 2:
		if (b != 3)
			goto bad_version;
		return 0;
	case 3:
		if (b > 4)
			goto bad_version;
		return 0;
	default:
		return 0;
	}
bad_version:
	hello_fail(h, FRONT_HELLO_ERR_RECORD_VERSION);
	return -1;
}

/*
 * Follow record and handshake headers over p[0..n).  *used is how far the
 * hello records reach into p.  Nothing is stored but the headers: the caller
 * keeps the bytes, as a view or a copy.
 */
static enum front_hello_result
hello_scan(struct front_hello *h, const unsigned char *p, size_t n, size_t *used)
{
	size_t i = 0, take, len;

	*used = 0;
	while (i < n) {
		if (h->recleft == 0) {
			/* A new record must still fit: header plus one byte. */
			if (h->hdrhave == 0 &&
			    h->max - h->rawlen - i < TLS_RECORD_HDR + 1)
				return hello_fail(h, FRONT_HELLO_ERR_TOO_LARGE);
			while (h->hdrhave < TLS_RECORD_HDR && i < n) {
				h->hdr[h->hdrhave++] = p[i++];
				if (hello_check_header(h) == -1)
					return FRONT_HELLO_REJECT;
			}
			if (h->hdrhave < TLS_RECORD_HDR)
				break;
			len = (size_t)h->hdr[3] << 8 | h->hdr[4];
			if (len == 0)
				return hello_fail(h, FRONT_HELLO_ERR_RECORD_EMPTY);
			if (len > TLS_RECORD_MAX)
				return hello_fail(h, FRONT_HELLO_ERR_RECORD_OVERFLOW);
			if (len > h->max - h->rawlen - i)
				return hello_fail(h, FRONT_HELLO_ERR_TOO_LARGE);
			h->recleft = len;
			h->hdrhave = 0;
			h->records++;
			continue;
		}

		take = n - i < h->recleft ? n - i : h->recleft;
		if (h->msghave < TLS_HS_HDR) {
			if (take > TLS_HS_HDR - h->msghave)
				take = TLS_HS_HDR - h->msghave;
			memcpy(h->hshdr + h->msghave, p + i, take);
			if (h->hshdr[0] != TLS_HS_CLIENT_HELLO)
				return hello_fail(h, FRONT_HELLO_ERR_MSG_TYPE);
		} else if (take > h->msglen - h->msghave)
			return hello_fail(h, FRONT_HELLO_ERR_TRAILING);
		h->msghave += take;
		h->recleft -= take;
		i += take;
		if (h->msglen == 0 && h->msghave == TLS_HS_HDR) {
			h->msglen = TLS_HS_HDR + ((size_t)h->hshdr[1] << 16 |
			    (size_t)h->hshdr[2] << 8 | h->hshdr[3]);
			/* At least one record header goes with the message. */
			if (h->msglen > h->max - TLS_RECORD_HDR)
				return hello_fail(h, FRONT_HELLO_ERR_TOO_LARGE);
		}
		if (h->msglen != 0 && h->msghave == h->msglen) {
			if (h->recleft != 0)
				return hello_fail(h, FRONT_HELLO_ERR_TRAILING);
			*used = i;
			return FRONT_HELLO_DONE;
		}
	}
	*used = i;
	return FRONT_HELLO_MORE;
}

static int
hello_append(struct front_hello *h, const unsigned char *p, size_t n)
{
	size_t need = h->rawlen + n, cap;
	unsigned char *nb;

	if (n == 0)
		return 0;
	if (need > h->bufcap) {
		cap = h->bufcap != 0 ? h->bufcap : HELLO_BUF_MIN;
		while (cap < need)
			cap *= 2;
		/* The scanner never takes more than max bytes. */
		if (cap > h->max)
			cap = h->max;
		if ((nb = realloc(h->buf, cap)) == NULL)
			return -1;
		h->buf = nb;
		h->bufcap = cap;
	}
	memcpy(h->buf + h->rawlen, p, n);
	h->rawlen = need;
	h->raw = h->buf;
	return 0;
}

static enum front_hello_reason
hello_parse_sni(struct front_hello *h, struct hello_cur ext)
{
	struct hello_cur list, name;
	size_t type, i;

	if (!cur_vec(&ext, 2, &list) || ext.n != 0 || list.n == 0)
		return FRONT_HELLO_ERR_SNI_DECODE;
	while (cur_u8(&list, &type)) {
		if (type != 0)
			return FRONT_HELLO_ERR_SNI_TYPE;
		if (!cur_vec(&list, 2, &name))
			return FRONT_HELLO_ERR_SNI_DECODE;
		/* RFC 6066 section 3: one name per type; two would be ambiguous. */
		if (h->flags & HELLO_F_SNI)
			return FRONT_HELLO_ERR_SNI_DECODE;
		if (name.n == 0)
			return FRONT_HELLO_ERR_SNI_EMPTY;
		if (name.n > FRONT_HELLO_SNI_MAX)
			return FRONT_HELLO_ERR_SNI_NAME;
		for (i = 0; i < name.n; i++)
			if (!hello_name_ok[name.p[i]])
				return FRONT_HELLO_ERR_SNI_NAME;
		h->sni_off = (size_t)(name.p - h->msg);
		h->sni_len = name.n;
		h->flags |= HELLO_F_SNI;
	}
	return FRONT_HELLO_OK;
}

static enum front_hello_reason
hello_parse_alpn(struct front_hello *h, struct hello_cur ext)
{
	struct hello_cur list, walk, proto;

	/* RFC 7301 section 3.1: a list of at least one non-empty name. */
	if (!cur_vec(&ext, 2, &list) || ext.n != 0 || list.n < 2)
		return FRONT_HELLO_ERR_ALPN_DECODE;
	walk = list;
	while (walk.n > 0)
		if (!cur_vec(&walk, 1, &proto) || proto.n == 0)
			return FRONT_HELLO_ERR_ALPN_DECODE;
	h->alpn_off = (size_t)(list.p - h->msg);
	h->alpn_len = list.n;
	h->flags |= HELLO_F_ALPN;
	return FRONT_HELLO_OK;
}

/* One pass over the complete ClientHello body (RFC 8446 section 4.1.2). */
static enum front_hello_reason
hello_parse(struct front_hello *h)
{
	struct hello_cur c, skip, exts, ext;
	uint64_t seen = 0;
	size_t v, type;
	enum front_hello_reason r;

	c.p = h->msg + TLS_HS_HDR;
	c.n = h->msglen - TLS_HS_HDR;
	if (!cur_u16(&c, &v))
		return FRONT_HELLO_ERR_DECODE;
	/* Any 3.x: a server negotiates down from versions it does not know. */
	if (v >> 8 != 3)
		return FRONT_HELLO_ERR_CLIENT_VERSION;
	h->version = (uint16_t)v;
	if (!cur_sub(&c, 32, &skip))	/* random */
		return FRONT_HELLO_ERR_DECODE;
	if (!cur_vec(&c, 1, &skip) || skip.n > 32)	/* legacy_session_id */
		return FRONT_HELLO_ERR_DECODE;
	if (!cur_vec(&c, 2, &skip) || skip.n < 2 || skip.n % 2 != 0)	/* cipher_suites */
		return FRONT_HELLO_ERR_DECODE;
	if (!cur_vec(&c, 1, &skip) || skip.n < 1)	/* compression_methods */
		return FRONT_HELLO_ERR_DECODE;
	/* TLS 1.0 and 1.1 clients may end here, without extensions. */
	if (c.n == 0)
		return FRONT_HELLO_OK;
	if (!cur_vec(&c, 2, &exts) || c.n != 0)
		return FRONT_HELLO_ERR_EXTENSIONS;

	while (exts.n > 0) {
		if (!cur_u16(&exts, &type) || !cur_vec(&exts, 2, &ext))
			return FRONT_HELLO_ERR_EXTENSIONS;
		/*
		 * RFC 8446 section 4.2: no type twice.  The backend checks
		 * the rest; the types we route on must be unambiguous, and
		 * the low ones cost one bit each to check.
		 */
		if (type < 64) {
			if (seen & (uint64_t)1 << type)
				return FRONT_HELLO_ERR_DUP_EXTENSION;
			seen |= (uint64_t)1 << type;
		}
		switch (type) {
		case EXT_SERVER_NAME:
			if ((r = hello_parse_sni(h, ext)) != FRONT_HELLO_OK)
				return r;
			break;
		case EXT_ALPN:
			if ((r = hello_parse_alpn(h, ext)) != FRONT_HELLO_OK)
				return r;
			break;
		case EXT_ECH:
			/* We route on the outer SNI; the backend decrypts the rest. */
			if (h->flags & HELLO_F_ECH)
				return FRONT_HELLO_ERR_DUP_EXTENSION;
			h->flags |= HELLO_F_ECH;
			break;
		default:
			break;
		}
	}
	return FRONT_HELLO_OK;
}

/* The records are all there: put the message in one piece and parse it. */
static enum front_hello_result
hello_finish(struct front_hello *h)
{
	size_t off, pos, len;
	enum front_hello_reason r;

	if (h->records == 1) {
		h->msg = h->raw + TLS_RECORD_HDR;
	} else {
		if ((h->msgbuf = malloc(h->msglen)) == NULL)
			return hello_fail(h, FRONT_HELLO_ERR_NOMEM);
		/* The scanner checked every header: they tile the bytes exactly. */
		for (off = 0, pos = 0; off < h->rawlen; off += TLS_RECORD_HDR + len) {
			len = (size_t)h->raw[off + 3] << 8 | h->raw[off + 4];
			memcpy(h->msgbuf + pos, h->raw + off + TLS_RECORD_HDR, len);
			pos += len;
		}
		h->msg = h->msgbuf;
	}
	if ((r = hello_parse(h)) != FRONT_HELLO_OK)
		return hello_fail(h, r);
	h->state = FRONT_HELLO_DONE;
	return FRONT_HELLO_DONE;
}

void
front_hello_init(struct front_hello *h, size_t max_bytes)
{
	memset(h, 0, sizeof(*h));
	h->max = max_bytes != 0 ? max_bytes : FRONT_HELLO_MAX_DEFAULT;
}

void
front_hello_clear(struct front_hello *h)
{
	size_t max = h->max;

	free(h->buf);
	free(h->msgbuf);
	front_hello_init(h, max);
}

enum front_hello_result
front_hello_feed(struct front_hello *h, const void *data, size_t len, size_t *consumed)
{
	const unsigned char *p = data;
	enum front_hello_result r;
	size_t used;

	*consumed = 0;
	if (h->state != FRONT_HELLO_MORE)
		return h->state;
	if (len == 0)
		return FRONT_HELLO_MORE;
	if ((r = hello_scan(h, p, len, &used)) == FRONT_HELLO_REJECT)
		return r;
	if (r == FRONT_HELLO_DONE && h->rawlen == 0) {
		/* The common case: the whole hello in one read, not copied. */
		h->raw = p;
		h->rawlen = used;
	} else if (hello_append(h, p, used) == -1)
		return hello_fail(h, FRONT_HELLO_ERR_NOMEM);
	*consumed = used;
	if (r == FRONT_HELLO_MORE)
		return r;
	return hello_finish(h);
}

int
front_hello_save(struct front_hello *h)
{
	unsigned char *nb;

	if (h->state != FRONT_HELLO_DONE || h->raw == h->buf)
		return 0;
	if ((nb = malloc(h->rawlen)) == NULL)
		return -1;
	memcpy(nb, h->raw, h->rawlen);
	if (h->msg == h->raw + TLS_RECORD_HDR)
		h->msg = nb + TLS_RECORD_HDR;
	free(h->buf);
	h->buf = nb;
	h->bufcap = h->rawlen;
	h->raw = nb;
	return 0;
}

bool
front_hello_has_sni(const struct front_hello *h)
{
	return h->state == FRONT_HELLO_DONE && (h->flags & HELLO_F_SNI);
}

struct mx_view
front_hello_sni(const struct front_hello *h)
{
	struct mx_view v = { NULL, 0 };

	if (front_hello_has_sni(h)) {
		v.ptr = h->msg + h->sni_off;
		v.len = h->sni_len;
	}
	return v;
}

bool
front_hello_has_alpn(const struct front_hello *h)
{
	return h->state == FRONT_HELLO_DONE && (h->flags & HELLO_F_ALPN);
}

struct mx_view
front_hello_alpn(const struct front_hello *h)
{
	struct mx_view v = { NULL, 0 };

	if (front_hello_has_alpn(h)) {
		v.ptr = h->msg + h->alpn_off;
		v.len = h->alpn_len;
	}
	return v;
}

bool
front_hello_alpn_next(struct mx_view *it, struct mx_view *proto)
{
	size_t n;

	if (it->len == 0)
		return false;
	n = it->ptr[0];
	if (n == 0 || n >= it->len) {
		it->len = 0;
		return false;
	}
	proto->ptr = it->ptr + 1;
	proto->len = n;
	it->ptr += 1 + n;
	it->len -= 1 + n;
	return true;
}

bool
front_hello_has_ech(const struct front_hello *h)
{
	return h->state == FRONT_HELLO_DONE && (h->flags & HELLO_F_ECH);
}

uint16_t
front_hello_version(const struct front_hello *h)
{
	return h->state == FRONT_HELLO_DONE ? h->version : 0;
}

struct mx_view
front_hello_raw(const struct front_hello *h)
{
	struct mx_view v = { NULL, 0 };

	if (h->state == FRONT_HELLO_DONE) {
		v.ptr = h->raw;
		v.len = h->rawlen;
	}
	return v;
}

size_t
front_hello_records(const struct front_hello *h)
{
	return h->records;
}

enum front_hello_reason
front_hello_reason(const struct front_hello *h)
{
	return h->reason;
}

const char *
front_hello_reason_str(enum front_hello_reason reason)
{
	if ((size_t)reason >= MX_NELEM(hello_reason_str) || hello_reason_str[reason] == NULL)
		return "unknown";
	return hello_reason_str[reason];
}

bool
front_hello_alert(const struct front_hello *h, enum front_alert *alert)
{
	if (h->state != FRONT_HELLO_REJECT)
		return false;
	switch ((enum front_hello_reason)h->reason) {
	case FRONT_HELLO_OK:
	case FRONT_HELLO_ERR_NOT_TLS:
	case FRONT_HELLO_ERR_ALERT:
		/* Not talking TLS, or already hanging up: just close. */
		return false;
	case FRONT_HELLO_ERR_SSLV2:
	case FRONT_HELLO_ERR_RECORD_VERSION:
	case FRONT_HELLO_ERR_CLIENT_VERSION:
		*alert = FRONT_ALERT_PROTOCOL_VERSION;
		break;
	case FRONT_HELLO_ERR_CONTENT_TYPE:
	case FRONT_HELLO_ERR_INTERLEAVED:
	case FRONT_HELLO_ERR_MSG_TYPE:
	case FRONT_HELLO_ERR_TRAILING:
		*alert = FRONT_ALERT_UNEXPECTED_MESSAGE;
		break;
	case FRONT_HELLO_ERR_RECORD_OVERFLOW:
		*alert = FRONT_ALERT_RECORD_OVERFLOW;
		break;
	case FRONT_HELLO_ERR_TOO_LARGE:
		*alert = FRONT_ALERT_HANDSHAKE_FAILURE;
		break;
	case FRONT_HELLO_ERR_DUP_EXTENSION:
		*alert = FRONT_ALERT_ILLEGAL_PARAMETER;
		break;
	case FRONT_HELLO_ERR_SNI_NAME:
		/* As OpenSSL does for a NUL or an overlong name. */
		*alert = FRONT_ALERT_UNRECOGNIZED_NAME;
		break;
	case FRONT_HELLO_ERR_NOMEM:
		*alert = FRONT_ALERT_INTERNAL_ERROR;
		break;
	case FRONT_HELLO_ERR_RECORD_EMPTY:
	case FRONT_HELLO_ERR_DECODE:
	case FRONT_HELLO_ERR_EXTENSIONS:
	case FRONT_HELLO_ERR_SNI_DECODE:
	case FRONT_HELLO_ERR_SNI_TYPE:
	case FRONT_HELLO_ERR_SNI_EMPTY:
	case FRONT_HELLO_ERR_ALPN_DECODE:
	default:
		*alert = FRONT_ALERT_DECODE_ERROR;
		break;
	}
	return true;
}

size_t
front_alert_write(unsigned char out[FRONT_ALERT_LEN], enum front_alert alert)
{
	/*
	 * Record version 3.3: what TLS 1.2 and 1.3 servers send before
	 * any version is agreed, and what clients of either accept.
	 */
	out[0] = TLS_CT_ALERT;
	out[1] = 3;
	out[2] = 3;
	out[3] = 0;
	out[4] = 2;
	out[5] = 2;	/* fatal */
	out[6] = (unsigned char)alert;
	return FRONT_ALERT_LEN;
}
