#!/usr/bin/env python3
"""A thousand clients polling one still-changing job, with wrk (the real
load generator the bench uses): jobgate stays up and answers every request
from the documented table.

Why: an earlier version of the inline answer write (frontend.c on_output)
told evhttp "written" from inside the output buffer's callback; under 1000
connections polling one RUNNING job that crashed jobgate within a few 5 s
runs (a use after free in libevent's callbacks; ASan in CI reports it at
once). Every answer of such a poll is a coalesced wait or a hit, written
while many others are: the pattern that found it. The assertions are
counts (wrk's own report, the process alive), never a rate."""
import re
import resource
import shutil
import subprocess

from harness import TOKEN, Jobgate, Redis, Sim, check, eq, hex32, run, seed_path, stop_all, test

PROJECT = hex32()
CLIENTS = 1000
ROUNDS = 3


def setup():
    # wrk and jobgate each hold a thousand sockets (and jobgate its upstream
    # and Redis ones): lift the soft limit for the children.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    env = {}
    env["redis"] = Redis().start()
    # The job stays RUNNING for the whole test: each time its pending TTL
    # (the rule's 2 s) runs out, one call goes upstream while the others
    # wait on it.
    env["sim"] = Sim(init_ms=0, running_ms=600000).start()
    env["gate"] = Jobgate(env["sim"].url, redis=env["redis"]).start()
    return env


teardown = stop_all


def wrk(gate, path, seconds):
    """wrk's report of one run against `path`."""
    out = subprocess.run(["wrk", "-t2", "-c%d" % CLIENTS, "-d%ds" % seconds, "--timeout", "10s", "-H",
                          "X-Auth-Token: " + TOKEN, "http://127.0.0.1:%d%s" % (gate.port, path)],
                         capture_output=True, text=True, timeout=seconds + 60)
    eq(out.returncode, 0, "wrk's exit status (%s)" % out.stderr.strip())
    return out.stdout


def count(report, pattern):
    m = re.search(pattern, report)
    return int(m.group(1)) if m else 0


@test
def a_thousand_pollers_of_one_running_job(env):
    """1000 connections poll one RUNNING job, 3 runs of 4 s: jobgate stays up, every answer a 200"""
    check(shutil.which("wrk"), "wrk is installed (Debian package wrk; .ci/install-deps installs it)")
    gate = env["gate"]
    job = hex32()
    env["sim"].define_job(job, init_ms=0, running_ms=600000)
    total = 0
    for i in range(ROUNDS):
        report = wrk(gate, seed_path(PROJECT, job), 4)
        requests = count(report, r"(\d+) requests in")
        non2xx = count(report, r"Non-2xx or 3xx responses: (\d+)")
        print("# run %d: %d requests, %d not 2xx; %s" % (i + 1, requests, non2xx,
                                                         " ".join(report.split("Socket errors:")[1:]).strip()
                                                         or "no socket errors"))
        check(gate.running(), "jobgate still running after run %d" % (i + 1))
        check(requests > 0, "run %d: answers at all" % (i + 1))
        eq(non2xx, 0, "run %d: answers other than 200" % (i + 1))
        total += requests
    # The pollers are answered from the cache and its coalesced waits: the
    # upstream saw about one call per pending TTL, not one per request.
    calls = env["sim"].count(job)
    print("# %d requests in all, %d upstream calls" % (total, calls))
    check(calls * 20 < total, "upstream calls (%d) a small share of the requests (%d)" % (calls, total))
    eq(gate.get(seed_path(PROJECT, job)).status, 200, "a request after the runs")


if __name__ == "__main__":
    run(setup, teardown)
