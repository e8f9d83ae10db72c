#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <hiredis/adapters/libevent.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "log.h"
#include "redis_tls.h"

/* Bytes one side may have unsent before the other stops being read. */
#define BRIDGE_MAX_OUTPUT (256 * 1024)

struct pair;

/* One TCP address, its Unix socket, and how its last handshake went. */
struct bridge {
    struct redis_tls *t;
    struct bridge *next;
    char host[256];
    int port;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    struct evconnlistener *listener;
    int failed;          /* the last handshake failed, for last_error's reason */
    char last_error[80]; /* "" while none failed */
};

/* One connection relayed: hiredis's (local, Unix) and Redis's (remote, TLS).
 * Either is NULL once closed; the pair goes when both are. */
struct pair {
    struct bridge *b;
    struct pair *prev, *next; /* in t->pairs */
    struct bufferevent *local, *remote;
    int remote_up; /* the handshake succeeded */
};

struct redis_tls {
    struct event_base *base;
    SSL_CTX *ctx;
    char *server_name; /* NULL: the host connected to */
    int64_t handshake_timeout_ms;
    char what[16];
    char dir[256]; /* "" until the first bridge */
    unsigned nbridges;
    struct bridge *bridges;
    struct pair *pairs;
};

/* ------------------------------------------------------------ the SSL_CTX */

/* The first OpenSSL error queued, as words, and the queue emptied. */
static const char *ssl_reason(char *buf, size_t len)
{
    unsigned long e = ERR_get_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    snprintf(buf, len, "%s", r ? r : "unknown error");
    ERR_clear_error();
    return buf;
}

/* An SSL_CTX for `conf`, or NULL with the file at fault in *bad and why. */
static SSL_CTX *make_ctx(const struct redis_tls_conf *conf, enum redis_tls_file *bad, char *err, size_t errlen)
{
    char why[120];
    enum redis_tls_file which = REDIS_TLS_CA_FILE;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        snprintf(err, errlen, "cannot make a TLS context: %s", ssl_reason(why, sizeof(why)));
        goto err;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (!conf->ca_file || SSL_CTX_load_verify_locations(ctx, conf->ca_file, NULL) != 1) {
        snprintf(err, errlen, "cannot load the CA file %s: %s", conf->ca_file ? conf->ca_file : "(none)",
                 conf->ca_file ? ssl_reason(why, sizeof(why)) : "none given");
        goto err;
    }
    if (conf->cert_file || conf->key_file) {
        which = REDIS_TLS_CERT_FILE;
        if (!conf->cert_file || SSL_CTX_use_certificate_chain_file(ctx, conf->cert_file) != 1) {
            snprintf(err, errlen, "cannot load the client certificate %s: %s",
                     conf->cert_file ? conf->cert_file : "(none)",
                     conf->cert_file ? ssl_reason(why, sizeof(why)) : "a key needs its certificate");
            goto err;
        }
        which = REDIS_TLS_KEY_FILE;
        if (!conf->key_file || SSL_CTX_use_PrivateKey_file(ctx, conf->key_file, SSL_FILETYPE_PEM) != 1) {
            if (conf->key_file && ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH)
                snprintf(err, errlen, "the client key %s is not the certificate's", conf->key_file);
            else
                snprintf(err, errlen, "cannot load the client key %s: %s", conf->key_file ? conf->key_file : "(none)",
                         conf->key_file ? ssl_reason(why, sizeof(why)) : "a certificate needs its key");
            goto err;
        }
        if (SSL_CTX_check_private_key(ctx) != 1) {
            snprintf(err, errlen, "the client key %s is not the certificate's (%s)", conf->key_file,
                     ssl_reason(why, sizeof(why)));
            goto err;
        }
    }
    return ctx;
err:
    ERR_clear_error();
    if (ctx)
        SSL_CTX_free(ctx);
    *bad = which;
    return NULL;
}

int redis_tls_check(const struct redis_tls_conf *conf, enum redis_tls_file *bad, char *err, size_t errlen)
{
    SSL_CTX *ctx = make_ctx(conf, bad, err, errlen);
    if (!ctx)
        return -1;
    SSL_CTX_free(ctx);
    return 0;
}

/* ---------------------------------------------------------------- relay */

static void relay_read(struct bufferevent *from, void *arg);
static void relay_event(struct bufferevent *bev, short what, void *arg);

static struct bufferevent **side_of(struct pair *p, struct bufferevent *bev)
{
    return bev == p->local ? &p->local : &p->remote;
}

static struct bufferevent *other_of(struct pair *p, struct bufferevent *bev)
{
    return bev == p->local ? p->remote : p->local;
}

static void pair_free_if_done(struct pair *p)
{
    if (p->local || p->remote)
        return;
    if (p->prev)
        p->prev->next = p->next;
    else
        p->b->t->pairs = p->next;
    if (p->next)
        p->next->prev = p->prev;
    free(p);
}

static void close_side(struct pair *p, struct bufferevent *bev)
{
    *side_of(p, bev) = NULL;
    bufferevent_free(bev);
}

/* `bev` has sent all it had after its peer closed: close it too. */
static void close_when_flushed(struct bufferevent *bev, void *arg)
{
    struct pair *p = arg;
    if (evbuffer_get_length(bufferevent_get_output(bev)) > 0)
        return;
    close_side(p, bev);
    pair_free_if_done(p);
}

/* `bev`'s peer is gone: send `bev` what is left, then close it. */
static void close_after_flush(struct pair *p, struct bufferevent *bev)
{
    if (!bev)
        return;
    bufferevent_disable(bev, EV_READ);
    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0 || (bev == p->remote && !p->remote_up)) {
        close_side(p, bev);
        return;
    }
    bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
    bufferevent_setcb(bev, NULL, close_when_flushed, relay_event, p);
}

/* The peer of `to` has room again: read `from` again. */
static void relay_drained(struct bufferevent *to, void *arg)
{
    struct pair *p = arg;
    struct bufferevent *from = other_of(p, to);
    bufferevent_setcb(to, relay_read, NULL, relay_event, p);
    bufferevent_setwatermark(to, EV_WRITE, 0, 0);
    if (from)
        bufferevent_enable(from, EV_READ);
}

static void relay_read(struct bufferevent *from, void *arg)
{
    struct pair *p = arg;
    struct bufferevent *to = other_of(p, from);
    struct evbuffer *in = bufferevent_get_input(from);
    if (!to) {
        evbuffer_drain(in, evbuffer_get_length(in));
        return;
    }
    evbuffer_add_buffer(bufferevent_get_output(to), in);
    if (evbuffer_get_length(bufferevent_get_output(to)) >= BRIDGE_MAX_OUTPUT) {
        bufferevent_setwatermark(to, EV_WRITE, BRIDGE_MAX_OUTPUT / 2, BRIDGE_MAX_OUTPUT);
        bufferevent_setcb(to, relay_read, relay_drained, relay_event, p);
        bufferevent_disable(from, EV_READ);
    }
}

/* Why the remote side's handshake failed, in the verifier's words (or the
 * socket's, when TLS never started: then 0 is returned, else 1). */
static int handshake_reason(struct bufferevent *bev, short what, char *buf, size_t len)
{
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    long verify = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
    unsigned long e = bufferevent_get_openssl_error(bev);
    int sock_err = EVUTIL_SOCKET_ERROR();
    int dns_err = bufferevent_socket_get_dns_error(bev);
    while (bufferevent_get_openssl_error(bev))
        ;
    if (what & BEV_EVENT_TIMEOUT) {
        snprintf(buf, len, "TLS handshake timed out");
    } else if (dns_err) {
        snprintf(buf, len, "cannot resolve the name: %s", evutil_gai_strerror(dns_err));
        return 0;
    } else if (verify != X509_V_OK) {
        snprintf(buf, len, "%s", X509_verify_cert_error_string(verify));
    } else if (e && ERR_reason_error_string(e)) {
        snprintf(buf, len, "%s", ERR_reason_error_string(e));
    } else if (sock_err) {
        snprintf(buf, len, "%s", evutil_socket_error_to_string(sock_err));
        return 0;
    } else {
        snprintf(buf, len, "connection closed during the TLS handshake");
    }
    return 1;
}

static void relay_event(struct bufferevent *bev, short what, void *arg)
{
    struct pair *p = arg;
    struct bridge *b = p->b;
    if (bev == p->remote && (what & BEV_EVENT_CONNECTED)) {
        p->remote_up = 1;
        bufferevent_set_timeouts(bev, NULL, NULL);
        if (b->failed)
            log_info("%s %s:%d: TLS handshake succeeded", b->t->what, b->host, b->port);
        b->failed = 0;
        b->last_error[0] = '\0';
        return;
    }
    if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)))
        return;
    if (bev == p->remote && !p->remote_up) {
        char why[sizeof(b->last_error)];
        int tls = handshake_reason(bev, what, why, sizeof(why));
        if (!b->failed || strcmp(why, b->last_error) != 0)
            log_warn("%s %s:%d: %s: %s", b->t->what, b->host, b->port, tls ? "TLS handshake failed" : "cannot connect",
                     why);
        b->failed = 1;
        snprintf(b->last_error, sizeof(b->last_error), "%s", why);
    }
    struct bufferevent *other = other_of(p, bev);
    /* What `bev` still holds goes to its peer before that one closes. */
    if (other && (p->remote_up || bev == p->remote))
        evbuffer_add_buffer(bufferevent_get_output(other), bufferevent_get_input(bev));
    close_side(p, bev);
    close_after_flush(p, other);
    pair_free_if_done(p);
}

/* hiredis connected to the bridge's socket: open the TLS side. */
static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
    struct bridge *b = arg;
    struct redis_tls *t = b->t;
    const char *name = t->server_name ? t->server_name : b->host;
    unsigned char ip[sizeof(struct in6_addr)];
    int is_ip = inet_pton(AF_INET, name, ip) == 1 || inet_pton(AF_INET6, name, ip) == 1;
    struct pair *p = calloc(1, sizeof(*p));
    SSL *ssl = SSL_new(t->ctx);
    if (!p || !ssl)
        goto err;
    p->b = b;
    /* RFC 6066: SNI carries a DNS name, never an address. */
    if (is_ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name) != 1
              : SSL_set_tlsext_host_name(ssl, name) != 1 || SSL_set1_host(ssl, name) != 1)
        goto err;
    p->local = bufferevent_socket_new(t->base, fd, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    if (!p->local)
        goto err;
    fd = -1;
    p->remote = bufferevent_openssl_socket_new(t->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                               BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    if (!p->remote)
        goto err;
    ssl = NULL; /* the bufferevent's now */
    bufferevent_openssl_set_allow_dirty_shutdown(p->remote, 1);
    p->next = t->pairs;
    if (t->pairs)
        t->pairs->prev = p;
    t->pairs = p;
    bufferevent_setcb(p->local, relay_read, NULL, relay_event, p);
    bufferevent_setcb(p->remote, relay_read, NULL, relay_event, p);
    struct timeval tv = {(time_t)(t->handshake_timeout_ms / 1000),
                         (suseconds_t)(t->handshake_timeout_ms % 1000) * 1000};
    bufferevent_set_timeouts(p->remote, &tv, &tv);
    bufferevent_enable(p->local, EV_READ | EV_WRITE);
    bufferevent_enable(p->remote, EV_READ | EV_WRITE);
    /* A NULL dns base resolves a name at once, as redisAsyncConnect does. */
    if (bufferevent_socket_connect_hostname(p->remote, NULL, AF_UNSPEC, b->host, b->port) < 0) {
        /* The event callback has not run: close both here. */
        snprintf(b->last_error, sizeof(b->last_error), "cannot connect");
        b->failed = 1;
        close_side(p, p->remote);
        close_side(p, p->local);
        pair_free_if_done(p);
    }
    return;
err:
    log_error("%s %s:%d: cannot relay a connection: out of memory", t->what, b->host, b->port);
    if (p && p->local)
        bufferevent_free(p->local);
    else if (fd >= 0)
        evutil_closesocket(fd);
    if (ssl)
        SSL_free(ssl);
    free(p);
}

/* ---------------------------------------------------------------- bridges */

static struct bridge *bridge_find(const struct redis_tls *t, const char *host, int port)
{
    for (struct bridge *b = t->bridges; b; b = b->next)
        if (b->port == port && strcmp(b->host, host) == 0)
            return b;
    return NULL;
}

/* The bridge for HOST:PORT, listening; NULL (logged) if it cannot be. */
static struct bridge *bridge_get(struct redis_tls *t, const char *host, int port)
{
    struct bridge *b = bridge_find(t, host, port);
    if (b)
        return b;
    if (!t->dir[0]) {
        const char *tmp = getenv("TMPDIR");
        snprintf(t->dir, sizeof(t->dir), "%s/jobgate-%s-tls.XXXXXX", tmp && *tmp ? tmp : "/tmp", t->what);
        if (!mkdtemp(t->dir)) { /* mode 0700: only this user may connect */
            log_error("%s: cannot make a directory for the TLS bridge (%s): %s", t->what, t->dir, strerror(errno));
            t->dir[0] = '\0';
            return NULL;
        }
    }
    b = calloc(1, sizeof(*b));
    if (!b) {
        log_error("%s %s:%d: out of memory", t->what, host, port);
        return NULL;
    }
    b->t = t;
    snprintf(b->host, sizeof(b->host), "%s", host);
    b->port = port;
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    int n = snprintf(b->path, sizeof(b->path), "%s/%u.sock", t->dir, t->nbridges);
    if (n < 0 || (size_t)n >= sizeof(b->path)) {
        log_error("%s: the TLS bridge's directory %s is too long for a Unix socket (set TMPDIR)", t->what, t->dir);
        free(b);
        return NULL;
    }
    memcpy(sun.sun_path, b->path, (size_t)n + 1);
    b->listener = evconnlistener_new_bind(t->base, on_accept, b, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1,
                                          (struct sockaddr *)&sun, (int)sizeof(sun));
    if (!b->listener) {
        log_error("%s %s:%d: cannot listen on %s for the TLS bridge: %s", t->what, host, port, b->path,
                  strerror(errno));
        free(b);
        return NULL;
    }
    t->nbridges++;
    b->next = t->bridges;
    t->bridges = b;
    return b;
}

redisAsyncContext *redis_tls_connect(struct redis_tls *t, const char *host, int port)
{
    if (!t)
        return redisAsyncConnect(host, port);
    struct bridge *b = bridge_get(t, host, port);
    return b ? redisAsyncConnectUnix(b->path) : NULL;
}

const char *redis_tls_error(const struct redis_tls *t, const char *host, int port)
{
    const struct bridge *b = t ? bridge_find(t, host, port) : NULL;
    return b && b->failed ? b->last_error : NULL;
}

/* ------------------------------------------------------------- lifecycle */

struct redis_tls *redis_tls_new(struct event_base *base, const struct redis_tls_conf *conf, const char *what, char *err,
                                size_t errlen)
{
    enum redis_tls_file bad;
    struct redis_tls *t = calloc(1, sizeof(*t));
    if (!t) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    t->base = base;
    t->handshake_timeout_ms = conf->handshake_timeout_ms > 0 ? conf->handshake_timeout_ms : 5000;
    snprintf(t->what, sizeof(t->what), "%s", what);
    t->ctx = make_ctx(conf, &bad, err, errlen);
    if (!t->ctx || (conf->server_name && !(t->server_name = strdup(conf->server_name)))) {
        if (t->ctx)
            snprintf(err, errlen, "out of memory");
        redis_tls_free(t);
        return NULL;
    }
    return t;
}

void redis_tls_free(struct redis_tls *t)
{
    if (!t)
        return;
    while (t->pairs) {
        struct pair *p = t->pairs;
        if (p->local)
            close_side(p, p->local);
        if (p->remote)
            close_side(p, p->remote);
        pair_free_if_done(p);
    }
    while (t->bridges) {
        struct bridge *b = t->bridges;
        t->bridges = b->next;
        evconnlistener_free(b->listener);
        unlink(b->path);
        free(b);
    }
    if (t->dir[0])
        rmdir(t->dir);
    if (t->ctx)
        SSL_CTX_free(t->ctx);
    free(t->server_name);
    free(t);
}
