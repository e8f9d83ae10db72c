#!/usr/bin/env python3
"""Services by Host (lua-free-rules/README.md, "host_service"): what
Terraform's provider calls with `cloud = "jobgate.example"`, namely
https://SERVICE.REGION.jobgate.example with the cloud's own paths
(/v1/{project_id}/jobs/{job_id}, no /ecs prefix).

jobgate runs the shipped ECS, EVS and classic ELB rules (each with its
route.host_service) with `{region}` upstream urls, in token mode, and
regions.host_domain jobgate.example. Every region's cloud host name goes to
the loopback simulator of its service (upstream.connect_to, tests only):
one jobsim per API, so a test sees which service and which region each
call reached, and with which path. Path routing (/ecs/v1/...) keeps working
beside it, and shares the cache with it.
"""
import json
import os
import shutil
import subprocess

from harness import Jobgate, Sim, assert_documented_error, check, eq, hex32, request, run, stop_all, test
from harness import SRCDIR
import procs

P1, P2 = hex32(), hex32()
UPSTREAM_TOKEN = "jobgate-own-token-" + hex32()
RULES = os.path.join(SRCDIR, "lua-free-rules")
REGIONS = ("eu-west-0", "ap-southeast-1")
SERVER = {"server": {"imageRef": "i", "flavorRef": "f", "name": "n", "vpcid": "v", "nics": [{"subnet_id": "s"}],
                     "root_volume": {"volumetype": "SSD"}}}


def region_rule(tmp, name):
    """A shipped rule with its upstream url on `{region}` (the shipped ones name
    eu-west-0), over plain HTTP to the loopback simulators."""
    shared = os.path.join(tmp, "shared")
    if not os.path.isdir(shared):
        shutil.copytree(os.path.join(RULES, "shared"), shared)
    text = open(os.path.join(RULES, name)).read()
    text = text.replace("https://", "http://").replace(".eu-west-0.myhuaweicloud.com", ".{region}.myhuaweicloud.com")
    check("{region}" in text, "%s has no eu-west-0 url to turn into {region}" % name)
    dest = os.path.join(tmp, name)
    with open(dest, "w") as f:
        f.write(text)
    return dest


def setup():
    env = {"sims": {"ecs": Sim(init_ms=0, running_ms=0, api="ecs", request_log=True).start(),
                    "evs": Sim(init_ms=0, running_ms=0, api="evs").start(),
                    "elb": Sim(init_ms=0, running_ms=0).start()}}
    gate = Jobgate(None, redis=None, upstream_token=UPSTREAM_TOKEN)
    gate.rules = [region_rule(gate.tmp, n) for n in ("ecs.yaml", "evs.yaml", "elb-v1.yaml")]
    gate.extra_config = ("regions:\n  host_domain: jobgate.example\n  names: [%s]\n"
                         "  projects: {\"%s\": eu-west-0}\n" % (", ".join(REGIONS), P1))
    connect_to = ", ".join('"%s.%s.myhuaweicloud.com::127.0.0.1:%d"' % (service, region, sim.port)
                           for service, sim in env["sims"].items() for region in REGIONS)
    plain = gate.config_text
    gate.config_text = lambda: plain().replace("upstream:\n", "upstream:\n  connect_to: [%s]\n" % connect_to, 1)
    env["gate"] = gate.start()
    return env


def call(env, method, path, host, body=None):
    headers = {"Host": host}
    if body is not None:
        body = json.dumps(body)
        headers["Content-Type"] = "application/json"
    return request(env["gate"].port, path, method=method, headers=headers, body=body, token=None)


def seen(sim):
    """(method, path, Host) of the latest call `sim` saw."""
    last = sim.last()
    return last["method"], last["path"], {k.lower(): v for k, v in last["headers"].items()}.get("host")


def logged(sim, line):
    """Has `sim` (started with request_log) logged a request starting with `line` ("GET /path")?"""
    with open(sim.log.name, errors="replace") as f:
        return any(l.startswith("jobsim: " + line) for l in f)


def totals(env):
    return {name: sim.total() for name, sim in env["sims"].items()}


@test
def job_poll_by_host(env):
    """GET /v1/P/jobs/J on ecs.eu-west-0.jobgate.example: the ECS rule's cached job route, the cloud's own path upstream"""
    ecs, job = env["sims"]["ecs"], hex32()
    r = call(env, "GET", "/v1/%s/jobs/%s" % (P2, job), "ecs.eu-west-0.jobgate.example")
    eq(r.status, 200, "poll by Host: %r" % r.body)
    eq(r.json()["job_id"], job, "the job asked")
    eq(seen(ecs), ("GET", "/v1/%s/jobs/%s" % (P2, job), "ecs.eu-west-0.myhuaweicloud.com"), "what ECS saw")
    eq(ecs.count(job), 1, "one upstream call")
    # The same job again, by Host and by path (the Host names the region): one cache entry.
    r = call(env, "GET", "/v1/%s/jobs/%s" % (P2, job), "ECS.EU-WEST-0.JobGate.Example:8443")
    eq((r.status, r.header("x-cache")), (200, "HIT"), "second poll by Host (any case, a port)")
    r = call(env, "GET", "/ecs/v1/%s/jobs/%s" % (P2, job), "ecs.eu-west-0.jobgate.example")
    eq((r.status, r.header("x-cache")), (200, "HIT"), "by path on the same Host: the same cache entry")
    eq(ecs.count(job), 1, "still one upstream call")
    # Another region is another job (the region is part of the cache key).
    r = call(env, "GET", "/v1/%s/jobs/%s" % (P2, job), "ecs.ap-southeast-1.jobgate.example")
    eq(r.status, 200, "other region: %r" % r.body)
    eq(seen(ecs)[2], "ecs.ap-southeast-1.myhuaweicloud.com", "the Host's region")
    eq(ecs.count(job), 2, "another region, another upstream call")


@test
def create_then_poll_by_host(env):
    """POST /v1.1/P/cloudservers on ecs.ap-southeast-1.jobgate.example: forwarded once as the cloud's path, then polled to SUCCESS"""
    ecs = env["sims"]["ecs"]
    host = "ecs.ap-southeast-1.jobgate.example"
    before = ecs.stats().get("posts", {}).get(P2, 0)
    r = call(env, "POST", "/v1.1/%s/cloudservers" % P2, host, body=SERVER)
    eq(r.status, 200, "create by Host: %r" % r.body)
    eq(seen(ecs), ("POST", "/v1.1/%s/cloudservers" % P2, "ecs.ap-southeast-1.myhuaweicloud.com"), "what ECS saw")
    eq(ecs.stats()["posts"][P2] - before, 1, "the POST reached ECS once")
    job = r.json()["job_id"]
    r = call(env, "GET", "/v1/%s/jobs/%s" % (P2, job), host)
    eq((r.status, r.json()["status"]), (200, "SUCCESS"), "its job: %r" % r.body)
    # A listing (GET, not a job route): forwarded too, under the cloud's path.
    r = call(env, "GET", "/v1/%s/cloudservers/detail?limit=1" % P2, host)
    check(logged(ecs, "GET /v1/%s/cloudservers/detail" % P2), "forwarded GET reached ECS as the cloud's path")


@test
def each_service_by_its_host(env):
    """evs.REGION and elb.REGION reach their own simulators; ELB's rules keep their prefix (the cloud's)"""
    evs, elb = env["sims"]["evs"], env["sims"]["elb"]
    job, before = hex32(), totals(env)
    r = call(env, "GET", "/v1/%s/jobs/%s" % (P1, job), "evs.eu-west-0.jobgate.example")
    eq(r.status, 200, "EVS by Host: %r" % r.body)
    eq(r.json()["job_type"], "createVolume", "EVS's job")
    eq(seen(evs), ("GET", "/v1/%s/jobs/%s" % (P1, job), "evs.eu-west-0.myhuaweicloud.com"), "what EVS saw")
    r = call(env, "GET", "/v1.0/%s/jobs/%s" % (P1, job), "elb.eu-west-0.jobgate.example")
    eq(r.status, 200, "ELB by Host: %r" % r.body)
    eq(seen(elb), ("GET", "/v1.0/%s/jobs/%s" % (P1, job), "elb.eu-west-0.myhuaweicloud.com"), "what ELB saw")
    after = totals(env)
    eq((after["ecs"] - before["ecs"], after["evs"] - before["evs"], after["elb"] - before["elb"]), (0, 1, 1),
       "one call to each of EVS and ELB, none to ECS")
    # EVS's path on the ECS Host is ECS's business: forwarded to ECS, never to EVS.
    other = hex32()
    call(env, "GET", "/evs/v1/%s/jobs/%s" % (P1, other), "ecs.eu-west-0.jobgate.example")
    check(logged(env["sims"]["ecs"], "GET /evs/v1/%s/jobs/%s" % (P1, other)), "forwarded to ECS as sent")
    eq(evs.total(), after["evs"], "EVS not called")


@test
def refusals_by_host(env):
    """an unknown region 404 JG.UNKNOWN_REGION in the API's shape; a service no rule claims is path routing's (404 JG.NO_ROUTE); nothing sent"""
    before = totals(env)
    r = call(env, "GET", "/v1/%s/jobs/%s" % (P2, hex32()), "ecs.nowhere-9.jobgate.example")
    eq(assert_documented_error(r, "unknown region", shape="apigw")["code"], "JG.UNKNOWN_REGION", "unknown region")
    eq(r.status, 404, "unknown region")
    r = call(env, "POST", "/v1.1/%s/cloudservers" % P2, "ecs.nowhere-9.jobgate.example", body=SERVER)
    eq((r.status, assert_documented_error(r, "create")["code"]), (404, "JG.UNKNOWN_REGION"), "create, unknown region")
    r = call(env, "GET", "/v1/%s/jobs/%s" % (P1, hex32()), "ecs.ap-southeast-1.jobgate.example")
    eq((r.status, assert_documented_error(r, "mismatch")["code"]), (400, "JG.REGION_MISMATCH"),
       "a Host against the project map")
    r = call(env, "GET", "/v1/%s/jobs/%s" % (P2, hex32()), "iam.eu-west-0.jobgate.example")
    eq((r.status, assert_documented_error(r, "unclaimed")["code"]), (404, "JG.NO_ROUTE"), "no rule claims iam")
    eq(totals(env), before, "nothing sent to any simulator")


@test
def path_routing_keeps_working(env):
    """/ecs/v1/... on any Host (the SDK's endpoint http://JOBGATE/ecs), the project's region from the map"""
    ecs, job = env["sims"]["ecs"], hex32()
    r = call(env, "GET", "/ecs/v1/%s/jobs/%s" % (P1, job), "127.0.0.1:%d" % env["gate"].port)
    eq(r.status, 200, "by path: %r" % r.body)
    eq(seen(ecs), ("GET", "/v1/%s/jobs/%s" % (P1, job), "ecs.eu-west-0.myhuaweicloud.com"), "what ECS saw")
    r = call(env, "GET", "/v1/%s/jobs/%s" % (P1, job), "ecs.eu-west-0.jobgate.example")
    eq((r.status, r.header("x-cache")), (200, "HIT"), "the same job by Host: from the cache")
    r = call(env, "GET", "/v1/%s/jobs/%s" % (P1, job), "127.0.0.1:%d" % env["gate"].port)
    eq((r.status, assert_documented_error(r, "no prefix")["code"]), (404, "JG.NO_ROUTE"),
       "the cloud's path without a service Host")


@test
def check_reports_two_claims(env):
    """jobgate -t: two rules claiming one service (one taking its prefix off) is FILE:LINE:COL naming both"""
    gate = env["gate"]
    folder = os.path.join(gate.tmp, "conflict")
    os.makedirs(folder)
    shutil.copytree(os.path.join(RULES, "shared"), os.path.join(folder, "shared"))
    shutil.copy(os.path.join(RULES, "ecs.yaml"), folder)
    text = open(os.path.join(RULES, "ecs.yaml")).read()
    text = text.replace("name: ecs", "name: ecs-copy").replace("/ecs/v1/", "/ecs2/v1/").replace("prefix: /ecs",
                                                                                                  "prefix: /ecs2")
    with open(os.path.join(folder, "ecs2.yaml"), "w") as f:
        f.write(text)
    lines = text.splitlines()
    line = next(i for i, l in enumerate(lines) if l.startswith("  host_service:")) + 1
    conf = os.path.join(folder, "jobgate.yaml")
    with open(conf, "w") as f:
        f.write("rules: [ecs.yaml, ecs2.yaml]\ncache:\n  redis: none\n")
    out = subprocess.run(procs.jobgate_command("-t", "-c", conf), capture_output=True, text=True, timeout=60)
    eq(out.returncode, 1, "exit code; output %r" % (out.stdout + out.stderr))
    where = "%s:%d:17: host_service 'ecs' of rule 'ecs-copy' is already claimed by rule 'ecs' (%s:%d:17)" % (
        os.path.join(folder, "ecs2.yaml"), line, os.path.join(folder, "ecs.yaml"), line)
    check(where in out.stdout + out.stderr, "want %r in %r" % (where, out.stdout + out.stderr))


if __name__ == "__main__":
    run(setup=setup, teardown=stop_all)
