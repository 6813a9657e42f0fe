/*
 * TAP producer for the unit tests.  Output goes to stdout, diagnostics to
 * stderr prefixed with "# ".  Nothing here knows about mxedge.
 */
#include "basic.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int planned = -1;
static int lazy;
static int current;
static int failed;
static int registered;

static void
finish(void)
{
	if (lazy)
		printf("1..%d\n", current);
	else if (planned >= 0 && planned != current) {
		fprintf(stderr, "# planned %d tests but ran %d\n", planned, current);
		fflush(stderr);
		_exit(255);
	}
	fflush(stdout);
	if (failed)
		fprintf(stderr, "# failed %d of %d tests\n", failed, current);
	if (failed || (planned >= 0 && planned != current))
		_exit(1);
}

static void
at_exit_once(void)
{
	if (!registered) {
		atexit(finish);
		registered = 1;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
}

void
plan(int count)
{
	at_exit_once();
	planned = count;
	printf("1..%d\n", count);
}

void
plan_lazy(void)
{
	at_exit_once();
	lazy = 1;
}

static int report(int success, const char *fmt, va_list ap) TAP_PRINTF(2, 0);

static int
report(int success, const char *fmt, va_list ap)
{
	current++;
	if (!success)
		failed++;
	printf("%sok %d - ", success ? "" : "not ", current);
	vprintf(fmt, ap);
	putchar('\n');
	return success;
}

int
ok(int success, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	report(success, fmt, ap);
	va_end(ap);
	return success;
}

int
is_int(long long wanted, long long seen, const char *fmt, ...)
{
	va_list ap;
	int success = wanted == seen;

	va_start(ap, fmt);
	report(success, fmt, ap);
	va_end(ap);
	if (!success)
		fprintf(stderr, "#   wanted: %lld\n#     seen: %lld\n", wanted, seen);
	return success;
}

int
is_string(const char *wanted, const char *seen, const char *fmt, ...)
{
	va_list ap;
	int success;

	if (wanted == NULL || seen == NULL)
		success = wanted == seen;
	else
		success = strcmp(wanted, seen) == 0;
	va_start(ap, fmt);
	report(success, fmt, ap);
	va_end(ap);
	if (!success)
		fprintf(stderr, "#   wanted: %s\n#     seen: %s\n",
		    wanted ? wanted : "(null)", seen ? seen : "(null)");
	return success;
}

int
is_blob(const void *wanted, size_t wlen, const void *seen, size_t slen,
    const char *fmt, ...)
{
	va_list ap;
	int success = wlen == slen && (wlen == 0 || memcmp(wanted, seen, wlen) == 0);

	va_start(ap, fmt);
	report(success, fmt, ap);
	va_end(ap);
	if (!success)
		fprintf(stderr, "#   wanted %zu bytes, seen %zu bytes, contents differ\n",
		    wlen, slen);
	return success;
}

void
skip(const char *fmt, ...)
{
	va_list ap;

	current++;
	printf("ok %d # skip ", current);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
}

void
skip_all(const char *fmt, ...)
{
	va_list ap;

	printf("1..0 # skip ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
	_exit(0);
}

void
diag(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fputs("# ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

void
bail(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	printf("Bail out! ");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
	_exit(255);
}

const char *
test_data_path(const char *name)
{
	static char path[4096];
	const char *srcdir = getenv("srcdir");
	int n;

	n = snprintf(path, sizeof(path), "%s/tests/data/%s",
	    srcdir != NULL ? srcdir : ".", name);
	if (n < 0 || (size_t)n >= sizeof(path))
		bail("test data path too long: %s", name);
	return path;
}

unsigned char *
test_data_read(const char *name, size_t *len)
{
	const char *path = test_data_path(name);
	FILE *f = fopen(path, "rb");
	unsigned char *buf = NULL;
	size_t cap = 0, used = 0, n;

	if (f == NULL)
		bail("cannot open %s", path);
	for (;;) {
		if (used == cap) {
			cap = cap ? cap * 2 : 4096;
			buf = realloc(buf, cap);
			if (buf == NULL)
				bail("out of memory");
		}
		n = fread(buf + used, 1, cap - used, f);
		if (n == 0)
			break;
		used += n;
	}
	fclose(f);
	*len = used;
	return buf;
}
