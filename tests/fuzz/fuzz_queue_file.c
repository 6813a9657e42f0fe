/*
 * libFuzzer target for the queue file and journal decoders.  Each input is
 * decoded as it is, and again "resealed": given a correct END record, so
 * that mutations reach the envelope parser instead of dying at the
 * checksum.  Whatever the decoder accepts must be what the encoder would
 * write: it is re-encoded, decoded again and compared, field by field.  The
 * same bytes are then read as a delivery journal.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc -I<dir with config.h> \
 *       tests/fuzz/fuzz_queue_file.c src/queue_file.c src/util.c -o fuzz_queue_file
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queue_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "check failed: %s (line %d)\n", #c, \
	__LINE__); abort(); } } while (0)

static bool
ctl_free(const char *s, size_t max)
{
	size_t n = strlen(s);

	if (n > max)
		return false;
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return false;
	return true;
}

static void
check_env(const struct queue_envelope *env)
{
	size_t i;

	CHECK(queue_id_valid(env->id));
	CHECK(ctl_free(env->sender, QUEUE_ADDR_MAX));
	CHECK(ctl_free(env->helo, QUEUE_HELO_MAX));
	CHECK(ctl_free(env->client_addr, QUEUE_CLIENT_ADDR_MAX));
	CHECK(ctl_free(env->tls_cipher, QUEUE_TLS_MAX));
	CHECK(env->nrcpts >= 1 && env->nrcpts <= QUEUE_RCPT_MAX);
	for (i = 0; i < env->nrcpts; i++) {
		CHECK(env->rcpts[i].addr[0] != '\0');
		CHECK(ctl_free(env->rcpts[i].addr, QUEUE_ADDR_MAX));
		CHECK(ctl_free(env->rcpts[i].orcpt, QUEUE_ORCPT_MAX));
		CHECK(ctl_free(env->rcpts[i].reply, QUEUE_REPLY_MAX));
		CHECK(env->rcpts[i].state <= QUEUE_RCPT_DEFERRED);
	}
}

static bool
env_same(const struct queue_envelope *a, const struct queue_envelope *b)
{
	size_t i;

	if (strcmp(a->id, b->id) || a->arrival != b->arrival ||
	    a->next_attempt != b->next_attempt || strcmp(a->sender, b->sender) ||
	    strcmp(a->client_addr, b->client_addr) || strcmp(a->client_name, b->client_name) ||
	    strcmp(a->helo, b->helo) || strcmp(a->tls_version, b->tls_version) ||
	    strcmp(a->tls_cipher, b->tls_cipher) || a->smtputf8 != b->smtputf8 ||
	    a->body != b->body || a->ret != b->ret || strcmp(a->envid, b->envid) ||
	    a->size != b->size || a->nrcpts != b->nrcpts)
		return false;
	for (i = 0; i < a->nrcpts; i++) {
		const struct queue_rcpt *x = &a->rcpts[i], *y = &b->rcpts[i];

		if (strcmp(x->addr, y->addr) || strcmp(x->orcpt, y->orcpt) ||
		    x->notify != y->notify || x->state != y->state || x->updated != y->updated ||
		    strcmp(x->reply, y->reply))
			return false;
	}
	return true;
}

/* A decoded file must survive encode -> decode unchanged. */
static void
roundtrip(const uint8_t *file, const struct queue_envelope *env,
    const struct queue_file_info *info)
{
	struct queue_envelope env2;
	struct queue_file_info info2;
	struct mx_buf b;

	check_env(env);
	CHECK(info->body_off + info->body_len + 25 == info->file_len);
	mx_buf_init(&b, 0);
	CHECK(queue_file_encode(env, file + info->body_off, (size_t)info->body_len, &b) == 0);
	CHECK(queue_file_decode(b.data, b.len, &env2, &info2) == QUEUE_FILE_OK);
	CHECK(env_same(env, &env2));
	CHECK(info2.body_len == info->body_len);
	CHECK(memcmp(b.data + info2.body_off, file + info->body_off, (size_t)info->body_len) == 0);
	queue_envelope_clear(&env2);
	mx_buf_free(&b);
}

static void
put_be32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static void
decode_one(const uint8_t *p, size_t n)
{
	struct queue_envelope env;
	struct queue_file_info info;
	enum queue_file_status st;

	st = queue_file_decode(p, n, &env, &info);
	CHECK(st <= QUEUE_FILE_NOMEM);
	if (st == QUEUE_FILE_OK) {
		roundtrip(p, &env, &info);
		queue_envelope_clear(&env);
	} else
		CHECK(env.rcpts == NULL && env.nrcpts == 0);
}

static void
journal(const uint8_t *p, size_t n)
{
	struct queue_envelope env;
	struct queue_journal_info info;
	struct queue_journal_rec rec;
	size_t off = 0, prev = 0, i;
	enum queue_journal_result r;

	while ((r = queue_journal_next(p, n, &off, &rec)) == QUEUE_JOURNAL_RECORD) {
		CHECK(off > prev && off <= n);
		CHECK(ctl_free(rec.reply, QUEUE_REPLY_MAX));
		prev = off;
	}
	CHECK(r == QUEUE_JOURNAL_END || r == QUEUE_JOURNAL_TORN || r == QUEUE_JOURNAL_BAD);

	queue_envelope_init(&env);
	memcpy(env.id, "0F4bXk2Mq1aBcDeFgHiJ", 21);
	for (i = 0; i < 3; i++)
		if (queue_envelope_add_rcpt(&env) == NULL)
			abort();
	if (queue_journal_apply(&env, p, n, &info) == 0) {
		CHECK(info.valid_len <= n);
		for (i = 0; i < env.nrcpts; i++) {
			CHECK(env.rcpts[i].state <= QUEUE_RCPT_DEFERRED);
			CHECK(ctl_free(env.rcpts[i].reply, QUEUE_REPLY_MAX));
		}
	}
	queue_envelope_clear(&env);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const unsigned char body_hdr[5] = { 0x7e, 0xff, 0xff, 0xff, 0xff };
	unsigned char *p, *e;
	size_t body_off = size, i;

	decode_one(data, size);
	journal(data, size);

	/* Resealed: the input with a matching END record appended. */
	if (size < 13 || (p = malloc(size + 25)) == NULL)
		return 0;
	memcpy(p, data, size);
	for (i = 8; i + 5 <= size; i++)
		if (memcmp(p + i, body_hdr, 5) == 0) {
			body_off = i + 5;
			break;
		}
	e = p + size;
	e[0] = 0x7f;
	put_be32(e + 1, 20);
	put_be32(e + 5, 0);
	put_be32(e + 9, (uint32_t)(size - body_off));
	put_be32(e + 13, 0);
	put_be32(e + 17, (uint32_t)size);
	put_be32(e + 21, queue_crc32(0, p, size));
	decode_one(p, size + 25);
	free(p);
	return 0;
}
