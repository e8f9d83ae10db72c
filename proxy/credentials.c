#define _GNU_SOURCE /* strptime, timegm */

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "aksk.h"
#include "clock.h"
#include "credentials.h"
#include "encoding.h"
#include "keymap.h"
#include "log.h"
#include "upstream.h"

#define DEFAULT_TOKEN_LIFE_S (24 * 3600) /* when IAM's body does not say */
#define MAX_PROJECT_ID       128
/* Projects remembered (token or back-off state); a bound, because project ids
 * come from client paths. */
#define MAX_PROJECTS 10000

struct credentials_wait {
    struct cred_project *p;
    uint64_t round; /* the IAM call it waits for */
    credentials_ready_cb cb;
    void *arg;
    TAILQ_ENTRY(credentials_wait) link;
};

/* One project's IAM token and the requests waiting for it. */
struct cred_project {
    struct keymap_item item; /* first: the item's address is the project's */
    struct credentials *c;
    char *project_id;
    char *header;               /* "X-Auth-Token: TOKEN" (a secret), NULL: no token */
    uint64_t token_id;          /* names that token for credentials_token_rejected */
    int64_t expires_us;         /* monotonic */
    int64_t refresh_us;         /* from then on a request starts a refresh */
    struct upstream_call *call; /* the IAM call out, NULL if none */
    uint64_t round;             /* IAM calls started for the project */
    TAILQ_HEAD(, credentials_wait) waiters;
    int64_t retry_us;   /* after a failure, no IAM call before this */
    int64_t backoff_ms; /* the latest back-off, 0 after a success */
    char last_error[192];
};

struct credentials {
    struct upstream *u;
    struct credentials_conf conf;
    char *token_header; /* CRED_TOKEN: "X-Auth-Token: TOKEN" (a secret) */
    char *iam_tokens_url;
    struct keymap projects;
    uint64_t next_token_id;
    struct credentials_stats stats;
};

/* ------------------------------------------------------------ helpers */

static void free_secret(char *s)
{
    if (s) {
        memset(s, 0, strlen(s));
        free(s);
    }
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* "NAME: VALUE" on the heap, or NULL. */
static char *header_line(const char *name, const char *value)
{
    size_t n = strlen(name) + strlen(value) + 3;
    char *line = malloc(n);
    if (line)
        snprintf(line, n, "%s: %s", name, value);
    return line;
}

/* A project id goes into a header and a JSON body: letters, digits, '-', '_'. */
static int project_id_ok(const char *id)
{
    size_t n = id ? strlen(id) : 0;
    if (n == 0 || n > MAX_PROJECT_ID)
        return 0;
    return strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") == n;
}

static void answer_ok(credentials_ready_cb cb, void *arg, char *const *headers, size_t n, uint64_t token_id)
{
    struct credentials_result r = {.status = CREDENTIALS_OK, .headers = headers, .nheaders = n, .token_id = token_id};
    cb(&r, arg);
}

static void answer_failed(struct credentials *c, credentials_ready_cb cb, void *arg, const char *reason)
{
    c->stats.failed_gets++;
    struct credentials_result r = {.status = CREDENTIALS_FAILED, .reason = reason};
    cb(&r, arg);
}

/* -------------------------------------------------------- configuration */

void credentials_conf_defaults(struct credentials_conf *conf)
{
    memset(conf, 0, sizeof(*conf));
    conf->mode = CRED_PASSTHROUGH;
    conf->refresh_before_ms = 3600 * 1000;
    conf->iam_timeout_ms = 10000;
    conf->retry_min_ms = 1000;
    conf->retry_max_ms = 60000;
}

void credentials_conf_free(struct credentials_conf *conf)
{
    free_secret(conf->token);
    free(conf->iam_url);
    free(conf->user);
    free(conf->domain);
    free_secret(conf->password);
    free(conf->ak);
    free_secret(conf->sk);
    memset(conf, 0, sizeof(*conf));
}

static const char *const mode_names[] = {
    [CRED_PASSTHROUGH] = "passthrough",
    [CRED_TOKEN] = "token",
    [CRED_IAM] = "iam",
    [CRED_AKSK] = "aksk",
};
_Static_assert(sizeof(mode_names) / sizeof(mode_names[0]) == CRED_MODE_COUNT, "a mode has no name");

const char *credentials_mode_name(enum credentials_mode mode)
{
    return (unsigned)mode < sizeof(mode_names) / sizeof(mode_names[0]) ? mode_names[mode] : "unknown";
}

int credentials_mode_parse(const char *name, enum credentials_mode *out)
{
    for (size_t i = 0; i < sizeof(mode_names) / sizeof(mode_names[0]); i++) {
        if (strcmp(name, mode_names[i]) == 0) {
            *out = (enum credentials_mode)i;
            return 0;
        }
    }
    return -1;
}

/* ------------------------------------------------------------ projects */

static struct cred_project *project_find(struct credentials *c, const char *project_id)
{
    return (struct cred_project *)keymap_get(&c->projects, project_id);
}

static struct cred_project *project_add(struct credentials *c, const char *project_id)
{
    if (c->projects.count >= MAX_PROJECTS)
        return NULL;
    struct cred_project *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->c = c;
    p->project_id = strdup(project_id);
    p->item.key = p->project_id;
    TAILQ_INIT(&p->waiters);
    if (!p->project_id || keymap_put(&c->projects, &p->item) < 0) {
        free(p->project_id);
        free(p);
        return NULL;
    }
    return p;
}

static void project_drop_token(struct cred_project *p)
{
    if (!p->header)
        return;
    free_secret(p->header);
    p->header = NULL;
    p->token_id = 0;
    p->c->stats.tokens_held--;
}

static void project_free(struct keymap_item *item)
{
    struct cred_project *p = (struct cred_project *)item;
    struct credentials_wait *w;
    if (p->call)
        upstream_cancel(p->c->u, p->call);
    while ((w = TAILQ_FIRST(&p->waiters)) != NULL) {
        TAILQ_REMOVE(&p->waiters, w, link);
        free(w);
    }
    free_secret(p->header);
    free(p->project_id);
    free(p);
}

/* ------------------------------------------------------------- IAM calls */

/*
 * Keystone's password body scoped to one project, in memory the caller
 * wipes and frees (it holds the password); NULL on no memory. Built by hand,
 * not with cJSON, so that no unwiped copy of the password is left behind.
 */
static char *iam_body(const struct credentials_conf *conf, const char *project_id, size_t *len)
{
    static const char *const parts[] = {
        "{\"auth\":{\"identity\":{\"methods\":[\"password\"],\"password\":{\"user\":{\"name\":\"",
        "\",\"password\":\"",
        "\",\"domain\":{\"name\":\"",
        "\"}}}},\"scope\":{\"project\":{\"id\":\"",
        "\"}}}}",
    };
    const char *values[] = {conf->user, conf->password, conf->domain, project_id};
    size_t cap = 1;
    for (size_t i = 0; i < 5; i++)
        cap += strlen(parts[i]);
    for (size_t i = 0; i < 4; i++)
        cap += ENCODING_JSON_MAX_PER_BYTE * strlen(values[i]);
    char *body = malloc(cap);
    if (!body)
        return NULL;
    char *end = body;
    for (size_t i = 0; i < 5; i++) {
        end = stpcpy(end, parts[i]);
        if (i < 4)
            end = encoding_json_escape(end, values[i], strlen(values[i]));
    }
    *len = (size_t)(end - body);
    return body;
}

/* The token's life in seconds from IAM's body (token.expires_at), or the
 * default when it does not say. Written on the wall clock, UTC. */
static long token_life_s(const char *body, size_t len)
{
    long life = DEFAULT_TOKEN_LIFE_S;
    cJSON *json = cJSON_ParseWithLength(body, len);
    const cJSON *at = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(json, "token"), "expires_at");
    struct tm tm = {0};
    if (cJSON_IsString(at) && strptime(at->valuestring, "%Y-%m-%dT%H:%M:%S", &tm))
        life = (long)(timegm(&tm) - time(NULL));
    cJSON_Delete(json);
    return life;
}

static void iam_start(struct cred_project *p);

/* Answer the requests that waited for IAM call number `round`. Requests that
 * start waiting meanwhile (from a callback) wait for a later call. */
static void answer_waiters(struct cred_project *p, uint64_t round, const char *header, uint64_t token_id,
                           const char *reason)
{
    struct credentials *c = p->c;
    struct credentials_wait *w;
    /* Our own copy: a callback may drop the project's token. */
    char *line = header ? strdup(header) : NULL;
    if (header && !line)
        reason = "out of memory";
    while ((w = TAILQ_FIRST(&p->waiters)) != NULL && w->round == round) {
        TAILQ_REMOVE(&p->waiters, w, link);
        c->stats.waiting--;
        credentials_ready_cb cb = w->cb;
        void *arg = w->arg;
        free(w);
        if (line)
            answer_ok(cb, arg, &line, 1, token_id);
        else
            answer_failed(c, cb, arg, reason);
    }
    free_secret(line);
}

static void iam_failed(struct cred_project *p, uint64_t round, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The IAM call gave no token: back off, tell the waiters why. */
static void iam_failed(struct cred_project *p, uint64_t round, const char *fmt, ...)
{
    struct credentials *c = p->c;
    char why[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    c->stats.iam_failures++;
    c->stats.iam_ok = 0;
    p->backoff_ms = p->backoff_ms ? p->backoff_ms * 2 : c->conf.retry_min_ms;
    if (p->backoff_ms > c->conf.retry_max_ms)
        p->backoff_ms = c->conf.retry_max_ms;
    p->retry_us = clock_mono_us() + p->backoff_ms * 1000;
    snprintf(p->last_error, sizeof(p->last_error), "IAM token for project %s: %s", p->project_id, why);
    log_warn("credentials: %s; next try in %lld ms%s", p->last_error, (long long)p->backoff_ms,
             p->header ? " (the current token is kept meanwhile)" : "");
    answer_waiters(p, round, NULL, 0, p->last_error);
}

static void on_iam_done(const struct upstream_response *resp, void *arg)
{
    struct cred_project *p = arg;
    struct credentials *c = p->c;
    uint64_t round = p->round;
    p->call = NULL;
    if (resp->fault != FAULT_NONE) {
        iam_failed(p, round, "IAM unreachable: %s (%s)", fault_name(resp->fault), resp->fault_detail);
        return;
    }
    if (resp->status != 200 && resp->status != 201) {
        iam_failed(p, round, "IAM answered %d%s", resp->status,
                   resp->status == 401 ? " (wrong user, domain or password?)" : "");
        return;
    }
    if (!resp->captured || !resp->captured[0]) {
        iam_failed(p, round, "IAM answered %d without X-Subject-Token", resp->status);
        return;
    }
    long life_s = token_life_s(resp->body, resp->len);
    if (life_s <= 0) {
        iam_failed(p, round, "IAM's token has already expired (expires_at in the past: is the clock right?)");
        return;
    }
    char *line = header_line("X-Auth-Token", resp->captured);
    if (!line) {
        iam_failed(p, round, "out of memory");
        return;
    }
    int64_t now = clock_mono_us();
    int64_t margin_ms = c->conf.refresh_before_ms;
    if (margin_ms > life_s * 1000 / 2)
        margin_ms = life_s * 1000 / 2; /* a short-lived token is refreshed half-way */
    project_drop_token(p);
    p->header = line;
    p->token_id = ++c->next_token_id;
    p->expires_us = now + (int64_t)life_s * 1000000;
    p->refresh_us = p->expires_us - margin_ms * 1000;
    p->backoff_ms = 0;
    p->retry_us = 0;
    p->last_error[0] = '\0';
    c->stats.tokens_held++;
    c->stats.iam_ok = 1;
    log_info("credentials: new IAM token for project %s, valid %ld s", p->project_id, life_s);
    answer_waiters(p, round, p->header, p->token_id, NULL);
}

/* Ask IAM for a token for `p` (p->call is NULL). On failure to start, the
 * project backs off and its waiters of this round are answered. */
static void iam_start(struct cred_project *p)
{
    struct credentials *c = p->c;
    static char *const drop[] = {"X-Request-Id"};
    size_t len = 0;
    char *body = iam_body(&c->conf, p->project_id, &len);
    p->round++;
    c->stats.iam_calls++;
    if (body) {
        struct upstream_request req = {
            .method = "POST",
            .url = c->iam_tokens_url,
            .connect_timeout_ms = c->conf.iam_timeout_ms,
            .timeout_ms = c->conf.iam_timeout_ms,
            .drop_headers = drop,
            .ndrop_headers = 1,
            .body = body,
            .body_len = len,
            .content_type = "application/json;charset=UTF-8",
            .capture_header = "X-Subject-Token",
        };
        p->call = upstream_fetch(c->u, &req, on_iam_done, p);
        memset(body, 0, len);
        free(body);
    }
    if (!p->call)
        iam_failed(p, p->round, "cannot start the IAM call");
}

/* ------------------------------------------------------------ the API */

struct credentials *credentials_new(struct upstream *upstream, const struct credentials_conf *conf, char *err,
                                    size_t errlen)
{
    const struct credentials_conf *k = conf;
    if (k->mode == CRED_TOKEN && (!k->token || !*k->token)) {
        snprintf(err, errlen, "credentials: mode token needs a token");
        return NULL;
    }
    if (k->mode == CRED_IAM && (!k->iam_url || !k->user || !k->domain || !k->password)) {
        snprintf(err, errlen, "credentials: mode iam needs iam_url, user, domain and a password");
        return NULL;
    }
    if (k->mode == CRED_IAM && (k->retry_min_ms <= 0 || k->retry_max_ms < k->retry_min_ms || k->iam_timeout_ms <= 0)) {
        snprintf(err, errlen, "credentials: retry_min, retry_max and iam_timeout must be positive, min <= max");
        return NULL;
    }
    if (k->mode == CRED_AKSK && (!k->ak || !*k->ak || !k->sk || !*k->sk)) {
        snprintf(err, errlen, "credentials: mode aksk needs ak and sk");
        return NULL;
    }
    struct credentials *c = calloc(1, sizeof(*c));
    if (!c)
        goto nomem;
    c->u = upstream;
    c->stats.iam_ok = 1;
    /* Deep copy: the configuration it came from is replaced on reload. */
    c->conf = *conf;
    c->conf.token = dup_or_null(conf->token);
    c->conf.iam_url = dup_or_null(conf->iam_url);
    c->conf.user = dup_or_null(conf->user);
    c->conf.domain = dup_or_null(conf->domain);
    c->conf.password = dup_or_null(conf->password);
    c->conf.ak = dup_or_null(conf->ak);
    c->conf.sk = dup_or_null(conf->sk);
    if ((conf->token && !c->conf.token) || (conf->iam_url && !c->conf.iam_url) || (conf->user && !c->conf.user) ||
        (conf->domain && !c->conf.domain) || (conf->password && !c->conf.password) || (conf->ak && !c->conf.ak) ||
        (conf->sk && !c->conf.sk))
        goto nomem;
    if (k->mode == CRED_TOKEN && !(c->token_header = header_line("X-Auth-Token", k->token)))
        goto nomem;
    if (k->mode == CRED_IAM) {
        size_t n = strlen(k->iam_url);
        while (n > 0 && k->iam_url[n - 1] == '/')
            n--;
        size_t cap = n + sizeof("/v3/auth/tokens");
        if (!(c->iam_tokens_url = malloc(cap)))
            goto nomem;
        snprintf(c->iam_tokens_url, cap, "%.*s/v3/auth/tokens", (int)n, k->iam_url);
    }
    return c;
nomem:
    snprintf(err, errlen, "out of memory");
    credentials_free(c);
    return NULL;
}

void credentials_free(struct credentials *c)
{
    if (!c)
        return;
    keymap_clear(&c->projects, project_free);
    free_secret(c->token_header);
    free(c->iam_tokens_url);
    credentials_conf_free(&c->conf);
    free(c);
}

enum credentials_mode credentials_mode(const struct credentials *c)
{
    return c->conf.mode;
}

/* Sign one request: X-Sdk-Date, X-Project-Id (with a project), Authorization. */
static void get_aksk(struct credentials *c, const char *project_id, const char *method, const char *url,
                     const void *body, size_t body_len, credentials_ready_cb cb, void *arg)
{
    char date[AKSK_DATE_SIZE], err[256];
    if (!method || !url) {
        answer_failed(c, cb, arg, "AK/SK signing needs the method and URL");
        return;
    }
    if (aksk_format_date(time(NULL), date) < 0) {
        answer_failed(c, cb, arg, "cannot write X-Sdk-Date");
        return;
    }
    struct aksk_request r = {
        .method = method,
        .url = url,
        .ak = c->conf.ak,
        .sk = c->conf.sk,
        .sdk_date = date,
        .project_id = project_id,
        .body = body_len ? body : NULL,
        .body_len = body_len,
    };
    size_t alen = strlen(c->conf.ak) + 512;
    char *authorization = malloc(alen);
    char *lines[3] = {NULL, NULL, NULL};
    size_t n = 0;
    if (!authorization) {
        answer_failed(c, cb, arg, "out of memory");
        return;
    }
    if (aksk_sign(&r, authorization, alen, err, sizeof(err)) < 0) {
        char reason[300];
        snprintf(reason, sizeof(reason), "cannot sign the request: %s", err);
        answer_failed(c, cb, arg, reason);
        goto done;
    }
    lines[n++] = header_line("X-Sdk-Date", date);
    if (project_id)
        lines[n++] = header_line("X-Project-Id", project_id);
    lines[n++] = header_line("Authorization", authorization);
    for (size_t i = 0; i < n; i++) {
        if (!lines[i]) {
            answer_failed(c, cb, arg, "out of memory");
            goto done;
        }
    }
    answer_ok(cb, arg, lines, n, 0);
done:
    for (size_t i = 0; i < n; i++)
        free_secret(lines[i]);
    free_secret(authorization);
}

struct credentials_wait *credentials_get(struct credentials *c, const char *project_id, const char *method,
                                         const char *url, credentials_ready_cb cb, void *arg)
{
    return credentials_get_body(c, project_id, method, url, NULL, 0, cb, arg);
}

struct credentials_wait *credentials_get_body(struct credentials *c, const char *project_id, const char *method,
                                              const char *url, const void *body, size_t body_len,
                                              credentials_ready_cb cb, void *arg)
{
    if (project_id && !project_id_ok(project_id)) {
        answer_failed(c, cb, arg, "the project id is not 1-128 characters of A-Za-z0-9_-");
        return NULL;
    }
    switch (c->conf.mode) {
    case CRED_PASSTHROUGH: answer_ok(cb, arg, NULL, 0, 0); return NULL;
    case CRED_TOKEN: answer_ok(cb, arg, &c->token_header, 1, 0); return NULL;
    case CRED_AKSK: get_aksk(c, project_id, method, url, body, body_len, cb, arg); return NULL;
    case CRED_IAM: break;
    }
    if (!project_id) {
        answer_failed(c, cb, arg, "IAM tokens are per project: the request names none");
        return NULL;
    }
    struct cred_project *p = project_find(c, project_id);
    if (!p && !(p = project_add(c, project_id))) {
        answer_failed(c, cb, arg, "too many projects (or out of memory)");
        return NULL;
    }
    int64_t now = clock_mono_us();
    if (p->header && now >= p->expires_us)
        project_drop_token(p);
    if (p->header) {
        /* Refresh ahead of expiry; this request goes on with the current token. */
        if (now >= p->refresh_us && !p->call && now >= p->retry_us)
            iam_start(p);
        if (p->header) {
            char *line = strdup(p->header); /* a callback may drop the token */
            if (line)
                answer_ok(cb, arg, &line, 1, p->token_id);
            else
                answer_failed(c, cb, arg, "out of memory");
            free_secret(line);
            return NULL;
        }
    }
    if (!p->call && now < p->retry_us) {
        char reason[300];
        snprintf(reason, sizeof(reason), "%s; next try in %lld ms", p->last_error,
                 (long long)((p->retry_us - now) / 1000));
        answer_failed(c, cb, arg, reason);
        return NULL;
    }
    struct credentials_wait *w = calloc(1, sizeof(*w));
    if (!w) {
        answer_failed(c, cb, arg, "out of memory");
        return NULL;
    }
    w->p = p;
    w->cb = cb;
    w->arg = arg;
    if (!p->call) {
        iam_start(p);
        if (!p->call) { /* could not start: backing off now */
            free(w);
            answer_failed(c, cb, arg, p->last_error);
            return NULL;
        }
    }
    w->round = p->round;
    TAILQ_INSERT_TAIL(&p->waiters, w, link);
    c->stats.waiting++;
    return w;
}

void credentials_cancel(struct credentials_wait *w)
{
    TAILQ_REMOVE(&w->p->waiters, w, link);
    w->p->c->stats.waiting--;
    free(w);
}

void credentials_token_rejected(struct credentials *c, const char *project_id, uint64_t token_id)
{
    if (c->conf.mode != CRED_IAM || !project_id)
        return;
    struct cred_project *p = project_find(c, project_id);
    if (!p || !p->header || (token_id && token_id != p->token_id))
        return;
    log_info("credentials: upstream refused the IAM token of project %s: fetching a new one", p->project_id);
    c->stats.token_rejections++;
    project_drop_token(p);
    /* A refused token is not a failed IAM call: no back-off for it. */
    p->retry_us = 0;
}

void credentials_stats(const struct credentials *c, struct credentials_stats *out)
{
    *out = c->stats;
}
