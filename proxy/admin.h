/*
 * admin: the operational endpoints. On the admin listener (admin.listen):
 * /healthz with details (version, pid, cache endpoint and state, upstream
 * credentials, audit log, guard, counts) and /metrics (Prometheus text),
 * behind a client key granted `admin` when admin.client_auth is on; any
 * other path is 404. On a client listener only /healthz, saying `ok` or
 * `degraded` and nothing else, for load balancers.
 *
 * The frontend calls these on the event loop's thread with a view of what
 * they may read; they answer the request (evhttp takes it back) and keep
 * nothing.
 */
#ifndef JOBGATE_ADMIN_H
#define JOBGATE_ADMIN_H

#include <stddef.h>

#include "reply.h"

struct evhttp_request;
struct gateway;
struct cache;
struct metrics;

/* What the endpoints read (all borrowed). */
struct admin_view {
    struct gateway *gw;
    struct cache *cache;
    struct metrics *metrics;
    size_t connections; /* open client connections */
    int client_auth;    /* admin.client_auth: a key granted admin is required */
};

/* A request on the admin listener, for `path`. */
void admin_serve(const struct admin_view *v, struct evhttp_request *req, const char *path,
                 const struct reply_meta *meta);

/* GET /healthz on a client listener: {"status":"ok"} or {"status":"degraded"}. */
void admin_serve_public_healthz(const struct admin_view *v, struct evhttp_request *req, const struct reply_meta *meta);

#endif
