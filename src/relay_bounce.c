/*
 * Composition of RFC 3464 delivery status notifications.  It owns the layout
 * of the report: a human-readable part, the machine-readable
 * message/delivery-status part, and the original headers (text/rfc822-
 * headers) or the whole original (message/rfc822, RET=FULL).  It trusts its
 * caller's strings to be free of control octets (they come from the queue,
 * which refuses them) and checks it anyway, leaving out a field rather than
 * writing a broken one.  It trusts nothing in the original message except
 * that it ends lines with CRLF; a last line without one is ended here.
 */
#include "config.h"

#include <errno.h>
#include <string.h>
#include <time.h>

#include "relay_bounce.h"
#include "relay_proto.h"

const char *
relay_bounce_date(int64_t t, char *buf, size_t size)
{
	static const char *const days[] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
	static const char *const months[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
		"Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	struct tm tm;
	time_t tt = (time_t)t;

	/* Day and month names by hand: strftime's follow the locale. */
	if (gmtime_r(&tt, &tm) == NULL || tm.tm_wday < 0 || tm.tm_wday > 6 ||
	    tm.tm_mon < 0 || tm.tm_mon > 11 ||
	    mx_snprintf(buf, size, "%s, %02d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday],
	    tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
	    tm.tm_sec) == -1) {
		if (size > 0)
			buf[0] = '\0';
	}
	return buf;
}

size_t
relay_bounce_header_len(const unsigned char *msg, size_t len)
{
	size_t i;

	if (len >= 2 && msg[0] == '\r' && msg[1] == '\n')
		return 2;
	for (i = 0; i + 3 < len; i++)
		if (msg[i] == '\r' && msg[i + 1] == '\n' && msg[i + 2] == '\r' &&
		    msg[i + 3] == '\n')
			return i + 4;
	return len;
}

static bool
relay_bounce_clean(const char *s)
{
	return s != NULL && !mx_str_has_ctl(s);
}

/* Every value we write into a header-like field, checked once more. */
static int
relay_bounce_field(struct mx_buf *out, const char *name, const char *prefix, const char *value)
{
	if (!relay_bounce_clean(value) || value[0] == '\0')
		return 0;
	return mx_buf_printf(out, "%s: %s%s\r\n", name, prefix, value);
}

static int
relay_bounce_text(const struct relay_bounce *b, struct mx_buf *out)
{
	char date[40];
	size_t i;
	int r = 0;

	r |= mx_buf_printf(out, "This is the mail system at host %s.\r\n\r\n", b->reporting_mta);
	if (b->action == RELAY_BOUNCE_FAILED) {
		r |= mx_buf_addstr(out,
		    "Your message could not be delivered to one or more recipients.\r\n"
		    "It is attached below.  The recipients and the reasons:\r\n\r\n");
	} else {
		r |= mx_buf_printf(out,
		    "Your message has not been delivered yet to one or more recipients.\r\n"
		    "This is only a warning: the mail system will keep trying until\r\n"
		    "%s.  You do not need to send the message again.\r\n\r\n",
		    relay_bounce_date(b->retry_until, date, sizeof(date)));
	}
	for (i = 0; i < b->nrcpts; i++) {
		const struct relay_bounce_rcpt *rc = &b->rcpts[i];

		if (!relay_bounce_clean(rc->addr))
			continue;
		r |= mx_buf_printf(out, "<%s>:", rc->addr);
		if (relay_bounce_clean(rc->remote_mta) && rc->remote_mta[0] != '\0')
			r |= mx_buf_printf(out, " host %s said:", rc->remote_mta);
		if (relay_bounce_clean(rc->diag) && rc->diag[0] != '\0')
			r |= mx_buf_printf(out, "\r\n    %s\r\n\r\n", rc->diag);
		else
			r |= mx_buf_printf(out, "\r\n    status %s\r\n\r\n",
			    relay_bounce_clean(rc->status) ? rc->status : "5.0.0");
	}
	return r;
}

static int
relay_bounce_status(const struct relay_bounce *b, struct mx_buf *out)
{
	char date[40], dec[512];
	size_t i;
	int r = 0;

	r |= relay_bounce_field(out, "Reporting-MTA", "dns; ", b->reporting_mta);
	r |= relay_bounce_field(out, "X-Mxedge-Queue-ID", "", b->queue_id);
	if (b->envid != NULL && b->envid[0] != '\0' &&
	    relay_xtext_decode(b->envid, dec, sizeof(dec)) == 0)
		r |= relay_bounce_field(out, "Original-Envelope-Id", "", dec);
	if (b->arrival > 0)
		r |= relay_bounce_field(out, "Arrival-Date", "",
		    relay_bounce_date(b->arrival, date, sizeof(date)));
	for (i = 0; i < b->nrcpts; i++) {
		const struct relay_bounce_rcpt *rc = &b->rcpts[i];
		const char *semi;

		if (!relay_bounce_clean(rc->addr))
			continue;
		r |= mx_buf_addstr(out, "\r\n");
		/* ORCPT is "addr-type;xtext"; the field wants the address decoded. */
		if (rc->orcpt != NULL && (semi = strchr(rc->orcpt, ';')) != NULL &&
		    semi > rc->orcpt && (size_t)(semi - rc->orcpt) < 32 &&
		    relay_xtext_decode(semi + 1, dec, sizeof(dec)) == 0 &&
		    relay_bounce_clean(rc->orcpt))
			r |= mx_buf_printf(out, "Original-Recipient: %.*s; %s\r\n",
			    (int)(semi - rc->orcpt), rc->orcpt, dec);
		r |= relay_bounce_field(out, "Final-Recipient", "rfc822; ", rc->addr);
		r |= mx_buf_printf(out, "Action: %s\r\n",
		    b->action == RELAY_BOUNCE_FAILED ? "failed" : "delayed");
		r |= mx_buf_printf(out, "Status: %s\r\n", relay_bounce_clean(rc->status) &&
		    rc->status[0] != '\0' ? rc->status :
		    b->action == RELAY_BOUNCE_FAILED ? "5.0.0" : "4.0.0");
		r |= relay_bounce_field(out, "Remote-MTA", "dns; ", rc->remote_mta);
		r |= relay_bounce_field(out, "Diagnostic-Code", "smtp; ", rc->diag);
		if (rc->last_attempt > 0)
			r |= relay_bounce_field(out, "Last-Attempt-Date", "",
			    relay_bounce_date(rc->last_attempt, date, sizeof(date)));
		if (b->action == RELAY_BOUNCE_DELAYED && b->retry_until > 0)
			r |= relay_bounce_field(out, "Will-Retry-Until", "",
			    relay_bounce_date(b->retry_until, date, sizeof(date)));
	}
	return r;
}

int
relay_bounce_compose(const struct relay_bounce *b, const unsigned char *orig, size_t origlen,
    struct mx_buf *out)
{
	char date[40];
	size_t mark = out->len, hlen, n;
	int r = 0;

	if (b->reporting_mta == NULL || b->sender == NULL || b->sender[0] == '\0' ||
	    b->boundary == NULL || b->boundary[0] == '\0' || b->message_id == NULL ||
	    !relay_bounce_clean(b->reporting_mta) || !relay_bounce_clean(b->sender) ||
	    !relay_bounce_clean(b->boundary) || !relay_bounce_clean(b->message_id) ||
	    (orig == NULL && origlen > 0)) {
		errno = EINVAL;
		return -1;
	}
	r |= mx_buf_printf(out, "Date: %s\r\n", relay_bounce_date(b->now, date, sizeof(date)));
	r |= mx_buf_printf(out, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n",
	    b->reporting_mta);
	r |= mx_buf_printf(out, "To: <%s>\r\n", b->sender);
	r |= mx_buf_printf(out, "Subject: %s\r\n", b->action == RELAY_BOUNCE_FAILED ?
	    "Undelivered Mail Returned to Sender" : "Delayed Mail (still being retried)");
	r |= mx_buf_printf(out, "Message-ID: <%s>\r\n", b->message_id);
	r |= mx_buf_addstr(out, "Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n");
	r |= mx_buf_printf(out, "Content-Type: multipart/report; report-type=delivery-status;\r\n"
	    "\tboundary=\"%s\"\r\n", b->boundary);
	r |= mx_buf_addstr(out, "\r\nThis is a MIME-encapsulated message.\r\n\r\n");

	r |= mx_buf_printf(out, "--%s\r\nContent-Description: Notification\r\n"
	    "Content-Type: text/plain; charset=us-ascii\r\n\r\n", b->boundary);
	r |= relay_bounce_text(b, out);

	r |= mx_buf_printf(out, "--%s\r\nContent-Description: Delivery report\r\n"
	    "Content-Type: message/delivery-status\r\n\r\n", b->boundary);
	r |= relay_bounce_status(b, out);
	r |= mx_buf_addstr(out, "\r\n");

	hlen = relay_bounce_header_len(orig, origlen);
	if (b->full) {
		r |= mx_buf_printf(out, "--%s\r\nContent-Description: Undelivered Message\r\n"
		    "Content-Type: message/rfc822\r\n", b->boundary);
		n = origlen;
	} else {
		r |= mx_buf_printf(out, "--%s\r\nContent-Description: Undelivered Message "
		    "Headers\r\nContent-Type: text/rfc822-headers\r\n", b->boundary);
		n = hlen;
		/* The empty line ending the header section is not part of this body. */
		if (n >= 2 && orig[n - 2] == '\r' && orig[n - 1] == '\n' &&
		    (n == 2 || (n >= 4 && orig[n - 4] == '\r' && orig[n - 3] == '\n')))
			n -= 2;
	}
	if (b->eight_bit)
		r |= mx_buf_addstr(out, "Content-Transfer-Encoding: 8bit\r\n");
	r |= mx_buf_addstr(out, "\r\n");
	if (n > 0)
		r |= mx_buf_add(out, orig, n);
	if (n > 0 && (n < 2 || orig[n - 2] != '\r' || orig[n - 1] != '\n'))
		r |= mx_buf_addstr(out, "\r\n");
	r |= mx_buf_printf(out, "\r\n--%s--\r\n", b->boundary);
	if (r != 0) {
		out->len = mark;
		return -1;
	}
	return 0;
}
