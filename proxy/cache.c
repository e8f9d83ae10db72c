#include <stdlib.h>

#include "cache.h"
#include "cache_mem.h"
#include "cache_redis.h"

struct cache {
    struct cache_mem *mem; /* the embedded store, when there is no Redis */
    struct cache_redis *redis;
};

struct cache *cache_new(struct event_base *base, const struct cache_conf *conf, char *err, size_t errlen)
{
    struct cache *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    if (conf->redis_url) {
        c->redis = cache_redis_new(base, conf, err, errlen);
        if (!c->redis) {
            free(c);
            return NULL;
        }
    } else {
        c->mem = cache_mem_new(conf->memory_max_bytes);
        if (!c->mem) {
            free(c);
            return NULL;
        }
    }
    return c;
}

void cache_get(struct cache *c, const char *key, cache_get_cb cb, void *arg)
{
    if (c->redis) {
        cache_redis_get(c->redis, key, cb, arg);
        return;
    }
    struct body *b = cache_mem_get(c->mem, key);
    cb(b ? CACHE_HIT : CACHE_MISS, b, arg);
}

void cache_put(struct cache *c, const char *key, struct body *b, int64_t ttl_ms)
{
    if (ttl_ms == 0)
        return;
    if (c->redis)
        cache_redis_put(c->redis, key, b, ttl_ms);
    else
        cache_mem_put(c->mem, key, b, ttl_ms);
}

void cache_health(const struct cache *c, struct cache_health *out)
{
    if (c->redis) {
        cache_redis_health(c->redis, out);
        return;
    }
    struct cache_mem_stats s;
    cache_mem_stats(c->mem, &s);
    *out = (struct cache_health){.backend = "memory", .state = "up", .up = 1, .entries = s.entries, .bytes = s.bytes};
}

void cache_free(struct cache *c)
{
    if (!c)
        return;
    cache_redis_free(c->redis);
    cache_mem_free(c->mem);
    free(c);
}
