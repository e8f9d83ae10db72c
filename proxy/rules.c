#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "rules.h"
#include "rules_errors.h"
#include "rules_int.h"
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

/* The other sections have files of their own: route and upstream
 * (rules_route.c, rules_upstream.c: rules_int.h), job (rules_job.c) and
 * errors (rules_errors.c). */

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
    int route_ok = rules_load_route(y, yconf_get(y, root, "route"), r, d) == 0;
    if (!route_ok)
        rc = -1;
    rc |= rules_load_upstream(y, yconf_get(y, root, "upstream"), r, d);
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
