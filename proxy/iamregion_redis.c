#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "cachekey.h"
#include "iamregion_redis.h"
#include "redis_link.h"
#include "regions.h"

/* One read: GET KEY and PTTL KEY, pipelined on the key's connection. Lives
 * until hiredis has called back for both (a reply, or NULL when the
 * connection goes away), even when its budget ran out or it was cancelled
 * first. */
struct iamregion_redis_get {
    struct redis_link *r;
    iamregion_redis_cb cb; /* NULL once answered or cancelled */
    void *arg;
    struct event *budget_timer;
    int replies_out;                  /* 2, then 1, then 0: freed */
    int have_value;                   /* the GET answered a valid value */
    char value[REGIONS_NAME_MAX + 8]; /* what the GET answered */
};

int iamregion_redis_key(char *out, size_t outlen, const char *prefix, const char *project)
{
    int n = snprintf(out, outlen, "%s{" CACHEKEY_IAM_PROJECT "%s}", prefix ? prefix : "", project);
    return n < 0 || (size_t)n >= outlen ? -1 : 0;
}

static void answer(struct iamregion_redis_get *g, enum iamregion_redis_answer a, const char *region, int64_t ttl_ms)
{
    iamregion_redis_cb cb = g->cb;
    if (!cb)
        return;
    g->cb = NULL;
    evtimer_del(g->budget_timer);
    cb(a, region, ttl_ms, g->arg);
}

static void get_release(struct iamregion_redis_get *g)
{
    if (--g->replies_out > 0)
        return;
    event_free(g->budget_timer);
    free(g);
}

static void on_value(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct iamregion_redis_get *g = privdata;
    struct redis_link *r = g->r;
    redisReply *rep = reply;
    r->pending--;
    if (r->closing) {
        answer(g, IAMREGION_REDIS_CLOSED, NULL, 0);
    } else if (rep && rep->type == REDIS_REPLY_STRING && rep->len < sizeof(g->value)) {
        memcpy(g->value, rep->str, rep->len);
        g->value[rep->len] = '\0';
        g->have_value = strcmp(g->value, IAMREGION_REDIS_UNKNOWN) == 0 || regions_name_ok(g->value);
    } else if (rep && rep->type == REDIS_REPLY_ERROR) {
        redis_link_error_reply(r, "GET", rep);
    } else if (!rep) {
        r->errors++;
    }
    get_release(g);
}

static void on_ttl(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct iamregion_redis_get *g = privdata;
    struct redis_link *r = g->r;
    redisReply *rep = reply;
    r->pending--;
    if (r->closing) {
        answer(g, IAMREGION_REDIS_CLOSED, NULL, 0);
    } else if (rep && rep->type == REDIS_REPLY_INTEGER && rep->integer > 0 && g->have_value) {
        int unknown = strcmp(g->value, IAMREGION_REDIS_UNKNOWN) == 0;
        answer(g, unknown ? IAMREGION_REDIS_NOTKNOWN : IAMREGION_REDIS_KNOWN, unknown ? NULL : g->value,
               (int64_t)rep->integer);
    } else {
        /* Not there (-2), no expiry (-1: not ours), an error: ask IAM. */
        if (rep && rep->type == REDIS_REPLY_ERROR)
            redis_link_error_reply(r, "PTTL", rep);
        else if (!rep)
            r->errors++;
        answer(g, IAMREGION_REDIS_MISS, NULL, 0);
    }
    get_release(g);
}

static void on_budget(evutil_socket_t fd, short what, void *arg)
{
    struct iamregion_redis_get *g = arg;
    g->r->timeouts++;
    answer(g, IAMREGION_REDIS_MISS, NULL, 0);
}

struct iamregion_redis_get *iamregion_redis_get(struct redis_link *link, const char *prefix, const char *project,
                                                iamregion_redis_cb cb, void *arg)
{
    char key[256];
    if (!link || !redis_link_ready(link) || iamregion_redis_key(key, sizeof(key), prefix, project) < 0)
        return NULL;
    struct iamregion_redis_get *g = calloc(1, sizeof(*g));
    if (!g)
        return NULL;
    *g = (struct iamregion_redis_get){.r = link, .cb = cb, .arg = arg};
    g->budget_timer = evtimer_new(link->base, on_budget, g);
    if (!g->budget_timer || redis_link_send(link, key, on_value, g, "GET %s", key) != REDIS_OK) {
        link->errors++;
        if (g->budget_timer)
            event_free(g->budget_timer);
        free(g);
        return NULL;
    }
    link->pending++;
    g->replies_out = 1;
    if (redis_link_send(link, key, on_ttl, g, "PTTL %s", key) != REDIS_OK) {
        /* The GET is out: its reply frees the read; the caller asks IAM. */
        link->errors++;
        g->cb = NULL;
        return NULL;
    }
    link->pending++;
    g->replies_out = 2;
    struct timeval tv = redis_link_tv(link->budget_ms);
    evtimer_add(g->budget_timer, &tv);
    return g;
}

void iamregion_redis_cancel(struct iamregion_redis_get *g)
{
    if (!g)
        return;
    g->cb = NULL;
    evtimer_del(g->budget_timer);
}

static void on_put(redisAsyncContext *ac, void *reply, void *privdata)
{
    redis_link_reply_done(privdata, reply, "SET");
}

void iamregion_redis_put(struct redis_link *link, const char *prefix, const char *project, const char *region,
                         int64_t px_ms)
{
    char key[256];
    if (!link || px_ms <= 0 || !redis_link_ready(link) || iamregion_redis_key(key, sizeof(key), prefix, project) < 0)
        return;
    const char *value = region ? region : IAMREGION_REDIS_UNKNOWN;
    if (redis_link_send(link, key, on_put, link, "SET %s %s PX %" PRId64, key, value, px_ms) == REDIS_OK)
        link->pending++;
    else
        link->errors++;
}
