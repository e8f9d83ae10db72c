/*
 * Unit tests for guard (proxy/guard.h is the contract): the token buckets,
 * the 429 backoff and the circuit breaker, driven by a synthetic clock; the
 * same for guard cells (the GCRA form the shared stores keep), and the
 * shared-memory store (guardshm.h) across forked processes.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/wait.h>
#include <unistd.h>

#include "guard.h"
#include "guardshm.h"
#include "unit_support.h"

/* A fixed-seed generator of our own, so every run sees the same patterns. */
static uint64_t rng_state = 0x6a6f626761746521ULL;

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Uniform in [lo, hi]. */
static int64_t rnd_range(int64_t lo, int64_t hi)
{
    return lo + (int64_t)(rnd() % (uint64_t)(hi - lo + 1));
}

static struct guard *guard_with(const struct guard_conf *conf)
{
    char err[256] = "";
    struct guard *g = guard_new(conf, err, sizeof(err));
    if (!g)
        print_error("guard_new: %s\n", err);
    assert_non_null(g);
    return g;
}

static struct guard_conf conf_default(void)
{
    struct guard_conf c;
    guard_conf_defaults(&c);
    return c;
}

/* Admit `n` at `now`, and check they all are. */
static void admit_n(struct guard *g, const char *project, int64_t now, int n)
{
    for (int i = 0; i < n; i++)
        assert_int_equal(guard_admit(g, project, now).refusal, GUARD_ADMITTED);
}

/* ------------------------------------------------------------ settings */

static void test_defaults(void **state)
{
    (void)state;
    struct guard_conf c = conf_default();
    char err[256];
    assert_int_equal(guard_conf_check(&c, err, sizeof(err)), 0);
    /* Never past Huawei's 200/s, even in the second that spends the whole burst. */
    assert_true(c.rate + c.burst <= 200.0);
    assert_true(c.throttle_ms >= 2000 && c.throttle_ms + c.throttle_jitter_ms <= 5000);
    assert_int_equal(c.breaker_threshold, 5);
    assert_int_equal(c.breaker_cooldown_ms, 5000);
    assert_int_equal(c.breaker_max_ms, 60000);
    assert_int_equal(c.project_rate, 0);
}

static void test_bad_settings_refused(void **state)
{
    (void)state;
    struct guard_conf c;
    char err[256];
    int failed = 0;
#define REFUSED(what, stmt)                                                                    \
    do {                                                                                       \
        c = conf_default();                                                                    \
        stmt;                                                                                  \
        err[0] = 0;                                                                            \
        UNIT_EXPECT(failed, guard_conf_check(&c, err, sizeof(err)) < 0 && err[0], "%s", what); \
        UNIT_EXPECT(failed, guard_new(&c, err, sizeof(err)) == NULL, "%s (guard_new)", what);  \
    } while (0)
    REFUSED("rate 0", c.rate = 0);
    REFUSED("rate NaN", c.rate = NAN);
    REFUSED("rate negative", c.rate = -5);
    REFUSED("burst below one token", c.burst = 0.5);
    REFUSED("project rate negative", c.project_rate = -1);
    REFUSED("project burst 0", (c.project_rate = 1, c.project_burst = 0));
    REFUSED("project slots 0", (c.project_rate = 1, c.project_slots = 0));
    REFUSED("throttle 0", c.throttle_ms = 0);
    REFUSED("throttle max below default", c.throttle_max_ms = c.throttle_ms - 1);
    REFUSED("negative jitter", c.throttle_jitter_ms = -1);
    REFUSED("threshold 0", c.breaker_threshold = 0);
    REFUSED("cool-down 0", c.breaker_cooldown_ms = 0);
    REFUSED("max below cool-down", c.breaker_max_ms = c.breaker_cooldown_ms - 1);
    REFUSED("probe timeout 0", c.probe_timeout_ms = 0);
    REFUSED("cool-down over a day", (c.breaker_cooldown_ms = 86400001, c.breaker_max_ms = 86400001));
#undef REFUSED
    assert_int_equal(failed, 0);
}

/* ---------------------------------------------------------- token bucket */

/*
 * The property the bucket exists for: over any window [t_i, t_j] between two
 * admissions, the admitted count is at most rate * (t_j - t_i) + burst.
 * Checked on every pair of admissions of a few thousand random arrival
 * patterns (random rate, fractional or not, burst, quiet spells and floods),
 * and the bucket must not be stingy either: a refusal's wait is exact.
 */
static void test_bucket_never_exceeds_rate_and_burst(void **state)
{
    (void)state;
    enum { PATTERNS = 3000, ARRIVALS = 240 };
    static int64_t admitted_at[ARRIVALS];
    long total_admitted = 0, total_refused = 0;

    for (int pattern = 0; pattern < PATTERNS; pattern++) {
        struct guard_conf c = conf_default();
        c.rate = (double)rnd_range(1, 400000) / 1000.0; /* 0.001 .. 400/s */
        if (pattern % 3 == 0)
            c.rate = (double)rnd_range(1, 50) / 10.0; /* small fractional rates */
        c.burst = (double)rnd_range(1, 50);
        if (pattern % 5 == 0)
            c.burst += 0.5;
        struct guard *g = guard_with(&c);

        int64_t now = rnd_range(0, 1000000);
        int n = 0;
        int64_t gap_max = rnd_range(0, 3) == 0 ? 2000 : (int64_t)(1000.0 / c.rate) + 1;
        for (int a = 0; a < ARRIVALS; a++) {
            /* floods (many at one instant), steady streams and quiet spells */
            int64_t r = rnd_range(0, 9);
            now += r < 4 ? 0 : r < 9 ? rnd_range(0, gap_max) : rnd_range(0, 20000 + gap_max);
            struct guard_verdict v = guard_admit(g, NULL, now);
            if (v.refusal == GUARD_ADMITTED) {
                admitted_at[n++] = now;
                assert_int_equal(v.wait_ms, 0);
            } else {
                assert_int_equal(v.refusal, GUARD_RATE_LIMITED);
                assert_true(v.wait_ms >= 1);
                assert_int_equal(v.retry_after_s, (v.wait_ms + 999) / 1000);
                total_refused++;
            }
        }
        total_admitted += n;
        for (int i = 0; i < n; i++) {
            for (int j = i; j < n; j++) {
                double window_s = (double)(admitted_at[j] - admitted_at[i]) / 1000.0;
                double allowed = c.rate * window_s + c.burst;
                if ((double)(j - i + 1) > allowed + 1e-9) {
                    print_error("pattern %d: rate %g burst %g: %d admitted in %.3f s (allowed %.3f)\n", pattern, c.rate,
                                c.burst, j - i + 1, window_s, allowed);
                    fail();
                }
            }
        }
        guard_free(g);
    }
    /* The patterns must exercise both sides. */
    print_message("# %ld admitted, %ld refused\n", total_admitted, total_refused);
    assert_true(total_admitted > PATTERNS * 20);
    assert_true(total_refused > PATTERNS * 20);
}

/* A refusal's wait is exact: one ms earlier still refused, at the wait admitted. */
static void test_bucket_wait_is_exact(void **state)
{
    (void)state;
    for (int round = 0; round < 500; round++) {
        struct guard_conf c = conf_default();
        c.rate = (double)rnd_range(1, 300000) / 1000.0;
        c.burst = (double)rnd_range(1, 10);
        struct guard *g = guard_with(&c);
        int64_t t = 1000;
        /* At one instant the bucket admits at most its burst: a bucket that never
         * refuses fails here rather than looping forever. */
        int admitted = 0;
        while (admitted <= (int)c.burst && guard_admit(g, NULL, t).refusal == GUARD_ADMITTED)
            admitted++;
        assert_int_equal(admitted, (int)c.burst);
        struct guard_verdict v = guard_admit(g, NULL, t);
        assert_int_equal(v.refusal, GUARD_RATE_LIMITED);
        if (v.wait_ms > 1)
            assert_int_equal(guard_admit(g, NULL, t + v.wait_ms - 1).refusal, GUARD_RATE_LIMITED);
        assert_int_equal(guard_admit(g, NULL, t + v.wait_ms).refusal, GUARD_ADMITTED);
        guard_free(g);
    }
}

static void test_bucket_steady_rate(void **state)
{
    (void)state;
    struct guard_conf c = conf_default(); /* 100/s, burst 20 */
    struct guard *g = guard_with(&c);
    admit_n(g, NULL, 0, 20);
    struct guard_verdict v = guard_admit(g, NULL, 0);
    assert_int_equal(v.refusal, GUARD_RATE_LIMITED);
    assert_int_equal(v.wait_ms, 10);
    assert_int_equal(v.retry_after_s, 1);
    /* One every 10 ms goes through, forever. */
    for (int64_t t = 10; t <= 10000; t += 10) {
        assert_int_equal(guard_admit(g, NULL, t).refusal, GUARD_ADMITTED);
        assert_int_equal(guard_admit(g, NULL, t).refusal, GUARD_RATE_LIMITED);
    }
    /* A fractional rate: 0.5/s, burst 1 -> one per 2 s, Retry-After 2. */
    guard_free(g);
    c.rate = 0.5;
    c.burst = 1;
    g = guard_with(&c);
    admit_n(g, NULL, 5000, 1);
    v = guard_admit(g, NULL, 5000);
    assert_int_equal(v.refusal, GUARD_RATE_LIMITED);
    assert_int_equal(v.wait_ms, 2000);
    assert_int_equal(v.retry_after_s, 2);
    v = guard_admit(g, NULL, 5001);
    assert_int_equal(v.retry_after_s, 2); /* 1999 ms, rounded up */
    admit_n(g, NULL, 7000, 1);
    guard_free(g);
}

static void test_time_going_backwards_refills_nothing(void **state)
{
    (void)state;
    struct guard_conf c = conf_default();
    c.rate = 1;
    c.burst = 1;
    struct guard *g = guard_with(&c);
    admit_n(g, NULL, 100000, 1);
    assert_int_equal(guard_admit(g, NULL, 50000).refusal, GUARD_RATE_LIMITED);
    assert_int_equal(guard_admit(g, NULL, 100999).refusal, GUARD_RATE_LIMITED);
    admit_n(g, NULL, 101000, 1);
    guard_free(g);
}

/* ---------------------------------------------------- per-project level */

static void test_projects_are_isolated(void **state)
{
    (void)state;
    struct guard_conf c = conf_default();
    c.project_rate = 1;
    c.project_burst = 3;
    struct guard *g = guard_with(&c);
    admit_n(g, "aaaa", 0, 3);
    struct guard_verdict v = guard_admit(g, "aaaa", 0);
    assert_int_equal(v.refusal, GUARD_RATE_LIMITED);
    assert_int_equal(v.wait_ms, 1000);
    /* Another project is not held back by the first one's flood. */
    admit_n(g, "bbbb", 0, 3);
    assert_int_equal(guard_admit(g, "bbbb", 0).refusal, GUARD_RATE_LIMITED);
    /* No project: only the upstream's bucket applies. */
    admit_n(g, NULL, 0, 5);
    admit_n(g, "", 0, 5);
    admit_n(g, "aaaa", 1000, 1);

    /* The upstream's bucket still caps the sum of all projects. */
    guard_free(g);
    c.rate = 10;
    c.burst = 5;
    c.project_rate = 100;
    c.project_burst = 100;
    g = guard_with(&c);
    char project[16];
    int admitted = 0;
    for (int i = 0; i < 50; i++) {
        snprintf(project, sizeof(project), "p%d", i);
        admitted += guard_admit(g, project, 0).refusal == GUARD_ADMITTED;
    }
    assert_int_equal(admitted, 5);

    struct guard_state s;
    guard_state(g, 0, &s);
    assert_int_equal(s.refused[GUARD_RATE_LIMITED], 45);
    assert_int_equal(s.admitted, 5);
    guard_free(g);
}

static void test_project_table_is_bounded_lru(void **state)
{
    (void)state;
    struct guard_conf c = conf_default();
    c.project_rate = 0.001; /* no refill within the test */
    c.project_burst = 1;
    c.project_slots = 4;
    struct guard *g = guard_with(&c);
    const char *ids[] = {"A", "B", "C", "D"};
    for (int i = 0; i < 4; i++)
        admit_n(g, ids[i], i, 1);
    assert_int_equal(guard_admit(g, "A", 10).refusal, GUARD_RATE_LIMITED); /* A: most recent now */
    admit_n(g, "E", 11, 1);                                                /* evicts B, the LRU */

    struct guard_state s;
    guard_state(g, 12, &s);
    assert_int_equal(s.projects, 4);
    assert_int_equal(s.project_evictions, 1);
    /* A, C, D and E kept their empty buckets; B starts again from a full one. */
    assert_int_equal(guard_admit(g, "A", 13).refusal, GUARD_RATE_LIMITED);
    assert_int_equal(guard_admit(g, "E", 13).refusal, GUARD_RATE_LIMITED);
    admit_n(g, "B", 14, 1); /* ... which evicts C */
    assert_int_equal(guard_admit(g, "D", 15).refusal, GUARD_RATE_LIMITED);
    admit_n(g, "C", 16, 1);

    /* Thousands of projects never grow the table past its bound. */
    char project[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(project, sizeof(project), "project-%d", i);
        guard_admit(g, project, 100 + i);
    }
    guard_state(g, 6000, &s);
    assert_int_equal(s.projects, 4);

    /* An absurdly long id is refused, not stored. */
    char longid[GUARD_PROJECT_ID_MAX + 2];
    memset(longid, 'x', sizeof(longid) - 1);
    longid[sizeof(longid) - 1] = 0;
    assert_int_equal(guard_admit(g, longid, 7000).refusal, GUARD_BAD_PROJECT);
    longid[GUARD_PROJECT_ID_MAX] = 0;
    assert_int_equal(guard_admit(g, longid, 7000).refusal, GUARD_ADMITTED);
    guard_free(g);
}

/* ------------------------------------------------------- 429 backoff */

static void test_throttle_honours_retry_after(void **state)
{
    (void)state;
    struct guard_conf c = conf_default();
    struct guard *g = guard_with(&c);
    admit_n(g, NULL, 1000, 1);
    guard_throttled(g, 1000, 7);
    struct guard_verdict v = guard_admit(g, NULL, 1000);
    assert_int_equal(v.refusal, GUARD_THROTTLED);
    assert_int_equal(v.wait_ms, 7000);
    assert_int_equal(v.retry_after_s, 7);
    /* A shorter backoff reported later (another call's 429) does not shorten it. */
    guard_throttled(g, 2000, 1);
    v = guard_admit(g, NULL, 7999);
    assert_int_equal(v.refusal, GUARD_THROTTLED);
    assert_int_equal(v.wait_ms, 1);
    assert_int_equal(v.retry_after_s, 1);
    admit_n(g, NULL, 8000, 1);

    struct guard_state s;
    guard_state(g, 8000, &s);
    assert_int_equal(s.throttles, 2);
    assert_int_equal(s.throttled_remaining_ms, 0);
    assert_int_equal(s.refused[GUARD_THROTTLED], 2);

    /* A huge Retry-After is capped. */
    guard_throttled(g, 10000, 1000000);
    assert_int_equal(guard_admit(g, NULL, 10000).wait_ms, c.throttle_max_ms);
    guard_free(g);
}

static void test_throttle_default_and_jitter(void **state)
{
    (void)state;
    struct guard_conf c = conf_default();
    c.throttle_jitter_ms = 0;
    struct guard *g = guard_with(&c);
    guard_throttled(g, 0, 0); /* no Retry-After */
    assert_int_equal(guard_admit(g, NULL, 0).wait_ms, 3000);
    assert_int_equal(guard_admit(g, NULL, 2999).refusal, GUARD_THROTTLED);
    admit_n(g, NULL, 3000, 1);
    guard_free(g);

    /* With jitter: within [default, default + jitter], repeatable by seed, and varied. */
    int64_t first[20], again[20];
    int distinct = 0;
    for (int pass = 0; pass < 2; pass++) {
        c = conf_default();
        c.seed = 42;
        g = guard_with(&c);
        for (int i = 0; i < 20; i++) {
            int64_t t = (int64_t)i * 100000;
            guard_throttled(g, t, -1);
            int64_t w = guard_admit(g, NULL, t).wait_ms;
            assert_true(w >= c.throttle_ms && w <= c.throttle_ms + c.throttle_jitter_ms);
            (pass ? again : first)[i] = w;
            if (!pass && i && w != first[i - 1])
                distinct++;
        }
        guard_free(g);
    }
    assert_memory_equal(first, again, sizeof(first));
    assert_true(distinct > 10);
}

/* ----------------------------------------------------- circuit breaker */

static void expect_circuit(struct guard *g, int64_t now, enum guard_circuit want)
{
    struct guard_state s;
    guard_state(g, now, &s);
    if (s.circuit != want)
        print_error("at %lld: circuit %s, expected %s\n", (long long)now, guard_circuit_name(s.circuit),
                    guard_circuit_name(want));
    assert_int_equal(s.circuit, want);
}

/* Trip the breaker (threshold failures at `now`). */
static void trip(struct guard *g, int64_t now, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        admit_n(g, NULL, now, 1);
        guard_result(g, now, GUARD_TRANSPORT_FAILURE);
    }
}

static void test_breaker_opens_after_threshold(void **state)
{
    (void)state;
    struct guard_conf c = conf_default();
    struct guard *g = guard_with(&c);
    trip(g, 0, 4);
    expect_circuit(g, 0, GUARD_CLOSED);
    /* A success in between starts the count again. */
    admit_n(g, NULL, 0, 1);
    guard_result(g, 0, GUARD_SUCCESS);
    trip(g, 0, 4);
    expect_circuit(g, 0, GUARD_CLOSED);
    trip(g, 0, 1);
    expect_circuit(g, 0, GUARD_OPEN);

    struct guard_verdict v = guard_admit(g, NULL, 0);
    assert_int_equal(v.refusal, GUARD_CIRCUIT_OPEN);
    assert_int_equal(v.wait_ms, 5000);
    assert_int_equal(v.retry_after_s, 5);
    struct guard_state s;
    guard_state(g, 1000, &s);
    assert_int_equal(s.opened, 1);
    assert_int_equal(s.open_remaining_ms, 4000);
    /* Late answers while open change nothing. */
    guard_result(g, 1000, GUARD_SUCCESS);
    guard_result(g, 1000, GUARD_TRANSPORT_FAILURE);
    v = guard_admit(g, NULL, 4999);
    assert_int_equal(v.refusal, GUARD_CIRCUIT_OPEN);
    assert_int_equal(v.retry_after_s, 1);
    expect_circuit(g, 4999, GUARD_OPEN);
    guard_free(g);
}

static void test_breaker_half_open_admits_exactly_one(void **state)
{
    (void)state;
    struct guard_conf c = conf_default();
    struct guard *g = guard_with(&c);
    trip(g, 0, 5);
    expect_circuit(g, 5000, GUARD_HALF_OPEN);
    struct guard_verdict v = guard_admit(g, NULL, 5000);
    assert_int_equal(v.refusal, GUARD_ADMITTED);
    assert_int_equal(v.probe, 1);
    /* Everyone else waits for the probe, even with tokens to spare. */
    for (int i = 0; i < 100; i++) {
        v = guard_admit(g, NULL, 5000 + i * 10);
        assert_int_equal(v.refusal, GUARD_CIRCUIT_OPEN);
        assert_int_equal(v.retry_after_s, 1);
    }
    /* Probe succeeds: closed, everyone admitted again, nothing more a probe. */
    guard_result(g, 6000, GUARD_SUCCESS);
    expect_circuit(g, 6000, GUARD_CLOSED);
    v = guard_admit(g, NULL, 6000);
    assert_int_equal(v.refusal, GUARD_ADMITTED);
    assert_int_equal(v.probe, 0);
    admit_n(g, NULL, 6000, 5);
    guard_free(g);
}

static void test_breaker_failed_probe_reopens_longer_capped(void **state)
{
    (void)state;
    struct guard_conf c = conf_default();
    struct guard *g = guard_with(&c);
    trip(g, 0, 5);
    int64_t now = 0;
    const int64_t expected[] = {10000, 20000, 40000, 60000, 60000, 60000};
    int64_t cooldown = 5000;
    for (size_t i = 0; i < sizeof(expected) / sizeof(expected[0]); i++) {
        now += cooldown; /* the cool-down just ended */
        assert_int_equal(guard_admit(g, NULL, now - 1).refusal, GUARD_CIRCUIT_OPEN);
        struct guard_verdict v = guard_admit(g, NULL, now);
        assert_int_equal(v.refusal, GUARD_ADMITTED);
        assert_int_equal(v.probe, 1);
        guard_result(g, now, GUARD_TRANSPORT_FAILURE);
        expect_circuit(g, now, GUARD_OPEN);
        v = guard_admit(g, NULL, now);
        assert_int_equal(v.wait_ms, expected[i]);
        cooldown = expected[i];
    }
    /* A success finally closes it, and the next opening is back to 5 s. */
    now += cooldown;
    admit_n(g, NULL, now, 1);
    guard_result(g, now, GUARD_SUCCESS);
    expect_circuit(g, now, GUARD_CLOSED);
    trip(g, now, 5);
    assert_int_equal(guard_admit(g, NULL, now).wait_ms, 5000);
    guard_free(g);
}

static void test_breaker_5xx_counts_when_configured(void **state)
{
    (void)state;
    struct guard_conf c = conf_default();
    struct guard *g = guard_with(&c);
    for (int i = 0; i < 5; i++) {
        admit_n(g, NULL, 0, 1);
        guard_result(g, 0, GUARD_UPSTREAM_5XX);
    }
    expect_circuit(g, 0, GUARD_OPEN);
    guard_free(g);

    c.breaker_count_5xx = 0;
    g = guard_with(&c);
    for (int i = 0; i < 50; i++) {
        admit_n(g, NULL, i * 100, 1);
        guard_result(g, i * 100, GUARD_UPSTREAM_5XX);
    }
    expect_circuit(g, 5000, GUARD_CLOSED);
    /* ... yet transport failures still do. */
    trip(g, 6000, 5);
    expect_circuit(g, 6000, GUARD_OPEN);
    guard_free(g);
}

static void test_breaker_lost_or_abandoned_probe(void **state)
{
    (void)state;
    struct guard_conf c = conf_default();
    struct guard *g = guard_with(&c);
    trip(g, 0, 5);
    /* An abandoned probe lets another one go. */
    assert_int_equal(guard_admit(g, NULL, 5000).probe, 1);
    guard_result(g, 5001, GUARD_ABANDONED);
    expect_circuit(g, 5001, GUARD_HALF_OPEN);
    assert_int_equal(guard_admit(g, NULL, 5002).probe, 1);
    /* A probe never reported is a failed one once probe_timeout_ms passes. */
    assert_int_equal(guard_admit(g, NULL, 5002 + c.probe_timeout_ms - 1).refusal, GUARD_CIRCUIT_OPEN);
    expect_circuit(g, 5002 + c.probe_timeout_ms, GUARD_OPEN);
    assert_int_equal(guard_admit(g, NULL, 5002 + c.probe_timeout_ms).wait_ms, 10000);
    guard_free(g);
}

static void test_precedence_and_429_liveness(void **state)
{
    (void)state;
    struct guard_conf c = conf_default();
    c.burst = 1;
    c.rate = 1;
    struct guard *g = guard_with(&c);
    admit_n(g, NULL, 0, 1);
    guard_throttled(g, 0, 10);
    /* Throttled and out of tokens: throttled is said. */
    assert_int_equal(guard_admit(g, NULL, 0).refusal, GUARD_THROTTLED);
    for (int i = 0; i < 4; i++)
        trip(g, 10000 + i * 1000, 1);
    guard_throttled(g, 14000, 30); /* a 429 proves upstream alive: the count starts again */
    struct guard_state s;
    guard_state(g, 14000, &s);
    assert_int_equal(s.consecutive_failures, 0);
    for (int i = 0; i < 4; i++)
        guard_result(g, 14000, GUARD_TRANSPORT_FAILURE);
    expect_circuit(g, 14000, GUARD_CLOSED);
    guard_result(g, 14000, GUARD_TRANSPORT_FAILURE);
    /* Open and throttled: circuit open is said. */
    guard_result(g, 14000, GUARD_TRANSPORT_FAILURE);
    assert_int_equal(guard_admit(g, NULL, 14000).refusal, GUARD_CIRCUIT_OPEN);
    guard_state(g, 14000, &s);
    assert_int_equal(s.throttled_remaining_ms, 30000);
    assert_string_equal(guard_circuit_name(GUARD_HALF_OPEN), "half-open");
    assert_string_equal(guard_refusal_name(GUARD_RATE_LIMITED), "rate_limited");
    assert_string_equal(guard_refusal_name(GUARD_CIRCUIT_OPEN), "circuit_open");
    guard_free(g);
}

/* ------------------------------------------------------------ guard cells */

static int64_t cell_admitted(const struct guard_conf *c, struct guard_cell *cell, int64_t *ptat, int64_t now)
{
    return guard_cell_admit(c, cell, ptat, now, 1.0).refusal == GUARD_ADMITTED;
}

/* Random arrivals for a minute: no window [t, t + 1 s) admits more than
 * rate + burst, and the whole minute no more than rate * 60 + burst. */
static void test_cell_gcra_never_exceeds_rate_and_burst(void **state)
{
    (void)state;
    static const double settings[][2] = {{5, 5}, {1, 1}, {100, 20}, {0.5, 3}, {7, 1}};
    for (size_t k = 0; k < sizeof(settings) / sizeof(settings[0]); k++) {
        struct guard_conf c = conf_default();
        c.rate = settings[k][0];
        c.burst = settings[k][1];
        struct guard_cell cell = {0};
        static int64_t admitted_at[20000];
        size_t n = 0;
        for (int64_t now = 1000000; now < 1000000 + 60000; now += rnd_range(0, 30)) {
            if (n < 20000 && cell_admitted(&c, &cell, NULL, now))
                admitted_at[n++] = now;
        }
        size_t j = 0;
        for (size_t i = 0; i < n; i++) {
            while (admitted_at[i] - admitted_at[j] >= 1000)
                j++;
            assert_true((double)(i - j + 1) <= c.rate + c.burst);
        }
        assert_true((double)n <= c.rate * 60 + c.burst);
        if (c.rate <= 10) /* arrivals (one per 15 ms on average) outpace it: it admits about the rate */
            assert_true((double)n >= c.rate * 60 * 0.9);
    }
}

static void test_cell_wait_and_scale(void **state)
{
    (void)state;
    struct guard_conf c = conf_default();
    c.rate = 5;
    c.burst = 5;
    struct guard_cell cell = {0};
    for (int i = 0; i < 5; i++)
        assert_true(cell_admitted(&c, &cell, NULL, 1000));
    struct guard_verdict v = guard_cell_admit(&c, &cell, NULL, 1000, 1.0);
    assert_int_equal(v.refusal, GUARD_RATE_LIMITED);
    assert_int_equal(v.wait_ms, 200);
    assert_int_equal(v.retry_after_s, 1);
    assert_false(cell_admitted(&c, &cell, NULL, 1199));
    assert_true(cell_admitted(&c, &cell, NULL, 1200));
    /* A third of the rate and burst: 5/3 at once, then one per 600 ms. */
    struct guard_cell share = {0};
    int n = 0;
    while (guard_cell_admit(&c, &share, NULL, 1000, 1.0 / 3).refusal == GUARD_ADMITTED)
        n++;
    assert_int_equal(n, 1); /* burst 5/3: one at once, the second 600 ms later */
    assert_int_equal(guard_cell_admit(&c, &share, NULL, 1600, 1.0 / 3).refusal, GUARD_ADMITTED);
}

static void test_cell_project_level(void **state)
{
    (void)state;
    struct guard_conf c = conf_default();
    c.rate = 100;
    c.burst = 100;
    c.project_rate = 1;
    c.project_burst = 2;
    struct guard_cell cell = {0};
    int64_t a = 0, b = 0;
    assert_true(cell_admitted(&c, &cell, &a, 1000));
    assert_true(cell_admitted(&c, &cell, &a, 1000));
    struct guard_verdict v = guard_cell_admit(&c, &cell, &a, 1000, 1.0);
    assert_int_equal(v.refusal, GUARD_RATE_LIMITED);
    assert_true(cell_admitted(&c, &cell, &b, 1000)); /* another project is not held */
    int64_t tat = cell.tat_us;
    assert_false(cell_admitted(&c, &cell, &a, 1500));
    assert_int_equal(cell.tat_us, tat); /* a refusal takes nothing */
    assert_true(cell_admitted(&c, &cell, &a, 2000));
}

static void test_cell_throttle(void **state)
{
    (void)state;
    struct guard_conf c = conf_default();
    struct guard_cell cell = {0};
    guard_cell_throttled(&c, &cell, 5000, 2, 0, 0);
    struct guard_verdict v = guard_cell_admit(&c, &cell, NULL, 5001, 1.0);
    assert_int_equal(v.refusal, GUARD_THROTTLED);
    assert_int_equal(v.wait_ms, 1999);
    guard_cell_throttled(&c, &cell, 5500, 1, 0, 0); /* a shorter one does not shorten it */
    assert_int_equal(guard_cell_admit(&c, &cell, NULL, 6999, 1.0).refusal, GUARD_THROTTLED);
    assert_true(cell_admitted(&c, &cell, NULL, 7000));
    /* No Retry-After: the default plus the jitter given, capped. */
    guard_cell_throttled(&c, &cell, 10000, 0, 123, 0);
    assert_int_equal(cell.throttled_until_ms, 10000 + c.throttle_ms + 123);
    guard_cell_throttled(&c, &cell, 10000, 100000, 0, 0);
    assert_int_equal(cell.throttled_until_ms, 10000 + c.throttle_max_ms);
    assert_int_equal(cell.throttles, 4);
}

static void test_cell_breaker_one_probe_per_cooldown(void **state)
{
    (void)state;
    struct guard_conf c = conf_default();
    c.breaker_threshold = 2;
    c.breaker_cooldown_ms = 1000;
    c.breaker_max_ms = 3000;
    struct guard_cell cell = {0};
    guard_cell_result(&c, &cell, 100, GUARD_TRANSPORT_FAILURE, 0);
    assert_int_equal(guard_cell_circuit(&cell, 100), GUARD_CLOSED);
    guard_cell_result(&c, &cell, 101, GUARD_SUCCESS, 0); /* resets the count */
    guard_cell_result(&c, &cell, 102, GUARD_TRANSPORT_FAILURE, 0);
    guard_cell_result(&c, &cell, 103, GUARD_UPSTREAM_5XX, 0);
    assert_int_equal(guard_cell_circuit(&cell, 103), GUARD_OPEN);
    assert_int_equal(cell.opened, 1);
    struct guard_verdict v = guard_cell_admit(&c, &cell, NULL, 500, 1.0);
    assert_int_equal(v.refusal, GUARD_CIRCUIT_OPEN);
    assert_int_equal(v.wait_ms, 603);
    guard_cell_result(&c, &cell, 600, GUARD_TRANSPORT_FAILURE, 0); /* a late failure changes nothing */
    assert_int_equal(cell.open_until_ms, 1103);

    /* Half-open: one probe, whoever asks; the others are held. */
    v = guard_cell_admit(&c, &cell, NULL, 1103, 1.0);
    assert_int_equal(v.refusal, GUARD_ADMITTED);
    assert_true(v.probe);
    for (int i = 0; i < 10; i++)
        assert_int_equal(guard_cell_admit(&c, &cell, NULL, 1200 + i, 1.0).refusal, GUARD_CIRCUIT_OPEN);
    guard_cell_result(&c, &cell, 1300, GUARD_SUCCESS, 0); /* not the probe: ignored */
    assert_int_equal(guard_cell_circuit(&cell, 1300), GUARD_HALF_OPEN);
    /* The probe fails: open again, twice as long. */
    guard_cell_result(&c, &cell, 1400, GUARD_TRANSPORT_FAILURE, 1);
    assert_int_equal(cell.open_until_ms, 3400);
    v = guard_cell_admit(&c, &cell, NULL, 3400, 1.0);
    assert_true(v.refusal == GUARD_ADMITTED && v.probe);
    guard_cell_result(&c, &cell, 3500, GUARD_TRANSPORT_FAILURE, 1);
    assert_int_equal(cell.open_until_ms, 6500); /* capped at 3 s */
    v = guard_cell_admit(&c, &cell, NULL, 6500, 1.0);
    assert_true(v.refusal == GUARD_ADMITTED && v.probe);
    /* A 429 proves it alive: the probe closes the circuit. */
    guard_cell_throttled(&c, &cell, 6600, 1, 0, 1);
    assert_int_equal(guard_cell_circuit(&cell, 6600), GUARD_CLOSED);
    assert_int_equal(guard_cell_admit(&c, &cell, NULL, 6700, 1.0).refusal, GUARD_THROTTLED);
    assert_int_equal(cell.cooldown_ms, 0); /* the next opening starts from the first cool-down */
}

static void test_cell_lost_or_abandoned_probe(void **state)
{
    (void)state;
    struct guard_conf c = conf_default();
    c.breaker_threshold = 1;
    c.breaker_cooldown_ms = 1000;
    c.probe_timeout_ms = 5000;
    struct guard_cell cell = {0};
    guard_cell_result(&c, &cell, 0, GUARD_TRANSPORT_FAILURE, 0);
    assert_true(guard_cell_admit(&c, &cell, NULL, 1000, 1.0).probe);
    guard_cell_result(&c, &cell, 1100, GUARD_ABANDONED, 1); /* nothing learnt: another may go */
    assert_true(guard_cell_admit(&c, &cell, NULL, 1200, 1.0).probe);
    assert_int_equal(guard_cell_admit(&c, &cell, NULL, 6199, 1.0).refusal, GUARD_CIRCUIT_OPEN);
    assert_true(guard_cell_admit(&c, &cell, NULL, 6200, 1.0).probe); /* the first is taken as lost */
    guard_cell_result(&c, &cell, 6300, GUARD_SUCCESS, 1);
    assert_int_equal(guard_cell_circuit(&cell, 6300), GUARD_CLOSED);
    guard_cell_result(&c, &cell, 6400, GUARD_TRANSPORT_FAILURE, 1); /* the lost one's late answer: settled already */
    assert_int_equal(guard_cell_circuit(&cell, 6400), GUARD_CLOSED);
}

/* ------------------------------------------------------ shared memory */

/* Processes admitting at the same instant through one region: the burst is
 * the host's, not each process's; what one reports, all see. */
static void test_shm_shared_by_forked_processes(void **state)
{
    (void)state;
    char err[256];
    struct guardshm *shm = guardshm_new(4, 64, err, sizeof(err));
    assert_non_null(shm);
    struct guard_conf c = conf_default();
    c.rate = 5;
    c.burst = 50;
    int slot = guardshm_slot(shm, "https://ecs.example");
    assert_true(slot >= 0);
    assert_int_equal(guardshm_slot(shm, "https://ecs.example"), slot);
    assert_true(guardshm_slot(shm, "https://elb.example") != slot);

    /* 4 children, 40 tries each, all at t = 1000: 50 admitted in all. */
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    for (int k = 0; k < 4; k++) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            unsigned char n = 0;
            for (int i = 0; i < 40; i++)
                n += guardshm_admit(shm, slot, &c, NULL, 1000).refusal == GUARD_ADMITTED;
            if (write(fds[1], &n, 1) != 1)
                _exit(2);
            _exit(0);
        }
    }
    int total = 0;
    for (int k = 0; k < 4; k++) {
        unsigned char n;
        assert_int_equal(read(fds[0], &n, 1), 1);
        total += n;
    }
    while (wait(NULL) > 0)
        ;
    close(fds[0]);
    close(fds[1]);
    assert_int_equal(total, 50);
    assert_int_equal(guardshm_admit(shm, slot, &c, NULL, 1000).refusal, GUARD_RATE_LIMITED);

    /* A 429 a child sees holds the parent. */
    pid_t pid = fork();
    if (pid == 0) {
        guardshm_throttled(shm, slot, &c, 2000, 2, 0);
        _exit(0);
    }
    assert_true(pid > 0);
    waitpid(pid, NULL, 0);
    struct guard_verdict v = guardshm_admit(shm, slot, &c, NULL, 3000);
    assert_int_equal(v.refusal, GUARD_THROTTLED);
    assert_int_equal(v.wait_ms, 1000);
    struct guard_cell cell;
    guardshm_read(shm, slot, &cell);
    assert_int_equal(cell.throttles, 1);
    assert_int_equal(guardshm_steals(shm), 0);
    guardshm_free(shm);
}

static void test_shm_projects(void **state)
{
    (void)state;
    char err[256];
    struct guardshm *shm = guardshm_new(2, 16, err, sizeof(err));
    assert_non_null(shm);
    struct guard_conf c = conf_default();
    c.rate = 1000;
    c.burst = 1000;
    c.project_rate = 1;
    c.project_burst = 1;
    int slot = guardshm_slot(shm, "u");
    assert_int_equal(guardshm_admit(shm, slot, &c, "p1", 1000).refusal, GUARD_ADMITTED);
    assert_int_equal(guardshm_admit(shm, slot, &c, "p1", 1000).refusal, GUARD_RATE_LIMITED);
    assert_int_equal(guardshm_admit(shm, slot, &c, "p2", 1000).refusal, GUARD_ADMITTED);
    /* More projects than cells: the table stays bounded, the upstream's rate holds. */
    char id[32];
    for (int i = 0; i < 200; i++) {
        snprintf(id, sizeof(id), "many-%d", i);
        assert_int_equal(guardshm_admit(shm, slot, &c, id, 2000 + i).refusal, GUARD_ADMITTED);
    }
    /* Slots run out: -1, never another upstream's. */
    assert_true(guardshm_slot(shm, "v") >= 0);
    assert_int_equal(guardshm_slot(shm, "w"), -1);
    guardshm_free(shm);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_bad_settings_refused),
        cmocka_unit_test(test_bucket_never_exceeds_rate_and_burst),
        cmocka_unit_test(test_bucket_wait_is_exact),
        cmocka_unit_test(test_bucket_steady_rate),
        cmocka_unit_test(test_time_going_backwards_refills_nothing),
        cmocka_unit_test(test_projects_are_isolated),
        cmocka_unit_test(test_project_table_is_bounded_lru),
        cmocka_unit_test(test_throttle_honours_retry_after),
        cmocka_unit_test(test_throttle_default_and_jitter),
        cmocka_unit_test(test_breaker_opens_after_threshold),
        cmocka_unit_test(test_breaker_half_open_admits_exactly_one),
        cmocka_unit_test(test_breaker_failed_probe_reopens_longer_capped),
        cmocka_unit_test(test_breaker_5xx_counts_when_configured),
        cmocka_unit_test(test_breaker_lost_or_abandoned_probe),
        cmocka_unit_test(test_precedence_and_429_liveness),
        cmocka_unit_test(test_cell_gcra_never_exceeds_rate_and_burst),
        cmocka_unit_test(test_cell_wait_and_scale),
        cmocka_unit_test(test_cell_project_level),
        cmocka_unit_test(test_cell_throttle),
        cmocka_unit_test(test_cell_breaker_one_probe_per_cooldown),
        cmocka_unit_test(test_cell_lost_or_abandoned_probe),
        cmocka_unit_test(test_shm_shared_by_forked_processes),
        cmocka_unit_test(test_shm_projects),
    };
    return cmocka_run_group_tests_name("guard", tests, NULL, NULL);
}
