/*
 * The recipient verification cache: what a primary said about an address
 * (accepted or refused), until the answer expires.  Bounded: when full, the
 * entry used least recently goes.  Keys are hashed with a per-cache random
 * seed, so senders cannot choose addresses that all land in one chain.
 * Pure code (no clock of its own: the caller passes the time).
 */
#ifndef MXEDGE_VERIFY_CACHE_H
#define MXEDGE_VERIFY_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct verify_cache;

/* A cache of at most max entries (>= 1); NULL when memory is short. */
struct verify_cache *verify_cache_new(size_t max, uint64_t seed);
void verify_cache_free(struct verify_cache **cp);
/*
 * The answer for addr, if one is cached and now < its expiry: 1 with
 * *refused set (and the entry becomes the most recently used), else 0 (an
 * expired entry is dropped).
 */
int verify_cache_get(struct verify_cache *c, const char *addr, int64_t now, bool *refused);
/* Remember (or replace) an answer until expires.  0, or -1 (ENOMEM). */
int verify_cache_put(struct verify_cache *c, const char *addr, bool refused, int64_t expires);
size_t verify_cache_count(const struct verify_cache *c);

#endif
