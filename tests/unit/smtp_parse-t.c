/*
 * Tests for the SMTP command parser, the command line splitter and the DATA
 * machine.  Splitter and DATA inputs are fed whole, one byte at a time and
 * in odd-sized chunks, and every way must give the same events, output and
 * flags.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "basic.h"
#include "smtp_parse.h"

/* Command parser ---------------------------------------------------------- */

static int
parse(const char *line, unsigned int flags, struct smtp_command *c, struct smtp_parse_error *e)
{
	memset(e, 0, sizeof(*e));
	return smtp_command_parse(line, strlen(line), flags, c, e);
}

static void
cmd_ok(const char *line, enum smtp_cmd cmd, const char *arg)
{
	struct smtp_command c;
	struct smtp_parse_error e;
	int r = parse(line, 0, &c, &e);

	ok(r == 0 && c.cmd == cmd, "accept \"%s\" as %s%s%s", line, smtp_cmd_name(cmd),
	    r == 0 ? "" : ": ", r == 0 ? "" : e.text);
	if (arg != NULL)
		is_blob(arg, strlen(arg), c.arg.ptr, c.arg.len, "  argument of \"%s\"", line);
}

static void
cmd_err(const char *line, size_t len, unsigned int flags, int code, const char *status)
{
	struct smtp_command c;
	struct smtp_parse_error e;
	char shown[80];
	int r;

	memset(&e, 0, sizeof(e));
	r = smtp_command_parse(line, len, flags, &c, &e);
	snprintf(shown, sizeof(shown), "%.*s%s", (int)(len < 60 ? len : 60), line,
	    len > 60 ? "..." : "");
	for (char *p = shown; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20)
			*p = '?';
	ok(r == -1 && e.code == code && e.status != NULL && strcmp(e.status, status) == 0 &&
	    e.text != NULL && e.text[0] != '\0',
	    "refuse \"%s\" with %d %s (got %d %s %s)", shown, code, status, r == -1 ? e.code : 0,
	    r == -1 && e.status ? e.status : "-", r == -1 && e.text ? e.text : "-");
}

static void
line_err(const char *line, int code, const char *status)
{
	cmd_err(line, strlen(line), 0, code, status);
}

/* Parse a MAIL/RCPT line and check the canonical address and relay flags. */
static void
path_ok(const char *line, unsigned int flags, const char *canon, unsigned int relay)
{
	struct smtp_command c;
	struct smtp_parse_error e;
	char buf[SMTP_MAILBOX_MAX + 1] = "";
	int r = parse(line, flags, &c, &e);

	ok(r == 0, "accept \"%s\"%s%s", line, r == 0 ? "" : ": ", r == 0 ? "" : e.text);
	if (r == 0)
		smtp_path_format(&c.path, buf, sizeof(buf));
	is_string(canon, buf, "  canonical address of \"%s\"", line);
	is_int(relay, r == 0 ? smtp_path_relay_flags(&c.path) : 0xff,
	    "  relay flags of \"%s\"", line);
}

static void
test_commands(void)
{
	struct smtp_command c;
	struct smtp_parse_error e;
	char buf[600];

	cmd_ok("HELO mx.example.org", SMTP_CMD_HELO, "mx.example.org");
	cmd_ok("ehlo mx.example.org", SMTP_CMD_EHLO, "mx.example.org");
	cmd_ok("EhLo  mx.example.org  ", SMTP_CMD_EHLO, "mx.example.org");
	cmd_ok("DATA", SMTP_CMD_DATA, "");
	cmd_ok("data ", SMTP_CMD_DATA, "");
	cmd_ok("RSET", SMTP_CMD_RSET, "");
	cmd_ok("NOOP", SMTP_CMD_NOOP, "");
	cmd_ok("NOOP anything at all", SMTP_CMD_NOOP, "anything at all");
	cmd_ok("QUIT", SMTP_CMD_QUIT, "");
	cmd_ok("VRFY user", SMTP_CMD_VRFY, "user");
	cmd_ok("EXPN list", SMTP_CMD_EXPN, "list");
	cmd_ok("HELP", SMTP_CMD_HELP, "");
	cmd_ok("HELP MAIL", SMTP_CMD_HELP, "MAIL");
	cmd_ok("STARTTLS", SMTP_CMD_STARTTLS, "");
	cmd_ok("starttls", SMTP_CMD_STARTTLS, "");
	cmd_ok("AUTH PLAIN", SMTP_CMD_AUTH, "PLAIN");

	ok(parse("EHLO mx.example.org", 0, &c, &e) == 0 && c.helo_valid, "EHLO name is valid");
	ok(parse("EHLO [192.0.2.1]", 0, &c, &e) == 0 && c.helo_valid, "EHLO IPv4 literal is valid");
	ok(parse("EHLO [IPv6:2001:db8::1]", 0, &c, &e) == 0 && c.helo_valid,
	    "EHLO IPv6 literal is valid");
	ok(parse("EHLO bad_name", 0, &c, &e) == 0 && !c.helo_valid,
	    "EHLO bad_name accepted but flagged");
	ok(parse("EHLO [999.1.1.1]", 0, &c, &e) == 0 && !c.helo_valid,
	    "EHLO bad literal accepted but flagged");
	ok(parse("EHLO h\xc3\xa9.example", 0, &c, &e) == 0 && !c.helo_valid,
	    "EHLO 8-bit name accepted but flagged");

	ok(parse("BDAT 1000", 0, &c, &e) == 0 && c.cmd == SMTP_CMD_BDAT && c.bdat_size == 1000 &&
	    !c.bdat_last, "BDAT 1000");
	ok(parse("BDAT 0 last", 0, &c, &e) == 0 && c.bdat_size == 0 && c.bdat_last, "BDAT 0 LAST");
	line_err("BDAT", 501, "5.5.4");
	line_err("BDAT x", 501, "5.5.4");
	line_err("BDAT 10 NOTLAST", 501, "5.5.4");
	line_err("BDAT 18446744073709551616", 501, "5.5.4");

	line_err("HELO", 501, "5.5.4");
	line_err("EHLO   ", 501, "5.5.4");
	line_err("DATA now", 501, "5.5.4");
	line_err("RSET x", 501, "5.5.4");
	line_err("QUIT now", 501, "5.5.4");
	line_err("STARTTLS x", 501, "5.5.4");
	line_err("VRFY", 501, "5.5.4");
	line_err("EXPN", 501, "5.5.4");
	line_err("AUTH", 501, "5.5.4");
	line_err("", 500, "5.5.2");
	line_err("FOO bar", 500, "5.5.2");
	line_err("MAILX FROM:<>", 500, "5.5.2");
	line_err("GET / HTTP/1.1", 500, "5.5.2");
	line_err(" NOOP", 500, "5.5.2");
	cmd_err("NOOP a\0b", 8, 0, 500, "5.5.2");
	cmd_err("NOOP a\rb", 8, 0, 500, "5.5.2");
	cmd_err("NOOP a\nb", 8, 0, 500, "5.5.2");
	cmd_err("NOOP\r\n", 6, 0, 500, "5.5.2");

	/* 510 octets is the longest line without its CRLF. */
	memset(buf, 'x', sizeof(buf));
	memcpy(buf, "NOOP ", 5);
	ok(smtp_command_parse(buf, SMTP_LINE_MAX - 2, 0, &c, &e) == 0, "510-octet line accepted");
	cmd_err(buf, SMTP_LINE_MAX - 1, 0, 500, "5.5.2");

	/* MAIL and RCPT may be longer: DSN adds up to 500 octets (RFC 3461 §4). */
	memset(buf, ' ', sizeof(buf));
	memcpy(buf, "RCPT TO:<u@r.test>", 18);
	memcpy(buf + 500, "NOTIFY=NEVER", 12);
	ok(smtp_command_parse(buf, 512, 0, &c, &e) == 0 && c.params.notify == SMTP_NOTIFY_NEVER,
	    "512-octet RCPT line accepted");
	{
		static char big[SMTP_COMMAND_MAX + 8];

		memset(big, ' ', sizeof(big));
		memcpy(big, "RCPT TO:<u@r.test>", 18);
		memcpy(big + SMTP_COMMAND_MAX - 2 - 12, "NOTIFY=NEVER", 12);
		ok(smtp_command_parse(big, SMTP_COMMAND_MAX - 2, 0, &c, &e) == 0,
		    "%d-octet RCPT line accepted", SMTP_COMMAND_MAX - 2);
		memcpy(big + SMTP_COMMAND_MAX - 1 - 12, "NOTIFY=NEVER", 12);
		cmd_err(big, SMTP_COMMAND_MAX - 1, 0, 500, "5.5.2");
	}

	is_string("MAIL", smtp_cmd_name(SMTP_CMD_MAIL), "smtp_cmd_name(MAIL)");
	is_string("UNKNOWN", smtp_cmd_name(SMTP_CMD_UNKNOWN), "smtp_cmd_name(UNKNOWN)");
}

static void
test_mail_rcpt(void)
{
	struct smtp_command c;
	struct smtp_parse_error e;

	path_ok("MAIL FROM:<a@b.example>", 0, "a@b.example", 0);
	path_ok("mail from:<User.Name@Example.ORG>", 0, "User.Name@example.org", 0);
	path_ok("MAIL FROM: <a@b.example>", 0, "a@b.example", 0);
	path_ok("MAIL FROM:<>", 0, "", 0);
	ok(parse("MAIL FROM:<>", 0, &c, &e) == 0 && c.path.null && c.cmd == SMTP_CMD_MAIL,
	    "null reverse path");
	path_ok("RCPT TO:<user@reg.test>", 0, "user@reg.test", 0);
	path_ok("rcpt to:<user@reg.test>", 0, "user@reg.test", 0);
	path_ok("RCPT TO: <user@reg.test>", 0, "user@reg.test", 0);
	path_ok("RCPT TO:<Postmaster>", 0, "Postmaster", 0);
	ok(parse("RCPT TO:<postmaster>", 0, &c, &e) == 0 && c.path.postmaster &&
	    c.path.kind == SMTP_DOMAIN_NONE, "bare <postmaster> flagged");
	ok(parse("RCPT TO:<postmaster@reg.test>", 0, &c, &e) == 0 && !c.path.postmaster &&
	    strcmp(c.path.domain, "reg.test") == 0, "<postmaster@domain> is an ordinary path");
	path_ok("RCPT TO:<a.b-c+d=e/f{g}~h'i#j$k&l*m?n^o_p`q|r@x.example>", 0,
	    "a.b-c+d=e/f{g}~h'i#j$k&l*m?n^o_p`q|r@x.example", 0);
	path_ok("RCPT TO:<\"a b\\\"c\"@x.example>", 0, "\"a b\\\"c\"@x.example", 0);
	ok(parse("RCPT TO:<\"a b\"@x.example>", 0, &c, &e) == 0 && c.path.quoted &&
	    strcmp(c.path.local, "\"a b\"") == 0 && c.path.local_len == 5,
	    "quoted local part kept exactly as given");
	path_ok("RCPT TO:<\"\"@x.example>", 0, "\"\"@x.example", 0);
	path_ok("RCPT TO:<user@a-b.c0.example>", 0, "user@a-b.c0.example", 0);

	line_err("RCPT TO:<>", 501, "5.1.3");
	line_err("MAIL FROM:<postmaster>", 501, "5.1.7");
	line_err("MAIL FROM:a@b.example", 501, "5.1.7");
	line_err("MAIL FROM:<a@b.example", 501, "5.1.7");
	line_err("MAIL FROM:  <a@b.example>", 501, "5.1.7");
	line_err("MAIL FROM <a@b.example>", 501, "5.5.4");
	line_err("MAIL TO:<a@b.example>", 501, "5.5.4");
	line_err("RCPT FROM:<a@b.example>", 501, "5.5.4");
	line_err("MAIL", 501, "5.5.4");
	line_err("MAIL FROM:<a@b.example>x", 501, "5.5.4");
	line_err("MAIL FROM:<a@b.example>>", 501, "5.5.4");
	line_err("RCPT TO:<user>", 501, "5.1.3");
	line_err("RCPT TO:<@reg.test>", 501, "5.1.3");
	line_err("RCPT TO:<user@>", 501, "5.1.3");
	line_err("RCPT TO:<.user@reg.test>", 501, "5.1.3");
	line_err("RCPT TO:<user.@reg.test>", 501, "5.1.3");
	line_err("RCPT TO:<us..er@reg.test>", 501, "5.1.3");
	line_err("RCPT TO:<us er@reg.test>", 501, "5.1.3");
	line_err("RCPT TO:<us(er)@reg.test>", 501, "5.1.3");
	line_err("RCPT TO:<user@reg.test.>", 501, "5.1.3");
	line_err("RCPT TO:<user@.reg.test>", 501, "5.1.3");
	line_err("RCPT TO:<user@reg..test>", 501, "5.1.3");
	line_err("RCPT TO:<user@-reg.test>", 501, "5.1.3");
	line_err("RCPT TO:<user@reg-.test>", 501, "5.1.3");
	line_err("RCPT TO:<user@re_g.test>", 501, "5.1.3");
	line_err("RCPT TO:<\"unterminated@reg.test>", 501, "5.1.3");
	line_err("RCPT TO:<\"a\\\x01\"@reg.test>", 501, "5.1.3");
	line_err("RCPT TO:<\"a\tb\"@reg.test>", 501, "5.1.3");
	line_err("RCPT TO:<@a.example:@b.example:user@reg.test>", 501, "5.1.3");
	line_err("RCPT TO:<@a.example,b.example:user@reg.test>", 501, "5.1.3");
	line_err("RCPT TO:<@:user@reg.test>", 501, "5.1.3");
	line_err("RCPT TO:<user@[127.0.0.256]>", 501, "5.1.3");
	line_err("RCPT TO:<user@[1.2.3]>", 501, "5.1.3");
	line_err("RCPT TO:<user@[01.2.3.4]>", 501, "5.1.3");
	line_err("RCPT TO:<user@[tag:content]>", 501, "5.1.3");
	line_err("RCPT TO:<user@[IPv6:zz::1]>", 501, "5.1.3");
	line_err("RCPT TO:<user@[IPv6:1.2.3.4]>", 501, "5.1.3");
	line_err("RCPT TO:<user@[127.0.0.1>", 501, "5.1.3");
	line_err("RCPT TO:<user@[]>", 501, "5.1.3");
}

static void
test_relay_tricks(void)
{
	struct smtp_command c;
	struct smtp_parse_error e;

	/* The six tricks of the issue. */
	path_ok("RCPT TO:<user%other@reg.test>", 0, "user%other@reg.test", SMTP_RELAY_PERCENT);
	path_ok("RCPT TO:<other!user@reg.test>", 0, "other!user@reg.test", SMTP_RELAY_BANG);
	path_ok("RCPT TO:<@reg.test:user@other.example>", 0, "user@other.example",
	    SMTP_RELAY_ROUTE);
	path_ok("RCPT TO:<\"user@other\"@reg.test>", 0, "\"user@other\"@reg.test",
	    SMTP_RELAY_QUOTED);
	line_err("RCPT TO:<user@other@reg.test>", 501, "5.1.3");
	path_ok("RCPT TO:<user@[127.0.0.1]>", 0, "user@[127.0.0.1]", SMTP_RELAY_LITERAL);

	/* Variations. */
	path_ok("RCPT TO:<@a.example,@b.example:user@reg.test>", 0, "user@reg.test",
	    SMTP_RELAY_ROUTE);
	path_ok("RCPT TO:<\"user%other\"@reg.test>", 0, "\"user%other\"@reg.test",
	    SMTP_RELAY_QUOTED);
	path_ok("RCPT TO:<\"other!user\"@reg.test>", 0, "\"other!user\"@reg.test",
	    SMTP_RELAY_QUOTED);
	path_ok("RCPT TO:<\"user\\@other\"@reg.test>", 0, "\"user\\@other\"@reg.test",
	    SMTP_RELAY_QUOTED);
	path_ok("RCPT TO:<a!b%c@reg.test>", 0, "a!b%c@reg.test",
	    SMTP_RELAY_BANG | SMTP_RELAY_PERCENT);
	path_ok("RCPT TO:<user@[IPv6:::1]>", 0, "user@[IPv6:::1]", SMTP_RELAY_LITERAL);
	path_ok("RCPT TO:<user@[ipv6:0:0:0:0:0:0:0:1]>", 0, "user@[IPv6:::1]",
	    SMTP_RELAY_LITERAL);
	path_ok("RCPT TO:<user@[IPv6:2001:DB8::1]>", 0, "user@[IPv6:2001:db8::1]",
	    SMTP_RELAY_LITERAL);
	path_ok("RCPT TO:<user@[IPv6:::ffff:192.0.2.1]>", 0, "user@[IPv6:::ffff:192.0.2.1]",
	    SMTP_RELAY_LITERAL);
	path_ok("RCPT TO:<\"quoted ok\"@reg.test>", 0, "\"quoted ok\"@reg.test", 0);
	line_err("RCPT TO:<user@reg.test@other.example>", 501, "5.1.3");
	line_err("RCPT TO:<user@reg.test>@other.example", 501, "5.5.4");

	ok(parse("RCPT TO:<user@[127.0.0.1]>", 0, &c, &e) == 0 &&
	    c.path.kind == SMTP_DOMAIN_IPV4 && c.path.addr4.s_addr == htonl(0x7f000001),
	    "IPv4 literal parsed to its address");
	ok(parse("RCPT TO:<user@[IPv6:::1]>", 0, &c, &e) == 0 &&
	    c.path.kind == SMTP_DOMAIN_IPV6 && c.path.addr6.s6_addr[15] == 1,
	    "IPv6 literal parsed to its address");
	ok(parse("RCPT TO:<@reg.test:user@other.example>", 0, &c, &e) == 0 &&
	    c.path.source_route && strcmp(c.path.domain, "other.example") == 0,
	    "source route dropped: the domain is the mailbox's");
}

/* A domain of exactly n octets: 63-octet labels, then a shorter one. */
static void
make_domain(char *out, size_t n)
{
	size_t i = 0;

	while (i < n) {
		size_t left = n - i, lab;

		if (left <= 63)
			lab = left;
		else if (left - 63 == 1)
			lab = 61;	/* never leave a lone "." or an empty label */
		else
			lab = 63;
		memset(out + i, 'a' + (int)(i % 26), lab);
		i += lab;
		if (i < n)
			out[i++] = '.';
	}
	out[n] = '\0';
}

static void
test_limits(void)
{
	struct smtp_command c;
	struct smtp_parse_error e;
	char local[100], dom[300], line[700];

	memset(local, 'l', 64);
	local[64] = '\0';
	snprintf(line, sizeof(line), "RCPT TO:<%s@reg.test>", local);
	ok(parse(line, 0, &c, &e) == 0 && c.path.local_len == 64, "64-octet local part accepted");
	memset(local, 'l', 65);
	local[65] = '\0';
	snprintf(line, sizeof(line), "RCPT TO:<%s@reg.test>", local);
	line_err(line, 553, "5.1.3");
	snprintf(line, sizeof(line), "MAIL FROM:<%s@reg.test>", local);
	line_err(line, 553, "5.1.7");

	/* Quotes count: "+62+" is 64 octets. */
	local[0] = '"';
	memset(local + 1, 'q', 62);
	local[63] = '"';
	local[64] = '\0';
	snprintf(line, sizeof(line), "RCPT TO:<%s@reg.test>", local);
	ok(parse(line, 0, &c, &e) == 0 && c.path.local_len == 64,
	    "64-octet quoted local part accepted");
	local[63] = 'q';
	local[64] = '"';
	local[65] = '\0';
	snprintf(line, sizeof(line), "RCPT TO:<%s@reg.test>", local);
	line_err(line, 553, "5.1.3");

	/* Labels: 63 octets, not 64. */
	memset(dom, 'd', 63);
	strcpy(dom + 63, ".example");
	snprintf(line, sizeof(line), "RCPT TO:<u@%s>", dom);
	ok(parse(line, 0, &c, &e) == 0, "63-octet label accepted");
	memset(dom, 'd', 64);
	strcpy(dom + 64, ".example");
	snprintf(line, sizeof(line), "RCPT TO:<u@%s>", dom);
	line_err(line, 501, "5.1.3");

	/*
	 * Path: 256 octets with "<" and ">".  "<u@" + 252 + ">" is 256, so a
	 * domain in a path can be 252 octets at most even though the domain
	 * limit is 255; both limits are checked, the domain's first.
	 */
	make_domain(dom, 252);
	snprintf(line, sizeof(line), "RCPT TO:<u@%s>", dom);
	ok(parse(line, 0, &c, &e) == 0 && c.path.domain_len == 252,
	    "256-octet path (252-octet domain) accepted");
	make_domain(dom, 253);
	snprintf(line, sizeof(line), "RCPT TO:<u@%s>", dom);
	ok(parse(line, 0, &c, &e) == -1 && e.code == 501 && strcmp(e.text, "Path too long") == 0,
	    "257-octet path refused");
	make_domain(dom, 255);
	snprintf(line, sizeof(line), "RCPT TO:<u@%s>", dom);
	ok(parse(line, 0, &c, &e) == -1 && e.code == 501 && strcmp(e.text, "Path too long") == 0,
	    "255-octet domain: refused as path too long");
	make_domain(dom, 256);
	snprintf(line, sizeof(line), "RCPT TO:<u@%s>", dom);
	ok(parse(line, 0, &c, &e) == -1 && e.code == 553 && strcmp(e.text, "Domain too long") == 0,
	    "256-octet domain: refused as domain too long");

	/* A source route counts towards the path. */
	make_domain(dom, 241);
	snprintf(line, sizeof(line), "RCPT TO:<@r.example:u@%s>", dom);
	ok(parse(line, 0, &c, &e) == 0, "route + mailbox in 256 octets accepted");
	snprintf(line, sizeof(line), "RCPT TO:<@rr.example:u@%s>", dom);
	ok(parse(line, 0, &c, &e) == -1 && e.code == 501 && strcmp(e.text, "Path too long") == 0,
	    "route + mailbox in 257 octets refused");
}

static void
test_params(void)
{
	struct smtp_command c;
	struct smtp_parse_error e;
	char line[700], v[600];

	ok(parse("MAIL FROM:<a@b.example> SIZE=1000 BODY=8BITMIME", 0, &c, &e) == 0 &&
	    c.params.present == (SMTP_PARAM_SIZE | SMTP_PARAM_BODY) && c.params.size == 1000 &&
	    c.params.body == SMTP_BODY_8BITMIME, "SIZE and BODY=8BITMIME");
	ok(parse("MAIL FROM:<a@b.example> body=7bit size=0", 0, &c, &e) == 0 &&
	    c.params.body == SMTP_BODY_7BIT && c.params.size == 0 &&
	    (c.params.present & SMTP_PARAM_SIZE), "lower-case keywords and values");
	ok(parse("MAIL FROM:<a@b.example>  SIZE=5   RET=HDRS  ", 0, &c, &e) == 0 &&
	    c.params.size == 5 && c.params.ret == SMTP_RET_HDRS, "extra spaces tolerated");
	ok(parse("MAIL FROM:<> SIZE=18446744073709551615", 0, &c, &e) == 0 &&
	    c.params.size == UINT64_MAX, "SIZE at 2^64-1");
	line_err("MAIL FROM:<> SIZE=18446744073709551616", 552, "5.3.4");
	line_err("MAIL FROM:<> SIZE=99999999999999999999", 552, "5.3.4");
	line_err("MAIL FROM:<> SIZE=123456789012345678901", 501, "5.5.4");
	line_err("MAIL FROM:<> SIZE=12k", 501, "5.5.4");
	line_err("MAIL FROM:<> SIZE=", 501, "5.5.4");
	line_err("MAIL FROM:<> SIZE", 501, "5.5.4");
	line_err("MAIL FROM:<> SIZE=1 SIZE=2", 501, "5.5.4");
	line_err("MAIL FROM:<> SIZE=1 size=1", 501, "5.5.4");
	line_err("MAIL FROM:<> BODY=BINARYMIME", 555, "5.5.4");
	line_err("MAIL FROM:<> BODY=8BITMIME BODY=7BIT", 501, "5.5.4");
	line_err("MAIL FROM:<> FOO=bar", 555, "5.5.4");
	line_err("MAIL FROM:<> AUTH=<>", 555, "5.5.4");
	line_err("MAIL FROM:<> NOTIFY=NEVER", 555, "5.5.4");
	line_err("MAIL FROM:<> ORCPT=rfc822;a@b", 555, "5.5.4");
	line_err("MAIL FROM:<> =x", 501, "5.5.4");
	line_err("MAIL FROM:<> -X", 501, "5.5.4");
	line_err("MAIL FROM:<> SIZE=1=2", 501, "5.5.4");

	ok(parse("MAIL FROM:<> SMTPUTF8", 0, &c, &e) == 0 &&
	    c.params.present == SMTP_PARAM_SMTPUTF8, "SMTPUTF8");
	line_err("MAIL FROM:<> SMTPUTF8=yes", 501, "5.5.4");
	line_err("MAIL FROM:<> SMTPUTF8 SMTPUTF8", 501, "5.5.4");
	ok(parse("MAIL FROM:<> RET=FULL", 0, &c, &e) == 0 && c.params.ret == SMTP_RET_FULL,
	    "RET=FULL");
	line_err("MAIL FROM:<> RET=ALL", 501, "5.5.4");

	ok(parse("MAIL FROM:<> ENVID=QQ314159+2Bx", 0, &c, &e) == 0 &&
	    strcmp(c.params.envid, "QQ314159+2Bx") == 0, "ENVID kept as xtext");
	line_err("MAIL FROM:<> ENVID=a+zz", 501, "5.5.4");
	line_err("MAIL FROM:<> ENVID=a+2", 501, "5.5.4");
	line_err("MAIL FROM:<> ENVID=caf\xc3\xa9", 501, "5.5.4");
	memset(v, 'e', 100);
	v[100] = '\0';
	snprintf(line, sizeof(line), "MAIL FROM:<> ENVID=%s", v);
	ok(parse(line, 0, &c, &e) == 0 && strlen(c.params.envid) == 100, "100-octet ENVID");
	v[100] = 'e';
	v[101] = '\0';
	snprintf(line, sizeof(line), "MAIL FROM:<> ENVID=%s", v);
	line_err(line, 501, "5.5.4");

	ok(parse("RCPT TO:<u@reg.test> NOTIFY=SUCCESS,FAILURE,DELAY", 0, &c, &e) == 0 &&
	    c.params.notify == (SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_FAILURE | SMTP_NOTIFY_DELAY),
	    "NOTIFY=SUCCESS,FAILURE,DELAY");
	ok(parse("RCPT TO:<u@reg.test> notify=never", 0, &c, &e) == 0 &&
	    c.params.notify == SMTP_NOTIFY_NEVER, "NOTIFY=never");
	line_err("RCPT TO:<u@reg.test> NOTIFY=NEVER,SUCCESS", 501, "5.5.4");
	line_err("RCPT TO:<u@reg.test> NOTIFY=SUCCESS,SUCCESS", 501, "5.5.4");
	line_err("RCPT TO:<u@reg.test> NOTIFY=SUCCESS,", 501, "5.5.4");
	line_err("RCPT TO:<u@reg.test> NOTIFY=SOMETIMES", 501, "5.5.4");
	line_err("RCPT TO:<u@reg.test> SIZE=10", 555, "5.5.4");
	line_err("RCPT TO:<u@reg.test> NOTIFY=DELAY NOTIFY=DELAY", 501, "5.5.4");

	ok(parse("RCPT TO:<u@reg.test> ORCPT=rfc822;u+40reg.test", 0, &c, &e) == 0 &&
	    strcmp(c.params.orcpt, "rfc822;u+40reg.test") == 0, "ORCPT kept as given");
	line_err("RCPT TO:<u@reg.test> ORCPT=rfc822", 501, "5.5.4");
	line_err("RCPT TO:<u@reg.test> ORCPT=;u", 501, "5.5.4");
	line_err("RCPT TO:<u@reg.test> ORCPT=rfc822;", 501, "5.5.4");
	line_err("RCPT TO:<u@reg.test> ORCPT=rfc822;a+4", 501, "5.5.4");
	memset(v, 'o', sizeof(v));
	memcpy(v, "rfc822;", 7);
	v[500] = '\0';
	snprintf(line, sizeof(line), "RCPT TO:<u@r.test> ORCPT=%s", v);
	ok(parse(line, 0, &c, &e) == 0 && strlen(c.params.orcpt) == 500, "500-octet ORCPT");
	v[500] = 'o';
	v[501] = '\0';
	snprintf(line, sizeof(line), "RCPT TO:<u@r.test> ORCPT=%s", v);
	line_err(line, 501, "5.5.4");
	line_err("RCPT TO:<u@reg.test> ORCPT=utf-8;j\xc3\xb8ran", 501, "5.5.4");
	ok(parse("RCPT TO:<u@reg.test> ORCPT=utf-8;j\xc3\xb8ran", SMTP_PARSE_SMTPUTF8, &c, &e) == 0,
	    "UTF-8 ORCPT in an SMTPUTF8 transaction");
}

static void
test_utf8(void)
{
	struct smtp_command c;
	struct smtp_parse_error e;

	line_err("MAIL FROM:<j\xc3\xb8ran@example.org>", 553, "5.6.7");
	ok(parse("MAIL FROM:<j\xc3\xb8ran@example.org> SMTPUTF8", 0, &c, &e) == 0 && c.path.utf8,
	    "UTF-8 sender with SMTPUTF8");
	line_err("RCPT TO:<\xc3\xbc@reg.test>", 553, "5.6.7");
	ok(parse("RCPT TO:<\xc3\xbc@reg.test>", SMTP_PARSE_SMTPUTF8, &c, &e) == 0,
	    "UTF-8 recipient in an SMTPUTF8 transaction");
	path_ok("RCPT TO:<USER@B\xc3\x9c" "CHER.Example>", SMTP_PARSE_SMTPUTF8,
	    "USER@b\xc3\x9c" "cher.example", 0);
	path_ok("RCPT TO:<\"\xe2\x82\xac\"@reg.test>", SMTP_PARSE_SMTPUTF8,
	    "\"\xe2\x82\xac\"@reg.test", 0);
	cmd_err("RCPT TO:<a\xc3\x28@reg.test>", 22, SMTP_PARSE_SMTPUTF8, 501, "5.1.3");
	cmd_err("RCPT TO:<a\xc0\xaf@reg.test>", 22, SMTP_PARSE_SMTPUTF8, 501, "5.1.3");
	cmd_err("RCPT TO:<a\xed\xa0\x80@reg.test>", 23, SMTP_PARSE_SMTPUTF8, 501, "5.1.3");
	cmd_err("RCPT TO:<a\xf4\x90\x80\x80@reg.test>", 24, SMTP_PARSE_SMTPUTF8, 501, "5.1.3");
	cmd_err("RCPT TO:<a\xe2\x82@reg.test>", 22, SMTP_PARSE_SMTPUTF8, 501, "5.1.3");
	cmd_err("RCPT TO:<a@b\xff.test>", 19, SMTP_PARSE_SMTPUTF8, 501, "5.1.3");
	line_err("MAIL FROM:<a\xc3\x28@b.example> SMTPUTF8", 501, "5.1.7");
}

static void
test_format(void)
{
	struct smtp_command c;
	struct smtp_parse_error e;
	char small[8];

	parse("RCPT TO:<user@reg.test>", 0, &c, &e);
	ok(smtp_path_format(&c.path, small, sizeof(small)) == -1, "format into a short buffer fails");
	parse("MAIL FROM:<>", 0, &c, &e);
	ok(smtp_path_format(&c.path, small, sizeof(small)) == 0 && small[0] == '\0',
	    "null path formats as \"\"");
}

/* Line splitter ----------------------------------------------------------- */

struct events {
	char s[4096];
	size_t len;
};

static void
ev_add(struct events *ev, const char *text)
{
	size_t n = strlen(text);

	if (n < sizeof(ev->s) - ev->len) {
		memcpy(ev->s + ev->len, text, n + 1);
		ev->len += n;
	}
}

/* Run the splitter over in, step octets at a time, like a session would. */
static void
split(const char *in, size_t len, size_t step, struct events *ev)
{
	struct smtp_line_splitter s;
	unsigned char pend[2048];
	size_t plen = 0, fed = 0;

	memset(ev, 0, sizeof(*ev));
	smtp_line_init(&s, SMTP_LINE_MAX);
	while (fed < len) {
		size_t n = len - fed < step ? len - fed : step;

		if (plen + n > sizeof(pend))
			bail("pending buffer overflow: the splitter keeps too much");
		memcpy(pend + plen, in + fed, n);
		plen += n;
		fed += n;
		for (;;) {
			struct mx_view line;
			char text[600];
			size_t used;
			unsigned int errs;
			enum smtp_line_result r;

			r = smtp_line_next(&s, pend, plen, &line, &used, &errs);
			if (used > plen)
				bail("splitter consumed more than it was given");
			if (r == SMTP_LINE_OK) {
				snprintf(text, sizeof(text), "OK[%.*s]", (int)line.len,
				    (const char *)line.ptr);
				ev_add(ev, text);
			} else if (r == SMTP_LINE_BAD) {
				snprintf(text, sizeof(text), "BAD[%x]", errs);
				ev_add(ev, text);
			}
			memmove(pend, pend + used, plen - used);
			plen -= used;
			if (r == SMTP_LINE_MORE)
				break;
		}
	}
	if (plen > SMTP_LINE_MAX)
		bail("splitter left %zu octets pending", plen);
}

static void
split_check(const char *name, const char *in, size_t len, const char *want)
{
	static const size_t steps[] = { 1, 2, 3, 7, 64 };
	struct events whole, part;
	size_t i;

	split(in, len, len == 0 ? 1 : len, &whole);
	is_string(want, whole.s, "splitter: %s (whole)", name);
	for (i = 0; i < MX_NELEM(steps); i++) {
		split(in, len, steps[i], &part);
		is_string(whole.s, part.s, "splitter: %s (%zu at a time)", name, steps[i]);
	}
}

static void
test_splitter(void)
{
	static char buf[2000];
	char want[600];
	size_t n;

	split_check("two lines", "EHLO a\r\nMAIL FROM:<>\r\n", 22, "OK[EHLO a]OK[MAIL FROM:<>]");
	split_check("empty line", "\r\nQUIT\r\n", 8, "OK[]OK[QUIT]");
	split_check("bare LF ends a bad line", "NOOP\nRSET\r\n", 11, "BAD[2]OK[RSET]");
	split_check("bare CR does not end a line", "NO\rOP\r\nRSET\r\n", 13, "BAD[1]OK[RSET]");
	split_check("CR CR LF", "\r\r\nQUIT\r\n", 9, "BAD[1]OK[QUIT]");
	split_check("bare CR then bare LF", "A\rB\nQUIT\r\n", 10, "BAD[3]OK[QUIT]");
	split_check("NUL", "A\0B\r\nQUIT\r\n", 11, "BAD[4]OK[QUIT]");
	split_check("unterminated", "QUIT", 4, "");
	split_check("trailing CR", "QUIT\r", 5, "");
	split_check("STARTTLS then RSET in one packet", "STARTTLS\r\nRSET\r\n", 16,
	    "OK[STARTTLS]OK[RSET]");

	/* 510 + CRLF is the longest line; 511 + CRLF is discarded whole. */
	memset(buf, 'x', sizeof(buf));
	memcpy(buf + 510, "\r\nQUIT\r\n", 8);
	snprintf(want, sizeof(want), "OK[%.510s]OK[QUIT]", buf);
	split_check("512-octet line", buf, 518, want);
	memset(buf, 'x', sizeof(buf));
	memcpy(buf + 511, "\r\nQUIT\r\n", 8);
	split_check("513-octet line", buf, 519, "BAD[8]OK[QUIT]");
	memset(buf, 'x', sizeof(buf));
	memcpy(buf + 600, "RSET\r\nQUIT\r\n", 12);
	split_check("over-long line hiding a command", buf, 612, "BAD[8]OK[QUIT]");
	memset(buf, 'x', sizeof(buf));
	buf[3] = '\r';
	memcpy(buf + 1500, "RSET\nQUIT\r\n", 11);
	split_check("over-long line with bare CR, ended by LF", buf, 1511, "BAD[9]OK[QUIT]");
	n = 1500;
	memset(buf, 'y', n);
	split_check("over-long unterminated", buf, n, "");
}

/* DATA machine ------------------------------------------------------------ */

struct sink {
	unsigned char out[8192];
	size_t len;
	bool overflow;
};

static void
sink_emit(void *arg, const unsigned char *p, size_t n)
{
	struct sink *k = arg;

	if (n > sizeof(k->out) - k->len) {
		k->overflow = true;
		return;
	}
	memcpy(k->out + k->len, p, n);
	k->len += n;
}

struct data_result {
	struct sink sink;
	unsigned int flags;
	unsigned int received;
	uint64_t size;
	bool done;
	size_t rest;	/* octets after the end of data */
};

static void
data_run(const char *in, size_t len, size_t step, uint64_t max, struct data_result *res)
{
	struct smtp_data d;
	size_t fed = 0;

	memset(res, 0, sizeof(*res));
	smtp_data_init(&d, max, sink_emit, &res->sink);
	while (fed < len) {
		size_t n = len - fed < step ? len - fed : step, used;

		if (smtp_data_feed(&d, (const unsigned char *)in + fed, n, &used) ==
		    SMTP_DATA_DONE) {
			res->done = true;
			res->rest = len - fed - used;
			break;
		}
		if (used != n)
			bail("DATA machine consumed %zu of %zu without finishing", used, n);
		fed += n;
	}
	res->flags = d.flags;
	res->received = d.received;
	res->size = d.size;
	if (d.size != res->sink.len)
		bail("DATA size %llu but %zu octets emitted", (unsigned long long)d.size,
		    res->sink.len);
}

static void
data_check(const char *name, const char *in, size_t len, uint64_t max, const char *want,
    size_t wlen, unsigned int flags, bool done, size_t rest, unsigned int received)
{
	static const size_t steps[] = { 1, 2, 3, 5, 7, 64 };
	struct data_result whole, part;
	size_t i;
	bool same = true;

	data_run(in, len, len == 0 ? 1 : len, max, &whole);
	is_blob(want, wlen, whole.sink.out, whole.sink.len, "DATA %s: output", name);
	is_int(flags, whole.flags, "DATA %s: flags", name);
	is_int(done, whole.done, "DATA %s: %s", name, done ? "ends" : "does not end");
	is_int(rest, whole.rest, "DATA %s: octets left after the end", name);
	is_int(received, whole.received, "DATA %s: Received: count", name);
	for (i = 0; i < MX_NELEM(steps); i++) {
		data_run(in, len, steps[i], max, &part);
		if (part.sink.len != whole.sink.len ||
		    memcmp(part.sink.out, whole.sink.out, whole.sink.len) != 0 ||
		    part.flags != whole.flags || part.done != whole.done ||
		    part.rest != whole.rest || part.received != whole.received) {
			diag("DATA %s differs when fed %zu at a time", name, steps[i]);
			same = false;
		}
	}
	ok(same, "DATA %s: same result fed 1, 2, 3, 5, 7, 64 at a time", name);
}

#define S(x) x, sizeof(x) - 1

static void
test_data_basic(void)
{
	data_check("simple", S("Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n"), 0,
	    S("Subject: x\r\n\r\nbody\r\n"), 0, true, 6, 0);
	data_check("empty", S(".\r\n"), 0, S(""), 0, true, 0, 0);
	data_check("only CRLF", S("\r\n.\r\n"), 0, S("\r\n"), 0, true, 0, 0);
	data_check("unstuffing", S("..leading dot\r\na\r\n..\r\n...\r\n.\r\n"), 0,
	    S(".leading dot\r\na\r\n.\r\n..\r\n"), 0, true, 0, 0);
	data_check("dot inside lines", S("a.b\r\n.x.\r\n.\r\n"), 0, S("a.b\r\nx.\r\n"), 0, true, 0,
	    0);
	data_check("not finished", S("a\r\n."), 0, S("a\r\n"), 0, false, 0, 0);
	data_check("not finished after .CR", S("a\r\n.\r"), 0, S("a\r\n"), 0, false, 0, 0);
	data_check("pipelined after end", S("x\r\n.\r\nMAIL FROM:<>\r\nRCPT TO:<a@b>\r\n"), 0,
	    S("x\r\n"), 0, true, 29, 0);
	data_check("NUL is informational", S("a\0b\r\n.\r\n"), 0, S("a\0b\r\n"), SMTP_DATA_NUL,
	    true, 0, 0);
	data_check("8-bit passes", S("caf\xc3\xa9\r\n.\r\n"), 0, S("caf\xc3\xa9\r\n"), 0, true, 0,
	    0);
}

static void
test_data_smuggling(void)
{
	static const struct {
		const char *name;
		const char *in;
		unsigned int flags;
	} v[] = {
		{ "\\n.\\n", "a\r\nb\n.\nMAIL FROM:<x@y>\r\n", SMTP_DATA_BARE_LF },
		{ "\\r.\\r", "a\r\nb\r.\rMAIL FROM:<x@y>\r\n", SMTP_DATA_BARE_CR },
		{ "\\n.\\r\\n", "a\r\nb\n.\r\nMAIL FROM:<x@y>\r\n", SMTP_DATA_BARE_LF },
		{ "\\r\\n.\\n", "a\r\nb\r\n.\nMAIL FROM:<x@y>\r\n", SMTP_DATA_BARE_LF },
		{ "\\r.\\r\\n", "a\r\nb\r.\r\nMAIL FROM:<x@y>\r\n", SMTP_DATA_BARE_CR },
		{ "\\r\\n.\\r", "a\r\nb\r\n.\rMAIL FROM:<x@y>\r\n", SMTP_DATA_BARE_CR },
		{ "\\n\\n.\\n\\n", "a\n\n.\n\nMAIL FROM:<x@y>\r\n", SMTP_DATA_BARE_LF },
		{ "\\r\\n.\\r\\r\\n", "a\r\n.\r\r\nMAIL FROM:<x@y>\r\n", SMTP_DATA_BARE_CR },
		{ "\\r\\n\\n.\\r\\n", "a\r\n\n.\r\nMAIL FROM:<x@y>\r\n", SMTP_DATA_BARE_LF },
		{ "leading \\n.\\r\\n", "\n.\r\nMAIL FROM:<x@y>\r\n", SMTP_DATA_BARE_LF },
	};
	static const char tail[] = "RCPT TO:<victim@reg.test>\r\nDATA\r\nevil\r\n.\r\nQUIT\r\n";
	char in[512], want[512];
	size_t i;

	/* A bare CR just before a real CRLF.CRLF: the data ends there, flagged. */
	data_check("bare CR before the real end", S("a\r\r\n.\r\nMAIL FROM:<x@y>\r\n"), 0,
	    S("a\r\r\n"), SMTP_DATA_BARE_CR, true, 17, 0);

	for (i = 0; i < MX_NELEM(v); i++) {
		size_t ilen, wlen;
		char name[64];

		/*
		 * Everything up to the one real CRLF.CRLF is message content:
		 * the smuggled commands are data, and only QUIT is left over.
		 */
		ilen = (size_t)snprintf(in, sizeof(in), "%s%s", v[i].in, tail);
		wlen = ilen - strlen(".\r\nQUIT\r\n");
		memcpy(want, in, wlen);
		want[wlen] = '\0';
		/* The unstuffer drops a dot right after a real CRLF. */
		if (strncmp(v[i].in, "a\r\nb\r\n.", 7) == 0 || strncmp(v[i].in, "a\r\n.", 4) == 0) {
			char *dot = strstr(want, "\r\n.") + 2;

			memmove(dot, dot + 1, wlen - (size_t)(dot + 1 - want));
			wlen--;
		}
		snprintf(name, sizeof(name), "smuggling %s", v[i].name);
		data_check(name, in, ilen, 0, want, wlen, v[i].flags, true, 6, 0);
	}
}

static void
test_data_limits(void)
{
	static char in[3000], want[3000];
	size_t n;

	/* 998 octets + CRLF = 1000 is fine; 999 + CRLF is not. */
	memset(in, 'x', 998);
	memcpy(in + 998, "\r\n.\r\n", 5);
	data_check("1000-octet line", in, 1003, 0, in, 1000, 0, true, 0, 0);
	memset(in, 'x', 999);
	memcpy(in + 999, "\r\n.\r\n", 5);
	data_check("1001-octet line", in, 1004, 0, in, 1001, SMTP_DATA_LINE_TOO_LONG, true, 0, 0);
	/* The stuffing dot does not count (RFC 5321 §4.5.3.1.6). */
	in[0] = in[1] = '.';
	memset(in + 2, 'x', 997);
	memcpy(in + 999, "\r\n.\r\n", 5);
	memcpy(want, in + 1, 1000);
	data_check("1000-octet line with a stuffed dot", in, 1004, 0, want, 1000, 0, true, 0, 0);
	/* A long line that never ends is flagged while it runs. */
	memset(in, 'z', 2000);
	data_check("endless line", in, 2000, 0, in, 2000, SMTP_DATA_LINE_TOO_LONG, false, 0, 0);

	n = (size_t)snprintf(in, sizeof(in), "0123456\r\n.\r\n");
	data_check("size at the cap", in, n, 9, in, 9, 0, true, 0, 0);
	data_check("size over the cap", in, n, 8, in, 9, SMTP_DATA_TOO_BIG, true, 0, 0);
}

static void
test_data_received(void)
{
	static char in[8192];
	size_t n = 0, i;

	data_check("Received: counting",
	    S("Received: a\r\nreceived : b\r\nRECEIVED:c\r\nX-Received: d\r\n"
	    "ReceivedX: e\r\nReceived\t:f\r\n Received: folded\r\n\r\n"
	    "Received: in the body\r\n.\r\n"), 0,
	    S("Received: a\r\nreceived : b\r\nRECEIVED:c\r\nX-Received: d\r\n"
	    "ReceivedX: e\r\nReceived\t:f\r\n Received: folded\r\n\r\n"
	    "Received: in the body\r\n"), 0, true, 0, 4);
	data_check("stuffed Received", S("..Received: x\r\n.Received: y\r\n.\r\n"), 0,
	    S(".Received: x\r\nReceived: y\r\n"), 0, true, 0, 1);
	data_check("Received after bare LF", S("X: 1\nReceived: y\r\n.\r\n"), 0,
	    S("X: 1\nReceived: y\r\n"), SMTP_DATA_BARE_LF, true, 0, 0);

	for (i = 0; i < 101; i++)
		n += (size_t)snprintf(in + n, sizeof(in) - n, "Received: from h%zu\r\n", i);
	n += (size_t)snprintf(in + n, sizeof(in) - n, "\r\nbody\r\n.\r\n");
	data_check("101 Received", in, n, 0, in, n - 3, 0, true, 0, 101);
}

static void
test_data_done_twice(void)
{
	struct smtp_data d;
	size_t used;

	smtp_data_init(&d, 0, NULL, NULL);
	ok(smtp_data_feed(&d, (const unsigned char *)".\r\nQUIT\r\n", 9, &used) ==
	    SMTP_DATA_DONE && used == 3 && d.done, "DATA ends, no emit callback needed");
	ok(smtp_data_feed(&d, (const unsigned char *)"x", 1, &used) == SMTP_DATA_DONE &&
	    used == 0, "a finished DATA machine consumes nothing");
}

int
main(void)
{
	plan_lazy();
	test_commands();
	test_mail_rcpt();
	test_relay_tricks();
	test_limits();
	test_params();
	test_utf8();
	test_format();
	test_splitter();
	test_data_basic();
	test_data_smuggling();
	test_data_limits();
	test_data_received();
	test_data_done_twice();
	return 0;
}
