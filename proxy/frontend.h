/*
 * frontend: the HTTP side clients talk to (libevent evhttp). It owns the
 * listening socket, answers the admin endpoints itself (GET /healthz,
 * GET /metrics) and hands every other request to the gateway.
 */
#ifndef JOBGATE_FRONTEND_H
#define JOBGATE_FRONTEND_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct gateway;
struct cache;
struct metrics;
struct frontend;

struct frontend_conf {
    const char *host;
    int port;                  /* 0: any free port (see frontend_port) */
    int64_t client_timeout_ms; /* read/write timeout of a client connection */
    size_t max_header_bytes;
    int reuse_port; /* one of several worker processes on this address (SO_REUSEPORT) */
};

/* Bind and start serving. Returns NULL with a message on failure. The
 * frontend borrows gateway, cache and metrics. */
struct frontend *frontend_new(struct event_base *base, const struct frontend_conf *conf, struct gateway *gw,
                              struct cache *cache, struct metrics *metrics, char *err, size_t errlen);

/* The port actually bound. */
int frontend_port(const struct frontend *fe);

/* Stop accepting new connections; open ones are served until closed. */
void frontend_stop_accepting(struct frontend *fe);

/* Close every connection and free. */
void frontend_free(struct frontend *fe);

#endif
