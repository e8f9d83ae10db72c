/*
 * gateway: the life of one job-status request.
 *
 *   rules (route, validate) -> cache lookup -> [miss] one upstream call per
 *   key (concurrent misses wait on it) -> rules (classify, map errors) ->
 *   cache store -> reply to every waiter
 *
 * Lower layers (cache, upstream) report through callbacks; this module never
 * blocks. A request holds a reference to the ruleset it started with.
 *
 * Along a request's path: request.c (intake, checks, cache key and lookup),
 * flight.c (the shared upstream call), callpolicy.c (whether a call may go,
 * and the answers when it may not), gateway.c (answering, the audit record,
 * settings, drain and shutdown); gateway_int.h is their shared internals,
 * reqid.h the request ids.
 */
#ifndef JOBGATE_GATEWAY_H
#define JOBGATE_GATEWAY_H

#include <stddef.h>
#include <stdint.h>

#include "errmap.h"

struct evhttp_request;
struct event_base;
struct ruleset;
struct cache;
struct upstream;
struct metrics;
struct audit;
struct clientkeys;
struct credentials;
struct iamregion;
struct guard_conf;
struct guardshm;
struct cache_conf;
struct callpolicy_health;
struct gateway;

struct gateway_conf {
    const char *key_prefix;
    const char *upstream_url;        /* overrides every rule's upstream url when set */
    const char *upstream_token;      /* sent instead of the client's X-Auth-Token when set; secret */
    struct clientkeys *client_keys;  /* NULL: no client authentication; the gateway takes a reference */
    struct credentials *credentials; /* jobgate's own cloud credentials (borrowed); NULL: as upstream_token says */
    int64_t passthrough_window_ms;   /* pass-through: how long upstream's acceptance of a token lets it
                                        read cached answers for that project (0: 5 min) */
    const struct guard_conf *guard;  /* limits of each upstream (copied); NULL: the defaults */
    int64_t rate_queue_ms;           /* a call over the rate limit waits this long for a token before 503 */
    struct audit *audit;             /* one line per answered request (borrowed); NULL: none */
    size_t max_uri_bytes;            /* longer request URIs: 400 (0: no bound) */
    size_t max_header_bytes;         /* larger request headers: 400 (0: no bound) */
    size_t max_waiters;              /* requests one key's upstream call may hold; beyond: 503 (0: 10000) */
    int64_t max_wait_ms;             /* longest a request waits on another's upstream call; then 504 (0: 15 s) */
    const struct regions *regions;   /* where {region} upstream urls go (copied); NULL: none configured */
    struct iamregion *iamregion;     /* a project's region from IAM when regions says nothing (borrowed,
                                        iamregion.h); NULL: never asked */
    enum error_shape error_shape;    /* error bodies where no rule says (unknown paths; DEFAULT: APIGW) */
    /* Where the guards keep their state (callpolicy.h); read by gateway_new only: */
    struct guardshm *guard_shm;           /* the host's (borrowed); NULL: per process */
    const struct cache_conf *guard_redis; /* redis_url set: the fleet's, in Redis */
    int workers;                          /* processes of this instance */
};

/* The gateway borrows cache, upstream and metrics (the caller frees them
 * after gateway_free) and takes a reference to `rules`. Strings in `conf`
 * are copied. */
struct gateway *gateway_new(struct event_base *base, struct ruleset *rules, struct cache *cache,
                            struct upstream *upstream, struct metrics *metrics, const struct gateway_conf *conf);

/* Switch to a new ruleset and settings (SIGHUP). Requests already received
 * finish under the ruleset they started with; new ones use `rules`. */
void gateway_reconfigure(struct gateway *gw, struct ruleset *rules, const struct gateway_conf *conf);

/* Answer `req` (anything but the admin endpoints). `client_auth`: the
 * listener requires a client key (when the gateway has a keys file). */
void gateway_handle(struct gateway *gw, struct evhttp_request *req, int client_auth);

/* The audit log (NULL when none is configured). */
struct audit *gateway_audit(const struct gateway *gw);

/* The client keys in force (NULL: no client authentication). Borrowed: take
 * a reference to keep them past the current callback (a reload swaps them). */
struct clientkeys *gateway_client_keys(const struct gateway *gw);

/* jobgate's cloud credentials (NULL when none were given). */
struct credentials *gateway_credentials(const struct gateway *gw);

/* Where the upstreams' guards keep their state, and the fallback's count. */
void gateway_guard_health(const struct gateway *gw, struct callpolicy_health *out);

/* Requests received and not yet answered. */
size_t gateway_in_flight(const struct gateway *gw);

/* The largest request body worth reading for the current rules: twice the
 * largest forward.max_body (so that a body over its route's bound gets that
 * route's 413); 0 when no rule forwards. At most 2 x RULE_FORWARD_MAX_BODY
 * (128 MiB). The framing filter refuses a longer Content-Length (frontend.h)
 * before evhttp reads it. */
uint64_t gateway_max_body_bytes(const struct gateway *gw);

/* While draining, answers ask clients to close their connection, and
 * `on_idle` is called (from the loop) once nothing is in flight. */
void gateway_drain(struct gateway *gw, void (*on_idle)(void *arg), void *arg);

/* Answer every request still in flight with 503 (shutdown deadline). */
void gateway_abort_all(struct gateway *gw);

/* Free the gateway's own state. Call after cache_free and upstream_free, so
 * that no callback can arrive for a request it frees. */
void gateway_free(struct gateway *gw);

#endif
