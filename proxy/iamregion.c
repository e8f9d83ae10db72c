#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>

#include <cjson/cJSON.h>

#include "clock.h"
#include "credentials.h"
#include "iamregion.h"
#include "iamregion_redis.h"
#include "keymap.h"
#include "log.h"
#include "metrics.h"
#include "upstream.h"

#define PROJECT_ID_LEN 32

/* What is known of a project. FETCHING: never learnt (or forgotten), a call
 * is out and requests wait. A "call" is first a read of the map in Redis
 * (shared_get), then, if Redis holds nothing, the IAM call. KNOWN: `region` holds; a call may be out to
 * refresh it (`calling`), nobody waits. UNKNOWN, FAILED: until `until_us`,
 * answered so at once; then FETCHING again.
 *
 *   (new) -> FETCHING -> KNOWN | UNKNOWN | FAILED
 *   KNOWN --due, refresh--> KNOWN (new region, or kept when the call fails) | UNKNOWN (404)
 *   UNKNOWN, FAILED --expired--> FETCHING
 */
enum entry_state { ENTRY_FETCHING, ENTRY_KNOWN, ENTRY_UNKNOWN, ENTRY_FAILED };

struct iamregion_wait {
    struct entry *e;
    iamregion_cb cb;
    void *arg;
    TAILQ_ENTRY(iamregion_wait) link;
};

struct entry {
    struct keymap_item item; /* keyed by `project` */
    struct iamregion *owner;
    char project[PROJECT_ID_LEN + 1];
    char region[REGIONS_NAME_MAX]; /* KNOWN: the region; "" otherwise */
    enum entry_state state;
    int64_t until_us; /* KNOWN: ask again after; UNKNOWN, FAILED: forget after */
    int calling;      /* a call (Redis, then credentials, then IAM) is out */
    struct iamregion_redis_get *shared_get;
    struct credentials_wait *cred_wait;
    struct upstream_call *call;
    TAILQ_HEAD(, iamregion_wait) waiters;
    TAILQ_ENTRY(entry) link;
};

struct iamregion {
    struct upstream *u;
    struct credentials *credentials;
    struct iamregion_conf conf; /* our copy */
    struct keymap projects;     /* struct entry by project id */
    TAILQ_HEAD(, entry) entries;
    struct iamregion_stats stats;
    struct redis_link *link; /* the shared map (iamregion_share), or NULL */
    char *prefix;            /* cache.key_prefix (our copy) */
    struct metrics *metrics; /* or NULL */
};

void iamregion_conf_defaults(struct iamregion_conf *conf)
{
    *conf =
        (struct iamregion_conf){.refresh_ms = 3600000, .unknown_ttl_ms = 60000, .retry_ms = 5000, .timeout_ms = 10000};
}

void iamregion_conf_free(struct iamregion_conf *conf)
{
    free(conf->iam_url);
    conf->iam_url = NULL;
}

static int project_ok(const char *p)
{
    return p && strlen(p) == PROJECT_ID_LEN && strspn(p, "0123456789abcdefABCDEF") == PROJECT_ID_LEN;
}

struct iamregion *iamregion_new(struct upstream *upstream, struct credentials *credentials,
                                const struct iamregion_conf *conf, char *err, size_t errlen)
{
    if (!conf->iam_url || (strncmp(conf->iam_url, "https://", 8) != 0 && strncmp(conf->iam_url, "http://", 7) != 0)) {
        snprintf(err, errlen, "the IAM url must start with https:// (or http://)");
        return NULL;
    }
    if (!credentials || credentials_mode(credentials) == CRED_PASSTHROUGH) {
        snprintf(err, errlen, "asking IAM for a project's region needs jobgate's own credentials (upstream.auth)");
        return NULL;
    }
    struct iamregion *r = calloc(1, sizeof(*r));
    if (!r || !(r->conf.iam_url = strdup(conf->iam_url))) {
        free(r);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    size_t n = strlen(r->conf.iam_url);
    if (r->conf.iam_url[n - 1] == '/')
        r->conf.iam_url[n - 1] = '\0';
    r->conf.refresh_ms = conf->refresh_ms;
    r->conf.unknown_ttl_ms = conf->unknown_ttl_ms;
    r->conf.retry_ms = conf->retry_ms;
    r->conf.timeout_ms = conf->timeout_ms;
    r->u = upstream;
    r->credentials = credentials;
    TAILQ_INIT(&r->entries);
    return r;
}

int iamregion_share(struct iamregion *r, struct redis_link *link, const char *prefix)
{
    char *copy = strdup(prefix ? prefix : "");
    if (!copy)
        return -1;
    free(r->prefix);
    r->prefix = copy;
    r->link = link;
    return 0;
}

void iamregion_set_metrics(struct iamregion *r, struct metrics *m)
{
    r->metrics = m;
}

static void entry_free(struct entry *e)
{
    struct iamregion *r = e->owner;
    struct iamregion_wait *w;
    while ((w = TAILQ_FIRST(&e->waiters)) != NULL) {
        TAILQ_REMOVE(&e->waiters, w, link);
        r->stats.waiting--;
        free(w);
    }
    if (e->shared_get)
        iamregion_redis_cancel(e->shared_get);
    if (e->cred_wait)
        credentials_cancel(e->cred_wait);
    if (e->call)
        upstream_cancel(r->u, e->call);
    keymap_remove(&r->projects, &e->item);
    TAILQ_REMOVE(&r->entries, e, link);
    free(e);
}

void iamregion_free(struct iamregion *r)
{
    if (!r)
        return;
    struct entry *e;
    while ((e = TAILQ_FIRST(&r->entries)) != NULL)
        entry_free(e);
    iamregion_conf_free(&r->conf);
    free(r->prefix);
    free(r);
}

/* A new FETCHING entry for `project`, or NULL (no room, no memory). When
 * the table is full, the unknown and failed projects nobody waits for go. */
static struct entry *entry_new(struct iamregion *r, const char *project)
{
    if (r->projects.count >= IAMREGION_MAX_PROJECTS) {
        struct entry *e, *next;
        for (e = TAILQ_FIRST(&r->entries); e; e = next) {
            next = TAILQ_NEXT(e, link);
            if ((e->state == ENTRY_UNKNOWN || e->state == ENTRY_FAILED) && !e->calling)
                entry_free(e);
        }
        if (r->projects.count >= IAMREGION_MAX_PROJECTS)
            return NULL;
    }
    struct entry *e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    e->owner = r;
    memcpy(e->project, project, PROJECT_ID_LEN + 1);
    e->item.key = e->project;
    e->state = ENTRY_FETCHING;
    TAILQ_INIT(&e->waiters);
    if (keymap_put(&r->projects, &e->item) < 0) {
        free(e);
        return NULL;
    }
    TAILQ_INSERT_TAIL(&r->entries, e, link);
    return e;
}

static enum iamregion_status status_of(const struct entry *e)
{
    return e->state == ENTRY_KNOWN     ? IAMREGION_FOUND
           : e->state == ENTRY_UNKNOWN ? IAMREGION_UNKNOWN
           : e->state == ENTRY_FAILED  ? IAMREGION_FAILED
                                       : IAMREGION_PENDING;
}

/* The call for `e` is over: `found` a region, or `status` UNKNOWN or
 * FAILED; held `ttl_ms` (read from Redis), or < 0 for the configured time.
 * Sets the entry's state, then answers its waiters. */
static void finish(struct entry *e, enum iamregion_status status, const char *found, int64_t ttl_ms)
{
    struct iamregion *r = e->owner;
    int64_t now = clock_mono_us();
    e->calling = 0;
    if (status == IAMREGION_FOUND) {
        if (strcmp(e->region, found) != 0)
            log_info("IAM: project %s is in region %s", e->project, found);
        snprintf(e->region, sizeof(e->region), "%s", found);
        e->state = ENTRY_KNOWN;
        e->until_us = now + (ttl_ms >= 0 ? ttl_ms : r->conf.refresh_ms) * 1000;
    } else if (status == IAMREGION_UNKNOWN) {
        log_info("IAM: project %s is not known", e->project);
        e->region[0] = '\0';
        e->state = ENTRY_UNKNOWN;
        e->until_us = now + (ttl_ms >= 0 ? ttl_ms : r->conf.unknown_ttl_ms) * 1000;
    } else {
        r->stats.failures++;
        /* A region held is kept through a failed refresh, asked again later. */
        if (e->state != ENTRY_KNOWN)
            e->state = ENTRY_FAILED;
        e->until_us = now + r->conf.retry_ms * 1000;
    }
    enum iamregion_status answer = status_of(e);
    struct iamregion_wait *w;
    while ((w = TAILQ_FIRST(&e->waiters)) != NULL) {
        TAILQ_REMOVE(&e->waiters, w, link);
        r->stats.waiting--;
        iamregion_cb cb = w->cb;
        void *arg = w->arg;
        free(w);
        cb(answer, answer == IAMREGION_FOUND ? e->region : NULL, arg);
    }
}

/* IAM answered (or could not be asked): counted, shared through Redis
 * (a region or an unknown project, never a failure), then finished. */
static void iam_answered(struct entry *e, enum iamregion_status status, const char *found)
{
    struct iamregion *r = e->owner;
    metrics_count_iam_region(r->metrics, status == IAMREGION_FOUND     ? METRICS_IAM_REGION_KNOWN
                                         : status == IAMREGION_UNKNOWN ? METRICS_IAM_REGION_UNKNOWN
                                                                       : METRICS_IAM_REGION_FAILED);
    if (status == IAMREGION_FOUND)
        iamregion_redis_put(r->link, r->prefix, e->project, found, r->conf.refresh_ms);
    else if (status == IAMREGION_UNKNOWN)
        iamregion_redis_put(r->link, r->prefix, e->project, NULL, r->conf.unknown_ttl_ms);
    finish(e, status, found, -1);
}

/* The region of IAM's answer `body`, about `project`, into `out`. Returns 0
 * or -1 (not JSON, no project.name, another project, not a region). */
static int region_of(const char *body, size_t len, const char *project, char out[REGIONS_NAME_MAX])
{
    cJSON *doc = cJSON_ParseWithLength(body, len);
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(doc, "project");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(p, "name");
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(p, "id");
    int rc = -1;
    if (cJSON_IsString(name) && (!id || (cJSON_IsString(id) && strcasecmp(id->valuestring, project) == 0))) {
        /* REGION_SUB names a sub-project of REGION. */
        size_t n = strcspn(name->valuestring, "_");
        if (n > 0 && n < REGIONS_NAME_MAX) {
            memcpy(out, name->valuestring, n);
            out[n] = '\0';
            rc = regions_name_ok(out) ? 0 : -1;
        }
    }
    cJSON_Delete(doc);
    return rc;
}

static void on_iam_done(const struct upstream_response *resp, void *arg)
{
    struct entry *e = arg;
    char region[REGIONS_NAME_MAX];
    e->call = NULL;
    if (resp->fault == FAULT_NONE && resp->status == 200 && region_of(resp->body, resp->len, e->project, region) == 0) {
        iam_answered(e, IAMREGION_FOUND, region);
    } else if (resp->fault == FAULT_NONE && resp->status == 404) {
        iam_answered(e, IAMREGION_UNKNOWN, NULL);
    } else {
        char why[160];
        if (resp->fault != FAULT_NONE)
            snprintf(why, sizeof(why), "%s", resp->fault_detail ? resp->fault_detail : "a transport fault");
        else
            snprintf(why, sizeof(why), resp->status == 200 ? "no region in its answer" : "status %d", resp->status);
        log_warn("IAM: GET /v3/projects/%s failed: %s", e->project, why);
        iam_answered(e, IAMREGION_FAILED, NULL);
    }
}

static void on_credentials(const struct credentials_result *res, void *arg)
{
    struct entry *e = arg;
    struct iamregion *r = e->owner;
    e->cred_wait = NULL;
    if (res->status != CREDENTIALS_OK) {
        log_warn("IAM: no credentials to ask for project %s: %s", e->project, res->reason ? res->reason : "?");
        iam_answered(e, IAMREGION_FAILED, NULL);
        return;
    }
    char url[600];
    snprintf(url, sizeof(url), "%s/v3/projects/%s", r->conf.iam_url, e->project);
    static char *const drop[] = {"X-Request-Id"};
    struct upstream_request req = {
        .method = "GET",
        .url = url,
        .connect_timeout_ms = r->conf.timeout_ms,
        .timeout_ms = r->conf.timeout_ms,
        .drop_headers = drop,
        .ndrop_headers = 1,
        .auth_headers = res->headers,
        .nauth_headers = res->nheaders,
    };
    r->stats.calls++;
    metrics_count_iam_region(r->metrics, METRICS_IAM_REGION_CALLS);
    if (!(e->call = upstream_fetch(r->u, &req, on_iam_done, e)))
        iam_answered(e, IAMREGION_FAILED, NULL);
}

/* Ask IAM about `e` (`calling` set). May finish before it returns. */
static void ask_iam(struct entry *e)
{
    struct iamregion *r = e->owner;
    char url[600];
    snprintf(url, sizeof(url), "%s/v3/projects/%s", r->conf.iam_url, e->project);
    struct credentials_wait *w = credentials_get(r->credentials, e->project, "GET", url, on_credentials, e);
    if (w)
        e->cred_wait = w;
}

/* What the map in Redis holds of `e`'s project (iamregion_redis.h). */
static void on_shared(enum iamregion_redis_answer answer, const char *region, int64_t ttl_ms, void *arg)
{
    struct entry *e = arg;
    struct iamregion *r = e->owner;
    e->shared_get = NULL;
    switch (answer) {
    case IAMREGION_REDIS_KNOWN:
        metrics_count_iam_region(r->metrics, METRICS_IAM_REGION_FROM_REDIS);
        finish(e, IAMREGION_FOUND, region, ttl_ms);
        break;
    case IAMREGION_REDIS_NOTKNOWN:
        metrics_count_iam_region(r->metrics, METRICS_IAM_REGION_FROM_REDIS);
        finish(e, IAMREGION_UNKNOWN, NULL, ttl_ms);
        break;
    case IAMREGION_REDIS_MISS: ask_iam(e); break;
    case IAMREGION_REDIS_CLOSED: /* shutting down: nobody is answered (iamregion_free drops the waiters) */
        e->calling = 0;
        break;
    }
}

/* Find `e`'s region (no call out): in Redis when the map is shared there,
 * else (or when Redis holds nothing) from IAM. May finish before it
 * returns. */
static void start_call(struct entry *e)
{
    struct iamregion *r = e->owner;
    e->calling = 1;
    if (r->link && (e->shared_get = iamregion_redis_get(r->link, r->prefix, e->project, on_shared, e)) != NULL)
        return;
    ask_iam(e);
}

enum iamregion_status iamregion_lookup(struct iamregion *r, const char *project, char region[REGIONS_NAME_MAX],
                                       iamregion_cb cb, void *arg, struct iamregion_wait **wait)
{
    *wait = NULL;
    region[0] = '\0';
    if (!project_ok(project))
        return IAMREGION_UNKNOWN;
    struct keymap_item *item = keymap_get(&r->projects, project);
    struct entry *e = item ? (struct entry *)((char *)item - offsetof(struct entry, item)) : NULL;
    int64_t now = clock_mono_us();
    if (e && e->state == ENTRY_KNOWN) {
        if (now >= e->until_us && !e->calling)
            start_call(e); /* in the background; a failure keeps the region */
        snprintf(region, REGIONS_NAME_MAX, "%s", e->region);
        metrics_count_iam_region(r->metrics, METRICS_IAM_REGION_FROM_MEMORY);
        return IAMREGION_FOUND;
    }
    if (e && (e->state == ENTRY_UNKNOWN || e->state == ENTRY_FAILED)) {
        if (now < e->until_us) {
            if (e->state == ENTRY_UNKNOWN)
                metrics_count_iam_region(r->metrics, METRICS_IAM_REGION_FROM_MEMORY);
            return status_of(e);
        }
        e->state = ENTRY_FETCHING;
    }
    if (!e && !(e = entry_new(r, project))) {
        log_warn("IAM: no room to remember project %s", project);
        return IAMREGION_FAILED;
    }
    if (!e->calling)
        start_call(e);
    if (e->state != ENTRY_FETCHING) /* it finished at once (no credentials, no call) */
        return status_of(e);
    struct iamregion_wait *w = calloc(1, sizeof(*w));
    if (!w)
        return IAMREGION_FAILED;
    *w = (struct iamregion_wait){.e = e, .cb = cb, .arg = arg};
    TAILQ_INSERT_TAIL(&e->waiters, w, link);
    r->stats.waiting++;
    *wait = w;
    return IAMREGION_PENDING;
}

void iamregion_cancel(struct iamregion_wait *w)
{
    if (!w)
        return;
    TAILQ_REMOVE(&w->e->waiters, w, link);
    w->e->owner->stats.waiting--;
    free(w);
}

void iamregion_stats(const struct iamregion *r, struct iamregion_stats *out)
{
    *out = r->stats;
    out->projects = r->projects.count;
}
