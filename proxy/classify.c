#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "classify.h"

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

    result = JOB_PENDING;
    for (size_t i = 0; i < spec->nterminal; i++) {
        if (strcmp(value, spec->terminal[i]) == 0) {
            result = JOB_TERMINAL;
            break;
        }
    }
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
    memset(spec, 0, sizeof(*spec));
}
