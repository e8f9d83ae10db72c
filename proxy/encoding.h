/*
 * encoding: the byte-level text encodings several modules share, each
 * written once here.
 *
 *   - hex: two lower-case digits a byte (digests, ids);
 *   - UTF-8: the length of one well-formed sequence (RFC 3629), for the
 *     modules that pass text a client or upstream sent on to someone else;
 *   - JSON strings: the inside of a string literal, for the two places that
 *     write JSON by hand (the audit line, formatted on the request path into
 *     one buffer sized in advance; the IAM body, which must leave no unwiped
 *     copy of a password behind). Everything else uses cJSON.
 *
 * Pure functions: no allocation, no state, safe from any thread. The caller
 * sizes every output buffer; each function says how much it may write.
 */
#ifndef JOBGATE_ENCODING_H
#define JOBGATE_ENCODING_H

#include <stddef.h>

/* encoding_json_escape writes at most this many bytes for each input byte
 * (a control byte becomes \u00XX). */
#define ENCODING_JSON_MAX_PER_BYTE 6

/* Write the `n` bytes at `in` as 2n lower-case hex digits and a NUL into
 * `out`, which holds 2n + 1 bytes. */
void encoding_hex(const void *in, size_t n, char *out);

/* The length (1 to 4) of the well-formed UTF-8 sequence that starts at `s`,
 * of which at most `left` bytes may be read; 0 when there is none: a stray
 * continuation byte, an overlong form, a surrogate, a code point past
 * U+10FFFF, or a sequence cut short by `left`. An ASCII byte is 1. */
size_t encoding_utf8_len(const unsigned char *s, size_t left);

/* Are the `len` bytes at `s` well-formed UTF-8 throughout? */
int encoding_utf8_valid(const void *s, size_t len);

/*
 * Write the `len` bytes at `s` into `out` as the inside of a JSON string
 * (no quotes, no NUL) and return the end of what was written; `out` holds
 * at least ENCODING_JSON_MAX_PER_BYTE * len bytes. The result is valid JSON
 * and valid UTF-8 whatever the input: '"' and '\' are escaped, \n \r \t by
 * their letters, every other control byte and DEL as \u00XX, and a byte
 * that is not part of well-formed UTF-8 becomes U+FFFD. Well-formed UTF-8
 * is copied as it is.
 */
char *encoding_json_escape(char *out, const char *s, size_t len);

#endif
