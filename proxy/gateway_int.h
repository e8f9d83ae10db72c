/*
 * gateway_int: one client request, from arrival to answer, and the gateway
 * state its modules share, with the answering functions (gateway.c). Internal
 * to the gateway (gateway.h is the public contract); three modules share
 * this header, which includes none of them (so the include graph stays
 * one-way: gateway -> request -> flight -> gateway_int):
 *
 *   request.c  intake: bounds, route match, client checks, the cache key,
 *              the cache lookup; a miss joins a flight
 *   flight.c   one upstream call shared by the requests that missed on a key
 *   gateway.c  the gateway's life (settings, drain, shutdown) and answering:
 *              the reply, its audit record, its metrics
 *
 * Ownership: a request belongs to the gateway (its `live` list) from
 * request_intake until answered; while it waits on a flight it is also on
 * the flight's waiters. A request whose cache lookup is still out when it is
 * aborted stays allocated (on `orphans`), with its ruleset reference (the
 * lookup checks what Redis returns against its rule), until that lookup
 * calls back.
 * Everything runs on the event loop's thread.
 */
#ifndef JOBGATE_GATEWAY_INT_H
#define JOBGATE_GATEWAY_INT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include "body.h"
#include "cache_types.h"
#include "errmap.h"
#include "keymap.h"
#include "metrics.h"
#include "reqid.h"
#include "route.h"
#include "tokengrant.h"

#define KEY_MAX 1400 /* a cache key, with its prefix */

struct evhttp_request;
struct event;
struct event_base;
struct gateway;
struct flight;
struct rule;
struct iamregion;
struct iamregion_wait;

struct job_request {
    struct gateway *gw;
    struct evhttp_request *req;  /* NULL once answered */
    struct ruleset *rules;       /* the reference this request holds */
    struct clientkeys *keys;     /* the key set it was checked against (a reference), or NULL */
    const struct client *client; /* who asked (owned by `keys`), NULL when not authenticated */
    struct body *stale;          /* a stale copy to fall back on (a reference), or NULL */
    struct body *grant_body;     /* a hit held while the fleet's grant is asked (a reference), or NULL */
    const struct rule *rule;
    struct flight *flight;
    struct forward_call *forward;    /* a forwarded call (forward.h) under way for it, or NULL */
    const char *forward_project;     /* forwarded: the path's project id (in `match.buf`), or NULL */
    int forwarding;                  /* under a rule's forward prefix, not a job route */
    int by_host_service;             /* its Host SERVICE.REGION.DOMAIN chose the rule: the path is the cloud's own */
    enum route_result found;         /* what the route match found (kept while IAM is asked for the region) */
    struct iamregion_wait *iam_wait; /* waiting for IAM to say the project's region (iamregion.h), or NULL */
    struct event *gone_watch;        /* while waiting on upstream: fires when the client hangs up */
    int64_t wait_deadline_us;        /* while waiting on a flight: answered 504 after this */
    enum cache_outcome outcome;
    enum cache_lease_status lease; /* what its lookup did with the key's lease (cache_get_lease) */
    struct cache_fold fold;        /* the admission folded into that lookup (flight_fold) */
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
    char request_id[REQID_MAX + 1];
    char token_hash[TOKENGRANT_HASH_SIZE]; /* pass-through: the client token's hash; "" otherwise */
    char key[KEY_MAX];
    char region[64]; /* for a rule whose upstream url has {region}: the request's (regions.h); "" otherwise */
    struct route_match match;
};
TAILQ_HEAD(job_request_list, job_request);

/* Written by gateway.c only (gateway_new, gateway_reconfigure); read by all three. */
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
    uint64_t max_body_bytes;         /* gateway_max_body_bytes, from `rules` */
    struct tokengrant *token_grants; /* pass-through mode only */
    int64_t passthrough_window_ms;
    size_t max_waiters;
    int64_t max_wait_ms;
    enum error_shape error_shape; /* where no rule says */
    int watch_hangups;            /* the loop can tell a peer's close apart from data (EV_CLOSED) */
    struct keymap flights;        /* struct flight by flight key (flight.c's) */
    struct callpolicy *policy;    /* the guards of the upstreams */
    struct regions *regions;      /* our copy; NULL: none configured */
    struct iamregion *iamregion;  /* borrowed; NULL: IAM is never asked for a region */
    struct job_request_list live;
    struct job_request_list orphans;    /* answered at shutdown, cache lookup still out */
    LIST_HEAD(, forward_call) forwards; /* forwarded calls under way (forward.c's) */
    size_t in_flight;
    int draining;
    void (*on_idle)(void *arg);
    void *on_idle_arg;
};

/* gateway.c: answering. Each one writes the audit line, replies (which
 * hands the request back to evhttp), counts the request and lets `jr` go:
 * it must not be used afterwards. `jr` must not be waiting on a flight. */
void request_answer_error(struct job_request *jr, const struct client_error *e);
/* `b` is borrowed (the reply takes its own reference); `hit`: sends an Age. */
void request_answer_job(struct job_request *jr, struct body *b, int hit);
/* A forwarded call's answer, as upstream sent it: `status`, `len` bytes of
 * `body` (copied) of `content_type`; `retry_after` >= 0: sent on. */
void request_answer_forward(struct job_request *jr, int status, const char *content_type, const char *body, size_t len,
                            long retry_after);
/* A forwarded answer streamed (forward.c): request_forward_begin sends the
 * head (as request_answer_forward's: Retry-After when `retry_after` >= 0,
 * Content-Length when `content_length` >= 0, else chunked); the forwarder
 * then sends the body with evhttp_send_reply_chunk* on jr->req, and ends
 * with one of the two below, which write the audit line, count the request
 * and let `jr` go. */
void request_forward_begin(struct job_request *jr, int status, const char *content_type, int64_t content_length,
                           long retry_after);
/* The whole body went out (`bytes` of it). */
void request_forward_end(struct job_request *jr, int status, uint64_t bytes);
/* The body broke off after `bytes`: upstream failed mid-body, or the client
 * went away (`client_gone`). The connection is closed (the only way left to
 * tell the client its answer is short); audited with "CUT" or
 * "CLIENT_GONE" in place of the cache outcome. */
void request_forward_cut(struct job_request *jr, int status, uint64_t bytes, int client_gone);
/* Upstream failed, throttled or was held back: answer with the last known
 * state of the job rather than an error, saying so (X-Cache: STALE, Age). */
void request_answer_stale(struct job_request *jr, struct body *b);

/* The client went away unanswered: its audit line (CLIENT_GONE), then let
 * `jr` go. Its evhttp request is left to the caller. */
void request_forget(struct job_request *jr);

#endif
