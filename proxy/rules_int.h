/*
 * rules_int: what the files of the rule loader share, not for other modules
 * (rules.h is their one contract; rules_job.h and rules_errors.h load the
 * sections that need no struct rule):
 *
 *   rules.c           a rule file as a whole (its name, the cache and
 *                     forward sections, the checks between sections and
 *                     between rules), the ruleset's life and its lookups;
 *   rules_route.c     the `route` section: the path template, the
 *                     parameters' patterns, the methods, route.host,
 *                     route.host_service, what a query string does;
 *   rules_upstream.c  the `upstream` section: url, path, headers, timeouts,
 *                     token_expired_codes; and what a request draws from it
 *                     (rule_upstream_path, rule_token_expired).
 *
 * This header includes none of them, so the include graph stays one-way
 * (rules -> rules_int; rules_route and rules_upstream -> rules, rules_int).
 *
 * Ownership: a loader fills its fields of a rule that rules.c allocated
 * zeroed and frees (rule_free) whatever the loader returns: on failure what
 * it allocated stays in the rule, to be freed with it. Every mistake is
 * reported into `d` as FILE:LINE:COL, all at once.
 */
#ifndef JOBGATE_RULES_INT_H
#define JOBGATE_RULES_INT_H

#include "yamlconf.h"

struct rule;

/* ---------------------------------------------------- rules_route.c */

/* Fill r->route (its parameters' patterns compiled), r->methods (default
 * GET and HEAD), r->path_line/col, r->project_param, r->host,
 * r->host_service and r->query from the section `n` (NULL: missing, an
 * error). Returns 0, or -1 after reporting; r->route.nsegs is 0 when
 * route.path itself could not be read (later sections then skip the checks
 * against it). */
int rules_load_route(struct yconf *y, yaml_node_t *n, struct rule *r, struct conf_diag *d);

/* ------------------------------------------------- rules_upstream.c */

/* Fill the upstream fields of `r` (upstream_url without a trailing '/',
 * url_has_region, upstream_path and upstream_param, add_headers,
 * drop_headers, the timeouts, token_expired_codes) from the section `n`
 * (NULL: missing, an error). Call it after rules_load_route: upstream.path
 * is checked against r->route when that route was read. Returns 0 or -1. */
int rules_load_upstream(struct yconf *y, yaml_node_t *n, struct rule *r, struct conf_diag *d);

#endif
