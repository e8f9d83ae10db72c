#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "admin.h"
#include "audit.h"
#include "cache.h"
#include "callpolicy.h"
#include "clientkeys.h"
#include "credentials.h"
#include "gateway.h"
#include "log.h"
#include "metrics.h"
#include "reply.h"

static int admin_method_ok(struct evhttp_request *req, const struct reply_meta *meta)
{
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    if (cmd == EVHTTP_REQ_GET || cmd == EVHTTP_REQ_HEAD)
        return 1;
    struct client_error e;
    client_error_set(&e, 405, "JG.METHOD_NOT_ALLOWED", "this endpoint answers GET and HEAD only");
    evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
    reply_error(req, &e, meta);
    return 0;
}

/* ok, or degraded when the cache store is down, IAM gives no token or the
 * audit log cannot be written: what a load balancer may know. */
static const char *health_status(const struct admin_view *v)
{
    struct cache_health h;
    cache_health(v->cache, &h);
    int ok = h.up;
    struct credentials *creds = gateway_credentials(v->gw);
    if (creds && credentials_mode(creds) == CRED_IAM) {
        struct credentials_stats cs;
        credentials_stats(creds, &cs);
        ok &= cs.iam_ok != 0;
    }
    struct audit *audit = gateway_audit(v->gw);
    if (audit) {
        struct audit_health ah;
        audit_health(audit, &ah);
        ok &= ah.ok != 0;
    }
    return ok ? "ok" : "degraded";
}

/* /healthz on a client listener: the status word only, never an endpoint,
 * a pid, a version or a count. Always 200 while the process answers: with
 * Redis down jobgate still serves, through upstream. */
static void serve_healthz_public(const struct admin_view *v, struct evhttp_request *req, const struct reply_meta *meta)
{
    char text[40];
    int n = snprintf(text, sizeof(text), "{\"status\":\"%s\"}", health_status(v));
    reply_text(req, 200, "application/json;charset=UTF-8", text, (size_t)n, meta);
}

/* /healthz on the admin listener: liveness plus the state of the cache
 * store, the upstream credentials and the audit log. */
static void serve_healthz(const struct admin_view *v, struct evhttp_request *req, const struct reply_meta *meta)
{
    struct cache_health h;
    cache_health(v->cache, &h);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "status", health_status(v));
    cJSON_AddStringToObject(o, "version", PACKAGE_VERSION);
    cJSON_AddNumberToObject(o, "pid", (double)getpid()); /* which worker answered */
    cJSON *c = cJSON_AddObjectToObject(o, "cache");
    cJSON_AddStringToObject(c, "backend", h.backend);
    cJSON_AddStringToObject(c, "state", h.state);
    if (h.endpoint[0])
        cJSON_AddStringToObject(c, "endpoint", h.endpoint);
    cJSON_AddNumberToObject(c, "errors", (double)h.errors);
    cJSON_AddNumberToObject(c, "timeouts", (double)h.timeouts);
    cJSON_AddNumberToObject(c, "rejected", (double)h.rejected);
    cJSON_AddStringToObject(c, "coalescing", h.coalescing ? h.coalescing : "none");
    if (h.last_error[0])
        cJSON_AddStringToObject(c, "last_error", h.last_error);
    if (h.cluster) {
        cJSON *cl = cJSON_AddObjectToObject(c, "cluster");
        cJSON_AddNumberToObject(cl, "masters", h.cluster_masters);
        cJSON_AddNumberToObject(cl, "masters_up", h.cluster_masters_up);
        cJSON_AddNumberToObject(cl, "slots_covered", h.cluster_slots);
        cJSON_AddNumberToObject(cl, "map_refreshes", (double)h.cluster_refreshes);
        cJSON_AddNumberToObject(cl, "redirects", (double)h.cluster_redirects);
    }
    struct credentials *creds = gateway_credentials(v->gw);
    if (creds) {
        struct credentials_stats cs;
        credentials_stats(creds, &cs);
        cJSON *u = cJSON_AddObjectToObject(o, "upstream_auth");
        cJSON_AddStringToObject(u, "mode", credentials_mode_name(credentials_mode(creds)));
        if (credentials_mode(creds) == CRED_IAM) {
            cJSON_AddBoolToObject(u, "iam_ok", cs.iam_ok);
            cJSON_AddNumberToObject(u, "tokens_held", (double)cs.tokens_held);
        }
    }
    struct audit *audit = gateway_audit(v->gw);
    if (audit) {
        struct audit_health ah;
        audit_health(audit, &ah);
        cJSON *a = cJSON_AddObjectToObject(o, "audit");
        cJSON_AddBoolToObject(a, "ok", ah.ok);
        cJSON_AddStringToObject(a, "on_failure", ah.fail_closed ? "refuse" : "continue");
        cJSON_AddNumberToObject(a, "written", (double)ah.written);
        cJSON_AddNumberToObject(a, "dropped", (double)ah.dropped);
        cJSON_AddNumberToObject(a, "buffered_bytes", (double)ah.buffered);
        if (ah.last_error[0])
            cJSON_AddStringToObject(a, "last_error", ah.last_error);
    }
    struct callpolicy_health gh;
    gateway_guard_health(v->gw, &gh);
    cJSON *g = cJSON_AddObjectToObject(o, "guard");
    cJSON_AddStringToObject(g, "store", gh.store);
    cJSON_AddBoolToObject(g, "fallback", gh.fallback); /* Redis silent: each process keeps rate / fleet_size */
    cJSON_AddNumberToObject(g, "fleet_size", (double)gh.fleet_size);
    cJSON_AddNumberToObject(g, "fallback_admissions", (double)gh.fallbacks);
    cJSON_AddNumberToObject(o, "in_flight", (double)gateway_in_flight(v->gw));
    cJSON_AddNumberToObject(o, "connections", (double)v->connections);
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    reply_text(req, 200, "application/json;charset=UTF-8", text ? text : "{}", text ? strlen(text) : 2, meta);
    cJSON_free(text);
}

static void serve_metrics(const struct admin_view *v, struct evhttp_request *req, const struct reply_meta *meta)
{
    struct cache_health h;
    cache_health(v->cache, &h);
    struct evbuffer *buf = evbuffer_new();
    if (!buf) {
        evhttp_send_error(req, 500, "Internal Server Error");
        return;
    }
    metrics_render(v->metrics, &h, gateway_in_flight(v->gw), buf);
    struct credentials *creds = gateway_credentials(v->gw);
    if (creds) {
        struct credentials_stats cs;
        credentials_stats(creds, &cs);
        evbuffer_add_printf(buf,
                            "# HELP jobgate_iam_calls_total IAM token requests sent.\n"
                            "# TYPE jobgate_iam_calls_total counter\njobgate_iam_calls_total %llu\n"
                            "# HELP jobgate_iam_failures_total IAM token requests that gave no token.\n"
                            "# TYPE jobgate_iam_failures_total counter\njobgate_iam_failures_total %llu\n"
                            "# HELP jobgate_iam_tokens Projects jobgate holds an IAM token for.\n"
                            "# TYPE jobgate_iam_tokens gauge\njobgate_iam_tokens %zu\n",
                            (unsigned long long)metrics_fold(v->metrics, METRICS_FOLD_IAM_CALLS, cs.iam_calls),
                            (unsigned long long)metrics_fold(v->metrics, METRICS_FOLD_IAM_FAILURES, cs.iam_failures),
                            cs.tokens_held);
    }
    struct audit *audit = gateway_audit(v->gw);
    if (audit) {
        struct audit_health ah;
        audit_health(audit, &ah);
        evbuffer_add_printf(
            buf,
            "# HELP jobgate_audit_ok Whether the audit log is being written (1) or failing (0).\n"
            "# TYPE jobgate_audit_ok gauge\njobgate_audit_ok %d\n"
            "# HELP jobgate_audit_lines_total Audit lines written.\n"
            "# TYPE jobgate_audit_lines_total counter\njobgate_audit_lines_total %llu\n"
            "# HELP jobgate_audit_dropped_total Audit lines lost (sink failing).\n"
            "# TYPE jobgate_audit_dropped_total counter\njobgate_audit_dropped_total %llu\n"
            "# HELP jobgate_audit_write_errors_total Failed audit writes and reopens.\n"
            "# TYPE jobgate_audit_write_errors_total counter\njobgate_audit_write_errors_total %llu\n",
            ah.ok, (unsigned long long)metrics_fold(v->metrics, METRICS_FOLD_AUDIT_LINES, ah.written),
            (unsigned long long)metrics_fold(v->metrics, METRICS_FOLD_AUDIT_DROPPED, ah.dropped),
            (unsigned long long)metrics_fold(v->metrics, METRICS_FOLD_AUDIT_WRITE_ERRORS, ah.write_errors));
    }
    struct callpolicy_health gh;
    gateway_guard_health(v->gw, &gh);
    evbuffer_add_printf(buf,
                        "# HELP jobgate_guard_fallback Whether the upstream guards decide alone (1: Redis silent) "
                        "or with the fleet (0).\n"
                        "# TYPE jobgate_guard_fallback gauge\njobgate_guard_fallback{store=\"%s\"} %d\n"
                        "# HELP jobgate_guard_fallback_admissions_total Upstream calls the fallback decided on.\n"
                        "# TYPE jobgate_guard_fallback_admissions_total counter\n"
                        "jobgate_guard_fallback_admissions_total %llu\n"
                        "# HELP jobgate_guard_fleet_admissions_total Upstream calls the fleet's store decided on.\n"
                        "# TYPE jobgate_guard_fleet_admissions_total counter\n"
                        "jobgate_guard_fleet_admissions_total %llu\n"
                        "# HELP jobgate_guard_fleet_size Processes the fallback divides the rate by.\n"
                        "# TYPE jobgate_guard_fleet_size gauge\njobgate_guard_fleet_size %zu\n",
                        gh.store, gh.fallback, (unsigned long long)gh.fallbacks,
                        (unsigned long long)gh.fleet_admissions, gh.fleet_size);
    evbuffer_add_printf(buf,
                        "# HELP jobgate_client_connections Open client connections.\n"
                        "# TYPE jobgate_client_connections gauge\njobgate_client_connections %zu\n",
                        v->connections);
    size_t len = evbuffer_get_length(buf);
    reply_text(req, 200, "text/plain; version=0.0.4; charset=utf-8", (const char *)evbuffer_pullup(buf, -1), len, meta);
    evbuffer_free(buf);
}

/* With admin.client_auth (and a keys file): a key granted admin, else 401
 * or 403 in the API's error shape. Returns 1 when the request may go on. */
static int admin_key_ok(const struct admin_view *v, struct evhttp_request *req, const struct reply_meta *meta)
{
    struct clientkeys *keys = gateway_client_keys(v->gw);
    if (!v->client_auth || !keys)
        return 1;
    struct client_error e;
    const char *key = NULL;
    enum clientkeys_credential cred = clientkeys_presented(evhttp_request_get_input_headers(req), &key);
    enum clientkeys_verdict verdict =
        cred == CLIENTKEYS_CRED_PRESENT ? clientkeys_check_admin(keys, key, NULL) : CLIENTKEYS_UNAUTHENTICATED;
    if (verdict == CLIENTKEYS_ALLOWED)
        return 1;
    if (verdict == CLIENTKEYS_FORBIDDEN) {
        metrics_count_event(v->metrics, EVENT_CLIENT_FORBIDDEN);
        client_error_set(&e, 403, "JG.FORBIDDEN", "this API key is not granted the admin endpoints");
    } else {
        metrics_count_event(v->metrics, EVENT_CLIENT_UNAUTHENTICATED);
        client_error_set(&e, 401, "JG.UNAUTHENTICATED",
                         cred == CLIENTKEYS_CRED_PRESENT ? "the API key is not known to this gateway"
                                                         : clientkeys_credential_message(cred));
    }
    reply_error(req, &e, meta);
    return 0;
}

/* The admin listener: /healthz with details, /metrics, 404 for the rest. */
void admin_serve(const struct admin_view *v, struct evhttp_request *req, const char *path,
                 const struct reply_meta *meta)
{
    if (!admin_key_ok(v, req, meta))
        return;
    int is_health = path && strcmp(path, "/healthz") == 0;
    int is_metrics = path && strcmp(path, "/metrics") == 0;
    if (!is_health && !is_metrics) {
        struct client_error e;
        client_error_set(&e, 404, "JG.NO_ROUTE", "the admin listener serves /healthz and /metrics only");
        reply_error(req, &e, meta);
        return;
    }
    if (!admin_method_ok(req, meta))
        return;
    if (is_health)
        serve_healthz(v, req, meta);
    else
        serve_metrics(v, req, meta);
}

void admin_serve_public_healthz(const struct admin_view *v, struct evhttp_request *req, const struct reply_meta *meta)
{
    if (admin_method_ok(req, meta))
        serve_healthz_public(v, req, meta);
}
