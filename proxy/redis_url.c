#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redis_url.h"

#define SENTINEL_PORT 26379

#define URL_FORMS                                                                                                   \
    "redis://HOST:PORT[/DB], sentinel://HOST:PORT[,HOST:PORT...]/MASTER[/DB], cluster://HOST:PORT[,HOST:PORT...], " \
    "unix:PATH or none"

/* Parse HOST[:PORT] (HOST may be [IPv6]) at `s`; the host ends at ':' or at
 * one of `stops`. Returns where parsing stopped, or NULL with a message. */
static const char *parse_host_port(const char *url, const char *s, const char *stops, int default_port,
                                   struct redis_addr *a, char *err, size_t errlen)
{
    const char *host_end;
    const char *rest;
    if (s[0] == '[') { /* [::1]:6379 */
        host_end = strchr(s, ']');
        if (!host_end) {
            snprintf(err, errlen, "redis url '%s': unclosed '['", url);
            return NULL;
        }
        s++;
        rest = host_end + 1;
    } else {
        host_end = s;
        while (*host_end && *host_end != ':' && !strchr(stops, *host_end))
            host_end++;
        rest = host_end;
    }
    size_t hlen = (size_t)(host_end - s);
    if (hlen == 0 || hlen >= sizeof(a->host)) {
        snprintf(err, errlen, "redis url '%s': bad host", url);
        return NULL;
    }
    memcpy(a->host, s, hlen);
    a->host[hlen] = '\0';
    a->port = default_port;
    if (*rest == ':') {
        char *end;
        long port = strtol(rest + 1, &end, 10);
        if (end == rest + 1 || port < 1 || port > 65535) {
            snprintf(err, errlen, "redis url '%s': bad port", url);
            return NULL;
        }
        a->port = (int)port;
        rest = end;
    }
    return rest;
}

/* Parse the optional "/DB" that ends a URL. */
static int parse_db(const char *url, const char *rest, struct redis_target *t, char *err, size_t errlen)
{
    if (*rest == '/' && rest[1]) {
        char *end;
        long db = strtol(rest + 1, &end, 10);
        if (end == rest + 1 || *end || db < 0 || db > 1000000) {
            snprintf(err, errlen, "redis url '%s': bad database number", url);
            return -1;
        }
        t->db = (int)db;
    } else if (*rest && strcmp(rest, "/") != 0) {
        snprintf(err, errlen, "redis url '%s': unexpected '%s'", url, rest);
        return -1;
    }
    return 0;
}

/* sentinel://HOST:PORT[,HOST:PORT...]/MASTER[/DB], from after the scheme. */
static int parse_sentinel_url(const char *url, const char *s, struct redis_target *t, char *err, size_t errlen)
{
    for (;;) {
        if (t->nsentinels == REDIS_URL_SENTINELS_MAX) {
            snprintf(err, errlen, "redis url '%s': at most %d sentinels", url, REDIS_URL_SENTINELS_MAX);
            return -1;
        }
        s = parse_host_port(url, s, ",/", SENTINEL_PORT, &t->sentinels[t->nsentinels], err, errlen);
        if (!s)
            return -1;
        t->nsentinels++;
        if (*s != ',')
            break;
        s++;
    }
    size_t nlen = *s == '/' ? strcspn(s + 1, "/") : 0;
    if (nlen == 0) {
        snprintf(err, errlen, "redis url '%s': no master name (sentinel://HOST:PORT[,HOST:PORT...]/MASTER[/DB])", url);
        return -1;
    }
    s++;
    for (size_t i = 0; i < nlen; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
              ch == '-' || ch == '_') ||
            nlen >= sizeof(t->master_name)) {
            snprintf(err, errlen, "redis url '%s': bad master name (letters, digits, '.', '-', '_')", url);
            return -1;
        }
    }
    memcpy(t->master_name, s, nlen);
    t->master_name[nlen] = '\0';
    return parse_db(url, s + nlen, t, err, errlen);
}

/* cluster://HOST:PORT[,HOST:PORT...], from after the scheme. */
static int parse_cluster_url(const char *url, const char *s, struct redis_target *t, char *err, size_t errlen)
{
    for (;;) {
        if (t->nseeds == REDIS_URL_SEEDS_MAX) {
            snprintf(err, errlen, "redis url '%s': at most %d cluster nodes", url, REDIS_URL_SEEDS_MAX);
            return -1;
        }
        s = parse_host_port(url, s, ",/", 6379, &t->seeds[t->nseeds], err, errlen);
        if (!s)
            return -1;
        t->nseeds++;
        if (*s != ',')
            break;
        s++;
    }
    if (*s && strcmp(s, "/") != 0 && strcmp(s, "/0") != 0) {
        snprintf(err, errlen,
                 "redis url '%s': a Redis Cluster has database 0 only (cluster://HOST:PORT[,HOST:PORT...])", url);
        return -1;
    }
    return 0;
}

int redis_url_parse(const char *url, struct redis_target *t, char *err, size_t errlen)
{
    memset(t, 0, sizeof(*t));
    if (strchr(url, '@')) {
        /* Never echo it: the part before '@' is a password. */
        snprintf(err, errlen,
                 "redis url: credentials in the URL are not accepted (the URL is not shown, it holds a secret)");
        return -1;
    }
    if (strncmp(url, "unix:", 5) == 0) {
        const char *path = url + 5;
        if (strncmp(path, "//", 2) == 0)
            path += 2;
        if (path[0] != '/' || strlen(path) >= sizeof(t->unix_path)) {
            snprintf(err, errlen, "redis url '%s': unix: needs an absolute socket path", url);
            return -1;
        }
        snprintf(t->unix_path, sizeof(t->unix_path), "%s", path);
        return 0;
    }
    if (strncmp(url, "sentinel://", 11) == 0)
        return parse_sentinel_url(url, url + 11, t, err, errlen);
    if (strncmp(url, "cluster://", 10) == 0)
        return parse_cluster_url(url, url + 10, t, err, errlen);
    if (strncmp(url, "redis://", 8) != 0) {
        snprintf(err, errlen, "redis url '%s' must be " URL_FORMS, url);
        return -1;
    }
    const char *rest = parse_host_port(url, url + 8, "/,", 6379, &t->addr, err, errlen);
    if (!rest)
        return -1;
    return parse_db(url, rest, t, err, errlen);
}

const char *redis_addr_name(const struct redis_addr *a, char *buf, size_t len)
{
    snprintf(buf, len, strchr(a->host, ':') ? "[%s]:%d" : "%s:%d", a->host, a->port);
    return buf;
}

const char *redis_target_name(const struct redis_target *t, int addr_known, char *buf, size_t len)
{
    if (t->unix_path[0])
        snprintf(buf, len, "unix:%s", t->unix_path);
    else if (!addr_known)
        snprintf(buf, len, "%s", "");
    else
        redis_addr_name(&t->addr, buf, len);
    return buf;
}
