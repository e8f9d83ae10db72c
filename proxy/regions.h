/*
 * regions: which cloud region a request goes to, for rules whose upstream
 * url carries `{region}` (https://ecs.{region}.myhuaweicloud.com). On
 * Huawei Cloud a project belongs to exactly one region; jobgate learns it
 *   - from the request's Host, `SERVICE.REGION.DOMAIN` under the configured
 *     regions.host_domain (what Terraform's `cloud = "DOMAIN"` calls), or
 *   - from the project-to-region map of the configuration.
 * A region is used only when it is known (listed in regions.names or a value
 * of the map): never a call to a guessed host.
 *
 * A `struct regions` is immutable once loaded; the gateway keeps its own copy.
 */
#ifndef JOBGATE_REGIONS_H
#define JOBGATE_REGIONS_H

#include <stddef.h>

#define REGIONS_NAME_MAX 64 /* a region name: 1 to 63 of [a-z0-9-] */

struct regions;

struct regions *regions_new(void);
struct regions *regions_copy(const struct regions *r); /* NULL when `r` is NULL or out of memory */
void regions_free(struct regions *r);

/* Is `name` a well-formed region name ([a-z0-9-], 1 to 63)? */
int regions_name_ok(const char *name);

/* Build: a known region; a project's region; the Host domain. Return 0, or -1 (out of memory). */
int regions_add_name(struct regions *r, const char *name);
int regions_add_project(struct regions *r, const char *project, const char *region);
int regions_set_host_domain(struct regions *r, const char *domain);

enum regions_verdict {
    REGIONS_OK,              /* `out` holds the region */
    REGIONS_UNKNOWN_REGION,  /* the Host names a region that is not known: 404 */
    REGIONS_MISMATCH,        /* the Host's region is not the project's: 400 */
    REGIONS_UNKNOWN_PROJECT, /* no region from the Host, and the project is not in the map: 400 */
};

/* The region for a request with `host` (may be NULL) about `project` (may
 * be NULL). `r` may be NULL (nothing configured). */
enum regions_verdict regions_resolve(const struct regions *r, const char *host, const char *project,
                                     char out[REGIONS_NAME_MAX]);

/* The service label of `host` when it is exactly SERVICE.REGION.DOMAIN
 * under the configured host domain (any case, a port ignored), into `out`
 * (lower case): what Terraform's provider calls for `cloud = "DOMAIN"`.
 * Returns 1, or 0 when `host` is not of that form or the label is not
 * 1-63 of [a-z0-9-]. The region label is not judged here (regions_resolve
 * does that, for the rules that need one). `r` may be NULL. */
int regions_host_service(const struct regions *r, const char *host, char out[REGIONS_NAME_MAX]);

/* Write `url` with its "{region}" replaced by `region`. Returns the length,
 * or -1 when it does not fit. */
int regions_expand(const char *url, const char *region, char *out, size_t outlen);

/* Where `{region}` may be in an upstream url: once, in the host name. Returns
 * 1 when `url` has it there, 0 when it has no placeholder, -1 when it has
 * one elsewhere or another one. */
int regions_url_check(const char *url);

#endif
