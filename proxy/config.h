/*
 * config: jobgate's configuration file (YAML, conf/jobgate.yaml documents
 * every key) and the command-line flags that override it.
 *
 * Secrets never sit in the file itself: the upstream token, the IAM
 * password and the secret key are read from a file or an environment
 * variable named there.
 *
 * Each module's settings are its own _conf struct (declared in the module's
 * header), a member of struct config filled directly by config_load and
 * handed to the module by pointer: frontend_new(..., &cfg->frontend, ...).
 *
 * Ownership: every string and array reachable from a struct config, those
 * a module's _conf declares const included, is owned by the struct config
 * and freed (secrets wiped) by config_free. Modules copy what they keep.
 * The few members that are not settings but objects main wires in before
 * handing a _conf over (gateway.client_keys, .credentials, .audit;
 * frontend.reuse_port) are set by main, borrowed, and never freed here.
 * gateway.guard points at upstream_limits in the same struct: a struct
 * config is never copied by value.
 */
#ifndef JOBGATE_CONFIG_H
#define JOBGATE_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "audit.h"
#include "cache.h"
#include "credentials.h"
#include "frontend.h"
#include "gateway.h"
#include "guard.h"
#include "log.h"
#include "upstream.h"
#include "iamregion.h"
#include "yamlconf.h"

struct config {
    char *file; /* the file loaded, NULL if none */
    enum log_level log_level;

    char *client_keys_file; /* resolved; NULL: no client authentication */

    char **rule_files; /* resolved: globs expanded, relative to the config file */
    size_t nrule_files;

    /* 'listen' or 'listeners' (at least one), client.* and admin.*. */
    struct frontend_conf frontend;
    /* cache.key_prefix, upstream.url, the upstream token, client.max_*_bytes,
     * coalesce.*, upstream_limits.queue and upstream.auth.passthrough_window.
     * upstream_token is a secret: sent as X-Auth-Token instead of the
     * client's; in mode token it holds the same token as credentials.token. */
    struct gateway_conf gateway;

    struct cache_conf cache;       /* cache.* but key_prefix */
    struct upstream_conf upstream; /* upstream.ca_file, max_body, max_connections */
    /* How jobgate proves who it is upstream (upstream.auth; upstream.token_file
     * and token_env are mode token). */
    struct credentials_conf credentials;
    struct audit_conf audit;           /* audit.path NULL: no audit log */
    struct guard_conf upstream_limits; /* rate limit, 429 backoff, circuit breaker of each upstream */
    struct regions *regions;           /* 'regions' (gateway.regions points here); NULL: none */
    struct iamregion_conf iam;         /* regions.iam_*: a project's region asked of IAM; iam_url NULL: never */

    int64_t shutdown_timeout_ms;
    int workers; /* worker processes; 0: auto */
};

/* Fill `c` with the defaults. */
void config_defaults(struct config *c);

/* Load `path` over the defaults. Returns 0, or -1 with every problem in `d`. */
int config_load(struct config *c, const char *path, struct conf_diag *d);

/* Parse "HOST:PORT" (or "[v6]:PORT"). Returns 0 or -1. */
int config_parse_listen(const char *text, char **host, int *port);

/* Apply a --listen value to the first listener. Returns 0 or -1. */
int config_set_listen(struct config *c, const char *text);

/* Apply an --admin-listen value: HOST:PORT or off. Returns 0 or -1. */
int config_set_admin_listen(struct config *c, const char *text);

/* Apply an --upstream value: an http:// or https:// URL. Returns 0 or -1. */
int config_set_upstream_url(struct config *c, const char *url);

/* Apply a --redis value: "none", redis://..., unix:... Returns 0, or -1 with err. */
int config_set_redis(struct config *c, const char *value, char *err, size_t errlen);

/* Apply a --workers value: "auto" or 1..256. Returns 0 or -1. */
int config_set_workers(struct config *c, const char *value);

/* Set a string member (copy; replaces any previous value). */
void config_set_str(char **field, const char *value);

void config_free(struct config *c);

#endif
