#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>

#include "cachekey.h"
#include "log.h"
#include "redis_link.h"
#include "redis_link_int.h"

static int is_sentinel(const struct redis_link *r)
{
    return r->target.nsentinels > 0;
}

static int is_cluster(const struct redis_link *r)
{
    return r->target.nseeds > 0;
}

int redis_link_is_cluster(const struct redis_link *r)
{
    return is_cluster(r);
}

int redis_link_is_sentinel(const struct redis_link *r)
{
    return is_sentinel(r);
}

struct timeval redis_link_tv(int64_t ms)
{
    return (struct timeval){(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
}

/* ------------------------------------------------------------- errors */

/* Does `text` hold one of the link's secrets? (Then it is not logged.) */
static int holds_secret(const struct redis_link *r, const char *text)
{
    const char *secrets[] = {r->password, r->sentinel_password};
    for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++)
        if (secrets[i] && *secrets[i] && strstr(text, secrets[i]))
            return 1;
    return 0;
}

/*
 * Count an error reply from Redis to `command` and keep it as the last
 * error. Only the reply's code (its first word: OOM, READONLY, LOADING...)
 * goes to the health report; the log gets the whole text, which never holds
 * a secret (jobgate sends Redis none). READONLY (we reached a replica) and
 * MASTERDOWN (the replica lost its master) mean a failover may have moved
 * the master: reconnect, which finds it when the address follows it.
 */
void redis_link_error_reply(struct redis_link *r, const char *command, const redisReply *rep)
{
    char code[32];
    redis_error_code(rep, code, sizeof(code));
    r->errors++;
    snprintf(r->last_error, sizeof(r->last_error), "%s on %s", code, command);
    int noauth = strcmp(code, "NOAUTH") == 0;
    if (!noauth)
        log_warn("redis: %s failed: %.200s", command, holds_secret(r, rep->str) ? code : rep->str);
    if (is_cluster(r)) {
        /* A master moved (a failover, a resharding): ask for the map again;
         * a MOVED (to a master not known yet) leaves the other slots served. */
        if (strcmp(code, "READONLY") == 0 || strcmp(code, "MASTERDOWN") == 0 || strcmp(code, "CLUSTERDOWN") == 0)
            redis_link_cluster_refresh(r, code, 1);
        else if (strcmp(code, "MOVED") == 0)
            redis_link_cluster_refresh(r, code, 0);
        return;
    }
    if ((strcmp(code, "READONLY") == 0 || strcmp(code, "MASTERDOWN") == 0 || noauth) && r->state == REDIS_UP &&
        r->data.ctx) {
        if (noauth)
            log_error("redis: NOAUTH: this Redis wants a password; set cache.redis_password_file or _env "
                      "(and cache.redis_user for an ACL user); reconnecting with backoff, requests go upstream "
                      "meanwhile");
        else
            log_warn("redis: %s: a failover may have happened; reconnecting", code);
        r->state = REDIS_CONNECTING; /* no commands until the new connection is up */
        r->data.state = REDIS_CONNECTING;
        redisAsyncDisconnect(r->data.ctx); /* the disconnect callback schedules the reconnect */
    }
}

/* AUTH was refused on `link` (`who`: "redis HOST:PORT" or "sentinel
 * HOST:PORT"): counted, kept as the last error, logged with what to check
 * (once per streak of failed attempts), never with a secret. */
void redis_link_auth_refused(struct redis_link *r, const char *who, const redisReply *rep, int sentinel, int first)
{
    char code[32];
    redis_error_code(rep, code, sizeof(code));
    r->errors++;
    snprintf(r->last_error, sizeof(r->last_error), "%s on AUTH%s", code, sentinel ? " to a sentinel" : "");
    if (!first)
        return;
    log_error("%s: AUTH refused (%.150s); check cache.%s and cache.%s_file or _env; %s", who,
              holds_secret(r, rep->str) ? code : rep->str, sentinel ? "sentinel_user" : "redis_user",
              sentinel ? "sentinel_password" : "redis_password",
              sentinel ? "asking the next sentinel" : "retrying with backoff, requests go upstream meanwhile");
}

void redis_link_note_transport_error(struct redis_link *r, const char *what, const char *detail)
{
    snprintf(r->last_error, sizeof(r->last_error), "%s%s%.60s", what, detail && *detail ? ": " : "",
             detail ? detail : "");
}

/* Why a connection of the data link went: hiredis's `errstr`, or, through
 * TLS, the handshake's failure when there was one (hiredis only saw the
 * bridge close). Returns `errstr` or `buf`. */
static const char *lost_reason(const struct redis_conn *link, const char *errstr, char *buf, size_t len)
{
    const char *tls = redis_tls_error(link->r->tls, link->at.host, link->at.port);
    if (!tls)
        return errstr;
    snprintf(buf, len, "TLS: %s", tls);
    return buf;
}

/* ------------------------------------------------------- the connections */

const char *redis_link_conn_name(const struct redis_conn *link, char *buf, size_t len)
{
    if (link->role != LINK_WATCH && link->r->target.unix_path[0])
        snprintf(buf, len, "unix:%s", link->r->target.unix_path);
    else
        redis_addr_name(&link->at, buf, len);
    return buf;
}

void redis_link_schedule_reconnect(struct redis_conn *link)
{
    struct redis_link *r = link->r;
    if (r->closing)
        return;
    link->state = REDIS_DOWN;
    link->connected = 0;
    if (link->role == LINK_DATA)
        r->state = REDIS_DOWN;
    struct timeval tv = redis_link_tv(link->backoff_ms);
    evtimer_add(link->reconnect_timer, &tv);
    link->backoff_ms = link->backoff_ms * 2 > r->reconnect_max_ms ? r->reconnect_max_ms : link->backoff_ms * 2;
}

/* Does this cache run a subscriber connection? */
int redis_link_wants_subscriber(const struct redis_link *r)
{
    return r->notify != CACHE_NOTIFY_POLL && !r->pubsub_refused;
}

int redis_link_may_publish(const struct redis_link *r)
{
    return r->notify == CACHE_NOTIFY_PUBSUB || (r->notify == CACHE_NOTIFY_AUTO && r->pubsub_seen && !r->pubsub_refused);
}

/* hiredis frees the context when this returns. */
static void on_connect(const redisAsyncContext *ac, int status)
{
    struct redis_conn *link = ac->data;
    struct redis_link *r = link->r;
    char name[300], why[120];
    if (ac != link->ctx)
        return; /* a connection this link let go of */
    if (status != REDIS_OK) {
        evtimer_del(link->connect_timer);
        if (link->role == LINK_DATA || link->role == LINK_NODE) {
            const char *reason = lost_reason(link, ac->errstr, why, sizeof(why));
            if (link->backoff_ms <= r->reconnect_min_ms)
                log_warn("redis %s: cannot connect: %s; retrying with backoff, requests go upstream meanwhile",
                         redis_link_conn_name(link, name, sizeof(name)), reason);
            redis_link_note_transport_error(r, "cannot connect", reason);
        } else if (link->role == LINK_WATCH) {
            log_debug("sentinel %s: cannot connect: %s", redis_link_conn_name(link, name, sizeof(name)), ac->errstr);
            r->watch_index = (r->watch_index + 1) % r->target.nsentinels;
        } else if (link->role == LINK_CONFIG) {
            log_debug("redis cluster %s: cannot connect: %s", redis_link_conn_name(link, name, sizeof(name)),
                      ac->errstr);
            redis_link_note_transport_error(r, "cannot connect", ac->errstr);
            r->config_index++;
        } else if (is_cluster(r)) {
            r->sub_index++;
        }
        link->ctx = NULL;
        redis_link_schedule_reconnect(link);
        if (link->role == LINK_NODE)
            redis_link_node_lost(link);
        return;
    }
    if (link->role == LINK_DATA || link->role == LINK_NODE) {
        /* Up only once SELECT and ROLE are answered: until then a command
         * could run in database 0, or on a replica. The connect timer keeps
         * running for them. */
        link->connected = 1;
        if (link->handshake_out == 0)
            redis_link_conn_up(link);
        return;
    }
    evtimer_del(link->connect_timer);
    link->state = REDIS_UP;
}

/* hiredis frees the context when this returns. */
static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct redis_conn *link = ac->data;
    struct redis_link *r = link->r;
    char name[300];
    if (ac != link->ctx || r->closing)
        return; /* a connection this link let go of */
    int was_up = link->state == REDIS_UP;
    link->ctx = NULL;
    if (link->role == LINK_WATCH) {
        if (was_up)
            log_warn("sentinel %s: connection lost; watching for failovers from another sentinel",
                     redis_link_conn_name(link, name, sizeof(name)));
        r->watch_index = (r->watch_index + 1) % r->target.nsentinels;
        redis_link_schedule_reconnect(link);
        return;
    }
    if (link->role == LINK_CONFIG) {
        r->config_index++;
        redis_link_schedule_reconnect(link); /* asks CLUSTER SLOTS again once connected */
        return;
    }
    if (link->role == LINK_SUB) {
        int was_subscribed = r->subscribed;
        r->subscribed = 0;
        if (is_cluster(r))
            r->sub_index++;
        if (!was_subscribed && was_up && r->notify == CACHE_NOTIFY_AUTO && !is_sentinel(r) && !is_cluster(r) &&
            !link->auth_failed && !redis_tls_error(r->tls, link->at.host, link->at.port)) {
            /* Connected, then SUBSCRIBE was answered with an error or a
             * closed connection: a proxy without pub/sub (twemproxy). Not
             * with Sentinel, never behind twemproxy: there it is a master
             * that died before it confirmed, and a new one is coming. */
            log_info("redis %s: SUBSCRIBE refused (%s); waits poll instead",
                     redis_link_conn_name(link, name, sizeof(name)),
                     status == REDIS_OK ? "connection closed" : ac->errstr);
            r->pubsub_refused = 1;
            link->state = REDIS_DOWN;
            return;
        }
        if (was_subscribed)
            log_warn("redis %s: subscriber connection lost; waits poll until it is back",
                     redis_link_conn_name(link, name, sizeof(name)));
        redis_link_schedule_reconnect(link);
        return;
    }
    char why[120];
    const char *reason = lost_reason(link, ac->errstr, why, sizeof(why));
    if (!link->auth_failed && (was_up || reason == ac->errstr || link->backoff_ms <= r->reconnect_min_ms))
        log_warn("redis %s: connection lost%s%s; reconnecting", redis_link_conn_name(link, name, sizeof(name)),
                 status == REDIS_OK ? "" : ": ", status == REDIS_OK ? "" : reason);
    if (status != REDIS_OK)
        redis_link_note_transport_error(r, "connection lost", reason);
    r->reconnects++;
    redis_link_schedule_reconnect(link); /* sentinel://: the sentinels are asked again first */
    if (link->role == LINK_NODE)
        redis_link_node_lost(link);
    else
        r->hooks.data_lost(r->hooks.arg); /* nothing can tell them of a store now: they go upstream */
}

/* The connect attempt (data: or its handshake) took too long (a
 * black-holed address): give it up. */
static void on_connect_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct redis_conn *link = arg;
    struct redis_link *r = link->r;
    char name[300];
    if (link->state != REDIS_CONNECTING || !link->ctx)
        return;
    if (link->role == LINK_DATA || link->role == LINK_NODE) {
        log_warn("redis %s: connect timed out", redis_link_conn_name(link, name, sizeof(name)));
        redis_link_note_transport_error(r, "connect timed out", NULL);
    } else if (link->role == LINK_WATCH) {
        r->watch_index = (r->watch_index + 1) % r->target.nsentinels;
    } else if (link->role == LINK_CONFIG) {
        r->config_index++;
    } else if (is_cluster(r)) {
        r->sub_index++;
    }
    redisAsyncContext *ac = link->ctx;
    link->ctx = NULL;
    redisAsyncFree(ac); /* pending commands get NULL replies; its callbacks ignore it from now on */
    redis_link_schedule_reconnect(link);
    if (link->role == LINK_NODE)
        redis_link_node_lost(link);
}

static void on_reconnect_timer(evutil_socket_t fd, short what, void *arg)
{
    redis_link_connect_now(arg);
}

/* Everything the subscriber connection hears: the SUBSCRIBE confirmation,
 * then one message per store (its payload is the key). */
void redis_link_on_subscriber_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct redis_link *r = privdata;
    redisReply *rep = reply;
    char name[300];
    if (!rep || r->closing || rep->type != REDIS_REPLY_ARRAY || rep->elements < 3 ||
        rep->element[0]->type != REDIS_REPLY_STRING)
        return;
    if (strcmp(rep->element[0]->str, "subscribe") == 0) {
        if (!r->pubsub_seen)
            log_info("redis %s: subscribed to %s; waits are told of stores",
                     redis_link_conn_name(&r->sub, name, sizeof(name)), CACHEKEY_CHANNEL);
        r->subscribed = 1;
        r->pubsub_seen = 1;
        r->sub.backoff_ms = r->reconnect_min_ms;
    } else if (strcmp(rep->element[0]->str, "message") == 0 && rep->element[2]->type == REDIS_REPLY_STRING) {
        r->hooks.stored(r->hooks.arg, rep->element[2]->str, rep->element[2]->len);
    }
}

/*
 * The one place a TCP connection to Redis is opened: the data and
 * subscriber connections, the sentinel watch, every cluster node and the
 * cluster's config connection; through the TLS bridge (redis_tls) when
 * one is configured (the sentinels' for the watch).
 */
static redisAsyncContext *tcp_connect(const struct redis_conn *link)
{
    struct redis_link *r = link->r;
    return redis_tls_connect(link->role == LINK_WATCH ? r->sentinel_tls : r->tls, link->at.host, link->at.port);
}

void redis_link_conn_connect(struct redis_conn *link)
{
    struct redis_link *r = link->r;
    char name[300];
    if (link->role == LINK_WATCH)
        link->at = r->target.sentinels[r->watch_index];
    else if (link->role == LINK_DATA || (link->role == LINK_SUB && !is_cluster(r)))
        link->at = r->target.addr; /* cluster://: nodes, config and subscriber have theirs set by the caller */
    redisAsyncContext *ac = link->role != LINK_WATCH && r->target.unix_path[0]
                                ? redisAsyncConnectUnix(r->target.unix_path)
                                : tcp_connect(link);
    if (!ac) {
        log_error("redis %s: out of memory", redis_link_conn_name(link, name, sizeof(name)));
        redis_link_schedule_reconnect(link);
        return;
    }
    if (ac->err) {
        if (link->role == LINK_DATA || link->role == LINK_NODE || link->role == LINK_CONFIG) {
            log_warn("redis %s: cannot connect: %s", redis_link_conn_name(link, name, sizeof(name)), ac->errstr);
            redis_link_note_transport_error(r, "cannot connect", ac->errstr);
        }
        redisAsyncFree(ac);
        if (link->role == LINK_CONFIG)
            r->config_index++;
        redis_link_schedule_reconnect(link);
        if (link->role == LINK_NODE)
            redis_link_node_lost(link);
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
    link->auth_failed = 0;
    redis_link_handshake_start(link, ac);
    struct timeval tv = redis_link_tv(r->connect_timeout_ms);
    evtimer_add(link->connect_timer, &tv);
}

/* Let go of the link's connection at once (the master moved): its pending
 * commands get NULL replies, its callbacks ignore it from now on. */
void redis_link_conn_drop(struct redis_conn *link)
{
    struct redis_link *r = link->r;
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
    if (link->role == LINK_NODE && was_up)
        r->reconnects++;
    redisAsyncFree(ac);
    if (link->role == LINK_DATA || link->role == LINK_NODE)
        r->hooks.data_lost(r->hooks.arg);
}

/* (Re)connect `link`. sentinel://: the data connection first asks the
 * sentinels (a failover may have moved the master); the subscriber waits
 * until they have named one. */
void redis_link_connect_now(struct redis_conn *link)
{
    struct redis_link *r = link->r;
    if (link->role == LINK_SUB && !redis_link_wants_subscriber(r))
        return;
    if (is_cluster(r)) {
        if (link->role == LINK_DATA || (link->role == LINK_NODE && link->at.port == 0))
            return; /* no data connection; a node slot let go of */
        if (link->role == LINK_CONFIG) {
            int nseeds = r->target.nseeds, nmap = r->map ? r->map->nmasters + r->map->nreplicas : 0;
            int i = r->config_index % (nseeds + nmap);
            link->at = i < nseeds                      ? r->target.seeds[i]
                       : i - nseeds < r->map->nmasters ? r->map->masters[i - nseeds]
                                                       : r->map->replicas[i - nseeds - r->map->nmasters];
        } else if (link->role == LINK_SUB) {
            if (!r->map || r->map->nmasters == 0)
                return; /* connected once the first map is in */
            link->at = r->map->masters[r->sub_index % r->map->nmasters];
        }
        redis_link_conn_connect(link);
        return;
    }
    if (is_sentinel(r) && link->role == LINK_DATA) {
        redis_link_sentinel_resolve(r);
        return;
    }
    if (is_sentinel(r) && link->role == LINK_SUB && !r->master_known)
        return;
    redis_link_conn_connect(link);
}

int redis_link_up(const struct redis_link *r)
{
    return r->state == REDIS_UP && (is_cluster(r) ? r->map != NULL : r->data.ctx != NULL);
}

int redis_link_ready(const struct redis_link *r)
{
    return redis_link_up(r) && r->pending < r->max_pending;
}

int redis_link_up_for(const struct redis_link *r, const char *key, size_t keylen)
{
    if (!is_cluster(r) || !redis_link_up(r))
        return redis_link_up(r);
    int m = redis_cluster_owner(r->map, key ? redis_cluster_keyslot(key, keylen) : 0);
    const struct redis_conn *n = m >= 0 ? &r->nodes[r->master_node[m]] : NULL;
    return n && n->ctx && n->state == REDIS_UP;
}

int redis_link_ready_for(const struct redis_link *r, const char *key, size_t keylen)
{
    return redis_link_up_for(r, key, keylen) && r->pending < r->max_pending;
}

void redis_link_reply_done(struct redis_link *r, const redisReply *rep, const char *command)
{
    r->pending--;
    if (r->closing)
        return;
    if (!rep)
        r->errors++; /* the connection went away: counted there */
    else if (rep->type == REDIS_REPLY_ERROR)
        redis_link_error_reply(r, command, rep);
}

/* --------------------------------------------------------------- health */

void redis_link_health(const struct redis_link *r, struct cache_health *out)
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
    if (!is_cluster(r)) {
        redis_target_name(&r->target, !is_sentinel(r) || r->master_known, out->endpoint, sizeof(out->endpoint));
        return;
    }
    /* cluster://: the masters in use, "HOST:PORT,HOST:PORT..." (as many as fit). */
    out->cluster = 1;
    out->cluster_refreshes = r->refreshes;
    out->cluster_redirects = r->redirects;
    out->cluster_redirects_ask = r->redirects_ask;
    out->cluster_tryagain_retries = r->tryagain_retries;
    out->cluster_slots_served = redis_link_slots_served(r);
    size_t used = 0;
    for (int i = 0; r->map && i < r->map->nmasters; i++) {
        char name[300];
        const struct redis_conn *n = &r->nodes[r->master_node[i]];
        out->cluster_masters++;
        out->cluster_masters_up += n->state == REDIS_UP;
        redis_addr_name(&r->map->masters[i], name, sizeof(name));
        if (used + strlen(name) + 2 < sizeof(out->endpoint))
            used += (size_t)snprintf(out->endpoint + used, sizeof(out->endpoint) - used, "%s%s", used ? "," : "", name);
    }
    out->cluster_slots = r->map ? r->map->covered : 0;
}

/* ------------------------------------------------------------ lifecycle */

static int conn_init(struct redis_link *r, struct redis_conn *link, enum redis_conn_role role)
{
    link->r = r;
    link->role = role;
    link->backoff_ms = r->reconnect_min_ms;
    link->connect_timer = evtimer_new(r->base, on_connect_timeout, link);
    link->reconnect_timer = evtimer_new(r->base, on_reconnect_timer, link);
    return link->connect_timer && link->reconnect_timer ? 0 : -1;
}

static void conn_close(struct redis_conn *link)
{
    if (!link->r)
        return; /* never initialised */
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

/* *out = a copy of `s` (NULL stays NULL). Returns 1, or 0 if out of memory. */
static int copy_secret(char **out, const char *s)
{
    *out = s ? strdup(s) : NULL;
    return !s || *out;
}

static void wipe_secret(char **s)
{
    if (*s) {
        explicit_bzero(*s, strlen(*s));
        free(*s);
        *s = NULL;
    }
}

int redis_link_init(struct redis_link *r, struct event_base *base, const struct cache_conf *conf,
                    const struct redis_link_hooks *hooks, char *err, size_t errlen)
{
    memset(r, 0, sizeof(*r));
    if (redis_url_parse(conf->redis_url, &r->target, err, errlen) < 0)
        return -1;
    r->base = base;
    r->hooks = *hooks;
    r->budget_ms = conf->redis_budget_ms;
    r->connect_timeout_ms = conf->redis_connect_timeout_ms;
    r->reconnect_min_ms = conf->redis_reconnect_min_ms;
    r->reconnect_max_ms = conf->redis_reconnect_max_ms;
    r->max_pending = conf->redis_max_pending;
    r->notify = conf->redis_notify;
    int copied = copy_secret(&r->user, conf->redis_user) & copy_secret(&r->password, conf->redis_password) &
                 copy_secret(&r->sentinel_user, conf->sentinel_user) &
                 copy_secret(&r->sentinel_password, conf->sentinel_password);
    int cluster_ok = 1;
    if (is_cluster(r)) {
        r->nodes = calloc(REDIS_CLUSTER_NODES_MAX, sizeof(*r->nodes));
        r->refresh_timer = evtimer_new(base, redis_link_on_refresh_timer, r);
        cluster_ok = r->nodes && r->refresh_timer && conn_init(r, &r->config, LINK_CONFIG) == 0;
        for (int i = 0; cluster_ok && i < REDIS_CLUSTER_NODES_MAX; i++)
            cluster_ok = conn_init(r, &r->nodes[i], LINK_NODE) == 0;
    }
    if (!copied || !cluster_ok || conn_init(r, &r->data, LINK_DATA) < 0 || conn_init(r, &r->sub, LINK_SUB) < 0 ||
        conn_init(r, &r->watch, LINK_WATCH) < 0 || redis_link_sentinel_init(r) < 0) {
        snprintf(err, errlen, "out of memory");
        redis_link_close(r);
        return -1;
    }
    struct redis_tls_conf tls = {.ca_file = conf->redis_tls_ca_file,
                                 .cert_file = conf->redis_tls_cert_file,
                                 .key_file = conf->redis_tls_key_file,
                                 .server_name = conf->redis_tls_server_name,
                                 .handshake_timeout_ms = conf->redis_connect_timeout_ms};
    if (conf->redis_tls && !(r->tls = redis_tls_new(base, &tls, "redis", err, errlen))) {
        redis_link_close(r);
        return -1;
    }
    tls.server_name = NULL; /* each sentinel is checked under its own name */
    if (conf->sentinel_tls && !(r->sentinel_tls = redis_tls_new(base, &tls, "sentinel", err, errlen))) {
        redis_link_close(r);
        return -1;
    }
    r->query.tls = r->sentinel_tls;
    return 0;
}

void redis_link_start(struct redis_link *r)
{
    if (is_cluster(r)) {
        r->state = REDIS_CONNECTING;
        redis_link_cluster_refresh(r, "start", 1); /* the nodes, then the subscriber, once the map is in */
        return;
    }
    redis_link_connect_now(&r->data); /* sentinel://: asks the sentinels, then connects the subscriber too */
    redis_link_connect_now(&r->sub);
    if (is_sentinel(r))
        redis_link_connect_now(&r->watch);
}

void redis_link_close(struct redis_link *r)
{
    r->closing = 1;
    redis_link_cancel_retries(r);
    conn_close(&r->data);
    conn_close(&r->sub);
    conn_close(&r->watch);
    if (r->nodes)
        for (int i = 0; i < REDIS_CLUSTER_NODES_MAX; i++)
            conn_close(&r->nodes[i]);
    conn_close(&r->config);
    if (r->refresh_timer)
        event_free(r->refresh_timer);
    free(r->nodes);
    free(r->map);
    r->nodes = NULL;
    r->map = NULL;
    r->refresh_timer = NULL;
    sentinel_query_close(&r->query);
    redis_tls_free(r->tls); /* after every connection through it */
    redis_tls_free(r->sentinel_tls);
    r->tls = r->sentinel_tls = NULL;
    wipe_secret(&r->user);
    wipe_secret(&r->password);
    wipe_secret(&r->sentinel_user);
    wipe_secret(&r->sentinel_password);
}
