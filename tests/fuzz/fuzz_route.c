/*
 * libFuzzer target for proxy/route.c: request paths matched against path
 * templates, and templates parsed from untrusted text.
 *
 * Each input is used twice:
 *
 *  1. As a request path, matched against a fixed set of templates (the
 *     shipped rules' routes with their patterns, an unchecked parameter, a
 *     route of 8 parameters, one of 16 segments). The result is compared with
 *     a reference matcher written here from the contract (route.h), with
 *     hand-written checks in place of the regular expressions; a match must
 *     expand back to the path exactly.
 *
 *  2. Split at the first newline into TEMPLATE "\n" PATH: the template is
 *     parsed and, if valid, matched against its own text (always a match: no
 *     pattern is set yet, "{name}" is a non-empty value), against PATH, and
 *     checked for overlap against the fixed templates. If PATH holds a
 *     second newline, what follows it is a PATTERN set on every parameter
 *     before PATH is matched again: the values accepted must match PATTERN
 *     as a whole (the anchoring cannot be escaped).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "route.h"
#include "fuzz_oracle.h"

#define HEX32 "[0-9a-f]{32}"
#define UUID  "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
#define TOKEN "[A-Za-z0-9_.~%-]{1,64}"

/* What a parameter accepts, checked by hand (not by regex) in the reference matcher. */
enum kind { K_ANY, K_HEX32, K_UUID, K_TOKEN };

struct fixed {
    const char *text;
    enum kind kinds[ROUTE_MAX_PARAMS]; /* per parameter, in order of appearance */
    struct route_template t;
};

static struct fixed fixed[] = {
    {"/v1.0/{project_id}/jobs/{job_id}", {K_HEX32, K_HEX32}, {0}},
    {"/v3/{project_id}/elb/jobs/{job_id}", {K_HEX32, K_UUID}, {0}},
    {"/v1/{project_id}/jobs/{job_id}", {K_HEX32, K_HEX32}, {0}},
    {"/v2/{id}/jobs", {K_TOKEN}, {0}},
    {"/{any}", {K_ANY}, {0}},
    {"/static/health", {K_ANY}, {0}},
    {"/{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}", {K_HEX32, K_UUID, K_TOKEN, K_ANY, K_ANY, K_ANY, K_ANY, K_HEX32}, {0}},
    {"/1/2/3/4/5/6/7/8/9/10/11/12/13/14/15/{id}", {K_UUID}, {0}},
};
#define NFIXED (sizeof(fixed) / sizeof(fixed[0]))

static const char *kind_pattern(enum kind k)
{
    switch (k) {
    case K_HEX32: return HEX32;
    case K_UUID: return UUID;
    case K_TOKEN: return TOKEN;
    case K_ANY: return NULL;
    }
    return NULL;
}

static int is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

static int kind_accepts(enum kind k, const char *v)
{
    size_t len = strlen(v);
    switch (k) {
    case K_ANY: return 1;
    case K_HEX32:
        if (len != 32)
            return 0;
        for (size_t i = 0; i < len; i++)
            if (!is_hex(v[i]))
                return 0;
        return 1;
    case K_UUID:
        if (len != 36)
            return 0;
        for (size_t i = 0; i < len; i++) {
            int dash = i == 8 || i == 13 || i == 18 || i == 23;
            if (dash ? v[i] != '-' : !is_hex(v[i]))
                return 0;
        }
        return 1;
    case K_TOKEN:
        if (len < 1 || len > 64)
            return 0;
        for (size_t i = 0; i < len; i++)
            if (!strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.~%-", v[i]))
                return 0;
        return 1;
    }
    return 0;
}

/* The contract of route_template_match(), written out plainly. */
static enum route_result reference_match(const struct fixed *f, const char *path, int *bad)
{
    size_t len = strlen(path);
    if (path[0] != '/' || len > ROUTE_MAX_PATH)
        return ROUTE_NO_MATCH;
    const char *segs[ROUTE_MAX_SEGMENTS];
    size_t seglen[ROUTE_MAX_SEGMENTS], n = 0;
    const char *p = path + 1;
    while (1) {
        const char *slash = strchr(p, '/');
        if (n == f->t.nsegs)
            return ROUTE_NO_MATCH; /* more segments than the template */
        segs[n] = p;
        seglen[n++] = slash ? (size_t)(slash - p) : strlen(p);
        if (!slash)
            break;
        p = slash + 1;
    }
    if (n != f->t.nsegs)
        return ROUTE_NO_MATCH;
    char values[ROUTE_MAX_PARAMS][ROUTE_MAX_PATH + 1];
    for (size_t i = 0; i < n; i++) {
        const struct route_segment *s = &f->t.segs[i];
        if (s->literal) {
            if (strlen(s->literal) != seglen[i] || memcmp(s->literal, segs[i], seglen[i]) != 0)
                return ROUTE_NO_MATCH;
        } else {
            memcpy(values[s->param], segs[i], seglen[i]);
            values[s->param][seglen[i]] = '\0';
        }
    }
    for (size_t i = 0; i < f->t.nparams; i++) {
        if (values[i][0] == '\0' || !kind_accepts(f->kinds[i], values[i])) {
            *bad = (int)i;
            return ROUTE_BAD_PARAM;
        }
    }
    return ROUTE_MATCH;
}

static void setup(void)
{
    for (size_t i = 0; i < NFIXED; i++) {
        struct fixed *f = &fixed[i];
        char err[256];
        if (route_template_parse(&f->t, f->text, err, sizeof(err)) != 0) {
            fprintf(stderr, "fuzz_route: fixed template '%s': %s\n", f->text, err);
            abort();
        }
        for (size_t j = 0; j < f->t.nparams; j++) {
            const char *pattern = kind_pattern(f->kinds[j]);
            if (pattern && route_template_set_pattern(&f->t, f->t.params[j].name, pattern, err, sizeof(err)) != 0) {
                fprintf(stderr, "fuzz_route: pattern '%s': %s\n", pattern, err);
                abort();
            }
        }
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    setup();
    return 0;
}

/* 1: the input as a request path against the fixed templates. */
static void match_fixed(const char *path)
{
    for (size_t i = 0; i < NFIXED; i++) {
        const struct fixed *f = &fixed[i];
        struct route_match m;
        int bad = -1, want_bad = -1;
        enum route_result got = route_template_match(&f->t, path, &m, &bad);
        enum route_result want = reference_match(f, path, &want_bad);
        FUZZ_CHECK(got == want && (got != ROUTE_BAD_PARAM || bad == want_bad),
                   "template '%s', path '%s': got %d (bad %d), want %d (bad %d)", f->text, path, (int)got, bad,
                   (int)want, want_bad);
        fuzz_check_match(&f->t, path, got, &m, bad);
    }
}

static void check_parsed(const struct route_template *t, const char *text)
{
    FUZZ_CHECK(t->text && strcmp(t->text, text) == 0, "template text '%s' kept as '%s'", text,
               t->text ? t->text : "(null)");
    FUZZ_CHECK(t->nsegs >= 1 && t->nsegs <= ROUTE_MAX_SEGMENTS, "%zu segments", t->nsegs);
    FUZZ_CHECK(t->nparams <= ROUTE_MAX_PARAMS, "%zu parameters", t->nparams);
    size_t params_seen = 0;
    for (size_t i = 0; i < t->nsegs; i++) {
        const struct route_segment *s = &t->segs[i];
        if (s->literal) {
            FUZZ_CHECK(s->param == -1 && s->literal[0] && !strchr(s->literal, '/') && !strchr(s->literal, '{') &&
                           !strchr(s->literal, '}'),
                       "segment %zu '%s' of '%s'", i, s->literal, text);
        } else {
            FUZZ_CHECK(s->param >= 0 && (size_t)s->param < t->nparams, "segment %zu of '%s': param %d", i, text,
                       s->param);
            FUZZ_CHECK(route_template_param_index(t, t->params[s->param].name) == s->param,
                       "parameter {%s} of '%s' found at another index", t->params[s->param].name, text);
            params_seen++;
        }
    }
    FUZZ_CHECK(params_seen == t->nparams, "'%s': %zu parameter segments, %zu parameters", text, params_seen,
               t->nparams);
}

/* 2: TEMPLATE "\n" PATH ["\n" PATTERN]. */
static void parse_and_match(const char *text, const char *path, const char *pattern)
{
    struct route_template t;
    char err[256];
    err[0] = '\0';
    if (route_template_parse(&t, text, err, sizeof(err)) != 0) {
        FUZZ_CHECK(err[0] != '\0', "template '%s' refused without a message", text);
        return;
    }
    check_parsed(&t, text);

    struct route_match m;
    int bad = -1;
    /* No pattern set: the template's own text has its shape and "{name}" is a non-empty value. */
    enum route_result res = route_template_match(&t, t.text, &m, &bad);
    FUZZ_CHECK(res == ROUTE_MATCH, "template '%s' does not match its own text (%d)", text, (int)res);
    fuzz_check_match(&t, t.text, res, &m, bad);

    res = route_template_match(&t, path, &m, &bad);
    fuzz_check_match(&t, path, res, &m, bad);

    FUZZ_CHECK(route_templates_overlap(&t, &t), "'%s' does not overlap itself", text);
    for (size_t i = 0; i < NFIXED; i++) {
        int ab = route_templates_overlap(&t, &fixed[i].t), ba = route_templates_overlap(&fixed[i].t, &t);
        FUZZ_CHECK(ab == ba, "overlap('%s', '%s') = %d but the other way %d", text, fixed[i].text, ab, ba);
    }

    if (pattern) {
        for (size_t i = 0; i < t.nparams; i++) {
            err[0] = '\0';
            if (route_template_set_pattern(&t, t.params[i].name, pattern, err, sizeof(err)) != 0)
                FUZZ_CHECK(err[0] != '\0', "pattern '%s' refused without a message", pattern);
        }
        bad = -1;
        res = route_template_match(&t, path, &m, &bad);
        fuzz_check_match(&t, path, res, &m, bad);
    }
    route_template_free(&t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 65536 || memchr(data, '\0', size))
        return 0;
    char *buf = malloc(size + 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';

    match_fixed(buf);

    char *nl = strchr(buf, '\n');
    if (nl) {
        *nl = '\0';
        char *path = nl + 1, *pattern = NULL;
        char *nl2 = strchr(path, '\n');
        if (nl2) {
            *nl2 = '\0';
            pattern = nl2 + 1;
        }
        parse_and_match(buf, path, pattern);
    }
    free(buf);
    return 0;
}
