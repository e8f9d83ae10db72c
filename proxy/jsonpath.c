#include <stdlib.h>
#include <string.h>

#include "jsonpath.h"

int jsonpath_compile(struct jsonpath *p, const char *text)
{
    memset(p, 0, sizeof(*p));
    if (!text || !*text)
        return -1;
    p->text = strdup(text);
    const char *s = text;
    while (1) {
        const char *dot = strchr(s, '.');
        size_t len = dot ? (size_t)(dot - s) : strlen(s);
        if (len == 0 || p->nparts == JSONPATH_MAX_DEPTH) {
            jsonpath_free(p);
            return -1;
        }
        p->parts[p->nparts++] = strndup(s, len);
        if (!dot)
            return 0;
        s = dot + 1;
    }
}

const cJSON *jsonpath_get(const struct jsonpath *p, const cJSON *root)
{
    if (p->nparts == 0)
        return NULL;
    const cJSON *item = root;
    for (size_t i = 0; i < p->nparts && item; i++) {
        if (!cJSON_IsObject(item))
            return NULL;
        item = cJSON_GetObjectItemCaseSensitive(item, p->parts[i]);
    }
    return item;
}

const char *jsonpath_get_string(const struct jsonpath *p, const cJSON *root)
{
    const cJSON *item = jsonpath_get(p, root);
    return cJSON_IsString(item) ? item->valuestring : NULL;
}

cJSON *json_parse_exact(const char *text, size_t len)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!root)
        return NULL;
    while (end && end < text + len && (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n'))
        end++;
    if (!end || end != text + len) {
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

void jsonpath_free(struct jsonpath *p)
{
    free(p->text);
    for (size_t i = 0; i < p->nparts; i++)
        free(p->parts[i]);
    memset(p, 0, sizeof(*p));
}
