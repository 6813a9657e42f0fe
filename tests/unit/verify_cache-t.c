/*
 * Tests for the recipient verification cache: answers and their expiry,
 * replacement, the least-recently-used eviction at the bound, and many
 * entries through few buckets.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "basic.h"
#include "verify_cache.h"

int
main(void)
{
	struct verify_cache *c;
	char addr[64];
	bool refused = false;
	int i, found;

	plan(17);

	c = verify_cache_new(3, 42);
	ok(c != NULL, "a cache of three");
	is_int(0, verify_cache_get(c, "a@x.test", 100, &refused), "empty: nothing cached");
	ok(verify_cache_put(c, "a@x.test", false, 200) == 0, "put an accepted answer");
	ok(verify_cache_put(c, "b@x.test", true, 150) == 0, "put a refusal");
	ok(verify_cache_get(c, "a@x.test", 199, &refused) == 1 && !refused,
	    "accepted until its expiry");
	ok(verify_cache_get(c, "b@x.test", 149, &refused) == 1 && refused, "refused until its expiry");
	is_int(0, verify_cache_get(c, "b@x.test", 150, &refused), "expired at the expiry time");
	is_int(1, (long long)verify_cache_count(c), "the expired entry is gone");
	is_int(0, verify_cache_get(c, "A@x.test", 100, &refused), "keys are exact");
	ok(verify_cache_put(c, "a@x.test", true, 300) == 0 &&
	    verify_cache_get(c, "a@x.test", 250, &refused) == 1 && refused,
	    "a new answer replaces the old one");

	/* LRU: a, c, d in; a used; e in: c (least recently used) goes. */
	verify_cache_put(c, "c@x.test", false, 1000);
	verify_cache_put(c, "d@x.test", false, 1000);
	verify_cache_get(c, "a@x.test", 100, &refused);
	verify_cache_put(c, "e@x.test", false, 1000);
	is_int(3, (long long)verify_cache_count(c), "never more than the bound");
	is_int(0, verify_cache_get(c, "c@x.test", 100, &refused), "the least recently used went");
	is_int(1, verify_cache_get(c, "a@x.test", 100, &refused), "a recently used entry stayed");
	is_int(1, verify_cache_get(c, "d@x.test", 100, &refused), "and the others too");
	verify_cache_free(&c);
	ok(c == NULL, "free NULLs the pointer");

	c = verify_cache_new(5000, 7);
	for (i = 0; i < 20000; i++) {
		snprintf(addr, sizeof(addr), "user%d@x.test", i);
		verify_cache_put(c, addr, i % 2 == 0, 10000);
	}
	is_int(5000, (long long)verify_cache_count(c), "20000 puts into 5000 entries");
	found = 0;
	for (i = 15000; i < 20000; i++) {
		snprintf(addr, sizeof(addr), "user%d@x.test", i);
		if (verify_cache_get(c, addr, 1, &refused) == 1 && refused == (i % 2 == 0))
			found++;
	}
	is_int(5000, found, "the 5000 most recent are all there, with their answers");
	verify_cache_free(&c);
	return 0;
}
