#include <string.h>

#include "encoding.h"

static const char hex_digits[] = "0123456789abcdef";

void encoding_hex(const void *in, size_t n, char *out)
{
    const unsigned char *b = in;
    for (size_t i = 0; i < n; i++) { /* by table: on the request path, snprintf costs more than the hash */
        out[2 * i] = hex_digits[b[i] >> 4];
        out[2 * i + 1] = hex_digits[b[i] & 0xF];
    }
    out[2 * n] = '\0';
}

size_t encoding_utf8_len(const unsigned char *s, size_t left)
{
    if (left == 0)
        return 0;
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    size_t n;
    unsigned char lo = 0x80, hi = 0xBF; /* the range of the second byte (RFC 3629, section 4) */
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0)
            lo = 0xA0; /* overlong */
        else if (c == 0xED)
            hi = 0x9F; /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0)
            lo = 0x90; /* overlong */
        else if (c == 0xF4)
            hi = 0x8F; /* past U+10FFFF */
    } else {
        return 0; /* a continuation byte, C0/C1 (overlong) or F5..FF */
    }
    if (left < n || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t k = 2; k < n; k++)
        if ((s[k] & 0xC0) != 0x80)
            return 0;
    return n;
}

/* The letter of JSON's two-character escape for c, or 0. */
static char escape_letter(unsigned char c)
{
    switch (c) {
    case '"': return '"';
    case '\\': return '\\';
    case '\n': return 'n';
    case '\r': return 'r';
    case '\t': return 't';
    default: return 0;
    }
}

char *encoding_json_escape(char *out, const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        unsigned char c = u[i];
        if (c >= 0x80) {
            size_t n = encoding_utf8_len(u + i, len - i);
            if (n == 0) { /* not UTF-8: U+FFFD, so that the text stays valid UTF-8 */
                memcpy(out, "\xEF\xBF\xBD", 3);
                out += 3;
                i++;
            } else {
                memcpy(out, u + i, n);
                out += n;
                i += n;
            }
            continue;
        }
        char letter = escape_letter(c);
        if (letter) {
            *out++ = '\\';
            *out++ = letter;
        } else if (c < 0x20 || c == 0x7F) { /* DEL too: keeps a log file printable */
            memcpy(out, "\\u00", 4);
            out[4] = hex_digits[c >> 4];
            out[5] = hex_digits[c & 0xF];
            out += 6;
        } else {
            *out++ = (char)c;
        }
        i++;
    }
    return out;
}

int encoding_utf8_valid(const void *s, size_t len)
{
    const unsigned char *p = s, *end = p + len;
    while (p < end) {
        if (*p < 0x80) {
            p++;
            continue;
        }
        size_t n = encoding_utf8_len(p, (size_t)(end - p));
        if (n == 0)
            return 0;
        p += n;
    }
    return 1;
}
