/*
 * The relay module's glue: start-up (after the SMTP module, sharing its
 * spool), the `queue` control command with its subcommands, and the
 * "queue" member of `mxedge status`.  Arguments come from the control
 * socket already split into printable words; each is checked here before
 * the scheduler sees it.
 */
#include "config.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "log.h"
#include "queue.h"
#include "relay.h"
#include "relay_sched.h"

static bool
relay_want_json(int argc, char **argv, int from)
{
	int i;

	for (i = from; i < argc; i++)
		if (strcmp(argv[i], "--json") == 0)
			return true;
	return false;
}

/* The first argument after the subcommand that is not an option, or NULL. */
static const char *
relay_arg(int argc, char **argv)
{
	int i;

	for (i = 2; i < argc; i++)
		if (strncmp(argv[i], "--", 2) != 0)
			return argv[i];
	return NULL;
}

static int
relay_unknown_option(int argc, char **argv, char *err, size_t errsize)
{
	int i;

	for (i = 2; i < argc; i++)
		if (strncmp(argv[i], "--", 2) == 0 && strcmp(argv[i], "--json") != 0) {
			mx_snprintf(err, errsize, "unknown option '%.40s'", argv[i]);
			return -1;
		}
	return 0;
}

static int
cmd_queue(int argc, char **argv, struct mx_buf *out, char *err, size_t errsize)
{
	const char *sub = argc > 1 ? argv[1] : "", *id = relay_arg(argc, argv);
	int nargs = 0, i;
	long n;

	for (i = 2; i < argc; i++)
		if (strncmp(argv[i], "--", 2) != 0)
			nargs++;
	if (relay_unknown_option(argc, argv, err, errsize) == -1)
		return -1;
	if (strcmp(sub, "list") == 0 && nargs == 0)
		return relay_sched_list(out, relay_want_json(argc, argv, 2));
	if (strcmp(sub, "flush") == 0 && nargs <= 1) {
		if ((n = relay_sched_flush(id, err, errsize)) == -1)
			return -1;
		return mx_buf_printf(out, "flushed %ld message%s\n", n, n == 1 ? "" : "s");
	}
	if (nargs != 1 || (strcmp(sub, "show") != 0 && strcmp(sub, "delete") != 0 &&
	    strcmp(sub, "hold") != 0 && strcmp(sub, "release") != 0)) {
		mx_snprintf(err, errsize, "usage: queue list [--json] | show ID [--json] | "
		    "flush [ID] | delete ID | hold ID | release ID");
		return -1;
	}
	if (strcmp(sub, "show") == 0)
		return relay_sched_show(id, relay_want_json(argc, argv, 2), out, err, errsize);
	if (strcmp(sub, "delete") == 0) {
		if (relay_sched_delete(id, err, errsize) == -1)
			return -1;
		return mx_buf_printf(out, "deleted %s\n", id);
	}
	if (strcmp(sub, "hold") == 0 || strcmp(sub, "release") == 0) {
		bool hold = strcmp(sub, "hold") == 0;

		if (relay_sched_hold(id, hold, err, errsize) == -1)
			return -1;
		return mx_buf_printf(out, "%s %s\n", hold ? "held" : "released", id);
	}
	mx_snprintf(err, errsize, "unknown queue command '%.40s'", sub);
	return -1;
}

static int
relay_start(void)
{
	char err[512];

	/* Whoever starts first opens the spool (the SMTP server needs it too). */
	if (queue_init(mxd->base, mxd->conf->spool_dir, err, sizeof(err)) == -1 &&
	    errno != EBUSY) {
		log_warnx("event=relay_start_failed error=\"%s\"", err);
		return -1;
	}
	if (relay_sched_start(err, sizeof(err)) == -1) {
		log_warnx("event=relay_start_failed error=\"%s\"", err);
		return -1;
	}
	control_register("queue", "queue list [--json] | show ID [--json] | flush [ID] | "
	    "delete ID | hold ID | release ID", cmd_queue);
	return 0;
}

static void
relay_reload(void)
{
	relay_sched_reload();
}

static void
relay_stop(void)
{
	relay_sched_stop();
}

static int
relay_status(struct mx_buf *json)
{
	return relay_sched_status(json);
}

const struct daemon_module relay_module = {
	.name = "relay",
	.start = relay_start,
	.reload = relay_reload,
	.stop = relay_stop,
	.status = relay_status,
};
