/*
 * config_cache: the configuration's 'cache' section (config_cache.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "config_cache.h"
#include "config_secrets.h"
#include "redis_tls.h"

/* Replace the heap string *field with a copy of `value` (NULL: none). */
static void set_str(char **field, const char *value)
{
    char *copy = value ? strdup(value) : NULL;
    free(*field);
    *field = copy;
}

void config_cache_defaults(struct cache_conf *k)
{
    k->redis_url = strdup("redis://127.0.0.1:6379");
    k->redis_budget_ms = 50;
    k->redis_connect_timeout_ms = 500;
    k->redis_reconnect_min_ms = 100;
    k->redis_reconnect_max_ms = 5000;
    k->redis_max_pending = 10000;
    k->memory_max_bytes = 64 * 1024 * 1024;
}

int config_cache_set_redis(struct cache_conf *k, const char *value, char *err, size_t errlen)
{
    if (strcmp(value, "none") == 0) {
        set_str(&k->redis_url, NULL);
        return 0;
    }
    if (cache_redis_url_check(value, err, errlen) < 0)
        return -1;
    set_str(&k->redis_url, value);
    return 0;
}

/* A path under 'cache', resolved against the configuration file's folder. */
static int get_path(struct yconf *y, yaml_node_t *map, const char *key, char **out, struct conf_diag *d)
{
    yaml_node_t *n = yconf_get(y, map, key);
    char full[4096];
    if (!n)
        return 0;
    if (!yconf_scalar(n) || !*yconf_scalar(n)) {
        yconf_error(y, n, d, "'%s' must be the path of a PEM file", key);
        return -1;
    }
    yconf_resolve_path(y->path, yconf_scalar(n), full, sizeof(full));
    set_str(out, full);
    return 0;
}

/* cache.redis_tls, sentinel_tls and their files (redis_tls.h). The files
 * are loaded now, so that -t reports one that is missing or unreadable,
 * or a key that is not the certificate's, at its key's line. */
static int load_redis_tls(struct cache_conf *k, struct yconf *y, yaml_node_t *cache, struct conf_diag *d)
{
    static const char *const file_keys[] = {
        [REDIS_TLS_CA_FILE] = "redis_tls_ca_file",
        [REDIS_TLS_CERT_FILE] = "redis_tls_cert_file",
        [REDIS_TLS_KEY_FILE] = "redis_tls_key_file",
    };
    _Static_assert(sizeof(file_keys) / sizeof(file_keys[0]) == REDIS_TLS_KEY_FILE + 1, "one key per file");
    int rc = 0;
    int sentinel_given = yconf_get(y, cache, "sentinel_tls") != NULL;
    rc |= yconf_get_bool(y, cache, "redis_tls", &k->redis_tls, d);
    rc |= yconf_get_bool(y, cache, "sentinel_tls", &k->sentinel_tls, d);
    rc |= get_path(y, cache, "redis_tls_ca_file", &k->redis_tls_ca_file, d);
    rc |= get_path(y, cache, "redis_tls_cert_file", &k->redis_tls_cert_file, d);
    rc |= get_path(y, cache, "redis_tls_key_file", &k->redis_tls_key_file, d);
    rc |= yconf_get_str(y, cache, "redis_tls_server_name", &k->redis_tls_server_name, d);
    if (rc < 0)
        return -1;
    const char *url = k->redis_url;
    int sentinel_url = url && strncmp(url, "sentinel://", 11) == 0;
    if (!sentinel_given && sentinel_url)
        k->sentinel_tls = k->redis_tls; /* TLS-only Redis: its sentinels too, unless told otherwise */
    if (sentinel_given && k->sentinel_tls && !sentinel_url) {
        yconf_error(y, yconf_get(y, cache, "sentinel_tls"), d, "'sentinel_tls' goes with a sentinel:// 'redis' URL");
        return -1;
    }
    if ((k->redis_tls || k->sentinel_tls) && (!url || strncmp(url, "unix:", 5) == 0)) {
        yconf_error(y, yconf_get(y, cache, k->redis_tls ? "redis_tls" : "sentinel_tls"), d,
                    "TLS to Redis needs a redis:// or sentinel:// 'redis' URL");
        return -1;
    }
    if (!k->redis_tls && !k->sentinel_tls) {
        for (size_t i = 0; i < sizeof(file_keys) / sizeof(file_keys[0]); i++)
            if (yconf_get(y, cache, file_keys[i])) {
                yconf_error(y, yconf_get(y, cache, file_keys[i]), d, "'%s' needs redis_tls: on (or sentinel_tls: on)",
                            file_keys[i]);
                return -1;
            }
        return 0;
    }
    yaml_node_t *switch_node = yconf_get(y, cache, k->redis_tls ? "redis_tls" : "sentinel_tls");
    if (!k->redis_tls_ca_file) {
        yconf_error(y, switch_node, d, "TLS to Redis needs 'redis_tls_ca_file': the CA its certificate must chain to");
        return -1;
    }
    if ((k->redis_tls_cert_file != NULL) != (k->redis_tls_key_file != NULL)) {
        const char *given = k->redis_tls_cert_file ? "redis_tls_cert_file" : "redis_tls_key_file";
        yconf_error(y, yconf_get(y, cache, given), d, "'%s' needs %s too", given,
                    k->redis_tls_cert_file ? "redis_tls_key_file" : "redis_tls_cert_file");
        return -1;
    }
    if (k->redis_tls_server_name && (!*k->redis_tls_server_name || strpbrk(k->redis_tls_server_name, " \t/:"))) {
        yconf_error(y, yconf_get(y, cache, "redis_tls_server_name"), d,
                    "'redis_tls_server_name' must be a host name or an IP address");
        return -1;
    }
    struct redis_tls_conf tls = {
        .ca_file = k->redis_tls_ca_file, .cert_file = k->redis_tls_cert_file, .key_file = k->redis_tls_key_file};
    enum redis_tls_file bad;
    char err[512];
    if (redis_tls_check(&tls, &bad, err, sizeof(err)) < 0) {
        yconf_error(y, yconf_get(y, cache, file_keys[bad]) ? yconf_get(y, cache, file_keys[bad]) : switch_node, d,
                    "'%s': %s", file_keys[bad], err);
        return -1;
    }
    return 0;
}

int config_load_cache(struct yconf *y, yaml_node_t *cache, struct cache_conf *k, const char **key_prefix,
                      struct conf_diag *d)
{
    static const char *const keys[] = {"redis",
                                       "redis_budget",
                                       "redis_connect_timeout",
                                       "redis_reconnect_min",
                                       "redis_reconnect_max",
                                       "redis_max_pending",
                                       "redis_notify",
                                       "memory_max",
                                       "key_prefix",
                                       "redis_user",
                                       "redis_password_file",
                                       "redis_password_env",
                                       "sentinel_user",
                                       "sentinel_password_file",
                                       "sentinel_password_env",
                                       "entry_key_file",
                                       "entry_key_env",
                                       "redis_tls",
                                       "sentinel_tls",
                                       "redis_tls_ca_file",
                                       "redis_tls_cert_file",
                                       "redis_tls_key_file",
                                       "redis_tls_server_name",
                                       NULL};
    if (!cache)
        return 0;
    int rc = 0;
    char err[256];
    if (yconf_check_map(y, cache, "cache", keys, d) < 0)
        rc = -1;
    yaml_node_t *redis = yconf_get(y, cache, "redis");
    if (redis && (!yconf_scalar(redis) || config_cache_set_redis(k, yconf_scalar(redis), err, sizeof(err)) < 0)) {
        yconf_error(y, redis, d, "%s", yconf_scalar(redis) ? err : "'redis' must be a URL or none");
        rc = -1;
    }
    yaml_node_t *notify = yconf_get(y, cache, "redis_notify");
    if (notify && (!yconf_scalar(notify) || cache_notify_parse(yconf_scalar(notify), &k->redis_notify) < 0)) {
        yconf_error(y, notify, d, "'redis_notify' must be auto, pubsub or poll");
        rc = -1;
    }
    long pending = (long)k->redis_max_pending;
    rc |= yconf_get_ms(y, cache, "redis_budget", 1, 60000, 0, &k->redis_budget_ms, d);
    rc |= yconf_get_ms(y, cache, "redis_connect_timeout", 1, 60000, 0, &k->redis_connect_timeout_ms, d);
    rc |= yconf_get_ms(y, cache, "redis_reconnect_min", 1, 60000, 0, &k->redis_reconnect_min_ms, d);
    rc |= yconf_get_ms(y, cache, "redis_reconnect_max", 1, 600000, 0, &k->redis_reconnect_max_ms, d);
    rc |= yconf_get_long(y, cache, "redis_max_pending", 1, 10000000, &pending, d);
    k->redis_max_pending = (size_t)pending;
    rc |= yconf_get_bytes(y, cache, "memory_max", 64 * 1024, (size_t)1 << 40, &k->memory_max_bytes, d);
    char *prefix = (char *)*key_prefix; /* owned by the caller's struct config */
    rc |= yconf_get_str(y, cache, "key_prefix", &prefix, d);
    *key_prefix = prefix;
    rc |= config_load_cache_secrets(y, cache, k, d);
    rc |= load_redis_tls(k, y, cache, d);
    return rc;
}

void config_cache_free(struct cache_conf *k)
{
    free(k->redis_url);
    free(k->redis_user);
    free(k->redis_tls_ca_file);
    free(k->redis_tls_cert_file);
    free(k->redis_tls_key_file);
    free(k->redis_tls_server_name);
    free(k->sentinel_user);
    config_free_secret(&k->redis_password);
    config_free_secret(&k->sentinel_password);
    config_free_secret(&k->entry_key);
}
