/*
 * Unit tests for the cache key (proxy/cachekey.h is the contract): the base
 * key byte for byte, where it stops fitting, and the Redis suffixes.
 *
 * gateway.c's build_key formatted the key itself until cachekey_format took
 * it over. Its loop is kept below, verbatim, as the oracle of what is
 * between the braces (the Redis Cluster hash tag the key has carried
 * since): PREFIX{RULE:PARAMS...}, with the same refusals as build_key
 * gave, shifted by the braces.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "cachekey.h"

#define KEY_MAX 1400 /* gateway.c's key buffers */

/* build_key of proxy/gateway.c (commit 233598c), its arguments spelt out:
 * gw->key_prefix, rule->name, m->values and rule->route.nparams. */
static int build_key_oracle(const char *key_prefix, const char *rule_name, const char *const *values, size_t nparams,
                            char *out, size_t outlen)
{
    const char *pieces[2 + 8];
    size_t np = 0, used = 0;
    pieces[np++] = key_prefix;
    pieces[np++] = rule_name;
    for (size_t i = 0; i < nparams; i++)
        pieces[np++] = values[i];
    for (size_t i = 0; i < np; i++) { /* memcpy, not snprintf: this runs on every hit */
        size_t len = strlen(pieces[i]);
        if (used + len + 2 > outlen)
            return -1;
        if (i >= 2)
            out[used++] = ':';
        memcpy(out + used, pieces[i], len);
        used += len;
    }
    out[used] = '\0';
    return 0;
}

/* build_key's key with the hash tag: the prefix, then the rest in braces.
 * Refused where build_key (given the rule as "{" RULE) was refused, or
 * where the '}' finds no room. */
static int tagged_oracle(const char *key_prefix, const char *rule_name, const char *const *values, size_t nparams,
                         char *out, size_t outlen)
{
    char rule[KEY_MAX + 2];
    snprintf(rule, sizeof(rule), "{%s", rule_name);
    if (build_key_oracle(key_prefix, rule, values, nparams, out, outlen) < 0)
        return -1;
    size_t len = strlen(out);
    if (len + 2 > outlen)
        return -1;
    out[len] = '}';
    out[len + 1] = '\0';
    return 0;
}

static void assert_key(const char *prefix, const char *rule, const char *const *params, size_t nparams,
                       const char *expected)
{
    char out[KEY_MAX];
    assert_int_equal(cachekey_format(out, sizeof(out), prefix, rule, params, nparams), 0);
    assert_string_equal(out, expected);
}

static void test_examples(void **state)
{
    const char *const job[] = {"0123456789abcdef0123456789abcdef", "ff00ff00-1111-2222-3333-444455556666"};
    assert_key("jobgate:", "elb-v1", job, 2,
               "jobgate:{elb-v1:0123456789abcdef0123456789abcdef:ff00ff00-1111-2222-3333-444455556666}");
    assert_key("", "ecs", job, 1, "{ecs:0123456789abcdef0123456789abcdef}");
    assert_key("tenant-a/", "bms", job, 0, "tenant-a/{bms}"); /* the prefix carries its own separator */
    const char *const three[] = {"eu-west-0", "p1", "j1"};
    assert_key("jg:", "cce", three, 3, "jg:{cce:eu-west-0:p1:j1}");
    const char *const empty[] = {"", ""};
    assert_key("jobgate:", "evs", empty, 2, "jobgate:{evs::}");
}

/* Same bytes and same refusals as build_key with the tag, at every buffer
 * size around each key's length and at gateway.c's KEY_MAX. */
static void test_same_as_build_key(void **state)
{
    static char long_value[KEY_MAX];
    memset(long_value, 'a', sizeof(long_value) - 1);
    const char *const params[][8] = {
        {"p"},
        {"0123456789abcdef0123456789abcdef", "job-1"},
        {"a", "b", "c", "d", "e", "f", "g", "h"},
        {long_value + 20, "j"},
        {long_value + 1370},
    };
    const size_t nparams[] = {1, 2, 8, 2, 1};
    const char *const prefixes[] = {"jobgate:", "", "x"};
    const char *const rules[] = {"elb-v1", "vpc", ""};
    size_t cases = 0;
    for (size_t pi = 0; pi < sizeof(prefixes) / sizeof(prefixes[0]); pi++) {
        for (size_t ri = 0; ri < sizeof(rules) / sizeof(rules[0]); ri++) {
            for (size_t k = 0; k < sizeof(nparams) / sizeof(nparams[0]); k++) {
                for (size_t n = 0; n <= nparams[k]; n++) {
                    char want[KEY_MAX + 8];
                    int full = tagged_oracle(prefixes[pi], rules[ri], params[k], n, want, sizeof(want));
                    size_t len = full == 0 ? strlen(want) : KEY_MAX;
                    size_t sizes[] = {0, 1, len, len + 1, len + 2, len + 3, KEY_MAX};
                    for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++) {
                        size_t outlen = sizes[si] > KEY_MAX ? KEY_MAX : sizes[si];
                        char a[KEY_MAX], b[KEY_MAX];
                        memset(a, '#', sizeof(a));
                        memset(b, '#', sizeof(b));
                        int ra = tagged_oracle(prefixes[pi], rules[ri], params[k], n, a, outlen);
                        int rb = cachekey_format(b, outlen, prefixes[pi], rules[ri], params[k], n);
                        if (ra != rb)
                            fail_msg("prefix '%s' rule '%s' %zu params, outlen %zu: build_key %d, cachekey_format %d",
                                     prefixes[pi], rules[ri], n, outlen, ra, rb);
                        if (ra == 0 && strcmp(a, b) != 0)
                            fail_msg("prefix '%s' rule '%s' %zu params: '%s' != '%s'", prefixes[pi], rules[ri], n, a,
                                     b);
                        cases++;
                    }
                }
            }
        }
    }
    assert_true(cases > 300);
}

static void test_suffixes(void **state)
{
    assert_string_equal(cachekey_suffix(CACHEKEY_TERMINAL), ":t");
    assert_string_equal(cachekey_suffix(CACHEKEY_PENDING), ":p");
    assert_string_equal(cachekey_suffix(CACHEKEY_LEASE), ":l");
    assert_string_equal(cachekey_suffix(CACHEKEY_WAITERS), ":w");
    assert_string_equal(CACHEKEY_CHANNEL, "jobgate:answers");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_examples),
        cmocka_unit_test(test_same_as_build_key),
        cmocka_unit_test(test_suffixes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
