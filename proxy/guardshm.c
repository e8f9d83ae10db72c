#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "guardshm.h"

#define SPINS_BEFORE_CHECK 4096 /* then see whether the holder still lives */

struct shm_upstream {
    _Atomic uint64_t hash; /* of the base URL; 0: free */
    _Atomic int lock;      /* 0, or the pid of the holder */
    uint64_t rng;          /* jitter of the default 429 backoff */
    struct guard_cell cell;
};

struct shm_project {
    uint64_t hash; /* of upstream slot + project id; 0: free. Under the upstream's lock */
    int64_t tat_us;
};

struct guardshm {
    size_t size; /* of the mapping */
    size_t nupstreams;
    size_t nprojects;
    _Atomic uint64_t steals;
    struct shm_upstream *upstreams;
    struct shm_project *projects;
};

/* FNV-1a, never 0 (0 marks a free slot). */
static uint64_t hash_str(uint64_t h, const char *s)
{
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ULL;
    }
    return h ? h : 1;
}

struct guardshm *guardshm_new(size_t upstreams, size_t projects, char *err, size_t errlen)
{
    if (!upstreams)
        upstreams = GUARDSHM_DEFAULT_UPSTREAMS;
    if (!projects)
        projects = GUARD_DEFAULT_PROJECT_SLOTS * 4;
    if (projects < GUARDSHM_PROBE_WINDOW)
        projects = GUARDSHM_PROBE_WINDOW;
    size_t size =
        sizeof(struct guardshm) + upstreams * sizeof(struct shm_upstream) + projects * sizeof(struct shm_project);
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        snprintf(err, errlen, "guard shared memory (%zu bytes): %s", size, strerror(errno));
        return NULL;
    }
    /* Anonymous mappings are zero-filled: every slot free, every lock open. */
    struct guardshm *shm = p;
    shm->size = size;
    shm->nupstreams = upstreams;
    shm->nprojects = projects;
    shm->upstreams = (struct shm_upstream *)(shm + 1);
    shm->projects = (struct shm_project *)(shm->upstreams + upstreams);
    for (size_t i = 0; i < upstreams; i++)
        shm->upstreams[i].rng = 0x9e3779b97f4a7c15ULL * (i + 1);
    return shm;
}

void guardshm_free(struct guardshm *shm)
{
    if (shm)
        munmap(shm, shm->size);
}

int guardshm_slot(struct guardshm *shm, const char *base_url)
{
    uint64_t h = hash_str(0xcbf29ce484222325ULL, base_url);
    size_t start = (size_t)(h % shm->nupstreams);
    for (size_t i = 0; i < shm->nupstreams; i++) {
        struct shm_upstream *u = &shm->upstreams[(start + i) % shm->nupstreams];
        uint64_t seen = atomic_load_explicit(&u->hash, memory_order_acquire);
        if (seen == h)
            return (int)((start + i) % shm->nupstreams);
        if (seen == 0) {
            uint64_t expected = 0;
            if (atomic_compare_exchange_strong(&u->hash, &expected, h) || expected == h)
                return (int)((start + i) % shm->nupstreams);
        }
    }
    return -1;
}

static void slot_lock(struct guardshm *shm, struct shm_upstream *u)
{
    int me = (int)getpid();
    unsigned spins = 0;
    for (;;) {
        int holder = 0;
        if (atomic_compare_exchange_weak_explicit(&u->lock, &holder, me, memory_order_acquire, memory_order_relaxed))
            return;
        if (holder == 0)
            continue;
        if (++spins % SPINS_BEFORE_CHECK == 0 && kill(holder, 0) < 0 && errno == ESRCH) {
            /* The holder died inside its step: its cell may be half written,
             * which is a cell like any other (each field is a valid value). */
            if (atomic_compare_exchange_strong(&u->lock, &holder, me)) {
                atomic_fetch_add(&shm->steals, 1);
                return;
            }
        }
        sched_yield();
    }
}

static void slot_unlock(struct shm_upstream *u)
{
    atomic_store_explicit(&u->lock, 0, memory_order_release);
}

/* The project's cell (under the slot's lock). */
static int64_t *project_tat(struct guardshm *shm, int slot, const char *project, int64_t now_ms)
{
    uint64_t h = hash_str(0xcbf29ce484222325ULL ^ ((uint64_t)slot * 0x9e3779b97f4a7c15ULL), project);
    size_t start = (size_t)(h % shm->nprojects);
    struct shm_project *oldest = NULL;
    for (size_t i = 0; i < GUARDSHM_PROBE_WINDOW; i++) {
        struct shm_project *p = &shm->projects[(start + i) % shm->nprojects];
        if (p->hash == h)
            return &p->tat_us;
        if (!oldest || p->hash == 0 || (oldest->hash != 0 && p->tat_us < oldest->tat_us))
            oldest = p;
    }
    (void)now_ms;
    oldest->hash = h;
    oldest->tat_us = 0; /* a full bucket */
    return &oldest->tat_us;
}

struct guard_verdict guardshm_admit(struct guardshm *shm, int slot, const struct guard_conf *conf, const char *project,
                                    int64_t now_ms)
{
    struct shm_upstream *u = &shm->upstreams[slot];
    slot_lock(shm, u);
    int64_t *ptat = conf->project_rate > 0 && project && *project ? project_tat(shm, slot, project, now_ms) : NULL;
    struct guard_verdict v = guard_cell_admit(conf, &u->cell, ptat, now_ms, 1.0);
    slot_unlock(u);
    return v;
}

void guardshm_throttled(struct guardshm *shm, int slot, const struct guard_conf *conf, int64_t now_ms,
                        int retry_after_s, int probe)
{
    struct shm_upstream *u = &shm->upstreams[slot];
    slot_lock(shm, u);
    u->rng = u->rng * 6364136223846793005ULL + 1442695040888963407ULL;
    guard_cell_throttled(conf, &u->cell, now_ms, retry_after_s, u->rng >> 11, probe);
    slot_unlock(u);
}

void guardshm_result(struct guardshm *shm, int slot, const struct guard_conf *conf, int64_t now_ms,
                     enum guard_outcome outcome, int probe)
{
    struct shm_upstream *u = &shm->upstreams[slot];
    slot_lock(shm, u);
    guard_cell_result(conf, &u->cell, now_ms, outcome, probe);
    slot_unlock(u);
}

void guardshm_read(struct guardshm *shm, int slot, struct guard_cell *out)
{
    struct shm_upstream *u = &shm->upstreams[slot];
    slot_lock(shm, u);
    *out = u->cell;
    slot_unlock(u);
}

uint64_t guardshm_steals(const struct guardshm *shm)
{
    return atomic_load(&((struct guardshm *)shm)->steals);
}
