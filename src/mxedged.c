/*
 * mxedged: the daemon's main.  Order of start-up: parse the config, create
 * the state and spool directories, open (and migrate) the registry, bind
 * every listening socket and the control socket, drop privileges to `user`,
 * start the modules, run the event loop.  SIGHUP reloads the config values
 * that can change live (timeouts, limits, log level, certificates through
 * the modules) and the registry; SIGTERM stops accepting, lets work in
 * flight finish within a deadline, and exits.
 */
#include "config.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "control.h"
#include "dns.h"
#include "front.h"
#include "daemon.h"
#include "listen.h"
#include "log.h"
#include "milter.h"
#include "queue.h"
#include "registry.h"
#include "relay.h"
#include "relay_journal.h"
#include "smtp.h"
#include "spf.h"
#include "stats.h"
#include "verify.h"

#define SHUTDOWN_DEADLINE 30		/* seconds for work in flight at SIGTERM */
#define REGISTRY_POLL_MS 250		/* registry changes seen within 1 s */

struct daemon *mxd;

/*
 * The modules, in start order.  Each lives in its own file and is reached
 * only through these hooks and the control commands it registers.
 */
static const struct daemon_module *const modules[] = {
	&front_module,
	&smtp_module,
	&relay_module,
	&milter_module,
	&spf_module,
	&verify_module,
	/* @MODULES@ */
};

static struct daemon daemon_state;
static struct event *ev_sigterm, *ev_sigint, *ev_sighup, *ev_registry, *ev_deadline;
static int holds;
static bool pidfile_written;
static unsigned long long *c_registry_reloads;

static void
usage(void)
{
	fprintf(stderr, "usage: mxedged [-fnV] [-c FILE]\n");
	exit(2);
}

void
daemon_hold(void)
{
	holds++;
}

void
daemon_release(void)
{
	if (--holds == 0 && mxd->stopping)
		event_base_loopexit(mxd->base, NULL);
}

static int
registry_reload(bool force)
{
	struct domain_table *t;
	char err[512];
	int changed;

	changed = registry_changed(mxd->registry);
	if (changed == -1) {
		log_warnx("event=registry_poll_failed");
		return -1;
	}
	if (!changed && !force)
		return 0;
	if ((t = domain_table_load(mxd->registry, err, sizeof(err))) == NULL) {
		log_warnx("event=registry_load_failed error=\"%s\" keeping=%zu", err,
		    domain_table_count(mxd->domains));
		return -1;
	}
	domain_table_unref(&mxd->domains);
	mxd->domains = t;
	(*c_registry_reloads)++;
	log_info("event=registry_loaded domains=%zu", domain_table_count(t));
	return 0;
}

static void
registry_poll(evutil_socket_t fd, short what, void *arg)
{
	registry_reload(false);
}

static void
reload_config(void)
{
	struct conf *nc = calloc(1, sizeof(*nc));
	char err[1024];
	size_t i;

	if (nc == NULL) {
		log_warnx("event=reload_failed error=\"out of memory\"");
		return;
	}
	if (conf_load(mxd->conf->path, nc, err, sizeof(err)) == -1) {
		log_warnx("event=reload_failed error=\"%s\" keeping=old_config", err);
		free(nc);
		return;
	}
	/* What needs a restart stays as it was; say so instead of half-applying it. */
	if (nc->n_smtp_listen != mxd->conf->n_smtp_listen ||
	    nc->n_front_listen != mxd->conf->n_front_listen ||
	    memcmp(nc->smtp_listen, mxd->conf->smtp_listen, sizeof(nc->smtp_listen)) != 0 ||
	    memcmp(nc->front_listen, mxd->conf->front_listen, sizeof(nc->front_listen)) != 0 ||
	    strcmp(nc->state_dir, mxd->conf->state_dir) != 0 ||
	    strcmp(nc->spool_dir, mxd->conf->spool_dir) != 0 ||
	    strcmp(nc->registry, mxd->conf->registry) != 0 ||
	    strcmp(nc->user, mxd->conf->user) != 0)
		log_warnx("event=reload_partial reason=\"listen addresses, directories, registry "
		    "and user change only on restart\"");
	memcpy(nc->smtp_listen, mxd->conf->smtp_listen, sizeof(nc->smtp_listen));
	memcpy(nc->front_listen, mxd->conf->front_listen, sizeof(nc->front_listen));
	nc->n_smtp_listen = mxd->conf->n_smtp_listen;
	nc->n_front_listen = mxd->conf->n_front_listen;
	memcpy(nc->state_dir, mxd->conf->state_dir, sizeof(nc->state_dir));
	memcpy(nc->spool_dir, mxd->conf->spool_dir, sizeof(nc->spool_dir));
	memcpy(nc->registry, mxd->conf->registry, sizeof(nc->registry));
	memcpy(nc->user, mxd->conf->user, sizeof(nc->user));
	memcpy(nc->control_socket, mxd->conf->control_socket, sizeof(nc->control_socket));
	memcpy(nc->pid_file, mxd->conf->pid_file, sizeof(nc->pid_file));
	free(mxd->conf);
	mxd->conf = nc;
	log_set_level((enum log_level)nc->log_level);
	for (i = 0; i < MX_NELEM(modules); i++)
		if (modules[i] != NULL && modules[i]->reload != NULL)
			modules[i]->reload();
	registry_reload(true);
	log_info("event=reloaded config=%s", nc->path);
}

static void
on_sighup(evutil_socket_t sig, short what, void *arg)
{
	reload_config();
}

static void
shutdown_deadline(evutil_socket_t fd, short what, void *arg)
{
	log_warnx("event=shutdown_deadline pending=%d", holds);
	event_base_loopexit(mxd->base, NULL);
}

static void
on_sigterm(evutil_socket_t sig, short what, void *arg)
{
	struct timeval tv = { SHUTDOWN_DEADLINE, 0 };
	size_t i;

	if (mxd->stopping) {
		event_base_loopexit(mxd->base, NULL);
		return;
	}
	mxd->stopping = true;
	log_info("event=stopping signal=%d pending=%d", (int)sig, holds);
	control_stop();
	for (i = MX_NELEM(modules); i-- > 0;)
		if (modules[i] != NULL && modules[i]->stop != NULL)
			modules[i]->stop();
	if (holds == 0)
		event_base_loopexit(mxd->base, NULL);
	else {
		ev_deadline = evtimer_new(mxd->base, shutdown_deadline, NULL);
		evtimer_add(ev_deadline, &tv);
	}
}

static int
cmd_status(int argc, char **argv, struct mx_buf *out, char *err, size_t errsize)
{
	size_t i;

	mx_buf_printf(out, "{\"version\":\"%s\",\"pid\":%ld,\"hostname\":", PACKAGE_VERSION,
	    (long)getpid());
	mx_buf_json_str(out, mxd->conf->hostname);
	mx_buf_printf(out, ",\"uptime\":%lld,\"domains\":%zu,\"stopping\":%s",
	    (long long)(mx_time_now() - mxd->started), domain_table_count(mxd->domains),
	    mxd->stopping ? "true" : "false");
	for (i = 0; i < MX_NELEM(modules); i++)
		if (modules[i] != NULL && modules[i]->status != NULL) {
			mx_buf_addstr(out, ",");
			modules[i]->status(out);
		}
	mx_buf_addstr(out, ",\"counters\":");
	stats_json(out);
	mx_buf_addstr(out, "}\n");
	return 0;
}

static int
cmd_reload(int argc, char **argv, struct mx_buf *out, char *err, size_t errsize)
{
	reload_config();
	return 0;
}

/* Create a directory if missing; when root, give it to the daemon's user. */
static void
make_dir(const char *path, mode_t mode, struct passwd *pw)
{
	struct stat st;

	if (mkdir(path, mode) == -1 && errno != EEXIST)
		log_fatal("cannot create %s", path);
	if (stat(path, &st) == -1 || !S_ISDIR(st.st_mode))
		log_fatalx("%s is not a directory", path);
	if (pw != NULL && (st.st_uid != pw->pw_uid) && chown(path, pw->pw_uid, pw->pw_gid) == -1)
		log_fatal("cannot chown %s to %s", path, pw->pw_name);
}

static void
drop_privileges(struct passwd *pw)
{
	if (pw == NULL)
		return;
	if (setgroups(1, &pw->pw_gid) == -1 || setresgid(pw->pw_gid, pw->pw_gid, pw->pw_gid) == -1 ||
	    setresuid(pw->pw_uid, pw->pw_uid, pw->pw_uid) == -1)
		log_fatal("cannot drop privileges to %s", pw->pw_name);
	if (setuid(0) != -1)
		log_fatalx("privileges were not dropped: setuid(0) still works");
	log_info("event=privileges_dropped user=%s uid=%ld", pw->pw_name, (long)pw->pw_uid);
}

static void
write_pidfile(const char *path)
{
	char buf[32];
	int fd, n;

	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd == -1)
		log_fatal("cannot write pid file %s", path);
	n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
	if (write(fd, buf, (size_t)n) != n || close(fd) == -1)
		log_fatal("cannot write pid file %s", path);
	pidfile_written = true;
}

static void
daemonize(void)
{
	pid_t pid;
	int fd;

	if ((pid = fork()) == -1)
		log_fatal("fork");
	if (pid > 0)
		_exit(0);
	if (setsid() == -1)
		log_fatal("setsid");
	if ((pid = fork()) == -1)
		log_fatal("fork");
	if (pid > 0)
		_exit(0);
	log_after_fork();
	if (chdir("/") == -1)
		log_fatal("chdir /");
	if ((fd = open("/dev/null", O_RDWR)) != -1) {
		dup2(fd, 0);
		dup2(fd, 1);
		dup2(fd, 2);
		if (fd > 2)
			close(fd);
	}
}

static void
bind_all(struct conf *c)
{
	int i;

	for (i = 0; i < c->n_smtp_listen; i++)
		if ((mxd->smtp_fds[i] = listen_bind(&c->smtp_listen[i])) == -1)
			log_fatal("cannot listen on %s (smtp)", c->smtp_listen[i].text);
	for (i = 0; i < c->n_front_listen; i++)
		if ((mxd->front_fds[i] = listen_bind(&c->front_listen[i])) == -1)
			log_fatal("cannot listen on %s (%s)", c->front_listen[i].text,
			    front_service_name(c->front_listen[i].service));
}

int
main(int argc, char **argv)
{
	const char *path = NULL;
	struct conf *c;
	struct passwd *pw = NULL;
	struct timeval poll_tv = { 0, REGISTRY_POLL_MS * 1000 };
	char err[1024];
	bool check_only = false, foreground = false;
	int ch;
	size_t i;

	/* The SPF helper is this binary, re-executed: it never returns from here. */
	spf_helper_exec_main(argc, argv);
	while ((ch = getopt(argc, argv, "c:fnVh")) != -1) {
		switch (ch) {
		case 'c':
			path = optarg;
			break;
		case 'f':
			foreground = true;
			break;
		case 'n':
			check_only = true;
			break;
		case 'V':
			printf("mxedged %s\n", PACKAGE_VERSION);
			return 0;
		default:
			usage();
		}
	}
	if (optind != argc)
		usage();
	if (path == NULL)
		path = conf_default_path();
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return 1;
	if (conf_load(path, c, err, sizeof(err)) == -1) {
		fprintf(stderr, "mxedged: %s\n", err);
		free(c);
		return 1;
	}
	if (check_only) {
		printf("mxedged: %s: configuration OK\n", path);
		free(c);
		return 0;
	}

	mxd = &daemon_state;
	mxd->conf = c;
	mxd->foreground = foreground;
	mxd->started = mx_time_now();
	log_init("mxedged", foreground || strcmp(c->log_target, "stderr") == 0,
	    (enum log_level)c->log_level);
	signal(SIGPIPE, SIG_IGN);
	umask(022);

	if (geteuid() == 0) {
		if ((pw = getpwnam(c->user)) == NULL)
			log_fatalx("user %s does not exist (create it, or set 'user' in %s)",
			    c->user, path);
		if (pw->pw_uid == 0)
			log_fatalx("user %s is root; mxedged will not run as root", c->user);
	}
	make_dir(c->state_dir, 0750, pw);
	make_dir(c->spool_dir, 0700, pw);

	/* Create or migrate the registry with write access, then keep a read-only handle. */
	if ((mxd->registry = registry_open(c->registry, 0, err, sizeof(err))) == NULL)
		log_fatalx("%s", err);
	registry_close(&mxd->registry);
	if ((mxd->registry = registry_open(c->registry, REGISTRY_RDONLY, err, sizeof(err))) == NULL)
		log_fatalx("%s", err);
	if ((mxd->domains = domain_table_load(mxd->registry, err, sizeof(err))) == NULL)
		log_fatalx("%s", err);

	bind_all(c);
	if (control_bind(c->control_socket, pw ? pw->pw_uid : (uid_t)-1,
	    pw ? pw->pw_gid : (gid_t)-1) == -1)
		log_fatal("cannot create control socket %s", c->control_socket);
	/* The SPF helper starts as root (to become spf_user) and before any key is loaded. */
	spf_preinit(c, foreground);
	/* The STARTTLS key may be readable by root only: load it before the drop. */
	smtp_preinit();

	if (!foreground)
		daemonize();
	write_pidfile(c->pid_file);
	if (pw != NULL && chown(c->pid_file, pw->pw_uid, pw->pw_gid) == -1)
		log_warn("event=pidfile_chown_failed");
	drop_privileges(pw);

	if ((mxd->base = event_base_new()) == NULL)
		log_fatalx("cannot create the event loop");
	if ((mxd->dns = dns_new(mxd->base, c->resolver, err, sizeof(err))) == NULL)
		log_fatalx("resolver %s: %s", c->resolver, err);
	/* After the drop, so tmp/, queue/ and corrupt/ belong to `user`. */
	if (queue_init(mxd->base, c->spool_dir, err, sizeof(err)) == -1)
		log_fatalx("%s", err);
	c_registry_reloads = stats_counter("registry.reloads");
	control_register("status", "status", cmd_status);
	control_register("reload", "reload", cmd_reload);
	if (control_start() == -1)
		log_fatalx("cannot start the control socket");
	for (i = 0; i < MX_NELEM(modules); i++)
		if (modules[i] != NULL && modules[i]->start != NULL && modules[i]->start() == -1)
			log_fatalx("cannot start %s", modules[i]->name);

	ev_sigterm = evsignal_new(mxd->base, SIGTERM, on_sigterm, NULL);
	ev_sigint = evsignal_new(mxd->base, SIGINT, on_sigterm, NULL);
	ev_sighup = evsignal_new(mxd->base, SIGHUP, on_sighup, NULL);
	ev_registry = event_new(mxd->base, -1, EV_PERSIST, registry_poll, NULL);
	if (ev_sigterm == NULL || ev_sigint == NULL || ev_sighup == NULL || ev_registry == NULL ||
	    evsignal_add(ev_sigterm, NULL) == -1 || evsignal_add(ev_sigint, NULL) == -1 ||
	    evsignal_add(ev_sighup, NULL) == -1 || event_add(ev_registry, &poll_tv) == -1)
		log_fatalx("cannot set up signal handling");

	log_info("event=ready version=%s config=%s domains=%zu smtp_listeners=%d "
	    "front_listeners=%d", PACKAGE_VERSION, path, domain_table_count(mxd->domains),
	    c->n_smtp_listen, c->n_front_listen);
	event_base_dispatch(mxd->base);
	log_info("event=stopped");

	/* Not c: a reload replaced (and freed) the config main() loaded. */
	if (pidfile_written && unlink(mxd->conf->pid_file) == -1 && errno != ENOENT)
		log_warn("event=pidfile_unlink_failed");
	event_free(ev_sigterm);
	event_free(ev_sigint);
	event_free(ev_sighup);
	event_free(ev_registry);
	if (ev_deadline != NULL)
		event_free(ev_deadline);
	/* The relay's journal threads are idle by now (every request held the daemon). */
	relay_journal_shutdown();
	/* Commits still in the workers finish and report before the loop goes. */
	queue_shutdown();
	dns_free(&mxd->dns);
	domain_table_unref(&mxd->domains);
	registry_close(&mxd->registry);
	event_base_free(mxd->base);
	stats_free();
	free(mxd->conf);
	return 0;
}
