/*
 * DNS lookups on our event loop.  libunbound runs inside our event_base
 * (ub_ctx_create_event) and hands us the raw answer packet, which we parse
 * ourselves with the bounds-checked dns_parse; nothing of unbound's own
 * parsing reaches the caller.  libunbound has no per-query deadline, so each
 * lookup carries a libevent timer: when it fires first the unbound query is
 * cancelled (in event mode ub_cancel marks it, and unbound then drops it
 * without calling us) and the caller gets DNS_TEMPFAIL.  The same timer is
 * reused to deliver every result from the event loop, because unbound may
 * answer from its cache or from /etc/hosts inside ub_resolve_event(), and a
 * callback must never run inside dns_lookup() or inside unbound.  Every
 * failure ends as a status in the callback; memory for pending lookups is
 * ours and is released by dns_cancel() or dns_free(), never by unbound.
 */
#include "config.h"

#include <sys/queue.h>

#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <unbound.h>
#include <unbound-event.h>

#include "dns.h"

#define DNS_CLASS_IN 1
#define DNS_SEC_BOGUS 1		/* ub_resolve_event's sec argument */

enum dns_kind {
	DNS_KIND_ONE = 0,	/* one unbound query */
	DNS_KIND_ADDRS,		/* an AAAA and an A query, answered together */
};

struct dns {
	struct event_base *base;
	struct ub_ctx *ctx;
	TAILQ_HEAD(dns_queries, dns_query) queries;
	int in_callback;
};

struct dns_query {
	TAILQ_ENTRY(dns_query) entry;
	struct dns *dns;
	enum dns_kind kind;
	char name[DNS_NAME_BUF];
	int rrtype;
	dns_cb cb;
	void *arg;

	/* DNS_KIND_ONE */
	struct event *timer;	/* the deadline, then the deferred delivery */
	int async_id;
	bool ub_pending;	/* unbound still owes us a callback */
	bool submitting;	/* inside ub_resolve_event() */
	bool done;		/* status is final, delivery scheduled */
	enum dns_status status;
	const char *why;
	struct dns_answer *answer;

	/* DNS_KIND_ADDRS: part 0 asks AAAA, part 1 asks A */
	struct dns_query *part[2];
	bool asked[2];
	enum dns_status part_status[2];
	const char *part_why[2];
	size_t nparts[2];
	struct sockaddr_storage *addrs;	/* AAAA at 0, A at DNS_RR_MAX */
};

static void
dns_query_free(struct dns_query *q)
{
	if (q->timer != NULL)
		event_free(q->timer);
	free(q->answer);
	free(q->addrs);
	free(q);
}

/* After this unbound will not call us for q; its own state goes later. */
static void
dns_query_unbound_cancel(struct dns_query *q)
{
	if (!q->ub_pending)
		return;
	(void)ub_cancel(q->dns->ctx, q->async_id);
	q->ub_pending = false;
}

static void
dns_query_deliver(struct dns_query *q)
{
	struct dns *dns = q->dns;
	struct dns_result res;

	memset(&res, 0, sizeof(res));
	res.status = q->status;
	res.name = q->name;
	res.rrtype = q->rrtype;
	res.why = q->why != NULL ? q->why : "";
	res.answer = q->answer;
	TAILQ_REMOVE(&dns->queries, q, entry);
	dns->in_callback++;
	q->cb(&res, q->arg);
	dns->in_callback--;
	dns_query_free(q);
}

static void
dns_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dns_query *q = arg;

	if (!q->done) {
		dns_query_unbound_cancel(q);
		q->status = DNS_TEMPFAIL;
		q->why = "timeout";
		q->done = true;
	}
	dns_query_deliver(q);
}

static const char *
dns_rcode_why(int rcode)
{
	switch (rcode) {
	case 1:
		return "format error";
	case DNS_RCODE_SERVFAIL:
		return "server failure";
	case 4:
		return "not implemented";
	case 5:
		return "refused";
	default:
		return "server error";
	}
}

/* Turn what unbound gave us into a status and, when there is one, an answer. */
static void
dns_query_answer(struct dns_query *q, int rcode, const void *packet, int packet_len,
    int sec)
{
	const char *err;

	if (rcode == DNS_RCODE_NXDOMAIN) {
		q->status = DNS_NXDOMAIN;
		q->why = "no such domain";
		return;
	}
	/* Unbound says not to look at the packet when rcode is set. */
	if (rcode != 0 || packet == NULL || packet_len <= 0) {
		q->status = DNS_TEMPFAIL;
		q->why = dns_rcode_why(rcode);
		return;
	}
	if (sec == DNS_SEC_BOGUS) {
		q->status = DNS_TEMPFAIL;
		q->why = "DNSSEC bogus";
		return;
	}
	if ((q->answer = malloc(sizeof(*q->answer))) == NULL) {
		q->status = DNS_ERROR;
		q->why = "out of memory";
		return;
	}
	if (dns_parse_answer(packet, (size_t)packet_len, q->name, (uint16_t)q->rrtype,
	    q->answer, &err) == -1) {
		free(q->answer);
		q->answer = NULL;
		q->status = DNS_ERROR;
		q->why = err;
		return;
	}
	q->status = dns_answer_status(q->answer);
	switch (q->status) {
	case DNS_OK:
		q->why = "";
		break;
	case DNS_NXDOMAIN:
		q->why = "no such domain";
		break;
	case DNS_NODATA:
		q->why = "no records of that type";
		break;
	case DNS_TEMPFAIL:
		q->why = dns_rcode_why(q->answer->rcode);
		break;
	case DNS_ERROR:
		q->why = "no usable records";
		break;
	}
}

static void
dns_ub_cb(void *mydata, int rcode, void *packet, int packet_len, int sec,
    char *why_bogus, int was_ratelimited)
{
	struct dns_query *q = mydata;
	struct timeval now = { 0, 0 };

	q->ub_pending = false;
	dns_query_answer(q, rcode, packet, packet_len, sec);
	q->done = true;
	/* dns_lookup() schedules the delivery itself when we answer inside it. */
	if (!q->submitting) {
		evtimer_del(q->timer);
		evtimer_add(q->timer, &now);
	}
}

struct dns *
dns_new(struct event_base *base, const char *resolver, char *err, size_t errsize)
{
	struct dns *dns;
	const char *what = NULL;
	int r;

	if ((dns = calloc(1, sizeof(*dns))) == NULL) {
		snprintf(err, errsize, "out of memory");
		return NULL;
	}
	dns->base = base;
	TAILQ_INIT(&dns->queries);
	if ((dns->ctx = ub_ctx_create_event(base)) == NULL) {
		snprintf(err, errsize, "cannot create the libunbound context");
		free(dns);
		return NULL;
	}
	/*
	 * Our server is a forwarder, often on loopback (127.0.0.53, or a test
	 * server), which unbound refuses by default.  No trust anchor is
	 * configured, so the validator would only cost time: iterator alone.
	 * Unbound answers the reserved "test." (RFC 6761) NXDOMAIN itself; we
	 * let the server answer it, as test and staging zones live there.
	 * Likewise the reverse zones of private and documentation ranges
	 * (unblock-lan-zones): the site's resolver may well hold PTRs for its
	 * own networks, and a client's name is asked of it.
	 * ("nodefault" cannot be set through ub_ctx_set_option in 1.17: the
	 * library keeps the whole "name nodefault" string as the name.)
	 */
	if ((r = ub_ctx_set_option(dns->ctx, "do-not-query-localhost:", "no")) != 0)
		what = "do-not-query-localhost";
	else if ((r = ub_ctx_set_option(dns->ctx, "module-config:", "iterator")) != 0)
		what = "module-config";
	else if ((r = ub_ctx_set_option(dns->ctx, "local-zone:", "test. transparent")) != 0)
		what = "local-zone";
	else if ((r = ub_ctx_set_option(dns->ctx, "unblock-lan-zones:", "yes")) != 0)
		what = "unblock-lan-zones";
	else if (resolver == NULL || strcmp(resolver, "system") == 0) {
		if ((r = ub_ctx_resolvconf(dns->ctx, NULL)) != 0)
			what = "/etc/resolv.conf";
		else if ((r = ub_ctx_hosts(dns->ctx, NULL)) != 0)
			what = "/etc/hosts";
	} else if ((r = ub_ctx_set_fwd(dns->ctx, resolver)) != 0)
		what = "resolver";
	if (what != NULL) {
		if (strcmp(what, "resolver") == 0)
			snprintf(err, errsize, "resolver '%s': %s (want system, ADDRESS or "
			    "ADDRESS@PORT)", resolver, ub_strerror(r));
		else
			snprintf(err, errsize, "%s: %s", what, ub_strerror(r));
		ub_ctx_delete(dns->ctx);
		free(dns);
		return NULL;
	}
	return dns;
}

void
dns_free(struct dns **dnsp)
{
	struct dns *dns = *dnsp;
	struct dns_query *q;

	if (dns == NULL)
		return;
	*dnsp = NULL;
	assert(dns->in_callback == 0);
	/*
	 * Cancel before ub_ctx_delete(): unbound's teardown calls every query
	 * it still holds with SERVFAIL and no packet, unless cancelled.
	 */
	while ((q = TAILQ_FIRST(&dns->queries)) != NULL) {
		TAILQ_REMOVE(&dns->queries, q, entry);
		dns_query_unbound_cancel(q);
		dns_query_free(q);
	}
	ub_ctx_delete(dns->ctx);
	free(dns);
}

static struct dns_query *
dns_query_new(struct dns *dns, enum dns_kind kind, const char *name, int rrtype,
    dns_cb cb, void *arg)
{
	unsigned char wire[DNS_WIRE_NAME_MAX];
	struct dns_query *q;

	if (dns == NULL || cb == NULL || name == NULL || strlen(name) >= DNS_NAME_BUF ||
	    dns_name_wire(name, wire) == -1) {
		errno = EINVAL;
		return NULL;
	}
	if ((q = calloc(1, sizeof(*q))) == NULL)
		return NULL;
	q->dns = dns;
	q->kind = kind;
	memcpy(q->name, name, strlen(name) + 1);
	q->rrtype = rrtype;
	q->cb = cb;
	q->arg = arg;
	return q;
}

struct dns_query *
dns_lookup(struct dns *dns, const char *name, int rrtype, int timeout_sec,
    dns_cb cb, void *arg)
{
	struct dns_query *q;
	struct timeval tv = { 0, 0 };
	int r;

	if (rrtype <= 0 || rrtype > 65535 || timeout_sec < 1) {
		errno = EINVAL;
		return NULL;
	}
	if ((q = dns_query_new(dns, DNS_KIND_ONE, name, rrtype, cb, arg)) == NULL)
		return NULL;
	if ((q->timer = evtimer_new(dns->base, dns_timer_cb, q)) == NULL) {
		dns_query_free(q);
		errno = ENOMEM;
		return NULL;
	}
	TAILQ_INSERT_TAIL(&dns->queries, q, entry);

	q->ub_pending = true;
	q->submitting = true;
	r = ub_resolve_event(dns->ctx, q->name, rrtype, DNS_CLASS_IN, q, dns_ub_cb,
	    &q->async_id);
	q->submitting = false;
	if (r != 0) {
		/* Not attached to unbound's mesh: it will never call back. */
		q->ub_pending = false;
		q->status = DNS_ERROR;
		q->why = ub_strerror(r);
		q->done = true;
	}
	if (!q->done)
		tv.tv_sec = timeout_sec;
	evtimer_add(q->timer, &tv);
	return q;
}

struct dns_query *
dns_lookup_mx(struct dns *dns, const char *name, int timeout_sec, dns_cb cb, void *arg)
{
	return dns_lookup(dns, name, DNS_T_MX, timeout_sec, cb, arg);
}

struct dns_query *
dns_lookup_txt(struct dns *dns, const char *name, int timeout_sec, dns_cb cb, void *arg)
{
	return dns_lookup(dns, name, DNS_T_TXT, timeout_sec, cb, arg);
}

static void
dns_addrs_deliver(struct dns_query *p)
{
	struct dns *dns = p->dns;
	struct dns_result res;
	enum dns_status status = DNS_NODATA;
	const char *why = "no addresses";
	bool all_nx = true;
	int i;

	/* The A block moves down to follow the AAAA block. */
	if (p->nparts[1] > 0)
		memmove(&p->addrs[p->nparts[0]], &p->addrs[DNS_RR_MAX],
		    p->nparts[1] * sizeof(p->addrs[0]));
	for (i = 0; i < 2; i++) {
		if (!p->asked[i])
			continue;
		if (p->part_status[i] == DNS_TEMPFAIL || p->part_status[i] == DNS_ERROR) {
			if (status != DNS_TEMPFAIL && status != DNS_ERROR) {
				status = p->part_status[i];
				why = p->part_why[i];
			}
		}
		if (p->part_status[i] != DNS_NXDOMAIN)
			all_nx = false;
	}
	if (p->nparts[0] + p->nparts[1] > 0) {
		status = DNS_OK;
		why = "";
	} else if (all_nx) {
		status = DNS_NXDOMAIN;
		why = "no such domain";
	}

	memset(&res, 0, sizeof(res));
	res.status = status;
	res.name = p->name;
	res.rrtype = DNS_T_ADDRS;
	res.why = why;
	res.naddrs = p->nparts[0] + p->nparts[1];
	res.addrs = p->addrs;
	TAILQ_REMOVE(&dns->queries, p, entry);
	dns->in_callback++;
	p->cb(&res, p->arg);
	dns->in_callback--;
	dns_query_free(p);
}

static void
dns_addrs_part_cb(const struct dns_result *res, void *arg)
{
	struct dns_query *p = arg;
	const struct dns_answer *ans = res->answer;
	int i = res->rrtype == DNS_T_AAAA ? 0 : 1;
	size_t k, n = 0;

	p->part[i] = NULL;	/* freed by our caller when we return */
	p->part_status[i] = res->status;
	p->part_why[i] = res->why;
	for (k = 0; res->status == DNS_OK && ans != NULL && k < ans->count; k++) {
		struct sockaddr_storage *ss = &p->addrs[i * DNS_RR_MAX + n];

		memset(ss, 0, sizeof(*ss));
		if (i == 0 && ans->rr[k].type == DNS_T_AAAA) {
			struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;

			s6->sin6_family = AF_INET6;
			memcpy(&s6->sin6_addr, ans->rr[k].addr, 16);
			n++;
		} else if (i == 1 && ans->rr[k].type == DNS_T_A) {
			struct sockaddr_in *s4 = (struct sockaddr_in *)ss;

			s4->sin_family = AF_INET;
			memcpy(&s4->sin_addr, ans->rr[k].addr, 4);
			n++;
		}
	}
	p->nparts[i] = n;
	if (p->part[0] == NULL && p->part[1] == NULL)
		dns_addrs_deliver(p);
}

struct dns_query *
dns_lookup_addrs(struct dns *dns, const char *name, bool want_v6, bool want_v4,
    int timeout_sec, dns_cb cb, void *arg)
{
	static const int types[2] = { DNS_T_AAAA, DNS_T_A };
	struct dns_query *p;
	int i;

	if (!want_v6 && !want_v4) {
		errno = EINVAL;
		return NULL;
	}
	if ((p = dns_query_new(dns, DNS_KIND_ADDRS, name, DNS_T_ADDRS, cb, arg)) == NULL)
		return NULL;
	if ((p->addrs = calloc(DNS_ADDRS_MAX, sizeof(p->addrs[0]))) == NULL) {
		dns_query_free(p);
		return NULL;
	}
	p->asked[0] = want_v6;
	p->asked[1] = want_v4;
	TAILQ_INSERT_TAIL(&dns->queries, p, entry);
	for (i = 0; i < 2; i++) {
		if (!p->asked[i])
			continue;
		p->part[i] = dns_lookup(dns, name, types[i], timeout_sec,
		    dns_addrs_part_cb, p);
		if (p->part[i] == NULL) {
			int saved = errno;

			dns_cancel(&p);
			errno = saved;
			return NULL;
		}
	}
	return p;
}

void
dns_cancel(struct dns_query **qp)
{
	struct dns_query *q = *qp;

	if (q == NULL)
		return;
	*qp = NULL;
	if (q->kind == DNS_KIND_ADDRS) {
		dns_cancel(&q->part[0]);
		dns_cancel(&q->part[1]);
	} else
		dns_query_unbound_cancel(q);
	TAILQ_REMOVE(&q->dns->queries, q, entry);
	dns_query_free(q);
}
