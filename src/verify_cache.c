/*
 * The recipient verification cache (see verify_cache.h): a chained hash
 * table over a least-recently-used list, both intrusive in the entries.
 * Owns its entries and nothing else; trusts nothing about the keys (they
 * are recipient addresses from the network, already syntax-checked by the
 * session, of bounded length).  Fails by forgetting: an answer that cannot
 * be stored is simply asked again next time.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "verify_cache.h"

#define VERIFY_CACHE_BUCKETS_MAX (1u << 20)

struct verify_entry {
	struct verify_entry *hnext;		/* hash chain */
	struct verify_entry *lprev, *lnext;	/* LRU list, most recent first */
	uint64_t hash;
	int64_t expires;
	bool refused;
	char addr[];
};

struct verify_cache {
	struct verify_entry **buckets;
	size_t nbuckets;			/* a power of two */
	size_t count, max;
	uint64_t seed;
	struct verify_entry *head, *tail;
};

/* FNV-1a, started from the seed. */
static uint64_t
key_hash(const struct verify_cache *c, const char *s)
{
	uint64_t h = 14695981039346656037ull ^ c->seed;

	for (; *s != '\0'; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ull;
	}
	return h ^ (h >> 29);
}

struct verify_cache *
verify_cache_new(size_t max, uint64_t seed)
{
	struct verify_cache *c;
	size_t n = 16;

	if (max == 0)
		max = 1;
	while (n < max && n < VERIFY_CACHE_BUCKETS_MAX)
		n *= 2;
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return NULL;
	if ((c->buckets = calloc(n, sizeof(*c->buckets))) == NULL) {
		free(c);
		return NULL;
	}
	c->nbuckets = n;
	c->max = max;
	c->seed = seed;
	return c;
}

static void
lru_unlink(struct verify_cache *c, struct verify_entry *e)
{
	if (e->lprev != NULL)
		e->lprev->lnext = e->lnext;
	else
		c->head = e->lnext;
	if (e->lnext != NULL)
		e->lnext->lprev = e->lprev;
	else
		c->tail = e->lprev;
	e->lprev = e->lnext = NULL;
}

static void
lru_push(struct verify_cache *c, struct verify_entry *e)
{
	e->lprev = NULL;
	e->lnext = c->head;
	if (c->head != NULL)
		c->head->lprev = e;
	else
		c->tail = e;
	c->head = e;
}

/* The entry and the link that points at it, or NULL. */
static struct verify_entry *
find(struct verify_cache *c, const char *addr, uint64_t h, struct verify_entry ***linkp)
{
	struct verify_entry **link = &c->buckets[h & (c->nbuckets - 1)];

	for (; *link != NULL; link = &(*link)->hnext)
		if ((*link)->hash == h && strcmp((*link)->addr, addr) == 0) {
			*linkp = link;
			return *link;
		}
	return NULL;
}

static void
drop(struct verify_cache *c, struct verify_entry *e)
{
	struct verify_entry **link;

	if (find(c, e->addr, e->hash, &link) != e)
		return;
	*link = e->hnext;
	lru_unlink(c, e);
	c->count--;
	free(e);
}

void
verify_cache_free(struct verify_cache **cp)
{
	struct verify_cache *c = *cp;
	struct verify_entry *e, *next;

	if (c == NULL)
		return;
	for (e = c->head; e != NULL; e = next) {
		next = e->lnext;
		free(e);
	}
	free(c->buckets);
	free(c);
	*cp = NULL;
}

int
verify_cache_get(struct verify_cache *c, const char *addr, int64_t now, bool *refused)
{
	struct verify_entry **link, *e;
	uint64_t h = key_hash(c, addr);

	if ((e = find(c, addr, h, &link)) == NULL)
		return 0;
	if (now >= e->expires) {
		drop(c, e);
		return 0;
	}
	lru_unlink(c, e);
	lru_push(c, e);
	*refused = e->refused;
	return 1;
}

int
verify_cache_put(struct verify_cache *c, const char *addr, bool refused, int64_t expires)
{
	struct verify_entry **link, *e;
	uint64_t h = key_hash(c, addr);
	size_t len = strlen(addr);

	if ((e = find(c, addr, h, &link)) != NULL) {
		e->refused = refused;
		e->expires = expires;
		lru_unlink(c, e);
		lru_push(c, e);
		return 0;
	}
	if (c->count >= c->max)
		drop(c, c->tail);
	if ((e = malloc(sizeof(*e) + len + 1)) == NULL) {
		errno = ENOMEM;
		return -1;
	}
	memcpy(e->addr, addr, len + 1);
	e->hash = h;
	e->refused = refused;
	e->expires = expires;
	e->hnext = c->buckets[h & (c->nbuckets - 1)];
	c->buckets[h & (c->nbuckets - 1)] = e;
	lru_push(c, e);
	c->count++;
	return 0;
}

size_t
verify_cache_count(const struct verify_cache *c)
{
	return c->count;
}
