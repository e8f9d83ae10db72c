/*
 * cache_types: the words cache.h and the Redis modules behind it share (the
 * configuration, what a lookup or a lease reports, the callbacks' types, the
 * health report), so that a backend includes them without cache.h and
 * nothing includes back up. The contracts (when a callback fires, what it
 * borrows) are the functions' own, in cache.h.
 */
#ifndef JOBGATE_CACHE_TYPES_H
#define JOBGATE_CACHE_TYPES_H

#include <stddef.h>
#include <stdint.h>

struct body;
struct classify_spec;

/* How a cache_wait learns that the answer it waits for was stored. */
enum cache_notify {
    CACHE_NOTIFY_AUTO = 0, /* pub/sub if a SUBSCRIBE succeeds on its own connection, else polling */
    CACHE_NOTIFY_PUBSUB,   /* pub/sub (polling only while the subscriber connection is down) */
    CACHE_NOTIFY_POLL,     /* polling only: every command then passes twemproxy (no PUBLISH/SUBSCRIBE) */
};

struct cache_conf {
    char *redis_url;         /* redis://HOST:PORT[/DB], sentinel://HOST:PORT[,HOST:PORT...]/MASTER[/DB], unix:PATH,
                              * or NULL for the embedded store */
    int64_t redis_budget_ms; /* longest a request waits for Redis before going upstream */
    int64_t redis_connect_timeout_ms;
    int64_t redis_reconnect_min_ms;
    int64_t redis_reconnect_max_ms;
    size_t redis_max_pending; /* commands in flight before Redis counts as unavailable */
    size_t memory_max_bytes;  /* bound of the embedded store */
    enum cache_notify redis_notify;
    int64_t redis_poll_interval_ms; /* a polling cache_wait's period; 0: 20 ms */
    /* Credentials, sent with AUTH on every (re)connect before anything else;
     * secrets (never logged, never in /healthz nor in an error). NULL: none. */
    char *redis_user;        /* an ACL user (Redis 6+); NULL: AUTH PASSWORD alone (the default user) */
    char *redis_password;    /* of the data and subscriber connections (the master, or twemproxy's redis_auth) */
    char *sentinel_user;     /* sentinel:// only: the sentinels' own ACL user */
    char *sentinel_password; /* sentinel:// only: the sentinels' own password (their requirepass) */
    char *entry_key;         /* secret: the HMAC-SHA256 key entries are signed with; NULL: unsigned */
    /* TLS (redis_tls.h): to Redis (the data and subscriber connections) and
     * to the sentinels; both use the same files. Paths resolved. */
    int redis_tls;
    int sentinel_tls;
    char *redis_tls_ca_file;   /* required when either is on */
    char *redis_tls_cert_file; /* a client certificate, with its key; or NULL */
    char *redis_tls_key_file;
    char *redis_tls_server_name; /* sent (SNI) and verified for Redis; NULL: the host connected to */
};

/* What an answer read from Redis must be to be served (entries are checked
 * on read: whoever can write to Redis must not decide what clients see).
 * Borrowed: it, and what it points to, stay valid until the call's callback
 * has run or the call was cancelled. A NULL expectation checks only the
 * entry's format (and its MAC when an entry key is set). */
struct cache_expect {
    const struct classify_spec *job; /* the rule's job spec: the body is classified again */
    const char *identity;            /* the job asked for (the identity parameter's value), or NULL */
};

enum cache_status {
    CACHE_HIT,         /* a fresh answer (or a terminal one) */
    CACHE_MISS,        /* nothing usable: go upstream */
    CACHE_UNAVAILABLE, /* store down, slow beyond the budget, or erring: go upstream (BYPASS) */
    CACHE_STALE,       /* only a copy past its TTL: go upstream, answer from it if upstream fails */
};

/* Called exactly once per cache_get (and per cache_wait not cancelled). `b`
 * is borrowed (valid during the call; body_ref it to keep it), non-NULL for
 * CACHE_HIT and CACHE_STALE only. May be called before cache_get returns
 * (in-process tier) or later, from the event loop. */
typedef void (*cache_get_cb)(enum cache_status status, struct body *b, void *arg);

enum cache_lease_status {
    CACHE_LEASE_ACQUIRED,    /* this process calls upstream, then cache_put or cache_lease_release */
    CACHE_LEASE_HELD,        /* another process (or cache) calls upstream, or just stored its answer:
                              * cache_wait for it */
    CACHE_LEASE_UNAVAILABLE, /* no Redis, Redis down, erring or over budget: call upstream yourself */
    CACHE_LEASE_NONE,        /* cache_get_lease only: not asked (a hit, or a Redis tier where the
                              * lookup cannot take it): ask with cache_lease if needed */
};

/* A shared grant (cache_grant_get): `granted` 1 with `ttl_ms` of its life
 * left, 0 when there is none, -1 when it could not be asked (no Redis, Redis
 * down or over its budget). */
typedef void (*cache_grant_cb)(int granted, int64_t ttl_ms, void *arg);

/* Called exactly once per cache_lease not cancelled; same rules as cache_get_cb. */
typedef void (*cache_lease_cb)(enum cache_lease_status status, void *arg);

/* Called exactly once per cache_get_lease: the lookup's outcome, as
 * cache_get_cb, and the lease's, as cache_lease_cb (or CACHE_LEASE_NONE). */
typedef void (*cache_lookup_cb)(enum cache_status status, struct body *b, enum cache_lease_status lease, void *arg);

/*
 * An admission run by the lookup's own script, in the same atomic step, when
 * it takes the key's lease (cache_get_lease), so that a miss makes one round
 * trip. Made only when the lookup goes to Redis with it (a hit in process
 * costs nothing): `make` (the caller's, with its `ctx`) fills in `lua`, a
 * Lua chunk defining `local function admit(KEYS, ARGV)` that returns four
 * integers, and its keys and arguments, and returns 0 (-1: no fold); once
 * the script is sent, `release` frees them (`owner` is the maker's).
 * `answered` and `reply` are written just before the lookup's callback,
 * and only when the script took the lease and ran it. Not folded where the
 * lookup is not one script on the server the keys live on (twemproxy, a
 * Redis refusing scripts, a Redis Cluster: `answered` stays 0).
 */
struct cache_fold {
    int (*make)(struct cache_fold *fold);
    void (*release)(struct cache_fold *fold);
    void *ctx;
    const char *lua;
    int nkeys, nargs;
    char *const *keys;
    char *const *args;
    void *owner;
    int answered;
    long long reply[4];
};

struct cache_health {
    const char *backend; /* "redis" or "memory" */
    const char *state;   /* "up", "connecting", "down" */
    int up;
    const char *coalescing; /* across processes: "pubsub", "poll", or "none" (no Redis, or Redis down) */
    uint64_t errors;        /* Redis command errors and error replies, corrupt entries */
    uint64_t rejected;      /* entries read from Redis and not served (format, MAC, job or state) */
    uint64_t timeouts;      /* lookups that ran past the budget */
    uint64_t reconnects;
    char last_error[96]; /* the last Redis error, e.g. "OOM on SET", "WRONGPASS on AUTH" ("" if none);
                          * never a secret nor data */
    char endpoint[300];  /* the Redis in use: HOST:PORT or unix:PATH; sentinel://: the master they named
                          * ("" until they have); "" without Redis. Never a password (none is accepted) */
    int cluster;         /* cluster://: the fields below */
    int cluster_masters; /* masters the slot map names */
    int cluster_masters_up;
    int cluster_slots; /* slots the map gives a master (16384: all) */
    uint64_t cluster_refreshes;
    uint64_t cluster_redirects;        /* MOVED and ASK followed */
    uint64_t cluster_redirects_ask;    /* of which ASK */
    uint64_t cluster_tryagain_retries; /* TRYAGAIN answers sent again */
    int cluster_slots_served;          /* slots whose master's connection is up */
    size_t entries;                    /* in the in-process tier */
    size_t bytes;
};

#endif
