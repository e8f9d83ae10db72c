#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

struct histogram {
    uint64_t buckets[NBUCKETS + 1]; /* last: +Inf */
    uint64_t count;
    int64_t sum_us;
};

struct route_counters {
    char *name;
    uint64_t requests[NSTATUS + 1][OUTCOME__COUNT];
    uint64_t upstream_status[600];
    uint64_t upstream_fault[FAULT__COUNT];
};

struct metrics {
    struct route_counters *routes;
    size_t nroutes;
    struct histogram request_latency;
    struct histogram upstream_latency;
    uint64_t events[EVENT__COUNT];
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
};
_Static_assert(sizeof(event_names) / sizeof(event_names[0]) == EVENT__COUNT, "an event has no name");

const char *metrics_event_name(enum metrics_event e)
{
    return (e >= 0 && e < EVENT__COUNT) ? event_names[e] : "unknown";
}

void metrics_count_event(struct metrics *m, enum metrics_event e)
{
    if (e >= 0 && e < EVENT__COUNT)
        m->events[e]++;
}

struct metrics *metrics_new(void)
{
    return calloc(1, sizeof(struct metrics));
}

/* The counters of `name`, added on first use (rule names are few). */
static struct route_counters *route_of(struct metrics *m, const char *name)
{
    for (size_t i = 0; i < m->nroutes; i++)
        if (strcmp(m->routes[i].name, name) == 0)
            return &m->routes[i];
    struct route_counters *grown = realloc(m->routes, (m->nroutes + 1) * sizeof(*grown));
    if (!grown)
        return NULL;
    m->routes = grown;
    struct route_counters *r = &m->routes[m->nroutes];
    memset(r, 0, sizeof(*r));
    r->name = strdup(name);
    if (!r->name)
        return NULL;
    m->nroutes++;
    return r;
}

static void observe(struct histogram *h, int64_t us)
{
    size_t i = 0;
    while (i < NBUCKETS && us > bucket_us[i])
        i++;
    h->buckets[i]++;
    h->count++;
    h->sum_us += us;
}

void metrics_count_request(struct metrics *m, const char *route, int status, enum cache_outcome outcome,
                           int64_t elapsed_us)
{
    struct route_counters *r = route_of(m, route);
    if (r)
        r->requests[statuses_index(status)][outcome]++;
    observe(&m->request_latency, elapsed_us);
}

void metrics_count_upstream(struct metrics *m, const char *route, int status, enum upstream_fault fault,
                            int64_t elapsed_us)
{
    struct route_counters *r = route_of(m, route);
    if (r) {
        if (fault != FAULT_NONE)
            r->upstream_fault[fault]++;
        else if (status >= 100 && status < 600)
            r->upstream_status[status]++;
    }
    observe(&m->upstream_latency, elapsed_us);
}

static void render_histogram(const struct histogram *h, const char *name, const char *help, struct evbuffer *out)
{
    evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    uint64_t cumulative = 0;
    for (size_t i = 0; i < NBUCKETS; i++) {
        cumulative += h->buckets[i];
        evbuffer_add_printf(out, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", name, (double)bucket_us[i] / 1e6, cumulative);
    }
    cumulative += h->buckets[NBUCKETS];
    evbuffer_add_printf(out, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", name, cumulative);
    evbuffer_add_printf(out, "%s_sum %.6f\n%s_count %" PRIu64 "\n", name, (double)h->sum_us / 1e6, name, h->count);
}

void metrics_render(const struct metrics *m, const struct cache_health *cache, uint64_t in_flight, struct evbuffer *out)
{
    evbuffer_add_printf(out, "# HELP jobgate_requests_total Answered requests by route, status and cache result.\n"
                             "# TYPE jobgate_requests_total counter\n");
    for (size_t i = 0; i < m->nroutes; i++) {
        const struct route_counters *r = &m->routes[i];
        for (size_t s = 0; s <= NSTATUS; s++) {
            for (int o = 0; o < OUTCOME__COUNT; o++) {
                if (!r->requests[s][o])
                    continue;
                char status[8];
                if (s < NSTATUS)
                    snprintf(status, sizeof(status), "%d", statuses_table[s]);
                else
                    snprintf(status, sizeof(status), "other");
                evbuffer_add_printf(out,
                                    "jobgate_requests_total{route=\"%s\",status=\"%s\",cache=\"%s\"} %" PRIu64 "\n",
                                    r->name, status, cache_outcome_name((enum cache_outcome)o), r->requests[s][o]);
            }
        }
    }

    evbuffer_add_printf(
        out, "# HELP jobgate_upstream_requests_total Upstream calls by route and HTTP status or transport fault.\n"
             "# TYPE jobgate_upstream_requests_total counter\n");
    for (size_t i = 0; i < m->nroutes; i++) {
        const struct route_counters *r = &m->routes[i];
        for (int s = 100; s < 600; s++)
            if (r->upstream_status[s])
                evbuffer_add_printf(out, "jobgate_upstream_requests_total{route=\"%s\",status=\"%d\"} %" PRIu64 "\n",
                                    r->name, s, r->upstream_status[s]);
        for (int f = 1; f < FAULT__COUNT; f++)
            if (r->upstream_fault[f])
                evbuffer_add_printf(out, "jobgate_upstream_requests_total{route=\"%s\",status=\"%s\"} %" PRIu64 "\n",
                                    r->name, fault_name((enum upstream_fault)f), r->upstream_fault[f]);
    }

    evbuffer_add_printf(out, "# HELP jobgate_events_total What happened to requests besides their answer "
                             "(metrics.h lists the events).\n# TYPE jobgate_events_total counter\n");
    for (int e = 0; e < EVENT__COUNT; e++)
        evbuffer_add_printf(out, "jobgate_events_total{event=\"%s\"} %" PRIu64 "\n",
                            metrics_event_name((enum metrics_event)e), m->events[e]);

    render_histogram(&m->request_latency, "jobgate_request_duration_seconds", "Time from request to answer.", out);
    render_histogram(&m->upstream_latency, "jobgate_upstream_duration_seconds", "Time of upstream calls.", out);

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
                        cache->backend, cache->up, cache->errors, cache->timeouts, cache->reconnects, cache->entries,
                        cache->bytes, in_flight);
    evbuffer_add_printf(out,
                        "# HELP jobgate_cache_rejected_total Entries read from Redis and not served: not jobgate's "
                        "format, a bad MAC, another job, or a state that disagrees with its slot.\n"
                        "# TYPE jobgate_cache_rejected_total counter\njobgate_cache_rejected_total %" PRIu64 "\n",
                        cache->rejected);
}

void metrics_free(struct metrics *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->nroutes; i++)
        free(m->routes[i].name);
    free(m->routes);
    free(m);
}
