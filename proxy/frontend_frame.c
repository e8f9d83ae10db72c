/*
 * The framing filter of a client connection (frontend_frame.h is the
 * contract): bufferevent_filter over the socket's bufferevent, with its
 * input checked by httpframe, its output moved down by hand, and the
 * client's EOF held until the requests passed are answered.
 */
#include <stdlib.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/util.h>

#include "frontend_frame.h"
#include "httpframe.h"
#include "log.h"
#include "metrics.h"

/* The request evhttp reads in place of a refused head: the gateway answers
 * it (400, audited, Connection: close) after every request passed before. */
#define REFUSED_REQUEST "GET / HTTP/1.1\r\nHost: jobgate\r\nConnection: close\r\n" HTTPFRAME_MARKER ": %s\r\n\r\n"

/* The input filter: moves bytes from the socket's buffer (`src`) to
 * evhttp's (`dst`). A head moves once httpframe_check has passed it whole,
 * then its body (Content-Length) as it arrives, then the next head is
 * checked. Moving is evbuffer_remove_buffer: whole chains change hands, no
 * copy. A refused head is replaced by REFUSED_REQUEST and all later input
 * is dropped. Fires from the socket's read callback, with evhttp reading. */
static enum bufferevent_filter_result frame_input(struct evbuffer *src, struct evbuffer *dst, ev_ssize_t limit,
                                                  enum bufferevent_flush_mode mode, void *arg)
{
    (void)limit; /* evhttp sets no read high-water mark */
    (void)mode;
    struct frontend_frame *f = arg;
    int moved = 0;
    for (;;) {
        size_t have = evbuffer_get_length(src);
        if (!have)
            break;
        if (!f || f->refused) {
            evbuffer_drain(src, have);
            break;
        }
        if (f->body_left) {
            size_t n = have < f->body_left ? have : (size_t)f->body_left;
            evbuffer_remove_buffer(src, dst, n);
            f->body_left -= n;
            moved = 1;
            continue;
        }
        const struct frontend_frame_conf *conf = f->conf;
        struct httpframe_limits lim = {.max_head_bytes = conf->max_head_bytes,
                                       .allow_bare_lf = conf->allow_bare_lf,
                                       .reserved = HTTPFRAME_MARKER,
                                       .max_body_bytes = conf->max_body(conf->arg)};
        /* The largest whole head (the bound plus its empty line's CRLF) is
         * enough to decide: httpframe_check refuses an unfinished head of
         * that size. Usually the head is in the first chain already and
         * this copies nothing. */
        size_t most = lim.max_head_bytes + 2;
        size_t look = have <= most ? have : most;
        const char *p = (const char *)evbuffer_pullup(src, (ev_ssize_t)look);
        struct httpframe_head head;
        enum httpframe_error err = HTTPFRAME_OK;
        enum httpframe_verdict v = p ? httpframe_check(p, look, &lim, &head, &err) : HTTPFRAME_BAD;
        if (v == HTTPFRAME_NEED_MORE) {
            /* Empty lines before a request line are dropped as they come:
             * a client sending nothing else must not fill memory. */
            evbuffer_drain(src, head.skipped);
            break;
        }
        if (v == HTTPFRAME_HEAD_OK) {
            evbuffer_drain(src, head.skipped);
            evbuffer_remove_buffer(src, dst, head.head_len - head.skipped);
            f->body_left = head.content_length;
            f->passed++;
            moved = 1;
            continue;
        }
        metrics_count_event(f->conf->metrics, EVENT_BAD_FRAMING);
        log_info("refusing a request head: %s", httpframe_error_name(err));
        evbuffer_drain(src, have);
        evbuffer_add_printf(dst, REFUSED_REQUEST, httpframe_error_name(err));
        f->refused = 1;
        f->passed++;
        moved = 1;
        break;
    }
    return moved ? BEV_OK : BEV_NEED_MORE;
}

/* Answers go down once evhttp has added them (deferred to the loop, so once
 * per answer). bufferevent_filter 2.1 would move them itself only while
 * evhttp has EV_WRITE enabled (evhttp adds the answer first, then enables
 * it: the answer would sit until the next write), and would tell evhttp
 * "written" as soon as they had moved, so that evhttp, closing after an
 * answer with Connection: close, would shut the socket with the answer still
 * unwritten. So evhttp hears "written" (its write callback, through
 * bufferevent_trigger) only once the socket has taken every byte.
 *
 * A plain socket with nothing queued below is written at once (writev from
 * this buffer): a hit then costs no write event, that is no epoll_ctl to
 * watch for EPOLLOUT, no loop turn to get it and no epoll_ctl to stop
 * watching. evhttp still hears "written" from frame_write, as after any
 * write, run from the socket bufferevent's own callback (bufferevent_trigger,
 * deferred): calling evhttp's write callback from here instead crashed under
 * 1000 connections (SEGV in libevent's generic timeout callback, after a few
 * 5 s runs of wrk -c1000 polling one job). Whatever the socket does not take
 * (or every byte, on TLS or behind an answer still queued) moves to the
 * socket's output, no copy, and frame_write tells evhttp once it is written.
 * Not after a refused head either: evhttp closes as soon as it hears
 * "written", and a client still sending that head would get a reset (unread
 * bytes) instead of the 400; the loop turn lets the filter drop what arrived
 * first. */
static void on_output(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    struct frontend_frame *f = arg;
    if (!info->n_added || !evbuffer_get_length(buf))
        return;
    struct evbuffer *below = bufferevent_get_output(f->under);
    if (!f->tls && !f->refused && !evbuffer_get_length(below)) {
        evutil_socket_t fd = bufferevent_getfd(f->under);
        if (fd >= 0)
            evbuffer_write(buf, fd); /* -1 (EAGAIN, a reset): the socket's bufferevent tries and reports */
        if (!evbuffer_get_length(buf)) {
            /* "written" as if the socket's bufferevent had written it:
             * frame_write, from that bufferevent's own (deferred) callback */
            f->write_pending = 1;
            bufferevent_trigger(f->under, EV_WRITE, BEV_TRIG_DEFER_CALLBACKS);
            return;
        }
    }
    evbuffer_add_buffer(below, buf);
    f->write_pending = 1;
}

/* The filter's own output path, never used (on_output empties its buffer). */
static enum bufferevent_filter_result frame_output(struct evbuffer *src, struct evbuffer *dst, ev_ssize_t limit,
                                                   enum bufferevent_flush_mode mode, void *arg)
{
    (void)src;
    (void)dst;
    (void)limit;
    (void)mode;
    (void)arg;
    return BEV_NEED_MORE;
}

static void frame_read(struct bufferevent *under, void *arg)
{
    struct frontend_frame *f = arg;
    f->filter_readcb(under, f->filter_arg);
}

static void frame_write(struct bufferevent *under, void *arg)
{
    struct frontend_frame *f = arg;
    f->filter_writecb(under, f->filter_arg);
    if (f->write_pending && !evbuffer_get_length(bufferevent_get_output(under))) {
        f->write_pending = 0;
        bufferevent_trigger(f->bev, EV_WRITE, 0); /* evhttp: the answer is written */
    }
}

/* Events of the socket's bufferevent, on their way to the filter (and so
 * to evhttp). evhttp drops every request of a connection on its EOF, even
 * those it has read and not answered; a client that half-closes after
 * sending (shutdown(SHUT_WR)) still reads, so its EOF waits here until the
 * last request passed is answered. Errors pass at once. */
static void frame_event(struct bufferevent *under, short what, void *arg)
{
    struct frontend_frame *f = arg;
    if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR) && f->answered < f->passed && f->release) {
        f->held_eof = what;
        return;
    }
    f->filter_eventcb(under, what, f->filter_arg);
}

/* The filter's free_context: the connection's state goes with it. */
static void frame_free(void *arg)
{
    struct frontend_frame *f = arg;
    if (!f)
        return;
    if (f->output_pass)
        evbuffer_remove_cb_entry(bufferevent_get_output(f->bev), f->output_pass);
    if (f->release)
        event_free(f->release);
    free(f); /* the caller's whole block (frontend_frame.h) */
}

static void on_release(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct frontend_frame *f = arg;
    short eof = f->held_eof;
    f->held_eof = 0;
    if (eof)
        f->filter_eventcb(f->under, eof, f->filter_arg); /* a no-op once evhttp has let go */
}

struct bufferevent *frontend_frame_new(struct event_base *base, struct bufferevent *under, struct frontend_frame *f,
                                       const struct frontend_frame_conf *conf, int tls)
{
    struct bufferevent *bev =
        bufferevent_filter_new(under, frame_input, frame_output, BEV_OPT_CLOSE_ON_FREE, frame_free, f);
    if (!bev) {
        free(f);
        bufferevent_free(under);
        return NULL;
    }
    if (!f)
        return bev; /* out of memory: the filter drops all input and writes nothing; evhttp's timeout closes it */
    f->bev = bev;
    f->under = under;
    f->conf = conf;
    f->tls = tls;
    bufferevent_getcb(under, &f->filter_readcb, &f->filter_writecb, &f->filter_eventcb, &f->filter_arg);
    bufferevent_setcb(under, frame_read, frame_write, frame_event, f);
    f->release = event_new(base, -1, 0, on_release, f);
    f->output_pass = evbuffer_add_cb(bufferevent_get_output(bev), on_output, f);
    /* Once per answer, not once per header line evhttp adds: on_output runs
     * from the loop, after evhttp has added the whole answer. */
    evbuffer_defer_callbacks(bufferevent_get_output(bev), base);
    if (!f->output_pass) {
        bufferevent_free(bev); /* frees `under` and `f` */
        return NULL;
    }
    return bev;
}

void frontend_frame_answered(struct frontend_frame *f)
{
    if (++f->answered >= f->passed && f->held_eof)
        event_active(f->release, 0, 0); /* evhttp is inside its own callback: deliver the EOF after */
}

void frontend_frame_hold_none(struct frontend_frame *f)
{
    if (f->release)
        event_free(f->release);
    f->release = NULL;
}
