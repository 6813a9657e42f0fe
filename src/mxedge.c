/*
 * mxedge: the operator's tool.  Domain and recipient commands write the
 * registry directly (one transaction each, validated first, so a bad
 * command changes nothing); the daemon sees the change within a second.
 * Status, reload and queue commands go to the daemon's control socket.
 * Every failure is one line on stderr and a non-zero exit.
 */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "conf.h"
#include "control_proto.h"
#include "registry.h"
#include "util.h"

#define CONTROL_TIMEOUT_MS 30000

static struct conf conf;
static const char *conf_path;

static void die(const char *fmt, ...) MX_PRINTF(1, 2) __attribute__((noreturn));

static void
die(const char *fmt, ...)
{
	va_list ap;

	fputs("mxedge: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static void
usage(void)
{
	fputs("usage: mxedge [-c FILE] COMMAND ...\n"
	    "  domain add DOMAIN [OPTIONS]       register a domain\n"
	    "  domain set DOMAIN [OPTIONS]       change a domain\n"
	    "  domain del DOMAIN                 remove a domain\n"
	    "  domain list [--json]\n"
	    "  domain show DOMAIN [--json]\n"
	    "  recipient add|del DOMAIN ADDRESS  manage a 'list' recipient policy\n"
	    "  recipient list DOMAIN [--json]\n"
	    "  queue list [--json] | show ID | flush [ID] | delete ID | hold ID | release ID\n"
	    "  status [--json]\n"
	    "  reload\n"
	    "domain options: --backend HOST --imaps|--pop3s|--submissions|--submission HOST:PORT\n"
	    "  --relay HOST[:PORT]|mx --proxy-protocol off|v1|v2 --spf off|tag|reject\n"
	    "  --recipients any|verify|list --recipients-unavailable tempfail|accept\n"
	    "  --relay-tls may|require --size-limit SIZE --lifetime DURATION\n"
	    "  --milters NAME,...|none\n", stderr);
	exit(2);
}

static struct registry *
open_registry(void)
{
	char err[1024];
	struct registry *r;

	/* A fresh install: the registry's directory may not exist before mxedged ran. */
	if (mkdir(conf.state_dir, 0750) == -1 && errno != EEXIST)
		die("cannot create %s: %s", conf.state_dir, strerror(errno));
	r = registry_open(conf.registry, 0, err, sizeof(err));
	if (r == NULL)
		die("%s", err);
	return r;
}

static void
normalize_domain(const char *in, char *out)
{
	const char *err;

	if (addr_domain_normalize(in, strlen(in), out, &err) == -1)
		die("bad domain '%s': %s", in, err);
}

/* The --option table for domain add/set. */
struct domain_opt {
	const char *name;
	int (*set)(struct domain *d, const char *v, const char **err);
	int service;	/* >= 0: a per-service target */
};

static int
set_imaps(struct domain *d, const char *v, const char **e)
{
	return domain_set_service(d, FRONT_IMAPS, v, e);
}

static int
set_pop3s(struct domain *d, const char *v, const char **e)
{
	return domain_set_service(d, FRONT_POP3S, v, e);
}

static int
set_submissions(struct domain *d, const char *v, const char **e)
{
	return domain_set_service(d, FRONT_SUBMISSIONS, v, e);
}

static int
set_submission(struct domain *d, const char *v, const char **e)
{
	return domain_set_service(d, FRONT_SUBMISSION, v, e);
}

static int
set_milters(struct domain *d, const char *v, const char **e)
{
	return domain_set_milters(d, v, e);
}

static const struct domain_opt domain_opts[] = {
	{ "backend", domain_set_backend, -1 },
	{ "imaps", set_imaps, FRONT_IMAPS },
	{ "pop3s", set_pop3s, FRONT_POP3S },
	{ "submissions", set_submissions, FRONT_SUBMISSIONS },
	{ "submission", set_submission, FRONT_SUBMISSION },
	{ "relay", domain_set_relay, -1 },
	{ "proxy-protocol", domain_set_proxy, -1 },
	{ "spf", domain_set_spf, -1 },
	{ "recipients", domain_set_recipients, -1 },
	{ "recipients-unavailable", domain_set_unavailable, -1 },
	{ "relay-tls", domain_set_relay_tls, -1 },
	{ "size-limit", domain_set_size_limit, -1 },
	{ "lifetime", domain_set_lifetime, -1 },
	{ "milters", set_milters, -1 },
};

static void
apply_domain_opts(struct domain *d, int argc, char **argv)
{
	int i;

	for (i = 0; i < argc; i++) {
		const char *arg = argv[i], *val, *err;
		char name[64];
		size_t k, nlen;

		if (strncmp(arg, "--", 2) != 0)
			die("unexpected argument '%s'", arg);
		arg += 2;
		val = strchr(arg, '=');
		nlen = val ? (size_t)(val - arg) : strlen(arg);
		if (nlen >= sizeof(name))
			die("unknown option '--%.40s'", arg);
		memcpy(name, arg, nlen);
		name[nlen] = '\0';
		for (k = 0; k < MX_NELEM(domain_opts); k++)
			if (strcmp(domain_opts[k].name, name) == 0)
				break;
		if (k == MX_NELEM(domain_opts))
			die("unknown option '--%s'", name);
		if (val != NULL)
			val++;
		else if (i + 1 < argc)
			val = argv[++i];
		else
			die("option --%s needs a value", name);
		if (domain_opts[k].set(d, val, &err) == -1)
			die("--%s '%s': %s", name, val, err);
	}
}

static bool
want_json(int argc, char **argv, int from)
{
	int i;
	bool json = false;

	for (i = from; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			json = true;
		else
			die("unexpected argument '%s'", argv[i]);
	}
	return json;
}

static void
print_domain_text(const struct domain *d)
{
	int s;
	struct addr_hostport hp;
	char t[REG_TARGET_MAX], when[32];
	time_t ts;

	printf("domain:                 %s\n", d->name);
	printf("backend:                %s\n", d->backend[0] ? d->backend : "-");
	for (s = 0; s < FRONT_NSERVICES; s++) {
		if (domain_service_target(d, (enum front_service)s, &hp) == 0)
			addr_hostport_format(&hp, t, sizeof(t));
		else
			mx_strlcpy(t, "-", sizeof(t));
		printf("%-23s %s%s\n", front_service_name((enum front_service)s), t,
		    d->service[s][0] ? "" : (d->backend[0] ? " (default port)" : ""));
	}
	printf("relay:                  %s\n", d->relay);
	printf("proxy-protocol:         %s\n", registry_proxy_name(d->proxy));
	printf("spf:                    %s\n", registry_spf_name(d->spf));
	printf("recipients:             %s\n", registry_rcpt_name(d->recipients));
	printf("recipients-unavailable: %s\n", registry_unavail_name(d->unavailable));
	printf("relay-tls:              %s\n", registry_tls_name(d->relay_tls));
	if (d->size_limit)
		printf("size-limit:             %llu\n", d->size_limit);
	else
		printf("size-limit:             default\n");
	if (d->lifetime)
		printf("lifetime:               %llds\n", d->lifetime);
	else
		printf("lifetime:               default\n");
	printf("milters:                %s\n", d->milters[0] ? d->milters : "default");
	ts = (time_t)d->updated;
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", gmtime(&ts));
	printf("updated:                %s\n", when);
}

struct list_ctx {
	bool json;
	int n;
	struct mx_buf *b;
};

static int
list_one(const struct domain *d, void *arg)
{
	struct list_ctx *x = arg;

	if (x->json) {
		if (x->n > 0)
			mx_buf_addstr(x->b, ",");
		domain_to_json(d, x->b);
	} else
		printf("%-32s %-28s %-28s %-5s %-6s %s\n", d->name,
		    d->backend[0] ? d->backend : "-", d->relay, registry_proxy_name(d->proxy),
		    registry_spf_name(d->spf), registry_rcpt_name(d->recipients));
	x->n++;
	return 0;
}

static int
cmd_domain(int argc, char **argv)
{
	struct registry *r;
	struct domain d;
	char name[ADDR_DOMAIN_MAX + 1], err[1024];
	int rc;

	if (argc < 1)
		usage();
	if (strcmp(argv[0], "list") == 0) {
		struct mx_buf b;
		struct list_ctx x = { want_json(argc, argv, 1), 0, &b };

		mx_buf_init(&b, 0);
		r = open_registry();
		if (x.json)
			mx_buf_addstr(&b, "[");
		else
			printf("%-32s %-28s %-28s %-5s %-6s %s\n", "DOMAIN", "BACKEND", "RELAY",
			    "PROXY", "SPF", "RECIPIENTS");
		if (registry_domain_foreach(r, list_one, &x, err, sizeof(err)) == -1)
			die("%s", err);
		if (x.json) {
			mx_buf_addstr(&b, "]\n");
			fwrite(b.data, 1, b.len, stdout);
		}
		mx_buf_free(&b);
		registry_close(&r);
		return 0;
	}
	if (argc < 2)
		usage();
	normalize_domain(argv[1], name);
	r = open_registry();
	if (strcmp(argv[0], "add") == 0) {
		domain_init(&d, name);
		apply_domain_opts(&d, argc - 2, argv + 2);
		d.created = d.updated = mx_time_now();
		if (registry_domain_add(r, &d, err, sizeof(err)) != 0)
			die("%s", err);
		printf("added %s\n", name);
	} else if (strcmp(argv[0], "set") == 0) {
		if (argc < 3)
			die("domain set %s: nothing to change", name);
		if ((rc = registry_domain_get(r, name, &d, err, sizeof(err))) != 0)
			die("%s", err);
		apply_domain_opts(&d, argc - 2, argv + 2);
		d.updated = mx_time_now();
		if (registry_domain_update(r, &d, err, sizeof(err)) != 0)
			die("%s", err);
		printf("updated %s\n", name);
	} else if (strcmp(argv[0], "del") == 0) {
		if (argc != 2)
			usage();
		if (registry_domain_del(r, name, err, sizeof(err)) != 0)
			die("%s", err);
		printf("deleted %s\n", name);
	} else if (strcmp(argv[0], "show") == 0) {
		bool json = want_json(argc, argv, 2);

		if (registry_domain_get(r, name, &d, err, sizeof(err)) != 0)
			die("%s", err);
		if (json) {
			struct mx_buf b;

			mx_buf_init(&b, 0);
			domain_to_json(&d, &b);
			mx_buf_addstr(&b, "\n");
			fwrite(b.data, 1, b.len, stdout);
			mx_buf_free(&b);
		} else
			print_domain_text(&d);
	} else
		usage();
	registry_close(&r);
	return 0;
}

static int
print_recipient(const char *address, void *arg)
{
	int *n = arg;

	if (n != NULL) {
		struct mx_buf b;

		mx_buf_init(&b, 0);
		if (*n > 0)
			mx_buf_addstr(&b, ",");
		mx_buf_json_str(&b, address);
		fwrite(b.data, 1, b.len, stdout);
		mx_buf_free(&b);
		(*n)++;
	} else
		printf("%s\n", address);
	return 0;
}

/* Recipient addresses: a dot-atom local part (no relay syntax) at the domain. */
static void
normalize_recipient(const char *domain, const char *in, char *out, size_t size)
{
	const char *at = strrchr(in, '@'), *p;
	char dom[ADDR_DOMAIN_MAX + 1];
	const char *err;
	size_t llen;

	if (at == NULL || at == in)
		die("recipient '%s' must be LOCAL@%s", in, domain);
	llen = (size_t)(at - in);
	if (llen > 64)
		die("recipient '%s': local part longer than 64 octets", in);
	for (p = in; p < at; p++)
		if ((unsigned char)*p <= 0x20 || *p == 0x7f || strchr("\"(),:;<>@[\\]%!", *p))
			die("recipient '%s': unsupported character in local part", in);
	if (addr_domain_normalize(at + 1, strlen(at + 1), dom, &err) == -1)
		die("recipient '%s': %s", in, err);
	if (strcmp(dom, domain) != 0)
		die("recipient '%s' is not in domain %s", in, domain);
	if (mx_snprintf(out, size, "%.*s@%s", (int)llen, in, dom) == -1)
		die("recipient '%s' too long", in);
}

static int
cmd_recipient(int argc, char **argv)
{
	struct registry *r;
	struct domain d;
	char name[ADDR_DOMAIN_MAX + 1], addr[512], err[1024];

	if (argc < 2)
		usage();
	normalize_domain(argv[1], name);
	r = open_registry();
	if (registry_domain_get(r, name, &d, err, sizeof(err)) != 0)
		die("%s", err);
	if (strcmp(argv[0], "list") == 0) {
		bool json = want_json(argc, argv, 2);
		int n = 0;

		if (json)
			fputs("[", stdout);
		if (registry_recipient_foreach(r, name, print_recipient, json ? &n : NULL, err,
		    sizeof(err)) == -1)
			die("%s", err);
		if (json)
			fputs("]\n", stdout);
	} else if (strcmp(argv[0], "add") == 0 || strcmp(argv[0], "del") == 0) {
		if (argc != 3)
			usage();
		normalize_recipient(name, argv[2], addr, sizeof(addr));
		if (argv[0][0] == 'a') {
			if (registry_recipient_add(r, name, addr, err, sizeof(err)) != 0)
				die("%s", err);
			printf("added %s\n", addr);
			if (d.recipients != REG_RCPT_LIST)
				fprintf(stderr, "mxedge: note: %s has recipient policy '%s'; the list "
				    "is used with --recipients list\n", name,
				    registry_rcpt_name(d.recipients));
		} else {
			if (registry_recipient_del(r, name, addr, err, sizeof(err)) != 0)
				die("%s", err);
			printf("deleted %s\n", addr);
		}
	} else
		usage();
	registry_close(&r);
	return 0;
}

/* One request to the daemon; returns the payload (NUL-terminated, caller frees). */
static char *
control_call(const char *request)
{
	struct sockaddr_un sun;
	struct mx_buf b;
	struct pollfd pfd;
	const char *msg, *payload;
	char *result;
	size_t reqlen = strlen(request), off = 0;
	int fd, rc;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (mx_strlcpy(sun.sun_path, conf.control_socket, sizeof(sun.sun_path)) == -1)
		die("control socket path too long");
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1)
		die("socket: %s", strerror(errno));
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1)
		die("cannot reach mxedged at %s: %s (is it running?)", conf.control_socket,
		    strerror(errno));
	while (off < reqlen) {
		ssize_t n = write(fd, request + off, reqlen - off);

		if (n <= 0)
			die("control socket write: %s", strerror(errno));
		off += (size_t)n;
	}
	mx_buf_init(&b, CONTROL_REPLY_MAX);
	pfd.fd = fd;
	pfd.events = POLLIN;
	for (;;) {
		ssize_t n;

		rc = poll(&pfd, 1, CONTROL_TIMEOUT_MS);
		if (rc == 0)
			die("mxedged did not answer within %d seconds", CONTROL_TIMEOUT_MS / 1000);
		if (rc < 0 && errno != EINTR)
			die("poll: %s", strerror(errno));
		if (mx_buf_reserve(&b, 65536) == -1)
			die("reply from mxedged too large");
		n = read(fd, b.data + b.len, 65536);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			die("control socket read: %s", strerror(errno));
		if (n == 0)
			break;
		b.len += (size_t)n;
	}
	close(fd);
	mx_buf_cstr(&b);
	rc = control_reply_parse((char *)b.data, b.len, &msg, &payload);
	if (rc == -1)
		die("malformed reply from mxedged");
	if (rc == 1)
		die("%s", msg);
	result = strdup(payload);
	mx_buf_free(&b);
	if (result == NULL)
		die("out of memory");
	return result;
}

/* Print flat "a.b.c value" lines from our own simple JSON (objects, scalars). */
static const char *
json_flatten(const char *p, char *prefix, size_t plen, size_t cap)
{
	while (*p == ' ' || *p == '\n')
		p++;
	if (*p == '{') {
		p++;
		while (*p != '\0' && *p != '}') {
			const char *key, *end;
			size_t klen, nplen;

			if (*p == ',')
				p++;
			if (*p != '"')
				return p;
			key = ++p;
			end = strchr(key, '"');
			if (end == NULL)
				return p + strlen(p);
			klen = (size_t)(end - key);
			p = end + 1;
			if (*p == ':')
				p++;
			nplen = plen;
			if (nplen + klen + 2 < cap) {
				if (nplen > 0)
					prefix[nplen++] = '.';
				memcpy(prefix + nplen, key, klen);
				nplen += klen;
				prefix[nplen] = '\0';
			}
			p = json_flatten(p, prefix, nplen, cap);
			prefix[plen] = '\0';
		}
		return *p == '}' ? p + 1 : p;
	}
	if (*p == '[') {
		const char *start = p;
		int depth = 0;

		for (; *p != '\0'; p++) {
			if (*p == '[')
				depth++;
			else if (*p == ']' && --depth == 0) {
				p++;
				break;
			}
		}
		printf("%-40s %.*s\n", prefix, (int)(p - start), start);
		return p;
	}
	{
		const char *start = p;

		if (*p == '"') {
			for (p++; *p != '\0' && *p != '"'; p++)
				if (*p == '\\' && p[1] != '\0')
					p++;
			if (*p == '"')
				p++;
			printf("%-40s %.*s\n", prefix, (int)(p - start - 2), start + 1);
		} else {
			while (*p != '\0' && *p != ',' && *p != '}' && *p != '\n')
				p++;
			printf("%-40s %.*s\n", prefix, (int)(p - start), start);
		}
	}
	return p;
}

static int
cmd_status(int argc, char **argv)
{
	bool json = want_json(argc, argv, 0);
	char *payload = control_call("status\n");
	char prefix[512] = "";

	if (json)
		fputs(payload, stdout);
	else
		json_flatten(payload, prefix, 0, sizeof(prefix));
	free(payload);
	return 0;
}

/* Pass a command through to the daemon, words checked for the control protocol. */
static int
cmd_passthrough(int argc, char **argv)
{
	struct mx_buf req;
	char *payload;
	int i;

	mx_buf_init(&req, CONTROL_LINE_MAX);
	for (i = 0; i < argc; i++) {
		const char *p;

		for (p = argv[i]; *p != '\0'; p++)
			if ((unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e)
				die("argument '%s' has a space or control character", argv[i]);
		if (argv[i][0] == '\0' || mx_buf_printf(&req, "%s%s", i ? " " : "", argv[i]) == -1)
			die("request too long");
	}
	if (mx_buf_addstr(&req, "\n") == -1)
		die("request too long");
	payload = control_call(mx_buf_cstr(&req));
	fputs(payload, stdout);
	free(payload);
	mx_buf_free(&req);
	return 0;
}

int
main(int argc, char **argv)
{
	char err[1024];
	int ch;

	while ((ch = getopt(argc, argv, "+c:hV")) != -1) {
		switch (ch) {
		case 'c':
			conf_path = optarg;
			break;
		case 'V':
			printf("mxedge %s\n", PACKAGE_VERSION);
			return 0;
		default:
			usage();
		}
	}
	argc -= optind;
	argv += optind;
	if (argc < 1)
		usage();
	if (conf_path == NULL)
		conf_path = conf_default_path();
	if (conf_load(conf_path, &conf, err, sizeof(err)) == -1)
		die("%s", err);
	if (strcmp(argv[0], "domain") == 0)
		return cmd_domain(argc - 1, argv + 1);
	if (strcmp(argv[0], "recipient") == 0)
		return cmd_recipient(argc - 1, argv + 1);
	if (strcmp(argv[0], "status") == 0)
		return cmd_status(argc - 1, argv + 1);
	if (strcmp(argv[0], "reload") == 0) {
		if (argc != 1)
			usage();
		return cmd_passthrough(argc, argv);
	}
	if (strcmp(argv[0], "queue") == 0) {
		if (argc < 2)
			usage();
		return cmd_passthrough(argc, argv);
	}
	usage();
}
