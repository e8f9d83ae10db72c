#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache_entry.h"
#include "log.h"

char *cache_entry_encode(const struct body *b, size_t *len)
{
    char head[96];
    int hlen = snprintf(head, sizeof(head), "JG1 %" PRId64 " %d %d %" PRId64 " %" PRId64 "\n", b->stored_at_ms,
                        b->terminal ? 1 : 0, b->status, b->expires_at_ms, b->stale_until_ms);
    size_t vlen = (size_t)hlen + b->len;
    char *value = malloc(vlen);
    if (!value)
        return NULL;
    memcpy(value, head, (size_t)hlen);
    memcpy(value + hlen, b->data, b->len);
    *len = vlen;
    return value;
}

/* Older values lack the last fields: 2 to 5 fields are read. */
struct body *cache_entry_decode(const char *v, size_t len)
{
    const char *nl = memchr(v, '\n', len);
    if (!nl || len < 4 || memcmp(v, "JG1 ", 4) != 0)
        return NULL;
    char head[96];
    size_t hlen = (size_t)(nl - v);
    if (hlen >= sizeof(head))
        return NULL;
    memcpy(head, v, hlen);
    head[hlen] = '\0';
    int64_t stored_at, expires_at = 0, stale_until = 0;
    int terminal, status = 200;
    int fields = sscanf(head, "JG1 %" SCNd64 " %d %d %" SCNd64 " %" SCNd64, &stored_at, &terminal, &status, &expires_at,
                        &stale_until);
    if (fields < 2 || (terminal != 0 && terminal != 1) || (status != 200 && status != 404) || expires_at < 0 ||
        stale_until < 0)
        return NULL;
    struct body *b = body_new(nl + 1, len - hlen - 1, stored_at, terminal);
    if (b) {
        b->status = status;
        b->expires_at_ms = expires_at;
        b->stale_until_ms = stale_until;
    }
    return b;
}

struct body *cache_entry_pick(redisReply **elements, size_t n, uint64_t *corrupt)
{
    struct body *b = NULL;
    for (size_t i = 0; i < n && !b; i++) {
        redisReply *e = elements[i];
        if (e->type != REDIS_REPLY_STRING)
            continue;
        b = cache_entry_decode(e->str, e->len);
        if (!b) {
            (*corrupt)++;
            log_warn("redis: ignoring an entry that is not jobgate's format");
        }
    }
    return b;
}
