/*
 * Drives the milter client (src/milter.c) through a scripted SMTP session,
 * so tests/integration/milter-t can check it against real libmilter
 * milters without the SMTP server.  Not a test on its own.
 *
 *   milter-drive [-m 'NAME ADDRESS [OPT=VALUE...]']... [-c CLIENT_IP] CMD...
 *
 * CMD is one of
 *   helo:NAME  tls:VERSION:CIPHER  qid:ID  mail:PATH[,ARG...]
 *   rcpt:PATH[:MILTERLIST]  data  header:NAME:VALUE  eoh  body:TEXT  eom
 *   msg:FILE (headers, body and eom from a file)  abort  wait:SECONDS  free
 * TEXT may use "\n" for CRLF.  Each asynchronous command prints one line
 *   CMD -> DECISION [CODE REPLY] (SECONDS)
 * and end of message also prints its modifications:
 *   mod KIND INDEX NAME: VALUE | quarantine REASON | body LENGTH
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "daemon.h"
#include "log.h"
#include "milter.h"
#include "stats.h"

struct daemon *mxd;

static struct event_base *base;
static bool done;
static const char *current;
static uint64_t started;

static const char *const mod_names[] = {
	"addheader", "insheader", "chgheader", "addrcpt", "delrcpt", "chgfrom"
};

static void
print_escaped(const char *s)
{
	for (; *s != '\0'; s++) {
		if (*s == '\r')
			fputs("\\r", stdout);
		else if (*s == '\n')
			fputs("\\n", stdout);
		else
			putchar(*s);
	}
}

static void
on_result(const struct milter_result *r, void *arg)
{
	size_t i;

	printf("%s -> %s", current, milter_decision_name(r->decision));
	if (r->decision != MILTER_D_CONTINUE) {
		printf(" %d ", r->code);
		print_escaped(r->reply != NULL ? r->reply : "");
	}
	printf(" (%.1fs)\n", (double)(mx_now_usec() - started) / 1e6);
	for (i = 0; i < r->nmods; i++) {
		printf("mod %s %u %s: ", mod_names[r->mods[i].kind], r->mods[i].index,
		    r->mods[i].name != NULL ? r->mods[i].name : "");
		print_escaped(r->mods[i].value);
		putchar('\n');
	}
	if (r->quarantine)
		printf("quarantine %s\n", r->quarantine_reason);
	if (r->body_replaced)
		printf("body %zu\n", r->body_len);
	fflush(stdout);
	done = true;
}

static void
run_until_done(void)
{
	done = false;
	while (!done)
		if (event_base_loop(base, EVLOOP_ONCE) == -1)
			break;
}

/* "a\nb" -> "a\r\nb" */
static char *
unescape(const char *s)
{
	size_t n = strlen(s), o = 0, i;
	char *d = malloc(2 * n + 1);

	if (d == NULL)
		exit(1);
	for (i = 0; i < n; i++) {
		if (s[i] == '\\' && s[i + 1] == 'n') {
			d[o++] = '\r';
			d[o++] = '\n';
			i++;
		} else
			d[o++] = s[i];
	}
	d[o] = '\0';
	return d;
}

static unsigned char *
read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	unsigned char *buf;
	long n;

	if (f == NULL || fseek(f, 0, SEEK_END) == -1 || (n = ftell(f)) < 0 ||
	    fseek(f, 0, SEEK_SET) == -1 || (buf = malloc((size_t)n + 1)) == NULL ||
	    fread(buf, 1, (size_t)n, f) != (size_t)n) {
		perror(path);
		exit(1);
	}
	fclose(f);
	*len = (size_t)n;
	return buf;
}

static void
wait_seconds(double s)
{
	struct timeval tv = { (time_t)s, (suseconds_t)((s - (double)(time_t)s) * 1e6) };

	event_base_loopexit(base, &tv);
	event_base_dispatch(base);
}

int
main(int argc, char **argv)
{
	struct mx_buf conftext;
	struct conf *conf;
	struct milter_set *set;
	struct milter_chain *chain;
	struct milter_session_info info;
	struct sockaddr_in client, local;
	char err[1024];
	int ch, i;

	log_init("milter-drive", true, LOG_LEVEL_DEBUG);
	mx_buf_init(&conftext, 0);
	mx_buf_addstr(&conftext, "hostname mx.test\n");
	memset(&client, 0, sizeof(client));
	client.sin_family = AF_INET;
	client.sin_port = htons(40000);
	client.sin_addr.s_addr = htonl(0xc0000201);	/* 192.0.2.1 */
	local = client;
	local.sin_port = htons(25);
	local.sin_addr.s_addr = htonl(0x7f000001);
	while ((ch = getopt(argc, argv, "m:c:")) != -1) {
		switch (ch) {
		case 'm':
			mx_buf_printf(&conftext, "milter %s\n", optarg);
			break;
		case 'c':
			if (inet_pton(AF_INET, optarg, &client.sin_addr) != 1) {
				fprintf(stderr, "bad -c %s\n", optarg);
				return 2;
			}
			break;
		default:
			fprintf(stderr, "usage: milter-drive [-m MILTER]... [-c IP] CMD...\n");
			return 2;
		}
	}
	if ((conf = calloc(1, sizeof(*conf))) == NULL)
		return 1;
	if (conf_load_string("milter-drive", mx_buf_cstr(&conftext), conf, err,
	    sizeof(err)) == -1) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	mx_buf_free(&conftext);
	if ((set = milter_set_new(conf, err, sizeof(err))) == NULL) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	if ((base = event_base_new()) == NULL)
		return 1;
	memset(&info, 0, sizeof(info));
	info.client = (struct sockaddr *)&client;
	info.local = (struct sockaddr *)&local;
	info.hostname = "mx.test";
	info.session_id = 0x1234;
	if ((chain = milter_chain_new(base, set, &info)) == NULL) {
		fprintf(stderr, "cannot create the chain\n");
		return 1;
	}
	milter_set_unref(&set);

	for (i = optind; i < argc; i++) {
		char *cmd = argv[i], *arg = strchr(cmd, ':'), *msg = NULL;
		int r = 0;
		bool async = true;

		current = cmd;
		started = mx_now_usec();
		if (arg != NULL)
			arg++;
		if (strncmp(cmd, "helo:", 5) == 0) {
			milter_chain_helo(chain, arg);
			async = false;
		} else if (strncmp(cmd, "tls:", 4) == 0) {
			char *c2 = strchr(arg, ':');

			if (c2 != NULL)
				*c2++ = '\0';
			milter_chain_tls(chain, arg, c2);
			async = false;
		} else if (strncmp(cmd, "qid:", 4) == 0) {
			milter_chain_queue_id(chain, arg);
			async = false;
		} else if (strncmp(cmd, "mail:", 5) == 0) {
			const char *args[8];
			size_t n = 0;
			char *p = strdup(arg), *comma;

			while ((comma = strrchr(p, ',')) != NULL && n < 8) {
				*comma = '\0';
				args[n++] = comma + 1;
			}
			r = milter_chain_mail(chain, p, args, n);
			free(p);
			async = false;
		} else if (strncmp(cmd, "rcpt:", 5) == 0) {
			char *p = strdup(arg), *list = strchr(p, '>');

			if (list != NULL && list[1] == ':') {
				list[1] = '\0';
				list += 2;
			} else
				list = NULL;
			r = milter_chain_rcpt(chain, p, NULL, 0, list != NULL ? list : "",
			    on_result, NULL);
			free(p);
		} else if (strcmp(cmd, "data") == 0) {
			r = milter_chain_data(chain, on_result, NULL);
		} else if (strncmp(cmd, "header:", 7) == 0) {
			char *p = strdup(arg), *colon = strchr(p, ':'), *v;

			if (colon != NULL)
				*colon++ = '\0';
			v = unescape(colon != NULL ? colon : "");
			r = milter_chain_header(chain, p, v, on_result, NULL);
			free(p);
			free(v);
		} else if (strcmp(cmd, "eoh") == 0) {
			r = milter_chain_eoh(chain, on_result, NULL);
		} else if (strncmp(cmd, "body:", 5) == 0) {
			msg = unescape(arg);
			r = milter_chain_body(chain, msg, strlen(msg), on_result, NULL);
		} else if (strcmp(cmd, "eom") == 0) {
			r = milter_chain_eom(chain, on_result, NULL);
		} else if (strncmp(cmd, "msg:", 4) == 0) {
			size_t len;
			unsigned char *m = read_file(arg, &len);

			r = milter_chain_message(chain, m, len, on_result, NULL);
			if (r == 0)
				run_until_done();
			free(m);
			continue;
		} else if (strcmp(cmd, "abort") == 0) {
			milter_chain_abort(chain);
			async = false;
		} else if (strncmp(cmd, "wait:", 5) == 0) {
			wait_seconds(atof(arg));
			async = false;
		} else if (strcmp(cmd, "free") == 0) {
			milter_chain_free(&chain);
			async = false;
		} else {
			fprintf(stderr, "unknown command %s\n", cmd);
			return 2;
		}
		if (r == -1) {
			printf("%s -> error %s\n", cmd, strerror(errno));
			fflush(stdout);
		} else if (async)
			run_until_done();
		free(msg);
	}
	milter_chain_free(&chain);
	/* Let QUIT reach the milters, then tidy up. */
	event_base_dispatch(base);
	event_base_free(base);
	free(conf);
	stats_free();
	return 0;
}
