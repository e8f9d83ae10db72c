/*
 * cache_redis: the Redis store behind cache.h: lookups and stores over the
 * modules that do the rest.
 *
 *   redis_url     what cache.redis_url names (redis://, sentinel://, unix:)
 *   redis_link    the connections: reconnects, SELECT, ROLE, Sentinel
 *   cachekey      the key layout: KEY:t (terminal), KEY:p (still changing),
 *                 KEY:l (lease), and the channel stores are published on
 *   cache_entry   the value layout ("JG1 ..."), encoded and decoded
 *   redis_lease   leases and waits: coalescing across processes
 *
 * A lookup reads KEY:t and KEY:p with one MGET and prefers KEY:t, so a late
 * still-changing answer can never hide a terminal one; every entry read is
 * checked (cache_entry.h) before it is served. A lookup that also asks for
 * the lease (cache_redis_get_lease) is one script where Redis runs them
 * (redis_lease.h): a miss then costs one round trip, its upstream call's
 * admission included where one is folded in (cache_fold). It carries its own
 * timer (the budget) and answers CACHE_UNAVAILABLE when it fires, the late
 * reply being dropped (hiredis 0.14 has no async timeouts); it stays
 * allocated until hiredis has called back for it. An error reply is never a
 * miss. A store SETs KEY:t or KEY:p (with PX), then settles the key once
 * Redis has answered.
 *
 * Every callback runs on the event loop's thread.
 */
#ifndef JOBGATE_CACHE_REDIS_H
#define JOBGATE_CACHE_REDIS_H

#include <stdint.h>

#include "cache_types.h"

struct body;
struct event_base;

struct cache_redis;
struct redis_op; /* a pending lease or wait */

struct cache_redis *cache_redis_new(struct event_base *base, const struct cache_conf *conf, char *err, size_t errlen);

/* Reports HIT (fresh), STALE, MISS or UNAVAILABLE, as cache_get, and lease
 * CACHE_LEASE_NONE. `expect` may be NULL. */
void cache_redis_get(struct cache_redis *r, const char *key, const struct cache_expect *expect, cache_lookup_cb cb,
                     void *arg);

/* The same, taking the key's lease for lease_ms in the same round trip
 * unless a fresh answer is there, where Redis runs scripts; elsewhere a
 * plain lookup (lease CACHE_LEASE_NONE). Contracts: cache_get_lease. */
void cache_redis_get_lease(struct cache_redis *r, const char *key, const struct cache_expect *expect, int64_t lease_ms,
                           struct cache_fold *fold, cache_lookup_cb cb, void *arg);

/* SET the entry for px_ms (< 0: no expiry), then, once Redis has answered
 * (or at once when it cannot be sent), cache_redis_settle the key: the lease
 * is never released before the answer is there to be read, even when the
 * two keys live on different servers behind twemproxy. Fire and forget. */
void cache_redis_put(struct cache_redis *r, const char *key, struct body *b, int64_t px_ms);

/* The key's upstream call is over: release its lease if this cache holds it,
 * and PUBLISH the key (pub/sub mode) if `stored` or a lease was released. */
void cache_redis_settle(struct cache_redis *r, const char *key, int stored);

/* Start a lease or a wait (contracts in cache.h and redis_lease.h). Returns NULL, without
 * calling `cb`, when it cannot start (Redis down, over its budget, no
 * memory): the caller answers UNAVAILABLE itself. Never calls `cb` before
 * returning. */
struct redis_op *cache_redis_lease(struct cache_redis *r, const char *key, const struct cache_expect *expect,
                                   int64_t lease_ms, cache_lookup_cb cb, void *arg);
struct redis_op *cache_redis_wait(struct cache_redis *r, const char *key, const struct cache_expect *expect,
                                  int64_t timeout_ms, cache_get_cb cb, void *arg);

/* Forget `op` (its callback not called); frees it once hiredis is done with it. */
void cache_redis_cancel(struct cache_redis *r, struct redis_op *op);

/* Shared grants (cache.h): PTTL KEY within the Redis budget (answers -1
 * past it); SET KEY 1 PX ttl_ms, or DEL KEY for ttl_ms <= 0. */
void cache_redis_grant_get(struct cache_redis *r, const char *key, cache_grant_cb cb, void *arg);
void cache_redis_grant_set(struct cache_redis *r, const char *key, int64_t ttl_ms);

/* The tier's link (cache.h: cache_link). */
struct redis_link;
struct redis_link *cache_redis_link(struct cache_redis *r);
void cache_redis_health(const struct cache_redis *r, struct cache_health *out);
void cache_redis_free(struct cache_redis *r);

#endif
