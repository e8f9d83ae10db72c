/*
 * config_limits: the configuration's 'upstream_limits' section
 * (config_limits.h).
 */
#include <stdlib.h>

#include "config_limits.h"

/* Read a positive number (rates may be fractional). */
static int get_rate(struct yconf *y, yaml_node_t *map, const char *key, double min, double *out, struct conf_diag *d)
{
    yaml_node_t *n = yconf_get(y, map, key);
    if (!n)
        return 0;
    const char *text = yconf_scalar(n);
    char *end = NULL;
    double v = text ? strtod(text, &end) : 0;
    if (!text || end == text || *end || !(v >= min) || v > GUARD_RATE_MAX) {
        yconf_error(y, n, d, "'%s' must be a number of requests per second, at least %g", key, min);
        return -1;
    }
    *out = v;
    return 0;
}

int config_load_upstream_limits(struct yconf *y, yaml_node_t *m, struct guard_conf *g, int64_t *queue_ms,
                                struct conf_diag *d)
{
    static const char *const keys[] = {"rate",
                                       "burst",
                                       "project_rate",
                                       "project_burst",
                                       "throttle_backoff",
                                       "breaker_threshold",
                                       "breaker_cooldown",
                                       "breaker_max_cooldown",
                                       "breaker_counts_5xx",
                                       "queue",
                                       "fleet_size",
                                       NULL};
    if (!m)
        return 0;
    if (yconf_check_map(y, m, "upstream_limits", keys, d) < 0)
        return -1;
    int rc = 0;
    rc |= get_rate(y, m, "rate", GUARD_RATE_MIN, &g->rate, d);
    rc |= get_rate(y, m, "burst", 1, &g->burst, d);
    rc |= get_rate(y, m, "project_rate", 0, &g->project_rate, d);
    rc |= get_rate(y, m, "project_burst", 1, &g->project_burst, d);
    rc |= yconf_get_ms(y, m, "throttle_backoff", 100, 300000, 0, &g->throttle_ms, d);
    g->throttle_jitter_ms = g->throttle_ms / 3; /* spreads jobgates that were throttled together */
    long threshold = (long)g->breaker_threshold;
    rc |= yconf_get_long(y, m, "breaker_threshold", 1, 1000, &threshold, d);
    g->breaker_threshold = (unsigned)threshold;
    rc |= yconf_get_ms(y, m, "breaker_cooldown", 100, 3600000, 0, &g->breaker_cooldown_ms, d);
    rc |= yconf_get_ms(y, m, "breaker_max_cooldown", 100, 3600000, 0, &g->breaker_max_ms, d);
    rc |= yconf_get_bool(y, m, "breaker_counts_5xx", &g->breaker_count_5xx, d);
    rc |= yconf_get_ms(y, m, "queue", 0, 60000, 0, queue_ms, d);
    long fleet_size = (long)g->fleet_size;
    rc |= yconf_get_long(y, m, "fleet_size", 0, GUARD_FLEET_SIZE_MAX, &fleet_size, d);
    g->fleet_size = (unsigned)fleet_size;
    char err[256];
    if (rc == 0 && guard_conf_check(g, err, sizeof(err)) < 0) {
        yconf_error(y, m, d, "upstream_limits: %s", err);
        rc = -1;
    }
    return rc;
}
