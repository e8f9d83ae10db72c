/*
 * rules_route: the `route` section of a rule file (rules_int.h): the path
 * template and its parameters' patterns, the methods, the Host (route.host,
 * route.host_service) and what a query string does.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "regions.h"
#include "rules.h"
#include "rules_int.h"

static int load_methods(struct yconf *y, yaml_node_t *n, struct rule *r, struct conf_diag *d)
{
    r->methods = RULE_METHOD_GET | RULE_METHOD_HEAD;
    if (!n)
        return 0;
    if (n->type != YAML_SEQUENCE_NODE || yconf_seq_len(n) == 0) {
        yconf_error(y, n, d, "'methods' must be a list such as [GET, HEAD]");
        return -1;
    }
    int rc = 0;
    r->methods = 0;
    for (size_t i = 0; i < yconf_seq_len(n); i++) {
        yaml_node_t *item = yconf_seq_item(y, n, i);
        const char *m = yconf_scalar(item);
        if (m && strcmp(m, "GET") == 0) {
            r->methods |= RULE_METHOD_GET;
        } else if (m && strcmp(m, "HEAD") == 0) {
            r->methods |= RULE_METHOD_HEAD;
        } else {
            yconf_error(y, item, d, "method '%s' cannot be served: a job-status route is read-only (GET, HEAD)",
                        m ? m : "?");
            rc = -1;
        }
    }
    return rc;
}

/* A parameter's pattern as a regular expression: a name (hex32, uuid), a
 * mapping {chars, min, max}, or a POSIX extended regular expression. */
static int param_pattern(struct yconf *y, yaml_node_t *v, char *out, size_t outlen, struct conf_diag *d)
{
    static const char *const keys[] = {"chars", "min", "max", NULL};
    static const struct {
        const char *name;
        const char *regex;
    } named[] = {
        {"hex32", "[0-9a-f]{32}"},
        {"uuid", "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"},
    };
    const char *text = yconf_scalar(v);
    if (text) {
        for (size_t i = 0; i < sizeof(named) / sizeof(named[0]); i++) {
            if (strcmp(text, named[i].name) == 0) {
                snprintf(out, outlen, "%s", named[i].regex);
                return 0;
            }
        }
        if ((size_t)snprintf(out, outlen, "%s", text) >= outlen) {
            yconf_error(y, v, d, "pattern is too long");
            return -1;
        }
        return 0;
    }
    if (yconf_check_map(y, v, "a parameter pattern", keys, d) < 0)
        return -1;
    const char *chars = yconf_scalar(yconf_get(y, v, "chars"));
    long min = 1, max = 255;
    int rc = yconf_get_long(y, v, "min", 1, 255, &min, d);
    rc |= yconf_get_long(y, v, "max", 1, 255, &max, d);
    if (!chars || !*chars || strchr(chars, ']')) {
        yconf_error(y, v, d, "a pattern mapping needs 'chars', the characters allowed, such as \"0-9a-f\"");
        return -1;
    }
    if (rc)
        return -1;
    if (min > max) {
        yconf_error(y, v, d, "min (%ld) is larger than max (%ld)", min, max);
        return -1;
    }
    snprintf(out, outlen, "[%s]{%ld,%ld}", chars, min, max);
    return 0;
}

int rules_load_route(struct yconf *y, yaml_node_t *n, struct rule *r, struct conf_diag *d)
{
    static const char *const keys[] = {"path", "host", "host_service", "methods", "params", "query", NULL};
    if (!n) {
        yconf_error(y, yconf_root(y), d, "missing 'route'");
        return -1;
    }
    if (yconf_check_map(y, n, "route", keys, d) < 0)
        return -1;
    int rc = 0;
    yaml_node_t *path = yconf_get(y, n, "path");
    const char *text = yconf_scalar(path);
    char err[256];
    if (!text) {
        yconf_error(y, path ? path : n, d, "route needs 'path', such as /v1.0/{project_id}/jobs/{job_id}");
        return -1;
    }
    if (route_template_parse(&r->route, text, err, sizeof(err)) < 0) {
        yconf_error(y, path, d, "%s", err);
        return -1;
    }
    r->path_line = path->start_mark.line + 1;
    r->path_col = path->start_mark.column + 1;
    if (load_methods(y, yconf_get(y, n, "methods"), r, d) < 0)
        rc = -1;

    yaml_node_t *params = yconf_get(y, n, "params");
    if (params) {
        if (params->type != YAML_MAPPING_NODE) {
            yconf_error(y, params, d, "'params' must map each parameter to its pattern");
            rc = -1;
        } else {
            for (yaml_node_pair_t *p = params->data.mapping.pairs.start; p < params->data.mapping.pairs.top; p++) {
                yaml_node_t *k = yaml_document_get_node(&y->doc, p->key);
                yaml_node_t *v = yaml_document_get_node(&y->doc, p->value);
                const char *name = yconf_scalar(k);
                char pattern[512];
                if (!name || param_pattern(y, v, pattern, sizeof(pattern), d) < 0) {
                    if (!name)
                        yconf_error(y, k, d, "a parameter maps to one pattern, such as job_id: hex32");
                    rc = -1;
                } else if (route_template_set_pattern(&r->route, name, pattern, err, sizeof(err)) < 0) {
                    yconf_error(y, route_template_param_index(&r->route, name) < 0 ? k : v, d, "%s", err);
                    rc = -1;
                }
            }
        }
    }
    /* An unchecked parameter would let any text into cache keys and upstream URLs.
     * One given a pattern that failed has had its own error already. */
    for (size_t i = 0; i < r->route.nparams; i++) {
        int given = params && params->type == YAML_MAPPING_NODE && yconf_get(y, params, r->route.params[i].name);
        if (!r->route.params[i].compiled && !given) {
            yconf_error(y, path, d, "parameter {%s} has no pattern under route.params", r->route.params[i].name);
            rc = -1;
        }
    }
    /* By convention {project_id} names the cloud project: what client keys
     * grant, what IAM tokens are scoped to, what X-Project-Id carries. */
    r->project_param = route_template_param_index(&r->route, "project_id");

    yaml_node_t *host = yconf_get(y, n, "host");
    if (host) {
        const char *h = yconf_scalar(host);
        if (!h || !*h || strpbrk(h, " /:@")) {
            yconf_error(y, host, d, "'host' is a host name such as ecs.jobgate.internal (no port, no path)");
            rc = -1;
        } else {
            r->host = strdup(h);
            for (char *c = r->host; *c; c++)
                *c = (char)tolower((unsigned char)*c);
        }
    }

    yaml_node_t *service = yconf_get(y, n, "host_service");
    if (service) {
        const char *sv = yconf_scalar(service);
        if (!sv || !regions_name_ok(sv)) {
            yconf_error(y, service, d,
                        "'host_service' is the SERVICE label of a Host SERVICE.REGION.DOMAIN, such as ecs "
                        "(1-63 of a-z, 0-9, '-')");
            rc = -1;
        } else {
            r->host_service = strdup(sv);
            r->host_service_line = service->start_mark.line + 1;
            r->host_service_col = service->start_mark.column + 1;
        }
    }

    yaml_node_t *query = yconf_get(y, n, "query");
    const char *q = yconf_scalar(query);
    r->query = RULE_QUERY_IGNORE;
    if (query && q && strcmp(q, "reject") == 0) {
        r->query = RULE_QUERY_REJECT;
    } else if (query && (!q || strcmp(q, "ignore") != 0)) {
        yconf_error(y, query, d, "'query' must be 'ignore' or 'reject'");
        rc = -1;
    }
    return rc;
}
