#!/usr/bin/env python3
"""--workers N: N worker processes under one supervisor, each with its own
SO_REUSEPORT socket on the same port; connections spread over them; a worker
that dies is restarted; SIGHUP reaches every worker; SIGTERM stops them all
and the supervisor exits 0."""
import os
import signal
import threading
import time

from harness import Jobgate, Redis, Sim, check, eq, hex32, run, seed_path, stop_all, test, wait_until

PROJECT = hex32()


def setup():
    env = {}
    env["redis"] = Redis().start()
    env["sim"] = Sim(init_ms=0, running_ms=0).start()
    env["gate"] = Jobgate(env["sim"].url, redis=env["redis"], extra_config="workers: 3\n", upstream_token="cloud-token").start()
    return env


teardown = stop_all


def children(pid):
    with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
        return sorted(int(p) for p in f.read().split())


def answering_pids(gate, n=60):
    return {gate.admin("/healthz").json()["pid"] for _ in range(n)}


@test
def three_workers_share_the_port(env):
    """the supervisor has 3 children; 60 connections reach more than one of them, never the supervisor"""
    gate = env["gate"]
    wait_until(lambda: len(children(gate.proc.pid)) == 3, 10, "3 workers")
    pids = answering_pids(gate)
    check(len(pids) >= 2, "connections spread over the workers: %r" % pids)
    check(pids <= set(children(gate.proc.pid)), "only workers answer: %r" % pids)


@test
def every_worker_serves_jobs_from_the_shared_cache(env):
    """a job fetched by one worker is a hit for the others: one upstream call for 30 polls"""
    gate, sim = env["gate"], env["sim"]
    job = hex32()
    first = gate.get(seed_path(PROJECT, job))
    eq(first.status, 200, "first answer")
    for _ in range(30):
        r = gate.get(seed_path(PROJECT, job))
        eq((r.status, r.header("x-cache")), (200, "HIT"), "later answers")
    eq(sim.count(job), 1, "upstream requests")


@test
def workers_missing_one_job_at_once_make_one_upstream_call(env):
    """30 concurrent misses on one slow job, spread over 3 workers: one upstream call (the Redis lease), 30 answers"""
    gate, sim = env["gate"], env["sim"]
    job = hex32()
    sim.fault(job=job, kind="delay", delay_ms=800)
    answers = [None] * 30
    pids = set()

    def one(i):
        answers[i] = gate.get(seed_path(PROJECT, job), timeout=20)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(30)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):  # meanwhile, which workers take connections
        pids.add(gate.admin("/healthz").json()["pid"])
    for t in threads:
        t.join()
    eq(sorted(r.status for r in answers), [200] * 30, "statuses")
    check(len(pids) >= 2, "the load reached several workers: %r" % pids)
    eq(sim.count(job), 1, "upstream requests")
    eq(gate.admin("/healthz").json()["cache"]["coalescing"], "pubsub", "across workers by pub/sub")


@test
def a_dead_worker_is_restarted(env):
    """kill -9 one worker: a new one takes its place and the port keeps answering"""
    gate = env["gate"]
    before = children(gate.proc.pid)
    os.kill(before[0], signal.SIGKILL)
    wait_until(lambda: len(children(gate.proc.pid)) == 3 and before[0] not in children(gate.proc.pid), 10,
               "a replacement worker")
    for _ in range(20):
        eq(gate.admin("/healthz").status, 200, "healthz")
    check("killed by signal 9" in gate.log_text(), "the death is logged")


@test
def sighup_reaches_every_worker(env):
    """SIGHUP to the supervisor: each of the 3 workers logs its reload"""
    gate = env["gate"]
    before = gate.log_text().count("reloaded ")
    os.kill(gate.proc.pid, signal.SIGHUP)
    wait_until(lambda: gate.log_text().count("reloaded ") - before == 3, 10, "3 reloads")


@test
def sigterm_stops_every_worker(env):
    """SIGTERM: every worker exits, the supervisor exits 0"""
    gate = env["gate"]
    workers = children(gate.proc.pid)
    gate.stop()
    for pid in workers:
        check(not os.path.exists("/proc/%d" % pid) or open("/proc/%d/stat" % pid).read().split()[2] == "Z",
              "worker %d gone" % pid)


if __name__ == "__main__":
    run(setup, teardown)
