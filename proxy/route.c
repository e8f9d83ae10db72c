#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "route.h"

/* A parameter name is a C identifier, so that {project_id} reads as a name. */
static int valid_param_name(const char *s, size_t len)
{
    if (len == 0 || len > 64)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (i > 0 && c >= '0' && c <= '9');
        if (!ok)
            return 0;
    }
    return 1;
}

int route_template_parse(struct route_template *t, const char *text, char *err, size_t errlen)
{
    memset(t, 0, sizeof(*t));
    if (text[0] != '/') {
        snprintf(err, errlen, "path '%s' must start with '/'", text);
        return -1;
    }
    if (strlen(text) > ROUTE_MAX_PATH) {
        snprintf(err, errlen, "path is longer than %d characters", ROUTE_MAX_PATH);
        return -1;
    }
    t->text = strdup(text);
    const char *p = text + 1;
    while (1) {
        const char *slash = strchr(p, '/');
        size_t len = slash ? (size_t)(slash - p) : strlen(p);
        if (len == 0) {
            snprintf(err, errlen, "path '%s' has an empty segment", text);
            goto fail;
        }
        if (t->nsegs == ROUTE_MAX_SEGMENTS) {
            snprintf(err, errlen, "path '%s' has more than %d segments", text, ROUTE_MAX_SEGMENTS);
            goto fail;
        }
        struct route_segment *seg = &t->segs[t->nsegs++];
        seg->param = -1;
        if (p[0] == '{') {
            if (p[len - 1] != '}' || !valid_param_name(p + 1, len - 2)) {
                snprintf(err, errlen, "'%.*s' is not a parameter: write {name}, a whole segment", (int)len, p);
                goto fail;
            }
            for (size_t i = 0; i < t->nparams; i++) {
                if (strlen(t->params[i].name) == len - 2 && !strncmp(t->params[i].name, p + 1, len - 2)) {
                    snprintf(err, errlen, "parameter {%.*s} appears twice", (int)len - 2, p + 1);
                    goto fail;
                }
            }
            if (t->nparams == ROUTE_MAX_PARAMS) {
                snprintf(err, errlen, "more than %d parameters", ROUTE_MAX_PARAMS);
                goto fail;
            }
            seg->param = (int)t->nparams;
            t->params[t->nparams++].name = strndup(p + 1, len - 2);
        } else {
            if (memchr(p, '{', len) || memchr(p, '}', len)) {
                snprintf(err, errlen, "'%.*s': a parameter must be a whole segment", (int)len, p);
                goto fail;
            }
            seg->literal = strndup(p, len);
        }
        if (!slash)
            break;
        p = slash + 1;
    }
    return 0;
fail:
    route_template_free(t);
    return -1;
}

int route_template_param_index(const struct route_template *t, const char *name)
{
    for (size_t i = 0; i < t->nparams; i++)
        if (strcmp(t->params[i].name, name) == 0)
            return (int)i;
    return -1;
}

int route_template_set_pattern(struct route_template *t, const char *name, const char *pattern, char *err,
                               size_t errlen)
{
    int i = route_template_param_index(t, name);
    if (i < 0) {
        snprintf(err, errlen, "the path has no parameter {%s}", name);
        return -1;
    }
    struct route_param *param = &t->params[i];
    /* The pattern must stand on its own: "a)|(.*" compiles only once wrapped,
     * and would then escape the anchors and accept anything. */
    regex_t alone;
    int rc = regcomp(&alone, pattern, REG_EXTENDED | REG_NOSUB);
    if (rc != 0) {
        char why[128];
        regerror(rc, &alone, why, sizeof(why));
        snprintf(err, errlen, "pattern '%s' of {%s} is not a valid regular expression: %s", pattern, name, why);
        return -1;
    }
    regfree(&alone);
    /* Anchor: a pattern describes the whole value, never a part of it. */
    size_t n = strlen(pattern) + 8;
    char *anchored = malloc(n);
    if (!anchored) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    snprintf(anchored, n, "^(%s)$", pattern);
    regex_t re;
    rc = regcomp(&re, anchored, REG_EXTENDED | REG_NOSUB);
    free(anchored);
    if (rc != 0) {
        char why[128];
        regerror(rc, &re, why, sizeof(why));
        snprintf(err, errlen, "pattern '%s' of {%s} is not a valid regular expression: %s", pattern, name, why);
        return -1;
    }
    if (param->compiled)
        regfree(&param->re);
    free(param->pattern);
    param->re = re;
    param->compiled = 1;
    param->pattern = strdup(pattern);
    return 0;
}

enum route_result route_template_match(const struct route_template *t, const char *path, struct route_match *m,
                                       int *bad_param)
{
    size_t len = strlen(path);
    if (path[0] != '/' || len > ROUTE_MAX_PATH)
        return ROUTE_NO_MATCH;
    memcpy(m->buf, path + 1, len); /* includes the NUL */
    m->nvalues = t->nparams;

    /* Split in place; each segment must exist and literals must be equal. */
    char *p = m->buf;
    for (size_t i = 0; i < t->nsegs; i++) {
        if (!p)
            return ROUTE_NO_MATCH;
        char *slash = strchr(p, '/');
        if (slash)
            *slash = '\0';
        const struct route_segment *seg = &t->segs[i];
        if (seg->literal) {
            if (strcmp(seg->literal, p) != 0)
                return ROUTE_NO_MATCH;
        } else {
            m->values[seg->param] = p;
        }
        p = slash ? slash + 1 : NULL;
    }
    if (p) /* more segments than the template (a trailing '/' included) */
        return ROUTE_NO_MATCH;

    for (size_t i = 0; i < t->nparams; i++) {
        const struct route_param *param = &t->params[i];
        const char *v = m->values[i];
        int ok = v[0] != '\0' && (!param->compiled || regexec(&param->re, v, 0, NULL, 0) == 0);
        if (!ok) {
            if (bad_param)
                *bad_param = (int)i;
            return ROUTE_BAD_PARAM;
        }
    }
    return ROUTE_MATCH;
}

int route_templates_overlap(const struct route_template *a, const struct route_template *b)
{
    if (a->nsegs != b->nsegs)
        return 0;
    for (size_t i = 0; i < a->nsegs; i++) {
        const char *la = a->segs[i].literal, *lb = b->segs[i].literal;
        if (la && lb && strcmp(la, lb) != 0)
            return 0;
    }
    return 1;
}

int route_template_expand(const struct route_template *t, const struct route_match *m, char *out, size_t outlen)
{
    size_t used = 0;
    for (size_t i = 0; i < t->nsegs; i++) {
        const char *piece = t->segs[i].literal ? t->segs[i].literal : m->values[t->segs[i].param];
        int n = snprintf(out + used, outlen - used, "/%s", piece);
        if (n < 0 || (size_t)n >= outlen - used)
            return -1;
        used += (size_t)n;
    }
    return (int)used;
}

void route_template_free(struct route_template *t)
{
    free(t->text);
    for (size_t i = 0; i < t->nsegs; i++)
        free(t->segs[i].literal);
    for (size_t i = 0; i < t->nparams; i++) {
        free(t->params[i].name);
        free(t->params[i].pattern);
        if (t->params[i].compiled)
            regfree(&t->params[i].re);
    }
    memset(t, 0, sizeof(*t));
}
