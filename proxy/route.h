/*
 * route: path templates with typed parameters, such as
 * "/v1.0/{project_id}/jobs/{job_id}", and matching request paths against them.
 *
 * A template is a list of '/'-separated segments, each either literal text or
 * one whole {parameter}. A parameter's value must match its pattern, a POSIX
 * extended regular expression anchored at both ends. Matching works on the
 * raw (still percent-encoded) path: a value the pattern accepts can be put in
 * a cache key or an upstream URL as it is.
 *
 * Matching is on every request's path, so the patterns ids need ("[0-9a-f]{32}",
 * a uuid, "[A-Za-z0-9_.~%-]{1,64}": byte classes with counts) are also
 * compiled, when set, into a table of byte classes and length bounds that is
 * checked without regexec (a tenth of its instructions). Any other pattern is
 * matched by regexec. Both accept exactly the same values.
 */
#ifndef JOBGATE_ROUTE_H
#define JOBGATE_ROUTE_H

#include <regex.h>
#include <stddef.h>
#include <stdint.h>

#define ROUTE_MAX_SEGMENTS 16
#define ROUTE_MAX_PARAMS   8
#define ROUTE_MAX_PATH     1024 /* longer paths never match (answered 404/400) */

#define ROUTE_CLASS_MAX_ITEMS 16

/* One piece of a class pattern: `min` to `max` bytes, each in `set`. */
struct route_class_item {
    uint64_t set[4]; /* bit b: byte b is allowed */
    size_t min, max; /* max is SIZE_MAX for "{m,}" */
};

/* A pattern that is a sequence of class items of which at most one has a
 * variable count: then the length of the value says how many bytes each item
 * takes, and matching is one pass over the value. */
struct route_class {
    struct route_class_item items[ROUTE_CLASS_MAX_ITEMS];
    size_t nitems;    /* 0: the pattern is not of this form (use regexec) */
    size_t fixed_len; /* sum of the counts of the fixed items */
    int var;          /* the item whose count varies, or -1 */
};

struct route_param {
    char *name;
    char *pattern; /* as written in the rule, for messages */
    regex_t re;
    int compiled;
    struct route_class cls; /* the same pattern as a class table, when it is one */
};

struct route_segment {
    char *literal; /* NULL for a parameter segment */
    int param;     /* index into params, or -1 */
};

struct route_template {
    char *text;
    struct route_segment segs[ROUTE_MAX_SEGMENTS];
    size_t nsegs;
    struct route_param params[ROUTE_MAX_PARAMS];
    size_t nparams;
};

/* The parameter values of one match; they point into `buf`. */
struct route_match {
    char buf[ROUTE_MAX_PATH + 1];
    const char *values[ROUTE_MAX_PARAMS];
    size_t nvalues;
};

enum route_result {
    ROUTE_NO_MATCH,  /* the path does not have the template's shape */
    ROUTE_MATCH,     /* shape and every parameter match */
    ROUTE_BAD_PARAM, /* shape matches, a parameter value does not (400, not 404) */
};

/* Parse `text`. Returns 0, or -1 with a message in err. */
int route_template_parse(struct route_template *t, const char *text, char *err, size_t errlen);

/* Set the pattern of parameter `name`. Returns 0, or -1 with a message
 * (no such parameter, pattern does not compile). */
int route_template_set_pattern(struct route_template *t, const char *name, const char *pattern, char *err,
                               size_t errlen);

/* Index of parameter `name`, or -1. */
int route_template_param_index(const struct route_template *t, const char *name);

/* Match `path` (no query string). On ROUTE_BAD_PARAM, *bad_param (if not
 * NULL) is the index of the first parameter that failed. */
enum route_result route_template_match(const struct route_template *t, const char *path, struct route_match *m,
                                       int *bad_param);

/* Two templates could match the same path (same shape, literals equal where
 * both have literals). Patterns are not compared: that is the safe side. */
int route_templates_overlap(const struct route_template *a, const struct route_template *b);

/* Write the template with each {param} replaced by its matched value.
 * Returns the length, or -1 if it does not fit in outlen. */
int route_template_expand(const struct route_template *t, const struct route_match *m, char *out, size_t outlen);

/* The same with the values given by parameter index of `t`. */
int route_template_expand_values(const struct route_template *t, const char *const *values, char *out, size_t outlen);

void route_template_free(struct route_template *t);

#endif
