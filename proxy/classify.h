/*
 * classify: what a 200 answer from upstream says about the job, and so
 * whether and how long it may be cached. The rule gives where the state is,
 * which states are terminal and which body field names the job; this module
 * applies that to one body.
 *
 * Any state not listed as terminal is still changing, whatever it is called:
 * an unknown state must never be cached forever.
 */
#ifndef JOBGATE_CLASSIFY_H
#define JOBGATE_CLASSIFY_H

#include <stddef.h>

#include "jsonpath.h"

struct classify_spec {
    struct jsonpath state;    /* where the job's state string is */
    struct jsonpath identity; /* body field that must equal identity_value; unset: no check */
    char **terminal;          /* terminal state values, exact match */
    size_t nterminal;
};

enum job_class {
    JOB_TERMINAL, /* a job object in a terminal state: cache without expiry */
    JOB_PENDING,  /* a job object still changing: cache for the short TTL */
    JOB_NOT_JOB,  /* not a JSON object, or no state string where the rule says */
    JOB_OTHER_JOB /* a job object naming another job than the one asked for */
};

/* Classify `body`. `expected_id` is the request's value of the identity
 * parameter (ignored when the spec has no identity check). The state found,
 * if any, is copied to `state` (truncated to statelen). */
enum job_class classify_body(const struct classify_spec *spec, const char *body, size_t len, const char *expected_id,
                             char *state, size_t statelen);

const char *job_class_name(enum job_class c);

void classify_spec_free(struct classify_spec *spec);

#endif
