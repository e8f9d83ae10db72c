#!/usr/bin/env python3
"""Upstream protection and serve-stale. A rate limit per upstream (beyond
it: 503 + Retry-After, no call); after a 429 nothing goes upstream until the
backoff has passed; after N consecutive failures the circuit opens (fail
fast, no call), then one probe closes it. When upstream fails, throttles or
is held back, the last still-changing answer is served (X-Cache: STALE, Age);
never for a job that was never seen, never in place of a 401/404. Counts
are asserted, not timings."""
import time

from harness import (Jobgate, Sim, assert_documented_error, check, concurrent_get, eq, hex32, run, seed_path, stop_all,
                     test, wait_until)

PROJECT = hex32()


def setup():
    env = {}
    env["sim"] = Sim(init_ms=0, running_ms=0).start()
    return env


teardown = stop_all


def gate_with(env, name, limits):
    old = env.pop(name, None)
    if old:
        old.stop()
    env[name] = Jobgate(env["sim"].url, redis=None, upstream_token="cloud-token",
                        extra_config="upstream_limits:\n" + limits).start()
    return env[name]


def path(job):
    return seed_path(PROJECT, job)


def burst(gate, paths):
    return concurrent_get(gate, paths, timeout=20)


@test
def the_rate_limit_holds_calls_back(env):
    """rate 2/s, burst 5, no queue: 20 concurrent misses on 20 jobs cost at most 6 upstream calls; the rest get 503 + Retry-After"""
    sim = env["sim"]
    gate = gate_with(env, "gate", "  rate: 2\n  burst: 5\n  queue: 0s\n")
    before = sim.total()
    answers = burst(gate, [path(hex32()) for _ in range(20)])
    calls = sim.total() - before
    check(5 <= calls <= 6, "upstream calls %d" % calls)
    ok = [r for r in answers if r.status == 200]
    limited = [r for r in answers if r.status == 503]
    eq(len(ok), calls, "answered from upstream")
    eq(len(ok) + len(limited), 20, "every answer is 200 or 503")
    for r in limited:
        assert_documented_error(r)
        eq(r.error()["code"], "JG.UPSTREAM_RATE_LIMITED", "code")
        check(int(r.header("retry-after")) >= 1, "Retry-After")


@test
def over_the_rate_a_call_waits_its_turn(env):
    """rate 10/s, burst 5, queue 2 s: 15 concurrent misses are all answered 200, at no more than the rate"""
    sim = env["sim"]
    gate = gate_with(env, "gate", "  rate: 10\n  burst: 5\n  queue: 2s\n")
    before = sim.total()
    started = time.monotonic()
    answers = burst(gate, [path(hex32()) for _ in range(15)])
    elapsed = time.monotonic() - started
    eq(sorted(r.status for r in answers), [200] * 15, "statuses")
    eq(sim.total() - before, 15, "upstream calls")
    # 5 at once, then 10 more at 10/s: the last cannot leave before ~1 s
    check(elapsed >= 0.8, "the rate held: 15 calls in %.2f s" % elapsed)


@test
def a_429_stops_calls_until_the_backoff_passes(env):
    """upstream 429: the next misses are answered 503 JG.UPSTREAM_THROTTLED with no call; after the backoff, calls resume"""
    sim = env["sim"]
    gate = gate_with(env, "gate", "  rate: 1000\n  burst: 1000\n  throttle_backoff: 1500ms\n")
    job = hex32()
    sim.fault(job=job, kind="status", status=429, shape="apigw", code="APIGW.0308", count=1)
    eq(gate.get(path(job)).status, 503, "the 429 itself, mapped")
    before = sim.total()
    for _ in range(5):
        r = gate.get(path(hex32()))
        eq((r.status, r.error()["code"]), (503, "JG.UPSTREAM_THROTTLED"), "while backing off")
    eq(sim.total(), before, "no upstream call while backing off")
    wait_until(lambda: gate.get(path(hex32())).status == 200, 5, "calls resume after the backoff")


@test
def the_circuit_opens_after_failures_and_a_probe_closes_it(env):
    """3 resets open the circuit: the next 5 misses fail fast with no call; once upstream heals, one probe closes it"""
    sim = env["sim"]
    gate = gate_with(env, "gate", "  rate: 1000\n  burst: 1000\n  breaker_threshold: 3\n  breaker_cooldown: 1s\n")
    sim.fault(job="*", kind="reset")
    for _ in range(3):
        eq(gate.get(path(hex32())).status, 502, "a reset is a 502")
    before = sim.total()
    for _ in range(5):
        r = gate.get(path(hex32()))
        eq((r.status, r.error()["code"]), (503, "JG.UPSTREAM_UNAVAILABLE"), "circuit open")
        check(r.header("retry-after"), "Retry-After")
    eq(sim.total(), before, "no upstream call while the circuit is open")
    sim.clear_faults()
    wait_until(lambda: gate.get(path(hex32())).status == 200, 5, "the probe succeeds after the cool-down")
    answers = [gate.get(path(hex32())).status for _ in range(5)]
    eq(answers, [200] * 5, "closed again")


@test
def a_failing_upstream_is_covered_by_the_stale_copy(env):
    """a RUNNING answer past its 2 s TTL, then upstream 500s: 200 X-Cache STALE with Age and the same body"""
    sim = env["sim"]
    gate = gate_with(env, "gate", "  rate: 1000\n  burst: 1000\n  breaker_threshold: 1000\n")
    job = hex32()
    sim.define_job(job, init_ms=0, running_ms=600000)
    first = gate.get(path(job))
    eq(first.json()["status"], "RUNNING", "first answer")
    time.sleep(2.3)
    sim.fault(job=job, kind="status", status=500, count=5)
    r = gate.get(path(job))
    eq((r.status, r.header("x-cache")), (200, "STALE"), "served stale")
    check(int(r.header("age")) >= 2, "Age %s" % r.header("age"))
    eq(r.body, first.body, "the stale copy is the last answer")
    sim.fault(job=job, kind="reset", count=5)
    eq(gate.get(path(job)).header("x-cache"), "STALE", "also on a transport failure")
    sim.fault(job=job, kind="nonjson", count=5)
    eq(gate.get(path(job)).header("x-cache"), "STALE", "also on a 200 that is no job")


@test
def no_stale_copy_for_a_job_never_seen_or_a_verdict(env):
    """upstream 500 for a job never fetched: 500, not stale; a stale job whose upstream says 404 gets the 404"""
    sim = env["sim"]
    gate = env["gate"]
    job = hex32()
    sim.fault(job=job, kind="status", status=500, count=1)
    r = gate.get(path(job))
    eq(r.status, 500, "never seen: the error")
    check(r.header("x-cache") != "STALE", "not stale")
    seen = hex32()
    sim.define_job(seen, init_ms=0, running_ms=600000)
    gate.get(path(seen))
    time.sleep(2.3)
    sim.fault(job=seen, kind="status", status=404, shape="elb", code="ELB.1002", count=1)
    r = gate.get(path(seen))
    eq(r.status, 404, "upstream's verdict, not the stale copy")


@test
def a_throttled_upstream_is_covered_by_the_stale_copy(env):
    """backing off after a 429: a job with a stale copy is answered STALE, one without gets 503"""
    sim = env["sim"]
    gate = gate_with(env, "gate", "  rate: 1000\n  burst: 1000\n  throttle_backoff: 3s\n")
    job = hex32()
    sim.define_job(job, init_ms=0, running_ms=600000)
    gate.get(path(job))
    time.sleep(2.3)
    other = hex32()
    sim.fault(job=other, kind="status", status=429, shape="apigw", code="APIGW.0308", count=1)
    gate.get(path(other))
    before = sim.total()
    r = gate.get(path(job))
    eq((r.status, r.header("x-cache")), (200, "STALE"), "stale while throttled")
    eq(gate.get(path(hex32())).status, 503, "no copy: 503")
    eq(sim.total(), before, "no upstream call")


@test
def a_429_for_the_job_itself_is_covered_by_its_stale_copy(env):
    """the job's own call answered 429: a failed call, so 200 X-Cache STALE with the last body, not the mapped 503"""
    sim = env["sim"]
    gate = gate_with(env, "gate", "  rate: 1000\n  burst: 1000\n  throttle_backoff: 3s\n")
    job = hex32()
    sim.define_job(job, init_ms=0, running_ms=600000)
    first = gate.get(path(job))
    eq(first.json()["status"], "RUNNING", "first answer")
    time.sleep(2.3)  # past the 2 s TTL
    sim.fault(job=job, kind="status", status=429, shape="apigw", code="APIGW.0308", count=1)
    before = sim.count(job)
    r = gate.get(path(job))
    eq(sim.count(job) - before, 1, "the call was made and answered 429")
    eq((r.status, r.header("x-cache")), (200, "STALE"), "a 429 is a failed call: served stale")
    eq(r.body, first.body, "the stale copy is the last answer")
    r = gate.get(path(hex32()))
    eq((r.status, r.error()["code"]), (503, "JG.UPSTREAM_THROTTLED"), "no copy: 503 while backing off")


if __name__ == "__main__":
    run(setup, teardown)
