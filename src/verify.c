/*
 * Recipient verification (see verify.h): the probe client, the per-domain
 * limits and the answer cache.  It owns its probes (one SMTP connection
 * each, to the domain's relay target, found the way the relay finds it:
 * relay_mx.c's next-hop rules over dns.c), the queries waiting on them and
 * the cache; it writes nothing to disk and never touches the queue.
 *
 * Trust: every octet from a primary is hostile.  Replies go through the
 * relay's bounded reply parser; a malformed one ends that connection.
 * Plaintext the primary sends before our TLS handshake ends is thrown away
 * by the io layer (PITFALLS 11).  The probe sender is our postmaster, never
 * the client's sender, so a primary's answer never depends on who asks and
 * can be cached.
 *
 * Failure: a target that cannot be reached, greets badly, refuses our MAIL
 * or breaks the dialogue is skipped for the next one; when none is left,
 * or verify_timeout passes, the waiting queries hear VERIFY_UNAVAILABLE
 * and the session applies the domain's policy for an unreachable primary.
 * Nothing here can stop the daemon.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "dns.h"
#include "io.h"
#include "listen.h"
#include "log.h"
#include "queue_file.h"
#include "relay_mx.h"
#include "relay_reply.h"
#include "stats.h"
#include "tls.h"
#include "verify.h"
#include "verify_cache.h"

#define VERIFY_CACHE_MAX 100000		/* addresses remembered */
#define VERIFY_DOMAIN_ACTIVE 4		/* probes at once, per domain */
#define VERIFY_DOMAIN_WAITING 64	/* probes queued per domain, then EAGAIN */
#define VERIFY_RATE 5			/* probes started per second, per domain, sustained */
#define VERIFY_BURST 20			/* ... and at once after a quiet time */
#define VERIFY_DNS_TIMEOUT 10
#define VERIFY_QUIT_SECS 10		/* for RSET and QUIT after the answer */
#define VERIFY_OURS_MAX 64
#define VERIFY_CMD_MAX (QUEUE_ADDR_MAX + 64)
#define USEC 1000000ull

enum vp_state {
	VP_WAITING = 0,		/* queued behind the domain's limits */
	VP_ROUTING,		/* MX and address lookups */
	VP_CONNECT,
	VP_GREETING,
	VP_EHLO,
	VP_HELO,
	VP_STARTTLS,
	VP_HANDSHAKE,
	VP_EHLO_TLS,
	VP_MAIL,
	VP_RCPT,
	VP_RSET,		/* answered; closing politely */
	VP_QUIT,
	VP_MAX
};

static const char *const vp_state_names[VP_MAX] = {
	"waiting", "routing", "connect", "greeting", "ehlo", "helo", "starttls", "handshake",
	"ehlo_tls", "mail", "rcpt", "rset", "quit"
};

struct verify_dom {
	struct verify_dom *next;
	char name[ADDR_DOMAIN_MAX + 1];
	size_t active;				/* probes past VP_WAITING, not yet answered */
	struct verify_probe *wait_head, **wait_tail;
	size_t nwaiting;
	double tokens;				/* start rate bucket */
	uint64_t refilled;			/* monotonic usec */
	struct event *ev_kick;			/* when the next token is due */
};

struct verify_probe;

struct verify_addr_query {
	struct verify_probe *p;
	size_t i;
	struct dns_query *q;
};

struct verify_probe {
	struct verify_probe *prev, *next;	/* all probes */
	struct verify_probe *wnext;		/* the domain's waiting queue */
	struct verify_dom *dom;
	uint32_t id;
	enum vp_state state;
	struct domain d;			/* the domain as it was when asked */
	char addr[QUEUE_ADDR_MAX + 1];
	bool answered;
	struct verify_query *waiters;
	uint64_t started;
	struct event *timer;			/* verify_timeout, then the QUIT deadline */

	struct relay_mx_plan *plan;
	struct dns_query *q_mx;
	struct verify_addr_query aq[RELAY_MX_HOSTS_MAX];
	size_t addr_pending;
	bool allow_v4;
	uint16_t port;

	size_t target;				/* the one being tried */
	struct io *io;
	char peer[DNS_NAME_BUF + ADDR_STR_MAX + 4];
	struct relay_reply_parser rp;
	struct relay_reply reply;
	struct relay_ehlo ehlo;
	bool tls;
	bool tls_skip;				/* this target again, without STARTTLS */
	char last_error[256];
};

struct verify_query {
	struct verify_query *prev, *next;
	struct verify_probe *p;
	verify_cb cb;
	void *arg;
};

static struct {
	bool running;
	struct verify_cache *cache;
	struct verify_dom *doms;
	struct verify_probe *probes;
	size_t nprobes;
	uint32_t next_id;
	struct tls_creds *creds;
	struct sockaddr_storage ours[VERIFY_OURS_MAX];
	size_t nours;
} V;

static unsigned long long *c_probes, *c_hits, *c_accepted, *c_refused, *c_tempfail,
    *c_unavailable, *c_busy;

static void probe_try(struct verify_probe *p);
static void probe_free(struct verify_probe *p);
static void dom_kick(struct verify_dom *d);

const char *
verify_status_name(enum verify_status st)
{
	switch (st) {
	case VERIFY_ACCEPTED:
		return "accepted";
	case VERIFY_REFUSED:
		return "refused";
	case VERIFY_TEMPFAIL:
		return "tempfail";
	case VERIFY_UNAVAILABLE:
		return "unavailable";
	}
	return "?";
}

static uint32_t
verify_rng(void *arg)
{
	return mx_random_u32();
}

static void MX_PRINTF(2, 3)
probe_error(struct verify_probe *p, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	if (vsnprintf(p->last_error, sizeof(p->last_error), fmt, ap) < 0)
		p->last_error[0] = '\0';
	va_end(ap);
}

static void
probe_enter(struct verify_probe *p, enum vp_state st)
{
	if (p->state != st && log_enabled(LOG_LEVEL_DEBUG))
		log_debug("event=verify_state probe=%08x from=%s to=%s", p->id,
		    vp_state_names[p->state], vp_state_names[st]);
	p->state = st;
}

/* ---- Domains: concurrency and start rate ------------------------------- */

static void
dom_kick_cb(evutil_socket_t fd, short what, void *arg)
{
	dom_kick(arg);
}

static struct verify_dom *
dom_get(const char *name)
{
	struct verify_dom *d;

	for (d = V.doms; d != NULL; d = d->next)
		if (strcmp(d->name, name) == 0)
			return d;
	if ((d = calloc(1, sizeof(*d))) == NULL)
		return NULL;
	if (mx_strlcpy(d->name, name, sizeof(d->name)) == -1 ||
	    (d->ev_kick = evtimer_new(mxd->base, dom_kick_cb, d)) == NULL) {
		free(d);
		return NULL;
	}
	d->wait_tail = &d->wait_head;
	d->tokens = VERIFY_BURST;
	d->refilled = mx_now_usec();
	/* Domains are few (registered ones with a verify policy): kept until stop. */
	d->next = V.doms;
	V.doms = d;
	return d;
}

static void
dom_wait_remove(struct verify_dom *d, struct verify_probe *p)
{
	struct verify_probe **pp;

	for (pp = &d->wait_head; *pp != NULL; pp = &(*pp)->wnext)
		if (*pp == p) {
			*pp = p->wnext;
			if (*pp == NULL)
				d->wait_tail = pp;
			d->nwaiting--;
			p->wnext = NULL;
			return;
		}
}

static void probe_route(struct verify_probe *p);

/* Start waiting probes while the domain's limits allow. */
static void
dom_kick(struct verify_dom *d)
{
	uint64_t now = mx_now_usec();
	struct verify_probe *p;

	d->tokens += (double)(now - d->refilled) * VERIFY_RATE / (double)USEC;
	if (d->tokens > VERIFY_BURST)
		d->tokens = VERIFY_BURST;
	d->refilled = now;
	while (d->wait_head != NULL && d->active < VERIFY_DOMAIN_ACTIVE && d->tokens >= 1.0) {
		p = d->wait_head;
		dom_wait_remove(d, p);
		d->tokens -= 1.0;
		d->active++;
		probe_route(p);
	}
	if (d->wait_head != NULL && d->active < VERIFY_DOMAIN_ACTIVE &&
	    !evtimer_pending(d->ev_kick, NULL)) {
		struct timeval tv = { 0, (suseconds_t)((1.0 - d->tokens) * USEC / VERIFY_RATE) + 1 };

		evtimer_add(d->ev_kick, &tv);
	}
}

/* ---- Answers ------------------------------------------------------------- */

/* Tell every waiting query; cache what is worth caching.  Once only. */
static void
probe_answer(struct verify_probe *p, enum verify_status st, const char *reply)
{
	const struct conf *cf = mxd->conf;
	struct verify_result res;
	struct verify_query *q;
	char safe[LOG_SAFE_MAX];
	uint64_t ms = (mx_now_usec() - p->started) / 1000u;

	if (p->answered)
		return;
	p->answered = true;
	if (p->state == VP_WAITING)
		dom_wait_remove(p->dom, p);
	else
		p->dom->active--;
	switch (st) {
	case VERIFY_ACCEPTED:
		(*c_accepted)++;
		if (cf->verify_positive_ttl > 0)
			(void)verify_cache_put(V.cache, p->addr, false,
			    mx_time_now() + cf->verify_positive_ttl);
		break;
	case VERIFY_REFUSED:
		(*c_refused)++;
		if (cf->verify_negative_ttl > 0)
			(void)verify_cache_put(V.cache, p->addr, true,
			    mx_time_now() + cf->verify_negative_ttl);
		break;
	case VERIFY_TEMPFAIL:
		(*c_tempfail)++;
		break;
	case VERIFY_UNAVAILABLE:
		(*c_unavailable)++;
		break;
	}
	log_info("event=verify_probe probe=%08x domain=%s rcpt=<%s> result=%s peer=%s "
	    "duration_ms=%llu reply=\"%s\"", p->id, p->dom->name,
	    log_safe(safe, sizeof(safe), p->addr, strlen(p->addr)), verify_status_name(st),
	    p->peer[0] ? p->peer : "-", (unsigned long long)ms, reply);
	res.status = st;
	res.reply = reply;
	/* One at a time: a callback may cancel other queries of this probe. */
	while ((q = p->waiters) != NULL) {
		p->waiters = q->next;
		if (p->waiters != NULL)
			p->waiters->prev = NULL;
		q->cb(&res, q->arg);
		free(q);
	}
	dom_kick(p->dom);
}

/* The probe's deadline: unanswered, it is unavailable; answered, stop waiting for QUIT. */
static void
probe_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct verify_probe *p = arg;

	if (!p->answered) {
		probe_error(p, "no answer within %llds (state %s%s%s)",
		    mxd->conf->verify_timeout, vp_state_names[p->state],
		    p->last_error[0] ? "; " : "", p->last_error);
		probe_answer(p, VERIFY_UNAVAILABLE, p->last_error);
	}
	probe_free(p);
}

/* ---- Routing: relay target, MX, addresses ------------------------------ */

static void
probe_route_done(struct verify_probe *p)
{
	struct relay_mx_plan *pl = p->plan;

	relay_mx_plan_route(pl, V.ours, V.nours, mxd->conf->allow_private_targets, p->allow_v4,
	    p->port);
	if (pl->result != RELAY_MX_ROUTE || pl->ntargets == 0) {
		probe_error(p, "no route: %s", pl->text[0] ? pl->text : "no usable address");
		probe_answer(p, VERIFY_UNAVAILABLE, p->last_error);
		probe_free(p);
		return;
	}
	p->target = 0;
	probe_try(p);
}

static void
probe_addr_cb(const struct dns_result *res, void *arg)
{
	struct verify_addr_query *aq = arg;
	struct verify_probe *p = aq->p;

	aq->q = NULL;
	relay_mx_host_addrs(p->plan, aq->i, res->status, res->addrs, res->naddrs);
	if (--p->addr_pending == 0)
		probe_route_done(p);
}

static void
probe_resolve_hosts(struct verify_probe *p)
{
	struct relay_mx_plan *pl = p->plan;
	size_t i, n = pl->nhosts;

	if (pl->result != RELAY_MX_ROUTE) {
		probe_route_done(p);
		return;
	}
	/* Counted up front, so an answer cannot finish the route while we still ask. */
	p->addr_pending = n + 1;
	for (i = 0; i < n; i++) {
		struct addr_hostport hp;
		struct sockaddr_storage ss;
		socklen_t sl;
		const char *err;

		if (addr_parse_hostport(pl->hosts[i].name, 0, &hp, &err) == 0 &&
		    hp.kind != ADDR_HOST_NAME && addr_hostport_sockaddr(&hp, &ss, &sl) == 0) {
			relay_mx_host_addrs(pl, i, DNS_OK, &ss, 1);
			p->addr_pending--;
			continue;
		}
		p->aq[i].p = p;
		p->aq[i].i = i;
		/* A as well: a host with one of our IPv4 addresses is us. */
		p->aq[i].q = dns_lookup_addrs(mxd->dns, pl->hosts[i].name, true, true,
		    VERIFY_DNS_TIMEOUT, probe_addr_cb, &p->aq[i]);
		if (p->aq[i].q == NULL) {
			relay_mx_host_addrs(pl, i, DNS_ERROR, NULL, 0);
			p->addr_pending--;
		}
	}
	if (--p->addr_pending == 0)
		probe_route_done(p);
}

static void
probe_mx_cb(const struct dns_result *res, void *arg)
{
	struct verify_probe *p = arg;
	struct relay_mx_record recs[DNS_RR_MAX];
	size_t n = 0;

	p->q_mx = NULL;
	if (res->status == DNS_OK && res->answer != NULL)
		n = relay_mx_records(res->answer, recs, DNS_RR_MAX);
	relay_mx_plan_mx(p->plan, p->d.name, res->status, recs, n, mxd->conf->hostname,
	    verify_rng, NULL);
	probe_resolve_hosts(p);
}

static void
probe_route(struct verify_probe *p)
{
	struct addr_hostport hp;
	int r;

	probe_enter(p, VP_ROUTING);
	if ((p->plan = calloc(1, sizeof(*p->plan))) == NULL) {
		probe_answer(p, VERIFY_UNAVAILABLE, "out of memory");
		probe_free(p);
		return;
	}
	p->allow_v4 = mxd->conf->relay_allow_ipv4;
	p->port = (uint16_t)mxd->conf->relay_mx_port;
	r = domain_relay_target(&p->d, &hp);
	if (r == 0) {
		relay_mx_plan_explicit(p->plan, p->d.name, hp.host);
		p->port = hp.port != 0 ? hp.port : 25;
		probe_resolve_hosts(p);
		return;
	}
	if (r == -1) {
		probe_answer(p, VERIFY_UNAVAILABLE, "the domain has no usable relay target");
		probe_free(p);
		return;
	}
	p->q_mx = dns_lookup_mx(mxd->dns, p->d.name, VERIFY_DNS_TIMEOUT, probe_mx_cb, p);
	if (p->q_mx == NULL) {
		relay_mx_plan_mx(p->plan, p->d.name, DNS_ERROR, NULL, 0, mxd->conf->hostname,
		    verify_rng, NULL);
		probe_resolve_hosts(p);
	}
}

/* ---- The SMTP dialogue ------------------------------------------------------ */

static int MX_PRINTF(2, 3)
probe_cmd(struct verify_probe *p, const char *fmt, ...)
{
	char line[VERIFY_CMD_MAX];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(line)) {
		errno = EMSGSIZE;
		return -1;
	}
	return io_write(p->io, line, (size_t)n);
}

/* This target failed before an answer: try the next one, or give up. */
static void
probe_next_target(struct verify_probe *p)
{
	if (p->io != NULL)
		io_free(&p->io);
	log_info("event=verify_target_failed probe=%08x peer=%s error=\"%s\"", p->id, p->peer,
	    p->last_error);
	p->target++;
	p->tls_skip = false;
	if (p->target < p->plan->ntargets) {
		probe_try(p);
		return;
	}
	probe_answer(p, VERIFY_UNAVAILABLE, p->last_error);
	probe_free(p);
}

static void
probe_send_mail(struct verify_probe *p)
{
	const unsigned char *a;
	bool utf8 = false;

	for (a = (const unsigned char *)p->addr; *a != '\0'; a++)
		if (*a >= 0x80)
			utf8 = true;
	if (probe_cmd(p, "MAIL FROM:<postmaster@%s>%s\r\n", mxd->conf->hostname,
	    utf8 && (p->ehlo.ext & RELAY_EXT_SMTPUTF8) ? " SMTPUTF8" : "") == -1) {
		probe_error(p, "cannot send MAIL: %s", strerror(errno));
		probe_next_target(p);
		return;
	}
	probe_enter(p, VP_MAIL);
}

/* EHLO (or HELO) done: STARTTLS when offered, then MAIL. */
static void
probe_greeted(struct verify_probe *p)
{
	if (!p->tls && !p->tls_skip && (p->ehlo.ext & RELAY_EXT_STARTTLS) && V.creds != NULL) {
		if (probe_cmd(p, "STARTTLS\r\n") == -1) {
			probe_error(p, "cannot send STARTTLS: %s", strerror(errno));
			probe_next_target(p);
			return;
		}
		probe_enter(p, VP_STARTTLS);
		return;
	}
	if (!p->tls && p->d.relay_tls == REG_TLS_REQUIRE) {
		probe_error(p, "TLS is required, but %s did not offer STARTTLS", p->peer);
		probe_next_target(p);
		return;
	}
	probe_send_mail(p);
}

static void
probe_reply(struct verify_probe *p, const struct relay_reply *r)
{
	char sum[RELAY_REPLY_SUMMARY_MAX];
	size_t discarded = 0;
	int cls = r->code / 100;

	relay_reply_summary(r, sum, sizeof(sum));
	switch (p->state) {
	case VP_GREETING:
		if (cls != 2) {
			probe_error(p, "greeting: %s", sum);
			probe_next_target(p);
			return;
		}
		if (probe_cmd(p, "EHLO %s\r\n", mxd->conf->hostname) == -1)
			goto send_failed;
		probe_enter(p, VP_EHLO);
		return;
	case VP_EHLO:
	case VP_EHLO_TLS:
		if (cls == 2) {
			relay_ehlo_parse(r, &p->ehlo);
			probe_greeted(p);
			return;
		}
		if (p->state == VP_EHLO_TLS) {
			probe_error(p, "EHLO after STARTTLS: %s", sum);
			probe_next_target(p);
			return;
		}
		if (probe_cmd(p, "HELO %s\r\n", mxd->conf->hostname) == -1)
			goto send_failed;
		probe_enter(p, VP_HELO);
		return;
	case VP_HELO:
		if (cls != 2) {
			probe_error(p, "HELO: %s", sum);
			probe_next_target(p);
			return;
		}
		memset(&p->ehlo, 0, sizeof(p->ehlo));
		probe_greeted(p);
		return;
	case VP_STARTTLS:
		if (r->code != 220) {
			if (p->d.relay_tls == REG_TLS_REQUIRE) {
				probe_error(p, "TLS is required, but STARTTLS failed: %s", sum);
				probe_next_target(p);
				return;
			}
			probe_send_mail(p);
			return;
		}
		probe_enter(p, VP_HANDSHAKE);
		io_set_handshake_timeout(p->io, (int)mxd->conf->verify_timeout);
		if (io_start_tls_client(p->io, V.creds, p->plan->targets[p->target].name,
		    &discarded) == -1) {
			probe_error(p, "cannot start TLS: %s", io_error_string(p->io));
			probe_next_target(p);
			return;
		}
		if (discarded > 0)
			log_warnx("event=verify_starttls_plaintext_discarded probe=%08x peer=%s "
			    "bytes=%zu", p->id, p->peer, discarded);
		return;
	case VP_MAIL:
		if (cls != 2) {
			/* The primary refuses our probes: this says nothing about the recipient. */
			probe_error(p, "MAIL: %s", sum);
			probe_next_target(p);
			return;
		}
		if (probe_cmd(p, "RCPT TO:<%s>\r\n", p->addr) == -1)
			goto send_failed;
		probe_enter(p, VP_RCPT);
		return;
	case VP_RCPT: {
		struct timeval tv = { VERIFY_QUIT_SECS, 0 };

		probe_answer(p, cls == 2 ? VERIFY_ACCEPTED : cls == 5 ? VERIFY_REFUSED :
		    VERIFY_TEMPFAIL, sum);
		/* Answered: what is left is politeness, on a short leash. */
		evtimer_add(p->timer, &tv);
		if (probe_cmd(p, "RSET\r\n") == -1) {
			probe_free(p);
			return;
		}
		probe_enter(p, VP_RSET);
		return;
	}
	case VP_RSET:
		if (probe_cmd(p, "QUIT\r\n") == -1) {
			probe_free(p);
			return;
		}
		probe_enter(p, VP_QUIT);
		return;
	case VP_QUIT:
		probe_free(p);
		return;
	default:
		probe_error(p, "unexpected reply in state %s: %s", vp_state_names[p->state], sum);
		probe_next_target(p);
		return;
	}
send_failed:
	probe_error(p, "cannot send: %s", strerror(errno));
	probe_next_target(p);
}

static void
probe_read(struct verify_probe *p)
{
	struct evbuffer *in;
	enum relay_reply_result rr;
	unsigned char *data;
	size_t len, used;

	while (p->io != NULL && (len = evbuffer_get_length(in = io_input(p->io))) > 0) {
		if (len > RELAY_REPLY_LINE_MAX)
			len = RELAY_REPLY_LINE_MAX;
		if ((data = evbuffer_pullup(in, (ev_ssize_t)len)) == NULL) {
			probe_error(p, "out of memory");
			probe_next_target(p);
			return;
		}
		rr = relay_reply_feed(&p->rp, data, len, &used, &p->reply);
		io_drain(p->io, used);
		if (rr == RELAY_REPLY_BAD) {
			probe_error(p, "malformed reply from %s: %s", p->peer,
			    p->rp.error != NULL ? p->rp.error : "?");
			if (p->answered)
				probe_free(p);
			else
				probe_next_target(p);
			return;
		}
		if (rr == RELAY_REPLY_MORE)
			continue;
		/*
		 * We never pipeline: a reply while none is due, or more octets
		 * behind this one, would answer a command not yet sent.
		 */
		if (p->state == VP_CONNECT || p->state == VP_HANDSHAKE ||
		    evbuffer_get_length(in) > 0) {
			probe_error(p, "%s spoke out of turn", p->peer);
			if (p->answered)
				probe_free(p);
			else
				probe_next_target(p);
			return;
		}
		/* A handler may free the probe: nothing of it is used after this. */
		probe_reply(p, &p->reply);
		return;
	}
}

static void
probe_io_event(struct io *io, enum io_event ev, void *arg)
{
	struct verify_probe *p = arg;

	switch (ev) {
	case IO_EV_CONNECTED:
		probe_enter(p, VP_GREETING);
		return;
	case IO_EV_DATA:
		probe_read(p);
		return;
	case IO_EV_DRAINED:
		return;
	case IO_EV_TLS_READY:
		p->tls = true;
		/* Nothing learnt before TLS counts after it. */
		memset(&p->ehlo, 0, sizeof(p->ehlo));
		if (probe_cmd(p, "EHLO %s\r\n", mxd->conf->hostname) == -1) {
			probe_error(p, "cannot send EHLO: %s", strerror(errno));
			probe_next_target(p);
			return;
		}
		probe_enter(p, VP_EHLO_TLS);
		return;
	case IO_EV_CLOSED:
	case IO_EV_TIMEOUT:
	case IO_EV_ERROR:
		if (p->answered) {
			probe_free(p);
			return;
		}
		probe_error(p, "%s: %s (state %s)", p->peer, ev == IO_EV_CLOSED ?
		    "connection closed" : io_error_string(io), vp_state_names[p->state]);
		if (p->state == VP_HANDSHAKE && p->d.relay_tls != REG_TLS_REQUIRE && !p->tls_skip) {
			/* Opportunistic TLS that fails: this host again in plaintext, like the relay. */
			log_info("event=verify_tls_failed probe=%08x peer=%s error=\"%s\" "
			    "retry=plaintext", p->id, p->peer, p->last_error);
			io_free(&p->io);
			p->tls_skip = true;
			probe_try(p);
			return;
		}
		probe_next_target(p);
		return;
	}
}

/* Connect to the current target. */
static void
probe_try(struct verify_probe *p)
{
	static const struct io_callbacks cb = { probe_io_event };
	const struct relay_mx_target *t = &p->plan->targets[p->target];
	char a[ADDR_STR_MAX], ip[ADDR_STR_MAX];

	addr_format((const struct sockaddr *)&t->ss, a, sizeof(a));
	addr_format_ip((const struct sockaddr *)&t->ss, ip, sizeof(ip));
	/* "mx.example[[2001:db8::25]:25]", or the address alone for a literal relay host. */
	if (strcmp(t->name, ip) == 0 ||
	    mx_snprintf(p->peer, sizeof(p->peer), "%s[%s]", t->name, a) == -1)
		mx_strlcpy(p->peer, a, sizeof(p->peer));
	relay_reply_init(&p->rp);
	memset(&p->ehlo, 0, sizeof(p->ehlo));
	p->tls = false;
	probe_enter(p, VP_CONNECT);
	p->io = io_connect(mxd->base, (const struct sockaddr *)&t->ss, t->sslen,
	    (int)mxd->conf->relay_connect_timeout, &cb, p);
	if (p->io == NULL) {
		probe_error(p, "cannot connect to %s: %s", p->peer, strerror(errno));
		probe_next_target(p);
		return;
	}
	/* The probe's own timer bounds the whole dialogue. */
	io_set_read_deadline(p->io, (int)mxd->conf->verify_timeout, 0);
	io_set_write_timeout(p->io, (int)mxd->conf->verify_timeout);
}

/* ---- Probes and queries --------------------------------------------------- */

static void
probe_free(struct verify_probe *p)
{
	struct verify_query *q;
	size_t i;

	if (!p->answered)
		probe_answer(p, VERIFY_UNAVAILABLE, "probe ended");
	/* Queries still attached (none, after probe_answer) would dangle. */
	while ((q = p->waiters) != NULL) {
		p->waiters = q->next;
		free(q);
	}
	dns_cancel(&p->q_mx);
	for (i = 0; i < RELAY_MX_HOSTS_MAX; i++)
		dns_cancel(&p->aq[i].q);
	if (p->io != NULL)
		io_free(&p->io);
	if (p->timer != NULL)
		event_free(p->timer);
	free(p->plan);
	if (p->prev != NULL)
		p->prev->next = p->next;
	else
		V.probes = p->next;
	if (p->next != NULL)
		p->next->prev = p->prev;
	V.nprobes--;
	free(p);
}

int
verify_cached(const char *addr, bool *refused)
{
	if (!V.running || verify_cache_get(V.cache, addr, mx_time_now(), refused) != 1)
		return 0;
	(*c_hits)++;
	return 1;
}

struct verify_query *
verify_start(const struct domain *d, const char *addr, verify_cb cb, void *arg)
{
	struct verify_probe *p;
	struct verify_query *q;
	struct verify_dom *vd;
	struct timeval tv;

	if (!V.running) {
		errno = ENXIO;
		return NULL;
	}
	if ((q = calloc(1, sizeof(*q))) == NULL)
		return NULL;
	q->cb = cb;
	q->arg = arg;
	/* Someone asks about this address already: wait for the same answer. */
	for (p = V.probes; p != NULL; p = p->next)
		if (!p->answered && strcmp(p->addr, addr) == 0)
			break;
	if (p == NULL) {
		if ((vd = dom_get(d->name)) == NULL) {
			free(q);
			errno = ENOMEM;
			return NULL;
		}
		if (vd->nwaiting >= VERIFY_DOMAIN_WAITING) {
			(*c_busy)++;
			free(q);
			errno = EAGAIN;
			return NULL;
		}
		if ((p = calloc(1, sizeof(*p))) == NULL ||
		    mx_strlcpy(p->addr, addr, sizeof(p->addr)) == -1 ||
		    (p->timer = evtimer_new(mxd->base, probe_timer_cb, p)) == NULL) {
			free(p);
			free(q);
			errno = ENOMEM;
			return NULL;
		}
		p->id = ++V.next_id;
		p->d = *d;
		p->dom = vd;
		p->started = mx_now_usec();
		p->next = V.probes;
		if (V.probes != NULL)
			V.probes->prev = p;
		V.probes = p;
		V.nprobes++;
		tv.tv_sec = (time_t)mxd->conf->verify_timeout;
		tv.tv_usec = 0;
		evtimer_add(p->timer, &tv);
		(*c_probes)++;
		*vd->wait_tail = p;
		vd->wait_tail = &p->wnext;
		vd->nwaiting++;
		/* Started from the loop: an answer never comes from inside this call. */
		if (!evtimer_pending(vd->ev_kick, NULL)) {
			struct timeval now = { 0, 0 };

			evtimer_add(vd->ev_kick, &now);
		}
	}
	q->p = p;
	q->next = p->waiters;
	if (p->waiters != NULL)
		p->waiters->prev = q;
	p->waiters = q;
	return q;
}

void
verify_cancel(struct verify_query **qp)
{
	struct verify_query *q = *qp;

	if (q == NULL)
		return;
	if (q->prev != NULL)
		q->prev->next = q->next;
	else
		q->p->waiters = q->next;
	if (q->next != NULL)
		q->next->prev = q->prev;
	free(q);
	*qp = NULL;
}

/* ---- Module -------------------------------------------------------------- */

/* Our addresses, so that a primary that turns out to be us is never asked (a loop). */
static void
verify_find_ours(void)
{
	V.nours = (size_t)listen_our_addresses(mxd->conf, V.ours, VERIFY_OURS_MAX);
}

static void
verify_load_creds(void)
{
	struct tls_creds *nc;
	char err[256];

	if ((nc = tls_creds_client(mxd->conf->relay_tls_priority, NULL, err, sizeof(err))) ==
	    NULL) {
		log_warnx("event=verify_tls_unavailable error=\"%s\"", err);
		return;
	}
	tls_creds_unref(&V.creds);
	V.creds = nc;
}

static int
verify_start_module(void)
{
	uint64_t seed;

	c_probes = stats_counter("verify.probes");
	c_hits = stats_counter("verify.cache_hits");
	c_accepted = stats_counter("verify.accepted");
	c_refused = stats_counter("verify.refused");
	c_tempfail = stats_counter("verify.tempfail");
	c_unavailable = stats_counter("verify.unavailable");
	c_busy = stats_counter("verify.busy");
	mx_random(&seed, sizeof(seed));
	if ((V.cache = verify_cache_new(VERIFY_CACHE_MAX, seed)) == NULL)
		return -1;
	verify_find_ours();
	verify_load_creds();
	V.running = true;
	return 0;
}

static void
verify_reload(void)
{
	verify_find_ours();
	verify_load_creds();
}

static void
verify_stop(void)
{
	struct verify_dom *d, *dn;

	if (!V.running)
		return;
	while (V.probes != NULL)
		probe_free(V.probes);
	for (d = V.doms; d != NULL; d = dn) {
		dn = d->next;
		event_free(d->ev_kick);
		free(d);
	}
	V.doms = NULL;
	verify_cache_free(&V.cache);
	tls_creds_unref(&V.creds);
	V.running = false;
}

static int
verify_status(struct mx_buf *json)
{
	size_t waiting = 0;
	struct verify_dom *d;

	for (d = V.doms; d != NULL; d = d->next)
		waiting += d->nwaiting;
	return mx_buf_printf(json, "\"verify\":{\"cached\":%zu,\"probes\":%zu,\"waiting\":%zu}",
	    V.cache != NULL ? verify_cache_count(V.cache) : 0, V.nprobes, waiting);
}

const struct daemon_module verify_module = {
	.name = "verify",
	.start = verify_start_module,
	.reload = verify_reload,
	.stop = verify_stop,
	.status = verify_status,
};
