#!/usr/bin/env python3
"""TLS to Redis (issue 14, item 2), end to end, against a real
`redis-server --tls-port` with a CA and certificates made here with the
openssl CLI: a verified server (and jobgate's client certificate, which
that Redis requires, and its password) caches and shares answers; a
server whose certificate does not chain to the configured CA, one whose
certificate has expired, and one whose name is not the one configured are
refused: requests go upstream, /healthz on the admin listener says why in
the verifier's words, and no secret shows. A TLS-only sentinel names a
TLS-only master. -t names a bad TLS file at its
line. The in-process bridge (proxy/redis_tls.c) keeps its sockets in a
private folder, removed when jobgate stops."""
import os
import shutil
import socket
import stat
import subprocess
import tempfile
import time

from harness import (cache_key, JOBGATE_BIN, OPENSSL, REDIS_CLI, REDIS_SERVER, SEED_RULE, Jobgate, Redis, Sim, check, eq,
                     free_port, hex32, run, seed_path, stop_all, test, wait_port, wait_until)
from procs import Process

MASTER_NAME = "jobgate-tls"

PROJECT = hex32()
PASSWORD = "pw-" + hex32()[:20]  # what must never show
CLOUD_TOKEN = "cloud-token"  # token mode: answers are shared by every client


def openssl(*args):
    out = subprocess.run([OPENSSL] + [str(a) for a in args], capture_output=True, timeout=60)
    if out.returncode != 0:
        raise RuntimeError("openssl %s: %s" % (args[0], out.stderr.decode()))


def make_pki(folder):
    """Two CAs (the right one and another), and, signed by the right one, a
    server certificate for localhost and 127.0.0.1, an expired one, and a
    client certificate. Returns {name: path}."""
    p = {name: os.path.join(folder, name) for name in (
        "ca.crt", "ca.key", "other-ca.crt", "other-ca.key", "server.crt", "server.key", "expired.crt",
        "client.crt", "client.key", "server.csr", "client.csr", "san.cnf")}
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", *ec, "-keyout", p[ca + ".key"], "-out", p[ca + ".crt"], "-days", "2",
                "-subj", "/CN=jobgate test %s" % ca)
    with open(p["san.cnf"], "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("req", "-new", *ec, "-keyout", p["server.key"], "-out", p["server.csr"], "-subj", "/CN=redis")
    openssl("req", "-new", *ec, "-keyout", p["client.key"], "-out", p["client.csr"], "-subj", "/CN=jobgate")
    sign = ["x509", "-req", "-CA", p["ca.crt"], "-CAkey", p["ca.key"], "-CAcreateserial"]
    openssl(*sign, "-in", p["server.csr"], "-out", p["server.crt"], "-days", "2", "-extfile", p["san.cnf"])
    # -days -1: valid until yesterday (OpenSSL 3.0's x509 takes a negative number of days).
    openssl(*sign, "-in", p["server.csr"], "-out", p["expired.crt"], "-days", "-1", "-extfile", p["san.cnf"])
    openssl(*sign, "-in", p["client.csr"], "-out", p["client.crt"], "-days", "2")
    return p


class TLSRedis(Redis):
    """A redis-server listening with TLS only (--port 0 --tls-port),
    presenting `cert`; `clients`: it requires a client certificate."""

    def __init__(self, pki, cert="server.crt", clients=False, password=None):
        super().__init__()
        self.pki, self.cert, self.clients, self.password = pki, cert, clients, password

    def start(self):
        args = [REDIS_SERVER, "--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", self.dir, "--daemonize", "no", "--loglevel", "warning",
                "--tls-cert-file", self.pki[self.cert], "--tls-key-file", self.pki["server.key"],
                "--tls-ca-cert-file", self.pki["ca.crt"], "--tls-auth-clients", "yes" if self.clients else "no"]
        if self.password:
            args += ["--requirepass", self.password]
        self.spawn(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, proc=self.proc)
        if self.cert == "server.crt":
            wait_until(lambda: self.cli("PING") == "PONG", 5, "redis PING over TLS")
        return self

    def cli(self, *args):
        cmd = [REDIS_CLI, "-p", str(self.port), "--tls", "--cacert", self.pki["ca.crt"], "--cert",
               self.pki["client.crt"], "--key", self.pki["client.key"], "--raw"]
        if self.password:
            cmd += ["--no-auth-warning", "-a", self.password]
        out = subprocess.run(cmd + [str(a) for a in args], capture_output=True, timeout=10)
        return out.stdout.decode("utf-8", "replace").strip()


class TLSSentinel(Process):
    """A sentinel listening with TLS only, watching `master` (a TLSRedis) over TLS."""

    stop_order = 8

    def __init__(self, pki, master):
        self.port = free_port()
        self.pki, self.master = pki, master
        self.dir = tempfile.mkdtemp(prefix="jg-sentinel-tls-")
        self.proc = None

    def start(self):
        conf = os.path.join(self.dir, "sentinel.conf")  # sentinel rewrites it: must be writable
        with open(conf, "w") as f:
            f.write("port 0\ntls-port %d\nbind 127.0.0.1\ndaemonize no\ndir %s\n"
                    "tls-cert-file %s\ntls-key-file %s\ntls-ca-cert-file %s\ntls-auth-clients no\n"
                    "tls-replication yes\nsentinel monitor %s 127.0.0.1 %d 1\n"
                    % (self.port, self.dir, self.pki["server.crt"], self.pki["server.key"], self.pki["ca.crt"],
                       MASTER_NAME, self.master.port))
        self.spawn([REDIS_SERVER, conf, "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, proc=self.proc)
        return self

    def stop(self):
        self.terminate()
        shutil.rmtree(self.dir, ignore_errors=True)


def tls_setting(redis, pki, *lines, ca="ca.crt"):
    """The cache section's value for `redis` over TLS, and extra keys under it."""
    keys = ["redis_tls: on", "redis_tls_ca_file: %s" % pki[ca], "redis_budget: 500ms"] + list(lines)
    return "redis://127.0.0.1:%d%s" % (redis.port, "".join("\n  " + line for line in keys))


def setup():
    env = {"tmp": tempfile.mkdtemp(prefix="jg-redis-tls-")}
    env["pki"] = make_pki(env["tmp"])
    # The bridge's private folders go here (mkdtemp under TMPDIR), so that a test can see them.
    env["bridges"] = os.path.join(env["tmp"], "bridges")
    os.mkdir(env["bridges"])
    os.environ["TMPDIR"] = env["bridges"]
    env["password_file"] = os.path.join(env["tmp"], "redis-password")
    with os.fdopen(os.open(env["password_file"], os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
        f.write(PASSWORD + "\n")
    env["sim"] = Sim(init_ms=0, running_ms=0).start()  # jobs are SUCCESS at once
    env["redis"] = TLSRedis(env["pki"], clients=True, password=PASSWORD).start()
    env["expired_redis"] = TLSRedis(env["pki"], cert="expired.crt").start()
    env["gate"] = Jobgate(env["sim"].url, upstream_token=CLOUD_TOKEN, redis=tls_setting(
        env["redis"], env["pki"], "redis_tls_cert_file: %s" % env["pki"]["client.crt"],
        "redis_tls_key_file: %s" % env["pki"]["client.key"],
        "redis_password_file: %s" % env["password_file"])).start()
    return env


def teardown(env):
    try:
        stop_all(env)
    finally:
        os.environ.pop("TMPDIR", None)
        shutil.rmtree(env["tmp"], ignore_errors=True)


def path(job):
    return seed_path(PROJECT, job)


def key(job, slot):
    return cache_key(PROJECT, job, slot)


def cache_health(gate):
    return gate.admin("/healthz").json()["cache"]


def no_secret_anywhere(gate, *secrets):
    texts = {"the log": gate.log_text(), "/healthz": gate.admin("/healthz").body.decode(),
             "/metrics": gate.admin("/metrics").body.decode()}
    for where, text in texts.items():
        for secret in secrets:
            check(secret not in text, "a secret shows in %s" % where)


def refused(env, gate, reason):
    """`gate`'s Redis is refused for `reason`: a poll is answered from
    upstream, /healthz is degraded and says why."""
    wait_until(lambda: reason in cache_health(gate).get("last_error", ""), 10,
               "the verifier's reason (%r) in /healthz" % reason)
    job = hex32()
    r = gate.get(path(job))
    eq((r.status, r.header("x-cache")), (200, "BYPASS"), "answered from upstream")
    eq(r.json()["job_id"], job, "the job asked for")
    eq(env["sim"].count(job), 1, "upstream calls")
    health = gate.admin("/healthz").json()
    eq(health["status"], "degraded", "health status")
    check(health["cache"]["state"] != "up", "Redis not up: %r" % health["cache"]["state"])
    check("TLS handshake failed: %s" % reason in gate.log_text(), "the reason logged")


@test
def verified_server_caches_and_shares(env):
    """a server certificate from the CA, jobgate's client certificate and password: MISS, stored, HIT"""
    gate, sim, redis = env["gate"], env["sim"], env["redis"]
    wait_until(lambda: cache_health(gate)["state"] == "up", 10, "jobgate up on a TLS Redis")
    wait_until(lambda: cache_health(gate)["coalescing"] == "pubsub", 10, "subscribed over TLS")
    job = hex32()
    eq(gate.get(path(job)).header("x-cache"), "MISS", "first poll")
    wait_until(lambda: redis.cli("EXISTS", key(job, "t")) == "1", 5, "the answer stored in Redis (redis-cli --tls)")
    eq(gate.get(path(job)).header("x-cache"), "HIT", "second poll")
    eq(sim.count(job), 1, "upstream calls")
    eq(cache_health(gate)["errors"], 0, "Redis errors")
    no_secret_anywhere(gate, PASSWORD)


def resp_over_unix(path, *commands):
    """Send `commands` (lists of bytes) on one connection to the Unix
    socket `path`, pipelined; return the replies' raw bytes up to the last
    one's, read in full (each reply is a simple string or a bulk string)."""
    out = b""
    for args in commands:
        out += b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(20)
        s.connect(path)
        s.sendall(out)
        f = s.makefile("rb")
        replies = []
        for _ in commands:
            line = f.readline()
            if line.startswith(b"$"):
                n = int(line[1:-2])
                replies.append(f.read(n + 2)[:-2])
            else:
                replies.append(line[:-2])
        return replies


@test
def bridge_folder_is_private_and_removed(env):
    """the bridge's Unix sockets sit in folders only jobgate's user can enter, removed when it stops"""
    sim, redis, pki = env["sim"], env["redis"], env["pki"]
    before = set(os.listdir(env["bridges"]))
    gate = Jobgate(sim.url, upstream_token=CLOUD_TOKEN, redis=tls_setting(
        redis, pki, "redis_tls_cert_file: %s" % pki["client.crt"], "redis_tls_key_file: %s" % pki["client.key"],
        "redis_password_file: %s" % env["password_file"])).start()
    try:
        wait_until(lambda: cache_health(gate)["state"] == "up", 10, "up")
        # One per Redis link: the cache's, and the fleet guard's (upstream_limits.store: redis).
        folders = [os.path.join(env["bridges"], n) for n in set(os.listdir(env["bridges"])) - before]
        check(folders, "a bridge folder in %s" % env["bridges"])
        for folder in folders:
            eq(stat.S_IMODE(os.stat(folder).st_mode), 0o700, "the mode of %s" % folder)
            check(any(n.endswith(".sock") for n in os.listdir(folder)), "a socket in %s" % folder)
        # Several MiB each way through one bridge socket (beyond its 256 KiB bound of unsent bytes).
        sock = os.path.join(folders[0], sorted(n for n in os.listdir(folders[0]) if n.endswith(".sock"))[0])
        big = os.urandom(3 << 20).hex().encode()[:5 << 20]
        replies = resp_over_unix(sock, [b"AUTH", PASSWORD.encode()], [b"SET", b"tls-big", big],
                                 [b"GET", b"tls-big"], [b"GET", b"tls-big"])
        eq(replies[:2], [b"+OK", b"+OK"], "AUTH and SET through the bridge")
        check(replies[2] == big and replies[3] == big, "5 MiB read back twice, intact")
        eq(redis.cli("STRLEN", "tls-big"), str(len(big)), "the value's length in Redis")
        redis.cli("DEL", "tls-big")
    finally:
        gate.stop()
    for folder in folders:
        check(not os.path.exists(folder), "%s left behind" % folder)


@test
def server_name_checked(env):
    """redis_tls_server_name: the name sent (SNI) and verified; one the certificate lacks is refused"""
    sim, redis, pki = env["sim"], env["redis"], env["pki"]
    client = ["redis_tls_cert_file: %s" % pki["client.crt"], "redis_tls_key_file: %s" % pki["client.key"],
              "redis_password_file: %s" % env["password_file"]]
    good = Jobgate(sim.url, upstream_token=CLOUD_TOKEN, redis=tls_setting(
        redis, pki, "redis_tls_server_name: localhost", *client)).start()
    try:
        wait_until(lambda: cache_health(good)["state"] == "up", 10, "up as localhost")
    finally:
        good.stop()
    bad = Jobgate(sim.url, upstream_token=CLOUD_TOKEN, redis=tls_setting(
        redis, pki, "redis_tls_server_name: redis.example.net", *client)).start()
    try:
        refused(env, bad, "hostname mismatch")
    finally:
        bad.stop()


@test
def wrong_ca_is_refused(env):
    """a server certificate that does not chain to the configured CA: refused, requests go upstream"""
    gate = Jobgate(env["sim"].url, upstream_token=CLOUD_TOKEN, redis=tls_setting(
        env["redis"], env["pki"], "redis_password_file: %s" % env["password_file"], ca="other-ca.crt")).start()
    try:
        # Redis sends its chain, CA included: that CA is not the one trusted.
        refused(env, gate, "self-signed certificate in certificate chain")
        no_secret_anywhere(gate, PASSWORD)
    finally:
        gate.stop()


@test
def expired_certificate_is_refused(env):
    """a server certificate from the CA, but expired: refused, requests go upstream"""
    gate = Jobgate(env["sim"].url, upstream_token=CLOUD_TOKEN,
                   redis=tls_setting(env["expired_redis"], env["pki"])).start()
    try:
        refused(env, gate, "certificate has expired")
        eq(gate.admin("/healthz").json()["cache"]["last_error"], "connection lost: TLS: certificate has expired",
           "the last error")
    finally:
        gate.stop()


@test
def sentinel_over_tls(env):
    """sentinel://: the sentinel asked and watched over TLS, then the master it names, over TLS"""
    pki = env["pki"]
    master = TLSRedis(pki).start()
    sentinel = TLSSentinel(pki, master).start()
    gate = None
    try:
        gate = Jobgate(env["sim"].url, upstream_token=CLOUD_TOKEN, redis="sentinel://127.0.0.1:%d/%s%s" % (
            sentinel.port, MASTER_NAME, "".join("\n  " + line for line in (
                "redis_tls: on", "redis_tls_ca_file: %s" % pki["ca.crt"], "redis_budget: 500ms")))).start()
        wait_until(lambda: cache_health(gate)["state"] == "up", 15, "up on the master the sentinel named")
        eq(cache_health(gate)["endpoint"], "127.0.0.1:%d" % master.port, "the master in use")
        check("sentinel 127.0.0.1:%d: watching for failovers" % sentinel.port in gate.log_text(),
              "the watch subscribed over TLS")
        job = hex32()
        eq(gate.get(path(job)).header("x-cache"), "MISS", "first poll")
        wait_until(lambda: master.cli("EXISTS", key(job, "t")) == "1", 5, "the answer stored on the master")
        eq(gate.get(path(job)).header("x-cache"), "HIT", "second poll")
    finally:
        if gate:
            gate.stop()
        sentinel.stop()
        master.stop()


@test
def config_test_names_the_bad_file(env):
    """-t: a missing CA file and a key that is not a key are FILE:LINE:COL with the key's name"""
    pki = env["pki"]
    garbage = os.path.join(env["tmp"], "not-a-key.pem")
    with open(garbage, "w") as f:
        f.write("not a key\n")
    cases = [
        ("  redis_tls_ca_file: /nonexistent/redis-ca.pem\n", ":6:22: 'redis_tls_ca_file': cannot load the CA file "
         "/nonexistent/redis-ca.pem"),
        ("  redis_tls_ca_file: %s\n  redis_tls_cert_file: %s\n  redis_tls_key_file: %s\n"
         % (pki["ca.crt"], pki["client.crt"], garbage), ":8:23: 'redis_tls_key_file': cannot load the client key %s"
         % garbage),
        ("  redis_tls_ca_file: %s\n  redis_tls_cert_file: %s\n  redis_tls_key_file: %s\n"
         % (pki["ca.crt"], pki["client.crt"], pki["server.key"]), ":8:23: 'redis_tls_key_file': the client key %s "
         "is not the certificate's" % pki["server.key"]),
    ]
    for i, (lines, want) in enumerate(cases):
        config = os.path.join(env["tmp"], "bad-%d.yaml" % i)
        with open(config, "w") as f:
            f.write("rules: [%s]\ncache:\n  redis: redis://127.0.0.1:%d\n  redis_tls: on\n"
                    "  redis_budget: 500ms\n%s" % (SEED_RULE, free_port(), lines))
        out = subprocess.run([JOBGATE_BIN, "-t", "-c", config], capture_output=True, timeout=20)
        text = (out.stdout + out.stderr).decode()
        check(out.returncode != 0, "-t refused case %d" % i)
        check(config + want in text, "case %d: %r in %r" % (i, config + want, text))


if __name__ == "__main__":
    run(setup, teardown)
