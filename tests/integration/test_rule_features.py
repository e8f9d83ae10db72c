#!/usr/bin/env python3
"""Rule-language features end to end: routes told apart by Host, each
route with its own upstream and cache entries. (Negative caching of a 404,
headers added and dropped upstream, query strings refused and error codes
mapped whatever the status are cases in tests/data/gateway, run by
test_cases.py.)"""
import tempfile

from harness import cache_key, Jobgate, Redis, Sim, assert_documented_error, eq, hex32, rule_file, run, seed_path, stop_all, test

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
    keys = [cache_key(PROJECT, job, "t", rule=rule) for rule in ("east", "west")]
    eq(env["redis"].cli("EXISTS", *keys), "2", "two entries")
    r = gate.get(path(job), headers={"Host": "north.jobgate.test"})
    eq(r.status, 404, "unknown host")
    assert_documented_error(r)


if __name__ == "__main__":
    run(setup, teardown)
