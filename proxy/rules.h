/*
 * rules: the lua-free policy. A rule file describes one job-status API:
 * its route and parameter patterns, its upstream, where the job's state is in
 * the body and which states are terminal, how long answers are cached, and how
 * upstream errors map onto the documented status table. The C code knows
 * nothing of any API that a rule does not tell it.
 *
 * A ruleset is immutable once loaded and reference-counted: a request holds
 * the ruleset it started with, so a reload never changes policy under it.
 * The language is documented in lua-free-rules/README.md.
 */
#ifndef JOBGATE_RULES_H
#define JOBGATE_RULES_H

#include <stddef.h>
#include <stdint.h>

#include "classify.h"
#include "errmap.h"
#include "route.h"
#include "yamlconf.h"

enum rule_method {
    RULE_METHOD_GET = 1 << 0,
    RULE_METHOD_HEAD = 1 << 1,
    RULE_METHOD_POST = 1 << 2, /* forward routes only (below) */
    RULE_METHOD_PUT = 1 << 3,
    RULE_METHOD_PATCH = 1 << 4,
    RULE_METHOD_DELETE = 1 << 5,
};

/*
 * A rule's forward route: every other call under a path prefix goes
 * upstream as it came (method, the rest of the path, query, body), with the
 * prefix taken off and the rule's upstream url put in front. Never cached,
 * never coalesced, never retried. Precedence: a job route (of any rule)
 * wins for every path it matches, whatever the method; among forward
 * prefixes the longest matching one wins (the loader refuses two equal
 * ones, and a prefix under which another rule's job route lies).
 */
/* The largest forward.max_body a rule may set (the default is 1 MiB). A
 * request body is read whole before the gateway sees it (evhttp), so this
 * is memory each such request may hold; answers are streamed, unbounded. */
#define RULE_FORWARD_MAX_BODY ((size_t)64 * 1024 * 1024)

struct rule_forward {
    char *prefix; /* "/ecs": whole segments, no trailing '/'; NULL: the rule forwards nothing */
    size_t prefix_len;
    int strip_prefix;    /* the prefix is taken off before the path goes upstream (default); 0: kept */
    unsigned methods;    /* enum rule_method bits */
    size_t max_body;     /* larger request bodies: 413 (at most RULE_FORWARD_MAX_BODY) */
    int project_segment; /* 1-based segment after the prefix holding the project id; 0: none */
    size_t line, col;    /* of forward.prefix, for diagnostics */
};

/* What a query string on a job request does. Never part of the cache key,
 * never forwarded upstream: it cannot bypass or poison the cache. */
enum rule_query {
    RULE_QUERY_IGNORE, /* accepted and dropped */
    RULE_QUERY_REJECT, /* answered with the invalid_request error */
};

struct rule {
    char *name; /* unique; part of every cache key */
    char *file;
    size_t line;                /* of the rule's first key (its `name:`, in the shipped files) */
    size_t path_line, path_col; /* of route.path: where a diagnostic about the route points */
    char *host;                 /* Host header the route requires (lower case, no port); NULL: any */
    char *host_service;         /* route.host_service: the SERVICE of a Host SERVICE.REGION.DOMAIN that
                                   selects this rule with the cloud's own paths (below; `host` is not
                                   asked then); NULL: none */
    size_t host_service_line, host_service_col;
    struct route_template route;
    unsigned methods; /* enum rule_method bits */
    enum rule_query query;
    char *upstream_url;                   /* base URL: scheme://host[:port][/prefix]; the route path is appended */
    int url_has_region;                   /* its host carries {region} (regions.h) */
    struct route_template upstream_path;  /* the path sent upstream; nsegs == 0: the route's own */
    int upstream_param[ROUTE_MAX_PARAMS]; /* its parameters, as indexes of the route's */
    char **add_headers;                   /* "Name: value" lines added to every upstream request */
    size_t nadd_headers;
    char **drop_headers; /* default headers not to send: X-Request-Id, Accept, User-Agent, X-Auth-Token */
    size_t ndrop_headers;
    int64_t connect_timeout_ms;
    int64_t timeout_ms;
    char **token_expired_codes; /* upstream error codes that say jobgate's own token expired */
    size_t ntoken_expired_codes;
    struct classify_spec job;
    int identity_param;      /* route parameter the body must name, -1: none */
    int project_param;       /* the route's {project_id}, -1: none */
    int64_t terminal_ttl_ms; /* YCONF_FOREVER: no expiry */
    int64_t pending_ttl_ms;
    int64_t not_found_ttl_ms; /* negative caching of an upstream 404; 0: off */
    int64_t stale_ttl_ms;     /* a still-changing answer is kept this long past its TTL for serve-stale; 0: off */
    int pending_swr;          /* a still-changing answer up to one pending_ttl past its TTL is served (STALE)
                                 while one background call refreshes it */
    struct errmap errors;
    struct client_error invalid_request; /* answer for a request the route refuses */
    struct rule_forward forward;
};

struct ruleset {
    unsigned refs;
    struct rule **rules;
    size_t count;
};

/* Load every file in `files`. Returns a ruleset with one reference, or NULL
 * with every problem found added to `d` as FILE:LINE:COL: message. */
struct ruleset *ruleset_load(char *const *files, size_t nfiles, struct conf_diag *d);

/* Load one rule from YAML text (tests and tools). */
struct ruleset *ruleset_load_string(const char *name, const char *text, struct conf_diag *d);

struct ruleset *ruleset_ref(struct ruleset *rs);
void ruleset_unref(struct ruleset *rs);

/* The upstream path for a matched request. Returns its length, or -1 if it does not fit. */
int rule_upstream_path(const struct rule *r, const struct route_match *m, char *out, size_t outlen);

/* Is `code` (an answer's error code, from upstream's body) one of the
 * rule's upstream.token_expired_codes: jobgate's own token expired, so the
 * gateway renews it and calls once more? */
int rule_token_expired(const struct rule *r, const char *code);

/* Find the rule for `host` (the request's Host header, may be NULL) and
 * `path`. ROUTE_MATCH: *rule_out and *m are set.
 * ROUTE_BAD_PARAM: *rule_out is the rule whose shape matched (answer 400).
 * ROUTE_NO_MATCH: no rule has this shape (answer 404). */
enum route_result ruleset_match(const struct ruleset *rs, const char *host, const char *path,
                                const struct rule **rule_out, struct route_match *m);

/* The rule whose forward prefix is the longest one `path` lies under (the
 * prefix itself, or the prefix and '/...'), for `host`; NULL: none. Ask only
 * after ruleset_match found no job route: job routes win. */
const struct rule *ruleset_match_forward(const struct ruleset *rs, const char *host, const char *path);

/*
 * Services by Host. Terraform's provider with `cloud = "DOMAIN"` calls
 * https://SERVICE.REGION.DOMAIN with the cloud's own paths
 * (/v1/{project_id}/jobs/{job_id}, no /ecs). A rule declaring
 * `route.host_service: SERVICE` serves such a Host (regions_host_service
 * finds the label): only the rules claiming SERVICE are asked, and the path
 * is first given back the forward prefix the rule strips (so that
 * /v1/P/jobs/J on ecs.R.DOMAIN is matched as /ecs/v1/P/jobs/J, and a
 * forwarded call goes upstream as it came). Path routing keeps working for
 * every Host: a path already under the prefix the rule takes off
 * (/ecs/v1/...) is routed by path, as is a Host whose SERVICE no rule
 * claims. The loader lets several rules claim one service only when
 * none strips its prefix (the ELB rules, whose prefixes are the cloud's).
 */

/* The path of a request to SERVICE.REGION.DOMAIN as path routing would see
 * it, into `out`. Returns 1, 0 when no rule claims `service` or the path is
 * already under the prefix (route it by path), -1 when it does not fit. */
int ruleset_service_path(const struct ruleset *rs, const char *service, const char *path, char *out, size_t outlen);

/* ruleset_match and ruleset_match_forward among the rules claiming
 * `service` only (route.host is not asked: Host is SERVICE.REGION.DOMAIN);
 * `path` is ruleset_service_path's. */
enum route_result ruleset_match_service(const struct ruleset *rs, const char *service, const char *path,
                                        const struct rule **rule_out, struct route_match *m);
const struct rule *ruleset_match_forward_service(const struct ruleset *rs, const char *service, const char *path);

/* The method's enum rule_method bit; 0 for the ones no route serves. */
unsigned rule_method_bit(const char *method);

#endif
