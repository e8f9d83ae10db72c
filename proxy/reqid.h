/*
 * reqid: the request id every answer carries (X-Request-Id), sent upstream
 * and written to the logs and the audit log.
 *
 * A client's own id is kept when reqid_acceptable says it is safe to echo
 * in headers and logs; otherwise reqid_new makes one: 128 bits from the
 * kernel's CSPRNG (getrandom, or OpenSSL's RAND_bytes if that fails) as 32
 * hex digits, so that one id tells nothing of the next. The bytes come from
 * a per-process pool refilled 256 ids at a time: no allocation, and a
 * syscall only every 256th call (it runs on every cache hit). A forked
 * worker never reuses its parent's pool. Event-loop thread only.
 */
#ifndef JOBGATE_REQID_H
#define JOBGATE_REQID_H

#include <stddef.h>

/* Longest id kept from a client, in bytes (a made one is 32). */
#define REQID_MAX 64

/* Write a new id into `buf` (at least 33 bytes; shorter: "" when len > 0). */
void reqid_new(char *buf, size_t len);

/* May the client's id be echoed: 1 to REQID_MAX bytes of letters, digits
 * and - _ . : only. */
int reqid_acceptable(const char *id);

#endif
