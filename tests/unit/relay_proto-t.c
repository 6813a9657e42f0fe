/*
 * Tests for what the relay client writes: MAIL and RCPT lines with and
 * without the extensions offered, refusal of addresses that could break the
 * command line, the DATA encoder (dot-stuffing, bare CR/LF repaired, the
 * end marker) fed whole and one octet at a time, and xtext decoding.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "basic.h"
#include "relay_proto.h"
#include "util.h"

static void
test_mail(void)
{
	struct queue_envelope env;
	struct mx_buf b;

	queue_envelope_init(&env);
	mx_buf_init(&b, 4096);
	mx_strlcpy(env.sender, "alice@sender.example", sizeof(env.sender));
	ok(relay_proto_mail(&env, 0, 1234, &b) == 0, "MAIL without extensions");
	is_string("MAIL FROM:<alice@sender.example>\r\n", mx_buf_cstr(&b), "plain MAIL");

	mx_buf_reset(&b);
	env.body = QUEUE_BODY_8BITMIME;
	env.smtputf8 = true;
	env.ret = QUEUE_RET_HDRS;
	mx_strlcpy(env.envid, "QQ+2B1", sizeof(env.envid));
	ok(relay_proto_mail(&env, RELAY_EXT_SIZE | RELAY_EXT_8BITMIME | RELAY_EXT_SMTPUTF8 |
	    RELAY_EXT_DSN, 1234, &b) == 0, "MAIL with every extension");
	is_string("MAIL FROM:<alice@sender.example> SIZE=1234 BODY=8BITMIME SMTPUTF8 RET=HDRS "
	    "ENVID=QQ+2B1\r\n", mx_buf_cstr(&b), "all parameters");

	mx_buf_reset(&b);
	ok(relay_proto_mail(&env, RELAY_EXT_SIZE, 5, &b) == 0, "only SIZE offered");
	is_string("MAIL FROM:<alice@sender.example> SIZE=5\r\n", mx_buf_cstr(&b),
	    "parameters only for offered extensions");

	mx_buf_reset(&b);
	env.sender[0] = '\0';
	env.envid[0] = '\0';
	env.ret = QUEUE_RET_NONE;
	ok(relay_proto_mail(&env, RELAY_EXT_DSN, 5, &b) == 0, "null sender");
	is_string("MAIL FROM:<>\r\n", mx_buf_cstr(&b), "MAIL FROM:<>");

	mx_buf_reset(&b);
	mx_strlcpy(env.sender, "a>b@x", sizeof(env.sender));
	ok(relay_proto_mail(&env, 0, 5, &b) == -1 && b.len == 0, "'>' in the sender refused");
	mx_strlcpy(env.sender, "a\rb@x", sizeof(env.sender));
	ok(relay_proto_mail(&env, 0, 5, &b) == -1 && b.len == 0, "CR in the sender refused");
	mx_strlcpy(env.sender, "a@x", sizeof(env.sender));
	mx_strlcpy(env.envid, "a b", sizeof(env.envid));
	ok(relay_proto_mail(&env, RELAY_EXT_DSN, 5, &b) == -1, "space in ENVID refused");
	mx_buf_free(&b);
	queue_envelope_clear(&env);
}

static void
test_rcpt(void)
{
	struct queue_rcpt r;
	struct mx_buf b;

	memset(&r, 0, sizeof(r));
	mx_buf_init(&b, 4096);
	mx_strlcpy(r.addr, "\"odd user\"@reg.test", sizeof(r.addr));
	r.notify = QUEUE_NOTIFY_SUCCESS | QUEUE_NOTIFY_DELAY;
	mx_strlcpy(r.orcpt, "rfc822;odd+20user@reg.test", sizeof(r.orcpt));
	ok(relay_proto_rcpt(&r, 0, &b) == 0, "RCPT without DSN");
	is_string("RCPT TO:<\"odd user\"@reg.test>\r\n", mx_buf_cstr(&b),
	    "no DSN parameters when not offered");
	mx_buf_reset(&b);
	ok(relay_proto_rcpt(&r, RELAY_EXT_DSN, &b) == 0, "RCPT with DSN");
	is_string("RCPT TO:<\"odd user\"@reg.test> NOTIFY=SUCCESS,DELAY "
	    "ORCPT=rfc822;odd+20user@reg.test\r\n", mx_buf_cstr(&b), "NOTIFY and ORCPT");
	mx_buf_reset(&b);
	r.notify = QUEUE_NOTIFY_NEVER;
	r.orcpt[0] = '\0';
	ok(relay_proto_rcpt(&r, RELAY_EXT_DSN, &b) == 0, "NOTIFY=NEVER");
	is_string("RCPT TO:<\"odd user\"@reg.test> NOTIFY=NEVER\r\n", mx_buf_cstr(&b), "NEVER");
	mx_buf_reset(&b);
	r.addr[0] = '\0';
	ok(relay_proto_rcpt(&r, 0, &b) == -1, "empty recipient refused");
	mx_strlcpy(r.addr, "u@x\n", sizeof(r.addr));
	ok(relay_proto_rcpt(&r, 0, &b) == -1 && b.len == 0, "LF in a recipient refused");
	mx_buf_free(&b);
}

/* Encode in pieces of `step` octets (0: whole). */
static char *
stuff(const char *in, size_t len, size_t step, uint64_t *fixed)
{
	struct relay_stuffer s;
	struct mx_buf b;
	size_t off = 0, n;
	char *res;

	mx_buf_init(&b, 0);
	relay_stuffer_init(&s);
	while (off < len) {
		n = step == 0 ? len - off : (len - off < step ? len - off : step);
		if (relay_stuffer_feed(&s, (const unsigned char *)in + off, n, &b) == -1)
			bail("feed failed");
		off += n;
	}
	if (relay_stuffer_finish(&s, &b) == -1)
		bail("finish failed");
	if (s.out != b.len)
		bail("output count %llu != %zu", (unsigned long long)s.out, b.len);
	res = strdup(mx_buf_cstr(&b));
	if (fixed != NULL)
		*fixed = s.fixed;
	mx_buf_free(&b);
	return res;
}

static void
check_stuff(const char *name, const char *in, const char *want, uint64_t want_fixed)
{
	static const size_t steps[] = { 0, 1, 2, 3 };
	uint64_t fixed;
	size_t i;
	char *got;

	for (i = 0; i < MX_NELEM(steps); i++) {
		got = stuff(in, strlen(in), steps[i], &fixed);
		is_string(want, got, "%s (step %zu)", name, steps[i]);
		is_int((long long)want_fixed, (long long)fixed, "%s (step %zu): repairs", name,
		    steps[i]);
		free(got);
	}
}

/* No CR or LF outside CRLF pairs, and nothing that ends the data early. */
static bool
stream_clean(const char *s)
{
	size_t i, n = strlen(s);

	for (i = 0; i < n; i++) {
		if (s[i] == '\r' && s[i + 1] != '\n')
			return false;
		if (s[i] == '\n' && (i == 0 || s[i - 1] != '\r'))
			return false;
	}
	/* The only "\r\n.\r\n" is the last five octets (or the whole of an empty body). */
	if (n < 3 || strcmp(s + n - 3, ".\r\n") != 0)
		return false;
	for (i = 0; i + 5 < n; i++)
		if (memcmp(s + i, "\r\n.\r\n", 5) == 0)
			return false;
	return n == 3 || (n >= 5 && memcmp(s + n - 5, "\r\n.\r\n", 5) == 0);
}

static void
test_stuffer(void)
{
	unsigned char rnd[4096];
	char in[4097];
	size_t i, round, bad = 0;
	uint32_t x = 12345;

	check_stuff("empty body", "", ".\r\n", 0);
	check_stuff("one line", "Subject: x\r\n\r\nhello\r\n", "Subject: x\r\n\r\nhello\r\n.\r\n", 0);
	check_stuff("leading dots doubled", ".\r\n..x\r\nmid.dle\r\n.", "..\r\n...x\r\nmid.dle\r\n..\r\n.\r\n",
	    0);
	check_stuff("missing final CRLF added", "abc", "abc\r\n.\r\n", 0);
	check_stuff("bare LF repaired", "a\nb\r\n", "a\r\nb\r\n.\r\n", 1);
	check_stuff("bare CR repaired", "a\rb\r\n", "a\r\nb\r\n.\r\n", 1);
	check_stuff("CR at the very end", "a\r", "a\r\n.\r\n", 1);
	check_stuff("smuggling shape LF.LF", "x\n.\nMAIL FROM:<e@vil>\r\n",
	    "x\r\n..\r\nMAIL FROM:<e@vil>\r\n.\r\n", 2);
	check_stuff("smuggling shape CR.CR", "x\r.\rRCPT\r\n", "x\r\n..\r\nRCPT\r\n.\r\n", 2);
	check_stuff("CRCRLF", "a\r\r\nb", "a\r\n\r\nb\r\n.\r\n", 1);
	check_stuff("dot after a repaired CR", "a\r.b", "a\r\n..b\r\n.\r\n", 1);

	/* Random bodies full of CR, LF and dots: the output is always clean. */
	for (round = 0; round < 300; round++) {
		for (i = 0; i < sizeof(rnd); i++) {
			x = x * 1103515245u + 12345u;
			rnd[i] = "\r\n.a\0"[(x >> 16) % 4];
		}
		memcpy(in, rnd, sizeof(rnd));
		in[(round * 37) % sizeof(rnd)] = '\0';
		{
			char *got = stuff(in, strlen(in), round % 5, NULL);

			if (!stream_clean(got))
				bad++;
			free(got);
		}
	}
	is_int(0, (long long)bad, "300 random bodies encode to clean streams");
}

static void
test_xtext(void)
{
	char out[16];

	ok(relay_xtext_decode("a+2Bb+3D", out, sizeof(out)) == 0, "xtext decodes");
	is_string("a+b=", out, "xtext value");
	ok(relay_xtext_decode("a+2b", out, sizeof(out)) == -1, "lower-case hex refused");
	ok(relay_xtext_decode("a+2", out, sizeof(out)) == -1, "short escape refused");
	ok(relay_xtext_decode("a+0D", out, sizeof(out)) == -1, "decoded CR refused");
	ok(relay_xtext_decode("a b", out, sizeof(out)) == -1, "space refused");
	ok(relay_xtext_decode("0123456789abcdefg", out, sizeof(out)) == -1, "too long refused");
}

int
main(void)
{
	plan_lazy();
	test_mail();
	test_rcpt();
	test_stuffer();
	test_xtext();
	return 0;
}
