/*
 * cache_entry: how one answer is kept in Redis, encoded and decoded here
 * and nowhere else. A value is a one-line text head, a newline, then the
 * answer's body as it is, byte for byte:
 *
 *     JG1 <stored_at_ms> <terminal> <status> <expires_at_ms> <stale_until_ms>\n<body>
 *
 *   stored_at_ms    wall clock (ms since the epoch) when upstream answered
 *   terminal        1: the job is over, the answer never changes; 0: it may
 *   status          200, or 404 for a remembered "no such job"
 *   expires_at_ms   end of its fresh life; 0: never
 *   stale_until_ms  end of its stale window (served only when upstream
 *                   fails); 0: none
 *
 * so that a reader knows a fresh copy from a stale one, and how long the
 * in-process tier may keep it, without asking Redis for the key's TTL.
 * Values written by older versions, with only the first two or more fields
 * ("JG1 <stored_at_ms> <terminal>\n<body>"), are still read: status 200 and
 * no expiry for the fields they lack. Under which key a value lives
 * (KEY:t or KEY:p) is cachekey.h's business.
 */
#ifndef JOBGATE_CACHE_ENTRY_H
#define JOBGATE_CACHE_ENTRY_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "body.h"

/* The value for `b`: a new allocation of *len bytes (not NUL-terminated)
 * the caller frees, or NULL if out of memory. */
char *cache_entry_encode(const struct body *b, size_t *len);

/* The body a value holds: a new reference (the caller body_unrefs it), with
 * status, expires_at_ms and stale_until_ms set; NULL if `v` is not an entry
 * in this format, or out of memory. */
struct body *cache_entry_decode(const char *v, size_t len);

/* The answer among the `n` replies of one MGET (the first one preferred:
 * KEY:t before KEY:p), decoded: a new reference, or NULL if none holds one.
 * Strings that are not entries are skipped, logged and counted in
 * *corrupt; nil and other replies are skipped silently. */
struct body *cache_entry_pick(redisReply **elements, size_t n, uint64_t *corrupt);

#endif
