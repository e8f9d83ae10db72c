/*
 * aksk_canon: the pieces of SDK-HMAC-SHA256's canonical request
 * (docs/huawei-api.md, section 5), shared by signing an upstream request
 * and verifying a client's (aksk.c, whose header aksk.h is the contract
 * callers use). Internal to aksk: nothing else includes this header.
 *
 * Pure functions on caller-owned memory; no state, any thread.
 */
#ifndef JOBGATE_AKSK_CANON_H
#define JOBGATE_AKSK_CANON_H

#include <stddef.h>

/* The length of an X-Sdk-Date, YYYYMMDDTHHMMSSZ (aksk.h's AKSK_DATE_SIZE - 1). */
#define AKSK_CANON_DATE_LEN 16

/* A growable string. A failed allocation sticks (`failed`), so a whole
 * canonical request is built and checked once at the end. Start it zeroed;
 * the caller frees it with aksk_strbuf_free. */
struct strbuf {
    char *data; /* owned, NUL-terminated once anything was added */
    size_t len;
    size_t cap;
    int failed;
};

void aksk_strbuf_add(struct strbuf *b, const char *s, size_t n);
void aksk_strbuf_adds(struct strbuf *b, const char *s);
void aksk_strbuf_free(struct strbuf *b);

/* One header to sign: its lowercase name (owned) and its trimmed value
 * (borrowed from the request or from the parsed URL). */
struct signed_header {
    char *name;
    const char *value;
    size_t value_len;
};

/* Append the canonical URI of `path` (each segment percent-encoded, a
 * trailing '/'), or the canonical query (pairs encoded and sorted). -1 on a
 * malformed escape in the input. */
int aksk_canonical_uri(struct strbuf *b, const char *path);
int aksk_canonical_query(struct strbuf *b, const char *query);

/* memcmp order, the shorter first on a tie. */
int aksk_bytes_compare(const char *a, size_t alen, const char *b, size_t blen);

/* RFC 9110 tchar. */
int aksk_is_token_char(unsigned char c);
/* A field value may hold visible bytes, blanks and obs-text; no CR or LF,
 * which would let a value start a header of its own. */
int aksk_header_value_valid(const char *value);

/* qsort order of signed headers: by name. */
int aksk_signed_header_compare(const void *a, const void *b);
/* Add `name` (lowercased) with `value` trimmed of blanks; -1 on no memory. */
int aksk_signed_header_add(struct signed_header *list, size_t *count, const char *name, const char *value);
void aksk_signed_headers_free(struct signed_header *list, size_t count);

/* Checks on what a caller gives: an HTTP method token; an X-Sdk-Date of
 * the form YYYYMMDDTHHMMSSZ; an access key that fits inside the
 * comma-separated Authorization value (printable ASCII without blanks or
 * commas); a header the signer sets itself (Host, X-Sdk-Date,
 * X-Project-Id), which a caller may not pass. */
int aksk_method_valid(const char *method);
int aksk_sdk_date_valid(const char *date);
int aksk_access_key_valid(const char *ak);
int aksk_is_managed_header(const char *name);

#endif
