#include <search.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "admin.h"
#include "audit.h"
#include "cache.h"
#include "callpolicy.h"
#include "clientkeys.h"
#include "clock.h"
#include "credentials.h"
#include "frontend.h"
#include "frontend_frame.h"
#include "gateway.h"
#include "log.h"
#include "metrics.h"
#include "reply.h"
#include "reqid.h"

/* How often open connections are checked for the header and keep-alive
 * timeouts and for having been closed by evhttp. */
#define SWEEP_INTERVAL_MS 250

/* Connections the kernel completes before jobgate accepts them (clamped by
 * net.core.somaxconn). evhttp's own 128 drops the SYNs of a burst, which
 * then wait for the client's retransmit: a second or more. */
#define LISTEN_BACKLOG 1024

struct frontend;

struct listener {
    struct frontend *fe;
    struct evhttp *http;
    struct evhttp_bound_socket *bound;
    SSL_CTX *tls;    /* NULL: plain HTTP */
    int client_auth; /* client listener: keys wanted; admin listener: a key granted admin wanted */
    int admin;       /* the admin listener */
    int port;
};

/* One client connection, from accept to close. evhttp 2.1 tells nobody
 * when it frees a connection that never carried a request, so the frontend
 * holds a reference on each connection's bufferevent and notices the free
 * (its callbacks cleared) on the next sweep.
 *
 * evhttp reads through the framing filter (frontend_frame.h), which owns
 * this block: bytes reach evhttp only once httpframe has passed the whole
 * head they belong to, and the client's half-close is held back until
 * every request passed has been answered. */
struct client_conn {
    struct frontend_frame frame; /* first (frontend_frame.h); frame.bev: key in the frontend's index */
    struct frontend *fe;
    struct listener *listener;
    struct evbuffer_cb_entry *input_watch; /* on frame.under's input: bytes as they arrive */
    int64_t idle_since_ms;                 /* accept or last answer; 0 while a request is served */
    int64_t reading_since_ms;              /* first byte of the next request; 0: none yet */
    unsigned requests;
    TAILQ_ENTRY(client_conn) link;
};
_Static_assert(offsetof(struct client_conn, frame) == 0, "the filter frees the block it owns through its frame");
TAILQ_HEAD(client_conn_list, client_conn);

struct frontend {
    struct event_base *base;
    struct listener *listeners; /* the client listeners */
    size_t nlisteners;
    struct listener admin; /* admin.http NULL: none */
    struct gateway *gw;
    struct cache *cache;
    struct metrics *metrics;
    struct frontend_conf conf;             /* listeners not kept */
    struct frontend_frame_conf frame_conf; /* what the framing filters check heads against */
    struct client_conn_list conns;
    void *conn_index; /* tsearch tree of client_conn by bufferevent */
    size_t nconns;
    int accepting; /* listeners enabled (not stopped, not paused at max_connections) */
    int stopped;
    struct event *sweep;
};

/* ------------------------------------------------------------ connections */

static int conn_compare(const void *a, const void *b)
{
    const struct bufferevent *x = ((const struct client_conn *)a)->frame.bev,
                             *y = ((const struct client_conn *)b)->frame.bev;
    return x < y ? -1 : x > y;
}

static struct client_conn *conn_of(struct frontend *fe, struct bufferevent *bev)
{
    struct client_conn probe = {.frame.bev = bev};
    void *found = tfind(&probe, &fe->conn_index, conn_compare);
    return found ? *(struct client_conn **)found : NULL;
}

static void set_accepting(struct frontend *fe, int on)
{
    if (fe->stopped || fe->accepting == on)
        return;
    fe->accepting = on;
    for (size_t i = 0; i < fe->nlisteners; i++) {
        struct evconnlistener *l =
            fe->listeners[i].bound ? evhttp_bound_socket_get_listener(fe->listeners[i].bound) : NULL;
        if (l)
            on ? evconnlistener_enable(l) : evconnlistener_disable(l);
    }
    if (!on) {
        metrics_count_event(fe->metrics, EVENT_ACCEPT_PAUSED);
        log_warn("%zu client connections: at max_connections, not accepting more until some close", fe->nconns);
    }
}

/* Bytes arrived: the next request has started (for header_timeout). */
static void on_input(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    (void)buf;
    struct client_conn *c = arg;
    if (info->n_added && !c->reading_since_ms && c->idle_since_ms)
        c->reading_since_ms = clock_mono_us() / 1000;
}

static void conn_forget(struct frontend *fe, struct client_conn *c)
{
    TAILQ_REMOVE(&fe->conns, c, link);
    tdelete(c, &fe->conn_index, conn_compare);
    if (c->frame.answered < c->frame.passed) {
        metrics_count_event(fe->metrics, EVENT_CLOSED_UNANSWERED);
        log_debug("a client connection closed with %u of %u requests unanswered", c->frame.passed - c->frame.answered,
                  c->frame.passed);
    }
    evbuffer_remove_cb_entry(bufferevent_get_input(c->frame.under), c->input_watch);
    c->input_watch = NULL;
    frontend_frame_hold_none(&c->frame); /* no EOF held from here */
    /* evhttp freed the filter already, or frontend_free does; it frees
     * `under` and then `c` (frontend_frame.h), perhaps later (libevent finalizes
     * bufferevents from the loop). */
    bufferevent_decref(c->frame.bev);
    fe->nconns--;
    if (fe->nconns < fe->conf.max_connections)
        set_accepting(fe, 1);
}

/* Close a connection evhttp still holds: it sees the EOF and frees it. */
static void conn_shut(struct client_conn *c)
{
    evutil_socket_t fd = bufferevent_getfd(c->frame.bev);
    if (fd >= 0)
        shutdown(fd, SHUT_RDWR);
}

static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct frontend *fe = arg;
    int64_t now = clock_mono_us() / 1000;
    struct client_conn *c, *next;
    for (c = TAILQ_FIRST(&fe->conns); c; c = next) {
        next = TAILQ_NEXT(c, link);
        bufferevent_event_cb eventcb = NULL;
        bufferevent_getcb(c->frame.bev, NULL, NULL, &eventcb, NULL);
        if (!eventcb || bufferevent_getfd(c->frame.bev) < 0) { /* evhttp has let it go */
            conn_forget(fe, c);
            continue;
        }
        if (!c->idle_since_ms)
            continue; /* a request is being served: the gateway's business */
        if (c->reading_since_ms && now - c->reading_since_ms > fe->conf.header_timeout_ms) {
            metrics_count_event(fe->metrics, EVENT_HEADER_TIMEOUT);
            log_info("closing a client connection: no whole request within %lld ms of its first byte",
                     (long long)fe->conf.header_timeout_ms);
            conn_shut(c);
        } else if (!c->reading_since_ms && !c->frame.answered && now - c->idle_since_ms > fe->conf.header_timeout_ms) {
            /* Accepted and silent: a socket that holds a connection slot
             * must start a request as soon as a slow one must finish it. */
            metrics_count_event(fe->metrics, EVENT_HEADER_TIMEOUT);
            log_debug("closing a client connection: no first byte within %lld ms of accepting it",
                      (long long)fe->conf.header_timeout_ms);
            conn_shut(c);
        } else if (!c->reading_since_ms && c->frame.answered &&
                   now - c->idle_since_ms > fe->conf.keepalive_timeout_ms) {
            metrics_count_event(fe->metrics, EVENT_KEEPALIVE_TIMEOUT);
            log_debug("closing a client connection idle for %lld ms", (long long)(now - c->idle_since_ms));
            conn_shut(c);
        }
    }
}

/* The largest Content-Length the filter passes: the rules' (gateway.h), at
 * least FRONTEND_MAX_BODY_BYTES. */
static uint64_t body_bound(void *arg)
{
    const struct frontend *fe = arg;
    uint64_t rules = gateway_max_body_bytes(fe->gw);
    return rules > FRONTEND_MAX_BODY_BYTES ? rules : FRONTEND_MAX_BODY_BYTES;
}

/* evhttp asks for the bufferevent of each accepted connection: this is
 * where a connection starts being tracked (and TLS and the framing filter
 * are set up). evhttp then gives the filter the socket (bufferevent_setfd,
 * which the filter passes down) and reads and writes through it. */
static struct bufferevent *on_new_connection(struct event_base *base, void *arg)
{
    struct listener *l = arg;
    struct frontend *fe = l->fe;
    struct bufferevent *under;
    if (l->tls) {
        SSL *ssl = SSL_new(l->tls);
        if (!ssl)
            return NULL;
        under = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                               BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    } else {
        under = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    }
    if (!under)
        return NULL;
    /* Owned by the filter (frontend_frame.h), which owns `under`. */
    struct client_conn *c = calloc(1, sizeof(*c));
    struct bufferevent *bev = frontend_frame_new(base, under, c ? &c->frame : NULL, &fe->frame_conf, l->tls != NULL);
    if (!bev || !c)
        return bev; /* out of memory: see frontend_frame_new */
    c->fe = fe;
    c->listener = l;
    c->idle_since_ms = clock_mono_us() / 1000;
    c->input_watch = evbuffer_add_cb(bufferevent_get_input(under), on_input, c);
    if (!c->input_watch || !tsearch(c, &fe->conn_index, conn_compare)) {
        /* Served, untracked: no EOF is held (nothing counts the answers). */
        if (c->input_watch)
            evbuffer_remove_cb_entry(bufferevent_get_input(under), c->input_watch);
        c->input_watch = NULL;
        frontend_frame_hold_none(&c->frame);
        return bev;
    }
    bufferevent_incref(bev);
    TAILQ_INSERT_TAIL(&fe->conns, c, link);
    if (++fe->nconns >= fe->conf.max_connections)
        set_accepting(fe, 0);
    return bev;
}

static void on_request_complete(struct evhttp_request *req, void *arg)
{
    (void)req;
    struct client_conn *c = arg;
    c->idle_since_ms = clock_mono_us() / 1000;
    c->reading_since_ms = 0;
    frontend_frame_answered(&c->frame);
}

/* ------------------------------------------------------------- requests */

static void on_request(struct evhttp_request *req, void *arg)
{
    struct listener *l = arg;
    struct frontend *fe = l->fe;
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct client_conn *c = evcon ? conn_of(fe, evhttp_connection_get_bufferevent(evcon)) : NULL;
    if (c) {
        c->idle_since_ms = 0;
        c->reading_since_ms = 0;
        evhttp_request_set_on_complete_cb(req, on_request_complete, c);
        if (++c->requests >= fe->conf.max_requests_per_connection)
            evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
    }

    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    int is_health = path && strcmp(path, "/healthz") == 0;
    if (!l->admin && !is_health) {
        gateway_handle(fe->gw, req, l->client_auth); /* /metrics too: no such route here */
        return;
    }
    char request_id[40];
    reqid_new(request_id, sizeof(request_id));
    struct reply_meta meta = {.request_id = request_id, .outcome = OUTCOME_BYPASS, .age_s = -1};
    struct admin_view view = {.gw = fe->gw,
                              .cache = fe->cache,
                              .metrics = fe->metrics,
                              .connections = fe->nconns,
                              .client_auth = fe->admin.client_auth};
    if (l->admin)
        admin_serve(&view, req, path, &meta);
    else
        admin_serve_public_healthz(&view, req, &meta);
}

/* ---------------------------------------------------------------- setup */

/* A server TLS context from PEM files. Returns NULL with a message. */
static SSL_CTX *tls_context_new(const char *cert, const char *key, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        snprintf(err, errlen, "cannot create a TLS context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        snprintf(err, errlen, "cannot load TLS certificate '%s': %s", cert, ERR_reason_error_string(ERR_get_error()));
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, errlen, "cannot load TLS key '%s' (or it does not match the certificate): %s", key,
                 ERR_reason_error_string(ERR_get_error()));
        SSL_CTX_free(ctx);
        return NULL;
    }
    ERR_clear_error();
    return ctx;
}

/* The listening socket. With reuse_port each worker process binds its own
 * on the same address (SO_REUSEPORT) and the kernel spreads connections
 * over them; a plain bind otherwise, so that a second jobgate on the same
 * port is refused rather than silently sharing it. */
static struct evhttp_bound_socket *bind_listener(struct event_base *base, struct evhttp *http,
                                                 const struct listener_conf *lc, int reuse_port)
{
    if (!reuse_port) {
        struct evhttp_bound_socket *bound = evhttp_bind_socket_with_handle(http, lc->host, (ev_uint16_t)lc->port);
        if (bound)
            listen(evhttp_bound_socket_get_fd(bound), LISTEN_BACKLOG); /* a second listen() sets the backlog */
        return bound;
    }
    char text[300];
    snprintf(text, sizeof(text), strchr(lc->host, ':') ? "[%s]:%d" : "%s:%d", lc->host, lc->port);
    struct sockaddr_storage ss;
    int sl = sizeof(ss);
    if (evutil_parse_sockaddr_port(text, (struct sockaddr *)&ss, &sl) < 0)
        return NULL;
    struct evconnlistener *l = evconnlistener_new_bind(
        base, NULL, NULL, LEV_OPT_REUSEABLE | LEV_OPT_REUSEABLE_PORT | LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC,
        LISTEN_BACKLOG, (struct sockaddr *)&ss, sl);
    if (!l)
        return NULL;
    struct evhttp_bound_socket *bound = evhttp_bind_listener(http, l);
    if (!bound)
        evconnlistener_free(l);
    return bound;
}

static int bound_port(struct evhttp_bound_socket *bound, int fallback)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getsockname(evhttp_bound_socket_get_fd(bound), (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET)
            return ntohs(((struct sockaddr_in *)&ss)->sin_port);
        if (ss.ss_family == AF_INET6)
            return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    return fallback;
}

static int listener_start(struct frontend *fe, struct listener *l, const struct listener_conf *lc, char *err,
                          size_t errlen)
{
    const struct frontend_conf *conf = &fe->conf;
    l->fe = fe;
    l->client_auth = lc->client_auth;
    l->admin = l == &fe->admin;
    if (!l->admin && lc->tls_cert && !(l->tls = tls_context_new(lc->tls_cert, lc->tls_key, err, errlen)))
        return -1;
    l->http = evhttp_new(fe->base);
    if (!l->http) {
        snprintf(err, errlen, "cannot create the HTTP server");
        return -1;
    }
    /* Every method reaches us, so that a wrong one gets our 405 with a JSON body. */
    evhttp_set_allowed_methods(l->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT |
                                            EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
                                            EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
    struct timeval tv = {(time_t)(conf->client_timeout_ms / 1000),
                         (suseconds_t)((conf->client_timeout_ms % 1000) * 1000)};
    evhttp_set_timeout_tv(l->http, &tv);
    /* Our own bounds answer 400 from the table; evhttp's hard cap (413) only
     * bounds what one connection can make us buffer. */
    size_t hard_cap = 4 * (conf->max_header_bytes + conf->max_uri_bytes);
    evhttp_set_max_headers_size(l->http, (ev_ssize_t)hard_cap);
    /* The framing filter refuses a Content-Length above gateway_max_body_bytes
     * (400); job requests with a body are refused (400) by the gateway, and
     * forwarded ones bounded by their rule's forward.max_body (at most 64 MiB).
     * evhttp's own cap (413) is set above all of these, so that it never answers. */
    evhttp_set_max_body_size(l->http, (ev_ssize_t)FRONTEND_HARD_MAX_BODY_BYTES);
    /* None: every answer of ours names its own (reply.c, where it rides in
     * the header block evhttp cannot see into), and evhttp's own errors
     * (evhttp_send_error) set text/html. */
    evhttp_set_default_content_type(l->http, NULL);
    evhttp_set_gencb(l->http, on_request, l);
    evhttp_set_bevcb(l->http, on_new_connection, l);
    l->bound = bind_listener(fe->base, l->http, lc, conf->reuse_port);
    if (!l->bound) {
        snprintf(err, errlen, "cannot listen on %s:%d%s (address in use, or not this host's?)", lc->host, lc->port,
                 l->admin ? " (admin.listen)" : "");
        return -1;
    }
    l->port = bound_port(l->bound, lc->port);
    return 0;
}

struct frontend *frontend_new(struct event_base *base, const struct frontend_conf *conf, struct gateway *gw,
                              struct cache *cache, struct metrics *metrics, char *err, size_t errlen)
{
    struct frontend *fe = calloc(1, sizeof(*fe));
    if (!fe || !(fe->listeners = calloc(conf->nlisteners ? conf->nlisteners : 1, sizeof(*fe->listeners)))) {
        snprintf(err, errlen, "out of memory");
        free(fe);
        return NULL;
    }
    fe->base = base;
    fe->gw = gw;
    fe->cache = cache;
    fe->metrics = metrics;
    fe->conf = *conf;
    fe->conf.listeners = NULL;
    fe->conf.admin.host = NULL; /* borrowed from the config: not kept */
    /* A head may be as large as the gateway's own limits allow, plus 1 KiB:
     * the gateway answers those from the table (frontend.h). */
    fe->frame_conf = (struct frontend_frame_conf){.max_head_bytes = conf->max_header_bytes + conf->max_uri_bytes + 1024,
                                                  .allow_bare_lf = conf->allow_bare_lf,
                                                  .max_body = body_bound,
                                                  .arg = fe,
                                                  .metrics = metrics};
    fe->accepting = 1;
    TAILQ_INIT(&fe->conns);
    fe->sweep = event_new(base, -1, EV_PERSIST, on_sweep, fe);
    struct timeval every = {0, SWEEP_INTERVAL_MS * 1000};
    if (!fe->sweep || event_add(fe->sweep, &every) < 0) {
        snprintf(err, errlen, "out of memory");
        frontend_free(fe);
        return NULL;
    }
    /* The admin listener first: once a client can connect, so can monitoring. */
    if (conf->admin.host && listener_start(fe, &fe->admin, &conf->admin, err, errlen) < 0) {
        frontend_free(fe);
        return NULL;
    }
    for (size_t i = 0; i < conf->nlisteners; i++) {
        fe->nlisteners++;
        if (listener_start(fe, &fe->listeners[i], &conf->listeners[i], err, errlen) < 0) {
            frontend_free(fe);
            return NULL;
        }
    }
    return fe;
}

int frontend_admin_port(const struct frontend *fe)
{
    return fe->admin.http ? fe->admin.port : -1;
}

int frontend_port(const struct frontend *fe, size_t i)
{
    return i < fe->nlisteners ? fe->listeners[i].port : -1;
}

size_t frontend_connections(const struct frontend *fe)
{
    return fe->nconns;
}

void frontend_reload_tls(struct frontend *fe, const struct listener_conf *listeners, size_t n)
{
    for (size_t i = 0; i < fe->nlisteners && i < n; i++) {
        struct listener *l = &fe->listeners[i];
        if (!l->tls || !listeners[i].tls_cert)
            continue;
        char err[512];
        SSL_CTX *fresh = tls_context_new(listeners[i].tls_cert, listeners[i].tls_key, err, sizeof(err));
        if (!fresh) {
            log_error("reload: listener %s:%d keeps its TLS certificate: %s", listeners[i].host, l->port, err);
            continue;
        }
        SSL_CTX_free(l->tls); /* connections still using it hold their own references */
        l->tls = fresh;
        log_info("reload: listener %s:%d has a new TLS certificate", listeners[i].host, l->port);
    }
}

void frontend_stop_accepting(struct frontend *fe)
{
    for (size_t i = 0; i < fe->nlisteners; i++) {
        if (fe->listeners[i].bound) {
            evhttp_del_accept_socket(fe->listeners[i].http, fe->listeners[i].bound);
            fe->listeners[i].bound = NULL;
        }
    }
    if (fe->admin.bound) {
        evhttp_del_accept_socket(fe->admin.http, fe->admin.bound);
        fe->admin.bound = NULL;
    }
    fe->stopped = 1;
}

void frontend_free(struct frontend *fe)
{
    if (!fe)
        return;
    fe->stopped = 1; /* no listener to resume once connections are forgotten */
    for (size_t i = 0; i < fe->nlisteners; i++) {
        if (fe->listeners[i].http)
            evhttp_free(fe->listeners[i].http); /* frees the open connections */
        SSL_CTX_free(fe->listeners[i].tls);
    }
    if (fe->admin.http)
        evhttp_free(fe->admin.http);
    struct client_conn *c;
    while ((c = TAILQ_FIRST(&fe->conns)) != NULL)
        conn_forget(fe, c);
    if (fe->sweep)
        event_free(fe->sweep);
    free(fe->listeners);
    free(fe);
}
