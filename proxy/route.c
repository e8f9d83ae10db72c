#include <stdint.h>
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

/* Patterns come from rule files, which an operator may get wrong: glibc's
 * regcomp copies the operand of every repetition ("a+" twice, "a{1,50}" fifty
 * times), so stacked repetitions grow its tree exponentially ("a++++..."
 * needs gigabytes). This estimates the size of that tree from the pattern's
 * structure alone and refuses patterns beyond a bound no real id needs
 * (hex32 is 33, uuid 41, {chars, min, max} at most 256; glibc needs memory
 * quadratic in this size), and refuses a repetition of a repetition. */
#define PATTERN_MAX_LEN   256
#define PATTERN_MAX_SIZE  512L
#define PATTERN_MAX_DEPTH 16

static int pattern_size_ok(const char *p)
{
    long outer[PATTERN_MAX_DEPTH]; /* size of the sequence around each open group */
    int outer_open[PATTERN_MAX_DEPTH];
    int depth = 0;
    long size = 0;      /* size of the current sequence */
    long last = 0;      /* size of its last atom, which a repetition copies */
    int open_ended = 0; /* the current sequence holds a *, + or {m,} */
    int last_open = 0;  /* ... and so does its last atom (a group) */
    int after_repetition = 0;
    while (*p) {
        char c = *p++;
        int repetition = c == '*' || c == '+' || c == '?' || c == '{';
        /* "a++", "a*{2}": undefined in POSIX, and what makes glibc's tree explode. */
        if (repetition && after_repetition)
            return 0;
        after_repetition = repetition;
        if (c != '*' && c != '+' && c != '?' && c != '{')
            last_open = 0;
        if (c == '\\' && *p) {
            p++;
            last = 1;
        } else if (c == '[') { /* a bracket expression is one atom */
            if (*p == '^')
                p++;
            if (*p == ']')
                p++;
            while (*p && *p != ']') {
                if (*p == '[' && (p[1] == ':' || p[1] == '.' || p[1] == '=')) {
                    char close = p[1];
                    p += 2;
                    while (*p && !(*p == close && p[1] == ']'))
                        p++;
                    if (*p)
                        p++;
                }
                if (*p)
                    p++;
            }
            if (*p)
                p++;
            last = 1;
        } else if (c == '(') {
            if (depth == PATTERN_MAX_DEPTH)
                return 0;
            outer_open[depth] = open_ended;
            outer[depth++] = size;
            size = 0;
            last = 0;
            open_ended = 0;
            continue;
        } else if (c == ')' && depth > 0) {
            last = size + 1;
            last_open = open_ended;
            size = outer[--depth];
            open_ended = outer_open[depth] | last_open;
            size += last;
            if (size > PATTERN_MAX_SIZE)
                return 0;
            continue;
        } else if (c == '*' || c == '+' || c == '?' || c == '{') {
            /* Repeating a group that is itself open-ended ("(.*){300}") makes
             * glibc's regcomp take minutes computing closures. */
            if (last_open)
                return 0;
            long copies = 2;
            if (c == '{') {
                char *end;
                long m = strtol(p, &end, 10), n = m;
                if (m < 0 || m > PATTERN_MAX_SIZE)
                    return 0;
                if (*end == ',') {
                    if (end[1] == '}')
                        open_ended = 1;
                    n = end[1] == '}' ? m + 1 : strtol(end + 1, &end, 10);
                }
                if (n < 0 || n > PATTERN_MAX_SIZE)
                    return 0;
                copies = (n > m ? n : m) + 1;
                while (*p && *p != '}')
                    p++;
                if (*p)
                    p++;
            }
            /* Both stay at most PATTERN_MAX_SIZE, so the products below cannot overflow. */
            if (copies < 1 || copies > PATTERN_MAX_SIZE || last > PATTERN_MAX_SIZE / copies)
                return 0;
            size += last * (copies - 1);
            last *= copies;
            if (c == '*' || c == '+')
                open_ended = 1;
        } else if (c == '|') {
            last = 0;
            size += 1;
            continue;
        } else {
            last = 1;
        }
        if (c != '*' && c != '+' && c != '?' && c != '{')
            size += last;
        if (size > PATTERN_MAX_SIZE || last > PATTERN_MAX_SIZE)
            return 0;
    }
    return 1;
}

/* Class tables: what a bracket expression or a literal byte allows. Only a
 * plain subset of POSIX syntax is taken, whose meaning does not depend on the
 * locale or on glibc's reading of corner cases; anything else ("[^...]",
 * "[[:alpha:]]", a backslash, ".", groups, "*", "+", "?", "|", anchors) is
 * left to regexec. */
static void class_add(struct route_class_item *it, unsigned char c)
{
    it->set[c >> 6] |= (uint64_t)1 << (c & 63);
}

static int class_has(const struct route_class_item *it, unsigned char c)
{
    return (int)((it->set[c >> 6] >> (c & 63)) & 1);
}

/* A byte that means itself both outside and inside brackets. */
static int plain_byte(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("-_~:@!,;=%&'\"<>#/`", c));
}

/* Both ends of a range of one kind (digits, lower case, upper case), so that
 * the range is the same bytes in every locale. */
static int range_ok(char a, char b)
{
    if (a > b)
        return 0;
    return (a >= '0' && b <= '9') || (a >= 'a' && b <= 'z') || (a >= 'A' && b <= 'Z');
}

/* Parse the bracket expression after '[' at *pp into `it`. Returns 0 with *pp
 * past the ']', or -1 when it is not one we take. */
static int parse_bracket(const char **pp, struct route_class_item *it)
{
    const char *p = *pp;
    if (*p == '^' || *p == ']')
        return -1;
    int first = 1;
    while (*p != ']') {
        char c = *p;
        if (!plain_byte(c) && c != '.')
            return -1;
        if (c == '-' && !first && p[1] != ']')
            return -1; /* a '-' in the middle, not part of a range */
        if (c != '-' && p[1] == '-' && p[2] != ']') {
            char d = p[2];
            if (!range_ok(c, d))
                return -1;
            for (int b = c; b <= d; b++)
                class_add(it, (unsigned char)b);
            p += 3;
        } else {
            class_add(it, (unsigned char)c);
            p++;
        }
        first = 0;
    }
    *pp = p + 1;
    return 0;
}

/* "{m}", "{m,n}" or "{m,}" at *pp. Returns 0, or -1 for anything else. */
static int parse_interval(const char **pp, size_t *min, size_t *max)
{
    const char *p = *pp + 1;
    char *end;
    if (*p < '0' || *p > '9')
        return -1;
    unsigned long m = strtoul(p, &end, 10), n = m;
    p = end;
    if (*p == ',') {
        p++;
        if (*p == '}') {
            n = SIZE_MAX;
        } else {
            if (*p < '0' || *p > '9')
                return -1;
            n = strtoul(p, &end, 10);
            p = end;
        }
    }
    if (*p != '}' || m > PATTERN_MAX_SIZE || (n != SIZE_MAX && (n > PATTERN_MAX_SIZE || n < m)))
        return -1;
    *min = m;
    *max = n;
    *pp = p + 1;
    return 0;
}

/* Compile `pattern` into `cls`, or leave cls->nitems 0 when it is not a
 * sequence of classes with counts of which at most one varies. */
static void class_compile(struct route_class *cls, const char *pattern)
{
    struct route_class c;
    memset(&c, 0, sizeof(c));
    c.var = -1;
    const char *p = pattern;
    while (*p) {
        if (c.nitems == ROUTE_CLASS_MAX_ITEMS)
            return;
        struct route_class_item *it = &c.items[c.nitems];
        if (*p == '[') {
            p++;
            if (parse_bracket(&p, it) < 0)
                return;
        } else if (plain_byte(*p)) {
            class_add(it, (unsigned char)*p++);
        } else {
            return;
        }
        it->min = it->max = 1;
        if (*p == '{' && parse_interval(&p, &it->min, &it->max) < 0)
            return;
        if (it->min != it->max) {
            if (c.var >= 0)
                return;
            c.var = (int)c.nitems;
        } else {
            c.fixed_len += it->min;
        }
        c.nitems++;
    }
    if (c.nitems > 0)
        *cls = c;
}

/* Does the class table accept all of `v` (`len` bytes)? Each item's count is
 * known from the length: the fixed ones take theirs, the variable one the rest. */
static int class_match(const struct route_class *cls, const char *v, size_t len)
{
    size_t var_len = 0;
    if (len < cls->fixed_len)
        return 0;
    if (cls->var < 0) {
        if (len != cls->fixed_len)
            return 0;
    } else {
        var_len = len - cls->fixed_len;
        const struct route_class_item *it = &cls->items[cls->var];
        if (var_len < it->min || var_len > it->max)
            return 0;
    }
    const unsigned char *p = (const unsigned char *)v;
    for (size_t i = 0; i < cls->nitems; i++) {
        const struct route_class_item *it = &cls->items[i];
        size_t n = (int)i == cls->var ? var_len : it->min;
        for (size_t j = 0; j < n; j++)
            if (!class_has(it, p[j]))
                return 0;
        p += n;
    }
    return 1;
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
    if (strlen(pattern) > PATTERN_MAX_LEN || !pattern_size_ok(pattern)) {
        snprintf(err, errlen,
                 "pattern of {%s} is too complex (nested or stacked repetitions): ids need a simple pattern", name);
        return -1;
    }
    /* Not wrapped in ^(...)$: glibc takes an unmatched ')' as a literal, so a
     * pattern could close the group and escape the anchors. Whole-value
     * matching is checked on the match itself (route_template_match). */
    regex_t re;
    int rc = regcomp(&re, pattern, REG_EXTENDED);
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
    memset(&param->cls, 0, sizeof(param->cls));
    class_compile(&param->cls, pattern);
    return 0;
}

/* Does `re` match all of `value`? POSIX regexec finds the leftmost match and,
 * from there, the longest: a match of the whole value exists exactly when
 * that one starts at 0 and ends at the end. */
static int whole_match(const regex_t *re, const char *value, size_t len)
{
    regmatch_t m;
    return regexec(re, value, 1, &m, 0) == 0 && m.rm_so == 0 && (size_t)m.rm_eo == len;
}

static int param_accepts(const struct route_param *param, const char *v, size_t len)
{
    if (len == 0)
        return 0;
    if (!param->compiled)
        return 1;
    if (param->cls.nitems)
        return class_match(&param->cls, v, len);
    return whole_match(&param->re, v, len);
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
    size_t value_len[ROUTE_MAX_PARAMS];
    char *p = m->buf, *end = m->buf + len - 1;
    for (size_t i = 0; i < t->nsegs; i++) {
        if (!p)
            return ROUTE_NO_MATCH;
        char *slash = memchr(p, '/', (size_t)(end - p));
        size_t seglen = slash ? (size_t)(slash - p) : (size_t)(end - p);
        if (slash)
            *slash = '\0';
        const struct route_segment *seg = &t->segs[i];
        if (seg->literal) {
            if (strcmp(seg->literal, p) != 0)
                return ROUTE_NO_MATCH;
        } else {
            m->values[seg->param] = p;
            value_len[seg->param] = seglen;
        }
        p = slash ? slash + 1 : NULL;
    }
    if (p) /* more segments than the template (a trailing '/' included) */
        return ROUTE_NO_MATCH;

    for (size_t i = 0; i < t->nparams; i++) {
        if (!param_accepts(&t->params[i], m->values[i], value_len[i])) {
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
    return route_template_expand_values(t, m->values, out, outlen);
}

int route_template_expand_values(const struct route_template *t, const char *const *values, char *out, size_t outlen)
{
    size_t used = 0;
    for (size_t i = 0; i < t->nsegs; i++) {
        const char *piece = t->segs[i].literal ? t->segs[i].literal : values[t->segs[i].param];
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
