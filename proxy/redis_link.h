/*
 * redis_link: the connections of the Redis tier, on hiredis's async API and
 * its libevent adapter (the daemon's one event loop). Up to three, each
 * reconnecting on its own with exponential backoff:
 *
 *   data        every command (lookups, stores, leases, waits). It counts as
 *               up only once its handshake is answered: AUTH (with a
 *               password), SELECT (a database other than 0) and, with
 *               Sentinel, ROLE saying "master". Before that a command could
 *               run unauthenticated, in database 0 or on a replica.
 *   subscriber  SUBSCRIBE CACHEKEY_CHANNEL only (pub/sub mode); each message
 *               is a store, passed to hooks.stored.
 *   watch       sentinel:// only: SUBSCRIBE +switch-master on one sentinel
 *               (the next one when it fails).
 *
 * hiredis 0.14 (Debian 12) has no async timeouts and frees its context right
 * after the connect-failure or disconnect callback. So: a connect attempt
 * has its own timer (the connect timeout, which for the data connection
 * also covers its handshake); the context pointer is cleared inside those
 * callbacks and never touched again; reconnection runs on a timer. Every
 * command's caller runs its own budget timer (cache_redis.c, redis_lease.c).
 *
 * Sentinel (sentinel://HOST:PORT[,HOST:PORT...]/MASTER[/DB]): each time the
 * data connection (re)connects, the sentinels are asked in order, each
 * within the connect timeout, SENTINEL get-master-addr-by-name MASTER, and
 * the data and subscriber connections go to the address the first one
 * gives. When the watch hears a failover naming a new master, both move at
 * once. Disconnects, READONLY and a ROLE other than master all lead back to
 * asking the sentinels. Meanwhile Redis is unavailable (redis_link_ready is
 * false): lookups answer UNAVAILABLE and requests go upstream, as in any
 * Redis outage.
 *
 * AUTH (cache_conf's redis_user and redis_password; sentinel_user and
 * sentinel_password for the sentinels, asked and watched) is the first
 * command on every connection, each time it (re)connects. A refusal
 * (WRONGPASS, NOAUTH, ...) is logged with what to check, kept as the last
 * error ("WRONGPASS on AUTH") and the connection retried with backoff:
 * meanwhile Redis is unavailable. The secrets are copied here, wiped when
 * the link closes, and never written to a log, the health report or an
 * error: a refusal's text is logged only if it does not hold them.
 *
 * TLS (cache.redis_tls, cache.sentinel_tls): every TCP connection is made
 * by redis_tls_connect, through an in-process TLS bridge when TLS is on
 * (redis_tls.h). The data connection's handshake then ends with a PING, so
 * that it is up only once Redis has answered through TLS; a failed TLS
 * handshake is a lost connection whose last error is the verifier's reason
 * ("TLS: certificate has expired").
 *
 * Error replies are counted and kept (code and command only) as the last
 * error; READONLY and MASTERDOWN mean a failover may have moved the master,
 * and NOAUTH that Redis wants a password it was not given: the data
 * connection is closed and reopened.
 *
 * Pub/sub: in auto mode a SUBSCRIBE refused (twemproxy) turns the
 * subscriber off for good, and stores stop publishing; in poll mode it never
 * starts. In poll mode every command passes twemproxy.
 *
 * Redis Cluster (cluster://HOST:PORT[,HOST:PORT...]): a `config`
 * connection asks one node after the other (the URL's seeds, then every
 * node the last map named) CLUSTER SLOTS; the map (redis_cluster.h) names
 * the masters, and one `nodes[]` connection is kept per master (AUTH, then
 * up). Each command goes to the master of its key's slot
 * (redis_link_send): a MOVED reply refreshes the map and the command is
 * sent again to the node named, an ASK is sent again there behind ASKING,
 * up to 5 times; a multi-key command refused with TRYAGAIN (its slot is
 * migrating) is sent again after 5 then 20 ms, if the budget allows, then
 * given up. CLUSTERDOWN, READONLY, MASTERDOWN, a node lost or a node that
 * cannot be reached refresh the map too (at most every reconnect_min,
 * polling while a master is down, until the cluster has promoted its
 * replica). Availability is per slot: a command is refused (and the lookup
 * answers UNAVAILABLE, as in any Redis outage) only when the master of its
 * key's slot is unknown or its connection is not up (redis_link_ready_for);
 * the other masters keep serving their slots meanwhile. The link is up
 * (state UP) while the map is in and at least one master's connection is;
 * health says how many masters are up. The subscriber connects to any one
 * master (classic PUBLISH reaches every node of a cluster) and moves to
 * the next when it fails. Database 0 only; no SELECT, no ROLE.
 *
 * TCP: every TCP connection this module makes (data, subscriber, watch,
 * cluster nodes and config) is opened by tcp_connect() in redis_link.c,
 * through the TLS bridge (redis_tls) when one is configured; a cluster
 * node's connection then counts as up once a PING is answered, as the
 * data connection's does.
 *
 * The code is in five files, redis_link.c, redis_link_handshake.c,
 * redis_link_sentinel.c, redis_link_cluster.c and redis_link_send.c;
 * redis_link_int.h says which does what.
 *
 * Ownership and threads: everything runs on the event loop's thread. The
 * owner embeds `struct redis_link`, calls redis_link_init then
 * redis_link_start, and redis_link_close once, from outside any hiredis
 * callback. The hooks are called on the event loop's thread, from hiredis's
 * and the timers' callbacks; they may send commands.
 *
 * What the modules sending commands do with the fields below: they send
 * only through redis_link_send or redis_link_send_argv, only when
 * redis_link_ready says so (or redis_link_up, for waits); they read
 * `state`, `subscribed`, `closing` (in a reply
 * callback: set while redis_link_close frees the connections, which calls
 * every pending callback with a NULL reply; only clean up then), `base` and
 * `budget_ms`; and they keep the counts: `pending` +1 for each command
 * queued on the data connection and -1 in its reply callback, `errors` and
 * `timeouts`. Everything else is this module's.
 */
#ifndef JOBGATE_REDIS_LINK_H
#define JOBGATE_REDIS_LINK_H

#include <stddef.h>
#include <stdint.h>
#include <sys/time.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "cache_types.h"
#include "redis_cluster.h"
#include "redis_tls.h"
#include "redis_url.h"
#include "sentinel_query.h"

struct event;
struct event_base;
struct cluster_cmd;

enum redis_state { REDIS_DOWN, REDIS_CONNECTING, REDIS_UP };
enum redis_conn_role {
    LINK_DATA,   /* every command (not cluster://) */
    LINK_SUB,    /* SUBSCRIBE CACHEKEY_CHANNEL */
    LINK_WATCH,  /* sentinel://: +switch-master */
    LINK_NODE,   /* cluster://: the commands of one master's slots */
    LINK_CONFIG, /* cluster://: CLUSTER SLOTS */
};

/* One connection: the data one, the subscriber, the sentinel watch, a
 * cluster node or the cluster's config connection. */
struct redis_conn {
    struct redis_link *r;
    enum redis_conn_role role;
    redisAsyncContext *ctx; /* NULL while down; hiredis owns and frees it. A
                             * callback for another context (one this link
                             * let go of) is ignored. */
    struct redis_addr at;   /* where ctx goes (TCP); a cluster node: port 0 while the slot in nodes[] is free */
    enum redis_state state;
    int connected;     /* data: TCP up, handshake (SELECT, ROLE) perhaps not yet answered */
    int handshake_out; /* data: AUTH/SELECT/ROLE replies awaited before the link is up */
    int auth_failed;   /* this connection's AUTH was refused: it is being closed */
    int64_t backoff_ms;
    struct event *connect_timer;   /* connect attempt timeout (data: until the handshake is answered) */
    struct event *reconnect_timer; /* next attempt */
};

/* Asking the sentinels, one after the other, where the master is: one
 * short-lived connection at a time. */

/* What the owner is told; `arg` is passed back. */
struct redis_link_hooks {
    /* The data connection went away (lost, or dropped for a new master):
     * nothing can tell a wait of a store now. */
    void (*data_lost)(void *arg);
    /* The subscriber heard of a store of the base key `key` (`len` bytes,
     * not NUL-terminated; borrowed for the call). */
    void (*stored)(void *arg, const char *key, size_t len);
    void *arg;
};

struct redis_link {
    struct event_base *base;
    struct redis_target target;
    struct redis_link_hooks hooks;
    int64_t budget_ms; /* the longest a caller waits for one reply */
    int64_t connect_timeout_ms;
    int64_t reconnect_min_ms;
    int64_t reconnect_max_ms;
    size_t max_pending;
    enum cache_notify notify;
    char *user, *password;                   /* secrets (copies): AUTH on the data and subscriber connections */
    char *sentinel_user, *sentinel_password; /* secrets (copies): AUTH to the sentinels */
    struct redis_tls *tls;                   /* cache.redis_tls: the data and subscriber connections; or NULL */
    struct redis_tls *sentinel_tls;          /* cache.sentinel_tls: the watch and the queries; or NULL */

    struct redis_conn data;
    struct redis_conn sub;
    struct redis_conn watch;     /* sentinel:// only */
    int watch_index;             /* the sentinel the watch uses (the next one after a failure) */
    struct sentinel_query query; /* sentinel:// only */
    uint64_t query_epoch;        /* master_epoch when the query began: a +switch-master since makes its answer old */
    int master_known;            /* sentinel://: target.addr holds the master's address */
    uint64_t master_epoch;       /* bumped by each +switch-master */
    enum redis_state state;      /* of the data link: what lookups depend on */
    int closing;                 /* redis_link_close is running: callbacks only clean up */
    size_t pending;              /* data-link commands sent, reply not yet seen */

    int subscribed;     /* the subscriber's SUBSCRIBE is confirmed: waits are told of stores */
    int pubsub_seen;    /* a SUBSCRIBE succeeded once: this Redis takes PUBLISH */
    int pubsub_refused; /* auto mode: a SUBSCRIBE was refused (twemproxy): poll from now on */

    /* cluster:// only */
    struct redis_cluster_map *map;            /* the last slot map applied; NULL before the first */
    struct redis_conn *nodes;                 /* REDIS_CLUSTER_NODES_MAX: one per master of the map */
    int master_node[REDIS_CLUSTER_NODES_MAX]; /* map->masters[i]'s connection in nodes[] */
    struct redis_conn config;                 /* asks CLUSTER SLOTS */
    int config_index;                         /* the node it asks (URL seeds, then the map's nodes) */
    int sub_index;                            /* the master the subscriber uses (the next one after a failure) */
    int refresh_out;                          /* CLUSTER SLOTS sent, not answered */
    int refresh_again;                        /* asked for another refresh meanwhile */
    int whole;                                /* every slot's master is up (for the log) */
    int64_t refresh_last_us;                  /* when the last one was sent (monotonic) */
    struct event *refresh_timer;
    uint64_t refreshes;
    uint64_t redirects;           /* MOVED and ASK followed */
    uint64_t redirects_ask;       /* of which ASK */
    uint64_t tryagain_retries;    /* TRYAGAIN answers sent again after a short delay */
    struct cluster_cmd *retrying; /* commands waiting on their TRYAGAIN timer (a list): answered NULL at close */

    uint64_t errors;
    uint64_t timeouts;
    uint64_t reconnects;
    char last_error[96];
};

/* Parse conf->redis_url and take the settings; nothing connects yet.
 * Returns 0, or -1 with a message (bad URL, out of memory), `r` then holding
 * nothing to free. */
int redis_link_init(struct redis_link *r, struct event_base *base, const struct cache_conf *conf,
                    const struct redis_link_hooks *hooks, char *err, size_t errlen);

/* Connect (sentinel://: ask the sentinels first). Failures are retried in
 * the background. */
void redis_link_start(struct redis_link *r);

/* Close every connection (pending reply callbacks get NULL, with `closing`
 * set) and free the timers. Calls no hook. */
void redis_link_close(struct redis_link *r);

/* Can the data connection take one more command now (up, and fewer than
 * max_pending out)? */
int redis_link_ready(const struct redis_link *r);

/* Is the link up (a wait may start; redis_link_ready also bounds what is
 * pending)? In a cluster: up while at least one master's connection is,
 * even if others are lost; ask redis_link_ready_for for one key. */
int redis_link_up(const struct redis_link *r);

/* redis_link_ready and redis_link_up for the command of `key` (`keylen`
 * bytes): the same outside a cluster; in a cluster, the master serving the
 * key's slot must be known and its connection up. While a master is lost
 * only its slots are refused (lookups answer UNAVAILABLE and go upstream),
 * until the map names the replica that took over. */
int redis_link_ready_for(const struct redis_link *r, const char *key, size_t keylen);
int redis_link_up_for(const struct redis_link *r, const char *key, size_t keylen);

/* Is this a cluster:// link? */
int redis_link_is_cluster(const struct redis_link *r);

/*
 * Send one command, hiredis-style (`fmt` as redisAsyncCommand takes it),
 * to where `key` lives: the data connection, or in a cluster the master of
 * the key's slot (`key` is the command's first key, or for PUBLISH the
 * channel: every key of one command must share its slot). `cb` is called
 * exactly once, as hiredis calls it (a NULL reply when the connection goes
 * away or the link closes); in a cluster after MOVED and ASK were
 * followed, with the final reply. Returns REDIS_OK, or REDIS_ERR when it
 * could not be queued (`cb` then never called). The caller keeps the
 * counts (`pending` +1 on REDIS_OK, -1 in `cb`). (No printf format check:
 * hiredis's %b takes two arguments.)
 */
int redis_link_send(struct redis_link *r, const char *key, redisCallbackFn *cb, void *privdata, const char *fmt, ...);

/* The same with the command as argc/argv/argvlen; `key` is `keylen` bytes. */
int redis_link_send_argv(struct redis_link *r, const char *key, size_t keylen, redisCallbackFn *cb, void *privdata,
                         int argc, const char **argv, const size_t *argvlen);

/* May a store PUBLISH? Only where a SUBSCRIBE worked (or the operator says
 * pub/sub): through twemproxy a PUBLISH would cost the connection. */
int redis_link_may_publish(const struct redis_link *r);

/* Count an error reply to `command` and keep it as the last error (READONLY,
 * MASTERDOWN: reconnect). */
void redis_link_error_reply(struct redis_link *r, const char *command, const redisReply *rep);

/* The reply callback of a command whose reply only matters when it is an
 * error: pending -1, then the error (if any) counted. */
void redis_link_reply_done(struct redis_link *r, const redisReply *rep, const char *command);

/* Fill `out`'s Redis part: backend, state, coalescing, counters, last
 * error, endpoint (not entries nor bytes). */
void redis_link_health(const struct redis_link *r, struct cache_health *out);

/* `ms` as a timeval, for evtimer_add. */
struct timeval redis_link_tv(int64_t ms);

#endif
