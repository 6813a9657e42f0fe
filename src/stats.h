/*
 * Named counters for `mxedge status`: each module asks once for a pointer
 * to its counter ("front.accepted") and increments it on the hot path; the
 * control socket prints them all as JSON.  Pure code.
 */
#ifndef MXEDGE_STATS_H
#define MXEDGE_STATS_H

#include "util.h"

/* The counter with that name (created at 0 on first use); name must be a static string. */
unsigned long long *stats_counter(const char *name);
/* A gauge is a counter that can go down; same storage. */
#define stats_gauge stats_counter
/* Append {"name":value,...} sorted by name; names with a '.' nest one level. */
int stats_json(struct mx_buf *b);
void stats_free(void);

#endif
