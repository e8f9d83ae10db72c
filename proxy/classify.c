#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "classify.h"

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
    cJSON *root = json_parse_exact(body, len);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return JOB_NOT_JOB;
    }

    enum job_class result;
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
