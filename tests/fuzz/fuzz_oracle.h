/*
 * Checks shared by the fuzz targets. A failed check is a bug in proxy/: it
 * prints what went wrong and aborts, which libFuzzer reports as a crash and
 * saves the input.
 */
#ifndef JOBGATE_FUZZ_ORACLE_H
#define JOBGATE_FUZZ_ORACLE_H

#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "route.h"

#define FUZZ_CHECK(cond, ...)                                                                 \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            fprintf(stderr, "fuzz check failed at %s:%d: %s\n  ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                                     \
            fprintf(stderr, "\n");                                                            \
            abort();                                                                          \
        }                                                                                     \
    } while (0)

/*
 * FUZZ_SKIP_KNOWN=1 steps around the bugs in proxy/ that this fuzzing found
 * and that are not fixed yet (README.md, "Found so far"), so that a run can
 * look for others. For now that is one bug: a large interval such as
 * "[0-9a-f]{1,6000}" passes route.c's size bound, but glibc's regcomp()
 * needs hundreds of MB for it. With the variable set, regcomp() refuses any
 * pattern with an interval bound above 255 (rules.c's own {chars, min, max}
 * stops there), as if it had run out of memory. The run script links both
 * targets with -Wl,--wrap=regcomp.
 */
static inline int fuzz_skip_known(void)
{
    static int skip = -1;
    if (skip < 0) {
        const char *v = getenv("FUZZ_SKIP_KNOWN");
        skip = v && *v && strcmp(v, "0") != 0;
    }
    return skip;
}

static inline int fuzz_known_costly_pattern(const char *p)
{
    for (; *p; p++) {
        if (*p != '{' && *p != ',')
            continue;
        char *end;
        unsigned long n = strtoul(p + 1, &end, 10);
        if (end > p + 1 && n > 255)
            return 1;
    }
    return 0;
}

int __real_regcomp(regex_t *re, const char *pattern, int flags);
int __wrap_regcomp(regex_t *re, const char *pattern, int flags);

int __wrap_regcomp(regex_t *re, const char *pattern, int flags)
{
    if (fuzz_skip_known() && fuzz_known_costly_pattern(pattern))
        return REG_ESPACE;
    return __real_regcomp(re, pattern, flags);
}

/*
 * Does `value` as a whole match `pattern` (a POSIX ERE)? POSIX regexec finds
 * the leftmost match and, from there, the longest: the value matches as a
 * whole exactly when that match is [0, strlen). This does not depend on how
 * route.c anchors a pattern (wrapping it as "^(...)$" lets a pattern with an
 * unmatched ')' escape the anchors). Returns 1 or 0, or -1 when the check
 * does not apply: the pattern does not compile, or it has a backslash (a
 * back-reference's number depends on the groups an implementation adds).
 */
static inline int fuzz_whole_match(const char *pattern, const char *value)
{
    if (strchr(pattern, '\\'))
        return -1;
    regex_t re;
    if (regcomp(&re, pattern, REG_EXTENDED) != 0)
        return -1;
    regmatch_t m[1];
    int whole = regexec(&re, value, 1, m, 0) == 0 && m[0].rm_so == 0 && (size_t)m[0].rm_eo == strlen(value);
    regfree(&re);
    return whole;
}

/*
 * After a route_template_match() of `path` against `t` that gave `res`
 * (and `bad` for ROUTE_BAD_PARAM), check what the contract promises:
 *  - ROUTE_MATCH: every value is non-empty and matches its pattern as a
 *    whole; expanding the template with the values gives `path` back, needs
 *    exactly strlen(path)+1 bytes and fails in one byte less;
 *  - ROUTE_BAD_PARAM: `bad` names a parameter, the ones before it are
 *    accepted and it is empty or does not match its pattern as a whole.
 */
static inline void fuzz_check_match(const struct route_template *t, const char *path, enum route_result res,
                                    const struct route_match *m, int bad)
{
    size_t len = strlen(path);
    FUZZ_CHECK(res == ROUTE_NO_MATCH || res == ROUTE_MATCH || res == ROUTE_BAD_PARAM, "result %d", (int)res);
    if (res == ROUTE_NO_MATCH)
        return;
    FUZZ_CHECK(path[0] == '/' && len <= ROUTE_MAX_PATH, "template '%s' matched a path it cannot match: '%s'", t->text,
               path);
    FUZZ_CHECK(m->nvalues == t->nparams, "%zu values for %zu parameters", m->nvalues, t->nparams);
    size_t checked = t->nparams;
    if (res == ROUTE_BAD_PARAM) {
        FUZZ_CHECK(bad >= 0 && (size_t)bad < t->nparams, "bad parameter %d of %zu (template '%s', path '%s')", bad,
                   t->nparams, t->text, path);
        checked = (size_t)bad + 1;
    }
    for (size_t i = 0; i < checked; i++) {
        const char *v = m->values[i];
        const struct route_param *p = &t->params[i];
        int accepted = res == ROUTE_MATCH || i < (size_t)bad;
        FUZZ_CHECK(v != NULL && v >= m->buf && v < m->buf + sizeof(m->buf), "value %zu does not point into the match",
                   i);
        FUZZ_CHECK(!strchr(v, '/'), "value {%s}='%s' holds a '/'", p->name, v);
        if (accepted)
            FUZZ_CHECK(v[0] != '\0', "empty value accepted for {%s} of '%s' (path '%s')", p->name, t->text, path);
        if (!p->compiled || !p->pattern || v[0] == '\0')
            continue;
        int whole = fuzz_whole_match(p->pattern, v);
        if (whole >= 0)
            FUZZ_CHECK(whole == accepted,
                       "{%s} with pattern '%s': value '%s' was %s, but as a whole it %s the pattern "
                       "(template '%s', path '%s')",
                       p->name, p->pattern, v, accepted ? "accepted" : "refused", whole ? "matches" : "does not match",
                       t->text, path);
    }
    if (res != ROUTE_MATCH)
        return;

    char out[2 * ROUTE_MAX_PATH + 2];
    int n = route_template_expand(t, m, out, sizeof(out));
    FUZZ_CHECK(n >= 0 && (size_t)n == len && strcmp(out, path) == 0,
               "template '%s' matched '%s' but expands to '%s' (%d)", t->text, path, n >= 0 ? out : "", n);
    n = route_template_expand(t, m, out, len + 1);
    FUZZ_CHECK(n == (int)len, "expand into exactly %zu bytes gave %d", len + 1, n);
    n = route_template_expand(t, m, out, len);
    FUZZ_CHECK(n == -1, "expand into %zu bytes (one short) gave %d, want -1", len, n);
}

#endif
