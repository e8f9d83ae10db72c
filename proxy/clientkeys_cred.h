/*
 * clientkeys_cred: the credential a request presents, as its headers write
 * it, before any key set is asked: an API key (`Authorization: Bearer KEY`
 * or `X-Api-Key: KEY`) or the official SDKs' signature (`Authorization:
 * SDK-HMAC-SHA256 ...`, verified by clientkeys_check_signed); what a key may
 * be; the sentence a 401 body gives for each refusal; and the hash of a key
 * that a keys file stores (jobgate --hash-key). Part of clientkeys
 * (clientkeys.h includes this header; clientkeys.h says who holds a key).
 *
 * Nothing here keeps state or allocates: a presented key is pointed at
 * where it lies, in the request's headers, and is never logged.
 */
#ifndef JOBGATE_CLIENTKEYS_CRED_H
#define JOBGATE_CLIENTKEYS_CRED_H

#include "digest.h"

struct evkeyvalq;

/* Longest key accepted from a request or by clientkeys_hash_hex, in bytes. */
#define CLIENTKEYS_KEY_MAX 256

/* What a request's headers present as a client key. */
enum clientkeys_credential {
    CLIENTKEYS_CRED_PRESENT,   /* one key, set in *key */
    CLIENTKEYS_CRED_SIGNED,    /* Authorization: SDK-HMAC-SHA256 ..., alone; *key is that header's value */
    CLIENTKEYS_CRED_NONE,      /* neither header (or only an Authorization of another scheme) */
    CLIENTKEYS_CRED_MALFORMED, /* Bearer or X-Api-Key with an empty, too long or ill-formed value */
    CLIENTKEYS_CRED_CONFLICT,  /* more than one key presented (Bearer and X-Api-Key, or one twice) */
};

/*
 * Find the client key in `headers`: `Authorization: Bearer KEY` (the scheme
 * word in any case, then one or more spaces or tabs) or `X-Api-Key: KEY`. A
 * key is 1 to CLIENTKEYS_KEY_MAX visible ASCII characters (no space, no
 * control character); spaces or tabs before it are skipped, anything after it
 * makes the value malformed (evhttp already strips trailing blanks from the
 * headers it parses).
 *
 * An Authorization header of scheme SDK-HMAC-SHA256 (the official SDKs')
 * presents a signature instead: CLIENTKEYS_CRED_SIGNED, checked with
 * clientkeys_check_signed. Any other scheme (Basic, ...) is not a client
 * key: it is ignored, and X-Api-Key may still present one.
 * X-Auth-Token is the cloud token and is never read here. Two keys, even equal
 * ones, are a conflict: jobgate does not guess which one the client meant.
 *
 * Every outcome other than CLIENTKEYS_CRED_PRESENT is a 401. On PRESENT, *key
 * points into the header's value (no copy is made: it lives as long as
 * `headers`); otherwise *key is NULL.
 */
enum clientkeys_credential clientkeys_presented(const struct evkeyvalq *headers, const char **key);

/* A sentence for the client about a credential outcome (for a 401 body). */
const char *clientkeys_credential_message(enum clientkeys_credential c);

/* Why a signed request was refused (or not). */
enum clientkeys_signature {
    CLIENTKEYS_SIG_OK,
    CLIENTKEYS_SIG_MALFORMED,   /* not the SDK-HMAC-SHA256 form; host or x-sdk-date unsigned ... */
    CLIENTKEYS_SIG_UNKNOWN_KEY, /* no client holds the access key */
    CLIENTKEYS_SIG_EXPIRED,     /* X-Sdk-Date missing or more than 15 minutes away */
    CLIENTKEYS_SIG_MISMATCH,    /* the signature is not the client's secret key's */
};

/* The error code ("JG.SIGNATURE_MISMATCH" ...) and a sentence for a 401 body. */
const char *clientkeys_signature_code(enum clientkeys_signature s);
const char *clientkeys_signature_message(enum clientkeys_signature s);

/* Write the lower-case hex SHA-256 of `key` into `out` (64 digits and a NUL),
 * what a keys file stores. Returns 0, or -1 when `key` could never be
 * presented (empty, longer than CLIENTKEYS_KEY_MAX, or holding a space or a
 * control character) or hashing failed; `out` is then an empty string. */
int clientkeys_hash_hex(const char *key, char out[DIGEST_SHA256_HEX_SIZE]);

#endif
