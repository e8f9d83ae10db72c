/*
 * redis_lease: coalescing upstream calls across processes that share Redis
 * (the contracts cache.h gives cache_lease, cache_wait, cache_cancel and
 * cache_lease_release, on the Redis side).
 *
 * The lease: SET KEY:l TOKEN NX PX lease_ms, TOKEN being this process's
 * random id and a counter, so that tokens differ across processes and
 * restarts. Granted, the key's answer is re-read (MGET KEY:t KEY:p): a fresh
 * one means it was stored meanwhile, and the lease is given back and HELD
 * answered. A lease this process holds is released, by compare-and-delete
 * (EVAL: DEL only if it still holds our token; a plain DEL from the first
 * time EVAL is refused), when its key is settled: after its answer's SET was
 * acknowledged, or when there is no answer to store.
 *
 * Waits: each wait re-reads MGET KEY:t KEY:p KEY:l when told of a store
 * (redis_lease_wake, from the subscriber: pub/sub mode), and on a timer:
 * every poll interval in poll mode, five times slower while subscribed (only
 * to see a lease expire, which publishes nothing). A settle PUBLISHes the
 * key on CACHEKEY_CHANNEL when redis_link_may_publish. A fresh answer ends
 * the wait with HIT; no lease and no fresh answer with MISS (the holder
 * failed or died), as does the wait's deadline; a Redis error or the data
 * connection's loss with UNAVAILABLE.
 *
 * Callbacks: each acquire or wait not cancelled calls its callback exactly
 * once, on the event loop's thread, never before redis_lease_acquire or
 * redis_lease_wait has returned; the body given to a wait's callback is
 * borrowed. A `struct redis_op` lives until it has called back (or was
 * cancelled) and hiredis has called back for every command sent for it:
 * the caller's handle is valid until its callback or redis_lease_cancel.
 */
#ifndef JOBGATE_REDIS_LEASE_H
#define JOBGATE_REDIS_LEASE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include "cache_types.h"
#include "keymap.h"

struct redis_link;
struct redis_op; /* a pending lease or wait */
TAILQ_HEAD(redis_op_list, redis_op);

struct redis_leases {
    struct redis_link *link; /* borrowed: outlives this */
    int64_t poll_interval_ms;
    int eval_refused;     /* EVAL refused (scripting off): release leases with a plain DEL */
    char instance_id[17]; /* random: lease tokens differ across processes and restarts */
    uint64_t lease_counter;
    struct keymap held;         /* leases acquired and not released yet, by key */
    struct redis_op_list waits; /* waits not finished */
};

/* poll_interval_ms <= 0: 20 ms. */
void redis_lease_init(struct redis_leases *ls, struct redis_link *link, int64_t poll_interval_ms);

/* Ask for the lease on `key` for `lease_ms`, within the link's budget.
 * Returns NULL, without calling `cb`, when it cannot start (Redis down or
 * over max_pending, lease_ms <= 0, no memory). */
struct redis_op *redis_lease_acquire(struct redis_leases *ls, const char *key, int64_t lease_ms, cache_lease_cb cb,
                                     void *arg);

/* Wait, at most timeout_ms, for another process's answer for `key`.
 * Returns NULL, without calling `cb`, when it cannot start. */
struct redis_op *redis_lease_wait(struct redis_leases *ls, const char *key, int64_t timeout_ms, cache_get_cb cb,
                                  void *arg);

/* Forget `op` (its callback not called); freed once hiredis is done with
 * it. A lease granted after the cancel is released at once. */
void redis_lease_cancel(struct redis_leases *ls, struct redis_op *op);

/* The key's upstream call is over: release its lease if this process holds
 * it, and PUBLISH the key (pub/sub mode) if `stored` or a lease was
 * released. A lease is forgotten even when Redis is down: it then ends at
 * its expiry. */
void redis_lease_settle(struct redis_leases *ls, const char *key, int stored);

/* A store of `key` (`len` bytes) was published: its waits re-read now. */
void redis_lease_wake(struct redis_leases *ls, const char *key, size_t len);

/* The data connection is gone: every wait answers UNAVAILABLE. */
void redis_lease_fail_waits(struct redis_leases *ls);

/* Cancel every wait and forget every lease held (not released: they end at
 * their expiry). Call before redis_link_close, which then frees the ops
 * hiredis still owes a reply. */
void redis_lease_close(struct redis_leases *ls);

#endif
