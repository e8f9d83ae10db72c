#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "cache_redis.h"
#include "clock.h"
#include "log.h"

enum redis_state { REDIS_DOWN, REDIS_CONNECTING, REDIS_UP };

struct redis_target {
    char host[256];
    int port;
    char unix_path[256]; /* non-empty: a Unix socket */
    int db;
};

struct cache_redis {
    struct event_base *base;
    struct redis_target target;
    int64_t budget_ms;
    int64_t connect_timeout_ms;
    int64_t reconnect_min_ms;
    int64_t reconnect_max_ms;
    size_t max_pending;

    redisAsyncContext *ctx; /* NULL while down; hiredis owns and frees it */
    enum redis_state state;
    int closing; /* cache_redis_free is running: callbacks only clean up */
    int64_t backoff_ms;
    struct event *connect_timer;   /* connect attempt timeout */
    struct event *reconnect_timer; /* next attempt */
    size_t pending;                /* commands sent, reply not yet seen */

    uint64_t errors;
    uint64_t timeouts;
    uint64_t reconnects;
};

/* One lookup. Lives until hiredis has called back for it (a reply, or NULL
 * when the context goes away), even if its budget ran out first. */
struct redis_lookup {
    struct cache_redis *r;
    cache_get_cb cb;
    void *arg;
    struct event *budget_timer;
    int answered;
};

static void connect_now(struct cache_redis *r);

/* ------------------------------------------------------------ the URL */

static int parse_url(const char *url, struct redis_target *t, char *err, size_t errlen)
{
    memset(t, 0, sizeof(*t));
    if (strchr(url, '@')) {
        /* Never echo it: the part before '@' is a password. */
        snprintf(err, errlen,
                 "redis url: credentials in the URL are not accepted (the URL is not shown, it holds a secret)");
        return -1;
    }
    if (strncmp(url, "unix:", 5) == 0) {
        const char *path = url + 5;
        if (strncmp(path, "//", 2) == 0)
            path += 2;
        if (path[0] != '/' || strlen(path) >= sizeof(t->unix_path)) {
            snprintf(err, errlen, "redis url '%s': unix: needs an absolute socket path", url);
            return -1;
        }
        snprintf(t->unix_path, sizeof(t->unix_path), "%s", path);
        return 0;
    }
    if (strncmp(url, "redis://", 8) != 0) {
        snprintf(err, errlen, "redis url '%s' must be redis://HOST:PORT[/DB], unix:PATH or none", url);
        return -1;
    }
    const char *h = url + 8;
    const char *host_end;
    const char *rest;
    if (h[0] == '[') { /* [::1]:6379 */
        host_end = strchr(h, ']');
        if (!host_end) {
            snprintf(err, errlen, "redis url '%s': unclosed '['", url);
            return -1;
        }
        h++;
        rest = host_end + 1;
    } else {
        host_end = h + strcspn(h, ":/");
        rest = host_end;
    }
    size_t hlen = (size_t)(host_end - h);
    if (hlen == 0 || hlen >= sizeof(t->host)) {
        snprintf(err, errlen, "redis url '%s': bad host", url);
        return -1;
    }
    memcpy(t->host, h, hlen);
    t->port = 6379;
    if (*rest == ':') {
        char *end;
        long port = strtol(rest + 1, &end, 10);
        if (end == rest + 1 || port < 1 || port > 65535) {
            snprintf(err, errlen, "redis url '%s': bad port", url);
            return -1;
        }
        t->port = (int)port;
        rest = end;
    }
    if (*rest == '/' && rest[1]) {
        char *end;
        long db = strtol(rest + 1, &end, 10);
        if (end == rest + 1 || *end || db < 0 || db > 1000000) {
            snprintf(err, errlen, "redis url '%s': bad database number", url);
            return -1;
        }
        t->db = (int)db;
    } else if (*rest && strcmp(rest, "/") != 0) {
        snprintf(err, errlen, "redis url '%s': unexpected '%s'", url, rest);
        return -1;
    }
    return 0;
}

int cache_redis_url_check(const char *url, char *err, size_t errlen)
{
    struct redis_target t;
    return parse_url(url, &t, err, errlen);
}

static const char *target_name(const struct cache_redis *r, char *buf, size_t len)
{
    if (r->target.unix_path[0])
        snprintf(buf, len, "unix:%s", r->target.unix_path);
    else
        snprintf(buf, len, "%s:%d", r->target.host, r->target.port);
    return buf;
}

/* ------------------------------------------------------- the connection */

static void schedule_reconnect(struct cache_redis *r)
{
    if (r->closing)
        return;
    r->state = REDIS_DOWN;
    struct timeval tv = {(time_t)(r->backoff_ms / 1000), (suseconds_t)((r->backoff_ms % 1000) * 1000)};
    evtimer_add(r->reconnect_timer, &tv);
    r->backoff_ms = r->backoff_ms * 2 > r->reconnect_max_ms ? r->reconnect_max_ms : r->backoff_ms * 2;
}

/* hiredis frees the context when this returns. */
static void on_connect(const redisAsyncContext *ac, int status)
{
    struct cache_redis *r = ac->data;
    char name[300];
    evtimer_del(r->connect_timer);
    if (status != REDIS_OK) {
        if (r->state != REDIS_DOWN && r->backoff_ms <= r->reconnect_min_ms)
            log_warn("redis %s: cannot connect: %s; retrying with backoff, requests go upstream meanwhile",
                     target_name(r, name, sizeof(name)), ac->errstr);
        r->ctx = NULL;
        schedule_reconnect(r);
        return;
    }
    log_info("redis %s: connected", target_name(r, name, sizeof(name)));
    r->state = REDIS_UP;
    r->backoff_ms = r->reconnect_min_ms;
}

/* hiredis frees the context when this returns. */
static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct cache_redis *r = ac->data;
    char name[300];
    r->ctx = NULL;
    if (r->closing)
        return;
    log_warn("redis %s: connection lost%s%s; reconnecting", target_name(r, name, sizeof(name)),
             status == REDIS_OK ? "" : ": ", status == REDIS_OK ? "" : ac->errstr);
    r->reconnects++;
    schedule_reconnect(r);
}

/* The connect attempt took too long (a black-holed address): give it up. */
static void on_connect_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct cache_redis *r = arg;
    char name[300];
    if (r->state != REDIS_CONNECTING || !r->ctx)
        return;
    log_warn("redis %s: connect timed out", target_name(r, name, sizeof(name)));
    redisAsyncContext *ac = r->ctx;
    r->ctx = NULL;
    redisAsyncFree(ac); /* not connected yet: no disconnect callback; pending lookups get NULL replies */
    schedule_reconnect(r);
}

static void on_reconnect_timer(evutil_socket_t fd, short what, void *arg)
{
    connect_now(arg);
}

static void on_command_done(redisAsyncContext *ac, void *reply, void *privdata);

/* SELECT must succeed: otherwise every entry would land in database 0. */
static void on_select_done(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct cache_redis *r = privdata;
    redisReply *rep = reply;
    r->pending--;
    if (r->closing || !rep)
        return;
    if (rep->type == REDIS_REPLY_ERROR) {
        r->errors++;
        log_error("redis: SELECT %d failed: %s; disconnecting", r->target.db, rep->str);
        r->state = REDIS_CONNECTING; /* no lookups until a reconnect succeeds */
        redisAsyncDisconnect(ac);
    }
}

static void connect_now(struct cache_redis *r)
{
    char name[300];
    redisAsyncContext *ac = r->target.unix_path[0] ? redisAsyncConnectUnix(r->target.unix_path)
                                                   : redisAsyncConnect(r->target.host, r->target.port);
    if (!ac) {
        log_error("redis %s: out of memory", target_name(r, name, sizeof(name)));
        schedule_reconnect(r);
        return;
    }
    if (ac->err) {
        log_warn("redis %s: cannot connect: %s", target_name(r, name, sizeof(name)), ac->errstr);
        redisAsyncFree(ac);
        schedule_reconnect(r);
        return;
    }
    ac->data = r;
    redisLibeventAttach(ac, r->base);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    r->ctx = ac;
    r->state = REDIS_CONNECTING;
    if (r->target.db) {
        /* Queued now, sent first once connected: it precedes every lookup. */
        if (redisAsyncCommand(ac, on_select_done, r, "SELECT %d", r->target.db) == REDIS_OK)
            r->pending++;
    }
    struct timeval tv = {(time_t)(r->connect_timeout_ms / 1000), (suseconds_t)((r->connect_timeout_ms % 1000) * 1000)};
    evtimer_add(r->connect_timer, &tv);
}

/* ------------------------------------------------------------- commands */

/* A SET or SELECT finished: only failures matter. */
static void on_command_done(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct cache_redis *r = privdata;
    redisReply *rep = reply;
    r->pending--;
    if (r->closing)
        return;
    if (!rep || rep->type == REDIS_REPLY_ERROR) {
        r->errors++;
        if (rep)
            log_warn("redis: command failed: %s", rep->str);
    }
}

/* Decode "JG1 <stored_at_ms> <terminal>[ <status>[ <expires_at_ms>]]\n<body>". NULL if it is not that. */
static struct body *decode_value(const char *v, size_t len)
{
    const char *nl = memchr(v, '\n', len);
    if (!nl || len < 4 || memcmp(v, "JG1 ", 4) != 0)
        return NULL;
    char head[64];
    size_t hlen = (size_t)(nl - v);
    if (hlen >= sizeof(head))
        return NULL;
    memcpy(head, v, hlen);
    head[hlen] = '\0';
    int64_t stored_at, expires_at = 0;
    int terminal, status = 200;
    int fields = sscanf(head, "JG1 %" SCNd64 " %d %d %" SCNd64, &stored_at, &terminal, &status, &expires_at);
    if (fields < 2 || (terminal != 0 && terminal != 1) || (status != 200 && status != 404) || expires_at < 0)
        return NULL;
    struct body *b = body_new(nl + 1, len - hlen - 1, stored_at, terminal);
    if (b) {
        b->status = status;
        b->expires_at_ms = expires_at;
    }
    return b;
}

static void lookup_answer(struct redis_lookup *l, enum cache_status status, struct body *b)
{
    if (l->answered)
        return;
    l->answered = 1;
    evtimer_del(l->budget_timer);
    l->cb(status, b, l->arg);
}

static void lookup_free(struct redis_lookup *l)
{
    event_free(l->budget_timer);
    free(l);
}

static void on_lookup_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct redis_lookup *l = privdata;
    struct cache_redis *r = l->r;
    redisReply *rep = reply;
    r->pending--;
    if (r->closing) {
        lookup_free(l);
        return;
    }
    if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 2) {
        r->errors++;
        if (rep && rep->type == REDIS_REPLY_ERROR)
            log_warn("redis: lookup failed: %s", rep->str);
        lookup_answer(l, CACHE_UNAVAILABLE, NULL);
        lookup_free(l);
        return;
    }
    struct body *b = NULL;
    for (size_t i = 0; i < 2 && !b; i++) { /* [0] is KEY:t, preferred */
        redisReply *e = rep->element[i];
        if (e->type != REDIS_REPLY_STRING)
            continue;
        b = decode_value(e->str, e->len);
        if (!b) {
            r->errors++;
            log_warn("redis: ignoring an entry that is not jobgate's format");
        }
    }
    lookup_answer(l, b ? CACHE_HIT : CACHE_MISS, b);
    body_unref(b);
    lookup_free(l);
}

static void on_lookup_budget(evutil_socket_t fd, short what, void *arg)
{
    struct redis_lookup *l = arg;
    l->r->timeouts++;
    lookup_answer(l, CACHE_UNAVAILABLE, NULL);
    /* The lookup stays allocated until hiredis calls back for it. */
}

void cache_redis_get(struct cache_redis *r, const char *key, cache_get_cb cb, void *arg)
{
    if (r->state != REDIS_UP || !r->ctx || r->pending >= r->max_pending) {
        cb(CACHE_UNAVAILABLE, NULL, arg);
        return;
    }
    struct redis_lookup *l = calloc(1, sizeof(*l));
    if (!l) {
        cb(CACHE_UNAVAILABLE, NULL, arg);
        return;
    }
    l->r = r;
    l->cb = cb;
    l->arg = arg;
    l->budget_timer = evtimer_new(r->base, on_lookup_budget, l);
    if (!l->budget_timer || redisAsyncCommand(r->ctx, on_lookup_reply, l, "MGET %s:t %s:p", key, key) != REDIS_OK) {
        r->errors++;
        if (l->budget_timer)
            event_free(l->budget_timer);
        free(l);
        cb(CACHE_UNAVAILABLE, NULL, arg);
        return;
    }
    r->pending++;
    struct timeval tv = {(time_t)(r->budget_ms / 1000), (suseconds_t)((r->budget_ms % 1000) * 1000)};
    evtimer_add(l->budget_timer, &tv);
}

void cache_redis_put(struct cache_redis *r, const char *key, struct body *b, int64_t ttl_ms)
{
    if (r->state != REDIS_UP || !r->ctx || r->pending >= r->max_pending)
        return;
    char head[64];
    int hlen = snprintf(head, sizeof(head), "JG1 %" PRId64 " %d %d %" PRId64 "\n", b->stored_at_ms, b->terminal ? 1 : 0,
                        b->status, b->expires_at_ms);
    size_t vlen = (size_t)hlen + b->len;
    char *value = malloc(vlen);
    if (!value)
        return;
    memcpy(value, head, (size_t)hlen);
    memcpy(value + hlen, b->data, b->len);
    const char *suffix = b->terminal ? "t" : "p";
    int rc;
    if (ttl_ms < 0)
        rc = redisAsyncCommand(r->ctx, on_command_done, r, "SET %s:%s %b", key, suffix, value, vlen);
    else
        rc =
            redisAsyncCommand(r->ctx, on_command_done, r, "SET %s:%s %b PX %" PRId64, key, suffix, value, vlen, ttl_ms);
    free(value);
    if (rc == REDIS_OK)
        r->pending++;
    else
        r->errors++;
}

void cache_redis_health(const struct cache_redis *r, struct cache_health *out)
{
    static const char *const names[] = {[REDIS_DOWN] = "down", [REDIS_CONNECTING] = "connecting", [REDIS_UP] = "up"};
    *out = (struct cache_health){.backend = "redis",
                                 .state = names[r->state],
                                 .up = r->state == REDIS_UP,
                                 .errors = r->errors,
                                 .timeouts = r->timeouts,
                                 .reconnects = r->reconnects};
}

struct cache_redis *cache_redis_new(struct event_base *base, const struct cache_conf *conf, char *err, size_t errlen)
{
    struct cache_redis *r = calloc(1, sizeof(*r));
    if (!r) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (parse_url(conf->redis_url, &r->target, err, errlen) < 0) {
        free(r);
        return NULL;
    }
    r->base = base;
    r->budget_ms = conf->redis_budget_ms;
    r->connect_timeout_ms = conf->redis_connect_timeout_ms;
    r->reconnect_min_ms = conf->redis_reconnect_min_ms;
    r->reconnect_max_ms = conf->redis_reconnect_max_ms;
    r->max_pending = conf->redis_max_pending;
    r->backoff_ms = r->reconnect_min_ms;
    r->connect_timer = evtimer_new(base, on_connect_timeout, r);
    r->reconnect_timer = evtimer_new(base, on_reconnect_timer, r);
    if (!r->connect_timer || !r->reconnect_timer) {
        snprintf(err, errlen, "out of memory");
        cache_redis_free(r);
        return NULL;
    }
    connect_now(r);
    return r;
}

void cache_redis_free(struct cache_redis *r)
{
    if (!r)
        return;
    r->closing = 1;
    if (r->ctx) {
        redisAsyncContext *ac = r->ctx;
        r->ctx = NULL;
        redisAsyncFree(ac); /* calls every pending callback with a NULL reply */
    }
    if (r->connect_timer)
        event_free(r->connect_timer);
    if (r->reconnect_timer)
        event_free(r->reconnect_timer);
    free(r);
}
