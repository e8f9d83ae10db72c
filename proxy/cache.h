/*
 * cache: where job answers are kept between polls. Two tiers behind one
 * interface: an in-process store in front (bounded in bytes, LRU; a hit
 * costs no I/O) and, when configured, Redis behind it (shared by every
 * jobgate instance, survives restarts). `--redis none`: the in-process
 * store alone. A Redis hit fills the in-process store for what remains of
 * the entry's life.
 *
 * Policy, whatever the store: a terminal answer is kept without expiry (or
 * its rule's terminal TTL) and is never stale; a still-changing one is fresh
 * for its short TTL, then kept stale for the stale window given at store time
 * (served only when upstream fails); a terminal entry is never replaced by a
 * still-changing one. Keys are built by the caller from the rule name and the
 * validated route parameters only.
 *
 * What is read from Redis is checked before it is served (struct
 * cache_expect, cache_entry.h): its format, its MAC when an entry key is
 * set, and that it answers for the job asked for in a state that agrees
 * with where it was kept. What fails is a miss, counted in `rejected`. A
 * copy in the in-process tier was checked on its way in, or never left the
 * process: it is not checked again.
 *
 * Coalescing across processes (every jobgate sharing one Redis): before
 * calling upstream a process takes the key's lease (cache_lease, or with
 * the lookup itself: cache_get_lease, one round trip where Redis runs
 * scripts); the others
 * find it held and cache_wait for the answer its holder stores with
 * cache_put. Waiters learn of it by Redis pub/sub where the Redis tier allows
 * it, else by short polling (twemproxy has no pub/sub). Without Redis, or
 * with Redis down, there is no lease: every process calls upstream itself.
 *
 * Every callback below runs on the event loop's thread; it may call any
 * cache function except cache_free.
 */
#ifndef JOBGATE_CACHE_H
#define JOBGATE_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "body.h"
#include "cache_types.h"

struct event_base;
struct cache;
struct cache_pending;

/* "auto", "pubsub" or "poll" (cache.redis_notify). Returns 0, or -1 for another word. */
int cache_notify_parse(const char *word, enum cache_notify *out);

/* Parse and check a Redis URL. Returns 0, or -1 with a message. */
int cache_redis_url_check(const char *url, char *err, size_t errlen);

/* Returns the cache, or NULL with a message (bad URL, out of memory).
 * An unreachable Redis is not an error: it is retried in the background. */
struct cache *cache_new(struct event_base *base, const struct cache_conf *conf, char *err, size_t errlen);

/* Look `key` up: HIT (fresh), STALE (only a stale copy), MISS, or
 * UNAVAILABLE (Redis down or erring, and no copy in process). An error reply
 * from Redis is never reported as a MISS. `expect` (may be NULL) is what a
 * copy read from Redis must be. */
void cache_get(struct cache *c, const char *key, const struct cache_expect *expect, cache_get_cb cb, void *arg);

/* cache_get, and unless the answer is a fresh one, the key's lease for
 * lease_ms (as cache_lease) in the same round trip where the Redis tier
 * runs scripts. `cb` gets the lookup's outcome, and the lease's:
 * ACQUIRED, HELD or UNAVAILABLE as cache_lease says them; NONE for a HIT,
 * or where the lookup could not take it (twemproxy): cache_lease then, if
 * upstream must be called. Without Redis: UNAVAILABLE. An ACQUIRED lease is
 * the caller's to end with cache_put or cache_lease_release. `fold` (may
 * be NULL; cache_types.h) is an admission the lookup's script runs when it
 * takes the lease, so that the miss's upstream call needs no round trip of
 * its own; it is filled in before `cb` where it ran. */
void cache_get_lease(struct cache *c, const char *key, const struct cache_expect *expect, int64_t lease_ms,
                     struct cache_fold *fold, cache_lookup_cb cb, void *arg);

/* Store `b` (the cache takes what references it needs) in every tier, and
 * set b->expires_at_ms (end of its fresh life) and b->stale_until_ms. ttl_ms
 * < 0: no expiry; ttl_ms == 0: not stored. A still-changing `b` is kept
 * stale_ms longer (Redis: PX ttl+stale); a terminal one never goes stale.
 * Then releases the key's lease if this cache holds it and wakes the waiters
 * (PUBLISH, in pub/sub mode), whether or not `b` was stored. Fire and forget:
 * failures are counted. */
void cache_put(struct cache *c, const char *key, struct body *b, int64_t ttl_ms, int64_t stale_ms);

/* Ask for the key's lease for `lease_ms` (SET KEY:l TOKEN NX PX, in one
 * round trip with a re-read of the key: a fresh answer there is HELD). `cb`
 * tells the outcome, within the Redis budget. Returns a handle for
 * cache_cancel, valid until `cb` has been called; NULL when `cb` was
 * already called (before cache_lease returned). */
struct cache_pending *cache_lease(struct cache *c, const char *key, const struct cache_expect *expect, int64_t lease_ms,
                                  cache_lease_cb cb, void *arg);

/* Wait, at most timeout_ms, for another process's answer for `key`. `cb`
 * gets CACHE_HIT with the answer (it also fills the in-process tier), or,
 * without a body, CACHE_MISS when the lease went away with no answer stored
 * (its holder failed or died) or the time ran out, CACHE_UNAVAILABLE when
 * Redis went down or erred: in both cases call upstream yourself. Returns a
 * handle as cache_lease does. */
struct cache_pending *cache_wait(struct cache *c, const char *key, const struct cache_expect *expect,
                                 int64_t timeout_ms, cache_get_cb cb, void *arg);

/* Forget a pending cache_lease or cache_wait: its callback will not be
 * called. A lease acquired after the cancel is released at once. */
void cache_cancel(struct cache *c, struct cache_pending *p);

/* The holder got no answer to store (an upstream error): release the
 * lease, if this cache holds it, so that waiters elsewhere go upstream now
 * rather than at the lease's expiry. Releasing a lease this cache does not
 * hold does nothing: call it whenever an upstream call stored nothing. */
void cache_lease_release(struct cache *c, const char *key);

/* Pass-through grants shared by the fleet (tokengrant.h): `key` (the caller
 * builds it: prefix, a hash of the token, rule, project) is held in Redis for
 * the window as its TTL. cache_grant_get asks whether it is there; `cb` is
 * called exactly once, maybe before the call returns (-1 at once without
 * Redis), never after cache_free. cache_grant_set and cache_grant_del are
 * fire and forget. */
void cache_grant_get(struct cache *c, const char *key, cache_grant_cb cb, void *arg);
void cache_grant_set(struct cache *c, const char *key, int64_t ttl_ms);
void cache_grant_del(struct cache *c, const char *key);

/* The Redis tier's link, for a module that keeps a small value of its own
 * there through redis_link_send (iamregion_redis.h); NULL without a Redis
 * tier. Valid until cache_free. */
struct redis_link;
struct redis_link *cache_link(struct cache *c);

void cache_health(const struct cache *c, struct cache_health *out);

/* Frees everything; pending lookups, leases and waits are dropped without
 * their callbacks. Not to be called from a cache callback. */
void cache_free(struct cache *c);

#endif
