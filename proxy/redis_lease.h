/*
 * redis_lease: coalescing upstream calls across processes that share Redis
 * (the contracts cache.h gives cache_lease, cache_wait, cache_cancel and
 * cache_lease_release, on the Redis side).
 *
 * The lease and the lookup, in one round trip (redis_lease_acquire). Where
 * Redis runs scripts for us (a direct, Sentinel or Cluster Redis: where
 * redis_link_may_publish, so never through twemproxy; in a cluster the
 * three keys share their hash tag, so one master runs it), one EVALSHA (EVAL
 * when Redis answers NOSCRIPT) of LOOKUP_LEASE_SCRIPT reads KEY:t and
 * KEY:p and, unless one of them is fresh, takes the lease (SET KEY:l TOKEN
 * NX PX lease_ms) in the same atomic step; it returns both entries and what
 * it did. The first one on each data connection is an EVAL, which loads
 * the script: a miss never pays a NOSCRIPT round trip but after a SCRIPT
 * FLUSH (or, in a cluster, on the first master that has not seen it yet).
 * Elsewhere (twemproxy, which runs one-key scripts only, or a Redis
 * that refuses scripts) the lease is one pipelined write: SET KEY:l TOKEN NX
 * PX lease_ms and MGET KEY:t KEY:p sent together. Either way the key's
 * answer is read after the lease was taken, so a fresh one means it was
 * stored meanwhile: the lease is given back and HELD answered (and HIT, for
 * a lookup). TOKEN is this process's random id and a counter, so that
 * tokens differ across processes and restarts.
 *
 * Folded (a lookup given a cache_fold, cache_types.h; not in a Redis
 * Cluster, where the fold's keys hash elsewhere): the script sent is the
 * fold's Lua text followed by LOOKUP_FOLD_TAIL, which runs the fold's
 * admission in the same atomic step when it takes the lease, and returns
 * its integers after the three; the caller's fold is filled in just before
 * its callback. Its first send on a connection is an EVAL, as above; a
 * resend (NOSCRIPT) goes unfolded, and a folded script Redis refuses with
 * anything but NOSCRIPT turns folding off for good (logged once): the
 * caller then asks its admission apart, as without a fold.
 *
 * A lease this process holds is released, by compare-and-delete (a script:
 * DEL only if it still holds our token, which in pub/sub mode also
 * publishes the key while KEY:w says a process waits for it, so that a
 * miss settles in one command and wakes nobody when nobody waits; a plain
 * DEL and a PUBLISH from the first time EVAL is refused), when its key is
 * settled: after its answer's SET was acknowledged, or when there is no
 * answer to store. A lease granted after
 * its caller was answered (its budget ran out: UNAVAILABLE; or it was
 * cancelled) is released at once: that caller goes upstream without it and
 * will neither store under it nor release it.
 *
 * Entries read are checked (cache_entry_pick) against the caller's
 * expectation; one that fails is no answer.
 *
 * Waits: each wait re-reads MGET KEY:t KEY:p KEY:l when told of a store
 * (redis_lease_wake, from the subscriber: pub/sub mode), and on a timer:
 * every poll interval in poll mode, five times slower while subscribed (only
 * to see a lease expire, which publishes nothing). In pub/sub mode a wait
 * first sets KEY:w (PX: its time limit), in the same write before its
 * first read, so that a release it does not see is one that sees KEY:w and
 * publishes (cachekey.h). A settle PUBLISHes the key on CACHEKEY_CHANNEL
 * when redis_link_may_publish: from the release script, or on its own when
 * an answer was stored under no lease of this process's. A fresh answer ends
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

#include "cache_entry.h"
#include "cache_types.h"
#include "keymap.h"

struct redis_link;
struct redis_op; /* a pending lease or wait */
TAILQ_HEAD(redis_op_list, redis_op);

struct redis_leases {
    struct redis_link *link;         /* borrowed: outlives this */
    struct cache_entry_codec *codec; /* borrowed: outlives this */
    int64_t poll_interval_ms;
    int eval_refused;     /* EVAL refused (scripting off): release leases with a plain DEL, lease by pipeline */
    char script_sha[41];  /* LOOKUP_LEASE_SCRIPT's SHA-1, for EVALSHA */
    int script_known;     /* the script ran on this data connection: EVALSHA (else EVAL, which loads it) */
    char release_sha[41]; /* RELEASE_SCRIPT's */
    int release_known;    /* as script_known, for RELEASE_SCRIPT */
    char *fold_script;    /* the folded script (a fold's admission, then the lookup), made on first use */
    const char *fold_lua; /* the admission it was made with (cache_fold.lua) */
    char fold_sha[41];
    int fold_known;       /* as script_known, for fold_script */
    int fold_refused;     /* Redis refused it: lookups go unfolded from now on */
    char instance_id[17]; /* random: lease tokens differ across processes and restarts */
    uint64_t lease_counter;
    struct keymap held;         /* leases acquired and not released yet, by key */
    struct redis_op_list waits; /* waits not finished */
};

/* poll_interval_ms <= 0: 20 ms. */
void redis_lease_init(struct redis_leases *ls, struct redis_link *link, struct cache_entry_codec *codec,
                      int64_t poll_interval_ms);

/* Does a lease go with the lookup in one script here (else: a pipeline)? */
int redis_lease_scripted(const struct redis_leases *ls);

/* Ask for the lease on `key` for `lease_ms`, within the link's budget, and
 * read the key's answer in the same round trip. `cb` gets the answer as a
 * lookup reports it (HIT, STALE, MISS; UNAVAILABLE on an error or past the
 * budget, and then lease UNAVAILABLE) and the lease: ACQUIRED, HELD
 * (another holds it, or a fresh answer is there: for a HIT, with
 * `lookup`, NONE instead), UNAVAILABLE (Redis erred; or the script found an
 * answer it took for fresh that did not pass the check: no lease was taken).
 * Returns NULL, without calling `cb`, when it cannot start (Redis down or
 * over max_pending, lease_ms <= 0, no memory). */
struct redis_op *redis_lease_acquire(struct redis_leases *ls, const char *key, const struct cache_expect *expect,
                                     int64_t lease_ms, int lookup, struct cache_fold *fold, cache_lookup_cb cb,
                                     void *arg);

/* Wait, at most timeout_ms, for another process's answer for `key`.
 * Returns NULL, without calling `cb`, when it cannot start. */
struct redis_op *redis_lease_wait(struct redis_leases *ls, const char *key, const struct cache_expect *expect,
                                  int64_t timeout_ms, cache_get_cb cb, void *arg);

/* Forget `op` (its callback not called); freed once hiredis is done with
 * it. A lease granted after the cancel is released at once. */
void redis_lease_cancel(struct redis_leases *ls, struct redis_op *op);

/* The key's upstream call is over: release its lease if this process holds
 * it, and PUBLISH the key (pub/sub mode) if `stored` or a lease was
 * released (by the release script, while KEY:w exists). A lease is forgotten even when Redis is down: it then ends at
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
