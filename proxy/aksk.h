/*
 * aksk: signing an upstream request with an access key (AK) and secret key
 * (SK), Huawei Cloud's "SDK-HMAC-SHA256" scheme (docs/huawei-api.md, section
 * 5), so that jobgate can call the cloud without an IAM token.
 *
 * The signature covers a canonical form of the request:
 *
 *     METHOD \n CANONICAL_URI \n CANONICAL_QUERY \n CANONICAL_HEADERS \n
 *     SIGNED_HEADERS \n hex(sha256(body))
 *
 *   - CANONICAL_URI: the URL's path split on '/', each segment
 *     percent-decoded then encoded again (every byte but A-Za-z0-9 _ - ~ .
 *     as %XX, uppercase), joined by '/', with a '/' appended unless it ends
 *     in one. Decoding first makes "/a%20b" and a path written "/a b" sign
 *     alike; a segment is split before it is decoded, so "%2F" stays part
 *     of its segment.
 *   - CANONICAL_QUERY: the pairs of the query split on '&' and on the first
 *     '=' (no '=': the value is empty; an empty key is left out), keys and
 *     values decoded then encoded as above ('+' is a literal plus), sorted
 *     by decoded key then decoded value (bytewise), joined "k=v" by '&'.
 *   - CANONICAL_HEADERS: "name:value\n" for each signed header, sorted by
 *     lowercase name, values with leading and trailing blanks removed.
 *   - SIGNED_HEADERS: those lowercase names joined by ';'.
 *
 * Then STRING_TO_SIGN = "SDK-HMAC-SHA256\n" X-Sdk-Date "\n"
 * hex(sha256(canonical request)), and the signature is
 * hex(HMAC-SHA256(SK, STRING_TO_SIGN)).
 *
 * The signed headers are host (the URL's host, with its port unless it is
 * the scheme's default: 443 for https, 80 for http; libcurl sends the same
 * Host), x-sdk-date, x-project-id when a project id is given, and the
 * caller's extra headers. The caller sends exactly those headers with those
 * values: X-Sdk-Date, X-Project-Id and Authorization are set by the caller
 * from the request and the result, not by this module.
 *
 * Error idiom: 0 or -1 with a message in `err` (which never holds the SK, a
 * signature or a header value: only names and what is wrong). The SK is
 * only read; the copies of secret material this module makes on its stack
 * are wiped (OPENSSL_cleanse) before it returns.
 */
#ifndef JOBGATE_AKSK_H
#define JOBGATE_AKSK_H

#include <stddef.h>
#include <time.h>

#define AKSK_ALGORITHM "SDK-HMAC-SHA256"

/* "YYYYMMDDTHHMMSSZ" and its NUL. */
#define AKSK_DATE_SIZE 17

/* Do not sign the Host header (the SDK's public test vector signs
 * x-sdk-date alone); a request sent to the cloud should sign it. */
#define AKSK_OMIT_HOST 0x1u

/* An extra header to sign; the caller sends it as it is given here. */
struct aksk_header {
    const char *name; /* a token (RFC 9110), any case; not Host, X-Sdk-Date, X-Project-Id */
    const char *value;
};

/* What to sign. Every pointer is borrowed for the duration of the call. */
struct aksk_request {
    const char *method;                /* "GET": uppercase letters */
    const char *url;                   /* http[s]://host[:port]/path[?query], parsed with libcurl's URL API */
    const char *ak;                    /* access key, printable, no blank or comma */
    const char *sk;                    /* secret key: the HMAC key, never copied, never shown */
    const char *sdk_date;              /* the X-Sdk-Date value sent, YYYYMMDDTHHMMSSZ (aksk_format_date) */
    const char *project_id;            /* the X-Project-Id value sent and signed; NULL: none */
    const struct aksk_header *headers; /* extra headers to sign; NULL when header_count is 0 */
    size_t header_count;
    const void *body; /* the request body; NULL with body_len 0 for none (a GET) */
    size_t body_len;
    unsigned flags; /* AKSK_OMIT_HOST, or 0 */
};

/*
 * The intermediate steps of one signature, for tests and debugging. The
 * strings are malloc'd and owned by the trace: free them with
 * aksk_trace_free. None of them holds the SK.
 */
struct aksk_trace {
    char *canonical_request;
    char *string_to_sign;
    char *signed_headers; /* "host;x-sdk-date" */
};

void aksk_trace_free(struct aksk_trace *t);

/* Write `t` (UTC) as an X-Sdk-Date value into `out`. Returns 0, or -1 if
 * the year does not have four digits. */
int aksk_format_date(time_t t, char out[AKSK_DATE_SIZE]);

/*
 * Sign `r`: write into `authorization` (`len` bytes) the value of the
 * Authorization header, "SDK-HMAC-SHA256 Access=AK, SignedHeaders=...,
 * Signature=HEX". Returns 0, or -1 with a message in `err` for a request it
 * cannot sign (bad URL, method, date, key or header; a repeated header) or
 * an output buffer too small (then `authorization` is "").
 */
int aksk_sign(const struct aksk_request *r, char *authorization, size_t len, char *err, size_t errlen);

/* As aksk_sign, and on success also fill `trace` (which the caller frees
 * with aksk_trace_free; on failure it is left empty). */
int aksk_sign_traced(const struct aksk_request *r, char *authorization, size_t len, struct aksk_trace *trace, char *err,
                     size_t errlen);

/* ------------------------------------------------------------------------ */
/* Verifying a signature a client made (jobgate's own clients, the SDKs)    */
/* ------------------------------------------------------------------------ */

/* The longest access key id accepted from a client. */
#define AKSK_ACCESS_MAX 128

/* How far X-Sdk-Date may be from jobgate's clock, either way: the cloud's
 * 15 minutes. */
#define AKSK_MAX_SKEW_S (15 * 60)

/* The parts of "Authorization: SDK-HMAC-SHA256 Access=AK,
 * SignedHeaders=a;b, Signature=HEX" (each part once, any order, blanks
 * after the commas). `signed_headers` is owned: aksk_presented_free. */
struct aksk_presented {
    char access[AKSK_ACCESS_MAX + 1];
    char *signed_headers;
    char signature[65];
};

/* Parse `value` (an Authorization header). Returns 0, or -1 when it is not
 * of that form (then `p` holds nothing to free). */
int aksk_presented_parse(const char *value, struct aksk_presented *p);
void aksk_presented_free(struct aksk_presented *p);

/* A request as received, to verify. `header` finds a received header by
 * its lowercase name (NULL: absent); its value is used as received, trimmed
 * of blanks at both ends as the signer trims them. */
struct aksk_received {
    const char *method; /* "GET" */
    const char *path;   /* as received, percent-encoded */
    const char *query;  /* as received; NULL: none */
    const char *(*header)(void *arg, const char *name);
    void *header_arg;
    const void *body; /* NULL with body_len 0: none */
    size_t body_len;
    time_t now; /* jobgate's clock */
};

enum aksk_verdict {
    AKSK_VERIFIED,
    AKSK_MALFORMED, /* SignedHeaders not lowercase, sorted and unique; host or x-sdk-date not signed;
                       a signed header absent; a path or query that cannot be decoded */
    AKSK_EXPIRED,   /* X-Sdk-Date absent, not YYYYMMDDTHHMMSSZ, or more than AKSK_MAX_SKEW_S away */
    AKSK_MISMATCH,  /* the signature is not the one `sk` makes */
};

/*
 * Verify `p` on `r` with the secret key `sk` (`sk_len` bytes), exactly as
 * the cloud does: the canonical request over the method, the path, the
 * query, the headers SignedHeaders names (as received, Host included) and
 * SHA-256 of the body (or the signed literal UNSIGNED-PAYLOAD when
 * x-sdk-content-sha256 says so), then HMAC-SHA256 under `sk`, compared in
 * constant time (CRYPTO_memcmp). Nothing of the SK or of the expected
 * signature is left behind.
 */
enum aksk_verdict aksk_verify(const struct aksk_presented *p, const struct aksk_received *r, const void *sk,
                              size_t sk_len);

#endif
