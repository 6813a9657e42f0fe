/*
 * Small pure helpers shared by every module: bounded string copies, a
 * length-carrying byte buffer, string views, durations and sizes.  No I/O.
 */
#ifndef MXEDGE_UTIL_H
#define MXEDGE_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define MX_PRINTF(f, a) __attribute__((format(printf, f, a)))
#define MX_NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* A view into someone else's bytes: never owned, never NUL-terminated. */
struct mx_view {
	const unsigned char *ptr;
	size_t len;
};

/* A growable byte buffer with a hard cap; mx_buf_* return 0 or -1 (ENOMEM/EMSGSIZE). */
struct mx_buf {
	unsigned char *data;
	size_t len;
	size_t cap;
	size_t max;	/* 0 = unlimited */
};

void mx_buf_init(struct mx_buf *b, size_t max);
void mx_buf_free(struct mx_buf *b);
int mx_buf_reserve(struct mx_buf *b, size_t extra);
int mx_buf_add(struct mx_buf *b, const void *p, size_t len);
int mx_buf_addstr(struct mx_buf *b, const char *s);
int mx_buf_printf(struct mx_buf *b, const char *fmt, ...) MX_PRINTF(2, 3);
/* Make data a NUL-terminated C string (the NUL is not counted in len). */
const char *mx_buf_cstr(struct mx_buf *b);
void mx_buf_reset(struct mx_buf *b);

/* Copy with truncation check: returns 0, or -1 (errno ENAMETOOLONG) if it did not fit. */
int mx_strlcpy(char *dst, const char *src, size_t size);
int mx_snprintf(char *dst, size_t size, const char *fmt, ...) MX_PRINTF(3, 4);

/* Lower-case ASCII in place. */
void mx_str_lower(char *s);
bool mx_str_has_ctl(const char *s);	/* any byte < 0x20 or 0x7f */
bool mx_strcaseeq_n(const char *a, const char *b, size_t n);

/* "30s", "10m", "2h", "5d", plain seconds.  Returns 0 or -1. */
int mx_parse_duration(const char *s, long long *seconds);
/* "50M", "1G", "4096", "16k".  Returns 0 or -1. */
int mx_parse_size(const char *s, unsigned long long *bytes);
/* Decimal integer within [min,max]; 0 or -1. */
int mx_parse_llong(const char *s, long long min, long long max, long long *out);

/* Monotonic and wall clocks in microseconds / seconds. */
uint64_t mx_now_usec(void);
int64_t mx_time_now(void);

/* Random bytes from getrandom(2); aborts on failure (the environment is unusable). */
void mx_random(void *buf, size_t len);
uint32_t mx_random_u32(void);

/* JSON string escaping onto a buffer, with surrounding quotes. */
int mx_buf_json_str(struct mx_buf *b, const char *s);

#endif
