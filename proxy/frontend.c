#include <search.h>
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

#include "audit.h"
#include "cache.h"
#include "clock.h"
#include "credentials.h"
#include "frontend.h"
#include "gateway.h"
#include "log.h"
#include "metrics.h"
#include "reply.h"
#include "reqid.h"

/* How often open connections are checked for the header and keep-alive
 * timeouts and for having been closed by evhttp. */
#define SWEEP_INTERVAL_MS 250

struct frontend;

struct listener {
    struct frontend *fe;
    struct evhttp *http;
    struct evhttp_bound_socket *bound;
    SSL_CTX *tls; /* NULL: plain HTTP */
    int client_auth;
    int port;
};

/* One client connection, from accept to close. evhttp 2.1 tells nobody
 * when it frees a connection that never carried a request, so the frontend
 * holds a reference on each connection's bufferevent and notices the free
 * (its callbacks cleared) on the next sweep. */
struct client_conn {
    struct bufferevent *bev; /* key in the frontend's index */
    struct listener *listener;
    struct evbuffer_cb_entry *input_watch;
    int64_t idle_since_ms;    /* accept or last answer; 0 while a request is served */
    int64_t reading_since_ms; /* first byte of the next request; 0: none yet */
    unsigned requests;
    TAILQ_ENTRY(client_conn) link;
};
TAILQ_HEAD(client_conn_list, client_conn);

struct frontend {
    struct event_base *base;
    struct listener *listeners;
    size_t nlisteners;
    struct gateway *gw;
    struct cache *cache;
    struct metrics *metrics;
    struct frontend_conf conf; /* listeners not kept */
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
    const struct bufferevent *x = ((const struct client_conn *)a)->bev, *y = ((const struct client_conn *)b)->bev;
    return x < y ? -1 : x > y;
}

static struct client_conn *conn_of(struct frontend *fe, struct bufferevent *bev)
{
    struct client_conn probe = {.bev = bev};
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
    evbuffer_remove_cb_entry(bufferevent_get_input(c->bev), c->input_watch);
    bufferevent_decref(c->bev); /* evhttp freed it already, or frontend_free does */
    free(c);
    fe->nconns--;
    if (fe->nconns < fe->conf.max_connections)
        set_accepting(fe, 1);
}

/* Close a connection evhttp still holds: it sees the EOF and frees it. */
static void conn_shut(struct client_conn *c)
{
    evutil_socket_t fd = bufferevent_getfd(c->bev);
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
        bufferevent_getcb(c->bev, NULL, NULL, &eventcb, NULL);
        if (!eventcb || bufferevent_getfd(c->bev) < 0) { /* evhttp has let it go */
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
        } else if (!c->reading_since_ms && now - c->idle_since_ms > fe->conf.keepalive_timeout_ms) {
            metrics_count_event(fe->metrics, EVENT_KEEPALIVE_TIMEOUT);
            log_debug("closing a client connection idle for %lld ms", (long long)(now - c->idle_since_ms));
            conn_shut(c);
        }
    }
}

/* evhttp asks for the bufferevent of each accepted connection: this is
 * where a connection starts being tracked (and TLS is set up). */
static struct bufferevent *on_new_connection(struct event_base *base, void *arg)
{
    struct listener *l = arg;
    struct frontend *fe = l->fe;
    struct bufferevent *bev;
    if (l->tls) {
        SSL *ssl = SSL_new(l->tls);
        if (!ssl)
            return NULL;
        bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                             BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    } else {
        bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    }
    struct client_conn *c = bev ? calloc(1, sizeof(*c)) : NULL;
    if (!c)
        return bev; /* served, untracked */
    c->bev = bev;
    c->listener = l;
    c->idle_since_ms = clock_mono_us() / 1000;
    c->input_watch = evbuffer_add_cb(bufferevent_get_input(bev), on_input, c);
    if (!c->input_watch || !tsearch(c, &fe->conn_index, conn_compare)) {
        if (c->input_watch)
            evbuffer_remove_cb_entry(bufferevent_get_input(bev), c->input_watch);
        free(c);
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
}

/* ------------------------------------------------------------- requests */

static int admin_method_ok(struct evhttp_request *req, const struct reply_meta *meta)
{
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    if (cmd == EVHTTP_REQ_GET || cmd == EVHTTP_REQ_HEAD)
        return 1;
    struct client_error e;
    client_error_set(&e, 405, "JG.METHOD_NOT_ALLOWED", "this endpoint answers GET and HEAD only");
    evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
    reply_error(req, &e, meta);
    return 0;
}

/* Liveness plus the state of the cache store. Always 200 while the process
 * answers: with Redis down jobgate still serves, through upstream. */
static void serve_healthz(struct frontend *fe, struct evhttp_request *req, const struct reply_meta *meta)
{
    struct cache_health h;
    cache_health(fe->cache, &h);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", h.up ? "ok" : "degraded");
    cJSON_AddStringToObject(o, "version", PACKAGE_VERSION);
    cJSON_AddNumberToObject(o, "pid", (double)getpid()); /* which worker answered */
    cJSON *c = cJSON_AddObjectToObject(o, "cache");
    cJSON_AddStringToObject(c, "backend", h.backend);
    cJSON_AddStringToObject(c, "state", h.state);
    if (h.endpoint[0])
        cJSON_AddStringToObject(c, "endpoint", h.endpoint);
    cJSON_AddNumberToObject(c, "errors", (double)h.errors);
    cJSON_AddNumberToObject(c, "timeouts", (double)h.timeouts);
    cJSON_AddNumberToObject(c, "rejected", (double)h.rejected);
    cJSON_AddStringToObject(c, "coalescing", h.coalescing ? h.coalescing : "none");
    if (h.last_error[0])
        cJSON_AddStringToObject(c, "last_error", h.last_error);
    struct credentials *creds = gateway_credentials(fe->gw);
    if (creds) {
        struct credentials_stats cs;
        credentials_stats(creds, &cs);
        cJSON *u = cJSON_AddObjectToObject(o, "upstream_auth");
        cJSON_AddStringToObject(u, "mode", credentials_mode_name(credentials_mode(creds)));
        if (credentials_mode(creds) == CRED_IAM) {
            cJSON_AddBoolToObject(u, "iam_ok", cs.iam_ok);
            cJSON_AddNumberToObject(u, "tokens_held", (double)cs.tokens_held);
            if (!cs.iam_ok)
                cJSON_ReplaceItemInObject(o, "status", cJSON_CreateString("degraded"));
        }
    }
    struct audit *audit = gateway_audit(fe->gw);
    if (audit) {
        struct audit_health ah;
        audit_health(audit, &ah);
        cJSON *a = cJSON_AddObjectToObject(o, "audit");
        cJSON_AddBoolToObject(a, "ok", ah.ok);
        cJSON_AddStringToObject(a, "on_failure", ah.fail_closed ? "refuse" : "continue");
        cJSON_AddNumberToObject(a, "written", (double)ah.written);
        cJSON_AddNumberToObject(a, "dropped", (double)ah.dropped);
        cJSON_AddNumberToObject(a, "buffered_bytes", (double)ah.buffered);
        if (ah.last_error[0])
            cJSON_AddStringToObject(a, "last_error", ah.last_error);
        if (!ah.ok)
            cJSON_ReplaceItemInObject(o, "status", cJSON_CreateString("degraded"));
    }
    cJSON_AddNumberToObject(o, "in_flight", (double)gateway_in_flight(fe->gw));
    cJSON_AddNumberToObject(o, "connections", (double)fe->nconns);
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    reply_text(req, 200, "application/json;charset=UTF-8", text ? text : "{}", text ? strlen(text) : 2, meta);
    cJSON_free(text);
}

static void serve_metrics(struct frontend *fe, struct evhttp_request *req, const struct reply_meta *meta)
{
    struct cache_health h;
    cache_health(fe->cache, &h);
    struct evbuffer *buf = evbuffer_new();
    if (!buf) {
        evhttp_send_error(req, 500, "Internal Server Error");
        return;
    }
    metrics_render(fe->metrics, &h, gateway_in_flight(fe->gw), buf);
    struct credentials *creds = gateway_credentials(fe->gw);
    if (creds) {
        struct credentials_stats cs;
        credentials_stats(creds, &cs);
        evbuffer_add_printf(buf,
                            "# HELP jobgate_iam_calls_total IAM token requests sent.\n"
                            "# TYPE jobgate_iam_calls_total counter\njobgate_iam_calls_total %llu\n"
                            "# HELP jobgate_iam_failures_total IAM token requests that gave no token.\n"
                            "# TYPE jobgate_iam_failures_total counter\njobgate_iam_failures_total %llu\n"
                            "# HELP jobgate_iam_tokens Projects jobgate holds an IAM token for.\n"
                            "# TYPE jobgate_iam_tokens gauge\njobgate_iam_tokens %zu\n",
                            (unsigned long long)cs.iam_calls, (unsigned long long)cs.iam_failures, cs.tokens_held);
    }
    struct audit *audit = gateway_audit(fe->gw);
    if (audit) {
        struct audit_health ah;
        audit_health(audit, &ah);
        evbuffer_add_printf(buf,
                            "# HELP jobgate_audit_ok Whether the audit log is being written (1) or failing (0).\n"
                            "# TYPE jobgate_audit_ok gauge\njobgate_audit_ok %d\n"
                            "# HELP jobgate_audit_lines_total Audit lines written.\n"
                            "# TYPE jobgate_audit_lines_total counter\njobgate_audit_lines_total %llu\n"
                            "# HELP jobgate_audit_dropped_total Audit lines lost (sink failing).\n"
                            "# TYPE jobgate_audit_dropped_total counter\njobgate_audit_dropped_total %llu\n"
                            "# HELP jobgate_audit_write_errors_total Failed audit writes and reopens.\n"
                            "# TYPE jobgate_audit_write_errors_total counter\njobgate_audit_write_errors_total %llu\n",
                            ah.ok, (unsigned long long)ah.written, (unsigned long long)ah.dropped,
                            (unsigned long long)ah.write_errors);
    }
    evbuffer_add_printf(buf,
                        "# HELP jobgate_client_connections Open client connections.\n"
                        "# TYPE jobgate_client_connections gauge\njobgate_client_connections %zu\n",
                        fe->nconns);
    size_t len = evbuffer_get_length(buf);
    reply_text(req, 200, "text/plain; version=0.0.4; charset=utf-8", (const char *)evbuffer_pullup(buf, -1), len, meta);
    evbuffer_free(buf);
}

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
    int is_metrics = path && strcmp(path, "/metrics") == 0;
    if (!is_health && !is_metrics) {
        gateway_handle(fe->gw, req, l->client_auth);
        return;
    }
    char request_id[40];
    reqid_new(request_id, sizeof(request_id));
    struct reply_meta meta = {.request_id = request_id, .outcome = OUTCOME_BYPASS, .age_s = -1};
    if (!admin_method_ok(req, &meta))
        return;
    if (is_health)
        serve_healthz(fe, req, &meta);
    else
        serve_metrics(fe, req, &meta);
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
    if (!reuse_port)
        return evhttp_bind_socket_with_handle(http, lc->host, (ev_uint16_t)lc->port);
    char text[300];
    snprintf(text, sizeof(text), strchr(lc->host, ':') ? "[%s]:%d" : "%s:%d", lc->host, lc->port);
    struct sockaddr_storage ss;
    int sl = sizeof(ss);
    if (evutil_parse_sockaddr_port(text, (struct sockaddr *)&ss, &sl) < 0)
        return NULL;
    struct evconnlistener *l = evconnlistener_new_bind(
        base, NULL, NULL, LEV_OPT_REUSEABLE | LEV_OPT_REUSEABLE_PORT | LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC,
        1024, (struct sockaddr *)&ss, sl);
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
    if (lc->tls_cert && !(l->tls = tls_context_new(lc->tls_cert, lc->tls_key, err, errlen)))
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
    /* Job requests with a body are refused (400) by the gateway, and
     * forwarded ones bounded by their rule's forward.max_body (at most
     * 1 MiB): this only bounds what is read. */
    evhttp_set_max_body_size(l->http, 1024 * 1024);
    evhttp_set_default_content_type(l->http, "application/json;charset=UTF-8");
    evhttp_set_gencb(l->http, on_request, l);
    evhttp_set_bevcb(l->http, on_new_connection, l);
    l->bound = bind_listener(fe->base, l->http, lc, conf->reuse_port);
    if (!l->bound) {
        snprintf(err, errlen, "cannot listen on %s:%d (address in use, or not this host's?)", lc->host, lc->port);
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
    fe->accepting = 1;
    TAILQ_INIT(&fe->conns);
    fe->sweep = event_new(base, -1, EV_PERSIST, on_sweep, fe);
    struct timeval every = {0, SWEEP_INTERVAL_MS * 1000};
    if (!fe->sweep || event_add(fe->sweep, &every) < 0) {
        snprintf(err, errlen, "out of memory");
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
    struct client_conn *c;
    while ((c = TAILQ_FIRST(&fe->conns)) != NULL)
        conn_forget(fe, c);
    if (fe->sweep)
        event_free(fe->sweep);
    free(fe->listeners);
    free(fe);
}
