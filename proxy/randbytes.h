/*
 * randbytes: random bytes from the kernel (getrandom(2)), for what must
 * differ across processes, workers and restarts: request ids, the Redis
 * cache's lease-token prefix. The one place jobgate asks for randomness.
 *
 * Thread-safe and fork-safe (no state in the process). Blocks only while the
 * kernel's pool is not yet initialised, early in boot.
 */
#ifndef JOBGATE_RANDBYTES_H
#define JOBGATE_RANDBYTES_H

#include <stddef.h>

/* Fill the `len` bytes at `buf` with random bytes. Returns 0, or -1 with
 * errno set (no getrandom(2): a kernel older than 3.17); the caller then
 * falls back to something merely unique (a clock, the pid). */
int randbytes_fill(void *buf, size_t len);

#endif
