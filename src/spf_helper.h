/*
 * The SPF helper process (spf_helper.c): the only place libspf2 runs.
 * spf.c starts it and talks to it; see spf_helper.c for the design.
 */
#ifndef MXEDGE_SPF_HELPER_H
#define MXEDGE_SPF_HELPER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "spf_proto.h"

#define SPF_HELPER_ARG "--spf-helper"	/* argv[1] of the re-executed helper */
#define SPF_HELPER_NAME "mxedged-spf"	/* its argv[0], for ps */
#define SPF_HELPER_FD 3			/* its socket to the daemon */
#define SPF_HELPER_CHILDREN_MAX 64	/* workers, so checks running at once */
#define SPF_HELPER_WORKER_CHECKS 100	/* checks one worker serves before it is replaced */

/*
 * How checks are done, in a worker process of the helper: open an engine
 * from the config, check many times (one at a time), close.  check fills
 * the whole reply, its id too; the master drops a worker whose reply
 * answers anything but the check it was given.  spf_engine_default is
 * libspf2 with our DNS layer on libunbound; the unit tests put libspf2's
 * zone layer under it.
 */
struct spf_engine_ops {
	void *(*open)(const struct spf_config_msg *cfg, char *err, size_t errsize);
	void (*check)(void *engine, const struct spf_query_msg *q, struct spf_reply_msg *r);
	void (*close)(void *engine);
};

extern const struct spf_engine_ops spf_engine_default;

/* How to start the helper. */
struct spf_spawn {
	bool switch_user;	/* become uid/gid (needs root) */
	uid_t uid;
	gid_t gid;
	int exe_fd;		/* exec this (our own binary) ... */
	const struct spf_engine_ops *ops;	/* ... or, when exe_fd is -1, fork and serve with these */
	bool devnull;		/* stdin, stdout, stderr to /dev/null (a daemonized parent) */
};

/*
 * Start the helper.  Returns the daemon's end of a SOCK_SEQPACKET socket
 * pair (close-on-exec, blocking) and the pid, or -1 with err.
 */
int spf_helper_spawn(const struct spf_spawn *sp, pid_t *pid, char *err, size_t errsize);

/*
 * mxedged's main() calls this first: when argv is the helper's, it serves
 * on SPF_HELPER_FD and never returns; otherwise it returns at once.
 */
void spf_helper_exec_main(int argc, char **argv);

/*
 * Confine this process and its children with Landlock: no file opened but
 * what the resolver reads, nothing written, created, removed or executed.
 * 0, or -1 with errno (ENOSYS, EOPNOTSUPP: no Landlock in this kernel).
 * spf_helper_serve() calls it first.
 */
int spf_helper_sandbox(void);

/* The helper's loop: until the daemon closes its end.  Never returns. */
void spf_helper_serve(int fd, const struct spf_engine_ops *ops) __attribute__((noreturn));

/*
 * libspf2 glue, for the zone-layer unit tests.  Our DNS layer answers the
 * retired SPF record type (99) NODATA without asking (RFC 7208 §3.1) and
 * asks below, or libunbound with resolver when below is NULL.  The check
 * borrows the layer; SPF_dns_free() frees it (and what is below).
 */
struct SPF_dns_server_struct;
struct SPF_dns_server_struct *spf_dns_layer_new(struct SPF_dns_server_struct *below,
    const char *resolver, char *err, size_t errsize);
void spf_check_with(struct SPF_dns_server_struct *dns, const char *receiver,
    const struct spf_query_msg *q, struct spf_reply_msg *r);

#endif
