#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <time.h>

#include <event2/buffer.h>
#include <cjson/cJSON.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "reply.h"

/* Write `v` in decimal into `out` (at least 21 bytes); returns `out`. The
 * hot path formats two numbers per answer, and snprintf costs ten times this. */
static char *format_u64(char out[24], unsigned long long v)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    out[n] = '\0';
    return out;
}

/* The Date header (RFC 9110 section 6.6.1: an origin server with a clock
 * sends it), formatted once per second instead of by evhttp on every answer
 * (gmtime and a snprintf: about a twentieth of a cache hit). Written by hand,
 * not strftime, so that it is English in every locale. Single-threaded: each
 * worker process has its own copy. */
static const char *http_date(void)
{
    static char text[32];
    static time_t shown = (time_t)-1;
    time_t now = time(NULL);
    if (now != shown) {
        static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
        static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                           "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
        struct tm tm;
        if (!gmtime_r(&now, &tm))
            return NULL;
        snprintf(text, sizeof(text), "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday % 7], tm.tm_mday,
                 months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
        shown = now;
    }
    return text;
}

/* Append `key`: `value` to `h`, as evhttp_add_header does (the node, key
 * and value each malloc'ed: evhttp_clear_headers frees them with free,
 * jobgate setting no libevent allocator) but without its check that the
 * value is one line: the caller vouches for `value`, malloc'ed, which `h`
 * now owns (freed here when the node cannot be made). */
static void header_adopt(struct evkeyvalq *h, const char *key, char *value)
{
    struct evkeyval *kv = malloc(sizeof(*kv));
    char *k = strdup(key);
    if (!kv || !k || !value) {
        free(kv);
        free(k);
        free(value);
        return;
    }
    kv->key = k;
    kv->value = value;
    TAILQ_INSERT_TAIL(h, kv, next);
}

/* Can `s` go in a header line as it is (no CR, LF or other control byte)? */
static int header_safe(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 && *s != '\t')
            return 0;
    return 1;
}

/* Append the line `name`: `value` (with its CRLF before it) at `p`. */
static char *put_line(char *p, const char *name, size_t nlen, const char *value, size_t vlen)
{
    memcpy(p, "\r\n", 2);
    memcpy(p + 2, name, nlen);
    memcpy(p + 2 + nlen, ": ", 2);
    memcpy(p + 4 + nlen, value, vlen);
    return p + 4 + nlen + vlen;
}

#define PUT_LINE(p, name, value, vlen) put_line(p, name, sizeof(name) - 1, value, vlen)

/* The headers of every answer, `len` the Content-Length (for a HEAD, the
 * GET's), `retry_after` > 0 a Retry-After.
 *
 * evhttp writes each output header with its own evbuffer_add_printf("%s:
 * %s\r\n"), after an evhttp_add_header each (a calloc and two strdup), and
 * frees them one by one: about 2.5k instructions a header, half a cache
 * hit's cost for our six. So they go as two entries: Content-Length, and a
 * "Date" whose value carries the other lines ("<date>\r\nContent-Type:
 * ...\r\nX-Request-Id: ...\r\nX-Cache: ...\r\nAge: ..."), which evhttp
 * prints as they are. Content-Length and Date must be entries of their own:
 * evhttp looks both up and adds its own when missing (and its Content-Type
 * default is off, frontend.c, so that it adds none). Connection stays an
 * entry too: evhttp reads it to decide to close. Every value put in a line is
 * ours or checked: the request id (reqid_acceptable's characters), the
 * outcome's name, the numbers; a content type with a control byte (from an
 * upstream, forwarded) is dropped, as evhttp_add_header would. */
static void add_common_headers(struct evhttp_request *req, const char *content_type, size_t len, int retry_after,
                               const struct reply_meta *meta)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    char num[24], age[24], ra[24];
    format_u64(num, (unsigned long long)len);
    header_adopt(h, "Content-Length", strdup(num));

    const char *date = http_date(); /* NULL: evhttp adds its own */
    const char *outcome = cache_outcome_name(meta->outcome);
    size_t datelen = date ? strlen(date) : 0, ctlen = header_safe(content_type) ? strlen(content_type) : 0;
    size_t idlen = strlen(meta->request_id), oclen = strlen(outcome);
    size_t agelen = meta->age_s >= 0 ? strlen(format_u64(age, (unsigned long long)meta->age_s)) : 0;
    size_t ralen = retry_after > 0 ? strlen(format_u64(ra, (unsigned long long)retry_after)) : 0;
    /* the values, and at most 5 names with their ": " and CRLF (65 bytes), and the NUL */
    char *block = malloc(datelen + ctlen + idlen + oclen + agelen + ralen + 96);
    if (!block)
        return; /* out of memory: evhttp adds a Date; the rest is lost */
    char *p = block;
    if (date) {
        memcpy(p, date, datelen);
        p += datelen;
    }
    if (ctlen)
        p = PUT_LINE(p, "Content-Type", content_type, ctlen);
    p = PUT_LINE(p, "X-Request-Id", meta->request_id, idlen);
    p = PUT_LINE(p, "X-Cache", outcome, oclen);
    if (agelen)
        p = PUT_LINE(p, "Age", age, agelen);
    if (ralen)
        p = PUT_LINE(p, "Retry-After", ra, ralen);
    *p = '\0';
    if (date) {
        header_adopt(h, "Date", block);
    } else { /* the block starts with a line of its own ("\r\nName: "): key it by that name */
        const char *key = ctlen ? "Content-Type" : "X-Request-Id";
        size_t skip = 2 + strlen(key) + 2;
        memmove(block, block + skip, (size_t)(p - block) - skip + 1);
        header_adopt(h, key, block);
    }
    if (meta->close_connection)
        evhttp_add_header(h, "Connection", "close");
}

/* Send a copy of `len` bytes of `data` (NULL: none) with the common headers
 * and, when `retry_after` > 0, a Retry-After. A HEAD answer keeps the GET's
 * Content-Length and drops the body. */
static void send_copy(struct evhttp_request *req, int status, const char *content_type, const char *data, size_t len,
                      int retry_after, const struct reply_meta *meta)
{
    if (!data)
        len = 0;
    else if (evhttp_request_get_command(req) != EVHTTP_REQ_HEAD &&
             evbuffer_add(evhttp_request_get_output_buffer(req), data, len) < 0)
        len = 0; /* out of memory: an empty body, with its length */
    add_common_headers(req, content_type, len, retry_after, meta);
    evhttp_send_reply(req, status, http_reason(status), NULL);
}

static void body_release(const void *data, size_t len, void *arg)
{
    body_unref(arg);
}

/* The body goes by reference straight into the request's output buffer (no
 * evbuffer of our own to make, move and free): evhttp frees that buffer with
 * the request, which drops our reference, whether or not it was written. */
void reply_job(struct evhttp_request *req, struct body *b, const struct reply_meta *meta)
{
    if (evhttp_request_get_command(req) != EVHTTP_REQ_HEAD &&
        evbuffer_add_reference(evhttp_request_get_output_buffer(req), b->data, b->len, body_release, body_ref(b)) < 0) {
        body_unref(b);
        evhttp_send_error(req, 500, "Internal Server Error");
        return;
    }
    add_common_headers(req, "application/json;charset=UTF-8", b->len, 0, meta);
    evhttp_send_reply(req, b->status, http_reason(b->status), NULL);
}

void reply_error(struct evhttp_request *req, const struct client_error *e, const struct reply_meta *meta)
{
    char *text = client_error_render(e, meta->request_id, meta->error_shape);
    send_copy(req, e->status, "application/json;charset=UTF-8", text, text ? strlen(text) : 0, e->retry_after, meta);
    cJSON_free(text);
}

void reply_text(struct evhttp_request *req, int status, const char *content_type, const char *text, size_t len,
                const struct reply_meta *meta)
{
    send_copy(req, status, content_type, text, len, 0, meta);
}

const char *reply_method_name(enum evhttp_cmd_type cmd)
{
    switch (cmd) {
    case EVHTTP_REQ_GET: return "GET";
    case EVHTTP_REQ_HEAD: return "HEAD";
    case EVHTTP_REQ_POST: return "POST";
    case EVHTTP_REQ_PUT: return "PUT";
    case EVHTTP_REQ_DELETE: return "DELETE";
    case EVHTTP_REQ_PATCH: return "PATCH";
    case EVHTTP_REQ_OPTIONS: return "OPTIONS";
    case EVHTTP_REQ_TRACE: return "TRACE";
    case EVHTTP_REQ_CONNECT: return "CONNECT";
    }
    return "";
}

void reply_stream_start(struct evhttp_request *req, int status, const char *content_type, int64_t content_length,
                        long retry_after, const struct reply_meta *meta)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    add_common_headers(req, content_type, content_length >= 0 ? (size_t)content_length : 0, 0, meta);
    if (content_length < 0) {
        evhttp_remove_header(h, "Content-Length"); /* evhttp_send_reply_start goes chunked */
        /* HTTP/1.0 has no chunks: the end of the body is the end of the
         * connection, so evhttp must not keep it alive (nor invent a
         * Content-Length: 0, as it does for a kept-alive 1.0 answer). */
        struct evkeyvalq *in = evhttp_request_get_input_headers(req);
        const char *conn = evhttp_find_header(in, "Connection");
        if (conn && strcasecmp(conn, "keep-alive") == 0)
            evhttp_remove_header(in, "Connection"); /* HTTP/1.1 reads no meaning into it */
    }
    if (retry_after >= 0) {
        char ra[24];
        evhttp_add_header(h, "Retry-After", format_u64(ra, (unsigned long long)retry_after));
    }
    evhttp_send_reply_start(req, status, http_reason(status));
}
