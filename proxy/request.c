#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "aksk.h"
#include "audit.h"
#include "httpframe.h"
#include "iamregion.h"
#include "cache.h"
#include "cachekey.h"
#include "clientkeys.h"
#include "clock.h"
#include "credentials.h"
#include "flight.h"
#include "forward.h"
#include "log.h"
#include "regions.h"
#include "metrics.h"
#include "gateway_int.h"
#include "request.h"
#include "reply.h"
#include "rules.h"
#include "tokengrant.h"

/* Is the client's own X-Auth-Token what goes upstream? */
int request_pass_through(const struct gateway *gw)
{
    return gw->credentials ? credentials_mode(gw->credentials) == CRED_PASSTHROUGH : gw->upstream_token == NULL;
}

/* ------------------------------------------------------------------ cache */

static const char *project_of(const struct job_request *jr);

/* In pass-through mode a cached answer goes only to a token the cloud
 * accepted for this rule and project within the window. */
static int token_may_read(const struct job_request *jr)
{
    const struct gateway *gw = jr->gw;
    if (!jr->token_hash[0] || !gw->token_grants)
        return 1;
    return tokengrant_valid(gw->token_grants, jr->token_hash, jr->rule->name, project_of(jr), clock_mono_us() / 1000);
}

static const char *project_of(const struct job_request *jr)
{
    return jr->rule->project_param >= 0 ? jr->match.values[jr->rule->project_param] : "";
}

/* The fleet's answer on this token's grant: a hit when another process or
 * instance saw upstream accept it (and this process remembers it for what
 * is left of the window), else upstream judges it as on a miss. */
static void on_grant_result(int granted, int64_t ttl_ms, void *arg)
{
    struct job_request *jr = arg;
    struct body *b = jr->grant_body;
    jr->grant_body = NULL;
    jr->in_lookup = 0;
    if (!jr->req) { /* answered by gateway_abort_all while the check was out */
        TAILQ_REMOVE(&jr->gw->orphans, jr, live_link);
        body_unref(b);
        free(jr);
        return;
    }
    struct gateway *gw = jr->gw;
    if (granted == 1 && gw->token_grants) {
        int64_t now_ms = clock_mono_us() / 1000;
        int64_t left = ttl_ms < gw->passthrough_window_ms ? ttl_ms : gw->passthrough_window_ms;
        tokengrant_accepted(gw->token_grants, jr->token_hash, jr->rule->name, project_of(jr),
                            now_ms - (gw->passthrough_window_ms - left));
        jr->outcome = OUTCOME_HIT;
        request_answer_job(jr, b, 1);
        body_unref(b);
        return;
    }
    body_unref(b);
    jr->outcome = OUTCOME_MISS;
    flight_join(jr);
}

/* A hit for a token this process has no grant for: ask the fleet (Redis)
 * before sending it upstream. Returns 1 when the question is out (or was
 * answered already), 0 when there is no one to ask. */
static int ask_fleet(struct job_request *jr, struct body *b)
{
    struct gateway *gw = jr->gw;
    char key[TOKENGRANT_KEY_MAX(KEY_MAX)];
    if (tokengrant_shared_key(key, sizeof(key), gw->key_prefix, jr->token_hash, jr->rule->name, project_of(jr)) < 0)
        return 0;
    jr->grant_body = body_ref(b);
    jr->in_lookup = 1;
    cache_grant_get(gw->cache, key, on_grant_result, jr); /* may answer before it returns */
    return 1;
}

/* pending_swr: may `b`, a stale copy, be served at once while one call
 * refreshes it? Only a still-changing job (not a remembered 404) whose TTL
 * ran out at most one pending_ttl ago: past that, pollers wait for the
 * upstream as without it (the stale window stays for upstream failures). */
static int may_revalidate(const struct job_request *jr, const struct body *b)
{
    const struct rule *rule = jr->rule;
    if (!rule->pending_swr || b->terminal || b->status != 200 || !b->expires_at_ms)
        return 0;
    return clock_wall_ms() - b->expires_at_ms <= rule->pending_ttl_ms;
}

static void on_cache_result(enum cache_status status, struct body *b, enum cache_lease_status lease, void *arg)
{
    struct job_request *jr = arg;
    jr->in_lookup = 0;
    if (!jr->req) { /* answered by gateway_abort_all while the lookup was out */
        if (lease == CACHE_LEASE_ACQUIRED)
            cache_lease_release(jr->gw->cache, jr->key); /* nobody will call upstream under it */
        TAILQ_REMOVE(&jr->gw->orphans, jr, live_link);
        ruleset_unref(jr->rules);
        free(jr);
        return;
    }
    jr->lease = lease; /* a HIT comes with none */
    switch (status) {
    case CACHE_HIT:
        if (token_may_read(jr)) {
            jr->outcome = OUTCOME_HIT;
            request_answer_job(jr, b, 1);
            return;
        }
        if (ask_fleet(jr, b))
            return;
        jr->outcome = OUTCOME_MISS; /* this token must first be accepted upstream */
        break;
    case CACHE_STALE:
        if (!token_may_read(jr)) { /* never for a token the cloud has not accepted */
            jr->outcome = OUTCOME_MISS;
            break;
        }
        if (may_revalidate(jr, b) && flight_refresh(jr, b) == 0) {
            request_answer_stale(jr, b); /* the previous state now; one call refreshes it */
            return;
        }
        /* Go upstream as on a miss; keep the copy for if upstream fails. */
        jr->stale = body_ref(b);
        jr->outcome = OUTCOME_MISS;
        break;
    case CACHE_MISS: jr->outcome = OUTCOME_MISS; break;
    case CACHE_UNAVAILABLE: jr->outcome = OUTCOME_BYPASS; break;
    }
    flight_join(jr);
}

/* ------------------------------------------------------------- the entry */

/* The request line and headers within the configured bounds? Returns 0, or
 * -1 with `err` set (400: 413, 414 and 431 are not in the documented table). */
static int request_size_ok(const struct gateway *gw, struct evhttp_request *req, struct client_error *err)
{
    const char *uri = evhttp_request_get_uri(req);
    if (gw->max_uri_bytes && uri && strlen(uri) > gw->max_uri_bytes) {
        client_error_set(err, 400, "JG.URI_TOO_LONG", "the request URI is longer than this server accepts");
        return -1;
    }
    size_t bytes = 0;
    struct evkeyval *h;
    TAILQ_FOREACH (h, evhttp_request_get_input_headers(req), next)
        bytes += strlen(h->key) + strlen(h->value) + 4;
    if (gw->max_header_bytes && bytes > gw->max_header_bytes) {
        client_error_set(err, 400, "JG.HEADERS_TOO_LARGE", "the request headers are larger than this server accepts");
        return -1;
    }
    return 0;
}

/* The body a job-status GET may carry: none, or exactly "{}", which the
 * official CCE SDK sends (and signs) with every call, its showJob included.
 * Either way nothing of it goes upstream. */
static int request_body_empty(struct evhttp_request *req)
{
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    struct evbuffer *body = evhttp_request_get_input_buffer(req);
    const char *length = evhttp_find_header(in, "Content-Length");
    size_t len = evbuffer_get_length(body);
    if (evhttp_find_header(in, "Transfer-Encoding"))
        return 0;
    if (len == 0)
        return !length || strcmp(length, "0") == 0;
    return len == 2 && length && strcmp(length, "2") == 0 && memcmp(evbuffer_pullup(body, 2), "{}", 2) == 0;
}

/* Checks that need no rule's help. Returns 0, or -1 with `err` set. */
static int request_acceptable(struct evhttp_request *req, struct client_error *err)
{
    if (!request_body_empty(req)) {
        client_error_set(err, 400, "JG.BODY_REFUSED", "a job-status request has no body");
        return -1;
    }
    return 0;
}

static unsigned method_bit(enum evhttp_cmd_type cmd)
{
    switch (cmd) {
    case EVHTTP_REQ_GET: return RULE_METHOD_GET;
    case EVHTTP_REQ_HEAD: return RULE_METHOD_HEAD;
    default: return 0;
    }
}

/* Set the Allow header; returns its value (static storage). */
static const char *allow_header(struct evhttp_request *req, unsigned methods)
{
    static char allow[32];
    allow[0] = '\0';
    if (methods & RULE_METHOD_GET)
        strcat(allow, "GET");
    if (methods & RULE_METHOD_HEAD)
        strcat(allow, allow[0] ? ", HEAD" : "HEAD");
    evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", allow);
    return allow;
}

/* A received header by its lowercase name, for aksk_verify. */
static const char *received_header(void *arg, const char *name)
{
    return evhttp_find_header(arg, name);
}

/* `req` as aksk_verify reads it: method, path and query as received, its
 * headers, its body (borrowed from `req`). */
static void signed_request_of(struct evhttp_request *req, struct aksk_received *r)
{
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    struct evbuffer *body = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(body);
    *r = (struct aksk_received){
        .method = reply_method_name(evhttp_request_get_command(req)),
        .path = uri ? evhttp_uri_get_path(uri) : NULL,
        .query = uri ? evhttp_uri_get_query(uri) : NULL,
        .header = received_header,
        .header_arg = evhttp_request_get_input_headers(req),
        .body = len ? evbuffer_pullup(body, -1) : NULL,
        .body_len = len,
        .now = (time_t)(clock_wall_ms() / 1000),
    };
}

/* Client authentication and grants, decided before any cache lookup or
 * upstream call. Returns 0, or -1 with `err` set (401 or 403). With no rule
 * (an unknown path) only the key is checked, so that a stranger learns
 * nothing of the routes. */
static int client_allowed(struct job_request *jr, struct evhttp_request *req, struct client_error *err)
{
    const char *key = NULL;
    enum clientkeys_credential cred = clientkeys_presented(evhttp_request_get_input_headers(req), &key);
    if (cred != CLIENTKEYS_CRED_PRESENT && cred != CLIENTKEYS_CRED_SIGNED) {
        client_error_set(err, 401, "JG.UNAUTHENTICATED", clientkeys_credential_message(cred));
        return -1;
    }
    const struct rule *rule = jr->rule;
    const char *project = jr->forwarding                     ? jr->forward_project
                          : rule && rule->project_param >= 0 ? jr->match.values[rule->project_param]
                                                             : NULL;
    const char *rule_name = rule ? rule->name : NULL;
    enum clientkeys_verdict v;
    if (cred == CLIENTKEYS_CRED_SIGNED) {
        enum clientkeys_signature why;
        struct aksk_received r;
        signed_request_of(req, &r);
        v = clientkeys_check_signed(jr->keys, key, &r, project, rule_name, &jr->client, &why);
        if (v == CLIENTKEYS_UNAUTHENTICATED) {
            client_error_set(err, 401, clientkeys_signature_code(why), clientkeys_signature_message(why));
            return -1;
        }
    } else {
        v = clientkeys_check(jr->keys, key, project, rule_name, &jr->client);
    }
    if (v == CLIENTKEYS_UNAUTHENTICATED) {
        client_error_set(err, 401, "JG.UNAUTHENTICATED", "the API key is not known to this gateway");
        return -1;
    }
    if (v == CLIENTKEYS_FORBIDDEN && rule) {
        client_error_set(err, 403, "JG.FORBIDDEN", "this API key is not granted this project or route");
        return -1;
    }
    return 0;
}

/* What an unknown project's region comes to: IAM does not know it (404),
 * IAM could not say (503), or nobody can (400). */
static void region_unknown(struct client_error *err, enum iamregion_status iam, const char *project)
{
    char message[160];
    if (iam == IAMREGION_UNKNOWN) {
        client_error_set(err, 404, "JG.UNKNOWN_PROJECT", "IAM does not know this project: no region to call");
    } else if (iam == IAMREGION_FAILED) {
        client_error_set(err, 503, "JG.REGION_UNAVAILABLE", "IAM could not be asked this project's region; retry");
        err->retry_after = 5;
    } else {
        snprintf(message, sizeof(message), "no region is known for %s: call SERVICE.REGION.%s, or map the project",
                 project ? "this project" : "a path without a project", "DOMAIN");
        client_error_set(err, 400, "JG.UNKNOWN_PROJECT_REGION", message);
    }
}

static void request_routed(struct job_request *jr);

/* IAM answered the region of a parked request's project (iamregion.h). */
static void on_iam_region(enum iamregion_status status, const char *region, void *arg)
{
    struct job_request *jr = arg;
    jr->iam_wait = NULL;
    if (status == IAMREGION_FOUND) {
        snprintf(jr->region, sizeof(jr->region), "%s", region);
        request_routed(jr);
        return;
    }
    struct client_error err;
    region_unknown(&err, status, "");
    request_answer_error(jr, &err);
}

/* The region of a request whose rule's upstream url has {region}
 * (regions.h), into jr->region. Returns 0; 1 when IAM is being asked
 * (on_iam_region goes on); or -1 with `err` set: an unknown region 404, a
 * Host that contradicts the project's region 400, a project no one knows
 * 400 (404 when IAM says so). Never a guess. */
static int request_region(struct job_request *jr, const char *host, struct client_error *err)
{
    const struct rule *rule = jr->rule;
    const char *project = jr->forwarding ? jr->forward_project
                          : rule->project_param >= 0 && (size_t)rule->project_param < jr->match.nvalues
                              ? jr->match.values[rule->project_param]
                              : NULL;
    switch (regions_resolve(jr->gw->regions, host, project, jr->region)) {
    case REGIONS_OK: return 0;
    case REGIONS_UNKNOWN_REGION:
        client_error_set(err, 404, "JG.UNKNOWN_REGION", "the Host names a region this gateway does not serve");
        return -1;
    case REGIONS_MISMATCH:
        client_error_set(err, 400, "JG.REGION_MISMATCH", "the Host names another region than the project's");
        return -1;
    case REGIONS_UNKNOWN_PROJECT: break;
    }
    /* Neither the Host nor the map: IAM, when jobgate may ask it, for a
     * request it would otherwise send (not one refused as invalid). */
    enum iamregion_status iam = IAMREGION_PENDING;
    if (jr->gw->iamregion && project && jr->found != ROUTE_BAD_PARAM) {
        iam = iamregion_lookup(jr->gw->iamregion, project, jr->region, on_iam_region, jr, &jr->iam_wait);
        if (iam == IAMREGION_FOUND)
            return 0;
        if (iam == IAMREGION_PENDING)
            return 1;
    }
    region_unknown(err, iam, project);
    return -1;
}

/* A request record, from the spare list when there is one. Not calloc: the
 * buffers at its end are a few KB, always written before they are read;
 * everything before them starts zeroed. */
static struct job_request *job_request_new(struct gateway *gw)
{
    struct job_request *jr = gw->nspare ? gw->spare[--gw->nspare] : malloc(sizeof(*jr));
    if (!jr)
        return NULL;
    memset(jr, 0, offsetof(struct job_request, request_id));
    jr->request_id[0] = jr->token_hash[0] = jr->key[0] = jr->region[0] = '\0';
    jr->match.nvalues = 0; /* read by the audit log even when no route matched */
    return jr;
}

/* The rest of intake, once the rule (and its region) is known: a forwarded
 * call, or a job route's checks, its cache key and lookup. */
static void request_routed(struct job_request *jr)
{
    struct gateway *gw = jr->gw;
    struct evhttp_request *req = jr->req;
    enum route_result found = jr->found;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *query = uri ? evhttp_uri_get_query(uri) : NULL;
    struct client_error err;
    if (jr->forwarding) {
        forward_start(jr);
        return;
    }
    if (found == ROUTE_NO_MATCH) {
        client_error_set(&err, 404, "JG.NO_ROUTE", "no job-status route has this path");
        request_answer_error(jr, &err);
        return;
    }
    const struct rule *rule = jr->rule;
    unsigned bit = method_bit(evhttp_request_get_command(req));
    if (!(bit & rule->methods)) {
        const char *allowed = allow_header(req, rule->methods);
        char message[64];
        snprintf(message, sizeof(message), "this route answers %s only", allowed);
        client_error_set(&err, 405, "JG.METHOD_NOT_ALLOWED", message);
        request_answer_error(jr, &err);
        return;
    }
    if (found == ROUTE_BAD_PARAM || (rule->query == RULE_QUERY_REJECT && query && *query)) {
        request_answer_error(jr, &rule->invalid_request);
        return;
    }
    if (request_acceptable(req, &err) < 0) {
        request_answer_error(jr, &err);
        return;
    }
    if (request_pass_through(gw)) { /* the client's own token goes upstream */
        const char *token = evhttp_find_header(evhttp_request_get_input_headers(req), "X-Auth-Token");
        if (!token || !*token || tokengrant_hash(gw->token_grants, token, jr->token_hash) < 0) {
            client_error_set(&err, 401, "JG.NO_TOKEN", "send the cloud token in X-Auth-Token");
            request_answer_error(jr, &err);
            return;
        }
    }
    /* The cache key (cachekey.h): prefix, rule (with its region, when the
     * Host may choose one) and the validated parameter values. Nothing else
     * a client sends can vary it. */
    char rule_key[128]; /* "RULE" or "RULE@REGION", cut to fit as snprintf would (memcpy: a tenth of its cost) */
    size_t nlen = strlen(rule->name), rlen = jr->region[0] ? strlen(jr->region) : 0;
    nlen = nlen < sizeof(rule_key) - 1 ? nlen : sizeof(rule_key) - 1;
    memcpy(rule_key, rule->name, nlen);
    if (rlen && nlen < sizeof(rule_key) - 1) {
        rule_key[nlen++] = '@';
        rlen = rlen < sizeof(rule_key) - 1 - nlen ? rlen : sizeof(rule_key) - 1 - nlen;
        memcpy(rule_key + nlen, jr->region, rlen);
        nlen += rlen;
    }
    rule_key[nlen] = '\0';
    if (cachekey_format(jr->key, sizeof(jr->key), gw->key_prefix, rule_key, jr->match.values, rule->route.nparams) <
        0) {
        request_answer_error(jr, &rule->invalid_request);
        return;
    }
    /* What Redis returns must be an answer about this very job, in a state
     * that agrees with where it was kept (cache_types.h). A miss takes the
     * key's lease in the same round trip, so that one process calls
     * upstream; not in pass-through mode, where each token must be judged
     * by the cloud itself. */
    const struct cache_expect expect = {
        .job = &rule->job, .identity = rule->identity_param >= 0 ? jr->match.values[rule->identity_param] : NULL};
    jr->in_lookup = 1;
    cache_get_lease(gw->cache, jr->key, &expect, jr->token_hash[0] ? 0 : flight_lease_ms(rule), flight_fold(jr),
                    on_cache_result, jr); /* may answer before it returns */
}

void request_intake(struct gateway *gw, struct evhttp_request *req, int client_auth)
{
    struct job_request *jr = job_request_new(gw);
    if (!jr) {
        evhttp_send_error(req, 503, "Service Unavailable");
        return;
    }
    jr->gw = gw;
    jr->req = req;
    jr->rules = ruleset_ref(gw->rules);
    jr->keys = client_auth && gw->client_keys ? clientkeys_ref(gw->client_keys) : NULL;
    jr->started_us = clock_mono_us();
    jr->started_wall_ms = clock_wall_ms();
    jr->upstream_us = -1;
    jr->outcome = OUTCOME_BYPASS;
    TAILQ_INSERT_TAIL(&gw->live, jr, live_link);
    gw->in_flight++;

    const char *client_id = evhttp_find_header(evhttp_request_get_input_headers(req), "X-Request-Id");
    if (client_id && reqid_acceptable(client_id))
        snprintf(jr->request_id, sizeof(jr->request_id), "%s", client_id);
    else
        reqid_new(jr->request_id, sizeof(jr->request_id));

    struct client_error err;
    /* A head the frontend's framing filter refused (httpframe.h): answered
     * here, in order and audited; the connection closes after it. */
    const char *refused = evhttp_find_header(evhttp_request_get_input_headers(req), HTTPFRAME_MARKER);
    if (refused) {
        char message[96];
        snprintf(message, sizeof(message), "the request is not framed as HTTP/1.1 requires (%s)", refused);
        client_error_set(&err, 400, "JG.BAD_FRAMING", message);
        request_answer_error(jr, &err);
        return;
    }
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    if (!path || !*path) {
        client_error_set(&err, 400, "JG.BAD_URI", "the request URI cannot be parsed");
        request_answer_error(jr, &err);
        return;
    }
    if (request_size_ok(gw, req, &err) < 0) {
        /* Answered in the shape of the API asked, when its path names one
         * (a URI over the bound is not matched against the rules). */
        if (strcmp(err.code, "JG.URI_TOO_LONG") != 0 &&
            ruleset_match(jr->rules, evhttp_find_header(evhttp_request_get_input_headers(req), "Host"), path, &jr->rule,
                          &jr->match) == ROUTE_NO_MATCH)
            jr->rule = NULL;
        metrics_count_event(gw->metrics, EVENT_REQUEST_TOO_LARGE);
        log_info("request %s refused: %s", jr->request_id, err.message);
        request_answer_error(jr, &err);
        return;
    }
    if (gw->audit && audit_blocks_requests(gw->audit)) {
        /* Fail-closed: no answer leaves without its audit line. */
        client_error_set(&err, 503, "JG.AUDIT_UNAVAILABLE", "the audit log cannot be written; retry later");
        err.retry_after = 5;
        request_answer_error(jr, &err);
        return;
    }

    const char *host = evhttp_find_header(evhttp_request_get_input_headers(req), "Host");
    /* A Host SERVICE.REGION.DOMAIN whose SERVICE a rule claims (rules.h):
     * the cloud's own path, matched among that service's rules only. */
    char service[REGIONS_NAME_MAX], served[ROUTE_MAX_PATH + 1];
    jr->by_host_service = regions_host_service(gw->regions, host, service) &&
                          ruleset_service_path(jr->rules, service, path, served, sizeof(served)) == 1;
    const char *route_path = jr->by_host_service ? served : path;
    enum route_result found = jr->by_host_service
                                  ? ruleset_match_service(jr->rules, service, route_path, &jr->rule, &jr->match)
                                  : ruleset_match(jr->rules, host, route_path, &jr->rule, &jr->match);
    if (found != ROUTE_MATCH)
        jr->rule = found == ROUTE_BAD_PARAM ? jr->rule : NULL;
    if (found == ROUTE_NO_MATCH &&
        (jr->rule = jr->by_host_service ? ruleset_match_forward_service(jr->rules, service, route_path)
                                        : ruleset_match_forward(jr->rules, host, route_path)) != NULL) {
        /* Not a job route (those win): the rest of a service, forwarded uncached. */
        jr->forwarding = 1;
        if (forward_project_of(jr->rule, route_path, jr->match.buf, sizeof(jr->match.buf)))
            jr->forward_project = jr->match.buf;
    }
    if (jr->keys && client_allowed(jr, req, &err) < 0) {
        jr->denied = 1;
        metrics_count_event(gw->metrics, err.status == 401 ? EVENT_CLIENT_UNAUTHENTICATED : EVENT_CLIENT_FORBIDDEN);
        request_answer_error(jr, &err);
        return;
    }
    jr->found = found;
    if (jr->rule && jr->rule->url_has_region && !gw->upstream_url) {
        int parked = request_region(jr, host, &err);
        if (parked < 0) {
            request_answer_error(jr, &err);
            return;
        }
        if (parked) /* IAM is asked the project's region: on_iam_region goes on */
            return;
    }
    request_routed(jr);
}
