/*
 * Unit tests for route: path templates, their parameter patterns, matching
 * request paths, overlap detection and expansion (proxy/route.h is the
 * contract).
 *
 * Table-driven: every table row is checked and every failing row is printed
 * before the test fails, so one run shows all that is wrong.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "route.h"
#include "unit_support.h"

/* The seed API's path, with the example ids of the API documentation. */
#define SEED_TEMPLATE "/v1.0/{project_id}/jobs/{job_id}"
#define HEX32         "[0-9a-f]{32}"
#define PID           "ff8080825ecc523f015ecd0a98f82f77"
#define JID           "4a6f6b50c1d64cba9b0f7d1e2c3a4b5d"

static const char *result_name(enum route_result r)
{
    switch (r) {
    case ROUTE_NO_MATCH: return "NO_MATCH";
    case ROUTE_MATCH: return "MATCH";
    case ROUTE_BAD_PARAM: return "BAD_PARAM";
    }
    return "?";
}

/* Parse `text` and give each parameter in `names` the pattern `pattern`. */
static void template_with(struct route_template *t, const char *text, const char *const *names, const char *pattern)
{
    char err[256] = "";
    if (route_template_parse(t, text, err, sizeof(err)) != 0)
        fail_msg("template '%s' does not parse: %s", text, err);
    for (const char *const *n = names; *n; n++)
        if (route_template_set_pattern(t, *n, pattern, err, sizeof(err)) != 0)
            fail_msg("pattern '%s' of {%s}: %s", pattern, *n, err);
}

/* ------------------------------------------------------------ fixtures */

static int seed_setup(void **state)
{
    static const char *const names[] = {"project_id", "job_id", NULL};
    struct route_template *t = calloc(1, sizeof(*t));
    if (!t)
        return -1;
    template_with(t, SEED_TEMPLATE, names, HEX32);
    *state = t;
    return 0;
}

static int seed_teardown(void **state)
{
    route_template_free(*state);
    free(*state);
    return 0;
}

/* ------------------------------------------------------------ matching */

static void test_seed_template_shape(void **state)
{
    const struct route_template *t = *state;
    assert_string_equal(t->text, SEED_TEMPLATE);
    assert_int_equal(t->nsegs, 4);
    assert_int_equal(t->nparams, 2);
    assert_string_equal(t->segs[0].literal, "v1.0");
    assert_null(t->segs[1].literal);
    assert_string_equal(t->segs[2].literal, "jobs");
    assert_null(t->segs[3].literal);
    assert_int_equal(route_template_param_index(t, "project_id"), 0);
    assert_int_equal(route_template_param_index(t, "job_id"), 1);
    assert_int_equal(route_template_param_index(t, "jobs"), -1);
    assert_int_equal(route_template_param_index(t, "job"), -1);
    assert_string_equal(t->params[1].pattern, HEX32);
}

struct match_case {
    const char *what;
    const char *path;
    enum route_result want;
    int bad_param; /* for ROUTE_BAD_PARAM: index of the first bad parameter */
};

static const struct match_case seed_cases[] = {
    {"the documented example", "/v1.0/" PID "/jobs/" JID, ROUTE_MATCH, -1},
    {"both ids equal", "/v1.0/" PID "/jobs/" PID, ROUTE_MATCH, -1},
    {"all digits", "/v1.0/01234567890123456789012345678901/jobs/" JID, ROUTE_MATCH, -1},

    /* A parameter of the wrong form: the shape matches, so 400 not 404. */
    {"job_id of 31 characters", "/v1.0/" PID "/jobs/4a6f6b50c1d64cba9b0f7d1e2c3a4b5", ROUTE_BAD_PARAM, 1},
    {"job_id of 33 characters", "/v1.0/" PID "/jobs/" JID "0", ROUTE_BAD_PARAM, 1},
    {"project_id of 31 characters", "/v1.0/f8080825ecc523f015ecd0a98f82f77/jobs/" JID, ROUTE_BAD_PARAM, 0},
    {"project_id of 33 characters", "/v1.0/" PID "f/jobs/" JID, ROUTE_BAD_PARAM, 0},
    {"uppercase hex project_id", "/v1.0/FF8080825ECC523F015ECD0A98F82F77/jobs/" JID, ROUTE_BAD_PARAM, 0},
    {"one uppercase letter in job_id", "/v1.0/" PID "/jobs/4A6f6b50c1d64cba9b0f7d1e2c3a4b5d", ROUTE_BAD_PARAM, 1},
    {"non-hex letter g", "/v1.0/" PID "/jobs/4a6f6b50c1d64cba9b0f7d1e2c3a4b5g", ROUTE_BAD_PARAM, 1},
    {"both bad: the first is reported", "/v1.0/xyz/jobs/xyz", ROUTE_BAD_PARAM, 0},
    {"percent-encoded id that decodes to a valid one", "/v1.0/%66f8080825ecc523f015ecd0a98f82f77/jobs/" JID,
     ROUTE_BAD_PARAM, 0},
    {"percent-encoded slash in job_id", "/v1.0/" PID "/jobs/4a6f6b50c1d64cba%2F9b0f7d1e2c3a4b5d", ROUTE_BAD_PARAM, 1},
    {"dot-dot as project_id", "/v1.0/../jobs/" JID, ROUTE_BAD_PARAM, 0},
    {"encoded dot-dot as project_id", "/v1.0/%2e%2e/jobs/" JID, ROUTE_BAD_PARAM, 0},
    {"a space in job_id", "/v1.0/" PID "/jobs/4a6f6b50c1d64cba 9b0f7d1e2c3a4b5d", ROUTE_BAD_PARAM, 1},
    {"newline after job_id", "/v1.0/" PID "/jobs/" JID "\n", ROUTE_BAD_PARAM, 1},
    {"a query string is part of the raw id (callers strip it first)", "/v1.0/" PID "/jobs/" JID "?x=1", ROUTE_BAD_PARAM,
     1},
    /* An empty segment where a parameter goes: the shape is there, the value is not. */
    {"empty project_id (double slash)", "/v1.0//jobs/" JID, ROUTE_BAD_PARAM, 0},
    {"empty job_id", "/v1.0/" PID "/jobs/", ROUTE_BAD_PARAM, 1},

    /* Not this shape: 404. */
    {"an extra segment", "/v1.0/" PID "/jobs/" JID "/extra", ROUTE_NO_MATCH, -1},
    {"a missing segment", "/v1.0/" PID "/jobs", ROUTE_NO_MATCH, -1},
    {"two missing segments", "/v1.0/" PID, ROUTE_NO_MATCH, -1},
    {"only the root", "/", ROUTE_NO_MATCH, -1},
    {"empty path", "", ROUTE_NO_MATCH, -1},
    {"no leading slash", "v1.0/" PID "/jobs/" JID, ROUTE_NO_MATCH, -1},
    {"a trailing slash", "/v1.0/" PID "/jobs/" JID "/", ROUTE_NO_MATCH, -1},
    {"a double slash between segments", "/v1.0/" PID "//jobs/" JID, ROUTE_NO_MATCH, -1},
    {"a leading double slash", "//v1.0/" PID "/jobs/" JID, ROUTE_NO_MATCH, -1},
    {"another version literal", "/v1/" PID "/jobs/" JID, ROUTE_NO_MATCH, -1},
    {"literal in another case", "/V1.0/" PID "/jobs/" JID, ROUTE_NO_MATCH, -1},
    {"singular 'job'", "/v1.0/" PID "/job/" JID, ROUTE_NO_MATCH, -1},
    {"literal prefix only", "/v1.0/" PID "/jobsx/" JID, ROUTE_NO_MATCH, -1},
    {"percent-encoded literal", "/v1.0/" PID "/%6aobs/" JID, ROUTE_NO_MATCH, -1},
    {"ELB v3 shape", "/v3/" PID "/elb/jobs/" JID, ROUTE_NO_MATCH, -1},
};

static void test_match_seed_table(void **state)
{
    const struct route_template *t = *state;
    int failed = 0;
    for (size_t i = 0; i < sizeof(seed_cases) / sizeof(seed_cases[0]); i++) {
        const struct match_case *c = &seed_cases[i];
        struct route_match m;
        int bad = -7;
        enum route_result got = route_template_match(t, c->path, &m, &bad);
        UNIT_EXPECT(failed, got == c->want, "%s: '%s' gave %s, want %s", c->what, c->path, result_name(got),
                    result_name(c->want));
        if (got == ROUTE_BAD_PARAM && c->want == ROUTE_BAD_PARAM)
            UNIT_EXPECT(failed, bad == c->bad_param, "%s: bad_param %d, want %d", c->what, bad, c->bad_param);
        if (got == ROUTE_MATCH)
            UNIT_EXPECT(failed, m.nvalues == 2, "%s: %zu values", c->what, m.nvalues);
    }
    assert_int_equal(failed, 0);
}

static void test_match_values(void **state)
{
    const struct route_template *t = *state;
    struct route_match m;
    assert_int_equal(route_template_match(t, "/v1.0/" PID "/jobs/" JID, &m, NULL), ROUTE_MATCH);
    assert_int_equal(m.nvalues, 2);
    assert_string_equal(m.values[0], PID);
    assert_string_equal(m.values[1], JID);
    /* The values live in the match, not in the caller's path. */
    char path[] = "/v1.0/" PID "/jobs/" JID;
    assert_int_equal(route_template_match(t, path, &m, NULL), ROUTE_MATCH);
    memset(path, 'x', sizeof(path) - 1);
    assert_string_equal(m.values[0], PID);
    assert_string_equal(m.values[1], JID);
}

static void test_match_bad_param_may_be_null(void **state)
{
    const struct route_template *t = *state;
    struct route_match m;
    assert_int_equal(route_template_match(t, "/v1.0/" PID "/jobs/nothex", &m, NULL), ROUTE_BAD_PARAM);
}

/* "/v1.0/" PID "/jobs/" followed by `c` up to a total length of `len`. */
static char *long_path(size_t len, char c)
{
    const char *head = "/v1.0/" PID "/jobs/";
    char *p = malloc(len + 1);
    if (!p)
        return NULL;
    size_t h = strlen(head);
    memcpy(p, head, h);
    memset(p + h, c, len - h);
    p[len] = '\0';
    return p;
}

static void test_match_path_length_limit(void **state)
{
    const struct route_template *t = *state;
    struct route_match m;

    /* At the limit the shape is still read (the id is just wrong) ... */
    char *at = long_path(ROUTE_MAX_PATH, 'a');
    assert_non_null(at);
    assert_int_equal(route_template_match(t, at, &m, NULL), ROUTE_BAD_PARAM);
    free(at);

    /* ... one byte more and it never matches. */
    char *over = long_path(ROUTE_MAX_PATH + 1, 'a');
    assert_non_null(over);
    assert_int_equal(route_template_match(t, over, &m, NULL), ROUTE_NO_MATCH);
    free(over);

    /* Far beyond the match buffer: no overflow (ASan watches). */
    char *huge = long_path(64 * 1024, '/');
    assert_non_null(huge);
    assert_int_equal(route_template_match(t, huge, &m, NULL), ROUTE_NO_MATCH);
    free(huge);
}

static void test_match_long_value_at_limit(void **state)
{
    static const char *const names[] = {"project_id", "job_id", NULL};
    struct route_template t;
    struct route_match m;
    template_with(&t, SEED_TEMPLATE, names, "[0-9a-f]+");

    char *at = long_path(ROUTE_MAX_PATH, 'b');
    assert_non_null(at);
    assert_int_equal(route_template_match(&t, at, &m, NULL), ROUTE_MATCH);
    assert_string_equal(m.values[0], PID);
    size_t head = strlen("/v1.0/" PID "/jobs/");
    assert_int_equal(strlen(m.values[1]), ROUTE_MAX_PATH - head);
    free(at);

    char *over = long_path(ROUTE_MAX_PATH + 1, 'b');
    assert_non_null(over);
    assert_int_equal(route_template_match(&t, over, &m, NULL), ROUTE_NO_MATCH);
    free(over);
    route_template_free(&t);
}

/* --------------------------------------------------------------- parse */

struct parse_error_case {
    const char *text;
    const char *fragment; /* expected in the message */
};

/* Parse "/s0/s1/..." (or "/{p0}/{p1}/..." when `params`) of n segments into t; err cleared first. */
static int parse_segments(struct route_template *t, size_t n, int params, char *err, size_t errlen)
{
    char buf[4096];
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        int w = params ? snprintf(buf + used, sizeof(buf) - used, "/{p%zu}", i)
                       : snprintf(buf + used, sizeof(buf) - used, "/s%zu", i);
        assert_true(w > 0 && (size_t)w < sizeof(buf) - used);
        used += (size_t)w;
    }
    err[0] = '\0';
    return route_template_parse(t, buf, err, errlen);
}

static void test_parse_errors(void **state)
{
    static const struct parse_error_case cases[] = {
        {"", "must start with '/'"},
        {"v1.0/{project_id}/jobs/{job_id}", "must start with '/'"},
        {" /v1.0/jobs", "must start with '/'"},
        {"/v1.0/{job_id}b", "is not a parameter"},
        {"/v1.0/{job_id", "is not a parameter"},
        {"/v1.0/{", "is not a parameter"},
        {"/v1.0/{}", "is not a parameter"},
        {"/v1.0/{{job_id}}", "is not a parameter"},
        {"/v1.0/{1job}", "is not a parameter"},
        {"/v1.0/{job-id}", "is not a parameter"},
        {"/v1.0/{job id}", "is not a parameter"},
        {"/v1.0/{a}{b}", "is not a parameter"},
        {"/v1.0/b{job_id}", "whole segment"},
        {"/v1.0/job_id}", "whole segment"},
        {"/v1.0/}", "whole segment"},
        {"/v1.0/x{y", "whole segment"},
        {"/{project_id}/jobs/{project_id}", "appears twice"},
        {"/{a}/{b}/{a}", "appears twice"},
        {"/", "empty segment"},
        {"/v1.0/", "empty segment"},
        {"/v1.0//jobs", "empty segment"},
        {"//v1.0", "empty segment"},
    };
    int failed = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct route_template t;
        char err[256] = "";
        int rc = route_template_parse(&t, cases[i].text, err, sizeof(err));
        UNIT_EXPECT(failed, rc == -1, "'%s' parsed (rc %d), want an error", cases[i].text, rc);
        UNIT_EXPECT(failed, strstr(err, cases[i].fragment) != NULL, "'%s': message '%s' lacks '%s'", cases[i].text, err,
                    cases[i].fragment);
        /* A failed parse leaves nothing to free and nothing half-built. */
        UNIT_EXPECT(failed, t.text == NULL && t.nsegs == 0 && t.nparams == 0, "'%s': template not reset",
                    cases[i].text);
        route_template_free(&t);
    }
    assert_int_equal(failed, 0);
}

static void test_parse_limits(void **state)
{
    char buf[4096], err[256];
    struct route_template t;

    assert_int_equal(parse_segments(&t, ROUTE_MAX_SEGMENTS, 0, err, sizeof(err)), 0);
    assert_int_equal(t.nsegs, ROUTE_MAX_SEGMENTS);
    route_template_free(&t);
    assert_int_equal(parse_segments(&t, ROUTE_MAX_SEGMENTS + 1, 0, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "segments"));

    assert_int_equal(parse_segments(&t, ROUTE_MAX_PARAMS, 1, err, sizeof(err)), 0);
    assert_int_equal(t.nparams, ROUTE_MAX_PARAMS);
    route_template_free(&t);
    assert_int_equal(parse_segments(&t, ROUTE_MAX_PARAMS + 1, 1, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "parameters"));

    /* A template as long as the longest path is fine, one byte more is not. */
    memset(buf, 'a', ROUTE_MAX_PATH + 1);
    buf[0] = '/';
    buf[ROUTE_MAX_PATH] = '\0';
    assert_int_equal(route_template_parse(&t, buf, err, sizeof(err)), 0);
    route_template_free(&t);
    buf[ROUTE_MAX_PATH] = 'a';
    buf[ROUTE_MAX_PATH + 1] = '\0';
    err[0] = '\0';
    assert_int_equal(route_template_parse(&t, buf, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "longer than"));
}

static void test_parse_literal_only_and_names(void **state)
{
    char err[256];
    struct route_template t;
    assert_int_equal(route_template_parse(&t, "/healthz", err, sizeof(err)), 0);
    assert_int_equal(t.nsegs, 1);
    assert_int_equal(t.nparams, 0);
    struct route_match m;
    assert_int_equal(route_template_match(&t, "/healthz", &m, NULL), ROUTE_MATCH);
    assert_int_equal(route_template_match(&t, "/healthz/", &m, NULL), ROUTE_NO_MATCH);
    assert_int_equal(route_template_match(&t, "/health", &m, NULL), ROUTE_NO_MATCH);
    route_template_free(&t);

    /* Names are C identifiers: underscores, capitals and digits after the first. */
    assert_int_equal(route_template_parse(&t, "/api/v3/projects/{_Project1}/jobs/{JOB_ID9}", err, sizeof(err)), 0);
    assert_int_equal(route_template_param_index(&t, "_Project1"), 0);
    assert_int_equal(route_template_param_index(&t, "JOB_ID9"), 1);
    route_template_free(&t);
}

/* ------------------------------------------------------------ patterns */

static void test_set_pattern_errors(void **state)
{
    static const char *const bad_patterns[] = {"[0-9a-f", "(abc", "a{2,1}", "[[:nosuchclass:]]", "\\"};
    struct route_template *t = *state;
    char err[256] = "";

    assert_int_equal(route_template_set_pattern(t, "jobid", "[0-9]+", err, sizeof(err)), -1);
    assert_non_null(strstr(err, "{jobid}"));

    int failed = 0;
    for (size_t i = 0; i < sizeof(bad_patterns) / sizeof(bad_patterns[0]); i++) {
        err[0] = '\0';
        int rc = route_template_set_pattern(t, "job_id", bad_patterns[i], err, sizeof(err));
        UNIT_EXPECT(failed, rc == -1, "pattern '%s' was accepted", bad_patterns[i]);
        UNIT_EXPECT(failed, strstr(err, "not a valid regular expression") != NULL, "pattern '%s': message '%s'",
                    bad_patterns[i], err);
    }
    assert_int_equal(failed, 0);

    /* A refused pattern leaves the previous one in force. */
    struct route_match m;
    assert_string_equal(t->params[1].pattern, HEX32);
    assert_int_equal(route_template_match(t, "/v1.0/" PID "/jobs/" JID, &m, NULL), ROUTE_MATCH);
    assert_int_equal(route_template_match(t, "/v1.0/" PID "/jobs/zzz", &m, NULL), ROUTE_BAD_PARAM);
}

static void test_set_pattern_replaces(void **state)
{
    struct route_template *t = *state;
    struct route_match m;
    char err[256];
    assert_int_equal(route_template_set_pattern(t, "job_id", "[a-z]{3}", err, sizeof(err)), 0);
    assert_string_equal(t->params[1].pattern, "[a-z]{3}");
    assert_int_equal(route_template_match(t, "/v1.0/" PID "/jobs/zzz", &m, NULL), ROUTE_MATCH);
    assert_int_equal(route_template_match(t, "/v1.0/" PID "/jobs/" JID, &m, NULL), ROUTE_BAD_PARAM);
}

struct anchor_case {
    const char *pattern;
    const char *value;
    int accepted;
};

static void test_patterns_are_anchored(void **state)
{
    static const struct anchor_case cases[] = {
        {"[0-9a-f]{4}", "abcd", 1},
        {"[0-9a-f]{4}", "abcd1234", 0},
        {"[0-9a-f]{4}", "xabcd", 0},
        {"[0-9a-f]{4}", "abcdx", 0},
        {"[0-9a-f]{4}", "abc", 0},
        /* An alternation is anchored as a whole, not only its ends. */
        {"ab|cd", "ab", 1},
        {"ab|cd", "cd", 1},
        {"ab|cd", "abx", 0},
        {"ab|cd", "xcd", 0},
        {"ab|cd", "abcd", 0},
        /* Anchors the author wrote are harmless. */
        {"^[0-9]+$", "123", 1},
        {"^[0-9]+$", "123a", 0},
        {".*", "anything", 1},
    };
    int failed = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *names[] = {"id", NULL};
        struct route_template t;
        struct route_match m;
        char path[256];
        template_with(&t, "/x/{id}", names, cases[i].pattern);
        snprintf(path, sizeof(path), "/x/%s", cases[i].value);
        enum route_result got = route_template_match(&t, path, &m, NULL);
        enum route_result want = cases[i].accepted ? ROUTE_MATCH : ROUTE_BAD_PARAM;
        UNIT_EXPECT(failed, got == want, "pattern '%s', value '%s': %s, want %s", cases[i].pattern, cases[i].value,
                    result_name(got), result_name(want));
        route_template_free(&t);
    }
    assert_int_equal(failed, 0);
}

/*
 * A pattern is anchored by wrapping it as "^(PATTERN)$". A pattern whose
 * parentheses only balance with that wrapping, such as "[0-9a-f]{4})|(.*",
 * is not a regular expression on its own, yet it compiles once wrapped, and
 * then its second branch is anchored at neither end: it accepts any value.
 * The contract says the pattern is "anchored at both ends": such a pattern
 * must be refused (or at least not accept what the first branch refuses).
 */
static void test_pattern_cannot_escape_anchoring(void **state)
{
    static const char *const escapes[] = {"[0-9a-f]{4})|(.*", "[0-9a-f]{32})|("};
    int failed = 0;
    for (size_t i = 0; i < sizeof(escapes) / sizeof(escapes[0]); i++) {
        struct route_template t;
        struct route_match m;
        char err[256] = "";
        assert_int_equal(route_template_parse(&t, "/x/{id}", err, sizeof(err)), 0);
        if (route_template_set_pattern(&t, "id", escapes[i], err, sizeof(err)) == 0) {
            enum route_result got = route_template_match(&t, "/x/not-hex-at-all", &m, NULL);
            UNIT_EXPECT(failed, got == ROUTE_BAD_PARAM,
                        "pattern '%s' was accepted and lets 'not-hex-at-all' through (%s): the anchoring is escaped",
                        escapes[i], result_name(got));
        }
        route_template_free(&t);
    }
    assert_int_equal(failed, 0);
}

/* ------------------------------------------------------------- overlap */

struct overlap_case {
    const char *a;
    const char *b;
    int overlap;
};

static void test_overlap_table(void **state)
{
    static const struct overlap_case cases[] = {
        {SEED_TEMPLATE, SEED_TEMPLATE, 1},
        {SEED_TEMPLATE, "/v1.0/{p}/jobs/{j}", 1},             /* names do not matter */
        {SEED_TEMPLATE, "/v1.0/{project_id}/jobs/latest", 1}, /* a literal where a parameter is */
        {SEED_TEMPLATE, "/v1.0/ff8080825ecc523f015ecd0a98f82f77/jobs/{job_id}", 1},
        {SEED_TEMPLATE, "/{version}/{project_id}/jobs/{job_id}", 1},
        {"/a/{b}", "/{a}/b", 1},
        {"/{a}", "/{b}", 1},
        {SEED_TEMPLATE, "/v1/{project_id}/jobs/{job_id}", 0},       /* ECS: another literal */
        {SEED_TEMPLATE, "/v1.0/{project_id}/jobs", 0},              /* shorter */
        {SEED_TEMPLATE, "/v1.0/{project_id}/jobs/{job_id}/sub", 0}, /* longer */
        {SEED_TEMPLATE, "/v3/{project_id}/elb/jobs/{job_id}", 0},
        {SEED_TEMPLATE, "/api/v3/projects/{project_id}/jobs/{job_id}", 0},
        {SEED_TEMPLATE, "/v1.0/{project_id}/tasks/{job_id}", 0},
        {"/a/{b}/c", "/{a}/b/d", 0},
    };
    int failed = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct route_template a, b;
        char err[256];
        assert_int_equal(route_template_parse(&a, cases[i].a, err, sizeof(err)), 0);
        assert_int_equal(route_template_parse(&b, cases[i].b, err, sizeof(err)), 0);
        int ab = route_templates_overlap(&a, &b) != 0;
        int ba = route_templates_overlap(&b, &a) != 0;
        UNIT_EXPECT(failed, ab == cases[i].overlap, "overlap('%s', '%s') = %d, want %d", cases[i].a, cases[i].b, ab,
                    cases[i].overlap);
        UNIT_EXPECT(failed, ba == cases[i].overlap, "overlap('%s', '%s') = %d, want %d", cases[i].b, cases[i].a, ba,
                    cases[i].overlap);
        route_template_free(&a);
        route_template_free(&b);
    }
    assert_int_equal(failed, 0);
}

static void test_overlap_ignores_patterns(void **state)
{
    /* Disjoint patterns still overlap: patterns are not compared (the safe side). */
    const char *names[] = {"id", NULL};
    struct route_template digits, letters;
    template_with(&digits, "/x/{id}", names, "[0-9]+");
    template_with(&letters, "/x/{id}", names, "[a-z]+");
    assert_true(route_templates_overlap(&digits, &letters));
    route_template_free(&digits);
    route_template_free(&letters);
}

/* -------------------------------------------------------------- expand */

static void test_expand(void **state)
{
    const struct route_template *t = *state;
    const char *path = "/v1.0/" PID "/jobs/" JID;
    struct route_match m;
    char out[ROUTE_MAX_PATH + 1];
    assert_int_equal(route_template_match(t, path, &m, NULL), ROUTE_MATCH);
    assert_int_equal(route_template_expand(t, &m, out, sizeof(out)), (int)strlen(path));
    assert_string_equal(out, path);

    /* Exactly enough room (length + NUL) works; one byte less does not. */
    size_t len = strlen(path);
    char *tight = malloc(len + 1);
    assert_non_null(tight);
    assert_int_equal(route_template_expand(t, &m, tight, len + 1), (int)len);
    assert_string_equal(tight, path);
    assert_int_equal(route_template_expand(t, &m, tight, len), -1);
    assert_int_equal(route_template_expand(t, &m, tight, 1), -1);
    free(tight);
}

static void test_expand_into_other_template(void **state)
{
    /* The values of one match fill another template with the same parameters:
     * how a request path becomes an upstream path. */
    const struct route_template *t = *state;
    static const char *const names[] = {"project_id", "job_id", NULL};
    struct route_template up;
    struct route_match m;
    char out[256];
    template_with(&up, "/v1/{project_id}/jobs/{job_id}", names, HEX32);
    assert_int_equal(route_template_match(t, "/v1.0/" PID "/jobs/" JID, &m, NULL), ROUTE_MATCH);
    int n = route_template_expand(&up, &m, out, sizeof(out));
    assert_string_equal(out, "/v1/" PID "/jobs/" JID);
    assert_int_equal(n, (int)strlen(out));
    route_template_free(&up);

    struct route_template lit;
    char err[256];
    assert_int_equal(route_template_parse(&lit, "/healthz", err, sizeof(err)), 0);
    assert_int_equal(route_template_expand(&lit, &m, out, sizeof(out)), 8);
    assert_string_equal(out, "/healthz");
    route_template_free(&lit);
}

static void test_free_is_idempotent(void **state)
{
    struct route_template t;
    char err[256];
    assert_int_equal(route_template_parse(&t, SEED_TEMPLATE, err, sizeof(err)), 0);
    route_template_free(&t);
    route_template_free(&t); /* zeroed by the first call */
    assert_null(t.text);
    assert_int_equal(t.nsegs, 0);
}

/* A test run on a fresh seed template (setup and teardown around each). */
#define SEED_TEST(f) cmocka_unit_test_setup_teardown(f, seed_setup, seed_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        SEED_TEST(test_seed_template_shape),
        SEED_TEST(test_match_seed_table),
        SEED_TEST(test_match_values),
        SEED_TEST(test_match_bad_param_may_be_null),
        SEED_TEST(test_match_path_length_limit),
        cmocka_unit_test(test_match_long_value_at_limit),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_parse_limits),
        cmocka_unit_test(test_parse_literal_only_and_names),
        SEED_TEST(test_set_pattern_errors),
        SEED_TEST(test_set_pattern_replaces),
        cmocka_unit_test(test_patterns_are_anchored),
        cmocka_unit_test(test_pattern_cannot_escape_anchoring),
        cmocka_unit_test(test_overlap_table),
        cmocka_unit_test(test_overlap_ignores_patterns),
        SEED_TEST(test_expand),
        SEED_TEST(test_expand_into_other_template),
        cmocka_unit_test(test_free_is_idempotent),
    };
    return cmocka_run_group_tests_name("route", tests, NULL, NULL);
}
