/*
 * callpolicy: whether, and how, a call goes to an upstream, and what a
 * client gets when it does not. It stands between the flight (one shared
 * upstream call, flight.h) and the guard (the pure rate, backoff and breaker
 * logic, guard.h), and owns one guard per upstream base URL.
 *
 * How a refusal or a throttled upstream is answered, in one place:
 *
 *   - the guard refuses a call (callpolicy_admit): the waiters get their
 *     stale copy when there is one, else 503 with Retry-After:
 *       rate limit reached      JG.UPSTREAM_RATE_LIMITED
 *       backing off after 429   JG.UPSTREAM_THROTTLED
 *       circuit open            JG.UPSTREAM_UNAVAILABLE
 *     A call over the rate limit first waits, up to the configured
 *     rate_queue_ms, for a token (CALLPOLICY_QUEUE), as nginx's limit_req
 *     with a burst delays rather than refuses;
 *   - upstream answers 429 (callpolicy_report): the guard backs off for its
 *     Retry-After (nothing goes out meanwhile), and the waiters get the stale
 *     copy, else the rule's error map's answer for 429
 *     (callpolicy_stale_may_answer says when a stale copy may stand in);
 *   - jobgate has no credentials to call with: 503 JG.NO_CREDENTIALS.
 *
 * Where the guard's state lives (the store), so that `rate` and `burst` are
 * the fleet's and a 429 or an open circuit seen by one process holds all:
 *
 *   - Redis configured: in Redis, for every process of every instance
 *     (guardredis.h), one atomic script per admission, within the Redis
 *     budget;
 *   - Redis configured but unreachable, erring or over budget: a guard of
 *     this process alone (guard.h) with rate and burst divided by the
 *     fleet's size (the fallback): upstream_limits.fleet_size instances
 *     times this instance's workers, or else the processes the Redis
 *     heartbeats last counted, or else this instance's workers. Said in
 *     /healthz and counted in /metrics (callpolicy_health);
 *   - no Redis: shared memory, for the workers of this host (guardshm.h).
 *
 * The contract with the caller is guard.h's: ask callpolicy_admit before
 * every call, call only on CALLPOLICY_GO, then report its end exactly once
 * (callpolicy_report, or callpolicy_abandoned when it ended with no answer),
 * handing back the verdict that admitted it (it says which store did, and
 * whether the call is the half-open circuit's probe).
 *
 * Lifetimes: a `struct callpolicy_upstream` is reference-counted. The table
 * holds one reference, each holder of one from callpolicy_upstream another;
 * new limits (a reload) drop the table's references only, so a flight that
 * is queued or calling keeps its upstream (and guard) until it unrefs it.
 * Single-threaded: the event loop's.
 */
#ifndef JOBGATE_CALLPOLICY_H
#define JOBGATE_CALLPOLICY_H

#include <stddef.h>
#include <stdint.h>

#include "errmap.h"
#include "guard.h"

struct metrics;
struct upstream_response;
struct callpolicy;
struct cache_conf;
struct event_base;
struct guardshm;
struct cache_fold;

/* One upstream (by base URL) and its guard. */
struct callpolicy_upstream;

/* What a callpolicy is built on; everything is borrowed for its life. */
struct callpolicy_env {
    struct event_base *base;
    struct metrics *metrics;        /* counts refusals */
    struct guardshm *shm;           /* the host's shared guard state; NULL: per process */
    const struct cache_conf *redis; /* redis_url set: the fleet's guard state is in Redis */
    const char *key_prefix;         /* of the Redis keys */
    int workers;                    /* processes of this instance (>= 1) */
};

/* NULL when out of memory or the Redis URL is bad (err set). */
struct callpolicy *callpolicy_new(const struct callpolicy_env *env, char *err, size_t errlen);

/* Set the limits of every upstream (`gc` is copied; NULL: the guard's
 * defaults) and how long a call over the rate limit may wait for a token.
 * New limits replace the upstreams of the table (flights that hold the old
 * ones keep them until they end). A reload must not reset a circuit that
 * protects a failing upstream: the shared stores keep their state across
 * new limits, and nothing changes when the limits did not. */
void callpolicy_configure(struct callpolicy *cp, const struct guard_conf *gc, int64_t rate_queue_ms);

/* Frees the table and the Redis store. Every reference from
 * callpolicy_upstream must have been dropped. */
void callpolicy_free(struct callpolicy *cp);

/* A new reference to the upstream at `base_url`, made on first use; NULL
 * when out of memory. Drop it with callpolicy_upstream_unref. */
struct callpolicy_upstream *callpolicy_upstream(struct callpolicy *cp, const char *base_url);
void callpolicy_upstream_unref(struct callpolicy_upstream *up);

enum callpolicy_admission {
    CALLPOLICY_GO,      /* call now, then report its end exactly once */
    CALLPOLICY_QUEUE,   /* over the rate limit: ask again after `wait_ms` */
    CALLPOLICY_REFUSED, /* no call: callpolicy_refusal gives the answer */
};

/* Which store admitted a call (its end is reported there). */
enum callpolicy_store {
    CALLPOLICY_STORE_PROCESS, /* this process's guard: no shared state, or the fallback */
    CALLPOLICY_STORE_SHM,     /* the host's shared memory */
    CALLPOLICY_STORE_REDIS,   /* the fleet's, in Redis */
};

struct callpolicy_verdict {
    enum callpolicy_admission admission;
    enum callpolicy_store store;
    int64_t wait_ms;         /* CALLPOLICY_QUEUE: when to ask again */
    struct guard_verdict gv; /* the guard's own (gv.probe: the call is the probe) */
    int fleet_failing;       /* STORE_REDIS: the fleet counts failures (a success is reported only then) */
};

/* Called exactly once per callpolicy_admit not cancelled, on the event
 * loop's thread; `v` is borrowed for the call. */
typedef void (*callpolicy_admit_cb)(const struct callpolicy_verdict *v, void *arg);

struct callpolicy_pending;

/* May a call for `project` (NULL: none) go to `up` now? `*queued_until_ms`
 * is the caller's (it must stay valid until the callback): 0 before its
 * first ask, then set here to the end of its wait for a token. `cb` may run
 * before this returns (local stores): then NULL is returned; else a handle
 * for callpolicy_cancel, valid until `cb` runs. */
struct callpolicy_pending *callpolicy_admit(struct callpolicy *cp, struct callpolicy_upstream *up, const char *project,
                                            int64_t *queued_until_ms, callpolicy_admit_cb cb, void *arg);

/*
 * The admission folded into the cache's lookup, so that a miss makes one
 * round trip to Redis before its upstream call (guardredis.h: folded):
 * callpolicy_fold fills in `out`'s Lua, keys and arguments (a cache_fold's
 * `make` calls it) with an admission of a call for `project` (NULL: none)
 * to the upstream at `base_url`, for the lookup to run if it takes the
 * key's lease, and returns 1; 0 when there is none to fold (the fleet's
 * store is not Redis, Redis is not up, out of memory). callpolicy_fold_done
 * (its `release`) frees what it made. A fold that was not answered, or
 * whose lease went unused, took at most a rate-limit token (never the
 * probe), and nothing is reported for it.
 *
 * callpolicy_folded reads an answered fold's reply into `out`, a verdict as
 * callpolicy_admit's callback gets it, with the same contract (on GO, report
 * the call's end exactly once); 0 when it is no verdict (not answered, or a
 * half-open circuit: ask callpolicy_admit).
 */
int callpolicy_fold(struct callpolicy *cp, const char *base_url, const char *project, struct cache_fold *out);
void callpolicy_fold_done(struct cache_fold *fold);
int callpolicy_folded(struct callpolicy *cp, struct callpolicy_upstream *up, const struct cache_fold *fold,
                      int64_t *queued_until_ms, struct callpolicy_verdict *out);

/* Forget a pending admission: its callback is not called. */
void callpolicy_cancel(struct callpolicy_pending *p);

/* The answer for a refused call, `key` the cache key (for the log): 503
 * with Retry-After, never an upstream error the client would not retry.
 * Counts and logs the refusal. */
void callpolicy_refusal(struct callpolicy *cp, const struct callpolicy_upstream *up, const struct callpolicy_verdict *v,
                        const char *key, struct client_error *err);

/* How a call `v` admitted ended: a 429 backs the upstream off for its
 * Retry-After; a transport fault or (per the guard's settings) a 5xx counts
 * against the circuit breaker; any other answer proves the upstream alive. */
void callpolicy_report(struct callpolicy_upstream *up, const struct callpolicy_verdict *v,
                       const struct upstream_response *resp);

/* A call `v` admitted ended with no answer (shutdown, or it could not start). */
void callpolicy_abandoned(struct callpolicy_upstream *up, const struct callpolicy_verdict *v);

/* Was `resp` (not a usable job) a failing upstream, so that a stale copy
 * may stand in: a transport fault, a 5xx, a 429, a 200 that is no usable
 * job. Not a verdict on the job or the token (401, 403, 404). */
int callpolicy_stale_may_answer(const struct upstream_response *resp);

/* The answer when jobgate cannot get its own credentials: the cloud is not
 * asked; 503 JG.NO_CREDENTIALS, Retry-After 5. */
void callpolicy_no_credentials(struct client_error *err);

/* Where the guard state is, for /healthz and /metrics. */
struct callpolicy_health {
    const char *store;         /* "redis", "shared-memory" or "process" */
    int fallback;              /* Redis is configured but not answering: the per-process share is in force */
    size_t fleet_size;         /* processes the fallback divides the rate by */
    uint64_t fallbacks;        /* admissions decided by the fallback */
    uint64_t fleet_admissions; /* admissions Redis answered */
};

void callpolicy_health(const struct callpolicy *cp, struct callpolicy_health *out);

#endif
