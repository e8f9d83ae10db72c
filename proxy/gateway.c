#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <cjson/cJSON.h>
#include <event2/keyvalq_struct.h>

#include "cache.h"
#include "clock.h"
#include "gateway.h"
#include "keymap.h"
#include "log.h"
#include "metrics.h"
#include "reply.h"
#include "rules.h"
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
    struct evhttp_request *req; /* NULL once answered */
    struct ruleset *rules;      /* the reference this request holds */
    const struct rule *rule;
    struct route_match match;
    struct flight *flight;
    enum cache_outcome outcome;
    int in_lookup;
    int64_t started_us;
    char request_id[REQUEST_ID_MAX + 1];
    char key[KEY_MAX];
    TAILQ_ENTRY(job_request) live_link;
    TAILQ_ENTRY(job_request) wait_link;
};
TAILQ_HEAD(job_request_list, job_request);

/* One upstream call for a key, shared by every request that missed on it
 * meanwhile: a burst of pollers costs the upstream one request. */
struct flight {
    struct keymap_item item; /* item.key == key */
    char key[KEY_MAX];
    struct gateway *gw;
    struct ruleset *rules;
    const struct rule *rule;
    struct upstream_call *call;
    char expected_id[ROUTE_MAX_PATH + 1];
    struct job_request_list waiters;
};

struct gateway {
    struct ruleset *rules;
    struct cache *cache;
    struct upstream *upstream;
    struct metrics *metrics;
    char *key_prefix;
    char *upstream_url;
    char *upstream_token;
    struct keymap flights;
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
    uint64_t n = ++request_id_counter;
    snprintf(buf, len, "%016" PRIx64 "%016" PRIx64, request_id_seed[0], request_id_seed[1] ^ n);
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

/* The request has been answered: count it and let it go. */
static void job_request_done(struct job_request *jr, int status)
{
    struct gateway *gw = jr->gw;
    metrics_count_request(gw->metrics, jr->rule ? jr->rule->name : "none", status, jr->outcome,
                          clock_mono_us() - jr->started_us);
    jr->req = NULL;
    gw->in_flight--;
    TAILQ_REMOVE(&gw->live, jr, live_link);
    ruleset_unref(jr->rules);
    free(jr);
    if (gw->draining && gw->in_flight == 0 && gw->on_idle)
        gw->on_idle(gw->on_idle_arg);
}

static void answer_error(struct job_request *jr, const struct client_error *e)
{
    struct reply_meta meta = meta_of(jr);
    reply_error(jr->req, e, &meta);
    job_request_done(jr, e->status);
}

static void answer_job(struct job_request *jr, struct body *b, int hit)
{
    struct reply_meta meta = meta_of(jr);
    if (hit) {
        int64_t age_ms = clock_wall_ms() - b->stored_at_ms;
        meta.age_s = age_ms > 0 ? age_ms / 1000 : 0;
    }
    reply_job(jr->req, b, &meta);
    job_request_done(jr, b->status);
}

/* --------------------------------------------------------------- upstream */

static void flight_free(struct flight *f)
{
    keymap_remove(&f->gw->flights, &f->item);
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
    if (cls == JOB_NOT_JOB || cls == JOB_OTHER_JOB) {
        enum upstream_fault fault = cls == JOB_NOT_JOB ? FAULT_BAD_BODY : FAULT_WRONG_JOB;
        log_warn("upstream 200 for rule %s, key %s is %s: not cached", rule->name, f->key,
                 cls == JOB_NOT_JOB ? "not a job object" : "about another job");
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
    cache_put(f->gw->cache, f->key, b, ttl_ms, 0);
    log_debug("upstream 200 for key %s: state %s (%s)", f->key, state, job_class_name(cls));
    return b;
}

static void on_upstream_done(const struct upstream_response *resp, void *arg)
{
    struct flight *f = arg;
    struct gateway *gw = f->gw;
    f->call = NULL;
    metrics_count_upstream(gw->metrics, f->rule->name, resp->status, resp->fault, resp->elapsed_us);

    struct client_error err;
    struct body *b = judge_answer(f, resp, &err);
    struct job_request *jr;
    while ((jr = TAILQ_FIRST(&f->waiters)) != NULL) {
        TAILQ_REMOVE(&f->waiters, jr, wait_link);
        jr->flight = NULL;
        if (b)
            answer_job(jr, b, 0);
        else
            answer_error(jr, &err);
    }
    body_unref(b);
    flight_free(f);
}

/* The token sent upstream: jobgate's own when configured, else the client's. */
static const char *upstream_token_for(const struct gateway *gw, struct evhttp_request *req)
{
    if (gw->upstream_token)
        return gw->upstream_token;
    return evhttp_find_header(evhttp_request_get_input_headers(req), "X-Auth-Token");
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
    f->item.key = f->key;
    f->rules = ruleset_ref(jr->rules);
    f->rule = rule;
    TAILQ_INIT(&f->waiters);
    if (rule->identity_param >= 0)
        snprintf(f->expected_id, sizeof(f->expected_id), "%s", jr->match.values[rule->identity_param]);

    /* The upstream path is the route with its validated values: nothing else
     * of the client's request (query string, extra headers) goes upstream. */
    char url[URL_MAX];
    const char *base = gw->upstream_url ? gw->upstream_url : rule->upstream_url;
    int n = snprintf(url, sizeof(url), "%s", base);
    if (n < 0 || (size_t)n >= sizeof(url) ||
        rule_upstream_path(rule, &jr->match, url + n, sizeof(url) - (size_t)n) < 0) {
        ruleset_unref(f->rules);
        free(f);
        return NULL;
    }
    struct upstream_request ureq = {
        .url = url,
        .request_id = jr->request_id,
        .auth_token = upstream_token_for(gw, jr->req),
        .connect_timeout_ms = rule->connect_timeout_ms,
        .timeout_ms = rule->timeout_ms,
        .add_headers = rule->add_headers,
        .nadd_headers = rule->nadd_headers,
        .drop_headers = rule->drop_headers,
        .ndrop_headers = rule->ndrop_headers,
    };
    f->call = upstream_fetch(gw->upstream, &ureq, on_upstream_done, f);
    if (!f->call || keymap_put(&gw->flights, &f->item) < 0) {
        if (f->call)
            upstream_cancel(gw->upstream, f->call);
        ruleset_unref(f->rules);
        free(f);
        return NULL;
    }
    return f;
}

static void join_flight(struct job_request *jr)
{
    struct gateway *gw = jr->gw;
    struct flight *f = (struct flight *)keymap_get(&gw->flights, jr->key);
    if (!f)
        f = flight_start(jr);
    if (!f) {
        struct client_error err;
        errmap_from_fault(&jr->rule->errors, FAULT_INTERNAL, &err);
        answer_error(jr, &err);
        return;
    }
    jr->flight = f;
    TAILQ_INSERT_TAIL(&f->waiters, jr, wait_link);
}

/* ------------------------------------------------------------------ cache */

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
        jr->outcome = OUTCOME_HIT;
        answer_job(jr, b, 1);
        return;
    case CACHE_MISS:
    case CACHE_STALE: /* no stale window is stored yet: go upstream as on a miss */ jr->outcome = OUTCOME_MISS; break;
    case CACHE_UNAVAILABLE: jr->outcome = OUTCOME_BYPASS; break;
    }
    join_flight(jr);
}

/* ------------------------------------------------------------- the entry */

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
    int n = snprintf(out, outlen, "%s%s", gw->key_prefix, rule->name);
    for (size_t i = 0; i < rule->route.nparams && n >= 0 && (size_t)n < outlen; i++)
        n += snprintf(out + n, outlen - (size_t)n, ":%s", m->values[i]);
    return (n < 0 || (size_t)n >= outlen) ? -1 : 0;
}

void gateway_handle(struct gateway *gw, struct evhttp_request *req)
{
    struct job_request *jr = calloc(1, sizeof(*jr));
    if (!jr) {
        evhttp_send_error(req, 503, "Service Unavailable");
        return;
    }
    jr->gw = gw;
    jr->req = req;
    jr->rules = ruleset_ref(gw->rules);
    jr->started_us = clock_mono_us();
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

    const char *host = evhttp_find_header(evhttp_request_get_input_headers(req), "Host");
    enum route_result found = ruleset_match(jr->rules, host, path, &jr->rule, &jr->match);
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
    if (!gw->upstream_token && !evhttp_find_header(evhttp_request_get_input_headers(req), "X-Auth-Token")) {
        client_error_set(&err, 401, "JG.NO_TOKEN", "send the cloud token in X-Auth-Token");
        answer_error(jr, &err);
        return;
    }
    if (build_key(gw, rule, &jr->match, jr->key, sizeof(jr->key)) < 0) {
        answer_error(jr, &rule->invalid_request);
        return;
    }
    jr->in_lookup = 1;
    cache_get(gw->cache, jr->key, on_cache_result, jr); /* may answer before it returns */
}

/* ------------------------------------------------------------- lifecycle */

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
    if (gw->upstream_url && gw->upstream_url[0] && gw->upstream_url[strlen(gw->upstream_url) - 1] == '/')
        gw->upstream_url[strlen(gw->upstream_url) - 1] = '\0';
}

struct gateway *gateway_new(struct ruleset *rules, struct cache *cache, struct upstream *upstream,
                            struct metrics *metrics, const struct gateway_conf *conf)
{
    struct gateway *gw = calloc(1, sizeof(*gw));
    if (!gw)
        return NULL;
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
            TAILQ_REMOVE(&f->waiters, jr, wait_link);
            jr->flight = NULL;
            if (TAILQ_EMPTY(&f->waiters)) {
                upstream_cancel(gw->upstream, f->call);
                flight_free(f);
            }
        }
        if (jr->in_lookup) {
            /* The lookup still holds jr: answer now, free when it calls back. */
            struct reply_meta meta = meta_of(jr);
            reply_error(jr->req, &err, &meta);
            metrics_count_request(gw->metrics, jr->rule ? jr->rule->name : "none", 503, jr->outcome,
                                  clock_mono_us() - jr->started_us);
            jr->req = NULL;
            gw->in_flight--;
            TAILQ_REMOVE(&gw->live, jr, live_link);
            ruleset_unref(jr->rules);
            jr->rules = NULL;
            TAILQ_INSERT_TAIL(&gw->orphans, jr, live_link);
            continue;
        }
        answer_error(jr, &err);
    }
}

static void free_flight_item(struct keymap_item *item)
{
    struct flight *f = (struct flight *)item;
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
        ruleset_unref(jr->rules);
        free(jr);
    }
    while ((jr = TAILQ_FIRST(&gw->orphans)) != NULL) {
        TAILQ_REMOVE(&gw->orphans, jr, live_link);
        free(jr);
    }
    keymap_clear(&gw->flights, free_flight_item);
    ruleset_unref(gw->rules);
    free(gw->key_prefix);
    free(gw->upstream_url);
    free_secret(gw->upstream_token);
    free(gw);
}
