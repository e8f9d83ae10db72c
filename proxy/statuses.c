#include "statuses.h"

#define STATUS_OF(status, reason) status,
const int statuses_table[STATUSES_COUNT] = {STATUSES_DOCUMENTED(STATUS_OF)};

size_t statuses_index(int status)
{
    size_t i = 0;
    while (i < STATUSES_COUNT && statuses_table[i] != status)
        i++;
    return i;
}

int http_status_documented(int status)
{
    return statuses_index(status) < STATUSES_COUNT;
}

/* Statuses outside the table that upstream (or evhttp) may produce, named in
 * the messages jobgate writes ("upstream answered 429 Too Many Requests"). */
/* clang-format off */
#define STATUSES_OTHER(X)                   \
    X(413, "Payload Too Large")             \
    X(414, "URI Too Long")                  \
    X(429, "Too Many Requests")
/* clang-format on */

const char *http_reason(int status)
{
#define REASON_CASE(code, reason) \
    case code: return reason;
    switch (status) {
        STATUSES_DOCUMENTED(REASON_CASE)
        STATUSES_OTHER(REASON_CASE)
    default: return "Unknown";
    }
#undef REASON_CASE
}
