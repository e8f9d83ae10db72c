#!/usr/bin/env python3
"""Rule-language features end to end: routes told apart by Host, negative
caching of a 404, headers added and dropped upstream, query strings refused,
error codes mapped whatever the status."""
import tempfile
import time

from harness import (Jobgate, Redis, Sim, assert_documented_error, check, eq, hex32, rule_file, run, seed_path,
                     stop_all, test)

PROJECT = hex32()


def setup():
    env = {"tmp": tempfile.mkdtemp(prefix="jg-features-")}
    env["redis"] = Redis().start()
    env["east"] = Sim(init_ms=0, running_ms=0).start()
    env["west"] = Sim(init_ms=0, running_ms=0).start()
    east = rule_file(env["tmp"], "east.yaml", **{
        "name: elb-v1": "name: east",
        "  path: /v1.0/{project_id}/jobs/{job_id}": "  path: /v1.0/{project_id}/jobs/{job_id}\n  host: east.jobgate.test",
        "  url: https://elb.eu-west-0.myhuaweicloud.com": "  url: %s" % env["east"].url,
        "  timeout: 10s": "  timeout: 10s\n  headers: { add: { X-Region: east }, drop: [X-Request-Id] }",
        "  pending_ttl: 2s ": "  pending_ttl: 2s\n  not_found_ttl: 1500ms\n ",
        "  query: ignore": "  query: reject",
    })
    west = rule_file(env["tmp"], "west.yaml", **{
        "name: elb-v1": "name: west",
        "  path: /v1.0/{project_id}/jobs/{job_id}": "  path: /v1.0/{project_id}/jobs/{job_id}\n  host: west.jobgate.test",
        "  url: https://elb.eu-west-0.myhuaweicloud.com": "  url: %s" % env["west"].url,
        '    "APIGW.0308"': '    "ELB.9999": { status: 409, message: "conflict by code" }\n    "APIGW.0308"',
    })
    env["gate"] = Jobgate(None, redis=env["redis"], rules=[east, west]).start()
    return env


teardown = stop_all


def path(job):
    return seed_path(PROJECT, job)


@test
def host_picks_the_rule(env):
    """the same path goes to east or west by Host; an unknown host is 404"""
    gate, east, west = env["gate"], env["east"], env["west"]
    job = hex32()
    eq(gate.get(path(job), headers={"Host": "east.jobgate.test:8080"}).status, 200, "east")
    eq((east.count(job), west.count(job)), (1, 0), "east only")
    eq(gate.get(path(job), headers={"Host": "WEST.jobgate.test"}).status, 200, "west")
    eq((east.count(job), west.count(job)), (1, 1), "west too, its own cache entry")
    key = "jobgate:%s:%s:%s:t"
    eq(env["redis"].cli("EXISTS", key % ("east", PROJECT, job), key % ("west", PROJECT, job)), "2", "two entries")
    r = gate.get(path(job), headers={"Host": "north.jobgate.test"})
    eq(r.status, 404, "unknown host")
    assert_documented_error(r)


@test
def headers_added_and_dropped(env):
    """east adds X-Region and does not send X-Request-Id upstream"""
    gate, east = env["gate"], env["east"]
    gate.get(path(hex32()), headers={"Host": "east.jobgate.test", "X-Request-Id": "abc"})
    headers = {k.lower(): v for k, v in east.last()["headers"].items()}
    eq(headers.get("x-region"), "east", "added header")
    check("x-request-id" not in headers, "X-Request-Id was dropped: %r" % headers)


@test
def not_found_is_remembered_briefly(env):
    """east caches an upstream 404 for 1.5 s (negative caching); west does not"""
    gate, east, west = env["gate"], env["east"], env["west"]
    job = hex32()
    east.fault(job, kind="status", status=404, shape="elb")
    west.fault(job, kind="status", status=404, shape="elb")
    try:
        for host, sim, want_calls in (("east.jobgate.test", east, 1), ("west.jobgate.test", west, 3)):
            answers = [gate.get(path(job), headers={"Host": host}) for _ in range(3)]
            for r in answers:
                eq(r.status, 404, host)
                eq(assert_documented_error(r)["code"], "ELB.1002", host + " code")
            eq(sim.count(job), want_calls, host + " upstream calls for 3 requests")
        eq(answers[0].header("x-cache"), "MISS", "west never caches it")
        r = gate.get(path(job), headers={"Host": "east.jobgate.test"})
        eq(r.header("x-cache"), "HIT", "east answers the 404 from cache")
    finally:
        east.clear_faults()
        west.clear_faults()
    time.sleep(1.6)
    r = gate.get(path(job), headers={"Host": "east.jobgate.test"})
    eq((r.status, r.header("x-cache")), (200, "MISS"), "after not_found_ttl the job is asked for again")


@test
def query_rejected_where_the_rule_says(env):
    """east rejects query strings (400, not upstream); west ignores them"""
    gate, east = env["gate"], env["east"]
    job = hex32()
    r = gate.get(path(job) + "?a=1", headers={"Host": "east.jobgate.test"})
    eq(r.status, 400, "east")
    eq(east.count(job), 0, "not upstream")
    eq(gate.get(path(job) + "?a=1", headers={"Host": "west.jobgate.test"}).status, 200, "west")


@test
def error_code_mapped_whatever_the_status(env):
    """west maps upstream code ELB.9999 to 409, here carried by a 500"""
    gate, west = env["gate"], env["west"]
    job = hex32()
    west.fault(job, kind="status", status=500, shape="elb", code="ELB.9999", message="busy", count=1)
    r = gate.get(path(job), headers={"Host": "west.jobgate.test"})
    eq(r.status, 409, "status")
    doc = assert_documented_error(r)
    eq((doc["code"], doc["message"]), ("ELB.9999", "busy"), "upstream code and message kept")


if __name__ == "__main__":
    run(setup, teardown)
