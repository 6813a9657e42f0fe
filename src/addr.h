/*
 * Names and addresses: domain-name validation and normalisation, host:port
 * parsing for backends and relay targets, listen addresses, formatting, and
 * the address classes (loopback, private, link-local) the relay and the front
 * refuse unless allow_private_targets is set.  Pure code, no DNS.
 */
#ifndef MXEDGE_ADDR_H
#define MXEDGE_ADDR_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#define ADDR_DOMAIN_MAX 253	/* octets, without the trailing dot */
#define ADDR_HOST_MAX 256	/* buffer for a host name or literal, with NUL */
#define ADDR_STR_MAX 64		/* "[v6]:port" formatted, with NUL */

/*
 * Validate and normalise a domain name: LDH labels of 1..63 octets, at most
 * 253 octets, no leading/trailing hyphen, lower-cased, one trailing dot
 * dropped, an all-numeric last label (an IP literal) refused.  IDNs must
 * be given as A-labels ("xn--...").  out must hold ADDR_DOMAIN_MAX + 1.
 * Returns 0, or -1 with *err a static message.
 */
int addr_domain_normalize(const char *in, size_t inlen, char *out, const char **err);

enum addr_host_kind {
	ADDR_HOST_NAME = 0,
	ADDR_HOST_IPV4,
	ADDR_HOST_IPV6,
};

struct addr_hostport {
	enum addr_host_kind kind;
	char host[ADDR_HOST_MAX];	/* name (normalised) or the literal without brackets */
	uint16_t port;			/* 0 when none was given and none is defaulted */
};

/*
 * Parse "HOST", "HOST:PORT", "[V6]", "[V6]:PORT", "1.2.3.4[:PORT]".  A bare
 * IPv6 literal without brackets is accepted only without a port.  Port
 * 1..65535; when absent, default_port (may be 0).  Returns 0 or -1 with *err.
 */
int addr_parse_hostport(const char *s, uint16_t default_port, struct addr_hostport *hp,
    const char **err);
/* Format back to canonical text ("[2001:db8::1]:25", "mx.example:25", without ":0"). */
void addr_hostport_format(const struct addr_hostport *hp, char *buf, size_t size);

/* "[::]:25", "0.0.0.0:25", "127.0.0.1:2525": a numeric address with a port. */
int addr_parse_listen(const char *s, struct sockaddr_storage *ss, socklen_t *sslen,
    const char **err);

/* Literal to sockaddr (no DNS); kind must be IPV4 or IPV6. */
int addr_hostport_sockaddr(const struct addr_hostport *hp, struct sockaddr_storage *ss,
    socklen_t *sslen);

/* "[2001:db8::1]:25" or "192.0.2.1:25"; IPv4-mapped IPv6 printed as IPv4. */
const char *addr_format(const struct sockaddr *sa, char *buf, size_t size);
/* The address alone, no port, no brackets; IPv4-mapped printed as IPv4. */
const char *addr_format_ip(const struct sockaddr *sa, char *buf, size_t size);

/* Loopback, unspecified, link-local, RFC 1918/6598/4193, multicast, documentation... */
bool addr_is_private(const struct sockaddr *sa);

/*
 * Key that groups clients for per-client limits: IPv4 /32, IPv6 /64,
 * IPv4-mapped IPv6 as IPv4.  Writes 17 bytes (family + 16).
 */
void addr_client_key(const struct sockaddr *sa, unsigned char key[17]);

/* If sa is IPv4-mapped IPv6, rewrite it in place as AF_INET; returns the new length. */
socklen_t addr_unmap_v4(struct sockaddr_storage *ss, socklen_t len);

#define ADDR_REVERSE_MAX 74	/* "f.e.d...ip6.arpa" with its NUL */
/*
 * The name a PTR lookup asks for: "1.2.0.192.in-addr.arpa" or the nibbles
 * under ip6.arpa (IPv4-mapped addresses as IPv4).  0, or -1 for another
 * family.  buf holds ADDR_REVERSE_MAX.
 */
int addr_reverse_name(const struct sockaddr *sa, char buf[ADDR_REVERSE_MAX]);
/* The same host address (IPv4-mapped counts as IPv4); ports are ignored. */
bool addr_same_host(const struct sockaddr *a, const struct sockaddr *b);
/* 127.0.0.0/8, ::1 or IPv4-mapped loopback. */
bool addr_is_loopback(const struct sockaddr *sa);

#endif
