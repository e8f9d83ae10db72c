#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

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

struct tokengrant {
    struct keymap index;
    TAILQ_HEAD(grant_list, grant) lru;
    size_t max_entries;
    int64_t window_ms;
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

int tokengrant_hash(const struct tokengrant *t, const char *token, char out[TOKENGRANT_HASH_SIZE])
{
    return digest_sha256_hex(token, strlen(token), out);
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
    free(t);
}
