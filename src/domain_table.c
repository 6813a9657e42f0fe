/*
 * The in-memory domain table the daemon routes with: an immutable snapshot
 * of the registry, an open-addressing hash on the normalised name, and a
 * reference count so that sessions holding a domain pointer keep their
 * snapshot alive after the registry changed under them.  Lookups normalise
 * the untrusted name first (lower case, one trailing dot, LDH only) and
 * never match anything but a registered name or, for SNI, a name under one.
 */
#include "config.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "registry.h"
#include "util.h"

/* A domain and what the front needs of it, precomputed at load. */
struct table_entry {
	struct domain d;
	bool has_route[FRONT_NSERVICES];
	struct domain_route route[FRONT_NSERVICES];
};

struct domain_table {
	int refs;
	size_t count;
	size_t nslots;		/* power of two, at least 2 * count */
	struct table_entry *entries;
	uint32_t *slots;	/* index + 1 into entries; 0 = empty */
};

static uint32_t
name_hash(const char *s, size_t len)
{
	uint32_t h = 2166136261u;	/* FNV-1a */
	size_t i;

	for (i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 16777619u;
	}
	return h;
}

struct load_ctx {
	struct table_entry *v;
	size_t n, cap;
	int failed;
};

static void
entry_routes(struct table_entry *e)
{
	int s;

	for (s = 0; s < FRONT_NSERVICES; s++) {
		struct domain_route *r = &e->route[s];

		e->has_route[s] = domain_service_target(&e->d, (enum front_service)s, &r->hp) == 0;
		if (!e->has_route[s])
			continue;
		addr_hostport_format(&r->hp, r->text, sizeof(r->text));
		if (r->hp.kind == ADDR_HOST_NAME || addr_hostport_sockaddr(&r->hp, &r->sa,
		    &r->salen) == -1)
			r->salen = 0;
	}
}

static int
load_one(const struct domain *d, void *arg)
{
	struct load_ctx *x = arg;

	if (x->n == x->cap) {
		size_t ncap = x->cap ? x->cap * 2 : 16;
		struct table_entry *nv = realloc(x->v, ncap * sizeof(*nv));

		if (nv == NULL) {
			x->failed = 1;
			return 1;
		}
		x->v = nv;
		x->cap = ncap;
	}
	x->v[x->n].d = *d;
	entry_routes(&x->v[x->n]);
	x->n++;
	return 0;
}

static const struct domain *
table_get(const struct domain_table *t, const char *name, size_t len)
{
	size_t mask = t->nslots - 1, i;

	if (t->count == 0)
		return NULL;
	for (i = name_hash(name, len) & mask; t->slots[i] != 0; i = (i + 1) & mask) {
		const struct domain *d = &t->entries[t->slots[i] - 1].d;

		if (strlen(d->name) == len && memcmp(d->name, name, len) == 0)
			return d;
	}
	return NULL;
}

struct domain_table *
domain_table_load(struct registry *r, char *err, size_t errsize)
{
	struct load_ctx x = { NULL, 0, 0, 0 };
	struct domain_table *t;
	size_t i, mask;

	if (registry_domain_foreach(r, load_one, &x, err, errsize) == -1 || x.failed) {
		if (x.failed)
			snprintf(err, errsize, "out of memory loading the registry");
		free(x.v);
		return NULL;
	}
	if ((t = calloc(1, sizeof(*t))) == NULL)
		goto oom;
	t->refs = 1;
	t->count = x.n;
	t->entries = x.v;
	t->nslots = 16;
	while (t->nslots < 2 * x.n)
		t->nslots *= 2;
	if ((t->slots = calloc(t->nslots, sizeof(*t->slots))) == NULL)
		goto oom;
	mask = t->nslots - 1;
	for (i = 0; i < x.n; i++) {
		size_t h = name_hash(x.v[i].d.name, strlen(x.v[i].d.name)) & mask;

		while (t->slots[h] != 0)
			h = (h + 1) & mask;
		t->slots[h] = (uint32_t)i + 1;
	}
	return t;
oom:
	snprintf(err, errsize, "out of memory loading the registry");
	if (t != NULL)
		free(t->slots);
	free(t);
	free(x.v);
	return NULL;
}

struct domain_table *
domain_table_ref(struct domain_table *t)
{
	t->refs++;
	return t;
}

void
domain_table_unref(struct domain_table **tp)
{
	struct domain_table *t = *tp;

	if (t == NULL)
		return;
	*tp = NULL;
	if (--t->refs > 0)
		return;
	free(t->slots);
	free(t->entries);
	free(t);
}

size_t
domain_table_count(const struct domain_table *t)
{
	return t ? t->count : 0;
}

/* Normalise an untrusted name into norm; returns its length or 0 if invalid. */
static size_t
lookup_name(const char *name, size_t len, char *norm)
{
	const char *err;

	if (len == 0 || len > ADDR_DOMAIN_MAX + 1)
		return 0;
	if (memchr(name, '\0', len) != NULL)
		return 0;
	if (addr_domain_normalize(name, len, norm, &err) == -1)
		return 0;
	return strlen(norm);
}

const struct domain *
domain_table_exact(const struct domain_table *t, const char *name, size_t len)
{
	char norm[ADDR_DOMAIN_MAX + 1];
	size_t n;

	if (t == NULL || (n = lookup_name(name, len, norm)) == 0)
		return NULL;
	return table_get(t, norm, n);
}

const struct domain *
domain_table_match(const struct domain_table *t, const char *name, size_t len)
{
	char norm[ADDR_DOMAIN_MAX + 1];
	const struct domain *d;
	size_t n, off = 0;

	if (t == NULL || (n = lookup_name(name, len, norm)) == 0)
		return NULL;
	/* Longest registered suffix wins: try the name, then each parent. */
	for (;;) {
		if ((d = table_get(t, norm + off, n - off)) != NULL)
			return d;
		while (off < n && norm[off] != '.')
			off++;
		if (off >= n)
			return NULL;
		off++;
	}
}

const struct domain_route *
domain_table_route(const struct domain *d, enum front_service s)
{
	const struct table_entry *e = (const struct table_entry *)
	    ((const char *)d - offsetof(struct table_entry, d));

	if ((unsigned)s >= FRONT_NSERVICES || !e->has_route[s])
		return NULL;
	return &e->route[s];
}
