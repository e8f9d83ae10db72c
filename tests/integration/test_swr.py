#!/usr/bin/env python3
"""pending_swr (stale-while-revalidate for still-changing answers): just after
a pending answer's TTL runs out, pollers get the previous state at once
(X-Cache: STALE, with Age) while one background call refreshes it; a terminal
state from that call ends it; past one extra TTL, and with the option off,
pollers wait for the upstream as before."""
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from harness import cache_key, Jobgate, Redis, Sim, check, eq, hex32, rule_file, run, seed_path, stop_all, test, wait_until

PROJECT = hex32()
TTL = 2.0  # the shipped rule's pending_ttl
DELAY_MS = 1500  # how late the upstream answers the refresh


def setup():
    env = {"tmp": tempfile.mkdtemp(prefix="jg-swr-")}
    env["redis"] = Redis().start()
    env["redis_off"] = Redis().start()
    env["sim"] = Sim(init_ms=0, running_ms=600000).start()
    swr = rule_file(env["tmp"], **{"  pending_ttl: 2s": "  pending_swr: true\n  pending_ttl: 2s"})
    env["gate"] = Jobgate(env["sim"].url, redis=env["redis"], rules=[swr]).start()
    env["gate_off"] = Jobgate(env["sim"].url, redis=env["redis_off"]).start()
    return env


teardown = stop_all


def path(job):
    return seed_path(PROJECT, job)


def timed_get(gate, job):
    t0 = time.monotonic()
    r = gate.get(path(job))
    return r, t0, time.monotonic()


def crowd(gate, job, n=20):
    """n concurrent polls: [(answer, sent, answered)]"""
    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(lambda _: timed_get(gate, job), range(n)))


@test
def polls_after_ttl_get_old_state_at_once_and_one_call(env):
    """20 polls just past the TTL: all STALE RUNNING with Age >= 2, without waiting on a 1.5 s upstream; 1 call"""
    gate, sim = env["gate"], env["sim"]
    job = hex32()
    sim.define_job(job, init_ms=0, running_ms=600000)
    eq(gate.get(path(job)).header("x-cache"), "MISS", "first poll")
    time.sleep(TTL + 0.3)
    sim.fault(job, kind="delay", delay_ms=DELAY_MS)
    answers = crowd(gate, job)
    for r, sent, answered in answers:
        took = answered - sent
        eq(r.status, 200, "status")
        eq(r.header("x-cache"), "STALE", "X-Cache just past the TTL")
        eq(r.json()["status"], "RUNNING", "state")
        check(int(r.header("age")) >= 2, "Age %s: the copy is past its 2 s TTL" % r.header("age"))
        check(took < DELAY_MS / 1000.0, "a poll waited %.3f s: it waited on the upstream" % took)
    # Exactly one refresh reached the upstream, and its answer is stored fresh.
    wait_until(lambda: sim.count(job) == 2, timeout=5, what="the background refresh")
    wait_until(lambda: gate.get(path(job)).header("x-cache") == "HIT", timeout=5, what="the refreshed copy")
    eq(sim.count(job), 2, "upstream calls: the first poll and one refresh")


@test
def terminal_state_from_refresh_ends_revalidation(env):
    """the refresh brings SUCCESS: cached for good, later polls HIT it, no further upstream call"""
    gate, sim = env["gate"], env["sim"]
    job = hex32()
    sim.define_job(job, init_ms=0, running_ms=int(TTL * 1000) + 300)
    eq(gate.get(path(job)).json()["status"], "RUNNING", "first poll")
    time.sleep(TTL + 0.8)  # the job has finished; the copy is past its TTL, within one more
    r = gate.get(path(job))
    eq(r.header("x-cache"), "STALE", "X-Cache")
    eq(r.json()["status"], "RUNNING", "the previous state, one poll late")
    wait_until(lambda: gate.get(path(job)).json()["status"] == "SUCCESS", timeout=5, what="SUCCESS from the refresh")
    eq(sim.count(job), 2, "upstream calls")
    time.sleep(2 * TTL + 0.3)  # past any pending TTL and its revalidation bound
    r = gate.get(path(job))
    eq((r.header("x-cache"), r.json()["status"]), ("HIT", "SUCCESS"), "the terminal answer, for good")
    eq(env["redis"].cli("TTL", cache_key(PROJECT, job, "t")), "-1", "terminal entry's TTL")
    eq(sim.count(job), 2, "upstream calls after SUCCESS")


@test
def past_one_extra_ttl_pollers_wait_as_before(env):
    """a copy more than one TTL past its TTL is not served at once: MISS, from the upstream"""
    gate, sim = env["gate"], env["sim"]
    job = hex32()
    sim.define_job(job, init_ms=0, running_ms=600000)
    gate.get(path(job))
    time.sleep(2 * TTL + 0.4)
    eq(gate.get(path(job)).header("x-cache"), "MISS", "X-Cache")
    eq(sim.count(job), 2, "upstream calls")


@test
def off_pollers_wait_for_the_upstream(env):
    """pending_swr off (the default): polls just past the TTL wait for one shared upstream call (MISS)"""
    gate, sim = env["gate_off"], env["sim"]
    job = hex32()
    sim.define_job(job, init_ms=0, running_ms=600000)
    eq(gate.get(path(job)).header("x-cache"), "MISS", "first poll")
    time.sleep(TTL + 0.3)
    sim.fault(job, kind="delay", delay_ms=DELAY_MS)
    answers = crowd(gate, job)
    for r, _, _ in answers:
        eq((r.status, r.header("x-cache")), (200, "MISS"), "status and X-Cache")
    # None is answered before the upstream's delayed answer (counted from the first poll sent).
    first_sent = min(sent for _, sent, _ in answers)
    first_answer = min(answered for _, _, answered in answers)
    check(first_answer - first_sent >= DELAY_MS / 1000.0 - 0.1,
          "a poll was answered %.3f s after the first was sent: before the upstream" % (first_answer - first_sent))
    eq(sim.count(job), 2, "upstream calls: the first poll and one shared call")


if __name__ == "__main__":
    run(setup, teardown)
