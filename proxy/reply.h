/*
 * reply: writing answers to clients. Every answer is JSON with
 * `Content-Type: application/json;charset=UTF-8`, an `X-Request-Id` and an
 * `X-Cache`; hits carry `Age`. A HEAD gets the same headers, no body. Every
 * answer also carries `Date` and `Content-Length`, set here: a cache hit is
 * mostly the cost of writing its headers, and evhttp's own are dearer.
 *
 * Each function sends the reply, which hands the request back to evhttp
 * (the caller must not touch `req` afterwards).
 */
#ifndef JOBGATE_REPLY_H
#define JOBGATE_REPLY_H

#include <stddef.h>
#include <stdint.h>

#include <event2/http.h>

#include "body.h"
#include "errmap.h"
#include "metrics.h"

struct evhttp_request;

struct reply_meta {
    const char *request_id;
    enum cache_outcome outcome;
    int64_t age_s;                /* >= 0: send an Age header */
    int close_connection;         /* draining: ask the client to reconnect elsewhere */
    enum error_shape error_shape; /* how reply_error writes its body */
};

/* Send `b` with its status (200, or a remembered 404), zero-copy: the reply
 * holds a reference until written. */
void reply_job(struct evhttp_request *req, struct body *b, const struct reply_meta *meta);

/* The name of a request's method as the audit line and the signature
 * check read it ("GET"); "" for one evhttp knows and we never name. */
const char *reply_method_name(enum evhttp_cmd_type cmd);

/* Send `e` as its JSON error body in meta->error_shape; adds Retry-After when it has one. */
void reply_error(struct evhttp_request *req, const struct client_error *e, const struct reply_meta *meta);

/* Send `len` bytes of `text` with `content_type` (admin endpoints). */
void reply_text(struct evhttp_request *req, int status, const char *content_type, const char *text, size_t len,
                const struct reply_meta *meta);

/* Start a streamed answer (a forwarded call's): the status line and headers
 * now (those of every answer, `content_type`, Retry-After when
 * `retry_after` >= 0, and Content-Length when `content_length` >= 0, else
 * chunked), the body by evhttp_send_reply_chunk, the end by
 * evhttp_send_reply_end. An HTTP/1.0 client with no length to go by gets
 * the body until the connection closes. */
void reply_stream_start(struct evhttp_request *req, int status, const char *content_type, int64_t content_length,
                        long retry_after, const struct reply_meta *meta);

#endif
