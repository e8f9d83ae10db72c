#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include "cache_mem.h"
#include "clock.h"
#include "keymap.h"

struct mem_entry {
    struct keymap_item item;    /* item.key points at key[] */
    struct body *body;          /* one reference owned by the entry */
    int64_t fresh_until_us;     /* monotonic; 0: never stale */
    int64_t expires_us;         /* monotonic end of the stale window; 0: never */
    size_t cost;                /* bytes charged against max_bytes */
    TAILQ_ENTRY(mem_entry) lru; /* head: most recently used */
    char key[];
};

TAILQ_HEAD(mem_lru, mem_entry);

struct cache_mem {
    struct keymap index;
    struct mem_lru lru;
    size_t bytes;
    size_t max_bytes;
    uint64_t evictions;
};

struct cache_mem *cache_mem_new(size_t max_bytes)
{
    struct cache_mem *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    TAILQ_INIT(&c->lru);
    c->max_bytes = max_bytes;
    return c;
}

static void entry_drop(struct cache_mem *c, struct mem_entry *e)
{
    keymap_remove(&c->index, &e->item);
    TAILQ_REMOVE(&c->lru, e, lru);
    c->bytes -= e->cost;
    body_unref(e->body);
    free(e);
}

struct body *cache_mem_get(struct cache_mem *c, const char *key, int *stale)
{
    *stale = 0;
    struct keymap_item *item = keymap_get(&c->index, key);
    if (!item)
        return NULL;
    struct mem_entry *e = (struct mem_entry *)item;
    int64_t now = clock_mono_us();
    if (e->expires_us && e->expires_us <= now) {
        entry_drop(c, e);
        return NULL;
    }
    *stale = e->fresh_until_us && e->fresh_until_us <= now;
    if (TAILQ_FIRST(&c->lru) != e) {
        TAILQ_REMOVE(&c->lru, e, lru);
        TAILQ_INSERT_HEAD(&c->lru, e, lru);
    }
    return e->body;
}

/* Does the entry already there win against `b`? A terminal answer never
 * changes; among answers of the same kind, the one received later is newer. */
static int entry_wins(const struct mem_entry *old, const struct body *b)
{
    if (old->body->terminal != b->terminal)
        return old->body->terminal;
    return old->body->stored_at_ms > b->stored_at_ms;
}

void cache_mem_put(struct cache_mem *c, const char *key, struct body *b, int64_t ttl_ms, int64_t stale_ms)
{
    if (ttl_ms >= 0 && ttl_ms + (stale_ms > 0 ? stale_ms : 0) == 0)
        return;
    size_t keylen = strlen(key);
    /* Charge what the entry really holds: body, key and bookkeeping. */
    size_t cost = sizeof(struct mem_entry) + keylen + 1 + sizeof(struct body) + b->len + 1 + 64;
    if (cost > c->max_bytes)
        return;

    struct keymap_item *old = keymap_get(&c->index, key);
    if (old) {
        struct mem_entry *oe = (struct mem_entry *)old;
        if (entry_wins(oe, b))
            return;
        entry_drop(c, oe);
    }
    while (c->bytes + cost > c->max_bytes && !TAILQ_EMPTY(&c->lru)) {
        entry_drop(c, TAILQ_LAST(&c->lru, mem_lru));
        c->evictions++;
    }

    struct mem_entry *e = malloc(sizeof(*e) + keylen + 1);
    if (!e)
        return;
    memcpy(e->key, key, keylen + 1);
    e->item.key = e->key;
    e->body = body_ref(b);
    int64_t now = clock_mono_us();
    e->fresh_until_us = ttl_ms < 0 ? 0 : now + ttl_ms * 1000;
    e->expires_us = ttl_ms < 0 ? 0 : e->fresh_until_us + (stale_ms > 0 ? stale_ms : 0) * 1000;
    e->cost = cost;
    if (keymap_put(&c->index, &e->item) < 0) {
        body_unref(e->body);
        free(e);
        return;
    }
    TAILQ_INSERT_HEAD(&c->lru, e, lru);
    c->bytes += cost;
}

void cache_mem_stats(const struct cache_mem *c, struct cache_mem_stats *out)
{
    out->entries = c->index.count;
    out->bytes = c->bytes;
    out->max_bytes = c->max_bytes;
    out->evictions = c->evictions;
}

void cache_mem_free(struct cache_mem *c)
{
    if (!c)
        return;
    struct mem_entry *e;
    while ((e = TAILQ_FIRST(&c->lru)) != NULL)
        entry_drop(c, e);
    free(c);
}
