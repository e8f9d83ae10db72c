/*
 * guard: what keeps jobgate from hurting an upstream, and from waiting on one
 * that is down. One `struct guard` per upstream holds three protections:
 *
 *   - a token bucket (rate, burst), and optionally a second one per project,
 *     so that jobgate never goes past the cloud account's rate limit;
 *   - a throttle backoff: after upstream answers 429 (Huawei's APIGW.0308)
 *     nothing goes out until its Retry-After has passed;
 *   - a circuit breaker: after `breaker_threshold` consecutive failures
 *     nothing goes out for a cool-down, then exactly one probe is let through.
 *
 * Pure logic: every function takes the time (`now_ms`, any monotonic clock in
 * milliseconds) from its caller and reads no clock, does no I/O and logs
 * nothing, so the unit tests drive it with a synthetic clock. A time earlier
 * than one already seen is read as that earlier-seen time (nothing refills).
 * Single-threaded, like the event loop that owns it.
 *
 * The contract with the caller (the gateway): ask guard_admit() before every
 * upstream call and make the call only when it says GUARD_ADMITTED; then report
 * how that call ended exactly once, with guard_throttled() for a 429 and
 * guard_result() for anything else (GUARD_ABANDONED when it ended with no
 * verdict on upstream, e.g. jobgate shut it down).
 */
#ifndef JOBGATE_GUARD_H
#define JOBGATE_GUARD_H

#include <stddef.h>
#include <stdint.h>

/*
 * The settings. guard_conf_defaults() fills in the values below; each was
 * chosen as follows.
 *
 * rate 100/s, burst 20: Huawei's API gateway allows 200 requests/s per API by
 * default, for the whole account. Half of it leaves room for what else uses
 * the account at the same time (the console, Terraform and SDKs that do not
 * go through jobgate, a second jobgate during a rolling restart), and no one
 * second can carry more than rate + burst = 120 calls. Several jobgates
 * sharing an account should split the rate between them.
 */
#define GUARD_DEFAULT_RATE                100.0
#define GUARD_DEFAULT_BURST               20.0
#define GUARD_DEFAULT_PROJECT_RATE        0.0 /* no per-project level */
#define GUARD_DEFAULT_PROJECT_BURST       10.0
#define GUARD_DEFAULT_PROJECT_SLOTS       256
#define GUARD_DEFAULT_THROTTLE_MS         3000   /* 429 without Retry-After */
#define GUARD_DEFAULT_THROTTLE_JITTER_MS  1000   /* so: 3 to 4 s */
#define GUARD_DEFAULT_THROTTLE_MAX_MS     300000 /* a larger Retry-After is cut to 5 min */
#define GUARD_DEFAULT_BREAKER_THRESHOLD   5
#define GUARD_DEFAULT_BREAKER_COOLDOWN_MS 5000
#define GUARD_DEFAULT_BREAKER_MAX_MS      60000
#define GUARD_DEFAULT_PROBE_TIMEOUT_MS    30000

/* Bounds guard_conf_check() enforces. */
#define GUARD_RATE_MIN          0.001 /* the bucket counts in millionths of a token per ms */
#define GUARD_RATE_MAX          1e6
#define GUARD_PROJECT_SLOTS_MAX 65536
#define GUARD_PROJECT_ID_MAX    128 /* longer project ids are refused (never admitted) */
#define GUARD_FLEET_SIZE_MAX    10000

struct guard_conf {
    double rate;  /* requests per second, may be fractional (>= GUARD_RATE_MIN) */
    double burst; /* bucket size: how many may go at once after a quiet time (>= 1) */

    /* Second level, one bucket per project id: 0 turns it off. A request must
     * find a token in both its project's bucket and the upstream's. */
    double project_rate;
    double project_burst;
    /* Bound of the per-project table: at most this many projects have a bucket;
     * a new one evicts the least recently used (whose next request starts from
     * a full bucket again, so churning ids can reach past its own project's
     * rate but never past `rate`). */
    size_t project_slots;

    int64_t throttle_ms;        /* backoff after a 429 without a usable Retry-After */
    int64_t throttle_jitter_ms; /* plus a pseudo-random 0..jitter, from `seed` */
    int64_t throttle_max_ms;    /* cap on the Retry-After honoured */

    unsigned breaker_threshold;  /* consecutive failures that open the circuit (>= 1) */
    int64_t breaker_cooldown_ms; /* first cool-down; doubles after each failed probe */
    int64_t breaker_max_ms;      /* cap on the cool-down */
    int breaker_count_5xx;       /* does an upstream 5xx count as a failure? (default 1) */
    /* A half-open probe not reported within this time is taken as lost
     * (failed), so that a caller's bug cannot keep the circuit shut forever. */
    int64_t probe_timeout_ms;

    uint64_t seed; /* for the jitter; a fixed seed gives a fixed sequence */

    /* Instances (each with its workers) sharing the account, for the share
     * each process takes when the fleet's shared state is unreachable
     * (callpolicy.h); 0: counted from the fleet's heartbeats. */
    unsigned fleet_size;
};

enum guard_circuit {
    GUARD_CLOSED = 0,
    GUARD_OPEN,      /* cooling down: nothing is admitted */
    GUARD_HALF_OPEN, /* one probe may go (or is out) */
};

/* Why guard_admit refused a request (or that it did not). */
enum guard_refusal {
    GUARD_ADMITTED = 0,
    GUARD_RATE_LIMITED, /* no token in the upstream's or the project's bucket */
    GUARD_THROTTLED,    /* backing off after a 429 */
    GUARD_CIRCUIT_OPEN, /* cooling down, or the half-open probe is already out */
    GUARD_BAD_PROJECT,  /* project id longer than GUARD_PROJECT_ID_MAX, or no memory */
};

struct guard_verdict {
    enum guard_refusal refusal;
    int64_t wait_ms;   /* refused: how long until asking again can succeed; 0 when admitted */
    int retry_after_s; /* refused: wait_ms in seconds, rounded up, at least 1 (for Retry-After) */
    int probe;         /* admitted as the half-open circuit's one probe */
};

/* How an admitted call ended (a 429 goes to guard_throttled instead). */
enum guard_outcome {
    GUARD_SUCCESS,           /* any HTTP answer but a 5xx: upstream is alive */
    GUARD_TRANSPORT_FAILURE, /* reset, timeout, refused, DNS, TLS, truncated */
    GUARD_UPSTREAM_5XX,      /* a failure only when breaker_count_5xx is set */
    GUARD_ABANDONED,         /* ended with nothing learnt (shutdown, cancelled) */
};

/* A snapshot for /metrics and /healthz. Times are left-over durations at
 * `now_ms`, 0 when not applicable. */
struct guard_state {
    enum guard_circuit circuit;
    unsigned consecutive_failures;
    int64_t open_remaining_ms; /* open: until half-open */
    int64_t cooldown_ms;       /* the cool-down the next opening will last */
    int64_t throttled_remaining_ms;
    double tokens;   /* in the upstream's bucket */
    size_t projects; /* per-project buckets held */
    uint64_t admitted;
    uint64_t refused[GUARD_BAD_PROJECT + 1]; /* by enum guard_refusal */
    uint64_t opened;                         /* times the circuit opened */
    uint64_t throttles;                      /* 429s reported */
    uint64_t project_evictions;
};

struct guard;

/* Fill `conf` with the defaults above. */
void guard_conf_defaults(struct guard_conf *conf);

/* 0 if `conf` is usable, else -1 with a message in err (errlen bytes). */
int guard_conf_check(const struct guard_conf *conf, char *err, size_t errlen);

/* A guard with a full bucket and a closed circuit, or NULL with err set
 * (bad conf, no memory). `conf` is copied. Free with guard_free. */
struct guard *guard_new(const struct guard_conf *conf, char *err, size_t errlen);

void guard_free(struct guard *g);

/*
 * May a call for `project` (NULL or "": no per-project level) go upstream at
 * `now_ms`? When admitted, a token is taken from each bucket and, half-open,
 * the probe slot is taken: the caller must then report the call's end. A
 * refusal takes nothing. When several reasons hold, the one reported is the
 * first of: circuit open, throttled, rate limited.
 */
struct guard_verdict guard_admit(struct guard *g, const char *project, int64_t now_ms);

/*
 * Upstream answered 429 (throttled) at `now_ms`: admit nothing until
 * `retry_after_s` seconds from now, or, when it is <= 0, the default backoff
 * plus jitter; capped at throttle_max_ms. A later backoff never shortens one
 * already running. The answer proves upstream alive, so it also counts as a
 * success for the circuit breaker.
 */
void guard_throttled(struct guard *g, int64_t now_ms, int retry_after_s);

/*
 * An admitted call ended at `now_ms` with `outcome`. Closed: a failure adds
 * to the consecutive count and the threshold-th opens the circuit; a success
 * resets the count. Half-open: the first outcome reported settles the probe
 * (a late answer to a call admitted before the circuit opened tells as much
 * about upstream as the probe's own): success closes the circuit and resets
 * the cool-down, failure reopens it with the cool-down doubled (capped).
 * Open: ignored (the cool-down runs its course).
 */
void guard_result(struct guard *g, int64_t now_ms, enum guard_outcome outcome);

/* Fill `out` with the state at `now_ms` (which may move open to half-open). */
void guard_state(struct guard *g, int64_t now_ms, struct guard_state *out);

/*
 * The same three protections as a plain record (`struct guard_cell`: no
 * pointer, no allocation), for state that lives where several processes
 * reach it: a shared-memory slot (guardshm.h) read and written under its
 * lock. The Redis script (guardredis.h) keeps the same fields and follows
 * the same steps in Lua.
 *
 * The rate is a GCRA (generic cell rate algorithm, the token bucket as one
 * number): `tat_us` is the theoretical arrival time of the next call; a call
 * at `now` is admitted when tat - now <= (burst - 1) / rate, and moves tat
 * on by 1 / rate. So after a quiet time `burst` calls go at once, then one
 * per 1 / rate: no window of T seconds admits more than rate * T + burst. A
 * cell whose tat is past is a full bucket: forgetting it loses nothing.
 *
 * The circuit is read from the times: open_until_ms 0 is closed; before it,
 * open; from it on, half-open, where one call (the probe) is admitted and
 * marked out until probe_until_ms. Only the probe's own outcome closes or
 * reopens the circuit (the caller says which call was the probe): exactly
 * one call goes out per cool-down whatever the number of processes.
 * Outcomes of calls admitted before the circuit opened are ignored once it
 * is open.
 */
struct guard_cell {
    int64_t tat_us;             /* GCRA of the upstream's rate; 0: never used */
    int64_t throttled_until_ms; /* backing off after a 429 until then */
    int64_t open_until_ms;      /* 0: closed; else open until then, half-open after */
    int64_t cooldown_ms;        /* of the current opening (0: breaker_cooldown_ms) */
    int64_t probe_until_ms;     /* half-open: the probe is out until then */
    int64_t failures;           /* consecutive, while closed */
    uint64_t opened;            /* counts, for the state report */
    uint64_t throttles;
};

/* One GCRA step on `tat_us` at `now_ms` for `rate` and `burst` (a tat of 0
 * is a full bucket). Returns 0 when a call may go (and *next_tat_us is the
 * tat to store), else the wait in ms (>= 1) until one may. Pure. */
int64_t guard_gcra(int64_t tat_us, int64_t now_ms, double rate, double burst, int64_t *next_tat_us);

/* May a call go at `now_ms`? `project_tat_us` (NULL: no per-project level,
 * or conf->project_rate 0) is the project's own GCRA. Admitted, both tats
 * move on and, half-open, the probe is marked out (verdict.probe). Refused,
 * nothing changes. Precedence as guard_admit's. `rate_scale` (0 < s <= 1)
 * multiplies rate and burst (burst at least 1): the share of a fallback. */
struct guard_verdict guard_cell_admit(const struct guard_conf *conf, struct guard_cell *c, int64_t *project_tat_us,
                                      int64_t now_ms, double rate_scale);

/* A 429 at `now_ms`: as guard_throttled (`jitter` a random number for the
 * default backoff's jitter), and a success for the breaker (`probe` as in
 * guard_cell_result). */
void guard_cell_throttled(const struct guard_conf *conf, struct guard_cell *c, int64_t now_ms, int retry_after_s,
                          uint64_t jitter, int probe);

/* An admitted call ended with `outcome`; `probe` when it was admitted as
 * the probe. Closed: failures count up to breaker_threshold, which opens
 * the circuit for breaker_cooldown_ms; a success resets the count. The
 * probe: success closes, failure reopens with the cool-down doubled
 * (capped), abandoned lets another probe go. Anything else while open or
 * half-open is ignored. */
void guard_cell_result(const struct guard_conf *conf, struct guard_cell *c, int64_t now_ms, enum guard_outcome outcome,
                       int probe);

/* The circuit's state at `now_ms`. */
enum guard_circuit guard_cell_circuit(const struct guard_cell *c, int64_t now_ms);

/* "closed", "open", "half-open". */
const char *guard_circuit_name(enum guard_circuit circuit);

/* "admitted", "rate_limited", "throttled", "circuit_open", "bad_project". */
const char *guard_refusal_name(enum guard_refusal refusal);

#endif
