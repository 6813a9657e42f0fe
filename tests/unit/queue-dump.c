/*
 * queue-dump: print a spool file for the integration tests, verified by
 * queue_file_read_fd() (exit 2 when it is not a complete, intact file).
 *
 *   queue-dump FILE      the envelope, one "name value" line per field and
 *                        one "rcpt ADDR notify=N orcpt=X" line per recipient
 *   queue-dump -b FILE   the body, raw, on stdout
 *   queue-dump -v FILE.. verify many files: "NAME ok SENDER" or "NAME bad
 *                        REASON" per file (exit 2 if any is bad)
 *
 * Not a test on its own: a helper for tests/integration/smtp-*.
 */
#include "config.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "queue_file.h"

static int
dump_body(int fd, const struct queue_file_info *info)
{
	unsigned char buf[65536];
	uint64_t off = info->body_off, left = info->body_len;

	while (left > 0) {
		size_t want = left < sizeof(buf) ? (size_t)left : sizeof(buf);
		ssize_t n = pread(fd, buf, want, (off_t)off);

		if (n <= 0)
			return -1;
		if (fwrite(buf, 1, (size_t)n, stdout) != (size_t)n)
			return -1;
		off += (uint64_t)n;
		left -= (uint64_t)n;
	}
	return fflush(stdout) == 0 ? 0 : -1;
}

static void
dump_envelope(const struct queue_envelope *env, const struct queue_file_info *info)
{
	size_t i;

	printf("id %s\n", env->id);
	printf("arrival %lld\n", (long long)env->arrival);
	printf("next_attempt %lld\n", (long long)env->next_attempt);
	printf("sender %s\n", env->sender);
	printf("client_addr %s\n", env->client_addr);
	printf("helo %s\n", env->helo);
	printf("tls_version %s\n", env->tls_version);
	printf("tls_cipher %s\n", env->tls_cipher);
	printf("smtputf8 %d\n", env->smtputf8 ? 1 : 0);
	printf("body %d\n", (int)env->body);
	printf("ret %d\n", (int)env->ret);
	printf("envid %s\n", env->envid);
	printf("size %llu\n", (unsigned long long)env->size);
	printf("nrcpts %zu\n", env->nrcpts);
	for (i = 0; i < env->nrcpts; i++)
		printf("rcpt %s notify=%u orcpt=%s state=%d\n", env->rcpts[i].addr,
		    env->rcpts[i].notify, env->rcpts[i].orcpt, (int)env->rcpts[i].state);
	printf("body_len %llu\n", (unsigned long long)info->body_len);
}

/* One line per file; returns the number of bad ones. */
static int
verify_files(int n, char **files)
{
	struct queue_envelope env;
	struct queue_file_info info;
	enum queue_file_status st;
	int i, fd, bad = 0;

	for (i = 0; i < n; i++) {
		const char *name = strrchr(files[i], '/') ? strrchr(files[i], '/') + 1 : files[i];

		if ((fd = open(files[i], O_RDONLY | O_CLOEXEC)) == -1) {
			printf("%s bad open\n", name);
			bad++;
			continue;
		}
		st = queue_file_read_fd(fd, &env, &info);
		if (st == QUEUE_FILE_OK)
			printf("%s ok %s\n", name, env.sender[0] ? env.sender : "<>");
		else {
			printf("%s bad %s\n", name, queue_file_strerror(st));
			bad++;
		}
		queue_envelope_clear(&env);
		close(fd);
	}
	return bad;
}

int
main(int argc, char **argv)
{
	struct queue_envelope env;
	struct queue_file_info info;
	enum queue_file_status st;
	bool body = false;
	int fd, rc = 0;

	if (argc >= 2 && strcmp(argv[1], "-v") == 0)
		return verify_files(argc - 2, argv + 2) == 0 ? 0 : 2;
	if (argc == 3 && strcmp(argv[1], "-b") == 0) {
		body = true;
		argv++;
		argc--;
	}
	if (argc != 2) {
		fprintf(stderr, "usage: queue-dump [-b] FILE\n");
		return 1;
	}
	if ((fd = open(argv[1], O_RDONLY | O_CLOEXEC)) == -1) {
		perror(argv[1]);
		return 1;
	}
	st = queue_file_read_fd(fd, &env, &info);
	if (st != QUEUE_FILE_OK) {
		fprintf(stderr, "%s: %s\n", argv[1], queue_file_strerror(st));
		close(fd);
		return 2;
	}
	if (body) {
		if (dump_body(fd, &info) == -1) {
			perror("body");
			rc = 1;
		}
	} else
		dump_envelope(&env, &info);
	queue_envelope_clear(&env);
	close(fd);
	return rc;
}
