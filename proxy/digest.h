/*
 * digest: SHA-256 and HMAC-SHA256 (OpenSSL), for request signing (aksk),
 * client key hashes (clientkeys) and cloud token hashes (tokengrant); and
 * SHA-1, only for what Redis names a Lua script by (EVALSHA).
 *
 * The SHA-256 implementation is fetched from OpenSSL once per process, on
 * first use, and kept until exit: an implicit fetch on every call (what
 * EVP_Digest does with EVP_sha256()) costs as much as hashing a token. A
 * worker process forked after the first use inherits it.
 *
 * Every function may be called from any thread, returns 0, or -1 when
 * OpenSSL fails (no memory, no SHA-256 provider), and leaves no copy of its
 * input or of an intermediate digest behind on its stack.
 */
#ifndef JOBGATE_DIGEST_H
#define JOBGATE_DIGEST_H

#include <stddef.h>

#define DIGEST_SHA256_LEN      32 /* bytes */
#define DIGEST_SHA256_HEX_SIZE 65 /* 64 lower-case hex digits and a NUL */

/* SHA-256 of the `len` bytes at `data` (NULL if len is 0) into `out`. */
int digest_sha256(const void *data, size_t len, unsigned char out[DIGEST_SHA256_LEN]);

/* The same, written as lower-case hex; `out` is "" on failure. */
int digest_sha256_hex(const void *data, size_t len, char out[DIGEST_SHA256_HEX_SIZE]);

#define DIGEST_SCRIPT_SHA_SIZE 41 /* 40 lower-case hex digits and a NUL */

/* The SHA-1 of the Lua script `text`, in hex, as EVALSHA names it (Redis's
 * choice, no security rests on it); `out` is "" on failure, which Redis
 * answers NOSCRIPT and the caller sends the text. */
int digest_script_sha(const char *text, char out[DIGEST_SCRIPT_SHA_SIZE]);

/* HMAC-SHA256 (RFC 2104) of the `len` bytes at `data` under the `keylen`
 * bytes at `key`, into `out`. */
int digest_hmac_sha256(const void *key, size_t keylen, const void *data, size_t len,
                       unsigned char out[DIGEST_SHA256_LEN]);

#endif
