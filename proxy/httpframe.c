#include <string.h>
#include <strings.h>

#include "httpframe.h"

static const char *const error_names[] = {
    [HTTPFRAME_OK] = "ok",
    [HTTPFRAME_HEAD_TOO_LARGE] = "head_too_large",
    [HTTPFRAME_BAD_REQUEST_LINE] = "bad_request_line",
    [HTTPFRAME_BAD_METHOD] = "bad_method",
    [HTTPFRAME_BAD_TARGET] = "bad_target",
    [HTTPFRAME_BAD_VERSION] = "bad_version",
    [HTTPFRAME_BARE_LF] = "bare_lf",
    [HTTPFRAME_BAD_FIELD_NAME] = "bad_field_name",
    [HTTPFRAME_SPACE_BEFORE_COLON] = "space_before_colon",
    [HTTPFRAME_OBS_FOLD] = "obs_fold",
    [HTTPFRAME_BAD_FIELD_VALUE] = "bad_field_value",
    [HTTPFRAME_DUPLICATE_CONTENT_LENGTH] = "duplicate_content_length",
    [HTTPFRAME_BAD_CONTENT_LENGTH] = "bad_content_length",
    [HTTPFRAME_TRANSFER_ENCODING] = "transfer_encoding",
    [HTTPFRAME_NO_HOST] = "no_host",
    [HTTPFRAME_DUPLICATE_HOST] = "duplicate_host",
    [HTTPFRAME_RESERVED_FIELD] = "reserved_field",
};
_Static_assert(sizeof(error_names) / sizeof(error_names[0]) == HTTPFRAME_ERROR_COUNT, "a name for every error");

const char *httpframe_error_name(enum httpframe_error e)
{
    return (unsigned)e < HTTPFRAME_ERROR_COUNT ? error_names[e] : "unknown";
}

/* tchar (RFC 9110 section 5.6.2). */
static int is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* One line: [start, end) without its line ending. */
struct line {
    const char *start;
    size_t len;
};

/* The next line at `*pos`: 1 with *pos past its ending, 0 when incomplete,
 * -1 (BARE_LF) when it ends in LF alone and that is not allowed. */
static int next_line(const char *buf, size_t len, size_t *pos, const struct httpframe_limits *lim, struct line *out)
{
    const char *lf = memchr(buf + *pos, '\n', len - *pos);
    if (!lf)
        return 0;
    size_t end = (size_t)(lf - buf);
    size_t text_end = end;
    if (end > *pos && buf[end - 1] == '\r')
        text_end = end - 1;
    else if (!lim->allow_bare_lf)
        return -1;
    out->start = buf + *pos;
    out->len = text_end - *pos;
    *pos = end + 1;
    return 1;
}

/* The methods evhttp knows: any other would be answered by evhttp itself. */
static int known_method(const char *m, size_t n)
{
    static const char *const methods[] = {"GET",     "HEAD",  "POST",    "PUT",  "DELETE",
                                          "OPTIONS", "TRACE", "CONNECT", "PATCH"};
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
        if (strlen(methods[i]) == n && memcmp(methods[i], m, n) == 0)
            return 1;
    return 0;
}

static enum httpframe_error check_request_line(const struct line *l, int *http11)
{
    const char *s = l->start, *end = l->start + l->len;
    const char *sp1 = memchr(s, ' ', l->len);
    if (!sp1)
        return HTTPFRAME_BAD_REQUEST_LINE;
    const char *sp2 = memchr(sp1 + 1, ' ', (size_t)(end - sp1 - 1));
    if (!sp2 || memchr(sp2 + 1, ' ', (size_t)(end - sp2 - 1)))
        return HTTPFRAME_BAD_REQUEST_LINE;
    if (sp1 == s || sp2 == sp1 + 1)
        return HTTPFRAME_BAD_REQUEST_LINE;
    for (const char *p = s; p < sp1; p++)
        if (!is_tchar((unsigned char)*p))
            return HTTPFRAME_BAD_METHOD;
    if (!known_method(s, (size_t)(sp1 - s)))
        return HTTPFRAME_BAD_METHOD;
    for (const char *p = sp1 + 1; p < sp2; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
            return HTTPFRAME_BAD_TARGET;
    size_t vlen = (size_t)(end - sp2 - 1);
    if (vlen == 8 && memcmp(sp2 + 1, "HTTP/1.1", 8) == 0)
        *http11 = 1;
    else if (vlen == 8 && memcmp(sp2 + 1, "HTTP/1.0", 8) == 0)
        *http11 = 0;
    else
        return HTTPFRAME_BAD_VERSION;
    return HTTPFRAME_OK;
}

static int name_is(const char *name, size_t n, const char *want)
{
    return strlen(want) == n && strncasecmp(name, want, n) == 0;
}

/* One field line; updates the counts the head needs. */
static enum httpframe_error check_field(const struct line *l, const struct httpframe_limits *lim,
                                        struct httpframe_head *head, int *content_lengths, int *hosts)
{
    const char *s = l->start, *end = l->start + l->len;
    if (*s == ' ' || *s == '\t')
        return HTTPFRAME_OBS_FOLD;
    const char *colon = memchr(s, ':', l->len);
    if (!colon || colon == s)
        return HTTPFRAME_BAD_FIELD_NAME;
    for (const char *p = s; p < colon; p++) {
        if (*p == ' ' || *p == '\t')
            return HTTPFRAME_SPACE_BEFORE_COLON;
        if (!is_tchar((unsigned char)*p))
            return HTTPFRAME_BAD_FIELD_NAME;
    }
    size_t nlen = (size_t)(colon - s);
    const char *v = colon + 1;
    for (const char *p = v; p < end; p++) {
        unsigned char c = (unsigned char)*p;
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return HTTPFRAME_BAD_FIELD_VALUE;
    }
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
        end--;

    if (lim->reserved && name_is(s, nlen, lim->reserved))
        return HTTPFRAME_RESERVED_FIELD;
    if (name_is(s, nlen, "Transfer-Encoding"))
        return HTTPFRAME_TRANSFER_ENCODING;
    if (name_is(s, nlen, "Host") && ++*hosts > 1)
        return HTTPFRAME_DUPLICATE_HOST;
    if (name_is(s, nlen, "Content-Length")) {
        if (++*content_lengths > 1)
            return HTTPFRAME_DUPLICATE_CONTENT_LENGTH;
        if (v == end || end - v > 18)
            return HTTPFRAME_BAD_CONTENT_LENGTH;
        uint64_t n = 0;
        for (const char *p = v; p < end; p++) {
            if (*p < '0' || *p > '9')
                return HTTPFRAME_BAD_CONTENT_LENGTH;
            n = n * 10 + (uint64_t)(*p - '0');
        }
        if (lim->max_body_bytes && n > lim->max_body_bytes)
            return HTTPFRAME_BAD_CONTENT_LENGTH;
        head->content_length = n;
    }
    return HTTPFRAME_OK;
}

enum httpframe_verdict httpframe_check(const char *buf, size_t len, const struct httpframe_limits *lim,
                                       struct httpframe_head *head, enum httpframe_error *error)
{
    memset(head, 0, sizeof(*head));
    *error = HTTPFRAME_OK;
    size_t pos = 0;
    /* Empty lines before the request line are ignored. */
    while (pos < len && (buf[pos] == '\n' || (buf[pos] == '\r' && pos + 1 < len && buf[pos + 1] == '\n'))) {
        if (buf[pos] == '\n' && !lim->allow_bare_lf) {
            *error = HTTPFRAME_BARE_LF;
            return HTTPFRAME_BAD;
        }
        pos += buf[pos] == '\r' ? 2 : 1;
    }
    head->skipped = pos;
    size_t start = pos;
    /* Bounded by the limit whether complete or not: a head that never ends
     * must not be buffered without end. A whole head may take the bound
     * plus the CRLF of its empty line, so an unfinished one is refused
     * only once it has that many bytes (one fewer could still finish). */
    size_t scan = len;
    if (lim->max_head_bytes && scan - start > lim->max_head_bytes + 2)
        scan = start + lim->max_head_bytes + 2;

    struct line l;
    int rc = next_line(buf, scan, &pos, lim, &l);
    if (rc == 0) {
        if (scan < len || (lim->max_head_bytes && len - start >= lim->max_head_bytes + 2)) {
            *error = HTTPFRAME_HEAD_TOO_LARGE;
            return HTTPFRAME_BAD;
        }
        /* Before the line is whole, refuse what can already be told wrong. */
        return HTTPFRAME_NEED_MORE;
    }
    if (rc < 0) {
        *error = HTTPFRAME_BARE_LF;
        return HTTPFRAME_BAD;
    }
    int http11 = 0;
    enum httpframe_error e = check_request_line(&l, &http11);
    int content_lengths = 0, hosts = 0;
    while (e == HTTPFRAME_OK) {
        rc = next_line(buf, scan, &pos, lim, &l);
        if (rc == 0) {
            if (scan < len || (lim->max_head_bytes && len - start >= lim->max_head_bytes + 2))
                e = HTTPFRAME_HEAD_TOO_LARGE;
            else
                return HTTPFRAME_NEED_MORE;
        } else if (rc < 0) {
            e = HTTPFRAME_BARE_LF;
        } else if (l.len == 0) {
            break; /* the empty line: the head is whole */
        } else {
            e = check_field(&l, lim, head, &content_lengths, &hosts);
        }
    }
    if (e == HTTPFRAME_OK && http11 && hosts == 0)
        e = HTTPFRAME_NO_HOST;
    if (e == HTTPFRAME_OK && lim->max_head_bytes && pos - start > lim->max_head_bytes + 2)
        e = HTTPFRAME_HEAD_TOO_LARGE;
    if (e != HTTPFRAME_OK) {
        *error = e;
        return HTTPFRAME_BAD;
    }
    head->http11 = http11;
    head->head_len = pos;
    return HTTPFRAME_HEAD_OK;
}
