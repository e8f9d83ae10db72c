#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "aksk.h"
#include "clientkeys.h"
#include "digest.h"
#include "rules.h"

/* Where a route entry is in the keys file, for clientkeys_check_rules. */
struct position {
    size_t line, col;
};

/* A client with what the public struct must not show: its key's hash and
 * its secret access key. */
struct client_entry {
    struct client pub;
    int has_key; /* key_sha256 given */
    unsigned char key_sha256[DIGEST_SHA256_LEN];
    char *access_key; /* access_key: the AK id it signs with (not secret), or NULL */
    char *secret;     /* the SK, read from secret_file (secret; wiped when freed), or NULL */
    size_t secret_len;
    struct position *route_at; /* one per pub.routes entry */
    size_t name_line;          /* of its name, for "given twice" */
    size_t hash_line;
};

struct clientkeys {
    unsigned refs;
    char *file;
    struct client_entry *entries; /* owned, `count` of them */
    size_t count;
};

/* ------------------------------------------------------------- checks */

/* 1 to 64 characters of A-Za-z0-9_.- (client names, project ids, rule names). */
static int valid_word(const char *s)
{
    size_t len = strlen(s);
    if (len == 0 || len > 64)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '-' ||
              *s == '_' || *s == '.'))
            return 0;
    return 1;
}

/* --------------------------------------------------------------- load */

static void entry_free(struct client_entry *e)
{
    free(e->pub.name);
    for (size_t i = 0; i < e->pub.nprojects; i++)
        free(e->pub.projects[i]);
    free(e->pub.projects);
    for (size_t i = 0; i < e->pub.nroutes; i++)
        free(e->pub.routes[i]);
    free(e->pub.routes);
    free(e->route_at);
    free(e->access_key);
    if (e->secret) {
        OPENSSL_cleanse(e->secret, e->secret_len);
        free(e->secret);
    }
    OPENSSL_cleanse(e->key_sha256, sizeof(e->key_sha256));
}

static void set_free(struct clientkeys *ks)
{
    for (size_t i = 0; i < ks->count; i++)
        entry_free(&ks->entries[i]);
    free(ks->entries);
    free(ks->file);
    free(ks);
}

/* What a grant list holds, for its messages. */
struct list_kind {
    const char *key;  /* "projects", "routes" */
    const char *item; /* "project id", "route" */
    const char *empty_hint;
};

static const struct list_kind projects_kind = {"projects", "project id",
                                               "list the projects this client may ask about, or [\"*\"] for every one"};
static const struct list_kind routes_kind = {"routes", "route",
                                             "list the rule names this client may use, or leave 'routes' out for "
                                             "every route"};

/*
 * Read the grant list `n` (a sequence node; the caller handles its absence)
 * into *all or items/count, with each entry's position in *at when `at` is
 * not NULL. Returns 0 or -1 (every mistake reported).
 */
static int load_grant_list(struct yconf *y, yaml_node_t *n, const struct list_kind *kind, int *all, char ***items,
                           size_t *count, struct position **at, struct conf_diag *d)
{
    if (n->type != YAML_SEQUENCE_NODE) {
        yconf_error(y, n, d, "'%s' must be a list, such as [\"a\", \"b\"] or [\"*\"]", kind->key);
        return -1;
    }
    size_t len = yconf_seq_len(n);
    if (len == 0) {
        yconf_error(y, n, d, "'%s' is empty: %s", kind->key, kind->empty_hint);
        return -1;
    }
    *items = calloc(len, sizeof(**items));
    if (at)
        *at = calloc(len, sizeof(**at));
    if (!*items || (at && !*at)) {
        yconf_error(y, n, d, "out of memory");
        return -1;
    }
    int rc = 0;
    for (size_t i = 0; i < len; i++) {
        yaml_node_t *item = yconf_seq_item(y, n, i);
        const char *text = yconf_scalar(item);
        if (text && strcmp(text, "*") == 0) {
            if (len > 1) {
                yconf_error(y, item, d, "'*' in '%s' grants every %s: give it alone", kind->key, kind->item);
                rc = -1;
            }
            *all = 1;
            continue;
        }
        if (!text || !valid_word(text)) {
            /* Not quoted back: a pasted secret must not reach the log. */
            yconf_error(y, item, d, "a %s in '%s' must be 1 to 64 characters of A-Z a-z 0-9 _ . - (or \"*\")",
                        kind->item, kind->key);
            rc = -1;
            continue;
        }
        int twice = 0;
        for (size_t k = 0; k < *count; k++)
            if (strcmp((*items)[k], text) == 0)
                twice = 1;
        if (twice) {
            yconf_error(y, item, d, "%s '%s' given twice in '%s'", kind->item, text, kind->key);
            rc = -1;
            continue;
        }
        char *copy = strdup(text);
        if (!copy) {
            yconf_error(y, item, d, "out of memory");
            return -1;
        }
        if (at) {
            (*at)[*count].line = item->start_mark.line + 1;
            (*at)[*count].col = item->start_mark.column + 1;
        }
        (*items)[(*count)++] = copy;
    }
    return rc;
}

/* The key node of `key` in the mapping `map`, or NULL. */
static yaml_node_t *key_node(struct yconf *y, yaml_node_t *map, const char *key)
{
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(&y->doc, p->key);
        const char *name = yconf_scalar(k);
        if (name && strcmp(name, key) == 0)
            return k;
    }
    return NULL;
}

/* Read key_sha256 (node `n`) into e->key_sha256. Returns 0 or -1. The value
 * is never quoted in a message. */
static int load_hash(struct yconf *y, yaml_node_t *n, struct client_entry *e, struct conf_diag *d)
{
    const char *text = yconf_scalar(n);
    if (!text) {
        yconf_error(y, n, d, "'key_sha256' must be a single value: 64 hex digits");
        return -1;
    }
    size_t len = strlen(text);
    int bad_digit = 0;
    for (size_t i = 0; i < len; i++)
        if (OPENSSL_hexchar2int((unsigned char)text[i]) < 0)
            bad_digit = 1;
    if (len != 2 * DIGEST_SHA256_LEN || bad_digit) {
        yconf_error(y, n, d,
                    "'key_sha256' must be 64 hex digits, the SHA-256 of the key (jobgate --hash-key prints it); "
                    "this one %s",
                    bad_digit ? "holds a character that is not a hex digit" : "is not 64 characters long");
        return -1;
    }
    for (size_t i = 0; i < DIGEST_SHA256_LEN; i++)
        e->key_sha256[i] = (unsigned char)(OPENSSL_hexchar2int((unsigned char)text[2 * i]) << 4 |
                                           OPENSSL_hexchar2int((unsigned char)text[2 * i + 1]));
    e->hash_line = n->start_mark.line + 1;
    return 0;
}

/* Read the secret key from `path` (relative to the keys file) into
 * e->secret: a file of mode 0600 or stricter (no group or other bits), its
 * content up to the first end of line. Returns 0 or -1 (reported at `n`,
 * never quoting the file's content). */
static int load_secret(struct yconf *y, yaml_node_t *n, const char *file, struct client_entry *e, struct conf_diag *d)
{
    char path[4096];
    yconf_resolve_path(y->path, file, path, sizeof(path));
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        yconf_error(y, n, d, "cannot open the secret file '%s': %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    char buf[1025];
    ssize_t got = -1;
    int rc = -1;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        yconf_error(y, n, d, "the secret file '%s' is not a regular file", path);
    } else if (st.st_mode & 077) {
        yconf_error(y, n, d, "the secret file '%s' has mode %04o: it must be readable by its owner only (chmod 600)",
                    path, (unsigned)(st.st_mode & 07777));
    } else if ((got = read(fd, buf, sizeof(buf) - 1)) < 0) {
        yconf_error(y, n, d, "cannot read the secret file '%s': %s", path, strerror(errno));
    } else {
        size_t len = strcspn((buf[got] = '\0', buf), "\r\n");
        if (len == 0 || (size_t)got == sizeof(buf) - 1) {
            yconf_error(y, n, d, "the secret file '%s' must hold one secret key of 1 to 1024 bytes", path);
        } else if (!(e->secret = malloc(len + 1))) {
            yconf_error(y, n, d, "out of memory");
        } else {
            memcpy(e->secret, buf, len);
            e->secret[len] = '\0';
            e->secret_len = len;
            rc = 0;
        }
    }
    OPENSSL_cleanse(buf, sizeof(buf));
    close(fd);
    return rc;
}

/* access_key and secret_file: both or neither. Returns 0 or -1 (reported). */
static int load_access_key(struct yconf *y, yaml_node_t *n, yaml_node_t *access, yaml_node_t *secret,
                           struct client_entry *e, const char *who, struct conf_diag *d)
{
    int rc = 0;
    const char *ak = access ? yconf_scalar(access) : NULL;
    if (!access) {
        yconf_error(y, n, d, "%s has a 'secret_file' but no 'access_key'", who);
        rc = -1;
    } else if (!ak || !*ak || strlen(ak) > AKSK_ACCESS_MAX || strpbrk(ak, " \t,=")) {
        yconf_error(y, access, d, "'access_key' must be 1 to %d printable characters, no blank, ',' or '='",
                    AKSK_ACCESS_MAX);
        rc = -1;
    } else if (!(e->access_key = strdup(ak))) {
        yconf_error(y, access, d, "out of memory");
        rc = -1;
    }
    const char *file = secret ? yconf_scalar(secret) : NULL;
    if (!secret) {
        yconf_error(y, n, d, "%s has an 'access_key' but no 'secret_file' (the file holding its secret key)", who);
        rc = -1;
    } else if (!file || !*file) {
        yconf_error(y, secret, d, "'secret_file' must be a path");
        rc = -1;
    } else if (load_secret(y, secret, file, e, d) < 0) {
        rc = -1;
    }
    return rc;
}

/* Read one client (node `n`) into `e`. Returns 0 or -1 (every mistake reported). */
static int load_client(struct yconf *y, yaml_node_t *n, struct client_entry *e, struct conf_diag *d)
{
    /* 'key' is allowed past yconf_check_map only to be refused with its own message. */
    static const char *const keys[] = {"name",   "key_sha256", "access_key", "secret_file", "projects",
                                       "routes", "admin",      "key",        NULL};
    if (!n || n->type != YAML_MAPPING_NODE) {
        yconf_error(y, n, d, "a client must be a mapping with name, key_sha256, projects and routes");
        return -1;
    }
    e->pub.line = n->start_mark.line + 1;
    int rc = yconf_check_map(y, n, "a client", keys, d);

    yaml_node_t *plain = key_node(y, n, "key");
    if (plain) {
        yconf_error(y, plain, d,
                    "a client's key does not belong in this file: store key_sha256, never the key "
                    "(jobgate --hash-key prints it)");
        rc = -1;
    }

    yaml_node_t *name = yconf_get(y, n, "name");
    if (!name) {
        yconf_error(y, n, d, "a client needs a 'name'");
        rc = -1;
    } else if (!yconf_scalar(name) || !valid_word(yconf_scalar(name))) {
        yconf_error(y, name, d, "'name' must be 1 to 64 characters of A-Z a-z 0-9 _ . -");
        rc = -1;
    } else if (!(e->pub.name = strdup(yconf_scalar(name)))) {
        yconf_error(y, name, d, "out of memory");
        rc = -1;
    } else {
        e->name_line = name->start_mark.line + 1;
    }
    /* Messages about a missing field name the client when its name is known. */
    char who[80] = "a client";
    if (e->pub.name)
        snprintf(who, sizeof(who), "client '%s'", e->pub.name);

    yaml_node_t *hash = yconf_get(y, n, "key_sha256");
    yaml_node_t *access = yconf_get(y, n, "access_key");
    yaml_node_t *secret = yconf_get(y, n, "secret_file");
    if (!hash && !access) {
        yconf_error(y, n, d,
                    "%s needs 'key_sha256', the SHA-256 of its key (jobgate --hash-key prints it), or "
                    "'access_key' and 'secret_file' (an AK/SK it signs with)",
                    who);
        rc = -1;
    } else if (hash && load_hash(y, hash, e, d) < 0) {
        rc = -1;
    } else if (hash) {
        e->has_key = 1;
    }
    if (access || secret) {
        if (load_access_key(y, n, access, secret, e, who, d) < 0)
            rc = -1;
    }

    if (yconf_get_bool(y, n, "admin", &e->pub.admin, d) < 0)
        rc = -1;
    yaml_node_t *projects = yconf_get(y, n, "projects");
    if (!projects && e->pub.admin) {
        /* an admin-only client (a metrics scraper): no project */
    } else if (!projects) {
        yconf_error(y, n, d, "%s needs 'projects': the project ids it may ask about, or [\"*\"]", who);
        rc = -1;
    } else if (load_grant_list(y, projects, &projects_kind, &e->pub.all_projects, &e->pub.projects, &e->pub.nprojects,
                               NULL, d) < 0) {
        rc = -1;
    }

    yaml_node_t *routes = yconf_get(y, n, "routes");
    if (!routes)
        e->pub.all_routes = 1;
    else if (load_grant_list(y, routes, &routes_kind, &e->pub.all_routes, &e->pub.routes, &e->pub.nroutes, &e->route_at,
                             d) < 0)
        rc = -1;
    return rc;
}

/* Two clients may share neither a name nor a key. Reported at the later one. */
static int check_unique(struct yconf *y, struct clientkeys *ks, yaml_node_t *list, struct conf_diag *d)
{
    int rc = 0;
    for (size_t i = 0; i < ks->count; i++) {
        struct client_entry *e = &ks->entries[i];
        yaml_node_t *item = yconf_seq_item(y, list, i);
        for (size_t k = 0; k < i; k++) {
            struct client_entry *earlier = &ks->entries[k];
            if (e->pub.name && earlier->pub.name && strcmp(e->pub.name, earlier->pub.name) == 0) {
                yconf_error(y, yconf_get(y, item, "name"), d, "client name '%s' given twice (first at line %zu)",
                            e->pub.name, earlier->name_line);
                rc = -1;
                break;
            }
        }
        for (size_t k = 0; k < i && e->access_key; k++) {
            struct client_entry *earlier = &ks->entries[k];
            if (earlier->access_key && strcmp(e->access_key, earlier->access_key) == 0) {
                yconf_error(y, yconf_get(y, item, "access_key"), d,
                            "client '%s' (line %zu) has this access_key already: each client needs its own",
                            earlier->pub.name ? earlier->pub.name : "?", earlier->pub.line);
                rc = -1;
                break;
            }
        }
        for (size_t k = 0; k < i && e->hash_line; k++) {
            struct client_entry *earlier = &ks->entries[k];
            if (earlier->hash_line && memcmp(e->key_sha256, earlier->key_sha256, DIGEST_SHA256_LEN) == 0) {
                yconf_error(y, yconf_get(y, item, "key_sha256"), d,
                            "client '%s' (line %zu) has this key_sha256 already: each client needs its own key",
                            earlier->pub.name ? earlier->pub.name : "?", earlier->hash_line);
                rc = -1;
                break;
            }
        }
    }
    return rc;
}

/* Build a set from a parsed file. Returns it, or NULL (reported). */
static struct clientkeys *load_yconf(struct yconf *y, struct conf_diag *d)
{
    static const char *const top_keys[] = {"clients", NULL};
    yaml_node_t *root = yconf_root(y);
    if (!root) {
        conf_diag_add(d, y->path, 0, 0, "the keys file is empty: list the clients under 'clients'");
        return NULL;
    }
    int rc = yconf_check_map(y, root, "the keys file", top_keys, d);
    if (root->type != YAML_MAPPING_NODE)
        return NULL;
    yaml_node_t *list = yconf_get(y, root, "clients");
    if (!list) {
        yconf_error(y, root, d, "the keys file needs a 'clients' list");
        return NULL;
    }
    if (list->type != YAML_SEQUENCE_NODE || yconf_seq_len(list) == 0) {
        yconf_error(y, list, d, "'clients' must be a list of at least one client");
        return NULL;
    }

    struct clientkeys *ks = calloc(1, sizeof(*ks));
    size_t n = yconf_seq_len(list);
    if (!ks || !(ks->entries = calloc(n, sizeof(*ks->entries))) || !(ks->file = strdup(y->path))) {
        conf_diag_add(d, y->path, 0, 0, "out of memory");
        if (ks)
            set_free(ks);
        return NULL;
    }
    ks->refs = 1;
    ks->count = n; /* entries are zeroed: set_free copes with half-loaded ones */
    for (size_t i = 0; i < n; i++)
        rc |= load_client(y, yconf_seq_item(y, list, i), &ks->entries[i], d);
    rc |= check_unique(y, ks, list, d);
    if (rc < 0) {
        set_free(ks);
        return NULL;
    }
    return ks;
}

struct clientkeys *clientkeys_load(const char *path, struct conf_diag *d)
{
    struct yconf y;
    struct clientkeys *ks = NULL;
    if (yconf_load(&y, path, d) == 0)
        ks = load_yconf(&y, d);
    yconf_free(&y);
    return ks;
}

struct clientkeys *clientkeys_load_string(const char *name, const char *text, struct conf_diag *d)
{
    struct yconf y;
    struct clientkeys *ks = NULL;
    if (yconf_load_string(&y, name, text, strlen(text), d) == 0)
        ks = load_yconf(&y, d);
    yconf_free(&y);
    return ks;
}

struct clientkeys *clientkeys_ref(struct clientkeys *ks)
{
    ks->refs++;
    return ks;
}

void clientkeys_unref(struct clientkeys *ks)
{
    if (!ks || --ks->refs > 0)
        return;
    set_free(ks);
}

void clientkeys_free(struct clientkeys *ks)
{
    clientkeys_unref(ks);
}

size_t clientkeys_count(const struct clientkeys *ks)
{
    return ks->count;
}

const struct client *clientkeys_client(const struct clientkeys *ks, size_t i)
{
    return i < ks->count ? &ks->entries[i].pub : NULL;
}

int clientkeys_check_rules(const struct clientkeys *ks, const struct ruleset *rs, struct conf_diag *d)
{
    int rc = 0;
    for (size_t i = 0; i < ks->count; i++) {
        const struct client_entry *e = &ks->entries[i];
        for (size_t r = 0; r < e->pub.nroutes; r++) {
            int known = 0;
            for (size_t k = 0; k < rs->count && !known; k++)
                known = strcmp(rs->rules[k]->name, e->pub.routes[r]) == 0;
            if (!known) {
                conf_diag_add(d, ks->file, e->route_at[r].line, e->route_at[r].col,
                              "client '%s': no rule is named '%s'", e->pub.name, e->pub.routes[r]);
                rc = -1;
            }
        }
    }
    return rc;
}

/* ------------------------------------------------------------ requests */

static int granted(int all, char *const *items, size_t n, const char *want)
{
    if (all)
        return 1;
    if (!want)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(items[i], want) == 0)
            return 1;
    return 0;
}

/* May client `c` ask about `project_id` through `rule_name`? */
static enum clientkeys_verdict grants_of(const struct client *c, const char *project_id, const char *rule_name,
                                         const struct client **who)
{
    if (who)
        *who = c;
    if (!granted(c->all_projects, c->projects, c->nprojects, project_id) ||
        !granted(c->all_routes, c->routes, c->nroutes, rule_name))
        return CLIENTKEYS_FORBIDDEN;
    return CLIENTKEYS_ALLOWED;
}

enum clientkeys_verdict clientkeys_check(const struct clientkeys *ks, const char *presented_key, const char *project_id,
                                         const char *rule_name, const struct client **who)
{
    if (who)
        *who = NULL;
    if (!ks || !presented_key || !presented_key[0])
        return CLIENTKEYS_UNAUTHENTICATED;
    size_t len = strnlen(presented_key, CLIENTKEYS_KEY_MAX + 1);
    if (len > CLIENTKEYS_KEY_MAX)
        return CLIENTKEYS_UNAUTHENTICATED;
    unsigned char digest[DIGEST_SHA256_LEN];
    if (digest_sha256(presented_key, len, digest) < 0) {
        OPENSSL_cleanse(digest, sizeof(digest));
        return CLIENTKEYS_UNAUTHENTICATED;
    }
    /* Every entry is compared, and the match is picked with a mask rather
     * than a branch, so the time taken does not depend on which entry (if
     * any) matched. Load refuses equal hashes: at most one entry matches. */
    size_t match = 0;
    size_t found = 0;
    for (size_t i = 0; i < ks->count; i++) {
        size_t eq = (size_t)(CRYPTO_memcmp(digest, ks->entries[i].key_sha256, DIGEST_SHA256_LEN) == 0) &
                    (size_t)(ks->entries[i].has_key != 0);
        size_t mask = (size_t)0 - eq;
        match = (match & ~mask) | (i & mask);
        found |= eq;
    }
    OPENSSL_cleanse(digest, sizeof(digest));
    if (!found)
        return CLIENTKEYS_UNAUTHENTICATED;

    return grants_of(&ks->entries[match].pub, project_id, rule_name, who);
}

enum clientkeys_verdict clientkeys_check_signed(const struct clientkeys *ks, const char *authorization,
                                                const struct aksk_received *r, const char *project_id,
                                                const char *rule_name, const struct client **who,
                                                enum clientkeys_signature *why)
{
    struct aksk_presented p;
    if (who)
        *who = NULL;
    *why = CLIENTKEYS_SIG_MALFORMED;
    if (!ks || aksk_presented_parse(authorization, &p) < 0)
        return CLIENTKEYS_UNAUTHENTICATED;
    const struct client_entry *e = NULL;
    for (size_t i = 0; i < ks->count && !e; i++) /* an AK id is not secret: a plain lookup */
        if (ks->entries[i].access_key && strcmp(ks->entries[i].access_key, p.access) == 0)
            e = &ks->entries[i];
    enum aksk_verdict v = e ? aksk_verify(&p, r, e->secret, e->secret_len) : AKSK_MISMATCH;
    aksk_presented_free(&p);
    if (!e) {
        *why = CLIENTKEYS_SIG_UNKNOWN_KEY;
        return CLIENTKEYS_UNAUTHENTICATED;
    }
    switch (v) {
    case AKSK_VERIFIED: *why = CLIENTKEYS_SIG_OK; break;
    case AKSK_MALFORMED: *why = CLIENTKEYS_SIG_MALFORMED; return CLIENTKEYS_UNAUTHENTICATED;
    case AKSK_EXPIRED: *why = CLIENTKEYS_SIG_EXPIRED; return CLIENTKEYS_UNAUTHENTICATED;
    case AKSK_MISMATCH: *why = CLIENTKEYS_SIG_MISMATCH; return CLIENTKEYS_UNAUTHENTICATED;
    }
    return grants_of(&e->pub, project_id, rule_name, who);
}

enum clientkeys_verdict clientkeys_check_admin(const struct clientkeys *ks, const char *presented_key,
                                               const struct client **who)
{
    const struct client *c = NULL;
    enum clientkeys_verdict v = clientkeys_check(ks, presented_key, NULL, NULL, &c);
    if (who)
        *who = c;
    if (v == CLIENTKEYS_UNAUTHENTICATED)
        return v;
    return c && c->admin ? CLIENTKEYS_ALLOWED : CLIENTKEYS_FORBIDDEN;
}
