/*
 * The relay client's output side: command lines and the DATA stream.  It
 * owns the guarantee that nothing we send the primary can be read as
 * anything but what we meant: addresses and parameters with a control
 * octet are refused (the queue never stores them, but this is the last
 * place to notice), and the body encoder never emits a CR or LF outside a
 * CRLF pair, so no line of the body can end early or end the data (SMTP
 * smuggling, PITFALLS 10, in the other direction).  Pure code.
 */
#include "config.h"

#include <errno.h>
#include <string.h>

#include "relay_proto.h"

static bool
relay_proto_clean(const char *s, bool path)
{
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if (c < 0x20 || c == 0x7f)
			return false;
		if (path && (c == '<' || c == '>'))
			return false;
	}
	return true;
}

/* An xtext value as stored: printable ASCII without '=' (RFC 3461 §4). */
static bool
relay_proto_xtext_ok(const char *s)
{
	for (; *s != '\0'; s++)
		if (*s < '!' || *s > '~' || *s == '=')
			return false;
	return true;
}

static int
relay_proto_end(struct mx_buf *out, size_t mark)
{
	if (mx_buf_add(out, "\r\n", 2) == -1) {
		out->len = mark;
		return -1;
	}
	return 0;
}

int
relay_proto_mail(const struct queue_envelope *env, unsigned int ext, uint64_t size,
    struct mx_buf *out)
{
	size_t mark = out->len;
	int r = 0;

	if (!relay_proto_clean(env->sender, true) ||
	    (env->envid[0] != '\0' && !relay_proto_xtext_ok(env->envid))) {
		errno = EINVAL;
		return -1;
	}
	r |= mx_buf_printf(out, "MAIL FROM:<%s>", env->sender);
	if (ext & RELAY_EXT_SIZE)
		r |= mx_buf_printf(out, " SIZE=%llu", (unsigned long long)size);
	if ((ext & RELAY_EXT_8BITMIME) && env->body == QUEUE_BODY_8BITMIME)
		r |= mx_buf_addstr(out, " BODY=8BITMIME");
	if ((ext & RELAY_EXT_SMTPUTF8) && env->smtputf8)
		r |= mx_buf_addstr(out, " SMTPUTF8");
	if (ext & RELAY_EXT_DSN) {
		if (env->ret == QUEUE_RET_FULL)
			r |= mx_buf_addstr(out, " RET=FULL");
		else if (env->ret == QUEUE_RET_HDRS)
			r |= mx_buf_addstr(out, " RET=HDRS");
		if (env->envid[0] != '\0')
			r |= mx_buf_printf(out, " ENVID=%s", env->envid);
	}
	if (r != 0) {
		out->len = mark;
		return -1;
	}
	return relay_proto_end(out, mark);
}

int
relay_proto_rcpt(const struct queue_rcpt *rcpt, unsigned int ext, struct mx_buf *out)
{
	size_t mark = out->len;
	const char *sep = "";
	int r = 0;

	if (rcpt->addr[0] == '\0' || !relay_proto_clean(rcpt->addr, true) ||
	    (rcpt->orcpt[0] != '\0' && !relay_proto_xtext_ok(rcpt->orcpt))) {
		errno = EINVAL;
		return -1;
	}
	r |= mx_buf_printf(out, "RCPT TO:<%s>", rcpt->addr);
	if (ext & RELAY_EXT_DSN) {
		if (rcpt->notify & QUEUE_NOTIFY_NEVER)
			r |= mx_buf_addstr(out, " NOTIFY=NEVER");
		else if (rcpt->notify != 0) {
			r |= mx_buf_addstr(out, " NOTIFY=");
			if (rcpt->notify & QUEUE_NOTIFY_SUCCESS) {
				r |= mx_buf_addstr(out, "SUCCESS");
				sep = ",";
			}
			if (rcpt->notify & QUEUE_NOTIFY_FAILURE) {
				r |= mx_buf_printf(out, "%sFAILURE", sep);
				sep = ",";
			}
			if (rcpt->notify & QUEUE_NOTIFY_DELAY)
				r |= mx_buf_printf(out, "%sDELAY", sep);
		}
		/* ORCPT is "addr-type;xtext": the ';' is part of the stored value. */
		if (rcpt->orcpt[0] != '\0')
			r |= mx_buf_printf(out, " ORCPT=%s", rcpt->orcpt);
	}
	if (r != 0) {
		out->len = mark;
		return -1;
	}
	return relay_proto_end(out, mark);
}

void
relay_stuffer_init(struct relay_stuffer *s)
{
	memset(s, 0, sizeof(*s));
	s->bol = true;
}

static int
relay_stuffer_put(struct relay_stuffer *s, struct mx_buf *out, const void *p, size_t len)
{
	if (len == 0)
		return 0;
	if (mx_buf_add(out, p, len) == -1)
		return -1;
	s->out += len;
	return 0;
}

int
relay_stuffer_feed(struct relay_stuffer *s, const unsigned char *p, size_t len,
    struct mx_buf *out)
{
	size_t i, run = 0;	/* p[run..i) is plain text waiting to be copied */
	unsigned char c;

	/* After a failed buffer add the stream is broken: callers give up on it. */
	s->in += len;
	for (i = 0; i < len; i++) {
		c = p[i];
		if (s->cr) {
			s->cr = false;
			if (c != '\n')
				s->fixed++;
			if (relay_stuffer_put(s, out, "\r\n", 2) == -1)
				return -1;
			s->bol = true;
			if (c == '\n') {
				run = i + 1;
				continue;
			}
			run = i;
		}
		if (c == '\r' || c == '\n') {
			if (relay_stuffer_put(s, out, p + run, i - run) == -1)
				return -1;
			if (c == '\r') {
				s->cr = true;
			} else {
				s->fixed++;
				if (relay_stuffer_put(s, out, "\r\n", 2) == -1)
					return -1;
				s->bol = true;
			}
			run = i + 1;
			continue;
		}
		if (s->bol && c == '.') {
			if (relay_stuffer_put(s, out, p + run, i - run) == -1 ||
			    relay_stuffer_put(s, out, ".", 1) == -1)
				return -1;
			run = i;
		}
		s->bol = false;
	}
	return relay_stuffer_put(s, out, p + run, len - run);
}

int
relay_stuffer_finish(struct relay_stuffer *s, struct mx_buf *out)
{
	if (s->cr) {
		s->cr = false;
		s->fixed++;
		s->bol = false;		/* the CRLF below ends the line */
	}
	if (!s->bol && relay_stuffer_put(s, out, "\r\n", 2) == -1)
		return -1;
	s->bol = true;
	return relay_stuffer_put(s, out, ".\r\n", 3);
}

static int
relay_hex(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int
relay_xtext_decode(const char *in, char *out, size_t size)
{
	size_t o = 0;
	int hi, lo;

	for (; *in != '\0'; in++) {
		char c = *in;

		if (c == '+') {
			if ((hi = relay_hex(in[1])) == -1 || (lo = relay_hex(in[2])) == -1)
				return -1;
			c = (char)(hi * 16 + lo);
			in += 2;
			/* Decoded values end up in DSN fields: no control octets there. */
			if ((unsigned char)c < 0x20 || c == 0x7f)
				return -1;
		} else if (c < '!' || c > '~' || c == '=') {
			return -1;
		}
		if (o + 1 >= size)
			return -1;
		out[o++] = c;
	}
	if (size == 0)
		return -1;
	out[o] = '\0';
	return 0;
}
