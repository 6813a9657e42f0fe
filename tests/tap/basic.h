/*
 * TAP helpers for the C unit tests: a plan, ok/is checks that print one TAP
 * line each, diagnostics, skips and bail-out.  The exit status is non-zero when
 * any check failed or the plan was not met, so automake's TAP driver and
 * prove(1) both see a failure.
 */
#ifndef MXEDGE_TAP_BASIC_H
#define MXEDGE_TAP_BASIC_H

#include <stddef.h>

#define TAP_PRINTF(f, a) __attribute__((format(printf, f, a)))

void plan(int count);
void plan_lazy(void);	/* print the plan at exit from the number of tests run */
int ok(int success, const char *fmt, ...) TAP_PRINTF(2, 3);
int is_int(long long wanted, long long seen, const char *fmt, ...) TAP_PRINTF(3, 4);
int is_string(const char *wanted, const char *seen, const char *fmt, ...) TAP_PRINTF(3, 4);
int is_blob(const void *wanted, size_t wlen, const void *seen, size_t slen,
    const char *fmt, ...) TAP_PRINTF(5, 6);
void skip(const char *fmt, ...) TAP_PRINTF(1, 2);
void skip_all(const char *fmt, ...) TAP_PRINTF(1, 2) __attribute__((noreturn));
void diag(const char *fmt, ...) TAP_PRINTF(1, 2);
void bail(const char *fmt, ...) TAP_PRINTF(1, 2) __attribute__((noreturn));

/* Path of a file under tests/data, from $srcdir (automake sets it) or ".". */
const char *test_data_path(const char *name);
/* Read a whole test data file; bails out when it is missing. Caller frees. */
unsigned char *test_data_read(const char *name, size_t *len);

#endif
