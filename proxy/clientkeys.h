/*
 * clientkeys: who may ask jobgate what. Every client of the gateway presents
 * an API key; the keys file says, for each client, the SHA-256 of its key and
 * the projects and routes (rule names) it may ask about. For one request this
 * module answers 401 (no key, or a key nobody holds), 403 (a known client
 * asking outside its grants) or allowed, and names the client for the audit
 * log. How a request presents its key, and the sentences of a 401, are
 * clientkeys_cred.h's (included below).
 *
 * The keys file (conf/keys.yaml is a commented example):
 *
 *     clients:
 *       - name: terraform-ci        # [A-Za-z0-9_.-]{1,64}, unique
 *         key_sha256: 9f86d0...08   # 64 hex digits: SHA-256 of the key, never the key
 *         access_key: JGAK...       # and/or an AK/SK the client signs with (SDK-HMAC-SHA256),
 *         secret_file: sk/ci        # the SK alone in a file of mode 0600 (looser: refused)
 *         projects: ["ff8080825ecc523f015ecd0a98f82f77"]   # or ["*"]: every project
 *         routes: ["elb-v1-job", "ecs-job"]   # rule names, or ["*"] (the default)
 *         admin: true               # optional: may read /metrics and /healthz on the
 *                                   # admin listener; projects may then be left out
 *
 * Every mistake is reported as FILE:LINE:COL: message and the whole file is
 * refused: an unknown key, a missing field, a key_sha256 that is not 64 hex
 * digits, a name or a key_sha256 given to two clients, an empty list, '*'
 * mixed with names, an entry given twice, and a plain `key:` field (the file
 * stores hashes only; `jobgate --hash-key` prints the hash of a key).
 *
 * Secrets: nothing here logs or reports a key or a hash, and diagnostics never
 * quote a key_sha256 value. A presented key is hashed where it lies (in the
 * request's headers); the digest is wiped after use.
 *
 * A key set is immutable once loaded and reference-counted (as a ruleset): a
 * request holds the set it started with, so a reload (SIGHUP) swaps a pointer
 * and never changes the answer under a request in flight. The count is not
 * atomic: use a set from the event loop's thread only.
 */
#ifndef JOBGATE_CLIENTKEYS_H
#define JOBGATE_CLIENTKEYS_H

#include <stddef.h>

#include "clientkeys_cred.h"
#include "yamlconf.h"

struct ruleset;
struct clientkeys;

/* One client of the gateway, as the keys file grants it. Owned by its key set
 * and valid while the caller holds a reference to the set. It carries no key
 * and no hash: its name is what the audit log records. */
struct client {
    char *name;
    size_t line;      /* where its entry starts in the keys file */
    int all_projects; /* projects: ["*"] */
    char **projects;  /* the granted project ids (none when all_projects) */
    size_t nprojects;
    int all_routes; /* routes: ["*"], or no routes given */
    char **routes;  /* the granted rule names (none when all_routes) */
    size_t nroutes;
    int admin; /* admin: true: may use the admin listener (admin.client_auth) */
};

/* Load the keys file at `path`. Returns a set with one reference, or NULL with
 * every problem found added to `d` (an unreadable file, a syntax error and an
 * empty file included). */
struct clientkeys *clientkeys_load(const char *path, struct conf_diag *d);

/* Load from YAML text; `name` is what diagnostics call it (tests and tools). */
struct clientkeys *clientkeys_load_string(const char *name, const char *text, struct conf_diag *d);

struct clientkeys *clientkeys_ref(struct clientkeys *ks);
/* Drop one reference; the last one frees the set. NULL is ignored. */
void clientkeys_unref(struct clientkeys *ks);
/* The loader's own reference, for a set that was never shared (tools, -t):
 * the same as clientkeys_unref. */
void clientkeys_free(struct clientkeys *ks);

/* How many clients the set holds, and the i-th of them (NULL past the end). */
size_t clientkeys_count(const struct clientkeys *ks);
const struct client *clientkeys_client(const struct clientkeys *ks, size_t i);

/* Check that every route a client is granted names a rule of `rs`: a mistyped
 * name would otherwise forbid quietly. Returns 0, or -1 with one diagnostic
 * per unknown name (FILE:LINE:COL of the entry). Call it after loading both. */
int clientkeys_check_rules(const struct clientkeys *ks, const struct ruleset *rs, struct conf_diag *d);

enum clientkeys_verdict {
    CLIENTKEYS_ALLOWED,
    CLIENTKEYS_UNAUTHENTICATED, /* no key, or a key no client holds: 401 */
    CLIENTKEYS_FORBIDDEN,       /* a known client, the project or the route not granted: 403 */
};

/*
 * May the holder of `presented_key` ask about `project_id` through the rule
 * `rule_name`? The key's SHA-256 is compared with every client's in constant
 * time, with no early exit, so the answer's timing does not say how close a
 * guess came or which entry matched. A NULL project_id (a route with no
 * project) is granted only by projects ["*"]; a NULL rule_name only by
 * routes ["*"]. *who (when `who` is not NULL) is the client for ALLOWED and
 * FORBIDDEN, NULL for UNAUTHENTICATED.
 */
enum clientkeys_verdict clientkeys_check(const struct clientkeys *ks, const char *presented_key, const char *project_id,
                                         const char *rule_name, const struct client **who);

/* May the holder of `presented_key` use the admin listener? UNAUTHENTICATED
 * for no key or a key no client holds, FORBIDDEN for a client without
 * `admin: true`, ALLOWED otherwise. Compared in constant time as
 * clientkeys_check; *who as there. */
enum clientkeys_verdict clientkeys_check_admin(const struct clientkeys *ks, const char *presented_key,
                                               const struct client **who);

/*
 * As clientkeys_check, for a request signed as the official SDKs sign
 * (`authorization`: the Authorization value, "SDK-HMAC-SHA256 Access=..."):
 * the client holding that access key is found, its signature over `r` is
 * verified with its secret key (aksk_verify: the cloud's algorithm, X-Sdk-Date
 * within 15 minutes, a constant-time comparison), then its grants apply.
 * *why says which check refused an UNAUTHENTICATED (CLIENTKEYS_SIG_OK
 * otherwise).
 */
struct aksk_received;
enum clientkeys_verdict clientkeys_check_signed(const struct clientkeys *ks, const char *authorization,
                                                const struct aksk_received *r, const char *project_id,
                                                const char *rule_name, const struct client **who,
                                                enum clientkeys_signature *why);

#endif
