#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "encoding.h"
#include "errmap.h"

const struct errmap_entry *errmap_for_status(const struct errmap *map, int status)
{
    if (status >= 100 && status < 600) {
        if (map->exact[status].set)
            return &map->exact[status];
        if (map->klass[status / 100].set)
            return &map->klass[status / 100];
    }
    return NULL;
}

/* Copy text from upstream into dst: at most dstlen-1 bytes, whole UTF-8
 * sequences only, each malformed byte replaced by '?', so that what we
 * render is always valid JSON text. */
static void copy_text(char *dst, size_t dstlen, const char *src)
{
    const unsigned char *s = (const unsigned char *)src;
    const unsigned char *end = s + strlen(src);
    size_t used = 0;
    while (s < end) {
        size_t n = encoding_utf8_len(s, (size_t)(end - s));
        if (n == 0) {
            if (used + 1 >= dstlen)
                break;
            dst[used++] = '?';
            s++;
            continue;
        }
        if (used + n >= dstlen)
            break;
        memcpy(dst + used, s, n);
        used += n;
        s += n;
    }
    dst[used] = '\0';
}

/* A last resort the loader never lets happen for a complete map: 502. */
static const struct errmap_entry fallback_entry = {1, 502, NULL, NULL, 0};

void errmap_from_upstream(const struct errmap *map, int status, const char *body, size_t len, struct client_error *out)
{
    memset(out, 0, sizeof(*out));

    /* Keep upstream's own code and message, from whichever shape carries them. */
    cJSON *root = (body && len) ? json_parse_exact(body, len) : NULL;
    for (size_t i = 0; root && i < map->nshapes && !out->code[0]; i++) {
        const char *code = jsonpath_get_string(&map->shapes[i].code, root);
        const char *message = jsonpath_get_string(&map->shapes[i].message, root);
        if (code && *code) {
            copy_text(out->code, sizeof(out->code), code);
            if (message)
                copy_text(out->message, sizeof(out->message), message);
        }
    }
    cJSON_Delete(root);

    const struct errmap_entry *e = NULL;
    for (size_t i = 0; out->code[0] && i < map->ncodes && !e; i++)
        if (strcmp(map->codes[i].code, out->code) == 0)
            e = &map->codes[i].entry;
    if (!e)
        e = errmap_for_status(map, status);
    if (!e)
        e = &fallback_entry;
    out->status = e->status;
    out->retry_after = e->retry_after;

    if (!out->code[0]) {
        if (e->code)
            copy_text(out->code, sizeof(out->code), e->code);
        else
            snprintf(out->code, sizeof(out->code), "JG.HTTP%d", status);
    }
    if (!out->message[0]) {
        if (e->message)
            copy_text(out->message, sizeof(out->message), e->message);
        else
            snprintf(out->message, sizeof(out->message), "upstream answered %d %s", status, http_reason(status));
    }
}

void errmap_from_fault(const struct errmap *map, enum upstream_fault fault, struct client_error *out)
{
    const struct errmap_entry *e =
        (fault > FAULT_NONE && fault < FAULT__COUNT && map->fault[fault].set) ? &map->fault[fault] : &fallback_entry;
    memset(out, 0, sizeof(*out));
    out->status = e->status;
    out->retry_after = e->retry_after;
    if (e->code) {
        copy_text(out->code, sizeof(out->code), e->code);
    } else {
        snprintf(out->code, sizeof(out->code), "JG.%s", fault_name(fault));
        for (char *c = out->code + 3; *c; c++)
            if (*c >= 'a' && *c <= 'z')
                *c = (char)(*c - 'a' + 'A');
    }
    if (e->message)
        copy_text(out->message, sizeof(out->message), e->message);
    else
        snprintf(out->message, sizeof(out->message), "upstream failed: %s", fault_name(fault));
}

void client_error_set(struct client_error *out, int status, const char *code, const char *message)
{
    memset(out, 0, sizeof(*out));
    out->status = status;
    copy_text(out->code, sizeof(out->code), code);
    copy_text(out->message, sizeof(out->message), message);
}

static const char *const shape_names[] = {
    [ERROR_SHAPE_DEFAULT] = "default",
    [ERROR_SHAPE_APIGW] = "apigw",
    [ERROR_SHAPE_ELB] = "elb",
};
_Static_assert(sizeof(shape_names) / sizeof(shape_names[0]) == ERROR_SHAPE__COUNT, "a name for every error shape");

const char *error_shape_name(enum error_shape s)
{
    return (unsigned)s < ERROR_SHAPE__COUNT ? shape_names[s] : "default";
}

enum error_shape error_shape_from_name(const char *name)
{
    for (int s = ERROR_SHAPE_APIGW; s < ERROR_SHAPE__COUNT; s++)
        if (name && strcmp(name, shape_names[s]) == 0)
            return (enum error_shape)s;
    return ERROR_SHAPE_DEFAULT;
}

char *client_error_render(const struct client_error *e, const char *request_id, enum error_shape shape)
{
    cJSON *obj = cJSON_CreateObject();
    if (!obj)
        return NULL;
    if (shape == ERROR_SHAPE_ELB) {
        cJSON *inner = cJSON_AddObjectToObject(obj, "error");
        if (inner) {
            cJSON_AddStringToObject(inner, "code", e->code);
            cJSON_AddStringToObject(inner, "message", e->message);
        }
    } else {
        cJSON_AddStringToObject(obj, "error_code", e->code);
        cJSON_AddStringToObject(obj, "error_msg", e->message);
    }
    if (request_id)
        cJSON_AddStringToObject(obj, "request_id", request_id);
    char *text = cJSON_PrintUnformatted(obj);
    cJSON_Delete(obj);
    return text;
}

static void entry_free(struct errmap_entry *e)
{
    free(e->code);
    free(e->message);
    memset(e, 0, sizeof(*e));
}

void errmap_free(struct errmap *map)
{
    for (size_t i = 0; i < map->ncodes; i++) {
        free(map->codes[i].code);
        entry_free(&map->codes[i].entry);
    }
    free(map->codes);
    for (size_t i = 0; i < 600; i++)
        entry_free(&map->exact[i]);
    for (size_t i = 0; i < 6; i++)
        entry_free(&map->klass[i]);
    for (size_t i = 0; i < FAULT__COUNT; i++)
        entry_free(&map->fault[i]);
    for (size_t i = 0; i < map->nshapes; i++) {
        jsonpath_free(&map->shapes[i].code);
        jsonpath_free(&map->shapes[i].message);
    }
    free(map->shapes);
    memset(map, 0, sizeof(*map));
}
