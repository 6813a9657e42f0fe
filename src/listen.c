/*
 * Listeners.  accept4() until EAGAIN in one callback, with a per-wakeup cap
 * so one busy port cannot starve the loop.  EMFILE/ENFILE/ENOBUFS/ENOMEM
 * pause the listener for a short, growing delay instead of spinning.
 */
#include "config.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "listen.h"
#include "log.h"
#include "stats.h"

#define ACCEPT_BURST 64

struct listener {
	struct event *ev;
	struct event *backoff;
	int fd;
	int delay_ms;
	bool paused;
	listener_cb cb;
	void *arg;
	const char *what;
};

int
listen_bind(const struct conf_listen *l)
{
	int fd, one = 1;

	fd = socket(l->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -1;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1)
		goto fail;
	if (l->addr.ss_family == AF_INET6 &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) == -1)
		goto fail;
	if (bind(fd, (const struct sockaddr *)&l->addr, l->addrlen) == -1)
		goto fail;
	if (listen(fd, 1024) == -1)
		goto fail;
	return fd;
fail:
	{
		int saved = errno;

		close(fd);
		errno = saved;
	}
	return -1;
}

static void
listener_backoff_done(evutil_socket_t fd, short what, void *arg)
{
	struct listener *l = arg;

	if (!l->paused)
		event_add(l->ev, NULL);
}

static void
listener_accept(evutil_socket_t lfd, short what, void *arg)
{
	struct listener *l = arg;
	struct sockaddr_storage ss;
	socklen_t len;
	int i, fd;

	for (i = 0; i < ACCEPT_BURST; i++) {
		len = sizeof(ss);
		fd = accept4(lfd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1) {
			if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
				return;
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
			    errno == ENOMEM) {
				struct timeval tv;

				l->delay_ms = l->delay_ms ? l->delay_ms * 2 : 10;
				if (l->delay_ms > 1000)
					l->delay_ms = 1000;
				log_warn("event=accept_backoff listener=%s delay_ms=%d", l->what,
				    l->delay_ms);
				(*stats_counter("listen.accept_backoff"))++;
				event_del(l->ev);
				tv.tv_sec = l->delay_ms / 1000;
				tv.tv_usec = (l->delay_ms % 1000) * 1000;
				evtimer_add(l->backoff, &tv);
				return;
			}
			log_warn("event=accept_error listener=%s", l->what);
			return;
		}
		l->delay_ms = 0;
		l->cb(fd, (struct sockaddr *)&ss, len, l->arg);
	}
}

struct listener *
listener_new(struct event_base *base, int fd, listener_cb cb, void *arg, const char *what)
{
	struct listener *l = calloc(1, sizeof(*l));

	if (l == NULL)
		return NULL;
	l->fd = fd;
	l->cb = cb;
	l->arg = arg;
	l->what = what;
	l->ev = event_new(base, fd, EV_READ | EV_PERSIST, listener_accept, l);
	l->backoff = evtimer_new(base, listener_backoff_done, l);
	if (l->ev == NULL || l->backoff == NULL || event_add(l->ev, NULL) == -1) {
		if (l->ev)
			event_free(l->ev);
		if (l->backoff)
			event_free(l->backoff);
		free(l);
		return NULL;
	}
	return l;
}

void
listener_pause(struct listener *l)
{
	l->paused = true;
	event_del(l->ev);
}

void
listener_resume(struct listener *l)
{
	if (!l->paused)
		return;
	l->paused = false;
	if (!evtimer_pending(l->backoff, NULL))
		event_add(l->ev, NULL);
}

void
listener_free(struct listener **lp)
{
	struct listener *l = *lp;

	if (l == NULL)
		return;
	event_free(l->ev);
	event_free(l->backoff);
	close(l->fd);
	free(l);
	*lp = NULL;
}

int
listen_our_addresses(const struct conf *c, struct sockaddr_storage *out, int max)
{
	struct ifaddrs *ifa = NULL, *i;
	int k, n = 0;

	for (k = 0; k < c->n_smtp_listen && n < max; k++) {
		const struct sockaddr_storage *ss = &c->smtp_listen[k].addr;
		bool wild = false;

		if (ss->ss_family == AF_INET6)
			wild = IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)
			    (const void *)ss)->sin6_addr);
		else if (ss->ss_family == AF_INET)
			wild = ((const struct sockaddr_in *)(const void *)ss)->sin_addr.s_addr ==
			    htonl(INADDR_ANY);
		if (!wild) {
			out[n++] = *ss;
			continue;
		}
		if (ifa == NULL && getifaddrs(&ifa) == -1) {
			log_warn("event=getifaddrs_failed");
			continue;
		}
		for (i = ifa; i != NULL && n < max; i = i->ifa_next) {
			if (i->ifa_addr == NULL || i->ifa_addr->sa_family != ss->ss_family)
				continue;
			memset(&out[n], 0, sizeof(out[0]));
			memcpy(&out[n], i->ifa_addr, ss->ss_family == AF_INET6 ?
			    sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
			n++;
		}
	}
	if (ifa != NULL)
		freeifaddrs(ifa);
	return n;
}
