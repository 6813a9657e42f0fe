/*
 * The TLS front: accept on front_listen sockets, read the ClientHello
 * without terminating TLS, route its SNI name through the domain table,
 * connect to the domain's backend for the service, send the PROXY header
 * and the ClientHello in one write, then move bytes both ways until both
 * sides have closed: each read goes into one shared buffer and is sent on
 * at once, and only what the other side did not take is kept, per
 * connection.  With front_splice, a direction whose 16 KiB read comes back
 * full switches to splice(2) through a pipe instead, so bulk data is not
 * copied; on the machines measured (contrib/bench/front) copying cost less
 * CPU per MiB than the splices and pipe pages did, so it is the default.
 *
 * Trust: everything the client sends is hostile until the parser
 * (front_hello.c) accepted it, and even then only the SNI is used, after
 * domain_table_match() normalised it.  Backends are trusted only to be
 * slow: every phase has a deadline (hello, connect, idle).
 *
 * Cost: one edge-triggered registration per socket, in an epoll set of the
 * front's own (see front_watch), and one timer per connection; the timer is
 * re-armed once per idle period, not per packet.
 * The client's registration asks for writability only once a write to it
 * fell short, and the hello timer is armed only when the hello is not there
 * yet.  System calls are most of the cost of a short connection, so none is
 * spent to learn what is already known: a read shorter than asked means the
 * socket is drained (EPOLLRDHUP, EPOLLHUP or EPOLLERR say when an EOF or an
 * error is still to be read), close() ends a registration by itself,
 * a short write means its buffer is full, a failed connect shows up as the
 * first send's error, and TCP_NODELAY is inherited from the listener.
 * Pipes are pooled, so bulk connections do not pay for pipe2() and close(),
 * and a direction gives its pipe back as soon as the pipe is empty and the
 * source drained: nothing but the connection struct stays allocated while a
 * connection idles, unless a peer is not reading (its unsent bytes).
 *
 * Failure: a broken connection is closed and logged with its reason;
 * nothing here can stop the daemon.
 */
#include "config.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "daemon.h"
#include "dns.h"
#include "front.h"
#include "front_hello.h"
#include "client_limits.h"
#include "listen.h"
#include "log.h"
#include "proxy_proto.h"
#include "stats.h"

#define FRONT_READ_SMALL 16384		/* one read: hello phase, splice mode's trigger, tight memory */
#define FRONT_READ_BULK (256 << 10)	/* one read in copy mode: the shared buffer's size */
#define FRONT_SPILL_BUDGET (32 << 20)	/* unsent bytes held in all spills before reads shrink */
#define FRONT_SPLICE_MAX (1 << 20)	/* bytes asked of one splice() */
#define FRONT_MAX_TARGETS 16		/* backend addresses tried in turn */
#define FRONT_PIPE_POOL 64		/* spare pipes: each counts against the user's pipe pages */
#define FRONT_PIPE_SIZE (256 << 10)	/* capacity asked of a new pipe */
#define FRONT_STRUCT_POOL 64		/* spare structs of each kind kept for reuse */
#define FRONT_OUT_INLINE 2048		/* preamble bytes kept in the setup struct */
#define FRONT_EPOLL_BATCH 64		/* socket events taken per epoll_wait() */

enum front_state {
	FRONT_ST_HELLO = 0,	/* reading the ClientHello */
	FRONT_ST_RESOLVE,	/* waiting for the backend's addresses */
	FRONT_ST_CONNECT,	/* connecting to a backend address */
	FRONT_ST_RELAY,		/* moving bytes */
};

static const char *const state_names[] = { "hello", "resolve", "connect", "relay" };

/*
 * One direction of the relay: src -> scratch -> dst (copy mode), or, with
 * front_splice, src -> pipe -> dst once a small read came back full.
 */
struct front_dir {
	int pipe[2];		/* [0] read end, [1] write end; -1 in copy mode */
	size_t pending;		/* bytes not yet written to dst: in the pipe or in spill */
	unsigned char *spill;	/* copy mode: what dst did not take, pending bytes at spilloff */
	size_t spilloff;
	uint64_t bytes;
	bool eof;		/* src said EOF (and the pipe is drained: dst shut) */
	bool shut;		/* shutdown(dst, SHUT_WR) done */
};

/* What epoll said of one socket, kept until acted on. */
struct front_side {
	bool readable, writable;
	bool rdhup;	/* EOF or error signalled: read on until read() says so */
	bool fin;	/* EPOLLRDHUP seen: the peer's FIN is queued */
	bool err;	/* EPOLLERR seen: an error may come before that EOF */
};

struct front_conn {
	struct event ev_timer;
	int cfd;
	int bfd;
	enum front_state state;
	enum front_service service;
	struct front_side c;	/* the client's socket, cfd */
	struct front_side b;	/* the backend's socket, bfd */
	bool c_watch_write;	/* the client's registration has EPOLLOUT (it fell behind) */
	bool counted_client;
	uint32_t id;

	struct front_dir up;	/* client -> backend */
	struct front_dir down;	/* backend -> client */

	union {
		struct sockaddr sa;
		struct sockaddr_in sin;
		struct sockaddr_in6 sin6;
	} client;
	uint64_t started;	/* usec, monotonic */
	int64_t last_active;	/* seconds, monotonic, coarse */

	/* Only during hello/resolve/connect; freed when the relay starts. */
	struct front_hello *hello;
	struct front_setup *setup;

	/* Log fields, one allocation: "sni\0backend\0". */
	char *names;
	const char *backend_text;
};

/* What only the set-up phases need; freed when the relay starts. */
struct front_setup {
	struct dns_query *query;
	enum registry_proxy proxy;
	uint16_t port;
	size_t ntargets, next_target;
	unsigned char *out;	/* PROXY header + hello + early bytes: outbuf or malloc'd */
	size_t outlen, outoff;
	size_t client_bytes;	/* of out, the bytes that came from the client */
	const char *last_error;
	/* From here on not zeroed: a byte is written before it is read (see front_route). */
	struct sockaddr_storage targets[FRONT_MAX_TARGETS];
	unsigned char outbuf[FRONT_OUT_INLINE];	/* out, when the preamble fits */
};

/*
 * Spare structs: a connection's structs come from here and go back here, so
 * a short connection does not pay for malloc and free of each.  Only a few
 * of each kind are kept: after a burst, the rest go back to malloc.
 */
struct front_pool {
	void *spare[FRONT_STRUCT_POOL];
	int n;
};

struct front_listener {
	struct listener *l;
	enum front_service service;
};

static struct front_listener listeners[CONF_MAX_LISTEN];
static int nlisteners;
static struct client_limits *limits;
static size_t active;
static uint32_t next_id;
static int pipe_pool[FRONT_PIPE_POOL][2];
/* The event loop is single-threaded: one buffer serves every read that is written on at once. */
static unsigned char scratch[FRONT_READ_BULK];
/*
 * Bytes held in spills (what a slow peer did not take).  Over the budget,
 * copy-mode reads shrink to FRONT_READ_SMALL, so many peers that stop
 * reading cannot make us hold FRONT_READ_BULK each.
 */
static size_t spill_total;
static int npipes;
static struct front_pool conn_pool, hello_pool, setup_pool;
/* The connections' sockets, in an epoll set of their own: see front_watch(). */
static int epfd = -1;
static struct event *ev_epoll;
static struct front_conn **by_fd;	/* socket -> its connection, for epfd's events */
static size_t by_fd_len;
static struct timeval idle_tv[FRONT_NSERVICES];
static const struct timeval *idle_common[FRONT_NSERVICES];

static unsigned long long *c_accepted, *c_routed, *c_unknown_sni, *c_no_sni, *c_malformed,
    *c_hello_timeout, *c_backend_failed, *c_limit_total, *c_limit_client, *c_bytes_up,
    *c_bytes_down, *c_idle_timeout, *c_private_target, *c_no_backend;

static void front_client_io(struct front_conn *fc, uint32_t events);
static void front_backend_io(struct front_conn *fc, uint32_t events);
static void front_timer_cb(evutil_socket_t fd, short what, void *arg);
static void front_try_connect(struct front_conn *fc);

static int64_t
now_sec(void)
{
	return (int64_t)(mx_now_usec() / 1000000u);
}

static void
front_enter_state(struct front_conn *fc, enum front_state st)
{
	if (log_enabled(LOG_LEVEL_DEBUG))
		log_debug("event=front_state id=%08x from=%s to=%s", fc->id,
		    state_names[fc->state], state_names[st]);
	fc->state = st;
}

/* The two socket calls of the relay, in one place. */
static ssize_t
sock_recv(int fd, void *buf, size_t len)
{
	return recv(fd, buf, len, 0);
}

static ssize_t
sock_send(int fd, const void *buf, size_t len)
{
	return send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
}

/*
 * The sockets of connections are watched through an epoll set of our own,
 * itself one level-triggered event in libevent's loop, for two reasons.
 * libevent reports EPOLLERR and EPOLLHUP as plain "readable and writable":
 * a reset that arrived with the last data would look like data, so every
 * short read had to be followed by one more that said EAGAIN.  Here the
 * flags are seen as they are, and a short read without EPOLLRDHUP, EPOLLHUP
 * or EPOLLERR means the socket is drained: no read is spent to learn it.
 * And close() takes a socket out of the set: no epoll_ctl(EPOLL_CTL_DEL)
 * per socket.  Should another process hold a copy of a closed socket (a
 * fork before exec), its registration could still report: every event
 * carries the socket and the connection's id, and one that no longer
 * matches a live connection is dropped.
 */
static int
front_watch(struct front_conn *fc, int fd, bool backend, uint32_t events, int op)
{
	struct epoll_event ev;

	if ((size_t)fd >= by_fd_len) {
		size_t n = by_fd_len ? by_fd_len : 1024;
		struct front_conn **t;

		while (n <= (size_t)fd)
			n *= 2;
		if ((t = reallocarray(by_fd, n, sizeof(*t))) == NULL)
			return -1;
		memset(t + by_fd_len, 0, (n - by_fd_len) * sizeof(*t));
		by_fd = t;
		by_fd_len = n;
	}
	memset(&ev, 0, sizeof(ev));
	ev.events = events | EPOLLRDHUP | EPOLLET;
	ev.data.u64 = (uint64_t)fc->id << 32 | (uint64_t)(uint32_t)fd << 1 | (backend ? 1 : 0);
	if (epoll_ctl(epfd, op, fd, &ev) == -1)
		return -1;
	by_fd[fd] = fc;
	return 0;
}

/* Before close(): later events for fd, even in the batch being handled, are dropped. */
static void
front_unwatch(int fd)
{
	if (fd >= 0 && (size_t)fd < by_fd_len)
		by_fd[fd] = NULL;
}

static void
front_epoll_cb(evutil_socket_t fd, short what, void *arg)
{
	struct epoll_event evs[FRONT_EPOLL_BATCH];
	int i, n;

	/* More than a batch ready: epfd stays readable and the loop comes back. */
	if ((n = epoll_wait(epfd, evs, FRONT_EPOLL_BATCH, 0)) == -1) {
		if (errno != EINTR)
			log_warn("event=front_epoll_wait_failed");
		return;
	}
	for (i = 0; i < n; i++) {
		uint64_t u = evs[i].data.u64;
		int sfd = (int)((uint32_t)u >> 1);
		struct front_conn *fc;

		if ((size_t)sfd >= by_fd_len || (fc = by_fd[sfd]) == NULL ||
		    fc->id != (uint32_t)(u >> 32))
			continue;
		if (u & 1) {
			if (sfd == fc->bfd)
				front_backend_io(fc, evs[i].events);
		} else if (sfd == fc->cfd)
			front_client_io(fc, evs[i].events);
	}
}

static void *
pool_get(struct front_pool *p, size_t size)
{
	if (p->n > 0)
		return p->spare[--p->n];
	return malloc(size);
}

static void
pool_put(struct front_pool *p, void *v)
{
	if (v == NULL)
		return;
	if (p->n < FRONT_STRUCT_POOL)
		p->spare[p->n++] = v;
	else
		free(v);
}

static void
pool_drain(struct front_pool *p)
{
	while (p->n > 0)
		free(p->spare[--p->n]);
}

static int
pipe_get(int p[2])
{
	if (npipes > 0) {
		npipes--;
		p[0] = pipe_pool[npipes][0];
		p[1] = pipe_pool[npipes][1];
		return 0;
	}
	if (pipe2(p, O_NONBLOCK | O_CLOEXEC) == -1)
		return -1;
	/*
	 * The default 64 KiB pipe makes bulk data cost two splices and a TCP
	 * push per 64 KiB.  A larger one moves more per call; it holds pages
	 * only while bytes are in it.  Refused past the user's pipe page limit
	 * (fs.pipe-user-pages-soft): the default size still works.
	 */
	(void)fcntl(p[1], F_SETPIPE_SZ, FRONT_PIPE_SIZE);
	return 0;
}

/* Only an empty pipe goes back to the pool; anything else is closed. */
static void
pipe_put(int p[2], bool empty)
{
	if (p[0] == -1)
		return;
	if (empty && npipes < FRONT_PIPE_POOL) {
		pipe_pool[npipes][0] = p[0];
		pipe_pool[npipes][1] = p[1];
		npipes++;
	} else {
		close(p[0]);
		close(p[1]);
	}
	p[0] = p[1] = -1;
}

/* A spill is freed once sent, or with its connection. */
static void
spill_free(struct front_dir *d)
{
	if (d->spill == NULL)
		return;
	spill_total -= d->spilloff + d->pending;
	free(d->spill);
	d->spill = NULL;
	d->spilloff = 0;
}

static void
setup_free(struct front_conn *fc)
{
	if (fc->setup == NULL)
		return;
	dns_cancel(&fc->setup->query);
	if (fc->setup->out != fc->setup->outbuf)
		free(fc->setup->out);
	pool_put(&setup_pool, fc->setup);
	fc->setup = NULL;
}

static void
hello_free(struct front_conn *fc)
{
	if (fc->hello == NULL)
		return;
	front_hello_clear(fc->hello);
	pool_put(&hello_pool, fc->hello);
	fc->hello = NULL;
}

/*
 * The access line, by hand: it is written once per connection, and
 * printf's format interpretation cost more than all the routing.  The text
 * is exactly what the format "event=front_conn id=%08x client=%s ..." gave;
 * a field that does not fit is cut, as snprintf would have cut it.
 */
struct front_line {
	char buf[ADDR_STR_MAX + LOG_SAFE_MAX + 1024];
	size_t len;
};

static void
line_put(struct front_line *l, const char *s, size_t n)
{
	size_t room = sizeof(l->buf) - 1 - l->len;

	if (n > room)
		n = room;
	memcpy(l->buf + l->len, s, n);
	l->len += n;
}

static void
line_str(struct front_line *l, const char *s)
{
	line_put(l, s, strlen(s));
}

/* A string literal: its length is known at compile time. */
#define LINE_LIT(l, lit) line_put((l), (lit), sizeof(lit) - 1)

static void
line_u64(struct front_line *l, uint64_t v)
{
	char tmp[20];
	size_t i = sizeof(tmp);

	do {
		tmp[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0);
	line_put(l, tmp + i, sizeof(tmp) - i);
}

static void
line_hex32(struct front_line *l, uint32_t v)
{
	static const char hex[] = "0123456789abcdef";
	char tmp[8];
	int i;

	for (i = 7; i >= 0; i--, v >>= 4)
		tmp[i] = hex[v & 15];
	line_put(l, tmp, sizeof(tmp));
}

static void
front_log_conn(struct front_conn *fc, const char *outcome)
{
	struct front_line l;
	char client[ADDR_STR_MAX], sni[LOG_SAFE_MAX];
	const char *sni_raw = fc->names ? fc->names : "";
	uint64_t ms = (mx_now_usec() - fc->started) / 1000u;

	l.len = 0;
	LINE_LIT(&l, "event=front_conn id=");
	line_hex32(&l, fc->id);
	LINE_LIT(&l, " client=");
	line_str(&l, addr_format(&fc->client.sa, client, sizeof(client)));
	LINE_LIT(&l, " service=");
	line_str(&l, front_service_name(fc->service));
	LINE_LIT(&l, " sni=");
	log_safe(sni, sizeof(sni), sni_raw, strlen(sni_raw));
	line_str(&l, sni[0] ? sni : "-");
	LINE_LIT(&l, " backend=");
	line_str(&l, fc->backend_text ? fc->backend_text : "-");
	LINE_LIT(&l, " up=");
	line_u64(&l, fc->up.bytes);
	LINE_LIT(&l, " down=");
	line_u64(&l, fc->down.bytes);
	LINE_LIT(&l, " duration_ms=");
	line_u64(&l, ms);
	LINE_LIT(&l, " outcome=");
	line_str(&l, outcome);
	l.buf[l.len] = '\0';
	log_info("%s", l.buf);
}

static void
front_close(struct front_conn *fc, const char *outcome)
{
	/* Formatting the access line is most of a connection's user time: only when logged. */
	if (log_enabled(LOG_LEVEL_INFO))
		front_log_conn(fc, outcome);
	*c_bytes_up += fc->up.bytes;
	*c_bytes_down += fc->down.bytes;

	event_del(&fc->ev_timer);
	/* close() takes the sockets out of epfd. */
	front_unwatch(fc->cfd);
	close(fc->cfd);
	if (fc->bfd != -1) {
		front_unwatch(fc->bfd);
		close(fc->bfd);
	}
	pipe_put(fc->up.pipe, fc->up.pending == 0);
	pipe_put(fc->down.pipe, fc->down.pending == 0);
	spill_free(&fc->up);
	spill_free(&fc->down);
	setup_free(fc);
	hello_free(fc);
	if (fc->counted_client)
		client_limits_release(limits, &fc->client.sa);
	free(fc->names);
	pool_put(&conn_pool, fc);
	active--;
}

/* Best effort: a fatal alert before closing, so the client knows why. */
static void
front_alert_close(struct front_conn *fc, enum front_alert alert, const char *outcome)
{
	unsigned char rec[FRONT_ALERT_LEN];
	size_t n = front_alert_write(rec, alert);

	if (send(fc->cfd, rec, n, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
		log_debug("event=front_alert_failed id=%08x errno=%d", fc->id, errno);
	shutdown(fc->cfd, SHUT_WR);
	front_close(fc, outcome);
}

static void
timer_arm(struct front_conn *fc, long long seconds)
{
	struct timeval tv = { (time_t)seconds, 0 };

	event_add(&fc->ev_timer, &tv);
}

/*
 * Remember the names for logging and look the route up.  Returns 0 with
 * fc->setup filled, or -1 after closing the connection.
 */
static int
front_route(struct front_conn *fc)
{
	struct mx_view sni = front_hello_sni(fc->hello);
	const struct domain *d;
	const struct domain_route *route = NULL;
	struct front_setup *s;
	size_t tlen;

	if (!front_hello_has_sni(fc->hello)) {
		(*c_no_sni)++;
		front_alert_close(fc, FRONT_ALERT_MISSING_EXTENSION, "no_sni");
		return -1;
	}
	d = domain_table_match(mxd->domains, (const char *)sni.ptr, sni.len);
	if (d == NULL || (route = domain_table_route(d, fc->service)) == NULL) {
		if ((fc->names = malloc(sni.len + 1)) != NULL) {
			memcpy(fc->names, sni.ptr, sni.len);
			fc->names[sni.len] = '\0';
		}
		if (d == NULL) {
			(*c_unknown_sni)++;
			front_alert_close(fc, FRONT_ALERT_UNRECOGNIZED_NAME, "unknown_sni");
		} else {
			(*c_no_backend)++;
			front_alert_close(fc, FRONT_ALERT_UNRECOGNIZED_NAME, "no_backend_for_service");
		}
		return -1;
	}
	tlen = strlen(route->text);
	if ((fc->names = malloc(sni.len + 1 + tlen + 1)) == NULL ||
	    (s = pool_get(&setup_pool, sizeof(*s))) == NULL) {
		front_alert_close(fc, FRONT_ALERT_INTERNAL_ERROR, "out_of_memory");
		return -1;
	}
	memcpy(fc->names, sni.ptr, sni.len);
	fc->names[sni.len] = '\0';
	memcpy(fc->names + sni.len + 1, route->text, tlen + 1);
	fc->backend_text = fc->names + sni.len + 1;
	/* Zeroing the 2 KiB of address slots would cost more than routing itself. */
	memset(s, 0, offsetof(struct front_setup, targets));
	fc->setup = s;
	s->proxy = d->proxy;
	s->port = route->hp.port;
	if (route->salen != 0) {
		memcpy(&s->targets[0], &route->sa, route->salen);
		s->ntargets = 1;
	}
	(*c_routed)++;
	return route->salen == 0 ? 1 : 0;
}

/* The bytes to send first: PROXY header (if any), then the hello records as received. */
static int
front_build_preamble(struct front_conn *fc, const unsigned char *early, size_t earlylen)
{
	struct front_setup *s = fc->setup;
	struct mx_view raw = front_hello_raw(fc->hello);
	unsigned char hdr[PROXY_PROTO_V1_MAX + 512];
	ssize_t hlen = 0;

	if (s->proxy != REG_PROXY_OFF) {
		struct proxy_proto_tlvs tlvs;
		struct mx_view alpn, it, first;
		struct sockaddr_storage local;
		socklen_t locallen = sizeof(local);

		/* Only the PROXY header needs the local address: no syscall without it. */
		if (getsockname(fc->cfd, (struct sockaddr *)&local, &locallen) == -1)
			local.ss_family = AF_UNSPEC;
		memset(&tlvs, 0, sizeof(tlvs));
		tlvs.authority = front_hello_sni(fc->hello);
		if (front_hello_has_alpn(fc->hello)) {
			it = alpn = front_hello_alpn(fc->hello);
			if (front_hello_alpn_next(&it, &first))
				tlvs.alpn = first;
		}
		hlen = proxy_proto_write(s->proxy == REG_PROXY_V1 ? PROXY_PROTO_V1 : PROXY_PROTO_V2,
		    &fc->client.sa, (struct sockaddr *)&local, &tlvs, hdr,
		    sizeof(hdr));
		if (hlen < 0)
			return -1;
	}
	s->outlen = (size_t)hlen + raw.len + earlylen;
	s->client_bytes = raw.len + earlylen;
	if (s->outlen <= sizeof(s->outbuf))
		s->out = s->outbuf;
	else if ((s->out = malloc(s->outlen)) == NULL)
		return -1;
	memcpy(s->out, hdr, (size_t)hlen);
	memcpy(s->out + hlen, raw.ptr, raw.len);
	if (earlylen > 0)
		memcpy(s->out + hlen + raw.len, early, earlylen);
	s->outoff = 0;
	/* The hello bytes are copied: the parser and its buffers can go now. */
	hello_free(fc);
	return 0;
}

static void
front_resolved(const struct dns_result *res, void *arg)
{
	struct front_conn *fc = arg;
	struct front_setup *s = fc->setup;
	size_t i;

	s->query = NULL;
	if (res->status != DNS_OK || res->naddrs == 0) {
		s->last_error = res->why && *res->why ? res->why : "no addresses";
		(*c_backend_failed)++;
		front_alert_close(fc, FRONT_ALERT_INTERNAL_ERROR, "backend_unresolved");
		return;
	}
	for (i = 0; i < res->naddrs && s->ntargets < FRONT_MAX_TARGETS; i++) {
		struct sockaddr_storage *t = &s->targets[s->ntargets++];

		*t = res->addrs[i];
		if (t->ss_family == AF_INET6)
			((struct sockaddr_in6 *)t)->sin6_port = htons(s->port);
		else
			((struct sockaddr_in *)t)->sin_port = htons(s->port);
	}
	front_try_connect(fc);
}

/* Connect to the next usable backend address, or give up. */
static void
front_try_connect(struct front_conn *fc)
{
	struct front_setup *s = fc->setup;
	int one = 1;

	if (fc->bfd != -1) {
		front_unwatch(fc->bfd);
		close(fc->bfd);
		fc->bfd = -1;
	}
	while (s->next_target < s->ntargets) {
		struct sockaddr_storage *t = &s->targets[s->next_target++];
		socklen_t len = t->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) :
		    sizeof(struct sockaddr_in);
		char text[ADDR_STR_MAX];

		if (!mxd->conf->allow_private_targets && addr_is_private((struct sockaddr *)t)) {
			(*c_private_target)++;
			log_warnx("event=front_target_refused id=%08x target=%s "
			    "reason=private_address", fc->id,
			    addr_format((struct sockaddr *)t, text, sizeof(text)));
			s->last_error = "private address refused";
			continue;
		}
		fc->bfd = socket(t->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fc->bfd == -1) {
			s->last_error = "socket failed";
			continue;
		}
		setsockopt(fc->bfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (connect(fc->bfd, (struct sockaddr *)t, len) == -1 && errno != EINPROGRESS) {
			log_debug("event=front_connect_failed id=%08x target=%s errno=%d", fc->id,
			    addr_format((struct sockaddr *)t, text, sizeof(text)), errno);
			s->last_error = "connect failed";
			close(fc->bfd);
			fc->bfd = -1;
			continue;
		}
		if (front_watch(fc, fc->bfd, true, EPOLLIN | EPOLLOUT, EPOLL_CTL_ADD) == -1) {
			s->last_error = "epoll_ctl failed";
			close(fc->bfd);
			fc->bfd = -1;
			continue;
		}
		front_enter_state(fc, FRONT_ST_CONNECT);
		s->outoff = 0;
		memset(&fc->b, 0, sizeof(fc->b));
		timer_arm(fc, mxd->conf->front_connect_timeout);
		return;
	}
	(*c_backend_failed)++;
	log_warnx("event=front_backend_failed id=%08x backend=%s reason=\"%s\"", fc->id,
	    fc->backend_text, s->last_error ? s->last_error : "no usable address");
	front_alert_close(fc, FRONT_ALERT_INTERNAL_ERROR, "backend_unreachable");
}

/* How much one copy-mode read asks for. */
static size_t
front_read_size(void)
{
	if (mxd->conf->front_splice || spill_total >= FRONT_SPILL_BUDGET)
		return FRONT_READ_SMALL;
	return sizeof(scratch);
}

/* Write what is pending in d to dst: 0 when all of it went, 1 when dst is full, -1 on error. */
static int
front_flush(struct front_dir *d, int dst, bool *writable)
{
	while (d->pending > 0) {
		ssize_t n;
		size_t want = d->pending;

		if (!*writable)
			return 1;
		if (d->pipe[0] != -1)
			n = splice(d->pipe[0], NULL, dst, NULL, want,
			    SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
		else
			n = sock_send(dst, d->spill + d->spilloff, want);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				return -1;
			*writable = false;
			return 1;
		}
		d->pending -= (size_t)n;
		d->bytes += (uint64_t)n;
		if (d->spill != NULL)
			d->spilloff += (size_t)n;
		/* A short write means the socket buffer is full: no need to be told twice. */
		if ((size_t)n < want)
			*writable = false;
	}
	spill_free(d);
	return 0;
}

/*
 * Copy mode: one read of up to want bytes into the scratch buffer, written
 * on at once; what dst does not take is kept in d->spill.  Returns the bytes
 * read (0 at EOF), or -1 with errno.
 */
static ssize_t
front_copy(struct front_dir *d, int src, int dst, bool *writable, size_t want)
{
	ssize_t n, w = 0;

	n = sock_recv(src, scratch, want);
	if (n <= 0)
		return n;
	if (*writable) {
		while ((w = sock_send(dst, scratch, (size_t)n)) < 0 &&
		    errno == EINTR)
			;
		if (w < 0) {
			if (errno != EAGAIN)
				return -1;
			w = 0;
		}
		d->bytes += (uint64_t)w;
		if (w < n)
			*writable = false;
	}
	if (w < n) {
		if ((d->spill = malloc((size_t)(n - w))) == NULL)
			return -1;
		memcpy(d->spill, scratch + w, (size_t)(n - w));
		d->spilloff = 0;
		d->pending = (size_t)(n - w);
		spill_total += d->pending;
	}
	return n;
}

/* Move what can move in one direction; returns -1 on a fatal error. */
static int
front_pump(struct front_conn *fc, struct front_dir *d, int src, int dst,
    struct front_side *from, struct front_side *to)
{
	bool *readable = &from->readable, *writable = &to->writable;

	for (;;) {
		ssize_t n;
		int r;

		if ((r = front_flush(d, dst, writable)) != 0)
			return r == 1 ? 0 : -1;
		if (d->eof) {
			if (!d->shut) {
				shutdown(dst, SHUT_WR);
				d->shut = true;
			}
			return 0;
		}
		/* Reading while dst cannot take anything only moves the backlog into our memory. */
		if (!*readable || (!*writable && d->pipe[0] == -1))
			return 0;
		if (d->pipe[0] == -1) {
			size_t want = front_read_size();

			n = front_copy(d, src, dst, writable, want);
			if (n > 0) {
				fc->last_active = now_sec();
				/*
				 * A short read drained the socket.  If the peer's FIN
				 * had been signalled, every byte before it was queued
				 * then, so the EOF is all that is left: no read is
				 * spent on it.  After an error, read on until it shows.
				 */
				if ((size_t)n < want) {
					if (!from->rdhup)
						*readable = false;
					else if (from->fin && !from->err)
						d->eof = true;
				} else if (mxd->conf->front_splice && d->pending == 0) {
					/* Bulk: the kernel moves it from now on. */
					if (pipe_get(d->pipe) == -1)
						return -1;
					log_debug("event=front_splice id=%08x dir=%s", fc->id,
					    d == &fc->up ? "up" : "down");
				}
				continue;
			}
		} else {
			n = splice(src, NULL, d->pipe[1], NULL, FRONT_SPLICE_MAX,
			    SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
			if (n > 0) {
				/* A short splice may only mean a full pipe: read on to EAGAIN. */
				d->pending = (size_t)n;
				fc->last_active = now_sec();
				continue;
			}
		}
		if (n == 0) {
			d->eof = true;
			continue;
		}
		if (errno == EAGAIN) {
			*readable = false;
			/*
			 * Drained and delivered: the pipe goes back to the pool, so
			 * an idle connection holds none.  The next burst starts in
			 * copy mode and takes a pipe again when it fills a read.
			 */
			if (d->pipe[0] != -1 && d->pending == 0)
				pipe_put(d->pipe, true);
			return 0;
		}
		if (errno != EINTR)
			return -1;
	}
}

/*
 * A fresh client socket is writable, and most connections never fill its
 * buffer: EPOLLOUT is asked for only when a write fell short, which spares
 * every short connection the wakeup for the first, useless, writable edge.
 * EPOLL_CTL_MOD makes the kernel poll the socket, so an edge that came in
 * between is not lost.
 */
static int
front_client_watch_write(struct front_conn *fc)
{
	if (front_watch(fc, fc->cfd, false, EPOLLIN | EPOLLOUT, EPOLL_CTL_MOD) == -1)
		return -1;
	fc->c_watch_write = true;
	return 0;
}

static void
front_relay(struct front_conn *fc)
{
	if (front_pump(fc, &fc->up, fc->cfd, fc->bfd, &fc->c, &fc->b) == -1 ||
	    front_pump(fc, &fc->down, fc->bfd, fc->cfd, &fc->b, &fc->c) == -1) {
		front_close(fc, errno == ECONNRESET || errno == EPIPE ? "reset" : "io_error");
		return;
	}
	if (fc->up.shut && fc->down.shut) {
		front_close(fc, "closed");
		return;
	}
	if (!fc->c.writable && !fc->c_watch_write && front_client_watch_write(fc) == -1)
		front_close(fc, "io_error");
}

static void
front_start_relay(struct front_conn *fc)
{
	setup_free(fc);
	front_enter_state(fc, FRONT_ST_RELAY);
	fc->last_active = now_sec();
	/* Re-adding moves the pending connect timer: no event_del first. */
	event_add(&fc->ev_timer, idle_common[fc->service]);
	front_relay(fc);
}

/* Send the preamble; on completion, start relaying. */
static void
front_send_preamble(struct front_conn *fc)
{
	struct front_setup *s = fc->setup;

	while (s->outoff < s->outlen) {
		ssize_t n = sock_send(fc->bfd, s->out + s->outoff, s->outlen - s->outoff);

		if (n < 0) {
			if (errno == EAGAIN) {
				fc->b.writable = false;
				return;
			}
			if (errno == EINTR)
				continue;
			/* A failed connect shows up here: no getsockopt(SO_ERROR) needed. */
			log_debug("event=front_connect_failed id=%08x errno=%d", fc->id, errno);
			s->last_error = s->outoff == 0 ? "connection refused or unreachable" :
			    "write failed";
			front_try_connect(fc);
			return;
		}
		s->outoff += (size_t)n;
		if (s->outoff < s->outlen) {
			fc->b.writable = false;
			return;
		}
	}
	fc->up.bytes += s->client_bytes;
	front_start_relay(fc);
}

/*
 * An error or a hang-up makes both ways worth trying once more, and reads go
 * on until read() itself reports the EOF or the error.
 */
#define FRONT_EV_END (EPOLLRDHUP | EPOLLHUP | EPOLLERR)

static void
front_side_note(struct front_side *s, uint32_t events)
{
	if (events & (EPOLLIN | FRONT_EV_END))
		s->readable = true;
	if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
		s->writable = true;
	if (events & FRONT_EV_END)
		s->rdhup = true;
	if (events & EPOLLRDHUP)
		s->fin = true;
	if (events & EPOLLERR)
		s->err = true;
}

static void
front_backend_io(struct front_conn *fc, uint32_t events)
{
	front_side_note(&fc->b, events);
	if (fc->state == FRONT_ST_CONNECT) {
		if (fc->b.writable)
			front_send_preamble(fc);
		return;
	}
	if (fc->state == FRONT_ST_RELAY)
		front_relay(fc);
}

/*
 * Returns true when fc is still waiting for (more of) its hello; false when
 * fc moved on to routing, which armed its own timer, or was closed.
 */
static bool
front_hello_read(struct front_conn *fc)
{
	/* The parser may keep views into what it was fed until the preamble copied them. */
	unsigned char *buf = scratch;

	for (;;) {
		enum front_hello_result r;
		size_t used = 0;
		ssize_t n = sock_recv(fc->cfd, buf, FRONT_READ_SMALL);
		int routed;

		if (n < 0) {
			if (errno == EAGAIN) {
				fc->c.readable = false;
				return true;
			}
			if (errno == EINTR)
				continue;
			front_close(fc, "client_error");
			return false;
		}
		if (n == 0) {
			front_close(fc, "client_closed_in_hello");
			return false;
		}
		r = front_hello_feed(fc->hello, buf, (size_t)n, &used);
		if (r == FRONT_HELLO_MORE) {
			/* A short read drained the socket: wait for the next edge. */
			if ((size_t)n < FRONT_READ_SMALL && !fc->c.rdhup) {
				fc->c.readable = false;
				return true;
			}
			continue;
		}
		if (r == FRONT_HELLO_REJECT) {
			enum front_alert alert;
			enum front_hello_reason why = front_hello_reason(fc->hello);
			char client[ADDR_STR_MAX];

			(*c_malformed)++;
			log_info("event=front_hello_rejected id=%08x client=%s reason=\"%s\"",
			    fc->id, addr_format(&fc->client.sa, client,
			    sizeof(client)), front_hello_reason_str(why));
			if (front_hello_alert(fc->hello, &alert))
				front_alert_close(fc, alert, "bad_hello");
			else
				front_close(fc, "not_tls");
			return false;
		}
		/*
		 * Done: route, keep the hello bytes, and go find the backend.  The
		 * connect timer replaces the hello timer by re-adding it.
		 */
		if ((routed = front_route(fc)) == -1)
			return false;
		if (front_build_preamble(fc, buf + used, (size_t)n - used) == -1) {
			front_alert_close(fc, FRONT_ALERT_INTERNAL_ERROR, "out_of_memory");
			return false;
		}
		/*
		 * Further client bytes wait in the socket until the relay starts;
		 * after a short read there are none yet, and new ones are a new edge.
		 */
		fc->c.readable = (size_t)n == FRONT_READ_SMALL || fc->c.rdhup;
		if (routed == 1) {
			front_enter_state(fc, FRONT_ST_RESOLVE);
			timer_arm(fc, mxd->conf->front_connect_timeout);
			fc->setup->query = dns_lookup_addrs(mxd->dns, fc->backend_text, true,
			    true, (int)mxd->conf->front_connect_timeout, front_resolved, fc);
			if (fc->setup->query == NULL) {
				(*c_backend_failed)++;
				front_alert_close(fc, FRONT_ALERT_INTERNAL_ERROR,
				    "backend_unresolved");
			}
			return false;
		}
		front_try_connect(fc);
		return false;
	}
}

static void
front_client_io(struct front_conn *fc, uint32_t events)
{
	front_side_note(&fc->c, events);
	switch (fc->state) {
	case FRONT_ST_HELLO:
		if (fc->c.readable)
			front_hello_read(fc);
		break;
	case FRONT_ST_RELAY:
		front_relay(fc);
		break;
	default:
		/* Client bytes wait in the kernel until the backend is there. */
		break;
	}
}

static void
front_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct front_conn *fc = arg;
	int64_t idle;

	switch (fc->state) {
	case FRONT_ST_HELLO:
		(*c_hello_timeout)++;
		front_close(fc, "hello_timeout");
		return;
	case FRONT_ST_RESOLVE:
		(*c_backend_failed)++;
		front_alert_close(fc, FRONT_ALERT_INTERNAL_ERROR, "backend_resolve_timeout");
		return;
	case FRONT_ST_CONNECT:
		fc->setup->last_error = "connect timeout";
		front_try_connect(fc);
		return;
	case FRONT_ST_RELAY:
		idle = now_sec() - fc->last_active;
		if (idle >= mxd->conf->front_idle_timeout[fc->service]) {
			(*c_idle_timeout)++;
			front_close(fc, "idle_timeout");
			return;
		}
		/* Active since the timer was set: wait out the rest of the period. */
		timer_arm(fc, mxd->conf->front_idle_timeout[fc->service] - idle);
		return;
	}
}

static void
front_accept(int fd, struct sockaddr *sa, socklen_t salen, void *arg)
{
	struct front_listener *fl = arg;
	struct front_conn *fc;
	struct timeval tv;

	(*c_accepted)++;
	if ((long long)active >= mxd->conf->front_max_connections) {
		(*c_limit_total)++;
		log_warnx("event=front_refused reason=max_connections active=%zu", active);
		close(fd);
		return;
	}
	if (client_limits_acquire(limits, sa, (size_t)mxd->conf->front_max_per_client) == -1) {
		char client[ADDR_STR_MAX];

		(*c_limit_client)++;
		log_warnx("event=front_refused reason=max_per_client client=%s",
		    addr_format(sa, client, sizeof(client)));
		close(fd);
		return;
	}
	if ((fc = pool_get(&conn_pool, sizeof(*fc))) == NULL) {
		client_limits_release(limits, sa);
		close(fd);
		return;
	}
	memset(fc, 0, sizeof(*fc));
	if ((fc->hello = pool_get(&hello_pool, sizeof(*fc->hello))) == NULL) {
		pool_put(&conn_pool, fc);
		client_limits_release(limits, sa);
		close(fd);
		return;
	}
	active++;
	fc->counted_client = true;
	fc->id = ++next_id;
	fc->cfd = fd;
	fc->bfd = -1;
	fc->up.pipe[0] = fc->up.pipe[1] = fc->down.pipe[0] = fc->down.pipe[1] = -1;
	fc->service = fl->service;
	fc->started = mx_now_usec();
	memcpy(&fc->client, sa, salen < sizeof(fc->client) ? salen : sizeof(fc->client));
	front_hello_init(fc->hello, (size_t)mxd->conf->front_hello_max);
	fc->c.writable = true;	/* until a write falls short: see front_client_watch_write */
	evtimer_assign(&fc->ev_timer, mxd->base, front_timer_cb, fc);
	if (front_watch(fc, fd, false, EPOLLIN, EPOLL_CTL_ADD) == -1) {
		log_warn("event=front_epoll_ctl_failed id=%08x", fc->id);
		front_close(fc, "io_error");
		return;
	}
	/*
	 * A client sends its hello right behind the handshake's last ACK, so it
	 * is usually here already: read now instead of a loop round later (at
	 * worst one EAGAIN).  This may close fc.  The hello timer is only armed
	 * when the hello is not all here: otherwise the connect timer would
	 * replace it at once.
	 */
	fc->c.readable = true;
	if (front_hello_read(fc)) {
		tv.tv_sec = (time_t)mxd->conf->front_hello_timeout;
		tv.tv_usec = 0;
		event_add(&fc->ev_timer, &tv);
	}
}

static void
front_set_idle_timeouts(void)
{
	int s;

	for (s = 0; s < FRONT_NSERVICES; s++) {
		idle_tv[s].tv_sec = (time_t)mxd->conf->front_idle_timeout[s];
		idle_tv[s].tv_usec = 0;
		/* Many connections share these timeouts: libevent keeps them in O(1) queues. */
		idle_common[s] = event_base_init_common_timeout(mxd->base, &idle_tv[s]);
		if (idle_common[s] == NULL)
			idle_common[s] = &idle_tv[s];
	}
}

static int
front_start(void)
{
	int i;

	c_accepted = stats_counter("front.accepted");
	c_routed = stats_counter("front.routed");
	c_unknown_sni = stats_counter("front.unknown_sni");
	c_no_sni = stats_counter("front.no_sni");
	c_malformed = stats_counter("front.bad_hello");
	c_hello_timeout = stats_counter("front.hello_timeout");
	c_backend_failed = stats_counter("front.backend_failed");
	c_limit_total = stats_counter("front.refused_max_connections");
	c_limit_client = stats_counter("front.refused_max_per_client");
	c_bytes_up = stats_counter("front.bytes_up");
	c_bytes_down = stats_counter("front.bytes_down");
	c_idle_timeout = stats_counter("front.idle_timeout");
	c_private_target = stats_counter("front.private_target_refused");
	c_no_backend = stats_counter("front.no_backend_for_service");
	if ((limits = client_limits_new()) == NULL)
		return -1;
	front_set_idle_timeouts();
	if ((epfd = epoll_create1(EPOLL_CLOEXEC)) == -1) {
		log_warn("event=front_epoll_create_failed");
		return -1;
	}
	ev_epoll = event_new(mxd->base, epfd, EV_READ | EV_PERSIST, front_epoll_cb, NULL);
	if (ev_epoll == NULL || event_add(ev_epoll, NULL) == -1)
		return -1;
	for (i = 0; i < mxd->conf->n_front_listen; i++) {
		struct front_listener *fl = &listeners[nlisteners];
		int one = 1;

		/* Linux copies TCP_NODELAY into every accepted socket: one call, not one each. */
		if (setsockopt(mxd->front_fds[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) == -1)
			log_warn("event=front_nodelay_failed listener=%s",
			    mxd->conf->front_listen[i].text);
		fl->service = mxd->conf->front_listen[i].service;
		fl->l = listener_new(mxd->base, mxd->front_fds[i], front_accept, fl,
		    front_service_name(fl->service));
		if (fl->l == NULL)
			return -1;
		nlisteners++;
	}
	return 0;
}

static void
front_reload(void)
{
	front_set_idle_timeouts();
}

static void
front_stop(void)
{
	int i;

	for (i = 0; i < nlisteners; i++)
		listener_free(&listeners[i].l);
	nlisteners = 0;
	while (npipes > 0) {
		npipes--;
		close(pipe_pool[npipes][0]);
		close(pipe_pool[npipes][1]);
	}
	pool_drain(&conn_pool);
	pool_drain(&hello_pool);
	pool_drain(&setup_pool);
	if (ev_epoll != NULL) {
		event_free(ev_epoll);
		ev_epoll = NULL;
	}
	if (epfd != -1) {
		close(epfd);
		epfd = -1;
	}
	free(by_fd);
	by_fd = NULL;
	by_fd_len = 0;
}

static int
front_status(struct mx_buf *json)
{
	return mx_buf_printf(json, "\"front\":{\"active\":%zu,\"clients\":%zu,\"listeners\":%d,"
	    "\"buffered\":%zu}", active, limits ? client_limits_groups(limits) : 0, nlisteners,
	    spill_total);
}

const struct daemon_module front_module = {
	.name = "front",
	.start = front_start,
	.reload = front_reload,
	.stop = front_stop,
	.status = front_status,
};
