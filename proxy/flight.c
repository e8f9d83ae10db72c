#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <cjson/cJSON.h>

#include "cache.h"
#include "callpolicy.h"
#include "clock.h"
#include "credentials.h"
#include "flight.h"
#include "judge.h"
#include "log.h"
#include "regions.h"
#include "metrics.h"
#include "gateway_int.h"
#include "rules.h"
#include "upstream.h"

#define URL_MAX 2200

struct flight {
    struct keymap_item item;                             /* item.key == flight_key */
    enum flight_state state;                             /* see flight.h */
    char key[KEY_MAX];                                   /* the cache key */
    char flight_key[KEY_MAX + 1 + TOKENGRANT_HASH_SIZE]; /* pass-through: one call per key and token */
    char token_hash[TOKENGRANT_HASH_SIZE];
    char project[ROUTE_MAX_PATH + 1];
    char request_id[REQID_MAX + 1]; /* of the request that started it: sent upstream */
    struct gateway *gw;
    struct ruleset *rules;
    const struct rule *rule;
    char expected_id[ROUTE_MAX_PATH + 1];
    struct callpolicy_upstream *up; /* this flight's upstream and its guard (a reference) */
    struct body *stale;             /* the last still-changing answer, past its TTL (a reference), or NULL */
    /* The handle of what the state waits for (NULL while its callback runs,
     * or when the callback came before the ask returned): */
    struct cache_pending *pending;            /* LEASE, WAIT_HOLDER */
    struct callpolicy_pending *admit_pending; /* ADMITTING */
    struct credentials_wait *cred_wait;       /* CREDENTIALS */
    struct event *admit_timer;                /* ADMISSION_QUEUE (kept once made) */
    struct upstream_call *call;               /* CALLING */
    struct cache_fold folded;                 /* answered: its first waiter's lookup admitted its call (cache_fold) */
    struct callpolicy_verdict admitted; /* the verdict that let the call go (its store, whether it is the probe) */
    int holds_admission;                /* admitted, its end not reported yet: report it exactly once */
    int lease_held;                     /* this process holds the key's lease: store or release it */
    int stored;                         /* an answer was stored (which releases the lease) */
    uint64_t token_id;                  /* the IAM token sent, for credentials_token_rejected */
    int renewed;                        /* the call was sent again after the cloud refused an expired token */
    int64_t queued_until_ms;            /* give up waiting for a rate-limit token after this (monotonic) */
    char url[URL_MAX];
    char *client_token;              /* the token sent upstream, sized to it (secret; wiped when freed), or NULL */
    struct job_request_list waiters; /* in arrival order, hence in deadline order */
    size_t nwaiters;
    struct event *wait_timer; /* armed for the first waiter's deadline */
};

/* Wipe and free a token copy (NULL is ignored). */
static void token_free(char *token)
{
    if (token) {
        explicit_bzero(token, strlen(token));
        free(token);
    }
}

/* What the waiters of a flight are answered with. */
struct flight_answer {
    struct body *body;                    /* the job (borrowed), or NULL: */
    const struct client_error *err;       /*   this error, */
    int stale_ok;                         /*   or the stale copy when there is one and this is set */
    const struct upstream_response *resp; /* the call that answered them (for the audit log), or NULL */
};

static void flight_call(struct flight *f);

/* ---------------------------------------------------------------- waiters */

static void arm_wait_timer(struct flight *f)
{
    struct job_request *first = TAILQ_FIRST(&f->waiters);
    if (!first || !f->wait_timer)
        return;
    int64_t us = first->wait_deadline_us - clock_mono_us();
    if (us < 0)
        us = 0;
    struct timeval tv = {(time_t)(us / 1000000), (suseconds_t)(us % 1000000)};
    evtimer_add(f->wait_timer, &tv);
}

/* Take `jr` off its flight's waiters (it is being answered, or is gone). */
static void waiter_unlink(struct job_request *jr)
{
    struct flight *f = jr->flight;
    if (!f)
        return;
    int was_first = TAILQ_FIRST(&f->waiters) == jr;
    TAILQ_REMOVE(&f->waiters, jr, wait_link);
    f->nwaiters--;
    jr->flight = NULL;
    if (was_first && f->wait_timer) {
        evtimer_del(f->wait_timer);
        arm_wait_timer(f);
    }
}

/* Take `jr` off the waiters and answer it with `a`. */
static void answer_waiter(struct flight *f, struct job_request *jr, const struct flight_answer *a)
{
    waiter_unlink(jr);
    if (a->resp) {
        jr->upstream_status = a->resp->fault == FAULT_NONE ? a->resp->status : 0;
        jr->upstream_us = a->resp->elapsed_us;
    }
    if (a->body)
        request_answer_job(jr, a->body, 0);
    else if (a->stale_ok && f->stale)
        request_answer_stale(jr, f->stale);
    else
        request_answer_error(jr, a->err);
}

/* A client that closes its connection while its request waits is not
 * noticed here: a half-close (shutdown(SHUT_WR), the client still reading)
 * looks the same as a close on the wire (EV_CLOSED fires for both), and
 * HTTP/1.1 lets a client half-close after its last request and read the
 * answers. A waiter is bounded by coalesce.max_wait; a gone client's answer
 * fails to write and evhttp frees the connection then. */

/* Waiters past coalesce.max_wait are answered 504 (or stale); the call goes
 * on for the rest. */
static void on_wait_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct flight *f = arg;
    int64_t now = clock_mono_us();
    struct job_request *jr;
    while ((jr = TAILQ_FIRST(&f->waiters)) != NULL && jr->wait_deadline_us <= now) {
        metrics_count_event(f->gw->metrics, EVENT_WAITER_TIMEOUT);
        struct client_error err;
        errmap_from_fault(&jr->rule->errors, FAULT_TIMEOUT, &err);
        answer_waiter(f, jr, &(struct flight_answer){.err = &err, .stale_ok = 1});
    }
    /* libevent's clock may run a little behind ours: a timer can fire just
     * before the deadline it was set for. Set it again for what is left. */
    arm_wait_timer(f);
}

/* ------------------------------------------------------------- the end */

/* Free `f` in whatever state it is, dropping what that state waits for. */
static void flight_free(struct flight *f)
{
    struct gateway *gw = f->gw;
    switch (f->state) {
    case FLIGHT_LEASE:
    case FLIGHT_WAIT_HOLDER:
        if (f->pending)
            cache_cancel(gw->cache, f->pending);
        break;
    case FLIGHT_CREDENTIALS:
        if (f->cred_wait)
            credentials_cancel(f->cred_wait);
        break;
    case FLIGHT_CALLING:
        if (f->call)
            upstream_cancel(gw->upstream, f->call);
        break;
    case FLIGHT_ADMITTING:
        if (f->admit_pending)
            callpolicy_cancel(f->admit_pending);
        break;
    case FLIGHT_NEW:
    case FLIGHT_ADMISSION_QUEUE: /* the timer goes below */
    case FLIGHT_DONE: break;
    }
    if (f->holds_admission) /* shutdown: the guard learns nothing of this call */
        callpolicy_abandoned(f->up, &f->admitted);
    callpolicy_upstream_unref(f->up);
    if (f->admit_timer)
        event_free(f->admit_timer);
    /* Nothing stored: the key's lease, if this process holds it (whoever
     * took it: our ask, a lookup's, one granted late), is released now, so
     * that others waiting on it need not wait for it to expire. */
    if (!f->stored)
        cache_lease_release(gw->cache, f->key);
    body_unref(f->stale);
    token_free(f->client_token);
    keymap_remove(&gw->flights, &f->item);
    if (f->wait_timer)
        event_free(f->wait_timer);
    ruleset_unref(f->rules);
    free(f);
}

/* DONE: answer every waiter left with `a`, then free the flight. The one
 * place where a flight's waiters are answered together. */
static void flight_answer_all(struct flight *f, const struct flight_answer *a)
{
    assert(f->state != FLIGHT_DONE);
    f->state = FLIGHT_DONE;
    if (!a->body && a->stale_ok && f->stale)
        log_info("serving key %s stale (age %llds): %s", f->key,
                 (long long)((clock_wall_ms() - f->stale->stored_at_ms) / 1000), a->err->code);
    struct job_request *jr;
    while ((jr = TAILQ_FIRST(&f->waiters)) != NULL)
        answer_waiter(f, jr, a);
    flight_free(f);
}

/* No upstream answer to share: answer every waiter with the stale copy when
 * there is one and `stale_ok` (upstream failed rather than judged), else
 * with `err`. */
static void flight_fail(struct flight *f, const struct client_error *err, int stale_ok)
{
    flight_answer_all(f, &(struct flight_answer){.err = err, .stale_ok = stale_ok});
}

/* ------------------------------------------------------- the answer */

/* Tell the fleet (Redis, under the token's hash only) what upstream just
 * judged: a grant for the window, or none at all. */
static void share_grant(struct flight *f, int granted)
{
    struct gateway *gw = f->gw;
    char key[TOKENGRANT_KEY_MAX(KEY_MAX)];
    if (tokengrant_shared_key(key, sizeof(key), gw->key_prefix, f->token_hash, f->rule->name, f->project) < 0)
        return;
    if (granted)
        cache_grant_set(gw->cache, key, gw->passthrough_window_ms);
    else
        cache_grant_del(gw->cache, key);
}

/* CALLING -> [call] (renewal) or DONE. */
static void on_upstream_done(const struct upstream_response *resp, void *arg)
{
    struct flight *f = arg;
    struct gateway *gw = f->gw;
    assert(f->state == FLIGHT_CALLING);
    f->call = NULL;
    metrics_count_upstream(gw->metrics, f->rule->name, resp->status, resp->fault, resp->elapsed_us);
    f->holds_admission = 0;
    callpolicy_report(f->up, &f->admitted, resp);

    struct client_error err;
    struct judge_input in = {.rule = f->rule,
                             .cache = gw->cache,
                             .key = f->key,
                             .expected_id = f->expected_id,
                             .error_shape = gw->error_shape};
    struct body *b = judge_answer(&in, resp, &err, &f->stored);
    if (f->token_hash[0] && gw->token_grants && resp->fault == FAULT_NONE) {
        /* The cloud has judged this token for this rule's upstream and project: only a 200
         * about the very job asked for (the body judge_answer kept) grants; a 404 does not. */
        int granted = resp->status == 200 && b && b->status != 404;
        if (granted)
            tokengrant_accepted(gw->token_grants, f->token_hash, f->rule->name, f->project, clock_mono_us() / 1000);
        else if (resp->status == 401 || resp->status == 403)
            tokengrant_refused(gw->token_grants, f->token_hash, f->rule->name, f->project);
        if (granted || resp->status == 401 || resp->status == 403)
            share_grant(f, granted);
    }
    if (!b && resp->fault == FAULT_NONE && resp->status == 401 && gw->credentials && f->token_id &&
        rule_token_expired(f->rule, err.code)) {
        /* jobgate's IAM token expired early (credentials changed): get a new one
         * and ask once more; the client cannot fix jobgate's token. */
        credentials_token_rejected(gw->credentials, f->project[0] ? f->project : NULL, f->token_id);
        if (!f->renewed) {
            f->renewed = 1;
            log_info("upstream refused jobgate's token for key %s as expired: renewing it", f->key);
            flight_call(f);
            return;
        }
    }
    /* Without a job: a failing upstream may have the stale copy stand in. */
    int stale_ok = !b && callpolicy_stale_may_answer(resp);
    flight_answer_all(f, &(struct flight_answer){.body = b, .err = &err, .stale_ok = stale_ok, .resp = resp});
    body_unref(b);
}

/* ------------------------------------------------------------- the call */

/* ADMISSION_QUEUE -> [admit] again. */
static void on_admit_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct flight *f = arg;
    assert(f->state == FLIGHT_ADMISSION_QUEUE);
    flight_call(f);
}

/* Wait `wait_ms` for a rate-limit token. Returns 0, or -1 (no timer). */
static int queue_for_token(struct flight *f, int64_t wait_ms)
{
    if (!f->admit_timer && !(f->admit_timer = evtimer_new(f->gw->base, on_admit_timer, f)))
        return -1;
    struct timeval tv = {(time_t)(wait_ms / 1000), (suseconds_t)((wait_ms % 1000) * 1000 + 500)};
    evtimer_add(f->admit_timer, &tv);
    f->state = FLIGHT_ADMISSION_QUEUE;
    return 0;
}

/* The admitted call could not go or got no answer: the guard learns nothing. */
static void give_back_admission(struct flight *f)
{
    if (f->holds_admission) {
        f->holds_admission = 0;
        callpolicy_abandoned(f->up, &f->admitted);
    }
}

/* [send]: the call goes upstream (-> CALLING). */
static void flight_send(struct flight *f, char *const *auth_headers, size_t nauth_headers)
{
    struct gateway *gw = f->gw;
    const struct rule *rule = f->rule;
    struct upstream_request ureq = {
        .url = f->url,
        .request_id = f->request_id,
        .auth_token = f->client_token && f->client_token[0] ? f->client_token : NULL,
        .auth_headers = auth_headers,
        .nauth_headers = nauth_headers,
        .connect_timeout_ms = rule->connect_timeout_ms,
        .timeout_ms = rule->timeout_ms,
        .add_headers = rule->add_headers,
        .nadd_headers = rule->nadd_headers,
        .drop_headers = rule->drop_headers,
        .ndrop_headers = rule->ndrop_headers,
    };
    f->state = FLIGHT_CALLING;
    f->call = upstream_fetch(gw->upstream, &ureq, on_upstream_done, f); /* never calls back from inside */
    if (!f->call) {
        give_back_admission(f);
        struct client_error err;
        errmap_from_fault(&rule->errors, FAULT_INTERNAL, &err);
        flight_fail(f, &err, 1);
    }
}

/* CREDENTIALS -> [send], or DONE when jobgate has none. */
static void on_credentials(const struct credentials_result *r, void *arg)
{
    struct flight *f = arg;
    assert(f->state == FLIGHT_CREDENTIALS);
    f->cred_wait = NULL;
    if (r->status != CREDENTIALS_OK) {
        /* jobgate cannot prove who it is: the cloud is not asked, the client may retry later. */
        log_warn("no upstream credentials for key %s: %s", f->key, r->reason ? r->reason : "unknown");
        give_back_admission(f);
        struct client_error err;
        callpolicy_no_credentials(&err);
        flight_fail(f, &err, 1);
        return;
    }
    f->token_id = r->token_id;
    flight_send(f, r->headers, r->nheaders);
}

/* ADMITTING -> [send] with jobgate's own credentials when it holds them
 * (which may first need a token from IAM: -> CREDENTIALS), else with the
 * client's token; or ADMISSION_QUEUE (over the rate limit, it may wait for
 * a token); or DONE when the guard refuses (rate limit, 429 backoff, open
 * circuit): every waiter is answered from the stale copy, or 503 with
 * Retry-After. */
static void on_admitted(const struct callpolicy_verdict *v, void *arg)
{
    struct flight *f = arg;
    struct gateway *gw = f->gw;
    assert(f->state == FLIGHT_ADMITTING);
    f->admit_pending = NULL;
    if (v->admission == CALLPOLICY_QUEUE && queue_for_token(f, v->wait_ms) == 0)
        return;
    if (v->admission != CALLPOLICY_GO) {
        struct client_error err;
        callpolicy_refusal(gw->policy, f->up, v, f->key, &err);
        flight_fail(f, &err, 1);
        return;
    }
    f->admitted = *v;
    f->holds_admission = 1;
    struct credentials *c = gw->credentials;
    if (!c || credentials_mode(c) == CRED_PASSTHROUGH || credentials_mode(c) == CRED_TOKEN) {
        flight_send(f, NULL, 0);
        return;
    }
    f->state = FLIGHT_CREDENTIALS;
    struct credentials_wait *w =
        credentials_get(c, f->project[0] ? f->project : NULL, "GET", f->url, on_credentials, f);
    if (w) /* else it has called back already, and f may be gone */
        f->cred_wait = w;
}

/* [call]: ask the upstream's guard whether the call may go (-> ADMITTING);
 * the answer may come before callpolicy_admit returns (a local store) or
 * later (the fleet's, in Redis). */
static void flight_call(struct flight *f)
{
    assert(f->state == FLIGHT_NEW || f->state == FLIGHT_LEASE || f->state == FLIGHT_WAIT_HOLDER ||
           f->state == FLIGHT_ADMISSION_QUEUE || f->state == FLIGHT_CALLING);
    f->state = FLIGHT_ADMITTING;
    struct callpolicy_verdict folded;
    if (f->folded.answered) { /* the lookup that took the lease admitted the call too: used once */
        int decided = callpolicy_folded(f->gw->policy, f->up, &f->folded, &f->queued_until_ms, &folded);
        f->folded.answered = 0;
        if (decided) {
            on_admitted(&folded, f);
            return;
        }
    }
    struct callpolicy_pending *p =
        callpolicy_admit(f->gw->policy, f->up, f->project[0] ? f->project : NULL, &f->queued_until_ms, on_admitted, f);
    if (p) /* else it has called back already, and f may be gone */
        f->admit_pending = p;
}

/* ------------------------------------------------------------ the lease */

/* What an answer read from Redis for `f` must be (borrowed from `f`). */
static struct cache_expect flight_expect(const struct flight *f)
{
    return (struct cache_expect){.job = &f->rule->job,
                                 .identity = f->rule->identity_param >= 0 ? f->expected_id : NULL};
}

/* WAIT_HOLDER: the holder of the lease stored its answer (HIT: -> DONE), or
 * went away without one (MISS: lease expired or released), or the wait ran
 * out, or Redis failed (-> [call]). */
static void on_leased_answer(enum cache_status status, struct body *b, void *arg)
{
    struct flight *f = arg;
    assert(f->state == FLIGHT_WAIT_HOLDER);
    f->pending = NULL;
    if (status != CACHE_HIT) {
        flight_call(f); /* nobody else got it: call upstream ourselves */
        return;
    }
    metrics_count_event(f->gw->metrics, EVENT_SHARED_ANSWER);
    flight_answer_all(f, &(struct flight_answer){.body = b});
}

/* LEASE -> WAIT_HOLDER, or [call]. */
static void on_lease(enum cache_lease_status status, void *arg)
{
    struct flight *f = arg;
    assert(f->state == FLIGHT_LEASE);
    f->pending = NULL;
    if (status == CACHE_LEASE_HELD) {
        /* Another process or instance is calling upstream for this key: wait
         * for the answer it stores, at most as long as its call may take. */
        int64_t bound = f->rule->connect_timeout_ms + f->rule->timeout_ms + 1000;
        f->state = FLIGHT_WAIT_HOLDER;
        const struct cache_expect expect = flight_expect(f);
        struct cache_pending *p = cache_wait(f->gw->cache, f->key, &expect, bound, on_leased_answer, f);
        if (p) /* else it has called back already, and f may be gone */
            f->pending = p;
        return;
    }
    f->lease_held = status == CACHE_LEASE_ACQUIRED;
    flight_call(f);
}

int64_t flight_lease_ms(const struct rule *rule)
{
    return rule->connect_timeout_ms + rule->timeout_ms + 1000;
}

/* NEW -> LEASE, or [call]. With a shared cache, first take the key's lease,
 * so that one process of all those sharing the cache calls upstream: the
 * lookup that missed may have done so already (`known`), else it is asked
 * for now. Not in pass-through mode: there each token must be judged by the
 * cloud itself. */
static void flight_go(struct flight *f, enum cache_lease_status known)
{
    assert(f->state == FLIGHT_NEW);
    if (f->token_hash[0]) {
        flight_call(f);
        return;
    }
    f->state = FLIGHT_LEASE;
    if (known != CACHE_LEASE_NONE) {
        on_lease(known, f);
        return;
    }
    const struct cache_expect expect = flight_expect(f);
    struct cache_pending *p = cache_lease(f->gw->cache, f->key, &expect, flight_lease_ms(f->rule), on_lease, f);
    if (p) /* else it has called back already, and f may be gone */
        f->pending = p;
}

/* ------------------------------------------------------------- the start */

/* The token sent upstream: jobgate's own when configured, else the client's. */
static const char *upstream_token_for(const struct gateway *gw, struct evhttp_request *req)
{
    if (gw->credentials && credentials_mode(gw->credentials) == CRED_TOKEN)
        return gw->upstream_token; /* as the configuration says now: a reload picks up a rotated token */
    if (gw->credentials)
        return credentials_mode(gw->credentials) == CRED_PASSTHROUGH
                   ? evhttp_find_header(evhttp_request_get_input_headers(req), "X-Auth-Token")
                   : NULL;
    if (gw->upstream_token)
        return gw->upstream_token;
    return evhttp_find_header(evhttp_request_get_input_headers(req), "X-Auth-Token");
}

/* Requests share an upstream call when they ask for the same key, and in
 * pass-through mode present the same token: another token must be judged
 * by the cloud itself. */
static void flight_key_of(const struct job_request *jr, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s%s%s", jr->key, jr->token_hash[0] ? "#" : "", jr->token_hash);
}

/* The base URL of the upstream `jr` is for (its region put in); "" when it
 * does not fit. */
static void upstream_base(const struct job_request *jr, char *out, size_t outlen)
{
    const struct gateway *gw = jr->gw;
    if (regions_expand(gw->upstream_url ? gw->upstream_url : jr->rule->upstream_url, jr->region, out, outlen) < 0)
        out[0] = '\0';
}

static int make_fold(struct cache_fold *fold)
{
    struct job_request *jr = fold->ctx;
    const struct rule *rule = jr->rule;
    char base[URL_MAX];
    upstream_base(jr, base, sizeof(base));
    const char *project = rule->project_param >= 0 ? jr->match.values[rule->project_param] : NULL;
    return base[0] && callpolicy_fold(jr->gw->policy, base, project, fold) ? 0 : -1;
}

struct cache_fold *flight_fold(struct job_request *jr)
{
    if (jr->token_hash[0])
        return NULL; /* pass-through: no lease, each token is judged upstream */
    memset(&jr->fold, 0, sizeof(jr->fold));
    jr->fold.make = make_fold;
    jr->fold.release = callpolicy_fold_done;
    jr->fold.ctx = jr;
    return &jr->fold;
}

/* A NEW flight for `jr`'s key, indexed; NULL when out of memory or the
 * upstream URL does not fit. */
static struct flight *flight_start(struct job_request *jr)
{
    struct gateway *gw = jr->gw;
    const struct rule *rule = jr->rule;
    struct flight *f = calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    f->state = FLIGHT_NEW;
    f->gw = gw;
    memcpy(f->key, jr->key, sizeof(f->key));
    flight_key_of(jr, f->flight_key, sizeof(f->flight_key));
    f->item.key = f->flight_key;
    memcpy(f->token_hash, jr->token_hash, sizeof(f->token_hash));
    if (rule->project_param >= 0)
        snprintf(f->project, sizeof(f->project), "%s", jr->match.values[rule->project_param]);
    f->rules = ruleset_ref(jr->rules);
    f->rule = rule;
    TAILQ_INIT(&f->waiters);
    f->wait_timer = evtimer_new(gw->base, on_wait_timer, f);
    if (!f->wait_timer) {
        ruleset_unref(f->rules);
        free(f);
        return NULL;
    }
    if (rule->identity_param >= 0)
        snprintf(f->expected_id, sizeof(f->expected_id), "%s", jr->match.values[rule->identity_param]);

    /* The upstream path is the route with its validated values: nothing else
     * of the client's request (query string, extra headers) goes upstream. */
    char base[URL_MAX];
    upstream_base(jr, base, sizeof(base)); /* "": does not fit, refused below */
    int n = base[0] ? snprintf(f->url, sizeof(f->url), "%s", base) : -1;
    /* Any size the client's headers were allowed: an IAM token runs to
     * tens of KB, and a cut one would only earn a 401 upstream. */
    const char *token = upstream_token_for(gw, jr->req);
    f->client_token = token ? strdup(token) : NULL;
    snprintf(f->request_id, sizeof(f->request_id), "%s", jr->request_id);
    f->up = callpolicy_upstream(gw->policy, base);
    if ((token && !f->client_token) || n < 0 || (size_t)n >= sizeof(f->url) || !f->up ||
        rule_upstream_path(rule, &jr->match, f->url + n, sizeof(f->url) - (size_t)n) < 0 ||
        keymap_put(&gw->flights, &f->item) < 0) {
        callpolicy_upstream_unref(f->up);
        token_free(f->client_token);
        event_free(f->wait_timer);
        ruleset_unref(f->rules);
        free(f);
        return NULL;
    }
    return f;
}

/* `jr`'s lookup may have taken the key's lease while flight `f` (or NULL)
 * for it was out already (its own lease had expired, or it could not get
 * one). One that is calling upstream keeps it: it stores or releases it at
 * its end. One that waits for a holder would wait for itself: released. */
static void hand_over_lease(struct flight *f, struct job_request *jr)
{
    if (jr->lease != CACHE_LEASE_ACQUIRED)
        return;
    if (f && f->state != FLIGHT_LEASE && f->state != FLIGHT_WAIT_HOLDER)
        f->lease_held = 1;
    else
        cache_lease_release(jr->gw->cache, jr->key);
}

void flight_join(struct job_request *jr)
{
    struct gateway *gw = jr->gw;
    char flight_key[KEY_MAX + 1 + TOKENGRANT_HASH_SIZE];
    flight_key_of(jr, flight_key, sizeof(flight_key));
    struct flight *f = (struct flight *)keymap_get(&gw->flights, flight_key);
    int started = 0;
    if (!f && (f = flight_start(jr)) != NULL)
        started = 1;
    if (!started)
        hand_over_lease(f, jr);
    struct client_error err;
    if (!f) {
        errmap_from_fault(&jr->rule->errors, FAULT_INTERNAL, &err);
        request_answer_error(jr, &err);
        return;
    }
    if (f->nwaiters >= gw->max_waiters) {
        /* A bound on what one key can hold: memory, and the burst its answer releases. */
        metrics_count_event(gw->metrics, EVENT_WAITER_OVERFLOW);
        client_error_set(&err, 503, "JG.TOO_MANY_WAITERS", "too many requests are waiting for this job; retry");
        err.retry_after = 1;
        request_answer_error(jr, &err);
        return;
    }
    jr->flight = f;
    if (jr->stale && !f->stale)
        f->stale = body_ref(jr->stale);
    jr->wait_deadline_us = clock_mono_us() + gw->max_wait_ms * 1000;
    TAILQ_INSERT_TAIL(&f->waiters, jr, wait_link);
    if (++f->nwaiters == 1)
        arm_wait_timer(f);
    if (started && jr->lease == CACHE_LEASE_ACQUIRED) { /* its lookup's admission, if one was folded in and answered */
        f->folded = jr->fold;
        f->folded.ctx = NULL; /* the reply only: nothing of jr's */
    }
    if (started)
        flight_go(f, jr->lease); /* may answer jr at once (refused by the guard) */
}

int flight_refresh(struct job_request *jr, struct body *stale)
{
    struct gateway *gw = jr->gw;
    char flight_key[KEY_MAX + 1 + TOKENGRANT_HASH_SIZE];
    flight_key_of(jr, flight_key, sizeof(flight_key));
    struct flight *f = (struct flight *)keymap_get(&gw->flights, flight_key);
    if (f) { /* a call for this key is out already: its answer refreshes the cache */
        hand_over_lease(f, jr);
        return 0;
    }
    if (!(f = flight_start(jr)))
        return -1; /* jr's lease, if any, goes on to flight_join */
    f->stale = body_ref(stale);
    log_debug("request %s: key %s served stale while one call refreshes it", jr->request_id, f->key);
    flight_go(f, jr->lease); /* no waiter: whatever it ends with, only the cache learns of it */
    return 0;
}

void flight_leave(struct job_request *jr)
{
    struct flight *f = jr->flight;
    if (!f)
        return;
    waiter_unlink(jr);
    if (TAILQ_EMPTY(&f->waiters))
        flight_free(f);
}

static void free_flight_item(struct keymap_item *item)
{
    struct flight *f = (struct flight *)item;
    if (f->state == FLIGHT_ADMITTING && f->admit_pending)
        callpolicy_cancel(f->admit_pending);
    callpolicy_upstream_unref(f->up); /* a shutdown: nothing to report */
    body_unref(f->stale);             /* the cache is gone already: no lease to release, nothing to cancel */
    if (f->admit_timer)
        event_free(f->admit_timer);
    token_free(f->client_token);
    if (f->wait_timer)
        event_free(f->wait_timer);
    ruleset_unref(f->rules);
    free(f);
}

void flight_free_all(struct gateway *gw)
{
    keymap_clear(&gw->flights, free_flight_item);
}
