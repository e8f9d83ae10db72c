/*
 * redis_url: what cache.redis_url names, parsed once at start (and checked
 * by the configuration loader before anything connects). Three forms:
 *
 *   redis://HOST[:PORT][/DB]                        one server (port 6379)
 *   sentinel://HOST[:PORT][,HOST[:PORT]...]/MASTER[/DB]
 *                                                   up to 8 sentinels (port
 *                                                   26379), asked in order where
 *                                                   MASTER is
 *   unix:PATH, unix://PATH                          a Unix socket (absolute path)
 *   cluster://HOST[:PORT][,HOST[:PORT]...]          a Redis Cluster: up to 8 seed
 *                                                   nodes (port 6379), any of which
 *                                                   tells the slot map; database 0
 *                                                   only (a cluster has no other)
 *
 * HOST may be [IPv6]. Credentials ("user:pass@") are refused, and the URL is
 * then never echoed in the message: it holds a secret. No I/O, no
 * allocation; every message names the URL and what is wrong with it.
 */
#ifndef JOBGATE_REDIS_URL_H
#define JOBGATE_REDIS_URL_H

#include <stddef.h>

#define REDIS_URL_SENTINELS_MAX 8
#define REDIS_URL_SEEDS_MAX     8

struct redis_addr {
    char host[256];
    int port;
};

/* What the URL names. redis:// and unix: name the server; cluster:// the
 * nodes to ask for the slot map (`addr` stays empty); sentinel:// names
 * the sentinels to ask and the master's name, and `addr` is then the
 * master's address as they last gave it (empty until they have: filled in
 * by redis_link, not by the parser). */
struct redis_target {
    struct redis_addr addr;
    char unix_path[256]; /* non-empty: a Unix socket */
    int db;
    struct redis_addr sentinels[REDIS_URL_SENTINELS_MAX];
    int nsentinels; /* > 0: sentinel:// */
    char master_name[128];
    struct redis_addr seeds[REDIS_URL_SEEDS_MAX];
    int nseeds; /* > 0: cluster:// */
};

/* Parse `url` into `t` (zeroed first). Returns 0, or -1 with a message in
 * `err` (always NUL-terminated when errlen > 0). */
int redis_url_parse(const char *url, struct redis_target *t, char *err, size_t errlen);

/* `a` as HOST:PORT, or [HOST]:PORT for an IPv6 address; returns `buf`. */
const char *redis_addr_name(const struct redis_addr *a, char *buf, size_t len);

/* Where `t` points, for logs and /healthz: unix:PATH, or t->addr as
 * redis_addr_name writes it; "" when `addr_known` is 0 (sentinel:// before
 * the sentinels have named the master). Returns `buf`. */
const char *redis_target_name(const struct redis_target *t, int addr_known, char *buf, size_t len);

#endif
