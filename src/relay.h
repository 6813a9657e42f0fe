/*
 * The relay module: delivers the queue to each domain's primary over IPv6
 * (relay_sched.c schedules, relay_client.c speaks SMTP), bounces what cannot
 * be delivered, and serves `mxedge queue ...`.
 */
#ifndef MXEDGE_RELAY_H
#define MXEDGE_RELAY_H

#include "daemon.h"

extern const struct daemon_module relay_module;

#endif
