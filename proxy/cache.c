#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "cache.h"
#include "cache_mem.h"
#include "cache_redis.h"
#include "clock.h"
#include "redis_url.h"

/* Something cache.c waits for from Redis: a lookup (to fill the in-process
 * tier from), a lease, or a wait. On the cache's list until it calls back or
 * is cancelled, so that cache_free can drop it. */
struct cache_pending {
    struct cache *c;
    struct redis_op *op;       /* leases and waits: what cache_cancel forgets */
    cache_get_cb get_cb;       /* lookups and waits */
    cache_lookup_cb lookup_cb; /* lookups with a lease */
    cache_lease_cb lease_cb;
    void *arg;
    TAILQ_ENTRY(cache_pending) link;
    char key[];
};
TAILQ_HEAD(cache_pending_list, cache_pending);

/* Two tiers: the in-process store always (alone with `--redis none`), Redis
 * behind it when configured. A terminal answer never changes, so the
 * in-process copy needs no invalidation; a changing one lives there only for
 * what remains of its TTL and stale window, so tiers never disagree beyond
 * what those allow. */
struct cache {
    struct cache_mem *mem;
    struct cache_redis *redis;
    struct cache_pending_list pending;
};

struct cache *cache_new(struct event_base *base, const struct cache_conf *conf, char *err, size_t errlen)
{
    struct cache *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    TAILQ_INIT(&c->pending);
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

int cache_notify_parse(const char *word, enum cache_notify *out)
{
    static const char *const names[] = {
        [CACHE_NOTIFY_AUTO] = "auto", [CACHE_NOTIFY_PUBSUB] = "pubsub", [CACHE_NOTIFY_POLL] = "poll"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcmp(word, names[i]) == 0) {
            *out = (enum cache_notify)i;
            return 0;
        }
    }
    return -1;
}

int cache_redis_url_check(const char *url, char *err, size_t errlen)
{
    struct redis_target t;
    return redis_url_parse(url, &t, err, errlen);
}

/* A new pending record for `key`, on the cache's list; NULL if out of memory. */
static struct cache_pending *pending_new(struct cache *c, const char *key)
{
    size_t len = strlen(key);
    struct cache_pending *p = calloc(1, sizeof(*p) + len + 1);
    if (!p)
        return NULL;
    p->c = c;
    memcpy(p->key, key, len + 1);
    TAILQ_INSERT_TAIL(&c->pending, p, link);
    return p;
}

static void pending_free(struct cache_pending *p)
{
    TAILQ_REMOVE(&p->c->pending, p, link);
    free(p);
}

/* Keep a copy read from Redis in the in-process tier for what remains of
 * its fresh life and of its stale window, both counted from the times the
 * entry carries (cache_mem_put keeps a newer copy already there). */
static void fill_mem(struct cache *c, const char *key, struct body *b)
{
    if (b->expires_at_ms == 0) { /* without expiry; or an old entry that did not say: terminal only */
        if (b->terminal)
            cache_mem_put(c->mem, key, b, -1, 0);
        return;
    }
    int64_t now = clock_wall_ms();
    int64_t fresh_ms = b->expires_at_ms > now ? b->expires_at_ms - now : 0;
    int64_t stale_from = b->expires_at_ms > now ? b->expires_at_ms : now;
    int64_t stale_ms = b->stale_until_ms > stale_from ? b->stale_until_ms - stale_from : 0;
    cache_mem_put(c->mem, key, b, fresh_ms, stale_ms);
}

static void on_redis_result(enum cache_status status, struct body *b, enum cache_lease_status lease, void *arg)
{
    struct cache_pending *p = arg;
    struct cache *c = p->c;
    if (b)
        fill_mem(c, p->key, b);
    /* While Redis was asked, an upstream answer for this key may have been
     * stored (every store goes to the in-process tier at once): a miss or a
     * stale copy that predates it must not cost another upstream call. And
     * with Redis down, a stale copy in process is still a stale copy. */
    int stale;
    struct body *mine = cache_mem_get(c->mem, p->key, &stale);
    if (mine) {
        if (!stale && lease == CACHE_LEASE_ACQUIRED) {
            cache_redis_settle(c->redis, p->key, 0); /* the answer is here: nobody calls upstream */
            lease = CACHE_LEASE_NONE;
        }
        status = stale ? CACHE_STALE : CACHE_HIT;
        b = mine;
    }
    cache_get_cb get_cb = p->get_cb;
    cache_lookup_cb lookup_cb = p->lookup_cb;
    void *cb_arg = p->arg;
    pending_free(p);
    if (lookup_cb)
        lookup_cb(status, b, lease, cb_arg);
    else
        get_cb(status, b, cb_arg);
}

/* cache_get and cache_get_lease: `lookup_cb` set for the latter. */
static void lookup(struct cache *c, const char *key, const struct cache_expect *expect, int64_t lease_ms,
                   struct cache_fold *fold, cache_get_cb get_cb, cache_lookup_cb lookup_cb, void *arg)
{
    int stale;
    struct body *b = cache_mem_get(c->mem, key, &stale);
    enum cache_status status = !b ? CACHE_MISS : stale ? CACHE_STALE : CACHE_HIT;
    struct cache_pending *p = NULL;
    if ((b && !stale) || !c->redis || !(p = pending_new(c, key))) {
        if (c->redis && !(b && !stale))
            status = b ? CACHE_STALE : CACHE_UNAVAILABLE; /* out of memory */
        if (lookup_cb)
            lookup_cb(status, b, status == CACHE_HIT ? CACHE_LEASE_NONE : CACHE_LEASE_UNAVAILABLE, arg);
        else
            get_cb(status, b, arg);
        return;
    }
    p->get_cb = get_cb;
    p->lookup_cb = lookup_cb;
    p->arg = arg;
    if (lookup_cb && lease_ms > 0)
        cache_redis_get_lease(c->redis, key, expect, lease_ms, fold, on_redis_result, p);
    else
        cache_redis_get(c->redis, key, expect, on_redis_result, p);
}

void cache_get(struct cache *c, const char *key, const struct cache_expect *expect, cache_get_cb cb, void *arg)
{
    lookup(c, key, expect, 0, NULL, cb, NULL, arg);
}

void cache_get_lease(struct cache *c, const char *key, const struct cache_expect *expect, int64_t lease_ms,
                     struct cache_fold *fold, cache_lookup_cb cb, void *arg)
{
    lookup(c, key, expect, lease_ms, fold, NULL, cb, arg);
}

void cache_grant_get(struct cache *c, const char *key, cache_grant_cb cb, void *arg)
{
    if (!c->redis) {
        cb(-1, 0, arg);
        return;
    }
    cache_redis_grant_get(c->redis, key, cb, arg);
}

void cache_grant_set(struct cache *c, const char *key, int64_t ttl_ms)
{
    if (c->redis)
        cache_redis_grant_set(c->redis, key, ttl_ms);
}

struct redis_link *cache_link(struct cache *c)
{
    return c && c->redis ? cache_redis_link(c->redis) : NULL;
}

void cache_grant_del(struct cache *c, const char *key)
{
    if (c->redis)
        cache_redis_grant_set(c->redis, key, 0);
}

void cache_put(struct cache *c, const char *key, struct body *b, int64_t ttl_ms, int64_t stale_ms)
{
    if (ttl_ms == 0) {
        if (c->redis)
            cache_redis_settle(c->redis, key, 0); /* nothing stored: waiters go upstream */
        return;
    }
    if (ttl_ms < 0 || b->terminal || stale_ms < 0)
        stale_ms = 0; /* a terminal answer never goes stale */
    b->expires_at_ms = ttl_ms < 0 ? 0 : clock_wall_ms() + ttl_ms;
    b->stale_until_ms = stale_ms > 0 ? b->expires_at_ms + stale_ms : 0;
    cache_mem_put(c->mem, key, b, ttl_ms, stale_ms);
    if (c->redis) {
        cache_redis_put(c->redis, key, b, ttl_ms < 0 ? -1 : ttl_ms + stale_ms); /* settles the key once stored */
    }
}

/* ------------------------------------------------------ leases and waits */

static void on_lease_result(enum cache_status status, struct body *b, enum cache_lease_status lease, void *arg)
{
    struct cache_pending *p = arg;
    cache_lease_cb cb = p->lease_cb;
    void *cb_arg = p->arg;
    pending_free(p);
    cb(lease, cb_arg);
}

struct cache_pending *cache_lease(struct cache *c, const char *key, const struct cache_expect *expect, int64_t lease_ms,
                                  cache_lease_cb cb, void *arg)
{
    struct cache_pending *p = c->redis ? pending_new(c, key) : NULL;
    if (p) {
        p->lease_cb = cb;
        p->arg = arg;
        p->op = cache_redis_lease(c->redis, key, expect, lease_ms, on_lease_result, p);
        if (p->op)
            return p;
        pending_free(p);
    }
    cb(CACHE_LEASE_UNAVAILABLE, arg);
    return NULL;
}

static void on_wait_result(enum cache_status status, struct body *b, void *arg)
{
    struct cache_pending *p = arg;
    if (status == CACHE_HIT)
        fill_mem(p->c, p->key, b);
    cache_get_cb cb = p->get_cb;
    void *cb_arg = p->arg;
    pending_free(p);
    cb(status, b, cb_arg);
}

struct cache_pending *cache_wait(struct cache *c, const char *key, const struct cache_expect *expect,
                                 int64_t timeout_ms, cache_get_cb cb, void *arg)
{
    struct cache_pending *p = c->redis ? pending_new(c, key) : NULL;
    if (p) {
        p->get_cb = cb;
        p->arg = arg;
        p->op = cache_redis_wait(c->redis, key, expect, timeout_ms, on_wait_result, p);
        if (p->op)
            return p;
        pending_free(p);
    }
    cb(CACHE_UNAVAILABLE, NULL, arg);
    return NULL;
}

void cache_cancel(struct cache *c, struct cache_pending *p)
{
    if (!p)
        return;
    if (p->op)
        cache_redis_cancel(c->redis, p->op);
    pending_free(p);
}

void cache_lease_release(struct cache *c, const char *key)
{
    if (c->redis)
        cache_redis_settle(c->redis, key, 0);
}

/* ------------------------------------------------------------- the rest */

void cache_health(const struct cache *c, struct cache_health *out)
{
    struct cache_mem_stats s;
    cache_mem_stats(c->mem, &s);
    if (c->redis)
        cache_redis_health(c->redis, out);
    else
        *out = (struct cache_health){.backend = "memory", .state = "up", .up = 1, .coalescing = "none"};
    out->entries = s.entries;
    out->bytes = s.bytes;
}

void cache_free(struct cache *c)
{
    if (!c)
        return;
    cache_redis_free(c->redis); /* calls back no one */
    struct cache_pending *p;
    while ((p = TAILQ_FIRST(&c->pending)) != NULL)
        pending_free(p);
    cache_mem_free(c->mem);
    free(c);
}
