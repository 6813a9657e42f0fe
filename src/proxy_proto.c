/*
 * PROXY protocol header writer and reader.  The writer owns nothing: it
 * formats two socket addresses and a few TLVs into the caller's buffer and
 * either writes the whole header or nothing, so the front can send it in
 * one write before the ClientHello.  Every length it writes is computed
 * before the first byte is, and the header is refused (-1) rather than
 * truncated.  The reader trusts nothing: it is bounds-checked throughout, works
 * on a prefix (answering MORE while what it has is a valid beginning) and
 * returns views into the caller's data.  Families are made consistent
 * here, once: IPv4-mapped clients of an IPv4 listener become plain IPv4.
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <errno.h>
#include <string.h>

#include "proxy_proto.h"

#define PP2_SIG_LEN 12
#define PP2_VERSION 0x20
#define PP2_CMD_LOCAL 0x00
#define PP2_CMD_PROXY 0x01
#define PP2_FAM_UNSPEC 0x00
#define PP2_FAM_TCP4 0x11
#define PP2_FAM_TCP6 0x21
#define PP2_ADDR4_LEN 12	/* two addresses, two ports */
#define PP2_ADDR6_LEN 36
#define PP2_TLV_HDR 3
#define PP2_CRC_TLV_LEN (PP2_TLV_HDR + 4)

static const unsigned char pp2_sig[PP2_SIG_LEN] = {
	0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
};

/* One end of the connection, family settled: AF_INET uses addr[0..4). */
struct pp_end {
	int family;
	unsigned char addr[16];
	uint16_t port;
};

/* Reflected CRC-32C, polynomial 0x82f63b78: crc32c_table[i] is the CRC of byte i. */
static const uint32_t crc32c_table[256] = {
	0x00000000, 0xf26b8303, 0xe13b70f7, 0x1350f3f4, 0xc79a971f, 0x35f1141c,
	0x26a1e7e8, 0xd4ca64eb, 0x8ad958cf, 0x78b2dbcc, 0x6be22838, 0x9989ab3b,
	0x4d43cfd0, 0xbf284cd3, 0xac78bf27, 0x5e133c24, 0x105ec76f, 0xe235446c,
	0xf165b798, 0x030e349b, 0xd7c45070, 0x25afd373, 0x36ff2087, 0xc494a384,
	0x9a879fa0, 0x68ec1ca3, 0x7bbcef57, 0x89d76c54, 0x5d1d08bf, 0xaf768bbc,
	0xbc267848, 0x4e4dfb4b, 0x20bd8ede, 0xd2d60ddd, 0xc186fe29, 0x33ed7d2a,
	0xe72719c1, 0x154c9ac2, 0x061c6936, 0xf477ea35, 0xaa64d611, 0x580f5512,
	0x4b5fa6e6, 0xb93425e5, 0x6dfe410e, 0x9f95c20d, 0x8cc531f9, 0x7eaeb2fa,
	0x30e349b1, 0xc288cab2, 0xd1d83946, 0x23b3ba45, 0xf779deae, 0x05125dad,
	0x1642ae59, 0xe4292d5a, 0xba3a117e, 0x4851927d, 0x5b016189, 0xa96ae28a,
	0x7da08661, 0x8fcb0562, 0x9c9bf696, 0x6ef07595, 0x417b1dbc, 0xb3109ebf,
	0xa0406d4b, 0x522bee48, 0x86e18aa3, 0x748a09a0, 0x67dafa54, 0x95b17957,
	0xcba24573, 0x39c9c670, 0x2a993584, 0xd8f2b687, 0x0c38d26c, 0xfe53516f,
	0xed03a29b, 0x1f682198, 0x5125dad3, 0xa34e59d0, 0xb01eaa24, 0x42752927,
	0x96bf4dcc, 0x64d4cecf, 0x77843d3b, 0x85efbe38, 0xdbfc821c, 0x2997011f,
	0x3ac7f2eb, 0xc8ac71e8, 0x1c661503, 0xee0d9600, 0xfd5d65f4, 0x0f36e6f7,
	0x61c69362, 0x93ad1061, 0x80fde395, 0x72966096, 0xa65c047d, 0x5437877e,
	0x4767748a, 0xb50cf789, 0xeb1fcbad, 0x197448ae, 0x0a24bb5a, 0xf84f3859,
	0x2c855cb2, 0xdeeedfb1, 0xcdbe2c45, 0x3fd5af46, 0x7198540d, 0x83f3d70e,
	0x90a324fa, 0x62c8a7f9, 0xb602c312, 0x44694011, 0x5739b3e5, 0xa55230e6,
	0xfb410cc2, 0x092a8fc1, 0x1a7a7c35, 0xe811ff36, 0x3cdb9bdd, 0xceb018de,
	0xdde0eb2a, 0x2f8b6829, 0x82f63b78, 0x709db87b, 0x63cd4b8f, 0x91a6c88c,
	0x456cac67, 0xb7072f64, 0xa457dc90, 0x563c5f93, 0x082f63b7, 0xfa44e0b4,
	0xe9141340, 0x1b7f9043, 0xcfb5f4a8, 0x3dde77ab, 0x2e8e845f, 0xdce5075c,
	0x92a8fc17, 0x60c37f14, 0x73938ce0, 0x81f80fe3, 0x55326b08, 0xa759e80b,
	0xb4091bff, 0x466298fc, 0x1871a4d8, 0xea1a27db, 0xf94ad42f, 0x0b21572c,
	0xdfeb33c7, 0x2d80b0c4, 0x3ed04330, 0xccbbc033, 0xa24bb5a6, 0x502036a5,
	0x4370c551, 0xb11b4652, 0x65d122b9, 0x97baa1ba, 0x84ea524e, 0x7681d14d,
	0x2892ed69, 0xdaf96e6a, 0xc9a99d9e, 0x3bc21e9d, 0xef087a76, 0x1d63f975,
	0x0e330a81, 0xfc588982, 0xb21572c9, 0x407ef1ca, 0x532e023e, 0xa145813d,
	0x758fe5d6, 0x87e466d5, 0x94b49521, 0x66df1622, 0x38cc2a06, 0xcaa7a905,
	0xd9f75af1, 0x2b9cd9f2, 0xff56bd19, 0x0d3d3e1a, 0x1e6dcdee, 0xec064eed,
	0xc38d26c4, 0x31e6a5c7, 0x22b65633, 0xd0ddd530, 0x0417b1db, 0xf67c32d8,
	0xe52cc12c, 0x1747422f, 0x49547e0b, 0xbb3ffd08, 0xa86f0efc, 0x5a048dff,
	0x8ecee914, 0x7ca56a17, 0x6ff599e3, 0x9d9e1ae0, 0xd3d3e1ab, 0x21b862a8,
	0x32e8915c, 0xc083125f, 0x144976b4, 0xe622f5b7, 0xf5720643, 0x07198540,
	0x590ab964, 0xab613a67, 0xb831c993, 0x4a5a4a90, 0x9e902e7b, 0x6cfbad78,
	0x7fab5e8c, 0x8dc0dd8f, 0xe330a81a, 0x115b2b19, 0x020bd8ed, 0xf0605bee,
	0x24aa3f05, 0xd6c1bc06, 0xc5914ff2, 0x37faccf1, 0x69e9f0d5, 0x9b8273d6,
	0x88d28022, 0x7ab90321, 0xae7367ca, 0x5c18e4c9, 0x4f48173d, 0xbd23943e,
	0xf36e6f75, 0x0105ec76, 0x12551f82, 0xe03e9c81, 0x34f4f86a, 0xc69f7b69,
	0xd5cf889d, 0x27a40b9e, 0x79b737ba, 0x8bdcb4b9, 0x988c474d, 0x6ae7c44e,
	0xbe2da0a5, 0x4c4623a6, 0x5f16d052, 0xad7d5351
};

uint32_t
proxy_proto_crc32c(const void *data, size_t len)
{
	const unsigned char *p = data;
	uint32_t crc = 0xffffffff;

	while (len-- > 0)
		crc = crc32c_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return crc ^ 0xffffffff;
}

static int
pp_load(const struct sockaddr *sa, struct pp_end *e)
{
	const struct sockaddr_in *sin;
	const struct sockaddr_in6 *sin6;

	if (sa == NULL)
		return -1;
	switch (sa->sa_family) {
	case AF_INET:
		sin = (const struct sockaddr_in *)sa;
		e->family = AF_INET;
		memcpy(e->addr, &sin->sin_addr, 4);
		e->port = ntohs(sin->sin_port);
		return 0;
	case AF_INET6:
		sin6 = (const struct sockaddr_in6 *)sa;
		e->port = ntohs(sin6->sin6_port);
		if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
			e->family = AF_INET;
			memcpy(e->addr, sin6->sin6_addr.s6_addr + 12, 4);
		} else {
			e->family = AF_INET6;
			memcpy(e->addr, &sin6->sin6_addr, 16);
		}
		return 0;
	default:
		return -1;
	}
}

/* Write an IPv4 end as ::ffff:a.b.c.d. */
static void
pp_map(struct pp_end *e)
{
	if (e->family != AF_INET)
		return;
	memmove(e->addr + 12, e->addr, 4);
	memset(e->addr, 0, 10);
	e->addr[10] = 0xff;
	e->addr[11] = 0xff;
	e->family = AF_INET6;
}

/* The family both ends are written in, or AF_UNSPEC when one is unusable. */
static int
pp_pair(const struct sockaddr *src, const struct sockaddr *dst, struct pp_end *s,
    struct pp_end *d)
{
	if (pp_load(src, s) == -1 || pp_load(dst, d) == -1)
		return AF_UNSPEC;
	if (s->family != d->family) {
		pp_map(s);
		pp_map(d);
	}
	return s->family;
}

static size_t
pp_put_dec(char *p, unsigned v)
{
	char tmp[5];
	size_t n = 0, i;

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0 && n < sizeof(tmp));
	for (i = 0; i < n; i++)
		p[i] = tmp[n - 1 - i];
	return n;
}

static size_t
pp_put_ip4(char *p, const unsigned char *a)
{
	size_t n = 0, i;

	for (i = 0; i < 4; i++) {
		if (i > 0)
			p[n++] = '.';
		n += pp_put_dec(p + n, a[i]);
	}
	return n;
}

/*
 * RFC 5952 text of an IPv6 address: lower-case hex without leading zeros,
 * the longest run of two or more zero groups (the first of equals) as "::",
 * and IPv4-mapped addresses as ::ffff:a.b.c.d.  By hand because inet_ntop()
 * costs thousands of instructions per call on the connection path.
 */
static size_t
pp_put_ip6(char *p, const unsigned char *a)
{
	static const char hex[] = "0123456789abcdef";
	static const unsigned char mapped[12] = {
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff,
	};
	unsigned w[8], d;
	int i, best = -1, bestlen = 0, run = 0, shift;
	size_t n = 0;
	bool lead;

	if (memcmp(a, mapped, sizeof(mapped)) == 0) {
		memcpy(p, "::ffff:", 7);
		return 7 + pp_put_ip4(p + 7, a + 12);
	}
	for (i = 0; i < 8; i++) {
		w[i] = (unsigned)a[2 * i] << 8 | a[2 * i + 1];
		run = w[i] == 0 ? run + 1 : 0;
		if (run > bestlen) {
			bestlen = run;
			best = i - run + 1;
		}
	}
	if (bestlen < 2) {
		best = -1;
		bestlen = 0;
	}
	for (i = 0; i < 8; i++) {
		if (i == best) {
			p[n++] = ':';
			p[n++] = ':';
			i += bestlen - 1;
			continue;
		}
		if (i > 0 && i != best + bestlen)
			p[n++] = ':';
		lead = true;
		for (shift = 12; shift >= 0; shift -= 4) {
			d = (w[i] >> shift) & 0xf;
			if (d != 0 || !lead || shift == 0) {
				p[n++] = hex[d];
				lead = false;
			}
		}
	}
	return n;
}

static size_t
pp_put_addr(char *p, const struct pp_end *e)
{
	return e->family == AF_INET ? pp_put_ip4(p, e->addr) : pp_put_ip6(p, e->addr);
}

ssize_t
proxy_proto_write_v1(const struct sockaddr *src, const struct sockaddr *dst, void *out,
    size_t size)
{
	/* At most "PROXY TCP6 " + 2 x 39 + 2 x 5 + 3 spaces + CRLF = 104 bytes. */
	char line[128];
	struct pp_end s, d;
	size_t n;
	int family;

	family = pp_pair(src, dst, &s, &d);
	if (family == AF_UNSPEC) {
		memcpy(line, "PROXY UNKNOWN\r\n", 15);
		n = 15;
	} else {
		memcpy(line, family == AF_INET ? "PROXY TCP4 " : "PROXY TCP6 ", 11);
		n = 11;
		n += pp_put_addr(line + n, &s);
		line[n++] = ' ';
		n += pp_put_addr(line + n, &d);
		line[n++] = ' ';
		n += pp_put_dec(line + n, s.port);
		line[n++] = ' ';
		n += pp_put_dec(line + n, d.port);
		line[n++] = '\r';
		line[n++] = '\n';
	}
	if (n > size) {
		errno = ENOSPC;
		return -1;
	}
	memcpy(out, line, n);
	return (ssize_t)n;
}

static unsigned char *
pp_put_tlv(unsigned char *p, unsigned type, const void *value, size_t len)
{
	p[0] = (unsigned char)type;
	p[1] = (unsigned char)(len >> 8);
	p[2] = (unsigned char)(len & 0xff);
	memcpy(p + PP2_TLV_HDR, value, len);
	return p + PP2_TLV_HDR + len;
}

ssize_t
proxy_proto_write_v2(const struct sockaddr *src, const struct sockaddr *dst,
    const struct proxy_proto_tlvs *tlvs, void *out, size_t size)
{
	static const struct proxy_proto_tlvs none;
	static const unsigned char zero[4];
	unsigned char *start = out, *p, *crc = NULL;
	struct pp_end s, d;
	size_t body, alen;
	uint32_t sum;
	int family;

	if (tlvs == NULL)
		tlvs = &none;
	family = pp_pair(src, dst, &s, &d);
	alen = family == AF_INET ? PP2_ADDR4_LEN : family == AF_INET6 ? PP2_ADDR6_LEN : 0;

	/* Everything is measured before anything is written. */
	if (tlvs->alpn.len > 0xffff || tlvs->authority.len > 0xffff) {
		errno = EINVAL;
		return -1;
	}
	body = alen;
	if (tlvs->alpn.len > 0)
		body += PP2_TLV_HDR + tlvs->alpn.len;
	if (tlvs->authority.len > 0)
		body += PP2_TLV_HDR + tlvs->authority.len;
	if (tlvs->crc32c)
		body += PP2_CRC_TLV_LEN;
	if (body > 0xffff) {
		errno = EINVAL;
		return -1;
	}
	if (PROXY_PROTO_V2_FIXED + body > size) {
		errno = ENOSPC;
		return -1;
	}

	memcpy(start, pp2_sig, PP2_SIG_LEN);
	start[12] = PP2_VERSION | PP2_CMD_PROXY;
	start[13] = family == AF_INET ? PP2_FAM_TCP4 :
	    family == AF_INET6 ? PP2_FAM_TCP6 : PP2_FAM_UNSPEC;
	start[14] = (unsigned char)(body >> 8);
	start[15] = (unsigned char)(body & 0xff);
	p = start + PROXY_PROTO_V2_FIXED;
	if (family != AF_UNSPEC) {
		alen = family == AF_INET ? 4 : 16;
		memcpy(p, s.addr, alen);
		memcpy(p + alen, d.addr, alen);
		p += 2 * alen;
		*p++ = (unsigned char)(s.port >> 8);
		*p++ = (unsigned char)(s.port & 0xff);
		*p++ = (unsigned char)(d.port >> 8);
		*p++ = (unsigned char)(d.port & 0xff);
	}
	if (tlvs->alpn.len > 0)
		p = pp_put_tlv(p, PP2_TYPE_ALPN, tlvs->alpn.ptr, tlvs->alpn.len);
	if (tlvs->authority.len > 0)
		p = pp_put_tlv(p, PP2_TYPE_AUTHORITY, tlvs->authority.ptr, tlvs->authority.len);
	if (tlvs->crc32c) {
		crc = p + PP2_TLV_HDR;
		p = pp_put_tlv(p, PP2_TYPE_CRC32C, zero, sizeof(zero));
	}
	if (crc != NULL) {
		/* Over the whole header with the checksum field zero; sent big-endian. */
		sum = proxy_proto_crc32c(start, (size_t)(p - start));
		crc[0] = (unsigned char)(sum >> 24);
		crc[1] = (unsigned char)(sum >> 16);
		crc[2] = (unsigned char)(sum >> 8);
		crc[3] = (unsigned char)sum;
	}
	return (ssize_t)(p - start);
}

ssize_t
proxy_proto_write(enum proxy_proto_version version, const struct sockaddr *src,
    const struct sockaddr *dst, const struct proxy_proto_tlvs *tlvs, void *out, size_t size)
{
	switch (version) {
	case PROXY_PROTO_OFF:
		return 0;
	case PROXY_PROTO_V1:
		return proxy_proto_write_v1(src, dst, out, size);
	case PROXY_PROTO_V2:
		return proxy_proto_write_v2(src, dst, tlvs, out, size);
	}
	errno = EINVAL;
	return -1;
}

/* Reader ------------------------------------------------------------------ */

static enum proxy_proto_result
pp_reject(const char **err, const char *why)
{
	*err = why;
	return PROXY_PROTO_REJECT;
}

static void
pp_store(struct sockaddr_storage *ss, int family, const unsigned char *addr, unsigned port)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET) {
		sin->sin_family = AF_INET;
		memcpy(&sin->sin_addr, addr, 4);
		sin->sin_port = htons((uint16_t)port);
	} else {
		sin6->sin6_family = AF_INET6;
		memcpy(&sin6->sin6_addr, addr, 16);
		sin6->sin6_port = htons((uint16_t)port);
	}
}

/* The next space-separated word of a v1 line; exactly one space between words. */
static bool
pp_word(const unsigned char **p, const unsigned char *end, struct mx_view *w, bool last)
{
	const unsigned char *s = *p;

	while (*p < end && **p != ' ')
		(*p)++;
	w->ptr = s;
	w->len = (size_t)(*p - s);
	if (w->len == 0)
		return false;
	if (last)
		return *p == end;
	if (*p == end)
		return false;
	(*p)++;
	return true;
}

/* A v1 port: decimal 0..65535 without leading zeros. */
static bool
pp_v1_port(struct mx_view w, unsigned *port)
{
	unsigned long v = 0;
	size_t i;

	if (w.len > 5 || (w.len > 1 && w.ptr[0] == '0'))
		return false;
	for (i = 0; i < w.len; i++) {
		if (w.ptr[i] < '0' || w.ptr[i] > '9')
			return false;
		v = v * 10 + (unsigned)(w.ptr[i] - '0');
	}
	if (v > 65535)
		return false;
	*port = (unsigned)v;
	return true;
}

static bool
pp_v1_addr(struct mx_view w, int family, unsigned char *addr)
{
	char buf[INET6_ADDRSTRLEN];

	/* Bounded by the buffer, not by what the peer claims. */
	if (w.len >= sizeof(buf))
		return false;
	memcpy(buf, w.ptr, w.len);
	buf[w.len] = '\0';
	return inet_pton(family, buf, addr) == 1;
}

static enum proxy_proto_result
pp_parse_v1(const unsigned char *p, size_t len, struct proxy_proto_hdr *hdr, const char **err)
{
	const unsigned char *q, *end;
	struct mx_view proto, w[4];
	unsigned char sa[16], da[16];
	unsigned sp, dp;
	bool more;
	size_t n = len < PROXY_PROTO_V1_MAX ? len : PROXY_PROTO_V1_MAX, i;
	int family;

	for (i = 0; i < n; i++) {
		if (p[i] == '\r')
			break;
		if (p[i] < 0x20 || p[i] > 0x7e)
			return pp_reject(err, "v1: control or non-ASCII byte");
	}
	if (i == n)
		return n < PROXY_PROTO_V1_MAX ? PROXY_PROTO_MORE :
		    pp_reject(err, "v1: line longer than 107 bytes");
	if (i + 1 == n)
		return n < PROXY_PROTO_V1_MAX ? PROXY_PROTO_MORE :
		    pp_reject(err, "v1: line longer than 107 bytes");
	if (p[i + 1] != '\n')
		return pp_reject(err, "v1: CR without LF");
	end = p + i;
	q = p + 6;	/* "PROXY " */
	hdr->version = PROXY_PROTO_V1;
	hdr->len = i + 2;

	more = pp_word(&q, end, &proto, false);
	if (proto.len == 7 && memcmp(proto.ptr, "UNKNOWN", 7) == 0) {
		/* The rest of the line is optional and ignored. */
		hdr->family = AF_UNSPEC;
		return PROXY_PROTO_DONE;
	}
	if (!more)
		return pp_reject(err, "v1: bad protocol");
	if (proto.len == 4 && memcmp(proto.ptr, "TCP4", 4) == 0)
		family = AF_INET;
	else if (proto.len == 4 && memcmp(proto.ptr, "TCP6", 4) == 0)
		family = AF_INET6;
	else
		return pp_reject(err, "v1: bad protocol");
	for (i = 0; i < 4; i++)
		if (!pp_word(&q, end, &w[i], i == 3))
			return pp_reject(err, "v1: bad field separation");
	if (!pp_v1_addr(w[0], family, sa) || !pp_v1_addr(w[1], family, da))
		return pp_reject(err, "v1: bad address");
	if (!pp_v1_port(w[2], &sp) || !pp_v1_port(w[3], &dp))
		return pp_reject(err, "v1: bad port");
	hdr->family = family;
	pp_store(&hdr->src, family, sa, sp);
	pp_store(&hdr->dst, family, da, dp);
	return PROXY_PROTO_DONE;
}

/* CRC of the header with the 4 checksum bytes at crc taken as zero. */
static uint32_t
pp_crc_zeroed(const unsigned char *p, size_t len, const unsigned char *crc)
{
	uint32_t c = 0xffffffff;
	size_t i;

	for (i = 0; i < len; i++) {
		unsigned char b = p + i >= crc && p + i < crc + 4 ? 0 : p[i];

		c = crc32c_table[(c ^ b) & 0xff] ^ (c >> 8);
	}
	return c ^ 0xffffffff;
}

static enum proxy_proto_result
pp_parse_v2(const unsigned char *p, size_t len, struct proxy_proto_hdr *hdr, const char **err)
{
	const unsigned char *t, *end, *crc = NULL;
	size_t body, alen, vlen;
	unsigned cmd, type;
	int family;

	if (len < PROXY_PROTO_V2_FIXED)
		return PROXY_PROTO_MORE;
	if ((p[12] & 0xf0) != PP2_VERSION)
		return pp_reject(err, "v2: bad version");
	cmd = p[12] & 0x0f;
	if (cmd != PP2_CMD_LOCAL && cmd != PP2_CMD_PROXY)
		return pp_reject(err, "v2: bad command");
	body = (size_t)p[14] << 8 | p[15];
	if (len < PROXY_PROTO_V2_FIXED + body)
		return PROXY_PROTO_MORE;
	hdr->version = PROXY_PROTO_V2;
	hdr->local = cmd == PP2_CMD_LOCAL;
	hdr->len = PROXY_PROTO_V2_FIXED + body;

	switch (p[13]) {
	case PP2_FAM_TCP4:
		family = AF_INET;
		alen = PP2_ADDR4_LEN;
		break;
	case PP2_FAM_TCP6:
		family = AF_INET6;
		alen = PP2_ADDR6_LEN;
		break;
	case PP2_FAM_UNSPEC:
		family = AF_UNSPEC;
		alen = 0;
		break;
	default:
		/* LOCAL discards the whole block; PROXY here is TCP only. */
		if (!hdr->local)
			return pp_reject(err, "v2: unsupported family");
		family = AF_UNSPEC;
		alen = body;
		break;
	}
	if (body < alen)
		return pp_reject(err, "v2: address block longer than the header");
	t = p + PROXY_PROTO_V2_FIXED;
	end = t + body;
	hdr->family = hdr->local ? AF_UNSPEC : family;
	if (family == AF_INET && !hdr->local) {
		pp_store(&hdr->src, AF_INET, t, (unsigned)t[8] << 8 | t[9]);
		pp_store(&hdr->dst, AF_INET, t + 4, (unsigned)t[10] << 8 | t[11]);
	} else if (family == AF_INET6 && !hdr->local) {
		pp_store(&hdr->src, AF_INET6, t, (unsigned)t[32] << 8 | t[33]);
		pp_store(&hdr->dst, AF_INET6, t + 16, (unsigned)t[34] << 8 | t[35]);
	}
	t += alen;

	while (t < end) {
		if ((size_t)(end - t) < PP2_TLV_HDR)
			return pp_reject(err, "v2: truncated TLV header");
		type = t[0];
		vlen = (size_t)t[1] << 8 | t[2];
		t += PP2_TLV_HDR;
		if ((size_t)(end - t) < vlen)
			return pp_reject(err, "v2: TLV longer than the header");
		switch (type) {
		case PP2_TYPE_ALPN:
			if (hdr->alpn.ptr != NULL)
				return pp_reject(err, "v2: duplicate ALPN");
			hdr->alpn.ptr = t;
			hdr->alpn.len = vlen;
			break;
		case PP2_TYPE_AUTHORITY:
			if (hdr->authority.ptr != NULL)
				return pp_reject(err, "v2: duplicate authority");
			hdr->authority.ptr = t;
			hdr->authority.len = vlen;
			break;
		case PP2_TYPE_CRC32C:
			if (crc != NULL)
				return pp_reject(err, "v2: duplicate CRC32C");
			if (vlen != 4)
				return pp_reject(err, "v2: CRC32C length not 4");
			crc = t;
			break;
		default:
			break;
		}
		t += vlen;
	}
	if (crc != NULL) {
		uint32_t want = (uint32_t)crc[0] << 24 | (uint32_t)crc[1] << 16 |
		    (uint32_t)crc[2] << 8 | crc[3];

		if (pp_crc_zeroed(p, hdr->len, crc) != want)
			return pp_reject(err, "v2: CRC32C mismatch");
		hdr->crc32c = true;
	}
	return PROXY_PROTO_DONE;
}

enum proxy_proto_result
proxy_proto_parse(const void *data, size_t len, struct proxy_proto_hdr *hdr, const char **err)
{
	static const unsigned char v1_sig[6] = { 'P', 'R', 'O', 'X', 'Y', ' ' };
	const unsigned char *p = data;
	size_t n;

	memset(hdr, 0, sizeof(*hdr));
	*err = NULL;
	if (len == 0)
		return PROXY_PROTO_MORE;
	if (p[0] == pp2_sig[0]) {
		n = len < PP2_SIG_LEN ? len : PP2_SIG_LEN;
		if (memcmp(p, pp2_sig, n) != 0)
			return pp_reject(err, "not a PROXY header");
		return pp_parse_v2(p, len, hdr, err);
	}
	n = len < sizeof(v1_sig) ? len : sizeof(v1_sig);
	if (memcmp(p, v1_sig, n) != 0)
		return pp_reject(err, "not a PROXY header");
	if (len <= sizeof(v1_sig))
		return PROXY_PROTO_MORE;
	return pp_parse_v1(p, len, hdr, err);
}
