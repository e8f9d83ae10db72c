#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "rules.h"
#include "regions.h"
#include "rules_errors.h"
#include "rules_job.h"

static void rule_free(struct rule *r)
{
    if (!r)
        return;
    free(r->name);
    free(r->file);
    free(r->host);
    free(r->host_service);
    route_template_free(&r->route);
    free(r->upstream_url);
    route_template_free(&r->upstream_path);
    for (size_t i = 0; i < r->nadd_headers; i++)
        free(r->add_headers[i]);
    free(r->add_headers);
    for (size_t i = 0; i < r->ndrop_headers; i++)
        free(r->drop_headers[i]);
    free(r->drop_headers);
    for (size_t i = 0; i < r->ntoken_expired_codes; i++)
        free(r->token_expired_codes[i]);
    free(r->token_expired_codes);
    classify_spec_free(&r->job);
    errmap_free(&r->errors);
    free(r->forward.prefix);
    free(r);
}

static int valid_rule_name(const char *s)
{
    if (!*s || strlen(s) > 64)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '-' ||
              *s == '_' || *s == '.'))
            return 0;
    return 1;
}

/* ---------------------------------------------------------------- route */

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

static int load_route(struct yconf *y, yaml_node_t *n, struct rule *r, struct conf_diag *d)
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

/* ------------------------------------------------------------- upstream */

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

static int load_upstream(struct yconf *y, yaml_node_t *n, struct rule *r, struct conf_diag *d)
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

/* ---------------------------------------------------------------- cache */

static int load_cache(struct yconf *y, yaml_node_t *n, struct rule *r, struct conf_diag *d)
{
    static const char *const keys[] = {"terminal_ttl", "pending_ttl", "not_found_ttl",
                                       "stale_ttl",    "pending_swr", NULL};
    r->terminal_ttl_ms = YCONF_FOREVER;
    r->pending_ttl_ms = 2000;
    r->stale_ttl_ms = 600000;
    if (!n)
        return 0;
    if (yconf_check_map(y, n, "cache", keys, d) < 0)
        return -1;
    int rc = 0;
    rc |= yconf_get_ms(y, n, "terminal_ttl", 1, INT64_MAX / 4, 1, &r->terminal_ttl_ms, d);
    /* A still-changing answer kept for long would hide progress from pollers. */
    rc |= yconf_get_ms(y, n, "pending_ttl", 0, 3600000, 0, &r->pending_ttl_ms, d);
    /* Off by default: a job created a moment ago may not be visible upstream yet. */
    rc |= yconf_get_ms(y, n, "not_found_ttl", 0, 3600000, 0, &r->not_found_ttl_ms, d);
    /* How long past its TTL a still-changing answer is kept, to be served
     * (X-Cache: STALE) only when upstream fails, throttles or is held back. */
    rc |= yconf_get_ms(y, n, "stale_ttl", 0, 7 * 86400000LL, 0, &r->stale_ttl_ms, d);
    /* Off by default: with it, a poller may see a state one poll late. */
    rc |= yconf_get_bool(y, n, "pending_swr", &r->pending_swr, d);
    return rc ? -1 : 0;
}

/* ----------------------------------------------------------------- rule */

/* -------------------------------------------------------------- forward */

unsigned rule_method_bit(const char *m)
{
    static const struct {
        const char *name;
        unsigned bit;
    } methods[] = {
        {"GET", RULE_METHOD_GET}, {"HEAD", RULE_METHOD_HEAD},   {"POST", RULE_METHOD_POST},
        {"PUT", RULE_METHOD_PUT}, {"PATCH", RULE_METHOD_PATCH}, {"DELETE", RULE_METHOD_DELETE},
    };
    for (size_t i = 0; m && i < sizeof(methods) / sizeof(methods[0]); i++)
        if (strcmp(methods[i].name, m) == 0)
            return methods[i].bit;
    return 0;
}

/* A forward prefix: '/' then segments of URL path characters, no empty,
 * "." or ".." segment, no '{' (it is not a template), no trailing '/'. */
static int valid_prefix(const char *p)
{
    if (p[0] != '/' || !p[1] || strlen(p) > 256)
        return 0;
    for (const char *seg = p + 1; *seg;) {
        size_t n = strcspn(seg, "/");
        if (n == 0 || (n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.'))
            return 0;
        for (size_t i = 0; i < n; i++)
            if (!(isalnum((unsigned char)seg[i]) || strchr("-._~", seg[i])))
                return 0;
        seg += n;
        if (*seg == '/' && !*++seg)
            return 0; /* a trailing '/' */
    }
    return 1;
}

/* forward: {prefix, methods, max_body, project_segment}. */
static int load_forward(struct yconf *y, yaml_node_t *n, struct rule *r, struct conf_diag *d)
{
    static const char *const keys[] = {"prefix", "strip_prefix", "methods", "max_body", "project_segment", NULL};
    struct rule_forward *f = &r->forward;
    f->methods = RULE_METHOD_GET | RULE_METHOD_HEAD | RULE_METHOD_POST | RULE_METHOD_PUT | RULE_METHOD_PATCH |
                 RULE_METHOD_DELETE;
    f->max_body = 1024 * 1024;
    f->project_segment = 2; /* /v1/{project_id}/...: the cloud's own convention */
    f->strip_prefix = 1;
    if (!n)
        return 0;
    if (yconf_check_map(y, n, "forward", keys, d) < 0)
        return -1;
    int rc = 0;
    yaml_node_t *prefix = yconf_get(y, n, "prefix");
    const char *text = yconf_scalar(prefix);
    if (!text || !valid_prefix(text)) {
        yconf_error(y, prefix ? prefix : n, d,
                    "forward needs a 'prefix' such as /ecs: '/' and whole path segments, no trailing '/'");
        rc = -1;
    } else {
        f->prefix = strdup(text);
        f->prefix_len = strlen(text);
        f->line = prefix->start_mark.line + 1;
        f->col = prefix->start_mark.column + 1;
    }
    yaml_node_t *methods = yconf_get(y, n, "methods");
    if (methods) {
        if (methods->type != YAML_SEQUENCE_NODE || yconf_seq_len(methods) == 0) {
            yconf_error(y, methods, d, "'methods' must be a list such as [GET, POST, PUT, DELETE]");
            rc = -1;
        } else {
            f->methods = 0;
            for (size_t i = 0; i < yconf_seq_len(methods); i++) {
                yaml_node_t *item = yconf_seq_item(y, methods, i);
                unsigned bit = rule_method_bit(yconf_scalar(item));
                if (!bit) {
                    yconf_error(y, item, d, "method '%s' cannot be forwarded: GET, HEAD, POST, PUT, PATCH, DELETE",
                                yconf_scalar(item) ? yconf_scalar(item) : "?");
                    rc = -1;
                }
                f->methods |= bit;
            }
        }
    }
    rc |= yconf_get_bool(y, n, "strip_prefix", &f->strip_prefix, d);
    rc |= yconf_get_bytes(y, n, "max_body", 0, RULE_FORWARD_MAX_BODY, &f->max_body, d);
    long seg = f->project_segment;
    rc |= yconf_get_long(y, n, "project_segment", 0, ROUTE_MAX_SEGMENTS, &seg, d);
    f->project_segment = (int)seg;
    return rc ? -1 : 0;
}

/* Could a path under forward prefix `prefix` (the prefix itself or below
 * it) match template `t`? Each segment of the prefix must be a literal of
 * `t` equal to it, or a parameter of `t` (the safe side, as
 * route_templates_overlap). */
static int prefix_covers(const char *prefix, const struct route_template *t)
{
    size_t i = 0;
    for (const char *seg = prefix + 1; *seg; i++) {
        size_t n = strcspn(seg, "/");
        if (i >= t->nsegs)
            return 0;
        const char *lit = t->segs[i].literal;
        if (lit && (strlen(lit) != n || strncmp(lit, seg, n) != 0))
            return 0;
        seg += n;
        if (*seg == '/')
            seg++;
    }
    return 1;
}

/* The prefix a request to SERVICE.REGION.DOMAIN is given back: the forward
 * prefix the rule takes off, or "". */
static const char *service_prefix(const struct rule *r)
{
    return r->forward.prefix && r->forward.strip_prefix ? r->forward.prefix : "";
}

/* A rule served by Host gets the cloud's own path: its route must be that
 * path (the upstream one) under the prefix it takes off. Returns 0 or -1. */
static int host_service_route_check(const struct rule *r)
{
    const char *prefix = service_prefix(r);
    const char *cloud = r->upstream_path.nsegs ? r->upstream_path.text : r->route.text;
    size_t n = strlen(prefix);
    return strncmp(r->route.text, prefix, n) == 0 && strcmp(r->route.text + n, cloud) == 0 ? 0 : -1;
}

static struct rule *load_rule(struct yconf *y, struct conf_diag *d)
{
    static const char *const keys[] = {"name", "route", "upstream", "job", "cache", "errors", "forward", NULL};
    yaml_node_t *root = yconf_root(y);
    if (!root) {
        yconf_error(y, NULL, d, "the file is empty: a rule needs name, route, upstream, job and errors");
        return NULL;
    }
    if (yconf_check_map(y, root, "a rule file", keys, d) < 0)
        return NULL;
    struct rule *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->project_param = -1;
    r->file = strdup(y->path);
    r->line = root->start_mark.line + 1;
    int rc = 0;
    rc |= yconf_get_str(y, root, "name", &r->name, d);
    if (!r->name || !valid_rule_name(r->name)) {
        yconf_error(y, yconf_get(y, root, "name") ? yconf_get(y, root, "name") : root, d,
                    "a rule needs a 'name' of letters, digits, '-', '_' or '.' (it is part of cache keys)");
        rc = -1;
    }
    int route_ok = load_route(y, yconf_get(y, root, "route"), r, d) == 0;
    if (!route_ok)
        rc = -1;
    rc |= load_upstream(y, yconf_get(y, root, "upstream"), r, d);
    /* The job section refers to route parameters: check it against a valid route only. */
    rc |= rules_load_job(y, yconf_get(y, root, "job"), route_ok ? &r->route : NULL, &r->job, &r->identity_param, d);
    rc |= load_cache(y, yconf_get(y, root, "cache"), r, d);
    rc |= rules_load_errors(y, yconf_get(y, root, "errors"), &r->errors, &r->invalid_request, d);
    rc |= load_forward(y, yconf_get(y, root, "forward"), r, d);
    if (!rc && r->host_service && host_service_route_check(r) < 0) {
        conf_diag_add(d, r->file, r->host_service_line, r->host_service_col,
                      "host_service '%s': a client of SERVICE.REGION.DOMAIN sends the cloud's own path, so the route "
                      "%s must be %s%s (the upstream path under the forward prefix taken off)",
                      r->host_service, r->route.text,
                      r->forward.prefix && r->forward.strip_prefix ? r->forward.prefix : "",
                      r->upstream_path.nsegs ? r->upstream_path.text : r->route.text);
        rc = -1;
    }
    if (rc) {
        rule_free(r);
        return NULL;
    }
    return r;
}

static int ruleset_add(struct ruleset *rs, struct rule *r, struct conf_diag *d)
{
    int rc = 0;
    for (size_t i = 0; i < rs->count; i++) {
        const struct rule *o = rs->rules[i];
        if (strcmp(o->name, r->name) == 0) {
            conf_diag_add(d, r->file, r->line, 1, "rule name '%s' is already used by %s:%zu", r->name, o->file,
                          o->line);
            rc = -1;
        }
        int same_host = !o->host || !r->host || strcmp(o->host, r->host) == 0;
        if (same_host && route_templates_overlap(&o->route, &r->route)) {
            conf_diag_add(d, r->file, r->path_line, r->path_col,
                          "route %s of rule '%s' overlaps route %s of rule '%s' (%s:%zu)", r->route.text, r->name,
                          o->route.text, o->name, o->file, o->path_line);
            rc = -1;
        }
        /* A forward prefix may cover its own rule's job route (the job route
         * wins there), not another rule's: which upstream a call under it
         * goes to would then hang on the method. Nor may two prefixes be equal. */
        if (same_host && r->forward.prefix && prefix_covers(r->forward.prefix, &o->route)) {
            conf_diag_add(d, r->file, r->forward.line, r->forward.col,
                          "forward prefix %s of rule '%s' overlaps job route %s of rule '%s' (%s:%zu:%zu); "
                          "a job route always wins, so give each service its own prefix",
                          r->forward.prefix, r->name, o->route.text, o->name, o->file, o->path_line, o->path_col);
            rc = -1;
        }
        if (same_host && o->forward.prefix && prefix_covers(o->forward.prefix, &r->route)) {
            conf_diag_add(d, r->file, r->path_line, r->path_col,
                          "job route %s of rule '%s' overlaps forward prefix %s of rule '%s' (%s:%zu:%zu); "
                          "a job route always wins, so give each service its own prefix",
                          r->route.text, r->name, o->forward.prefix, o->name, o->file, o->forward.line, o->forward.col);
            rc = -1;
        }
        /* One Host SERVICE.REGION.DOMAIN, one way to read its paths: a rule
         * that takes its prefix off takes every path of that Host. */
        if (r->host_service && o->host_service && strcmp(r->host_service, o->host_service) == 0 &&
            (*service_prefix(r) || *service_prefix(o))) {
            conf_diag_add(d, r->file, r->host_service_line, r->host_service_col,
                          "host_service '%s' of rule '%s' is already claimed by rule '%s' (%s:%zu:%zu); rules may "
                          "share a service only when neither takes its forward prefix off",
                          r->host_service, r->name, o->name, o->file, o->host_service_line, o->host_service_col);
            rc = -1;
        }
        if (same_host && r->forward.prefix && o->forward.prefix && strcmp(r->forward.prefix, o->forward.prefix) == 0) {
            conf_diag_add(d, r->file, r->forward.line, r->forward.col,
                          "forward prefix %s of rule '%s' is already forwarded by rule '%s' (%s:%zu:%zu)",
                          r->forward.prefix, r->name, o->name, o->file, o->forward.line, o->forward.col);
            rc = -1;
        }
    }
    struct rule **grown = realloc(rs->rules, (rs->count + 1) * sizeof(*grown));
    if (!grown) {
        rule_free(r);
        return -1;
    }
    rs->rules = grown;
    rs->rules[rs->count++] = r; /* kept even on error, so that later rules are checked against it */
    return rc;
}

static struct ruleset *ruleset_load_yconfs(struct yconf *ys, size_t n, struct conf_diag *d)
{
    struct ruleset *rs = calloc(1, sizeof(*rs));
    if (!rs)
        return NULL;
    rs->refs = 1;
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        if (!ys[i].loaded) {
            rc = -1;
            continue;
        }
        struct rule *r = load_rule(&ys[i], d);
        if (!r || ruleset_add(rs, r, d) < 0)
            rc = -1;
    }
    if (rs->count == 0 && rc == 0) {
        conf_diag_add(d, n ? ys[0].path : "rules", 0, 0, "no rules: jobgate would answer 404 to everything");
        rc = -1;
    }
    if (rc) {
        ruleset_unref(rs);
        return NULL;
    }
    return rs;
}

struct ruleset *ruleset_load(char *const *files, size_t nfiles, struct conf_diag *d)
{
    if (nfiles == 0) {
        conf_diag_add(d, "configuration", 0, 0, "no rule files: name them under 'rules'");
        return NULL;
    }
    struct yconf *ys = calloc(nfiles, sizeof(*ys));
    if (!ys)
        return NULL;
    for (size_t i = 0; i < nfiles; i++)
        yconf_load(&ys[i], files[i], d);
    struct ruleset *rs = ruleset_load_yconfs(ys, nfiles, d);
    for (size_t i = 0; i < nfiles; i++)
        yconf_free(&ys[i]);
    free(ys);
    return rs;
}

struct ruleset *ruleset_load_string(const char *name, const char *text, struct conf_diag *d)
{
    struct yconf y;
    yconf_load_string(&y, name, text, strlen(text), d);
    struct ruleset *rs = ruleset_load_yconfs(&y, 1, d);
    yconf_free(&y);
    return rs;
}

struct ruleset *ruleset_ref(struct ruleset *rs)
{
    rs->refs++;
    return rs;
}

void ruleset_unref(struct ruleset *rs)
{
    if (!rs || --rs->refs > 0)
        return;
    for (size_t i = 0; i < rs->count; i++)
        rule_free(rs->rules[i]);
    free(rs->rules);
    free(rs);
}

/* Does the request's Host (may be NULL; may carry a port) satisfy the rule? */
static int host_matches(const struct rule *r, const char *host)
{
    if (!r->host)
        return 1;
    if (!host)
        return 0;
    size_t len = strcspn(host, ":");
    if (host[0] == '[') /* an IPv6 literal: the port follows the ']' */
        len = strcspn(host, "]") + 1;
    return strlen(r->host) == len && strncasecmp(r->host, host, len) == 0;
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

/* Is rule `r` asked about a request: by Host SERVICE.REGION.DOMAIN when
 * `service` is set, else by route.host against `host`. */
static int rule_asked(const struct rule *r, const char *host, const char *service)
{
    if (service)
        return r->host_service && strcmp(r->host_service, service) == 0;
    return host_matches(r, host);
}

static enum route_result match_job(const struct ruleset *rs, const char *host, const char *service, const char *path,
                                   const struct rule **rule_out, struct route_match *m)
{
    enum route_result best = ROUTE_NO_MATCH;
    *rule_out = NULL;
    /* Routes never overlap (the loader refuses it), so at most one has this shape for this host. */
    for (size_t i = 0; i < rs->count; i++) {
        if (!rule_asked(rs->rules[i], host, service))
            continue;
        enum route_result res = route_template_match(&rs->rules[i]->route, path, m, NULL);
        if (res != ROUTE_NO_MATCH) {
            *rule_out = rs->rules[i];
            best = res;
            break;
        }
    }
    return best;
}

static const struct rule *match_forward(const struct ruleset *rs, const char *host, const char *service,
                                        const char *path)
{
    const struct rule *best = NULL;
    size_t plen = strlen(path);
    for (size_t i = 0; i < rs->count; i++) {
        const struct rule *r = rs->rules[i];
        const struct rule_forward *f = &r->forward;
        if (!f->prefix || plen < f->prefix_len || memcmp(path, f->prefix, f->prefix_len) != 0 ||
            (path[f->prefix_len] != '\0' && path[f->prefix_len] != '/') || !rule_asked(r, host, service))
            continue;
        if (!best || f->prefix_len > best->forward.prefix_len)
            best = r;
    }
    return best;
}

enum route_result ruleset_match(const struct ruleset *rs, const char *host, const char *path,
                                const struct rule **rule_out, struct route_match *m)
{
    return match_job(rs, host, NULL, path, rule_out, m);
}

const struct rule *ruleset_match_forward(const struct ruleset *rs, const char *host, const char *path)
{
    return match_forward(rs, host, NULL, path);
}

int ruleset_service_path(const struct ruleset *rs, const char *service, const char *path, char *out, size_t outlen)
{
    for (size_t i = 0; i < rs->count; i++) {
        const struct rule *r = rs->rules[i];
        if (!r->host_service || strcmp(r->host_service, service) != 0)
            continue;
        /* The loader lets a rule that takes its prefix off claim its service
         * alone. A path already under that prefix (an SDK given the endpoint
         * https://ecs.REGION.DOMAIN/ecs) is path routing's: the prefix is
         * jobgate's, never the start of a cloud path. */
        const char *prefix = service_prefix(r);
        size_t plen = strlen(prefix);
        if (plen && strncmp(path, prefix, plen) == 0 && (path[plen] == '\0' || path[plen] == '/'))
            return 0;
        int n = snprintf(out, outlen, "%s%s", prefix, path);
        return n < 0 || (size_t)n >= outlen ? -1 : 1;
    }
    return 0;
}

enum route_result ruleset_match_service(const struct ruleset *rs, const char *service, const char *path,
                                        const struct rule **rule_out, struct route_match *m)
{
    return match_job(rs, NULL, service, path, rule_out, m);
}

const struct rule *ruleset_match_forward_service(const struct ruleset *rs, const char *service, const char *path)
{
    return match_forward(rs, NULL, service, path);
}
