/*
 * cache_redis: the Redis store behind cache.h, on hiredis's async API and
 * its libevent adapter (the daemon's one event loop).
 *
 * hiredis 0.14 (Debian 12) has no async timeouts and frees its context right
 * after the connect-failure or disconnect callback. So: every lookup carries
 * its own timer (the budget) and answers CACHE_UNAVAILABLE when it fires,
 * the late reply being dropped; a connect attempt has its own timer too; the
 * context pointer is cleared inside those callbacks and never touched again;
 * reconnection runs on a timer with exponential backoff.
 *
 * Layout in Redis: KEY:t holds a terminal answer, KEY:p a still-changing one
 * (with PX: its TTL plus its stale window), KEY:l the lease of the process
 * calling upstream for KEY (its owner token, with PX). A lookup reads KEY:t
 * and KEY:p with one MGET and prefers KEY:t, so a late still-changing answer
 * can never hide a terminal one. Values are "JG1 <stored_at_ms> <terminal>
 * <status> <expires_at_ms> <stale_until_ms>\n<body>" (status 200, or 404 for
 * a remembered "no such job", kept under KEY:p; 0 for never), so that a
 * reader knows a fresh copy from a stale one and how long the in-process tier
 * may keep it. Older values with fewer fields are still read.
 *
 * Waits: a dedicated subscriber connection SUBSCRIBEs to the one channel
 * "jobgate:answers"; a store PUBLISHes the key there (pub/sub mode). Each
 * wait re-reads MGET KEY:t KEY:p KEY:l when told, and on a timer: every poll
 * interval in poll mode, five times slower in pub/sub mode (only to see a
 * lease expire, which publishes nothing). One channel rather than one per
 * key: stores are bounded by the upstream's rate limit, so every process
 * hearing of every store costs little, and no SUBSCRIBE/UNSUBSCRIBE churn.
 * In poll mode every command passes twemproxy: MGET, SET, DEL, EVAL with one
 * key (and SELECT only for a database other than 0, which twemproxy refuses).
 *
 * Error replies are counted and kept (code and command only) as the last
 * error; READONLY and MASTERDOWN mean a failover may have moved the master:
 * the data connection is closed and reopened.
 *
 * The data connection counts as up only once its handshake is answered:
 * SELECT (a database other than 0) and, with Sentinel, ROLE saying
 * "master". Before that a command could run in database 0 or on a replica.
 *
 * Sentinel (sentinel://HOST:PORT[,HOST:PORT...]/MASTER[/DB]): each time the
 * data connection (re)connects, the sentinels are asked in order, each
 * within the connect timeout, SENTINEL get-master-addr-by-name MASTER, and
 * the data and subscriber connections go to the address the first one
 * gives. A third connection SUBSCRIBEs to +switch-master on one sentinel
 * (the next one when it fails) and moves both at once when a failover names
 * a new master. Disconnects, READONLY and a ROLE other than master all lead
 * back to asking the sentinels. Meanwhile Redis is unavailable: lookups
 * answer UNAVAILABLE and requests go upstream, as in any Redis outage.
 */
#ifndef JOBGATE_CACHE_REDIS_H
#define JOBGATE_CACHE_REDIS_H

#include "cache.h"

struct cache_redis;
struct redis_op; /* a pending lease or wait */

struct cache_redis *cache_redis_new(struct event_base *base, const struct cache_conf *conf, char *err, size_t errlen);

/* Reports HIT (fresh), STALE, MISS or UNAVAILABLE, as cache_get. */
void cache_redis_get(struct cache_redis *r, const char *key, cache_get_cb cb, void *arg);

/* SET the entry for px_ms (< 0: no expiry), then, once Redis has answered
 * (or at once when it cannot be sent), cache_redis_settle the key: the lease
 * is never released before the answer is there to be read, even when the
 * two keys live on different servers behind twemproxy. Fire and forget. */
void cache_redis_put(struct cache_redis *r, const char *key, struct body *b, int64_t px_ms);

/* The key's upstream call is over: release its lease if this cache holds it,
 * and PUBLISH the key (pub/sub mode) if `stored` or a lease was released. */
void cache_redis_settle(struct cache_redis *r, const char *key, int stored);

/* Start a lease or a wait (contracts in cache.h). Returns NULL, without
 * calling `cb`, when it cannot start (Redis down, over its budget, no
 * memory): the caller answers UNAVAILABLE itself. Never calls `cb` before
 * returning. */
struct redis_op *cache_redis_lease(struct cache_redis *r, const char *key, int64_t lease_ms, cache_lease_cb cb,
                                   void *arg);
struct redis_op *cache_redis_wait(struct cache_redis *r, const char *key, int64_t timeout_ms, cache_get_cb cb,
                                  void *arg);

/* Forget `op` (its callback not called); frees it once hiredis is done with it. */
void cache_redis_cancel(struct cache_redis *r, struct redis_op *op);

void cache_redis_health(const struct cache_redis *r, struct cache_health *out);
void cache_redis_free(struct cache_redis *r);

#endif
