/* Unit tests for util.c and addr.c: parsers of numbers, sizes, durations, names and addresses. */
#include "config.h"

#include <arpa/inet.h>
#include <string.h>

#include "addr.h"
#include "basic.h"
#include "log.h"
#include "util.h"

static void
test_numbers(void)
{
	long long v;
	unsigned long long u;

	ok(mx_parse_duration("30s", &v) == 0 && v == 30, "duration 30s");
	ok(mx_parse_duration("10m", &v) == 0 && v == 600, "duration 10m");
	ok(mx_parse_duration("5d", &v) == 0 && v == 432000, "duration 5d");
	ok(mx_parse_duration("42", &v) == 0 && v == 42, "duration in plain seconds");
	ok(mx_parse_duration("5x", &v) == -1, "unknown duration unit refused");
	ok(mx_parse_duration("-5s", &v) == -1, "negative duration refused");
	ok(mx_parse_duration("99999999999999999999d", &v) == -1, "overflowing duration refused");
	ok(mx_parse_size("50M", &u) == 0 && u == 50ULL << 20, "size 50M");
	ok(mx_parse_size("16k", &u) == 0 && u == 16384, "size 16k");
	ok(mx_parse_size("1G", &u) == 0 && u == 1ULL << 30, "size 1G");
	ok(mx_parse_size("", &u) == -1, "empty size refused");
	ok(mx_parse_size("18446744073709551615G", &u) == -1, "overflowing size refused");
	ok(mx_parse_llong("65535", 1, 65535, &v) == 0, "number at the upper bound");
	ok(mx_parse_llong("65536", 1, 65535, &v) == -1, "number past the upper bound");
	ok(mx_parse_llong(" 1", 0, 9, &v) == -1, "leading blank refused");
}

static void
test_buf(void)
{
	struct mx_buf b;
	char small[4];

	mx_buf_init(&b, 8);
	ok(mx_buf_addstr(&b, "12345678") == 0, "buffer fills to its cap");
	ok(mx_buf_add(&b, "9", 1) == -1, "buffer refuses past its cap");
	is_string("12345678", mx_buf_cstr(&b), "buffer contents intact");
	mx_buf_free(&b);
	mx_buf_init(&b, 0);
	mx_buf_json_str(&b, "a\"b\\c\n");
	is_string("\"a\\\"b\\\\c\\u000a\"", mx_buf_cstr(&b), "JSON string escaping");
	mx_buf_free(&b);
	ok(mx_strlcpy(small, "abc", sizeof(small)) == 0, "strlcpy fits");
	ok(mx_strlcpy(small, "abcd", sizeof(small)) == -1 && strcmp(small, "abc") == 0,
	    "strlcpy reports truncation");
}

static void
test_domains(void)
{
	char out[ADDR_DOMAIN_MAX + 1], big[300];
	const char *err;

	ok(addr_domain_normalize("Example.TEST.", 13, out, &err) == 0 &&
	    strcmp(out, "example.test") == 0, "domain lower-cased, trailing dot dropped");
	ok(addr_domain_normalize("exa mple.com", 12, out, &err) == -1, "space refused");
	ok(addr_domain_normalize("a..b", 4, out, &err) == -1, "empty label refused");
	ok(addr_domain_normalize("-a.b", 4, out, &err) == -1, "leading hyphen refused");
	ok(addr_domain_normalize("a-.b", 4, out, &err) == -1, "trailing hyphen refused");
	ok(addr_domain_normalize("192.0.2.1", 9, out, &err) == -1, "IPv4 literal refused");
	ok(addr_domain_normalize("xn--bcher-kva.example", 21, out, &err) == 0, "A-label accepted");
	ok(addr_domain_normalize("b\xc3\xbc" "cher.example", 14, out, &err) == -1,
	    "U-label refused");
	memset(big, 'a', sizeof(big));
	/* 63 + 1 + 63 + 1 + 63 + 1 + 61 = 253 octets */
	big[63] = big[127] = big[191] = '.';
	ok(addr_domain_normalize(big, 253, out, &err) == 0, "253-octet name accepted");
	ok(addr_domain_normalize(big, 254, out, &err) == -1, "254-octet name refused");
	big[63] = 'a';
	ok(addr_domain_normalize(big, 100, out, &err) == -1, "64-octet label refused");
	ok(addr_domain_normalize("a\0b.com", 7, out, &err) == -1, "NUL refused");
}

static void
test_hostport(void)
{
	struct addr_hostport hp;
	struct sockaddr_storage ss;
	socklen_t len;
	const char *err;
	char buf[128];

	ok(addr_parse_hostport("[2001:DB8::10]:993", 0, &hp, &err) == 0 &&
	    hp.kind == ADDR_HOST_IPV6 && hp.port == 993 && strcmp(hp.host, "2001:db8::10") == 0,
	    "bracketed IPv6 with port");
	ok(addr_parse_hostport("[::1", 0, &hp, &err) == -1, "unterminated bracket refused");
	ok(addr_parse_hostport("[::1]:0", 0, &hp, &err) == -1, "port 0 refused");
	ok(addr_parse_hostport("[::1]:65536", 0, &hp, &err) == -1, "port 65536 refused");
	ok(addr_parse_hostport("2001:db8::1", 25, &hp, &err) == 0 && hp.port == 25,
	    "bare IPv6 literal takes the default port");
	ok(addr_parse_hostport("192.0.2.1:2525", 25, &hp, &err) == 0 &&
	    hp.kind == ADDR_HOST_IPV4 && hp.port == 2525, "IPv4 with port");
	ok(addr_parse_hostport("MX.Example.net", 25, &hp, &err) == 0 &&
	    hp.kind == ADDR_HOST_NAME && strcmp(hp.host, "mx.example.net") == 0,
	    "host name normalised");
	addr_parse_hostport("[2001:db8::10]:25", 0, &hp, &err);
	addr_hostport_format(&hp, buf, sizeof(buf));
	is_string("[2001:db8::10]:25", buf, "formatting round trip");
	ok(addr_parse_listen("[::]:25", &ss, &len, &err) == 0 && ss.ss_family == AF_INET6,
	    "listen on [::]:25");
	ok(addr_parse_listen("mx.example:25", &ss, &len, &err) == -1,
	    "listen on a name refused");
	ok(addr_parse_listen("127.0.0.1", &ss, &len, &err) == -1, "listen without port refused");
}

static void
test_classes(void)
{
	struct addr_hostport hp;
	struct sockaddr_storage ss;
	socklen_t len;
	const char *err;
	unsigned char k1[17], k2[17];
	char buf[64];
	static const struct {
		const char *addr;
		bool private;
	} cases[] = {
		{ "127.0.0.1", true }, { "10.1.2.3", true }, { "172.16.0.1", true },
		{ "192.168.1.1", true }, { "169.254.1.1", true }, { "100.64.0.1", true },
		{ "8.8.8.8", false }, { "::1", true }, { "::", true }, { "fe80::1", true },
		{ "fd00::1", true }, { "::ffff:127.0.0.1", true }, { "::ffff:8.8.8.8", false },
		{ "2a00:1450::1", false }, { "224.0.0.1", true },
	};
	size_t i;

	for (i = 0; i < MX_NELEM(cases); i++) {
		addr_parse_hostport(cases[i].addr, 1, &hp, &err);
		addr_hostport_sockaddr(&hp, &ss, &len);
		ok(addr_is_private((struct sockaddr *)&ss) == cases[i].private, "%s is %s",
		    cases[i].addr, cases[i].private ? "private" : "public");
	}
	addr_parse_hostport("[::ffff:192.0.2.7]:1", 1, &hp, &err);
	addr_hostport_sockaddr(&hp, &ss, &len);
	is_string("192.0.2.7:1", addr_format((struct sockaddr *)&ss, buf, sizeof(buf)),
	    "IPv4-mapped formatted as IPv4");
	addr_client_key((struct sockaddr *)&ss, k1);
	addr_parse_hostport("[2001:db8::25]:25", 1, &hp, &err);
	addr_hostport_sockaddr(&hp, &ss, &len);
	is_string("[2001:db8::25]:25", addr_format((struct sockaddr *)&ss, buf, sizeof(buf)),
	    "IPv6 formatted in brackets");
	addr_parse_hostport("255.0.10.99:65535", 1, &hp, &err);
	addr_hostport_sockaddr(&hp, &ss, &len);
	is_string("255.0.10.99:65535", addr_format((struct sockaddr *)&ss, buf, sizeof(buf)),
	    "IPv4 digits and port");
	addr_parse_hostport("[::ffff:192.0.2.7]:1", 1, &hp, &err);
	addr_hostport_sockaddr(&hp, &ss, &len);
	addr_client_key((struct sockaddr *)&ss, k1);
	addr_parse_hostport("192.0.2.7:2", 1, &hp, &err);
	addr_hostport_sockaddr(&hp, &ss, &len);
	addr_client_key((struct sockaddr *)&ss, k2);
	ok(memcmp(k1, k2, 17) == 0, "mapped and plain IPv4 share a client key");
	addr_parse_hostport("[2001:db8:1:2::1]:1", 1, &hp, &err);
	addr_hostport_sockaddr(&hp, &ss, &len);
	addr_client_key((struct sockaddr *)&ss, k1);
	addr_parse_hostport("[2001:db8:1:2:ffff::9]:1", 1, &hp, &err);
	addr_hostport_sockaddr(&hp, &ss, &len);
	addr_client_key((struct sockaddr *)&ss, k2);
	ok(memcmp(k1, k2, 17) == 0, "IPv6 clients grouped by /64");
	addr_parse_hostport("[2001:db8:1:3::1]:1", 1, &hp, &err);
	addr_hostport_sockaddr(&hp, &ss, &len);
	addr_client_key((struct sockaddr *)&ss, k2);
	ok(memcmp(k1, k2, 17) != 0, "different /64s differ");
}

static void
test_log_safe(void)
{
	char buf[64];

	is_string("a\\x0d\\x0ab\\x20c\\x3d", log_safe(buf, sizeof(buf), "a\r\nb c=", 7),
	    "log_safe escapes CR, LF, space and '='");
	log_safe(buf, 8, "abcdefghijkl", 12);
	is_int(7, (long long)strlen(buf), "log_safe truncates to the buffer");
}

/* A socket address from "[v6]:port" or "v4:port". */
static void
sockaddr_of(const char *s, struct sockaddr_storage *ss)
{
	struct addr_hostport hp;
	const char *err;
	socklen_t len;

	if (addr_parse_hostport(s, 1, &hp, &err) == -1 || addr_hostport_sockaddr(&hp, ss, &len) == -1)
		bail("bad test address %s", s);
}

static void
test_reverse(void)
{
	struct sockaddr_storage a, b;
	char rev[ADDR_REVERSE_MAX];

	sockaddr_of("192.0.2.7:25", &a);
	ok(addr_reverse_name((struct sockaddr *)&a, rev) == 0, "reverse name of IPv4");
	is_string("7.2.0.192.in-addr.arpa", rev, "in-addr.arpa, octets reversed");
	sockaddr_of("[::ffff:192.0.2.7]:25", &b);
	addr_reverse_name((struct sockaddr *)&b, rev);
	is_string("7.2.0.192.in-addr.arpa", rev, "IPv4-mapped asked as IPv4");
	ok(addr_same_host((struct sockaddr *)&a, (struct sockaddr *)&b),
	    "mapped and plain IPv4 are the same host");
	sockaddr_of("[2001:db8::567:89ab]:25", &a);
	addr_reverse_name((struct sockaddr *)&a, rev);
	is_string("b.a.9.8.7.6.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa", rev,
	    "ip6.arpa nibbles, lowest first (RFC 3596)");
	sockaddr_of("[2001:db8::567:89ab]:99", &b);
	ok(addr_same_host((struct sockaddr *)&a, (struct sockaddr *)&b), "ports do not matter");
	sockaddr_of("[2001:db8::567:89ac]:25", &b);
	ok(!addr_same_host((struct sockaddr *)&a, (struct sockaddr *)&b), "another address differs");
	sockaddr_of("127.3.4.5:1", &a);
	sockaddr_of("[::1]:1", &b);
	ok(addr_is_loopback((struct sockaddr *)&a) && addr_is_loopback((struct sockaddr *)&b),
	    "127/8 and ::1 are loopback");
	sockaddr_of("[::2]:1", &b);
	ok(!addr_is_loopback((struct sockaddr *)&b), "::2 is not");
}

int
main(void)
{
	plan_lazy();
	test_numbers();
	test_buf();
	test_domains();
	test_hostport();
	test_classes();
	test_reverse();
	test_log_safe();
	return 0;
}
