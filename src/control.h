/*
 * The control socket: a Unix stream socket in state_dir, mode 0660, that
 * `mxedge` talks to (status, reload, queue ...).  Requests are one line,
 * replies one status line and a payload (control_proto.h).
 */
#ifndef MXEDGE_CONTROL_H
#define MXEDGE_CONTROL_H

#include <sys/types.h>

/* Create and bind the socket (before the privilege drop); chown to uid/gid when >= 0. */
int control_bind(const char *path, uid_t uid, gid_t gid);
/* Start serving on the bound socket. */
int control_start(void);
void control_stop(void);

#endif
