/*
 * keymap: an index from string keys to objects that embed a `struct
 * keymap_item` (intrusive, so an entry costs no extra allocation). Built on
 * libc's tsearch family: balanced trees, O(log n), no code of our own to trust.
 */
#ifndef JOBGATE_KEYMAP_H
#define JOBGATE_KEYMAP_H

#include <stddef.h>

struct keymap_item {
    const char *key; /* owned by the embedding object; must not change while indexed */
};

struct keymap {
    void *root;
    size_t count;
};

/* The item with `key`, or NULL. */
struct keymap_item *keymap_get(const struct keymap *m, const char *key);

/* Index `item`. Returns 0, or -1 if its key is already indexed (or no memory). */
int keymap_put(struct keymap *m, struct keymap_item *item);

/* Remove `item` from the index (it must be indexed). */
void keymap_remove(struct keymap *m, struct keymap_item *item);

/* Remove every item, calling `free_item` (may be NULL) on each. */
void keymap_clear(struct keymap *m, void (*free_item)(struct keymap_item *item));

#endif
