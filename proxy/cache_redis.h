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
 * (with PX). A lookup reads both with one MGET and prefers KEY:t, so a late
 * still-changing answer can never hide a terminal one. Values are
 * "JG1 <stored_at_ms> <terminal> <status> <expires_at_ms>\n<body>" (status
 * 200, or 404 for a remembered "no such job", kept under KEY:p; expires_at 0
 * for never), so that the in-process tier knows how long a copy may live.
 */
#ifndef JOBGATE_CACHE_REDIS_H
#define JOBGATE_CACHE_REDIS_H

#include "cache.h"

struct cache_redis;

struct cache_redis *cache_redis_new(struct event_base *base, const struct cache_conf *conf, char *err, size_t errlen);
void cache_redis_get(struct cache_redis *r, const char *key, cache_get_cb cb, void *arg);
void cache_redis_put(struct cache_redis *r, const char *key, struct body *b, int64_t ttl_ms);
void cache_redis_health(const struct cache_redis *r, struct cache_health *out);
void cache_redis_free(struct cache_redis *r);

#endif
