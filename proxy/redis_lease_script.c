/*
 * redis_lease_script: the lookup and the lease in one script (redis_lease.h
 * says when it is used), and the guard's admission folded into it
 * (cache_fold): the scripts, their SHA-1s, sending them (EVALSHA, EVAL on
 * a new connection or after NOSCRIPT) and reading their replies into the
 * op's answer.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "body.h"
#include "cachekey.h"
#include "clock.h"
#include "digest.h"
#include "log.h"
#include "redis_lease.h"
#include "redis_lease_int.h"
#include "redis_link.h"

/*
 * The lookup and the lease in one step. KEYS: KEY:t, KEY:p, KEY:l; ARGV:
 * now (ms, the caller's wall clock, which wrote the entries' expiry), the
 * token, lease_ms. Returns {KEY:t's value, KEY:p's value, what it did}: 0
 * when either value is fresh (no lease asked), 1 lease taken, 2 lease held
 * by another. A value whose head it cannot read counts as fresh: the caller
 * judges it (and then asks for the lease apart if it must).
 */
#define LOOKUP_HEAD                                                      \
    "local function fresh(v)\n"                                          \
    "  if not v then return false end\n"                                 \
    "  local e = string.match(v, '^JG1 %-?%d+ %d+ %d+ (%d+)')\n"         \
    "  return e == nil or e == '0' or tonumber(e) > tonumber(ARGV[1])\n" \
    "end\n"                                                              \
    "local v = redis.call('MGET', KEYS[1], KEYS[2])\n"                   \
    "local t, p = v[1], v[2]\n"                                          \
    "if fresh(t) or fresh(p) then return {t, p, 0} end\n"

#define LOOKUP_LEASE_SCRIPT                                                                   \
    LOOKUP_HEAD                                                                               \
    "if redis.call('SET', KEYS[3], ARGV[2], 'NX', 'PX', ARGV[3]) then return {t, p, 1} end\n" \
    "return {t, p, 2}\n"

/*
 * Folded (cache_fold): the same, where a lease taken also runs the fold's
 * `admit` function (its text goes before this) on KEYS and ARGV past the
 * lookup's three, and returns {t, p, 1, its four integers}.
 */
#define LOOKUP_FOLD_TAIL                                                 \
    LOOKUP_HEAD                                                          \
    "if redis.call('SET', KEYS[3], ARGV[2], 'NX', 'PX', ARGV[3]) then\n" \
    "  local k, a = {}, {}\n"                                            \
    "  for i = 4, #KEYS do k[i - 3] = KEYS[i] end\n"                     \
    "  for i = 4, #ARGV do a[i - 3] = ARGV[i] end\n"                     \
    "  local v = admit(k, a)\n"                                          \
    "  return {t, p, 1, v[1], v[2], v[3], v[4]}\n"                       \
    "end\n"                                                              \
    "return {t, p, 2}\n"

#define FOLD_REPLY 4                     /* integers a fold's admission returns */
#define ARGV_MAX   (3 + 3 + 3 + 16 + 16) /* EVALSHA SHA N, 3 keys, 3 arguments, the fold's */

enum script_did { SCRIPT_FRESH = 0, SCRIPT_TOOK = 1, SCRIPT_HELD = 2 };

/* Is `rep` the lookup script's reply: {KEY:t, KEY:p, what it did}, and
 * after a folded lease its admission's integers? */
static int script_reply_ok(const redisReply *rep)
{
    if (!rep || rep->type != REDIS_REPLY_ARRAY || (rep->elements != 3 && rep->elements != 3 + FOLD_REPLY))
        return 0;
    for (size_t i = 2; i < rep->elements; i++)
        if (rep->element[i]->type != REDIS_REPLY_INTEGER)
            return 0;
    return 1;
}

/* The folded script was refused (an error but NOSCRIPT): fold no more, and
 * send `op` again unfolded. Returns 1 if it went. */
static int unfold(struct redis_op *op, const redisReply *rep)
{
    struct redis_leases *ls = op->ls;
    if (!ls->fold_refused)
        log_warn("redis: the lookup with the guard's admission refused (%.100s); they go apart from now on", rep->str);
    ls->fold_refused = 1;
    return redis_lease_send_script(op, 0);
}

/* The script's reply: {KEY:t, KEY:p, what it did[, the fold's admission]}. */
static void on_script_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    struct redis_op *op = privdata;
    struct redis_leases *ls = op->ls;
    struct redis_link *r = ls->link;
    redisReply *rep = reply;
    r->pending--;
    op->replies_out--;
    if (r->closing) { /* cache_free: no callback from here on */
        op->finished = 1;
        redis_op_maybe_free(op);
        return;
    }
    if (rep && rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, "NOSCRIPT", 8) == 0 && !op->resent) {
        op->resent = 1; /* a restarted or new master: load it with EVAL, EVALSHA works again after */
        if (op->sent_fold)
            ls->fold_known = 0;
        if (redis_lease_send_script(op, 1))
            return;
    }
    if (rep && rep->type == REDIS_REPLY_ERROR && op->sent_fold && strncmp(rep->str, "NOSCRIPT", 8) != 0 &&
        unfold(op, rep))
        return;
    if (!script_reply_ok(rep)) {
        if (rep && rep->type == REDIS_REPLY_ERROR && redis_script_refusal(rep) && !ls->eval_refused) {
            log_warn("redis: scripts refused (%.100s); leases are taken by pipeline from now on", rep->str);
            ls->eval_refused = 1;
        }
        redis_op_failed(op, rep, op->sent_eval ? "EVAL" : "EVALSHA");
        redis_op_maybe_free(op);
        return;
    }
    if (op->sent_fold)
        ls->fold_known = 1;
    else
        ls->script_known = 1;
    long long did = rep->element[2]->integer;
    if (did == SCRIPT_TOOK && !redis_op_granted(op)) {
        redis_op_maybe_free(op);
        return;
    }
    if (op->finished) { /* cancelled or over budget, and nothing was granted */
        redis_op_maybe_free(op);
        return;
    }
    if (did == SCRIPT_TOOK && rep->elements == 3 + FOLD_REPLY && op->fold) {
        op->fold->answered = 1; /* the caller is called back below: its fold is still there */
        for (size_t i = 0; i < FOLD_REPLY; i++)
            op->fold->reply[i] = rep->element[3 + i]->integer;
    }
    struct body *b = redis_op_pick(op, rep->element);
    /* SCRIPT_FRESH with no fresh answer here: the script took an entry for
     * fresh that failed the check (or one it could not read). No lease was
     * taken, and none will be while it stays: go upstream without one. */
    redis_op_settled(op, b, did == SCRIPT_TOOK, did == SCRIPT_HELD ? CACHE_LEASE_HELD : CACHE_LEASE_UNAVAILABLE);
    body_unref(b);
    redis_op_maybe_free(op);
}

/* The folded script's text and SHA-1 for `lua`, made on first use. Returns 0, or -1 out of memory. */
static int fold_script(struct redis_leases *ls, const char *lua)
{
    if (ls->fold_script && ls->fold_lua == lua)
        return 0;
    size_t a = strlen(lua), b = strlen(LOOKUP_FOLD_TAIL);
    char *text = malloc(a + b + 1);
    if (!text)
        return -1;
    memcpy(text, lua, a);
    memcpy(text + a, LOOKUP_FOLD_TAIL, b + 1);
    free(ls->fold_script);
    ls->fold_script = text;
    ls->fold_lua = lua;
    ls->fold_known = 0;
    digest_script_sha(text, ls->fold_sha);
    return 0;
}

/* A command's arguments, built one by one (the strings are borrowed). */
struct argv_list {
    int argc;
    const char *argv[ARGV_MAX];
    size_t argvlen[ARGV_MAX];
};

static void argv_add(struct argv_list *a, const char *s)
{
    a->argv[a->argc] = s;
    a->argvlen[a->argc++] = strlen(s);
}

/* Send the folded script for `op` (EVALSHA, or with `full` EVAL): the
 * lookup's keys and arguments, then the fold's. Returns 1 if sent, 0 if
 * not, -1 when there is no fold to send (send it unfolded). */
static int send_fold(struct redis_op *op, int full)
{
    struct redis_leases *ls = op->ls;
    struct redis_link *r = ls->link;
    struct cache_fold *fold = op->fold;
    if (fold->make(fold) < 0)
        return -1;
    size_t klen = strlen(op->key), kmax = klen + 8;
    char *keys = NULL;
    if (fold->nkeys > 16 || fold->nargs > 16 || fold_script(ls, fold->lua) < 0 || !(keys = malloc(3 * kmax))) {
        fold->release(fold);
        return -1;
    }
    full = full || !ls->fold_known;
    char nkeys[16], now[24], lease_ms[24];
    const enum cachekey_slot slot[3] = {CACHEKEY_TERMINAL, CACHEKEY_PENDING, CACHEKEY_LEASE};
    struct argv_list a = {0};
    argv_add(&a, full ? "EVAL" : "EVALSHA");
    argv_add(&a, full ? ls->fold_script : ls->fold_sha);
    snprintf(nkeys, sizeof(nkeys), "%d", 3 + fold->nkeys);
    argv_add(&a, nkeys);
    for (int i = 0; i < 3; i++) {
        snprintf(keys + i * kmax, kmax, "%s%s", op->key, cachekey_suffix(slot[i]));
        argv_add(&a, keys + i * kmax);
    }
    for (int i = 0; i < fold->nkeys; i++)
        argv_add(&a, fold->keys[i]);
    snprintf(now, sizeof(now), "%" PRId64, clock_wall_ms());
    snprintf(lease_ms, sizeof(lease_ms), "%" PRId64, op->lease_ms);
    argv_add(&a, now);
    argv_add(&a, op->token);
    argv_add(&a, lease_ms);
    for (int i = 0; i < fold->nargs; i++)
        argv_add(&a, fold->args[i]);
    op->sent_eval = full;
    op->sent_fold = 1;
    int rc = redis_link_send_argv(r, op->key, klen, on_script_reply, op, a.argc, a.argv, a.argvlen);
    fold->release(fold); /* hiredis has the command in its buffer */
    free(keys);
    if (rc != REDIS_OK)
        return 0;
    r->pending++;
    op->replies_out++;
    return 1;
}

/* Send the lookup-and-lease script: EVALSHA, or with `full` EVAL; folded
 * (with the caller's admission) on its first send where a fold can run. A
 * resend (after NOSCRIPT, or a refused fold) goes unfolded: the fold's
 * keys were the caller's to free once the lookup was asked. Returns 1 if
 * sent. */
int redis_lease_send_script(struct redis_op *op, int full)
{
    struct redis_leases *ls = op->ls;
    struct redis_link *r = ls->link;
    const char *t = cachekey_suffix(CACHEKEY_TERMINAL), *p = cachekey_suffix(CACHEKEY_PENDING),
               *l = cachekey_suffix(CACHEKEY_LEASE);
    if (!redis_link_ready_for(r, op->key, strlen(op->key)))
        return 0;
    int first = !op->sent_fold && !op->resent;
    if (first && op->fold && !ls->fold_refused && !redis_link_is_cluster(r)) {
        int sent = send_fold(op, full);
        if (sent >= 0)
            return sent;
    }
    op->sent_fold = 0;
    int64_t now = clock_wall_ms();
    full = full || !ls->script_known;
    op->sent_eval = full;
    if (redis_link_send(r, op->key, on_script_reply, op, "%s %s 3 %s%s %s%s %s%s %" PRId64 " %s %" PRId64,
                        full ? "EVAL" : "EVALSHA", full ? LOOKUP_LEASE_SCRIPT : ls->script_sha, op->key, t, op->key, p,
                        op->key, l, now, op->token, op->lease_ms) != REDIS_OK)
        return 0;
    r->pending++;
    op->replies_out++;
    return 1;
}

void redis_lease_scripts_init(struct redis_leases *ls)
{
    digest_script_sha(LOOKUP_LEASE_SCRIPT, ls->script_sha);
}

void redis_lease_scripts_close(struct redis_leases *ls)
{
    free(ls->fold_script);
    ls->fold_script = NULL;
}
