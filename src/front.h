/*
 * The TLS front module (front_conn.c): SNI routing of IMAPS, POP3S and
 * submission connections to the domains' backends, without terminating TLS.
 */
#ifndef MXEDGE_FRONT_H
#define MXEDGE_FRONT_H

#include "daemon.h"

extern const struct daemon_module front_module;

#endif
