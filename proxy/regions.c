#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "regions.h"

struct regions {
    char *host_domain; /* lower case, no leading '.'; NULL: the Host says nothing */
    char **names;
    size_t nnames;
    char **projects; /* projects[i] is in region project_regions[i] */
    char **project_regions;
    size_t nprojects;
};

struct regions *regions_new(void)
{
    return calloc(1, sizeof(struct regions));
}

void regions_free(struct regions *r)
{
    if (!r)
        return;
    free(r->host_domain);
    for (size_t i = 0; i < r->nnames; i++)
        free(r->names[i]);
    free(r->names);
    for (size_t i = 0; i < r->nprojects; i++) {
        free(r->projects[i]);
        free(r->project_regions[i]);
    }
    free(r->projects);
    free(r->project_regions);
    free(r);
}

int regions_name_ok(const char *name)
{
    size_t n = strlen(name);
    return n > 0 && n < REGIONS_NAME_MAX && strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789-") == n;
}

static int append(char ***list, size_t n, const char *s)
{
    char **grown = realloc(*list, (n + 1) * sizeof(*grown));
    if (!grown)
        return -1;
    *list = grown;
    return (grown[n] = strdup(s)) ? 0 : -1;
}

int regions_add_name(struct regions *r, const char *name)
{
    if (append(&r->names, r->nnames, name) < 0)
        return -1;
    r->nnames++;
    return 0;
}

int regions_add_project(struct regions *r, const char *project, const char *region)
{
    if (append(&r->projects, r->nprojects, project) < 0)
        return -1;
    if (append(&r->project_regions, r->nprojects, region) < 0) {
        free(r->projects[r->nprojects]);
        return -1;
    }
    r->nprojects++;
    return 0;
}

int regions_set_host_domain(struct regions *r, const char *domain)
{
    free(r->host_domain);
    while (*domain == '.')
        domain++;
    return (r->host_domain = strdup(domain)) ? 0 : -1;
}

struct regions *regions_copy(const struct regions *r)
{
    if (!r)
        return NULL;
    struct regions *c = regions_new();
    if (!c || (r->host_domain && regions_set_host_domain(c, r->host_domain) < 0))
        goto fail;
    for (size_t i = 0; i < r->nnames; i++)
        if (regions_add_name(c, r->names[i]) < 0)
            goto fail;
    for (size_t i = 0; i < r->nprojects; i++)
        if (regions_add_project(c, r->projects[i], r->project_regions[i]) < 0)
            goto fail;
    return c;
fail:
    regions_free(c);
    return NULL;
}

static int known(const struct regions *r, const char *region)
{
    for (size_t i = 0; i < r->nnames; i++)
        if (strcmp(r->names[i], region) == 0)
            return 1;
    for (size_t i = 0; i < r->nprojects; i++)
        if (strcmp(r->project_regions[i], region) == 0)
            return 1;
    return 0;
}

/* The region label of `host` ("SERVICE.REGION.DOMAIN[:PORT]", any case)
 * into `out` (lower case). Returns 1, or 0 when `host` is not of that form. */
static int host_region(const struct regions *r, const char *host, char out[REGIONS_NAME_MAX])
{
    if (!r->host_domain || !host || host[0] == '[')
        return 0;
    size_t len = strcspn(host, ":"), dlen = strlen(r->host_domain);
    if (len <= dlen + 1 || host[len - dlen - 1] != '.' || strncasecmp(host + len - dlen, r->host_domain, dlen) != 0)
        return 0;
    size_t end = len - dlen - 1, start = end;
    while (start > 0 && host[start - 1] != '.')
        start--;
    if (start == 0 || end - start == 0 || end - start >= REGIONS_NAME_MAX)
        return 0; /* no service label before the region, or no region */
    for (size_t i = start; i < end; i++)
        out[i - start] = (char)((host[i] >= 'A' && host[i] <= 'Z') ? host[i] + 32 : host[i]);
    out[end - start] = '\0';
    return 1;
}

int regions_host_service(const struct regions *r, const char *host, char out[REGIONS_NAME_MAX])
{
    char region[REGIONS_NAME_MAX];
    if (!r || !host_region(r, host, region))
        return 0;
    /* host_region found ".REGION.DOMAIN" with a label before it: that label
     * must be the whole rest of the name. */
    size_t len = strcspn(host, ":") - strlen(r->host_domain) - strlen(region) - 2;
    if (len == 0 || len >= REGIONS_NAME_MAX || memchr(host, '.', len))
        return 0;
    for (size_t i = 0; i < len; i++)
        out[i] = (char)((host[i] >= 'A' && host[i] <= 'Z') ? host[i] + 32 : host[i]);
    out[len] = '\0';
    return regions_name_ok(out);
}

enum regions_verdict regions_resolve(const struct regions *r, const char *host, const char *project,
                                     char out[REGIONS_NAME_MAX])
{
    out[0] = '\0';
    const char *mapped = NULL;
    for (size_t i = 0; r && project && i < r->nprojects; i++)
        if (strcmp(r->projects[i], project) == 0)
            mapped = r->project_regions[i];
    char from_host[REGIONS_NAME_MAX];
    if (r && host_region(r, host, from_host)) {
        if (!regions_name_ok(from_host) || !known(r, from_host))
            return REGIONS_UNKNOWN_REGION;
        if (mapped && strcmp(mapped, from_host) != 0)
            return REGIONS_MISMATCH;
        snprintf(out, REGIONS_NAME_MAX, "%s", from_host);
        return REGIONS_OK;
    }
    if (!mapped)
        return REGIONS_UNKNOWN_PROJECT;
    snprintf(out, REGIONS_NAME_MAX, "%s", mapped);
    return REGIONS_OK;
}

int regions_expand(const char *url, const char *region, char *out, size_t outlen)
{
    const char *at = strstr(url, "{region}");
    int n =
        at ? snprintf(out, outlen, "%.*s%s%s", (int)(at - url), url, region, at + 8) : snprintf(out, outlen, "%s", url);
    return n < 0 || (size_t)n >= outlen ? -1 : n;
}

int regions_url_check(const char *url)
{
    const char *host = strstr(url, "://");
    host = host ? host + 3 : url;
    size_t host_len = strcspn(host, "/");
    const char *at = strstr(url, "{region}");
    if (!at)
        return strpbrk(url, "{}") ? -1 : 0;
    if (at < host || at + 8 > host + host_len || strstr(at + 8, "{region}"))
        return -1;
    /* Nothing else in braces, before or after it. */
    for (const char *p = url; *p; p++)
        if ((*p == '{' || *p == '}') && !(p >= at && p < at + 8))
            return -1;
    /* A whole label: '.' or the start of the host before it, '.' or ':' after. */
    if ((at != host && at[-1] != '.') || (at[8] != '.' && at[8] != ':' && at[8] != '/' && at[8] != '\0'))
        return -1;
    return 1;
}
