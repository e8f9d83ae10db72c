/*
 * config_secrets: the configuration's secrets (jobgate's cloud credentials,
 * the Redis and Sentinel passwords, the cache entry key). A secret is never
 * written in the configuration file itself: it is read from a file
 * (`*_file`, which must not be readable by group or others, and is read
 * whole up to 64 KiB) or from the environment (`*_env`). Part of the
 * configuration loader (config.c); every mistake is reported into `d` as
 * FILE:LINE:COL, and no message ever quotes a secret.
 *
 * Ownership: each secret is a heap string owned by the struct it is stored
 * in, and must be freed with config_free_secret, which wipes it first.
 */
#ifndef JOBGATE_CONFIG_SECRETS_H
#define JOBGATE_CONFIG_SECRETS_H

#include <stdint.h>

#include "cache_types.h"
#include "credentials.h"
#include "yamlconf.h"

/* Read the secret `what` from `map`: its `what`_file or `what`_env (one of
 * them, or neither: *out stays NULL). Returns 0, or -1 with a diagnostic. */
int config_read_secret(struct yconf *y, yaml_node_t *map, const char *what, char **out, struct conf_diag *d);

/* upstream.auth: how jobgate proves who it is upstream (credentials.h):
 * fills `k`, and *passthrough_window_ms in pass-through mode. */
int config_load_auth(struct yconf *y, yaml_node_t *auth, struct credentials_conf *k, int64_t *passthrough_window_ms,
                     struct conf_diag *d);

/* cache: the Redis and Sentinel users and passwords, and the entry key. */
int config_load_cache_secrets(struct yconf *y, yaml_node_t *cache, struct cache_conf *k, struct conf_diag *d);

/* Wipe and free a secret; *s becomes NULL. */
void config_free_secret(char **s);

#endif
