/*
 * Every rule shipped in lua-free-rules/, checked as an operator would use it:
 * all of them load together (no overlap), and for each API a table of paths
 * (match, bad parameter, no match) and a table of bodies (terminal, still
 * changing, not a job, another job), sub-jobs included; the seed's copy of
 * the shared error map answers as the shared map does.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "rules.h"
#include "unit_support.h"

#define PID  "ff8080825ecc523f015ecd0a98f82f77"
#define JID  "0123456789abcdef0123456789abcdef"
#define UUID "3c8a5a6e-7f1b-4c2d-9e0f-1a2b3c4d5e6f"

static const char *const shipped[] = {"elb-v1", "ecs", "bms", "evs", "vpc", "elb-v3", "cce"};
#define NSHIPPED (sizeof(shipped) / sizeof(shipped[0]))

struct path_case {
    const char *rule; /* expected rule for ROUTE_MATCH / ROUTE_BAD_PARAM */
    const char *host;
    const char *path;
    enum route_result want;
    const char *upstream; /* expected upstream path on a match */
};

struct body_case {
    const char *rule;
    const char *body;
    enum job_class want;
    int failed; /* for JOB_TERMINAL: the state means failure */
};

static int load_all(void **state)
{
    char paths[NSHIPPED][4096];
    char *files[NSHIPPED];
    for (size_t i = 0; i < NSHIPPED; i++) {
        char rel[64];
        snprintf(rel, sizeof(rel), "lua-free-rules/%s.yaml", shipped[i]);
        unit_src_path(paths[i], sizeof(paths[i]), rel);
        files[i] = paths[i];
    }
    struct conf_diag d;
    conf_diag_init(&d);
    struct ruleset *rs = ruleset_load(files, NSHIPPED, &d);
    if (!rs)
        unit_print_diags(&d);
    conf_diag_free(&d);
    *state = rs;
    return rs ? 0 : -1;
}

static int unload_all(void **state)
{
    ruleset_unref(*state);
    return 0;
}

static const struct rule *rule_named(const struct ruleset *rs, const char *name)
{
    for (size_t i = 0; i < rs->count; i++)
        if (strcmp(rs->rules[i]->name, name) == 0)
            return rs->rules[i];
    return NULL;
}

static void all_shipped_rules_load_together(void **state)
{
    const struct ruleset *rs = *state;
    assert_int_equal(rs->count, NSHIPPED);
    for (size_t i = 0; i < NSHIPPED; i++)
        assert_non_null(rule_named(rs, shipped[i]));
}

static void paths_route_to_the_right_rule(void **state)
{
    static const struct path_case cases[] = {
        {"elb-v1", NULL, "/v1.0/" PID "/jobs/" JID, ROUTE_MATCH, "/v1.0/" PID "/jobs/" JID},
        {"elb-v1", NULL, "/v1.0/" PID "/jobs/" UUID, ROUTE_BAD_PARAM, NULL},
        {"ecs", NULL, "/ecs/v1/" PID "/jobs/" JID, ROUTE_MATCH, "/v1/" PID "/jobs/" JID},
        {"ecs", NULL, "/ecs/v1/" PID "/jobs/XYZ", ROUTE_BAD_PARAM, NULL},
        {"bms", NULL, "/bms/v1/" PID "/jobs/" JID, ROUTE_MATCH, "/v1/" PID "/jobs/" JID},
        {"evs", NULL, "/evs/v1/" PID "/jobs/" JID, ROUTE_MATCH, "/v1/" PID "/jobs/" JID},
        {"vpc", NULL, "/vpc/v1/" PID "/jobs/" JID, ROUTE_MATCH, "/v1/" PID "/jobs/" JID},
        {"vpc", "any.host:8080", "/vpc/v1/" PID "/jobs/" JID, ROUTE_MATCH, "/v1/" PID "/jobs/" JID},
        {"elb-v3", NULL, "/v3/" PID "/elb/jobs/" JID, ROUTE_MATCH, "/v3/" PID "/elb/jobs/" JID},
        {"elb-v3", NULL, "/v3/" PID "/elb/jobs/" UUID, ROUTE_MATCH, "/v3/" PID "/elb/jobs/" UUID},
        {"elb-v3", NULL, "/v3/" PID "/elb/jobs/0123", ROUTE_BAD_PARAM, NULL},
        {"cce", NULL, "/api/v3/projects/" PID "/jobs/" UUID, ROUTE_MATCH, "/api/v3/projects/" PID "/jobs/" UUID},
        {"cce", NULL, "/api/v3/projects/" PID "/jobs/" JID, ROUTE_BAD_PARAM, NULL},
        {"cce", NULL, "/api/v3/projects/" PID "/jobs/3C8A5A6E-7F1B-4C2D-9E0F-1A2B3C4D5E6F", ROUTE_BAD_PARAM, NULL},
        {NULL, NULL, "/v1/" PID "/jobs/" JID, ROUTE_NO_MATCH, NULL}, /* the bare upstream path is not served */
        {NULL, NULL, "/ecs/v1/" PID "/jobs", ROUTE_NO_MATCH, NULL},
        {NULL, NULL, "/v3/" PID "/jobs/" JID, ROUTE_NO_MATCH, NULL},
        {NULL, NULL, "/api/v3/projects/" PID "/jobs/" UUID "/", ROUTE_NO_MATCH, NULL},
    };
    const struct ruleset *rs = *state;
    int failed = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct path_case *c = &cases[i];
        const struct rule *r = NULL;
        struct route_match m;
        enum route_result got = ruleset_match(rs, c->host, c->path, &r, &m);
        UNIT_EXPECT(failed, got == c->want, "%s: result %d, want %d", c->path, got, c->want);
        if (got != c->want || got == ROUTE_NO_MATCH)
            continue;
        UNIT_EXPECT(failed, r && strcmp(r->name, c->rule) == 0, "%s: rule %s, want %s", c->path, r ? r->name : "none",
                    c->rule);
        if (got == ROUTE_MATCH && r) {
            char up[512];
            int n = rule_upstream_path(r, &m, up, sizeof(up));
            UNIT_EXPECT(failed, n > 0 && strcmp(up, c->upstream) == 0, "%s: upstream %s, want %s", c->path,
                        n > 0 ? up : "(none)", c->upstream);
        }
    }
    assert_int_equal(failed, 0);
}

static void bodies_classify_per_api(void **state)
{
    static const struct body_case cases[] = {
        /* classic ELB: status at the top */
        {"elb-v1", "{\"status\":\"SUCCESS\",\"job_id\":\"" JID "\",\"sub_jobs\":[]}", JOB_TERMINAL, 0},
        {"elb-v1", "{\"status\":\"FAIL\",\"job_id\":\"" JID "\"}", JOB_TERMINAL, 1},
        {"elb-v1", "{\"status\":\"RUNNING\",\"job_id\":\"" JID "\"}", JOB_PENDING, 0},
        {"elb-v1", "{\"status\":\"SUCCESS\",\"job_id\":\"ffff\"}", JOB_OTHER_JOB, 0},
        /* ECS/BMS: PENDING_PAYMENT is not terminal; every sub-job must be done */
        {"ecs", "{\"status\":\"PENDING_PAYMENT\",\"job_id\":\"" JID "\"}", JOB_PENDING, 0},
        {"ecs",
         "{\"status\":\"SUCCESS\",\"job_id\":\"" JID
         "\",\"entities\":{\"sub_jobs_total\":2,\"sub_jobs\":[{\"status\":\"SUCCESS\"},{\"status\":\"RUNNING\"}]}}",
         JOB_PENDING, 0},
        {"ecs",
         "{\"status\":\"SUCCESS\",\"job_id\":\"" JID
         "\",\"entities\":{\"sub_jobs_total\":2,\"sub_jobs\":[{\"status\":\"SUCCESS\"},{\"status\":\"SUCCESS\"}]}}",
         JOB_TERMINAL, 0},
        {"ecs", "{\"status\":\"SUCCESS\",\"job_id\":\"" JID "\",\"entities\":{\"sub_jobs\":[{\"job_id\":\"x\"}]}}",
         JOB_PENDING, 0}, /* a sub-job without a state is not done */
        {"ecs", "{\"status\":\"SUCCESS\",\"job_id\":\"" JID "\",\"entities\":{\"sub_jobs\":\"oops\"}}", JOB_PENDING, 0},
        {"ecs", "{\"status\":\"SUCCESS\",\"job_id\":\"" JID "\",\"entities\":{}}", JOB_TERMINAL, 0},
        /* A sub-job's state, or the sub-job list, named twice: parsers disagree, never cached */
        {"ecs",
         "{\"status\":\"SUCCESS\",\"job_id\":\"" JID
         "\",\"entities\":{\"sub_jobs\":[{\"status\":\"SUCCESS\",\"status\":\"RUNNING\"}]}}",
         JOB_AMBIGUOUS, 0},
        {"ecs",
         "{\"status\":\"SUCCESS\",\"job_id\":\"" JID
         "\",\"entities\":{\"sub_jobs\":[],\"sub_jobs\":[{\"status\":\"RUNNING\"}]}}",
         JOB_AMBIGUOUS, 0},
        {"bms", "{\"status\":\"FAIL\",\"job_id\":\"" JID "\",\"entities\":{\"sub_jobs\":[{\"status\":\"FAIL\"}]}}",
         JOB_TERMINAL, 1},
        /* EVS: WAITING_EXECUTE and LISTENING are still changing */
        {"evs", "{\"status\":\"WAITING_EXECUTE\",\"job_id\":\"" JID "\"}", JOB_PENDING, 0},
        {"evs", "{\"status\":\"LISTENING\",\"job_id\":\"" JID "\"}", JOB_PENDING, 0},
        {"evs", "{\"status\":\"SUCCESS\",\"job_id\":\"" JID "\",\"entities\":{\"sub_jobs\":[]}}", JOB_TERMINAL, 0},
        /* VPC: the four plain states */
        {"vpc", "{\"status\":\"INIT\",\"job_id\":\"" JID "\"}", JOB_PENDING, 0},
        {"vpc", "{\"status\":\"SUCCESS\",\"job_id\":\"" JID "\"}", JOB_TERMINAL, 0},
        {"vpc", "{\"job\":{\"status\":\"SUCCESS\",\"job_id\":\"" JID "\"}}", JOB_NOT_JOB, 0},
        /* ELB v3: everything under "job" */
        {"elb-v3", "{\"job\":{\"status\":\"SUCCESS\",\"job_id\":\"" JID "\",\"sub_jobs\":[]},\"request_id\":\"r\"}",
         JOB_TERMINAL, 0},
        {"elb-v3", "{\"job\":{\"status\":\"SUCCESS\",\"job_id\":\"" JID "\",\"sub_jobs\":[{\"status\":\"RUNNING\"}]}}",
         JOB_PENDING, 0},
        {"elb-v3", "{\"status\":\"SUCCESS\",\"job_id\":\"" JID "\"}", JOB_NOT_JOB, 0},
        {"elb-v3", "{\"job\":{\"status\":\"SUCCESS\",\"job_id\":\"0000\"}}", JOB_OTHER_JOB, 0},
        /* CCE: status.phase, identity in metadata.uid, sub-jobs in spec.subJobs */
        {"cce", "{\"metadata\":{\"uid\":\"" UUID "\"},\"status\":{\"phase\":\"Running\"}}", JOB_PENDING, 0},
        {"cce", "{\"metadata\":{\"uid\":\"" UUID "\"},\"status\":{\"phase\":\"Initializing\"}}", JOB_PENDING, 0},
        {"cce",
         "{\"metadata\":{\"uid\":\"" UUID "\"},\"spec\":{\"subJobs\":[{\"status\":{\"phase\":\"Success\"}}]},"
         "\"status\":{\"phase\":\"Success\"}}",
         JOB_TERMINAL, 0},
        {"cce",
         "{\"metadata\":{\"uid\":\"" UUID "\"},\"spec\":{\"subJobs\":[{\"status\":{\"phase\":\"Running\"}}]},"
         "\"status\":{\"phase\":\"Success\"}}",
         JOB_PENDING, 0},
        {"cce", "{\"metadata\":{\"uid\":\"" UUID "\"},\"status\":{\"phase\":\"Failed\"}}", JOB_TERMINAL, 1},
        {"cce", "{\"metadata\":{\"uid\":\"" UUID "\"},\"status\":{\"phase\":\"SUCCESS\"}}", JOB_PENDING, 0},
        {"cce", "{\"metadata\":{\"uid\":\"other\"},\"status\":{\"phase\":\"Success\"}}", JOB_OTHER_JOB, 0},
    };
    const struct ruleset *rs = *state;
    int failed = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct body_case *c = &cases[i];
        const struct rule *r = rule_named(rs, c->rule);
        assert_non_null(r);
        const char *id = strcmp(c->rule, "cce") == 0 ? UUID : JID;
        char st[64];
        enum job_class got = classify_body(&r->job, c->body, strlen(c->body), id, st, sizeof(st));
        UNIT_EXPECT(failed, got == c->want, "%s %s: %s, want %s", c->rule, c->body, job_class_name(got),
                    job_class_name(c->want));
        if (got == JOB_TERMINAL)
            UNIT_EXPECT(failed, classify_state_failed(&r->job, st) == c->failed, "%s %s: failed=%d", c->rule, c->body,
                        !c->failed);
    }
    assert_int_equal(failed, 0);
}

static void every_status_maps_into_the_table(void **state)
{
    const struct ruleset *rs = *state;
    int failed = 0;
    for (size_t i = 0; i < rs->count; i++) {
        const struct rule *r = rs->rules[i];
        for (int status = 100; status < 600; status++) {
            if (status == 200)
                continue;
            struct client_error e;
            static const char body[] = "{\"error_code\":\"X.1\",\"error_msg\":\"m\"}";
            errmap_from_upstream(&r->errors, status, body, strlen(body), &e);
            UNIT_EXPECT(failed, http_status_documented(e.status) && e.status != 200, "%s: %d -> %d", r->name, status,
                        e.status);
        }
        for (int f = 1; f < FAULT__COUNT; f++) {
            struct client_error e;
            errmap_from_fault(&r->errors, (enum upstream_fault)f, &e);
            UNIT_EXPECT(failed, http_status_documented(e.status) && e.status != 200, "%s: fault %s -> %d", r->name,
                        fault_name((enum upstream_fault)f), e.status);
        }
        /* The shared map answers a throttle by its code, whatever status carried it. */
        struct client_error e;
        static const char throttled[] = "{\"error_code\":\"APIGW.0308\",\"error_msg\":\"throttled\"}";
        errmap_from_upstream(&r->errors, 403, throttled, strlen(throttled), &e);
        UNIT_EXPECT(failed, e.status == 503 && e.retry_after == 3, "%s: APIGW.0308 in a 403 -> %d", r->name, e.status);
    }
    assert_int_equal(failed, 0);
}

/* Do two answers say the same, field by field? Reports the first difference. */
static int same_answer(const struct client_error *a, const struct client_error *b, const char *what)
{
    if (a->status == b->status && a->retry_after == b->retry_after && strcmp(a->code, b->code) == 0 &&
        strcmp(a->message, b->message) == 0)
        return 1;
    print_error("%s: elb-v1 says %d %s \"%s\" (Retry-After %d), the shared map %d %s \"%s\" (Retry-After %d)\n", what,
                a->status, a->code, a->message, a->retry_after, b->status, b->code, b->message, b->retry_after);
    return 0;
}

/*
 * The seed (elb-v1.yaml) keeps its own copy of shared/huawei-errors.yaml, so
 * that it shows every section in one file: the copy must not drift. Every
 * upstream status 100-599 with every kind of body (none, both of Huawei's
 * shapes, the throttle code in either, a job body's own fields, not JSON),
 * and every fault, gets the same answer from both. (invalid_request differs
 * on purpose: the seed answers ELB.1001; test_rules checks it.)
 */
static void elb_v1_copy_answers_as_the_shared_map(void **state)
{
    static const char *const bodies[] = {
        "",
        "{\"error\":{\"code\":\"ELB.1002\",\"message\":\"find lb failed\"}}",
        "{\"error_code\":\"APIGW.0301\",\"error_msg\":\"bad auth\",\"request_id\":\"r\"}",
        "{\"error_code\":\"APIGW.0308\",\"error_msg\":\"throttled\"}",
        "{\"error\":{\"code\":\"APIGW.0308\",\"message\":\"throttled\"}}",
        "{\"code\":\"Ecs.0000\",\"message\":\"insufficient resources\"}",
        "{\"error\":{\"message\":\"a message without a code\"}}",
        "<html>upstream says no</html>",
    };
    const struct ruleset *rs = *state;
    const struct rule *seed = rule_named(rs, "elb-v1");
    const struct rule *shared = rule_named(rs, "ecs"); /* errors: shared/huawei-errors.yaml */
    assert_non_null(seed);
    assert_non_null(shared);
    int failed = 0;
    char what[128];
    for (size_t b = 0; b < sizeof(bodies) / sizeof(bodies[0]); b++) {
        for (int status = 100; status < 600; status++) {
            struct client_error a, e;
            errmap_from_upstream(&seed->errors, status, bodies[b], strlen(bodies[b]), &a);
            errmap_from_upstream(&shared->errors, status, bodies[b], strlen(bodies[b]), &e);
            snprintf(what, sizeof(what), "status %d, body %zu", status, b);
            failed += !same_answer(&a, &e, what);
        }
    }
    for (int f = 1; f < FAULT__COUNT; f++) {
        struct client_error a, e;
        errmap_from_fault(&seed->errors, (enum upstream_fault)f, &a);
        errmap_from_fault(&shared->errors, (enum upstream_fault)f, &e);
        snprintf(what, sizeof(what), "fault %s", fault_name((enum upstream_fault)f));
        failed += !same_answer(&a, &e, what);
    }
    assert_int_equal(failed, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(all_shipped_rules_load_together),
        cmocka_unit_test(paths_route_to_the_right_rule),
        cmocka_unit_test(bodies_classify_per_api),
        cmocka_unit_test(every_status_maps_into_the_table),
        cmocka_unit_test(elb_v1_copy_answers_as_the_shared_map),
    };
    return cmocka_run_group_tests_name("shipped rules", tests, load_all, unload_all);
}
