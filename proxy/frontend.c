#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <event2/util.h>

#include "cache.h"
#include "frontend.h"
#include "gateway.h"
#include "metrics.h"
#include "reply.h"

struct frontend {
    struct evhttp *http;
    struct evhttp_bound_socket *bound;
    struct gateway *gw;
    struct cache *cache;
    struct metrics *metrics;
    int port;
};

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
    cJSON_AddNumberToObject(c, "errors", (double)h.errors);
    cJSON_AddNumberToObject(c, "timeouts", (double)h.timeouts);
    cJSON_AddNumberToObject(o, "in_flight", (double)gateway_in_flight(fe->gw));
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
    size_t len = evbuffer_get_length(buf);
    reply_text(req, 200, "text/plain; version=0.0.4; charset=utf-8", (const char *)evbuffer_pullup(buf, -1), len, meta);
    evbuffer_free(buf);
}

static void on_request(struct evhttp_request *req, void *arg)
{
    struct frontend *fe = arg;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    int is_health = path && strcmp(path, "/healthz") == 0;
    int is_metrics = path && strcmp(path, "/metrics") == 0;
    if (!is_health && !is_metrics) {
        gateway_handle(fe->gw, req);
        return;
    }
    char request_id[40];
    gateway_new_request_id(request_id, sizeof(request_id));
    struct reply_meta meta = {.request_id = request_id, .outcome = OUTCOME_BYPASS, .age_s = -1};
    if (!admin_method_ok(req, &meta))
        return;
    if (is_health)
        serve_healthz(fe, req, &meta);
    else
        serve_metrics(fe, req, &meta);
}

/* The listening socket. With reuse_port each worker process binds its own
 * on the same address (SO_REUSEPORT) and the kernel spreads connections
 * over them; a plain bind otherwise, so that a second jobgate on the same
 * port is refused rather than silently sharing it. */
static struct evhttp_bound_socket *bind_listener(struct event_base *base, struct evhttp *http,
                                                 const struct frontend_conf *conf)
{
    if (!conf->reuse_port)
        return evhttp_bind_socket_with_handle(http, conf->host, (ev_uint16_t)conf->port);
    char text[300];
    snprintf(text, sizeof(text), strchr(conf->host, ':') ? "[%s]:%d" : "%s:%d", conf->host, conf->port);
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

struct frontend *frontend_new(struct event_base *base, const struct frontend_conf *conf, struct gateway *gw,
                              struct cache *cache, struct metrics *metrics, char *err, size_t errlen)
{
    struct frontend *fe = calloc(1, sizeof(*fe));
    if (!fe) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    fe->gw = gw;
    fe->cache = cache;
    fe->metrics = metrics;
    fe->http = evhttp_new(base);
    if (!fe->http) {
        snprintf(err, errlen, "cannot create the HTTP server");
        free(fe);
        return NULL;
    }
    /* Every method reaches us, so that a wrong one gets our 405 with a JSON body. */
    evhttp_set_allowed_methods(fe->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT |
                                             EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
                                             EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
    struct timeval tv = {(time_t)(conf->client_timeout_ms / 1000),
                         (suseconds_t)((conf->client_timeout_ms % 1000) * 1000)};
    evhttp_set_timeout_tv(fe->http, &tv);
    evhttp_set_max_headers_size(fe->http, (ev_ssize_t)conf->max_header_bytes);
    /* Bodies are refused (400) by the gateway; this only bounds what is read. */
    evhttp_set_max_body_size(fe->http, 64 * 1024);
    evhttp_set_default_content_type(fe->http, "application/json;charset=UTF-8");
    evhttp_set_gencb(fe->http, on_request, fe);

    fe->bound = bind_listener(base, fe->http, conf);
    if (!fe->bound) {
        snprintf(err, errlen, "cannot listen on %s:%d (address in use, or not this host's?)", conf->host, conf->port);
        evhttp_free(fe->http);
        free(fe);
        return NULL;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    fe->port = conf->port;
    if (getsockname(evhttp_bound_socket_get_fd(fe->bound), (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET)
            fe->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        else if (ss.ss_family == AF_INET6)
            fe->port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    return fe;
}

int frontend_port(const struct frontend *fe)
{
    return fe->port;
}

void frontend_stop_accepting(struct frontend *fe)
{
    if (fe->bound) {
        evhttp_del_accept_socket(fe->http, fe->bound);
        fe->bound = NULL;
    }
}

void frontend_free(struct frontend *fe)
{
    if (!fe)
        return;
    evhttp_free(fe->http);
    free(fe);
}
