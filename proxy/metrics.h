/*
 * metrics: counters and histograms, rendered in the Prometheus text format
 * for GET /metrics. Route labels are rule names, never anything a client sends.
 *
 * One set per instance: metrics_new maps a shared region (MAP_SHARED |
 * MAP_ANONYMOUS) that the workers inherit when they fork, and every worker
 * adds to the same atomic counters. So whichever worker answers a scrape
 * shows the instance's totals, and a worker that the supervisor restarts
 * resets nothing. Call metrics_new before the workers fork.
 *
 * Threads: the count and render calls may be made from any process that
 * inherited the region, one thread per process (metrics_fold keeps what its
 * process folded last in the process's own handle).
 */
#ifndef JOBGATE_METRICS_H
#define JOBGATE_METRICS_H

#include <stdint.h>

#include "fault.h"

struct evbuffer;
struct cache_health;

/* What the cache did for one answer: the X-Cache header's value. */
enum cache_outcome { OUTCOME_HIT, OUTCOME_MISS, OUTCOME_BYPASS, OUTCOME_STALE, OUTCOME__COUNT };
const char *cache_outcome_name(enum cache_outcome o);

/* Things that happen to requests besides being answered, counted in
 * jobgate_events_total{event="..."}; the label is the enumerator's name
 * without EVENT_, in lower case (metrics_event_name). */
enum metrics_event {
    EVENT_WAITER_GONE,            /* (no longer counted: a half-close is answered; kept for the label) */
    EVENT_WAITER_OVERFLOW,        /* a key already had the most waiters allowed: answered 503 */
    EVENT_WAITER_TIMEOUT,         /* waited longer than coalesce.max_wait: answered 504 */
    EVENT_ACCEPT_PAUSED,          /* at client.max_connections: listeners paused */
    EVENT_HEADER_TIMEOUT,         /* no whole request within client.header_timeout: closed */
    EVENT_KEEPALIVE_TIMEOUT,      /* idle past client.keepalive_timeout: closed */
    EVENT_REQUEST_TOO_LARGE,      /* URI or headers beyond their bounds: answered 400 */
    EVENT_UPSTREAM_RATE_LIMITED,  /* a call held back by the upstream's rate limit */
    EVENT_UPSTREAM_THROTTLED,     /* a call held back while backing off after a 429 */
    EVENT_UPSTREAM_CIRCUIT_OPEN,  /* a call held back while the upstream's circuit is open */
    EVENT_SHARED_ANSWER,          /* misses answered by another process's upstream call (the lease): once per key */
    EVENT_CLIENT_UNAUTHENTICATED, /* no client key, or an unknown one: 401 */
    EVENT_CLIENT_FORBIDDEN,       /* a client key asking outside its grants: 403 */
    EVENT_AUDIT_DROPPED,          /* an answer whose audit line could not be kept (audit_write refused it) */
    EVENT_BAD_FRAMING,            /* a request head refused by httpframe (smuggling shapes, bad syntax): 400 */
    EVENT_CLOSED_UNANSWERED,      /* a connection closed with requests received and not answered */
    EVENT__COUNT
};
const char *metrics_event_name(enum metrics_event e);

/* Region lookups asked of IAM (iamregion.h), counted as
 *   jobgate_iam_region_calls_total                       GET /v3/projects/{id} sent
 *   jobgate_iam_region_answers_total{answer="known|unknown|failed"}  what those calls gave
 *   jobgate_iam_region_served_total{from="memory|redis"}  lookups answered without IAM:
 *       from the process's map at once, or from the map shared in Redis. */
enum metrics_iam_region {
    METRICS_IAM_REGION_CALLS,
    METRICS_IAM_REGION_KNOWN,
    METRICS_IAM_REGION_UNKNOWN,
    METRICS_IAM_REGION_FAILED,
    METRICS_IAM_REGION_FROM_MEMORY,
    METRICS_IAM_REGION_FROM_REDIS,
    METRICS_IAM_REGION__COUNT
};

struct metrics;

/* Count one `what` (any process; NULL `m` counts nothing). */
void metrics_count_iam_region(struct metrics *m, enum metrics_iam_region what);

/* The instance's region and this process's handle to it; NULL when out of memory. */
struct metrics *metrics_new(void);

void metrics_count_event(struct metrics *m, enum metrics_event e);

/* One answered request. `route` is a rule name or "none". */
void metrics_count_request(struct metrics *m, const char *route, int status, enum cache_outcome outcome,
                           int64_t elapsed_us);

/* One finished upstream call: its HTTP status, or a fault. */
void metrics_count_upstream(struct metrics *m, const char *route, int status, enum upstream_fault fault,
                            int64_t elapsed_us);

/* Counters that another module keeps per process (Redis errors, IAM calls,
 * audit lines): folded into instance totals by metrics_fold. */
enum metrics_fold {
    METRICS_FOLD_REDIS_ERRORS,
    METRICS_FOLD_REDIS_TIMEOUTS,
    METRICS_FOLD_REDIS_RECONNECTS,
    METRICS_FOLD_CACHE_REJECTED,
    METRICS_FOLD_IAM_CALLS,
    METRICS_FOLD_IAM_FAILURES,
    METRICS_FOLD_AUDIT_LINES,
    METRICS_FOLD_AUDIT_DROPPED,
    METRICS_FOLD_AUDIT_WRITE_ERRORS,
    METRICS_FOLD__COUNT
};

/* This process's counter `which` stands at `current`: add what it grew by
 * since this process last folded it, and return the instance's total. A
 * process's share joins the total when it folds (at each scrape it answers),
 * so a total may lag, but never goes backwards. */
uint64_t metrics_fold(struct metrics *m, enum metrics_fold which, uint64_t current);

/* Append the whole exposition to `out`. */
void metrics_render(struct metrics *m, const struct cache_health *cache, uint64_t in_flight, struct evbuffer *out);

/* Unmap this process's view (other processes keep theirs) and free the handle. */
void metrics_free(struct metrics *m);

#endif
