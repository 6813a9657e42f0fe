/*
 * libFuzzer target for the PROXY protocol module.  Two things per input:
 * the reader is run on the raw bytes (every view it returns must lie inside
 * the input, every shorter prefix of an accepted header must be MORE), and
 * the input is used as a recipe for a header (addresses, ports, TLVs) that
 * the writer writes and the reader must read back to the same values, with
 * the families the writer promises.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc \
 *       tests/fuzz/fuzz_proxy_proto.c src/proxy_proto.c -o fuzz_proxy_proto
 *   ./fuzz_proxy_proto -max_total_time=60 corpus/
 */
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check(int cond)
{
	if (!cond)
		abort();
}

static bool
inside(struct mx_view v, const uint8_t *data, size_t size)
{
	if (v.len == 0)
		return true;
	return v.ptr >= data && v.ptr + v.len <= data + size;
}

static void
fuzz_parse(const uint8_t *data, size_t size)
{
	struct proxy_proto_hdr hdr, again;
	enum proxy_proto_result r;
	const char *err;

	r = proxy_proto_parse(data, size, &hdr, &err);
	if (r == PROXY_PROTO_REJECT) {
		check(err != NULL);
		return;
	}
	if (r != PROXY_PROTO_DONE)
		return;
	check(hdr.len > 0 && hdr.len <= size);
	check(hdr.version == PROXY_PROTO_V1 || hdr.version == PROXY_PROTO_V2);
	check(hdr.version != PROXY_PROTO_V1 || hdr.len <= PROXY_PROTO_V1_MAX);
	check(inside(hdr.authority, data, hdr.len));
	check(inside(hdr.alpn, data, hdr.len));
	/* The header alone parses the same; one byte less is not enough. */
	check(proxy_proto_parse(data, hdr.len, &again, &err) == PROXY_PROTO_DONE);
	check(again.len == hdr.len);
	check(proxy_proto_parse(data, hdr.len - 1, &again, &err) == PROXY_PROTO_MORE);
}

/* Take n bytes from the recipe, zero-filled past its end. */
static void
take(const uint8_t **p, size_t *left, void *out, size_t n)
{
	size_t k = n < *left ? n : *left;

	memset(out, 0, n);
	memcpy(out, *p, k);
	*p += k;
	*left -= k;
}

/* One end: 0 IPv4, 1 IPv6, 2 IPv4-mapped IPv6; *v4 says if it is IPv4 at heart. */
static void
make_end(const uint8_t **p, size_t *left, struct sockaddr_storage *ss, bool *v4,
    unsigned char addr[16])
{
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
	uint8_t kind;
	uint16_t port;

	take(p, left, &kind, 1);
	take(p, left, &port, 2);
	take(p, left, addr, 16);
	memset(ss, 0, sizeof(*ss));
	switch (kind % 3) {
	case 0:
		sin->sin_family = AF_INET;
		sin->sin_port = port;
		memcpy(&sin->sin_addr, addr, 4);
		*v4 = true;
		break;
	case 1:
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = port;
		memcpy(&sin6->sin6_addr, addr, 16);
		*v4 = IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr);
		break;
	default:
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = port;
		memset(&sin6->sin6_addr, 0, 10);
		sin6->sin6_addr.s6_addr[10] = 0xff;
		sin6->sin6_addr.s6_addr[11] = 0xff;
		memcpy(sin6->sin6_addr.s6_addr + 12, addr, 4);
		*v4 = true;
		break;
	}
}

/* The IPv4 address of a v4-at-heart end, and its port. */
static void
end_v4(const struct sockaddr_storage *ss, unsigned char out[4], uint16_t *port)
{
	if (ss->ss_family == AF_INET) {
		memcpy(out, &((const struct sockaddr_in *)ss)->sin_addr, 4);
		*port = ((const struct sockaddr_in *)ss)->sin_port;
	} else {
		memcpy(out, ((const struct sockaddr_in6 *)ss)->sin6_addr.s6_addr + 12, 4);
		*port = ((const struct sockaddr_in6 *)ss)->sin6_port;
	}
}

/* The end as the writer must present it in family. */
static void
expect_end(const struct sockaddr_storage *ss, bool v4, int family, unsigned char *addr,
    uint16_t *port)
{
	unsigned char a4[4];

	if (v4) {
		end_v4(ss, a4, port);
		if (family == AF_INET) {
			memcpy(addr, a4, 4);
		} else {
			memset(addr, 0, 10);
			addr[10] = 0xff;
			addr[11] = 0xff;
			memcpy(addr + 12, a4, 4);
		}
		return;
	}
	memcpy(addr, &((const struct sockaddr_in6 *)ss)->sin6_addr, 16);
	*port = ((const struct sockaddr_in6 *)ss)->sin6_port;
}

static void
compare_end(const struct sockaddr_storage *got, int family, const unsigned char *addr,
    uint16_t port)
{
	check(got->ss_family == family);
	if (family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)got;

		check(memcmp(&sin->sin_addr, addr, 4) == 0 && sin->sin_port == port);
	} else {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)got;

		check(memcmp(&sin6->sin6_addr, addr, 16) == 0 && sin6->sin6_port == port);
	}
}

static void
fuzz_write(const uint8_t *data, size_t size)
{
	static unsigned char out[PROXY_PROTO_V2_MAX + 16];
	struct sockaddr_storage s, d;
	struct proxy_proto_tlvs tlvs;
	struct proxy_proto_hdr hdr;
	unsigned char sa[16], da[16], ea[16];
	const uint8_t *p = data;
	size_t left = size, room;
	uint8_t flags, alen, nlen;
	uint16_t port, oroom;
	bool s4, d4;
	ssize_t n;
	int family, version;
	const char *err;

	take(&p, &left, &flags, 1);
	make_end(&p, &left, &s, &s4, sa);
	make_end(&p, &left, &d, &d4, da);
	take(&p, &left, &alen, 1);
	take(&p, &left, &nlen, 1);
	take(&p, &left, &oroom, 2);
	memset(&tlvs, 0, sizeof(tlvs));
	/* TLV values are the rest of the recipe. */
	tlvs.alpn.ptr = p;
	tlvs.alpn.len = alen < left ? alen : left;
	tlvs.authority.ptr = p + tlvs.alpn.len;
	tlvs.authority.len = nlen < left - tlvs.alpn.len ? nlen : left - tlvs.alpn.len;
	tlvs.crc32c = flags & 1;
	version = flags & 2 ? PROXY_PROTO_V2 : PROXY_PROTO_V1;
	room = flags & 4 ? oroom % 300 : sizeof(out);

	n = proxy_proto_write((enum proxy_proto_version)version,
	    flags & 8 ? NULL : (struct sockaddr *)&s, (struct sockaddr *)&d, &tlvs, out, room);
	if (n == -1) {
		/* Only a short buffer is a reason to refuse. */
		check(room < sizeof(out));
		return;
	}
	check(n > 0 && (size_t)n <= room);
	check(proxy_proto_parse(out, (size_t)n, &hdr, &err) == PROXY_PROTO_DONE);
	check(hdr.len == (size_t)n);
	check((int)hdr.version == version);
	check(!hdr.local);
	if (flags & 8) {
		check(hdr.family == AF_UNSPEC);
	} else {
		family = s4 && d4 ? AF_INET : AF_INET6;
		check(hdr.family == family);
		expect_end(&s, s4, family, ea, &port);
		compare_end(&hdr.src, family, ea, port);
		expect_end(&d, d4, family, ea, &port);
		compare_end(&hdr.dst, family, ea, port);
	}
	if (version == PROXY_PROTO_V2) {
		check(hdr.alpn.len == tlvs.alpn.len);
		check(hdr.alpn.len == 0 || memcmp(hdr.alpn.ptr, tlvs.alpn.ptr, hdr.alpn.len) == 0);
		check(hdr.authority.len == tlvs.authority.len);
		check(hdr.authority.len == 0 ||
		    memcmp(hdr.authority.ptr, tlvs.authority.ptr, hdr.authority.len) == 0);
		check(hdr.crc32c == tlvs.crc32c);
		check((size_t)((out[14] << 8) | out[15]) + PROXY_PROTO_V2_FIXED == (size_t)n);
	} else
		check((size_t)n <= PROXY_PROTO_V1_MAX);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_parse(data, size);
	fuzz_write(data, size);
	return 0;
}
