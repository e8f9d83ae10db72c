/*
 * audit: see audit.h for the contract.
 *
 * Why a thread, in an event-loop program: a regular file cannot be made
 * non-blocking (O_NONBLOCK is ignored for files, and every write(2) may wait
 * for the disk or a stuck NFS server), so writing from the loop would let a
 * slow or stuck disk stall every request. The loop only formats and copies;
 * this module's one writer thread is the only one that calls write(2).
 *
 * Two buffers: `pending` (under the mutex) is where audit_write appends;
 * `out` (the writer's own) is what the writer is writing. On each wake-up
 * the writer takes pending (a swap when out is empty, so both keep their
 * capacity and a warm log allocates nothing) and writes it without holding
 * the mutex. Bytes taken but not yet written count as `held`, so the bound
 * covers both buffers.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"
#include "encoding.h"
#include "log.h"

/* The writer wakes early once this much is queued (or half the bound, if less). */
#define FLUSH_THRESHOLD ((size_t)64 * 1024)
/* audit_write formats into the stack up to this size, else into the heap. */
#define LINE_STACK 4096
/* Reopen marker when no reopen is due. */
#define NO_MARK SIZE_MAX

/* A growable byte buffer; `data` is owned by whoever holds the struct. */
struct audit_buf {
    char *data;
    size_t len;
    size_t cap;
};

struct audit {
    char *path; /* owned copy */
    int to_stderr;
    int fail_closed;
    size_t max_buffered;
    size_t threshold;
    int64_t flush_ms;

    pthread_t writer;
    pthread_mutex_t mu;
    pthread_cond_t wake; /* audit_write past the threshold, audit_reopen, audit_close */

    /* Under mu. */
    struct audit_buf pending;
    size_t held;        /* bytes the writer took and has not written yet */
    int reopen_wanted;  /* audit_reopen was called */
    size_t reopen_mark; /* pending.len at that call: bytes before it belong to the old file */
    int stopping;
    int retry_on_tick; /* the last drain left data behind: wait for the tick, do not spin */
    int sink_failed;   /* the last write attempt failed */
    int overflowing;   /* a record was dropped since the last complete drain */
    uint64_t written;
    uint64_t dropped;
    uint64_t write_errors;
    char last_error[sizeof(((struct audit_health *)0)->last_error)];

    atomic_int not_ok; /* sink_failed || overflowing, for audit_blocks_requests without the lock */

    /* The writer thread's own (and audit_open/audit_close's, before and after it runs). */
    int fd;
    struct audit_buf out;
    size_t out_off; /* out.data[0, out_off) is written */
};

/* What one drain did, reported to the shared state under the lock. */
struct drain_result {
    uint64_t lines;   /* newlines written */
    int write_errno;  /* 0, or why the last write failed */
    int reopen_errno; /* 0, or why a reopen failed */
    int stalled;      /* the sink took nothing (EAGAIN on a pipe): retry on the tick */
};

/* ------------------------------------------------------------ formatting */

/* Bytes put_string may write for `s`: its quotes, and each input byte escaped. */
static size_t string_bound(const char *s)
{
    if (!s)
        return 4;
    size_t len = strnlen(s, AUDIT_FIELD_MAX);
    return 2 + ENCODING_JSON_MAX_PER_BYTE * len;
}

/* Write `s` at p as a JSON string (or null); returns the new end. Sets
 * *truncated when s is longer than AUDIT_FIELD_MAX. */
static char *put_string(char *p, const char *s, int *truncated)
{
    if (!s) {
        memcpy(p, "null", 4);
        return p + 4;
    }
    size_t len = strnlen(s, AUDIT_FIELD_MAX + 1);
    if (len > AUDIT_FIELD_MAX) {
        len = AUDIT_FIELD_MAX;
        *truncated = 1;
    }
    *p++ = '"';
    p = encoding_json_escape(p, s, len);
    *p++ = '"';
    return p;
}

/* Write the UTC time `ms` as 2024-05-01T12:00:00.123Z (24 bytes). */
static char *put_time(char *p, int64_t ms)
{
    time_t sec = (time_t)(ms / 1000);
    int milli = (int)(ms % 1000);
    if (milli < 0) {
        milli += 1000;
        sec--;
    }
    struct tm tm;
    if (!gmtime_r(&sec, &tm))
        memset(&tm, 0, sizeof(tm));
    char stamp[64];
    size_t n = strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
    memcpy(p, stamp, n);
    p += n;
    return p + sprintf(p, ".%03dZ", milli);
}

/* Everything in a line but its strings, with room to spare: keys, the time
 * (a year may have more than 4 digits), four numbers of at most 20 digits. */
#define LINE_FIXED 512

static size_t line_bound(const struct audit_record *r)
{
    return LINE_FIXED + string_bound(r->request_id) + string_bound(r->client) + string_bound(r->source) +
           string_bound(r->method) + string_bound(r->path) + string_bound(r->project_id) + string_bound(r->job_id) +
           string_bound(r->cache);
}

/* Write the line for `r` (with its newline) at buf, which has line_bound(r)
 * bytes; returns its length. cJSON is not used: it copies bytes >= 0x80 as
 * they are, so a client's invalid UTF-8 would make an invalid line. */
static size_t format_line(char *buf, const struct audit_record *r)
{
    int truncated = 0;
    char *p = buf;
#define KEY(k)                       \
    do {                             \
        memcpy(p, k, sizeof(k) - 1); \
        p += sizeof(k) - 1;          \
    } while (0)
    KEY("{\"time\":\"");
    p = put_time(p, r->wall_ms);
    KEY("\",\"request_id\":");
    p = put_string(p, r->request_id, &truncated);
    KEY(",\"client\":");
    p = put_string(p, r->client, &truncated);
    KEY(",\"source\":");
    p = put_string(p, r->source, &truncated);
    KEY(",\"method\":");
    p = put_string(p, r->method, &truncated);
    KEY(",\"path\":");
    p = put_string(p, r->path, &truncated);
    KEY(",\"project_id\":");
    p = put_string(p, r->project_id, &truncated);
    KEY(",\"job_id\":");
    p = put_string(p, r->job_id, &truncated);
    KEY(",\"cache\":");
    p = put_string(p, r->cache, &truncated);
    p += sprintf(p, ",\"upstream_status\":%d,\"upstream_us\":%" PRId64 ",\"status\":%d,\"bytes\":%" PRIu64,
                 r->upstream_status, r->upstream_us, r->status, r->bytes_sent);
    if (truncated)
        KEY(",\"truncated\":true");
    KEY("}\n");
#undef KEY
    return (size_t)(p - buf);
}

/* --------------------------------------------------------------- buffers */

/* Make room for `more` bytes after b->len. Returns 0, or -1 (no memory). */
static int buf_reserve(struct audit_buf *b, size_t more)
{
    if (b->cap - b->len >= more)
        return 0;
    size_t cap = b->cap ? b->cap : FLUSH_THRESHOLD;
    while (cap - b->len < more)
        cap *= 2;
    char *data = realloc(b->data, cap);
    if (!data)
        return -1;
    b->data = data;
    b->cap = cap;
    return 0;
}

static uint64_t count_lines(const char *p, size_t len)
{
    uint64_t n = 0;
    const char *end = p + len;
    while ((p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
        n++;
        p++;
    }
    return n;
}

/* Under mu: publish sink_failed || overflowing for audit_blocks_requests. */
static void publish_state(struct audit *a)
{
    atomic_store(&a->not_ok, a->sink_failed || a->overflowing);
}

/* -------------------------------------------------------- the writer side */

static int open_path(const char *path)
{
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
}

/* Write out.data[out_off, end) to the sink, unlocked. Returns 0, or -1 with res set. */
static int write_unlocked(struct audit *a, size_t end, struct drain_result *res)
{
    while (a->out_off < end) {
        ssize_t n = write(a->fd, a->out.data + a->out_off, end - a->out_off);
        if (n > 0) {
            a->out_off += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n == 0 || errno == EAGAIN || errno == EWOULDBLOCK) {
            res->stalled = 1;
            return -1;
        } else {
            res->write_errno = errno;
            return -1;
        }
    }
    return 0;
}

/*
 * Write out.data[out_off, end) to the sink, leaving it on a line boundary.
 *
 * Several workers (and instances on one host) append to the same file, each
 * from its own writer thread. O_APPEND makes each write(2) land at the end,
 * but a write may be short (a full disk, a file size limit): the file would
 * then end in half a line, and the next worker's write would follow it. So
 * the append runs under flock(2) on the file, which every writer of the path
 * takes (each process opens the path itself, so the locks exclude each
 * other), and a write that stops inside a line is undone before the lock is
 * let go: the file is cut back to where that line started (ftruncate, safe
 * while the lock is held: nothing was appended since), and out_off goes back
 * to the line's start, to be written whole later. Every line reaches the
 * file whole or not at all. Returns 0, or -1 with res set.
 */
static int write_range(struct audit *a, size_t end, struct drain_result *res)
{
    size_t start = a->out_off;
    if (start >= end)
        return 0;
    if (a->to_stderr) { /* a pipe or a terminal: nothing to lock or cut back */
        int rc = write_unlocked(a, end, res);
        res->lines += count_lines(a->out.data + start, a->out_off - start);
        return rc;
    }
    int locked;
    while ((locked = flock(a->fd, LOCK_EX)) < 0 && errno == EINTR)
        ;
    struct stat st;
    off_t base = locked == 0 && fstat(a->fd, &st) == 0 ? st.st_size : -1;
    int rc = write_unlocked(a, end, res);
    if (a->out_off > start && a->out.data[a->out_off - 1] != '\n') {
        size_t keep = a->out_off;
        while (keep > start && a->out.data[keep - 1] != '\n')
            keep--;
        if (base >= 0 && ftruncate(a->fd, base + (off_t)(keep - start)) == 0) {
            a->out_off = keep; /* the cut line is written again, whole, on the next try */
        } else if (!res->write_errno) {
            res->write_errno = errno ? errno : EIO;
            rc = -1;
        }
    }
    if (locked == 0)
        flock(a->fd, LOCK_UN);
    res->lines += count_lines(a->out.data + start, a->out_off - start);
    return rc;
}

/*
 * Open the path again and write to the new file from now on. When it is
 * another file than before and a line was cut by a failed write, the whole
 * line is written again to the new file (the old one keeps the fragment):
 * the new file starts on a line boundary. Returns 0, or -1 (old file kept).
 */
static int sink_reopen(struct audit *a, struct drain_result *res)
{
    if (a->to_stderr)
        return 0;
    int fd = open_path(a->path);
    if (fd < 0) {
        res->reopen_errno = errno;
        return -1;
    }
    struct stat was, now;
    int same = fstat(a->fd, &was) == 0 && fstat(fd, &now) == 0 && was.st_dev == now.st_dev && was.st_ino == now.st_ino;
    if (!same)
        while (a->out_off > 0 && a->out.data[a->out_off - 1] != '\n')
            a->out_off--;
    close(a->fd);
    a->fd = fd;
    return 0;
}

/*
 * Under mu: move what audit_write queued behind what the writer still holds.
 * Returns the offset in out where a requested reopen falls, or NO_MARK.
 */
static size_t take_pending(struct audit *a)
{
    if (a->out_off == a->out.len)
        a->out.len = a->out_off = 0;
    size_t base = a->out.len;
    int moved = 1;
    if (a->out.len == 0) {
        struct audit_buf t = a->out;
        a->out = a->pending;
        a->pending = t;
        a->pending.len = 0;
    } else if (a->pending.len > 0) {
        /* The sink failed with data left: append (bounded by max_buffered). */
        if (buf_reserve(&a->out, a->pending.len) == 0) {
            memcpy(a->out.data + a->out.len, a->pending.data, a->pending.len);
            a->out.len += a->pending.len;
            a->pending.len = 0;
        } else {
            moved = 0; /* no memory: pending waits for the next tick */
        }
    }
    a->held = a->out.len - a->out_off;
    if (!a->reopen_wanted)
        return NO_MARK;
    a->reopen_wanted = 0;
    return moved ? base + a->reopen_mark : a->out.len;
}

/* Without the lock: write what was taken, reopening at `mark`, or first
 * thing when `reopen_first` (the last write or reopen failed: the path may
 * work again, e.g. a file removed, space freed, a bad mount replaced). */
static void drain(struct audit *a, size_t mark, int reopen_first, struct drain_result *res)
{
    if (mark != NO_MARK) {
        write_range(a, mark, res); /* on failure these lines go to the new file */
        sink_reopen(a, res);
    } else if (reopen_first) {
        sink_reopen(a, res);
    }
    res->write_errno = 0;
    res->stalled = 0;
    write_range(a, a->out.len, res);
}

/* Under mu: fold one drain into the shared state. */
static void report(struct audit *a, const struct drain_result *res)
{
    a->held = a->out.len - a->out_off;
    a->written += res->lines;
    if (res->reopen_errno) {
        a->write_errors++;
        snprintf(a->last_error, sizeof(a->last_error), "reopen %s: %s", a->path, strerror(res->reopen_errno));
    }
    if (res->write_errno) {
        a->write_errors++;
        snprintf(a->last_error, sizeof(a->last_error), "write %s: %s", a->path, strerror(res->write_errno));
    }
    a->retry_on_tick = a->held > 0;
    a->sink_failed = res->write_errno != 0;
    if (a->held == 0)
        a->overflowing = 0;
    publish_state(a);
}

/*
 * Under mu: a message for the error log when the log's state changed since
 * the last one (`*logged_ok` tracks it: one line per change, not one per
 * tick), or when a reopen first fails. Returns msg, or NULL.
 */
static const char *state_change(struct audit *a, int *logged_ok, int first_reopen_failure, char *msg, size_t msglen)
{
    int ok = !a->sink_failed && !a->overflowing;
    if (*logged_ok && !ok)
        snprintf(msg, msglen, "audit log failing (%s): keeping up to %zu bytes, %" PRIu64 " records dropped so far",
                 a->sink_failed ? a->last_error : "writes too slow, buffer full", a->max_buffered, a->dropped);
    else if (!*logged_ok && ok)
        snprintf(msg, msglen, "audit log %s is written again; %" PRIu64 " records dropped so far", a->path, a->dropped);
    else if (first_reopen_failure)
        snprintf(msg, msglen, "audit log: %s (still writing to the previous file; retried every tick)", a->last_error);
    else
        return NULL;
    *logged_ok = ok;
    return msg;
}

static void timespec_after_ms(struct timespec *ts, int64_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += (time_t)(ms / 1000);
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* Lines in what is still buffered, for the shutdown message. Under mu. */
static uint64_t lines_left(const struct audit *a)
{
    return count_lines(a->out.data + a->out_off, a->out.len - a->out_off) +
           count_lines(a->pending.data, a->pending.len);
}

static void *writer_main(void *arg)
{
    struct audit *a = arg;
    int reopen_due = 0; /* a reopen failed: try again on the next tick */
    int logged_ok = 1;  /* the state the error log last heard of */
    struct timespec tick;
    timespec_after_ms(&tick, a->flush_ms);

    pthread_mutex_lock(&a->mu);
    for (;;) {
        /* Sleep until the tick, unless there is a reason to write sooner. */
        while (!a->stopping && !a->reopen_wanted && (a->retry_on_tick || a->pending.len < a->threshold)) {
            if (pthread_cond_timedwait(&a->wake, &a->mu, &tick) == ETIMEDOUT) {
                timespec_after_ms(&tick, a->flush_ms);
                break;
            }
        }
        int stopping = a->stopping;
        int reopen_first = a->sink_failed || reopen_due;
        size_t mark = take_pending(a);
        pthread_mutex_unlock(&a->mu);

        struct drain_result res = {0};
        if (a->out_off < a->out.len || mark != NO_MARK || reopen_first)
            drain(a, mark, reopen_first, &res);
        int first_reopen_failure = res.reopen_errno != 0 && !reopen_due;
        reopen_due = res.reopen_errno != 0;

        char msg[320], why[sizeof(a->last_error)];
        pthread_mutex_lock(&a->mu);
        report(a, &res);
        const char *say = state_change(a, &logged_ok, first_reopen_failure, msg, sizeof(msg));
        uint64_t lost = stopping ? lines_left(a) : 0;
        if (lost) {
            a->dropped += lost;
            a->held = 0;
            memcpy(why, a->last_error, sizeof(why));
        }
        pthread_mutex_unlock(&a->mu);
        if (say)
            log_warn("%s", say);
        if (stopping) {
            if (lost)
                log_error("audit log: %" PRIu64 " lines lost at shutdown (%s)", lost, why[0] ? why : "no memory");
            return NULL;
        }
        pthread_mutex_lock(&a->mu);
    }
}

/* ------------------------------------------------------------ public API */

static void audit_free(struct audit *a)
{
    if (a->fd >= 0 && !a->to_stderr)
        close(a->fd);
    free(a->pending.data);
    free(a->out.data);
    free(a->path);
    free(a);
}

struct audit *audit_open(const struct audit_conf *conf, char *err, size_t errlen)
{
    struct audit *a = NULL;
    int mu_ready = 0, cond_ready = 0;

    if (!conf->path || !conf->path[0]) {
        snprintf(err, errlen, "audit log: no path");
        return NULL;
    }
    size_t max_buffered = conf->max_buffered_bytes ? conf->max_buffered_bytes : AUDIT_DEFAULT_MAX_BUFFERED;
    int64_t flush_ms = conf->flush_interval_ms ? conf->flush_interval_ms : AUDIT_DEFAULT_FLUSH_MS;
    if (max_buffered < AUDIT_MIN_BUFFERED) {
        snprintf(err, errlen, "audit log: max buffered bytes must be at least %zu", AUDIT_MIN_BUFFERED);
        return NULL;
    }
    if (flush_ms < 1 || flush_ms > AUDIT_MAX_FLUSH_MS) {
        snprintf(err, errlen, "audit log: flush interval must be 1 to %d ms", AUDIT_MAX_FLUSH_MS);
        return NULL;
    }

    a = calloc(1, sizeof(*a));
    if (!a || !(a->path = strdup(conf->path))) {
        snprintf(err, errlen, "out of memory");
        goto err;
    }
    a->fd = -1;
    a->to_stderr = strcmp(conf->path, "-") == 0;
    a->fail_closed = conf->fail_closed;
    a->max_buffered = max_buffered;
    a->threshold = max_buffered / 2 < FLUSH_THRESHOLD ? max_buffered / 2 : FLUSH_THRESHOLD;
    a->flush_ms = flush_ms;
    atomic_init(&a->not_ok, 0);

    a->fd = a->to_stderr ? STDERR_FILENO : open_path(a->path);
    if (a->fd < 0) {
        snprintf(err, errlen, "audit log %s: %s", a->path, strerror(errno));
        goto err;
    }
    if (buf_reserve(&a->pending, FLUSH_THRESHOLD) < 0 || buf_reserve(&a->out, FLUSH_THRESHOLD) < 0) {
        snprintf(err, errlen, "out of memory");
        goto err;
    }

    pthread_condattr_t attr;
    if (pthread_mutex_init(&a->mu, NULL) != 0) {
        snprintf(err, errlen, "audit log: cannot create a mutex");
        goto err;
    }
    mu_ready = 1;
    if (pthread_condattr_init(&attr) != 0) {
        snprintf(err, errlen, "audit log: cannot create a condition variable");
        goto err;
    }
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    cond_ready = pthread_cond_init(&a->wake, &attr) == 0;
    pthread_condattr_destroy(&attr);
    if (!cond_ready) {
        snprintf(err, errlen, "audit log: cannot create a condition variable");
        goto err;
    }

    /* The writer takes no signals: they stay with the loop's thread. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&a->writer, NULL, writer_main, a);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        snprintf(err, errlen, "audit log: cannot start the writer thread: %s", strerror(rc));
        goto err;
    }
    return a;

err:
    if (a) {
        if (cond_ready)
            pthread_cond_destroy(&a->wake);
        if (mu_ready)
            pthread_mutex_destroy(&a->mu);
        audit_free(a);
    }
    return NULL;
}

int audit_write(struct audit *a, const struct audit_record *r)
{
    char stack[LINE_STACK];
    size_t bound = line_bound(r);
    char *line = bound <= sizeof(stack) ? stack : malloc(bound); /* heap copy freed below */
    size_t len = line ? format_line(line, r) : 0;
    int rc = -1;

    pthread_mutex_lock(&a->mu);
    if (line && a->pending.len + a->held + len <= a->max_buffered && buf_reserve(&a->pending, len) == 0) {
        int was_below = a->pending.len < a->threshold;
        memcpy(a->pending.data + a->pending.len, line, len);
        a->pending.len += len;
        if (was_below && a->pending.len >= a->threshold)
            pthread_cond_signal(&a->wake);
        rc = 0;
    } else {
        a->dropped++;
        if (!a->overflowing) {
            a->overflowing = 1;
            publish_state(a);
        }
    }
    pthread_mutex_unlock(&a->mu);

    if (line != stack)
        free(line);
    return rc;
}

void audit_reopen(struct audit *a)
{
    pthread_mutex_lock(&a->mu);
    a->reopen_wanted = 1;
    a->reopen_mark = a->pending.len;
    pthread_cond_signal(&a->wake);
    pthread_mutex_unlock(&a->mu);
}

void audit_health(const struct audit *a, struct audit_health *out)
{
    /* The lock is not part of the log's value: a const log may still take it. */
    pthread_mutex_t *mu = (pthread_mutex_t *)&a->mu;
    pthread_mutex_lock(mu);
    out->ok = !a->sink_failed && !a->overflowing;
    out->fail_closed = a->fail_closed;
    out->written = a->written;
    out->dropped = a->dropped;
    out->write_errors = a->write_errors;
    out->buffered = a->pending.len + a->held;
    memcpy(out->last_error, a->last_error, sizeof(out->last_error));
    pthread_mutex_unlock(mu);
}

int audit_blocks_requests(const struct audit *a)
{
    return a->fail_closed && atomic_load(&a->not_ok);
}

void audit_close(struct audit *a)
{
    if (!a)
        return;
    pthread_mutex_lock(&a->mu);
    a->stopping = 1;
    pthread_cond_signal(&a->wake);
    pthread_mutex_unlock(&a->mu);
    pthread_join(a->writer, NULL);
    pthread_cond_destroy(&a->wake);
    pthread_mutex_destroy(&a->mu);
    audit_free(a);
}
