/*
 * Unit tests for cache (proxy/cache.h is the contract): fresh, stale and
 * missing entries in both tiers, terminal answers, the lease and the wait
 * that coalesce upstream calls across processes (pub/sub and polling), and
 * a misbehaving Redis (killed, out of memory, a read-only replica, a proxy
 * without pub/sub), and Redis Sentinel (the sentinels asked in order, an
 * unknown master, a failover followed).
 *
 * Everything runs against real redis-server processes ($REDIS_SERVER, set by
 * 'make check') on free loopback ports, on a real event loop. Two `struct
 * cache` in this one process stand for two jobgate processes sharing Redis.
 * TTLs are milliseconds long; the tests wait well past each boundary and
 * assert what the cache reports, never how long it took.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "body.h"
#include "cache.h"
#include "cache_mem.h"
#include "classify.h"
#include "clock.h"
#include "jsonpath.h"

#define MAX_WAIT_MS 5000 /* longest any expected callback may take */
#define MASTER_PW   "m-secret-8c1f2e"
#define SENTINEL_PW "s-secret-27d0a4"

/* ------------------------------------------------------- redis-server */

struct redis_server {
    pid_t pid;
    int port;
    char dir[64];
};

/* Every server started, so that the group teardown stops those a failed
 * test left running. */
static struct redis_server *started[64]; /* killed by group_teardown, should a test fail before its own kill */

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

/* The password the test's own commands send first (NULL: none), for the
 * tests whose servers want one. */
static const char *admin_password;

/* A synchronous command to the server on `port` (the test's own view of
 * Redis); the reply is the caller's to free, NULL if it cannot be reached. */
static redisReply *redis_cmd(int port, const char *fmt, ...)
{
    struct timeval tv = {1, 0};
    redisContext *rc = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (!rc || rc->err) {
        redisFree(rc);
        return NULL;
    }
    if (admin_password)
        freeReplyObject(redisCommand(rc, "AUTH %s", admin_password));
    va_list ap;
    va_start(ap, fmt);
    redisReply *rep = redisvCommand(rc, fmt, ap);
    va_end(ap);
    redisFree(rc);
    return rep;
}

/* An integer reply (EXISTS, PTTL, ...), or -100 on anything else. */
static long long redis_int(int port, const char *fmt, const char *arg)
{
    redisReply *rep = redis_cmd(port, fmt, arg);
    long long v = rep && rep->type == REDIS_REPLY_INTEGER ? rep->integer : -100;
    freeReplyObject(rep);
    return v;
}

/* The number after `field:` in INFO `section`, or -1. */
static long long redis_info(int port, const char *section, const char *field)
{
    redisReply *rep = redis_cmd(port, "INFO %s", section);
    long long v = -1;
    if (rep && rep->type == REDIS_REPLY_STRING) {
        char *at = strstr(rep->str, field);
        if (at)
            v = strtoll(at + strlen(field), NULL, 10);
    }
    freeReplyObject(rep);
    return v;
}

/* CONFIG SET `name` `value`, which must succeed. */
static void redis_config_set(int port, const char *name, const char *value)
{
    redisReply *rep = redis_cmd(port, "CONFIG SET %s %s", name, value);
    assert_non_null(rep);
    assert_int_equal(rep->type, REDIS_REPLY_STATUS);
    freeReplyObject(rep);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Start a redis-server with the extra arguments `extra` (NULL-terminated). */
static void redis_start(struct redis_server *s, const char *const *extra)
{
    const char *bin = getenv("REDIS_SERVER");
    if (!bin || !*bin)
        skip();
    s->port = free_port();
    snprintf(s->dir, sizeof(s->dir), "/tmp/jg-cache-test-XXXXXX");
    assert_non_null(mkdtemp(s->dir));
    char port[16];
    snprintf(port, sizeof(port), "%d", s->port);
    const char *argv[64] = {bin,  "--port", port,   "--bind",     "127.0.0.1", "--save", "", "--appendonly",
                            "no", "--dir",  s->dir, "--loglevel", "warning",   NULL};
    size_t n = 13;
    for (size_t i = 0; extra && extra[i] && n < 63; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    s->pid = fork();
    assert_true(s->pid >= 0);
    for (size_t i = 0; s->pid > 0 && i < sizeof(started) / sizeof(started[0]); i++)
        if (!started[i] || started[i] == s) {
            started[i] = s;
            break;
        }
    if (s->pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    for (int i = 0; i < 500; i++) {
        redisReply *rep = redis_cmd(s->port, "PING");
        int up = rep && (rep->type == REDIS_REPLY_STATUS ||
                         (rep->type == REDIS_REPLY_ERROR && !strncmp(rep->str, "NOAUTH", 6)));
        freeReplyObject(rep);
        if (up)
            return;
        sleep_ms(10);
    }
    fail_msg("redis-server on port %d did not answer", s->port);
}

/* Start a Redis Sentinel (redis-server --sentinel) watching the master on
 * `master_port` as "mymaster", quorum 1: it alone decides a failover. With
 * passwords: its own (`password`, NULL: none) and the master's. */
static void sentinel_start_auth(struct redis_server *s, int master_port, const char *password,
                                const char *master_password)
{
    const char *bin = getenv("REDIS_SERVER");
    if (!bin || !*bin)
        skip();
    s->port = free_port();
    snprintf(s->dir, sizeof(s->dir), "/tmp/jg-cache-test-XXXXXX");
    assert_non_null(mkdtemp(s->dir));
    char conf[128];
    snprintf(conf, sizeof(conf), "%s/sentinel.conf", s->dir);
    FILE *f = fopen(conf, "w");
    assert_non_null(f);
    fprintf(f,
            "port %d\nbind 127.0.0.1\ndir %s\nsentinel monitor mymaster 127.0.0.1 %d 1\n"
            "sentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 3000\n",
            s->port, s->dir, master_port);
    if (password)
        fprintf(f, "requirepass %s\n", password);
    if (master_password)
        fprintf(f, "sentinel auth-pass mymaster %s\n", master_password);
    fclose(f);
    s->pid = fork();
    assert_true(s->pid >= 0);
    for (size_t i = 0; s->pid > 0 && i < sizeof(started) / sizeof(started[0]); i++)
        if (!started[i] || started[i] == s) {
            started[i] = s;
            break;
        }
    if (s->pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        dup2(null, 2);
        execl(bin, bin, conf, "--sentinel", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 500; i++) {
        redisReply *rep = redis_cmd(s->port, "PING");
        int up = rep && (rep->type == REDIS_REPLY_STATUS || (rep->type == REDIS_REPLY_ERROR && password));
        freeReplyObject(rep);
        if (up)
            return;
        sleep_ms(10);
    }
    fail_msg("sentinel on port %d did not answer", s->port);
}

static void sentinel_start(struct redis_server *s, int master_port)
{
    sentinel_start_auth(s, master_port, NULL, NULL);
}

static void redis_kill(struct redis_server *s)
{
    for (size_t i = 0; i < sizeof(started) / sizeof(started[0]); i++)
        if (started[i] == s)
            started[i] = NULL; /* the slot is free for the next test's server */
    if (s->pid > 0) {
        kill(s->pid, SIGKILL);
        waitpid(s->pid, NULL, 0);
        s->pid = 0;
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", s->dir);
        if (system(cmd) != 0)
            print_error("could not remove %s\n", s->dir);
    }
}

/* ------------------------------------------------------- the event loop */

static struct event_base *base;

/* Run the loop for `ms` milliseconds. */
static void run_for(int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
}

/* Run the loop until *flag is set or MAX_WAIT_MS pass. Returns *flag. */
static int run_until(const int *flag)
{
    for (int waited = 0; !*flag && waited < MAX_WAIT_MS; waited += 5)
        run_for(5);
    return *flag;
}

/* What a callback reported. */
struct got {
    int calls;
    enum cache_status status;
    int has_body;
    char body[64];
    int lease_calls;
    enum cache_lease_status lease;
};

static void on_get(enum cache_status status, struct body *b, void *arg)
{
    struct got *g = arg;
    g->calls++;
    g->status = status;
    g->has_body = b != NULL;
    snprintf(g->body, sizeof(g->body), "%s", b ? b->data : "");
}

static void on_lease(enum cache_lease_status status, void *arg)
{
    struct got *g = arg;
    g->lease_calls++;
    g->lease = status;
}

/* Look `key` up and run the loop until the answer. A MISS or UNAVAILABLE
 * never carries a body, whatever the test. */
static struct got get(struct cache *c, const char *key)
{
    struct got g = {0};
    cache_get(c, key, NULL, on_get, &g);
    assert_true(run_until(&g.calls));
    assert_int_equal(g.calls, 1);
    if (g.status == CACHE_MISS || g.status == CACHE_UNAVAILABLE)
        assert_false(g.has_body);
    else
        assert_true(g.has_body);
    return g;
}

static enum cache_lease_status lease(struct cache *c, const char *key, int64_t lease_ms)
{
    struct got g = {0};
    cache_lease(c, key, NULL, lease_ms, on_lease, &g);
    assert_true(run_until(&g.lease_calls));
    assert_int_equal(g.lease_calls, 1);
    return g.lease;
}

static void put(struct cache *c, const char *key, const char *text, int terminal, int64_t ttl_ms, int64_t stale_ms)
{
    struct body *b = body_new(text, strlen(text), clock_wall_ms(), terminal);
    assert_non_null(b);
    cache_put(c, key, b, ttl_ms, stale_ms);
    body_unref(b);
}

/* The settings most tests use: a cache on `url` (NULL: none). */
static struct cache_conf conf_for(const char *url, enum cache_notify notify)
{
    return (struct cache_conf){
        .redis_url = (char *)url,
        .redis_budget_ms = 500, /* generous: the sanitizers slow everything down */
        .redis_connect_timeout_ms = 500,
        .redis_reconnect_min_ms = 20,
        .redis_reconnect_max_ms = 200,
        .redis_max_pending = 1000,
        .memory_max_bytes = 1 << 20,
        .redis_notify = notify,
        .redis_poll_interval_ms = 20,
    };
}

/* A cache with `conf`, up (and subscribed, in pub/sub mode; in auto mode
 * too where `expect_up` is 2) before it is returned unless `expect_up` is 0. */
static struct cache *cache_with(const struct cache_conf *conf, int expect_up)
{
    char err[256] = "";
    struct cache *c = cache_new(base, conf, err, sizeof(err));
    if (!c)
        fail_msg("cache_new: %s", err);
    for (int waited = 0; expect_up && waited < MAX_WAIT_MS; waited += 5) {
        struct cache_health h;
        cache_health(c, &h);
        int want_pubsub = conf->redis_notify == CACHE_NOTIFY_PUBSUB || expect_up == 2;
        if (h.up && (!want_pubsub || strcmp(h.coalescing, "pubsub") == 0))
            return c;
        run_for(5);
    }
    if (expect_up)
        fail_msg("the cache on %s did not come up", conf->redis_url);
    return c;
}

/* A cache on Redis at `url`, up (and subscribed, in pub/sub mode) before it
 * is returned unless `expect_up` is 0. */
static struct cache *cache_on_url(const char *url, enum cache_notify notify, int expect_up)
{
    struct cache_conf conf = conf_for(url, notify);
    return cache_with(&conf, expect_up);
}

static struct cache *cache_on(int port, enum cache_notify notify, int expect_up)
{
    char url[64];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", port);
    return cache_on_url(port ? url : NULL, notify, expect_up);
}

static struct cache_health health(struct cache *c)
{
    struct cache_health h;
    cache_health(c, &h);
    return h;
}

/* A key no other test uses. */
static const char *new_key(char *buf, size_t len)
{
    static int n;
    snprintf(buf, len, "test:%d:%d", (int)getpid(), ++n);
    return buf;
}

/* The shared server most tests use. */
static struct redis_server shared;

static int group_setup(void **state)
{
    base = event_base_new();
    return base ? 0 : -1;
}

static int group_teardown(void **state)
{
    for (size_t i = 0; i < sizeof(started) / sizeof(started[0]); i++)
        if (started[i])
            redis_kill(started[i]);
    event_base_free(base);
    return 0;
}

static int shared_port(void)
{
    if (!shared.pid)
        redis_start(&shared, NULL);
    return shared.port;
}

/* ------------------------------------------------------- fresh and stale */

static void test_memory_fresh_stale_miss(void **state)
{
    struct cache *c = cache_on(0, CACHE_NOTIFY_AUTO, 1);
    char key[64];
    new_key(key, sizeof(key));
    assert_int_equal(get(c, key).status, CACHE_MISS);
    put(c, key, "RUNNING", 0, 100, 400);
    struct got g = get(c, key);
    assert_int_equal(g.status, CACHE_HIT);
    assert_string_equal(g.body, "RUNNING");
    sleep_ms(200); /* past the TTL, within the stale window */
    g = get(c, key);
    assert_int_equal(g.status, CACHE_STALE);
    assert_string_equal(g.body, "RUNNING");
    sleep_ms(500); /* past both */
    assert_int_equal(get(c, key).status, CACHE_MISS);
    assert_string_equal(health(c).coalescing, "none");
    cache_free(c);
}

static void test_redis_fresh_stale_miss(void **state)
{
    int port = shared_port();
    struct cache *a = cache_on(port, CACHE_NOTIFY_AUTO, 1);
    struct cache *b = cache_on(port, CACHE_NOTIFY_AUTO, 1);
    char key[64], pkey[80];
    new_key(key, sizeof(key));
    snprintf(pkey, sizeof(pkey), "%s:p", key);
    put(a, key, "RUNNING", 0, 150, 600);
    run_for(50); /* the SET reaches Redis */
    long long pttl = redis_int(port, "PTTL %s", pkey);
    assert_true(pttl > 150);                         /* lives TTL + stale window in Redis */
    assert_int_equal(get(b, key).status, CACHE_HIT); /* from Redis; fills b's in-process tier */
    sleep_ms(250);
    struct got g = get(b, key); /* b's in-process copy, stale now */
    assert_int_equal(g.status, CACHE_STALE);
    assert_string_equal(g.body, "RUNNING");
    struct cache *c = cache_on(port, CACHE_NOTIFY_AUTO, 1);
    g = get(c, key); /* nothing in process: Redis's copy, stale */
    assert_int_equal(g.status, CACHE_STALE);
    assert_string_equal(g.body, "RUNNING");
    sleep_ms(700);
    assert_int_equal(get(b, key).status, CACHE_MISS);
    assert_int_equal(get(c, key).status, CACHE_MISS);
    assert_int_equal(redis_int(port, "EXISTS %s", pkey), 0);
    cache_free(a);
    cache_free(b);
    cache_free(c);
}

static void test_terminal_never_stale_nor_replaced(void **state)
{
    int port = shared_port();
    struct cache *a = cache_on(port, CACHE_NOTIFY_AUTO, 1);
    char key[64];
    new_key(key, sizeof(key));
    put(a, key, "SUCCESS", 1, -1, 100);
    put(a, key, "RUNNING", 0, 50, 100); /* late, still changing: must not win */
    run_for(50);
    sleep_ms(200);
    struct got g = get(a, key);
    assert_int_equal(g.status, CACHE_HIT);
    assert_string_equal(g.body, "SUCCESS");
    struct cache *b = cache_on(port, CACHE_NOTIFY_AUTO, 1);
    g = get(b, key); /* Redis: KEY:t preferred */
    assert_int_equal(g.status, CACHE_HIT);
    assert_string_equal(g.body, "SUCCESS");
    cache_free(a);
    cache_free(b);
}

static void test_stale_never_hides_fresher(void **state)
{
    int port = shared_port();
    struct cache *a = cache_on(port, CACHE_NOTIFY_AUTO, 1);
    struct cache *b = cache_on(port, CACHE_NOTIFY_AUTO, 1);
    char key[64];
    new_key(key, sizeof(key));
    put(a, key, "INIT", 0, 50, 5000);
    sleep_ms(100); /* a's copy is stale */
    put(b, key, "RUNNING", 0, 5000, 0);
    run_for(50);
    struct got g = get(a, key); /* stale in process, fresh in Redis */
    assert_int_equal(g.status, CACHE_HIT);
    assert_string_equal(g.body, "RUNNING");
    g = get(a, key);
    assert_int_equal(g.status, CACHE_HIT);
    assert_string_equal(g.body, "RUNNING");

    /* The in-process tier itself: an older copy never replaces a newer one. */
    struct cache_mem *m = cache_mem_new(1 << 20);
    struct body *older = body_new("INIT", 4, clock_wall_ms() - 1000, 0);
    struct body *newer = body_new("RUNNING", 7, clock_wall_ms(), 0);
    cache_mem_put(m, "k", newer, 1000, 0);
    cache_mem_put(m, "k", older, 0, 1000);
    int stale;
    struct body *kept = cache_mem_get(m, "k", &stale);
    assert_non_null(kept);
    assert_string_equal(kept->data, "RUNNING");
    assert_false(stale);
    body_unref(older);
    body_unref(newer);
    cache_mem_free(m);
    cache_free(a);
    cache_free(b);
}

static void test_redis_down_serves_in_process_copies(void **state)
{
    struct cache *c = cache_on(free_port(), CACHE_NOTIFY_AUTO, 0); /* nobody listens there */
    char key[64], other[64];
    new_key(key, sizeof(key));
    new_key(other, sizeof(other));
    put(c, key, "RUNNING", 0, 100, 2000);
    assert_int_equal(get(c, key).status, CACHE_HIT);
    sleep_ms(200);
    struct got g = get(c, key);
    assert_int_equal(g.status, CACHE_STALE);
    assert_string_equal(g.body, "RUNNING");
    assert_int_equal(get(c, other).status, CACHE_UNAVAILABLE);
    run_for(100); /* a connect attempt fails */
    struct got l = {0};
    assert_null(cache_lease(c, key, NULL, 1000, on_lease, &l)); /* answered at once */
    assert_int_equal(l.lease_calls, 1);
    assert_int_equal(l.lease, CACHE_LEASE_UNAVAILABLE);
    struct cache_health h = health(c);
    assert_false(h.up);
    assert_string_equal(h.coalescing, "none");
    assert_true(strncmp(h.last_error, "cannot connect", 14) == 0);
    cache_free(c);
}

/* ------------------------------------------------------ leases and waits */

/* a leases, b finds it held and waits; a's store wakes b with the answer. */
static void lease_then_wait_woken_by_put(enum cache_notify notify)
{
    int port = shared_port();
    long long published = redis_info(port, "commandstats", "cmdstat_publish:calls=");
    struct cache *a = cache_on(port, notify, 1);
    struct cache *b = cache_on(port, notify, 1);
    for (int waited = 0; notify == CACHE_NOTIFY_AUTO && waited < MAX_WAIT_MS; waited += 5) {
        if (strcmp(health(a).coalescing, "pubsub") == 0 && strcmp(health(b).coalescing, "pubsub") == 0)
            break; /* auto: both subscribed, as Redis has pub/sub */
        run_for(5);
    }
    assert_string_equal(health(a).coalescing, notify == CACHE_NOTIFY_POLL ? "poll" : "pubsub");
    assert_string_equal(health(b).coalescing, notify == CACHE_NOTIFY_POLL ? "poll" : "pubsub");
    char key[64], lkey[80];
    /* A store nobody waits for publishes nothing (no process is woken). */
    new_key(key, sizeof(key));
    assert_int_equal(lease(a, key, 5000), CACHE_LEASE_ACQUIRED);
    put(a, key, "SUCCESS", 1, -1, 0);
    run_for(50);
    assert_true(redis_info(port, "commandstats", "cmdstat_publish:calls=") == published);
    new_key(key, sizeof(key));
    snprintf(lkey, sizeof(lkey), "%s:l", key);
    assert_int_equal(lease(a, key, 5000), CACHE_LEASE_ACQUIRED);
    assert_int_equal(redis_int(port, "EXISTS %s", lkey), 1);
    assert_int_equal(lease(b, key, 5000), CACHE_LEASE_HELD);
    struct got g = {0};
    assert_non_null(cache_wait(b, key, NULL, MAX_WAIT_MS, on_get, &g));
    run_for(100);
    assert_int_equal(g.calls, 0); /* still held, nothing stored */
    put(a, key, "SUCCESS", 1, -1, 0);
    assert_true(run_until(&g.calls));
    assert_int_equal(g.calls, 1);
    assert_int_equal(g.status, CACHE_HIT);
    assert_string_equal(g.body, "SUCCESS");
    assert_int_equal(redis_int(port, "EXISTS %s", lkey), 0); /* released by the store */
    struct got again = get(b, key);                          /* the wait filled b's in-process tier */
    assert_int_equal(again.status, CACHE_HIT);
    long long now_published = redis_info(port, "commandstats", "cmdstat_publish:calls=");
    if (notify == CACHE_NOTIFY_POLL)
        assert_true(now_published == published); /* twemproxy-safe: no PUBLISH at all */
    else
        assert_true(now_published > published && now_published > 0);
    assert_int_equal(health(a).errors, 0);
    assert_int_equal(health(b).errors, 0);
    cache_free(a);
    cache_free(b);
}

/* a leases, b finds it held and waits, a's store wakes it (`port`: the
 * server, 0 not to look at it). */
static void lease_then_wait_between(struct cache *a, struct cache *b, int port)
{
    char key[64], lkey[80];
    new_key(key, sizeof(key));
    snprintf(lkey, sizeof(lkey), "%s:l", key);
    assert_int_equal(lease(a, key, 5000), CACHE_LEASE_ACQUIRED);
    assert_int_equal(lease(b, key, 5000), CACHE_LEASE_HELD);
    struct got g = {0};
    assert_non_null(cache_wait(b, key, NULL, MAX_WAIT_MS, on_get, &g));
    put(a, key, "SUCCESS", 1, -1, 0);
    assert_true(run_until(&g.calls));
    assert_int_equal(g.status, CACHE_HIT);
    assert_string_equal(g.body, "SUCCESS");
    if (port) {
        const char *saved = admin_password;
        admin_password = MASTER_PW;
        assert_int_equal(redis_int(port, "EXISTS %s", lkey), 0);
        admin_password = saved;
    }
}

static void test_wait_woken_by_put_pubsub(void **state)
{
    lease_then_wait_woken_by_put(CACHE_NOTIFY_PUBSUB);
}

static void test_wait_woken_by_put_poll(void **state)
{
    lease_then_wait_woken_by_put(CACHE_NOTIFY_POLL);
}

static void test_wait_woken_by_put_auto(void **state)
{
    lease_then_wait_woken_by_put(CACHE_NOTIFY_AUTO);
}

/* The holder dies: its lease expires, and the waiter is told to go itself. */
static void lease_expiry_wakes_waiter(enum cache_notify notify)
{
    int port = shared_port();
    struct cache *a = cache_on(port, notify, 1);
    struct cache *b = cache_on(port, notify, 1);
    char key[64];
    new_key(key, sizeof(key));
    assert_int_equal(lease(a, key, 150), CACHE_LEASE_ACQUIRED);
    cache_free(a); /* as if it died */
    struct got g = {0};
    assert_non_null(cache_wait(b, key, NULL, MAX_WAIT_MS, on_get, &g));
    assert_true(run_until(&g.calls));
    assert_int_equal(g.status, CACHE_MISS);
    assert_false(g.has_body);
    assert_int_equal(lease(b, key, 1000), CACHE_LEASE_ACQUIRED); /* b's turn */
    cache_lease_release(b, key);
    cache_free(b);
}

static void test_lease_expiry_wakes_waiter_pubsub(void **state)
{
    lease_expiry_wakes_waiter(CACHE_NOTIFY_PUBSUB);
}

static void test_lease_expiry_wakes_waiter_poll(void **state)
{
    lease_expiry_wakes_waiter(CACHE_NOTIFY_POLL);
}

/* The holder got an error: its release sends the waiter upstream. */
static void test_release_wakes_waiter(void **state)
{
    int port = shared_port();
    struct cache *a = cache_on(port, CACHE_NOTIFY_PUBSUB, 1);
    struct cache *b = cache_on(port, CACHE_NOTIFY_PUBSUB, 1);
    char key[64], lkey[80];
    new_key(key, sizeof(key));
    snprintf(lkey, sizeof(lkey), "%s:l", key);
    assert_int_equal(lease(a, key, 60000), CACHE_LEASE_ACQUIRED);
    struct got g = {0};
    assert_non_null(cache_wait(b, key, NULL, 60000, on_get, &g));
    run_for(50);
    cache_lease_release(a, key);
    assert_true(run_until(&g.calls));
    assert_int_equal(g.status, CACHE_MISS);
    assert_int_equal(redis_int(port, "EXISTS %s", lkey), 0);
    cache_free(a);
    cache_free(b);
}

/* A lease that is not ours is left alone by our store (compare-and-delete). */
static void test_store_keeps_anothers_lease(void **state)
{
    int port = shared_port();
    struct cache *a = cache_on(port, CACHE_NOTIFY_POLL, 1);
    struct cache *b = cache_on(port, CACHE_NOTIFY_POLL, 1);
    char key[64], lkey[80];
    new_key(key, sizeof(key));
    snprintf(lkey, sizeof(lkey), "%s:l", key);
    assert_int_equal(lease(a, key, 100), CACHE_LEASE_ACQUIRED);
    sleep_ms(200);                                                /* a's lease expired... */
    assert_int_equal(lease(b, key, 60000), CACHE_LEASE_ACQUIRED); /* ...and b took the key */
    put(a, key, "RUNNING", 0, 1000, 0);
    run_for(100);
    assert_int_equal(redis_int(port, "EXISTS %s", lkey), 1); /* b's lease survives */
    cache_lease_release(b, key);
    run_for(100);
    assert_int_equal(redis_int(port, "EXISTS %s", lkey), 0);
    cache_free(a);
    cache_free(b);
}

/* Another process stored its answer (and released its lease) between our
 * lookup and our lease: the lease is given back and reported HELD, and the
 * wait finds that answer, rather than a second upstream call. A stale copy
 * does not count: that lease is kept. */
static void test_lease_after_a_store_is_held(void **state)
{
    int port = shared_port();
    struct cache *a = cache_on(port, CACHE_NOTIFY_POLL, 1);
    struct cache *b = cache_on(port, CACHE_NOTIFY_POLL, 1);
    char key[64], lkey[80];
    new_key(key, sizeof(key));
    snprintf(lkey, sizeof(lkey), "%s:l", key);
    assert_int_equal(lease(a, key, 60000), CACHE_LEASE_ACQUIRED);
    put(a, key, "RUNNING", 0, 5000, 0);
    run_for(100);
    assert_int_equal(redis_int(port, "EXISTS %s", lkey), 0); /* released once stored */
    assert_int_equal(lease(b, key, 60000), CACHE_LEASE_HELD);
    run_for(100);
    assert_int_equal(redis_int(port, "EXISTS %s", lkey), 0); /* given back */
    struct got g = {0};
    assert_non_null(cache_wait(b, key, NULL, MAX_WAIT_MS, on_get, &g));
    assert_true(run_until(&g.calls));
    assert_int_equal(g.status, CACHE_HIT);
    assert_string_equal(g.body, "RUNNING");

    new_key(key, sizeof(key));
    snprintf(lkey, sizeof(lkey), "%s:l", key);
    put(a, key, "RUNNING", 0, 1, 60000); /* fresh for 1 ms, then stale */
    run_for(50);
    assert_int_equal(lease(b, key, 60000), CACHE_LEASE_ACQUIRED);
    assert_int_equal(redis_int(port, "EXISTS %s", lkey), 1);
    cache_free(a);
    cache_free(b);
}

static void test_wait_times_out(void **state)
{
    int port = shared_port();
    struct cache *a = cache_on(port, CACHE_NOTIFY_POLL, 1);
    struct cache *b = cache_on(port, CACHE_NOTIFY_POLL, 1);
    char key[64];
    new_key(key, sizeof(key));
    assert_int_equal(lease(a, key, 60000), CACHE_LEASE_ACQUIRED);
    struct got g = {0};
    assert_non_null(cache_wait(b, key, NULL, 150, on_get, &g));
    assert_true(run_until(&g.calls));
    assert_int_equal(g.status, CACHE_MISS);
    cache_lease_release(a, key);
    cache_free(a);
    cache_free(b);
}

static void test_cancel(void **state)
{
    int port = shared_port();
    struct cache *a = cache_on(port, CACHE_NOTIFY_PUBSUB, 1);
    struct cache *b = cache_on(port, CACHE_NOTIFY_PUBSUB, 1);
    char key[64], lkey[80];
    new_key(key, sizeof(key));
    snprintf(lkey, sizeof(lkey), "%s:l", key);

    /* A cancelled lease: no callback, and granted all the same, it is released. */
    struct got l = {0};
    struct cache_pending *p = cache_lease(a, key, NULL, 60000, on_lease, &l);
    assert_non_null(p);
    cache_cancel(a, p);
    run_for(200);
    assert_int_equal(l.lease_calls, 0);
    assert_int_equal(redis_int(port, "EXISTS %s", lkey), 0);

    /* A cancelled wait: no callback when the answer comes, nor at its deadline. */
    assert_int_equal(lease(a, key, 60000), CACHE_LEASE_ACQUIRED);
    struct got g = {0};
    p = cache_wait(b, key, NULL, 300, on_get, &g);
    assert_non_null(p);
    run_for(50);
    cache_cancel(b, p);
    put(a, key, "SUCCESS", 1, -1, 0);
    run_for(500);
    assert_int_equal(g.calls, 0);

    /* cache_free drops what is pending, without callbacks (ASan: without leaks). */
    char other[64];
    new_key(other, sizeof(other));
    assert_int_equal(lease(a, other, 60000), CACHE_LEASE_ACQUIRED);
    assert_non_null(cache_wait(b, other, NULL, 60000, on_get, &g));
    assert_non_null(cache_lease(b, other, NULL, 60000, on_lease, &l));
    cache_get(b, other, NULL, on_get, &g);
    cache_free(b);
    run_for(100);
    assert_int_equal(g.calls, 0);
    assert_int_equal(l.lease_calls, 0);
    cache_lease_release(a, other);
    cache_free(a);
}

static void test_redis_killed_mid_wait(void **state)
{
    static struct redis_server s; /* static: the group teardown may stop it */
    redis_start(&s, NULL);
    struct cache *a = cache_on(s.port, CACHE_NOTIFY_AUTO, 1);
    struct cache *b = cache_on(s.port, CACHE_NOTIFY_AUTO, 1);
    char key[64];
    new_key(key, sizeof(key));
    assert_int_equal(lease(a, key, 60000), CACHE_LEASE_ACQUIRED);
    struct got g = {0};
    assert_non_null(cache_wait(b, key, NULL, 60000, on_get, &g));
    run_for(100);
    assert_int_equal(g.calls, 0);
    redis_kill(&s);
    assert_true(run_until(&g.calls));
    assert_int_equal(g.calls, 1);
    assert_int_equal(g.status, CACHE_UNAVAILABLE);
    assert_false(g.has_body);
    struct cache_health h = health(b);
    assert_false(h.up);
    assert_string_equal(h.coalescing, "none");
    assert_true(h.reconnects >= 1);
    put(a, key, "SUCCESS", 1, -1, 0); /* Redis gone: in process only, nothing breaks */
    assert_int_equal(get(a, key).status, CACHE_HIT);
    cache_free(a);
    cache_free(b);
}

/* ---------------------------------------------------- misbehaving Redis */

static void test_oom_on_set(void **state)
{
    static struct redis_server s; /* static: the group teardown may stop it */
    redis_start(&s, NULL);
    struct cache *a = cache_on(s.port, CACHE_NOTIFY_AUTO, 1);
    struct cache *b = cache_on(s.port, CACHE_NOTIFY_AUTO, 1);
    redis_config_set(s.port, "maxmemory-policy", "noeviction");
    redis_config_set(s.port, "maxmemory", "1");
    char key[64];
    new_key(key, sizeof(key));
    put(a, key, "SUCCESS", 1, -1, 0);
    run_for(100);
    struct cache_health h = health(a);
    assert_true(h.errors >= 1);
    assert_string_equal(h.last_error, "OOM on SET");
    assert_true(h.up);                                              /* an OOM is no reason to reconnect */
    assert_int_equal(get(a, key).status, CACHE_HIT);                /* in process */
    assert_int_equal(get(b, key).status, CACHE_MISS);               /* reads still work; nothing was stored */
    assert_int_equal(lease(b, key, 1000), CACHE_LEASE_UNAVAILABLE); /* the lease's script refused too */
    assert_string_equal(health(b).last_error, "OOM on EVAL");       /* its first: EVAL, which loads the script */
    struct cache *polling = cache_on(s.port, CACHE_NOTIFY_POLL, 1); /* as behind twemproxy: a pipeline */
    assert_int_equal(lease(polling, key, 1000), CACHE_LEASE_UNAVAILABLE);
    assert_string_equal(health(polling).last_error, "OOM on SET NX");
    cache_free(polling);
    redis_config_set(s.port, "maxmemory", "0");
    put(a, key, "SUCCESS", 1, -1, 0);
    run_for(100);
    assert_int_equal(get(b, key).status, CACHE_HIT);
    cache_free(a);
    cache_free(b);
    redis_kill(&s);
}

static void test_readonly_replica(void **state)
{
    int master = shared_port();
    char port[16];
    snprintf(port, sizeof(port), "%d", master);
    const char *const replica_args[] = {"--replicaof", "127.0.0.1", port, NULL};
    static struct redis_server replica;
    redis_start(&replica, replica_args);
    struct cache *c = cache_on(replica.port, CACHE_NOTIFY_AUTO, 1);
    char key[64];
    new_key(key, sizeof(key));
    assert_int_equal(get(c, key).status, CACHE_MISS); /* a replica answers reads */
    put(c, key, "SUCCESS", 1, -1, 0);
    for (int waited = 0; health(c).reconnects == 0 && waited < MAX_WAIT_MS; waited += 5)
        run_for(5);
    struct cache_health h = health(c);
    assert_true(h.errors >= 1);
    assert_string_equal(h.last_error, "READONLY on SET");
    assert_true(h.reconnects >= 1); /* a failover may have happened */
    for (int waited = 0; !health(c).up && waited < MAX_WAIT_MS; waited += 5)
        run_for(5);
    assert_true(health(c).up); /* and it came back */
    cache_free(c);
    redis_kill(&replica);
}

/* A Redis (or a proxy) without pub/sub: auto mode polls, and never retries
 * SUBSCRIBE nor sends PUBLISH. */
static void test_auto_without_pubsub_polls(void **state)
{
    const char *const args[] = {"--rename-command", "SUBSCRIBE", "", "--rename-command", "PUBLISH", "", NULL};
    static struct redis_server s; /* static: the group teardown may stop it */
    redis_start(&s, args);
    struct cache *a = cache_on(s.port, CACHE_NOTIFY_AUTO, 1);
    struct cache *b = cache_on(s.port, CACHE_NOTIFY_AUTO, 1);
    run_for(300); /* the SUBSCRIBE probes are refused */
    long long connections = redis_info(s.port, "stats", "total_connections_received:");
    run_for(500);
    /* Only this test's own INFO connection is new: no subscriber retries. */
    assert_int_equal(redis_info(s.port, "stats", "total_connections_received:"), connections + 1);
    assert_string_equal(health(b).coalescing, "poll");
    char key[64];
    new_key(key, sizeof(key));
    assert_int_equal(lease(a, key, 5000), CACHE_LEASE_ACQUIRED);
    assert_int_equal(lease(b, key, 5000), CACHE_LEASE_HELD);
    struct got g = {0};
    assert_non_null(cache_wait(b, key, NULL, MAX_WAIT_MS, on_get, &g));
    put(a, key, "RUNNING", 0, 5000, 0);
    assert_true(run_until(&g.calls));
    assert_int_equal(g.status, CACHE_HIT);
    assert_string_equal(g.body, "RUNNING");
    assert_int_equal(health(a).errors, 0); /* no PUBLISH was tried */
    cache_free(a);
    cache_free(b);
    redis_kill(&s);
}

/* ------------------------------------------------------------ Sentinel */

/* The sentinels are asked in order: a dead one is skipped, the next names
 * the master, and the cache works there (/healthz's endpoint says where). */
static void test_sentinel_names_the_master(void **state)
{
    static struct redis_server master, sentinel;
    redis_start(&master, NULL);
    sentinel_start(&sentinel, master.port);
    char url[128], endpoint[64];
    snprintf(url, sizeof(url), "sentinel://127.0.0.1:%d,127.0.0.1:%d/mymaster/2", free_port(), sentinel.port);
    struct cache *c = cache_on_url(url, CACHE_NOTIFY_AUTO, 1);
    snprintf(endpoint, sizeof(endpoint), "127.0.0.1:%d", master.port);
    assert_string_equal(health(c).endpoint, endpoint);
    char key[64];
    new_key(key, sizeof(key));
    put(c, key, "SUCCESS", 1, -1, 0);
    run_for(100);
    struct cache *other = cache_on(master.port, CACHE_NOTIFY_POLL, 1); /* database 0 */
    assert_int_equal(get(other, key).status, CACHE_MISS);
    cache_free(other);
    struct got g = get(c, key);
    assert_int_equal(g.status, CACHE_HIT);
    cache_free(c);
    c = cache_on_url(url, CACHE_NOTIFY_POLL, 1); /* a new process: only Redis has it */
    assert_int_equal(get(c, key).status, CACHE_HIT);
    cache_free(c);
    redis_kill(&sentinel);
    redis_kill(&master);
}

/* No sentinel knows the master: Redis counts as down, lookups are
 * UNAVAILABLE (requests go upstream), the health report says why. */
static void test_sentinel_unknown_master(void **state)
{
    static struct redis_server master, sentinel;
    redis_start(&master, NULL);
    sentinel_start(&sentinel, master.port);
    char url[128];
    snprintf(url, sizeof(url), "sentinel://127.0.0.1:%d/othermaster", sentinel.port);
    struct cache *c = cache_on_url(url, CACHE_NOTIFY_AUTO, 0);
    run_for(300);
    struct cache_health h = health(c);
    assert_false(h.up);
    assert_string_equal(h.endpoint, "");
    assert_non_null(strstr(h.last_error, "no sentinel named the master"));
    char key[64];
    new_key(key, sizeof(key));
    assert_int_equal(get(c, key).status, CACHE_UNAVAILABLE);
    cache_free(c);
    redis_kill(&sentinel);
    redis_kill(&master);
}

/* SENTINEL FAILOVER promotes the replica: +switch-master moves the cache
 * there, and what it stores lands on the new master. */
static void test_sentinel_follows_a_failover(void **state)
{
    static struct redis_server master, replica, sentinel;
    redis_start(&master, NULL);
    char port[16];
    snprintf(port, sizeof(port), "%d", master.port);
    const char *const replica_args[] = {"--replicaof", "127.0.0.1", port, NULL};
    redis_start(&replica, replica_args);
    for (int waited = 0; redis_info(replica.port, "replication", "master_link_status:up") < 0 && waited < 5000;
         waited += 50)
        sleep_ms(50);
    sentinel_start(&sentinel, master.port);
    char url[128], endpoint[64];
    snprintf(url, sizeof(url), "sentinel://127.0.0.1:%d/mymaster", sentinel.port);
    struct cache *c = cache_on_url(url, CACHE_NOTIFY_PUBSUB, 1);
    snprintf(endpoint, sizeof(endpoint), "127.0.0.1:%d", master.port);
    assert_string_equal(health(c).endpoint, endpoint);
    /* The sentinel must know the replica before it can fail over to it. */
    redisReply *rep = NULL;
    for (int waited = 0; waited < MAX_WAIT_MS * 2; waited += 100) {
        freeReplyObject(rep);
        rep = redis_cmd(sentinel.port, "SENTINEL FAILOVER mymaster");
        if (rep && rep->type == REDIS_REPLY_STATUS)
            break;
        run_for(100);
    }
    assert_non_null(rep);
    assert_int_equal(rep->type, REDIS_REPLY_STATUS);
    freeReplyObject(rep);
    snprintf(endpoint, sizeof(endpoint), "127.0.0.1:%d", replica.port);
    for (int waited = 0; waited < MAX_WAIT_MS * 2 && !(health(c).up && strcmp(health(c).endpoint, endpoint) == 0);
         waited += 10)
        run_for(10);
    assert_string_equal(health(c).endpoint, endpoint);
    assert_true(health(c).up);
    char key[64], tkey[80];
    new_key(key, sizeof(key));
    snprintf(tkey, sizeof(tkey), "%s:t", key);
    put(c, key, "SUCCESS", 1, -1, 0);
    run_for(100);
    assert_int_equal(redis_int(replica.port, "EXISTS %s", tkey), 1);
    cache_free(c);
    redis_kill(&sentinel);
    redis_kill(&replica);
    redis_kill(&master);
}

/* ---------------------------------------------------------------- AUTH */

/* Does the health report hold a secret anywhere? */
static int health_has_secret(struct cache *c, const char *secret)
{
    struct cache_health h = health(c);
    return strstr(h.last_error, secret) || strstr(h.endpoint, secret) || strstr(h.state, secret) ||
           strstr(h.coalescing, secret);
}

/* Store on one cache, read on another: the Redis behind them works. */
static void round_trip(struct cache *a, struct cache *b)
{
    char key[64];
    new_key(key, sizeof(key));
    put(a, key, "SUCCESS", 1, -1, 0);
    run_for(100);
    struct got g = get(b, key);
    assert_int_equal(g.status, CACHE_HIT);
    assert_string_equal(g.body, "SUCCESS");
}

/* Wait until `c`'s last error starts with `prefix`; returns the health. */
static struct cache_health wait_error(struct cache *c, const char *prefix)
{
    for (int waited = 0; strncmp(health(c).last_error, prefix, strlen(prefix)) != 0 && waited < MAX_WAIT_MS;
         waited += 5)
        run_for(5);
    struct cache_health h = health(c);
    if (strncmp(h.last_error, prefix, strlen(prefix)) != 0)
        fail_msg("last error '%s', not '%s...'", h.last_error, prefix);
    return h;
}

/* requirepass: the right password works (AUTH before anything, on the
 * data and the subscriber connections); a wrong one, or none, leaves Redis
 * unavailable, says why, and never shows the secret. */
static void test_auth_password(void **state)
{
    const char *const args[] = {"--requirepass", MASTER_PW, NULL};
    static struct redis_server s;
    redis_start(&s, args);
    char url[64];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d/3", s.port); /* SELECT after AUTH */
    struct cache_conf conf = conf_for(url, CACHE_NOTIFY_AUTO);
    conf.redis_password = MASTER_PW;
    struct cache *a = cache_with(&conf, 2); /* up and subscribed: AUTH on both connections */
    struct cache *b = cache_with(&conf, 2);
    round_trip(a, b);
    lease_then_wait_between(a, b, s.port);

    conf.redis_password = "wrong-password-0";
    struct cache *wrong = cache_with(&conf, 0);
    struct cache_health h = wait_error(wrong, "WRONGPASS on AUTH");
    assert_false(h.up);
    assert_false(health_has_secret(wrong, "wrong-password-0"));
    char key[64];
    new_key(key, sizeof(key));
    assert_int_equal(get(wrong, key).status, CACHE_UNAVAILABLE); /* requests go upstream */
    assert_int_equal(lease(wrong, key, 1000), CACHE_LEASE_UNAVAILABLE);

    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", s.port); /* no handshake at all */
    conf = conf_for(url, CACHE_NOTIFY_AUTO);
    struct cache *none = cache_with(&conf, 0);
    for (int waited = 0; !health(none).up && waited < MAX_WAIT_MS; waited += 5)
        run_for(5);
    get(none, key); /* NOAUTH: counted, and the connection is made again */
    h = wait_error(none, "NOAUTH on");
    assert_int_equal(get(none, key).status, CACHE_UNAVAILABLE);
    cache_free(a);
    cache_free(b);
    cache_free(wrong);
    cache_free(none);
    redis_kill(&s);
}

/* An ACL user (Redis 6+) with only the commands jobgate sends, as the
 * README lists them. */
static void test_auth_acl_user(void **state)
{
    const char *const args[] = {"--user",
                                "jg",
                                "on",
                                ">" MASTER_PW,
                                "~*",
                                "&jobgate:answers",
                                "-@all",
                                "+get",
                                "+mget",
                                "+set",
                                "+del",
                                "+exists",
                                "+pttl",
                                "+pexpire",
                                "+incr",
                                "+time",
                                "+zadd",
                                "+zcard",
                                "+zremrangebyscore",
                                "+eval",
                                "+evalsha",
                                "+publish",
                                "+subscribe",
                                "+select",
                                "+role",
                                "+ping",
                                NULL};
    static struct redis_server s;
    redis_start(&s, args);
    char url[64];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d/2", s.port);
    struct cache_conf conf = conf_for(url, CACHE_NOTIFY_AUTO);
    conf.redis_user = "jg";
    conf.redis_password = MASTER_PW;
    struct cache *a = cache_with(&conf, 2);
    struct cache *b = cache_with(&conf, 2);
    round_trip(a, b);
    lease_then_wait_between(a, b, 0);
    assert_int_equal(health(a).errors, 0); /* no command refused */
    assert_int_equal(health(b).errors, 0);

    conf.redis_user = "nobody";
    struct cache *wrong = cache_with(&conf, 0);
    assert_false(wait_error(wrong, "WRONGPASS on AUTH").up);
    assert_false(health_has_secret(wrong, MASTER_PW));
    cache_free(a);
    cache_free(b);
    cache_free(wrong);
    redis_kill(&s);
}

/* A Unix socket with a password. */
static void test_auth_unix_socket(void **state)
{
    static struct redis_server s;
    char sock[96], url[128];
    snprintf(sock, sizeof(sock), "/tmp/jg-cache-test-%d.sock", (int)getpid());
    const char *const args[] = {"--unixsocket", sock, "--unixsocketperm", "700", "--requirepass", MASTER_PW, NULL};
    redis_start(&s, args);
    snprintf(url, sizeof(url), "unix:%s", sock);
    struct cache_conf conf = conf_for(url, CACHE_NOTIFY_AUTO);
    conf.redis_password = MASTER_PW;
    struct cache *a = cache_with(&conf, 2);
    struct cache *b = cache_with(&conf, 2);
    round_trip(a, b);
    conf.redis_password = "wrong-password-1";
    struct cache *wrong = cache_with(&conf, 0);
    assert_false(wait_error(wrong, "WRONGPASS on AUTH").up);
    cache_free(a);
    cache_free(b);
    cache_free(wrong);
    redis_kill(&s);
    unlink(sock);
}

/* Sentinels with their own password, and a master with another: both are
 * sent, each where it belongs. A wrong sentinel password says so. */
static void test_sentinel_with_passwords(void **state)
{
    static struct redis_server master, sentinel;
    const char *const args[] = {"--requirepass", MASTER_PW, NULL};
    redis_start(&master, args);
    sentinel_start_auth(&sentinel, master.port, SENTINEL_PW, MASTER_PW);
    char url[128], endpoint[64];
    snprintf(url, sizeof(url), "sentinel://127.0.0.1:%d/mymaster/1", sentinel.port);
    struct cache_conf conf = conf_for(url, CACHE_NOTIFY_AUTO);
    conf.redis_password = MASTER_PW;
    conf.sentinel_password = SENTINEL_PW;
    struct cache *a = cache_with(&conf, 2);
    struct cache *b = cache_with(&conf, 2);
    snprintf(endpoint, sizeof(endpoint), "127.0.0.1:%d", master.port);
    assert_string_equal(health(a).endpoint, endpoint);
    round_trip(a, b);

    conf.sentinel_password = "wrong-password-2";
    struct cache *wrong = cache_with(&conf, 0);
    struct cache_health h = wait_error(wrong, "WRONGPASS on AUTH to a sentinel");
    assert_false(h.up);
    assert_false(health_has_secret(wrong, "wrong-password-2"));
    cache_free(wrong);
    conf.sentinel_password = SENTINEL_PW;
    conf.redis_password = "wrong-password-3"; /* the sentinels answer; the master refuses */
    wrong = cache_with(&conf, 0);
    assert_false(wait_error(wrong, "WRONGPASS on AUTH").up);
    assert_string_equal(health(wrong).last_error, "WRONGPASS on AUTH");
    cache_free(wrong);
    cache_free(a);
    cache_free(b);
    redis_kill(&sentinel);
    redis_kill(&master);
}

/* ----------------------------------------------- one round trip per miss */

static void on_lookup(enum cache_status status, struct body *b, enum cache_lease_status lease, void *arg)
{
    struct got *g = arg;
    g->calls++;
    g->status = status;
    g->has_body = b != NULL;
    snprintf(g->body, sizeof(g->body), "%s", b ? b->data : "");
    g->lease_calls++;
    g->lease = lease;
}

static struct got get_lease(struct cache *c, const char *key, const struct cache_expect *expect)
{
    struct got g = {0};
    cache_get_lease(c, key, expect, 60000, NULL, on_lookup, &g);
    assert_true(run_until(&g.calls));
    assert_int_equal(g.calls, 1);
    return g;
}

/* Calls of `command` the server has run (INFO commandstats), 0 if none. */
static long long calls_of(int port, const char *command)
{
    char field[64];
    snprintf(field, sizeof(field), "cmdstat_%s:calls=", command);
    long long n = redis_info(port, "commandstats", field);
    return n < 0 ? 0 : n;
}

struct calls {
    long long evalsha, eval, mget, set, get;
};

static struct calls calls_now(int port)
{
    return (struct calls){calls_of(port, "evalsha"), calls_of(port, "eval"), calls_of(port, "mget"),
                          calls_of(port, "set"), calls_of(port, "get")};
}

/* A miss costs one command, the lookup-and-lease script, where Redis runs
 * scripts; behind twemproxy (poll mode) the lookup, then one pipelined
 * write (SET NX and the re-read). A fresh answer takes no lease. */
static void test_one_round_trip_per_miss(void **state)
{
    static struct redis_server s;
    redis_start(&s, NULL);
    struct cache *a = cache_on(s.port, CACHE_NOTIFY_AUTO, 1);
    struct cache *b = cache_on(s.port, CACHE_NOTIFY_AUTO, 1);
    for (int waited = 0; waited < MAX_WAIT_MS &&
                         !(strcmp(health(a).coalescing, "pubsub") == 0 && strcmp(health(b).coalescing, "pubsub") == 0);
         waited += 5)
        run_for(5);
    char key[64], lkey[80];
    new_key(key, sizeof(key));
    snprintf(lkey, sizeof(lkey), "%s:l", key);
    get_lease(a, "warm-up", NULL); /* the first EVALSHA meets NOSCRIPT and loads the script */
    cache_lease_release(a, "warm-up");
    run_for(50);

    struct calls before = calls_now(s.port);
    struct got g = get_lease(a, key, NULL);
    struct calls after = calls_now(s.port);
    assert_int_equal(g.status, CACHE_MISS);
    assert_int_equal(g.lease, CACHE_LEASE_ACQUIRED);
    assert_int_equal(after.evalsha - before.evalsha, 1); /* one command, one round trip */
    assert_int_equal(after.eval - before.eval, 0);
    assert_int_equal(after.mget - before.mget, 1); /* inside the script: both entries */
    assert_int_equal(after.get - before.get, 0);
    assert_int_equal(after.set - before.set, 1); /* inside the script: the lease */
    assert_int_equal(redis_int(s.port, "EXISTS %s", lkey), 1);

    g = get_lease(b, key, NULL); /* another process: a's lease */
    assert_int_equal(g.status, CACHE_MISS);
    assert_int_equal(g.lease, CACHE_LEASE_HELD);
    put(a, key, "RUNNING", 0, 5000, 0);
    run_for(100);
    assert_int_equal(redis_int(s.port, "EXISTS %s", lkey), 0);
    g = get_lease(b, key, NULL); /* fresh: no lease taken */
    assert_int_equal(g.status, CACHE_HIT);
    assert_int_equal(g.lease, CACHE_LEASE_NONE);
    assert_string_equal(g.body, "RUNNING");
    assert_int_equal(redis_int(s.port, "EXISTS %s", lkey), 0);

    new_key(key, sizeof(key)); /* stale only: the copy, and the lease */
    snprintf(lkey, sizeof(lkey), "%s:l", key);
    put(a, key, "RUNNING", 0, 1, 60000);
    run_for(50);
    struct cache *c = cache_on(s.port, CACHE_NOTIFY_AUTO, 1);
    for (int waited = 0; strcmp(health(c).coalescing, "pubsub") != 0 && waited < MAX_WAIT_MS; waited += 5)
        run_for(5);
    g = get_lease(c, key, NULL);
    assert_int_equal(g.status, CACHE_STALE);
    assert_int_equal(g.lease, CACHE_LEASE_ACQUIRED);
    assert_string_equal(g.body, "RUNNING");
    cache_lease_release(c, key);
    cache_free(c);

    /* Poll mode: the lookup alone, then the lease as one pipeline. */
    struct cache *p = cache_on(s.port, CACHE_NOTIFY_POLL, 1);
    new_key(key, sizeof(key));
    before = calls_now(s.port);
    g = get_lease(p, key, NULL);
    assert_int_equal(g.status, CACHE_MISS);
    assert_int_equal(g.lease, CACHE_LEASE_NONE);
    assert_int_equal(lease(p, key, 60000), CACHE_LEASE_ACQUIRED);
    after = calls_now(s.port);
    assert_int_equal(after.mget - before.mget, 2); /* the lookup; the re-read, sent with the SET */
    assert_int_equal(after.set - before.set, 1);
    assert_int_equal(after.evalsha - before.evalsha, 0);
    assert_int_equal(after.eval - before.eval, 0);
    cache_lease_release(p, key);
    assert_int_equal(health(a).errors, 0);
    assert_int_equal(health(p).errors, 0);
    cache_free(p);
    cache_free(a);
    cache_free(b);
    redis_kill(&s);
}

/* ---------------------------------------------------- entries on read */

static const char *const elb_terminal[] = {"SUCCESS", "FAIL", NULL};

/* The ELB rule's job spec: state "status", identity "job_id". */
static struct classify_spec *elb_spec(void)
{
    struct classify_spec *s = calloc(1, sizeof(*s));
    assert_non_null(s);
    assert_int_equal(jsonpath_compile(&s->state, "status"), 0);
    assert_int_equal(jsonpath_compile(&s->identity, "job_id"), 0);
    s->terminal = calloc(2, sizeof(char *));
    assert_non_null(s->terminal);
    for (size_t i = 0; elb_terminal[i]; i++)
        s->terminal[s->nterminal++] = strdup(elb_terminal[i]);
    return s;
}

/* SET `key``suffix` to a hand-written entry, as anyone who can write to Redis could. */
static void plant(int port, const char *key, const char *suffix, int terminal, const char *body)
{
    char value[512], full[128];
    snprintf(value, sizeof(value), "JG1 %lld %d 200 %lld 0\n%s", (long long)clock_wall_ms(), terminal,
             terminal ? 0LL : (long long)clock_wall_ms() + 60000, body);
    snprintf(full, sizeof(full), "%s%s", key, suffix);
    redisReply *rep = redis_cmd(port, "SET %s %s", full, value);
    assert_non_null(rep);
    freeReplyObject(rep);
}

/* An entry read from Redis is served only if it is about the job asked
 * for, in a state that agrees with its slot; the rest are misses, counted. */
static void test_entries_checked_on_read(void **state)
{
    int port = shared_port();
    struct classify_spec *spec = elb_spec();
    struct cache *a = cache_on(port, CACHE_NOTIFY_AUTO, 2);
    const struct cache_expect j1 = {.job = spec, .identity = "J1"}, j2 = {.job = spec, .identity = "J2"};
    char key[64];
    new_key(key, sizeof(key));
    plant(port, key, ":t", 1, "{\"job_id\":\"J1\",\"status\":\"SUCCESS\"}");
    struct got g = {0};
    cache_get(a, key, &j1, on_get, &g);
    assert_true(run_until(&g.calls));
    assert_int_equal(g.status, CACHE_HIT); /* the real thing */
    assert_int_equal(health(a).rejected, 0);

    struct {
        const char *suffix;
        int terminal;
        const char *body;
    } forged[] = {
        {":t", 1, "{\"job_id\":\"J1\",\"status\":\"SUCCESS\"}"}, /* another job's answer, for J2 */
        {":t", 1, "{\"job_id\":\"J2\",\"status\":\"RUNNING\"}"}, /* still changing, under :t */
        {":p", 0, "{\"job_id\":\"J2\",\"status\":\"SUCCESS\"}"}, /* terminal, under :p */
        {":t", 0, "{\"job_id\":\"J2\",\"status\":\"SUCCESS\"}"}, /* a head that disagrees with its slot */
        {":t", 1, "not a job"},
        {":p", 0, "{\"job_id\":\"J2\",\"status\":\"RUNNING\",\"STATUS\":\"SUCCESS\"}"}, /* ambiguous */
    };
    for (size_t i = 0; i < sizeof(forged) / sizeof(forged[0]); i++) {
        uint64_t rejected = health(a).rejected;
        new_key(key, sizeof(key));
        plant(port, key, forged[i].suffix, forged[i].terminal, forged[i].body);
        memset(&g, 0, sizeof(g));
        cache_get(a, key, &j2, on_get, &g);
        assert_true(run_until(&g.calls));
        if (g.status != CACHE_MISS)
            fail_msg("forged entry %zu was served", i);
        assert_int_equal(health(a).rejected, rejected + 1);
        g = get_lease(a, key, &j2); /* the same through the script: a miss, and no lease for it */
        assert_int_equal(g.status, CACHE_MISS);
        memset(&g, 0, sizeof(g));
        cache_get(a, key, &j2, on_get, &g); /* not kept in process either */
        assert_true(run_until(&g.calls));
        assert_int_equal(g.status, CACHE_MISS);
    }
    /* A wait is no way in either: it never takes the plant for the answer. */
    new_key(key, sizeof(key));
    assert_int_equal(lease(a, key, 60000), CACHE_LEASE_ACQUIRED);
    struct cache *b = cache_on(port, CACHE_NOTIFY_POLL, 1);
    memset(&g, 0, sizeof(g));
    assert_non_null(cache_wait(b, key, &j2, 300, on_get, &g));
    plant(port, key, ":t", 1, "{\"job_id\":\"J1\",\"status\":\"SUCCESS\"}");
    assert_true(run_until(&g.calls));
    assert_int_equal(g.status, CACHE_MISS); /* its deadline */
    cache_lease_release(a, key);
    cache_free(a);
    cache_free(b);
    classify_spec_free(spec);
    free(spec);
}

#define ENTRY_KEY "entry-key-0123456789abcdef"

/* With an entry key, entries carry an HMAC over key and value: one written
 * without the key, or moved to another key, is not served. */
static void test_entry_mac(void **state)
{
    int port = shared_port();
    char url[64];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", port);
    struct cache_conf conf = conf_for(url, CACHE_NOTIFY_AUTO);
    conf.entry_key = ENTRY_KEY;
    struct cache *a = cache_with(&conf, 1);
    struct cache *b = cache_with(&conf, 1);
    conf.entry_key = "another-key-0123456789abcdef";
    struct cache *other = cache_with(&conf, 1);
    struct cache *unsigned_reader = cache_on(port, CACHE_NOTIFY_AUTO, 1);
    char key[64], tkey[80], moved[64], mkey[80];
    new_key(key, sizeof(key));
    snprintf(tkey, sizeof(tkey), "%s:t", key);
    put(a, key, "SUCCESS", 1, -1, 0);
    run_for(100);
    redisReply *rep = redis_cmd(port, "GET %s", tkey);
    assert_non_null(rep);
    assert_int_equal(rep->type, REDIS_REPLY_STRING);
    assert_non_null(strstr(rep->str, " m="));
    assert_int_equal(get(b, key).status, CACHE_HIT);               /* the same key: served */
    assert_int_equal(get(unsigned_reader, key).status, CACHE_HIT); /* no key: the MAC is not read */
    assert_int_equal(get(other, key).status, CACHE_MISS);          /* another key: refused */
    assert_int_equal(health(other).rejected, 1);

    new_key(moved, sizeof(moved)); /* a signed entry copied to another key */
    snprintf(mkey, sizeof(mkey), "%s:t", moved);
    redisReply *set = redis_cmd(port, "SET %s %b", mkey, rep->str, rep->len);
    freeReplyObject(set);
    freeReplyObject(rep);
    assert_int_equal(get(b, moved).status, CACHE_MISS);
    new_key(moved, sizeof(moved)); /* written without the key */
    plant(port, moved, ":t", 1, "SUCCESS");
    assert_int_equal(get(b, moved).status, CACHE_MISS);
    assert_int_equal(health(b).rejected, 2);
    cache_free(a);
    cache_free(b);
    cache_free(other);
    cache_free(unsigned_reader);

    conf.entry_key = "tiny-k3y";
    char err[256];
    assert_null(cache_new(base, &conf, err, sizeof(err)));
    assert_null(strstr(err, "tiny-k3y"));
}

/* ------------------------------------------------------ the lease leak */

/* Send `command` to the server on `port` without waiting for its answer
 * (DEBUG SLEEP: Redis stalls meanwhile). Free the context once it is over. */
static redisContext *send_only(int port, const char *command)
{
    redisContext *rc = redisConnect("127.0.0.1", port);
    assert_true(rc && !rc->err);
    assert_int_equal(redisAppendCommand(rc, command), REDIS_OK);
    int done = 0;
    while (!done)
        assert_int_equal(redisBufferWrite(rc, &done), REDIS_OK);
    return rc;
}

/* A lease granted after its budget ran out: its caller was told
 * UNAVAILABLE and goes upstream without it; when that call fails it stores
 * nothing and releases nothing. The lease must not outlive it: released as
 * soon as it is granted (issue 13's leak). Scripted and pipelined. */
static void late_lease_released(enum cache_notify notify, int with_lookup)
{
    const char *const args[] = {"--enable-debug-command", "local", NULL};
    static struct redis_server s;
    redis_start(&s, args);
    char url[64], key[64], lkey[80];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", s.port);
    struct cache_conf conf = conf_for(url, notify);
    conf.redis_budget_ms = 100;
    struct cache *c = cache_with(&conf, notify == CACHE_NOTIFY_POLL ? 1 : 2);
    new_key(key, sizeof(key));
    snprintf(lkey, sizeof(lkey), "%s:l", key);
    get_lease(c, "warm-up", NULL); /* the script loaded */
    cache_lease_release(c, "warm-up");
    run_for(50);
    redisContext *sleeper = send_only(s.port, "DEBUG SLEEP 1");
    run_for(100); /* Redis is asleep */
    if (with_lookup) {
        struct got g = get_lease(c, key, NULL);
        assert_int_equal(g.status, CACHE_UNAVAILABLE);
        assert_int_equal(g.lease, CACHE_LEASE_UNAVAILABLE);
    } else {
        assert_int_equal(lease(c, key, 60000), CACHE_LEASE_UNAVAILABLE);
    }
    /* The caller went upstream and failed: it calls nothing more. */
    run_for(1500); /* Redis woke up, granted the lease, and it was released */
    redisFree(sleeper);
    assert_int_equal(redis_int(s.port, "EXISTS %s", lkey), 0);
    assert_true(health(c).timeouts >= 1);
    cache_free(c);
    redis_kill(&s);
}

static void test_late_lease_released_scripted(void **state)
{
    late_lease_released(CACHE_NOTIFY_AUTO, 1);
}

static void test_late_lease_released_pipelined(void **state)
{
    late_lease_released(CACHE_NOTIFY_POLL, 0);
}

/* Releasing a lease this cache does not hold does nothing. */
static void test_release_not_held(void **state)
{
    int port = shared_port();
    struct cache *a = cache_on(port, CACHE_NOTIFY_PUBSUB, 1);
    struct cache *b = cache_on(port, CACHE_NOTIFY_PUBSUB, 1);
    char key[64], lkey[80];
    new_key(key, sizeof(key));
    snprintf(lkey, sizeof(lkey), "%s:l", key);
    long long published = redis_info(port, "commandstats", "cmdstat_publish:calls=");
    cache_lease_release(b, key); /* nothing held anywhere */
    assert_int_equal(lease(a, key, 60000), CACHE_LEASE_ACQUIRED);
    cache_lease_release(b, key); /* a's, not b's */
    run_for(100);
    assert_int_equal(redis_int(port, "EXISTS %s", lkey), 1);
    assert_int_equal(redis_info(port, "commandstats", "cmdstat_publish:calls="), published);
    cache_lease_release(a, key);
    run_for(100);
    assert_int_equal(redis_int(port, "EXISTS %s", lkey), 0);
    cache_free(a);
    cache_free(b);
}

int main(void)
{
    /* clang-format off */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_memory_fresh_stale_miss),
        cmocka_unit_test(test_redis_fresh_stale_miss),
        cmocka_unit_test(test_terminal_never_stale_nor_replaced),
        cmocka_unit_test(test_stale_never_hides_fresher),
        cmocka_unit_test(test_redis_down_serves_in_process_copies),
        cmocka_unit_test(test_wait_woken_by_put_pubsub),
        cmocka_unit_test(test_wait_woken_by_put_poll),
        cmocka_unit_test(test_wait_woken_by_put_auto),
        cmocka_unit_test(test_lease_expiry_wakes_waiter_pubsub),
        cmocka_unit_test(test_lease_expiry_wakes_waiter_poll),
        cmocka_unit_test(test_release_wakes_waiter),
        cmocka_unit_test(test_store_keeps_anothers_lease),
        cmocka_unit_test(test_lease_after_a_store_is_held),
        cmocka_unit_test(test_wait_times_out),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_redis_killed_mid_wait),
        cmocka_unit_test(test_oom_on_set),
        cmocka_unit_test(test_readonly_replica),
        cmocka_unit_test(test_auto_without_pubsub_polls),
        cmocka_unit_test(test_sentinel_names_the_master),
        cmocka_unit_test(test_sentinel_unknown_master),
        cmocka_unit_test(test_sentinel_follows_a_failover),
        cmocka_unit_test(test_auth_password),
        cmocka_unit_test(test_auth_acl_user),
        cmocka_unit_test(test_auth_unix_socket),
        cmocka_unit_test(test_sentinel_with_passwords),
        cmocka_unit_test(test_one_round_trip_per_miss),
        cmocka_unit_test(test_entries_checked_on_read),
        cmocka_unit_test(test_entry_mac),
        cmocka_unit_test(test_late_lease_released_scripted),
        cmocka_unit_test(test_late_lease_released_pipelined),
        cmocka_unit_test(test_release_not_held),
    };
    /* clang-format on */
    return cmocka_run_group_tests_name("cache", tests, group_setup, group_teardown);
}
