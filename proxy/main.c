/*
 * jobgate: a caching gateway for asynchronous cloud job-status APIs.
 * main.c only wires the modules together: configuration and rules, the
 * event loop, the cache, the upstream client, the gateway and the front end,
 * then runs until SIGTERM/SIGINT and shuts down gracefully.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <curl/curl.h>
#include <event2/event.h>

#include "audit.h"
#include "cache.h"
#include "clientkeys.h"
#include "config.h"
#include "credentials.h"
#include "frontend.h"
#include "gateway.h"
#include "iamregion.h"
#include "guardshm.h"
#include "log.h"
#include "metrics.h"
#include "rules.h"
#include "upstream.h"
#include "workers.h"

#define DEFAULT_CONFIG SYSCONFDIR "/jobgate/jobgate.yaml"

struct options {
    const char *config_file;
    int test_only;
    const char *listen;
    const char *admin_listen;
    const char *upstream;
    const char *redis;
    const char *workers;
};

/* Everything the running daemon holds, for the signal handlers and teardown. */
struct daemon {
    const struct options *opts;
    struct config *cfg; /* the configuration in force; replaced by a successful reload */
    struct event_base *base;
    struct frontend *frontend;
    struct gateway *gateway;
    struct credentials *credentials; /* jobgate's cloud credentials: set at start, kept across reloads */
    struct iamregion *iamregion;     /* projects' regions from IAM (regions.iam_url): set at start, kept */
    struct audit *audit;             /* opened at start, reopened on SIGUSR1 */
    struct event *deadline;
    int stopping;
};

/* What main hands to each worker. */
struct boot {
    const struct options *opts;
    struct config *cfg;
    struct ruleset *rules;
    struct clientkeys *keys;
    struct metrics *metrics; /* shared by every worker (metrics.h) */
    int reuse_port;
    struct guardshm *guard_shm; /* the upstream guards' state, shared by the workers */
    int workers;
};

static int run_daemon(int index, void *arg);

static void usage(FILE *out)
{
    fprintf(out, "usage: jobgate [-c FILE] [-t] [--listen HOST:PORT] [--admin-listen HOST:PORT|off]\n"
                 "               [--upstream URL] [--redis URL|none] [--workers N|auto] [--version] [--help]\n"
                 "\n"
                 "  -c, --config FILE    configuration file (default " DEFAULT_CONFIG ")\n"
                 "  -t, --test           check the configuration and rules, print FILE:LINE:COL: errors, exit 0 or 1\n"
                 "      --listen H:P     address to serve clients on (overrides 'listen')\n"
                 "      --admin-listen H:P|off  address of /metrics and /healthz details (overrides 'admin.listen')\n"
                 "      --upstream URL   base URL for every rule's upstream (overrides the rules' and 'upstream.url')\n"
                 "      --redis URL      redis://HOST:PORT[/DB], sentinel://HOST:PORT[,...]/MASTER[/DB], unix:PATH,\n"
                 "                       or none for the embedded cache\n"
                 "      --hash-key       read a client key on standard input, print its key_sha256 for the keys file\n"
                 "      --workers N      worker processes (overrides 'workers'; auto: one per core with Redis,\n"
                 "                       one with the embedded cache)\n"
                 "  -v, --version        print the version\n"
                 "  -h, --help           print this help\n"
                 "\n"
                 "Signals: SIGTERM/SIGINT stop accepting, finish requests in flight (up to shutdown_timeout), exit 0;\n"
                 "         SIGHUP reloads the configuration and rules (a bad set is refused, the old one kept).\n");
}

/* --hash-key: read a client key from standard input (never from the command
 * line, where ps and shell history would keep it) and print its key_sha256. */
static int hash_key_from_stdin(void)
{
    char key[CLIENTKEYS_KEY_MAX + 2];
    char hex[DIGEST_SHA256_HEX_SIZE];
    if (!fgets(key, sizeof(key), stdin)) {
        fprintf(stderr, "jobgate: --hash-key reads the key from standard input\n");
        return 1;
    }
    key[strcspn(key, "\r\n")] = '\0';
    int rc = clientkeys_hash_hex(key, hex);
    explicit_bzero(key, sizeof(key));
    if (rc < 0) {
        fprintf(stderr, "jobgate: a key is 1 to %d visible ASCII characters, no spaces\n", CLIENTKEYS_KEY_MAX);
        return 1;
    }
    printf("%s\n", hex);
    return 0;
}

static int parse_options(int argc, char **argv, struct options *o)
{
    enum { OPT_LISTEN = 256, OPT_ADMIN_LISTEN, OPT_UPSTREAM, OPT_REDIS, OPT_WORKERS, OPT_HASH_KEY };
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"test", no_argument, NULL, 't'},
        {"listen", required_argument, NULL, OPT_LISTEN},
        {"admin-listen", required_argument, NULL, OPT_ADMIN_LISTEN},
        {"upstream", required_argument, NULL, OPT_UPSTREAM},
        {"redis", required_argument, NULL, OPT_REDIS},
        {"workers", required_argument, NULL, OPT_WORKERS},
        {"hash-key", no_argument, NULL, OPT_HASH_KEY},
        {"version", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int ch;
    while ((ch = getopt_long(argc, argv, "c:tvh", longopts, NULL)) != -1) {
        switch (ch) {
        case 'c': o->config_file = optarg; break;
        case 't': o->test_only = 1; break;
        case OPT_LISTEN: o->listen = optarg; break;
        case OPT_ADMIN_LISTEN: o->admin_listen = optarg; break;
        case OPT_UPSTREAM: o->upstream = optarg; break;
        case OPT_REDIS: o->redis = optarg; break;
        case OPT_WORKERS: o->workers = optarg; break;
        case OPT_HASH_KEY: exit(hash_key_from_stdin());
        case 'v': printf("jobgate %s\n", PACKAGE_VERSION); exit(0);
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "jobgate: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return -1;
    }
    return 0;
}

/* Configuration file, then flags over it. Returns 0 or -1 (diagnostics in d). */
static int load_config(const struct options *o, struct config *cfg, struct conf_diag *d)
{
    int rc = 0;
    config_defaults(cfg);
    const char *file = o->config_file ? o->config_file : DEFAULT_CONFIG;
    if (config_load(cfg, file, d) < 0)
        rc = -1;
    char err[256];
    if (o->listen && config_set_listen(cfg, o->listen) < 0) {
        conf_diag_add(d, "--listen", 0, 0, "'%s' is not HOST:PORT", o->listen);
        rc = -1;
    }
    if (o->admin_listen && config_set_admin_listen(cfg, o->admin_listen) < 0) {
        conf_diag_add(d, "--admin-listen", 0, 0, "'%s' is not HOST:PORT or off", o->admin_listen);
        rc = -1;
    }
    if (o->redis && config_set_redis(cfg, o->redis, err, sizeof(err)) < 0) {
        conf_diag_add(d, "--redis", 0, 0, "%s", err);
        rc = -1;
    }
    if (o->workers && config_set_workers(cfg, o->workers) < 0) {
        conf_diag_add(d, "--workers", 0, 0, "'%s' is not a number of workers (1-256) or auto", o->workers);
        rc = -1;
    }
    if (o->upstream && config_set_upstream_url(cfg, o->upstream) < 0) {
        conf_diag_add(d, "--upstream", 0, 0, "'%s' must start with https:// or http://", o->upstream);
        rc = -1;
    }
    return rc;
}

/* Each client connection takes a file descriptor (two while its request
 * waits on upstream): make room for max_connections, within the hard limit. */
static void raise_fd_limit(size_t max_connections)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return;
    rlim_t want = (rlim_t)max_connections + 1024;
    if (rl.rlim_cur >= want)
        return;
    rl.rlim_cur = want < rl.rlim_max ? want : rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur < want)
        log_warn("open files limit is %llu: fewer than client.max_connections (%zu) connections can be served",
                 (unsigned long long)rl.rlim_cur, max_connections);
}

/* Answers are queued, not yet written, when the last request is done:
 * evhttp 2.1 tells nobody when a connection's output has drained (and never
 * for a client that went away), so the loop runs this much longer to write
 * them out. Loopback and LAN clients need microseconds of it. */
static const struct timeval flush_grace = {0, 250000};

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct daemon *d = arg;
    size_t left = gateway_in_flight(d->gateway);
    if (left)
        log_warn("shutdown timeout: answering %zu request(s) still in flight with 503", left);
    gateway_abort_all(d->gateway);
    event_base_loopexit(d->base, &flush_grace);
}

static void on_idle(void *arg)
{
    struct daemon *d = arg;
    evtimer_del(d->deadline);
    event_base_loopexit(d->base, &flush_grace);
}

/* The policy files a configuration names: every rule file and the client
 * keys file. Returns 0 with both loaded (*keys NULL when no keys file is
 * configured), or -1 with every problem in `d` and nothing loaded. */
static int load_policy(const struct config *cfg, struct ruleset **rules, struct clientkeys **keys, struct conf_diag *d)
{
    *rules = ruleset_load(cfg->rule_files, cfg->nrule_files, d);
    *keys = cfg->client_keys_file ? clientkeys_load(cfg->client_keys_file, d) : NULL;
    int ok = *rules && (!cfg->client_keys_file || *keys);
    if (ok && *keys && clientkeys_check_rules(*keys, *rules, d) < 0)
        ok = 0;
    if (!ok) {
        ruleset_unref(*rules);
        clientkeys_unref(*keys);
        *rules = NULL;
        *keys = NULL;
        return -1;
    }
    return 0;
}

/* The objects the gateway works with that are not settings: main makes
 * them, cfg->gateway borrows them (config.h). */
static void wire_gateway(struct config *cfg, struct clientkeys *keys, struct credentials *credentials,
                         struct iamregion *iamregion, struct audit *audit)
{
    cfg->gateway.client_keys = keys;
    cfg->gateway.credentials = credentials;
    cfg->gateway.iamregion = iamregion;
    cfg->gateway.audit = audit;
}

static int str_differs(const char *a, const char *b)
{
    return (a == NULL) != (b == NULL) || (a && strcmp(a, b) != 0);
}

/* Say which changed settings only a restart applies (they keep their old values). */
static void warn_restart_only(const struct config *cur, const struct config *next)
{
    const struct frontend_conf *fa = &cur->frontend, *fb = &next->frontend;
    int listeners_differ = fa->nlisteners != fb->nlisteners;
    for (size_t i = 0; !listeners_differ && i < fa->nlisteners; i++) {
        const struct listener_conf *a = &fa->listeners[i], *b = &fb->listeners[i];
        listeners_differ = str_differs(a->host, b->host) || a->port != b->port || a->client_auth != b->client_auth ||
                           (a->tls_cert == NULL) != (b->tls_cert == NULL);
    }
    listeners_differ |= str_differs(fa->admin.host, fb->admin.host) || fa->admin.port != fb->admin.port ||
                        fa->admin.client_auth != fb->admin.client_auth;
    if (listeners_differ || fa->client_timeout_ms != fb->client_timeout_ms ||
        fa->header_timeout_ms != fb->header_timeout_ms || fa->keepalive_timeout_ms != fb->keepalive_timeout_ms ||
        fa->max_connections != fb->max_connections ||
        fa->max_requests_per_connection != fb->max_requests_per_connection ||
        fa->max_header_bytes != fb->max_header_bytes || fa->max_uri_bytes != fb->max_uri_bytes)
        log_warn("reload: listener or client settings changed; they take effect at the next restart "
                 "(TLS certificates are reloaded now)");
    if (str_differs(cur->cache.redis_url, next->cache.redis_url) ||
        cur->cache.redis_budget_ms != next->cache.redis_budget_ms ||
        cur->cache.memory_max_bytes != next->cache.memory_max_bytes ||
        str_differs(cur->cache.redis_user, next->cache.redis_user) ||
        str_differs(cur->cache.redis_password, next->cache.redis_password) ||
        str_differs(cur->cache.sentinel_user, next->cache.sentinel_user) ||
        str_differs(cur->cache.sentinel_password, next->cache.sentinel_password) ||
        str_differs(cur->cache.entry_key, next->cache.entry_key) || cur->cache.redis_tls != next->cache.redis_tls ||
        cur->cache.sentinel_tls != next->cache.sentinel_tls ||
        str_differs(cur->cache.redis_tls_ca_file, next->cache.redis_tls_ca_file) ||
        str_differs(cur->cache.redis_tls_cert_file, next->cache.redis_tls_cert_file) ||
        str_differs(cur->cache.redis_tls_key_file, next->cache.redis_tls_key_file) ||
        str_differs(cur->cache.redis_tls_server_name, next->cache.redis_tls_server_name))
        log_warn("reload: cache settings changed; they take effect at the next restart");
    if (str_differs(cur->upstream.ca_file, next->upstream.ca_file) ||
        cur->upstream.max_body_bytes != next->upstream.max_body_bytes ||
        cur->upstream.max_connections != next->upstream.max_connections)
        log_warn("reload: upstream connection settings changed; they take effect at the next restart");
    const struct credentials_conf *ca = &cur->credentials, *cb = &next->credentials;
    if (ca->mode != cb->mode || str_differs(ca->iam_url, cb->iam_url) || str_differs(ca->user, cb->user) ||
        str_differs(ca->domain, cb->domain) || str_differs(ca->password, cb->password) || str_differs(ca->ak, cb->ak) ||
        str_differs(ca->sk, cb->sk))
        log_warn("reload: upstream.auth changed; jobgate keeps its current cloud credentials until the next restart");
    const struct iamregion_conf *ia = &cur->iam, *ib = &next->iam;
    if (str_differs(ia->iam_url, ib->iam_url) || ia->refresh_ms != ib->refresh_ms ||
        ia->unknown_ttl_ms != ib->unknown_ttl_ms || ia->retry_ms != ib->retry_ms || ia->timeout_ms != ib->timeout_ms)
        log_warn("reload: regions.iam_* changed; they take effect at the next restart");
}

/* SIGHUP: load the configuration and every rule file again, and switch to
 * them only if all of it is valid; otherwise log why and keep running as is.
 * Requests already received finish under the rules they started with. */
static void on_reload_signal(evutil_socket_t sig, short what, void *arg)
{
    struct daemon *d = arg;
    struct config *next = malloc(sizeof(*next));
    if (!next) {
        log_error("reload: out of memory; keeping the running configuration");
        return;
    }
    struct conf_diag diag;
    conf_diag_init(&diag);
    int rc = load_config(d->opts, next, &diag);
    struct ruleset *rules = NULL;
    struct clientkeys *keys = NULL;
    if (rc == 0)
        rc = load_policy(next, &rules, &keys, &diag);
    if (rc < 0) {
        for (size_t i = 0; i < diag.count; i++)
            log_error("reload: %s", diag.lines[i]);
        log_error("reload failed with %zu error(s): keeping the running configuration and rules", diag.count);
        conf_diag_free(&diag);
        config_free(next);
        free(next);
        return;
    }
    conf_diag_free(&diag);
    warn_restart_only(d->cfg, next);
    wire_gateway(next, keys, d->credentials, d->iamregion, d->audit);
    gateway_reconfigure(d->gateway, rules, &next->gateway);
    frontend_reload_tls(d->frontend, next->frontend.listeners, next->frontend.nlisteners);
    log_set_level(next->log_level);
    log_info("reloaded %s: %zu rule(s), %zu client key(s)", next->file, rules->count,
             keys ? clientkeys_count(keys) : 0);
    ruleset_unref(rules); /* the gateway holds its own references */
    clientkeys_unref(keys);
    /* The cache and upstream modules keep what they copied at start-up. */
    config_free(d->cfg);
    free(d->cfg);
    d->cfg = next;
}

/* SIGUSR1: logrotate has moved the audit log; write a new one at its path. */
static void on_reopen_signal(evutil_socket_t sig, short what, void *arg)
{
    struct daemon *d = arg;
    if (d->audit) {
        audit_reopen(d->audit);
        log_info("audit log: reopening %s", d->cfg->audit.path);
    }
}

static void on_stop_signal(evutil_socket_t sig, short what, void *arg)
{
    struct daemon *d = arg;
    if (d->stopping) {
        log_warn("second signal: stopping now");
        event_base_loopbreak(d->base);
        return;
    }
    d->stopping = 1;
    log_info("signal %d: no longer accepting; finishing %zu request(s) in flight", (int)sig,
             gateway_in_flight(d->gateway));
    frontend_stop_accepting(d->frontend);
    int64_t timeout_ms = d->cfg->shutdown_timeout_ms;
    struct timeval tv = {(time_t)(timeout_ms / 1000), (suseconds_t)((timeout_ms % 1000) * 1000)};
    evtimer_add(d->deadline, &tv);
    gateway_drain(d->gateway, on_idle, d);
}

int main(int argc, char **argv)
{
    struct options opts = {0};
    if (parse_options(argc, argv, &opts) < 0)
        return 2;

    struct config *cfg = malloc(sizeof(*cfg));
    if (!cfg)
        return 1;
    struct conf_diag diag;
    conf_diag_init(&diag);
    int rc = load_config(&opts, cfg, &diag);
    struct ruleset *rules = NULL;
    struct clientkeys *keys = NULL;
    if (load_policy(cfg, &rules, &keys, &diag) < 0)
        rc = -1;
    if (opts.test_only || rc < 0) {
        conf_diag_print(&diag, stderr);
        const char *file = cfg->file ? cfg->file : DEFAULT_CONFIG;
        if (rc == 0)
            fprintf(stderr, "jobgate: configuration %s and %zu rule file(s) are valid\n", file, cfg->nrule_files);
        else
            fprintf(stderr, "jobgate: configuration %s has %zu error(s)\n", file, diag.count);
        conf_diag_free(&diag);
        ruleset_unref(rules);
        clientkeys_unref(keys);
        config_free(cfg);
        free(cfg);
        return rc == 0 ? 0 : 1;
    }
    conf_diag_free(&diag);
    log_set_level(cfg->log_level);

    signal(SIGPIPE, SIG_IGN);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        log_error("cannot initialise libcurl");
        return 1;
    }
    int nworkers = cfg->workers;
    if (nworkers == 0) /* auto */
        nworkers = cfg->cache.redis_url ? workers_default_count() : 1;
    else if (nworkers > 1 && !cfg->cache.redis_url)
        log_warn("%d workers on the embedded cache: each keeps its own cache and calls upstream on its own; "
                 "give them Redis to share answers",
                 nworkers);
    int any_port = 0;
    for (size_t i = 0; i < cfg->frontend.nlisteners; i++)
        any_port |= cfg->frontend.listeners[i].port == 0;
    any_port |= cfg->frontend.admin.host && cfg->frontend.admin.port == 0;
    if (nworkers > 1 && any_port) {
        log_error("several workers need a fixed port to share (listen: HOST:PORT with PORT > 0)");
        nworkers = 1;
    }
    /* Mapped before the workers fork, so that they all share it (guardshm.h, metrics.h). */
    char shm_err[256];
    struct guardshm *guard_shm = guardshm_new(0, 0, shm_err, sizeof(shm_err));
    if (!guard_shm) {
        log_error("%s", shm_err);
        return 1;
    }
    struct metrics *metrics = metrics_new();
    if (!metrics) {
        log_error("metrics: cannot map shared memory");
        guardshm_free(guard_shm);
        curl_global_cleanup();
        return 1;
    }
    struct boot boot = {.opts = &opts,
                        .cfg = cfg,
                        .rules = rules,
                        .keys = keys,
                        .metrics = metrics,
                        .reuse_port = nworkers > 1,
                        .guard_shm = guard_shm,
                        .workers = nworkers};
    int exit_code = nworkers > 1 ? workers_run(nworkers, run_daemon, &boot) : run_daemon(0, &boot);
    metrics_free(metrics);
    if (nworkers > 1) {
        ruleset_unref(rules);
        clientkeys_unref(keys);
        config_free(cfg);
        free(cfg);
    }
    guardshm_free(guard_shm);
    curl_global_cleanup();
    return exit_code;
}

/* One worker: the whole daemon on its own event loop. Takes ownership of
 * boot->cfg and boot->rules (a worker process has its own copies). */
static int run_daemon(int index, void *arg)
{
    struct boot *boot = arg;
    struct config *cfg = boot->cfg;
    struct ruleset *rules = boot->rules;
    struct clientkeys *keys = boot->keys;
    struct daemon d = {.opts = boot->opts, .cfg = cfg};
    if (boot->reuse_port)
        log_set_worker(index);
    struct cache *cache = NULL;
    struct upstream *upstream = NULL;
    struct metrics *metrics = boot->metrics; /* the instance's: main frees it */
    struct event *sigterm = NULL, *sigint = NULL, *sighup = NULL, *sigusr1 = NULL;
    char err[512];
    int exit_code = 1;

    /* The changelist batches a request's read-off / write-on / write-off /
     * read-on into one epoll_ctl where it can: half the syscalls of a hit.
     * (Safe while no socket is dup()ed, which neither we, libcurl nor hiredis do.) */
    struct event_config *ecfg = event_config_new();
    if (ecfg)
        event_config_set_flag(ecfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    d.base = ecfg ? event_base_new_with_config(ecfg) : NULL;
    if (ecfg)
        event_config_free(ecfg);
    if (!d.base) {
        log_error("cannot create the event loop");
        goto out;
    }
    cache = cache_new(d.base, &cfg->cache, err, sizeof(err));
    if (!cache) {
        log_error("cache: %s", err);
        goto out;
    }
    upstream = upstream_new(d.base, &cfg->upstream, err, sizeof(err));
    if (!upstream) {
        log_error("upstream: %s", err);
        goto out;
    }
    d.credentials = credentials_new(upstream, &cfg->credentials, err, sizeof(err));
    if (!d.credentials) {
        log_error("upstream credentials: %s", err);
        goto out;
    }
    if (cfg->iam.iam_url && !(d.iamregion = iamregion_new(upstream, d.credentials, &cfg->iam, err, sizeof(err)))) {
        log_error("regions.iam_url: %s", err);
        goto out;
    }
    if (d.iamregion) {
        /* The map is shared through the cache's Redis tier, if it has one. */
        iamregion_set_metrics(d.iamregion, metrics);
        if (iamregion_share(d.iamregion, cache_link(cache), cfg->gateway.key_prefix) < 0) {
            log_error("out of memory");
            goto out;
        }
    }
    if (cfg->audit.path && !(d.audit = audit_open(&cfg->audit, err, sizeof(err)))) {
        log_error("audit log: %s", err);
        goto out;
    }
    wire_gateway(cfg, keys, d.credentials, d.iamregion, d.audit);
    cfg->gateway.guard_shm = boot->guard_shm;
    cfg->gateway.guard_redis = &cfg->cache;
    cfg->gateway.workers = boot->workers;
    d.gateway = gateway_new(d.base, rules, cache, upstream, metrics, &cfg->gateway);
    if (!d.gateway) {
        log_error("out of memory");
        goto out;
    }
    raise_fd_limit(cfg->frontend.max_connections);
    cfg->frontend.reuse_port = boot->reuse_port;
    d.frontend = frontend_new(d.base, &cfg->frontend, d.gateway, cache, metrics, err, sizeof(err));
    if (!d.frontend) {
        log_error("%s", err);
        goto out;
    }
    d.deadline = evtimer_new(d.base, on_deadline, &d);
    sigterm = evsignal_new(d.base, SIGTERM, on_stop_signal, &d);
    sigint = evsignal_new(d.base, SIGINT, on_stop_signal, &d);
    sighup = evsignal_new(d.base, SIGHUP, on_reload_signal, &d);
    sigusr1 = evsignal_new(d.base, SIGUSR1, on_reopen_signal, &d);
    if (!d.deadline || !sigterm || !sigint || !sighup || evsignal_add(sigterm, NULL) < 0 ||
        evsignal_add(sigint, NULL) < 0 || evsignal_add(sighup, NULL) < 0 || !sigusr1 ||
        evsignal_add(sigusr1, NULL) < 0) {
        log_error("cannot set up signal handling");
        goto out;
    }

    struct cache_health h;
    cache_health(cache, &h);
    if (!boot->reuse_port || index == 0) {
        for (size_t i = 0; i < cfg->frontend.nlisteners; i++) {
            const struct listener_conf *lc = &cfg->frontend.listeners[i];
            log_info("jobgate %s listening on %s://%s:%d%s", PACKAGE_VERSION, lc->tls_cert ? "https" : "http", lc->host,
                     frontend_port(d.frontend, i), lc->client_auth ? "" : " (no client authentication)");
        }
        if (cfg->frontend.admin.host)
            log_info("admin endpoints (/healthz, /metrics) on http://%s:%d%s", cfg->frontend.admin.host,
                     frontend_admin_port(d.frontend),
                     cfg->frontend.admin.client_auth ? " (a client key granted admin wanted)" : "");
        else
            log_info("no admin listener (admin.listen: off): /metrics is not served");
        log_info("%zu rule(s); cache: %s%s%s", rules->count, h.backend, cfg->cache.redis_url ? " " : "",
                 cfg->cache.redis_url ? cfg->cache.redis_url : "");
    }
    ruleset_unref(rules); /* the gateway holds its own references */
    rules = NULL;
    clientkeys_unref(keys);
    keys = NULL;
    event_base_dispatch(d.base);
    log_info("stopped");
    exit_code = 0;

out:
    /* Callbacks first: nothing may call into the gateway once it is freed. */
    cache_free(cache);
    iamregion_free(d.iamregion);     /* uses the credentials and the upstream */
    credentials_free(d.credentials); /* uses the upstream for IAM calls */
    upstream_free(upstream);
    gateway_free(d.gateway);
    frontend_free(d.frontend);
    if (sigterm)
        event_free(sigterm);
    if (sigint)
        event_free(sigint);
    if (sighup)
        event_free(sighup);
    if (sigusr1)
        event_free(sigusr1);
    audit_close(d.audit); /* every request has been answered and written by now */
    if (d.deadline)
        event_free(d.deadline);
    if (d.base)
        event_base_free(d.base);
    ruleset_unref(rules);
    clientkeys_unref(keys);
    config_free(d.cfg);
    free(d.cfg);
    return exit_code;
}
