/*
 * cache: where job answers are kept between polls. Two tiers behind one
 * interface: an in-process store in front (bounded in bytes, LRU; a hit
 * costs no I/O) and, when configured, Redis behind it (shared by every
 * jobgate instance, survives restarts). `--redis none`: the in-process
 * store alone. A Redis hit fills the in-process store for what remains of
 * the entry's life.
 *
 * Policy, whatever the store: a terminal answer is kept without expiry (or
 * its rule's terminal TTL), a still-changing one for its short TTL, and a
 * terminal entry is never replaced by a still-changing one. Keys are built by
 * the caller from the rule name and the validated route parameters only.
 */
#ifndef JOBGATE_CACHE_H
#define JOBGATE_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "body.h"

struct event_base;
struct cache;

struct cache_conf {
    char *redis_url;         /* redis://HOST:PORT[/DB], unix:PATH, or NULL for the embedded store */
    int64_t redis_budget_ms; /* longest a request waits for Redis before going upstream */
    int64_t redis_connect_timeout_ms;
    int64_t redis_reconnect_min_ms;
    int64_t redis_reconnect_max_ms;
    size_t redis_max_pending; /* commands in flight before Redis counts as unavailable */
    size_t memory_max_bytes;  /* bound of the embedded store */
};

enum cache_status {
    CACHE_HIT,
    CACHE_MISS,
    CACHE_UNAVAILABLE, /* store down, slow beyond the budget, or erring: go upstream (BYPASS) */
};

/* Called exactly once per cache_get. `b` is borrowed (valid during the call;
 * body_ref it to keep it) and non-NULL only for CACHE_HIT. May be called
 * before cache_get returns (embedded store) or later, from the event loop. */
typedef void (*cache_get_cb)(enum cache_status status, struct body *b, void *arg);

/* Parse and check a Redis URL. Returns 0, or -1 with a message. */
int cache_redis_url_check(const char *url, char *err, size_t errlen);

/* Returns the cache, or NULL with a message (bad URL, out of memory).
 * An unreachable Redis is not an error: it is retried in the background. */
struct cache *cache_new(struct event_base *base, const struct cache_conf *conf, char *err, size_t errlen);

void cache_get(struct cache *c, const char *key, cache_get_cb cb, void *arg);

/* Store `b` (the cache takes what references it needs) in every tier, and
 * set b->expires_at_ms. ttl_ms < 0: no expiry; ttl_ms == 0: not stored. Fire
 * and forget: failures are counted. */
void cache_put(struct cache *c, const char *key, struct body *b, int64_t ttl_ms);

struct cache_health {
    const char *backend; /* "redis" or "memory" */
    const char *state;   /* "up", "connecting", "down" */
    int up;
    uint64_t errors;   /* Redis command errors and corrupt entries */
    uint64_t timeouts; /* lookups that ran past the budget */
    uint64_t reconnects;
    size_t entries; /* in the in-process tier */
    size_t bytes;
};
void cache_health(const struct cache *c, struct cache_health *out);

/* Frees everything; pending lookups are dropped without their callbacks. */
void cache_free(struct cache *c);

#endif
