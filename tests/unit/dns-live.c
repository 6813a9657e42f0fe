/*
 * Helper for tests/integration/dns-t: DNS on a real event loop against a
 * real dnsmasq on 127.0.0.1:PORT (started by the script with the zone
 * below), plus a UDP socket of our own that never answers.  Prints TAP.
 *
 *   dns-live PORT
 *
 * The dnsmasq zone it expects:
 *   --local=/test/ --local-ttl=60
 *   --mx-host=mxr.test,primary.mxr.test,10  --host-record=primary.mxr.test,::1
 *   --cname=alias.mxr.test,primary.mxr.test
 *   --mx-host=nullmx.test,.,0  --txt-record=spf-fail.test,"v=spf1 -all"
 *   --mx-host=self.test,mx1.self.test,10  --mx-host=self.test,mx2.edge.test,20
 *   --host-record=mx1.self.test,::1  --host-record=mx2.edge.test,::2
 *   --dns-rr=_25._tcp.primary.mxr.test,52,030101 + 32 octets 0xab
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "basic.h"
#include "dns.h"
#include "relay_mx.h"

static struct event_base *base;

/* What the last callback saw, copied out (the result dies with the call). */
struct seen {
	int calls;
	int during_lookup;
	enum dns_status status;
	char why[128];
	int rrtype;
	struct dns_answer answer;
	int has_answer;
	size_t naddrs;
	struct sockaddr_storage addrs[DNS_ADDRS_MAX];
};

static struct seen seen;
static int in_lookup;

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
record_cb(const struct dns_result *res, void *arg)
{
	int *done = arg;

	seen.calls++;
	if (in_lookup)
		seen.during_lookup++;
	seen.status = res->status;
	snprintf(seen.why, sizeof(seen.why), "%s", res->why);
	seen.rrtype = res->rrtype;
	seen.has_answer = res->answer != NULL;
	if (res->answer != NULL)
		memcpy(&seen.answer, res->answer, sizeof(seen.answer));
	seen.naddrs = res->naddrs;
	if (res->naddrs > 0)
		memcpy(seen.addrs, res->addrs, res->naddrs * sizeof(res->addrs[0]));
	if (done != NULL)
		*done = 1;
}

static void
expire_cb(evutil_socket_t fd, short what, void *arg)
{
	*(int *)arg = 1;
}

/* Run the loop until *flag is set or max seconds have passed. */
static void
wait_for(int *flag, double max)
{
	struct timeval tv;
	struct event *guard;
	int expired = 0;

	tv.tv_sec = (time_t)max;
	tv.tv_usec = (suseconds_t)((max - (double)tv.tv_sec) * 1e6);
	if ((guard = evtimer_new(base, expire_cb, &expired)) == NULL)
		bail("evtimer_new");
	evtimer_add(guard, &tv);
	while (!*flag && !expired)
		event_base_loop(base, EVLOOP_ONCE);
	event_free(guard);
}

static struct dns_query *
start(struct dns *dns, const char *name, int type, int timeout, int *done)
{
	struct dns_query *q;

	*done = 0;
	memset(&seen, 0, sizeof(seen));
	in_lookup = 1;
	if (type == DNS_T_ADDRS)
		q = dns_lookup_addrs(dns, name, true, true, timeout, record_cb, done);
	else
		q = dns_lookup(dns, name, type, timeout, record_cb, done);
	in_lookup = 0;
	if (q == NULL)
		bail("dns_lookup %s: %s", name, strerror(errno));
	return q;
}

static void
lookup(struct dns *dns, const char *name, int type)
{
	int done;

	(void)start(dns, name, type, 5, &done);
	wait_for(&done, 8);
	if (!done)
		diag("no callback for %s", name);
}

static const char *
addr_text(const struct sockaddr_storage *ss)
{
	static char buf[INET6_ADDRSTRLEN];

	if (ss->ss_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, buf,
		    sizeof(buf));
	else if (ss->ss_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, buf,
		    sizeof(buf));
	else
		snprintf(buf, sizeof(buf), "?");
	return buf;
}

static void
test_records(struct dns *dns)
{
	unsigned char digest[32];

	lookup(dns, "mxr.test", DNS_T_MX);
	is_int(1, seen.calls, "MX: one callback");
	is_int(0, seen.during_lookup, "MX: not called inside dns_lookup");
	is_int(DNS_OK, seen.status, "MX mxr.test: ok (%s)", seen.why);
	ok(seen.has_answer && seen.answer.count == 1 && seen.answer.rr[0].mx_pref == 10,
	    "MX mxr.test: one record at 10");
	is_string("primary.mxr.test", seen.answer.count ? seen.answer.rr[0].name : "",
	    "MX exchange");

	/* Now in unbound's cache (TTL 60): answered inside ub_resolve_event. */
	lookup(dns, "mxr.test", DNS_T_MX);
	is_int(DNS_OK, seen.status, "MX again, from the cache");
	is_int(0, seen.during_lookup, "cached answer still delivered from the loop");

	lookup(dns, "primary.mxr.test", DNS_T_AAAA);
	is_int(DNS_OK, seen.status, "AAAA primary.mxr.test: ok");
	ok(seen.answer.count == 1 &&
	    memcmp(seen.answer.rr[0].addr, &in6addr_loopback, 16) == 0, "AAAA is ::1");

	lookup(dns, "primary.mxr.test", DNS_T_A);
	is_int(DNS_NODATA, seen.status, "A primary.mxr.test: nodata");

	lookup(dns, "alias.mxr.test", DNS_T_AAAA);
	is_int(DNS_OK, seen.status, "AAAA through a CNAME: ok");
	is_string("primary.mxr.test", seen.answer.canon, "canonical name");
	is_int(1, seen.answer.ncname, "one CNAME hop");

	lookup(dns, "spf-fail.test", DNS_T_TXT);
	is_int(DNS_OK, seen.status, "TXT spf-fail.test: ok");
	is_string("v=spf1 -all", seen.answer.count ?
	    (const char *)dns_rr_data(&seen.answer, &seen.answer.rr[0]) : "", "TXT text");

	lookup(dns, "_25._tcp.primary.mxr.test", DNS_T_TLSA);
	is_int(DNS_OK, seen.status, "TLSA: ok (%s)", seen.why);
	memset(digest, 0xab, sizeof(digest));
	ok(seen.answer.count == 1 && seen.answer.rr[0].tlsa_usage == 3 &&
	    seen.answer.rr[0].tlsa_selector == 1 && seen.answer.rr[0].tlsa_mtype == 1,
	    "TLSA 3 1 1");
	is_blob(digest, sizeof(digest), dns_rr_data(&seen.answer, &seen.answer.rr[0]),
	    seen.answer.count ? seen.answer.rr[0].data_len : 0, "TLSA digest");

	lookup(dns, "does-not-exist.test", DNS_T_MX);
	is_int(DNS_NXDOMAIN, seen.status, "unknown name: nxdomain (%s)", seen.why);

	lookup(dns, "primary.mxr.test", DNS_T_ADDRS);
	is_int(DNS_OK, seen.status, "addrs primary.mxr.test: ok");
	is_int(1, (long long)seen.naddrs, "one address");
	is_string("::1", addr_text(&seen.addrs[0]), "the AAAA");
	lookup(dns, "does-not-exist.test", DNS_T_ADDRS);
	is_int(DNS_NXDOMAIN, seen.status, "addrs of unknown name: nxdomain");
	lookup(dns, "spf-fail.test", DNS_T_ADDRS);
	is_int(DNS_NODATA, seen.status, "addrs of a TXT-only name: nodata");

	lookup(dns, "nullmx.test", DNS_T_MX);
	is_int(DNS_OK, seen.status, "MX nullmx.test: ok");
	is_string(".", seen.answer.count ? seen.answer.rr[0].name : "", "null MX exchange");
}

/* MX -> plan -> addresses (started from inside a callback) -> targets. */
struct route {
	struct dns *dns;
	struct relay_mx_plan plan;
	struct dns_query *mxq;
	struct dns_query *aq[RELAY_MX_HOSTS_MAX];
	size_t pending;
	int done;
};

static uint32_t
rng_zero(void *arg)
{
	return 0;
}

static void
route_addrs_cb(const struct dns_result *res, void *arg)
{
	struct route *r = arg;
	size_t i;

	for (i = 0; i < r->plan.nhosts; i++)
		if (strcmp(r->plan.hosts[i].name, res->name) == 0 && r->aq[i] != NULL) {
			r->aq[i] = NULL;
			relay_mx_host_addrs(&r->plan, i, res->status, res->addrs, res->naddrs);
			break;
		}
	if (--r->pending == 0) {
		struct sockaddr_storage ours[1];
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ours[0];

		memset(ours, 0, sizeof(ours));
		s6->sin6_family = AF_INET6;
		s6->sin6_addr.s6_addr[15] = 2;	/* ::2, as mx2.edge.test */
		relay_mx_plan_route(&r->plan, ours, 1, true, false, 25);
		r->done = 1;
	}
}

static void
route_mx_cb(const struct dns_result *res, void *arg)
{
	struct route *r = arg;
	struct relay_mx_record recs[DNS_RR_MAX];
	size_t n = 0, i;

	r->mxq = NULL;
	if (res->answer != NULL)
		n = relay_mx_records(res->answer, recs, DNS_RR_MAX);
	relay_mx_plan_mx(&r->plan, res->name, res->status, recs, n, "mx2.edge.test",
	    rng_zero, NULL);
	if (r->plan.result != RELAY_MX_ROUTE || r->plan.nhosts == 0) {
		r->done = 1;
		return;
	}
	for (i = 0; i < r->plan.nhosts; i++) {
		r->aq[i] = dns_lookup_addrs(r->dns, r->plan.hosts[i].name, true, false, 5,
		    route_addrs_cb, r);
		if (r->aq[i] != NULL)
			r->pending++;
	}
	if (r->pending == 0)
		r->done = 1;
}

static void
test_route(struct dns *dns, const char *domain, const char *want_status,
    const char *want_target)
{
	static struct route r;
	char got[300];

	memset(&r, 0, sizeof(r));
	r.dns = dns;
	r.mxq = dns_lookup_mx(dns, domain, 5, route_mx_cb, &r);
	if (r.mxq == NULL)
		bail("dns_lookup_mx");
	wait_for(&r.done, 10);
	is_string(want_status, r.plan.status, "route %s: status '%s' (%s)", domain,
	    r.plan.status, r.plan.text);
	if (r.plan.ntargets > 0)
		snprintf(got, sizeof(got), "%s [%s]", r.plan.targets[0].name,
		    addr_text(&r.plan.targets[0].ss));
	else
		snprintf(got, sizeof(got), "none");
	is_string(want_target, got, "route %s: first target", domain);
}

static void
test_deadlines(struct event_base *eb)
{
	struct sockaddr_in sin;
	socklen_t slen = sizeof(sin);
	char resolver[64], err[256];
	struct dns *dead;
	struct dns_query *q, *q2;
	double t0, took;
	int fd, done, expired = 0, i;
	struct dns_query *many[20];

	/* A UDP socket that never reads: queries vanish, nothing is refused. */
	if ((fd = socket(AF_INET, SOCK_DGRAM, 0)) == -1)
		bail("socket: %s", strerror(errno));
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == -1 ||
	    getsockname(fd, (struct sockaddr *)&sin, &slen) == -1)
		bail("bind: %s", strerror(errno));
	snprintf(resolver, sizeof(resolver), "127.0.0.1@%u", ntohs(sin.sin_port));
	if ((dead = dns_new(eb, resolver, err, sizeof(err))) == NULL)
		bail("dns_new %s: %s", resolver, err);

	t0 = now();
	(void)start(dead, "mxr.test", DNS_T_MX, 1, &done);
	wait_for(&done, 5);
	took = now() - t0;
	is_int(1, seen.calls, "silent server: one callback");
	is_int(DNS_TEMPFAIL, seen.status, "silent server: tempfail");
	is_string("timeout", seen.why, "reason timeout");
	ok(took >= 0.9 && took < 1.8, "within the 1 s deadline (%.2f s)", took);

	t0 = now();
	(void)start(dead, "primary.mxr.test", DNS_T_ADDRS, 1, &done);
	wait_for(&done, 5);
	took = now() - t0;
	ok(seen.calls == 1 && seen.status == DNS_TEMPFAIL,
	    "addrs from a silent server: one tempfail");
	ok(took < 1.8, "addrs within the deadline (%.2f s)", took);

	/* Cancelled lookups never call back, whether unbound answers or not. */
	q = start(dead, "cancel.test", DNS_T_MX, 1, &done);
	dns_cancel(&q);
	ok(q == NULL, "dns_cancel clears the handle");
	q2 = start(dead, "cancel.test", DNS_T_ADDRS, 1, &done);
	dns_cancel(&q2);
	dns_cancel(&q2);	/* NULL: no-op */
	wait_for(&expired, 1.5);
	is_int(0, seen.calls, "no callback after cancel (silent server)");

	/* Pending lookups dropped by dns_free: no callback, nothing leaks. */
	for (i = 0; i < 20; i++) {
		in_lookup = 1;
		many[i] = (i % 2) ?
		    dns_lookup_addrs(dead, "free.test", true, true, 30, record_cb, NULL) :
		    dns_lookup(dead, "free.test", DNS_T_MX, 30, record_cb, NULL);
		in_lookup = 0;
		if (many[i] == NULL)
			bail("dns_lookup");
	}
	seen.calls = 0;
	dns_free(&dead);
	ok(dead == NULL, "dns_free clears the pointer");
	expired = 0;
	wait_for(&expired, 0.5);
	is_int(0, seen.calls, "no callback after dns_free");
	close(fd);
}

static void
test_cancel_real(struct dns *dns)
{
	struct dns_query *q;
	int done, expired = 0;

	/* Not cached: the answer arrives after the cancel. */
	q = start(dns, "cancel.mxr.test", DNS_T_MX, 5, &done);
	dns_cancel(&q);
	q = start(dns, "mxr.test", DNS_T_MX, 5, &done);	/* cached: already answered */
	dns_cancel(&q);
	q = start(dns, "primary.mxr.test", DNS_T_ADDRS, 5, &done);
	dns_cancel(&q);
	wait_for(&expired, 1.0);
	is_int(0, seen.calls, "no callback after cancel (answering server)");
}

static void
test_api(struct event_base *eb, struct dns *dns)
{
	char err[256];
	struct dns *d;
	struct dns_query *q;
	int done;

	d = dns_new(eb, "not-an-address", err, sizeof(err));
	ok(d == NULL, "bad resolver refused: %s", err);
	d = dns_new(eb, "127.0.0.1@", err, sizeof(err));
	ok(d == NULL, "resolver without port refused: %s", err);
	errno = 0;
	q = dns_lookup(dns, "a..b", DNS_T_A, 5, record_cb, &done);
	ok(q == NULL && errno == EINVAL, "bad name refused");
	q = dns_lookup(dns, "a.test", DNS_T_A, 0, record_cb, &done);
	ok(q == NULL && errno == EINVAL, "zero timeout refused");
	q = dns_lookup_addrs(dns, "a.test", false, false, 5, record_cb, &done);
	ok(q == NULL && errno == EINVAL, "addrs of neither family refused");
}

static void
test_system(struct event_base *eb)
{
	char err[256];
	struct dns *sys;
	FILE *f;
	char line[512];
	int has = 0;

	if ((sys = dns_new(eb, "system", err, sizeof(err))) == NULL) {
		ok(0, "system resolver: %s", err);
		return;
	}
	ok(1, "system resolver created");
	if ((f = fopen("/etc/hosts", "r")) != NULL) {
		while (fgets(line, sizeof(line), f) != NULL)
			if (strncmp(line, "127.0.0.1", 9) == 0 && strstr(line, "localhost"))
				has = 1;
		fclose(f);
	}
	if (!has) {
		skip("/etc/hosts has no 127.0.0.1 localhost");
		skip("/etc/hosts has no 127.0.0.1 localhost");
		dns_free(&sys);
		return;
	}
	/* /etc/hosts data is answered inside ub_resolve_event(). */
	lookup(sys, "localhost", DNS_T_ADDRS);
	ok(seen.status == DNS_OK && seen.during_lookup == 0,
	    "localhost from /etc/hosts, delivered from the loop");
	ok(seen.naddrs >= 1 && strcmp(addr_text(&seen.addrs[seen.naddrs - 1]),
	    "127.0.0.1") == 0, "localhost is 127.0.0.1");
	dns_free(&sys);
}

int
main(int argc, char **argv)
{
	char resolver[64], err[256];
	struct dns *dns;
	long port;

	if (argc != 2 || (port = strtol(argv[1], NULL, 10)) <= 0 || port > 65535)
		skip_all("usage: dns-live PORT (run by tests/integration/dns-t)");
	plan_lazy();
	if ((base = event_base_new()) == NULL)
		bail("event_base_new");
	snprintf(resolver, sizeof(resolver), "127.0.0.1@%ld", port);
	if ((dns = dns_new(base, resolver, err, sizeof(err))) == NULL)
		bail("dns_new %s: %s", resolver, err);

	test_api(base, dns);
	test_records(dns);
	test_cancel_real(dns);
	test_route(dns, "self.test", "", "mx1.self.test [::1]");
	test_route(dns, "nullmx.test", "5.1.10", "none");
	test_route(dns, "primary.mxr.test", "", "primary.mxr.test [::1]");
	test_route(dns, "does-not-exist.test", "5.1.2", "none");
	test_deadlines(base);
	test_system(base);

	dns_free(&dns);
	event_base_free(base);
	return 0;
}
