/*
 * jobsim's streaming routes: what a test of jobgate's forward routes needs
 * to see large bodies go both ways. Any path with a "/_stream/" segment,
 * under whatever prefix a forward route adds (/v1/{project}/_stream/blob):
 *
 *   GET  .../_stream/blob?size=N[&piece=P][&delay_ms=D][&length=1][&cut_after=B]
 *        200, application/octet-stream, N bytes in pieces of P (default
 *        64 KiB), each sent once the one before is written, D ms apart.
 *        The body is lines of 16 bytes, "%015x\n" of the line's number, cut
 *        at N. length=1: with a Content-Length, else chunked. cut_after=B:
 *        the connection is closed after B bytes (an upstream failing
 *        mid-body).
 *   POST .../_stream/sink[?tag=T]   (PUT too)
 *        200 {"length": N, "sha256": "<hex of the body>", "tag": T}; counts
 *        the calls per tag.
 *   GET  /_stream/stats
 *        {"blobs_started", "blobs_completed", "blobs_closed_early",
 *         "blob_bytes_sent", "sinks": {tag: calls}}: blobs_closed_early
 *        counts blobs whose connection closed before their last byte.
 *
 * Everything runs on the simulator's event loop.
 */
#ifndef JOBSIM_STREAM_H
#define JOBSIM_STREAM_H

#include <stddef.h>

struct event_base;
struct evhttp_request;

/* Is `path` one of the routes above? */
int stream_route_matches(const char *path);

/* Answer `req` (on `path`, `query`), now or later; a note for the log in
 * `outcome`. */
void stream_request_handle(struct event_base *base, struct evhttp_request *req, const char *path, const char *query,
                           char *outcome, size_t outcome_len);

#endif
