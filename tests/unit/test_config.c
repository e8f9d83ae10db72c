/*
 * Unit tests for config (and the yamlconf value parsers it uses): defaults,
 * loading conf/jobgate.yaml-style files, rule globs, listen and Redis
 * values, the upstream token, durations and sizes (proxy/config.h is the
 * contract).
 *
 * Broken configuration files live in tests/unit/data/config-bad/, one
 * mistake each, the expected diagnostic in the header ("# expect: LINE:COL:
 * fragment", a fragment "a ... b" needing "a" then "b"); a new case is a new
 * file plus its name in BAD_CONFIG_FILES. Files that must be private (a
 * token file) or that test path resolution are written to a temporary folder.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"
#include "rules.h"
#include "yamlconf.h"
#include "unit_support.h"

#define BAD_CONFIG_FILES(X)                        \
    X("admin-auth-no-keys.yaml")                   \
    X("admin-auth-word.yaml")                      \
    X("admin-listen-bad.yaml")                     \
    X("admin-listen-client-port.yaml")             \
    X("admin-not-mapping.yaml")                    \
    X("admin-unknown-key.yaml")                    \
    X("audit-bad-policy.yaml")                     \
    X("audit-no-file.yaml")                        \
    X("auth-aksk-bad-ak.yaml")                     \
    X("auth-aksk-no-sk.yaml")                      \
    X("auth-and-token-file.yaml")                  \
    X("auth-iam-no-password.yaml")                 \
    X("auth-iam-no-user.yaml")                     \
    X("auth-iam-url-not-http.yaml")                \
    X("auth-key-of-another-mode.yaml")             \
    X("auth-mode-unknown.yaml")                    \
    X("auth-not-mapping.yaml")                     \
    X("auth-password-both.yaml")                   \
    X("auth-password-env-unset.yaml")              \
    X("auth-password-file-missing.yaml")           \
    X("auth-retry-max-below-min.yaml")             \
    X("auth-token-no-source.yaml")                 \
    X("auth-unknown-key.yaml")                     \
    X("bad-duration.yaml")                         \
    X("bad-listen-port.yaml")                      \
    X("bad-listen.yaml")                           \
    X("bad-log-level.yaml")                        \
    X("bad-max-body.yaml")                         \
    X("bad-shutdown-timeout.yaml")                 \
    X("bad-size.yaml")                             \
    X("cache-not-mapping.yaml")                    \
    X("client-bare-lf-word.yaml")                  \
    X("client-error-shape.yaml")                   \
    X("client-timeout-short.yaml")                 \
    X("coalesce-unknown.yaml")                     \
    X("duplicate-key-top.yaml")                    \
    X("duration-too-long.yaml")                    \
    X("entry-key-short.yaml")                      \
    X("limits-rate-zero.yaml")                     \
    X("limits-unknown-key.yaml")                   \
    X("listen-and-listeners.yaml")                 \
    X("listener-no-listen.yaml")                   \
    X("listener-tls-missing-cert.yaml")            \
    X("listener-tls-no-key.yaml")                  \
    X("max-connections-zero.yaml")                 \
    X("max-pending-word.yaml")                     \
    X("not-a-mapping.yaml")                        \
    X("redis-bad-db.yaml")                         \
    X("redis-bad-port.yaml")                       \
    X("redis-not-scalar.yaml")                     \
    X("redis-notify-word.yaml")                    \
    X("redis-password-both.yaml")                  \
    X("redis-password-env-unset.yaml")             \
    X("redis-password-file-missing.yaml")          \
    X("redis-password.yaml")                       \
    X("redis-scheme.yaml")                         \
    X("redis-sentinel-no-master.yaml")             \
    X("redis-sentinel-password-not-sentinel.yaml") \
    X("redis-sentinel-tls-not-sentinel.yaml")      \
    X("redis-tls-ca-missing.yaml")                 \
    X("redis-tls-cert-no-key.yaml")                \
    X("redis-tls-file-without-tls.yaml")           \
    X("redis-tls-no-ca.yaml")                      \
    X("redis-tls-unix.yaml")                       \
    X("redis-tls-word.yaml")                       \
    X("redis-unix-relative.yaml")                  \
    X("redis-user-no-password.yaml")               \
    X("redis-user-password.yaml")                  \
    X("regions-iam-passthrough.yaml")              \
    X("regions-iam-url-bad.yaml")                  \
    X("rules-empty-entry.yaml")                    \
    X("rules-no-match.yaml")                       \
    X("rules-not-list.yaml")                       \
    X("size-too-small.yaml")                       \
    X("token-both.yaml")                           \
    X("token-env-unset.yaml")                      \
    X("token-file-missing.yaml")                   \
    X("unknown-key-cache.yaml")                    \
    X("unknown-key-client.yaml")                   \
    X("unknown-key-top.yaml")                      \
    X("unknown-key-upstream.yaml")                 \
    X("workers-zero.yaml")                         \
    X("yaml-syntax.yaml")
#define AS_NAME(f) f,
static const char *const bad_config_files[] = {BAD_CONFIG_FILES(AS_NAME)};
#define NBAD (sizeof(bad_config_files) / sizeof(bad_config_files[0]))

/* ------------------------------------------------------------- helpers */

/* A fresh folder under $TMPDIR (or /tmp); removed by rm_tree. */
static char *make_tmpdir(void)
{
    const char *base = getenv("TMPDIR");
    char tmpl[4096];
    snprintf(tmpl, sizeof(tmpl), "%s/jobgate-test-config.XXXXXX", base && *base ? base : "/tmp");
    char *dir = mkdtemp(tmpl);
    assert_non_null(dir);
    return strdup(dir);
}

/* Remove `path` and, for a folder, everything under it. */
static void rm_path(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return;
    if (S_ISDIR(st.st_mode)) {
        DIR *dh = opendir(path);
        if (dh) {
            for (struct dirent *e = readdir(dh); e; e = readdir(dh)) {
                if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                    continue;
                char child[4096];
                snprintf(child, sizeof(child), "%s/%s", path, e->d_name);
                rm_path(child);
            }
            closedir(dh);
        }
        rmdir(path);
    } else {
        unlink(path);
    }
}

static void rm_tree(char *dir)
{
    rm_path(dir);
    free(dir);
}

/* Write `text` to DIR/REL (its folder must exist) with `mode`; the path goes to `out`. */
static void write_file(const char *dir, const char *rel, const char *text, mode_t mode, char *out, size_t outlen)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, rel);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(chmod(path, mode), 0);
    if (out)
        snprintf(out, outlen, "%s", path);
}

static void make_dir(const char *dir, const char *rel)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, rel);
    assert_int_equal(mkdir(path, 0700), 0);
}

/* Load the file at `path` over the defaults into c, its diagnostics into d (both initialised here). */
static int load_file(struct config *c, const char *path, struct conf_diag *d)
{
    config_defaults(c);
    conf_diag_init(d);
    return config_load(c, path, d);
}

/* Load `text` as a configuration file (written to a private temporary file). */
static int load_text(struct config *c, const char *text, struct conf_diag *d)
{
    char *dir = make_tmpdir();
    char path[4096];
    write_file(dir, "jobgate.yaml", text, 0600, path, sizeof(path));
    int rc = load_file(c, path, d);
    rm_tree(dir);
    return rc;
}

/* `got` must be `want`: a string, or NULL (unset). */
static void assert_string_or_null(const char *got, const char *want)
{
    if (want)
        assert_string_equal(got, want);
    else
        assert_null(got);
}

/*
 * Check the members of `got` that the tests compare (all but the file, the
 * rule files and the user agent) against `want`, a NULL string meaning unset.
 */
static void assert_config_values(const struct config *got, const struct config *want)
{
    assert_int_equal(got->frontend.nlisteners, want->frontend.nlisteners);
    for (size_t i = 0; i < got->frontend.nlisteners && i < want->frontend.nlisteners; i++) {
        assert_string_or_null(got->frontend.listeners[i].host, want->frontend.listeners[i].host);
        assert_int_equal(got->frontend.listeners[i].port, want->frontend.listeners[i].port);
        assert_int_equal(got->frontend.listeners[i].client_auth, want->frontend.listeners[i].client_auth);
        assert_string_or_null(got->frontend.listeners[i].tls_cert, want->frontend.listeners[i].tls_cert);
        assert_string_or_null(got->frontend.listeners[i].tls_key, want->frontend.listeners[i].tls_key);
    }
    assert_string_or_null(got->frontend.admin.host, want->frontend.admin.host);
    if (want->frontend.admin.host) {
        assert_int_equal(got->frontend.admin.port, want->frontend.admin.port);
        assert_int_equal(got->frontend.admin.client_auth, want->frontend.admin.client_auth);
    }
    assert_int_equal(got->log_level, want->log_level);
    assert_string_or_null(got->cache.redis_url, want->cache.redis_url);
    assert_int_equal(got->cache.redis_budget_ms, want->cache.redis_budget_ms);
    assert_int_equal(got->cache.redis_connect_timeout_ms, want->cache.redis_connect_timeout_ms);
    assert_int_equal(got->cache.redis_reconnect_min_ms, want->cache.redis_reconnect_min_ms);
    assert_int_equal(got->cache.redis_reconnect_max_ms, want->cache.redis_reconnect_max_ms);
    assert_int_equal(got->cache.redis_max_pending, want->cache.redis_max_pending);
    assert_int_equal(got->cache.redis_notify, want->cache.redis_notify);
    assert_int_equal(got->cache.memory_max_bytes, want->cache.memory_max_bytes);
    assert_string_or_null(got->gateway.key_prefix, want->gateway.key_prefix);
    assert_string_or_null(got->gateway.upstream_url, want->gateway.upstream_url);
    assert_string_or_null(got->gateway.upstream_token, want->gateway.upstream_token);
    assert_string_or_null(got->upstream.ca_file, want->upstream.ca_file);
    assert_int_equal(got->upstream.max_body_bytes, want->upstream.max_body_bytes);
    assert_int_equal(got->upstream.max_connections, want->upstream.max_connections);
    assert_int_equal(got->frontend.client_timeout_ms, want->frontend.client_timeout_ms);
    assert_int_equal(got->frontend.header_timeout_ms, want->frontend.header_timeout_ms);
    assert_int_equal(got->frontend.keepalive_timeout_ms, want->frontend.keepalive_timeout_ms);
    assert_int_equal(got->frontend.max_connections, want->frontend.max_connections);
    assert_int_equal(got->frontend.max_requests_per_connection, want->frontend.max_requests_per_connection);
    assert_int_equal(got->frontend.max_header_bytes, want->frontend.max_header_bytes);
    assert_int_equal(got->frontend.max_uri_bytes, want->frontend.max_uri_bytes);
    assert_int_equal(got->frontend.allow_bare_lf, want->frontend.allow_bare_lf);
    assert_int_equal(got->gateway.max_waiters, want->gateway.max_waiters);
    assert_int_equal(got->gateway.max_wait_ms, want->gateway.max_wait_ms);
    assert_int_equal(got->gateway.rate_queue_ms, want->gateway.rate_queue_ms);
    assert_int_equal(got->gateway.passthrough_window_ms, want->gateway.passthrough_window_ms);
    /* Settings two modules read, filled once; the gateway's limits are config's own. */
    assert_int_equal(got->gateway.max_header_bytes, got->frontend.max_header_bytes);
    assert_int_equal(got->gateway.max_uri_bytes, got->frontend.max_uri_bytes);
    assert_ptr_equal(got->gateway.guard, &got->upstream_limits);
    /* Objects main wires in, never config's. */
    assert_null(got->gateway.client_keys);
    assert_null(got->gateway.credentials);
    assert_null(got->gateway.audit);
    assert_int_equal(got->workers, want->workers);
    assert_int_equal(got->shutdown_timeout_ms, want->shutdown_timeout_ms);
}

/* ------------------------------------------------------------ defaults */

static void test_defaults(void **state)
{
    /* The documented defaults; a NULL string is unset. */
    static struct listener_conf plain = {.host = "127.0.0.1", .port = 8080, .client_auth = 1};
    static const struct config documented = {
        .log_level = LOG_LEVEL_INFO,
        .cache =
            {
                .redis_url = "redis://127.0.0.1:6379",
                .redis_budget_ms = 50,
                .redis_connect_timeout_ms = 500,
                .redis_reconnect_min_ms = 100,
                .redis_reconnect_max_ms = 5000,
                .redis_max_pending = 10000,
                .memory_max_bytes = 64 * 1024 * 1024,
            },
        .upstream = {.max_body_bytes = 1024 * 1024, .max_connections = 64},
        .frontend =
            {
                .listeners = &plain,
                .nlisteners = 1,
                .admin = {.host = "127.0.0.1", .port = 9100},
                .client_timeout_ms = 30000,
                .header_timeout_ms = 10000,
                .keepalive_timeout_ms = 60000,
                .max_connections = 16384,
                .max_requests_per_connection = 10000,
                .max_header_bytes = 64 * 1024,
                .max_uri_bytes = 4096,
            },
        .gateway =
            {
                .key_prefix = "jobgate:",
                .passthrough_window_ms = 300000,
                .rate_queue_ms = 2000,
                .max_waiters = 10000,
                .max_wait_ms = 15000,
            },
        .workers = 0,
        .shutdown_timeout_ms = 10000,
    };
    struct config c;
    config_defaults(&c);
    assert_null(c.file);
    assert_int_equal(c.nrule_files, 0);
    assert_config_values(&c, &documented);
    assert_non_null(c.upstream.user_agent);
    assert_true(strncmp(c.upstream.user_agent, "jobgate/", 8) == 0);
    config_free(&c);
}

/*
 * conf/jobgate.yaml says: "Every key is optional; shown with its default."
 * Loaded (beside a rules.d/ for its glob), it must give the defaults.
 */
static void test_shipped_conf_shows_the_defaults(void **state)
{
    char shipped[4096], rule[4096];
    unit_src_path(shipped, sizeof(shipped), "conf/jobgate.yaml");
    unit_src_path(rule, sizeof(rule), "lua-free-rules/elb-v1.yaml");
    char *conf_text = unit_read_file(shipped), *rule_text = unit_read_file(rule);
    assert_non_null(conf_text);
    assert_non_null(rule_text);
    char *dir = make_tmpdir();
    char path[4096];
    write_file(dir, "jobgate.yaml", conf_text, 0644, path, sizeof(path));
    make_dir(dir, "rules.d");
    write_file(dir, "rules.d/elb-v1.yaml", rule_text, 0644, NULL, 0);

    struct config want, got;
    struct conf_diag d;
    config_defaults(&want);
    /* The file writes the database number the default leaves implicit. */
    config_set_str(&want.cache.redis_url, "redis://127.0.0.1:6379/0");
    int rc = load_file(&got, path, &d);
    unit_print_diags(&d);
    assert_int_equal(rc, 0);
    assert_int_equal(d.count, 0);

    assert_int_equal(got.nrule_files, 1);
    assert_config_values(&got, &want);

    conf_diag_free(&d);
    config_free(&want);
    config_free(&got);
    rm_tree(dir);
    free(conf_text);
    free(rule_text);
}

/* -------------------------------------------------------- a full file */

static void test_full_config(void **state)
{
    /* Every value of tests/unit/data/config/full.yaml. */
    static struct listener_conf listeners[] = {
        {.host = "::1", .port = 9090, .client_auth = 1},
        {.host = "127.0.0.1", .port = 9091, .client_auth = 0},
    };
    static const struct config full = {
        .log_level = LOG_LEVEL_DEBUG,
        .cache =
            {
                .redis_url = "unix:/run/redis/redis.sock",
                .redis_budget_ms = 250,
                .redis_connect_timeout_ms = 2000,
                .redis_reconnect_min_ms = 50,
                .redis_reconnect_max_ms = 60000,
                .redis_max_pending = 500,
                .redis_notify = CACHE_NOTIFY_POLL,
                .memory_max_bytes = 256 * 1024 * 1024,
            },
        .upstream =
            {
                .ca_file = "/etc/ssl/certs/ca-certificates.crt",
                .max_body_bytes = 64 * 1024 * 1024,
                .max_connections = 8,
            },
        .frontend =
            {
                .listeners = listeners,
                .nlisteners = 2,
                .admin = {.host = "127.0.0.1", .port = 9190},
                .client_timeout_ms = 60000,
                .header_timeout_ms = 5000,
                .keepalive_timeout_ms = 20000,
                .max_connections = 500,
                .max_requests_per_connection = 100,
                .max_header_bytes = 16 * 1024,
                .max_uri_bytes = 2048,
                .allow_bare_lf = 1,
            },
        .gateway =
            {
                .key_prefix = "jg-test:",
                .upstream_url = "http://127.0.0.1:18080",
                .upstream_token = "tok-from-env",
                .passthrough_window_ms = 300000,
                .rate_queue_ms = 2000,
                .max_waiters = 50,
                .max_wait_ms = 3000,
            },
        .workers = 3,
        .shutdown_timeout_ms = 2000,
    };
    char path[4096], rules_d[4096];
    unit_data_path(path, sizeof(path), "config/full.yaml");
    unit_data_path(rules_d, sizeof(rules_d), "config/rules.d");
    assert_int_equal(setenv("JOBGATE_TEST_TOKEN", "tok-from-env", 1), 0);

    struct config c;
    struct conf_diag d;
    int rc = load_file(&c, path, &d);
    unit_print_diags(&d);
    assert_int_equal(rc, 0);
    assert_int_equal(d.count, 0);

    assert_string_equal(c.file, path);
    assert_config_values(&c, &full);

    /* The glob rules.d/ *.yaml, relative to the file's folder, sorted; README is not picked up. */
    assert_int_equal(c.nrule_files, 2);
    char want[4200];
    snprintf(want, sizeof(want), "%s/one.yaml", rules_d);
    assert_string_equal(c.rule_files[0], want);
    snprintf(want, sizeof(want), "%s/two.yaml", rules_d);
    assert_string_equal(c.rule_files[1], want);

    /* The resolved list is what the rule loader takes. */
    struct ruleset *rs = ruleset_load(c.rule_files, c.nrule_files, &d);
    unit_print_diags(&d);
    assert_non_null(rs);
    assert_int_equal(rs->count, 2);
    ruleset_unref(rs);

    conf_diag_free(&d);
    config_free(&c);
    unsetenv("JOBGATE_TEST_TOKEN");
}

/* The Redis credentials and the entry key: from the environment (or
 * files), each where it belongs; none of them by default. */
static void test_cache_credentials(void **state)
{
    struct config c;
    struct conf_diag d;
    assert_int_equal(setenv("JOBGATE_TEST_REDIS_PW", "redis-pw", 1), 0);
    assert_int_equal(setenv("JOBGATE_TEST_SENTINEL_PW", "sentinel-pw", 1), 0);
    assert_int_equal(setenv("JOBGATE_TEST_ENTRY_KEY", "0123456789abcdef0123", 1), 0);
    int rc = load_text(&c,
                       "cache:\n  redis: sentinel://10.0.0.1:26379,10.0.0.2/cache/1\n  redis_user: jg\n"
                       "  redis_password_env: JOBGATE_TEST_REDIS_PW\n  sentinel_user: watcher\n"
                       "  sentinel_password_env: JOBGATE_TEST_SENTINEL_PW\n"
                       "  entry_key_env: JOBGATE_TEST_ENTRY_KEY\n",
                       &d);
    unit_print_diags(&d);
    assert_int_equal(rc, 0);
    assert_string_equal(c.cache.redis_user, "jg");
    assert_string_equal(c.cache.redis_password, "redis-pw");
    assert_string_equal(c.cache.sentinel_user, "watcher");
    assert_string_equal(c.cache.sentinel_password, "sentinel-pw");
    assert_string_equal(c.cache.entry_key, "0123456789abcdef0123");
    conf_diag_free(&d);
    config_free(&c);
    assert_int_equal(load_text(&c, "cache:\n  redis: redis://10.0.0.1\n", &d), 0);
    assert_null(c.cache.redis_user);
    assert_null(c.cache.redis_password);
    assert_null(c.cache.sentinel_password);
    assert_null(c.cache.entry_key);
    conf_diag_free(&d);
    config_free(&c);
    unsetenv("JOBGATE_TEST_REDIS_PW");
    unsetenv("JOBGATE_TEST_SENTINEL_PW");
    unsetenv("JOBGATE_TEST_ENTRY_KEY");
}

/* cache.redis_tls: files resolved against the configuration's folder; the
 * sentinels follow redis_tls unless sentinel_tls says otherwise. */
static void test_cache_tls(void **state)
{
    /* Its first CA (unit_read_file reads 64 KiB: less than the bundle). */
    char *ca = unit_read_file("/etc/ssl/certs/ca-certificates.crt");
    assert_non_null(ca);
    char *end = strstr(ca, "-----END CERTIFICATE-----\n");
    assert_non_null(end);
    end[sizeof("-----END CERTIFICATE-----\n") - 1] = '\0';
    char *dir = make_tmpdir();
    char path[4096], want[4200];
    write_file(dir, "redis-ca.pem", ca, 0644, NULL, 0);
    write_file(dir, "jobgate.yaml",
               "cache:\n  redis: sentinel://10.0.0.1:26379/cache\n  redis_tls: on\n"
               "  redis_tls_ca_file: redis-ca.pem\n  redis_tls_server_name: redis.internal\n",
               0600, path, sizeof(path));
    struct config c;
    struct conf_diag d;
    int rc = load_file(&c, path, &d);
    unit_print_diags(&d);
    assert_int_equal(rc, 0);
    snprintf(want, sizeof(want), "%s/redis-ca.pem", dir);
    assert_int_equal(c.cache.redis_tls, 1);
    assert_int_equal(c.cache.sentinel_tls, 1);
    assert_string_equal(c.cache.redis_tls_ca_file, want);
    assert_null(c.cache.redis_tls_cert_file);
    assert_string_equal(c.cache.redis_tls_server_name, "redis.internal");
    conf_diag_free(&d);
    config_free(&c);
    write_file(dir, "jobgate.yaml",
               "cache:\n  redis: sentinel://10.0.0.1:26379/cache\n  redis_tls: on\n  sentinel_tls: off\n"
               "  redis_tls_ca_file: redis-ca.pem\n",
               0600, path, sizeof(path));
    assert_int_equal(load_file(&c, path, &d), 0);
    assert_int_equal(c.cache.redis_tls, 1);
    assert_int_equal(c.cache.sentinel_tls, 0);
    conf_diag_free(&d);
    config_free(&c);
    assert_int_equal(load_text(&c, "cache:\n  redis: redis://10.0.0.1\n", &d), 0);
    assert_int_equal(c.cache.redis_tls, 0);
    assert_null(c.cache.redis_tls_ca_file);
    conf_diag_free(&d);
    config_free(&c);
    rm_tree(dir);
    free(ca);
}

static void test_partial_file_keeps_defaults(void **state)
{
    struct config c;
    struct conf_diag d;
    assert_int_equal(load_text(&c, "listen: 0.0.0.0:9000\ncache:\n  redis: none\n", &d), 0);
    assert_int_equal(d.count, 0);
    assert_int_equal(c.frontend.nlisteners, 1);
    assert_string_equal(c.frontend.listeners[0].host, "0.0.0.0");
    assert_int_equal(c.frontend.listeners[0].port, 9000);
    assert_null(c.cache.redis_url);
    /* Everything else as config_defaults left it. */
    assert_int_equal(c.log_level, LOG_LEVEL_INFO);
    assert_int_equal(c.cache.redis_budget_ms, 50);
    assert_int_equal(c.cache.memory_max_bytes, 64 * 1024 * 1024);
    assert_string_equal(c.gateway.key_prefix, "jobgate:");
    assert_int_equal(c.shutdown_timeout_ms, 10000);
    assert_int_equal(c.nrule_files, 0);
    conf_diag_free(&d);
    config_free(&c);
}

static void test_missing_file(void **state)
{
    struct config c;
    struct conf_diag d;
    assert_int_equal(load_file(&c, "/nonexistent/jobgate/jobgate.yaml", &d), -1);
    assert_non_null(unit_find_diag(&d, "/nonexistent/jobgate/jobgate.yaml: ", "cannot open"));
    conf_diag_free(&d);
    config_free(&c);
}

/* ---------------------------------------------------------- rule globs */

static void test_rules_relative_to_config_folder(void **state)
{
    char *dir = make_tmpdir();
    char conf[4096], rule[4096], abs_rule[PATH_MAX], cwd[4096];
    unit_data_path(rule, sizeof(rule), "rules/minimal.yaml");
    assert_non_null(realpath(rule, abs_rule)); /* JOBGATE_SRCDIR may be relative */
    /* Relative entries are relative to the file's folder, never to the working directory. */
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    assert_string_not_equal(cwd, dir);

    make_dir(dir, "rules.d");
    make_dir(dir, "more");
    write_file(dir, "rules.d/b.yaml", "name: b\n", 0600, NULL, 0);
    write_file(dir, "rules.d/a.yaml", "name: a\n", 0600, NULL, 0);
    write_file(dir, "rules.d/a.yaml.orig", "name: old\n", 0600, NULL, 0);
    write_file(dir, "more/c.yaml", "name: c\n", 0600, NULL, 0);
    char text[8192];
    snprintf(text, sizeof(text), "rules:\n  - rules.d/*.yaml\n  - more/c.yaml\n  - %s\n", abs_rule);
    write_file(dir, "jobgate.yaml", text, 0600, conf, sizeof(conf));

    struct config c;
    struct conf_diag d;
    int rc = load_file(&c, conf, &d);
    unit_print_diags(&d);
    assert_int_equal(rc, 0);
    assert_int_equal(c.nrule_files, 4);
    char want[4200];
    snprintf(want, sizeof(want), "%s/rules.d/a.yaml", dir);
    assert_string_equal(c.rule_files[0], want);
    snprintf(want, sizeof(want), "%s/rules.d/b.yaml", dir);
    assert_string_equal(c.rule_files[1], want);
    snprintf(want, sizeof(want), "%s/more/c.yaml", dir);
    assert_string_equal(c.rule_files[2], want);
    assert_string_equal(c.rule_files[3], abs_rule);

    /* Loading again replaces the list, it does not append to it. */
    rc = config_load(&c, conf, &d);
    assert_int_equal(rc, 0);
    assert_int_equal(c.nrule_files, 4);

    conf_diag_free(&d);
    config_free(&c);
    rm_tree(dir);
}

/* ---------------------------------------------------- broken files */

/* The loader of unit_check_bad_file for data/config-bad/: a configuration file must be refused. */
static int load_bad_config(const char *name, const char *path, struct conf_diag *d)
{
    unsetenv("JOBGATE_TEST_UNSET_TOKEN");
    assert_int_equal(setenv("JOBGATE_TEST_TOKEN", "tok", 1), 0);
    struct config c;
    int rc = load_file(&c, path, d);
    config_free(&c);
    unsetenv("JOBGATE_TEST_TOKEN");
    if (rc == -1)
        return 0;
    print_error("  %s loaded (rc %d), want an error\n", name, rc);
    return 1;
}

static void test_bad_config_file(void **state)
{
    unit_check_bad_file("config-bad", *state, load_bad_config);
}

static void test_every_bad_file_is_listed(void **state)
{
    unit_check_folder_listed("config-bad", bad_config_files, NBAD, "BAD_CONFIG_FILES");
}

static void test_all_mistakes_reported_at_once(void **state)
{
    /* `jobgate -t` reports every mistake, not the first one only. */
    struct config c;
    struct conf_diag d;
    int rc = load_text(&c,
                       "listen: nowhere\n"
                       "log_level: loud\n"
                       "colour: blue\n"
                       "cache:\n"
                       "  memory_max: lots\n"
                       "client:\n"
                       "  timeout: 1 fortnight\n",
                       &d);
    assert_int_equal(rc, -1);
    if (d.count != 5)
        unit_print_diags(&d);
    assert_int_equal(d.count, 5);
    assert_non_null(unit_find_diag(&d, "", ":1:9: 'listen'"));
    assert_non_null(unit_find_diag(&d, "", ":2:12: 'log_level'"));
    assert_non_null(unit_find_diag(&d, "", ":3:1: unknown key 'colour'"));
    assert_non_null(unit_find_diag(&d, "", ":5:15: 'memory_max'"));
    assert_non_null(unit_find_diag(&d, "", ":7:12: 'timeout'"));
    conf_diag_free(&d);
    config_free(&c);
}

/* -------------------------------------------------------------- listen */

struct listen_case {
    const char *text;
    int ok;
    const char *host;
    int port;
};

static void test_parse_listen(void **state)
{
    static const struct listen_case cases[] = {
        {"127.0.0.1:8080", 1, "127.0.0.1", 8080},
        {"0.0.0.0:80", 1, "0.0.0.0", 80},
        {"localhost:65535", 1, "localhost", 65535},
        {"[::1]:8443", 1, "::1", 8443},
        {"[::]:8080", 1, "::", 8080},
        {"8080", 0, NULL, 0},
        {":8080", 0, NULL, 0},
        {"127.0.0.1:", 0, NULL, 0},
        {"127.0.0.1", 0, NULL, 0},
        {"127.0.0.1:65536", 0, NULL, 0},
        {"127.0.0.1:-1", 0, NULL, 0},
        {"127.0.0.1:80x", 0, NULL, 0},
        {"127.0.0.1:http", 0, NULL, 0},
        {"[::1]8080", 0, NULL, 0},
        {"[::1:8080", 0, NULL, 0},
        {"[::1]:", 0, NULL, 0},
        {"", 0, NULL, 0},
    };
    int failed = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *host = strdup("unchanged");
        int port = -42;
        int rc = config_parse_listen(cases[i].text, &host, &port);
        if (cases[i].ok) {
            UNIT_EXPECT(failed, rc == 0 && strcmp(host, cases[i].host) == 0 && port == cases[i].port,
                        "'%s': rc %d host '%s' port %d", cases[i].text, rc, host, port);
        } else {
            UNIT_EXPECT(failed, rc == -1 && strcmp(host, "unchanged") == 0 && port == -42,
                        "'%s' accepted or changed the output: rc %d host '%s' port %d", cases[i].text, rc, host, port);
        }
        free(host);
    }
    assert_int_equal(failed, 0);
}

/* --------------------------------------------------------------- redis */

struct redis_case {
    const char *value;
    int ok;
};

static void test_set_redis(void **state)
{
    static const struct redis_case cases[] = {
        {"redis://127.0.0.1:6379/0", 1},
        {"redis://127.0.0.1:6379", 1},
        {"redis://redis.internal:6380/15", 1},
        {"redis://redis.internal", 1},
        {"redis://redis.internal/", 1},
        {"redis://[::1]:6379/2", 1},
        {"unix:/run/redis/redis.sock", 1},
        {"unix:///run/redis/redis.sock", 1},
        {"redis://:s3cret@127.0.0.1:6379/0", 0},
        {"redis://default:s3cret@127.0.0.1:6379/0", 0},
        {"redis://s3cret@127.0.0.1:6379", 0},
        {"redis://127.0.0.1:0", 0},
        {"redis://127.0.0.1:65536", 0},
        {"redis://127.0.0.1:port", 0},
        {"redis://127.0.0.1:6379x", 0},
        {"redis://127.0.0.1:6379/db", 0},
        {"redis://127.0.0.1:6379/-1", 0},
        {"redis://:6379", 0},
        {"redis://", 0},
        {"redis://[::1:6379", 0},
        {"unix:redis.sock", 0},
        {"unix:", 0},
        {"http://127.0.0.1:6379", 0},
        {"127.0.0.1:6379", 0},
        {"", 0},
        {"None", 0},
    };
    int failed = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct config c;
        char err[256] = "";
        config_defaults(&c);
        int rc = config_set_redis(&c, cases[i].value, err, sizeof(err));
        if (cases[i].ok) {
            UNIT_EXPECT(failed, rc == 0 && c.cache.redis_url && strcmp(c.cache.redis_url, cases[i].value) == 0,
                        "'%s' refused: %s", cases[i].value, err);
        } else {
            UNIT_EXPECT(failed, rc == -1 && err[0] != '\0', "'%s' accepted", cases[i].value);
            UNIT_EXPECT(failed, c.cache.redis_url && strcmp(c.cache.redis_url, "redis://127.0.0.1:6379") == 0,
                        "'%s' refused but changed the URL", cases[i].value);
        }
        config_free(&c);
    }
    assert_int_equal(failed, 0);

    /* "none": the embedded cache. */
    struct config c;
    char err[256];
    config_defaults(&c);
    assert_int_equal(config_set_redis(&c, "none", err, sizeof(err)), 0);
    assert_null(c.cache.redis_url);
    assert_int_equal(config_set_redis(&c, "redis://h:1", err, sizeof(err)), 0);
    assert_string_equal(c.cache.redis_url, "redis://h:1");
    config_free(&c);
}

/*
 * A password in a Redis URL is refused, but the refusal must not print the
 * password: the diagnostic goes to the terminal, the journal, CI logs. (The
 * log contract: never log a secret.)
 */
static void test_redis_refusal_does_not_echo_password(void **state)
{
    static const char *const urls[] = {"redis://:s3cret@127.0.0.1:6379/0", "redis://default:s3cret@127.0.0.1:6379/0"};
    int failed = 0;
    for (size_t i = 0; i < sizeof(urls) / sizeof(urls[0]); i++) {
        struct config c;
        char err[256] = "";
        config_defaults(&c);
        assert_int_equal(config_set_redis(&c, urls[i], err, sizeof(err)), -1);
        UNIT_EXPECT(failed, strstr(err, "s3cret") == NULL, "the message shows the password: %s", err);
        config_free(&c);

        char text[512];
        struct conf_diag d;
        snprintf(text, sizeof(text), "cache:\n  redis: %s\n", urls[i]);
        assert_int_equal(load_text(&c, text, &d), -1);
        for (size_t k = 0; k < d.count; k++)
            UNIT_EXPECT(failed, strstr(d.lines[k], "s3cret") == NULL, "the diagnostic shows the password: %s",
                        d.lines[k]);
        conf_diag_free(&d);
        config_free(&c);
    }
    assert_int_equal(failed, 0);
}

/* --------------------------------------------------------------- token */

static void test_token_env(void **state)
{
    struct config c;
    struct conf_diag d;
    assert_int_equal(setenv("JOBGATE_TEST_TOKEN", "MIIZ tok-from-env ==", 1), 0);
    assert_int_equal(load_text(&c, "upstream:\n  token_env: JOBGATE_TEST_TOKEN\n", &d), 0);
    assert_int_equal(d.count, 0);
    assert_string_equal(c.gateway.upstream_token, "MIIZ tok-from-env ==");
    conf_diag_free(&d);
    config_free(&c);

    /* Set but empty counts as not set. */
    assert_int_equal(setenv("JOBGATE_TEST_TOKEN", "", 1), 0);
    assert_int_equal(load_text(&c, "upstream:\n  token_env: JOBGATE_TEST_TOKEN\n", &d), -1);
    assert_non_null(unit_find_diag(&d, "", ":2:14: environment variable 'JOBGATE_TEST_TOKEN'"));
    assert_null(c.gateway.upstream_token);
    conf_diag_free(&d);
    config_free(&c);
    unsetenv("JOBGATE_TEST_TOKEN");
}

/* Load a configuration whose token_file is DIR/NAME, written first with `content` and `mode`. */
static int load_token_file(const char *dir, const char *name, const char *content, mode_t mode, struct config *c,
                           struct conf_diag *d)
{
    char token[4096], text[8192];
    write_file(dir, name, content, mode, token, sizeof(token));
    snprintf(text, sizeof(text), "upstream:\n  token_file: %s\n", token);
    return load_text(c, text, d);
}

static void test_token_file(void **state)
{
    char *dir = make_tmpdir();
    char text[8192];
    struct config c;
    struct conf_diag d;

    /* First line only, its newline dropped. */
    assert_int_equal(load_token_file(dir, "token", "tok-123\nsecond line\n", 0600, &c, &d), 0);
    unit_print_diags(&d);
    assert_int_equal(d.count, 0);
    assert_string_equal(c.gateway.upstream_token, "tok-123");
    conf_diag_free(&d);
    config_free(&c);

    assert_int_equal(load_token_file(dir, "token-crlf", "tok-456\r\n", 0600, &c, &d), 0);
    assert_string_equal(c.gateway.upstream_token, "tok-456");
    conf_diag_free(&d);
    config_free(&c);

    /* Empty: an error. */
    assert_int_equal(load_token_file(dir, "token-empty", "\n", 0600, &c, &d), -1);
    assert_non_null(unit_find_diag(&d, "", ":2:15: token file ... is empty"));
    assert_null(c.gateway.upstream_token);
    conf_diag_free(&d);
    config_free(&c);

    /* Missing: an error. */
    snprintf(text, sizeof(text), "upstream:\n  token_file: %s/no-such-token\n", dir);
    assert_int_equal(load_text(&c, text, &d), -1);
    assert_non_null(unit_find_diag(&d, "", ":2:15: cannot read token file"));
    assert_null(c.gateway.upstream_token);
    conf_diag_free(&d);
    config_free(&c);

    /* Readable by everyone: loaded; the warning goes to the log, not to the
     * diagnostics (which would make `jobgate -t` fail). */
    assert_int_equal(load_token_file(dir, "token-public", "tok-789\n", 0644, &c, &d), 0);
    assert_string_equal(c.gateway.upstream_token, "tok-789");
    assert_int_equal(d.count, 0);
    conf_diag_free(&d);
    config_free(&c);

    rm_tree(dir);
}

/* ------------------------------------------------------- upstream.auth */

/* The old token keys are mode token; with no credentials at all, passthrough. */
static void test_auth_default_and_old_token_keys(void **state)
{
    struct config c;
    struct conf_diag d;
    config_defaults(&c);
    assert_int_equal(c.credentials.mode, CRED_PASSTHROUGH);
    assert_int_equal(c.credentials.refresh_before_ms, 3600 * 1000);
    assert_int_equal(c.credentials.iam_timeout_ms, 10000);
    assert_int_equal(c.credentials.retry_min_ms, 1000);
    assert_int_equal(c.credentials.retry_max_ms, 60000);
    config_free(&c);

    assert_int_equal(setenv("JOBGATE_TEST_TOKEN", "tok-old-way", 1), 0);
    assert_int_equal(load_text(&c, "upstream:\n  token_env: JOBGATE_TEST_TOKEN\n", &d), 0);
    assert_int_equal(c.credentials.mode, CRED_TOKEN);
    assert_string_equal(c.credentials.token, "tok-old-way");
    assert_string_equal(c.gateway.upstream_token, "tok-old-way");
    conf_diag_free(&d);
    config_free(&c);

    assert_int_equal(load_text(&c, "upstream:\n  auth:\n    mode: token\n    token_env: JOBGATE_TEST_TOKEN\n", &d), 0);
    assert_int_equal(c.credentials.mode, CRED_TOKEN);
    assert_string_equal(c.credentials.token, "tok-old-way");
    assert_string_equal(c.gateway.upstream_token, "tok-old-way"); /* the gateway still reads this one */
    conf_diag_free(&d);
    config_free(&c);
    unsetenv("JOBGATE_TEST_TOKEN");

    assert_int_equal(load_text(&c, "upstream:\n  auth:\n    mode: passthrough\n", &d), 0);
    assert_int_equal(c.credentials.mode, CRED_PASSTHROUGH);
    assert_null(c.gateway.upstream_token);
    conf_diag_free(&d);
    config_free(&c);
}

static void test_auth_iam(void **state)
{
    char *dir = make_tmpdir();
    char pw[4096], text[8192];
    struct config c;
    struct conf_diag d;
    write_file(dir, "iam-password", "pa ss\"word\n", 0600, pw, sizeof(pw));
    snprintf(text, sizeof(text),
             "upstream:\n"
             "  auth:\n"
             "    mode: iam\n"
             "    iam_url: https://iam.eu-west-0.myhuaweicloud.com\n"
             "    user: svc-jobgate\n"
             "    domain: mydomain\n"
             "    password_file: %s\n"
             "    refresh_before: 30m\n"
             "    iam_timeout: 5s\n"
             "    retry_min: 250ms\n"
             "    retry_max: 2m\n",
             pw);
    int rc = load_text(&c, text, &d);
    unit_print_diags(&d);
    assert_int_equal(rc, 0);
    assert_int_equal(c.credentials.mode, CRED_IAM);
    assert_string_equal(c.credentials.iam_url, "https://iam.eu-west-0.myhuaweicloud.com");
    assert_string_equal(c.credentials.user, "svc-jobgate");
    assert_string_equal(c.credentials.domain, "mydomain");
    assert_string_equal(c.credentials.password, "pa ss\"word");
    assert_int_equal(c.credentials.refresh_before_ms, 30 * 60 * 1000);
    assert_int_equal(c.credentials.iam_timeout_ms, 5000);
    assert_int_equal(c.credentials.retry_min_ms, 250);
    assert_int_equal(c.credentials.retry_max_ms, 120000);
    assert_null(c.gateway.upstream_token); /* not a static token: the gateway must ask the credentials */
    conf_diag_free(&d);
    config_free(&c);
    rm_tree(dir);
}

static void test_auth_aksk(void **state)
{
    struct config c;
    struct conf_diag d;
    assert_int_equal(setenv("JOBGATE_TEST_SK", "sk-from-env", 1), 0);
    assert_int_equal(
        load_text(&c, "upstream:\n  auth:\n    mode: aksk\n    ak: AKIDEXAMPLE\n    sk_env: JOBGATE_TEST_SK\n", &d), 0);
    assert_int_equal(c.credentials.mode, CRED_AKSK);
    assert_string_equal(c.credentials.ak, "AKIDEXAMPLE");
    assert_string_equal(c.credentials.sk, "sk-from-env");
    assert_null(c.gateway.upstream_token);
    conf_diag_free(&d);
    config_free(&c);
    unsetenv("JOBGATE_TEST_SK");
}

/* A diagnostic names the variable or the file, never the secret in it. */
static void test_auth_diagnostics_hold_no_secret(void **state)
{
    static const char *const texts[] = {
        "upstream:\n  auth:\n    mode: iam\n    iam_url: iam.example\n    user: u\n    domain: d\n"
        "    password_env: JOBGATE_TEST_SECRET\n",
        "upstream:\n  auth:\n    mode: iam\n    iam_url: https://iam.example\n    user: u\n    domain: d\n"
        "    password_env: JOBGATE_TEST_SECRET\n    retry_min: 1m\n    retry_max: 1s\n",
        "upstream:\n  auth:\n    mode: aksk\n    ak: 'A K'\n    sk_env: JOBGATE_TEST_SECRET\n",
        "upstream:\n  auth:\n    mode: token\n    token_env: JOBGATE_TEST_SECRET\n    ak: AK\n",
    };
    int failed = 0;
    assert_int_equal(setenv("JOBGATE_TEST_SECRET", "s3cret-value", 1), 0);
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        struct config c;
        struct conf_diag d;
        UNIT_EXPECT(failed, load_text(&c, texts[i], &d) == -1, "case %zu was accepted", i);
        UNIT_EXPECT(failed, d.count > 0, "case %zu: no diagnostic", i);
        for (size_t k = 0; k < d.count; k++)
            UNIT_EXPECT(failed, strstr(d.lines[k], "s3cret") == NULL, "the diagnostic shows the secret: %s",
                        d.lines[k]);
        conf_diag_free(&d);
        config_free(&c);
    }
    unsetenv("JOBGATE_TEST_SECRET");
    assert_int_equal(failed, 0);
}

/* ----------------------------------------------------- durations, sizes */

struct ms_case {
    const char *text;
    int forever_ok;
    int ok;
    int64_t ms;
};

static void test_parse_durations(void **state)
{
    static const struct ms_case cases[] = {
        {"250ms", 0, 1, 250},
        {"2s", 0, 1, 2000},
        {"2", 0, 1, 2000}, /* a bare number is seconds */
        {"0", 0, 1, 0},
        {"0ms", 0, 1, 0},
        {"1.5s", 0, 1, 1500},
        {"5m", 0, 1, 300000},
        {"1h", 0, 1, 3600000},
        {"1d", 0, 1, 86400000},
        {"forever", 1, 1, YCONF_FOREVER},
        {"forever", 0, 0, 0},
        {"Forever", 1, 0, 0},
        {"2 parsecs", 0, 0, 0},
        {"2parsecs", 0, 0, 0},
        {"2 s", 0, 0, 0},
        {"2sec", 0, 0, 0},
        {"2S", 0, 0, 0},
        {"2ms5", 0, 0, 0},
        {"-1s", 0, 0, 0},
        {"-1", 1, 0, 0},
        {"s", 0, 0, 0},
        {"ms", 0, 0, 0},
        {"", 0, 0, 0},
        {"abc", 0, 0, 0},
        {"1e400s", 0, 0, 0},
        {"1e300", 0, 0, 0},
        {"inf", 0, 0, 0},
        {"infinity", 1, 0, 0},
    };
    int failed = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t v = 12345;
        int rc = yconf_parse_ms(cases[i].text, cases[i].forever_ok, &v);
        if (cases[i].ok)
            UNIT_EXPECT(failed, rc == 0 && v == cases[i].ms, "'%s': rc %d, %lld ms, want %lld", cases[i].text, rc,
                        (long long)v, (long long)cases[i].ms);
        else
            UNIT_EXPECT(failed, rc == -1 && v == 12345, "'%s' accepted (rc %d, %lld ms)", cases[i].text, rc,
                        (long long)v);
    }
    assert_int_equal(failed, 0);
}

/*
 * "nan" is read by strtod as a number. Converting NaN to int64_t is
 * undefined behaviour; the parser must refuse it. Run in a child process:
 * with a sanitizer that checks float casts the child dies instead of
 * answering, and that must fail only this test.
 */
static void test_parse_duration_nan(void **state)
{
    static const char *const nans[] = {"nan", "NaN", "nanms", "-nan", "nan(0x1)s"};
    int failed = 0;
    for (size_t i = 0; i < sizeof(nans) / sizeof(nans[0]); i++) {
        fflush(NULL);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            int64_t v = 12345;
            int rc = yconf_parse_ms(nans[i], 1, &v);
            _exit(rc == -1 && v == 12345 ? 0 : 1);
        }
        int status = 0;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        UNIT_EXPECT(failed, WIFEXITED(status) && WEXITSTATUS(status) == 0,
                    "'%s' accepted as a duration (or undefined behaviour caught), wait status %d", nans[i], status);
    }
    assert_int_equal(failed, 0);
}

struct size_case {
    const char *text;
    int ok;
    size_t bytes;
};

static void test_parse_sizes(void **state)
{
    static const struct size_case cases[] = {
        {"512", 1, 512},
        {"512B", 1, 512},
        {"64KiB", 1, 64 * 1024},
        {"8MiB", 1, 8 * 1024 * 1024},
        {"64MiB", 1, 64 * 1024 * 1024},
        {"1GiB", 1, 1024 * 1024 * 1024},
        {"\"64MiB\"", 1, 64 * 1024 * 1024}, /* quoted in YAML: the same scalar */
        {"64 MiB", 0, 0},
        {"64mib", 0, 0},
        {"64MB", 0, 0},
        {"1.5MiB", 0, 0},
        {"-1", 0, 0},
        {"\" -1\"", 0, 0},
        {"0x10", 0, 0},
        {"MiB", 0, 0},
        {"\"\"", 0, 0},
        {"18446744073709551616", 0, 0},
        {"99999999999GiB", 0, 0},
        {"2GiB", 0, 0}, /* over the maximum of 1GiB below */
        {"511", 0, 0},  /* under the minimum of 512 below */
        {"[1, 2]", 0, 0},
    };
    int failed = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char text[128];
        snprintf(text, sizeof(text), "size: %s\n", cases[i].text);
        struct yconf y;
        struct conf_diag d;
        conf_diag_init(&d);
        assert_int_equal(yconf_load_string(&y, "sizes", text, strlen(text), &d), 0);
        size_t v = 777;
        int rc = yconf_get_bytes(&y, yconf_root(&y), "size", 512, (size_t)1 << 30, &v, &d);
        if (cases[i].ok) {
            UNIT_EXPECT(failed, rc == 0 && v == cases[i].bytes && d.count == 0, "'%s': rc %d, %zu bytes, want %zu",
                        cases[i].text, rc, v, cases[i].bytes);
        } else {
            UNIT_EXPECT(failed, rc == -1 && v == 777, "'%s' accepted (%zu bytes)", cases[i].text, v);
            UNIT_EXPECT(failed, d.count == 1 && strncmp(d.lines[0], "sizes:1:7: ", 11) == 0, "'%s': diagnostic '%s'",
                        cases[i].text, d.count ? d.lines[0] : "(none)");
        }
        yconf_free(&y);
        conf_diag_free(&d);
    }
    assert_int_equal(failed, 0);

    /* Absent: 0, and the value left as it was. */
    struct yconf y;
    struct conf_diag d;
    conf_diag_init(&d);
    assert_int_equal(yconf_load_string(&y, "sizes", "other: 1\n", 9, &d), 0);
    size_t v = 777;
    assert_int_equal(yconf_get_bytes(&y, yconf_root(&y), "size", 1, 100, &v, &d), 0);
    assert_int_equal(v, 777);
    yconf_free(&y);
    conf_diag_free(&d);
}

static void test_set_str(void **state)
{
    char *s = NULL;
    config_set_str(&s, "a");
    assert_string_equal(s, "a");
    config_set_str(&s, "bb");
    assert_string_equal(s, "bb");
    config_set_str(&s, NULL);
    assert_null(s);
}

#define AS_TEST(f) {"config-bad/" f, test_bad_config_file, NULL, NULL, (void *)(f)},

int main(void)
{
    /* One test a line, the per-file tests last. */
    /* clang-format off */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_shipped_conf_shows_the_defaults),
        cmocka_unit_test(test_full_config),
        cmocka_unit_test(test_partial_file_keeps_defaults),
        cmocka_unit_test(test_cache_credentials),
        cmocka_unit_test(test_cache_tls),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_rules_relative_to_config_folder),
        cmocka_unit_test(test_every_bad_file_is_listed),
        cmocka_unit_test(test_all_mistakes_reported_at_once),
        cmocka_unit_test(test_parse_listen),
        cmocka_unit_test(test_set_redis),
        cmocka_unit_test(test_redis_refusal_does_not_echo_password),
        cmocka_unit_test(test_token_env),
        cmocka_unit_test(test_token_file),
        cmocka_unit_test(test_auth_default_and_old_token_keys),
        cmocka_unit_test(test_auth_iam),
        cmocka_unit_test(test_auth_aksk),
        cmocka_unit_test(test_auth_diagnostics_hold_no_secret),
        cmocka_unit_test(test_parse_durations),
        cmocka_unit_test(test_parse_duration_nan),
        cmocka_unit_test(test_parse_sizes),
        cmocka_unit_test(test_set_str),
        BAD_CONFIG_FILES(AS_TEST)
    };
    /* clang-format on */
    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
