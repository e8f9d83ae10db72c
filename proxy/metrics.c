#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <event2/buffer.h>

#include "cache.h"
#include "metrics.h"
#include "statuses.h"

/* Client statuses are always from the documented table (plus "other" as a guard). */
#define NSTATUS STATUSES_COUNT

/* Latency bucket upper bounds, in microseconds. */
static const int64_t bucket_us[] = {250,   500,    1000,   2500,   5000,    10000,   25000,
                                    50000, 100000, 250000, 500000, 1000000, 2500000, 10000000};
#define NBUCKETS (sizeof(bucket_us) / sizeof(bucket_us[0]))

/* Routes the region has room for, and the longest name kept. A rule past
 * either bound is counted under OVERFLOW_ROUTE (never dropped). */
#define MAX_ROUTES     512
#define ROUTE_NAME_MAX 128
#define OVERFLOW_ROUTE "_other"

typedef _Atomic uint64_t counter_t;

struct histogram {
    counter_t buckets[NBUCKETS + 1]; /* last: +Inf */
    counter_t count;
    _Atomic int64_t sum_us;
};

struct route_counters {
    char name[ROUTE_NAME_MAX]; /* written once, before nroutes counts it */
    counter_t requests[NSTATUS + 1][OUTCOME__COUNT];
    counter_t upstream_status[600];
    counter_t upstream_fault[FAULT__COUNT];
};

/* The shared region: one per instance, mapped before the workers fork and
 * written by all of them. Counters are atomics (relaxed: each is a sum, no
 * ordering between them is promised). Routes are only ever added: `add` (a
 * robust process-shared mutex) orders the adders; a reader scans the first
 * `nroutes` slots without a lock (nroutes is stored with release after the
 * slot's name is written). */
struct metrics_region {
    pthread_mutex_t add;
    _Atomic size_t nroutes;
    struct route_counters routes[MAX_ROUTES];
    struct histogram request_latency;
    struct histogram upstream_latency;
    counter_t events[EVENT__COUNT];
    counter_t folded[METRICS_FOLD__COUNT];
    counter_t iam_region[METRICS_IAM_REGION__COUNT];
};

/* A process's handle: the region, and what this process last folded in. */
struct metrics {
    struct metrics_region *r;
    uint64_t seen[METRICS_FOLD__COUNT];
};

static const char *const outcome_names[] = {
    [OUTCOME_HIT] = "HIT",
    [OUTCOME_MISS] = "MISS",
    [OUTCOME_BYPASS] = "BYPASS",
    [OUTCOME_STALE] = "STALE",
};
_Static_assert(sizeof(outcome_names) / sizeof(outcome_names[0]) == OUTCOME__COUNT, "a cache outcome has no name");

const char *cache_outcome_name(enum cache_outcome o)
{
    return (o >= 0 && o < OUTCOME__COUNT) ? outcome_names[o] : "BYPASS";
}

/* The event label of jobgate_events_total: the enumerator's own name. */
static const char *const event_names[] = {
    [EVENT_WAITER_GONE] = "waiter_gone",
    [EVENT_WAITER_OVERFLOW] = "waiter_overflow",
    [EVENT_WAITER_TIMEOUT] = "waiter_timeout",
    [EVENT_ACCEPT_PAUSED] = "accept_paused",
    [EVENT_HEADER_TIMEOUT] = "header_timeout",
    [EVENT_KEEPALIVE_TIMEOUT] = "keepalive_timeout",
    [EVENT_REQUEST_TOO_LARGE] = "request_too_large",
    [EVENT_UPSTREAM_RATE_LIMITED] = "upstream_rate_limited",
    [EVENT_UPSTREAM_THROTTLED] = "upstream_throttled",
    [EVENT_UPSTREAM_CIRCUIT_OPEN] = "upstream_circuit_open",
    [EVENT_SHARED_ANSWER] = "shared_answer",
    [EVENT_CLIENT_UNAUTHENTICATED] = "client_unauthenticated",
    [EVENT_CLIENT_FORBIDDEN] = "client_forbidden",
    [EVENT_AUDIT_DROPPED] = "audit_dropped",
    [EVENT_BAD_FRAMING] = "bad_framing",
    [EVENT_CLOSED_UNANSWERED] = "closed_unanswered",
};
_Static_assert(sizeof(event_names) / sizeof(event_names[0]) == EVENT__COUNT, "an event has no name");

const char *metrics_event_name(enum metrics_event e)
{
    return (e >= 0 && e < EVENT__COUNT) ? event_names[e] : "unknown";
}

void metrics_count_event(struct metrics *m, enum metrics_event e)
{
    if (e >= 0 && e < EVENT__COUNT)
        atomic_fetch_add_explicit(&m->r->events[e], 1, memory_order_relaxed);
}

void metrics_count_iam_region(struct metrics *m, enum metrics_iam_region what)
{
    if (m && what >= 0 && what < METRICS_IAM_REGION__COUNT)
        atomic_fetch_add_explicit(&m->r->iam_region[what], 1, memory_order_relaxed);
}

struct metrics *metrics_new(void)
{
    struct metrics *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    void *p = mmap(NULL, sizeof(struct metrics_region), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        free(m);
        return NULL;
    }
    m->r = p; /* zero-filled: every counter starts at 0 */
    pthread_mutexattr_t attr;
    int rc = pthread_mutexattr_init(&attr);
    if (rc == 0) {
        pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
        pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
        rc = pthread_mutex_init(&m->r->add, &attr);
        pthread_mutexattr_destroy(&attr);
    }
    if (rc != 0) {
        munmap(p, sizeof(struct metrics_region));
        free(m);
        return NULL;
    }
    return m;
}

static struct route_counters *find_route(struct metrics_region *r, const char *name, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(r->routes[i].name, name) == 0)
            return &r->routes[i];
    return NULL;
}

/* The counters of `name`, added on first use by whichever process sees it
 * first (rule names are few; a reload may add some). */
static struct route_counters *route_of(struct metrics *m, const char *name)
{
    struct metrics_region *r = m->r;
    if (strlen(name) >= ROUTE_NAME_MAX)
        name = OVERFLOW_ROUTE;
    struct route_counters *rc = find_route(r, name, atomic_load_explicit(&r->nroutes, memory_order_acquire));
    if (rc)
        return rc;
    int locked = pthread_mutex_lock(&r->add);
    if (locked == EOWNERDEAD) /* a worker died adding: the slot it filled is not counted yet, so no harm */
        locked = pthread_mutex_consistent(&r->add);
    if (locked != 0)
        return NULL;
    size_t n = atomic_load_explicit(&r->nroutes, memory_order_relaxed);
    if (!(rc = find_route(r, name, n))) {
        if (n == MAX_ROUTES - 1 && strcmp(name, OVERFLOW_ROUTE) != 0) /* the last slot is the overflow's */
            name = OVERFLOW_ROUTE;
        if (!(rc = find_route(r, name, n)) && n < MAX_ROUTES) {
            rc = &r->routes[n];
            snprintf(rc->name, sizeof(rc->name), "%s", name);
            atomic_store_explicit(&r->nroutes, n + 1, memory_order_release);
        }
    }
    pthread_mutex_unlock(&r->add);
    return rc;
}

uint64_t metrics_fold(struct metrics *m, enum metrics_fold which, uint64_t current)
{
    if (which < 0 || which >= METRICS_FOLD__COUNT)
        return current;
    /* A process's own counter only grows; one that shrank was restarted (a new cache, a reopened log). */
    uint64_t delta = current >= m->seen[which] ? current - m->seen[which] : current;
    m->seen[which] = current;
    return atomic_fetch_add_explicit(&m->r->folded[which], delta, memory_order_relaxed) + delta;
}

static void observe(struct histogram *h, int64_t us)
{
    size_t i = 0;
    while (i < NBUCKETS && us > bucket_us[i])
        i++;
    atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, us, memory_order_relaxed);
}

void metrics_count_request(struct metrics *m, const char *route, int status, enum cache_outcome outcome,
                           int64_t elapsed_us)
{
    struct route_counters *r = route_of(m, route);
    if (r)
        atomic_fetch_add_explicit(&r->requests[statuses_index(status)][outcome], 1, memory_order_relaxed);
    observe(&m->r->request_latency, elapsed_us);
}

void metrics_count_upstream(struct metrics *m, const char *route, int status, enum upstream_fault fault,
                            int64_t elapsed_us)
{
    struct route_counters *r = route_of(m, route);
    if (r) {
        if (fault != FAULT_NONE)
            atomic_fetch_add_explicit(&r->upstream_fault[fault], 1, memory_order_relaxed);
        else if (status >= 100 && status < 600)
            atomic_fetch_add_explicit(&r->upstream_status[status], 1, memory_order_relaxed);
    }
    observe(&m->r->upstream_latency, elapsed_us);
}

static void render_histogram(const struct histogram *h, const char *name, const char *help, struct evbuffer *out)
{
    evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    /* Read once each, counts first: a bucket read later than _count may be
     * larger, never smaller, so +Inf is taken as the larger of the two. */
    uint64_t count = atomic_load_explicit(&h->count, memory_order_relaxed);
    int64_t sum_us = atomic_load_explicit(&h->sum_us, memory_order_relaxed);
    uint64_t cumulative = 0;
    for (size_t i = 0; i < NBUCKETS; i++) {
        cumulative += atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
        evbuffer_add_printf(out, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", name, (double)bucket_us[i] / 1e6, cumulative);
    }
    cumulative += atomic_load_explicit(&h->buckets[NBUCKETS], memory_order_relaxed);
    if (count < cumulative)
        count = cumulative;
    evbuffer_add_printf(out, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", name, count);
    evbuffer_add_printf(out, "%s_sum %.6f\n%s_count %" PRIu64 "\n", name, (double)sum_us / 1e6, name, count);
}

void metrics_render(struct metrics *m, const struct cache_health *cache, uint64_t in_flight, struct evbuffer *out)
{
    struct metrics_region *reg = m->r;
    size_t nroutes = atomic_load_explicit(&reg->nroutes, memory_order_acquire);
    evbuffer_add_printf(out, "# HELP jobgate_requests_total Answered requests by route, status and cache result.\n"
                             "# TYPE jobgate_requests_total counter\n");
    for (size_t i = 0; i < nroutes; i++) {
        const struct route_counters *r = &reg->routes[i];
        for (size_t s = 0; s <= NSTATUS; s++) {
            for (int o = 0; o < OUTCOME__COUNT; o++) {
                uint64_t v = atomic_load_explicit(&r->requests[s][o], memory_order_relaxed);
                if (!v)
                    continue;
                char status[8];
                if (s < NSTATUS)
                    snprintf(status, sizeof(status), "%d", statuses_table[s]);
                else
                    snprintf(status, sizeof(status), "other");
                evbuffer_add_printf(out,
                                    "jobgate_requests_total{route=\"%s\",status=\"%s\",cache=\"%s\"} %" PRIu64 "\n",
                                    r->name, status, cache_outcome_name((enum cache_outcome)o), v);
            }
        }
    }

    evbuffer_add_printf(
        out, "# HELP jobgate_upstream_requests_total Upstream calls by route and HTTP status or transport fault.\n"
             "# TYPE jobgate_upstream_requests_total counter\n");
    for (size_t i = 0; i < nroutes; i++) {
        const struct route_counters *r = &reg->routes[i];
        for (int s = 100; s < 600; s++) {
            uint64_t v = atomic_load_explicit(&r->upstream_status[s], memory_order_relaxed);
            if (v)
                evbuffer_add_printf(out, "jobgate_upstream_requests_total{route=\"%s\",status=\"%d\"} %" PRIu64 "\n",
                                    r->name, s, v);
        }
        for (int f = 1; f < FAULT__COUNT; f++) {
            uint64_t v = atomic_load_explicit(&r->upstream_fault[f], memory_order_relaxed);
            if (v)
                evbuffer_add_printf(out, "jobgate_upstream_requests_total{route=\"%s\",status=\"%s\"} %" PRIu64 "\n",
                                    r->name, fault_name((enum upstream_fault)f), v);
        }
    }

    evbuffer_add_printf(out, "# HELP jobgate_events_total What happened to requests besides their answer "
                             "(metrics.h lists the events).\n# TYPE jobgate_events_total counter\n");
    for (int e = 0; e < EVENT__COUNT; e++)
        evbuffer_add_printf(out, "jobgate_events_total{event=\"%s\"} %" PRIu64 "\n",
                            metrics_event_name((enum metrics_event)e),
                            atomic_load_explicit(&reg->events[e], memory_order_relaxed));

    render_histogram(&reg->request_latency, "jobgate_request_duration_seconds", "Time from request to answer.", out);
    render_histogram(&reg->upstream_latency, "jobgate_upstream_duration_seconds", "Time of upstream calls.", out);

    evbuffer_add_printf(out,
                        "# HELP jobgate_cache_up Whether the cache store answers (1) or not (0).\n"
                        "# TYPE jobgate_cache_up gauge\njobgate_cache_up{backend=\"%s\"} %d\n"
                        "# HELP jobgate_redis_errors_total Redis command errors and unreadable entries.\n"
                        "# TYPE jobgate_redis_errors_total counter\njobgate_redis_errors_total %" PRIu64 "\n"
                        "# HELP jobgate_redis_timeouts_total Lookups that ran past the Redis budget.\n"
                        "# TYPE jobgate_redis_timeouts_total counter\njobgate_redis_timeouts_total %" PRIu64 "\n"
                        "# HELP jobgate_redis_reconnects_total Redis connections lost and retried.\n"
                        "# TYPE jobgate_redis_reconnects_total counter\njobgate_redis_reconnects_total %" PRIu64 "\n"
                        "# HELP jobgate_memory_cache_entries Entries in the embedded cache.\n"
                        "# TYPE jobgate_memory_cache_entries gauge\njobgate_memory_cache_entries %zu\n"
                        "# HELP jobgate_memory_cache_bytes Bytes held by the embedded cache.\n"
                        "# TYPE jobgate_memory_cache_bytes gauge\njobgate_memory_cache_bytes %zu\n"
                        "# HELP jobgate_requests_in_flight Requests received and not yet answered.\n"
                        "# TYPE jobgate_requests_in_flight gauge\njobgate_requests_in_flight %" PRIu64 "\n",
                        cache->backend, cache->up, metrics_fold(m, METRICS_FOLD_REDIS_ERRORS, cache->errors),
                        metrics_fold(m, METRICS_FOLD_REDIS_TIMEOUTS, cache->timeouts),
                        metrics_fold(m, METRICS_FOLD_REDIS_RECONNECTS, cache->reconnects), cache->entries, cache->bytes,
                        in_flight);
    evbuffer_add_printf(out,
                        "# HELP jobgate_cache_rejected_total Entries read from Redis and not served: not jobgate's "
                        "format, a bad MAC, another job, or a state that disagrees with its slot.\n"
                        "# TYPE jobgate_cache_rejected_total counter\njobgate_cache_rejected_total %" PRIu64 "\n",
                        metrics_fold(m, METRICS_FOLD_CACHE_REJECTED, cache->rejected));

    const counter_t *iam = reg->iam_region;
#define IAM(i) atomic_load_explicit(&iam[i], memory_order_relaxed)
    evbuffer_add_printf(
        out,
        "# HELP jobgate_iam_region_calls_total IAM calls asking a project's region (GET /v3/projects/{id}).\n"
        "# TYPE jobgate_iam_region_calls_total counter\njobgate_iam_region_calls_total %" PRIu64 "\n"
        "# HELP jobgate_iam_region_answers_total What those calls gave: a region, an unknown project, or a failure.\n"
        "# TYPE jobgate_iam_region_answers_total counter\n"
        "jobgate_iam_region_answers_total{answer=\"known\"} %" PRIu64 "\n"
        "jobgate_iam_region_answers_total{answer=\"unknown\"} %" PRIu64 "\n"
        "jobgate_iam_region_answers_total{answer=\"failed\"} %" PRIu64 "\n"
        "# HELP jobgate_iam_region_served_total Region lookups answered without calling IAM: from the process's "
        "map, or from the map shared in Redis.\n"
        "# TYPE jobgate_iam_region_served_total counter\n"
        "jobgate_iam_region_served_total{from=\"memory\"} %" PRIu64 "\n"
        "jobgate_iam_region_served_total{from=\"redis\"} %" PRIu64 "\n",
        IAM(METRICS_IAM_REGION_CALLS), IAM(METRICS_IAM_REGION_KNOWN), IAM(METRICS_IAM_REGION_UNKNOWN),
        IAM(METRICS_IAM_REGION_FAILED), IAM(METRICS_IAM_REGION_FROM_MEMORY), IAM(METRICS_IAM_REGION_FROM_REDIS));
#undef IAM
}

void metrics_free(struct metrics *m)
{
    if (!m)
        return;
    munmap(m->r, sizeof(*m->r)); /* this process's mapping; the others keep theirs */
    free(m);
}
