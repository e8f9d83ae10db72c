#!/usr/bin/env python3
"""jobgate holds the cloud credentials. IAM: one token per project, fetched
once for a burst of concurrent requests, renewed once when the cloud says it
expired (401 APIGW.0307) with the client never seeing the 401. AK/SK: every
request signed, checked by the simulator's own implementation. In both
modes the client's X-Auth-Token / Authorization never go upstream, and no
secret reaches jobgate's log or an answer."""
import json
import os
import signal
import urllib.request

from harness import Jobgate, concurrent_get, Sim, check, eq, hex32, run, seed_path, stop_all, test, wait_until

P1, P2 = hex32(), hex32()
PASSWORD = "iam-secret-pw-42"
SK = "sk-secret-value-77"
CLIENT_TOKEN = "client-token-should-not-leave"


def sim_auth(sim, body=None, path="/_sim/auth"):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (sim.port, path), data=data,
                                 method="POST" if data is not None or path.endswith("expire") else "GET")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"{}")


def secret_file(gate, name, value):
    path = os.path.join(gate.tmp, name)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(value + "\n")
    return path


def setup():
    env = {}
    env["iam_sim"] = Sim(init_ms=0, running_ms=0).start()
    sim_auth(env["iam_sim"], {"mode": "iam", "user": "svc", "password": PASSWORD, "domain": "dom",
                              "iam_delay_ms": 300})
    gate = Jobgate(env["iam_sim"].url, redis=None)
    gate.upstream_auth = ("    mode: iam\n    iam_url: %s\n    user: svc\n    domain: dom\n    password_file: %s\n"
                          % (env["iam_sim"].url, secret_file(gate, "pw", PASSWORD)))
    env["iam_gate"] = gate.start()

    env["aksk_sim"] = Sim(init_ms=0, running_ms=0).start()
    sim_auth(env["aksk_sim"], {"mode": "aksk", "ak": "AKJOBGATE", "sk": SK})
    gate = Jobgate(env["aksk_sim"].url, redis=None)
    gate.upstream_auth = "    mode: aksk\n    ak: AKJOBGATE\n    sk_file: %s\n" % secret_file(gate, "sk", SK)
    env["aksk_gate"] = gate.start()
    return env


teardown = stop_all


def burst(gate, paths):
    return concurrent_get(gate, paths, token=CLIENT_TOKEN, timeout=20)


@test
def a_burst_fetches_one_iam_token_per_project(env):
    """40 concurrent misses on project P1 while IAM answers in 300 ms: 1 IAM call, 40 answers 200"""
    gate, sim = env["iam_gate"], env["iam_sim"]
    before = sim_auth(sim)["iam_calls"]
    answers = burst(gate, [seed_path(P1, hex32()) for _ in range(40)])
    eq(sorted(r.status for r in answers), [200] * 40, "statuses")
    eq(sim_auth(sim)["iam_calls"] - before, 1, "IAM calls")
    eq(gate.get(seed_path(P2, hex32()), token=CLIENT_TOKEN).status, 200, "another project")
    eq(sim_auth(sim)["iam_calls"] - before, 2, "IAM calls after a second project")


@test
def the_clients_token_never_goes_upstream(env):
    """upstream sees jobgate's IAM token, not the client's X-Auth-Token"""
    gate, sim = env["iam_gate"], env["iam_sim"]
    gate.get(seed_path(P1, hex32()), token=CLIENT_TOKEN)
    sent = {k.lower(): v for k, v in sim.last()["headers"].items()}
    check(sent.get("x-auth-token") and sent["x-auth-token"] != CLIENT_TOKEN, "jobgate's token sent: %r" % sent)


@test
def an_expired_token_is_renewed_once_and_the_client_sees_200(env):
    """the cloud expires every token: the next request gets 200 after exactly one more IAM call"""
    gate, sim = env["iam_gate"], env["iam_sim"]
    sim_auth(sim, path="/_sim/auth/expire")
    before = sim_auth(sim)["iam_calls"]
    answers = burst(gate, [seed_path(P1, hex32()) for _ in range(10)])
    eq(sorted(r.status for r in answers), [200] * 10, "statuses")
    eq(sim_auth(sim)["iam_calls"] - before, 1, "IAM calls to renew")


@test
def a_wrong_password_gives_503_not_a_storm(env):
    """IAM refuses jobgate's password: 503 JG.NO_CREDENTIALS with Retry-After, and IAM is not hammered"""
    gate, sim = env["iam_gate"], env["iam_sim"]
    sim_auth(sim, {"mode": "iam", "user": "svc", "password": "changed", "domain": "dom"})
    project = hex32()
    answers = burst(gate, [seed_path(project, hex32()) for _ in range(20)])
    eq({r.status for r in answers}, {503}, "statuses")
    eq({r.error()["code"] for r in answers}, {"JG.NO_CREDENTIALS"}, "codes")
    check(all(r.header("retry-after") for r in answers), "Retry-After")
    check(sim_auth(sim)["iam_calls"] <= 1, "IAM calls after a refused password: %d" % sim_auth(sim)["iam_calls"])
    check(gate.get("/healthz", token=None).json()["status"] == "degraded", "healthz degraded")


@test
def aksk_requests_are_signed_and_verified(env):
    """every request signed with AK/SK: the simulator's independent check accepts them; the client's token is not sent"""
    gate, sim = env["aksk_gate"], env["aksk_sim"]
    before = sim_auth(sim)
    answers = burst(gate, [seed_path(P1, hex32()) for _ in range(10)])
    eq(sorted(r.status for r in answers), [200] * 10, "statuses")
    after = sim_auth(sim)
    eq(after["sig_ok"] - before["sig_ok"], 10, "signatures accepted")
    eq(after["sig_bad"] - before["sig_bad"], 0, "signatures refused")
    sent = {k.lower(): v for k, v in sim.last()["headers"].items()}
    check(sent.get("authorization", "").startswith("SDK-HMAC-SHA256 Access=AKJOBGATE"), "signed: %r" % sent)
    eq(sent.get("x-project-id"), P1, "X-Project-Id")
    check("x-auth-token" not in sent, "no X-Auth-Token upstream")


@test
def a_rotated_token_file_is_picked_up_on_sighup(env):
    """token mode: the token file is rewritten and SIGHUP sent; the next upstream call carries the new token"""
    sim = env["aksk_sim"]
    sim_auth(sim, {"mode": "none"})
    gate = Jobgate(sim.url, redis=None, upstream_token="first-token")
    env["token_gate"] = gate.start()
    gate.get(seed_path(P1, hex32()), token=CLIENT_TOKEN)
    eq({k.lower(): v for k, v in sim.last()["headers"].items()}.get("x-auth-token"), "first-token", "before")
    with open(os.path.join(gate.tmp, "upstream-token"), "w") as f:
        f.write("second-token\n")
    os.kill(gate.proc.pid, signal.SIGHUP)
    wait_until(lambda: "reloaded" in gate.log_text(), 5, "the reload")
    gate.get(seed_path(P1, hex32()), token=CLIENT_TOKEN)
    eq({k.lower(): v for k, v in sim.last()["headers"].items()}.get("x-auth-token"), "second-token", "after")
    sim_auth(sim, {"mode": "aksk", "ak": "AKJOBGATE", "sk": SK})


@test
def no_secret_in_logs_or_answers(env):
    """the IAM password, the SK, IAM tokens and the client token appear in no log line and no answer"""
    for name in ("iam_gate", "aksk_gate"):
        log = env[name].log_text()
        for secret in (PASSWORD, SK, CLIENT_TOKEN):
            check(secret not in log, "a secret in %s's log" % name)
        check("X-Subject-Token" not in log, "IAM token header in the log")
        r = env[name].get("/metrics", token=None)
        for secret in (PASSWORD, SK, CLIENT_TOKEN):
            check(secret.encode() not in r.body, "a secret in /metrics")


if __name__ == "__main__":
    run(setup, teardown)
