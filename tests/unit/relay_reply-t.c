/*
 * Tests for the relay client's reply parser: single and multi-line replies,
 * enhanced status codes, pipelined replies back to back, every malformed
 * shape a hostile primary can send (code changes, bare CR, NUL, long lines,
 * too many lines, missing codes), each fed whole and then one octet at a
 * time, plus the summary line and the EHLO keywords.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "basic.h"
#include "relay_reply.h"
#include "util.h"

struct outcome {
	enum relay_reply_result res;
	size_t consumed;	/* total, over all calls */
	struct relay_reply reply;
	const char *error;
};

/* Feed in pieces of `step` octets (0: whole) until DONE or BAD. */
static struct outcome
feed(const char *in, size_t len, size_t step)
{
	struct relay_reply_parser *p = malloc(sizeof(*p));
	struct outcome o;
	size_t off = 0, n, used;

	if (p == NULL)
		bail("out of memory");
	memset(&o, 0, sizeof(o));
	relay_reply_init(p);
	o.res = RELAY_REPLY_MORE;
	while (off < len) {
		n = step == 0 ? len - off : (len - off < step ? len - off : step);
		o.res = relay_reply_feed(p, (const unsigned char *)in + off, n, &used, &o.reply);
		if (o.res == RELAY_REPLY_BAD) {
			o.error = p->error;
			break;
		}
		off += used;
		if (o.res == RELAY_REPLY_DONE)
			break;
		if (used != n)
			bail("MORE without consuming everything");
	}
	o.consumed = off;
	free(p);
	return o;
}

static void
check_good(const char *name, const char *in, int code, const char *status, size_t nlines,
    const char *summary, size_t consumed)
{
	static const size_t steps[] = { 0, 1, 2, 7 };
	char sum[RELAY_REPLY_SUMMARY_MAX];
	size_t i;

	for (i = 0; i < MX_NELEM(steps); i++) {
		struct outcome o = feed(in, strlen(in), steps[i]);

		if (!ok(o.res == RELAY_REPLY_DONE, "%s (step %zu): done", name, steps[i])) {
			diag("error: %s", o.error ? o.error : "(more)");
			continue;
		}
		is_int(code, o.reply.code, "%s (step %zu): code", name, steps[i]);
		is_string(status, o.reply.status, "%s (step %zu): status", name, steps[i]);
		is_int((long long)nlines, (long long)o.reply.nlines, "%s (step %zu): lines", name,
		    steps[i]);
		is_string(summary, relay_reply_summary(&o.reply, sum, sizeof(sum)),
		    "%s (step %zu): summary", name, steps[i]);
		is_int((long long)consumed, (long long)o.consumed, "%s (step %zu): consumed", name,
		    steps[i]);
	}
}

static void
check_bad(const char *name, const char *in, size_t len, const char *why)
{
	static const size_t steps[] = { 0, 1, 3 };
	size_t i;

	for (i = 0; i < MX_NELEM(steps); i++) {
		struct outcome o = feed(in, len, steps[i]);

		if (!ok(o.res == RELAY_REPLY_BAD, "%s (step %zu): refused", name, steps[i]))
			continue;
		is_string(why, o.error, "%s (step %zu): reason", name, steps[i]);
	}
}

static void
test_incomplete(void)
{
	struct outcome o;

	o = feed("250-first\r\n250 sec", 18, 0);
	is_int(RELAY_REPLY_MORE, o.res, "incomplete multi-line reply: more");
	is_int(18, (long long)o.consumed, "incomplete: everything consumed");
	o = feed("250 ok\r", 7, 1);
	is_int(RELAY_REPLY_MORE, o.res, "CR at the end of input: more");
}

static void
test_pipelined(void)
{
	const char *in = "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 <x@y>: no\r\n354 go\r\n";
	struct relay_reply_parser p;
	struct relay_reply r;
	size_t off = 0, used, len = strlen(in);
	int codes[4], n = 0;

	relay_reply_init(&p);
	while (off < len && n < 4) {
		if (relay_reply_feed(&p, (const unsigned char *)in + off, len - off, &used, &r) !=
		    RELAY_REPLY_DONE)
			break;
		codes[n++] = r.code;
		off += used;
	}
	is_int(4, n, "four pipelined replies");
	if (n == 4) {
		is_int(250, codes[0], "first 250");
		is_int(250, codes[1], "second 250");
		is_int(550, codes[2], "third 550");
		is_int(354, codes[3], "fourth 354");
	} else {
		skip("replies missing");
		skip("replies missing");
		skip("replies missing");
		skip("replies missing");
	}
}

static void
test_limits(void)
{
	char *buf = malloc(200 * 1024);
	size_t o = 0, i;
	struct outcome out;
	char sum[RELAY_REPLY_SUMMARY_MAX];

	if (buf == NULL)
		bail("out of memory");
	/* 510 octets of text plus CRLF is the longest line allowed. */
	memcpy(buf, "250 ", 4);
	memset(buf + 4, 'a', 506);
	memcpy(buf + 510, "\r\n", 2);
	out = feed(buf, 512, 0);
	is_int(RELAY_REPLY_DONE, out.res, "a 512-octet line is accepted");
	memset(buf + 4, 'a', 507);
	memcpy(buf + 511, "\r\n", 2);
	check_bad("a 513-octet line", buf, 513, "reply line too long");

	/* 100 lines are fine, 101 are not. */
	for (i = 0; i < 100; i++)
		o += (size_t)snprintf(buf + o, 64, "250%cline %zu\r\n", i == 99 ? ' ' : '-', i);
	out = feed(buf, o, 0);
	is_int(RELAY_REPLY_DONE, out.res, "100 lines accepted");
	is_int(100, (long long)out.reply.nlines, "100 lines counted");
	is_string("line 99", relay_reply_line(&out.reply, 99), "last line kept");
	o = 0;
	for (i = 0; i < 101; i++)
		o += (size_t)snprintf(buf + o, 64, "250%cline %zu\r\n", i == 100 ? ' ' : '-', i);
	check_bad("101 lines", buf, o, "too many lines in one reply");

	/* 100 long lines overflow the kept text: truncated, lines still readable. */
	o = 0;
	for (i = 0; i < 100; i++) {
		memcpy(buf + o, i == 99 ? "250 " : "250-", 4);
		memset(buf + o + 4, 'b', 500);
		memcpy(buf + o + 504, "\r\n", 2);
		o += 506;
	}
	out = feed(buf, o, 0);
	is_int(RELAY_REPLY_DONE, out.res, "100 long lines accepted");
	ok(out.reply.truncated, "text that did not fit is flagged");
	is_string("", relay_reply_line(&out.reply, 99), "a line that did not fit reads as empty");
	relay_reply_summary(&out.reply, sum, sizeof(sum));
	is_int(RELAY_REPLY_SUMMARY_MAX - 1, (long long)strlen(sum), "summary fills its buffer");
	is_string("...", sum + strlen(sum) - 3, "and shows the cut");
	free(buf);
}

static void
test_ehlo(void)
{
	const char *in = "250-mx.example.test Hello\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n"
	    "250-VRFY\r\n250-ETRN\r\n250-starttls\r\n250-ENHANCEDSTATUSCODES\r\n"
	    "250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n250 CHUNKING\r\n";
	struct outcome o = feed(in, strlen(in), 0);
	struct relay_ehlo e;

	relay_ehlo_parse(&o.reply, &e);
	is_int(RELAY_EXT_PIPELINING | RELAY_EXT_SIZE | RELAY_EXT_STARTTLS | RELAY_EXT_ENHANCED |
	    RELAY_EXT_8BITMIME | RELAY_EXT_DSN | RELAY_EXT_SMTPUTF8 | RELAY_EXT_CHUNKING, e.ext,
	    "EHLO keywords (case-insensitive)");
	is_int(10240000, (long long)e.size_max, "SIZE limit");

	in = "250-PIPELINING mx\r\n250-SIZE\r\n250-DSNX\r\n250 STARTTLSFOO\r\n";
	o = feed(in, strlen(in), 0);
	relay_ehlo_parse(&o.reply, &e);
	is_int(RELAY_EXT_SIZE, e.ext, "first line is the greeting; prefixes do not count");
	is_int(0, (long long)e.size_max, "SIZE without a number: no limit");

	in = "250-x\r\n250 SIZE 99999999999999999999999\r\n";
	o = feed(in, strlen(in), 0);
	relay_ehlo_parse(&o.reply, &e);
	is_int(0, (long long)e.size_max, "absurd SIZE ignored");

	in = "502 5.5.1 no EHLO\r\n";
	o = feed(in, strlen(in), 0);
	relay_ehlo_parse(&o.reply, &e);
	is_int(0, e.ext, "no keywords from a failed EHLO");
}

static void
test_status(void)
{
	char st[RELAY_REPLY_STATUS_MAX];
	struct outcome o;

	o = feed("451 try later\r\n", 15, 0);
	relay_reply_status(&o.reply, st);
	is_string("4.0.0", st, "default status for 4xx");
	o = feed("550 5.7.1 denied\r\n", 18, 0);
	relay_reply_status(&o.reply, st);
	is_string("5.7.1", st, "own status kept");
	o = feed("550 4.7.1 wrong class\r\n", 23, 0);
	is_string("", o.reply.status, "status of the wrong class is text");
	relay_reply_status(&o.reply, st);
	is_string("5.0.0", st, "and the default is used");
}

int
main(void)
{
	static const char nul_line[] = "250-ok\r\n250 o\0k\r\n";
	static const char nul_ctl[] = "550 a\x01" "b\x7f" "c\td\r\n";
	struct outcome o;
	char sum[RELAY_REPLY_SUMMARY_MAX];

	plan_lazy();

	check_good("one line", "220 mx.example ESMTP ready\r\n", 220, "", 1,
	    "220 mx.example ESMTP ready", 28);
	check_good("code only", "250\r\n", 250, "", 1, "250", 5);
	check_good("enhanced status", "550 5.1.1 <u@x>: Recipient address rejected\r\n", 550,
	    "5.1.1", 1, "550 5.1.1 <u@x>: Recipient address rejected", 45);
	check_good("multi-line with repeated status",
	    "451-4.3.0 first\r\n451-4.3.0 second\r\n451 4.3.0 third\r\n", 451, "4.3.0", 3,
	    "451 4.3.0 first second third", 52);
	check_good("bare LF ends lines", "250-a\n250 b\n", 250, "", 2, "250 a b", 12);
	check_good("stops at the end of the reply", "250 ok\r\n354 next\r\n", 250, "", 1,
	    "250 ok", 8);
	check_good("status too long is text", "550 5.1234.1 x\r\n", 550, "", 1,
	    "550 5.1234.1 x", 16);
	check_good("empty continuation", "250-\r\n250 end\r\n", 250, "", 2, "250 end", 15);

	check_bad("code changes", "250-a\r\n251 b\r\n", 14,
	    "reply code changed within a multi-line reply");
	check_bad("no code", "hello\r\n", 7, "reply line without a code");
	check_bad("short line", "25\r\n", 4, "reply line without a code");
	check_bad("code 600", "600 x\r\n", 7, "reply code out of range");
	check_bad("code 199", "199 x\r\n", 7, "reply code out of range");
	check_bad("code 260", "260 x\r\n", 7, "reply code out of range");
	check_bad("no separator", "250x\r\n", 6, "no space or hyphen after the reply code");
	check_bad("bare CR", "250 a\rb\r\n", 9, "bare CR in a reply");
	check_bad("NUL", nul_line, sizeof(nul_line) - 1, "NUL in a reply");
	check_bad("continuation of another code (OpenSMTPD CVE-2020-8794 shape)",
	    "250-x\r\n2\r\n", 10, "reply line without a code");

	o = feed(nul_ctl, sizeof(nul_ctl) - 1, 0);
	is_int(RELAY_REPLY_DONE, o.res, "control octets other than NUL/CR are kept as '?'");
	is_string("a?b?c\td", relay_reply_line(&o.reply, 0), "stored without control octets");
	is_string("550 a?b?c d", relay_reply_summary(&o.reply, sum, sizeof(sum)),
	    "summary has TAB as space");
	o = feed("550 caf\xc3\xa9\r\n", 11, 0);
	is_string("550 caf??", relay_reply_summary(&o.reply, sum, sizeof(sum)),
	    "non-ASCII becomes '?' in the summary");

	test_incomplete();
	test_pipelined();
	test_limits();
	test_ehlo();
	test_status();
	return 0;
}
