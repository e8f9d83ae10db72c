/*
 * config_limits: the configuration's 'upstream_limits' section: what keeps
 * jobgate within the cloud's rate limit and away from a failing upstream
 * (guard.h explains each setting and its default): the rates and bursts,
 * overall and per project, the back-off after a 429, the breaker, the fleet
 * size, and how long a request may queue for a token. Part of the
 * configuration loader (config.c): every mistake is reported into `d` as
 * FILE:LINE:COL. Nothing here allocates.
 */
#ifndef JOBGATE_CONFIG_LIMITS_H
#define JOBGATE_CONFIG_LIMITS_H

#include <stdint.h>

#include "guard.h"
#include "yamlconf.h"

/* Load the 'upstream_limits' mapping `m` (NULL: absent, nothing changes)
 * into `g` (which holds the defaults, guard_conf_defaults) and its `queue`
 * into *queue_ms; the whole is then checked with guard_conf_check. Returns
 * 0, or -1 after reporting each mistake into `d`. */
int config_load_upstream_limits(struct yconf *y, yaml_node_t *m, struct guard_conf *g, int64_t *queue_ms,
                                struct conf_diag *d);

#endif
