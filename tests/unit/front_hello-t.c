/*
 * Tests for the ClientHello reader: hellos captured from gnutls-cli, openssl
 * s_client and curl (tests/data/hello-*.bin, made by make-hellos.sh), fed
 * whole, byte by byte, in TCP-sized and random segments, and re-framed as
 * one-byte records; synthetic hellos built from a capture (GREASE, ECH,
 * padding up to the cap); and every kind of malformed input the reader must
 * refuse, each checked for its reason whether fed whole or byte by byte.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "basic.h"
#include "front_hello.h"

#define SNI "imap.example.test"

/* A growable byte string for building inputs. */
struct tb {
	unsigned char *p;
	size_t n;
	size_t cap;
};

/* A ClientHello taken apart: fixed fields, then the extensions in order. */
struct ext {
	unsigned type;
	struct tb data;
};

struct model {
	struct tb pre;		/* legacy_version .. compression_methods */
	struct ext ext[64];
	size_t next;
	unsigned recver;	/* record version of the capture */
};

static unsigned long rng_state = 12345;

static unsigned long
rng(void)
{
	rng_state = rng_state * 6364136223846793005UL + 1442695040888963407UL;
	return rng_state >> 33;
}

static void
tb_put(struct tb *b, const void *p, size_t n)
{
	if (b->n + n > b->cap) {
		size_t cap = b->cap ? b->cap : 256;

		while (cap < b->n + n)
			cap *= 2;
		if ((b->p = realloc(b->p, cap)) == NULL)
			bail("out of memory");
		b->cap = cap;
	}
	if (n > 0)
		memcpy(b->p + b->n, p, n);
	b->n += n;
}

static void
tb_u8(struct tb *b, unsigned v)
{
	unsigned char c = (unsigned char)v;

	tb_put(b, &c, 1);
}

static void
tb_u16(struct tb *b, unsigned v)
{
	tb_u8(b, v >> 8);
	tb_u8(b, v & 0xff);
}

static void
tb_u24(struct tb *b, unsigned long v)
{
	tb_u8(b, (unsigned)(v >> 16) & 0xff);
	tb_u16(b, (unsigned)(v & 0xffff));
}

static void
tb_free(struct tb *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}

/* Concatenate the payloads of the records in raw (trusted: a capture). */
static void
records_payload(const unsigned char *raw, size_t len, struct tb *out)
{
	size_t off = 0, n;

	while (off + 5 <= len) {
		n = (size_t)raw[off + 3] << 8 | raw[off + 4];
		tb_put(out, raw + off + 5, n);
		off += 5 + n;
	}
}

/* Frame handshake bytes into records of at most recsize payload bytes. */
static void
frame(const unsigned char *hs, size_t len, size_t recsize, unsigned version, struct tb *out)
{
	size_t off, n;

	for (off = 0; off < len; off += n) {
		n = len - off < recsize ? len - off : recsize;
		tb_u8(out, 22);
		tb_u16(out, version);
		tb_u16(out, (unsigned)n);
		tb_put(out, hs + off, n);
	}
}

static void
model_load(struct model *m, const unsigned char *raw, size_t len)
{
	struct tb hs = { 0 };
	const unsigned char *p, *end;
	size_t off, n;

	memset(m, 0, sizeof(*m));
	m->recver = (unsigned)raw[1] << 8 | raw[2];
	records_payload(raw, len, &hs);
	p = hs.p + 4;
	end = hs.p + hs.n;
	off = 2 + 32;
	off += 1 + p[off];
	off += 2 + ((size_t)p[off] << 8 | p[off + 1]);
	off += 1 + p[off];
	tb_put(&m->pre, p, off);
	if (p + off < end)
		off += 2;
	while (p + off < end) {
		struct ext *e = &m->ext[m->next++];

		e->type = (unsigned)p[off] << 8 | p[off + 1];
		n = (size_t)p[off + 2] << 8 | p[off + 3];
		tb_put(&e->data, p + off + 4, n);
		off += 4 + n;
	}
	tb_free(&hs);
}

static void
model_free(struct model *m)
{
	size_t i;

	tb_free(&m->pre);
	for (i = 0; i < m->next; i++)
		tb_free(&m->ext[i].data);
}

static ssize_t
model_find(struct model *m, unsigned type)
{
	size_t i;

	for (i = 0; i < m->next; i++)
		if (m->ext[i].type == type)
			return (ssize_t)i;
	return -1;
}

/* Insert an extension at position pos (m->next or more: at the end). */
static void
model_add(struct model *m, size_t pos, unsigned type, const void *data, size_t len)
{
	if (m->next == MX_NELEM(m->ext))
		bail("too many extensions");
	if (pos > m->next)
		pos = m->next;
	memmove(&m->ext[pos + 1], &m->ext[pos], (m->next - pos) * sizeof(m->ext[0]));
	memset(&m->ext[pos], 0, sizeof(m->ext[pos]));
	m->ext[pos].type = type;
	tb_put(&m->ext[pos].data, data, len);
	m->next++;
}

/* Replace the data of extension type (added at the end if absent). */
static void
model_set(struct model *m, unsigned type, const void *data, size_t len)
{
	ssize_t i = model_find(m, type);

	if (i < 0) {
		model_add(m, m->next, type, data, len);
		return;
	}
	m->ext[i].data.n = 0;
	tb_put(&m->ext[i].data, data, len);
}

/* The handshake message: header, fixed fields, extensions. */
static void
model_message(struct model *m, struct tb *msg)
{
	struct tb body = { 0 }, exts = { 0 };
	size_t i;

	for (i = 0; i < m->next; i++) {
		tb_u16(&exts, m->ext[i].type);
		tb_u16(&exts, (unsigned)m->ext[i].data.n);
		tb_put(&exts, m->ext[i].data.p, m->ext[i].data.n);
	}
	tb_put(&body, m->pre.p, m->pre.n);
	tb_u16(&body, (unsigned)exts.n);
	tb_put(&body, exts.p, exts.n);
	tb_u8(msg, 1);
	tb_u24(msg, body.n);
	tb_put(msg, body.p, body.n);
	tb_free(&body);
	tb_free(&exts);
}

/* The whole hello as one record (or several when bigger than 2^14). */
static void
model_hello(struct model *m, struct tb *out)
{
	struct tb msg = { 0 };

	model_message(m, &msg);
	frame(msg.p, msg.n, 16384, m->recver, out);
	tb_free(&msg);
}

static void
sni_ext(struct tb *b, const char *name, size_t len)
{
	tb_u16(b, (unsigned)(len + 3));
	tb_u8(b, 0);
	tb_u16(b, (unsigned)len);
	tb_put(b, name, len);
}

static void
alpn_ext(struct tb *b, const char *const *names)
{
	struct tb list = { 0 };

	for (; *names != NULL; names++) {
		tb_u8(&list, (unsigned)strlen(*names));
		tb_put(&list, *names, strlen(*names));
	}
	tb_u16(b, (unsigned)list.n);
	tb_put(b, list.p, list.n);
	tb_free(&list);
}

static int
is_view(const char *want, struct mx_view v, const char *fmt, ...) TAP_PRINTF(3, 4);

static int
is_view(const char *want, struct mx_view v, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (want == NULL)
		return ok(v.ptr == NULL && v.len == 0, "%s", msg);
	return is_blob(want, strlen(want), v.ptr, v.len, "%s", msg);
}

/*
 * Feed data in segments: seg 0 = whole, SIZE_MAX = random sizes, else that
 * many bytes each.  Every MORE must consume the whole segment.  Returns the
 * final result; *total is the sum of bytes consumed.
 */
static enum front_hello_result
feed(struct front_hello *h, const unsigned char *data, size_t len, size_t seg, size_t *total)
{
	enum front_hello_result r = FRONT_HELLO_MORE;
	size_t off = 0, n, used;
	int short_more = 0;

	*total = 0;
	while (off < len) {
		if (seg == 0)
			n = len;
		else if (seg == SIZE_MAX)
			n = 1 + rng() % 600;
		else
			n = seg;
		if (n > len - off)
			n = len - off;
		r = front_hello_feed(h, data + off, n, &used);
		*total += used;
		if (r != FRONT_HELLO_MORE)
			break;
		if (used != n)
			short_more = 1;
		off += n;
	}
	if (short_more)
		diag("MORE consumed less than it was given");
	return short_more ? FRONT_HELLO_REJECT : r;
}

static const char *
seg_name(size_t seg)
{
	static char buf[48];

	if (seg == 0)
		return "whole";
	if (seg == SIZE_MAX)
		return "random segments";
	snprintf(buf, sizeof(buf), "%zu-byte segments", seg);
	return buf;
}

/* Expect DONE with the given SNI and ALPN list ("a,b"), consuming exactly len bytes. */
static void
check_done(const char *what, const unsigned char *data, size_t len, size_t extra,
    size_t seg, size_t max, const char *sni, const char *alpn)
{
	struct front_hello h;
	struct mx_view it, proto;
	enum front_hello_result r;
	char got[1024];
	size_t used, off = 0;
	enum front_alert alert;

	front_hello_init(&h, max);
	r = feed(&h, data, len + extra, seg, &used);
	if (!is_int(FRONT_HELLO_DONE, r, "%s, %s: done", what, seg_name(seg))) {
		diag("reason: %s", front_hello_reason_str(front_hello_reason(&h)));
		front_hello_clear(&h);
		return;
	}
	is_int((long long)len, (long long)used, "%s, %s: consumed exactly the hello", what,
	    seg_name(seg));
	is_blob(data, len, front_hello_raw(&h).ptr, front_hello_raw(&h).len,
	    "%s, %s: raw bytes are the hello records", what, seg_name(seg));
	ok(front_hello_raw(&h).len <= (max != 0 ? max : FRONT_HELLO_MAX_DEFAULT),
	    "%s, %s: within the cap", what, seg_name(seg));
	if (seg == 0 || (seg != SIZE_MAX && seg >= len + extra))
		ok(front_hello_raw(&h).ptr == data, "%s, %s: not copied", what, seg_name(seg));
	is_view(sni, front_hello_sni(&h), "%s, %s: SNI", what, seg_name(seg));
	ok(front_hello_has_sni(&h) == (sni != NULL), "%s, %s: has_sni", what, seg_name(seg));
	got[0] = '\0';
	it = front_hello_alpn(&h);
	while (front_hello_alpn_next(&it, &proto)) {
		int n = snprintf(got + off, sizeof(got) - off, "%s%.*s", off ? "," : "",
		    (int)proto.len, (const char *)proto.ptr);

		if (n < 0 || (size_t)n >= sizeof(got) - off)
			break;
		off += (size_t)n;
	}
	is_string(alpn != NULL ? alpn : "", got, "%s, %s: ALPN", what, seg_name(seg));
	ok(front_hello_has_alpn(&h) == (alpn != NULL), "%s, %s: has_alpn", what, seg_name(seg));
	ok(!front_hello_alert(&h, &alert), "%s, %s: no alert", what, seg_name(seg));
	r = front_hello_feed(&h, data, len, &used);
	ok(r == FRONT_HELLO_DONE && used == 0, "%s, %s: done is final", what, seg_name(seg));
	front_hello_clear(&h);
}

/* Expect REJECT for a reason, fed whole and byte by byte. */
static void
check_reject(const char *what, const unsigned char *data, size_t len, size_t max,
    enum front_hello_reason reason, int alert)
{
	static const size_t segs[] = { 0, 1 };
	struct front_hello h;
	enum front_hello_result r;
	enum front_alert got;
	size_t i, used;
	int want_alert;

	for (i = 0; i < MX_NELEM(segs); i++) {
		front_hello_init(&h, max);
		r = feed(&h, data, len, segs[i], &used);
		is_int(FRONT_HELLO_REJECT, r, "%s, %s: rejected", what, seg_name(segs[i]));
		is_string(front_hello_reason_str(reason),
		    front_hello_reason_str(front_hello_reason(&h)), "%s, %s: reason", what,
		    seg_name(segs[i]));
		want_alert = front_hello_alert(&h, &got) ? (int)got : -1;
		is_int(alert, want_alert, "%s, %s: alert", what, seg_name(segs[i]));
		r = front_hello_feed(&h, data, len, &used);
		ok(r == FRONT_HELLO_REJECT && used == 0, "%s, %s: reject is final", what,
		    seg_name(segs[i]));
		front_hello_clear(&h);
	}
}

/* Build a hello from m and expect it to be rejected for reason. */
static void
check_model_reject(const char *what, struct model *m, enum front_hello_reason reason, int alert)
{
	struct tb in = { 0 };

	model_hello(m, &in);
	check_reject(what, in.p, in.n, 0, reason, alert);
	tb_free(&in);
}

static void
check_model_done(const char *what, struct model *m, const char *sni, const char *alpn)
{
	struct tb in = { 0 };

	model_hello(m, &in);
	check_done(what, in.p, in.n, 0, 0, 0, sni, alpn);
	check_done(what, in.p, in.n, 0, 1, 0, sni, alpn);
	tb_free(&in);
}

struct capture {
	const char *file;
	const char *sni;
	const char *alpn;
	size_t records;
};

static const struct capture captures[] = {
	{ "hello-gnutls.bin", SNI, NULL, 1 },
	{ "hello-gnutls-alpn.bin", SNI, "imap,pop3", 1 },
	{ "hello-gnutls-large.bin", SNI,
	  "imap,x-mxedge-test-protocol-01,x-mxedge-test-protocol-02,"
	  "x-mxedge-test-protocol-03,x-mxedge-test-protocol-04,"
	  "x-mxedge-test-protocol-05,x-mxedge-test-protocol-06,"
	  "x-mxedge-test-protocol-07", 1 },
	{ "hello-openssl.bin", SNI, NULL, 1 },
	{ "hello-openssl-alpn.bin", SNI, "imap,pop3", 1 },
	{ "hello-openssl-nosni.bin", NULL, NULL, 1 },
	{ "hello-openssl-tls12.bin", SNI, NULL, 1 },
	{ "hello-openssl-split.bin", SNI, NULL, 3 },
	{ "hello-curl.bin", SNI, NULL, 1 },
};

/* What a client might pipeline after its hello: TLS 1.3 early data. */
static const unsigned char pipelined[] = {
	0x17, 0x03, 0x03, 0x00, 0x05, 'h', 'e', 'l', 'l', 'o',
};

static void
test_capture(const struct capture *c)
{
	static const size_t segs[] = { 0, 1, 2, 3, 5, 7, 64, 1448, SIZE_MAX };
	struct front_hello h;
	struct tb in = { 0 }, hs = { 0 }, one = { 0 }, odd = { 0 };
	unsigned char *data, *copy;
	size_t len, i, used;
	enum front_hello_result r;

	data = test_data_read(c->file, &len);
	for (i = 0; i < MX_NELEM(segs); i++)
		check_done(c->file, data, len, 0, segs[i], 0, c->sni, c->alpn);

	/* Pipelined bytes after the hello stay with the caller. */
	tb_put(&in, data, len);
	tb_put(&in, pipelined, sizeof(pipelined));
	check_done(c->file, in.p, len, sizeof(pipelined), 0, 0, c->sni, c->alpn);
	check_done(c->file, in.p, len, sizeof(pipelined), 1, 0, c->sni, c->alpn);
	check_done(c->file, in.p, len, sizeof(pipelined), 100, 0, c->sni, c->alpn);

	/* Zero copy: the views point into the fed buffer until saved. */
	copy = malloc(len);
	if (copy == NULL)
		bail("out of memory");
	memcpy(copy, data, len);
	front_hello_init(&h, 0);
	r = front_hello_feed(&h, copy, len, &used);
	is_int(FRONT_HELLO_DONE, r, "%s: done", c->file);
	is_int((long long)c->records, (long long)front_hello_records(&h), "%s: records",
	    c->file);
	is_int(0x0303, front_hello_version(&h), "%s: legacy_version", c->file);
	/* A hello split over records is reassembled in the parser's memory. */
	ok(front_hello_sni(&h).ptr == NULL || c->records > 1 ||
	    (front_hello_sni(&h).ptr > copy && front_hello_sni(&h).ptr < copy + len),
	    "%s: SNI points into the input", c->file);
	is_int(0, front_hello_save(&h), "%s: save", c->file);
	memset(copy, 0, len);
	is_view(c->sni, front_hello_sni(&h), "%s: SNI after save", c->file);
	is_blob(data, len, front_hello_raw(&h).ptr, front_hello_raw(&h).len,
	    "%s: raw after save", c->file);
	front_hello_clear(&h);
	free(copy);

	/* Re-framed as one-byte records, and as records of odd sizes. */
	records_payload(data, len, &hs);
	frame(hs.p, hs.n, 1, 0x0301, &one);
	check_done("one-byte records", one.p, one.n, 0, 0, 0, c->sni, c->alpn);
	check_done("one-byte records", one.p, one.n, 0, 1, 0, c->sni, c->alpn);
	check_done("one-byte records", one.p, one.n, 0, 1448, 0, c->sni, c->alpn);
	frame(hs.p, hs.n, 3, 0x0303, &odd);
	check_done("three-byte records", odd.p, odd.n, 0, 0, 0, c->sni, c->alpn);
	check_done("three-byte records", odd.p, odd.n, 0, SIZE_MAX, 0, c->sni, c->alpn);
	tb_free(&odd);
	frame(hs.p, hs.n, 4 + 31, 0x0300, &odd);
	check_done("35-byte SSL3.0 records", odd.p, odd.n, 0, 7, 0, c->sni, c->alpn);

	tb_free(&in);
	tb_free(&hs);
	tb_free(&one);
	tb_free(&odd);
	free(data);
}

/* GREASE (RFC 8701), ECH, padding: built from a real capture. */
static void
test_synthetic(void)
{
	static const unsigned char grease1[] = { 0 }, ech[] = {
		0x00, 0x00, 0x01, 0x00, 0x01, 0x42, 0x00, 0x04, 1, 2, 3, 4, 0x00, 0x04, 5, 6, 7, 8,
	};
	static const char *const alpn[] = { "\x0a\x0a", "imap", NULL };
	unsigned char *data, *pad;
	size_t len, msglen;
	struct model m;
	struct tb t = { 0 }, in = { 0 }, msg = { 0 }, hs = { 0 };
	ssize_t i;

	data = test_data_read("hello-openssl.bin", &len);

	model_load(&m, data, len);
	model_add(&m, 0, 0x0a0a, NULL, 0);
	model_add(&m, 3, 0xdada, grease1, sizeof(grease1));
	model_add(&m, m.next, 0x1a1a, grease1, sizeof(grease1));
	alpn_ext(&t, alpn);
	model_set(&m, 16, t.p, t.n);
	check_model_done("GREASE extensions and ALPN", &m, SNI, "\x0a\x0a,imap");
	model_free(&m);
	tb_free(&t);

	model_load(&m, data, len);
	model_add(&m, 2, 0xfe0d, ech, sizeof(ech));
	model_hello(&m, &in);
	check_done("ECH outer hello", in.p, in.n, 0, 0, 0, SNI, NULL);
	{
		struct front_hello h;
		size_t used;

		front_hello_init(&h, 0);
		front_hello_feed(&h, in.p, in.n, &used);
		ok(front_hello_has_ech(&h), "ECH: reported");
		front_hello_clear(&h);
		front_hello_init(&h, 0);
		front_hello_feed(&h, data, len, &used);
		ok(!front_hello_has_ech(&h), "no ECH: not reported");
		front_hello_clear(&h);
	}
	tb_free(&in);
	model_add(&m, 5, 0xfe0d, ech, sizeof(ech));
	check_model_reject("two ECH extensions", &m, FRONT_HELLO_ERR_DUP_EXTENSION,
	    FRONT_ALERT_ILLEGAL_PARAMETER);
	model_free(&m);

	/* A post-quantum-sized hello: padding (extension 21) to 2400 bytes. */
	pad = calloc(1, 20000);
	if (pad == NULL)
		bail("out of memory");
	model_load(&m, data, len);
	model_set(&m, 21, pad, 2400 - (len - 5) - 4);
	model_message(&m, &msg);
	is_int(2400, (long long)msg.n, "padded message is 2400 bytes");
	frame(msg.p, msg.n, 16384, 0x0301, &in);
	check_done("2400-byte hello", in.p, in.n, 0, 0, 0, SNI, NULL);
	check_done("2400-byte hello", in.p, in.n, 0, 1448, 0, SNI, NULL);
	check_done("2400-byte hello", in.p, in.n, 0, 1, 0, SNI, NULL);
	tb_free(&in);
	/* The same as one-byte records is 6 x 2400 bytes, beyond the default cap. */
	frame(msg.p, msg.n, 1, 0x0301, &in);
	check_done("2400-byte hello in one-byte records, cap 16000", in.p, in.n, 0, 0, 16000,
	    SNI, NULL);
	check_reject("2400-byte hello in one-byte records, cap 14399", in.p, in.n, 14399,
	    FRONT_HELLO_ERR_TOO_LARGE, FRONT_ALERT_HANDSHAKE_FAILURE);
	tb_free(&in);
	tb_free(&msg);
	model_free(&m);

	/* Exactly at the default cap: 5 + 16379 bytes in one record. */
	model_load(&m, data, len);
	msglen = 16384 - 5;
	model_set(&m, 21, pad, msglen - (len - 5) - 4);
	model_hello(&m, &in);
	is_int(16384, (long long)in.n, "hello at the cap is 16384 bytes");
	check_done("hello at the cap", in.p, in.n, 0, 0, 0, SNI, NULL);
	check_done("hello at the cap", in.p, in.n, 0, 1448, 0, SNI, NULL);
	tb_free(&in);
	/* One byte more. */
	model_set(&m, 21, pad, msglen + 1 - (len - 5) - 4);
	model_hello(&m, &in);
	check_reject("hello one byte over the cap", in.p, in.n, 0,
	    FRONT_HELLO_ERR_TOO_LARGE, FRONT_ALERT_HANDSHAKE_FAILURE);
	tb_free(&in);
	/* Two records: the second record header counts against the cap too. */
	model_set(&m, 21, pad, msglen - 5 - (len - 5) - 4);
	model_message(&m, &msg);
	frame(msg.p, msg.n, 9000, 0x0301, &in);
	is_int(16384, (long long)in.n, "two-record hello at the cap is 16384 bytes");
	check_done("two-record hello at the cap", in.p, in.n, 0, 0, 0, SNI, NULL);
	check_done("two-record hello at the cap", in.p, in.n, 0, 1, 0, SNI, NULL);
	tb_free(&in);
	tb_free(&msg);
	model_set(&m, 21, pad, msglen - 4 - (len - 5) - 4);
	model_message(&m, &msg);
	frame(msg.p, msg.n, 9000, 0x0301, &in);
	check_reject("two-record hello one byte over the cap", in.p, in.n, 0,
	    FRONT_HELLO_ERR_TOO_LARGE, FRONT_ALERT_HANDSHAKE_FAILURE);
	tb_free(&in);
	tb_free(&msg);
	/* A bigger cap admits a hello in two full records. */
	model_set(&m, 21, pad, 20000 - (len - 5) - 4);
	model_hello(&m, &in);
	check_done("20000-byte hello in two records, cap 32768", in.p, in.n, 0, 0, 32768,
	    SNI, NULL);
	check_done("20000-byte hello in two records, cap 32768", in.p, in.n, 0, 1000, 32768,
	    SNI, NULL);
	check_reject("20000-byte hello, default cap", in.p, in.n, 0,
	    FRONT_HELLO_ERR_TOO_LARGE, FRONT_ALERT_HANDSHAKE_FAILURE);
	tb_free(&in);
	model_free(&m);
	free(pad);

	/* TLS 1.0 style: no extensions at all, so no SNI. */
	model_load(&m, data, len);
	model_message(&m, &msg);
	i = 4 + (ssize_t)m.pre.n;
	tb_put(&hs, msg.p, (size_t)i);
	hs.p[1] = 0;
	hs.p[2] = (unsigned char)((i - 4) >> 8);
	hs.p[3] = (unsigned char)((i - 4) & 0xff);
	frame(hs.p, hs.n, 16384, 0x0301, &in);
	check_done("hello without extensions", in.p, in.n, 0, 0, 0, NULL, NULL);
	tb_free(&in);
	tb_free(&hs);
	tb_free(&msg);
	model_free(&m);

	/* A 255-byte name is allowed, with '_' and upper case. */
	{
		char name[256];

		memset(name, 'a', sizeof(name));
		memcpy(name, "Imap_1.", 7);
		name[255] = '\0';
		model_load(&m, data, len);
		sni_ext(&t, name, 255);
		model_set(&m, 0, t.p, t.n);
		check_model_done("255-byte SNI", &m, name, NULL);
		model_free(&m);
		tb_free(&t);
	}
	free(data);
}

/* Hand-made records that are not a ClientHello at all. */
static void
test_not_hello(void)
{
	static const unsigned char sslv2[] = {
		0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10,
	};
	static const unsigned char alert[] = { 0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x28 };
	static const unsigned char ccs[] = { 0x14, 0x03, 0x03, 0x00, 0x01, 0x01 };
	static const unsigned char appdata[] = { 0x17, 0x03, 0x03, 0x00, 0x02, 'h', 'i' };
	static const unsigned char heartbeat[] = { 0x18, 0x03, 0x02, 0x00, 0x03, 1, 0, 0 };
	static const unsigned char v305[] = { 0x16, 0x03, 0x05, 0x00, 0x04, 1, 0, 0, 0 };
	static const unsigned char v200[] = { 0x16, 0x02, 0x00, 0x00, 0x04, 1, 0, 0, 0 };
	static const unsigned char empty[] = { 0x16, 0x03, 0x01, 0x00, 0x00 };
	static const unsigned char big[] = { 0x16, 0x03, 0x01, 0x40, 0x01, 1, 0, 0 };
	static const unsigned char serverhello[] = { 0x16, 0x03, 0x03, 0x00, 0x04, 2, 0, 0, 0 };
	static const unsigned char finished[] = { 0x16, 0x03, 0x03, 0x00, 0x01, 20 };
	static const unsigned char huge[] = { 0x16, 0x03, 0x01, 0x00, 0x04, 1, 0x01, 0x00, 0x00 };
	static const unsigned char tiny[] = { 0x16, 0x03, 0x01, 0x00, 0x04, 1, 0, 0, 0 };
	static const unsigned char norandom[] = {
		0x16, 0x03, 0x01, 0x00, 0x0e, 1, 0, 0, 0x0a, 3, 3, 1, 2, 3, 4, 5, 6, 7, 8,
	};
	static const unsigned char version_only[] = {
		0x16, 0x03, 0x01, 0x00, 0x05, 1, 0, 0, 0x01, 3,
	};
	static const char imap[] = "a001 CAPABILITY\r\n", http[] = "GET / HTTP/1.1\r\n";

	check_reject("SSLv2-style hello", sslv2, sizeof(sslv2), 0, FRONT_HELLO_ERR_SSLV2,
	    FRONT_ALERT_PROTOCOL_VERSION);
	check_reject("plaintext IMAP", (const unsigned char *)imap, strlen(imap), 0,
	    FRONT_HELLO_ERR_NOT_TLS, -1);
	check_reject("plaintext HTTP", (const unsigned char *)http, strlen(http), 0,
	    FRONT_HELLO_ERR_NOT_TLS, -1);
	check_reject("alert first", alert, sizeof(alert), 0, FRONT_HELLO_ERR_ALERT, -1);
	check_reject("CCS first", ccs, sizeof(ccs), 0, FRONT_HELLO_ERR_CONTENT_TYPE,
	    FRONT_ALERT_UNEXPECTED_MESSAGE);
	check_reject("application data first", appdata, sizeof(appdata), 0,
	    FRONT_HELLO_ERR_CONTENT_TYPE, FRONT_ALERT_UNEXPECTED_MESSAGE);
	check_reject("heartbeat first", heartbeat, sizeof(heartbeat), 0,
	    FRONT_HELLO_ERR_CONTENT_TYPE, FRONT_ALERT_UNEXPECTED_MESSAGE);
	check_reject("record version 3.5", v305, sizeof(v305), 0,
	    FRONT_HELLO_ERR_RECORD_VERSION, FRONT_ALERT_PROTOCOL_VERSION);
	check_reject("record version 2.0", v200, sizeof(v200), 0,
	    FRONT_HELLO_ERR_RECORD_VERSION, FRONT_ALERT_PROTOCOL_VERSION);
	check_reject("empty record", empty, sizeof(empty), 0, FRONT_HELLO_ERR_RECORD_EMPTY,
	    FRONT_ALERT_DECODE_ERROR);
	check_reject("record of 2^14+1 bytes", big, sizeof(big), 0,
	    FRONT_HELLO_ERR_RECORD_OVERFLOW, FRONT_ALERT_RECORD_OVERFLOW);
	check_reject("server_hello", serverhello, sizeof(serverhello), 0,
	    FRONT_HELLO_ERR_MSG_TYPE, FRONT_ALERT_UNEXPECTED_MESSAGE);
	check_reject("finished", finished, sizeof(finished), 0, FRONT_HELLO_ERR_MSG_TYPE,
	    FRONT_ALERT_UNEXPECTED_MESSAGE);
	check_reject("hello declaring 64 KiB", huge, sizeof(huge), 0,
	    FRONT_HELLO_ERR_TOO_LARGE, FRONT_ALERT_HANDSHAKE_FAILURE);
	check_reject("empty client_hello body", tiny, sizeof(tiny), 0, FRONT_HELLO_ERR_DECODE,
	    FRONT_ALERT_DECODE_ERROR);
	check_reject("client_hello of one byte", version_only, sizeof(version_only), 0,
	    FRONT_HELLO_ERR_DECODE, FRONT_ALERT_DECODE_ERROR);
	check_reject("client_hello cut in its random", norandom, sizeof(norandom), 0,
	    FRONT_HELLO_ERR_DECODE, FRONT_ALERT_DECODE_ERROR);
}

/* Record-level damage to a real hello. */
static void
test_bad_records(void)
{
	static const unsigned char ccs[] = { 0x14, 0x03, 0x03, 0x00, 0x01, 0x01 };
	static const unsigned char alert[] = { 0x15, 0x03, 0x03, 0x00, 0x02, 0x01, 0x00 };
	static const unsigned char appdata[] = { 0x17, 0x03, 0x03, 0x00, 0x01, 0x00 };
	static const unsigned char *const between[] = { ccs, alert, appdata };
	static const size_t between_len[] = { sizeof(ccs), sizeof(alert), sizeof(appdata) };
	static const char *const between_name[] = { "CCS", "alert", "application data" };
	unsigned char *data;
	size_t len, i;
	struct tb hs = { 0 }, in = { 0 };

	data = test_data_read("hello-curl.bin", &len);
	records_payload(data, len, &hs);

	for (i = 0; i < MX_NELEM(between); i++) {
		char what[64];

		in.n = 0;
		frame(hs.p, 100, 100, 0x0301, &in);
		tb_put(&in, between[i], between_len[i]);
		frame(hs.p + 100, hs.n - 100, 16384, 0x0301, &in);
		snprintf(what, sizeof(what), "%s record inside the hello", between_name[i]);
		check_reject(what, in.p, in.n, 0, FRONT_HELLO_ERR_INTERLEAVED,
		    FRONT_ALERT_UNEXPECTED_MESSAGE);
	}

	/* A bad version on the second record. */
	in.n = 0;
	frame(hs.p, 100, 100, 0x0301, &in);
	frame(hs.p + 100, hs.n - 100, 16384, 0x0305, &in);
	check_reject("second record version 3.5", in.p, in.n, 0,
	    FRONT_HELLO_ERR_RECORD_VERSION, FRONT_ALERT_PROTOCOL_VERSION);

	/* More handshake bytes after the hello in its last record. */
	in.n = 0;
	tb_put(&hs, "\x0b\x00\x00\x00", 4);
	frame(hs.p, hs.n, 16384, 0x0301, &in);
	check_reject("certificate message after the hello", in.p, in.n, 0,
	    FRONT_HELLO_ERR_TRAILING, FRONT_ALERT_UNEXPECTED_MESSAGE);
	in.n = 0;
	frame(hs.p, hs.n - 3, 16384, 0x0301, &in);
	check_reject("one stray byte after the hello", in.p, in.n, 0,
	    FRONT_HELLO_ERR_TRAILING, FRONT_ALERT_UNEXPECTED_MESSAGE);
	in.n = 0;
	frame(hs.p, 200, 200, 0x0301, &in);
	frame(hs.p + 200, hs.n - 200, 16384, 0x0301, &in);
	check_reject("stray bytes after a split hello", in.p, in.n, 0,
	    FRONT_HELLO_ERR_TRAILING, FRONT_ALERT_UNEXPECTED_MESSAGE);
	/* Record claims more than the hello: the extra must not be waited for. */
	in.n = 0;
	hs.n -= 4;
	frame(hs.p, hs.n, 16384, 0x0301, &in);
	in.p[4]++;
	check_reject("record longer than the hello", in.p, in.n, 0,
	    FRONT_HELLO_ERR_TRAILING, FRONT_ALERT_UNEXPECTED_MESSAGE);

	/* Cap smaller than the hello. */
	check_reject("cap 200", data, len, 200, FRONT_HELLO_ERR_TOO_LARGE,
	    FRONT_ALERT_HANDSHAKE_FAILURE);
	check_reject("cap one byte short of the hello", data, len, len - 1,
	    FRONT_HELLO_ERR_TOO_LARGE, FRONT_ALERT_HANDSHAKE_FAILURE);
	check_done("cap exactly the hello", data, len, 0, 1, len, SNI, NULL);
	in.n = 0;
	frame(hs.p, hs.n, 1, 0x0301, &in);
	check_reject("one-byte records beyond the cap", in.p, in.n, in.n - 1,
	    FRONT_HELLO_ERR_TOO_LARGE, FRONT_ALERT_HANDSHAKE_FAILURE);
	check_done("one-byte records at the cap", in.p, in.n, 0, 1, in.n, SNI, NULL);
	/* Caps that end inside the last record header or its one byte. */
	for (i = in.n - 6; i < in.n; i++) {
		char what[64];

		snprintf(what, sizeof(what), "one-byte records, cap %zu of %zu", i, in.n);
		check_reject(what, in.p, in.n, i, FRONT_HELLO_ERR_TOO_LARGE,
		    FRONT_ALERT_HANDSHAKE_FAILURE);
	}

	tb_free(&hs);
	tb_free(&in);
	free(data);
}

/* Field-level damage: each built from a real hello, one thing wrong. */
static void
test_bad_fields(void)
{
	static const char *const alpn_ok[] = { "imap", NULL };
	unsigned char *data;
	size_t len;
	struct model m;
	struct tb t = { 0 }, msg = { 0 }, in = { 0 };
	ssize_t i;

	data = test_data_read("hello-openssl-alpn.bin", &len);

	/* Fixed fields. */
	model_load(&m, data, len);
	m.pre.p[0] = 2;
	check_model_reject("client version 2.3", &m, FRONT_HELLO_ERR_CLIENT_VERSION,
	    FRONT_ALERT_PROTOCOL_VERSION);
	m.pre.p[0] = 3;
	m.pre.p[34] = 33;
	check_model_reject("session id of 33 bytes", &m, FRONT_HELLO_ERR_DECODE,
	    FRONT_ALERT_DECODE_ERROR);
	m.pre.p[34] = 32;
	m.pre.p[34 + 1 + 32 + 1] ^= 1;	/* cipher_suites length odd */
	check_model_reject("odd cipher_suites length", &m, FRONT_HELLO_ERR_DECODE,
	    FRONT_ALERT_DECODE_ERROR);
	m.pre.p[34 + 1 + 32 + 1] ^= 1;
	m.pre.p[m.pre.n - 2] = 0;	/* compression_methods empty */
	m.pre.n--;
	check_model_reject("no compression method", &m, FRONT_HELLO_ERR_DECODE,
	    FRONT_ALERT_DECODE_ERROR);
	model_free(&m);

	/* Extension block lengths; the last extension is one we do not parse. */
	model_load(&m, data, len);
	model_add(&m, m.next, 0x1234, "ab", 2);
	model_message(&m, &msg);
	i = 4 + (ssize_t)m.pre.n;	/* extensions length */
	msg.p[i + 1]++;
	frame(msg.p, msg.n, 16384, 0x0301, &in);
	check_reject("extensions length one too long", in.p, in.n, 0,
	    FRONT_HELLO_ERR_EXTENSIONS, FRONT_ALERT_DECODE_ERROR);
	in.n = 0;
	msg.p[i + 1] -= 2;
	frame(msg.p, msg.n, 16384, 0x0301, &in);
	check_reject("extensions length one too short", in.p, in.n, 0,
	    FRONT_HELLO_ERR_EXTENSIONS, FRONT_ALERT_DECODE_ERROR);
	in.n = 0;
	msg.p[i + 1]++;
	msg.p[msg.n - 3]++;	/* last extension's length */
	frame(msg.p, msg.n, 16384, 0x0301, &in);
	check_reject("extension overrunning the block", in.p, in.n, 0,
	    FRONT_HELLO_ERR_EXTENSIONS, FRONT_ALERT_DECODE_ERROR);
	in.n = 0;
	msg.p[msg.n - 3]--;
	msg.p[3]--;	/* message one byte shorter: last extension cut */
	frame(msg.p, msg.n - 1, 16384, 0x0301, &in);
	check_reject("message shorter than its extensions", in.p, in.n, 0,
	    FRONT_HELLO_ERR_EXTENSIONS, FRONT_ALERT_DECODE_ERROR);
	in.n = 0;
	msg.p[3] += 2;	/* and one byte longer */
	tb_u8(&msg, 0);
	frame(msg.p, msg.n, 16384, 0x0301, &in);
	check_reject("byte after the extensions", in.p, in.n, 0,
	    FRONT_HELLO_ERR_EXTENSIONS, FRONT_ALERT_DECODE_ERROR);
	in.n = 0;
	msg.n = 0;
	model_free(&m);

	/* Duplicates. */
	model_load(&m, data, len);
	sni_ext(&t, "evil.example.test", 17);
	model_add(&m, m.next, 0, t.p, t.n);
	check_model_reject("second server_name extension", &m, FRONT_HELLO_ERR_DUP_EXTENSION,
	    FRONT_ALERT_ILLEGAL_PARAMETER);
	model_free(&m);
	t.n = 0;
	model_load(&m, data, len);
	alpn_ext(&t, alpn_ok);
	model_add(&m, 0, 16, t.p, t.n);
	check_model_reject("second ALPN extension", &m, FRONT_HELLO_ERR_DUP_EXTENSION,
	    FRONT_ALERT_ILLEGAL_PARAMETER);
	model_free(&m);
	t.n = 0;
	model_load(&m, data, len);
	model_add(&m, 1, 10, "\x00\x02\x00\x1d", 4);
	check_model_reject("second supported_groups extension", &m,
	    FRONT_HELLO_ERR_DUP_EXTENSION, FRONT_ALERT_ILLEGAL_PARAMETER);
	model_free(&m);

	/* server_name contents. */
	{
		static const struct {
			const char *what;
			const char *bytes;
			size_t len;
			enum front_hello_reason reason;
			int alert;
		} bad[] = {
			{ "SNI list length one too long",
			  "\x00\x15\x00\x00\x11" SNI, 22, FRONT_HELLO_ERR_SNI_DECODE, 50 },
			{ "SNI list length one too short",
			  "\x00\x13\x00\x00\x11" SNI, 22, FRONT_HELLO_ERR_SNI_DECODE, 50 },
			{ "SNI name length past the list",
			  "\x00\x14\x00\x00\x12" SNI, 22, FRONT_HELLO_ERR_SNI_DECODE, 50 },
			{ "SNI name length short of the list",
			  "\x00\x14\x00\x00\x10" SNI, 22, FRONT_HELLO_ERR_SNI_TYPE, 50 },
			{ "SNI extension with a byte after the list",
			  "\x00\x14\x00\x00\x11" SNI "x", 23, FRONT_HELLO_ERR_SNI_DECODE, 50 },
			{ "SNI list empty", "\x00\x00", 2, FRONT_HELLO_ERR_SNI_DECODE, 50 },
			{ "SNI extension empty", "", 0, FRONT_HELLO_ERR_SNI_DECODE, 50 },
			{ "SNI truncated entry", "\x00\x02\x00\x00", 4,
			  FRONT_HELLO_ERR_SNI_DECODE, 50 },
			{ "SNI name_type 1",
			  "\x00\x14\x01\x00\x11" SNI, 22, FRONT_HELLO_ERR_SNI_TYPE, 50 },
			{ "SNI second entry of type 1",
			  "\x00\x18\x00\x00\x11" SNI "\x01\x00\x01x", 26,
			  FRONT_HELLO_ERR_SNI_TYPE, 50 },
			{ "SNI two host_names",
			  "\x00\x18\x00\x00\x11" SNI "\x00\x00\x01x", 26,
			  FRONT_HELLO_ERR_SNI_DECODE, 50 },
			{ "SNI name length 0", "\x00\x03\x00\x00\x00", 5,
			  FRONT_HELLO_ERR_SNI_EMPTY, 50 },
			{ "SNI with NUL", "\x00\x14\x00\x00\x11imap\0example.test", 22,
			  FRONT_HELLO_ERR_SNI_NAME, 112 },
			{ "SNI with LF", "\x00\x14\x00\x00\x11imap\nexample.test", 22,
			  FRONT_HELLO_ERR_SNI_NAME, 112 },
			{ "SNI with DEL", "\x00\x14\x00\x00\x11imap\x7f" "example.test", 22,
			  FRONT_HELLO_ERR_SNI_NAME, 112 },
			{ "SNI with space", "\x00\x14\x00\x00\x11imap example.test", 22,
			  FRONT_HELLO_ERR_SNI_NAME, 112 },
			{ "SNI with 0xff", "\x00\x14\x00\x00\x11imap\xff" "example.test", 22,
			  FRONT_HELLO_ERR_SNI_NAME, 112 },
			{ "SNI with slash", "\x00\x14\x00\x00\x11imap/example.test", 22,
			  FRONT_HELLO_ERR_SNI_NAME, 112 },
		};
		size_t k;

		for (k = 0; k < MX_NELEM(bad); k++) {
			model_load(&m, data, len);
			model_set(&m, 0, bad[k].bytes, bad[k].len);
			check_model_reject(bad[k].what, &m, bad[k].reason, bad[k].alert);
			model_free(&m);
		}
	}
	{
		char name[257];

		memset(name, 'a', sizeof(name));
		t.n = 0;
		sni_ext(&t, name, 256);
		model_load(&m, data, len);
		model_set(&m, 0, t.p, t.n);
		check_model_reject("SNI of 256 bytes", &m, FRONT_HELLO_ERR_SNI_NAME,
		    FRONT_ALERT_UNRECOGNIZED_NAME);
		model_free(&m);
	}

	/* ALPN contents. */
	{
		static const struct {
			const char *what;
			const char *bytes;
			size_t len;
		} bad[] = {
			{ "ALPN empty name", "\x00\x06\x04imap\x00", 8 },
			{ "ALPN list length too long", "\x00\x06\x04imap", 7 },
			{ "ALPN list length too short", "\x00\x04\x04imap", 7 },
			{ "ALPN name past the list", "\x00\x05\x05imap", 7 },
			{ "ALPN list empty", "\x00\x00", 2 },
			{ "ALPN extension empty", "", 0 },
			{ "ALPN byte after the list", "\x00\x05\x04imapx", 8 },
		};
		size_t k;

		for (k = 0; k < MX_NELEM(bad); k++) {
			model_load(&m, data, len);
			model_set(&m, 16, bad[k].bytes, bad[k].len);
			check_model_reject(bad[k].what, &m, FRONT_HELLO_ERR_ALPN_DECODE,
			    FRONT_ALERT_DECODE_ERROR);
			model_free(&m);
		}
	}

	tb_free(&t);
	tb_free(&msg);
	tb_free(&in);
	free(data);
}

static void
test_misc(void)
{
	static const unsigned char want[] = { 0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 112 };
	unsigned char out[FRONT_ALERT_LEN];
	struct front_hello h;
	size_t used, n, i;
	int all = 1;

	n = front_alert_write(out, FRONT_ALERT_UNRECOGNIZED_NAME);
	is_blob(want, sizeof(want), out, n, "unrecognized_name alert record");

	front_hello_init(&h, 0);
	is_int(FRONT_HELLO_MORE, front_hello_feed(&h, "", 0, &used), "empty feed: more");
	is_int(0, (long long)used, "empty feed: nothing consumed");
	is_int(FRONT_HELLO_MORE, front_hello_feed(&h, "\x16\x03", 2, &used),
	    "partial header: more");
	is_int(2, (long long)used, "partial header: consumed");
	ok(front_hello_sni(&h).ptr == NULL, "no SNI before done");
	ok(front_hello_raw(&h).ptr == NULL, "no raw view before done");
	is_int(0, front_hello_save(&h), "save before done is harmless");
	front_hello_clear(&h);
	front_hello_clear(&h);

	{
		struct mx_view it = { (const unsigned char *)"\x04imap\x05pop3", 10 }, proto;

		ok(front_hello_alpn_next(&it, &proto) && proto.len == 4, "ALPN walk: first");
		ok(!front_hello_alpn_next(&it, &proto) && it.len == 0,
		    "ALPN walk: a name past the end stops the walk");
		it.ptr = (const unsigned char *)"\x00x";
		it.len = 2;
		ok(!front_hello_alpn_next(&it, &proto), "ALPN walk: an empty name stops the walk");
	}

	for (i = 0; i <= FRONT_HELLO_ERR_NOMEM; i++)
		if (strcmp(front_hello_reason_str((enum front_hello_reason)i), "unknown") == 0)
			all = 0;
	ok(all, "every reason has a string");
	is_string("unknown", front_hello_reason_str((enum front_hello_reason)999),
	    "out-of-range reason");
}

int
main(void)
{
	size_t i;

	plan_lazy();
	for (i = 0; i < MX_NELEM(captures); i++)
		test_capture(&captures[i]);
	test_synthetic();
	test_not_hello();
	test_bad_records();
	test_bad_fields();
	test_misc();
	return 0;
}
