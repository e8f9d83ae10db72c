#include <errno.h>
#include <sys/random.h>
#include <sys/types.h>

#include "randbytes.h"

int randbytes_fill(void *buf, size_t len)
{
    unsigned char *p = buf;
    while (len > 0) { /* requests over 256 bytes may come back short, or be interrupted by a signal */
        ssize_t n = getrandom(p, len, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}
