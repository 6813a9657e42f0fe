/*
 * Asynchronous DNS on our libevent loop, through libunbound.  Every lookup
 * has a deadline; answers are parsed by dns_parse.  Callbacks always run
 * from the event loop, never from inside dns_lookup*().
 */
#ifndef MXEDGE_DNS_H
#define MXEDGE_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "dns_parse.h"

struct event_base;
struct dns;
struct dns_query;

#define DNS_T_ADDRS 0		/* dns_result.rrtype of a dns_lookup_addrs() */
#define DNS_ADDRS_MAX (2 * DNS_RR_MAX)

struct dns_result {
	enum dns_status status;
	const char *name;		/* as asked */
	int rrtype;
	const char *why;		/* short static reason, "" when DNS_OK */
	/* dns_lookup(): the parsed answer when one was parsed, else NULL. */
	const struct dns_answer *answer;
	/* dns_lookup_addrs(): AAAA addresses first, then A; port 0. */
	size_t naddrs;
	const struct sockaddr_storage *addrs;
};

/*
 * The result and everything it points to are valid only during the call;
 * the query is finished and freed when it returns (forget the handle; do not
 * dns_cancel() it).  A callback may start and cancel other lookups, but must
 * not dns_free() the resolver.
 */
typedef void (*dns_cb)(const struct dns_result *res, void *arg);

/*
 * resolver: "system" (/etc/resolv.conf and /etc/hosts), or "ADDRESS" or
 * "ADDRESS@PORT" of one server to forward every query to (IPv4 or IPv6,
 * loopback allowed).  DNSSEC is not validated.  Returns NULL with a message
 * in err on failure.
 */
struct dns *dns_new(struct event_base *base, const char *resolver, char *err,
    size_t errsize);
/* Pending lookups are dropped; their callbacks are not called. */
void dns_free(struct dns **dnsp);

/*
 * Look up name/rrtype (DNS_T_MX, DNS_T_TXT, ...).  After timeout_sec (>= 1)
 * without an answer the callback gets DNS_TEMPFAIL, why "timeout".  Returns
 * a handle, or NULL with errno EINVAL (bad name, type or timeout) or ENOMEM;
 * then the callback is never called.
 */
struct dns_query *dns_lookup(struct dns *dns, const char *name, int rrtype,
    int timeout_sec, dns_cb cb, void *arg);
struct dns_query *dns_lookup_mx(struct dns *dns, const char *name, int timeout_sec,
    dns_cb cb, void *arg);
struct dns_query *dns_lookup_txt(struct dns *dns, const char *name, int timeout_sec,
    dns_cb cb, void *arg);

/*
 * AAAA and/or A of name, asked in parallel, answered together in
 * res->addrs (AAAA first).  Status: DNS_OK when either gave addresses (the
 * other may have failed); else TEMPFAIL/ERROR if either failed; else
 * NXDOMAIN if the name does not exist; else NODATA.
 */
struct dns_query *dns_lookup_addrs(struct dns *dns, const char *name, bool want_v6,
    bool want_v4, int timeout_sec, dns_cb cb, void *arg);

/* Stop a pending lookup: its callback will not be called.  NULL is fine. */
void dns_cancel(struct dns_query **qp);

#endif
