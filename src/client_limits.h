/*
 * Per-client connection counting for the front and the SMTP server: clients
 * are grouped by addr_client_key() (IPv4 /32, IPv6 /64, mapped IPv4 as IPv4)
 * and each group may hold at most `max` connections.  Pure code.
 */
#ifndef MXEDGE_CLIENT_LIMITS_H
#define MXEDGE_CLIENT_LIMITS_H

#include <stddef.h>
#include <sys/socket.h>

struct client_limits;

struct client_limits *client_limits_new(void);
void client_limits_free(struct client_limits **clp);
/* Count one more connection for sa's group: 0, or -1 when that would exceed max. */
int client_limits_acquire(struct client_limits *cl, const struct sockaddr *sa, size_t max);
/* Count one less (after a successful acquire). */
void client_limits_release(struct client_limits *cl, const struct sockaddr *sa);
/* Groups currently holding connections. */
size_t client_limits_groups(const struct client_limits *cl);

#endif
