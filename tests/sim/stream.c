/*
 * jobsim's streaming routes (stream.h): a large body sent slowly, piece by
 * piece, and a sink that reads a large body and says what it got.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <openssl/evp.h>

#include "stream.h"

#define STREAM_SEGMENT "/_stream/"
#define STATS_PATH     "/_stream/stats"
#define DEFAULT_PIECE  (64 * 1024)
#define MAX_PIECE      (4 * 1024 * 1024)
#define MAX_BLOB       ((uint64_t)1 << 32)
#define MAX_TAGS       256
#define MAX_TAG_LEN    64

/* One blob being sent. Owned by the simulator until its last byte is
 * written (send_next) or its connection closes (on_blob_closed). */
struct blob {
    struct evhttp_request *req;
    struct evhttp_connection *evcon;
    struct event *next; /* the next piece, after delay_ms */
    uint64_t size;      /* body bytes to send */
    uint64_t sent;
    uint64_t cut_after; /* 0: never */
    size_t piece;
    int delay_ms;
    int waiting; /* a piece is on its way: on_written sends the next */
};

static struct {
    uint64_t blobs_started;
    uint64_t blobs_completed;
    uint64_t blobs_closed_early;
    uint64_t blob_bytes_sent;
    size_t ntags;
    char tags[MAX_TAGS][MAX_TAG_LEN];
    uint64_t tag_calls[MAX_TAGS];
} stats;

int stream_route_matches(const char *path)
{
    return strcmp(path, STATS_PATH) == 0 || strstr(path, STREAM_SEGMENT) != NULL;
}

/* The body's bytes from `offset`, `n` of them, into `out`: line k (16 bytes)
 * is "%015x\n" of k. */
static int blob_fill(struct evbuffer *out, uint64_t offset, size_t n)
{
    struct evbuffer_iovec vec;
    if (evbuffer_reserve_space(out, (ev_ssize_t)n, &vec, 1) < 1)
        return -1;
    char *p = vec.iov_base;
    uint64_t line = offset / 16;
    size_t skip = (size_t)(offset % 16), done = 0;
    while (done < n) {
        char text[17];
        snprintf(text, sizeof(text), "%015" PRIx64 "\n", line++);
        size_t take = 16 - skip;
        if (take > n - done)
            take = n - done;
        memcpy(p + done, text + skip, take);
        done += take;
        skip = 0;
    }
    vec.iov_len = n;
    return evbuffer_commit_space(out, &vec, 1);
}

static void blob_free(struct blob *b)
{
    if (b->next != NULL)
        event_free(b->next);
    free(b);
}

/* The connection went away before the last byte: evhttp has let the
 * request go (detached, ours to free) or frees it after this returns. */
static void on_blob_closed(struct evhttp_connection *evcon, void *arg)
{
    struct blob *b = arg;
    (void)evcon;
    stats.blobs_closed_early++;
    fprintf(stderr, "jobsim: blob closed early after %" PRIu64 " of %" PRIu64 " bytes\n", b->sent, b->size);
    if (evhttp_request_get_connection(b->req) == NULL)
        evhttp_request_free(b->req);
    blob_free(b);
}

static void on_written(struct evhttp_connection *evcon, void *arg)
{
    struct blob *b = arg;
    struct timeval tv;
    (void)evcon;
    if (!b->waiting)
        return;
    b->waiting = 0;
    tv.tv_sec = b->delay_ms / 1000;
    tv.tv_usec = (b->delay_ms % 1000) * 1000;
    evtimer_add(b->next, &tv); /* from the loop: never from inside evhttp's callback */
}

/* Send the next piece, or the end, or cut the connection (cut_after). */
static void send_next(evutil_socket_t fd, short what, void *arg)
{
    struct blob *b = arg;
    struct evbuffer *buf;
    uint64_t left = b->size - b->sent;
    size_t n = b->piece;
    (void)fd;
    (void)what;
    if (b->cut_after != 0 && b->sent >= b->cut_after) {
        evhttp_connection_set_closecb(b->evcon, NULL, NULL);
        evhttp_connection_free(b->evcon); /* frees the request */
        blob_free(b);
        return;
    }
    if (left == 0) {
        evhttp_connection_set_closecb(b->evcon, NULL, NULL);
        evhttp_send_reply_end(b->req);
        stats.blobs_completed++;
        blob_free(b);
        return;
    }
    if (n > left)
        n = (size_t)left;
    if (b->cut_after != 0 && n > b->cut_after - b->sent)
        n = (size_t)(b->cut_after - b->sent);
    buf = evbuffer_new();
    if (buf == NULL || blob_fill(buf, b->sent, n) != 0) {
        if (buf != NULL)
            evbuffer_free(buf);
        b->cut_after = b->sent; /* out of memory: cut */
        event_active(b->next, 0, 0);
        return;
    }
    b->sent += n;
    stats.blob_bytes_sent += n;
    b->waiting = 1;
    evhttp_send_reply_chunk_with_cb(b->req, buf, on_written, b);
    evbuffer_free(buf);
}

static uint64_t query_u64(struct evkeyvalq *q, const char *name, uint64_t dflt)
{
    const char *v = evhttp_find_header(q, name);
    char *end;
    unsigned long long n;
    if (v == NULL || *v == '\0')
        return dflt;
    n = strtoull(v, &end, 10);
    return *end == '\0' ? (uint64_t)n : dflt;
}

static void answer(struct evhttp_request *req, int status, cJSON *json, char *outcome, size_t outcome_len)
{
    char *text = json != NULL ? cJSON_PrintUnformatted(json) : NULL;
    struct evbuffer *out = evhttp_request_get_output_buffer(req);
    cJSON_Delete(json);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json;charset=UTF-8");
    if (text == NULL) {
        evhttp_send_error(req, 500, "out of memory");
        snprintf(outcome, outcome_len, "500");
        return;
    }
    evbuffer_add(out, text, strlen(text));
    cJSON_free(text);
    evhttp_send_reply(req, status, status == 200 ? "OK" : "Error", NULL);
    snprintf(outcome, outcome_len, "%d", status);
}

static void blob_start(struct event_base *base, struct evhttp_request *req, struct evkeyvalq *q, char *outcome,
                       size_t outcome_len)
{
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);
    struct blob *b = calloc(1, sizeof(*b));
    char num[24];
    if (b == NULL || (b->next = evtimer_new(base, send_next, b)) == NULL) {
        free(b);
        answer(req, 500, NULL, outcome, outcome_len);
        return;
    }
    b->req = req;
    b->evcon = evhttp_request_get_connection(req);
    b->size = query_u64(q, "size", 1024 * 1024);
    b->piece = (size_t)query_u64(q, "piece", DEFAULT_PIECE);
    b->delay_ms = (int)query_u64(q, "delay_ms", 0);
    b->cut_after = query_u64(q, "cut_after", 0);
    if (b->size > MAX_BLOB || b->piece == 0 || b->piece > MAX_PIECE || b->delay_ms > 10000 || b->evcon == NULL) {
        blob_free(b);
        answer(req, 400, cJSON_CreateString("bad size, piece or delay_ms"), outcome, outcome_len);
        return;
    }
    evhttp_add_header(out, "Content-Type", "application/octet-stream");
    evhttp_add_header(out, "ETag", "\"blob\"");
    if (query_u64(q, "length", 0)) {
        snprintf(num, sizeof(num), "%" PRIu64, b->size);
        evhttp_add_header(out, "Content-Length", num);
    }
    stats.blobs_started++;
    evhttp_connection_set_closecb(b->evcon, on_blob_closed, b);
    evhttp_send_reply_start(req, 200, "OK");
    snprintf(outcome, outcome_len, "200 streaming %" PRIu64 " bytes", b->size);
    event_active(b->next, 0, 0);
}

static void sink(struct evhttp_request *req, struct evkeyvalq *q, char *outcome, size_t outcome_len)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    const char *tag = evhttp_find_header(q, "tag");
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;
    char hex[2 * EVP_MAX_MD_SIZE + 1];
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    struct evbuffer_ptr at;
    struct evbuffer_iovec vec[16];
    int ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1;
    cJSON *json;
    size_t i;

    /* Over the buffer's chains as they are: no copy. */
    evbuffer_ptr_set(in, &at, 0, EVBUFFER_PTR_SET);
    while (ok && at.pos < (ev_ssize_t)len) {
        int n = evbuffer_peek(in, -1, &at, vec, 16), k;
        if (n <= 0)
            break;
        for (k = 0; k < n && k < 16 && ok; k++) {
            ok = EVP_DigestUpdate(ctx, vec[k].iov_base, vec[k].iov_len) == 1;
            evbuffer_ptr_set(in, &at, vec[k].iov_len, EVBUFFER_PTR_ADD);
        }
    }
    ok = ok && EVP_DigestFinal_ex(ctx, digest, &digest_len) == 1;
    EVP_MD_CTX_free(ctx);
    if (!ok) {
        answer(req, 500, NULL, outcome, outcome_len);
        return;
    }
    for (i = 0; i < digest_len; i++)
        snprintf(hex + 2 * i, 3, "%02x", digest[i]);
    if (tag == NULL)
        tag = "";
    for (i = 0; i < stats.ntags && strcmp(stats.tags[i], tag) != 0; i++)
        ;
    if (i == stats.ntags && stats.ntags < MAX_TAGS)
        snprintf(stats.tags[stats.ntags++], MAX_TAG_LEN, "%s", tag);
    if (i < stats.ntags)
        stats.tag_calls[i]++;
    json = cJSON_CreateObject();
    cJSON_AddNumberToObject(json, "length", (double)len);
    cJSON_AddStringToObject(json, "sha256", hex);
    cJSON_AddStringToObject(json, "tag", tag);
    answer(req, 200, json, outcome, outcome_len);
}

static void stats_answer(struct evhttp_request *req, char *outcome, size_t outcome_len)
{
    cJSON *json = cJSON_CreateObject(), *sinks = cJSON_CreateObject();
    size_t i;
    cJSON_AddNumberToObject(json, "blobs_started", (double)stats.blobs_started);
    cJSON_AddNumberToObject(json, "blobs_completed", (double)stats.blobs_completed);
    cJSON_AddNumberToObject(json, "blobs_closed_early", (double)stats.blobs_closed_early);
    cJSON_AddNumberToObject(json, "blob_bytes_sent", (double)stats.blob_bytes_sent);
    for (i = 0; i < stats.ntags; i++)
        cJSON_AddNumberToObject(sinks, stats.tags[i], (double)stats.tag_calls[i]);
    cJSON_AddItemToObject(json, "sinks", sinks);
    answer(req, 200, json, outcome, outcome_len);
}

void stream_request_handle(struct event_base *base, struct evhttp_request *req, const char *path, const char *query,
                           char *outcome, size_t outcome_len)
{
    enum evhttp_cmd_type method = evhttp_request_get_command(req);
    const char *what = strstr(path, STREAM_SEGMENT);
    struct evkeyvalq q;
    TAILQ_INIT(&q);
    if (evhttp_parse_query_str(query != NULL ? query : "", &q) != 0) {
        answer(req, 400, cJSON_CreateString("malformed query string"), outcome, outcome_len);
    } else if (strcmp(path, STATS_PATH) == 0 && method == EVHTTP_REQ_GET) {
        stats_answer(req, outcome, outcome_len);
    } else if (what != NULL && strcmp(what, STREAM_SEGMENT "blob") == 0 && method == EVHTTP_REQ_GET) {
        blob_start(base, req, &q, outcome, outcome_len);
    } else if (what != NULL && strcmp(what, STREAM_SEGMENT "sink") == 0 &&
               (method == EVHTTP_REQ_POST || method == EVHTTP_REQ_PUT)) {
        sink(req, &q, outcome, outcome_len);
    } else {
        answer(req, 404, cJSON_CreateString("no such stream route"), outcome, outcome_len);
    }
    evhttp_clear_headers(&q);
}
