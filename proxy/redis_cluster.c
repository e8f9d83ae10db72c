#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redis_cluster.h"

uint16_t redis_cluster_crc16(const char *buf, size_t len)
{
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)((unsigned char)buf[i] << 8);
        for (int bit = 0; bit < 8; bit++)
            crc = crc & 0x8000 ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
    }
    return crc;
}

unsigned redis_cluster_keyslot(const char *key, size_t len)
{
    const char *open = memchr(key, '{', len);
    if (open) {
        size_t from = (size_t)(open - key) + 1;
        const char *close = memchr(open + 1, '}', len - from);
        if (close && close > open + 1) /* "{}" is no tag: the whole key is hashed */
            return redis_cluster_crc16(open + 1, (size_t)(close - open - 1)) & (REDIS_CLUSTER_SLOTS - 1);
    }
    return redis_cluster_crc16(key, len) & (REDIS_CLUSTER_SLOTS - 1);
}

int redis_cluster_find_master(const struct redis_cluster_map *m, const struct redis_addr *a)
{
    for (int i = 0; i < m->nmasters; i++)
        if (m->masters[i].port == a->port && strcmp(m->masters[i].host, a->host) == 0)
            return i;
    return -1;
}

/* A node's [ip, port, ...] as an address; "" or "?" is the seed. */
static int node_addr(const redisReply *n, const char *seed_host, struct redis_addr *a)
{
    if (n->type != REDIS_REPLY_ARRAY || n->elements < 2 || n->element[0]->type != REDIS_REPLY_STRING ||
        n->element[1]->type != REDIS_REPLY_INTEGER)
        return -1;
    const char *host = n->element[0]->str;
    if (!*host || strcmp(host, "?") == 0)
        host = seed_host;
    if (strlen(host) >= sizeof(a->host) || n->element[1]->integer < 1 || n->element[1]->integer > 65535)
        return -1;
    snprintf(a->host, sizeof(a->host), "%s", host);
    a->port = (int)n->element[1]->integer;
    return 0;
}

int redis_cluster_parse_slots(const redisReply *rep, const char *seed_host, struct redis_cluster_map *m, char *err,
                              size_t errlen)
{
    memset(m, 0, sizeof(*m));
    if (!rep || rep->type != REDIS_REPLY_ARRAY) {
        snprintf(err, errlen, "CLUSTER SLOTS: not an array");
        return -1;
    }
    for (size_t i = 0; i < rep->elements; i++) {
        const redisReply *e = rep->element[i];
        struct redis_addr a;
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 || e->element[0]->type != REDIS_REPLY_INTEGER ||
            e->element[1]->type != REDIS_REPLY_INTEGER || node_addr(e->element[2], seed_host, &a) < 0) {
            snprintf(err, errlen, "CLUSTER SLOTS: entry %zu is not [start, end, [ip, port, ...], ...]", i);
            return -1;
        }
        long long start = e->element[0]->integer, end = e->element[1]->integer;
        if (start < 0 || end < start || end >= REDIS_CLUSTER_SLOTS) {
            snprintf(err, errlen, "CLUSTER SLOTS: entry %zu: bad slot range %lld-%lld", i, start, end);
            return -1;
        }
        int idx = redis_cluster_find_master(m, &a);
        if (idx < 0) {
            if (m->nmasters == REDIS_CLUSTER_NODES_MAX) {
                snprintf(err, errlen, "CLUSTER SLOTS: more than %d masters", REDIS_CLUSTER_NODES_MAX);
                return -1;
            }
            idx = m->nmasters++;
            m->masters[idx] = a;
        }
        for (long long s = start; s <= end; s++) {
            if (!m->owner[s])
                m->covered++;
            m->owner[s] = (uint8_t)(idx + 1);
        }
        for (size_t j = 3; j < e->elements && m->nreplicas < REDIS_CLUSTER_NODES_MAX; j++) {
            struct redis_addr ra;
            if (node_addr(e->element[j], seed_host, &ra) == 0)
                m->replicas[m->nreplicas++] = ra;
        }
    }
    return 0;
}

int redis_cluster_owner(const struct redis_cluster_map *m, unsigned slot)
{
    return slot < REDIS_CLUSTER_SLOTS ? (int)m->owner[slot] - 1 : -1;
}

int redis_cluster_redirect(const char *msg, int *ask, unsigned *slot, struct redis_addr *a)
{
    const char *s;
    if (strncmp(msg, "MOVED ", 6) == 0) {
        *ask = 0;
        s = msg + 6;
    } else if (strncmp(msg, "ASK ", 4) == 0) {
        *ask = 1;
        s = msg + 4;
    } else {
        return 0;
    }
    char *end;
    unsigned long n = strtoul(s, &end, 10);
    if (end == s || *end != ' ' || n >= REDIS_CLUSTER_SLOTS)
        return 0;
    const char *hp = end + 1;
    const char *colon = strrchr(hp, ':');
    if (!colon || colon == hp || (size_t)(colon - hp) >= sizeof(a->host))
        return 0;
    long port = strtol(colon + 1, &end, 10);
    if (end == colon + 1 || *end || port < 1 || port > 65535)
        return 0;
    memcpy(a->host, hp, (size_t)(colon - hp));
    a->host[colon - hp] = '\0';
    a->port = (int)port;
    *slot = (unsigned)n;
    return 1;
}
