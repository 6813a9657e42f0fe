/*
 * The I/O layer: where sockets, libevent and TLS meet the protocol code.  An
 * io owns a connected non-blocking socket, a plaintext input buffer, a
 * plaintext output buffer, its deadlines, and after STARTTLS a TLS session
 * (tls.c).  Sessions get events through one callback, which runs only from
 * the event loop and never from inside an io_*() call, so a session may free
 * its io from any callback: the io is marked and destroyed when the callback
 * returns.  Bytes from the peer are untrusted and only buffered here, bounded
 * by the read limit; judging them is the session's job.  Starting TLS throws
 * away plaintext already buffered, so nothing sent before the handshake is
 * ever taken as protected (STARTTLS injection).  A failure is reported once,
 * as IO_EV_ERROR with a one-line reason; the TLS session is freed at that
 * moment and the io goes inert until the session frees it.  Nothing here
 * logs or exits.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "io.h"

#define IO_READ_CHUNK	(64 * 1024)	/* one plaintext read(2) */
#define IO_TLS_RECORD	16384		/* largest TLS plaintext record */
#define IO_BURST	(1024 * 1024)	/* bytes per wakeup, for fairness */
#define IO_IOV_MAX	16

enum io_state {
	IO_STATE_CONNECTING = 0,
	IO_STATE_PLAIN,
	IO_STATE_TLS_FLUSH,	/* STARTTLS asked; our plaintext reply goes first */
	IO_STATE_HANDSHAKE,
	IO_STATE_TLS,
	IO_STATE_DEAD,
};

struct io_timer {
	struct event *ev;
	struct timeval tv;
	const struct timeval *tvp;	/* NULL: disabled */
	bool fired;			/* not re-armed until new activity */
};

struct io {
	struct event_base *base;
	int fd;
	enum io_state state;
	struct io_callbacks cb;
	void *arg;

	struct evbuffer *in;
	struct evbuffer *out;
	struct event *ev_read;
	struct event *ev_write;
	struct event *ev_defer;		/* work for the next loop turn */
	bool read_on;
	bool write_on;
	struct io_timer rtimer;		/* read deadline */
	bool rwhole;			/* rtimer mostly ignores input: io_set_read_deadline() */
	size_t rper;			/* input octets that still restart it (0: none) */
	size_t rgot;			/* input octets since it was last restarted */
	struct io_timer wtimer;		/* stalled write deadline */
	struct io_timer ptimer;		/* connect or handshake deadline */
	int hs_timeout;

	size_t read_limit;
	size_t write_lowat;

	unsigned int busy;		/* inside one of our libevent callbacks */
	bool freed;
	bool paused;
	bool eof;
	bool drained_armed;
	bool redeliver;
	bool shut_req;
	bool shut_done;
	size_t plain_left;		/* TLS_FLUSH: plaintext still to send */
	int connect_errno;		/* result for the loop to report; -1 none */

	struct tls_conn *tls;
	char *sni;
	short hs_want;			/* EV_READ or EV_WRITE the handshake awaits */
	short tls_rwant;		/* a TLS read blocked on this direction */
	short tls_wwant;		/* a TLS write blocked on this direction */
	size_t tls_wlen;		/* length of a TLS write to repeat */
	const char *tls_version;	/* static strings from GnuTLS */
	const char *tls_cipher;

	char err[256];
};

static void io_on_io(evutil_socket_t, short, void *);
static void io_on_defer(evutil_socket_t, short, void *);
static void io_on_rtimer(evutil_socket_t, short, void *);
static void io_on_wtimer(evutil_socket_t, short, void *);
static void io_on_ptimer(evutil_socket_t, short, void *);
static void io_on_input_change(struct evbuffer *,
    const struct evbuffer_cb_info *, void *);
static bool io_fail(struct io *, enum io_event, const char *, ...)
    __attribute__((format(printf, 3, 4)));
static void io_set_error(struct io *, const char *, ...)
    __attribute__((format(printf, 2, 3)));
static bool io_handshake_step(struct io *);

/* Error text is for a log line: keep what fits, and show that it was cut. */
static void io_verror(struct io *io, const char *fmt, va_list ap) MX_PRINTF(2, 0);

static void
io_verror(struct io *io, const char *fmt, va_list ap)
{
	int n;

	n = vsnprintf(io->err, sizeof(io->err), fmt, ap);
	if (n < 0)
		io->err[0] = '\0';
	else if ((size_t)n >= sizeof(io->err))
		memcpy(io->err + sizeof(io->err) - 4, "...", 4);
}

static void
io_set_error(struct io *io, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	io_verror(io, fmt, ap);
	va_end(ap);
}

static void
io_event_set(struct event *ev, bool *on, bool want)
{
	if (want && !*on) {
		if (event_add(ev, NULL) == 0)
			*on = true;
	} else if (!want && *on) {
		(void)event_del(ev);
		*on = false;
	}
}

static void
io_timer_set(struct io *io, struct io_timer *t, int seconds)
{
	(void)event_del(t->ev);
	t->fired = false;
	if (seconds <= 0) {
		t->tvp = NULL;
		return;
	}
	t->tv.tv_sec = seconds;
	t->tv.tv_usec = 0;
	/* Thousands of sessions share a few durations: O(1) queues. */
	t->tvp = event_base_init_common_timeout(io->base, &t->tv);
	if (t->tvp == NULL)
		t->tvp = &t->tv;
}

static void
io_timer_arm(struct io_timer *t, bool want, bool restart)
{
	if (!want || t->tvp == NULL || t->fired) {
		(void)event_del(t->ev);
		return;
	}
	if (restart || !event_pending(t->ev, EV_TIMEOUT, NULL))
		(void)event_add(t->ev, t->tvp);
}

static bool
io_read_wanted(const struct io *io)
{
	if (io->state != IO_STATE_PLAIN && io->state != IO_STATE_TLS)
		return false;
	if (io->paused || io->eof || io->freed)
		return false;
	if (io->read_limit != 0 &&
	    evbuffer_get_length(io->in) >= io->read_limit)
		return false;
	return true;
}

static size_t
io_read_room(const struct io *io, size_t chunk)
{
	size_t have, room;

	if (io->read_limit == 0)
		return chunk;
	have = evbuffer_get_length(io->in);
	room = have < io->read_limit ? io->read_limit - have : 0;
	return room < chunk ? room : chunk;
}

static bool
io_output_waiting(const struct io *io)
{
	return evbuffer_get_length(io->out) > 0 || io->tls_wlen > 0 ||
	    (io->shut_req && !io->shut_done);
}

/* Make the libevent registrations and deadlines match the state. */
static void
io_reload(struct io *io)
{
	bool r = false, w = false, wtimed = false;

	if (io->freed)
		return;
	switch (io->state) {
	case IO_STATE_CONNECTING:
		w = io->connect_errno < 0;
		break;
	case IO_STATE_PLAIN:
		r = io_read_wanted(io);
		w = wtimed = io_output_waiting(io);
		break;
	case IO_STATE_TLS_FLUSH:
		w = wtimed = true;
		break;
	case IO_STATE_HANDSHAKE:
		r = io->hs_want == EV_READ;
		w = io->hs_want == EV_WRITE;
		break;
	case IO_STATE_TLS:
		if (io_read_wanted(io)) {
			if (io->tls_rwant == EV_WRITE)
				w = true;
			else
				r = true;
		}
		if (io_output_waiting(io)) {
			wtimed = true;
			if (io->tls_wwant == EV_READ)
				r = true;
			else
				w = true;
		}
		/* Records GnuTLS already holds raise no socket event. */
		if (io_read_wanted(io) && tls_conn_pending(io->tls) > 0)
			event_active(io->ev_defer, EV_TIMEOUT, 0);
		break;
	case IO_STATE_DEAD:
		break;
	}
	io_event_set(io->ev_read, &io->read_on, r);
	io_event_set(io->ev_write, &io->write_on, w);
	io_timer_arm(&io->rtimer, io_read_wanted(io), false);
	io_timer_arm(&io->wtimer, wtimed, false);
}

/* Progress restarts the deadlines that measure idleness. */
static void
io_activity(struct io *io, size_t nread, bool wrote)
{
	io->rgot += nread;
	if (wrote || !io->rwhole || (io->rper > 0 && io->rgot >= io->rper)) {
		io->rgot = 0;
		io->rtimer.fired = false;
		io_timer_arm(&io->rtimer, io_read_wanted(io), true);
	}
	if (wrote) {
		io->wtimer.fired = false;
		io_timer_arm(&io->wtimer, io_output_waiting(io), true);
	}
}

/* Stop every event source; nothing reaches the session after this. */
static void
io_quiesce(struct io *io)
{
	io_event_set(io->ev_read, &io->read_on, false);
	io_event_set(io->ev_write, &io->write_on, false);
	(void)event_del(io->ev_defer);
	(void)event_del(io->rtimer.ev);
	(void)event_del(io->wtimer.ev);
	(void)event_del(io->ptimer.ev);
}

/* Returns false when the session freed the io: the caller must stop. */
static bool
io_emit(struct io *io, enum io_event ev)
{
	if (io->freed)
		return false;
	io->cb.on_event(io, ev, io->arg);
	return !io->freed;
}

/* Always returns false: the io is dead, and perhaps freed. */
static bool
io_fail(struct io *io, enum io_event ev, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	io_verror(io, fmt, ap);
	va_end(ap);
	io->state = IO_STATE_DEAD;
	io_quiesce(io);
	/*
	 * The TLS session goes now, not at io_free(): no record, buffer or
	 * state of a broken session can be touched again (Exim's STARTTLS +
	 * CHUNKING use-after-free).  Unsent output can never be sent.
	 */
	tls_conn_free(&io->tls);
	io->tls_wlen = 0;
	(void)evbuffer_drain(io->out, evbuffer_get_length(io->out));
	(void)io_emit(io, ev);
	return false;
}

static void
io_release(struct io *io)
{
	io->freed = true;
	if (io->ev_read != NULL)
		event_free(io->ev_read);
	if (io->ev_write != NULL)
		event_free(io->ev_write);
	if (io->ev_defer != NULL)
		event_free(io->ev_defer);
	if (io->rtimer.ev != NULL)
		event_free(io->rtimer.ev);
	if (io->wtimer.ev != NULL)
		event_free(io->wtimer.ev);
	if (io->ptimer.ev != NULL)
		event_free(io->ptimer.ev);
	if (io->in != NULL)
		evbuffer_free(io->in);
	if (io->out != NULL)
		evbuffer_free(io->out);
	free(io->sni);
	free(io);
}

static void
io_destroy(struct io *io)
{
	io->freed = true;
	io_quiesce(io);
	/* One non-blocking close_notify: bounded, and enough almost always. */
	if (io->tls != NULL && io->state == IO_STATE_TLS && !io->shut_done)
		(void)tls_conn_bye(io->tls);
	tls_conn_free(&io->tls);
	(void)close(io->fd);
	io_release(io);
}

static void
io_enter(struct io *io)
{
	io->busy++;
}

static void
io_leave(struct io *io)
{
	if (--io->busy > 0)
		return;
	if (io->freed)
		io_destroy(io);
	else
		io_reload(io);
}

static struct io *
io_alloc(struct event_base *base, int fd, const struct io_callbacks *cb,
    void *arg)
{
	struct io *io;
	int fl;

	if (base == NULL || fd < 0 || cb == NULL || cb->on_event == NULL) {
		errno = EINVAL;
		return NULL;
	}
	if ((fl = fcntl(fd, F_GETFL)) == -1)
		return NULL;
	if ((fl & O_NONBLOCK) == 0 && fcntl(fd, F_SETFL, fl | O_NONBLOCK) == -1)
		return NULL;
	if ((io = calloc(1, sizeof(*io))) == NULL)
		return NULL;
	io->base = base;
	io->fd = fd;
	io->cb = *cb;
	io->arg = arg;
	io->connect_errno = -1;
	io->read_limit = IO_READ_LIMIT_DEFAULT;
	io->hs_timeout = IO_HANDSHAKE_TIMEOUT_DEFAULT;
	io->in = evbuffer_new();
	io->out = evbuffer_new();
	io->ev_read = event_new(base, fd, EV_READ | EV_PERSIST, io_on_io, io);
	io->ev_write = event_new(base, fd, EV_WRITE | EV_PERSIST, io_on_io, io);
	io->ev_defer = event_new(base, -1, 0, io_on_defer, io);
	io->rtimer.ev = evtimer_new(base, io_on_rtimer, io);
	io->wtimer.ev = evtimer_new(base, io_on_wtimer, io);
	io->ptimer.ev = evtimer_new(base, io_on_ptimer, io);
	if (io->in == NULL || io->out == NULL || io->ev_read == NULL ||
	    io->ev_write == NULL || io->ev_defer == NULL ||
	    io->rtimer.ev == NULL || io->wtimer.ev == NULL ||
	    io->ptimer.ev == NULL ||
	    evbuffer_add_cb(io->in, io_on_input_change, io) == NULL) {
		io_release(io);
		errno = ENOMEM;
		return NULL;
	}
	return io;
}

struct io *
io_new(struct event_base *base, int fd, const struct io_callbacks *cb,
    void *arg)
{
	struct io *io;

	if ((io = io_alloc(base, fd, cb, arg)) == NULL)
		return NULL;
	io->state = IO_STATE_PLAIN;
	io_reload(io);
	return io;
}

struct io *
io_connect(struct event_base *base, const struct sockaddr *sa,
    socklen_t salen, int timeout_sec, const struct io_callbacks *cb,
    void *arg)
{
	struct io *io;
	int fd, e;

	if (sa == NULL) {
		errno = EINVAL;
		return NULL;
	}
	fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0);
	if (fd == -1)
		return NULL;
	if ((io = io_alloc(base, fd, cb, arg)) == NULL) {
		e = errno;
		(void)close(fd);
		errno = e;
		return NULL;
	}
	io->state = IO_STATE_CONNECTING;
	if (connect(fd, sa, salen) == 0)
		io->connect_errno = 0;
	else if (errno != EINPROGRESS && errno != EINTR)
		io->connect_errno = errno;
	/* Even an immediate answer is reported from the loop, never from here. */
	if (io->connect_errno >= 0)
		event_active(io->ev_defer, EV_TIMEOUT, 0);
	else if (timeout_sec > 0) {
		io_timer_set(io, &io->ptimer, timeout_sec);
		(void)event_add(io->ptimer.ev, io->ptimer.tvp);
	}
	io_reload(io);
	return io;
}

void
io_free(struct io **iop)
{
	struct io *io;

	if (iop == NULL || (io = *iop) == NULL)
		return;
	*iop = NULL;
	if (io->busy > 0) {
		/* Called from our callback: destroyed when it returns. */
		io->freed = true;
		io_quiesce(io);
		return;
	}
	io_destroy(io);
}

void
io_set_callbacks(struct io *io, const struct io_callbacks *cb, void *arg)
{
	io->cb = *cb;
	io->arg = arg;
}

/* ---- Event handlers ----------------------------------------------------- */

static void
io_connect_done(struct io *io, int error)
{
	(void)event_del(io->ptimer.ev);
	if (error != 0) {
		(void)io_fail(io, IO_EV_ERROR, "connect: %s", strerror(error));
		return;
	}
	io->state = IO_STATE_PLAIN;
	io_activity(io, 0, false);
	(void)io_emit(io, IO_EV_CONNECTED);
}

static void
io_connect_finish(struct io *io)
{
	socklen_t len = sizeof(int);
	int error = 0;

	if (getsockopt(io->fd, SOL_SOCKET, SO_ERROR, &error, &len) == -1)
		error = errno;
	if (error == EINPROGRESS || error == EALREADY)
		return;
	io_connect_done(io, error);
}

/* Hand over exactly the r bytes the kernel or GnuTLS wrote into v[]. */
static void
io_commit(struct evbuffer *buf, struct evbuffer_iovec *v, size_t r)
{
	int n = 0;

	while (r > 0) {
		if (v[n].iov_len > r)
			v[n].iov_len = r;
		r -= v[n].iov_len;
		n++;
	}
	(void)evbuffer_commit_space(buf, v, n);
}

static void
io_read_plain(struct io *io)
{
	struct evbuffer_iovec v[2];
	struct iovec iov[2];
	size_t left;
	ssize_t r;
	int i, n;

	if (!io_read_wanted(io))
		return;
	left = io_read_room(io, IO_READ_CHUNK);
	/* Read straight into the buffer's own space: no copy. */
	n = evbuffer_reserve_space(io->in, (ev_ssize_t)left, v, 2);
	if (n <= 0) {
		(void)io_fail(io, IO_EV_ERROR, "read: out of memory");
		return;
	}
	for (i = 0; i < n; i++) {
		if (v[i].iov_len > left)
			v[i].iov_len = left;
		left -= v[i].iov_len;
		iov[i].iov_base = v[i].iov_base;
		iov[i].iov_len = v[i].iov_len;
	}
	do {
		r = readv(io->fd, iov, n);
	} while (r == -1 && errno == EINTR);
	if (r == -1) {
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			(void)io_fail(io, IO_EV_ERROR, "read: %s",
			    strerror(errno));
		return;
	}
	if (r == 0) {
		io->eof = true;
		(void)io_emit(io, IO_EV_CLOSED);
		return;
	}
	io_commit(io->in, v, (size_t)r);
	io_activity(io, (size_t)r, false);
	(void)io_emit(io, IO_EV_DATA);
}

static bool
io_shutdown_step(struct io *io)
{
	int r;

	if (io->tls != NULL) {
		r = tls_conn_bye(io->tls);
		if (r == TLS_WANT_READ || r == TLS_WANT_WRITE) {
			io->tls_wwant = r == TLS_WANT_READ ? EV_READ : EV_WRITE;
			return true;
		}
		/* A failed close_notify loses nothing: the FIN still ends us. */
	}
	if (shutdown(io->fd, SHUT_WR) == -1 && errno != ENOTCONN)
		return io_fail(io, IO_EV_ERROR, "shutdown: %s",
		    strerror(errno));
	io->shut_done = true;
	return true;
}

static bool io_handshake_begin(struct io *);

/* After a flush: deadlines, the STARTTLS switch, half-close, IO_EV_DRAINED. */
static bool
io_written(struct io *io, bool progress)
{
	if (progress)
		io_activity(io, 0, true);
	if (io->state == IO_STATE_TLS_FLUSH) {
		if (io->plain_left == 0)
			return io_handshake_begin(io);
		return true;
	}
	if (io->tls_wlen == 0 && evbuffer_get_length(io->out) == 0) {
		if (io->shut_req && !io->shut_done && !io_shutdown_step(io))
			return false;
	}
	if (progress && io->drained_armed &&
	    (io->state == IO_STATE_PLAIN || io->state == IO_STATE_TLS) &&
	    io_output_pending(io) <= io->write_lowat) {
		io->drained_armed = false;
		return io_emit(io, IO_EV_DRAINED);
	}
	return true;
}

static bool
io_flush_plain(struct io *io)
{
	struct evbuffer_iovec v[IO_IOV_MAX];
	struct iovec iov[IO_IOV_MAX];
	struct msghdr msg;
	size_t limit, total, sent = 0;
	ssize_t r;
	bool progress = false;
	int i, n;

	for (;;) {
		/*
		 * Before a handshake only the bytes queued before STARTTLS go
		 * out in plaintext; anything queued since waits for TLS.
		 */
		limit = evbuffer_get_length(io->out);
		if (io->state == IO_STATE_TLS_FLUSH && limit > io->plain_left)
			limit = io->plain_left;
		if (limit == 0 || sent >= IO_BURST)
			break;
		n = evbuffer_peek(io->out, (ev_ssize_t)limit, NULL, v,
		    IO_IOV_MAX);
		if (n > IO_IOV_MAX)
			n = IO_IOV_MAX;
		total = 0;
		for (i = 0; i < n && total < limit; i++) {
			iov[i].iov_base = v[i].iov_base;
			iov[i].iov_len = v[i].iov_len;
			if (iov[i].iov_len > limit - total)
				iov[i].iov_len = limit - total;
			total += iov[i].iov_len;
		}
		memset(&msg, 0, sizeof(msg));
		msg.msg_iov = iov;
		msg.msg_iovlen = (size_t)i;
		/* MSG_NOSIGNAL: a vanished peer is an error, not a signal. */
		r = sendmsg(io->fd, &msg, MSG_NOSIGNAL);
		if (r == -1) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			return io_fail(io, IO_EV_ERROR, "write: %s",
			    strerror(errno));
		}
		(void)evbuffer_drain(io->out, (size_t)r);
		if (io->state == IO_STATE_TLS_FLUSH)
			io->plain_left -= (size_t)r;
		sent += (size_t)r;
		progress = true;
		if ((size_t)r < total)
			break;
	}
	return io_written(io, progress);
}

static bool
io_flush_tls(struct io *io)
{
	size_t n, total, sent = 0;
	ssize_t r;
	bool progress = false;
	unsigned char *p;

	io->tls_wwant = 0;
	while ((total = evbuffer_get_length(io->out)) > 0 && sent < IO_BURST) {
		/*
		 * A write GnuTLS could not finish must be repeated with the
		 * same length; its bytes are still at the head of the buffer.
		 */
		n = io->tls_wlen;
		if (n == 0)
			n = total < IO_TLS_RECORD ? total : IO_TLS_RECORD;
		if ((p = evbuffer_pullup(io->out, (ev_ssize_t)n)) == NULL)
			return io_fail(io, IO_EV_ERROR, "write: out of memory");
		r = tls_conn_write(io->tls, p, n);
		if (r == TLS_WANT_READ || r == TLS_WANT_WRITE) {
			io->tls_wlen = n;
			io->tls_wwant = r == TLS_WANT_READ ? EV_READ : EV_WRITE;
			break;
		}
		if (r < 0)
			return io_fail(io, IO_EV_ERROR, "%s",
			    tls_conn_error(io->tls));
		(void)evbuffer_drain(io->out, (size_t)r);
		io->tls_wlen = 0;
		sent += (size_t)r;
		progress = true;
	}
	return io_written(io, progress);
}

static void
io_read_tls(struct io *io)
{
	struct evbuffer_iovec v;
	size_t got = 0, want;
	ssize_t r = 1;

	io->tls_rwant = 0;
	while (io_read_wanted(io) && got < IO_BURST) {
		want = io_read_room(io, IO_TLS_RECORD);
		if (evbuffer_reserve_space(io->in, (ev_ssize_t)want, &v, 1)
		    != 1) {
			(void)io_fail(io, IO_EV_ERROR, "read: out of memory");
			return;
		}
		if (v.iov_len > want)
			v.iov_len = want;
		/* Decrypt straight into the buffer's own space. */
		r = tls_conn_read(io->tls, v.iov_base, v.iov_len);
		if (r <= 0)
			break;
		io_commit(io->in, &v, (size_t)r);
		got += (size_t)r;
	}
	if (r == TLS_WANT_READ)
		io->tls_rwant = EV_READ;
	else if (r == TLS_WANT_WRITE)
		io->tls_rwant = EV_WRITE;
	if (got > 0) {
		io_activity(io, got, false);
		if (!io_emit(io, IO_EV_DATA))
			return;
	}
	if (r == 0) {
		io->eof = true;
		if (tls_conn_unclean_close(io->tls))
			io_set_error(io, "peer closed without TLS close_notify");
		(void)io_emit(io, IO_EV_CLOSED);
	} else if (r == TLS_ERROR)
		(void)io_fail(io, IO_EV_ERROR, "%s", tls_conn_error(io->tls));
}

static bool
io_handshake_begin(struct io *io)
{
	io->state = IO_STATE_HANDSHAKE;
	return io_handshake_step(io);
}

static bool
io_handshake_step(struct io *io)
{
	int r;

	r = tls_conn_handshake(io->tls);
	if (r == TLS_WANT_READ || r == TLS_WANT_WRITE) {
		io->hs_want = r == TLS_WANT_READ ? EV_READ : EV_WRITE;
		return true;
	}
	if (r != 0)
		return io_fail(io, IO_EV_ERROR, "%s", tls_conn_error(io->tls));
	io->state = IO_STATE_TLS;
	io->hs_want = 0;
	(void)event_del(io->ptimer.ev);
	io->tls_version = tls_conn_version_name(io->tls);
	io->tls_cipher = tls_conn_cipher_name(io->tls);
	io_activity(io, 0, true);
	/* The peer's first records may have come with its last flight. */
	event_active(io->ev_defer, EV_TIMEOUT, 0);
	return io_emit(io, IO_EV_TLS_READY);
}

static void
io_dispatch(struct io *io, short what)
{
	bool r, w;

	switch (io->state) {
	case IO_STATE_CONNECTING:
		if (what & EV_WRITE)
			io_connect_finish(io);
		break;
	case IO_STATE_PLAIN:
		if ((what & EV_WRITE) && !io_flush_plain(io))
			return;
		/* A DRAINED callback may have started TLS: read no plaintext. */
		if ((what & EV_READ) && io->state == IO_STATE_PLAIN)
			io_read_plain(io);
		break;
	case IO_STATE_TLS_FLUSH:
		if (what & EV_WRITE)
			(void)io_flush_plain(io);
		break;
	case IO_STATE_HANDSHAKE:
		(void)io_handshake_step(io);
		break;
	case IO_STATE_TLS:
		w = ((what & EV_WRITE) && io->tls_wwant != EV_READ) ||
		    ((what & EV_READ) && io->tls_wwant == EV_READ);
		r = ((what & EV_READ) && io->tls_rwant != EV_WRITE) ||
		    ((what & EV_WRITE) && io->tls_rwant == EV_WRITE);
		if (w && io_output_waiting(io) && !io_flush_tls(io))
			return;
		if (r && io->state == IO_STATE_TLS && io_read_wanted(io))
			io_read_tls(io);
		break;
	case IO_STATE_DEAD:
		break;
	}
}

static void
io_on_io(evutil_socket_t fd, short what, void *arg)
{
	struct io *io = arg;

	io_enter(io);
	io_dispatch(io, what);
	io_leave(io);
}

static void
io_on_defer(evutil_socket_t fd, short what, void *arg)
{
	struct io *io = arg;
	int e;

	io_enter(io);
	switch (io->state) {
	case IO_STATE_CONNECTING:
		if (io->connect_errno >= 0) {
			e = io->connect_errno;
			io->connect_errno = -1;
			io_connect_done(io, e);
		}
		break;
	case IO_STATE_TLS_FLUSH:
		(void)io_flush_plain(io);
		break;
	case IO_STATE_HANDSHAKE:
		(void)io_handshake_step(io);
		break;
	case IO_STATE_PLAIN:
	case IO_STATE_TLS:
		if (io->redeliver) {
			io->redeliver = false;
			if (!io->paused && evbuffer_get_length(io->in) > 0 &&
			    !io_emit(io, IO_EV_DATA))
				break;
		}
		if (io->state == IO_STATE_TLS && io_read_wanted(io))
			io_read_tls(io);
		break;
	case IO_STATE_DEAD:
		break;
	}
	io_leave(io);
}

static void
io_on_rtimer(evutil_socket_t fd, short what, void *arg)
{
	struct io *io = arg;

	io_enter(io);
	if (io_read_wanted(io)) {
		io->rtimer.fired = true;
		io_set_error(io, "read timeout");
		(void)io_emit(io, IO_EV_TIMEOUT);
	}
	io_leave(io);
}

static void
io_on_wtimer(evutil_socket_t fd, short what, void *arg)
{
	struct io *io = arg;

	io_enter(io);
	if (io->state != IO_STATE_DEAD && io->state != IO_STATE_CONNECTING &&
	    io_output_waiting(io)) {
		io->wtimer.fired = true;
		io_set_error(io, "write timeout");
		(void)io_emit(io, IO_EV_TIMEOUT);
	}
	io_leave(io);
}

static void
io_on_ptimer(evutil_socket_t fd, short what, void *arg)
{
	struct io *io = arg;

	io_enter(io);
	if (io->state == IO_STATE_CONNECTING)
		(void)io_fail(io, IO_EV_TIMEOUT, "connect timeout");
	else if (io->state == IO_STATE_TLS_FLUSH ||
	    io->state == IO_STATE_HANDSHAKE)
		(void)io_fail(io, IO_EV_TIMEOUT, "TLS handshake timeout");
	io_leave(io);
}

/* A session that drains input outside a callback restarts reading. */
static void
io_on_input_change(struct evbuffer *buf, const struct evbuffer_cb_info *info,
    void *arg)
{
	struct io *io = arg;

	if (info->n_deleted == 0 || io->busy > 0 || io->freed)
		return;
	io_reload(io);
}

/* ---- Input -------------------------------------------------------------- */

struct evbuffer *
io_input(struct io *io)
{
	return io->in;
}

int
io_line_peek(struct io *io, size_t max, struct mx_view *line)
{
	struct evbuffer_ptr end, lf;
	size_t have, scan;
	unsigned char *p;

	line->ptr = NULL;
	line->len = 0;
	have = evbuffer_get_length(io->in);
	scan = have < max ? have : max;
	if (scan == 0) {
		if (max > 0)
			return 0;
		errno = EMSGSIZE;
		return -1;
	}
	if (evbuffer_ptr_set(io->in, &end, scan, EVBUFFER_PTR_SET) == -1)
		return 0;
	lf = evbuffer_search_range(io->in, "\n", 1, NULL, &end);
	if (lf.pos < 0) {
		if (have >= max) {
			errno = EMSGSIZE;
			return -1;
		}
		return 0;
	}
	if ((p = evbuffer_pullup(io->in, lf.pos + 1)) == NULL) {
		errno = ENOMEM;
		return -1;
	}
	line->ptr = p;
	line->len = (size_t)lf.pos + 1;
	return 1;
}

void
io_drain(struct io *io, size_t len)
{
	(void)evbuffer_drain(io->in, len);
}

void
io_pause_read(struct io *io)
{
	io->paused = true;
	if (io->busy == 0)
		io_reload(io);
}

void
io_resume_read(struct io *io)
{
	if (io->paused) {
		io->paused = false;
		io->rtimer.fired = false;
		(void)event_del(io->rtimer.ev);	/* a fresh deadline */
		/* Pipelined input held during the pause is seen again. */
		if (evbuffer_get_length(io->in) > 0 &&
		    (io->state == IO_STATE_PLAIN || io->state == IO_STATE_TLS)) {
			io->redeliver = true;
			event_active(io->ev_defer, EV_TIMEOUT, 0);
		}
	}
	if (io->busy == 0)
		io_reload(io);
}

bool
io_read_paused(const struct io *io)
{
	return io->paused;
}

void
io_set_read_limit(struct io *io, size_t bytes)
{
	io->read_limit = bytes;
	if (io->busy == 0)
		io_reload(io);
}

/* ---- Output ------------------------------------------------------------- */

static int
io_write_check(const struct io *io)
{
	if (io->state == IO_STATE_DEAD || io->shut_req || io->freed) {
		errno = EPIPE;
		return -1;
	}
	return 0;
}

static void
io_queued(struct io *io)
{
	if (evbuffer_get_length(io->out) > io->write_lowat)
		io->drained_armed = true;
	if (io->busy == 0)
		io_reload(io);
}

int
io_write(struct io *io, const void *data, size_t len)
{
	if (io_write_check(io) == -1)
		return -1;
	if (len == 0)
		return 0;
	if (evbuffer_add(io->out, data, len) == -1) {
		errno = ENOMEM;
		return -1;
	}
	io_queued(io);
	return 0;
}

int
io_printf(struct io *io, const char *fmt, ...)
{
	va_list ap;
	int r;

	if (io_write_check(io) == -1)
		return -1;
	va_start(ap, fmt);
	r = evbuffer_add_vprintf(io->out, fmt, ap);
	va_end(ap);
	if (r < 0) {
		errno = ENOMEM;
		return -1;
	}
	io_queued(io);
	return 0;
}

int
io_write_buffer(struct io *io, struct evbuffer *src)
{
	if (io_write_check(io) == -1)
		return -1;
	if (evbuffer_add_buffer(io->out, src) == -1) {
		errno = ENOMEM;
		return -1;
	}
	io_queued(io);
	return 0;
}

size_t
io_output_pending(const struct io *io)
{
	return evbuffer_get_length(io->out);
}

void
io_set_write_lowat(struct io *io, size_t lowat)
{
	io->write_lowat = lowat;
}

int
io_shutdown_write(struct io *io)
{
	if (io->state == IO_STATE_DEAD || io->freed) {
		errno = EPIPE;
		return -1;
	}
	io->shut_req = true;
	if (io->busy == 0)
		io_reload(io);
	return 0;
}

/* ---- Deadlines and errors ----------------------------------------------- */

void
io_set_timeout(struct io *io, int seconds)
{
	io->rwhole = false;
	io_timer_set(io, &io->rtimer, seconds);
	if (io->busy == 0)
		io_reload(io);
}

void
io_set_read_deadline(struct io *io, int seconds, size_t per_bytes)
{
	io->rwhole = true;
	io->rper = per_bytes;
	io->rgot = 0;
	io_timer_set(io, &io->rtimer, seconds);
	if (io->busy == 0)
		io_reload(io);
}

void
io_set_write_timeout(struct io *io, int seconds)
{
	io_timer_set(io, &io->wtimer, seconds);
	if (io->busy == 0)
		io_reload(io);
}

void
io_set_handshake_timeout(struct io *io, int seconds)
{
	io->hs_timeout = seconds;
}

const char *
io_error_string(const struct io *io)
{
	return io->err;
}

/* ---- TLS ---------------------------------------------------------------- */

static int
io_start_tls(struct io *io, struct tls_creds *creds, bool server,
    const char *sni, size_t *discarded)
{
	size_t n;

	if (discarded != NULL)
		*discarded = 0;
	if (io->state != IO_STATE_PLAIN || io->tls_version != NULL ||
	    io->shut_req || io->eof || io->freed) {
		io_set_error(io, "cannot start TLS now");
		errno = EINVAL;
		return -1;
	}
	if (!server && sni != NULL && (io->sni = strdup(sni)) == NULL)
		return -1;
	io->tls = tls_conn_new(creds, io->fd, server, sni, io->err,
	    sizeof(io->err));
	if (io->tls == NULL) {
		free(io->sni);
		io->sni = NULL;
		return -1;
	}
	io->hs_want = io->tls_rwant = io->tls_wwant = 0;
	io->tls_wlen = 0;
	io->redeliver = false;
	io->plain_left = evbuffer_get_length(io->out);
	if (io->plain_left > 0)
		io->state = IO_STATE_TLS_FLUSH;
	else {
		io->state = IO_STATE_HANDSHAKE;
		event_active(io->ev_defer, EV_TIMEOUT, 0);
	}
	/*
	 * Whatever the peer sent after its STARTTLS (or a server after its
	 * 220) came in plaintext: it is never handed on, before or after
	 * the handshake.
	 */
	n = evbuffer_get_length(io->in);
	(void)evbuffer_drain(io->in, n);
	if (discarded != NULL)
		*discarded = n;
	io_timer_set(io, &io->ptimer, io->hs_timeout);
	if (io->ptimer.tvp != NULL)
		(void)event_add(io->ptimer.ev, io->ptimer.tvp);
	if (io->busy == 0)
		io_reload(io);
	return 0;
}

int
io_start_tls_server(struct io *io, struct tls_creds *creds, size_t *discarded)
{
	return io_start_tls(io, creds, true, NULL, discarded);
}

int
io_start_tls_client(struct io *io, struct tls_creds *creds, const char *sni,
    size_t *discarded)
{
	return io_start_tls(io, creds, false, sni, discarded);
}

bool
io_tls_established(const struct io *io)
{
	return io->state == IO_STATE_TLS && io->tls != NULL;
}

int
io_tls_info(const struct io *io, char *buf, size_t size)
{
	int n;

	if (io->tls_version == NULL || io->tls_cipher == NULL) {
		errno = ENOTCONN;
		return -1;
	}
	n = snprintf(buf, size, "version=%s cipher=%s", io->tls_version,
	    io->tls_cipher);
	if (n < 0 || (size_t)n >= size) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

const char *
io_tls_version_name(const struct io *io)
{
	return io->tls_version;
}

const char *
io_tls_cipher_name(const struct io *io)
{
	return io->tls_cipher;
}

enum tls_verify
io_tls_verify(struct io *io, const char *hostname, char *why, size_t whysize)
{
	static const char none[] = "no TLS session";

	if (!io_tls_established(io)) {
		/* a fixed message: cut to fit, which loses nothing important */
		if (why != NULL && whysize > 0) {
			if (whysize > sizeof(none))
				whysize = sizeof(none);
			memcpy(why, none, whysize - 1);
			why[whysize - 1] = '\0';
		}
		return TLS_VERIFY_ERROR;
	}
	return tls_conn_verify(io->tls, hostname != NULL ? hostname : io->sni,
	    why, whysize);
}

const unsigned char *
io_tls_peer_cert(struct io *io, size_t *len)
{
	*len = 0;
	if (!io_tls_established(io))
		return NULL;
	return tls_conn_peer_cert(io->tls, len);
}
