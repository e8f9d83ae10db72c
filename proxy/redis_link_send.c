/*
 * The sending part of redis_link (redis_link.h is the contract of its
 * three files, redis_link_int.h what they share): redis_link_send and redis_link_send_argv. Outside a cluster a
 * command goes on the data connection. In a cluster it is formatted once
 * and kept until its final answer, so that it can be sent again: to the
 * master of its key's slot; where a MOVED or an ASK points (behind ASKING),
 * at most REDIRECTS_MAX times, a MOVED also having the slot map read again;
 * and after a TRYAGAIN (a slot in migration), after a short delay, while
 * that fits the link's budget. The caller's callback sees only the final
 * answer, or NULL when the command could not be sent on.
 */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "clock.h"
#include "redis_link.h"
#include "redis_link_int.h"

#define REDIRECTS_MAX 5 /* MOVED/ASK followed for one command */
#define TRYAGAIN_MAX  2 /* TRYAGAIN answers sent again for one command */

static const int64_t tryagain_delay_ms[TRYAGAIN_MAX] = {5, 20};

/* A command on its way to a cluster node: the formatted bytes, to send
 * again where a MOVED or ASK points. */
struct cluster_cmd {
    struct redis_link *r;
    redisCallbackFn *cb;
    void *privdata;
    int redirects;
    int tries;                        /* TRYAGAIN answers sent again */
    int64_t sent_us;                  /* first sent (monotonic): retries stay within the budget */
    struct event *wait;               /* the TRYAGAIN delay; NULL until the first */
    struct cluster_cmd *next, **prev; /* in r->retrying while `wait` is pending */
    unsigned slot;
    char *cmd; /* hiredis's formatted command: redisFreeCommand */
    size_t len;
};

static void on_cluster_reply(redisAsyncContext *ac, void *reply, void *privdata);

static void cluster_cmd_free(struct cluster_cmd *c)
{
    if (c->wait)
        event_free(c->wait);
    redisFreeCommand(c->cmd);
    free(c);
}

static void retrying_unlink(struct cluster_cmd *c)
{
    if (!c->prev)
        return;
    *c->prev = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->next = NULL;
    c->prev = NULL;
}

/* Queue `c` on `n` (behind ASKING for an ASK). */
static int cluster_queue(struct redis_conn *n, struct cluster_cmd *c, int asking)
{
    if (asking && redisAsyncCommand(n->ctx, NULL, NULL, "ASKING") != REDIS_OK)
        return REDIS_ERR;
    return redisAsyncFormattedCommand(n->ctx, on_cluster_reply, c, c->cmd, c->len);
}

/* The connection to the master at `a`, if it is up. */
static struct redis_conn *node_at(struct redis_link *r, const struct redis_addr *a)
{
    for (int j = 0; j < REDIS_CLUSTER_NODES_MAX; j++) {
        struct redis_conn *n = &r->nodes[j];
        if (n->ctx && n->state == REDIS_UP && n->at.port == a->port && strcmp(n->at.host, a->host) == 0)
            return n;
    }
    return NULL;
}

/* The TRYAGAIN delay is over: send `c` again to its slot's master (the
 * map may have changed meanwhile), or answer the caller NULL if it is not
 * up. */
static void on_tryagain_timer(evutil_socket_t fd, short what, void *arg)
{
    struct cluster_cmd *c = arg;
    struct redis_link *r = c->r;
    retrying_unlink(c);
    int m = redis_cluster_owner(r->map, c->slot);
    struct redis_conn *n = m >= 0 ? &r->nodes[r->master_node[m]] : NULL;
    if (n && n->ctx && n->state == REDIS_UP && cluster_queue(n, c, 0) == REDIS_OK)
        return;
    c->cb(NULL, NULL, c->privdata);
    cluster_cmd_free(c);
}

/* Is `rep` a TRYAGAIN that `c` may still send again within the budget?
 * Then it is, after a short delay, and 1 is returned. */
static int tryagain_later(struct cluster_cmd *c, const redisReply *rep)
{
    struct redis_link *r = c->r;
    if (strncmp(rep->str, "TRYAGAIN", 8) != 0 || c->tries >= TRYAGAIN_MAX)
        return 0;
    int64_t delay_ms = tryagain_delay_ms[c->tries];
    if ((clock_mono_us() - c->sent_us) / 1000 + delay_ms >= r->budget_ms)
        return 0;
    if (!c->wait && !(c->wait = evtimer_new(r->base, on_tryagain_timer, c)))
        return 0;
    struct timeval tv = redis_link_tv(delay_ms);
    if (evtimer_add(c->wait, &tv) < 0)
        return 0;
    c->tries++;
    r->tryagain_retries++;
    c->next = r->retrying;
    if (c->next)
        c->next->prev = &c->next;
    c->prev = &r->retrying;
    r->retrying = c;
    return 1;
}

/* A cluster command's reply: a redirection is followed (the caller never
 * sees it), a TRYAGAIN sent again after a delay, anything else goes to the
 * caller's callback. */
static void on_cluster_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct cluster_cmd *c = privdata;
    struct redis_link *r = c->r;
    redisReply *rep = reply;
    int ask;
    unsigned slot;
    struct redis_addr a;
    if (!r->closing && rep && rep->type == REDIS_REPLY_ERROR && tryagain_later(c, rep))
        return;
    if (!r->closing && rep && rep->type == REDIS_REPLY_ERROR && redis_cluster_redirect(rep->str, &ask, &slot, &a)) {
        r->redirects++;
        r->redirects_ask += ask;
        if (!ask) {
            int m = redis_cluster_find_master(r->map, &a);
            if (m >= 0) /* the slot moved to a master we know: send there from now on */
                r->map->owner[slot] = (uint8_t)(m + 1);
            redis_link_cluster_refresh(r, "MOVED", 0); /* other slots may have moved too */
        }
        struct redis_conn *n = node_at(r, &a);
        if (n && c->redirects++ < REDIRECTS_MAX && cluster_queue(n, c, ask) == REDIS_OK)
            return;
    }
    c->cb(ac, reply, c->privdata);
    cluster_cmd_free(c);
}

/* Send the formatted command `cmd` (taken: freed here) for `key`. */
static int cluster_send(struct redis_link *r, const char *key, size_t keylen, redisCallbackFn *cb, void *privdata,
                        char *cmd, int len)
{
    struct cluster_cmd *c = len > 0 && r->map ? malloc(sizeof(*c)) : NULL;
    if (!c) {
        if (len > 0)
            redisFreeCommand(cmd);
        return REDIS_ERR;
    }
    *c = (struct cluster_cmd){.r = r,
                              .cb = cb,
                              .privdata = privdata,
                              .sent_us = clock_mono_us(),
                              .slot = key ? redis_cluster_keyslot(key, keylen) : 0,
                              .cmd = cmd,
                              .len = (size_t)len};
    int m = redis_cluster_owner(r->map, c->slot);
    struct redis_conn *n = m >= 0 ? &r->nodes[r->master_node[m]] : NULL;
    if (!n || !n->ctx || n->state != REDIS_UP || cluster_queue(n, c, 0) != REDIS_OK) {
        cluster_cmd_free(c);
        return REDIS_ERR;
    }
    return REDIS_OK;
}

int redis_link_send(struct redis_link *r, const char *key, redisCallbackFn *cb, void *privdata, const char *fmt, ...)
{
    va_list ap;
    int rc;
    va_start(ap, fmt);
    if (!redis_link_is_cluster(r)) {
        rc = r->data.ctx ? redisvAsyncCommand(r->data.ctx, cb, privdata, fmt, ap) : REDIS_ERR;
    } else {
        char *cmd = NULL;
        int len = redisvFormatCommand(&cmd, fmt, ap);
        rc = cluster_send(r, key, key ? strlen(key) : 0, cb, privdata, cmd, len);
    }
    va_end(ap);
    return rc;
}

int redis_link_send_argv(struct redis_link *r, const char *key, size_t keylen, redisCallbackFn *cb, void *privdata,
                         int argc, const char **argv, const size_t *argvlen)
{
    if (!redis_link_is_cluster(r))
        return r->data.ctx ? redisAsyncCommandArgv(r->data.ctx, cb, privdata, argc, argv, argvlen) : REDIS_ERR;
    char *cmd = NULL;
    int len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
    return cluster_send(r, key, keylen, cb, privdata, cmd, len);
}

void redis_link_cancel_retries(struct redis_link *r)
{
    while (r->retrying) { /* waiting on a TRYAGAIN delay: answered NULL, as hiredis would */
        struct cluster_cmd *c = r->retrying;
        retrying_unlink(c);
        c->cb(NULL, NULL, c->privdata);
        cluster_cmd_free(c);
    }
}
