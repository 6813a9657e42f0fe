/*
 * SPF checks for the inbound SMTP session, answered asynchronously on the
 * event loop by the SPF helper process (spf_helper.c) through spf.c.
 * Every check has a deadline (spf_timeout); a helper that is down, busy,
 * slow or crashed answers temperror, never blocks and never crashes us.
 */
#ifndef MXEDGE_SPF_H
#define MXEDGE_SPF_H

#include <stdbool.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "conf.h"
#include "daemon.h"
#include "spf_helper.h"
#include "spf_proto.h"

struct event_base;
struct spf_client;
struct spf_query;

struct spf_result {
	enum spf_res result;
	bool helo_identity;	/* the HELO name was checked (null sender) */
	const char *comment;	/* printable ASCII, for Received-SPF; may be "" */
};

/* The result is valid during the call only.  The query is over: forget its handle. */
typedef void (*spf_cb)(const struct spf_result *res, void *arg);

/*
 * Called by mxedged as root, before any key is loaded and before the
 * privilege drop: starts the helper as spf_user (re-executing our binary).
 * Failure is logged, not fatal: checks answer temperror until a restart
 * works.
 */
void spf_preinit(const struct conf *c, bool foreground);

/* The module: attaches to the helper, restarts it when it dies, sends config on reload. */
extern const struct daemon_module spf_module;

/*
 * Check client (AF_INET or AF_INET6; IPv4-mapped is IPv4) sending as sender
 * ("local@domain", "" for the null sender, which checks postmaster@HELO)
 * after HELO helo.  cb runs once, from the loop, never from inside the
 * call.  NULL (with errno) only when memory is short; cb is not called then.
 */
struct spf_query *spf_check(const struct sockaddr *client, const char *helo,
    const char *sender, spf_cb cb, void *arg);
/* Forget a pending check: cb will not be called.  NULL is fine. */
void spf_cancel(struct spf_query **qp);

/* The same on an explicit client (the module's is used above). */
struct spf_client *spf_client_new(struct event_base *base, const struct spf_spawn *sp,
    int fd, pid_t pid, const struct spf_config_msg *cfg);
void spf_client_free(struct spf_client **clp);
void spf_client_configure(struct spf_client *cl, const struct spf_config_msg *cfg);
struct spf_query *spf_client_check(struct spf_client *cl, const struct sockaddr *client,
    const char *helo, const char *sender, spf_cb cb, void *arg);
pid_t spf_client_pid(const struct spf_client *cl);
unsigned int spf_client_restarts(const struct spf_client *cl);

#endif
