#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/evp.h>

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

/*
 * The lookup and the lease in one step. KEYS: KEY:t, KEY:p, KEY:l; ARGV:
 * now (ms, the caller's wall clock, which wrote the entries' expiry), the
 * token, lease_ms. Returns {KEY:t's value, KEY:p's value, what it did}: 0
 * when either value is fresh (no lease asked), 1 lease taken, 2 lease held
 * by another. A value whose head it cannot read counts as fresh: the caller
 * judges it (and then asks for the lease apart if it must).
 */
#define LOOKUP_LEASE_SCRIPT                                                                   \
    "local function fresh(v)\n"                                                               \
    "  if not v then return false end\n"                                                      \
    "  local e = string.match(v, '^JG1 %-?%d+ %d+ %d+ (%d+)')\n"                              \
    "  return e == nil or e == '0' or tonumber(e) > tonumber(ARGV[1])\n"                      \
    "end\n"                                                                                   \
    "local t = redis.call('GET', KEYS[1])\n"                                                  \
    "local p = redis.call('GET', KEYS[2])\n"                                                  \
    "if fresh(t) or fresh(p) then return {t, p, 0} end\n"                                     \
    "if redis.call('SET', KEYS[3], ARGV[2], 'NX', 'PX', ARGV[3]) then return {t, p, 1} end\n" \
    "return {t, p, 2}\n"

enum script_did { SCRIPT_FRESH = 0, SCRIPT_TOOK = 1, SCRIPT_HELD = 2 };

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
    int lookup;               /* lease: its caller wants the answer too (cache_get_lease) */
    cache_lookup_cb lease_cb; /* lease */
    cache_get_cb get_cb;      /* wait */
    void *arg;
    struct event *timer;    /* lease: the budget; wait: the next check */
    struct event *deadline; /* wait: its time limit */
    int replies_out;
    int finished;    /* answered or cancelled: never calls back again */
    int cancelled;   /* lease: release it if it is granted after all */
    int check_again; /* wait: told of a store while a check was out */
    int granted;     /* lease, pipelined: SET NX said OK */
    int resent;      /* lease, scripted: NOSCRIPT answered, sent again with EVAL */
    int sent_eval;   /* lease, scripted: the last send was EVAL (else EVALSHA) */
    int64_t lease_ms;
    const struct classify_spec *job; /* the expectation (the caller's: read only before `finished`) */
    const char *identity;            /* NULL, or a copy after key[] */
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

/* The entry among KEY:t's and KEY:p's values, checked against what `op` expects. */
static struct body *op_pick(struct redis_op *op, redisReply *const *elements)
{
    const struct cache_expect expect = {.job = op->job, .identity = op->identity};
    return cache_entry_pick(op->ls->codec, op->key, elements, &expect, &op->ls->link->errors);
}

/* Is a scripting refusal the kind that lasts (scripts off, ACL, a proxy)? */
static int script_refusal(const redisReply *rep)
{
    return strncmp(rep->str, "ERR", 3) == 0 || strncmp(rep->str, "NOPERM", 6) == 0;
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
        redis_link_send(r, key, on_del_done, r, "DEL %s%s", key, cachekey_suffix(CACHEKEY_LEASE)) == REDIS_OK)
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
        if (script_refusal(rep) || strncmp(rep->str, "NOSCRIPT", 8) == 0) {
            if (!ls->eval_refused)
                log_warn("redis: EVAL refused; leases are released with DEL, and taken by pipeline, from now on");
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
            if (redis_link_send(r, key, on_release_reply, rel, "EVAL %s 1 %s%s %s", RELEASE_SCRIPT, key,
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
        redis_link_send(r, CACHEKEY_CHANNEL, on_publish_done, r, "PUBLISH %s %s", CACHEKEY_CHANNEL, key) == REDIS_OK)
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

/* The lease of `op` was granted. Returns 1 if it is kept for its caller;
 * 0 if the caller was answered already (the budget ran out: it was told
 * UNAVAILABLE and goes upstream without it; or it cancelled): then nobody
 * would store under it nor release it, so it is released now. */
static int lease_granted(struct redis_op *op)
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
static void op_maybe_free(struct redis_op *op)
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
static void lease_settled(struct redis_op *op, struct body *b, int granted, enum cache_lease_status not_granted)
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
static void lease_failed(struct redis_op *op, const redisReply *rep, const char *command)
{
    struct redis_link *r = op->ls->link;
    if (rep && rep->type == REDIS_REPLY_ERROR)
        redis_link_error_reply(r, command, rep);
    else
        r->errors++;
    lease_answer(op, CACHE_UNAVAILABLE, NULL, CACHE_LEASE_UNAVAILABLE);
}

static int send_script(struct redis_op *op, int full);

/* The script's reply: {KEY:t, KEY:p, what it did}. */
static void on_script_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct redis_op *op = privdata;
    struct redis_leases *ls = op->ls;
    struct redis_link *r = ls->link;
    redisReply *rep = reply;
    r->pending--;
    op->replies_out--;
    if (r->closing) { /* cache_free: no callback from here on */
        op->finished = 1;
        op_maybe_free(op);
        return;
    }
    if (rep && rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, "NOSCRIPT", 8) == 0 && !op->resent) {
        op->resent = 1; /* a restarted or new master: load it with EVAL, EVALSHA works again after */
        if (send_script(op, 1))
            return;
    }
    if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 3 || rep->element[2]->type != REDIS_REPLY_INTEGER) {
        if (rep && rep->type == REDIS_REPLY_ERROR && script_refusal(rep) && !ls->eval_refused) {
            log_warn("redis: scripts refused (%.100s); leases are taken by pipeline from now on", rep->str);
            ls->eval_refused = 1;
        }
        lease_failed(op, rep, op->sent_eval ? "EVAL" : "EVALSHA");
        op_maybe_free(op);
        return;
    }
    ls->script_known = 1;
    long long did = rep->element[2]->integer;
    if (did == SCRIPT_TOOK && !lease_granted(op)) {
        op_maybe_free(op);
        return;
    }
    if (op->finished) { /* cancelled or over budget, and nothing was granted */
        op_maybe_free(op);
        return;
    }
    struct body *b = op_pick(op, rep->element);
    /* SCRIPT_FRESH with no fresh answer here: the script took an entry for
     * fresh that failed the check (or one it could not read). No lease was
     * taken, and none will be while it stays: go upstream without one. */
    lease_settled(op, b, did == SCRIPT_TOOK, did == SCRIPT_HELD ? CACHE_LEASE_HELD : CACHE_LEASE_UNAVAILABLE);
    body_unref(b);
    op_maybe_free(op);
}

/* Send the lookup-and-lease script: EVALSHA, or with `full` EVAL. Returns 1 if sent. */
static int send_script(struct redis_op *op, int full)
{
    struct redis_leases *ls = op->ls;
    struct redis_link *r = ls->link;
    const char *t = cachekey_suffix(CACHEKEY_TERMINAL), *p = cachekey_suffix(CACHEKEY_PENDING),
               *l = cachekey_suffix(CACHEKEY_LEASE);
    int64_t now = clock_wall_ms();
    full = full || !ls->script_known;
    op->sent_eval = full;
    if (!redis_link_ready(r) ||
        redis_link_send(r, op->key, on_script_reply, op, "%s %s 3 %s%s %s%s %s%s %" PRId64 " %s %" PRId64,
                        full ? "EVAL" : "EVALSHA", full ? LOOKUP_LEASE_SCRIPT : ls->script_sha, op->key, t, op->key, p,
                        op->key, l, now, op->token, op->lease_ms) != REDIS_OK)
        return 0;
    r->pending++;
    op->replies_out++;
    return 1;
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
        op_maybe_free(op);
        return;
    }
    if (rep && rep->type == REDIS_REPLY_STATUS && strcmp(rep->str, "OK") == 0)
        op->granted = lease_granted(op);
    else if (!rep || rep->type != REDIS_REPLY_NIL)
        lease_failed(op, rep, "SET NX");
    op_maybe_free(op);
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
        op_maybe_free(op);
        return;
    }
    if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 2) {
        if (op->granted)
            redis_lease_settle(op->ls, op->key, 0); /* nobody is told it holds it */
        lease_failed(op, rep, "MGET");
        op_maybe_free(op);
        return;
    }
    struct body *b = op_pick(op, rep->element);
    lease_settled(op, b, op->granted, CACHE_LEASE_HELD);
    body_unref(b);
    op_maybe_free(op);
}

/* Send SET KEY:l NX PX and MGET KEY:t KEY:p in one write. Returns 1 if both went. */
static int send_pipelined(struct redis_op *op)
{
    struct redis_link *r = op->ls->link;
    if (!redis_link_ready(r) || redis_link_send(r, op->key, on_pipelined_set, op, "SET %s%s %s NX PX %" PRId64, op->key,
                                                cachekey_suffix(CACHEKEY_LEASE), op->token, op->lease_ms) != REDIS_OK)
        return 0;
    r->pending++;
    op->replies_out++;
    if (redis_link_send(r, op->key, on_pipelined_get, op, "MGET %s%s %s%s", op->key, cachekey_suffix(CACHEKEY_TERMINAL),
                        op->key, cachekey_suffix(CACHEKEY_PENDING)) != REDIS_OK) {
        /* The SET went: the op is finished without a callback (the caller
         * is told it could not start), and its SET's reply frees it,
         * releasing a grant (lease_granted). */
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
     * later is released then (lease_granted). */
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
                                     int64_t lease_ms, int lookup, cache_lookup_cb cb, void *arg)
{
    struct redis_link *r = ls->link;
    if (!redis_link_ready(r) || lease_ms <= 0)
        return NULL;
    struct redis_op *op = op_new(ls, key, expect);
    if (!op)
        return NULL;
    op->lease_cb = cb;
    op->arg = arg;
    op->lookup = lookup;
    op->lease_ms = lease_ms;
    snprintf(op->token, sizeof(op->token), "%s-%" PRIx64, ls->instance_id, ++ls->lease_counter);
    op->timer = evtimer_new(r->base, on_lease_budget, op);
    if (!op->timer || !(redis_lease_scripted(ls) ? send_script(op, 0) : send_pipelined(op))) {
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
        redis_link_send(r, op->key, on_check_reply, op, "MGET %s%s %s%s %s%s", op->key,
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
    struct body *b = op_pick(op, rep->element);
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
    ls->script_known = 0; /* the next connection may reach a server without it */
    struct redis_op *op;
    while ((op = TAILQ_FIRST(&ls->waits)) != NULL)
        wait_finish(op, CACHE_UNAVAILABLE, NULL);
}

struct redis_op *redis_lease_wait(struct redis_leases *ls, const char *key, const struct cache_expect *expect,
                                  int64_t timeout_ms, cache_get_cb cb, void *arg)
{
    struct redis_link *r = ls->link;
    if (!redis_link_up(r))
        return NULL;
    struct redis_op *op = op_new(ls, key, expect);
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

/* The script's SHA-1 in hex, for EVALSHA. */
static void script_sha(struct redis_leases *ls)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    static const char digits[] = "0123456789abcdef";
    if (EVP_Digest(LOOKUP_LEASE_SCRIPT, strlen(LOOKUP_LEASE_SCRIPT), md, &len, EVP_sha1(), NULL) != 1 || len != 20) {
        snprintf(ls->script_sha, sizeof(ls->script_sha), "%s", "0"); /* NOSCRIPT, then EVAL: slower, never wrong */
        return;
    }
    for (unsigned i = 0; i < len; i++) {
        ls->script_sha[2 * i] = digits[md[i] >> 4];
        ls->script_sha[2 * i + 1] = digits[md[i] & 15];
    }
    ls->script_sha[2 * len] = '\0';
}

void redis_lease_init(struct redis_leases *ls, struct redis_link *link, struct cache_entry_codec *codec,
                      int64_t poll_interval_ms)
{
    memset(ls, 0, sizeof(*ls));
    ls->link = link;
    ls->codec = codec;
    script_sha(ls);
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
