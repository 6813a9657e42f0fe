/*
 * Listening sockets: bound before the privilege drop, IPv6 sockets
 * IPV6_V6ONLY so [::]:25 and 0.0.0.0:25 can both be configured, and an
 * accept wrapper that backs off instead of spinning when the process runs out
 * of descriptors (sniproxy #89).
 */
#ifndef MXEDGE_LISTEN_H
#define MXEDGE_LISTEN_H

#include <sys/socket.h>

#include "conf.h"

struct event_base;
struct listener;

/* Bind and listen; returns the fd or -1 with errno. */
int listen_bind(const struct conf_listen *l);

typedef void (*listener_cb)(int fd, struct sockaddr *sa, socklen_t salen, void *arg);

/* Accept on fd (non-blocking, close-on-exec sockets handed to cb). */
struct listener *listener_new(struct event_base *base, int fd, listener_cb cb, void *arg,
    const char *what);
void listener_pause(struct listener *l);
void listener_resume(struct listener *l);
void listener_free(struct listener **lp);	/* closes the fd */

/*
 * Our own addresses, so the relay and recipient verification never take a
 * host with one of them for a primary (a mail loop): every smtp_listen
 * address, and behind a wildcard one every interface address of its family.
 * Returns how many were stored in out (at most max).
 */
int listen_our_addresses(const struct conf *c, struct sockaddr_storage *out, int max);

#endif
