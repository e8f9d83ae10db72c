/*
 * Unit tests for rules (and yamlconf under it): loading lua-free rule files,
 * reporting every mistake as FILE:LINE:COL: message, and matching request
 * paths against a loaded ruleset (proxy/rules.h is the contract).
 *
 * Broken rule files live in tests/unit/data/rules-bad/, curl-style: one
 * mistake per file, its expected diagnostic in the file's comment header:
 *
 *     # expect: LINE:COL: fragment
 *     # expect: -: fragment            (a diagnostic without a position)
 *
 * A fragment "a ... b" needs "a" then "b" in the same message. A new case is
 * a new file there, plus its name in BAD_RULE_FILES below (a test fails if
 * a file is not listed).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "regions.h"
#include "rules.h"
#include "unit_support.h"

#if defined(__SANITIZE_ADDRESS__)
#define JG_LEAK_CHECK 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define JG_LEAK_CHECK 1
#endif
#endif
#ifdef JG_LEAK_CHECK
#include <sanitizer/lsan_interface.h>
#endif

#define PID  "ff8080825ecc523f015ecd0a98f82f77"
#define JID  "4a6f6b50c1d64cba9b0f7d1e2c3a4b5d"
#define UUID "9c3d6a1e-4b2f-4c8d-9e7a-1b2c3d4e5f60"

/* Every file in data/rules-bad/, each one test. */
#define BAD_RULE_FILES(X)             \
    X("add-header-bad-name.yaml")     \
    X("bad-duration.yaml")            \
    X("bad-name.yaml")                \
    X("bad-path-brace.yaml")          \
    X("bad-path.yaml")                \
    X("bad-pattern.yaml")             \
    X("bad-query.yaml")               \
    X("bad-state.yaml")               \
    X("bad-terminal-ttl.yaml")        \
    X("bad-timeout.yaml")             \
    X("bad-url.yaml")                 \
    X("class-twice.yaml")             \
    X("codes-twice.yaml")             \
    X("drop-unknown-header.yaml")     \
    X("duplicate-key-top.yaml")       \
    X("empty-terminal.yaml")          \
    X("empty.yaml")                   \
    X("errors-file-missing.yaml")     \
    X("fault-mapping-429.yaml")       \
    X("fault-missing.yaml")           \
    X("fault-status-429.yaml")        \
    X("fault-twice.yaml")             \
    X("fault-unknown.yaml")           \
    X("forward-bad-method.yaml")      \
    X("forward-bad-prefix.yaml")      \
    X("forward-max-body.yaml")        \
    X("forward-unknown-key.yaml")     \
    X("host-service-bad-label.yaml")  \
    X("host-service-route.yaml")      \
    X("host-with-port.yaml")          \
    X("identity-param.yaml")          \
    X("invalid-request-200.yaml")     \
    X("methods-post.yaml")            \
    X("methods-scalar.yaml")          \
    X("missing-errors.yaml")          \
    X("missing-job.yaml")             \
    X("missing-path.yaml")            \
    X("missing-route.yaml")           \
    X("missing-upstream.yaml")        \
    X("missing-url.yaml")             \
    X("no-4xx.yaml")                  \
    X("no-5xx.yaml")                  \
    X("not-a-mapping.yaml")           \
    X("param-without-pattern.yaml")   \
    X("pattern-range-inverted.yaml")  \
    X("pattern-too-complex.yaml")     \
    X("pattern-unknown-param.yaml")   \
    X("pending-swr-not-bool.yaml")    \
    X("region-in-path.yaml")          \
    X("retry-after-range.yaml")       \
    X("status-200.yaml")              \
    X("status-429.yaml")              \
    X("status-key-600.yaml")          \
    X("status-key-bad.yaml")          \
    X("status-alias.yaml")            \
    X("status-leak.yaml")             \
    X("status-mapping-429.yaml")      \
    X("status-not-mapping.yaml")      \
    X("status-out-of-range.yaml")     \
    X("status-twice.yaml")            \
    X("status-word.yaml")             \
    X("errors-shape-unknown.yaml")    \
    X("sub-jobs-no-state.yaml")       \
    X("terminal-no-success.yaml")     \
    X("terminal-twice.yaml")          \
    X("token-expired-not-list.yaml")  \
    X("unknown-key-cache.yaml")       \
    X("unknown-key-error-entry.yaml") \
    X("unknown-key-errors.yaml")      \
    X("unknown-key-identity.yaml")    \
    X("unknown-key-job.yaml")         \
    X("unknown-key-route.yaml")       \
    X("unknown-key-top.yaml")         \
    X("unknown-key-upstream.yaml")    \
    X("upstream-path-param.yaml")     \
    X("yaml-syntax.yaml")
#define AS_NAME(f) f,
static const char *const bad_rule_files[] = {BAD_RULE_FILES(AS_NAME)};
#define NBAD (sizeof(bad_rule_files) / sizeof(bad_rule_files[0]))

/* ------------------------------------------------------------- helpers */

static size_t count_diags(const struct conf_diag *d, const char *fragment)
{
    size_t n = 0;
    for (size_t i = 0; i < d->count; i++)
        if (strstr(d->lines[i], fragment))
            n++;
    return n;
}

/* Load files (paths relative to the data folder, or "@..." relative to the source tree). */
static struct ruleset *load(struct conf_diag *d, size_t n, ...)
{
    char paths[8][4096];
    char *files[8];
    va_list ap;
    va_start(ap, n);
    for (size_t i = 0; i < n && i < 8; i++) {
        const char *rel = va_arg(ap, const char *);
        if (rel[0] == '@')
            unit_src_path(paths[i], sizeof(paths[i]), rel + 1);
        else
            unit_data_path(paths[i], sizeof(paths[i]), rel);
        files[i] = paths[i];
    }
    va_end(ap);
    conf_diag_init(d);
    return ruleset_load(files, n, d);
}

/* Load files that must load cleanly. */
static struct ruleset *load_ok(size_t n, const char *a, const char *b, const char *c)
{
    struct conf_diag d;
    struct ruleset *rs = load(&d, n, a, b, c);
    if (!rs || d.count) {
        unit_print_diags(&d);
        conf_diag_free(&d);
        ruleset_unref(rs);
        fail_msg("rules did not load cleanly (%zu diagnostics)", d.count);
    }
    conf_diag_free(&d);
    return rs;
}

static const struct rule *rule_named(const struct ruleset *rs, const char *name)
{
    for (size_t i = 0; i < rs->count; i++)
        if (strcmp(rs->rules[i]->name, name) == 0)
            return rs->rules[i];
    return NULL;
}

/* --------------------------------------------------- the shipped rule */

static void test_shipped_rule_loads(void **state)
{
    struct ruleset *rs = load_ok(1, "@lua-free-rules/elb-v1.yaml", NULL, NULL);
    assert_int_equal(rs->refs, 1);
    assert_int_equal(rs->count, 1);
    const struct rule *r = rs->rules[0];
    assert_string_equal(r->name, "elb-v1");
    assert_non_null(strstr(r->file, "lua-free-rules/elb-v1.yaml"));
    assert_string_equal(r->route.text, "/v1.0/{project_id}/jobs/{job_id}");
    assert_int_equal(r->methods, RULE_METHOD_GET | RULE_METHOD_HEAD);
    assert_int_equal(r->query, RULE_QUERY_IGNORE);
    assert_string_equal(r->upstream_url, "https://elb.eu-west-0.myhuaweicloud.com");
    assert_int_equal(r->connect_timeout_ms, 3000);
    assert_int_equal(r->timeout_ms, 10000);
    assert_string_equal(r->job.state.text, "status");
    assert_int_equal(r->job.nterminal, 2);
    assert_string_equal(r->job.terminal[0], "SUCCESS");
    assert_string_equal(r->job.terminal[1], "FAIL");
    assert_string_equal(r->job.identity.text, "job_id");
    assert_int_equal(r->identity_param, route_template_param_index(&r->route, "job_id"));
    assert_int_equal(r->terminal_ttl_ms, YCONF_FOREVER);
    assert_int_equal(r->pending_ttl_ms, 2000);
    assert_int_equal(r->errors.nshapes, 3);
    assert_int_equal(r->invalid_request.status, 400);
    assert_string_equal(r->invalid_request.code, "ELB.1001");
    assert_non_null(strstr(r->invalid_request.message, "32 lowercase hex"));
    ruleset_unref(rs);
}

struct match_case {
    const char *path;
    enum route_result want;
    const char *rule; /* NULL: none */
};

static int check_matches(const struct ruleset *rs, const struct match_case *cases, size_t n)
{
    int failed = 0;
    for (size_t i = 0; i < n; i++) {
        const struct rule *r = (const struct rule *)1;
        struct route_match m;
        enum route_result got = ruleset_match(rs, NULL, cases[i].path, &r, &m);
        const char *name = r ? r->name : NULL;
        int ok = got == cases[i].want && (cases[i].rule ? (name && strcmp(name, cases[i].rule) == 0) : name == NULL);
        if (!ok) {
            print_error("  row failed: '%s' gave %d with rule %s, want %d with rule %s\n", cases[i].path, (int)got,
                        name ? name : "(none)", (int)cases[i].want, cases[i].rule ? cases[i].rule : "(none)");
            failed++;
        }
    }
    return failed;
}

static void test_shipped_rule_match(void **state)
{
    static const struct match_case cases[] = {
        {"/v1.0/" PID "/jobs/" JID, ROUTE_MATCH, "elb-v1"},
        {"/v1.0/" PID "/jobs/" JID "0", ROUTE_BAD_PARAM, "elb-v1"},
        {"/v1.0/" PID "/jobs/4A6F6B50C1D64CBA9B0F7D1E2C3A4B5D", ROUTE_BAD_PARAM, "elb-v1"},
        {"/v1.0/%66f8080825ecc523f015ecd0a98f82f77/jobs/" JID, ROUTE_BAD_PARAM, "elb-v1"},
        {"/v1.0/" PID "/jobs/" JID "/", ROUTE_NO_MATCH, NULL},
        {"/v1/" PID "/jobs/" JID, ROUTE_NO_MATCH, NULL},
        {"/v1.0/" PID "/jobs", ROUTE_NO_MATCH, NULL},
        {"/", ROUTE_NO_MATCH, NULL},
        {"", ROUTE_NO_MATCH, NULL},
    };
    struct ruleset *rs = load_ok(1, "@lua-free-rules/elb-v1.yaml", NULL, NULL);
    int failed = check_matches(rs, cases, sizeof(cases) / sizeof(cases[0]));

    const struct rule *r = NULL;
    struct route_match m;
    assert_int_equal(ruleset_match(rs, NULL, "/v1.0/" PID "/jobs/" JID, &r, &m), ROUTE_MATCH);
    assert_int_equal(m.nvalues, 2);
    assert_string_equal(m.values[r->identity_param], JID);
    assert_string_equal(m.values[0], PID);
    ruleset_unref(rs);
    assert_int_equal(failed, 0);
}

/* ------------------------------------------------------ other good rules */

static void test_minimal_rule_defaults(void **state)
{
    struct ruleset *rs = load_ok(1, "rules/minimal.yaml", NULL, NULL);
    const struct rule *r = rs->rules[0];
    assert_string_equal(r->name, "minimal");
    assert_int_equal(r->line, 3); /* the first line after the comment header */
    assert_int_equal(r->methods, RULE_METHOD_GET | RULE_METHOD_HEAD);
    assert_int_equal(r->query, RULE_QUERY_IGNORE);
    assert_int_equal(r->connect_timeout_ms, 3000);
    assert_int_equal(r->timeout_ms, 10000);
    assert_int_equal(r->terminal_ttl_ms, YCONF_FOREVER);
    assert_int_equal(r->pending_ttl_ms, 2000);
    assert_int_equal(r->pending_swr, 0); /* off unless asked for */
    assert_int_equal(r->errors.nshapes, 0);
    assert_int_equal(r->identity_param, 1);
    assert_int_equal(r->invalid_request.status, 400);
    assert_true(r->invalid_request.code[0] && r->invalid_request.message[0]);
    assert_int_equal(r->errors.fault[FAULT_TIMEOUT].status, 504);
    assert_int_equal(r->errors.fault[FAULT_INTERNAL].status, 503);
    assert_int_equal(r->errors.klass[4].status, 400);
    ruleset_unref(rs);
}

/* upstream.token_expired_codes: which upstream error codes make jobgate
 * renew its own token and call once more. */
static void test_token_expired_codes(void **state)
{
    /* Absent: Huawei's APIGW.0307, as before the key existed. */
    struct ruleset *rs = load_ok(1, "rules/minimal.yaml", NULL, NULL);
    const struct rule *r = rs->rules[0];
    assert_int_equal(r->ntoken_expired_codes, 1);
    assert_true(rule_token_expired(r, "APIGW.0307"));
    assert_false(rule_token_expired(r, "APIGW.0301"));
    assert_false(rule_token_expired(r, ""));
    ruleset_unref(rs);

    char path[4096];
    unit_data_path(path, sizeof(path), "rules/minimal.yaml");
    char *text = unit_read_file(path);
    assert_non_null(text);
    char *at = strstr(text, "job:\n");
    assert_non_null(at);
    struct {
        const char *line; /* put before job: (line 11) */
        const char *yes, *no;
        const char *error; /* the one diagnostic expected, or NULL */
    } cases[] = {
        {"  token_expired_codes: [APIGW.0307, \"IAM.0002\"]\n", "IAM.0002", "APIGW.0301", NULL},
        {"  token_expired_codes: []\n", NULL, "APIGW.0307", NULL}, /* never renew */
        {"  token_expired_codes: APIGW.0307\n", NULL, NULL,
         "inline:11:24: 'token_expired_codes' must be a list of upstream error codes, such as [APIGW.0307]"},
        {"  token_expired_codes: [APIGW.0307, \"\"]\n", NULL, NULL,
         "inline:11:37: an error code is a word such as APIGW.0307"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char yaml[4096];
        snprintf(yaml, sizeof(yaml), "%.*s%s%s", (int)(at - text), text, cases[i].line, at);
        struct conf_diag d;
        conf_diag_init(&d);
        rs = ruleset_load_string("inline", yaml, &d);
        int ok = cases[i].error
                     ? !rs && d.count == 1 && strcmp(d.lines[0], cases[i].error) == 0
                     : rs && d.count == 0 && (!cases[i].yes || rule_token_expired(rs->rules[0], cases[i].yes)) &&
                           !rule_token_expired(rs->rules[0], cases[i].no);
        if (!ok)
            unit_print_diags(&d);
        ruleset_unref(rs);
        conf_diag_free(&d);
        if (!ok) {
            free(text);
            fail_msg("case %zu (%s): want %s", i, cases[i].line, cases[i].error ? cases[i].error : "it loaded");
        }
    }
    free(text);
}

static void test_elb_v3_rule(void **state)
{
    struct ruleset *rs = load_ok(1, "rules/elb-v3.yaml", NULL, NULL);
    const struct rule *r = rs->rules[0];
    assert_string_equal(r->name, "elb-v3");
    assert_int_equal(r->methods, RULE_METHOD_GET);
    assert_int_equal(r->query, RULE_QUERY_REJECT);
    assert_string_equal(r->upstream_url, "https://elb.example.com"); /* trailing '/' dropped */
    assert_int_equal(r->connect_timeout_ms, 250);
    assert_int_equal(r->timeout_ms, 60000);
    assert_int_equal(r->terminal_ttl_ms, 86400000);
    assert_int_equal(r->pending_ttl_ms, 0);
    assert_int_equal(r->pending_swr, 1);
    assert_string_equal(r->job.state.text, "job.status");
    assert_string_equal(r->job.identity.text, "job.job_id");
    assert_int_equal(r->identity_param, 1);
    assert_int_equal(r->errors.nshapes, 1);
    assert_int_equal(r->errors.exact[429].status, 503);
    assert_int_equal(r->errors.exact[429].retry_after, 5);
    assert_string_equal(r->errors.klass[5].code, "JG.UPSTREAM_ERROR");
    assert_int_equal(r->errors.fault[FAULT_INTERNAL].retry_after, 1);
    assert_int_equal(r->invalid_request.status, 400);
    assert_string_equal(r->invalid_request.code, "ELB.8902");
    assert_string_equal(r->invalid_request.message, "bad ids");

    /* The nested spec classifies an ELB v3 body. */
    const char *body = "{\"job\":{\"status\":\"SUCCESS\",\"job_id\":\"" UUID "\"}}";
    char st[16];
    assert_int_equal(classify_body(&r->job, body, strlen(body), UUID, st, sizeof(st)), JOB_TERMINAL);
    ruleset_unref(rs);
}

static void test_several_rules_dispatch(void **state)
{
    static const struct match_case cases[] = {
        {"/v1.0/" PID "/jobs/" JID, ROUTE_MATCH, "elb-v1"},
        {"/v1/" PID "/jobs/" JID, ROUTE_MATCH, "minimal"},
        {"/v3/" PID "/elb/jobs/" UUID, ROUTE_MATCH, "elb-v3"},
        {"/v3/" PID "/elb/jobs/" JID, ROUTE_BAD_PARAM, "elb-v3"},
        {"/v1/" PID "/jobs/" UUID, ROUTE_BAD_PARAM, "minimal"},
        {"/v2/" PID "/jobs/" JID, ROUTE_NO_MATCH, NULL},
        {"/v3/" PID "/jobs/" JID, ROUTE_NO_MATCH, NULL},
    };
    struct ruleset *rs = load_ok(3, "@lua-free-rules/elb-v1.yaml", "rules/minimal.yaml", "rules/elb-v3.yaml");
    assert_int_equal(rs->count, 3);
    assert_non_null(rule_named(rs, "elb-v1"));
    assert_non_null(rule_named(rs, "minimal"));
    assert_non_null(rule_named(rs, "elb-v3"));
    int failed = check_matches(rs, cases, sizeof(cases) / sizeof(cases[0]));
    ruleset_unref(rs);
    assert_int_equal(failed, 0);
}

static void test_load_string(void **state)
{
    char path[4096];
    unit_data_path(path, sizeof(path), "rules/minimal.yaml");
    char *text = unit_read_file(path);
    assert_non_null(text);
    struct conf_diag d;
    conf_diag_init(&d);
    struct ruleset *rs = ruleset_load_string("inline", text, &d);
    assert_non_null(rs);
    assert_int_equal(d.count, 0);
    assert_string_equal(rs->rules[0]->file, "inline");
    ruleset_unref(rs);

    /* The name given is the FILE of every diagnostic. */
    char *bad = strstr(text, "    internal: 503");
    assert_non_null(bad);
    *bad = '\0';
    rs = ruleset_load_string("inline", text, &d);
    assert_null(rs);
    unit_assert_diag(&d, "inline:23:5: ", "fault 'internal' has no mapping");
    conf_diag_free(&d);
    free(text);
}

static void test_every_4xx_listed_instead_of_class(void **state)
{
    /* Class coverage can also come from listing every status of the class. */
    char path[4096];
    unit_data_path(path, sizeof(path), "rules/minimal.yaml");
    char *text = unit_read_file(path);
    assert_non_null(text);
    char *line = strstr(text, "    \"4xx\": 400\n");
    assert_non_null(line);
    size_t cap = strlen(text) + 100 * 32;
    char *all = malloc(cap);
    assert_non_null(all);
    size_t used = (size_t)(line - text);
    memcpy(all, text, used);
    for (int s = 400; s < 500; s++)
        used += (size_t)snprintf(all + used, cap - used, "    \"%d\": %d\n", s, s == 429 ? 503 : 400);
    snprintf(all + used, cap - used, "%s", line + strlen("    \"4xx\": 400\n"));

    struct conf_diag d;
    conf_diag_init(&d);
    struct ruleset *rs = ruleset_load_string("all-4xx", all, &d);
    unit_print_diags(&d);
    assert_non_null(rs);
    assert_int_equal(d.count, 0);
    assert_false(rs->rules[0]->errors.klass[4].set);
    assert_int_equal(rs->rules[0]->errors.exact[429].status, 503);
    ruleset_unref(rs);

    /* One status short of the class: refused, naming the missing one. */
    char *gap = strstr(all, "    \"451\": 400\n");
    assert_non_null(gap);
    memmove(gap, gap + strlen("    \"451\": 400\n"), strlen(gap + strlen("    \"451\": 400\n")) + 1);
    rs = ruleset_load_string("all-4xx", all, &d);
    assert_null(rs);
    unit_assert_diag(&d, "all-4xx:", "upstream status 451 has no mapping");
    conf_diag_free(&d);
    free(all);
    free(text);
}

/* ---------------------------------------------------- broken rule files */

/*
 * The loader of unit_check_bad_file for data/rules-bad/: a rule file must be
 * refused, with exactly as many diagnostics about it as its header has
 * "# expect:" lines (unit_check_bad_file then finds each): one mistake must
 * not cascade into messages about what was written right.
 */
static int load_bad_rule(const char *name, const char *path, struct conf_diag *d)
{
    char *files[] = {(char *)path}; /* ruleset_load does not write to it */
    conf_diag_init(d);
    struct ruleset *rs = ruleset_load(files, 1, d);
    if (rs) {
        print_error("  %s loaded, want an error\n", name);
        ruleset_unref(rs);
        return 1;
    }
    char *text = unit_read_file(path);
    if (!text)
        fail_msg("cannot read %s", path);
    size_t expected = 0, about_file = 0;
    for (const char *line = text; line && *line == '#'; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
        expected += strncmp(line, "# expect: ", 10) == 0;
    free(text);
    /* Diagnostics about another file (an errors file it names) are that file's. */
    for (size_t i = 0; i < d->count; i++)
        about_file += strncmp(d->lines[i], path, strlen(path)) == 0 && d->lines[i][strlen(path)] == ':';
    if (about_file != expected) {
        print_error("  %s: %zu diagnostics about it, want exactly %zu (its '# expect:' lines)\n", name, about_file,
                    expected);
        return 1;
    }
    return 0;
}

static void test_bad_rule_file(void **state)
{
    unit_check_bad_file("rules-bad", *state, load_bad_rule);
}

static void test_every_bad_file_is_listed(void **state)
{
    unit_check_folder_listed("rules-bad", bad_rule_files, NBAD, "BAD_RULE_FILES");
}

/*
 * Loading a broken rule must not leak: `jobgate -t` and reloads load rules
 * that may be broken. Checked with LeakSanitizer after each file (stops at
 * the first file that leaks, as LeakSanitizer then reports that leak again);
 * only in a build with AddressSanitizer.
 */
#ifdef JG_LEAK_CHECK
static void test_bad_files_leak_nothing(void **state)
{
    for (size_t i = 0; i < NBAD; i++) {
        char rel[512];
        struct conf_diag d;
        snprintf(rel, sizeof(rel), "rules-bad/%s", bad_rule_files[i]);
        struct ruleset *rs = load(&d, 1, rel);
        ruleset_unref(rs);
        conf_diag_free(&d);
        if (__lsan_do_recoverable_leak_check())
            fail_msg("loading rules-bad/%s leaks (LeakSanitizer's report above)", bad_rule_files[i]);
    }
}
#endif

/* --------------------------------------------- several files, one set */

/*
 * Load FOLDER/a.yaml and FOLDER/b.yaml (in the data folder) together: they
 * must be refused with one diagnostic, left in `d`. Their paths go to a and b.
 */
static void load_pair_refused(const char *folder, char *a, char *b, size_t len, struct conf_diag *d)
{
    char rel_a[512], rel_b[512];
    snprintf(rel_a, sizeof(rel_a), "%s/a.yaml", folder);
    snprintf(rel_b, sizeof(rel_b), "%s/b.yaml", folder);
    unit_data_path(a, len, rel_a);
    unit_data_path(b, len, rel_b);
    struct ruleset *rs = load(d, 2, rel_a, rel_b);
    assert_null(rs);
    if (d->count != 1)
        unit_print_diags(d);
    assert_int_equal(d->count, 1);
}

static void test_overlapping_routes(void **state)
{
    char a[4096], b[4096], prefix[4200];
    struct conf_diag d;
    /* One error, about the second rule, naming both rules and the first file.
     * It points at the routes (route.path of each), not at the rules' names. */
    load_pair_refused("rules-overlap", a, b, sizeof(a), &d);
    snprintf(prefix, sizeof(prefix), "%s:5:9: ", b);
    assert_non_null(unit_find_diag(&d, prefix,
                                   "/v1/{project}/jobs/{id} ... 'jobs-b' ... overlaps ... "
                                   "/v1/{project_id}/jobs/{job_id} ... 'jobs-a'"));
    snprintf(prefix, sizeof(prefix), "(%s:5)", a);
    assert_non_null(strstr(d.lines[0], prefix));
    conf_diag_free(&d);

    /* Each loads on its own. */
    struct ruleset *rs = load_ok(1, "rules-overlap/a.yaml", NULL, NULL);
    ruleset_unref(rs);
    rs = load_ok(1, "rules-overlap/b.yaml", NULL, NULL);
    ruleset_unref(rs);
}

static void test_duplicate_rule_names(void **state)
{
    char a[4096], b[4096];
    struct conf_diag d;
    load_pair_refused("rules-dupname", a, b, sizeof(a), &d);
    assert_non_null(unit_find_diag(&d, b, "'ecs' ... already used"));
    assert_non_null(strstr(d.lines[0], a));
    conf_diag_free(&d);
}

static void test_same_file_twice(void **state)
{
    struct conf_diag d;
    struct ruleset *rs = load(&d, 2, "@lua-free-rules/elb-v1.yaml", "@lua-free-rules/elb-v1.yaml");
    assert_null(rs);
    assert_int_equal(count_diags(&d, "already used"), 1);
    assert_int_equal(count_diags(&d, "overlaps route"), 1);
    assert_int_equal(count_diags(&d, "is already forwarded"), 1);
    conf_diag_free(&d);
}

/* A forward prefix over another rule's job route: one error, at the prefix
 * (FILE:LINE:COL), naming the job route and where it is. */
static void test_forward_overlaps_job_route(void **state)
{
    char a[4096], b[4096], prefix[4200];
    struct conf_diag d;
    load_pair_refused("rules-forward-overlap", a, b, sizeof(a), &d);
    snprintf(prefix, sizeof(prefix), "%s:15:11: ", b);
    assert_non_null(unit_find_diag(&d, prefix,
                                   "forward prefix /ecs of rule 'other' overlaps job route "
                                   "/ecs/v1/{project_id}/jobs/{job_id} of rule 'ecs-jobs'"));
    snprintf(prefix, sizeof(prefix), "(%s:5:9)", a);
    assert_non_null(strstr(d.lines[0], prefix));
    conf_diag_free(&d);
    /* The other order: the error is at the job route that comes second. */
    struct ruleset *rs = load(&d, 2, "rules-forward-overlap/b.yaml", "rules-forward-overlap/a.yaml");
    assert_null(rs);
    assert_int_equal(d.count, 1);
    assert_non_null(unit_find_diag(&d, "", "a.yaml:5:9: job route ... overlaps forward prefix /ecs of rule 'other'"));
    conf_diag_free(&d);
}

/* Precedence: a job route wins for its path, whatever the method; else the
 * longest forward prefix whose whole segments the path starts with. */
static void test_forward_match(void **state)
{
    struct ruleset *rs =
        load_ok(3, "@lua-free-rules/ecs.yaml", "@lua-free-rules/elb-v1.yaml", "@lua-free-rules/cce.yaml");
    const struct rule *r = NULL;
    struct route_match m;
    assert_int_equal(ruleset_match(rs, NULL, "/ecs/v1/" PID "/jobs/" JID, &r, &m), ROUTE_MATCH);
    assert_string_equal(r->name, "ecs");
    assert_int_equal(ruleset_match(rs, NULL, "/ecs/v1.1/" PID "/cloudservers", &r, &m), ROUTE_NO_MATCH);
    static const struct {
        const char *path, *rule;
    } cases[] = {
        {"/ecs/v1.1/" PID "/cloudservers", "ecs"},
        {"/ecs/v1/" PID "/cloudservers/detail", "ecs"},
        {"/ecs", "ecs"},
        {"/ecs/", "ecs"},
        {"/ecsx/v1/" PID "/cloudservers", NULL},
        {"/ec", NULL},
        {"/v1.0/" PID "/elbaas/loadbalancers", "elb-v1"},
        {"/v1.00/" PID "/elbaas/loadbalancers", NULL},
        {"/api/v3/projects/" PID "/clusters", "cce"},
        {"/", NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct rule *f = ruleset_match_forward(rs, NULL, cases[i].path);
        if (!cases[i].rule != !f || (f && strcmp(f->name, cases[i].rule) != 0))
            fail_msg("%s: forwarded by %s, expected %s", cases[i].path, f ? f->name : "none",
                     cases[i].rule ? cases[i].rule : "none");
    }
    const struct rule *ecs = ruleset_match_forward(rs, NULL, "/ecs/v1");
    assert_non_null(ecs);
    assert_int_equal(ecs->forward.strip_prefix, 1);
    assert_int_equal(ecs->forward.max_body, 1024 * 1024);
    assert_true(ecs->forward.methods & RULE_METHOD_POST);
    assert_true(ecs->forward.methods & RULE_METHOD_DELETE);
    ruleset_unref(rs);
}

/* {region}: where it may be in a url, and how a request's region is found. */
static void test_regions(void **state)
{
    assert_int_equal(regions_url_check("https://ecs.{region}.myhuaweicloud.com"), 1);
    assert_int_equal(regions_url_check("http://{region}.example:8080/api"), 1);
    assert_int_equal(regions_url_check("https://ecs.eu-west-0.myhuaweicloud.com"), 0);
    assert_int_equal(regions_url_check("https://ecs.example.com/{region}"), -1);
    assert_int_equal(regions_url_check("https://ecs.{regoin}.example.com"), -1);
    assert_int_equal(regions_url_check("https://ecs-{region}.example.com"), -1);
    assert_int_equal(regions_url_check("https://{region}.{region}.example.com"), -1);
    char out[256];
    assert_int_equal(regions_expand("https://ecs.{region}.x.com", "eu-west-0", out, sizeof(out)), 27);
    assert_string_equal(out, "https://ecs.eu-west-0.x.com");
    assert_int_equal(regions_expand("https://ecs.{region}.x.com", "eu-west-0", out, 10), -1);

    struct regions *r = regions_new();
    assert_non_null(r);
    assert_int_equal(regions_set_host_domain(r, "JobGate.example"), 0);
    assert_int_equal(regions_add_name(r, "ap-southeast-1"), 0);
    assert_int_equal(regions_add_project(r, PID, "eu-west-0"), 0);
    char region[REGIONS_NAME_MAX];
    assert_int_equal(regions_resolve(r, NULL, PID, region), REGIONS_OK);
    assert_string_equal(region, "eu-west-0");
    assert_int_equal(regions_resolve(r, "ecs.eu-west-0.jobgate.example:443", PID, region), REGIONS_OK);
    assert_int_equal(regions_resolve(r, "ECS.AP-Southeast-1.JOBGATE.example", JID, region), REGIONS_OK);
    assert_string_equal(region, "ap-southeast-1");
    assert_int_equal(regions_resolve(r, "ecs.ap-southeast-1.jobgate.example", PID, region), REGIONS_MISMATCH);
    assert_int_equal(regions_resolve(r, "ecs.nowhere-1.jobgate.example", JID, region), REGIONS_UNKNOWN_REGION);
    assert_int_equal(regions_resolve(r, "ecs.a.b.c.jobgate.example", JID, region), REGIONS_UNKNOWN_REGION);
    assert_int_equal(regions_resolve(r, "eu-west-0.jobgate.example", JID, region), REGIONS_UNKNOWN_PROJECT);
    assert_int_equal(regions_resolve(r, "ecs.eu-west-0.other.example", JID, region), REGIONS_UNKNOWN_PROJECT);
    assert_int_equal(regions_resolve(r, "127.0.0.1:8080", NULL, region), REGIONS_UNKNOWN_PROJECT);
    struct regions *copy = regions_copy(r);
    regions_free(r);
    assert_int_equal(regions_resolve(copy, NULL, PID, region), REGIONS_OK);
    regions_free(copy);
    assert_int_equal(regions_resolve(NULL, "ecs.eu-west-0.jobgate.example", PID, region), REGIONS_UNKNOWN_PROJECT);
}

/* Two rules claiming Host ecs.REGION.DOMAIN, one of which takes its prefix
 * off: one error, at the second's route.host_service (FILE:LINE:COL),
 * naming the first and where it is. */
static void test_host_service_conflict(void **state)
{
    char a[4096], b[4096], prefix[4200];
    struct conf_diag d;
    load_pair_refused("rules-host-service", a, b, sizeof(a), &d);
    snprintf(prefix, sizeof(prefix), "%s:5:17: ", b);
    assert_non_null(unit_find_diag(&d, prefix, "host_service 'ecs' of rule 'ecs2' is already claimed by rule 'ecs'"));
    snprintf(prefix, sizeof(prefix), "(%s:6:17)", a);
    assert_non_null(strstr(d.lines[0], prefix));
    conf_diag_free(&d);
    /* The shipped ELB rules share `elb`: neither takes its prefix off. */
    struct ruleset *rs = load_ok(2, "@lua-free-rules/elb-v1.yaml", "@lua-free-rules/elb-v3.yaml", NULL);
    ruleset_unref(rs);
}

/* A Host SERVICE.REGION.DOMAIN: its service label, the cloud's own path
 * given back the prefix the rule takes off, and matching among that
 * service's rules only. */
static void test_host_service_match(void **state)
{
    struct regions *reg = regions_new();
    assert_non_null(reg);
    assert_int_equal(regions_set_host_domain(reg, "jobgate.example"), 0);
    char service[REGIONS_NAME_MAX];
    assert_int_equal(regions_host_service(reg, "ecs.eu-west-0.jobgate.example", service), 1);
    assert_string_equal(service, "ecs");
    assert_int_equal(regions_host_service(reg, "EVS.ap-southeast-1.JobGate.Example:8443", service), 1);
    assert_string_equal(service, "evs");
    assert_int_equal(regions_host_service(reg, "a.ecs.eu-west-0.jobgate.example", service), 0);
    assert_int_equal(regions_host_service(reg, "eu-west-0.jobgate.example", service), 0);
    assert_int_equal(regions_host_service(reg, "ecs.eu-west-0.other.example", service), 0);
    assert_int_equal(regions_host_service(reg, "ec_s.eu-west-0.jobgate.example", service), 0);
    assert_int_equal(regions_host_service(reg, NULL, service), 0);
    assert_int_equal(regions_host_service(NULL, "ecs.eu-west-0.jobgate.example", service), 0);
    regions_free(reg);

    struct ruleset *rs =
        load_ok(3, "@lua-free-rules/ecs.yaml", "@lua-free-rules/evs.yaml", "@lua-free-rules/elb-v1.yaml");
    char path[ROUTE_MAX_PATH + 1];
    const struct rule *r = NULL;
    struct route_match m;
    assert_int_equal(ruleset_service_path(rs, "ecs", "/v1/" PID "/jobs/" JID, path, sizeof(path)), 1);
    assert_string_equal(path, "/ecs/v1/" PID "/jobs/" JID);
    assert_int_equal(ruleset_match_service(rs, "ecs", path, &r, &m), ROUTE_MATCH);
    assert_string_equal(r->name, "ecs");
    assert_string_equal(m.values[r->project_param], PID);
    assert_int_equal(ruleset_service_path(rs, "evs", "/v1/" PID "/jobs/" JID, path, sizeof(path)), 1);
    assert_int_equal(ruleset_match_service(rs, "evs", path, &r, &m), ROUTE_MATCH);
    assert_string_equal(r->name, "evs");
    /* Only the service's own rules: ECS's path on the EVS Host is EVS's. */
    assert_int_equal(ruleset_service_path(rs, "evs", "/ecs/v1/" PID "/jobs/" JID, path, sizeof(path)), 1);
    assert_int_equal(ruleset_match_service(rs, "evs", path, &r, &m), ROUTE_NO_MATCH);
    assert_string_equal(ruleset_match_forward_service(rs, "evs", path)->name, "evs");
    /* The rest of the service, forwarded. */
    assert_int_equal(ruleset_service_path(rs, "ecs", "/v1.1/" PID "/cloudservers", path, sizeof(path)), 1);
    assert_int_equal(ruleset_match_service(rs, "ecs", path, &r, &m), ROUTE_NO_MATCH);
    assert_string_equal(ruleset_match_forward_service(rs, "ecs", path)->name, "ecs");
    /* ELB keeps its prefix: the path is the cloud's as it is. */
    assert_int_equal(ruleset_service_path(rs, "elb", "/v1.0/" PID "/jobs/" JID, path, sizeof(path)), 1);
    assert_string_equal(path, "/v1.0/" PID "/jobs/" JID);
    assert_int_equal(ruleset_match_service(rs, "elb", path, &r, &m), ROUTE_MATCH);
    assert_string_equal(r->name, "elb-v1");
    assert_null(ruleset_match_forward_service(rs, "ecs", "/v1.0/" PID "/elbaas/loadbalancers"));
    /* A path already under the prefix (the SDK endpoint https://ecs.R.DOMAIN/ecs): path routing's. */
    assert_int_equal(ruleset_service_path(rs, "ecs", "/ecs/v1/" PID "/jobs/" JID, path, sizeof(path)), 0);
    assert_int_equal(ruleset_service_path(rs, "ecs", "/ecs", path, sizeof(path)), 0);
    assert_int_equal(ruleset_service_path(rs, "ecs", "/ecsx/v1", path, sizeof(path)), 1);
    /* A service no rule claims: path routing decides. */
    assert_int_equal(ruleset_service_path(rs, "iam", "/v3/projects", path, sizeof(path)), 0);
    /* Too long for a path. */
    char longpath[ROUTE_MAX_PATH + 1];
    memset(longpath, 'a', sizeof(longpath) - 1);
    longpath[0] = '/';
    longpath[ROUTE_MAX_PATH] = '\0';
    assert_int_equal(ruleset_service_path(rs, "ecs", longpath, path, sizeof(path)), -1);
    ruleset_unref(rs);
}

static void test_every_problem_is_reported(void **state)
{
    /* A good file and two broken ones: each broken file's own error, none about the good one. */
    char good[4096];
    struct conf_diag d;
    unit_src_path(good, sizeof(good), "lua-free-rules/elb-v1.yaml");
    struct ruleset *rs =
        load(&d, 3, "rules-bad/bad-pattern.yaml", "@lua-free-rules/elb-v1.yaml", "rules-bad/fault-twice.yaml");
    assert_null(rs);
    assert_non_null(unit_find_diag(&d, "", "rules-bad/bad-pattern.yaml:8:13: ... not a valid regular expression"));
    assert_non_null(unit_find_diag(&d, "", "rules-bad/fault-twice.yaml:29:5: ... mapped twice"));
    for (size_t i = 0; i < d.count; i++)
        if (strncmp(d.lines[i], good, strlen(good)) == 0)
            fail_msg("a diagnostic about the good file: %s", d.lines[i]);
    conf_diag_free(&d);
}

static void test_missing_and_no_files(void **state)
{
    struct conf_diag d;
    struct ruleset *rs = load(&d, 1, "rules/no-such-file.yaml");
    assert_null(rs);
    assert_non_null(unit_find_diag(&d, "", "rules/no-such-file.yaml: cannot open"));
    conf_diag_free(&d);

    conf_diag_init(&d);
    rs = ruleset_load(NULL, 0, &d);
    assert_null(rs);
    assert_int_equal(d.count, 1);
    assert_non_null(strstr(d.lines[0], "no rule files"));
    conf_diag_free(&d);
}

static void test_refcount(void **state)
{
    struct ruleset *rs = load_ok(1, "@lua-free-rules/elb-v1.yaml", NULL, NULL);
    assert_ptr_equal(ruleset_ref(rs), rs);
    assert_int_equal(rs->refs, 2);
    ruleset_unref(rs);
    assert_int_equal(rs->refs, 1);
    /* Still usable by the holder of the other reference. */
    const struct rule *r;
    struct route_match m;
    assert_int_equal(ruleset_match(rs, NULL, "/v1.0/" PID "/jobs/" JID, &r, &m), ROUTE_MATCH);
    ruleset_unref(rs); /* freed here: ASan reports a use or a leak */
    ruleset_unref(NULL);
}

#define AS_TEST(f) {"rules-bad/" f, test_bad_rule_file, NULL, NULL, (void *)(f)},

int main(void)
{
    /* One test a line, the per-file tests last. */
    /* clang-format off */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shipped_rule_loads),
        cmocka_unit_test(test_shipped_rule_match),
        cmocka_unit_test(test_minimal_rule_defaults),
        cmocka_unit_test(test_token_expired_codes),
        cmocka_unit_test(test_elb_v3_rule),
        cmocka_unit_test(test_several_rules_dispatch),
        cmocka_unit_test(test_load_string),
        cmocka_unit_test(test_every_4xx_listed_instead_of_class),
        cmocka_unit_test(test_refcount),
#ifdef JG_LEAK_CHECK
        /* Before anything that might leak: LeakSanitizer sees the whole process.
         * (Left out without a sanitizer: cmocka's TAP "not ok # SKIP" counts as a failure.) */
        cmocka_unit_test(test_bad_files_leak_nothing),
#endif
        cmocka_unit_test(test_every_bad_file_is_listed),
        cmocka_unit_test(test_overlapping_routes),
        cmocka_unit_test(test_duplicate_rule_names),
        cmocka_unit_test(test_same_file_twice),
        cmocka_unit_test(test_forward_overlaps_job_route),
        cmocka_unit_test(test_forward_match),
        cmocka_unit_test(test_regions),
        cmocka_unit_test(test_host_service_conflict),
        cmocka_unit_test(test_host_service_match),
        cmocka_unit_test(test_every_problem_is_reported),
        cmocka_unit_test(test_missing_and_no_files),
        BAD_RULE_FILES(AS_TEST)
    };
    /* clang-format on */
    return cmocka_run_group_tests_name("rules", tests, NULL, NULL);
}
