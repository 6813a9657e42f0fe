/*
 * Domain names and socket addresses.  Everything here parses operator or
 * network text, so every length is checked before a byte is copied and the
 * result is normalised (lower case, no trailing dot) before anyone compares
 * it.  No DNS: host names are validated, not resolved.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "util.h"

static bool
is_ldh(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	    c == '-';
}

int
addr_domain_normalize(const char *in, size_t inlen, char *out, const char **err)
{
	size_t i, label = 0, o = 0;
	bool numeric_label = true;

	if (inlen > 0 && in[inlen - 1] == '.')
		inlen--;
	if (inlen == 0) {
		*err = "empty domain name";
		return -1;
	}
	if (inlen > ADDR_DOMAIN_MAX) {
		*err = "domain name longer than 253 octets";
		return -1;
	}
	for (i = 0; i < inlen; i++) {
		unsigned char c = (unsigned char)in[i];

		if (c == '.') {
			if (label == 0) {
				*err = "empty label in domain name";
				return -1;
			}
			if (in[i - 1] == '-') {
				*err = "label ends with a hyphen";
				return -1;
			}
			label = 0;
			numeric_label = true;
			out[o++] = '.';
			continue;
		}
		if (!is_ldh(c)) {
			*err = c >= 0x80 ? "non-ASCII domain name (give IDNs as A-labels, xn--...)" :
			    "invalid character in domain name";
			return -1;
		}
		if (label == 0 && c == '-') {
			*err = "label starts with a hyphen";
			return -1;
		}
		if (++label > 63) {
			*err = "label longer than 63 octets";
			return -1;
		}
		if (c < '0' || c > '9')
			numeric_label = false;
		out[o++] = (char)((c >= 'A' && c <= 'Z') ? c - 'A' + 'a' : c);
	}
	if (in[inlen - 1] == '-') {
		*err = "label ends with a hyphen";
		return -1;
	}
	if (numeric_label) {
		*err = "all-numeric top-level label (an IP address is not a domain)";
		return -1;
	}
	out[o] = '\0';
	return 0;
}

static int
parse_port(const char *s, uint16_t *port)
{
	long long v;

	if (mx_parse_llong(s, 1, 65535, &v) == -1 || s[0] == '+' || s[0] == '-')
		return -1;
	*port = (uint16_t)v;
	return 0;
}

int
addr_parse_hostport(const char *s, uint16_t default_port, struct addr_hostport *hp,
    const char **err)
{
	char host[ADDR_HOST_MAX];
	const char *port = NULL, *colon;
	size_t hlen;
	struct in6_addr a6;
	struct in_addr a4;

	memset(hp, 0, sizeof(*hp));
	if (s == NULL || *s == '\0') {
		*err = "empty address";
		return -1;
	}
	if (mx_str_has_ctl(s)) {
		*err = "control character in address";
		return -1;
	}
	if (s[0] == '[') {
		const char *close = strchr(s, ']');

		if (close == NULL) {
			*err = "missing ']' after IPv6 address";
			return -1;
		}
		hlen = (size_t)(close - s - 1);
		if (hlen == 0 || hlen >= sizeof(host)) {
			*err = "bad IPv6 address";
			return -1;
		}
		memcpy(host, s + 1, hlen);
		host[hlen] = '\0';
		if (inet_pton(AF_INET6, host, &a6) != 1) {
			*err = "bad IPv6 address";
			return -1;
		}
		if (close[1] == ':')
			port = close + 2;
		else if (close[1] != '\0') {
			*err = "junk after ']'";
			return -1;
		}
		hp->kind = ADDR_HOST_IPV6;
		inet_ntop(AF_INET6, &a6, hp->host, sizeof(hp->host));
	} else if (strchr(s, ':') != strrchr(s, ':')) {
		/* Two or more colons: a bare IPv6 literal, which cannot carry a port. */
		if (strlen(s) >= sizeof(host) || inet_pton(AF_INET6, s, &a6) != 1) {
			*err = "bad IPv6 address (write it as [ADDRESS]:PORT)";
			return -1;
		}
		hp->kind = ADDR_HOST_IPV6;
		inet_ntop(AF_INET6, &a6, hp->host, sizeof(hp->host));
	} else {
		colon = strchr(s, ':');
		hlen = colon ? (size_t)(colon - s) : strlen(s);
		if (colon)
			port = colon + 1;
		if (hlen == 0 || hlen >= sizeof(host)) {
			*err = hlen == 0 ? "empty host name" : "host name too long";
			return -1;
		}
		memcpy(host, s, hlen);
		host[hlen] = '\0';
		if (inet_pton(AF_INET, host, &a4) == 1) {
			hp->kind = ADDR_HOST_IPV4;
			inet_ntop(AF_INET, &a4, hp->host, sizeof(hp->host));
		} else {
			hp->kind = ADDR_HOST_NAME;
			if (addr_domain_normalize(host, hlen, hp->host, err) == -1)
				return -1;
		}
	}
	if (port != NULL) {
		if (parse_port(port, &hp->port) == -1) {
			*err = "port must be a number from 1 to 65535";
			return -1;
		}
	} else
		hp->port = default_port;
	return 0;
}

void
addr_hostport_format(const struct addr_hostport *hp, char *buf, size_t size)
{
	const char *l = hp->kind == ADDR_HOST_IPV6 ? "[" : "";
	const char *r = hp->kind == ADDR_HOST_IPV6 ? "]" : "";

	if (hp->port != 0)
		snprintf(buf, size, "%s%s%s:%u", l, hp->host, r, hp->port);
	else
		snprintf(buf, size, "%s%s%s", l, hp->host, r);
}

int
addr_hostport_sockaddr(const struct addr_hostport *hp, struct sockaddr_storage *ss,
    socklen_t *sslen)
{
	memset(ss, 0, sizeof(*ss));
	if (hp->kind == ADDR_HOST_IPV6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;

		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(hp->port);
		if (inet_pton(AF_INET6, hp->host, &s6->sin6_addr) != 1)
			return -1;
		*sslen = sizeof(*s6);
		return 0;
	}
	if (hp->kind == ADDR_HOST_IPV4) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)ss;

		s4->sin_family = AF_INET;
		s4->sin_port = htons(hp->port);
		if (inet_pton(AF_INET, hp->host, &s4->sin_addr) != 1)
			return -1;
		*sslen = sizeof(*s4);
		return 0;
	}
	errno = EINVAL;
	return -1;
}

int
addr_parse_listen(const char *s, struct sockaddr_storage *ss, socklen_t *sslen,
    const char **err)
{
	struct addr_hostport hp;

	if (addr_parse_hostport(s, 0, &hp, err) == -1)
		return -1;
	if (hp.kind == ADDR_HOST_NAME) {
		*err = "listen address must be numeric ([::]:25, 0.0.0.0:25)";
		return -1;
	}
	if (hp.port == 0) {
		*err = "listen address needs a port";
		return -1;
	}
	return addr_hostport_sockaddr(&hp, ss, sslen);
}

static const unsigned char v4mapped_prefix[12] = {
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff
};

/* Decimal digits of v into out; returns the count.  Used on the per-connection log path. */
static size_t
fmt_uint(unsigned v, char *out)
{
	char tmp[10];
	size_t n = 0, i;

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0);
	for (i = 0; i < n; i++)
		out[i] = tmp[n - 1 - i];
	return n;
}

/* "a.b.c.d" into out (16 bytes), without printf: glibc's inet_ntop formats IPv4 with sprintf. */
static size_t
fmt_v4_raw(const unsigned char *a, char *out)
{
	size_t n = 0;
	int i;

	for (i = 0; i < 4; i++) {
		if (i > 0)
			out[n++] = '.';
		n += fmt_uint(a[i], out + n);
	}
	out[n] = '\0';
	return n;
}

static void
fmt_v4(const unsigned char *a, char *buf, size_t size)
{
	char tmp[16];

	fmt_v4_raw(a, tmp);
	if (mx_strlcpy(buf, tmp, size) == -1 && size > 0)
		buf[0] = '\0';
}

const char *
addr_format_ip(const struct sockaddr *sa, char *buf, size_t size)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;

		fmt_v4((const unsigned char *)&s4->sin_addr, buf, size);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;

		if (memcmp(s6->sin6_addr.s6_addr, v4mapped_prefix, 12) == 0) {
			fmt_v4(s6->sin6_addr.s6_addr + 12, buf, size);
		} else if (inet_ntop(AF_INET6, &s6->sin6_addr, buf, (socklen_t)size) == NULL)
			snprintf(buf, size, "?");
	} else if (sa->sa_family == AF_UNIX)
		snprintf(buf, size, "local");
	else
		snprintf(buf, size, "?");
	return buf;
}

const char *
addr_format(const struct sockaddr *sa, char *buf, size_t size)
{
	char ip[INET6_ADDRSTRLEN];
	unsigned port;

	char out[ADDR_STR_MAX];
	size_t n;

	/* The access log formats every client: IPv4 goes straight into out. */
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;

		n = fmt_v4_raw((const unsigned char *)&s4->sin_addr, out);
		out[n++] = ':';
		n += fmt_uint(ntohs(s4->sin_port), out + n);
		out[n] = '\0';
		if (mx_strlcpy(buf, out, size) == -1 && size > 0)
			buf[0] = '\0';
		return buf;
	}
	addr_format_ip(sa, ip, sizeof(ip));
	if (sa->sa_family != AF_INET6) {
		mx_strlcpy(buf, ip, size);
		return buf;
	}
	port = ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
	n = 0;
	if (strchr(ip, ':') != NULL) {
		out[n++] = '[';
		n += strlen(ip);
		memcpy(out + 1, ip, n - 1);
		out[n++] = ']';
	} else {
		n = strlen(ip);
		memcpy(out, ip, n);
	}
	out[n++] = ':';
	n += fmt_uint(port, out + n);
	out[n] = '\0';
	if (mx_strlcpy(buf, out, size) == -1 && size > 0)
		buf[0] = '\0';
	return buf;
}

static bool
v4_private(const unsigned char *a)
{
	return a[0] == 0 || a[0] == 10 || a[0] == 127 ||
	    (a[0] == 100 && (a[1] & 0xc0) == 64) ||	/* 100.64/10 CGNAT */
	    (a[0] == 169 && a[1] == 254) ||
	    (a[0] == 172 && (a[1] & 0xf0) == 16) ||
	    (a[0] == 192 && a[1] == 0 && a[2] == 0) ||	/* 192.0.0/24 IETF */
	    (a[0] == 192 && a[1] == 0 && a[2] == 2) ||	/* TEST-NET-1 */
	    (a[0] == 192 && a[1] == 168) ||
	    (a[0] == 198 && (a[1] & 0xfe) == 18) ||	/* benchmarking */
	    (a[0] == 198 && a[1] == 51 && a[2] == 100) ||
	    (a[0] == 203 && a[1] == 0 && a[2] == 113) ||
	    a[0] >= 224;				/* multicast, reserved, broadcast */
}

bool
addr_is_private(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return v4_private((const unsigned char *)
		    &((const struct sockaddr_in *)sa)->sin_addr);
	if (sa->sa_family == AF_INET6) {
		const unsigned char *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
		static const unsigned char zero[16];

		if (memcmp(a, v4mapped_prefix, 12) == 0)
			return v4_private(a + 12);
		if (memcmp(a, zero, 15) == 0)		/* :: and ::1 */
			return true;
		if ((a[0] & 0xfe) == 0xfc)		/* fc00::/7 ULA */
			return true;
		if (a[0] == 0xfe && (a[1] & 0xc0) == 0x80)	/* fe80::/10 */
			return true;
		if (a[0] == 0xfe && (a[1] & 0xc0) == 0xc0)	/* fec0::/10 site-local */
			return true;
		if (a[0] == 0xff)			/* multicast */
			return true;
		if (a[0] == 0x20 && a[1] == 0x01 && a[2] == 0x0d && a[3] == 0xb8)
			return true;			/* 2001:db8::/32 documentation */
		if (a[0] == 0x00 && a[1] == 0x64 && a[2] == 0xff && a[3] == 0x9b)
			return v4_private(a + 12);	/* NAT64 of a private v4 */
		return false;
	}
	return true;
}

void
addr_client_key(const struct sockaddr *sa, unsigned char key[17])
{
	memset(key, 0, 17);
	if (sa->sa_family == AF_INET) {
		key[0] = 4;
		memcpy(key + 1, &((const struct sockaddr_in *)sa)->sin_addr, 4);
	} else if (sa->sa_family == AF_INET6) {
		const unsigned char *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;

		if (memcmp(a, v4mapped_prefix, 12) == 0) {
			key[0] = 4;
			memcpy(key + 1, a + 12, 4);
		} else {
			key[0] = 6;
			memcpy(key + 1, a, 8);	/* group by /64 */
		}
	}
}

socklen_t
addr_unmap_v4(struct sockaddr_storage *ss, socklen_t len)
{
	struct sockaddr_in6 s6;
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;

	if (ss->ss_family != AF_INET6)
		return len;
	memcpy(&s6, ss, sizeof(s6));
	if (memcmp(s6.sin6_addr.s6_addr, v4mapped_prefix, 12) != 0)
		return len;
	memset(ss, 0, sizeof(*ss));
	s4->sin_family = AF_INET;
	s4->sin_port = s6.sin6_port;
	memcpy(&s4->sin_addr, s6.sin6_addr.s6_addr + 12, 4);
	return sizeof(*s4);
}

/* The host part as 4 or 16 octets; IPv4-mapped IPv6 as its 4.  0 for other families. */
static size_t
host_octets(const struct sockaddr *sa, const unsigned char **p)
{
	if (sa->sa_family == AF_INET) {
		*p = (const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr;
		return 4;
	}
	if (sa->sa_family == AF_INET6) {
		*p = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
		if (memcmp(*p, v4mapped_prefix, 12) == 0) {
			*p += 12;
			return 4;
		}
		return 16;
	}
	return 0;
}

int
addr_reverse_name(const struct sockaddr *sa, char buf[ADDR_REVERSE_MAX])
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *a;
	size_t n = host_octets(sa, &a), i, o = 0;

	if (n == 4) {
		snprintf(buf, ADDR_REVERSE_MAX, "%u.%u.%u.%u.in-addr.arpa", a[3], a[2], a[1],
		    a[0]);
		return 0;
	}
	if (n != 16)
		return -1;
	for (i = 16; i > 0; i--) {
		buf[o++] = hex[a[i - 1] & 0x0f];
		buf[o++] = '.';
		buf[o++] = hex[a[i - 1] >> 4];
		buf[o++] = '.';
	}
	memcpy(buf + o, "ip6.arpa", sizeof("ip6.arpa"));
	return 0;
}

bool
addr_same_host(const struct sockaddr *a, const struct sockaddr *b)
{
	const unsigned char *pa = NULL, *pb = NULL;
	size_t na = host_octets(a, &pa), nb = host_octets(b, &pb);

	return na != 0 && na == nb && memcmp(pa, pb, na) == 0;
}

bool
addr_is_loopback(const struct sockaddr *sa)
{
	static const unsigned char one[16] = { [15] = 1 };
	const unsigned char *p;
	size_t n = host_octets(sa, &p);

	return (n == 4 && p[0] == 127) || (n == 16 && memcmp(p, one, 16) == 0);
}
