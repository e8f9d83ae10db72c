#!/usr/bin/env python3
"""The cluster scenarios (tests/cluster/run) at a small size, as a `make
check` test: 3 jobgate instances on 3 redis-servers behind nutcracker, 30
clients polling 10 jobs through their lifecycle (one upstream call per job
once terminal, at most duration/TTL + 1 before, states in order, nothing
refused by nutcracker), and again with nutcracker's redis_auth; and 2 instances on Sentinel through a kill -9 of the
master (no failed request, caching resumes on the new master). Skipped when
nutcracker or redis-sentinel is not installed."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clusterlib  # noqa: E402
from harness import TestFailure, run, test  # noqa: E402


def passes(report):
    print("# " + report.markdown().replace("\n", "\n# "), flush=True)
    if not report.passed:
        raise TestFailure("; ".join(report.failures))


@test
def twemproxy():
    """3 jobgate on nutcracker and 3 redis-server: one upstream call per job state window"""
    # A 250 ms Redis budget: make check runs tests in parallel, under sanitizers.
    passes(clusterlib.twemproxy(clients=30, jobs=10, interval=0.1, tail_s=1.0, redis_budget="250ms"))


@test
def twemproxy_with_password():
    """the same behind nutcracker's redis_auth: jobgate AUTHs to nutcracker, never shows the password"""
    passes(clusterlib.twemproxy(clients=20, jobs=10, interval=0.1, tail_s=1.0, redis_budget="250ms",
                                password="tw-secret-5b1e07c2"))


@test
def sentinel():
    """2 jobgate on Sentinel: kill -9 of the master under load, no failed request, caching resumes"""
    passes(clusterlib.sentinel(clients=10, jobs=10, settle_s=1.0, after_s=1.0))


if __name__ == "__main__":
    missing = clusterlib.missing_tools()
    if missing:
        print("1..0 # SKIP %s not installed" % " and ".join(missing))
        sys.exit(0)
    run()
