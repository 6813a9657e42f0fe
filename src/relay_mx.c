/*
 * Next-hop selection per RFC 5321 §5.1 and RFC 7505.  It owns the rules
 * that keep a backup MX from looping: we recognise ourselves in the MX list
 * by our host name and, once addresses are known, by our addresses, and we
 * never hand mail to a host at our own preference or worse.  It trusts its
 * caller's DNS answers to be parsed already (names are bounded text) but not
 * to be sensible: null MX, loops, private addresses and empty lists all end
 * in a decision with an enhanced status code instead of a target.  Pure
 * code; the only randomness comes from the caller's rng.
 */
#include "config.h"

#include <assert.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "addr.h"
#include "relay_mx.h"
#include "util.h"

static void relay_mx_decide(struct relay_mx_plan *plan, enum relay_mx_result result,
    int code, const char *status, const char *fmt, ...) MX_PRINTF(5, 6);

static void
relay_mx_decide(struct relay_mx_plan *plan, enum relay_mx_result result, int code,
    const char *status, const char *fmt, ...)
{
	va_list ap;
	int n;

	plan->result = result;
	plan->code = code;
	if (mx_strlcpy(plan->status, status, sizeof(plan->status)) == -1)
		plan->status[0] = '\0';
	va_start(ap, fmt);
	n = vsnprintf(plan->text, sizeof(plan->text), fmt, ap);
	va_end(ap);
	/* Only host names go in, so a cut can only shorten a log line. */
	if (n < 0)
		plan->text[0] = '\0';
	else if ((size_t)n >= sizeof(plan->text))
		memcpy(plan->text + sizeof(plan->text) - 4, "...", 4);
}

static int
relay_mx_plan_init(struct relay_mx_plan *plan, const char *domain)
{
	memset(plan, 0, sizeof(*plan));
	plan->result = RELAY_MX_ROUTE;
	plan->our_pref = -1;
	if (domain == NULL || domain[0] == '\0' ||
	    mx_strlcpy(plan->domain, domain, sizeof(plan->domain)) == -1) {
		relay_mx_decide(plan, RELAY_MX_TEMPFAIL, 451, "4.3.5",
		    "no valid domain to route");
		return -1;
	}
	return 0;
}

static bool
relay_mx_is_root(const char *name)
{
	return name == NULL || name[0] == '\0' || strcmp(name, ".") == 0;
}

bool
relay_mx_name_eq(const char *a, const char *b)
{
	size_t alen, blen, i;

	if (a == NULL || b == NULL)
		return false;
	alen = strlen(a);
	blen = strlen(b);
	if (alen > 1 && a[alen - 1] == '.')
		alen--;
	if (blen > 1 && b[blen - 1] == '.')
		blen--;
	if (alen != blen || alen == 0)
		return false;
	for (i = 0; i < alen; i++) {
		unsigned char ca = (unsigned char)a[i], cb = (unsigned char)b[i];

		if (ca >= 'A' && ca <= 'Z')
			ca += 'a' - 'A';
		if (cb >= 'A' && cb <= 'Z')
			cb += 'a' - 'A';
		if (ca != cb)
			return false;
	}
	return true;
}

static int
relay_mx_host_add(struct relay_mx_plan *plan, uint16_t pref, const char *name)
{
	struct relay_mx_host *h;

	if (plan->nhosts >= RELAY_MX_HOSTS_MAX)
		return -1;
	h = &plan->hosts[plan->nhosts];
	memset(h, 0, sizeof(*h));
	h->pref = pref;
	h->status = DNS_TEMPFAIL;
	if (mx_strlcpy(h->name, name, sizeof(h->name)) == -1)
		return -1;
	plan->nhosts++;
	return 0;
}

void
relay_mx_plan_mx(struct relay_mx_plan *plan, const char *domain,
    enum dns_status mx_status, const struct relay_mx_record *recs, size_t nrecs,
    const char *our_hostname, relay_mx_rng rng, void *rngarg)
{
	struct relay_mx_record implicit, cand[DNS_RR_MAX], tmp;
	size_t ncand = 0, i, j, k;

	assert(rng != NULL);
	if (relay_mx_plan_init(plan, domain) == -1)
		return;

	switch (mx_status) {
	case DNS_OK:
		break;
	case DNS_NODATA:
		nrecs = 0;
		break;
	case DNS_NXDOMAIN:
		relay_mx_decide(plan, RELAY_MX_BOUNCE, 550, "5.1.2",
		    "domain %s does not exist", plan->domain);
		return;
	case DNS_TEMPFAIL:
	case DNS_ERROR:
		relay_mx_decide(plan, RELAY_MX_TEMPFAIL, 451, "4.4.3",
		    "MX lookup for %s failed (%s)", plan->domain, dns_status_str(mx_status));
		return;
	}
	if (recs == NULL)
		nrecs = 0;

	if (nrecs == 1 && relay_mx_is_root(recs[0].name)) {
		relay_mx_decide(plan, RELAY_MX_BOUNCE, 556, "5.1.10",
		    "domain %s does not accept mail (null MX)", plan->domain);
		return;
	}
	/* RFC 5321 §5.1: no MX at all means the domain is its own MX at 0. */
	if (nrecs == 0) {
		implicit.pref = 0;
		implicit.name = plan->domain;
		recs = &implicit;
		nrecs = 1;
	}

	if (our_hostname != NULL && our_hostname[0] != '\0') {
		for (i = 0; i < nrecs; i++)
			if (relay_mx_name_eq(recs[i].name, our_hostname) &&
			    (plan->our_pref < 0 || recs[i].pref < plan->our_pref))
				plan->our_pref = recs[i].pref;
	}

	for (i = 0; i < nrecs && ncand < DNS_RR_MAX; i++) {
		if (relay_mx_is_root(recs[i].name) ||
		    strlen(recs[i].name) >= DNS_NAME_BUF)
			continue;
		if (plan->our_pref >= 0 && recs[i].pref >= plan->our_pref)
			continue;
		for (j = 0; j < ncand; j++)
			if (relay_mx_name_eq(cand[j].name, recs[i].name))
				break;
		if (j < ncand) {
			if (recs[i].pref < cand[j].pref)
				cand[j].pref = recs[i].pref;
			continue;
		}
		cand[ncand++] = recs[i];
	}
	if (ncand == 0) {
		if (plan->our_pref >= 0)
			relay_mx_decide(plan, RELAY_MX_BOUNCE, 554, "5.4.6",
			    "mail for %s loops back to myself", plan->domain);
		else
			relay_mx_decide(plan, RELAY_MX_TEMPFAIL, 451, "4.4.4",
			    "no usable MX host for %s", plan->domain);
		return;
	}

	/* Stable insertion sort by preference, then shuffle each tie group. */
	for (i = 1; i < ncand; i++) {
		tmp = cand[i];
		for (j = i; j > 0 && cand[j - 1].pref > tmp.pref; j--)
			cand[j] = cand[j - 1];
		cand[j] = tmp;
	}
	for (i = 0; i < ncand; i = j) {
		for (j = i + 1; j < ncand && cand[j].pref == cand[i].pref; j++)
			;
		for (k = j - 1; k > i; k--) {
			size_t r = i + rng(rngarg) % (k - i + 1);

			tmp = cand[k];
			cand[k] = cand[r];
			cand[r] = tmp;
		}
	}
	for (i = 0; i < ncand && plan->nhosts < RELAY_MX_HOSTS_MAX; i++)
		(void)relay_mx_host_add(plan, cand[i].pref, cand[i].name);
}

void
relay_mx_plan_explicit(struct relay_mx_plan *plan, const char *domain, const char *host)
{
	if (relay_mx_plan_init(plan, domain) == -1)
		return;
	plan->explicit_host = true;
	if (relay_mx_is_root(host) || relay_mx_host_add(plan, 0, host) == -1)
		relay_mx_decide(plan, RELAY_MX_TEMPFAIL, 451, "4.3.5",
		    "relay host for %s is not usable", plan->domain);
}

int
relay_mx_host_addrs(struct relay_mx_plan *plan, size_t i, enum dns_status status,
    const struct sockaddr_storage *addrs, size_t naddrs)
{
	struct relay_mx_host *h;
	size_t k;

	if (i >= plan->nhosts)
		return -1;
	h = &plan->hosts[i];
	h->resolved = true;
	h->status = status;
	h->naddrs = 0;
	for (k = 0; k < naddrs && h->naddrs < RELAY_MX_ADDRS_MAX; k++) {
		if (addrs[k].ss_family != AF_INET && addrs[k].ss_family != AF_INET6)
			continue;
		h->addrs[h->naddrs++] = addrs[k];
	}
	return 0;
}

/*
 * Reduce an address to (4 or 6, 16 octets), IPv4-mapped IPv6 as IPv4, so
 * that equal hosts compare equal whatever socket family they came in.
 */
static int
relay_mx_addr_key(const struct sockaddr *sa, unsigned char key[17])
{
	static const unsigned char mapped[12] = {
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff
	};

	memset(key, 0, 17);
	if (sa->sa_family == AF_INET) {
		key[0] = 4;
		memcpy(key + 1, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
		return 4;
	}
	if (sa->sa_family == AF_INET6) {
		const unsigned char *a =
		    ((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr.s6_addr;

		if (memcmp(a, mapped, sizeof(mapped)) == 0) {
			key[0] = 4;
			memcpy(key + 1, a + 12, 4);
			return 4;
		}
		key[0] = 6;
		memcpy(key + 1, a, 16);
		return 6;
	}
	return -1;
}

bool
relay_mx_addr_is_ours(const struct sockaddr *sa, const struct sockaddr_storage *ours,
    size_t nours)
{
	unsigned char a[17], b[17];
	size_t i;

	if (relay_mx_addr_key(sa, a) == -1)
		return false;
	for (i = 0; i < nours; i++) {
		if (relay_mx_addr_key((const struct sockaddr *)&ours[i], b) == -1)
			continue;
		if (memcmp(a, b, sizeof(a)) == 0)
			return true;
	}
	return false;
}

static void
relay_mx_target_add(struct relay_mx_plan *plan, const struct relay_mx_host *h,
    const unsigned char key[17], uint16_t port)
{
	struct relay_mx_target *t;

	if (plan->ntargets >= RELAY_MX_TARGETS_MAX)
		return;
	t = &plan->targets[plan->ntargets];
	memset(t, 0, sizeof(*t));
	t->pref = h->pref;
	memcpy(t->name, h->name, sizeof(t->name));
	if (key[0] == 4) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&t->ss;

		s4->sin_family = AF_INET;
		s4->sin_port = htons(port);
		memcpy(&s4->sin_addr, key + 1, 4);
		t->sslen = sizeof(*s4);
	} else {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&t->ss;

		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(port);
		memcpy(&s6->sin6_addr, key + 1, 16);
		t->sslen = sizeof(*s6);
	}
	plan->ntargets++;
}

void
relay_mx_plan_route(struct relay_mx_plan *plan, const struct sockaddr_storage *ours,
    size_t nours, bool allow_private, bool allow_v4, uint16_t port)
{
	unsigned char key[17];
	const char *failed = NULL;
	size_t i, k, keep;
	int pass;

	if (plan->result != RELAY_MX_ROUTE)
		return;
	plan->ntargets = 0;
	plan->refused = 0;

	/* A host that has one of our addresses is us, whatever its name. */
	for (i = 0; i < plan->nhosts; i++) {
		const struct relay_mx_host *h = &plan->hosts[i];

		for (k = 0; k < h->naddrs; k++)
			if (relay_mx_addr_is_ours((const struct sockaddr *)&h->addrs[k],
			    ours, nours) &&
			    (plan->our_pref < 0 || h->pref < plan->our_pref))
				plan->our_pref = h->pref;
	}
	if (plan->our_pref >= 0) {
		for (i = 0, keep = 0; i < plan->nhosts; i++)
			if (plan->hosts[i].pref < plan->our_pref)
				plan->hosts[keep++] = plan->hosts[i];
		plan->nhosts = keep;
		if (keep == 0) {
			relay_mx_decide(plan, RELAY_MX_BOUNCE, 554, "5.4.6",
			    "mail for %s loops back to myself", plan->domain);
			return;
		}
	}

	for (i = 0; i < plan->nhosts; i++) {
		const struct relay_mx_host *h = &plan->hosts[i];

		if (!h->resolved || h->status == DNS_TEMPFAIL || h->status == DNS_ERROR)
			if (failed == NULL)
				failed = h->name;
		/* The primary is IPv6-only: its AAAA addresses go first. */
		for (pass = 6; pass >= 4; pass -= 2) {
			for (k = 0; k < h->naddrs; k++) {
				const struct sockaddr *sa =
				    (const struct sockaddr *)&h->addrs[k];

				if (relay_mx_addr_key(sa, key) != pass)
					continue;
				if ((pass == 4 && !allow_v4) ||
				    relay_mx_addr_is_ours(sa, ours, nours) ||
				    (!allow_private && addr_is_private(sa))) {
					plan->refused++;
					continue;
				}
				relay_mx_target_add(plan, h, key, port);
			}
		}
	}
	if (plan->ntargets > 0)
		return;
	if (failed != NULL)
		relay_mx_decide(plan, RELAY_MX_TEMPFAIL, 451, "4.4.3",
		    "address lookup for %s failed", failed);
	else
		relay_mx_decide(plan, RELAY_MX_TEMPFAIL, 451, "4.4.4",
		    "no usable address for %s%s (%zu refused)",
		    plan->explicit_host ? "relay host of " : "MX hosts of ",
		    plan->domain, plan->refused);
}

size_t
relay_mx_records(const struct dns_answer *ans, struct relay_mx_record *recs, size_t max)
{
	size_t i, n = 0;

	for (i = 0; i < ans->count && n < max; i++) {
		if (ans->rr[i].type != DNS_T_MX)
			continue;
		recs[n].pref = ans->rr[i].mx_pref;
		recs[n].name = ans->rr[i].name;
		n++;
	}
	return n;
}
