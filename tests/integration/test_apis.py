#!/usr/bin/env python3
"""Every shipped rule end to end: one jobgate loads all of them, each API's
shape is played by its own simulator (jobsim --api), and each job is followed
through its lifecycle, sub-jobs included."""
import os
import tempfile
import time
import uuid

from harness import (cache_key, Jobgate, Redis, SRCDIR, Sim, assert_documented_error, check, eq, hex32, run, stop_all, test,
                     wait_until)

PROJECT = hex32()
RULES = os.path.join(SRCDIR, "lua-free-rules")

# rule name -> (simulator --api, front path template, id maker, state path, final states)
APIS = {
    "elb-v1": ("elb-v1", "/v1.0/{p}/jobs/{j}", hex32, ("status",), ("INIT", "RUNNING", "SUCCESS", "FAIL")),
    "ecs": ("ecs", "/ecs/v1/{p}/jobs/{j}", hex32, ("status",), ("INIT", "RUNNING", "SUCCESS", "FAIL")),
    "bms": ("ecs", "/bms/v1/{p}/jobs/{j}", hex32, ("status",), ("INIT", "RUNNING", "SUCCESS", "FAIL")),
    "evs": ("evs", "/evs/v1/{p}/jobs/{j}", hex32, ("status",), ("INIT", "RUNNING", "SUCCESS", "FAIL")),
    "vpc": ("vpc", "/vpc/v1/{p}/jobs/{j}", hex32, ("status",), ("INIT", "RUNNING", "SUCCESS", "FAIL")),
    "elb-v3": ("elb-v3", "/v3/{p}/elb/jobs/{j}", hex32, ("job", "status"), ("INIT", "RUNNING", "SUCCESS", "FAIL")),
    "cce": ("cce", "/api/v3/projects/{p}/jobs/{j}", lambda: str(uuid.uuid4()), ("status", "phase"),
            ("Initializing", "Running", "Success", "Failed")),
}
WITH_SUB_JOBS = ("ecs", "bms", "evs", "elb-v3", "cce")


def setup():
    env = {"tmp": tempfile.mkdtemp(prefix="jg-apis-"), "sims": {}}
    env["redis"] = Redis().start()
    rules = []
    for name, (api, *_rest) in APIS.items():
        sim = env["sims"][name] = Sim(init_ms=400, running_ms=400, api=api).start()
        text = open(os.path.join(RULES, name + ".yaml")).read()
        text = text.replace("errors: shared/huawei-errors.yaml", "errors: %s/shared/huawei-errors.yaml" % RULES)
        lines = [("  url: %s" % sim.url) if l.startswith("  url: https://") else l for l in text.splitlines()]
        path = os.path.join(env["tmp"], name + ".yaml")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        rules.append(path)
    # No upstream.url override: each rule goes to its own simulator.
    env["gate"] = Jobgate(None, redis=env["redis"], rules=rules).start()
    return env


teardown = stop_all


def front(name, job):
    return APIS[name][1].format(p=PROJECT, j=job)


def state_of(name, doc):
    for part in APIS[name][3]:
        doc = doc[part]
    return doc


def key(name, job, kind):
    return cache_key(PROJECT, job, kind, rule=name)


def lifecycle(env, name):
    gate, sim, redis = env["gate"], env["sims"][name], env["redis"]
    init, running, success, _ = APIS[name][4]
    job = APIS[name][2]()
    sim.define_job(job, init_ms=300, running_ms=300, sub_jobs=0 if name not in WITH_SUB_JOBS else 2)
    seen = []
    deadline = time.time() + 15
    while time.time() < deadline:
        r = gate.get(front(name, job))
        eq(r.status, 200, "%s status (%r)" % (name, r.body[:200]))
        seen.append(state_of(name, r.json()))
        if seen[-1] == success:
            break
        time.sleep(0.1)
    eq(seen[-1], success, "%s final state (seen %s)" % (name, seen))
    order = {init: 0, running: 1, success: 2}
    ranks = [order[s] for s in seen]
    check(ranks == sorted(ranks), "%s states out of order: %s" % (name, seen))
    eq(redis.cli("TTL", key(name, job, "t")), "-1", "%s terminal entry kept forever" % name)
    before = sim.count(job)
    for _ in range(5):
        eq(gate.get(front(name, job)).header("x-cache"), "HIT", "%s after the end" % name)
    eq(sim.count(job), before, "%s upstream requests after the end" % name)


def make_lifecycle_test(name):
    def t(env):
        lifecycle(env, name)
    t.__name__ = "lifecycle_%s" % name.replace("-", "_")
    t.__doc__ = "%s: states in order, terminal cached for good, no upstream call after" % name
    return t


for _name in APIS:
    test(make_lifecycle_test(_name))


@test
def sub_jobs_keep_a_job_open(env):
    """a parent at SUCCESS with sub-jobs still RUNNING is not finished: kept for the short TTL only"""
    for name in WITH_SUB_JOBS:
        gate, sim, redis = env["gate"], env["sims"][name], env["redis"]
        success = APIS[name][4][2]
        job = APIS[name][2]()
        sim.define_job(job, init_ms=0, running_ms=0, sub_jobs=2, sub_lag_ms=2500)
        r = gate.get(front(name, job))
        eq(state_of(name, r.json()), success, "%s parent state" % name)
        eq(redis.cli("EXISTS", key(name, job, "t")), "0", "%s: not terminal while sub-jobs run" % name)
        pttl = int(redis.cli("PTTL", key(name, job, "p")))
        check(0 < pttl <= 602000, "%s pending PTTL %d" % (name, pttl))
        head = redis.cli("GET", key(name, job, "p")).split("\n")[0].split(" ")  # JG1 stored_at terminal status expires_at
        stored_at, expires_at = head[1], head[4]
        check(0 < int(expires_at) - int(stored_at) <= 2100, "%s: fresh for at most the 2 s TTL" % name)


@test
def sub_jobs_finish_then_cached_for_good(env):
    """once every sub-job is done the job is cached without expiry"""
    gate, redis = env["gate"], env["redis"]
    last_job = {}
    for name in WITH_SUB_JOBS:
        sim = env["sims"][name]
        job = last_job[name] = APIS[name][2]()
        sim.define_job(job, init_ms=0, running_ms=0, sub_jobs=3, sub_lag_ms=800)
        gate.get(front(name, job))
        eq(redis.cli("EXISTS", key(name, job, "t")), "0", "%s pending first" % name)
    time.sleep(2.2)  # past the lag and the 2 s pending TTL
    for name in WITH_SUB_JOBS:
        job = last_job[name]
        gate.get(front(name, job))
        eq(redis.cli("TTL", key(name, job, "t")), "-1", "%s terminal after the sub-jobs" % name)


@test
def waiting_states_are_not_terminal(env):
    """ECS PENDING_PAYMENT and EVS WAITING_EXECUTE / LISTENING are still changing"""
    gate, redis = env["gate"], env["redis"]
    for name, state in (("ecs", "PENDING_PAYMENT"), ("evs", "WAITING_EXECUTE"), ("evs", "LISTENING")):
        job = hex32()
        env["sims"][name].define_job(job, init_ms=60000, init_state=state)
        r = gate.get(front(name, job))
        eq(r.json()["status"], state, "%s state" % name)
        eq(redis.cli("EXISTS", key(name, job, "t")), "0", "%s %s not terminal" % (name, state))
        eq(redis.cli("EXISTS", key(name, job, "p")), "1", "%s %s pending" % (name, state))


@test
def failed_jobs_are_terminal(env):
    """FAIL (Failed for CCE) is terminal too"""
    gate, redis = env["gate"], env["redis"]
    for name in APIS:
        job = APIS[name][2]()
        env["sims"][name].define_job(job, init_ms=0, running_ms=0, final="FAIL",
                                     sub_jobs=0 if name not in WITH_SUB_JOBS else 1)
        r = gate.get(front(name, job))
        eq(state_of(name, r.json()), APIS[name][4][3], "%s failed state" % name)
        eq(redis.cli("TTL", key(name, job, "t")), "-1", "%s failure cached for good" % name)


@test
def answers_about_another_job_are_refused(env):
    """each shape's identity field is checked: another job's answer is 502, not cached"""
    gate, redis = env["gate"], env["redis"]
    for name in APIS:
        job = APIS[name][2]()
        env["sims"][name].fault(job, kind="wrongid", count=1)
        r = gate.get(front(name, job))
        eq(r.status, 502, "%s status" % name)
        eq(assert_documented_error(r, name)["code"], "JG.UPSTREAM_WRONG_JOB", "%s code" % name)
        eq(redis.cli("EXISTS", key(name, job, "t"), key(name, job, "p")), "0", "%s nothing cached" % name)


@test
def ids_are_checked_per_api(env):
    """a hex id where CCE wants a UUID (and the reverse) is 400, never upstream"""
    gate = env["gate"]
    before = {n: s.total() for n, s in env["sims"].items()}
    for name, bad in (("cce", hex32()), ("ecs", str(uuid.uuid4())), ("elb-v3", "0123"), ("vpc", hex32()[:31])):
        r = gate.get(front(name, bad))
        eq(r.status, 400, "%s %s" % (name, bad))
        assert_documented_error(r, name)
    eq({n: s.total() for n, s in env["sims"].items()}, before, "upstream requests")


# The rows of lua-free-rules/shared/huawei-errors.yaml that decide what a
# client sees, each provoked by the simulator with a body carrying no code or
# message (shape=empty), so the map's own answer shows: (fault kind and
# parameters, client status, Retry-After, a fragment of the message).
SHARED_ROWS = (
    ({"kind": "status", "status": 410, "shape": "empty"}, 404, None, "no longer exists"),
    ({"kind": "status", "status": 413, "shape": "empty"}, 400, None, "too large"),
    ({"kind": "status", "status": 418, "shape": "empty"}, 400, None, None),  # 4xx
    ({"kind": "status", "status": 500, "shape": "empty"}, 500, None, None),
    ({"kind": "status", "status": 507, "shape": "empty"}, 502, None, None),  # 5xx
    ({"kind": "status", "status": 201, "shape": "empty"}, 502, None, "unexpected success status"),
    ({"kind": "status", "status": 302, "shape": "empty"}, 502, None, "redirected"),
    ({"kind": "status", "status": 403, "shape": "apigw", "code": "APIGW.0308"}, 503, "3", None),  # codes:
    ({"kind": "reset"}, 502, None, "closed the connection"),
    ({"kind": "nonjson"}, 502, None, "without a job object"),
)
SHARED_MAP_RULES = ("ecs", "bms", "evs", "vpc", "elb-v3", "cce")


def upstream_429_is_a_retryable_503(env, name):
    """A 429 without APIGW.0308 in its body: only the map's "429" row makes it 503 + Retry-After 3.
    Last on its simulator: jobgate then backs off that upstream for a few seconds."""
    job = APIS[name][2]()
    env["sims"][name].fault(job, kind="status", status=429, shape="empty", count=1)
    r = env["gate"].get(front(name, job))
    doc = assert_documented_error(r, name + " 429")
    eq((r.status, r.header("retry-after")), (503, "3"), "%s: upstream 429 (%s)" % (name, doc))
    check("throttling" in doc["message"], "%s 429: the shared map's message, got %r" % (name, doc["message"]))


@test
def the_shared_error_map_answers_for_every_rule_using_it(env):
    """shared/huawei-errors.yaml end to end: its main rows through ecs and vpc, a plain 429 -> 503 Retry-After 3 through all six rules"""
    for name in ("ecs", "vpc"):
        sim = env["sims"][name]
        for params, status, retry_after, message in SHARED_ROWS:
            job = APIS[name][2]()
            sim.fault(job, **params)  # on every try: libcurl tries a reset reused connection again
            r = env["gate"].get(front(name, job))
            what = "%s, upstream %s" % (name, params)
            doc = assert_documented_error(r, what)
            eq((r.status, r.header("retry-after")), (status, retry_after), what)
            if message:
                check(message in doc["message"], "%s: message %r lacks %r" % (what, doc["message"], message))
    for name in SHARED_MAP_RULES:
        upstream_429_is_a_retryable_503(env, name)


if __name__ == "__main__":
    run(setup, teardown)
