/*
 * Helpers shared by the cmocka unit tests in tests/unit/: table-row checks,
 * paths into the source tree and its test data, diagnostics (struct
 * conf_diag) and the data-driven "bad file" cases.
 *
 * Every function that checks something fails the running cmocka test (it
 * must be called from a test, a setup or a teardown); the others only
 * report.
 */
#ifndef JOBGATE_UNIT_SUPPORT_H
#define JOBGATE_UNIT_SUPPORT_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

struct conf_diag;

/*
 * Check `cond` for one table row: when it is false, print the row ("  row
 * failed: " then fmt and its arguments) and count it in the int `failed`.
 * A table test checks every row this way, then asserts that `failed` is 0,
 * so that one run shows every row that is wrong.
 */
#define UNIT_EXPECT(failed, cond, fmt, ...)                      \
    do {                                                         \
        if (!(cond)) {                                           \
            print_error("  row failed: " fmt "\n", __VA_ARGS__); \
            (failed)++;                                          \
        }                                                        \
    } while (0)

/*
 * Write into buf (len bytes) the path of `rel` under the source tree: the
 * folder in $JOBGATE_SRCDIR (set by 'make check'), else ".". Fails the test
 * when the path does not fit.
 */
void unit_src_path(char *buf, size_t len, const char *rel);

/* As unit_src_path, for `rel` under the test data folder tests/unit/data/. */
void unit_data_path(char *buf, size_t len, const char *rel);

/*
 * The first 64 KiB (less one byte) of the file at `path`, NUL-terminated, in
 * memory the caller frees; NULL when it cannot be opened (or on no memory).
 */
char *unit_read_file(const char *path);

/* Print every diagnostic in `d`, one a line ("  diag: ..."), for a failing test. */
void unit_print_diags(const struct conf_diag *d);

/*
 * Does `s` contain the parts of `fragment`, split on " ... ", in that order?
 * ("a ... b" needs "a", then "b" somewhere after it.) A fragment longer than
 * 511 bytes is cut there.
 */
int unit_contains_in_order(const char *s, const char *fragment);

/*
 * The first diagnostic in `d` that starts with `prefix` and whose rest
 * contains `fragment` (as unit_contains_in_order reads it), or NULL.
 */
const char *unit_find_diag(const struct conf_diag *d, const char *prefix, const char *fragment);

/*
 * Check that unit_find_diag finds a diagnostic in `d` for `prefix` and
 * `fragment`; if not, print every diagnostic in `d` and fail the test.
 */
void unit_assert_diag(const struct conf_diag *d, const char *prefix, const char *fragment);

/*
 * A loader of one bad file for unit_check_bad_file: initialises `d`, loads
 * the file at `path` into it, and frees whatever was loaded. Returns 0 when
 * the file was refused, as a bad file must be; otherwise prints why (naming
 * the file `name`) and returns 1.
 */
typedef int (*unit_bad_loader)(const char *name, const char *path, struct conf_diag *d);

/*
 * Check the data file FOLDER/NAME (FOLDER under tests/unit/data/) that has
 * one mistake: `load` must refuse it, with every diagnostic its comment
 * header announces, one line each at the top of the file:
 *
 *     # expect: LINE:COL: fragment     (a diagnostic "PATH:LINE:COL: ...")
 *     # expect: -: fragment            (a diagnostic "PATH: ...", no position)
 *
 * where PATH is the file's path and fragment is read by
 * unit_contains_in_order. A header with no "# expect:" line is a failure.
 * Every failure is printed, then the diagnostics, then the test fails; an
 * unreadable file or "# expect:" line fails it at once.
 */
void unit_check_bad_file(const char *folder, const char *name, unit_bad_loader load);

/*
 * Check that every *.yaml file in the data folder `folder` (under
 * tests/unit/data/) is one of the `n` names in `listed`, and that the folder
 * holds exactly `n` of them, so that no bad-file case goes untested. Each
 * unlisted file is printed as "FOLDER/FILE is not in LIST_NAME" before the
 * test fails.
 */
void unit_check_folder_listed(const char *folder, const char *const *listed, size_t n, const char *list_name);

#endif
