/*
 * Counter storage: a small sorted array of {name, value}.  Counters are
 * created at start-up, so lookups are not on a hot path; increments go
 * through the pointer the module keeps.  Values live in separately
 * allocated cells so pointers stay valid when the array grows.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "stats.h"

struct stat_entry {
	const char *name;
	unsigned long long *value;
};

static struct stat_entry *entries;
static size_t nentries, centries;

unsigned long long *
stats_counter(const char *name)
{
	size_t lo = 0, hi = nentries;
	unsigned long long *v;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int c = strcmp(entries[mid].name, name);

		if (c == 0)
			return entries[mid].value;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (nentries == centries) {
		size_t n = centries ? centries * 2 : 64;
		struct stat_entry *ne = realloc(entries, n * sizeof(*ne));

		if (ne == NULL)
			abort();
		entries = ne;
		centries = n;
	}
	if ((v = calloc(1, sizeof(*v))) == NULL)
		abort();
	memmove(&entries[lo + 1], &entries[lo], (nentries - lo) * sizeof(*entries));
	entries[lo].name = name;
	entries[lo].value = v;
	nentries++;
	return v;
}

int
stats_json(struct mx_buf *b)
{
	size_t i;
	const char *group = NULL;
	size_t glen = 0;
	int r = mx_buf_addstr(b, "{");

	for (i = 0; i < nentries; i++) {
		const char *n = entries[i].name, *dot = strchr(n, '.');
		size_t plen = dot ? (size_t)(dot - n) : 0;
		bool first = i == 0;

		if (group != NULL && (plen != glen || strncmp(n, group, glen) != 0)) {
			r |= mx_buf_addstr(b, "}");
			group = NULL;
		}
		if (!first)
			r |= mx_buf_addstr(b, ",");
		if (dot != NULL && group == NULL) {
			r |= mx_buf_printf(b, "\"%.*s\":{", (int)plen, n);
			group = n;
			glen = plen;
		}
		r |= mx_buf_printf(b, "\"%s\":%llu", dot ? dot + 1 : n, *entries[i].value);
	}
	if (group != NULL)
		r |= mx_buf_addstr(b, "}");
	r |= mx_buf_addstr(b, "}");
	return r ? -1 : 0;
}

void
stats_free(void)
{
	size_t i;

	for (i = 0; i < nentries; i++)
		free(entries[i].value);
	free(entries);
	entries = NULL;
	nentries = centries = 0;
}
