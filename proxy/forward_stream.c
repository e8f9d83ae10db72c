/*
 * The answer of a forwarded call (forward.h draws its life; forward_int.h
 * is what this file shares with forward.c): upstream's status and headers
 * go to the client as soon as they are in, then each piece of the body as
 * libcurl delivers it, chunked or with upstream's Content-Length. The
 * transfer pauses while the client has more than STREAM_HIGH_WATER bytes
 * to read. The answer ends once the client's socket has taken its last
 * byte; when upstream fails after the head, or the client leaves, the
 * client's connection is cut.
 */
#include <assert.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "callpolicy.h"
#include "clock.h"
#include "credentials.h"
#include "forward_int.h"
#include "gateway_int.h"
#include "log.h"
#include "metrics.h"
#include "reply.h"
#include "rules.h"
#include "upstream.h"

/* Backpressure: more than HIGH bytes of answer waiting to be written to the
 * client pauses the upstream transfer; it resumes once they are down to
 * LOW, checked every DRAIN_CHECK_MS while paused. jobgate holds about HIGH
 * plus one piece of libcurl's (16 KiB) per streamed answer, whatever its size. */
#define STREAM_HIGH_WATER ((size_t)256 * 1024)
#define STREAM_LOW_WATER  ((size_t)64 * 1024)
#define DRAIN_CHECK_MS    5

/* Upstream's response headers that go back to the client with its answer
 * (Content-Type always; Retry-After as well, from upstream.c's parse). */
static const char *const answer_headers[] = {"Content-Type", "Allow", "Location", "ETag", "Last-Modified"};
/* Not sent on: hop-by-hop headers (Connection, Keep-Alive, Transfer-
 * Encoding, Upgrade, Trailer...) are evhttp's to write for the client's own
 * connection, and Content-Length goes as upstream announced it
 * (reply_stream_start), so neither this list nor forward.c's passed_headers
 * holds them. No Content-Encoding: jobgate asks for no compression (libcurl
 * sends no Accept-Encoding). */
#define NANSWER (sizeof(answer_headers) / sizeof(answer_headers[0]))

/* Bytes of the answer waiting to be written to the client: evhttp's buffer
 * and the one below it (frontend_frame.c moves the answer down to the
 * socket's). */
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
    forward_call_free(fc);
    if (jr)
        request_forward_cut(jr, status, sent, client_gone);
}

/* The whole body is out: the answer's end. */
static void stream_end(struct forward_call *fc)
{
    struct job_request *jr = fc->jr;
    int status = fc->status;
    uint64_t sent = fc->sent;
    forward_call_free(fc);
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

void forward_stream_done(const struct upstream_response *resp, void *arg)
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
        forward_call_free(fc);
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
        forward_fail(fc, &err);
        return;
    }
    /* Done without a head (cannot happen with libcurl: kept safe). */
    forward_call_free(fc);
    request_answer_forward(jr, resp->status, "application/json;charset=UTF-8", "", 0, resp->retry_after);
}

void forward_stream_request(struct upstream_request *req)
{
    req->keep_headers = answer_headers;
    req->nkeep_headers = NANSWER;
    req->on_head = on_upstream_head;
    req->on_data = on_upstream_data;
}

int forward_stream_leave(struct forward_call *fc, int client_gone)
{
    struct job_request *jr = fc->jr;
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
    return 0;
}
