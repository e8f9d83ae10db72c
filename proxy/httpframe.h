/*
 * httpframe: strict request framing (RFC 9112), checked on the raw bytes
 * before evhttp parses them.
 *
 * evhttp 2.1 is lenient where a front proxy and jobgate could disagree on
 * where one request ends and the next begins (request smuggling): it takes
 * the last of two Content-Length fields, trims a space before the colon,
 * accepts bare LF line ends, obs-fold, any HTTP/1.x version and HTTP/1.1
 * without Host. This module reads one request head at the start of a buffer
 * and says whether it is complete, well framed, or refused and why. It keeps
 * no state and allocates nothing: the caller (frontend) feeds it the bytes
 * of the connection it has not yet passed on.
 *
 * Refused (HTTPFRAME_BAD, with an error saying which):
 *   - a request line that is not METHOD SP TARGET SP VERSION, a method that
 *     is not a token, a target with bytes outside visible ASCII, a version
 *     other than HTTP/1.0 and HTTP/1.1;
 *   - a field name that is not a token, or whitespace before its colon;
 *   - obs-fold (a field line starting with SP or HTAB);
 *   - a control character other than HTAB in a field value (NUL included);
 *   - more than one Content-Length, or one that is not all digits;
 *   - any Transfer-Encoding (no route of jobgate takes a chunked body);
 *   - HTTP/1.1 without Host, or with two;
 *   - a line ending in bare LF, unless the limits allow it;
 *   - a head longer than the limit (whether or not it is complete);
 *   - a field named in `reserved` (jobgate's own marker header).
 * Empty lines before the request line are skipped (RFC 9112 section 2.2).
 */
#ifndef JOBGATE_HTTPFRAME_H
#define JOBGATE_HTTPFRAME_H

#include <stddef.h>
#include <stdint.h>

/* The field the frontend puts on the request it passes to evhttp in place
 * of a refused head (naming the error), so that the gateway answers the
 * refusal in order, audited. Clients may not send it (httpframe_limits'
 * `reserved`), so it cannot be forged. */
#define HTTPFRAME_MARKER "X-Jobgate-Refused"

enum httpframe_error {
    HTTPFRAME_OK,
    HTTPFRAME_HEAD_TOO_LARGE,
    HTTPFRAME_BAD_REQUEST_LINE,
    HTTPFRAME_BAD_METHOD,
    HTTPFRAME_BAD_TARGET,
    HTTPFRAME_BAD_VERSION,
    HTTPFRAME_BARE_LF,
    HTTPFRAME_BAD_FIELD_NAME,
    HTTPFRAME_SPACE_BEFORE_COLON,
    HTTPFRAME_OBS_FOLD,
    HTTPFRAME_BAD_FIELD_VALUE,
    HTTPFRAME_DUPLICATE_CONTENT_LENGTH,
    HTTPFRAME_BAD_CONTENT_LENGTH,
    HTTPFRAME_TRANSFER_ENCODING,
    HTTPFRAME_NO_HOST,
    HTTPFRAME_DUPLICATE_HOST,
    HTTPFRAME_RESERVED_FIELD,
    HTTPFRAME_ERROR_COUNT
};

enum httpframe_verdict {
    HTTPFRAME_NEED_MORE, /* no complete head yet, and nothing wrong so far */
    HTTPFRAME_HEAD_OK,   /* a complete, well-framed head (see struct httpframe_head) */
    HTTPFRAME_BAD        /* refused: *error says why */
};

struct httpframe_limits {
    size_t max_head_bytes;   /* a head (request line and fields) longer than this is refused */
    int allow_bare_lf;       /* accept lines ending in LF alone (off by default) */
    const char *reserved;    /* a field name clients may not send (case-insensitive), or NULL */
    uint64_t max_body_bytes; /* a Content-Length above this is refused as BAD_CONTENT_LENGTH (0: no bound) */
};

struct httpframe_head {
    size_t head_len;         /* bytes from the start of the buffer to the end of the empty line */
    size_t skipped;          /* of which empty lines before the request line */
    uint64_t content_length; /* the body that follows the head (0 when no Content-Length) */
    int http11;              /* HTTP/1.1 (else HTTP/1.0) */
};

/* Check the request head at the start of `buf`. `len` is every byte
 * received and not yet passed on; bytes past the head are not read. */
enum httpframe_verdict httpframe_check(const char *buf, size_t len, const struct httpframe_limits *lim,
                                       struct httpframe_head *head, enum httpframe_error *error);

/* A short name for `e` ("space_before_colon"), for logs, metrics and the audit line. */
const char *httpframe_error_name(enum httpframe_error e);

#endif
