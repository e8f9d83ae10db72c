/*
 * Unit tests for errmap (and fault): how upstream statuses, error bodies and
 * transport faults become answers from the documented status table
 * (proxy/errmap.h is the contract). The map under test is the one the
 * shipped rule lua-free-rules/elb-v1.yaml builds, loaded as the daemon does.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "errmap.h"
#include "fault.h"
#include "rules.h"
#include "statuses.h"
#include "unit_support.h"

/* The documented table: its one copy is proxy/statuses.h. */
static int in_documented_table(int status)
{
    for (size_t i = 0; i < STATUSES_COUNT; i++)
        if (statuses_table[i] == status)
            return 1;
    return 0;
}

/* Is s[0..len) well-formed UTF-8 (no truncated or overlong sequence)? */
static int valid_utf8(const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        size_t n;
        if (c < 0x80)
            n = 1;
        else if (c >= 0xC2 && c <= 0xDF)
            n = 2;
        else if (c >= 0xE0 && c <= 0xEF)
            n = 3;
        else if (c >= 0xF0 && c <= 0xF4)
            n = 4;
        else
            return 0;
        if (i + n > len)
            return 0;
        for (size_t k = 1; k < n; k++)
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
        i += n;
    }
    return 1;
}

/* ------------------------------------------------------------ fixture */

static const struct errmap *elb_map(void **state)
{
    const struct ruleset *rs = *state;
    return &rs->rules[0]->errors;
}

static int elb_setup(void **state)
{
    char path[4096];
    unit_src_path(path, sizeof(path), "lua-free-rules/elb-v1.yaml");
    char *files[] = {path};
    struct conf_diag d;
    conf_diag_init(&d);
    struct ruleset *rs = ruleset_load(files, 1, &d);
    if (!rs || d.count) {
        print_error("cannot load %s:\n", path);
        unit_print_diags(&d);
        conf_diag_free(&d);
        ruleset_unref(rs);
        return -1;
    }
    conf_diag_free(&d);
    *state = rs;
    return 0;
}

static int elb_teardown(void **state)
{
    ruleset_unref(*state);
    return 0;
}

/* ------------------------------------------------------ the status table */

static void test_documented_table(void **state)
{
    int count = 0;
    for (int s = 0; s < 1000; s++) {
        if (http_status_documented(s))
            count++;
        if (http_status_documented(s) != in_documented_table(s))
            fail_msg("http_status_documented(%d) = %d", s, http_status_documented(s));
    }
    assert_int_equal(count, 15);
    assert_false(http_status_documented(429));
    assert_false(http_status_documented(494));
    assert_false(http_status_documented(-404));
}

static void test_reasons(void **state)
{
    assert_string_equal(http_reason(404), "Not Found");
    assert_string_equal(http_reason(503), "Service Unavailable");
    assert_string_equal(http_reason(504), "Gateway Timeout");
    assert_string_equal(http_reason(429), "Too Many Requests");
    assert_string_equal(http_reason(999), "Unknown");
    assert_string_equal(http_reason(-1), "Unknown");
    for (size_t i = 0; i < STATUSES_COUNT; i++)
        if (strcmp(http_reason(statuses_table[i]), "Unknown") == 0)
            fail_msg("status %d has no reason phrase", statuses_table[i]);
}

/* ------------------------------------------------ every upstream status */

/* Bodies each status is tried with: none, each of Huawei's shapes, garbage. */
static const char *const sample_bodies[] = {
    "",
    "{\"error\":{\"message\":\"find lb failed\",\"code\":\"ELB.1002\"}}",
    ("{\"error_msg\":\"The API does not exist or has not been published in the environment\","
     "\"error_code\":\"APIGW.0101\",\"request_id\":\"a1b2c3\"}"),
    "<html><body><h1>Bad Gateway</h1></body></html>",
    "{\"unrelated\":true}",
};

static void test_every_upstream_status_lands_in_table(void **state)
{
    const struct errmap *map = elb_map(state);
    int failed = 0;
    for (int s = 100; s <= 599; s++) {
        /* The loader promises a mapping for each: exact or by class. */
        const struct errmap_entry *e = errmap_for_status(map, s);
        UNIT_EXPECT(failed, e != NULL && e->set, "status %d has no entry", s);
        for (size_t b = 0; b < sizeof(sample_bodies) / sizeof(sample_bodies[0]); b++) {
            struct client_error out;
            memset(&out, 0x5A, sizeof(out));
            errmap_from_upstream(map, s, sample_bodies[b], strlen(sample_bodies[b]), &out);
            UNIT_EXPECT(failed, in_documented_table(out.status) && out.status != 200,
                        "upstream %d (body %zu) -> %d, not an error from the table", s, b, out.status);
            UNIT_EXPECT(failed, memchr(out.code, '\0', sizeof(out.code)) && out.code[0],
                        "upstream %d (body %zu): empty or unterminated code", s, b);
            UNIT_EXPECT(failed, memchr(out.message, '\0', sizeof(out.message)) && out.message[0],
                        "upstream %d (body %zu): empty or unterminated message", s, b);
            UNIT_EXPECT(failed, out.retry_after >= 0, "upstream %d: retry_after %d", s, out.retry_after);
        }
    }
    assert_int_equal(failed, 0);
}

static void test_out_of_range_statuses(void **state)
{
    /* Not an HTTP status at all: no entry, and still an answer from the table. */
    static const int odd[] = {-1, 0, 1, 99, 600, 999, 1000, 200000};
    const struct errmap *map = elb_map(state);
    for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++) {
        struct client_error out;
        assert_null(errmap_for_status(map, odd[i]));
        errmap_from_upstream(map, odd[i], "", 0, &out);
        assert_true(in_documented_table(out.status) && out.status != 200);
        assert_true(out.code[0] != '\0');
        assert_true(out.message[0] != '\0');
    }
}

/* --------------------------------------------------------- specific rows */

struct row_case {
    const char *what;
    int upstream;
    const char *body;
    int status;
    const char *code;    /* exact; NULL: any non-empty code */
    const char *message; /* exact; NULL: any non-empty message */
    int retry_after;
};

static const struct row_case rows[] = {
    {"429 from the API gateway: 503, retryable, code kept", 429,
     "{\"error_msg\":\"The throttling threshold has been reached: policy user over ratelimit,limit:200,time:1 "
     "second\",\"error_code\":\"APIGW.0308\",\"request_id\":\"0b8d1bd2a0dc4b91b4ba5b5a8e1f7b1c\"}",
     503, "APIGW.0308", "The throttling threshold has been reached: policy user over ratelimit,limit:200,time:1 second",
     3},
    {"429 with no body: the rule's message", 429, "", 503, NULL,
     "the cloud API is throttling requests; retry after a few seconds", 3},
    {"404 ELB find lb failed", 404, "{\"error\":{\"message\":\"find lb failed\",\"code\":\"ELB.1002\"}}", 404,
     "ELB.1002", "find lb failed", 0},
    {"400 ELB invalid parameters", 400, "{\"error\": {\"message\": \"Invalid parameters\", \"code\": \"ELB.1001\"}}",
     400, "ELB.1001", "Invalid parameters", 0},
    {"401 ELB token invalid", 401, "{\"error\":{\"code\":\"ELB.1102\",\"message\":\"Token invalid\"}}", 401, "ELB.1102",
     "Token invalid", 0},
    {"401 token expired", 401,
     "{\"error_msg\":\"The token must be updated.\",\"error_code\":\"APIGW.0307\",\"request_id\":\"r-1\"}", 401,
     "APIGW.0307", "The token must be updated.", 0},
    {"401 bad signature", 401,
     "{\"error_msg\":\"Incorrect IAM authentication information: verify aksk signature fail, "
     "GET|/v1.0/x/jobs/y||x-sdk-date:20060102T150405Z|\",\"error_code\":\"APIGW.0301\",\"request_id\":\"r\"}",
     401, "APIGW.0301", NULL, 0},
    {"403 denied", 403, "{\"error_msg\":\"Access denied.\",\"error_code\":\"APIGW.0302\",\"request_id\":\"r\"}", 403,
     "APIGW.0302", "Access denied.", 0},
    {"404 no such API", 404,
     "{\"error_msg\":\"The API does not exist\",\"error_code\":\"APIGW.0101\",\"request_id\":\"r\"}", 404, "APIGW.0101",
     "The API does not exist", 0},
    {"500 gateway internal error", 500,
     "{\"error_msg\":\"Internal server error\",\"error_code\":\"APIGW.0601\",\"request_id\":\"r\"}", 500, "APIGW.0601",
     "Internal server error", 0},
    {"503 gateway backend unavailable", 503,
     "{\"error_msg\":\"Backend unavailable\",\"error_code\":\"APIGW.0613\",\"request_id\":\"r\"}", 503, "APIGW.0613",
     "Backend unavailable", 0},
    {"a failed job body's own code and message", 500,
     "{\"status\":\"FAIL\",\"job_id\":\"x\",\"code\":\"ELB.7000\",\"message\":\"backend failure\"}", 500, "ELB.7000",
     "backend failure", 0},
    {"both shapes: the rule's first shape wins", 400,
     "{\"error\":{\"code\":\"ELB.1001\",\"message\":\"elb says\"},\"error_code\":\"APIGW.0201\",\"error_msg\":\"gw "
     "says\"}",
     400, "ELB.1001", "elb says", 0},

    /* Statuses outside the documented table. */
    {"494 headers too large", 494, "", 400, NULL, "upstream refused the request headers as too large", 0},
    {"413 request too large", 413, "", 400, NULL, "upstream refused the request as too large", 0},
    {"414 URI too long", 414, "", 400, NULL, "upstream refused the request URI as too long", 0},
    {"431 headers too large", 431, "", 400, NULL, "upstream refused the request headers as too large", 0},
    {"410 gone", 410, "", 404, NULL, "the job no longer exists upstream", 0},
    {"418 (by class)", 418, "", 400, NULL, NULL, 0},
    {"499 (by class)", 499, "", 400, NULL, NULL, 0},
    {"505 (by class)", 505, "", 502, NULL, NULL, 0},
    {"599 (by class)", 599, "", 502, NULL, NULL, 0},
    {"301 redirect", 301, "", 502, NULL, "upstream redirected the request", 0},
    {"200 reaching the error map", 200, "{\"status\":\"SUCCESS\"}", 502, NULL, NULL, 0},
    {"204", 204, "", 502, NULL, "upstream answered with an unexpected success status", 0},
    {"100", 100, "", 502, NULL, "upstream sent no final answer", 0},

    /* Bodies without a usable code: one is made up, never empty. */
    {"non-JSON 502", 502, "<html><body>502 Bad Gateway</body></html>", 502, NULL, NULL, 0},
    {"non-JSON 404", 404, "Not Found", 404, NULL, NULL, 0},
    {"JSON of another shape", 404, "{\"foo\":\"bar\"}", 404, NULL, NULL, 0},
    {"error is a string", 400, "{\"error\":\"oops\"}", 400, NULL, NULL, 0},
    {"code is a number", 400, "{\"error_code\":1234,\"error_msg\":\"numeric\"}", 400, NULL, NULL, 0},
    {"code is empty", 400, "{\"error_code\":\"\",\"error_msg\":\"empty code\"}", 400, NULL, NULL, 0},
    {"a JSON array", 400, "[{\"error_code\":\"APIGW.0201\"}]", 400, NULL, NULL, 0},
    {"truncated JSON", 401, "{\"error_code\":\"APIGW.0307\",\"error_msg\":\"The tok", 401, NULL, NULL, 0},
    /* A code without a message: the code is kept, a message is supplied. */
    {"code without message", 404, "{\"error\":{\"code\":\"ELB.1002\"}}", 404, "ELB.1002", NULL, 0},
};

static void test_specific_rows(void **state)
{
    const struct errmap *map = elb_map(state);
    int failed = 0;
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        const struct row_case *r = &rows[i];
        struct client_error out;
        errmap_from_upstream(map, r->upstream, r->body, strlen(r->body), &out);
        UNIT_EXPECT(failed, out.status == r->status, "%s: status %d, want %d", r->what, out.status, r->status);
        UNIT_EXPECT(failed, out.retry_after == r->retry_after, "%s: retry_after %d, want %d", r->what, out.retry_after,
                    r->retry_after);
        UNIT_EXPECT(failed, out.code[0] && (!r->code || strcmp(out.code, r->code) == 0), "%s: code '%s', want '%s'",
                    r->what, out.code, r->code ? r->code : "(non-empty)");
        UNIT_EXPECT(failed, out.message[0] && (!r->message || strcmp(out.message, r->message) == 0),
                    "%s: message '%s', want '%s'", r->what, out.message, r->message ? r->message : "(non-empty)");
        /* A made-up code never pretends to be upstream's. */
        if (!r->code)
            UNIT_EXPECT(failed, strncmp(out.code, "APIGW.", 6) != 0 && strncmp(out.code, "ELB.", 4) != 0,
                        "%s: code '%s' looks like upstream's", r->what, out.code);
    }
    assert_int_equal(failed, 0);
}

static void test_body_length_is_honoured(void **state)
{
    const struct errmap *map = elb_map(state);
    const char *body = "{\"error\":{\"message\":\"find lb failed\",\"code\":\"ELB.1002\"}}";
    struct client_error out;

    /* An exact-size copy without a NUL: the parser must stop at len. */
    size_t len = strlen(body);
    char *copy = malloc(len);
    assert_non_null(copy);
    memcpy(copy, body, len);
    errmap_from_upstream(map, 404, copy, len, &out);
    assert_string_equal(out.code, "ELB.1002");
    /* Cut before the end: the body is not JSON any more. */
    errmap_from_upstream(map, 404, copy, len - 2, &out);
    assert_string_not_equal(out.code, "ELB.1002");
    assert_int_equal(out.status, 404);
    free(copy);

    errmap_from_upstream(map, 404, NULL, 0, &out);
    assert_int_equal(out.status, 404);
    assert_true(out.code[0] && out.message[0]);
}

static void test_errmap_for_status(void **state)
{
    const struct errmap *map = elb_map(state);
    const struct errmap_entry *e = errmap_for_status(map, 429);
    assert_non_null(e);
    assert_int_equal(e->status, 503);
    assert_int_equal(e->retry_after, 3);
    /* An exact entry beats its class. */
    e = errmap_for_status(map, 404);
    assert_int_equal(e->status, 404);
    assert_ptr_equal(e, &map->exact[404]);
    e = errmap_for_status(map, 418);
    assert_ptr_equal(e, &map->klass[4]);
    assert_int_equal(e->status, 400);
}

/* ---------------------------------------------------------------- faults */

static void test_faults(void **state)
{
    const struct errmap *map = elb_map(state);
    int failed = 0;
    for (int f = FAULT_NONE + 1; f < FAULT__COUNT; f++) {
        struct client_error out;
        memset(&out, 0x5A, sizeof(out));
        errmap_from_fault(map, (enum upstream_fault)f, &out);
        int want = f == FAULT_TIMEOUT ? 504 : f == FAULT_INTERNAL ? 503 : 502;
        UNIT_EXPECT(failed, out.status == want, "fault %s -> %d, want %d", fault_name((enum upstream_fault)f),
                    out.status, want);
        UNIT_EXPECT(failed, memchr(out.code, '\0', sizeof(out.code)) && strncmp(out.code, "JG.", 3) == 0,
                    "fault %s: code '%.64s'", fault_name((enum upstream_fault)f), out.code);
        UNIT_EXPECT(failed, memchr(out.message, '\0', sizeof(out.message)) && out.message[0], "fault %s: empty message",
                    fault_name((enum upstream_fault)f));
        UNIT_EXPECT(failed, out.retry_after == (f == FAULT_INTERNAL ? 1 : 0), "fault %s: retry_after %d",
                    fault_name((enum upstream_fault)f), out.retry_after);
    }
    assert_int_equal(failed, 0);

    struct client_error out;
    errmap_from_fault(map, FAULT_TIMEOUT, &out);
    assert_string_equal(out.code, "JG.UPSTREAM_TIMEOUT");
    assert_string_equal(out.message, "the cloud API did not answer in time");
    errmap_from_fault(map, FAULT_WRONG_JOB, &out);
    assert_string_equal(out.code, "JG.UPSTREAM_WRONG_JOB");

    /* Not a fault at all: still an answer from the table. */
    errmap_from_fault(map, FAULT_NONE, &out);
    assert_true(in_documented_table(out.status) && out.status != 200);
    assert_true(out.code[0] && out.message[0]);
    errmap_from_fault(map, FAULT__COUNT, &out);
    assert_true(in_documented_table(out.status) && out.status != 200);
    assert_true(out.code[0] && out.message[0]);
}

static void test_fault_names(void **state)
{
    static const char *const names[] = {"connect",   "dns",      "tls",      "reset",     "truncated", "timeout",
                                        "oversized", "protocol", "bad_body", "wrong_job", "internal"};
    assert_int_equal(sizeof(names) / sizeof(names[0]), FAULT__COUNT - 1);
    for (int f = 1; f < FAULT__COUNT; f++) {
        assert_string_equal(fault_name((enum upstream_fault)f), names[f - 1]);
        assert_int_equal(fault_from_name(names[f - 1]), f);
    }
    assert_int_equal(fault_from_name("none"), FAULT_NONE);
    assert_int_equal(fault_from_name("TIMEOUT"), FAULT_NONE);
    assert_int_equal(fault_from_name("timeouts"), FAULT_NONE);
    assert_int_equal(fault_from_name(""), FAULT_NONE);
    assert_string_equal(fault_name(FAULT__COUNT), "unknown");
    assert_string_equal(fault_name((enum upstream_fault) - 1), "unknown");
}

static void test_empty_map_falls_back(void **state)
{
    /* A map with nothing in it (never produced by the loader) still answers from the table. */
    struct errmap map;
    struct client_error out;
    memset(&map, 0, sizeof(map));
    const char *body = "{\"error\":{\"code\":\"ELB.1002\",\"message\":\"x\"}}";
    errmap_from_upstream(&map, 404, body, strlen(body), &out);
    assert_true(in_documented_table(out.status) && out.status != 200);
    assert_true(out.code[0] && out.message[0]);
    errmap_from_fault(&map, FAULT_TIMEOUT, &out);
    assert_true(in_documented_table(out.status) && out.status != 200);
    assert_true(out.code[0] && out.message[0]);
    errmap_free(&map);
}

/* ------------------------------------------------------------- rendering */

/* Render `e` in `shape`, parse it back and check each member, where the
 * official SDKs read them: {"error_code","error_msg"} (apigw, the default)
 * or {"error": {"code","message"}} (elb); the request id beside them. */
static void check_render_shape(const struct client_error *e, const char *request_id, enum error_shape shape)
{
    char *text = client_error_render(e, request_id, shape);
    assert_non_null(text);
    assert_true(valid_utf8(text, strlen(text)));
    cJSON *root = cJSON_Parse(text);
    if (!root)
        fail_msg("not JSON: %s", text);
    assert_true(cJSON_IsObject(root));
    const cJSON *holder = root;
    const char *code_key = "error_code", *message_key = "error_msg";
    if (shape == ERROR_SHAPE_ELB) {
        holder = cJSON_GetObjectItemCaseSensitive(root, "error");
        assert_true(cJSON_IsObject(holder));
        code_key = "code";
        message_key = "message";
        assert_int_equal(cJSON_GetArraySize(holder), 2);
    }
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(holder, code_key)), e->code);
    assert_string_equal(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(holder, message_key)), e->message);
    const cJSON *rid = cJSON_GetObjectItemCaseSensitive(root, "request_id");
    if (request_id)
        assert_string_equal(cJSON_GetStringValue(rid), request_id);
    else
        assert_null(rid);
    assert_int_equal(cJSON_GetArraySize(root), (shape == ERROR_SHAPE_ELB ? 1 : 2) + (request_id ? 1 : 0));
    cJSON_Delete(root);
    cJSON_free(text);
}

static void check_render(const struct client_error *e, const char *request_id)
{
    check_render_shape(e, request_id, ERROR_SHAPE_DEFAULT);
    check_render_shape(e, request_id, ERROR_SHAPE_APIGW);
    check_render_shape(e, request_id, ERROR_SHAPE_ELB);
}

static void test_render(void **state)
{
    const struct errmap *map = elb_map(state);
    struct client_error e;

    errmap_from_upstream(map, 404, rows[2].body, strlen(rows[2].body), &e);
    check_render(&e, "6f1d2c3b4a5968778695a4b3c2d1e0f9");
    check_render(&e, NULL);

    errmap_from_fault(map, FAULT_TIMEOUT, &e);
    check_render(&e, "req-1");

    /* Characters JSON must escape, from an upstream message. */
    const char *nasty = "{\"error_code\":\"APIGW.0301\",\"error_msg\":\"quote \\\" backslash \\\\ newline \\n "
                        "tab \\t ctl \\u0001 </script> \\u00e9\"}";
    errmap_from_upstream(map, 401, nasty, strlen(nasty), &e);
    assert_string_equal(e.code, "APIGW.0301");
    assert_non_null(strchr(e.message, '"'));
    assert_non_null(strchr(e.message, '\n'));
    assert_non_null(strchr(e.message, '\x01'));
    check_render(&e, "r\"id");

    client_error_set(&e, 400, "JG.INVALID_REQUEST", "the request does not match the route");
    assert_int_equal(e.status, 400);
    assert_int_equal(e.retry_after, 0);
    check_render(&e, "");
}

/*
 * Upstream's message is copied into our JSON answer. JSON text is UTF-8
 * (RFC 8259, 8.1): bytes that are not UTF-8 in upstream's message must not
 * reach the client as they are (replaced or dropped), or a strict client
 * parser (Python's json on bytes, Java's strict decoders) rejects the whole
 * answer.
 */
static void test_render_invalid_utf8_from_upstream(void **state)
{
    static const char *const bodies[] = {
        "{\"error_code\":\"APIGW.0301\",\"error_msg\":\"latin-1 caf\xe9 here\"}",
        "{\"error_code\":\"APIGW.0301\",\"error_msg\":\"bytes \xff\xfe here\"}",
        "{\"error_code\":\"APIGW.0301\",\"error_msg\":\"lone continuation \x80 here\"}",
        "{\"error_code\":\"APIGW.0301\",\"error_msg\":\"cut sequence \xe2\x82\"}",
        "{\"error_code\":\"APIGW.\xff\",\"error_msg\":\"bad code\"}",
    };
    const struct errmap *map = elb_map(state);
    int failed = 0;
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        struct client_error e;
        errmap_from_upstream(map, 401, bodies[i], strlen(bodies[i]), &e);
        char *text = client_error_render(&e, "r", (enum error_shape)(i % ERROR_SHAPE__COUNT));
        assert_non_null(text);
        UNIT_EXPECT(failed, valid_utf8(text, strlen(text)), "body %zu: the answer is not UTF-8: %s", i, text);
        cJSON_free(text);
    }
    assert_int_equal(failed, 0);
}

static void test_client_error_set_truncates(void **state)
{
    char code[200], message[2000];
    struct client_error e;
    memset(code, 'C', sizeof(code) - 1);
    code[sizeof(code) - 1] = '\0';
    memset(message, 'm', sizeof(message) - 1);
    message[sizeof(message) - 1] = '\0';
    client_error_set(&e, 502, code, message);
    assert_int_equal(strlen(e.code), ERRMAP_CODE_MAX - 1);
    assert_int_equal(strlen(e.message), ERRMAP_MESSAGE_MAX - 1);
    check_render(&e, "x");
}

/* ------------------------------------------------- UTF-8-safe truncation */

/* A body {"error":{"code":CODE,"message":PREFIX + n * UNIT}} */
static char *body_with_message(const char *code, const char *prefix, const char *unit, size_t n)
{
    size_t cap = strlen(code) + strlen(prefix) + strlen(unit) * n + 64;
    char *b = malloc(cap);
    assert_non_null(b);
    int used = snprintf(b, cap, "{\"error\":{\"code\":\"%s\",\"message\":\"%s", code, prefix);
    for (size_t i = 0; i < n; i++)
        used += snprintf(b + used, cap - (size_t)used, "%s", unit);
    snprintf(b + used, cap - (size_t)used, "\"}}");
    return b;
}

static void test_long_message_utf8_truncation(void **state)
{
    const struct errmap *map = elb_map(state);
    struct client_error e;

    /* 600 'é' (1200 bytes): cut to fit, on a character boundary. */
    char *body = body_with_message("ELB.1002", "", "\xc3\xa9", 600);
    errmap_from_upstream(map, 404, body, strlen(body), &e);
    free(body);
    size_t len = strlen(e.message);
    assert_true(len < ERRMAP_MESSAGE_MAX);
    assert_true(len >= ERRMAP_MESSAGE_MAX - 4); /* not cut more than one character short */
    assert_true(len % 2 == 0);
    assert_true(valid_utf8(e.message, len));
    assert_string_equal(e.code, "ELB.1002");
    check_render(&e, "r");

    /* Every alignment of 2-, 3- and 4-byte characters. */
    static const char *const units[] = {"\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80"};
    static const char *const prefixes[] = {"", "a", "ab", "abc"};
    int failed = 0;
    for (size_t u = 0; u < 3; u++) {
        for (size_t p = 0; p < 4; p++) {
            body = body_with_message("APIGW.0308", prefixes[p], units[u], 400);
            errmap_from_upstream(map, 429, body, strlen(body), &e);
            free(body);
            len = strlen(e.message);
            UNIT_EXPECT(failed, len < ERRMAP_MESSAGE_MAX && len >= ERRMAP_MESSAGE_MAX - 4,
                        "unit %zu prefix %zu: length %zu", u, p, len);
            UNIT_EXPECT(failed, valid_utf8(e.message, len), "unit %zu prefix %zu: invalid UTF-8 after truncation", u,
                        p);
            UNIT_EXPECT(failed, strncmp(e.message, prefixes[p], strlen(prefixes[p])) == 0,
                        "unit %zu prefix %zu: prefix lost", u, p);
        }
    }
    assert_int_equal(failed, 0);
}

static void test_long_code_utf8_truncation(void **state)
{
    const struct errmap *map = elb_map(state);
    struct client_error e;
    char code[400] = "";
    for (int i = 0; i < 100; i++)
        strcat(code, "\xe2\x82\xac");
    char *body = body_with_message(code, "", "x", 1);
    errmap_from_upstream(map, 400, body, strlen(body), &e);
    free(body);
    size_t len = strlen(e.code);
    assert_true(len < ERRMAP_CODE_MAX && len >= ERRMAP_CODE_MAX - 3);
    assert_true(valid_utf8(e.code, len));
    assert_string_equal(e.message, "x");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_documented_table),
        cmocka_unit_test(test_reasons),
        cmocka_unit_test(test_every_upstream_status_lands_in_table),
        cmocka_unit_test(test_out_of_range_statuses),
        cmocka_unit_test(test_specific_rows),
        cmocka_unit_test(test_body_length_is_honoured),
        cmocka_unit_test(test_errmap_for_status),
        cmocka_unit_test(test_faults),
        cmocka_unit_test(test_fault_names),
        cmocka_unit_test(test_empty_map_falls_back),
        cmocka_unit_test(test_render),
        cmocka_unit_test(test_render_invalid_utf8_from_upstream),
        cmocka_unit_test(test_client_error_set_truncates),
        cmocka_unit_test(test_long_message_utf8_truncation),
        cmocka_unit_test(test_long_code_utf8_truncation),
    };
    return cmocka_run_group_tests_name("errmap", tests, elb_setup, elb_teardown);
}
