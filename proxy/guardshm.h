/*
 * guardshm: the guard state (guard.h's `struct guard_cell`) of every
 * upstream, shared by the worker processes of one jobgate through memory
 * mapped before they fork (mmap MAP_SHARED | MAP_ANONYMOUS in the parent),
 * so that `rate` and `burst` are the host's, not each worker's, and a 429 or
 * an open circuit that one worker sees holds them all at once.
 *
 * The region is fixed at start: `upstreams` slots (one per upstream base
 * URL, found by a 64-bit hash of it; a slot once taken stays taken) and
 * `projects` GCRA cells for the per-project level (open addressing by a hash
 * of the upstream and the project id over a window of GUARDSHM_PROBE_WINDOW
 * slots; when the window is full, the cell whose tat is oldest is taken
 * over: a tat in the past is a full bucket, so this loses nothing until
 * more projects are busy at once than the table holds, and then a project
 * may reach past its own rate, never past the upstream's).
 *
 * Locking: hits never come here (only a miss asks the guard). Each upstream
 * slot has a spinlock held for one pure step of guard.c (a few hundred
 * nanoseconds, no system call, no allocation); a GCRA step plus the breaker
 * and backoff fields is more than one word, which a lock-free CAS cannot
 * update at once. A waiter spins, yielding the CPU, and takes over the lock
 * of a holder that has died (its pid no longer exists): a worker killed
 * inside the step cannot stop the others.
 *
 * Times are CLOCK_MONOTONIC milliseconds, the same in every process of the
 * host. Any thread; any process forked after guardshm_new.
 */
#ifndef JOBGATE_GUARDSHM_H
#define JOBGATE_GUARDSHM_H

#include <stddef.h>
#include <stdint.h>

#include "guard.h"

#define GUARDSHM_DEFAULT_UPSTREAMS 64
#define GUARDSHM_PROBE_WINDOW      8

struct guardshm;

/* Map a region for `upstreams` and `projects` slots (0: the defaults: 64
 * upstreams, GUARD_DEFAULT_PROJECT_SLOTS * 4 projects). NULL with err set
 * when mmap fails. Call before forking the workers. */
struct guardshm *guardshm_new(size_t upstreams, size_t projects, char *err, size_t errlen);

/* Unmap (in each process that holds it; the memory goes with the last). */
void guardshm_free(struct guardshm *shm);

/* The slot of upstream `base_url`, taken on first use; -1 when every slot
 * is taken by other upstreams. */
int guardshm_slot(struct guardshm *shm, const char *base_url);

/* guard_cell_admit on slot `slot` and, with `project` (NULL: none), its
 * project's cell, under the slot's lock. */
struct guard_verdict guardshm_admit(struct guardshm *shm, int slot, const struct guard_conf *conf, const char *project,
                                    int64_t now_ms);

/* guard_cell_throttled, guard_cell_result under the slot's lock. */
void guardshm_throttled(struct guardshm *shm, int slot, const struct guard_conf *conf, int64_t now_ms,
                        int retry_after_s, int probe);
void guardshm_result(struct guardshm *shm, int slot, const struct guard_conf *conf, int64_t now_ms,
                     enum guard_outcome outcome, int probe);

/* A copy of the slot's cell (under its lock). */
void guardshm_read(struct guardshm *shm, int slot, struct guard_cell *out);

/* Lock steals (a holder died inside its step), for /metrics. */
uint64_t guardshm_steals(const struct guardshm *shm);

#endif
