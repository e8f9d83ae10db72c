#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "cache_entry.h"
#include "classify.h"
#include "log.h"

#define HEAD_MAX    192 /* a head with its MAC field */
#define MAC_LEN     32
#define MAC_FIELD   " m="
#define MAC_HEX_LEN (2 * MAC_LEN)

/* ------------------------------------------------------------ the codec */

int cache_entry_codec_init(struct cache_entry_codec *c, const char *entry_key, char *err, size_t errlen)
{
    memset(c, 0, sizeof(*c));
    if (!entry_key)
        return 0;
    if (strlen(entry_key) < CACHE_ENTRY_KEY_MIN_LEN) {
        snprintf(err, errlen, "the entry key is shorter than %d bytes", CACHE_ENTRY_KEY_MIN_LEN);
        return -1;
    }
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = mac ? EVP_MAC_CTX_new(mac) : NULL;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
                           OSSL_PARAM_construct_end()};
    if (!ctx || EVP_MAC_init(ctx, (const unsigned char *)entry_key, strlen(entry_key), params) != 1) {
        snprintf(err, errlen, "HMAC-SHA256 is not available from OpenSSL");
        EVP_MAC_CTX_free(ctx);
        EVP_MAC_free(mac);
        return -1;
    }
    EVP_MAC_free(mac); /* the context keeps its own reference */
    c->mac_ctx = ctx;
    return 0;
}

void cache_entry_codec_free(struct cache_entry_codec *c)
{
    EVP_MAC_CTX_free(c->mac_ctx); /* OpenSSL wipes the key it holds */
    c->mac_ctx = NULL;
}

/* The MAC of the value whose head (without its MAC field) is `head` and
 * body `body`, stored under KEY:slot, as 64 hex digits and a NUL in `hex`.
 * Returns 0, or -1 if OpenSSL fails. */
static int entry_mac(const struct cache_entry_codec *c, const char *key, enum cachekey_slot slot, const char *head,
                     size_t hlen, const char *body, size_t blen, char hex[MAC_HEX_LEN + 1])
{
    const char *suffix = cachekey_suffix(slot);
    char klen[24];
    int n = snprintf(klen, sizeof(klen), "%zu:", strlen(key) + strlen(suffix));
    unsigned char md[MAC_LEN];
    size_t mdlen = 0;
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_dup(c->mac_ctx); /* keyed once, at init */
    int ok = ctx && EVP_MAC_update(ctx, (const unsigned char *)klen, (size_t)n) == 1 &&
             EVP_MAC_update(ctx, (const unsigned char *)key, strlen(key)) == 1 &&
             EVP_MAC_update(ctx, (const unsigned char *)suffix, strlen(suffix)) == 1 &&
             EVP_MAC_update(ctx, (const unsigned char *)head, hlen) == 1 &&
             EVP_MAC_update(ctx, (const unsigned char *)"\n", 1) == 1 &&
             EVP_MAC_update(ctx, (const unsigned char *)body, blen) == 1 &&
             EVP_MAC_final(ctx, md, &mdlen, sizeof(md)) == 1 && mdlen == MAC_LEN;
    EVP_MAC_CTX_free(ctx);
    if (!ok)
        return -1;
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < MAC_LEN; i++) {
        hex[2 * i] = digits[md[i] >> 4];
        hex[2 * i + 1] = digits[md[i] & 15];
    }
    hex[MAC_HEX_LEN] = '\0';
    return 0;
}

/* ------------------------------------------------------------- encoding */

char *cache_entry_encode(const struct cache_entry_codec *c, const char *key, enum cachekey_slot slot,
                         const struct body *b, size_t *len)
{
    char head[HEAD_MAX];
    int hlen = snprintf(head, sizeof(head), "JG1 %" PRId64 " %d %d %" PRId64 " %" PRId64, b->stored_at_ms,
                        b->terminal ? 1 : 0, b->status, b->expires_at_ms, b->stale_until_ms);
    if (c->mac_ctx) {
        char hex[MAC_HEX_LEN + 1];
        if (entry_mac(c, key, slot, head, (size_t)hlen, b->data, b->len, hex) < 0)
            return NULL;
        hlen += snprintf(head + hlen, sizeof(head) - (size_t)hlen, "%s%s", MAC_FIELD, hex);
    }
    head[hlen++] = '\n';
    size_t vlen = (size_t)hlen + b->len;
    char *value = malloc(vlen);
    if (!value)
        return NULL;
    memcpy(value, head, (size_t)hlen);
    memcpy(value + hlen, b->data, b->len);
    *len = vlen;
    return value;
}

/* ------------------------------------------------------------- decoding */

/* Split `v` into its head (without the MAC field: *hlen bytes), its MAC
 * field (*mac, NULL if none) and its body (at *body). Returns 0, or -1 if
 * it is not shaped as an entry. */
static int entry_split(const char *v, size_t len, size_t *hlen, const char **mac, const char **body)
{
    const char *nl = memchr(v, '\n', len);
    if (!nl || len < 4 || memcmp(v, "JG1 ", 4) != 0 || (size_t)(nl - v) >= HEAD_MAX)
        return -1;
    *hlen = (size_t)(nl - v);
    *mac = NULL;
    *body = nl + 1;
    for (size_t i = 0; i + 3 <= *hlen; i++) {
        if (memcmp(v + i, MAC_FIELD, 3) == 0) {
            *mac = v + i + 3;
            if ((size_t)(nl - *mac) != MAC_HEX_LEN)
                return -1;
            *hlen = i;
            break;
        }
    }
    return 0;
}

/* Decode the head (hlen bytes at v, without a MAC field) and the body. */
static struct body *entry_decode(const char *v, size_t hlen, const char *body, size_t blen)
{
    char head[HEAD_MAX];
    memcpy(head, v, hlen);
    head[hlen] = '\0';
    int64_t stored_at, expires_at = 0, stale_until = 0;
    int terminal, status = 200;
    int fields = sscanf(head, "JG1 %" SCNd64 " %d %d %" SCNd64 " %" SCNd64, &stored_at, &terminal, &status, &expires_at,
                        &stale_until);
    if (fields < 2 || (terminal != 0 && terminal != 1) || (status != 200 && status != 404) || expires_at < 0 ||
        stale_until < 0)
        return NULL;
    struct body *b = body_new(body, blen, stored_at, terminal);
    if (b) {
        b->status = status;
        b->expires_at_ms = expires_at;
        b->stale_until_ms = stale_until;
    }
    return b;
}

/* Older values lack the last fields: 2 to 5 fields are read. */
struct body *cache_entry_decode(const char *v, size_t len)
{
    size_t hlen;
    const char *mac, *body;
    if (entry_split(v, len, &hlen, &mac, &body) < 0)
        return NULL;
    return entry_decode(v, hlen, body, len - (size_t)(body - v));
}

/* ------------------------------------------------------------- checking */

/* Does `b`, read from KEY:slot, answer what `expect` asks? NULL if it does,
 * else why not. */
static const char *entry_mismatch(const struct body *b, enum cachekey_slot slot, const struct cache_expect *expect)
{
    int under_t = slot == CACHEKEY_TERMINAL;
    if (b->terminal != under_t)
        return under_t ? "its head says still changing, under :t" : "its head says terminal, under :p";
    if (b->status == 404)
        return under_t ? "a remembered 404 under :t" : NULL; /* jobgate's own error body: no job to classify */
    if (!expect || !expect->job)
        return NULL;
    char state[64];
    enum job_class cls = classify_body(expect->job, b->data, b->len, expect->identity, state, sizeof(state));
    switch (cls) {
    case JOB_TERMINAL: return under_t ? NULL : "a terminal state under :p";
    case JOB_PENDING: return under_t ? "a still-changing state under :t" : NULL;
    case JOB_OTHER_JOB: return "the answer about another job";
    case JOB_NOT_JOB: return "not a job";
    case JOB_AMBIGUOUS: return "a body that parsers read differently";
    }
    return "not a job";
}

/* Log, once per key (as far as the table remembers), why KEY:slot's entry
 * was not served. */
static void log_rejected(struct cache_entry_codec *c, const char *key, enum cachekey_slot slot, const char *why)
{
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a */
    for (const char *p = key; *p; p++)
        h = (h ^ (unsigned char)*p) * 0x100000001b3ULL;
    h = ((h ^ (uint64_t)slot) * 0x100000001b3ULL) | 1;
    uint64_t *seen = &c->logged[h % CACHE_ENTRY_LOGGED];
    if (*seen == h)
        return;
    *seen = h;
    log_warn("redis: not serving %.200s%s: %s (counted in jobgate_cache_rejected_total; logged once per key)", key,
             cachekey_suffix(slot), why);
}

/* The entry of KEY:slot in `e`, checked; NULL (counted) if it may not be served. */
static struct body *entry_read(struct cache_entry_codec *c, const char *key, enum cachekey_slot slot,
                               const redisReply *e, const struct cache_expect *expect, uint64_t *corrupt)
{
    size_t hlen;
    const char *mac, *body;
    const char *why = NULL;
    struct body *b = NULL;
    if (entry_split(e->str, e->len, &hlen, &mac, &body) < 0 ||
        !(b = entry_decode(e->str, hlen, body, e->len - (size_t)(body - e->str)))) {
        (*corrupt)++;
        why = "not jobgate's entry format";
    } else if (c->mac_ctx) {
        char want[MAC_HEX_LEN + 1];
        if (!mac)
            why = "no MAC, and an entry key is set";
        else if (entry_mac(c, key, slot, e->str, hlen, b->data, b->len, want) < 0 ||
                 CRYPTO_memcmp(want, mac, MAC_HEX_LEN) != 0)
            why = "a bad MAC";
    }
    if (!why)
        why = entry_mismatch(b, slot, expect);
    if (!why)
        return b;
    body_unref(b);
    c->rejected++;
    log_rejected(c, key, slot, why);
    return NULL;
}

struct body *cache_entry_pick(struct cache_entry_codec *c, const char *key, redisReply *const *elements,
                              const struct cache_expect *expect, uint64_t *corrupt)
{
    static const enum cachekey_slot slots[] = {CACHEKEY_TERMINAL, CACHEKEY_PENDING};
    struct body *b = NULL;
    for (size_t i = 0; i < 2 && !b; i++) {
        if (elements[i]->type == REDIS_REPLY_STRING)
            b = entry_read(c, key, slots[i], elements[i], expect, corrupt);
    }
    return b;
}
