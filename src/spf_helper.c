/*
 * The SPF helper: the only process that runs libspf2.  libspf2 blocks in
 * its DNS layer and its macro expander has had memory bugs reachable from
 * any sender's DNS (CVE-2021-20314; CVE-2023-42118, not fixed in Debian
 * 12's 1.2.10-7.2), so it never runs in the daemon (PITFALLS 27).
 *
 * Design.  spf_preinit() in mxedged forks while still root, before any
 * key is loaded; the child drops to spf_user (setgroups, setresgid,
 * setresuid, checked; PR_SET_NO_NEW_PRIVS; no core files), closes every
 * descriptor but its socket, and re-executes our own binary (fexecve of
 * /proc/self/exe opened at start), so the helper begins with a fresh
 * address space: nothing of the daemon's memory (config, registry, later
 * TLS keys) and a new ASLR layout.  It holds no spool, key or registry
 * descriptor and cannot write where the daemon writes.
 *
 * The helper itself (the "master") never runs libspf2: it reads the
 * daemon's datagrams and hands each check to one of its workers, processes
 * it forks that open libspf2 and libunbound once and then run one check at
 * a time, keeping libunbound's cache between checks (a process and a
 * resolver context per check cost about 15 ms of CPU a check, which
 * capped the daemon at a few dozen checked messages a second).  Each worker talks
 * only to the master, over a socket pair of its own; the master relays a
 * reply only when it is well formed and answers the check that worker
 * runs.  A hostile record can at worst crash or hang one worker: the
 * master SIGKILLs it at the check's deadline and answers temperror for it,
 * and workers are replaced after SPF_HELPER_WORKER_CHECKS checks and after
 * any temperror or permerror, so state corrupted inside libspf2 lives for at
 * most that many checks (see "Workers" below for what remains shared).
 * If the master itself dies, the daemon notices EOF, answers temperror
 * meanwhile and starts a new helper (as its own user then, since it is no
 * longer root to switch; see spf.c), which spf_helper_sandbox() keeps off
 * the spool all the same.
 *
 * DNS goes to the configured resolver ("system" = /etc/resolv.conf, or
 * ADDRESS@PORT) through libunbound, set up like dns.c's.  Each answer is
 * converted with bounds checks into libspf2's records.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/landlock.h>
#include <malloc.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <syslog.h>
#include <unbound.h>
#include <unistd.h>

#include <spf2/spf.h>
#include <spf2/spf_dns.h>

#include "log.h"
#include "spf_helper.h"

#define SPF_RR_MAX 64		/* records taken from one answer */
#define SPF_TXT_MAX 4096	/* one TXT record, strings joined */

extern char **environ;

/* libspf2's own messages: errors abort the child (the master answers temperror). */
static void
spf_quiet(const char *file, int line, const char *msg)
{
	log_debug("event=libspf2 message=\"%s\"", msg != NULL ? msg : "");
}

/* DNS layer ---------------------------------------------------------------- */

static void
layer_free(SPF_dns_server_t *s)
{
	if (s->hook != NULL)
		ub_ctx_delete(s->hook);
	free(s);
}

/* An uncompressed wire name to text; -1 for anything odd (the record is skipped). */
static int
wire_name(const unsigned char *p, size_t len, char *out, size_t size)
{
	size_t i = 0, o = 0;

	while (i < len) {
		size_t l = p[i++], k;

		if (l == 0)
			break;
		if (l > 63 || l > len - i)
			return -1;
		if (o > 0) {
			if (o + 1 >= size)
				return -1;
			out[o++] = '.';
		}
		for (k = 0; k < l; k++) {
			unsigned char c = p[i + k];

			if (c <= ' ' || c >= 0x7f || c == '.' || c == '\\' || o + 1 >= size)
				return -1;
			out[o++] = (char)c;
		}
		i += l;
	}
	out[o] = '\0';
	return o > 0 ? 0 : -1;
}

static SPF_dns_rr_t *
ub_lookup(SPF_dns_server_t *s, const char *domain, ns_type type)
{
	struct ub_result *res = NULL;
	SPF_dns_rr_t *rr;
	int i, cnt = 0;

	if (ub_resolve(s->hook, domain, (int)type, 1, &res) != 0 || res == NULL) {
		if (res != NULL)
			ub_resolve_free(res);
		return SPF_dns_rr_new_init(s, domain, type, 0, TRY_AGAIN);
	}
	if (res->nxdomain || res->rcode == 3) {
		ub_resolve_free(res);
		return SPF_dns_rr_new_init(s, domain, type, 0, HOST_NOT_FOUND);
	}
	if (res->rcode != 0) {
		ub_resolve_free(res);
		return SPF_dns_rr_new_init(s, domain, type, 0, TRY_AGAIN);
	}
	if (!res->havedata) {
		ub_resolve_free(res);
		return SPF_dns_rr_new_init(s, domain, type, 0, NO_DATA);
	}
	if ((rr = SPF_dns_rr_new_init(s, domain, type, res->ttl, NETDB_SUCCESS)) == NULL) {
		ub_resolve_free(res);
		return NULL;
	}
	for (i = 0; res->data[i] != NULL && cnt < SPF_RR_MAX; i++) {
		const unsigned char *d = (const unsigned char *)res->data[i];
		size_t len = (size_t)res->len[i], k;
		char name[256];

		switch (type) {
		case ns_t_a:
			if (len != 4 || SPF_dns_rr_buf_realloc(rr, cnt, 4) != SPF_E_SUCCESS)
				continue;
			memcpy(&rr->rr[cnt]->a, d, 4);
			break;
		case ns_t_aaaa:
			if (len != 16 || SPF_dns_rr_buf_realloc(rr, cnt, 16) != SPF_E_SUCCESS)
				continue;
			memcpy(&rr->rr[cnt]->aaaa, d, 16);
			break;
		case ns_t_mx:
		case ns_t_ptr:
			if (type == ns_t_mx) {
				if (len < 3)
					continue;
				d += 2;
				len -= 2;
			}
			if (wire_name(d, len, name, sizeof(name)) == -1 ||
			    SPF_dns_rr_buf_realloc(rr, cnt, strlen(name) + 1) != SPF_E_SUCCESS)
				continue;
			memcpy(type == ns_t_mx ? rr->rr[cnt]->mx : rr->rr[cnt]->ptr, name,
			    strlen(name) + 1);
			break;
		case ns_t_txt: {
			/* The character-strings of one record, joined (RFC 7208 §3.3). */
			char *out;
			size_t o = 0;

			if (len > SPF_TXT_MAX ||
			    SPF_dns_rr_buf_realloc(rr, cnt, len + 1) != SPF_E_SUCCESS)
				continue;
			out = rr->rr[cnt]->txt;
			for (k = 0; k < len;) {
				size_t l = d[k++];

				if (l > len - k)
					break;
				memcpy(out + o, d + k, l);
				o += l;
				k += l;
			}
			if (k != len)
				continue;	/* malformed: leave the slot for the next one */
			out[o] = '\0';
			if (memchr(out, '\0', o) != NULL)
				continue;
			break;
		}
		default:
			continue;
		}
		cnt++;
	}
	rr->num_rr = cnt;
	if (cnt == 0)
		rr->herrno = NO_DATA;
	ub_resolve_free(res);
	return rr;
}

static SPF_dns_rr_t *
layer_lookup(SPF_dns_server_t *s, const char *domain, ns_type type, int should_cache)
{
	if ((int)type == 99)	/* the retired SPF type: never asked (RFC 7208 §3.1) */
		return SPF_dns_rr_new_init(s, domain, type, 0, NO_DATA);
	if (s->layer_below != NULL)
		return SPF_dns_lookup(s->layer_below, domain, type, should_cache);
	return ub_lookup(s, domain, type);
}

struct SPF_dns_server_struct *
spf_dns_layer_new(struct SPF_dns_server_struct *below, const char *resolver, char *err,
    size_t errsize)
{
	SPF_dns_server_t *s;
	struct ub_ctx *ub = NULL;
	const char *what = NULL;
	int r = 0;

	if (below == NULL) {
		/* As dns.c sets up the daemon's resolver (see the reasons there). */
		if ((ub = ub_ctx_create()) == NULL) {
			snprintf(err, errsize, "cannot create a libunbound context");
			return NULL;
		}
		if ((r = ub_ctx_set_option(ub, "do-not-query-localhost:", "no")) != 0)
			what = "do-not-query-localhost";
		else if ((r = ub_ctx_set_option(ub, "module-config:", "iterator")) != 0)
			what = "module-config";
		else if ((r = ub_ctx_set_option(ub, "local-zone:", "test. transparent")) != 0)
			what = "local-zone";
		else if (resolver == NULL || strcmp(resolver, "system") == 0) {
			if ((r = ub_ctx_resolvconf(ub, NULL)) != 0)
				what = "/etc/resolv.conf";
			else if ((r = ub_ctx_hosts(ub, NULL)) != 0)
				what = "/etc/hosts";
		} else if ((r = ub_ctx_set_fwd(ub, resolver)) != 0)
			what = "resolver";
		if (what != NULL) {
			snprintf(err, errsize, "%s: %s", what, ub_strerror(r));
			ub_ctx_delete(ub);
			return NULL;
		}
	}
	if ((s = calloc(1, sizeof(*s))) == NULL) {
		snprintf(err, errsize, "out of memory");
		if (ub != NULL)
			ub_ctx_delete(ub);
		return NULL;
	}
	s->destroy = layer_free;
	s->lookup = layer_lookup;
	s->layer_below = below;
	s->name = "mxedge";
	s->hook = ub;
	return s;
}

/* Checks ----------------------------------------------------------------------- */

static enum spf_res
map_result(SPF_result_t r)
{
	switch (r) {
	case SPF_RESULT_NEUTRAL:
		return SPF_RES_NEUTRAL;
	case SPF_RESULT_PASS:
		return SPF_RES_PASS;
	case SPF_RESULT_FAIL:
		return SPF_RES_FAIL;
	case SPF_RESULT_SOFTFAIL:
		return SPF_RES_SOFTFAIL;
	case SPF_RESULT_NONE:
		return SPF_RES_NONE;
	case SPF_RESULT_PERMERROR:
		return SPF_RES_PERMERROR;
	case SPF_RESULT_TEMPERROR:
	default:
		return SPF_RES_TEMPERROR;
	}
}

/* Printable ASCII only, bounded: the comment ends up in a header field. */
static void
set_comment(struct spf_reply_msg *r, const char *s)
{
	size_t i;

	for (i = 0; s != NULL && s[i] != '\0' && i < SPF_COMMENT_MAX; i++)
		r->comment[i] = (s[i] < 0x20 || s[i] > 0x7e) ? '?' : s[i];
	r->comment[i] = '\0';
}

/* A HELO name worth checking: a domain name, not an address literal. */
static bool
helo_is_domain(const char *helo)
{
	size_t n = strlen(helo);

	return n > 0 && helo[0] != '[' && strchr(helo, '.') != NULL &&
	    strspn(helo, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._") == n;
}

void
spf_check_with(struct SPF_dns_server_struct *dns, const char *receiver,
    const struct spf_query_msg *q, struct spf_reply_msg *r)
{
	SPF_server_t *srv;
	SPF_request_t *req = NULL;
	SPF_response_t *resp = NULL;
	char from[SPF_SENDER_MAX + SPF_HELO_MAX + 16];
	SPF_errcode_t err;
	struct in_addr a4;
	struct in6_addr a6;

	memset(r, 0, sizeof(*r));
	r->id = q->id;
	r->result = SPF_RES_TEMPERROR;
	/* libspf2's errors keep their default (print, abort: the master answers temperror). */
	SPF_warning_handler = spf_quiet;
	SPF_info_handler = spf_quiet;
	SPF_debug_handler = spf_quiet;
	if (q->sender[0] == '\0') {
		/* The null sender: the HELO identity (RFC 7208 §2.4). */
		r->helo_identity = true;
		if (!helo_is_domain(q->helo)) {
			r->result = SPF_RES_NONE;
			set_comment(r, "no HELO domain to check for the null sender");
			return;
		}
		snprintf(from, sizeof(from), "postmaster@%s", q->helo);
	} else if (mx_strlcpy(from, q->sender, sizeof(from)) == -1) {
		r->result = SPF_RES_NONE;
		return;
	}
	if ((srv = SPF_server_new_dns(dns, 0)) == NULL) {
		set_comment(r, "cannot start libspf2");
		return;
	}
	if (receiver != NULL && receiver[0] != '\0')
		(void)SPF_server_set_rec_dom(srv, receiver);
	if ((req = SPF_request_new(srv)) == NULL) {
		set_comment(r, "cannot start libspf2");
		goto out;
	}
	if (q->family == 4) {
		memcpy(&a4, q->addr, 4);
		SPF_request_set_ipv4(req, a4);
	} else {
		memcpy(&a6, q->addr, 16);
		SPF_request_set_ipv6(req, a6);
	}
	if (q->helo[0] != '\0')
		(void)SPF_request_set_helo_dom(req, q->helo);
	if (SPF_request_set_env_from(req, from) != 0) {
		r->result = SPF_RES_NONE;
		set_comment(r, "the sender has no domain to check");
		goto out;
	}
	err = SPF_request_query_mailfrom(req, &resp);
	if (resp != NULL && SPF_response_result(resp) == SPF_RESULT_INVALID) {
		/*
		 * libspf2 leaves the result unset when the record does not
		 * compile: that is a permerror (RFC 7208 §4.6), unless DNS failed.
		 */
		r->result = err == SPF_E_DNS_ERROR ? SPF_RES_TEMPERROR : SPF_RES_PERMERROR;
		set_comment(r, err == SPF_E_DNS_ERROR ? "temporary DNS failure" :
		    "the sender's SPF record is invalid");
	} else if (resp != NULL) {
		r->result = map_result(SPF_response_result(resp));
		set_comment(r, SPF_response_get_header_comment(resp));
	}
out:
	if (resp != NULL)
		SPF_response_free(resp);
	if (req != NULL)
		SPF_request_free(req);
	srv->resolver = NULL;	/* borrowed: the caller frees the layer */
	SPF_server_free(srv);
}

/* The default engine: libspf2 with our libunbound layer. */
struct engine {
	SPF_dns_server_t *dns;
	char receiver[SPF_NAME_MAX + 1];
};

static void *
engine_open(const struct spf_config_msg *cfg, char *err, size_t errsize)
{
	struct engine *e = calloc(1, sizeof(*e));

	if (e == NULL) {
		snprintf(err, errsize, "out of memory");
		return NULL;
	}
	if ((e->dns = spf_dns_layer_new(NULL, cfg->resolver, err, errsize)) == NULL) {
		free(e);
		return NULL;
	}
	mx_strlcpy(e->receiver, cfg->receiver, sizeof(e->receiver));
	return e;
}

static void
engine_check(void *engine, const struct spf_query_msg *q, struct spf_reply_msg *r)
{
	struct engine *e = engine;

	spf_check_with(e->dns, e->receiver, q, r);
}

static void
engine_close(void *engine)
{
	struct engine *e = engine;

	SPF_dns_free(e->dns);
	free(e);
}

const struct spf_engine_ops spf_engine_default = { engine_open, engine_check, engine_close };

/* The master ---------------------------------------------------------------------- */

/*
 * Workers.  Creating a libunbound context and forking cost about 15 ms of
 * CPU, far more than a check whose answers are cached, so a worker serves
 * checks one after the other, keeping its engine (and libunbound's cache)
 * between them.  What a process per check gave, and what remains: each
 * worker has its own socket pair, so it sees only the checks it is given,
 * and the master takes from it only a well-formed reply to the check it
 * runs (a worker cannot answer someone else's check); a check past its
 * deadline, a crash or a malformed reply ends the worker (temperror); a
 * worker is replaced after SPF_HELPER_WORKER_CHECKS checks and after any
 * temperror or permerror (DNS trouble, or a record libspf2 could not
 * compile, where a hostile record would show).  What no longer holds: the
 * senders checked by one worker share its address space and libunbound's
 * cache (public DNS data, kept for its TTL), so a record that corrupts
 * memory without crashing may sway that worker's later checks, at most
 * SPF_HELPER_WORKER_CHECKS of them.  A worker taken over runs as spf_user
 * like the master and the other workers (as a per-check child did) and
 * holds no key, spool, registry, nor the daemon's socket.
 */
#define SPF_WORKER_IDLE 60	/* seconds an idle worker is kept (one stays) */
#define SPF_WORKER_EXIT 2	/* seconds a retired worker has to exit */

struct worker {
	pid_t pid;
	int fd;			/* the master's end of its socket pair; -1 once retired */
	bool busy;		/* running check id */
	bool killed;		/* SIGKILLed: answer temperror when reaped, if busy */
	bool stale;		/* configured before the last config: retire when idle */
	uint32_t id;
	uint64_t deadline;	/* of the check, or of the exit once retired; monotonic usec */
	uint64_t idle_since;
	unsigned int checks;
};

struct master {
	int fd;			/* to the daemon */
	int sfd;		/* SIGCHLD */
	const struct spf_engine_ops *ops;
	struct spf_config_msg cfg;
	bool have_cfg;
	struct worker w[SPF_HELPER_CHILDREN_MAX];
	size_t nw;
};

static void
send_reply(int fd, const struct spf_reply_msg *r)
{
	unsigned char buf[SPF_MSG_MAX];
	int n = spf_msg_put_reply(r, buf, sizeof(buf));

	if (n > 0)
		(void)send(fd, buf, (size_t)n, MSG_NOSIGNAL);
}

static void
send_temperror(int fd, uint32_t id, const char *why)
{
	struct spf_reply_msg r;

	memset(&r, 0, sizeof(r));
	r.id = id;
	r.result = SPF_RES_TEMPERROR;
	set_comment(&r, why);
	send_reply(fd, &r);
}

/*
 * A worker: open the engine once, then one check per datagram from the
 * master until it closes the socket.  An engine that cannot open answers
 * temperror with the reason (the master then replaces the worker).
 */
static void __attribute__((noreturn))
worker_run(int fd, const struct spf_engine_ops *ops, const struct spf_config_msg *cfg)
{
	unsigned char buf[SPF_MSG_MAX];
	struct spf_query_msg q;
	struct spf_reply_msg r;
	char err[256] = "";
	void *engine;
	ssize_t n;

	/*
	 * libunbound sets up and frees about 500 KiB for every lookup: kept
	 * by malloc rather than given back and faulted in again each time.
	 */
	(void)mallopt(M_MMAP_THRESHOLD, 1024 * 1024);
	(void)mallopt(M_TRIM_THRESHOLD, 8 * 1024 * 1024);
	engine = ops->open(cfg, err, sizeof(err));
	for (;;) {
		if ((n = recv(fd, buf, sizeof(buf), 0)) == -1 && errno == EINTR)
			continue;
		if (n <= 0 || spf_msg_get_query(buf, (size_t)n, &q) == -1)
			break;
		if (engine == NULL) {
			send_temperror(fd, q.id, err);
			continue;
		}
		/* A backstop should the master be unable to kill us in time. */
		alarm(cfg->timeout + 5);
		ops->check(engine, &q, &r);
		alarm(0);
		send_reply(fd, &r);
	}
	if (engine != NULL)
		ops->close(engine);
	_exit(0);
}

/* Start a worker; NULL when it cannot be. */
static struct worker *
worker_start(struct master *m)
{
	struct worker *w;
	sigset_t chld;
	int sv[2];
	size_t i;
	pid_t pid;

	if (m->nw == SPF_HELPER_CHILDREN_MAX ||
	    socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == -1)
		return NULL;
	if ((pid = fork()) == -1) {
		close(sv[0]);
		close(sv[1]);
		return NULL;
	}
	if (pid == 0) {
		/* Nothing of the master's but the log: not the daemon's socket, not the others'. */
		log_after_fork();
		close(m->fd);
		close(m->sfd);
		close(sv[0]);
		for (i = 0; i < m->nw; i++)
			if (m->w[i].fd != -1)
				close(m->w[i].fd);
		sigemptyset(&chld);
		sigaddset(&chld, SIGCHLD);
		(void)sigprocmask(SIG_UNBLOCK, &chld, NULL);
		worker_run(sv[1], m->ops, &m->cfg);
	}
	close(sv[1]);
	w = &m->w[m->nw++];
	memset(w, 0, sizeof(*w));
	w->pid = pid;
	w->fd = sv[0];
	w->idle_since = mx_now_usec();
	log_debug("event=spf_worker_started pid=%ld workers=%zu", (long)pid, m->nw);
	return w;
}

/* Close a worker's socket: it exits when it reads EOF, or is killed at the deadline. */
static void
worker_retire(struct worker *w, uint64_t now)
{
	if (w->fd != -1) {
		close(w->fd);
		w->fd = -1;
	}
	if (!w->killed)
		w->deadline = now + SPF_WORKER_EXIT * 1000000u;
}

static void
worker_kill(struct worker *w)
{
	(void)kill(w->pid, SIGKILL);
	w->killed = true;
	if (w->fd != -1) {
		close(w->fd);
		w->fd = -1;
	}
}

/* The check a worker ran is answered: the worker is idle again, or retired. */
static void
worker_done(struct master *m, struct worker *w, const struct spf_reply_msg *r)
{
	uint64_t now = mx_now_usec();

	w->busy = false;
	w->idle_since = now;
	if (w->stale || w->checks >= SPF_HELPER_WORKER_CHECKS ||
	    r->result == SPF_RES_TEMPERROR || r->result == SPF_RES_PERMERROR)
		worker_retire(w, now);
}

/* A worker's reply: relayed when it is the well-formed answer to its check. */
static void
worker_read(struct master *m, struct worker *w)
{
	unsigned char buf[SPF_MSG_MAX];
	struct spf_reply_msg r;
	ssize_t n;

	if ((n = recv(w->fd, buf, sizeof(buf), MSG_DONTWAIT)) == -1 &&
	    (errno == EINTR || errno == EAGAIN))
		return;
	if (n <= 0) {
		/* It is exiting: reap() answers for its check. */
		close(w->fd);
		w->fd = -1;
		w->deadline = mx_now_usec() + SPF_WORKER_EXIT * 1000000u;
		return;
	}
	if (!w->busy || spf_msg_get_reply(buf, (size_t)n, &r) == -1 || r.id != w->id) {
		log_warnx("event=spf_worker_bad_reply pid=%ld length=%zd", (long)w->pid, n);
		if (w->busy)
			send_temperror(m->fd, w->id, "SPF checker misbehaved");
		w->busy = false;
		worker_kill(w);
		return;
	}
	send_reply(m->fd, &r);
	worker_done(m, w, &r);
}

static void
reap(struct master *m)
{
	struct worker *w;
	pid_t pid;
	int status;
	size_t i;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		for (i = 0; i < m->nw; i++)
			if (m->w[i].pid == pid)
				break;
		if (i == m->nw)
			continue;
		w = &m->w[i];
		/* A reply it sent before it died still counts. */
		if (w->busy && w->fd != -1)
			worker_read(m, w);
		if (w->busy && w->killed)
			send_temperror(m->fd, w->id, "SPF check timed out");
		else if (!w->killed &&
		    (w->busy || !WIFEXITED(status) || WEXITSTATUS(status) != 0)) {
			char why[64];

			snprintf(why, sizeof(why), "SPF checker %s (%s %d)",
			    w->busy ? "crashed" : "failed",
			    WIFSIGNALED(status) ? "signal" : "status",
			    WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
			log_warnx("event=spf_worker_failed pid=%ld id=%u reason=\"%s\"", (long)pid,
			    w->busy ? w->id : 0, why);
			if (w->busy)
				send_temperror(m->fd, w->id, why);
		}
		if (w->fd != -1)
			close(w->fd);
		*w = m->w[--m->nw];
	}
}

/* Give a check to an idle worker, the most recently used (its cache is warmest). */
static void
master_query(struct master *m, const struct spf_query_msg *q)
{
	unsigned char buf[SPF_MSG_MAX];
	struct worker *w = NULL;
	size_t i;
	int n;

	if (!m->have_cfg) {
		send_temperror(m->fd, q->id, "SPF helper not configured yet");
		return;
	}
	for (i = 0; i < m->nw; i++)
		if (!m->w[i].busy && m->w[i].fd != -1 &&
		    (w == NULL || m->w[i].idle_since > w->idle_since))
			w = &m->w[i];
	if (w == NULL && (w = worker_start(m)) == NULL) {
		send_temperror(m->fd, q->id, m->nw == SPF_HELPER_CHILDREN_MAX ?
		    "SPF helper busy" : "SPF helper cannot start a worker");
		return;
	}
	if ((n = spf_msg_put_query(q, buf, sizeof(buf))) < 0 ||
	    send(w->fd, buf, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) != n) {
		send_temperror(m->fd, q->id, "SPF helper cannot reach its worker");
		worker_kill(w);
		return;
	}
	w->busy = true;
	w->id = q->id;
	w->checks++;
	w->deadline = mx_now_usec() + (uint64_t)m->cfg.timeout * 1000000u;
}

/* Deadlines: kill late checks and workers slow to exit, retire long-idle workers. */
static int
master_timers(struct master *m)
{
	uint64_t now = mx_now_usec(), next = 0;
	size_t i, nopen = 0;

	for (i = 0; i < m->nw; i++)
		if (m->w[i].fd != -1)
			nopen++;
	for (i = 0; i < m->nw; i++) {
		struct worker *w = &m->w[i];
		uint64_t at;

		if (w->killed)
			continue;
		if (!w->busy && w->fd != -1) {
			/* Idle: kept SPF_WORKER_IDLE seconds, one for ever. */
			if (nopen <= 1)
				continue;
			at = w->idle_since + SPF_WORKER_IDLE * 1000000u;
			if (at <= now) {
				worker_retire(w, now);
				nopen--;
				at = w->deadline;
			}
		} else
			at = w->deadline;
		if (at <= now) {
			if (w->busy)
				log_warnx("event=spf_check_timeout id=%u pid=%ld", w->id,
				    (long)w->pid);
			worker_kill(w);
			continue;
		}
		if (next == 0 || at < next)
			next = at;
	}
	if (next == 0)
		return -1;
	return (int)((next - now) / 1000 + 1);
}

/* Datagrams from the daemon, until none is waiting. */
static void
master_read(struct master *m)
{
	unsigned char buf[SPF_MSG_MAX];
	struct spf_query_msg q;
	size_t i;
	ssize_t n;

	for (;;) {
		n = recv(m->fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n == -1 && (errno == EINTR || errno == EAGAIN))
			return;
		if (n <= 0) {
			/* The daemon is gone: so are we, and our checks. */
			for (i = 0; i < m->nw; i++)
				(void)kill(m->w[i].pid, SIGKILL);
			_exit(0);
		}
		switch (spf_msg_type(buf, (size_t)n)) {
		case SPF_MSG_CONFIG:
			if (spf_msg_get_config(buf, (size_t)n, &m->cfg) == -1)
				break;
			m->have_cfg = true;
			if (m->cfg.timeout < 1)
				m->cfg.timeout = 1;
			log_init(SPF_HELPER_NAME, m->cfg.log_stderr,
			    (enum log_level)m->cfg.log_level);
			/* Workers hold the old resolver: idle ones go now, busy ones when done. */
			for (i = 0; i < m->nw; i++) {
				m->w[i].stale = true;
				if (!m->w[i].busy)
					worker_retire(&m->w[i], mx_now_usec());
			}
			break;
		case SPF_MSG_QUERY:
			if (spf_msg_get_query(buf, (size_t)n, &q) == 0)
				master_query(m, &q);
			break;
		default:
			break;
		}
	}
}

/*
 * Landlock: from here on this process and its workers may open no file but
 * the few the resolver reads, and write, create, remove or execute nothing.
 * spf_user already keeps the helper away from the spool, keys and registry;
 * this keeps a helper the daemon restarted after dropping privileges (it
 * runs as the daemon's user then) away from them too, and any helper from
 * the rest of the file system.  /proc stays readable: the sanitizers read
 * their own process there.
 */
int
spf_helper_sandbox(void)
{
	static const struct {
		const char *path;
		uint64_t access;
	} allow[] = {
		{ "/etc/resolv.conf", LANDLOCK_ACCESS_FS_READ_FILE },
		{ "/etc/hosts", LANDLOCK_ACCESS_FS_READ_FILE },
		{ "/etc/localtime", LANDLOCK_ACCESS_FS_READ_FILE },
		{ "/dev/urandom", LANDLOCK_ACCESS_FS_READ_FILE },
		{ "/proc", LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR },
	};
	struct landlock_ruleset_attr ra;
	struct landlock_path_beneath_attr pb;
	long abi;
	size_t i;
	int rfd, pfd, saved;

	abi = syscall(SYS_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);
	if (abi < 1)
		return -1;
	memset(&ra, 0, sizeof(ra));
	ra.handled_access_fs = LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_WRITE_FILE |
	    LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR |
	    LANDLOCK_ACCESS_FS_REMOVE_DIR | LANDLOCK_ACCESS_FS_REMOVE_FILE |
	    LANDLOCK_ACCESS_FS_MAKE_CHAR | LANDLOCK_ACCESS_FS_MAKE_DIR |
	    LANDLOCK_ACCESS_FS_MAKE_REG | LANDLOCK_ACCESS_FS_MAKE_SOCK |
	    LANDLOCK_ACCESS_FS_MAKE_FIFO | LANDLOCK_ACCESS_FS_MAKE_BLOCK |
	    LANDLOCK_ACCESS_FS_MAKE_SYM;
	if (abi >= 2)
		ra.handled_access_fs |= LANDLOCK_ACCESS_FS_REFER;
#ifdef LANDLOCK_ACCESS_FS_TRUNCATE
	if (abi >= 3)
		ra.handled_access_fs |= LANDLOCK_ACCESS_FS_TRUNCATE;
#endif
	if ((rfd = (int)syscall(SYS_landlock_create_ruleset, &ra, sizeof(ra), 0)) == -1)
		return -1;
	for (i = 0; i < sizeof(allow) / sizeof(allow[0]); i++) {
		/* What is missing here is simply not allowed. */
		if ((pfd = open(allow[i].path, O_PATH | O_CLOEXEC)) == -1)
			continue;
		memset(&pb, 0, sizeof(pb));
		pb.allowed_access = allow[i].access;
		pb.parent_fd = pfd;
		if (syscall(SYS_landlock_add_rule, rfd, LANDLOCK_RULE_PATH_BENEATH, &pb, 0) == -1) {
			saved = errno;
			close(pfd);
			close(rfd);
			errno = saved;
			return -1;
		}
		close(pfd);
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1 ||
	    syscall(SYS_landlock_restrict_self, rfd, 0) == -1) {
		saved = errno;
		close(rfd);
		errno = saved;
		return -1;
	}
	close(rfd);
	return 0;
}

void
spf_helper_serve(int fd, const struct spf_engine_ops *ops)
{
	struct master m;
	sigset_t chld;

	memset(&m, 0, sizeof(m));
	m.fd = fd;
	m.ops = ops;
	m.cfg.timeout = 20;
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	if (sigprocmask(SIG_BLOCK, &chld, NULL) == -1 ||
	    (m.sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK)) == -1)
		_exit(1);
	if (spf_helper_sandbox() == -1)
		log_warnx("event=spf_sandbox_unavailable error=\"%s\" note=\"file system "
		    "access limited by spf_user only\"", strerror(errno));
	for (;;) {
		struct pollfd pfd[2 + SPF_HELPER_CHILDREN_MAX];
		pid_t pids[SPF_HELPER_CHILDREN_MAX];
		int timeout = master_timers(&m);
		size_t i, j, npfd = 2;

		pfd[0].fd = m.fd;
		pfd[0].events = POLLIN;
		pfd[1].fd = m.sfd;
		pfd[1].events = POLLIN;
		for (i = 0; i < m.nw; i++) {
			if (m.w[i].fd == -1)
				continue;
			pids[npfd - 2] = m.w[i].pid;
			pfd[npfd].fd = m.w[i].fd;
			pfd[npfd++].events = POLLIN;
		}
		if (poll(pfd, npfd, timeout) == -1) {
			if (errno == EINTR)
				continue;
			_exit(1);
		}
		/* Replies first, so that one sent just before a crash is not lost. */
		for (j = 2; j < npfd; j++) {
			if ((pfd[j].revents & (POLLIN | POLLHUP | POLLERR)) == 0)
				continue;
			for (i = 0; i < m.nw; i++)
				if (m.w[i].pid == pids[j - 2] && m.w[i].fd == pfd[j].fd)
					break;
			if (i < m.nw)
				worker_read(&m, &m.w[i]);
		}
		if (pfd[1].revents & POLLIN) {
			struct signalfd_siginfo si;

			while (read(m.sfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
				;
			reap(&m);
		}
		if (pfd[0].revents & (POLLIN | POLLHUP | POLLERR))
			master_read(&m);
	}
}

void
spf_helper_exec_main(int argc, char **argv)
{
	if (argc != 2 || strcmp(argv[1], SPF_HELPER_ARG) != 0)
		return;
	log_init(SPF_HELPER_NAME, true, LOG_LEVEL_WARN);
	spf_helper_serve(SPF_HELPER_FD, &spf_engine_default);
}

/* Close every descriptor from lowfd up. */
static void
close_from(int lowfd)
{
	long max, fd;

	if (close_range((unsigned int)lowfd, ~0U, 0) == 0)
		return;
	max = sysconf(_SC_OPEN_MAX);
	if (max < 0 || max > 65536)
		max = 65536;
	for (fd = lowfd; fd < max; fd++)
		(void)close((int)fd);
}

/* In the new child: become the helper.  Never returns. */
static void __attribute__((noreturn))
spawn_child(const struct spf_spawn *sp, int sock)
{
	struct rlimit nocore = { 0, 0 };
	sigset_t none;
	int null, sig;

	(void)setsid();
	sigemptyset(&none);
	(void)sigprocmask(SIG_SETMASK, &none, NULL);
	for (sig = 1; sig < NSIG; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			(void)signal(sig, SIG_DFL);
	if (sp->devnull && (null = open("/dev/null", O_RDWR)) != -1) {
		(void)dup2(null, 0);
		(void)dup2(null, 1);
		(void)dup2(null, 2);
		if (null > 2)
			(void)close(null);
	}
	/* The socket becomes fd 3, the binary fd 4; nothing else survives. */
	if (sock != SPF_HELPER_FD) {
		if (dup2(sock, SPF_HELPER_FD) == -1)
			_exit(126);
	} else if (fcntl(sock, F_SETFD, 0) == -1)
		_exit(126);
	if (sp->exe_fd != -1) {
		if (sp->exe_fd != SPF_HELPER_FD + 1 && dup3(sp->exe_fd, SPF_HELPER_FD + 1,
		    O_CLOEXEC) == -1)
			_exit(126);
		close_from(SPF_HELPER_FD + 2);
	} else
		close_from(SPF_HELPER_FD + 1);
	closelog();
	if (sp->switch_user) {
		if (setgroups(1, &sp->gid) == -1 || setresgid(sp->gid, sp->gid, sp->gid) == -1 ||
		    setresuid(sp->uid, sp->uid, sp->uid) == -1)
			_exit(126);
		if (sp->uid != 0 && setuid(0) != -1)
			_exit(126);
	}
	(void)prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
	(void)setrlimit(RLIMIT_CORE, &nocore);
	if (chdir("/") == -1)
		_exit(126);
	if (sp->exe_fd != -1) {
		char *args[] = { (char *)SPF_HELPER_NAME, (char *)SPF_HELPER_ARG, NULL };

		fexecve(SPF_HELPER_FD + 1, args, environ);
		_exit(127);
	}
	spf_helper_serve(SPF_HELPER_FD, sp->ops);
}

int
spf_helper_spawn(const struct spf_spawn *sp, pid_t *pid, char *err, size_t errsize)
{
	int sv[2];
	pid_t p;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == -1) {
		snprintf(err, errsize, "socketpair: %s", strerror(errno));
		return -1;
	}
	if ((p = fork()) == -1) {
		snprintf(err, errsize, "fork: %s", strerror(errno));
		close(sv[0]);
		close(sv[1]);
		return -1;
	}
	if (p == 0) {
		log_after_fork();
		close(sv[0]);
		spawn_child(sp, sv[1]);
	}
	close(sv[1]);
	*pid = p;
	return sv[0];
}
