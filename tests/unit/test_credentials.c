/*
 * Tests for credentials (proxy/credentials.h is the contract) and for the
 * parts of upstream it relies on (POST, secret headers, a captured response
 * header), on a real libevent loop against a real simulator: tests/sim/jobsim
 * ($JOBSIM_BIN) is started once, plays IAM and checks AK/SK signatures
 * independently of jobgate's signer, and counts what it saw (GET /_sim/auth:
 * iam_calls, sig_ok, sig_bad). Its control API is driven with plain libcurl
 * calls; nothing is mocked.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <event2/event.h>

#include "credentials.h"
#include "upstream.h"

#define PROJECT   "ff8080825ecc523f015ecd0a98f82f77"
#define PROJECT_2 "0123456789abcdef0123456789abcdef"
#define JOB       "4a2b5c6d7e8f90112233445566778899"
#define IAM_USER  "svc-jobgate"
#define IAM_DOM   "mydomain"
#define IAM_PW    "pw-\"quoted\"-and-\\-s3cret"
#define SIM_AK    "sim-access-key"
#define SIM_SK    "sim-secret-key-s3cret"

/* ------------------------------------------------------- the simulator */

static pid_t sim_pid;
static FILE *sim_out;
static int sim_port;

static int start_sim(void **state)
{
    const char *bin = getenv("JOBSIM_BIN");
    int fds[2];
    if (!bin || !*bin)
        bin = "tests/sim/jobsim";
    if (pipe(fds) != 0)
        return -1;
    sim_pid = fork();
    if (sim_pid < 0)
        return -1;
    if (sim_pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        close(fds[0]);
        close(fds[1]);
        execl(bin, bin, "--listen", "127.0.0.1:0", "--quiet", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    sim_out = fdopen(fds[0], "r");
    char line[256];
    if (!sim_out || !fgets(line, sizeof(line), sim_out) ||
        sscanf(line, "jobsim listening on http://127.0.0.1:%d", &sim_port) != 1) {
        fprintf(stderr, "# cannot start %s\n", bin);
        return -1;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    return 0;
}

/* The simulator must exit 0 on SIGTERM (LeakSanitizer vouches for it). */
static int stop_sim(void **state)
{
    int status = 0;
    kill(sim_pid, SIGTERM);
    waitpid(sim_pid, &status, 0);
    fclose(sim_out);
    curl_global_cleanup();
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

static size_t collect(char *data, size_t size, size_t nmemb, void *arg)
{
    char *buf = arg;
    size_t have = strlen(buf), n = size * nmemb;
    if (have + n < 4096) {
        memcpy(buf + have, data, n);
        buf[have + n] = '\0';
    }
    return n;
}

/* One blocking call to the simulator's control API; returns its status. */
static long sim_control(const char *method, const char *path, const char *json, char answer[4096])
{
    char url[256];
    long status = 0;
    CURL *e = curl_easy_init();
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    assert_non_null(e);
    answer[0] = '\0';
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", sim_port, path);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    if (json)
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, json);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, answer);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 5000L);
    assert_int_equal(curl_easy_perform(e), CURLE_OK);
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(e);
    return status;
}

static void sim_set_auth(const char *json)
{
    char answer[4096];
    assert_int_equal(sim_control("POST", "/_sim/auth", json, answer), 200);
}

/* A counter of GET /_sim/auth: iam_calls, sig_ok, sig_bad, rejected. */
static long sim_auth_count(const char *name)
{
    char answer[4096];
    assert_int_equal(sim_control("GET", "/_sim/auth", NULL, answer), 200);
    cJSON *json = cJSON_Parse(answer);
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(json, name);
    assert_true(cJSON_IsNumber(n));
    long v = (long)n->valuedouble;
    cJSON_Delete(json);
    return v;
}

static void sim_set_iam(int delay_ms, int ttl_s)
{
    char json[512];
    snprintf(json, sizeof(json),
             "{\"mode\":\"iam\",\"user\":\"" IAM_USER "\",\"password\":\"pw-\\\"quoted\\\"-and-\\\\-s3cret\","
             "\"domain\":\"" IAM_DOM "\",\"iam_delay_ms\":%d,\"token_ttl_s\":%d}",
             delay_ms, ttl_s);
    sim_set_auth(json);
}

/* ------------------------------------------------------------ the loop */

struct fixture {
    struct event_base *base;
    struct upstream *up;
    char iam_url[128];
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    struct upstream_conf uc = {.max_body_bytes = 1 << 20, .max_connections = 8, .user_agent = "jobgate-test"};
    char err[256], answer[4096];
    assert_non_null(f);
    f->base = event_base_new();
    assert_non_null(f->base);
    f->up = upstream_new(f->base, &uc, err, sizeof(err));
    assert_non_null(f->up);
    snprintf(f->iam_url, sizeof(f->iam_url), "http://127.0.0.1:%d/", sim_port);
    assert_int_equal(sim_control("POST", "/_sim/reset", "", answer), 200);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    upstream_free(f->up);
    event_base_free(f->base);
    free(f);
    return 0;
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    *(int *)arg = 1;
}

/* Run the loop until *done reaches `want` or `ms` pass; fails on the deadline
 * when `must` is set. */
static void run_until(struct fixture *f, const int *done, int want, int ms, int must)
{
    int timed_out = 0;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    struct event *deadline = evtimer_new(f->base, on_deadline, &timed_out);
    evtimer_add(deadline, &tv);
    while (*done < want && !timed_out)
        event_base_loop(f->base, EVLOOP_ONCE);
    event_free(deadline);
    if (must)
        assert_true(*done >= want);
}

/* Let the loop run for `ms` (answers still coming are handled). */
static void run_for(struct fixture *f, int ms)
{
    int never = 0;
    run_until(f, &never, 1, ms, 0);
}

/* ------------------------------------------------ credentials callbacks */

struct got {
    int called;
    enum credentials_status status;
    char lines[4][512];
    size_t n;
    uint64_t token_id;
    char reason[512];
    int *counter; /* incremented on each call */
};

static void on_ready(const struct credentials_result *r, void *arg)
{
    struct got *g = arg;
    g->called++;
    g->status = r->status;
    g->n = r->nheaders;
    for (size_t i = 0; i < r->nheaders && i < 4; i++)
        snprintf(g->lines[i], sizeof(g->lines[i]), "%s", r->headers[i]);
    g->token_id = r->token_id;
    snprintf(g->reason, sizeof(g->reason), "%s", r->reason ? r->reason : "");
    if (g->counter)
        (*g->counter)++;
}

static struct credentials *iam_credentials(struct fixture *f, const char *password, int64_t retry_min_ms)
{
    struct credentials_conf conf;
    char err[256];
    credentials_conf_defaults(&conf);
    conf.mode = CRED_IAM;
    conf.iam_url = f->iam_url;
    conf.user = IAM_USER;
    conf.domain = IAM_DOM;
    conf.password = (char *)password;
    conf.iam_timeout_ms = 5000;
    conf.retry_min_ms = retry_min_ms;
    conf.retry_max_ms = 60000;
    struct credentials *c = credentials_new(f->up, &conf, err, sizeof(err));
    assert_non_null(c);
    return c;
}

/* Get IAM credentials for `project` and wait for them (the call must wait). */
static void get_token(struct fixture *f, struct credentials *c, const char *project, struct got *g)
{
    int done = 0;
    memset(g, 0, sizeof(*g));
    g->counter = &done;
    assert_non_null(credentials_get(c, project, "GET", NULL, on_ready, g));
    assert_int_equal(done, 0); /* never before the answer came */
    run_until(f, &done, 1, 5000, 1);
    assert_int_equal(g->status, CREDENTIALS_OK);
    assert_int_equal(g->n, 1);
    assert_true(strncmp(g->lines[0], "X-Auth-Token: sim-", 18) == 0);
}

/* ------------------------------------------------- upstream round trips */

struct fetched {
    int done;
    int status;
    enum upstream_fault fault;
    char body[4096];
    char captured[512];
    int has_captured;
};

static void on_fetched(const struct upstream_response *resp, void *arg)
{
    struct fetched *r = arg;
    r->done = 1;
    r->status = resp->status;
    r->fault = resp->fault;
    snprintf(r->body, sizeof(r->body), "%.*s", (int)resp->len, resp->body ? resp->body : "");
    r->has_captured = resp->captured != NULL;
    snprintf(r->captured, sizeof(r->captured), "%s", resp->captured ? resp->captured : "");
}

/* Send `req` and wait for its answer. */
static void fetch(struct fixture *f, struct upstream_request *req, struct fetched *r)
{
    memset(r, 0, sizeof(*r));
    if (!req->request_id)
        req->request_id = "test-credentials";
    req->connect_timeout_ms = 5000;
    req->timeout_ms = 5000;
    assert_non_null(upstream_fetch(f->up, req, on_fetched, r));
    run_until(f, &r->done, 1, 6000, 1);
}

static void job_url(char *url, size_t len, const char *project)
{
    snprintf(url, len, "http://127.0.0.1:%d/v1.0/%s/jobs/" JOB, sim_port, project);
}

/* GET the job of `project` with the header lines of `g`; returns the status. */
static int get_job_with(struct fixture *f, const char *project, const struct got *g, struct fetched *r)
{
    char url[256];
    char *lines[4];
    for (size_t i = 0; i < g->n; i++)
        lines[i] = (char *)g->lines[i];
    job_url(url, sizeof(url), project);
    struct upstream_request req = {.url = url, .auth_headers = lines, .nauth_headers = g->n};
    fetch(f, &req, r);
    return r->status;
}

/* ---------------------------------------------------------------- tests */

/* upstream: a POST with a body reaches IAM, and X-Subject-Token is captured. */
static void test_upstream_post_captures_a_header(void **state)
{
    struct fixture *f = *state;
    static const char body[] =
        "{\"auth\":{\"identity\":{\"methods\":[\"password\"],\"password\":{\"user\":{\"name\":\"" IAM_USER
        "\",\"password\":\"pw-\\\"quoted\\\"-and-\\\\-s3cret\",\"domain\":{\"name\":\"" IAM_DOM "\"}}}},"
        "\"scope\":{\"project\":{\"id\":\"" PROJECT "\"}}}}";
    char url[256];
    struct fetched r;
    sim_set_iam(0, 86400);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/v3/auth/tokens", sim_port);
    struct upstream_request req = {
        .method = "POST",
        .url = url,
        .body = body,
        .body_len = strlen(body),
        .content_type = "application/json",
        .capture_header = "x-subject-token", /* any case */
    };
    fetch(f, &req, &r);
    assert_int_equal(r.status, 201);
    assert_true(r.has_captured);
    assert_true(strncmp(r.captured, "sim-", 4) == 0);
    assert_non_null(strstr(r.body, "\"expires_at\""));
    assert_int_equal(sim_auth_count("iam_calls"), 1);

    /* A header the answer lacks is reported absent. */
    req.capture_header = "X-No-Such-Header";
    fetch(f, &req, &r);
    assert_int_equal(r.status, 201);
    assert_false(r.has_captured);

    /* Another method is refused before anything is sent. */
    req.method = "TRACE";
    assert_null(upstream_fetch(f->up, &req, on_fetched, &r));
    assert_int_equal(sim_auth_count("iam_calls"), 2);
}

/* Passthrough and token answer at once, before credentials_get returns. */
static void test_passthrough_and_token_answer_at_once(void **state)
{
    struct fixture *f = *state;
    struct credentials_conf conf;
    struct got g = {0};
    char err[256];
    credentials_conf_defaults(&conf);
    struct credentials *c = credentials_new(f->up, &conf, err, sizeof(err));
    assert_non_null(c);
    assert_int_equal(credentials_mode(c), CRED_PASSTHROUGH);
    assert_null(credentials_get(c, PROJECT, "GET", NULL, on_ready, &g));
    assert_int_equal(g.called, 1);
    assert_int_equal(g.status, CREDENTIALS_OK);
    assert_int_equal(g.n, 0);
    credentials_free(c);

    conf.mode = CRED_TOKEN;
    conf.token = "static-token-s3cret";
    c = credentials_new(f->up, &conf, err, sizeof(err));
    assert_non_null(c);
    memset(&g, 0, sizeof(g));
    assert_null(credentials_get(c, PROJECT, "GET", NULL, on_ready, &g));
    assert_int_equal(g.called, 1);
    assert_int_equal(g.n, 1);
    assert_string_equal(g.lines[0], "X-Auth-Token: static-token-s3cret");
    /* The simulator takes it for that project. */
    sim_set_auth("{\"mode\":\"tokens\",\"tokens\":{\"static-token-s3cret\":[\"" PROJECT "\"]}}");
    struct fetched r;
    assert_int_equal(get_job_with(f, PROJECT, &g, &r), 200);
    credentials_free(c);

    /* A mode missing what it needs is refused, without echoing any secret. */
    conf.mode = CRED_IAM;
    conf.password = "pw-s3cret";
    assert_null(credentials_new(f->up, &conf, err, sizeof(err)));
    assert_non_null(strstr(err, "mode iam needs"));
    assert_null(strstr(err, "s3cret"));
    conf.mode = CRED_AKSK;
    assert_null(credentials_new(f->up, &conf, err, sizeof(err)));
    assert_non_null(strstr(err, "mode aksk needs"));
}

/* 50 requests for one project at once: one IAM call, one token for all. */
static void test_iam_fifty_waiters_one_call(void **state)
{
    struct fixture *f = *state;
    struct got g[50];
    int done = 0;
    struct credentials_stats st;
    sim_set_iam(200, 86400);
    struct credentials *c = iam_credentials(f, IAM_PW, 1000);
    for (int i = 0; i < 50; i++) {
        memset(&g[i], 0, sizeof(g[i]));
        g[i].counter = &done;
        assert_non_null(credentials_get(c, PROJECT, "GET", NULL, on_ready, &g[i]));
    }
    credentials_stats(c, &st);
    assert_int_equal(st.waiting, 50);
    assert_int_equal(st.iam_calls, 1);
    run_until(f, &done, 50, 5000, 1);
    assert_int_equal(sim_auth_count("iam_calls"), 1);
    for (int i = 0; i < 50; i++) {
        assert_int_equal(g[i].called, 1);
        assert_int_equal(g[i].status, CREDENTIALS_OK);
        assert_string_equal(g[i].lines[0], g[0].lines[0]);
        assert_int_equal(g[i].token_id, g[0].token_id);
    }
    assert_true(g[0].token_id != 0);
    credentials_stats(c, &st);
    assert_int_equal(st.waiting, 0);
    assert_int_equal(st.tokens_held, 1);
    assert_int_equal(st.iam_ok, 1);

    /* The token works, and the next request is answered at once from it. */
    struct fetched r;
    assert_int_equal(get_job_with(f, PROJECT, &g[0], &r), 200);
    struct got again = {0};
    assert_null(credentials_get(c, PROJECT, "GET", NULL, on_ready, &again));
    assert_int_equal(again.called, 1);
    assert_string_equal(again.lines[0], g[0].lines[0]);
    assert_int_equal(sim_auth_count("iam_calls"), 1);
    credentials_free(c);
}

/* Upstream says 0307: the token is dropped once, the next request waits for
 * exactly one new IAM call, late reports about the old token are ignored. */
static void test_iam_rejected_token_is_replaced_once(void **state)
{
    struct fixture *f = *state;
    struct got old, fresh, g[10];
    struct fetched r;
    struct credentials_stats st;
    int done = 0;
    char answer[4096];
    sim_set_iam(50, 86400);
    struct credentials *c = iam_credentials(f, IAM_PW, 1000);
    get_token(f, c, PROJECT, &old);
    assert_int_equal(sim_control("POST", "/_sim/auth/expire", "", answer), 200);
    assert_int_equal(get_job_with(f, PROJECT, &old, &r), 401);
    assert_non_null(strstr(r.body, "APIGW.0307"));

    /* Every request that was in flight with it reports it. */
    for (int i = 0; i < 3; i++)
        credentials_token_rejected(c, PROJECT, old.token_id);
    credentials_stats(c, &st);
    assert_int_equal(st.token_rejections, 1);
    assert_int_equal(st.tokens_held, 0);

    for (int i = 0; i < 10; i++) {
        memset(&g[i], 0, sizeof(g[i]));
        g[i].counter = &done;
        assert_non_null(credentials_get(c, PROJECT, "GET", NULL, on_ready, &g[i]));
    }
    run_until(f, &done, 10, 5000, 1);
    assert_int_equal(sim_auth_count("iam_calls"), 2);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(g[i].status, CREDENTIALS_OK);
        assert_string_equal(g[i].lines[0], g[0].lines[0]);
    }
    assert_string_not_equal(g[0].lines[0], old.lines[0]);
    assert_true(g[0].token_id != old.token_id);
    assert_int_equal(get_job_with(f, PROJECT, &g[0], &r), 200);

    /* A late report about the old token changes nothing. */
    credentials_token_rejected(c, PROJECT, old.token_id);
    memset(&fresh, 0, sizeof(fresh));
    assert_null(credentials_get(c, PROJECT, "GET", NULL, on_ready, &fresh));
    assert_string_equal(fresh.lines[0], g[0].lines[0]);
    assert_int_equal(sim_auth_count("iam_calls"), 2);
    credentials_stats(c, &st);
    assert_int_equal(st.token_rejections, 1);
    credentials_free(c);
}

/* Tokens are project-scoped: two projects, two calls, two tokens, each
 * scoped (in IAM's answer) to its own project. */
static void test_iam_projects_have_their_own_tokens(void **state)
{
    struct fixture *f = *state;
    struct got a = {0}, b = {0};
    int done = 0;
    char answer[4096];
    sim_set_iam(100, 86400);
    struct credentials *c = iam_credentials(f, IAM_PW, 1000);
    a.counter = b.counter = &done;
    assert_non_null(credentials_get(c, PROJECT, "GET", NULL, on_ready, &a));
    assert_non_null(credentials_get(c, PROJECT_2, "GET", NULL, on_ready, &b));
    run_until(f, &done, 2, 5000, 1);
    assert_int_equal(a.status, CREDENTIALS_OK);
    assert_int_equal(b.status, CREDENTIALS_OK);
    assert_string_not_equal(a.lines[0], b.lines[0]);
    assert_int_equal(sim_auth_count("iam_calls"), 2);
    struct credentials_stats st;
    credentials_stats(c, &st);
    assert_int_equal(st.tokens_held, 2);

    /* A project id that could smuggle a header or JSON is refused outright. */
    struct got bad = {0};
    assert_null(credentials_get(c, "x\r\nX-Evil: 1", "GET", NULL, on_ready, &bad));
    assert_int_equal(bad.status, CREDENTIALS_FAILED);
    assert_null(credentials_get(c, NULL, "GET", NULL, on_ready, &bad));
    assert_int_equal(bad.status, CREDENTIALS_FAILED);
    assert_int_equal(sim_auth_count("iam_calls"), 2);
    (void)answer;
    credentials_free(c);
}

/* A wrong password: every waiter fails once, no loop of retries; requests
 * fail at once during the back-off, which doubles. */
static void test_iam_wrong_password_fails_waiters_and_backs_off(void **state)
{
    struct fixture *f = *state;
    struct got g[10], now;
    int done = 0;
    struct credentials_stats st;
    sim_set_iam(50, 86400);
    struct credentials *c = iam_credentials(f, "wrong-s3cret", 300);
    for (int i = 0; i < 10; i++) {
        memset(&g[i], 0, sizeof(g[i]));
        g[i].counter = &done;
        assert_non_null(credentials_get(c, PROJECT, "GET", NULL, on_ready, &g[i]));
    }
    run_until(f, &done, 10, 5000, 1);
    run_for(f, 100); /* nothing more may happen */
    assert_int_equal(done, 10);
    assert_int_equal(sim_auth_count("iam_calls"), 1);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(g[i].called, 1);
        assert_int_equal(g[i].status, CREDENTIALS_FAILED);
        assert_non_null(strstr(g[i].reason, "IAM answered 401"));
        assert_null(strstr(g[i].reason, "s3cret"));
    }

    /* During the back-off: failed at once, IAM not asked. */
    memset(&now, 0, sizeof(now));
    assert_null(credentials_get(c, PROJECT, "GET", NULL, on_ready, &now));
    assert_int_equal(now.status, CREDENTIALS_FAILED);
    assert_non_null(strstr(now.reason, "next try in"));
    assert_int_equal(sim_auth_count("iam_calls"), 1);

    /* After it: one new call, which fails too; the next back-off is longer. */
    run_for(f, 350);
    memset(&now, 0, sizeof(now));
    done = 0;
    now.counter = &done;
    assert_non_null(credentials_get(c, PROJECT, "GET", NULL, on_ready, &now));
    run_until(f, &done, 1, 5000, 1);
    assert_int_equal(now.status, CREDENTIALS_FAILED);
    assert_int_equal(sim_auth_count("iam_calls"), 2);
    run_for(f, 350); /* past the first back-off, within the second (600 ms) */
    memset(&now, 0, sizeof(now));
    assert_null(credentials_get(c, PROJECT, "GET", NULL, on_ready, &now));
    assert_int_equal(now.status, CREDENTIALS_FAILED);
    assert_int_equal(sim_auth_count("iam_calls"), 2);
    credentials_stats(c, &st);
    assert_int_equal(st.iam_calls, 2);
    assert_int_equal(st.iam_failures, 2);
    assert_int_equal(st.iam_ok, 0);
    assert_int_equal(st.tokens_held, 0);
    assert_int_equal(st.failed_gets, 13);
    credentials_free(c);
}

/* IAM unreachable: the waiters fail with the transport fault's name. */
static void test_iam_unreachable(void **state)
{
    struct fixture *f = *state;
    struct got g = {0};
    int done = 0;
    struct credentials_conf conf;
    char err[256];
    credentials_conf_defaults(&conf);
    conf.mode = CRED_IAM;
    conf.iam_url = "http://127.0.0.1:1"; /* nothing listens on port 1 */
    conf.user = IAM_USER;
    conf.domain = IAM_DOM;
    conf.password = IAM_PW;
    struct credentials *c = credentials_new(f->up, &conf, err, sizeof(err));
    assert_non_null(c);
    g.counter = &done;
    assert_non_null(credentials_get(c, PROJECT, "GET", NULL, on_ready, &g));
    run_until(f, &done, 1, 5000, 1);
    assert_int_equal(g.status, CREDENTIALS_FAILED);
    assert_non_null(strstr(g.reason, "IAM unreachable: connect"));
    credentials_free(c);
}

/* A token is refreshed ahead of its expiry while the old one still serves. */
static void test_iam_token_refreshed_before_expiry(void **state)
{
    struct fixture *f = *state;
    struct got first, during, after;
    sim_set_iam(0, 6); /* 6 s: refreshed after half of it */
    struct credentials *c = iam_credentials(f, IAM_PW, 1000);
    get_token(f, c, PROJECT, &first);
    run_for(f, 3200);
    memset(&during, 0, sizeof(during));
    assert_null(credentials_get(c, PROJECT, "GET", NULL, on_ready, &during)); /* at once */
    assert_string_equal(during.lines[0], first.lines[0]);
    struct credentials_stats st;
    credentials_stats(c, &st);
    assert_int_equal(st.iam_calls, 2);
    run_for(f, 300);
    assert_int_equal(sim_auth_count("iam_calls"), 2);
    memset(&after, 0, sizeof(after));
    assert_null(credentials_get(c, PROJECT, "GET", NULL, on_ready, &after));
    assert_string_not_equal(after.lines[0], first.lines[0]);
    struct fetched r;
    assert_int_equal(get_job_with(f, PROJECT, &after, &r), 200);
    credentials_free(c);
}

/* A cancelled wait is never called back; the others are. */
static void test_iam_cancelled_wait_is_not_called(void **state)
{
    struct fixture *f = *state;
    struct got g[3];
    int done = 0;
    struct credentials_wait *w[3];
    sim_set_iam(150, 86400);
    struct credentials *c = iam_credentials(f, IAM_PW, 1000);
    for (int i = 0; i < 3; i++) {
        memset(&g[i], 0, sizeof(g[i]));
        g[i].counter = &done;
        w[i] = credentials_get(c, PROJECT, "GET", NULL, on_ready, &g[i]);
        assert_non_null(w[i]);
    }
    credentials_cancel(w[1]);
    run_until(f, &done, 2, 5000, 1);
    run_for(f, 50);
    assert_int_equal(g[0].called, 1);
    assert_int_equal(g[1].called, 0);
    assert_int_equal(g[2].called, 1);
    struct credentials_stats st;
    credentials_stats(c, &st);
    assert_int_equal(st.waiting, 0);

    /* Freed while a wait is parked: no callback, no leak. */
    credentials_token_rejected(c, PROJECT, 0);
    struct got late = {0};
    assert_non_null(credentials_get(c, PROJECT, "GET", NULL, on_ready, &late));
    credentials_free(c);
    run_for(f, 250);
    assert_int_equal(late.called, 0);
}

/* AK/SK: the headers given pass the simulator's own verifier. */
static void test_aksk_headers_accepted(void **state)
{
    struct fixture *f = *state;
    struct credentials_conf conf;
    struct got g = {0};
    struct fetched r;
    char err[256], url[256];
    sim_set_auth("{\"mode\":\"aksk\",\"ak\":\"" SIM_AK "\",\"sk\":\"" SIM_SK "\"}");
    credentials_conf_defaults(&conf);
    conf.mode = CRED_AKSK;
    conf.ak = SIM_AK;
    conf.sk = SIM_SK;
    struct credentials *c = credentials_new(f->up, &conf, err, sizeof(err));
    assert_non_null(c);
    job_url(url, sizeof(url), PROJECT);
    assert_null(credentials_get(c, PROJECT, "GET", url, on_ready, &g));
    assert_int_equal(g.status, CREDENTIALS_OK);
    assert_int_equal(g.n, 3);
    assert_true(strncmp(g.lines[0], "X-Sdk-Date: ", 12) == 0);
    assert_string_equal(g.lines[1], "X-Project-Id: " PROJECT);
    assert_true(strncmp(g.lines[2],
                        "Authorization: SDK-HMAC-SHA256 Access=" SIM_AK
                        ", SignedHeaders=host;x-project-id;x-sdk-date, Signature=",
                        strlen("Authorization: SDK-HMAC-SHA256 Access=" SIM_AK
                               ", SignedHeaders=host;x-project-id;x-sdk-date, Signature=")) == 0);
    for (size_t i = 0; i < g.n; i++)
        assert_null(strstr(g.lines[i], "s3cret"));
    assert_int_equal(get_job_with(f, PROJECT, &g, &r), 200);
    assert_int_equal(sim_auth_count("sig_ok"), 1);

    /* Signed for one project, sent for another: refused. */
    assert_int_equal(get_job_with(f, PROJECT_2, &g, &r), 401);
    assert_int_equal(sim_auth_count("sig_bad"), 1);
    credentials_free(c);

    /* The wrong secret key: refused by the simulator. */
    conf.sk = "another-secret";
    c = credentials_new(f->up, &conf, err, sizeof(err));
    memset(&g, 0, sizeof(g));
    assert_null(credentials_get(c, PROJECT, "GET", url, on_ready, &g));
    assert_int_equal(get_job_with(f, PROJECT, &g, &r), 401);
    assert_non_null(strstr(r.body, "APIGW.0301"));
    assert_int_equal(sim_auth_count("sig_bad"), 2);

    /* No URL: nothing to sign. */
    memset(&g, 0, sizeof(g));
    assert_null(credentials_get(c, PROJECT, "GET", NULL, on_ready, &g));
    assert_int_equal(g.status, CREDENTIALS_FAILED);
    credentials_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_upstream_post_captures_a_header, setup, teardown),
        cmocka_unit_test_setup_teardown(test_passthrough_and_token_answer_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_iam_fifty_waiters_one_call, setup, teardown),
        cmocka_unit_test_setup_teardown(test_iam_rejected_token_is_replaced_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_iam_projects_have_their_own_tokens, setup, teardown),
        cmocka_unit_test_setup_teardown(test_iam_wrong_password_fails_waiters_and_backs_off, setup, teardown),
        cmocka_unit_test_setup_teardown(test_iam_unreachable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_iam_token_refreshed_before_expiry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_iam_cancelled_wait_is_not_called, setup, teardown),
        cmocka_unit_test_setup_teardown(test_aksk_headers_accepted, setup, teardown),
    };
    return cmocka_run_group_tests_name("credentials", tests, start_sim, stop_sim);
}
