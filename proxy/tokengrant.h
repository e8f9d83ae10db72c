/*
 * tokengrant: which client tokens the cloud accepted, for which project,
 * recently. In pass-through mode (the client's own X-Auth-Token goes
 * upstream) a cached answer may only be served to a token that upstream
 * accepted for that same project within the window; any other token goes
 * upstream, where the cloud decides. Without this, any string in
 * X-Auth-Token would read every cached job.
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

/* Hash `token` into `out` (what every other call takes): digest_sha256_hex,
 * whatever `t`. Returns 0 or -1. */
int tokengrant_hash(const struct tokengrant *t, const char *token, char out[TOKENGRANT_HASH_SIZE]);

/* Upstream just accepted the token with hash `hash` for `project` (now_ms: monotonic). */
void tokengrant_accepted(struct tokengrant *t, const char *hash, const char *project, int64_t now_ms);

/* Did upstream accept it for `project` within the window? */
int tokengrant_valid(struct tokengrant *t, const char *hash, const char *project, int64_t now_ms);

/* Upstream refused it (401/403): forget the pair at once. */
void tokengrant_refused(struct tokengrant *t, const char *hash, const char *project);

size_t tokengrant_count(const struct tokengrant *t);

void tokengrant_free(struct tokengrant *t);

#endif
