/*
 * config_regions: the configuration's 'regions' section. Where a request's
 * region comes from (regions.h): the DNS domain of Host-routed requests
 * (host_domain), the region names known, the project-to-region map; and
 * how IAM is asked for a project not in the map (iam_*, iamregion.h). Part
 * of the configuration loader (config.c): every mistake is reported into
 * `d` as FILE:LINE:COL.
 *
 * Ownership: *regions is the caller's (freed with regions_free), as is
 * iam->iam_url (free).
 */
#ifndef JOBGATE_CONFIG_REGIONS_H
#define JOBGATE_CONFIG_REGIONS_H

#include "iamregion.h"
#include "regions.h"
#include "yamlconf.h"

/* Load the 'regions' mapping `n` (NULL: absent, nothing changes) into a new
 * *regions (the one there is freed first) and `iam`. Returns 0, or -1 after
 * reporting each mistake into `d` (or out of memory). */
int config_load_regions(struct yconf *y, yaml_node_t *n, struct regions **regions, struct iamregion_conf *iam,
                        struct conf_diag *d);

#endif
