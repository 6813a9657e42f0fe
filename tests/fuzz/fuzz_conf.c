/*
 * libFuzzer target for the config file parser.  The config is written by
 * the operator, so it is trusted to mean what it says, but not to be well
 * formed: a truncated file, a stray NUL or a 5000-byte line must give a
 * "FILE:LINE: message" error and never a half-filled struct.  Each input is
 * parsed from memory (conf_load_string) and, when it holds no NUL, again
 * from a file (conf_load on a memfd), and the two must agree on the result,
 * the error text after the name, and every field; a file with a NUL in it
 * is refused.  Whatever is accepted is
 * checked against the parser's promises: strings terminated and free of
 * control octets, paths absolute, numbers in their ranges, listeners of a
 * known family with no duplicates, milters well named and addressed.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc -I<dir with config.h> \
 *       tests/fuzz/fuzz_conf.c src/conf.c src/addr.c src/util.c src/log.c -o fuzz_conf
 *   ./fuzz_conf -max_total_time=60 corpus/ tests/data/   (seeds: tests/data/conf-*.conf)
 */
#include "config.h"

#include <sys/mman.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) { fprintf(stderr, "check failed: %s (line %d)\n", #c, \
	__LINE__); abort(); } } while (0)

#define FUZZ_NAME "fuzz.conf"

static struct conf mem_conf, file_conf;

/* A string field: terminated inside its array and free of control octets. */
#define CHECK_STR(field) do {						\
	CHECK(memchr((field), '\0', sizeof(field)) != NULL);		\
	CHECK(!mx_str_has_ctl(field));					\
} while (0)

static void
fuzz_check_listen(const struct conf_listen *l, int n)
{
	int i, j;

	CHECK(n >= 0 && n <= CONF_MAX_LISTEN);
	for (i = 0; i < n; i++) {
		CHECK(l[i].addr.ss_family == AF_INET || l[i].addr.ss_family == AF_INET6);
		CHECK(l[i].addrlen == (l[i].addr.ss_family == AF_INET ?
		    sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6)));
		CHECK((unsigned)l[i].service < FRONT_NSERVICES);
		CHECK_STR(l[i].text);
		for (j = 0; j < i; j++)
			CHECK(l[i].addrlen != l[j].addrlen ||
			    memcmp(&l[i].addr, &l[j].addr, l[i].addrlen) != 0);
	}
}

static void
fuzz_check_milters(const struct conf *c)
{
	int i, j;
	size_t k;

	CHECK(c->n_milters >= 0 && c->n_milters <= CONF_MAX_MILTERS);
	for (i = 0; i < c->n_milters; i++) {
		const struct conf_milter *m = &c->milters[i];

		CHECK_STR(m->name);
		CHECK_STR(m->address);
		CHECK(m->name[0] != '\0' && strcmp(m->name, "none") != 0);
		for (k = 0; m->name[k] != '\0'; k++)
			CHECK(strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
			    "0123456789-_", m->name[k]) != NULL);
		CHECK(strncmp(m->address, "unix:/", 6) == 0 || strncmp(m->address, "inet:", 5) == 0);
		CHECK(m->connect_timeout >= 1 && m->connect_timeout <= 3600);
		CHECK(m->command_timeout >= 1 && m->command_timeout <= 3600);
		CHECK(m->content_timeout >= 1 && m->content_timeout <= 3600);
		CHECK(m->on_failure >= MILTER_FAIL_TEMPFAIL && m->on_failure <= MILTER_FAIL_421);
		for (j = 0; j < i; j++)
			CHECK(strcmp(m->name, c->milters[j].name) != 0);
	}
}

/* What conf_load promises about a struct it accepted. */
static void
fuzz_check_conf(const struct conf *c)
{
	int i;

	CHECK_STR(c->hostname);
	CHECK(c->hostname[0] != '\0');
	CHECK_STR(c->user);
	CHECK_STR(c->state_dir);
	CHECK_STR(c->spool_dir);
	CHECK_STR(c->pid_file);
	CHECK_STR(c->control_socket);
	CHECK_STR(c->registry);
	CHECK_STR(c->tls_certificate);
	CHECK_STR(c->tls_key);
	CHECK_STR(c->tls_priority);
	CHECK_STR(c->relay_tls_priority);
	CHECK_STR(c->resolver);
	CHECK_STR(c->smtp_banner);
	CHECK_STR(c->spf_user);
	CHECK_STR(c->authserv_id);
	CHECK(c->state_dir[0] == '/' && c->spool_dir[0] == '/' && c->pid_file[0] == '/');
	CHECK(c->control_socket[0] == '/' && strlen(c->control_socket) < 108);
	CHECK(c->tls_certificate[0] == '/' && c->tls_key[0] == '/');
	CHECK(strncmp(c->registry, "sqlite:/", 8) == 0);
	CHECK(strcmp(c->log_target, "syslog") == 0 || strcmp(c->log_target, "stderr") == 0);
	CHECK(c->log_level >= 0 && c->log_level <= 3);

	fuzz_check_listen(c->smtp_listen, c->n_smtp_listen);
	fuzz_check_listen(c->front_listen, c->n_front_listen);

	CHECK(c->front_hello_timeout >= 1 && c->front_hello_timeout <= 300);
	CHECK(c->front_hello_max >= 512 && c->front_hello_max <= 65536);
	CHECK(c->front_connect_timeout >= 1 && c->front_connect_timeout <= 300);
	for (i = 0; i < FRONT_NSERVICES; i++)
		CHECK(c->front_idle_timeout[i] >= 1 && c->front_idle_timeout[i] <= 86400);
	CHECK(c->front_max_connections >= 1 && c->front_max_per_client >= 1);

	CHECK(c->smtp_max_connections >= 1 && c->smtp_max_per_client >= 1);
	CHECK(c->smtp_max_recipients >= 1);
	CHECK(c->smtp_max_message_size >= 1024);
	CHECK(c->smtp_timeout_command >= 1 && c->smtp_timeout_data >= 1);
	CHECK(c->smtp_max_errors >= 1);
	CHECK(c->smtp_greet_delay >= 0 && c->smtp_greet_delay <= 60);

	CHECK(c->queue_lifetime >= 60);
	CHECK(c->queue_retry_min >= 1 && c->queue_retry_min <= c->queue_retry_max);
	CHECK(c->queue_delay_warning >= 0);
	CHECK(c->relay_connect_timeout >= 1 && c->relay_command_timeout >= 1);
	CHECK(c->relay_max_concurrency >= 1 && c->relay_destination_concurrency >= 1);
	CHECK(c->relay_mx_port >= 1 && c->relay_mx_port <= 65535);

	fuzz_check_milters(c);
	CHECK(c->spf_timeout >= 1 && c->verify_timeout >= 1);
	CHECK(c->verify_positive_ttl >= 0 && c->verify_negative_ttl >= 0);
}

/* The same text read from a file: conf_load on a memfd, by its /proc path. */
static void
fuzz_compare_file(const char *text, size_t len, int mem_rc, const char *mem_err)
{
	char path[64], err[1024];
	const char *tail_mem, *tail_file;
	int fd, rc;

	fd = memfd_create("fuzz-conf", 0);
	if (fd == -1)
		return;
	if (write(fd, text, len) != (ssize_t)len ||
	    mx_snprintf(path, sizeof(path), "/proc/self/fd/%d", fd) == -1) {
		close(fd);
		return;
	}
	err[0] = '\0';
	rc = conf_load(path, &file_conf, err, sizeof(err));
	close(fd);
	CHECK(rc == mem_rc);
	if (rc == -1) {
		/* Same message after the name ("fuzz.conf:3: x" against "/proc/...:3: x"). */
		CHECK(strncmp(err, path, strlen(path)) == 0);
		tail_file = err + strlen(path);
		tail_mem = mem_err + strlen(FUZZ_NAME);
		CHECK(strcmp(tail_mem, tail_file) == 0);
		return;
	}
	/* Same struct, but for the name it came from. */
	memcpy(file_conf.path, mem_conf.path, sizeof(file_conf.path));
	CHECK(memcmp(&file_conf, &mem_conf, sizeof(mem_conf)) == 0);
}

/* A file holding a NUL byte is refused, whatever else it says. */
static void
fuzz_file_refused(const uint8_t *data, size_t size)
{
	char path[64], err[1024];
	int fd, rc;

	fd = memfd_create("fuzz-conf", 0);
	if (fd == -1)
		return;
	if (write(fd, data, size) != (ssize_t)size ||
	    mx_snprintf(path, sizeof(path), "/proc/self/fd/%d", fd) == -1) {
		close(fd);
		return;
	}
	rc = conf_load(path, &file_conf, err, sizeof(err));
	close(fd);
	CHECK(rc == -1);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[1024];
	char *text;
	int rc;

	if (size > 64 * 1024)
		return 0;
	if ((text = malloc(size + 1)) == NULL)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';

	memset(err, 'x', sizeof(err));
	err[sizeof(err) - 1] = '\0';
	rc = conf_load_string(FUZZ_NAME, text, &mem_conf, err, sizeof(err));
	CHECK(rc == 0 || rc == -1);
	if (rc == 0) {
		fuzz_check_conf(&mem_conf);
		CHECK(strcmp(mem_conf.path, FUZZ_NAME) == 0);
	} else {
		/* Every error names the file (and a line when there is one). */
		CHECK(strncmp(err, FUZZ_NAME ":", strlen(FUZZ_NAME) + 1) == 0);
		CHECK(strlen(err) > strlen(FUZZ_NAME) + 2);
		CHECK(strchr(err, '\n') == NULL);
	}
	/*
	 * A NUL ends the string early but not the file, where it must be refused
	 * (an operator's editor never writes one: the file is damaged).
	 */
	if (memchr(data, '\0', size) == NULL)
		fuzz_compare_file(text, size, rc, err);
	else
		fuzz_file_refused(data, size);
	free(text);
	return 0;
}
