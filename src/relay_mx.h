/*
 * Next-hop selection for outbound mail (RFC 5321 §5.1, RFC 7505): which
 * hosts, in which order, at which addresses, or why none.  Pure code: the
 * caller does the DNS lookups and hands the answers in.
 *
 * Use:
 *   1. relay_mx_plan_mx() with the domain's MX answer (or
 *      relay_mx_plan_explicit() for a configured relay host).  If
 *      plan->result is not RELAY_MX_ROUTE the decision is final.
 *   2. Look up the addresses of every plan->hosts[i].name (AAAA, and A
 *      where allowed) and give them with relay_mx_host_addrs().
 *   3. relay_mx_plan_route(): drops hosts that turn out to be us, refuses
 *      private and own addresses, and fills plan->targets in the order to
 *      try; or sets a final decision.
 */
#ifndef MXEDGE_RELAY_MX_H
#define MXEDGE_RELAY_MX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "dns_parse.h"

#define RELAY_MX_HOSTS_MAX 16	/* best hosts kept after filtering */
#define RELAY_MX_ADDRS_MAX 8	/* addresses kept per host */
#define RELAY_MX_TARGETS_MAX 32
#define RELAY_MX_TEXT_MAX 256

enum relay_mx_result {
	RELAY_MX_ROUTE = 0,	/* hosts to resolve (step 1) / targets to try (step 3) */
	RELAY_MX_TEMPFAIL,	/* retry later: 4.4.3, 4.4.4 */
	RELAY_MX_BOUNCE,	/* permanent: 5.1.2, 5.1.10, 5.4.6 */
};

/* One MX record as the caller has it. */
struct relay_mx_record {
	uint16_t pref;
	const char *name;
};

struct relay_mx_host {
	uint16_t pref;
	char name[DNS_NAME_BUF];
	bool resolved;			/* relay_mx_host_addrs() was called */
	enum dns_status status;		/* of its address lookup */
	size_t naddrs;
	struct sockaddr_storage addrs[RELAY_MX_ADDRS_MAX];
};

struct relay_mx_target {
	uint16_t pref;
	char name[DNS_NAME_BUF];
	struct sockaddr_storage ss;
	socklen_t sslen;
};

struct relay_mx_plan {
	enum relay_mx_result result;
	int code;			/* SMTP code for logs and DSNs; 0 while routing */
	char status[8];			/* enhanced status code, "" while routing */
	char text[RELAY_MX_TEXT_MAX];	/* why, for logs and DSNs */
	char domain[DNS_NAME_BUF];
	bool explicit_host;		/* a configured relay host, not MX */
	int our_pref;			/* our lowest preference, -1 when not listed */
	size_t nhosts;
	struct relay_mx_host hosts[RELAY_MX_HOSTS_MAX];
	size_t ntargets;
	struct relay_mx_target targets[RELAY_MX_TARGETS_MAX];
	size_t refused;			/* addresses refused: private, ours, or IPv4 */
};

/* Random source for shuffling equal preferences; tests pass a fixed one. */
typedef uint32_t (*relay_mx_rng)(void *arg);

/*
 * Step 1 from the MX lookup of domain.  mx_status is the lookup's status;
 * recs are its records (ignored unless DNS_OK).  our_hostname (may be NULL)
 * is how we appear in MX records.  Outcomes:
 *   TEMPFAIL/ERROR -> 4.4.3;  NXDOMAIN -> 5.1.2;
 *   NODATA or no records -> implicit MX: the domain itself at preference 0;
 *   a single record with exchange "." (null MX, RFC 7505) -> 556 5.1.10;
 *   records at our preference or worse dropped; none left and we were
 *   listed -> 5.4.6 "loops back to myself";
 *   otherwise hosts sorted by preference, equal preferences shuffled with
 *   rng (which must not be NULL), duplicates merged, at most
 *   RELAY_MX_HOSTS_MAX kept.
 */
void relay_mx_plan_mx(struct relay_mx_plan *plan, const char *domain,
    enum dns_status mx_status, const struct relay_mx_record *recs, size_t nrecs,
    const char *our_hostname, relay_mx_rng rng, void *rngarg);

/* Step 1 for a configured relay host (name or address literal). */
void relay_mx_plan_explicit(struct relay_mx_plan *plan, const char *domain,
    const char *host);

/*
 * Step 2: the addresses of plan->hosts[i] (AAAA and A answers together, any
 * order; ports ignored).  Extra addresses beyond RELAY_MX_ADDRS_MAX are
 * dropped.  Returns 0, or -1 when i is out of range.
 */
int relay_mx_host_addrs(struct relay_mx_plan *plan, size_t i, enum dns_status status,
    const struct sockaddr_storage *addrs, size_t naddrs);

/*
 * Step 3.  A host with any of our addresses is us: our preference drops to
 * its preference and hosts at it or worse are discarded (5.4.6 if none is
 * left).  Then each remaining host's addresses become targets, IPv6 before
 * IPv4, IPv4 (and IPv4-mapped IPv6) only with allow_v4, our own addresses
 * never, private/loopback/link-local ones only with allow_private; the port
 * is set on each.  No target at all -> 4.4.3 if an address lookup failed
 * temporarily, else 4.4.4.
 */
void relay_mx_plan_route(struct relay_mx_plan *plan, const struct sockaddr_storage *ours,
    size_t nours, bool allow_private, bool allow_v4, uint16_t port);

/* Host names equal, ignoring case and one trailing dot on either. */
bool relay_mx_name_eq(const char *a, const char *b);

/* sa (IPv4-mapped IPv6 counted as IPv4) is one of ours; ports ignored. */
bool relay_mx_addr_is_ours(const struct sockaddr *sa, const struct sockaddr_storage *ours,
    size_t nours);

/* Take the MX records of a parsed answer, for relay_mx_plan_mx(). */
size_t relay_mx_records(const struct dns_answer *ans, struct relay_mx_record *recs,
    size_t max);

#endif
