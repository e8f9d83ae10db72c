#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "body.h"
#include "cache_entry.h"
#include "cache_redis.h"
#include "cachekey.h"
#include "clock.h"
#include "redis_lease.h"
#include "redis_link.h"

/* The Redis tier: its connections, the entries' codec, and the leases and waits on them. */
struct cache_redis {
    struct redis_link link;
    struct cache_entry_codec codec;
    struct redis_leases leases;
};

/* One lookup. Lives until hiredis has called back for it (a reply, or NULL
 * when the context goes away), even if its budget ran out first. */
struct redis_lookup {
    struct cache_redis *cr;
    cache_lookup_cb cb;
    void *arg;
    struct event *budget_timer;
    int answered;
    const struct classify_spec *job; /* the expectation (the caller's: read only before `answered`) */
    const char *identity;            /* NULL, or a copy after key[] */
    char key[];
};

/* ------------------------------------------------------------- lookups */

/* One grant check; lives as a lookup does. */
struct redis_grant_check {
    struct redis_link *r;
    cache_grant_cb cb;
    void *arg;
    struct event *budget_timer;
    int answered;
};

static void grant_answer(struct redis_grant_check *g, int granted, int64_t ttl_ms)
{
    if (g->answered)
        return;
    g->answered = 1;
    evtimer_del(g->budget_timer);
    g->cb(granted, ttl_ms, g->arg);
}

static void grant_check_free(struct redis_grant_check *g)
{
    event_free(g->budget_timer);
    free(g);
}

static void on_grant_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct redis_grant_check *g = privdata;
    struct redis_link *r = g->r;
    redisReply *rep = reply;
    r->pending--;
    if (r->closing) {
        grant_check_free(g);
        return;
    }
    if (!rep || rep->type != REDIS_REPLY_INTEGER) {
        if (rep && rep->type == REDIS_REPLY_ERROR)
            redis_link_error_reply(r, "PTTL", rep);
        else
            r->errors++;
        grant_answer(g, -1, 0);
    } else if (rep->integer > 0) { /* -2: no such key; -1: no expiry, which a grant never has */
        grant_answer(g, 1, (int64_t)rep->integer);
    } else {
        grant_answer(g, 0, 0);
    }
    grant_check_free(g);
}

static void on_grant_budget(evutil_socket_t fd, short what, void *arg)
{
    struct redis_grant_check *g = arg;
    g->r->timeouts++;
    grant_answer(g, -1, 0);
}

void cache_redis_grant_get(struct cache_redis *cr, const char *key, cache_grant_cb cb, void *arg)
{
    struct redis_link *r = &cr->link;
    struct redis_grant_check *g = redis_link_ready_for(r, key, strlen(key)) ? calloc(1, sizeof(*g)) : NULL;
    if (!g) {
        cb(-1, 0, arg);
        return;
    }
    g->r = r;
    g->cb = cb;
    g->arg = arg;
    g->budget_timer = evtimer_new(r->base, on_grant_budget, g);
    if (!g->budget_timer || redis_link_send(r, key, on_grant_reply, g, "PTTL %s", key) != REDIS_OK) {
        r->errors++;
        if (g->budget_timer)
            event_free(g->budget_timer);
        free(g);
        cb(-1, 0, arg);
        return;
    }
    r->pending++;
    struct timeval tv = redis_link_tv(r->budget_ms);
    evtimer_add(g->budget_timer, &tv);
}

static void on_grant_set(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct redis_link *r = privdata;
    redis_link_reply_done(r, reply, "SET");
}

void cache_redis_grant_set(struct cache_redis *cr, const char *key, int64_t ttl_ms)
{
    struct redis_link *r = &cr->link;
    if (!redis_link_ready_for(r, key, strlen(key)))
        return;
    int rc = ttl_ms > 0 ? redis_link_send(r, key, on_grant_set, r, "SET %s 1 PX %" PRId64, key, ttl_ms)
                        : redis_link_send(r, key, on_grant_set, r, "DEL %s", key);
    if (rc == REDIS_OK)
        r->pending++;
    else
        r->errors++;
}

static void lookup_answer(struct redis_lookup *l, enum cache_status status, struct body *b)
{
    if (l->answered)
        return;
    l->answered = 1;
    evtimer_del(l->budget_timer);
    l->cb(status, b, CACHE_LEASE_NONE, l->arg);
}

static void lookup_free(struct redis_lookup *l)
{
    event_free(l->budget_timer);
    free(l);
}

static void on_lookup_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct redis_lookup *l = privdata;
    struct redis_link *r = &l->cr->link;
    redisReply *rep = reply;
    r->pending--;
    if (r->closing || l->answered) {
        lookup_free(l);
        return;
    }
    if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 2) {
        /* An error reply (LOADING, ...) is not a miss: a miss may be cached over. */
        if (rep && rep->type == REDIS_REPLY_ERROR)
            redis_link_error_reply(r, "MGET", rep);
        else
            r->errors++;
        lookup_answer(l, CACHE_UNAVAILABLE, NULL);
        lookup_free(l);
        return;
    }
    const struct cache_expect expect = {.job = l->job, .identity = l->identity};
    struct body *b = cache_entry_pick(&l->cr->codec, l->key, rep->element, &expect, &r->errors);
    enum cache_status status = !b ? CACHE_MISS : body_fresh(b, clock_wall_ms()) ? CACHE_HIT : CACHE_STALE;
    lookup_answer(l, status, b);
    body_unref(b);
    lookup_free(l);
}

static void on_lookup_budget(evutil_socket_t fd, short what, void *arg)
{
    struct redis_lookup *l = arg;
    l->cr->link.timeouts++;
    lookup_answer(l, CACHE_UNAVAILABLE, NULL);
    /* The lookup stays allocated until hiredis calls back for it. */
}

void cache_redis_get(struct cache_redis *cr, const char *key, const struct cache_expect *expect, cache_lookup_cb cb,
                     void *arg)
{
    struct redis_link *r = &cr->link;
    size_t len = strlen(key);
    if (!redis_link_ready_for(r, key, len)) {
        cb(CACHE_UNAVAILABLE, NULL, CACHE_LEASE_NONE, arg);
        return;
    }
    const char *id = expect ? expect->identity : NULL;
    size_t idlen = id ? strlen(id) + 1 : 0;
    struct redis_lookup *l = calloc(1, sizeof(*l) + len + 1 + idlen);
    if (!l) {
        cb(CACHE_UNAVAILABLE, NULL, CACHE_LEASE_NONE, arg);
        return;
    }
    l->cr = cr;
    l->cb = cb;
    l->arg = arg;
    memcpy(l->key, key, len + 1);
    if (id) {
        memcpy(l->key + len + 1, id, idlen);
        l->identity = l->key + len + 1;
    }
    l->job = expect ? expect->job : NULL;
    l->budget_timer = evtimer_new(r->base, on_lookup_budget, l);
    if (!l->budget_timer ||
        redis_link_send(r, key, on_lookup_reply, l, "MGET %s%s %s%s", key, cachekey_suffix(CACHEKEY_TERMINAL), key,
                        cachekey_suffix(CACHEKEY_PENDING)) != REDIS_OK) {
        r->errors++;
        if (l->budget_timer)
            event_free(l->budget_timer);
        free(l);
        cb(CACHE_UNAVAILABLE, NULL, CACHE_LEASE_NONE, arg);
        return;
    }
    r->pending++;
    struct timeval tv = redis_link_tv(r->budget_ms);
    evtimer_add(l->budget_timer, &tv);
}

void cache_redis_get_lease(struct cache_redis *r, const char *key, const struct cache_expect *expect, int64_t lease_ms,
                           struct cache_fold *fold, cache_lookup_cb cb, void *arg)
{
    if (!redis_lease_scripted(&r->leases)) {
        cache_redis_get(r, key, expect, cb, arg); /* the lease, if needed, is a pipeline of its own */
        return;
    }
    if (!redis_lease_acquire(&r->leases, key, expect, lease_ms, 1, fold, cb, arg))
        cb(CACHE_UNAVAILABLE, NULL, CACHE_LEASE_UNAVAILABLE, arg);
}

/* -------------------------------------------------------------- stores */

/* A store on its way: the key, settled once Redis has answered the SET. */
struct redis_store {
    struct cache_redis *r;
    char key[];
};

/* The lease is released (and the store published) only now: behind
 * twemproxy KEY:p and KEY:l may live on different servers, and a release
 * sent with the SET could land first; a waiter would then see neither lease
 * nor answer and call upstream itself. */
static void on_store_done(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct redis_store *st = privdata;
    struct cache_redis *r = st->r;
    redisReply *rep = reply;
    redis_link_reply_done(&r->link, rep, "SET");
    if (!r->link.closing)
        cache_redis_settle(r, st->key, rep && rep->type != REDIS_REPLY_ERROR);
    free(st);
}

void cache_redis_put(struct cache_redis *r, const char *key, struct body *b, int64_t px_ms)
{
    size_t klen = strlen(key);
    struct redis_store *st = redis_link_ready_for(&r->link, key, klen) ? malloc(sizeof(*st) + klen + 1) : NULL;
    if (!st) {
        cache_redis_settle(r, key, 0);
        return;
    }
    st->r = r;
    memcpy(st->key, key, klen + 1);
    size_t vlen;
    enum cachekey_slot slot = b->terminal ? CACHEKEY_TERMINAL : CACHEKEY_PENDING;
    char *value = cache_entry_encode(&r->codec, key, slot, b, &vlen);
    if (!value) {
        free(st);
        cache_redis_settle(r, key, 0);
        return;
    }
    const char *suffix = cachekey_suffix(slot);
    int rc;
    if (px_ms < 0)
        rc = redis_link_send(&r->link, key, on_store_done, st, "SET %s%s %b", key, suffix, value, vlen);
    else
        rc = redis_link_send(&r->link, key, on_store_done, st, "SET %s%s %b PX %" PRId64, key, suffix, value, vlen,
                             px_ms);
    free(value);
    if (rc == REDIS_OK) {
        r->link.pending++;
    } else {
        r->link.errors++;
        free(st);
        cache_redis_settle(r, key, 0);
    }
}

/* ------------------------------------------------------ leases and waits */

void cache_redis_settle(struct cache_redis *r, const char *key, int stored)
{
    redis_lease_settle(&r->leases, key, stored);
}

struct redis_op *cache_redis_lease(struct cache_redis *r, const char *key, const struct cache_expect *expect,
                                   int64_t lease_ms, cache_lookup_cb cb, void *arg)
{
    return redis_lease_acquire(&r->leases, key, expect, lease_ms, 0, NULL, cb, arg);
}

struct redis_op *cache_redis_wait(struct cache_redis *r, const char *key, const struct cache_expect *expect,
                                  int64_t timeout_ms, cache_get_cb cb, void *arg)
{
    return redis_lease_wait(&r->leases, key, expect, timeout_ms, cb, arg);
}

void cache_redis_cancel(struct cache_redis *r, struct redis_op *op)
{
    redis_lease_cancel(&r->leases, op);
}

/* ------------------------------------------------------------ lifecycle */

struct redis_link *cache_redis_link(struct cache_redis *r)
{
    return &r->link;
}

void cache_redis_health(const struct cache_redis *r, struct cache_health *out)
{
    redis_link_health(&r->link, out);
    out->rejected = r->codec.rejected;
}

/* What the connections tell: the waits are the leases module's. */
static void on_data_lost(void *arg)
{
    struct cache_redis *r = arg;
    redis_lease_fail_waits(&r->leases);
}

static void on_stored(void *arg, const char *key, size_t len)
{
    struct cache_redis *r = arg;
    redis_lease_wake(&r->leases, key, len);
}

struct cache_redis *cache_redis_new(struct event_base *base, const struct cache_conf *conf, char *err, size_t errlen)
{
    struct cache_redis *r = calloc(1, sizeof(*r));
    if (!r) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    const struct redis_link_hooks hooks = {.data_lost = on_data_lost, .stored = on_stored, .arg = r};
    if (cache_entry_codec_init(&r->codec, conf->entry_key, err, errlen) < 0) {
        free(r);
        return NULL;
    }
    if (redis_link_init(&r->link, base, conf, &hooks, err, errlen) < 0) {
        cache_entry_codec_free(&r->codec);
        free(r);
        return NULL;
    }
    redis_lease_init(&r->leases, &r->link, &r->codec, conf->redis_poll_interval_ms);
    redis_link_start(&r->link);
    return r;
}

void cache_redis_free(struct cache_redis *r)
{
    if (!r)
        return;
    redis_lease_close(&r->leases); /* the waits cancelled first: no callback from here on */
    redis_link_close(&r->link);    /* NULL replies free what hiredis still owed one */
    cache_entry_codec_free(&r->codec);
    free(r);
}
