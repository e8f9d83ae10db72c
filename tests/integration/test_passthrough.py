#!/usr/bin/env python3
"""Pass-through mode (no cloud credentials held by jobgate: the client's own
X-Auth-Token goes upstream). A cached answer is served to a token only after
the cloud accepted that same token for that project; any other token is sent
upstream for the cloud to judge, and a refused token never sees the cached
body. Tokens are kept only as hashes: none appears in logs or in Redis."""
import json
import time
import urllib.request

from harness import Jobgate, Redis, Sim, check, eq, hex32, run, seed_path, stop_all, test

P1, P2 = hex32(), hex32()


def setup():
    env = {}
    env["redis"] = Redis().start()
    env["sim"] = Sim(init_ms=0, running_ms=0).start()
    env["gate"] = Jobgate(env["sim"].url, redis=env["redis"]).start()
    return env


teardown = stop_all


def sim_auth(sim, body):
    req = urllib.request.Request("http://127.0.0.1:%d/_sim/auth" % sim.port, data=json.dumps(body).encode(),
                                 method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        eq(r.status, 200, "simulator auth mode set")


def get(gate, job, token, project=P1):
    return gate.get(seed_path(project, job), token=token)


@test
def a_token_reads_the_cache_after_the_cloud_accepted_it(env):
    """token A: MISS then HIT; token B for the same job goes upstream once, then HITs too"""
    gate, sim = env["gate"], env["sim"]
    sim_auth(sim, {"mode": "none"})
    job = hex32()
    eq(get(gate, job, "token-A").header("x-cache"), "MISS", "A first")
    eq(get(gate, job, "token-A").header("x-cache"), "HIT", "A again")
    eq(sim.count(job), 1, "upstream calls after A")
    r = get(gate, job, "token-B")
    eq((r.status, r.header("x-cache")), (200, "MISS"), "B's first request is judged upstream")
    eq(sim.count(job), 2, "upstream calls after B")
    eq(get(gate, job, "token-B").header("x-cache"), "HIT", "B again")
    eq(sim.count(job), 2, "no more upstream calls")


@test
def a_refused_token_never_sees_the_cached_answer(env):
    """the cloud knows tokA for P1 only: tokA caches a job; an unknown token gets 401, tokA on P2 gets 403"""
    gate, sim = env["gate"], env["sim"]
    sim_auth(sim, {"mode": "tokens", "tokens": {"tokA": [P1]}})
    job = hex32()
    r = get(gate, job, "tokA")
    eq(r.status, 200, "tokA allowed")
    body = r.body
    eq(get(gate, job, "tokA").header("x-cache"), "HIT", "cached for tokA")
    for token in ("forged-token", "tokA-but-longer"):
        r = get(gate, job, token)
        eq(r.status, 401, "%s refused" % token)
        check(r.body != body and job.encode() not in r.body, "%s did not get the job" % token)
    r = get(gate, job, "tokA", project=P2)
    eq(r.status, 403, "tokA on another project")
    sim_auth(sim, {"mode": "none"})


@test
def the_acceptance_lasts_the_window(env):
    """passthrough_window 1 s: a token's hits need no upstream call within it; after it, one call judges it again"""
    sim = env["sim"]
    sim_auth(sim, {"mode": "none"})
    gate = Jobgate(sim.url, redis=env["redis"])
    gate.upstream_auth = "    mode: passthrough\n    passthrough_window: 1s\n"
    env["window_gate"] = gate.start()
    job = hex32()
    eq(get(gate, job, "token-W").header("x-cache"), "MISS", "first")
    eq(get(gate, job, "token-W").header("x-cache"), "HIT", "within the window")
    eq(sim.count(job), 1, "upstream calls within the window")
    time.sleep(1.2)
    eq(get(gate, job, "token-W").header("x-cache"), "MISS", "after the window: judged upstream again")
    eq(sim.count(job), 2, "upstream calls after the window")
    eq(get(gate, job, "token-W").header("x-cache"), "HIT", "accepted again")


@test
def tokens_are_not_kept_in_logs_or_redis(env):
    """after the requests above, no token appears in jobgate's log or in any Redis key or value"""
    gate, redis = env["gate"], env["redis"]
    log = gate.log_text()
    dump = redis.cli("--no-raw", "KEYS", "*")
    values = [redis.cli("GET", k) for k in dump.split() if k.strip('"').endswith((":t", ":p"))]
    for token in ("token-A", "token-B", "tokA", "forged-token"):
        check(token not in log, "%s in jobgate's log" % token)
        check(token not in dump, "%s in a Redis key" % token)
        check(all(token not in v for v in values), "%s in a Redis value" % token)


if __name__ == "__main__":
    run(setup, teardown)
