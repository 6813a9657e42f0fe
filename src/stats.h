/*
 * Named counters for `mxedge status`: each module asks once for a pointer
 * to its counter ("front.accepted") and increments it on the hot path; the
 * control socket prints them all as JSON.  Pure code.
 */
#ifndef MXEDGE_STATS_H
#define MXEDGE_STATS_H

#include <stdatomic.h>

#include "util.h"

/*
 * The counter with that name (created at 0 on first use); name must be a
 * static string.  Creating counters and reading them (stats_json) is for
 * the event loop's thread; a plain counter is incremented on that thread
 * only.
 */
unsigned long long *stats_counter(const char *name);
/*
 * The same for a counter that other threads increment too, with
 * atomic_fetch_add_explicit(c, 1, memory_order_relaxed); stats_json()
 * loads it atomically.  A name is either plain or shared (a bug otherwise).
 */
atomic_ullong *stats_counter_shared(const char *name);
/* A gauge is a counter that can go down; same storage. */
#define stats_gauge stats_counter
/* Append {"name":value,...} sorted by name; names with a '.' nest one level. */
int stats_json(struct mx_buf *b);
void stats_free(void);

#endif
