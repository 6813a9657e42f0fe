/*
 * SMTP wire parsing: the command line splitter, the command parser and the
 * DATA-phase machine.  Every byte here comes from an untrusted client, so
 * nothing is trusted but the lengths we measured ourselves: spans are
 * scanned first, checked against the RFC 5321 limits, and only then copied
 * into fixed buffers sized to those limits.  Failure is an answer, never a
 * guess: the parser returns the reply the session should send, and the
 * splitter and DATA machine report bare CR/LF instead of repairing them
 * (SMTP smuggling, PITFALLS 10).  No allocation, no I/O.
 */
#include "config.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "smtp_parse.h"

static const struct {
	const char *name;
	enum smtp_cmd cmd;
} smtp_verbs[] = {
	{ "HELO", SMTP_CMD_HELO },
	{ "EHLO", SMTP_CMD_EHLO },
	{ "MAIL", SMTP_CMD_MAIL },
	{ "RCPT", SMTP_CMD_RCPT },
	{ "DATA", SMTP_CMD_DATA },
	{ "RSET", SMTP_CMD_RSET },
	{ "NOOP", SMTP_CMD_NOOP },
	{ "QUIT", SMTP_CMD_QUIT },
	{ "VRFY", SMTP_CMD_VRFY },
	{ "EXPN", SMTP_CMD_EXPN },
	{ "HELP", SMTP_CMD_HELP },
	{ "STARTTLS", SMTP_CMD_STARTTLS },
	{ "BDAT", SMTP_CMD_BDAT },
	{ "AUTH", SMTP_CMD_AUTH },
};

static int
fail(struct smtp_parse_error *err, int code, const char *status, const char *text)
{
	err->code = code;
	err->status = status;
	err->text = text;
	return -1;
}

static unsigned char
lc(unsigned char c)
{
	return c >= 'A' && c <= 'Z' ? (unsigned char)(c + ('a' - 'A')) : c;
}

static bool
is_alpha(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool
is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static bool
is_hex(unsigned char c)
{
	return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* RFC 5322 atext. */
static bool
is_atext(unsigned char c)
{
	return is_alpha(c) || is_digit(c) || (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/* Case-insensitive: do the n bytes at p equal the literal s (of length n)? */
static bool
ci_eq(const unsigned char *p, size_t n, const char *s)
{
	size_t i;

	if (strlen(s) != n)
		return false;
	for (i = 0; i < n; i++)
		if (lc(p[i]) != lc((unsigned char)s[i]))
			return false;
	return true;
}

static bool
ci_prefix(const unsigned char *p, size_t n, const char *s)
{
	size_t l = strlen(s);

	return n >= l && ci_eq(p, l, s);
}

/*
 * Length of the well-formed UTF-8 sequence (RFC 3629: no overlongs, no
 * surrogates, nothing past U+10FFFF) starting at p[0] >= 0x80, or 0.
 */
static size_t
utf8_seq(const unsigned char *p, size_t len)
{
	uint32_t cp;
	size_t n, i;

	if (p[0] >= 0xc2 && p[0] <= 0xdf) {
		n = 2;
		cp = p[0] & 0x1f;
	} else if (p[0] >= 0xe0 && p[0] <= 0xef) {
		n = 3;
		cp = p[0] & 0x0f;
	} else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
		n = 4;
		cp = p[0] & 0x07;
	} else
		return 0;
	if (len < n)
		return 0;
	for (i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[i] & 0x3f);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10ffff ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

/*
 * Scan a Domain (RFC 5321 sub-domain *("." sub-domain)) starting at *pos.
 * Non-ASCII labels are accepted as UTF-8 (U-labels, RFC 6531) and flagged
 * in *utf8; whether that is allowed is decided by the caller.  On success
 * *pos is just past the domain.
 */
static int
scan_domain(const unsigned char *s, size_t len, size_t *pos, bool *utf8)
{
	size_t i = *pos;

	for (;;) {
		size_t start = i;
		bool ascii = true;

		while (i < len) {
			if (is_alpha(s[i]) || is_digit(s[i]) || s[i] == '-')
				i++;
			else if (s[i] >= 0x80) {
				size_t n = utf8_seq(s + i, len - i);

				if (n == 0)
					return -1;
				i += n;
				ascii = false;
			} else
				break;
		}
		if (i == start || s[start] == '-' || s[i - 1] == '-')
			return -1;
		if (ascii && i - start > 63)
			return -1;
		if (!ascii)
			*utf8 = true;
		if (i < len && s[i] == '.') {
			i++;
			continue;
		}
		break;
	}
	*pos = i;
	return 0;
}

/*
 * Scan an address literal "[...]" at *pos (s[*pos] == '[').  Only IPv4 and
 * "IPv6:" literals are accepted, validated by inet_pton; general literals
 * with other tags name no address we could deliver to.  With path, the
 * canonical text and the binary address are stored there.
 */
static int
scan_literal(const unsigned char *s, size_t len, size_t *pos, struct smtp_path *path)
{
	char tmp[64], ntop[INET6_ADDRSTRLEN];
	size_t i = *pos + 1, start = i, n;
	struct in6_addr a6;
	struct in_addr a4;
	bool v6;
	int r;

	while (i < len && s[i] != ']') {
		/* dcontent: %d33-90 / %d94-126 */
		if (s[i] < 33 || s[i] > 126 || s[i] == '[' || s[i] == '\\')
			return -1;
		i++;
	}
	if (i >= len)
		return -1;
	n = i - start;
	v6 = ci_prefix(s + start, n, "IPv6:");
	if (v6) {
		start += 5;
		n -= 5;
	}
	if (n == 0 || n >= sizeof(tmp))
		return -1;
	memcpy(tmp, s + start, n);
	tmp[n] = '\0';
	if (v6) {
		if (inet_pton(AF_INET6, tmp, &a6) != 1)
			return -1;
	} else {
		size_t k;

		/* Anything but digits and dots is a general literal: unsupported. */
		for (k = 0; k < n; k++)
			if (!is_digit((unsigned char)tmp[k]) && tmp[k] != '.')
				return -1;
		if (inet_pton(AF_INET, tmp, &a4) != 1)
			return -1;
	}
	*pos = i + 1;
	if (path == NULL)
		return 0;
	if (v6) {
		if (inet_ntop(AF_INET6, &a6, ntop, sizeof(ntop)) == NULL)
			return -1;
		r = snprintf(path->domain, sizeof(path->domain), "[IPv6:%s]", ntop);
		path->kind = SMTP_DOMAIN_IPV6;
		path->addr6 = a6;
	} else {
		if (inet_ntop(AF_INET, &a4, ntop, sizeof(ntop)) == NULL)
			return -1;
		r = snprintf(path->domain, sizeof(path->domain), "[%s]", ntop);
		path->kind = SMTP_DOMAIN_IPV4;
		path->addr4 = a4;
	}
	if (r < 0 || (size_t)r >= sizeof(path->domain))
		return -1;
	path->domain_len = (size_t)r;
	return 0;
}

/*
 * Parse a Path at *pos (RFC 5321 §4.1.2), or "<>" for MAIL.
 * st is the enhanced status for address problems: 5.1.7 for the sender,
 * 5.1.3 for a recipient.
 */
static int
parse_path(const unsigned char *s, size_t len, size_t *pos, bool mail, struct smtp_path *path,
    struct smtp_parse_error *err)
{
	const char *st = mail ? "5.1.7" : "5.1.3";
	const char *bad = mail ? "Bad sender address syntax" : "Bad recipient address syntax";
	size_t i = *pos, start = *pos, lstart, lend, dstart, dend;
	bool utf8 = false;

	if (i >= len || s[i] != '<')
		return fail(err, 501, st, "Address must be enclosed in <>");
	i++;
	if (mail && i < len && s[i] == '>') {
		path->null = true;
		*pos = i + 1;
		return 0;
	}

	if (i < len && s[i] == '@') {
		/* A-d-l: accepted as syntax and dropped (RFC 5321 §4.1.1.3). */
		for (;;) {
			if (i >= len || s[i] != '@')
				return fail(err, 501, st, bad);
			i++;
			if (scan_domain(s, len, &i, &utf8) == -1)
				return fail(err, 501, st, bad);
			if (i < len && s[i] == ',') {
				i++;
				continue;
			}
			if (i < len && s[i] == ':') {
				i++;
				break;
			}
			return fail(err, 501, st, bad);
		}
		path->source_route = true;
	}

	lstart = i;
	if (i < len && s[i] == '"') {
		path->quoted = true;
		i++;
		for (;;) {
			if (i >= len)
				return fail(err, 501, st, bad);
			if (s[i] == '"') {
				i++;
				break;
			}
			if (s[i] == '\\') {
				/* quoted-pairSMTP = %d92 %d32-126 */
				if (i + 1 >= len || s[i + 1] < 32 || s[i + 1] > 126)
					return fail(err, 501, st, bad);
				i += 2;
			} else if (s[i] >= 32 && s[i] <= 126)
				i++;
			else if (s[i] >= 0x80) {
				size_t n = utf8_seq(s + i, len - i);

				if (n == 0)
					return fail(err, 501, st, bad);
				i += n;
				utf8 = true;
			} else
				return fail(err, 501, st, bad);
		}
	} else {
		/* Dot-string: atoms separated by single dots. */
		for (;;) {
			size_t astart = i;

			while (i < len) {
				if (is_atext(s[i]))
					i++;
				else if (s[i] >= 0x80) {
					size_t n = utf8_seq(s + i, len - i);

					if (n == 0)
						return fail(err, 501, st, bad);
					i += n;
					utf8 = true;
				} else
					break;
			}
			if (i == astart)
				return fail(err, 501, st, bad);
			if (i < len && s[i] == '.') {
				i++;
				continue;
			}
			break;
		}
	}
	lend = i;

	if (!mail && !path->source_route && !path->quoted && i < len && s[i] == '>' &&
	    ci_eq(s + lstart, lend - lstart, "postmaster")) {
		/* RCPT TO:<Postmaster> needs no domain (RFC 5321 §4.5.1). */
		path->postmaster = true;
		dstart = dend = i;
	} else {
		if (i >= len || s[i] != '@')
			return fail(err, 501, st, bad);
		i++;
		dstart = i;
		if (i < len && s[i] == '[') {
			if (scan_literal(s, len, &i, NULL) == -1)
				return fail(err, 501, st, "Bad address literal");
		} else if (scan_domain(s, len, &i, &utf8) == -1)
			return fail(err, 501, st, bad);
		dend = i;
	}
	/* "user@other@domain" and any other trailing junk end up here. */
	if (i >= len || s[i] != '>')
		return fail(err, 501, st, bad);
	i++;

	/* Limits first, then copies. */
	if (lend - lstart > SMTP_LOCAL_MAX)
		return fail(err, 553, st, "Local part too long");
	if (dend - dstart > SMTP_DOMAIN_MAX)
		return fail(err, 553, st, "Domain too long");
	if (i - start > SMTP_PATH_MAX)
		return fail(err, 501, st, "Path too long");

	memcpy(path->local, s + lstart, lend - lstart);
	path->local[lend - lstart] = '\0';
	path->local_len = lend - lstart;
	path->utf8 = utf8;
	if (path->postmaster)
		path->kind = SMTP_DOMAIN_NONE;
	else if (s[dstart] == '[') {
		size_t k = dstart;

		if (scan_literal(s, len, &k, path) == -1)
			return fail(err, 501, st, "Bad address literal");
	} else {
		size_t k;

		for (k = dstart; k < dend; k++)
			path->domain[k - dstart] = (char)lc(s[k]);
		path->domain[dend - dstart] = '\0';
		path->domain_len = dend - dstart;
		path->kind = SMTP_DOMAIN_NAME;
	}
	*pos = i;
	return 0;
}

/*
 * xtext (RFC 3461 §4): xchar = %d33-42 / %d44-60 / %d62-126, or "+" and
 * two hex digits.  Lower-case hex is tolerated.  utf8 admits UTF-8 for the
 * utf-8 address type of ORCPT (RFC 6533).
 */
static bool
xtext_valid(const unsigned char *v, size_t n, bool utf8)
{
	size_t i = 0;

	while (i < n) {
		if (v[i] == '+') {
			if (i + 2 >= n || !is_hex(v[i + 1]) || !is_hex(v[i + 2]))
				return false;
			i += 3;
		} else if (v[i] >= 33 && v[i] <= 126 && v[i] != '=')
			i++;
		else if (utf8 && v[i] >= 0x80) {
			size_t k = utf8_seq(v + i, n - i);

			if (k == 0)
				return false;
			i += k;
		} else
			return false;
	}
	return n > 0;
}

static int
param_size(const unsigned char *v, size_t n, struct smtp_params *pr, struct smtp_parse_error *err)
{
	uint64_t size = 0;
	size_t i;

	if (n == 0 || n > 20)
		return fail(err, 501, "5.5.4", "Bad SIZE value");
	for (i = 0; i < n; i++) {
		unsigned d;

		if (!is_digit(v[i]))
			return fail(err, 501, "5.5.4", "Bad SIZE value");
		d = (unsigned)(v[i] - '0');
		if (size > (UINT64_MAX - d) / 10)
			return fail(err, 552, "5.3.4", "Message size exceeds fixed maximum message size");
		size = size * 10 + d;
	}
	pr->size = size;
	return 0;
}

static int
param_notify(const unsigned char *v, size_t n, struct smtp_params *pr,
    struct smtp_parse_error *err)
{
	unsigned int bits = 0;
	size_t i = 0;

	for (;;) {
		size_t start = i;
		unsigned int bit;

		while (i < n && v[i] != ',')
			i++;
		if (ci_eq(v + start, i - start, "NEVER"))
			bit = SMTP_NOTIFY_NEVER;
		else if (ci_eq(v + start, i - start, "SUCCESS"))
			bit = SMTP_NOTIFY_SUCCESS;
		else if (ci_eq(v + start, i - start, "FAILURE"))
			bit = SMTP_NOTIFY_FAILURE;
		else if (ci_eq(v + start, i - start, "DELAY"))
			bit = SMTP_NOTIFY_DELAY;
		else
			return fail(err, 501, "5.5.4", "Bad NOTIFY value");
		if (bits & bit)
			return fail(err, 501, "5.5.4", "Bad NOTIFY value");
		bits |= bit;
		if (i >= n)
			break;
		i++;
	}
	if ((bits & SMTP_NOTIFY_NEVER) && bits != SMTP_NOTIFY_NEVER)
		return fail(err, 501, "5.5.4", "NOTIFY=NEVER cannot be combined");
	pr->notify = bits;
	return 0;
}

static int
param_orcpt(const unsigned char *v, size_t n, bool utf8, struct smtp_params *pr,
    struct smtp_parse_error *err)
{
	size_t i = 0;

	if (n > SMTP_ORCPT_MAX)
		return fail(err, 501, "5.5.4", "ORCPT value too long");
	/* addr-type = atom */
	while (i < n && is_atext(v[i]))
		i++;
	if (i == 0 || i >= n || v[i] != ';' || !xtext_valid(v + i + 1, n - i - 1, utf8))
		return fail(err, 501, "5.5.4", "Bad ORCPT value");
	memcpy(pr->orcpt, v, n);
	pr->orcpt[n] = '\0';
	return 0;
}

/*
 * ESMTP parameters after a MAIL or RCPT path: esmtp-param *(SP esmtp-param)
 * with esmtp-keyword ["=" esmtp-value].  Runs of spaces are tolerated.
 */
static int
parse_params(const unsigned char *s, size_t len, size_t i, bool mail, unsigned int flags,
    struct smtp_params *pr, struct smtp_parse_error *err)
{
	for (;;) {
		size_t kstart, kend, vstart, vend;
		bool has_value = false, eightbit = false;
		unsigned int bit;
		int r;

		while (i < len && s[i] == ' ')
			i++;
		if (i >= len)
			return 0;
		kstart = i;
		if (!is_alpha(s[i]) && !is_digit(s[i]))
			return fail(err, 501, "5.5.4", "Syntax error in parameters");
		while (i < len && (is_alpha(s[i]) || is_digit(s[i]) || s[i] == '-'))
			i++;
		kend = i;
		vstart = vend = i;
		if (i < len && s[i] == '=') {
			has_value = true;
			vstart = ++i;
			while (i < len && s[i] != ' ') {
				if (s[i] >= 0x80) {
					size_t n = utf8_seq(s + i, len - i);

					if (n == 0)
						return fail(err, 501, "5.5.4", "Syntax error in parameters");
					eightbit = true;
					i += n;
				} else if (s[i] >= 33 && s[i] <= 126 && s[i] != '=')
					i++;
				else
					return fail(err, 501, "5.5.4", "Syntax error in parameters");
			}
			vend = i;
			if (vend == vstart)
				return fail(err, 501, "5.5.4", "Syntax error in parameters");
		}
		if (i < len && s[i] != ' ')
			return fail(err, 501, "5.5.4", "Syntax error in parameters");

		if (mail && ci_eq(s + kstart, kend - kstart, "SIZE"))
			bit = SMTP_PARAM_SIZE;
		else if (mail && ci_eq(s + kstart, kend - kstart, "BODY"))
			bit = SMTP_PARAM_BODY;
		else if (mail && ci_eq(s + kstart, kend - kstart, "SMTPUTF8"))
			bit = SMTP_PARAM_SMTPUTF8;
		else if (mail && ci_eq(s + kstart, kend - kstart, "RET"))
			bit = SMTP_PARAM_RET;
		else if (mail && ci_eq(s + kstart, kend - kstart, "ENVID"))
			bit = SMTP_PARAM_ENVID;
		else if (!mail && ci_eq(s + kstart, kend - kstart, "NOTIFY"))
			bit = SMTP_PARAM_NOTIFY;
		else if (!mail && ci_eq(s + kstart, kend - kstart, "ORCPT"))
			bit = SMTP_PARAM_ORCPT;
		else
			return fail(err, 555, "5.5.4", "Unsupported parameter");
		if (pr->present & bit)
			return fail(err, 501, "5.5.4", "Duplicate parameter");
		pr->present |= bit;
		if (bit == SMTP_PARAM_SMTPUTF8) {
			if (has_value)
				return fail(err, 501, "5.5.4", "SMTPUTF8 takes no value");
			continue;
		}
		if (!has_value)
			return fail(err, 501, "5.5.4", "Parameter needs a value");
		if (eightbit && !(bit == SMTP_PARAM_ORCPT && (flags & SMTP_PARSE_SMTPUTF8)))
			return fail(err, 501, "5.5.4", "Non-ASCII parameter value");

		r = 0;
		switch (bit) {
		case SMTP_PARAM_SIZE:
			r = param_size(s + vstart, vend - vstart, pr, err);
			break;
		case SMTP_PARAM_BODY:
			if (ci_eq(s + vstart, vend - vstart, "7BIT"))
				pr->body = SMTP_BODY_7BIT;
			else if (ci_eq(s + vstart, vend - vstart, "8BITMIME"))
				pr->body = SMTP_BODY_8BITMIME;
			else
				r = fail(err, 555, "5.5.4", "Unsupported BODY type");
			break;
		case SMTP_PARAM_RET:
			if (ci_eq(s + vstart, vend - vstart, "FULL"))
				pr->ret = SMTP_RET_FULL;
			else if (ci_eq(s + vstart, vend - vstart, "HDRS"))
				pr->ret = SMTP_RET_HDRS;
			else
				r = fail(err, 501, "5.5.4", "Bad RET value");
			break;
		case SMTP_PARAM_ENVID:
			if (vend - vstart > SMTP_ENVID_MAX)
				r = fail(err, 501, "5.5.4", "ENVID value too long");
			else if (!xtext_valid(s + vstart, vend - vstart, false))
				r = fail(err, 501, "5.5.4", "Bad ENVID value");
			else {
				memcpy(pr->envid, s + vstart, vend - vstart);
				pr->envid[vend - vstart] = '\0';
			}
			break;
		case SMTP_PARAM_NOTIFY:
			r = param_notify(s + vstart, vend - vstart, pr, err);
			break;
		case SMTP_PARAM_ORCPT:
			r = param_orcpt(s + vstart, vend - vstart, eightbit, pr, err);
			break;
		}
		if (r == -1)
			return -1;
	}
}

/* MAIL FROM:<path> [params] and RCPT TO:<path> [params]. */
static int
parse_mail_rcpt(const unsigned char *a, size_t alen, unsigned int flags, struct smtp_command *out,
    struct smtp_parse_error *err)
{
	bool mail = out->cmd == SMTP_CMD_MAIL;
	const char *kw = mail ? "FROM:" : "TO:";
	size_t i = strlen(kw);
	bool utf8_ok;

	if (!ci_prefix(a, alen, kw))
		return fail(err, 501, "5.5.4", mail ? "Syntax: MAIL FROM:<address>" :
		    "Syntax: RCPT TO:<address>");
	/* "MAIL FROM: <a@b>" is common enough to accept; one space only. */
	if (i < alen && a[i] == ' ')
		i++;
	if (parse_path(a, alen, &i, mail, &out->path, err) == -1)
		return -1;
	if (i < alen && a[i] != ' ')
		return fail(err, 501, "5.5.4", "Syntax error after address");
	if (parse_params(a, alen, i, mail, flags, &out->params, err) == -1)
		return -1;
	utf8_ok = mail ? (out->params.present & SMTP_PARAM_SMTPUTF8) != 0 :
	    (flags & SMTP_PARSE_SMTPUTF8) != 0;
	if (out->path.utf8 && !utf8_ok)
		return fail(err, 553, "5.6.7", mail ?
		    "Non-ASCII addresses not permitted for that sender" :
		    "Non-ASCII addresses not permitted for that recipient");
	return 0;
}

static bool
helo_valid(const unsigned char *a, size_t alen)
{
	size_t i = 0;
	bool utf8 = false;

	if (alen == 0 || alen > SMTP_DOMAIN_MAX)
		return false;
	if (a[0] == '[') {
		if (scan_literal(a, alen, &i, NULL) == -1)
			return false;
	} else if (scan_domain(a, alen, &i, &utf8) == -1 || utf8)
		return false;
	return i == alen;
}

static int
parse_bdat(const unsigned char *a, size_t alen, struct smtp_command *out,
    struct smtp_parse_error *err)
{
	uint64_t size = 0;
	size_t i = 0;

	while (i < alen && is_digit(a[i])) {
		unsigned d = (unsigned)(a[i] - '0');

		if (size > (UINT64_MAX - d) / 10)
			return fail(err, 501, "5.5.4", "Bad BDAT chunk size");
		size = size * 10 + d;
		i++;
	}
	if (i == 0)
		return fail(err, 501, "5.5.4", "Syntax: BDAT size [LAST]");
	if (i < alen) {
		if (a[i] != ' ' || !ci_eq(a + i + 1, alen - i - 1, "LAST"))
			return fail(err, 501, "5.5.4", "Syntax: BDAT size [LAST]");
		out->bdat_last = true;
	}
	out->bdat_size = size;
	return 0;
}

int
smtp_command_parse(const char *line, size_t len, unsigned int flags, struct smtp_command *out,
    struct smtp_parse_error *err)
{
	const unsigned char *s = (const unsigned char *)line;
	const unsigned char *a;
	size_t i, vend, alen;

	memset(out, 0, sizeof(*out));
	if (len > SMTP_COMMAND_MAX - 2)
		return fail(err, 500, "5.5.2", "Line too long");
	for (i = 0; i < len; i++)
		if (s[i] == '\0' || s[i] == '\r' || s[i] == '\n')
			return fail(err, 500, "5.5.2", "Bad character in command line");

	for (vend = 0; vend < len && s[vend] != ' '; vend++)
		;
	for (i = 0; i < MX_NELEM(smtp_verbs); i++)
		if (ci_eq(s, vend, smtp_verbs[i].name)) {
			out->cmd = smtp_verbs[i].cmd;
			break;
		}
	if (out->cmd == SMTP_CMD_UNKNOWN)
		return fail(err, 500, "5.5.2", "Command unrecognized");
	if (len > SMTP_LINE_MAX - 2 && out->cmd != SMTP_CMD_MAIL && out->cmd != SMTP_CMD_RCPT)
		return fail(err, 500, "5.5.2", "Line too long");

	a = s + vend;
	alen = len - vend;
	while (alen > 0 && a[0] == ' ') {
		a++;
		alen--;
	}
	while (alen > 0 && a[alen - 1] == ' ')
		alen--;
	out->arg.ptr = a;
	out->arg.len = alen;

	switch (out->cmd) {
	case SMTP_CMD_HELO:
	case SMTP_CMD_EHLO:
		if (alen == 0)
			return fail(err, 501, "5.5.4", out->cmd == SMTP_CMD_HELO ?
			    "Syntax: HELO hostname" : "Syntax: EHLO hostname");
		out->helo_valid = helo_valid(a, alen);
		return 0;
	case SMTP_CMD_MAIL:
	case SMTP_CMD_RCPT:
		return parse_mail_rcpt(a, alen, flags, out, err);
	case SMTP_CMD_DATA:
	case SMTP_CMD_RSET:
	case SMTP_CMD_QUIT:
	case SMTP_CMD_STARTTLS:
		if (alen != 0)
			return fail(err, 501, "5.5.4", "Syntax error (no parameters allowed)");
		return 0;
	case SMTP_CMD_VRFY:
	case SMTP_CMD_EXPN:
	case SMTP_CMD_AUTH:
		if (alen == 0)
			return fail(err, 501, "5.5.4", "Argument required");
		return 0;
	case SMTP_CMD_BDAT:
		return parse_bdat(a, alen, out, err);
	case SMTP_CMD_NOOP:
	case SMTP_CMD_HELP:
	case SMTP_CMD_UNKNOWN:
		break;
	}
	return 0;
}

const char *
smtp_cmd_name(enum smtp_cmd cmd)
{
	size_t i;

	for (i = 0; i < MX_NELEM(smtp_verbs); i++)
		if (smtp_verbs[i].cmd == cmd)
			return smtp_verbs[i].name;
	return "UNKNOWN";
}

int
smtp_path_format(const struct smtp_path *p, char *buf, size_t size)
{
	int r;

	if (p->null)
		r = snprintf(buf, size, "%s", "");
	else if (p->postmaster)
		r = snprintf(buf, size, "%s", p->local);
	else
		r = snprintf(buf, size, "%s@%s", p->local, p->domain);
	if (r < 0 || (size_t)r >= size)
		return -1;
	return 0;
}

unsigned int
smtp_path_relay_flags(const struct smtp_path *p)
{
	unsigned int f = 0;
	size_t i;

	if (p->source_route)
		f |= SMTP_RELAY_ROUTE;
	if (p->kind == SMTP_DOMAIN_IPV4 || p->kind == SMTP_DOMAIN_IPV6)
		f |= SMTP_RELAY_LITERAL;
	if (p->quoted) {
		/* Escaped or not, these octets make the part look routable. */
		for (i = 0; i < p->local_len; i++)
			if (p->local[i] == '@' || p->local[i] == '%' || p->local[i] == '!')
				f |= SMTP_RELAY_QUOTED;
	} else {
		for (i = 0; i < p->local_len; i++) {
			if (p->local[i] == '%')
				f |= SMTP_RELAY_PERCENT;
			else if (p->local[i] == '!')
				f |= SMTP_RELAY_BANG;
		}
	}
	return f;
}

/* Line splitter ---------------------------------------------------------- */

void
smtp_line_init(struct smtp_line_splitter *s, size_t max)
{
	s->max = max < 3 ? 3 : max;
	s->discarding = false;
	s->errors = 0;
}

enum smtp_line_result
smtp_line_next(struct smtp_line_splitter *s, const unsigned char *buf, size_t len,
    struct mx_view *line, size_t *consumed, unsigned int *errors)
{
	enum smtp_line_result r;
	unsigned int errs = 0;
	size_t i, lim;

	line->ptr = NULL;
	line->len = 0;
	*consumed = 0;
	*errors = 0;

	if (s->discarding) {
		/* Any LF ends an over-long line: nothing in it may run. */
		for (i = 0; i < len; i++)
			if (buf[i] == '\n') {
				*consumed = i + 1;
				*errors = s->errors | SMTP_LINE_TOO_LONG;
				s->discarding = false;
				s->errors = 0;
				return SMTP_LINE_BAD;
			}
		*consumed = len;
		return SMTP_LINE_MORE;
	}

	lim = len < s->max ? len : s->max;
	for (i = 0; i < lim; i++) {
		if (buf[i] == '\r') {
			if (i + 1 >= len)
				return SMTP_LINE_MORE;
			if (buf[i + 1] == '\n') {
				if (i + 2 > s->max)
					break;
				*consumed = i + 2;
				if (errs != 0) {
					*errors = errs;
					return SMTP_LINE_BAD;
				}
				line->ptr = buf;
				line->len = i;
				return SMTP_LINE_OK;
			}
			errs |= SMTP_LINE_BARE_CR;
		} else if (buf[i] == '\n') {
			*consumed = i + 1;
			*errors = errs | SMTP_LINE_BARE_LF;
			return SMTP_LINE_BAD;
		} else if (buf[i] == '\0')
			errs |= SMTP_LINE_NUL;
	}
	if (len < s->max)
		return SMTP_LINE_MORE;
	/* No end within max octets: drop what we have, discard to the end. */
	s->discarding = true;
	s->errors = errs;
	i = s->max;
	r = smtp_line_next(s, buf + i, len - i, line, consumed, errors);
	*consumed += i;
	return r;
}

/* DATA phase ------------------------------------------------------------- */

enum {
	DATA_BOL = 0,	/* at the start of a line (after CRLF) */
	DATA_TEXT,	/* inside a line */
	DATA_CR,	/* after a CR that was emitted */
	DATA_DOT,	/* after a "." at the start of a line, held back */
	DATA_DOTCR,	/* after ".\r" at the start of a line, both held back */
	DATA_END,
};

static const unsigned char data_cr = '\r';

void
smtp_data_init(struct smtp_data *d, uint64_t max_size,
    void (*emit)(void *arg, const unsigned char *p, size_t len), void *arg)
{
	memset(d, 0, sizeof(*d));
	d->max_size = max_size;
	d->emit = emit;
	d->arg = arg;
	d->state = DATA_BOL;
	d->in_header = true;
	d->bol = true;
}

/* Bookkeeping for one unstuffed octet: size, line length, header fields. */
static void
data_account(struct smtp_data *d, unsigned char c)
{
	static const char received[] = "received";

	d->size++;
	if (d->max_size != 0 && d->size > d->max_size)
		d->flags |= SMTP_DATA_TOO_BIG;
	if (c == '\0')
		d->flags |= SMTP_DATA_NUL;
	if (d->line_len < SIZE_MAX)
		d->line_len++;
	if (d->line_len > SMTP_DATA_LINE_MAX)
		d->flags |= SMTP_DATA_LINE_TOO_LONG;

	if (d->in_header) {
		if (d->bol) {
			d->hdr_match = 0;
			d->bol = false;
		}
		if (d->hdr_match >= 0 && d->hdr_match < 8) {
			if (lc(c) == (unsigned char)received[d->hdr_match])
				d->hdr_match++;
			else
				d->hdr_match = -1;
		} else if (d->hdr_match == 8) {
			/* RFC 5322 obs-optional allows WSP before the colon. */
			if (c == ':') {
				if (d->received < UINT32_MAX)
					d->received++;
				d->hdr_match = -1;
			} else if (c != ' ' && c != '\t')
				d->hdr_match = -1;
		}
	}

	if (c == '\n' && d->prev_cr) {
		if (d->in_header && d->line_len == 2)
			d->in_header = false;
		d->line_len = 0;
		d->bol = true;
		d->prev_cr = false;
		return;
	}
	d->prev_cr = c == '\r';
}

static void
data_flush(struct smtp_data *d, const unsigned char *p, size_t n)
{
	if (n > 0 && d->emit != NULL)
		d->emit(d->arg, p, n);
}

enum smtp_data_result
smtp_data_feed(struct smtp_data *d, const unsigned char *buf, size_t len, size_t *consumed)
{
	size_t i, run = 0;

	if (d->done) {
		*consumed = 0;
		return SMTP_DATA_DONE;
	}
	for (i = 0; i < len; i++) {
		unsigned char c = buf[i];

		switch (d->state) {
		case DATA_BOL:
			if (c == '.') {
				data_flush(d, buf + run, i - run);
				run = i + 1;
				d->state = DATA_DOT;
				continue;
			}
			break;
		case DATA_CR:
			if (c == '\n') {
				data_account(d, c);
				d->state = DATA_BOL;
				continue;
			}
			d->flags |= SMTP_DATA_BARE_CR;
			break;
		case DATA_DOT:
			if (c == '\r') {
				run = i + 1;
				d->state = DATA_DOTCR;
				continue;
			}
			/* The dot was stuffing (RFC 5321 §4.5.2) and stays dropped. */
			break;
		case DATA_DOTCR:
			if (c == '\n') {
				d->done = true;
				d->state = DATA_END;
				*consumed = i + 1;
				return SMTP_DATA_DONE;
			}
			/* ".\r" and more on the line: stuffing, then a bare CR. */
			d->flags |= SMTP_DATA_BARE_CR;
			data_flush(d, &data_cr, 1);
			data_account(d, '\r');
			break;
		default:
			break;
		}
		/* An ordinary octet inside a line.  Only CRLF leads back to BOL. */
		data_account(d, c);
		if (c == '\r')
			d->state = DATA_CR;
		else {
			if (c == '\n')
				d->flags |= SMTP_DATA_BARE_LF;
			d->state = DATA_TEXT;
		}
	}
	data_flush(d, buf + run, len - run);
	*consumed = len;
	return SMTP_DATA_MORE;
}
