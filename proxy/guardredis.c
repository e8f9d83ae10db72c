#define _GNU_SOURCE /* vasprintf, asprintf */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "clock.h"
#include "digest.h"
#include "guardredis.h"
#include "log.h"
#include "randbytes.h"
#include "redis_link.h"

#define ARGS_MAX   16
#define DAY_MS     "86400000"
#define KEY_SUFFIX 48 /* room for ":project:" and the like */

/*
 * The keys' values, in microseconds of Redis's clock (a double holds them
 * exactly: < 2^53), so that one MGET reads the whole state: rate (and
 * project) the GCRA tat; throttled and open the time they end (each with a
 * PX that ends it too, for the keys to go); halfopen the cool-down; probe
 * "1"; failures a count.
 *
 * Admission, as a Lua function of its own keys and arguments, so that
 * another script on the same server may run it in its own atomic step
 * (guardredis_fold). KEYS: rate, throttled, open, probe, halfopen,
 * failures[, project]. ARGV: rate, burst, project_rate, project_burst,
 * probe_timeout_ms, may_probe. Returns {refusal (enum guard_refusal, or
 * FOLD_UNDECIDED), wait_ms, probe, failing}: `failing` when the fleet is
 * counting consecutive failures, so that a success must be reported to
 * reset them (else it need not be). With may_probe 0 a half-open circuit
 * is not decided (FOLD_UNDECIDED), and no probe is ever taken. The GCRA is
 * guard_gcra's. Three commands: TIME, MGET, and the SET of what it takes.
 */
#define FOLD_UNDECIDED 4
#define ADMIT_FUNCTION                                                                                                \
    "local function admit(KEYS, ARGV)\n"                                                                              \
    "local t = redis.call('TIME')\n"                                                                                  \
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"                                                         \
    "local v = redis.call('MGET', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6])\n"                            \
    "local function left(x) return math.max(1, math.ceil((x - now) / 1000)) end\n"                                    \
    "local open = tonumber(v[3] or '0') or 0\n"                                                                       \
    "if open > now then return {3, left(open), 0, 0} end\n"                                                           \
    "local half = v[5] ~= false\n"                                                                                    \
    "if half and ARGV[6] == '0' then return {4, 0, 0, 0} end\n"                                                       \
    "if half and v[4] then return {3, 1000, 0, 0} end\n"                                                              \
    "local thr = tonumber(v[2] or '0') or 0\n"                                                                        \
    "if thr > now then return {2, left(thr), 0, 0} end\n"                                                             \
    "local function gcra(tat, rate, burst)\n"                                                                         \
    "  local interval = math.max(1, math.ceil(1000000 / rate - 0.000001))\n"                                          \
    "  local tol = math.floor((burst - 1) * interval + 0.000001)\n"                                                   \
    "  tat = tonumber(tat or '0') or 0\n"                                                                             \
    "  if tat < now then tat = now end\n"                                                                             \
    "  if tat - now > tol then return math.max(1, math.ceil((tat - now - tol) / 1000)), 0 end\n"                      \
    "  return 0, tat + interval\n"                                                                                    \
    "end\n"                                                                                                           \
    "local w, tat = gcra(v[1], tonumber(ARGV[1]), tonumber(ARGV[2]))\n"                                               \
    "local pw, ptat = 0, 0\n"                                                                                         \
    "if KEYS[7] then pw, ptat = gcra(redis.call('GET', KEYS[7]), tonumber(ARGV[3]), tonumber(ARGV[4])) end\n"         \
    "if pw > w then w = pw end\n"                                                                                     \
    "if w > 0 then return {1, w, 0, 0} end\n"                                                                         \
    "local probe = 0\n"                                                                                               \
    "if half then\n"                                                                                                  \
    "  if not redis.call('SET', KEYS[4], '1', 'NX', 'PX', ARGV[5]) then return {3, 1000, 0, 0} end\n"                 \
    "  probe = 1\n"                                                                                                   \
    "end\n"                                                                                                           \
    "redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1)\n"               \
    "if KEYS[7] then redis.call('SET', KEYS[7], string.format('%.0f', ptat), 'PX', math.ceil((ptat - now) / 1000) + " \
    "1) end\n"                                                                                                        \
    "return {0, 0, probe, v[6] and 1 or 0}\n"                                                                         \
    "end\n"

const char GUARDREDIS_ADMIT_LUA[] = ADMIT_FUNCTION;

static const char ADMIT_SCRIPT[] = ADMIT_FUNCTION "return admit(KEYS, ARGV)\n";

/*
 * Report. KEYS: throttled, open, halfopen, probe, failures. ARGV: kind (0
 * success, 1 failure, 2 abandoned), probe, backoff_ms (a 429: > 0),
 * breaker_threshold, breaker_cooldown_ms, breaker_max_ms. guard_cell_result's
 * steps. Returns 1 when it opened the circuit.
 */
static const char REPORT_SCRIPT[] =
    "local kind, probe, backoff = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])\n"
    "local function now()\n"
    "  local t = redis.call('TIME')\n"
    "  return tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "end\n"
    "if backoff > 0 then\n"
    "  local untl = now() + backoff * 1000\n"
    "  if untl > (tonumber(redis.call('GET', KEYS[1]) or '0') or 0) then\n"
    "    redis.call('SET', KEYS[1], string.format('%.0f', untl), 'PX', backoff)\n"
    "  end\n"
    "end\n"
    "local open = redis.call('EXISTS', KEYS[2]) == 1\n"
    "local half = redis.call('GET', KEYS[3])\n"
    "if kind == 2 then\n"
    "  if probe == 1 then redis.call('DEL', KEYS[4]) end\n"
    "  return 0\n"
    "end\n"
    "local function opencircuit(c)\n"
    "  c = math.min(c, tonumber(ARGV[6]))\n"
    "  redis.call('SET', KEYS[2], string.format('%.0f', now() + c * 1000), 'PX', c)\n"
    "  redis.call('SET', KEYS[3], c, 'PX', " DAY_MS ")\n"
    "  redis.call('DEL', KEYS[4], KEYS[5])\n"
    "  return 1\n"
    "end\n"
    "if probe == 1 then\n"
    "  if open or not half then return 0 end\n"
    "  if kind == 0 then redis.call('DEL', KEYS[3], KEYS[4], KEYS[5]) return 0 end\n"
    "  return opencircuit(tonumber(half) * 2)\n"
    "end\n"
    "if open or half then return 0 end\n"
    "if kind == 0 then redis.call('DEL', KEYS[5]) return 0 end\n"
    "local n = redis.call('INCR', KEYS[5])\n"
    "redis.call('PEXPIRE', KEYS[5], " DAY_MS ")\n"
    "if n >= tonumber(ARGV[4]) then return opencircuit(tonumber(ARGV[5])) end\n"
    "return 0\n";

/* Heartbeat. KEYS: the fleet set. ARGV: this process's id, live_ms. Returns
 * how many processes are live. */
static const char BEAT_SCRIPT[] = "local t = redis.call('TIME')\n"
                                  "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
                                  "local live = tonumber(ARGV[2])\n"
                                  "redis.call('ZADD', KEYS[1], now + live, ARGV[1])\n"
                                  "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)\n"
                                  "redis.call('PEXPIRE', KEYS[1], live * 2)\n"
                                  "return redis.call('ZCARD', KEYS[1])\n";

enum script { SCRIPT_ADMIT, SCRIPT_REPORT, SCRIPT_BEAT, SCRIPT__COUNT };

static const char *const script_text[SCRIPT__COUNT] = {
    [SCRIPT_ADMIT] = ADMIT_SCRIPT,
    [SCRIPT_REPORT] = REPORT_SCRIPT,
    [SCRIPT_BEAT] = BEAT_SCRIPT,
};
_Static_assert(sizeof(script_text) / sizeof(script_text[0]) == SCRIPT__COUNT, "one text per script");

struct guardredis {
    struct redis_link link;
    char *prefix; /* KEY_PREFIX "guard:" */
    char id[33];  /* this process, in the fleet set */
    char sha[SCRIPT__COUNT][DIGEST_SCRIPT_SHA_SIZE];
    struct event *heartbeat;
    size_t fleet;
    uint64_t admissions;
    uint64_t unanswered;
};

/* One command on its way: EVALSHA, sent again as EVAL on NOSCRIPT. */
struct gr_call {
    struct guardredis *gr;
    enum script script;
    struct guardredis_op *op; /* an admission's, else NULL */
    int argc;
    int as_eval;
    char *argv[ARGS_MAX];
    size_t argvlen[ARGS_MAX];
};

struct guardredis_op {
    struct guardredis *gr;
    guardredis_admit_cb cb;
    void *arg;
    struct event *timer; /* the budget */
    int reply_out;       /* hiredis owes a reply */
    int finished;        /* answered or cancelled: never calls back again */
    char upstream[];     /* to give a probe back */
};

static void noop_lost(void *arg)
{
    (void)arg;
}

static void noop_stored(void *arg, const char *key, size_t len)
{
    (void)arg;
    (void)key;
    (void)len;
}

static void call_free(struct gr_call *c)
{
    for (int i = 2; i < c->argc; i++) /* argv[0] and [1] are static */
        free(c->argv[i]);
    free(c);
}

/* `c` takes `s` (malloc'd; NULL: out of memory) as its next argument.
 * Returns 0, or -1 (and `s` is freed). */
static int call_take(struct gr_call *c, char *s)
{
    if (!s || c->argc >= ARGS_MAX) {
        free(s);
        return -1;
    }
    c->argv[c->argc] = s;
    c->argvlen[c->argc++] = strlen(s);
    return 0;
}

static char *format_arg(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    return n < 0 ? NULL : s;
}

/* An upstream's key: PREFIX{UPSTREAM}:SUFFIX. The hash tag puts every key
 * of one upstream in one Redis Cluster slot, so a script may touch them
 * together. */
static char *upstream_key(const char *prefix, const char *upstream, const char *suffix)
{
    return format_arg("%s{%s}:%s", prefix, upstream, suffix);
}

static struct gr_call *call_new(struct guardredis *gr, enum script s, int nkeys)
{
    struct gr_call *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->gr = gr;
    c->script = s;
    c->argv[0] = "EVALSHA";
    c->argvlen[0] = 7;
    c->argv[1] = gr->sha[s];
    c->argvlen[1] = 40;
    c->argc = 2;
    if (call_take(c, format_arg("%d", nkeys)) < 0) {
        call_free(c);
        return NULL;
    }
    return c;
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata);

/* Send `c`; frees it when it cannot go. Returns 0 or -1. */
static int call_send(struct gr_call *c)
{
    struct redis_link *r = &c->gr->link;
    if (!redis_link_ready(r) || redis_link_send_argv(r, c->argv[3], c->argvlen[3], on_reply, c, c->argc,
                                                     (const char **)c->argv, c->argvlen) != REDIS_OK) {
        call_free(c);
        return -1;
    }
    r->pending++;
    return 0;
}

static void op_maybe_free(struct guardredis_op *op)
{
    if (op->finished && !op->reply_out) {
        if (op->timer)
            event_free(op->timer);
        free(op);
    }
}

static void op_answer(struct guardredis_op *op, int answered, const struct guard_verdict *v, int failing)
{
    if (op->finished)
        return;
    op->finished = 1;
    evtimer_del(op->timer);
    if (answered)
        op->gr->admissions++;
    else
        op->gr->unanswered++;
    op->cb(answered, v, failing, op->arg);
}

static void give_probe_back(struct guardredis *gr, const char *upstream)
{
    struct guard_conf conf;
    guard_conf_defaults(&conf); /* an abandoned probe reads none of it */
    guardredis_report(gr, upstream, &conf, 0, GUARD_ABANDONED, 1);
}

/* Read an admission's reply {refusal, wait_ms, probe, failing} into `v`
 * and `failing`. Returns 1, 0 when undecided (a fold's half-open circuit),
 * -1 when it is not such a reply. */
static int read_verdict(const long long reply[4], struct guard_verdict *v, int *failing)
{
    memset(v, 0, sizeof(*v));
    *failing = 0;
    long long why = reply[0];
    if (why == FOLD_UNDECIDED)
        return 0;
    if (why < GUARD_ADMITTED || why > GUARD_CIRCUIT_OPEN)
        return -1;
    v->refusal = (enum guard_refusal)why;
    v->probe = reply[2] == 1;
    *failing = reply[3] == 1;
    if (v->refusal != GUARD_ADMITTED) {
        v->wait_ms = reply[1] < 1 ? 1 : reply[1];
        v->retry_after_s = (int)((v->wait_ms + 999) / 1000);
    }
    return 1;
}

static void on_admit_reply(struct guardredis_op *op, const redisReply *rep)
{
    struct guard_verdict v;
    int failing = 0;
    long long ints[4] = {0};
    int ok = rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 4;
    for (size_t i = 0; ok && i < 4; i++) {
        ok = rep->element[i]->type == REDIS_REPLY_INTEGER;
        ints[i] = ok ? rep->element[i]->integer : 0;
    }
    ok = ok && read_verdict(ints, &v, &failing) == 1;
    if (op->finished) { /* cancelled, or past its budget: what it took goes back */
        if (ok && v.probe)
            give_probe_back(op->gr, op->upstream);
        return;
    }
    op_answer(op, ok, &v, failing);
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    struct gr_call *c = privdata;
    struct guardredis *gr = c->gr;
    struct redis_link *r = &gr->link;
    redisReply *rep = reply;
    r->pending--;
    struct guardredis_op *op = c->op;
    if (r->closing) {
        if (op) {
            op->reply_out = 0;
            op->finished = 1;
            op_maybe_free(op);
        }
        call_free(c);
        return;
    }
    if (rep && rep->type == REDIS_REPLY_ERROR && !c->as_eval && strncmp(rep->str, "NOSCRIPT", 8) == 0) {
        /* Not in this server's script cache (a restart, a failover): send the text once. */
        c->as_eval = 1;
        c->argv[0] = "EVAL";
        c->argvlen[0] = 4;
        c->argv[1] = (char *)script_text[c->script];
        c->argvlen[1] = strlen(script_text[c->script]);
        if (call_send(c) == 0)
            return;
        rep = NULL; /* could not resend (freed): no answer */
        c = NULL;
    } else if (rep && rep->type == REDIS_REPLY_ERROR) {
        redis_link_error_reply(r, "EVALSHA", rep);
    } else if (!rep) {
        r->errors++;
    }
    if (op) {
        op->reply_out = 0;
        on_admit_reply(op, rep && rep->type != REDIS_REPLY_ERROR ? rep : NULL);
        op_maybe_free(op);
    } else if (c && c->script == SCRIPT_BEAT && rep && rep->type == REDIS_REPLY_INTEGER) {
        gr->fleet = (size_t)rep->integer;
    }
    if (c)
        call_free(c);
}

static void on_budget(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct guardredis_op *op = arg;
    op->gr->link.timeouts++;
    op_answer(op, 0, NULL, 0);
    op_maybe_free(op);
}

void guardredis_fold_clear(struct guardredis_fold *f)
{
    for (int i = 0; i < f->nkeys; i++)
        free(f->keys[i]);
    for (int i = 0; i < f->nargs; i++)
        free(f->args[i]);
    f->nkeys = f->nargs = 0;
}

/* The admission's keys and arguments (ADMIT_FUNCTION's), for a script of
 * ours (`may_probe` 1) or a fold (0). Returns 0, or -1 out of memory. */
static int admission_args(const struct guardredis *gr, const char *upstream, const char *project,
                          const struct guard_conf *conf, int may_probe, struct guardredis_fold *out)
{
    static const char *const suffix[] = {"rate", "throttled", "open", "probe", "halfopen", "failures"};
    memset(out, 0, sizeof(*out));
    const char *p = gr->prefix;
    for (size_t i = 0; i < sizeof(suffix) / sizeof(suffix[0]); i++)
        out->keys[out->nkeys++] = upstream_key(p, upstream, suffix[i]);
    if (conf->project_rate > 0 && project && *project)
        out->keys[out->nkeys++] = format_arg("%s{%s}:project:%s", p, upstream, project);
    out->args[out->nargs++] = format_arg("%.17g", conf->rate);
    out->args[out->nargs++] = format_arg("%.17g", conf->burst);
    out->args[out->nargs++] = format_arg("%.17g", conf->project_rate);
    out->args[out->nargs++] = format_arg("%.17g", conf->project_burst);
    out->args[out->nargs++] = format_arg("%" PRId64, conf->probe_timeout_ms);
    out->args[out->nargs++] = format_arg("%d", may_probe);
    for (int i = 0; i < out->nkeys; i++)
        if (!out->keys[i])
            goto oom;
    for (int i = 0; i < out->nargs; i++)
        if (!out->args[i])
            goto oom;
    return 0;
oom:
    guardredis_fold_clear(out);
    return -1;
}

int guardredis_fold(const struct guardredis *gr, const char *upstream, const char *project,
                    const struct guard_conf *conf, struct guardredis_fold *out)
{
    if (!redis_link_ready(&gr->link))
        return -1;
    return admission_args(gr, upstream, project, conf, 0, out);
}

int guardredis_fold_verdict(struct guardredis *gr, const long long reply[4], struct guard_verdict *v, int *failing)
{
    int rc = read_verdict(reply, v, failing);
    if (rc == 1)
        gr->admissions++;
    return rc == 1;
}

struct guardredis_op *guardredis_admit(struct guardredis *gr, const char *upstream, const char *project,
                                       const struct guard_conf *conf, guardredis_admit_cb cb, void *arg)
{
    if (!redis_link_ready(&gr->link))
        return NULL;
    struct guardredis_fold a;
    if (admission_args(gr, upstream, project, conf, 1, &a) < 0)
        return NULL;
    size_t len = strlen(upstream);
    struct guardredis_op *op = calloc(1, sizeof(*op) + len + 1);
    struct gr_call *c = op ? call_new(gr, SCRIPT_ADMIT, a.nkeys) : NULL;
    if (!c || c->argc + a.nkeys + a.nargs > ARGS_MAX) {
        if (c)
            call_free(c);
        free(op);
        guardredis_fold_clear(&a);
        return NULL;
    }
    for (int i = 0; i < a.nkeys; i++) /* the call takes the strings over */
        call_take(c, a.keys[i]);
    for (int i = 0; i < a.nargs; i++)
        call_take(c, a.args[i]);
    memcpy(op->upstream, upstream, len + 1);
    op->gr = gr;
    op->cb = cb;
    op->arg = arg;
    c->op = op;
    if (!(op->timer = evtimer_new(gr->link.base, on_budget, op))) {
        call_free(c);
        free(op);
        return NULL;
    }
    if (call_send(c) < 0) {
        event_free(op->timer);
        free(op);
        return NULL;
    }
    op->reply_out = 1;
    struct timeval tv = redis_link_tv(gr->link.budget_ms);
    evtimer_add(op->timer, &tv);
    return op;
}

void guardredis_cancel(struct guardredis *gr, struct guardredis_op *op)
{
    (void)gr;
    op->finished = 1;
    evtimer_del(op->timer);
    op_maybe_free(op);
}

void guardredis_report(struct guardredis *gr, const char *upstream, const struct guard_conf *conf, int64_t backoff_ms,
                       enum guard_outcome outcome, int probe)
{
    int failed = outcome == GUARD_TRANSPORT_FAILURE || (outcome == GUARD_UPSTREAM_5XX && conf->breaker_count_5xx);
    int kind = outcome == GUARD_ABANDONED ? 2 : failed ? 1 : 0;
    if (!redis_link_ready(&gr->link))
        return;
    struct gr_call *c = call_new(gr, SCRIPT_REPORT, 5);
    if (!c)
        return;
    const char *p = gr->prefix;
    int rc = call_take(c, upstream_key(p, upstream, "throttled")) | call_take(c, upstream_key(p, upstream, "open")) |
             call_take(c, upstream_key(p, upstream, "halfopen")) | call_take(c, upstream_key(p, upstream, "probe")) |
             call_take(c, upstream_key(p, upstream, "failures"));
    rc |= call_take(c, format_arg("%d", kind)) | call_take(c, format_arg("%d", probe ? 1 : 0)) |
          call_take(c, format_arg("%" PRId64, backoff_ms)) | call_take(c, format_arg("%u", conf->breaker_threshold)) |
          call_take(c, format_arg("%" PRId64, conf->breaker_cooldown_ms)) |
          call_take(c, format_arg("%" PRId64, conf->breaker_max_ms));
    if (rc < 0) {
        call_free(c);
        return;
    }
    call_send(c);
}

static void on_heartbeat(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct guardredis *gr = arg;
    struct gr_call *c = redis_link_ready(&gr->link) ? call_new(gr, SCRIPT_BEAT, 1) : NULL;
    if (c) {
        if (call_take(c, format_arg("%sfleet", gr->prefix)) < 0 || call_take(c, format_arg("%s", gr->id)) < 0 ||
            call_take(c, format_arg("%d", GUARDREDIS_LIVE_MS)) < 0)
            call_free(c);
        else
            call_send(c);
    }
    struct timeval tv = redis_link_tv(gr->link.state == REDIS_UP ? GUARDREDIS_HEARTBEAT_MS : 100);
    evtimer_add(gr->heartbeat, &tv);
}

static void random_id(char out[33])
{
    unsigned char b[16] = {0};
    if (randbytes_fill(b, sizeof(b)) < 0) { /* unlikely: the pid and the clock still tell processes apart */
        uint64_t x = (uint64_t)getpid() ^ (uint64_t)clock_mono_us();
        memcpy(b, &x, sizeof(x));
    }
    for (int i = 0; i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", b[i]);
}

struct guardredis *guardredis_new(struct event_base *base, const struct cache_conf *conf, const char *key_prefix,
                                  char *err, size_t errlen)
{
    struct guardredis *gr = calloc(1, sizeof(*gr));
    if (!gr) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    struct cache_conf c = *conf;
    c.redis_notify = CACHE_NOTIFY_POLL; /* one connection: no subscriber */
    struct redis_link_hooks hooks = {.data_lost = noop_lost, .stored = noop_stored, .arg = gr};
    if (redis_link_init(&gr->link, base, &c, &hooks, err, errlen) < 0) {
        free(gr);
        return NULL;
    }
    if (asprintf(&gr->prefix, "%sguard:", key_prefix ? key_prefix : "") < 0 ||
        !(gr->heartbeat = evtimer_new(base, on_heartbeat, gr))) {
        snprintf(err, errlen, "out of memory");
        gr->prefix = NULL;
        guardredis_free(gr);
        return NULL;
    }
    for (int s = 0; s < SCRIPT__COUNT; s++)
        digest_script_sha(script_text[s], gr->sha[s]);
    random_id(gr->id);
    redis_link_start(&gr->link);
    struct timeval tv = redis_link_tv(100);
    evtimer_add(gr->heartbeat, &tv);
    return gr;
}

void guardredis_free(struct guardredis *gr)
{
    if (!gr)
        return;
    if (gr->heartbeat)
        event_free(gr->heartbeat);
    redis_link_close(&gr->link); /* pending replies come back NULL, with closing set: freed there */
    free(gr->prefix);
    free(gr);
}

void guardredis_stats(const struct guardredis *gr, struct guardredis_stats *out)
{
    memset(out, 0, sizeof(*out));
    out->up = gr->link.state == REDIS_UP;
    out->fleet = gr->fleet;
    out->admissions = gr->admissions;
    out->unanswered = gr->unanswered;
    out->errors = gr->link.errors;
}
