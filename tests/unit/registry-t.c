/* Unit tests for domain validation, the SQLite registry and the routing table. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "basic.h"
#include "registry.h"

static int
count_cb(const struct domain *d, void *arg)
{
	(*(int *)arg)++;
	return 0;
}

int
main(void)
{
	char dir[] = "/tmp/registry-t.XXXXXX", spec[256], err[512];
	struct registry *r, *ro;
	struct domain d, got;
	struct domain_table *t;
	const struct domain *m;
	struct addr_hostport hp;
	const char *e;
	int n;

	plan_lazy();
	if (mkdtemp(dir) == NULL)
		bail("mkdtemp");
	snprintf(spec, sizeof(spec), "sqlite:%s/registry.db", dir);

	domain_init(&d, "example.test");
	ok(domain_set_backend(&d, "[2001:db8::10]", &e) == 0, "backend IPv6 literal");
	ok(domain_set_backend(&d, "[2001:db8::10]:993", &e) == -1, "backend with a port refused");
	ok(domain_set_service(&d, FRONT_IMAPS, "imap.example.test:10993", &e) == 0,
	    "per-service override");
	ok(domain_set_service(&d, FRONT_POP3S, "imap.example.test", &e) == -1,
	    "override without a port refused");
	ok(domain_set_relay(&d, "[2001:db8::25]", &e) == 0 && strcmp(d.relay, "[2001:db8::25]:25") == 0,
	    "relay gets port 25");
	ok(domain_set_proxy(&d, "v3", &e) == -1, "proxy v3 refused");
	ok(domain_set_proxy(&d, "v2", &e) == 0 && d.proxy == REG_PROXY_V2, "proxy v2");
	ok(domain_set_spf(&d, "reject", &e) == 0, "spf reject");
	ok(domain_set_size_limit(&d, "25M", &e) == 0 && d.size_limit == 25ULL << 20, "size limit");
	ok(domain_set_lifetime(&d, "30s", &e) == -1, "lifetime below a minute refused");
	ok(domain_set_milters(&d, "a,,b", &e) == -1, "empty milter name refused");
	ok(domain_set_milters(&d, "rspamd,dkim", &e) == 0, "milter list");
	ok(domain_service_target(&d, FRONT_IMAPS, &hp) == 0 && hp.port == 10993,
	    "service override wins");
	ok(domain_service_target(&d, FRONT_SUBMISSIONS, &hp) == 0 && hp.port == 465 &&
	    strcmp(hp.host, "2001:db8::10") == 0, "backend with the default port");

	r = registry_open(spec, 0, err, sizeof(err));
	ok(r != NULL, "registry created");
	if (r == NULL)
		bail("%s", err);
	ok(registry_domain_add(r, &d, err, sizeof(err)) == 0, "domain added");
	ok(registry_domain_add(r, &d, err, sizeof(err)) == -1 && strstr(err, "already") != NULL,
	    "duplicate add refused");
	ok(registry_domain_get(r, "example.test", &got, err, sizeof(err)) == 0 &&
	    memcmp(&got, &d, sizeof(d)) == 0, "record round trip");
	ok(registry_domain_get(r, "nope.test", &got, err, sizeof(err)) == 1, "missing domain");
	ok(registry_domain_del(r, "nope.test", err, sizeof(err)) == 1, "deleting a missing domain");
	d.proxy = REG_PROXY_V1;
	ok(registry_domain_update(r, &d, err, sizeof(err)) == 0, "update");
	strcpy(got.name, "Bad Name");
	ok(registry_domain_add(r, &got, err, sizeof(err)) == -1, "invalid record refused");
	domain_init(&got, "tld");
	ok(registry_domain_add(r, &got, err, sizeof(err)) == -1, "single-label domain refused");
	domain_init(&got, "a.example.test");
	ok(registry_domain_add(r, &got, err, sizeof(err)) == 0, "sub-domain added");
	ok(registry_recipient_add(r, "example.test", "user@example.test", err, sizeof(err)) == 0,
	    "recipient added");
	ok(registry_recipient_add(r, "nope.test", "user@nope.test", err, sizeof(err)) == -1,
	    "recipient for an unregistered domain refused");
	is_int(1, registry_recipient_check(r, "example.test", "user@example.test"), "listed");
	is_int(0, registry_recipient_check(r, "example.test", "other@example.test"), "not listed");

	ro = registry_open(spec, REGISTRY_RDONLY, err, sizeof(err));
	ok(ro != NULL, "read-only handle");
	n = 0;
	registry_domain_foreach(ro, count_cb, &n, err, sizeof(err));
	is_int(2, n, "two domains");
	is_int(0, registry_changed(ro), "no change seen yet");
	domain_init(&got, "other.test");
	registry_domain_add(r, &got, err, sizeof(err));
	is_int(1, registry_changed(ro), "another connection's commit is seen");
	is_int(0, registry_changed(ro), "and only once");

	t = domain_table_load(ro, err, sizeof(err));
	ok(t != NULL && domain_table_count(t) == 3, "table of three");
	m = domain_table_match(t, "IMAP.Example.Test.", 18);
	ok(m != NULL && strcmp(m->name, "example.test") == 0, "SNI under a domain matches");
	m = domain_table_match(t, "x.a.example.test", 16);
	ok(m != NULL && strcmp(m->name, "a.example.test") == 0, "longest suffix wins");
	ok(domain_table_match(t, "example.test.attacker.tld", 25) == NULL, "no unanchored match");
	ok(domain_table_match(t, "notexample.test", 15) == NULL, "no partial-label match");
	ok(domain_table_match(t, "test", 4) == NULL, "parent of a domain does not match");
	ok(domain_table_match(t, "a\x01.example.test", 16) == NULL, "control byte refused");
	ok(domain_table_match(t, "127.0.0.1", 9) == NULL, "IP literal refused");
	ok(domain_table_exact(t, "example.test", 12) != NULL, "exact match");
	m = domain_table_exact(t, "example.test", 12);
	{
		const struct domain_route *rt = domain_table_route(m, FRONT_IMAPS);

		ok(rt != NULL && strcmp(rt->text, "imap.example.test:10993") == 0 && rt->salen == 0,
		    "route to a host name is precomputed, to be resolved");
		rt = domain_table_route(m, FRONT_POP3S);
		ok(rt != NULL && strcmp(rt->text, "[2001:db8::10]:995") == 0 &&
		    rt->salen == sizeof(struct sockaddr_in6), "route to a literal has its sockaddr");
		m = domain_table_exact(t, "a.example.test", 14);
		ok(domain_table_route(m, FRONT_IMAPS) == NULL, "no backend, no route");
	}
	ok(domain_table_exact(t, "sub.example.test", 16) == NULL, "exact refuses sub-domains");
	domain_table_unref(&t);
	ok(t == NULL, "unref clears the pointer");

	ok(registry_domain_del(r, "example.test", err, sizeof(err)) == 0, "delete");
	is_int(0, registry_recipient_check(r, "example.test", "user@example.test"),
	    "recipients deleted with the domain");
	registry_close(&ro);
	registry_close(&r);
	ok(r == NULL, "close clears the pointer");
	ok(registry_open("postgres:foo", 0, err, sizeof(err)) == NULL, "unknown backend refused");
	snprintf(spec, sizeof(spec), "rm -rf %s", dir);
	if (system(spec) != 0)
		diag("could not remove %s", dir);
	return 0;
}
