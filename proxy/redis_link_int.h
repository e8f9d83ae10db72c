/*
 * redis_link_int: what the five files of redis_link share, not for other
 * modules (redis_link.h is their one contract):
 *
 *   redis_link.c            the connections (data, subscriber, sentinel
 *                           watch, cluster nodes): opening, losing and
 *                           reconnecting them, errors, health, lifecycle;
 *   redis_link_handshake.c  what a new connection sends first (AUTH,
 *                           SELECT, ROLE, PING, SUBSCRIBE, CLUSTER SLOTS)
 *                           and the replies to it until it is up;
 *   redis_link_sentinel.c   sentinel://: asking the sentinels for the
 *                           master, the +switch-master watch, following;
 *   redis_link_cluster.c    cluster://: the slot map and the link's state;
 *   redis_link_send.c       sending a command, in a cluster to its slot's
 *                           master, following MOVED, ASK and TRYAGAIN.
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

/* Is the link sentinel:// ? */
int redis_link_is_sentinel(const struct redis_link *r);

/* `link` failed or was lost: try again after its backoff (doubled each
 * time, up to reconnect_max; reset once it is up). */
void redis_link_schedule_reconnect(struct redis_conn *link);

/* Keep "WHAT: DETAIL" as the link's last error (DETAIL may be NULL). */
void redis_link_note_transport_error(struct redis_link *r, const char *what, const char *detail);

/* AUTH was refused (`who`: "redis HOST:PORT" or "sentinel HOST:PORT";
 * `sentinel`: to a sentinel): counted and kept as the last error; logged,
 * never with a secret, when `first` (of a streak of failed attempts). */
void redis_link_auth_refused(struct redis_link *r, const char *who, const redisReply *rep, int sentinel, int first);

/* The subscriber connection's replies (`privdata`: the link): the
 * SUBSCRIBE confirmation, then one message per store. */
void redis_link_on_subscriber_reply(redisAsyncContext *ac, void *reply, void *privdata);

/* ------------------------------------------- redis_link_handshake.c */

/* Queue on `ac`, `link`'s new connection, what goes before anything else
 * (AUTH, SELECT, ROLE, PING; CLUSTER SLOTS; SUBSCRIBE), as its role wants.
 * A data or node connection counts as up (redis_link_conn_up) once it is
 * connected and every one of those replies came back as hoped; a reply
 * that did not closes the connection. */
void redis_link_handshake_start(struct redis_conn *link, redisAsyncContext *ac);

/* A data or node connection is connected and its handshake answered (or
 * it had none): commands may go (the link's state follows). */
void redis_link_conn_up(struct redis_conn *link);

/* -------------------------------------------- redis_link_sentinel.c */

/* sentinel://: the sentinels' query (r->query) set up with the link's
 * hooks (the master found, not found, AUTH refused). Returns 0, or -1 if
 * out of memory. */
int redis_link_sentinel_init(struct redis_link *r);

/* Ask the sentinels where the master is (unless a query runs already);
 * the data and subscriber connections then go there. Lookups meanwhile
 * find Redis unavailable. */
void redis_link_sentinel_resolve(struct redis_link *r);

/* Subscribe `ac`, the watch's new connection, to +switch-master: each
 * failover then moves the data and subscriber connections at once. */
void redis_link_sentinel_watch(struct redis_link *r, redisAsyncContext *ac);

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
