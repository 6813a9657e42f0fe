/*
 * Tests for the filesystem spool (src/queue_fs.c) on a real directory on
 * the build machine's disk: commit and read back, journals, recovery of
 * torn and misnamed files, stale temp files, injected fsync and write
 * failures, group commit under many concurrent commits, removal.  Ends with
 * a throughput figure (2000 messages of 4 KiB, 20 in flight) printed as a
 * diagnostic, not checked: it depends on the disk.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "basic.h"
#include "log.h"
#include "queue.h"
#include "stats.h"

#define MANY 200
#define BENCH_MSGS 2000
#define BENCH_INFLIGHT 20
#define BENCH_SIZE 4096

static struct event_base *base;
static char spool[128];
static char path[512];

/* Commit callbacks ------------------------------------------------------ */

struct commit {
	int calls;
	bool ok;
	char id[QUEUE_ID_MAX + 1];
	int order;		/* sequence number of the commit callback */
	int arrival_order;	/* sequence number of the arrival callback, 0 if none */
};

static int seq;
static struct commit *by_id_tab[MANY + 64];
static int by_id_n;

static void
commit_cb(bool ok, const char *id, void *arg)
{
	struct commit *c = arg;

	c->calls++;
	c->ok = ok;
	snprintf(c->id, sizeof(c->id), "%s", id);
	c->order = ++seq;
}

static void
arrival_cb(const struct queue_envelope *env, void *arg)
{
	int i;

	/* The commit callback ran just before, and recorded the id. */
	for (i = 0; i < by_id_n; i++)
		if (strcmp(by_id_tab[i]->id, env->id) == 0)
			by_id_tab[i]->arrival_order = ++seq;
}

static void
track(struct commit *c)
{
	memset(c, 0, sizeof(*c));
	if (by_id_n < (int)(sizeof(by_id_tab) / sizeof(by_id_tab[0])))
		by_id_tab[by_id_n++] = c;
}

static void
untrack_all(void)
{
	by_id_n = 0;
}

static bool timed_out;

static void
on_guard(evutil_socket_t fd, short what, void *arg)
{
	timed_out = true;
}

/* Run the loop until *count reaches want (or 20 s pass). */
static void
run_until(const int *count, int want)
{
	struct timeval tv = { 20, 0 };
	struct event *guard = evtimer_new(base, on_guard, NULL);

	timed_out = false;
	evtimer_add(guard, &tv);
	while (*count < want && !timed_out)
		event_base_loop(base, EVLOOP_ONCE);
	event_free(guard);
	if (timed_out)
		bail("timed out waiting for %d callbacks (have %d)", want, *count);
}

/* Helpers ---------------------------------------------------------------- */

static const char *sp(const char *fmt, ...) TAP_PRINTF(1, 2);

/* A path under the spool (one static buffer: one call per expression). */
static const char *
sp(const char *fmt, ...)
{
	char rel[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(rel, sizeof(rel), fmt, ap);
	va_end(ap);
	snprintf(path, sizeof(path), "%s/%s", spool, rel);
	return path;
}

static bool
exists(const char *p)
{
	struct stat sb;

	return lstat(p, &sb) == 0;
}

/* Wait up to 2 s for the commit worker to unlink a file. */
static bool
gone_soon(const char *p)
{
	int i;

	for (i = 0; i < 200 && exists(p); i++)
		usleep(10000);
	return !exists(p);
}

static int
dir_count(const char *sub)
{
	struct dirent *de;
	DIR *d;
	int n = 0;

	if ((d = opendir(sp("%s", sub))) == NULL)
		return -1;
	while ((de = readdir(d)) != NULL)
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			n++;
	closedir(d);
	return n;
}

static void
make_env(struct queue_envelope *env, int nrcpts)
{
	struct queue_rcpt *r;
	int i;

	queue_envelope_init(env);
	if (queue_id_generate(env->id) == -1)
		bail("queue_id_generate: %s", strerror(errno));
	env->arrival = 1700000000;
	env->next_attempt = 1700000000;
	snprintf(env->sender, sizeof(env->sender), "sender@example.org");
	snprintf(env->client_addr, sizeof(env->client_addr), "192.0.2.7");
	snprintf(env->helo, sizeof(env->helo), "mail.example.org");
	env->body = QUEUE_BODY_8BITMIME;
	for (i = 0; i < nrcpts; i++) {
		if ((r = queue_envelope_add_rcpt(env)) == NULL)
			bail("add_rcpt");
		snprintf(r->addr, sizeof(r->addr), "user%d@example.com", i);
		r->notify = QUEUE_NOTIFY_FAILURE;
	}
}

static unsigned char *
make_body(size_t len, unsigned int seed)
{
	unsigned char *b = malloc(len);
	size_t i;

	if (b == NULL)
		bail("malloc");
	for (i = 0; i < len; i++) {
		seed = seed * 1103515245u + 12345u;
		b[i] = (unsigned char)(seed >> 16);
	}
	return b;
}

/* Write body in uneven chunks, one of them larger than the writer's buffer. */
static void
write_chunked(struct queue_writer *w, const unsigned char *b, size_t len)
{
	static const size_t steps[] = { 1, 7, 1000, 65535, 65536, 70000, 3, 4096 };
	size_t off = 0, i = 0;

	while (off < len) {
		size_t n = steps[i++ % (sizeof(steps) / sizeof(steps[0]))];

		if (n > len - off)
			n = len - off;
		queue_writer_body(w, b + off, n);
		off += n;
	}
}

static unsigned char *
read_body(const char *id, size_t *lenp)
{
	uint64_t off, len;
	unsigned char *b;
	size_t got = 0;
	int fd;

	*lenp = 0;
	if ((fd = queue_body_open(id, &off, &len)) == -1)
		return NULL;
	if ((b = malloc(len + 1)) == NULL)
		bail("malloc");
	while (got < len) {
		ssize_t r = pread(fd, b + got, len - got, (off_t)(off + got));

		if (r <= 0)
			break;
		got += (size_t)r;
	}
	close(fd);
	*lenp = got;
	return b;
}

static int
rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(p);
}

static void
reinit(void)
{
	char err[256];

	queue_shutdown();
	if (queue_init(base, spool, err, sizeof(err)) == -1)
		bail("queue_init: %s", err);
}

static unsigned long long
counter(const char *name)
{
	return *stats_counter(name);
}

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Commit one message and wait for its callback. */
static struct commit
commit_one(struct queue_envelope *env, const unsigned char *body, size_t len)
{
	struct queue_writer *w;
	struct commit c;

	track(&c);
	if ((w = queue_writer_open(env)) == NULL)
		bail("queue_writer_open: %s", strerror(errno));
	write_chunked(w, body, len);
	queue_writer_commit(w, commit_cb, &c);
	run_until(&c.calls, 1);
	untrack_all();
	return c;
}

/* Scan collection -------------------------------------------------------- */

struct scan_result {
	int n;
	char ids[MANY + 64][QUEUE_ID_MAX + 1];
	bool bodies_ok;
	const unsigned char *want_body;
	size_t want_len;
	const char *body_id;
};

static void
scan_cb(const struct queue_envelope *env, void *arg)
{
	struct scan_result *s = arg;

	if (s->n < (int)(sizeof(s->ids) / sizeof(s->ids[0])))
		snprintf(s->ids[s->n], sizeof(s->ids[0]), "%s", env->id);
	s->n++;
	if (s->body_id != NULL && strcmp(s->body_id, env->id) == 0) {
		size_t len;
		unsigned char *b = read_body(env->id, &len);

		s->bodies_ok = b != NULL && len == s->want_len && memcmp(b, s->want_body, len) == 0;
		free(b);
	}
}

static bool
scan_has(const struct scan_result *s, const char *id)
{
	int i;

	for (i = 0; i < s->n && i < (int)(sizeof(s->ids) / sizeof(s->ids[0])); i++)
		if (strcmp(s->ids[i], id) == 0)
			return true;
	return false;
}

static int
copy_file(const char *from, const char *to, off_t keep)
{
	unsigned char buf[65536];
	off_t done = 0;
	int in, out;
	ssize_t r;

	if ((in = open(from, O_RDONLY)) == -1)
		return -1;
	if ((out = open(to, O_WRONLY | O_CREAT | O_EXCL, 0600)) == -1) {
		close(in);
		return -1;
	}
	while ((keep < 0 || done < keep) && (r = read(in, buf, sizeof(buf))) > 0) {
		if (keep >= 0 && done + r > keep)
			r = keep - done;
		if (write(out, buf, (size_t)r) != r)
			break;
		done += r;
	}
	close(in);
	close(out);
	return 0;
}

/* Tests ------------------------------------------------------------------ */

static void
test_commit_and_read(struct queue_envelope *a, unsigned char **bodyp, size_t *lenp)
{
	struct queue_envelope env;
	struct commit c;
	struct stat sb;
	size_t len = 300000, blen;
	unsigned char *body = make_body(len, 1), *got;

	make_env(a, 3);
	snprintf(a->tls_version, sizeof(a->tls_version), "TLS1.3");
	c = commit_one(a, body, len);
	ok(c.ok, "commit of a 300000-octet message succeeds");
	is_string(a->id, c.id, "callback carries the id");
	ok(c.arrival_order == c.order + 1, "arrival callback runs right after the commit callback");
	ok(exists(sp("queue/%s", a->id)), "message is in queue/");
	ok(!exists(sp("tmp/%s", a->id)), "temp file is gone");
	ok(exists(sp("queue/%s.st", a->id)), "journal created with the commit");
	ok(stat(sp("queue/%s", a->id), &sb) == 0 && (sb.st_mode & 0777) == 0600,
	    "message file mode 0600");
	got = read_body(a->id, &blen);
	is_blob(body, len, got, blen, "queue_body_open reads a byte-identical body");
	free(got);
	ok(queue_load(a->id, &env) == 0, "queue_load");
	is_string(a->sender, env.sender, "sender read back");
	is_int(3, (long long)env.nrcpts, "three recipients read back");
	is_string("user2@example.com", env.nrcpts == 3 ? env.rcpts[2].addr : "",
	    "third recipient read back");
	is_string("TLS1.3", env.tls_version, "TLS version read back");
	queue_envelope_clear(&env);
	*bodyp = body;
	*lenp = len;
}

static void
test_journal(const struct queue_envelope *a)
{
	struct queue_journal_rec rec;
	struct queue_envelope env;
	struct stat sb1, sb2;
	int fd;

	memset(&rec, 0, sizeof(rec));
	rec.type = QUEUE_JOURNAL_RCPT;
	rec.rcpt = 1;
	rec.state = QUEUE_RCPT_DELIVERED;
	rec.time = 1700000100;
	snprintf(rec.reply, sizeof(rec.reply), "250 2.0.0 ok");
	ok(queue_journal_append(a->id, &rec) == 0, "journal append RCPT");
	memset(&rec, 0, sizeof(rec));
	rec.type = QUEUE_JOURNAL_RETRY;
	rec.time = 1700000900;
	rec.attempts = 2;
	ok(queue_journal_append(a->id, &rec) == 0, "journal append RETRY");
	ok(queue_load(a->id, &env) == 0, "queue_load after appends");
	is_int(QUEUE_RCPT_DELIVERED, env.nrcpts > 1 ? (int)env.rcpts[1].state : -1,
	    "recipient 1 delivered");
	is_string("250 2.0.0 ok", env.nrcpts > 1 ? env.rcpts[1].reply : "", "reply recorded");
	is_int(QUEUE_RCPT_PENDING, env.nrcpts > 0 ? (int)env.rcpts[0].state : -1,
	    "recipient 0 still pending");
	is_int(2, env.attempts, "attempts from RETRY");
	is_int(1700000900, env.next_attempt, "next attempt from RETRY");
	queue_envelope_clear(&env);

	/* A torn tail (a crash mid-append) is cut off by the next append. */
	stat(sp("queue/%s.st", a->id), &sb1);
	if ((fd = open(sp("queue/%s.st", a->id), O_WRONLY | O_APPEND)) == -1 ||
	    write(fd, "\x02\x00\x00", 3) != 3)
		bail("cannot tear the journal");
	close(fd);
	ok(queue_load(a->id, &env) == 0, "queue_load with a torn journal tail");
	queue_envelope_clear(&env);
	memset(&rec, 0, sizeof(rec));
	rec.type = QUEUE_JOURNAL_HOLD;
	rec.held = true;
	ok(queue_journal_append(a->id, &rec) == 0, "append after a torn tail");
	stat(sp("queue/%s.st", a->id), &sb2);
	ok(queue_load(a->id, &env) == 0 && env.held, "HOLD applied after the torn tail was cut");
	is_int(QUEUE_RCPT_DELIVERED, env.nrcpts > 1 ? (int)env.rcpts[1].state : -1,
	    "earlier records survive");
	queue_envelope_clear(&env);
	ok(sb2.st_size > sb1.st_size && sb2.st_size < sb1.st_size + 3 + 64,
	    "garbage truncated before the new record");
	memset(&rec, 0, sizeof(rec));
	rec.type = QUEUE_JOURNAL_ID;
	snprintf(rec.id, sizeof(rec.id), "%s", a->id);
	ok(queue_journal_append(a->id, &rec) == -1 && errno == EINVAL, "ID records refused");
	rec.type = QUEUE_JOURNAL_RCPT;
	snprintf(rec.reply, sizeof(rec.reply), "250 ok\r\nMAIL FROM:<x>");
	ok(queue_journal_append(a->id, &rec) == -1 && errno == EINVAL, "CR/LF in a reply refused");
	ok(queue_journal_append("0000000000NOSUCHMSG0", &rec) == -1, "no journal without a message");
	rec.reply[0] = '\0';
	ok(queue_journal_append("0000000000NOSUCHMSG0", &rec) == -1 && errno == ENOENT &&
	    !exists(sp("queue/%s.st", "0000000000NOSUCHMSG0")), "ENOENT and no file created");
	ok(queue_journal_append("../etc/passwd", &rec) == -1 && errno == EINVAL,
	    "path in an id refused");
}

static void
new_id(char id[QUEUE_ID_MAX + 1])
{
	if (queue_id_generate(id) == -1)
		bail("queue_id_generate: %s", strerror(errno));
}

static void
test_recovery(const struct queue_envelope *a, const unsigned char *body, size_t len)
{
	struct queue_envelope env;
	struct scan_result *s = calloc(1, sizeof(*s));
	struct stat sb;
	char src[512], jsrc[512], tid[QUEUE_ID_MAX + 1], mid[QUEUE_ID_MAX + 1];
	char jid[QUEUE_ID_MAX + 1], jdst[512];
	int fd, n;

	if (s == NULL)
		bail("calloc");
	new_id(tid);
	new_id(mid);
	new_id(jid);
	snprintf(src, sizeof(src), "%s", sp("queue/%s", a->id));
	snprintf(jsrc, sizeof(jsrc), "%s", sp("queue/%s.st", a->id));
	snprintf(jdst, sizeof(jdst), "%s", sp("queue/%s.st", jid));
	if (stat(src, &sb) == -1)
		bail("stat: %s", strerror(errno));
	/* Truncated copy: what a crash could leave had the file been renamed before its fsync. */
	if (copy_file(src, sp("queue/%s", tid), sb.st_size / 2) == -1 ||
	    copy_file(src, sp("queue/%s", mid), -1) == -1)
		bail("copy: %s", strerror(errno));
	/* A good message (same content as a) whose journal belongs to another id. */
	if (copy_file(src, sp("queue/%s", jid), -1) == -1 || copy_file(jsrc, jdst, -1) == -1)
		bail("copy: %s", strerror(errno));
	if ((fd = open(sp("queue/%s", "not-a-queue-id"), O_WRONLY | O_CREAT, 0600)) == -1)
		bail("create");
	close(fd);
	/* Orphan journal: a crash between queue_remove()'s two steps. */
	if ((fd = open(sp("queue/%s.st", "0000000000ORPHANJRNL"), O_WRONLY | O_CREAT, 0600)) == -1)
		bail("create");
	close(fd);

	s->body_id = a->id;
	s->want_body = body;
	s->want_len = len;
	n = queue_scan(scan_cb, s);
	ok(n >= 1 && scan_has(s, a->id), "scan visits the good message");
	ok(s->bodies_ok, "scan: body byte-identical");
	ok(!scan_has(s, tid) && !exists(sp("queue/%s", tid)) && exists(sp("corrupt/%s", tid)),
	    "torn file moved to corrupt/, not visited");
	ok(!scan_has(s, mid) && exists(sp("corrupt/%s", mid)),
	    "file whose id differs from its name moved to corrupt/");
	ok(!scan_has(s, jid) && exists(sp("corrupt/%s", jid)) &&
	    exists(sp("corrupt/%s.st", jid)) && !exists(sp("queue/%s.st", jid)),
	    "journal of another id: message and journal moved to corrupt/");
	ok(exists(sp("corrupt/%s", "not-a-queue-id")), "misnamed file moved to corrupt/");
	ok(gone_soon(sp("queue/%s.st", "0000000000ORPHANJRNL")), "orphan journal removed");
	ok(exists(sp("queue/%s.st", a->id)), "the good message keeps its journal");
	is_int(n, s->n, "scan returns the number visited");

	/* Same name again in corrupt/: the earlier file is kept. */
	if ((fd = open(sp("queue/%s", "not-a-queue-id"), O_WRONLY | O_CREAT, 0600)) == -1)
		bail("create");
	close(fd);
	memset(s, 0, sizeof(*s));
	queue_scan(scan_cb, s);
	ok(exists(sp("corrupt/%s", "not-a-queue-id")) &&
	    exists(sp("corrupt/%s", "not-a-queue-id.1")),
	    "a second corrupt file of the same name does not replace the first");
	ok(queue_load(tid, &env) == -1 && errno == ENOENT, "queue_load of a moved file: ENOENT");

	/* queue_load itself refuses (and moves aside) a file damaged after the scan. */
	new_id(tid);
	if (copy_file(src, sp("queue/%s", tid), sb.st_size - 1) == -1)
		bail("copy");
	ok(queue_load(tid, &env) == -1 && errno == EBADMSG && exists(sp("corrupt/%s", tid)),
	    "queue_load of a torn file: EBADMSG, moved to corrupt/");
	new_id(tid);
	if (copy_file(src, sp("queue/%s", tid), sb.st_size - 1) == -1)
		bail("copy");
	ok(queue_body_open(tid, &(uint64_t){ 0 }, &(uint64_t){ 0 }) == -1 && errno == EBADMSG,
	    "queue_body_open of a torn file: EBADMSG");
	free(s);
}

static void
test_tmp_and_abort(void)
{
	struct queue_envelope env;
	struct queue_writer *w, *w2;
	int fd;

	if ((fd = open(sp("tmp/%s", "stale"), O_WRONLY | O_CREAT, 0600)) == -1)
		bail("create stale");
	close(fd);
	reinit();
	ok(!exists(sp("tmp/%s", "stale")), "stale temp file removed at init");

	make_env(&env, 1);
	w = queue_writer_open(&env);
	ok(w != NULL && exists(sp("tmp/%s", env.id)), "writer creates tmp/<id>");
	w2 = queue_writer_open(&env);
	ok(w2 == NULL && errno == EEXIST, "second writer for the same id: EEXIST");
	queue_writer_body(w, "hello\r\n", 7);
	is_int(7, (long long)queue_writer_body_len(w), "body_len counts body octets");
	queue_writer_abort(&w);
	ok(w == NULL && !exists(sp("tmp/%s", env.id)), "abort removes the temp file");
	queue_writer_abort(&w);
	ok(1, "abort of NULL is harmless");

	/* An envelope the format refuses leaves nothing behind. */
	snprintf(env.rcpts[0].addr, sizeof(env.rcpts[0].addr), "bad\r\naddr@example.com");
	w = queue_writer_open(&env);
	ok(w == NULL && errno == EINVAL && !exists(sp("tmp/%s", env.id)),
	    "invalid envelope: EINVAL, no file");
	queue_envelope_clear(&env);
	make_env(&env, 1);
	snprintf(env.id, sizeof(env.id), "../../x");
	ok(queue_writer_open(&env) == NULL && errno == EINVAL, "path as id refused");
	queue_envelope_clear(&env);
}

static void
test_faults(void)
{
	static const struct {
		const char *var, *val, *what;
	} cases[] = {
		{ "MXEDGE_FAULT_FSYNC", "1", "file fsync fails" },
		{ "MXEDGE_FAULT_FSYNC", "2", "directory fsync fails" },
		{ "MXEDGE_FAULT_WRITE", "1", "write fails" },
	};
	struct queue_envelope env;
	unsigned char *body = make_body(5000, 9);
	struct commit c;
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		setenv(cases[i].var, cases[i].val, 1);
		reinit();
		make_env(&env, 2);
		c = commit_one(&env, body, 5000);
		ok(!c.ok, "%s: callback ok=false", cases[i].what);
		ok(c.arrival_order == 0, "%s: no arrival", cases[i].what);
		ok(!exists(sp("tmp/%s", env.id)) && !exists(sp("queue/%s", env.id)) &&
		    !exists(sp("queue/%s.st", env.id)), "%s: nothing left in tmp/ or queue/",
		    cases[i].what);
		/* The next message is fine: only the Nth call fails. */
		queue_envelope_clear(&env);
		make_env(&env, 1);
		c = commit_one(&env, body, 100);
		ok(c.ok, "%s: the next message commits", cases[i].what);
		queue_remove(env.id);
		queue_envelope_clear(&env);
		unsetenv(cases[i].var);
	}
	/* Every fsync failing (a dying disk): every commit fails, none retried. */
	setenv("MXEDGE_FAULT_FSYNC", "1+", 1);
	reinit();
	make_env(&env, 1);
	c = commit_one(&env, body, 100);
	ok(!c.ok && !exists(sp("queue/%s", env.id)), "fsync always failing: commit fails");
	queue_envelope_clear(&env);
	unsetenv("MXEDGE_FAULT_FSYNC");

	setenv("MXEDGE_FAULT_FREE", "12345", 1);
	reinit();
	is_int(12345, queue_free_space(), "MXEDGE_FAULT_FREE overrides the free space");
	unsetenv("MXEDGE_FAULT_FREE");
	reinit();
	ok(queue_free_space() > 12345, "real free space reported");
	free(body);
}

static void
test_many(void)
{
	static struct commit cs[MANY];
	static char ids[MANY][QUEUE_ID_MAX + 1];
	struct queue_writer *w[MANY];
	struct queue_envelope env;
	struct scan_result *s = calloc(1, sizeof(*s));
	unsigned char *body = make_body(1000 + MANY * 97, 5);
	unsigned long long d0 = counter("queue.dir_fsyncs"), f0 = counter("queue.file_fsyncs");
	unsigned long long dirs, files;
	int i, done = 0, good = 0, found = 0;

	if (s == NULL)
		bail("calloc");
	for (i = 0; i < MANY; i++) {
		make_env(&env, 1 + i % 4);
		snprintf(ids[i], sizeof(ids[i]), "%s", env.id);
		if ((w[i] = queue_writer_open(&env)) == NULL)
			bail("open %d: %s", i, strerror(errno));
		queue_envelope_clear(&env);
		queue_writer_body(w[i], body, 1000 + (size_t)i * 97);
		memset(&cs[i], 0, sizeof(cs[i]));
	}
	for (i = 0; i < MANY; i++)
		queue_writer_commit(w[i], commit_cb, &cs[i]);
	while (done < MANY) {
		run_until(&cs[done].calls, 1);
		while (done < MANY && cs[done].calls > 0)
			done++;
	}
	for (i = 0; i < MANY; i++) {
		good += cs[i].ok && cs[i].calls == 1;
	}
	is_int(MANY, good, "%d concurrent commits all succeed, one callback each", MANY);
	dirs = counter("queue.dir_fsyncs") - d0;
	files = counter("queue.file_fsyncs") - f0;
	ok(dirs < MANY && dirs > 0, "group commit: %llu directory fsyncs for %d messages", dirs,
	    MANY);
	is_int(MANY, (long long)files, "one file fsync per message");
	diag("group commit: %d messages, %llu directory fsyncs (%.1f messages per fsync)", MANY,
	    dirs, (double)MANY / (double)(dirs ? dirs : 1));
	queue_scan(scan_cb, s);
	for (i = 0; i < MANY; i++)
		found += scan_has(s, ids[i]);
	is_int(MANY, found, "scan finds all of them");
	for (i = 0; i < MANY; i++)
		queue_remove(ids[i]);
	free(body);
	free(s);
}

static void
test_remove(const struct queue_envelope *a)
{
	struct queue_envelope env;

	ok(queue_remove(a->id) == 0, "queue_remove");
	ok(!exists(sp("queue/%s", a->id)), "message unlinked at once");
	ok(gone_soon(sp("queue/%s.st", a->id)), "journal unlinked after the directory fsync");
	ok(queue_load(a->id, &env) == -1 && errno == ENOENT, "queue_load after remove: ENOENT");
	ok(queue_remove(a->id) == -1 && errno == ENOENT, "second remove: ENOENT");
	ok(queue_remove("a/b") == -1 && errno == EINVAL, "remove refuses a path");
}

static int reopen_errno;

/* A session that starts its next message from the callback, during shutdown. */
static void
commit_cb_reopen(bool ok, const char *id, void *arg)
{
	struct queue_envelope env;
	struct queue_writer *w;

	commit_cb(ok, id, arg);
	make_env(&env, 1);
	w = queue_writer_open(&env);
	reopen_errno = w == NULL ? errno : 0;
	queue_writer_abort(&w);
	queue_envelope_clear(&env);
}

static void
test_shutdown_pending(void)
{
	struct queue_envelope env;
	struct queue_writer *w;
	struct commit c;

	make_env(&env, 1);
	memset(&c, 0, sizeof(c));
	if ((w = queue_writer_open(&env)) == NULL)
		bail("open");
	queue_writer_body(w, "x\r\n", 3);
	queue_writer_commit(w, commit_cb_reopen, &c);
	is_int(0, c.calls, "callback never runs inside queue_writer_commit");
	queue_shutdown();
	ok(c.calls == 1 && c.ok, "commit pending at shutdown completes, callback from shutdown");
	is_int(ESHUTDOWN, reopen_errno, "no new writer while shutting down");
	ok(exists(sp("queue/%s", env.id)), "and the message is in queue/");
	reinit();
	queue_remove(env.id);
	queue_envelope_clear(&env);
}

/*
 * Process crashes: a child commits messages with 20 in flight and reports
 * each acknowledged id on a pipe (what a sender would see as a 250); it is
 * killed with SIGKILL at a random moment.  Afterwards every acknowledged
 * message must be in queue/ and intact, nothing in corrupt/ or tmp/.  (A
 * process kill keeps the page cache: this checks the order of the steps,
 * not the fsyncs, which the fault tests cover.)
 */
#define CRASH_ROUNDS 8

struct crash_child {
	int fd;
	int inflight;
	unsigned char *body;
};

static void crash_next(struct crash_child *cc);

static void
crash_cb(bool ok, const char *id, void *arg)
{
	struct crash_child *cc = arg;
	char line[QUEUE_ID_MAX + 2];
	int n;

	cc->inflight--;
	if (ok) {
		n = snprintf(line, sizeof(line), "%s\n", id);
		if (write(cc->fd, line, (size_t)n) != n)
			_exit(3);
	}
	while (cc->inflight < BENCH_INFLIGHT)
		crash_next(cc);
}

static void
crash_next(struct crash_child *cc)
{
	struct queue_envelope env;
	struct queue_writer *w;
	size_t len;

	make_env(&env, 2);
	if ((w = queue_writer_open(&env)) == NULL)
		_exit(4);
	/* Sizes from 1 octet to ~200 KiB, so some kills land in the middle of writes. */
	len = 1 + (size_t)(mx_random_u32() % 200000);
	queue_writer_body(w, cc->body, len);
	queue_envelope_clear(&env);
	cc->inflight++;
	queue_writer_commit(w, crash_cb, cc);
}

static void
crash_scan_cb(const struct queue_envelope *env, void *arg)
{
	struct mx_buf *ids = arg;

	mx_buf_addstr(ids, env->id);
	mx_buf_addstr(ids, "\n");
}

/* Is id one of the lines of list (each "id\n")? */
static bool
has_line(const char *list, const char *id)
{
	size_t n = strlen(id);
	const char *p;

	for (p = list; p != NULL && (p = strstr(p, id)) != NULL; p += n)
		if ((p == list || p[-1] == '\n') && p[n] == '\n')
			return true;
	return false;
}

static void
test_crash(void)
{
	unsigned char *body = make_body(200000, 11);
	unsigned long acked_total = 0, missing = 0, unacked_total = 0;
	int round, corrupt_total = 0, tmp_left = 0;

	for (round = 0; round < CRASH_ROUNDS; round++) {
		struct mx_buf acked, found;
		char buf[4096], *line, *next;
		int pfd[2], st, corrupt_before = dir_count("corrupt");
		struct pollfd pl;
		pid_t pid;
		ssize_t r;

		queue_shutdown();	/* no worker threads across fork() */
		if (pipe(pfd) == -1)
			bail("pipe");
		if ((pid = fork()) == -1)
			bail("fork");
		if (pid == 0) {
			struct crash_child cc = { pfd[1], 0, body };
			struct event_base *cb;
			char err[256];

			close(pfd[0]);
			if ((cb = event_base_new()) == NULL ||
			    queue_init(cb, spool, err, sizeof(err)) == -1)
				_exit(2);
			while (cc.inflight < BENCH_INFLIGHT)
				crash_next(&cc);
			event_base_dispatch(cb);
			_exit(0);
		}
		close(pfd[1]);
		/* Kill at a random moment once the child is committing (slow starts under TSan). */
		pl.fd = pfd[0];
		pl.events = POLLIN;
		poll(&pl, 1, 10000);
		usleep(mx_random_u32() % 100000);
		kill(pid, SIGKILL);
		waitpid(pid, &st, 0);

		mx_buf_init(&acked, 0);
		while ((r = read(pfd[0], buf, sizeof(buf))) > 0)
			mx_buf_add(&acked, buf, (size_t)r);
		close(pfd[0]);
		mx_buf_cstr(&acked);

		reinit();	/* as a restart would: temp files go */
		tmp_left += dir_count("tmp");
		mx_buf_init(&found, 0);
		queue_scan(crash_scan_cb, &found);
		mx_buf_cstr(&found);
		corrupt_total += dir_count("corrupt") - corrupt_before;
		for (line = (char *)acked.data; line != NULL && *line != '\0'; line = next) {
			next = strchr(line, '\n');
			*next++ = '\0';
			acked_total++;
			if (!has_line((char *)found.data, line))
				missing++;
			line[strlen(line)] = '\n';
		}
		/* Every message in queue/ is either acknowledged or from the last instant. */
		for (line = (char *)found.data; line != NULL && *line != '\0'; line = next) {
			next = strchr(line, '\n');
			*next++ = '\0';
			if (!has_line((char *)acked.data, line))
				unacked_total++;
			queue_remove(line);
		}
		mx_buf_free(&acked);
		mx_buf_free(&found);
	}
	ok(acked_total > 0, "crash test: %lu messages acknowledged over %d SIGKILL rounds",
	    acked_total, CRASH_ROUNDS);
	is_int(0, (long long)missing, "crash test: every acknowledged message survived intact");
	is_int(0, corrupt_total, "crash test: nothing in corrupt/");
	is_int(0, tmp_left, "crash test: tmp/ empty after restart");
	diag("crash test: %d rounds, %lu acknowledged, %lu lost, %lu in queue/ without an "
	    "acknowledgement (committed in the instant before the kill)", CRASH_ROUNDS,
	    acked_total, missing, unacked_total);
	free(body);
}

/* Throughput: BENCH_MSGS messages of BENCH_SIZE octets, BENCH_INFLIGHT in flight. */
struct bench {
	int started, done, failed;
	unsigned char *body;
	char (*ids)[QUEUE_ID_MAX + 1];
};

static void bench_start(struct bench *b);

static void
bench_cb(bool ok, const char *id, void *arg)
{
	struct bench *b = arg;

	b->done++;
	if (!ok)
		b->failed++;
	if (b->started < BENCH_MSGS)
		bench_start(b);
}

static void
bench_start(struct bench *b)
{
	struct queue_envelope env;
	struct queue_writer *w;

	make_env(&env, 1);
	snprintf(b->ids[b->started], sizeof(b->ids[0]), "%s", env.id);
	if ((w = queue_writer_open(&env)) == NULL)
		bail("bench open: %s", strerror(errno));
	queue_envelope_clear(&env);
	queue_writer_body(w, b->body, BENCH_SIZE);
	b->started++;
	queue_writer_commit(w, bench_cb, b);
}

static void
test_bench(void)
{
	struct bench b;
	struct queue_journal_rec rec;
	unsigned long long d0 = counter("queue.dir_fsyncs");
	double t0, t;
	int i, jn = 200;

	memset(&b, 0, sizeof(b));
	b.body = make_body(BENCH_SIZE, 3);
	if ((b.ids = calloc(BENCH_MSGS, sizeof(*b.ids))) == NULL)
		bail("calloc");
	t0 = now();
	for (i = 0; i < BENCH_INFLIGHT; i++)
		bench_start(&b);
	run_until(&b.done, BENCH_MSGS);
	t = now() - t0;
	is_int(0, b.failed, "benchmark: no commit failed");
	diag("commit rate: %d messages of %d octets, %d in flight: %.2f s, %.0f commits/s, "
	    "%llu directory fsyncs (%.1f messages each)", BENCH_MSGS, BENCH_SIZE, BENCH_INFLIGHT,
	    t, BENCH_MSGS / t, counter("queue.dir_fsyncs") - d0,
	    (double)BENCH_MSGS / (double)(counter("queue.dir_fsyncs") - d0 + 1));

	memset(&rec, 0, sizeof(rec));
	rec.type = QUEUE_JOURNAL_RCPT;
	rec.state = QUEUE_RCPT_DELIVERED;
	t0 = now();
	for (i = 0; i < jn; i++)
		if (queue_journal_append(b.ids[i], &rec) == -1)
			bail("journal append: %s", strerror(errno));
	t = now() - t0;
	diag("journal appends (synchronous, one fsync each): %d in %.2f s, %.0f/s", jn, t, jn / t);
	t0 = now();
	for (i = 0; i < BENCH_MSGS; i++)
		if (queue_remove(b.ids[i]) == -1)
			bail("remove: %s", strerror(errno));
	t = now() - t0;
	diag("removals (loop side, journals unlinked by the worker): %d in %.3f s", BENCH_MSGS, t);
	free(b.ids);
	free(b.body);
}

int
main(void)
{
	struct queue_envelope a;
	unsigned char *body;
	size_t len;
	char err[256];
	const char *tmp = getenv("TMPDIR");

	plan_lazy();
	log_init("queue_fs-t", true, LOG_LEVEL_ERROR);
	snprintf(spool, sizeof(spool), "%s/queue_fs-t.XXXXXX", tmp != NULL ? tmp : "/tmp");
	if (mkdtemp(spool) == NULL)
		bail("mkdtemp: %s", strerror(errno));
	if ((base = event_base_new()) == NULL)
		bail("event_base_new");
	unsetenv("MXEDGE_FAULT_FSYNC");
	unsetenv("MXEDGE_FAULT_WRITE");
	unsetenv("MXEDGE_FAULT_FREE");

	ok(queue_init(base, spool, err, sizeof(err)) == 0, "queue_init");
	ok(exists(sp("%s", "tmp")) && exists(sp("%s", "queue")) && exists(sp("%s", "corrupt")),
	    "tmp/, queue/ and corrupt/ created");
	ok(queue_init(base, spool, err, sizeof(err)) == -1, "second queue_init refused");
	queue_set_arrival_cb(arrival_cb, NULL);

	test_commit_and_read(&a, &body, &len);
	test_journal(&a);
	test_recovery(&a, body, len);
	test_tmp_and_abort();
	test_faults();
	test_many();
	test_remove(&a);
	test_shutdown_pending();
	test_crash();
	test_bench();
	is_int(0, dir_count("tmp"), "tmp/ empty at the end");

	queue_shutdown();
	queue_envelope_clear(&a);
	free(body);
	event_base_free(base);
	stats_free();
	nftw(spool, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	return 0;
}
