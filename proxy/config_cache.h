/*
 * config_cache: the configuration's 'cache' section: where the Redis tier is
 * (redis, or none for the embedded store alone) and how it is waited for
 * (budget, timeouts, reconnection, pending commands, redis_notify), the
 * embedded store's bound, the key prefix, TLS to Redis and the sentinels
 * (redis_tls.h: the files are loaded here, so that -t reports one that is
 * missing or unreadable at its key's line), and through config_secrets the
 * users, passwords and entry key. Part of the configuration loader
 * (config.c): every mistake is reported into `d` as FILE:LINE:COL.
 *
 * Ownership: every string of a struct cache_conf is a heap string it owns,
 * freed by config_cache_free (its secrets wiped first).
 */
#ifndef JOBGATE_CONFIG_CACHE_H
#define JOBGATE_CONFIG_CACHE_H

#include <stddef.h>

#include "cache_types.h"
#include "yamlconf.h"

/* Fill `k` (zeroed) with the defaults: redis://127.0.0.1:6379, a 50 ms
 * budget, a 64 MiB embedded store. */
void config_cache_defaults(struct cache_conf *k);

/* Set the Redis URL from `value`: a URL cache_redis_url_check accepts, or
 * none (the embedded store alone). Returns 0, or -1 with the reason in `err`
 * (k->redis_url is then unchanged). */
int config_cache_set_redis(struct cache_conf *k, const char *value, char *err, size_t errlen);

/* Load the 'cache' mapping `cache` (NULL: absent, nothing changes) into `k`,
 * and its key_prefix into *key_prefix (a heap string the caller owns: the
 * one there is freed when replaced). Returns 0, or -1 after reporting each
 * mistake into `d`. */
int config_load_cache(struct yconf *y, yaml_node_t *cache, struct cache_conf *k, const char **key_prefix,
                      struct conf_diag *d);

/* Free every string of `k` (the fields stay as they were: the caller clears). */
void config_cache_free(struct cache_conf *k);

#endif
