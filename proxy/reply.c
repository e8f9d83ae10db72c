#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <cjson/cJSON.h>
#include <event2/http.h>

#include "reply.h"

static void add_common_headers(struct evhttp_request *req, const char *content_type, const struct reply_meta *meta)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", content_type);
    evhttp_add_header(h, "X-Request-Id", meta->request_id);
    evhttp_add_header(h, "X-Cache", cache_outcome_name(meta->outcome));
    if (meta->age_s >= 0) {
        char age[24];
        snprintf(age, sizeof(age), "%lld", (long long)meta->age_s);
        evhttp_add_header(h, "Age", age);
    }
    if (meta->close_connection)
        evhttp_add_header(h, "Connection", "close");
}

/* Send `buf` (may be NULL). A HEAD answer keeps the GET's Content-Length and drops the body. */
static void send_reply(struct evhttp_request *req, int status, struct evbuffer *buf)
{
    if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD) {
        char len[24];
        snprintf(len, sizeof(len), "%zu", buf ? evbuffer_get_length(buf) : (size_t)0);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Length", len);
        evhttp_send_reply(req, status, http_reason(status), NULL);
    } else {
        evhttp_send_reply(req, status, http_reason(status), buf);
    }
}

static void body_release(const void *data, size_t len, void *arg)
{
    body_unref(arg);
}

void reply_job(struct evhttp_request *req, struct body *b, const struct reply_meta *meta)
{
    add_common_headers(req, "application/json;charset=UTF-8", meta);
    struct evbuffer *buf = evbuffer_new();
    if (buf && evbuffer_add_reference(buf, b->data, b->len, body_release, body_ref(b)) < 0) {
        body_unref(b);
        evbuffer_free(buf);
        buf = NULL;
    }
    if (!buf) {
        evhttp_send_error(req, 500, "Internal Server Error");
        return;
    }
    send_reply(req, b->status, buf);
    evbuffer_free(buf);
}

void reply_error(struct evhttp_request *req, const struct client_error *e, const struct reply_meta *meta)
{
    add_common_headers(req, "application/json;charset=UTF-8", meta);
    if (e->retry_after > 0) {
        char ra[16];
        snprintf(ra, sizeof(ra), "%d", e->retry_after);
        evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", ra);
    }
    char *text = client_error_render(e, meta->request_id);
    struct evbuffer *buf = evbuffer_new();
    if (buf && text)
        evbuffer_add(buf, text, strlen(text));
    send_reply(req, e->status, buf);
    if (buf)
        evbuffer_free(buf);
    cJSON_free(text);
}

void reply_text(struct evhttp_request *req, int status, const char *content_type, const char *text, size_t len,
                const struct reply_meta *meta)
{
    add_common_headers(req, content_type, meta);
    struct evbuffer *buf = evbuffer_new();
    if (buf)
        evbuffer_add(buf, text, len);
    send_reply(req, status, buf);
    if (buf)
        evbuffer_free(buf);
}
