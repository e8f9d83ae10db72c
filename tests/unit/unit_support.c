/*
 * Helpers shared by the unit tests (tests/unit/unit_support.h is the
 * contract).
 */
#include "unit_support.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "yamlconf.h"

void unit_src_path(char *buf, size_t len, const char *rel)
{
    const char *src = getenv("JOBGATE_SRCDIR");
    int n = snprintf(buf, len, "%s/%s", src && *src ? src : ".", rel);
    if (n < 0 || (size_t)n >= len)
        fail_msg("path too long: %s/%s", src, rel);
}

void unit_data_path(char *buf, size_t len, const char *rel)
{
    char tmp[4096];
    int n = snprintf(tmp, sizeof(tmp), "tests/unit/data/%s", rel);
    if (n < 0 || (size_t)n >= sizeof(tmp))
        fail_msg("path too long: %s", rel);
    unit_src_path(buf, len, tmp);
}

char *unit_read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = calloc(1, 1 << 16);
    if (buf)
        (void)fread(buf, 1, (1 << 16) - 1, f);
    fclose(f);
    return buf;
}

void unit_print_diags(const struct conf_diag *d)
{
    for (size_t i = 0; i < d->count; i++)
        print_error("  diag: %s\n", d->lines[i]);
}

int unit_contains_in_order(const char *s, const char *fragment)
{
    char buf[512];
    snprintf(buf, sizeof(buf), "%s", fragment);
    const char *at = s;
    char *part = buf;
    while (part) {
        char *next = strstr(part, " ... ");
        if (next) {
            *next = '\0';
            next += 5;
        }
        const char *hit = strstr(at, part);
        if (!hit)
            return 0;
        at = hit + strlen(part);
        part = next;
    }
    return 1;
}

const char *unit_find_diag(const struct conf_diag *d, const char *prefix, const char *fragment)
{
    for (size_t i = 0; i < d->count; i++)
        if (strncmp(d->lines[i], prefix, strlen(prefix)) == 0 &&
            unit_contains_in_order(d->lines[i] + strlen(prefix), fragment))
            return d->lines[i];
    return NULL;
}

void unit_assert_diag(const struct conf_diag *d, const char *prefix, const char *fragment)
{
    if (!unit_find_diag(d, prefix, fragment)) {
        unit_print_diags(d);
        fail_msg("no diagnostic '%s' ... '%s'", prefix, fragment);
    }
}

/*
 * Check the "# expect:" lines of the comment header of `text` (the file at
 * `path`, called `name` in reports) against `d`. Returns how many failed,
 * counting a header without any as one.
 */
static int check_expectations(const char *name, const char *path, const char *text, const struct conf_diag *d)
{
    int failed = 0, expectations = 0;
    for (const char *line = text; line && *line == '#'; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        if (strncmp(line, "# expect: ", 10) != 0)
            continue;
        char expect[512], prefix[4200];
        const char *fragment = NULL;
        size_t l, col;
        int used = 0;
        snprintf(expect, sizeof(expect), "%.*s", (int)strcspn(line + 10, "\n"), line + 10);
        if (strncmp(expect, "-: ", 3) == 0) {
            snprintf(prefix, sizeof(prefix), "%s: ", path);
            fragment = expect + 3;
        } else if (sscanf(expect, "%zu:%zu: %n", &l, &col, &used) == 2 && used > 0) {
            snprintf(prefix, sizeof(prefix), "%s:%zu:%zu: ", path, l, col);
            fragment = expect + used;
        } else {
            fail_msg("%s: cannot read expectation '%s'", name, expect);
        }
        expectations++;
        if (!unit_find_diag(d, prefix, fragment)) {
            print_error("  %s: no diagnostic '%s%s'\n", name, prefix, fragment);
            failed++;
        }
    }
    if (expectations == 0) {
        print_error("  %s: no '# expect:' line in its header\n", name);
        failed++;
    }
    return failed;
}

void unit_check_bad_file(const char *folder, const char *name, unit_bad_loader load)
{
    char rel[512], path[4096];
    snprintf(rel, sizeof(rel), "%s/%s", folder, name);
    unit_data_path(path, sizeof(path), rel);
    char *text = unit_read_file(path);
    if (!text)
        fail_msg("cannot read %s", path);

    struct conf_diag d;
    int failed = load(name, path, &d);
    failed += check_expectations(name, path, text, &d);
    if (failed)
        unit_print_diags(&d);
    conf_diag_free(&d);
    free(text);
    assert_int_equal(failed, 0);
}

void unit_check_folder_listed(const char *folder, const char *const *listed, size_t n, const char *list_name)
{
    char dir[4096];
    unit_data_path(dir, sizeof(dir), folder);
    DIR *dh = opendir(dir);
    assert_non_null(dh);
    int unlisted = 0;
    size_t seen = 0;
    for (struct dirent *e = readdir(dh); e; e = readdir(dh)) {
        size_t len = strlen(e->d_name);
        if (len < 5 || strcmp(e->d_name + len - 5, ".yaml") != 0)
            continue;
        seen++;
        int found = 0;
        for (size_t i = 0; i < n; i++)
            if (strcmp(listed[i], e->d_name) == 0)
                found = 1;
        if (!found) {
            print_error("  %s/%s is not in %s\n", folder, e->d_name, list_name);
            unlisted++;
        }
    }
    closedir(dh);
    assert_int_equal(unlisted, 0);
    assert_int_equal(seen, n);
}
