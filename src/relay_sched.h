/*
 * The relay scheduler's face towards the module glue (relay.c): start and
 * stop, the queue commands of `mxedge queue`, and the status member.  The
 * SMTP client talks to it through relay_client.h instead.
 */
#ifndef MXEDGE_RELAY_SCHED_H
#define MXEDGE_RELAY_SCHED_H

#include <stdbool.h>
#include <stddef.h>

#include "util.h"

int relay_sched_start(char *err, size_t errsize);
void relay_sched_reload(void);
void relay_sched_stop(void);

/* `queue list [--json]` */
int relay_sched_list(struct mx_buf *out, bool json);
/* `queue show ID [--json]`: 0, or -1 with err (no such message). */
int relay_sched_show(const char *id, bool json, struct mx_buf *out, char *err, size_t errsize);
/* `queue flush [ID]` (id NULL: everything): retry now.  Returns messages affected, -1 with err. */
long relay_sched_flush(const char *id, char *err, size_t errsize);
/* `queue delete ID`: 0, or -1 with err. */
int relay_sched_delete(const char *id, char *err, size_t errsize);
/* `queue hold ID` / `queue release ID`: 0, or -1 with err. */
int relay_sched_hold(const char *id, bool hold, char *err, size_t errsize);

/* Appends the "queue":{...} member for `mxedge status`. */
int relay_sched_status(struct mx_buf *json);

#endif
