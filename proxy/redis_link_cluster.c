/*
 * The Redis Cluster half of redis_link (redis_link.h is the contract):
 * the slot map, read with CLUSTER SLOTS on the config connection and read
 * again when a node is lost, a MOVED arrives or slots are unserved; one
 * connection per master it names; and the link's state, up while any
 * master answers (each command then asks for its own slot's master).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "clock.h"
#include "log.h"
#include "redis_link.h"
#include "redis_link_int.h"

/* A master's connection failed or was lost: its slots are refused until
 * the map names a master for them that answers (the map is polled); the
 * other masters keep serving. Waits go upstream (the lost master may have
 * held stores they wait for). */
void redis_link_node_lost(struct redis_conn *link)
{
    struct redis_link *r = link->r;
    char name[300];
    if (r->closing)
        return;
    char why[340];
    snprintf(why, sizeof(why), "%s lost", redis_link_conn_name(link, name, sizeof(name)));
    redis_link_cluster_refresh(r, why, 1);
    redis_link_cluster_update_state(r);
    r->hooks.data_lost(r->hooks.arg);
}

/* Slots whose master's connection is up. */
int redis_link_slots_served(const struct redis_link *r)
{
    int up[REDIS_CLUSTER_NODES_MAX], served = 0;
    if (!r->map)
        return 0;
    for (int i = 0; i < r->map->nmasters; i++)
        up[i] = r->nodes[r->master_node[i]].state == REDIS_UP && r->nodes[r->master_node[i]].ctx != NULL;
    for (unsigned s = 0; s < REDIS_CLUSTER_SLOTS; s++)
        served += r->map->owner[s] && up[r->map->owner[s] - 1];
    return served;
}

/* Up while the map is in and at least one master's connection is: each
 * command then asks for its own slot's master (redis_link_ready_for).
 * Logs when the link becomes whole (every slot served) or degraded. */
void redis_link_cluster_update_state(struct redis_link *r)
{
    if (r->closing)
        return;
    int served = redis_link_slots_served(r);
    enum redis_state was = r->state;
    int whole = served == REDIS_CLUSTER_SLOTS;
    r->state = served > 0 ? REDIS_UP : REDIS_CONNECTING;
    if (whole && (was != REDIS_UP || !r->whole))
        log_info("redis cluster: up, %d masters serve the 16384 slots", r->map->nmasters);
    else if (!whole && r->state == REDIS_UP && r->whole) /* not while the first connections are made */
        log_warn("redis cluster: degraded, %d of 16384 slots served; the others go upstream until the map names "
                 "a master for them",
                 served);
    else if (r->state != REDIS_UP && was == REDIS_UP)
        log_warn("redis cluster: no master answers; requests go upstream");
    r->whole = whole;
}

/* Ask for the map now: on the config connection if it is up, else by
 * connecting it (redis_link_conn_connect queues CLUSTER SLOTS). */
void redis_link_on_refresh_timer(evutil_socket_t fd, short what, void *arg)
{
    struct redis_link *r = arg;
    struct redis_conn *c = &r->config;
    if (r->closing || r->refresh_out)
        return;
    if (c->ctx && c->state == REDIS_UP) {
        if (redisAsyncCommand(c->ctx, redis_link_on_slots_reply, r, "CLUSTER SLOTS") == REDIS_OK) {
            r->refresh_out = 1;
            r->refreshes++;
            r->refresh_last_us = clock_mono_us();
        }
        return;
    }
    if (!c->ctx && !evtimer_pending(c->reconnect_timer, NULL))
        redis_link_connect_now(c);
}

/* Read the slot map again (`why`, for the log), at most once per
 * reconnect_min. `down` (a node lost, CLUSTERDOWN) is logged at info when
 * every slot was served till now; a MOVED only has the map brought up to
 * date. Nothing is refused meanwhile but the slots whose master's
 * connection is not up. */
void redis_link_cluster_refresh(struct redis_link *r, const char *why, int down)
{
    if (r->closing || !redis_link_is_cluster(r))
        return;
    if (r->refresh_out) {
        r->refresh_again = 1;
        return;
    }
    if (evtimer_pending(r->refresh_timer, NULL))
        return;
    if (down && r->whole) /* the first of a streak: the polls that follow are not logged at info */
        log_info("redis cluster: reading the slot map again (%s)", why);
    else
        log_debug("redis cluster: reading the slot map again (%s)", why);
    int64_t wait_us = r->refresh_last_us + r->reconnect_min_ms * 1000 - clock_mono_us();
    struct timeval tv = redis_link_tv(wait_us > 0 ? wait_us / 1000 : 0);
    evtimer_add(r->refresh_timer, &tv);
}

/* Take the map `m` (owned from now on): keep the connections to masters it names still, open
 * one to each new master, let go of the others. */
static void apply_map(struct redis_link *r, struct redis_cluster_map *m)
{
    int used[REDIS_CLUSTER_NODES_MAX] = {0};
    int fresh[REDIS_CLUSTER_NODES_MAX] = {0};
    char name[300];
    free(r->map);
    r->map = m;
    for (int i = 0; i < m->nmasters; i++) {
        int k = -1;
        for (int j = 0; j < REDIS_CLUSTER_NODES_MAX && k < 0; j++)
            if (r->nodes[j].at.port == m->masters[i].port && strcmp(r->nodes[j].at.host, m->masters[i].host) == 0)
                k = j;
        for (int j = 0; j < REDIS_CLUSTER_NODES_MAX && k < 0; j++)
            if (r->nodes[j].at.port == 0 && !used[j])
                k = j;
        r->master_node[i] = k; /* k >= 0: there are as many slots as masters may be */
        used[k] = 1;
        if (r->nodes[k].at.port == 0) {
            r->nodes[k].at = m->masters[i];
            r->nodes[k].backoff_ms = r->reconnect_min_ms;
            fresh[k] = 1;
            log_info("redis cluster: master %s", redis_addr_name(&m->masters[i], name, sizeof(name)));
        }
    }
    for (int j = 0; j < REDIS_CLUSTER_NODES_MAX; j++) {
        struct redis_conn *n = &r->nodes[j];
        if (n->at.port == 0 || used[j])
            continue;
        log_info("redis cluster: %s is no longer a master", redis_addr_name(&n->at, name, sizeof(name)));
        evtimer_del(n->reconnect_timer);
        if (n->ctx)
            redis_link_conn_drop(n); /* its pending commands get NULL replies */
        n->state = REDIS_DOWN;
        memset(&n->at, 0, sizeof(n->at));
    }
    for (int j = 0; j < REDIS_CLUSTER_NODES_MAX; j++)
        if (fresh[j])
            redis_link_conn_connect(&r->nodes[j]);
    if (redis_link_wants_subscriber(r) && !r->sub.ctx && !evtimer_pending(r->sub.reconnect_timer, NULL))
        redis_link_connect_now(&r->sub);
}

/* CLUSTER SLOTS's reply on the config connection. */
void redis_link_on_slots_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct redis_link *r = privdata;
    redisReply *rep = reply;
    struct redis_cluster_map *m = NULL;
    char err[160], name[300];
    r->refresh_out = 0;
    if (r->closing || !rep || ac != r->config.ctx)
        return; /* lost: the config connection's reconnect asks again */
    if (rep->type == REDIS_REPLY_ERROR) {
        redis_link_error_reply(r, "CLUSTER SLOTS", rep);
        log_warn("redis cluster %s: CLUSTER SLOTS refused (%.120s); asking another node",
                 redis_link_conn_name(&r->config, name, sizeof(name)), rep->str);
        redisAsyncDisconnect(ac);
        return;
    }
    m = malloc(sizeof(*m));
    if (!m || redis_cluster_parse_slots(rep, r->config.at.host, m, err, sizeof(err)) < 0) {
        r->errors++;
        snprintf(r->last_error, sizeof(r->last_error), "bad CLUSTER SLOTS");
        log_warn("redis cluster %s: %s; asking another node", redis_link_conn_name(&r->config, name, sizeof(name)),
                 m ? err : "out of memory");
        free(m);
        redisAsyncDisconnect(ac);
        return;
    }
    r->config.backoff_ms = r->reconnect_min_ms;
    if (m->covered < REDIS_CLUSTER_SLOTS)
        snprintf(r->last_error, sizeof(r->last_error), "cluster map covers %d of 16384 slots", m->covered);
    apply_map(r, m);
    int node_down = 0;
    for (int i = 0; i < r->map->nmasters; i++)
        node_down |= r->nodes[r->master_node[i]].state == REDIS_DOWN;
    int again = r->refresh_again;
    r->refresh_again = 0;
    if (node_down || r->map->covered < REDIS_CLUSTER_SLOTS) {
        /* A master is unreachable (a failover not done yet) or slots are
         * unserved: poll the map until the cluster has mended. */
        redis_link_cluster_refresh(r, "map incomplete", 1);
    } else if (again) {
        redis_link_cluster_refresh(r, "asked again meanwhile", 0);
    }
    redis_link_cluster_update_state(r);
}
