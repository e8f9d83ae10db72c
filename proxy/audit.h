/*
 * audit: the audit log. jobgate is the single audited egress point, so every
 * request it answers leaves one JSON line here, whatever the answer was.
 *
 * The request path must never wait for a disk: audit_write formats the line
 * on the caller's thread and appends it to a bounded in-memory buffer under a
 * mutex; a writer thread of this module moves the buffer to the file with
 * write(2) at least every flush interval, and sooner when the buffer grows
 * past a threshold. Lines reach the file in the order audit_write accepted
 * them.
 *
 * Several processes may append to one path (the workers of an instance, or
 * instances on one host): each line reaches the file whole or not at all.
 * Each writer appends under flock(2) on the file, and a write cut short (a
 * full disk, a file size limit) is undone back to its line's start before
 * the lock is released, so no half line is ever followed by another
 * process's line (audit.c, write_range).
 *
 * When the sink fails (a write errs: ENOSPC, EIO, EBADF ...) the writer keeps
 * what it could not write, up to the bound, and tries again on every tick,
 * opening the path anew first (so a file that was removed, or a path that
 * became writable again, recovers without an operator). Records that do not
 * fit under the bound are refused and counted as dropped. The policy:
 *
 *   fail-open (default): jobgate keeps answering; records that cannot be kept
 *     are counted in `dropped` and show in audit_health.
 *   fail-closed: audit_blocks_requests() is true while the sink is failing or
 *     records are being dropped, and the integrator refuses new requests (503)
 *     until the writer succeeds again: no answer leaves without its line.
 *
 * Line format (one JSON object, keys in this order, no newline inside):
 *   {"time":"2024-05-01T12:00:00.123Z","request_id":"...","client":"..."|null,
 *    "source":"...","method":"GET","path":"...","project_id":"..."|null,
 *    "job_id":"..."|null,"cache":"HIT","upstream_status":200,
 *    "upstream_us":1234,"status":200,"bytes":456}
 * and "truncated":true at the end when a string was cut. Every string field
 * may be NULL (written as null). Whatever bytes a client sent, the line is
 * valid JSON and valid UTF-8: quotes, backslashes and control bytes are
 * escaped, a byte that is not part of well-formed UTF-8 becomes U+FFFD, and a
 * string longer than AUDIT_FIELD_MAX bytes is cut there.
 *
 * Secrets: struct audit_record has no field that can carry a token, a key or
 * a signature (no headers, no query string, no body), so none can reach the
 * audit log. Keep it that way when adding fields.
 *
 * Threads: audit_write, audit_reopen, audit_health and audit_blocks_requests
 * may be called from any thread. audit_open and audit_close are called once
 * each, by the owner, with no other call in progress.
 */
#ifndef JOBGATE_AUDIT_H
#define JOBGATE_AUDIT_H

#include <stddef.h>
#include <stdint.h>

/* Settings: audit_open refuses a bound under AUDIT_MIN_BUFFERED and an
 * interval outside 1 ms .. AUDIT_MAX_FLUSH_MS. The default interval keeps a
 * line in memory at most a second. */
#define AUDIT_DEFAULT_MAX_BUFFERED ((size_t)8 * 1024 * 1024)
#define AUDIT_MIN_BUFFERED         ((size_t)64 * 1024)
#define AUDIT_DEFAULT_FLUSH_MS     1000
#define AUDIT_MAX_FLUSH_MS         60000
/* Longest string field kept, in bytes of the record (a path is cut there). */
#define AUDIT_FIELD_MAX 16384

struct audit;

struct audit_conf {
    const char *path;          /* the file, appended to; "-": stderr (never reopened). Copied. */
    int fail_closed;           /* see the policy above */
    size_t max_buffered_bytes; /* accepted but not yet written; 0: AUDIT_DEFAULT_MAX_BUFFERED */
    int64_t flush_interval_ms; /* longest a line waits in memory; 0: AUDIT_DEFAULT_FLUSH_MS */
};

/* One answered request. Strings are borrowed for the duration of audit_write. */
struct audit_record {
    int64_t wall_ms;        /* when the request was received, ms since the epoch */
    const char *request_id; /* the X-Request-Id sent back */
    const char *client;     /* the authenticated client's name, or NULL */
    const char *source;     /* peer address, "HOST:PORT" */
    const char *method;     /* as received */
    const char *path;       /* as received, without the query string */
    const char *project_id; /* route parameters, NULL when no route matched */
    const char *job_id;     /*   "   */
    const char *cache;      /* "HIT", "MISS", "BYPASS", "STALE", "DENIED" ... */
    int upstream_status;    /* 0: upstream not called */
    int64_t upstream_us;    /* upstream latency; -1: not called */
    int status;             /* the status sent to the client */
    uint64_t bytes_sent;    /* body bytes sent to the client */
};

/*
 * Open (create, mode 0640) `conf->path` for appending and start the writer
 * thread. Returns the log, owned by the caller (audit_close frees it), or
 * NULL with a message in `err` (bad settings, path not openable, no thread).
 */
struct audit *audit_open(const struct audit_conf *conf, char *err, size_t errlen);

/*
 * Format `r` as one line and queue it. Never touches the disk and never waits
 * for the writer beyond a memory copy. Returns 0, or -1 when the line could
 * not be kept (the buffer is at its bound because the sink is failing or
 * slow; out of memory): counted in `dropped`.
 */
int audit_write(struct audit *a, const struct audit_record *r);

/*
 * Ask the writer to open the path again (SIGUSR1 after logrotate has renamed
 * the file). Lines accepted before this call go to the old file (while it can
 * still be written), lines accepted after it to the new one. Returns at once;
 * the writer wakes up and reopens. A failed reopen keeps the old file, is
 * counted in write_errors and retried on every tick.
 */
void audit_reopen(struct audit *a);

struct audit_health {
    int ok;                /* the last write succeeded, and no record was dropped since the buffer last emptied */
    int fail_closed;       /* the configured policy */
    uint64_t written;      /* lines written to the sink */
    uint64_t dropped;      /* records refused by audit_write */
    uint64_t write_errors; /* failed write and reopen attempts */
    size_t buffered;       /* bytes accepted and not yet written */
    char last_error[160];  /* the last failure ("" if none), e.g. "write PATH: No space left on device" */
};

/* A consistent snapshot, copied into `out`. */
void audit_health(const struct audit *a, struct audit_health *out);

/* Fail-closed and the sink not ok: the integrator answers 503. Lock-free. */
int audit_blocks_requests(const struct audit *a);

/*
 * Write every line still buffered, stop the writer thread and free `a`
 * (NULL: nothing). Lines that still cannot be written after one more attempt
 * (sink failing at shutdown) are logged as lost and counted as dropped.
 */
void audit_close(struct audit *a);

#endif
