/*
 * Milter protocol v6 codec (see milter_proto.h).  Owns nothing but the
 * bytes it is handed.  Trusts nothing a milter sends: every length is
 * checked before use, every string must be NUL-terminated inside its
 * packet, and anything unexpected makes the decoder fail, which the client
 * (milter.c) turns into the milter's failure policy.  Encoders trust their
 * caller for content but still refuse packets over the size cap.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "milter_proto.h"

/* Start a packet: a length placeholder and the command octet. */
static int
pkt_begin(struct mx_buf *b, char cmd, size_t *start)
{
	unsigned char h[5] = { 0, 0, 0, 0, (unsigned char)cmd };

	*start = b->len;
	return mx_buf_add(b, h, sizeof(h));
}

/* Patch the length in; undo the whole packet when it is too big. */
static int
pkt_end(struct mx_buf *b, size_t start)
{
	size_t len = b->len - start - 4;

	if (len > MILTER_PACKET_MAX) {
		b->len = start;
		errno = EMSGSIZE;
		return -1;
	}
	b->data[start] = (unsigned char)(len >> 24);
	b->data[start + 1] = (unsigned char)(len >> 16);
	b->data[start + 2] = (unsigned char)(len >> 8);
	b->data[start + 3] = (unsigned char)len;
	return 0;
}

static int
pkt_fail(struct mx_buf *b, size_t start)
{
	int e = errno;

	b->len = start;
	errno = e;
	return -1;
}

/* A string with its NUL. */
static int
put_str(struct mx_buf *b, const char *s)
{
	return mx_buf_add(b, s, strlen(s) + 1);
}

static int
put_u32(struct mx_buf *b, uint32_t v)
{
	unsigned char x[4] = { (unsigned char)(v >> 24), (unsigned char)(v >> 16),
	    (unsigned char)(v >> 8), (unsigned char)v };

	return mx_buf_add(b, x, sizeof(x));
}

int
milter_put_optneg(struct mx_buf *b, uint32_t version, uint32_t actions, uint32_t protocol)
{
	size_t start;

	if (pkt_begin(b, MILTER_C_OPTNEG, &start) == -1)
		return -1;
	if (put_u32(b, version) == -1 || put_u32(b, actions) == -1 || put_u32(b, protocol) == -1)
		return pkt_fail(b, start);
	return pkt_end(b, start);
}

int
milter_put_macros(struct mx_buf *b, char cmd, const struct milter_macro *m, size_t n)
{
	size_t start, i;
	unsigned char c = (unsigned char)cmd;

	if (pkt_begin(b, MILTER_C_MACRO, &start) == -1)
		return -1;
	if (mx_buf_add(b, &c, 1) == -1)
		return pkt_fail(b, start);
	for (i = 0; i < n; i++) {
		if (m[i].name == NULL || m[i].value == NULL || m[i].name[0] == '\0')
			continue;
		if (put_str(b, m[i].name) == -1 || put_str(b, m[i].value) == -1)
			return pkt_fail(b, start);
	}
	return pkt_end(b, start);
}

int
milter_put_connect(struct mx_buf *b, const char *hostname, char family, uint16_t port,
    const char *addr)
{
	size_t start;
	unsigned char f = (unsigned char)family, p[2] = { (unsigned char)(port >> 8),
	    (unsigned char)port };

	if (family != 'L' && family != '4' && family != '6' && family != 'U') {
		errno = EINVAL;
		return -1;
	}
	if (pkt_begin(b, MILTER_C_CONNECT, &start) == -1)
		return -1;
	if (put_str(b, hostname) == -1 || mx_buf_add(b, &f, 1) == -1)
		return pkt_fail(b, start);
	if (family != 'U' && (mx_buf_add(b, p, 2) == -1 || put_str(b, addr) == -1))
		return pkt_fail(b, start);
	return pkt_end(b, start);
}

static int
put_strings(struct mx_buf *b, char cmd, const char *first, const char *const *more, size_t n)
{
	size_t start, i;

	if (pkt_begin(b, cmd, &start) == -1)
		return -1;
	if (put_str(b, first) == -1)
		return pkt_fail(b, start);
	for (i = 0; i < n; i++)
		if (more[i] != NULL && put_str(b, more[i]) == -1)
			return pkt_fail(b, start);
	return pkt_end(b, start);
}

int
milter_put_helo(struct mx_buf *b, const char *helo)
{
	return put_strings(b, MILTER_C_HELO, helo, NULL, 0);
}

int
milter_put_mail(struct mx_buf *b, const char *path, const char *const *args, size_t nargs)
{
	return put_strings(b, MILTER_C_MAIL, path, args, nargs);
}

int
milter_put_rcpt(struct mx_buf *b, const char *path, const char *const *args, size_t nargs)
{
	return put_strings(b, MILTER_C_RCPT, path, args, nargs);
}

int
milter_put_header(struct mx_buf *b, const char *name, const char *value)
{
	const char *v[1] = { value };

	return put_strings(b, MILTER_C_HEADER, name, v, 1);
}

int
milter_put_body(struct mx_buf *b, const void *data, size_t len)
{
	size_t start;

	if (len > MILTER_CHUNK_MAX) {
		errno = EMSGSIZE;
		return -1;
	}
	if (pkt_begin(b, MILTER_C_BODY, &start) == -1)
		return -1;
	if (mx_buf_add(b, data, len) == -1)
		return pkt_fail(b, start);
	return pkt_end(b, start);
}

int
milter_put_simple(struct mx_buf *b, char cmd)
{
	size_t start;

	switch (cmd) {
	case MILTER_C_DATA: case MILTER_C_EOH: case MILTER_C_BODYEOB: case MILTER_C_ABORT:
	case MILTER_C_QUIT: case MILTER_C_QUIT_NC:
		break;
	default:
		errno = EINVAL;
		return -1;
	}
	if (pkt_begin(b, cmd, &start) == -1)
		return -1;
	return pkt_end(b, start);
}

enum milter_parse
milter_packet_parse(const unsigned char *p, size_t len, size_t max, struct milter_packet *pkt,
    const char **err)
{
	uint32_t n;

	if (max > MILTER_PACKET_MAX)
		max = MILTER_PACKET_MAX;
	if (len < 4)
		return MILTER_PARSE_MORE;
	n = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
	if (n == 0) {
		*err = "packet without a command";
		return MILTER_PARSE_ERROR;
	}
	if (n > max) {
		*err = "packet too long";
		return MILTER_PARSE_ERROR;
	}
	if (len - 4 < n)
		return MILTER_PARSE_MORE;
	pkt->cmd = p[4];
	pkt->data.ptr = p + 5;
	pkt->data.len = n - 1;
	pkt->size = 4 + (size_t)n;
	return MILTER_PARSE_DONE;
}

/* A cursor over a packet's data. */
struct rd {
	const unsigned char *p;
	size_t left;
};

static int
rd_u32(struct rd *r, uint32_t *v)
{
	if (r->left < 4)
		return -1;
	*v = (uint32_t)r->p[0] << 24 | (uint32_t)r->p[1] << 16 | (uint32_t)r->p[2] << 8 | r->p[3];
	r->p += 4;
	r->left -= 4;
	return 0;
}

/* A NUL-terminated string inside the remaining data. */
static int
rd_str(struct rd *r, const char **s, size_t *slen)
{
	const unsigned char *nul = memchr(r->p, '\0', r->left);
	size_t n;

	if (nul == NULL)
		return -1;
	n = (size_t)(nul - r->p);
	*s = (const char *)r->p;
	if (slen != NULL)
		*slen = n;
	r->p += n + 1;
	r->left -= n + 1;
	return 0;
}

static bool
is_digit(int c)
{
	return c >= '0' && c <= '9';
}

/* "d.ddd.ddd" at s (RFC 3463): its length, or 0 if there is none. */
static size_t
enhanced_code_len(const char *s, size_t len)
{
	size_t i = 0, part, digits;

	for (part = 0; part < 3; part++) {
		digits = 0;
		while (i < len && is_digit((unsigned char)s[i]) && digits < 3) {
			i++;
			digits++;
		}
		if (digits == 0 || (part == 0 && digits != 1))
			return 0;
		if (part < 2) {
			if (i >= len || s[i] != '.')
				return 0;
			i++;
		}
	}
	if (i < len && is_digit((unsigned char)s[i]))
		return 0;
	return i;
}

int
milter_replycode_check(const char *text, size_t len, int *code, const char **err)
{
	size_t off = 0, lines = 0;
	int first = -1;

	if (len == 0) {
		*err = "empty reply code";
		return -1;
	}
	while (off < len) {
		const char *line = text + off, *crlf;
		size_t llen, i;
		int c;

		crlf = NULL;
		for (i = off; i + 1 < len; i++)
			if (text[i] == '\r' && text[i + 1] == '\n') {
				crlf = text + i;
				break;
			}
		llen = crlf != NULL ? (size_t)(crlf - line) : len - off;
		if (++lines > MILTER_REPLY_LINES_MAX) {
			*err = "reply code with too many lines";
			return -1;
		}
		if (llen + 2 > MILTER_REPLY_LINE_MAX) {
			*err = "reply code line too long";
			return -1;
		}
		if (llen < 3 || !is_digit((unsigned char)line[0]) ||
		    !is_digit((unsigned char)line[1]) || !is_digit((unsigned char)line[2])) {
			*err = "reply code does not start with three digits";
			return -1;
		}
		c = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
		if (line[0] != '4' && line[0] != '5') {
			*err = "reply code is not 4xx or 5xx";
			return -1;
		}
		if (first == -1)
			first = c;
		else if (c != first) {
			*err = "reply code lines disagree on the code";
			return -1;
		}
		if (crlf != NULL) {
			if (llen < 4 || line[3] != '-') {
				*err = "reply code continuation line without '-'";
				return -1;
			}
		} else if (llen > 3 && line[3] != ' ') {
			*err = "reply code last line without a space after the code";
			return -1;
		}
		for (i = 3; i < llen; i++) {
			unsigned char ch = (unsigned char)line[i];

			if ((ch < 0x20 && ch != '\t') || ch > 0x7e) {
				*err = "reply code text has control or non-ASCII octets";
				return -1;
			}
		}
		if (llen > 4 && enhanced_code_len(line + 4, llen - 4) > 0 && line[4] != line[0]) {
			*err = "enhanced status code class differs from the reply code";
			return -1;
		}
		off += llen;
		if (crlf != NULL) {
			off += 2;
			if (off == len) {
				*err = "reply code ends with a line break";
				return -1;
			}
		}
	}
	*code = first;
	return 0;
}

/* The data must be exactly one string (its NUL is the last octet). */
static int
one_string(struct rd *r, const char **s, size_t *slen)
{
	if (rd_str(r, s, slen) == -1 || r->left != 0)
		return -1;
	return 0;
}

static int
decode_optneg(struct rd *r, struct milter_reply *out, const char **err)
{
	if (rd_u32(r, &out->version) == -1 || rd_u32(r, &out->actions) == -1 ||
	    rd_u32(r, &out->protocol) == -1) {
		*err = "short option negotiation";
		return -1;
	}
	/* SETSYMLIST: pairs of (stage, "list") until the end. */
	while (r->left > 0) {
		uint32_t stage;
		const char *list;
		size_t llen;

		if (rd_u32(r, &stage) == -1 || rd_str(r, &list, &llen) == -1) {
			*err = "malformed macro list in option negotiation";
			return -1;
		}
		if (stage >= MILTER_NSTAGES || llen > MILTER_SYMLIST_MAX ||
		    out->symlist[stage] != NULL) {
			*err = "bad macro list in option negotiation";
			return -1;
		}
		out->symlist[stage] = list;
	}
	return 0;
}

int
milter_reply_decode(const struct milter_packet *pkt, struct milter_reply *out, const char **err)
{
	struct rd r = { pkt->data.ptr, pkt->data.len };
	size_t len;

	memset(out, 0, sizeof(*out));
	switch (pkt->cmd) {
	case MILTER_R_ACCEPT:
		out->kind = MILTER_RK_ACCEPT;
		break;
	case MILTER_R_CONTINUE:
		out->kind = MILTER_RK_CONTINUE;
		break;
	case MILTER_R_REJECT:
		out->kind = MILTER_RK_REJECT;
		break;
	case MILTER_R_TEMPFAIL:
		out->kind = MILTER_RK_TEMPFAIL;
		break;
	case MILTER_R_DISCARD:
		out->kind = MILTER_RK_DISCARD;
		break;
	case MILTER_R_SKIP:
		out->kind = MILTER_RK_SKIP;
		break;
	case MILTER_R_PROGRESS:
		out->kind = MILTER_RK_PROGRESS;
		break;
	case MILTER_R_SHUTDOWN:
		out->kind = MILTER_RK_SHUTDOWN;
		break;
	case MILTER_R_CONN_FAIL:
		out->kind = MILTER_RK_CONN_FAIL;
		break;
	case MILTER_R_REPLYCODE:
		out->kind = MILTER_RK_REPLYCODE;
		if (one_string(&r, &out->value, &len) == -1) {
			*err = "reply code not NUL-terminated";
			return -1;
		}
		if (milter_replycode_check(out->value, len, &out->code, err) == -1)
			return -1;
		return 0;
	case MILTER_R_ADDHEADER:
	case MILTER_R_INSHEADER:
	case MILTER_R_CHGHEADER:
		out->kind = pkt->cmd == MILTER_R_ADDHEADER ? MILTER_RK_ADDHEADER :
		    pkt->cmd == MILTER_R_INSHEADER ? MILTER_RK_INSHEADER : MILTER_RK_CHGHEADER;
		if (pkt->cmd != MILTER_R_ADDHEADER && rd_u32(&r, &out->index) == -1) {
			*err = "header change without an index";
			return -1;
		}
		if (rd_str(&r, &out->name, NULL) == -1 || one_string(&r, &out->value, NULL) == -1) {
			*err = "malformed header modification";
			return -1;
		}
		if (!milter_header_name_ok(out->name)) {
			*err = "bad header name in modification";
			return -1;
		}
		return 0;
	case MILTER_R_QUARANTINE:
		out->kind = MILTER_RK_QUARANTINE;
		if (one_string(&r, &out->value, &len) == -1 || len > MILTER_REPLY_LINE_MAX) {
			*err = "malformed quarantine reason";
			return -1;
		}
		return 0;
	case MILTER_R_ADDRCPT:
	case MILTER_R_DELRCPT:
		out->kind = pkt->cmd == MILTER_R_ADDRCPT ? MILTER_RK_ADDRCPT : MILTER_RK_DELRCPT;
		if (one_string(&r, &out->value, &len) == -1 || len == 0 || len > 1024) {
			*err = "malformed recipient change";
			return -1;
		}
		return 0;
	case MILTER_R_ADDRCPT_PAR:
	case MILTER_R_CHGFROM:
		out->kind = pkt->cmd == MILTER_R_CHGFROM ? MILTER_RK_CHGFROM : MILTER_RK_ADDRCPT_PAR;
		if (rd_str(&r, &out->value, &len) == -1 || len > 1024 ||
		    (pkt->cmd == MILTER_R_ADDRCPT_PAR && len == 0)) {
			*err = "malformed envelope change";
			return -1;
		}
		if (r.left > 0 && (one_string(&r, &out->args, &len) == -1 || len > 1024)) {
			*err = "malformed envelope change arguments";
			return -1;
		}
		return 0;
	case MILTER_R_REPLBODY:
		out->kind = MILTER_RK_REPLBODY;
		out->body = pkt->data;
		return 0;
	case MILTER_R_OPTNEG:
		out->kind = MILTER_RK_OPTNEG;
		return decode_optneg(&r, out, err);
	default:
		*err = "unknown reply";
		return -1;
	}
	/* The replies above carry no data. */
	if (r.left != 0) {
		*err = "unexpected data after a reply";
		return -1;
	}
	return 0;
}

bool
milter_reply_is_final(enum milter_reply_kind kind)
{
	switch (kind) {
	case MILTER_RK_ACCEPT: case MILTER_RK_CONTINUE: case MILTER_RK_REJECT:
	case MILTER_RK_TEMPFAIL: case MILTER_RK_DISCARD: case MILTER_RK_REPLYCODE:
	case MILTER_RK_SKIP: case MILTER_RK_SHUTDOWN: case MILTER_RK_CONN_FAIL:
		return true;
	default:
		return false;
	}
}

bool
milter_header_name_ok(const char *name)
{
	size_t i;

	for (i = 0; name[i] != '\0'; i++) {
		unsigned char c = (unsigned char)name[i];

		if (c < 33 || c > 126 || c == ':' || i >= MILTER_HEADER_NAME_MAX)
			return false;
	}
	return i > 0;
}

int
milter_header_value_normalize(const char *name, const char *value, struct mx_buf *out,
    const char **err)
{
	size_t start = out->len, line = strlen(name) + 2, i;	/* "Name: " */

	for (i = 0; value[i] != '\0'; i++) {
		unsigned char c = (unsigned char)value[i];
		size_t brk = 0;

		if (c == '\r' && value[i + 1] == '\n')
			brk = 2;
		else if (c == '\n')
			brk = 1;
		else if (c == '\r') {
			*err = "bare CR in header value";
			goto fail;
		}
		if (brk > 0) {
			if (value[i + brk] != ' ' && value[i + brk] != '\t') {
				*err = "line break in header value that is not folding";
				goto fail;
			}
			if (mx_buf_add(out, "\r\n", 2) == -1) {
				*err = "out of memory";
				goto fail;
			}
			i += brk - 1;
			line = 0;
			continue;
		}
		if (++line > MILTER_HEADER_LINE_MAX) {
			*err = "header line too long";
			goto fail;
		}
		if (mx_buf_add(out, &c, 1) == -1) {
			*err = "out of memory";
			goto fail;
		}
	}
	return 0;
fail:
	out->len = start;
	return -1;
}

int
milter_header_next(const unsigned char *p, size_t len, struct mx_view *name,
    struct mx_view *value, size_t *used)
{
	size_t i, colon, end;

	*used = 0;
	if (len >= 2 && p[0] == '\r' && p[1] == '\n') {
		*used = 2;
		return 0;
	}
	/* The name: printable octets up to the colon (spaces before it tolerated). */
	for (i = 0; i < len && p[i] != ':'; i++)
		if (p[i] < 33 || p[i] > 126) {
			if (p[i] == ' ' || p[i] == '\t')
				continue;
			return 0;
		}
	if (i == len || i == 0 || p[0] == ' ' || p[0] == '\t')
		return 0;
	colon = i;
	/* The value runs to a CRLF not followed by a space or tab. */
	for (end = colon + 1; end + 1 < len; end++) {
		if (p[end] != '\r' || p[end + 1] != '\n')
			continue;
		if (end + 2 < len && (p[end + 2] == ' ' || p[end + 2] == '\t'))
			continue;
		break;
	}
	if (end + 1 >= len)
		return 0;	/* no CRLF: not a complete header field */
	name->ptr = p;
	name->len = colon;
	while (name->len > 0 && (p[name->len - 1] == ' ' || p[name->len - 1] == '\t'))
		name->len--;
	value->ptr = p + colon + 1;
	value->len = end - colon - 1;
	*used = end + 2;
	return 1;
}

bool
milter_symlist_has(const char *list, const char *name)
{
	size_t nlen;
	const char *p = list;

	if (name[0] == '{') {
		name++;
		nlen = strlen(name);
		if (nlen > 0 && name[nlen - 1] == '}')
			nlen--;
	} else
		nlen = strlen(name);
	while (*p != '\0') {
		const char *w;
		size_t wlen;

		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		w = p;
		while (*p != '\0' && *p != ' ' && *p != '\t' && *p != ',')
			p++;
		wlen = (size_t)(p - w);
		if (wlen > 0 && w[0] == '{') {
			w++;
			wlen--;
			if (wlen > 0 && w[wlen - 1] == '}')
				wlen--;
		}
		if (wlen == nlen && wlen > 0 && memcmp(w, name, nlen) == 0)
			return true;
	}
	return false;
}

/* A header field while modifications are applied: original bytes, or a new one. */
struct hfield {
	const unsigned char *raw;	/* original "Name: value\r\n", or NULL */
	size_t rawlen;
	const char *name;		/* namelen octets, not NUL-terminated */
	size_t namelen;
	const struct milter_mod *mod;	/* new: name and value from here */
};

static bool
hfield_named(const struct hfield *f, const char *name)
{
	size_t n = strlen(name);

	return f->namelen == n && strncasecmp(f->name, name, n) == 0;
}

static int
hfields_insert(struct hfield **v, size_t *n, size_t *cap, size_t at, const struct hfield *f)
{
	if (*n == *cap) {
		size_t ncap = *cap ? *cap * 2 : 32;
		struct hfield *nv = realloc(*v, ncap * sizeof(*nv));

		if (nv == NULL)
			return -1;
		*v = nv;
		*cap = ncap;
	}
	if (at > *n)
		at = *n;
	memmove(*v + at + 1, *v + at, (*n - at) * sizeof(**v));
	(*v)[at] = *f;
	(*n)++;
	return 0;
}

int
milter_headers_apply(const unsigned char *hdr, size_t len, const struct milter_mod *mods,
    size_t n, struct mx_buf *out)
{
	struct hfield *v = NULL, f;
	size_t nv = 0, cap = 0, off = 0, used, i, k, start = out->len;
	struct mx_view name, value;

	while (off < len) {
		if (milter_header_next(hdr + off, len - off, &name, &value, &used) != 1) {
			free(v);
			errno = EINVAL;
			return -1;
		}
		memset(&f, 0, sizeof(f));
		f.raw = hdr + off;
		f.rawlen = used;
		f.name = (const char *)name.ptr;
		f.namelen = name.len;
		if (hfields_insert(&v, &nv, &cap, nv, &f) == -1)
			goto nomem;
		off += used;
	}
	for (i = 0; i < n; i++) {
		const struct milter_mod *m = &mods[i];
		uint32_t seen = 0;

		if (m->kind > MILTER_MOD_CHGHEADER || m->name == NULL || m->value == NULL)
			continue;
		memset(&f, 0, sizeof(f));
		f.mod = m;
		f.name = m->name;
		f.namelen = strlen(m->name);
		if (m->kind == MILTER_MOD_ADDHEADER) {
			if (hfields_insert(&v, &nv, &cap, nv, &f) == -1)
				goto nomem;
			continue;
		}
		if (m->kind == MILTER_MOD_INSHEADER) {
			if (hfields_insert(&v, &nv, &cap, m->index, &f) == -1)
				goto nomem;
			continue;
		}
		/* The index counts from 1; libmilter takes 0 as 1. */
		for (k = 0; k < nv; k++)
			if (hfield_named(&v[k], m->name) && ++seen == (m->index ? m->index : 1))
				break;
		if (k == nv) {
			/* Fewer fields of that name: a change adds it, a deletion does nothing. */
			if (m->value[0] != '\0' && hfields_insert(&v, &nv, &cap, nv, &f) == -1)
				goto nomem;
			continue;
		}
		if (m->value[0] == '\0') {
			memmove(v + k, v + k + 1, (nv - k - 1) * sizeof(*v));
			nv--;
		} else {
			/* A change keeps the field's own name, as sendmail does. */
			f.name = v[k].name;
			f.namelen = v[k].namelen;
			v[k] = f;
		}
	}
	for (k = 0; k < nv; k++) {
		int r;

		if (v[k].raw != NULL)
			r = mx_buf_add(out, v[k].raw, v[k].rawlen);
		else
			r = mx_buf_printf(out, "%.*s: %s\r\n", (int)v[k].namelen, v[k].name,
			    v[k].mod->value);
		if (r == -1)
			goto nomem;
	}
	free(v);
	return 0;
nomem:
	free(v);
	out->len = start;
	errno = ENOMEM;
	return -1;
}

const char *
milter_reply_kind_name(enum milter_reply_kind kind)
{
	static const char *const names[] = {
		"accept", "continue", "reject", "tempfail", "discard", "replycode", "skip",
		"progress", "shutdown", "conn_fail", "addheader", "insheader", "chgheader",
		"quarantine", "addrcpt", "addrcpt_par", "delrcpt", "chgfrom", "replbody", "optneg",
	};

	if ((size_t)kind < MX_NELEM(names))
		return names[kind];
	return "?";
}
