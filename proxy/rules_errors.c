#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "errmap.h"
#include "rules_errors.h"

/* One mapping target: `502` or {status: 503, code: X, message: Y, retry_after: 3}. */
static int load_error_entry(struct yconf *y, yaml_node_t *n, struct errmap_entry *e, struct conf_diag *d)
{
    static const char *const keys[] = {"status", "code", "message", "retry_after", NULL};
    long status = 0, retry_after = 0;
    const char *status_text = NULL;
    yaml_node_t *status_node = n;
    memset(e, 0, sizeof(*e));
    if (yconf_scalar(n)) {
        status_text = yconf_scalar(n);
    } else {
        if (yconf_check_map(y, n, "an error mapping", keys, d) < 0)
            return -1;
        status_node = yconf_get(y, n, "status");
        status_text = yconf_scalar(status_node);
        int rc = yconf_get_long(y, n, "retry_after", 0, 3600, &retry_after, d);
        rc |= yconf_get_str(y, n, "code", &e->code, d);
        rc |= yconf_get_str(y, n, "message", &e->message, d);
        if (!status_text) {
            yconf_error(y, n, d, "an error mapping needs 'status'");
            rc = -1;
        }
        if (rc)
            goto fail;
    }
    char *end;
    status = strtol(status_text, &end, 10);
    if (*end || end == status_text || !http_status_documented((int)status) || status == 200) {
        yconf_error(y, status_node, d,
                    "an error must map to a status in the documented table (400 401 403 404 405 406 407 408 409 "
                    "500 501 502 503 504), not '%s'",
                    status_text);
        goto fail;
    }
    e->set = 1;
    e->status = (int)status;
    e->retry_after = (int)retry_after;
    return 0;
fail:
    free(e->code);
    free(e->message);
    memset(e, 0, sizeof(*e));
    return -1;
}

/* Was `key` given before `p` in mapping `n`? */
static int key_given_before(struct yconf *y, yaml_node_t *n, yaml_node_pair_t *p, const char *key)
{
    for (yaml_node_pair_t *q = n->data.mapping.pairs.start; q < p; q++) {
        const char *earlier = yconf_scalar(yaml_document_get_node(&y->doc, q->key));
        if (earlier && strcmp(earlier, key) == 0)
            return 1;
    }
    return 0;
}

static int load_error_statuses(struct yconf *y, yaml_node_t *n, yaml_node_t *parent, struct errmap *map,
                               struct conf_diag *d)
{
    if (!n || n->type != YAML_MAPPING_NODE) {
        yconf_error(y, n ? n : parent, d, "errors.status must map upstream statuses (\"404\", \"4xx\") to answers");
        return -1;
    }
    /* Statuses and classes given with a target that failed: their own error
     * is reported, so the coverage check below does not call them unmapped. */
    unsigned char tried_exact[600] = {0}, tried_klass[6] = {0};
    int rc = 0;
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(&y->doc, p->key);
        yaml_node_t *v = yaml_document_get_node(&y->doc, p->value);
        const char *key = yconf_scalar(k);
        struct errmap_entry *slot = NULL;
        unsigned char *tried = NULL;
        if (key && strlen(key) == 3 && key[0] >= '1' && key[0] <= '5' && !strcmp(key + 1, "xx")) {
            slot = &map->klass[key[0] - '0'];
            tried = &tried_klass[key[0] - '0'];
        } else if (key && strlen(key) == 3 && strspn(key, "0123456789") == 3) {
            /* Exactly three digits: "+404" or " 404" would be a second name for 404. */
            long s = strtol(key, NULL, 10);
            if (s >= 100 && s <= 599) {
                slot = &map->exact[s];
                tried = &tried_exact[s];
            }
        }
        if (!slot) {
            yconf_error(y, k, d, "'%s' is not an upstream status (100-599) or class (1xx-5xx)", key ? key : "?");
            rc = -1;
            continue;
        }
        if (key_given_before(y, n, p, key) || slot->set) {
            yconf_error(y, k, d, "status '%s' is mapped twice", key);
            rc = -1;
            continue;
        }
        if (load_error_entry(y, v, slot, d) < 0) {
            *tried = 1;
            rc = -1;
        }
    }
    /* Every status 100-599 must land in the table: each class needs a catch-all. */
    for (int c = 1; c <= 5; c++) {
        if (map->klass[c].set || tried_klass[c])
            continue;
        for (int s = c * 100; s < c * 100 + 100; s++) {
            if (!map->exact[s].set && !tried_exact[s]) {
                yconf_error(y, n, d, "upstream status %d has no mapping: add \"%dxx\" (or map every %dxx status)", s, c,
                            c);
                rc = -1;
                break;
            }
        }
    }
    return rc;
}

static int load_error_faults(struct yconf *y, yaml_node_t *n, yaml_node_t *parent, struct errmap *map,
                             struct conf_diag *d)
{
    if (!n || n->type != YAML_MAPPING_NODE) {
        yconf_error(y, n ? n : parent, d,
                    "errors.fault must map each transport fault (timeout, connect ...) to an answer");
        return -1;
    }
    unsigned char tried[FAULT__COUNT] = {0}; /* given with a target that failed: reported already */
    int rc = 0;
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(&y->doc, p->key);
        const char *key = yconf_scalar(k);
        enum upstream_fault f = key ? fault_from_name(key) : FAULT_NONE;
        if (f == FAULT_NONE) {
            yconf_error(y, k, d,
                        "'%s' is not a fault; faults are connect dns tls reset truncated timeout oversized protocol "
                        "bad_body wrong_job internal",
                        key ? key : "?");
            rc = -1;
        } else if (key_given_before(y, n, p, key)) {
            yconf_error(y, k, d, "fault '%s' is mapped twice", key);
            rc = -1;
        } else if (load_error_entry(y, yaml_document_get_node(&y->doc, p->value), &map->fault[f], d) < 0) {
            tried[f] = 1;
            rc = -1;
        }
    }
    for (int f = 1; f < FAULT__COUNT; f++) {
        if (!map->fault[f].set && !tried[f]) {
            yconf_error(y, n, d, "fault '%s' has no mapping", fault_name((enum upstream_fault)f));
            rc = -1;
        }
    }
    return rc;
}

static int load_error_shapes(struct yconf *y, yaml_node_t *n, struct errmap *map, struct conf_diag *d)
{
    static const char *const keys[] = {"code", "message", NULL};
    if (!n)
        return 0;
    size_t count = yconf_seq_len(n);
    if (n->type != YAML_SEQUENCE_NODE) {
        yconf_error(y, n, d, "errors.body must be a list of {code: PATH, message: PATH}");
        return -1;
    }
    map->shapes = calloc(count ? count : 1, sizeof(*map->shapes));
    int rc = 0;
    for (size_t i = 0; i < count; i++) {
        yaml_node_t *item = yconf_seq_item(y, n, i);
        if (yconf_check_map(y, item, "an error body shape", keys, d) < 0) {
            rc = -1;
            continue;
        }
        struct errmap_shape *s = &map->shapes[map->nshapes];
        const char *code = yconf_scalar(yconf_get(y, item, "code"));
        const char *message = yconf_scalar(yconf_get(y, item, "message"));
        if (!code || !message || jsonpath_compile(&s->code, code) < 0 || jsonpath_compile(&s->message, message) < 0) {
            jsonpath_free(&s->code);
            yconf_error(y, item, d, "an error body shape needs 'code' and 'message' paths, such as error.code");
            rc = -1;
            continue;
        }
        map->nshapes++;
    }
    return rc;
}

/* errors.codes: upstream error code -> answer; looked up before the status. */
static int load_error_codes(struct yconf *y, yaml_node_t *n, struct errmap *map, struct conf_diag *d)
{
    if (!n)
        return 0;
    if (n->type != YAML_MAPPING_NODE) {
        yconf_error(y, n, d, "errors.codes maps upstream error codes (\"APIGW.0307\") to answers");
        return -1;
    }
    size_t count = (size_t)(n->data.mapping.pairs.top - n->data.mapping.pairs.start);
    map->codes = calloc(count ? count : 1, sizeof(*map->codes));
    if (!map->codes)
        return -1;
    int rc = 0;
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(&y->doc, p->key);
        const char *code = yconf_scalar(k);
        if (!code || !*code) {
            yconf_error(y, k, d, "an error code is a word such as APIGW.0307");
            rc = -1;
            continue;
        }
        if (key_given_before(y, n, p, code)) {
            yconf_error(y, k, d, "error code '%s' is mapped twice", code);
            rc = -1;
            continue;
        }
        struct errmap_code *c = &map->codes[map->ncodes];
        if (load_error_entry(y, yaml_document_get_node(&y->doc, p->value), &c->entry, d) < 0) {
            rc = -1;
            continue;
        }
        c->code = strdup(code);
        map->ncodes++;
    }
    return rc;
}

static int load_errors(struct yconf *y, yaml_node_t *n, struct errmap *map, struct client_error *invalid_request,
                       struct conf_diag *d)
{
    static const char *const keys[] = {"shape", "body", "codes", "status", "fault", "invalid_request", NULL};
    client_error_set(invalid_request, 400, "JG.INVALID_REQUEST", "the request does not match the route");
    if (!n) {
        yconf_error(y, yconf_root(y), d, "missing 'errors' (how upstream errors map onto the documented table)");
        return -1;
    }
    if (yconf_check_map(y, n, "errors", keys, d) < 0)
        return -1;
    int rc = 0;
    yaml_node_t *shape = yconf_get(y, n, "shape");
    if (shape) {
        map->reply_shape = error_shape_from_name(yconf_scalar(shape));
        if (map->reply_shape == ERROR_SHAPE_DEFAULT) {
            yconf_error(y, shape, d,
                        "errors.shape must be elb ({\"error\": {\"code\", \"message\"}}) or apigw "
                        "({\"error_code\", \"error_msg\"})");
            rc = -1;
        }
    }
    rc |= load_error_shapes(y, yconf_get(y, n, "body"), map, d);
    rc |= load_error_codes(y, yconf_get(y, n, "codes"), map, d);
    rc |= load_error_statuses(y, yconf_get(y, n, "status"), n, map, d);
    rc |= load_error_faults(y, yconf_get(y, n, "fault"), n, map, d);
    yaml_node_t *invalid = yconf_get(y, n, "invalid_request");
    if (invalid) {
        struct errmap_entry e;
        if (load_error_entry(y, invalid, &e, d) < 0) {
            rc = -1;
        } else {
            client_error_set(invalid_request, e.status, e.code ? e.code : "JG.INVALID_REQUEST",
                             e.message ? e.message : "the request does not match the route");
        }
        free(e.code);
        free(e.message);
    }
    return rc ? -1 : 0;
}

/* `errors` is the section itself, or the name of a file holding it
 * (relative to the rule file), so that APIs with one error vocabulary share
 * one map. Diagnostics then point into that file. */
int rules_load_errors(struct yconf *y, yaml_node_t *n, struct errmap *map, struct client_error *invalid_request,
                      struct conf_diag *d)
{
    const char *file = yconf_scalar(n);
    if (!file)
        return load_errors(y, n, map, invalid_request, d);
    char path[4096];
    yconf_resolve_path(y->path, file, path, sizeof(path));
    struct yconf shared;
    int rc = yconf_load(&shared, path, d);
    if (rc == 0 && !yconf_root(&shared)) {
        yconf_error(&shared, NULL, d, "the file is empty: it should hold an errors section");
        rc = -1;
    }
    if (rc < 0)
        yconf_error(y, n, d, "cannot use the errors file '%s'", path);
    else
        rc = load_errors(&shared, yconf_root(&shared), map, invalid_request, d);
    yconf_free(&shared);
    return rc;
}
