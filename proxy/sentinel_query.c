#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>

#include "log.h"
#include "sentinel_query.h"

const char *redis_error_code(const redisReply *rep, char *code, size_t len)
{
    size_t n = 0;
    while (n < len - 1 && rep->str[n] >= 'A' && rep->str[n] <= 'Z') {
        code[n] = rep->str[n];
        n++;
    }
    code[n] = '\0';
    return n ? code : "error";
}

static struct timeval tv_of(int64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
    return tv;
}

static void query_attempt(struct sentinel_query *q);

/* Why the connection to the sentinel asked went: the TLS handshake's
 * failure when there was one, else `why`. */
static const char *lost_why(struct sentinel_query *q, const char *why)
{
    const struct redis_addr *s = &q->target->sentinels[q->index];
    const char *tls = redis_tls_error(q->tls, s->host, s->port);
    if (!tls)
        return why;
    snprintf(q->why, sizeof(q->why), "TLS: %s", tls);
    return q->why;
}

/* The sentinel asked could not name the master (`why`): ask the next; when
 * none could, say so. */
static void query_next(struct sentinel_query *q, const char *why)
{
    char name[300];
    log_debug("sentinel %s: %s", redis_addr_name(&q->target->sentinels[q->index], name, sizeof(name)), why);
    if (++q->index < q->target->nsentinels) {
        query_attempt(q);
        return;
    }
    q->running = 0;
    q->hooks.failed(q->hooks.arg, why);
}

/* AUTH's reply from the sentinel asked: a refusal is kept for the reason
 * its next reply (NOAUTH) gives. */
static void on_query_auth(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct sentinel_query *q = privdata;
    redisReply *rep = reply;
    char who[320], name[300];
    if (q->closing || ac != q->ctx || !rep || rep->type != REDIS_REPLY_ERROR)
        return;
    redis_error_code(rep, q->auth_error, sizeof(q->auth_error));
    snprintf(who, sizeof(who), "sentinel %s", redis_addr_name(&q->target->sentinels[q->index], name, sizeof(name)));
    q->hooks.auth_refused(q->hooks.arg, who, rep);
}

static void on_query_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct sentinel_query *q = privdata;
    redisReply *rep = reply;
    if (q->closing || ac != q->ctx)
        return;
    evtimer_del(q->timer);
    q->ctx = NULL;
    if (!rep) {
        query_next(q, lost_why(q, "connection lost"));
        return;
    }
    redisAsyncDisconnect(ac); /* once this returns; its callbacks ignore it from now on */
    struct redis_addr a;
    char *end = NULL;
    long port = 0;
    if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 && rep->element[0]->type == REDIS_REPLY_STRING &&
        rep->element[1]->type == REDIS_REPLY_STRING && rep->element[0]->len > 0 &&
        rep->element[0]->len < sizeof(a.host))
        port = strtol(rep->element[1]->str, &end, 10);
    if (port < 1 || port > 65535 || !end || *end) {
        char why[160];
        if (rep->type == REDIS_REPLY_NIL)
            snprintf(why, sizeof(why), "does not know master %s", q->target->master_name);
        else if (q->auth_error[0])
            snprintf(why, sizeof(why), "AUTH refused (%s)", q->auth_error);
        else if (rep->type == REDIS_REPLY_ERROR)
            snprintf(why, sizeof(why), "%.150s",
                     q->password && *q->password && strstr(rep->str, q->password) ? "error" : rep->str);
        else
            snprintf(why, sizeof(why), "unexpected reply");
        query_next(q, why);
        return;
    }
    q->running = 0;
    memcpy(a.host, rep->element[0]->str, rep->element[0]->len + 1);
    a.port = (int)port;
    q->hooks.found(q->hooks.arg, &a);
}

/* hiredis frees the context when this returns. */
static void on_query_connect(const redisAsyncContext *ac, int status)
{
    struct sentinel_query *q = ac->data;
    if (q->closing || ac != q->ctx || status == REDIS_OK)
        return;
    evtimer_del(q->timer);
    q->ctx = NULL;
    query_next(q, lost_why(q, ac->errstr));
}

/* hiredis frees the context when this returns. */
static void on_query_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    struct sentinel_query *q = ac->data;
    if (q->closing || ac != q->ctx)
        return;
    evtimer_del(q->timer);
    q->ctx = NULL;
    query_next(q, lost_why(q, "connection lost"));
}

static void on_query_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct sentinel_query *q = arg;
    redisAsyncContext *ac = q->ctx;
    if (!ac)
        return;
    q->ctx = NULL;
    redisAsyncFree(ac); /* its callbacks ignore it from now on */
    query_next(q, "timed out");
}

/* Ask sentinel number q->index, within the time limit. */
static void query_attempt(struct sentinel_query *q)
{
    const struct redis_addr *s = &q->target->sentinels[q->index];
    redisAsyncContext *ac = redis_tls_connect(q->tls, s->host, s->port);
    if (!ac || ac->err) {
        char why[160];
        snprintf(why, sizeof(why), "%s", ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        query_next(q, why);
        return;
    }
    ac->data = q;
    redisLibeventAttach(ac, q->base);
    redisAsyncSetConnectCallback(ac, on_query_connect);
    redisAsyncSetDisconnectCallback(ac, on_query_disconnect);
    q->ctx = ac;
    q->auth_error[0] = '\0';
    if (q->password && (q->user ? redisAsyncCommand(ac, on_query_auth, q, "AUTH %s %s", q->user, q->password)
                                : redisAsyncCommand(ac, on_query_auth, q, "AUTH %s", q->password)) != REDIS_OK) {
        q->ctx = NULL;
        redisAsyncFree(ac);
        query_next(q, "cannot send");
        return;
    }
    if (redisAsyncCommand(ac, on_query_reply, q, "SENTINEL get-master-addr-by-name %s", q->target->master_name) !=
        REDIS_OK) {
        q->ctx = NULL;
        redisAsyncFree(ac);
        query_next(q, "cannot send");
        return;
    }
    struct timeval tv = tv_of(q->timeout_ms);
    evtimer_add(q->timer, &tv);
}

int sentinel_query_init(struct sentinel_query *q, struct event_base *base, const struct redis_target *target,
                        const char *user, const char *password, int64_t timeout_ms,
                        const struct sentinel_query_hooks *hooks)
{
    memset(q, 0, sizeof(*q));
    q->base = base;
    q->target = target;
    q->user = user;
    q->password = password;
    q->timeout_ms = timeout_ms;
    q->hooks = *hooks;
    q->timer = evtimer_new(base, on_query_timeout, q);
    return q->timer ? 0 : -1;
}

void sentinel_query_start(struct sentinel_query *q)
{
    if (q->running || q->closing)
        return;
    q->running = 1;
    q->index = 0;
    query_attempt(q);
}

void sentinel_query_close(struct sentinel_query *q)
{
    q->closing = 1;
    if (q->ctx) {
        redisAsyncContext *ac = q->ctx;
        q->ctx = NULL;
        redisAsyncFree(ac);
    }
    if (q->timer) {
        event_free(q->timer);
        q->timer = NULL;
    }
}
