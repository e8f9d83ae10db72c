#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "guard.h"
#include "keymap.h"

/*
 * Buckets count in millionths of a token and refill per millisecond, in
 * integers: no rounding drifts, so "never more than rate * window + burst"
 * holds exactly (the refill per ms is rounded down, never up).
 */
#define TOKEN              1000000LL
#define DURATION_MAX_MS    (86400LL * 1000) /* no setting may exceed a day */
#define PROBE_BUSY_WAIT_MS 1000             /* half-open, probe out: "ask again in a second" */

struct bucket {
    int64_t level;   /* millionths of a token */
    int64_t cap;     /* burst, in millionths */
    int64_t per_ms;  /* refill per ms, in millionths */
    int64_t last_ms; /* INT64_MIN: no time seen yet */
};

struct project_bucket {
    struct keymap_item item; /* item.key points at id[] */
    struct bucket bucket;
    TAILQ_ENTRY(project_bucket) lru; /* head: most recently used */
    char id[];
};

TAILQ_HEAD(project_lru, project_bucket);

struct guard {
    struct guard_conf conf;
    int64_t now_ms; /* the latest time seen: time never runs backwards here */

    struct bucket bucket;
    struct keymap projects;
    struct project_lru project_lru;

    int64_t throttled_until_ms;
    uint64_t rng;

    enum guard_circuit circuit;
    unsigned failures;
    int64_t open_until_ms;
    int64_t cooldown_ms;
    int probe_out;
    int64_t probe_deadline_ms;

    struct guard_state counts; /* only its counters are kept up to date */
};

static void set_error(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    if (!err || !errlen)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

void guard_conf_defaults(struct guard_conf *conf)
{
    memset(conf, 0, sizeof(*conf));
    conf->rate = GUARD_DEFAULT_RATE;
    conf->burst = GUARD_DEFAULT_BURST;
    conf->project_rate = GUARD_DEFAULT_PROJECT_RATE;
    conf->project_burst = GUARD_DEFAULT_PROJECT_BURST;
    conf->project_slots = GUARD_DEFAULT_PROJECT_SLOTS;
    conf->throttle_ms = GUARD_DEFAULT_THROTTLE_MS;
    conf->throttle_jitter_ms = GUARD_DEFAULT_THROTTLE_JITTER_MS;
    conf->throttle_max_ms = GUARD_DEFAULT_THROTTLE_MAX_MS;
    conf->breaker_threshold = GUARD_DEFAULT_BREAKER_THRESHOLD;
    conf->breaker_cooldown_ms = GUARD_DEFAULT_BREAKER_COOLDOWN_MS;
    conf->breaker_max_ms = GUARD_DEFAULT_BREAKER_MAX_MS;
    conf->breaker_count_5xx = 1;
    conf->probe_timeout_ms = GUARD_DEFAULT_PROBE_TIMEOUT_MS;
    conf->seed = 1;
}

static int rate_valid(double rate)
{
    return isfinite(rate) && rate >= GUARD_RATE_MIN && rate <= GUARD_RATE_MAX;
}

static int burst_valid(double burst)
{
    return isfinite(burst) && burst >= 1.0 && burst <= 1e9;
}

static int duration_valid(int64_t ms, int64_t min)
{
    return ms >= min && ms <= DURATION_MAX_MS;
}

int guard_conf_check(const struct guard_conf *c, char *err, size_t errlen)
{
    if (!rate_valid(c->rate)) {
        set_error(err, errlen, "guard rate must be %g to %g requests/s", GUARD_RATE_MIN, GUARD_RATE_MAX);
        return -1;
    }
    if (!burst_valid(c->burst)) {
        set_error(err, errlen, "guard burst must be 1 to 1e9");
        return -1;
    }
    if (c->project_rate != 0.0) {
        if (!rate_valid(c->project_rate)) {
            set_error(err, errlen, "guard project rate must be 0 (off) or %g to %g requests/s", GUARD_RATE_MIN,
                      GUARD_RATE_MAX);
            return -1;
        }
        if (!burst_valid(c->project_burst)) {
            set_error(err, errlen, "guard project burst must be 1 to 1e9");
            return -1;
        }
        if (c->project_slots < 1 || c->project_slots > GUARD_PROJECT_SLOTS_MAX) {
            set_error(err, errlen, "guard project slots must be 1 to %d", GUARD_PROJECT_SLOTS_MAX);
            return -1;
        }
    }
    if (!duration_valid(c->throttle_ms, 1) || !duration_valid(c->throttle_jitter_ms, 0) ||
        !duration_valid(c->throttle_max_ms, c->throttle_ms)) {
        set_error(err, errlen, "guard throttle backoff must be 1 ms to 1 day, jitter 0 to 1 day, max >= backoff");
        return -1;
    }
    if (c->breaker_threshold < 1) {
        set_error(err, errlen, "guard breaker threshold must be at least 1");
        return -1;
    }
    if (!duration_valid(c->breaker_cooldown_ms, 1) || !duration_valid(c->breaker_max_ms, c->breaker_cooldown_ms)) {
        set_error(err, errlen, "guard breaker cool-down must be 1 ms to 1 day, max >= cool-down");
        return -1;
    }
    if (c->fleet_size > GUARD_FLEET_SIZE_MAX) {
        set_error(err, errlen, "guard fleet size must be 0 (counted) to %d instances", GUARD_FLEET_SIZE_MAX);
        return -1;
    }
    if (!duration_valid(c->probe_timeout_ms, 1)) {
        set_error(err, errlen, "guard probe timeout must be 1 ms to 1 day");
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------ token buckets */

static void bucket_init(struct bucket *b, double rate, double burst, int64_t now_ms)
{
    /* Rounded down, by the cast: both are positive (the epsilon only keeps 0.3 * 1000 from reading 299.99...). */
    b->per_ms = (int64_t)(rate * 1000.0 + 1e-9);
    b->cap = (int64_t)(burst * (double)TOKEN + 1e-3);
    b->level = b->cap;
    b->last_ms = now_ms;
}

static void bucket_refill(struct bucket *b, int64_t now_ms)
{
    if (b->last_ms == INT64_MIN) { /* the first time seen: the bucket starts full */
        b->last_ms = now_ms;
        return;
    }
    if (now_ms <= b->last_ms)
        return;
    int64_t elapsed = now_ms - b->last_ms;
    b->last_ms = now_ms;
    /* elapsed * per_ms could overflow after a long quiet time: it is full anyway. */
    if (elapsed >= (b->cap - b->level) / b->per_ms + 1) {
        b->level = b->cap;
        return;
    }
    b->level += elapsed * b->per_ms;
    if (b->level > b->cap)
        b->level = b->cap;
}

/* How long until `b` holds a whole token (0: it does now). */
static int64_t bucket_wait_ms(const struct bucket *b)
{
    if (b->level >= TOKEN)
        return 0;
    return (TOKEN - b->level + b->per_ms - 1) / b->per_ms;
}

/* ----------------------------------------------------- per-project buckets */

static void project_drop(struct guard *g, struct project_bucket *p)
{
    keymap_remove(&g->projects, &p->item);
    TAILQ_REMOVE(&g->project_lru, p, lru);
    free(p);
}

/* The bucket of `project`, made (full) if it has none, evicting the least
 * recently used one when the table is full; NULL when out of memory. */
static struct project_bucket *project_bucket_get(struct guard *g, const char *project, size_t len)
{
    struct keymap_item *item = keymap_get(&g->projects, project);
    struct project_bucket *p;
    if (item) {
        p = (struct project_bucket *)item;
        if (TAILQ_FIRST(&g->project_lru) != p) {
            TAILQ_REMOVE(&g->project_lru, p, lru);
            TAILQ_INSERT_HEAD(&g->project_lru, p, lru);
        }
        return p;
    }
    if (g->projects.count >= g->conf.project_slots) {
        project_drop(g, TAILQ_LAST(&g->project_lru, project_lru));
        g->counts.project_evictions++;
    }
    p = malloc(sizeof(*p) + len + 1);
    if (!p)
        return NULL;
    memcpy(p->id, project, len + 1);
    p->item.key = p->id;
    bucket_init(&p->bucket, g->conf.project_rate, g->conf.project_burst, g->now_ms);
    if (keymap_put(&g->projects, &p->item) < 0) {
        free(p);
        return NULL;
    }
    TAILQ_INSERT_HEAD(&g->project_lru, p, lru);
    return p;
}

/* ------------------------------------------------------------------ guard */

struct guard *guard_new(const struct guard_conf *conf, char *err, size_t errlen)
{
    if (guard_conf_check(conf, err, errlen) < 0)
        return NULL;
    struct guard *g = calloc(1, sizeof(*g));
    if (!g) {
        set_error(err, errlen, "out of memory");
        return NULL;
    }
    g->conf = *conf;
    TAILQ_INIT(&g->project_lru);
    g->now_ms = INT64_MIN;
    bucket_init(&g->bucket, conf->rate, conf->burst, INT64_MIN);
    g->rng = conf->seed;
    g->circuit = GUARD_CLOSED;
    g->cooldown_ms = conf->breaker_cooldown_ms;
    g->throttled_until_ms = INT64_MIN;
    return g;
}

void guard_free(struct guard *g)
{
    if (!g)
        return;
    struct project_bucket *p;
    while ((p = TAILQ_FIRST(&g->project_lru)) != NULL)
        project_drop(g, p);
    free(g);
}

/* splitmix64: a tiny, well-mixed sequence; the seed makes tests repeatable. */
static uint64_t next_random(struct guard *g)
{
    uint64_t z = (g->rng += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void circuit_open(struct guard *g, int64_t now_ms, int after_probe)
{
    if (after_probe) {
        g->cooldown_ms *= 2;
        if (g->cooldown_ms > g->conf.breaker_max_ms)
            g->cooldown_ms = g->conf.breaker_max_ms;
    }
    g->circuit = GUARD_OPEN;
    g->open_until_ms = now_ms + g->cooldown_ms;
    g->probe_out = 0;
    g->counts.opened++;
}

/* Move the clock to `now_ms` (never back) and apply what time alone changes:
 * an ended cool-down turns half-open, a probe out too long counts as failed. */
static int64_t guard_tick(struct guard *g, int64_t now_ms)
{
    if (now_ms > g->now_ms)
        g->now_ms = now_ms;
    now_ms = g->now_ms;
    if (g->circuit == GUARD_OPEN && now_ms >= g->open_until_ms) {
        g->circuit = GUARD_HALF_OPEN;
        g->probe_out = 0;
    }
    if (g->circuit == GUARD_HALF_OPEN && g->probe_out && now_ms >= g->probe_deadline_ms)
        circuit_open(g, now_ms, 1);
    return now_ms;
}

static struct guard_verdict refuse(struct guard *g, enum guard_refusal why, int64_t wait_ms)
{
    struct guard_verdict v = {why, wait_ms < 1 ? 1 : wait_ms, 0, 0};
    int64_t seconds = (v.wait_ms + 999) / 1000;
    v.retry_after_s = seconds > INT_MAX ? INT_MAX : (int)seconds;
    g->counts.refused[why]++;
    return v;
}

struct guard_verdict guard_admit(struct guard *g, const char *project, int64_t now_ms)
{
    now_ms = guard_tick(g, now_ms);

    if (g->circuit == GUARD_OPEN)
        return refuse(g, GUARD_CIRCUIT_OPEN, g->open_until_ms - now_ms);
    if (g->circuit == GUARD_HALF_OPEN && g->probe_out)
        return refuse(g, GUARD_CIRCUIT_OPEN, PROBE_BUSY_WAIT_MS);
    if (g->throttled_until_ms > now_ms)
        return refuse(g, GUARD_THROTTLED, g->throttled_until_ms - now_ms);

    struct bucket *pb = NULL;
    if (g->conf.project_rate > 0 && project && *project) {
        size_t len = strlen(project);
        struct project_bucket *p = len <= GUARD_PROJECT_ID_MAX ? project_bucket_get(g, project, len) : NULL;
        if (!p)
            return refuse(g, GUARD_BAD_PROJECT, PROBE_BUSY_WAIT_MS);
        pb = &p->bucket;
        bucket_refill(pb, now_ms);
    }
    bucket_refill(&g->bucket, now_ms);

    int64_t wait_ms = bucket_wait_ms(&g->bucket);
    if (pb && bucket_wait_ms(pb) > wait_ms)
        wait_ms = bucket_wait_ms(pb);
    if (wait_ms > 0)
        return refuse(g, GUARD_RATE_LIMITED, wait_ms);

    g->bucket.level -= TOKEN;
    if (pb)
        pb->level -= TOKEN;
    struct guard_verdict v = {GUARD_ADMITTED, 0, 0, 0};
    if (g->circuit == GUARD_HALF_OPEN) {
        g->probe_out = 1;
        g->probe_deadline_ms = now_ms + g->conf.probe_timeout_ms;
        v.probe = 1;
    }
    g->counts.admitted++;
    return v;
}

void guard_throttled(struct guard *g, int64_t now_ms, int retry_after_s)
{
    now_ms = guard_tick(g, now_ms);
    int64_t backoff_ms;
    if (retry_after_s > 0) {
        backoff_ms = (int64_t)retry_after_s * 1000;
    } else {
        backoff_ms = g->conf.throttle_ms;
        if (g->conf.throttle_jitter_ms > 0)
            backoff_ms += (int64_t)(next_random(g) % (uint64_t)(g->conf.throttle_jitter_ms + 1));
    }
    if (backoff_ms > g->conf.throttle_max_ms)
        backoff_ms = g->conf.throttle_max_ms;
    if (now_ms + backoff_ms > g->throttled_until_ms)
        g->throttled_until_ms = now_ms + backoff_ms;
    g->counts.throttles++;
    guard_result(g, now_ms, GUARD_SUCCESS);
}

void guard_result(struct guard *g, int64_t now_ms, enum guard_outcome outcome)
{
    now_ms = guard_tick(g, now_ms);
    if (outcome == GUARD_ABANDONED) {
        if (g->circuit == GUARD_HALF_OPEN)
            g->probe_out = 0; /* nothing learnt: let another probe go */
        return;
    }
    int failed = outcome == GUARD_TRANSPORT_FAILURE || (outcome == GUARD_UPSTREAM_5XX && g->conf.breaker_count_5xx);

    switch (g->circuit) {
    case GUARD_CLOSED:
        if (!failed) {
            g->failures = 0;
        } else if (++g->failures >= g->conf.breaker_threshold) {
            circuit_open(g, now_ms, 0);
        }
        break;
    case GUARD_HALF_OPEN:
        if (failed) {
            g->failures++;
            circuit_open(g, now_ms, 1);
        } else {
            g->circuit = GUARD_CLOSED;
            g->failures = 0;
            g->probe_out = 0;
            g->cooldown_ms = g->conf.breaker_cooldown_ms;
        }
        break;
    case GUARD_OPEN: break;
    }
}

void guard_state(struct guard *g, int64_t now_ms, struct guard_state *out)
{
    now_ms = guard_tick(g, now_ms);
    bucket_refill(&g->bucket, now_ms);
    *out = g->counts;
    out->circuit = g->circuit;
    out->consecutive_failures = g->failures;
    out->open_remaining_ms = g->circuit == GUARD_OPEN ? g->open_until_ms - now_ms : 0;
    out->cooldown_ms = g->cooldown_ms;
    out->throttled_remaining_ms = g->throttled_until_ms > now_ms ? g->throttled_until_ms - now_ms : 0;
    out->tokens = (double)g->bucket.level / (double)TOKEN;
    out->projects = g->projects.count;
}

const char *guard_circuit_name(enum guard_circuit circuit)
{
    switch (circuit) {
    case GUARD_CLOSED: return "closed";
    case GUARD_OPEN: return "open";
    case GUARD_HALF_OPEN: return "half-open";
    }
    return "unknown";
}

const char *guard_refusal_name(enum guard_refusal refusal)
{
    switch (refusal) {
    case GUARD_ADMITTED: return "admitted";
    case GUARD_RATE_LIMITED: return "rate_limited";
    case GUARD_THROTTLED: return "throttled";
    case GUARD_CIRCUIT_OPEN: return "circuit_open";
    case GUARD_BAD_PROJECT: return "bad_project";
    }
    return "unknown";
}

/* ------------------------------------------------------------ guard cells */

int64_t guard_gcra(int64_t tat_us, int64_t now_ms, double rate, double burst, int64_t *next_tat_us)
{
    /* Rounded up: the interval is never shorter than 1 / rate. */
    double exact_us = 1e6 / rate;
    int64_t interval_us = (int64_t)exact_us;
    if ((double)interval_us < exact_us - 1e-6)
        interval_us++;
    if (interval_us < 1)
        interval_us = 1;
    int64_t tolerance_us = (int64_t)((burst - 1.0) * (double)interval_us + 1e-6);
    int64_t now_us = now_ms * 1000;
    int64_t t = tat_us > now_us ? tat_us : now_us;
    if (t - now_us > tolerance_us) {
        int64_t wait_ms = (t - now_us - tolerance_us + 999) / 1000;
        return wait_ms < 1 ? 1 : wait_ms;
    }
    *next_tat_us = t + interval_us;
    return 0;
}

enum guard_circuit guard_cell_circuit(const struct guard_cell *c, int64_t now_ms)
{
    if (c->open_until_ms == 0)
        return GUARD_CLOSED;
    return now_ms < c->open_until_ms ? GUARD_OPEN : GUARD_HALF_OPEN;
}

static struct guard_verdict cell_refuse(enum guard_refusal why, int64_t wait_ms)
{
    struct guard_verdict v = {why, wait_ms < 1 ? 1 : wait_ms, 0, 0};
    int64_t seconds = (v.wait_ms + 999) / 1000;
    v.retry_after_s = seconds > INT_MAX ? INT_MAX : (int)seconds;
    return v;
}

struct guard_verdict guard_cell_admit(const struct guard_conf *conf, struct guard_cell *c, int64_t *project_tat_us,
                                      int64_t now_ms, double rate_scale)
{
    enum guard_circuit circuit = guard_cell_circuit(c, now_ms);
    if (circuit == GUARD_OPEN)
        return cell_refuse(GUARD_CIRCUIT_OPEN, c->open_until_ms - now_ms);
    if (circuit == GUARD_HALF_OPEN && c->probe_until_ms > now_ms)
        return cell_refuse(GUARD_CIRCUIT_OPEN, PROBE_BUSY_WAIT_MS);
    if (c->throttled_until_ms > now_ms)
        return cell_refuse(GUARD_THROTTLED, c->throttled_until_ms - now_ms);

    if (!(rate_scale > 0.0 && rate_scale <= 1.0))
        rate_scale = 1.0;
    double burst = conf->burst * rate_scale;
    int64_t tat = 0, ptat = 0;
    int64_t wait_ms = guard_gcra(c->tat_us, now_ms, conf->rate * rate_scale, burst < 1.0 ? 1.0 : burst, &tat);
    if (project_tat_us && conf->project_rate > 0) {
        int64_t pwait = guard_gcra(*project_tat_us, now_ms, conf->project_rate, conf->project_burst, &ptat);
        if (pwait > wait_ms)
            wait_ms = pwait;
    }
    if (wait_ms > 0)
        return cell_refuse(GUARD_RATE_LIMITED, wait_ms);
    c->tat_us = tat;
    if (project_tat_us && conf->project_rate > 0)
        *project_tat_us = ptat;
    struct guard_verdict v = {GUARD_ADMITTED, 0, 0, 0};
    if (circuit == GUARD_HALF_OPEN) {
        c->probe_until_ms = now_ms + conf->probe_timeout_ms;
        v.probe = 1;
    }
    return v;
}

void guard_cell_throttled(const struct guard_conf *conf, struct guard_cell *c, int64_t now_ms, int retry_after_s,
                          uint64_t jitter, int probe)
{
    int64_t backoff_ms;
    if (retry_after_s > 0) {
        backoff_ms = (int64_t)retry_after_s * 1000;
    } else {
        backoff_ms = conf->throttle_ms;
        if (conf->throttle_jitter_ms > 0)
            backoff_ms += (int64_t)(jitter % (uint64_t)(conf->throttle_jitter_ms + 1));
    }
    if (backoff_ms > conf->throttle_max_ms)
        backoff_ms = conf->throttle_max_ms;
    if (now_ms + backoff_ms > c->throttled_until_ms)
        c->throttled_until_ms = now_ms + backoff_ms;
    c->throttles++;
    guard_cell_result(conf, c, now_ms, GUARD_SUCCESS, probe);
}

static void cell_open(const struct guard_conf *conf, struct guard_cell *c, int64_t now_ms, int64_t cooldown_ms)
{
    if (cooldown_ms > conf->breaker_max_ms)
        cooldown_ms = conf->breaker_max_ms;
    c->cooldown_ms = cooldown_ms;
    c->open_until_ms = now_ms + cooldown_ms;
    c->probe_until_ms = 0;
    c->failures = 0;
    c->opened++;
}

void guard_cell_result(const struct guard_conf *conf, struct guard_cell *c, int64_t now_ms, enum guard_outcome outcome,
                       int probe)
{
    enum guard_circuit circuit = guard_cell_circuit(c, now_ms);
    if (outcome == GUARD_ABANDONED) {
        if (probe && circuit == GUARD_HALF_OPEN)
            c->probe_until_ms = 0; /* nothing learnt: let another probe go */
        return;
    }
    int failed = outcome == GUARD_TRANSPORT_FAILURE || (outcome == GUARD_UPSTREAM_5XX && conf->breaker_count_5xx);
    if (probe) {
        if (circuit != GUARD_HALF_OPEN)
            return; /* settled already (a probe taken as lost, then another's) */
        if (failed) {
            int64_t base = c->cooldown_ms > 0 ? c->cooldown_ms : conf->breaker_cooldown_ms;
            cell_open(conf, c, now_ms, base * 2);
        } else {
            c->open_until_ms = 0;
            c->probe_until_ms = 0;
            c->cooldown_ms = 0;
            c->failures = 0;
        }
        return;
    }
    if (circuit != GUARD_CLOSED)
        return;
    if (!failed)
        c->failures = 0;
    else if (++c->failures >= (int64_t)conf->breaker_threshold)
        cell_open(conf, c, now_ms, conf->breaker_cooldown_ms);
}
