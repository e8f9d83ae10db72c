/*
 * upstream: HTTP(S) requests to the cloud API with libcurl's multi socket
 * interface, driven by the daemon's one libevent loop: no thread, no
 * blocking call. Connections are kept alive and reused (libcurl's connection
 * cache); TLS peers are always verified.
 *
 * The module knows nothing of jobs: it sends a GET (or a POST with a body:
 * jobgate's own IAM token requests; or any method of a forwarded call) and
 * reports either an HTTP status with its body or a transport fault. Nothing
 * is retried; a call marked `once` is never resent on a new connection by
 * libcurl either.
 *
 * Secrets: the token, the credential header lines, the request body and the
 * captured response header are never logged, and the module's copies of
 * them are wiped before they are freed.
 *
 * Streaming (forwarded calls): a request with `on_head` set gets its
 * answer's status and headers as soon as they are in (on_head), then each
 * piece of its body as libcurl delivers it (on_data), and the body is never
 * gathered, so upstream_conf.max_body_bytes does not bound it. on_data may
 * refuse a piece for now (UPSTREAM_DATA_PAUSE: libcurl keeps it and pauses
 * the transfer until upstream_resume) or stop the transfer
 * (UPSTREAM_DATA_ABORT). The done callback fires last, as for any call.
 * A streamed call's timeout_ms bounds each wait for upstream (for the head,
 * then between pieces), never the time the caller keeps it paused: an
 * answer may take as long as its reader needs.
 */
#ifndef JOBGATE_UPSTREAM_H
#define JOBGATE_UPSTREAM_H

#include <stddef.h>
#include <stdint.h>

#include "fault.h"

struct event_base;
struct upstream;
struct upstream_call;

struct upstream_conf {
    char *ca_file;         /* CA bundle for verifying upstream; NULL: the system's */
    size_t max_body_bytes; /* larger answers are FAULT_OVERSIZED */
    long max_connections;  /* per upstream host */
    char *user_agent;
    /* TESTS ONLY (upstream.connect_to): libcurl CURLOPT_CONNECT_TO lines,
     * "HOST:PORT:CONNECT-TO-HOST:CONNECT-TO-PORT", so that region host names
     * reach a loopback simulator without DNS. NULL-terminated; NULL: none. */
    char **connect_to;
};

/* Everything borrowed only for the duration of upstream_fetch: the module
 * copies what it keeps. */
/* What on_head is told: the final status (never a 1xx) and the headers. */
struct upstream_head {
    int status;
    long retry_after;       /* seconds from a Retry-After header, -1 if none */
    int64_t content_length; /* the Content-Length announced, -1 if none (chunked, or until close) */
    char *const *kept;      /* as upstream_response.kept */
    size_t nkept;
};

/* on_data's verdicts. */
enum upstream_data {
    UPSTREAM_DATA_TAKEN, /* the piece is the caller's now */
    UPSTREAM_DATA_PAUSE, /* not taken: libcurl holds it, the transfer pauses until upstream_resume */
    UPSTREAM_DATA_ABORT, /* not taken: end the transfer (the done callback says `aborted`) */
};

/* Streaming callbacks: they fire from inside libcurl (the event loop's
 * thread), so they must not call upstream_cancel, upstream_resume or
 * upstream_fetch; they report what they want through their return values.
 * on_head fires once, before any on_data, when the final status line and
 * its headers are in; returning -1 aborts the transfer. */
typedef int (*upstream_head_cb)(const struct upstream_head *head, void *arg);
typedef enum upstream_data (*upstream_data_cb)(const char *data, size_t len, void *arg);

struct upstream_request {
    const char *method; /* "GET" (also when NULL), "HEAD", or with a body: "POST", "PUT", "PATCH", "DELETE" */
    int once;           /* must reach the server at most once (not idempotent): a fresh connection */
    const char *url;
    const char *request_id; /* sent as X-Request-Id */
    const char *auth_token; /* sent as X-Auth-Token when not NULL; never logged */
    int64_t connect_timeout_ms;
    int64_t
        timeout_ms; /* the whole call; streaming: the wait for the head, and each wait for a piece while not paused */
    char *const *add_headers; /* "Name: value" lines sent as well (a rule's) */
    size_t nadd_headers;
    char *const *auth_headers; /* more "Name: value" lines, secret (credentials_get's): never logged */
    size_t nauth_headers;
    char *const *drop_headers; /* default headers not to send: X-Request-Id, Accept, User-Agent, X-Auth-Token */
    size_t ndrop_headers;
    const void
        *body; /* POST and the others with a body: the body (may hold a secret), `body_len` bytes; NULL for none */
    size_t body_len;
    const char *content_type;        /* POST: its Content-Type; NULL: none sent */
    const char *capture_header;      /* report this response header's value in `captured`; NULL: none */
    const char *const *keep_headers; /* report these response headers (names) in `kept`; never secrets */
    size_t nkeep_headers;
    /* `body` is the caller's and stays valid, unchanged, until the done
     * callback or upstream_cancel: sent from there, not copied. 0: copied. */
    int body_borrowed;
    /* Streaming (above), with the done callback's `arg`; NULL: the answer is gathered whole. */
    upstream_head_cb on_head;
    upstream_data_cb on_data;
};

struct upstream_response {
    int status; /* HTTP status, 0 when fault != FAULT_NONE */
    enum upstream_fault fault;
    const char *fault_detail; /* libcurl's words, for the log */
    const char *body;         /* owned by the module, valid during the callback */
    size_t len;
    long retry_after; /* seconds from a Retry-After header, -1 if none */
    int64_t elapsed_us;
    /* The value of the request's capture_header (blanks around it removed;
     * the last one if it came more than once), NULL if absent or not asked.
     * Owned by the module, valid during the callback; may be a secret (IAM's
     * X-Subject-Token): never log it. */
    const char *captured;
    /* The response headers named in keep_headers, as "Name: value" (the
     * name as the request spelt it; blanks around the value removed), in
     * the order received. Owned by the module, valid during the callback. */
    char *const *kept;
    size_t nkept;
    /* Streaming: the body was handed to on_data, `len` bytes of it, and
     * `body` is NULL. `head_seen`: on_head fired (status is the one it was
     * told, even with a fault: the body broke off after the head). */
    int head_seen;
    int aborted; /* a streaming callback stopped the transfer (fault is FAULT_INTERNAL) */
};

/* Called once per upstream_fetch, from the event loop, never from inside
 * upstream_fetch. `resp` and its body are valid only during the call. */
typedef void (*upstream_done_cb)(const struct upstream_response *resp, void *arg);

/* The upstream keeps its own copy of `conf`. */
struct upstream *upstream_new(struct event_base *base, const struct upstream_conf *conf, char *err, size_t errlen);

/* Start a GET or a POST. Returns a handle for upstream_cancel, or NULL if it could not
 * start (then the callback is never called). */
struct upstream_call *upstream_fetch(struct upstream *u, const struct upstream_request *req, upstream_done_cb cb,
                                     void *arg);

/* Resume a transfer that on_data paused (UPSTREAM_DATA_PAUSE): the piece
 * it refused is delivered again, maybe before this returns. Not from a
 * streaming callback. */
void upstream_resume(struct upstream *u, struct upstream_call *call);

/* Abandon a call: its callback will not be called. Not from a streaming
 * callback (return UPSTREAM_DATA_ABORT there). An unfinished transfer's
 * connection is closed. */
void upstream_cancel(struct upstream *u, struct upstream_call *call);

size_t upstream_in_flight(const struct upstream *u);

/* Frees everything; calls in flight are dropped without their callbacks. */
void upstream_free(struct upstream *u);

#endif
