#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>

#include <curl/curl.h>
#include <event2/event.h>

#include "clock.h"
#include "log.h"
#include "upstream.h"
#include "upstream_multi.h"

struct upstream_call {
    struct upstream *u;
    CURL *easy;
    struct curl_slist *headers;
    upstream_done_cb cb;
    void *arg;
    char *body;
    size_t len;
    size_t cap;
    int oversized;
    long retry_after;
    char *post_body; /* our copy of a POST body (a secret, wiped when freed); NULL: the caller's (body_borrowed) */
    size_t post_len;
    /* Streaming (upstream.h): the caller's callbacks, and what was told. */
    upstream_head_cb on_head;
    upstream_data_cb on_data;
    int head_seen;       /* on_head has fired */
    int head_status;     /* the status it was told */
    int aborted;         /* a streaming callback stopped the transfer */
    int64_t content_len; /* the Content-Length header's value, -1: none */
    CURLcode resume_rc;  /* upstream_resume failed: finished from u->later with this */
    struct event *quiet; /* streaming: no head, or no piece, within quiet_ms (not while paused) */
    int64_t quiet_ms;
    char *capture_name;      /* the response header to capture, NULL: none */
    char *captured;          /* its value (a secret, wiped when freed) */
    const char *const *keep; /* response headers to report (the caller's names: forward.c's static table) */
    size_t nkeep;
    char **kept; /* "Name: value" of those received */
    size_t nkept;
    int64_t started_us;
    char error[CURL_ERROR_SIZE];
    LIST_ENTRY(upstream_call) link;
};

struct upstream {
    struct event_base *base;
    struct curl_slist *connect_to; /* upstream_conf.connect_to, for libcurl */
    struct upstream_multi m;       /* libcurl on the loop */
    struct event *later;           /* finishes calls whose resume failed (resume_rc) */
    struct upstream_conf conf;
    LIST_HEAD(, upstream_call) calls;
    size_t in_flight;
};

/* ------------------------------------------------------------- one call */

static int deliver_head(struct upstream_call *c);

/* Streaming: (re)start the wait for upstream's next head or piece. */
static void quiet_arm(struct upstream_call *c)
{
    struct timeval tv = {(time_t)(c->quiet_ms / 1000), (suseconds_t)((c->quiet_ms % 1000) * 1000)};
    evtimer_add(c->quiet, &tv);
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    struct upstream_call *c = arg;
    size_t n = size * nmemb;
    if (c->on_data) {
        if (!c->head_seen && deliver_head(c) < 0)
            return 0;
        switch (c->on_data(data, n, c->arg)) {
        case UPSTREAM_DATA_TAKEN:
            c->len += n;
            quiet_arm(c);
            return n;
        case UPSTREAM_DATA_PAUSE:
            evtimer_del(c->quiet);
            return CURL_WRITEFUNC_PAUSE; /* the client's time, not upstream's */
        case UPSTREAM_DATA_ABORT: break;
        }
        c->aborted = 1;
        return 0; /* CURLE_WRITE_ERROR */
    }
    if (c->len + n > c->u->conf.max_body_bytes) {
        c->oversized = 1;
        return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
    }
    if (c->len + n + 1 > c->cap) {
        size_t cap = c->cap ? c->cap : 4096;
        while (cap < c->len + n + 1)
            cap *= 2;
        char *grown = realloc(c->body, cap);
        if (!grown)
            return 0;
        c->body = grown;
        c->cap = cap;
    }
    memcpy(c->body + c->len, data, n);
    c->len += n;
    c->body[c->len] = '\0';
    return n;
}

/* Overwrite and free a string that may hold a secret. */
static void free_secret(char *s)
{
    if (s) {
        memset(s, 0, strlen(s));
        free(s);
    }
}

/* Keep the value of the header line `data` (`n` bytes, "Name: value\r\n")
 * when it is the one the caller asked for. */
static void capture(struct upstream_call *c, const char *data, size_t n)
{
    size_t name_len = strlen(c->capture_name);
    if (n <= name_len || data[name_len] != ':' || strncasecmp(data, c->capture_name, name_len) != 0)
        return;
    const char *v = data + name_len + 1, *end = data + n;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
        end--;
    char *value = malloc((size_t)(end - v) + 1);
    if (!value)
        return; /* reported as absent */
    memcpy(value, v, (size_t)(end - v));
    value[end - v] = '\0';
    free_secret(c->captured);
    c->captured = value;
}

static void free_kept(struct upstream_call *c)
{
    for (size_t i = 0; i < c->nkept; i++)
        free(c->kept[i]);
    free(c->kept);
    c->kept = NULL;
    c->nkept = 0;
}

/* Keep the header line `data` (`n` bytes) when its name is one of c->keep. */
static void keep(struct upstream_call *c, const char *data, size_t n)
{
    for (size_t i = 0; i < c->nkeep; i++) {
        size_t name_len = strlen(c->keep[i]);
        if (n <= name_len || data[name_len] != ':' || strncasecmp(data, c->keep[i], name_len) != 0)
            continue;
        const char *v = data + name_len + 1, *end = data + n;
        while (v < end && (*v == ' ' || *v == '\t'))
            v++;
        while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
            end--;
        char **grown = c->nkept < 64 ? realloc(c->kept, (c->nkept + 1) * sizeof(*grown)) : NULL;
        if (!grown)
            return; /* reported as absent */
        c->kept = grown;
        size_t len = name_len + 2 + (size_t)(end - v) + 1;
        if (!(c->kept[c->nkept] = malloc(len)))
            return;
        snprintf(c->kept[c->nkept++], len, "%s: %.*s", c->keep[i], (int)(end - v), v);
        return;
    }
}

/* Streaming: tell on_head the final status and headers. Returns 0, or -1
 * when on_head stops the transfer. */
static int deliver_head(struct upstream_call *c)
{
    long status = 0;
    curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &status);
    c->head_seen = 1;
    c->head_status = (int)status;
    quiet_arm(c);
    struct upstream_head head = {.status = (int)status,
                                 .retry_after = c->retry_after,
                                 .content_length = c->content_len,
                                 .kept = c->kept,
                                 .nkept = c->nkept};
    if (c->on_head(&head, c->arg) < 0) {
        c->aborted = 1;
        return -1;
    }
    return 0;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *arg)
{
    struct upstream_call *c = arg;
    size_t n = size * nmemb;
    if (c->head_seen)
        return n; /* trailers of a chunked body: not passed on */
    /* A new status line (after a 1xx) starts a new header set. */
    if (n >= 5 && strncmp(data, "HTTP/", 5) == 0) {
        c->retry_after = -1;
        c->content_len = -1;
        free_secret(c->captured);
        c->captured = NULL;
        free_kept(c);
    }
    /* The blank line that ends a header set: a final one is the head. */
    if (c->on_head && (n == 2 || n == 1) && (data[0] == '\r' || data[0] == '\n')) {
        long status = 0;
        curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &status);
        if (status >= 200 && deliver_head(c) < 0)
            return 0; /* CURLE_WRITE_ERROR */
        return n;
    }
    if (n > 15 && strncasecmp(data, "Content-Length:", 15) == 0) {
        char buf[32];
        size_t vlen = n - 15 < sizeof(buf) - 1 ? n - 15 : sizeof(buf) - 1;
        memcpy(buf, data + 15, vlen);
        buf[vlen] = '\0';
        char *end;
        long long v = strtoll(buf, &end, 10);
        if (end != buf && v >= 0)
            c->content_len = v;
    }
    if (c->nkeep)
        keep(c, data, n);
    if (c->capture_name)
        capture(c, data, n);
    if (n > 12 && strncasecmp(data, "Retry-After:", 12) == 0) {
        char buf[32];
        size_t vlen = n - 12 < sizeof(buf) - 1 ? n - 12 : sizeof(buf) - 1;
        memcpy(buf, data + 12, vlen);
        buf[vlen] = '\0';
        char *end;
        long v = strtol(buf, &end, 10);
        if (end != buf && v >= 0)
            c->retry_after = v; /* seconds; an HTTP-date form is ignored */
    }
    return n;
}

static enum upstream_fault fault_of(CURLcode rc, const struct upstream_call *c)
{
    switch (rc) {
    case CURLE_OK: return FAULT_NONE;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY: return FAULT_DNS;
    case CURLE_COULDNT_CONNECT: return FAULT_CONNECT;
    case CURLE_OPERATION_TIMEDOUT: return FAULT_TIMEOUT;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_USE_SSL_FAILED: return FAULT_TLS;
    case CURLE_PARTIAL_FILE: return FAULT_TRUNCATED;
    case CURLE_GOT_NOTHING:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR: return FAULT_RESET;
    case CURLE_WRITE_ERROR:
    case CURLE_FILESIZE_EXCEEDED:
        return c->oversized || rc == CURLE_FILESIZE_EXCEEDED ? FAULT_OVERSIZED : FAULT_INTERNAL;
    case CURLE_OUT_OF_MEMORY:
    case CURLE_FAILED_INIT: return FAULT_INTERNAL;
    default: return FAULT_PROTOCOL;
    }
}

/* The header lines may carry a token or a signature: wiped, then freed. */
static void free_headers(struct upstream_call *c)
{
    for (struct curl_slist *h = c->headers; h; h = h->next)
        memset(h->data, 0, strlen(h->data));
    curl_slist_free_all(c->headers);
    c->headers = NULL;
}

static void free_call_secrets(struct upstream_call *c)
{
    if (c->post_body) { /* ours: the caller's borrowed body is the caller's to wipe */
        memset(c->post_body, 0, c->post_len);
        free(c->post_body);
    }
    free(c->capture_name);
    free_secret(c->captured);
    free_kept(c);
}

static void call_free(struct upstream_call *c)
{
    if (c->quiet)
        event_free(c->quiet);
    LIST_REMOVE(c, link);
    c->u->in_flight--;
    curl_multi_remove_handle(c->u->m.multi, c->easy);
    curl_easy_cleanup(c->easy);
    free_headers(c);
    free(c->body);
    free_call_secrets(c);
    free(c);
}

static void finish(struct upstream_call *c, CURLcode rc)
{
    struct upstream_response resp = {0};
    resp.fault = fault_of(rc, c);
    resp.fault_detail = c->error[0] ? c->error : curl_easy_strerror(rc);
    resp.retry_after = c->retry_after;
    resp.elapsed_us = clock_mono_us() - c->started_us;
    resp.head_seen = c->head_seen;
    resp.aborted = c->aborted;
    if (c->aborted) {
        resp.fault = FAULT_INTERNAL;
        resp.fault_detail = "stopped by the caller";
    }
    if (c->on_data) {
        resp.len = c->len; /* streamed: counted, not kept */
        if (c->head_seen && resp.fault != FAULT_NONE)
            resp.status = c->head_status;
    }
    if (resp.fault == FAULT_NONE) {
        long status = 0;
        curl_easy_getinfo(c->easy, CURLINFO_RESPONSE_CODE, &status);
        resp.status = (int)status;
        /* A final 1xx (or nothing) is not an answer. */
        if (status < 200 || status > 599) {
            resp.status = 0;
            resp.fault = FAULT_PROTOCOL;
            resp.fault_detail = "no final HTTP status";
        }
        resp.body = c->on_data ? NULL : c->body ? c->body : "";
        resp.len = c->len;
        resp.captured = c->captured;
        resp.kept = c->kept;
        resp.nkept = c->nkept;
    }
    upstream_done_cb cb = c->cb;
    void *arg = c->arg;
    /* Report first (the body lives in c), then free: the callback may start new calls. */
    cb(&resp, arg);
    call_free(c);
}

/* Streaming: upstream said nothing for quiet_ms (no head yet, or no piece
 * while the transfer was not paused): the call times out. */
static void on_quiet(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct upstream_call *c = arg;
    snprintf(c->error, sizeof(c->error), "%s within %lld ms", c->head_seen ? "no more of the body" : "no answer",
             (long long)c->quiet_ms);
    finish(c, CURLE_OPERATION_TIMEDOUT);
}

/* upstream_multi's progress: finish each transfer libcurl is done with. */
static void check_done(void *arg)
{
    struct upstream *u = arg;
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(u->m.multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        struct upstream_call *c = NULL;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&c);
        CURLcode rc = msg->data.result;
        if (c)
            finish(c, rc);
    }
}

static int dropped(const struct upstream_request *req, const char *name)
{
    for (size_t i = 0; i < req->ndrop_headers; i++)
        if (strcasecmp(req->drop_headers[i], name) == 0)
            return 1;
    return 0;
}

/* Append the header line "NAME: VALUE" to `h` through a heap copy (a value
 * may be long, and a secret) that is wiped once libcurl has copied it. */
static struct curl_slist *append_header(struct curl_slist *h, const char *name, const char *value)
{
    size_t n = strlen(name) + strlen(value) + 3;
    char *line = malloc(n);
    if (!line)
        return h;
    snprintf(line, n, "%s: %s", name, value);
    h = curl_slist_append(h, line);
    memset(line, 0, n);
    free(line);
    return h;
}

/* Abandon a call that upstream_fetch could not start. */
static void fetch_fail(struct upstream_call *c)
{
    if (c->quiet)
        event_free(c->quiet);
    if (c->easy)
        curl_easy_cleanup(c->easy);
    free_headers(c);
    free_call_secrets(c);
    free(c);
}

struct upstream_call *upstream_fetch(struct upstream *u, const struct upstream_request *req, upstream_done_cb cb,
                                     void *arg)
{
    /* GET and HEAD go without a body; every other method with one (maybe empty). */
    static const char *const methods[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"};
    const char *method = req->method ? req->method : "GET";
    size_t mi = 0;
    while (mi < sizeof(methods) / sizeof(methods[0]) && strcmp(methods[mi], method) != 0)
        mi++;
    if (mi == sizeof(methods) / sizeof(methods[0]))
        return NULL;
    int post = mi >= 2; /* sends a body */
    int head = mi == 1;
    struct upstream_call *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->u = u;
    c->cb = cb;
    c->arg = arg;
    c->retry_after = -1;
    c->content_len = -1;
    c->on_head = req->on_head;
    c->on_data = req->on_data;
    c->started_us = clock_mono_us();
    c->easy = curl_easy_init();
    if (!c->easy) {
        free(c);
        return NULL;
    }
    c->keep = req->keep_headers;
    c->nkeep = req->nkeep_headers;
    if (req->capture_header && !(c->capture_name = strdup(req->capture_header))) {
        fetch_fail(c);
        return NULL;
    }
    if (post && req->body_borrowed) {
        c->post_len = req->body_len; /* the caller's, kept valid until the end (upstream.h) */
    } else if (post) {
        /* Our own copy: libcurl reads the body while the transfer runs. */
        c->post_len = req->body_len;
        c->post_body = malloc(c->post_len + 1);
        if (!c->post_body) {
            fetch_fail(c);
            return NULL;
        }
        if (c->post_len)
            memcpy(c->post_body, req->body, c->post_len);
        c->post_body[c->post_len] = '\0';
    }
    char line[512];
    struct curl_slist *h = NULL;
    /* "Accept:" with no value stops libcurl from sending its own default. */
    h = curl_slist_append(h, dropped(req, "Accept") ? "Accept:" : "Accept: application/json");
    if (!dropped(req, "X-Request-Id")) {
        snprintf(line, sizeof(line), "X-Request-Id: %s", req->request_id);
        h = curl_slist_append(h, line);
    }
    for (size_t i = 0; i < req->nadd_headers; i++)
        h = curl_slist_append(h, req->add_headers[i]);
    for (size_t i = 0; i < req->nauth_headers; i++)
        h = curl_slist_append(h, req->auth_headers[i]);
    /* Built on the heap and wiped after use: a token may be long, and is a secret. */
    if (req->auth_token && !dropped(req, "X-Auth-Token"))
        h = append_header(h, "X-Auth-Token", req->auth_token);
    if (post) {
        /* "Name:" with no value stops libcurl from sending its own: no
         * form-encoded type, no "Expect: 100-continue" round trip. */
        h = req->content_type ? append_header(h, "Content-Type", req->content_type)
                              : curl_slist_append(h, "Content-Type:");
        h = curl_slist_append(h, "Expect:");
    }
    c->headers = h;

    CURL *e = c->easy;
    curl_easy_setopt(e, CURLOPT_URL, req->url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->headers);
    if (post) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)c->post_len);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS,
                         c->post_body                 ? c->post_body
                         : req->body && req->body_len ? req->body
                                                      : "");
        if (mi != 2)
            curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    }
    if (head)
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    if (req->once) {
        /* libcurl sends a request again, on a new connection, when a reused
         * kept-alive one turns out dead before any answer came (it cannot
         * tell whether the server saw it). A POST must not run twice: a
         * fresh connection is never "reused", so it is never resent. */
        curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
    }
    if (!dropped(req, "User-Agent"))
        curl_easy_setopt(e, CURLOPT_USERAGENT, u->conf.user_agent);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)req->connect_timeout_ms);
    if (!c->on_data) {
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)req->timeout_ms);
    } else {
        /* A streamed answer may take as long as its client takes to read
         * it: the timeout bounds each wait for upstream instead (quiet). */
        c->quiet_ms = req->timeout_ms > 0 ? req->timeout_ms : 1;
        if (!(c->quiet = evtimer_new(u->base, on_quiet, c))) {
            fetch_fail(c);
            return NULL;
        }
    }
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    if (u->conf.ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, u->conf.ca_file);
    if (u->connect_to)
        curl_easy_setopt(e, CURLOPT_CONNECT_TO, u->connect_to);
#if LIBCURL_VERSION_NUM >= 0x075500
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
#endif
    if (!c->on_data) /* a streamed body is never held whole: no bound */
        curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)u->conf.max_body_bytes);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, c);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, c);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, c->error);
    curl_easy_setopt(e, CURLOPT_PRIVATE, c);

    LIST_INSERT_HEAD(&u->calls, c, link);
    u->in_flight++;
    if (curl_multi_add_handle(u->m.multi, e) != CURLM_OK) {
        LIST_REMOVE(c, link);
        u->in_flight--;
        fetch_fail(c);
        return NULL;
    }
    if (c->quiet)
        quiet_arm(c);
    return c;
}

/* Finish the calls whose resume failed, from the loop. */
static void on_later(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct upstream *u = arg;
    struct upstream_call *c, *next;
    for (c = LIST_FIRST(&u->calls); c; c = next) {
        next = LIST_NEXT(c, link);
        if (c->resume_rc != CURLE_OK) {
            finish(c, c->resume_rc); /* may start and cancel calls: start over */
            event_active(u->later, 0, 0);
            return;
        }
    }
}

void upstream_resume(struct upstream *u, struct upstream_call *call)
{
    /* libcurl delivers the piece it held from here, and arms its timer
     * (upstream_multi.c) to carry on. A piece refused for good fails the
     * transfer, which libcurl then forgets: finished from the loop, never
     * from inside this call. */
    if (call->quiet)
        quiet_arm(call);
    CURLcode rc = curl_easy_pause(call->easy, CURLPAUSE_CONT);
    if (rc != CURLE_OK && call->resume_rc == CURLE_OK) {
        call->resume_rc = rc;
        event_active(u->later, 0, 0);
    }
}

void upstream_cancel(struct upstream *u, struct upstream_call *call)
{
    call_free(call);
}

size_t upstream_in_flight(const struct upstream *u)
{
    return u->in_flight;
}

struct upstream *upstream_new(struct event_base *base, const struct upstream_conf *conf, char *err, size_t errlen)
{
    struct upstream *u = calloc(1, sizeof(*u));
    if (!u) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    u->base = base;
    /* Deep copy: the configuration it came from is replaced on reload. */
    u->conf = *conf;
    u->conf.ca_file = conf->ca_file ? strdup(conf->ca_file) : NULL;
    u->conf.user_agent = strdup(conf->user_agent ? conf->user_agent : "jobgate");
    u->conf.connect_to = NULL; /* kept as an slist */
    for (char **line = conf->connect_to; line && *line; line++) {
        struct curl_slist *grown = curl_slist_append(u->connect_to, *line);
        if (!grown) {
            snprintf(err, errlen, "out of memory");
            upstream_free(u);
            return NULL;
        }
        u->connect_to = grown;
    }
    LIST_INIT(&u->calls);
    u->later = event_new(base, -1, 0, on_later, u);
    if (upstream_multi_init(&u->m, base, check_done, u) < 0 || !u->later) {
        snprintf(err, errlen, "cannot initialise libcurl");
        upstream_free(u);
        return NULL;
    }
    curl_multi_setopt(u->m.multi, CURLMOPT_MAX_HOST_CONNECTIONS, conf->max_connections);
    curl_multi_setopt(u->m.multi, CURLMOPT_MAXCONNECTS, conf->max_connections);
    return u;
}

void upstream_free(struct upstream *u)
{
    if (!u)
        return;
    while (!LIST_EMPTY(&u->calls))
        call_free(LIST_FIRST(&u->calls));
    upstream_multi_close(&u->m);
    if (u->later)
        event_free(u->later);
    free(u->conf.ca_file);
    free(u->conf.user_agent);
    curl_slist_free_all(u->connect_to);
    free(u);
}
