#!/usr/bin/env python3
"""Pass-through grants per token, rule and project, shared by the fleet
through Redis (under the token's SHA-256 only). A token one upstream (ELB)
accepted for a project is still judged by another upstream (ECS) before it
reads ECS's cached answers; a 404 grants nothing; one token polling 1,000
times across 2 instances of 4 workers each is judged upstream once per
window; with Redis down each process keeps its own grants."""
import hashlib
import json
import os
import tempfile
import threading
import urllib.request

from harness import Jobgate, Redis, SRCDIR, Sim, check, eq, hex32, run, stop_all, test, wait_until

P = hex32()
RULES = os.path.join(SRCDIR, "lua-free-rules")
ECS_PATH = "/ecs/v1/%s/jobs/%s"
ELB_PATH = "/v1.0/%s/jobs/%s"


def sim_auth(sim, body):
    req = urllib.request.Request("http://127.0.0.1:%d/_sim/auth" % sim.port, data=json.dumps(body).encode(),
                                 method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        eq(r.status, 200, "simulator auth mode set")


def rule_to(tmp, name, sim):
    """The shipped rule `name` sent to `sim`."""
    text = open(os.path.join(RULES, name + ".yaml")).read()
    text = text.replace("errors: shared/huawei-errors.yaml", "errors: %s/shared/huawei-errors.yaml" % RULES)
    lines = [("  url: %s" % sim.url) if l.startswith("  url: https://") else l for l in text.splitlines()]
    path = os.path.join(tmp, name + ".yaml")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def gate_for(env, workers):
    # A Redis budget that a loaded test machine does not overrun: a lookup past it is a BYPASS, which
    # goes upstream whatever the grants say, and this file counts upstream calls.
    redis = "redis://127.0.0.1:%d\n  redis_budget: 2s" % env["redis"].port
    g = Jobgate(None, redis=redis, rules=env["rules"], extra_config="workers: %d\n" % workers)
    g.upstream_auth = "    mode: passthrough\n    passthrough_window: 60s\n"
    return g


def setup():
    env = {"tmp": tempfile.mkdtemp(prefix="jg-grants-")}
    env["redis"] = Redis().start()
    env["ecs"] = Sim(init_ms=0, running_ms=0, api="ecs").start()
    env["elb"] = Sim(init_ms=0, running_ms=0, api="elb-v1").start()
    env["rules"] = [rule_to(env["tmp"], "ecs", env["ecs"]), rule_to(env["tmp"], "elb-v1", env["elb"])]
    env["gate"] = gate_for(env, 1).start()
    return env


teardown = stop_all


@test
def a_token_one_upstream_accepted_is_judged_by_the_other(env):
    """ECS refuses tokX, ELB accepts it for the same project: tokX's ECS request goes to ECS and gets 401"""
    gate, ecs, elb = env["gate"], env["ecs"], env["elb"]
    sim_auth(ecs, {"mode": "tokens", "tokens": {"tokGood": [P]}})
    sim_auth(elb, {"mode": "tokens", "tokens": {"tokGood": [P], "tokX": [P]}})
    job, elb_job = hex32(), hex32()
    r = gate.get(ECS_PATH % (P, job), token="tokGood")
    eq((r.status, r.header("x-cache")), (200, "MISS"), "tokGood's first ECS request")
    body = r.body
    eq(gate.get(ECS_PATH % (P, job), token="tokGood").header("x-cache"), "HIT", "tokGood reads ECS's cache")
    eq(gate.get(ELB_PATH % (P, elb_job), token="tokX").status, 200, "ELB accepts tokX for the project")
    before = ecs.count(job)
    r = gate.get(ECS_PATH % (P, job), token="tokX")
    eq(r.status, 401, "tokX on ECS: judged by ECS")
    check(r.body != body and job.encode() not in r.body, "tokX did not get the cached ECS job")
    eq(ecs.count(job), before + 1, "ECS judged tokX")
    sim_auth(ecs, {"mode": "none"})
    sim_auth(elb, {"mode": "none"})


@test
def a_404_grants_nothing(env):
    """tokY got a 404 from ELB for a job of P: still judged by ELB (401) before it reads a cached job of P"""
    gate, elb = env["gate"], env["elb"]
    sim_auth(elb, {"mode": "none"})
    job, missing = hex32(), hex32()
    eq(gate.get(ELB_PATH % (P, job), token="tokGood").status, 200, "cached by tokGood")
    elb.fault(job=missing, kind="status", status=404, count=1)
    eq(gate.get(ELB_PATH % (P, missing), token="tokY").status, 404, "tokY's 404")
    elb.clear_faults()
    sim_auth(elb, {"mode": "tokens", "tokens": {"tokGood": [P]}})  # the cloud does not know tokY
    r = gate.get(ELB_PATH % (P, job), token="tokY")
    eq(r.status, 401, "tokY judged by ELB, not served the cached job")
    sim_auth(elb, {"mode": "none"})


@test
def one_token_is_judged_once_per_window_by_the_fleet(env):
    """one token polls 1,000 times over 2 instances of 4 workers, each poll a new connection: 1 upstream call"""
    env["gate"].stop()
    gates = env["fleet"] = [gate_for(env, 4).start(), gate_for(env, 4).start()]
    ecs = env["ecs"]
    sim_auth(ecs, {"mode": "none"})
    # Every worker connected to Redis (a worker without it judges alone, as it should).
    for g in gates:
        wait_until(lambda: all(g.admin("/healthz").json()["cache"]["state"] == "up" for _ in range(40)),
                   20, "every worker's Redis up")
    job = hex32()
    statuses, caches, lock = {}, {}, threading.Lock()

    def poll(k):
        for i in range(k, 1000, 8):
            r = gates[i % 2].get(ECS_PATH % (P, job), token="tok-fleet")
            with lock:
                statuses[r.status] = statuses.get(r.status, 0) + 1
                caches[r.header("x-cache")] = caches.get(r.header("x-cache"), 0) + 1
    first = gates[0].get(ECS_PATH % (P, job), token="tok-fleet")
    eq(first.status, 200, "the first poll")
    threads = [threading.Thread(target=poll, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    eq(statuses, {200: 1000}, "statuses")
    eq(ecs.count(job), 1, "upstream calls for the token in the window (answers: %r)" % caches)
    digest = hashlib.sha256(b"tok-fleet").hexdigest()
    keys = env["redis"].cli("KEYS", "*grant:*").split()
    check(any(digest in k for k in keys), "the grant is in Redis under the token's hash: %r" % keys)
    check(not any("tok-fleet" in k for k in keys), "the token itself is in Redis")


@test
def redis_down_keeps_each_process_grants(env):
    """Redis stopped: a token is judged upstream (once per process), then served"""
    gates, ecs = env["fleet"], env["ecs"]
    env["redis"].stop()
    job = hex32()
    for i in range(40):
        r = gates[i % 2].get(ECS_PATH % (P, job), token="tok-alone")
        eq(r.status, 200, "poll %d with Redis down" % i)
    check(1 <= ecs.count(job) <= 8, "judged at most once per process: %d" % ecs.count(job))


if __name__ == "__main__":
    run(setup, teardown)
