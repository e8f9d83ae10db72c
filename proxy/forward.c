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
#include "log.h"
#include "regions.h"
#include "metrics.h"
#include "gateway_int.h"
#include "reply.h"
#include "rules.h"
#include "upstream.h"

enum forward_state {
    FORWARD_ADMITTING,   /* asking the upstream's guard (at once, or Redis) */
    FORWARD_QUEUE,       /* over the rate limit: waiting for a token */
    FORWARD_CREDENTIALS, /* admitted; waiting for jobgate's credentials */
    FORWARD_CALLING,     /* the upstream call is out */
    FORWARD_STREAMING,   /* the answer's head went to the client; its body follows as it comes */
    FORWARD_ENDING, /* upstream is done (or failed: `broken`); the last bytes are leaving before the end or the cut */
};

/* Backpressure: more than HIGH bytes of answer waiting to be written to the
 * client pauses the upstream transfer; it resumes once they are down to
 * LOW, checked every DRAIN_CHECK_MS while paused. jobgate holds about HIGH
 * plus one piece of libcurl's (16 KiB) per streamed answer, whatever its size. */
#define STREAM_HIGH_WATER ((size_t)256 * 1024)
#define STREAM_LOW_WATER  ((size_t)64 * 1024)
#define DRAIN_CHECK_MS    5

/* Client headers that go upstream with a forwarded call (besides the body):
 * what the cloud's APIs read. Never the client's own credentials (X-Auth-
 * Token is sent as the mode says; Authorization, X-Api-Key never). */
static const char *const passed_headers[] = {"Content-Type", "X-Client-Token", "X-Language"};
#define NPASSED (sizeof(passed_headers) / sizeof(passed_headers[0]))

/* Upstream's response headers that go back to the client with its answer
 * (Content-Type always; Retry-After as well, from upstream.c's parse). */
static const char *const answer_headers[] = {"Content-Type", "Allow", "Location", "ETag", "Last-Modified"};
/* Not sent on: hop-by-hop headers (Connection, Keep-Alive, Transfer-
 * Encoding, Upgrade, Trailer...) are evhttp's to write for the client's own
 * connection, and Content-Length goes as upstream announced it
 * (reply_stream_start), so neither list holds them. No Content-Encoding:
 * jobgate asks for no compression (libcurl sends no Accept-Encoding). */
#define NANSWER (sizeof(answer_headers) / sizeof(answer_headers[0]))

struct forward_call {
    struct gateway *gw;
    struct job_request *jr; /* NULL once the client went away */
    struct ruleset *rules;  /* the reference that keeps `rule` */
    const struct rule *rule;
    enum forward_state state;
    struct callpolicy_upstream *up;           /* a reference */
    struct callpolicy_pending *admit_pending; /* ADMITTING, while Redis is asked */
    struct callpolicy_verdict admitted;       /* the verdict that let the call go */
    int holds_admission;                      /* admitted, its end not reported yet */
    struct credentials_wait *cred_wait;       /* CREDENTIALS, while IAM is asked */
    struct event *admit_timer;                /* QUEUE (kept once made) */
    struct upstream_call *call;               /* CALLING */
    int64_t queued_until_ms;
    const char *method;
    char *url;
    struct evbuffer *body_buf; /* the client's body, moved (not copied) from evhttp's request */
    const char *body;          /* in body_buf, made one piece: what libcurl sends (may be a secret: wiped) */
    size_t body_len;
    /* STREAMING and ENDING: the answer as it goes to the client. */
    struct evbuffer *piece; /* one piece of libcurl's on its way to evhttp_send_reply_chunk */
    struct event *drain_timer;
    int paused;        /* the transfer waits for the client to read (UPSTREAM_DATA_PAUSE) */
    int chunked;       /* the answer has no Content-Length: chunked, the end is the 0 chunk */
    int broken;        /* ENDING: upstream failed mid-body; the connection is cut once the bytes it sent are out */
    int status;        /* upstream's, as sent on */
    uint64_t sent;     /* body bytes handed to evhttp */
    int64_t called_us; /* when the upstream call went out (clock_mono_us) */
    char *token;       /* X-Auth-Token to send, or NULL (a secret: wiped) */
    char **headers;    /* the rule's add_headers, then the passed ones: "Name: value" */
    size_t nheaders;
    char project[ROUTE_MAX_PATH + 1]; /* "" for none */
    char request_id[REQID_MAX + 1];
    LIST_ENTRY(forward_call) link;
};

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

/* Free `fc` in whatever state, dropping what it waits for (not the upstream call). */
static void call_free(struct forward_call *fc)
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

/* Answer the client (when still there) with `err`, and free the call. */
static void fail(struct forward_call *fc, const struct client_error *err)
{
    struct job_request *jr = fc->jr;
    call_free(fc);
    if (jr)
        request_answer_error(jr, err);
}

/* ----------------------------------------------------------- the answer */

/* Bytes of the answer waiting to be written to the client: evhttp's buffer
 * and the one below it (frontend.c moves the answer down to the socket's). */
static size_t client_queue(struct evhttp_connection *evcon)
{
    struct bufferevent *bev = evhttp_connection_get_bufferevent(evcon);
    struct bufferevent *under = bufferevent_get_underlying(bev);
    return evbuffer_get_length(bufferevent_get_output(bev)) +
           (under ? evbuffer_get_length(bufferevent_get_output(under)) : 0);
}

/* The streamed answer broke off (`client_gone`: the client left; else
 * upstream failed after the head): stop the transfer when it still runs,
 * cut the client's connection, audit, free. Not from a libcurl callback. */
static void stream_cut(struct forward_call *fc, int client_gone)
{
    struct job_request *jr = fc->jr;
    int status = fc->status;
    uint64_t sent = fc->sent;
    if (fc->call) {
        upstream_cancel(fc->gw->upstream, fc->call); /* closes the upstream connection */
        fc->call = NULL;
        if (jr)
            jr->upstream_us = clock_mono_us() - fc->called_us;
        /* Upstream answered (the head); what it still had to send is dropped. */
        struct upstream_response seen = {.status = status, .fault = FAULT_NONE, .retry_after = -1};
        metrics_count_upstream(fc->gw->metrics, fc->rule->name, status, FAULT_NONE, clock_mono_us() - fc->called_us);
        fc->holds_admission = 0;
        callpolicy_report(fc->up, &fc->admitted, &seen);
    }
    call_free(fc);
    if (jr)
        request_forward_cut(jr, status, sent, client_gone);
}

/* The whole body is out: the answer's end. */
static void stream_end(struct forward_call *fc)
{
    struct job_request *jr = fc->jr;
    int status = fc->status;
    uint64_t sent = fc->sent;
    call_free(fc);
    request_forward_end(jr, status, sent);
}

/* While paused (STREAMING) or ending (ENDING): has the client read enough? */
static void on_drain_check(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct forward_call *fc = arg;
    struct job_request *jr = fc->jr;
    struct evhttp_connection *evcon = evhttp_request_get_connection(jr->req);
    if (!evcon) { /* evhttp gave up on the connection (a write failed, or timed out) */
        log_info("request %s: client connection lost after %llu bytes of a forwarded answer", jr->request_id,
                 (unsigned long long)fc->sent);
        stream_cut(fc, 1);
        return;
    }
    size_t queued = client_queue(evcon);
    if (fc->state == FORWARD_ENDING && queued == 0) {
        fc->broken ? stream_cut(fc, 0) : stream_end(fc);
        return;
    }
    if (fc->state == FORWARD_STREAMING && queued <= STREAM_LOW_WATER) {
        fc->paused = 0;
        upstream_resume(fc->gw->upstream, fc->call); /* on_data may pause it again, from inside */
        return;
    }
    struct timeval tv = {0, DRAIN_CHECK_MS * 1000};
    evtimer_add(fc->drain_timer, &tv);
}

static int arm_drain_check(struct forward_call *fc)
{
    if (!fc->drain_timer && !(fc->drain_timer = evtimer_new(fc->gw->base, on_drain_check, fc)))
        return -1;
    struct timeval tv = {0, DRAIN_CHECK_MS * 1000};
    return evtimer_add(fc->drain_timer, &tv);
}

/* upstream_head_cb: the status and headers are in. Sent on at once, as the
 * cloud sent them. From inside libcurl. */
static int on_upstream_head(const struct upstream_head *head, void *arg)
{
    struct forward_call *fc = arg;
    struct job_request *jr = fc->jr;
    if (!jr)
        return -1; /* the client left while upstream worked: the call ran once; its answer is nobody's */
    const char *type = "application/json;charset=UTF-8";
    struct evkeyvalq *out = evhttp_request_get_output_headers(jr->req);
    for (size_t i = 0; i < head->nkept; i++) {
        const char *line = head->kept[i], *colon = strchr(line, ':');
        if (strncasecmp(line, "Content-Type:", 13) == 0) {
            type = colon + 2;
        } else {
            char name[32];
            snprintf(name, sizeof(name), "%.*s", (int)(colon - line), line);
            evhttp_add_header(out, name, colon + 2);
        }
    }
    if (!(fc->piece = evbuffer_new()))
        return -1;
    fc->state = FORWARD_STREAMING;
    fc->status = head->status;
    jr->upstream_status = head->status;
    jr->upstream_us = clock_mono_us() - fc->called_us; /* to the head; the whole transfer once it ends */
    fc->chunked = head->content_length < 0;
    request_forward_begin(jr, head->status, type, head->content_length, head->retry_after);
    return 0;
}

/* upstream_data_cb: a piece of the body. Sent on unless the client has
 * HIGH bytes still to read: then the transfer pauses. From inside libcurl. */
static enum upstream_data on_upstream_data(const char *data, size_t len, void *arg)
{
    struct forward_call *fc = arg;
    struct job_request *jr = fc->jr;
    struct evhttp_connection *evcon = jr ? evhttp_request_get_connection(jr->req) : NULL;
    if (!evcon)
        return UPSTREAM_DATA_ABORT; /* the client is gone: on_upstream_done cuts */
    if (client_queue(evcon) > STREAM_HIGH_WATER) {
        if (!fc->paused && arm_drain_check(fc) < 0)
            return UPSTREAM_DATA_ABORT;
        fc->paused = 1;
        return UPSTREAM_DATA_PAUSE;
    }
    if (evbuffer_add(fc->piece, data, len) < 0)
        return UPSTREAM_DATA_ABORT;
    evhttp_send_reply_chunk(jr->req, fc->piece);
    evbuffer_drain(fc->piece, evbuffer_get_length(fc->piece)); /* a HEAD, 204 or 304 sends none */
    fc->sent += len;
    return UPSTREAM_DATA_TAKEN;
}

static void on_upstream_done(const struct upstream_response *resp, void *arg)
{
    struct forward_call *fc = arg;
    struct gateway *gw = fc->gw;
    assert(fc->state == FORWARD_CALLING || fc->state == FORWARD_STREAMING);
    fc->call = NULL;
    /* A transfer we stopped after the head (client gone) was answered all
     * the same: the guard and the metrics see that answer. */
    struct upstream_response seen = *resp;
    if (resp->aborted && resp->head_seen) {
        seen.fault = FAULT_NONE; /* resp->status is the head's */
    }
    metrics_count_upstream(gw->metrics, fc->rule->name, seen.status, seen.fault, seen.elapsed_us);
    fc->holds_admission = 0;
    callpolicy_report(fc->up, &fc->admitted, &seen);
    if (fc->project[0] && seen.fault == FAULT_NONE && seen.status == 401 && gw->credentials &&
        credentials_mode(gw->credentials) == CRED_IAM)
        credentials_token_rejected(gw->credentials, fc->project, 0); /* the next call gets a new one; not this one */
    struct job_request *jr = fc->jr;
    if (!jr) {
        log_info("forwarded %s %s answered %d after its client left", fc->method, fc->rule->name, seen.status);
        call_free(fc);
        return;
    }
    jr->upstream_us = resp->elapsed_us;
    if (fc->state == FORWARD_STREAMING) {
        if (resp->fault != FAULT_NONE) {
            /* The head is out: no error answer can follow. A cut connection
             * (or a short chunked body) is what tells the client. */
            if (resp->aborted) { /* on_upstream_data found the client gone */
                stream_cut(fc, 1);
                return;
            }
            log_warn("forwarded %s for rule %s: upstream %s after %llu bytes of the body: %s; cutting the "
                     "client's connection once they are written",
                     fc->method, fc->rule->name, fault_name(resp->fault), (unsigned long long)fc->sent,
                     resp->fault_detail);
            fc->broken = 1;
            fc->state = FORWARD_ENDING;
            if (arm_drain_check(fc) < 0)
                stream_cut(fc, 0);
            return;
        }
        /* evhttp ends an answer with a Content-Length at once when its own
         * buffer is empty, and may then close the connection: wait until
         * the bytes below it are written too. */
        struct evhttp_connection *evcon = evhttp_request_get_connection(jr->req);
        if (!evcon) { /* evhttp gave up on the client's connection */
            stream_cut(fc, 1);
            return;
        }
        if (fc->chunked || !client_queue(evcon)) {
            stream_end(fc);
            return;
        }
        fc->state = FORWARD_ENDING;
        if (arm_drain_check(fc) < 0)
            stream_cut(fc, 0);
        return;
    }
    jr->upstream_status = resp->fault == FAULT_NONE ? resp->status : 0;
    if (resp->fault != FAULT_NONE) {
        log_warn("forwarded %s for rule %s: upstream %s: %s", fc->method, fc->rule->name, fault_name(resp->fault),
                 resp->fault_detail);
        struct client_error err;
        errmap_from_fault(&fc->rule->errors, resp->fault, &err);
        fail(fc, &err);
        return;
    }
    /* Done without a head (cannot happen with libcurl: kept safe). */
    call_free(fc);
    request_answer_forward(jr, resp->status, "application/json;charset=UTF-8", "", 0, resp->retry_after);
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
        fail(fc, &err);
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
        .keep_headers = answer_headers,
        .nkeep_headers = NANSWER,
        .on_head = on_upstream_head,
        .on_data = on_upstream_data,
    };
    fc->state = FORWARD_CALLING;
    fc->called_us = clock_mono_us();
    /* From here a client that went away is seen by the writes of its answer
     * failing (evhttp drops the connection: on_upstream_data, on_drain_check),
     * not by the end of its input: a half-close looks the same on the wire
     * (EV_CLOSED), and a client that half-closed after its request still
     * reads its answer (flight.c does the same). */
    if (fc->jr && fc->jr->gone_watch) {
        event_free(fc->jr->gone_watch);
        fc->jr->gone_watch = NULL;
    }
    fc->call = upstream_fetch(gw->upstream, &ureq, on_upstream_done, fc); /* never calls back from inside */
    if (!fc->call) {
        give_back_admission(fc);
        struct client_error err;
        errmap_from_fault(&rule->errors, FAULT_INTERNAL, &err);
        fail(fc, &err);
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
        fail(fc, &err);
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
    if (fc->state == FORWARD_ENDING) {
        /* A client that read the last byte and closed before the next
         * drain check: a whole answer. */
        struct evhttp_connection *evcon = evhttp_request_get_connection(jr->req);
        if (evcon && client_queue(evcon) == 0 && !fc->broken) {
            stream_end(fc); /* evhttp then reads the close, and frees the connection */
            return 1;
        }
        if (evcon && client_queue(evcon) == 0)
            client_gone = 0; /* it got every byte there was: cut for upstream's failure */
    }
    if (fc->state == FORWARD_STREAMING || fc->state == FORWARD_ENDING) {
        stream_cut(fc, client_gone); /* a head went out: nothing else can be said */
        return 1;
    }
    if (jr->gone_watch) {
        event_free(jr->gone_watch);
        jr->gone_watch = NULL;
    }
    jr->forward = NULL;
    fc->jr = NULL;
    if (fc->state != FORWARD_CALLING)
        call_free(fc); /* never sent: an admission it holds is given back */
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
    call_free(fc);
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
        call_free(fc);
    }
}
