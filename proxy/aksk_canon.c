/*
 * aksk_canon: the pieces of SDK-HMAC-SHA256's canonical request (the
 * contract is in aksk_canon.h), shared by signing and verifying (aksk.c).
 */
#define _GNU_SOURCE /* strndup */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/crypto.h>

#include "aksk_canon.h"

/* ------------------------------------------------------------------------ */
/* A growable string; a failed allocation sticks, checked once at the end.  */
/* ------------------------------------------------------------------------ */

void aksk_strbuf_add(struct strbuf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        char *grown;

        while (cap < b->len + n + 1)
            cap *= 2;
        if ((grown = realloc(b->data, cap)) == NULL) {
            b->failed = 1;
            return;
        }
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void aksk_strbuf_adds(struct strbuf *b, const char *s)
{
    aksk_strbuf_add(b, s, strlen(s));
}

void aksk_strbuf_free(struct strbuf *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}

/* ------------------------------------------------------------------------ */
/* Percent-encoding                                                         */
/* ------------------------------------------------------------------------ */

static int is_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
           c == '~' || c == '.';
}

/*
 * Decode the `n` bytes at `in` into a new buffer (*out, caller frees;
 * *outlen bytes, NUL-terminated, possibly holding NULs). Returns 0, or -1
 * for a '%' not followed by two hex digits or no memory.
 */
static int percent_decode(const char *in, size_t n, char **out, size_t *outlen)
{
    char *decoded = malloc(n + 1);
    size_t i, k = 0;

    if (decoded == NULL)
        return -1;
    for (i = 0; i < n; i++) {
        if (in[i] != '%') {
            decoded[k++] = in[i];
            continue;
        }
        if (i + 2 >= n || OPENSSL_hexchar2int((unsigned char)in[i + 1]) < 0 ||
            OPENSSL_hexchar2int((unsigned char)in[i + 2]) < 0)
            goto bad;
        decoded[k++] =
            (char)(OPENSSL_hexchar2int((unsigned char)in[i + 1]) * 16 + OPENSSL_hexchar2int((unsigned char)in[i + 2]));
        i += 2;
    }
    decoded[k] = '\0';
    *out = decoded;
    *outlen = k;
    return 0;
bad:
    free(decoded);
    return -1;
}

static void percent_encode(struct strbuf *b, const char *in, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t i;

    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)in[i];
        char escaped[3] = {'%', hex[c >> 4], hex[c & 0xf]};

        if (is_unreserved(c))
            aksk_strbuf_add(b, (const char *)&in[i], 1);
        else
            aksk_strbuf_add(b, escaped, 3);
    }
}

/* Decode then encode `n` bytes at `in` into `b`; -1 on a bad escape. */
static int percent_reencode(struct strbuf *b, const char *in, size_t n)
{
    char *decoded;
    size_t decoded_len;

    if (percent_decode(in, n, &decoded, &decoded_len) != 0)
        return -1;
    percent_encode(b, decoded, decoded_len);
    free(decoded);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Canonical URI and query                                                  */
/* ------------------------------------------------------------------------ */

int aksk_canonical_uri(struct strbuf *b, const char *path)
{
    const char *segment = path;

    for (;;) {
        size_t n = strcspn(segment, "/");

        if (percent_reencode(b, segment, n) != 0)
            return -1;
        if (segment[n] == '\0')
            break;
        aksk_strbuf_add(b, "/", 1);
        segment += n + 1;
    }
    if (b->len == 0 || b->data[b->len - 1] != '/')
        aksk_strbuf_add(b, "/", 1);
    return 0;
}

/* One decoded query pair; both strings owned. */
struct query_pair {
    char *key;
    size_t key_len;
    char *value;
    size_t value_len;
};

int aksk_bytes_compare(const char *a, size_t alen, const char *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);

    if (c != 0)
        return c;
    return alen < blen ? -1 : alen > blen;
}

static int query_pair_compare(const void *a, const void *b)
{
    const struct query_pair *left = a, *right = b;
    int c = aksk_bytes_compare(left->key, left->key_len, right->key, right->key_len);

    return c != 0 ? c : aksk_bytes_compare(left->value, left->value_len, right->value, right->value_len);
}

int aksk_canonical_query(struct strbuf *b, const char *query)
{
    struct query_pair *pairs = NULL;
    size_t npairs = 0, cap = 0, i;
    const char *p = query;
    int rc = -1;

    while (query != NULL) {
        size_t n = strcspn(p, "&");
        const char *eq = memchr(p, '=', n);
        size_t key_n = eq ? (size_t)(eq - p) : n;
        struct query_pair pair = {0};

        if (key_n > 0) {
            if (npairs == cap) {
                size_t grown_cap = cap ? cap * 2 : 8;
                struct query_pair *grown = realloc(pairs, grown_cap * sizeof(*grown));

                if (grown == NULL)
                    goto out;
                pairs = grown;
                cap = grown_cap;
            }
            if (percent_decode(p, key_n, &pair.key, &pair.key_len) != 0)
                goto out;
            if (percent_decode(eq ? eq + 1 : p + n, eq ? n - key_n - 1 : 0, &pair.value, &pair.value_len) != 0) {
                free(pair.key);
                goto out;
            }
            pairs[npairs++] = pair;
        }
        if (p[n] == '\0')
            break;
        p += n + 1;
    }
    if (npairs > 1)
        qsort(pairs, npairs, sizeof(*pairs), query_pair_compare);
    for (i = 0; i < npairs; i++) {
        if (i > 0)
            aksk_strbuf_add(b, "&", 1);
        percent_encode(b, pairs[i].key, pairs[i].key_len);
        aksk_strbuf_add(b, "=", 1);
        percent_encode(b, pairs[i].value, pairs[i].value_len);
    }
    rc = 0;
out:
    for (i = 0; i < npairs; i++) {
        free(pairs[i].key);
        free(pairs[i].value);
    }
    free(pairs);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Signed headers                                                           */
/* ------------------------------------------------------------------------ */

int aksk_is_token_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* A field value may hold visible bytes, blanks and obs-text; no CR or LF,
 * which would let a value start a header of its own. */
int aksk_header_value_valid(const char *value)
{
    for (; *value != '\0'; value++) {
        unsigned char c = (unsigned char)*value;

        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return 0;
    }
    return 1;
}

int aksk_signed_header_compare(const void *a, const void *b)
{
    const struct signed_header *left = a, *right = b;

    return strcmp(left->name, right->name);
}

/* Add `name` (lowercased) with `value` trimmed of blanks; -1 on no memory. */
int aksk_signed_header_add(struct signed_header *list, size_t *count, const char *name, const char *value)
{
    struct signed_header *h = &list[*count];
    size_t len = strlen(value), i;

    if ((h->name = strdup(name)) == NULL)
        return -1;
    for (i = 0; h->name[i] != '\0'; i++)
        if (h->name[i] >= 'A' && h->name[i] <= 'Z')
            h->name[i] = (char)(h->name[i] - 'A' + 'a');
    while (len > 0 && (*value == ' ' || *value == '\t')) {
        value++;
        len--;
    }
    while (len > 0 && (value[len - 1] == ' ' || value[len - 1] == '\t'))
        len--;
    h->value = value;
    h->value_len = len;
    (*count)++;
    return 0;
}

void aksk_signed_headers_free(struct signed_header *list, size_t count)
{
    size_t i;

    for (i = 0; list != NULL && i < count; i++)
        free(list[i].name);
    free(list);
}

/* ------------------------------------------------------------------------ */
/* Checks on what the caller gives                                          */
/* ------------------------------------------------------------------------ */

int aksk_method_valid(const char *method)
{
    size_t n = method ? strlen(method) : 0, i;

    if (n == 0 || n > 16)
        return 0;
    for (i = 0; i < n; i++)
        if (method[i] < 'A' || method[i] > 'Z')
            return 0;
    return 1;
}

int aksk_sdk_date_valid(const char *date)
{
    size_t i;

    if (date == NULL || strlen(date) != AKSK_CANON_DATE_LEN)
        return 0;
    for (i = 0; i < AKSK_CANON_DATE_LEN; i++) {
        char want = i == 8 ? 'T' : i == 15 ? 'Z' : 'd';

        if (want == 'd' ? (date[i] < '0' || date[i] > '9') : date[i] != want)
            return 0;
    }
    return 1;
}

/* Printable ASCII without blanks or commas: it sits inside the
 * comma-separated Authorization value. */
int aksk_access_key_valid(const char *ak)
{
    if (ak == NULL || *ak == '\0')
        return 0;
    for (; *ak != '\0'; ak++)
        if (*ak <= 0x20 || *ak >= 0x7f || *ak == ',')
            return 0;
    return 1;
}

int aksk_is_managed_header(const char *name)
{
    return strcasecmp(name, "host") == 0 || strcasecmp(name, "x-sdk-date") == 0 ||
           strcasecmp(name, "x-project-id") == 0;
}
