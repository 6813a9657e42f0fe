/*
 * libFuzzer target for the SMTP wire parsers.  The input (after one mode
 * octet) is a client's byte stream, run through a miniature session: the
 * line splitter, the command parser on every good line, and the DATA
 * machine after a DATA command, back to commands after the end of data.
 * The stream is run whole and again in chunks whose size comes from the
 * mode octet; both runs must see exactly the same events.  Every parsed
 * command is checked against the parser's promises (limits, no control
 * octets in addresses, lower-case domains, canonical form re-parses to
 * itself); a broken promise aborts.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc -I<dir with config.h> \
 *       tests/fuzz/fuzz_smtp_command.c src/smtp_parse.c -o fuzz_smtp_command
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smtp_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "check failed: %s (line %d)\n", #c, \
	__LINE__); abort(); } } while (0)

struct sim {
	struct smtp_line_splitter split;
	struct smtp_data data;
	bool in_data;
	unsigned int flags;	/* SMTP_PARSE_* for RCPT */
	uint64_t hash;
	uint64_t events;
};

static void
mix(struct sim *s, const void *p, size_t n)
{
	const unsigned char *b = p;
	size_t i;

	for (i = 0; i < n; i++) {
		s->hash ^= b[i];
		s->hash *= 0x100000001b3ULL;
	}
}

static void
mix_u64(struct sim *s, uint64_t v)
{
	mix(s, &v, sizeof(v));
	s->events++;
}

static bool
has_ctl(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return true;
	return false;
}

/* The promises smtp_parse.h makes about a parsed command. */
static void
check_command(const char *line, size_t len, unsigned int flags, int r,
    const struct smtp_command *c, const struct smtp_parse_error *e)
{
	char canon[SMTP_MAILBOX_MAX + 1], again[SMTP_MAILBOX_MAX + 1];
	char redo[SMTP_MAILBOX_MAX + 32];
	struct smtp_command c2;
	struct smtp_parse_error e2;
	size_t i;

	if (r == -1) {
		CHECK(e->code == 500 || e->code == 501 || e->code == 552 || e->code == 553 ||
		    e->code == 555);
		CHECK(e->status != NULL && e->text != NULL && e->text[0] != '\0');
		CHECK(!has_ctl(e->text));
		return;
	}
	CHECK(r == 0);
	CHECK(c->cmd != SMTP_CMD_UNKNOWN);
	CHECK(c->arg.len <= len);
	if (c->arg.len > 0)
		CHECK(c->arg.ptr >= (const unsigned char *)line &&
		    c->arg.ptr + c->arg.len <= (const unsigned char *)line + len);
	if (c->cmd != SMTP_CMD_MAIL && c->cmd != SMTP_CMD_RCPT)
		return;

	CHECK(c->path.local_len <= SMTP_LOCAL_MAX && strlen(c->path.local) == c->path.local_len);
	CHECK(c->path.domain_len <= SMTP_DOMAIN_MAX &&
	    strlen(c->path.domain) == c->path.domain_len);
	CHECK(!has_ctl(c->path.local) && !has_ctl(c->path.domain));
	for (i = 0; i < c->path.domain_len; i++)
		CHECK(!(c->path.domain[i] >= 'A' && c->path.domain[i] <= 'Z') ||
		    c->path.kind == SMTP_DOMAIN_IPV6);
	CHECK(!c->path.null || c->cmd == SMTP_CMD_MAIL);
	CHECK(!c->path.postmaster || c->cmd == SMTP_CMD_RCPT);
	CHECK(strlen(c->params.envid) <= SMTP_ENVID_MAX);
	CHECK(strlen(c->params.orcpt) <= SMTP_ORCPT_MAX);
	CHECK(!(c->params.notify & SMTP_NOTIFY_NEVER) || c->params.notify == SMTP_NOTIFY_NEVER);
	CHECK(!has_ctl(c->params.envid) && !has_ctl(c->params.orcpt));
	CHECK(smtp_path_format(&c->path, canon, sizeof(canon)) == 0);
	CHECK(!has_ctl(canon));
	(void)smtp_path_relay_flags(&c->path);
	if (c->path.null)
		return;

	/* The canonical form is a fixed point. */
	snprintf(redo, sizeof(redo), "RCPT TO:<%s>", canon);
	r = smtp_command_parse(redo, strlen(redo), SMTP_PARSE_SMTPUTF8, &c2, &e2);
	if (r != 0)
		fprintf(stderr, "canonical \"%s\" does not re-parse: %s\n", redo, e2.text);
	CHECK(r == 0);
	CHECK(smtp_path_format(&c2.path, again, sizeof(again)) == 0);
	CHECK(strcmp(canon, again) == 0);
	CHECK(c2.path.kind == c->path.kind);
	(void)flags;
}

static void
sim_emit(void *arg, const unsigned char *p, size_t n)
{
	struct sim *s = arg;

	mix(s, p, n);
}

static void
sim_line(struct sim *s, const unsigned char *p, size_t n)
{
	struct smtp_command c;
	struct smtp_parse_error e;
	int r;

	r = smtp_command_parse((const char *)p, n, s->flags, &c, &e);
	check_command((const char *)p, n, s->flags, r, &c, &e);
	mix_u64(s, (uint64_t)(uint32_t)r << 32 | (r == 0 ? (uint32_t)c.cmd : (uint32_t)e.code));
	if (r == 0 && c.cmd == SMTP_CMD_MAIL)
		s->flags = (c.params.present & SMTP_PARAM_SMTPUTF8) ? SMTP_PARSE_SMTPUTF8 : 0;
	if (r == 0 && c.cmd == SMTP_CMD_DATA) {
		smtp_data_init(&s->data, 4096, sim_emit, s);
		s->in_data = true;
	}
}

/* Feed pend[0, *plen) and drain what was consumed. */
static void
sim_feed(struct sim *s, unsigned char *pend, size_t *plen)
{
	size_t off = 0;

	for (;;) {
		size_t used;

		if (s->in_data) {
			enum smtp_data_result r;

			r = smtp_data_feed(&s->data, pend + off, *plen - off, &used);
			CHECK(used <= *plen - off);
			off += used;
			if (r == SMTP_DATA_MORE) {
				CHECK(off == *plen);
				break;
			}
			CHECK(s->data.done);
			mix_u64(s, s->data.flags);
			mix_u64(s, s->data.received);
			mix_u64(s, s->data.size);
			s->in_data = false;
		} else {
			struct mx_view line;
			unsigned int errs;
			enum smtp_line_result r;

			r = smtp_line_next(&s->split, pend + off, *plen - off, &line, &used, &errs);
			CHECK(used <= *plen - off);
			if (r == SMTP_LINE_OK) {
				CHECK(line.ptr == pend + off && line.len + 2 <= used);
				CHECK(line.len <= SMTP_COMMAND_MAX - 2);
				CHECK(memchr(line.ptr, '\n', line.len) == NULL &&
				    memchr(line.ptr, '\r', line.len) == NULL &&
				    memchr(line.ptr, '\0', line.len) == NULL);
				sim_line(s, line.ptr, line.len);
			} else if (r == SMTP_LINE_BAD) {
				CHECK(errs != 0);
				mix_u64(s, 0x1000 + errs);
			}
			off += used;
			if (r == SMTP_LINE_MORE)
				break;
		}
	}
	memmove(pend, pend + off, *plen - off);
	*plen -= off;
}

static void
sim_run(const uint8_t *in, size_t n, size_t step, unsigned char *pend, struct sim *s)
{
	size_t fed = 0, plen = 0;

	memset(s, 0, sizeof(*s));
	s->hash = 0xcbf29ce484222325ULL;
	smtp_line_init(&s->split, SMTP_COMMAND_MAX);
	while (fed < n) {
		size_t k = n - fed < step ? n - fed : step;

		memcpy(pend + plen, in + fed, k);
		plen += k;
		fed += k;
		sim_feed(s, pend, &plen);
		/* The splitter never keeps more than a line's worth. */
		CHECK(plen <= SMTP_COMMAND_MAX);
	}
	mix_u64(s, s->in_data);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct smtp_command c;
	struct smtp_parse_error e;
	struct sim whole, part;
	unsigned char *pend;
	unsigned int flags;
	size_t step;
	int r;

	if (size < 1)
		return 0;
	flags = (data[0] & 1) ? SMTP_PARSE_SMTPUTF8 : 0;
	step = 1 + (size_t)(data[0] >> 1) % 17;
	data++;
	size--;

	/* The whole input as one line, whatever it holds. */
	r = smtp_command_parse((const char *)data, size, flags, &c, &e);
	check_command((const char *)data, size, flags, r, &c, &e);

	if ((pend = malloc(size + SMTP_COMMAND_MAX + 32)) == NULL)
		return 0;
	sim_run(data, size, size == 0 ? 1 : size, pend, &whole);
	sim_run(data, size, step, pend, &part);
	CHECK(whole.events == part.events);
	CHECK(whole.hash == part.hash);
	free(pend);
	return 0;
}
