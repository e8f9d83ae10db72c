#include <string.h>

#include "cachekey.h"

int cachekey_format(char *out, size_t outlen, const char *prefix, const char *rule, const char *const *params,
                    size_t nparams)
{
    size_t used = 0;
    for (size_t i = 0; i < 2 + nparams; i++) { /* memcpy, not snprintf: this runs on every hit */
        const char *piece = i == 0 ? prefix : i == 1 ? rule : params[i - 2];
        size_t len = strlen(piece);
        if (used + 1 + len + 2 > outlen) /* the separator or '{', the piece, then '}' and the NUL */
            return -1;
        if (i == 1)
            out[used++] = '{';
        else if (i >= 2)
            out[used++] = ':';
        memcpy(out + used, piece, len);
        used += len;
    }
    out[used++] = '}';
    out[used] = '\0';
    return 0;
}

const char *cachekey_suffix(enum cachekey_slot slot)
{
    static const char *const suffixes[] = {
        [CACHEKEY_TERMINAL] = ":t",
        [CACHEKEY_PENDING] = ":p",
        [CACHEKEY_LEASE] = ":l",
        [CACHEKEY_WAITERS] = ":w",
    };
    _Static_assert(sizeof(suffixes) / sizeof(suffixes[0]) == CACHEKEY_NSLOTS, "one suffix per slot");
    return suffixes[slot];
}
