/*
 * jsonpath: a dotted path into a JSON object ("status", "job.status",
 * "error.code"), compiled once when rules load and followed per body.
 * Only object members are followed: a job API's fields are named, never indexed.
 */
#ifndef JOBGATE_JSONPATH_H
#define JOBGATE_JSONPATH_H

#include <cjson/cJSON.h>
#include <stddef.h>

#define JSONPATH_MAX_DEPTH 8

struct jsonpath {
    char *text;
    char *parts[JSONPATH_MAX_DEPTH];
    size_t nparts;
};

/* Compile `text`. Returns 0, or -1 if it is empty, has an empty part or is too deep. */
int jsonpath_compile(struct jsonpath *p, const char *text);

/* The item at `p` under `root`, or NULL. A path never compiled finds nothing. */
const cJSON *jsonpath_get(const struct jsonpath *p, const cJSON *root);

/* The string at `p`, or NULL if absent or not a string. */
const char *jsonpath_get_string(const struct jsonpath *p, const cJSON *root);

void jsonpath_free(struct jsonpath *p);

/* Parse `len` bytes as exactly one JSON value (whitespace around it only:
 * "{...}<html>" is not JSON). Returns the tree (free with cJSON_Delete) or NULL. */
cJSON *json_parse_exact(const char *text, size_t len);

#endif
