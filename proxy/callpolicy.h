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
 * The contract with the caller is guard.h's: ask callpolicy_admit before
 * every call, call only on CALLPOLICY_GO, then report its end exactly once
 * (callpolicy_report, or callpolicy_abandoned when it ended with no answer).
 * Single-threaded: the event loop's.
 */
#ifndef JOBGATE_CALLPOLICY_H
#define JOBGATE_CALLPOLICY_H

#include <stdint.h>

#include "errmap.h"
#include "guard.h"

struct metrics;
struct upstream_response;
struct callpolicy;

/* One upstream (by base URL) and its guard. */
struct callpolicy_upstream;

/* Counts refusals in `metrics` (borrowed). Returns NULL when out of memory. */
struct callpolicy *callpolicy_new(struct metrics *metrics);

/* Set the limits of every upstream (`gc` is copied; NULL: the guard's
 * defaults) and how long a call over the rate limit may wait for a token.
 * New limits drop the guards (their bucket, backoff and circuit state): a
 * reload must not reset a circuit that protects a failing upstream, so the
 * guards are kept when the limits did not change. */
void callpolicy_configure(struct callpolicy *cp, const struct guard_conf *gc, int64_t rate_queue_ms);

/* Frees every guard. */
void callpolicy_free(struct callpolicy *cp);

/* The upstream at `base_url`, its guard made on first use; NULL when out of
 * memory. Owned by `cp`, valid until callpolicy_configure changes the
 * limits, or callpolicy_free. */
struct callpolicy_upstream *callpolicy_upstream(struct callpolicy *cp, const char *base_url);

enum callpolicy_admission {
    CALLPOLICY_GO,      /* call now, then report its end exactly once */
    CALLPOLICY_QUEUE,   /* over the rate limit: ask again after `wait_ms` */
    CALLPOLICY_REFUSED, /* no call: callpolicy_refusal gives the answer */
};

struct callpolicy_verdict {
    enum callpolicy_admission admission;
    int64_t wait_ms;         /* CALLPOLICY_QUEUE: when to ask again */
    struct guard_verdict gv; /* the guard's own */
};

/* May a call for `project` (NULL: none) go to `up` now? `*queued_until_ms`
 * is the caller's: 0 before its first ask, then set here to the end of its
 * wait for a token. A caller that cannot wait (no timer) treats
 * CALLPOLICY_QUEUE as CALLPOLICY_REFUSED. */
struct callpolicy_verdict callpolicy_admit(struct callpolicy *cp, struct callpolicy_upstream *up, const char *project,
                                           int64_t *queued_until_ms);

/* The answer for a refused call, `key` the cache key (for the log): 503
 * with Retry-After, never an upstream error the client would not retry.
 * Counts and logs the refusal. */
void callpolicy_refusal(struct callpolicy *cp, const struct callpolicy_upstream *up, const struct callpolicy_verdict *v,
                        const char *key, struct client_error *err);

/* How an admitted call ended: a 429 backs the upstream off for its
 * Retry-After; a transport fault or (per the guard's settings) a 5xx counts
 * against the circuit breaker; any other answer proves the upstream alive. */
void callpolicy_report(struct callpolicy_upstream *up, const struct upstream_response *resp);

/* An admitted call ended with no answer (shutdown, or it could not start). */
void callpolicy_abandoned(struct callpolicy_upstream *up);

/* Was `resp` (not a usable job) a failing upstream, so that a stale copy
 * may stand in: a transport fault, a 5xx, a 429, a 200 that is no usable
 * job. Not a verdict on the job or the token (401, 403, 404). */
int callpolicy_stale_may_answer(const struct upstream_response *resp);

/* The answer when jobgate cannot get its own credentials: the cloud is not
 * asked; 503 JG.NO_CREDENTIALS, Retry-After 5. */
void callpolicy_no_credentials(struct client_error *err);

#endif
