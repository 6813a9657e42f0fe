/*
 * Log sink: stderr with a UTC timestamp in the foreground, syslog(3) with
 * LOG_MAIL otherwise.  Messages are format-checked at compile time; values
 * that came from the network must go through log_safe() first so a peer
 * cannot forge log lines or break key=value parsing.
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static bool log_stderr = true;
/*
 * The stderr prefix, refreshed once a second (and after a fork:
 * log_after_fork).  One per thread: the relay's journal workers log too
 * (queue_journal_append failures), and must not read it while another
 * thread rewrites it.
 */
static _Thread_local time_t cached_sec = -1;
static _Thread_local char cached_ts[32];
static _Thread_local size_t cached_tslen;
/* "Z ident[pid] ": what follows the milliseconds, the same for a second. */
static _Thread_local char cached_tail[128];
static _Thread_local size_t cached_taillen;
static enum log_level log_level = LOG_LEVEL_INFO;
static const char *log_ident = "mxedge";

void
log_init(const char *ident, bool to_stderr, enum log_level level)
{
	log_ident = ident;
	log_stderr = to_stderr;
	log_level = level;
	cached_sec = -1;
	if (!to_stderr)
		openlog(ident, LOG_PID | LOG_NDELAY, LOG_MAIL);
}

void
log_after_fork(void)
{
	cached_sec = -1;
}

void
log_set_level(enum log_level level)
{
	log_level = level;
}

bool
log_enabled(enum log_level level)
{
	return level <= log_level;
}

static void log_emit(enum log_level level, const char *errstr, const char *fmt, va_list ap)
    MX_PRINTF(3, 0);

/*
 * One line, one write(2): the prefix (timestamp to the second cached, pid
 * cached) and the message are formatted into one buffer, so lines from
 * different events never interleave and a busy front pays one system call
 * per access-log line.
 */
static void
log_emit(enum log_level level, const char *errstr, const char *fmt, va_list ap)
{
	static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
	static const char *const name[] = { "error", "warn", "info", "debug" };
	static const size_t namelen[] = { 5, 4, 4, 5 };
	char line[2304];
	int saved = errno, n, m;

	if (!log_enabled(level))
		return;
	if (!log_stderr) {
		char msg[2048];

		vsnprintf(msg, sizeof(msg), fmt, ap);
		syslog(prio[level], "%s: %s%s%s", name[level], msg, errstr ? ": " : "",
		    errstr ? errstr : "");
		errno = saved;
		return;
	}
	{
		struct timespec now;
		long ms;

		clock_gettime(CLOCK_REALTIME, &now);
		if (now.tv_sec != cached_sec) {
			struct tm tm;

			gmtime_r(&now.tv_sec, &tm);
			cached_tslen = strftime(cached_ts, sizeof(cached_ts), "%Y-%m-%dT%H:%M:%S",
			    &tm);
			m = snprintf(cached_tail, sizeof(cached_tail), "Z %s[%ld] ", log_ident,
			    (long)getpid());
			if (m < 0)
				m = 0;
			cached_taillen = (size_t)m < sizeof(cached_tail) ? (size_t)m :
			    sizeof(cached_tail) - 1;
			cached_sec = now.tv_sec;
		}
		/* Put together by hand: this prefix is on every access-log line. */
		ms = now.tv_nsec / 1000000L;
		memcpy(line, cached_ts, cached_tslen);
		n = (int)cached_tslen;
		line[n++] = '.';
		line[n++] = (char)('0' + ms / 100);
		line[n++] = (char)('0' + ms / 10 % 10);
		line[n++] = (char)('0' + ms % 10);
		memcpy(line + n, cached_tail, cached_taillen);
		n += (int)cached_taillen;
		memcpy(line + n, name[level], namelen[level]);
		n += (int)namelen[level];
		line[n++] = ':';
		line[n++] = ' ';
	}
	if (fmt[0] == '%' && fmt[1] == 's' && fmt[2] == '\0') {
		/* A line formatted by the caller: no printf for a plain copy. */
		const char *msg = va_arg(ap, const char *);
		size_t len, room = sizeof(line) - 2 - (size_t)n;

		if (msg == NULL)
			msg = "(null)";	/* as glibc's printf has it */
		len = strlen(msg);

		if (len > room)
			len = room;
		memcpy(line + n, msg, len);
		n += (int)len;
	} else {
		m = vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
		if (m < 0)
			m = 0;
		n = (size_t)(n + m) >= sizeof(line) - 1 ? (int)sizeof(line) - 2 : n + m;
	}
	if (errstr != NULL) {
		m = snprintf(line + n, sizeof(line) - (size_t)n, ": %s", errstr);
		if (m > 0)
			n = (size_t)(n + m) >= sizeof(line) - 1 ? (int)sizeof(line) - 2 : n + m;
	}
	line[n++] = '\n';
	if (write(STDERR_FILENO, line, (size_t)n) < 0) {
		/* Nowhere left to say it. */
	}
	errno = saved;
}

#define LOG_FN(fn, level, witherr)					\
void									\
fn(const char *fmt, ...)						\
{									\
	va_list ap;							\
	const char *e = (witherr) ? strerror(errno) : NULL;		\
									\
	va_start(ap, fmt);						\
	log_emit(level, e, fmt, ap);					\
	va_end(ap);							\
}

LOG_FN(log_info, LOG_LEVEL_INFO, 0)
LOG_FN(log_debug, LOG_LEVEL_DEBUG, 0)
LOG_FN(log_warn, LOG_LEVEL_WARN, 1)
LOG_FN(log_warnx, LOG_LEVEL_WARN, 0)
LOG_FN(log_error, LOG_LEVEL_ERROR, 0)

void
log_fatal(const char *fmt, ...)
{
	va_list ap;
	const char *e = strerror(errno);

	va_start(ap, fmt);
	log_emit(LOG_LEVEL_ERROR, e, fmt, ap);
	va_end(ap);
	exit(1);
}

void
log_fatalx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_emit(LOG_LEVEL_ERROR, NULL, fmt, ap);
	va_end(ap);
	exit(1);
}

const char *
log_safe(char *buf, size_t size, const void *p, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *s = p;
	size_t o = 0, i;

	if (size == 0)
		return buf;
	for (i = 0; i < len; i++) {
		unsigned char c = s[i];

		if (c > 0x20 && c < 0x7f && c != '"' && c != '\\' && c != '=') {
			if (o + 1 >= size)
				break;
			buf[o++] = (char)c;
		} else {
			if (o + 4 >= size)
				break;
			buf[o++] = '\\';
			buf[o++] = 'x';
			buf[o++] = hex[c >> 4];
			buf[o++] = hex[c & 15];
		}
	}
	buf[o] = '\0';
	return buf;
}
