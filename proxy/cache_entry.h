/*
 * cache_entry: how one answer is kept in Redis, encoded, decoded and checked
 * here and nowhere else. A value is a one-line text head, a newline, then
 * the answer's body as it is, byte for byte:
 *
 *     JG1 <stored_at_ms> <terminal> <status> <expires_at_ms> <stale_until_ms>[ m=<mac>]\n<body>
 *
 *   stored_at_ms    wall clock (ms since the epoch) when upstream answered
 *   terminal        1: the job is over, the answer never changes; 0: it may
 *   status          200, or 404 for a remembered "no such job"
 *   expires_at_ms   end of its fresh life; 0: never
 *   stale_until_ms  end of its stale window (served only when upstream
 *                   fails); 0: none
 *   mac             with an entry key (cache.entry_key_file) only: 64 hex
 *                   digits, HMAC-SHA256 under that key of the Redis key the
 *                   value is stored under (its length in decimal, ':', the
 *                   key), the head without " m=...", '\n' and the body. So an
 *                   entry cannot be written, nor moved to another key or
 *                   slot, by a Redis client that lacks the key.
 *
 * so that a reader knows a fresh copy from a stale one, and how long the
 * in-process tier may keep it, without asking Redis for the key's TTL.
 * Values written by older versions, with only the first two or more fields
 * ("JG1 <stored_at_ms> <terminal>\n<body>"), are still read: status 200 and
 * no expiry for the fields they lack. Under which key a value lives
 * (KEY:t or KEY:p) is cachekey.h's business.
 *
 * Checked on read (cache_entry_pick): whoever can write to Redis must not
 * decide what a client sees. A value is served only if it decodes, carries a
 * good MAC when an entry key is set, its head agrees with its slot (terminal
 * under KEY:t, still changing under KEY:p), and, given the rule's job spec,
 * its body classifies again as a job in a state that agrees with the slot
 * and names the job asked for (a remembered 404 only under KEY:p). Anything
 * else is a miss, counted (`rejected`) and logged once per key: the keys
 * logged are remembered in a fixed table of hashes, so the memory is
 * bounded and a key may, rarely, be logged again.
 *
 * Single-threaded, like the cache: a codec belongs to one event loop.
 */
#ifndef JOBGATE_CACHE_ENTRY_H
#define JOBGATE_CACHE_ENTRY_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "body.h"
#include "cache_types.h"
#include "cachekey.h"

#define CACHE_ENTRY_LOGGED      1024 /* keys whose rejection is remembered as logged */
#define CACHE_ENTRY_KEY_MIN_LEN 16   /* an entry key shorter than this is refused */

struct cache_entry_codec {
    void *mac_ctx; /* an HMAC-SHA256 context keyed with the entry key (EVP_MAC_CTX), or NULL: unsigned */
    uint64_t rejected;
    uint64_t logged[CACHE_ENTRY_LOGGED];
};

/* Set `c` up, signing and checking entries with `entry_key` (NUL-terminated
 * text of at least CACHE_ENTRY_KEY_MIN_LEN bytes), or unsigned when it is
 * NULL. Returns 0, or -1 with a message (which never holds the key). */
int cache_entry_codec_init(struct cache_entry_codec *c, const char *entry_key, char *err, size_t errlen);
void cache_entry_codec_free(struct cache_entry_codec *c);

/* The value for `b` stored under KEY:slot (`key` the base key): a new
 * allocation of *len bytes (not NUL-terminated) the caller frees, or NULL if
 * out of memory. */
char *cache_entry_encode(const struct cache_entry_codec *c, const char *key, enum cachekey_slot slot,
                         const struct body *b, size_t *len);

/* The body a value holds: a new reference (the caller body_unrefs it), with
 * status, expires_at_ms and stale_until_ms set; NULL if `v` is not an entry
 * in this format, or out of memory. Neither the MAC nor the job is checked. */
struct body *cache_entry_decode(const char *v, size_t len);

/* The answer among the replies to a read of KEY:t and KEY:p (`key` the base
 * key; `elements[0]` KEY:t's, preferred, `elements[1]` KEY:p's), decoded and
 * checked against `expect` (may be NULL) as the header says: a new
 * reference, or NULL if neither holds one. Values that are not entries are
 * also counted in *corrupt; nil and other replies are skipped silently. */
struct body *cache_entry_pick(struct cache_entry_codec *c, const char *key, redisReply *const *elements,
                              const struct cache_expect *expect, uint64_t *corrupt);

#endif
