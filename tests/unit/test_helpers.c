/*
 * Unit tests for the small shared helpers: encoding.h (hex, UTF-8, JSON
 * string escaping), digest.h (SHA-256 and HMAC-SHA256 against published
 * test vectors), randbytes.h, statuses.h, and tokengrant_hash (SHA-256 of a
 * token, remembered). The expected values are the
 * standards' own (FIPS 180-2, RFC 4231, RFC 3629), not computed here.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "digest.h"
#include "encoding.h"
#include "randbytes.h"
#include "statuses.h"
#include "tokengrant.h"

/* ------------------------------------------------------------------ hex */

static void test_hex(void **state)
{
    char out[2 * 5 + 1];
    encoding_hex("\x00\x01\x7f\xab\xff", 5, out);
    assert_string_equal(out, "00017fabff");
    encoding_hex("", 0, out);
    assert_string_equal(out, "");
}

/* ---------------------------------------------------------------- UTF-8 */

static void test_utf8_len(void **state)
{
    static const struct {
        const char *bytes;
        size_t left; /* bytes that may be read */
        size_t want;
    } cases[] = {
        {"A", 1, 1},
        {"\x7f", 1, 1},
        {"A", 0, 0},                /* nothing to read */
        {"\xc3\xa9", 2, 2},         /* U+00E9 */
        {"\xc3\xa9", 1, 0},         /* cut short */
        {"\xc0\x80", 2, 0},         /* overlong NUL */
        {"\xc1\xbf", 2, 0},         /* overlong */
        {"\x80", 1, 0},             /* stray continuation byte */
        {"\xe2\x82\xac", 3, 3},     /* U+20AC */
        {"\xe0\x9f\xbf", 3, 0},     /* overlong */
        {"\xe0\xa0\x80", 3, 3},     /* U+0800, the first three-byte one */
        {"\xed\x9f\xbf", 3, 3},     /* U+D7FF */
        {"\xed\xa0\x80", 3, 0},     /* U+D800, a surrogate */
        {"\xe2\x82", 2, 0},         /* cut short */
        {"\xe2\x28\xa1", 3, 0},     /* bad continuation */
        {"\xf0\x9f\x98\x80", 4, 4}, /* U+1F600 */
        {"\xf0\x8f\xbf\xbf", 4, 0}, /* overlong */
        {"\xf4\x8f\xbf\xbf", 4, 4}, /* U+10FFFF */
        {"\xf4\x90\x80\x80", 4, 0}, /* past U+10FFFF */
        {"\xf5\x80\x80\x80", 4, 0}, /* no such lead byte */
        {"\xf0\x9f\x98", 3, 0},     /* cut short */
        {"\xf0\x9f\x98\x80", 3, 0}, /* cut short by `left` */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t got = encoding_utf8_len((const unsigned char *)cases[i].bytes, cases[i].left);
        if (got != cases[i].want)
            fail_msg("case %zu: %zu, want %zu", i, got, cases[i].want);
    }
}

/* ----------------------------------------------------------- JSON strings */

static void escaped(const char *in, size_t len, const char *want)
{
    char out[256];
    assert_true(ENCODING_JSON_MAX_PER_BYTE * len < sizeof(out));
    char *end = encoding_json_escape(out, in, len);
    assert_true((size_t)(end - out) <= ENCODING_JSON_MAX_PER_BYTE * len);
    *end = '\0';
    assert_string_equal(out, want);
}

static void test_json_escape(void **state)
{
    escaped("plain /path?x=1", 15, "plain /path?x=1");
    escaped("a\"b\\c", 5, "a\\\"b\\\\c");
    escaped("\n\r\t", 3, "\\n\\r\\t");
    escaped("\x01\x1f\x7f", 3, "\\u0001\\u001f\\u007f");
    escaped("x\0y", 3, "x\\u0000y"); /* the length counts, not a NUL */
    escaped("caf\xc3\xa9 \xe2\x82\xac", 9, "caf\xc3\xa9 \xe2\x82\xac");
    escaped("\xff", 1, "\xef\xbf\xbd");
    escaped("\xc3", 1, "\xef\xbf\xbd");                                 /* cut short */
    escaped("\xed\xa0\x80", 3, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"); /* each byte of a surrogate */
    /* The bound: every byte a control byte. */
    escaped("\x01\x01\x01\x01", 4, "\\u0001\\u0001\\u0001\\u0001");
}

/* --------------------------------------------------------------- digests */

static void test_sha256_vectors(void **state)
{
    char hex[DIGEST_SHA256_HEX_SIZE];
    /* FIPS 180-2, appendix B.1 and B.2; and the empty message. */
    assert_int_equal(digest_sha256_hex("abc", 3, hex), 0);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    assert_int_equal(digest_sha256_hex(two, strlen(two), hex), 0);
    assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    assert_int_equal(digest_sha256_hex(NULL, 0, hex), 0);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");

    unsigned char raw[DIGEST_SHA256_LEN];
    assert_int_equal(digest_sha256("abc", 3, raw), 0);
    assert_int_equal(raw[0], 0xba);
    assert_int_equal(raw[31], 0xad);
}

static void test_hmac_sha256_vectors(void **state)
{
    unsigned char mac[DIGEST_SHA256_LEN];
    char hex[DIGEST_SHA256_HEX_SIZE];
    /* RFC 4231, test case 2. */
    const char *data = "what do ya want for nothing?";
    assert_int_equal(digest_hmac_sha256("Jefe", 4, data, strlen(data), mac), 0);
    encoding_hex(mac, sizeof(mac), hex);
    assert_string_equal(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    /* RFC 4231, test case 6: a key longer than the block, hashed first. */
    unsigned char key[131];
    memset(key, 0xaa, sizeof(key));
    const char *big = "Test Using Larger Than Block-Size Key - Hash Key First";
    assert_int_equal(digest_hmac_sha256(key, sizeof(key), big, strlen(big), mac), 0);
    encoding_hex(mac, sizeof(mac), hex);
    assert_string_equal(hex, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
}

/* tokengrant_hash remembers the hashes of recent tokens: whatever it
 * remembers, each token gets its own SHA-256, even two tokens that share a
 * slot (same length, same last 32 bytes), asked in turn. */
static void test_token_hash_memo(void **state)
{
    struct tokengrant *t = tokengrant_new(10, 1000);
    assert_non_null(t);
    char got[TOKENGRANT_HASH_SIZE], want[TOKENGRANT_HASH_SIZE];
    for (int i = 0; i < 2; i++) {
        assert_int_equal(tokengrant_hash(t, "abc", got), 0);
        assert_string_equal(got, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
    char a[4000], b[4000];
    memset(a, 'x', sizeof(a) - 1);
    a[sizeof(a) - 1] = '\0';
    memcpy(b, a, sizeof(a));
    b[0] = 'y'; /* same length and tail: the same slot */
    for (int i = 0; i < 4; i++) {
        const char *tok = i % 2 ? b : a;
        assert_int_equal(tokengrant_hash(t, tok, got), 0);
        assert_int_equal(digest_sha256_hex(tok, strlen(tok), want), 0);
        assert_string_equal(got, want);
        assert_int_equal(tokengrant_hash(t, tok, got), 0); /* remembered */
        assert_string_equal(got, want);
    }
    char many[32];
    for (int i = 0; i < 300; i++) { /* more tokens than slots, then each again */
        snprintf(many, sizeof(many), "token-%d", i % 150);
        assert_int_equal(tokengrant_hash(t, many, got), 0);
        assert_int_equal(digest_sha256_hex(many, strlen(many), want), 0);
        assert_string_equal(got, want);
    }
    char *big = malloc(20000); /* longer than any remembered */
    assert_non_null(big);
    memset(big, 'z', 19999);
    big[19999] = '\0';
    assert_int_equal(tokengrant_hash(t, big, got), 0);
    assert_int_equal(digest_sha256_hex(big, 19999, want), 0);
    assert_string_equal(got, want);
    free(big);
    assert_int_equal(tokengrant_hash(NULL, "abc", got), 0);
    assert_string_equal(got, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    tokengrant_free(t);
}

/* ----------------------------------------------------------- randomness */

static void test_randbytes(void **state)
{
    /* Two draws of 32 bytes are equal with probability 2^-256; a fill of
     * more than getrandom's 256-byte atomic size comes back whole. */
    unsigned char a[32], b[32];
    assert_int_equal(randbytes_fill(a, sizeof(a)), 0);
    assert_int_equal(randbytes_fill(b, sizeof(b)), 0);
    assert_memory_not_equal(a, b, sizeof(a));
    unsigned char *big = calloc(1, 65536);
    assert_non_null(big);
    assert_int_equal(randbytes_fill(big, 65536), 0);
    size_t zeros = 0;
    for (size_t i = 65536 - 1024; i < 65536; i++) /* the tail was filled too */
        zeros += big[i] == 0;
    assert_true(zeros < 32);
    free(big);
    assert_int_equal(randbytes_fill(a, 0), 0);
}

/* ------------------------------------------------------- status table */

static void test_status_table(void **state)
{
    /* Ascending, distinct, each with a reason, and indexed in order. */
    assert_int_equal(STATUSES_COUNT, 15);
    for (size_t i = 0; i < STATUSES_COUNT; i++) {
        if (i > 0 && statuses_table[i] <= statuses_table[i - 1])
            fail_msg("row %zu (%d) out of order", i, statuses_table[i]);
        assert_int_equal(statuses_index(statuses_table[i]), i);
        assert_true(http_status_documented(statuses_table[i]));
        assert_string_not_equal(http_reason(statuses_table[i]), "Unknown");
    }
    assert_int_equal(statuses_index(429), STATUSES_COUNT);
    assert_int_equal(statuses_index(0), STATUSES_COUNT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hex),
        cmocka_unit_test(test_utf8_len),
        cmocka_unit_test(test_json_escape),
        cmocka_unit_test(test_sha256_vectors),
        cmocka_unit_test(test_hmac_sha256_vectors),
        cmocka_unit_test(test_token_hash_memo),
        cmocka_unit_test(test_randbytes),
        cmocka_unit_test(test_status_table),
    };
    return cmocka_run_group_tests_name("helpers", tests, NULL, NULL);
}
