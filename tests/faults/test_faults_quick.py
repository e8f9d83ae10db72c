#!/usr/bin/env python3
"""The quickest rows of the fault suite (tests/faults/run), as a `make check`
test: Redis killed with -9 and restarted, Redis blocked by DEBUG SLEEP,
SIGHUP every second and SIGTERM, each under a steady load. A row passes when
every answer is from the documented table, no request failed at the
connection level, upstream saw no more calls than allowed and no cached
entry disagrees with the simulator. (The rows that need the protections
being wired into the gateway, such as the 429 storm, are only in
tests/faults/run.)"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faultlib  # noqa: E402
from harness import TestFailure, run, test  # noqa: E402

DURATION = 8.0  # seconds of load per row: four rows stay well under a minute


def row_passes(name):
    row = faultlib.run_scenario(name, duration=DURATION)
    print("# " + faultlib.row_markdown(row), flush=True)
    if row["result"] != "PASS":
        raise TestFailure("%s: %s" % (name, "; ".join(row["failures"])))


@test
def redis_kill():
    """redis-server kill -9 and restart under load"""
    row_passes("redis-kill")


@test
def redis_sleep():
    """Redis blocked by DEBUG SLEEP 2 under load"""
    row_passes("redis-sleep")


@test
def sighup():
    """SIGHUP every second under load"""
    row_passes("sighup")


@test
def sigterm():
    """SIGTERM under load: every request sent before it is answered"""
    row_passes("sigterm")


if __name__ == "__main__":
    run()
