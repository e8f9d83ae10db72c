#include <fcntl.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <cjson/cJSON.h>
#include <event2/keyvalq_struct.h>

#include "audit.h"
#include "cache.h"
#include "clientkeys.h"
#include "clock.h"
#include "credentials.h"
#include "gateway.h"
#include "guard.h"
#include "keymap.h"
#include "log.h"
#include "metrics.h"
#include "reply.h"
#include "rules.h"
#include "tokengrant.h"
#include "upstream.h"

#define KEY_MAX        1400
#define URL_MAX        2200
#define REQUEST_ID_MAX 64

struct flight;

/* One client request, from arrival to answer. Owned by the gateway (on its
 * `live` list) until answered; a request whose cache lookup is still out
 * when it is aborted stays allocated until that lookup calls back. */
struct job_request {
    struct gateway *gw;
    struct evhttp_request *req;  /* NULL once answered */
    struct ruleset *rules;       /* the reference this request holds */
    struct clientkeys *keys;     /* the key set it was checked against (a reference), or NULL */
    const struct client *client; /* who asked (owned by `keys`), NULL when not authenticated */
    struct body *stale;          /* a stale copy to fall back on (a reference), or NULL */
    const struct rule *rule;
    struct flight *flight;
    struct event *gone_watch; /* while waiting on a flight: fires when the client hangs up */
    int64_t wait_deadline_us; /* while waiting on a flight: answered 504 after this */
    enum cache_outcome outcome;
    int in_lookup;
    int64_t started_us;
    int64_t started_wall_ms;
    int upstream_status; /* of the upstream call that answered it, 0: none */
    int64_t upstream_us; /* its duration, -1: none */
    int denied;          /* refused by client authentication (401/403) */
    TAILQ_ENTRY(job_request) live_link;
    TAILQ_ENTRY(job_request) wait_link;
    /* The buffers last: a request is reset up to here (job_request_new),
     * and they are always written before they are read. */
    char request_id[REQUEST_ID_MAX + 1];
    char token_hash[TOKENGRANT_HASH_SIZE]; /* pass-through: the client token's hash; "" otherwise */
    char key[KEY_MAX];
    struct route_match match;
};
TAILQ_HEAD(job_request_list, job_request);

/* One upstream call for a key, shared by every request that missed on it
 * meanwhile: a burst of pollers costs the upstream one request. */
struct flight {
    struct keymap_item item;                             /* item.key == flight_key */
    char key[KEY_MAX];                                   /* the cache key */
    char flight_key[KEY_MAX + 1 + TOKENGRANT_HASH_SIZE]; /* pass-through: one call per key and token */
    char token_hash[TOKENGRANT_HASH_SIZE];
    char project[ROUTE_MAX_PATH + 1];
    char request_id[REQUEST_ID_MAX + 1]; /* of the request that started it: sent upstream */
    struct gateway *gw;
    struct ruleset *rules;
    const struct rule *rule;
    struct upstream_call *call;
    char expected_id[ROUTE_MAX_PATH + 1];
    struct upstream_guard *guard;       /* of this flight's upstream */
    struct body *stale;                 /* the last still-changing answer, past its TTL (a reference), or NULL */
    struct cache_pending *pending;      /* the shared lease asked for, or the wait for its holder's answer */
    int lease_held;                     /* this process holds the key's lease: store or release it */
    struct credentials_wait *cred_wait; /* jobgate's credentials being fetched (IAM) */
    uint64_t token_id;                  /* the IAM token sent, for credentials_token_rejected */
    int renewed;                        /* the call was sent again after the cloud refused an expired token */
    struct event *admit_timer;          /* waiting for a token of the upstream's rate limit */
    int64_t queued_until_ms;            /* give up waiting for a token after this (monotonic) */
    int stored;                         /* an answer was stored (which releases the lease) */
    int admitted;                       /* the guard let the call go: its end must be reported */
    char url[URL_MAX];
    char client_token[4096];         /* pass-through: the token sent upstream (secret; wiped when freed) */
    struct job_request_list waiters; /* in arrival order, hence in deadline order */
    size_t nwaiters;
    struct event *wait_timer; /* armed for the first waiter's deadline */
};

/* The protections of one upstream (by base URL): rate limit, 429 backoff,
 * circuit breaker. */
struct upstream_guard {
    struct keymap_item item; /* key: base URL */
    char *base_url;
    struct guard *g;
};

struct gateway {
    struct job_request *spare[64]; /* released requests kept for reuse: a hit allocates nothing */
    size_t nspare;
    struct event_base *base;
    struct ruleset *rules;
    struct cache *cache;
    struct upstream *upstream;
    struct metrics *metrics;
    char *key_prefix;
    char *upstream_url;
    char *upstream_token;
    struct clientkeys *client_keys;
    struct credentials *credentials; /* borrowed; NULL: pass-through unless upstream_token */
    struct audit *audit;             /* borrowed; NULL: no audit log */
    size_t max_uri_bytes;
    size_t max_header_bytes;
    struct tokengrant *token_grants; /* pass-through mode only */
    int64_t passthrough_window_ms;
    size_t max_waiters;
    int64_t max_wait_ms;
    int watch_hangups; /* the loop can tell a peer's close apart from data (EV_CLOSED) */
    struct keymap flights;
    struct keymap guards;         /* struct upstream_guard by base URL */
    struct guard_conf guard_conf; /* for guards made from now on */
    int64_t rate_queue_ms;        /* how long a call may wait for a rate-limit token */
    struct job_request_list live;
    struct job_request_list orphans; /* answered at shutdown, cache lookup still out */
    size_t in_flight;
    int draining;
    void (*on_idle)(void *arg);
    void *on_idle_arg;
};

/* ------------------------------------------------------------ request ids */

static uint64_t request_id_seed[2];
static uint64_t request_id_counter;

void gateway_new_request_id(char *buf, size_t len)
{
    if (!request_id_seed[0] && !request_id_seed[1]) {
        int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
        if (fd < 0 || read(fd, request_id_seed, sizeof(request_id_seed)) != (ssize_t)sizeof(request_id_seed)) {
            request_id_seed[0] = (uint64_t)clock_mono_us();
            request_id_seed[1] = (uint64_t)getpid() * 0x9E3779B97F4A7C15ULL;
        }
        if (fd >= 0)
            close(fd);
    }
    /* Unique per process and counter; the random part keeps them unique across restarts and workers. */
    uint64_t half[2] = {request_id_seed[0], request_id_seed[1] ^ ++request_id_counter};
    static const char hex[] = "0123456789abcdef";
    if (len < 33) {
        if (len)
            buf[0] = '\0';
        return;
    }
    for (int h = 0; h < 2; h++) /* by hand: snprintf cost more than the rest of a hit's bookkeeping */
        for (int i = 0; i < 16; i++)
            buf[h * 16 + i] = hex[(half[h] >> (60 - 4 * i)) & 15];
    buf[32] = '\0';
}

/* A client's X-Request-Id is kept when it is safe to echo in headers and logs. */
static int request_id_acceptable(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > REQUEST_ID_MAX)
        return 0;
    for (const char *c = id; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '-' ||
              *c == '_' || *c == '.' || *c == ':'))
            return 0;
    return 1;
}

/* -------------------------------------------------------------- answering */

static struct reply_meta meta_of(const struct job_request *jr)
{
    return (struct reply_meta){
        .request_id = jr->request_id, .outcome = jr->outcome, .age_s = -1, .close_connection = jr->gw->draining};
}

/* The request is over (answered, or its client gone): let it go. */
static void job_request_release(struct job_request *jr)
{
    struct gateway *gw = jr->gw;
    jr->req = NULL;
    gw->in_flight--;
    TAILQ_REMOVE(&gw->live, jr, live_link);
    ruleset_unref(jr->rules);
    clientkeys_unref(jr->keys);
    body_unref(jr->stale);
    if (gw->nspare < sizeof(gw->spare) / sizeof(gw->spare[0]))
        gw->spare[gw->nspare++] = jr;
    else
        free(jr);
    if (gw->draining && gw->in_flight == 0 && gw->on_idle)
        gw->on_idle(gw->on_idle_arg);
}

/* The request has been answered: count it and let it go. */
static void job_request_done(struct job_request *jr, int status)
{
    metrics_count_request(jr->gw->metrics, jr->rule ? jr->rule->name : "none", status, jr->outcome,
                          clock_mono_us() - jr->started_us);
    job_request_release(jr);
}

/* The request's parameter named `name`, or NULL. */
static const char *param_value(const struct job_request *jr, int index)
{
    return jr->rule && index >= 0 && (size_t)index < jr->match.nvalues ? jr->match.values[index] : NULL;
}

/* One line in the audit log for `jr`, answered `status` with `bytes` of
 * body (status 0: never answered, the client went away). Called before the
 * reply hands the request back to evhttp. */
static void audit_request(struct job_request *jr, int status, uint64_t bytes)
{
    struct gateway *gw = jr->gw;
    if (!gw->audit)
        return;
    struct evhttp_request *req = jr->req;
    struct evhttp_connection *evcon = req ? evhttp_request_get_connection(req) : NULL;
    char source[80] = "";
    if (evcon) {
        char *addr = NULL;
        ev_uint16_t port = 0;
        evhttp_connection_get_peer(evcon, &addr, &port);
        snprintf(source, sizeof(source), strchr(addr ? addr : "", ':') ? "[%s]:%u" : "%s:%u", addr ? addr : "",
                 (unsigned)port);
    }
    const struct evhttp_uri *uri = req ? evhttp_request_get_evhttp_uri(req) : NULL;
    const char *method = "OTHER";
    switch (req ? evhttp_request_get_command(req) : EVHTTP_REQ_GET) {
    case EVHTTP_REQ_GET: method = "GET"; break;
    case EVHTTP_REQ_HEAD: method = "HEAD"; break;
    case EVHTTP_REQ_POST: method = "POST"; break;
    case EVHTTP_REQ_PUT: method = "PUT"; break;
    case EVHTTP_REQ_DELETE: method = "DELETE"; break;
    default: break;
    }
    const char *job = NULL;
    if (jr->rule)
        job = param_value(jr, jr->rule->identity_param >= 0 ? jr->rule->identity_param
                                                            : route_template_param_index(&jr->rule->route, "job_id"));
    struct audit_record r = {
        .wall_ms = jr->started_wall_ms,
        .request_id = jr->request_id,
        .client = jr->client ? jr->client->name : NULL,
        .source = source[0] ? source : NULL,
        .method = method,
        .path = uri ? evhttp_uri_get_path(uri) : NULL,
        .project_id = jr->rule ? param_value(jr, jr->rule->project_param) : NULL,
        .job_id = job,
        .cache = status == 0  ? "CLIENT_GONE"
                 : jr->denied ? "DENIED"
                              : cache_outcome_name(jr->outcome),
        .upstream_status = jr->upstream_status,
        .upstream_us = jr->upstream_us,
        .status = status,
        .bytes_sent = bytes,
    };
    if (audit_write(gw->audit, &r) < 0)
        metrics_count_event(gw->metrics, EVENT_AUDIT_DROPPED);
}

static void answer_error(struct job_request *jr, const struct client_error *e)
{
    struct reply_meta meta = meta_of(jr);
    if (jr->gw->audit) {
        char *text = client_error_render(e, jr->request_id);
        int head = evhttp_request_get_command(jr->req) == EVHTTP_REQ_HEAD;
        audit_request(jr, e->status, text && !head ? strlen(text) : 0);
        cJSON_free(text);
    }
    reply_error(jr->req, e, &meta);
    job_request_done(jr, e->status);
}

static void answer_job(struct job_request *jr, struct body *b, int hit)
{
    struct reply_meta meta = meta_of(jr);
    audit_request(jr, b->status, evhttp_request_get_command(jr->req) == EVHTTP_REQ_HEAD ? 0 : b->len);
    if (hit) {
        int64_t age_ms = clock_wall_ms() - b->stored_at_ms;
        meta.age_s = age_ms > 0 ? age_ms / 1000 : 0;
    }
    reply_job(jr->req, b, &meta);
    job_request_done(jr, b->status);
}

/* ---------------------------------------------------------------- waiters */

static void arm_wait_timer(struct flight *f)
{
    struct job_request *first = TAILQ_FIRST(&f->waiters);
    if (!first || !f->wait_timer)
        return;
    int64_t us = first->wait_deadline_us - clock_mono_us();
    if (us < 0)
        us = 0;
    struct timeval tv = {(time_t)(us / 1000000), (suseconds_t)(us % 1000000)};
    evtimer_add(f->wait_timer, &tv);
}

/* Take `jr` off its flight's waiters (it is being answered, or is gone). */
static void waiter_unlink(struct job_request *jr)
{
    struct flight *f = jr->flight;
    if (!f)
        return;
    int was_first = TAILQ_FIRST(&f->waiters) == jr;
    TAILQ_REMOVE(&f->waiters, jr, wait_link);
    f->nwaiters--;
    jr->flight = NULL;
    if (jr->gone_watch) {
        event_free(jr->gone_watch);
        jr->gone_watch = NULL;
    }
    if (was_first && f->wait_timer) {
        evtimer_del(f->wait_timer);
        arm_wait_timer(f);
    }
}

/* The client hung up while its request waited for upstream: forget it at
 * once (it is never written to) and close our side. The upstream call goes
 * on: its answer is cached for the next poller. evhttp 2.1 does not read a
 * connection while a request on it is being served, so it would only notice
 * when the answer failed to write; this event watches for the peer's FIN. */
static void on_client_gone(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct job_request *jr = arg;
    struct gateway *gw = jr->gw;
    struct evhttp_connection *evcon = evhttp_request_get_connection(jr->req);
    waiter_unlink(jr);
    metrics_count_event(gw->metrics, EVENT_WAITER_GONE);
    log_debug("request %s: client closed its connection while waiting for upstream", jr->request_id);
    audit_request(jr, 0, 0);
    job_request_release(jr);
    if (evcon)
        evhttp_connection_free(evcon); /* frees the request too */
}

static void watch_for_hangup(struct job_request *jr)
{
    struct gateway *gw = jr->gw;
    struct evhttp_connection *evcon = gw->watch_hangups ? evhttp_request_get_connection(jr->req) : NULL;
    struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
    evutil_socket_t fd = bev ? bufferevent_getfd(bev) : -1;
    if (fd < 0)
        return;
    jr->gone_watch = event_new(gw->base, fd, EV_CLOSED, on_client_gone, jr);
    if (jr->gone_watch && event_add(jr->gone_watch, NULL) < 0) {
        event_free(jr->gone_watch);
        jr->gone_watch = NULL;
    }
}

static void answer_error(struct job_request *jr, const struct client_error *e);
static void answer_stale(struct job_request *jr, struct body *b);

/* Waiters past coalesce.max_wait are answered 504; the call goes on for the rest. */
static void on_wait_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct flight *f = arg;
    int64_t now = clock_mono_us();
    struct job_request *jr;
    while ((jr = TAILQ_FIRST(&f->waiters)) != NULL && jr->wait_deadline_us <= now) {
        waiter_unlink(jr);
        metrics_count_event(f->gw->metrics, EVENT_WAITER_TIMEOUT);
        if (f->stale) {
            answer_stale(jr, f->stale);
            continue;
        }
        struct client_error err;
        errmap_from_fault(&jr->rule->errors, FAULT_TIMEOUT, &err);
        answer_error(jr, &err);
    }
    /* libevent's clock may run a little behind ours: a timer can fire just
     * before the deadline it was set for. Set it again for what is left. */
    arm_wait_timer(f);
}

/* Upstream failed, throttled or was held back: answer with the last known
 * state of the job rather than an error, saying so (X-Cache: STALE, Age). */
static void answer_stale(struct job_request *jr, struct body *b)
{
    jr->outcome = OUTCOME_STALE;
    answer_job(jr, b, 1);
}

/* --------------------------------------------------------------- upstream */

static void flight_free(struct flight *f)
{
    if (f->admitted)
        guard_result(f->guard->g, clock_mono_us() / 1000, GUARD_ABANDONED);
    if (f->pending)
        cache_cancel(f->gw->cache, f->pending);
    if (f->cred_wait)
        credentials_cancel(f->cred_wait);
    if (f->admit_timer)
        event_free(f->admit_timer);
    if (f->lease_held && !f->stored) /* others waiting on our lease need not wait for it to expire */
        cache_lease_release(f->gw->cache, f->key);
    body_unref(f->stale);
    explicit_bzero(f->client_token, sizeof(f->client_token));
    keymap_remove(&f->gw->flights, &f->item);
    if (f->wait_timer)
        event_free(f->wait_timer);
    ruleset_unref(f->rules);
    free(f);
}

/* Negative caching: keep the 404 answer (without a request id) for the
 * rule's not_found_ttl, so pollers of a job that does not exist stop
 * costing an upstream call each. */
static struct body *remember_not_found(struct flight *f, const struct client_error *err)
{
    char *text = client_error_render(err, NULL);
    if (!text)
        return NULL;
    struct body *b = body_new(text, strlen(text), clock_wall_ms(), 0);
    cJSON_free(text);
    if (!b)
        return NULL;
    b->status = 404;
    cache_put(f->gw->cache, f->key, b, f->rule->not_found_ttl_ms, 0);
    f->stored = 1;
    return b;
}

/* Turn the upstream's answer into a job body to cache (or a remembered 404), or an error. */
static struct body *judge_answer(struct flight *f, const struct upstream_response *resp, struct client_error *err)
{
    const struct rule *rule = f->rule;
    if (resp->fault != FAULT_NONE) {
        log_warn("upstream %s for rule %s, key %s: %s", fault_name(resp->fault), rule->name, f->key,
                 resp->fault_detail);
        errmap_from_fault(&rule->errors, resp->fault, err);
        return NULL;
    }
    if (resp->status != 200) {
        errmap_from_upstream(&rule->errors, resp->status, resp->body, resp->len, err);
        log_info("upstream answered %d for rule %s, key %s: sent %d %s", resp->status, rule->name, f->key, err->status,
                 err->code);
        if (resp->status == 404 && err->status == 404 && rule->not_found_ttl_ms > 0)
            return remember_not_found(f, err);
        return NULL;
    }
    char state[64];
    enum job_class cls = classify_body(&rule->job, resp->body, resp->len, f->expected_id, state, sizeof(state));
    if (cls != JOB_TERMINAL && cls != JOB_PENDING) {
        /* Not a job, another job, or a body parsers read differently: a bad body, never cached. */
        enum upstream_fault fault = cls == JOB_OTHER_JOB ? FAULT_WRONG_JOB : FAULT_BAD_BODY;
        log_warn("upstream 200 for rule %s, key %s is %s: not cached", rule->name, f->key, job_class_name(cls));
        errmap_from_fault(&rule->errors, fault, err);
        return NULL;
    }
    int terminal = cls == JOB_TERMINAL;
    struct body *b = body_new(resp->body, resp->len, clock_wall_ms(), terminal);
    if (!b) {
        errmap_from_fault(&rule->errors, FAULT_INTERNAL, err);
        return NULL;
    }
    int64_t ttl_ms = terminal ? rule->terminal_ttl_ms : rule->pending_ttl_ms;
    cache_put(f->gw->cache, f->key, b, ttl_ms, terminal ? 0 : rule->stale_ttl_ms);
    f->stored = 1;
    log_debug("upstream 200 for key %s: state %s (%s)", f->key, state, job_class_name(cls));
    return b;
}

/* Tell the upstream's guard how the call it admitted ended. */
static void report_to_guard(struct flight *f, const struct upstream_response *resp)
{
    int64_t now = clock_mono_us() / 1000;
    f->admitted = 0;
    if (resp->fault == FAULT_NONE && resp->status == 429) {
        guard_throttled(f->guard->g, now, resp->retry_after > 0 ? (int)resp->retry_after : 0);
        log_warn("upstream %s throttles (429): no calls to it for a while", f->guard->base_url);
        return;
    }
    enum guard_outcome o = GUARD_SUCCESS;
    if (resp->fault != FAULT_NONE && resp->fault != FAULT_BAD_BODY && resp->fault != FAULT_WRONG_JOB &&
        resp->fault != FAULT_OVERSIZED)
        o = GUARD_TRANSPORT_FAILURE; /* a body it did send, however wrong, proves it alive */
    else if (resp->fault == FAULT_NONE && resp->status >= 500)
        o = GUARD_UPSTREAM_5XX;
    guard_result(f->guard->g, now, o);
}

/* No upstream answer to share: answer every waiter of `f` with the stale
 * copy when there is one and `stale_ok` (upstream failed rather than
 * judged), else with `err`; then free the flight. */
static void flight_fail(struct flight *f, const struct client_error *err, int stale_ok)
{
    struct job_request *jr;
    if (stale_ok && f->stale)
        log_info("serving key %s stale (age %llds): %s", f->key,
                 (long long)((clock_wall_ms() - f->stale->stored_at_ms) / 1000), err->code);
    while ((jr = TAILQ_FIRST(&f->waiters)) != NULL) {
        waiter_unlink(jr);
        if (stale_ok && f->stale)
            answer_stale(jr, f->stale);
        else
            answer_error(jr, err);
    }
    flight_free(f);
}

static void flight_call(struct flight *f);

static void on_upstream_done(const struct upstream_response *resp, void *arg)
{
    struct flight *f = arg;
    struct gateway *gw = f->gw;
    f->call = NULL;
    metrics_count_upstream(gw->metrics, f->rule->name, resp->status, resp->fault, resp->elapsed_us);
    report_to_guard(f, resp);

    if (f->token_hash[0] && gw->token_grants && resp->fault == FAULT_NONE) {
        /* The cloud has judged this token for this project. A 404 passed its authentication too. */
        if (resp->status == 200 || resp->status == 404)
            tokengrant_accepted(gw->token_grants, f->token_hash, f->project, clock_mono_us() / 1000);
        else if (resp->status == 401 || resp->status == 403)
            tokengrant_refused(gw->token_grants, f->token_hash, f->project);
    }
    struct client_error err;
    struct body *b = judge_answer(f, resp, &err);
    if (!b && resp->fault == FAULT_NONE && resp->status == 401 && gw->credentials && f->token_id &&
        strcmp(err.code, "APIGW.0307") == 0) {
        /* jobgate's IAM token expired early (credentials changed): get a new one
         * and ask once more; the client cannot fix jobgate's token. */
        credentials_token_rejected(gw->credentials, f->project[0] ? f->project : NULL, f->token_id);
        if (!f->renewed) {
            f->renewed = 1;
            log_info("upstream refused jobgate's token for key %s as expired: renewing it", f->key);
            flight_call(f);
            return;
        }
    }
    /* For the audit log: the call that answered them. */
    struct job_request *w;
    TAILQ_FOREACH (w, &f->waiters, wait_link) {
        w->upstream_status = resp->fault == FAULT_NONE ? resp->status : 0;
        w->upstream_us = resp->elapsed_us;
    }
    if (!b) {
        /* A failing upstream (a transport fault, a 5xx or 429, a 200 that is no
         * usable job), not a verdict on the job or the token: the stale copy may stand in. */
        int failed = resp->fault != FAULT_NONE || resp->status >= 500 || resp->status == 429 || resp->status == 200;
        flight_fail(f, &err, failed);
        return;
    }
    struct job_request *jr;
    while ((jr = TAILQ_FIRST(&f->waiters)) != NULL) {
        waiter_unlink(jr);
        answer_job(jr, b, 0);
    }
    body_unref(b);
    flight_free(f);
}

/* The token sent upstream: jobgate's own when configured, else the client's. */
static const char *upstream_token_for(const struct gateway *gw, struct evhttp_request *req)
{
    if (gw->credentials && credentials_mode(gw->credentials) == CRED_TOKEN)
        return gw->upstream_token; /* as the configuration says now: a reload picks up a rotated token */
    if (gw->credentials)
        return credentials_mode(gw->credentials) == CRED_PASSTHROUGH
                   ? evhttp_find_header(evhttp_request_get_input_headers(req), "X-Auth-Token")
                   : NULL;
    if (gw->upstream_token)
        return gw->upstream_token;
    return evhttp_find_header(evhttp_request_get_input_headers(req), "X-Auth-Token");
}

/* Is the client's own X-Auth-Token what goes upstream? */
static int pass_through(const struct gateway *gw)
{
    return gw->credentials ? credentials_mode(gw->credentials) == CRED_PASSTHROUGH : gw->upstream_token == NULL;
}

/* The guard of the upstream at `base_url`, made on first use. */
static struct upstream_guard *guard_of(struct gateway *gw, const char *base_url)
{
    struct upstream_guard *ug = (struct upstream_guard *)keymap_get(&gw->guards, base_url);
    if (ug)
        return ug;
    char err[256];
    ug = calloc(1, sizeof(*ug));
    if (!ug || !(ug->base_url = strdup(base_url)) || !(ug->g = guard_new(&gw->guard_conf, err, sizeof(err)))) {
        if (ug)
            free(ug->base_url);
        free(ug);
        return NULL;
    }
    ug->item.key = ug->base_url;
    if (keymap_put(&gw->guards, &ug->item) < 0) {
        guard_free(ug->g);
        free(ug->base_url);
        free(ug);
        return NULL;
    }
    return ug;
}

/* The answer for a call the guard refused: 503 with Retry-After, from the
 * table, never an upstream error the client would not retry. */
static void refusal_error(struct guard_verdict v, struct client_error *err)
{
    switch (v.refusal) {
    case GUARD_THROTTLED:
        client_error_set(err, 503, "JG.UPSTREAM_THROTTLED", "the cloud API is throttling jobgate; retry later");
        break;
    case GUARD_CIRCUIT_OPEN:
        client_error_set(err, 503, "JG.UPSTREAM_UNAVAILABLE",
                         "the cloud API is failing; jobgate waits before trying it again");
        break;
    default:
        client_error_set(err, 503, "JG.UPSTREAM_RATE_LIMITED",
                         "jobgate's rate limit for the cloud API is reached; retry later");
        break;
    }
    err->retry_after = v.retry_after_s > 0 ? v.retry_after_s : 1;
}

/* Requests share an upstream call when they ask for the same key, and in
 * pass-through mode present the same token: another token must be judged
 * by the cloud itself. */
static void flight_key_of(const struct job_request *jr, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s%s%s", jr->key, jr->token_hash[0] ? "#" : "", jr->token_hash);
}

static struct flight *flight_start(struct job_request *jr)
{
    struct gateway *gw = jr->gw;
    const struct rule *rule = jr->rule;
    struct flight *f = calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    f->gw = gw;
    memcpy(f->key, jr->key, sizeof(f->key));
    flight_key_of(jr, f->flight_key, sizeof(f->flight_key));
    f->item.key = f->flight_key;
    memcpy(f->token_hash, jr->token_hash, sizeof(f->token_hash));
    if (rule->project_param >= 0)
        snprintf(f->project, sizeof(f->project), "%s", jr->match.values[rule->project_param]);
    f->rules = ruleset_ref(jr->rules);
    f->rule = rule;
    TAILQ_INIT(&f->waiters);
    f->wait_timer = evtimer_new(gw->base, on_wait_timer, f);
    if (!f->wait_timer) {
        ruleset_unref(f->rules);
        free(f);
        return NULL;
    }
    if (rule->identity_param >= 0)
        snprintf(f->expected_id, sizeof(f->expected_id), "%s", jr->match.values[rule->identity_param]);

    /* The upstream path is the route with its validated values: nothing else
     * of the client's request (query string, extra headers) goes upstream. */
    const char *base = gw->upstream_url ? gw->upstream_url : rule->upstream_url;
    int n = snprintf(f->url, sizeof(f->url), "%s", base);
    const char *token = upstream_token_for(gw, jr->req);
    if (token)
        snprintf(f->client_token, sizeof(f->client_token), "%s", token);
    snprintf(f->request_id, sizeof(f->request_id), "%s", jr->request_id);
    f->guard = guard_of(gw, base);
    if (n < 0 || (size_t)n >= sizeof(f->url) || !f->guard ||
        rule_upstream_path(rule, &jr->match, f->url + n, sizeof(f->url) - (size_t)n) < 0 ||
        keymap_put(&gw->flights, &f->item) < 0) {
        explicit_bzero(f->client_token, sizeof(f->client_token));
        event_free(f->wait_timer);
        ruleset_unref(f->rules);
        free(f);
        return NULL;
    }
    return f;
}

/* Send the flight's call upstream, if the upstream's guard lets it go. On
 * refusal (rate limit, 429 backoff, open circuit) every waiter is answered
 * from the stale copy, or 503 with Retry-After, and the flight ends. */

static void on_admit_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    flight_call(arg); /* credentials again (cheap unless IAM must be asked), then the guard */
}

/* The rate limit has no token now but will within `wait_ms`: wait for it
 * (at most rate_queue_ms from the first refusal) rather than fail the
 * waiters; many SDKs give up on the first error, even a retryable one.
 * Returns 1 if the flight now waits. */
static int queue_for_token(struct flight *f, int64_t now_ms, int64_t wait_ms)
{
    struct gateway *gw = f->gw;
    if (gw->rate_queue_ms <= 0)
        return 0;
    if (!f->queued_until_ms)
        f->queued_until_ms = now_ms + gw->rate_queue_ms;
    if (now_ms + wait_ms > f->queued_until_ms)
        return 0;
    if (!f->admit_timer && !(f->admit_timer = evtimer_new(gw->base, on_admit_timer, f)))
        return 0;
    struct timeval tv = {(time_t)(wait_ms / 1000), (suseconds_t)((wait_ms % 1000) * 1000 + 500)};
    evtimer_add(f->admit_timer, &tv);
    return 1;
}

static void flight_send(struct flight *f, char *const *auth_headers, size_t nauth_headers)
{
    struct gateway *gw = f->gw;
    const struct rule *rule = f->rule;
    int64_t now_ms = clock_mono_us() / 1000;
    struct guard_verdict v = guard_admit(f->guard->g, f->project[0] ? f->project : NULL, now_ms);
    if (v.refusal == GUARD_RATE_LIMITED && queue_for_token(f, now_ms, v.wait_ms))
        return; /* as nginx's limit_req with a burst: delayed, not refused */
    if (v.refusal != GUARD_ADMITTED) {
        struct client_error err;
        refusal_error(v, &err);
        metrics_count_event(gw->metrics, v.refusal == GUARD_RATE_LIMITED ? EVENT_UPSTREAM_RATE_LIMITED
                                         : v.refusal == GUARD_THROTTLED  ? EVENT_UPSTREAM_THROTTLED
                                                                         : EVENT_UPSTREAM_CIRCUIT_OPEN);
        log_info("not calling %s for key %s: %s (retry after %d s)", f->guard->base_url, f->key,
                 guard_refusal_name(v.refusal), v.retry_after_s);
        flight_fail(f, &err, 1);
        return;
    }
    f->admitted = 1;
    struct upstream_request ureq = {
        .url = f->url,
        .request_id = f->request_id,
        .auth_token = f->client_token[0] ? f->client_token : NULL,
        .auth_headers = auth_headers,
        .nauth_headers = nauth_headers,
        .connect_timeout_ms = rule->connect_timeout_ms,
        .timeout_ms = rule->timeout_ms,
        .add_headers = rule->add_headers,
        .nadd_headers = rule->nadd_headers,
        .drop_headers = rule->drop_headers,
        .ndrop_headers = rule->ndrop_headers,
    };
    f->call = upstream_fetch(gw->upstream, &ureq, on_upstream_done, f);
    if (!f->call) {
        struct client_error err;
        errmap_from_fault(&rule->errors, FAULT_INTERNAL, &err);
        flight_fail(f, &err, 1);
    }
}

static void on_credentials(const struct credentials_result *r, void *arg)
{
    struct flight *f = arg;
    f->cred_wait = NULL;
    if (r->status != CREDENTIALS_OK) {
        /* jobgate cannot prove who it is: the cloud is not asked, the client may retry later. */
        log_warn("no upstream credentials for key %s: %s", f->key, r->reason ? r->reason : "unknown");
        struct client_error err;
        client_error_set(&err, 503, "JG.NO_CREDENTIALS",
                         "jobgate cannot authenticate to the cloud API now; retry later");
        err.retry_after = 5;
        flight_fail(f, &err, 1);
        return;
    }
    f->token_id = r->token_id;
    flight_send(f, r->headers, r->nheaders);
}

/* Call upstream with jobgate's own credentials when it holds them (which may
 * first need a token from IAM), else with the client's token. */
static void flight_call(struct flight *f)
{
    struct credentials *c = f->gw->credentials;
    if (!c || credentials_mode(c) == CRED_PASSTHROUGH || credentials_mode(c) == CRED_TOKEN) {
        flight_send(f, NULL, 0);
        return;
    }
    struct credentials_wait *w =
        credentials_get(c, f->project[0] ? f->project : NULL, "GET", f->url, on_credentials, f);
    if (w) /* else it has called back already, and f may be gone */
        f->cred_wait = w;
}

/* The holder of the lease stored its answer (HIT), or went away without
 * one (MISS: lease expired or released), or the wait ran out. */
static void on_leased_answer(enum cache_status status, struct body *b, void *arg)
{
    struct flight *f = arg;
    f->pending = NULL;
    if (status != CACHE_HIT) {
        flight_call(f); /* nobody else got it: call upstream ourselves */
        return;
    }
    metrics_count_event(f->gw->metrics, EVENT_SHARED_ANSWER);
    struct job_request *jr;
    while ((jr = TAILQ_FIRST(&f->waiters)) != NULL) {
        waiter_unlink(jr);
        answer_job(jr, b, 0);
    }
    flight_free(f);
}

static void on_lease(enum cache_lease_status status, void *arg)
{
    struct flight *f = arg;
    f->pending = NULL;
    if (status == CACHE_LEASE_HELD) {
        /* Another process or instance is calling upstream for this key: wait
         * for the answer it stores, at most as long as its call may take. */
        int64_t bound = f->rule->connect_timeout_ms + f->rule->timeout_ms + 1000;
        struct cache_pending *p = cache_wait(f->gw->cache, f->key, bound, on_leased_answer, f);
        if (p) /* else it has called back already, and f may be gone */
            f->pending = p;
        return;
    }
    f->lease_held = status == CACHE_LEASE_ACQUIRED;
    flight_call(f);
}

/* Start the flight's call. With a shared cache, first take the key's lease,
 * so that one process of all those sharing the cache calls upstream. Not in
 * pass-through mode: there each token must be judged by the cloud itself. */
static void flight_go(struct flight *f)
{
    if (f->token_hash[0]) {
        flight_call(f);
        return;
    }
    int64_t lease_ms = f->rule->connect_timeout_ms + f->rule->timeout_ms + 1000;
    struct cache_pending *p = cache_lease(f->gw->cache, f->key, lease_ms, on_lease, f);
    if (p) /* else it has called back already, and f may be gone */
        f->pending = p;
}

static void join_flight(struct job_request *jr)
{
    struct gateway *gw = jr->gw;
    char flight_key[KEY_MAX + 1 + TOKENGRANT_HASH_SIZE];
    flight_key_of(jr, flight_key, sizeof(flight_key));
    struct flight *f = (struct flight *)keymap_get(&gw->flights, flight_key);
    int started = 0;
    if (!f && (f = flight_start(jr)) != NULL)
        started = 1;
    struct client_error err;
    if (!f) {
        errmap_from_fault(&jr->rule->errors, FAULT_INTERNAL, &err);
        answer_error(jr, &err);
        return;
    }
    if (f->nwaiters >= gw->max_waiters) {
        /* A bound on what one key can hold: memory, and the burst its answer releases. */
        metrics_count_event(gw->metrics, EVENT_WAITER_OVERFLOW);
        client_error_set(&err, 503, "JG.TOO_MANY_WAITERS", "too many requests are waiting for this job; retry");
        err.retry_after = 1;
        answer_error(jr, &err);
        return;
    }
    jr->flight = f;
    if (jr->stale && !f->stale)
        f->stale = body_ref(jr->stale);
    jr->wait_deadline_us = clock_mono_us() + gw->max_wait_ms * 1000;
    TAILQ_INSERT_TAIL(&f->waiters, jr, wait_link);
    if (++f->nwaiters == 1)
        arm_wait_timer(f);
    watch_for_hangup(jr);
    if (started)
        flight_go(f); /* may answer jr at once (refused by the guard) */
}

/* ------------------------------------------------------------------ cache */

/* In pass-through mode a cached answer goes only to a token the cloud
 * accepted for this project within the window. */
static int token_may_read(const struct job_request *jr)
{
    const struct gateway *gw = jr->gw;
    if (!jr->token_hash[0] || !gw->token_grants)
        return 1;
    const char *project = jr->rule->project_param >= 0 ? jr->match.values[jr->rule->project_param] : "";
    return tokengrant_valid(gw->token_grants, jr->token_hash, project, clock_mono_us() / 1000);
}

static void on_cache_result(enum cache_status status, struct body *b, void *arg)
{
    struct job_request *jr = arg;
    jr->in_lookup = 0;
    if (!jr->req) { /* answered by gateway_abort_all while the lookup was out */
        TAILQ_REMOVE(&jr->gw->orphans, jr, live_link);
        free(jr);
        return;
    }
    switch (status) {
    case CACHE_HIT:
        if (token_may_read(jr)) {
            jr->outcome = OUTCOME_HIT;
            answer_job(jr, b, 1);
            return;
        }
        jr->outcome = OUTCOME_MISS; /* this token must first be accepted upstream */
        break;
    case CACHE_STALE:
        /* Go upstream as on a miss; keep the copy for if upstream fails
         * (never for a token the cloud has not accepted). */
        if (token_may_read(jr))
            jr->stale = body_ref(b);
        jr->outcome = OUTCOME_MISS;
        break;
    case CACHE_MISS: jr->outcome = OUTCOME_MISS; break;
    case CACHE_UNAVAILABLE: jr->outcome = OUTCOME_BYPASS; break;
    }
    join_flight(jr);
}

/* ------------------------------------------------------------- the entry */

/* The request line and headers within the configured bounds? Returns 0, or
 * -1 with `err` set (400: 413, 414 and 431 are not in the documented table). */
static int request_size_ok(const struct gateway *gw, struct evhttp_request *req, struct client_error *err)
{
    const char *uri = evhttp_request_get_uri(req);
    if (gw->max_uri_bytes && uri && strlen(uri) > gw->max_uri_bytes) {
        client_error_set(err, 400, "JG.URI_TOO_LONG", "the request URI is longer than this server accepts");
        return -1;
    }
    size_t bytes = 0;
    struct evkeyval *h;
    TAILQ_FOREACH (h, evhttp_request_get_input_headers(req), next)
        bytes += strlen(h->key) + strlen(h->value) + 4;
    if (gw->max_header_bytes && bytes > gw->max_header_bytes) {
        client_error_set(err, 400, "JG.HEADERS_TOO_LARGE", "the request headers are larger than this server accepts");
        return -1;
    }
    return 0;
}

/* Checks that need no rule's help. Returns 0, or -1 with `err` set. */
static int request_acceptable(struct evhttp_request *req, struct client_error *err)
{
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    if (evbuffer_get_length(evhttp_request_get_input_buffer(req)) > 0 || evhttp_find_header(in, "Transfer-Encoding") ||
        (evhttp_find_header(in, "Content-Length") && strcmp(evhttp_find_header(in, "Content-Length"), "0") != 0)) {
        client_error_set(err, 400, "JG.BODY_REFUSED", "a job-status request has no body");
        return -1;
    }
    return 0;
}

static unsigned method_bit(enum evhttp_cmd_type cmd)
{
    switch (cmd) {
    case EVHTTP_REQ_GET: return RULE_METHOD_GET;
    case EVHTTP_REQ_HEAD: return RULE_METHOD_HEAD;
    default: return 0;
    }
}

/* Set the Allow header; returns its value (static storage). */
static const char *allow_header(struct evhttp_request *req, unsigned methods)
{
    static char allow[32];
    allow[0] = '\0';
    if (methods & RULE_METHOD_GET)
        strcat(allow, "GET");
    if (methods & RULE_METHOD_HEAD)
        strcat(allow, allow[0] ? ", HEAD" : "HEAD");
    evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", allow);
    return allow;
}

/* The cache key: prefix, rule name and the validated parameter values, in
 * route order. Nothing else a client sends can vary it. */
static int build_key(const struct gateway *gw, const struct rule *rule, const struct route_match *m, char *out,
                     size_t outlen)
{
    const char *pieces[2 + ROUTE_MAX_PARAMS];
    size_t np = 0, used = 0;
    pieces[np++] = gw->key_prefix;
    pieces[np++] = rule->name;
    for (size_t i = 0; i < rule->route.nparams; i++)
        pieces[np++] = m->values[i];
    for (size_t i = 0; i < np; i++) { /* memcpy, not snprintf: this runs on every hit */
        size_t len = strlen(pieces[i]);
        if (used + len + 2 > outlen)
            return -1;
        if (i >= 2)
            out[used++] = ':';
        memcpy(out + used, pieces[i], len);
        used += len;
    }
    out[used] = '\0';
    return 0;
}

/* Client authentication and grants, decided before any cache lookup or
 * upstream call. Returns 0, or -1 with `err` set (401 or 403). With no rule
 * (an unknown path) only the key is checked, so that a stranger learns
 * nothing of the routes. */
static int client_allowed(struct job_request *jr, struct evhttp_request *req, struct client_error *err)
{
    const char *key = NULL;
    enum clientkeys_credential cred = clientkeys_presented(evhttp_request_get_input_headers(req), &key);
    if (cred != CLIENTKEYS_CRED_PRESENT) {
        client_error_set(err, 401, "JG.UNAUTHENTICATED", clientkeys_credential_message(cred));
        return -1;
    }
    const struct rule *rule = jr->rule;
    const char *project = rule && rule->project_param >= 0 ? jr->match.values[rule->project_param] : NULL;
    enum clientkeys_verdict v = rule ? clientkeys_check(jr->keys, key, project, rule->name, &jr->client)
                                     : clientkeys_check(jr->keys, key, NULL, NULL, &jr->client);
    if (v == CLIENTKEYS_UNAUTHENTICATED) {
        client_error_set(err, 401, "JG.UNAUTHENTICATED", "the API key is not known to this gateway");
        return -1;
    }
    if (v == CLIENTKEYS_FORBIDDEN && rule) {
        client_error_set(err, 403, "JG.FORBIDDEN", "this API key is not granted this project or route");
        return -1;
    }
    return 0;
}

/* A request record, from the spare list when there is one. Not calloc: the
 * buffers at its end are a few KB, always written before they are read;
 * everything before them starts zeroed. */
static struct job_request *job_request_new(struct gateway *gw)
{
    struct job_request *jr = gw->nspare ? gw->spare[--gw->nspare] : malloc(sizeof(*jr));
    if (!jr)
        return NULL;
    memset(jr, 0, offsetof(struct job_request, request_id));
    jr->request_id[0] = jr->token_hash[0] = jr->key[0] = '\0';
    jr->match.nvalues = 0; /* read by the audit log even when no route matched */
    return jr;
}

void gateway_handle(struct gateway *gw, struct evhttp_request *req, int client_auth)
{
    struct job_request *jr = job_request_new(gw);
    if (!jr) {
        evhttp_send_error(req, 503, "Service Unavailable");
        return;
    }
    jr->gw = gw;
    jr->req = req;
    jr->rules = ruleset_ref(gw->rules);
    jr->keys = client_auth && gw->client_keys ? clientkeys_ref(gw->client_keys) : NULL;
    jr->started_us = clock_mono_us();
    jr->started_wall_ms = clock_wall_ms();
    jr->upstream_us = -1;
    jr->outcome = OUTCOME_BYPASS;
    TAILQ_INSERT_TAIL(&gw->live, jr, live_link);
    gw->in_flight++;

    const char *client_id = evhttp_find_header(evhttp_request_get_input_headers(req), "X-Request-Id");
    if (client_id && request_id_acceptable(client_id))
        snprintf(jr->request_id, sizeof(jr->request_id), "%s", client_id);
    else
        gateway_new_request_id(jr->request_id, sizeof(jr->request_id));

    struct client_error err;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    const char *query = uri ? evhttp_uri_get_query(uri) : NULL;
    if (!path || !*path) {
        client_error_set(&err, 400, "JG.BAD_URI", "the request URI cannot be parsed");
        answer_error(jr, &err);
        return;
    }
    if (request_size_ok(gw, req, &err) < 0) {
        metrics_count_event(gw->metrics, EVENT_REQUEST_TOO_LARGE);
        log_info("request %s refused: %s", jr->request_id, err.message);
        answer_error(jr, &err);
        return;
    }
    if (gw->audit && audit_blocks_requests(gw->audit)) {
        /* Fail-closed: no answer leaves without its audit line. */
        client_error_set(&err, 503, "JG.AUDIT_UNAVAILABLE", "the audit log cannot be written; retry later");
        err.retry_after = 5;
        answer_error(jr, &err);
        return;
    }

    const char *host = evhttp_find_header(evhttp_request_get_input_headers(req), "Host");
    enum route_result found = ruleset_match(jr->rules, host, path, &jr->rule, &jr->match);
    if (found != ROUTE_MATCH)
        jr->rule = found == ROUTE_BAD_PARAM ? jr->rule : NULL;
    if (jr->keys && client_allowed(jr, req, &err) < 0) {
        jr->denied = 1;
        metrics_count_event(gw->metrics, err.status == 401 ? EVENT_CLIENT_UNAUTHENTICATED : EVENT_CLIENT_FORBIDDEN);
        answer_error(jr, &err);
        return;
    }
    if (found == ROUTE_NO_MATCH) {
        client_error_set(&err, 404, "JG.NO_ROUTE", "no job-status route has this path");
        answer_error(jr, &err);
        return;
    }
    const struct rule *rule = jr->rule;
    unsigned bit = method_bit(evhttp_request_get_command(req));
    if (!(bit & rule->methods)) {
        const char *allowed = allow_header(req, rule->methods);
        char message[64];
        snprintf(message, sizeof(message), "this route answers %s only", allowed);
        client_error_set(&err, 405, "JG.METHOD_NOT_ALLOWED", message);
        answer_error(jr, &err);
        return;
    }
    if (found == ROUTE_BAD_PARAM || (rule->query == RULE_QUERY_REJECT && query && *query)) {
        answer_error(jr, &rule->invalid_request);
        return;
    }
    if (request_acceptable(req, &err) < 0) {
        answer_error(jr, &err);
        return;
    }
    if (pass_through(gw)) { /* the client's own token goes upstream */
        const char *token = evhttp_find_header(evhttp_request_get_input_headers(req), "X-Auth-Token");
        if (!token || !*token || tokengrant_hash(gw->token_grants, token, jr->token_hash) < 0) {
            client_error_set(&err, 401, "JG.NO_TOKEN", "send the cloud token in X-Auth-Token");
            answer_error(jr, &err);
            return;
        }
    }
    if (build_key(gw, rule, &jr->match, jr->key, sizeof(jr->key)) < 0) {
        answer_error(jr, &rule->invalid_request);
        return;
    }
    jr->in_lookup = 1;
    cache_get(gw->cache, jr->key, on_cache_result, jr); /* may answer before it returns */
}

/* ------------------------------------------------------------- lifecycle */

static void free_guard_item(struct keymap_item *item)
{
    struct upstream_guard *ug = (struct upstream_guard *)item;
    guard_free(ug->g);
    free(ug->base_url);
    free(ug);
}

static void free_secret(char *s)
{
    if (s) {
        memset(s, 0, strlen(s));
        free(s);
    }
}

/* Copy the settings of `conf` over the gateway's. */
static void apply_conf(struct gateway *gw, const struct gateway_conf *conf)
{
    free(gw->key_prefix);
    free(gw->upstream_url);
    free_secret(gw->upstream_token);
    gw->key_prefix = strdup(conf->key_prefix ? conf->key_prefix : "");
    gw->upstream_url = conf->upstream_url ? strdup(conf->upstream_url) : NULL;
    gw->upstream_token = conf->upstream_token ? strdup(conf->upstream_token) : NULL;
    gw->credentials = conf->credentials;
    gw->audit = conf->audit;
    gw->max_uri_bytes = conf->max_uri_bytes;
    gw->max_header_bytes = conf->max_header_bytes;
    clientkeys_unref(gw->client_keys); /* requests in flight hold their own references */
    gw->client_keys = conf->client_keys ? clientkeys_ref(conf->client_keys) : NULL;
    gw->max_waiters = conf->max_waiters ? conf->max_waiters : 10000;
    /* New limits apply to upstreams seen from now on and, for those already
     * guarded, after their state (bucket, backoff, circuit) is dropped: a
     * reload must not reset a circuit that protects a failing upstream, so
     * the guards are kept when the limits did not change. */
    struct guard_conf gc;
    memset(&gc, 0, sizeof(gc)); /* compared bytewise below: no stray padding */
    if (conf->guard)
        memcpy(&gc, conf->guard, sizeof(gc));
    else
        guard_conf_defaults(&gc);
    gw->rate_queue_ms = conf->rate_queue_ms;
    if (memcmp(&gc, &gw->guard_conf, sizeof(gc)) != 0) {
        gw->guard_conf = gc;
        keymap_clear(&gw->guards, free_guard_item);
    }
    int64_t window_ms = conf->passthrough_window_ms > 0 ? conf->passthrough_window_ms : 300000;
    if (!gw->token_grants || gw->passthrough_window_ms != window_ms) {
        tokengrant_free(gw->token_grants); /* a new window forgets what the old one knew */
        gw->token_grants = tokengrant_new(100000, window_ms);
        gw->passthrough_window_ms = window_ms;
    }
    gw->max_wait_ms = conf->max_wait_ms > 0 ? conf->max_wait_ms : 15000;
    if (gw->upstream_url && gw->upstream_url[0] && gw->upstream_url[strlen(gw->upstream_url) - 1] == '/')
        gw->upstream_url[strlen(gw->upstream_url) - 1] = '\0';
}

struct gateway *gateway_new(struct event_base *base, struct ruleset *rules, struct cache *cache,
                            struct upstream *upstream, struct metrics *metrics, const struct gateway_conf *conf)
{
    struct gateway *gw = calloc(1, sizeof(*gw));
    if (!gw)
        return NULL;
    gw->base = base;
    gw->watch_hangups = (event_base_get_features(base) & EV_FEATURE_EARLY_CLOSE) != 0;
    gw->rules = ruleset_ref(rules);
    gw->cache = cache;
    gw->upstream = upstream;
    gw->metrics = metrics;
    apply_conf(gw, conf);
    TAILQ_INIT(&gw->live);
    TAILQ_INIT(&gw->orphans);
    return gw;
}

void gateway_reconfigure(struct gateway *gw, struct ruleset *rules, const struct gateway_conf *conf)
{
    struct ruleset *old = gw->rules;
    gw->rules = ruleset_ref(rules);
    ruleset_unref(old); /* requests and upstream calls still using it hold their own references */
    apply_conf(gw, conf);
}

struct audit *gateway_audit(const struct gateway *gw)
{
    return gw->audit;
}

struct credentials *gateway_credentials(const struct gateway *gw)
{
    return gw->credentials;
}

size_t gateway_in_flight(const struct gateway *gw)
{
    return gw->in_flight;
}

void gateway_drain(struct gateway *gw, void (*on_idle)(void *arg), void *arg)
{
    gw->draining = 1;
    gw->on_idle = on_idle;
    gw->on_idle_arg = arg;
    if (gw->in_flight == 0 && on_idle)
        on_idle(arg);
}

void gateway_abort_all(struct gateway *gw)
{
    struct client_error err;
    client_error_set(&err, 503, "JG.SHUTTING_DOWN", "jobgate is shutting down; retry");
    err.retry_after = 1;
    struct job_request *jr, *next;
    for (jr = TAILQ_FIRST(&gw->live); jr; jr = next) {
        next = TAILQ_NEXT(jr, live_link);
        if (jr->flight) {
            struct flight *f = jr->flight;
            waiter_unlink(jr);
            if (TAILQ_EMPTY(&f->waiters)) {
                if (f->call)
                    upstream_cancel(gw->upstream, f->call);
                flight_free(f);
            }
        }
        if (jr->in_lookup) {
            /* The lookup still holds jr: answer now, free when it calls back. */
            struct reply_meta meta = meta_of(jr);
            audit_request(jr, 503, 0);
            reply_error(jr->req, &err, &meta);
            metrics_count_request(gw->metrics, jr->rule ? jr->rule->name : "none", 503, jr->outcome,
                                  clock_mono_us() - jr->started_us);
            jr->req = NULL;
            gw->in_flight--;
            TAILQ_REMOVE(&gw->live, jr, live_link);
            ruleset_unref(jr->rules);
            jr->rules = NULL;
            clientkeys_unref(jr->keys);
            jr->keys = NULL;
            TAILQ_INSERT_TAIL(&gw->orphans, jr, live_link);
            continue;
        }
        answer_error(jr, &err);
    }
}

static void free_flight_item(struct keymap_item *item)
{
    struct flight *f = (struct flight *)item;
    body_unref(f->stale); /* the cache is gone already: no lease to release, nothing to cancel */
    if (f->admit_timer)
        event_free(f->admit_timer);
    explicit_bzero(f->client_token, sizeof(f->client_token));
    if (f->wait_timer)
        event_free(f->wait_timer);
    ruleset_unref(f->rules);
    free(f);
}

void gateway_free(struct gateway *gw)
{
    if (!gw)
        return;
    struct job_request *jr;
    while ((jr = TAILQ_FIRST(&gw->live)) != NULL) {
        TAILQ_REMOVE(&gw->live, jr, live_link);
        if (jr->gone_watch)
            event_free(jr->gone_watch);
        ruleset_unref(jr->rules);
        clientkeys_unref(jr->keys);
        free(jr);
    }
    while ((jr = TAILQ_FIRST(&gw->orphans)) != NULL) {
        TAILQ_REMOVE(&gw->orphans, jr, live_link);
        free(jr);
    }
    while (gw->nspare)
        free(gw->spare[--gw->nspare]);
    keymap_clear(&gw->flights, free_flight_item);
    keymap_clear(&gw->guards, free_guard_item);
    ruleset_unref(gw->rules);
    clientkeys_unref(gw->client_keys);
    tokengrant_free(gw->token_grants);
    free(gw->key_prefix);
    free(gw->upstream_url);
    free_secret(gw->upstream_token);
    free(gw);
}
