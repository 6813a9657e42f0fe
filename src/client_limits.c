/*
 * Client groups in a chained hash table.  A group exists only while it has
 * connections, so memory follows the number of distinct clients, not the
 * number ever seen.  The table grows; the hash is keyed with a random seed so
 * a client cannot aim its addresses at one chain.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "client_limits.h"
#include "util.h"

struct client_group {
	struct client_group *next;
	size_t count;
	unsigned char key[17];
};

struct client_limits {
	struct client_group **slots;
	size_t nslots;		/* power of two */
	size_t ngroups;
	uint64_t seed;
};

static size_t
key_hash(const struct client_limits *cl, const unsigned char key[17])
{
	uint64_t h = cl->seed ^ 0xcbf29ce484222325ULL;
	size_t i;

	for (i = 0; i < 17; i++) {
		h ^= key[i];
		h *= 0x100000001b3ULL;
	}
	h ^= h >> 29;
	return (size_t)h & (cl->nslots - 1);
}

struct client_limits *
client_limits_new(void)
{
	struct client_limits *cl = calloc(1, sizeof(*cl));

	if (cl == NULL)
		return NULL;
	cl->nslots = 256;
	if ((cl->slots = calloc(cl->nslots, sizeof(*cl->slots))) == NULL) {
		free(cl);
		return NULL;
	}
	mx_random(&cl->seed, sizeof(cl->seed));
	return cl;
}

void
client_limits_free(struct client_limits **clp)
{
	struct client_limits *cl = *clp;
	size_t i;

	if (cl == NULL)
		return;
	for (i = 0; i < cl->nslots; i++) {
		struct client_group *g = cl->slots[i], *next;

		for (; g != NULL; g = next) {
			next = g->next;
			free(g);
		}
	}
	free(cl->slots);
	free(cl);
	*clp = NULL;
}

static void
grow(struct client_limits *cl)
{
	struct client_group **old = cl->slots, **nslots;
	size_t oldn = cl->nslots, i;

	nslots = calloc(oldn * 2, sizeof(*nslots));
	if (nslots == NULL)
		return;		/* longer chains, still correct */
	cl->slots = nslots;
	cl->nslots = oldn * 2;
	for (i = 0; i < oldn; i++) {
		struct client_group *g = old[i], *next;

		for (; g != NULL; g = next) {
			size_t h = key_hash(cl, g->key);

			next = g->next;
			g->next = cl->slots[h];
			cl->slots[h] = g;
		}
	}
	free(old);
}

int
client_limits_acquire(struct client_limits *cl, const struct sockaddr *sa, size_t max)
{
	unsigned char key[17];
	struct client_group *g;
	size_t h;

	addr_client_key(sa, key);
	h = key_hash(cl, key);
	for (g = cl->slots[h]; g != NULL; g = g->next)
		if (memcmp(g->key, key, sizeof(key)) == 0)
			break;
	if (g == NULL) {
		if (max == 0 || (g = calloc(1, sizeof(*g))) == NULL)
			return -1;
		memcpy(g->key, key, sizeof(key));
		g->next = cl->slots[h];
		cl->slots[h] = g;
		if (++cl->ngroups > cl->nslots)
			grow(cl);
	} else if (g->count >= max)
		return -1;
	g->count++;
	return 0;
}

void
client_limits_release(struct client_limits *cl, const struct sockaddr *sa)
{
	unsigned char key[17];
	struct client_group **gp, *g;

	addr_client_key(sa, key);
	for (gp = &cl->slots[key_hash(cl, key)]; (g = *gp) != NULL; gp = &g->next) {
		if (memcmp(g->key, key, sizeof(key)) != 0)
			continue;
		if (--g->count == 0) {
			*gp = g->next;
			free(g);
			cl->ngroups--;
		}
		return;
	}
}

size_t
client_limits_groups(const struct client_limits *cl)
{
	return cl->ngroups;
}
