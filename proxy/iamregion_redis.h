/*
 * iamregion_redis: the project -> region map of iamregion.h, shared through
 * the cache's Redis tier, so that one IAM answer serves every worker and
 * every instance on that Redis. The key (cachekey.h) is
 *
 *     PREFIX{iam:project:PROJECT_ID}
 *
 * and its value the region ("eu-west-0"), or IAMREGION_REDIS_UNKNOWN when
 * IAM does not know the project. Its PX is the refresh interval (a region)
 * or the unknown TTL: whoever reads it holds the answer for what is left
 * of it, and asks again (Redis, then IAM) when it is gone.
 *
 * Reads run within the link's budget (redis_link.h: budget_ms) on a timer
 * of their own, as cache_redis.c does: Redis down, busy, slow or answering
 * nonsense is a miss, and the caller asks IAM. Stores are fire and forget.
 *
 * Everything runs on the link's event loop. This header needs no hiredis.
 */
#ifndef JOBGATE_IAMREGION_REDIS_H
#define JOBGATE_IAMREGION_REDIS_H

#include <stddef.h>
#include <stdint.h>

/* The value of a project IAM does not know (never a region name). */
#define IAMREGION_REDIS_UNKNOWN "!unknown"

struct redis_link;
struct iamregion_redis_get;

enum iamregion_redis_answer {
    IAMREGION_REDIS_KNOWN,    /* `region` holds it, for `ttl_ms` more */
    IAMREGION_REDIS_NOTKNOWN, /* IAM did not know it, remembered `ttl_ms` more */
    IAMREGION_REDIS_MISS,     /* not there, or Redis unavailable, slow or wrong: ask IAM */
    IAMREGION_REDIS_CLOSED,   /* the link is closing: forget the read, answer nobody */
};

/* Called once per read not cancelled, from the loop, never from inside
 * iamregion_redis_get. `region` is valid during the call only. */
typedef void (*iamregion_redis_cb)(enum iamregion_redis_answer answer, const char *region, int64_t ttl_ms, void *arg);

/*
 * Read what Redis holds of `project` (a 32-hex-digit id) under `prefix`
 * (cache.key_prefix). Returns the read (for iamregion_redis_cancel), or
 * NULL when Redis cannot be asked now (no link, not ready, out of memory):
 * `cb` is then never called and the caller asks IAM at once.
 */
struct iamregion_redis_get *iamregion_redis_get(struct redis_link *link, const char *prefix, const char *project,
                                                iamregion_redis_cb cb, void *arg);

/* Stop waiting: `cb` will not be called. (The read itself lives on until
 * Redis answers it.) */
void iamregion_redis_cancel(struct iamregion_redis_get *g);

/* Store IAM's answer: `region`, or NULL for unknown, for `px_ms`. Nothing
 * is sent when the link is not ready. */
void iamregion_redis_put(struct redis_link *link, const char *prefix, const char *project, const char *region,
                         int64_t px_ms);

/* The key of `project` into `out`. Returns 0, or -1 when it does not fit. */
int iamregion_redis_key(char *out, size_t outlen, const char *prefix, const char *project);

#endif
