#include <errno.h>
#include <glob.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cache_entry.h"
#include "config.h"
#include "config_cache.h"
#include "config_limits.h"
#include "config_regions.h"
#include "config_secrets.h"
#include "regions.h"

void config_set_str(char **field, const char *value)
{
    char *copy = value ? strdup(value) : NULL;
    free(*field);
    *field = copy;
}

/* A string of a module's _conf that the module declares const (it only
 * reads it) but that struct config owns: set, read from YAML, free. */
static void set_owned(const char **field, const char *value)
{
    char *s = (char *)*field;
    config_set_str(&s, value);
    *field = s;
}

static int get_owned(struct yconf *y, yaml_node_t *map, const char *key, const char **field, struct conf_diag *d)
{
    char *s = (char *)*field;
    int rc = yconf_get_str(y, map, key, &s, d);
    *field = s;
    return rc;
}

void config_defaults(struct config *c)
{
    memset(c, 0, sizeof(*c));
    struct frontend_conf *fe = &c->frontend;
    fe->listeners = calloc(1, sizeof(*fe->listeners));
    if (fe->listeners) {
        fe->nlisteners = 1;
        config_set_str(&fe->listeners[0].host, "127.0.0.1");
        fe->listeners[0].port = 8080;
        fe->listeners[0].client_auth = 1;
    }
    config_set_str(&fe->admin.host, "127.0.0.1");
    fe->admin.port = 9100;
    c->log_level = LOG_LEVEL_INFO;
    config_cache_defaults(&c->cache);
    c->upstream.max_body_bytes = 1024 * 1024;
    c->upstream.max_connections = 64;
    c->upstream.user_agent = strdup("jobgate/" PACKAGE_VERSION);
    guard_conf_defaults(&c->upstream_limits);
    credentials_conf_defaults(&c->credentials);
    iamregion_conf_defaults(&c->iam);
    fe->client_timeout_ms = 30000;
    fe->header_timeout_ms = 10000;
    fe->keepalive_timeout_ms = 60000;
    fe->max_connections = 16384;
    fe->max_requests_per_connection = 10000;
    fe->max_header_bytes = 64 * 1024; /* a 32 KiB IAM token and the rest */
    fe->max_uri_bytes = 4096;
    struct gateway_conf *gw = &c->gateway;
    set_owned(&gw->key_prefix, "jobgate:");
    gw->guard = &c->upstream_limits;
    gw->rate_queue_ms = 2000;
    gw->passthrough_window_ms = 300000;
    gw->max_waiters = 10000;
    gw->max_wait_ms = 15000;
    gw->error_shape = ERROR_SHAPE_APIGW;
    gw->max_header_bytes = fe->max_header_bytes;
    gw->max_uri_bytes = fe->max_uri_bytes;
    c->shutdown_timeout_ms = 10000;
}

int config_parse_listen(const char *text, char **host, int *port)
{
    const char *colon;
    char h[256];
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (!close || close[1] != ':' || close == text + 1 || (size_t)(close - text - 1) >= sizeof(h))
            return -1;
        memcpy(h, text + 1, (size_t)(close - text - 1));
        h[close - text - 1] = '\0';
        colon = close + 1;
    } else {
        colon = strrchr(text, ':');
        if (!colon || (size_t)(colon - text) >= sizeof(h) || colon == text)
            return -1;
        memcpy(h, text, (size_t)(colon - text));
        h[colon - text] = '\0';
    }
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (end == colon + 1 || *end || p < 0 || p > 65535)
        return -1;
    config_set_str(host, h);
    *port = (int)p;
    return 0;
}

int config_set_admin_listen(struct config *c, const char *text)
{
    struct listener_conf *a = &c->frontend.admin;
    if (strcmp(text, "off") == 0) {
        free(a->host);
        a->host = NULL;
        return 0;
    }
    return config_parse_listen(text, &a->host, &a->port);
}

int config_set_listen(struct config *c, const char *text)
{
    struct frontend_conf *fe = &c->frontend;
    if (!fe->nlisteners)
        return -1;
    return config_parse_listen(text, &fe->listeners[0].host, &fe->listeners[0].port);
}

int config_set_upstream_url(struct config *c, const char *url)
{
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)
        return -1;
    set_owned(&c->gateway.upstream_url, url);
    return 0;
}

static void free_listeners(struct config *c)
{
    struct frontend_conf *fe = &c->frontend;
    for (size_t i = 0; i < fe->nlisteners; i++) {
        free(fe->listeners[i].host);
        free(fe->listeners[i].tls_cert);
        free(fe->listeners[i].tls_key);
    }
    free(fe->listeners);
    fe->listeners = NULL;
    fe->nlisteners = 0;
}

/* 'listeners': a list of {listen, tls: {cert, key}, client_auth}. Replaces
 * the default listener. TLS files are checked here so that -t reports them;
 * the frontend loads them. */
static int load_listeners(struct config *c, struct yconf *y, yaml_node_t *list, struct conf_diag *d)
{
    static const char *const listener_keys[] = {"listen", "tls", "client_auth", NULL};
    static const char *const tls_keys[] = {"cert", "key", NULL};
    if (list->type != YAML_SEQUENCE_NODE || yconf_seq_len(list) == 0) {
        yconf_error(y, list, d, "'listeners' must be a non-empty list of {listen, tls, client_auth}");
        return -1;
    }
    free_listeners(c);
    struct frontend_conf *fe = &c->frontend;
    fe->listeners = calloc(yconf_seq_len(list), sizeof(*fe->listeners));
    if (!fe->listeners)
        return -1;
    int rc = 0;
    for (size_t i = 0; i < yconf_seq_len(list); i++) {
        yaml_node_t *item = yconf_seq_item(y, list, i);
        struct listener_conf *lc = &fe->listeners[fe->nlisteners++];
        lc->client_auth = 1;
        if (yconf_check_map(y, item, "a listener", listener_keys, d) < 0) {
            rc = -1;
            continue;
        }
        yaml_node_t *listen = yconf_get(y, item, "listen");
        if (!listen || !yconf_scalar(listen) || config_parse_listen(yconf_scalar(listen), &lc->host, &lc->port) < 0) {
            yconf_error(y, listen ? listen : item, d, "a listener needs 'listen: HOST:PORT'");
            rc = -1;
        }
        rc |= yconf_get_bool(y, item, "client_auth", &lc->client_auth, d);
        yaml_node_t *tls = yconf_get(y, item, "tls");
        if (!tls)
            continue;
        if (yconf_check_map(y, tls, "tls", tls_keys, d) < 0) {
            rc = -1;
            continue;
        }
        rc |= yconf_get_str(y, tls, "cert", &lc->tls_cert, d);
        rc |= yconf_get_str(y, tls, "key", &lc->tls_key, d);
        if (!lc->tls_cert || !lc->tls_key) {
            yconf_error(y, tls, d, "'tls' needs both 'cert' and 'key' (PEM files)");
            rc = -1;
            continue;
        }
        char full[4096];
        const char *what[2] = {"cert", "key"};
        char **files[2] = {&lc->tls_cert, &lc->tls_key};
        for (int k = 0; k < 2; k++) {
            yconf_resolve_path(y->path, *files[k], full, sizeof(full));
            config_set_str(files[k], full);
            if (access(full, R_OK) != 0) {
                yconf_error(y, yconf_get(y, tls, what[k]), d, "cannot read TLS %s '%s': %s", what[k], full,
                            strerror(errno));
                rc = -1;
            }
        }
    }
    return rc;
}

/* 'audit': where the one-line-per-request audit log goes, and what happens
 * when it cannot be written (audit.h). */
static int load_audit(struct config *c, struct yconf *y, yaml_node_t *m, struct conf_diag *d)
{
    static const char *const keys[] = {"file", "on_failure", "buffer", "flush_interval", NULL};
    if (!m)
        return 0;
    if (yconf_check_map(y, m, "audit", keys, d) < 0)
        return -1;
    int rc = 0;
    char *file = NULL;
    rc |= yconf_get_str(y, m, "file", &file, d);
    if (!file || !*file) {
        yconf_error(y, m, d, "'audit' needs 'file': the audit log's path, or - for standard error");
        free(file);
        return -1;
    }
    char full[4096];
    if (strcmp(file, "-") == 0)
        snprintf(full, sizeof(full), "-");
    else
        yconf_resolve_path(y->path, file, full, sizeof(full));
    free(file);
    free((char *)c->audit.path);
    c->audit.path = strdup(full);
    yaml_node_t *policy = yconf_get(y, m, "on_failure");
    if (policy) {
        const char *v = yconf_scalar(policy);
        if (v && strcmp(v, "continue") == 0) {
            c->audit.fail_closed = 0;
        } else if (v && strcmp(v, "refuse") == 0) {
            c->audit.fail_closed = 1;
        } else {
            yconf_error(y, policy, d, "'on_failure' must be continue (answer, count lost lines) or refuse (503)");
            rc = -1;
        }
    }
    rc |= yconf_get_bytes(y, m, "buffer", AUDIT_MIN_BUFFERED, (size_t)1 << 32, &c->audit.max_buffered_bytes, d);
    rc |= yconf_get_ms(y, m, "flush_interval", 1, AUDIT_MAX_FLUSH_MS, 0, &c->audit.flush_interval_ms, d);
    return rc;
}

/* upstream.connect_to, FOR TESTS: libcurl CONNECT_TO lines that send
 * upstream host names elsewhere (a loopback simulator), never through DNS. */
static int load_connect_to(struct config *c, struct yconf *y, yaml_node_t *n, struct conf_diag *d)
{
    if (!n)
        return 0;
    if (n->type != YAML_SEQUENCE_NODE) {
        yconf_error(y, n, d, "'connect_to' is a list of HOST:PORT:CONNECT-TO-HOST:CONNECT-TO-PORT (tests only)");
        return -1;
    }
    size_t count = yconf_seq_len(n);
    char **lines = calloc(count + 1, sizeof(*lines));
    if (!lines)
        return -1;
    int rc = 0;
    for (size_t i = 0; i < count; i++) {
        yaml_node_t *item = yconf_seq_item(y, n, i);
        const char *s = yconf_scalar(item);
        size_t colons = 0;
        for (const char *p = s ? s : ""; *p; p++)
            colons += *p == ':';
        if (!s || colons != 3) {
            yconf_error(y, item, d, "connect_to '%s' is not HOST:PORT:CONNECT-TO-HOST:CONNECT-TO-PORT", s ? s : "?");
            rc = -1;
        } else if (!(lines[i] = strdup(s))) {
            rc = -1;
        }
    }
    for (char **line = c->upstream.connect_to; line && *line; line++)
        free(*line);
    free(c->upstream.connect_to);
    c->upstream.connect_to = lines;
    return rc;
}

int config_set_redis(struct config *c, const char *value, char *err, size_t errlen)
{
    return config_cache_set_redis(&c->cache, value, err, errlen);
}

int config_set_workers(struct config *c, const char *value)
{
    if (strcmp(value, "auto") == 0) {
        c->workers = 0;
        return 0;
    }
    char *end;
    long n = strtol(value, &end, 10);
    if (end == value || *end || n < 1 || n > 256)
        return -1;
    c->workers = (int)n;
    return 0;
}

static int add_rule_file(struct config *c, const char *path)
{
    char **grown = realloc(c->rule_files, (c->nrule_files + 1) * sizeof(*grown));
    if (!grown)
        return -1;
    c->rule_files = grown;
    c->rule_files[c->nrule_files++] = strdup(path);
    return 0;
}

/* Each entry is a file or a glob, relative to the config file's folder. */
static int load_rule_list(struct config *c, struct yconf *y, yaml_node_t *list, struct conf_diag *d)
{
    if (!list)
        return 0;
    if (list->type != YAML_SEQUENCE_NODE) {
        yconf_error(y, list, d, "'rules' must be a list of rule files or patterns, such as [rules.d/*.yaml]");
        return -1;
    }
    for (size_t i = 0; i < c->nrule_files; i++)
        free(c->rule_files[i]);
    c->nrule_files = 0;
    int rc = 0;
    for (size_t i = 0; i < yconf_seq_len(list); i++) {
        yaml_node_t *item = yconf_seq_item(y, list, i);
        const char *pattern = yconf_scalar(item);
        if (!pattern || !*pattern) {
            yconf_error(y, item, d, "a rule entry is a file name or pattern");
            rc = -1;
            continue;
        }
        char full[4096];
        yconf_resolve_path(y->path, pattern, full, sizeof(full));
        glob_t g;
        int grc = glob(full, GLOB_ERR, NULL, &g);
        if (grc == GLOB_NOMATCH || grc == GLOB_ABORTED) {
            yconf_error(y, item, d, "rules '%s' match no file", full);
            rc = -1;
        } else if (grc != 0) {
            yconf_error(y, item, d, "cannot read rules '%s'", full);
            rc = -1;
        } else {
            for (size_t k = 0; k < g.gl_pathc; k++)
                add_rule_file(c, g.gl_pathv[k]);
        }
        if (grc == 0)
            globfree(&g);
    }
    return rc;
}

/* 'admin': {listen: HOST:PORT or off, client_auth: bool}. client_auth needs
 * a keys file, and the admin address may not be a client listener's. */
static int load_admin(struct config *c, struct yconf *y, yaml_node_t *admin, struct conf_diag *d)
{
    static const char *const admin_keys[] = {"listen", "client_auth", NULL};
    if (!admin)
        return 0;
    if (admin->type != YAML_MAPPING_NODE) {
        yconf_error(y, admin, d, "'admin' must be a mapping with listen and client_auth");
        return -1;
    }
    int rc = yconf_check_map(y, admin, "admin", admin_keys, d);
    struct listener_conf *a = &c->frontend.admin;
    yaml_node_t *listen = yconf_get(y, admin, "listen");
    if (listen && (!yconf_scalar(listen) || config_set_admin_listen(c, yconf_scalar(listen)) < 0)) {
        yconf_error(y, listen, d, "'admin.listen' must be HOST:PORT, such as 127.0.0.1:9100, or off");
        rc = -1;
    }
    yaml_node_t *auth = yconf_get(y, admin, "client_auth");
    if (yconf_get_bool(y, admin, "client_auth", &a->client_auth, d) < 0) {
        rc = -1;
    } else if (a->client_auth && !c->client_keys_file) {
        yconf_error(y, auth, d, "'admin.client_auth' needs a keys file ('client_keys') with a client granted admin");
        rc = -1;
    }
    for (size_t i = 0; listen && a->host && a->port && i < c->frontend.nlisteners; i++) {
        const struct listener_conf *lc = &c->frontend.listeners[i];
        if (lc->port == a->port && strcmp(lc->host, a->host) == 0) {
            yconf_error(y, listen, d, "'admin.listen' is a client listener's address: give it its own port");
            rc = -1;
        }
    }
    return rc;
}

int config_load(struct config *c, const char *path, struct conf_diag *d)
{
    static const char *const top_keys[] = {
        "listen",           "listeners", "log_level",   "rules",           "cache", "upstream", "client", "coalesce",
        "shutdown_timeout", "workers",   "client_keys", "upstream_limits", "audit", "regions",  "admin",  NULL};
    static const char *const upstream_keys[] = {
        "url", "ca_file", "token_file", "token_env", "max_body", "max_connections", "auth", "connect_to", NULL};
    static const char *const client_keys[] = {
        "timeout",          "header_timeout", "keepalive_timeout", "max_connections", "max_requests_per_connection",
        "max_header_bytes", "max_uri_bytes",  "allow_bare_lf",     "error_shape",     NULL};
    static const char *const coalesce_keys[] = {"max_waiters", "max_wait", NULL};
    struct yconf y;
    config_set_str(&c->file, path);
    if (yconf_load(&y, path, d) < 0) {
        yconf_free(&y);
        return -1;
    }
    yaml_node_t *root = yconf_root(&y);
    if (!root) { /* only comments: every default */
        yconf_free(&y);
        return 0;
    }
    int rc = yconf_check_map(&y, root, "the configuration", top_keys, d);
    if (rc < 0 && (!root || root->type != YAML_MAPPING_NODE)) {
        yconf_free(&y);
        return -1;
    }

    yaml_node_t *listen = yconf_get(&y, root, "listen");
    yaml_node_t *listeners = yconf_get(&y, root, "listeners");
    if (listen && listeners) {
        yconf_error(&y, listeners, d, "give either 'listen' (one plain listener) or 'listeners', not both");
        rc = -1;
    } else if (listeners) {
        rc |= load_listeners(c, &y, listeners, d);
    } else if (listen && (!yconf_scalar(listen) || config_set_listen(c, yconf_scalar(listen)) < 0)) {
        yconf_error(&y, listen, d, "'listen' must be HOST:PORT, such as 127.0.0.1:8080");
        rc = -1;
    }
    yaml_node_t *level = yconf_get(&y, root, "log_level");
    if (level && (!yconf_scalar(level) || log_level_parse(yconf_scalar(level), &c->log_level) < 0)) {
        yconf_error(&y, level, d, "'log_level' must be error, warn, info or debug");
        rc = -1;
    }

    rc |= load_rule_list(c, &y, yconf_get(&y, root, "rules"), d);
    yaml_node_t *keys = yconf_get(&y, root, "client_keys");
    if (keys) {
        char full[4096];
        if (!yconf_scalar(keys) || !*yconf_scalar(keys)) {
            yconf_error(&y, keys, d, "'client_keys' is the path of a keys file (see conf/keys.yaml)");
            rc = -1;
        } else {
            yconf_resolve_path(y.path, yconf_scalar(keys), full, sizeof(full));
            config_set_str(&c->client_keys_file, full);
        }
    }

    rc |= config_load_cache(&y, yconf_get(&y, root, "cache"), &c->cache, &c->gateway.key_prefix, d);

    yaml_node_t *up = yconf_get(&y, root, "upstream");
    if (up) {
        if (yconf_check_map(&y, up, "upstream", upstream_keys, d) < 0)
            rc = -1;
        rc |= get_owned(&y, up, "url", &c->gateway.upstream_url, d);
        rc |= yconf_get_str(&y, up, "ca_file", &c->upstream.ca_file, d);
        rc |= yconf_get_bytes(&y, up, "max_body", 1024, (size_t)1 << 30, &c->upstream.max_body_bytes, d);
        rc |= yconf_get_long(&y, up, "max_connections", 1, 100000, &c->upstream.max_connections, d);
        rc |= load_connect_to(c, &y, yconf_get(&y, up, "connect_to"), d);
        /* upstream.token_file / token_env: mode token, from before upstream.auth. */
        yaml_node_t *auth = yconf_get(&y, up, "auth");
        yaml_node_t *old =
            yconf_get(&y, up, "token_file") ? yconf_get(&y, up, "token_file") : yconf_get(&y, up, "token_env");
        if (auth && old) {
            yconf_error(&y, old, d, "give the upstream credentials in 'auth' or as token_file/token_env, not both");
            rc = -1;
        } else if (auth) {
            rc |= config_load_auth(&y, auth, &c->credentials, &c->gateway.passthrough_window_ms, d);
            if (c->credentials.mode == CRED_TOKEN && c->credentials.token)
                set_owned(&c->gateway.upstream_token, c->credentials.token);
        } else if (old) {
            if (config_read_secret(&y, up, "token", &c->credentials.token, d) < 0) {
                rc = -1;
            } else {
                c->credentials.mode = CRED_TOKEN;
                set_owned(&c->gateway.upstream_token, c->credentials.token);
            }
        }
    }

    yaml_node_t *client = yconf_get(&y, root, "client");
    if (client) {
        if (yconf_check_map(&y, client, "client", client_keys, d) < 0)
            rc = -1;
        struct frontend_conf *fe = &c->frontend;
        rc |= yconf_get_ms(&y, client, "timeout", 100, 3600000, 0, &fe->client_timeout_ms, d);
        rc |= yconf_get_ms(&y, client, "header_timeout", 100, 3600000, 0, &fe->header_timeout_ms, d);
        rc |= yconf_get_ms(&y, client, "keepalive_timeout", 100, 3600000, 0, &fe->keepalive_timeout_ms, d);
        long conns = (long)fe->max_connections, reqs = (long)fe->max_requests_per_connection;
        rc |= yconf_get_long(&y, client, "max_connections", 1, 1000000, &conns, d);
        rc |= yconf_get_long(&y, client, "max_requests_per_connection", 1, 100000000, &reqs, d);
        fe->max_connections = (size_t)conns;
        fe->max_requests_per_connection = (unsigned)reqs;
        rc |= yconf_get_bytes(&y, client, "max_header_bytes", 1024, 1024 * 1024, &fe->max_header_bytes, d);
        rc |= yconf_get_bytes(&y, client, "max_uri_bytes", 256, 1024 * 1024, &fe->max_uri_bytes, d);
        rc |= yconf_get_bool(&y, client, "allow_bare_lf", &fe->allow_bare_lf, d);
        /* The frontend caps evhttp at a multiple of these; the gateway enforces them (frontend.h). */
        c->gateway.max_header_bytes = fe->max_header_bytes;
        c->gateway.max_uri_bytes = fe->max_uri_bytes;
        yaml_node_t *shape = yconf_get(&y, client, "error_shape");
        if (shape) {
            c->gateway.error_shape = error_shape_from_name(yconf_scalar(shape));
            if (c->gateway.error_shape == ERROR_SHAPE_DEFAULT) {
                yconf_error(&y, shape, d, "'error_shape' must be apigw or elb");
                rc = -1;
            }
        }
    }
    rc |= load_admin(c, &y, yconf_get(&y, root, "admin"), d);
    rc |= config_load_upstream_limits(&y, yconf_get(&y, root, "upstream_limits"), &c->upstream_limits,
                                      &c->gateway.rate_queue_ms, d);
    rc |= config_load_regions(&y, yconf_get(&y, root, "regions"), &c->regions, &c->iam, d);
    c->gateway.regions = c->regions;
    yaml_node_t *iam_url = yconf_get(&y, yconf_get(&y, root, "regions"), "iam_url");
    if (iam_url && c->iam.iam_url && c->credentials.mode == CRED_PASSTHROUGH) {
        yconf_error(&y, iam_url, d,
                    "'iam_url': asking IAM needs jobgate's own credentials (upstream.auth mode token, iam or aksk)");
        rc = -1;
    }
    rc |= load_audit(c, &y, yconf_get(&y, root, "audit"), d);
    yaml_node_t *workers = yconf_get(&y, root, "workers");
    if (workers && (!yconf_scalar(workers) || config_set_workers(c, yconf_scalar(workers)) < 0)) {
        yconf_error(&y, workers, d, "'workers' must be auto or a number from 1 to 256");
        rc = -1;
    }
    yaml_node_t *coalesce = yconf_get(&y, root, "coalesce");
    if (coalesce) {
        if (yconf_check_map(&y, coalesce, "coalesce", coalesce_keys, d) < 0)
            rc = -1;
        long waiters = (long)c->gateway.max_waiters;
        rc |= yconf_get_long(&y, coalesce, "max_waiters", 1, 10000000, &waiters, d);
        c->gateway.max_waiters = (size_t)waiters;
        rc |= yconf_get_ms(&y, coalesce, "max_wait", 10, 3600000, 0, &c->gateway.max_wait_ms, d);
    }
    rc |= yconf_get_ms(&y, root, "shutdown_timeout", 0, 3600000, 0, &c->shutdown_timeout_ms, d);

    yconf_free(&y);
    return rc ? -1 : 0;
}

void config_free(struct config *c)
{
    free(c->file);
    free(c->client_keys_file);
    free((char *)c->audit.path);
    free_listeners(c);
    free(c->frontend.admin.host);
    for (size_t i = 0; i < c->nrule_files; i++)
        free(c->rule_files[i]);
    free(c->rule_files);
    config_cache_free(&c->cache);
    free(c->upstream.ca_file);
    free(c->upstream.user_agent);
    for (char **line = c->upstream.connect_to; line && *line; line++)
        free(*line);
    free(c->upstream.connect_to);
    regions_free(c->regions);
    free((char *)c->gateway.key_prefix);
    free((char *)c->gateway.upstream_url);
    char *token = (char *)c->gateway.upstream_token;
    config_free_secret(&token);
    credentials_conf_free(&c->credentials);
    iamregion_conf_free(&c->iam);
    memset(c, 0, sizeof(*c));
}
