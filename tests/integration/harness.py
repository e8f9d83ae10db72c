"""Integration-test harness for jobgate: real processes, real sockets.

Each test file starts what it needs -- a real redis-server on a free loopback
port, the job-API simulator (tests/sim/jobsim), and proxy/jobgate with an
inline configuration -- drives them over HTTP and asserts on status, headers,
body, Redis contents and the simulator's request counts. Output is TAP, so
the automake test driver counts every test.

The processes, the HTTP client and the simulator's control API are the
shared test support of tests/lib (procs.py, client.py, sim.py), re-exported
here; this file adds what is the integration tests' own: the documented
status table, the client token, and the TAP runner. Every process is
registered for teardown when it is spawned: run() stops whatever still runs
after a test file's teardown, so a set-up that fails half-way leaves
nothing behind (tests/integration/test_teardown.py).

Paths come from the environment set by `make check` (JOBGATE_BIN,
JOBSIM_BIN, JOBGATE_SRCDIR, REDIS_SERVER, OPENSSL_BIN); nothing is mocked.
`make valgrind` also sets JOBGATE_WRAPPER and JOBGATE_TIME_SCALE
(tests/lib/procs.py).
"""
import os
import re
import secrets
import sys
import time
import traceback

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import client  # noqa: E402
import procs  # noqa: E402
from client import Response, concurrent_get  # noqa: E402,F401
from procs import (JOBGATE_BIN, JOBGATE_WRAPPER, JOBSIM_BIN, OPENSSL, REDIS_CLI, REDIS_SERVER, SEED_RULE,  # noqa: E402,F401
                   SRCDIR, TIME_SCALE, WRAPPER_ERROR_EXIT, Redis, TestFailure, check, check_wrapper_report, eq,
                   free_port, hex32, jobgate_command, rule_file, wait_port, wait_until)
from sim import Sim  # noqa: E402,F401


def _documented_statuses():
    """The rows X(status, "reason") of STATUSES_DOCUMENTED in proxy/statuses.h: the table's one copy."""
    with open(os.path.join(SRCDIR, "proxy", "statuses.h")) as f:
        table = re.search(r"#define STATUSES_DOCUMENTED\(X\)((?:.*\\\n)*.*)", f.read())
    statuses = frozenset(int(s) for s in re.findall(r"X\((\d{3}),", table.group(1)))
    if 200 not in statuses or len(statuses) < 2:
        raise RuntimeError("cannot read the documented status table from proxy/statuses.h")
    return statuses


# The documented status table: nothing else may reach a client.
DOCUMENTED = _documented_statuses()

TOKEN = "test-token-" + secrets.token_hex(8)


class Jobgate(procs.Jobgate):
    """proxy/jobgate with an inline configuration (tests/lib/procs.py);
    get() sends the tests' token unless told otherwise."""

    token = TOKEN


def request(port, path, method="GET", headers=None, body=None, timeout=15.0, token=TOKEN):
    """One HTTP request on a fresh connection."""
    return client.request(port, path, method=method, headers=headers, body=body, timeout=timeout, token=token)


def assert_documented_error(r, what="", shape=None):
    """An error answer: a documented status, JSON in one of the two shapes the
    official SDKs read (apigw {"error_code","error_msg"} or elb {"error":
    {"code","message"}}; `shape` when given: that one) with string code and
    message. Returns it normalized: {"code", "message", "request_id"?, "shape"}."""
    check(r.status in DOCUMENTED and r.status != 200, "%s: status %d outside the documented table" % (what, r.status))
    eq(r.header("content-type"), "application/json;charset=UTF-8", what + " content-type")
    try:
        doc = r.error()
    except ValueError as e:
        raise TestFailure("%s: error body is not a JSON error in the apigw or elb shape: %s %r"
                          % (what, e, r.body[:200]))
    if shape is not None:
        eq(doc["shape"], shape, what + " error shape")
    check(isinstance(doc.get("code"), str) and doc["code"], "%s: no string code in %r" % (what, doc))
    check(isinstance(doc.get("message"), str) and doc["message"], "%s: no string message in %r" % (what, doc))
    return doc


def stop_all(env):
    """Teardown for a test file: stop every process in `env` (values, or
    dicts of them), jobgates first, each checked for a clean exit."""
    found = []
    for value in (env or {}).values():
        found.extend(value.values() if isinstance(value, dict) else [value])
    procs.stop_each(p for p in found if isinstance(p, procs.Process))


def seed_path(project, job):
    """The seed API's job path (classic ELB)."""
    return "/v1.0/%s/jobs/%s" % (project, job)


def cache_key(project, job, slot=None, rule="elb-v1"):
    """A job's key in Redis as proxy/cachekey.c writes it with the default
    prefix: jobgate:{RULE:PROJECT:JOB}, one hash tag for all of a job's keys
    (Redis Cluster), then ":t", ":p" or ":l" when `slot` is given."""
    base = "jobgate:{%s:%s:%s}" % (rule, project, job)
    return "%s:%s" % (base, slot) if slot else base


# ----------------------------------------------------------------------- TAP

_tests = []


def test(fn):
    _tests.append(fn)
    return fn


def test_files(folder, suffix, load, error, run_case, label):
    """One @test per file FOLDER/*SUFFIX, in name order (curl-style data
    cases: a new case is a new file). load(path) reads a case, raising
    `error` for a malformed file, which then fails its own test point with
    that message; run_case(env, case) runs one. Returns the paths."""
    import glob
    paths = sorted(glob.glob(os.path.join(folder, "*" + suffix)))
    for path in paths:
        try:
            case = load(path)
            fn = (lambda case: lambda env: run_case(env, case))(case)
            fn.__doc__ = case.what
        except error as e:
            fn = (lambda e: lambda env: (_ for _ in ()).throw(e))(e)
        fn.__name__ = label + " " + os.path.basename(path)[:-len(suffix)]
        test(fn)
    return paths


def run(setup=None, teardown=None):
    """Run every @test in order as TAP, then teardown as one more test (every
    process must exit cleanly: sanitizer reports and leaks fail it).
    setup() returns an env passed to each test and to teardown; whatever
    was started and is still running after teardown is stopped too, even
    when setup() failed."""
    total = len(_tests) + 1
    print("1..%d" % total, flush=True)
    env = None
    failed = 0
    try:
        env = setup() if setup else None
    except Exception:
        print("# setup failed:")
        for line in traceback.format_exc().splitlines():
            print("# " + line)
        for i, fn in enumerate(_tests, 1):
            print("not ok %d - %s # setup failed" % (i, fn.__name__))
        failed = len(_tests)
        env = env or {}
    else:
        for i, fn in enumerate(_tests, 1):
            doc = (fn.__doc__ or "").strip().splitlines()
            label = fn.__name__ + (" - " + doc[0] if doc else "")
            started = time.time()
            try:
                fn(env) if setup else fn()
                print("ok %d - %s (%.2fs)" % (i, label, time.time() - started), flush=True)
            except Exception:
                failed += 1
                print("not ok %d - %s" % (i, label), flush=True)
                for line in traceback.format_exc().splitlines():
                    print("# " + line)
                sys.stdout.flush()
    try:
        try:
            if teardown:
                teardown(env)
        finally:
            # Whatever teardown did not stop (a set-up that failed half-way, a
            # process a test left running) is stopped and checked here.
            procs.stop_started()
        print("ok %d - teardown: every process exits cleanly" % total, flush=True)
    except Exception:
        failed += 1
        print("not ok %d - teardown: every process exits cleanly" % total)
        for line in traceback.format_exc().splitlines():
            print("# " + line)
    sys.stdout.flush()
    sys.exit(1 if failed else 0)
