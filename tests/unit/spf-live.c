/*
 * The SPF helper as the daemon runs it, against a real DNS server: started
 * by re-executing this program (like mxedged, main() hands over to
 * spf_helper_exec_main() first), as nobody when run as root, with the
 * production engine (libspf2 over libunbound) pointed at the dnsmasq that
 * tests/integration/spf-t starts.  Prints TAP.  Not a test on its own.
 *
 *   spf-live DNSPORT DNSLOG      (DNSLOG: dnsmasq's log, with --log-queries)
 */
#include "config.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "basic.h"
#include "daemon.h"
#include "log.h"
#include "spf.h"
#include "spf_helper.h"

struct daemon *mxd;

static struct event_base *base;
static int answers;
static struct spf_result last;
static char last_comment[SPF_COMMENT_MAX + 1];

static void
on_result(const struct spf_result *res, void *arg)
{
	last = *res;
	mx_strlcpy(last_comment, res->comment, sizeof(last_comment));
	last.comment = last_comment;
	answers++;
}

static enum spf_res
check(struct spf_client *cl, const char *ip, const char *helo, const char *sender)
{
	struct sockaddr_in s4;
	int before = answers;

	memset(&s4, 0, sizeof(s4));
	s4.sin_family = AF_INET;
	inet_pton(AF_INET, ip, &s4.sin_addr);
	if (spf_client_check(cl, (struct sockaddr *)&s4, helo, sender, on_result, NULL) == NULL)
		bail("spf_client_check: %s", strerror(errno));
	while (answers == before)
		if (event_base_loop(base, EVLOOP_ONCE) == -1)
			break;
	return last.result;
}

static struct spf_client *
start(struct spf_spawn *sp, const char *resolver, uint32_t timeout)
{
	struct spf_config_msg cfg;
	char err[256];
	pid_t pid;
	int fd;

	memset(&cfg, 0, sizeof(cfg));
	cfg.timeout = timeout;
	cfg.log_stderr = true;
	cfg.log_level = LOG_LEVEL_WARN;
	mx_strlcpy(cfg.resolver, resolver, sizeof(cfg.resolver));
	mx_strlcpy(cfg.receiver, "mx.test", sizeof(cfg.receiver));
	if ((fd = spf_helper_spawn(sp, &pid, err, sizeof(err))) == -1)
		bail("spawn: %s", err);
	return spf_client_new(base, sp, fd, pid, &cfg);
}

/* What descriptor fd of process pid is ("socket:[123]"), or "". */
static void
fd_link(pid_t pid, int fd, char *out, size_t size)
{
	char path[64];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/%ld/fd/%d", (long)pid, fd);
	if ((n = readlink(path, out, size - 1)) < 0)
		n = 0;
	out[n] = '\0';
}

/*
 * The helper's descriptors, as "0 1 2 3", except the sockets to its
 * workers (above 4), which are counted in *nsock.
 */
static void
helper_fds(pid_t pid, char *out, size_t size, int *nsock)
{
	char path[64], link[128];
	DIR *d;
	struct dirent *e;
	int fds[64], n = 0, i, j;

	snprintf(path, sizeof(path), "/proc/%ld/fd", (long)pid);
	out[0] = '\0';
	if ((d = opendir(path)) == NULL)
		return;
	while ((e = readdir(d)) != NULL && n < 64)
		if (e->d_name[0] != '.')
			fds[n++] = atoi(e->d_name);
	closedir(d);
	for (i = 1; i < n; i++)
		for (j = i; j > 0 && fds[j - 1] > fds[j]; j--) {
			int t = fds[j];

			fds[j] = fds[j - 1];
			fds[j - 1] = t;
		}
	*nsock = 0;
	for (i = 0; i < n; i++) {
		fd_link(pid, fds[i], link, sizeof(link));
		if (fds[i] > 4 && strncmp(link, "socket:", 7) == 0) {
			(*nsock)++;
			continue;
		}
		snprintf(out + strlen(out), size - strlen(out), "%s%d", i ? " " : "", fds[i]);
	}
}

/* The helper's workers (its children), at most max; how many. */
static int
helper_workers(pid_t helper, pid_t *pids, int max)
{
	char path[64], line[512], *p;
	DIR *d;
	struct dirent *e;
	FILE *f;
	int n = 0;
	long ppid;

	if ((d = opendir("/proc")) == NULL)
		return 0;
	while ((e = readdir(d)) != NULL && n < max) {
		if (e->d_name[0] < '1' || e->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/stat", e->d_name);
		if ((f = fopen(path, "r")) == NULL)
			continue;
		/* pid (comm) state ppid ...: the comm may hold spaces, so after the last ')'. */
		if (fgets(line, sizeof(line), f) != NULL && (p = strrchr(line, ')')) != NULL &&
		    sscanf(p + 1, " %*c %ld", &ppid) == 1 && ppid == (long)helper)
			pids[n++] = (pid_t)atol(e->d_name);
		fclose(f);
	}
	closedir(d);
	return n;
}

/* Whether process pid holds the descriptor link (a "socket:[inode]"). */
static bool
holds(pid_t pid, const char *link)
{
	char path[64], l[128];
	DIR *d;
	struct dirent *e;
	bool found = false;

	snprintf(path, sizeof(path), "/proc/%ld/fd", (long)pid);
	if ((d = opendir(path)) == NULL)
		return false;
	while (!found && (e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		fd_link(pid, atoi(e->d_name), l, sizeof(l));
		found = strcmp(l, link) == 0;
	}
	closedir(d);
	return found;
}

/* Lines of the dnsmasq log that hold both strings. */
static int
log_count(const char *file, const char *a, const char *b)
{
	char line[512];
	FILE *f;
	int n = 0;

	if ((f = fopen(file, "r")) == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL)
		if (strstr(line, a) != NULL && strstr(line, b) != NULL)
			n++;
	fclose(f);
	return n;
}

static long
helper_uid(pid_t pid)
{
	char path[64], line[256];
	FILE *f;
	long uid = -1;

	snprintf(path, sizeof(path), "/proc/%ld/status", (long)pid);
	if ((f = fopen(path, "r")) == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL)
		if (strncmp(line, "Uid:", 4) == 0)
			uid = strtol(line + 4, NULL, 10);
	fclose(f);
	return uid;
}

int
main(int argc, char **argv)
{
	struct spf_spawn sp;
	struct spf_client *cl;
	char resolver[64], fds[128];
	struct sockaddr_in silent;
	socklen_t slen = sizeof(silent);
	uint64_t t0;
	int sfd, nsock, nworkers, i;
	pid_t workers[64];
	char daemon_sock[128];
	const char *dnslog;

	spf_helper_exec_main(argc, argv);	/* as mxedged does */
	if (argc != 3)
		bail("usage: spf-live DNSPORT DNSLOG");
	dnslog = argv[2];
	log_init("spf-live", true, LOG_LEVEL_WARN);
	plan_lazy();
	if ((base = event_base_new()) == NULL)
		bail("event_base_new");

	memset(&sp, 0, sizeof(sp));
	if ((sp.exe_fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC)) == -1)
		bail("/proc/self/exe: %s", strerror(errno));
	if (geteuid() == 0) {
		struct passwd *pw = getpwnam("nobody");

		if (pw == NULL)
			bail("no user nobody");
		sp.switch_user = true;
		sp.uid = pw->pw_uid;
		sp.gid = pw->pw_gid;
	}
	snprintf(resolver, sizeof(resolver), "127.0.0.1@%s", argv[1]);
	cl = start(&sp, resolver, 5);

	is_int(SPF_RES_PASS, check(cl, "192.0.2.1", "c.test", "a@spf-pass.test"),
	    "pass from the DNS server's record");
	is_int(SPF_RES_FAIL, check(cl, "192.0.2.9", "c.test", "a@spf-pass.test"),
	    "fail for an address not listed");
	ok(strstr(last.comment, "mx.test") != NULL, "comment: %s", last.comment);
	is_int(SPF_RES_FAIL, check(cl, "192.0.2.1", "c.test", "a@spf-fail.test"), "-all fails");
	is_int(SPF_RES_SOFTFAIL, check(cl, "192.0.2.1", "c.test", "a@spf-softfail.test"),
	    "~all softfails");
	is_int(SPF_RES_NONE, check(cl, "192.0.2.1", "c.test", "a@nospf.test"),
	    "no record: none");
	is_int(SPF_RES_PASS, check(cl, "192.0.2.7", "c.test", "a@spf-mx.test"),
	    "mx mechanism through the MX and its address");
	is_int(SPF_RES_PASS, check(cl, "192.0.2.1", "c.test", "a@split.test"),
	    "a TXT record in two strings is joined");
	is_int(SPF_RES_PASS, check(cl, "192.0.2.1", "helo.test", ""),
	    "null sender: the HELO identity passes");
	ok(last.helo_identity, "and is the HELO identity");
	is_int(SPF_RES_FAIL, check(cl, "192.0.2.9", "helo.test", ""),
	    "null sender: the HELO identity fails");

	/*
	 * One worker keeps libunbound's cache from check to check: the
	 * second check asks the DNS server nothing.  (dnsmasq logs queries in
	 * order, so once a later query shows, the earlier ones have too.)
	 */
	is_int(SPF_RES_PASS, check(cl, "192.0.2.1", "c.test", "a@cache.test"), "a first check");
	is_int(SPF_RES_PASS, check(cl, "192.0.2.1", "c.test", "b@cache.test"),
	    "a second check of the same domain");
	is_int(SPF_RES_NONE, check(cl, "192.0.2.1", "c.test", "a@flush.test"), "another domain");
	t0 = mx_now_usec();
	while (log_count(dnslog, "query[TXT]", " flush.test ") < 1 &&
	    mx_now_usec() - t0 < 10000000)
		usleep(20000);
	is_int(1, log_count(dnslog, "query[TXT]", " cache.test "),
	    "the second check was answered from the worker's cache");

	/* What the helper and its workers hold. */
	helper_fds(spf_client_pid(cl), fds, sizeof(fds), &nsock);
	is_string("0 1 2 3 4", fds, "the helper holds only stdio, its socket and its signalfd");
	nworkers = helper_workers(spf_client_pid(cl), workers, 64);
	ok(nworkers >= 1, "it has a worker (%d)", nworkers);
	is_int(nworkers, nsock, "and one socket to each worker");
	fd_link(spf_client_pid(cl), 3, daemon_sock, sizeof(daemon_sock));
	ok(strncmp(daemon_sock, "socket:", 7) == 0, "the helper's socket: %s", daemon_sock);
	for (i = 0; i < nworkers; i++)
		if (holds(workers[i], daemon_sock))
			break;
	ok(nworkers > 0 && i == nworkers, "no worker holds the socket to the daemon");
	if (geteuid() == 0) {
		struct passwd *pw = getpwnam("nobody");

		is_int((long)pw->pw_uid, helper_uid(spf_client_pid(cl)), "the helper runs as nobody");
	} else
		skip("not root: no user switch to check");
	{
		char path[64], cmd[128] = "";
		FILE *f;
		size_t n;

		snprintf(path, sizeof(path), "/proc/%ld/cmdline", (long)spf_client_pid(cl));
		if ((f = fopen(path, "r")) != NULL) {
			n = fread(cmd, 1, sizeof(cmd) - 1, f);
			cmd[n] = '\0';
			fclose(f);
		}
		is_string(SPF_HELPER_NAME, cmd, "the helper is a fresh exec of our binary");
	}
	spf_client_free(&cl);

	/* A resolver that never answers: temperror at the deadline. */
	if ((sfd = socket(AF_INET, SOCK_DGRAM, 0)) == -1)
		bail("socket");
	memset(&silent, 0, sizeof(silent));
	silent.sin_family = AF_INET;
	silent.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(sfd, (struct sockaddr *)&silent, sizeof(silent)) == -1 ||
	    getsockname(sfd, (struct sockaddr *)&silent, &slen) == -1)
		bail("bind");
	snprintf(resolver, sizeof(resolver), "127.0.0.1@%u", ntohs(silent.sin_port));
	cl = start(&sp, resolver, 3);
	t0 = mx_now_usec();
	is_int(SPF_RES_TEMPERROR, check(cl, "192.0.2.1", "c.test", "a@spf-pass.test"),
	    "a resolver that does not answer: temperror");
	ok(mx_now_usec() - t0 < 5000000, "within the deadline (%.1fs)",
	    (double)(mx_now_usec() - t0) / 1e6);
	spf_client_free(&cl);
	close(sfd);
	close(sp.exe_fd);
	event_base_free(base);
	return 0;
}
