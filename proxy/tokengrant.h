/*
 * tokengrant: which client tokens the cloud accepted, for which rule and
 * project, recently. In pass-through mode (the client's own X-Auth-Token
 * goes upstream) a cached answer may only be served to a token that upstream
 * accepted for that same rule and project within the window; any other
 * token goes upstream, where the cloud decides. Without this, any string in
 * X-Auth-Token would read every cached job. The rule is part of the grant
 * because each rule may have its own upstream (ECS, ELB ...): a token one
 * service accepted says nothing of what another would answer.
 *
 * What grants: a 200 about the very job asked for (the caller decides: the
 * answer it caches). A 404 does not: it says nothing of the job's project.
 *
 * Only a SHA-256 of each token is kept, never the token. The table is
 * bounded: at the bound the least recently confirmed entry is dropped (its
 * token's next request simply goes upstream again).
 */
#ifndef JOBGATE_TOKENGRANT_H
#define JOBGATE_TOKENGRANT_H

#include <stddef.h>
#include <stdint.h>

#include "digest.h"

/* Hex SHA-256 of a token, and its NUL. */
#define TOKENGRANT_HASH_SIZE DIGEST_SHA256_HEX_SIZE

struct tokengrant;

/* A table of at most `max_entries`, each valid `window_ms` after upstream accepted it. */
struct tokengrant *tokengrant_new(size_t max_entries, int64_t window_ms);

/* Hash `token` into `out` (what every other call takes): digest_sha256_hex.
 * `t` (or NULL) remembers the hashes of the last tokens it saw, so that a
 * token polled with again costs a compare, not a SHA-256. Returns 0 or -1. */
int tokengrant_hash(struct tokengrant *t, const char *token, char out[TOKENGRANT_HASH_SIZE]);

/* Upstream just accepted the token with hash `hash` for `rule` and `project` (now_ms: monotonic). */
void tokengrant_accepted(struct tokengrant *t, const char *hash, const char *rule, const char *project, int64_t now_ms);

/* Did upstream accept it for `rule` and `project` within the window? */
int tokengrant_valid(struct tokengrant *t, const char *hash, const char *rule, const char *project, int64_t now_ms);

/* Upstream refused it (401/403): forget the grant at once. */
void tokengrant_refused(struct tokengrant *t, const char *hash, const char *rule, const char *project);

/* The grant's name, "PREFIXHASH:RULE:PROJECT" (prefix "": this table's key).
 * Returns 0, or -1 when it does not fit `outlen`. */
int tokengrant_key(char *out, size_t outlen, const char *prefix, const char *hash, const char *rule,
                   const char *project);

/* The Redis key the fleet shares a grant under (cache_grant_get):
 * "KEY_PREFIX:grant:HASH:RULE:PROJECT". The empty rule name after the cache's
 * key prefix is one no rule can have, so no cache key is ever a grant's.
 * Returns 0, or -1 when it does not fit `outlen`. */
int tokengrant_shared_key(char *out, size_t outlen, const char *key_prefix, const char *hash, const char *rule,
                          const char *project);

/* Longest key tokengrant_key makes for a prefix of `prefix_len` bytes that is kept (a longer one is not). */
#define TOKENGRANT_KEY_MAX(prefix_len) ((prefix_len) + TOKENGRANT_HASH_SIZE + 1 + 256 + 1)

size_t tokengrant_count(const struct tokengrant *t);

void tokengrant_free(struct tokengrant *t);

#endif
