/*
 * frontend_frame: the framing filter of one client connection, between
 * the socket (or TLS) bufferevent and evhttp (frontend.h, "Strict
 * framing"). evhttp reads through it:
 *
 *   - input: a request head reaches evhttp only once httpframe
 *     (httpframe.h) has checked it whole, then its body (Content-Length)
 *     as it arrives; whole evbuffer chains change hands, no copy. A refused
 *     head is replaced by a request carrying HTTPFRAME_MARKER (the gateway
 *     answers it 400, in order, Connection: close), counted as
 *     EVENT_BAD_FRAMING; every later byte is dropped;
 *   - output: answers go down to the socket once evhttp has added them
 *     whole (written at once on a plain socket with nothing queued), and
 *     evhttp hears "written" only once the socket has taken every byte;
 *   - the client's EOF (a half-close) is held back until every request
 *     passed has been answered (frontend_frame_answered), since evhttp
 *     drops the requests of a connection on its EOF. Errors pass at once.
 *
 * Ownership: struct frontend_frame is the first member of the caller's
 * per-connection state, one block from calloc. From frontend_frame_new on
 * the filter owns that block and frees it (with the filter's own event)
 * when evhttp frees the filter, perhaps later, from the loop: a caller
 * that keeps a pointer to the block holds a reference on the filter
 * (bufferevent_incref) until it lets go of it. The filter owns the
 * socket's bufferevent below it. `conf` is borrowed and must outlive the
 * filter's input.
 *
 * Everything runs on the event loop's thread, from the bufferevents'
 * callbacks.
 */
#ifndef JOBGATE_FRONTEND_FRAME_H
#define JOBGATE_FRONTEND_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include <event2/bufferevent.h>

struct evbuffer_cb_entry;
struct event;
struct event_base;
struct metrics;

/* What the filter checks heads against (the frontend's, shared by all its
 * connections). */
struct frontend_frame_conf {
    size_t max_head_bytes;           /* a longer head is refused */
    int allow_bare_lf;               /* request lines may end in LF alone */
    uint64_t (*max_body)(void *arg); /* the largest Content-Length passed, asked for each head */
    void *arg;                       /* for max_body */
    struct metrics *metrics;         /* counts EVENT_BAD_FRAMING */
};

struct frontend_frame {
    struct bufferevent *bev;   /* the filter evhttp reads */
    struct bufferevent *under; /* the socket (or TLS) bufferevent below it */
    const struct frontend_frame_conf *conf;
    int tls;                               /* `under` is TLS: never written to directly */
    struct evbuffer_cb_entry *output_pass; /* on the filter's output: moves answers down */
    int write_pending;                     /* answer bytes below, not yet written to the socket */
    uint64_t body_left;                    /* of the last head passed, body bytes not yet passed */
    unsigned passed, answered;             /* requests handed to evhttp, and answered */
    int refused;                           /* a head was refused: the rest of the input is dropped */
    short held_eof;                        /* the client's EOF, held until passed == answered (0: none) */
    struct event *release;                 /* delivers held_eof, outside evhttp's callbacks */
    /* The filter's own callbacks on `under`: the frame's sit in front of
     * them, so that the EOF can be held. */
    bufferevent_data_cb filter_readcb, filter_writecb;
    bufferevent_event_cb filter_eventcb;
    void *filter_arg;
};

/* The filter over `under` (a new socket or TLS bufferevent, no fd yet:
 * evhttp sets it), with `f` (zeroed, or NULL when the caller is out of
 * memory: then every byte read is dropped and nothing is written, and
 * evhttp's timeout closes the connection) as its state. Returns the
 * filter, which owns `under` and `f`; or NULL, with both freed. */
struct bufferevent *frontend_frame_new(struct event_base *base, struct bufferevent *under, struct frontend_frame *f,
                                       const struct frontend_frame_conf *conf, int tls);

/* evhttp answered one more request: a held EOF is delivered (from the
 * loop, after evhttp's callback) once every request passed is answered. */
void frontend_frame_answered(struct frontend_frame *f);

/* Hold no EOF from here (the caller no longer tells of answers, or the
 * connection is being let go of); a held one is dropped. */
void frontend_frame_hold_none(struct frontend_frame *f);

#endif
