/*
 * Control socket server.  Each client gets one request with a 5-second
 * deadline and a 1 KiB limit, one reply, and the close.  Handlers run on the
 * event loop and must not block; they answer from in-memory state.
 */
#include "config.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "control.h"
#include "control_proto.h"
#include "daemon.h"
#include "listen.h"
#include "log.h"
#include "stats.h"

#define CONTROL_TIMEOUT 5
#define CONTROL_MAX_COMMANDS 32

struct control_cmd {
	const char *name;
	const char *usage;
	control_handler handler;
};

static struct control_cmd commands[CONTROL_MAX_COMMANDS];
static int ncommands;
static int control_fd = -1;
static struct listener *control_listener;
static char control_path[108];

void
control_register(const char *command, const char *usage, control_handler h)
{
	if (ncommands == CONTROL_MAX_COMMANDS)
		log_fatalx("too many control commands");
	commands[ncommands].name = command;
	commands[ncommands].usage = usage;
	commands[ncommands].handler = h;
	ncommands++;
}

int
control_bind(const char *path, uid_t uid, gid_t gid)
{
	struct sockaddr_un sun;
	mode_t old;
	int fd;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	if (mx_strlcpy(sun.sun_path, path, sizeof(sun.sun_path)) == -1)
		return -1;
	mx_strlcpy(control_path, path, sizeof(control_path));
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -1;
	if (unlink(path) == -1 && errno != ENOENT)
		goto fail;
	old = umask(0117);
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		umask(old);
		goto fail;
	}
	umask(old);
	if (chmod(path, 0660) == -1)
		goto fail;
	if ((int)uid >= 0 && chown(path, uid, gid) == -1)
		goto fail;
	if (listen(fd, 16) == -1)
		goto fail;
	control_fd = fd;
	return 0;
fail:
	{
		int saved = errno;

		close(fd);
		errno = saved;
	}
	return -1;
}

static void
control_reply(struct bufferevent *bev, int ok, const char *msg, const struct mx_buf *payload)
{
	struct evbuffer *out = bufferevent_get_output(bev);

	if (ok)
		evbuffer_add(out, "ok\n", 3);
	else
		evbuffer_add_printf(out, "error %s\n", msg);
	if (payload != NULL && payload->len > 0)
		evbuffer_add(out, payload->data, payload->len);
}

static void
control_close_when_done(struct bufferevent *bev, void *arg)
{
	if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		bufferevent_free(bev);
}

static void
control_dispatch(struct bufferevent *bev, char *line)
{
	char *argv[CONTROL_MAX_ARGS];
	char err[512];
	struct mx_buf out;
	int argc, i, r;

	mx_buf_init(&out, CONTROL_REPLY_MAX);
	argc = control_split(line, argv, CONTROL_MAX_ARGS);
	if (argc <= 0) {
		control_reply(bev, 0, "malformed request", NULL);
		goto done;
	}
	for (i = 0; i < ncommands; i++)
		if (strcmp(commands[i].name, argv[0]) == 0)
			break;
	if (i == ncommands) {
		control_reply(bev, 0, "unknown command", NULL);
		goto done;
	}
	err[0] = '\0';
	r = commands[i].handler(argc, argv, &out, err, sizeof(err));
	log_debug("event=control command=%s result=%s", commands[i].name, r == 0 ? "ok" : "error");
	if (r == 0)
		control_reply(bev, 1, NULL, &out);
	else
		control_reply(bev, 0, err[0] ? err : "failed", NULL);
done:
	mx_buf_free(&out);
	bufferevent_setcb(bev, NULL, control_close_when_done, NULL, NULL);
	bufferevent_disable(bev, EV_READ);
	bufferevent_enable(bev, EV_WRITE);
}

static void
control_read(struct bufferevent *bev, void *arg)
{
	struct evbuffer *in = bufferevent_get_input(bev);
	char *line;
	size_t n;

	line = evbuffer_readln(in, &n, EVBUFFER_EOL_LF);
	if (line == NULL) {
		if (evbuffer_get_length(in) > CONTROL_LINE_MAX) {
			control_reply(bev, 0, "request too long", NULL);
			bufferevent_setcb(bev, NULL, control_close_when_done, NULL, NULL);
			bufferevent_disable(bev, EV_READ);
		}
		return;
	}
	if (n > CONTROL_LINE_MAX)
		control_reply(bev, 0, "request too long", NULL);
	else
		control_dispatch(bev, line);
	free(line);
	bufferevent_setcb(bev, NULL, control_close_when_done, NULL, NULL);
	bufferevent_disable(bev, EV_READ);
}

static void
control_event(struct bufferevent *bev, short what, void *arg)
{
	bufferevent_free(bev);
}

static void
control_accept(int fd, struct sockaddr *sa, socklen_t salen, void *arg)
{
	struct bufferevent *bev;
	struct timeval tv = { CONTROL_TIMEOUT, 0 };

	bev = bufferevent_socket_new(mxd->base, fd, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL) {
		close(fd);
		return;
	}
	bufferevent_setcb(bev, control_read, NULL, control_event, NULL);
	bufferevent_set_timeouts(bev, &tv, &tv);
	bufferevent_setwatermark(bev, EV_READ, 0, CONTROL_LINE_MAX + 2);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static int
cmd_help(int argc, char **argv, struct mx_buf *out, char *err, size_t errsize)
{
	int i;

	for (i = 0; i < ncommands; i++)
		mx_buf_printf(out, "%s\n", commands[i].usage);
	return 0;
}

int
control_start(void)
{
	if (control_fd == -1)
		return -1;
	control_register("help", "help", cmd_help);
	control_listener = listener_new(mxd->base, control_fd, control_accept, NULL, "control");
	return control_listener ? 0 : -1;
}

void
control_stop(void)
{
	if (control_listener != NULL) {
		listener_free(&control_listener);
		unlink(control_path);
	}
}
