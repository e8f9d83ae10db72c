/*
 * redis_tls: TLS to Redis and to the sentinels, for a hiredis (0.14, Debian
 * 12) that has none, as an in-process bridge. For each TCP address asked
 * for, it listens on a Unix socket in a private directory (mkdtemp, mode
 * 0700, removed by redis_tls_free); every connection hiredis makes there is
 * relayed, both ways, over a TLS connection to that address
 * (bufferevent_openssl): the server's certificate verified against the CA
 * file, its name checked (the configured server name, else the host
 * connected to: a DNS name, or an IP address in the certificate's IP SANs),
 * SNI sent for a DNS name, and a client certificate when one is configured.
 * hiredis talks to the Unix socket with its unchanged async API, so every
 * Redis tier above stays as it is. When hiredis >= 1.0 (hiredis_ssl) is the
 * one shipped, redis_tls_connect becomes redisInitiateSSLWithContext and
 * this module shrinks to the SSL_CTX.
 *
 * A failed handshake (a certificate that does not verify, a refused TCP
 * connection, a timeout) closes the Unix side: hiredis sees the connection
 * lost, and the caller finds the reason with redis_tls_error (for its
 * health report: the verifier's words, such as "certificate has expired";
 * never a secret, none passes here). Relaying is bounded: one side stops
 * being read while the other has BRIDGE_MAX_OUTPUT bytes unsent; when one
 * side closes, what it sent is delivered, then the other is closed.
 *
 * Threads and ownership: everything runs on the event loop of `base`, which
 * must outlive the object. The caller owns the struct redis_tls; the
 * bridges and their connections are its own. Call redis_tls_free after the
 * hiredis contexts connected through it are freed (their pending callbacks
 * have run); it closes whatever is still relayed.
 */
#ifndef JOBGATE_REDIS_TLS_H
#define JOBGATE_REDIS_TLS_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/async.h>

struct event_base;
struct redis_tls;

/* The files and names (borrowed for the call of redis_tls_new / _check). */
struct redis_tls_conf {
    const char *ca_file;     /* PEM: the CAs a server certificate must chain to (required) */
    const char *cert_file;   /* PEM: a client certificate, or NULL (then key_file is NULL too) */
    const char *key_file;    /* PEM: its private key (unencrypted) */
    const char *server_name; /* the name to send (SNI) and verify; NULL: the host connected to */
    int64_t handshake_timeout_ms;
};

/* Which file of a redis_tls_conf a problem is in. */
enum redis_tls_file { REDIS_TLS_CA_FILE, REDIS_TLS_CERT_FILE, REDIS_TLS_KEY_FILE };

/* Can `conf`'s files be loaded (readable, PEM, the key that of the
 * certificate)? Returns 0, or -1 with the file at fault in `*bad` and why
 * in `err` (names the file, never its content). No I/O beyond reading. */
int redis_tls_check(const struct redis_tls_conf *conf, enum redis_tls_file *bad, char *err, size_t errlen);

/* A bridge set for `base` (`what`: "redis" or "sentinel", for logs).
 * Loads the files now; no socket is made until redis_tls_connect. Returns
 * NULL with a message in `err` (a file that cannot be loaded, no memory). */
struct redis_tls *redis_tls_new(struct event_base *base, const struct redis_tls_conf *conf, const char *what, char *err,
                                size_t errlen);

/* redisAsyncConnect(host, port), through TLS when `t` is not NULL: then to
 * the Unix socket of the bridge for HOST:PORT (made on first use). NULL when
 * out of memory or when the bridge cannot listen (logged). */
redisAsyncContext *redis_tls_connect(struct redis_tls *t, const char *host, int port);

/* Why the last TLS connection to HOST:PORT failed ("certificate has
 * expired", "unable to get local issuer certificate", "connection refused",
 * ...), or NULL when it did not (or `t` is NULL, or none was made). The
 * string lives until the next handshake to that address. */
const char *redis_tls_error(const struct redis_tls *t, const char *host, int port);

/* Close every bridge and relayed connection, remove the sockets and the
 * directory; NULL is a no-op. */
void redis_tls_free(struct redis_tls *t);

#endif
