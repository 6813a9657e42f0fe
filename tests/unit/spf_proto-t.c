/*
 * SPF's pure parts: the helper messages round-trip and refuse every
 * truncation, oversize field and control octet; the Received-SPF and
 * Authentication-Results fields come out exactly, quoted and folded; forged
 * Authentication-Results fields with our authserv-id are recognised through
 * comments, quoting, case and folding.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "basic.h"
#include "spf_proto.h"

static void
test_messages(void)
{
	struct spf_query_msg q, q2;
	struct spf_reply_msg r, r2;
	struct spf_config_msg c, c2;
	unsigned char buf[SPF_MSG_MAX];
	int n, i, bad;

	memset(&q, 0, sizeof(q));
	q.id = 0x01020304;
	q.family = 6;
	memset(q.addr, 0xab, 16);
	mx_strlcpy(q.helo, "client.example", sizeof(q.helo));
	mx_strlcpy(q.sender, "user@example.org", sizeof(q.sender));
	n = spf_msg_put_query(&q, buf, sizeof(buf));
	ok(n > 0 && spf_msg_type(buf, (size_t)n) == SPF_MSG_QUERY, "query encodes");
	ok(spf_msg_get_query(buf, (size_t)n, &q2) == 0 && q2.id == q.id && q2.family == 6 &&
	    memcmp(q2.addr, q.addr, 16) == 0 && strcmp(q2.helo, q.helo) == 0 &&
	    strcmp(q2.sender, q.sender) == 0, "query round-trips");
	bad = 0;
	for (i = 0; i < n; i++) {
		unsigned char *cut = malloc((size_t)i + 1);

		memcpy(cut, buf, (size_t)i);
		if (spf_msg_get_query(cut, (size_t)i, &q2) == 0)
			bad++;
		free(cut);
	}
	is_int(0, bad, "no truncation of a query decodes");
	buf[n] = 'x';
	ok(spf_msg_get_query(buf, (size_t)n + 1, &q2) == -1, "trailing octets refused");
	q.family = 5;
	ok(spf_msg_put_query(&q, buf, sizeof(buf)) == -1, "family other than 4/6 refused");
	q.family = 4;
	memset(q.helo, 'h', SPF_HELO_MAX);
	q.helo[SPF_HELO_MAX] = '\0';
	ok(spf_msg_put_query(&q, buf, sizeof(buf)) > 0, "a 255-octet HELO fits");
	mx_strlcpy(q.helo, "a\nb", sizeof(q.helo));
	ok(spf_msg_put_query(&q, buf, sizeof(buf)) == -1, "a control octet is refused");
	mx_strlcpy(q.helo, "ok.test", sizeof(q.helo));
	ok(spf_msg_put_query(&q, buf, 20) == -1, "a buffer too small is refused");
	n = spf_msg_put_query(&q, buf, sizeof(buf));
	buf[23] = 0xff;		/* HELO length high octet */
	ok(spf_msg_get_query(buf, (size_t)n, &q2) == -1, "an oversize length field is refused");
	n = spf_msg_put_query(&q, buf, sizeof(buf));
	buf[25] = '\r';
	ok(spf_msg_get_query(buf, (size_t)n, &q2) == -1, "a control octet is refused on decode");

	memset(&r, 0, sizeof(r));
	r.id = 7;
	r.result = SPF_RES_SOFTFAIL;
	r.helo_identity = true;
	mx_strlcpy(r.comment, "mx.test: transitioning domain of x does not designate 1.2.3.4",
	    sizeof(r.comment));
	n = spf_msg_put_reply(&r, buf, sizeof(buf));
	ok(n > 0 && spf_msg_get_reply(buf, (size_t)n, &r2) == 0 && r2.id == 7 &&
	    r2.result == SPF_RES_SOFTFAIL && r2.helo_identity &&
	    strcmp(r2.comment, r.comment) == 0, "reply round-trips");
	buf[5] = SPF_NRES;
	ok(spf_msg_get_reply(buf, (size_t)n, &r2) == -1, "an unknown result is refused");
	ok(spf_msg_get_reply(buf, 0, &r2) == -1 && spf_msg_type(buf, 0) == SPF_MSG_INVALID,
	    "an empty datagram is nothing");

	memset(&c, 0, sizeof(c));
	c.timeout = 20;
	c.log_stderr = true;
	c.log_level = 3;
	mx_strlcpy(c.resolver, "127.0.0.1@5353", sizeof(c.resolver));
	mx_strlcpy(c.receiver, "mx.test", sizeof(c.receiver));
	n = spf_msg_put_config(&c, buf, sizeof(buf));
	ok(n > 0 && spf_msg_get_config(buf, (size_t)n, &c2) == 0 && c2.timeout == 20 &&
	    c2.log_stderr && c2.log_level == 3 && strcmp(c2.resolver, c.resolver) == 0 &&
	    strcmp(c2.receiver, "mx.test") == 0, "config round-trips");
	ok(spf_msg_get_reply(buf, (size_t)n, &r2) == -1, "a config is not a reply");
}

static void
test_headers(void)
{
	struct mx_buf b;
	struct spf_header_info h;
	const char *p;
	size_t line, maxline;

	mx_buf_init(&b, 0);
	memset(&h, 0, sizeof(h));
	h.result = SPF_RES_PASS;
	h.comment = "mx.test: domain of a@spf-pass.test designates 192.0.2.1 as permitted sender";
	h.receiver = "mx.test";
	h.client_ip = "192.0.2.1";
	h.sender = "a@spf-pass.test";
	h.helo = "client.test";
	h.authserv_id = "mx.test";
	ok(spf_format_received(&b, &h) == 0, "Received-SPF formats");
	is_string("Received-SPF: pass\r\n"
	    "\t(mx.test: domain of a@spf-pass.test designates 192.0.2.1 as permitted sender)\r\n"
	    "\treceiver=mx.test; client-ip=192.0.2.1; envelope-from=\"a@spf-pass.test\";\r\n"
	    "\thelo=client.test; identity=mailfrom\r\n", mx_buf_cstr(&b), "Received-SPF text");
	mx_buf_reset(&b);
	ok(spf_format_authres(&b, &h) == 0, "Authentication-Results formats");
	is_string("Authentication-Results: mx.test; spf=pass smtp.mailfrom=a@spf-pass.test\r\n",
	    mx_buf_cstr(&b), "Authentication-Results text");

	/* Hostile values: quoted, escaped, controls replaced. */
	mx_buf_reset(&b);
	h.result = SPF_RES_FAIL;
	h.comment = "evil) (x\\ \r\nInjected: yes";
	h.client_ip = "2001:db8::1";
	h.sender = "\"we ird\"@spf-fail.test";
	h.helo = "bad\"helo\r\nX: y";
	ok(spf_format_received(&b, &h) == 0, "Received-SPF with hostile values formats");
	p = mx_buf_cstr(&b);
	ok(strstr(p, "(evil\\) \\(x\\\\ ??Injected: yes)") != NULL, "comment escaped");
	ok(strstr(p, "client-ip=\"2001:db8::1\";") != NULL, "an IPv6 client-ip is quoted");
	ok(strstr(p, "envelope-from=\"\\\"we ird\\\"@spf-fail.test\";") != NULL,
	    "a quoted local part is quoted again");
	ok(strstr(p, "helo=\"bad\\\"helo??X: y\";") != NULL, "HELO with quotes and CRLF made safe");
	/* No CR or LF except as folding, and no line over 78 octets unless one token is. */
	maxline = line = 0;
	for (; *p != '\0'; p++) {
		if (p[0] == '\r') {
			ok(p[1] == '\n' && (p[2] == '\t' || p[2] == '\0'), "CRLF only as folding");
			if (line > maxline)
				maxline = line;
			line = 0;
			p++;
			continue;
		}
		line++;
	}
	ok(maxline <= 78, "folded to at most 78 octets per line (%zu)", maxline);

	mx_buf_reset(&b);
	h.result = SPF_RES_SOFTFAIL;
	h.helo_identity = true;
	h.sender = "";
	h.helo = "client.test";
	h.comment = NULL;
	ok(spf_format_received(&b, &h) == 0 &&
	    strstr(mx_buf_cstr(&b), "envelope-from=\"postmaster@client.test\";") != NULL &&
	    strstr(mx_buf_cstr(&b), "identity=helo\r\n") != NULL,
	    "null sender: postmaster@HELO, identity helo");
	mx_buf_reset(&b);
	ok(spf_format_authres(&b, &h) == 0, "Authentication-Results for the HELO identity");
	is_string("Authentication-Results: mx.test; spf=softfail smtp.helo=client.test\r\n",
	    mx_buf_cstr(&b), "smtp.helo for the null sender");
	mx_buf_reset(&b);
	h.helo_identity = false;
	h.sender = "a b@x.test";
	h.result = SPF_RES_TEMPERROR;
	ok(spf_format_authres(&b, &h) == 0 &&
	    strcmp(mx_buf_cstr(&b), "Authentication-Results: mx.test; spf=temperror "
	    "smtp.mailfrom=\"a b@x.test\"\r\n") == 0, "an odd sender is quoted");
	mx_buf_free(&b);
	is_string("permerror", spf_res_name(SPF_RES_PERMERROR), "result names");
}

static void
test_authres(void)
{
	static const struct {
		const char *field;
		bool ours;
		const char *what;
	} cases[] = {
		{ "Authentication-Results: mx.test; spf=pass smtp.mailfrom=a@b", true, "plain" },
		{ "authentication-results: MX.TEST; spf=pass", true, "case-insensitive" },
		{ "Authentication-Results:mx.test;spf=pass", true, "no spaces" },
		{ "Authentication-Results : mx.test; none", true, "space before the colon" },
		{ "Authentication-Results: (forged) mx.test; spf=pass", true, "comment first" },
		{ "Authentication-Results: (a (nested) \\) c) mx.test; spf=pass", true,
		    "nested comment with a quoted-pair" },
		{ "Authentication-Results:\r\n\tmx.test;\r\n\tspf=pass", true, "folded" },
		{ "Authentication-Results: \"mx.test\"; spf=pass", true, "quoted-string id" },
		{ "Authentication-Results: mx.test 1; spf=pass", true, "with a version" },
		{ "Authentication-Results: mx.test.; spf=pass", true, "trailing dot" },
		{ "Authentication-Results: mx.example; spf=pass smtp.mailfrom=a@mx.test", false,
		    "another server's results mentioning our name later" },
		{ "Authentication-Results: mx.test.evil; spf=pass", false, "a longer id" },
		{ "Authentication-Results: x-mx.test; spf=pass", false, "a suffix match is not ours" },
		{ "X-Authentication-Results: mx.test; spf=pass", false, "another header" },
		{ "Authentication-Results-Extra: mx.test; spf=pass", false, "a longer header name" },
		{ "Authentication-Results: (unterminated mx.test; spf=pass", true,
		    "unparsable but naming us: removed" },
		{ "Authentication-Results: (unterminated other; spf=pass", false,
		    "unparsable and not naming us: kept" },
		{ "Authentication-Results: ; spf=pass mx.test", true, "empty id, naming us: removed" },
	};
	size_t i;

	for (i = 0; i < MX_NELEM(cases); i++)
		ok(spf_authres_is_ours(cases[i].field, strlen(cases[i].field), "mx.test") ==
		    cases[i].ours, "authres: %s", cases[i].what);
	ok(!spf_authres_is_ours("Authentication-Results: mx.test; x", 24, "mx.test"),
	    "only len octets of the field are read");
}

int
main(void)
{
	plan_lazy();
	test_messages();
	test_headers();
	test_authres();
	return 0;
}
