/*
 * libFuzzer target for the lua-free rule loader: proxy/rules.c on top of
 * proxy/yamlconf.c (libyaml), route.c, classify.c, jsonpath.c, errmap.c and
 * fault.c.
 *
 * The input is a rule file. ruleset_load_string() must either load it or
 * refuse it with at least one diagnostic (rules.h: "NULL with every problem
 * found added"), never crash or leak. A loaded rule must hold what the
 * loader promises (a valid name, a pattern on every route parameter, an
 * http(s) base URL without a trailing '/', an answer from the documented
 * table for every upstream status 100-599 and every fault), and then:
 *
 *  - ruleset_match() runs on a few fixed paths (the shipped rules' shapes,
 *    empty, "/", too long), on the rule's own route with every parameter
 *    replaced by a 32-hex id, a UUID, or the text of each "#v: VALUE"
 *    comment line of the input, and on the text of each "#p: PATH" line;
 *    each with no Host, the rule's host, and each "#h: HOST" line;
 *  - every match is checked as in fuzz_oracle.h (values match their pattern
 *    as a whole, the route expands back to the path), and the upstream path
 *    is built (rule_upstream_path);
 *  - the error map and the job spec answer a few fixed upstream bodies.
 *
 * (Comment lines keep the YAML valid, so the fuzzer can vary paths and
 * values without breaking the rule.)
 *
 * A rule may name a shared errors file (`errors: shared/x.yaml`). The
 * target never reads the disk: yconf_load() is replaced (-Wl,--wrap) by one
 * that serves, whatever the name, the part of the input after a line
 * "#---", or "no such file" when there is none. The rule file is the input
 * up to that line.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "rules.h"
#include "fuzz_oracle.h"

#define PID  "ff8080825ecc523f015ecd0a98f82f77"
#define JID  "4a6f6b50c1d64cba9b0f7d1e2c3a4b5d"
#define UUID "9c3d6a1e-4b2f-4c8d-9e7a-1b2c3d4e5f60"

#define MAX_INPUT 65536
#define MAX_LINES 8 /* "#p:", "#v:" and "#h:" lines used per input */
#define MAX_HOSTS (MAX_LINES + 4)

/* ------------------------------------------------- the errors file, in memory */

static const char *errors_file; /* the text after "#---", or NULL */

int __real_yconf_load(struct yconf *y, const char *path, struct conf_diag *d);
int __wrap_yconf_load(struct yconf *y, const char *path, struct conf_diag *d);

int __wrap_yconf_load(struct yconf *y, const char *path, struct conf_diag *d)
{
    if (errors_file)
        return yconf_load_string(y, path, errors_file, strlen(errors_file), d);
    /* What yconf_load() does for a file that is not there. */
    memset(y, 0, sizeof(*y));
    y->path = strdup(path);
    conf_diag_add(d, path, 0, 0, "cannot open: %s", strerror(ENOENT));
    return -1;
}

/* ------------------------------------------------------------- matching */

/* Host header `host` (NULL: none) satisfies rule `r`: its host, any port, any case. */
static int host_ok(const struct rule *r, const char *host)
{
    if (!r->host)
        return 1;
    if (!host)
        return 0;
    size_t len = host[0] == '[' ? strcspn(host, "]") + 1 : strcspn(host, ":");
    return strlen(r->host) == len && strncasecmp(r->host, host, len) == 0;
}

static void check_upstream_path(const struct rule *r, const char *path, const struct route_match *m)
{
    char out[4 * ROUTE_MAX_PATH];
    int n = rule_upstream_path(r, m, out, sizeof(out));
    if (r->upstream_path.nsegs == 0) {
        FUZZ_CHECK(n == (int)strlen(path) && strcmp(out, path) == 0,
                   "rule '%s' has no upstream path: '%s' should go upstream as it is, not as '%s' (%d)", r->name, path,
                   n >= 0 ? out : "", n);
        return;
    }
    /* The upstream template with the route's values, by parameter name. */
    char want[sizeof(out)];
    size_t used = 0;
    for (size_t i = 0; i < r->upstream_path.nsegs; i++) {
        const struct route_segment *s = &r->upstream_path.segs[i];
        const char *piece = s->literal;
        if (!piece) {
            int k = route_template_param_index(&r->route, r->upstream_path.params[s->param].name);
            FUZZ_CHECK(k >= 0, "upstream parameter {%s} of rule '%s' is not in the route",
                       r->upstream_path.params[s->param].name, r->name);
            piece = m->values[k];
        }
        int w = snprintf(want + used, sizeof(want) - used, "/%s", piece);
        FUZZ_CHECK(w >= 0 && (size_t)w < sizeof(want) - used, "upstream path too long");
        used += (size_t)w;
    }
    FUZZ_CHECK(n == (int)used && strcmp(out, want) == 0, "rule '%s', path '%s': upstream path '%s' (%d), want '%s'",
               r->name, path, n >= 0 ? out : "", n, want);
    FUZZ_CHECK(rule_upstream_path(r, m, out, used) == -1, "upstream path in one byte too few");
}

static void match_one(const struct ruleset *rs, const char *host, const char *path)
{
    const struct rule *r = (const struct rule *)1;
    struct route_match m;
    enum route_result res = ruleset_match(rs, host, path, &r, &m);

    /* The reference: the first rule whose host fits and whose shape matches. */
    const struct rule *want = NULL;
    enum route_result want_res = ROUTE_NO_MATCH;
    struct route_match ref;
    int bad = -1;
    for (size_t i = 0; i < rs->count && !want; i++) {
        if (!host_ok(rs->rules[i], host))
            continue;
        want_res = route_template_match(&rs->rules[i]->route, path, &ref, &bad);
        if (want_res != ROUTE_NO_MATCH)
            want = rs->rules[i];
    }
    FUZZ_CHECK(res == want_res && r == want, "host '%s', path '%s': got %d (rule '%s'), want %d (rule '%s')",
               host ? host : "(none)", path, (int)res, r ? r->name : "-", (int)want_res, want ? want->name : "-");
    if (res == ROUTE_NO_MATCH)
        return;
    fuzz_check_match(&r->route, path, res, &m, bad);
    if (res == ROUTE_MATCH)
        check_upstream_path(r, path, &m);
}

static void match_hosts(const struct ruleset *rs, const char *const *hosts, size_t nhosts, const char *path)
{
    for (size_t i = 0; i < nhosts; i++)
        match_one(rs, hosts[i], path);
}

/* The rule's route with every parameter replaced by `value`. */
static void match_filled(const struct ruleset *rs, const struct rule *r, const char *const *hosts, size_t nhosts,
                         const char *value, size_t vlen)
{
    char path[2 * ROUTE_MAX_PATH];
    size_t used = 0;
    for (size_t i = 0; i < r->route.nsegs; i++) {
        const struct route_segment *s = &r->route.segs[i];
        const char *piece = s->literal ? s->literal : value;
        size_t n = s->literal ? strlen(piece) : vlen;
        if (used + 1 + n >= sizeof(path))
            return;
        path[used++] = '/';
        memcpy(path + used, piece, n);
        used += n;
    }
    path[used] = '\0';
    match_hosts(rs, hosts, nhosts, path);
}

/* ---------------------------------------------------------- a loaded rule */

static void check_entry(const struct rule *r, const struct errmap_entry *e, const char *what)
{
    FUZZ_CHECK(e && e->set && http_status_documented(e->status) && e->status != 200, "rule '%s': %s maps to status %d",
               r->name, what, e ? e->status : -1);
    FUZZ_CHECK(e->retry_after >= 0 && e->retry_after <= 3600, "rule '%s': %s retry_after %d", r->name, what,
               e->retry_after);
}

static void check_rule(const struct rule *r)
{
    char what[64];
    FUZZ_CHECK(r->name && r->name[0] && strlen(r->name) <= 64, "rule name");
    FUZZ_CHECK(r->file && strcmp(r->file, "fuzz.yaml") == 0, "rule file '%s'", r->file ? r->file : "(null)");
    FUZZ_CHECK(r->route.text && r->route.nsegs >= 1, "rule '%s' has no route", r->name);
    for (size_t i = 0; i < r->route.nparams; i++)
        FUZZ_CHECK(r->route.params[i].compiled && r->route.params[i].pattern, "{%s} of rule '%s' has no pattern",
                   r->route.params[i].name, r->name);
    if (r->host)
        FUZZ_CHECK(r->host[0] && !strpbrk(r->host, " /:@"), "rule '%s': host '%s'", r->name, r->host);
    FUZZ_CHECK(r->methods && !(r->methods & ~(unsigned)(RULE_METHOD_GET | RULE_METHOD_HEAD)), "methods %#x",
               r->methods);
    FUZZ_CHECK(r->identity_param >= -1 && r->identity_param < (int)r->route.nparams, "identity param %d of %zu",
               r->identity_param, r->route.nparams);
    const char *u = r->upstream_url;
    FUZZ_CHECK(u && (!strncmp(u, "https://", 8) || !strncmp(u, "http://", 7)) && !strpbrk(u, "@?#") &&
                   u[strlen(u) - 1] != '/',
               "upstream url '%s'", u ? u : "(null)");
    for (size_t i = 0; i < r->upstream_path.nparams; i++)
        FUZZ_CHECK(r->upstream_param[i] >= 0 && (size_t)r->upstream_param[i] < r->route.nparams,
                   "upstream parameter %zu of rule '%s' is route parameter %d", i, r->name, r->upstream_param[i]);
    for (size_t i = 0; i < r->nadd_headers; i++)
        FUZZ_CHECK(r->add_headers[i] && strstr(r->add_headers[i], ": ") && !strpbrk(r->add_headers[i], "\r\n"),
                   "rule '%s': header line '%s'", r->name, r->add_headers[i] ? r->add_headers[i] : "(null)");
    for (size_t i = 0; i < r->ndrop_headers; i++)
        FUZZ_CHECK(r->drop_headers[i] != NULL, "rule '%s': drop header %zu", r->name, i);
    FUZZ_CHECK(r->connect_timeout_ms > 0 && r->timeout_ms > 0, "timeouts");
    FUZZ_CHECK(r->terminal_ttl_ms == YCONF_FOREVER || r->terminal_ttl_ms > 0, "terminal_ttl %lld",
               (long long)r->terminal_ttl_ms);
    FUZZ_CHECK(r->pending_ttl_ms >= 0 && r->not_found_ttl_ms >= 0, "pending_ttl / not_found_ttl");
    FUZZ_CHECK(r->job.state.nparts > 0 && r->job.nterminal > 0, "rule '%s': job spec", r->name);
    for (int s = 100; s < 600; s++) {
        snprintf(what, sizeof(what), "upstream status %d", s);
        check_entry(r, errmap_for_status(&r->errors, s), what);
    }
    for (int f = FAULT_NONE + 1; f < FAULT__COUNT; f++) {
        snprintf(what, sizeof(what), "fault %s", fault_name((enum upstream_fault)f));
        check_entry(r, &r->errors.fault[f], what);
    }
    for (size_t i = 0; i < r->errors.ncodes; i++) {
        snprintf(what, sizeof(what), "error code %.40s", r->errors.codes[i].code ? r->errors.codes[i].code : "?");
        check_entry(r, &r->errors.codes[i].entry, what);
    }
    FUZZ_CHECK(http_status_documented(r->invalid_request.status) && r->invalid_request.status != 200,
               "rule '%s': invalid_request status %d", r->name, r->invalid_request.status);
}

/* What the gateway does with a loaded rule's answers, on a few fixed bodies. */
static void use_rule(const struct rule *r)
{
    static const char *const bodies[] = {
        "{\"status\": \"SUCCESS\", \"job_id\": \"" JID "\"}",
        "{\"job\": {\"status\": \"RUNNING\", \"job_id\": \"" JID "\"}, \"entities\": {\"sub_jobs\": "
        "[{\"status\": \"SUCCESS\"}, {\"status\": \"FAIL\"}]}}",
        "{\"error\": {\"code\": \"APIGW.0308\", \"message\": \"throttled\"}, \"error_code\": \"X\", "
        "\"error_msg\": \"y\", \"code\": \"c\", \"message\": \"m\"}",
        "[1, 2]",
        "not json",
        "",
    };
    static const int statuses[] = {100, 200, 302, 404, 429, 500, 503, 599};
    for (size_t b = 0; b < sizeof(bodies) / sizeof(bodies[0]); b++) {
        char state[64];
        enum job_class c = classify_body(&r->job, bodies[b], strlen(bodies[b]), JID, state, sizeof(state));
        FUZZ_CHECK(c == JOB_TERMINAL || c == JOB_PENDING || c == JOB_NOT_JOB || c == JOB_OTHER_JOB, "class %d", (int)c);
        if (c == JOB_TERMINAL || c == JOB_PENDING)
            (void)classify_state_failed(&r->job, state);
        for (size_t s = 0; s < sizeof(statuses) / sizeof(statuses[0]); s++) {
            struct client_error e;
            errmap_from_upstream(&r->errors, statuses[s], bodies[b], strlen(bodies[b]), &e);
            FUZZ_CHECK(http_status_documented(e.status) && e.status != 200 && e.code[0] && e.message[0],
                       "rule '%s', upstream %d: answer %d '%s' '%s'", r->name, statuses[s], e.status, e.code,
                       e.message);
        }
    }
    for (int f = FAULT_NONE + 1; f < FAULT__COUNT; f++) {
        struct client_error e;
        errmap_from_fault(&r->errors, (enum upstream_fault)f, &e);
        FUZZ_CHECK(http_status_documented(e.status) && e.status != 200, "rule '%s', fault %d: answer %d", r->name, f,
                   e.status);
    }
}

/* ------------------------------------------------------------- the input */

/* Every line "#<tag>: TEXT" of the input, TEXT up to the end of the line. */
static size_t tagged_lines(const char *text, char tag, const char **out, size_t *lens, size_t max)
{
    size_t n = 0;
    for (const char *line = text; line && *line && n < max;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        if (len >= 4 && line[0] == '#' && line[1] == tag && line[2] == ':' && line[3] == ' ') {
            out[n] = line + 4;
            lens[n++] = len - 4;
        }
        line = end ? end + 1 : NULL;
    }
    return n;
}

/* A copy of the `n` bytes at `s`, or NULL. */
static char *copy(const char *s, size_t n)
{
    char *c = malloc(n + 1);
    if (c) {
        memcpy(c, s, n);
        c[n] = '\0';
    }
    return c;
}

static void exercise(const struct ruleset *rs, const char *text)
{
    static const char *const paths[] = {
        "/v1.0/" PID "/jobs/" JID,
        "/v1/" PID "/jobs/" JID,
        "/ecs/v1/" PID "/jobs/" JID,
        "/v3/" PID "/elb/jobs/" UUID,
        "/v1.0/" PID "/jobs/" JID "/",
        "/v1.0//jobs/" JID,
        "/v1.0/" PID "/jobs/%34a6f",
        "",
        "/",
        "//",
        "relative/path",
    };
    const char *lines[MAX_LINES];
    size_t lens[MAX_LINES];

    /* Hosts: none, a few fixed, each rule's own (with a port, in capitals), the input's. */
    char *owned[MAX_HOSTS];
    size_t nowned = 0;
    const char *hosts[2 * MAX_HOSTS + 4] = {NULL, "", "[::1]:8080", "jobgate.example:80"};
    size_t nhosts = 4;
    for (size_t k = 0; k < rs->count && nowned + 1 < MAX_HOSTS; k++) {
        const struct rule *r = rs->rules[k];
        if (!r->host)
            continue;
        size_t len = strlen(r->host);
        char *h = malloc(len + 6);
        if (!h)
            continue;
        for (size_t i = 0; i < len; i++)
            h[i] = (r->host[i] >= 'a' && r->host[i] <= 'z') ? (char)(r->host[i] - 'a' + 'A') : r->host[i];
        memcpy(h + len, ":443", 5);
        owned[nowned++] = h;
        hosts[nhosts++] = r->host;
        hosts[nhosts++] = h;
    }
    size_t nh = tagged_lines(text, 'h', lines, lens, MAX_LINES);
    for (size_t i = 0; i < nh && nowned < MAX_HOSTS; i++) {
        char *h = copy(lines[i], lens[i]);
        if (h) {
            owned[nowned++] = h;
            hosts[nhosts++] = h;
        }
    }

    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
        match_hosts(rs, hosts, nhosts, paths[i]);

    char long_path[ROUTE_MAX_PATH + 2];
    long_path[0] = '/';
    memset(long_path + 1, 'a', ROUTE_MAX_PATH);
    long_path[ROUTE_MAX_PATH + 1] = '\0';
    match_hosts(rs, hosts, 1, long_path); /* one byte too long */
    long_path[ROUTE_MAX_PATH] = '\0';
    match_hosts(rs, hosts, 1, long_path); /* the longest a path may be */

    size_t np = tagged_lines(text, 'p', lines, lens, MAX_LINES);
    for (size_t i = 0; i < np; i++) {
        char *path = copy(lines[i], lens[i]);
        if (path)
            match_hosts(rs, hosts, nhosts, path);
        free(path);
    }
    size_t nv = tagged_lines(text, 'v', lines, lens, MAX_LINES);
    for (size_t k = 0; k < rs->count; k++) {
        const struct rule *r = rs->rules[k];
        check_rule(r);
        use_rule(r);
        match_filled(rs, r, hosts, nhosts, PID, strlen(PID));
        match_filled(rs, r, hosts, nhosts, UUID, strlen(UUID));
        for (size_t i = 0; i < nv; i++)
            match_filled(rs, r, hosts, nhosts, lines[i], lens[i]);
    }
    for (size_t i = 0; i < nowned; i++)
        free(owned[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > MAX_INPUT || memchr(data, '\0', size))
        return 0;
    char *text = copy((const char *)data, size);
    if (!text)
        return 0;
    /* The rule file, then after a line "#---" the errors file it may name. */
    errors_file = NULL;
    char *sep = strncmp(text, "#---\n", 5) == 0 ? text : strstr(text, "\n#---\n");
    if (sep) {
        if (sep != text)
            sep++;
        sep[0] = '\0';
        errors_file = sep + 5;
    }

    struct conf_diag d;
    conf_diag_init(&d);
    struct ruleset *rs = ruleset_load_string("fuzz.yaml", text, &d);
    if (rs) {
        FUZZ_CHECK(rs->refs == 1 && rs->count == 1 && rs->rules, "a loaded ruleset: %u refs, %zu rules", rs->refs,
                   rs->count);
        FUZZ_CHECK(d.count == 0, "a ruleset loaded with %zu diagnostics, the first: %s", d.count, d.lines[0]);
        /* A request holds its own reference: the ruleset outlives the loader's. */
        struct ruleset *held = ruleset_ref(rs);
        ruleset_unref(rs);
        exercise(held, text);
        ruleset_unref(held);
    } else {
        FUZZ_CHECK(d.count > 0, "the rule was refused without a diagnostic");
    }
    for (size_t i = 0; i < d.count; i++)
        FUZZ_CHECK(d.lines[i] && d.lines[i][0], "diagnostic %zu is empty", i);
    conf_diag_free(&d);
    errors_file = NULL;
    free(text);
    return 0;
}
