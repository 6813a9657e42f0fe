/*
 * Logging: one line per event, key=value pairs, to stderr (foreground) or
 * syslog(3).  warn() appends strerror(errno); warnx() does not.  fatal means
 * the environment is unusable and exits; bugs are assertions, not log lines.
 */
#ifndef MXEDGE_LOG_H
#define MXEDGE_LOG_H

#include "util.h"

enum log_level {
	LOG_LEVEL_ERROR = 0,
	LOG_LEVEL_WARN,
	LOG_LEVEL_INFO,
	LOG_LEVEL_DEBUG,
};

/* to_stderr: log to stderr with a timestamp; else syslog with ident and LOG_MAIL. */
void log_init(const char *ident, bool to_stderr, enum log_level level);
void log_set_level(enum log_level level);
/* A forked child calls this so its lines carry its own pid. */
void log_after_fork(void);
bool log_enabled(enum log_level level);

void log_info(const char *fmt, ...) MX_PRINTF(1, 2);
void log_debug(const char *fmt, ...) MX_PRINTF(1, 2);
void log_warn(const char *fmt, ...) MX_PRINTF(1, 2);	/* adds ": strerror(errno)" */
void log_warnx(const char *fmt, ...) MX_PRINTF(1, 2);
void log_error(const char *fmt, ...) MX_PRINTF(1, 2);
void log_fatal(const char *fmt, ...) MX_PRINTF(1, 2) __attribute__((noreturn));
void log_fatalx(const char *fmt, ...) MX_PRINTF(1, 2) __attribute__((noreturn));

/*
 * Make an untrusted string safe to put in a log value: control bytes, spaces,
 * quotes and bytes >= 0x7f become \xNN, truncated at max output bytes.
 * Returns buf.  Use it for every network-supplied string (SNI, HELO, paths).
 */
const char *log_safe(char *buf, size_t size, const void *p, size_t len);
#define LOG_SAFE_MAX 512

#endif
