#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache_entry.h"
#include "config_secrets.h"
#include "log.h"

/* Wipe and free a secret string; NULL is fine. */
void config_free_secret(char **s)
{
    if (*s) {
        memset(*s, 0, strlen(*s));
        free(*s);
        *s = NULL;
    }
}

/* The largest secret file read: an IAM token runs to tens of KB. */
#define SECRET_FILE_MAX (64 * 1024)

/* Read a secret (`what`: "token", "password", "sk") from a file: first line,
 * trailing newline dropped, held in memory sized to it. A file larger than
 * SECRET_FILE_MAX is refused, never cut short. */
static int read_secret_file(struct yconf *y, yaml_node_t *node, const char *what, const char *path, char **out,
                            struct conf_diag *d)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        yconf_error(y, node, d, "cannot read %s file '%s': %s", what, path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && (st.st_mode & S_IROTH))
        log_warn("%s:%zu: %s file '%s' is readable by everyone: chmod o-r it", y->path,
                 (size_t)node->start_mark.line + 1, what, path);
    char *buf = malloc(SECRET_FILE_MAX + 2);
    if (!buf) {
        fclose(f);
        yconf_error(y, node, d, "out of memory");
        return -1;
    }
    size_t n = fread(buf, 1, SECRET_FILE_MAX + 1, f);
    fclose(f);
    buf[n] = '\0';
    int rc = -1;
    if (n > SECRET_FILE_MAX) {
        yconf_error(y, node, d, "%s file '%s' is larger than %d bytes", what, path, SECRET_FILE_MAX);
    } else if ((buf[strcspn(buf, "\r\n")] = '\0', !buf[0])) {
        yconf_error(y, node, d, "%s file '%s' is empty", what, path);
    } else {
        config_free_secret(out);
        *out = strdup(buf);
        rc = *out ? 0 : -1;
        if (rc < 0)
            yconf_error(y, node, d, "out of memory");
    }
    explicit_bzero(buf, SECRET_FILE_MAX + 2);
    free(buf);
    return rc;
}

/*
 * A secret named in `map` by WHAT_file (a file) or WHAT_env (an environment
 * variable), such as token_file / token_env. Returns 0 when neither is given
 * (*out unchanged) or the secret was read into *out; -1 with a diagnostic.
 */
int config_read_secret(struct yconf *y, yaml_node_t *map, const char *what, char **out, struct conf_diag *d)
{
    char file_key[32], env_key[32];
    snprintf(file_key, sizeof(file_key), "%s_file", what);
    snprintf(env_key, sizeof(env_key), "%s_env", what);
    yaml_node_t *file = yconf_get(y, map, file_key);
    yaml_node_t *env = yconf_get(y, map, env_key);
    if (file && env) {
        yconf_error(y, env, d, "give either %s or %s, not both", file_key, env_key);
        return -1;
    }
    yaml_node_t *node = file ? file : env;
    if (!node)
        return 0;
    const char *name = yconf_scalar(node);
    if (!name || !*name) {
        yconf_error(y, node, d, "'%s' must be a %s", file ? file_key : env_key, file ? "file name" : "variable name");
        return -1;
    }
    if (file)
        return read_secret_file(y, node, what, name, out, d);
    const char *v = getenv(name);
    if (!v || !*v) {
        yconf_error(y, node, d, "environment variable '%s' (%s) is not set", name, env_key);
        return -1;
    }
    config_free_secret(out);
    *out = strdup(v);
    return 0;
}

/* upstream.auth: how jobgate proves who it is upstream (credentials.h). */
int config_load_auth(struct yconf *y, yaml_node_t *auth, struct credentials_conf *k, int64_t *passthrough_window_ms,
                     struct conf_diag *d)
{
    static const char *const auth_keys[] = {
        "mode",         "token_file",         "token_env",   "iam_url",   "user",      "domain", "password_file",
        "password_env", "refresh_before",     "iam_timeout", "retry_min", "retry_max", "ak",     "sk_file",
        "sk_env",       "passthrough_window", NULL};
    /* Which mode each key belongs to ("mode" belongs to all). */
    static const struct {
        const char *key;
        enum credentials_mode mode;
    } owner[] = {
        {"token_file", CRED_TOKEN}, {"token_env", CRED_TOKEN},    {"iam_url", CRED_IAM},
        {"user", CRED_IAM},         {"domain", CRED_IAM},         {"password_file", CRED_IAM},
        {"password_env", CRED_IAM}, {"refresh_before", CRED_IAM}, {"iam_timeout", CRED_IAM},
        {"retry_min", CRED_IAM},    {"retry_max", CRED_IAM},      {"ak", CRED_AKSK},
        {"sk_file", CRED_AKSK},     {"sk_env", CRED_AKSK},        {"passthrough_window", CRED_PASSTHROUGH},
    };
    int rc = yconf_check_map(y, auth, "upstream.auth", auth_keys, d);
    if (rc < 0 && auth->type != YAML_MAPPING_NODE)
        return -1;
    yaml_node_t *mode = yconf_get(y, auth, "mode");
    if (mode && (!yconf_scalar(mode) || credentials_mode_parse(yconf_scalar(mode), &k->mode) < 0)) {
        yconf_error(y, mode, d, "'mode' must be passthrough, token, iam or aksk");
        return -1;
    }
    for (size_t i = 0; i < sizeof(owner) / sizeof(owner[0]); i++) {
        yaml_node_t *node = yconf_get(y, auth, owner[i].key);
        if (node && owner[i].mode != k->mode) {
            yconf_error(y, node, d, "'%s' belongs to mode %s, and this is mode %s", owner[i].key,
                        credentials_mode_name(owner[i].mode), credentials_mode_name(k->mode));
            rc = -1;
        }
    }
    if (rc < 0)
        return -1;

    switch (k->mode) {
    case CRED_PASSTHROUGH:
        /* How long the cloud's acceptance of a client token lets it read cached answers. */
        if (yconf_get_ms(y, auth, "passthrough_window", 1000, 86400000, 0, passthrough_window_ms, d) < 0)
            return -1;
        break;
    case CRED_TOKEN:
        if (config_read_secret(y, auth, "token", &k->token, d) < 0)
            return -1;
        if (!k->token) {
            yconf_error(y, auth, d, "mode token needs token_file or token_env");
            return -1;
        }
        break;
    case CRED_IAM: {
        rc |= yconf_get_str(y, auth, "iam_url", &k->iam_url, d);
        rc |= yconf_get_str(y, auth, "user", &k->user, d);
        rc |= yconf_get_str(y, auth, "domain", &k->domain, d);
        rc |= config_read_secret(y, auth, "password", &k->password, d);
        rc |= yconf_get_ms(y, auth, "refresh_before", 0, 23 * 3600 * 1000, 0, &k->refresh_before_ms, d);
        rc |= yconf_get_ms(y, auth, "iam_timeout", 100, 120000, 0, &k->iam_timeout_ms, d);
        rc |= yconf_get_ms(y, auth, "retry_min", 10, 3600000, 0, &k->retry_min_ms, d);
        rc |= yconf_get_ms(y, auth, "retry_max", 10, 3600000, 0, &k->retry_max_ms, d);
        if (rc < 0)
            return -1;
        const char *missing = !k->iam_url    ? "iam_url"
                              : !k->user     ? "user"
                              : !k->domain   ? "domain"
                              : !k->password ? "password_file or password_env"
                                             : NULL;
        if (missing) {
            yconf_error(y, auth, d, "mode iam needs %s", missing);
            return -1;
        }
        if (strncmp(k->iam_url, "https://", 8) != 0 && strncmp(k->iam_url, "http://", 7) != 0) {
            yconf_error(y, yconf_get(y, auth, "iam_url"), d,
                        "'iam_url' must be an http(s) URL, such as https://iam.eu-west-0.myhuaweicloud.com");
            rc = -1;
        }
        if (!*k->user || !*k->domain) {
            yconf_error(y, yconf_get(y, auth, *k->user ? "domain" : "user"), d, "'%s' must not be empty",
                        *k->user ? "domain" : "user");
            rc = -1;
        }
        if (k->retry_max_ms < k->retry_min_ms) {
            yconf_error(y, yconf_get(y, auth, "retry_max"), d, "'retry_max' must not be below 'retry_min'");
            rc = -1;
        }
        break;
    }
    case CRED_AKSK:
        rc |= yconf_get_str(y, auth, "ak", &k->ak, d);
        rc |= config_read_secret(y, auth, "sk", &k->sk, d);
        if (rc < 0)
            return -1;
        if (!k->ak || !k->sk) {
            yconf_error(y, auth, d, "mode aksk needs %s", !k->ak ? "ak" : "sk_file or sk_env");
            return -1;
        }
        if (!*k->ak || strpbrk(k->ak, " \t,=")) {
            yconf_error(y, yconf_get(y, auth, "ak"), d, "'ak' must be an access key: no blank, comma or '='");
            rc = -1;
        }
        break;
    }
    return rc;
}

/* cache: Redis credentials and the entry key (secrets, from files or the
 * environment; never in the Redis URL). What can be told without
 * connecting is checked here, so that -t reports it. */
int config_load_cache_secrets(struct yconf *y, yaml_node_t *cache, struct cache_conf *k, struct conf_diag *d)
{
    int rc = 0;
    rc |= yconf_get_str(y, cache, "redis_user", &k->redis_user, d);
    rc |= yconf_get_str(y, cache, "sentinel_user", &k->sentinel_user, d);
    rc |= config_read_secret(y, cache, "redis_password", &k->redis_password, d);
    rc |= config_read_secret(y, cache, "sentinel_password", &k->sentinel_password, d);
    rc |= config_read_secret(y, cache, "entry_key", &k->entry_key, d);
    static const struct {
        const char *user, *secret;
    } pairs[] = {{"redis_user", "redis_password"}, {"sentinel_user", "sentinel_password"}};
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
        yaml_node_t *user = yconf_get(y, cache, pairs[i].user);
        char *const *secret = i == 0 ? &k->redis_password : &k->sentinel_password;
        char *const *name = i == 0 ? &k->redis_user : &k->sentinel_user;
        if (user && *name && (!**name || strpbrk(*name, " \t"))) {
            yconf_error(y, user, d, "'%s' must be an ACL user name: not empty, no blank", pairs[i].user);
            rc = -1;
        } else if (user && !*secret && rc == 0) {
            yconf_error(y, user, d, "'%s' needs %s_file or %s_env", pairs[i].user, pairs[i].secret, pairs[i].secret);
            rc = -1;
        }
    }
    yaml_node_t *redis = yconf_get(y, cache, "redis");
    yaml_node_t *sentinel = yconf_get(y, cache, "sentinel_password_file")
                                ? yconf_get(y, cache, "sentinel_password_file")
                                : yconf_get(y, cache, "sentinel_user");
    if (!sentinel)
        sentinel = yconf_get(y, cache, "sentinel_password_env");
    if (sentinel && redis && yconf_scalar(redis) && strncmp(yconf_scalar(redis), "sentinel://", 11) != 0) {
        yconf_error(y, sentinel, d, "the sentinel's credentials go with a sentinel:// 'redis' URL");
        rc = -1;
    }
    yaml_node_t *entry_key = yconf_get(y, cache, "entry_key_file") ? yconf_get(y, cache, "entry_key_file")
                                                                   : yconf_get(y, cache, "entry_key_env");
    if (entry_key && k->entry_key && strlen(k->entry_key) < CACHE_ENTRY_KEY_MIN_LEN) {
        yconf_error(y, entry_key, d, "the entry key must be at least %d bytes (openssl rand -hex 32 makes one)",
                    CACHE_ENTRY_KEY_MIN_LEN);
        rc = -1;
    }
    return rc;
}
