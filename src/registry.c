/*
 * Domain records: field validation shared by every registry backend, the
 * JSON form the CLI prints, and the generic front end that dispatches to the
 * backend named by the registry spec ("sqlite:/path").  A record is checked
 * here before any backend sees it, so a backend only stores good data.
 */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "registry.h"
#include "util.h"

static const char *const proxy_names[] = { "off", "v1", "v2" };
static const char *const spf_names[] = { "off", "tag", "reject" };
static const char *const rcpt_names[] = { "any", "verify", "list" };
static const char *const unavail_names[] = { "tempfail", "accept" };
static const char *const tls_names[] = { "may", "require" };

#define ENUM_NAME(fn, type, table)					\
const char *								\
fn(type v)								\
{									\
	return (unsigned)v < MX_NELEM(table) ? table[v] : "?";		\
}

ENUM_NAME(registry_proxy_name, enum registry_proxy, proxy_names)
ENUM_NAME(registry_spf_name, enum registry_spf, spf_names)
ENUM_NAME(registry_rcpt_name, enum registry_rcpt, rcpt_names)
ENUM_NAME(registry_unavail_name, enum registry_unavail, unavail_names)
ENUM_NAME(registry_tls_name, enum registry_tls, tls_names)

static int
enum_parse(const char *v, const char *const *names, size_t n, int *out)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (strcmp(v, names[i]) == 0) {
			*out = (int)i;
			return 0;
		}
	return -1;
}

void
domain_init(struct domain *d, const char *name)
{
	memset(d, 0, sizeof(*d));
	mx_strlcpy(d->name, name, sizeof(d->name));
	mx_strlcpy(d->relay, "mx", sizeof(d->relay));
	d->proxy = REG_PROXY_OFF;
	d->spf = REG_SPF_TAG;
	d->recipients = REG_RCPT_ANY;
	d->unavailable = REG_UNAVAIL_TEMPFAIL;
	d->relay_tls = REG_TLS_MAY;
}

int
domain_set_backend(struct domain *d, const char *v, const char **err)
{
	struct addr_hostport hp;

	if (*v == '\0') {
		d->backend[0] = '\0';
		return 0;
	}
	if (addr_parse_hostport(v, 0, &hp, err) == -1)
		return -1;
	if (hp.port != 0) {
		*err = "--backend takes a host without a port (set ports with --imaps, --pop3s, "
		    "--submissions, --submission)";
		return -1;
	}
	addr_hostport_format(&hp, d->backend, sizeof(d->backend));
	return 0;
}

static int
target_set(char *dst, size_t size, const char *v, uint16_t default_port, bool need_port,
    const char **err)
{
	struct addr_hostport hp;

	if (addr_parse_hostport(v, default_port, &hp, err) == -1)
		return -1;
	if (need_port && hp.port == 0) {
		*err = "HOST:PORT needed (IPv6 as [ADDRESS]:PORT)";
		return -1;
	}
	addr_hostport_format(&hp, dst, size);
	return 0;
}

int
domain_set_service(struct domain *d, enum front_service s, const char *v, const char **err)
{
	if (*v == '\0') {
		d->service[s][0] = '\0';
		return 0;
	}
	return target_set(d->service[s], sizeof(d->service[s]), v, 0, true, err);
}

int
domain_set_relay(struct domain *d, const char *v, const char **err)
{
	if (strcmp(v, "mx") == 0) {
		mx_strlcpy(d->relay, "mx", sizeof(d->relay));
		return 0;
	}
	return target_set(d->relay, sizeof(d->relay), v, 25, false, err);
}

#define ENUM_SETTER(fn, field, type, table, msg)			\
int									\
fn(struct domain *d, const char *v, const char **err)			\
{									\
	int x;								\
									\
	if (enum_parse(v, table, MX_NELEM(table), &x) == -1) {		\
		*err = msg;						\
		return -1;						\
	}								\
	d->field = (type)x;						\
	return 0;							\
}

ENUM_SETTER(domain_set_proxy, proxy, enum registry_proxy, proxy_names,
    "proxy protocol must be off, v1 or v2")
ENUM_SETTER(domain_set_spf, spf, enum registry_spf, spf_names,
    "SPF policy must be off, tag or reject")
ENUM_SETTER(domain_set_recipients, recipients, enum registry_rcpt, rcpt_names,
    "recipient policy must be any, verify or list")
ENUM_SETTER(domain_set_unavailable, unavailable, enum registry_unavail, unavail_names,
    "unavailable policy must be tempfail or accept")
ENUM_SETTER(domain_set_relay_tls, relay_tls, enum registry_tls, tls_names,
    "relay TLS policy must be may or require")

int
domain_set_size_limit(struct domain *d, const char *v, const char **err)
{
	unsigned long long n;

	if (mx_parse_size(v, &n) == -1 || n > 4ULL * 1024 * 1024 * 1024) {
		*err = "size limit must be a size up to 4G (e.g. 25M; 0 = the global limit)";
		return -1;
	}
	d->size_limit = n;
	return 0;
}

int
domain_set_lifetime(struct domain *d, const char *v, const char **err)
{
	long long n;

	if (mx_parse_duration(v, &n) == -1 || (n != 0 && n < 60) || n > 60LL * 86400) {
		*err = "lifetime must be a duration from 1m to 60d (e.g. 5d; 0 = the global lifetime)";
		return -1;
	}
	d->lifetime = n;
	return 0;
}

int
domain_set_milters(struct domain *d, const char *v, const char **err)
{
	const char *p;
	size_t word = 0;

	if (strlen(v) >= sizeof(d->milters)) {
		*err = "milter list too long";
		return -1;
	}
	for (p = v; *p != '\0'; p++) {
		if (*p == ',') {
			if (word == 0)
				goto bad;
			word = 0;
			continue;
		}
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') || *p == '-' || *p == '_'))
			goto bad;
		word++;
	}
	if (p != v && word == 0)
		goto bad;
	mx_strlcpy(d->milters, v, sizeof(d->milters));
	return 0;
bad:
	*err = "milters must be 'none' or NAME,NAME,... (letters, digits, '-', '_')";
	return -1;
}

int
domain_validate(const struct domain *d, const char **err)
{
	char norm[ADDR_DOMAIN_MAX + 1];
	struct domain tmp;
	int s;

	if (memchr(d->name, '\0', sizeof(d->name)) == NULL) {
		*err = "domain name not terminated";
		return -1;
	}
	if (addr_domain_normalize(d->name, strlen(d->name), norm, err) == -1)
		return -1;
	if (strcmp(norm, d->name) != 0) {
		*err = "domain name not normalised";
		return -1;
	}
	if (strchr(norm, '.') == NULL) {
		*err = "a registered domain needs at least two labels (a top-level name would "
		    "route everything under it)";
		return -1;
	}
	tmp = *d;
	if (d->backend[0] != '\0' && domain_set_backend(&tmp, d->backend, err) == -1)
		return -1;
	for (s = 0; s < FRONT_NSERVICES; s++)
		if (d->service[s][0] != '\0' &&
		    domain_set_service(&tmp, (enum front_service)s, d->service[s], err) == -1)
			return -1;
	if (domain_set_relay(&tmp, d->relay, err) == -1)
		return -1;
	if ((unsigned)d->proxy >= MX_NELEM(proxy_names) ||
	    (unsigned)d->spf >= MX_NELEM(spf_names) ||
	    (unsigned)d->recipients >= MX_NELEM(rcpt_names) ||
	    (unsigned)d->unavailable >= MX_NELEM(unavail_names) ||
	    (unsigned)d->relay_tls >= MX_NELEM(tls_names)) {
		*err = "policy value out of range";
		return -1;
	}
	if (d->milters[0] != '\0' && domain_set_milters(&tmp, d->milters, err) == -1)
		return -1;
	return 0;
}

int
domain_service_target(const struct domain *d, enum front_service s, struct addr_hostport *out)
{
	const char *err;

	if (d->service[s][0] != '\0')
		return addr_parse_hostport(d->service[s], 0, out, &err);
	if (d->backend[0] == '\0')
		return -1;
	return addr_parse_hostport(d->backend, front_service_default_port(s), out, &err);
}

int
domain_relay_target(const struct domain *d, struct addr_hostport *out)
{
	const char *err;

	if (strcmp(d->relay, "mx") == 0)
		return 1;
	return addr_parse_hostport(d->relay, 25, out, &err);
}

int
domain_to_json(const struct domain *d, struct mx_buf *b)
{
	int s, r = 0;

	r |= mx_buf_addstr(b, "{\"domain\":");
	r |= mx_buf_json_str(b, d->name);
	r |= mx_buf_addstr(b, ",\"backend\":");
	if (d->backend[0] != '\0')
		r |= mx_buf_json_str(b, d->backend);
	else
		r |= mx_buf_addstr(b, "null");
	r |= mx_buf_addstr(b, ",\"services\":{");
	for (s = 0; s < FRONT_NSERVICES; s++) {
		struct addr_hostport hp;
		char t[REG_TARGET_MAX];

		r |= mx_buf_printf(b, "%s\"%s\":", s ? "," : "",
		    front_service_name((enum front_service)s));
		if (domain_service_target(d, (enum front_service)s, &hp) == 0) {
			addr_hostport_format(&hp, t, sizeof(t));
			r |= mx_buf_json_str(b, t);
		} else
			r |= mx_buf_addstr(b, "null");
	}
	r |= mx_buf_addstr(b, "},\"relay\":");
	r |= mx_buf_json_str(b, d->relay);
	r |= mx_buf_printf(b, ",\"proxy_protocol\":\"%s\",\"spf\":\"%s\",\"recipients\":\"%s\","
	    "\"recipients_unavailable\":\"%s\",\"relay_tls\":\"%s\",\"size_limit\":%llu,"
	    "\"lifetime\":%lld,\"milters\":",
	    registry_proxy_name(d->proxy), registry_spf_name(d->spf),
	    registry_rcpt_name(d->recipients), registry_unavail_name(d->unavailable),
	    registry_tls_name(d->relay_tls), d->size_limit, d->lifetime);
	if (d->milters[0] != '\0')
		r |= mx_buf_json_str(b, d->milters);
	else
		r |= mx_buf_addstr(b, "null");
	r |= mx_buf_printf(b, ",\"created\":%lld,\"updated\":%lld}", (long long)d->created,
	    (long long)d->updated);
	return r ? -1 : 0;
}

static const struct registry_ops *const backends[] = {
	&registry_sqlite_ops,
};

struct registry *
registry_open(const char *spec, int flags, char *err, size_t errsize)
{
	const char *colon = strchr(spec, ':');
	struct registry *r;
	size_t i;

	if (colon == NULL) {
		snprintf(err, errsize, "registry '%s': expected SCHEME:LOCATION", spec);
		return NULL;
	}
	for (i = 0; i < MX_NELEM(backends); i++) {
		if (strlen(backends[i]->scheme) != (size_t)(colon - spec) ||
		    strncmp(backends[i]->scheme, spec, (size_t)(colon - spec)) != 0)
			continue;
		if ((r = calloc(1, sizeof(*r))) == NULL) {
			snprintf(err, errsize, "out of memory");
			return NULL;
		}
		r->ops = backends[i];
		if (r->ops->open(r, colon + 1, flags, err, errsize) == -1) {
			free(r);
			return NULL;
		}
		return r;
	}
	snprintf(err, errsize, "registry '%s': unknown backend", spec);
	return NULL;
}

void
registry_close(struct registry **rp)
{
	if (*rp == NULL)
		return;
	(*rp)->ops->close(*rp);
	free(*rp);
	*rp = NULL;
}

static int
check_record(const struct domain *d, char *err, size_t errsize)
{
	const char *e;

	if (domain_validate(d, &e) == -1) {
		snprintf(err, errsize, "%s: %s", d->name, e);
		return -1;
	}
	return 0;
}

int
registry_domain_add(struct registry *r, const struct domain *d, char *err, size_t errsize)
{
	if (check_record(d, err, errsize) == -1)
		return -1;
	return r->ops->domain_add(r, d, err, errsize);
}

int
registry_domain_update(struct registry *r, const struct domain *d, char *err, size_t errsize)
{
	if (check_record(d, err, errsize) == -1)
		return -1;
	return r->ops->domain_update(r, d, err, errsize);
}

int
registry_domain_del(struct registry *r, const char *name, char *err, size_t errsize)
{
	return r->ops->domain_del(r, name, err, errsize);
}

int
registry_domain_get(struct registry *r, const char *name, struct domain *out, char *err,
    size_t errsize)
{
	return r->ops->domain_get(r, name, out, err, errsize);
}

int
registry_domain_foreach(struct registry *r, registry_domain_cb cb, void *arg, char *err,
    size_t errsize)
{
	return r->ops->domain_foreach(r, cb, arg, err, errsize);
}

int
registry_recipient_add(struct registry *r, const char *domain, const char *address,
    char *err, size_t errsize)
{
	return r->ops->recipient_add(r, domain, address, err, errsize);
}

int
registry_recipient_del(struct registry *r, const char *domain, const char *address,
    char *err, size_t errsize)
{
	return r->ops->recipient_del(r, domain, address, err, errsize);
}

int
registry_recipient_foreach(struct registry *r, const char *domain, registry_recipient_cb cb,
    void *arg, char *err, size_t errsize)
{
	return r->ops->recipient_foreach(r, domain, cb, arg, err, errsize);
}

int
registry_recipient_check(struct registry *r, const char *domain, const char *address)
{
	return r->ops->recipient_check(r, domain, address);
}

int
registry_changed(struct registry *r)
{
	return r->ops->changed(r);
}
