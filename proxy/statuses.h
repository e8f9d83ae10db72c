/*
 * statuses: the API's documented status table, the only statuses a client
 * of jobgate ever sees (docs/huawei-api.md, section 2; nothing
 * else). Every answer jobgate sends, whatever went wrong upstream, has one
 * of these statuses; the rule loader refuses an error map that names
 * another.
 *
 * STATUSES_DOCUMENTED is the table itself, as data: X(status, reason) per
 * row, in ascending order. C code expands it (statuses.c, metrics.c); the
 * integration tests read the rows from this file (tests/integration/
 * harness.py), so there is no other copy to keep in step.
 */
#ifndef JOBGATE_STATUSES_H
#define JOBGATE_STATUSES_H

#include <stddef.h>

/* clang-format off */
#define STATUSES_DOCUMENTED(X)              \
    X(200, "OK")                            \
    X(400, "Bad Request")                   \
    X(401, "Unauthorized")                  \
    X(403, "Forbidden")                     \
    X(404, "Not Found")                     \
    X(405, "Method Not Allowed")            \
    X(406, "Not Acceptable")                \
    X(407, "Proxy Authentication Required") \
    X(408, "Request Timeout")               \
    X(409, "Conflict")                      \
    X(500, "Internal Server Error")         \
    X(501, "Not Implemented")               \
    X(502, "Bad Gateway")                   \
    X(503, "Service Unavailable")           \
    X(504, "Gateway Timeout")
/* clang-format on */

/* How many rows the table has. */
#define STATUSES_X_COUNT(status, reason) +1
enum { STATUSES_COUNT = 0 STATUSES_DOCUMENTED(STATUSES_X_COUNT) };

/* The table's statuses, in its order. */
extern const int statuses_table[STATUSES_COUNT];

/* The row of `status` in the table (0 .. STATUSES_COUNT-1), or STATUSES_COUNT
 * when it is not documented. */
size_t statuses_index(int status);

/* Is `status` one of the documented ones a client may see? */
int http_status_documented(int status);

/* The standard reason phrase of `status` ("Not Found"): the table's, or one
 * of the few upstream statuses jobgate names in messages (429 ...), else
 * "Unknown". */
const char *http_reason(int status);

#endif
