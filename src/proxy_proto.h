/*
 * PROXY protocol (HAProxy's proxy-protocol.txt, versions 1 and 2): the header
 * the front sends to a backend before the client's bytes, so the backend
 * learns the real client address and the SNI.  A writer for the front, and a
 * bounds-checked reader for tests and fuzzing.  Pure code, no I/O.
 */
#ifndef MXEDGE_PROXY_PROTO_H
#define MXEDGE_PROXY_PROTO_H

#include <sys/types.h>
#include <sys/socket.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define PROXY_PROTO_V1_MAX 107		/* longest v1 line, CRLF included */
#define PROXY_PROTO_V2_FIXED 16		/* signature, command, family, length */
#define PROXY_PROTO_V2_MAX (PROXY_PROTO_V2_FIXED + 65535)

#define PP2_TYPE_ALPN 0x01
#define PP2_TYPE_AUTHORITY 0x02
#define PP2_TYPE_CRC32C 0x03
#define PP2_TYPE_NOOP 0x04

enum proxy_proto_version {
	PROXY_PROTO_OFF = 0,
	PROXY_PROTO_V1,
	PROXY_PROTO_V2,
};

/* What a v2 header carries besides the addresses; zero-length views are left out. */
struct proxy_proto_tlvs {
	struct mx_view authority;	/* the SNI host name */
	struct mx_view alpn;		/* one protocol name */
	bool crc32c;			/* add a PP2_TYPE_CRC32C checksum */
};

/*
 * Write the header for a connection from src (the client) to dst (the
 * address it connected to) into out.  Returns the header length, or -1 with
 * errno ENOSPC when it does not fit in size, EINVAL when a TLV is too long.
 * IPv4-mapped IPv6 addresses are written as IPv4 when both ends are IPv4;
 * when only one is, it is written IPv4-mapped so both share a family.
 * Either address NULL or not AF_INET/AF_INET6: v1 "UNKNOWN", v2 AF_UNSPEC.
 */
ssize_t proxy_proto_write_v1(const struct sockaddr *src, const struct sockaddr *dst,
    void *out, size_t size);
ssize_t proxy_proto_write_v2(const struct sockaddr *src, const struct sockaddr *dst,
    const struct proxy_proto_tlvs *tlvs, void *out, size_t size);
/* Either of the above; tlvs may be NULL.  PROXY_PROTO_OFF writes nothing (0). */
ssize_t proxy_proto_write(enum proxy_proto_version version, const struct sockaddr *src,
    const struct sockaddr *dst, const struct proxy_proto_tlvs *tlvs, void *out, size_t size);

/* CRC-32C (Castagnoli, RFC 4960 appendix B) of len bytes. */
uint32_t proxy_proto_crc32c(const void *data, size_t len);

enum proxy_proto_result {
	PROXY_PROTO_MORE = 0,
	PROXY_PROTO_DONE,
	PROXY_PROTO_REJECT,
};

struct proxy_proto_hdr {
	enum proxy_proto_version version;
	bool local;			/* v2 LOCAL: use the real endpoints */
	int family;			/* AF_INET, AF_INET6, or AF_UNSPEC (UNKNOWN) */
	struct sockaddr_storage src;
	struct sockaddr_storage dst;
	struct mx_view authority;	/* views into the parsed data; len 0 = absent */
	struct mx_view alpn;
	bool crc32c;			/* a CRC32C TLV was present and matched */
	size_t len;			/* header bytes, TLVs included */
};

/*
 * Read a v1 or v2 header at the start of data.  MORE: what is there is a
 * valid beginning, call again with more.  REJECT: *err says why.
 */
enum proxy_proto_result proxy_proto_parse(const void *data, size_t len,
    struct proxy_proto_hdr *hdr, const char **err);

#endif
