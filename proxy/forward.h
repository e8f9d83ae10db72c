/*
 * forward: a call under a rule's forward prefix (rules.h, struct
 * rule_forward) goes upstream as the client sent it, and its answer comes
 * back as the cloud sent it. This is how one endpoint per service serves
 * the create, update, delete and list calls of an SDK or Terraform beside
 * the job polls that jobgate caches.
 *
 * A forwarded call is never cached, never coalesced with another and never
 * retried: one client request makes at most one upstream request. A method
 * other than GET and HEAD goes on a fresh connection, so that libcurl never
 * resends it after a kept-alive connection turned out dead (upstream.h).
 * It gets what a job request gets: the client's authentication and grants
 * (checked by request.c before forward_start), jobgate's own upstream
 * credentials (an AK/SK signature covers the forwarded body), the guard of
 * its upstream (rate limit, 429 backoff, circuit breaker), the audit line,
 * and the rule's error answers for what is jobgate's to say (no credentials,
 * refused by the guard, transport faults: 502/504).
 *
 * The life of one call (enum forward_state):
 *
 *   [start] -- over the rate limit --> QUEUE -- its timer --> [start]
 *      | admitted
 *      v
 *   CREDENTIALS (an IAM token may have to be fetched) --> CALLING
 *      CALLING -- a transport fault before the head --> answered 502/504
 *      CALLING -- upstream's status and headers --> STREAMING (the head is sent)
 *      STREAMING -- each piece of the body --> sent on (chunked, or with
 *                   upstream's Content-Length); the transfer pauses while the
 *                   client has more than 256 KiB to read, resumes at 64 KiB
 *      STREAMING -- upstream done --> the end (ENDING: the last bytes are
 *                   written first when the length was announced)
 *      STREAMING -- upstream fails mid-body --> the client's connection is cut
 *
 * The answer's body is never held whole: jobgate holds about 256 KiB of it
 * per call, whatever its size. The request's body is held whole (evhttp
 * reads it before the gateway sees the request), bounded by the rule's
 * forward.max_body, and sent upstream from evhttp's own buffer, not copied
 * (made one piece for libcurl and the signature).
 *
 * The client may hang up at any point. Before CALLING the call is dropped
 * (never sent: "not at all"; its end of input is watched, EV_CLOSED, so a
 * client that half-closes while its call waits for the guard or a token
 * is taken as gone). From CALLING on, the end of input is not watched (a
 * client that half-closed still reads its answer): a client that left is
 * seen when writing its answer fails. The call has run once by then (the
 * upstream's work is not undone, nor done again); the transfer of its
 * answer stops at once (the upstream connection is closed), audited
 * CLIENT_GONE with the bytes sent.
 *
 * Everything runs on the event loop's thread.
 */
#ifndef JOBGATE_FORWARD_H
#define JOBGATE_FORWARD_H

#include <stddef.h>

struct job_request;
struct gateway;
struct rule;

/* Forward `jr` (jr->rule is the rule whose prefix it is under; its client
 * checks passed). `jr` may be answered before this returns; the caller must
 * not touch it afterwards. */
void forward_start(struct job_request *jr);

/* The project id of a path under `rule`'s forward prefix: its
 * forward.project_segment-th segment after the prefix when that is 32 hex
 * digits (a Huawei Cloud project id), copied into `out`. Returns 1, or 0
 * (none: `out` is ""; only grants of every project, "*", cover the call). */
int forward_project_of(const struct rule *rule, const char *path, char *out, size_t outlen);

/* The client left, or shutdown: `jr` stops waiting on its forwarded call.
 * Returns 0: `jr` is unanswered, the caller answers it (or forgets it); a
 * call not yet sent is dropped, one that is out runs on alone. Returns 1:
 * its answer was streaming (a head went out), so it was cut here: the
 * upstream transfer stopped, the client's connection closed, `jr` audited
 * and let go (audited CLIENT_GONE when `client_gone`, else CUT); the
 * caller must not touch it. */
int forward_leave(struct job_request *jr, int client_gone);

/* Free every forwarded call of `gw` with no callback and no answer. Only
 * from gateway_free, after upstream_free. */
void forward_free_all(struct gateway *gw);

#endif
