/*
 * frontend: the HTTP side clients talk to (libevent evhttp). It owns the
 * listening sockets (plain or TLS) and hands every request to the gateway
 * but GET /healthz, which it answers itself with only {"status":"ok"} or
 * {"status":"degraded"} (for load balancers; nothing else is shown there).
 *
 * The admin listener (admin.listen, loopback by default, or none) is apart
 * from the client listeners: it answers GET /healthz with the details (cache
 * endpoint and state, pid, version, counts) and GET /metrics, and 404 to
 * anything else; with admin.client_auth it wants a client key granted
 * `admin: true` (401 without one, 403 for another key). /metrics on a client
 * listener is an unknown route there (404, or 401/403 first with client keys).
 * With several workers each binds the admin address with SO_REUSEPORT, as
 * the client listeners: a scrape reads the worker the kernel picked.
 *
 * Strict framing: evhttp reads each connection through a filter that passes
 * a request head only once httpframe (httpframe.h) has checked it whole, then
 * its body. A refused head becomes a request carrying HTTPFRAME_MARKER, which
 * the gateway answers 400 (JG.BAD_FRAMING, Connection: close), in order after
 * the requests before it, audited; nothing after it on the connection is read.
 * A client's half-close is held back until every request it sent is answered.
 *
 * It also enforces the limits that protect jobgate from hostile or broken
 * clients, each answered from the documented table or by closing, logged
 * and counted (jobgate_events_total):
 *   - max_connections: at the bound the listeners stop accepting (new
 *     clients wait in the kernel's backlog) until a connection closes;
 *   - header_timeout: a new connection must send its first byte within this
 *     long of being accepted (silent sockets), and a request must arrive
 *     whole within this long of its first byte (slowloris), else the
 *     connection is closed;
 *   - keepalive_timeout: a kept-alive connection that sends nothing for this
 *     long after an answer is closed;
 *   - max_requests_per_connection: the last answer says Connection: close;
 *   - max_header_bytes / max_uri_bytes: checked by the gateway (400 from the
 *     table, audited like any answer); the framing filter refuses a head
 *     larger than their sum plus 1 KiB, and evhttp's own caps (4x) are never
 *     reached, so evhttp never answers 413 itself;
 *   - request bodies: refused by the gateway with 400, or on forward routes
 *     with 413 above the rule's forward.max_body (by the filter above twice
 *     the rules' largest, at least FRONTEND_MAX_BODY_BYTES).
 */
#ifndef JOBGATE_FRONTEND_H
#define JOBGATE_FRONTEND_H

#include <stddef.h>
#include <stdint.h>

/* A request announcing a larger body (Content-Length) than the larger of
 * this and twice the rules' largest forward.max_body is refused with 400
 * before evhttp reads it, so that a forwarded body between the two gets
 * forward's own 413. */
#define FRONTEND_MAX_BODY_BYTES (2 * 1024 * 1024)
/* The framing filter's bound follows the rules (gateway_max_body_bytes,
 * at least the above, at most 2 x 64 MiB); evhttp's own cap is this, above
 * any of them, so that evhttp never answers 413 itself. */
#define FRONTEND_HARD_MAX_BODY_BYTES ((uint64_t)256 * 1024 * 1024)

struct event_base;
struct gateway;
struct cache;
struct metrics;
struct frontend;

struct listener_conf {
    char *host;
    int port;       /* 0: any free port (see frontend_port) */
    char *tls_cert; /* PEM certificate chain and key: HTTPS; both NULL: plain HTTP */
    char *tls_key;
    int client_auth; /* 1: requests need a client key (when a keys file is configured) */
};

/* Filled by config.c (struct config owns the listeners and their strings),
 * but reuse_port, which main sets. frontend_new copies what it keeps. */
struct frontend_conf {
    struct listener_conf *listeners; /* at least one */
    size_t nlisteners;
    int64_t client_timeout_ms; /* read/write inactivity timeout of a connection */
    int64_t header_timeout_ms;
    int64_t keepalive_timeout_ms;
    size_t max_connections;
    unsigned max_requests_per_connection;
    size_t max_header_bytes;
    size_t max_uri_bytes;
    /* The admin listener: host NULL for none (admin.listen: off); tls_cert
     * unused; client_auth: wants a key granted admin (admin.client_auth). */
    struct listener_conf admin;
    int allow_bare_lf; /* accept request lines ending in LF alone (RFC 9112 section 2.2 allows it; off by default) */
    int reuse_port;    /* one of several worker processes on these addresses (SO_REUSEPORT) */
};

/* Bind every listener and start serving. Returns NULL with a message on
 * failure. The frontend borrows gateway, cache and metrics. */
struct frontend *frontend_new(struct event_base *base, const struct frontend_conf *conf, struct gateway *gw,
                              struct cache *cache, struct metrics *metrics, char *err, size_t errlen);

/* The port actually bound by listener `i`. */
int frontend_port(const struct frontend *fe, size_t i);

/* The port the admin listener bound, or -1 when there is none. */
int frontend_admin_port(const struct frontend *fe);

/* SIGHUP: read every TLS listener's certificate and key again. A listener
 * whose new files do not load keeps its old ones (the error is logged).
 * New connections use the new certificate; open ones keep theirs. */
void frontend_reload_tls(struct frontend *fe, const struct listener_conf *listeners, size_t n);

/* Open client connections. */
size_t frontend_connections(const struct frontend *fe);

/* Stop accepting new connections; open ones are served until closed. */
void frontend_stop_accepting(struct frontend *fe);

/* Close every connection and free. */
void frontend_free(struct frontend *fe);

#endif
