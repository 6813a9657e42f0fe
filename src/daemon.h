/*
 * The daemon's shared state and the hooks its modules use: the event base,
 * the current config, the current domain table, graceful shutdown, and the
 * control-command table.  One process, one event loop; helpers (the SPF
 * checker) are separate processes.
 */
#ifndef MXEDGE_DAEMON_H
#define MXEDGE_DAEMON_H

#include <stdbool.h>

#include "conf.h"
#include "registry.h"
#include "util.h"

struct event_base;
struct dns;

struct daemon {
	struct event_base *base;
	struct conf *conf;		/* current config; replaced on reload */
	struct registry *registry;	/* read-only handle */
	struct domain_table *domains;	/* current snapshot; take a ref to keep it */
	struct dns *dns;		/* libunbound on our event base */
	int64_t started;		/* wall clock */
	bool stopping;			/* SIGTERM received: finish, accept nothing new */
	bool foreground;

	/* Listening sockets bound before the privilege drop, in conf order. */
	int smtp_fds[CONF_MAX_LISTEN];
	int front_fds[CONF_MAX_LISTEN];
};

extern struct daemon *mxd;

/*
 * Work that must finish before a graceful exit (a message being written, a
 * delivery in flight) holds the daemon; the loop exits when the last hold is
 * released after SIGTERM, or at the shutdown deadline.
 */
void daemon_hold(void);
void daemon_release(void);

/* A control command: argv[0] is the command; write the reply payload to out. */
typedef int (*control_handler)(int argc, char **argv, struct mx_buf *out, char *err,
    size_t errsize);
void control_register(const char *command, const char *usage, control_handler h);

/*
 * Module hooks, called in this order by mxedged.c: start after the
 * privilege drop (listening fds are in mxd), reload after SIGHUP with the
 * new config already in mxd->conf, stop at SIGTERM (stop accepting, close
 * idle sessions), status to add a JSON member ("name":{...}) to `status`.
 */
struct daemon_module {
	const char *name;
	int (*start)(void);
	void (*reload)(void);
	void (*stop)(void);
	int (*status)(struct mx_buf *json);	/* appends "name":{...} */
};

#endif
