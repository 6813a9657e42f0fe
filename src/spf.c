/*
 * The daemon's side of SPF: owns the socket to the SPF helper process
 * (spf_helper.c), the checks waiting for it, and the helper's life: it is
 * started by spf_preinit() before the privilege drop and started again
 * here, with a growing back-off, whenever it dies.
 *
 * Trust: the helper runs libspf2 over strangers' DNS, so its answers are
 * decoded strictly (spf_proto.c) and matched to a check by id; anything
 * else is dropped.  It can be slow, wedged or dead: every check has its own
 * deadline (spf_timeout) and answers temperror at it, and while the helper
 * is down every check answers temperror at once.  Nothing here blocks the
 * loop: the socket is non-blocking and a full socket buffer is "busy".
 *
 * A helper restarted after the privilege drop runs as the daemon's user
 * (switching to spf_user needs root); it still re-executes our binary, so
 * it inherits no memory and no descriptor but its socket.
 */
#include "config.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "spf.h"
#include "stats.h"

#define SPF_PENDING_MAX 1024		/* checks waiting for the helper */
#define SPF_BACKOFF_MAX 60		/* seconds between restarts, at most */

struct spf_query {
	TAILQ_ENTRY(spf_query) entry;
	struct spf_client *cl;
	uint32_t id;
	struct event *timer;
	spf_cb cb;
	void *arg;
	bool answered;			/* the result below is ready; the timer delivers it */
	struct spf_reply_msg reply;
};

TAILQ_HEAD(spf_queries, spf_query);

struct spf_client {
	struct event_base *base;
	struct spf_spawn sp;
	int fd;
	pid_t pid;
	pid_t parent;			/* who forked the helper (reap only our own child) */
	struct event *ev_read;
	struct event *ev_restart;
	struct spf_queries pending;
	size_t npending;
	uint32_t next_id;
	struct spf_config_msg cfg;
	unsigned int restarts;
	int backoff;
};

static struct spf_client *module_client;
static struct {
	int fd;
	pid_t pid;
	struct spf_spawn sp;
	bool done;
} pre = { -1, -1, { false, 0, 0, -1, NULL, false }, false };

static void
count_result(enum spf_res r)
{
	static const char *const names[SPF_NRES] = {
		"spf.none", "spf.neutral", "spf.pass", "spf.fail", "spf.softfail",
		"spf.temperror", "spf.permerror"
	};

	(*stats_counter("spf.checks"))++;
	if ((size_t)r < MX_NELEM(names))
		(*stats_counter(names[r]))++;
}

/* Hand the query's result to its owner and forget the query. */
static void
query_deliver(struct spf_query *q)
{
	struct spf_client *cl = q->cl;
	struct spf_result res;
	char comment[SPF_COMMENT_MAX + 1];
	spf_cb cb = q->cb;
	void *arg = q->arg;

	TAILQ_REMOVE(&cl->pending, q, entry);
	cl->npending--;
	memcpy(comment, q->reply.comment, sizeof(comment));
	res.result = q->reply.result;
	res.helo_identity = q->reply.helo_identity;
	res.comment = comment;
	event_free(q->timer);
	free(q);
	count_result(res.result);
	cb(&res, arg);
}

/* Answer a query from the loop, soon. */
static void
query_answer(struct spf_query *q, enum spf_res r, const char *comment)
{
	struct timeval now = { 0, 0 };

	q->answered = true;
	q->reply.result = r;
	mx_strlcpy(q->reply.comment, comment, sizeof(q->reply.comment));
	evtimer_add(q->timer, &now);
}

static void
query_timer(evutil_socket_t fd, short what, void *arg)
{
	struct spf_query *q = arg;

	if (!q->answered) {
		log_warnx("event=spf_timeout id=%u", q->id);
		q->reply.result = SPF_RES_TEMPERROR;
		mx_strlcpy(q->reply.comment, "SPF check timed out", sizeof(q->reply.comment));
	}
	query_deliver(q);
}

static void client_read(evutil_socket_t fd, short what, void *arg);

static int
client_send_config(struct spf_client *cl)
{
	unsigned char buf[SPF_MSG_MAX];
	int n = spf_msg_put_config(&cl->cfg, buf, sizeof(buf));

	if (n < 0 || send(cl->fd, buf, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) != n)
		return -1;
	return 0;
}

static int
client_attach(struct spf_client *cl, int fd, pid_t pid)
{
	int fl;

	if ((fl = fcntl(fd, F_GETFL)) == -1 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) == -1)
		return -1;
	cl->fd = fd;
	cl->pid = pid;
	if ((cl->ev_read = event_new(cl->base, fd, EV_READ | EV_PERSIST, client_read, cl)) ==
	    NULL || event_add(cl->ev_read, NULL) == -1)
		return -1;
	return client_send_config(cl);
}

static void
client_schedule_restart(struct spf_client *cl)
{
	struct timeval tv = { cl->backoff, 0 };

	evtimer_add(cl->ev_restart, &tv);
	if (cl->backoff < SPF_BACKOFF_MAX)
		cl->backoff = cl->backoff * 2 > SPF_BACKOFF_MAX ? SPF_BACKOFF_MAX :
		    cl->backoff * 2;
}

/* The helper is gone: every waiting check answers temperror, and a new one is due. */
static void
client_lost(struct spf_client *cl, const char *why)
{
	struct spf_query *q;
	int status;

	log_warnx("event=spf_helper_lost pid=%ld reason=\"%s\" pending=%zu", (long)cl->pid, why,
	    cl->npending);
	if (cl->ev_read != NULL) {
		event_free(cl->ev_read);
		cl->ev_read = NULL;
	}
	if (cl->fd != -1) {
		close(cl->fd);
		cl->fd = -1;
	}
	if (cl->pid > 0 && cl->parent == getpid() && waitpid(cl->pid, &status, WNOHANG) == 0) {
		(void)kill(cl->pid, SIGKILL);
		(void)waitpid(cl->pid, &status, 0);
	}
	cl->pid = -1;
	TAILQ_FOREACH(q, &cl->pending, entry)
		if (!q->answered)
			query_answer(q, SPF_RES_TEMPERROR, "SPF helper unavailable");
	client_schedule_restart(cl);
}

static void
client_restart(evutil_socket_t unused, short what, void *arg)
{
	struct spf_client *cl = arg;
	struct spf_spawn sp = cl->sp;
	char err[256];
	pid_t pid;
	int fd;

	/* Only root can switch users; later starts run as the daemon's user. */
	sp.switch_user = sp.switch_user && geteuid() == 0;
	if ((fd = spf_helper_spawn(&sp, &pid, err, sizeof(err))) == -1) {
		log_warnx("event=spf_helper_start_failed error=\"%s\"", err);
		client_schedule_restart(cl);
		return;
	}
	cl->parent = getpid();
	cl->restarts++;
	(*stats_counter("spf.helper_restarts"))++;
	if (client_attach(cl, fd, pid) == -1) {
		client_lost(cl, "cannot set up the helper socket");
		return;
	}
	log_info("event=spf_helper_started pid=%ld uid=%ld restarts=%u", (long)pid,
	    (long)(sp.switch_user ? sp.uid : geteuid()), cl->restarts);
}

static void
client_read(evutil_socket_t fd, short what, void *arg)
{
	struct spf_client *cl = arg;

	for (;;) {
		unsigned char buf[SPF_MSG_MAX];
		struct spf_reply_msg r;
		struct spf_query *q;
		ssize_t n = recv(cl->fd, buf, sizeof(buf), MSG_DONTWAIT);

		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
			return;
		if (n <= 0) {
			client_lost(cl, n == 0 ? "closed" : strerror(errno));
			return;
		}
		if (spf_msg_get_reply(buf, (size_t)n, &r) == -1) {
			log_warnx("event=spf_bad_reply length=%zd", n);
			continue;
		}
		cl->backoff = 1;
		TAILQ_FOREACH(q, &cl->pending, entry)
			if (q->id == r.id)
				break;
		/* Late (timed out) or unknown: dropped. */
		if (q == NULL || q->answered)
			continue;
		evtimer_del(q->timer);
		q->reply = r;
		q->answered = true;
		query_deliver(q);
	}
}

struct spf_client *
spf_client_new(struct event_base *base, const struct spf_spawn *sp, int fd, pid_t pid,
    const struct spf_config_msg *cfg)
{
	struct spf_client *cl = calloc(1, sizeof(*cl));

	if (cl == NULL)
		return NULL;
	cl->base = base;
	cl->sp = *sp;
	cl->fd = -1;
	cl->pid = -1;
	cl->parent = getpid();
	cl->cfg = *cfg;
	cl->backoff = 1;
	TAILQ_INIT(&cl->pending);
	if ((cl->ev_restart = evtimer_new(base, client_restart, cl)) == NULL) {
		free(cl);
		return NULL;
	}
	if (fd == -1)
		client_restart(-1, 0, cl);
	else if (client_attach(cl, fd, pid) == -1)
		client_lost(cl, "cannot set up the helper socket");
	return cl;
}

void
spf_client_free(struct spf_client **clp)
{
	struct spf_client *cl = *clp;
	struct spf_query *q;

	if (cl == NULL)
		return;
	*clp = NULL;
	while ((q = TAILQ_FIRST(&cl->pending)) != NULL) {
		TAILQ_REMOVE(&cl->pending, q, entry);
		event_free(q->timer);
		free(q);
	}
	if (cl->ev_read != NULL)
		event_free(cl->ev_read);
	event_free(cl->ev_restart);
	if (cl->fd != -1)
		close(cl->fd);	/* the helper sees EOF and exits */
	if (cl->pid > 0 && cl->parent == getpid())
		(void)waitpid(cl->pid, NULL, 0);
	free(cl);
}

void
spf_client_configure(struct spf_client *cl, const struct spf_config_msg *cfg)
{
	cl->cfg = *cfg;
	if (cl->fd != -1 && client_send_config(cl) == -1)
		log_warnx("event=spf_config_failed error=\"%s\"", strerror(errno));
}

pid_t
spf_client_pid(const struct spf_client *cl)
{
	return cl->pid;
}

unsigned int
spf_client_restarts(const struct spf_client *cl)
{
	return cl->restarts;
}

/* Fill the address of a query; false if the family is not one SPF knows. */
static bool
query_addr(const struct sockaddr *sa, struct spf_query_msg *m)
{
	static const unsigned char v4mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

	if (sa == NULL)
		return false;
	if (sa->sa_family == AF_INET) {
		m->family = 4;
		memcpy(m->addr, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		return true;
	}
	if (sa->sa_family == AF_INET6) {
		const unsigned char *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;

		if (memcmp(a, v4mapped, 12) == 0) {
			m->family = 4;
			memcpy(m->addr, a + 12, 4);
		} else {
			m->family = 6;
			memcpy(m->addr, a, 16);
		}
		return true;
	}
	return false;
}

struct spf_query *
spf_client_check(struct spf_client *cl, const struct sockaddr *client, const char *helo,
    const char *sender, spf_cb cb, void *arg)
{
	struct spf_query *q;
	struct spf_query_msg m;
	unsigned char buf[SPF_MSG_MAX];
	struct timeval tv;
	int n;

	if ((q = calloc(1, sizeof(*q))) == NULL)
		return NULL;
	if ((q->timer = evtimer_new(cl->base, query_timer, q)) == NULL) {
		free(q);
		errno = ENOMEM;
		return NULL;
	}
	q->cl = cl;
	q->cb = cb;
	q->arg = arg;
	q->id = ++cl->next_id;
	q->reply.id = q->id;
	q->reply.helo_identity = sender == NULL || sender[0] == '\0';
	TAILQ_INSERT_TAIL(&cl->pending, q, entry);
	cl->npending++;

	memset(&m, 0, sizeof(m));
	m.id = q->id;
	if (!query_addr(client, &m) ||
	    mx_strlcpy(m.helo, helo != NULL ? helo : "", sizeof(m.helo)) == -1 ||
	    mx_strlcpy(m.sender, sender != NULL ? sender : "", sizeof(m.sender)) == -1 ||
	    (n = spf_msg_put_query(&m, buf, sizeof(buf))) < 0) {
		/* Nothing sensible to check: no client address, or names out of bounds. */
		query_answer(q, SPF_RES_NONE, "not checked: no usable client address or names");
		return q;
	}
	if (cl->fd == -1) {
		query_answer(q, SPF_RES_TEMPERROR, "SPF helper unavailable");
		return q;
	}
	if (cl->npending > SPF_PENDING_MAX) {
		query_answer(q, SPF_RES_TEMPERROR, "SPF helper busy");
		return q;
	}
	if (send(cl->fd, buf, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) != n) {
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)
			query_answer(q, SPF_RES_TEMPERROR, "SPF helper busy");
		else
			client_lost(cl, strerror(errno));	/* answers q too */
		return q;
	}
	tv.tv_sec = cl->cfg.timeout > 0 ? (time_t)cl->cfg.timeout : 20;
	tv.tv_usec = 0;
	evtimer_add(q->timer, &tv);
	return q;
}

void
spf_cancel(struct spf_query **qp)
{
	struct spf_query *q = *qp;

	if (q == NULL)
		return;
	*qp = NULL;
	TAILQ_REMOVE(&q->cl->pending, q, entry);
	q->cl->npending--;
	event_free(q->timer);
	free(q);
}

struct spf_query *
spf_check(const struct sockaddr *client, const char *helo, const char *sender, spf_cb cb,
    void *arg)
{
	if (module_client == NULL) {
		errno = ENOTCONN;
		return NULL;
	}
	return spf_client_check(module_client, client, helo, sender, cb, arg);
}

/* Module ------------------------------------------------------------------------------ */

static void
config_from_conf(const struct conf *c, struct spf_config_msg *m)
{
	memset(m, 0, sizeof(*m));
	m->timeout = (uint32_t)c->spf_timeout;
	m->log_stderr = mxd->foreground || strcmp(c->log_target, "stderr") == 0;
	m->log_level = (uint8_t)c->log_level;
	mx_strlcpy(m->resolver, c->resolver, sizeof(m->resolver));
	mx_strlcpy(m->receiver, c->hostname, sizeof(m->receiver));
}

void
spf_preinit(const struct conf *c, bool foreground)
{
	char err[256];

	pre.done = true;
	pre.sp.devnull = !foreground;
	/* Our own binary, to re-execute into a clean address space now and at restarts. */
	if ((pre.sp.exe_fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC)) == -1) {
		log_warn("event=spf_no_exe reason=\"the helper will fork without exec\"");
		pre.sp.ops = &spf_engine_default;
	}
	if (geteuid() == 0) {
		struct passwd *pw = getpwnam(c->spf_user);

		if (pw == NULL)
			log_fatalx("spf_user %s does not exist (create it, or set spf_user in %s)",
			    c->spf_user, c->path);
		if (pw->pw_uid == 0)
			log_fatalx("spf_user %s is root; the SPF helper will not run as root",
			    c->spf_user);
		pre.sp.switch_user = true;
		pre.sp.uid = pw->pw_uid;
		pre.sp.gid = pw->pw_gid;
	}
	if ((pre.fd = spf_helper_spawn(&pre.sp, &pre.pid, err, sizeof(err))) == -1)
		log_warnx("event=spf_helper_start_failed error=\"%s\"", err);
	else
		log_info("event=spf_helper_started pid=%ld user=%s", (long)pre.pid,
		    pre.sp.switch_user ? c->spf_user : "(ours)");
}

static int
spf_module_start(void)
{
	struct spf_config_msg m;

	if (!pre.done) {
		/* Not started before the drop: start it now, as we are. */
		pre.sp.devnull = !mxd->foreground;
		if ((pre.sp.exe_fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC)) == -1)
			pre.sp.ops = &spf_engine_default;
	}
	config_from_conf(mxd->conf, &m);
	module_client = spf_client_new(mxd->base, &pre.sp, pre.fd, pre.pid, &m);
	pre.fd = -1;
	return module_client != NULL ? 0 : -1;
}

static void
spf_module_reload(void)
{
	struct spf_config_msg m;

	if (module_client == NULL)
		return;
	config_from_conf(mxd->conf, &m);
	spf_client_configure(module_client, &m);
}

static void
spf_module_stop(void)
{
	/* Sessions finishing after SIGTERM may still check: the helper stays until exit. */
}

static int
spf_module_status(struct mx_buf *json)
{
	if (module_client == NULL)
		return mx_buf_addstr(json, "\"spf\":{}");
	return mx_buf_printf(json, "\"spf\":{\"helper_pid\":%ld,\"pending\":%zu,\"restarts\":%u}",
	    (long)module_client->pid, module_client->npending, module_client->restarts);
}

const struct daemon_module spf_module = {
	"spf",
	spf_module_start,
	spf_module_reload,
	spf_module_stop,
	spf_module_status,
};
