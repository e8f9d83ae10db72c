#include <stdlib.h>
#include <string.h>

#include "callpolicy.h"
#include "clock.h"
#include "keymap.h"
#include "log.h"
#include "metrics.h"
#include "upstream.h"

struct callpolicy_upstream {
    struct keymap_item item; /* key: base URL */
    char *base_url;
    struct guard *g;
};

struct callpolicy {
    struct metrics *metrics;
    struct keymap upstreams;      /* struct callpolicy_upstream by base URL */
    struct guard_conf guard_conf; /* for guards made from now on */
    int64_t rate_queue_ms;        /* how long a call may wait for a rate-limit token */
};

struct callpolicy *callpolicy_new(struct metrics *metrics)
{
    struct callpolicy *cp = calloc(1, sizeof(*cp));
    if (cp)
        cp->metrics = metrics;
    return cp;
}

static void free_upstream_item(struct keymap_item *item)
{
    struct callpolicy_upstream *up = (struct callpolicy_upstream *)item;
    guard_free(up->g);
    free(up->base_url);
    free(up);
}

void callpolicy_configure(struct callpolicy *cp, const struct guard_conf *gc, int64_t rate_queue_ms)
{
    struct guard_conf c;
    memset(&c, 0, sizeof(c)); /* compared bytewise below: no stray padding */
    if (gc)
        memcpy(&c, gc, sizeof(c));
    else
        guard_conf_defaults(&c);
    cp->rate_queue_ms = rate_queue_ms;
    if (memcmp(&c, &cp->guard_conf, sizeof(c)) != 0) {
        cp->guard_conf = c;
        keymap_clear(&cp->upstreams, free_upstream_item);
    }
}

void callpolicy_free(struct callpolicy *cp)
{
    if (!cp)
        return;
    keymap_clear(&cp->upstreams, free_upstream_item);
    free(cp);
}

struct callpolicy_upstream *callpolicy_upstream(struct callpolicy *cp, const char *base_url)
{
    struct callpolicy_upstream *up = (struct callpolicy_upstream *)keymap_get(&cp->upstreams, base_url);
    if (up)
        return up;
    char err[256];
    up = calloc(1, sizeof(*up));
    if (!up || !(up->base_url = strdup(base_url)) || !(up->g = guard_new(&cp->guard_conf, err, sizeof(err)))) {
        if (up)
            free(up->base_url);
        free(up);
        return NULL;
    }
    up->item.key = up->base_url;
    if (keymap_put(&cp->upstreams, &up->item) < 0) {
        guard_free(up->g);
        free(up->base_url);
        free(up);
        return NULL;
    }
    return up;
}

struct callpolicy_verdict callpolicy_admit(struct callpolicy *cp, struct callpolicy_upstream *up, const char *project,
                                           int64_t *queued_until_ms)
{
    int64_t now_ms = clock_mono_us() / 1000;
    struct callpolicy_verdict v = {.admission = CALLPOLICY_REFUSED, .gv = guard_admit(up->g, project, now_ms)};
    if (v.gv.refusal == GUARD_ADMITTED) {
        v.admission = CALLPOLICY_GO;
        return v;
    }
    /* The rate limit has no token now but will within wait_ms: wait for it
     * (at most rate_queue_ms from the first refusal) rather than fail the
     * waiters; many SDKs give up on the first error, even a retryable one. */
    if (v.gv.refusal != GUARD_RATE_LIMITED || cp->rate_queue_ms <= 0)
        return v;
    if (!*queued_until_ms)
        *queued_until_ms = now_ms + cp->rate_queue_ms;
    if (now_ms + v.gv.wait_ms <= *queued_until_ms) {
        v.admission = CALLPOLICY_QUEUE;
        v.wait_ms = v.gv.wait_ms;
    }
    return v;
}

void callpolicy_refusal(struct callpolicy *cp, const struct callpolicy_upstream *up, const struct callpolicy_verdict *v,
                        const char *key, struct client_error *err)
{
    enum metrics_event event;
    switch (v->gv.refusal) {
    case GUARD_THROTTLED:
        client_error_set(err, 503, "JG.UPSTREAM_THROTTLED", "the cloud API is throttling jobgate; retry later");
        event = EVENT_UPSTREAM_THROTTLED;
        break;
    case GUARD_CIRCUIT_OPEN:
        client_error_set(err, 503, "JG.UPSTREAM_UNAVAILABLE",
                         "the cloud API is failing; jobgate waits before trying it again");
        event = EVENT_UPSTREAM_CIRCUIT_OPEN;
        break;
    case GUARD_RATE_LIMITED:
        client_error_set(err, 503, "JG.UPSTREAM_RATE_LIMITED",
                         "jobgate's rate limit for the cloud API is reached; retry later");
        event = EVENT_UPSTREAM_RATE_LIMITED;
        break;
    default:
        /* GUARD_BAD_PROJECT (an id the guard cannot keep): answered as the
         * rate limit, counted as a call held back by an open circuit. */
        client_error_set(err, 503, "JG.UPSTREAM_RATE_LIMITED",
                         "jobgate's rate limit for the cloud API is reached; retry later");
        event = EVENT_UPSTREAM_CIRCUIT_OPEN;
        break;
    }
    err->retry_after = v->gv.retry_after_s > 0 ? v->gv.retry_after_s : 1;
    metrics_count_event(cp->metrics, event);
    log_info("not calling %s for key %s: %s (retry after %d s)", up->base_url, key, guard_refusal_name(v->gv.refusal),
             v->gv.retry_after_s);
}

void callpolicy_report(struct callpolicy_upstream *up, const struct upstream_response *resp)
{
    int64_t now = clock_mono_us() / 1000;
    if (resp->fault == FAULT_NONE && resp->status == 429) {
        guard_throttled(up->g, now, resp->retry_after > 0 ? (int)resp->retry_after : 0);
        log_warn("upstream %s throttles (429): no calls to it for a while", up->base_url);
        return;
    }
    enum guard_outcome o = GUARD_SUCCESS;
    if (resp->fault != FAULT_NONE && resp->fault != FAULT_BAD_BODY && resp->fault != FAULT_WRONG_JOB &&
        resp->fault != FAULT_OVERSIZED)
        o = GUARD_TRANSPORT_FAILURE; /* a body it did send, however wrong, proves it alive */
    else if (resp->fault == FAULT_NONE && resp->status >= 500)
        o = GUARD_UPSTREAM_5XX;
    guard_result(up->g, now, o);
}

void callpolicy_abandoned(struct callpolicy_upstream *up)
{
    guard_result(up->g, clock_mono_us() / 1000, GUARD_ABANDONED);
}

int callpolicy_stale_may_answer(const struct upstream_response *resp)
{
    return resp->fault != FAULT_NONE || resp->status >= 500 || resp->status == 429 || resp->status == 200;
}

void callpolicy_no_credentials(struct client_error *err)
{
    client_error_set(err, 503, "JG.NO_CREDENTIALS", "jobgate cannot authenticate to the cloud API now; retry later");
    err->retry_after = 5;
}
