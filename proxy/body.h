/*
 * body: an immutable job answer as upstream sent it, shared by reference.
 *
 * One body is built per upstream answer or cache read and then handed, by
 * reference, to the in-process cache and to every reply that sends it
 * (evbuffer_add_reference), so a hit copies nothing. Single-threaded: the
 * count is not atomic; each worker has its own bodies.
 */
#ifndef JOBGATE_BODY_H
#define JOBGATE_BODY_H

#include <stddef.h>
#include <stdint.h>

struct body {
    unsigned refs;
    int64_t stored_at_ms;   /* wall clock when jobgate received it from upstream: Age counts from here */
    int terminal;           /* the job was in a terminal state */
    int status;             /* 200 for a job; 404 for a remembered "no such job" (negative caching) */
    int64_t expires_at_ms;  /* wall clock when a cached copy goes stale; 0: never (set by cache_put) */
    int64_t stale_until_ms; /* wall clock when a stale copy is dropped; 0: no stale window (set by cache_put) */
    size_t len;
    char data[]; /* len bytes, NUL-terminated for convenience */
};

/* A new body (status 200) with one reference owned by the caller, or NULL (out of memory). */
struct body *body_new(const char *data, size_t len, int64_t stored_at_ms, int terminal);

/* Is `b` still fresh at wall time `now_ms`? A body without expiry always is. */
int body_fresh(const struct body *b, int64_t now_ms);

struct body *body_ref(struct body *b);
void body_unref(struct body *b);

#endif
