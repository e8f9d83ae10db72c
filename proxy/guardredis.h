/*
 * guardredis: the guard state of every upstream kept once in Redis for
 * every process of every jobgate instance sharing it (the fleet), so that
 * `rate` and `burst` are the fleet's and a 429 or an open circuit that one
 * process sees holds all of them at its next admission.
 *
 * Keys, under KEY_PREFIX "guard:{" UPSTREAM "}" (the upstream's base URL in
 * braces: a Redis Cluster hash tag, so that every key one script touches
 * lives in one slot, on one master):
 *   :rate          the GCRA tat (guard.h) of the upstream, in microseconds of
 *                  Redis's clock; expires once it is in the past (a full bucket)
 *   :project:ID    the same per project, when project_rate is set
 *   :throttled     exists while backing off after a 429: TTL = the Retry-After
 *   :open          exists while the circuit is open: TTL = the cool-down
 *   :halfopen      the circuit has opened and no probe has closed it yet; its
 *                  value is the cool-down (doubled by each failed probe)
 *   :probe         SET NX PX probe_timeout: the one probe out, fleet-wide
 *   :failures      consecutive failures while closed; an admission says
 *                  whether it exists, and only then is a success reported
 *                  (to reset it): a miss costs no report while all is well
 * and KEY_PREFIX "guard:fleet", a sorted set of live processes (member: a
 * random id per process; score: when its heartbeat expires), refreshed
 * every GUARDREDIS_HEARTBEAT_MS and read as the fleet's size.
 *
 * One admission is one EVALSHA (falling back to EVAL on NOSCRIPT) of a Lua
 * script that reads the time from Redis (one clock for every host), checks
 * open, probe, throttled and rate in guard_cell_admit's order and takes
 * what it admits with, atomically. Reports (a 429, a failure, a success
 * while failures are counted, a probe's end) are one EVALSHA each, fire and
 * forget.
 *
 * Folded: the same admission may run inside another script on the same
 * server (guardredis_fold: the cache's lookup and lease, redis_lease.h),
 * so that a miss makes one round trip to Redis before its upstream call,
 * not two. A folded admission never takes the half-open circuit's probe
 * (it is then undecided, and the caller asks guardredis_admit), so a fold
 * whose reply comes too late holds nothing that must be given back.
 *
 * Budget: an admission answers within the link's budget (cache.redis_budget,
 * as every other Redis call): its callback then says "no answer" and the
 * caller decides locally (callpolicy.h: the fallback). A reply that comes
 * later is dropped, except that a probe it granted is given back at once.
 *
 * Its own connection (redis_link.h, polling mode: no subscriber), so that a
 * slow cache command never delays an admission. Single-threaded: the event
 * loop's. Callbacks run on it, never before guardredis_admit returns.
 */
#ifndef JOBGATE_GUARDREDIS_H
#define JOBGATE_GUARDREDIS_H

#include <stddef.h>
#include <stdint.h>

#include "cache_types.h"
#include "guard.h"

#define GUARDREDIS_HEARTBEAT_MS 1000
#define GUARDREDIS_LIVE_MS      3000 /* a process missing this long is gone */

struct event_base;
struct guardredis;
struct guardredis_op;

/* The connection settings come from `conf` (the cache's Redis); keys start
 * with `key_prefix` (copied). NULL with err set (bad URL, out of memory).
 * Connects in the background and starts the heartbeats. */
struct guardredis *guardredis_new(struct event_base *base, const struct cache_conf *conf, const char *key_prefix,
                                  char *err, size_t errlen);

/* Frees everything; pending admissions are dropped without their callbacks. */
void guardredis_free(struct guardredis *gr);

/* Called exactly once per admission not cancelled: `answered` 0 when Redis
 * gave no usable answer within the budget (down, error, slow); else `v` is
 * the fleet's verdict, and `failing` says that the fleet counts failures
 * of this upstream: a success of the call must then be reported (to reset
 * them); while it is 0 a success need not be. */
typedef void (*guardredis_admit_cb)(int answered, const struct guard_verdict *v, int failing, void *arg);

/* Ask the fleet whether a call to `upstream` (for `project`, NULL: none)
 * may go now under `conf`. Returns NULL, calling nothing, when it cannot
 * ask (Redis not up, too many commands out, no memory). */
struct guardredis_op *guardredis_admit(struct guardredis *gr, const char *upstream, const char *project,
                                       const struct guard_conf *conf, guardredis_admit_cb cb, void *arg);

/* Forget `op`: its callback is not called; a probe granted to it is given back. */
void guardredis_cancel(struct guardredis *gr, struct guardredis_op *op);

/* How a call the fleet admitted ended: a 429 with its backoff (ms, jitter
 * and cap applied by the caller; 0 when not a 429), or `outcome`; `probe`
 * when it was admitted as the probe. Fire and forget: lost when Redis is
 * down (a probe's key then ends at probe_timeout). */
void guardredis_report(struct guardredis *gr, const char *upstream, const struct guard_conf *conf, int64_t backoff_ms,
                       enum guard_outcome outcome, int probe);

/*
 * A folded admission: GUARDREDIS_ADMIT_LUA defines the Lua function
 * `admit(KEYS, ARGV)`; a script of the caller's runs it with this fold's
 * keys and arguments, on the server this guard's keys live on (not in a
 * Redis Cluster: its keys hash to their own slot), and hands back its
 * reply, four integers, to guardredis_fold_verdict.
 */
extern const char GUARDREDIS_ADMIT_LUA[];

#define GUARDREDIS_FOLD_KEYS_MAX 7
#define GUARDREDIS_FOLD_ARGS     6

struct guardredis_fold {
    int nkeys, nargs;
    char *keys[GUARDREDIS_FOLD_KEYS_MAX]; /* owned: guardredis_fold_clear */
    char *args[GUARDREDIS_FOLD_ARGS];
};

/* The keys and arguments of an admission of a call to `upstream` (for
 * `project`, NULL: none) under `conf`, to be folded. Returns 0, or -1 when
 * the guard's Redis is not up (then nothing is to be folded) or out of
 * memory; on 0 the caller frees them with guardredis_fold_clear. */
int guardredis_fold(const struct guardredis *gr, const char *upstream, const char *project,
                    const struct guard_conf *conf, struct guardredis_fold *out);
void guardredis_fold_clear(struct guardredis_fold *f);

/* A folded admission's reply: 1 when it decided (`v`, and `failing` as for
 * guardredis_admit_cb; counted as an admission Redis answered), 0 when it
 * did not (a half-open circuit: ask guardredis_admit) or the reply is not
 * one. */
int guardredis_fold_verdict(struct guardredis *gr, const long long reply[4], struct guard_verdict *v, int *failing);

struct guardredis_stats {
    int up;              /* the connection is up */
    size_t fleet;        /* live processes the heartbeats last counted (0: not known yet) */
    uint64_t admissions; /* answered by Redis */
    uint64_t unanswered; /* down, erring or over budget: decided locally */
    uint64_t errors;
};

void guardredis_stats(const struct guardredis *gr, struct guardredis_stats *out);

#endif
