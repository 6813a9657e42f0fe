/*
 * The relay client's reply parser.  It owns the bounds on what a primary may
 * send us: a line of at most RELAY_REPLY_LINE_MAX octets, at most
 * RELAY_REPLY_LINES_MAX lines, one code for the whole reply, and only text
 * that can never turn into a protocol line or a journal record (NUL and bare
 * CR refuse the reply; other control octets are kept as '?').  It trusts
 * nothing it is fed and copies what it keeps, so it is resumable at any
 * octet.  A refused reply is final: the connection is given up and the
 * recipients are retried later, never bounced on the strength of garbage.
 */
#include "config.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "relay_reply.h"
#include "util.h"

void
relay_reply_init(struct relay_reply_parser *p)
{
	memset(p, 0, sizeof(*p));
}

static enum relay_reply_result
relay_reply_fail(struct relay_reply_parser *p, const char *why)
{
	p->error = why;
	return RELAY_REPLY_BAD;
}

/*
 * An enhanced status code "c.s.d" at the start of text, of class cls, ended
 * by a space or the end of the text.  Returns its length, or 0.
 */
static size_t
relay_reply_status_len(const unsigned char *t, size_t len, int cls)
{
	size_t i = 0, n;
	int part;

	if (len < 5 || t[0] != (unsigned char)('0' + cls) || t[1] != '.')
		return 0;
	i = 2;
	for (part = 0; part < 2; part++) {
		for (n = 0; i < len && n < 4 && isdigit(t[i]); i++, n++)
			;
		if (n == 0 || n > 3)
			return 0;
		if (part == 0) {
			if (i >= len || t[i] != '.')
				return 0;
			i++;
		}
	}
	if (i < len && t[i] != ' ')
		return 0;
	return i;
}

/* Keep one line's text; what does not fit is dropped and flagged. */
static void
relay_reply_keep(struct relay_reply *r, const unsigned char *t, size_t len)
{
	size_t i, off = r->text_len;

	r->line[r->nlines] = (uint16_t)off;
	if (off + len + 1 > sizeof(r->text)) {
		r->truncated = true;
		/* Full: the line reads as "" (its offset is the end of the text). */
		if (off + 1 > sizeof(r->text))
			return;
		len = sizeof(r->text) - off - 1;
	}
	for (i = 0; i < len; i++) {
		unsigned char c = t[i];

		/* NUL and CR never get here; the rest of C0 and DEL become '?'. */
		r->text[off + i] = (c < 0x20 && c != '\t') || c == 0x7f ? '?' : (char)c;
	}
	r->text[off + len] = '\0';
	r->text_len = off + len + 1;
}

static enum relay_reply_result
relay_reply_line_done(struct relay_reply_parser *p, bool *last)
{
	struct relay_reply *r = &p->reply;
	const unsigned char *b = p->buf;
	size_t len = p->len, slen;
	int code;

	*last = false;
	if (len < 3 || !isdigit(b[0]) || !isdigit(b[1]) || !isdigit(b[2]))
		return relay_reply_fail(p, "reply line without a code");
	if (b[0] < '2' || b[0] > '5' || b[1] > '5')
		return relay_reply_fail(p, "reply code out of range");
	if (len > 3 && b[3] != ' ' && b[3] != '-')
		return relay_reply_fail(p, "no space or hyphen after the reply code");
	code = (b[0] - '0') * 100 + (b[1] - '0') * 10 + (b[2] - '0');
	if (r->nlines == 0)
		r->code = code;
	else if (r->code != code)
		return relay_reply_fail(p, "reply code changed within a multi-line reply");
	if (r->nlines >= RELAY_REPLY_LINES_MAX)
		return relay_reply_fail(p, "too many lines in one reply");
	*last = len == 3 || b[3] == ' ';

	b += len > 3 ? 4 : 3;
	len -= len > 3 ? 4 : 3;
	slen = relay_reply_status_len(b, len, code / 100);
	if (slen > 0) {
		if (r->nlines == 0) {
			memcpy(r->status, b, slen);
			r->status[slen] = '\0';
		}
		/* The repeated code on continuation lines is noise in a summary. */
		if (strlen(r->status) == slen && memcmp(r->status, b, slen) == 0) {
			b += slen;
			len -= slen;
			if (len > 0 && *b == ' ') {
				b++;
				len--;
			}
		}
	}
	relay_reply_keep(r, b, len);
	r->nlines++;
	return RELAY_REPLY_MORE;
}

enum relay_reply_result
relay_reply_feed(struct relay_reply_parser *p, const unsigned char *buf, size_t len,
    size_t *consumed, struct relay_reply *out)
{
	enum relay_reply_result res;
	size_t i;
	bool eol, last;

	*consumed = 0;
	if (p->error != NULL)
		return RELAY_REPLY_BAD;
	for (i = 0; i < len; i++) {
		unsigned char c = buf[i];

		p->total++;
		eol = false;
		if (p->cr) {
			if (c != '\n')
				return relay_reply_fail(p, "bare CR in a reply");
			p->cr = false;
			eol = true;
		} else if (c == '\r') {
			p->cr = true;
			continue;
		} else if (c == '\n') {
			/* A bare LF ends the line too: some servers do that; it hides nothing. */
			eol = true;
		} else if (c == '\0') {
			return relay_reply_fail(p, "NUL in a reply");
		} else {
			if (p->len >= RELAY_REPLY_LINE_MAX - 2)
				return relay_reply_fail(p, "reply line too long");
			p->buf[p->len++] = c;
			continue;
		}
		if (!eol)
			continue;
		res = relay_reply_line_done(p, &last);
		if (res == RELAY_REPLY_BAD)
			return res;
		p->len = 0;
		if (last) {
			*out = p->reply;
			*consumed = i + 1;
			relay_reply_init(p);
			return RELAY_REPLY_DONE;
		}
	}
	*consumed = len;
	return RELAY_REPLY_MORE;
}

const char *
relay_reply_line(const struct relay_reply *r, size_t i)
{
	if (i >= r->nlines || r->line[i] >= r->text_len)
		return "";
	/* A line that did not fit at all shares the offset of the end. */
	return r->text + r->line[i];
}

const char *
relay_reply_summary(const struct relay_reply *r, char *buf, size_t size)
{
	size_t o, i, k;
	const char *t;
	bool cut = false;
	int n;

	if (size < 8) {
		if (size > 0)
			buf[0] = '\0';
		return buf;
	}
	n = snprintf(buf, size, "%03d%s%s", r->code, r->status[0] ? " " : "", r->status);
	if (n < 0 || (size_t)n >= size) {
		buf[0] = '\0';
		return buf;
	}
	o = (size_t)n;
	for (i = 0; i < r->nlines && !cut; i++) {
		t = relay_reply_line(r, i);
		if (*t == '\0')
			continue;
		if (o + 1 >= size) {
			cut = true;
			break;
		}
		buf[o++] = ' ';
		for (k = 0; t[k] != '\0'; k++) {
			unsigned char c = (unsigned char)t[k];

			if (o + 1 >= size) {
				cut = true;
				break;
			}
			buf[o++] = c == '\t' ? ' ' : (c < 0x20 || c >= 0x7f) ? '?' : (char)c;
		}
	}
	if (cut)
		memcpy(buf + size - 4, "...", 4);
	else
		buf[o] = '\0';
	return buf;
}

void
relay_reply_status(const struct relay_reply *r, char *out)
{
	int cls = r->code / 100;

	if (r->status[0] != '\0' && r->status[0] == '0' + cls) {
		mx_strlcpy(out, r->status, RELAY_REPLY_STATUS_MAX);
		return;
	}
	if (cls != 2 && cls != 4 && cls != 5)
		cls = 4;
	out[0] = (char)('0' + cls);
	mx_strlcpy(out + 1, ".0.0", RELAY_REPLY_STATUS_MAX - 1);
}

/* A keyword at the start of line, alone or followed by a space. */
static bool
relay_ehlo_keyword(const char *line, const char *kw, const char **rest)
{
	size_t n = strlen(kw);

	if (!mx_strcaseeq_n(line, kw, n) || (line[n] != '\0' && line[n] != ' '))
		return false;
	*rest = line[n] == ' ' ? line + n + 1 : line + n;
	return true;
}

void
relay_ehlo_parse(const struct relay_reply *r, struct relay_ehlo *out)
{
	static const struct {
		const char *kw;
		unsigned int bit;
	} kws[] = {
		{ "PIPELINING", RELAY_EXT_PIPELINING },
		{ "8BITMIME", RELAY_EXT_8BITMIME },
		{ "SMTPUTF8", RELAY_EXT_SMTPUTF8 },
		{ "DSN", RELAY_EXT_DSN },
		{ "STARTTLS", RELAY_EXT_STARTTLS },
		{ "ENHANCEDSTATUSCODES", RELAY_EXT_ENHANCED },
		{ "CHUNKING", RELAY_EXT_CHUNKING },
	};
	const char *line, *rest;
	size_t i, k;

	memset(out, 0, sizeof(*out));
	if (r->code / 100 != 2)
		return;
	/* The first line is the server's name and greeting, never a keyword. */
	for (i = 1; i < r->nlines; i++) {
		line = relay_reply_line(r, i);
		if (relay_ehlo_keyword(line, "SIZE", &rest)) {
			unsigned long long v = 0;
			size_t d;

			out->ext |= RELAY_EXT_SIZE;
			for (d = 0; rest[d] >= '0' && rest[d] <= '9' && d < 19; d++)
				v = v * 10 + (unsigned long long)(rest[d] - '0');
			/* A malformed or absurd limit counts as none: the server decides. */
			out->size_max = (d > 0 && d < 19 && rest[d] == '\0') ? v : 0;
			continue;
		}
		for (k = 0; k < MX_NELEM(kws); k++)
			if (relay_ehlo_keyword(line, kws[k].kw, &rest))
				out->ext |= kws[k].bit;
	}
}
