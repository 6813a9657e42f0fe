/*
 * Tests for the queue file format and the delivery journal: round trips,
 * a golden file that pins the format, truncation at every offset, every
 * single-bit flip, crafted files with a valid checksum but bad values, and
 * the encoder refusing values that could become protocol lines.
 *
 * "queue_file-t --write-golden tests/data" rewrites queue-v1.bin and
 * queue-journal-v1.bin there; only do that for a deliberate format change
 * (and bump QUEUE_FILE_FORMAT).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "basic.h"
#include "queue_file.h"

static const char body[] =
    "Received: from client.example ([192.0.2.7]) by mx2.example.net\r\n"
    "\twith ESMTPS id 0F4bXk2Mq1aBcDeFgHiJ; Tue, 1 Apr 2025 10:00:00 +0000\r\n"
    "From: <alice@sender.example>\r\n"
    "To: <bob@reg.test>\r\n"
    "Subject: queue file test\r\n"
    "\r\n"
    "Hello.\r\n"
    ".leading dot, already unstuffed\r\n";

static void
set(char *dst, size_t size, const char *s)
{
	if ((size_t)snprintf(dst, size, "%s", s) >= size)
		bail("test value too long: %s", s);
}

static void
fill_env(struct queue_envelope *env)
{
	struct queue_rcpt *r;

	queue_envelope_init(env);
	set(env->id, sizeof(env->id), "0F4bXk2Mq1aBcDeFgHiJ");
	env->arrival = 1743501600;
	env->next_attempt = 1743501600;
	set(env->sender, sizeof(env->sender), "alice@sender.example");
	set(env->client_addr, sizeof(env->client_addr), "[2001:db8::7]:41234");
	set(env->client_name, sizeof(env->client_name), "client.example");
	set(env->helo, sizeof(env->helo), "client.example");
	set(env->tls_version, sizeof(env->tls_version), "TLS1.3");
	set(env->tls_cipher, sizeof(env->tls_cipher), "TLS_AES_256_GCM_SHA384");
	env->smtputf8 = true;
	env->body = QUEUE_BODY_8BITMIME;
	env->ret = QUEUE_RET_HDRS;
	set(env->envid, sizeof(env->envid), "QQ314159+2Bx");
	env->size = 4096;

	if ((r = queue_envelope_add_rcpt(env)) == NULL)
		bail("add_rcpt");
	set(r->addr, sizeof(r->addr), "bob@reg.test");
	set(r->orcpt, sizeof(r->orcpt), "rfc822;bob+40reg.test");
	r->notify = QUEUE_NOTIFY_SUCCESS | QUEUE_NOTIFY_FAILURE;
	if ((r = queue_envelope_add_rcpt(env)) == NULL)
		bail("add_rcpt");
	set(r->addr, sizeof(r->addr), "\"carol x\"@reg.test");
	r->notify = QUEUE_NOTIFY_NEVER;
	if ((r = queue_envelope_add_rcpt(env)) == NULL)
		bail("add_rcpt");
	set(r->addr, sizeof(r->addr), "d\xc3\xa9nis@reg.test");
	r->state = QUEUE_RCPT_DEFERRED;
	r->updated = 1743502000;
	set(r->reply, sizeof(r->reply), "451 4.3.0 try again later");
}

static bool
env_equal(const struct queue_envelope *a, const struct queue_envelope *b)
{
	size_t i;

#define FIELD(f, cmp) if (cmp) { diag("envelope field %s differs", #f); return false; }
	FIELD(id, strcmp(a->id, b->id) != 0)
	FIELD(arrival, a->arrival != b->arrival)
	FIELD(next_attempt, a->next_attempt != b->next_attempt)
	FIELD(sender, strcmp(a->sender, b->sender) != 0)
	FIELD(client_addr, strcmp(a->client_addr, b->client_addr) != 0)
	FIELD(client_name, strcmp(a->client_name, b->client_name) != 0)
	FIELD(helo, strcmp(a->helo, b->helo) != 0)
	FIELD(tls_version, strcmp(a->tls_version, b->tls_version) != 0)
	FIELD(tls_cipher, strcmp(a->tls_cipher, b->tls_cipher) != 0)
	FIELD(smtputf8, a->smtputf8 != b->smtputf8)
	FIELD(body, a->body != b->body)
	FIELD(ret, a->ret != b->ret)
	FIELD(envid, strcmp(a->envid, b->envid) != 0)
	FIELD(size, a->size != b->size)
	FIELD(nrcpts, a->nrcpts != b->nrcpts)
	for (i = 0; i < a->nrcpts; i++) {
		const struct queue_rcpt *x = &a->rcpts[i], *y = &b->rcpts[i];

		FIELD(rcpt.addr, strcmp(x->addr, y->addr) != 0)
		FIELD(rcpt.orcpt, strcmp(x->orcpt, y->orcpt) != 0)
		FIELD(rcpt.notify, x->notify != y->notify)
		FIELD(rcpt.state, x->state != y->state)
		FIELD(rcpt.updated, x->updated != y->updated)
		FIELD(rcpt.reply, strcmp(x->reply, y->reply) != 0)
	}
#undef FIELD
	return true;
}

static void
be32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

/* After editing the envelope: make the END record match the file again. */
static void
reseal(struct mx_buf *b)
{
	unsigned char *e = b->data + b->len - 25;
	uint64_t off = b->len - 25;

	be32(e + 13, (uint32_t)(off >> 32));
	be32(e + 17, (uint32_t)off);
	be32(e + 21, queue_crc32(0, b->data, b->len - 25));
}

/* Insert n octets at off (in the envelope) and reseal. */
static void
insert(struct mx_buf *b, size_t off, const void *p, size_t n)
{
	if (mx_buf_reserve(b, n) == -1)
		bail("mx_buf_reserve");
	memmove(b->data + off + n, b->data + off, b->len - off);
	memcpy(b->data + off, p, n);
	b->len += n;
	reseal(b);
}

static size_t
find(const struct mx_buf *b, const char *s)
{
	size_t n = strlen(s), i;

	for (i = 0; i + n <= b->len; i++)
		if (memcmp(b->data + i, s, n) == 0)
			return i;
	bail("\"%s\" not found in the encoded file", s);
}

static void
encode(struct mx_buf *b, const struct queue_envelope *env)
{
	mx_buf_init(b, 0);
	if (queue_file_encode(env, body, sizeof(body) - 1, b) == -1)
		bail("queue_file_encode: %s", strerror(errno));
}

static void
test_crc(void)
{
	is_int(0xcbf43926, queue_crc32(0, "123456789", 9), "CRC-32 check value");
	is_int(0xcbf43926, queue_crc32(queue_crc32(0, "1234", 4), "56789", 5), "CRC-32 chains");
	is_int(0, queue_crc32(0, "", 0), "CRC-32 of nothing");
}

static void
test_roundtrip(void)
{
	struct queue_envelope env, got;
	struct queue_file_info info;
	struct queue_file_writer w;
	struct mx_buf a, b;
	size_t i;

	fill_env(&env);
	encode(&a, &env);
	is_int(QUEUE_FILE_OK, queue_file_decode(a.data, a.len, &got, &info), "decode what we wrote");
	ok(env_equal(&env, &got), "envelope read back identical");
	is_int(a.len, info.file_len, "file length");
	is_int(sizeof(body) - 1, info.body_len, "body length");
	is_int(a.len - 25 - (sizeof(body) - 1), info.body_off, "body offset");
	is_blob(body, sizeof(body) - 1, a.data + info.body_off, info.body_len, "body identical");
	queue_envelope_clear(&got);
	ok(got.rcpts == NULL && got.nrcpts == 0, "clear empties the envelope");

	/* Streaming: envelope first, body in odd chunks, END last. */
	mx_buf_init(&b, 0);
	ok(queue_file_begin(&w, &env, &b) == 0, "begin");
	for (i = 0; i < sizeof(body) - 1; i += 7) {
		size_t n = sizeof(body) - 1 - i < 7 ? sizeof(body) - 1 - i : 7;

		queue_file_body(&w, body + i, n);
		mx_buf_add(&b, body + i, n);
	}
	ok(queue_file_finish(&w, &b) == 0, "finish");
	is_blob(a.data, a.len, b.data, b.len, "streamed file identical to encoded file");
	ok(queue_file_finish(&w, &b) == -1 && errno == EINVAL, "finish twice refused");
	mx_buf_free(&b);

	/* The smallest envelope: null sender, one recipient, nothing optional. */
	queue_envelope_clear(&env);
	set(env.id, sizeof(env.id), "a");
	set(queue_envelope_add_rcpt(&env)->addr, QUEUE_ADDR_MAX + 1, "postmaster");
	mx_buf_init(&b, 0);
	ok(queue_file_encode(&env, "", 0, &b) == 0, "minimal envelope, empty body");
	ok(queue_file_decode(b.data, b.len, &got, &info) == QUEUE_FILE_OK && env_equal(&env, &got) &&
	    info.body_len == 0 && got.sender[0] == '\0', "minimal envelope read back");
	queue_envelope_clear(&got);
	queue_envelope_clear(&env);
	mx_buf_free(&b);
	mx_buf_free(&a);
}

static void
test_many(void)
{
	struct queue_envelope env, got;
	struct queue_file_info info;
	struct mx_buf a;
	size_t i, bad = 0;

	queue_envelope_init(&env);
	set(env.id, sizeof(env.id), "many");
	for (i = 0; i < QUEUE_RCPT_MAX; i++) {
		struct queue_rcpt *r = queue_envelope_add_rcpt(&env);

		if (r == NULL)
			bail("add_rcpt %zu: %s", i, strerror(errno));
		snprintf(r->addr, sizeof(r->addr), "user%zu@reg.test", i);
	}
	errno = 0;
	ok(queue_envelope_add_rcpt(&env) == NULL && errno == E2BIG,
	    "recipient %d refused with E2BIG", QUEUE_RCPT_MAX + 1);
	encode(&a, &env);
	ok(queue_file_decode(a.data, a.len, &got, &info) == QUEUE_FILE_OK &&
	    got.nrcpts == QUEUE_RCPT_MAX, "%d recipients round trip", QUEUE_RCPT_MAX);
	for (i = 0; i < got.nrcpts; i++)
		if (strcmp(got.rcpts[i].addr, env.rcpts[i].addr) != 0)
			bad++;
	is_int(0, bad, "recipients kept in order");
	/* A decoded envelope can grow again. */
	queue_envelope_clear(&got);
	queue_envelope_clear(&env);
	mx_buf_free(&a);
	fill_env(&env);
	encode(&a, &env);
	queue_file_decode(a.data, a.len, &got, &info);
	ok(queue_envelope_add_rcpt(&got) != NULL && got.nrcpts == 4, "add to a decoded envelope");
	queue_envelope_clear(&got);
	queue_envelope_clear(&env);
	mx_buf_free(&a);
}

static void
test_golden(void)
{
	struct queue_envelope env, got;
	struct queue_file_info info;
	struct mx_buf a;
	unsigned char *gold;
	size_t glen;

	gold = test_data_read("queue-v1.bin", &glen);
	fill_env(&env);
	is_int(QUEUE_FILE_OK, queue_file_decode(gold, glen, &got, &info), "golden file decodes");
	ok(env_equal(&env, &got), "golden envelope as expected");
	is_blob(body, sizeof(body) - 1, gold + info.body_off, info.body_len, "golden body");
	encode(&a, &env);
	is_blob(gold, glen, a.data, a.len, "encoder output unchanged from the golden file");
	queue_envelope_clear(&got);
	queue_envelope_clear(&env);
	mx_buf_free(&a);
	free(gold);
}

static void
test_truncation(void)
{
	struct queue_envelope env, got;
	struct queue_file_info info;
	struct mx_buf a;
	size_t cut, torn = 0, notok = 0, fd_torn = 0;
	char path[] = "/tmp/queue_file-t.XXXXXX";
	int fd;

	fill_env(&env);
	encode(&a, &env);
	for (cut = 0; cut < a.len; cut++) {
		enum queue_file_status st = queue_file_decode(a.data, cut, &got, &info);

		if (st != QUEUE_FILE_OK)
			notok++;
		if (st == QUEUE_FILE_TORN)
			torn++;
		if (got.rcpts != NULL)
			bail("envelope not cleared after a failed decode");
	}
	is_int(a.len, notok, "truncation at each of %zu offsets refused", a.len);
	is_int(a.len, torn, "truncation at each offset reported as torn");

	if ((fd = mkstemp(path)) == -1)
		bail("mkstemp: %s", strerror(errno));
	unlink(path);
	if (write(fd, a.data, a.len) != (ssize_t)a.len)
		bail("write: %s", strerror(errno));
	is_int(QUEUE_FILE_OK, queue_file_read_fd(fd, &got, &info), "read from an fd");
	ok(env_equal(&env, &got) && info.body_len == sizeof(body) - 1 &&
	    info.body_off == a.len - 25 - info.body_len, "envelope and body location from an fd");
	queue_envelope_clear(&got);
	for (cut = a.len; cut-- > 0; ) {
		if (ftruncate(fd, (off_t)cut) == -1)
			bail("ftruncate: %s", strerror(errno));
		if (queue_file_read_fd(fd, &got, &info) == QUEUE_FILE_TORN)
			fd_torn++;
	}
	is_int(a.len, fd_torn, "fd: truncation at each offset reported as torn");
	close(fd);
	is_int(QUEUE_FILE_IO, queue_file_read_fd(fd, &got, &info), "fd: closed descriptor is IO");

	queue_envelope_clear(&env);
	mx_buf_free(&a);
}

static void
test_bitflips(void)
{
	struct queue_envelope env, got;
	struct queue_file_info info;
	struct mx_buf a;
	size_t i, bad = 0;
	int bit;

	fill_env(&env);
	encode(&a, &env);
	for (i = 0; i < a.len; i++)
		for (bit = 0; bit < 8; bit++) {
			a.data[i] ^= (unsigned char)(1u << bit);
			if (queue_file_decode(a.data, a.len, &got, &info) != QUEUE_FILE_OK)
				bad++;
			else
				queue_envelope_clear(&got);
			a.data[i] ^= (unsigned char)(1u << bit);
		}
	is_int(a.len * 8, bad, "every one of %zu single-bit flips detected", a.len * 8);
	/* Two flips far apart, and a zeroed block, as a torn page would leave. */
	a.data[20] ^= 0x10;
	a.data[a.len - 40] ^= 0x01;
	ok(queue_file_decode(a.data, a.len, &got, &info) == QUEUE_FILE_CORRUPT, "two flips detected");
	a.data[20] ^= 0x10;
	a.data[a.len - 40] ^= 0x01;
	memset(a.data + 100, 0, 64);
	ok(queue_file_decode(a.data, a.len, &got, &info) == QUEUE_FILE_CORRUPT,
	    "zeroed block detected");
	queue_envelope_clear(&env);
	mx_buf_free(&a);
}

static void
test_crafted(void)
{
	static const unsigned char opt[] = { 0x90, 0, 0, 0, 3, 'n', 'e', 'w' };
	static const unsigned char unk[] = { 0x30, 0, 0, 0, 1, 'x' };
	static const unsigned char dup[] = { 0x02, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0 };
	struct queue_envelope env, got;
	struct queue_file_info info;
	struct mx_buf a;
	size_t off;

	fill_env(&env);

	encode(&a, &env);
	memcpy(a.data, "MXQX", 4);
	is_int(QUEUE_FILE_BAD_MAGIC, queue_file_decode(a.data, a.len, &got, &info), "bad magic");
	is_int(QUEUE_FILE_BAD_MAGIC, queue_file_decode((const unsigned char *)"X", 1, &got, &info),
	    "one wrong octet is bad magic");
	memcpy(a.data, "MXQF", 4);
	a.data[7] = 2;
	reseal(&a);
	is_int(QUEUE_FILE_VERSION, queue_file_decode(a.data, a.len, &got, &info), "version 2");
	mx_buf_free(&a);

	/* Checksum right, values wrong: PITFALLS 21. */
	encode(&a, &env);
	off = find(&a, "alice@sender.example");
	a.data[off + 5] = '\r';
	reseal(&a);
	is_int(QUEUE_FILE_CORRUPT, queue_file_decode(a.data, a.len, &got, &info),
	    "CR in a stored sender refused");
	a.data[off + 5] = '\n';
	reseal(&a);
	is_int(QUEUE_FILE_CORRUPT, queue_file_decode(a.data, a.len, &got, &info),
	    "LF in a stored sender refused");
	a.data[off + 5] = '\0';
	reseal(&a);
	is_int(QUEUE_FILE_CORRUPT, queue_file_decode(a.data, a.len, &got, &info),
	    "NUL in a stored sender refused");
	mx_buf_free(&a);

	encode(&a, &env);
	off = find(&a, "451 4.3.0");
	a.data[off + 3] = '\n';
	reseal(&a);
	is_int(QUEUE_FILE_CORRUPT, queue_file_decode(a.data, a.len, &got, &info),
	    "LF in a stored reply refused");
	mx_buf_free(&a);

	encode(&a, &env);
	off = find(&a, "0F4bXk2Mq1aBcDeFgHiJ");
	a.data[off + 3] = '/';
	reseal(&a);
	is_int(QUEUE_FILE_CORRUPT, queue_file_decode(a.data, a.len, &got, &info),
	    "'/' in a stored queue id refused");
	mx_buf_free(&a);

	/* Records added after the header: an optional one is skipped, others not. */
	encode(&a, &env);
	insert(&a, 8, opt, sizeof(opt));
	ok(queue_file_decode(a.data, a.len, &got, &info) == QUEUE_FILE_OK && env_equal(&env, &got),
	    "unknown optional record skipped");
	queue_envelope_clear(&got);
	mx_buf_free(&a);
	encode(&a, &env);
	insert(&a, 8, unk, sizeof(unk));
	is_int(QUEUE_FILE_CORRUPT, queue_file_decode(a.data, a.len, &got, &info),
	    "unknown mandatory record refused");
	mx_buf_free(&a);

	/* The same singleton twice. */
	encode(&a, &env);
	insert(&a, 8, dup, sizeof(dup));
	is_int(QUEUE_FILE_CORRUPT, queue_file_decode(a.data, a.len, &got, &info),
	    "duplicate ARRIVAL refused");
	mx_buf_free(&a);

	/* A length field pointing past the BODY record. */
	encode(&a, &env);
	be32(a.data + 9, 0x7fffffff);
	reseal(&a);
	is_int(QUEUE_FILE_CORRUPT, queue_file_decode(a.data, a.len, &got, &info),
	    "oversized record length refused");
	mx_buf_free(&a);
	queue_envelope_clear(&env);
}

static void
refuse(const char *what, struct queue_envelope *env)
{
	struct mx_buf b;
	struct queue_file_writer w;

	mx_buf_init(&b, 0);
	mx_buf_add(&b, "keep", 4);
	errno = 0;
	ok(queue_file_begin(&w, env, &b) == -1 && errno == EINVAL && b.len == 4,
	    "encoder refuses %s", what);
	mx_buf_free(&b);
	queue_envelope_clear(env);
	fill_env(env);
}

static void
test_encoder_refuses(void)
{
	struct queue_envelope env;
	struct mx_buf small;
	struct queue_file_writer w;

	fill_env(&env);
	set(env.sender, sizeof(env.sender), "a\r@b.example");
	refuse("CR in the sender", &env);
	set(env.sender, sizeof(env.sender), "a@b.example\n");
	refuse("LF in the sender", &env);
	set(env.sender, sizeof(env.sender), "a\t@b.example");
	refuse("TAB in the sender", &env);
	set(env.sender, sizeof(env.sender), "a\x7f@b.example");
	refuse("DEL in the sender", &env);
	set(env.helo, sizeof(env.helo), "evil\r\nRCPT TO:<x@y>");
	refuse("CRLF in the HELO name", &env);
	set(env.rcpts[1].addr, sizeof(env.rcpts[1].addr), "b\r\n@reg.test");
	refuse("CRLF in a recipient", &env);
	set(env.rcpts[1].addr, sizeof(env.rcpts[1].addr), "");
	refuse("an empty recipient", &env);
	set(env.rcpts[0].reply, sizeof(env.rcpts[0].reply), "250 ok\r\n354 go");
	refuse("CRLF in a reply", &env);
	set(env.rcpts[0].orcpt, sizeof(env.rcpts[0].orcpt), "rfc822;a\rb");
	refuse("CR in ORCPT", &env);
	set(env.envid, sizeof(env.envid), "a\nb");
	refuse("LF in ENVID", &env);
	set(env.tls_cipher, sizeof(env.tls_cipher), "x\ny");
	refuse("LF in the TLS cipher", &env);
	set(env.id, sizeof(env.id), "../etc");
	refuse("a queue id that is not a file name", &env);
	set(env.id, sizeof(env.id), "");
	refuse("an empty queue id", &env);
	env.nrcpts = 0;
	refuse("no recipients", &env);
	env.rcpts[2].state = (enum queue_rcpt_state)9;
	refuse("an unknown recipient state", &env);
	env.rcpts[2].notify = 0x40;
	refuse("unknown NOTIFY bits", &env);
	env.body = (enum queue_body)3;
	refuse("an unknown BODY", &env);
	memset(env.helo, 'h', sizeof(env.helo));	/* no NUL within the limit */
	refuse("an unterminated HELO", &env);

	/* A capped buffer: EMSGSIZE, nothing half-written. */
	mx_buf_init(&small, 64);
	ok(queue_file_begin(&w, &env, &small) == -1 && errno == EMSGSIZE && small.len == 0,
	    "encoder stops cleanly at the buffer cap");
	mx_buf_free(&small);
	queue_envelope_clear(&env);
}

static void
jrec_rcpt(struct mx_buf *b, uint32_t idx, enum queue_rcpt_state st, int64_t t, const char *reply)
{
	struct queue_journal_rec r;

	memset(&r, 0, sizeof(r));
	r.type = QUEUE_JOURNAL_RCPT;
	r.rcpt = idx;
	r.state = st;
	r.time = t;
	set(r.reply, sizeof(r.reply), reply);
	if (queue_journal_encode(&r, b) == -1)
		bail("queue_journal_encode: %s", strerror(errno));
}

/* The journal used throughout: ends[k] is where record k ends (0: the id). */
static void
build_journal(struct mx_buf *j, size_t *ends, size_t *nends)
{
	struct queue_journal_rec r;

	*nends = 0;
	mx_buf_init(j, 0);
	if (queue_journal_begin("0F4bXk2Mq1aBcDeFgHiJ", j) == -1)
		bail("queue_journal_begin");
	ends[(*nends)++] = j->len;
	jrec_rcpt(j, 0, QUEUE_RCPT_DELIVERED, 1743502100, "250 2.0.0 Ok: queued as 4Xyz");
	ends[(*nends)++] = j->len;
	jrec_rcpt(j, 2, QUEUE_RCPT_DEFERRED, 1743502200, "421 4.4.2 timeout");
	ends[(*nends)++] = j->len;
	memset(&r, 0, sizeof(r));
	r.type = QUEUE_JOURNAL_RETRY;
	r.time = 1743503000;
	r.attempts = 2;
	if (queue_journal_encode(&r, j) == -1)
		bail("RETRY record");
	ends[(*nends)++] = j->len;
	jrec_rcpt(j, 0, QUEUE_RCPT_DEFERRED, 1743502300, "must not undo delivery");
	ends[(*nends)++] = j->len;
	jrec_rcpt(j, 2, QUEUE_RCPT_FAILED, 1743502400, "550 5.1.1 no such user");
	ends[(*nends)++] = j->len;
	memset(&r, 0, sizeof(r));
	r.type = QUEUE_JOURNAL_HOLD;
	r.held = true;
	if (queue_journal_encode(&r, j) == -1)
		bail("HOLD record");
	ends[(*nends)++] = j->len;
}

static void
test_journal(void)
{
	struct queue_envelope env;
	struct queue_journal_info info;
	struct queue_journal_rec r;
	struct mx_buf j;
	size_t ends[8], nends = 0, cut, off, bad, glen;
	enum queue_journal_result jr;
	unsigned char *gold;

	build_journal(&j, ends, &nends);
	gold = test_data_read("queue-journal-v1.bin", &glen);
	is_blob(gold, glen, j.data, j.len, "journal encoding unchanged from the golden file");
	free(gold);

	/* Raw iteration. */
	off = 0;
	jr = queue_journal_next(j.data, j.len, &off, &r);
	ok(jr == QUEUE_JOURNAL_RECORD && r.type == QUEUE_JOURNAL_ID &&
	    strcmp(r.id, "0F4bXk2Mq1aBcDeFgHiJ") == 0, "first record is the id");
	jr = queue_journal_next(j.data, j.len, &off, &r);
	ok(jr == QUEUE_JOURNAL_RECORD && r.type == QUEUE_JOURNAL_RCPT && r.rcpt == 0 &&
	    r.state == QUEUE_RCPT_DELIVERED && r.time == 1743502100 &&
	    strcmp(r.reply, "250 2.0.0 Ok: queued as 4Xyz") == 0, "RCPT record round trip");

	fill_env(&env);
	ok(queue_journal_apply(&env, j.data, j.len, &info) == 0, "apply the journal");
	ok(info.records == 6 && info.valid_len == j.len && !info.torn && !info.corrupt,
	    "all six records applied, nothing torn");
	ok(env.rcpts[0].state == QUEUE_RCPT_DELIVERED &&
	    strcmp(env.rcpts[0].reply, "250 2.0.0 Ok: queued as 4Xyz") == 0,
	    "delivered stays delivered");
	ok(env.rcpts[1].state == QUEUE_RCPT_PENDING, "untouched recipient still pending");
	ok(env.rcpts[2].state == QUEUE_RCPT_FAILED && env.rcpts[2].updated == 1743502400 &&
	    strcmp(env.rcpts[2].reply, "550 5.1.1 no such user") == 0, "deferred then failed");
	ok(env.next_attempt == 1743503000 && env.attempts == 2 && env.held, "retry and hold");
	queue_envelope_clear(&env);

	/* A crash at any offset: complete records count, the torn tail does not. */
	bad = 0;
	for (cut = 0; cut <= j.len; cut++) {
		size_t k, want_records = 0, want_valid = 0;
		bool boundary = cut == 0;

		for (k = 0; k < nends; k++) {
			if (ends[k] <= cut) {
				want_valid = ends[k];
				want_records = k;
			}
			if (ends[k] == cut)
				boundary = true;
		}
		fill_env(&env);
		if (queue_journal_apply(&env, j.data, cut, &info) != 0 ||
		    info.records != want_records || info.valid_len != want_valid ||
		    info.corrupt || info.torn == boundary) {
			diag("journal cut at %zu: records %u valid %zu torn %d corrupt %d", cut,
			    info.records, info.valid_len, info.torn, info.corrupt);
			bad++;
		}
		queue_envelope_clear(&env);
	}
	is_int(0, bad, "journal truncated at each of %zu offsets: torn tail ignored", j.len + 1);

	/* Damage in the middle is corruption; records after it are not used. */
	j.data[ends[1] + 7] ^= 0x20;
	fill_env(&env);
	queue_journal_apply(&env, j.data, j.len, &info);
	ok(info.corrupt && info.records == 1 && info.valid_len == ends[1] &&
	    env.rcpts[0].state == QUEUE_RCPT_DELIVERED && env.rcpts[2].state == QUEUE_RCPT_DEFERRED,
	    "flipped bit mid-journal: corrupt, earlier records kept");
	queue_envelope_clear(&env);
	j.data[ends[1] + 7] ^= 0x20;

	/* Another message's journal. */
	fill_env(&env);
	env.id[0] = 'X';
	ok(queue_journal_apply(&env, j.data, j.len, &info) == -1 && info.corrupt &&
	    env.rcpts[0].state == QUEUE_RCPT_PENDING, "journal of another id not applied");
	queue_envelope_clear(&env);

	/* A recipient index the message does not have. */
	jrec_rcpt(&j, 7, QUEUE_RCPT_DELIVERED, 1, "");
	fill_env(&env);
	queue_journal_apply(&env, j.data, j.len, &info);
	ok(info.corrupt && info.records == 6 && info.valid_len == ends[nends - 1],
	    "recipient index out of range is corruption");
	queue_envelope_clear(&env);

	/* Bad journal headers. */
	fill_env(&env);
	ok(queue_journal_apply(&env, (const unsigned char *)"MXQF\0\0\0\1", 8, &info) == 0 &&
	    info.corrupt && info.valid_len == 0, "wrong magic: corrupt, rewrite");
	ok(queue_journal_apply(&env, (const unsigned char *)"", 0, &info) == 0 && !info.torn &&
	    !info.corrupt && info.valid_len == 0, "empty journal");
	queue_envelope_clear(&env);
	mx_buf_free(&j);

	/* The encoder refuses what must not be stored. */
	mx_buf_init(&j, 0);
	ok(queue_journal_begin("bad/id", &j) == -1 && errno == EINVAL && j.len == 0,
	    "journal: bad id refused");
	memset(&r, 0, sizeof(r));
	r.type = QUEUE_JOURNAL_RCPT;
	set(r.reply, sizeof(r.reply), "250 ok\r\nRCPT TO:<x@y>");
	ok(queue_journal_encode(&r, &j) == -1 && errno == EINVAL && j.len == 0,
	    "journal: CRLF in a reply refused");
	r.reply[0] = '\0';
	r.state = (enum queue_rcpt_state)5;
	ok(queue_journal_encode(&r, &j) == -1 && errno == EINVAL, "journal: unknown state refused");
	r.type = (enum queue_journal_type)99;
	ok(queue_journal_encode(&r, &j) == -1 && errno == EINVAL, "journal: unknown type refused");
	mx_buf_free(&j);
}

static void
test_ids(void)
{
	char id[QUEUE_ID_LEN + 1], prev[QUEUE_ID_LEN + 1], many[200][QUEUE_ID_LEN + 1];
	size_t i, k, dups = 0, invalid = 0;
	uint64_t t;

	queue_id_format(id, 0, 0);
	is_string("00000000000000000000", id, "id of zero");
	queue_id_format(id, 61, 61);
	is_string("00000000z0000000000z", id, "id digits");
	queue_id_format(id, 1700000000123456ULL, UINT64_MAX);
	is_string("7mjS6bYyuLygHa16AHYF", id, "id of a real time and all-ones random");

	queue_id_format(prev, 1700000000000000ULL, UINT64_MAX);
	k = 0;
	for (t = 1700000000000001ULL; t < 1700000000000000ULL + 100000; t += 7) {
		queue_id_format(id, t, 0);
		if (strcmp(prev, id) >= 0)
			k++;
		memcpy(prev, id, sizeof(id));
	}
	is_int(0, k, "ids sort by time");

	for (i = 0; i < MX_NELEM(many); i++) {
		if (queue_id_generate(many[i]) == -1)
			bail("queue_id_generate: %s", strerror(errno));
		if (strlen(many[i]) != QUEUE_ID_LEN || !queue_id_valid(many[i]))
			invalid++;
		for (k = 0; k < i; k++)
			if (strcmp(many[k], many[i]) == 0)
				dups++;
	}
	is_int(0, invalid, "generated ids are 20 characters of [0-9A-Za-z]");
	is_int(0, dups, "generated ids are unique");

	ok(!queue_id_valid(""), "empty id invalid");
	ok(!queue_id_valid("abc/def"), "id with / invalid");
	ok(!queue_id_valid("abc.st"), "id with . invalid");
	ok(queue_id_valid("abcdefghijklmnopqrstuvwxyz012345"), "32-character id valid");
	ok(!queue_id_valid("abcdefghijklmnopqrstuvwxyz0123456"), "33-character id invalid");
}

static int
write_file(const char *dir, const char *name, const struct mx_buf *b)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if ((f = fopen(path, "wb")) == NULL || fwrite(b->data, 1, b->len, f) != b->len ||
	    fclose(f) != 0) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return 1;
	}
	return 0;
}

static int
write_golden(const char *dir)
{
	struct queue_envelope env;
	struct mx_buf a, j;
	size_t ends[8], nends;
	int r;

	fill_env(&env);
	encode(&a, &env);
	queue_envelope_clear(&env);
	build_journal(&j, ends, &nends);
	r = write_file(dir, "queue-v1.bin", &a) | write_file(dir, "queue-journal-v1.bin", &j);
	mx_buf_free(&a);
	mx_buf_free(&j);
	return r;
}

int
main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "--write-golden") == 0)
		return write_golden(argv[2]);
	plan_lazy();
	test_crc();
	test_roundtrip();
	test_many();
	test_golden();
	test_truncation();
	test_bitflips();
	test_crafted();
	test_encoder_refuses();
	test_journal();
	test_ids();
	return 0;
}
