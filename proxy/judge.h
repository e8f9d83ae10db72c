/*
 * judge: what an upstream answer to a job request becomes. A 200 whose body
 * is the very job asked for, in a state the rule classifies, becomes a job
 * body and is stored (terminal: for terminal_ttl, no expiry by default;
 * still changing: for pending_ttl, kept stale_ttl longer); a 404 the rule
 * maps to 404 is remembered for not_found_ttl (negative caching); anything
 * else (a transport fault, another status, a body that is no job, another
 * job, or one parsers read two ways) is an error from the rule's map
 * (errmap.h), never stored.
 *
 * One function, called once per upstream answer by the flight (flight.h);
 * it logs what it decided. Single-threaded: the event loop's.
 */
#ifndef JOBGATE_JUDGE_H
#define JOBGATE_JUDGE_H

#include "errmap.h"

struct body;
struct cache;
struct rule;
struct upstream_response;

/* What the answer is judged against (all borrowed for the call). */
struct judge_input {
    const struct rule *rule;
    struct cache *cache;          /* where a job body or a remembered 404 is stored */
    const char *key;              /* the cache key */
    const char *expected_id;      /* the job id asked for ("": the rule names no identity) */
    enum error_shape error_shape; /* the shape of a remembered 404 where the rule says none */
};

/* The job body (a reference the caller drops), or a remembered 404's body,
 * with *stored set to 1 once it went to the cache; or NULL with `err` set
 * to the client's answer. */
struct body *judge_answer(const struct judge_input *in, const struct upstream_response *resp, struct client_error *err,
                          int *stored);

#endif
