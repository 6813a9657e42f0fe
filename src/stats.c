/*
 * Counter storage: a small sorted array of {name, value}.  Counters are
 * created at start-up, so lookups are not on a hot path; increments go
 * through the pointer the module keeps.  Values live in separately
 * allocated cells so pointers stay valid when the array grows.  Most cells
 * are plain (the loop's thread alone touches them: an increment stays one
 * add); a shared cell is an atomic_ullong, for counters that worker threads
 * increment too, and is read here with an atomic load.
 */
#include "config.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "stats.h"

struct stat_entry {
	const char *name;
	void *value;		/* unsigned long long, or atomic_ullong when shared */
	bool shared;
};

static struct stat_entry *entries;
static size_t nentries, centries;

static void *
stats_cell(const char *name, bool shared)
{
	size_t lo = 0, hi = nentries;
	void *v;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int c = strcmp(entries[mid].name, name);

		if (c == 0) {
			/* One name asked for as plain and as shared: a bug. */
			if (entries[mid].shared != shared)
				abort();
			return entries[mid].value;
		}
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
	if (shared) {
		atomic_ullong *a = malloc(sizeof(*a));

		if (a != NULL)
			atomic_init(a, 0);
		v = a;
	} else
		v = calloc(1, sizeof(unsigned long long));
	if (v == NULL)
		abort();
	memmove(&entries[lo + 1], &entries[lo], (nentries - lo) * sizeof(*entries));
	entries[lo].name = name;
	entries[lo].value = v;
	entries[lo].shared = shared;
	nentries++;
	return v;
}

unsigned long long *
stats_counter(const char *name)
{
	return stats_cell(name, false);
}

atomic_ullong *
stats_counter_shared(const char *name)
{
	return stats_cell(name, true);
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
		unsigned long long v = entries[i].shared ?
		    atomic_load_explicit((atomic_ullong *)entries[i].value, memory_order_relaxed) :
		    *(unsigned long long *)entries[i].value;

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
		r |= mx_buf_printf(b, "\"%s\":%llu", dot ? dot + 1 : n, v);
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
