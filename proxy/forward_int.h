/*
 * forward_int: what the two files of forward share, not for other modules
 * (forward.h is their one contract, and draws the life of a call):
 *
 *   forward.c         the call: admission by the guard, jobgate's
 *                     credentials, the upstream request, the client
 *                     hanging up before the answer, the start;
 *   forward_stream.c  the answer: its head and body sent on as upstream
 *                     sends them, with backpressure, its end or its cut,
 *                     and what the guard and the metrics learn from it.
 *
 * A forward_call is owned by its job_request while the client is there
 * (jr->forward), then by itself; forward_call_free frees it in any state.
 * Everything runs on the event loop's thread.
 */
#ifndef JOBGATE_FORWARD_INT_H
#define JOBGATE_FORWARD_INT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include "callpolicy.h"
#include "reqid.h"
#include "route.h"

struct client_error;
struct evbuffer;
struct event;
struct gateway;
struct job_request;
struct rule;
struct ruleset;
struct upstream_call;
struct upstream_request;
struct upstream_response;

enum forward_state {
    FORWARD_ADMITTING,   /* asking the upstream's guard (at once, or Redis) */
    FORWARD_QUEUE,       /* over the rate limit: waiting for a token */
    FORWARD_CREDENTIALS, /* admitted; waiting for jobgate's credentials */
    FORWARD_CALLING,     /* the upstream call is out */
    FORWARD_STREAMING,   /* the answer's head went to the client; its body follows as it comes */
    FORWARD_ENDING, /* upstream is done (or failed: `broken`); the last bytes are leaving before the end or the cut */
};

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

/* ----------------------------------------------------------- forward.c */

/* Free `fc` in whatever state, dropping what it waits for (not the
 * upstream call); an admission it holds is given back. */
void forward_call_free(struct forward_call *fc);

/* Answer the client (when still there) with `err`, and free the call. */
void forward_fail(struct forward_call *fc, const struct client_error *err);

/* ---------------------------------------------------- forward_stream.c */

/* Set `req` up to stream its answer to `fc`'s client: the response headers
 * sent on, the head and data callbacks. Pass forward_stream_done, with
 * `fc`, to upstream_fetch. */
void forward_stream_request(struct upstream_request *req);

/* upstream_done_cb (`arg`: the call): the guard, the metrics and the
 * credentials learn the answer; the client gets the end of it, or an
 * error answer when no head went out, or its connection cut. */
void forward_stream_done(const struct upstream_response *resp, void *arg);

/* The client left (`client_gone`) or shutdown, while the answer streams
 * (STREAMING, ENDING): ended if every byte had been read, else cut; `fc`
 * and the client's request are let go. Returns 1; 0 (nothing done) in any
 * other state. */
int forward_stream_leave(struct forward_call *fc, int client_gone);

#endif
