/*
 * libFuzzer target for the body classifier, proxy/classify.c (on jsonpath.c
 * and cJSON): the input is an upstream 200 body, classified with the job
 * description of every shipped rule (fuzz_shipped.h), as the gateway does
 * before it decides whether and how long to cache an answer.
 *
 * Each body is classified for three request ids (a 32-hex id, a UUID, and
 * none) and into state buffers of 64 bytes (the gateway's), 5, 1 and 0
 * bytes. The checks, beyond "no crash, no leak":
 *
 *  - the class is one of enum job_class, and the same body gives the same
 *    class and state twice;
 *  - the class and state agree with a reference written here from the
 *    contract in classify.h (the body is one JSON object with only
 *    whitespace around it; the state is the string at the rule's state path;
 *    the identity field must equal the request's id; a job is terminal only
 *    when its state and every sub-job's state are terminal values; a body
 *    holding a NUL, raw or escaped, or bytes that are not UTF-8, or naming a key of the state, identity or
 *    sub-job paths twice (in any case) on the way, is ambiguous);
 *  - the state is NUL-terminated inside its buffer, is the body's state
 *    truncated to the buffer, and nothing past the buffer is written;
 *  - when the body has no backslash (no JSON escapes), a non-empty state
 *    occurs in it byte for byte;
 *  - classify_state_failed() says "failed" exactly for the rule's failure
 *    values.
 */
#include <errno.h>
#include <iconv.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "rules.h"
#include "fuzz_oracle.h"
#include "fuzz_shipped.h"

#define JID  "4a6f6b50c1d64cba9b0f7d1e2c3a4b5d"
#define UUID "9c3d6a1e-4b2f-4c8d-9e7a-1b2c3d4e5f60"

#define MAX_INPUT 65536
#define CANARY    0xA5
#define GUARD     8

static struct ruleset *shipped;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    shipped = fuzz_shipped_rules();
    return 0;
}

/* ------------------------------------------------------------ reference */

/* The body as exactly one JSON value with only whitespace around it, or NULL. */
static cJSON *reference_parse(const char *body, size_t len)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(body, len, &end, 0);
    if (!root)
        return NULL;
    size_t used = (size_t)(end - body);
    while (used < len && strchr(" \t\r\n", body[used]) && body[used] != '\0')
        used++;
    if (used != len) {
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

/* Follow the object members named by `p` from `item`. */
static const cJSON *reference_get(const struct jsonpath *p, const cJSON *item)
{
    if (p->nparts == 0)
        return NULL;
    for (size_t i = 0; i < p->nparts && item; i++)
        item = cJSON_IsObject(item) ? cJSON_GetObjectItemCaseSensitive(item, p->parts[i]) : NULL;
    return item;
}

static const char *reference_string(const struct jsonpath *p, const cJSON *item)
{
    const cJSON *s = reference_get(p, item);
    return cJSON_IsString(s) ? s->valuestring : NULL;
}

static int reference_terminal(const struct classify_spec *spec, const char *state)
{
    for (size_t i = 0; i < spec->nterminal; i++)
        if (strcmp(spec->terminal[i], state) == 0)
            return 1;
    return 0;
}

static int reference_failed(const struct classify_spec *spec, const char *state)
{
    for (size_t i = 0; i < spec->nterminal; i++)
        if (strcmp(spec->terminal[i], state) == 0)
            return spec->failure && spec->failure[i];
    return 0;
}

/* An escaped NUL: "\\u0000" preceded by an even run of backslashes (so the
 * backslash before the u is not itself escaped). */
static int reference_has_nul(const char *body, size_t len)
{
    if (memchr(body, '\0', len))
        return 1;
    for (size_t i = 0; i + 6 <= len; i++) {
        if (memcmp(body + i, "\\u0000", 6) != 0)
            continue;
        size_t run = 0;
        while (run < i && body[i - 1 - run] == '\\')
            run++;
        if (run % 2 == 0)
            return 1;
    }
    return 0;
}

/* Well-formed UTF-8, as glibc's iconv judges it (a converter written
 * elsewhere than proxy/encoding.c). */
static int reference_utf8(const char *body, size_t len)
{
    iconv_t cd = iconv_open("UTF-32LE", "UTF-8");
    if (cd == (iconv_t)-1)
        abort();
    char *in = (char *)body;
    size_t left = len;
    int ok = 1;
    while (left && ok) {
        char out[1024], *o = out;
        size_t room = sizeof(out);
        if (iconv(cd, &in, &left, &o, &room) == (size_t)-1 && errno != E2BIG)
            ok = 0;
    }
    iconv_close(cd);
    return ok;
}

/* Ambiguous when the first and the last member matching a step, ignoring
 * case, are not the same member. */
static int reference_path_ambiguous(const struct jsonpath *p, const cJSON *item)
{
    for (size_t i = 0; i < p->nparts && cJSON_IsObject(item); i++) {
        const cJSON *first = NULL, *last = NULL;
        for (const cJSON *c = item->child; c; c = c->next)
            if (c->string && strcasecmp(c->string, p->parts[i]) == 0) {
                if (!first)
                    first = c;
                last = c;
            }
        if (first != last)
            return 1;
        item = cJSON_GetObjectItemCaseSensitive(item, p->parts[i]);
    }
    return 0;
}

static int reference_ambiguous(const struct classify_spec *spec, const cJSON *root)
{
    if (reference_path_ambiguous(&spec->state, root) || reference_path_ambiguous(&spec->identity, root) ||
        reference_path_ambiguous(&spec->sub_jobs, root))
        return 1;
    const cJSON *list = reference_get(&spec->sub_jobs, root);
    if (cJSON_IsArray(list))
        for (const cJSON *sub = list->child; sub; sub = sub->next)
            if (reference_path_ambiguous(&spec->sub_state, sub))
                return 1;
    return 0;
}

/* classify.h's contract, plainly. *state_out: the body's state, or NULL. */
static enum job_class reference_classify(const struct classify_spec *spec, const cJSON *root, int has_nul,
                                         const char *expected_id, const char **state_out)
{
    *state_out = NULL;
    if (has_nul)
        return JOB_AMBIGUOUS;
    if (!cJSON_IsObject(root))
        return JOB_NOT_JOB;
    if (reference_ambiguous(spec, root))
        return JOB_AMBIGUOUS;
    const char *state = reference_string(&spec->state, root);
    if (!state)
        return JOB_NOT_JOB;
    *state_out = state;
    if (spec->identity.nparts) {
        const char *id = reference_string(&spec->identity, root);
        if (!id || !expected_id || strcmp(id, expected_id) != 0)
            return JOB_OTHER_JOB;
    }
    if (!reference_terminal(spec, state))
        return JOB_PENDING;
    if (spec->sub_jobs.nparts) {
        const cJSON *list = reference_get(&spec->sub_jobs, root);
        if (list && !cJSON_IsNull(list)) {
            if (!cJSON_IsArray(list))
                return JOB_PENDING;
            for (const cJSON *sub = list->child; sub; sub = sub->next) {
                const char *s = reference_string(&spec->sub_state, sub);
                if (!s || !reference_terminal(spec, s))
                    return JOB_PENDING;
            }
        }
    }
    return JOB_TERMINAL;
}

/* ---------------------------------------------------------------- checks */

static void classify_one(const struct rule *r, const char *body, size_t len, const cJSON *root, int no_escapes,
                         int has_nul, const char *expected_id, size_t statelen)
{
    unsigned char buf[64 + GUARD], again[64 + GUARD];
    memset(buf, CANARY, sizeof(buf));
    memset(again, CANARY, sizeof(again));
    char *state = (char *)buf;

    enum job_class c = classify_body(&r->job, body, len, expected_id, state, statelen);
    enum job_class c2 = classify_body(&r->job, body, len, expected_id, (char *)again, statelen);
    const char *id = expected_id ? expected_id : "(none)";

    FUZZ_CHECK(c == JOB_TERMINAL || c == JOB_PENDING || c == JOB_NOT_JOB || c == JOB_OTHER_JOB || c == JOB_AMBIGUOUS,
               "rule '%s': class %d", r->name, (int)c);
    FUZZ_CHECK(c == c2 && memcmp(buf, again, sizeof(buf)) == 0, "rule '%s', id %s: classified %s, then %s", r->name, id,
               job_class_name(c), job_class_name(c2));
    for (size_t i = statelen; i < sizeof(buf); i++)
        FUZZ_CHECK(buf[i] == CANARY, "rule '%s': byte %zu written past a state buffer of %zu", r->name, i, statelen);
    if (statelen == 0)
        return;
    FUZZ_CHECK(memchr(state, '\0', statelen) != NULL, "rule '%s': state not terminated in %zu bytes", r->name,
               statelen);

    const char *want_state;
    enum job_class want = reference_classify(&r->job, root, has_nul, expected_id, &want_state);
    FUZZ_CHECK(c == want, "rule '%s', id %s: class %s, the contract says %s", r->name, id, job_class_name(c),
               job_class_name(want));

    /* The state found, truncated to the buffer; nothing when there is none. */
    size_t n = strlen(state);
    if (!want_state) {
        FUZZ_CHECK(n == 0, "rule '%s': state '%s' from a body without one", r->name, state);
        return;
    }
    size_t want_n = strlen(want_state) < statelen - 1 ? strlen(want_state) : statelen - 1;
    FUZZ_CHECK(n == want_n && memcmp(state, want_state, n) == 0, "rule '%s': state '%s', want '%.*s'", r->name, state,
               (int)want_n, want_state);
    if (no_escapes && n > 0)
        FUZZ_CHECK(memmem(body, len, state, n) != NULL,
                   "rule '%s': state '%s' does not occur in a body without escapes", r->name, state);
    if (c == JOB_TERMINAL && n == strlen(want_state))
        FUZZ_CHECK(classify_state_failed(&r->job, state) == reference_failed(&r->job, state),
                   "rule '%s': state '%s' failed=%d", r->name, state, classify_state_failed(&r->job, state));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t statelens[] = {64, 5, 1, 0};
    static const char *const ids[] = {JID, UUID, NULL};
    if (size > MAX_INPUT)
        return 0;
    /* An exact-size copy, so that reading past the body is caught. */
    char *body = malloc(size ? size : 1);
    if (!body)
        return 0;
    memcpy(body, data, size);
    cJSON *root = reference_parse(body, size);
    int no_escapes = memchr(body, '\\', size) == NULL;
    int has_nul = reference_has_nul(body, size) || !reference_utf8(body, size);

    for (size_t k = 0; k < shipped->count; k++)
        for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++)
            for (size_t j = 0; j < sizeof(statelens) / sizeof(statelens[0]); j++)
                classify_one(shipped->rules[k], body, size, root, no_escapes, has_nul, ids[i], statelens[j]);

    cJSON_Delete(root);
    free(body);
    return 0;
}
