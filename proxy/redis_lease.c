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
#include "digest.h"
#include "log.h"
#include "randbytes.h"
#include "redis_lease.h"
#include "redis_lease_int.h"
#include "redis_link.h"

#define POLL_INTERVAL_MS    20
#define PUBSUB_CHECK_FACTOR 5 /* pub/sub mode: a wait re-reads only to see a lease expire */

/* Compare-and-delete the lease (only if it is still ours) and, in pub/sub
 * mode, publish the key's settling while a process waits for it (KEY:w),
 * in one step. KEYS: KEY:l, KEY:w; ARGV: the token[, the channel, the key]. */
#define RELEASE_SCRIPT                                                       \
    "local v = redis.call('MGET', KEYS[1], KEYS[2])\n"                       \
    "if v[1] == ARGV[1] then redis.call('DEL', KEYS[1]) end\n"               \
    "if ARGV[2] and v[2] then redis.call('PUBLISH', ARGV[2], ARGV[3]) end\n" \
    "return 0\n"

/* A lease this process acquired and has not released yet. */
struct held_lease {
    struct keymap_item item; /* item.key == key */
    char token[LEASE_TOKEN_MAX];
    char key[];
};

static void on_del_done(redisAsyncContext *ac, void *reply, void *privdata)
{
    redis_link_reply_done(privdata, reply, "DEL");
}

static void on_mark_done(redisAsyncContext *ac, void *reply, void *privdata)
{
    redis_link_reply_done(privdata, reply, "SET");
}

static void on_publish_done(redisAsyncContext *ac, void *reply, void *privdata)
{
    redis_link_reply_done(privdata, reply, "PUBLISH");
}

/* The entry among KEY:t's and KEY:p's values, checked against what `op` expects. */
struct body *redis_op_pick(struct redis_op *op, redisReply *const *elements)
{
    const struct cache_expect expect = {.job = op->job, .identity = op->identity};
    return cache_entry_pick(op->ls->codec, op->key, elements, &expect, &op->ls->link->errors);
}

/* Is a scripting refusal the kind that lasts (scripts off, ACL, a proxy)? */
int redis_script_refusal(const redisReply *rep)
{
    return strncmp(rep->str, "ERR", 3) == 0 || strncmp(rep->str, "NOPERM", 6) == 0;
}

/* --------------------------------------------------------------- leases */

/* A lease release on its way: what to send again (EVAL after NOSCRIPT), or
 * to fall back to (DEL, then PUBLISH) if scripts are refused. */
struct redis_release {
    struct redis_leases *ls;
    int publish; /* the script publishes the key too */
    int resent;
    char token[LEASE_TOKEN_MAX];
    char key[];
};

static void publish_key(struct redis_link *r, const char *key)
{
    if (redis_link_ready_for(r, CACHEKEY_CHANNEL, strlen(CACHEKEY_CHANNEL)) &&
        redis_link_send(r, CACHEKEY_CHANNEL, on_publish_done, r, "PUBLISH %s %s", CACHEKEY_CHANNEL, key) == REDIS_OK)
        r->pending++;
}

static void send_del_lease(struct redis_link *r, const char *key)
{
    if (redis_link_ready_for(r, key, strlen(key)) &&
        redis_link_send(r, key, on_del_done, r, "DEL %s%s", key, cachekey_suffix(CACHEKEY_LEASE)) == REDIS_OK)
        r->pending++;
}

static int send_release(struct redis_release *rel, int full);

static void on_release_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct redis_release *rel = privdata;
    struct redis_leases *ls = rel->ls;
    struct redis_link *r = ls->link;
    redisReply *rep = reply;
    r->pending--;
    if (!r->closing && rep && rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, "NOSCRIPT", 8) == 0 && !rel->resent) {
        rel->resent = 1; /* a restarted or new master: load it with EVAL */
        ls->release_known = 0;
        if (send_release(rel, 1))
            return;
    }
    if (!r->closing && rep && rep->type == REDIS_REPLY_ERROR) {
        redis_link_error_reply(r, "EVAL", rep);
        /* Scripting refused (disabled, or a proxy without it): DEL instead,
         * from now on. Its risk: deleting a lease another process took after
         * ours expired, which costs one more upstream call, never a wrong answer. */
        if (redis_script_refusal(rep) || strncmp(rep->str, "NOSCRIPT", 8) == 0) {
            if (!ls->eval_refused)
                log_warn("redis: EVAL refused; leases are released with DEL, and taken by pipeline, from now on");
            ls->eval_refused = 1;
            send_del_lease(r, rel->key);
            if (rel->publish)
                publish_key(r, rel->key);
        }
    } else if (!r->closing && !rep) {
        r->errors++;
    } else if (!r->closing) {
        ls->release_known = 1;
    }
    free(rel);
}

/* Send the release script for `rel`: EVALSHA, or with `full` EVAL. Returns 1 if sent. */
static int send_release(struct redis_release *rel, int full)
{
    struct redis_leases *ls = rel->ls;
    struct redis_link *r = ls->link;
    full = full || !ls->release_known;
    const char *key = rel->key, *l = cachekey_suffix(CACHEKEY_LEASE), *w = cachekey_suffix(CACHEKEY_WAITERS);
    int rc;
    if (!redis_link_ready_for(r, key, strlen(key)))
        return 0;
    if (rel->publish)
        rc =
            redis_link_send(r, key, on_release_reply, rel, "%s %s 2 %s%s %s%s %s %s %s", full ? "EVAL" : "EVALSHA",
                            full ? RELEASE_SCRIPT : ls->release_sha, key, l, key, w, rel->token, CACHEKEY_CHANNEL, key);
    else
        rc = redis_link_send(r, key, on_release_reply, rel, "%s %s 2 %s%s %s%s %s", full ? "EVAL" : "EVALSHA",
                             full ? RELEASE_SCRIPT : ls->release_sha, key, l, key, w, rel->token);
    if (rc != REDIS_OK)
        return 0;
    r->pending++;
    return 1;
}

/* Release the lease on `key` if this cache holds it, publishing the key
 * too when `publish` and the release is one script. Returns 0 when it
 * holds none, 1 when released, 2 when released and published. */
static int release_held(struct redis_leases *ls, const char *key, int publish)
{
    struct redis_link *r = ls->link;
    struct held_lease *h = (struct held_lease *)keymap_get(&ls->held, key);
    if (!h)
        return 0;
    int done = 1;
    if (ls->eval_refused) {
        send_del_lease(r, key);
    } else {
        size_t len = strlen(key);
        struct redis_release *rel = malloc(sizeof(*rel) + len + 1);
        if (rel) {
            rel->ls = ls;
            rel->publish = publish;
            rel->resent = 0;
            snprintf(rel->token, sizeof(rel->token), "%s", h->token);
            memcpy(rel->key, key, len + 1);
            if (send_release(rel, 0))
                done = publish ? 2 : 1;
            else
                free(rel);
        }
    }
    /* Forgotten even when Redis is down: the lease then ends at its expiry. */
    keymap_remove(&ls->held, &h->item);
    free(h);
    return done;
}

void redis_lease_settle(struct redis_leases *ls, const char *key, int stored)
{
    struct redis_link *r = ls->link;
    int publish = redis_link_may_publish(r);
    int released = release_held(ls, key, publish);
    if (released != 2 && (stored || released) && publish) /* else the release script did */
        publish_key(r, key);
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

/* The lease of `op` was granted. Returns 1 if it is kept for its caller;
 * 0 if the caller was answered already (the budget ran out: it was told
 * UNAVAILABLE and goes upstream without it; or it cancelled): then nobody
 * would store under it nor release it, so it is released now. */
int redis_op_granted(struct redis_op *op)
{
    held_add(op->ls, op->key, op->token);
    if (!op->finished)
        return 1;
    redis_lease_settle(op->ls, op->key, 0); /* releases it, and tells waiters in pub/sub mode */
    return 0;
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
void redis_op_maybe_free(struct redis_op *op)
{
    if (op->finished && op->replies_out == 0)
        op_free(op);
}

static void lease_answer(struct redis_op *op, enum cache_status status, struct body *b, enum cache_lease_status lease)
{
    if (op->finished)
        return;
    op->finished = 1;
    evtimer_del(op->timer);
    op->lease_cb(status, b, lease, op->arg);
}

/* A lease's read of the key came back with the entry `b` (NULL: none), the
 * lease taken (`granted`) or not: answer, giving a granted lease back when a
 * fresh answer is there already (stored, and its lease released, between the
 * caller's lookup and this lease: a whole upstream call can fit there). A
 * release is sent only after its store was acknowledged (on_store_done), so
 * a read after the grant sees that store. */
void redis_op_settled(struct redis_op *op, struct body *b, int granted, enum cache_lease_status not_granted)
{
    int fresh = b && body_fresh(b, clock_wall_ms());
    if (fresh) {
        if (granted)
            redis_lease_settle(op->ls, op->key, 0);
        lease_answer(op, CACHE_HIT, b, op->lookup ? CACHE_LEASE_NONE : CACHE_LEASE_HELD);
        return;
    }
    lease_answer(op, b ? CACHE_STALE : CACHE_MISS, b, granted ? CACHE_LEASE_ACQUIRED : not_granted);
}

/* A lease that failed (an error reply, or none): UNAVAILABLE. */
void redis_op_failed(struct redis_op *op, const redisReply *rep, const char *command)
{
    struct redis_link *r = op->ls->link;
    if (rep && rep->type == REDIS_REPLY_ERROR)
        redis_link_error_reply(r, command, rep);
    else
        r->errors++;
    lease_answer(op, CACHE_UNAVAILABLE, NULL, CACHE_LEASE_UNAVAILABLE);
}

/* Pipelined: SET KEY:l NX PX's reply. The answer waits for the MGET sent
 * behind it, unless this failed. */
static void on_pipelined_set(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct redis_op *op = privdata;
    struct redis_link *r = op->ls->link;
    redisReply *rep = reply;
    r->pending--;
    op->replies_out--;
    if (r->closing) { /* cache_free: no callback from here on */
        op->finished = 1;
        redis_op_maybe_free(op);
        return;
    }
    if (rep && rep->type == REDIS_REPLY_STATUS && strcmp(rep->str, "OK") == 0)
        op->granted = redis_op_granted(op);
    else if (!rep || rep->type != REDIS_REPLY_NIL)
        redis_op_failed(op, rep, "SET NX");
    redis_op_maybe_free(op);
}

/* Pipelined: MGET KEY:t KEY:p's reply, read after the SET NX. */
static void on_pipelined_get(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct redis_op *op = privdata;
    struct redis_link *r = op->ls->link;
    redisReply *rep = reply;
    r->pending--;
    op->replies_out--;
    if (r->closing)
        op->finished = 1; /* cache_free: no callback from here on */
    if (op->finished) {
        redis_op_maybe_free(op);
        return;
    }
    if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 2) {
        if (op->granted)
            redis_lease_settle(op->ls, op->key, 0); /* nobody is told it holds it */
        redis_op_failed(op, rep, "MGET");
        redis_op_maybe_free(op);
        return;
    }
    struct body *b = redis_op_pick(op, rep->element);
    redis_op_settled(op, b, op->granted, CACHE_LEASE_HELD);
    body_unref(b);
    redis_op_maybe_free(op);
}

/* Send SET KEY:l NX PX and MGET KEY:t KEY:p in one write. Returns 1 if both went. */
static int send_pipelined(struct redis_op *op)
{
    struct redis_link *r = op->ls->link;
    if (!redis_link_ready_for(r, op->key, strlen(op->key)) ||
        redis_link_send(r, op->key, on_pipelined_set, op, "SET %s%s %s NX PX %" PRId64, op->key,
                        cachekey_suffix(CACHEKEY_LEASE), op->token, op->lease_ms) != REDIS_OK)
        return 0;
    r->pending++;
    op->replies_out++;
    if (redis_link_send(r, op->key, on_pipelined_get, op, "MGET %s%s %s%s", op->key, cachekey_suffix(CACHEKEY_TERMINAL),
                        op->key, cachekey_suffix(CACHEKEY_PENDING)) != REDIS_OK) {
        /* The SET went: the op is finished without a callback (the caller
         * is told it could not start), and its SET's reply frees it,
         * releasing a grant (redis_op_granted). */
        r->errors++;
        op->finished = 1;
        return 1;
    }
    r->pending++;
    op->replies_out++;
    return 1;
}

static void on_lease_budget(evutil_socket_t fd, short what, void *arg)
{
    struct redis_op *op = arg;
    op->ls->link->timeouts++;
    lease_answer(op, CACHE_UNAVAILABLE, NULL, CACHE_LEASE_UNAVAILABLE);
    /* Stays allocated until hiredis calls back for it; a grant that comes
     * later is released then (redis_op_granted). */
}

/* A new op for `key`, with a copy of the expectation's identity. */
static struct redis_op *op_new(struct redis_leases *ls, const char *key, const struct cache_expect *expect)
{
    size_t len = strlen(key);
    const char *id = expect ? expect->identity : NULL;
    size_t idlen = id ? strlen(id) + 1 : 0;
    struct redis_op *op = calloc(1, sizeof(*op) + len + 1 + idlen);
    if (!op)
        return NULL;
    op->ls = ls;
    memcpy(op->key, key, len + 1);
    if (id) {
        memcpy(op->key + len + 1, id, idlen);
        op->identity = op->key + len + 1;
    }
    op->job = expect ? expect->job : NULL;
    return op;
}

int redis_lease_scripted(const struct redis_leases *ls)
{
    return !ls->eval_refused && redis_link_may_publish(ls->link);
}

struct redis_op *redis_lease_acquire(struct redis_leases *ls, const char *key, const struct cache_expect *expect,
                                     int64_t lease_ms, int lookup, struct cache_fold *fold, cache_lookup_cb cb,
                                     void *arg)
{
    struct redis_link *r = ls->link;
    if (!redis_link_ready_for(r, key, strlen(key)) || lease_ms <= 0)
        return NULL;
    struct redis_op *op = op_new(ls, key, expect);
    if (!op)
        return NULL;
    op->lease_cb = cb;
    op->arg = arg;
    op->lookup = lookup;
    op->fold = fold;
    op->lease_ms = lease_ms;
    snprintf(op->token, sizeof(op->token), "%s-%" PRIx64, ls->instance_id, ++ls->lease_counter);
    op->timer = evtimer_new(r->base, on_lease_budget, op);
    if (!op->timer || !(redis_lease_scripted(ls) ? redis_lease_send_script(op, 0) : send_pipelined(op))) {
        r->errors++;
        op_free(op);
        return NULL;
    }
    if (op->finished) { /* the pipeline went half: its SET's reply frees it */
        return NULL;
    }
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
    redis_op_maybe_free(op);
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
    if (!op->marked && redis_link_may_publish(r) && redis_link_ready_for(r, op->key, strlen(op->key)) &&
        redis_link_send(r, op->key, on_mark_done, r, "SET %s%s 1 PX %" PRId64, op->key,
                        cachekey_suffix(CACHEKEY_WAITERS), op->wait_ms) == REDIS_OK) {
        /* Before the first read: a release after it sees the mark, and publishes. */
        r->pending++;
        op->marked = 1;
    }
    if (redis_link_ready_for(r, op->key, strlen(op->key)) &&
        redis_link_send(r, op->key, on_check_reply, op, "MGET %s%s %s%s %s%s", op->key,
                        cachekey_suffix(CACHEKEY_TERMINAL), op->key, cachekey_suffix(CACHEKEY_PENDING), op->key,
                        cachekey_suffix(CACHEKEY_LEASE)) == REDIS_OK) {
        r->pending++;
        op->replies_out++;
        evtimer_del(op->timer);
        return;
    }
    wait_schedule(op, redis_link_up_for(r, op->key, strlen(op->key)) ? ls->poll_interval_ms : 0);
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
        redis_op_maybe_free(op);
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
    struct body *b = redis_op_pick(op, rep->element);
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
    if (!redis_link_up_for(op->ls->link, op->key, strlen(op->key))) {
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
    ls->script_known = 0; /* the next connection may reach a server without them */
    ls->fold_known = 0;
    ls->release_known = 0;
    struct redis_op *op;
    while ((op = TAILQ_FIRST(&ls->waits)) != NULL)
        wait_finish(op, CACHE_UNAVAILABLE, NULL);
}

struct redis_op *redis_lease_wait(struct redis_leases *ls, const char *key, const struct cache_expect *expect,
                                  int64_t timeout_ms, cache_get_cb cb, void *arg)
{
    struct redis_link *r = ls->link;
    if (!redis_link_up_for(r, key, strlen(key)))
        return NULL;
    struct redis_op *op = op_new(ls, key, expect);
    if (!op)
        return NULL;
    op->is_wait = 1;
    op->wait_ms = timeout_ms > 0 ? timeout_ms : 1;
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
    redis_op_maybe_free(op);
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

void redis_lease_init(struct redis_leases *ls, struct redis_link *link, struct cache_entry_codec *codec,
                      int64_t poll_interval_ms)
{
    memset(ls, 0, sizeof(*ls));
    ls->link = link;
    ls->codec = codec;
    redis_lease_scripts_init(ls);
    digest_script_sha(RELEASE_SCRIPT, ls->release_sha);
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
    redis_lease_scripts_close(ls);
}
