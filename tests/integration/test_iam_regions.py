#!/usr/bin/env python3
"""A project's region from IAM (README, "Forwarding the rest of a service,
and regions"; proxy/iamregion.h): with jobgate's own credentials and
regions.iam_url, a request whose rule's upstream url carries {region},
whose Host names no region and whose project is not in regions.projects
has its region asked of IAM, GET /v3/projects/{project_id}, whose
project.name is the region.

jobsim plays ECS and IAM's project details at once (POST /_sim/projects
tells it the projects; GET /_sim/projects counts the calls per project).
jobgate runs the shipped ECS rule with an upstream url on {region}, every
region's host name sent to the simulator (upstream.connect_to, tests only),
in token mode.

With a Redis tier the map is shared through Redis (proxy/iamregion_redis.h):
two jobgate instances on one real redis-server, the second learning from
the first's IAM answers without calling IAM.
"""
import json
import os
import re
import shutil
import threading
import time

from harness import Jobgate, Sim, assert_documented_error, check, eq, hex32, request, run, stop_all, test
from harness import SRCDIR, TIME_SCALE, Redis, wait_until

UPSTREAM_TOKEN = "jobgate-own-token-" + hex32()
RULES = os.path.join(SRCDIR, "lua-free-rules")
WEST, EAST, COALESCED, GONE, ODD, MAPPED, REFRESHED = (hex32() for _ in range(7))
# What IAM knows: each name its region, but ODD's is not one, and REFRESHED is a sub-project.
PROJECTS = {WEST: "eu-west-0", EAST: "ap-southeast-1", COALESCED: "ap-southeast-1", ODD: "Not A Region!",
            MAPPED: "ap-southeast-1", REFRESHED: "eu-west-0_sub"}
SERVER = {"server": {"imageRef": "i", "flavorRef": "f", "name": "n", "vpcid": "v", "nics": [{"subnet_id": "s"}],
                     "root_volume": {"volumetype": "SSD"}}}


def iam_projects(sim, projects, delay_ms=0):
    sim._control("POST", "/_sim/projects", body=json.dumps({"projects": projects, "delay_ms": delay_ms}))


def iam_calls(sim, project=None):
    seen = sim._control("GET", "/_sim/projects")
    return seen["total"] if project is None else seen["calls"].get(project, 0)


def make_gate(sim, upstream_token=None, upstream_auth=None, redis=None, refresh="1s", unknown_ttl="1h"):
    """jobgate with the ECS rule on {region} and IAM at `sim`, in token or aksk mode,
    on the embedded cache or on `redis`."""
    gate = Jobgate(None, redis=redis, upstream_token=upstream_token)
    gate.upstream_auth = upstream_auth
    shutil.copytree(os.path.join(RULES, "shared"), os.path.join(gate.tmp, "shared"))
    text = open(os.path.join(RULES, "ecs.yaml")).read().replace("https://ecs.eu-west-0.", "http://ecs.{region}.")
    rule = os.path.join(gate.tmp, "ecs.yaml")
    with open(rule, "w") as f:
        f.write(text)
    gate.rules = [rule]
    gate.extra_config = ("regions:\n  host_domain: jobgate.example\n  names: [eu-west-0]\n"
                         "  projects: {\"%s\": eu-west-0}\n  iam_url: %s\n  iam_refresh: %s\n"
                         "  iam_unknown_ttl: %s\n  iam_retry: 1h\n  iam_timeout: 5s\n"
                         % (MAPPED, sim.url, refresh, unknown_ttl))
    plain = gate.config_text
    gate.config_text = lambda: plain().replace("upstream:\n", "upstream:\n  connect_to: [\"::127.0.0.1:%d\"]\n"
                                                % sim.port, 1)
    return gate.start()


def setup():
    sim = Sim(init_ms=0, running_ms=0, api="ecs").start()
    iam_projects(sim, PROJECTS)
    return {"sim": sim, "gate": make_gate(sim, upstream_token=UPSTREAM_TOKEN)}


def poll(env, project, job=None, headers=None):
    return request(env["gate"].port, "/ecs/v1/%s/jobs/%s" % (project, job or hex32()), headers=headers, token=None)


def host_seen(sim):
    return {k.lower(): v for k, v in sim.last()["headers"].items()}.get("host")


@test
def region_learnt_from_iam(env):
    """an unmapped project: one IAM call, with jobgate's own token, then its region's host; later requests from memory"""
    sim = env["sim"]
    r = poll(env, EAST)
    eq(r.status, 200, "first poll: %r" % r.body)
    eq(host_seen(sim), "ecs.ap-southeast-1.myhuaweicloud.com", "the region IAM named")
    eq(iam_calls(sim, EAST), 1, "IAM asked once")
    eq(sim._control("GET", "/_sim/projects")["last_auth"], "token", "IAM was called with jobgate's own token")
    r = request(env["gate"].port, "/ecs/v1.1/%s/cloudservers" % EAST, method="POST", body=json.dumps(SERVER),
                headers={"Content-Type": "application/json"}, token=None)
    eq(r.status, 200, "forwarded create: %r" % r.body)
    eq(host_seen(sim), "ecs.ap-southeast-1.myhuaweicloud.com", "the forwarded call too")
    for _ in range(3):
        eq(poll(env, EAST).status, 200, "later poll")
    eq(iam_calls(sim, EAST), 1, "still one IAM call")


@test
def concurrent_lookups_coalesce(env):
    """eight requests for one unmapped project while IAM answers slowly: one IAM call, all eight answered with its region"""
    sim = env["sim"]
    iam_projects(sim, PROJECTS, delay_ms=500)  # (counts start again from zero)
    results = []

    def one():
        results.append(poll(env, COALESCED))

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    eq(sorted(r.status for r in results), [200] * 8, "every request: %r" % [r.body for r in results if r.status != 200])
    eq(iam_calls(sim, COALESCED), 1, "IAM calls for the project")
    iam_projects(sim, PROJECTS)


@test
def unknown_project_is_refused(env):
    """IAM's 404: 404 JG.UNKNOWN_PROJECT in the API's shape, nothing sent upstream, remembered (no second IAM call)"""
    sim = env["sim"]
    total = sim.total()
    for method in ("GET", "POST"):
        path = "/ecs/v1/%s/jobs/%s" % (GONE, hex32()) if method == "GET" else "/ecs/v1.1/%s/cloudservers" % GONE
        r = request(env["gate"].port, path, method=method, body=json.dumps(SERVER) if method == "POST" else None,
                    token=None)
        eq((r.status, assert_documented_error(r, method, shape="apigw")["code"]), (404, "JG.UNKNOWN_PROJECT"), method)
    eq(iam_calls(sim, GONE), 1, "one IAM call, the 404 remembered")
    eq(sim.total(), total, "no job request upstream")
    eq(sim.stats().get("posts", {}).get(GONE, 0), 0, "no POST upstream")


@test
def iam_answer_without_a_region(env):
    """IAM names no region (a name that is not one): 503 JG.REGION_UNAVAILABLE with Retry-After, not sent; a sub-project's name is its region"""
    sim = env["sim"]
    total = sim.total()
    r = poll(env, ODD)
    eq((r.status, assert_documented_error(r, "odd")["code"]), (503, "JG.REGION_UNAVAILABLE"), "no region")
    check(r.header("retry-after"), "Retry-After")
    eq(sim.total(), total, "not sent")
    eq(poll(env, ODD).status, 503, "backing off")
    eq(iam_calls(sim, ODD), 1, "no second IAM call while backing off")
    r = poll(env, REFRESHED)
    eq(r.status, 200, "sub-project: %r" % r.body)
    eq(host_seen(sim), "ecs.eu-west-0.myhuaweicloud.com", "REGION_SUB is REGION")


@test
def the_map_and_the_host_go_first(env):
    """a mapped project and a Host that names a region never ask IAM"""
    sim = env["sim"]
    before = iam_calls(sim)
    eq(poll(env, MAPPED).status, 200, "mapped")
    eq(host_seen(sim), "ecs.eu-west-0.myhuaweicloud.com", "the map's region, not IAM's")
    project = hex32()
    r = poll(env, project, headers={"Host": "ecs.eu-west-0.jobgate.example"})
    eq(r.status, 200, "the Host's region: %r" % r.body)
    eq(iam_calls(sim), before, "IAM not asked")


@test
def regions_are_refreshed(env):
    """past iam_refresh the region held answers at once, and one call refreshes it in the background"""
    sim = env["sim"]
    eq(poll(env, WEST).status, 200, "first")
    eq(iam_calls(sim, WEST), 1, "learnt")
    time.sleep(1.2)
    started = time.time()
    eq(poll(env, WEST).status, 200, "due for a refresh: answered")
    check(time.time() - started < 1.0, "answered at once")
    wait_until(lambda: iam_calls(sim, WEST) == 2, what="the background refresh")
    eq(poll(env, WEST).status, 200, "after the refresh")
    eq(iam_calls(sim, WEST), 2, "one refresh")


@test
def iam_is_signed_in_aksk_mode(env):
    """with upstream.auth mode aksk the IAM call is signed with jobgate's own AK/SK (and the job request too)"""
    sim = env["sim"]
    sk = "iam-test-sk-" + hex32()
    sim._control("POST", "/_sim/auth", body=json.dumps({"mode": "aksk", "ak": "JGIAMAK", "sk": sk}))
    try:
        sk_path = os.path.join(env["gate"].tmp, "aksk-sk")
        with os.fdopen(os.open(sk_path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(sk + "\n")
        env["aksk_gate"] = make_gate(sim, upstream_auth="    mode: aksk\n    ak: JGIAMAK\n    sk_file: %s\n" % sk_path)
        project = hex32()
        iam_projects(sim, {project: "ap-southeast-1"})
        r = request(env["aksk_gate"].port, "/ecs/v1/%s/jobs/%s" % (project, hex32()), token=None)
        eq(r.status, 200, "poll: %r" % r.body)
        eq(host_seen(sim), "ecs.ap-southeast-1.myhuaweicloud.com", "IAM's region")
        seen = sim._control("GET", "/_sim/projects")
        eq((seen["calls"].get(project), seen["last_auth"]), (1, "aksk"), "one IAM call, signed")
        auth = sim._control("GET", "/_sim/auth")
        eq(auth["sig_bad"], 0, "signatures the simulator refused")
    finally:
        sim._control("POST", "/_sim/auth", body=json.dumps({"mode": "none"}))


# ------------------------------------------------ the map shared through Redis

SHARED, SHARED_GONE, REDIS_SLOW, REDIS_DOWN = (hex32() for _ in range(4))
SHARED_PROJECTS = dict(PROJECTS, **{SHARED: "ap-southeast-1", REDIS_SLOW: "ap-southeast-1", REDIS_DOWN: "ap-southeast-1"})
REFRESH_MS, UNKNOWN_TTL_MS = 2 * 3600 * 1000, 3600 * 1000


def shared_gates(env):
    """Two instances (A, B) on one redis-server, each one worker: iam_refresh 2h, iam_unknown_ttl 1h."""
    if "redis" not in env:
        sim = env["sim"]
        env["redis"] = Redis().start()
        env["shared"] = {name: make_gate(sim, upstream_token=UPSTREAM_TOKEN, redis=env["redis"], refresh="2h",
                                         unknown_ttl="1h") for name in ("a", "b")}
        for gate in env["shared"].values():
            wait_until(lambda: gate.admin("/healthz").json().get("status") == "ok", what="jobgate's Redis up")
    return env["shared"]["a"], env["shared"]["b"]


def iam_key(project):
    """A project's region key in Redis (proxy/cachekey.h), default prefix: its own hash tag."""
    return "jobgate:{iam:project:%s}" % project


def metric(gate, name):
    """The value of the /metrics line `name` (with its labels), 0 when absent."""
    text = gate.admin("/metrics").body.decode()
    found = re.search(r"^%s (\d+)$" % re.escape(name), text, re.M)
    return int(found.group(1)) if found else 0


IAM_METRICS = ("jobgate_iam_region_calls_total", 'jobgate_iam_region_answers_total{answer="known"}',
               'jobgate_iam_region_answers_total{answer="unknown"}', 'jobgate_iam_region_answers_total{answer="failed"}',
               'jobgate_iam_region_served_total{from="memory"}', 'jobgate_iam_region_served_total{from="redis"}')


def iam_metrics(gate):
    """(calls, known, unknown, failed, from memory, from Redis)"""
    return tuple(metric(gate, name) for name in IAM_METRICS)


@test
def region_shared_through_redis(env):
    """instance A learns a region with one IAM call and stores it in Redis (PX iam_refresh); instance B serves the project with no IAM call"""
    sim = env["sim"]
    a, b = shared_gates(env)
    iam_projects(sim, SHARED_PROJECTS)
    before_a, before_b = iam_metrics(a), iam_metrics(b)
    r = a.get("/ecs/v1/%s/jobs/%s" % (SHARED, hex32()), token=None)
    eq(r.status, 200, "A: %r" % r.body)
    eq(host_seen(sim), "ecs.ap-southeast-1.myhuaweicloud.com", "A: IAM's region")
    eq(iam_calls(sim, SHARED), 1, "A asked IAM once")
    eq(env["redis"].cli("GET", iam_key(SHARED)), "ap-southeast-1", "the region in Redis")
    ttl = int(env["redis"].cli("PTTL", iam_key(SHARED)))
    check(UNKNOWN_TTL_MS < ttl <= REFRESH_MS, "its PX is iam_refresh (2h): PTTL %d" % ttl)
    for _ in range(2):
        r = b.get("/ecs/v1/%s/jobs/%s" % (SHARED, hex32()), token=None)
        eq(r.status, 200, "B: %r" % r.body)
        eq(host_seen(sim), "ecs.ap-southeast-1.myhuaweicloud.com", "B: the region A learnt")
    eq(iam_calls(sim, SHARED), 1, "B did not call IAM")
    delta = lambda gate, before: tuple(x - y for x, y in zip(iam_metrics(gate), before))  # noqa: E731
    eq(delta(a, before_a), (1, 1, 0, 0, 0, 0), "A's metrics: one call, a region")
    eq(delta(b, before_b), (0, 0, 0, 0, 1, 1), "B's metrics: once from Redis, then from memory")


@test
def unknown_project_shared_through_redis(env):
    """IAM's 404 is shared too: "!unknown" with PX iam_unknown_ttl; B answers 404 without calling IAM"""
    sim = env["sim"]
    a, b = shared_gates(env)
    before_b = iam_metrics(b)
    for gate, name in ((a, "A"), (b, "B")):
        r = gate.get("/ecs/v1/%s/jobs/%s" % (SHARED_GONE, hex32()), token=None)
        eq((r.status, assert_documented_error(r, name, shape="apigw")["code"]), (404, "JG.UNKNOWN_PROJECT"), name)
        if name == "A":
            eq(env["redis"].cli("GET", iam_key(SHARED_GONE)), "!unknown", "the unknown marker in Redis")
            ttl = int(env["redis"].cli("PTTL", iam_key(SHARED_GONE)))
            check(0 < ttl <= UNKNOWN_TTL_MS, "its PX is iam_unknown_ttl (1h): PTTL %d" % ttl)
    eq(iam_calls(sim, SHARED_GONE), 1, "one IAM call for both instances")
    eq(metric(a, 'jobgate_iam_region_answers_total{answer="unknown"}'), 1, "A: IAM said unknown")
    eq(iam_metrics(b)[5] - before_b[5], 1, "B: from Redis")


@test
def slow_redis_goes_to_iam_within_budget(env):
    """Redis busy (DEBUG SLEEP 3 s): the read gives up after the Redis budget and IAM is asked; the request is not held"""
    sim = env["sim"]
    a, _ = shared_gates(env)
    timeouts = metric(a, "jobgate_redis_timeouts_total")
    sleep_s = 3 * TIME_SCALE
    sleeper = threading.Thread(target=lambda: env["redis"].cli("DEBUG", "SLEEP", str(sleep_s)))
    sleeper.start()
    try:
        time.sleep(0.2)
        started = time.time()
        r = a.get("/ecs/v1/%s/jobs/%s" % (REDIS_SLOW, hex32()), token=None)
        elapsed = time.time() - started
        eq(r.status, 200, "answered: %r" % r.body)
        eq(host_seen(sim), "ecs.ap-southeast-1.myhuaweicloud.com", "IAM's region")
        check(elapsed < sleep_s * 2 / 3, "answered within the budgets, not after Redis woke: %.2fs" % elapsed)
        eq(iam_calls(sim, REDIS_SLOW), 1, "IAM asked")
        check(metric(a, "jobgate_redis_timeouts_total") > timeouts, "the budget ran out")
    finally:
        sleeper.join(sleep_s + 10)


@test
def redis_down_lookups_go_to_iam(env):
    """Redis gone: each instance asks IAM itself, and requests are still answered"""
    sim = env["sim"]
    a, b = shared_gates(env)
    env["redis"].kill()
    for gate, name in ((a, "A"), (b, "B")):
        started = time.time()
        r = gate.get("/ecs/v1/%s/jobs/%s" % (REDIS_DOWN, hex32()), token=None)
        eq(r.status, 200, "%s with Redis down: %r" % (name, r.body))
        eq(host_seen(sim), "ecs.ap-southeast-1.myhuaweicloud.com", name + ": IAM's region")
        check(time.time() - started < 5 * TIME_SCALE, "%s answered without waiting on Redis" % name)
    eq(iam_calls(sim, REDIS_DOWN), 2, "one IAM call per instance")
    eq(metric(a, 'jobgate_iam_region_answers_total{answer="failed"}'), 0, "no failed IAM answer")


if __name__ == "__main__":
    run(setup=setup, teardown=stop_all)
