/*
 * cache_mem: the embedded in-process cache. Same policy as Redis (terminal
 * answers without expiry, still-changing ones for their TTL, a terminal entry
 * never replaced by a still-changing one), bounded in bytes, least recently
 * used evicted first. Used alone with `--redis none`.
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

/* The live body under `key`, borrowed (body_ref it to keep it), or NULL.
 * An expired entry is dropped on the way. */
struct body *cache_mem_get(struct cache_mem *c, const char *key);

/* Store `b` (the cache takes its own reference) for `ttl_ms`, or forever
 * when ttl_ms < 0. Does nothing if a terminal entry is already there and `b`
 * is not terminal, or if `b` alone is larger than the whole cache. */
void cache_mem_put(struct cache_mem *c, const char *key, struct body *b, int64_t ttl_ms);

void cache_mem_stats(const struct cache_mem *c, struct cache_mem_stats *out);

void cache_mem_free(struct cache_mem *c);

#endif
