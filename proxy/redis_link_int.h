/*
 * redis_link_int: what the three files of redis_link share, not for other
 * modules (redis_link.h is their one contract):
 *
 *   redis_link.c          the connections (data, subscriber, sentinel
 *                         watch, cluster nodes), their handshakes and
 *                         reconnection, Sentinel, health, lifecycle;
 *   redis_link_cluster.c  cluster://: the slot map and the link's state;
 *   redis_link_send.c     sending a command, in a cluster to its slot's
 *                         master, following MOVED, ASK and TRYAGAIN.
 *
 * Everything runs on the event loop's thread, as in redis_link.h.
 */
#ifndef JOBGATE_REDIS_LINK_INT_H
#define JOBGATE_REDIS_LINK_INT_H

#include <stddef.h>

#include <event2/util.h>
#include <hiredis/async.h>

struct redis_link;
struct redis_conn;

/* ----------------------------------------------------- redis_link.c */

/* "data 127.0.0.1:6379" and the like, for logs (in `buf`). */
const char *redis_link_conn_name(const struct redis_conn *link, char *buf, size_t len);

/* Open `link` now (its handshake follows; a cluster's config connection
 * then asks CLUSTER SLOTS). */
void redis_link_conn_connect(struct redis_conn *link);

/* (Re)connect `link`, the way its role wants (sentinel://: ask first). */
void redis_link_connect_now(struct redis_conn *link);

/* Let go of `link`'s connection: its pending commands get NULL replies. */
void redis_link_conn_drop(struct redis_conn *link);

/* Should a subscriber connection be kept (pub/sub on, not refused)? */
int redis_link_wants_subscriber(const struct redis_link *r);

/* --------------------------------------------- redis_link_cluster.c */

/* A master's connection failed or was lost: its slots are refused, the map
 * read again. */
void redis_link_node_lost(struct redis_conn *link);

/* Slots whose master's connection is up. */
int redis_link_slots_served(const struct redis_link *r);

/* Set the link's state from the slots served (logs whole or degraded). */
void redis_link_cluster_update_state(struct redis_link *r);

/* Read the slot map again (`why`, for the log; `down`: a node or slots
 * lost), at most once per reconnect_min. */
void redis_link_cluster_refresh(struct redis_link *r, const char *why, int down);

/* The refresh timer's callback (`arg`: the link). */
void redis_link_on_refresh_timer(evutil_socket_t fd, short what, void *arg);

/* CLUSTER SLOTS's reply on the config connection (`privdata`: the link). */
void redis_link_on_slots_reply(redisAsyncContext *ac, void *reply, void *privdata);

/* ------------------------------------------------ redis_link_send.c */

/* Answer NULL to every command waiting on a TRYAGAIN delay, and free them
 * (redis_link_close). */
void redis_link_cancel_retries(struct redis_link *r);

#endif
