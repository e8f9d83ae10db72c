/*
 * libcurl's multi socket interface on the libevent loop (upstream_multi.h
 * is the contract): libcurl names the sockets to watch and the timeout it
 * wants, the loop tells it when either is due.
 */
#include <stdlib.h>

#include <event2/event.h>

#include "upstream_multi.h"

/* What libcurl asked us to watch on one socket. */
struct upstream_multi_sock {
    struct upstream_multi *m;
    curl_socket_t fd;
    struct event *ev;
    LIST_ENTRY(upstream_multi_sock) link;
};

static void on_socket_event(evutil_socket_t fd, short what, void *arg)
{
    struct upstream_multi *m = arg;
    int action = ((what & EV_READ) ? CURL_CSELECT_IN : 0) | ((what & EV_WRITE) ? CURL_CSELECT_OUT : 0);
    int running;
    curl_multi_socket_action(m->multi, fd, action, &running);
    m->progress(m->arg);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct upstream_multi *m = arg;
    int running;
    curl_multi_socket_action(m->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    m->progress(m->arg);
}

/* CURLMOPT_TIMERFUNCTION: libcurl wants to be called after timeout_ms. */
static int on_curl_timer(CURLM *multi, long timeout_ms, void *arg)
{
    struct upstream_multi *m = arg;
    if (timeout_ms < 0) {
        evtimer_del(m->timer);
        return 0;
    }
    /* 0 means "as soon as possible": still go through the loop, never recurse. */
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    evtimer_add(m->timer, &tv);
    return 0;
}

/* CURLMOPT_SOCKETFUNCTION: watch or stop watching a socket. */
static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *arg, void *sockp)
{
    struct upstream_multi *m = arg;
    struct upstream_multi_sock *s = sockp;
    if (what == CURL_POLL_REMOVE) {
        if (s) {
            LIST_REMOVE(s, link);
            event_free(s->ev);
            free(s);
            curl_multi_assign(m->multi, fd, NULL);
        }
        return 0;
    }
    short kind = EV_PERSIST | ((what & CURL_POLL_IN) ? EV_READ : 0) | ((what & CURL_POLL_OUT) ? EV_WRITE : 0);
    if (!s) {
        s = calloc(1, sizeof(*s));
        if (!s)
            return -1;
        s->m = m;
        s->fd = fd;
        LIST_INSERT_HEAD(&m->socks, s, link);
        curl_multi_assign(m->multi, fd, s);
    } else {
        event_free(s->ev);
        s->ev = NULL;
    }
    s->ev = event_new(m->base, fd, kind, on_socket_event, m);
    if (!s->ev) {
        LIST_REMOVE(s, link);
        curl_multi_assign(m->multi, fd, NULL);
        free(s);
        return -1;
    }
    event_add(s->ev, NULL);
    return 0;
}

int upstream_multi_init(struct upstream_multi *m, struct event_base *base, void (*progress)(void *arg), void *arg)
{
    m->base = base;
    m->progress = progress;
    m->arg = arg;
    LIST_INIT(&m->socks);
    m->multi = curl_multi_init();
    m->timer = evtimer_new(base, on_timer, m);
    if (!m->multi || !m->timer)
        return -1;
    curl_multi_setopt(m->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(m->multi, CURLMOPT_SOCKETDATA, m);
    curl_multi_setopt(m->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(m->multi, CURLMOPT_TIMERDATA, m);
    return 0;
}

void upstream_multi_close(struct upstream_multi *m)
{
    if (m->multi)
        curl_multi_cleanup(m->multi);
    m->multi = NULL;
    /* Sockets of kept-alive connections libcurl closed without telling us. */
    while (!LIST_EMPTY(&m->socks)) {
        struct upstream_multi_sock *s = LIST_FIRST(&m->socks);
        LIST_REMOVE(s, link);
        if (s->ev)
            event_free(s->ev);
        free(s);
    }
    if (m->timer)
        event_free(m->timer);
    m->timer = NULL;
}
