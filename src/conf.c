/*
 * Config file parser.  One directive per line; arguments are separated by
 * blanks; '#' at the start of a word begins a comment.  Each directive is
 * a row in one table {name, argument count, handler}, so the table is the
 * list of what the file may say.  Every error names the file and line, and
 * nothing is half-applied: conf_load() parses into a fresh struct.
 */
#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "log.h"
#include "util.h"

#define CONF_MAX_ARGS 8
#define CONF_LINE_MAX 4096

struct conf_ctx {
	struct conf *c;
	const char *file;
	int line;
	char *err;
	size_t errsize;
};

static int conf_fail(struct conf_ctx *x, const char *fmt, ...) MX_PRINTF(2, 3);

static int
conf_fail(struct conf_ctx *x, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (x->line > 0)
		snprintf(x->err, x->errsize, "%s:%d: %s", x->file, x->line, msg);
	else
		snprintf(x->err, x->errsize, "%s: %s", x->file, msg);
	return -1;
}

static const char *const service_names[FRONT_NSERVICES] = {
	"imaps", "pop3s", "submissions", "submission"
};
static const uint16_t service_ports[FRONT_NSERVICES] = { 993, 995, 465, 587 };

const char *
front_service_name(enum front_service s)
{
	return (unsigned)s < FRONT_NSERVICES ? service_names[s] : "?";
}

uint16_t
front_service_default_port(enum front_service s)
{
	return (unsigned)s < FRONT_NSERVICES ? service_ports[s] : 0;
}

int
front_service_parse(const char *s, enum front_service *out)
{
	int i;

	for (i = 0; i < FRONT_NSERVICES; i++)
		if (strcmp(s, service_names[i]) == 0) {
			*out = (enum front_service)i;
			return 0;
		}
	return -1;
}

const char *
conf_default_path(void)
{
	const char *env = getenv("MXEDGE_CONF");

	if (env != NULL && *env != '\0')
		return env;
#ifdef DEFAULT_CONFIG
	return DEFAULT_CONFIG;
#else
	return "/etc/mxedge/mxedge.conf";
#endif
}

void
conf_defaults(struct conf *c)
{
	memset(c, 0, sizeof(*c));
	if (gethostname(c->hostname, sizeof(c->hostname)) == -1 || c->hostname[0] == '\0')
		mx_strlcpy(c->hostname, "localhost", sizeof(c->hostname));
	c->hostname[sizeof(c->hostname) - 1] = '\0';
	mx_strlcpy(c->user, "mxedge", sizeof(c->user));
	mx_strlcpy(c->state_dir, "/var/lib/mxedge", sizeof(c->state_dir));
	mx_strlcpy(c->spool_dir, "/var/spool/mxedge", sizeof(c->spool_dir));
	mx_strlcpy(c->log_target, "syslog", sizeof(c->log_target));
	c->log_level = LOG_LEVEL_INFO;
	mx_strlcpy(c->tls_certificate, "/etc/mxedge/tls/fullchain.pem", sizeof(c->tls_certificate));
	mx_strlcpy(c->tls_key, "/etc/mxedge/tls/key.pem", sizeof(c->tls_key));
	mx_strlcpy(c->tls_priority, "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:%SERVER_PRECEDENCE",
	    sizeof(c->tls_priority));
	mx_strlcpy(c->relay_tls_priority, "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2",
	    sizeof(c->relay_tls_priority));
	mx_strlcpy(c->resolver, "system", sizeof(c->resolver));
	c->allow_private_targets = false;

	c->front_hello_timeout = 10;
	c->front_hello_max = 16384;
	c->front_connect_timeout = 10;
	c->front_idle_timeout[FRONT_IMAPS] = 1800;
	c->front_idle_timeout[FRONT_POP3S] = 600;
	c->front_idle_timeout[FRONT_SUBMISSIONS] = 600;
	c->front_idle_timeout[FRONT_SUBMISSION] = 600;
	c->front_max_connections = 10000;
	c->front_max_per_client = 64;
	c->front_splice = false;

	c->smtp_max_connections = 500;
	c->smtp_max_per_client = 20;
	c->smtp_max_recipients = 100;
	c->smtp_max_message_size = 50ULL * 1024 * 1024;
	c->smtp_min_free_space = 100ULL * 1024 * 1024;
	c->smtp_timeout_command = 300;
	c->smtp_timeout_data = 180;
	c->smtp_max_errors = 10;
	c->smtp_greet_delay = 0;
	c->smtp_reverse_lookup = true;

	c->queue_lifetime = 5 * 86400;
	c->queue_retry_min = 300;
	c->queue_retry_max = 3600;
	c->queue_delay_warning = 0;
	c->relay_connect_timeout = 30;
	c->relay_command_timeout = 300;
	c->relay_max_concurrency = 100;
	c->relay_destination_concurrency = 10;
	c->relay_allow_ipv4 = false;
	c->relay_mx_port = 25;

	mx_strlcpy(c->spf_user, "nobody", sizeof(c->spf_user));
	c->spf_timeout = 20;
	c->verify_positive_ttl = 7 * 86400;
	c->verify_negative_ttl = 600;
	c->verify_timeout = 30;
}

/* Handlers get the argument vector without the directive name. */
typedef int (*conf_handler)(struct conf_ctx *x, int argc, char **argv, size_t off);

struct conf_directive {
	const char *name;
	int min_args;
	int max_args;
	conf_handler handler;
	size_t off;		/* offset of the field in struct conf */
	long long min;		/* numeric range for number/duration handlers */
	long long max;
};

#define FIELD(f) offsetof(struct conf, f)

static int
h_string(struct conf_ctx *x, int argc, char **argv, size_t off, size_t size)
{
	char *dst = (char *)x->c + off;

	if (mx_str_has_ctl(argv[0]))
		return conf_fail(x, "control character in value");
	if (mx_strlcpy(dst, argv[0], size) == -1)
		return conf_fail(x, "value too long (at most %zu bytes)", size - 1);
	return 0;
}

#define STRING_HANDLER(fname, field)					\
static int								\
fname(struct conf_ctx *x, int argc, char **argv, size_t off)		\
{									\
	return h_string(x, argc, argv, off, sizeof(x->c->field));	\
}

STRING_HANDLER(h_path, state_dir)	/* every path field has the same size */
STRING_HANDLER(h_user, user)
STRING_HANDLER(h_priority, tls_priority)

static int
h_absolute_path(struct conf_ctx *x, int argc, char **argv, size_t off)
{
	if (argv[0][0] != '/')
		return conf_fail(x, "path must be absolute: %s", argv[0]);
	return h_path(x, argc, argv, off);
}

static int
h_hostname(struct conf_ctx *x, int argc, char **argv, size_t off)
{
	const char *err;
	char norm[ADDR_DOMAIN_MAX + 1];

	if (addr_domain_normalize(argv[0], strlen(argv[0]), norm, &err) == -1)
		return conf_fail(x, "bad host name '%s': %s", argv[0], err);
	return h_string(x, 1, (char *[]){ norm }, off, ADDR_HOST_MAX);
}

/* A plain dot-atom mailbox (RFC 5322 3.2.3), no quoted local part or address literal. */
static int
h_mailbox(struct conf_ctx *x, int argc, char **argv, size_t off)
{
	static const char atext[] = "!#$%&'*+-/=?^_`{|}~";
	const char *at = strrchr(argv[0], '@'), *err, *p;
	char norm[ADDR_DOMAIN_MAX + 1], out[CONF_MAILBOX_MAX + 1];
	size_t llen;

	if (at == NULL || at == argv[0])
		return conf_fail(x, "bad address '%s': want local@domain", argv[0]);
	llen = (size_t)(at - argv[0]);
	if (llen > 64 || argv[0][0] == '.' || at[-1] == '.')
		return conf_fail(x, "bad local part in '%s'", argv[0]);
	for (p = argv[0]; p < at; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') || (*p == '.' && p[1] != '.') ||
		    (*p != '\0' && strchr(atext, *p) != NULL)))
			return conf_fail(x, "bad local part in '%s'", argv[0]);
	if (addr_domain_normalize(at + 1, strlen(at + 1), norm, &err) == -1)
		return conf_fail(x, "bad domain in '%s': %s", argv[0], err);
	if (mx_snprintf(out, sizeof(out), "%.*s@%s", (int)llen, argv[0], norm) == -1)
		return conf_fail(x, "address too long: %s", argv[0]);
	return h_string(x, 1, (char *[]){ out }, off, CONF_MAILBOX_MAX + 1);
}

static int
h_bool(struct conf_ctx *x, int argc, char **argv, size_t off)
{
	bool *dst = (bool *)((char *)x->c + off);

	if (strcmp(argv[0], "yes") == 0)
		*dst = true;
	else if (strcmp(argv[0], "no") == 0)
		*dst = false;
	else
		return conf_fail(x, "expected yes or no, not '%s'", argv[0]);
	return 0;
}

static const struct conf_directive *current_directive;

static int
h_number(struct conf_ctx *x, int argc, char **argv, size_t off)
{
	long long *dst = (long long *)((char *)x->c + off);
	const struct conf_directive *d = current_directive;

	if (mx_parse_llong(argv[0], d->min, d->max, dst) == -1)
		return conf_fail(x, "expected a number from %lld to %lld, not '%s'", d->min, d->max,
		    argv[0]);
	return 0;
}

static int
h_duration(struct conf_ctx *x, int argc, char **argv, size_t off)
{
	long long *dst = (long long *)((char *)x->c + off);
	const struct conf_directive *d = current_directive;
	long long v;

	if (mx_parse_duration(argv[0], &v) == -1)
		return conf_fail(x, "bad duration '%s' (use e.g. 30s, 10m, 2h, 5d)", argv[0]);
	if (v < d->min || v > d->max)
		return conf_fail(x, "duration '%s' out of range (%llds to %llds)", argv[0], d->min,
		    d->max);
	*dst = v;
	return 0;
}

static int
h_size(struct conf_ctx *x, int argc, char **argv, size_t off)
{
	unsigned long long *dst = (unsigned long long *)((char *)x->c + off);
	const struct conf_directive *d = current_directive;
	unsigned long long v;

	if (mx_parse_size(argv[0], &v) == -1)
		return conf_fail(x, "bad size '%s' (use e.g. 4096, 64k, 50M, 1G)", argv[0]);
	if (v < (unsigned long long)d->min || v > (unsigned long long)d->max)
		return conf_fail(x, "size '%s' out of range (%lld to %lld bytes)", argv[0], d->min,
		    d->max);
	*dst = v;
	return 0;
}

static int
listen_add(struct conf_ctx *x, struct conf_listen *arr, int *n, const char *text,
    enum front_service svc)
{
	const char *err;
	struct conf_listen *l;
	int i;

	if (*n >= CONF_MAX_LISTEN)
		return conf_fail(x, "too many listen addresses (at most %d)", CONF_MAX_LISTEN);
	l = &arr[*n];
	memset(l, 0, sizeof(*l));
	if (addr_parse_listen(text, &l->addr, &l->addrlen, &err) == -1)
		return conf_fail(x, "bad listen address '%s': %s", text, err);
	l->service = svc;
	if (mx_strlcpy(l->text, text, sizeof(l->text)) == -1)
		return conf_fail(x, "listen address too long");
	for (i = 0; i < *n; i++)
		if (arr[i].addrlen == l->addrlen && memcmp(&arr[i].addr, &l->addr, l->addrlen) == 0)
			return conf_fail(x, "duplicate listen address '%s'", text);
	(*n)++;
	return 0;
}

static int
h_smtp_listen(struct conf_ctx *x, int argc, char **argv, size_t off)
{
	return listen_add(x, x->c->smtp_listen, &x->c->n_smtp_listen, argv[0], FRONT_IMAPS);
}

static int
h_front_listen(struct conf_ctx *x, int argc, char **argv, size_t off)
{
	enum front_service s;

	if (front_service_parse(argv[0], &s) == -1)
		return conf_fail(x, "unknown service '%s' (imaps, pop3s, submissions, submission)",
		    argv[0]);
	return listen_add(x, x->c->front_listen, &x->c->n_front_listen, argv[1], s);
}

static int
h_front_idle_timeout(struct conf_ctx *x, int argc, char **argv, size_t off)
{
	enum front_service s;
	long long v;

	if (front_service_parse(argv[0], &s) == -1)
		return conf_fail(x, "unknown service '%s' (imaps, pop3s, submissions, submission)",
		    argv[0]);
	if (mx_parse_duration(argv[1], &v) == -1 || v < 1 || v > 86400)
		return conf_fail(x, "bad duration '%s' (1s to 1d)", argv[1]);
	x->c->front_idle_timeout[s] = v;
	return 0;
}

static int
h_resolver(struct conf_ctx *x, int argc, char **argv, size_t off)
{
	struct addr_hostport hp;
	const char *err, *at;
	char host[ADDR_HOST_MAX];
	long long port;

	if (strcmp(argv[0], "system") != 0) {
		at = strchr(argv[0], '@');
		if (at == NULL || (size_t)(at - argv[0]) >= sizeof(host))
			return conf_fail(x, "resolver must be 'system' or ADDRESS@PORT");
		memcpy(host, argv[0], (size_t)(at - argv[0]));
		host[at - argv[0]] = '\0';
		if (addr_parse_hostport(host, 53, &hp, &err) == -1 || hp.kind == ADDR_HOST_NAME ||
		    hp.port != 53)
			return conf_fail(x, "resolver address must be a numeric IP: '%s'", host);
		if (mx_parse_llong(at + 1, 1, 65535, &port) == -1)
			return conf_fail(x, "bad resolver port '%s'", at + 1);
	}
	return h_string(x, argc, argv, off, sizeof(x->c->resolver));
}

static int
h_log(struct conf_ctx *x, int argc, char **argv, size_t off)
{
	if (strcmp(argv[0], "syslog") != 0 && strcmp(argv[0], "stderr") != 0)
		return conf_fail(x, "log must be syslog or stderr");
	return h_string(x, argc, argv, off, sizeof(x->c->log_target));
}

static int
h_log_level(struct conf_ctx *x, int argc, char **argv, size_t off)
{
	static const char *const levels[] = { "error", "warn", "info", "debug" };
	size_t i;

	for (i = 0; i < MX_NELEM(levels); i++)
		if (strcmp(argv[0], levels[i]) == 0) {
			x->c->log_level = (int)i;
			return 0;
		}
	return conf_fail(x, "log_level must be error, warn, info or debug");
}

static int
h_registry(struct conf_ctx *x, int argc, char **argv, size_t off)
{
	if (strncmp(argv[0], "sqlite:", 7) != 0 || argv[0][7] != '/')
		return conf_fail(x, "registry must be sqlite:/ABSOLUTE/PATH");
	return h_path(x, argc, argv, off);
}

static int
h_milter(struct conf_ctx *x, int argc, char **argv, size_t off)
{
	struct conf_milter *m;
	int i;

	if (x->c->n_milters >= CONF_MAX_MILTERS)
		return conf_fail(x, "too many milters (at most %d)", CONF_MAX_MILTERS);
	m = &x->c->milters[x->c->n_milters];
	memset(m, 0, sizeof(*m));
	for (i = 0; argv[0][i] != '\0'; i++) {
		char ch = argv[0][i];

		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		    (ch >= '0' && ch <= '9') || ch == '-' || ch == '_'))
			return conf_fail(x, "milter name may use letters, digits, '-' and '_'");
	}
	if (strcmp(argv[0], "none") == 0)
		return conf_fail(x, "'none' is reserved and cannot name a milter");
	if (mx_strlcpy(m->name, argv[0], sizeof(m->name)) == -1)
		return conf_fail(x, "milter name too long");
	for (i = 0; i < x->c->n_milters; i++)
		if (strcmp(x->c->milters[i].name, m->name) == 0)
			return conf_fail(x, "duplicate milter name '%s'", m->name);
	if (strncmp(argv[1], "unix:/", 6) != 0 && strncmp(argv[1], "inet:", 5) != 0)
		return conf_fail(x, "milter address must be unix:/PATH or inet:HOST:PORT");
	if (mx_str_has_ctl(argv[1]))
		return conf_fail(x, "control character in milter address");
	if (strncmp(argv[1], "inet:", 5) == 0) {
		struct addr_hostport hp;
		const char *err;

		if (addr_parse_hostport(argv[1] + 5, 0, &hp, &err) == -1 || hp.port == 0)
			return conf_fail(x, "bad milter address '%s': %s", argv[1],
			    hp.port == 0 ? "a port is required" : err);
	}
	if (mx_strlcpy(m->address, argv[1], sizeof(m->address)) == -1)
		return conf_fail(x, "milter address too long");
	m->connect_timeout = 10;
	m->command_timeout = 30;
	m->content_timeout = 300;
	m->on_failure = MILTER_FAIL_TEMPFAIL;
	for (i = 2; i < argc; i++) {
		char *eq = strchr(argv[i], '=');
		long long v;

		if (eq == NULL)
			return conf_fail(x, "milter option must be NAME=VALUE: '%s'", argv[i]);
		*eq++ = '\0';
		if (strcmp(argv[i], "on_failure") == 0) {
			if (strcmp(eq, "tempfail") == 0)
				m->on_failure = MILTER_FAIL_TEMPFAIL;
			else if (strcmp(eq, "accept") == 0)
				m->on_failure = MILTER_FAIL_ACCEPT;
			else if (strcmp(eq, "reject") == 0)
				m->on_failure = MILTER_FAIL_REJECT;
			else if (strcmp(eq, "421") == 0)
				m->on_failure = MILTER_FAIL_421;
			else
				return conf_fail(x, "on_failure must be tempfail, accept, reject or 421");
			continue;
		}
		if (mx_parse_duration(eq, &v) == -1 || v < 1 || v > 3600)
			return conf_fail(x, "bad milter timeout '%s' (1s to 1h)", eq);
		if (strcmp(argv[i], "connect_timeout") == 0)
			m->connect_timeout = v;
		else if (strcmp(argv[i], "command_timeout") == 0)
			m->command_timeout = v;
		else if (strcmp(argv[i], "content_timeout") == 0)
			m->content_timeout = v;
		else
			return conf_fail(x, "unknown milter option '%s'", argv[i]);
	}
	x->c->n_milters++;
	return 0;
}

#define DAY 86400LL
static const struct conf_directive directives[] = {
	{ "hostname", 1, 1, h_hostname, FIELD(hostname), 0, 0 },
	{ "user", 1, 1, h_user, FIELD(user), 0, 0 },
	{ "state_dir", 1, 1, h_absolute_path, FIELD(state_dir), 0, 0 },
	{ "spool_dir", 1, 1, h_absolute_path, FIELD(spool_dir), 0, 0 },
	{ "pid_file", 1, 1, h_absolute_path, FIELD(pid_file), 0, 0 },
	{ "control_socket", 1, 1, h_absolute_path, FIELD(control_socket), 0, 0 },
	{ "registry", 1, 1, h_registry, FIELD(registry), 0, 0 },
	{ "log", 1, 1, h_log, FIELD(log_target), 0, 0 },
	{ "log_level", 1, 1, h_log_level, 0, 0, 0 },
	{ "tls_certificate", 1, 1, h_absolute_path, FIELD(tls_certificate), 0, 0 },
	{ "tls_key", 1, 1, h_absolute_path, FIELD(tls_key), 0, 0 },
	{ "tls_priority", 1, 1, h_priority, FIELD(tls_priority), 0, 0 },
	{ "relay_tls_priority", 1, 1, h_priority, FIELD(relay_tls_priority), 0, 0 },
	{ "smtp_listen", 1, 1, h_smtp_listen, 0, 0, 0 },
	{ "front_listen", 2, 2, h_front_listen, 0, 0, 0 },
	{ "resolver", 1, 1, h_resolver, FIELD(resolver), 0, 0 },
	{ "allow_private_targets", 1, 1, h_bool, FIELD(allow_private_targets), 0, 0 },

	{ "front_hello_timeout", 1, 1, h_duration, FIELD(front_hello_timeout), 1, 300 },
	{ "front_hello_max", 1, 1, h_number, FIELD(front_hello_max), 512, 65536 },
	{ "front_connect_timeout", 1, 1, h_duration, FIELD(front_connect_timeout), 1, 300 },
	{ "front_idle_timeout", 2, 2, h_front_idle_timeout, 0, 0, 0 },
	{ "front_max_connections", 1, 1, h_number, FIELD(front_max_connections), 1, 1000000 },
	{ "front_max_per_client", 1, 1, h_number, FIELD(front_max_per_client), 1, 1000000 },
	{ "front_splice", 1, 1, h_bool, FIELD(front_splice), 0, 0 },

	{ "smtp_banner", 1, 1, h_priority, FIELD(smtp_banner), 0, 0 },
	{ "smtp_max_connections", 1, 1, h_number, FIELD(smtp_max_connections), 1, 100000 },
	{ "smtp_max_per_client", 1, 1, h_number, FIELD(smtp_max_per_client), 1, 100000 },
	{ "smtp_max_recipients", 1, 1, h_number, FIELD(smtp_max_recipients), 1, 100000 },
	{ "smtp_max_message_size", 1, 1, h_size, FIELD(smtp_max_message_size), 1024,
	    4LL * 1024 * 1024 * 1024 },
	{ "smtp_min_free_space", 1, 1, h_size, FIELD(smtp_min_free_space), 0,
	    1024LL * 1024 * 1024 * 1024 },
	{ "smtp_timeout_command", 1, 1, h_duration, FIELD(smtp_timeout_command), 1, 3600 },
	{ "smtp_timeout_data", 1, 1, h_duration, FIELD(smtp_timeout_data), 1, 3600 },
	{ "smtp_max_errors", 1, 1, h_number, FIELD(smtp_max_errors), 1, 1000 },
	{ "smtp_greet_delay", 1, 1, h_duration, FIELD(smtp_greet_delay), 0, 60 },
	{ "smtp_reverse_lookup", 1, 1, h_bool, FIELD(smtp_reverse_lookup), 0, 0 },

	{ "queue_lifetime", 1, 1, h_duration, FIELD(queue_lifetime), 60, 60 * DAY },
	{ "queue_retry_min", 1, 1, h_duration, FIELD(queue_retry_min), 1, DAY },
	{ "queue_retry_max", 1, 1, h_duration, FIELD(queue_retry_max), 1, 7 * DAY },
	{ "queue_delay_warning", 1, 1, h_duration, FIELD(queue_delay_warning), 0, 30 * DAY },
	{ "relay_connect_timeout", 1, 1, h_duration, FIELD(relay_connect_timeout), 1, 600 },
	{ "relay_command_timeout", 1, 1, h_duration, FIELD(relay_command_timeout), 1, 3600 },
	{ "relay_max_concurrency", 1, 1, h_number, FIELD(relay_max_concurrency), 1, 10000 },
	{ "relay_destination_concurrency", 1, 1, h_number,
	    FIELD(relay_destination_concurrency), 1, 1000 },
	{ "relay_allow_ipv4", 1, 1, h_bool, FIELD(relay_allow_ipv4), 0, 0 },
	{ "relay_mx_port", 1, 1, h_number, FIELD(relay_mx_port), 1, 65535 },

	{ "milter", 2, CONF_MAX_ARGS, h_milter, 0, 0, 0 },
	{ "spf_user", 1, 1, h_user, FIELD(spf_user), 0, 0 },
	{ "spf_timeout", 1, 1, h_duration, FIELD(spf_timeout), 1, 300 },
	{ "verify_positive_ttl", 1, 1, h_duration, FIELD(verify_positive_ttl), 0, 60 * DAY },
	{ "verify_negative_ttl", 1, 1, h_duration, FIELD(verify_negative_ttl), 0, 7 * DAY },
	{ "verify_timeout", 1, 1, h_duration, FIELD(verify_timeout), 1, 600 },
	{ "authserv_id", 1, 1, h_hostname, FIELD(authserv_id), 0, 0 },
	{ "postmaster_address", 1, 1, h_mailbox, FIELD(postmaster_address), 0, 0 },
};

/* Split a line into words in place; '#' at a word start ends the line. */
static int
conf_split(struct conf_ctx *x, char *line, char **argv, int max)
{
	int argc = 0;
	char *p = line;

	for (;;) {
		while (*p == ' ' || *p == '\t' || *p == '\r')
			p++;
		if (*p == '\0' || *p == '#')
			break;
		if (argc == max)
			return conf_fail(x, "too many arguments (at most %d)", max - 1);
		argv[argc++] = p;
		while (*p != '\0' && *p != ' ' && *p != '\t' && *p != '\r')
			p++;
		if (*p != '\0')
			*p++ = '\0';
	}
	return argc;
}

static int
conf_line(struct conf_ctx *x, char *line)
{
	char *argv[CONF_MAX_ARGS + 1];
	int argc;
	size_t i;

	argc = conf_split(x, line, argv, CONF_MAX_ARGS + 1);
	if (argc <= 0)
		return argc;
	for (i = 0; i < MX_NELEM(directives); i++) {
		const struct conf_directive *d = &directives[i];

		if (strcmp(d->name, argv[0]) != 0)
			continue;
		if (argc - 1 < d->min_args || argc - 1 > d->max_args) {
			if (d->min_args == d->max_args)
				return conf_fail(x, "%s takes %d argument%s", d->name, d->min_args,
				    d->min_args == 1 ? "" : "s");
			return conf_fail(x, "%s takes %d to %d arguments", d->name, d->min_args,
			    d->max_args);
		}
		current_directive = d;
		return d->handler(x, argc - 1, argv + 1, d->off);
	}
	return conf_fail(x, "unknown directive '%s'", argv[0]);
}

static int
conf_finish(struct conf_ctx *x)
{
	struct conf *c = x->c;

	x->line = 0;
	if (c->pid_file[0] == '\0' && mx_snprintf(c->pid_file, sizeof(c->pid_file),
	    "%s/mxedged.pid", c->state_dir) == -1)
		return conf_fail(x, "state_dir too long");
	if (c->control_socket[0] == '\0' && mx_snprintf(c->control_socket,
	    sizeof(c->control_socket), "%s/control.sock", c->state_dir) == -1)
		return conf_fail(x, "state_dir too long");
	if (strlen(c->control_socket) >= 108)
		return conf_fail(x, "control socket path longer than 107 bytes: %s",
		    c->control_socket);
	if (c->registry[0] == '\0' && mx_snprintf(c->registry, sizeof(c->registry),
	    "sqlite:%s/registry.db", c->state_dir) == -1)
		return conf_fail(x, "state_dir too long");
	if (c->authserv_id[0] == '\0')
		mx_strlcpy(c->authserv_id, c->hostname, sizeof(c->authserv_id));
	if (c->queue_retry_min > c->queue_retry_max) {
		x->line = 0;
		return conf_fail(x, "queue_retry_min is larger than queue_retry_max");
	}
	return 0;
}

static int
conf_parse(struct conf_ctx *x, FILE *f, const char *text)
{
	char line[CONF_LINE_MAX + 2];

	for (;;) {
		size_t len;

		if (f != NULL) {
			int ch;

			/* Not fgets(3): a NUL it reads would hide the rest of the line from strlen. */
			len = 0;
			while (len < sizeof(line) - 1 && (ch = getc(f)) != EOF) {
				line[len++] = (char)ch;
				if (ch == '\n')
					break;
			}
			if (len == 0)
				break;
			line[len] = '\0';
		} else {
			const char *nl;

			if (*text == '\0')
				break;
			nl = strchr(text, '\n');
			len = nl ? (size_t)(nl - text) + 1 : strlen(text);
			if (len >= sizeof(line))
				len = sizeof(line) - 1;
			memcpy(line, text, len);
			line[len] = '\0';
			text += len;
		}
		x->line++;
		if (len == sizeof(line) - 1 && line[len - 1] != '\n')
			return conf_fail(x, "line longer than %d bytes", CONF_LINE_MAX);
		if (len > 0 && line[len - 1] == '\n')
			line[--len] = '\0';
		if (memchr(line, '\0', len) != NULL || strlen(line) != len)
			return conf_fail(x, "NUL byte in line");
		if (conf_line(x, line) == -1)
			return -1;
	}
	if (f != NULL && ferror(f))
		return conf_fail(x, "read error: %s", strerror(errno));
	return conf_finish(x);
}

int
conf_load_string(const char *name, const char *text, struct conf *c, char *err, size_t errsize)
{
	struct conf_ctx x = { c, name, 0, err, errsize };

	conf_defaults(c);
	mx_strlcpy(c->path, name, sizeof(c->path));
	return conf_parse(&x, NULL, text);
}

int
conf_load(const char *path, struct conf *c, char *err, size_t errsize)
{
	struct conf_ctx x = { c, path, 0, err, errsize };
	FILE *f;
	int r;

	conf_defaults(c);
	if (mx_strlcpy(c->path, path, sizeof(c->path)) == -1) {
		snprintf(err, errsize, "%s: path too long", path);
		return -1;
	}
	if ((f = fopen(path, "r")) == NULL) {
		snprintf(err, errsize, "%s: %s", path, strerror(errno));
		return -1;
	}
	r = conf_parse(&x, f, NULL);
	fclose(f);
	return r;
}
