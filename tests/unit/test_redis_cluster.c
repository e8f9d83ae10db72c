/*
 * Unit tests for proxy/redis_cluster.h: CRC16 and hash slots with the values
 * the Redis Cluster specification and CLUSTER KEYSLOT give, hash tags as the
 * specification's examples read them, CLUSTER SLOTS replies (built here as
 * hiredis hands them over) and MOVED/ASK redirections.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "cachekey.h"
#include "redis_cluster.h"

static unsigned slot_of(const char *key)
{
    return redis_cluster_keyslot(key, strlen(key));
}

static void test_crc16(void **state)
{
    assert_int_equal(redis_cluster_crc16("123456789", 9), 0x31C3); /* the specification's check value */
    assert_int_equal(redis_cluster_crc16("", 0), 0);
}

/* What `redis-cli -c CLUSTER KEYSLOT KEY` answers (Redis 7.0). */
static void test_keyslot(void **state)
{
    assert_int_equal(slot_of("foo"), 12182);
    assert_int_equal(slot_of("bar"), 5061);
    assert_int_equal(slot_of("somekey"), 11058);
    assert_int_equal(slot_of("foo{hash_tag}"), 2515);
    assert_int_equal(slot_of("123456789"), 0x31C3 % 16384);
}

/* The specification's examples of hash tags. */
static void test_hash_tags(void **state)
{
    assert_int_equal(slot_of("{user1000}.following"), slot_of("{user1000}.followers"));
    assert_int_equal(slot_of("{user1000}.following"), slot_of("user1000"));
    assert_int_equal(slot_of("foo{}{bar}"), redis_cluster_crc16("foo{}{bar}", 10) % 16384); /* "{}": no tag */
    assert_int_equal(slot_of("foo{{bar}}zap"), slot_of("{bar"));                            /* the tag is "{bar" */
    assert_int_equal(slot_of("foo{bar}{zap}"), slot_of("bar"));
    assert_int_equal(slot_of("{"), redis_cluster_crc16("{", 1) % 16384);
    assert_int_equal(slot_of("a}b{"), redis_cluster_crc16("a}b{", 4) % 16384);
}

/* Every key of one job shares a slot (cachekey.h), and jobs spread. */
static void test_job_keys_share_a_slot(void **state)
{
    const char *const params[] = {"0123456789abcdef0123456789abcdef", "ff00ff00-1111-2222-3333-444455556666"};
    char base[256], key[260];
    assert_int_equal(cachekey_format(base, sizeof(base), "jobgate:", "elb-v1", params, 2), 0);
    unsigned slot = slot_of(base);
    for (int s = 0; s < CACHEKEY_NSLOTS; s++) {
        snprintf(key, sizeof(key), "%s%s", base, cachekey_suffix((enum cachekey_slot)s));
        assert_int_equal(slot_of(key), slot);
    }
    assert_int_equal(slot, slot_of("elb-v1:0123456789abcdef0123456789abcdef:ff00ff00-1111-2222-3333-444455556666"));
    int seen[4] = {0};
    for (int j = 0; j < 64; j++) {
        char job[16];
        const char *const p[] = {"p", job};
        snprintf(job, sizeof(job), "job-%d", j);
        assert_int_equal(cachekey_format(base, sizeof(base), "jobgate:", "ecs", p, 2), 0);
        seen[slot_of(base) * 4 / 16384] = 1;
    }
    assert_true(seen[0] && seen[1] && seen[2] && seen[3]);
}

/* ------------------------------------------------- CLUSTER SLOTS replies */

static redisReply pool[256];
static redisReply *ptrs[512];
static size_t npool, nptrs;

static redisReply *r_int(long long v)
{
    redisReply *r = &pool[npool++];
    *r = (redisReply){.type = REDIS_REPLY_INTEGER, .integer = v};
    return r;
}

static redisReply *r_str(const char *s)
{
    redisReply *r = &pool[npool++];
    *r = (redisReply){.type = REDIS_REPLY_STRING, .str = (char *)s, .len = strlen(s)};
    return r;
}

static redisReply *r_arr(size_t n, ...)
{
    redisReply *r = &pool[npool++];
    va_list ap;
    va_start(ap, n);
    *r = (redisReply){.type = REDIS_REPLY_ARRAY, .elements = n, .element = &ptrs[nptrs]};
    for (size_t i = 0; i < n; i++)
        ptrs[nptrs++] = va_arg(ap, redisReply *);
    va_end(ap);
    return r;
}

static redisReply *node(const char *ip, int port)
{
    return r_arr(3, r_str(ip), r_int(port), r_str("07c37dfeb235213a872192d90877d0cd55635b91"));
}

static void reset_pool(void)
{
    npool = nptrs = 0;
}

/* Three masters with a replica each, as `redis-cli --cluster create` lays
 * them out (Redis 7.0: a fourth node field, the metadata map, ignored). */
static void test_parse_slots(void **state)
{
    static struct redis_cluster_map m;
    char err[160];
    reset_pool();
    redisReply *meta = r_arr(0);
    redisReply *master1 = r_arr(4, r_str("127.0.0.1"), r_int(7000), r_str("id1"), meta);
    redisReply *rep = r_arr(3, r_arr(4, r_int(0), r_int(5460), master1, node("127.0.0.1", 7004)),
                            r_arr(4, r_int(5461), r_int(10922), node("127.0.0.1", 7001), node("127.0.0.1", 7005)),
                            r_arr(4, r_int(10923), r_int(16383), node("", 7002), node("127.0.0.1", 7003)));
    assert_int_equal(redis_cluster_parse_slots(rep, "10.0.0.9", &m, err, sizeof(err)), 0);
    assert_int_equal(m.nmasters, 3);
    assert_int_equal(m.covered, 16384);
    assert_string_equal(m.masters[0].host, "127.0.0.1");
    assert_int_equal(m.masters[0].port, 7000);
    assert_string_equal(m.masters[2].host, "10.0.0.9"); /* "" is the node asked */
    assert_int_equal(m.nreplicas, 3);
    assert_int_equal(m.replicas[0].port, 7004);
    assert_int_equal(redis_cluster_owner(&m, 0), 0);
    assert_int_equal(redis_cluster_owner(&m, 5460), 0);
    assert_int_equal(redis_cluster_owner(&m, 5461), 1);
    assert_int_equal(redis_cluster_owner(&m, 16383), 2);
    assert_int_equal(redis_cluster_owner(&m, 16384), -1);
    assert_int_equal(redis_cluster_owner(&m, slot_of("foo")), 2);
    struct redis_addr a = {.host = "127.0.0.1", .port = 7001};
    assert_int_equal(redis_cluster_find_master(&m, &a), 1);
    a.port = 7004;
    assert_int_equal(redis_cluster_find_master(&m, &a), -1);
}

/* One master with two ranges; slots not served; bad replies. */
static void test_parse_slots_partial_and_bad(void **state)
{
    static struct redis_cluster_map m;
    char err[160];
    reset_pool();
    redisReply *rep = r_arr(2, r_arr(3, r_int(0), r_int(99), node("127.0.0.1", 7000)),
                            r_arr(3, r_int(200), r_int(299), node("127.0.0.1", 7000)));
    assert_int_equal(redis_cluster_parse_slots(rep, "h", &m, err, sizeof(err)), 0);
    assert_int_equal(m.nmasters, 1);
    assert_int_equal(m.covered, 200);
    assert_int_equal(redis_cluster_owner(&m, 150), -1);
    assert_int_equal(redis_cluster_owner(&m, 250), 0);

    reset_pool();
    assert_int_equal(
        redis_cluster_parse_slots(r_str("ERR This instance has cluster support disabled"), "h", &m, err, sizeof(err)),
        -1);
    reset_pool();
    rep = r_arr(1, r_arr(3, r_int(100), r_int(16384), node("127.0.0.1", 7000)));
    assert_int_equal(redis_cluster_parse_slots(rep, "h", &m, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "slot range"));
    reset_pool();
    rep = r_arr(1, r_arr(3, r_int(10), r_int(5), node("127.0.0.1", 7000)));
    assert_int_equal(redis_cluster_parse_slots(rep, "h", &m, err, sizeof(err)), -1);
    reset_pool();
    rep = r_arr(1, r_arr(3, r_int(0), r_int(5), node("127.0.0.1", 0)));
    assert_int_equal(redis_cluster_parse_slots(rep, "h", &m, err, sizeof(err)), -1);
    reset_pool();
    rep = r_arr(1, r_arr(2, r_int(0), r_int(5)));
    assert_int_equal(redis_cluster_parse_slots(rep, "h", &m, err, sizeof(err)), -1);
    reset_pool();
    assert_int_equal(redis_cluster_parse_slots(r_arr(0), "h", &m, err, sizeof(err)), 0);
    assert_int_equal(m.covered, 0);
}

static void test_redirect(void **state)
{
    int ask = -1;
    unsigned slot = 0;
    struct redis_addr a;
    assert_int_equal(redis_cluster_redirect("MOVED 3999 127.0.0.1:6381", &ask, &slot, &a), 1);
    assert_int_equal(ask, 0);
    assert_int_equal(slot, 3999);
    assert_string_equal(a.host, "127.0.0.1");
    assert_int_equal(a.port, 6381);
    assert_int_equal(redis_cluster_redirect("ASK 3999 ::1:7002", &ask, &slot, &a), 1);
    assert_int_equal(ask, 1);
    assert_string_equal(a.host, "::1");
    assert_int_equal(a.port, 7002);
    assert_int_equal(redis_cluster_redirect("MOVED 16384 127.0.0.1:6381", &ask, &slot, &a), 0);
    assert_int_equal(redis_cluster_redirect("MOVED 1 127.0.0.1", &ask, &slot, &a), 0);
    assert_int_equal(redis_cluster_redirect("MOVED x 127.0.0.1:1", &ask, &slot, &a), 0);
    assert_int_equal(redis_cluster_redirect("MOVED 1 :1", &ask, &slot, &a), 0);
    assert_int_equal(redis_cluster_redirect("CLUSTERDOWN The cluster is down", &ask, &slot, &a), 0);
    assert_int_equal(redis_cluster_redirect("ERR MOVED 1 h:1", &ask, &slot, &a), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc16),       cmocka_unit_test(test_keyslot),
        cmocka_unit_test(test_hash_tags),   cmocka_unit_test(test_job_keys_share_a_slot),
        cmocka_unit_test(test_parse_slots), cmocka_unit_test(test_parse_slots_partial_and_bad),
        cmocka_unit_test(test_redirect),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
