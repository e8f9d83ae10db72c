#include <stdlib.h>
#include <string.h>

#include "config_regions.h"

/* regions.iam_url and its timings (iamregion.h). */
static int load_iam(struct yconf *y, yaml_node_t *n, struct iamregion_conf *iam, struct conf_diag *d)
{
    int rc = 0;
    yaml_node_t *url = yconf_get(y, n, "iam_url");
    if (url) {
        const char *s = yconf_scalar(url);
        if (!s || (strncmp(s, "https://", 8) != 0 && strncmp(s, "http://", 7) != 0) || strlen(s) > 256 ||
            strpbrk(s + 7, " @?#{}")) {
            yconf_error(y, url, d, "'iam_url' is IAM's base url, such as https://iam.myhuaweicloud.com");
            rc = -1;
        } else {
            char *copy = strdup(s);
            if (!copy)
                return -1;
            free(iam->iam_url);
            iam->iam_url = copy;
        }
    }
    rc |= yconf_get_ms(y, n, "iam_refresh", 1000, 7 * 86400000LL, 0, &iam->refresh_ms, d);
    rc |= yconf_get_ms(y, n, "iam_unknown_ttl", 0, 86400000LL, 0, &iam->unknown_ttl_ms, d);
    rc |= yconf_get_ms(y, n, "iam_retry", 0, 3600000, 0, &iam->retry_ms, d);
    rc |= yconf_get_ms(y, n, "iam_timeout", 100, 600000, 0, &iam->timeout_ms, d);
    return rc;
}

int config_load_regions(struct yconf *y, yaml_node_t *n, struct regions **regions, struct iamregion_conf *iam,
                        struct conf_diag *d)
{
    static const char *const keys[] = {"host_domain",     "names",     "projects",    "iam_url", "iam_refresh",
                                       "iam_unknown_ttl", "iam_retry", "iam_timeout", NULL};
    if (!n)
        return 0;
    if (yconf_check_map(y, n, "regions", keys, d) < 0)
        return -1;
    regions_free(*regions);
    struct regions *r = *regions = regions_new();
    if (!r)
        return -1;
    int rc = 0;
    yaml_node_t *domain = yconf_get(y, n, "host_domain");
    if (domain) {
        const char *s = yconf_scalar(domain);
        if (!s || !*s || strpbrk(s, " /:@{}")) {
            yconf_error(y, domain, d, "'host_domain' is a DNS name such as jobgate.example");
            rc = -1;
        } else if (regions_set_host_domain(r, s) < 0) {
            rc = -1;
        }
    }
    yaml_node_t *names = yconf_get(y, n, "names");
    if (names && names->type != YAML_SEQUENCE_NODE) {
        yconf_error(y, names, d, "'names' is a list of regions, such as [eu-west-0, ap-southeast-1]");
        rc = -1;
    }
    for (size_t i = 0; names && names->type == YAML_SEQUENCE_NODE && i < yconf_seq_len(names); i++) {
        yaml_node_t *item = yconf_seq_item(y, names, i);
        const char *s = yconf_scalar(item);
        if (!s || !regions_name_ok(s)) {
            yconf_error(y, item, d, "region '%s' is not 1-63 of a-z, 0-9, '-'", s ? s : "?");
            rc = -1;
        } else if (regions_add_name(r, s) < 0) {
            rc = -1;
        }
    }
    rc |= load_iam(y, n, iam, d);
    yaml_node_t *projects = yconf_get(y, n, "projects");
    if (projects && projects->type != YAML_MAPPING_NODE) {
        yconf_error(y, projects, d, "'projects' maps each project id to its region");
        rc = -1;
    } else if (projects) {
        for (yaml_node_pair_t *p = projects->data.mapping.pairs.start; p < projects->data.mapping.pairs.top; p++) {
            yaml_node_t *k = yaml_document_get_node(&y->doc, p->key);
            yaml_node_t *v = yaml_document_get_node(&y->doc, p->value);
            const char *project = yconf_scalar(k), *region = yconf_scalar(v);
            if (!project || !*project || strlen(project) > 128 ||
                strspn(project, "0123456789abcdefABCDEF-_") != strlen(project)) {
                yconf_error(y, k, d, "'%s' is not a project id", project ? project : "?");
                rc = -1;
            } else if (!region || !regions_name_ok(region)) {
                yconf_error(y, v, d, "region '%s' is not 1-63 of a-z, 0-9, '-'", region ? region : "?");
                rc = -1;
            } else if (regions_add_project(r, project, region) < 0) {
                rc = -1;
            }
        }
    }
    return rc ? -1 : 0;
}
