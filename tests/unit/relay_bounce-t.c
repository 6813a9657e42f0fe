/*
 * Tests for DSN composition: the top-level header, the three parts with
 * their content types, per-recipient fields (ORCPT decoded, remote MTA,
 * diagnostic), headers-only versus RET=FULL, delay warnings, refusal of
 * missing or unsafe fields, and the date format.  The integration test
 * parses a real DSN with Python's email package as well.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "basic.h"
#include "relay_bounce.h"
#include "util.h"

static const char orig[] =
    "Received: from a by b\r\n"
    "Subject: the original\r\n"
    "Message-ID: <orig@sender.example>\r\n"
    "\r\n"
    "body line 1\r\n"
    "SECRET-BODY-TEXT\r\n";

static bool
has(const struct mx_buf *b, const char *needle)
{
	return memmem(b->data, b->len, needle, strlen(needle)) != NULL;
}

static void
base(struct relay_bounce *b, struct relay_bounce_rcpt *rc)
{
	memset(b, 0, sizeof(*b));
	memset(rc, 0, 2 * sizeof(*rc));
	rc[0].addr = "bob@reg.test";
	rc[0].orcpt = "rfc822;Bob+2BX@reg.test";
	rc[0].status = "5.1.1";
	rc[0].diag = "550 5.1.1 <bob@reg.test>: Recipient address rejected";
	rc[0].remote_mta = "primary.reg.test";
	rc[0].last_attempt = 1700000100;
	rc[1].addr = "carol@reg.test";
	rc[1].orcpt = "";
	rc[1].status = "5.4.7";
	rc[1].diag = "";
	rc[1].remote_mta = "";
	b->action = RELAY_BOUNCE_FAILED;
	b->reporting_mta = "mx.test";
	b->queue_id = "0123456789abcdefghij";
	b->message_id = "dsn.0123456789abcdefghij@mx.test";
	b->boundary = "mxedge-boundary-1";
	b->sender = "alice@sender.example";
	b->envid = "ENV+2B1";
	b->arrival = 1700000000;
	b->now = 1700000200;
	b->rcpts = rc;
	b->nrcpts = 2;
}

int
main(void)
{
	struct relay_bounce b;
	struct relay_bounce_rcpt rc[2];
	struct mx_buf out;
	char date[40];

	plan_lazy();
	mx_buf_init(&out, 0);

	is_string("Tue, 14 Nov 2023 22:13:20 +0000", relay_bounce_date(1700000000, date,
	    sizeof(date)), "RFC 5322 date in UTC");
	is_int(83, (long long)relay_bounce_header_len((const unsigned char *)orig,
	    sizeof(orig) - 1), "header section length");
	is_int(2, (long long)relay_bounce_header_len((const unsigned char *)"\r\nbody", 6),
	    "empty header section");
	is_int(5, (long long)relay_bounce_header_len((const unsigned char *)"a: b\n", 5),
	    "no empty line: the whole thing");

	base(&b, rc);
	ok(relay_bounce_compose(&b, (const unsigned char *)orig, sizeof(orig) - 1, &out) == 0,
	    "failure DSN composed");
	ok(has(&out, "To: <alice@sender.example>\r\n"), "sent to the envelope sender");
	ok(has(&out, "From: Mail Delivery System <MAILER-DAEMON@mx.test>\r\n"), "From");
	ok(has(&out, "Auto-Submitted: auto-replied\r\n"), "Auto-Submitted");
	ok(has(&out, "Content-Type: multipart/report; report-type=delivery-status;\r\n"
	    "\tboundary=\"mxedge-boundary-1\"\r\n"), "multipart/report");
	ok(has(&out, "Content-Type: message/delivery-status\r\n"), "delivery-status part");
	ok(has(&out, "Reporting-MTA: dns; mx.test\r\n"), "Reporting-MTA");
	ok(has(&out, "Original-Envelope-Id: ENV+1\r\n"), "ENVID decoded");
	ok(has(&out, "Arrival-Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n"), "Arrival-Date");
	ok(has(&out, "\r\nOriginal-Recipient: rfc822; Bob+X@reg.test\r\n"
	    "Final-Recipient: rfc822; bob@reg.test\r\nAction: failed\r\nStatus: 5.1.1\r\n"
	    "Remote-MTA: dns; primary.reg.test\r\n"
	    "Diagnostic-Code: smtp; 550 5.1.1 <bob@reg.test>: Recipient address rejected\r\n"
	    "Last-Attempt-Date: Tue, 14 Nov 2023 22:15:00 +0000\r\n"),
	    "first recipient's fields");
	ok(has(&out, "\r\nFinal-Recipient: rfc822; carol@reg.test\r\nAction: failed\r\n"
	    "Status: 5.4.7\r\n\r\n--mxedge-boundary-1\r\n"), "second recipient: no empty fields");
	ok(has(&out, "Content-Type: text/rfc822-headers\r\n\r\nReceived: from a by b\r\n"
	    "Subject: the original\r\nMessage-ID: <orig@sender.example>\r\n\r\n"
	    "--mxedge-boundary-1--\r\n"), "original headers returned");
	ok(!has(&out, "SECRET-BODY-TEXT"), "the body is not returned without RET=FULL");
	ok(has(&out, "<bob@reg.test>: host primary.reg.test said:\r\n    550 5.1.1"),
	    "human-readable part names the host and the reply");
	ok(memcmp(out.data + out.len - 24, "\r\n--mxedge-boundary-1--\r\n", 24) == 0 ||
	    has(&out, "--mxedge-boundary-1--\r\n"), "closing boundary");

	mx_buf_reset(&out);
	b.full = true;
	b.eight_bit = true;
	ok(relay_bounce_compose(&b, (const unsigned char *)orig, sizeof(orig) - 1, &out) == 0,
	    "RET=FULL DSN composed");
	ok(has(&out, "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
	    "Received: from a by b\r\n"), "whole message as message/rfc822, 8bit");
	ok(has(&out, "SECRET-BODY-TEXT\r\n\r\n--mxedge-boundary-1--\r\n"), "body included");

	mx_buf_reset(&out);
	b.full = false;
	b.eight_bit = false;
	b.action = RELAY_BOUNCE_DELAYED;
	b.retry_until = 1700432000;
	rc[0].status = "4.4.1";
	ok(relay_bounce_compose(&b, (const unsigned char *)"Subject: x", 10, &out) == 0,
	    "delay warning composed");
	ok(has(&out, "Subject: Delayed Mail (still being retried)\r\n"), "delay subject");
	ok(has(&out, "Action: delayed\r\nStatus: 4.4.1\r\n"), "Action: delayed");
	ok(has(&out, "Will-Retry-Until: Sun, 19 Nov 2023 22:13:20 +0000\r\n"), "Will-Retry-Until");
	ok(has(&out, "text/rfc822-headers\r\n\r\nSubject: x\r\n\r\n--"),
	    "an unterminated header line is ended");

	mx_buf_reset(&out);
	b.sender = "";
	ok(relay_bounce_compose(&b, NULL, 0, &out) == -1 && out.len == 0,
	    "never composed for the null sender");
	b.sender = "a@b\r\nBcc: x@y";
	ok(relay_bounce_compose(&b, NULL, 0, &out) == -1 && out.len == 0,
	    "a sender with CRLF is refused");
	b.sender = "alice@sender.example";
	rc[0].diag = "550 bad\r\nInjected: yes";
	rc[1].orcpt = "rfc822;x+0Ay";
	ok(relay_bounce_compose(&b, NULL, 0, &out) == 0, "composed with unsafe fields");
	ok(!has(&out, "Injected"), "a diagnostic with CRLF is left out");
	ok(!has(&out, "Original-Recipient: rfc822; x"), "an ORCPT decoding to LF is left out");

	mx_buf_free(&out);
	return 0;
}
