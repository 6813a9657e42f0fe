/*
 * SPF, hermetically.  First libspf2 through our DNS layer over libspf2's
 * zone layer (no network): pass, fail, softfail, neutral, none, temperror,
 * permerror, a/mx/include mechanisms, and the null sender checked as
 * postmaster@HELO.  Then the process machinery: the helper forked with a
 * test engine (the same zone, plus senders that crash or hang a worker,
 * report its pid, or answer another check), driven by the daemon's
 * asynchronous client on an event loop: answers, a worker kept from check
 * to check and replaced after an error, its quota, a false answer or a new
 * config, a crash answered temperror, a hang cut at the deadline, the
 * helper killed and started again.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <spf2/spf.h>
#include <spf2/spf_dns_zone.h>

#include "basic.h"
#include "daemon.h"
#include "log.h"
#include "spf.h"
#include "spf_helper.h"

struct daemon *mxd;

static SPF_dns_server_t *
zone_new(void)
{
	SPF_dns_server_t *z = SPF_dns_zone_new(NULL, "test", 0);

	if (z == NULL)
		bail("cannot create a zone layer");
	SPF_dns_zone_add_str(z, "spf-pass.test", ns_t_txt, NETDB_SUCCESS,
	    "v=spf1 ip4:192.0.2.1 ip6:2001:db8::1 -all");
	SPF_dns_zone_add_str(z, "spf-fail.test", ns_t_txt, NETDB_SUCCESS, "v=spf1 -all");
	SPF_dns_zone_add_str(z, "spf-softfail.test", ns_t_txt, NETDB_SUCCESS, "v=spf1 ~all");
	SPF_dns_zone_add_str(z, "spf-neutral.test", ns_t_txt, NETDB_SUCCESS, "v=spf1 ?all");
	SPF_dns_zone_add_str(z, "spf-temp.test", ns_t_txt, TRY_AGAIN, NULL);
	SPF_dns_zone_add_str(z, "spf-perm.test", ns_t_txt, NETDB_SUCCESS, "v=spf1 bogus:x -all");
	SPF_dns_zone_add_str(z, "spf-a.test", ns_t_txt, NETDB_SUCCESS, "v=spf1 a -all");
	SPF_dns_zone_add_str(z, "spf-a.test", ns_t_a, NETDB_SUCCESS, "192.0.2.7");
	SPF_dns_zone_add_str(z, "spf-mx.test", ns_t_txt, NETDB_SUCCESS, "v=spf1 mx -all");
	SPF_dns_zone_add_str(z, "spf-mx.test", ns_t_mx, NETDB_SUCCESS, "10 mail.spf-mx.test");
	SPF_dns_zone_add_str(z, "mail.spf-mx.test", ns_t_aaaa, NETDB_SUCCESS, "2001:db8::25");
	SPF_dns_zone_add_str(z, "spf-include.test", ns_t_txt, NETDB_SUCCESS,
	    "v=spf1 include:spf-pass.test -all");
	SPF_dns_zone_add_str(z, "helo.test", ns_t_txt, NETDB_SUCCESS, "v=spf1 ip4:192.0.2.1 -all");
	SPF_dns_zone_add_str(z, "spf-two.test", ns_t_txt, NETDB_SUCCESS, "v=spf1 -all");
	SPF_dns_zone_add_str(z, "spf-two.test", ns_t_txt, NETDB_SUCCESS, "v=spf1 +all");
	return z;
}

static void
mkquery(struct spf_query_msg *q, const char *ip, const char *helo, const char *sender)
{
	memset(q, 0, sizeof(*q));
	q->id = 42;
	if (strchr(ip, ':') != NULL) {
		q->family = 6;
		inet_pton(AF_INET6, ip, q->addr);
	} else {
		q->family = 4;
		inet_pton(AF_INET, ip, q->addr);
	}
	mx_strlcpy(q->helo, helo, sizeof(q->helo));
	mx_strlcpy(q->sender, sender, sizeof(q->sender));
}

static void
check_zone(SPF_dns_server_t *layer, const char *ip, const char *helo, const char *sender,
    enum spf_res want, const char *what)
{
	struct spf_query_msg q;
	struct spf_reply_msg r;

	mkquery(&q, ip, helo, sender);
	spf_check_with(layer, "mx.test", &q, &r);
	if (!ok(r.result == want && r.id == 42, "zone: %s: %s", what, spf_res_name(want)))
		diag("got %s (%s)", spf_res_name(r.result), r.comment);
}

static void
test_zone(void)
{
	char err[256];
	SPF_dns_server_t *layer = spf_dns_layer_new(zone_new(), NULL, err, sizeof(err));
	struct spf_query_msg q;
	struct spf_reply_msg r;

	if (layer == NULL)
		bail("spf_dns_layer_new: %s", err);
	check_zone(layer, "192.0.2.1", "c.test", "a@spf-pass.test", SPF_RES_PASS, "listed ip4");
	check_zone(layer, "2001:db8::1", "c.test", "a@spf-pass.test", SPF_RES_PASS, "listed ip6");
	check_zone(layer, "192.0.2.99", "c.test", "a@spf-pass.test", SPF_RES_FAIL, "unlisted");
	check_zone(layer, "192.0.2.1", "c.test", "a@spf-fail.test", SPF_RES_FAIL, "-all");
	check_zone(layer, "192.0.2.1", "c.test", "a@spf-softfail.test", SPF_RES_SOFTFAIL, "~all");
	check_zone(layer, "192.0.2.1", "c.test", "a@spf-neutral.test", SPF_RES_NEUTRAL, "?all");
	check_zone(layer, "192.0.2.1", "c.test", "a@nospf.test", SPF_RES_NONE, "no record");
	check_zone(layer, "192.0.2.1", "c.test", "a@spf-temp.test", SPF_RES_TEMPERROR,
	    "DNS failure");
	check_zone(layer, "192.0.2.1", "c.test", "a@spf-perm.test", SPF_RES_PERMERROR,
	    "unknown mechanism");
	check_zone(layer, "192.0.2.1", "c.test", "a@spf-two.test", SPF_RES_PERMERROR,
	    "two records");
	check_zone(layer, "192.0.2.7", "c.test", "a@spf-a.test", SPF_RES_PASS, "a mechanism");
	check_zone(layer, "2001:db8::25", "c.test", "a@spf-mx.test", SPF_RES_PASS, "mx mechanism");
	check_zone(layer, "192.0.2.1", "c.test", "a@spf-include.test", SPF_RES_PASS, "include");
	check_zone(layer, "192.0.2.1", "helo.test", "", SPF_RES_PASS,
	    "null sender, HELO identity");
	check_zone(layer, "192.0.2.99", "helo.test", "", SPF_RES_FAIL,
	    "null sender, HELO identity, unlisted");
	check_zone(layer, "192.0.2.1", "[192.0.2.1]", "", SPF_RES_NONE,
	    "null sender with an address literal HELO");

	mkquery(&q, "192.0.2.99", "c.test", "a@spf-fail.test");
	spf_check_with(layer, "mx.test", &q, &r);
	ok(!r.helo_identity && strstr(r.comment, "mx.test") != NULL,
	    "the comment names the receiver: %s", r.comment);
	mkquery(&q, "192.0.2.1", "helo.test", "");
	spf_check_with(layer, "mx.test", &q, &r);
	ok(r.helo_identity, "the null sender's check is the HELO identity");
	SPF_dns_free(layer);
}

/* The process machinery ------------------------------------------------------ */

static void *
test_open(const struct spf_config_msg *cfg, char *err, size_t errsize)
{
	return spf_dns_layer_new(zone_new(), NULL, err, errsize);
}

static void
test_check(void *engine, const struct spf_query_msg *q, struct spf_reply_msg *r)
{
	if (strncmp(q->sender, "crash@", 6) == 0)
		abort();
	if (strncmp(q->sender, "hang@", 5) == 0)
		sleep(60);
	spf_check_with(engine, "mx.test", q, r);
	if (strncmp(q->sender, "pid@", 4) == 0)
		snprintf(r->comment, sizeof(r->comment), "worker %ld", (long)getpid());
	if (strncmp(q->sender, "liar@", 5) == 0)
		r->id++;	/* answers someone else's check */
}

static void
test_close(void *engine)
{
	SPF_dns_free(engine);
}

static const struct spf_engine_ops test_ops = { test_open, test_check, test_close };

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

static void
wait_answers(int n)
{
	while (answers < n)
		if (event_base_loop(base, EVLOOP_ONCE) == -1)
			break;
}

static enum spf_res
check_async(struct spf_client *cl, const char *ip, const char *helo, const char *sender)
{
	struct sockaddr_storage ss;
	int before = answers;

	memset(&ss, 0, sizeof(ss));
	if (strchr(ip, ':') != NULL) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

		s6->sin6_family = AF_INET6;
		inet_pton(AF_INET6, ip, &s6->sin6_addr);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;

		s4->sin_family = AF_INET;
		inet_pton(AF_INET, ip, &s4->sin_addr);
	}
	if (spf_client_check(cl, (struct sockaddr *)&ss, helo, sender, on_result, NULL) == NULL)
		bail("spf_client_check: %s", strerror(errno));
	ok(answers == before, "the callback never runs inside spf_client_check");
	wait_answers(before + 1);
	return last.result;
}

/* The pid of the worker that runs a check (no TAP output: called often). */
static long
worker_pid(struct spf_client *cl)
{
	struct sockaddr_in s4;
	int before = answers;

	memset(&s4, 0, sizeof(s4));
	s4.sin_family = AF_INET;
	inet_pton(AF_INET, "192.0.2.1", &s4.sin_addr);
	if (spf_client_check(cl, (struct sockaddr *)&s4, "c.test", "pid@spf-pass.test", on_result,
	    NULL) == NULL)
		bail("spf_client_check: %s", strerror(errno));
	wait_answers(before + 1);
	if (last.result != SPF_RES_PASS || strncmp(last.comment, "worker ", 7) != 0)
		return -1;
	return strtol(last.comment + 7, NULL, 10);
}

/* Workers serve check after check, and are replaced when they should be. */
static void
test_workers(struct spf_client *cl, struct spf_config_msg *cfg)
{
	long w1, w2;
	int i;

	w1 = worker_pid(cl);
	w2 = worker_pid(cl);
	ok(w1 > 0 && w1 == w2, "one worker serves one check after another (%ld, %ld)", w1, w2);
	ok(w1 != (long)spf_client_pid(cl), "in a process of its own, not the helper's");
	is_int(SPF_RES_TEMPERROR, check_async(cl, "192.0.2.9", "c.test", "a@spf-temp.test"),
	    "temperror");
	w2 = worker_pid(cl);
	ok(w2 > 0 && w2 != w1, "after a temperror the worker is replaced");
	is_int(SPF_RES_PERMERROR, check_async(cl, "192.0.2.9", "c.test", "a@spf-perm.test"),
	    "permerror");
	w1 = worker_pid(cl);
	ok(w1 > 0 && w1 != w2, "after a permerror the worker is replaced");
	/* w1 has served one check: count the rest of its quota. */
	for (i = 1; i < SPF_HELPER_WORKER_CHECKS; i++)
		if ((w2 = worker_pid(cl)) != w1)
			break;
	is_int(SPF_HELPER_WORKER_CHECKS, i, "a worker serves %d checks", SPF_HELPER_WORKER_CHECKS);
	w2 = worker_pid(cl);
	ok(w2 > 0 && w2 != w1, "then it is replaced");
	is_int(SPF_RES_TEMPERROR, check_async(cl, "192.0.2.1", "c.test", "liar@spf-pass.test"),
	    "a worker answering another check: temperror");
	ok(strstr(last.comment, "misbehaved") != NULL, "with the reason: %s", last.comment);
	w1 = worker_pid(cl);
	ok(w1 > 0 && w1 != w2, "and the worker is replaced");
	spf_client_configure(cl, cfg);
	w2 = worker_pid(cl);
	ok(w2 > 0 && w2 != w1, "a new config: a new worker");
}

static void
test_process(void)
{
	struct spf_spawn sp;
	struct spf_config_msg cfg;
	struct spf_client *cl;
	struct spf_query *q;
	char err[256];
	pid_t pid, first;
	int fd;
	uint64_t t0;

	memset(&sp, 0, sizeof(sp));
	sp.exe_fd = -1;
	sp.ops = &test_ops;
	memset(&cfg, 0, sizeof(cfg));
	cfg.timeout = 2;
	cfg.log_stderr = true;
	cfg.log_level = LOG_LEVEL_WARN;
	mx_strlcpy(cfg.resolver, "system", sizeof(cfg.resolver));
	mx_strlcpy(cfg.receiver, "mx.test", sizeof(cfg.receiver));
	if ((base = event_base_new()) == NULL)
		bail("event_base_new");
	if ((fd = spf_helper_spawn(&sp, &pid, err, sizeof(err))) == -1)
		bail("spawn: %s", err);
	if ((cl = spf_client_new(base, &sp, fd, pid, &cfg)) == NULL)
		bail("spf_client_new");
	first = spf_client_pid(cl);

	is_int(SPF_RES_PASS, check_async(cl, "192.0.2.1", "c.test", "a@spf-pass.test"),
	    "helper: pass");
	is_int(SPF_RES_FAIL, check_async(cl, "192.0.2.9", "c.test", "a@spf-fail.test"),
	    "helper: fail");
	is_int(SPF_RES_SOFTFAIL, check_async(cl, "192.0.2.9", "c.test", "a@spf-softfail.test"),
	    "helper: softfail");
	is_int(SPF_RES_TEMPERROR, check_async(cl, "192.0.2.9", "c.test", "a@spf-temp.test"),
	    "helper: temperror");
	is_int(SPF_RES_PASS, check_async(cl, "::ffff:192.0.2.1", "c.test", "a@spf-pass.test"),
	    "helper: an IPv4-mapped client is checked as IPv4");
	is_int(SPF_RES_PASS, check_async(cl, "192.0.2.1", "helo.test", ""),
	    "helper: null sender checks the HELO identity");
	ok(last.helo_identity, "helper: and says so");
	test_workers(cl, &cfg);

	is_int(SPF_RES_TEMPERROR, check_async(cl, "192.0.2.9", "c.test", "crash@spf-pass.test"),
	    "a crashing check answers temperror");
	ok(strstr(last.comment, "crashed") != NULL, "with the reason: %s", last.comment);
	is_int(SPF_RES_PASS, check_async(cl, "192.0.2.1", "c.test", "a@spf-pass.test"),
	    "the next check is fine");
	t0 = mx_now_usec();
	is_int(SPF_RES_TEMPERROR, check_async(cl, "192.0.2.9", "c.test", "hang@spf-pass.test"),
	    "a hanging check answers temperror");
	ok(mx_now_usec() - t0 < 4000000 && mx_now_usec() - t0 >= 1500000,
	    "at the deadline (%.1fs)", (double)(mx_now_usec() - t0) / 1e6);
	is_int(spf_client_pid(cl), first, "the helper itself survived");

	/* Cancel: no callback. */
	{
		struct sockaddr_in s4;
		int before = answers;

		memset(&s4, 0, sizeof(s4));
		s4.sin_family = AF_INET;
		q = spf_client_check(cl, (struct sockaddr *)&s4, "c.test", "a@spf-pass.test",
		    on_result, NULL);
		spf_cancel(&q);
		ok(q == NULL, "cancel clears the handle");
		is_int(SPF_RES_PASS, check_async(cl, "192.0.2.1", "c.test", "a@spf-pass.test"),
		    "a check after a cancelled one");
		is_int(before + 1, answers, "the cancelled check never answered");
	}

	/* Oversized names are not sent. */
	{
		char big[600];

		memset(big, 'a', sizeof(big));
		big[sizeof(big) - 1] = '\0';
		is_int(SPF_RES_NONE, check_async(cl, "192.0.2.1", big, "a@spf-pass.test"),
		    "an oversized HELO is not checked (none)");
	}

	/* Kill the helper: temperror meanwhile, then a new one. */
	kill(first, SIGKILL);
	is_int(SPF_RES_TEMPERROR, check_async(cl, "192.0.2.1", "c.test", "a@spf-pass.test"),
	    "helper dead: temperror");
	t0 = mx_now_usec();
	while (spf_client_restarts(cl) == 0 && mx_now_usec() - t0 < 5000000)
		event_base_loop(base, EVLOOP_ONCE);
	is_int(1, spf_client_restarts(cl), "the helper was started again");
	ok(spf_client_pid(cl) > 0 && spf_client_pid(cl) != first, "as a new process");
	is_int(SPF_RES_PASS, check_async(cl, "192.0.2.1", "c.test", "a@spf-pass.test"),
	    "and answers");
	spf_client_free(&cl);
	ok(cl == NULL, "client freed");
	event_base_free(base);
}

/* In a child, since it cannot be undone: what the helper's Landlock lets through. */
static void
test_sandbox(void)
{
	char tmp[] = "/tmp/spf-t.XXXXXX", path[64];
	int status, fd, bits = 0;
	pid_t pid;

	if (mkdtemp(tmp) == NULL)
		bail("mkdtemp: %s", strerror(errno));
	snprintf(path, sizeof(path), "%s/new", tmp);
	if ((pid = fork()) == -1)
		bail("fork: %s", strerror(errno));
	if (pid == 0) {
		if (spf_helper_sandbox() == -1)
			_exit(64);
		if (open("/etc/passwd", O_RDONLY) == -1 && errno == EACCES)
			bits |= 1;
		if ((fd = open("/etc/hosts", O_RDONLY)) != -1 || errno == ENOENT)
			bits |= 2;
		if (open(path, O_WRONLY | O_CREAT | O_EXCL, 0600) == -1 && errno == EACCES)
			bits |= 4;
		if ((fd = open("/proc/self/status", O_RDONLY)) != -1)
			bits |= 8;
		_exit(bits);
	}
	if (waitpid(pid, &status, 0) == -1 || !WIFEXITED(status))
		bail("sandbox child did not exit");
	if (WEXITSTATUS(status) == 64) {
		skip("no Landlock in this kernel (spf_helper_sandbox failed)");
		skip("no Landlock in this kernel");
		skip("no Landlock in this kernel");
		skip("no Landlock in this kernel");
	} else {
		bits = WEXITSTATUS(status);
		ok(bits & 1, "sandbox: /etc/passwd cannot be read");
		ok(bits & 2, "sandbox: /etc/hosts can (the resolver reads it)");
		ok(bits & 4, "sandbox: no file can be created");
		ok(bits & 8, "sandbox: /proc stays readable");
	}
	(void)unlink(path);
	(void)rmdir(tmp);
}

int
main(void)
{
	log_init("spf-t", true, LOG_LEVEL_ERROR);
	plan_lazy();
	test_zone();
	test_sandbox();
	test_process();
	return 0;
}
