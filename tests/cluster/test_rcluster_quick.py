#!/usr/bin/env python3
"""The Redis Cluster scenario (tests/cluster/run rcluster) at a small size,
as a `make check` test: a real cluster of 3 masters and 3 replicas that the
test builds (redis-server --cluster-enabled yes, redis-cli --cluster create),
3 jobgate instances on cluster://: one upstream call per job once terminal
across the instances (leases coalesce on every master), terminal answers on
all 3 masters, and kill -9 of a master under load (no answer outside the
documented table; caching resumes once its replica took over: the time is
printed). Then the same cluster TLS-only (clients, bus, replication; a CA
made by the test) with requirepass/masterauth, without the kill. About
30 s on an idle machine."""
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
def redis_cluster_failover():
    """3 jobgate on a 3+3 Redis Cluster: one upstream call per job, answers on every master, kill -9 of a master"""
    # A 250 ms Redis budget: make check runs tests in parallel, under sanitizers.
    passes(clusterlib.rcluster(jobs=24, redis_budget="250ms"))


@test
def redis_cluster_tls_with_password():
    """the same cluster over TLS with requirepass and masterauth: every node verified and AUTHed, no password shown"""
    passes(clusterlib.rcluster(jobs=24, redis_budget="250ms", password="rc-secret-7d2f91a4", tls=True, kill=False))


if __name__ == "__main__":
    run()
