/*
 * flight: one upstream call for a key, shared by every request that missed
 * on it meanwhile (its waiters): a burst of pollers costs the upstream one
 * request. In pass-through mode requests share a flight only when they
 * present the same token, since another token must be judged by the cloud
 * itself.
 *
 * The life of a flight (the state is `enum flight_state`; every transition
 * asserts the state it leaves):
 *
 *   NEW ---------------> LEASE ----------------> WAIT_HOLDER ------> DONE
 *    |   shared cache     |   another process     |   its answer
 *    |   (asked, or told  |   holds the lease     |   stored
 *    |   by the lookup)   |                       |
 *    | pass-through       | acquired, or no       | lease gone,
 *    | (own token)        | shared cache          | no answer
 *    v                    v                       v
 *   [call] <------------------------------------------------------------+
 *    |                                                                  |
 *    v                                                                  |
 *   ADMITTING -------------- refused -------------------------> DONE    |
 *    |  \   (the guard: at once, or Redis's answer)                     |
 *    |   \ over the rate limit                                          |
 *    |    v                                                             |
 *    |   ADMISSION_QUEUE ---- its timer: ask again ---------------------+
 *    | admitted                                                         |
 *    |  \                                                               |
 *    |   \ IAM token to fetch                                           |
 *    |    v                                                             |
 *    |   CREDENTIALS ----------- none (admission given back) --> DONE    |
 *    |    | got them                                                    |
 *    v    v                                                             |
 *   CALLING ---------------- the answer ----------------------> DONE    |
 *    |                                                                  |
 *    +---------------------- 401: jobgate's token expired (once) -------+
 *
 * ADMITTING asks the guard, unless the lookup that took the lease for the
 * key's first waiter had the guard's admission folded in (flight_fold, one
 * round trip to Redis for both): its verdict is then used, once, at once.
 *
 * NEW is made by flight_join for the key's first waiter, or with no waiter
 * by flight_refresh (pending_swr: the pollers are answered stale meanwhile).
 * [call] is a step, not a state: it passes on at once. From admitted on,
 * the flight holds an admission whose end it reports exactly once (the
 * answer, or given back when the call never went or was cancelled).
 * Whatever the state, a waiter
 * may leave meanwhile: at its deadline (answered 504, or stale), or when its
 * client hangs up; the call goes on for the others, and its answer is cached
 * for the next poller. DONE answers every waiter left, from one place
 * (flight_answer_all in flight.c), and frees the flight. A shutdown
 * (flight_leave) may free a flight in any state.
 *
 * Callbacks (cache, credentials, upstream, timers) run on the event loop's
 * thread. The cache's and the credentials' may run before the call that
 * asked for them returns: the state is set before asking, and the handle
 * kept only when the ask returns one.
 */
#ifndef JOBGATE_FLIGHT_H
#define JOBGATE_FLIGHT_H

#include <stdint.h>

struct body;
struct cache_fold;
struct job_request;
struct rule;
struct gateway;

enum flight_state {
    FLIGHT_NEW,             /* made; its first waiter is being added */
    FLIGHT_LEASE,           /* asking the shared cache for the key's lease */
    FLIGHT_WAIT_HOLDER,     /* another process holds the lease: waiting for the answer it stores */
    FLIGHT_ADMITTING,       /* asking the upstream's guard (callpolicy.h): at once, or Redis */
    FLIGHT_CREDENTIALS,     /* admitted; waiting for jobgate's own credentials (a token from IAM) */
    FLIGHT_ADMISSION_QUEUE, /* over the upstream's rate limit: waiting for a token */
    FLIGHT_CALLING,         /* the upstream call is out */
    FLIGHT_DONE,            /* the waiters are answered; the flight is being freed */
};

/* How long a lease on a key of `rule` is asked for: as long as its upstream
 * call may take, and a second. */
int64_t flight_lease_ms(const struct rule *rule);

/* `jr` missed on its key (jr->key, jr->outcome set; jr->stale, a copy to
 * fall back on, or NULL; jr->lease, what its lookup did with the key's
 * lease: an ACQUIRED lease is the flight's from here on): wait for the
 * key's flight, starting one when none is out. `jr` may be answered before this returns (no memory, too many
 * waiters, the call refused at once): the caller must not touch it after. */
void flight_join(struct job_request *jr);

/* pending_swr: `jr` is being answered with `stale`, a still-changing answer
 * whose TTL has just run out; make sure one call refreshes its key in the
 * background. Starts a flight with no waiter when none is out for the key
 * (its answer is stored as any other, a terminal one for good), or leaves
 * the one that is out to do it. Does not answer `jr`. Returns 0, or -1 when
 * no flight could be made (out of memory, the URL does not fit): then the
 * caller should take the ordinary miss path. */
int flight_refresh(struct job_request *jr, struct body *stale);

/* The admission of the call a miss of `jr` would make, to fold into its
 * lookup (cache_fold: one round trip to Redis, the lease and the
 * admission): jr->fold set up, made only if the lookup goes to Redis;
 * NULL in pass-through mode (no lease there). The flight that `jr` then
 * starts with the lease uses its verdict instead of asking the guard. */
struct cache_fold *flight_fold(struct job_request *jr);

/* Shutdown: `jr` stops waiting on its flight, unanswered (the caller
 * answers it). A flight left with no waiter is cancelled and freed. */
void flight_leave(struct job_request *jr);

/* Free every flight of `gw`, with no callback and no answer. Only from
 * gateway_free, after cache_free and upstream_free. */
void flight_free_all(struct gateway *gw);

#endif
