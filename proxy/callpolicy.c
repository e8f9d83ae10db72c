#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache_types.h"
#include "callpolicy.h"
#include "clock.h"
#include "guardredis.h"
#include "guardshm.h"
#include "keymap.h"
#include "log.h"
#include "metrics.h"
#include "upstream.h"

struct callpolicy_upstream {
    struct keymap_item item; /* key: base URL */
    int refs;                /* the table's (while in it) and each holder's */
    int in_table;
    struct callpolicy *cp;
    char *base_url;
    struct guard_conf conf; /* the limits it was made with */
    int shm_slot;           /* in cp->shm; -1: none */
    struct guard *local;    /* this process's guard: the only one, or the fallback */
    size_t local_fleet;     /* the fleet size `local` was made for (its share is 1/local_fleet) */
    /* What this process last learnt of the fleet's state, so that an
     * admission Redis answers too late (a slow reply, not an outage) does
     * not let a call through a backoff or an open circuit it knows of: */
    int64_t held_until_ms;       /* the fleet said throttled or open until then (monotonic) */
    enum guard_refusal held_why; /* GUARD_THROTTLED or GUARD_CIRCUIT_OPEN */
    int fleet_circuit_open;      /* the fleet's circuit was last seen open or half-open */
};

struct callpolicy_pending {
    struct callpolicy *cp;
    struct callpolicy_upstream *up; /* a reference */
    int64_t *queued_until_ms;       /* the caller's */
    callpolicy_admit_cb cb;
    void *arg;
    struct guardredis_op *op;
    char project[GUARD_PROJECT_ID_MAX + 1];
};

struct callpolicy {
    struct metrics *metrics;
    struct guardshm *shm;     /* borrowed */
    struct guardredis *fleet; /* owned; NULL without Redis */
    int workers;
    struct keymap upstreams;      /* struct callpolicy_upstream by base URL */
    struct guard_conf guard_conf; /* for upstreams made from now on */
    int configured;
    int64_t rate_queue_ms; /* how long a call may wait for a rate-limit token */
    uint64_t rng;          /* jitter of the default 429 backoff sent to Redis */
    uint64_t fallbacks;
    int in_fallback; /* the last admission was the fallback's (for the log) */
};

struct callpolicy *callpolicy_new(const struct callpolicy_env *env, char *err, size_t errlen)
{
    struct callpolicy *cp = calloc(1, sizeof(*cp));
    if (!cp) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    cp->metrics = env->metrics;
    cp->shm = env->shm;
    cp->workers = env->workers > 0 ? env->workers : 1;
    cp->rng = (uint64_t)clock_mono_us() ^ 0x9e3779b97f4a7c15ULL;
    guard_conf_defaults(&cp->guard_conf);
    if (env->redis && env->redis->redis_url && env->base &&
        !(cp->fleet = guardredis_new(env->base, env->redis, env->key_prefix, err, errlen))) {
        free(cp);
        return NULL;
    }
    return cp;
}

static void cpu_free(struct callpolicy_upstream *up)
{
    guard_free(up->local);
    free(up->base_url);
    free(up);
}

void callpolicy_upstream_unref(struct callpolicy_upstream *up)
{
    if (up && --up->refs == 0)
        cpu_free(up);
}

static void drop_table_ref(struct keymap_item *item)
{
    struct callpolicy_upstream *up = (struct callpolicy_upstream *)item;
    up->in_table = 0;
    callpolicy_upstream_unref(up); /* flights still holding it keep it */
}

void callpolicy_configure(struct callpolicy *cp, const struct guard_conf *gc, int64_t rate_queue_ms)
{
    struct guard_conf c;
    memset(&c, 0, sizeof(c)); /* compared bytewise below: no stray padding */
    if (gc)
        memcpy(&c, gc, sizeof(c));
    else
        guard_conf_defaults(&c);
    cp->rate_queue_ms = rate_queue_ms;
    if (!cp->configured || memcmp(&c, &cp->guard_conf, sizeof(c)) != 0) {
        cp->guard_conf = c;
        cp->configured = 1;
        keymap_clear(&cp->upstreams, drop_table_ref);
    }
}

void callpolicy_free(struct callpolicy *cp)
{
    if (!cp)
        return;
    keymap_clear(&cp->upstreams, drop_table_ref);
    guardredis_free(cp->fleet);
    free(cp);
}

struct callpolicy_upstream *callpolicy_upstream(struct callpolicy *cp, const char *base_url)
{
    struct callpolicy_upstream *up = (struct callpolicy_upstream *)keymap_get(&cp->upstreams, base_url);
    if (up) {
        up->refs++;
        return up;
    }
    up = calloc(1, sizeof(*up));
    if (!up || !(up->base_url = strdup(base_url))) {
        free(up);
        return NULL;
    }
    up->cp = cp;
    up->conf = cp->guard_conf;
    up->shm_slot = cp->shm ? guardshm_slot(cp->shm, base_url) : -1;
    if (cp->shm && up->shm_slot < 0)
        log_warn("guard: no shared slot left for upstream %s: its workers guard it each on their own", base_url);
    up->item.key = up->base_url;
    if (keymap_put(&cp->upstreams, &up->item) < 0) {
        cpu_free(up);
        return NULL;
    }
    up->in_table = 1;
    up->refs = 2; /* the table's and the caller's */
    return up;
}

/* How many processes share the rate when this one decides alone. */
static size_t fleet_processes(const struct callpolicy *cp, const struct guard_conf *conf)
{
    if (!cp->fleet)
        return 1; /* no fleet store: this process's guard is the only one (or the shared memory) */
    if (conf->fleet_size)
        return (size_t)conf->fleet_size * (size_t)cp->workers;
    struct guardredis_stats st;
    guardredis_stats(cp->fleet, &st);
    return st.fleet > (size_t)cp->workers ? st.fleet : (size_t)cp->workers;
}

/* This process's guard for `up`, made for the current fleet size. */
static struct guard *local_guard(struct callpolicy_upstream *up)
{
    size_t n = fleet_processes(up->cp, &up->conf);
    if (up->local && up->local_fleet == n)
        return up->local;
    struct guard_conf c = up->conf;
    c.rate /= (double)n;
    c.burst /= (double)n;
    if (c.rate < GUARD_RATE_MIN)
        c.rate = GUARD_RATE_MIN;
    if (c.burst < 1.0)
        c.burst = 1.0;
    char err[256];
    struct guard *g = guard_new(&c, err, sizeof(err));
    if (!g)
        return up->local; /* keep the old share (or none: the caller refuses) */
    if (up->local)
        log_info("guard: upstream %s's own share is now 1/%zu of the fleet's rate", up->base_url, n);
    guard_free(up->local);
    up->local = g;
    up->local_fleet = n;
    return g;
}

/* The verdict of guard verdict `gv` from `store`: may wait for a token. */
static struct callpolicy_verdict settle(struct callpolicy *cp, enum callpolicy_store store, struct guard_verdict gv,
                                        int64_t *queued_until_ms)
{
    struct callpolicy_verdict v = {.admission = CALLPOLICY_REFUSED, .store = store, .gv = gv};
    if (gv.refusal == GUARD_ADMITTED) {
        v.admission = CALLPOLICY_GO;
        return v;
    }
    /* The rate limit has no token now but will within wait_ms: wait for it
     * (at most rate_queue_ms from the first refusal) rather than fail the
     * waiters; many SDKs give up on the first error, even a retryable one. */
    if (gv.refusal != GUARD_RATE_LIMITED || cp->rate_queue_ms <= 0)
        return v;
    int64_t now_ms = clock_mono_us() / 1000;
    if (!*queued_until_ms)
        *queued_until_ms = now_ms + cp->rate_queue_ms;
    if (now_ms + gv.wait_ms <= *queued_until_ms) {
        v.admission = CALLPOLICY_QUEUE;
        v.wait_ms = gv.wait_ms;
    }
    return v;
}

static struct guard_verdict fleet_refusal(enum guard_refusal why, int64_t wait_ms)
{
    struct guard_verdict v = {why, wait_ms < 1 ? 1 : wait_ms, (int)((wait_ms + 999) / 1000), 0};
    if (v.retry_after_s < 1)
        v.retry_after_s = 1;
    return v;
}

/* Remember what the fleet said about `up` (see held_until_ms). */
static void learn(struct callpolicy_upstream *up, const struct guard_verdict *gv)
{
    int64_t now_ms = clock_mono_us() / 1000;
    if (gv->refusal == GUARD_THROTTLED || gv->refusal == GUARD_CIRCUIT_OPEN) {
        up->held_until_ms = now_ms + gv->wait_ms;
        up->held_why = gv->refusal;
    }
    if (gv->refusal == GUARD_CIRCUIT_OPEN || gv->probe)
        up->fleet_circuit_open = 1;
    else if (gv->refusal == GUARD_ADMITTED)
        up->fleet_circuit_open = 0;
}

/* Decide here, without Redis: shared memory, or this process's guard. */
static struct callpolicy_verdict admit_here(struct callpolicy *cp, struct callpolicy_upstream *up, const char *project,
                                            int64_t *queued_until_ms)
{
    int64_t now_ms = clock_mono_us() / 1000;
    if (!cp->fleet && up->shm_slot >= 0) {
        if (project && strlen(project) > GUARD_PROJECT_ID_MAX)
            return settle(cp, CALLPOLICY_STORE_SHM, (struct guard_verdict){GUARD_BAD_PROJECT, 1000, 1, 0},
                          queued_until_ms);
        struct guard_verdict gv = guardshm_admit(cp->shm, up->shm_slot, &up->conf, project, now_ms);
        return settle(cp, CALLPOLICY_STORE_SHM, gv, queued_until_ms);
    }
    struct guard *g = local_guard(up);
    struct guard_verdict gv =
        g ? guard_admit(g, project, now_ms) : (struct guard_verdict){GUARD_BAD_PROJECT, 1000, 1, 0};
    if (cp->fleet) {
        /* Redis is only slow (still connected): what the fleet said holds. */
        struct guardredis_stats st;
        guardredis_stats(cp->fleet, &st);
        if (up->held_until_ms > now_ms)
            return settle(cp, CALLPOLICY_STORE_PROCESS, fleet_refusal(up->held_why, up->held_until_ms - now_ms),
                          queued_until_ms);
        if (up->fleet_circuit_open && st.up) /* the fleet's one probe decides, not this process */
            return settle(cp, CALLPOLICY_STORE_PROCESS, fleet_refusal(GUARD_CIRCUIT_OPEN, 1000), queued_until_ms);
    }
    if (cp->fleet) {
        cp->fallbacks++;
        if (!cp->in_fallback)
            log_warn("guard: Redis does not answer: each process keeps 1/%zu of upstream %s's rate until it does",
                     up->local_fleet, up->base_url);
        cp->in_fallback = 1;
    }
    return settle(cp, CALLPOLICY_STORE_PROCESS, gv, queued_until_ms);
}

/* The fleet's verdict `gv` on a call to `up`, from Redis. */
static struct callpolicy_verdict fleet_settle(struct callpolicy *cp, struct callpolicy_upstream *up,
                                              const struct guard_verdict *gv, int failing, int64_t *queued_until_ms)
{
    if (cp->in_fallback)
        log_info("guard: Redis answers again: the fleet shares one rate limit");
    cp->in_fallback = 0;
    learn(up, gv);
    struct callpolicy_verdict v = settle(cp, CALLPOLICY_STORE_REDIS, *gv, queued_until_ms);
    v.fleet_failing = failing;
    return v;
}

static void on_fleet_verdict(int answered, const struct guard_verdict *gv, int failing, void *arg)
{
    struct callpolicy_pending *p = arg;
    struct callpolicy *cp = p->cp;
    struct callpolicy_verdict v;
    if (answered) {
        v = fleet_settle(cp, p->up, gv, failing, p->queued_until_ms);
    } else {
        v = admit_here(cp, p->up, p->project[0] ? p->project : NULL, p->queued_until_ms);
    }
    callpolicy_admit_cb cb = p->cb;
    void *cb_arg = p->arg;
    callpolicy_upstream_unref(p->up); /* the caller holds its own */
    free(p);
    cb(&v, cb_arg);
}

struct callpolicy_pending *callpolicy_admit(struct callpolicy *cp, struct callpolicy_upstream *up, const char *project,
                                            int64_t *queued_until_ms, callpolicy_admit_cb cb, void *arg)
{
    struct callpolicy_pending *p = NULL;
    if (cp->fleet && (!project || strlen(project) <= GUARD_PROJECT_ID_MAX) && (p = calloc(1, sizeof(*p))) != NULL) {
        p->cp = cp;
        p->up = up;
        p->queued_until_ms = queued_until_ms;
        p->cb = cb;
        p->arg = arg;
        if (project)
            memcpy(p->project, project, strlen(project) + 1);
        p->op = guardredis_admit(cp->fleet, up->base_url, project, &up->conf, on_fleet_verdict, p);
        if (p->op) {
            up->refs++;
            return p;
        }
        free(p);
    }
    struct callpolicy_verdict v = admit_here(cp, up, project, queued_until_ms);
    cb(&v, arg);
    return NULL;
}

int callpolicy_fold(struct callpolicy *cp, const char *base_url, const char *project, struct cache_fold *out)
{
    if (!cp->fleet || (project && strlen(project) > GUARD_PROJECT_ID_MAX))
        return 0;
    struct callpolicy_upstream *up = callpolicy_upstream(cp, base_url);
    struct guardredis_fold *gf = up ? malloc(sizeof(*gf)) : NULL;
    int made = gf && guardredis_fold(cp->fleet, up->base_url, project, &up->conf, gf) == 0;
    if (up)
        callpolicy_upstream_unref(up);
    if (!made) {
        free(gf);
        return 0;
    }
    out->lua = GUARDREDIS_ADMIT_LUA;
    out->nkeys = gf->nkeys;
    out->nargs = gf->nargs;
    out->keys = gf->keys;
    out->args = gf->args;
    out->owner = gf;
    return 1;
}

void callpolicy_fold_done(struct cache_fold *fold)
{
    struct guardredis_fold *gf = fold->owner;
    if (gf) {
        guardredis_fold_clear(gf);
        free(gf);
    }
    fold->owner = NULL;
    fold->keys = fold->args = NULL;
    fold->nkeys = fold->nargs = 0;
}

int callpolicy_folded(struct callpolicy *cp, struct callpolicy_upstream *up, const struct cache_fold *fold,
                      int64_t *queued_until_ms, struct callpolicy_verdict *out)
{
    struct guard_verdict gv;
    int failing;
    if (!cp->fleet || !fold->answered || !guardredis_fold_verdict(cp->fleet, fold->reply, &gv, &failing))
        return 0;
    *out = fleet_settle(cp, up, &gv, failing, queued_until_ms);
    return 1;
}

void callpolicy_cancel(struct callpolicy_pending *p)
{
    guardredis_cancel(p->cp->fleet, p->op);
    callpolicy_upstream_unref(p->up);
    free(p);
}

void callpolicy_refusal(struct callpolicy *cp, const struct callpolicy_upstream *up, const struct callpolicy_verdict *v,
                        const char *key, struct client_error *err)
{
    enum metrics_event event;
    switch (v->gv.refusal) {
    case GUARD_THROTTLED:
        client_error_set(err, 503, "JG.UPSTREAM_THROTTLED", "the cloud API is throttling jobgate; retry later");
        event = EVENT_UPSTREAM_THROTTLED;
        break;
    case GUARD_CIRCUIT_OPEN:
        client_error_set(err, 503, "JG.UPSTREAM_UNAVAILABLE",
                         "the cloud API is failing; jobgate waits before trying it again");
        event = EVENT_UPSTREAM_CIRCUIT_OPEN;
        break;
    case GUARD_RATE_LIMITED:
        client_error_set(err, 503, "JG.UPSTREAM_RATE_LIMITED",
                         "jobgate's rate limit for the cloud API is reached; retry later");
        event = EVENT_UPSTREAM_RATE_LIMITED;
        break;
    default:
        /* GUARD_BAD_PROJECT (an id the guard cannot keep): answered as the
         * rate limit, counted as a call held back by an open circuit. */
        client_error_set(err, 503, "JG.UPSTREAM_RATE_LIMITED",
                         "jobgate's rate limit for the cloud API is reached; retry later");
        event = EVENT_UPSTREAM_CIRCUIT_OPEN;
        break;
    }
    err->retry_after = v->gv.retry_after_s > 0 ? v->gv.retry_after_s : 1;
    metrics_count_event(cp->metrics, event);
    log_info("not calling %s for key %s: %s (retry after %d s)", up->base_url, key, guard_refusal_name(v->gv.refusal),
             v->gv.retry_after_s);
}

/* A 429's backoff as guard_throttled computes it, for the Redis store. */
static int64_t backoff_ms(struct callpolicy *cp, const struct guard_conf *conf, int retry_after_s)
{
    int64_t ms;
    if (retry_after_s > 0) {
        ms = (int64_t)retry_after_s * 1000;
    } else {
        cp->rng = cp->rng * 6364136223846793005ULL + 1442695040888963407ULL;
        ms = conf->throttle_ms +
             (conf->throttle_jitter_ms > 0 ? (int64_t)((cp->rng >> 11) % (uint64_t)(conf->throttle_jitter_ms + 1)) : 0);
    }
    return ms > conf->throttle_max_ms ? conf->throttle_max_ms : ms;
}

/* Tell the store that admitted the call how it ended (`retry_after_s` >= 0: a 429). */
static void report(struct callpolicy_upstream *up, const struct callpolicy_verdict *v, enum guard_outcome o,
                   int retry_after_s)
{
    struct callpolicy *cp = up->cp;
    int64_t now = clock_mono_us() / 1000;
    int probe = v->gv.probe;
    if (v->store == CALLPOLICY_STORE_REDIS && retry_after_s >= 0) { /* a 429: held here at once too */
        int64_t ms = backoff_ms(cp, &up->conf, retry_after_s);
        if (now + ms > up->held_until_ms) {
            up->held_until_ms = now + ms;
            up->held_why = GUARD_THROTTLED;
        }
        guardredis_report(cp->fleet, up->base_url, &up->conf, ms, GUARD_SUCCESS, probe);
        return;
    }
    if (v->store == CALLPOLICY_STORE_REDIS && probe && o == GUARD_SUCCESS)
        up->fleet_circuit_open = 0;
    switch (v->store) {
    case CALLPOLICY_STORE_REDIS:
        /* A success resets the fleet's count of failures: none to reset, no report. */
        if (o != GUARD_SUCCESS || probe || v->fleet_failing)
            guardredis_report(cp->fleet, up->base_url, &up->conf, 0, o, probe);
        break;
    case CALLPOLICY_STORE_SHM:
        if (retry_after_s >= 0)
            guardshm_throttled(cp->shm, up->shm_slot, &up->conf, now, retry_after_s, probe);
        else
            guardshm_result(cp->shm, up->shm_slot, &up->conf, now, o, probe);
        break;
    case CALLPOLICY_STORE_PROCESS:
        if (!up->local)
            break;
        if (retry_after_s >= 0)
            guard_throttled(up->local, now, retry_after_s);
        else
            guard_result(up->local, now, o);
        break;
    }
}

void callpolicy_report(struct callpolicy_upstream *up, const struct callpolicy_verdict *v,
                       const struct upstream_response *resp)
{
    if (resp->fault == FAULT_NONE && resp->status == 429) {
        report(up, v, GUARD_SUCCESS, resp->retry_after > 0 ? (int)resp->retry_after : 0);
        log_warn("upstream %s throttles (429): no calls to it for a while", up->base_url);
        return;
    }
    enum guard_outcome o = GUARD_SUCCESS;
    if (resp->fault != FAULT_NONE && resp->fault != FAULT_BAD_BODY && resp->fault != FAULT_WRONG_JOB &&
        resp->fault != FAULT_OVERSIZED)
        o = GUARD_TRANSPORT_FAILURE; /* a body it did send, however wrong, proves it alive */
    else if (resp->fault == FAULT_NONE && resp->status >= 500)
        o = GUARD_UPSTREAM_5XX;
    report(up, v, o, -1);
}

void callpolicy_abandoned(struct callpolicy_upstream *up, const struct callpolicy_verdict *v)
{
    report(up, v, GUARD_ABANDONED, -1);
}

int callpolicy_stale_may_answer(const struct upstream_response *resp)
{
    return resp->fault != FAULT_NONE || resp->status >= 500 || resp->status == 429 || resp->status == 200;
}

void callpolicy_no_credentials(struct client_error *err)
{
    client_error_set(err, 503, "JG.NO_CREDENTIALS", "jobgate cannot authenticate to the cloud API now; retry later");
    err->retry_after = 5;
}

void callpolicy_health(const struct callpolicy *cp, struct callpolicy_health *out)
{
    memset(out, 0, sizeof(*out));
    out->store = cp->fleet ? "redis" : cp->shm ? "shared-memory" : "process";
    out->fallbacks = cp->fallbacks;
    out->fleet_size = 1;
    if (cp->fleet) {
        struct guardredis_stats st;
        guardredis_stats(cp->fleet, &st);
        out->fallback = !st.up || cp->in_fallback;
        out->fleet_size = fleet_processes(cp, &cp->guard_conf);
        out->fleet_admissions = st.admissions;
    }
}
