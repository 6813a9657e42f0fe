/*
 * Tests for the I/O layer (src/io.c, src/tls.c) with real sockets, real
 * GnuTLS on both ends, and real outside TLS clients (openssl s_client,
 * gnutls-cli) when installed.  A self-signed certificate is made with
 * certtool (or openssl) in a temporary directory.  Everything runs on
 * socketpairs and 127.0.0.1.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "basic.h"
#include "io.h"

static struct event_base *base;
static char tmpdir[64];
static char cert_path[128];
static char key_path[128];
static struct tls_creds *server_creds;
static struct tls_creds *client_creds;	/* trusts our self-signed cert */
static bool guard_fired;

/* ---- Harness ------------------------------------------------------------ */

struct peer {
	const char *name;
	struct io *io;
	void (*handler)(struct peer *, enum io_event);
	int ev[IO_EV_ERROR + 1];
	char err[256];
	bool done;

	/* line-oriented scenarios */
	struct evbuffer *pre;	/* lines seen before TLS */
	struct evbuffer *got;	/* lines or bytes seen after TLS / in total */
	struct tls_creds *creds;
	const char *sni;
	size_t discarded;
	bool in_handshake;
	int data_in_handshake;
	bool closing;
	char info[128];
	enum tls_verify verify_sni, verify_other;
	size_t cert_len;

	/* bulk transfer */
	bool bulk_tls;
	size_t to_send, expect, queued, received, mismatches, max_buffered;
	unsigned int pauses, outside_drains, data_events;
	struct event *resume_ev;
	bool sent_all;
	bool free_midway;
};

static void
peer_init(struct peer *p, const char *name,
    void (*handler)(struct peer *, enum io_event))
{
	memset(p, 0, sizeof(*p));
	p->name = name;
	p->handler = handler;
	p->pre = evbuffer_new();
	p->got = evbuffer_new();
	if (p->pre == NULL || p->got == NULL)
		bail("evbuffer_new");
}

static void
peer_clear(struct peer *p)
{
	io_free(&p->io);
	if (p->resume_ev != NULL)
		event_free(p->resume_ev);
	p->resume_ev = NULL;
	evbuffer_free(p->pre);
	evbuffer_free(p->got);
	tls_creds_unref(&p->creds);
}

static void
peer_on_event(struct io *io, enum io_event ev, void *arg)
{
	struct peer *p = arg;

	if (io != p->io)
		bail("%s: event for a foreign io", p->name);
	p->ev[ev]++;
	if (ev == IO_EV_ERROR || ev == IO_EV_TIMEOUT || ev == IO_EV_CLOSED)
		snprintf(p->err, sizeof(p->err), "%s", io_error_string(io));
	if (p->handler != NULL)
		p->handler(p, ev);
}

static const struct io_callbacks peer_cb = { peer_on_event };

/* Render a buffer as a C string for is_string (test data has no NULs). */
static const char *
buf_str(struct evbuffer *b)
{
	static char s[4096];
	size_t n = evbuffer_get_length(b);

	if (n >= sizeof(s))
		n = sizeof(s) - 1;
	evbuffer_copyout(b, s, n);
	s[n] = '\0';
	return s;
}

static void
guard_cb(evutil_socket_t fd, short what, void *arg)
{
	guard_fired = true;
	event_base_loopbreak(base);
}

/* Run the loop until *f1 (and *f2) are set, or give up after seconds. */
static bool
run_until2(const bool *f1, const bool *f2, int seconds)
{
	struct timeval tv = { seconds, 0 };
	struct event *g;

	guard_fired = false;
	if ((g = evtimer_new(base, guard_cb, NULL)) == NULL)
		bail("evtimer_new");
	evtimer_add(g, &tv);
	while (!(*f1 && (f2 == NULL || *f2)) && !guard_fired)
		event_base_loop(base, EVLOOP_ONCE);
	event_free(g);
	if (guard_fired)
		diag("gave up after %d s", seconds);
	return !guard_fired;
}

static bool
run_until(const bool *flag, int seconds)
{
	return run_until2(flag, NULL, seconds);
}

/* Run the loop for a while, whatever happens. */
static void
run_for_ms(int ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	event_base_loopexit(base, &tv);
	event_base_dispatch(base);
}

static double
now_sec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void
make_socketpair(int sv[2])
{
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1)
		bail("socketpair: %s", strerror(errno));
}

static int
make_listener(struct sockaddr_in *sin, int backlog)
{
	socklen_t len = sizeof(*sin);
	int fd;

	memset(sin, 0, sizeof(*sin));
	sin->sin_family = AF_INET;
	sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if ((fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1 ||
	    bind(fd, (struct sockaddr *)sin, sizeof(*sin)) == -1 ||
	    listen(fd, backlog) == -1 ||
	    getsockname(fd, (struct sockaddr *)sin, &len) == -1)
		bail("listener: %s", strerror(errno));
	return fd;
}

static int
accept_within(int lfd, int ms)
{
	struct pollfd pfd = { lfd, POLLIN, 0 };
	int fd;

	if (poll(&pfd, 1, ms) != 1)
		return -1;
	fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	return fd;
}

/* A loopback TCP connection: *a is the client end, *b the server end. */
static void
make_tcp_pair(int *a, int *b)
{
	struct sockaddr_in sin;
	int lfd;

	lfd = make_listener(&sin, 4);
	if ((*a = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1 ||
	    connect(*a, (struct sockaddr *)&sin, sizeof(sin)) == -1)
		bail("connect: %s", strerror(errno));
	if ((*b = accept_within(lfd, 2000)) == -1)
		bail("accept: %s", strerror(errno));
	close(lfd);
}

static struct io *
new_io(int fd, struct peer *p)
{
	struct io *io;

	if ((io = io_new(base, fd, &peer_cb, p)) == NULL)
		bail("io_new: %s", strerror(errno));
	p->io = io;
	return io;
}

static bool
line_is(const struct mx_view *l, const char *s)
{
	return l->len == strlen(s) && memcmp(l->ptr, s, l->len) == 0;
}

static bool
line_starts(const struct mx_view *l, const char *s)
{
	return l->len >= strlen(s) && memcmp(l->ptr, s, strlen(s)) == 0;
}

/* ---- Certificates ------------------------------------------------------- */

static void
make_certs(void)
{
	char cmd[1024], tmpl[128];
	FILE *f;
	int n;

	snprintf(tmpdir, sizeof(tmpdir), "/tmp/io-t.XXXXXX");
	if (mkdtemp(tmpdir) == NULL)
		bail("mkdtemp: %s", strerror(errno));
	snprintf(cert_path, sizeof(cert_path), "%s/cert.pem", tmpdir);
	snprintf(key_path, sizeof(key_path), "%s/key.pem", tmpdir);
	snprintf(tmpl, sizeof(tmpl), "%s/cert.tmpl", tmpdir);
	if ((f = fopen(tmpl, "w")) == NULL)
		bail("%s: %s", tmpl, strerror(errno));
	fprintf(f, "cn = \"mx.test\"\ndns_name = \"mx.test\"\n"
	    "expiration_days = 2\ntls_www_server\nsigning_key\n");
	fclose(f);
	n = snprintf(cmd, sizeof(cmd),
	    "certtool --generate-privkey --key-type ecdsa --outfile %s "
	    ">/dev/null 2>&1 && certtool --generate-self-signed "
	    "--load-privkey %s --template %s --outfile %s >/dev/null 2>&1",
	    key_path, key_path, tmpl, cert_path);
	if (n > 0 && (size_t)n < sizeof(cmd) && system(cmd) == 0)
		return;
	n = snprintf(cmd, sizeof(cmd),
	    "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
	    "-nodes -keyout %s -out %s -days 2 -subj /CN=mx.test "
	    "-addext subjectAltName=DNS:mx.test >/dev/null 2>&1",
	    key_path, cert_path);
	if (n > 0 && (size_t)n < sizeof(cmd) && system(cmd) == 0)
		return;
	bail("cannot make a test certificate (certtool or openssl needed)");
}

static void
remove_tmpdir(void)
{
	char cmd[128];

	if (tmpdir[0] == '\0')
		return;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		diag("could not remove %s", tmpdir);
}

/* ---- Plaintext echo ----------------------------------------------------- */

static void
echo_server(struct peer *p, enum io_event ev)
{
	if (ev == IO_EV_DATA) {
		if (io_write_buffer(p->io, io_input(p->io)) == -1)
			bail("io_write_buffer: %s", strerror(errno));
	} else if (ev == IO_EV_CLOSED || ev == IO_EV_ERROR) {
		io_free(&p->io);	/* from inside the callback */
		p->done = true;
	}
}

static void
collect(struct peer *p, enum io_event ev)
{
	if (ev == IO_EV_DATA) {
		evbuffer_add_buffer(p->got, io_input(p->io));
		if (evbuffer_get_length(p->got) >= p->to_send)
			p->done = true;
	} else if (ev == IO_EV_CLOSED || ev == IO_EV_ERROR)
		p->done = true;
}

static void
test_plain_echo(void)
{
	static const char msg[] = "hello\r\nworld\r\n";
	struct peer s, c;
	int sv[2];

	peer_init(&s, "echo-server", echo_server);
	peer_init(&c, "echo-client", collect);
	make_socketpair(sv);
	new_io(sv[0], &s);
	new_io(sv[1], &c);
	c.to_send = strlen(msg);
	ok(io_write(c.io, msg, 6) == 0 && io_printf(c.io, "%s", msg + 6) == 0,
	    "plain: client queues output");
	is_int(strlen(msg), io_output_pending(c.io), "plain: output pending");
	run_until(&c.done, 5);
	is_string(msg, buf_str(c.got), "plain: echo comes back intact");
	is_int(0, io_output_pending(c.io), "plain: nothing left pending");
	is_int(1, c.ev[IO_EV_DRAINED], "plain: one DRAINED after the flush");
	io_free(&c.io);
	ok(c.io == NULL, "plain: io_free NULLs the pointer");
	run_until(&s.done, 5);
	is_int(1, s.ev[IO_EV_CLOSED], "plain: server sees CLOSED at EOF");
	ok(s.io == NULL, "plain: server freed its io inside the callback");
	peer_clear(&s);
	peer_clear(&c);
}

/* ---- Line access -------------------------------------------------------- */

static void
test_line_peek(void)
{
	struct peer p;
	struct mx_view l;
	struct evbuffer *in;
	char big[700];
	int sv[2];

	peer_init(&p, "lines", NULL);
	make_socketpair(sv);
	new_io(sv[0], &p);
	in = io_input(p.io);

	is_int(0, io_line_peek(p.io, 512, &l), "line: empty input needs more");
	evbuffer_add(in, "abc", 3);
	is_int(0, io_line_peek(p.io, 512, &l), "line: no LF yet needs more");
	evbuffer_add(in, "\r\nde", 4);
	is_int(1, io_line_peek(p.io, 512, &l), "line: a line is found");
	ok(line_is(&l, "abc\r\n"), "line: view holds the line with CRLF");
	io_drain(p.io, l.len);
	is_int(0, io_line_peek(p.io, 512, &l), "line: rest needs more");
	/* separate chains: the view must still be contiguous */
	evbuffer_add_reference(in, "f", 1, NULL, NULL);
	evbuffer_add_reference(in, "\r", 1, NULL, NULL);
	evbuffer_add_reference(in, "\nx\n", 3, NULL, NULL);
	is_int(1, io_line_peek(p.io, 512, &l), "line: across chains");
	ok(line_is(&l, "def\r\n"), "line: joined across chains");
	io_drain(p.io, l.len);
	is_int(1, io_line_peek(p.io, 512, &l), "line: bare LF is a line here");
	ok(line_is(&l, "x\n"), "line: bare LF left for the parser to judge");
	io_drain(p.io, l.len);

	memset(big, 'a', sizeof(big));
	big[511] = '\n';
	evbuffer_add(in, big, 512);
	is_int(1, io_line_peek(p.io, 512, &l), "line: LF as byte 512 of 512");
	is_int(512, l.len, "line: full-length line");
	io_drain(p.io, l.len);
	big[511] = 'a';
	big[512] = '\n';
	evbuffer_add(in, big, 513);
	errno = 0;
	is_int(-1, io_line_peek(p.io, 512, &l), "line: LF as byte 513 is too long");
	is_int(EMSGSIZE, errno, "line: EMSGSIZE");
	io_drain(p.io, evbuffer_get_length(in));
	evbuffer_add(in, big, 300);
	is_int(0, io_line_peek(p.io, 512, &l), "line: 300 bytes, no LF: more");
	peer_clear(&p);
	close(sv[1]);
}

/* ---- STARTTLS between two io objects ------------------------------------ */

/* A tiny SMTP server: greeting, STARTTLS, then EHLO and QUIT under TLS. */
static void
smtp_server(struct peer *p, enum io_event ev)
{
	struct mx_view l;

	switch (ev) {
	case IO_EV_DATA:
		if (p->in_handshake)
			p->data_in_handshake++;
		while (p->io != NULL && io_line_peek(p->io, 512, &l) == 1) {
			if (!io_tls_established(p->io)) {
				evbuffer_add(p->pre, l.ptr, l.len);
				if (line_is(&l, "STARTTLS\r\n")) {
					io_drain(p->io, l.len);
					/*
					 * The reply is followed by plaintext
					 * that the client must never see
					 * as coming from inside TLS.
					 */
					io_write(p->io, "220 2.0.0 go\r\n"
					    "250 injected\r\n", 28);
					if (io_start_tls_server(p->io,
					    p->creds, &p->discarded) == -1)
						bail("start TLS: %s",
						    io_error_string(p->io));
					/* the io holds its own reference */
					tls_creds_unref(&p->creds);
					/* queued after STARTTLS: must go encrypted */
					io_printf(p->io, "250 early\r\n");
					p->in_handshake = true;
					continue;
				}
				io_printf(p->io, "500 no\r\n");
			} else {
				evbuffer_add(p->got, l.ptr, l.len);
				if (line_starts(&l, "EHLO "))
					io_printf(p->io, "250 mx.test\r\n");
				else if (line_is(&l, "QUIT\r\n")) {
					io_printf(p->io, "221 bye\r\n");
					p->closing = true;
				} else
					io_printf(p->io, "500 no\r\n");
			}
			io_drain(p->io, l.len);
		}
		break;
	case IO_EV_TLS_READY:
		p->in_handshake = false;
		if (io_tls_info(p->io, p->info, sizeof(p->info)) == -1)
			p->info[0] = '\0';
		p->verify_sni = io_tls_verify(p->io, NULL, NULL, 0);
		break;
	case IO_EV_DRAINED:
		if (p->closing) {
			io_free(&p->io);
			p->done = true;
		}
		break;
	default:
		io_free(&p->io);
		p->done = true;
		break;
	}
}

static void
smtp_client(struct peer *p, enum io_event ev)
{
	struct mx_view l;
	char why[256];
	const unsigned char *der;

	switch (ev) {
	case IO_EV_CONNECTED:
	case IO_EV_DRAINED:
		break;
	case IO_EV_DATA:
		if (p->in_handshake)
			p->data_in_handshake++;
		while (p->io != NULL && io_line_peek(p->io, 512, &l) == 1) {
			if (!io_tls_established(p->io)) {
				evbuffer_add(p->pre, l.ptr, l.len);
				if (line_starts(&l, "220 mx.test")) {
					/* pipelined injection attempt */
					io_write(p->io,
					    "STARTTLS\r\nRSET\r\n", 16);
				} else if (line_is(&l, "220 2.0.0 go\r\n")) {
					io_drain(p->io, l.len);
					if (io_start_tls_client(p->io, p->creds,
					    p->sni, &p->discarded) == -1)
						bail("start TLS: %s",
						    io_error_string(p->io));
					p->in_handshake = true;
					continue;
				}
			} else {
				evbuffer_add(p->got, l.ptr, l.len);
				if (line_is(&l, "250 mx.test\r\n"))
					io_printf(p->io, "QUIT\r\n");
			}
			io_drain(p->io, l.len);
		}
		break;
	case IO_EV_TLS_READY:
		p->in_handshake = false;
		if (io_tls_info(p->io, p->info, sizeof(p->info)) == -1)
			p->info[0] = '\0';
		p->verify_sni = io_tls_verify(p->io, NULL, why, sizeof(why));
		if (p->verify_sni != TLS_VERIFY_OK)
			diag("client verify: %s: %s",
			    tls_verify_name(p->verify_sni), why);
		p->verify_other = io_tls_verify(p->io, "other.test", why,
		    sizeof(why));
		der = io_tls_peer_cert(p->io, &p->cert_len);
		if (der == NULL)
			p->cert_len = 0;
		io_printf(p->io, "EHLO client.test\r\n");
		break;
	default:
		io_free(&p->io);
		p->done = true;
		break;
	}
}

struct starttls_result {
	size_t s_discarded, c_discarded;
	char s_after[256], c_after[256], c_before[256];
	char s_info[128], c_info[128];
	char s_version[32], c_version[32], s_cipher[64], c_cipher[64];
	int s_hs_data, c_hs_data, s_ready, c_ready, c_closed, c_errors;
	char c_err[256];
	enum tls_verify s_verify, c_verify, c_verify_other;
	size_t c_cert_len;
	bool finished;
};

static void
run_starttls(struct tls_creds *ccreds, const char *server_priority,
    struct starttls_result *r)
{
	struct peer s, c;
	struct sockaddr_in sin;
	char err[256];
	int lfd, fd;

	memset(r, 0, sizeof(*r));
	peer_init(&s, "smtp-server", smtp_server);
	peer_init(&c, "smtp-client", smtp_client);
	s.creds = tls_creds_load_server(cert_path, key_path, server_priority,
	    err, sizeof(err));
	if (s.creds == NULL)
		bail("server creds: %s", err);
	c.creds = tls_creds_ref(ccreds);
	c.sni = "mx.test";

	lfd = make_listener(&sin, 4);
	c.io = io_connect(base, (struct sockaddr *)&sin, sizeof(sin), 5,
	    &peer_cb, &c);
	if (c.io == NULL)
		bail("io_connect: %s", strerror(errno));
	if ((fd = accept_within(lfd, 2000)) == -1)
		bail("accept: %s", strerror(errno));
	close(lfd);
	new_io(fd, &s);
	io_printf(s.io, "220 mx.test ESMTP\r\n");

	r->finished = run_until(&c.done, 10);
	run_until(&s.done, 5);

	r->s_discarded = s.discarded;
	r->c_discarded = c.discarded;
	snprintf(r->s_after, sizeof(r->s_after), "%s", buf_str(s.got));
	snprintf(r->c_after, sizeof(r->c_after), "%s", buf_str(c.got));
	snprintf(r->c_before, sizeof(r->c_before), "%s", buf_str(c.pre));
	snprintf(r->s_info, sizeof(r->s_info), "%s", s.info);
	snprintf(r->c_info, sizeof(r->c_info), "%s", c.info);
	r->s_hs_data = s.data_in_handshake;
	r->c_hs_data = c.data_in_handshake;
	r->s_ready = s.ev[IO_EV_TLS_READY];
	r->c_ready = c.ev[IO_EV_TLS_READY];
	r->c_closed = c.ev[IO_EV_CLOSED];
	r->c_errors = c.ev[IO_EV_ERROR] + c.ev[IO_EV_TIMEOUT];
	snprintf(r->c_err, sizeof(r->c_err), "%s", c.err);
	r->s_verify = s.verify_sni;
	r->c_verify = c.verify_sni;
	r->c_verify_other = c.verify_other;
	r->c_cert_len = c.cert_len;
	peer_clear(&s);
	peer_clear(&c);
}

static bool
info_is(const char *info, const char *version)
{
	char want[64];

	snprintf(want, sizeof(want), "version=%s cipher=", version);
	return strncmp(info, want, strlen(want)) == 0 &&
	    strlen(info) > strlen(want);
}

static void
test_starttls(void)
{
	struct starttls_result r;

	run_starttls(client_creds, NULL, &r);
	ok(r.finished, "starttls: dialogue completed");
	is_int(6, r.s_discarded, "starttls: server discarded \"RSET\\r\\n\"");
	is_int(14, r.c_discarded,
	    "starttls: client discarded \"250 injected\\r\\n\"");
	is_string("EHLO client.test\r\nQUIT\r\n", r.s_after,
	    "starttls: server saw only protected commands (no RSET)");
	is_string("250 early\r\n250 mx.test\r\n221 bye\r\n", r.c_after,
	    "starttls: client saw only protected replies; output queued "
	    "after STARTTLS went encrypted");
	ok(strstr(r.c_before, "injected") == NULL,
	    "starttls: injected reply never parsed by the client");
	is_int(0, r.s_hs_data, "starttls: no server DATA during handshake");
	is_int(0, r.c_hs_data, "starttls: no client DATA during handshake");
	is_int(1, r.s_ready, "starttls: server TLS_READY once");
	is_int(1, r.c_ready, "starttls: client TLS_READY once");
	ok(info_is(r.s_info, "TLS1.3"), "starttls: server info \"%s\"",
	    r.s_info);
	is_string(r.s_info, r.c_info, "starttls: both ends agree on info");
	is_int(TLS_VERIFY_OK, r.c_verify,
	    "starttls: client verifies mx.test against its CA file");
	is_int(TLS_VERIFY_NAME_MISMATCH, r.c_verify_other,
	    "starttls: other.test is a name mismatch");
	is_int(TLS_VERIFY_NO_CERT, r.s_verify,
	    "starttls: server has no client certificate");
	ok(r.c_cert_len > 100, "starttls: peer certificate DER available");
	is_int(1, r.c_closed, "starttls: client sees CLOSED after 221");
	is_int(0, r.c_errors, "starttls: client saw no error");
	is_string("", r.c_err, "starttls: server sent close_notify on free");

	/* TLS 1.2 only, and a client trusting the system store only. */
	{
		struct tls_creds *sys;
		char err[256];

		sys = tls_creds_client("NORMAL:-VERS-ALL:+VERS-TLS1.2", NULL,
		    err, sizeof(err));
		if (sys == NULL)
			bail("client creds: %s", err);
		run_starttls(sys, NULL, &r);
		tls_creds_unref(&sys);
	}
	ok(r.finished, "starttls 1.2: dialogue completed");
	ok(info_is(r.c_info, "TLS1.2"), "starttls 1.2: info \"%s\"", r.c_info);
	is_string("EHLO client.test\r\nQUIT\r\n", r.s_after,
	    "starttls 1.2: server saw only protected commands");
	is_int(TLS_VERIFY_UNTRUSTED, r.c_verify,
	    "starttls 1.2: self-signed is untrusted by the system store");
}

/* ---- Real outside clients ------------------------------------------------ */

static void
real_server(struct peer *p, enum io_event ev)
{
	struct mx_view l;

	switch (ev) {
	case IO_EV_DATA:
		while (p->io != NULL && io_line_peek(p->io, 512, &l) == 1) {
			if (!io_tls_established(p->io)) {
				evbuffer_add(p->pre, l.ptr, l.len);
				if (line_starts(&l, "EHLO ") ||
				    line_starts(&l, "ehlo "))
					io_printf(p->io, "250-mx.test\r\n"
					    "250 STARTTLS\r\n");
				else if (line_is(&l, "STARTTLS\r\n") ||
				    line_is(&l, "starttls\r\n")) {
					io_drain(p->io, l.len);
					io_printf(p->io, "220 2.0.0 go\r\n");
					if (io_start_tls_server(p->io,
					    server_creds, &p->discarded) == -1)
						bail("start TLS: %s",
						    io_error_string(p->io));
					continue;
				} else
					io_printf(p->io, "500 no\r\n");
			} else {
				evbuffer_add(p->got, l.ptr, l.len);
				if (line_starts(&l, "hello-over-tls")) {
					io_free(&p->io);
					p->done = true;
					return;
				}
			}
			io_drain(p->io, l.len);
		}
		break;
	case IO_EV_TLS_READY:
		if (io_tls_info(p->io, p->info, sizeof(p->info)) == -1)
			p->info[0] = '\0';
		break;
	case IO_EV_DRAINED:
		break;
	default:
		io_free(&p->io);
		p->done = true;
		break;
	}
}

static pid_t
spawn(char *const argv[], int *stdin_w, const char *log)
{
	int pfd[2], lfd;
	pid_t pid;

	if (pipe2(pfd, O_CLOEXEC) == -1)
		bail("pipe: %s", strerror(errno));
	if ((pid = fork()) == -1)
		bail("fork: %s", strerror(errno));
	if (pid == 0) {
		lfd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		dup2(pfd[0], 0);
		if (lfd != -1) {
			dup2(lfd, 1);
			dup2(lfd, 2);
		}
		execvp(argv[0], argv);
		_exit(127);
	}
	close(pfd[0]);
	*stdin_w = pfd[1];
	return pid;
}

static void
reap(pid_t pid)
{
	int i, status;

	for (i = 0; i < 50; i++) {
		if (waitpid(pid, &status, WNOHANG) == pid)
			return;
		usleep(100000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
}

static bool
have_program(const char *name)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null 2>&1", name);
	return system(cmd) == 0;
}

static void
test_real_client(const char *label, const char *prog, bool openssl)
{
	static const char line[] = "hello-over-tls\n";
	struct peer s;
	struct sockaddr_in sin;
	char port[16], log[160];
	void (*old)(int);
	pid_t pid;
	int lfd, fd, w;
	char *argv_openssl[] = { "openssl", "s_client", "-starttls", "smtp",
	    "-connect", NULL, "-crlf", "-quiet", NULL };
	char *argv_gnutls[] = { "gnutls-cli", "--insecure",
	    "--starttls-proto=smtp", "--crlf", "-p", port, "127.0.0.1", NULL };
	char hostport[32];

	if (!have_program(prog)) {
		skip("%s: %s not installed", label, prog);
		skip("%s: %s not installed", label, prog);
		skip("%s: %s not installed", label, prog);
		return;
	}
	peer_init(&s, label, real_server);
	lfd = make_listener(&sin, 4);
	snprintf(port, sizeof(port), "%u", ntohs(sin.sin_port));
	snprintf(hostport, sizeof(hostport), "127.0.0.1:%s", port);
	argv_openssl[5] = hostport;
	snprintf(log, sizeof(log), "%s/%s.log", tmpdir, prog);
	pid = spawn(openssl ? argv_openssl : argv_gnutls, &w, log);
	old = signal(SIGPIPE, SIG_IGN);
	if (write(w, line, strlen(line)) != (ssize_t)strlen(line))
		diag("%s: could not feed the client", label);
	close(w);
	signal(SIGPIPE, old);
	if ((fd = accept_within(lfd, 5000)) == -1) {
		close(lfd);
		ok(0, "%s: client connected", label);
		skip("%s: no connection", label);
		skip("%s: no connection", label);
		reap(pid);
		peer_clear(&s);
		return;
	}
	close(lfd);
	new_io(fd, &s);
	io_printf(s.io, "220 mx.test ESMTP\r\n");
	run_until(&s.done, 10);
	ok(strstr(buf_str(s.got), "hello-over-tls\r\n") != NULL,
	    "%s: line arrived over TLS", label);
	ok(info_is(s.info, "TLS1.3"), "%s: negotiated \"%s\"", label, s.info);
	is_int(0, s.ev[IO_EV_ERROR], "%s: no error (%s)", label, s.err);
	reap(pid);
	peer_clear(&s);
}

/* ---- Timeouts ----------------------------------------------------------- */

static void
note_event(struct peer *p, enum io_event ev)
{
	if (ev == IO_EV_TIMEOUT || ev == IO_EV_ERROR || ev == IO_EV_CLOSED)
		p->done = true;
	if (ev == IO_EV_DRAINED && p->closing) {
		io_free(&p->io);
		p->done = true;
	}
}

static void
test_read_timeout(void)
{
	struct peer a, b;
	int sa[2], sb[2];
	double t0, t;
	char buf[64];
	ssize_t n;

	peer_init(&a, "idle", note_event);
	peer_init(&b, "paused", note_event);
	make_socketpair(sa);
	make_socketpair(sb);
	new_io(sa[0], &a);
	new_io(sb[0], &b);
	io_pause_read(b.io);
	io_set_timeout(a.io, 1);
	io_set_timeout(b.io, 1);
	ok(io_read_paused(b.io), "timeout: paused io reports paused");
	t0 = now_sec();
	run_until(&a.done, 5);
	t = now_sec() - t0;
	is_int(1, a.ev[IO_EV_TIMEOUT], "timeout: read deadline fired");
	ok(t > 0.9 && t < 3.0, "timeout: after about 1 s (%.2f)", t);
	is_string("read timeout", a.err, "timeout: reason given");
	run_for_ms(600);
	is_int(0, b.ev[IO_EV_TIMEOUT], "timeout: no deadline while paused");
	is_int(1, a.ev[IO_EV_TIMEOUT], "timeout: fires once without activity");

	/* Still usable after a read timeout: say goodbye, then close. */
	a.done = false;
	a.closing = true;
	ok(io_printf(a.io, "421 4.4.2 timeout\r\n") == 0,
	    "timeout: can still write after it");
	run_until(&a.done, 5);
	n = recv(sa[1], buf, sizeof(buf) - 1, 0);
	buf[n > 0 ? n : 0] = '\0';
	is_string("421 4.4.2 timeout\r\n", buf, "timeout: reply delivered");

	io_resume_read(b.io);
	run_until(&b.done, 5);
	is_int(1, b.ev[IO_EV_TIMEOUT], "timeout: deadline runs after resume");
	close(sa[1]);
	close(sb[1]);
	peer_clear(&a);
	peer_clear(&b);
}

/* Drain what arrives, like a session waiting for the end of a line. */
static void
drain_note(struct peer *p, enum io_event ev)
{
	if (ev == IO_EV_DATA)
		io_drain(p->io, evbuffer_get_length(io_input(p->io)));
	note_event(p, ev);
}

struct trickle {
	int fd[3];
	unsigned int sent;
};

static void
trickle_cb(evutil_socket_t fd, short what, void *arg)
{
	struct trickle *tr = arg;
	int i;

	for (i = 0; i < 3; i++)
		if (write(tr->fd[i], "x", 1) != 1)
			bail("trickle write: %s", strerror(errno));
	tr->sent++;
}

/*
 * One octet every 250 ms to three ios with a 1 s read deadline: the idle kind
 * never fires; the whole-command kind fires although input keeps coming; with
 * a minimum of 2 octets per deadline (8 arrive per second) it never fires.
 * Then our own output restarts the whole-command kind.
 */
static void
test_read_deadline(void)
{
	struct peer idle, whole, rate;
	struct trickle tr;
	struct event *tick;
	struct timeval tv = { 0, 250000 };
	int si[2], sw[2], sr[2];
	double t0, t;

	peer_init(&idle, "idle kind", drain_note);
	peer_init(&whole, "whole kind", drain_note);
	peer_init(&rate, "rate kind", drain_note);
	make_socketpair(si);
	make_socketpair(sw);
	make_socketpair(sr);
	new_io(si[0], &idle);
	new_io(sw[0], &whole);
	new_io(sr[0], &rate);
	io_set_timeout(idle.io, 1);
	io_set_read_deadline(whole.io, 1, 0);
	io_set_read_deadline(rate.io, 1, 2);
	tr.fd[0] = si[1];
	tr.fd[1] = sw[1];
	tr.fd[2] = sr[1];
	tr.sent = 0;
	if ((tick = event_new(base, -1, EV_PERSIST, trickle_cb, &tr)) == NULL)
		bail("event_new");
	evtimer_add(tick, &tv);
	t0 = now_sec();
	run_until(&whole.done, 5);
	t = now_sec() - t0;
	is_int(1, whole.ev[IO_EV_TIMEOUT], "deadline: fired while octets trickle in");
	ok(t > 0.9 && t < 3.0, "deadline: after about 1 s (%.2f)", t);
	is_string("read timeout", whole.err, "deadline: reason given");
	run_for_ms(2000);
	ok(tr.sent >= 8, "deadline: %u octets trickled to each", tr.sent);
	is_int(0, idle.ev[IO_EV_TIMEOUT], "deadline: the idle kind was kept alive");
	is_int(0, rate.ev[IO_EV_TIMEOUT], "deadline: so was the kind with a minimum rate");

	/* A reply of ours starts a new deadline for the next command. */
	whole.done = false;
	ok(io_printf(whole.io, "250 ok\r\n") == 0, "deadline: can write after it");
	run_until(&whole.done, 5);
	is_int(2, whole.ev[IO_EV_TIMEOUT], "deadline: restarted by our output, fired again");
	event_free(tick);
	close(si[1]);
	close(sw[1]);
	close(sr[1]);
	peer_clear(&idle);
	peer_clear(&whole);
	peer_clear(&rate);
}

static void
test_write_timeout(void)
{
	struct peer p;
	static char chunk[65536];
	int sv[2], i;
	double t0, t;

	peer_init(&p, "stalled", note_event);
	make_socketpair(sv);
	new_io(sv[0], &p);
	io_set_write_timeout(p.io, 1);
	memset(chunk, 'x', sizeof(chunk));
	for (i = 0; i < 64; i++)
		io_write(p.io, chunk, sizeof(chunk));
	t0 = now_sec();
	run_until(&p.done, 5);
	t = now_sec() - t0;
	is_int(1, p.ev[IO_EV_TIMEOUT], "write timeout: fired on a non-reader");
	is_string("write timeout", p.err, "write timeout: reason given");
	ok(t > 0.9 && t < 3.0, "write timeout: after about 1 s (%.2f)", t);
	ok(io_output_pending(p.io) > 0, "write timeout: output still pending");
	close(sv[1]);
	peer_clear(&p);
}

/* ---- Handshake failures ------------------------------------------------- */

static void
test_handshake_failures(void)
{
	static const unsigned char partial_hello[] = {
		0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03
	};
	struct peer p;
	int a, b;
	size_t disc;
	char buf[4096];

	/* Peer sends half a ClientHello and closes. */
	peer_init(&p, "hs-close", note_event);
	make_tcp_pair(&a, &b);
	new_io(b, &p);
	ok(io_start_tls_server(p.io, server_creds, &disc) == 0,
	    "hs: server starts TLS");
	is_int(0, disc, "hs: nothing to discard");
	send(a, partial_hello, sizeof(partial_hello), MSG_NOSIGNAL);
	close(a);
	run_until(&p.done, 5);
	is_int(1, p.ev[IO_EV_ERROR], "hs: peer closing mid-handshake is ERROR");
	diag("hs: error was: %s", p.err);
	is_int(0, p.ev[IO_EV_TLS_READY] + p.ev[IO_EV_DATA],
	    "hs: nothing else delivered");
	ok(io_tls_version_name(p.io) == NULL, "hs: no TLS version");
	errno = 0;
	ok(io_write(p.io, "x", 1) == -1 && errno == EPIPE,
	    "hs: a dead io refuses writes");
	ok(!io_tls_established(p.io), "hs: not established");
	peer_clear(&p);

	/* Plaintext where a ClientHello should be. */
	peer_init(&p, "hs-garbage", note_event);
	make_tcp_pair(&a, &b);
	new_io(b, &p);
	io_start_tls_server(p.io, server_creds, NULL);
	send(a, "RSET\r\nQUIT\r\n", 12, MSG_NOSIGNAL);
	run_until(&p.done, 5);
	is_int(1, p.ev[IO_EV_ERROR], "hs: plaintext instead of TLS is ERROR");
	diag("hs: error was: %s", p.err);
	close(a);
	peer_clear(&p);

	/* Peer that never speaks: handshake deadline. */
	peer_init(&p, "hs-silent", note_event);
	make_tcp_pair(&a, &b);
	new_io(b, &p);
	io_set_handshake_timeout(p.io, 1);
	io_set_timeout(p.io, 60);
	io_start_tls_server(p.io, server_creds, NULL);
	run_until(&p.done, 5);
	is_int(1, p.ev[IO_EV_TIMEOUT], "hs: handshake deadline fires");
	is_string("TLS handshake timeout", p.err, "hs: reason given");
	ok(io_write(p.io, "x", 1) == -1, "hs: dead after handshake timeout");
	close(a);
	peer_clear(&p);

	/* Client side: the server reads the ClientHello and hangs up. */
	peer_init(&p, "hs-client", note_event);
	make_tcp_pair(&a, &b);
	new_io(a, &p);
	ok(io_start_tls_client(p.io, client_creds, "mx.test", NULL) == 0,
	    "hs: client starts TLS");
	run_for_ms(100);
	ok(recv(b, buf, sizeof(buf), MSG_DONTWAIT) > 0 &&
	    (unsigned char)buf[0] == 0x16, "hs: client sent a ClientHello");
	close(b);
	run_until(&p.done, 5);
	is_int(1, p.ev[IO_EV_ERROR], "hs: client sees ERROR on hang-up");
	peer_clear(&p);
}

/* ---- Bulk transfer with backpressure ------------------------------------ */

static inline unsigned char
pattern(size_t i)
{
	return (unsigned char)(((uint32_t)i * 2654435761u) >> 13);
}

static void
bulk_fill(struct peer *p)
{
	static unsigned char chunk[65536];
	size_t n, i;

	while (p->io != NULL && p->queued < p->to_send &&
	    io_output_pending(p->io) <= 256 * 1024) {
		n = p->to_send - p->queued;
		if (n > sizeof(chunk))
			n = sizeof(chunk);
		for (i = 0; i < n; i++)
			chunk[i] = pattern(p->queued + i);
		if (io_write(p->io, chunk, n) == -1)
			bail("%s: io_write: %s", p->name, strerror(errno));
		p->queued += n;
	}
	if (p->queued == p->to_send)
		p->sent_all = true;
}

static void
bulk_consume(struct peer *p, size_t max)
{
	struct evbuffer *in = io_input(p->io);
	struct evbuffer_iovec v[8];
	size_t len, i, take, total = 0;
	int n, k;

	len = evbuffer_get_length(in);
	if (len > p->max_buffered)
		p->max_buffered = len;
	if (len > max)
		len = max;
	n = evbuffer_peek(in, (ev_ssize_t)len, NULL, v, 8);
	if (n > 8)
		n = 8;
	for (k = 0; k < n && total < len; k++) {
		take = v[k].iov_len;
		if (take > len - total)
			take = len - total;
		for (i = 0; i < take; i++)
			if (((unsigned char *)v[k].iov_base)[i] !=
			    pattern(p->received + i))
				p->mismatches++;
		p->received += take;
		total += take;
	}
	io_drain(p->io, total);
}

static void
bulk_check_done(struct peer *p)
{
	/* all of ours queued, all of theirs here: ours was flushed too */
	if (p->received >= p->expect && p->sent_all)
		p->done = true;
}

/* From the loop, not from a callback: resume, and drain outside callbacks. */
static void
bulk_resume(evutil_socket_t fd, short what, void *arg)
{
	struct peer *p = arg;

	if (p->io == NULL)
		return;
	if (evbuffer_get_length(io_input(p->io)) > 0) {
		p->outside_drains++;
		bulk_consume(p, 20000);
		if (evbuffer_get_length(io_input(p->io)) > 0) {
			struct timeval tv = { 0, 1000 };

			evtimer_add(p->resume_ev, &tv);
		}
	}
	io_resume_read(p->io);
	bulk_check_done(p);
}

static void
bulk_peer(struct peer *p, enum io_event ev)
{
	struct timeval tv = { 0, 2000 };

	switch (ev) {
	case IO_EV_TLS_READY:
	case IO_EV_CONNECTED:
		bulk_fill(p);
		break;
	case IO_EV_DRAINED:
		bulk_fill(p);
		bulk_check_done(p);
		break;
	case IO_EV_DATA:
		p->data_events++;
		if (p->free_midway && p->received > p->expect / 2) {
			/* vanish with TLS records still in flight */
			io_free(&p->io);
			p->done = true;
			return;
		}
		if (p->data_events % 7 == 0) {
			/* hold everything, pause, come back from a timer */
			p->pauses++;
			io_pause_read(p->io);
			evtimer_add(p->resume_ev, &tv);
		} else if (p->data_events % 5 == 0) {
			/* leave it at the read limit; drained from the loop */
			evtimer_add(p->resume_ev, &tv);
		} else
			bulk_consume(p, SIZE_MAX);
		bulk_check_done(p);
		break;
	default:
		io_free(&p->io);
		p->done = true;
		break;
	}
}

static void
bulk_setup(struct peer *p, const char *name, size_t to_send)
{
	peer_init(p, name, bulk_peer);
	p->to_send = to_send;
	p->resume_ev = evtimer_new(base, bulk_resume, p);
}

static void
bulk_io(struct peer *p, int fd)
{
	new_io(fd, p);
	io_set_read_limit(p->io, 64 * 1024);
	io_set_write_lowat(p->io, 128 * 1024);
	io_set_timeout(p->io, 10);
	io_set_write_timeout(p->io, 10);
}

static void
test_bulk(bool tls)
{
	const char *label = tls ? "bulk tls" : "bulk plain";
	struct peer a, b;
	int fa, fb, sv[2];
	double t0;

	/* both directions at once, different sizes */
	bulk_setup(&a, "bulk-a", 8 * 1024 * 1024);
	bulk_setup(&b, "bulk-b", 3 * 1024 * 1024 + 12345);
	a.expect = b.to_send;
	b.expect = a.to_send;
	if (tls)
		make_tcp_pair(&fa, &fb);
	else {
		make_socketpair(sv);
		fa = sv[0];
		fb = sv[1];
	}
	bulk_io(&a, fa);
	bulk_io(&b, fb);
	t0 = now_sec();
	if (tls) {
		io_start_tls_client(a.io, client_creds, "mx.test", NULL);
		io_start_tls_server(b.io, server_creds, NULL);
	} else {
		bulk_fill(&a);
		bulk_fill(&b);
	}
	run_until2(&a.done, &b.done, 60);
	if (a.err[0] || b.err[0])
		diag("%s: a: %s / b: %s (a recv %zu queued %zu, b recv %zu queued %zu)", label, a.err, b.err, a.received, a.queued, b.received, b.queued);
	diag("%s: %.2f s, pauses %u/%u, outside drains %u/%u", label,
	    now_sec() - t0, a.pauses, b.pauses, a.outside_drains,
	    b.outside_drains);
	is_int(b.to_send, a.received, "%s: a received everything", label);
	is_int(a.to_send, b.received, "%s: b received everything", label);
	is_int(0, a.mismatches + b.mismatches, "%s: byte for byte", label);
	ok(a.pauses > 0 && b.pauses > 0, "%s: reading was paused", label);
	ok(a.outside_drains > 0 && b.outside_drains > 0,
	    "%s: drained outside callbacks", label);
	ok(a.max_buffered <= 64 * 1024 && b.max_buffered <= 64 * 1024,
	    "%s: read limit held (%zu, %zu)", label, a.max_buffered,
	    b.max_buffered);
	is_int(0, a.ev[IO_EV_ERROR] + b.ev[IO_EV_ERROR] + a.ev[IO_EV_TIMEOUT] +
	    b.ev[IO_EV_TIMEOUT], "%s: no errors or timeouts", label);
	if (tls)
		ok(a.io != NULL && b.io != NULL && io_tls_established(a.io) &&
		    io_tls_established(b.io), "%s: TLS still up", label);
	peer_clear(&a);
	peer_clear(&b);
}

/* The receiver vanishes mid-stream: the sender gets an event, no crash. */
static void
test_bulk_vanish(void)
{
	struct peer a, b;
	int fa, fb;

	bulk_setup(&a, "vanish-sender", 4 * 1024 * 1024);
	bulk_setup(&b, "vanish-receiver", 4 * 1024 * 1024);
	b.free_midway = true;
	b.expect = a.to_send;
	a.expect = SIZE_MAX;	/* done only when told the peer is gone */
	make_tcp_pair(&fa, &fb);
	bulk_io(&a, fa);
	bulk_io(&b, fb);
	b.queued = b.to_send;	/* b sends nothing */
	b.sent_all = true;
	io_start_tls_client(a.io, client_creds, "mx.test", NULL);
	io_start_tls_server(b.io, server_creds, NULL);
	run_until2(&a.done, &b.done, 20);
	ok(b.io == NULL && b.received > 0, "vanish: receiver freed mid-stream");
	ok(a.ev[IO_EV_ERROR] + a.ev[IO_EV_CLOSED] == 1,
	    "vanish: sender told once (%s)", a.err);
	peer_clear(&a);
	peer_clear(&b);
}

/* ---- Pause, resume, pipelining ------------------------------------------ */

static void
pipeline_server(struct peer *p, enum io_event ev)
{
	struct mx_view l;
	struct timeval tv = { 0, 20000 };

	if (ev != IO_EV_DATA) {
		io_free(&p->io);
		p->done = true;
		return;
	}
	p->data_events++;
	/* one command per reply, like an SMTP session waiting on a lookup */
	if (io_line_peek(p->io, 512, &l) == 1) {
		evbuffer_add(p->got, l.ptr, l.len);
		io_drain(p->io, l.len);
		io_pause_read(p->io);
		evtimer_add(p->resume_ev, &tv);
	}
	if (evbuffer_get_length(p->got) == 9)
		p->done = true;
}

static void
pipeline_resume(evutil_socket_t fd, short what, void *arg)
{
	struct peer *p = arg;

	io_resume_read(p->io);
}

static void
test_pause_pipelining(void)
{
	struct peer p;
	int sv[2];

	peer_init(&p, "pipeline", pipeline_server);
	p.resume_ev = evtimer_new(base, pipeline_resume, &p);
	make_socketpair(sv);
	new_io(sv[0], &p);
	io_pause_read(p.io);
	send(sv[1], "A\r\nB\r\nC\r\n", 9, MSG_NOSIGNAL);
	run_for_ms(150);
	is_int(0, p.ev[IO_EV_DATA], "pause: nothing delivered while paused");
	io_resume_read(p.io);
	run_until(&p.done, 5);
	is_string("A\r\nB\r\nC\r\n", buf_str(p.got),
	    "pause: pipelined commands handled one at a time");
	ok(p.data_events >= 3, "pause: DATA redelivered on resume (%u)",
	    p.data_events);
	close(sv[1]);
	peer_clear(&p);
}

/* ---- Half-close --------------------------------------------------------- */

static void
half_server(struct peer *p, enum io_event ev)
{
	if (ev == IO_EV_DATA)
		evbuffer_add_buffer(p->got, io_input(p->io));
	else if (ev == IO_EV_CLOSED) {
		io_printf(p->io, "pong");
		io_shutdown_write(p->io);
	} else if (ev == IO_EV_TLS_READY)
		;
	else if (ev == IO_EV_DRAINED)
		p->done = true;
	else {
		io_free(&p->io);
		p->done = true;
	}
}

static void
half_client(struct peer *p, enum io_event ev)
{
	if (ev == IO_EV_TLS_READY) {
		io_printf(p->io, "ping");
		io_shutdown_write(p->io);
		errno = 0;
		if (io_write(p->io, "x", 1) != -1 || errno != EPIPE)
			p->mismatches++;
	} else if (ev == IO_EV_DATA)
		evbuffer_add_buffer(p->got, io_input(p->io));
	else if (ev == IO_EV_CLOSED)
		p->done = true;
	else if (ev != IO_EV_DRAINED) {
		io_free(&p->io);
		p->done = true;
	}
}

static void
test_half_close(bool tls)
{
	const char *label = tls ? "half-close tls" : "half-close plain";
	struct peer s, c;
	int a, b;

	peer_init(&s, "half-server", half_server);
	peer_init(&c, "half-client", half_client);
	make_tcp_pair(&a, &b);
	new_io(a, &c);
	new_io(b, &s);
	if (tls) {
		io_start_tls_client(c.io, client_creds, "mx.test", NULL);
		io_start_tls_server(s.io, server_creds, NULL);
	} else
		half_client(&c, IO_EV_TLS_READY);
	run_until(&c.done, 5);
	run_until(&s.done, 5);
	is_string("ping", buf_str(s.got), "%s: server got the data", label);
	is_int(1, s.ev[IO_EV_CLOSED], "%s: server saw our end", label);
	is_string("pong", buf_str(c.got), "%s: reply after half-close", label);
	is_int(1, c.ev[IO_EV_CLOSED], "%s: client saw server's end", label);
	is_int(0, c.mismatches, "%s: writes refused after shutdown", label);
	is_int(0, s.ev[IO_EV_ERROR] + c.ev[IO_EV_ERROR], "%s: no errors",
	    label);
	peer_clear(&s);
	peer_clear(&c);
}

/* ---- io_connect --------------------------------------------------------- */

static void
test_connect(void)
{
	struct peer p;
	struct sockaddr_in sin;
	int lfd, fd, i, fds[8], nfds = 0;
	char buf[16];
	ssize_t n;

	/* success, then data */
	peer_init(&p, "connect-ok", note_event);
	lfd = make_listener(&sin, 4);
	p.io = io_connect(base, (struct sockaddr *)&sin, sizeof(sin), 2,
	    &peer_cb, &p);
	ok(p.io != NULL, "connect: started");
	is_int(0, p.ev[IO_EV_CONNECTED], "connect: not reported synchronously");
	io_printf(p.io, "hi");	/* queued before the connection is up */
	p.closing = false;
	run_for_ms(200);
	is_int(1, p.ev[IO_EV_CONNECTED], "connect: CONNECTED");
	fd = accept_within(lfd, 1000);
	n = fd == -1 ? -1 : recv(fd, buf, sizeof(buf), 0);
	ok(n == 2 && memcmp(buf, "hi", 2) == 0,
	    "connect: output queued early is sent");
	if (fd != -1)
		close(fd);
	close(lfd);
	peer_clear(&p);

	/* refused */
	peer_init(&p, "connect-refused", note_event);
	lfd = make_listener(&sin, 1);
	close(lfd);
	p.io = io_connect(base, (struct sockaddr *)&sin, sizeof(sin), 2,
	    &peer_cb, &p);
	run_until(&p.done, 5);
	is_int(1, p.ev[IO_EV_ERROR], "connect: refused is ERROR");
	ok(strstr(p.err, "refused") != NULL, "connect: reason \"%s\"", p.err);
	peer_clear(&p);

	/* a full accept queue drops SYNs: the connect deadline fires */
	peer_init(&p, "connect-timeout", note_event);
	lfd = make_listener(&sin, 0);
	for (i = 0; i < 8; i++) {
		struct pollfd pfd;
		int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK |
		    SOCK_CLOEXEC, 0);

		fds[nfds++] = s;
		if (connect(s, (struct sockaddr *)&sin, sizeof(sin)) == 0)
			continue;
		pfd.fd = s;
		pfd.events = POLLOUT;
		if (poll(&pfd, 1, 200) == 0)
			break;	/* this one hangs: the queue is full */
	}
	if (i == 8) {
		skip("connect: could not fill the accept queue");
		skip("connect: could not fill the accept queue");
	} else {
		p.io = io_connect(base, (struct sockaddr *)&sin, sizeof(sin),
		    1, &peer_cb, &p);
		run_until(&p.done, 5);
		is_int(1, p.ev[IO_EV_TIMEOUT], "connect: deadline fires");
		is_string("connect timeout", p.err, "connect: reason given");
	}
	for (i = 0; i < nfds; i++)
		close(fds[i]);
	close(lfd);
	peer_clear(&p);
}

/* ---- Credentials and misuse --------------------------------------------- */

static void
test_creds(void)
{
	struct tls_creds *c, *r;
	struct peer p;
	char err[256], bad[160];
	int sv[2];

	c = tls_creds_load_server(cert_path, key_path, "NORMAL:+BOGUS", err,
	    sizeof(err));
	ok(c == NULL, "creds: bad priority refused");
	ok(strstr(err, "priority") != NULL && strstr(err, "BOGUS") != NULL,
	    "creds: reason names it: %s", err);
	snprintf(bad, sizeof(bad), "%s/missing.pem", tmpdir);
	c = tls_creds_load_server(bad, key_path, NULL, err, sizeof(err));
	ok(c == NULL && strstr(err, "missing.pem") != NULL,
	    "creds: missing certificate named: %s", err);
	c = tls_creds_load_server(key_path, cert_path, NULL, err, sizeof(err));
	ok(c == NULL, "creds: swapped cert and key refused: %s", err);
	c = tls_creds_client(NULL, bad, err, sizeof(err));
	ok(c == NULL && strstr(err, "missing.pem") != NULL,
	    "creds: missing CA file named");
	c = tls_creds_client(NULL, NULL, err, sizeof(err));
	ok(c != NULL, "creds: system trust client creds");
	r = tls_creds_ref(c);
	tls_creds_unref(&c);
	ok(c == NULL && r != NULL, "creds: unref NULLs, ref keeps it");
	tls_creds_unref(&r);
	is_string("error", tls_verify_name(TLS_VERIFY_ERROR),
	    "creds: verify names");

	peer_init(&p, "misuse", NULL);
	make_socketpair(sv);
	new_io(sv[0], &p);
	errno = 0;
	ok(io_start_tls_server(p.io, client_creds, NULL) == -1 &&
	    errno == EINVAL, "misuse: client creds on a server session");
	ok(io_tls_info(p.io, err, sizeof(err)) == -1 && errno == ENOTCONN,
	    "misuse: no TLS info before TLS");
	is_int(TLS_VERIFY_ERROR, io_tls_verify(p.io, NULL, err, sizeof(err)),
	    "misuse: no verification before TLS");
	ok(io_start_tls_server(p.io, server_creds, NULL) == 0,
	    "misuse: server TLS starts");
	errno = 0;
	ok(io_start_tls_server(p.io, server_creds, NULL) == -1 &&
	    errno == EINVAL, "misuse: TLS cannot start twice");
	close(sv[1]);
	peer_clear(&p);	/* free mid-handshake */
}

int
main(void)
{
	char err[256];

	plan_lazy();
	if ((base = event_base_new()) == NULL)
		bail("event_base_new");
	make_certs();
	server_creds = tls_creds_load_server(cert_path, key_path, NULL, err,
	    sizeof(err));
	if (server_creds == NULL)
		bail("server creds: %s", err);
	client_creds = tls_creds_client(NULL, cert_path, err, sizeof(err));
	if (client_creds == NULL)
		bail("client creds: %s", err);

	test_plain_echo();
	test_line_peek();
	test_starttls();
	test_real_client("openssl s_client", "openssl", true);
	test_real_client("gnutls-cli", "gnutls-cli", false);
	test_read_timeout();
	test_read_deadline();
	test_write_timeout();
	test_handshake_failures();
	test_bulk(false);
	test_bulk(true);
	test_bulk_vanish();
	test_pause_pipelining();
	test_half_close(false);
	test_half_close(true);
	test_connect();
	test_creds();

	tls_creds_unref(&server_creds);
	tls_creds_unref(&client_creds);
	event_base_free(base);
	remove_tmpdir();
	return 0;
}
