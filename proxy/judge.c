#include <string.h>

#include <cjson/cJSON.h>

#include "body.h"
#include "cache.h"
#include "clock.h"
#include "judge.h"
#include "log.h"
#include "rules.h"
#include "upstream.h"

/* Negative caching: keep the 404 answer (without a request id) for the
 * rule's not_found_ttl, so pollers of a job that does not exist stop
 * costing an upstream call each. */
static struct body *remember_not_found(const struct judge_input *in, const struct client_error *err, int *stored)
{
    enum error_shape shape = in->rule->errors.reply_shape;
    char *text = client_error_render(err, NULL, shape != ERROR_SHAPE_DEFAULT ? shape : in->error_shape);
    if (!text)
        return NULL;
    struct body *b = body_new(text, strlen(text), clock_wall_ms(), 0);
    cJSON_free(text);
    if (!b)
        return NULL;
    b->status = 404;
    cache_put(in->cache, in->key, b, in->rule->not_found_ttl_ms, 0);
    *stored = 1;
    return b;
}

struct body *judge_answer(const struct judge_input *in, const struct upstream_response *resp, struct client_error *err,
                          int *stored)
{
    const struct rule *rule = in->rule;
    if (resp->fault != FAULT_NONE) {
        log_warn("upstream %s for rule %s, key %s: %s", fault_name(resp->fault), rule->name, in->key,
                 resp->fault_detail);
        errmap_from_fault(&rule->errors, resp->fault, err);
        return NULL;
    }
    if (resp->status != 200) {
        errmap_from_upstream(&rule->errors, resp->status, resp->body, resp->len, err);
        log_info("upstream answered %d for rule %s, key %s: sent %d %s", resp->status, rule->name, in->key, err->status,
                 err->code);
        if (resp->status == 404 && err->status == 404 && rule->not_found_ttl_ms > 0)
            return remember_not_found(in, err, stored);
        return NULL;
    }
    char state[64];
    enum job_class cls = classify_body(&rule->job, resp->body, resp->len, in->expected_id, state, sizeof(state));
    if (cls != JOB_TERMINAL && cls != JOB_PENDING) {
        /* Not a job, another job, or a body parsers read differently: a bad body, never cached. */
        enum upstream_fault fault = cls == JOB_OTHER_JOB ? FAULT_WRONG_JOB : FAULT_BAD_BODY;
        log_warn("upstream 200 for rule %s, key %s is %s: not cached", rule->name, in->key, job_class_name(cls));
        errmap_from_fault(&rule->errors, fault, err);
        return NULL;
    }
    int terminal = cls == JOB_TERMINAL;
    struct body *b = body_new(resp->body, resp->len, clock_wall_ms(), terminal);
    if (!b) {
        errmap_from_fault(&rule->errors, FAULT_INTERNAL, err);
        return NULL;
    }
    int64_t ttl_ms = terminal ? rule->terminal_ttl_ms : rule->pending_ttl_ms;
    cache_put(in->cache, in->key, b, ttl_ms, terminal ? 0 : rule->stale_ttl_ms);
    *stored = 1;
    log_debug("upstream 200 for key %s: state %s (%s)", in->key, state, job_class_name(cls));
    return b;
}
