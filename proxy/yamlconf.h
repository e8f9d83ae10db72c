/*
 * yamlconf: reading jobgate's configuration and rule files.
 *
 * Both are YAML, read with libyaml's document API because it keeps the line
 * and column of every node: an operator gets `FILE:LINE:COL: message` for
 * every mistake, not "parse error". This module only walks the tree and
 * checks types; what the keys mean belongs to config.c and rules.c.
 *
 * Error idiom: getters return 0 when the key is absent (leaving *out as it
 * was, so callers set defaults first) or valid, and -1 after adding a message
 * to the diagnostics list. Callers keep going after an error so that one run
 * of `jobgate -t` reports every mistake.
 */
#ifndef JOBGATE_YAMLCONF_H
#define JOBGATE_YAMLCONF_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <yaml.h>

/* A list of diagnostics, each one line "FILE:LINE:COL: message". */
struct conf_diag {
    char **lines;
    size_t count;
    size_t cap;
};

void conf_diag_init(struct conf_diag *d);
void conf_diag_free(struct conf_diag *d);
/* Add a message about `file` (line/col 1-based; 0 leaves them out). */
void conf_diag_add(struct conf_diag *d, const char *file, size_t line, size_t col, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
void conf_diag_print(const struct conf_diag *d, FILE *out);

/* Write into `out` the path `rel` names when written in the file `base_file`:
 * an absolute `rel` as it is, else relative to base_file's folder (files name
 * their neighbours: rule files, shared error maps). */
void yconf_resolve_path(const char *base_file, const char *rel, char *out, size_t outlen);

/* One parsed YAML file. */
struct yconf {
    char *path;
    yaml_document_t doc;
    int loaded;
};

/* Parse `path`. Returns 0, or -1 with a diagnostic (file unreadable, syntax error, empty). */
int yconf_load(struct yconf *y, const char *path, struct conf_diag *d);
/* Parse an in-memory text, `name` is what diagnostics call it. */
int yconf_load_string(struct yconf *y, const char *name, const char *text, size_t len, struct conf_diag *d);
void yconf_free(struct yconf *y);

yaml_node_t *yconf_root(struct yconf *y);

void yconf_error(struct yconf *y, const yaml_node_t *node, struct conf_diag *d, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* `node` must be a mapping whose keys are all in `allowed` (NULL-terminated),
 * each at most once. Returns 0 or -1 (every offending key reported). */
int yconf_check_map(struct yconf *y, yaml_node_t *node, const char *what, const char *const *allowed,
                    struct conf_diag *d);

/* The value under `key` in mapping `map`, or NULL. */
yaml_node_t *yconf_get(struct yconf *y, yaml_node_t *map, const char *key);

/* The text of a scalar node, or NULL if it is not a scalar. */
const char *yconf_scalar(const yaml_node_t *node);

/* Sequence access: number of items and the i-th one. */
size_t yconf_seq_len(const yaml_node_t *seq);
yaml_node_t *yconf_seq_item(struct yconf *y, yaml_node_t *seq, size_t i);

/* Typed getters (see the error idiom above). Strings are malloc'd; a
 * previous *out is freed when replaced. */
int yconf_get_str(struct yconf *y, yaml_node_t *map, const char *key, char **out, struct conf_diag *d);
int yconf_get_long(struct yconf *y, yaml_node_t *map, const char *key, long min, long max, long *out,
                   struct conf_diag *d);
int yconf_get_bool(struct yconf *y, yaml_node_t *map, const char *key, int *out, struct conf_diag *d);

/* A duration: "250ms", "2s", "5m", "1h" or a bare number of seconds;
 * with `forever_ok`, "forever" gives -1. */
#define YCONF_FOREVER (-1)
int yconf_parse_ms(const char *text, int forever_ok, int64_t *out);
int yconf_get_ms(struct yconf *y, yaml_node_t *map, const char *key, int64_t min_ms, int64_t max_ms, int forever_ok,
                 int64_t *out, struct conf_diag *d);

/* A size: "512", "64KiB", "8MiB", "1GiB". */
int yconf_get_bytes(struct yconf *y, yaml_node_t *map, const char *key, size_t min, size_t max, size_t *out,
                    struct conf_diag *d);

#endif
