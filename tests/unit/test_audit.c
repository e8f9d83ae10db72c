/*
 * Unit tests for audit (proxy/audit.h is the contract): the real writer
 * thread writing real files in a fresh temporary folder; a failing disk is
 * /dev/full behind a symlink (it fails for root too, where folder permissions
 * would not).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "audit.h"
#include "unit_support.h"

/* ---------------------------------------------------------------- helpers */

/* A fresh folder for one test; removed (with its files) by tmp_remove. */
static void tmp_make(char *dir, size_t len)
{
    const char *base = getenv("TMPDIR");
    snprintf(dir, len, "%s/jg-audit-XXXXXX", base && *base ? base : "/tmp");
    assert_non_null(mkdtemp(dir));
}

static void tmp_remove(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    char path[4096];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    assert_int_equal(rmdir(dir), 0);
}

static void path_in(char *out, size_t len, const char *dir, const char *name)
{
    int n = snprintf(out, len, "%s/%s", dir, name);
    assert_true(n > 0 && (size_t)n < len);
}

/* The whole file, NUL-terminated, in memory the caller frees (*len: its
 * size); an absent file reads as empty. */
static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    while (f) {
        if (cap - n < 4096) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0)
            break;
    }
    if (f)
        fclose(f);
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* The lines of a file: a copy with each '\n' replaced by NUL, and pointers. */
struct lines {
    char *text;
    char **line;
    size_t count;
    int last_ends_in_newline;
};

static void lines_read(struct lines *l, const char *path)
{
    size_t len;
    l->text = read_all(path, &len);
    l->count = 0;
    for (size_t i = 0; i < len; i++)
        l->count += l->text[i] == '\n';
    l->last_ends_in_newline = len == 0 || l->text[len - 1] == '\n';
    l->line = calloc(l->count + 1, sizeof(char *));
    assert_non_null(l->line);
    char *p = l->text;
    for (size_t i = 0; i < l->count; i++) {
        char *nl = strchr(p, '\n');
        assert_non_null(nl); /* a NUL byte inside the file would end up here */
        *nl = '\0';
        l->line[i] = p;
        p = nl + 1;
    }
}

static void lines_free(struct lines *l)
{
    free(l->text);
    free(l->line);
}

static size_t file_lines(const char *path)
{
    struct lines l;
    lines_read(&l, path);
    size_t n = l.count;
    lines_free(&l);
    return n;
}

/* Is s[0..len) well-formed UTF-8 (RFC 3629), written independently of audit.c? */
static int valid_utf8(const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t n;
        if (s[i] < 0x80) {
            i++;
            continue;
        } else if ((s[i] & 0xE0) == 0xC0) {
            n = 2, cp = s[i] & 0x1F;
        } else if ((s[i] & 0xF0) == 0xE0) {
            n = 3, cp = s[i] & 0x0F;
        } else if ((s[i] & 0xF8) == 0xF0) {
            n = 4, cp = s[i] & 0x07;
        } else {
            return 0;
        }
        if (i + n > len)
            return 0;
        for (size_t k = 1; k < n; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        static const uint32_t min_for_len[] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min_for_len[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += n;
    }
    return 1;
}

/* A line as the spec wants it: valid UTF-8, no control byte, a JSON object. */
static cJSON *parse_line(const char *line)
{
    size_t len = strlen(line);
    if (!valid_utf8(line, len)) {
        print_error("  not UTF-8: %.200s\n", line);
        return NULL;
    }
    for (size_t i = 0; i < len; i++) {
        if ((unsigned char)line[i] < 0x20) {
            print_error("  raw control byte 0x%02x at %zu: %.200s\n", (unsigned char)line[i], i, line);
            return NULL;
        }
    }
    cJSON *j = cJSON_Parse(line);
    if (!j || !cJSON_IsObject(j)) {
        print_error("  not a JSON object: %.200s\n", line);
        cJSON_Delete(j);
        return NULL;
    }
    return j;
}

static const char *str_field(const cJSON *j, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int is_null_field(const cJSON *j, const char *key)
{
    return cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, key));
}

static double num_field(const cJSON *j, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    return cJSON_IsNumber(v) ? v->valuedouble : -12345.0;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

/* Poll audit_health until cond(h) or `ms` pass; returns whether it held. */
static int wait_health(struct audit *a, int (*cond)(const struct audit_health *), long ms, struct audit_health *h)
{
    for (long waited = 0;; waited += 20) {
        audit_health(a, h);
        if (cond(h))
            return 1;
        if (waited >= ms)
            return 0;
        sleep_ms(20);
    }
}

static struct audit *open_or_fail(const char *path, int fail_closed, size_t max, int64_t flush_ms)
{
    struct audit_conf conf = {
        .path = path, .fail_closed = fail_closed, .max_buffered_bytes = max, .flush_interval_ms = flush_ms};
    char err[256] = "";
    struct audit *a = audit_open(&conf, err, sizeof(err));
    if (!a)
        fail_msg("audit_open %s: %s", path, err);
    return a;
}

/* A typical record; `id` goes into the request id and the job id. */
static void sample_record(struct audit_record *r, char *rid, size_t ridlen, char *job, size_t joblen, long id)
{
    snprintf(rid, ridlen, "req-%ld", id);
    snprintf(job, joblen, "%032lx", (unsigned long)id);
    *r = (struct audit_record){
        .wall_ms = 1714564800123 + id,
        .request_id = rid,
        .client = (id % 3 == 0) ? NULL : "terraform-ci",
        .source = "192.0.2.7:51234",
        .method = "GET",
        .path = "/v1.0/0123456789abcdef0123456789abcdef/jobs/x",
        .project_id = "0123456789abcdef0123456789abcdef",
        .job_id = job,
        .cache = (id % 2) ? "HIT" : "MISS",
        .upstream_status = (id % 2) ? 0 : 200,
        .upstream_us = (id % 2) ? -1 : 1000 + id,
        .status = 200,
        .bytes_sent = (uint64_t)(100 + id),
    };
}

static int write_sample(struct audit *a, long id)
{
    struct audit_record r;
    char rid[32], job[40];
    sample_record(&r, rid, sizeof(rid), job, sizeof(job), id);
    return audit_write(a, &r);
}

/* Does `line` carry every field sample_record(id) gave? Prints what differs. */
static int line_matches_sample(const char *line, long id)
{
    cJSON *j = parse_line(line);
    if (!j)
        return 0;
    char rid[32], job[40], stamp[96];
    struct audit_record r;
    sample_record(&r, rid, sizeof(rid), job, sizeof(job), id);
    int ms = (int)((123 + id) % 1000);
    long sec = (123 + id) / 1000;
    snprintf(stamp, sizeof(stamp), "2024-05-01T12:%02ld:%02ld.%03dZ", sec / 60, sec % 60, ms);
    const char *client = str_field(j, "client");
    int ok = str_field(j, "time") && strcmp(str_field(j, "time"), stamp) == 0 && str_field(j, "request_id") &&
             strcmp(str_field(j, "request_id"), rid) == 0 &&
             (r.client ? client && strcmp(client, r.client) == 0 : is_null_field(j, "client")) &&
             str_field(j, "source") && strcmp(str_field(j, "source"), r.source) == 0 && str_field(j, "method") &&
             strcmp(str_field(j, "method"), "GET") == 0 && str_field(j, "path") &&
             strcmp(str_field(j, "path"), r.path) == 0 && str_field(j, "project_id") &&
             strcmp(str_field(j, "project_id"), r.project_id) == 0 && str_field(j, "job_id") &&
             strcmp(str_field(j, "job_id"), job) == 0 && str_field(j, "cache") &&
             strcmp(str_field(j, "cache"), r.cache) == 0 &&
             num_field(j, "upstream_status") == (double)r.upstream_status &&
             num_field(j, "upstream_us") == (double)r.upstream_us && num_field(j, "status") == 200.0 &&
             num_field(j, "bytes") == (double)r.bytes_sent && !cJSON_HasObjectItem(j, "truncated") &&
             cJSON_GetArraySize(j) == 13;
    if (!ok)
        print_error("  line for record %ld (time %s) differs: %.300s\n", id, stamp, line);
    cJSON_Delete(j);
    return ok;
}

/* ------------------------------------------------------------------ tests */

/* 100,000 records from the calling thread: exactly 100,000 lines, in order,
 * each with the fields given. The bound is large enough that none may drop. */
static void test_hundred_thousand_lines(void **state)
{
    (void)state;
    enum { N = 100000 };
    char dir[512], path[600];
    tmp_make(dir, sizeof(dir));
    path_in(path, sizeof(path), dir, "audit.log");

    struct audit *a = open_or_fail(path, 0, (size_t)64 * 1024 * 1024, 0);
    int refused = 0;
    for (long i = 0; i < N; i++)
        refused += write_sample(a, i) != 0;
    assert_int_equal(refused, 0);
    audit_close(a);

    struct lines l;
    lines_read(&l, path);
    assert_int_equal(l.count, N);
    assert_true(l.last_ends_in_newline);
    int failed = 0;
    for (size_t i = 0; i < l.count && failed < 5; i++)
        failed += !line_matches_sample(l.line[i], (long)i);
    assert_int_equal(failed, 0);
    lines_free(&l);
    tmp_remove(dir);
}

struct writer_arg {
    struct audit *a;
    long first;
    long count;
    int refused;
};

static void *write_many(void *p)
{
    struct writer_arg *w = p;
    for (long i = 0; i < w->count; i++)
        w->refused += write_sample(w->a, w->first + i) != 0;
    return NULL;
}

/* Four threads at once: every line whole, each thread's lines in its order. */
static void test_concurrent_writers(void **state)
{
    (void)state;
    enum { THREADS = 4, PER = 25000 };
    char dir[512], path[600];
    tmp_make(dir, sizeof(dir));
    path_in(path, sizeof(path), dir, "audit.log");

    struct audit *a = open_or_fail(path, 0, (size_t)64 * 1024 * 1024, 0);
    pthread_t t[THREADS];
    struct writer_arg w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (struct writer_arg){a, (long)i * PER, PER, 0};
        assert_int_equal(pthread_create(&t[i], NULL, write_many, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(w[i].refused, 0);
    }
    audit_close(a);

    struct lines l;
    lines_read(&l, path);
    assert_int_equal(l.count, THREADS * PER);
    long next[THREADS] = {0};
    int failed = 0;
    for (size_t i = 0; i < l.count && failed < 5; i++) {
        cJSON *j = parse_line(l.line[i]);
        const char *rid = j ? str_field(j, "request_id") : NULL;
        long id = rid ? strtol(rid + 4, NULL, 10) : -1;
        int who = id >= 0 ? (int)(id / PER) : -1;
        if (who < 0 || who >= THREADS || id != (long)who * PER + next[who] || !line_matches_sample(l.line[i], id)) {
            print_error("  line %zu out of order or wrong: %.200s\n", i, l.line[i]);
            failed++;
        } else {
            next[who]++;
        }
        cJSON_Delete(j);
    }
    assert_int_equal(failed, 0);
    lines_free(&l);
    tmp_remove(dir);
}

/* Strings a client controls, and what the line must decode to. */
struct hostile {
    const char *name;
    const char *in;
    const char *expect; /* the decoded JSON string; NULL: same as in */
};

static const struct hostile hostile_cases[] = {
    {"quotes", "a\"b\"\"c", NULL},
    {"backslashes", "\\\\a\\\"\\u0041\\", NULL},
    {"newline and tab", "a\nb\rc\td", NULL},
    {"control bytes", "\x01\x02\x1b[31m\x1f\x7f", NULL},
    {"valid UTF-8", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", NULL},
    {"lone 0xff",
     "a\xff"
     "b",
     "a\xef\xbf\xbd"
     "b"},
    {"overlong slash", "\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd"},
    {"surrogate", "\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
    {"truncated sequence", "x\xe2\x82", "x\xef\xbf\xbd\xef\xbf\xbd"},
    {"beyond U+10FFFF", "\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
    {"continuation alone", "\x80z", "\xef\xbf\xbdz"},
    {"json injection", "\",\"status\":999,\"x\":\"", NULL},
};

/* Every hostile string, in every string field: valid JSON, valid UTF-8, and
 * it decodes to the string (invalid bytes as U+FFFD). */
static void test_hostile_strings(void **state)
{
    (void)state;
    enum { CASES = sizeof(hostile_cases) / sizeof(hostile_cases[0]) };
    char dir[512], path[600];
    tmp_make(dir, sizeof(dir));
    path_in(path, sizeof(path), dir, "audit.log");

    /* An 8 KiB path of every byte 1..255 over and over: kept whole. */
    static char big[8193];
    for (size_t i = 0; i < 8192; i++)
        big[i] = (char)(1 + i % 255);
    big[8192] = '\0';
    /* A 20 KiB path: cut at AUDIT_FIELD_MAX and flagged. */
    static char huge[20481];
    memset(huge, 'p', 20480);
    huge[20480] = '\0';

    struct audit *a = open_or_fail(path, 0, 0, 0);
    for (size_t i = 0; i < CASES; i++) {
        const char *s = hostile_cases[i].in;
        struct audit_record r = {.wall_ms = 0,
                                 .request_id = s,
                                 .client = s,
                                 .source = s,
                                 .method = s,
                                 .path = s,
                                 .project_id = s,
                                 .job_id = s,
                                 .cache = s,
                                 .upstream_us = -1,
                                 .status = 400};
        assert_int_equal(audit_write(a, &r), 0);
    }
    struct audit_record rb = {.request_id = "big", .method = "GET", .path = big, .cache = "DENIED", .status = 400};
    assert_int_equal(audit_write(a, &rb), 0);
    struct audit_record rh = {.request_id = "huge", .method = "GET", .path = huge, .cache = "DENIED", .status = 414};
    assert_int_equal(audit_write(a, &rh), 0);
    audit_close(a);

    struct lines l;
    lines_read(&l, path);
    assert_int_equal(l.count, CASES + 2);
    static const char *const fields[] = {"request_id", "client",     "source", "method",
                                         "path",       "project_id", "job_id", "cache"};
    int failed = 0;
    for (size_t i = 0; i < CASES; i++) {
        const struct hostile *h = &hostile_cases[i];
        const char *want = h->expect ? h->expect : h->in;
        cJSON *j = parse_line(l.line[i]);
        UNIT_EXPECT(failed, j != NULL, "%s: line is not valid", h->name);
        if (!j)
            continue;
        for (size_t f = 0; f < sizeof(fields) / sizeof(fields[0]); f++) {
            const char *got = str_field(j, fields[f]);
            UNIT_EXPECT(failed, got && strcmp(got, want) == 0, "%s: field %s decodes to '%s'", h->name, fields[f],
                        got ? got : "(missing)");
        }
        UNIT_EXPECT(failed, num_field(j, "status") == 400.0, "%s: status survived", h->name);
        UNIT_EXPECT(failed, cJSON_GetArraySize(j) == 13, "%s: %d keys", h->name, cJSON_GetArraySize(j));
        cJSON_Delete(j);
    }
    assert_int_equal(failed, 0);

    /* The 8 KiB path: every byte below 0x80 comes back, each byte above it
     * (never valid UTF-8 in this pattern, as each is alone) as U+FFFD. */
    cJSON *j = parse_line(l.line[CASES]);
    assert_non_null(j);
    const char *got = str_field(j, "path");
    assert_non_null(got);
    size_t k = 0;
    for (size_t i = 0; i < 8192; i++) {
        unsigned char c = (unsigned char)big[i];
        if (c < 0x80) {
            assert_int_equal((unsigned char)got[k], c);
            k++;
        } else if (c >= 0xC2 && c <= 0xF4 && i + 1 < 8192 && ((unsigned char)big[i + 1] & 0xC0) == 0x80) {
            fail_msg("pattern assumption broken at %zu", i);
        } else {
            assert_memory_equal(got + k, "\xef\xbf\xbd", 3);
            k += 3;
        }
    }
    assert_int_equal(got[k], '\0');
    assert_true(is_null_field(j, "client"));
    assert_false(cJSON_HasObjectItem(j, "truncated"));
    cJSON_Delete(j);

    j = parse_line(l.line[CASES + 1]);
    assert_non_null(j);
    got = str_field(j, "path");
    assert_non_null(got);
    assert_int_equal(strlen(got), AUDIT_FIELD_MAX);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "truncated")));
    assert_true(num_field(j, "status") == 414.0);
    cJSON_Delete(j);

    lines_free(&l);
    tmp_remove(dir);
}

/* Times around the edges, the fields the request path leaves empty. */
static void test_time_and_empty_fields(void **state)
{
    (void)state;
    char dir[512], path[600];
    tmp_make(dir, sizeof(dir));
    path_in(path, sizeof(path), dir, "audit.log");
    static const struct {
        int64_t ms;
        const char *iso;
    } times[] = {
        {0, "1970-01-01T00:00:00.000Z"},
        {999, "1970-01-01T00:00:00.999Z"},
        {951782400001, "2000-02-29T00:00:00.001Z"},
        {4102444799999, "2099-12-31T23:59:59.999Z"},
    };
    enum { T = sizeof(times) / sizeof(times[0]) };

    struct audit *a = open_or_fail(path, 0, 0, 0);
    for (size_t i = 0; i < T; i++) {
        struct audit_record r = {.wall_ms = times[i].ms, .upstream_us = -1, .status = 404};
        assert_int_equal(audit_write(a, &r), 0);
    }
    audit_close(a);

    struct lines l;
    lines_read(&l, path);
    assert_int_equal(l.count, T);
    for (size_t i = 0; i < T; i++) {
        cJSON *j = parse_line(l.line[i]);
        assert_non_null(j);
        assert_string_equal(str_field(j, "time"), times[i].iso);
        static const char *const fields[] = {"request_id", "client",     "source", "method",
                                             "path",       "project_id", "job_id", "cache"};
        for (size_t f = 0; f < sizeof(fields) / sizeof(fields[0]); f++)
            assert_true(is_null_field(j, fields[f]));
        assert_true(num_field(j, "upstream_status") == 0.0);
        assert_true(num_field(j, "upstream_us") == -1.0);
        assert_true(num_field(j, "status") == 404.0);
        cJSON_Delete(j);
    }
    lines_free(&l);
    tmp_remove(dir);
}

/* audit_write leaves the disk alone: with a 60 s interval and little data,
 * nothing reaches the file until audit_close, which writes all of it. */
static void test_write_does_not_touch_disk(void **state)
{
    (void)state;
    char dir[512], path[600];
    tmp_make(dir, sizeof(dir));
    path_in(path, sizeof(path), dir, "audit.log");

    struct audit *a = open_or_fail(path, 0, 0, AUDIT_MAX_FLUSH_MS);
    for (long i = 0; i < 50; i++)
        assert_int_equal(write_sample(a, i), 0);
    sleep_ms(300);
    assert_int_equal(file_lines(path), 0);
    struct audit_health h;
    audit_health(a, &h);
    assert_true(h.ok);
    assert_int_equal(h.written, 0);
    assert_true(h.buffered > 0);
    audit_close(a);
    assert_int_equal(file_lines(path), 50);
    tmp_remove(dir);
}

/* Without close, lines reach the file within the flush interval (1 s). */
static void test_flush_within_interval(void **state)
{
    (void)state;
    char dir[512], path[600];
    tmp_make(dir, sizeof(dir));
    path_in(path, sizeof(path), dir, "audit.log");

    struct audit *a = open_or_fail(path, 0, 0, 0);
    sleep_ms(200); /* not aligned with the writer's tick */
    for (long i = 0; i < 10; i++)
        assert_int_equal(write_sample(a, i), 0);
    sleep_ms(1500);
    assert_int_equal(file_lines(path), 10);
    struct audit_health h;
    audit_health(a, &h);
    assert_int_equal(h.written, 10);
    assert_int_equal(h.buffered, 0);

    /* And again, a second batch, now that the writer has ticked. */
    for (long i = 10; i < 20; i++)
        assert_int_equal(write_sample(a, i), 0);
    sleep_ms(1500);
    assert_int_equal(file_lines(path), 20);
    audit_close(a);
    tmp_remove(dir);
}

/* Past the threshold (64 KiB), the writer does not wait for its tick. */
static void test_threshold_flushes_early(void **state)
{
    (void)state;
    char dir[512], path[600];
    tmp_make(dir, sizeof(dir));
    path_in(path, sizeof(path), dir, "audit.log");

    struct audit *a = open_or_fail(path, 0, 0, AUDIT_MAX_FLUSH_MS);
    for (long i = 0; i < 1000; i++) /* about 300 KiB */
        assert_int_equal(write_sample(a, i), 0);
    sleep_ms(500);
    size_t n = file_lines(path);
    assert_true(n > 0);
    audit_close(a);
    assert_int_equal(file_lines(path), 1000);
    tmp_remove(dir);
}

/* Check that `path` holds exactly the sample records first..first+count-1. */
static void assert_file_holds(const char *path, long first, long count)
{
    struct lines l;
    lines_read(&l, path);
    if (l.count != (size_t)count)
        fail_msg("%s has %zu lines, expected %ld", path, l.count, count);
    int failed = 0;
    for (size_t i = 0; i < l.count && failed < 5; i++)
        failed += !line_matches_sample(l.line[i], first + (long)i);
    lines_free(&l);
    assert_int_equal(failed, 0);
}

/* logrotate: rename the file, reopen, write on. The old file keeps exactly
 * the lines written before the reopen, the new one exactly the rest; both
 * with lines still buffered at the reopen and with lines already written. */
static void test_reopen_after_rename(void **state)
{
    (void)state;
    char dir[512], path[600], rotated[600], rotated2[600];
    tmp_make(dir, sizeof(dir));
    path_in(path, sizeof(path), dir, "audit.log");
    path_in(rotated, sizeof(rotated), dir, "audit.log.1");
    path_in(rotated2, sizeof(rotated2), dir, "audit.log.2");

    struct audit *a = open_or_fail(path, 0, 0, 100);
    /* Still buffered when the file is renamed and the reopen asked for. */
    for (long i = 0; i < 500; i++)
        assert_int_equal(write_sample(a, i), 0);
    assert_int_equal(rename(path, rotated), 0);
    audit_reopen(a);
    for (long i = 500; i < 1000; i++)
        assert_int_equal(write_sample(a, i), 0);
    sleep_ms(400); /* all written, by several ticks */

    /* Already written when renamed. */
    assert_int_equal(rename(path, rotated2), 0);
    audit_reopen(a);
    for (long i = 1000; i < 1200; i++)
        assert_int_equal(write_sample(a, i), 0);

    struct audit_health h;
    audit_health(a, &h);
    assert_true(h.ok);
    assert_int_equal(h.write_errors, 0);
    audit_close(a);

    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777 & ~0640, 0); /* 0640, less the umask */
    assert_file_holds(rotated, 0, 500);
    assert_file_holds(rotated2, 500, 500);
    assert_file_holds(path, 1000, 200);
    tmp_remove(dir);
}

/* A reopen that fails (the folder is gone) keeps the old file: nothing is
 * lost, the log stays ok (even fail-closed), the failure is counted, and the
 * reopen is retried on every tick until the folder is back. */
static void test_reopen_fails_then_succeeds(void **state)
{
    (void)state;
    char dir[512], sub[600], path[700], old[600];
    tmp_make(dir, sizeof(dir));
    path_in(sub, sizeof(sub), dir, "sub");
    path_in(path, sizeof(path), sub, "audit.log");
    path_in(old, sizeof(old), dir, "old.log");
    assert_int_equal(mkdir(sub, 0700), 0);

    struct audit *a = open_or_fail(path, 1, 0, 50);
    for (long i = 0; i < 100; i++)
        assert_int_equal(write_sample(a, i), 0);
    assert_int_equal(rename(path, old), 0);
    assert_int_equal(rmdir(sub), 0);
    audit_reopen(a);
    for (long i = 100; i < 200; i++)
        assert_int_equal(write_sample(a, i), 0);
    sleep_ms(300);

    struct audit_health h;
    audit_health(a, &h);
    assert_true(h.ok);
    assert_true(h.write_errors >= 2); /* the reopen, and at least one retry */
    assert_int_equal(h.written, 200);
    assert_int_equal(h.buffered, 0);
    assert_non_null(strstr(h.last_error, "reopen"));
    assert_non_null(strstr(h.last_error, "No such file or directory"));
    assert_false(audit_blocks_requests(a));
    assert_file_holds(old, 0, 200);

    /* The folder is back: the next tick opens the path. */
    assert_int_equal(mkdir(sub, 0700), 0);
    struct stat st;
    for (int waited = 0; stat(path, &st) != 0; waited += 20) {
        if (waited > 3000)
            fail_msg("%s not reopened after 3 s", path);
        sleep_ms(20);
    }
    for (long i = 200; i < 300; i++)
        assert_int_equal(write_sample(a, i), 0);
    audit_close(a);
    assert_file_holds(old, 0, 200);
    assert_file_holds(path, 200, 100);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(rmdir(sub), 0);
    tmp_remove(dir);
}

static int has_write_errors(const struct audit_health *h)
{
    return !h->ok && h->write_errors > 0;
}

static int recovered(const struct audit_health *h)
{
    return h->ok && h->buffered == 0;
}

/*
 * A failing sink (the path is a symlink to /dev/full: ENOSPC) under one
 * policy: the failure shows in audit_health, records are kept up to the bound
 * and then dropped and counted, audit_blocks_requests follows the policy,
 * and when the path is writable again (the symlink removed) the writer
 * recovers by itself and writes every record it kept, once.
 */
static void check_failing_sink(int fail_closed)
{
    enum { MAX = 64 * 1024 };
    char dir[512], path[600];
    tmp_make(dir, sizeof(dir));
    path_in(path, sizeof(path), dir, "audit.log");
    assert_int_equal(symlink("/dev/full", path), 0);

    struct audit *a = open_or_fail(path, fail_closed, MAX, 50);
    struct audit_health h;
    audit_health(a, &h);
    assert_true(h.ok);
    assert_false(audit_blocks_requests(a));

    long id = 0;
    for (; id < 10; id++)
        assert_int_equal(write_sample(a, id), 0);
    if (!wait_health(a, has_write_errors, 3000, &h))
        fail_msg("no write error after 3 s (ok=%d errors=%llu)", h.ok, (unsigned long long)h.write_errors);
    assert_non_null(strstr(h.last_error, "No space left on device"));
    assert_non_null(strstr(h.last_error, path));
    assert_int_equal(h.written, 0);
    assert_int_equal(h.dropped, 0);
    assert_int_equal(audit_blocks_requests(a), fail_closed);

    /* Fill up to the bound: then records are refused and counted. */
    long kept = id, refused = 0;
    for (int i = 0; i < 2000; i++, id++) {
        if (write_sample(a, id) == 0)
            kept++;
        else
            refused++;
    }
    assert_true(kept > 10 && kept < 2000);
    assert_true(refused > 0);
    audit_health(a, &h);
    assert_int_equal(h.dropped, refused);
    assert_true(h.buffered <= MAX && h.buffered > MAX - 1024);
    assert_false(h.ok);
    assert_int_equal(audit_blocks_requests(a), fail_closed);

    /* Still failing a few ticks later: the kept data stays, nothing more goes. */
    sleep_ms(200);
    audit_health(a, &h);
    assert_true(h.write_errors >= 2);
    assert_int_equal(h.dropped, refused);
    assert_int_equal(h.written, 0);

    /* The path becomes writable: the writer reopens it and catches up. */
    assert_int_equal(unlink(path), 0);
    if (!wait_health(a, recovered, 3000, &h))
        fail_msg("no recovery after 3 s: ok=%d buffered=%zu last_error=%s", h.ok, h.buffered, h.last_error);
    assert_int_equal(h.written, kept);
    assert_int_equal(h.dropped, refused);
    assert_false(audit_blocks_requests(a));
    assert_file_holds(path, 0, kept);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_true(st.st_size <= MAX); /* what was kept during the failure stayed under the bound */

    /* New records go through as before. */
    for (int i = 0; i < 100; i++)
        assert_int_equal(write_sample(a, 100000 + i), 0);
    audit_close(a);
    assert_int_equal(file_lines(path), (size_t)kept + 100);
    tmp_remove(dir);
}

static void test_failing_sink_fail_open(void **state)
{
    (void)state;
    check_failing_sink(0);
}

static void test_failing_sink_fail_closed(void **state)
{
    (void)state;
    check_failing_sink(1);
}

/* Shutdown while the sink fails: audit_close still returns; the lines it
 * could not write are counted, and it cannot be made to hang. */
static void test_close_while_failing(void **state)
{
    (void)state;
    char dir[512], path[600];
    tmp_make(dir, sizeof(dir));
    path_in(path, sizeof(path), dir, "audit.log");
    assert_int_equal(symlink("/dev/full", path), 0);
    struct audit *a = open_or_fail(path, 1, 0, 50);
    for (long i = 0; i < 10; i++)
        assert_int_equal(write_sample(a, i), 0);
    audit_close(a);
    tmp_remove(dir);
}

/* Settings audit_open refuses, each with a message. */
static void test_open_refuses(void **state)
{
    (void)state;
    char dir[512], path[600];
    tmp_make(dir, sizeof(dir));
    path_in(path, sizeof(path), dir, "no-such-folder/audit.log");
    static const struct {
        const char *path;
        size_t max;
        int64_t flush_ms;
        const char *fragment;
    } bad[] = {
        {NULL, 0, 0, "no path"},
        {"", 0, 0, "no path"},
        {"-", 1024, 0, "at least"},
        {"-", 0, -5, "flush interval"},
        {"-", 0, AUDIT_MAX_FLUSH_MS + 1, "flush interval"},
    };
    int failed = 0;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct audit_conf conf = {
            .path = bad[i].path, .max_buffered_bytes = bad[i].max, .flush_interval_ms = bad[i].flush_ms};
        char err[256] = "";
        struct audit *a = audit_open(&conf, err, sizeof(err));
        UNIT_EXPECT(failed, a == NULL && strstr(err, bad[i].fragment), "case %zu: err '%s'", i, err);
        audit_close(a);
    }
    assert_int_equal(failed, 0);

    struct audit_conf conf = {.path = path};
    char err[256] = "";
    assert_null(audit_open(&conf, err, sizeof(err)));
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "No such file or directory"));

    /* "-" is stderr: it opens, and closing it leaves stderr open. */
    conf.path = "-";
    struct audit *a = audit_open(&conf, err, sizeof(err));
    assert_non_null(a);
    audit_close(a);
    assert_int_not_equal(fcntl(STDERR_FILENO, F_GETFD), -1);
    tmp_remove(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hundred_thousand_lines),
        cmocka_unit_test(test_concurrent_writers),
        cmocka_unit_test(test_hostile_strings),
        cmocka_unit_test(test_time_and_empty_fields),
        cmocka_unit_test(test_write_does_not_touch_disk),
        cmocka_unit_test(test_flush_within_interval),
        cmocka_unit_test(test_threshold_flushes_early),
        cmocka_unit_test(test_reopen_after_rename),
        cmocka_unit_test(test_reopen_fails_then_succeeds),
        cmocka_unit_test(test_failing_sink_fail_open),
        cmocka_unit_test(test_failing_sink_fail_closed),
        cmocka_unit_test(test_close_while_failing),
        cmocka_unit_test(test_open_refuses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
