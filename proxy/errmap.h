/*
 * errmap: turning whatever went wrong upstream into an answer from the API's
 * documented status table, with a JSON body carrying `code` and `message`.
 *
 * The mapping is data from the rule file: an entry per upstream status
 * ("429"), per status class ("4xx") and per transport fault ("timeout").
 * The rule also says where upstream error bodies keep their code and message
 * (it knows both of Huawei's shapes); whatever code and message upstream gave
 * are kept, so a client still sees "ELB.1002" or "APIGW.0307".
 */
#ifndef JOBGATE_ERRMAP_H
#define JOBGATE_ERRMAP_H

#include <stddef.h>

#include "fault.h"
#include "jsonpath.h"
#include "statuses.h" /* the table every answer comes from */

#define ERRMAP_CODE_MAX    64
#define ERRMAP_MESSAGE_MAX 512

struct errmap_entry {
    int set;
    int status;      /* the client's status, always in the documented table */
    char *code;      /* used when upstream gave no code; NULL: derived */
    char *message;   /* used when upstream gave no message; NULL: derived */
    int retry_after; /* seconds for a Retry-After header; 0: none */
};

/* The shape of the error bodies jobgate sends for an API: the one its own
 * clients (the official SDKs) read. Every answer that is not a 200 uses it,
 * jobgate's own JG.* refusals included.
 *   ERROR_SHAPE_APIGW  {"error_code": C, "error_msg": M, "request_id": R}
 *                      (the API gateway's, in front of every service)
 *   ERROR_SHAPE_ELB    {"error": {"code": C, "message": M}, "request_id": R}
 *                      (classic ELB's)
 * ERROR_SHAPE_DEFAULT: not said by the rule; the configured default applies. */
enum error_shape { ERROR_SHAPE_DEFAULT = 0, ERROR_SHAPE_APIGW, ERROR_SHAPE_ELB, ERROR_SHAPE__COUNT };

/* "apigw", "elb" ("default" for ERROR_SHAPE_DEFAULT). */
const char *error_shape_name(enum error_shape s);
/* The shape called `name`, or ERROR_SHAPE_DEFAULT for an unknown name. */
enum error_shape error_shape_from_name(const char *name);

/* Where one shape of upstream error body keeps its code and message. */
struct errmap_shape {
    struct jsonpath code;
    struct jsonpath message;
};

/* An answer chosen by upstream's error code ("APIGW.0307"), whatever the status. */
struct errmap_code {
    char *code;
    struct errmap_entry entry;
};

struct errmap {
    struct errmap_code *codes; /* looked up first, by the code upstream's body carries */
    size_t ncodes;
    struct errmap_entry exact[600]; /* by upstream status */
    struct errmap_entry klass[6];   /* 1xx .. 5xx, by status / 100 */
    struct errmap_entry fault[FAULT__COUNT];
    struct errmap_shape *shapes;
    size_t nshapes;
    enum error_shape reply_shape; /* errors.shape: what jobgate's answers look like */
};

/* An answer to send instead of a job: status, code, message, Retry-After. */
struct client_error {
    int status;
    char code[ERRMAP_CODE_MAX];
    char message[ERRMAP_MESSAGE_MAX];
    int retry_after;
};

/* The entry that applies to upstream status `status` (exact, else its class), or NULL. */
const struct errmap_entry *errmap_for_status(const struct errmap *map, int status);

/* Fill `out` for an upstream answer with status `status` and body `body`:
 * the entry for upstream's error code if the map has one, else for the
 * status, else for its class. */
void errmap_from_upstream(const struct errmap *map, int status, const char *body, size_t len, struct client_error *out);

/* Fill `out` for a transport fault. */
void errmap_from_fault(const struct errmap *map, enum upstream_fault fault, struct client_error *out);

/* Fill `out` for an error jobgate decides itself (bad request, no route ...). */
void client_error_set(struct client_error *out, int status, const char *code, const char *message);

/* The JSON body for `e` in `shape` (ERROR_SHAPE_DEFAULT: APIGW), with
 * `request_id` unless it is NULL. Free with cJSON_free. */
char *client_error_render(const struct client_error *e, const char *request_id, enum error_shape shape);

void errmap_free(struct errmap *map);

#endif
