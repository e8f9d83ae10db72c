#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "yamlconf.h"

void conf_diag_init(struct conf_diag *d)
{
    memset(d, 0, sizeof(*d));
}

void conf_diag_free(struct conf_diag *d)
{
    for (size_t i = 0; i < d->count; i++)
        free(d->lines[i]);
    free(d->lines);
    memset(d, 0, sizeof(*d));
}

__attribute__((format(printf, 5, 0))) static void diag_vadd(struct conf_diag *d, const char *file, size_t line,
                                                            size_t col, const char *fmt, va_list ap)
{
    char msg[1024], full[1400];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    if (line && col)
        snprintf(full, sizeof(full), "%s:%zu:%zu: %s", file, line, col, msg);
    else if (line)
        snprintf(full, sizeof(full), "%s:%zu: %s", file, line, msg);
    else
        snprintf(full, sizeof(full), "%s: %s", file, msg);

    if (d->count == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 8;
        char **lines = realloc(d->lines, cap * sizeof(*lines));
        if (!lines)
            return; /* out of memory: the caller still sees its own -1 */
        d->lines = lines;
        d->cap = cap;
    }
    char *copy = strdup(full);
    if (copy)
        d->lines[d->count++] = copy;
}

void conf_diag_add(struct conf_diag *d, const char *file, size_t line, size_t col, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    diag_vadd(d, file, line, col, fmt, ap);
    va_end(ap);
}

void conf_diag_print(const struct conf_diag *d, FILE *out)
{
    for (size_t i = 0; i < d->count; i++)
        fprintf(out, "%s\n", d->lines[i]);
}

void yconf_resolve_path(const char *base_file, const char *rel, char *out, size_t outlen)
{
    const char *slash = strrchr(base_file, '/');
    if (rel[0] == '/')
        snprintf(out, outlen, "%s", rel);
    else if (!slash)
        snprintf(out, outlen, "%s", rel);
    else
        snprintf(out, outlen, "%.*s/%s", (int)(slash - base_file), base_file, rel);
}

static int load_parser(struct yconf *y, yaml_parser_t *parser, struct conf_diag *d)
{
    if (!yaml_parser_load(parser, &y->doc)) {
        /* libyaml marks are 0-based. */
        conf_diag_add(d, y->path, parser->problem_mark.line + 1, parser->problem_mark.column + 1,
                      "YAML syntax error: %s%s%s", parser->problem ? parser->problem : "unknown",
                      parser->context ? " " : "", parser->context ? parser->context : "");
        return -1;
    }
    y->loaded = 1;
    return 0; /* an empty file loads with no root: the caller says whether that is fine */
}

int yconf_load(struct yconf *y, const char *path, struct conf_diag *d)
{
    memset(y, 0, sizeof(*y));
    y->path = strdup(path);
    FILE *f = fopen(path, "rb");
    if (!f) {
        conf_diag_add(d, path, 0, 0, "cannot open: %s", strerror(errno));
        return -1;
    }
    yaml_parser_t parser;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_file(&parser, f);
    int rc = load_parser(y, &parser, d);
    yaml_parser_delete(&parser);
    fclose(f);
    return rc;
}

int yconf_load_string(struct yconf *y, const char *name, const char *text, size_t len, struct conf_diag *d)
{
    memset(y, 0, sizeof(*y));
    y->path = strdup(name);
    yaml_parser_t parser;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    int rc = load_parser(y, &parser, d);
    yaml_parser_delete(&parser);
    return rc;
}

void yconf_free(struct yconf *y)
{
    if (y->loaded)
        yaml_document_delete(&y->doc);
    free(y->path);
    memset(y, 0, sizeof(*y));
}

yaml_node_t *yconf_root(struct yconf *y)
{
    return y->loaded ? yaml_document_get_root_node(&y->doc) : NULL;
}

void yconf_error(struct yconf *y, const yaml_node_t *node, struct conf_diag *d, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (node)
        diag_vadd(d, y->path, node->start_mark.line + 1, node->start_mark.column + 1, fmt, ap);
    else
        diag_vadd(d, y->path, 0, 0, fmt, ap);
    va_end(ap);
}

const char *yconf_scalar(const yaml_node_t *node)
{
    return (node && node->type == YAML_SCALAR_NODE) ? (const char *)node->data.scalar.value : NULL;
}

size_t yconf_seq_len(const yaml_node_t *seq)
{
    if (!seq || seq->type != YAML_SEQUENCE_NODE)
        return 0;
    return (size_t)(seq->data.sequence.items.top - seq->data.sequence.items.start);
}

yaml_node_t *yconf_seq_item(struct yconf *y, yaml_node_t *seq, size_t i)
{
    if (i >= yconf_seq_len(seq))
        return NULL;
    return yaml_document_get_node(&y->doc, seq->data.sequence.items.start[i]);
}

int yconf_check_map(struct yconf *y, yaml_node_t *node, const char *what, const char *const *allowed,
                    struct conf_diag *d)
{
    if (!node || node->type != YAML_MAPPING_NODE) {
        yconf_error(y, node, d, "%s must be a mapping of keys to values", what);
        return -1;
    }
    int rc = 0;
    for (yaml_node_pair_t *p = node->data.mapping.pairs.start; p < node->data.mapping.pairs.top; p++) {
        yaml_node_t *key = yaml_document_get_node(&y->doc, p->key);
        const char *name = yconf_scalar(key);
        if (!name) {
            yconf_error(y, key, d, "%s: keys must be plain words", what);
            rc = -1;
            continue;
        }
        int known = 0;
        for (const char *const *a = allowed; a && *a; a++)
            if (strcmp(*a, name) == 0)
                known = 1;
        if (!known) {
            yconf_error(y, key, d, "unknown key '%s' in %s", name, what);
            rc = -1;
        }
        for (yaml_node_pair_t *q = node->data.mapping.pairs.start; q < p; q++) {
            const char *earlier = yconf_scalar(yaml_document_get_node(&y->doc, q->key));
            if (earlier && strcmp(earlier, name) == 0) {
                yconf_error(y, key, d, "key '%s' given twice in %s", name, what);
                rc = -1;
                break;
            }
        }
    }
    return rc;
}

yaml_node_t *yconf_get(struct yconf *y, yaml_node_t *map, const char *key)
{
    if (!map || map->type != YAML_MAPPING_NODE)
        return NULL;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        const char *name = yconf_scalar(yaml_document_get_node(&y->doc, p->key));
        if (name && strcmp(name, key) == 0)
            return yaml_document_get_node(&y->doc, p->value);
    }
    return NULL;
}

/* Fetch the scalar under `key`: 1 with *text and *node set, 0 if the key is
 * absent, -1 (reported) if it is present but not a single value. */
static int scalar_under(struct yconf *y, yaml_node_t *map, const char *key, const char **text, yaml_node_t **node,
                        struct conf_diag *d)
{
    yaml_node_t *n = yconf_get(y, map, key);
    *node = n;
    *text = NULL;
    if (!n)
        return 0;
    *text = yconf_scalar(n);
    if (!*text) {
        yconf_error(y, n, d, "'%s' must be a single value, not a list or mapping", key);
        return -1;
    }
    return 1;
}

int yconf_get_str(struct yconf *y, yaml_node_t *map, const char *key, char **out, struct conf_diag *d)
{
    yaml_node_t *n;
    const char *s;
    int found = scalar_under(y, map, key, &s, &n, d);
    if (found <= 0)
        return found;
    char *copy = strdup(s);
    if (!copy) {
        yconf_error(y, n, d, "out of memory");
        return -1;
    }
    free(*out);
    *out = copy;
    return 0;
}

int yconf_get_long(struct yconf *y, yaml_node_t *map, const char *key, long min, long max, long *out,
                   struct conf_diag *d)
{
    yaml_node_t *n;
    const char *s;
    int found = scalar_under(y, map, key, &s, &n, d);
    if (found <= 0)
        return found;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) {
        yconf_error(y, n, d, "'%s' must be a whole number from %ld to %ld, not '%s'", key, min, max, s);
        return -1;
    }
    *out = v;
    return 0;
}

int yconf_get_bool(struct yconf *y, yaml_node_t *map, const char *key, int *out, struct conf_diag *d)
{
    yaml_node_t *n;
    const char *s;
    int found = scalar_under(y, map, key, &s, &n, d);
    if (found <= 0)
        return found;
    if (!strcmp(s, "true") || !strcmp(s, "yes") || !strcmp(s, "on")) {
        *out = 1;
    } else if (!strcmp(s, "false") || !strcmp(s, "no") || !strcmp(s, "off")) {
        *out = 0;
    } else {
        yconf_error(y, n, d, "'%s' must be true or false, not '%s'", key, s);
        return -1;
    }
    return 0;
}

int yconf_parse_ms(const char *text, int forever_ok, int64_t *out)
{
    if (forever_ok && strcmp(text, "forever") == 0) {
        *out = YCONF_FOREVER;
        return 0;
    }
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || !(v >= 0) || !isfinite(v)) /* !(v >= 0) also refuses NaN */
        return -1;
    double scale;
    if (*end == '\0' || strcmp(end, "s") == 0)
        scale = 1000;
    else if (strcmp(end, "ms") == 0)
        scale = 1;
    else if (strcmp(end, "m") == 0)
        scale = 60000;
    else if (strcmp(end, "h") == 0)
        scale = 3600000;
    else if (strcmp(end, "d") == 0)
        scale = 86400000;
    else
        return -1;
    double ms = v * scale;
    if (ms > (double)INT64_MAX / 2)
        return -1;
    *out = (int64_t)ms;
    return 0;
}

int yconf_get_ms(struct yconf *y, yaml_node_t *map, const char *key, int64_t min_ms, int64_t max_ms, int forever_ok,
                 int64_t *out, struct conf_diag *d)
{
    yaml_node_t *n;
    const char *s;
    int found = scalar_under(y, map, key, &s, &n, d);
    if (found <= 0)
        return found;
    int64_t v;
    if (yconf_parse_ms(s, forever_ok, &v) < 0 || (v != YCONF_FOREVER && (v < min_ms || v > max_ms))) {
        yconf_error(y, n, d,
                    "'%s' must be a duration from %" PRId64 "ms to %" PRId64 "ms (like 500ms, 2s, 5m)%s, not '%s'", key,
                    min_ms, max_ms, forever_ok ? " or 'forever'" : "", s);
        return -1;
    }
    *out = v;
    return 0;
}

int yconf_get_bytes(struct yconf *y, yaml_node_t *map, const char *key, size_t min, size_t max, size_t *out,
                    struct conf_diag *d)
{
    yaml_node_t *n;
    const char *s;
    int found = scalar_under(y, map, key, &s, &n, d);
    if (found <= 0)
        return found;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    unsigned long long scale = 0;
    if (!strcmp(end, "") || !strcmp(end, "B"))
        scale = 1;
    else if (!strcmp(end, "KiB") || !strcmp(end, "k") || !strcmp(end, "K"))
        scale = 1024ULL;
    else if (!strcmp(end, "MiB") || !strcmp(end, "m") || !strcmp(end, "M"))
        scale = 1024ULL * 1024;
    else if (!strcmp(end, "GiB") || !strcmp(end, "g") || !strcmp(end, "G"))
        scale = 1024ULL * 1024 * 1024;
    if (errno || end == s || s[0] == '-' || scale == 0 || v > max / scale || v * scale < min) {
        yconf_error(y, n, d, "'%s' must be a size from %zu to %zu bytes (like 512, 64KiB, 8MiB), not '%s'", key, min,
                    max, s);
        return -1;
    }
    *out = (size_t)(v * scale);
    return 0;
}
