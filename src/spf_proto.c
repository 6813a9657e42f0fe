/*
 * SPF messages and header fields (see spf_proto.h).  Owns nothing.
 * Decoders trust no length: each field is checked against what is left of
 * the datagram and against its own maximum, strings may carry no NUL or
 * control octet, and a datagram must be used up exactly.  The header
 * writers quote or replace whatever could break a header line, since the
 * sender, the HELO name and the helper's comment are all chosen by
 * strangers.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "spf_proto.h"

#define FOLD_AT 76		/* fold before a token that would pass this column */

const char *
spf_res_name(enum spf_res r)
{
	static const char *const names[] = {
		"none", "neutral", "pass", "fail", "softfail", "temperror", "permerror"
	};

	if ((size_t)r < MX_NELEM(names))
		return names[r];
	return "temperror";
}

/* Writer and reader over a datagram. */
struct wr {
	unsigned char *p;
	size_t len;
	size_t size;
	bool bad;
};

static void
wr_bytes(struct wr *w, const void *p, size_t n)
{
	if (w->bad || n > w->size - w->len) {
		w->bad = true;
		return;
	}
	memcpy(w->p + w->len, p, n);
	w->len += n;
}

static void
wr_u8(struct wr *w, unsigned int v)
{
	unsigned char c = (unsigned char)v;

	wr_bytes(w, &c, 1);
}

static void
wr_u32(struct wr *w, uint32_t v)
{
	unsigned char x[4] = { (unsigned char)(v >> 24), (unsigned char)(v >> 16),
	    (unsigned char)(v >> 8), (unsigned char)v };

	wr_bytes(w, x, 4);
}

/* A string field: 16-bit length, the octets; refused over max or with controls. */
static void
wr_str(struct wr *w, const char *s, size_t max)
{
	size_t n = strnlen(s, max + 1), i;
	unsigned char h[2];

	if (n > max) {
		w->bad = true;
		return;
	}
	for (i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) {
			w->bad = true;
			return;
		}
	h[0] = (unsigned char)(n >> 8);
	h[1] = (unsigned char)n;
	wr_bytes(w, h, 2);
	wr_bytes(w, s, n);
}

struct rd {
	const unsigned char *p;
	size_t left;
	bool bad;
};

static const unsigned char *
rd_bytes(struct rd *r, size_t n)
{
	const unsigned char *p = r->p;

	if (r->bad || n > r->left) {
		r->bad = true;
		return NULL;
	}
	r->p += n;
	r->left -= n;
	return p;
}

static unsigned int
rd_u8(struct rd *r)
{
	const unsigned char *p = rd_bytes(r, 1);

	return p != NULL ? p[0] : 0;
}

static uint32_t
rd_u32(struct rd *r)
{
	const unsigned char *p = rd_bytes(r, 4);

	if (p == NULL)
		return 0;
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Into out[max + 1], NUL-terminated. */
static void
rd_str(struct rd *r, char *out, size_t max)
{
	const unsigned char *h = rd_bytes(r, 2), *p;
	size_t n, i;

	out[0] = '\0';
	if (h == NULL)
		return;
	n = (size_t)h[0] << 8 | h[1];
	if (n > max) {
		r->bad = true;
		return;
	}
	if ((p = rd_bytes(r, n)) == NULL)
		return;
	for (i = 0; i < n; i++)
		if (p[i] < 0x20 || p[i] == 0x7f) {
			r->bad = true;
			return;
		}
	memcpy(out, p, n);
	out[n] = '\0';
}

static int
wr_end(struct wr *w)
{
	return w->bad ? -1 : (int)w->len;
}

int
spf_msg_put_config(const struct spf_config_msg *m, unsigned char *buf, size_t size)
{
	struct wr w = { buf, 0, size, false };

	wr_u8(&w, 'C');
	wr_u32(&w, m->timeout);
	wr_u8(&w, m->log_stderr ? 1 : 0);
	wr_u8(&w, m->log_level);
	wr_str(&w, m->resolver, SPF_NAME_MAX);
	wr_str(&w, m->receiver, SPF_NAME_MAX);
	return wr_end(&w);
}

int
spf_msg_put_query(const struct spf_query_msg *m, unsigned char *buf, size_t size)
{
	struct wr w = { buf, 0, size, false };

	if (m->family != 4 && m->family != 6)
		return -1;
	wr_u8(&w, 'Q');
	wr_u32(&w, m->id);
	wr_u8(&w, (unsigned int)m->family);
	wr_bytes(&w, m->addr, 16);
	wr_str(&w, m->helo, SPF_HELO_MAX);
	wr_str(&w, m->sender, SPF_SENDER_MAX);
	return wr_end(&w);
}

int
spf_msg_put_reply(const struct spf_reply_msg *m, unsigned char *buf, size_t size)
{
	struct wr w = { buf, 0, size, false };

	if ((unsigned int)m->result >= SPF_NRES)
		return -1;
	wr_u8(&w, 'R');
	wr_u32(&w, m->id);
	wr_u8(&w, (unsigned int)m->result);
	wr_u8(&w, m->helo_identity ? 1 : 0);
	wr_str(&w, m->comment, SPF_COMMENT_MAX);
	return wr_end(&w);
}

enum spf_msg_type
spf_msg_type(const unsigned char *buf, size_t len)
{
	if (len == 0)
		return SPF_MSG_INVALID;
	switch (buf[0]) {
	case 'C':
		return SPF_MSG_CONFIG;
	case 'Q':
		return SPF_MSG_QUERY;
	case 'R':
		return SPF_MSG_REPLY;
	default:
		return SPF_MSG_INVALID;
	}
}

static int
rd_end(struct rd *r)
{
	return r->bad || r->left != 0 ? -1 : 0;
}

int
spf_msg_get_config(const unsigned char *buf, size_t len, struct spf_config_msg *m)
{
	struct rd r = { buf, len, false };

	memset(m, 0, sizeof(*m));
	if (rd_u8(&r) != 'C')
		return -1;
	m->timeout = rd_u32(&r);
	m->log_stderr = rd_u8(&r) != 0;
	m->log_level = (uint8_t)rd_u8(&r);
	rd_str(&r, m->resolver, SPF_NAME_MAX);
	rd_str(&r, m->receiver, SPF_NAME_MAX);
	return rd_end(&r);
}

int
spf_msg_get_query(const unsigned char *buf, size_t len, struct spf_query_msg *m)
{
	struct rd r = { buf, len, false };
	const unsigned char *a;

	memset(m, 0, sizeof(*m));
	if (rd_u8(&r) != 'Q')
		return -1;
	m->id = rd_u32(&r);
	m->family = (int)rd_u8(&r);
	if ((a = rd_bytes(&r, 16)) != NULL)
		memcpy(m->addr, a, 16);
	rd_str(&r, m->helo, SPF_HELO_MAX);
	rd_str(&r, m->sender, SPF_SENDER_MAX);
	if (m->family != 4 && m->family != 6)
		return -1;
	return rd_end(&r);
}

int
spf_msg_get_reply(const unsigned char *buf, size_t len, struct spf_reply_msg *m)
{
	struct rd r = { buf, len, false };
	unsigned int res;

	memset(m, 0, sizeof(*m));
	if (rd_u8(&r) != 'R')
		return -1;
	m->id = rd_u32(&r);
	res = rd_u8(&r);
	m->helo_identity = rd_u8(&r) != 0;
	rd_str(&r, m->comment, SPF_COMMENT_MAX);
	if (res >= SPF_NRES)
		return -1;
	m->result = (enum spf_res)res;
	return rd_end(&r);
}

/* Header fields ------------------------------------------------------------ */

/* RFC 5322 atext. */
static bool
is_atext(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	    (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL) || c >= 0x80;
}

static bool
is_dot_atom(const char *s, size_t n)
{
	size_t i;

	if (n == 0 || s[0] == '.' || s[n - 1] == '.')
		return false;
	for (i = 0; i < n; i++) {
		if (s[i] == '.') {
			if (s[i + 1] == '.')
				return false;
			continue;
		}
		if (!is_atext((unsigned char)s[i]))
			return false;
	}
	return true;
}

/* The header line being built, to fold at word boundaries. */
struct hdr {
	struct mx_buf *out;
	size_t line;		/* octets on the current line */
	bool bad;
};

static void
hdr_raw(struct hdr *h, const char *s, size_t n)
{
	if (!h->bad && mx_buf_add(h->out, s, n) == -1)
		h->bad = true;
	h->line += n;
}

/* A token preceded by a space, or by a fold when the line would get long. */
static void
hdr_token(struct hdr *h, const struct mx_buf *tok)
{
	if (h->line + 1 + tok->len > FOLD_AT && h->line > 0) {
		hdr_raw(h, "\r\n\t", 3);
		h->line = 1;
	} else
		hdr_raw(h, " ", 1);
	hdr_raw(h, (const char *)tok->data, tok->len);
}

/* Append s to b as a dot-atom if it is one, else as a quoted-string. */
static int
put_value(struct mx_buf *b, const char *s)
{
	size_t n = strlen(s), i;
	int r = 0;

	if (is_dot_atom(s, n))
		return mx_buf_add(b, s, n);
	r |= mx_buf_add(b, "\"", 1);
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '"' || c == '\\')
			r |= mx_buf_add(b, "\\", 1);
		if (c < 0x20 || c == 0x7f)
			c = '?';
		r |= mx_buf_add(b, &c, 1);
	}
	r |= mx_buf_add(b, "\"", 1);
	return r;
}

/* A comment "(...)" with parentheses and backslashes escaped, controls replaced. */
static int
put_comment(struct mx_buf *b, const char *s)
{
	size_t i;
	int r = 0;

	r |= mx_buf_add(b, "(", 1);
	for (i = 0; s[i] != '\0' && i < SPF_COMMENT_MAX; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '(' || c == ')' || c == '\\')
			r |= mx_buf_add(b, "\\", 1);
		if (c < 0x20 || c >= 0x7f)
			c = '?';
		r |= mx_buf_add(b, &c, 1);
	}
	r |= mx_buf_add(b, ")", 1);
	return r;
}

static void
hdr_pair(struct hdr *h, struct mx_buf *tok, const char *key, const char *value, bool last)
{
	if (value == NULL)
		return;
	mx_buf_reset(tok);
	if (mx_buf_addstr(tok, key) == -1 || mx_buf_add(tok, "=", 1) == -1 ||
	    put_value(tok, value) != 0 || (!last && mx_buf_add(tok, ";", 1) == -1)) {
		h->bad = true;
		return;
	}
	hdr_token(h, tok);
}

int
spf_format_received(struct mx_buf *out, const struct spf_header_info *in)
{
	struct hdr h = { out, 0, false };
	struct mx_buf tok;
	size_t start = out->len;
	char from[SPF_SENDER_MAX + SPF_HELO_MAX + 16];
	const char *sender = in->sender;

	mx_buf_init(&tok, 0);
	hdr_raw(&h, "Received-SPF:", 13);
	mx_buf_addstr(&tok, spf_res_name(in->result));
	hdr_token(&h, &tok);
	if (in->comment != NULL && in->comment[0] != '\0') {
		mx_buf_reset(&tok);
		if (put_comment(&tok, in->comment) != 0)
			h.bad = true;
		else
			hdr_token(&h, &tok);
	}
	/* The null sender is checked as postmaster@HELO (RFC 7208 §2.4). */
	if (sender != NULL && sender[0] == '\0' && in->helo != NULL) {
		snprintf(from, sizeof(from), "postmaster@%s", in->helo);
		sender = from;
	}
	hdr_pair(&h, &tok, "receiver", in->receiver, false);
	hdr_pair(&h, &tok, "client-ip", in->client_ip, false);
	hdr_pair(&h, &tok, "envelope-from", sender, false);
	hdr_pair(&h, &tok, "helo", in->helo, false);
	hdr_pair(&h, &tok, "identity", in->helo_identity ? "helo" : "mailfrom", true);
	hdr_raw(&h, "\r\n", 2);
	mx_buf_free(&tok);
	if (h.bad) {
		out->len = start;
		errno = ENOMEM;
		return -1;
	}
	return 0;
}

/* A domain-ish value for smtp.mailfrom/smtp.helo: local@domain when plain, else quoted. */
static int
put_pvalue(struct mx_buf *b, const char *s)
{
	const char *at = strrchr(s, '@');
	size_t i;

	if (at != NULL && is_dot_atom(s, (size_t)(at - s)) && at[1] != '\0') {
		for (i = 1; at[i] != '\0'; i++)
			if (!((at[i] >= 'a' && at[i] <= 'z') || (at[i] >= 'A' && at[i] <= 'Z') ||
			    (at[i] >= '0' && at[i] <= '9') || at[i] == '-' || at[i] == '.'))
				break;
		if (at[i] == '\0')
			return mx_buf_addstr(b, s);
	}
	if (at == NULL && s[0] != '\0' && is_dot_atom(s, strlen(s)) &&
	    strpbrk(s, "()<>@,;:\\\"/[]?=") == NULL)
		return mx_buf_addstr(b, s);
	return put_value(b, s);
}

int
spf_format_authres(struct mx_buf *out, const struct spf_header_info *in)
{
	struct hdr h = { out, 0, false };
	struct mx_buf tok;
	size_t start = out->len;
	const char *id = in->authserv_id != NULL ? in->authserv_id : "localhost";

	mx_buf_init(&tok, 0);
	hdr_raw(&h, "Authentication-Results:", 23);
	if (put_value(&tok, id) != 0 || mx_buf_add(&tok, ";", 1) == -1)
		h.bad = true;
	else
		hdr_token(&h, &tok);
	mx_buf_reset(&tok);
	if (mx_buf_printf(&tok, "spf=%s", spf_res_name(in->result)) == -1)
		h.bad = true;
	else
		hdr_token(&h, &tok);
	mx_buf_reset(&tok);
	if (in->helo_identity || in->sender == NULL || in->sender[0] == '\0') {
		if (in->helo != NULL && (mx_buf_addstr(&tok, "smtp.helo=") == -1 ||
		    put_pvalue(&tok, in->helo) != 0))
			h.bad = true;
	} else if (mx_buf_addstr(&tok, "smtp.mailfrom=") == -1 ||
	    put_pvalue(&tok, in->sender) != 0)
		h.bad = true;
	if (tok.len > 0)
		hdr_token(&h, &tok);
	hdr_raw(&h, "\r\n", 2);
	mx_buf_free(&tok);
	if (h.bad) {
		out->len = start;
		errno = ENOMEM;
		return -1;
	}
	return 0;
}

/* Skip folding white space and comments; false on an unterminated comment. */
static bool
skip_cfws(const char *s, size_t len, size_t *i)
{
	while (*i < len) {
		char c = s[*i];

		if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
			(*i)++;
			continue;
		}
		if (c == '(') {
			int depth = 0;

			for (; *i < len; (*i)++) {
				if (s[*i] == '\\') {
					(*i)++;
					continue;
				}
				if (s[*i] == '(')
					depth++;
				else if (s[*i] == ')' && --depth == 0)
					break;
			}
			if (*i >= len)
				return false;
			(*i)++;
			continue;
		}
		break;
	}
	return true;
}

static bool
mentions(const char *s, size_t len, const char *id, size_t idlen)
{
	size_t i;

	if (idlen == 0 || idlen > len)
		return false;
	for (i = 0; i + idlen <= len; i++)
		if (strncasecmp(s + i, id, idlen) == 0)
			return true;
	return false;
}

bool
spf_authres_is_ours(const char *field, size_t len, const char *authserv_id)
{
	static const char name[] = "Authentication-Results";
	const char *colon = memchr(field, ':', len);
	size_t nlen, i, idlen = strlen(authserv_id), vlen;
	char value[SPF_NAME_MAX + 2];

	if (idlen > 0 && authserv_id[idlen - 1] == '.')
		idlen--;
	if (colon == NULL)
		return false;
	nlen = (size_t)(colon - field);
	while (nlen > 0 && (field[nlen - 1] == ' ' || field[nlen - 1] == '\t'))
		nlen--;
	if (nlen != sizeof(name) - 1 || strncasecmp(field, name, nlen) != 0)
		return false;
	i = (size_t)(colon - field) + 1;
	if (!skip_cfws(field, len, &i))
		goto unsure;
	vlen = 0;
	if (i < len && field[i] == '"') {
		/* A quoted-string authserv-id. */
		for (i++; i < len && field[i] != '"'; i++) {
			if (field[i] == '\\' && i + 1 < len)
				i++;
			if (vlen >= sizeof(value) - 1)
				goto unsure;
			value[vlen++] = field[i];
		}
		if (i >= len)
			goto unsure;
	} else {
		for (; i < len; i++) {
			unsigned char c = (unsigned char)field[i];

			if (c <= ' ' || c == 0x7f || strchr("()<>@,;:\\\"/[]?=", c) != NULL)
				break;
			if (vlen >= sizeof(value) - 1)
				goto unsure;
			value[vlen++] = (char)c;
		}
	}
	if (vlen > 0 && value[vlen - 1] == '.')
		vlen--;
	if (vlen == 0)
		goto unsure;
	return vlen == idlen && strncasecmp(value, authserv_id, idlen) == 0;
unsure:
	return mentions(field, len, authserv_id, idlen);
}
