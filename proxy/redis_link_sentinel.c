/*
 * The Sentinel half of redis_link (redis_link.h is the contract), for
 * sentinel:// only: finding the master and following it. The sentinels are
 * asked in order where the master is (sentinel_query.h) whenever the data
 * connection (re)connects; the watch, a connection to one sentinel,
 * subscribes to +switch-master and hears each failover as it happens. The
 * data and subscriber connections then go to the address named, kept when
 * they are there already. An epoch tells an answer that was overtaken by a
 * failover from one that names the newest master.
 */
#include <stdio.h>
#include <string.h>

#include <event2/event.h>

#include "log.h"
#include "redis_link.h"
#include "redis_link_int.h"

#define SWITCH_MASTER_EVENT "+switch-master"

/* Point the link at the master's address: kept if it is connected or
 * connecting there already, else (re)connected now. */
static void conn_follow(struct redis_conn *link)
{
    const struct redis_addr *a = &link->r->target.addr;
    int same = strcmp(link->at.host, a->host) == 0 && link->at.port == a->port;
    if (link->ctx && same)
        return;
    if (link->ctx)
        redis_link_conn_drop(link);
    if (!same)
        link->backoff_ms = link->r->reconnect_min_ms;
    evtimer_del(link->reconnect_timer);
    redis_link_conn_connect(link);
}

/* The sentinels name `a` the master (`why`: how we learnt it): the data
 * and subscriber connections go there. */
static void set_master(struct redis_link *r, const struct redis_addr *a, const char *why)
{
    char name[300];
    if (!r->master_known || strcmp(a->host, r->target.addr.host) != 0 || a->port != r->target.addr.port)
        log_info("sentinel: the master of %s is %s (%s)", r->target.master_name, redis_addr_name(a, name, sizeof(name)),
                 why);
    r->target.addr = *a;
    r->master_known = 1;
    conn_follow(&r->data);
    if (redis_link_wants_subscriber(r))
        conn_follow(&r->sub);
}

/* What the watch hears: the SUBSCRIBE confirmation, then one message per
 * failover, "MASTER OLDIP OLDPORT NEWIP NEWPORT". */
static void on_watch_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct redis_link *r = privdata;
    redisReply *rep = reply;
    char name[300];
    if (!rep || r->closing || ac != r->watch.ctx || rep->type != REDIS_REPLY_ARRAY || rep->elements < 3 ||
        rep->element[0]->type != REDIS_REPLY_STRING)
        return;
    if (strcmp(rep->element[0]->str, "subscribe") == 0) {
        log_info("sentinel %s: watching for failovers (%s)", redis_link_conn_name(&r->watch, name, sizeof(name)),
                 SWITCH_MASTER_EVENT);
        r->watch.backoff_ms = r->reconnect_min_ms;
        return;
    }
    if (strcmp(rep->element[0]->str, "message") != 0 || rep->element[2]->type != REDIS_REPLY_STRING)
        return;
    char master[128];
    struct redis_addr a;
    if (sscanf(rep->element[2]->str, "%127s %*s %*s %255s %d", master, a.host, &a.port) != 3 ||
        strcmp(master, r->target.master_name) != 0 || a.port < 1 || a.port > 65535)
        return;        /* another master's failover, or not the documented form */
    r->master_epoch++; /* a query still out would bring the old address */
    set_master(r, &a, SWITCH_MASTER_EVENT);
}

/* The sentinels named the master (sentinel_query's hook). */
static void on_master_found(void *arg, const struct redis_addr *a)
{
    struct redis_link *r = arg;
    if (r->query_epoch != r->master_epoch)
        return; /* a +switch-master named a newer master meanwhile */
    set_master(r, a, "named by the sentinels");
}

/* No sentinel could name the master: try again on the data connection's
 * backoff. */
static void on_master_unknown(void *arg, const char *why)
{
    struct redis_link *r = arg;
    if (r->query_epoch != r->master_epoch)
        return; /* a +switch-master named it meanwhile */
    if (r->data.backoff_ms <= r->reconnect_min_ms)
        log_warn("sentinel: no sentinel named the master of %s (last: %s); retrying with backoff, requests go "
                 "upstream meanwhile",
                 r->target.master_name, why);
    redis_link_note_transport_error(r, "no sentinel named the master", why);
    redis_link_schedule_reconnect(&r->data);
}

static void on_sentinel_auth_refused(void *arg, const char *who, const redisReply *rep)
{
    struct redis_link *r = arg;
    redis_link_auth_refused(r, who, rep, 1, r->data.backoff_ms <= r->reconnect_min_ms);
}

/* Ask the sentinels, in order, where the master is; set_master then
 * connects there. Lookups meanwhile find Redis unavailable. */
void redis_link_sentinel_resolve(struct redis_link *r)
{
    if (r->query.running)
        return;
    r->query_epoch = r->master_epoch;
    r->state = REDIS_CONNECTING;
    r->data.state = REDIS_CONNECTING;
    sentinel_query_start(&r->query);
}

/* Subscribe `ac`, the watch's new connection, to the failovers. */
void redis_link_sentinel_watch(struct redis_link *r, redisAsyncContext *ac)
{
    redisAsyncCommand(ac, on_watch_reply, r, "SUBSCRIBE %s", SWITCH_MASTER_EVENT);
}

int redis_link_sentinel_init(struct redis_link *r)
{
    const struct sentinel_query_hooks hooks = {
        .found = on_master_found, .failed = on_master_unknown, .auth_refused = on_sentinel_auth_refused, .arg = r};
    return sentinel_query_init(&r->query, r->base, &r->target, r->sentinel_user, r->sentinel_password,
                               r->connect_timeout_ms, &hooks);
}
