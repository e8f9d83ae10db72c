/*
 * sentinel_query: asking Redis Sentinel where a master is. The sentinels of
 * a sentinel:// URL are asked in order (`SENTINEL get-master-addr-by-name`,
 * after AUTH when the sentinels want a password), each within a time
 * limit, until one names the master. redis_link uses it on every (re)connect
 * of a sentinel:// tier; it knows nothing of the link.
 *
 * Callbacks run on the event loop's thread, never before
 * sentinel_query_start returns, and exactly one of found/failed ends each
 * query; auth_refused may come before either (once per sentinel that
 * refused). Nothing is called after sentinel_query_close.
 */
#ifndef JOBGATE_SENTINEL_QUERY_H
#define JOBGATE_SENTINEL_QUERY_H

#include <stdint.h>

#include <hiredis/async.h>

#include "redis_tls.h"
#include "redis_url.h"

struct event;
struct event_base;

struct sentinel_query_hooks {
    /* A sentinel named `master`. */
    void (*found)(void *arg, const struct redis_addr *master);
    /* No sentinel could (`why`: the last one's reason, never a secret). */
    void (*failed)(void *arg, const char *why);
    /* Sentinel `who` ("sentinel HOST:PORT") refused our AUTH with `rep`. */
    void (*auth_refused)(void *arg, const char *who, const redisReply *rep);
    void *arg;
};

struct sentinel_query {
    /* settings, borrowed from the owner for the query's life */
    struct event_base *base;
    const struct redis_target *target; /* the sentinels and the master's name */
    const char *user, *password;       /* the sentinels' AUTH (secrets), or NULL */
    int64_t timeout_ms;                /* per sentinel asked */
    struct sentinel_query_hooks hooks;
    struct redis_tls *tls; /* set by the owner after init: TLS to the sentinels (borrowed); NULL: plain TCP */
    /* state */
    int running;
    int closing;
    int index;              /* the sentinel asked now */
    redisAsyncContext *ctx; /* NULL between attempts; hiredis owns it */
    struct event *timer;    /* this attempt's limit */
    char auth_error[32];    /* this attempt's AUTH was refused with this code ("" if not) */
    char why[96];           /* a TLS failure's reason, as passed to query_next */
};

/* Set `q` up. Returns 0, or -1 (no memory). */
int sentinel_query_init(struct sentinel_query *q, struct event_base *base, const struct redis_target *target,
                        const char *user, const char *password, int64_t timeout_ms,
                        const struct sentinel_query_hooks *hooks);

/* Ask the sentinels, from the first; nothing when a query is running. */
void sentinel_query_start(struct sentinel_query *q);

/* Stop asking and free what `q` holds; no hook is called from now on. */
void sentinel_query_close(struct sentinel_query *q);

/* The code of an error reply (its first word: WRONGPASS, NOAUTH, ERR...)
 * in `code` (len bytes), which is returned; "error" when there is none.
 * Only the code of a reply is kept for health reports: never its text. */
const char *redis_error_code(const redisReply *rep, char *code, size_t len);

#endif
