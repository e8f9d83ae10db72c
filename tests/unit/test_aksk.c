/*
 * Unit tests for aksk (proxy/aksk.h is the contract): SDK-HMAC-SHA256
 * signing, step by step. The expected canonical requests are written out by
 * hand from docs/huawei-api.md (section 5, "AK/SK signing"), and the expected
 * signatures are either the SDK's public test vector or computed here from
 * those hand-written strings, independently of aksk.c's own code.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "aksk.h"
#include "unit_support.h"

#define EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define TEST_AK      "AccessKey"
#define TEST_SK      "SecretKey"
#define TEST_DATE    "20060102T150405Z"

static void hex(const unsigned char *in, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", in[i]);
}

/* The signature of `canonical` under `sk` and `date`, computed here. */
static void expected_signature(const char *canonical, const char *sk, const char *date, char out[65])
{
    unsigned char md[32];
    unsigned int md_len = 0;
    char md_hex[65];
    char to_sign[256];

    assert_int_equal(EVP_Digest(canonical, strlen(canonical), md, &md_len, EVP_sha256(), NULL), 1);
    hex(md, 32, md_hex);
    snprintf(to_sign, sizeof(to_sign), "SDK-HMAC-SHA256\n%s\n%s", date, md_hex);
    assert_non_null(HMAC(EVP_sha256(), sk, (int)strlen(sk), (unsigned char *)to_sign, strlen(to_sign), md, &md_len));
    hex(md, 32, out);
}

/* A request on `url` with the test key and date, host signed. */
static struct aksk_request request_for(const char *url)
{
    struct aksk_request r = {
        .method = "GET",
        .url = url,
        .ak = TEST_AK,
        .sk = TEST_SK,
        .sdk_date = TEST_DATE,
    };
    return r;
}

/* Sign `r`, which must succeed; fill `trace` (caller frees) and `auth`. */
static void sign_ok(const struct aksk_request *r, struct aksk_trace *trace, char auth[512])
{
    char err[256] = "";

    if (aksk_sign_traced(r, auth, 512, trace, err, sizeof(err)) != 0)
        fail_msg("signing %s failed: %s", r->url, err);
    assert_null(strstr(trace->canonical_request, r->sk));
    assert_null(strstr(trace->string_to_sign, r->sk));
}

/* The canonical request's URI (line 2) and query (line 3) for `url`. */
static void check_uri_and_query(const char *url, const char *want_uri, const char *want_query, int *failed)
{
    struct aksk_request r = request_for(url);
    struct aksk_trace t;
    char auth[512];
    char want[512];

    sign_ok(&r, &t, auth);
    snprintf(want, sizeof(want), "GET\n%s\n%s\n", want_uri, want_query);
    UNIT_EXPECT(*failed, strncmp(t.canonical_request, want, strlen(want)) == 0,
                "%s: the canonical request\n%s\n  does not start with\n%s", url, t.canonical_request, want);
    aksk_trace_free(&t);
}

static void test_public_vector(void **state)
{
    struct aksk_request r = request_for("https://example.huaweicloud.com/path?limit=1");
    struct aksk_trace t;
    char auth[512];

    r.flags = AKSK_OMIT_HOST; /* the SDK's vector signs x-sdk-date alone */
    sign_ok(&r, &t, auth);
    assert_string_equal(t.canonical_request, "GET\n/path/\nlimit=1\nx-sdk-date:20060102T150405Z\n\nx-sdk-date\n"
                                             "" EMPTY_SHA256);
    assert_string_equal(t.signed_headers, "x-sdk-date");
    assert_true(strncmp(t.string_to_sign, "SDK-HMAC-SHA256\n20060102T150405Z\n", 33) == 0);
    assert_int_equal(strlen(t.string_to_sign), 33 + 64);
    assert_string_equal(auth, "SDK-HMAC-SHA256 Access=AccessKey, SignedHeaders=x-sdk-date, "
                              "Signature=5a2ce64c865e0e6046321c6f3d5a77ba8413eeaf355c3166c03d58d02ac79624");
    aksk_trace_free(&t);

    /* aksk_sign gives the same value without a trace. */
    char again[512], err[128];
    assert_int_equal(aksk_sign(&r, again, sizeof(again), err, sizeof(err)), 0);
    assert_string_equal(again, auth);
}

static void test_format_date(void **state)
{
    char out[AKSK_DATE_SIZE];

    assert_int_equal(aksk_format_date(0, out), 0);
    assert_string_equal(out, "19700101T000000Z");
    assert_int_equal(aksk_format_date(1136214245, out), 0); /* 2006-01-02 15:04:05 UTC */
    assert_string_equal(out, "20060102T150405Z");
    assert_int_equal(aksk_format_date((time_t)253402300799, out), 0);
    assert_string_equal(out, "99991231T235959Z");
    assert_int_equal(aksk_format_date((time_t)253402300800, out), -1); /* year 10000 */
    assert_string_equal(out, "");
}

static void test_path_encoding(void **state)
{
    int failed = 0;

    /* Reserved and other bytes are escaped, unreserved ones kept. */
    check_uri_and_query("https://h.example/a-b_c.d~e/f!*'()$,;=:@+",
                        "/a-b_c.d~e/f%21%2A%27%28%29%24%2C%3B%3D%3A%40%2B/", "", &failed);
    /* Already encoded: decoded then encoded again, escapes uppercase. */
    check_uri_and_query("https://h.example/a%20b/%41%7e%2d", "/a%20b/A~-/", "", &failed);
    check_uri_and_query("https://h.example/x%2fy/%c3%a9", "/x%2Fy/%C3%A9/", "", &failed);
    /* "%2F" stays inside its segment: it does not split the path. */
    check_uri_and_query("https://h.example/v1/%2F/jobs", "/v1/%2F/jobs/", "", &failed);
    /* A percent sign itself, written as %25, stays one. */
    check_uri_and_query("https://h.example/100%25", "/100%25/", "", &failed);
    assert_int_equal(failed, 0);
}

static void test_trailing_slash(void **state)
{
    int failed = 0;

    check_uri_and_query("https://h.example/path", "/path/", "", &failed);
    check_uri_and_query("https://h.example/path/", "/path/", "", &failed);
    check_uri_and_query("https://h.example/", "/", "", &failed);
    check_uri_and_query("https://h.example", "/", "", &failed);
    check_uri_and_query("https://h.example/a//b", "/a//b/", "", &failed);
    check_uri_and_query("https://h.example/v1.0/p/jobs/j?x=1", "/v1.0/p/jobs/j/", "x=1", &failed);
    assert_int_equal(failed, 0);
}

static void test_query(void **state)
{
    int failed = 0;

    /* Sorted by key, then value; repeated keys kept; no '=' is an empty value. */
    check_uri_and_query("https://h.example/q?b=2&a=3&a=1&c&a=%32", "/q/", "a=1&a=2&a=3&b=2&c=", &failed);
    /* Keys and values re-encoded like path segments; '+' is a plus. */
    check_uri_and_query("https://h.example/q?k%20y=a+b&z=x%2fy%7E&e=%3D=", "/q/", "e=%3D%3D&k%20y=a%2Bb&z=x%2Fy~",
                        &failed);
    /* Empty pairs and an empty key are left out. */
    check_uri_and_query("https://h.example/q?&=v&&k=v&", "/q/", "k=v", &failed);
    /* Sorted on the decoded key: "a%21" is "a!" (0x21) < "a0". */
    check_uri_and_query("https://h.example/q?a0=1&a%21=2", "/q/", "a%21=2&a0=1", &failed);
    check_uri_and_query("https://h.example/q?", "/q/", "", &failed);
    assert_int_equal(failed, 0);
}

/* The canonical "host:" line for `url`. */
static void check_host(const char *url, const char *want_line, int *failed)
{
    struct aksk_request r = request_for(url);
    struct aksk_trace t;
    char auth[512];

    sign_ok(&r, &t, auth);
    UNIT_EXPECT(*failed, strstr(t.canonical_request, want_line) != NULL, "%s: no %s in %s", url, want_line,
                t.canonical_request);
    UNIT_EXPECT(*failed, strcmp(t.signed_headers, "host;x-sdk-date") == 0, "%s: signed headers %s", url,
                t.signed_headers);
    aksk_trace_free(&t);
}

static void test_host_port(void **state)
{
    int failed = 0;

    check_host("https://h.example:8443/x", "\nhost:h.example:8443\n", &failed);
    check_host("https://h.example:443/x", "\nhost:h.example\nx-sdk-date", &failed);
    check_host("https://h.example/x", "\nhost:h.example\nx-sdk-date", &failed);
    check_host("http://127.0.0.1:80/x", "\nhost:127.0.0.1\nx-sdk-date", &failed);
    check_host("http://127.0.0.1:443/x", "\nhost:127.0.0.1:443\n", &failed);
    check_host("https://127.0.0.1:80/x", "\nhost:127.0.0.1:80\n", &failed);
    check_host("http://[::1]:9090/x", "\nhost:[::1]:9090\n", &failed);
    assert_int_equal(failed, 0);
}

static void test_full_request(void **state)
{
    static const struct aksk_header extra[] = {
        {"Content-Type", "  application/json  "},
        {"X-Request-Id", "abc"},
    };
    struct aksk_request r = request_for("https://vpc.example:8443/v1/p1/jobs/j%201?b=2&a=1");
    const char *canonical = "POST\n/v1/p1/jobs/j%201/\na=1&b=2\n"
                            "content-type:application/json\n"
                            "host:vpc.example:8443\n"
                            "x-project-id:p1\n"
                            "x-request-id:abc\n"
                            "x-sdk-date:20060102T150405Z\n"
                            "\n"
                            "content-type;host;x-project-id;x-request-id;x-sdk-date\n"
                            /* sha256("{}") */
                            "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
    struct aksk_trace t;
    char auth[512], want[512], signature[65];

    r.method = "POST";
    r.project_id = "p1";
    r.headers = extra;
    r.header_count = 2;
    r.body = "{}";
    r.body_len = 2;
    sign_ok(&r, &t, auth);
    assert_string_equal(t.canonical_request, canonical);
    assert_string_equal(t.signed_headers, "content-type;host;x-project-id;x-request-id;x-sdk-date");
    expected_signature(canonical, TEST_SK, TEST_DATE, signature);
    snprintf(want, sizeof(want),
             "SDK-HMAC-SHA256 Access=AccessKey, SignedHeaders=content-type;host;x-project-id;x-request-id;"
             "x-sdk-date, Signature=%s",
             signature);
    assert_string_equal(auth, want);
    aksk_trace_free(&t);

    /* Another SK, another signature; the SK shows nowhere. */
    r.sk = "AnotherSecret";
    sign_ok(&r, &t, auth);
    assert_null(strstr(auth, want + strlen(want) - 64));
    assert_null(strstr(auth, "AnotherSecret"));
    aksk_trace_free(&t);
}

static void test_project_id_signed(void **state)
{
    struct aksk_request r = request_for("https://ecs.example/v1/0123/jobs/j");
    struct aksk_trace t;
    char auth[512];

    r.project_id = "0123";
    sign_ok(&r, &t, auth);
    assert_string_equal(t.signed_headers, "host;x-project-id;x-sdk-date");
    assert_non_null(strstr(t.canonical_request, "\nhost:ecs.example\nx-project-id:0123\nx-sdk-date:" TEST_DATE
                                                "\n\nhost;x-project-id;x-sdk-date\n"));
    assert_non_null(strstr(auth, "SignedHeaders=host;x-project-id;x-sdk-date, Signature="));
    aksk_trace_free(&t);
}

/* Each row a request aksk_sign must refuse; the message never shows the SK. */
static void test_refused(void **state)
{
    static const struct aksk_header dup[] = {{"X-A", "1"}, {"x-a", "2"}};
    static const struct aksk_header managed[] = {{"Host", "evil.example"}};
    static const struct aksk_header crlf[] = {{"X-A", "1\r\nX-Injected: 1"}};
    static const struct aksk_header badname[] = {{"X A", "1"}};
    struct row {
        const char *what;
        struct aksk_request r;
    } rows[] = {
        {"not a URL", request_for("not a url")},
        {"relative", request_for("/v1/jobs")},
        {"ftp scheme", request_for("ftp://h.example/x")},
        {"user info", request_for("https://user:pass@h.example/x")},
        {"port out of range", request_for("https://h.example:99999/x")},
        {"empty host", request_for("https://")},
        {"space in path", request_for("https://h.example/a b")},
        {"bad escape in path", request_for("https://h.example/a%zz")},
        {"short escape in path", request_for("https://h.example/a%4")},
        {"bad escape in query", request_for("https://h.example/a?k=%G1")},
        {"no URL", request_for(NULL)},
    };
    size_t nrows = sizeof(rows) / sizeof(rows[0]);
    struct row more[] = {
        {"lowercase method", request_for("https://h.example/x")},
        {"empty method", request_for("https://h.example/x")},
        {"bad date", request_for("https://h.example/x")},
        {"no date", request_for("https://h.example/x")},
        {"comma in AK", request_for("https://h.example/x")},
        {"empty SK", request_for("https://h.example/x")},
        {"repeated header", request_for("https://h.example/x")},
        {"managed header", request_for("https://h.example/x")},
        {"CRLF in value", request_for("https://h.example/x")},
        {"bad header name", request_for("https://h.example/x")},
        {"empty project", request_for("https://h.example/x")},
    };
    int failed = 0;

    more[0].r.method = "get";
    more[1].r.method = "";
    more[2].r.sdk_date = "2006-01-02T15:04:05Z";
    more[3].r.sdk_date = NULL;
    more[4].r.ak = "Access,Key";
    more[5].r.sk = "";
    more[6].r.headers = dup;
    more[6].r.header_count = 2;
    more[7].r.headers = managed;
    more[7].r.header_count = 1;
    more[8].r.headers = crlf;
    more[8].r.header_count = 1;
    more[9].r.headers = badname;
    more[9].r.header_count = 1;
    more[10].r.project_id = "";

    for (size_t i = 0; i < nrows + sizeof(more) / sizeof(more[0]); i++) {
        const struct row *row = i < nrows ? &rows[i] : &more[i - nrows];
        struct aksk_trace t;
        char auth[512] = "stale";
        char err[256] = "";
        int rc = aksk_sign_traced(&row->r, auth, sizeof(auth), &t, err, sizeof(err));

        UNIT_EXPECT(failed, rc == -1, "%s: accepted (%s)", row->what, auth);
        UNIT_EXPECT(failed, auth[0] == '\0', "%s: output left %s", row->what, auth);
        UNIT_EXPECT(failed, err[0] != '\0', "%s: no message", row->what);
        UNIT_EXPECT(failed, row->r.sk == NULL || row->r.sk[0] == '\0' || strstr(err, row->r.sk) == NULL,
                    "%s: message shows the SK", row->what);
        UNIT_EXPECT(failed, t.canonical_request == NULL && t.string_to_sign == NULL, "%s: trace filled", row->what);
        if (rc == 0)
            aksk_trace_free(&t);
    }
    assert_int_equal(failed, 0);
}

static void test_small_buffer(void **state)
{
    struct aksk_request r = request_for("https://example.huaweicloud.com/path?limit=1");
    char auth[512], small[512];
    char err[256];
    size_t need;

    assert_int_equal(aksk_sign(&r, auth, sizeof(auth), err, sizeof(err)), 0);
    need = strlen(auth) + 1;
    /* Exactly enough fits; one byte less is refused with nothing written. */
    assert_int_equal(aksk_sign(&r, small, need, err, sizeof(err)), 0);
    assert_string_equal(small, auth);
    memset(small, 'x', sizeof(small));
    assert_int_equal(aksk_sign(&r, small, need - 1, err, sizeof(err)), -1);
    assert_string_equal(small, "");
    assert_non_null(strstr(err, "bytes"));
    assert_null(strstr(err, TEST_SK));
    assert_int_equal(aksk_sign(&r, small, 1, err, sizeof(err)), -1);
    assert_int_equal(aksk_sign(&r, small, 0, err, sizeof(err)), -1);
    assert_int_equal(small[0], '\0');
}

/* ------------------------------------------------------------- verifying */

/* The received headers of a request, by lowercase name (aksk_received.header). */
struct received {
    const char *names[8];
    const char *values[8];
};

static const char *received_header(void *arg, const char *name)
{
    const struct received *h = arg;
    for (size_t i = 0; i < 8 && h->names[i]; i++)
        if (strcasecmp(h->names[i], name) == 0)
            return h->values[i];
    return NULL;
}

/* test_full_request's request, as a server receives it (values untrimmed). */
static struct received full_headers = {
    {"Host", "Content-Type", "X-Project-Id", "X-Request-Id", "X-Sdk-Date", "Accept", NULL},
    {"vpc.example:8443", "  application/json  ", "p1", "abc", TEST_DATE, "*/*", NULL},
};

static struct aksk_received full_received(struct received *h, const char *body, time_t now)
{
    return (struct aksk_received){.method = "POST",
                                  .path = "/v1/p1/jobs/j%201",
                                  .query = "b=2&a=1",
                                  .header = received_header,
                                  .header_arg = h,
                                  .body = body,
                                  .body_len = strlen(body),
                                  .now = now};
}

/* The Authorization aksk_sign makes for test_full_request's request. */
static void full_authorization(const char *sk, char auth[512])
{
    static const struct aksk_header extra[] = {{"Content-Type", "  application/json  "}, {"X-Request-Id", "abc"}};
    struct aksk_request r = request_for("https://vpc.example:8443/v1/p1/jobs/j%201?b=2&a=1");
    char err[128];
    r.method = "POST";
    r.project_id = "p1";
    r.headers = extra;
    r.header_count = 2;
    r.body = "{}";
    r.body_len = 2;
    r.sk = sk;
    assert_int_equal(aksk_sign(&r, auth, 512, err, sizeof(err)), 0);
}

static enum aksk_verdict verify_text(const char *authorization, const struct aksk_received *r, const char *sk)
{
    struct aksk_presented p;
    if (aksk_presented_parse(authorization, &p) != 0)
        return AKSK_MALFORMED;
    enum aksk_verdict v = aksk_verify(&p, r, sk, strlen(sk));
    aksk_presented_free(&p);
    return v;
}

static void test_verify(void **state)
{
    const time_t signed_at = 1136214245; /* 20060102T150405Z */
    char auth[512], other[512];
    full_authorization(TEST_SK, auth);
    struct received h = full_headers;
    struct aksk_received r = full_received(&h, "{}", signed_at + 60);

    assert_int_equal(verify_text(auth, &r, TEST_SK), AKSK_VERIFIED);
    /* Within 15 minutes either way, and not a second more. */
    r.now = signed_at + AKSK_MAX_SKEW_S;
    assert_int_equal(verify_text(auth, &r, TEST_SK), AKSK_VERIFIED);
    r.now = signed_at - AKSK_MAX_SKEW_S - 1;
    assert_int_equal(verify_text(auth, &r, TEST_SK), AKSK_EXPIRED);
    r.now = signed_at + AKSK_MAX_SKEW_S + 1;
    assert_int_equal(verify_text(auth, &r, TEST_SK), AKSK_EXPIRED);
    r.now = signed_at;

    /* Another SK; one body byte; the method; the path; the query; a signed header's value. */
    assert_int_equal(verify_text(auth, &r, "SecretKez"), AKSK_MISMATCH);
    full_authorization("SecretKez", other);
    assert_int_equal(verify_text(other, &r, TEST_SK), AKSK_MISMATCH);
    struct aksk_received t = full_received(&h, "{ }", signed_at);
    assert_int_equal(verify_text(auth, &t, TEST_SK), AKSK_MISMATCH);
    t = r;
    t.method = "PUT";
    assert_int_equal(verify_text(auth, &t, TEST_SK), AKSK_MISMATCH);
    t = r;
    t.path = "/v1/p2/jobs/j%201";
    assert_int_equal(verify_text(auth, &t, TEST_SK), AKSK_MISMATCH);
    t = r;
    t.query = "b=2&a=2";
    assert_int_equal(verify_text(auth, &t, TEST_SK), AKSK_MISMATCH);
    struct received h2 = full_headers;
    h2.values[0] = "vpc.example:8444"; /* Host is signed */
    t = full_received(&h2, "{}", signed_at);
    assert_int_equal(verify_text(auth, &t, TEST_SK), AKSK_MISMATCH);
    h2 = full_headers;
    h2.values[5] = "text/plain"; /* Accept is not */
    t = full_received(&h2, "{}", signed_at);
    assert_int_equal(verify_text(auth, &t, TEST_SK), AKSK_VERIFIED);
    h2 = full_headers;
    h2.names[3] = "X-Other"; /* a signed header missing */
    t = full_received(&h2, "{}", signed_at);
    assert_int_equal(verify_text(auth, &t, TEST_SK), AKSK_MALFORMED);
    h2 = full_headers;
    h2.names[4] = "X-Other"; /* no X-Sdk-Date */
    t = full_received(&h2, "{}", signed_at);
    assert_int_equal(verify_text(auth, &t, TEST_SK), AKSK_EXPIRED);

    /* The public vector signs x-sdk-date alone: the cloud wants host signed too. */
    struct received v = {{"X-Sdk-Date", "Host", NULL}, {TEST_DATE, "example.huaweicloud.com", NULL}};
    struct aksk_received vr = {.method = "GET",
                               .path = "/path",
                               .query = "limit=1",
                               .header = received_header,
                               .header_arg = &v,
                               .now = signed_at};
    assert_int_equal(verify_text("SDK-HMAC-SHA256 Access=AccessKey, SignedHeaders=x-sdk-date, "
                                 "Signature=5a2ce64c865e0e6046321c6f3d5a77ba8413eeaf355c3166c03d58d02ac79624",
                                 &vr, TEST_SK),
                     AKSK_MALFORMED);

    /* SignedHeaders unsorted, uppercase, or repeated. */
    char bad[600];
    const char *sig = strstr(auth, "Signature=");
    static const char *const lists[] = {"host;content-type;x-project-id;x-request-id;x-sdk-date",
                                        "Content-type;host;x-project-id;x-request-id;x-sdk-date",
                                        "content-type;host;host;x-project-id;x-request-id;x-sdk-date",
                                        "content-type;;host;x-sdk-date"};
    for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++) {
        snprintf(bad, sizeof(bad), "SDK-HMAC-SHA256 Access=AccessKey, SignedHeaders=%s, %s", lists[i], sig);
        assert_int_equal(verify_text(bad, &r, TEST_SK), AKSK_MALFORMED);
    }
}

static void test_presented_parse(void **state)
{
    struct aksk_presented p;
    assert_int_equal(
        aksk_presented_parse("SDK-HMAC-SHA256 Access=AK1, SignedHeaders=host;x-sdk-date, Signature=ab", &p), 0);
    assert_string_equal(p.access, "AK1");
    assert_string_equal(p.signed_headers, "host;x-sdk-date");
    assert_string_equal(p.signature, "ab");
    aksk_presented_free(&p);
    assert_int_equal(aksk_presented_parse("SDK-HMAC-SHA256 Signature=ab,SignedHeaders=host,Access=AK1", &p), 0);
    aksk_presented_free(&p);
    static const char *const bad[] = {
        NULL,
        "",
        "Bearer x",
        "sdk-hmac-sha256 Access=AK1, SignedHeaders=host, Signature=ab",
        "SDK-HMAC-SHA256 Access=AK1, SignedHeaders=host",
        "SDK-HMAC-SHA256 Access=AK1, SignedHeaders=host, Signature=ab, Signature=ab",
        "SDK-HMAC-SHA256 Access=, SignedHeaders=host, Signature=ab",
        "SDK-HMAC-SHA256 Access=AK1, SignedHeaders=host, Signature=ab, Extra=1",
        "SDK-HMAC-SHA256 Access=AK1, SignedHeaders=host, Signature="
        "0123456789012345678901234567890123456789012345678901234567890123456789",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(aksk_presented_parse(bad[i], &p), -1);
        assert_null(p.signed_headers);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_public_vector), cmocka_unit_test(test_format_date),
        cmocka_unit_test(test_path_encoding), cmocka_unit_test(test_trailing_slash),
        cmocka_unit_test(test_query),         cmocka_unit_test(test_host_port),
        cmocka_unit_test(test_full_request),  cmocka_unit_test(test_project_id_signed),
        cmocka_unit_test(test_refused),       cmocka_unit_test(test_small_buffer),
        cmocka_unit_test(test_verify),        cmocka_unit_test(test_presented_parse),
    };
    return cmocka_run_group_tests_name("aksk", tests, NULL, NULL);
}
