#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <event2/event.h>
#include <event2/http.h>
#include <cjson/cJSON.h>

#include "audit.h"
#include "cache.h"
#include "callpolicy.h"
#include "clientkeys.h"
#include "clock.h"
#include "credentials.h"
#include "flight.h"
#include "forward.h"
#include "gateway.h"
#include "iamregion.h"
#include "log.h"
#include "metrics.h"
#include "regions.h"
#include "reply.h"
#include "gateway_int.h"
#include "request.h"
#include "rules.h"
#include "tokengrant.h"

/* -------------------------------------------------------------- answering */

/* The error shape of `jr`'s answers: its rule's, else the configured one. */
static enum error_shape shape_of(const struct job_request *jr)
{
    if (jr->rule && jr->rule->errors.reply_shape != ERROR_SHAPE_DEFAULT)
        return jr->rule->errors.reply_shape;
    return jr->gw->error_shape;
}

static struct reply_meta meta_of(const struct job_request *jr)
{
    return (struct reply_meta){.request_id = jr->request_id,
                               .outcome = jr->outcome,
                               .age_s = -1,
                               .close_connection = jr->gw->draining,
                               .error_shape = shape_of(jr)};
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

/* The request's route parameter at `index` (-1: none), or NULL. */
static const char *param_value(const struct job_request *jr, int index)
{
    return jr->rule && index >= 0 && (size_t)index < jr->match.nvalues ? jr->match.values[index] : NULL;
}

/* The audit record of `jr`, answered `status` with `bytes` of body (status
 * 0: never answered, the client went away): the one place it is built. Its
 * strings are borrowed from `jr` and its evhttp request, and `source` (the
 * peer's address is written there, `sourcelen` bytes): valid until the
 * reply hands the request back to evhttp. */
static void audit_record_of(const struct job_request *jr, int status, uint64_t bytes, char *source, size_t sourcelen,
                            struct audit_record *r)
{
    struct evhttp_request *req = jr->req;
    struct evhttp_connection *evcon = req ? evhttp_request_get_connection(req) : NULL;
    source[0] = '\0';
    if (evcon) {
        char *addr = NULL;
        ev_uint16_t port = 0;
        evhttp_connection_get_peer(evcon, &addr, &port);
        snprintf(source, sourcelen, strchr(addr ? addr : "", ':') ? "[%s]:%u" : "%s:%u", addr ? addr : "",
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
    if (jr->rule && !jr->forwarding)
        job = param_value(jr, jr->rule->identity_param >= 0 ? jr->rule->identity_param
                                                            : route_template_param_index(&jr->rule->route, "job_id"));
    *r = (struct audit_record){
        .wall_ms = jr->started_wall_ms,
        .request_id = jr->request_id,
        .client = jr->client ? jr->client->name : NULL,
        .source = source[0] ? source : NULL,
        .method = method,
        .path = uri ? evhttp_uri_get_path(uri) : NULL,
        .project_id = jr->forwarding ? jr->forward_project
                      : jr->rule     ? param_value(jr, jr->rule->project_param)
                                     : NULL,
        .job_id = job,
        .cache = status == 0  ? "CLIENT_GONE"
                 : jr->denied ? "DENIED"
                              : cache_outcome_name(jr->outcome),
        .upstream_status = jr->upstream_status,
        .upstream_us = jr->upstream_us,
        .status = status,
        .bytes_sent = bytes,
    };
}

/* One line in the audit log for `jr` (see audit_record_of). Called before
 * the reply hands the request back to evhttp. */
static void audit_request(struct job_request *jr, int status, uint64_t bytes)
{
    struct gateway *gw = jr->gw;
    if (!gw->audit)
        return;
    char source[80];
    struct audit_record r;
    audit_record_of(jr, status, bytes, source, sizeof(source), &r);
    if (audit_write(gw->audit, &r) < 0)
        metrics_count_event(gw->metrics, EVENT_AUDIT_DROPPED);
}

void request_answer_error(struct job_request *jr, const struct client_error *e)
{
    struct reply_meta meta = meta_of(jr);
    if (jr->gw->audit) {
        char *text = client_error_render(e, jr->request_id, shape_of(jr));
        int head = evhttp_request_get_command(jr->req) == EVHTTP_REQ_HEAD;
        audit_request(jr, e->status, text && !head ? strlen(text) : 0);
        cJSON_free(text);
    }
    reply_error(jr->req, e, &meta);
    job_request_done(jr, e->status);
}

void request_answer_job(struct job_request *jr, struct body *b, int hit)
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
void request_answer_forward(struct job_request *jr, int status, const char *content_type, const char *body, size_t len,
                            long retry_after)
{
    struct reply_meta meta = meta_of(jr);
    audit_request(jr, status, evhttp_request_get_command(jr->req) == EVHTTP_REQ_HEAD ? 0 : len);
    if (retry_after >= 0) {
        char ra[24];
        snprintf(ra, sizeof(ra), "%ld", retry_after);
        evhttp_add_header(evhttp_request_get_output_headers(jr->req), "Retry-After", ra);
    }
    reply_text(jr->req, status, content_type, body, len, &meta);
    job_request_done(jr, status);
}

void request_forward_begin(struct job_request *jr, int status, const char *content_type, int64_t content_length,
                           long retry_after)
{
    struct reply_meta meta = meta_of(jr);
    reply_stream_start(jr->req, status, content_type, content_length, retry_after, &meta);
}

void request_forward_end(struct job_request *jr, int status, uint64_t bytes)
{
    audit_request(jr, status, bytes);
    evhttp_send_reply_end(jr->req); /* hands the request back to evhttp */
    job_request_done(jr, status);
}

void request_forward_cut(struct job_request *jr, int status, uint64_t bytes, int client_gone)
{
    struct gateway *gw = jr->gw;
    if (gw->audit) {
        char source[80];
        struct audit_record r;
        audit_record_of(jr, status, bytes, source, sizeof(source), &r);
        r.cache = client_gone ? "CLIENT_GONE" : "CUT";
        if (audit_write(gw->audit, &r) < 0)
            metrics_count_event(gw->metrics, EVENT_AUDIT_DROPPED);
    }
    struct evhttp_request *req = jr->req;
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    if (evcon)
        evhttp_connection_free(evcon); /* frees the request too */
    else
        evhttp_send_reply_end(req); /* evhttp has let the connection go: this frees the request */
    job_request_done(jr, status);
}

void request_answer_stale(struct job_request *jr, struct body *b)
{
    jr->outcome = OUTCOME_STALE;
    request_answer_job(jr, b, 1);
}

void request_forget(struct job_request *jr)
{
    audit_request(jr, 0, 0);
    job_request_release(jr);
}

void gateway_handle(struct gateway *gw, struct evhttp_request *req, int client_auth)
{
    request_intake(gw, req, client_auth);
}

/* ------------------------------------------------------------- lifecycle */

static void free_secret(char *s)
{
    if (s) {
        memset(s, 0, strlen(s));
        free(s);
    }
}

/* gw->max_body_bytes for `rules` (gateway_max_body_bytes). */
static void set_max_body(struct gateway *gw, const struct ruleset *rules)
{
    uint64_t most = 0;
    for (size_t i = 0; i < rules->count; i++)
        if (rules->rules[i]->forward.prefix && rules->rules[i]->forward.max_body > most)
            most = rules->rules[i]->forward.max_body;
    gw->max_body_bytes = 2 * most;
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
    callpolicy_configure(gw->policy, conf->guard, conf->rate_queue_ms);
    int64_t window_ms = conf->passthrough_window_ms > 0 ? conf->passthrough_window_ms : 300000;
    if (!gw->token_grants || gw->passthrough_window_ms != window_ms) {
        tokengrant_free(gw->token_grants); /* a new window forgets what the old one knew */
        gw->token_grants = tokengrant_new(100000, window_ms);
        gw->passthrough_window_ms = window_ms;
    }
    gw->max_wait_ms = conf->max_wait_ms > 0 ? conf->max_wait_ms : 15000;
    regions_free(gw->regions); /* requests took their region at intake */
    gw->regions = regions_copy(conf->regions);
    gw->iamregion = conf->iamregion;
    gw->error_shape = conf->error_shape != ERROR_SHAPE_DEFAULT ? conf->error_shape : ERROR_SHAPE_APIGW;
    if (gw->upstream_url && gw->upstream_url[0] && gw->upstream_url[strlen(gw->upstream_url) - 1] == '/')
        gw->upstream_url[strlen(gw->upstream_url) - 1] = '\0';
}

struct gateway *gateway_new(struct event_base *base, struct ruleset *rules, struct cache *cache,
                            struct upstream *upstream, struct metrics *metrics, const struct gateway_conf *conf)
{
    struct gateway *gw = calloc(1, sizeof(*gw));
    if (!gw)
        return NULL;
    char err[256];
    struct callpolicy_env env = {.base = base,
                                 .metrics = metrics,
                                 .shm = conf->guard_shm,
                                 .redis = conf->guard_redis,
                                 .key_prefix = conf->key_prefix,
                                 .workers = conf->workers};
    if (!(gw->policy = callpolicy_new(&env, err, sizeof(err)))) {
        log_error("upstream guard: %s", err);
        free(gw);
        return NULL;
    }
    gw->base = base;
    gw->watch_hangups = (event_base_get_features(base) & EV_FEATURE_EARLY_CLOSE) != 0;
    gw->rules = ruleset_ref(rules);
    set_max_body(gw, rules);
    gw->cache = cache;
    gw->upstream = upstream;
    gw->metrics = metrics;
    apply_conf(gw, conf);
    TAILQ_INIT(&gw->live);
    TAILQ_INIT(&gw->orphans);
    LIST_INIT(&gw->forwards);
    return gw;
}

void gateway_reconfigure(struct gateway *gw, struct ruleset *rules, const struct gateway_conf *conf)
{
    struct ruleset *old = gw->rules;
    gw->rules = ruleset_ref(rules);
    set_max_body(gw, rules);
    ruleset_unref(old); /* requests and upstream calls still using it hold their own references */
    apply_conf(gw, conf);
}

struct audit *gateway_audit(const struct gateway *gw)
{
    return gw->audit;
}

struct clientkeys *gateway_client_keys(const struct gateway *gw)
{
    return gw->client_keys;
}

struct credentials *gateway_credentials(const struct gateway *gw)
{
    return gw->credentials;
}

void gateway_guard_health(const struct gateway *gw, struct callpolicy_health *out)
{
    callpolicy_health(gw->policy, out);
}

uint64_t gateway_max_body_bytes(const struct gateway *gw)
{
    return gw->max_body_bytes;
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
        flight_leave(jr);
        iamregion_cancel(jr->iam_wait);
        jr->iam_wait = NULL;
        if (forward_leave(jr, 0))
            continue; /* a streamed answer, cut (and let go) there */
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
            clientkeys_unref(jr->keys); /* the rules stay: the lookup checks against them */
            jr->keys = NULL;
            TAILQ_INSERT_TAIL(&gw->orphans, jr, live_link);
            continue;
        }
        request_answer_error(jr, &err);
    }
}

void gateway_free(struct gateway *gw)
{
    if (!gw)
        return;
    forward_free_all(gw); /* first: its calls point at requests freed below */
    struct job_request *jr;
    while ((jr = TAILQ_FIRST(&gw->live)) != NULL) {
        TAILQ_REMOVE(&gw->live, jr, live_link);
        if (jr->gone_watch)
            event_free(jr->gone_watch);
        ruleset_unref(jr->rules);
        clientkeys_unref(jr->keys);
        body_unref(jr->grant_body);
        free(jr);
    }
    while ((jr = TAILQ_FIRST(&gw->orphans)) != NULL) {
        TAILQ_REMOVE(&gw->orphans, jr, live_link);
        ruleset_unref(jr->rules);
        body_unref(jr->grant_body);
        free(jr);
    }
    while (gw->nspare)
        free(gw->spare[--gw->nspare]);
    flight_free_all(gw);
    callpolicy_free(gw->policy);
    ruleset_unref(gw->rules);
    clientkeys_unref(gw->client_keys);
    tokengrant_free(gw->token_grants);
    regions_free(gw->regions);
    free(gw->key_prefix);
    free(gw->upstream_url);
    free_secret(gw->upstream_token);
    free(gw);
}
