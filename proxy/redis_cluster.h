/*
 * redis_cluster: what a Redis Cluster client must know of the cluster, with
 * no I/O: the hash slot of a key, the slot map CLUSTER SLOTS answers, and
 * the redirections (MOVED, ASK) a node answers for a key it does not serve.
 * redis_link holds the connections; this module only computes. Pure
 * functions and plain structs; safe from any thread.
 *
 * Slots, as the Redis Cluster specification defines them: HASH_SLOT =
 * CRC16(key) mod 16384, CRC16 being the XMODEM variant (polynomial 0x1021,
 * initial value 0; CRC16("123456789") = 0x31C3). When the key holds a '{'
 * followed, later, by a '}' with at least one byte between them, only
 * those bytes (the hash tag, up to the first '}' after the first '{') are
 * hashed: "{user1000}.following" and "{user1000}.followers" share a slot.
 * cachekey.c puts every key of one job under one tag, so a script may
 * touch them together.
 *
 * The map: CLUSTER SLOTS (Redis 3.0 to 7.x) answers one entry per slot
 * range, [start, end, [ip, port, id, ...], replica...]. The masters named
 * are kept (up to REDIS_CLUSTER_NODES_MAX, in the order first seen), their
 * replicas too (only as addresses to ask the next time), and for each slot
 * the master serving it. An empty or "?" ip means "the node you asked": it
 * is replaced by `seed_host`.
 */
#ifndef JOBGATE_REDIS_CLUSTER_H
#define JOBGATE_REDIS_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "redis_url.h"

#define REDIS_CLUSTER_SLOTS     16384
#define REDIS_CLUSTER_NODES_MAX 64

struct redis_cluster_map {
    struct redis_addr masters[REDIS_CLUSTER_NODES_MAX];
    int nmasters;
    struct redis_addr replicas[REDIS_CLUSTER_NODES_MAX]; /* where to ask next, besides the masters */
    int nreplicas;
    uint8_t owner[REDIS_CLUSTER_SLOTS]; /* 1 + the master's index in masters[]; 0: no master serves it */
    int covered;                        /* slots that have a master */
};

/* CRC16/XMODEM of `len` bytes at `buf`. */
uint16_t redis_cluster_crc16(const char *buf, size_t len);

/* The hash slot (0..16383) of the key `len` bytes at `key`, hash tags
 * honoured. */
unsigned redis_cluster_keyslot(const char *key, size_t len);

/* Fill `m` (zeroed first) from a CLUSTER SLOTS reply. Returns 0, or -1 with
 * a message (not an array, an entry of the wrong shape, a slot out of
 * range, more than REDIS_CLUSTER_NODES_MAX masters). A map that leaves
 * slots without a master is not an error: `covered` says so. */
int redis_cluster_parse_slots(const redisReply *rep, const char *seed_host, struct redis_cluster_map *m, char *err,
                              size_t errlen);

/* The index in m->masters of the master serving `slot`, or -1. */
int redis_cluster_owner(const struct redis_cluster_map *m, unsigned slot);

/* Is `msg` (an error reply's text) a redirection, "MOVED SLOT HOST:PORT"
 * or "ASK SLOT HOST:PORT"? Returns 1 with *ask (1 for ASK), *slot and *a
 * filled, else 0. HOST may be an IPv6 address (the last ':' ends it). */
int redis_cluster_redirect(const char *msg, int *ask, unsigned *slot, struct redis_addr *a);

/* Is `a` named in `m` as a master? Returns its index, or -1. */
int redis_cluster_find_master(const struct redis_cluster_map *m, const struct redis_addr *a);

#endif
