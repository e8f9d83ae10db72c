/*
 * Unit tests for clientkeys (proxy/clientkeys.h is the contract): the verdict
 * of every client for every project and route of a three-client keys file,
 * '*' grants, the key a request's headers present, the hashing helper against
 * known SHA-256 vectors, reference counting across a reload, route names
 * checked against the shipped rules, and the example conf/keys.yaml.
 *
 * Broken keys files live in tests/unit/data/keys-bad/, one mistake each, the
 * expected diagnostics in the header ("# expect: LINE:COL: fragment"); a new
 * case is a new file plus its name in BAD_KEYS_FILES. Each must give exactly
 * as many diagnostics as it expects, and none may quote a key or a hash.
 *
 * Headers are built with libevent's own evhttp_add_header into a real
 * evkeyvalq, as evhttp hands them to the gateway.
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
#include <sys/queue.h>

#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "aksk.h"
#include "clientkeys.h"
#include "rules.h"
#include "yamlconf.h"
#include "unit_support.h"

#define BAD_KEYS_FILES(X)          \
    X("bad-name.yaml")             \
    X("bad-project-id.yaml")       \
    X("bad-route.yaml")            \
    X("client-not-mapping.yaml")   \
    X("clients-empty.yaml")        \
    X("clients-not-list.yaml")     \
    X("duplicate-hash.yaml")       \
    X("duplicate-name.yaml")       \
    X("empty.yaml")                \
    X("field-twice.yaml")          \
    X("hash-not-hex.yaml")         \
    X("hash-not-scalar.yaml")      \
    X("hash-short.yaml")           \
    X("missing-hash.yaml")         \
    X("missing-name.yaml")         \
    X("missing-projects.yaml")     \
    X("name-too-long.yaml")        \
    X("no-clients.yaml")           \
    X("not-a-mapping.yaml")        \
    X("plain-key-only.yaml")       \
    X("plain-key.yaml")            \
    X("project-twice.yaml")        \
    X("projects-empty.yaml")       \
    X("projects-not-list.yaml")    \
    X("route-star-mixed.yaml")     \
    X("routes-empty.yaml")         \
    X("star-mixed.yaml")           \
    X("unknown-key-client.yaml")   \
    X("unknown-key-top.yaml")      \
    X("access-key-no-secret.yaml") \
    X("secret-file-missing.yaml")  \
    X("yaml-syntax.yaml")

#define AS_NAME(f) f,
static const char *const bad_keys_files[] = {BAD_KEYS_FILES(AS_NAME)};
#define NBAD (sizeof(bad_keys_files) / sizeof(bad_keys_files[0]))

/* The keys of tests/unit/data/keys-matrix.yaml. */
#define KEY_ALPHA "test-key-alpha-4f1c2d9e"
#define KEY_BETA  "test-key-beta-8a7b6c5d"
#define KEY_GAMMA "test-key-gamma-1e2f3a4b"
#define KEY_NOONE "test-key-nobody-00000000"
#define P1        "11111111111111111111111111111111"
#define P2        "22222222222222222222222222222222"
#define P3        "33333333333333333333333333333333"

/* ------------------------------------------------------------- helpers */

static struct clientkeys *load_data(const char *rel)
{
    char path[4096];
    unit_data_path(path, sizeof(path), rel);
    struct conf_diag d;
    conf_diag_init(&d);
    struct clientkeys *ks = clientkeys_load(path, &d);
    if (!ks)
        unit_print_diags(&d);
    assert_non_null(ks);
    assert_int_equal(d.count, 0);
    conf_diag_free(&d);
    return ks;
}

static struct clientkeys *load_text(const char *text)
{
    struct conf_diag d;
    conf_diag_init(&d);
    struct clientkeys *ks = clientkeys_load_string("keys", text, &d);
    if (!ks)
        unit_print_diags(&d);
    assert_non_null(ks);
    conf_diag_free(&d);
    return ks;
}

static const char *verdict_name(enum clientkeys_verdict v)
{
    switch (v) {
    case CLIENTKEYS_ALLOWED: return "ALLOWED";
    case CLIENTKEYS_UNAUTHENTICATED: return "UNAUTHENTICATED";
    case CLIENTKEYS_FORBIDDEN: return "FORBIDDEN";
    }
    return "?";
}

static const char *cred_name(enum clientkeys_credential c)
{
    switch (c) {
    case CLIENTKEYS_CRED_PRESENT: return "PRESENT";
    case CLIENTKEYS_CRED_SIGNED: return "SIGNED";
    case CLIENTKEYS_CRED_NONE: return "NONE";
    case CLIENTKEYS_CRED_MALFORMED: return "MALFORMED";
    case CLIENTKEYS_CRED_CONFLICT: return "CONFLICT";
    }
    return "?";
}

/* ------------------------------------------------------------ verdicts */

/* What *who holds before a check, so that a check that leaves it alone shows. */
static const struct client not_set = {.name = "(not set)"};

static void test_verdict_matrix(void **state)
{
    /* keys-matrix.yaml: alpha {P1, P2} x {route-one}; beta * x {route-two};
     * gamma {P3} x * (no routes given). Every key x project x route, written
     * out rather than derived, plus a key nobody holds. */
    static const struct {
        const char *key, *project, *route;
        enum clientkeys_verdict want;
        const char *who;
    } rows[] = {
        {KEY_ALPHA, P1, "route-one", CLIENTKEYS_ALLOWED, "alpha"},
        {KEY_ALPHA, P1, "route-two", CLIENTKEYS_FORBIDDEN, "alpha"},
        {KEY_ALPHA, P2, "route-one", CLIENTKEYS_ALLOWED, "alpha"},
        {KEY_ALPHA, P2, "route-two", CLIENTKEYS_FORBIDDEN, "alpha"},
        {KEY_ALPHA, P3, "route-one", CLIENTKEYS_FORBIDDEN, "alpha"},
        {KEY_ALPHA, P3, "route-two", CLIENTKEYS_FORBIDDEN, "alpha"},
        {KEY_BETA, P1, "route-one", CLIENTKEYS_FORBIDDEN, "beta"},
        {KEY_BETA, P1, "route-two", CLIENTKEYS_ALLOWED, "beta"},
        {KEY_BETA, P2, "route-one", CLIENTKEYS_FORBIDDEN, "beta"},
        {KEY_BETA, P2, "route-two", CLIENTKEYS_ALLOWED, "beta"},
        {KEY_BETA, P3, "route-one", CLIENTKEYS_FORBIDDEN, "beta"},
        {KEY_BETA, P3, "route-two", CLIENTKEYS_ALLOWED, "beta"},
        {KEY_GAMMA, P1, "route-one", CLIENTKEYS_FORBIDDEN, "gamma"},
        {KEY_GAMMA, P1, "route-two", CLIENTKEYS_FORBIDDEN, "gamma"},
        {KEY_GAMMA, P2, "route-one", CLIENTKEYS_FORBIDDEN, "gamma"},
        {KEY_GAMMA, P2, "route-two", CLIENTKEYS_FORBIDDEN, "gamma"},
        {KEY_GAMMA, P3, "route-one", CLIENTKEYS_ALLOWED, "gamma"},
        {KEY_GAMMA, P3, "route-two", CLIENTKEYS_ALLOWED, "gamma"},
        {KEY_NOONE, P1, "route-one", CLIENTKEYS_UNAUTHENTICATED, NULL},
        {KEY_NOONE, P3, "route-two", CLIENTKEYS_UNAUTHENTICATED, NULL},
        /* Near misses of a real key are strangers too. */
        {"test-key-alpha-4f1c2d9", P1, "route-one", CLIENTKEYS_UNAUTHENTICATED, NULL},
        {"test-key-alpha-4f1c2d9e ", P1, "route-one", CLIENTKEYS_UNAUTHENTICATED, NULL},
        {"TEST-KEY-ALPHA-4F1C2D9E", P1, "route-one", CLIENTKEYS_UNAUTHENTICATED, NULL},
        {"", P1, "route-one", CLIENTKEYS_UNAUTHENTICATED, NULL},
        {NULL, P1, "route-one", CLIENTKEYS_UNAUTHENTICATED, NULL},
        /* Grants are exact: no prefix, no case folding. */
        {KEY_ALPHA, "1111111111111111111111111111111", "route-one", CLIENTKEYS_FORBIDDEN, "alpha"},
        {KEY_ALPHA, P1, "ROUTE-ONE", CLIENTKEYS_FORBIDDEN, "alpha"},
        {KEY_ALPHA, P1, "route-on", CLIENTKEYS_FORBIDDEN, "alpha"},
    };
    struct clientkeys *ks = load_data("keys-matrix.yaml");
    assert_int_equal(clientkeys_count(ks), 3);
    int failed = 0;
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        const struct client *who = &not_set; /* must be overwritten */
        enum clientkeys_verdict v = clientkeys_check(ks, rows[i].key, rows[i].project, rows[i].route, &who);
        const char *got_who = who ? who->name : NULL;
        int who_ok = rows[i].who ? (got_who && strcmp(got_who, rows[i].who) == 0) : got_who == NULL;
        UNIT_EXPECT(failed, v == rows[i].want && who_ok, "key '%s' project %s route %s: %s (%s), want %s (%s)",
                    rows[i].key ? rows[i].key : "(null)", rows[i].project, rows[i].route, verdict_name(v),
                    got_who ? got_who : "nobody", verdict_name(rows[i].want), rows[i].who ? rows[i].who : "nobody");
    }
    assert_int_equal(failed, 0);
    clientkeys_unref(ks);
}

static void test_star_grants(void **state)
{
    struct clientkeys *ks =
        load_text("clients:\n"
                  "  - name: everything\n"
                  "    key_sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\n"
                  "    projects: [\"*\"]\n"
                  "    routes: [\"*\"]\n"
                  "  - name: one-project\n"
                  "    key_sha256: ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n"
                  "    projects: [\"" P1 "\"]\n");
    const struct client *all = clientkeys_client(ks, 0);
    const struct client *one = clientkeys_client(ks, 1);
    assert_non_null(all);
    assert_non_null(one);
    assert_null(clientkeys_client(ks, 2));
    assert_true(all->all_projects && all->all_routes);
    assert_int_equal(all->nprojects, 0);
    assert_int_equal(all->nroutes, 0);
    assert_true(!one->all_projects && one->all_routes); /* no routes: every route */
    assert_int_equal(one->nprojects, 1);
    assert_string_equal(one->projects[0], P1);

    const struct client *who = NULL;
    /* "test" and "abc" are the keys of these two hashes. */
    assert_int_equal(clientkeys_check(ks, "test", P1, "elb-v1", &who), CLIENTKEYS_ALLOWED);
    assert_ptr_equal(who, all);
    assert_int_equal(clientkeys_check(ks, "test", "any-project-at-all", "any-rule", &who), CLIENTKEYS_ALLOWED);
    /* A route with no project or no rule name: only '*' grants it. */
    assert_int_equal(clientkeys_check(ks, "test", NULL, NULL, &who), CLIENTKEYS_ALLOWED);
    assert_int_equal(clientkeys_check(ks, "abc", P1, "whatever-rule", &who), CLIENTKEYS_ALLOWED);
    assert_ptr_equal(who, one);
    assert_int_equal(clientkeys_check(ks, "abc", P1, NULL, &who), CLIENTKEYS_ALLOWED);
    assert_int_equal(clientkeys_check(ks, "abc", NULL, "whatever-rule", &who), CLIENTKEYS_FORBIDDEN);
    assert_ptr_equal(who, one);
    assert_int_equal(clientkeys_check(ks, "abc", P2, "whatever-rule", &who), CLIENTKEYS_FORBIDDEN);
    /* `who` is optional, and no set at all lets nobody in. */
    assert_int_equal(clientkeys_check(ks, "abc", P1, "r", NULL), CLIENTKEYS_ALLOWED);
    assert_int_equal(clientkeys_check(NULL, "abc", P1, "r", &who), CLIENTKEYS_UNAUTHENTICATED);
    assert_null(who);
    clientkeys_unref(ks);
}

static void test_overlong_key_is_a_stranger(void **state)
{
    /* A key longer than CLIENTKEYS_KEY_MAX is refused before hashing, even
     * when a client's hash is of exactly that text (257 'k's here). */
    char key[CLIENTKEYS_KEY_MAX + 2];
    memset(key, 'k', sizeof(key) - 1);
    key[sizeof(key) - 1] = '\0';
    struct clientkeys *ks =
        load_text("clients:\n"
                  "  - name: too-long\n"
                  "    key_sha256: a5de0e3c93b4322bf1d2e6cc13119219d665142374de7f2b06bae237759c73e2\n"
                  "    projects: [\"*\"]\n");
    assert_int_equal(clientkeys_check(ks, key, P1, "r", NULL), CLIENTKEYS_UNAUTHENTICATED);
    char hex[65];
    assert_int_equal(clientkeys_hash_hex(key, hex), -1); /* the helper will not make one either */
    clientkeys_unref(ks);

    /* The longest allowed key works end to end. */
    key[CLIENTKEYS_KEY_MAX] = '\0';
    assert_int_equal(clientkeys_hash_hex(key, hex), 0);
    char text[512];
    snprintf(text, sizeof(text), "clients:\n  - name: long\n    key_sha256: %s\n    projects: [\"*\"]\n", hex);
    ks = load_text(text);
    assert_int_equal(clientkeys_check(ks, key, P1, "r", NULL), CLIENTKEYS_ALLOWED);
    clientkeys_unref(ks);
}

/* ------------------------------------------------------ header parsing */

static void test_presented_key(void **state)
{
    static const char long_key[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
                                   "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
                                   "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
                                   "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    char bearer_max[300], bearer_over[300];
    snprintf(bearer_max, sizeof(bearer_max), "Bearer %s", long_key);    /* 256 characters */
    snprintf(bearer_over, sizeof(bearer_over), "Bearer %sX", long_key); /* 257 */
    static const char hmac[] = "SDK-HMAC-SHA256 Access=AKIDEXAMPLE, SignedHeaders=host;x-sdk-date, Signature=abc";
    const struct {
        const char *headers[3][2]; /* name, value; NULL name ends them */
        enum clientkeys_credential want;
        const char *key;
    } rows[] = {
        {{{NULL, NULL}}, CLIENTKEYS_CRED_NONE, NULL},
        {{{"Accept", "application/json"}, {"Host", "jobgate"}}, CLIENTKEYS_CRED_NONE, NULL},
        /* Bearer: the scheme word in any case, one or more blanks. */
        {{{"Authorization", "Bearer k1"}}, CLIENTKEYS_CRED_PRESENT, "k1"},
        {{{"authorization", "bearer k1"}}, CLIENTKEYS_CRED_PRESENT, "k1"},
        {{{"AUTHORIZATION", "BEARER k1"}}, CLIENTKEYS_CRED_PRESENT, "k1"},
        {{{"Authorization", "bEaReR k1"}}, CLIENTKEYS_CRED_PRESENT, "k1"},
        {{{"Authorization", "Bearer     k1"}}, CLIENTKEYS_CRED_PRESENT, "k1"},
        {{{"Authorization", "Bearer\tk1"}}, CLIENTKEYS_CRED_PRESENT, "k1"},
        {{{"Authorization", "  Bearer k1"}}, CLIENTKEYS_CRED_PRESENT, "k1"},
        {{{"Authorization", "Bearer a.b-c_d~e+f/g=="}}, CLIENTKEYS_CRED_PRESENT, "a.b-c_d~e+f/g=="},
        {{{"Authorization", bearer_max}}, CLIENTKEYS_CRED_PRESENT, long_key},
        /* X-Api-Key. */
        {{{"X-Api-Key", "k2"}}, CLIENTKEYS_CRED_PRESENT, "k2"},
        {{{"x-api-key", "k2"}}, CLIENTKEYS_CRED_PRESENT, "k2"},
        {{{"X-Api-Key", "   k2"}}, CLIENTKEYS_CRED_PRESENT, "k2"},
        /* Other schemes and the cloud token are not client keys. */
        {{{"Authorization", "Basic dXNlcjpwYXNz"}}, CLIENTKEYS_CRED_NONE, NULL},
        /* The SDKs' signature: verified by clientkeys_check_signed. */
        {{{"Authorization", hmac}}, CLIENTKEYS_CRED_SIGNED, hmac},
        {{{"Authorization", "Bearerk1"}}, CLIENTKEYS_CRED_NONE, NULL},
        {{{"X-Auth-Token", "MIIcloud-token"}}, CLIENTKEYS_CRED_NONE, NULL},
        {{{"Authorization", hmac}, {"X-Api-Key", "k2"}}, CLIENTKEYS_CRED_CONFLICT, NULL},
        {{{"X-Auth-Token", "MIIcloud-token"}, {"Authorization", "Bearer k1"}}, CLIENTKEYS_CRED_PRESENT, "k1"},
        /* More than one key, even the same one twice: no guessing. */
        {{{"Authorization", "Bearer k1"}, {"X-Api-Key", "k2"}}, CLIENTKEYS_CRED_CONFLICT, NULL},
        {{{"Authorization", "Bearer k1"}, {"X-Api-Key", "k1"}}, CLIENTKEYS_CRED_CONFLICT, NULL},
        {{{"X-Api-Key", "k2"}, {"X-Api-Key", "k2"}}, CLIENTKEYS_CRED_CONFLICT, NULL},
        {{{"Authorization", "Bearer k1"}, {"Authorization", "Bearer k3"}}, CLIENTKEYS_CRED_CONFLICT, NULL},
        {{{"Authorization", "Bearer"}, {"X-Api-Key", "k2"}}, CLIENTKEYS_CRED_CONFLICT, NULL},
        /* Empty, blank-only, several words, too long, not ASCII. */
        {{{"Authorization", "Bearer"}}, CLIENTKEYS_CRED_MALFORMED, NULL},
        {{{"Authorization", "Bearer   "}}, CLIENTKEYS_CRED_MALFORMED, NULL},
        {{{"X-Api-Key", ""}}, CLIENTKEYS_CRED_MALFORMED, NULL},
        {{{"X-Api-Key", "  "}}, CLIENTKEYS_CRED_MALFORMED, NULL},
        {{{"Authorization", "Bearer k1 k2"}}, CLIENTKEYS_CRED_MALFORMED, NULL},
        {{{"Authorization", "Bearer k1 "}}, CLIENTKEYS_CRED_MALFORMED, NULL},
        {{{"X-Api-Key", "k 2"}}, CLIENTKEYS_CRED_MALFORMED, NULL},
        {{{"Authorization", bearer_over}}, CLIENTKEYS_CRED_MALFORMED, NULL},
        {{{"X-Api-Key", "cl\xc3\xa9"}}, CLIENTKEYS_CRED_MALFORMED, NULL},
        {{{"X-Api-Key", "k\x01"}}, CLIENTKEYS_CRED_MALFORMED, NULL},
    };
    int failed = 0;
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct evkeyvalq h;
        TAILQ_INIT(&h);
        for (size_t k = 0; k < 3 && rows[i].headers[k][0]; k++)
            assert_int_equal(evhttp_add_header(&h, rows[i].headers[k][0], rows[i].headers[k][1]), 0);
        const char *key = "unset";
        enum clientkeys_credential c = clientkeys_presented(&h, &key);
        int key_ok = rows[i].key ? (key && strcmp(key, rows[i].key) == 0) : key == NULL;
        /* No copy: the key is inside one of the header values. */
        int inside = !key;
        for (const struct evkeyval *kv = TAILQ_FIRST(&h); kv && key; kv = TAILQ_NEXT(kv, next))
            if (key >= kv->value && key < kv->value + strlen(kv->value))
                inside = 1;
        UNIT_EXPECT(failed, c == rows[i].want && key_ok && inside, "row %zu (%s: %.40s): %s '%.40s', want %s '%.40s'",
                    i, rows[i].headers[0][0] ? rows[i].headers[0][0] : "-",
                    rows[i].headers[0][1] ? rows[i].headers[0][1] : "-", cred_name(c), key ? key : "(null)",
                    cred_name(rows[i].want), rows[i].key ? rows[i].key : "(null)");
        evhttp_clear_headers(&h);
    }
    assert_int_equal(failed, 0);
}

static void test_credential_messages(void **state)
{
    /* Each 401 reason has its own sentence, naming both ways to send a key. */
    const char *none = clientkeys_credential_message(CLIENTKEYS_CRED_NONE);
    const char *bad = clientkeys_credential_message(CLIENTKEYS_CRED_MALFORMED);
    const char *two = clientkeys_credential_message(CLIENTKEYS_CRED_CONFLICT);
    assert_non_null(strstr(none, "Authorization: Bearer"));
    assert_non_null(strstr(none, "X-Api-Key"));
    assert_non_null(strstr(bad, "X-Api-Key"));
    assert_non_null(strstr(two, "send one credential"));
    assert_non_null(strstr(two, "SDK-HMAC-SHA256"));
    assert_true(strcmp(none, bad) != 0 && strcmp(bad, two) != 0 && strcmp(none, two) != 0);
}

static void test_headers_to_verdict(void **state)
{
    /* The path a request takes: its headers, then the check. */
    struct clientkeys *ks = load_data("keys-matrix.yaml");
    struct evkeyvalq h;
    TAILQ_INIT(&h);
    assert_int_equal(evhttp_add_header(&h, "X-Auth-Token", KEY_ALPHA), 0); /* a cloud token is no client key */
    const char *key = NULL;
    assert_int_equal(clientkeys_presented(&h, &key), CLIENTKEYS_CRED_NONE);
    assert_int_equal(clientkeys_check(ks, key, P1, "route-one", NULL), CLIENTKEYS_UNAUTHENTICATED);
    assert_int_equal(evhttp_add_header(&h, "Authorization", "bearer  " KEY_BETA), 0);
    assert_int_equal(clientkeys_presented(&h, &key), CLIENTKEYS_CRED_PRESENT);
    const struct client *who = NULL;
    assert_int_equal(clientkeys_check(ks, key, P3, "route-two", &who), CLIENTKEYS_ALLOWED);
    assert_string_equal(who->name, "beta");
    assert_int_equal(clientkeys_check(ks, key, P3, "route-one", &who), CLIENTKEYS_FORBIDDEN);
    evhttp_clear_headers(&h);
    clientkeys_unref(ks);
}

/* ------------------------------------------------------------- hashing */

static void test_hash_hex(void **state)
{
    /* FIPS 180-2 test vectors, and the hash of "test" from the keys file format. */
    static const struct {
        const char *key, *hex;
    } vectors[] = {
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
        {"test", "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"},
        {KEY_ALPHA, "97da402b7d4fba3e67ba12736a23e662d1a7656f27bf1786c381379326235823"},
    };
    int failed = 0;
    for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
        char out[65];
        memset(out, 'x', sizeof(out));
        int rc = clientkeys_hash_hex(vectors[i].key, out);
        UNIT_EXPECT(failed, rc == 0 && strcmp(out, vectors[i].hex) == 0, "'%s': rc %d '%.65s'", vectors[i].key, rc,
                    out);
    }
    assert_int_equal(failed, 0);

    /* A key that could never be presented gets no hash. */
    static const char *const refused[] = {"", "two words", "tab\tkey", "line\nbreak", "cl\xc3\xa9"};
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        char out[65] = "untouched";
        UNIT_EXPECT(failed, clientkeys_hash_hex(refused[i], out) == -1 && out[0] == '\0', "'%s' was hashed",
                    refused[i]);
    }
    char out[65] = "untouched";
    UNIT_EXPECT(failed, clientkeys_hash_hex(NULL, out) == -1 && out[0] == '\0', "%s was hashed", "NULL");
    assert_int_equal(failed, 0);
}

/* ------------------------------------------------ lifetime and reloads */

static void test_reload_keeps_the_set_in_flight(void **state)
{
    /* A request holds the set it started with; a reload swaps the pointer
     * and drops the gateway's reference. Run under ASan: a set freed early
     * or never freed fails the test. */
    struct clientkeys *running = load_data("keys-matrix.yaml");
    struct clientkeys *in_flight = clientkeys_ref(running);
    assert_ptr_equal(in_flight, running);

    struct clientkeys *reloaded =
        load_text("clients:\n"
                  "  - name: alpha\n"
                  "    key_sha256: 97da402b7d4fba3e67ba12736a23e662d1a7656f27bf1786c381379326235823\n"
                  "    projects: [\"" P3 "\"]\n");
    clientkeys_unref(running);
    running = reloaded;

    const struct client *who = NULL;
    assert_int_equal(clientkeys_check(in_flight, KEY_ALPHA, P1, "route-one", &who), CLIENTKEYS_ALLOWED);
    assert_string_equal(who->name, "alpha");
    assert_int_equal(clientkeys_check(in_flight, KEY_BETA, P1, "route-two", NULL), CLIENTKEYS_ALLOWED);
    assert_int_equal(clientkeys_check(running, KEY_ALPHA, P1, "route-one", NULL), CLIENTKEYS_FORBIDDEN);
    assert_int_equal(clientkeys_check(running, KEY_ALPHA, P3, "route-one", NULL), CLIENTKEYS_ALLOWED);
    assert_int_equal(clientkeys_check(running, KEY_BETA, P1, "route-two", NULL), CLIENTKEYS_UNAUTHENTICATED);
    clientkeys_unref(in_flight);
    clientkeys_free(running);
    clientkeys_unref(NULL);
}

/* -------------------------------------------------- routes and rules */

static struct ruleset *load_shipped_rules(void)
{
    char elb[4096], ecs[4096];
    unit_src_path(elb, sizeof(elb), "lua-free-rules/elb-v1.yaml");
    unit_src_path(ecs, sizeof(ecs), "lua-free-rules/ecs.yaml");
    char *files[] = {elb, ecs};
    struct conf_diag d;
    conf_diag_init(&d);
    struct ruleset *rs = ruleset_load(files, 2, &d);
    if (!rs)
        unit_print_diags(&d);
    assert_non_null(rs);
    conf_diag_free(&d);
    return rs;
}

static void test_routes_checked_against_rules(void **state)
{
    struct ruleset *rs = load_shipped_rules();
    struct clientkeys *ks =
        load_text("clients:\n"
                  "  - name: good\n"
                  "    key_sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\n"
                  "    projects: [\"*\"]\n"
                  "    routes: [\"elb-v1\", \"ecs\"]\n"
                  "  - name: typo\n"
                  "    key_sha256: ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n"
                  "    projects: [\"*\"]\n"
                  "    routes: [\"ecs\", \"elb-v1-job\"]\n"
                  "  - name: any\n"
                  "    key_sha256: 248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1\n"
                  "    projects: [\"*\"]\n");
    struct conf_diag d;
    conf_diag_init(&d);
    assert_int_equal(clientkeys_check_rules(ks, rs, &d), -1);
    if (d.count != 1)
        unit_print_diags(&d);
    assert_int_equal(d.count, 1);
    unit_assert_diag(&d, "keys:9:21: ", "client 'typo': no rule is named 'elb-v1-job'");
    conf_diag_free(&d);
    clientkeys_unref(ks);
    ruleset_unref(rs);
}

static void test_shipped_example_loads(void **state)
{
    /* conf/keys.yaml loads, names real shipped rules, and grants what its
     * comments say; its hashes are of no known key. */
    char path[4096];
    unit_src_path(path, sizeof(path), "conf/keys.yaml");
    struct conf_diag d;
    conf_diag_init(&d);
    struct clientkeys *ks = clientkeys_load(path, &d);
    if (!ks)
        unit_print_diags(&d);
    assert_non_null(ks);
    assert_int_equal(clientkeys_count(ks), 3);
    const struct client *ci = clientkeys_client(ks, 0);
    assert_string_equal(ci->name, "terraform-ci");
    assert_int_equal(ci->nprojects, 2);
    assert_int_equal(ci->nroutes, 2);
    assert_true(clientkeys_client(ks, 1)->all_routes);
    assert_true(clientkeys_client(ks, 2)->all_projects);
    assert_int_equal(clientkeys_check(ks, "test", "ff8080825ecc523f015ecd0a98f82f77", "elb-v1", NULL),
                     CLIENTKEYS_UNAUTHENTICATED);

    struct ruleset *rs;
    {
        static const char *const names[] = {"elb-v1", "ecs", "elb-v3", "vpc"};
        char paths[4][4096];
        char *list[4];
        for (size_t i = 0; i < 4; i++) {
            char rel[64];
            snprintf(rel, sizeof(rel), "lua-free-rules/%s.yaml", names[i]);
            unit_src_path(paths[i], sizeof(paths[i]), rel);
            list[i] = paths[i];
        }
        rs = ruleset_load(list, 4, &d);
    }
    if (!rs)
        unit_print_diags(&d);
    assert_non_null(rs);
    assert_int_equal(clientkeys_check_rules(ks, rs, &d), 0);
    assert_int_equal(d.count, 0);
    ruleset_unref(rs);
    clientkeys_free(ks);
    conf_diag_free(&d);
}

/* ------------------------------------------------- AK/SK clients (SDKs) */

/* A keys file in a fresh folder with client "sdk" signing with AK "JGAK1",
 * its SK in sk (mode `mode`). Writes the folder's path into `dir`. */
static void write_signed_keys(char dir[64], mode_t mode)
{
    char path[128];
    snprintf(dir, 64, "/tmp/jg-clientkeys-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/sk", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("sdk-secret-key-1\n", f);
    fclose(f);
    assert_int_equal(chmod(path, mode), 0);
    snprintf(path, sizeof(path), "%s/keys.yaml", dir);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("clients:\n"
          "  - name: sdk\n"
          "    access_key: JGAK1\n"
          "    secret_file: sk\n"
          "    projects: [\"p1\"]\n",
          f);
    fclose(f);
}

static void remove_signed_keys(const char *dir)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/sk", dir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/keys.yaml", dir);
    unlink(path);
    rmdir(dir);
}

static const char *header_of(void *arg, const char *name)
{
    return evhttp_find_header(arg, name);
}

static void test_signed_client(void **state)
{
    char dir[64], path[128], auth[512], err[128], date[AKSK_DATE_SIZE];
    struct conf_diag d;
    write_signed_keys(dir, 0600);
    snprintf(path, sizeof(path), "%s/keys.yaml", dir);
    conf_diag_init(&d);
    struct clientkeys *ks = clientkeys_load(path, &d);
    assert_non_null(ks);
    conf_diag_free(&d);

    time_t now = time(NULL);
    assert_int_equal(aksk_format_date(now, date), 0);
    struct aksk_request sign = {.method = "GET",
                                .url = "http://jobgate:8080/v1.0/p1/jobs/j1",
                                .ak = "JGAK1",
                                .sk = "sdk-secret-key-1",
                                .sdk_date = date,
                                .project_id = "p1"};
    assert_int_equal(aksk_sign(&sign, auth, sizeof(auth), err, sizeof(err)), 0);
    struct evkeyvalq h;
    TAILQ_INIT(&h);
    evhttp_add_header(&h, "Host", "jobgate:8080");
    evhttp_add_header(&h, "X-Sdk-Date", date);
    evhttp_add_header(&h, "X-Project-Id", "p1");
    evhttp_add_header(&h, "Authorization", auth);
    const char *presented = NULL;
    assert_int_equal(clientkeys_presented(&h, &presented), CLIENTKEYS_CRED_SIGNED);
    struct aksk_received r = {
        .method = "GET", .path = "/v1.0/p1/jobs/j1", .header = header_of, .header_arg = &h, .now = now};
    const struct client *who = NULL;
    enum clientkeys_signature why;
    assert_int_equal(clientkeys_check_signed(ks, presented, &r, "p1", "elb-v1", &who, &why), CLIENTKEYS_ALLOWED);
    assert_int_equal(why, CLIENTKEYS_SIG_OK);
    assert_string_equal(who->name, "sdk");
    /* Its grants apply. */
    assert_int_equal(clientkeys_check_signed(ks, presented, &r, "p2", "elb-v1", &who, &why), CLIENTKEYS_FORBIDDEN);
    /* Another path, a stale date, another AK: refused, and said why. */
    r.path = "/v1.0/p1/jobs/j2";
    assert_int_equal(clientkeys_check_signed(ks, presented, &r, "p1", "elb-v1", &who, &why),
                     CLIENTKEYS_UNAUTHENTICATED);
    assert_int_equal(why, CLIENTKEYS_SIG_MISMATCH);
    assert_null(who);
    assert_string_equal(clientkeys_signature_code(why), "JG.SIGNATURE_MISMATCH");
    r.path = "/v1.0/p1/jobs/j1";
    r.now = now + 16 * 60;
    assert_int_equal(clientkeys_check_signed(ks, presented, &r, "p1", "elb-v1", &who, &why),
                     CLIENTKEYS_UNAUTHENTICATED);
    assert_int_equal(why, CLIENTKEYS_SIG_EXPIRED);
    r.now = now;
    sign.ak = "JGAK2";
    assert_int_equal(aksk_sign(&sign, auth, sizeof(auth), err, sizeof(err)), 0);
    assert_int_equal(clientkeys_check_signed(ks, auth, &r, "p1", "elb-v1", &who, &why), CLIENTKEYS_UNAUTHENTICATED);
    assert_int_equal(why, CLIENTKEYS_SIG_UNKNOWN_KEY);
    /* An AK/SK client holds no API key: no key matches it. */
    assert_int_equal(clientkeys_check(ks, "sdk-secret-key-1", "p1", "elb-v1", NULL), CLIENTKEYS_UNAUTHENTICATED);
    evhttp_clear_headers(&h);
    clientkeys_unref(ks);
    remove_signed_keys(dir);
}

/* A secret file others may read is refused at load, never quoted. */
static void test_secret_file_mode(void **state)
{
    static const mode_t loose[] = {0640, 0604, 0660, 0644};
    for (size_t i = 0; i < sizeof(loose) / sizeof(loose[0]); i++) {
        char dir[64], path[128];
        struct conf_diag d;
        write_signed_keys(dir, loose[i]);
        snprintf(path, sizeof(path), "%s/keys.yaml", dir);
        conf_diag_init(&d);
        assert_null(clientkeys_load(path, &d));
        unit_assert_diag(&d, path, "readable by its owner only");
        for (size_t k = 0; k < d.count; k++)
            assert_null(strstr(d.lines[k], "sdk-secret-key-1"));
        conf_diag_free(&d);
        remove_signed_keys(dir);
    }
    char dir[64], path[128];
    struct conf_diag d;
    write_signed_keys(dir, 0400);
    snprintf(path, sizeof(path), "%s/keys.yaml", dir);
    conf_diag_init(&d);
    struct clientkeys *ks = clientkeys_load(path, &d);
    assert_non_null(ks);
    clientkeys_unref(ks);
    conf_diag_free(&d);
    remove_signed_keys(dir);
}

static void test_missing_file(void **state)
{
    struct conf_diag d;
    conf_diag_init(&d);
    assert_null(clientkeys_load("/nonexistent/keys.yaml", &d));
    unit_assert_diag(&d, "/nonexistent/keys.yaml: ", "cannot open");
    conf_diag_free(&d);
}

static void test_all_mistakes_reported_at_once(void **state)
{
    /* `jobgate -t` reports every mistake of every client, not the first. */
    struct conf_diag d;
    conf_diag_init(&d);
    struct clientkeys *ks = clientkeys_load_string("keys",
                                                   "clients:\n"
                                                   "  - name: a b\n"
                                                   "    key_sha256: 12\n"
                                                   "    projects: []\n"
                                                   "  - name: c\n"
                                                   "    key: hunter2\n"
                                                   "    projects: [\"*\"]\n"
                                                   "    routes: 7\n",
                                                   &d);
    assert_null(ks);
    if (d.count != 6)
        unit_print_diags(&d);
    assert_int_equal(d.count, 6);
    unit_assert_diag(&d, "keys:2:11: ", "'name' must be");
    unit_assert_diag(&d, "keys:3:17: ", "'key_sha256' must be 64 hex digits");
    unit_assert_diag(&d, "keys:4:15: ", "'projects' is empty");
    unit_assert_diag(&d, "keys:6:5: ", "store key_sha256, never the key");
    unit_assert_diag(&d, "keys:5:5: ", "client 'c' needs 'key_sha256'");
    unit_assert_diag(&d, "keys:8:13: ", "'routes' must be a list");
    for (size_t i = 0; i < d.count; i++)
        assert_null(strstr(d.lines[i], "hunter2"));
    conf_diag_free(&d);
}

/* ---------------------------------------------------- broken keys files */

/* Fragments of the secrets in the bad files (the plain keys, and a run of
 * digits shared by both hashes used there and their cut-down variants). */
static const char *const secret_fragments[] = {"s3cret", "7da402b7d4fba3e", "d3829a5ae9497445"};

/* Does `s` contain `part`, letters in either case? */
static int contains_nocase(const char *s, const char *part)
{
    size_t n = strlen(part);
    for (; *s; s++)
        if (strncasecmp(s, part, n) == 0)
            return 1;
    return 0;
}

/* The loader of unit_check_bad_file for data/keys-bad/: the file must be
 * refused with exactly as many diagnostics as its header expects, and none
 * of them may quote a key or a hash. */
static int load_bad_keys(const char *name, const char *path, struct conf_diag *d)
{
    conf_diag_init(d);
    struct clientkeys *ks = clientkeys_load(path, d);
    if (ks) {
        print_error("  %s loaded, want an error\n", name);
        clientkeys_unref(ks);
        return 1;
    }
    char *text = unit_read_file(path);
    assert_non_null(text);
    size_t expected = 0;
    for (const char *p = strstr(text, "\n# expect: "); p; p = strstr(p + 1, "\n# expect: "))
        expected++;
    free(text);
    int failed = 0;
    if (d->count != expected) {
        print_error("  %s: %zu diagnostics, its header expects %zu\n", name, d->count, expected);
        failed++;
    }
    for (size_t i = 0; i < d->count; i++)
        for (size_t k = 0; k < sizeof(secret_fragments) / sizeof(secret_fragments[0]); k++)
            if (contains_nocase(d->lines[i], secret_fragments[k])) {
                print_error("  %s: a diagnostic quotes a secret: %s\n", name, d->lines[i]);
                failed++;
            }
    return failed;
}

static void test_bad_keys_file(void **state)
{
    unit_check_bad_file("keys-bad", *state, load_bad_keys);
}

static void test_every_bad_file_is_listed(void **state)
{
    unit_check_folder_listed("keys-bad", bad_keys_files, NBAD, "BAD_KEYS_FILES");
}

#define AS_TEST(f) {"keys-bad/" f, test_bad_keys_file, NULL, NULL, (void *)(f)},

int main(void)
{
    /* One test a line, the per-file tests last. */
    /* clang-format off */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_verdict_matrix),
        cmocka_unit_test(test_star_grants),
        cmocka_unit_test(test_overlong_key_is_a_stranger),
        cmocka_unit_test(test_presented_key),
        cmocka_unit_test(test_credential_messages),
        cmocka_unit_test(test_headers_to_verdict),
        cmocka_unit_test(test_hash_hex),
        cmocka_unit_test(test_reload_keeps_the_set_in_flight),
        cmocka_unit_test(test_routes_checked_against_rules),
        cmocka_unit_test(test_shipped_example_loads),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_signed_client),
        cmocka_unit_test(test_secret_file_mode),
        cmocka_unit_test(test_all_mistakes_reported_at_once),
        cmocka_unit_test(test_every_bad_file_is_listed),
        BAD_KEYS_FILES(AS_TEST)
    };
    /* clang-format on */
    return cmocka_run_group_tests_name("clientkeys", tests, NULL, NULL);
}
