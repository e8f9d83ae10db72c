/*
 * The shipped rules, loaded once for the fuzz targets that run the daemon's
 * per-request code (fuzz_classify, fuzz_errmap, fuzz_request) against the
 * policy jobgate actually ships: every lua-free-rules/*.yaml, with the shared
 * errors file they name, loaded together by ruleset_load() as the daemon does.
 *
 * The rules are found under $JOBGATE_SRCDIR (tests/fuzz/run sets it), else
 * under the current directory. A rule that no longer loads is a broken tree,
 * not a finding: the target says why and exits before fuzzing starts.
 */
#ifndef JOBGATE_FUZZ_SHIPPED_H
#define JOBGATE_FUZZ_SHIPPED_H

#include <glob.h>
#include <stdio.h>
#include <stdlib.h>

#include "rules.h"

/* The shipped ruleset, with one reference the target keeps until exit. */
static inline struct ruleset *fuzz_shipped_rules(void)
{
    const char *srcdir = getenv("JOBGATE_SRCDIR");
    char pattern[4096];
    snprintf(pattern, sizeof(pattern), "%s/lua-free-rules/*.yaml", srcdir && *srcdir ? srcdir : ".");

    glob_t g;
    if (glob(pattern, 0, NULL, &g) != 0 || g.gl_pathc == 0) {
        fprintf(stderr, "fuzz: no shipped rules match %s (set JOBGATE_SRCDIR)\n", pattern);
        exit(2);
    }
    struct conf_diag d;
    conf_diag_init(&d);
    struct ruleset *rs = ruleset_load(g.gl_pathv, g.gl_pathc, &d);
    if (!rs) {
        fprintf(stderr, "fuzz: the shipped rules do not load:\n");
        for (size_t i = 0; i < d.count; i++)
            fprintf(stderr, "  %s\n", d.lines[i]);
        exit(2);
    }
    conf_diag_free(&d);
    globfree(&g);
    return rs;
}

#endif
