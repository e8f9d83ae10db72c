#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "classify.h"
#include "encoding.h"

static int terminal_index(const struct classify_spec *spec, const char *state)
{
    for (size_t i = 0; i < spec->nterminal; i++)
        if (strcmp(state, spec->terminal[i]) == 0)
            return (int)i;
    return -1;
}

static int state_terminal(const struct classify_spec *spec, const char *state)
{
    return terminal_index(spec, state) >= 0;
}

static int sub_jobs_terminal(const struct classify_spec *spec, const cJSON *root)
{
    if (!spec->sub_jobs.nparts)
        return 1;
    const cJSON *list = jsonpath_get(&spec->sub_jobs, root);
    if (!list || cJSON_IsNull(list))
        return 1; /* no sub-jobs */
    if (!cJSON_IsArray(list))
        return 0;
    const cJSON *sub;
    cJSON_ArrayForEach(sub, list)
    {
        const char *state = jsonpath_get_string(&spec->sub_state, sub);
        if (!state || !state_terminal(spec, state))
            return 0;
    }
    return 1;
}

/* Members of `obj` named `name`, in any case (Go's encoding/json matches
 * keys that way, and takes the last). */
static int members_named(const cJSON *obj, const char *name)
{
    int n = 0;
    const cJSON *child;
    cJSON_ArrayForEach(child, obj)
    {
        if (child->string && strcasecmp(child->string, name) == 0)
            n++;
    }
    return n;
}

/* Does some object on the way along `p` from `item` name the next step twice? */
static int path_ambiguous(const struct jsonpath *p, const cJSON *item)
{
    for (size_t i = 0; i < p->nparts && cJSON_IsObject(item); i++) {
        if (members_named(item, p->parts[i]) > 1)
            return 1;
        item = cJSON_GetObjectItemCaseSensitive(item, p->parts[i]);
    }
    return 0;
}

/* A NUL in the body, raw or escaped: cJSON's strings end at it, so
 * "SUCCESS\u0000RUNNING" would read SUCCESS here and the whole string
 * elsewhere. Outside strings a backslash is not JSON, so every escape
 * seen here is inside one. */
static int has_nul(const char *body, size_t len)
{
    if (memchr(body, '\0', len))
        return 1;
    for (size_t i = 0; i + 1 < len; i++) {
        if (body[i] != '\\')
            continue;
        if (body[i + 1] == 'u' && i + 5 < len && memcmp(body + i + 2, "0000", 4) == 0)
            return 1;
        i++; /* skip the escaped character: "\\u0000" is a backslash, then text */
    }
    return 0;
}

static int body_ambiguous(const struct classify_spec *spec, const cJSON *root)
{
    if (path_ambiguous(&spec->state, root) || path_ambiguous(&spec->identity, root) ||
        path_ambiguous(&spec->sub_jobs, root))
        return 1;
    const cJSON *list = spec->sub_jobs.nparts ? jsonpath_get(&spec->sub_jobs, root) : NULL;
    if (cJSON_IsArray(list)) {
        const cJSON *sub;
        cJSON_ArrayForEach(sub, list)
        {
            if (path_ambiguous(&spec->sub_state, sub))
                return 1;
        }
    }
    return 0;
}

int classify_state_failed(const struct classify_spec *spec, const char *state)
{
    int i = terminal_index(spec, state);
    return i >= 0 && spec->failure && spec->failure[i];
}

enum job_class classify_body(const struct classify_spec *spec, const char *body, size_t len, const char *expected_id,
                             char *state, size_t statelen)
{
    if (statelen)
        state[0] = '\0';
    /* Invalid UTF-8 is read differently too (replaced, refused, or kept):
     * never served as charset=UTF-8. */
    if (has_nul(body, len) || !encoding_utf8_valid(body, len))
        return JOB_AMBIGUOUS;
    cJSON *root = json_parse_exact(body, len);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return JOB_NOT_JOB;
    }

    enum job_class result;
    if (body_ambiguous(spec, root)) {
        result = JOB_AMBIGUOUS;
        goto done;
    }
    const char *value = jsonpath_get_string(&spec->state, root);
    if (!value) {
        result = JOB_NOT_JOB;
        goto done;
    }
    if (statelen)
        snprintf(state, statelen, "%s", value);

    if (spec->identity.nparts) {
        const char *id = jsonpath_get_string(&spec->identity, root);
        if (!id || !expected_id || strcmp(id, expected_id) != 0) {
            result = JOB_OTHER_JOB;
            goto done;
        }
    }

    result = state_terminal(spec, value) && sub_jobs_terminal(spec, root) ? JOB_TERMINAL : JOB_PENDING;
done:
    cJSON_Delete(root);
    return result;
}

const char *job_class_name(enum job_class c)
{
    switch (c) {
    case JOB_TERMINAL: return "terminal";
    case JOB_PENDING: return "pending";
    case JOB_NOT_JOB: return "not_job";
    case JOB_OTHER_JOB: return "other_job";
    case JOB_AMBIGUOUS: return "ambiguous";
    }
    return "unknown";
}

void classify_spec_free(struct classify_spec *spec)
{
    jsonpath_free(&spec->state);
    jsonpath_free(&spec->identity);
    for (size_t i = 0; i < spec->nterminal; i++)
        free(spec->terminal[i]);
    free(spec->terminal);
    free(spec->failure);
    jsonpath_free(&spec->sub_jobs);
    jsonpath_free(&spec->sub_state);
    memset(spec, 0, sizeof(*spec));
}
