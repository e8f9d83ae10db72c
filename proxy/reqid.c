#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include <openssl/rand.h>

#include "encoding.h"
#include "log.h"
#include "randbytes.h"
#include "reqid.h"

/* 128 random bits per id, drawn from a pool refilled 256 ids at a time, so
 * that an id costs no syscall. The pool is per process: a forked worker
 * starts with an empty one (pthread_atfork), never with its parent's. */
#define ID_BYTES  16
#define POOL_IDS  256
#define POOL_SIZE (ID_BYTES * POOL_IDS)

static unsigned char pool[POOL_SIZE];
static size_t pool_left; /* unused bytes at the end of `pool` */
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void pool_forget(void)
{
    pool_left = 0;
}

static void register_atfork(void)
{
    pthread_atfork(NULL, NULL, pool_forget);
}

static void pool_fill(void)
{
    pthread_once(&atfork_once, register_atfork);
    if (randbytes_fill(pool, sizeof(pool)) < 0 && RAND_bytes(pool, (int)sizeof(pool)) != 1) {
        /* Neither the kernel nor OpenSSL gave randomness: ids must still go out. */
        log_error("request ids: no random bytes from getrandom or OpenSSL");
        for (size_t i = 0; i < sizeof(pool); i++)
            pool[i] = (unsigned char)(pool[i] * 31u + i);
    }
    pool_left = sizeof(pool);
}

void reqid_new(char *buf, size_t len)
{
    if (len < 2 * ID_BYTES + 1) {
        if (len)
            buf[0] = '\0';
        return;
    }
    if (pool_left < ID_BYTES)
        pool_fill();
    pool_left -= ID_BYTES;
    unsigned char *bytes = pool + pool_left;
    encoding_hex(bytes, ID_BYTES, buf);
    memset(bytes, 0, ID_BYTES); /* an id is drawn once */
    buf[2 * ID_BYTES] = '\0';
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
