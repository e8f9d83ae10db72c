#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "clock.h"
#include "reqid.h"

static uint64_t request_id_seed[2];
static uint64_t request_id_counter;

void reqid_new(char *buf, size_t len)
{
    if (!request_id_seed[0] && !request_id_seed[1]) {
        int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
        if (fd < 0 || read(fd, request_id_seed, sizeof(request_id_seed)) != (ssize_t)sizeof(request_id_seed)) {
            request_id_seed[0] = (uint64_t)clock_mono_us();
            request_id_seed[1] = (uint64_t)getpid() * 0x9E3779B97F4A7C15ULL;
        }
        if (fd >= 0)
            close(fd);
    }
    /* Unique per process and counter; the random part keeps them unique across restarts and workers. */
    uint64_t half[2] = {request_id_seed[0], request_id_seed[1] ^ ++request_id_counter};
    static const char hex[] = "0123456789abcdef";
    if (len < 33) {
        if (len)
            buf[0] = '\0';
        return;
    }
    for (int h = 0; h < 2; h++) /* by hand: snprintf cost more than the rest of a hit's bookkeeping */
        for (int i = 0; i < 16; i++)
            buf[h * 16 + i] = hex[(half[h] >> (60 - 4 * i)) & 15];
    buf[32] = '\0';
}

int reqid_acceptable(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > REQID_MAX)
        return 0;
    for (const char *c = id; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '-' ||
              *c == '_' || *c == '.' || *c == ':'))
            return 0;
    return 1;
}
