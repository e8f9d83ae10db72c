#include <limits.h>
#include <pthread.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "digest.h"
#include "encoding.h"

static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;
static EVP_MD *sha256_md; /* NULL if the fetch failed; never freed (see digest.h) */

static void fetch_sha256(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

/* The SHA-256 implementation, fetched on the first call; NULL if none. */
static const EVP_MD *sha256(void)
{
    pthread_once(&sha256_once, fetch_sha256);
    return sha256_md;
}

int digest_sha256(const void *data, size_t len, unsigned char out[DIGEST_SHA256_LEN])
{
    const EVP_MD *md = sha256();
    unsigned int outlen = 0;
    if (!md || EVP_Digest(data ? data : "", len, out, &outlen, md, NULL) != 1 || outlen != DIGEST_SHA256_LEN)
        return -1;
    return 0;
}

int digest_sha256_hex(const void *data, size_t len, char out[DIGEST_SHA256_HEX_SIZE])
{
    unsigned char md[DIGEST_SHA256_LEN];
    out[0] = '\0';
    if (digest_sha256(data, len, md) < 0) {
        OPENSSL_cleanse(md, sizeof(md));
        return -1;
    }
    encoding_hex(md, sizeof(md), out);
    OPENSSL_cleanse(md, sizeof(md));
    return 0;
}

int digest_script_sha(const char *text, char out[DIGEST_SCRIPT_SHA_SIZE])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    out[0] = '\0';
    if (EVP_Digest(text, strlen(text), md, &len, EVP_sha1(), NULL) != 1 || len != 20)
        return -1;
    encoding_hex(md, len, out);
    return 0;
}

int digest_hmac_sha256(const void *key, size_t keylen, const void *data, size_t len,
                       unsigned char out[DIGEST_SHA256_LEN])
{
    const EVP_MD *md = sha256();
    unsigned int outlen = 0;
    if (!md || keylen > INT_MAX ||
        !HMAC(md, key ? key : "", (int)keylen, data ? data : (const void *)"", len, out, &outlen) ||
        outlen != DIGEST_SHA256_LEN)
        return -1;
    return 0;
}
