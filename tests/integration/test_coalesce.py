#!/usr/bin/env python3
"""Request coalescing and its bounds: a burst of misses on one job costs one
upstream call; a client that hangs up while waiting is forgotten at once and
never written to; a key holds at most coalesce.max_waiters requests; a waiter
is answered 504 after coalesce.max_wait (or the stale copy, when there is one)
while the call goes on and its answer is cached. Every assertion is a count,
never a timing."""
import re
import socket
import time

from harness import (Jobgate, Redis, Sim, check, concurrent_get, eq, hex32, request, run, seed_path, stop_all, test,
                     wait_until)

PROJECT = hex32()


def setup():
    env = {}
    env["redis"] = Redis().start()
    env["sim"] = Sim(init_ms=0, running_ms=0).start()
    env["gate"] = Jobgate(env["sim"].url, redis=env["redis"],
                          extra_config="coalesce:\n  max_waiters: 6\n  max_wait: 2500ms\n").start()
    return env


teardown = stop_all


def path(job):
    return seed_path(PROJECT, job)


def event_count(gate, name):
    text = gate.get("/metrics", token=None).body.decode()
    m = re.search(r'jobgate_events_total\{event="%s"\} (\d+)' % name, text)
    check(m, "metric for %s in /metrics" % name)
    return int(m.group(1))


def burst(gate, job, n):
    """n concurrent requests for one job; returns their responses."""
    return concurrent_get(gate, [path(job)] * n, timeout=20)


def raw_request(gate, job):
    """Send a request on a raw socket and return the socket, unread."""
    s = socket.create_connection(("127.0.0.1", gate.port))
    s.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Auth-Token: t\r\n\r\n" % path(job)).encode())
    return s


@test
def a_burst_costs_one_upstream_call(env):
    """6 concurrent misses on a slow job: one upstream call, six 200 answers"""
    gate, sim = env["gate"], env["sim"]
    job = hex32()
    sim.fault(job=job, kind="delay", delay_ms=400)
    answers = burst(gate, job, 6)
    eq(sorted(r.status for r in answers), [200] * 6, "statuses")
    eq(sorted(r.header("x-cache") for r in answers), ["MISS"] * 6, "X-Cache")
    eq(sim.count(job), 1, "upstream requests")


@test
def waiters_beyond_the_bound_get_503(env):
    """10 concurrent misses with max_waiters 6: 6 answered 200, 4 answered 503 with Retry-After"""
    gate, sim = env["gate"], env["sim"]
    job = hex32()
    sim.fault(job=job, kind="delay", delay_ms=500)
    before = event_count(gate, "waiter_overflow")
    answers = burst(gate, job, 10)
    statuses = sorted(r.status for r in answers)
    eq(statuses, [200] * 6 + [503] * 4, "statuses")
    for r in answers:
        if r.status == 503:
            eq(r.error()["code"], "JG.TOO_MANY_WAITERS", "code")
            eq(r.header("retry-after"), "1", "Retry-After")
    eq(event_count(gate, "waiter_overflow") - before, 4, "overflow events")
    eq(sim.count(job), 1, "upstream requests")


@test
def a_client_that_hangs_up_is_unlinked_at_once(env):
    """4 of 6 waiters close their connections: counted as gone at once, the other 2 get 200, one upstream call"""
    gate, sim = env["gate"], env["sim"]
    job = hex32()
    sim.fault(job=job, kind="delay", delay_ms=1500)
    before = event_count(gate, "waiter_gone")
    socks = [raw_request(gate, job) for _ in range(6)]
    wait_until(lambda: sim.count(job) == 1, 5, "the upstream call started")
    for s in socks[:4]:
        s.close()
    # Counted while the upstream call is still out: unlinked at once, not when the answer comes.
    wait_until(lambda: event_count(gate, "waiter_gone") - before == 4, 1.2, "4 waiters gone")
    in_flight = gate.get("/healthz", token=None).json()["in_flight"]
    eq(in_flight, 2, "requests still in flight")
    for s in socks[4:]:
        s.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            check(chunk, "connection closed before an answer")
            data += chunk
        check(data.startswith(b"HTTP/1.1 200"), "answer %r" % data[:40])
        s.close()
    eq(sim.count(job), 1, "upstream requests")
    # The call went on: its answer was cached for the next poller.
    r = gate.get(path(job))
    eq((r.status, r.header("x-cache")), (200, "HIT"), "next poll")
    eq(sim.count(job), 1, "upstream requests after the hit")


@test
def a_waiter_past_max_wait_gets_504_and_the_answer_is_still_cached(env):
    """upstream answers after 3.5 s, max_wait is 2.5 s: 3 waiters get 504; the answer is cached when it comes"""
    gate, sim = env["gate"], env["sim"]
    job = hex32()
    sim.fault(job=job, kind="delay", delay_ms=3500)
    before = event_count(gate, "waiter_timeout")
    answers = burst(gate, job, 3)
    eq([r.status for r in answers], [504] * 3, "statuses")
    for r in answers:
        check(r.error().get("code"), "a code in the 504 body")
    eq(event_count(gate, "waiter_timeout") - before, 3, "timeout events")
    wait_until(lambda: gate.get(path(job)).header("x-cache") == "HIT", 5, "the late answer cached")
    eq(sim.count(job), 1, "upstream requests")


@test
def a_waiter_past_max_wait_gets_the_stale_copy_when_there_is_one(env):
    """a RUNNING job past its 2 s TTL, upstream answers after 3.5 s, max_wait 2.5 s: 3 waiters get 200 STALE, not 504"""
    gate, sim = env["gate"], env["sim"]
    job = hex32()
    sim.define_job(job, init_ms=0, running_ms=600000)
    first = gate.get(path(job))
    eq((first.status, first.json()["status"]), (200, "RUNNING"), "first answer")
    time.sleep(2.3)  # past the 2 s TTL, within stale_ttl
    sim.fault(job=job, kind="delay", delay_ms=3500, count=1)
    before = event_count(gate, "waiter_timeout")
    answers = burst(gate, job, 3)
    eq([(r.status, r.header("x-cache")) for r in answers], [(200, "STALE")] * 3, "statuses")
    for r in answers:
        eq(r.body, first.body, "the stale copy is the last answer")
    eq(event_count(gate, "waiter_timeout") - before, 3, "timeout events")
    wait_until(lambda: gate.get(path(job)).header("x-cache") == "HIT", 5, "the late answer cached")
    eq(sim.count(job), 2, "upstream requests")


if __name__ == "__main__":
    run(setup, teardown)
