/*
 * Tests for the PROXY protocol writer and reader: golden headers written by
 * hand from proxy-protocol.txt, CRC-32C known answers (RFC 3720 B.4), a real
 * header from an AWS Network Load Balancer, family handling for IPv4, IPv6
 * and IPv4-mapped clients, exact lengths and size checks, round trips
 * through the reader, and malformed headers the reader must refuse.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "basic.h"
#include "proxy_proto.h"

#define SNI "imap.example.test"

static struct sockaddr_storage
sa(const char *addr, unsigned port)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

	memset(&ss, 0, sizeof(ss));
	if (inet_pton(AF_INET, addr, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
	} else if (inet_pton(AF_INET6, addr, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
	} else
		bail("bad test address %s", addr);
	return ss;
}

static struct mx_view
view(const char *s)
{
	struct mx_view v = { (const unsigned char *)s, strlen(s) };

	return v;
}

/* The address of ss as text and its port, for comparisons. */
static void
sa_text(const struct sockaddr_storage *ss, char *buf, size_t size, unsigned *port)
{
	const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;

	if (ss->ss_family == AF_INET) {
		inet_ntop(AF_INET, &sin->sin_addr, buf, (socklen_t)size);
		*port = ntohs(sin->sin_port);
	} else if (ss->ss_family == AF_INET6) {
		inet_ntop(AF_INET6, &sin6->sin6_addr, buf, (socklen_t)size);
		*port = ntohs(sin6->sin6_port);
	} else {
		snprintf(buf, size, "none");
		*port = 0;
	}
}

static void
test_crc32c(void)
{
	unsigned char buf[32];
	size_t i;

	is_int(0xe3069283, proxy_proto_crc32c("123456789", 9), "CRC32C(\"123456789\")");
	is_int(0, proxy_proto_crc32c("", 0), "CRC32C of nothing");
	memset(buf, 0, sizeof(buf));
	is_int(0x8a9136aa, proxy_proto_crc32c(buf, 32), "CRC32C of 32 zeros (RFC 3720)");
	memset(buf, 0xff, sizeof(buf));
	is_int(0x62a8ab43, proxy_proto_crc32c(buf, 32), "CRC32C of 32 0xff (RFC 3720)");
	for (i = 0; i < 32; i++)
		buf[i] = (unsigned char)i;
	is_int(0x46dd794e, proxy_proto_crc32c(buf, 32), "CRC32C of 0..31 (RFC 3720)");
	for (i = 0; i < 32; i++)
		buf[i] = (unsigned char)(31 - i);
	is_int(0x113fdb5c, proxy_proto_crc32c(buf, 32), "CRC32C of 31..0 (RFC 3720)");
}

/* Golden v2 headers, byte by byte from the specification. */
static void
test_v2_golden(void)
{
	static const unsigned char v4_auth[] = {
		0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
		0x21,			/* version 2, PROXY */
		0x11,			/* AF_INET, STREAM */
		0x00, 0x20,		/* 12 address bytes + 3 + 17 */
		192, 0, 2, 1,		/* source */
		198, 51, 100, 7,	/* destination */
		0xdc, 0x04,		/* 56324 */
		0x03, 0xe1,		/* 993 */
		0x02, 0x00, 0x11,	/* PP2_TYPE_AUTHORITY, 17 bytes */
		'i', 'm', 'a', 'p', '.', 'e', 'x', 'a', 'm', 'p', 'l', 'e', '.',
		't', 'e', 's', 't',
	};
	/* The same plus a CRC32C TLV (value from an independent implementation). */
	static const unsigned char v4_auth_crc[] = {
		0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
		0x21, 0x11, 0x00, 0x27,
		192, 0, 2, 1, 198, 51, 100, 7, 0xdc, 0x04, 0x03, 0xe1,
		0x02, 0x00, 0x11,
		'i', 'm', 'a', 'p', '.', 'e', 'x', 'a', 'm', 'p', 'l', 'e', '.',
		't', 'e', 's', 't',
		0x03, 0x00, 0x04, 0xf8, 0x73, 0xac, 0xae,
	};
	static const unsigned char v6_alpn_auth[] = {
		0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
		0x21,
		0x21,			/* AF_INET6, STREAM */
		0x00, 0x3e,		/* 36 + 3 + 4 + 3 + 16 = 62 */
		0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01,
		0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02,
		0x9c, 0x40,		/* 40000 */
		0x03, 0xe1,		/* 993 */
		0x01, 0x00, 0x04, 'i', 'm', 'a', 'p',
		0x02, 0x00, 0x10,
		'p', 'o', 'p', '.', 'e', 'x', 'a', 'm', 'p', 'l', 'e', '.', 't', 'e', 's', 't',
	};
	static const unsigned char v6_mapped[] = {
		0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
		0x21, 0x21, 0x00, 0x24,
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1,
		0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02,
		0xdc, 0x04, 0x03, 0xe1,
	};
	static const unsigned char unspec[] = {
		0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
		0x21, 0x00, 0x00, 0x00,
	};
	struct sockaddr_storage c4 = sa("192.0.2.1", 56324), l4 = sa("198.51.100.7", 993);
	struct sockaddr_storage cm = sa("::ffff:192.0.2.1", 56324);
	struct sockaddr_storage lm = sa("::ffff:198.51.100.7", 993);
	struct sockaddr_storage c6 = sa("2001:db8::1", 40000), l6 = sa("2001:db8::2", 993);
	struct proxy_proto_tlvs tlvs;
	unsigned char out[256];
	ssize_t n;

	memset(&tlvs, 0, sizeof(tlvs));
	tlvs.authority = view(SNI);
	n = proxy_proto_write_v2((struct sockaddr *)&c4, (struct sockaddr *)&l4, &tlvs, out,
	    sizeof(out));
	is_blob(v4_auth, sizeof(v4_auth), out, n > 0 ? (size_t)n : 0, "v2 TCP4 + authority");
	n = proxy_proto_write_v2((struct sockaddr *)&cm, (struct sockaddr *)&lm, &tlvs, out,
	    sizeof(out));
	is_blob(v4_auth, sizeof(v4_auth), out, n > 0 ? (size_t)n : 0,
	    "v2 mapped client, mapped local: written as TCP4");
	n = proxy_proto_write_v2((struct sockaddr *)&cm, (struct sockaddr *)&l4, &tlvs, out,
	    sizeof(out));
	is_blob(v4_auth, sizeof(v4_auth), out, n > 0 ? (size_t)n : 0,
	    "v2 mapped client, IPv4 local: written as TCP4");

	tlvs.crc32c = true;
	n = proxy_proto_write_v2((struct sockaddr *)&c4, (struct sockaddr *)&l4, &tlvs, out,
	    sizeof(out));
	is_blob(v4_auth_crc, sizeof(v4_auth_crc), out, n > 0 ? (size_t)n : 0,
	    "v2 TCP4 + authority + CRC32C");

	memset(&tlvs, 0, sizeof(tlvs));
	tlvs.alpn = view("imap");
	tlvs.authority = view("pop.example.test");
	n = proxy_proto_write_v2((struct sockaddr *)&c6, (struct sockaddr *)&l6, &tlvs, out,
	    sizeof(out));
	is_blob(v6_alpn_auth, sizeof(v6_alpn_auth), out, n > 0 ? (size_t)n : 0,
	    "v2 TCP6 + ALPN + authority");

	n = proxy_proto_write_v2((struct sockaddr *)&cm, (struct sockaddr *)&l6, NULL, out,
	    sizeof(out));
	is_blob(v6_mapped, sizeof(v6_mapped), out, n > 0 ? (size_t)n : 0,
	    "v2 mapped client, IPv6 local: client stays mapped in TCP6");
	n = proxy_proto_write_v2((struct sockaddr *)&c4, (struct sockaddr *)&l6, NULL, out,
	    sizeof(out));
	is_blob(v6_mapped, sizeof(v6_mapped), out, n > 0 ? (size_t)n : 0,
	    "v2 IPv4 client, IPv6 local: client mapped in TCP6");

	n = proxy_proto_write_v2(NULL, (struct sockaddr *)&l6, NULL, out, sizeof(out));
	is_blob(unspec, sizeof(unspec), out, n > 0 ? (size_t)n : 0, "v2 unknown client: UNSPEC");
	{
		struct sockaddr_un un;

		memset(&un, 0, sizeof(un));
		un.sun_family = AF_UNIX;
		n = proxy_proto_write_v2((struct sockaddr *)&un, (struct sockaddr *)&l4, NULL,
		    out, sizeof(out));
		is_blob(unspec, sizeof(unspec), out, n > 0 ? (size_t)n : 0,
		    "v2 AF_UNIX client: UNSPEC");
	}
	errno = 0;
	ok(proxy_proto_write((enum proxy_proto_version)7, (struct sockaddr *)&c4,
	    (struct sockaddr *)&l4, NULL, out, sizeof(out)) == -1 && errno == EINVAL,
	    "unknown version: EINVAL");
	is_int(0, proxy_proto_write(PROXY_PROTO_OFF, (struct sockaddr *)&c4,
	    (struct sockaddr *)&l4, NULL, out, sizeof(out)), "off writes nothing");
	n = proxy_proto_write(PROXY_PROTO_V2, (struct sockaddr *)&c6, (struct sockaddr *)&l6,
	    &tlvs, out, sizeof(out));
	is_blob(v6_alpn_auth, sizeof(v6_alpn_auth), out, n > 0 ? (size_t)n : 0,
	    "proxy_proto_write v2");
}

static void
check_v1(const char *want, const char *src, unsigned sp, const char *dst, unsigned dp,
    const char *what)
{
	struct sockaddr_storage s, d;
	char out[PROXY_PROTO_V1_MAX];
	ssize_t n;

	s = sa(src, sp);
	d = sa(dst, dp);
	n = proxy_proto_write_v1((struct sockaddr *)&s, (struct sockaddr *)&d, out, sizeof(out));
	is_blob(want, strlen(want), out, n > 0 ? (size_t)n : 0, "v1 %s", what);
}

/* The writer's address text agrees with inet_ntop() on random addresses. */
static void
test_v1_vs_ntop(void)
{
	static const unsigned char zero12[12];
	struct sockaddr_storage s, d;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&s;
	unsigned long state = 42;
	char out[PROXY_PROTO_V1_MAX], want[PROXY_PROTO_V1_MAX], a[INET6_ADDRSTRLEN];
	int i, j, tried = 0, same = 0;
	ssize_t n;

	d = sa("2001:db8::2", 993);
	for (i = 0; i < 20000; i++) {
		s = sa("::1", 40000);
		for (j = 0; j < 8; j++) {
			state = state * 6364136223846793005UL + 1442695040888963407UL;
			if ((state >> 60) & 1)
				continue;	/* leave the group zero */
			sin6->sin6_addr.s6_addr[2 * j] = (unsigned char)(state >> 40);
			sin6->sin6_addr.s6_addr[2 * j + 1] = (unsigned char)(state >> 32);
			if ((state >> 58) & 1)
				sin6->sin6_addr.s6_addr[2 * j] = 0;
		}
		if (i % 10 == 0) {
			memset(sin6->sin6_addr.s6_addr, 0, 10);
			sin6->sin6_addr.s6_addr[10] = sin6->sin6_addr.s6_addr[11] = 0xff;
		}
		/* glibc prints ::a.b.c.d for IPv4-compatible addresses; both are valid. */
		if (memcmp(sin6->sin6_addr.s6_addr, zero12, 12) == 0)
			continue;
		tried++;
		inet_ntop(AF_INET6, &sin6->sin6_addr, a, sizeof(a));
		snprintf(want, sizeof(want), "PROXY TCP6 %s 2001:db8::2 40000 993\r\n", a);
		n = proxy_proto_write_v1((struct sockaddr *)&s, (struct sockaddr *)&d, out,
		    sizeof(out));
		if (n > 0 && (size_t)n == strlen(want) && memcmp(out, want, (size_t)n) == 0)
			same++;
		else if (tried - same <= 3)
			diag("inet_ntop %s, we wrote %.*s", a, (int)(n > 0 ? n : 0), out);
	}
	is_int(tried, same, "v1 text matches inet_ntop for %d random addresses", tried);
}

static void
test_v1_write(void)
{
	struct sockaddr_storage s = sa("192.0.2.1", 1), d = sa("198.51.100.7", 2);
	char out[PROXY_PROTO_V1_MAX], big[PROXY_PROTO_V1_MAX + 8];
	const char *want;
	ssize_t n;

	check_v1("PROXY TCP4 192.0.2.1 198.51.100.7 56324 993\r\n",
	    "192.0.2.1", 56324, "198.51.100.7", 993, "TCP4");
	check_v1("PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n",
	    "0.0.0.0", 0, "255.255.255.255", 65535, "TCP4 extremes");
	check_v1("PROXY TCP6 2001:db8::1 2001:db8::2 40000 993\r\n",
	    "2001:db8::1", 40000, "2001:db8::2", 993, "TCP6");
	check_v1("PROXY TCP4 192.0.2.1 198.51.100.7 56324 993\r\n",
	    "::ffff:192.0.2.1", 56324, "::ffff:198.51.100.7", 993, "mapped both: TCP4");
	check_v1("PROXY TCP4 192.0.2.1 198.51.100.7 56324 993\r\n",
	    "::ffff:192.0.2.1", 56324, "198.51.100.7", 993, "mapped client, IPv4 local: TCP4");
	check_v1("PROXY TCP6 ::ffff:192.0.2.1 2001:db8::2 56324 993\r\n",
	    "::ffff:192.0.2.1", 56324, "2001:db8::2", 993, "mapped client, IPv6 local: TCP6");
	check_v1("PROXY TCP6 2001:db8::1 ::ffff:198.51.100.7 40000 993\r\n",
	    "2001:db8::1", 40000, "198.51.100.7", 993, "IPv6 client, IPv4 local: TCP6");

	want = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
	    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe 65535 65535\r\n";
	check_v1(want, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535,
	    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", 65535, "longest line");
	ok(strlen(want) <= PROXY_PROTO_V1_MAX, "longest line is %zu <= 107 bytes", strlen(want));

	/* RFC 5952 corner cases of the address text. */
	check_v1("PROXY TCP6 :: ::1 1 2\r\n", "::", 1, "::1", 2, "unspecified and loopback");
	check_v1("PROXY TCP6 1:: 1:0:0:1::1 1 2\r\n", "1::", 1, "1:0:0:1:0:0:0:1", 2,
	    "longest zero run compressed");
	check_v1("PROXY TCP6 1::1:0:0:1:1 1:0:1:1:1:1:1:1 1 2\r\n", "1:0:0:1:0:0:1:1", 1,
	    "1:0:1:1:1:1:1:1", 2, "first of equal runs, no single-group ::");
	check_v1("PROXY TCP6 2001:db8:a:b:c:d:e:f ::2:3 1 2\r\n", "2001:db8:a:b:c:d:e:f", 1,
	    "::2:3", 2, "no zero run; IPv4-compatible stays hex");
	check_v1("PROXY TCP6 fe80::ab:cdef ::ffff:0.0.0.0 1 2\r\n", "fe80::ab:cdef", 1,
	    "::ffff:0.0.0.0", 2, "lower case without leading zeros");
	test_v1_vs_ntop();

	n = proxy_proto_write_v1(NULL, (struct sockaddr *)&d, out, sizeof(out));
	is_blob("PROXY UNKNOWN\r\n", 15, out, n > 0 ? (size_t)n : 0, "v1 unknown client");
	n = proxy_proto_write(PROXY_PROTO_V1, (struct sockaddr *)&s, NULL, NULL, out,
	    sizeof(out));
	is_blob("PROXY UNKNOWN\r\n", 15, out, n > 0 ? (size_t)n : 0, "v1 unknown local");

	/* Size: exact fits; one less writes nothing. */
	want = "PROXY TCP4 192.0.2.1 198.51.100.7 1 2\r\n";
	n = proxy_proto_write_v1((struct sockaddr *)&s, (struct sockaddr *)&d, big,
	    strlen(want));
	is_int((long long)strlen(want), n, "v1 into an exact buffer");
	memset(big, 'Z', sizeof(big));
	errno = 0;
	n = proxy_proto_write_v1((struct sockaddr *)&s, (struct sockaddr *)&d, big,
	    strlen(want) - 1);
	ok(n == -1 && errno == ENOSPC, "v1 into a short buffer: -1 ENOSPC");
	ok(big[0] == 'Z', "v1 into a short buffer: nothing written");
}

static void
test_v2_sizes(void)
{
	struct sockaddr_storage c4 = sa("192.0.2.1", 56324), l4 = sa("198.51.100.7", 993);
	struct sockaddr_storage c6 = sa("2001:db8::1", 40000), l6 = sa("2001:db8::2", 993);
	struct proxy_proto_tlvs tlvs;
	unsigned char out[512], *huge, *big;
	ssize_t n;
	size_t i;

	n = proxy_proto_write_v2((struct sockaddr *)&c4, (struct sockaddr *)&l4, NULL, out,
	    sizeof(out));
	is_int(28, n, "v2 TCP4 without TLVs is 28 bytes");
	n = proxy_proto_write_v2((struct sockaddr *)&c6, (struct sockaddr *)&l6, NULL, out,
	    sizeof(out));
	is_int(52, n, "v2 TCP6 without TLVs is 52 bytes");

	memset(&tlvs, 0, sizeof(tlvs));
	tlvs.authority = view(SNI);
	tlvs.alpn = view("imap");
	tlvs.crc32c = true;
	n = proxy_proto_write_v2((struct sockaddr *)&c6, (struct sockaddr *)&l6, &tlvs, out,
	    sizeof(out));
	is_int(52 + 3 + 17 + 3 + 4 + 7, n, "v2 TCP6 with three TLVs");
	is_int(n - 16, out[14] << 8 | out[15], "v2 length field matches");
	for (i = 0; i < (size_t)n; i++)
		if (proxy_proto_write_v2((struct sockaddr *)&c6, (struct sockaddr *)&l6, &tlvs,
		    out, i) != -1)
			break;
	is_int(n, (long long)i, "v2 refuses every buffer shorter than the header");
	memset(out, 0xee, sizeof(out));
	errno = 0;
	ok(proxy_proto_write_v2((struct sockaddr *)&c6, (struct sockaddr *)&l6, &tlvs, out,
	    (size_t)n - 1) == -1 && errno == ENOSPC, "v2 short buffer: ENOSPC");
	ok(out[0] == 0xee, "v2 short buffer: nothing written");

	huge = calloc(1, 70000);
	big = calloc(1, 70000);
	if (huge == NULL || big == NULL)
		bail("out of memory");
	memset(&tlvs, 0, sizeof(tlvs));
	tlvs.authority.ptr = huge;
	tlvs.authority.len = 65536;
	errno = 0;
	ok(proxy_proto_write_v2((struct sockaddr *)&c4, (struct sockaddr *)&l4, &tlvs, big,
	    70000) == -1 && errno == EINVAL, "v2 authority of 65536 bytes: EINVAL");
	tlvs.authority.len = 65535 - 12 - 3;
	n = proxy_proto_write_v2((struct sockaddr *)&c4, (struct sockaddr *)&l4, &tlvs, big,
	    70000);
	is_int(PROXY_PROTO_V2_MAX, n, "v2 header of the largest length");
	tlvs.authority.len++;
	errno = 0;
	ok(proxy_proto_write_v2((struct sockaddr *)&c4, (struct sockaddr *)&l4, &tlvs, big,
	    70000) == -1 && errno == EINVAL, "v2 one byte over 65535: EINVAL");
	free(huge);
	free(big);
}

/* Write, parse, and compare, for v1 and v2, over address pairs and TLV sets. */
static void
test_round_trip(void)
{
	static const struct {
		const char *src, *dst;
		const char *want_src, *want_dst;
		int family;
	} pairs[] = {
		{ "192.0.2.1", "198.51.100.7", "192.0.2.1", "198.51.100.7", AF_INET },
		{ "::ffff:192.0.2.1", "::ffff:198.51.100.7", "192.0.2.1", "198.51.100.7",
		  AF_INET },
		{ "::ffff:192.0.2.1", "198.51.100.7", "192.0.2.1", "198.51.100.7", AF_INET },
		{ "2001:db8::1", "2001:db8::2", "2001:db8::1", "2001:db8::2", AF_INET6 },
		{ "::ffff:192.0.2.1", "2001:db8::2", "::ffff:192.0.2.1", "2001:db8::2",
		  AF_INET6 },
		{ "192.0.2.1", "::1", "::ffff:192.0.2.1", "::1", AF_INET6 },
		{ "fe80::1", "::ffff:127.0.0.1", "fe80::1", "::ffff:127.0.0.1", AF_INET6 },
	};
	struct sockaddr_storage s, d;
	struct proxy_proto_tlvs tlvs;
	struct proxy_proto_hdr hdr;
	unsigned char out[512];
	char got[INET6_ADDRSTRLEN];
	const char *err;
	unsigned port;
	size_t i, t;
	ssize_t n;
	int v;

	for (i = 0; i < MX_NELEM(pairs); i++) {
		s = sa(pairs[i].src, 1000 + (unsigned)i);
		d = sa(pairs[i].dst, 993);
		for (v = PROXY_PROTO_V1; v <= PROXY_PROTO_V2; v++) {
			for (t = 0; t < (v == PROXY_PROTO_V1 ? 1u : 4u); t++) {
				memset(&tlvs, 0, sizeof(tlvs));
				if (t & 1)
					tlvs.authority = view(SNI);
				if (t & 2) {
					tlvs.alpn = view("pop3");
					tlvs.crc32c = true;
				}
				n = proxy_proto_write((enum proxy_proto_version)v,
				    (struct sockaddr *)&s, (struct sockaddr *)&d, &tlvs, out,
				    sizeof(out));
				if (!ok(n > 0, "v%d %s -> %s tlvs %zu: written", v,
				    pairs[i].src, pairs[i].dst, t))
					continue;
				/* Followed by what the client sent. */
				memcpy(out + n, "\x16\x03\x01", 3);
				is_int(PROXY_PROTO_DONE, proxy_proto_parse(out, (size_t)n + 3,
				    &hdr, &err), "v%d %s -> %s tlvs %zu: parsed", v,
				    pairs[i].src, pairs[i].dst, t);
				is_int(n, (long long)hdr.len, "  length");
				is_int(v, hdr.version, "  version");
				is_int(pairs[i].family, hdr.family, "  family");
				sa_text(&hdr.src, got, sizeof(got), &port);
				is_string(pairs[i].want_src, got, "  source address");
				is_int(1000 + (long long)i, port, "  source port");
				sa_text(&hdr.dst, got, sizeof(got), &port);
				is_string(pairs[i].want_dst, got, "  destination address");
				is_int(993, port, "  destination port");
				is_blob(tlvs.authority.ptr, tlvs.authority.len,
				    hdr.authority.ptr, hdr.authority.len, "  authority");
				is_blob(tlvs.alpn.ptr, tlvs.alpn.len, hdr.alpn.ptr,
				    hdr.alpn.len, "  ALPN");
				ok(hdr.crc32c == tlvs.crc32c, "  CRC32C");
			}
		}
	}
}

/* Every prefix of a valid header is MORE; the whole is DONE. */
static void
check_prefixes(const unsigned char *h, size_t len, const char *what)
{
	struct proxy_proto_hdr hdr;
	const char *err;
	size_t i;

	for (i = 0; i < len; i++)
		if (proxy_proto_parse(h, i, &hdr, &err) != PROXY_PROTO_MORE)
			break;
	is_int((long long)len, (long long)i, "%s: every prefix is MORE", what);
	is_int(PROXY_PROTO_DONE, proxy_proto_parse(h, len, &hdr, &err), "%s: whole is DONE",
	    what);
}

static void
check_parse_reject(const void *h, size_t len, const char *why, const char *what)
{
	struct proxy_proto_hdr hdr;
	const char *err = NULL;

	is_int(PROXY_PROTO_REJECT, proxy_proto_parse(h, len, &hdr, &err), "%s: rejected", what);
	is_string(why, err != NULL ? err : "(none)", "%s: reason", what);
}

static void
test_parse(void)
{
	/* AWS NLB header (CRC32C, a VPC endpoint TLV 0xea and NOOP padding). */
	static const unsigned char aws[] = {
		0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
		0x21, 0x11, 0x00, 0x54, 0xac, 0x1f, 0x07, 0x71, 0xac, 0x1f, 0x0a, 0x1f,
		0xc8, 0xf2, 0x00, 0x50, 0x03, 0x00, 0x04, 0xe8, 0xd6, 0x89, 0x2d, 0xea,
		0x00, 0x17, 0x01, 0x76, 0x70, 0x63, 0x65, 0x2d, 0x30, 0x38, 0x64, 0x32,
		0x62, 0x66, 0x31, 0x35, 0x66, 0x61, 0x63, 0x35, 0x30, 0x30, 0x31, 0x63,
		0x39, 0x04, 0x00, 0x24, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	};
	struct sockaddr_storage c4 = sa("192.0.2.1", 56324), l4 = sa("198.51.100.7", 993);
	struct proxy_proto_tlvs tlvs;
	struct proxy_proto_hdr hdr;
	unsigned char h[256], bad[256];
	char got[INET6_ADDRSTRLEN];
	const char *err, *line;
	unsigned port;
	ssize_t n;

	is_int(PROXY_PROTO_DONE, proxy_proto_parse(aws, sizeof(aws), &hdr, &err),
	    "AWS NLB header parsed");
	ok(hdr.crc32c, "AWS NLB header: CRC32C verified");
	sa_text(&hdr.src, got, sizeof(got), &port);
	ok(strcmp(got, "172.31.7.113") == 0 && port == 51442, "AWS NLB header: source");
	sa_text(&hdr.dst, got, sizeof(got), &port);
	ok(strcmp(got, "172.31.10.31") == 0 && port == 80, "AWS NLB header: destination");
	check_prefixes(aws, sizeof(aws), "AWS NLB header");
	memcpy(bad, aws, sizeof(aws));
	bad[20] ^= 1;
	check_parse_reject(bad, sizeof(aws), "v2: CRC32C mismatch",
	    "AWS NLB header with a flipped bit");

	line = "PROXY TCP4 192.0.2.1 198.51.100.7 56324 993\r\n";
	check_prefixes((const unsigned char *)line, strlen(line), "v1 TCP4");
	line = "PROXY UNKNOWN\r\n";
	is_int(PROXY_PROTO_DONE, proxy_proto_parse(line, strlen(line), &hdr, &err),
	    "v1 UNKNOWN");
	ok(hdr.family == AF_UNSPEC && hdr.len == 15, "v1 UNKNOWN: AF_UNSPEC, 15 bytes");
	line = "PROXY UNKNOWN ffff:: ffff:: 1 2\r\nrest";
	is_int(PROXY_PROTO_DONE, proxy_proto_parse(line, strlen(line), &hdr, &err),
	    "v1 UNKNOWN with addresses");
	is_int(33, (long long)hdr.len, "v1 UNKNOWN with addresses: length");

	{
		static const struct {
			const char *line, *why, *what;
		} bad1[] = {
			{ "proxy TCP4 192.0.2.1 198.51.100.7 1 2\r\n", "not a PROXY header",
			  "v1 lower case" },
			{ "PROXY tcp4 192.0.2.1 198.51.100.7 1 2\r\n", "v1: bad protocol",
			  "v1 lower-case protocol" },
			{ "PROXY UDP4 192.0.2.1 198.51.100.7 1 2\r\n", "v1: bad protocol",
			  "v1 UDP4" },
			{ "PROXY \r\n", "v1: bad protocol", "v1 no protocol" },
			{ "PROXY TCP4 192.0.2.1 198.51.100.7 1 2\n",
			  "v1: control or non-ASCII byte", "v1 bare LF" },
			{ "PROXY TCP4 192.0.2.1 198.51.100.7 1 2\rX", "v1: CR without LF",
			  "v1 CR without LF" },
			{ "PROXY TCP4 192.0.2.1  198.51.100.7 1 2\r\n",
			  "v1: bad field separation", "v1 double space" },
			{ "PROXY TCP4 192.0.2.1 198.51.100.7 1 2 \r\n",
			  "v1: bad field separation", "v1 trailing space" },
			{ "PROXY TCP4 192.0.2.1 198.51.100.7 1 2 3\r\n",
			  "v1: bad field separation", "v1 extra field" },
			{ "PROXY TCP4 192.0.2.1 198.51.100.7 1\r\n",
			  "v1: bad field separation", "v1 missing port" },
			{ "PROXY TCP4 192.0.2.1 198.51.100.7 65536 2\r\n", "v1: bad port",
			  "v1 port 65536" },
			{ "PROXY TCP4 192.0.2.1 198.51.100.7 0993 2\r\n", "v1: bad port",
			  "v1 port with a leading zero" },
			{ "PROXY TCP4 192.0.2.1 198.51.100.7 -1 2\r\n", "v1: bad port",
			  "v1 negative port" },
			{ "PROXY TCP4 192.0.2.1 198.51.100.7 1a 2\r\n", "v1: bad port",
			  "v1 port not a number" },
			{ "PROXY TCP4 256.0.2.1 198.51.100.7 1 2\r\n", "v1: bad address",
			  "v1 octet 256" },
			{ "PROXY TCP4 2001:db8::1 198.51.100.7 1 2\r\n", "v1: bad address",
			  "v1 IPv6 in TCP4" },
			{ "PROXY TCP6 192.0.2.1 2001:db8::1 1 2\r\n", "v1: bad address",
			  "v1 IPv4 in TCP6" },
			{ "PROXY TCP6 0000:0000:0000:0000:0000:0000:0000:0000:0000 ::1 1 2\r\n",
			  "v1: bad address", "v1 nine groups" },
			{ "PROXY TCP6 0000:0000:0000:0000:0000:0000:0000:0000:0000:0000 ::1 1 2"
			  "\r\n", "v1: bad address", "v1 address longer than any" },
			{ "PROXZ TCP4", "not a PROXY header", "v1 bad signature" },
			{ "GET / HTTP/1.1\r\n", "not a PROXY header", "HTTP" },
		};
		static const char nul[] = "PROXY TCP4 192.0.2.1\0 198.51.100.7 1 2\r\n";
		char longline[200];
		size_t i;

		for (i = 0; i < MX_NELEM(bad1); i++)
			check_parse_reject(bad1[i].line, strlen(bad1[i].line), bad1[i].why,
			    bad1[i].what);
		check_parse_reject(nul, sizeof(nul) - 1, "v1: control or non-ASCII byte",
		    "v1 NUL");
		memset(longline, 'A', sizeof(longline));
		memcpy(longline, "PROXY UNKNOWN ", 14);
		check_parse_reject(longline, sizeof(longline), "v1: line longer than 107 bytes",
		    "v1 longer than 107 bytes");
		memcpy(longline + 105, "\r\n", 2);
		is_int(PROXY_PROTO_DONE, proxy_proto_parse(longline, sizeof(longline), &hdr,
		    &err), "v1 of exactly 107 bytes");
		memcpy(longline + 105, "A\r\n", 3);
		check_parse_reject(longline, sizeof(longline), "v1: line longer than 107 bytes",
		    "v1 of 108 bytes");
	}

	/* v2 damage, starting from a header the writer made. */
	memset(&tlvs, 0, sizeof(tlvs));
	tlvs.authority = view(SNI);
	tlvs.crc32c = true;
	n = proxy_proto_write_v2((struct sockaddr *)&c4, (struct sockaddr *)&l4, &tlvs, h,
	    sizeof(h));
	check_prefixes(h, (size_t)n, "v2 with CRC");
	memcpy(bad, h, (size_t)n);
	bad[11] = 0x0b;
	check_parse_reject(bad, (size_t)n, "not a PROXY header", "v2 bad signature");
	check_parse_reject(bad, 12, "not a PROXY header", "v2 bad signature, prefix");
	memcpy(bad, h, (size_t)n);
	bad[12] = 0x11;
	check_parse_reject(bad, (size_t)n, "v2: bad version", "v2 version 1");
	bad[12] = 0x22;
	check_parse_reject(bad, (size_t)n, "v2: bad command", "v2 command 2");
	memcpy(bad, h, (size_t)n);
	bad[13] = 0x12;
	check_parse_reject(bad, (size_t)n, "v2: unsupported family", "v2 UDP4 with PROXY");
	bad[12] = 0x20;
	bad[13] = 0x31;
	is_int(PROXY_PROTO_DONE, proxy_proto_parse(bad, (size_t)n, &hdr, &err),
	    "v2 LOCAL with AF_UNIX: accepted");
	ok(hdr.local && hdr.family == AF_UNSPEC, "v2 LOCAL: local, no addresses");
	memcpy(bad, h, (size_t)n);
	bad[n - 1] ^= 0x80;
	check_parse_reject(bad, (size_t)n, "v2: CRC32C mismatch", "v2 CRC32C mismatch");
	memcpy(bad, h, (size_t)n);
	bad[16 + 12 + 5]++;
	check_parse_reject(bad, (size_t)n, "v2: CRC32C mismatch",
	    "v2 CRC32C catches a changed SNI");
	memcpy(bad, h, (size_t)n);
	bad[16 + 12 + 2] = 30;
	check_parse_reject(bad, (size_t)n, "v2: TLV longer than the header",
	    "v2 TLV longer than the header");
	memcpy(bad, h, (size_t)n);
	bad[15] = (unsigned char)(n - 16 + 2);
	bad[n] = 0x04;
	bad[n + 1] = 0x00;
	check_parse_reject(bad, (size_t)n + 2, "v2: truncated TLV header",
	    "v2 truncated TLV header");

	n = proxy_proto_write_v2((struct sockaddr *)&c4, (struct sockaddr *)&l4, NULL, h,
	    sizeof(h));
	memcpy(bad, h, (size_t)n);
	bad[13] = 0x21;
	check_parse_reject(bad, (size_t)n, "v2: address block longer than the header",
	    "v2 TCP6 with a TCP4-sized block");

	/* Hand-made, family UNSPEC: only TLVs. */
	{
		static const unsigned char crc5[] = {
			0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
			0x21, 0x00, 0x00, 0x08, 0x03, 0x00, 0x05, 0, 0, 0, 0, 0,
		};
		static const unsigned char two[] = {
			0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
			0x21, 0x00, 0x00, 0x08, 0x02, 0x00, 0x01, 'a', 0x02, 0x00, 0x01, 'b',
		};
		static const unsigned char two_crc[] = {
			0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
			0x21, 0x00, 0x00, 0x0e, 0x03, 0x00, 0x04, 0, 0, 0, 0,
			0x03, 0x00, 0x04, 0, 0, 0, 0,
		};
		static const unsigned char two_alpn[] = {
			0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
			0x21, 0x00, 0x00, 0x08, 0x01, 0x00, 0x01, 'a', 0x01, 0x00, 0x01, 'b',
		};
		static const unsigned char unspec_noop[] = {
			0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
			0x21, 0x00, 0x00, 0x07, 0x04, 0x00, 0x00, 0x02, 0x00, 0x01, 'a',
		};

		check_parse_reject(crc5, sizeof(crc5), "v2: CRC32C length not 4",
		    "v2 CRC32C TLV of 5 bytes");
		check_parse_reject(two, sizeof(two), "v2: duplicate authority",
		    "v2 two authorities");
		check_parse_reject(two_crc, sizeof(two_crc), "v2: duplicate CRC32C",
		    "v2 two CRC32C TLVs");
		check_parse_reject(two_alpn, sizeof(two_alpn), "v2: duplicate ALPN",
		    "v2 two ALPNs");
		is_int(PROXY_PROTO_DONE, proxy_proto_parse(unspec_noop, sizeof(unspec_noop),
		    &hdr, &err), "v2 UNSPEC with NOOP and authority");
		ok(hdr.family == AF_UNSPEC && !hdr.local && hdr.authority.len == 1 &&
		    hdr.authority.ptr[0] == 'a', "v2 UNSPEC: fields");
	}
}

int
main(void)
{
	plan_lazy();
	test_crc32c();
	test_v2_golden();
	test_v1_write();
	test_v2_sizes();
	test_round_trip();
	test_parse();
	return 0;
}
