/*
 * rules_job: loading the `job:` section of a rule file: where the job's
 * state is (a dotted path), which states are terminal (and which of those
 * mean failure), the sub-jobs, and the identity check (a body field that
 * must equal a route parameter). Part of the rule loader (rules.c).
 *
 * Every mistake is reported into `d` as FILE:LINE:COL, all at once.
 */
#ifndef JOBGATE_RULES_JOB_H
#define JOBGATE_RULES_JOB_H

#include "classify.h"
#include "route.h"
#include "yamlconf.h"

/* Fill `job` from the section `n` (NULL: missing, an error). `route`: the
 * rule's route, whose parameter the identity check names (NULL: not
 * checked here); its index goes to *identity_param (-1: no identity). */
int rules_load_job(struct yconf *y, yaml_node_t *n, const struct route_template *route, struct classify_spec *job,
                   int *identity_param, struct conf_diag *d);

#endif
