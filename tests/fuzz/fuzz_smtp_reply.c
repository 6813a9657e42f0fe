/*
 * Fuzz target for the relay client's reply parser and what consumes its
 * replies: the input is a stream a hostile primary could send.  It is fed
 * whole and then in pieces whose sizes come from the input itself; both
 * runs must agree reply by reply.  Every reply is checked against the
 * parser's promises (bounds, no CR/LF/NUL in kept text) and goes through
 * the summary, the status and the EHLO keyword reader; the summary, which
 * ends up in the queue journal, must be one printable line.
 *
 *   clang -fsanitize=fuzzer,address,undefined -Isrc ... fuzz_smtp_reply.c
 *   (or with tests/fuzz/standalone.c and any compiler: runs the files in argv)
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay_reply.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_REPLIES_MAX 64

struct fuzz_run {
	int codes[FUZZ_REPLIES_MAX];
	size_t n;
	bool bad;
};

static struct relay_reply_parser parser;
static struct relay_reply reply;

static void
fuzz_check(const struct relay_reply *r)
{
	char sum[RELAY_REPLY_SUMMARY_MAX], st[RELAY_REPLY_STATUS_MAX];
	struct relay_ehlo e;
	size_t i, len;

	if (r->code < 200 || r->code > 559 || r->nlines == 0 ||
	    r->nlines > RELAY_REPLY_LINES_MAX || r->text_len > sizeof(r->text))
		abort();
	if (memchr(r->status, '\0', sizeof(r->status)) == NULL)
		abort();
	for (i = 0; i < r->text_len; i++)
		if (r->text[i] == '\r' || r->text[i] == '\n')
			abort();
	for (i = 0; i < r->nlines; i++)
		if (strlen(relay_reply_line(r, i)) >= RELAY_REPLY_LINE_MAX)
			abort();
	relay_reply_summary(r, sum, sizeof(sum));
	len = strlen(sum);
	if (len >= sizeof(sum))
		abort();
	for (i = 0; i < len; i++)
		if ((unsigned char)sum[i] < 0x20 || (unsigned char)sum[i] >= 0x7f)
			abort();
	relay_reply_status(r, st);
	if (st[0] != '0' + r->code / 100 && !(r->code / 100 == 3 && st[0] == '4'))
		abort();
	relay_ehlo_parse(r, &e);
}

/* Feed in pieces: step 0 is whole; otherwise sizes from a little LCG seeded by the input. */
static void
fuzz_run(const uint8_t *data, size_t size, unsigned int seed, struct fuzz_run *out)
{
	size_t off = 0, used, n;

	memset(out, 0, sizeof(*out));
	relay_reply_init(&parser);
	while (off < size) {
		if (seed == 0)
			n = size - off;
		else {
			seed = seed * 1103515245u + 12345u;
			n = 1 + (seed >> 16) % 9;
			if (n > size - off)
				n = size - off;
		}
		switch (relay_reply_feed(&parser, data + off, n, &used, &reply)) {
		case RELAY_REPLY_BAD:
			out->bad = true;
			return;
		case RELAY_REPLY_DONE:
			fuzz_check(&reply);
			if (out->n < FUZZ_REPLIES_MAX)
				out->codes[out->n++] = reply.code;
			off += used;
			break;
		case RELAY_REPLY_MORE:
			if (used != n)
				abort();
			off += used;
			break;
		}
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct fuzz_run whole, pieces;
	unsigned int seed = 1;
	size_t i;

	for (i = 0; i < size && i < 4; i++)
		seed = seed * 31u + data[i];
	fuzz_run(data, size, 0, &whole);
	fuzz_run(data, size, seed | 1u, &pieces);
	/* The split must not change what was parsed. */
	if (whole.bad != pieces.bad || whole.n != pieces.n ||
	    memcmp(whole.codes, pieces.codes, whole.n * sizeof(whole.codes[0])) != 0)
		abort();
	return 0;
}
