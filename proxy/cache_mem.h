/*
 * cache_mem: the embedded in-process cache. Same policy as Redis (terminal
 * answers without expiry, still-changing ones for their TTL and then, stale,
 * for their stale window; a terminal entry never replaced by a
 * still-changing one, nor an answer by an older one), bounded in bytes, least
 * recently used evicted first. Used alone with `--redis none`.
 *
 * Synchronous and single-threaded; bodies are shared by reference.
 */
#ifndef JOBGATE_CACHE_MEM_H
#define JOBGATE_CACHE_MEM_H

#include <stddef.h>
#include <stdint.h>

#include "body.h"

struct cache_mem;

struct cache_mem_stats {
    size_t entries;
    size_t bytes;
    size_t max_bytes;
    uint64_t evictions;
};

struct cache_mem *cache_mem_new(size_t max_bytes);

/* The body under `key`, borrowed (body_ref it to keep it), or NULL. Sets
 * *stale to 1 when its fresh life is over but its stale window is not, else
 * to 0. An entry past both is dropped on the way. */
struct body *cache_mem_get(struct cache_mem *c, const char *key, int *stale);

/* Store `b` (the cache takes its own reference) fresh for `ttl_ms` then
 * stale for `stale_ms`, or forever when ttl_ms < 0 (stale_ms unused). Does
 * nothing when ttl_ms + stale_ms is 0, when `b` alone is larger than the
 * whole cache, or when the entry already there must win: a terminal one
 * against a still-changing `b`, or one received later from upstream
 * (stored_at_ms) against a `b` of the same kind, so that a stale copy read
 * back from Redis never hides a fresher one. */
void cache_mem_put(struct cache_mem *c, const char *key, struct body *b, int64_t ttl_ms, int64_t stale_ms);

void cache_mem_stats(const struct cache_mem *c, struct cache_mem_stats *out);

void cache_mem_free(struct cache_mem *c);

#endif
