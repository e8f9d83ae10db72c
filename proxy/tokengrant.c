#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <openssl/crypto.h>

#include "digest.h"
#include "keymap.h"
#include "tokengrant.h"

/* Project ids and rule names are short; a longer pair is not remembered (it goes upstream). */
#define NAMES_MAX 256

struct grant {
    struct keymap_item item; /* key: "HASH:RULE:PROJECT" */
    char key[TOKENGRANT_HASH_SIZE + 1 + NAMES_MAX + 1];
    int64_t accepted_ms;
    TAILQ_ENTRY(grant) lru; /* most recently accepted first */
};

/* Tokens hashed lately: a client polls with one token many times a second,
 * and the SHA-256 of it (a cloud token is several KB) would be most of what
 * a hit costs in pass-through mode. Direct-mapped, TOKEN_MEMO_SLOTS slots
 * chosen from the token's length and last bytes; a slot answers only for a
 * token equal byte for byte to the one it holds, so that no other token ever
 * gets its hash. It holds a copy of the token (wiped when replaced or freed):
 * at most TOKEN_MEMO_SLOTS x TOKEN_MEMO_MAX_LEN bytes, a longer token is
 * hashed every time. */
#define TOKEN_MEMO_SLOTS   64
#define TOKEN_MEMO_MAX_LEN 16384

struct token_memo {
    char *token; /* malloc'ed, `len` bytes; NULL: empty */
    size_t len;
    char hash[TOKENGRANT_HASH_SIZE];
};

struct tokengrant {
    struct keymap index;
    TAILQ_HEAD(grant_list, grant) lru;
    size_t max_entries;
    int64_t window_ms;
    struct token_memo memo[TOKEN_MEMO_SLOTS];
};

struct tokengrant *tokengrant_new(size_t max_entries, int64_t window_ms)
{
    struct tokengrant *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    TAILQ_INIT(&t->lru);
    t->max_entries = max_entries ? max_entries : 1;
    t->window_ms = window_ms;
    return t;
}

/* The slot of a token `len` bytes long: FNV-1a of its length and its last
 * 32 bytes (a token's signature is at its end). Not a secret: a client that
 * makes two of its tokens share a slot only costs itself a SHA-256. */
static struct token_memo *memo_slot(struct tokengrant *t, const char *token, size_t len)
{
    uint32_t h = 2166136261u ^ (uint32_t)len;
    for (size_t i = len > 32 ? len - 32 : 0; i < len; i++)
        h = (h ^ (unsigned char)token[i]) * 16777619u;
    return &t->memo[(h ^ h >> 16) % TOKEN_MEMO_SLOTS];
}

static void memo_clear(struct token_memo *m)
{
    if (m->token) {
        OPENSSL_cleanse(m->token, m->len);
        free(m->token);
    }
    m->token = NULL;
    m->len = 0;
}

int tokengrant_hash(struct tokengrant *t, const char *token, char out[TOKENGRANT_HASH_SIZE])
{
    size_t len = strlen(token);
    if (!t || len > TOKEN_MEMO_MAX_LEN)
        return digest_sha256_hex(token, len, out);
    struct token_memo *m = memo_slot(t, token, len);
    if (m->token && m->len == len && memcmp(m->token, token, len) == 0) {
        memcpy(out, m->hash, TOKENGRANT_HASH_SIZE);
        return 0;
    }
    if (digest_sha256_hex(token, len, out) < 0)
        return -1;
    memo_clear(m);
    if ((m->token = malloc(len ? len : 1)) != NULL) { /* else: not remembered */
        memcpy(m->token, token, len);
        m->len = len;
        memcpy(m->hash, out, TOKENGRANT_HASH_SIZE);
    }
    return 0;
}

int tokengrant_key(char *out, size_t outlen, const char *prefix, const char *hash, const char *rule,
                   const char *project)
{
    int n = snprintf(out, outlen, "%s%s:%s:%s", prefix, hash, rule ? rule : "", project ? project : "");
    return (n < 0 || (size_t)n >= outlen) ? -1 : 0;
}

int tokengrant_shared_key(char *out, size_t outlen, const char *key_prefix, const char *hash, const char *rule,
                          const char *project)
{
    int n = snprintf(out, outlen, "%s:grant:%s:%s:%s", key_prefix ? key_prefix : "", hash, rule ? rule : "",
                     project ? project : "");
    return (n < 0 || (size_t)n >= outlen) ? -1 : 0;
}

static void drop(struct tokengrant *t, struct grant *g)
{
    keymap_remove(&t->index, &g->item);
    TAILQ_REMOVE(&t->lru, g, lru);
    free(g);
}

void tokengrant_accepted(struct tokengrant *t, const char *hash, const char *rule, const char *project, int64_t now_ms)
{
    char key[sizeof(((struct grant *)0)->key)];
    if (tokengrant_key(key, sizeof(key), "", hash, rule, project) < 0)
        return;
    struct grant *g = (struct grant *)keymap_get(&t->index, key);
    if (g) {
        TAILQ_REMOVE(&t->lru, g, lru);
    } else {
        if (t->index.count >= t->max_entries)
            drop(t, TAILQ_LAST(&t->lru, grant_list));
        if (!(g = calloc(1, sizeof(*g))))
            return;
        memcpy(g->key, key, sizeof(key));
        g->item.key = g->key;
        if (keymap_put(&t->index, &g->item) < 0) {
            free(g);
            return;
        }
    }
    g->accepted_ms = now_ms;
    TAILQ_INSERT_HEAD(&t->lru, g, lru);
}

int tokengrant_valid(struct tokengrant *t, const char *hash, const char *rule, const char *project, int64_t now_ms)
{
    char key[sizeof(((struct grant *)0)->key)];
    if (tokengrant_key(key, sizeof(key), "", hash, rule, project) < 0)
        return 0;
    struct grant *g = (struct grant *)keymap_get(&t->index, key);
    if (!g)
        return 0;
    if (now_ms - g->accepted_ms > t->window_ms) {
        drop(t, g);
        return 0;
    }
    return 1;
}

void tokengrant_refused(struct tokengrant *t, const char *hash, const char *rule, const char *project)
{
    char key[sizeof(((struct grant *)0)->key)];
    if (tokengrant_key(key, sizeof(key), "", hash, rule, project) < 0)
        return;
    struct grant *g = (struct grant *)keymap_get(&t->index, key);
    if (g)
        drop(t, g);
}

size_t tokengrant_count(const struct tokengrant *t)
{
    return t->index.count;
}

void tokengrant_free(struct tokengrant *t)
{
    if (!t)
        return;
    struct grant *g;
    while ((g = TAILQ_FIRST(&t->lru)) != NULL)
        drop(t, g);
    for (size_t i = 0; i < TOKEN_MEMO_SLOTS; i++)
        memo_clear(&t->memo[i]);
    free(t);
}
