/*
 * The handshake half of redis_link (redis_link.h is the contract): what a
 * new connection sends before anything else, and the replies to it until
 * the connection counts as up. AUTH first on every connection (the
 * sentinels' credentials on the watch); then, on the data connection,
 * SELECT (the database), ROLE (sentinel://: the address must be the
 * master's) and PING (TLS: proves the bridge's handshake); on a cluster
 * node AUTH and PING only; the config connection asks CLUSTER SLOTS, the
 * subscriber and the watch SUBSCRIBE. A data or node connection is up once
 * every reply it waits for came back as hoped; any other reply closes it
 * (redis_link.c then reconnects with backoff).
 */
#include <stdio.h>
#include <string.h>

#include <event2/event.h>

#include "cachekey.h"
#include "clock.h"
#include "log.h"
#include "redis_link.h"
#include "redis_link_int.h"

/* The data link's handshake is answered (or it had none): commands may go. */
static void data_up(struct redis_link *r)
{
    struct redis_conn *link = &r->data;
    char name[300];
    evtimer_del(link->connect_timer);
    link->state = REDIS_UP;
    r->state = REDIS_UP;
    link->backoff_ms = r->reconnect_min_ms;
    if (redis_link_is_sentinel(r))
        log_info("redis %s: connected to the master of %s (database %d)",
                 redis_link_conn_name(link, name, sizeof(name)), r->target.master_name, r->target.db);
    else
        log_info("redis %s: connected (database %d)", redis_link_conn_name(link, name, sizeof(name)), r->target.db);
}

/* cluster://: a master's connection is up (AUTH answered, or none). */
static void node_up(struct redis_conn *link)
{
    struct redis_link *r = link->r;
    char name[300];
    evtimer_del(link->connect_timer);
    link->state = REDIS_UP;
    link->backoff_ms = r->reconnect_min_ms;
    log_info("redis cluster node %s: connected", redis_link_conn_name(link, name, sizeof(name)));
    redis_link_cluster_update_state(r);
}

/* The connection's handshake is answered (or it had none). */
void redis_link_conn_up(struct redis_conn *link)
{
    if (link->role == LINK_NODE)
        node_up(link);
    else
        data_up(link->r);
}

/* One handshake reply came back as hoped. */
static void handshake_step(struct redis_conn *link)
{
    if (--link->handshake_out == 0 && link->connected)
        redis_link_conn_up(link);
}

/* The common head of a handshake reply's callback (`privdata`: the
 * connection): a command of the data connection is no longer pending. The
 * reply is to be judged unless the link is closing, the connection was let
 * go of (a NULL reply, or another context by now) or AUTH was refused on it
 * (the replies queued behind AUTH are refused too: redis_link_auth_refused
 * told of it). */
static const redisReply *handshake_reply(redisAsyncContext *ac, void *reply, struct redis_conn *link)
{
    if (link->role == LINK_DATA)
        link->r->pending--;
    if (link->r->closing || !reply || ac != link->ctx || link->auth_failed)
        return NULL;
    return reply;
}

/* SELECT must succeed: otherwise every entry would land in database 0. */
static void on_select_done(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct redis_conn *link = privdata;
    struct redis_link *r = link->r;
    const redisReply *rep = handshake_reply(ac, reply, link);
    if (!rep)
        return;
    if (rep->type == REDIS_REPLY_ERROR) {
        redis_link_error_reply(r, "SELECT", rep);
        log_error("redis: SELECT %d failed; disconnecting", r->target.db);
        redisAsyncDisconnect(ac); /* still connecting: no lookup has used it */
        return;
    }
    handshake_step(link);
}

/* sentinel://: the address the sentinels gave must be the master's (a
 * demoted master answers "slave"); otherwise they are asked again. */
static void on_role_done(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct redis_conn *link = privdata;
    struct redis_link *r = link->r;
    const redisReply *rep = handshake_reply(ac, reply, link);
    char name[300];
    if (!rep)
        return;
    if (rep->type == REDIS_REPLY_ARRAY && rep->elements > 0 && rep->element[0]->type == REDIS_REPLY_STRING &&
        strcmp(rep->element[0]->str, "master") == 0) {
        handshake_step(link);
        return;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        redis_link_error_reply(r, "ROLE", rep);
    } else {
        r->errors++;
        snprintf(r->last_error, sizeof(r->last_error), "not a master");
    }
    log_warn("redis %s: not the master of %s; asking the sentinels again",
             redis_link_conn_name(link, name, sizeof(name)), r->target.master_name);
    redisAsyncDisconnect(ac);
}

/* TLS, on the data connection or a cluster node's: Redis answered through
 * the bridge, so the TLS handshake succeeded (after AUTH, if any). */
static void on_ping_done(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct redis_conn *link = privdata;
    const redisReply *rep = handshake_reply(ac, reply, link);
    if (!rep)
        return;
    if (rep->type == REDIS_REPLY_ERROR) {
        redis_link_error_reply(link->r, "PING", rep);
        redisAsyncDisconnect(ac);
        return;
    }
    handshake_step(link);
}

/* AUTH's reply on any connection: refused, the connection is closed (and
 * retried with backoff: sentinels, the next one). AUTH goes first, so no
 * refusal can have been seen on this connection before it. */
static void on_auth_done(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct redis_conn *link = privdata;
    struct redis_link *r = link->r;
    const redisReply *rep = handshake_reply(ac, reply, link);
    char who[320], name[300];
    if (!rep)
        return;
    if (rep->type != REDIS_REPLY_ERROR) {
        if (link->role == LINK_DATA || link->role == LINK_NODE)
            handshake_step(link);
        return;
    }
    link->auth_failed = 1;
    snprintf(who, sizeof(who), "%s %s", link->role == LINK_WATCH ? "sentinel" : "redis",
             redis_link_conn_name(link, name, sizeof(name)));
    redis_link_auth_refused(r, who, rep, link->role == LINK_WATCH,
                            link->role != LINK_SUB && link->backoff_ms <= r->reconnect_min_ms);
    redisAsyncDisconnect(ac); /* once the replies queued behind it (refused too) are in */
}

/* Queue AUTH on a new connection (before anything else), if there are
 * credentials for it. Returns 1 if it was queued. */
static int send_auth(struct redis_conn *link, redisAsyncContext *ac)
{
    struct redis_link *r = link->r;
    const char *user = link->role == LINK_WATCH ? r->sentinel_user : r->user;
    const char *password = link->role == LINK_WATCH ? r->sentinel_password : r->password;
    if (!password)
        return 0;
    int rc = user ? redisAsyncCommand(ac, on_auth_done, link, "AUTH %s %s", user, password)
                  : redisAsyncCommand(ac, on_auth_done, link, "AUTH %s", password);
    return rc == REDIS_OK;
}

/* Queue the handshake on `ac`, `link`'s new connection, as its role wants:
 * queued now, sent first once connected. */
void redis_link_handshake_start(struct redis_conn *link, redisAsyncContext *ac)
{
    struct redis_link *r = link->r;
    if (link->role == LINK_DATA) {
        r->state = REDIS_CONNECTING;
        /* Queued now, sent first once connected, answered before the link
         * counts as up. One that cannot be queued is never answered: the
         * connect timer then gives the connection up. */
        if (r->password) {
            link->handshake_out++;
            if (send_auth(link, ac))
                r->pending++;
        }
        if (r->target.db) {
            link->handshake_out++;
            if (redisAsyncCommand(ac, on_select_done, link, "SELECT %d", r->target.db) == REDIS_OK)
                r->pending++;
        }
        if (redis_link_is_sentinel(r)) {
            link->handshake_out++;
            if (redisAsyncCommand(ac, on_role_done, link, "ROLE") == REDIS_OK)
                r->pending++;
        }
        if (r->tls) {
            link->handshake_out++;
            if (redisAsyncCommand(ac, on_ping_done, link, "PING") == REDIS_OK)
                r->pending++;
        }
    } else if (link->role == LINK_NODE) {
        /* A cluster has database 0 only, and the map names masters. With
         * TLS, a PING answered proves the bridge's handshake. */
        if (r->password) {
            link->handshake_out++;
            send_auth(link, ac);
        }
        if (r->tls) {
            link->handshake_out++;
            redisAsyncCommand(ac, on_ping_done, link, "PING");
        }
    } else if (link->role == LINK_CONFIG) {
        send_auth(link, ac);
        if (redisAsyncCommand(ac, redis_link_on_slots_reply, r, "CLUSTER SLOTS") == REDIS_OK) {
            r->refresh_out = 1;
            r->refreshes++;
            r->refresh_last_us = clock_mono_us();
        }
    } else if (link->role == LINK_SUB) {
        /* Pub/sub ignores the database: no SELECT on this connection. */
        send_auth(link, ac);
        redisAsyncCommand(ac, redis_link_on_subscriber_reply, r, "SUBSCRIBE %s", CACHEKEY_CHANNEL);
    } else {
        send_auth(link, ac);
        redis_link_sentinel_watch(r, ac);
    }
}
