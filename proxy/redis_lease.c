#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "body.h"
#include "cache_entry.h"
#include "cachekey.h"
#include "clock.h"
#include "log.h"
#include "randbytes.h"
#include "redis_lease.h"
#include "redis_link.h"

#define POLL_INTERVAL_MS    20
#define PUBSUB_CHECK_FACTOR 5 /* pub/sub mode: a wait re-reads only to see a lease expire */
#define LEASE_TOKEN_MAX     48

/* Compare-and-delete: release the lease only if it is still ours. */
#define RELEASE_SCRIPT "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"

/* A lease this process acquired and has not released yet. */
struct held_lease {
    struct keymap_item item; /* item.key == key */
    char token[LEASE_TOKEN_MAX];
    char key[];
};

/* A lease request or a wait. Like a lookup (cache_redis.c) it lives until hiredis has
 * called back for every command sent for it (replies_out), even once
 * finished (answered or cancelled). */
struct redis_op {
    struct redis_leases *ls;
    int is_wait;
    cache_lease_cb lease_cb; /* lease */
    cache_get_cb get_cb;     /* wait */
    void *arg;
    struct event *timer;    /* lease: the budget; wait: the next check */
    struct event *deadline; /* wait: its time limit */
    int replies_out;
    int finished;                    /* answered or cancelled: never calls back again */
    int cancelled;                   /* lease: release it if it is granted after all */
    int check_again;                 /* wait: told of a store while a check was out */
    TAILQ_ENTRY(redis_op) wait_link; /* on ls->waits until finished */
    char token[LEASE_TOKEN_MAX];
    char key[];
};

static void on_del_done(redisAsyncContext *ac, void *reply, void *privdata)
{
    redis_link_reply_done(privdata, reply, "DEL");
}

static void on_publish_done(redisAsyncContext *ac, void *reply, void *privdata)
{
    redis_link_reply_done(privdata, reply, "PUBLISH");
}

/* --------------------------------------------------------------- leases */

/* A lease release on its way: the key, to fall back to DEL if EVAL is refused. */
struct redis_release {
    struct redis_leases *ls;
    char key[];
};

static void send_del_lease(struct redis_link *r, const char *key)
{
    if (redis_link_ready(r) &&
        redisAsyncCommand(r->data.ctx, on_del_done, r, "DEL %s%s", key, cachekey_suffix(CACHEKEY_LEASE)) == REDIS_OK)
        r->pending++;
}

static void on_release_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct redis_release *rel = privdata;
    struct redis_leases *ls = rel->ls;
    struct redis_link *r = ls->link;
    redisReply *rep = reply;
    r->pending--;
    if (!r->closing && rep && rep->type == REDIS_REPLY_ERROR) {
        redis_link_error_reply(r, "EVAL", rep);
        /* Scripting refused (disabled, or a proxy without it): DEL instead,
         * from now on. Its risk: deleting a lease another process took after
         * ours expired, which costs one more upstream call, never a wrong answer. */
        if (strncmp(rep->str, "ERR", 3) == 0 || strncmp(rep->str, "NOSCRIPT", 8) == 0 ||
            strncmp(rep->str, "NOPERM", 6) == 0) {
            if (!ls->eval_refused)
                log_warn("redis: EVAL refused; leases are released with DEL from now on");
            ls->eval_refused = 1;
            send_del_lease(r, rel->key);
        }
    } else if (!r->closing && !rep) {
        r->errors++;
    }
    free(rel);
}

/* Release the lease on `key` if this cache holds it. Returns 1 if it did. */
static int release_held(struct redis_leases *ls, const char *key)
{
    struct redis_link *r = ls->link;
    struct held_lease *h = (struct held_lease *)keymap_get(&ls->held, key);
    if (!h)
        return 0;
    if (ls->eval_refused) {
        send_del_lease(r, key);
    } else if (redis_link_ready(r)) {
        size_t len = strlen(key);
        struct redis_release *rel = malloc(sizeof(*rel) + len + 1);
        if (rel) {
            rel->ls = ls;
            memcpy(rel->key, key, len + 1);
            if (redisAsyncCommand(r->data.ctx, on_release_reply, rel, "EVAL %s 1 %s%s %s", RELEASE_SCRIPT, key,
                                  cachekey_suffix(CACHEKEY_LEASE), h->token) == REDIS_OK)
                r->pending++;
            else
                free(rel);
        }
    }
    /* Forgotten even when Redis is down: the lease then ends at its expiry. */
    keymap_remove(&ls->held, &h->item);
    free(h);
    return 1;
}

void redis_lease_settle(struct redis_leases *ls, const char *key, int stored)
{
    struct redis_link *r = ls->link;
    int released = release_held(ls, key);
    if ((stored || released) && redis_link_may_publish(r) && redis_link_ready(r) &&
        redisAsyncCommand(r->data.ctx, on_publish_done, r, "PUBLISH %s %s", CACHEKEY_CHANNEL, key) == REDIS_OK)
        r->pending++;
}

static void held_add(struct redis_leases *ls, const char *key, const char *token)
{
    size_t len = strlen(key);
    struct held_lease *h = malloc(sizeof(*h) + len + 1);
    if (!h)
        return; /* not released by us then: it ends at its expiry */
    memcpy(h->key, key, len + 1);
    h->item.key = h->key;
    snprintf(h->token, sizeof(h->token), "%s", token);
    struct held_lease *old = (struct held_lease *)keymap_get(&ls->held, key);
    if (old) { /* an older lease of ours that expired: this token replaced it */
        keymap_remove(&ls->held, &old->item);
        free(old);
    }
    if (keymap_put(&ls->held, &h->item) < 0)
        free(h);
}

static void op_free(struct redis_op *op)
{
    if (op->timer)
        event_free(op->timer);
    if (op->deadline)
        event_free(op->deadline);
    free(op);
}

/* Free `op` if it is finished and hiredis owes it no reply. */
static void op_maybe_free(struct redis_op *op)
{
    if (op->finished && op->replies_out == 0)
        op_free(op);
}

static void lease_answer(struct redis_op *op, enum cache_lease_status status)
{
    if (op->finished)
        return;
    op->finished = 1;
    evtimer_del(op->timer);
    op->lease_cb(status, op->arg);
}

static int lease_recheck(struct redis_op *op);

static void on_lease_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct redis_op *op = privdata;
    struct redis_leases *ls = op->ls;
    struct redis_link *r = ls->link;
    redisReply *rep = reply;
    r->pending--;
    op->replies_out--;
    if (r->closing) {
        op_free(op);
        return;
    }
    if (rep && rep->type == REDIS_REPLY_STATUS && strcmp(rep->str, "OK") == 0) {
        /* Granted, perhaps after the budget ran out: kept, so that cache_put
         * releases it; if the caller cancelled, nobody will: release now. */
        held_add(ls, op->key, op->token);
        if (op->cancelled)
            release_held(ls, op->key);
        else if (!op->finished && lease_recheck(op))
            return; /* answered once the answer is re-read */
        lease_answer(op, CACHE_LEASE_ACQUIRED);
    } else if (rep && rep->type == REDIS_REPLY_NIL) {
        lease_answer(op, CACHE_LEASE_HELD);
    } else {
        if (rep && rep->type == REDIS_REPLY_ERROR)
            redis_link_error_reply(r, "SET NX", rep);
        else
            r->errors++;
        lease_answer(op, CACHE_LEASE_UNAVAILABLE);
    }
    op_maybe_free(op);
}

/* The lease was granted: is a fresh answer there already? Then it was
 * stored, and its lease released, between the caller's lookup and our SET NX
 * (a whole upstream call can fit there): give the lease back and answer
 * HELD, so that the caller's cache_wait finds that answer at once instead of
 * calling upstream again. A release is sent only after its store was
 * acknowledged (on_store_done), so this read sees that store. */
static void on_lease_recheck(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct redis_op *op = privdata;
    struct redis_leases *ls = op->ls;
    struct redis_link *r = ls->link;
    redisReply *rep = reply;
    r->pending--;
    op->replies_out--;
    if (r->closing) {
        op_free(op);
        return;
    }
    struct body *b = NULL;
    if (rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2)
        b = cache_entry_pick(rep->element, 2, &r->errors);
    else if (rep && rep->type == REDIS_REPLY_ERROR)
        redis_link_error_reply(r, "MGET", rep);
    int fresh = b && body_fresh(b, clock_wall_ms());
    body_unref(b);
    if (fresh || op->cancelled)
        redis_lease_settle(ls, op->key, 0); /* releases it, and tells waiters in pub/sub mode */
    lease_answer(op, fresh ? CACHE_LEASE_HELD : CACHE_LEASE_ACQUIRED);
    op_maybe_free(op);
}

/* Send the re-read of a granted lease's key. Returns 0 if it cannot be sent
 * (the lease then counts as acquired at once). */
static int lease_recheck(struct redis_op *op)
{
    struct redis_link *r = op->ls->link;
    if (!redis_link_ready(r) ||
        redisAsyncCommand(r->data.ctx, on_lease_recheck, op, "MGET %s%s %s%s", op->key,
                          cachekey_suffix(CACHEKEY_TERMINAL), op->key, cachekey_suffix(CACHEKEY_PENDING)) != REDIS_OK)
        return 0;
    r->pending++;
    op->replies_out++;
    return 1;
}

static void on_lease_budget(evutil_socket_t fd, short what, void *arg)
{
    struct redis_op *op = arg;
    op->ls->link->timeouts++;
    lease_answer(op, CACHE_LEASE_UNAVAILABLE);
    /* Stays allocated until hiredis calls back for it. */
}

static struct redis_op *op_new(struct redis_leases *ls, const char *key)
{
    size_t len = strlen(key);
    struct redis_op *op = calloc(1, sizeof(*op) + len + 1);
    if (!op)
        return NULL;
    op->ls = ls;
    memcpy(op->key, key, len + 1);
    return op;
}

struct redis_op *redis_lease_acquire(struct redis_leases *ls, const char *key, int64_t lease_ms, cache_lease_cb cb,
                                     void *arg)
{
    struct redis_link *r = ls->link;
    if (!redis_link_ready(r) || lease_ms <= 0)
        return NULL;
    struct redis_op *op = op_new(ls, key);
    if (!op)
        return NULL;
    op->lease_cb = cb;
    op->arg = arg;
    snprintf(op->token, sizeof(op->token), "%s-%" PRIx64, ls->instance_id, ++ls->lease_counter);
    op->timer = evtimer_new(r->base, on_lease_budget, op);
    if (!op->timer || redisAsyncCommand(r->data.ctx, on_lease_reply, op, "SET %s%s %s NX PX %" PRId64, key,
                                        cachekey_suffix(CACHEKEY_LEASE), op->token, lease_ms) != REDIS_OK) {
        r->errors++;
        op_free(op);
        return NULL;
    }
    r->pending++;
    op->replies_out++;
    struct timeval tv = redis_link_tv(r->budget_ms);
    evtimer_add(op->timer, &tv);
    return op;
}

/* ---------------------------------------------------------------- waits */

/* Finish a wait with `status`, then free it if hiredis owes it nothing: the
 * caller must not touch `op` afterwards. */
static void wait_finish(struct redis_op *op, enum cache_status status, struct body *b)
{
    if (!op->finished) {
        op->finished = 1;
        TAILQ_REMOVE(&op->ls->waits, op, wait_link);
        evtimer_del(op->timer);
        evtimer_del(op->deadline);
        op->get_cb(status, b, op->arg);
    }
    op_maybe_free(op);
}

static void on_check_reply(redisAsyncContext *ac, void *reply, void *privdata);

static void wait_schedule(struct redis_op *op, int64_t ms)
{
    struct timeval tv = redis_link_tv(ms);
    evtimer_add(op->timer, &tv);
}

/* Read the key's answer and lease now (one check out at a time). Never
 * calls back: a check that cannot be sent is retried from the timer, which
 * finishes the wait if Redis is down. */
static void wait_check(struct redis_op *op)
{
    struct redis_leases *ls = op->ls;
    struct redis_link *r = ls->link;
    if (op->replies_out) {
        op->check_again = 1;
        return;
    }
    if (redis_link_ready(r) &&
        redisAsyncCommand(r->data.ctx, on_check_reply, op, "MGET %s%s %s%s %s%s", op->key,
                          cachekey_suffix(CACHEKEY_TERMINAL), op->key, cachekey_suffix(CACHEKEY_PENDING), op->key,
                          cachekey_suffix(CACHEKEY_LEASE)) == REDIS_OK) {
        r->pending++;
        op->replies_out++;
        evtimer_del(op->timer);
        return;
    }
    wait_schedule(op, r->state == REDIS_UP ? ls->poll_interval_ms : 0);
}

static void on_check_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct redis_op *op = privdata;
    struct redis_leases *ls = op->ls;
    struct redis_link *r = ls->link;
    redisReply *rep = reply;
    r->pending--;
    op->replies_out--;
    if (r->closing || op->finished) {
        op_maybe_free(op);
        return;
    }
    if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 3) {
        if (rep && rep->type == REDIS_REPLY_ERROR)
            redis_link_error_reply(r, "MGET", rep);
        else
            r->errors++;
        wait_finish(op, CACHE_UNAVAILABLE, NULL);
        return;
    }
    struct body *b = cache_entry_pick(rep->element, 2, &r->errors);
    if (b && body_fresh(b, clock_wall_ms())) {
        wait_finish(op, CACHE_HIT, b);
        body_unref(b);
        return;
    }
    body_unref(b); /* a stale copy: not the answer waited for */
    if (rep->element[2]->type == REDIS_REPLY_NIL) {
        /* No lease and no fresh answer: its holder failed or died. */
        wait_finish(op, CACHE_MISS, NULL);
        return;
    }
    if (op->check_again) {
        op->check_again = 0;
        wait_check(op);
        return;
    }
    wait_schedule(op, r->subscribed ? ls->poll_interval_ms * PUBSUB_CHECK_FACTOR : ls->poll_interval_ms);
}

static void on_wait_timer(evutil_socket_t fd, short what, void *arg)
{
    struct redis_op *op = arg;
    if (op->ls->link->state != REDIS_UP) {
        wait_finish(op, CACHE_UNAVAILABLE, NULL);
        return;
    }
    wait_check(op);
}

static void on_wait_deadline(evutil_socket_t fd, short what, void *arg)
{
    wait_finish(arg, CACHE_MISS, NULL); /* the holder is slow: go yourself */
}

/* A store of `key` was published: every wait on it checks now. The list is
 * walked linearly: waits are few (one per key per process at most, as the
 * gateway coalesces in process) and stores are rate-limited by upstream. */
void redis_lease_wake(struct redis_leases *ls, const char *key, size_t len)
{
    struct redis_op *op;
    TAILQ_FOREACH (op, &ls->waits, wait_link) {
        if (strlen(op->key) == len && memcmp(op->key, key, len) == 0)
            wait_check(op); /* never calls back: the list stays as it is */
    }
}

/* The data connection is gone: every wait goes upstream. A callback may
 * cancel other waits, so the list is re-read after each. */
void redis_lease_fail_waits(struct redis_leases *ls)
{
    struct redis_op *op;
    while ((op = TAILQ_FIRST(&ls->waits)) != NULL)
        wait_finish(op, CACHE_UNAVAILABLE, NULL);
}

struct redis_op *redis_lease_wait(struct redis_leases *ls, const char *key, int64_t timeout_ms, cache_get_cb cb,
                                  void *arg)
{
    struct redis_link *r = ls->link;
    if (r->state != REDIS_UP || !r->data.ctx)
        return NULL;
    struct redis_op *op = op_new(ls, key);
    if (!op)
        return NULL;
    op->is_wait = 1;
    op->get_cb = cb;
    op->arg = arg;
    op->timer = evtimer_new(r->base, on_wait_timer, op);
    op->deadline = evtimer_new(r->base, on_wait_deadline, op);
    if (!op->timer || !op->deadline) {
        op_free(op);
        return NULL;
    }
    TAILQ_INSERT_TAIL(&ls->waits, op, wait_link);
    struct timeval tv = redis_link_tv(timeout_ms > 0 ? timeout_ms : 0);
    evtimer_add(op->deadline, &tv);
    wait_check(op); /* the answer may be there already */
    return op;
}

void redis_lease_cancel(struct redis_leases *ls, struct redis_op *op)
{
    if (op->finished)
        return;
    op->finished = 1;
    op->cancelled = 1;
    evtimer_del(op->timer);
    if (op->is_wait) {
        evtimer_del(op->deadline);
        TAILQ_REMOVE(&ls->waits, op, wait_link);
    }
    op_maybe_free(op);
}

/* 64 random bits in hex: what tells this cache's lease tokens from others'. */
static void make_instance_id(struct redis_leases *ls)
{
    uint64_t v = 0;
    if (randbytes_fill(&v, sizeof(v)) < 0) /* merely unique, then */
        v = (uint64_t)clock_mono_us() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)ls;
    snprintf(ls->instance_id, sizeof(ls->instance_id), "%016" PRIx64, v);
}

static void free_held(struct keymap_item *item)
{
    free(item);
}

void redis_lease_init(struct redis_leases *ls, struct redis_link *link, int64_t poll_interval_ms)
{
    memset(ls, 0, sizeof(*ls));
    ls->link = link;
    ls->poll_interval_ms = poll_interval_ms > 0 ? poll_interval_ms : POLL_INTERVAL_MS;
    TAILQ_INIT(&ls->waits);
    make_instance_id(ls);
}

void redis_lease_close(struct redis_leases *ls)
{
    struct redis_op *op;
    while ((op = TAILQ_FIRST(&ls->waits)) != NULL)
        redis_lease_cancel(ls, op); /* freed now, or by their NULL replies when the link closes */
    keymap_clear(&ls->held, free_held);
}
