/*
 * iamregion: which region a project lives in, asked of IAM with jobgate's
 * own credentials, for rules whose upstream url carries {region} when
 * neither the Host nor the configured map (regions.h) says.
 *
 *   GET {iam_url}/v3/projects/{project_id}
 *   200 {"project": {"id", "name", ...}}: `name` is the region (eu-west-0),
 *       or REGION_SUB for a sub-project (the part before '_' is taken);
 *   404: IAM does not know the project.
 *
 * The rules:
 *   - The map is kept in this process's memory and, when the cache has a
 *     Redis tier (iamregion_share), in Redis too (iamregion_redis.h): before
 *     asking IAM, a process reads the project's key there, and after IAM
 *     answers it stores the answer with the refresh interval (a region) or
 *     the unknown TTL (an unknown project) as its PX. So one IAM call per
 *     project and refresh interval serves every worker and every instance
 *     on that Redis; what is read there is held for what is left of its
 *     TTL. Redis unavailable, or silent past its budget: IAM is asked.
 *   - One IAM call per project at a time: every request asking while a call
 *     is out waits for it (a queue), never a storm.
 *   - A known region is asked again `refresh_ms` after it was learnt; the
 *     request that finds it due is answered at once with the region held,
 *     and one call refreshes it in the background. A refresh that fails
 *     keeps the region held.
 *   - An unknown project (IAM's 404) is remembered `unknown_ttl_ms`: asked
 *     again only after that.
 *   - A failed call (refused, unreachable, a body without a valid name)
 *     answers every waiter IAMREGION_FAILED, and the project is not asked
 *     again for `retry_ms`.
 *   - Only a project id of 32 hex digits is ever put in an IAM url; any
 *     other is unknown at once. At most IAMREGION_MAX_PROJECTS are held:
 *     past that, the unknown and failed ones are forgotten first, and when
 *     none is left a new project fails at once.
 *
 * Everything runs on the event loop of the `struct upstream` given to
 * iamregion_new; no thread, no blocking call. Callbacks fire from that loop,
 * never from inside iamregion_lookup.
 */
#ifndef JOBGATE_IAMREGION_H
#define JOBGATE_IAMREGION_H

#include <stddef.h>
#include <stdint.h>

#include "regions.h"

#define IAMREGION_MAX_PROJECTS 100000

struct upstream;
struct credentials;
struct metrics;
struct redis_link;
struct iamregion;
struct iamregion_wait;

struct iamregion_conf {
    char *iam_url;          /* "https://iam.myhuaweicloud.com": /v3/projects/{id} is appended; NULL: no lookups */
    int64_t refresh_ms;     /* a known region is asked again after this (default 1 h) */
    int64_t unknown_ttl_ms; /* an unknown project is remembered this long (default 60 s) */
    int64_t retry_ms;       /* after a failed call, the project is not asked again for this long (default 5 s) */
    int64_t timeout_ms;     /* one IAM call, connection included (default 10 s) */
};

/* The defaults above, no url. */
void iamregion_conf_defaults(struct iamregion_conf *conf);
void iamregion_conf_free(struct iamregion_conf *conf);

/*
 * Start asking IAM at conf->iam_url (copied), signed or carrying a token by
 * `credentials` (borrowed; its mode must not be passthrough). `upstream` and
 * `credentials` must outlive it. Returns NULL with a message in `err`.
 */
struct iamregion *iamregion_new(struct upstream *upstream, struct credentials *credentials,
                                const struct iamregion_conf *conf, char *err, size_t errlen);

/* Frees everything: calls out are cancelled, and requests still waiting are
 * dropped without their callbacks (cancel them first). */
void iamregion_free(struct iamregion *r);

/* Share the map through `link` (cache_link(); NULL: memory only) under
 * `prefix` (cache.key_prefix at start, copied; a reload does not change
 * it). Call before the first lookup. Returns 0, or -1 out of memory. */
int iamregion_share(struct iamregion *r, struct redis_link *link, const char *prefix);

/* Count calls, answers and lookups served without IAM in `m`
 * (metrics.h: jobgate_iam_region_*); NULL counts nothing. */
void iamregion_set_metrics(struct iamregion *r, struct metrics *m);

enum iamregion_status {
    IAMREGION_FOUND,   /* `region` holds it */
    IAMREGION_UNKNOWN, /* IAM does not know the project (or it is not a project id) */
    IAMREGION_FAILED,  /* IAM could not be asked, or its answer made no sense */
    IAMREGION_PENDING, /* iamregion_lookup only: the callback will say */
};

/* Called once per pending lookup not cancelled, from the loop. `region` is
 * valid during the call only. It may look up and cancel other waits. */
typedef void (*iamregion_cb)(enum iamregion_status status, const char *region, void *arg);

/*
 * The region of `project`. When it is at hand (held, remembered unknown,
 * backing off, not a project id) it is returned at once (`region` filled
 * for IAMREGION_FOUND) and `cb` is never called. Otherwise it returns
 * IAMREGION_PENDING with *wait set for iamregion_cancel, and `cb` is called
 * later from the loop.
 */
enum iamregion_status iamregion_lookup(struct iamregion *r, const char *project, char region[REGIONS_NAME_MAX],
                                       iamregion_cb cb, void *arg, struct iamregion_wait **wait);

/* Stop waiting (the request is answered otherwise): the callback will not
 * be called. The IAM call goes on, for later requests. */
void iamregion_cancel(struct iamregion_wait *w);

struct iamregion_stats {
    uint64_t calls;    /* GET /v3/projects/{id} sent */
    uint64_t failures; /* ... that gave neither a region nor a 404 */
    size_t projects;   /* projects held (known, unknown or failed) */
    size_t waiting;    /* requests waiting for IAM now */
};

void iamregion_stats(const struct iamregion *r, struct iamregion_stats *out);

#endif
