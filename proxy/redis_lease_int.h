/*
 * redis_lease_int.h: what redis_lease.c (leases, releases, waits) and
 * redis_lease_script.c (the lookup-and-lease script, with a fold) share:
 * the op a lease or a wait is, and the steps that answer it. Not a
 * contract for anyone else: cache_redis.c and the rest use redis_lease.h.
 */
#ifndef JOBGATE_REDIS_LEASE_INT_H
#define JOBGATE_REDIS_LEASE_INT_H

#include <stdint.h>
#include <sys/queue.h>

#include <hiredis/hiredis.h>

#include "cache_types.h"

#define LEASE_TOKEN_MAX 48

struct body;
struct classify_spec;
struct event;
struct redis_leases;

/* A lease request or a wait. Like a lookup (cache_redis.c) it lives until hiredis has
 * called back for every command sent for it (replies_out), even once
 * finished (answered or cancelled). */
struct redis_op {
    struct redis_leases *ls;
    int is_wait;
    int lookup;               /* lease: its caller wants the answer too (cache_get_lease) */
    cache_lookup_cb lease_cb; /* lease */
    cache_get_cb get_cb;      /* wait */
    void *arg;
    struct event *timer;    /* lease: the budget; wait: the next check */
    struct event *deadline; /* wait: its time limit */
    int replies_out;
    int finished;            /* answered or cancelled: never calls back again */
    int cancelled;           /* lease: release it if it is granted after all */
    int check_again;         /* wait: told of a store while a check was out */
    int granted;             /* lease, pipelined: SET NX said OK */
    int resent;              /* lease, scripted: NOSCRIPT answered, sent again with EVAL */
    int sent_eval;           /* lease, scripted: the last send was EVAL (else EVALSHA) */
    int sent_fold;           /* lease, scripted: the last send was the folded script */
    struct cache_fold *fold; /* lease: the caller's (written only before its callback), or NULL */
    int64_t lease_ms;
    int64_t wait_ms;                 /* wait: its time limit (KEY:w lives as long) */
    int marked;                      /* wait: KEY:w set (pub/sub mode) */
    const struct classify_spec *job; /* the expectation (the caller's: read only before `finished`) */
    const char *identity;            /* NULL, or a copy after key[] */
    TAILQ_ENTRY(redis_op) wait_link; /* on ls->waits until finished */
    char token[LEASE_TOKEN_MAX];
    char key[];
};

/* The entry among KEY:t's and KEY:p's values (a reply's first two
 * elements), checked against what `op` expects; NULL: none (a reference). */
struct body *redis_op_pick(struct redis_op *op, redisReply *const *elements);

/* Is a scripting refusal the kind that lasts (scripts off, ACL, a proxy)? */
int redis_script_refusal(const redisReply *rep);

/* The lease of `op` was granted: 1 if it is kept for its caller, 0 if it
 * was released at once (the caller was answered already). */
int redis_op_granted(struct redis_op *op);

/* Answer a lease's caller from what its read found (`b`, NULL: none) and
 * whether the lease was taken; `not_granted` is the lease status when not. */
void redis_op_settled(struct redis_op *op, struct body *b, int granted, enum cache_lease_status not_granted);

/* A lease that failed (an error reply, or none): UNAVAILABLE. */
void redis_op_failed(struct redis_op *op, const redisReply *rep, const char *command);

/* Free `op` if it is finished and hiredis owes it no reply. */
void redis_op_maybe_free(struct redis_op *op);

/* redis_lease_script.c: send the lookup-and-lease script for `op` (with
 * `full`, EVAL), folded on its first send where a fold can run. Returns 1
 * if sent. */
int redis_lease_send_script(struct redis_op *op, int full);

/* The scripts' SHA-1s (init), and what a fold made (close). */
void redis_lease_scripts_init(struct redis_leases *ls);
void redis_lease_scripts_close(struct redis_leases *ls);

#endif
