/*
 * Tests for the DNS answer parser: hand-built packets for every record type,
 * CNAME chains, compression (good, looping, forward, into the header), names
 * over 255 octets, every truncation of each good packet (copied into a buffer
 * of exactly that size, so the sanitizer sees any overread), and random
 * mutations.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "basic.h"
#include "dns_parse.h"

struct pkt {
	unsigned char b[8192];
	size_t len;
};

static struct dns_answer ans;

static void
put8(struct pkt *p, unsigned int v)
{
	if (p->len >= sizeof(p->b))
		bail("test packet overflow");
	p->b[p->len++] = (unsigned char)v;
}

static void
put16(struct pkt *p, unsigned int v)
{
	put8(p, (v >> 8) & 0xff);
	put8(p, v & 0xff);
}

static void
put32(struct pkt *p, uint32_t v)
{
	put16(p, v >> 16);
	put16(p, v & 0xffff);
}

static void
putbytes(struct pkt *p, const void *v, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		put8(p, ((const unsigned char *)v)[i]);
}

/* Labels of name ("a.b.c"), then either a root label or a pointer. */
static void
putname_to(struct pkt *p, const char *name, int ptr)
{
	const char *s = name, *dot;

	while (s != NULL && *s != '\0') {
		size_t n;

		dot = strchr(s, '.');
		n = dot != NULL ? (size_t)(dot - s) : strlen(s);
		put8(p, (unsigned int)n);
		putbytes(p, s, n);
		s = dot != NULL ? dot + 1 : NULL;
	}
	if (ptr >= 0)
		put16(p, 0xc000 | (unsigned int)ptr);
	else
		put8(p, 0);
}

static void
putname(struct pkt *p, const char *name)
{
	putname_to(p, name, -1);
}

static void
header(struct pkt *p, unsigned int flags, unsigned int qd, unsigned int an)
{
	p->len = 0;
	put16(p, 0x1234);
	put16(p, flags);
	put16(p, qd);
	put16(p, an);
	put16(p, 0);
	put16(p, 0);
}

/* Header plus one question; the question name is at offset 12. */
static void
start(struct pkt *p, const char *qname, unsigned int qtype, unsigned int an)
{
	header(p, 0x8180, 1, an);
	putname(p, qname);
	put16(p, qtype);
	put16(p, 1);
}

/* Record header with the owner a pointer; returns where rdlength sits. */
static size_t
rr_start(struct pkt *p, int owner_ptr, const char *owner, unsigned int type)
{
	size_t at;

	if (owner_ptr >= 0)
		put16(p, 0xc000 | (unsigned int)owner_ptr);
	else
		putname(p, owner);
	put16(p, type);
	put16(p, 1);
	put32(p, 300);
	at = p->len;
	put16(p, 0);
	return at;
}

static void
rr_end(struct pkt *p, size_t at)
{
	size_t n = p->len - at - 2;

	p->b[at] = (unsigned char)(n >> 8);
	p->b[at + 1] = (unsigned char)(n & 0xff);
}

static int
parse(const struct pkt *p, const char *qname, unsigned int qtype, const char **err)
{
	*err = "";
	return dns_parse_answer(p->b, p->len, qname, (uint16_t)qtype, &ans, err);
}

/* Every strict prefix must be refused, reading only inside the prefix. */
static void
check_truncations(const struct pkt *p, const char *qname, unsigned int qtype,
    const char *what)
{
	size_t n, bad = 0;
	const char *err;

	for (n = 0; n < p->len; n++) {
		unsigned char *copy = malloc(n > 0 ? n : 1);

		if (copy == NULL)
			bail("out of memory");
		memcpy(copy, p->b, n);
		if (dns_parse_answer(copy, n, qname, (uint16_t)qtype, &ans, &err) != -1)
			bad++;
		free(copy);
	}
	is_int(0, (long long)bad, "%s: all %zu truncations refused", what, p->len);
}

static void
build_mx(struct pkt *p)
{
	size_t at;

	start(p, "mxr.test", DNS_T_MX, 3);
	at = rr_start(p, 12, NULL, DNS_T_MX);
	put16(p, 10);
	putname_to(p, "primary", 12);
	rr_end(p, at);
	at = rr_start(p, 12, NULL, DNS_T_MX);
	put16(p, 20);
	putname(p, "Backup.Example.ORG");
	rr_end(p, at);
	/* the owner spelled out, in another case */
	at = rr_start(p, -1, "MXR.TEST", DNS_T_MX);
	put16(p, 30);
	putname_to(p, "third", 12);
	rr_end(p, at);
}

static void
test_mx(void)
{
	struct pkt p;
	const char *err;
	size_t at;

	build_mx(&p);
	is_int(0, parse(&p, "mxr.test", DNS_T_MX, &err), "MX parses");
	is_int(DNS_OK, dns_answer_status(&ans), "MX status ok");
	is_int(3, (long long)ans.count, "three MX records");
	is_int(10, ans.rr[0].mx_pref, "first pref");
	is_string("primary.mxr.test", ans.rr[0].name, "compressed exchange");
	is_string("backup.example.org", ans.rr[1].name, "exchange lower-cased");
	is_string("third.mxr.test", ans.rr[2].name, "owner matched case-insensitively");
	is_int(300, ans.rr[0].ttl, "ttl");
	is_string("mxr.test", ans.qname, "qname");
	is_string("mxr.test", ans.canon, "canon without CNAME");
	is_int(0, parse(&p, "MXR.test.", DNS_T_MX, &err), "qname with case and dot matches");
	is_int(0, parse(&p, NULL, 0, &err), "no expected question");
	is_int(-1, parse(&p, "other.test", DNS_T_MX, &err), "other name refused");
	is_string("answer is for another name", err, "message");
	is_int(-1, parse(&p, "mxr.test", DNS_T_A, &err), "other type refused");
	check_truncations(&p, "mxr.test", DNS_T_MX, "MX");

	/* Null MX: preference 0, exchange the root. */
	start(&p, "nullmx.test", DNS_T_MX, 1);
	at = rr_start(&p, 12, NULL, DNS_T_MX);
	put16(&p, 0);
	put8(&p, 0);
	rr_end(&p, at);
	is_int(0, parse(&p, "nullmx.test", DNS_T_MX, &err), "null MX parses");
	is_string(".", ans.rr[0].name, "null MX exchange is \".\"");
	is_int(0, ans.rr[0].mx_pref, "null MX pref 0");

	/* Exchange running past rdlength, or stopping short of it. */
	start(&p, "mxr.test", DNS_T_MX, 1);
	at = rr_start(&p, 12, NULL, DNS_T_MX);
	put16(&p, 10);
	putname(&p, "mx.mxr.test");
	rr_end(&p, at);
	p.b[at + 1]--;
	put8(&p, 0);
	is_int(-1, parse(&p, "mxr.test", DNS_T_MX, &err), "exchange past rdlength refused");
	start(&p, "mxr.test", DNS_T_MX, 1);
	at = rr_start(&p, 12, NULL, DNS_T_MX);
	put16(&p, 10);
	putname(&p, "mx.mxr.test");
	put8(&p, 0);
	rr_end(&p, at);
	is_int(-1, parse(&p, "mxr.test", DNS_T_MX, &err), "junk after exchange refused");
	start(&p, "mxr.test", DNS_T_MX, 1);
	at = rr_start(&p, 12, NULL, DNS_T_MX);
	put16(&p, 10);
	rr_end(&p, at);
	is_int(-1, parse(&p, "mxr.test", DNS_T_MX, &err), "MX without exchange refused");

	/* An exchange that is no host name is dropped, not trusted. */
	start(&p, "mxr.test", DNS_T_MX, 2);
	at = rr_start(&p, 12, NULL, DNS_T_MX);
	put16(&p, 5);
	putname(&p, "evil.example");
	p.b[p.len - 4] = '.';		/* a dot inside a label: "evil" "exam.le" */
	rr_end(&p, at);
	at = rr_start(&p, 12, NULL, DNS_T_MX);
	put16(&p, 10);
	put8(&p, 3);
	putbytes(&p, "a b", 3);
	put8(&p, 0);
	rr_end(&p, at);
	is_int(0, parse(&p, "mxr.test", DNS_T_MX, &err), "odd exchanges parse");
	is_int(0, (long long)ans.count, "odd exchanges dropped");
	is_int(2, (long long)ans.skipped, "and counted");
	is_int(DNS_ERROR, dns_answer_status(&ans), "only unusable records: error, not nodata");
}

static void
test_addresses(void)
{
	static const unsigned char v6[16] = {
		0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x25
	};
	struct pkt p;
	const char *err;
	size_t at;

	start(&p, "primary.mxr.test", DNS_T_AAAA, 2);
	at = rr_start(&p, 12, NULL, DNS_T_AAAA);
	putbytes(&p, v6, 16);
	rr_end(&p, at);
	/* class CH: ignored */
	put16(&p, 0xc00c);
	put16(&p, DNS_T_AAAA);
	put16(&p, 3);
	put32(&p, 1);
	put16(&p, 16);
	putbytes(&p, v6, 16);
	is_int(0, parse(&p, "primary.mxr.test", DNS_T_AAAA, &err), "AAAA parses");
	is_int(1, (long long)ans.count, "one AAAA (class CH ignored)");
	is_blob(v6, 16, ans.rr[0].addr, 16, "AAAA address");
	check_truncations(&p, "primary.mxr.test", DNS_T_AAAA, "AAAA");

	start(&p, "a.test", DNS_T_A, 2);
	at = rr_start(&p, 12, NULL, DNS_T_A);
	putbytes(&p, "\xc0\x00\x02\x01", 4);
	rr_end(&p, at);
	at = rr_start(&p, 12, NULL, DNS_T_A);
	putbytes(&p, "\xc0\x00\x02\x02", 4);
	rr_end(&p, at);
	is_int(0, parse(&p, "a.test", DNS_T_A, &err), "A parses");
	is_int(2, (long long)ans.count, "two A");
	is_blob("\xc0\x00\x02\x02", 4, ans.rr[1].addr, 4, "second A address");

	start(&p, "a.test", DNS_T_A, 1);
	at = rr_start(&p, 12, NULL, DNS_T_A);
	putbytes(&p, "\xc0\x00\x02\x01\x00", 5);
	rr_end(&p, at);
	is_int(-1, parse(&p, "a.test", DNS_T_A, &err), "A of 5 octets refused");
	start(&p, "a.test", DNS_T_AAAA, 1);
	at = rr_start(&p, 12, NULL, DNS_T_AAAA);
	putbytes(&p, v6, 15);
	rr_end(&p, at);
	is_int(-1, parse(&p, "a.test", DNS_T_AAAA, &err), "AAAA of 15 octets refused");

	/* Records of another type or owner do not count. */
	start(&p, "a.test", DNS_T_A, 2);
	at = rr_start(&p, -1, "b.test", DNS_T_A);
	putbytes(&p, "\x0a\x00\x00\x01", 4);
	rr_end(&p, at);
	at = rr_start(&p, 12, NULL, DNS_T_TXT);
	putbytes(&p, "\x01x", 2);
	rr_end(&p, at);
	is_int(0, parse(&p, "a.test", DNS_T_A, &err), "foreign records parse");
	is_int(0, (long long)ans.count, "no records kept");
	is_int(DNS_NODATA, dns_answer_status(&ans), "status nodata");

	/* More than DNS_RR_MAX records: the rest are counted, not kept. */
	{
		int i;

		start(&p, "many.test", DNS_T_A, DNS_RR_MAX + 6);
		for (i = 0; i < DNS_RR_MAX + 6; i++) {
			at = rr_start(&p, 12, NULL, DNS_T_A);
			put8(&p, 192);
			put8(&p, 0);
			put8(&p, 2);
			put8(&p, (unsigned int)i);
			rr_end(&p, at);
		}
		is_int(0, parse(&p, "many.test", DNS_T_A, &err), "70 A records parse");
		is_int(DNS_RR_MAX, (long long)ans.count, "capped at DNS_RR_MAX");
		is_int(6, (long long)ans.skipped, "rest counted");
	}
}

static void
test_txt_tlsa(void)
{
	unsigned char digest[32];
	struct pkt p;
	const char *err;
	size_t at;

	start(&p, "spf-fail.test", DNS_T_TXT, 2);
	at = rr_start(&p, 12, NULL, DNS_T_TXT);
	put8(&p, 7);
	putbytes(&p, "v=spf1 ", 7);
	put8(&p, 4);
	putbytes(&p, "-all", 4);
	rr_end(&p, at);
	at = rr_start(&p, 12, NULL, DNS_T_TXT);
	put8(&p, 0);
	put8(&p, 3);
	putbytes(&p, "a\0b", 3);
	rr_end(&p, at);
	is_int(0, parse(&p, "spf-fail.test", DNS_T_TXT, &err), "TXT parses");
	is_int(2, (long long)ans.count, "two TXT");
	is_string("v=spf1 -all", (const char *)dns_rr_data(&ans, &ans.rr[0]),
	    "strings joined, NUL-terminated");
	is_int(11, (long long)ans.rr[0].data_len, "joined length");
	is_blob("a\0b", 3, dns_rr_data(&ans, &ans.rr[1]), ans.rr[1].data_len,
	    "empty string and embedded NUL kept");
	check_truncations(&p, "spf-fail.test", DNS_T_TXT, "TXT");

	start(&p, "spf.test", DNS_T_TXT, 1);
	at = rr_start(&p, 12, NULL, DNS_T_TXT);
	put8(&p, 9);
	putbytes(&p, "v=spf1", 6);
	rr_end(&p, at);
	is_int(-1, parse(&p, "spf.test", DNS_T_TXT, &err), "TXT string past rdata refused");

	memset(digest, 0xab, sizeof(digest));
	start(&p, "_25._tcp.mx.test", DNS_T_TLSA, 1);
	at = rr_start(&p, 12, NULL, DNS_T_TLSA);
	put8(&p, 3);
	put8(&p, 1);
	put8(&p, 1);
	putbytes(&p, digest, sizeof(digest));
	rr_end(&p, at);
	is_int(0, parse(&p, "_25._tcp.mx.test", DNS_T_TLSA, &err), "TLSA parses");
	ok(ans.rr[0].tlsa_usage == 3 && ans.rr[0].tlsa_selector == 1 &&
	    ans.rr[0].tlsa_mtype == 1, "TLSA 3 1 1");
	is_blob(digest, sizeof(digest), dns_rr_data(&ans, &ans.rr[0]), ans.rr[0].data_len,
	    "TLSA data");
	is_string("_25._tcp.mx.test", ans.qname, "underscore labels printable");
	check_truncations(&p, "_25._tcp.mx.test", DNS_T_TLSA, "TLSA");
}

static void
test_cname(void)
{
	struct pkt p;
	const char *err;
	size_t at, a_off;
	char owner[32], target[32];
	int i;

	/* www -> a.example.net -> b.example.net A; records out of order. */
	start(&p, "www.example.com", DNS_T_A, 5);
	at = rr_start(&p, -1, "b.example.net", DNS_T_A);
	putbytes(&p, "\xc0\x00\x02\x07", 4);
	rr_end(&p, at);
	at = rr_start(&p, 12, NULL, DNS_T_A);	/* not valid beside a CNAME */
	putbytes(&p, "\x0a\x00\x00\x01", 4);
	rr_end(&p, at);
	at = rr_start(&p, -1, "a.example.net", DNS_T_CNAME);
	putname(&p, "b.example.net");
	rr_end(&p, at);
	at = rr_start(&p, 12, NULL, DNS_T_CNAME);
	a_off = p.len;
	putname(&p, "a.example.net");
	rr_end(&p, at);
	at = rr_start(&p, (int)a_off, NULL, DNS_T_A);	/* a.example.net A: skipped */
	putbytes(&p, "\x0a\x00\x00\x02", 4);
	rr_end(&p, at);
	is_int(0, parse(&p, "www.example.com", DNS_T_A, &err), "CNAME chain parses");
	is_int(2, ans.ncname, "two hops");
	is_string("b.example.net", ans.canon, "canonical name");
	is_int(1, (long long)ans.count, "only the chain's end kept");
	is_blob("\xc0\x00\x02\x07", 4, ans.rr[0].addr, 4, "its address");
	check_truncations(&p, "www.example.com", DNS_T_A, "CNAME");

	/* Asking for the CNAME itself does not follow it. */
	start(&p, "www.example.com", DNS_T_CNAME, 1);
	at = rr_start(&p, 12, NULL, DNS_T_CNAME);
	putname(&p, "a.example.net");
	rr_end(&p, at);
	is_int(0, parse(&p, "www.example.com", DNS_T_CNAME, &err), "CNAME query");
	is_int(1, (long long)ans.count, "CNAME record kept");
	is_string("a.example.net", ans.rr[0].name, "CNAME target");

	/* Loop: a -> b -> a. */
	start(&p, "a.test", DNS_T_A, 2);
	at = rr_start(&p, 12, NULL, DNS_T_CNAME);
	putname(&p, "b.test");
	rr_end(&p, at);
	at = rr_start(&p, -1, "b.test", DNS_T_CNAME);
	putname(&p, "a.test");
	rr_end(&p, at);
	is_int(-1, parse(&p, "a.test", DNS_T_A, &err), "CNAME loop refused");
	is_string("CNAME chain too long or looping", err, "message");

	/* c0 -> c1 -> ... -> cN, then an A for cN. */
	for (i = DNS_CNAME_MAX; i <= DNS_CNAME_MAX + 1; i++) {
		int k;

		start(&p, "c0.test", DNS_T_A, (unsigned int)i + 1);
		for (k = 0; k < i; k++) {
			snprintf(owner, sizeof(owner), "c%d.test", k);
			snprintf(target, sizeof(target), "c%d.test", k + 1);
			at = rr_start(&p, -1, owner, DNS_T_CNAME);
			putname(&p, target);
			rr_end(&p, at);
		}
		at = rr_start(&p, -1, target, DNS_T_A);
		putbytes(&p, "\xc0\x00\x02\x01", 4);
		rr_end(&p, at);
		if (i == DNS_CNAME_MAX)
			ok(parse(&p, "c0.test", DNS_T_A, &err) == 0 && ans.count == 1,
			    "chain of %d hops followed", i);
		else
			is_int(-1, parse(&p, "c0.test", DNS_T_A, &err),
			    "chain of %d hops refused", i);
	}
}

static void
test_rcodes(void)
{
	struct pkt p;
	const char *err;

	start(&p, "nx.test", DNS_T_A, 0);
	p.b[3] = 0x83;
	is_int(0, parse(&p, "nx.test", DNS_T_A, &err), "NXDOMAIN parses");
	is_int(DNS_NXDOMAIN, dns_answer_status(&ans), "status nxdomain");
	p.b[3] = 0x82;
	is_int(0, parse(&p, "nx.test", DNS_T_A, &err), "SERVFAIL parses");
	is_int(DNS_TEMPFAIL, dns_answer_status(&ans), "servfail is tempfail");
	p.b[3] = 0x85;
	(void)parse(&p, "nx.test", DNS_T_A, &err);
	is_int(DNS_TEMPFAIL, dns_answer_status(&ans), "refused is tempfail");
	p.b[3] = 0x80;
	(void)parse(&p, "nx.test", DNS_T_A, &err);
	is_int(DNS_NODATA, dns_answer_status(&ans), "empty NOERROR is nodata");

	p.b[2] = 0x01;
	is_int(-1, parse(&p, "nx.test", DNS_T_A, &err), "a query (QR clear) refused");
	p.b[2] = 0x81 | (2 << 3);
	is_int(-1, parse(&p, "nx.test", DNS_T_A, &err), "opcode STATUS refused");
	p.b[2] = 0x81;
	p.b[5] = 0;
	is_int(-1, parse(&p, "nx.test", DNS_T_A, &err), "no question refused");
	p.b[5] = 2;
	is_int(-1, parse(&p, "nx.test", DNS_T_A, &err), "two questions refused");
	p.b[5] = 1;
	p.b[p.len - 1] = 3;
	is_int(-1, parse(&p, "nx.test", DNS_T_A, &err), "class CH question refused");
	is_int(-1, dns_parse_answer(NULL, 0, NULL, 0, &ans, &err), "NULL packet refused");
}

static void
test_compression_abuse(void)
{
	struct pkt p;
	const char *err;
	size_t at, self;
	int i, prev;

	/* Owner is a pointer to itself. */
	start(&p, "a.test", DNS_T_A, 1);
	self = p.len;
	put16(&p, 0xc000 | (unsigned int)self);
	put16(&p, DNS_T_A);
	put16(&p, 1);
	put32(&p, 1);
	put16(&p, 4);
	put32(&p, 0);
	is_int(-1, parse(&p, "a.test", DNS_T_A, &err), "self pointer refused");

	/* Forward pointer. */
	start(&p, "a.test", DNS_T_A, 1);
	put16(&p, 0xc000 | (unsigned int)(p.len + 2));
	put16(&p, DNS_T_A);
	put16(&p, 1);
	put32(&p, 1);
	put16(&p, 4);
	put32(&p, 0);
	is_int(-1, parse(&p, "a.test", DNS_T_A, &err), "forward pointer refused");

	/* Pointer into the header. */
	start(&p, "a.test", DNS_T_A, 1);
	put16(&p, 0xc000 | 4);
	put16(&p, DNS_T_A);
	put16(&p, 1);
	put32(&p, 1);
	put16(&p, 4);
	put32(&p, 0);
	is_int(-1, parse(&p, "a.test", DNS_T_A, &err), "pointer into header refused");

	/*
	 * Two segments pointing at each other: label "x" then a pointer back
	 * to the first record's owner, whose pointer goes to the second.
	 */
	start(&p, "a.test", DNS_T_A, 2);
	at = p.len;			/* first owner: "x" + ptr(second owner) */
	put8(&p, 1);
	put8(&p, 'x');
	put16(&p, 0);			/* patched below */
	put16(&p, DNS_T_A);
	put16(&p, 1);
	put32(&p, 1);
	put16(&p, 4);
	put32(&p, 0);
	self = p.len;			/* second owner: "y" + ptr(first owner) */
	put8(&p, 1);
	put8(&p, 'y');
	put16(&p, 0xc000 | (unsigned int)at);
	put16(&p, DNS_T_A);
	put16(&p, 1);
	put32(&p, 1);
	put16(&p, 4);
	put32(&p, 0);
	p.b[at + 2] = (unsigned char)(0xc0 | (self >> 8));
	p.b[at + 3] = (unsigned char)(self & 0xff);
	is_int(-1, parse(&p, "a.test", DNS_T_A, &err), "pointer cycle refused");

	/* Reserved label types 0x40 and 0x80. */
	start(&p, "a.test", DNS_T_A, 1);
	put8(&p, 0x41);
	put8(&p, 0);
	put16(&p, DNS_T_A);
	put16(&p, 1);
	put32(&p, 1);
	put16(&p, 4);
	put32(&p, 0);
	is_int(-1, parse(&p, "a.test", DNS_T_A, &err), "extended label type refused");

	/*
	 * A chain of legal backward pointers that builds a name of more than
	 * 255 octets: each record's owner is a 63-octet label plus a pointer
	 * to the previous owner.
	 */
	start(&p, "a.test", DNS_T_A, 5);
	prev = 12;
	for (i = 0; i < 5; i++) {
		char label[64];
		size_t here = p.len;

		memset(label, 'a' + i, 63);
		label[63] = '\0';
		putname_to(&p, label, prev);
		put16(&p, DNS_T_A);
		put16(&p, 1);
		put32(&p, 1);
		put16(&p, 4);
		put32(&p, 0);
		prev = (int)here;
	}
	is_int(-1, parse(&p, "a.test", DNS_T_A, &err), "name over 255 octets refused");

	/* The question itself cannot be compressed. */
	header(&p, 0x8180, 1, 0);
	put16(&p, 0xc00c);
	put16(&p, DNS_T_A);
	put16(&p, 1);
	is_int(-1, parse(&p, NULL, 0, &err), "compressed question refused");
}

static void
test_name_wire(void)
{
	unsigned char w[DNS_WIRE_NAME_MAX];
	char name[300];
	size_t i;

	is_int(5, dns_name_wire("a.b", w), "a.b is 5 octets");
	is_blob("\1a\1b\0", 5, w, 5, "a.b wire form");
	is_int(5, dns_name_wire("a.b.", w), "one trailing dot");
	is_int(1, dns_name_wire(".", w), "root");
	is_int(-1, dns_name_wire("", w), "empty refused");
	is_int(-1, dns_name_wire(NULL, w), "NULL refused");
	is_int(-1, dns_name_wire("a..b", w), "empty label refused");
	is_int(-1, dns_name_wire(".a", w), "leading dot refused");
	is_int(-1, dns_name_wire("a.b..", w), "two trailing dots refused");
	is_int(-1, dns_name_wire("a b", w), "space refused");
	is_int(-1, dns_name_wire("a\nb", w), "newline refused");
	is_int(-1, dns_name_wire("a\\.b", w), "backslash refused");
	memset(name, 'x', 63);
	name[63] = '\0';
	is_int(65, dns_name_wire(name, w), "63-octet label");
	name[63] = 'x';
	name[64] = '\0';
	is_int(-1, dns_name_wire(name, w), "64-octet label refused");
	/* 253 octets of text ("x.x.x...") is 255 in wire form. */
	for (i = 0; i < 253; i++)
		name[i] = (i % 2) ? '.' : 'x';
	name[253] = '\0';
	is_int(255, dns_name_wire(name, w), "253-octet name fits");
	name[253] = '.';
	name[254] = '\0';
	is_int(255, dns_name_wire(name, w), "with a trailing dot too");
	name[253] = 'x';
	is_int(-1, dns_name_wire(name, w), "254-octet name refused");
	name[253] = '.';
	name[254] = 'x';
	name[255] = '\0';
	is_int(-1, dns_name_wire(name, w), "255-octet name refused");
}

/* Mutate good packets at random; the parser must only ever say yes or no. */
static void
test_mutations(void)
{
	struct pkt base, p;
	uint32_t seed = 12345;
	const char *err;
	int i, k, accepted = 0;

	build_mx(&base);
	for (i = 0; i < 20000; i++) {
		unsigned char *copy;
		int flips;

		p = base;
		seed = seed * 1103515245u + 12345u;
		flips = 1 + (int)((seed >> 16) % 4);
		for (k = 0; k < flips; k++) {
			seed = seed * 1103515245u + 12345u;
			p.b[(seed >> 8) % p.len] = (unsigned char)(seed >> 24);
		}
		seed = seed * 1103515245u + 12345u;
		if ((seed >> 16) % 3 == 0)
			p.len = (seed >> 4) % p.len;
		copy = malloc(p.len > 0 ? p.len : 1);
		if (copy == NULL)
			bail("out of memory");
		memcpy(copy, p.b, p.len);
		if (dns_parse_answer(copy, p.len, NULL, 0, &ans, &err) == 0) {
			accepted++;
			if (ans.count > DNS_RR_MAX || ans.data_len > DNS_DATA_MAX)
				bail("counts out of bounds");
			for (k = 0; k < (int)ans.count; k++)
				if (strlen(ans.rr[k].name) >= DNS_NAME_BUF)
					bail("name out of bounds");
		}
		free(copy);
	}
	ok(1, "20000 mutated packets parsed without a fault (%d accepted)", accepted);
}

int
main(void)
{
	plan_lazy();
	test_mx();
	test_addresses();
	test_txt_tlsa();
	test_cname();
	test_rcodes();
	test_compression_abuse();
	test_name_wire();
	test_mutations();
	return 0;
}
