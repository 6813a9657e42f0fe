/*
 * Tests for the header section collector: where the section ends (empty
 * line, a line that is no header field, the end of the data), the empty
 * line inserted when the client sent none, our own fields never taking a
 * client's continuation line, the limit, and the removal of forged
 * Authentication-Results fields.  Every input is fed whole, one octet at a
 * time and in chunks of 7, and each way must give the same result.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "basic.h"
#include "smtp_hdr.h"

struct outcome {
	char section[4096];	/* buf[0..end) */
	char body[4096];	/* buf[end..) then what the feed did not take */
	bool done, body_part, inserted, too_big;
	size_t stripped;
};

/* Feed msg in steps of step octets (0: whole); finish at the end if still in the header. */
static void
run(const char *ours, const char *msg, size_t step, size_t max, const char *authserv_id,
    struct outcome *o)
{
	struct smtp_hdr h;
	size_t len = strlen(msg), off = 0, n, used, blen = 0;

	memset(o, 0, sizeof(*o));
	smtp_hdr_init(&h, max);
	if (ours != NULL && smtp_hdr_add(&h, ours, strlen(ours)) == -1)
		bail("smtp_hdr_add failed");
	while (off < len) {
		n = step == 0 || len - off < step ? len - off : step;
		if (!h.done) {
			used = smtp_hdr_feed(&h, (const unsigned char *)msg + off, n);
			if (h.done && !h.too_big) {
				memcpy(o->body + blen, msg + off + used, n - used);
				blen += n - used;
			}
		} else if (!h.too_big) {
			memcpy(o->body + blen, msg + off, n);
			blen += n;
		}
		off += n;
	}
	smtp_hdr_finish(&h);
	if (authserv_id != NULL)
		o->stripped = smtp_hdr_strip_authres(&h, authserv_id);
	o->done = h.done;
	o->body_part = h.body;
	o->inserted = h.inserted;
	o->too_big = h.too_big;
	if (!h.too_big && h.buf.data != NULL) {
		memcpy(o->section, h.buf.data, h.end);
		o->section[h.end] = '\0';
		/* The body part's start held in the buffer goes before the rest. */
		memmove(o->body + (h.buf.len - h.end), o->body, blen);
		memcpy(o->body, h.buf.data + h.end, h.buf.len - h.end);
		o->body[h.buf.len - h.end + blen] = '\0';
	}
	smtp_hdr_free(&h);
}

static void
check(const char *name, const char *ours, const char *msg, const char *section,
    const char *body, bool inserted, const char *authserv_id, size_t stripped)
{
	static const size_t steps[] = { 0, 1, 7 };
	struct outcome o;
	size_t i;

	for (i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		run(ours, msg, steps[i], SMTP_HDR_SECTION_MAX, authserv_id, &o);
		is_string(section, o.section, "%s (step %zu): header section", name, steps[i]);
		is_string(body, o.body, "%s (step %zu): body part", name, steps[i]);
		ok(o.inserted == inserted, "%s (step %zu): empty line %s", name, steps[i],
		    inserted ? "inserted" : "not inserted");
		if (authserv_id != NULL)
			is_int((long long)stripped, (long long)o.stripped,
			    "%s (step %zu): forged fields removed", name, steps[i]);
	}
}

int
main(void)
{
	struct outcome o;
	char big[8192];
	size_t i;

	plan(3 * 3 * 7 + 3 * 3 * 4 + 9);

	check("blank line", NULL, "Subject: a\r\nX: b\r\n\tc\r\n\r\nbody\r\n.x\r\n",
	    "Subject: a\r\nX: b\r\n\tc\r\n", "\r\nbody\r\n.x\r\n", false, NULL, 0);
	check("a line that is no field", NULL, "Subject: a\r\nnot a header\r\nmore\r\n",
	    "Subject: a\r\n", "\r\nnot a header\r\nmore\r\n", true, NULL, 0);
	check("continuation first", NULL, " folded\r\nSubject: x\r\n\r\n", "",
	    "\r\n folded\r\nSubject: x\r\n\r\n", true, NULL, 0);
	check("our fields take no continuation", "Received: by us\r\n",
	    "\tinjected\r\nSubject: x\r\n\r\nb\r\n", "Received: by us\r\n",
	    "\r\n\tinjected\r\nSubject: x\r\n\r\nb\r\n", true, NULL, 0);
	check("headers only", "Received: by us\r\n", "A: 1\r\nB : 2\r\n",
	    "Received: by us\r\nA: 1\r\nB : 2\r\n", "", false, NULL, 0);
	check("empty message", NULL, "", "", "", false, NULL, 0);
	check("no colon before a space-free non-field", NULL, "A: 1\r\nfoo\x01: x\r\n\r\n",
	    "A: 1\r\n", "\r\nfoo\x01: x\r\n\r\n", true, NULL, 0);

	check("forged Authentication-Results", "Received-SPF: pass\r\n",
	    "Authentication-Results: mx.test; spf=pass smtp.mailfrom=a@b\r\n"
	    "Authentication-Results: other.example; dkim=pass\r\n"
	    "authentication-results : (c) mx.test;\r\n\tspf=pass\r\n"
	    "Subject: x\r\n"
	    "Authentication-Results: mx.test.evil; spf=pass\r\n\r\nbody\r\n",
	    "Received-SPF: pass\r\n"
	    "Authentication-Results: other.example; dkim=pass\r\n"
	    "Subject: x\r\n"
	    "Authentication-Results: mx.test.evil; spf=pass\r\n",
	    "\r\nbody\r\n", false, "mx.test", 2);
	check("ours are never stripped", "Authentication-Results: mx.test; spf=pass\r\n",
	    "Subject: x\r\n\r\n", "Authentication-Results: mx.test; spf=pass\r\nSubject: x\r\n",
	    "\r\n", false, "mx.test", 0);
	check("an Authentication-Results field in the body stays", NULL,
	    "Subject: x\r\n\r\nAuthentication-Results: mx.test; spf=pass\r\n",
	    "Subject: x\r\n", "\r\nAuthentication-Results: mx.test; spf=pass\r\n", false,
	    "mx.test", 0);

	/* The limit counts the client's octets only. */
	/* 40 fields of 50 octets: 2000. */
	memset(big, 0, sizeof(big));
	for (i = 0; i < 40; i++)
		memcpy(big + i * 50, "X-Long: 0123456789012345678901234567890123456789\r\n", 50);
	run("Received: by us\r\n", big, 0, 1999, NULL, &o);
	ok(o.too_big && o.done, "a header section over the limit: too_big");
	run("Received: by us\r\n", big, 1, 1999, NULL, &o);
	ok(o.too_big && o.done, "over the limit fed octet by octet: too_big");
	run("Received: by us\r\n", big, 0, 2000, NULL, &o);
	ok(!o.too_big && o.done && !o.body_part, "exactly at the limit: kept");
	run(NULL, "A: 1\r\nno end", 0, 100, NULL, &o);
	is_string("A: 1\r\n", o.section, "an unfinished last line is not a field");
	is_string("\r\nno end", o.body, "it becomes the body after an inserted empty line");
	run(NULL, "A: 1\r\n\r\n", 0, 100, NULL, &o);
	ok(o.body_part && !o.inserted, "blank line with nothing after it: a body part");
	run(NULL, "A: 1\r\n", 0, 100, NULL, &o);
	ok(!o.body_part, "no blank line at all: no body part");
	{
		struct smtp_hdr h;

		smtp_hdr_init(&h, 100);
		(void)smtp_hdr_feed(&h, (const unsigned char *)"A: 1\r\n", 6);
		ok(smtp_hdr_add(&h, "B: 2\r\n", 6) == -1, "our fields only before the client's");
		smtp_hdr_free(&h);
		smtp_hdr_init(&h, 100);
		ok(smtp_hdr_strip_authres(&h, "mx.test") == 0, "nothing stripped before done");
		smtp_hdr_free(&h);
	}
	return 0;
}
