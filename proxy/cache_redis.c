#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "cache_redis.h"
#include "clock.h"
#include "keymap.h"
#include "log.h"

#define NOTIFY_CHANNEL      "jobgate:answers"
#define POLL_INTERVAL_MS    20
#define PUBSUB_CHECK_FACTOR 5 /* pub/sub mode: a wait re-reads only to see a lease expire */
#define LEASE_TOKEN_MAX     48

/* Compare-and-delete: release the lease only if it is still ours. */
#define RELEASE_SCRIPT "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"

enum redis_state { REDIS_DOWN, REDIS_CONNECTING, REDIS_UP };
enum link_role { LINK_DATA, LINK_SUB, LINK_WATCH };

#define SENTINELS_MAX       8
#define SENTINEL_PORT       26379
#define SWITCH_MASTER_EVENT "+switch-master"

struct redis_addr {
    char host[256];
    int port;
};

/* What the URL names. redis:// and unix: name the server; sentinel:// names
 * the sentinels to ask and the master's name, and `addr` is then the
 * master's address as they last gave it (empty until they have). */
struct redis_target {
    struct redis_addr addr;
    char unix_path[256]; /* non-empty: a Unix socket */
    int db;
    struct redis_addr sentinels[SENTINELS_MAX];
    int nsentinels; /* > 0: sentinel:// */
    char master_name[128];
};

/* One connection: the data one (every command), the subscriber (SUBSCRIBE
 * only, in pub/sub mode), or the sentinel watch (SUBSCRIBE +switch-master
 * on one sentinel, sentinel:// only). Each reconnects on its own. */
struct redis_link {
    struct cache_redis *r;
    enum link_role role;
    redisAsyncContext *ctx; /* NULL while down; hiredis owns and frees it. A
                             * callback for another context (one this link
                             * let go of) is ignored. */
    struct redis_addr at;   /* where ctx goes (TCP) */
    enum redis_state state;
    int connected;     /* data: TCP up, handshake (SELECT, ROLE) perhaps not yet answered */
    int handshake_out; /* data: SELECT/ROLE replies awaited before the link is up */
    int64_t backoff_ms;
    struct event *connect_timer;   /* connect attempt timeout (data: until the handshake is answered) */
    struct event *reconnect_timer; /* next attempt */
};

/* Asking the sentinels, one after the other, where the master is: one
 * short-lived connection at a time. */
struct sentinel_query {
    int running;
    int index;              /* the sentinel asked now */
    uint64_t epoch;         /* r->master_epoch when asked: a +switch-master since makes the answer old */
    redisAsyncContext *ctx; /* NULL between attempts */
    struct event *timer;    /* this attempt's limit (the connect timeout) */
};

/* A lease this cache acquired and has not released yet. */
struct held_lease {
    struct keymap_item item; /* item.key == key */
    char token[LEASE_TOKEN_MAX];
    char key[];
};

TAILQ_HEAD(redis_op_list, redis_op);

struct cache_redis {
    struct event_base *base;
    struct redis_target target;
    int64_t budget_ms;
    int64_t connect_timeout_ms;
    int64_t reconnect_min_ms;
    int64_t reconnect_max_ms;
    int64_t poll_interval_ms;
    size_t max_pending;
    enum cache_notify notify;

    struct redis_link data;
    struct redis_link sub;
    struct redis_link watch;     /* sentinel:// only */
    int watch_index;             /* the sentinel the watch uses (the next one after a failure) */
    struct sentinel_query query; /* sentinel:// only */
    int master_known;            /* sentinel://: target.addr holds the master's address */
    uint64_t master_epoch;       /* bumped by each +switch-master */
    enum redis_state state;      /* of the data link: what lookups depend on */
    int closing;                 /* cache_redis_free is running: callbacks only clean up */
    size_t pending;              /* data-link commands sent, reply not yet seen */

    int subscribed;       /* the subscriber's SUBSCRIBE is confirmed: waits are told of stores */
    int pubsub_seen;      /* a SUBSCRIBE succeeded once: this Redis takes PUBLISH */
    int pubsub_refused;   /* auto mode: a SUBSCRIBE was refused (twemproxy): poll from now on */
    int eval_refused;     /* EVAL refused (scripting off): release leases with a plain DEL */
    char instance_id[17]; /* random: lease tokens differ across processes and restarts */
    uint64_t lease_counter;
    struct keymap held;         /* struct held_lease by key */
    struct redis_op_list waits; /* waits not finished */

    uint64_t errors;
    uint64_t timeouts;
    uint64_t reconnects;
    char last_error[96];
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

/* A lease request or a wait. Like a lookup it lives until hiredis has
 * called back for every command sent for it (replies_out), even once
 * finished (answered or cancelled). */
struct redis_op {
    struct cache_redis *r;
    int is_wait;
    cache_lease_cb lease_cb; /* lease */
    cache_get_cb get_cb;     /* wait */
    void *arg;
    struct event *timer;    /* lease: the budget; wait: the next check */
    struct event *deadline; /* wait: its time limit */
    int replies_out;
    int finished;                    /* answered or cancelled: never calls back again */
    int cancelled;                   /* lease: release it if it is granted after all */
    int check_again;                 /* wait: told of a store while a check was out */
    TAILQ_ENTRY(redis_op) wait_link; /* on r->waits until finished */
    char token[LEASE_TOKEN_MAX];
    char key[];
};

static void connect_now(struct redis_link *link);
static void fail_waits(struct cache_redis *r);
static void on_watch_reply(redisAsyncContext *ac, void *reply, void *privdata);

/* ------------------------------------------------------------ the URL */

#define URL_FORMS "redis://HOST:PORT[/DB], sentinel://HOST:PORT[,HOST:PORT...]/MASTER[/DB], unix:PATH or none"

/* Parse HOST[:PORT] (HOST may be [IPv6]) at `s`; the host ends at ':' or at
 * one of `stops`. Returns where parsing stopped, or NULL with a message. */
static const char *parse_host_port(const char *url, const char *s, const char *stops, int default_port,
                                   struct redis_addr *a, char *err, size_t errlen)
{
    const char *host_end;
    const char *rest;
    if (s[0] == '[') { /* [::1]:6379 */
        host_end = strchr(s, ']');
        if (!host_end) {
            snprintf(err, errlen, "redis url '%s': unclosed '['", url);
            return NULL;
        }
        s++;
        rest = host_end + 1;
    } else {
        host_end = s;
        while (*host_end && *host_end != ':' && !strchr(stops, *host_end))
            host_end++;
        rest = host_end;
    }
    size_t hlen = (size_t)(host_end - s);
    if (hlen == 0 || hlen >= sizeof(a->host)) {
        snprintf(err, errlen, "redis url '%s': bad host", url);
        return NULL;
    }
    memcpy(a->host, s, hlen);
    a->host[hlen] = '\0';
    a->port = default_port;
    if (*rest == ':') {
        char *end;
        long port = strtol(rest + 1, &end, 10);
        if (end == rest + 1 || port < 1 || port > 65535) {
            snprintf(err, errlen, "redis url '%s': bad port", url);
            return NULL;
        }
        a->port = (int)port;
        rest = end;
    }
    return rest;
}

/* Parse the optional "/DB" that ends a URL. */
static int parse_db(const char *url, const char *rest, struct redis_target *t, char *err, size_t errlen)
{
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

/* sentinel://HOST:PORT[,HOST:PORT...]/MASTER[/DB], from after the scheme. */
static int parse_sentinel_url(const char *url, const char *s, struct redis_target *t, char *err, size_t errlen)
{
    for (;;) {
        if (t->nsentinels == SENTINELS_MAX) {
            snprintf(err, errlen, "redis url '%s': at most %d sentinels", url, SENTINELS_MAX);
            return -1;
        }
        s = parse_host_port(url, s, ",/", SENTINEL_PORT, &t->sentinels[t->nsentinels], err, errlen);
        if (!s)
            return -1;
        t->nsentinels++;
        if (*s != ',')
            break;
        s++;
    }
    size_t nlen = *s == '/' ? strcspn(s + 1, "/") : 0;
    if (nlen == 0) {
        snprintf(err, errlen, "redis url '%s': no master name (sentinel://HOST:PORT[,HOST:PORT...]/MASTER[/DB])", url);
        return -1;
    }
    s++;
    for (size_t i = 0; i < nlen; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
              ch == '-' || ch == '_') ||
            nlen >= sizeof(t->master_name)) {
            snprintf(err, errlen, "redis url '%s': bad master name (letters, digits, '.', '-', '_')", url);
            return -1;
        }
    }
    memcpy(t->master_name, s, nlen);
    t->master_name[nlen] = '\0';
    return parse_db(url, s + nlen, t, err, errlen);
}

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
    if (strncmp(url, "sentinel://", 11) == 0)
        return parse_sentinel_url(url, url + 11, t, err, errlen);
    if (strncmp(url, "redis://", 8) != 0) {
        snprintf(err, errlen, "redis url '%s' must be " URL_FORMS, url);
        return -1;
    }
    const char *rest = parse_host_port(url, url + 8, "/,", 6379, &t->addr, err, errlen);
    if (!rest)
        return -1;
    return parse_db(url, rest, t, err, errlen);
}

int cache_redis_url_check(const char *url, char *err, size_t errlen)
{
    struct redis_target t;
    return parse_url(url, &t, err, errlen);
}

static int is_sentinel(const struct cache_redis *r)
{
    return r->target.nsentinels > 0;
}

/* The address in use, for logs and /healthz: "" while the sentinels have
 * not named the master yet. */
static const char *target_name(const struct cache_redis *r, char *buf, size_t len)
{
    if (r->target.unix_path[0])
        snprintf(buf, len, "unix:%s", r->target.unix_path);
    else if (is_sentinel(r) && !r->master_known)
        snprintf(buf, len, "%s", "");
    else if (strchr(r->target.addr.host, ':'))
        snprintf(buf, len, "[%s]:%d", r->target.addr.host, r->target.addr.port);
    else
        snprintf(buf, len, "%s:%d", r->target.addr.host, r->target.addr.port);
    return buf;
}

static const char *addr_name(const struct redis_addr *a, char *buf, size_t len)
{
    snprintf(buf, len, strchr(a->host, ':') ? "[%s]:%d" : "%s:%d", a->host, a->port);
    return buf;
}

static struct timeval tv_of_ms(int64_t ms)
{
    return (struct timeval){(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
}

/* ------------------------------------------------------------- errors */

/*
 * Count an error reply from Redis to `command` and keep it as the last
 * error. Only the reply's code (its first word: OOM, READONLY, LOADING...)
 * goes to the health report; the log gets the whole text, which never holds
 * a secret (jobgate sends Redis none). READONLY (we reached a replica) and
 * MASTERDOWN (the replica lost its master) mean a failover may have moved
 * the master: reconnect, which finds it when the address follows it.
 */
static void note_error_reply(struct cache_redis *r, const char *command, const redisReply *rep)
{
    char code[32];
    size_t n = 0;
    while (n < sizeof(code) - 1 && rep->str[n] >= 'A' && rep->str[n] <= 'Z') {
        code[n] = rep->str[n];
        n++;
    }
    code[n] = '\0';
    r->errors++;
    snprintf(r->last_error, sizeof(r->last_error), "%s on %s", n ? code : "error", command);
    log_warn("redis: %s failed: %.200s", command, rep->str);
    if ((strcmp(code, "READONLY") == 0 || strcmp(code, "MASTERDOWN") == 0) && r->state == REDIS_UP && r->data.ctx) {
        log_warn("redis: %s: a failover may have happened; reconnecting", code);
        r->state = REDIS_CONNECTING; /* no commands until the new connection is up */
        r->data.state = REDIS_CONNECTING;
        redisAsyncDisconnect(r->data.ctx); /* the disconnect callback schedules the reconnect */
    }
}

static void note_transport_error(struct cache_redis *r, const char *what, const char *detail)
{
    snprintf(r->last_error, sizeof(r->last_error), "%s%s%.60s", what, detail && *detail ? ": " : "",
             detail ? detail : "");
}

/* ------------------------------------------------------- the connections */

static const char *link_name(const struct redis_link *link, char *buf, size_t len)
{
    if (link->role != LINK_WATCH && link->r->target.unix_path[0])
        snprintf(buf, len, "unix:%s", link->r->target.unix_path);
    else
        addr_name(&link->at, buf, len);
    return buf;
}

static void schedule_reconnect(struct redis_link *link)
{
    struct cache_redis *r = link->r;
    if (r->closing)
        return;
    link->state = REDIS_DOWN;
    link->connected = 0;
    if (link->role == LINK_DATA)
        r->state = REDIS_DOWN;
    struct timeval tv = tv_of_ms(link->backoff_ms);
    evtimer_add(link->reconnect_timer, &tv);
    link->backoff_ms = link->backoff_ms * 2 > r->reconnect_max_ms ? r->reconnect_max_ms : link->backoff_ms * 2;
}

/* Does this cache run a subscriber connection? */
static int wants_subscriber(const struct cache_redis *r)
{
    return r->notify != CACHE_NOTIFY_POLL && !r->pubsub_refused;
}

/* May a store PUBLISH? Only where a SUBSCRIBE worked (or the operator says
 * pub/sub): through twemproxy a PUBLISH would cost the connection. */
static int may_publish(const struct cache_redis *r)
{
    return r->notify == CACHE_NOTIFY_PUBSUB || (r->notify == CACHE_NOTIFY_AUTO && r->pubsub_seen && !r->pubsub_refused);
}

/* The data link's handshake is answered (or it had none): commands may go. */
static void data_up(struct cache_redis *r)
{
    struct redis_link *link = &r->data;
    char name[300];
    evtimer_del(link->connect_timer);
    link->state = REDIS_UP;
    r->state = REDIS_UP;
    link->backoff_ms = r->reconnect_min_ms;
    if (is_sentinel(r))
        log_info("redis %s: connected to the master of %s (database %d)", link_name(link, name, sizeof(name)),
                 r->target.master_name, r->target.db);
    else
        log_info("redis %s: connected (database %d)", link_name(link, name, sizeof(name)), r->target.db);
}

/* One handshake reply came back as hoped. */
static void handshake_step(struct cache_redis *r)
{
    if (--r->data.handshake_out == 0 && r->data.connected)
        data_up(r);
}

/* hiredis frees the context when this returns. */
static void on_connect(const redisAsyncContext *ac, int status)
{
    struct redis_link *link = ac->data;
    struct cache_redis *r = link->r;
    char name[300];
    if (ac != link->ctx)
        return; /* a connection this link let go of */
    if (status != REDIS_OK) {
        evtimer_del(link->connect_timer);
        if (link->role == LINK_DATA) {
            if (link->backoff_ms <= r->reconnect_min_ms)
                log_warn("redis %s: cannot connect: %s; retrying with backoff, requests go upstream meanwhile",
                         link_name(link, name, sizeof(name)), ac->errstr);
            note_transport_error(r, "cannot connect", ac->errstr);
        } else if (link->role == LINK_WATCH) {
            log_debug("sentinel %s: cannot connect: %s", link_name(link, name, sizeof(name)), ac->errstr);
            r->watch_index = (r->watch_index + 1) % r->target.nsentinels;
        }
        link->ctx = NULL;
        schedule_reconnect(link);
        return;
    }
    if (link->role == LINK_DATA) {
        /* Up only once SELECT and ROLE are answered: until then a command
         * could run in database 0, or on a replica. The connect timer keeps
         * running for them. */
        link->connected = 1;
        if (link->handshake_out == 0)
            data_up(r);
        return;
    }
    evtimer_del(link->connect_timer);
    link->state = REDIS_UP;
}

/* hiredis frees the context when this returns. */
static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct redis_link *link = ac->data;
    struct cache_redis *r = link->r;
    char name[300];
    if (ac != link->ctx || r->closing)
        return; /* a connection this link let go of */
    int was_up = link->state == REDIS_UP;
    link->ctx = NULL;
    if (link->role == LINK_WATCH) {
        if (was_up)
            log_warn("sentinel %s: connection lost; watching for failovers from another sentinel",
                     link_name(link, name, sizeof(name)));
        r->watch_index = (r->watch_index + 1) % r->target.nsentinels;
        schedule_reconnect(link);
        return;
    }
    if (link->role == LINK_SUB) {
        int was_subscribed = r->subscribed;
        r->subscribed = 0;
        if (!was_subscribed && was_up && r->notify == CACHE_NOTIFY_AUTO && !is_sentinel(r)) {
            /* Connected, then SUBSCRIBE was answered with an error or a
             * closed connection: a proxy without pub/sub (twemproxy). Not
             * with Sentinel, never behind twemproxy: there it is a master
             * that died before it confirmed, and a new one is coming. */
            log_info("redis %s: SUBSCRIBE refused (%s); waits poll instead", link_name(link, name, sizeof(name)),
                     status == REDIS_OK ? "connection closed" : ac->errstr);
            r->pubsub_refused = 1;
            link->state = REDIS_DOWN;
            return;
        }
        if (was_subscribed)
            log_warn("redis %s: subscriber connection lost; waits poll until it is back",
                     link_name(link, name, sizeof(name)));
        schedule_reconnect(link);
        return;
    }
    log_warn("redis %s: connection lost%s%s; reconnecting", link_name(link, name, sizeof(name)),
             status == REDIS_OK ? "" : ": ", status == REDIS_OK ? "" : ac->errstr);
    if (status != REDIS_OK)
        note_transport_error(r, "connection lost", ac->errstr);
    r->reconnects++;
    schedule_reconnect(link); /* sentinel://: the sentinels are asked again first */
    fail_waits(r);            /* nothing can tell them of a store now: they go upstream */
}

/* The connect attempt (data: or its handshake) took too long (a
 * black-holed address): give it up. */
static void on_connect_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct redis_link *link = arg;
    struct cache_redis *r = link->r;
    char name[300];
    if (link->state != REDIS_CONNECTING || !link->ctx)
        return;
    if (link->role == LINK_DATA) {
        log_warn("redis %s: connect timed out", link_name(link, name, sizeof(name)));
        note_transport_error(r, "connect timed out", NULL);
    } else if (link->role == LINK_WATCH) {
        r->watch_index = (r->watch_index + 1) % r->target.nsentinels;
    }
    redisAsyncContext *ac = link->ctx;
    link->ctx = NULL;
    redisAsyncFree(ac); /* pending commands get NULL replies; its callbacks ignore it from now on */
    schedule_reconnect(link);
}

static void on_reconnect_timer(evutil_socket_t fd, short what, void *arg)
{
    connect_now(arg);
}

/* SELECT must succeed: otherwise every entry would land in database 0. */
static void on_select_done(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct cache_redis *r = privdata;
    redisReply *rep = reply;
    r->pending--;
    if (r->closing || !rep || ac != r->data.ctx)
        return;
    if (rep->type == REDIS_REPLY_ERROR) {
        note_error_reply(r, "SELECT", rep);
        log_error("redis: SELECT %d failed; disconnecting", r->target.db);
        redisAsyncDisconnect(ac); /* still connecting: no lookup has used it */
        return;
    }
    handshake_step(r);
}

/* sentinel://: the address the sentinels gave must be the master's (a
 * demoted master answers "slave"); otherwise they are asked again. */
static void on_role_done(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct cache_redis *r = privdata;
    redisReply *rep = reply;
    char name[300];
    r->pending--;
    if (r->closing || !rep || ac != r->data.ctx)
        return;
    if (rep->type == REDIS_REPLY_ARRAY && rep->elements > 0 && rep->element[0]->type == REDIS_REPLY_STRING &&
        strcmp(rep->element[0]->str, "master") == 0) {
        handshake_step(r);
        return;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        note_error_reply(r, "ROLE", rep);
    } else {
        r->errors++;
        snprintf(r->last_error, sizeof(r->last_error), "not a master");
    }
    log_warn("redis %s: not the master of %s; asking the sentinels again", link_name(&r->data, name, sizeof(name)),
             r->target.master_name);
    redisAsyncDisconnect(ac);
}

static void wake_waits(struct cache_redis *r, const char *key, size_t len);

/* Everything the subscriber connection hears: the SUBSCRIBE confirmation,
 * then one message per store (its payload is the key). */
static void on_subscriber_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct cache_redis *r = privdata;
    redisReply *rep = reply;
    char name[300];
    if (!rep || r->closing || rep->type != REDIS_REPLY_ARRAY || rep->elements < 3 ||
        rep->element[0]->type != REDIS_REPLY_STRING)
        return;
    if (strcmp(rep->element[0]->str, "subscribe") == 0) {
        if (!r->pubsub_seen)
            log_info("redis %s: subscribed to %s; waits are told of stores", link_name(&r->sub, name, sizeof(name)),
                     NOTIFY_CHANNEL);
        r->subscribed = 1;
        r->pubsub_seen = 1;
        r->sub.backoff_ms = r->reconnect_min_ms;
    } else if (strcmp(rep->element[0]->str, "message") == 0 && rep->element[2]->type == REDIS_REPLY_STRING) {
        wake_waits(r, rep->element[2]->str, rep->element[2]->len);
    }
}

static void link_connect(struct redis_link *link)
{
    struct cache_redis *r = link->r;
    char name[300];
    link->at = link->role == LINK_WATCH ? r->target.sentinels[r->watch_index] : r->target.addr;
    redisAsyncContext *ac = link->role != LINK_WATCH && r->target.unix_path[0]
                                ? redisAsyncConnectUnix(r->target.unix_path)
                                : redisAsyncConnect(link->at.host, link->at.port);
    if (!ac) {
        log_error("redis %s: out of memory", link_name(link, name, sizeof(name)));
        schedule_reconnect(link);
        return;
    }
    if (ac->err) {
        if (link->role == LINK_DATA) {
            log_warn("redis %s: cannot connect: %s", link_name(link, name, sizeof(name)), ac->errstr);
            note_transport_error(r, "cannot connect", ac->errstr);
        }
        redisAsyncFree(ac);
        schedule_reconnect(link);
        return;
    }
    ac->data = link;
    redisLibeventAttach(ac, r->base);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    link->ctx = ac;
    link->state = REDIS_CONNECTING;
    link->connected = 0;
    link->handshake_out = 0;
    if (link->role == LINK_DATA) {
        r->state = REDIS_CONNECTING;
        /* Queued now, sent first once connected, answered before the link
         * counts as up. One that cannot be queued is never answered: the
         * connect timer then gives the connection up. */
        if (r->target.db) {
            link->handshake_out++;
            if (redisAsyncCommand(ac, on_select_done, r, "SELECT %d", r->target.db) == REDIS_OK)
                r->pending++;
        }
        if (is_sentinel(r)) {
            link->handshake_out++;
            if (redisAsyncCommand(ac, on_role_done, r, "ROLE") == REDIS_OK)
                r->pending++;
        }
    } else if (link->role == LINK_SUB) {
        /* Pub/sub ignores the database: no SELECT on this connection. */
        redisAsyncCommand(ac, on_subscriber_reply, r, "SUBSCRIBE %s", NOTIFY_CHANNEL);
    } else {
        redisAsyncCommand(ac, on_watch_reply, r, "SUBSCRIBE %s", SWITCH_MASTER_EVENT);
    }
    struct timeval tv = tv_of_ms(r->connect_timeout_ms);
    evtimer_add(link->connect_timer, &tv);
}

/* Let go of the link's connection at once (the master moved): its pending
 * commands get NULL replies, its callbacks ignore it from now on. */
static void link_drop(struct redis_link *link)
{
    struct cache_redis *r = link->r;
    redisAsyncContext *ac = link->ctx;
    int was_up = link->state == REDIS_UP;
    link->ctx = NULL;
    link->state = REDIS_DOWN;
    link->connected = 0;
    evtimer_del(link->connect_timer);
    if (link->role == LINK_SUB)
        r->subscribed = 0;
    if (link->role == LINK_DATA) {
        r->state = REDIS_DOWN;
        if (was_up)
            r->reconnects++;
    }
    redisAsyncFree(ac);
    if (link->role == LINK_DATA)
        fail_waits(r);
}

/* Point the link at the master's address: kept if it is connected or
 * connecting there already, else (re)connected now. */
static void link_follow(struct redis_link *link)
{
    const struct redis_addr *a = &link->r->target.addr;
    int same = strcmp(link->at.host, a->host) == 0 && link->at.port == a->port;
    if (link->ctx && same)
        return;
    if (link->ctx)
        link_drop(link);
    if (!same)
        link->backoff_ms = link->r->reconnect_min_ms;
    evtimer_del(link->reconnect_timer);
    link_connect(link);
}

/* ---------------------------------------------------- sentinel:// only */

/* The sentinels name `a` the master (`why`: how we learnt it): the data
 * and subscriber connections go there. */
static void set_master(struct cache_redis *r, const struct redis_addr *a, const char *why)
{
    char name[300];
    if (!r->master_known || strcmp(a->host, r->target.addr.host) != 0 || a->port != r->target.addr.port)
        log_info("sentinel: the master of %s is %s (%s)", r->target.master_name, addr_name(a, name, sizeof(name)), why);
    r->target.addr = *a;
    r->master_known = 1;
    link_follow(&r->data);
    if (wants_subscriber(r))
        link_follow(&r->sub);
}

/* What the watch hears: the SUBSCRIBE confirmation, then one message per
 * failover, "MASTER OLDIP OLDPORT NEWIP NEWPORT". */
static void on_watch_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct cache_redis *r = privdata;
    redisReply *rep = reply;
    char name[300];
    if (!rep || r->closing || ac != r->watch.ctx || rep->type != REDIS_REPLY_ARRAY || rep->elements < 3 ||
        rep->element[0]->type != REDIS_REPLY_STRING)
        return;
    if (strcmp(rep->element[0]->str, "subscribe") == 0) {
        log_info("sentinel %s: watching for failovers (%s)", link_name(&r->watch, name, sizeof(name)),
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

static void query_attempt(struct cache_redis *r);

/* The sentinel asked could not name the master (`why`): ask the next; when
 * none could, try again on the data connection's backoff. */
static void query_next(struct cache_redis *r, const char *why)
{
    struct sentinel_query *q = &r->query;
    char name[300];
    log_debug("sentinel %s: %s", addr_name(&r->target.sentinels[q->index], name, sizeof(name)), why);
    if (++q->index < r->target.nsentinels) {
        query_attempt(r);
        return;
    }
    q->running = 0;
    if (q->epoch != r->master_epoch)
        return; /* a +switch-master named it meanwhile */
    if (r->data.backoff_ms <= r->reconnect_min_ms)
        log_warn("sentinel: no sentinel named the master of %s (last: %s); retrying with backoff, requests go "
                 "upstream meanwhile",
                 r->target.master_name, why);
    note_transport_error(r, "no sentinel named the master", why);
    schedule_reconnect(&r->data);
}

static void on_query_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct cache_redis *r = privdata;
    struct sentinel_query *q = &r->query;
    redisReply *rep = reply;
    if (r->closing || ac != q->ctx)
        return;
    evtimer_del(q->timer);
    q->ctx = NULL;
    if (!rep) {
        query_next(r, "connection lost");
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
            snprintf(why, sizeof(why), "does not know master %s", r->target.master_name);
        else if (rep->type == REDIS_REPLY_ERROR)
            snprintf(why, sizeof(why), "%.150s", rep->str);
        else
            snprintf(why, sizeof(why), "unexpected reply");
        query_next(r, why);
        return;
    }
    q->running = 0;
    if (q->epoch != r->master_epoch)
        return; /* a +switch-master named a newer master meanwhile */
    memcpy(a.host, rep->element[0]->str, rep->element[0]->len + 1);
    a.port = (int)port;
    set_master(r, &a, "named by the sentinels");
}

/* hiredis frees the context when this returns. */
static void on_query_connect(const redisAsyncContext *ac, int status)
{
    struct cache_redis *r = ac->data;
    if (r->closing || ac != r->query.ctx || status == REDIS_OK)
        return;
    evtimer_del(r->query.timer);
    r->query.ctx = NULL;
    query_next(r, ac->errstr);
}

/* hiredis frees the context when this returns. */
static void on_query_disconnect(const redisAsyncContext *ac, int status)
{
    struct cache_redis *r = ac->data;
    if (r->closing || ac != r->query.ctx)
        return;
    evtimer_del(r->query.timer);
    r->query.ctx = NULL;
    query_next(r, "connection lost");
}

static void on_query_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct cache_redis *r = arg;
    redisAsyncContext *ac = r->query.ctx;
    if (!ac)
        return;
    r->query.ctx = NULL;
    redisAsyncFree(ac); /* its callbacks ignore it from now on */
    query_next(r, "timed out");
}

/* Ask sentinel number query.index, within the connect timeout. */
static void query_attempt(struct cache_redis *r)
{
    struct sentinel_query *q = &r->query;
    const struct redis_addr *s = &r->target.sentinels[q->index];
    redisAsyncContext *ac = redisAsyncConnect(s->host, s->port);
    if (!ac || ac->err) {
        char why[160];
        snprintf(why, sizeof(why), "%s", ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        query_next(r, why);
        return;
    }
    ac->data = r;
    redisLibeventAttach(ac, r->base);
    redisAsyncSetConnectCallback(ac, on_query_connect);
    redisAsyncSetDisconnectCallback(ac, on_query_disconnect);
    q->ctx = ac;
    if (redisAsyncCommand(ac, on_query_reply, r, "SENTINEL get-master-addr-by-name %s", r->target.master_name) !=
        REDIS_OK) {
        q->ctx = NULL;
        redisAsyncFree(ac);
        query_next(r, "cannot send");
        return;
    }
    struct timeval tv = tv_of_ms(r->connect_timeout_ms);
    evtimer_add(q->timer, &tv);
}

/* Ask the sentinels, in order, where the master is; set_master then
 * connects there. Lookups meanwhile find Redis unavailable. */
static void resolve_start(struct cache_redis *r)
{
    struct sentinel_query *q = &r->query;
    if (q->running)
        return;
    q->running = 1;
    q->index = 0;
    q->epoch = r->master_epoch;
    r->state = REDIS_CONNECTING;
    r->data.state = REDIS_CONNECTING;
    query_attempt(r);
}

/* (Re)connect `link`. sentinel://: the data connection first asks the
 * sentinels (a failover may have moved the master); the subscriber waits
 * until they have named one. */
static void connect_now(struct redis_link *link)
{
    struct cache_redis *r = link->r;
    if (link->role == LINK_SUB && !wants_subscriber(r))
        return;
    if (is_sentinel(r) && link->role == LINK_DATA) {
        resolve_start(r);
        return;
    }
    if (is_sentinel(r) && link->role == LINK_SUB && !r->master_known)
        return;
    link_connect(link);
}

/* Can the data connection take one more command now? */
static int data_ready(const struct cache_redis *r)
{
    return r->state == REDIS_UP && r->data.ctx && r->pending < r->max_pending;
}

/* ------------------------------------------------------- fire and forget */

/* A command whose reply only matters when it is an error. */
static void command_done(struct cache_redis *r, redisReply *rep, const char *command)
{
    r->pending--;
    if (r->closing)
        return;
    if (!rep)
        r->errors++; /* the connection went away: counted there */
    else if (rep->type == REDIS_REPLY_ERROR)
        note_error_reply(r, command, rep);
}

/* A store on its way: the key, settled once Redis has answered the SET. */
struct redis_store {
    struct cache_redis *r;
    char key[];
};

/* The lease is released (and the store published) only now: behind
 * twemproxy KEY:p and KEY:l may live on different servers, and a release
 * sent with the SET could land first; a waiter would then see neither lease
 * nor answer and call upstream itself. */
static void on_store_done(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct redis_store *st = privdata;
    struct cache_redis *r = st->r;
    redisReply *rep = reply;
    command_done(r, rep, "SET");
    if (!r->closing)
        cache_redis_settle(r, st->key, rep && rep->type != REDIS_REPLY_ERROR);
    free(st);
}

static void on_del_done(redisAsyncContext *ac, void *reply, void *privdata)
{
    command_done(privdata, reply, "DEL");
}

static void on_publish_done(redisAsyncContext *ac, void *reply, void *privdata)
{
    command_done(privdata, reply, "PUBLISH");
}

/* ------------------------------------------------------------- lookups */

/* Decode "JG1 <stored_at_ms> <terminal>[ <status>[ <expires_at_ms>[ <stale_until_ms>]]]\n<body>".
 * NULL if it is not that. */
static struct body *decode_value(const char *v, size_t len)
{
    const char *nl = memchr(v, '\n', len);
    if (!nl || len < 4 || memcmp(v, "JG1 ", 4) != 0)
        return NULL;
    char head[96];
    size_t hlen = (size_t)(nl - v);
    if (hlen >= sizeof(head))
        return NULL;
    memcpy(head, v, hlen);
    head[hlen] = '\0';
    int64_t stored_at, expires_at = 0, stale_until = 0;
    int terminal, status = 200;
    int fields = sscanf(head, "JG1 %" SCNd64 " %d %d %" SCNd64 " %" SCNd64, &stored_at, &terminal, &status, &expires_at,
                        &stale_until);
    if (fields < 2 || (terminal != 0 && terminal != 1) || (status != 200 && status != 404) || expires_at < 0 ||
        stale_until < 0)
        return NULL;
    struct body *b = body_new(nl + 1, len - hlen - 1, stored_at, terminal);
    if (b) {
        b->status = status;
        b->expires_at_ms = expires_at;
        b->stale_until_ms = stale_until;
    }
    return b;
}

/* The answer among `n` MGET elements (KEY:t first, preferred), a new
 * reference, or NULL. Entries not in jobgate's format are counted, skipped. */
static struct body *decode_answer(struct cache_redis *r, redisReply **elements, size_t n)
{
    struct body *b = NULL;
    for (size_t i = 0; i < n && !b; i++) {
        redisReply *e = elements[i];
        if (e->type != REDIS_REPLY_STRING)
            continue;
        b = decode_value(e->str, e->len);
        if (!b) {
            r->errors++;
            log_warn("redis: ignoring an entry that is not jobgate's format");
        }
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
        /* An error reply (LOADING, ...) is not a miss: a miss may be cached over. */
        if (rep && rep->type == REDIS_REPLY_ERROR)
            note_error_reply(r, "MGET", rep);
        else
            r->errors++;
        lookup_answer(l, CACHE_UNAVAILABLE, NULL);
        lookup_free(l);
        return;
    }
    struct body *b = decode_answer(r, rep->element, 2);
    enum cache_status status = !b ? CACHE_MISS : body_fresh(b, clock_wall_ms()) ? CACHE_HIT : CACHE_STALE;
    lookup_answer(l, status, b);
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
    if (!data_ready(r)) {
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
    if (!l->budget_timer ||
        redisAsyncCommand(r->data.ctx, on_lookup_reply, l, "MGET %s:t %s:p", key, key) != REDIS_OK) {
        r->errors++;
        if (l->budget_timer)
            event_free(l->budget_timer);
        free(l);
        cb(CACHE_UNAVAILABLE, NULL, arg);
        return;
    }
    r->pending++;
    struct timeval tv = tv_of_ms(r->budget_ms);
    evtimer_add(l->budget_timer, &tv);
}

/* -------------------------------------------------------------- stores */

void cache_redis_put(struct cache_redis *r, const char *key, struct body *b, int64_t px_ms)
{
    size_t klen = strlen(key);
    struct redis_store *st = data_ready(r) ? malloc(sizeof(*st) + klen + 1) : NULL;
    if (!st) {
        cache_redis_settle(r, key, 0);
        return;
    }
    st->r = r;
    memcpy(st->key, key, klen + 1);
    char head[96];
    int hlen = snprintf(head, sizeof(head), "JG1 %" PRId64 " %d %d %" PRId64 " %" PRId64 "\n", b->stored_at_ms,
                        b->terminal ? 1 : 0, b->status, b->expires_at_ms, b->stale_until_ms);
    size_t vlen = (size_t)hlen + b->len;
    char *value = malloc(vlen);
    if (!value) {
        free(st);
        cache_redis_settle(r, key, 0);
        return;
    }
    memcpy(value, head, (size_t)hlen);
    memcpy(value + hlen, b->data, b->len);
    const char *suffix = b->terminal ? "t" : "p";
    int rc;
    if (px_ms < 0)
        rc = redisAsyncCommand(r->data.ctx, on_store_done, st, "SET %s:%s %b", key, suffix, value, vlen);
    else
        rc = redisAsyncCommand(r->data.ctx, on_store_done, st, "SET %s:%s %b PX %" PRId64, key, suffix, value, vlen,
                               px_ms);
    free(value);
    if (rc == REDIS_OK) {
        r->pending++;
    } else {
        r->errors++;
        free(st);
        cache_redis_settle(r, key, 0);
    }
}

/* --------------------------------------------------------------- leases */

/* A lease release on its way: the key, to fall back to DEL if EVAL is refused. */
struct redis_release {
    struct cache_redis *r;
    char key[];
};

static void send_del_lease(struct cache_redis *r, const char *key)
{
    if (data_ready(r) && redisAsyncCommand(r->data.ctx, on_del_done, r, "DEL %s:l", key) == REDIS_OK)
        r->pending++;
}

static void on_release_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct redis_release *rel = privdata;
    struct cache_redis *r = rel->r;
    redisReply *rep = reply;
    r->pending--;
    if (!r->closing && rep && rep->type == REDIS_REPLY_ERROR) {
        note_error_reply(r, "EVAL", rep);
        /* Scripting refused (disabled, or a proxy without it): DEL instead,
         * from now on. Its risk: deleting a lease another process took after
         * ours expired, which costs one more upstream call, never a wrong answer. */
        if (strncmp(rep->str, "ERR", 3) == 0 || strncmp(rep->str, "NOSCRIPT", 8) == 0 ||
            strncmp(rep->str, "NOPERM", 6) == 0) {
            if (!r->eval_refused)
                log_warn("redis: EVAL refused; leases are released with DEL from now on");
            r->eval_refused = 1;
            send_del_lease(r, rel->key);
        }
    } else if (!r->closing && !rep) {
        r->errors++;
    }
    free(rel);
}

/* Release the lease on `key` if this cache holds it. Returns 1 if it did. */
static int release_held(struct cache_redis *r, const char *key)
{
    struct held_lease *h = (struct held_lease *)keymap_get(&r->held, key);
    if (!h)
        return 0;
    if (r->eval_refused) {
        send_del_lease(r, key);
    } else if (data_ready(r)) {
        size_t len = strlen(key);
        struct redis_release *rel = malloc(sizeof(*rel) + len + 1);
        if (rel) {
            rel->r = r;
            memcpy(rel->key, key, len + 1);
            if (redisAsyncCommand(r->data.ctx, on_release_reply, rel, "EVAL %s 1 %s:l %s", RELEASE_SCRIPT, key,
                                  h->token) == REDIS_OK)
                r->pending++;
            else
                free(rel);
        }
    }
    /* Forgotten even when Redis is down: the lease then ends at its expiry. */
    keymap_remove(&r->held, &h->item);
    free(h);
    return 1;
}

void cache_redis_settle(struct cache_redis *r, const char *key, int stored)
{
    int released = release_held(r, key);
    if ((stored || released) && may_publish(r) && data_ready(r) &&
        redisAsyncCommand(r->data.ctx, on_publish_done, r, "PUBLISH %s %s", NOTIFY_CHANNEL, key) == REDIS_OK)
        r->pending++;
}

static void held_add(struct cache_redis *r, const char *key, const char *token)
{
    size_t len = strlen(key);
    struct held_lease *h = malloc(sizeof(*h) + len + 1);
    if (!h)
        return; /* not released by us then: it ends at its expiry */
    memcpy(h->key, key, len + 1);
    h->item.key = h->key;
    snprintf(h->token, sizeof(h->token), "%s", token);
    struct held_lease *old = (struct held_lease *)keymap_get(&r->held, key);
    if (old) { /* an older lease of ours that expired: this token replaced it */
        keymap_remove(&r->held, &old->item);
        free(old);
    }
    if (keymap_put(&r->held, &h->item) < 0)
        free(h);
}

static void op_free(struct redis_op *op)
{
    if (op->timer)
        event_free(op->timer);
    if (op->deadline)
        event_free(op->deadline);
    free(op);
}

/* Free `op` if it is finished and hiredis owes it no reply. */
static void op_maybe_free(struct redis_op *op)
{
    if (op->finished && op->replies_out == 0)
        op_free(op);
}

static void lease_answer(struct redis_op *op, enum cache_lease_status status)
{
    if (op->finished)
        return;
    op->finished = 1;
    evtimer_del(op->timer);
    op->lease_cb(status, op->arg);
}

static int lease_recheck(struct redis_op *op);

static void on_lease_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct redis_op *op = privdata;
    struct cache_redis *r = op->r;
    redisReply *rep = reply;
    r->pending--;
    op->replies_out--;
    if (r->closing) {
        op_free(op);
        return;
    }
    if (rep && rep->type == REDIS_REPLY_STATUS && strcmp(rep->str, "OK") == 0) {
        /* Granted, perhaps after the budget ran out: kept, so that cache_put
         * releases it; if the caller cancelled, nobody will: release now. */
        held_add(r, op->key, op->token);
        if (op->cancelled)
            release_held(r, op->key);
        else if (!op->finished && lease_recheck(op))
            return; /* answered once the answer is re-read */
        lease_answer(op, CACHE_LEASE_ACQUIRED);
    } else if (rep && rep->type == REDIS_REPLY_NIL) {
        lease_answer(op, CACHE_LEASE_HELD);
    } else {
        if (rep && rep->type == REDIS_REPLY_ERROR)
            note_error_reply(r, "SET NX", rep);
        else
            r->errors++;
        lease_answer(op, CACHE_LEASE_UNAVAILABLE);
    }
    op_maybe_free(op);
}

/* The lease was granted: is a fresh answer there already? Then it was
 * stored, and its lease released, between the caller's lookup and our SET NX
 * (a whole upstream call can fit there): give the lease back and answer
 * HELD, so that the caller's cache_wait finds that answer at once instead of
 * calling upstream again. A release is sent only after its store was
 * acknowledged (on_store_done), so this read sees that store. */
static void on_lease_recheck(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct redis_op *op = privdata;
    struct cache_redis *r = op->r;
    redisReply *rep = reply;
    r->pending--;
    op->replies_out--;
    if (r->closing) {
        op_free(op);
        return;
    }
    struct body *b = NULL;
    if (rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2)
        b = decode_answer(r, rep->element, 2);
    else if (rep && rep->type == REDIS_REPLY_ERROR)
        note_error_reply(r, "MGET", rep);
    int fresh = b && body_fresh(b, clock_wall_ms());
    body_unref(b);
    if (fresh || op->cancelled)
        cache_redis_settle(r, op->key, 0); /* releases it, and tells waiters in pub/sub mode */
    lease_answer(op, fresh ? CACHE_LEASE_HELD : CACHE_LEASE_ACQUIRED);
    op_maybe_free(op);
}

/* Send the re-read of a granted lease's key. Returns 0 if it cannot be sent
 * (the lease then counts as acquired at once). */
static int lease_recheck(struct redis_op *op)
{
    struct cache_redis *r = op->r;
    if (!data_ready(r) ||
        redisAsyncCommand(r->data.ctx, on_lease_recheck, op, "MGET %s:t %s:p", op->key, op->key) != REDIS_OK)
        return 0;
    r->pending++;
    op->replies_out++;
    return 1;
}

static void on_lease_budget(evutil_socket_t fd, short what, void *arg)
{
    struct redis_op *op = arg;
    op->r->timeouts++;
    lease_answer(op, CACHE_LEASE_UNAVAILABLE);
    /* Stays allocated until hiredis calls back for it. */
}

static struct redis_op *op_new(struct cache_redis *r, const char *key)
{
    size_t len = strlen(key);
    struct redis_op *op = calloc(1, sizeof(*op) + len + 1);
    if (!op)
        return NULL;
    op->r = r;
    memcpy(op->key, key, len + 1);
    return op;
}

struct redis_op *cache_redis_lease(struct cache_redis *r, const char *key, int64_t lease_ms, cache_lease_cb cb,
                                   void *arg)
{
    if (!data_ready(r) || lease_ms <= 0)
        return NULL;
    struct redis_op *op = op_new(r, key);
    if (!op)
        return NULL;
    op->lease_cb = cb;
    op->arg = arg;
    snprintf(op->token, sizeof(op->token), "%s-%" PRIx64, r->instance_id, ++r->lease_counter);
    op->timer = evtimer_new(r->base, on_lease_budget, op);
    if (!op->timer || redisAsyncCommand(r->data.ctx, on_lease_reply, op, "SET %s:l %s NX PX %" PRId64, key, op->token,
                                        lease_ms) != REDIS_OK) {
        r->errors++;
        op_free(op);
        return NULL;
    }
    r->pending++;
    op->replies_out++;
    struct timeval tv = tv_of_ms(r->budget_ms);
    evtimer_add(op->timer, &tv);
    return op;
}

/* ---------------------------------------------------------------- waits */

/* Finish a wait with `status`, then free it if hiredis owes it nothing: the
 * caller must not touch `op` afterwards. */
static void wait_finish(struct redis_op *op, enum cache_status status, struct body *b)
{
    if (!op->finished) {
        op->finished = 1;
        TAILQ_REMOVE(&op->r->waits, op, wait_link);
        evtimer_del(op->timer);
        evtimer_del(op->deadline);
        op->get_cb(status, b, op->arg);
    }
    op_maybe_free(op);
}

static void on_check_reply(redisAsyncContext *ac, void *reply, void *privdata);

static void wait_schedule(struct redis_op *op, int64_t ms)
{
    struct timeval tv = tv_of_ms(ms);
    evtimer_add(op->timer, &tv);
}

/* Read the key's answer and lease now (one check out at a time). Never
 * calls back: a check that cannot be sent is retried from the timer, which
 * finishes the wait if Redis is down. */
static void wait_check(struct redis_op *op)
{
    struct cache_redis *r = op->r;
    if (op->replies_out) {
        op->check_again = 1;
        return;
    }
    if (data_ready(r) && redisAsyncCommand(r->data.ctx, on_check_reply, op, "MGET %s:t %s:p %s:l", op->key, op->key,
                                           op->key) == REDIS_OK) {
        r->pending++;
        op->replies_out++;
        evtimer_del(op->timer);
        return;
    }
    wait_schedule(op, r->state == REDIS_UP ? r->poll_interval_ms : 0);
}

static void on_check_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct redis_op *op = privdata;
    struct cache_redis *r = op->r;
    redisReply *rep = reply;
    r->pending--;
    op->replies_out--;
    if (r->closing || op->finished) {
        op_maybe_free(op);
        return;
    }
    if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 3) {
        if (rep && rep->type == REDIS_REPLY_ERROR)
            note_error_reply(r, "MGET", rep);
        else
            r->errors++;
        wait_finish(op, CACHE_UNAVAILABLE, NULL);
        return;
    }
    struct body *b = decode_answer(r, rep->element, 2);
    if (b && body_fresh(b, clock_wall_ms())) {
        wait_finish(op, CACHE_HIT, b);
        body_unref(b);
        return;
    }
    body_unref(b); /* a stale copy: not the answer waited for */
    if (rep->element[2]->type == REDIS_REPLY_NIL) {
        /* No lease and no fresh answer: its holder failed or died. */
        wait_finish(op, CACHE_MISS, NULL);
        return;
    }
    if (op->check_again) {
        op->check_again = 0;
        wait_check(op);
        return;
    }
    wait_schedule(op, r->subscribed ? r->poll_interval_ms * PUBSUB_CHECK_FACTOR : r->poll_interval_ms);
}

static void on_wait_timer(evutil_socket_t fd, short what, void *arg)
{
    struct redis_op *op = arg;
    if (op->r->state != REDIS_UP) {
        wait_finish(op, CACHE_UNAVAILABLE, NULL);
        return;
    }
    wait_check(op);
}

static void on_wait_deadline(evutil_socket_t fd, short what, void *arg)
{
    wait_finish(arg, CACHE_MISS, NULL); /* the holder is slow: go yourself */
}

/* A store of `key` was published: every wait on it checks now. The list is
 * walked linearly: waits are few (one per key per process at most, as the
 * gateway coalesces in process) and stores are rate-limited by upstream. */
static void wake_waits(struct cache_redis *r, const char *key, size_t len)
{
    struct redis_op *op;
    TAILQ_FOREACH (op, &r->waits, wait_link) {
        if (strlen(op->key) == len && memcmp(op->key, key, len) == 0)
            wait_check(op); /* never calls back: the list stays as it is */
    }
}

/* The data connection is gone: every wait goes upstream. A callback may
 * cancel other waits, so the list is re-read after each. */
static void fail_waits(struct cache_redis *r)
{
    struct redis_op *op;
    while ((op = TAILQ_FIRST(&r->waits)) != NULL)
        wait_finish(op, CACHE_UNAVAILABLE, NULL);
}

struct redis_op *cache_redis_wait(struct cache_redis *r, const char *key, int64_t timeout_ms, cache_get_cb cb,
                                  void *arg)
{
    if (r->state != REDIS_UP || !r->data.ctx)
        return NULL;
    struct redis_op *op = op_new(r, key);
    if (!op)
        return NULL;
    op->is_wait = 1;
    op->get_cb = cb;
    op->arg = arg;
    op->timer = evtimer_new(r->base, on_wait_timer, op);
    op->deadline = evtimer_new(r->base, on_wait_deadline, op);
    if (!op->timer || !op->deadline) {
        op_free(op);
        return NULL;
    }
    TAILQ_INSERT_TAIL(&r->waits, op, wait_link);
    struct timeval tv = tv_of_ms(timeout_ms > 0 ? timeout_ms : 0);
    evtimer_add(op->deadline, &tv);
    wait_check(op); /* the answer may be there already */
    return op;
}

void cache_redis_cancel(struct cache_redis *r, struct redis_op *op)
{
    if (op->finished)
        return;
    op->finished = 1;
    op->cancelled = 1;
    evtimer_del(op->timer);
    if (op->is_wait) {
        evtimer_del(op->deadline);
        TAILQ_REMOVE(&r->waits, op, wait_link);
    }
    op_maybe_free(op);
}

/* --------------------------------------------------------------- health */

void cache_redis_health(const struct cache_redis *r, struct cache_health *out)
{
    static const char *const names[] = {[REDIS_DOWN] = "down", [REDIS_CONNECTING] = "connecting", [REDIS_UP] = "up"};
    *out = (struct cache_health){.backend = "redis",
                                 .state = names[r->state],
                                 .up = r->state == REDIS_UP,
                                 .coalescing = r->state != REDIS_UP ? "none"
                                               : r->subscribed      ? "pubsub"
                                                                    : "poll",
                                 .errors = r->errors,
                                 .timeouts = r->timeouts,
                                 .reconnects = r->reconnects};
    snprintf(out->last_error, sizeof(out->last_error), "%s", r->last_error);
    target_name(r, out->endpoint, sizeof(out->endpoint));
}

/* ------------------------------------------------------------ lifecycle */

/* 64 random bits in hex: what tells this cache's lease tokens from others'. */
static void make_instance_id(struct cache_redis *r)
{
    uint64_t v = 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || read(fd, &v, sizeof(v)) != (ssize_t)sizeof(v))
        v = (uint64_t)clock_mono_us() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)r;
    if (fd >= 0)
        close(fd);
    snprintf(r->instance_id, sizeof(r->instance_id), "%016" PRIx64, v);
}

static int link_init(struct cache_redis *r, struct redis_link *link, enum link_role role)
{
    link->r = r;
    link->role = role;
    link->backoff_ms = r->reconnect_min_ms;
    link->connect_timer = evtimer_new(r->base, on_connect_timeout, link);
    link->reconnect_timer = evtimer_new(r->base, on_reconnect_timer, link);
    return link->connect_timer && link->reconnect_timer ? 0 : -1;
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
    r->notify = conf->redis_notify;
    r->poll_interval_ms = conf->redis_poll_interval_ms > 0 ? conf->redis_poll_interval_ms : POLL_INTERVAL_MS;
    TAILQ_INIT(&r->waits);
    make_instance_id(r);
    r->query.timer = evtimer_new(base, on_query_timeout, r);
    if (link_init(r, &r->data, LINK_DATA) < 0 || link_init(r, &r->sub, LINK_SUB) < 0 ||
        link_init(r, &r->watch, LINK_WATCH) < 0 || !r->query.timer) {
        snprintf(err, errlen, "out of memory");
        cache_redis_free(r);
        return NULL;
    }
    connect_now(&r->data); /* sentinel://: asks the sentinels, then connects the subscriber too */
    connect_now(&r->sub);
    if (is_sentinel(r))
        connect_now(&r->watch);
    return r;
}

static void link_close(struct redis_link *link)
{
    if (link->ctx) {
        redisAsyncContext *ac = link->ctx;
        link->ctx = NULL;
        redisAsyncFree(ac); /* calls every pending callback with a NULL reply */
    }
    if (link->connect_timer)
        event_free(link->connect_timer);
    if (link->reconnect_timer)
        event_free(link->reconnect_timer);
}

static void free_held(struct keymap_item *item)
{
    free(item);
}

void cache_redis_free(struct cache_redis *r)
{
    if (!r)
        return;
    r->closing = 1;
    struct redis_op *op;
    while ((op = TAILQ_FIRST(&r->waits)) != NULL)
        cache_redis_cancel(r, op); /* freed now, or by their NULL replies below */
    link_close(&r->data);
    link_close(&r->sub);
    link_close(&r->watch);
    if (r->query.ctx) {
        redisAsyncContext *ac = r->query.ctx;
        r->query.ctx = NULL;
        redisAsyncFree(ac);
    }
    if (r->query.timer)
        event_free(r->query.timer);
    keymap_clear(&r->held, free_held);
    free(r);
}
