/*
 * cachekey: the one place that says what a cache key is. Pure functions, no
 * allocation; safe from any thread.
 *
 * The base key of a job answer is
 *
 *     PREFIX{RULE:PARAM1:PARAM2...}
 *
 * PREFIX is cache.key_prefix as configured ("jobgate:" by default; it
 * carries its own separator: nothing is put between it and the '{'), RULE
 * the rule's name, then each of the rule's route parameters in template
 * order after a ':', the whole in braces, e.g. "jobgate:{ecs:0123abcd:4567ef}"
 * for {project_id} and {job_id}. The braces are a Redis Cluster hash tag:
 * a key's slot is the hash of what the first '{' and the next '}' enclose,
 * so every key of one job (below) lands in one slot, on one master, where
 * the lookup-and-lease script (redis_lease.c) may touch them together,
 * while different jobs spread over the masters. Elsewhere (one Redis,
 * Sentinel, twemproxy without hash_tag) the braces are just bytes. (Before
 * the tag, keys had no braces: an upgrade misses each entry once.) Only validated route parameters reach it, never
 * anything else a client sends. The in-process tier is keyed by the base key alone; in Redis one base key names up to
 * three entries, told apart by a suffix (cachekey_suffix):
 *
 *     KEY:t   a terminal answer (no expiry, or the rule's terminal TTL)
 *     KEY:p   a still-changing answer, or a remembered 404 (PX: TTL + stale window)
 *     KEY:l   the lease of the process calling upstream for KEY (its token, PX)
 *     KEY:w   "1" while a process waits in pub/sub mode for KEY's lease to end
 *             (PX: its wait), set before it first reads the lease
 *
 * and every process listens on one channel, CACHEKEY_CHANNEL, where the
 * release of KEY's lease (after its store, or with none) publishes the base
 * key while KEY:w exists (the channel carries no prefix): a miss nobody
 * waits for wakes no process. Since a waiter sets KEY:w before it reads
 * KEY:l, a release it does not see is one that sees KEY:w.
 *
 * One more kind of key is not a job's: the region IAM gave a project
 * (iamregion_redis.h), shared by every process on the Redis,
 *
 *     PREFIX{iam:project:PROJECT_ID}   the region, or "!unknown" (PX: the
 *                                      refresh interval, or the unknown TTL)
 *
 * with a hash tag of its own per project. It cannot be taken for a job's:
 * a job's keys in Redis always end in a slot suffix after the '}', this one
 * never does.
 */
#ifndef JOBGATE_CACHEKEY_H
#define JOBGATE_CACHEKEY_H

#include <stddef.h>

/* The pub/sub channel of stores (payload: the base key). */
#define CACHEKEY_CHANNEL "jobgate:answers"

/* What follows the '{' of a project's region key (above). */
#define CACHEKEY_IAM_PROJECT "iam:project:"

enum cachekey_slot {
    CACHEKEY_TERMINAL, /* ":t" */
    CACHEKEY_PENDING,  /* ":p" */
    CACHEKEY_LEASE,    /* ":l" */
    CACHEKEY_WAITERS,  /* ":w" */
    CACHEKEY_NSLOTS
};

/* Write the base key of `rule` with `nparams` parameter values to `out`
 * (NUL-terminated). Returns 0, or -1 when it does not fit: every piece needs
 * its length plus three bytes free (its separator or the '{', then the '}'
 * and the NUL), so a key may be refused one byte short of filling `out`
 * exactly. `out` is then left partly written. */
int cachekey_format(char *out, size_t outlen, const char *prefix, const char *rule, const char *const *params,
                    size_t nparams);

/* The suffix a base key takes in Redis for `slot`: ":t", ":p", ":l" or ":w". */
const char *cachekey_suffix(enum cachekey_slot slot);

#endif
