#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "cache_mem.h"
#include "cache_redis.h"
#include "clock.h"

/* Two tiers: the in-process store always (alone with `--redis none`), Redis
 * behind it when configured. A terminal answer never changes, so the
 * in-process copy needs no invalidation; a changing one lives there only for
 * what remains of its TTL, so tiers never disagree beyond what the TTL allows. */
struct cache {
    struct cache_mem *mem;
    struct cache_redis *redis;
};

/* A Redis lookup on its way: what to fill and whom to tell. */
struct cache_fill {
    struct cache *c;
    cache_get_cb cb;
    void *arg;
    char key[];
};

struct cache *cache_new(struct event_base *base, const struct cache_conf *conf, char *err, size_t errlen)
{
    struct cache *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->mem = cache_mem_new(conf->memory_max_bytes);
    if (!c->mem) {
        free(c);
        return NULL;
    }
    if (conf->redis_url) {
        c->redis = cache_redis_new(base, conf, err, errlen);
        if (!c->redis) {
            cache_mem_free(c->mem);
            free(c);
            return NULL;
        }
    }
    return c;
}

/* Milliseconds `b` has left to live, -1 for ever, 0 if none (or unknown). */
static int64_t remaining_ms(const struct body *b)
{
    if (b->expires_at_ms == 0)
        return b->terminal ? -1 : 0; /* an entry from before expiry times were stored: terminal only */
    int64_t left = b->expires_at_ms - clock_wall_ms();
    return left > 0 ? left : 0;
}

static void on_redis_result(enum cache_status status, struct body *b, void *arg)
{
    struct cache_fill *f = arg;
    if (status == CACHE_HIT) {
        int64_t ttl = remaining_ms(b);
        if (ttl != 0)
            cache_mem_put(f->c->mem, f->key, b, ttl);
    } else {
        /* While Redis was asked, an upstream answer for this key may have been
         * stored (every store goes to the in-process tier at once): a miss
         * that predates it must not cost another upstream call. */
        struct body *fresh = cache_mem_get(f->c->mem, f->key);
        if (fresh) {
            status = CACHE_HIT;
            b = fresh;
        }
    }
    f->cb(status, b, f->arg);
    free(f);
}

void cache_get(struct cache *c, const char *key, cache_get_cb cb, void *arg)
{
    struct body *b = cache_mem_get(c->mem, key);
    if (b || !c->redis) {
        cb(b ? CACHE_HIT : CACHE_MISS, b, arg);
        return;
    }
    size_t len = strlen(key);
    struct cache_fill *f = malloc(sizeof(*f) + len + 1);
    if (!f) {
        cb(CACHE_UNAVAILABLE, NULL, arg);
        return;
    }
    f->c = c;
    f->cb = cb;
    f->arg = arg;
    memcpy(f->key, key, len + 1);
    cache_redis_get(c->redis, key, on_redis_result, f);
}

void cache_put(struct cache *c, const char *key, struct body *b, int64_t ttl_ms)
{
    if (ttl_ms == 0)
        return;
    b->expires_at_ms = ttl_ms < 0 ? 0 : clock_wall_ms() + ttl_ms;
    cache_mem_put(c->mem, key, b, ttl_ms);
    if (c->redis)
        cache_redis_put(c->redis, key, b, ttl_ms);
}

void cache_health(const struct cache *c, struct cache_health *out)
{
    struct cache_mem_stats s;
    cache_mem_stats(c->mem, &s);
    if (c->redis)
        cache_redis_health(c->redis, out);
    else
        *out = (struct cache_health){.backend = "memory", .state = "up", .up = 1};
    out->entries = s.entries;
    out->bytes = s.bytes;
}

void cache_free(struct cache *c)
{
    if (!c)
        return;
    cache_redis_free(c->redis);
    cache_mem_free(c->mem);
    free(c);
}
