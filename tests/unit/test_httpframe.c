/*
 * proxy/httpframe.c: strict request framing. Each row is raw request bytes,
 * the verdict, the error, and for a good head its length and body length.
 * The smuggling shapes are those of the public request-smuggling write-ups
 * (CL.CL, CL.TE, TE.CL, TE.TE with obfuscations).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "httpframe.h"
#include "unit_support.h"

#define H "Host: jobgate\r\n"

struct frame_case {
    const char *what;
    const char *bytes;
    enum httpframe_verdict want;
    enum httpframe_error error;
    size_t head_len;      /* for HEAD_OK: 0 means the whole input */
    uint64_t content_len; /* for HEAD_OK */
};

static const struct httpframe_limits limits = {
    .max_head_bytes = 512, .allow_bare_lf = 0, .reserved = "X-Jobgate-Refused", .max_body_bytes = 65536};

static int run_cases(const struct frame_case *cases, size_t n, const struct httpframe_limits *lim)
{
    int failed = 0;
    for (size_t i = 0; i < n; i++) {
        const struct frame_case *c = &cases[i];
        size_t len = strlen(c->bytes);
        /* An exact-size copy: a read past the input is an ASan report. */
        char *buf = malloc(len ? len : 1);
        assert_non_null(buf);
        memcpy(buf, c->bytes, len);
        struct httpframe_head head;
        enum httpframe_error err;
        enum httpframe_verdict v = httpframe_check(buf, len, lim, &head, &err);
        free(buf);
        UNIT_EXPECT(failed, v == c->want && err == c->error, "%s: verdict %d error %s, want %d %s", c->what, (int)v,
                    httpframe_error_name(err), (int)c->want, httpframe_error_name(c->error));
        if (v == HTTPFRAME_HEAD_OK && c->want == HTTPFRAME_HEAD_OK) {
            size_t want_len = c->head_len ? c->head_len : len;
            UNIT_EXPECT(failed, head.head_len == want_len && head.content_length == c->content_len,
                        "%s: head %zu body %llu, want %zu %llu", c->what, head.head_len,
                        (unsigned long long)head.content_length, want_len, (unsigned long long)c->content_len);
        }
    }
    return failed;
}

#define N(a) (sizeof(a) / sizeof((a)[0]))

static void test_good_heads(void **state)
{
    (void)state;
    static const struct frame_case cases[] = {
        {"a plain GET", "GET /v1.0/p/jobs/j HTTP/1.1\r\n" H "\r\n", HTTPFRAME_HEAD_OK, HTTPFRAME_OK, 0, 0},
        {"HTTP/1.0 needs no Host", "GET / HTTP/1.0\r\n\r\n", HTTPFRAME_HEAD_OK, HTTPFRAME_OK, 0, 0},
        {"pipelined: only the first head", "GET /a HTTP/1.1\r\n" H "\r\nGET /b HTTP/1.1\r\n" H "\r\n",
         HTTPFRAME_HEAD_OK, HTTPFRAME_OK, 34, 0},
        {"a body announced", "POST /x HTTP/1.1\r\n" H "Content-Length: 5\r\n\r\nhello", HTTPFRAME_HEAD_OK, HTTPFRAME_OK,
         54, 5},
        {"empty lines before the request line", "\r\n\r\nGET / HTTP/1.1\r\n" H "\r\n", HTTPFRAME_HEAD_OK, HTTPFRAME_OK,
         0, 0},
        {"HTAB in a value", "GET / HTTP/1.1\r\n" H "X-A: a\tb\r\n\r\n", HTTPFRAME_HEAD_OK, HTTPFRAME_OK, 0, 0},
        {"UTF-8 bytes in a value (obs-text)", "GET / HTTP/1.1\r\n" H "X-A: caf\xc3\xa9\r\n\r\n", HTTPFRAME_HEAD_OK,
         HTTPFRAME_OK, 0, 0},
        {"an empty value", "GET / HTTP/1.1\r\n" H "X-A:\r\n\r\n", HTTPFRAME_HEAD_OK, HTTPFRAME_OK, 0, 0},
        {"Content-Length: 0", "GET / HTTP/1.1\r\n" H "Content-Length: 0\r\n\r\n", HTTPFRAME_HEAD_OK, HTTPFRAME_OK, 0,
         0},
        {"absolute-form target", "GET http://jobgate/v1.0/p/jobs/j HTTP/1.1\r\n" H "\r\n", HTTPFRAME_HEAD_OK,
         HTTPFRAME_OK, 0, 0},
    };
    assert_int_equal(run_cases(cases, N(cases), &limits), 0);
}

static void test_incomplete_heads(void **state)
{
    (void)state;
    static const struct frame_case cases[] = {
        {"nothing yet", "", HTTPFRAME_NEED_MORE, HTTPFRAME_OK, 0, 0},
        {"half a request line", "GET /v1.0/p/jo", HTTPFRAME_NEED_MORE, HTTPFRAME_OK, 0, 0},
        {"a CR not yet followed", "GET / HTTP/1.1\r", HTTPFRAME_NEED_MORE, HTTPFRAME_OK, 0, 0},
        {"fields, no empty line yet", "GET / HTTP/1.1\r\n" H, HTTPFRAME_NEED_MORE, HTTPFRAME_OK, 0, 0},
        {"the last CR", "GET / HTTP/1.1\r\n" H "\r", HTTPFRAME_NEED_MORE, HTTPFRAME_OK, 0, 0},
    };
    assert_int_equal(run_cases(cases, N(cases), &limits), 0);
}

static void test_smuggling_shapes(void **state)
{
    (void)state;
    static const struct frame_case cases[] = {
        /* CL.CL: two lengths, the front proxy takes one, evhttp the other. */
        {"CL.CL", "POST / HTTP/1.1\r\n" H "Content-Length: 0\r\nContent-Length: 44\r\n\r\n", HTTPFRAME_BAD,
         HTTPFRAME_DUPLICATE_CONTENT_LENGTH, 0, 0},
        {"CL.CL, same value", "POST / HTTP/1.1\r\n" H "Content-Length: 5\r\nContent-Length: 5\r\n\r\n", HTTPFRAME_BAD,
         HTTPFRAME_DUPLICATE_CONTENT_LENGTH, 0, 0},
        {"CL with a list", "POST / HTTP/1.1\r\n" H "Content-Length: 5, 5\r\n\r\n", HTTPFRAME_BAD,
         HTTPFRAME_BAD_CONTENT_LENGTH, 0, 0},
        {"CL signed", "POST / HTTP/1.1\r\n" H "Content-Length: +5\r\n\r\n", HTTPFRAME_BAD, HTTPFRAME_BAD_CONTENT_LENGTH,
         0, 0},
        {"CL hex", "POST / HTTP/1.1\r\n" H "Content-Length: 0x5\r\n\r\n", HTTPFRAME_BAD, HTTPFRAME_BAD_CONTENT_LENGTH,
         0, 0},
        {"CL empty", "POST / HTTP/1.1\r\n" H "Content-Length:\r\n\r\n", HTTPFRAME_BAD, HTTPFRAME_BAD_CONTENT_LENGTH, 0,
         0},
        {"CL huge", "POST / HTTP/1.1\r\n" H "Content-Length: 99999999999999999999\r\n\r\n", HTTPFRAME_BAD,
         HTTPFRAME_BAD_CONTENT_LENGTH, 0, 0},
        {"CL over the body bound", "POST / HTTP/1.1\r\n" H "Content-Length: 65537\r\n\r\n", HTTPFRAME_BAD,
         HTTPFRAME_BAD_CONTENT_LENGTH, 0, 0},
        /* CL.TE and TE.CL: both framings at once. */
        {"CL.TE", "POST / HTTP/1.1\r\n" H "Content-Length: 13\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nSMUGGLED",
         HTTPFRAME_BAD, HTTPFRAME_TRANSFER_ENCODING, 0, 0},
        {"TE.CL",
         "POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n",
         HTTPFRAME_BAD, HTTPFRAME_TRANSFER_ENCODING, 0, 0},
        /* TE.TE: obfuscated Transfer-Encoding that one side ignores. */
        {"TE.TE space before colon", "POST / HTTP/1.1\r\n" H "Transfer-Encoding : chunked\r\n\r\n", HTTPFRAME_BAD,
         HTTPFRAME_SPACE_BEFORE_COLON, 0, 0},
        {"TE.TE tab before colon", "POST / HTTP/1.1\r\n" H "Transfer-Encoding\t: chunked\r\n\r\n", HTTPFRAME_BAD,
         HTTPFRAME_SPACE_BEFORE_COLON, 0, 0},
        {"TE.TE xchunked", "POST / HTTP/1.1\r\n" H "Transfer-Encoding: xchunked\r\n\r\n", HTTPFRAME_BAD,
         HTTPFRAME_TRANSFER_ENCODING, 0, 0},
        {"TE.TE case", "POST / HTTP/1.1\r\n" H "transfer-encoding: chunked\r\n\r\n", HTTPFRAME_BAD,
         HTTPFRAME_TRANSFER_ENCODING, 0, 0},
        {"TE.TE obs-fold", "POST / HTTP/1.1\r\n" H "Transfer-Encoding:\r\n chunked\r\n\r\n", HTTPFRAME_BAD,
         HTTPFRAME_TRANSFER_ENCODING, 0, 0},
        {"TE.TE leading space on the name", "POST / HTTP/1.1\r\n" H " Transfer-Encoding: chunked\r\n\r\n",
         HTTPFRAME_BAD, HTTPFRAME_OBS_FOLD, 0, 0},
        {"TE.TE vertical tab", "POST / HTTP/1.1\r\n" H "Transfer-Encoding:\x0b chunked\r\n\r\n", HTTPFRAME_BAD,
         HTTPFRAME_BAD_FIELD_VALUE, 0, 0},
        {"CL with a space before the colon", "POST / HTTP/1.1\r\n" H "Content-Length : 5\r\n\r\n", HTTPFRAME_BAD,
         HTTPFRAME_SPACE_BEFORE_COLON, 0, 0},
        {"obs-fold", "GET / HTTP/1.1\r\n" H "X-A: a\r\n b\r\n\r\n", HTTPFRAME_BAD, HTTPFRAME_OBS_FOLD, 0, 0},
    };
    assert_int_equal(run_cases(cases, N(cases), &limits), 0);
}

static void test_bad_lines(void **state)
{
    (void)state;
    static const struct frame_case cases[] = {
        {"bare LF line ends", "GET / HTTP/1.1\n" H "\r\n", HTTPFRAME_BAD, HTTPFRAME_BARE_LF, 0, 0},
        {"bare LF on a field", "GET / HTTP/1.1\r\nHost: a\n\r\n", HTTPFRAME_BAD, HTTPFRAME_BARE_LF, 0, 0},
        {"bare LF as the empty line", "GET / HTTP/1.1\r\n" H "\n", HTTPFRAME_BAD, HTTPFRAME_BARE_LF, 0, 0},
        {"a bare LF before the request line", "\nGET / HTTP/1.1\r\n" H "\r\n", HTTPFRAME_BAD, HTTPFRAME_BARE_LF, 0, 0},
        {"HTTP/1.1 without Host", "GET / HTTP/1.1\r\n\r\n", HTTPFRAME_BAD, HTTPFRAME_NO_HOST, 0, 0},
        {"two Hosts", "GET / HTTP/1.1\r\n" H H "\r\n", HTTPFRAME_BAD, HTTPFRAME_DUPLICATE_HOST, 0, 0},
        {"HTTP/1.12", "GET / HTTP/1.12\r\n" H "\r\n", HTTPFRAME_BAD, HTTPFRAME_BAD_VERSION, 0, 0},
        {"HTTP/2.0", "GET / HTTP/2.0\r\n" H "\r\n", HTTPFRAME_BAD, HTTPFRAME_BAD_VERSION, 0, 0},
        {"lowercase version", "GET / http/1.1\r\n" H "\r\n", HTTPFRAME_BAD, HTTPFRAME_BAD_VERSION, 0, 0},
        {"HTTP/0.9 (no version)", "GET /\r\n\r\n", HTTPFRAME_BAD, HTTPFRAME_BAD_REQUEST_LINE, 0, 0},
        {"lowercase get", "get / HTTP/1.1\r\n" H "\r\n", HTTPFRAME_BAD, HTTPFRAME_BAD_METHOD, 0, 0},
        {"unknown method", "FROB / HTTP/1.1\r\n" H "\r\n", HTTPFRAME_BAD, HTTPFRAME_BAD_METHOD, 0, 0},
        {"method not a token", "G(T / HTTP/1.1\r\n" H "\r\n", HTTPFRAME_BAD, HTTPFRAME_BAD_METHOD, 0, 0},
        {"two spaces", "GET  / HTTP/1.1\r\n" H "\r\n", HTTPFRAME_BAD, HTTPFRAME_BAD_REQUEST_LINE, 0, 0},
        {"a space in the target", "GET /a b HTTP/1.1\r\n" H "\r\n", HTTPFRAME_BAD, HTTPFRAME_BAD_REQUEST_LINE, 0, 0},
        {"a tab in the target", "GET /a\tb HTTP/1.1\r\n" H "\r\n", HTTPFRAME_BAD, HTTPFRAME_BAD_TARGET, 0, 0},
        {"a raw LF in the target", "GET /a\nb HTTP/1.1\r\n" H "\r\n", HTTPFRAME_BAD, HTTPFRAME_BARE_LF, 0, 0},
        {"a high byte in the target", "GET /caf\xc3\xa9 HTTP/1.1\r\n" H "\r\n", HTTPFRAME_BAD, HTTPFRAME_BAD_TARGET, 0,
         0},
        {"a NUL in a value", "GET / HTTP/1.1\r\n" H "X-A: a\0b\r\n\r\n", HTTPFRAME_NEED_MORE, HTTPFRAME_OK, 0, 0},
        {"a CR inside a value", "GET / HTTP/1.1\r\n" H "X-A: a\rb\r\n\r\n", HTTPFRAME_BAD, HTTPFRAME_BAD_FIELD_VALUE, 0,
         0},
        {"DEL in a value", "GET / HTTP/1.1\r\n" H "X-A: a\x7f\r\n\r\n", HTTPFRAME_BAD, HTTPFRAME_BAD_FIELD_VALUE, 0, 0},
        {"no colon", "GET / HTTP/1.1\r\n" H "X-A\r\n\r\n", HTTPFRAME_BAD, HTTPFRAME_BAD_FIELD_NAME, 0, 0},
        {"empty name", "GET / HTTP/1.1\r\n" H ": a\r\n\r\n", HTTPFRAME_BAD, HTTPFRAME_BAD_FIELD_NAME, 0, 0},
        {"name not a token", "GET / HTTP/1.1\r\n" H "X(A): a\r\n\r\n", HTTPFRAME_BAD, HTTPFRAME_BAD_FIELD_NAME, 0, 0},
        {"jobgate's own marker", "GET / HTTP/1.1\r\n" H "x-jobgate-refused: 1\r\n\r\n", HTTPFRAME_BAD,
         HTTPFRAME_RESERVED_FIELD, 0, 0},
    };
    assert_int_equal(run_cases(cases, N(cases), &limits), 0);
}

/* NUL bytes need explicit lengths (strlen would stop at them). */
static void test_nul_in_value(void **state)
{
    (void)state;
    static const char req[] = "GET / HTTP/1.1\r\n" H "X-A: a\0b\r\n\r\n";
    struct httpframe_head head;
    enum httpframe_error err;
    assert_int_equal(httpframe_check(req, sizeof(req) - 1, &limits, &head, &err), HTTPFRAME_BAD);
    assert_int_equal(err, HTTPFRAME_BAD_FIELD_VALUE);
    static const char in_target[] = "GET /a\0b HTTP/1.1\r\n" H "\r\n";
    assert_int_equal(httpframe_check(in_target, sizeof(in_target) - 1, &limits, &head, &err), HTTPFRAME_BAD);
    assert_int_equal(err, HTTPFRAME_BAD_TARGET);
}

static void test_head_bound(void **state)
{
    (void)state;
    char big[1200];
    int n = snprintf(big, sizeof(big), "GET / HTTP/1.1\r\n" H "X-Pad: ");
    memset(big + n, 'a', sizeof(big) - (size_t)n);
    struct httpframe_head head;
    enum httpframe_error err;
    /* Incomplete, but already past the bound: refused now, not buffered on. */
    assert_int_equal(httpframe_check(big, sizeof(big), &limits, &head, &err), HTTPFRAME_BAD);
    assert_int_equal(err, HTTPFRAME_HEAD_TOO_LARGE);
    /* Within the bound and incomplete: wait. */
    assert_int_equal(httpframe_check(big, 400, &limits, &head, &err), HTTPFRAME_NEED_MORE);
    /* Complete but too large. */
    char whole[700];
    n = snprintf(whole, sizeof(whole), "GET / HTTP/1.1\r\n" H "X-Pad: ");
    memset(whole + n, 'a', sizeof(whole) - (size_t)n - 4);
    memcpy(whole + sizeof(whole) - 4, "\r\n\r\n", 4);
    assert_int_equal(httpframe_check(whole, sizeof(whole), &limits, &head, &err), HTTPFRAME_BAD);
    assert_int_equal(err, HTTPFRAME_HEAD_TOO_LARGE);
}

/* The largest head allowed (the bound plus the empty line's CRLF), fed one
 * byte at a time: no prefix is refused, since the whole is accepted (a
 * prefix of 1025 bytes was once refused although 1026 bytes made a head). */
static void test_head_bound_prefixes(void **state)
{
    (void)state;
    size_t size = limits.max_head_bytes + 2;
    char *whole = malloc(size);
    assert_non_null(whole);
    int n = snprintf(whole, size, "GET / HTTP/1.1\r\n" H "X-Pad: ");
    memset(whole + n, 'a', size - (size_t)n - 4);
    memcpy(whole + size - 4, "\r\n\r\n", 4);
    struct httpframe_head head;
    enum httpframe_error err;
    assert_int_equal(httpframe_check(whole, size, &limits, &head, &err), HTTPFRAME_HEAD_OK);
    assert_int_equal(head.head_len, size);
    for (size_t cut = 1; cut < size; cut++) {
        enum httpframe_verdict v = httpframe_check(whole, cut, &limits, &head, &err);
        if (v != HTTPFRAME_NEED_MORE)
            fail_msg("the first %zu of %zu bytes gave verdict %d (%s)", cut, size, (int)v, httpframe_error_name(err));
    }
    /* One byte more in the head is too large, whole or cut. */
    char *over = malloc(size + 1);
    assert_non_null(over);
    memcpy(over, whole, size - 4);
    memcpy(over + size - 4, "a\r\n\r\n", 5);
    assert_int_equal(httpframe_check(over, size + 1, &limits, &head, &err), HTTPFRAME_BAD);
    assert_int_equal(err, HTTPFRAME_HEAD_TOO_LARGE);
    assert_int_equal(httpframe_check(over, size, &limits, &head, &err), HTTPFRAME_BAD);
    assert_int_equal(err, HTTPFRAME_HEAD_TOO_LARGE);
    free(over);
    free(whole);
}

static void test_bare_lf_switch(void **state)
{
    (void)state;
    struct httpframe_limits lax = limits;
    lax.allow_bare_lf = 1;
    static const struct frame_case cases[] = {
        {"bare LF allowed", "GET / HTTP/1.1\nHost: a\n\n", HTTPFRAME_HEAD_OK, HTTPFRAME_OK, 0, 0},
        {"mixed allowed", "\nGET / HTTP/1.1\r\nHost: a\n\r\n", HTTPFRAME_HEAD_OK, HTTPFRAME_OK, 0, 0},
        {"still no Host", "GET / HTTP/1.1\n\n", HTTPFRAME_BAD, HTTPFRAME_NO_HOST, 0, 0},
    };
    assert_int_equal(run_cases(cases, N(cases), &lax), 0);
}

static void test_error_names(void **state)
{
    (void)state;
    for (int e = 0; e < HTTPFRAME_ERROR_COUNT; e++) {
        const char *name = httpframe_error_name((enum httpframe_error)e);
        assert_non_null(name);
        assert_true(strlen(name) > 0);
        for (int f = 0; f < e; f++)
            assert_string_not_equal(name, httpframe_error_name((enum httpframe_error)f));
    }
    assert_string_equal(httpframe_error_name(HTTPFRAME_ERROR_COUNT), "unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_heads),          cmocka_unit_test(test_incomplete_heads),
        cmocka_unit_test(test_smuggling_shapes),    cmocka_unit_test(test_bad_lines),
        cmocka_unit_test(test_nul_in_value),        cmocka_unit_test(test_head_bound),
        cmocka_unit_test(test_head_bound_prefixes), cmocka_unit_test(test_bare_lf_switch),
        cmocka_unit_test(test_error_names),
    };
    return cmocka_run_group_tests_name("httpframe", tests, NULL, NULL);
}
