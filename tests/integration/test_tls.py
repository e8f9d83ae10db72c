#!/usr/bin/env python3
"""HTTPS upstream: jobgate verifies the certificate against the configured
CA; a certificate from another CA is refused (502) and nothing is cached.
The CAs and the certificate are made here, with openssl."""
import os
import subprocess
import tempfile

from harness import (cache_key, Jobgate, OPENSSL, Redis, Sim, assert_documented_error, check, eq, hex32, run, seed_path,
                     stop_all, test)

PROJECT = hex32()


def openssl(*args, cwd):
    subprocess.run([OPENSSL] + list(args), cwd=cwd, check=True, capture_output=True, timeout=60)


def make_pki(d):
    """ca.pem signs server.pem (CN/SAN localhost); other-ca.pem signs nothing of ours."""
    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=jobgate test %s" % ca,
                "-keyout", ca + ".key", "-out", ca + ".pem", cwd=d)
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key", "-out",
            "server.csr", cwd=d)
    with open(os.path.join(d, "san.cnf"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
            "-extfile", "san.cnf", "-out", "server.pem", cwd=d)
    return {name: os.path.join(d, name) for name in ("ca.pem", "other-ca.pem", "server.pem", "server.key")}


def setup():
    d = tempfile.mkdtemp(prefix="jg-tls-")
    env = {"pki": make_pki(d)}
    pki = env["pki"]
    env["redis"] = Redis().start()
    env["sim"] = Sim(init_ms=0, running_ms=0, tls=(pki["server.pem"], pki["server.key"], pki["ca.pem"])).start()
    return env


teardown = stop_all


def path(job):
    return seed_path(PROJECT, job)


@test
def verified_https_upstream(env):
    """with the right CA: 200 over HTTPS, cached"""
    gate = Jobgate(env["sim"].url, redis=env["redis"], ca_file=env["pki"]["ca.pem"]).start()
    try:
        job = hex32()
        r = gate.get(path(job))
        eq(r.status, 200, "status (log: %s)" % gate.log_text()[-500:])
        eq(r.json()["job_id"], job, "job")
        eq(gate.get(path(job)).header("x-cache"), "HIT", "cached")
        eq(env["sim"].count(job), 1, "upstream requests")
    finally:
        gate.stop()


@test
def certificate_from_another_ca_is_refused(env):
    """with another CA: 502 JG.UPSTREAM_TLS, nothing cached, the log says why"""
    gate = Jobgate(env["sim"].url, redis=env["redis"], ca_file=env["pki"]["other-ca.pem"]).start()
    try:
        job = hex32()
        r = gate.get(path(job))
        eq(r.status, 502, "status")
        eq(assert_documented_error(r)["code"], "JG.UPSTREAM_TLS", "code")
        key = cache_key(PROJECT, job)
        eq(env["redis"].cli("EXISTS", key + ":t", key + ":p"), "0", "nothing cached")
        eq(env["sim"].count(job), 0, "no request reached the simulator")
        check("upstream tls" in gate.log_text(), "log names the TLS failure")
    finally:
        gate.stop()


if __name__ == "__main__":
    run(setup, teardown)
