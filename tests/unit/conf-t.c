/* Unit tests for the config parser: defaults, every error names FILE:LINE. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "basic.h"
#include "conf.h"
#include "log.h"

static struct conf c;

static void
bad(const char *text, const char *wanted_err, const char *what)
{
	char err[512] = "";

	if (!ok(conf_load_string("t.conf", text, &c, err, sizeof(err)) == -1 &&
	    strstr(err, wanted_err) != NULL, "refused: %s", what))
		diag("error was: %s", err);
}

int
main(void)
{
	char err[512];
	int r;

	plan_lazy();

	r = conf_load_string("t.conf", "", &c, err, sizeof(err));
	ok(r == 0, "empty config is valid");
	is_int(10, c.front_hello_timeout, "front_hello_timeout defaults to 10 s");
	is_int(1800, c.front_idle_timeout[FRONT_IMAPS], "imaps idle defaults to 30 min");
	is_int(600, c.front_idle_timeout[FRONT_POP3S], "pop3s idle defaults to 10 min");
	is_int(100, c.smtp_max_recipients, "100 recipients per message");
	is_int(5 * 86400, c.queue_lifetime, "queue lifetime 5 days");
	is_string("/var/lib/mxedge/registry.db", c.registry + 7, "registry under state_dir");
	is_string("/var/lib/mxedge/control.sock", c.control_socket, "control socket under state_dir");
	ok(!c.allow_private_targets, "private targets refused by default");

	r = conf_load_string("t.conf",
	    "# comment\n"
	    "hostname MX2.Example.NET\n"
	    "user mxedge\n"
	    "state_dir /srv/mx/state   # trailing comment\n"
	    "spool_dir /srv/mx/spool\n"
	    "smtp_listen [::]:25\n"
	    "smtp_listen 0.0.0.0:25\n"
	    "front_listen imaps [::]:993\n"
	    "front_listen submission 0.0.0.0:587\n"
	    "front_idle_timeout imaps 45m\n"
	    "resolver 127.0.0.1@5353\n"
	    "allow_private_targets yes\n"
	    "smtp_max_message_size 25M\n"
	    "queue_retry_min 10s\n"
	    "milter rspamd inet:127.0.0.1:11332 on_failure=accept command_timeout=5s\n",
	    &c, err, sizeof(err));
	if (!ok(r == 0, "full config parses"))
		diag("%s", err);
	is_string("mx2.example.net", c.hostname, "hostname normalised");
	is_int(2, c.n_smtp_listen, "two SMTP listeners");
	is_int(2, c.n_front_listen, "two front listeners");
	ok(c.front_listen[1].service == FRONT_SUBMISSION, "front service recorded");
	is_int(2700, c.front_idle_timeout[FRONT_IMAPS], "imaps idle timeout set");
	is_string("/srv/mx/state/registry.db", c.registry + 7, "registry follows state_dir");
	ok(c.allow_private_targets, "allow_private_targets yes");
	ok(c.smtp_max_message_size == 25ULL << 20, "size with unit");
	is_int(1, c.n_milters, "one milter");
	ok(c.milters[0].on_failure == MILTER_FAIL_ACCEPT && c.milters[0].command_timeout == 5,
	    "milter options");

	bad("bogus 1\n", "t.conf:1: unknown directive 'bogus'", "unknown directive");
	bad("\n\nhostname\n", "t.conf:3: hostname takes 1 argument", "missing argument");
	bad("smtp_listen [::1:25\n", "t.conf:1: bad listen address", "bad listen address");
	bad("smtp_listen mx.example:25\n", "t.conf:1: bad listen address", "listen on a name");
	bad("front_listen imap [::]:143\n", "t.conf:1: unknown service 'imap'", "unknown service");
	bad("allow_private_targets maybe\n", "t.conf:1: expected yes or no", "bad boolean");
	bad("state_dir relative/path\n", "t.conf:1: path must be absolute", "relative path");
	bad("front_hello_timeout 10y\n", "t.conf:1: bad duration", "bad duration");
	bad("front_hello_max 100\n", "t.conf:1: expected a number from 512", "number out of range");
	bad("resolver 8.8.8.8\n", "t.conf:1: resolver must be", "resolver without port");
	bad("smtp_listen [::]:25\nsmtp_listen [::]:25\n", "t.conf:2: duplicate listen address",
	    "duplicate listener");
	bad("milter x unix:relative\n", "t.conf:1: milter address", "bad milter address");
	bad("queue_retry_min 2h\nqueue_retry_max 1h\n", "t.conf: queue_retry_min is larger",
	    "inconsistent retry timers");
	bad("hostname a b c d e f g h i j\n", "t.conf:1: too many arguments", "too many words");
	bad("log_level chatty\n", "t.conf:1: log_level must be", "bad log level");
	bad("postmaster_address root\n", "t.conf:1: bad address 'root'", "postmaster without domain");
	bad("postmaster_address a..b@example.net\n", "t.conf:1: bad local part", "two dots");
	bad("postmaster_address a@[127.0.0.1]\n", "t.conf:1: bad domain", "address literal");
	{
		char path[4096];
		const char *top = getenv("srcdir");

		snprintf(path, sizeof(path), "%s/conf/mxedge.conf.example", top ? top : ".");
		r = conf_load(path, &c, err, sizeof(err));
		if (!ok(r == 0, "conf/mxedge.conf.example parses"))
			diag("%s", err);
	}
	ok(conf_load("/nonexistent/mxedge.conf", &c, err, sizeof(err)) == -1 &&
	    strstr(err, "/nonexistent/mxedge.conf: No such file") != NULL, "missing file named");
	return 0;
}
