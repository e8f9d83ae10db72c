/*
 * Unit tests for the Redis URL (cache_redis_url_check in proxy/cache.h):
 * every form jobgate accepts (redis://, sentinel://, cluster://, unix:) and, for each
 * mistake, the message the operator reads. No Redis is needed: the URL is
 * checked before anything connects.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "cache.h"

static void assert_accepted(const char *url)
{
    char err[256] = "";
    if (cache_redis_url_check(url, err, sizeof(err)) != 0)
        fail_msg("'%s' refused: %s", url, err);
}

/* Refused, with a message holding `fragment`. */
static void assert_refused(const char *url, const char *fragment)
{
    char err[256] = "";
    if (cache_redis_url_check(url, err, sizeof(err)) == 0)
        fail_msg("'%s' accepted", url);
    if (!strstr(err, fragment))
        fail_msg("'%s': message '%s' lacks '%s'", url, err, fragment);
}

static void test_redis_forms(void **state)
{
    assert_accepted("redis://127.0.0.1");
    assert_accepted("redis://127.0.0.1:6379");
    assert_accepted("redis://127.0.0.1:6379/");
    assert_accepted("redis://127.0.0.1:6379/15");
    assert_accepted("redis://localhost/2");
    assert_accepted("redis://[::1]:6380/1");
    assert_accepted("unix:/run/redis/redis.sock");
    assert_accepted("unix:///run/redis/redis.sock");
    assert_refused("redis://", "bad host");
    assert_refused("redis://:6379", "bad host");
    assert_refused("redis://127.0.0.1:0", "bad port");
    assert_refused("redis://127.0.0.1:65536", "bad port");
    assert_refused("redis://127.0.0.1:port", "bad port");
    assert_refused("redis://127.0.0.1:6379/x", "bad database number");
    assert_refused("redis://127.0.0.1:6379/-1", "bad database number");
    assert_refused("redis://[::1:6379", "unclosed '['");
    assert_refused("redis://127.0.0.1,127.0.0.2:6379", "unexpected ',127.0.0.2:6379'");
    assert_refused("unix:run/redis.sock", "absolute socket path");
    assert_refused("http://127.0.0.1:6379",
                   "must be redis://HOST:PORT[/DB], sentinel://HOST:PORT[,HOST:PORT...]/MASTER[/DB], "
                   "cluster://HOST:PORT[,HOST:PORT...], unix:PATH or none");
}

static void test_sentinel_forms(void **state)
{
    assert_accepted("sentinel://127.0.0.1:26379/mymaster");
    assert_accepted("sentinel://127.0.0.1/mymaster"); /* port 26379 */
    assert_accepted("sentinel://127.0.0.1:26379/mymaster/");
    assert_accepted("sentinel://127.0.0.1:26379/mymaster/3");
    assert_accepted("sentinel://10.0.0.1:26379,10.0.0.2:26380,[::1]:26381/jobs-cache.eu_1/0");
    assert_accepted("sentinel://a,b,c,d,e,f,g,h/m"); /* eight: the most */
    assert_refused("sentinel://a,b,c,d,e,f,g,h,i/m", "at most 8 sentinels");
    assert_refused("sentinel://127.0.0.1:26379", "no master name");
    assert_refused("sentinel://127.0.0.1:26379/", "no master name");
    assert_refused("sentinel://127.0.0.1:26379//3", "no master name");
    assert_refused("sentinel:///mymaster", "bad host");
    assert_refused("sentinel://127.0.0.1:26379,/mymaster", "bad host");
    assert_refused("sentinel://127.0.0.1:99999/mymaster", "bad port");
    assert_refused("sentinel://127.0.0.1:26379/my master", "bad master name");
    assert_refused("sentinel://127.0.0.1:26379/my%20master", "bad master name");
    assert_refused("sentinel://127.0.0.1:26379/mymaster/db3", "bad database number");
    assert_refused("sentinel://127.0.0.1:26379/mymaster/3/4", "bad database number");
}

static void test_cluster_forms(void **state)
{
    assert_accepted("cluster://127.0.0.1:7000");
    assert_accepted("cluster://127.0.0.1"); /* port 6379 */
    assert_accepted("cluster://127.0.0.1:7000/");
    assert_accepted("cluster://127.0.0.1:7000/0"); /* the one database a cluster has */
    assert_accepted("cluster://10.0.0.1:7000,10.0.0.2:7001,[::1]:7002");
    assert_accepted("cluster://a,b,c,d,e,f,g,h"); /* eight: the most */
    assert_refused("cluster://a,b,c,d,e,f,g,h,i", "at most 8 cluster nodes");
    assert_refused("cluster://", "bad host");
    assert_refused("cluster://127.0.0.1:7000,", "bad host");
    assert_refused("cluster://127.0.0.1:70000", "bad port");
    assert_refused("cluster://127.0.0.1:7000/3", "database 0 only");
    assert_refused("cluster://127.0.0.1:7000/mymaster", "database 0 only");
}

/* A password in the URL is refused without being echoed. */
static void test_credentials_never_echoed(void **state)
{
    const char *const urls[] = {"redis://:s3cret@127.0.0.1:6379", "redis://user:s3cret@127.0.0.1",
                                "sentinel://:s3cret@127.0.0.1:26379/mymaster",
                                "sentinel://127.0.0.1:26379,user:s3cret@127.0.0.2/mymaster",
                                "cluster://:s3cret@127.0.0.1:7000"};
    for (size_t i = 0; i < sizeof(urls) / sizeof(urls[0]); i++) {
        char err[256] = "";
        assert_int_equal(cache_redis_url_check(urls[i], err, sizeof(err)), -1);
        assert_non_null(strstr(err, "credentials in the URL are not accepted"));
        assert_null(strstr(err, "s3cret"));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_redis_forms),
        cmocka_unit_test(test_sentinel_forms),
        cmocka_unit_test(test_cluster_forms),
        cmocka_unit_test(test_credentials_never_echoed),
    };
    return cmocka_run_group_tests_name("cache_url", tests, NULL, NULL);
}
