#!/usr/bin/env python3
"""Every upstream status 100-599 and every transport fault reaches the client
as an answer from the documented table, with `code` and `message`, and none
of them is ever cached. (Each transport fault, and the single statuses with
a code of their own -- 429 APIGW.0308, 404 ELB.1002, 401 APIGW.0307 -- are
cases in tests/data/gateway, run by test_cases.py.)"""
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from harness import (cache_key, DOCUMENTED, Jobgate, Redis, Sim, assert_documented_error, check, eq, free_port, hex32,
                     rule_file, run, seed_path, stop_all, test)

PROJECT = hex32()


def setup():
    env = {"tmp": tempfile.mkdtemp(prefix="jg-errors-")}
    env["redis"] = Redis().start()
    env["sim"] = Sim(init_ms=60000, running_ms=60000).start()
    # Short timeouts keep the timeout cases quick; the rest is the shipped rule.
    rules = rule_file(env["tmp"], **{"timeout: 10s": "timeout: 1500ms"})
    # The 429 cases make jobgate back off that upstream: briefly here (the tests wait it out).
    env["gate"] = Jobgate(env["sim"].url, redis=env["redis"], rules=[rules], extra_config=(
        "upstream_limits:\n  rate: 100000\n  burst: 100000\n  breaker_threshold: 1000\n"
        "  throttle_backoff: 100ms\n")).start()
    return env


teardown = stop_all


def path(job):
    return seed_path(PROJECT, job)


def assert_not_cached(env, job):
    key = cache_key(PROJECT, job)
    eq(env["redis"].cli("EXISTS", key + ":t", key + ":p"), "0", "cached entries for %s" % job)


def status_case(env, status):
    """Inject `status` once for a fresh job; return (status, job, answer)."""
    job = hex32()
    shape = "elb" if status % 2 else "apigw"
    code = "ELB.%d" % status if shape == "elb" else "APIGW.%d" % status
    env["sim"].fault(job, kind="status", status=status, shape=shape, code=code, message="sim%%20says%%20%d" % status,
                     count=1)
    return status, job, code, env["gate"].get(path(job))


@test
def every_upstream_status_lands_in_the_table(env):
    """upstream 100-599 (but 200): documented status, JSON code/message, upstream code kept, nothing cached"""
    statuses = [s for s in range(100, 600) if s not in (200, 429)]
    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(lambda s: status_case(env, s), statuses))
    # Last and alone: a 429 makes jobgate hold that upstream back for a while.
    results.append(status_case(env, 429))
    time.sleep(0.3)
    problems = []
    for status, job, code, r in results:
        try:
            doc = assert_documented_error(r, "upstream %d" % status)
            assert_not_cached(env, job)
            # Where upstream's body reached us, its code and message are kept.
            if 400 <= status < 600 and status not in (204, 304):
                eq(doc["code"], code, "code for upstream %d" % status)
                eq(doc["message"], "sim says %d" % status, "message for upstream %d" % status)
            if status in DOCUMENTED:
                eq(r.status, status, "documented %d passes through" % status)
        except AssertionError as e:
            problems.append(str(e))
    check(not problems, "%d problems:\n%s" % (len(problems), "\n".join(problems[:20])))


@test
def refused_connection_is_502(env):
    """an upstream that refuses connections: 502 JG.UPSTREAM_UNREACHABLE"""
    gate = Jobgate("http://127.0.0.1:%d" % free_port(), redis=env["redis"]).start()
    try:
        r = gate.get(path(hex32()))
        eq(r.status, 502, "status")
        eq(assert_documented_error(r)["code"], "JG.UPSTREAM_UNREACHABLE", "code")
    finally:
        gate.stop()


@test
def unresolvable_host_is_502(env):
    """an upstream host name that does not resolve: 502, nothing cached"""
    gate = Jobgate("http://no-such-host.invalid:9", redis=env["redis"]).start()
    try:
        job = hex32()
        r = gate.get(path(job))
        eq(r.status, 502, "status")
        assert_documented_error(r)
        assert_not_cached(env, job)
    finally:
        gate.stop()


@test
def faults_for_all_jobs_at_once(env):
    """a 500 storm on every job: every concurrent client gets a documented answer"""
    gate, sim = env["gate"], env["sim"]
    sim.fault("*", kind="status", status=500, shape="apigw", code="APIGW.0601", message="internal")
    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            answers = list(pool.map(lambda _: gate.get(path(hex32())), range(200)))
    finally:
        sim.clear_faults()
    statuses = set(r.status for r in answers)
    eq(statuses, {500}, "statuses")
    for r in answers[:5]:
        eq(assert_documented_error(r)["code"], "APIGW.0601", "code")


# Upstream 200 bodies that two JSON parsers read two ways. cJSON (jobgate)
# takes the first of two equal keys, most clients the last: a terminal answer
# cached from such a body would make those clients poll forever.
AMBIGUOUS = [
    ("status twice", '{"status":"SUCCESS","job_id":"%(job)s","status":"RUNNING"}'),
    ("status twice, other case", '{"status":"SUCCESS","Status":"RUNNING","job_id":"%(job)s"}'),
    ("job_id twice", '{"status":"SUCCESS","job_id":"%(job)s","job_id":"%(other)s"}'),
    ("escaped NUL in the state", '{"status":"SUCCESS\\u0000RUNNING","job_id":"%(job)s"}'),
    ("escaped NUL in the job_id", '{"status":"SUCCESS","job_id":"%(job)s\\u0000x"}'),
    ("not UTF-8", '{"status":"SUCCESS","job_id":"%(job)s","message":"\xff"}'),
]


@test
def ambiguous_upstream_bodies_are_bad_bodies(env):
    """duplicated status/job_id, NUL in a value: 502 JG.UPSTREAM_BAD_BODY, never cached, stale copy served"""
    from urllib.parse import quote
    gate, sim = env["gate"], env["sim"]
    problems = []
    for what, body in AMBIGUOUS:
        job = hex32()
        raw = (body % {"job": job, "other": hex32()}).encode("latin-1")  # \xff stays one byte
        sim.fault(job, kind="rawbody", body=quote(raw, safe=""))
        r = gate.get(path(job))
        sim.clear_faults()
        try:
            eq(r.status, 502, what + " status")
            eq(assert_documented_error(r, what)["code"], "JG.UPSTREAM_BAD_BODY", what + " code")
            assert_not_cached(env, job)
        except AssertionError as e:
            problems.append(str(e))
    check(not problems, "\n".join(problems))
    # A job with a still-changing copy past its TTL keeps getting that copy.
    job = hex32()
    sim.define_job(job, init_ms=0, running_ms=600000)
    first = gate.get(path(job))
    eq(first.json()["status"], "RUNNING", "first answer")
    time.sleep(2.3)
    sim.fault(job, kind="rawbody", body=quote(AMBIGUOUS[0][1] % {"job": job}, safe=""))
    r = gate.get(path(job))
    sim.clear_faults()
    eq((r.status, r.header("x-cache")), (200, "STALE"), "the stale copy, not the ambiguous body")
    eq(r.body, first.body, "the stale copy is the last good answer")


if __name__ == "__main__":
    run(setup, teardown)
