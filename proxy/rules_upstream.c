/*
 * rules_upstream: the `upstream` section of a rule file (rules_int.h): the
 * base url, the path sent upstream, the headers added and dropped, the
 * timeouts and the codes that say jobgate's token expired; and what a
 * request draws from it (rule_upstream_path, rule_token_expired: rules.h).
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "regions.h"
#include "rules.h"
#include "rules_int.h"

/* upstream.path: a template over the route's parameters (checked against a valid route only). */
static int load_upstream_path(struct yconf *y, yaml_node_t *n, struct rule *r, struct conf_diag *d)
{
    if (!n)
        return 0;
    const char *text = yconf_scalar(n);
    char err[256];
    if (!text) {
        yconf_error(y, n, d, "'path' is a template such as /v1/{project_id}/jobs/{job_id}");
        return -1;
    }
    if (route_template_parse(&r->upstream_path, text, err, sizeof(err)) < 0) {
        yconf_error(y, n, d, "%s", err);
        return -1;
    }
    if (r->route.nsegs == 0) /* the route itself failed: already reported */
        return 0;
    for (size_t i = 0; i < r->upstream_path.nparams; i++) {
        int k = route_template_param_index(&r->route, r->upstream_path.params[i].name);
        if (k < 0) {
            yconf_error(y, n, d, "upstream path parameter {%s} is not a parameter of the route",
                        r->upstream_path.params[i].name);
            return -1;
        }
        r->upstream_param[i] = k;
    }
    return 0;
}

/* A header name: an HTTP token, no room for smuggling another header in. */
static int valid_header_name(const char *s)
{
    if (!*s || strlen(s) > 64)
        return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_')
            return 0;
    return 1;
}

static int load_upstream_headers(struct yconf *y, yaml_node_t *n, struct rule *r, struct conf_diag *d)
{
    static const char *const keys[] = {"add", "drop", NULL};
    static const char *const droppable[] = {"X-Request-Id", "Accept", "User-Agent", "X-Auth-Token", NULL};
    if (!n)
        return 0;
    if (yconf_check_map(y, n, "upstream.headers", keys, d) < 0)
        return -1;
    int rc = 0;
    yaml_node_t *add = yconf_get(y, n, "add");
    if (add && add->type != YAML_MAPPING_NODE) {
        yconf_error(y, add, d, "'add' maps header names to values, such as X-Language: en-us");
        rc = -1;
    } else if (add) {
        size_t count = (size_t)(add->data.mapping.pairs.top - add->data.mapping.pairs.start);
        r->add_headers = calloc(count ? count : 1, sizeof(*r->add_headers));
        for (yaml_node_pair_t *p = add->data.mapping.pairs.start; p < add->data.mapping.pairs.top; p++) {
            yaml_node_t *k = yaml_document_get_node(&y->doc, p->key);
            const char *name = yconf_scalar(k);
            const char *value = yconf_scalar(yaml_document_get_node(&y->doc, p->value));
            if (!name || !value || !valid_header_name(name) || strpbrk(value, "\r\n")) {
                yconf_error(y, k, d, "a header to add is Name: value (a token name, a one-line value)");
                rc = -1;
                continue;
            }
            size_t len = strlen(name) + strlen(value) + 3;
            char *line = malloc(len);
            if (!line)
                return -1;
            snprintf(line, len, "%s: %s", name, value);
            r->add_headers[r->nadd_headers++] = line;
        }
    }
    yaml_node_t *drop = yconf_get(y, n, "drop");
    if (drop && drop->type != YAML_SEQUENCE_NODE) {
        yconf_error(y, drop, d, "'drop' is a list of header names, such as [X-Request-Id]");
        rc = -1;
    } else if (drop) {
        r->drop_headers = calloc(yconf_seq_len(drop) + 1, sizeof(char *));
        for (size_t i = 0; i < yconf_seq_len(drop); i++) {
            yaml_node_t *item = yconf_seq_item(y, drop, i);
            const char *name = yconf_scalar(item);
            int known = 0;
            for (const char *const *h = droppable; name && *h; h++)
                known |= strcasecmp(*h, name) == 0;
            if (!known) {
                yconf_error(y, item, d, "only X-Request-Id, Accept, User-Agent and X-Auth-Token can be dropped");
                rc = -1;
                continue;
            }
            r->drop_headers[r->ndrop_headers++] = strdup(name);
        }
    }
    return rc;
}

/* upstream.token_expired_codes: the upstream error codes that say jobgate's
 * own token expired (renewed, and the call sent once more); when absent,
 * Huawei's [APIGW.0307]. */
static int load_token_expired_codes(struct yconf *y, yaml_node_t *n, struct rule *r, struct conf_diag *d)
{
    size_t count = n && n->type == YAML_SEQUENCE_NODE ? yconf_seq_len(n) : 1;
    if (!(r->token_expired_codes = calloc(count ? count : 1, sizeof(char *))))
        return -1;
    if (!n) {
        if (!(r->token_expired_codes[0] = strdup("APIGW.0307")))
            return -1;
        r->ntoken_expired_codes = 1;
        return 0;
    }
    if (n->type != YAML_SEQUENCE_NODE) {
        yconf_error(y, n, d, "'token_expired_codes' must be a list of upstream error codes, such as [APIGW.0307]");
        return -1;
    }
    int rc = 0;
    for (size_t i = 0; i < count; i++) {
        yaml_node_t *item = yconf_seq_item(y, n, i);
        const char *code = yconf_scalar(item);
        if (!code || !*code || strlen(code) >= ERRMAP_CODE_MAX || strpbrk(code, " \t")) {
            yconf_error(y, item, d, "an error code is a word such as APIGW.0307");
            rc = -1;
            continue;
        }
        if (!(r->token_expired_codes[r->ntoken_expired_codes] = strdup(code)))
            return -1;
        r->ntoken_expired_codes++;
    }
    return rc;
}

int rules_load_upstream(struct yconf *y, yaml_node_t *n, struct rule *r, struct conf_diag *d)
{
    static const char *const keys[] = {"url", "path", "headers", "connect_timeout", "timeout", "token_expired_codes",
                                       NULL};
    r->connect_timeout_ms = 3000;
    r->timeout_ms = 10000;
    if (!n) {
        yconf_error(y, yconf_root(y), d, "missing 'upstream'");
        return -1;
    }
    if (yconf_check_map(y, n, "upstream", keys, d) < 0)
        return -1;
    int rc = 0;
    rc |= yconf_get_str(y, n, "url", &r->upstream_url, d);
    rc |= yconf_get_ms(y, n, "connect_timeout", 1, 600000, 0, &r->connect_timeout_ms, d);
    rc |= yconf_get_ms(y, n, "timeout", 1, 3600000, 0, &r->timeout_ms, d);
    rc |= load_upstream_path(y, yconf_get(y, n, "path"), r, d);
    rc |= load_upstream_headers(y, yconf_get(y, n, "headers"), r, d);
    rc |= load_token_expired_codes(y, yconf_get(y, n, "token_expired_codes"), r, d);
    if (!r->upstream_url) {
        yconf_error(y, n, d, "upstream needs 'url', such as https://elb.eu-west-0.myhuaweicloud.com");
        return -1;
    }
    const char *u = r->upstream_url;
    size_t len = strlen(u);
    if ((strncmp(u, "https://", 8) != 0 && strncmp(u, "http://", 7) != 0) || len < 9) {
        yconf_error(y, yconf_get(y, n, "url"), d, "upstream url '%s' must start with https:// (or http://)", u);
        rc = -1;
    } else if (strpbrk(u, "@?#")) {
        yconf_error(
            y, yconf_get(y, n, "url"), d,
            "upstream url '%s': no credentials, query or fragment (it is a base URL the route path is appended to)",
            strchr(u, '@') ? "(hidden: it holds credentials)" : u);
        rc = -1;
    } else if ((r->url_has_region = regions_url_check(u)) < 0) {
        yconf_error(y, yconf_get(y, n, "url"), d,
                    "upstream url '%s': {region} goes once, as a whole label of the host name (such as "
                    "https://ecs.{region}.myhuaweicloud.com), and no other placeholder",
                    u);
        rc = -1;
    } else if (u[len - 1] == '/') {
        r->upstream_url[len - 1] = '\0'; /* the route path brings its own '/' */
    }
    return rc ? -1 : 0;
}

int rule_token_expired(const struct rule *r, const char *code)
{
    for (size_t i = 0; i < r->ntoken_expired_codes; i++)
        if (strcmp(r->token_expired_codes[i], code) == 0)
            return 1;
    return 0;
}

int rule_upstream_path(const struct rule *r, const struct route_match *m, char *out, size_t outlen)
{
    if (r->upstream_path.nsegs == 0)
        return route_template_expand(&r->route, m, out, outlen);
    const char *values[ROUTE_MAX_PARAMS];
    for (size_t i = 0; i < r->upstream_path.nparams; i++)
        values[i] = m->values[r->upstream_param[i]];
    return route_template_expand_values(&r->upstream_path, values, out, outlen);
}
