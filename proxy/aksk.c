/*
 * aksk: SDK-HMAC-SHA256 request signing and verifying (the contract is in
 * aksk.h; the canonical request's pieces are in aksk_canon.c).
 *
 * The canonical request is built in a growable buffer (struct strbuf) that
 * this file owns from start to end of one aksk_sign_traced call; the URL
 * is taken apart by libcurl's URL API, so that the host, port and path
 * signed are the ones libcurl will send.
 */
#define _GNU_SOURCE /* strptime, timegm, strndup */
#include "aksk.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <openssl/crypto.h>

#include "aksk_canon.h"
#include "digest.h"
#include "encoding.h"

_Static_assert(AKSK_CANON_DATE_LEN == AKSK_DATE_SIZE - 1, "one X-Sdk-Date length");

static void set_error(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void set_error(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------------------ */
/* Signing                                                                  */
/* ------------------------------------------------------------------------ */

int aksk_format_date(time_t t, char out[AKSK_DATE_SIZE])
{
    struct tm tm;

    out[0] = '\0';
    if (gmtime_r(&t, &tm) == NULL || tm.tm_year + 1900 < 0 || tm.tm_year + 1900 > 9999)
        return -1;
    if (strftime(out, AKSK_DATE_SIZE, "%Y%m%dT%H%M%SZ", &tm) != AKSK_DATE_SIZE - 1) {
        out[0] = '\0';
        return -1;
    }
    return 0;
}

void aksk_trace_free(struct aksk_trace *t)
{
    if (t == NULL)
        return;
    free(t->canonical_request);
    free(t->string_to_sign);
    free(t->signed_headers);
    memset(t, 0, sizeof(*t));
}

/* The parts of the URL that are signed, each owned (curl_free). */
struct url_parts {
    char *scheme;
    char *host;
    char *port; /* NULL: none in the URL */
    char *path;
    char *query; /* NULL: none */
    char host_header[512];
};

static void url_parts_free(struct url_parts *u)
{
    curl_free(u->scheme);
    curl_free(u->host);
    curl_free(u->port);
    curl_free(u->path);
    curl_free(u->query);
    memset(u, 0, sizeof(*u));
}

static int url_parse(const char *url, struct url_parts *u, char *err, size_t errlen)
{
    CURLU *h = curl_url();
    char *user = NULL;
    CURLUcode rc;
    int default_port, n;
    int result = -1;

    memset(u, 0, sizeof(*u));
    if (h == NULL) {
        set_error(err, errlen, "out of memory");
        return -1;
    }
    if (url == NULL) {
        set_error(err, errlen, "no URL given");
        goto out;
    }
    /* No flags: a URL libcurl would refuse to fetch is refused here too. */
    if ((rc = curl_url_set(h, CURLUPART_URL, url, 0)) != CURLUE_OK) {
        set_error(err, errlen, "the URL cannot be parsed (libcurl URL error %d)", (int)rc);
        goto out;
    }
    if (curl_url_get(h, CURLUPART_SCHEME, &u->scheme, 0) != CURLUE_OK ||
        curl_url_get(h, CURLUPART_HOST, &u->host, 0) != CURLUE_OK ||
        curl_url_get(h, CURLUPART_PATH, &u->path, 0) != CURLUE_OK) {
        set_error(err, errlen, "the URL lacks a scheme, host or path");
        goto out;
    }
    if (strcmp(u->scheme, "https") != 0 && strcmp(u->scheme, "http") != 0) {
        set_error(err, errlen, "the URL's scheme must be http or https");
        goto out;
    }
    if (curl_url_get(h, CURLUPART_USER, &user, 0) == CURLUE_OK) {
        set_error(err, errlen, "the URL must not carry a user name or password");
        goto out;
    }
    rc = curl_url_get(h, CURLUPART_PORT, &u->port, 0);
    if (rc != CURLUE_OK && rc != CURLUE_NO_PORT)
        goto no_memory;
    rc = curl_url_get(h, CURLUPART_QUERY, &u->query, 0);
    if (rc != CURLUE_OK && rc != CURLUE_NO_QUERY)
        goto no_memory;

    /* RFC 9110 7.2: the port is left out of Host when it is the default. */
    default_port = strcmp(u->scheme, "https") == 0 ? 443 : 80;
    if (u->port != NULL && atoi(u->port) != default_port)
        n = snprintf(u->host_header, sizeof(u->host_header), "%s:%s", u->host, u->port);
    else
        n = snprintf(u->host_header, sizeof(u->host_header), "%s", u->host);
    if (n < 0 || (size_t)n >= sizeof(u->host_header)) {
        set_error(err, errlen, "the URL's host is too long");
        goto out;
    }
    result = 0;
    goto out;
no_memory:
    set_error(err, errlen, "out of memory");
out:
    curl_free(user);
    curl_url_cleanup(h);
    if (result != 0)
        url_parts_free(u);
    return result;
}

/* Check every field of `r` but the URL; -1 with a message. */
static int request_check(const struct aksk_request *r, char *err, size_t errlen)
{
    size_t i, k;

    if (!aksk_method_valid(r->method)) {
        set_error(err, errlen, "the method must be 1 to 16 uppercase letters");
        return -1;
    }
    if (!aksk_access_key_valid(r->ak)) {
        set_error(err, errlen, "the access key must be printable ASCII without blanks or commas");
        return -1;
    }
    if (r->sk == NULL || r->sk[0] == '\0') {
        set_error(err, errlen, "the secret key is empty");
        return -1;
    }
    if (!aksk_sdk_date_valid(r->sdk_date)) {
        set_error(err, errlen, "the X-Sdk-Date value must read YYYYMMDDTHHMMSSZ");
        return -1;
    }
    if (r->project_id != NULL && (r->project_id[0] == '\0' || !aksk_header_value_valid(r->project_id))) {
        set_error(err, errlen, "the project id must be a non-empty header value");
        return -1;
    }
    if (r->header_count > 0 && r->headers == NULL) {
        set_error(err, errlen, "header_count is %zu but no headers are given", r->header_count);
        return -1;
    }
    if (r->body == NULL && r->body_len > 0) {
        set_error(err, errlen, "body_len is %zu but no body is given", r->body_len);
        return -1;
    }
    for (i = 0; i < r->header_count; i++) {
        const char *name = r->headers[i].name;

        for (k = 0; name != NULL && name[k] != '\0' && aksk_is_token_char((unsigned char)name[k]); k++)
            ;
        if (name == NULL || k == 0 || name[k] != '\0' || k > 128) {
            set_error(err, errlen, "extra header %zu: the name must be a token of 1 to 128 characters", i + 1);
            return -1;
        }
        if (aksk_is_managed_header(name)) {
            set_error(err, errlen, "extra header %s: set by the signer, not by the caller", name);
            return -1;
        }
        if (r->headers[i].value == NULL || !aksk_header_value_valid(r->headers[i].value)) {
            set_error(err, errlen, "extra header %s: the value is missing or holds control characters", name);
            return -1;
        }
    }
    return 0;
}

int aksk_sign_traced(const struct aksk_request *r, char *authorization, size_t len, struct aksk_trace *trace, char *err,
                     size_t errlen)
{
    struct url_parts url = {0};
    struct signed_header *headers = NULL;
    size_t nheaders = 0, i;
    struct strbuf canonical = {0}, names = {0}, to_sign = {0};
    char body_hash[DIGEST_SHA256_HEX_SIZE], request_hash[DIGEST_SHA256_HEX_SIZE];
    unsigned char mac[DIGEST_SHA256_LEN];
    char signature[DIGEST_SHA256_HEX_SIZE];
    int n, rc = -1;

    if (authorization != NULL && len > 0)
        authorization[0] = '\0';
    if (trace != NULL)
        memset(trace, 0, sizeof(*trace));
    if (r == NULL || authorization == NULL) {
        set_error(err, errlen, "nothing to sign or nowhere to write");
        return -1;
    }
    if (request_check(r, err, errlen) != 0 || url_parse(r->url, &url, err, errlen) != 0)
        return -1;

    /* Headers: host, x-sdk-date, x-project-id, then the caller's. */
    if ((headers = calloc(r->header_count + 3, sizeof(*headers))) == NULL)
        goto no_memory;
    if ((!(r->flags & AKSK_OMIT_HOST) && aksk_signed_header_add(headers, &nheaders, "host", url.host_header) != 0) ||
        aksk_signed_header_add(headers, &nheaders, "x-sdk-date", r->sdk_date) != 0 ||
        (r->project_id != NULL && aksk_signed_header_add(headers, &nheaders, "x-project-id", r->project_id) != 0))
        goto no_memory;
    for (i = 0; i < r->header_count; i++)
        if (aksk_signed_header_add(headers, &nheaders, r->headers[i].name, r->headers[i].value) != 0)
            goto no_memory;
    qsort(headers, nheaders, sizeof(*headers), aksk_signed_header_compare);
    for (i = 1; i < nheaders; i++) {
        if (strcmp(headers[i - 1].name, headers[i].name) == 0) {
            set_error(err, errlen, "extra header %s is given twice", headers[i].name);
            goto out;
        }
    }

    /* The canonical request. */
    aksk_strbuf_adds(&canonical, r->method);
    aksk_strbuf_add(&canonical, "\n", 1);
    if (aksk_canonical_uri(&canonical, url.path) != 0) {
        set_error(err, errlen, "the URL's path holds a '%%' not followed by two hex digits");
        goto out;
    }
    aksk_strbuf_add(&canonical, "\n", 1);
    if (aksk_canonical_query(&canonical, url.query) != 0) {
        if (!canonical.failed)
            set_error(err, errlen, "the URL's query holds a '%%' not followed by two hex digits");
        goto out;
    }
    aksk_strbuf_add(&canonical, "\n", 1);
    for (i = 0; i < nheaders; i++) {
        aksk_strbuf_adds(&canonical, headers[i].name);
        aksk_strbuf_add(&canonical, ":", 1);
        aksk_strbuf_add(&canonical, headers[i].value, headers[i].value_len);
        aksk_strbuf_add(&canonical, "\n", 1);
        if (i > 0)
            aksk_strbuf_add(&names, ";", 1);
        aksk_strbuf_adds(&names, headers[i].name);
    }
    aksk_strbuf_add(&canonical, "\n", 1);
    aksk_strbuf_add(&canonical, names.data ? names.data : "", names.len);
    aksk_strbuf_add(&canonical, "\n", 1);
    if (digest_sha256_hex(r->body, r->body_len, body_hash) != 0)
        goto crypto_failed;
    aksk_strbuf_adds(&canonical, body_hash);
    if (canonical.failed || names.failed)
        goto no_memory;

    /* The string to sign, and its HMAC under the SK. */
    if (digest_sha256_hex(canonical.data, canonical.len, request_hash) != 0)
        goto crypto_failed;
    aksk_strbuf_adds(&to_sign, AKSK_ALGORITHM "\n");
    aksk_strbuf_adds(&to_sign, r->sdk_date);
    aksk_strbuf_add(&to_sign, "\n", 1);
    aksk_strbuf_adds(&to_sign, request_hash);
    if (to_sign.failed)
        goto no_memory;
    if (digest_hmac_sha256(r->sk, strlen(r->sk), to_sign.data, to_sign.len, mac) != 0)
        goto crypto_failed;
    encoding_hex(mac, sizeof(mac), signature);

    n = snprintf(authorization, len, AKSK_ALGORITHM " Access=%s, SignedHeaders=%s, Signature=%s", r->ak, names.data,
                 signature);
    if (n < 0 || (size_t)n >= len) {
        authorization[0] = '\0';
        set_error(err, errlen, "the Authorization value needs %d bytes, the buffer has %zu", n + 1, len);
        goto out;
    }
    if (trace != NULL) {
        trace->canonical_request = canonical.data;
        trace->string_to_sign = to_sign.data;
        trace->signed_headers = names.data;
        canonical.data = to_sign.data = names.data = NULL;
    }
    rc = 0;
    goto out;

crypto_failed:
    set_error(err, errlen, "the crypto library failed to hash");
    goto out;
no_memory:
    set_error(err, errlen, "out of memory");
out:
    /* The MAC is the SK's work: leave no copy of it behind. */
    OPENSSL_cleanse(mac, sizeof(mac));
    OPENSSL_cleanse(signature, sizeof(signature));
    aksk_strbuf_free(&canonical);
    aksk_strbuf_free(&names);
    aksk_strbuf_free(&to_sign);
    aksk_signed_headers_free(headers, nheaders);
    url_parts_free(&url);
    return rc;
}

int aksk_sign(const struct aksk_request *r, char *authorization, size_t len, char *err, size_t errlen)
{
    return aksk_sign_traced(r, authorization, len, NULL, err, errlen);
}

/* ------------------------------------------------------------------------ */
/* Verifying                                                                */
/* ------------------------------------------------------------------------ */

void aksk_presented_free(struct aksk_presented *p)
{
    if (p == NULL)
        return;
    free(p->signed_headers);
    memset(p, 0, sizeof(*p));
}

/* Copy `n` bytes of `s` into `out` (`size` bytes) when they fit; 0 or -1. */
static int copy_part(char *out, size_t size, const char *s, size_t n)
{
    if (n == 0 || n >= size)
        return -1;
    memcpy(out, s, n);
    out[n] = '\0';
    return 0;
}

int aksk_presented_parse(const char *value, struct aksk_presented *p)
{
    static const char scheme[] = AKSK_ALGORITHM " ";
    int have_access = 0, have_names = 0, have_signature = 0;

    memset(p, 0, sizeof(*p));
    if (value == NULL)
        return -1;
    while (*value == ' ' || *value == '\t')
        value++;
    if (strncmp(value, scheme, strlen(scheme)) != 0)
        return -1;
    value += strlen(scheme);
    for (;;) {
        size_t n = strcspn(value, ",");
        const char *eq = memchr(value, '=', n);
        size_t name_n, rest_n;
        const char *rest;

        while (n > 0 && (*value == ' ' || *value == '\t')) {
            value++;
            n--;
            eq = memchr(value, '=', n);
        }
        if (eq == NULL)
            goto bad;
        name_n = (size_t)(eq - value);
        rest = eq + 1;
        rest_n = n - name_n - 1;
        while (rest_n > 0 && (rest[rest_n - 1] == ' ' || rest[rest_n - 1] == '\t'))
            rest_n--;
        if (name_n == 6 && strncmp(value, "Access", 6) == 0 && !have_access) {
            if (copy_part(p->access, sizeof(p->access), rest, rest_n) != 0)
                goto bad;
            have_access = 1;
        } else if (name_n == 13 && strncmp(value, "SignedHeaders", 13) == 0 && !have_names) {
            if (rest_n == 0 || (p->signed_headers = strndup(rest, rest_n)) == NULL)
                goto bad;
            have_names = 1;
        } else if (name_n == 9 && strncmp(value, "Signature", 9) == 0 && !have_signature) {
            if (copy_part(p->signature, sizeof(p->signature), rest, rest_n) != 0)
                goto bad;
            have_signature = 1;
        } else {
            goto bad;
        }
        if (value[n] == '\0')
            break;
        value += n + 1;
    }
    if (have_access && have_names && have_signature && aksk_access_key_valid(p->access))
        return 0;
bad:
    aksk_presented_free(p);
    return -1;
}

/* X-Sdk-Date as a time, or -1. */
static int sdk_date_parse(const char *text, time_t *when)
{
    struct tm tm = {0};
    char again[AKSK_DATE_SIZE];

    if (!aksk_sdk_date_valid(text) || strptime(text, "%Y%m%dT%H%M%SZ", &tm) == NULL)
        return -1;
    *when = timegm(&tm);
    /* strptime lets "20261399..." through to timegm, which would roll it over. */
    if (aksk_format_date(*when, again) != 0 || strcmp(again, text) != 0)
        return -1;
    return 0;
}

enum aksk_verdict aksk_verify(const struct aksk_presented *p, const struct aksk_received *r, const void *sk,
                              size_t sk_len)
{
    struct strbuf canonical = {0}, to_sign = {0};
    char body_hash[DIGEST_SHA256_HEX_SIZE], request_hash[DIGEST_SHA256_HEX_SIZE];
    char expected[DIGEST_SHA256_HEX_SIZE];
    unsigned char mac[DIGEST_SHA256_LEN];
    const char *sdk_date = r->header(r->header_arg, "x-sdk-date");
    const char *name = p->signed_headers, *previous = NULL;
    size_t previous_n = 0;
    int has_host = 0, has_date = 0, unsigned_payload = 0;
    enum aksk_verdict verdict = AKSK_MALFORMED;
    time_t when;

    memset(mac, 0, sizeof(mac));
    memset(expected, 0, sizeof(expected));
    if (sdk_date_parse(sdk_date, &when) != 0 ||
        (when > r->now ? when - r->now : r->now - when) > (time_t)AKSK_MAX_SKEW_S)
        return AKSK_EXPIRED;
    if (!aksk_method_valid(r->method) || r->path == NULL || r->path[0] != '/')
        return AKSK_MALFORMED;

    aksk_strbuf_adds(&canonical, r->method);
    aksk_strbuf_add(&canonical, "\n", 1);
    if (aksk_canonical_uri(&canonical, r->path) != 0)
        goto out;
    aksk_strbuf_add(&canonical, "\n", 1);
    if (aksk_canonical_query(&canonical, r->query) != 0)
        goto out;
    aksk_strbuf_add(&canonical, "\n", 1);
    /* The headers in the order SignedHeaders names them: lowercase, sorted, each once. */
    for (;;) {
        size_t n = strcspn(name, ";");
        char lower[128];
        const char *value;
        size_t len;

        if (n == 0 || n >= sizeof(lower))
            goto out;
        for (size_t i = 0; i < n; i++)
            if (!aksk_is_token_char((unsigned char)name[i]) || (name[i] >= 'A' && name[i] <= 'Z'))
                goto out;
        if (previous != NULL && aksk_bytes_compare(previous, previous_n, name, n) >= 0)
            goto out;
        memcpy(lower, name, n);
        lower[n] = '\0';
        if ((value = r->header(r->header_arg, lower)) == NULL)
            goto out;
        has_host |= strcmp(lower, "host") == 0;
        has_date |= strcmp(lower, "x-sdk-date") == 0;
        unsigned_payload |= strcmp(lower, "x-sdk-content-sha256") == 0 && strcmp(value, "UNSIGNED-PAYLOAD") == 0;
        while (*value == ' ' || *value == '\t')
            value++;
        len = strlen(value);
        while (len > 0 && (value[len - 1] == ' ' || value[len - 1] == '\t'))
            len--;
        aksk_strbuf_add(&canonical, lower, n);
        aksk_strbuf_add(&canonical, ":", 1);
        aksk_strbuf_add(&canonical, value, len);
        aksk_strbuf_add(&canonical, "\n", 1);
        previous = name;
        previous_n = n;
        if (name[n] == '\0')
            break;
        name += n + 1;
    }
    if (!has_host || !has_date)
        goto out;
    aksk_strbuf_add(&canonical, "\n", 1);
    aksk_strbuf_adds(&canonical, p->signed_headers);
    aksk_strbuf_add(&canonical, "\n", 1);
    if (unsigned_payload)
        snprintf(body_hash, sizeof(body_hash), "UNSIGNED-PAYLOAD");
    else if (digest_sha256_hex(r->body, r->body_len, body_hash) != 0)
        goto out;
    aksk_strbuf_adds(&canonical, body_hash);
    if (canonical.failed || digest_sha256_hex(canonical.data, canonical.len, request_hash) != 0)
        goto out;
    aksk_strbuf_adds(&to_sign, AKSK_ALGORITHM "\n");
    aksk_strbuf_adds(&to_sign, sdk_date);
    aksk_strbuf_add(&to_sign, "\n", 1);
    aksk_strbuf_adds(&to_sign, request_hash);
    if (to_sign.failed || digest_hmac_sha256(sk, sk_len, to_sign.data, to_sign.len, mac) != 0)
        goto out;
    encoding_hex(mac, sizeof(mac), expected);
    verdict = strlen(p->signature) == DIGEST_SHA256_HEX_SIZE - 1 &&
                      CRYPTO_memcmp(p->signature, expected, DIGEST_SHA256_HEX_SIZE - 1) == 0
                  ? AKSK_VERIFIED
                  : AKSK_MISMATCH;
out:
    OPENSSL_cleanse(mac, sizeof(mac));
    OPENSSL_cleanse(expected, sizeof(expected));
    aksk_strbuf_free(&canonical);
    aksk_strbuf_free(&to_sign);
    return verdict;
}
