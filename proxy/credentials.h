/*
 * credentials: what jobgate sends upstream to prove who it is. jobgate holds
 * the cloud credentials; clients never send them (docs/huawei-api.md, section
 * 5, "Authentication upstream"). One mode per process:
 *
 *   CRED_PASSTHROUGH  the client's own X-Auth-Token goes upstream. The
 *                     gateway does that itself; this module only says so
 *                     (credentials_get answers with no header).
 *   CRED_TOKEN        one static token, sent as X-Auth-Token for every
 *                     project.
 *   CRED_IAM          tokens fetched from IAM with a user's password, one per
 *                     project (IAM tokens are project-scoped):
 *                     POST {iam_url}/v3/auth/tokens with Keystone's password
 *                     body scoped to {"project":{"id":PROJECT}}; the token is
 *                     IAM's X-Subject-Token header, its lifetime the body's
 *                     token.expires_at. It is sent as X-Auth-Token.
 *   CRED_AKSK         every request signed with the access key and secret key
 *                     (aksk.h): host, x-sdk-date and x-project-id signed;
 *                     Authorization, X-Sdk-Date and X-Project-Id sent.
 *
 * IAM tokens, the rules:
 *   - A project's token is fetched when first asked for. While that call is
 *     out, every other request for the project waits for it (a queue): one
 *     IAM call per project at a time, never a storm.
 *   - It is refreshed before it expires: once it is within refresh_before of
 *     expires_at (or half its life, for short-lived tokens), the next request
 *     starts a refresh and is still answered at once with the current token.
 *   - It is dropped when the gateway reports that upstream refused it (401
 *     APIGW.0307, credentials_token_rejected): the next request waits for a
 *     new one. Reports about a token already replaced are ignored, so the
 *     many requests that were in flight with an expired token cause one
 *     refresh, not one each.
 *   - A failed IAM call (refused, unreachable, no X-Subject-Token) answers
 *     every waiter with an error at once, and the project backs off: for
 *     retry_min (doubling on each failure up to retry_max) requests needing
 *     a new token fail at once without calling IAM. A token still valid
 *     keeps being used while a refresh of it fails.
 *
 * Secrets (token, password, SK, signatures) never appear in a log line, a
 * reason string or a message; the module's copies are wiped before they are
 * freed. Everything runs on the event loop of the `struct upstream` given to
 * credentials_new; no thread, no blocking call.
 *
 * Error idiom: constructors return NULL with a message in `err`;
 * credentials_get reports through its callback.
 */
#ifndef JOBGATE_CREDENTIALS_H
#define JOBGATE_CREDENTIALS_H

#include <stddef.h>
#include <stdint.h>

struct upstream;
struct credentials;
struct credentials_wait;

enum credentials_mode { CRED_PASSTHROUGH, CRED_TOKEN, CRED_IAM, CRED_AKSK };
#define CRED_MODE_COUNT (CRED_AKSK + 1)

/*
 * What the module needs, per mode (the others are NULL/0 and ignored).
 * Filled by config.c from the YAML section upstream.auth, secrets already
 * read from their files or environment variables; credentials_new copies it.
 */
struct credentials_conf {
    enum credentials_mode mode;
    /* CRED_TOKEN */
    char *token; /* secret */
    /* CRED_IAM */
    char *iam_url;             /* "https://iam.eu-west-0.myhuaweicloud.com": /v3/auth/tokens is appended */
    char *user;                /* IAM user name */
    char *domain;              /* the account's domain name */
    char *password;            /* secret */
    int64_t refresh_before_ms; /* refresh this long before expires_at (default 1 h of the 24 h) */
    int64_t iam_timeout_ms;    /* one IAM call, connection included (default 10 s) */
    int64_t retry_min_ms;      /* back-off after a failed IAM call, doubled each time (default 1 s) */
    int64_t retry_max_ms;      /* ... up to this (default 60 s) */
    /* CRED_AKSK */
    char *ak;
    char *sk; /* secret */
};

/* Defaults for every mode's tuning: mode CRED_PASSTHROUGH, no strings. */
void credentials_conf_defaults(struct credentials_conf *conf);

/* Wipe the secrets, free the strings, zero `conf`. */
void credentials_conf_free(struct credentials_conf *conf);

/* "passthrough", "token", "iam", "aksk". */
const char *credentials_mode_name(enum credentials_mode mode);

/* Parse a mode name. Returns 0, or -1 if unknown. */
int credentials_mode_parse(const char *name, enum credentials_mode *out);

/*
 * Start the module for `conf` (copied). IAM calls go through `upstream`,
 * which must outlive the credentials. Returns NULL with a message in `err`
 * when `conf` misses what its mode needs (or on no memory).
 */
struct credentials *credentials_new(struct upstream *upstream, const struct credentials_conf *conf, char *err,
                                    size_t errlen);

/* Frees everything. An IAM call in flight is cancelled; requests still
 * waiting are dropped without their callbacks (cancel them first). */
void credentials_free(struct credentials *c);

enum credentials_mode credentials_mode(const struct credentials *c);

enum credentials_status { CREDENTIALS_OK, CREDENTIALS_FAILED };

/* What credentials_get answers. Everything is valid during the callback only. */
struct credentials_result {
    enum credentials_status status;
    /* CREDENTIALS_OK: the "Name: value" lines to send upstream with the
     * request (upstream_request.auth_headers); none for CRED_PASSTHROUGH.
     * Secrets: never log them. */
    char *const *headers;
    size_t nheaders;
    /* CRED_IAM: which token was sent, for credentials_token_rejected; 0 otherwise. */
    uint64_t token_id;
    /* CREDENTIALS_FAILED: why, for the log (no secret in it). */
    const char *reason;
};

/*
 * Called once per credentials_get that was not cancelled, from the event
 * loop or from inside credentials_get itself (see there). It may call
 * credentials_get, credentials_cancel (for other waits) and
 * credentials_token_rejected; it must not free the credentials.
 */
typedef void (*credentials_ready_cb)(const struct credentials_result *r, void *arg);

/*
 * The credentials for a `method` request on `url` for `project_id` (the
 * path's project; NULL when it has none, which IAM mode refuses). `url` and
 * `method` matter for AK/SK signing only: the request must be sent exactly
 * so, within 15 minutes.
 *
 * When the answer is at hand (passthrough, token, aksk, an IAM token held,
 * an IAM project backing off, a bad argument) `cb` is called before
 * credentials_get returns, and it returns NULL. Otherwise the request waits
 * for IAM: it returns a handle for credentials_cancel, and `cb` is called
 * later from the loop. (NULL with no callback at all never happens.)
 */
struct credentials_wait *credentials_get(struct credentials *c, const char *project_id, const char *method,
                                         const char *url, credentials_ready_cb cb, void *arg);

/* The same for a request with a body (`body_len` bytes; borrowed for the
 * call only): an AK/SK signature covers the body's SHA-256, so the body
 * must be sent exactly so. */
struct credentials_wait *credentials_get_body(struct credentials *c, const char *project_id, const char *method,
                                              const char *url, const void *body, size_t body_len,
                                              credentials_ready_cb cb, void *arg);

/* Stop waiting (the client left): the callback will not be called. The IAM
 * call goes on: its token will serve later requests. */
void credentials_cancel(struct credentials_wait *w);

/*
 * Upstream refused the token `token_id` (from the result) of `project_id`
 * with 401 APIGW.0307 (the token must be updated): drop it, so that the next
 * credentials_get for the project fetches a new one. Ignored when that token
 * is no longer the project's (already replaced or being replaced), and in
 * every mode but CRED_IAM. token_id 0: whatever token the project holds.
 */
void credentials_token_rejected(struct credentials *c, const char *project_id, uint64_t token_id);

/* For /metrics and /healthz. */
struct credentials_stats {
    uint64_t iam_calls;        /* IAM token requests sent */
    uint64_t iam_failures;     /* ... that gave no token */
    uint64_t token_rejections; /* credentials_token_rejected that dropped a token */
    uint64_t failed_gets;      /* credentials_get answered CREDENTIALS_FAILED */
    size_t tokens_held;        /* projects with a token */
    size_t waiting;            /* requests waiting for IAM now */
    int iam_ok;                /* 0 when the latest IAM call failed, else 1 */
};

void credentials_stats(const struct credentials *c, struct credentials_stats *out);

#endif
