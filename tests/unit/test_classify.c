/*
 * Unit tests for classify (and the jsonpath it is built on): what a 200
 * body from upstream says about the job (proxy/classify.h is the contract).
 *
 * The spec is built by hand as the rule loader would: state path, terminal
 * [SUCCESS, FAIL], identity job_id. Table-driven: every failing row is
 * printed before the test fails.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "classify.h"
#include "jsonpath.h"
#include "unit_support.h"

#define JID   "ff8080825ecc523f015ecd0a98f82f77"
#define OTHER "ff8080825ecc523f015ecd0a98f82f78"

/* A spec as a rule would give it; identity may be NULL (no check). */
static struct classify_spec *spec_new(const char *state, const char *identity, const char *const *terminal)
{
    struct classify_spec *s = calloc(1, sizeof(*s));
    assert_non_null(s);
    assert_int_equal(jsonpath_compile(&s->state, state), 0);
    if (identity)
        assert_int_equal(jsonpath_compile(&s->identity, identity), 0);
    size_t n = 0;
    while (terminal[n])
        n++;
    s->terminal = calloc(n, sizeof(char *));
    assert_non_null(s->terminal);
    for (size_t i = 0; i < n; i++)
        s->terminal[s->nterminal++] = strdup(terminal[i]);
    return s;
}

static void spec_delete(struct classify_spec *s)
{
    classify_spec_free(s);
    free(s);
}

static const char *const elb_terminal[] = {"SUCCESS", "FAIL", NULL};

static int elb_setup(void **state)
{
    *state = spec_new("status", "job_id", elb_terminal);
    return 0;
}

static int nested_setup(void **state)
{
    /* ELB v3: {"job": {"status", "job_id", ...}} */
    *state = spec_new("job.status", "job.job_id", elb_terminal);
    return 0;
}

static int spec_teardown(void **state)
{
    spec_delete(*state);
    return 0;
}

struct body_case {
    const char *what;
    const char *body;
    const char *expected_id; /* the request's job_id */
    enum job_class want;
    const char *state; /* expected copy of the state, "" when none */
};

/* Classify every row; body lengths are strlen (no NUL is read past them). */
static int run_cases(const struct classify_spec *spec, const struct body_case *cases, size_t n)
{
    int failed = 0;
    for (size_t i = 0; i < n; i++) {
        const struct body_case *c = &cases[i];
        size_t len = strlen(c->body);
        /* An exact-size copy with no terminating NUL: a read past `len` is an ASan report. */
        char *body = malloc(len ? len : 1);
        assert_non_null(body);
        memcpy(body, c->body, len);
        char state[64];
        memset(state, 'X', sizeof(state));
        enum job_class got = classify_body(spec, body, len, c->expected_id, state, sizeof(state));
        free(body);
        UNIT_EXPECT(failed, got == c->want, "%s: %s, want %s (body %s)", c->what, job_class_name(got),
                    job_class_name(c->want), c->body);
        UNIT_EXPECT(failed, memchr(state, '\0', sizeof(state)) && strcmp(state, c->state) == 0,
                    "%s: state '%.63s', want '%s'", c->what, state, c->state);
    }
    return failed;
}

static void test_elb_bodies(void **state)
{
    static const struct body_case cases[] = {
        {"SUCCESS is terminal", "{\"status\":\"SUCCESS\",\"job_id\":\"" JID "\"}", JID, JOB_TERMINAL, "SUCCESS"},
        {"FAIL is terminal", "{\"status\":\"FAIL\",\"job_id\":\"" JID "\",\"error_code\":\"ELB.6101\"}", JID,
         JOB_TERMINAL, "FAIL"},
        {"the documented createELB body",
         "{\"status\":\"SUCCESS\",\"entities\":{\"elb\":{\"id\":\"x\",\"name\":\"elb-1\",\"admin_state_up\":1}},"
         "\"job_id\":\"" JID "\",\"job_type\":\"createELB\",\"begin_time\":\"2017-09-11T08:58:33.000Z\","
         "\"end_time\":\"2017-09-11T08:58:47.000Z\",\"error_code\":null,\"fail_reason\":null,\"sub_jobs\":[]}",
         JID, JOB_TERMINAL, "SUCCESS"},
        {"INIT is pending", "{\"status\":\"INIT\",\"job_id\":\"" JID "\"}", JID, JOB_PENDING, "INIT"},
        {"RUNNING is pending", "{\"status\":\"RUNNING\",\"job_id\":\"" JID "\"}", JID, JOB_PENDING, "RUNNING"},
        {"PENDING_PAYMENT (ECS) is pending", "{\"status\":\"PENDING_PAYMENT\",\"job_id\":\"" JID "\"}", JID,
         JOB_PENDING, "PENDING_PAYMENT"},
        {"WAITING_EXECUTE (EVS) is pending", "{\"job_id\":\"" JID "\",\"status\":\"WAITING_EXECUTE\"}", JID,
         JOB_PENDING, "WAITING_EXECUTE"},
        {"an unknown state is pending", "{\"status\":\"FROBNICATING\",\"job_id\":\"" JID "\"}", JID, JOB_PENDING,
         "FROBNICATING"},
        {"terminal states match exactly (case)", "{\"status\":\"success\",\"job_id\":\"" JID "\"}", JID, JOB_PENDING,
         "success"},
        {"terminal states match exactly (space)", "{\"status\":\"SUCCESS \",\"job_id\":\"" JID "\"}", JID, JOB_PENDING,
         "SUCCESS "},
        {"terminal states match exactly (prefix)", "{\"status\":\"SUCCESSFUL\",\"job_id\":\"" JID "\"}", JID,
         JOB_PENDING, "SUCCESSFUL"},

        /* Another job: never cached under this one's key. */
        {"another job_id", "{\"status\":\"SUCCESS\",\"job_id\":\"" OTHER "\"}", JID, JOB_OTHER_JOB, "SUCCESS"},
        {"job_id in another case", "{\"status\":\"SUCCESS\",\"job_id\":\"FF8080825ECC523F015ECD0A98F82F77\"}", JID,
         JOB_OTHER_JOB, "SUCCESS"},
        {"job_id a prefix of the asked one", "{\"status\":\"RUNNING\",\"job_id\":\"ff8080825ecc\"}", JID, JOB_OTHER_JOB,
         "RUNNING"},
        {"no job_id", "{\"status\":\"SUCCESS\"}", JID, JOB_OTHER_JOB, "SUCCESS"},
        {"job_id null", "{\"status\":\"SUCCESS\",\"job_id\":null}", JID, JOB_OTHER_JOB, "SUCCESS"},
        {"job_id a number", "{\"status\":\"SUCCESS\",\"job_id\":12345}", "12345", JOB_OTHER_JOB, "SUCCESS"},
        {"job_id nested one level too deep", "{\"status\":\"SUCCESS\",\"job\":{\"job_id\":\"" JID "\"}}", JID,
         JOB_OTHER_JOB, "SUCCESS"},
        {"no expected id to compare with", "{\"status\":\"SUCCESS\",\"job_id\":\"" JID "\"}", NULL, JOB_OTHER_JOB,
         "SUCCESS"},

        /* No state string where the rule says: not a job. */
        {"no status", "{\"job_id\":\"" JID "\"}", JID, JOB_NOT_JOB, ""},
        {"status a number", "{\"status\":1,\"job_id\":\"" JID "\"}", JID, JOB_NOT_JOB, ""},
        {"status null", "{\"status\":null,\"job_id\":\"" JID "\"}", JID, JOB_NOT_JOB, ""},
        {"status true", "{\"status\":true,\"job_id\":\"" JID "\"}", JID, JOB_NOT_JOB, ""},
        {"status an object", "{\"status\":{\"phase\":\"SUCCESS\"},\"job_id\":\"" JID "\"}", JID, JOB_NOT_JOB, ""},
        {"status a list", "{\"status\":[\"SUCCESS\"],\"job_id\":\"" JID "\"}", JID, JOB_NOT_JOB, ""},
        {"status key in another case", "{\"Status\":\"SUCCESS\",\"job_id\":\"" JID "\"}", JID, JOB_NOT_JOB, ""},
        {"an empty object", "{}", JID, JOB_NOT_JOB, ""},
        {"an ELB error body", "{\"error\":{\"message\":\"find lb failed\",\"code\":\"ELB.1002\"}}", JID, JOB_NOT_JOB,
         ""},
        {"a JSON array", "[{\"status\":\"SUCCESS\",\"job_id\":\"" JID "\"}]", JID, JOB_NOT_JOB, ""},
        {"a JSON string", "\"SUCCESS\"", JID, JOB_NOT_JOB, ""},
        {"a JSON number", "200", JID, JOB_NOT_JOB, ""},
        {"JSON null", "null", JID, JOB_NOT_JOB, ""},
        {"an HTML page", "<html><body>502 Bad Gateway</body></html>", JID, JOB_NOT_JOB, ""},
        {"plain text", "SUCCESS", JID, JOB_NOT_JOB, ""},
        {"truncated JSON", "{\"status\":\"SUCCESS\",\"job_id\":\"" JID, JID, JOB_NOT_JOB, ""},
        {"truncated after the state", "{\"status\":\"SUCCESS\",", JID, JOB_NOT_JOB, ""},
        {"an unterminated string", "{\"status\":\"SUCC", JID, JOB_NOT_JOB, ""},
        {"an empty body", "", JID, JOB_NOT_JOB, ""},
        {"whitespace only", " \r\n\t", JID, JOB_NOT_JOB, ""},
        {"single quotes", "{'status':'SUCCESS','job_id':'" JID "'}", JID, JOB_NOT_JOB, ""},
    };
    assert_int_equal(run_cases(*state, cases, sizeof(cases) / sizeof(cases[0])), 0);
}

/*
 * A body with something after the JSON object is not a JSON document. If it
 * were taken as a job, the whole body (garbage included) would be cached,
 * for ever when terminal, and served to every client, whose JSON parser then
 * fails. The contract: "JOB_NOT_JOB: not a JSON object".
 */
static void test_trailing_garbage_is_not_a_job(void **state)
{
    static const struct body_case cases[] = {
        {"two objects back to back",
         "{\"status\":\"SUCCESS\",\"job_id\":\"" JID "\"}{\"status\":\"RUNNING\",\"job_id\":\"" JID "\"}", JID,
         JOB_NOT_JOB, ""},
        {"an object then text", "{\"status\":\"SUCCESS\",\"job_id\":\"" JID "\"}<html>", JID, JOB_NOT_JOB, ""},
        {"an object then a stray brace", "{\"status\":\"FAIL\",\"job_id\":\"" JID "\"}}", JID, JOB_NOT_JOB, ""},
    };
    assert_int_equal(run_cases(*state, cases, sizeof(cases) / sizeof(cases[0])), 0);
}

static void test_trailing_whitespace_is_fine(void **state)
{
    static const struct body_case cases[] = {
        {"a trailing newline", "{\"status\":\"SUCCESS\",\"job_id\":\"" JID "\"}\n", JID, JOB_TERMINAL, "SUCCESS"},
        {"leading and trailing blanks", " \r\n{\"status\":\"RUNNING\",\"job_id\":\"" JID "\"} \r\n", JID, JOB_PENDING,
         "RUNNING"},
    };
    assert_int_equal(run_cases(*state, cases, sizeof(cases) / sizeof(cases[0])), 0);
}

static void test_len_is_honoured(void **state)
{
    const struct classify_spec *spec = *state;
    const char *body = "{\"status\":\"SUCCESS\",\"job_id\":\"" JID "\"}";
    char st[32];
    /* One byte short of the closing brace: truncated, whatever follows in memory. */
    assert_int_equal(classify_body(spec, body, strlen(body) - 1, JID, st, sizeof(st)), JOB_NOT_JOB);
    assert_int_equal(classify_body(spec, body, 0, JID, st, sizeof(st)), JOB_NOT_JOB);
    assert_int_equal(classify_body(spec, body, strlen(body), JID, st, sizeof(st)), JOB_TERMINAL);
}

static void test_nested_paths(void **state)
{
    static const struct body_case cases[] = {
        {"ELB v3 terminal", "{\"job\":{\"status\":\"SUCCESS\",\"job_id\":\"" JID "\",\"job_type\":\"x\"}}", JID,
         JOB_TERMINAL, "SUCCESS"},
        {"ELB v3 failed", "{\"job\":{\"job_id\":\"" JID "\",\"status\":\"FAIL\"}}", JID, JOB_TERMINAL, "FAIL"},
        {"ELB v3 running", "{\"job\":{\"status\":\"RUNNING\",\"job_id\":\"" JID "\"}}", JID, JOB_PENDING, "RUNNING"},
        {"ELB v3 another job", "{\"job\":{\"status\":\"SUCCESS\",\"job_id\":\"" OTHER "\"}}", JID, JOB_OTHER_JOB,
         "SUCCESS"},
        {"a flat body does not have job.status", "{\"status\":\"SUCCESS\",\"job_id\":\"" JID "\"}", JID, JOB_NOT_JOB,
         ""},
        {"job is a string", "{\"job\":\"SUCCESS\"}", JID, JOB_NOT_JOB, ""},
        {"job is a list", "{\"job\":[{\"status\":\"SUCCESS\",\"job_id\":\"" JID "\"}]}", JID, JOB_NOT_JOB, ""},
        {"job.status an object", "{\"job\":{\"status\":{},\"job_id\":\"" JID "\"}}", JID, JOB_NOT_JOB, ""},
        {"job_id only at the top", "{\"job\":{\"status\":\"SUCCESS\"},\"job_id\":\"" JID "\"}", JID, JOB_OTHER_JOB,
         "SUCCESS"},
    };
    assert_int_equal(run_cases(*state, cases, sizeof(cases) / sizeof(cases[0])), 0);
}

/* Bodies that two parsers may read two ways: never cached (issue: a duplicated
 * "status" was cached as terminal forever, while clients reading the last key
 * polled on). */
static void test_ambiguous_bodies(void **state)
{
    static const struct body_case cases[] = {
        {"status twice, terminal first", "{\"status\":\"SUCCESS\",\"job_id\":\"" JID "\",\"status\":\"RUNNING\"}", JID,
         JOB_AMBIGUOUS, ""},
        {"status twice, same value", "{\"status\":\"SUCCESS\",\"status\":\"SUCCESS\",\"job_id\":\"" JID "\"}", JID,
         JOB_AMBIGUOUS, ""},
        {"status twice in another case", "{\"status\":\"SUCCESS\",\"STATUS\":\"RUNNING\",\"job_id\":\"" JID "\"}", JID,
         JOB_AMBIGUOUS, ""},
        {"job_id twice", "{\"status\":\"SUCCESS\",\"job_id\":\"" JID "\",\"job_id\":\"" OTHER "\"}", JID, JOB_AMBIGUOUS,
         ""},
        {"an escaped NUL in the state", "{\"status\":\"SUCCESS\\u0000RUNNING\",\"job_id\":\"" JID "\"}", JID,
         JOB_AMBIGUOUS, ""},
        {"an escaped NUL in the job_id", "{\"status\":\"SUCCESS\",\"job_id\":\"" JID "\\u0000x\"}", JID, JOB_AMBIGUOUS,
         ""},
        {"an escaped NUL anywhere", "{\"status\":\"SUCCESS\",\"job_id\":\"" JID "\",\"x\":\"\\u0000\"}", JID,
         JOB_AMBIGUOUS, ""},
        {"a byte that is not UTF-8", "{\"status\":\"SUCCESS\",\"job_id\":\"" JID "\",\"x\":\"\xff\"}", JID,
         JOB_AMBIGUOUS, ""},
        {"an overlong slash", "{\"status\":\"SUCCESS\",\"job_id\":\"" JID "\",\"x\":\"\xc0\xaf\"}", JID, JOB_AMBIGUOUS,
         ""},
        {"a UTF-8 surrogate", "{\"status\":\"SUCCESS\",\"job_id\":\"" JID "\",\"x\":\"\xed\xa0\x80\"}", JID,
         JOB_AMBIGUOUS, ""},
        {"a sequence cut short", "{\"status\":\"SUCCESS\",\"job_id\":\"" JID "\",\"x\":\"\xe2\x82\"}", JID,
         JOB_AMBIGUOUS, ""},
        {"well-formed UTF-8 is fine",
         "{\"status\":\"SUCCESS\",\"job_id\":\"" JID "\",\"x\":\"caf\xc3\xa9 \xe2\x82\xac\"}", JID, JOB_TERMINAL,
         "SUCCESS"},
        /* Not NULs, not duplicates: served as before. */
        {"an escaped backslash before u0000 is text",
         "{\"status\":\"SUCCESS\",\"job_id\":\"" JID "\",\"x\":\"\\\\u0000\"}", JID, JOB_TERMINAL, "SUCCESS"},
        {"other keys may repeat", "{\"status\":\"RUNNING\",\"job_id\":\"" JID "\",\"x\":1,\"x\":2}", JID, JOB_PENDING,
         "RUNNING"},
        {"a key that only starts like status", "{\"status\":\"SUCCESS\",\"statuses\":[],\"job_id\":\"" JID "\"}", JID,
         JOB_TERMINAL, "SUCCESS"},
    };
    assert_int_equal(run_cases(*state, cases, sizeof(cases) / sizeof(cases[0])), 0);

    /* A raw NUL inside the body: never read as the text before it. */
    static const char raw[] = "{\"status\":\"SUCCESS\0RUNNING\",\"job_id\":\"" JID "\"}";
    char st[32];
    assert_int_equal(classify_body(*state, raw, sizeof(raw) - 1, JID, st, sizeof(st)), JOB_AMBIGUOUS);
}

static void test_ambiguous_nested(void **state)
{
    static const struct body_case cases[] = {
        {"job twice", "{\"job\":{\"status\":\"SUCCESS\",\"job_id\":\"" JID "\"},\"job\":{\"status\":\"RUNNING\"}}", JID,
         JOB_AMBIGUOUS, ""},
        {"job.status twice", "{\"job\":{\"status\":\"SUCCESS\",\"status\":\"RUNNING\",\"job_id\":\"" JID "\"}}", JID,
         JOB_AMBIGUOUS, ""},
        {"job.job_id twice", "{\"job\":{\"status\":\"SUCCESS\",\"job_id\":\"" JID "\",\"job_id\":\"" JID "\"}}", JID,
         JOB_AMBIGUOUS, ""},
        {"a top-level status beside job is not on the path",
         "{\"status\":\"x\",\"status\":\"y\",\"job\":{\"status\":\"SUCCESS\",\"job_id\":\"" JID "\"}}", JID,
         JOB_TERMINAL, "SUCCESS"},
    };
    assert_int_equal(run_cases(*state, cases, sizeof(cases) / sizeof(cases[0])), 0);
}

static void test_cce_shape_without_identity(void **state)
{
    /* CCE: status.phase in Initializing | Running | Failed | Success, no identity check. */
    static const char *const cce_terminal[] = {"Success", "Failed", NULL};
    static const struct body_case cases[] = {
        {"Success", "{\"status\":{\"phase\":\"Success\"},\"metadata\":{\"uid\":\"x\"}}", JID, JOB_TERMINAL, "Success"},
        {"Failed", "{\"status\":{\"phase\":\"Failed\"}}", JID, JOB_TERMINAL, "Failed"},
        {"Running", "{\"status\":{\"phase\":\"Running\"}}", JID, JOB_PENDING, "Running"},
        {"Initializing", "{\"status\":{\"phase\":\"Initializing\"}}", JID, JOB_PENDING, "Initializing"},
        {"SUCCESS is not one of this rule's states", "{\"status\":{\"phase\":\"SUCCESS\"}}", JID, JOB_PENDING,
         "SUCCESS"},
        /* No identity in the spec: the expected id is ignored, even NULL. */
        {"any job_id", "{\"status\":{\"phase\":\"Success\"},\"job_id\":\"" OTHER "\"}", JID, JOB_TERMINAL, "Success"},
        {"no expected id", "{\"status\":{\"phase\":\"Success\"}}", NULL, JOB_TERMINAL, "Success"},
        {"no phase", "{\"status\":{}}", JID, JOB_NOT_JOB, ""},
    };
    struct classify_spec *spec = spec_new("status.phase", NULL, cce_terminal);
    int failed = run_cases(spec, cases, sizeof(cases) / sizeof(cases[0]));
    spec_delete(spec);
    assert_int_equal(failed, 0);
}

static void test_state_copy_is_bounded(void **state)
{
    const struct classify_spec *spec = *state;
    const char *body = "{\"status\":\"SUCCESS\",\"job_id\":\"" JID "\"}";
    size_t len = strlen(body);
    char buf[16];

    /* Truncated to statelen, NUL-terminated, nothing written beyond. */
    memset(buf, 'X', sizeof(buf));
    assert_int_equal(classify_body(spec, body, len, JID, buf, 4), JOB_TERMINAL);
    assert_string_equal(buf, "SUC");
    assert_int_equal(buf[4], 'X');

    memset(buf, 'X', sizeof(buf));
    assert_int_equal(classify_body(spec, body, len, JID, buf, 1), JOB_TERMINAL);
    assert_int_equal(buf[0], '\0');
    assert_int_equal(buf[1], 'X');

    /* statelen 0: the buffer is not touched at all. */
    memset(buf, 'X', sizeof(buf));
    assert_int_equal(classify_body(spec, body, len, JID, buf, 0), JOB_TERMINAL);
    assert_int_equal(buf[0], 'X');

    /* Exactly fitting. */
    memset(buf, 'X', sizeof(buf));
    assert_int_equal(classify_body(spec, body, len, JID, buf, 8), JOB_TERMINAL);
    assert_string_equal(buf, "SUCCESS");
    assert_int_equal(buf[8], 'X');

    /* A buffer with old content is cleared when no state is found. */
    memset(buf, 'X', sizeof(buf));
    assert_int_equal(classify_body(spec, "[]", 2, JID, buf, sizeof(buf)), JOB_NOT_JOB);
    assert_int_equal(buf[0], '\0');
}

static void test_long_state(void **state)
{
    const struct classify_spec *spec = *state;
    size_t n = 5000;
    char *body = malloc(n + 100);
    assert_non_null(body);
    int h = snprintf(body, n + 100, "{\"job_id\":\"%s\",\"status\":\"", JID);
    memset(body + h, 'R', n);
    strcpy(body + h + n, "\"}");
    char st[64];
    assert_int_equal(classify_body(spec, body, strlen(body), JID, st, sizeof(st)), JOB_PENDING);
    assert_int_equal(strlen(st), sizeof(st) - 1);
    assert_int_equal(strspn(st, "R"), sizeof(st) - 1);
    free(body);
}

static void test_more_terminal_states(void **state)
{
    /* The terminal list is the rule's, of any length. */
    static const char *const evs_terminal[] = {"SUCCESS", "FAIL", "LISTENING", NULL};
    struct classify_spec *spec = spec_new("status", "job_id", evs_terminal);
    char st[32];
    const char *listening = "{\"status\":\"LISTENING\",\"job_id\":\"" JID "\"}";
    assert_int_equal(classify_body(spec, listening, strlen(listening), JID, st, sizeof(st)), JOB_TERMINAL);
    spec_delete(spec);

    /* An empty terminal list: nothing is ever final. */
    static const char *const none[] = {NULL};
    spec = spec_new("status", "job_id", none);
    const char *success = "{\"status\":\"SUCCESS\",\"job_id\":\"" JID "\"}";
    assert_int_equal(classify_body(spec, success, strlen(success), JID, st, sizeof(st)), JOB_PENDING);
    spec_delete(spec);
}

static void test_job_class_names(void **state)
{
    assert_string_equal(job_class_name(JOB_TERMINAL), "terminal");
    assert_string_equal(job_class_name(JOB_PENDING), "pending");
    assert_string_equal(job_class_name(JOB_NOT_JOB), "not_job");
    assert_string_equal(job_class_name(JOB_OTHER_JOB), "other_job");
    assert_string_equal(job_class_name(JOB_AMBIGUOUS), "ambiguous");
    assert_non_null(job_class_name((enum job_class)42));
}

/* ------------------------------------------------------------ jsonpath */

static void test_jsonpath_compile(void **state)
{
    static const char *const bad[] = {"", ".", "..", ".status", "status.", "job..status", "a.b.c.d.e.f.g.h.i"};
    int failed = 0;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct jsonpath p;
        UNIT_EXPECT(failed, jsonpath_compile(&p, bad[i]) == -1, "path '%s' compiled", bad[i]);
        UNIT_EXPECT(failed, p.nparts == 0 && p.text == NULL, "path '%s' left parts behind", bad[i]);
        jsonpath_free(&p);
    }
    struct jsonpath p;
    UNIT_EXPECT(failed, jsonpath_compile(&p, NULL) == -1, "%s", "NULL path compiled");
    assert_int_equal(failed, 0);

    assert_int_equal(jsonpath_compile(&p, "a.b.c.d.e.f.g.h"), 0); /* JSONPATH_MAX_DEPTH parts */
    assert_int_equal(p.nparts, JSONPATH_MAX_DEPTH);
    assert_string_equal(p.parts[7], "h");
    jsonpath_free(&p);

    assert_int_equal(jsonpath_compile(&p, "status.phase"), 0);
    assert_string_equal(p.text, "status.phase");
    assert_int_equal(p.nparts, 2);
    assert_string_equal(p.parts[0], "status");
    assert_string_equal(p.parts[1], "phase");
    jsonpath_free(&p);
}

static void test_jsonpath_get(void **state)
{
    cJSON *root = cJSON_Parse("{\"error\":{\"code\":\"ELB.1002\",\"n\":3,\"list\":[1]},\"s\":\"x\"}");
    assert_non_null(root);
    struct jsonpath p;

    assert_int_equal(jsonpath_compile(&p, "error.code"), 0);
    assert_string_equal(jsonpath_get_string(&p, root), "ELB.1002");
    jsonpath_free(&p);

    assert_int_equal(jsonpath_compile(&p, "error.n"), 0);
    assert_non_null(jsonpath_get(&p, root));
    assert_null(jsonpath_get_string(&p, root)); /* not a string */
    jsonpath_free(&p);

    assert_int_equal(jsonpath_compile(&p, "s.deeper"), 0); /* through a string */
    assert_null(jsonpath_get(&p, root));
    jsonpath_free(&p);

    assert_int_equal(jsonpath_compile(&p, "error.list.0"), 0); /* never indexes a list */
    assert_null(jsonpath_get(&p, root));
    jsonpath_free(&p);

    assert_int_equal(jsonpath_compile(&p, "Error.code"), 0); /* names are case-sensitive */
    assert_null(jsonpath_get(&p, root));
    jsonpath_free(&p);

    /* A path never compiled (zeroed) finds nothing. */
    memset(&p, 0, sizeof(p));
    assert_null(jsonpath_get(&p, root));
    assert_null(jsonpath_get_string(&p, root));
    cJSON_Delete(root);
}

/* Tests run on a fresh spec: flat ELB bodies, or nested ELB v3 ones. */
#define ELB_TEST(f)    cmocka_unit_test_setup_teardown(f, elb_setup, spec_teardown)
#define NESTED_TEST(f) cmocka_unit_test_setup_teardown(f, nested_setup, spec_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        ELB_TEST(test_elb_bodies),
        ELB_TEST(test_trailing_garbage_is_not_a_job),
        ELB_TEST(test_trailing_whitespace_is_fine),
        ELB_TEST(test_len_is_honoured),
        NESTED_TEST(test_nested_paths),
        ELB_TEST(test_ambiguous_bodies),
        NESTED_TEST(test_ambiguous_nested),
        cmocka_unit_test(test_cce_shape_without_identity),
        ELB_TEST(test_state_copy_is_bounded),
        ELB_TEST(test_long_state),
        cmocka_unit_test(test_more_terminal_states),
        cmocka_unit_test(test_job_class_names),
        cmocka_unit_test(test_jsonpath_compile),
        cmocka_unit_test(test_jsonpath_get),
    };
    return cmocka_run_group_tests_name("classify", tests, NULL, NULL);
}
