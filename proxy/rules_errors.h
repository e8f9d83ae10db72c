/*
 * rules_errors: loading the `errors:` section of a rule file (the error map:
 * statuses, faults, upstream error codes and the error body shapes), inline
 * or from a shared file such as lua-free-rules/shared/huawei-errors.yaml.
 * Part of the rule loader (rules.c); nothing else calls it.
 *
 * Every mistake is reported into `d` as FILE:LINE:COL, all at once; a map
 * that leaves a status or fault unmapped, or maps one outside the
 * documented table, is refused.
 */
#ifndef JOBGATE_RULES_ERRORS_H
#define JOBGATE_RULES_ERRORS_H

#include "errmap.h"
#include "yamlconf.h"

/* Fill `map` and the rule's `invalid_request` answer from `n`: the section
 * itself, or the name of a file holding it (relative to the rule file).
 * Returns 0, or -1 with every problem in `d`. */
int rules_load_errors(struct yconf *y, yaml_node_t *n, struct errmap *map, struct client_error *invalid_request,
                      struct conf_diag *d);

#endif
