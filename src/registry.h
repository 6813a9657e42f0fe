/*
 * The domain registry: which domains we accept mail for, where their mail
 * goes, and which backend each SNI name routes to.  One interface, backends
 * behind a table of functions (SQLite now, PostgreSQL later).  Every write is
 * validated first and done in one transaction: a failed change leaves the
 * registry as it was.
 *
 * The daemon never queries the backend per connection: it loads a
 * domain_table snapshot (refcounted, immutable) and swaps it when
 * registry_changed() says another process committed a change.
 */
#ifndef MXEDGE_REGISTRY_H
#define MXEDGE_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "addr.h"
#include "conf.h"
#include "util.h"

enum registry_proxy { REG_PROXY_OFF = 0, REG_PROXY_V1, REG_PROXY_V2 };
enum registry_spf { REG_SPF_OFF = 0, REG_SPF_TAG, REG_SPF_REJECT };
enum registry_rcpt { REG_RCPT_ANY = 0, REG_RCPT_VERIFY, REG_RCPT_LIST };
enum registry_unavail { REG_UNAVAIL_TEMPFAIL = 0, REG_UNAVAIL_ACCEPT };
enum registry_tls { REG_TLS_MAY = 0, REG_TLS_REQUIRE };

#define REG_TARGET_MAX (ADDR_HOST_MAX + 8)	/* "[host]:65535" */
#define REG_MILTERS_MAX 256

struct domain {
	char name[ADDR_DOMAIN_MAX + 1];		/* normalised, lower case */
	char backend[ADDR_HOST_MAX];		/* host or literal, no port; "" = none */
	char service[FRONT_NSERVICES][REG_TARGET_MAX];	/* "host:port" overrides; "" = none */
	char relay[REG_TARGET_MAX];		/* "mx" or "host[:port]" */
	enum registry_proxy proxy;
	enum registry_spf spf;
	enum registry_rcpt recipients;
	enum registry_unavail unavailable;
	enum registry_tls relay_tls;
	unsigned long long size_limit;		/* bytes; 0 = the global limit */
	long long lifetime;			/* seconds; 0 = the global queue_lifetime */
	char milters[REG_MILTERS_MAX];		/* "" = global list, "none", or "a,b" */
	int64_t created;
	int64_t updated;
};

/* Defaults for a new domain: relay "mx", proxy off, spf tag, recipients any. */
void domain_init(struct domain *d, const char *name);

/* Field setters used by the CLI: validate, normalise, store.  0 or -1 with *err. */
int domain_set_backend(struct domain *d, const char *v, const char **err);
int domain_set_service(struct domain *d, enum front_service s, const char *v, const char **err);
int domain_set_relay(struct domain *d, const char *v, const char **err);
int domain_set_proxy(struct domain *d, const char *v, const char **err);
int domain_set_spf(struct domain *d, const char *v, const char **err);
int domain_set_recipients(struct domain *d, const char *v, const char **err);
int domain_set_unavailable(struct domain *d, const char *v, const char **err);
int domain_set_relay_tls(struct domain *d, const char *v, const char **err);
int domain_set_size_limit(struct domain *d, const char *v, const char **err);
int domain_set_lifetime(struct domain *d, const char *v, const char **err);
int domain_set_milters(struct domain *d, const char *v, const char **err);
/* Check a whole record (after loading from storage too). */
int domain_validate(const struct domain *d, const char **err);

const char *registry_proxy_name(enum registry_proxy);
const char *registry_spf_name(enum registry_spf);
const char *registry_rcpt_name(enum registry_rcpt);
const char *registry_unavail_name(enum registry_unavail);
const char *registry_tls_name(enum registry_tls);

/*
 * Where the front sends SERVICE for this domain: the per-service override,
 * else the backend host with the service's default port.  Returns 0, or -1
 * when the domain has no backend for it.
 */
int domain_service_target(const struct domain *d, enum front_service s,
    struct addr_hostport *out);
/* The relay target: returns 1 for "mx" (use MX records), 0 with *out filled, -1 on error. */
int domain_relay_target(const struct domain *d, struct addr_hostport *out);

/* One JSON object for the record, appended to b. */
int domain_to_json(const struct domain *d, struct mx_buf *b);

struct registry;

enum registry_flags {
	REGISTRY_RDONLY = 1 << 0,	/* the daemon: never writes */
};

/* spec is conf->registry ("sqlite:/path/registry.db").  NULL on error with err filled. */
struct registry *registry_open(const char *spec, int flags, char *err, size_t errsize);
void registry_close(struct registry **rp);

/* Each returns 0 on success; -1 with err filled.  get/del return 1 for "no such domain". */
int registry_domain_add(struct registry *r, const struct domain *d, char *err, size_t errsize);
int registry_domain_update(struct registry *r, const struct domain *d, char *err, size_t errsize);
int registry_domain_del(struct registry *r, const char *name, char *err, size_t errsize);
int registry_domain_get(struct registry *r, const char *name, struct domain *out, char *err,
    size_t errsize);
typedef int (*registry_domain_cb)(const struct domain *d, void *arg);	/* non-zero stops */
int registry_domain_foreach(struct registry *r, registry_domain_cb cb, void *arg, char *err,
    size_t errsize);

/* Per-domain recipient list (recipients policy "list"); addresses are local@domain, lower-cased domain. */
int registry_recipient_add(struct registry *r, const char *domain, const char *address,
    char *err, size_t errsize);
int registry_recipient_del(struct registry *r, const char *domain, const char *address,
    char *err, size_t errsize);
typedef int (*registry_recipient_cb)(const char *address, void *arg);
int registry_recipient_foreach(struct registry *r, const char *domain,
    registry_recipient_cb cb, void *arg, char *err, size_t errsize);
/* 1 listed, 0 not listed, -1 error. */
int registry_recipient_check(struct registry *r, const char *domain, const char *address);

/* 1 if another process committed a change since the last call, 0 if not, -1 on error. */
int registry_changed(struct registry *r);

/* The backend table; one per storage. */
struct registry_ops {
	const char *scheme;	/* "sqlite" */
	int (*open)(struct registry *r, const char *location, int flags, char *err, size_t errsize);
	void (*close)(struct registry *r);
	int (*domain_add)(struct registry *r, const struct domain *d, char *err, size_t errsize);
	int (*domain_update)(struct registry *r, const struct domain *d, char *err, size_t errsize);
	int (*domain_del)(struct registry *r, const char *name, char *err, size_t errsize);
	int (*domain_get)(struct registry *r, const char *name, struct domain *out, char *err,
	    size_t errsize);
	int (*domain_foreach)(struct registry *r, registry_domain_cb cb, void *arg, char *err,
	    size_t errsize);
	int (*recipient_add)(struct registry *r, const char *domain, const char *address,
	    char *err, size_t errsize);
	int (*recipient_del)(struct registry *r, const char *domain, const char *address,
	    char *err, size_t errsize);
	int (*recipient_foreach)(struct registry *r, const char *domain,
	    registry_recipient_cb cb, void *arg, char *err, size_t errsize);
	int (*recipient_check)(struct registry *r, const char *domain, const char *address);
	int (*changed)(struct registry *r);
};

extern const struct registry_ops registry_sqlite_ops;

struct registry {
	const struct registry_ops *ops;
	void *backend;		/* the backend's own state */
};

/*
 * An immutable in-memory snapshot of all domains, for lookups on the hot
 * path.  Refcounted: a connection that holds a pointer into it keeps it alive
 * across reloads.
 */
struct domain_table;

struct domain_table *domain_table_load(struct registry *r, char *err, size_t errsize);
struct domain_table *domain_table_ref(struct domain_table *t);
void domain_table_unref(struct domain_table **tp);
size_t domain_table_count(const struct domain_table *t);
/* Exact domain (mail): name is normalised first; NULL if not registered or invalid. */
const struct domain *domain_table_exact(const struct domain_table *t, const char *name,
    size_t len);
/* Domain or any name under it (SNI): "imap.a.example" matches "example" and "a.example", longest wins. */
const struct domain *domain_table_match(const struct domain_table *t, const char *name,
    size_t len);

/* A front route, parsed and formatted once per table load instead of per connection. */
struct domain_route {
	struct addr_hostport hp;
	char text[REG_TARGET_MAX];	/* hp formatted, for logs */
	struct sockaddr_storage sa;	/* IP-literal targets, port set */
	socklen_t salen;		/* 0 when hp is a host name to resolve */
};
/*
 * Where the front sends SERVICE for d, which must have come from a
 * domain_table lookup; NULL when the domain has no backend for it.
 */
const struct domain_route *domain_table_route(const struct domain *d, enum front_service s);

#endif
