#!/usr/bin/env python3
"""Tokens of a real size: IAM's PKI tokens run to tens of KB. A 32 KiB token
goes upstream whole in each of the three token modes (the client's own in
pass-through, jobgate's from token_file, jobgate's from IAM), under the
shipped header limit; headers one byte over client.max_header_bytes get a
400 in the API's error shape, and nothing is sent upstream."""
import json
import os
import urllib.request

from harness import Jobgate, Sim, assert_documented_error, check, eq, hex32, run, seed_path, stop_all, test

P1 = hex32()
BIG = 32 * 1024
PASSWORD = "long-token-iam-pw"


def sim_auth(sim, body):
    req = urllib.request.Request("http://127.0.0.1:%d/_sim/auth" % sim.port, data=json.dumps(body).encode(),
                                 method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        eq(r.status, 200, "simulator auth mode set")


def long_token(tag, size=BIG):
    """A token of exactly `size` bytes, unique by `tag`."""
    head = "MII%s-%s-" % (tag, hex32())
    return head + "A" * (size - len(head))


def secret_file(gate, name, value):
    path = os.path.join(gate.tmp, name)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(value + "\n")
    return path


def header_bytes(headers):
    """What jobgate counts against max_header_bytes (proxy/request.c): name, value and 4 per header."""
    return sum(len(k) + len(v) + 4 for k, v in headers.items())


def setup():
    env = {}
    # Pass-through: the simulator knows the client's own long token.
    env["pass_token"] = long_token("pass")
    env["pass_sim"] = Sim(init_ms=0, running_ms=0).start()
    sim_auth(env["pass_sim"], {"mode": "tokens", "tokens": {env["pass_token"]: [P1]}})
    env["pass_gate"] = Jobgate(env["pass_sim"].url, redis=None).start()

    # Token mode: jobgate's own token from token_file.
    env["file_token"] = long_token("file")
    env["file_sim"] = Sim(init_ms=0, running_ms=0).start()
    sim_auth(env["file_sim"], {"mode": "tokens", "tokens": {env["file_token"]: ["*"]}})
    gate = Jobgate(env["file_sim"].url, redis=None)
    gate.upstream_auth = "    mode: token\n    token_file: %s\n" % secret_file(gate, "token", env["file_token"])
    env["file_gate"] = gate.start()

    # IAM mode: the simulator issues 32 KiB tokens.
    env["iam_sim"] = Sim(init_ms=0, running_ms=0).start()
    sim_auth(env["iam_sim"], {"mode": "iam", "user": "svc", "password": PASSWORD, "domain": "dom",
                              "token_bytes": BIG})
    gate = Jobgate(env["iam_sim"].url, redis=None)
    gate.upstream_auth = ("    mode: iam\n    iam_url: %s\n    user: svc\n    domain: dom\n    password_file: %s\n"
                          % (env["iam_sim"].url, secret_file(gate, "pw", PASSWORD)))
    env["iam_gate"] = gate.start()
    return env


teardown = stop_all


def sent_token(sim):
    return {k.lower(): v for k, v in sim._control("GET", "/_sim/last")["headers"].items()}.get("x-auth-token")


@test
def a_32k_client_token_passes_through_whole(env):
    """pass-through: a 32 KiB X-Auth-Token under the shipped limits is 200, and upstream got it whole"""
    job = hex32()
    r = env["pass_gate"].get(seed_path(P1, job), token=env["pass_token"])
    eq(r.status, 200, "answer: %r" % r)
    eq(sent_token(env["pass_sim"]), env["pass_token"], "the token upstream received")


@test
def a_32k_token_file_goes_upstream_whole(env):
    """token mode: a 32 KiB token_file is read whole (not cut to a buffer) and sent"""
    job = hex32()
    r = env["file_gate"].get(seed_path(P1, job), token=None)
    eq(r.status, 200, "answer: %r" % r)
    eq(len(sent_token(env["file_sim"]) or ""), BIG, "the length of the token upstream received")
    eq(sent_token(env["file_sim"]), env["file_token"], "the token upstream received")


@test
def a_32k_iam_token_goes_upstream_whole(env):
    """IAM mode: a 32 KiB X-Subject-Token from IAM is kept and sent whole"""
    job = hex32()
    r = env["iam_gate"].get(seed_path(P1, job), token=None)
    eq(r.status, 200, "answer: %r" % r)
    eq(len(sent_token(env["iam_sim"]) or ""), BIG, "the length of the token upstream received")


@test
def headers_one_byte_over_the_bound_get_a_400_in_the_api_shape(env):
    """headers exactly at client.max_header_bytes pass; one byte more: 400 JG.HEADERS_TOO_LARGE, elb shape, nothing upstream"""
    gate, sim = env["pass_gate"], env["pass_sim"]
    limit = 64 * 1024  # the shipped client.max_header_bytes (conf/jobgate.yaml, the config default)
    base = {"Host": "127.0.0.1:%d" % gate.port, "Accept-Encoding": "identity", "X-Pad": ""}
    fixed = header_bytes(dict(base, **{"X-Auth-Token": env["pass_token"]}))
    job = hex32()
    before = sim.total()
    at = dict(base, **{"X-Pad": "p" * (limit - fixed)})
    r = gate.get(seed_path(P1, job), token=env["pass_token"], headers=at)
    eq(r.status, 200, "headers of exactly %d bytes: %r" % (limit, r))
    over = dict(base, **{"X-Pad": "p" * (limit - fixed + 1)})
    r = gate.get(seed_path(P1, job), token=env["pass_token"], headers=over)
    doc = assert_documented_error(r, "one byte over", shape="elb")
    eq((r.status, doc["code"]), (400, "JG.HEADERS_TOO_LARGE"), "answer")
    check(doc.get("request_id"), "the request id in the body")
    eq(sim.total() - before, 1, "upstream calls: only the request within the bound")


if __name__ == "__main__":
    run(setup=setup, teardown=teardown)
