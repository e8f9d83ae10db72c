#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "rules_job.h"

/* Add the states of list `list` to the terminal set, marked failure or not. */
static int add_terminal_states(struct yconf *y, yaml_node_t *list, int failure, struct classify_spec *job,
                               struct conf_diag *d)
{
    if (!list || list->type != YAML_SEQUENCE_NODE || yconf_seq_len(list) == 0) {
        yconf_error(y, list, d, "a list of final states is expected here, such as [SUCCESS]");
        return -1;
    }
    size_t n = yconf_seq_len(list);
    char **terminal = realloc(job->terminal, (job->nterminal + n) * sizeof(char *));
    unsigned char *flags = realloc(job->failure, job->nterminal + n);
    if (terminal)
        job->terminal = terminal;
    if (flags)
        job->failure = flags;
    if (!terminal || !flags)
        return -1;
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        yaml_node_t *item = yconf_seq_item(y, list, i);
        const char *v = yconf_scalar(item);
        if (!v || !*v) {
            yconf_error(y, item, d, "a terminal state is a single word");
            rc = -1;
            continue;
        }
        for (size_t k = 0; k < job->nterminal; k++) {
            if (strcmp(job->terminal[k], v) == 0) {
                yconf_error(y, item, d, "terminal state '%s' is listed twice", v);
                rc = -1;
            }
        }
        job->failure[job->nterminal] = (unsigned char)failure;
        job->terminal[job->nterminal++] = strdup(v);
    }
    return rc;
}

/* job.terminal: a list, or {success: [...], failure: [...]}. */
static int load_terminal(struct yconf *y, yaml_node_t *n, yaml_node_t *parent, struct classify_spec *job,
                         struct conf_diag *d)
{
    static const char *const keys[] = {"success", "failure", NULL};
    if (!n) {
        yconf_error(y, parent, d, "job needs 'terminal': the final states, such as [SUCCESS, FAIL]");
        return -1;
    }
    if (n->type != YAML_MAPPING_NODE)
        return add_terminal_states(y, n, 0, job, d);
    if (yconf_check_map(y, n, "job.terminal", keys, d) < 0)
        return -1;
    yaml_node_t *success = yconf_get(y, n, "success");
    yaml_node_t *failure = yconf_get(y, n, "failure");
    if (!success) {
        yconf_error(y, n, d, "job.terminal needs 'success', the states of a job that succeeded");
        return -1;
    }
    int rc = add_terminal_states(y, success, 0, job, d);
    if (failure)
        rc |= add_terminal_states(y, failure, 1, job, d);
    return rc;
}

static int load_sub_jobs(struct yconf *y, yaml_node_t *n, struct classify_spec *job, struct conf_diag *d)
{
    static const char *const keys[] = {"path", "state", NULL};
    if (!n)
        return 0;
    if (yconf_check_map(y, n, "job.sub_jobs", keys, d) < 0)
        return -1;
    const char *path = yconf_scalar(yconf_get(y, n, "path"));
    const char *state = yconf_scalar(yconf_get(y, n, "state"));
    if (!path || !state || jsonpath_compile(&job->sub_jobs, path) < 0 || jsonpath_compile(&job->sub_state, state) < 0) {
        yconf_error(y, n, d,
                    "sub_jobs needs 'path' (where the list is) and 'state' (the state in each), "
                    "such as {path: entities.sub_jobs, state: status}");
        return -1;
    }
    return 0;
}

/* `route_rule` is NULL when the route did not load: identity is then not checked against it. */
int rules_load_job(struct yconf *y, yaml_node_t *n, const struct route_template *route, struct classify_spec *job,
                   int *identity_param, struct conf_diag *d)
{
    static const char *const keys[] = {"state", "terminal", "identity", "sub_jobs", NULL};
    static const char *const identity_keys[] = {"field", "param", NULL};
    *identity_param = -1;
    if (!n) {
        yconf_error(y, yconf_root(y), d, "missing 'job' (where the state is, which states are terminal)");
        return -1;
    }
    if (yconf_check_map(y, n, "job", keys, d) < 0)
        return -1;
    int rc = 0;

    yaml_node_t *state = yconf_get(y, n, "state");
    if (!yconf_scalar(state) || jsonpath_compile(&job->state, yconf_scalar(state)) < 0) {
        yconf_error(y, state ? state : n, d, "job needs 'state': a dotted path to the state string, such as status");
        rc = -1;
    }

    rc |= load_terminal(y, yconf_get(y, n, "terminal"), n, job, d);
    rc |= load_sub_jobs(y, yconf_get(y, n, "sub_jobs"), job, d);

    yaml_node_t *identity = yconf_get(y, n, "identity");
    if (identity) {
        if (yconf_check_map(y, identity, "job.identity", identity_keys, d) < 0)
            return -1;
        const char *field = yconf_scalar(yconf_get(y, identity, "field"));
        const char *param = yconf_scalar(yconf_get(y, identity, "param"));
        if (!field || !param || jsonpath_compile(&job->identity, field) < 0) {
            yconf_error(y, identity, d, "identity needs 'field' (body path) and 'param' (route parameter)");
            rc = -1;
        } else if (route && (*identity_param = route_template_param_index(route, param)) < 0) {
            yconf_error(y, yconf_get(y, identity, "param"), d, "identity param '%s' is not a parameter of the route",
                        param);
            rc = -1;
        }
    }
    return rc;
}
