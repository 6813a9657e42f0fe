/*
 * Tests for next-hop selection: tables of MX lists (ourselves at various
 * preferences, null MX, implicit MX, duplicates, ties shuffled by a fixed
 * rng), then address filtering (our addresses, private ranges, IPv4 policy,
 * ordering, ports) and the temporary failures when nothing is usable.
 */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "basic.h"
#include "relay_mx.h"
#include "util.h"

static struct relay_mx_plan mp;

/* rng that always answers 0, and one that makes Fisher-Yates keep the order. */
static uint32_t
rng_zero(void *arg)
{
	return 0;
}

static uint32_t
rng_seq(void *arg)
{
	uint32_t *state = arg;

	*state = *state * 1103515245u + 12345u;
	return *state >> 8;
}

static uint32_t
rng_keep(void *arg)
{
	/* r = i + rng % (k - i + 1) == k when rng returns k - i: no swap. */
	size_t *next = arg;

	return (uint32_t)(*next)--;
}

static struct sockaddr_storage
sa(const char *text)
{
	struct sockaddr_storage ss;

	memset(&ss, 0, sizeof(ss));
	if (strchr(text, ':') != NULL) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

		s6->sin6_family = AF_INET6;
		if (inet_pton(AF_INET6, text, &s6->sin6_addr) != 1)
			bail("bad address %s", text);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;

		s4->sin_family = AF_INET;
		if (inet_pton(AF_INET, text, &s4->sin_addr) != 1)
			bail("bad address %s", text);
	}
	return ss;
}

static const char *
target_str(size_t i)
{
	static char buf[400];
	char ip[INET6_ADDRSTRLEN];
	const struct relay_mx_target *t = &mp.targets[i];
	unsigned int port;

	if (t->ss.ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&t->ss;

		inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
		port = ntohs(s6->sin6_port);
	} else {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)&t->ss;

		inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
		port = ntohs(s4->sin_port);
	}
	snprintf(buf, sizeof(buf), "%s %s %u", t->name, ip, port);
	return buf;
}

/* "name/pref name/pref ..." of the plan's hosts. */
static const char *
hosts_str(void)
{
	static char buf[1024];
	size_t i, o = 0;

	buf[0] = '\0';
	for (i = 0; i < mp.nhosts && o < sizeof(buf); i++)
		o += (size_t)snprintf(buf + o, sizeof(buf) - o, "%s%s/%u", i ? " " : "",
		    mp.hosts[i].name, mp.hosts[i].pref);
	return buf;
}

struct mx_case {
	const char *what;
	enum dns_status status;
	struct relay_mx_record recs[6];
	size_t nrecs;
	const char *ours;
	enum relay_mx_result result;
	const char *enh;
	const char *hosts;	/* with rng_zero */
};

static const struct mx_case mx_cases[] = {
	{ "we are backup behind a primary", DNS_OK,
	  { { 5, "primary.example.com" }, { 10, "mx2.edge.net" } }, 2,
	  "mx2.edge.net", RELAY_MX_ROUTE, "", "primary.example.com/5" },
	{ "worse MXes dropped too", DNS_OK,
	  { { 20, "backup3.other.net" }, { 5, "primary.example.com" }, { 10, "mx2.edge.net" },
	    { 10, "peer.other.net" } }, 4,
	  "mx2.edge.net", RELAY_MX_ROUTE, "", "primary.example.com/5" },
	{ "we are the best: loop", DNS_OK,
	  { { 5, "MX2.Edge.Net." }, { 10, "primary.example.com" } }, 2,
	  "mx2.edge.net", RELAY_MX_BOUNCE, "5.4.6", "" },
	{ "we tie with the best: loop", DNS_OK,
	  { { 10, "primary.example.com" }, { 10, "mx2.edge.net" } }, 2,
	  "mx2.edge.net.", RELAY_MX_BOUNCE, "5.4.6", "" },
	{ "we are the only MX", DNS_OK,
	  { { 0, "mx2.edge.net" } }, 1,
	  "mx2.edge.net", RELAY_MX_BOUNCE, "5.4.6", "" },
	{ "listed twice, lowest counts", DNS_OK,
	  { { 30, "mx2.edge.net" }, { 20, "b.example.com" }, { 10, "mx2.edge.net" },
	    { 5, "a.example.com" } }, 4,
	  "mx2.edge.net", RELAY_MX_ROUTE, "", "a.example.com/5" },
	{ "null MX", DNS_OK,
	  { { 0, "." } }, 1,
	  "mx2.edge.net", RELAY_MX_BOUNCE, "5.1.10", "" },
	{ "null MX at another preference", DNS_OK,
	  { { 10, "." } }, 1,
	  "mx2.edge.net", RELAY_MX_BOUNCE, "5.1.10", "" },
	{ "root exchange among others is ignored", DNS_OK,
	  { { 0, "." }, { 10, "primary.example.com" } }, 2,
	  "mx2.edge.net", RELAY_MX_ROUTE, "", "primary.example.com/10" },
	{ "only root exchanges", DNS_OK,
	  { { 0, "." }, { 10, "." } }, 2,
	  "mx2.edge.net", RELAY_MX_TEMPFAIL, "4.4.4", "" },
	{ "no MX: implicit MX", DNS_NODATA,
	  { { 0, NULL } }, 0,
	  "mx2.edge.net", RELAY_MX_ROUTE, "", "example.com/0" },
	{ "empty OK answer: implicit MX", DNS_OK,
	  { { 0, NULL } }, 0,
	  "mx2.edge.net", RELAY_MX_ROUTE, "", "example.com/0" },
	{ "no such domain", DNS_NXDOMAIN,
	  { { 0, NULL } }, 0,
	  "mx2.edge.net", RELAY_MX_BOUNCE, "5.1.2", "" },
	{ "lookup failed", DNS_TEMPFAIL,
	  { { 0, NULL } }, 0,
	  "mx2.edge.net", RELAY_MX_TEMPFAIL, "4.4.3", "" },
	{ "bad answer", DNS_ERROR,
	  { { 0, NULL } }, 0,
	  "mx2.edge.net", RELAY_MX_TEMPFAIL, "4.4.3", "" },
	{ "duplicates merged at the better preference", DNS_OK,
	  { { 20, "a.example.com" }, { 10, "A.example.com." }, { 30, "mx2.edge.net" } }, 3,
	  "mx2.edge.net", RELAY_MX_ROUTE, "", "a.example.com/10" },
	{ "no hostname: no self check", DNS_OK,
	  { { 10, "mx2.edge.net" }, { 5, "a.example.com" } }, 2,
	  NULL, RELAY_MX_ROUTE, "", "a.example.com/5 mx2.edge.net/10" },
	{ "sorted, ties shuffled by rng", DNS_OK,
	  { { 20, "z.example.com" }, { 10, "a.example.com" }, { 10, "b.example.com" },
	    { 10, "c.example.com" }, { 30, "mx2.edge.net" } }, 5,
	  "mx2.edge.net", RELAY_MX_ROUTE, "",
	  "b.example.com/10 c.example.com/10 a.example.com/10 z.example.com/20" },
};

static void
test_mx_table(void)
{
	size_t i;

	for (i = 0; i < MX_NELEM(mx_cases); i++) {
		const struct mx_case *c = &mx_cases[i];

		relay_mx_plan_mx(&mp, "example.com", c->status, c->recs, c->nrecs, c->ours,
		    rng_zero, NULL);
		is_int(c->result, mp.result, "%s: result", c->what);
		is_string(c->enh, mp.status, "%s: status %s", c->what, mp.text);
		is_string(c->hosts, hosts_str(), "%s: hosts", c->what);
	}

	relay_mx_plan_mx(&mp, "example.com", DNS_OK, mx_cases[2].recs, 2, "mx2.edge.net",
	    rng_zero, NULL);
	is_string("mail for example.com loops back to myself", mp.text, "5.4.6 text");
	is_int(554, mp.code, "5.4.6 code");
	relay_mx_plan_mx(&mp, "example.com", DNS_OK, mx_cases[6].recs, 1, NULL,
	    rng_zero, NULL);
	is_int(556, mp.code, "null MX code 556 (RFC 7505)");
}

static void
test_shuffle(void)
{
	static const struct relay_mx_record recs[] = {
		{ 10, "a.example.com" }, { 10, "b.example.com" }, { 10, "c.example.com" },
		{ 5, "p.example.com" }, { 10, "d.example.com" },
	};
	size_t next;
	uint32_t state = 1;
	int i, first[4] = { 0, 0, 0, 0 };

	next = 3;
	relay_mx_plan_mx(&mp, "example.com", DNS_OK, recs, MX_NELEM(recs), NULL,
	    rng_keep, &next);
	is_string("p.example.com/5 a.example.com/10 b.example.com/10 c.example.com/10 "
	    "d.example.com/10", hosts_str(), "rng that keeps order: input order");

	/* Over many seeds every tie member gets to go first, and p stays first. */
	for (i = 0; i < 400; i++) {
		relay_mx_plan_mx(&mp, "example.com", DNS_OK, recs, MX_NELEM(recs), NULL,
		    rng_seq, &state);
		if (mp.nhosts != 5 || strcmp(mp.hosts[0].name, "p.example.com") != 0)
			break;
		first[mp.hosts[1].name[0] - 'a']++;
	}
	is_int(400, i, "the better preference always first");
	ok(first[0] > 0 && first[1] > 0 && first[2] > 0 && first[3] > 0,
	    "each of the tie goes first sometimes (%d %d %d %d)", first[0], first[1],
	    first[2], first[3]);
}

static void
test_caps(void)
{
	struct relay_mx_record recs[40];
	char names[40][32];
	size_t i;

	for (i = 0; i < 40; i++) {
		snprintf(names[i], sizeof(names[i]), "mx%zu.example.com", i);
		recs[i].pref = (uint16_t)(100 - i);
		recs[i].name = names[i];
	}
	relay_mx_plan_mx(&mp, "example.com", DNS_OK, recs, 40, NULL, rng_zero, NULL);
	is_int(RELAY_MX_HOSTS_MAX, (long long)mp.nhosts, "hosts capped");
	is_string("mx39.example.com", mp.hosts[0].name, "best kept first");
	is_int(61 + RELAY_MX_HOSTS_MAX - 1, mp.hosts[RELAY_MX_HOSTS_MAX - 1].pref,
	    "the best %d kept", RELAY_MX_HOSTS_MAX);
}

static void
test_route(void)
{
	static const struct relay_mx_record recs[] = {
		{ 5, "primary.example.com" }, { 10, "second.example.com" },
		{ 20, "mx2.edge.net" },
	};
	struct sockaddr_storage ours[2], a[4];

	ours[0] = sa("2a01:4f8::25");
	ours[1] = sa("5.6.7.8");

	/* Primary v6-only, second has both; no v4 allowed. */
	relay_mx_plan_mx(&mp, "example.com", DNS_OK, recs, 3, "mx2.edge.net", rng_zero, NULL);
	is_string("primary.example.com/5 second.example.com/10", hosts_str(), "two hosts");
	a[0] = sa("2a00:1450::1");
	relay_mx_host_addrs(&mp, 0, DNS_OK, a, 1);
	a[0] = sa("1.2.3.4");
	a[1] = sa("2a00:1450::2");
	relay_mx_host_addrs(&mp, 1, DNS_OK, a, 2);
	relay_mx_plan_route(&mp, ours, 2, false, false, 25);
	is_int(RELAY_MX_ROUTE, mp.result, "routed");
	is_int(2, (long long)mp.ntargets, "two targets");
	is_string("primary.example.com 2a00:1450::1 25", target_str(0), "primary first");
	is_string("second.example.com 2a00:1450::2 25", target_str(1), "then second's AAAA");
	is_int(1, (long long)mp.refused, "its A refused");

	/* With v4 allowed, A comes after the AAAA of the same host. */
	relay_mx_plan_mx(&mp, "example.com", DNS_OK, recs, 3, "mx2.edge.net", rng_zero, NULL);
	a[0] = sa("1.2.3.4");
	a[1] = sa("::ffff:1.2.3.5");
	a[2] = sa("2a00:1450::2");
	relay_mx_host_addrs(&mp, 0, DNS_OK, a, 3);
	relay_mx_host_addrs(&mp, 1, DNS_NXDOMAIN, NULL, 0);
	relay_mx_plan_route(&mp, ours, 2, false, true, 2525);
	is_int(3, (long long)mp.ntargets, "three targets");
	is_string("primary.example.com 2a00:1450::2 2525", target_str(0), "AAAA first");
	is_string("primary.example.com 1.2.3.4 2525", target_str(1), "then A");
	is_string("primary.example.com 1.2.3.5 2525", target_str(2),
	    "IPv4-mapped given as IPv4");

	/* The second MX has one of our addresses: it is us, and it is not the best. */
	relay_mx_plan_mx(&mp, "example.com", DNS_OK, recs, 3, NULL, rng_zero, NULL);
	is_int(3, (long long)mp.nhosts, "no hostname: three hosts");
	a[0] = sa("2a00:1450::1");
	relay_mx_host_addrs(&mp, 0, DNS_OK, a, 1);
	a[0] = sa("2a01:4f8::25");
	relay_mx_host_addrs(&mp, 1, DNS_OK, a, 1);
	a[0] = sa("2a00:1450::9");
	relay_mx_host_addrs(&mp, 2, DNS_OK, a, 1);
	relay_mx_plan_route(&mp, ours, 2, false, false, 25);
	is_int(10, mp.our_pref, "our preference found by address");
	is_int(1, (long long)mp.ntargets, "only the better host remains");
	is_string("primary.example.com 2a00:1450::1 25", target_str(0), "the primary");

	/* The best MX resolves to us (IPv4-mapped form of our v4): loop. */
	relay_mx_plan_mx(&mp, "example.com", DNS_OK, recs, 3, NULL, rng_zero, NULL);
	a[0] = sa("::ffff:5.6.7.8");
	relay_mx_host_addrs(&mp, 0, DNS_OK, a, 1);
	relay_mx_plan_route(&mp, ours, 2, true, true, 25);
	is_int(RELAY_MX_BOUNCE, mp.result, "best MX is us by address: bounce");
	is_string("5.4.6", mp.status, "5.4.6");

	/* Private addresses refused unless allowed. */
	relay_mx_plan_mx(&mp, "example.com", DNS_OK, recs, 3, "mx2.edge.net", rng_zero, NULL);
	a[0] = sa("::1");
	a[1] = sa("fd00::1");
	a[2] = sa("fe80::1");
	a[3] = sa("10.0.0.1");
	relay_mx_host_addrs(&mp, 0, DNS_OK, a, 4);
	relay_mx_host_addrs(&mp, 1, DNS_NODATA, NULL, 0);
	relay_mx_plan_route(&mp, ours, 2, false, true, 25);
	is_int(RELAY_MX_TEMPFAIL, mp.result, "only private addresses: tempfail");
	is_string("4.4.4", mp.status, "4.4.4 %s", mp.text);
	is_int(4, (long long)mp.refused, "four refused");

	relay_mx_plan_mx(&mp, "example.com", DNS_OK, recs, 3, "mx2.edge.net", rng_zero, NULL);
	relay_mx_host_addrs(&mp, 0, DNS_OK, a, 4);
	relay_mx_plan_route(&mp, ours, 2, true, false, 25);
	is_int(RELAY_MX_ROUTE, mp.result, "allow_private: routed");
	is_int(3, (long long)mp.ntargets, "three v6 targets");
	is_string("primary.example.com ::1 25", target_str(0), "loopback allowed");

	/* Our own address is never a target, even with allow_private. */
	relay_mx_plan_explicit(&mp, "example.com", "relay.example.com");
	a[0] = sa("2a01:4f8::25");
	relay_mx_host_addrs(&mp, 0, DNS_OK, a, 1);
	relay_mx_plan_route(&mp, ours, 2, true, true, 25);
	is_int(RELAY_MX_BOUNCE, mp.result, "explicit relay host that is us: bounce");
	is_string("5.4.6", mp.status, "5.4.6 for explicit host");

	/* A better MX with no address, a worse one usable: use the worse one. */
	relay_mx_plan_mx(&mp, "example.com", DNS_OK, recs, 3, "mx2.edge.net", rng_zero, NULL);
	relay_mx_host_addrs(&mp, 0, DNS_NODATA, NULL, 0);
	a[0] = sa("2a00:1450::2");
	relay_mx_host_addrs(&mp, 1, DNS_OK, a, 1);
	relay_mx_plan_route(&mp, ours, 2, false, false, 25);
	is_int(1, (long long)mp.ntargets, "fall through to the next MX");
	is_string("second.example.com 2a00:1450::2 25", target_str(0), "second MX");

	/* No address anywhere: 4.4.4; a lookup failed: 4.4.3. */
	relay_mx_plan_mx(&mp, "example.com", DNS_OK, recs, 3, "mx2.edge.net", rng_zero, NULL);
	relay_mx_host_addrs(&mp, 0, DNS_NODATA, NULL, 0);
	relay_mx_host_addrs(&mp, 1, DNS_NXDOMAIN, NULL, 0);
	relay_mx_plan_route(&mp, ours, 2, false, false, 25);
	is_string("4.4.4", mp.status, "better MXes without addresses: 4.4.4");
	is_int(451, mp.code, "code 451");
	relay_mx_plan_mx(&mp, "example.com", DNS_OK, recs, 3, "mx2.edge.net", rng_zero, NULL);
	relay_mx_host_addrs(&mp, 0, DNS_NODATA, NULL, 0);
	relay_mx_host_addrs(&mp, 1, DNS_TEMPFAIL, NULL, 0);
	relay_mx_plan_route(&mp, ours, 2, false, false, 25);
	is_string("4.4.3", mp.status, "a failed address lookup: 4.4.3");
	is_string("address lookup for second.example.com failed", mp.text, "names it");
	relay_mx_plan_mx(&mp, "example.com", DNS_OK, recs, 3, "mx2.edge.net", rng_zero, NULL);
	relay_mx_plan_route(&mp, ours, 2, false, false, 25);
	is_string("4.4.3", mp.status, "hosts never resolved: 4.4.3");

	/* A decided mp stays decided. */
	relay_mx_plan_mx(&mp, "example.com", DNS_NXDOMAIN, NULL, 0, NULL, rng_zero, NULL);
	relay_mx_plan_route(&mp, ours, 2, true, true, 25);
	is_string("5.1.2", mp.status, "route after a decision changes nothing");
	is_int(-1, relay_mx_host_addrs(&mp, 0, DNS_OK, a, 1), "no host to resolve");

	relay_mx_plan_explicit(&mp, "example.com", "");
	is_string("4.3.5", mp.status, "empty relay host: 4.3.5");
	relay_mx_plan_explicit(&mp, NULL, "relay.example.com");
	is_string("4.3.5", mp.status, "no domain: 4.3.5");
}

static void
test_helpers(void)
{
	struct dns_answer *ans;
	struct relay_mx_record recs[4];
	struct sockaddr_storage ours[1], x;

	ok(relay_mx_name_eq("MX.Example.com.", "mx.example.com"), "name_eq case and dot");
	ok(!relay_mx_name_eq("mx.example.com", "mx.example.co"), "name_eq differs");
	ok(!relay_mx_name_eq("mx.example.com..", "mx.example.com"), "only one dot ignored");
	ok(!relay_mx_name_eq(NULL, "a"), "name_eq NULL");
	ok(!relay_mx_name_eq("", ""), "empty names never equal");

	ours[0] = sa("192.0.2.25");
	x = sa("::ffff:192.0.2.25");
	ok(relay_mx_addr_is_ours((struct sockaddr *)&x, ours, 1), "mapped equals v4");
	x = sa("192.0.2.26");
	ok(!relay_mx_addr_is_ours((struct sockaddr *)&x, ours, 1), "other v4");

	if ((ans = calloc(1, sizeof(*ans))) == NULL)
		bail("out of memory");
	ans->count = 2;
	ans->rr[0].type = DNS_T_MX;
	ans->rr[0].mx_pref = 10;
	snprintf(ans->rr[0].name, sizeof(ans->rr[0].name), "a.example.com");
	ans->rr[1].type = DNS_T_MX;
	ans->rr[1].mx_pref = 20;
	snprintf(ans->rr[1].name, sizeof(ans->rr[1].name), "b.example.com");
	is_int(2, (long long)relay_mx_records(ans, recs, 4), "records from answer");
	ok(recs[1].pref == 20 && strcmp(recs[1].name, "b.example.com") == 0,
	    "second record");
	is_int(1, (long long)relay_mx_records(ans, recs, 1), "records capped");
	free(ans);
}

int
main(void)
{
	plan_lazy();
	test_mx_table();
	test_shuffle();
	test_caps();
	test_route();
	test_helpers();
	return 0;
}
