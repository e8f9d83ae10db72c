/*
 * clientkeys_cred: the credential a request presents (clientkeys_cred.h).
 */
#include <string.h>
#include <strings.h>
#include <sys/queue.h>

#include <event2/keyvalq_struct.h>

#include "aksk.h"
#include "clientkeys_cred.h"

/* A key that can be presented: 1 to CLIENTKEYS_KEY_MAX visible ASCII characters. */
static int valid_key(const char *s)
{
    size_t len = 0;
    for (; s[len]; len++)
        if (len >= CLIENTKEYS_KEY_MAX || (unsigned char)s[len] < 0x21 || (unsigned char)s[len] > 0x7e)
            return 0;
    return len > 0;
}

static const char *skip_blanks(const char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    return s;
}

enum clientkeys_credential clientkeys_presented(const struct evkeyvalq *headers, const char **key)
{
    const char *found = NULL, *signed_value = NULL;
    size_t presented = 0;
    int malformed = 0;
    *key = NULL;
    for (const struct evkeyval *h = TAILQ_FIRST(headers); h; h = TAILQ_NEXT(h, next)) {
        const char *value;
        if (strcasecmp(h->key, "Authorization") == 0) {
            /* RFC 7235: the scheme is case-insensitive; other schemes are not ours. */
            const char *scheme = skip_blanks(h->value);
            if (strncmp(scheme, AKSK_ALGORITHM " ", strlen(AKSK_ALGORITHM) + 1) == 0) {
                /* The official SDKs' signature: verified by clientkeys_check_signed. */
                presented++;
                signed_value = h->value;
                continue;
            }
            if (strncasecmp(scheme, "Bearer", 6) != 0 || (scheme[6] != ' ' && scheme[6] != '\t' && scheme[6] != '\0'))
                continue;
            value = scheme + 6;
        } else if (strcasecmp(h->key, "X-Api-Key") == 0) {
            value = h->value;
        } else {
            continue;
        }
        presented++;
        value = skip_blanks(value);
        if (valid_key(value))
            found = value;
        else
            malformed = 1;
    }
    if (presented == 0)
        return CLIENTKEYS_CRED_NONE;
    if (presented > 1)
        return CLIENTKEYS_CRED_CONFLICT;
    if (signed_value) {
        *key = signed_value;
        return CLIENTKEYS_CRED_SIGNED;
    }
    if (malformed)
        return CLIENTKEYS_CRED_MALFORMED;
    *key = found;
    return CLIENTKEYS_CRED_PRESENT;
}

const char *clientkeys_credential_message(enum clientkeys_credential c)
{
    switch (c) {
    case CLIENTKEYS_CRED_PRESENT: return "an API key was presented";
    case CLIENTKEYS_CRED_SIGNED: return "an SDK-HMAC-SHA256 signature was presented";
    case CLIENTKEYS_CRED_NONE: return "send your jobgate API key as 'Authorization: Bearer KEY' or 'X-Api-Key: KEY'";
    case CLIENTKEYS_CRED_MALFORMED:
        return "an API key is 1 to 256 visible characters with no space, after 'Bearer ' or in X-Api-Key";
    case CLIENTKEYS_CRED_CONFLICT:
        return "send one credential, once: an SDK-HMAC-SHA256 signature, Authorization: Bearer KEY or X-Api-Key";
    }
    return "no valid API key";
}

const char *clientkeys_signature_code(enum clientkeys_signature s)
{
    switch (s) {
    case CLIENTKEYS_SIG_OK: return "JG.OK";
    case CLIENTKEYS_SIG_MALFORMED: return "JG.SIGNATURE_MALFORMED";
    case CLIENTKEYS_SIG_UNKNOWN_KEY: return "JG.UNKNOWN_ACCESS_KEY";
    case CLIENTKEYS_SIG_EXPIRED: return "JG.SIGNATURE_EXPIRED";
    case CLIENTKEYS_SIG_MISMATCH: return "JG.SIGNATURE_MISMATCH";
    }
    return "JG.UNAUTHENTICATED";
}

const char *clientkeys_signature_message(enum clientkeys_signature s)
{
    switch (s) {
    case CLIENTKEYS_SIG_OK: return "the signature is valid";
    case CLIENTKEYS_SIG_MALFORMED:
        return "the SDK-HMAC-SHA256 Authorization is not 'SDK-HMAC-SHA256 Access=AK, SignedHeaders=..., "
               "Signature=HEX' over host, x-sdk-date and headers the request has";
    case CLIENTKEYS_SIG_UNKNOWN_KEY: return "the access key is not known to this gateway";
    case CLIENTKEYS_SIG_EXPIRED: return "X-Sdk-Date is missing, malformed, or more than 15 minutes from now";
    case CLIENTKEYS_SIG_MISMATCH: return "the request's signature does not match: check the secret key";
    }
    return "not authenticated";
}

int clientkeys_hash_hex(const char *key, char out[DIGEST_SHA256_HEX_SIZE])
{
    out[0] = '\0';
    if (!key || !valid_key(key))
        return -1;
    return digest_sha256_hex(key, strlen(key), out);
}
