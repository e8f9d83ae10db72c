/*
 * config: jobgate's configuration file (YAML, conf/jobgate.yaml documents
 * every key) and the command-line flags that override it.
 *
 * Secrets never sit in the file itself: the upstream token, the IAM
 * password and the secret key are read from a file or an environment
 * variable named there.
 */
#ifndef JOBGATE_CONFIG_H
#define JOBGATE_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "audit.h"
#include "cache.h"
#include "credentials.h"
#include "frontend.h"
#include "guard.h"
#include "log.h"
#include "upstream.h"
#include "yamlconf.h"

struct config {
    char *file; /* the file loaded, NULL if none */

    struct listener_conf *listeners; /* at least one: 'listen' or 'listeners' */
    size_t nlisteners;
    enum log_level log_level;

    char *client_keys_file; /* resolved; NULL: no client authentication */

    char **rule_files; /* resolved: globs expanded, relative to the config file */
    size_t nrule_files;

    struct cache_conf cache;
    char *key_prefix;

    struct upstream_conf upstream;
    char *upstream_url;   /* overrides every rule's upstream url when set */
    char *upstream_token; /* secret: sent as X-Auth-Token instead of the client's */
    /* How jobgate proves who it is upstream (upstream.auth; upstream.token_file
     * and token_env are mode token). In mode token, upstream_token holds the
     * same token, for the gateway's sake. */
    struct credentials_conf credentials;
    int64_t passthrough_window_ms; /* mode passthrough: see gateway_conf */

    struct audit_conf audit; /* audit.path NULL: no audit log */

    struct guard_conf upstream_limits; /* rate limit, 429 backoff, circuit breaker of each upstream */
    int64_t rate_queue_ms;             /* upstream_limits.queue: wait for a token before 503 */

    size_t coalesce_max_waiters; /* requests one key's upstream call may hold */
    int64_t coalesce_max_wait_ms;

    int64_t client_timeout_ms;
    int64_t header_timeout_ms;
    int64_t keepalive_timeout_ms;
    size_t max_connections;
    unsigned max_requests_per_connection;
    size_t max_header_bytes;
    size_t max_uri_bytes;
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

/* Apply a --redis value: "none", redis://..., unix:... Returns 0, or -1 with err. */
int config_set_redis(struct config *c, const char *value, char *err, size_t errlen);

/* Apply a --workers value: "auto" or 1..256. Returns 0 or -1. */
int config_set_workers(struct config *c, const char *value);

/* Set a string member (copy; replaces any previous value). */
void config_set_str(char **field, const char *value);

void config_free(struct config *c);

#endif
