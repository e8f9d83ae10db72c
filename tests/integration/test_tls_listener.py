#!/usr/bin/env python3
"""The HTTPS listener (evhttp over bufferevent_openssl): curl gets job
answers over TLS verified against the test CA; a plain-HTTP client on the
TLS port gets nothing; SIGHUP loads a new certificate for new connections,
and a broken one is refused with the old kept."""
import os
import shutil
import signal
import ssl
import subprocess
import tempfile

from harness import (OPENSSL, Jobgate, Sim, check, eq, free_port, hex32, request, run, seed_path, stop_all, test,
                     wait_port, wait_until)

PROJECT = hex32()


def openssl(*args, cwd):
    subprocess.run([OPENSSL] + list(args), cwd=cwd, check=True, capture_output=True, timeout=60)


def make_cert(d, ca, name, cn="localhost"):
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=%s" % cn, "-keyout", name + ".key", "-out",
            name + ".csr", cwd=d)
    with open(os.path.join(d, "san.cnf"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key", "-CAcreateserial",
            "-days", "2", "-extfile", "san.cnf", "-out", name + ".pem", cwd=d)


def setup():
    d = tempfile.mkdtemp(prefix="jg-tlsl-")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=jobgate listener CA",
            "-keyout", "ca.key", "-out", "ca.pem", cwd=d)
    make_cert(d, "ca", "one", cn="jobgate one")
    make_cert(d, "ca", "two", cn="jobgate two")
    shutil.copy(os.path.join(d, "one.pem"), os.path.join(d, "live.pem"))
    shutil.copy(os.path.join(d, "one.key"), os.path.join(d, "live.key"))
    env = {"dir": d}
    env["sim"] = Sim(init_ms=0, running_ms=0).start()
    env["tls_port"] = free_port()
    gate = Jobgate(env["sim"].url, redis=None)
    gate.extra_config = ("listeners:\n  - listen: 127.0.0.1:%d\n  - listen: 127.0.0.1:%d\n"
                         "    tls: { cert: %s/live.pem, key: %s/live.key }\n" % (gate.port, env["tls_port"], d, d))
    env["gate"] = gate.start()
    wait_port(env["tls_port"], proc=gate.proc)  # the second listener
    return env


def teardown(env):
    stop_all(env)
    shutil.rmtree(env["dir"], ignore_errors=True)


def curl(env, path):
    out = subprocess.run(["curl", "-sS", "--cacert", os.path.join(env["dir"], "ca.pem"), "-H", "X-Auth-Token: t",
                          "-w", "\n%{http_code}", "https://localhost:%d%s" % (env["tls_port"], path)],
                         capture_output=True, timeout=20)
    check(out.returncode == 0, "curl failed: %r" % out.stderr)
    body, _, code = out.stdout.decode().rpartition("\n")
    return int(code), body


def served_cn(env):
    ctx = ssl.create_default_context(cafile=os.path.join(env["dir"], "ca.pem"))
    import socket
    with socket.create_connection(("127.0.0.1", env["tls_port"])) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            subject = dict(x[0] for x in s.getpeercert()["subject"])
            return subject["commonName"]


@test
def curl_gets_job_answers_over_https(env):
    """curl --cacert: 200 with the job, then a HIT, over TLS"""
    job = hex32()
    code, body = curl(env, seed_path(PROJECT, job))
    eq(code, 200, "status")
    check(job in body, "the job in the body")
    eq(curl(env, "/healthz")[0], 200, "healthz over TLS")
    eq(env["sim"].count(job), 1, "upstream requests")


@test
def plain_http_on_the_tls_port_gets_no_answer(env):
    """a plain HTTP request to the TLS port is not served as HTTP"""
    try:
        r = request(env["tls_port"], "/healthz", timeout=3)
        check(r.status != 200, "plain HTTP answered 200 on the TLS port")
    except Exception:
        pass  # the handshake fails and the connection closes: expected


@test
def sighup_loads_a_new_certificate(env):
    """replace the files, SIGHUP: new connections see the new certificate"""
    gate, d = env["gate"], env["dir"]
    eq(served_cn(env), "jobgate one", "before")
    shutil.copy(os.path.join(d, "two.pem"), os.path.join(d, "live.pem"))
    shutil.copy(os.path.join(d, "two.key"), os.path.join(d, "live.key"))
    os.kill(gate.proc.pid, signal.SIGHUP)
    wait_until(lambda: served_cn(env) == "jobgate two", 5, "the new certificate served")


@test
def a_broken_certificate_is_refused_on_reload(env):
    """a key that does not match the certificate: the reload keeps the old certificate and says why"""
    gate, d = env["gate"], env["dir"]
    shutil.copy(os.path.join(d, "one.key"), os.path.join(d, "live.key"))  # live.pem is still "two"
    os.kill(gate.proc.pid, signal.SIGHUP)
    wait_until(lambda: "keeps its TLS certificate" in gate.log_text(), 5, "the refusal logged")
    eq(served_cn(env), "jobgate two", "the old certificate still served")
    eq(curl(env, "/healthz")[0], 200, "still answering")


if __name__ == "__main__":
    run(setup, teardown)
