/*
 * Pure helpers: bounded strings, the capped byte buffer, number, size and
 * duration parsing, clocks and randomness.  Nothing here trusts its input to
 * be well formed; every parser rejects trailing garbage and overflow.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "util.h"

void
mx_buf_init(struct mx_buf *b, size_t max)
{
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
	b->max = max;
}

void
mx_buf_free(struct mx_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

void
mx_buf_reset(struct mx_buf *b)
{
	b->len = 0;
}

int
mx_buf_reserve(struct mx_buf *b, size_t extra)
{
	size_t need, ncap;
	unsigned char *p;

	if (extra > SIZE_MAX - b->len - 1) {
		errno = EMSGSIZE;
		return -1;
	}
	need = b->len + extra + 1;	/* room for a NUL from mx_buf_cstr */
	if (b->max != 0 && need > b->max + 1) {
		errno = EMSGSIZE;
		return -1;
	}
	if (need <= b->cap)
		return 0;
	ncap = b->cap ? b->cap : 64;
	while (ncap < need)
		ncap = ncap > SIZE_MAX / 2 ? need : ncap * 2;
	p = realloc(b->data, ncap);
	if (p == NULL)
		return -1;
	b->data = p;
	b->cap = ncap;
	return 0;
}

int
mx_buf_add(struct mx_buf *b, const void *p, size_t len)
{
	if (mx_buf_reserve(b, len) == -1)
		return -1;
	if (len > 0)
		memcpy(b->data + b->len, p, len);
	b->len += len;
	return 0;
}

int
mx_buf_addstr(struct mx_buf *b, const char *s)
{
	return mx_buf_add(b, s, strlen(s));
}

int
mx_buf_printf(struct mx_buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0 || mx_buf_reserve(b, (size_t)n) == -1)
		return -1;
	va_start(ap, fmt);
	vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
	return 0;
}

const char *
mx_buf_cstr(struct mx_buf *b)
{
	if (mx_buf_reserve(b, 0) == -1)
		return NULL;
	b->data[b->len] = '\0';
	return (const char *)b->data;
}

int
mx_buf_json_str(struct mx_buf *b, const char *s)
{
	const unsigned char *p;

	if (mx_buf_add(b, "\"", 1) == -1)
		return -1;
	for (p = (const unsigned char *)s; *p != '\0'; p++) {
		int r;

		if (*p == '"' || *p == '\\')
			r = mx_buf_printf(b, "\\%c", *p);
		else if (*p < 0x20 || *p == 0x7f)
			r = mx_buf_printf(b, "\\u%04x", *p);
		else
			r = mx_buf_add(b, p, 1);
		if (r == -1)
			return -1;
	}
	return mx_buf_add(b, "\"", 1);
}

int
mx_strlcpy(char *dst, const char *src, size_t size)
{
	size_t len = strlen(src);

	if (size == 0)
		goto toolong;
	if (len >= size) {
		memcpy(dst, src, size - 1);
		dst[size - 1] = '\0';
		goto toolong;
	}
	memcpy(dst, src, len + 1);
	return 0;
toolong:
	errno = ENAMETOOLONG;
	return -1;
}

int
mx_snprintf(char *dst, size_t size, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(dst, size, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= size) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

void
mx_str_lower(char *s)
{
	for (; *s != '\0'; s++)
		if (*s >= 'A' && *s <= 'Z')
			*s = (char)(*s - 'A' + 'a');
}

bool
mx_str_has_ctl(const char *s)
{
	for (; *s != '\0'; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return true;
	return false;
}

bool
mx_strcaseeq_n(const char *a, const char *b, size_t n)
{
	return strncasecmp(a, b, n) == 0;
}

int
mx_parse_llong(const char *s, long long min, long long max, long long *out)
{
	char *end;
	long long v;

	if (s == NULL || *s == '\0' || isspace((unsigned char)*s))
		return -1;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

/* A non-negative decimal number followed by an optional one-letter unit. */
static int
parse_scaled(const char *s, const char *units, const unsigned long long *mult,
    unsigned long long *out)
{
	unsigned long long v = 0, m = 1;
	const char *p = s;

	if (*p < '0' || *p > '9')
		return -1;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (v > (ULLONG_MAX - 9) / 10)
			return -1;
		v = v * 10 + (unsigned long long)(*p - '0');
	}
	if (*p != '\0') {
		const char *u = strchr(units, *p);

		if (u == NULL || p[1] != '\0')
			return -1;
		m = mult[u - units];
	}
	if (m != 0 && v > ULLONG_MAX / m)
		return -1;
	*out = v * m;
	return 0;
}

int
mx_parse_duration(const char *s, long long *seconds)
{
	static const unsigned long long mult[] = { 1, 60, 3600, 86400, 604800 };
	unsigned long long v;

	if (parse_scaled(s, "smhdw", mult, &v) == -1 || v > (unsigned long long)LLONG_MAX / 1000)
		return -1;
	*seconds = (long long)v;
	return 0;
}

int
mx_parse_size(const char *s, unsigned long long *bytes)
{
	static const unsigned long long mult[] = {
		1024ULL, 1024ULL, 1024ULL * 1024, 1024ULL * 1024,
		1024ULL * 1024 * 1024, 1024ULL * 1024 * 1024,
	};

	return parse_scaled(s, "kKmMgG", mult, bytes);
}

uint64_t
mx_now_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

int64_t
mx_time_now(void)
{
	return (int64_t)time(NULL);
}

void
mx_random(void *buf, size_t len)
{
	unsigned char *p = buf;

	while (len > 0) {
		ssize_t n = getrandom(p, len, 0);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			abort();
		}
		p += n;
		len -= (size_t)n;
	}
}

uint32_t
mx_random_u32(void)
{
	uint32_t v;

	mx_random(&v, sizeof(v));
	return v;
}
