/*
 * The milter codec: exact bytes of what we send, framing fed whole and one
 * byte at a time, every reply kind, and hostile replies (lengths, missing
 * NULs, bad reply codes, bad header names) refused without reading past
 * the packet.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "basic.h"
#include "milter_proto.h"

/* Build one packet: length, command, data. */
static size_t
mkpkt(unsigned char *out, char cmd, const void *data, size_t len)
{
	uint32_t n = (uint32_t)len + 1;

	out[0] = (unsigned char)(n >> 24);
	out[1] = (unsigned char)(n >> 16);
	out[2] = (unsigned char)(n >> 8);
	out[3] = (unsigned char)n;
	out[4] = (unsigned char)cmd;
	if (len > 0)
		memcpy(out + 5, data, len);
	return len + 5;
}

/*
 * Decode a reply packet made of cmd and data; returns 0 or -1.  The data is
 * copied into an exact-size allocation (so ASan sees any read past it) that
 * lives until the next call, since the decoded strings point into it.
 */
static unsigned char *last_copy;

static int
decode(char cmd, const void *data, size_t len, struct milter_reply *r, const char **err)
{
	unsigned char *buf = malloc(len + 5);
	struct milter_packet pkt;
	int rc;

	if (buf == NULL)
		bail("out of memory");
	free(last_copy);
	last_copy = NULL;
	mkpkt(buf, cmd, data, len);
	if (milter_packet_parse(buf, len + 5, MILTER_PACKET_MAX, &pkt, err) !=
	    MILTER_PARSE_DONE) {
		free(buf);
		return -1;
	}
	if ((last_copy = malloc(pkt.data.len ? pkt.data.len : 1)) == NULL)
		bail("out of memory");
	memcpy(last_copy, pkt.data.ptr, pkt.data.len);
	pkt.data.ptr = last_copy;
	rc = milter_reply_decode(&pkt, r, err);
	free(buf);
	return rc;
}

static void
test_encoders(void)
{
	struct mx_buf b;
	static const unsigned char optneg[] = {
		0, 0, 0, 13, 'O', 0, 0, 0, 6, 0, 0, 0x01, 0xff, 0, 0x1f, 0xf7, 0xff
	};
	static const unsigned char conn[] = {
		0, 0, 0, 21, 'C', 'h', '.', 't', 'e', 's', 't', 0, '4', 0x30, 0x39,
		'1', '9', '2', '.', '0', '.', '2', '.', '1', 0
	};
	static const unsigned char mail[] = {
		0, 0, 0, 19, 'M', '<', 'a', '@', 'b', '.', 't', '>', 0, 'S', 'I', 'Z', 'E', '=',
		'1', '0', 0, 'X', 0
	};
	static const unsigned char macros[] = {
		0, 0, 0, 12, 'D', 'C', 'j', 0, 'm', 'x', 0, '{', 'a', '}', 0, 0
	};
	struct milter_macro m[] = { { "j", "mx" }, { "{a}", "" }, { "{b}", NULL } };
	const char *args[] = { "SIZE=10", "X" };
	unsigned char *big;

	mx_buf_init(&b, 0);
	ok(milter_put_optneg(&b, 6, MILTER_ACT_ALL, MILTER_P_OFFER) == 0, "optneg encodes");
	is_blob(optneg, sizeof(optneg), b.data, b.len, "optneg bytes");
	mx_buf_reset(&b);
	ok(milter_put_connect(&b, "h.test", '4', 12345, "192.0.2.1") == 0, "connect encodes");
	is_blob(conn, sizeof(conn), b.data, b.len, "connect bytes");
	mx_buf_reset(&b);
	ok(milter_put_connect(&b, "unknown", 'U', 0, NULL) == 0, "connect, family unknown");
	is_int(5 + 8 + 1, b.len, "unknown family: no port and no address");
	ok(milter_put_connect(&b, "x", 'Z', 0, "1") == -1 && errno == EINVAL, "bad family refused");
	mx_buf_reset(&b);
	ok(milter_put_mail(&b, "<a@b.t>", args, 2) == 0, "mail with arguments");
	is_blob(mail, sizeof(mail), b.data, b.len, "mail bytes");
	mx_buf_reset(&b);
	ok(milter_put_macros(&b, MILTER_C_CONNECT, m, 3) == 0, "macros encode");
	is_blob(macros, sizeof(macros), b.data, b.len, "macro bytes (NULL values left out)");
	mx_buf_reset(&b);
	ok(milter_put_simple(&b, MILTER_C_BODYEOB) == 0 && b.len == 5 && b.data[3] == 1 &&
	    b.data[4] == 'E', "end of body is a bare command");
	ok(milter_put_simple(&b, 'Z') == -1 && errno == EINVAL && b.len == 5,
	    "unknown simple command refused, buffer unchanged");
	mx_buf_reset(&b);
	if ((big = malloc(MILTER_PACKET_MAX + 10)) == NULL)
		bail("out of memory");
	memset(big, 'x', MILTER_PACKET_MAX + 10);
	ok(milter_put_body(&b, big, MILTER_CHUNK_MAX) == 0 && b.len == 5 + MILTER_CHUNK_MAX,
	    "a 64 KiB body chunk encodes");
	ok(milter_put_body(&b, big, MILTER_CHUNK_MAX + 1) == -1 && errno == EMSGSIZE &&
	    b.len == 5 + MILTER_CHUNK_MAX, "a longer chunk is refused");
	big[MILTER_PACKET_MAX + 9] = '\0';
	mx_buf_reset(&b);
	ok(milter_put_header(&b, "Subject", (const char *)big) == -1 && errno == EMSGSIZE &&
	    b.len == 0, "an oversized header is refused and undone");
	free(big);
	mx_buf_free(&b);
}

static void
test_framing(void)
{
	unsigned char stream[256];
	size_t len = 0, off, fed, got;
	struct milter_packet pkt;
	const char *err = NULL;
	static const unsigned char zero[] = { 0, 0, 0, 0, 'a' };
	static const unsigned char huge[] = { 0, 1, 4, 1, 'b' };
	static const unsigned char neg[] = { 0xff, 0xff, 0xff, 0xff, 'b' };
	char cmds[8];

	len += mkpkt(stream + len, 'c', NULL, 0);
	len += mkpkt(stream + len, 'h', "X-A\0v\0", 6);
	len += mkpkt(stream + len, 'y', "550 5.7.1 no\0", 13);
	len += mkpkt(stream + len, 'a', NULL, 0);

	/* Whole. */
	off = 0;
	got = 0;
	while (milter_packet_parse(stream + off, len - off, MILTER_PACKET_MAX, &pkt, &err) ==
	    MILTER_PARSE_DONE) {
		cmds[got++] = (char)pkt.cmd;
		off += pkt.size;
	}
	ok(got == 4 && off == len && memcmp(cmds, "chya", 4) == 0, "four packets parsed whole");

	/* One byte at a time: only the bytes fed so far are visible. */
	off = 0;
	got = 0;
	for (fed = 1; fed <= len; fed++) {
		unsigned char *window = malloc(fed - off);
		enum milter_parse pr;

		if (window == NULL)
			bail("out of memory");
		memcpy(window, stream + off, fed - off);
		pr = milter_packet_parse(window, fed - off, MILTER_PACKET_MAX, &pkt, &err);
		if (pr == MILTER_PARSE_DONE) {
			cmds[got++] = (char)pkt.cmd;
			off += pkt.size;
		}
		free(window);
		if (pr == MILTER_PARSE_ERROR)
			break;
	}
	ok(got == 4 && off == len && memcmp(cmds, "chya", 4) == 0,
	    "four packets parsed one byte at a time");

	ok(milter_packet_parse(zero, sizeof(zero), MILTER_PACKET_MAX, &pkt, &err) ==
	    MILTER_PARSE_ERROR, "length 0 refused (%s)", err);
	ok(milter_packet_parse(huge, 4, MILTER_PACKET_MAX, &pkt, &err) == MILTER_PARSE_ERROR,
	    "length over 64 KiB + slack refused from the length field alone");
	ok(milter_packet_parse(neg, 4, MILTER_PACKET_MAX, &pkt, &err) == MILTER_PARSE_ERROR,
	    "length 0xffffffff refused");
	ok(milter_packet_parse(huge, 4, (size_t)-1, &pkt, &err) == MILTER_PARSE_ERROR,
	    "the cap cannot be raised past MILTER_PACKET_MAX");
	ok(milter_packet_parse(stream, 3, MILTER_PACKET_MAX, &pkt, &err) == MILTER_PARSE_MORE,
	    "three octets: need more");
}

static void
test_replies(void)
{
	struct milter_reply r;
	const char *err = NULL;
	unsigned char buf[64];

	ok(decode('a', NULL, 0, &r, &err) == 0 && r.kind == MILTER_RK_ACCEPT, "accept");
	ok(decode('c', NULL, 0, &r, &err) == 0 && r.kind == MILTER_RK_CONTINUE, "continue");
	ok(decode('r', NULL, 0, &r, &err) == 0 && r.kind == MILTER_RK_REJECT, "reject");
	ok(decode('t', NULL, 0, &r, &err) == 0 && r.kind == MILTER_RK_TEMPFAIL, "tempfail");
	ok(decode('d', NULL, 0, &r, &err) == 0 && r.kind == MILTER_RK_DISCARD, "discard");
	ok(decode('s', NULL, 0, &r, &err) == 0 && r.kind == MILTER_RK_SKIP, "skip");
	ok(decode('p', NULL, 0, &r, &err) == 0 && r.kind == MILTER_RK_PROGRESS &&
	    !milter_reply_is_final(r.kind), "progress, not final");
	ok(decode('4', NULL, 0, &r, &err) == 0 && r.kind == MILTER_RK_SHUTDOWN, "shutdown");
	ok(decode('c', "x", 1, &r, &err) == -1, "continue with data refused");
	ok(decode('Z', NULL, 0, &r, &err) == -1, "unknown reply refused");

	ok(decode('y', "550 5.7.1 Go away\0", 18, &r, &err) == 0 &&
	    r.kind == MILTER_RK_REPLYCODE && r.code == 550 &&
	    strcmp(r.value, "550 5.7.1 Go away") == 0, "replycode 550 with text");
	ok(decode('y', "451\0", 4, &r, &err) == 0 && r.code == 451, "replycode, code alone");
	ok(decode('y', "421 4.7.0 bye\0", 14, &r, &err) == 0 && r.code == 421, "replycode 421");
	ok(decode('y', "550-5.7.1 one\r\n550 5.7.1 two\0", 29, &r, &err) == 0 && r.code == 550,
	    "multi-line replycode");
	ok(decode('y', "550 5.7.1 unterminated", 22, &r, &err) == -1,
	    "replycode without its NUL refused (%s)", err);
	ok(decode('y', "550 ok\0junk", 11, &r, &err) == -1, "replycode with data after the NUL");
	ok(decode('y', "\0", 1, &r, &err) == -1, "empty replycode refused");
	ok(decode('y', "250 fine\0", 9, &r, &err) == -1, "2xx replycode refused (%s)", err);
	ok(decode('y', "354 go\0", 7, &r, &err) == -1, "3xx replycode refused");
	ok(decode('y', "55\0", 3, &r, &err) == -1, "two-digit code refused");
	ok(decode('y', "5x0 no\0", 7, &r, &err) == -1, "non-digit code refused");
	ok(decode('y', "550x no\0", 8, &r, &err) == -1, "no space after the code refused");
	ok(decode('y', "550 a\rb\0", 8, &r, &err) == -1, "bare CR in text refused");
	ok(decode('y', "550 a\nb\0", 8, &r, &err) == -1, "bare LF in text refused");
	ok(decode('y', "550 \xff\0", 6, &r, &err) == -1, "non-ASCII text refused");
	ok(decode('y', "550 4.7.1 mixed\0", 16, &r, &err) == -1,
	    "enhanced code of another class refused (%s)", err);
	ok(decode('y', "550-a\r\n451 b\0", 13, &r, &err) == -1, "lines with different codes");
	ok(decode('y', "550 a\r\n550 b\0", 13, &r, &err) == -1, "continuation without '-'");
	ok(decode('y', "550-a\r\n\0", 8, &r, &err) == -1, "trailing line break refused");
	{
		char line[600];
		size_t n;

		memset(line, 'a', sizeof(line));
		memcpy(line, "550 ", 4);
		n = MILTER_REPLY_LINE_MAX - 2;
		line[n] = '\0';
		ok(decode('y', line, n + 1, &r, &err) == 0, "a 510-octet line is accepted");
		line[n] = 'a';
		line[n + 1] = '\0';
		ok(decode('y', line, n + 2, &r, &err) == -1, "a 511-octet line is refused");
	}

	ok(decode('h', "X-Test\0yes\0", 11, &r, &err) == 0 && r.kind == MILTER_RK_ADDHEADER &&
	    strcmp(r.name, "X-Test") == 0 && strcmp(r.value, "yes") == 0, "add header");
	ok(decode('h', "X-Test\0yes", 10, &r, &err) == -1, "add header without the last NUL");
	ok(decode('h', "X-Test\0", 7, &r, &err) == -1, "add header without a value");
	ok(decode('h', "X Test\0v\0", 9, &r, &err) == -1, "header name with a space refused");
	ok(decode('h', "X:T\0v\0", 6, &r, &err) == -1, "header name with a colon refused");
	ok(decode('h', "\0v\0", 3, &r, &err) == -1, "empty header name refused");
	memcpy(buf, "\0\0\0\2X-A\0b\0", 10);
	ok(decode('m', buf, 10, &r, &err) == 0 && r.kind == MILTER_RK_CHGHEADER &&
	    r.index == 2 && strcmp(r.name, "X-A") == 0, "change header with index 2");
	ok(decode('i', buf, 10, &r, &err) == 0 && r.kind == MILTER_RK_INSHEADER && r.index == 2,
	    "insert header");
	ok(decode('m', buf, 3, &r, &err) == -1, "change header with a short index");
	memcpy(buf, "\0\0\0\1X-A\0\0", 9);
	ok(decode('m', buf, 9, &r, &err) == 0 && r.value[0] == '\0',
	    "change header with an empty value (delete)");
	ok(decode('q', "spam\0", 5, &r, &err) == 0 && r.kind == MILTER_RK_QUARANTINE &&
	    strcmp(r.value, "spam") == 0, "quarantine with reason");
	ok(decode('q', "spam", 4, &r, &err) == -1, "quarantine without NUL refused");
	ok(decode('+', "<x@y>\0", 6, &r, &err) == 0 && r.kind == MILTER_RK_ADDRCPT, "add rcpt");
	ok(decode('-', "\0", 1, &r, &err) == -1, "empty delrcpt refused");
	ok(decode('2', "<x@y>\0A=B\0", 10, &r, &err) == 0 && strcmp(r.args, "A=B") == 0,
	    "addrcpt with arguments");
	ok(decode('e', "<x@y>\0", 6, &r, &err) == 0 && r.kind == MILTER_RK_CHGFROM &&
	    r.args == NULL, "chgfrom without arguments");
	ok(decode('e', "<x@y>\0A", 7, &r, &err) == -1, "chgfrom with unterminated arguments");
	ok(decode('b', "body", 4, &r, &err) == 0 && r.kind == MILTER_RK_REPLBODY &&
	    r.body.len == 4, "replace body chunk");

	memcpy(buf, "\0\0\0\6\0\0\0\x11\0\0\0\x40", 12);
	ok(decode('O', buf, 12, &r, &err) == 0 && r.kind == MILTER_RK_OPTNEG && r.version == 6 &&
	    r.actions == 0x11 && r.protocol == 0x40, "option negotiation");
	memcpy(buf + 12, "\0\0\0\2{mail_addr} i", 18);
	ok(decode('O', buf, 30, &r, &err) == 0 && r.symlist[MILTER_STAGE_MAIL] != NULL &&
	    strcmp(r.symlist[MILTER_STAGE_MAIL], "{mail_addr} i") == 0 &&
	    r.symlist[MILTER_STAGE_RCPT] == NULL, "option negotiation with a macro list");
	ok(decode('O', buf, 29, &r, &err) == -1, "macro list without NUL refused");
	buf[15] = 9;
	ok(decode('O', buf, 30, &r, &err) == -1, "macro list for an unknown stage refused");
	ok(decode('O', buf, 11, &r, &err) == -1, "short option negotiation refused");
}

static void
test_headers(void)
{
	struct mx_buf b;
	const char *err = NULL;
	char longv[1200];

	mx_buf_init(&b, 0);
	ok(milter_header_value_normalize("X-A", "one\n\ttwo\r\n three", &b, &err) == 0 &&
	    b.len == 17 && memcmp(b.data, "one\r\n\ttwo\r\n three", 17) == 0,
	    "folding LF and CRLF come out as CRLF");
	mx_buf_reset(&b);
	ok(milter_header_value_normalize("X-A", "one\ntwo", &b, &err) == -1 && b.len == 0,
	    "a line break that is not folding is refused (%s)", err);
	ok(milter_header_value_normalize("X-A", "one\rtwo", &b, &err) == -1, "bare CR refused");
	ok(milter_header_value_normalize("X-A", "one\n", &b, &err) == -1,
	    "trailing line break refused");
	memset(longv, 'v', sizeof(longv));
	longv[sizeof(longv) - 1] = '\0';
	ok(milter_header_value_normalize("X-A", longv, &b, &err) == -1,
	    "a physical line over 998 octets refused");
	longv[500] = '\n';
	longv[501] = ' ';
	ok(milter_header_value_normalize("X-A", longv, &b, &err) == 0,
	    "the same value folded in two is fine");
	mx_buf_free(&b);

	ok(milter_header_name_ok("X-Spam-Status"), "header name ok");
	ok(!milter_header_name_ok("X\x7f"), "DEL in header name refused");

	ok(milter_symlist_has("{mail_addr} i", "{mail_addr}"), "symlist: braced name");
	ok(milter_symlist_has("{mail_addr} i", "i"), "symlist: bare name");
	ok(milter_symlist_has("mail_addr,j", "{mail_addr}"), "symlist: name written bare");
	ok(!milter_symlist_has("{mail_addr} i", "{rcpt_addr}"), "symlist: absent name");
	ok(!milter_symlist_has("{mail_addr}", "{mail}"), "symlist: prefix does not match");
}

static void
test_header_section(void)
{
	static const char hdr[] = "Subject: hello\r\nX-Del: one\r\nX-Fold: a\r\n\tb\r\n"
	    "X-Del: two\r\n";
	struct milter_mod mods[] = {
		{ MILTER_MOD_ADDHEADER, 0, "X-A", "1", NULL, "m" },
		{ MILTER_MOD_CHGHEADER, 1, "subject", "new", NULL, "m" },
		{ MILTER_MOD_INSHEADER, 0, "X-Top", "t", NULL, "m" },
		{ MILTER_MOD_CHGHEADER, 2, "X-Del", "", NULL, "m" },
		{ MILTER_MOD_ADDRCPT, 0, NULL, "<x@y>", NULL, "m" },
		{ MILTER_MOD_CHGHEADER, 5, "X-Del", "x", NULL, "m" },
		{ MILTER_MOD_CHGHEADER, 1, "X-None", "", NULL, "m" },
	};
	struct mx_view name, value;
	struct mx_buf b;
	size_t used;

	ok(milter_header_next((const unsigned char *)hdr, strlen(hdr), &name, &value, &used) == 1 &&
	    name.len == 7 && memcmp(name.ptr, "Subject", 7) == 0 && value.len == 6 &&
	    used == 16, "first header field");
	ok(milter_header_next((const unsigned char *)hdr + 28, strlen(hdr) - 28, &name, &value,
	    &used) == 1 && value.len == 6 && memcmp(value.ptr, " a\r\n\tb", 6) == 0,
	    "a folded field is one field");
	ok(milter_header_next((const unsigned char *)"\r\nbody", 6, &name, &value, &used) == 0 &&
	    used == 2, "a blank line ends the section");
	ok(milter_header_next((const unsigned char *)"From x\r\n", 8, &name, &value, &used) == 0 &&
	    used == 0, "a line that is not a field starts the body");
	ok(milter_header_next((const unsigned char *)"A: b", 4, &name, &value, &used) == 0 &&
	    used == 0, "a field without CRLF is not taken");
	ok(milter_header_next((const unsigned char *)"Name : v\r\n", 10, &name, &value, &used) ==
	    1 && name.len == 4, "space before the colon is not part of the name");

	mx_buf_init(&b, 0);
	ok(milter_headers_apply((const unsigned char *)hdr, strlen(hdr), mods, MX_NELEM(mods),
	    &b) == 0, "modifications apply");
	is_string("X-Top: t\r\nSubject: new\r\nX-Del: one\r\nX-Fold: a\r\n\tb\r\n"
	    "X-A: 1\r\nX-Del: x\r\n", mx_buf_cstr(&b),
	    "add, change (any case, name kept), insert at the top, delete the second, add past the end");
	mx_buf_reset(&b);
	ok(milter_headers_apply((const unsigned char *)"bad line\r\n", 10, mods, 1, &b) == -1 &&
	    errno == EINVAL && b.len == 0, "not a header section: EINVAL");
	ok(milter_headers_apply((const unsigned char *)"", 0, mods, 1, &b) == 0 &&
	    strcmp(mx_buf_cstr(&b), "X-A: 1\r\n") == 0, "an empty section gets the added field");
	mx_buf_free(&b);
}

int
main(void)
{
	plan_lazy();
	test_encoders();
	test_framing();
	test_replies();
	test_headers();
	test_header_section();
	free(last_copy);
	return 0;
}
