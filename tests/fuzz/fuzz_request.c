/*
 * libFuzzer target for what the gateway does with a request's target and
 * Host header before anything else (proxy/gateway.c, gateway_handle): the
 * request-target is parsed as evhttp parses an incoming request line
 * (evhttp_uri_parse_with_flags with EVHTTP_URI_NONCONFORMANT, libevent 2.1),
 * its path taken with evhttp_uri_get_path(), and ruleset_match() finds the
 * rule for the Host header and that path.
 *
 * Framing first: the input, whole and as raw bytes, is also a request head
 * for httpframe_check (the strict RFC 9112 checks the frontend applies
 * before evhttp sees a byte), with bare LF refused and allowed. Its oracle:
 *
 *  - HEAD_OK: head_len is within the input and ends the head with an empty
 *    line (CRLF CRLF, or a bare-LF form when those are allowed); without
 *    bare LF every LF of the head follows a CR; the head, read here with a
 *    plain line splitter, has at most one Content-Length and content_length
 *    is its value (0 without one), no Transfer-Encoding, no field named as
 *    the reserved marker, and an HTTP/1.1 head has exactly one Host;
 *  - the verdict is stable as bytes arrive: a prefix of the input is never
 *    HEAD_OK unless the input is, with the same head; a prefix refused stays
 *    refused; and bytes added after a whole head or a refusal change nothing.
 *
 * Then routing: the input is "HOST\nTARGET", or TARGET alone (no Host header). A target is
 * what lies between the method and the version on the request line, so it
 * holds no newline and no NUL; the Host value is trimmed as evhttp trims
 * header values. Rules: every shipped rule (fuzz_shipped.h), and the seed
 * rule again with a required host (elb.jobgate.internal), so that host
 * matching is exercised too. Each is tried with no Host, the input's, and
 * "ELB.jobgate.internal:8443".
 *
 * The checks, beyond "no crash, no leak":
 *
 *  - the path evhttp gives holds no '?' or '#' (the query never reaches the
 *    route, the cache key or upstream);
 *  - the rule found (or none) is the first whose host fits and whose route
 *    has the path's shape, written here from rules.h;
 *  - every match passes fuzz_oracle.h (values match their pattern as a
 *    whole, the route expands back to the path);
 *  - a matched value is non-empty, holds no '/', and for a pattern made of
 *    bracket classes and literals ("[0-9a-f]{32}", the uuid form, {chars,
 *    min, max}) only bytes of those classes, in the pattern's length range;
 *  - the upstream path built from a match starts with '/', has no empty,
 *    "." or ".." segment, and no byte that is a space, a control, '?' or '#'.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/http.h>

#include "httpframe.h"
#include "rules.h"
#include "fuzz_oracle.h"
#include "fuzz_shipped.h"

#define MAX_INPUT   8192
#define HOSTED_HOST "elb.jobgate.internal"

static struct ruleset *shipped;
static struct ruleset *hosted; /* elb-v1 with route.host set */

/* -------------------------------------------------------- pattern classes */

/* The bytes a pattern can match and its length range, for patterns made of
 * bracket classes and literal characters, each repeated {n} or {m,n} times. */
struct char_class {
    unsigned char allowed[256];
    size_t min, max;
};

/* Fill `c` for `pattern`. Returns 0, or -1 when the pattern is not of that simple form. */
static int simple_class(const char *pattern, struct char_class *c)
{
    memset(c, 0, sizeof(*c));
    const char *p = pattern;
    while (*p) {
        unsigned char set[256] = {0};
        if (*p == '[') {
            p++;
            if (*p == '^' || *p == ']')
                return -1;
            while (*p && *p != ']') {
                if (*p == '[' || *p == '\\')
                    return -1; /* [:class:], escapes: not modelled */
                unsigned char lo = (unsigned char)*p, hi = lo;
                if (p[1] == '-' && p[2] && p[2] != ']') {
                    hi = (unsigned char)p[2];
                    p += 2;
                }
                for (unsigned b = lo; b <= hi; b++)
                    set[b] = 1;
                p++;
            }
            if (*p != ']')
                return -1;
            p++;
        } else if (strchr(".*+?|()^$\\{}", *p)) {
            return -1;
        } else {
            set[(unsigned char)*p++] = 1;
        }
        size_t lo = 1, hi = 1;
        if (*p == '{') {
            char *end;
            lo = hi = strtoul(p + 1, &end, 10);
            if (*end == ',')
                hi = strtoul(end + 1, &end, 10);
            if (*end != '}' || hi < lo || hi > ROUTE_MAX_PATH)
                return -1;
            p = end + 1;
        }
        for (unsigned b = 0; b < 256; b++)
            c->allowed[b] |= set[b];
        c->min += lo;
        c->max += hi;
    }
    return 0;
}

/* ----------------------------------------------------------------- setup */

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *text = calloc(1, 65536);
    size_t n = text ? fread(text, 1, 65535, f) : 0;
    fclose(f);
    if (text && n == 0) {
        free(text);
        text = NULL;
    }
    return text;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    shipped = fuzz_shipped_rules();

    const char *srcdir = getenv("JOBGATE_SRCDIR");
    char path[4096];
    snprintf(path, sizeof(path), "%s/lua-free-rules/elb-v1.yaml", srcdir && *srcdir ? srcdir : ".");
    char *seed = read_file(path);
    const char *at = seed ? strstr(seed, "\nroute:\n") : NULL;
    if (!at) {
        fprintf(stderr, "fuzz_request: cannot read the seed rule's route from %s\n", path);
        exit(2);
    }
    size_t head = (size_t)(at - seed) + strlen("\nroute:\n");
    char *text = malloc(strlen(seed) + 64);
    memcpy(text, seed, head);
    sprintf(text + head, "  host: %s\n%s", HOSTED_HOST, seed + head);
    struct conf_diag d;
    conf_diag_init(&d);
    hosted = ruleset_load_string("elb-v1-hosted.yaml", text, &d);
    if (!hosted || !hosted->rules[0]->host) {
        fprintf(stderr, "fuzz_request: the seed rule with a host does not load: %s\n", d.count ? d.lines[0] : "?");
        exit(2);
    }
    conf_diag_free(&d);
    free(text);
    free(seed);

    /* The byte-class check must apply to the shipped patterns, or it checks nothing. */
    for (size_t k = 0; k < shipped->count; k++) {
        const struct route_template *t = &shipped->rules[k]->route;
        for (size_t i = 0; i < t->nparams; i++) {
            struct char_class c;
            if (simple_class(t->params[i].pattern, &c) != 0) {
                fprintf(stderr, "fuzz_request: rule '%s', {%s}: pattern '%s' is not classes and literals\n",
                        shipped->rules[k]->name, t->params[i].name, t->params[i].pattern);
                exit(2);
            }
        }
    }
    return 0;
}

/* --------------------------------------------------------------- checks */

static int host_fits(const struct rule *r, const char *host)
{
    if (!r->host)
        return 1;
    if (!host)
        return 0;
    size_t len = host[0] == '[' ? strcspn(host, "]") + 1 : strcspn(host, ":");
    return strlen(r->host) == len && strncasecmp(r->host, host, len) == 0;
}

static void check_values(const struct rule *r, const char *path, const struct route_match *m)
{
    for (size_t i = 0; i < r->route.nparams; i++) {
        const struct route_param *p = &r->route.params[i];
        const char *v = m->values[i];
        size_t n = strlen(v);
        FUZZ_CHECK(n > 0 && !strchr(v, '/'), "rule '%s', path '%s': {%s}='%s'", r->name, path, p->name, v);
        struct char_class c;
        if (simple_class(p->pattern, &c) != 0)
            continue;
        FUZZ_CHECK(n >= c.min && n <= c.max, "rule '%s', path '%s': {%s}='%s' is %zu bytes, pattern '%s'", r->name,
                   path, p->name, v, n, p->pattern);
        for (size_t j = 0; j < n; j++)
            FUZZ_CHECK(c.allowed[(unsigned char)v[j]], "rule '%s', path '%s': {%s}='%s' has byte 0x%02x, pattern '%s'",
                       r->name, path, p->name, v, (unsigned char)v[j], p->pattern);
    }
}

static void check_upstream_path(const struct rule *r, const struct route_match *m)
{
    char out[2 * ROUTE_MAX_PATH + 2];
    int n = rule_upstream_path(r, m, out, sizeof(out));
    FUZZ_CHECK(n > 0 && out[0] == '/', "rule '%s': upstream path (%d)", r->name, n);
    for (const char *s = out; *s;) {
        const char *seg = s + 1;
        size_t len = strcspn(seg, "/");
        FUZZ_CHECK(len > 0 && !(len == 1 && seg[0] == '.') && !(len == 2 && seg[0] == '.' && seg[1] == '.'),
                   "rule '%s': upstream path '%s' has an empty or dot segment", r->name, out);
        s = seg + len;
    }
    for (const unsigned char *b = (const unsigned char *)out; *b; b++)
        FUZZ_CHECK(*b > 0x20 && *b != 0x7f && *b != '?' && *b != '#', "rule '%s': upstream path '%s' has byte 0x%02x",
                   r->name, out, *b);
}

static void match_one(const struct ruleset *rs, const char *host, const char *path)
{
    const struct rule *r = (const struct rule *)1;
    struct route_match m;
    enum route_result res = ruleset_match(rs, host, path, &r, &m);

    const struct rule *want = NULL;
    enum route_result want_res = ROUTE_NO_MATCH;
    for (size_t i = 0; i < rs->count && !want; i++) {
        struct route_match ref;
        if (!host_fits(rs->rules[i], host))
            continue;
        want_res = route_template_match(&rs->rules[i]->route, path, &ref, NULL);
        if (want_res != ROUTE_NO_MATCH)
            want = rs->rules[i];
    }
    FUZZ_CHECK(res == want_res && r == want, "host '%s', path '%s': got %d (rule '%s'), want %d (rule '%s')",
               host ? host : "(none)", path, (int)res, r ? r->name : "-", (int)want_res, want ? want->name : "-");
    if (res == ROUTE_NO_MATCH)
        return;

    int bad = -1;
    if (res == ROUTE_BAD_PARAM) {
        struct route_match again;
        FUZZ_CHECK(route_template_match(&r->route, path, &again, &bad) == ROUTE_BAD_PARAM, "path '%s'", path);
    }
    fuzz_check_match(&r->route, path, res, &m, bad);
    if (res == ROUTE_MATCH) {
        check_values(r, path, &m);
        check_upstream_path(r, &m);
    }
}

/* -------------------------------------------------------------- the input */

/* A header value as evhttp keeps it: leading spaces and trailing whitespace gone. */
static char *trim_header_value(char *v)
{
    v += strspn(v, " ");
    size_t n = strlen(v);
    while (n > 0 && strchr(" \t\r", v[n - 1]))
        v[--n] = '\0';
    return v;
}

/* ---------------------------------------------------------------- framing */

static enum httpframe_verdict frame_check(const uint8_t *data, size_t len, const struct httpframe_limits *lim,
                                          struct httpframe_head *head, enum httpframe_error *err)
{
    /* An exact-size copy: a read past `len` is an ASan report. */
    char *copy = malloc(len ? len : 1);
    if (!copy)
        abort();
    memcpy(copy, data, len);
    enum httpframe_verdict v = httpframe_check(copy, len, lim, head, err);
    free(copy);
    return v;
}

/* The fields of a head httpframe passed, read with a plain line splitter. */
static void check_ok_head(const uint8_t *data, const struct httpframe_head *h, const struct httpframe_limits *lim)
{
    const char *p = (const char *)data + h->skipped, *end = (const char *)data + h->head_len;
    FUZZ_CHECK(h->head_len >= 2 && data[h->head_len - 1] == '\n', "head_len %zu does not end a line", h->head_len);
    if (!lim->allow_bare_lf) {
        FUZZ_CHECK(h->head_len >= 4 && memcmp(end - 4, "\r\n\r\n", 4) == 0, "head does not end in CRLF CRLF");
        for (const char *q = (const char *)data; q < end; q++)
            FUZZ_CHECK(*q != '\n' || (q > (const char *)data && q[-1] == '\r'), "a bare LF passed at %zu",
                       (size_t)(q - (const char *)data));
    }
    int lines = 0, cls = 0, hosts = 0;
    uint64_t cl = 0;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        FUZZ_CHECK(nl, "an unterminated line in a passed head");
        size_t n = (size_t)(nl - p);
        if (n && p[n - 1] == '\r')
            n--;
        if (lines++ == 0) { /* the request line */
            p = nl + 1;
            continue;
        }
        if (n == 0)
            break; /* the empty line */
        const char *colon = memchr(p, ':', n);
        FUZZ_CHECK(colon && colon > p, "a field line without a name passed");
        size_t nlen = (size_t)(colon - p);
        const char *v = colon + 1, *vend = p + n;
        while (v < vend && (*v == ' ' || *v == '\t'))
            v++;
        while (vend > v && (vend[-1] == ' ' || vend[-1] == '\t'))
            vend--;
        FUZZ_CHECK(!(nlen == 17 && strncasecmp(p, "transfer-encoding", 17) == 0), "Transfer-Encoding passed");
        FUZZ_CHECK(!(nlen == strlen(lim->reserved) && strncasecmp(p, lim->reserved, nlen) == 0),
                   "the reserved field passed");
        if (nlen == 4 && strncasecmp(p, "host", 4) == 0)
            hosts++;
        if (nlen == 14 && strncasecmp(p, "content-length", 14) == 0) {
            cls++;
            FUZZ_CHECK(v < vend, "an empty Content-Length passed");
            cl = 0;
            for (const char *d = v; d < vend; d++) {
                FUZZ_CHECK(*d >= '0' && *d <= '9', "a Content-Length that is not digits passed");
                cl = cl * 10 + (uint64_t)(*d - '0');
            }
        }
        p = nl + 1;
    }
    FUZZ_CHECK(cls <= 1, "%d Content-Length fields passed", cls);
    FUZZ_CHECK(h->content_length == cl, "content_length %llu, the field says %llu",
               (unsigned long long)h->content_length, (unsigned long long)cl);
    FUZZ_CHECK(!h->http11 || hosts == 1, "an HTTP/1.1 head with %d Host fields passed", hosts);
}

static void check_framing(const uint8_t *data, size_t size, const struct httpframe_limits *lim)
{
    struct httpframe_head h, hp;
    enum httpframe_error err, errp;
    enum httpframe_verdict v = frame_check(data, size, lim, &h, &err);
    FUZZ_CHECK(v == HTTPFRAME_NEED_MORE || v == HTTPFRAME_HEAD_OK || v == HTTPFRAME_BAD, "verdict %d", (int)v);
    FUZZ_CHECK((v == HTTPFRAME_BAD) == (err != HTTPFRAME_OK), "verdict %d with error %s", (int)v,
               httpframe_error_name(err));
    /* Never waits past the largest whole head: the caller keeps no more
     * than that (frontend.c drops the skipped empty lines and looks at
     * bound + 2 bytes at most). */
    if (v == HTTPFRAME_NEED_MORE)
        FUZZ_CHECK(size - h.skipped < lim->max_head_bytes + 2,
                   "%zu bytes (%zu skipped) still need more, past the bound %zu + 2", size, h.skipped,
                   lim->max_head_bytes);
    if (v == HTTPFRAME_HEAD_OK) {
        FUZZ_CHECK(h.head_len <= size && h.skipped < h.head_len, "head_len %zu skipped %zu of %zu", h.head_len,
                   h.skipped, size);
        check_ok_head(data, &h, lim);
    }
    /* Prefixes: a few cuts, and the bytes just around the end of the head. */
    size_t cuts[20], ncuts = 0;
    for (size_t i = 1; i <= 16 && ncuts < 16; i++)
        cuts[ncuts++] = size * i / 17;
    if (v == HTTPFRAME_HEAD_OK) {
        cuts[ncuts++] = h.head_len - 1;
        cuts[ncuts++] = h.head_len;
    }
    for (size_t i = 0; i < ncuts; i++) {
        size_t cut = cuts[i];
        if (cut > size)
            continue;
        enum httpframe_verdict vp = frame_check(data, cut, lim, &hp, &errp);
        if (vp == HTTPFRAME_HEAD_OK)
            FUZZ_CHECK(v == HTTPFRAME_HEAD_OK && hp.head_len == h.head_len && hp.content_length == h.content_length,
                       "the first %zu bytes are a whole head (%zu), all %zu bytes give verdict %d", cut, hp.head_len,
                       size, (int)v);
        if (vp == HTTPFRAME_BAD)
            FUZZ_CHECK(v == HTTPFRAME_BAD, "the first %zu bytes are refused (%s), all %zu bytes give verdict %d", cut,
                       httpframe_error_name(errp), size, (int)v);
        if (v == HTTPFRAME_HEAD_OK && cut < h.head_len)
            FUZZ_CHECK(vp == HTTPFRAME_NEED_MORE || vp == HTTPFRAME_BAD, "a head found before its end");
    }
    /* Longer: bytes after a whole head or a refusal change nothing. */
    if (v != HTTPFRAME_NEED_MORE) {
        uint8_t *more = malloc(size + 3);
        if (!more)
            abort();
        memcpy(more, data, size);
        memcpy(more + size, "G\r\n", 3);
        enum httpframe_verdict vl = frame_check(more, size + 3, lim, &hp, &errp);
        free(more);
        FUZZ_CHECK(vl == v, "3 more bytes turned verdict %d into %d", (int)v, (int)vl);
        if (v == HTTPFRAME_HEAD_OK)
            FUZZ_CHECK(hp.head_len == h.head_len && hp.content_length == h.content_length,
                       "3 more bytes moved the head");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > MAX_INPUT)
        return 0;
    static const struct httpframe_limits strict = {
        .max_head_bytes = 1024, .allow_bare_lf = 0, .reserved = "X-Jobgate-Refused", .max_body_bytes = 65536};
    static const struct httpframe_limits lenient = {
        .max_head_bytes = 1024, .allow_bare_lf = 1, .reserved = "X-Jobgate-Refused", .max_body_bytes = 65536};
    check_framing(data, size, &strict);
    check_framing(data, size, &lenient);
    if (memchr(data, '\0', size))
        return 0;
    char *buf = malloc(size + 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';

    char *host = NULL, *target = buf;
    char *nl = strchr(buf, '\n');
    if (nl) {
        *nl = '\0';
        host = trim_header_value(buf);
        target = nl + 1;
    }
    if (strchr(target, '\n')) {
        free(buf);
        return 0; /* not one request line */
    }

    struct evhttp_uri *uri = evhttp_uri_parse_with_flags(target, EVHTTP_URI_NONCONFORMANT);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    if (path && *path) {
        FUZZ_CHECK(!strpbrk(path, "?#"), "target '%s' gave the path '%s'", target, path);
        const char *hosts[] = {NULL, host, "ELB.jobgate.internal:8443"};
        for (size_t i = 0; i < sizeof(hosts) / sizeof(hosts[0]); i++) {
            if (i == 1 && !host)
                continue;
            match_one(shipped, hosts[i], path);
            match_one(hosted, hosts[i], path);
        }
    }
    if (uri)
        evhttp_uri_free(uri);
    free(buf);
    return 0;
}
