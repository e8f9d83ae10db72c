/*
 * libFuzzer target for the error mapper, proxy/errmap.c (on jsonpath.c and
 * cJSON): what a client sees when upstream answers with an error. The input
 * is an upstream status (its first two bytes, as a number 100..599) and the
 * upstream body (the rest), mapped with the error map of every shipped rule
 * (fuzz_shipped.h) and then rendered as the client's JSON body.
 *
 * The checks, beyond "no crash, no leak":
 *
 *  - the status is in the documented table and never 200, Retry-After is
 *    0..3600, and the answer is the same twice;
 *  - code and message are non-empty, NUL-terminated in their buffers and
 *    valid UTF-8 (checked here by an independent decoder);
 *  - upstream's own code and message are kept: when the body is one JSON
 *    object whose first shape (in the map's order) with a non-empty code
 *    string gives a code (and message) that is valid UTF-8 and fits, the
 *    answer carries exactly that; the status then comes from the map's entry
 *    for that code, else for the upstream status, else its class, else 502;
 *  - client_error_render() parses back with cJSON and carries the same code,
 *    message and request id.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "rules.h"
#include "fuzz_oracle.h"
#include "fuzz_shipped.h"

#define MAX_INPUT   65536
#define REQUEST_ID  "fuzz-0123456789abcdef"
#define CANARY_BYTE 0xA5 /* fills an answer before it is mapped: every field must be written */

static struct ruleset *shipped;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    shipped = fuzz_shipped_rules();
    return 0;
}

/* ------------------------------------------------------------ reference */

/* Is `s` valid UTF-8 (RFC 3629: shortest form, no surrogates, <= U+10FFFF)? */
static int utf8_valid(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned cp;
        int extra;
        if (p[0] < 0x80) {
            p++;
            continue;
        } else if (p[0] >= 0xC2 && p[0] <= 0xDF) {
            cp = p[0] & 0x1Fu, extra = 1;
        } else if (p[0] >= 0xE0 && p[0] <= 0xEF) {
            cp = p[0] & 0x0Fu, extra = 2;
        } else if (p[0] >= 0xF0 && p[0] <= 0xF4) {
            cp = p[0] & 0x07u, extra = 3;
        } else {
            return 0;
        }
        for (int i = 1; i <= extra; i++) {
            if ((p[i] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (p[i] & 0x3Fu);
        }
        if ((extra == 2 && cp < 0x800) || (extra == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        p += extra + 1;
    }
    return 1;
}

/* The body as exactly one JSON value with only whitespace around it, or NULL. */
static cJSON *reference_parse(const char *body, size_t len)
{
    if (len == 0)
        return NULL;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(body, len, &end, 0);
    if (!root)
        return NULL;
    size_t used = (size_t)(end - body);
    while (used < len && body[used] != '\0' && strchr(" \t\r\n", body[used]))
        used++;
    if (used != len) {
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

static const char *reference_string(const struct jsonpath *p, const cJSON *item)
{
    if (p->nparts == 0)
        return NULL;
    for (size_t i = 0; i < p->nparts && item; i++)
        item = cJSON_IsObject(item) ? cJSON_GetObjectItemCaseSensitive(item, p->parts[i]) : NULL;
    return cJSON_IsString(item) ? item->valuestring : NULL;
}

/* Upstream's code and message from the first shape that has a non-empty code. */
static void reference_upstream_code(const struct errmap *map, const cJSON *root, const char **code,
                                    const char **message)
{
    *code = *message = NULL;
    for (size_t i = 0; root && i < map->nshapes; i++) {
        const char *c = reference_string(&map->shapes[i].code, root);
        if (c && *c) {
            *code = c;
            *message = reference_string(&map->shapes[i].message, root);
            return;
        }
    }
}

/* Kept as it is: valid UTF-8 that fits the buffer of `size` bytes. */
static int kept_verbatim(const char *s, size_t size)
{
    return s && strlen(s) < size && utf8_valid(s);
}

/* ---------------------------------------------------------------- checks */

static void check_text(const struct rule *r, const char *what, const char *text, size_t size)
{
    FUZZ_CHECK(memchr(text, '\0', size) != NULL, "rule '%s': %s not terminated in its %zu bytes", r->name, what, size);
    FUZZ_CHECK(text[0] != '\0', "rule '%s': empty %s", r->name, what);
    FUZZ_CHECK(utf8_valid(text), "rule '%s': %s '%s' is not valid UTF-8", r->name, what, text);
}

static void check_render(const struct rule *r, const struct client_error *e, const char *request_id)
{
    enum error_shape shape = r->errors.reply_shape;
    char *text = client_error_render(e, request_id, shape);
    FUZZ_CHECK(text != NULL, "rule '%s': render failed", r->name);
    cJSON *doc = cJSON_Parse(text);
    FUZZ_CHECK(cJSON_IsObject(doc), "rule '%s': rendered body does not parse: %s", r->name, text);
    /* Where the official SDKs read them (errmap.h, enum error_shape). */
    const cJSON *holder = shape == ERROR_SHAPE_ELB ? cJSON_GetObjectItemCaseSensitive(doc, "error") : doc;
    FUZZ_CHECK(cJSON_IsObject(holder), "rule '%s': no error object in %s", r->name, text);
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(holder, shape == ERROR_SHAPE_ELB ? "code" : "error_code");
    const cJSON *message = cJSON_GetObjectItemCaseSensitive(holder, shape == ERROR_SHAPE_ELB ? "message" : "error_msg");
    const cJSON *rid = cJSON_GetObjectItemCaseSensitive(doc, "request_id");
    FUZZ_CHECK(cJSON_IsString(code) && strcmp(code->valuestring, e->code) == 0, "rule '%s': rendered code in %s",
               r->name, text);
    FUZZ_CHECK(cJSON_IsString(message) && strcmp(message->valuestring, e->message) == 0,
               "rule '%s': rendered message in %s", r->name, text);
    if (request_id)
        FUZZ_CHECK(cJSON_IsString(rid) && strcmp(rid->valuestring, request_id) == 0,
                   "rule '%s': rendered request_id in %s", r->name, text);
    else
        FUZZ_CHECK(rid == NULL, "rule '%s': a request_id without one: %s", r->name, text);
    FUZZ_CHECK(cJSON_GetArraySize(doc) == (shape == ERROR_SHAPE_ELB ? 1 : 2) + (request_id ? 1 : 0),
               "rule '%s': rendered members: %s", r->name, text);
    cJSON_Delete(doc);
    cJSON_free(text);
}

static void map_one(const struct rule *r, int status, const char *body, size_t len, const cJSON *root)
{
    const struct errmap *map = &r->errors;
    struct client_error e, again;
    memset(&e, CANARY_BYTE, sizeof(e));
    errmap_from_upstream(map, status, body, len, &e);
    errmap_from_upstream(map, status, body, len, &again);

    FUZZ_CHECK(http_status_documented(e.status) && e.status != 200,
               "rule '%s', upstream %d: status %d is not a documented error", r->name, status, e.status);
    FUZZ_CHECK(e.retry_after >= 0 && e.retry_after <= 3600, "rule '%s': retry_after %d", r->name, e.retry_after);
    check_text(r, "code", e.code, sizeof(e.code));
    check_text(r, "message", e.message, sizeof(e.message));
    FUZZ_CHECK(e.status == again.status && e.retry_after == again.retry_after && strcmp(e.code, again.code) == 0 &&
                   strcmp(e.message, again.message) == 0,
               "rule '%s', upstream %d: two answers differ", r->name, status);

    /* Upstream's code and message, kept; the entry that answers. */
    const char *up_code, *up_message;
    reference_upstream_code(map, root, &up_code, &up_message);
    if (up_code && kept_verbatim(up_code, sizeof(e.code))) {
        FUZZ_CHECK(strcmp(e.code, up_code) == 0, "rule '%s': upstream code '%s' answered as '%s'", r->name, up_code,
                   e.code);
        if (up_message && *up_message && kept_verbatim(up_message, sizeof(e.message)))
            FUZZ_CHECK(strcmp(e.message, up_message) == 0, "rule '%s': upstream message '%s' answered as '%s'", r->name,
                       up_message, e.message);
    }
    if (up_code && !kept_verbatim(up_code, sizeof(e.code)))
        return; /* the lookup is by the cleaned-up code: not modelled here */
    const struct errmap_entry *want = NULL;
    for (size_t i = 0; up_code && i < map->ncodes && !want; i++)
        if (strcmp(map->codes[i].code, up_code) == 0)
            want = &map->codes[i].entry;
    if (!want)
        want = errmap_for_status(map, status);
    int want_status = want ? want->status : 502, want_retry = want ? want->retry_after : 0;
    FUZZ_CHECK(e.status == want_status && e.retry_after == want_retry,
               "rule '%s', upstream %d, code '%s': answered %d (Retry-After %d), the map says %d (%d)", r->name, status,
               up_code ? up_code : "(none)", e.status, e.retry_after, want_status, want_retry);
    if (!up_code && want && want->code && kept_verbatim(want->code, sizeof(e.code)))
        FUZZ_CHECK(strcmp(e.code, want->code) == 0, "rule '%s': code '%s', the map says '%s'", r->name, e.code,
                   want->code);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2 || size > MAX_INPUT)
        return 0;
    int status = 100 + (int)(((unsigned)data[0] << 8 | data[1]) % 500);
    size_t len = size - 2;
    /* An exact-size copy, so that reading past the body is caught. */
    char *body = malloc(len ? len : 1);
    if (!body)
        return 0;
    memcpy(body, data + 2, len);
    cJSON *root = reference_parse(body, len);

    for (size_t k = 0; k < shipped->count; k++) {
        const struct rule *r = shipped->rules[k];
        map_one(r, status, body, len, root);
        struct client_error e;
        errmap_from_upstream(&r->errors, status, body, len, &e);
        check_render(r, &e, REQUEST_ID);
        check_render(r, &e, NULL);
    }
    cJSON_Delete(root);
    free(body);
    return 0;
}
