#define _GNU_SOURCE /* tdestroy */
#include <search.h>
#include <stdlib.h>
#include <string.h>

#include "keymap.h"

static int item_cmp(const void *a, const void *b)
{
    return strcmp(((const struct keymap_item *)a)->key, ((const struct keymap_item *)b)->key);
}

struct keymap_item *keymap_get(const struct keymap *m, const char *key)
{
    struct keymap_item probe = {key};
    void *found = tfind(&probe, &m->root, item_cmp);
    return found ? *(struct keymap_item **)found : NULL;
}

int keymap_put(struct keymap *m, struct keymap_item *item)
{
    void *slot = tsearch(item, &m->root, item_cmp);
    if (!slot || *(struct keymap_item **)slot != item)
        return -1;
    m->count++;
    return 0;
}

void keymap_remove(struct keymap *m, struct keymap_item *item)
{
    if (tdelete(item, &m->root, item_cmp))
        m->count--;
}

static void (*clear_free_item)(struct keymap_item *item);

static void clear_one(void *node)
{
    if (clear_free_item)
        clear_free_item(node);
}

void keymap_clear(struct keymap *m, void (*free_item)(struct keymap_item *item))
{
    /* tdestroy takes no context argument: the callback goes through a static,
     * which is fine for a single-threaded daemon. */
    clear_free_item = free_item;
    tdestroy(m->root, clear_one);
    clear_free_item = NULL;
    m->root = NULL;
    m->count = 0;
}
