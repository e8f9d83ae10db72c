/*
 * classify: what a 200 answer from upstream says about the job, and so
 * whether and how long it may be cached. The rule gives where the state is,
 * which states are terminal and which body field names the job; this module
 * applies that to one body.
 *
 * Any state not listed as terminal is still changing, whatever it is called:
 * an unknown state must never be cached forever.
 *
 * A body is cached only if every JSON parser reads it the same way: cJSON
 * takes the first of two equal keys, most client parsers the last, and Go's
 * matches keys regardless of case. So a body whose state, identity or
 * sub-job path names a key twice on its way (case-insensitively), or that
 * holds a NUL (raw or \u0000) or bytes that are not UTF-8, is JOB_AMBIGUOUS: jobgate answers it as a bad
 * upstream body, and a client never polls forever on a terminal answer that
 * its own parser reads as still changing.
 */
#ifndef JOBGATE_CLASSIFY_H
#define JOBGATE_CLASSIFY_H

#include <stddef.h>

#include "jsonpath.h"

struct classify_spec {
    struct jsonpath state;    /* where the job's state string is */
    struct jsonpath identity; /* body field that must equal identity_value; unset: no check */
    char **terminal;          /* terminal state values, exact match */
    unsigned char *failure;   /* per terminal value: 1 if it means the job failed */
    size_t nterminal;
    struct jsonpath sub_jobs;  /* where the list of sub-jobs is; unset: none */
    struct jsonpath sub_state; /* the state inside each sub-job */
};

enum job_class {
    JOB_TERMINAL,  /* a job object in a terminal state: cache without expiry */
    JOB_PENDING,   /* a job object still changing: cache for the short TTL */
    JOB_NOT_JOB,   /* not a JSON object, or no state string where the rule says */
    JOB_OTHER_JOB, /* a job object naming another job than the one asked for */
    JOB_AMBIGUOUS  /* a body that parsers may read differently: never cached, never served */
};

/* Classify `body`. Checked in this order: ambiguity (JOB_AMBIGUOUS), shape
 * (JOB_NOT_JOB), identity (JOB_OTHER_JOB), then state. `expected_id` is the request's value of the identity
 * parameter (ignored when the spec has no identity check). The state found,
 * if any, is copied to `state` (truncated to statelen).
 *
 * With sub-jobs, a job is terminal only when its own state and the state of
 * every sub-job are terminal; a sub-job without a state string, or a sub-job
 * list that is not a list, counts as still changing. */
enum job_class classify_body(const struct classify_spec *spec, const char *body, size_t len, const char *expected_id,
                             char *state, size_t statelen);

const char *job_class_name(enum job_class c);

/* Is `state` a terminal value that means failure? */
int classify_state_failed(const struct classify_spec *spec, const char *state);

void classify_spec_free(struct classify_spec *spec);

#endif
