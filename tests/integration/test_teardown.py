#!/usr/bin/env python3
"""The harness itself: no process outlives a test file. A set-up that fails
half-way (redis-server and jobsim started, then a jobgate whose
configuration it refuses) still stops what it started, and so does a test
script that dies on an uncaught exception.

Each case runs a child test script (this file with --child MODE), which
writes the pids it started to a file before failing; the parent checks the
child's TAP output and that every one of those pids is gone."""
import atexit
import os
import subprocess
import sys
import tempfile
import time

import harness
import procs
from harness import Jobgate, Redis, Sim, check, eq, run, stop_all, test


def gone(pid):
    """The process no longer exists (exited and reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open("/proc/%d/stat" % pid) as f:  # a zombie is dead too
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def start_then_fail(pid_file):
    """Start redis-server and jobsim, note their pids, then a jobgate whose
    configuration has an unknown key: its start raises."""
    redis = Redis().start()
    sim = Sim().start()
    with open(pid_file, "w") as f:
        f.write("%d %d\n" % (redis.pid, sim.pid))
    gate = Jobgate(sim.url, redis=redis, extra_config="no_such_setting: 1\n")
    with open(pid_file, "a") as f:
        try:
            gate.start()
        finally:
            f.write("%d\n" % gate.pid)


def child(mode, pid_file):
    if mode == "setup":
        del harness._tests[:]  # the child runs its own test, not the parent's
        # Without the kill at exit (the other case's safety net): only run()'s teardown stops them.
        atexit.unregister(procs._kill_leftovers)
        @test
        def never_runs(env):
            """set-up failed: this test never runs"""

        run(lambda: start_then_fail(pid_file), stop_all)
    elif mode == "crash":
        start_then_fail(pid_file)  # the exception ends the script outside run()


def run_child(mode):
    """(exit code, TAP output, pids the child started)."""
    fd, pid_file = tempfile.mkstemp(prefix="jg-teardown-")
    os.close(fd)
    try:
        p = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", mode, pid_file],
                           capture_output=True, timeout=60)
        with open(pid_file) as f:
            pids = [int(w) for w in f.read().split()]
    finally:
        os.unlink(pid_file)
    return p.returncode, p.stdout.decode(errors="replace") + p.stderr.decode(errors="replace"), pids


def all_gone(pids):
    deadline = time.time() + 5
    while time.time() < deadline and not all(gone(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if not gone(p)]


@test
def failed_setup_stops_what_it_started():
    """set-up fails after redis-server and jobsim started: both stopped, teardown ok"""
    rc, out, pids = run_child("setup")
    eq(len(pids), 3, "pids noted (redis-server, jobsim, jobgate):\n" + out)
    check("not ok 1 - never_runs # setup failed" in out, "the test is reported as not run:\n" + out)
    check("ok 2 - teardown: every process exits cleanly" in out, "teardown reported:\n" + out)
    check("exited with 1 before listening" in out, "jobgate refused its configuration:\n" + out)
    check(rc != 0, "the failed set-up failed the test file")
    eq(all_gone(pids), [], "processes still running after the child's teardown")


@test
def uncaught_exception_stops_what_it_started():
    """a test script dying on an exception outside run(): its processes are killed at exit"""
    rc, out, pids = run_child("crash")
    check(rc != 0 and "TestFailure" in out, "the child died on the failed start:\n" + out)
    eq(len(pids), 3, "pids noted")
    eq(all_gone(pids), [], "processes still running after the child exited")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3])
    else:
        run()
