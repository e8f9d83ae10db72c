#include <stdlib.h>
#include <string.h>

#include "body.h"

struct body *body_new(const char *data, size_t len, int64_t stored_at_ms, int terminal)
{
    struct body *b = malloc(sizeof(*b) + len + 1);
    if (!b)
        return NULL;
    b->refs = 1;
    b->stored_at_ms = stored_at_ms;
    b->terminal = terminal;
    b->status = 200;
    b->expires_at_ms = 0;
    b->stale_until_ms = 0;
    b->len = len;
    memcpy(b->data, data, len);
    b->data[len] = '\0';
    return b;
}

int body_fresh(const struct body *b, int64_t now_ms)
{
    return b->expires_at_ms == 0 || b->expires_at_ms > now_ms;
}

struct body *body_ref(struct body *b)
{
    b->refs++;
    return b;
}

void body_unref(struct body *b)
{
    if (b && --b->refs == 0)
        free(b);
}
