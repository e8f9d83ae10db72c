#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "callpolicy.h"
#include "clock.h"
#include "credentials.h"
#include "forward.h"
#include "forward_int.h"
#include "log.h"
#include "regions.h"
#include "metrics.h"
#include "gateway_int.h"
#include "reply.h"
#include "rules.h"
#include "upstream.h"

/* Client headers that go upstream with a forwarded call (besides the body):
 * what the cloud's APIs read. Never the client's own credentials (X-Auth-
 * Token is sent as the mode says; Authorization, X-Api-Key never). */
static const char *const passed_headers[] = {"Content-Type", "X-Client-Token", "X-Language"};
#define NPASSED (sizeof(passed_headers) / sizeof(passed_headers[0]))

static void free_secret(char *s, size_t len)
{
    if (s) {
        explicit_bzero(s, len);
        free(s);
    }
}

/* The admitted call will not go (or ended with nothing learnt): tell the guard. */
static void give_back_admission(struct forward_call *fc)
{
    if (fc->holds_admission) {
        fc->holds_admission = 0;
        callpolicy_abandoned(fc->up, &fc->admitted);
    }
}

void forward_call_free(struct forward_call *fc)
{
    LIST_REMOVE(fc, link);
    if (fc->admit_pending)
        callpolicy_cancel(fc->admit_pending);
    give_back_admission(fc);
    callpolicy_upstream_unref(fc->up);
    if (fc->cred_wait)
        credentials_cancel(fc->cred_wait);
    if (fc->admit_timer)
        event_free(fc->admit_timer);
    if (fc->jr) {
        if (fc->jr->gone_watch) {
            event_free(fc->jr->gone_watch);
            fc->jr->gone_watch = NULL;
        }
        fc->jr->forward = NULL;
    }
    free(fc->url);
    if (fc->body_buf) {
        if (fc->body)
            explicit_bzero((void *)fc->body, fc->body_len);
        evbuffer_free(fc->body_buf);
    }
    if (fc->piece)
        evbuffer_free(fc->piece);
    if (fc->drain_timer)
        event_free(fc->drain_timer);
    free_secret(fc->token, fc->token ? strlen(fc->token) : 0);
    for (size_t i = 0; i < fc->nheaders; i++)
        free(fc->headers[i]);
    free(fc->headers);
    ruleset_unref(fc->rules);
    free(fc);
}

void forward_fail(struct forward_call *fc, const struct client_error *err)
{
    struct job_request *jr = fc->jr;
    forward_call_free(fc);
    if (jr)
        request_answer_error(jr, err);
}

/* ------------------------------------------------------------- the call */

static void on_credentials(const struct credentials_result *r, void *arg)
{
    struct forward_call *fc = arg;
    struct gateway *gw = fc->gw;
    assert(fc->state == FORWARD_CREDENTIALS);
    fc->cred_wait = NULL;
    if (r->status != CREDENTIALS_OK) {
        log_warn("no upstream credentials to forward %s for rule %s: %s", fc->method, fc->rule->name,
                 r->reason ? r->reason : "unknown");
        give_back_admission(fc);
        struct client_error err;
        callpolicy_no_credentials(&err);
        forward_fail(fc, &err);
        return;
    }
    const struct rule *rule = fc->rule;
    struct upstream_request ureq = {
        .method = fc->method,
        .once = strcmp(fc->method, "GET") != 0 && strcmp(fc->method, "HEAD") != 0,
        .url = fc->url,
        .request_id = fc->request_id,
        .auth_token = fc->token,
        .auth_headers = r->headers,
        .nauth_headers = r->nheaders,
        .connect_timeout_ms = rule->connect_timeout_ms,
        .timeout_ms = rule->timeout_ms,
        .add_headers = fc->headers,
        .nadd_headers = fc->nheaders,
        .drop_headers = rule->drop_headers,
        .ndrop_headers = rule->ndrop_headers,
        .body = fc->body,
        .body_len = fc->body_len,
        .body_borrowed = 1, /* fc->body_buf lives until the call's end */
    };
    forward_stream_request(&ureq);
    fc->state = FORWARD_CALLING;
    fc->called_us = clock_mono_us();
    /* From here a client that went away is seen by the writes of its answer
     * failing (evhttp drops the connection: forward_stream.c), not by the
     * end of its input: a half-close looks the same on the wire
     * (EV_CLOSED), and a client that half-closed after its request still
     * reads its answer (flight.c does the same). */
    if (fc->jr && fc->jr->gone_watch) {
        event_free(fc->jr->gone_watch);
        fc->jr->gone_watch = NULL;
    }
    fc->call = upstream_fetch(gw->upstream, &ureq, forward_stream_done, fc); /* never calls back from inside */
    if (!fc->call) {
        give_back_admission(fc);
        struct client_error err;
        errmap_from_fault(&rule->errors, FAULT_INTERNAL, &err);
        forward_fail(fc, &err);
    }
}

static void admit(struct forward_call *fc);

static void on_admit_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    admit(arg);
}

/* ADMITTING -> QUEUE, refused (answered), or CREDENTIALS then CALLING. */
static void on_admitted(const struct callpolicy_verdict *v, void *arg)
{
    struct forward_call *fc = arg;
    struct gateway *gw = fc->gw;
    assert(fc->state == FORWARD_ADMITTING);
    fc->admit_pending = NULL;
    if (v->admission == CALLPOLICY_QUEUE &&
        (fc->admit_timer || (fc->admit_timer = evtimer_new(gw->base, on_admit_timer, fc)) != NULL)) {
        struct timeval tv = {(time_t)(v->wait_ms / 1000), (suseconds_t)((v->wait_ms % 1000) * 1000 + 500)};
        evtimer_add(fc->admit_timer, &tv);
        fc->state = FORWARD_QUEUE;
        return;
    }
    if (v->admission != CALLPOLICY_GO) {
        struct client_error err;
        callpolicy_refusal(gw->policy, fc->up, v, fc->url, &err);
        forward_fail(fc, &err);
        return;
    }
    fc->admitted = *v;
    fc->holds_admission = 1;
    fc->state = FORWARD_CREDENTIALS;
    /* Token and pass-through: the token travels as X-Auth-Token (fc->token). */
    if (!gw->credentials || credentials_mode(gw->credentials) == CRED_PASSTHROUGH ||
        credentials_mode(gw->credentials) == CRED_TOKEN) {
        on_credentials(&(struct credentials_result){.status = CREDENTIALS_OK}, fc);
        return;
    }
    struct credentials_wait *w = credentials_get_body(gw->credentials, fc->project[0] ? fc->project : NULL, fc->method,
                                                      fc->url, fc->body, fc->body_len, on_credentials, fc);
    if (w) /* else it has called back already, and fc may be gone */
        fc->cred_wait = w;
}

/* [start]: may the call go now (the guard)? The answer may come before
 * callpolicy_admit returns, or later (Redis). */
static void admit(struct forward_call *fc)
{
    struct gateway *gw = fc->gw;
    fc->state = FORWARD_ADMITTING;
    struct callpolicy_pending *p = callpolicy_admit(gw->policy, fc->up, fc->project[0] ? fc->project : NULL,
                                                    &fc->queued_until_ms, on_admitted, fc);
    if (p) /* else it has called back already, and fc may be gone */
        fc->admit_pending = p;
}

/* ------------------------------------------------------------ the client */

/* The client hung up: a call not yet sent is dropped; one that is out runs
 * to its end (its answer is thrown away). */
static void on_client_gone(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct job_request *jr = arg;
    struct evhttp_connection *evcon = evhttp_request_get_connection(jr->req);
    metrics_count_event(jr->gw->metrics, EVENT_WAITER_GONE);
    if (forward_leave(jr, 1)) { /* the stream was cut, the connection freed */
        log_info("request %s: client closed its connection during a forwarded answer's body", jr->request_id);
        return;
    }
    log_debug("request %s: client closed its connection during a forwarded call", jr->request_id);
    request_forget(jr);
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

int forward_leave(struct job_request *jr, int client_gone)
{
    struct forward_call *fc = jr->forward;
    if (!fc)
        return 0;
    if (forward_stream_leave(fc, client_gone))
        return 1; /* a head went out: ended or cut */
    if (jr->gone_watch) {
        event_free(jr->gone_watch);
        jr->gone_watch = NULL;
    }
    jr->forward = NULL;
    fc->jr = NULL;
    if (fc->state != FORWARD_CALLING)
        forward_call_free(fc); /* never sent: an admission it holds is given back */
    return 0;
}

/* ------------------------------------------------------------- the start */

/* Is `path` (still percent-encoded) one whose meaning no server can read
 * differently? No "." or ".." segment, encoded or not, no encoded '/' or
 * '\', no '\': the grants are checked on this path's project segment, and
 * upstream must see the same one. */
static int path_plain(const char *path)
{
    if (strchr(path, '\\'))
        return 0;
    for (const char *p = path; (p = strchr(p, '%')) != NULL; p++)
        if (strncasecmp(p, "%2e", 3) == 0 || strncasecmp(p, "%2f", 3) == 0 || strncasecmp(p, "%5c", 3) == 0)
            return 0;
    for (const char *seg = path; *seg;) {
        if (*seg == '/') {
            seg++;
            continue;
        }
        size_t n = strcspn(seg, "/");
        if ((n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.'))
            return 0;
        seg += n;
    }
    return 1;
}

int forward_project_of(const struct rule *rule, const char *path, char *out, size_t outlen)
{
    out[0] = '\0';
    int want = rule->forward.project_segment;
    if (want <= 0)
        return 0;
    const char *seg = path + rule->forward.prefix_len;
    for (int i = 1; *seg; i++) {
        while (*seg == '/')
            seg++;
        size_t n = strcspn(seg, "/");
        if (i == want) {
            if (n != 32 || n >= outlen || strspn(seg, "0123456789abcdefABCDEF") < 32)
                return 0;
            memcpy(out, seg, n);
            out[n] = '\0';
            return 1;
        }
        seg += n;
    }
    return 0;
}

/* Set the Allow header of a 405 from `methods`; returns its value (static). */
static const char *allow_header(struct evhttp_request *req, unsigned methods)
{
    static const char *const names[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"};
    static char allow[64];
    allow[0] = '\0';
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (methods & rule_method_bit(names[i])) {
            if (allow[0])
                strcat(allow, ", ");
            strcat(allow, names[i]);
        }
    evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", allow);
    return allow;
}

/* The token sent upstream as X-Auth-Token: jobgate's own in token mode, the
 * client's in pass-through, none otherwise (flight.c's rule, the same). */
static const char *token_for(const struct gateway *gw, struct evhttp_request *req)
{
    const char *client = evhttp_find_header(evhttp_request_get_input_headers(req), "X-Auth-Token");
    if (gw->credentials)
        return credentials_mode(gw->credentials) == CRED_TOKEN         ? gw->upstream_token
               : credentials_mode(gw->credentials) == CRED_PASSTHROUGH ? client
                                                                       : NULL;
    return gw->upstream_token ? gw->upstream_token : client;
}

/* The call for `jr`, or NULL with `err` set. */
static struct forward_call *call_new(struct job_request *jr, const char *method, struct client_error *err)
{
    struct gateway *gw = jr->gw;
    const struct rule *rule = jr->rule;
    struct evhttp_request *req = jr->req;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = evhttp_uri_get_path(uri);
    const char *query = evhttp_uri_get_query(uri);
    /* A Host SERVICE.REGION.DOMAIN (rules.h) sent the cloud's own path: no prefix to take off. */
    const char *rest = rule->forward.strip_prefix && !jr->by_host_service ? path + rule->forward.prefix_len : path;

    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t body_len = evbuffer_get_length(in);

    errmap_from_fault(&rule->errors, FAULT_INTERNAL, err);
    char base[2200];
    if (regions_expand(gw->upstream_url ? gw->upstream_url : rule->upstream_url, jr->region, base, sizeof(base)) < 0)
        return NULL;
    struct forward_call *fc = calloc(1, sizeof(*fc));
    if (!fc)
        return NULL;
    LIST_INSERT_HEAD(&gw->forwards, fc, link);
    fc->gw = gw;
    fc->rules = ruleset_ref(jr->rules);
    fc->rule = rule;
    fc->method = method;
    snprintf(fc->request_id, sizeof(fc->request_id), "%s", jr->request_id);
    snprintf(fc->project, sizeof(fc->project), "%s", jr->forward_project ? jr->forward_project : "");
    size_t ulen = strlen(base) + strlen(rest) + (query ? strlen(query) + 1 : 0) + 2;
    if (!(fc->url = malloc(ulen)))
        goto fail;
    snprintf(fc->url, ulen, "%s%s%s%s", base, *rest ? rest : "/", query && *query ? "?" : "",
             query && *query ? query : "");
    /* The body's chains change hands (no copy), then become one piece for
     * libcurl and the signature (a copy only when there were several). */
    if (!(fc->body_buf = evbuffer_new()) || evbuffer_add_buffer(fc->body_buf, in) < 0)
        goto fail;
    fc->body_len = body_len;
    if (body_len && !(fc->body = (const char *)evbuffer_pullup(fc->body_buf, -1)))
        goto fail;
    const char *token = token_for(gw, req);
    if (token && !(fc->token = strdup(token)))
        goto fail;
    if (!(fc->headers = calloc(rule->nadd_headers + NPASSED, sizeof(*fc->headers))))
        goto fail;
    for (size_t i = 0; i < rule->nadd_headers; i++)
        if (!(fc->headers[fc->nheaders++] = strdup(rule->add_headers[i])))
            goto fail;
    for (size_t i = 0; i < NPASSED; i++) {
        const char *v = evhttp_find_header(evhttp_request_get_input_headers(req), passed_headers[i]);
        if (!v)
            continue;
        size_t n = strlen(passed_headers[i]) + strlen(v) + 3;
        if (!(fc->headers[fc->nheaders] = malloc(n)))
            goto fail;
        snprintf(fc->headers[fc->nheaders++], n, "%s: %s", passed_headers[i], v);
    }
    if (!(fc->up = callpolicy_upstream(gw->policy, base)))
        goto fail;
    fc->jr = jr;
    jr->forward = fc;
    return fc;
fail:
    forward_call_free(fc);
    return NULL;
}

void forward_start(struct job_request *jr)
{
    struct gateway *gw = jr->gw;
    const struct rule *rule = jr->rule;
    struct evhttp_request *req = jr->req;
    struct client_error err;
    const char *method = reply_method_name(evhttp_request_get_command(req));
    if (!method || !(rule_method_bit(method) & rule->forward.methods)) {
        const char *allowed = allow_header(req, rule->forward.methods);
        char message[128];
        snprintf(message, sizeof(message), "this path forwards %s only", allowed);
        client_error_set(&err, 405, "JG.METHOD_NOT_ALLOWED", message);
        request_answer_error(jr, &err);
        return;
    }
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    if (!path_plain(evhttp_uri_get_path(uri))) {
        client_error_set(&err, 400, "JG.BAD_PATH",
                         "the path has a '.' or '..' segment, or an encoded '/', '.' or '\\'");
        request_answer_error(jr, &err);
        return;
    }
    if (evbuffer_get_length(evhttp_request_get_input_buffer(req)) > rule->forward.max_body) {
        char message[128];
        snprintf(message, sizeof(message), "the request body is larger than this route forwards (%zu bytes)",
                 rule->forward.max_body);
        client_error_set(&err, 413, "JG.BODY_TOO_LARGE", message);
        request_answer_error(jr, &err);
        return;
    }
    if (gw->credentials ? credentials_mode(gw->credentials) == CRED_PASSTHROUGH : gw->upstream_token == NULL) {
        const char *token = evhttp_find_header(evhttp_request_get_input_headers(req), "X-Auth-Token");
        if (!token || !*token) {
            client_error_set(&err, 401, "JG.NO_TOKEN", "send the cloud token in X-Auth-Token");
            request_answer_error(jr, &err);
            return;
        }
    }
    struct forward_call *fc = call_new(jr, method, &err);
    if (!fc) {
        request_answer_error(jr, &err);
        return;
    }
    watch_for_hangup(jr);
    admit(fc); /* may answer jr at once */
}

void forward_free_all(struct gateway *gw)
{
    struct forward_call *fc;
    while ((fc = LIST_FIRST(&gw->forwards)) != NULL) {
        fc->cred_wait = NULL; /* the credentials are freed already, or will drop their waits */
        if (fc->jr)
            fc->jr->forward = NULL;
        fc->jr = NULL;
        forward_call_free(fc);
    }
}
