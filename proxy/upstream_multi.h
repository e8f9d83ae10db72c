/*
 * upstream_multi: libcurl's multi socket interface driven by a libevent
 * loop, the glue under upstream.c (as hiredis's libevent adapter is under
 * redis_link). It owns one CURLM, the events that watch the sockets
 * libcurl names (CURLMOPT_SOCKETFUNCTION) and the timer libcurl asks for
 * (CURLMOPT_TIMERFUNCTION). It knows nothing of the transfers: the caller
 * adds and removes the easy handles on `multi` itself, and reads
 * curl_multi_info_read in `progress`, which fires after every
 * curl_multi_socket_action this module makes (a socket ready, the timer),
 * from the loop, never from inside a libcurl call of the caller's.
 *
 * Ownership: the socket events are made and freed here as libcurl asks;
 * those of kept-alive connections libcurl closes without telling are freed
 * by upstream_multi_close. Everything runs on the loop's thread.
 */
#ifndef JOBGATE_UPSTREAM_MULTI_H
#define JOBGATE_UPSTREAM_MULTI_H

#include <sys/queue.h>

#include <curl/curl.h>

struct event;
struct event_base;
struct upstream_multi_sock;

struct upstream_multi {
    struct event_base *base;
    CURLM *multi; /* the caller's to add easy handles to and read messages from */
    struct event *timer;
    LIST_HEAD(, upstream_multi_sock) socks; /* what libcurl asked to watch */
    void (*progress)(void *arg);            /* after each curl_multi_socket_action */
    void *arg;
};

/* Make `m`'s multi handle and timer on `base` and hand libcurl the socket
 * and timer callbacks. Returns 0, or -1 (out of memory, or libcurl would
 * not start): `m` must still be closed with upstream_multi_close. */
int upstream_multi_init(struct upstream_multi *m, struct event_base *base, void (*progress)(void *arg), void *arg);

/* Free the multi handle (after every easy handle was removed from it), then
 * the socket events left and the timer. `m` as left by upstream_multi_init,
 * even a failed one. */
void upstream_multi_close(struct upstream_multi *m);

#endif
