/*
 * The header section of an incoming message (see smtp_hdr.h).  Owns one
 * bounded buffer per message; trusts nothing it is fed: lines are judged
 * only by their first octet and the octets before the first colon, with
 * the same rules as milter_header_next(), so whatever this keeps as the
 * header section that parser (and milter_headers_apply()) takes whole.
 * Fails by refusing: over the limit or out of memory it stops collecting
 * and says so, and the session refuses the message.
 */
#include "config.h"

#include <string.h>

#include "milter_proto.h"
#include "smtp_hdr.h"
#include "spf_proto.h"

#define AUTHRES "Authentication-Results"
#define AUTHRES_LEN (sizeof(AUTHRES) - 1)

void
smtp_hdr_init(struct smtp_hdr *h, size_t max)
{
	memset(h, 0, sizeof(*h));
	mx_buf_init(&h->buf, 0);
	h->max = max;
}

void
smtp_hdr_free(struct smtp_hdr *h)
{
	mx_buf_free(&h->buf);
	memset(h, 0, sizeof(*h));
}

int
smtp_hdr_add(struct smtp_hdr *h, const void *p, size_t len)
{
	if (h->buf.len != h->base) {
		/* Ours go above every client octet, never among them. */
		return -1;
	}
	if (mx_buf_add(&h->buf, p, len) == -1)
		return -1;
	h->base = h->line = h->buf.len;
	return 0;
}

/* "name:" with a name milter_header_next() accepts. */
static bool
line_is_field(const unsigned char *p, size_t n)
{
	size_t i;

	if (n == 0 || p[0] == ' ' || p[0] == '\t' || p[0] == ':')
		return false;
	for (i = 0; i < n; i++) {
		if (p[i] == ':')
			return true;
		if ((p[i] < 33 || p[i] > 126) && p[i] != ' ' && p[i] != '\t')
			return false;
	}
	return false;
}

/* The section ends before the line at h->line; without a blank line, put one there. */
static void
hdr_end(struct smtp_hdr *h, bool blank)
{
	h->end = h->line;
	h->done = true;
	h->body = true;
	if (blank)
		return;
	if (mx_buf_reserve(&h->buf, 2) == -1) {
		h->error = true;
		return;
	}
	memmove(h->buf.data + h->line + 2, h->buf.data + h->line, h->buf.len - h->line);
	h->buf.data[h->line] = '\r';
	h->buf.data[h->line + 1] = '\n';
	h->buf.len += 2;
	h->inserted = true;
}

/* A whole line (through its LF) ends the buffer at h->line. */
static void
hdr_line(struct smtp_hdr *h)
{
	const unsigned char *l = h->buf.data + h->line;
	size_t n = h->buf.len - h->line;
	bool keep;

	if (n == 2 && l[0] == '\r' && l[1] == '\n') {
		hdr_end(h, true);
		return;
	}
	/* A continuation needs a field of the client's above it, never one of ours. */
	if (l[0] == ' ' || l[0] == '\t')
		keep = h->line > h->base;
	else
		keep = line_is_field(l, n);
	if (keep)
		h->line = h->buf.len;
	else
		hdr_end(h, false);
}

size_t
smtp_hdr_feed(struct smtp_hdr *h, const unsigned char *p, size_t len)
{
	const unsigned char *lf;
	size_t used = 0, n;

	while (used < len && !h->done) {
		lf = memchr(p + used, '\n', len - used);
		n = lf != NULL ? (size_t)(lf - (p + used)) + 1 : len - used;
		if (h->buf.len - h->base + n > h->max) {
			h->too_big = h->done = true;
			return len;
		}
		if (mx_buf_add(&h->buf, p + used, n) == -1) {
			h->error = h->done = true;
			return len;
		}
		used += n;
		if (lf != NULL)
			hdr_line(h);
	}
	return used;
}

void
smtp_hdr_finish(struct smtp_hdr *h)
{
	if (h->done)
		return;
	if (h->line < h->buf.len) {
		/* An unfinished last line is no header field: it is the body. */
		hdr_end(h, false);
		return;
	}
	h->end = h->buf.len;
	h->done = true;
}

size_t
smtp_hdr_strip_authres(struct smtp_hdr *h, const char *authserv_id)
{
	struct mx_view name, value;
	size_t off = h->base, used, removed = 0;

	if (!h->done || h->too_big || h->error)
		return 0;
	while (off < h->end && milter_header_next(h->buf.data + off, h->end - off, &name,
	    &value, &used) == 1) {
		if (name.len == AUTHRES_LEN &&
		    mx_strcaseeq_n((const char *)name.ptr, AUTHRES, AUTHRES_LEN) &&
		    spf_authres_is_ours((const char *)h->buf.data + off, used - 2, authserv_id)) {
			memmove(h->buf.data + off, h->buf.data + off + used,
			    h->buf.len - off - used);
			h->buf.len -= used;
			h->end -= used;
			removed++;
			continue;
		}
		off += used;
	}
	return removed;
}
