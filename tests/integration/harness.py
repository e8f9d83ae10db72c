"""Integration-test harness for jobgate: real processes, real sockets.

Each test file starts what it needs -- a real redis-server on a free loopback
port, the job-API simulator (tests/sim/jobsim), and proxy/jobgate with an
inline configuration -- drives them over HTTP and asserts on status, headers,
body, Redis contents and the simulator's request counts. Output is TAP, so
the automake test driver counts every test.

Paths come from the environment set by `make check` (JOBGATE_BIN,
JOBSIM_BIN, JOBGATE_SRCDIR, REDIS_SERVER, OPENSSL_BIN); nothing is mocked.

`make valgrind` (tests/valgrind/run) also sets JOBGATE_WRAPPER, a command put
in front of every jobgate the harness starts (valgrind memcheck, exiting 99
on an error), and JOBGATE_TIME_SCALE, a factor on the harness's waits for
jobgate to start and to exit.
"""
import http.client
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

SRCDIR = os.environ.get("JOBGATE_SRCDIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
JOBGATE_BIN = os.environ.get("JOBGATE_BIN", os.path.join(SRCDIR, "proxy", "jobgate"))
JOBSIM_BIN = os.environ.get("JOBSIM_BIN", os.path.join(SRCDIR, "tests", "sim", "jobsim"))
REDIS_SERVER = os.environ.get("REDIS_SERVER") or shutil.which("redis-server") or "redis-server"
REDIS_CLI = shutil.which("redis-cli") or "redis-cli"
OPENSSL = os.environ.get("OPENSSL_BIN") or shutil.which("openssl") or "openssl"
SEED_RULE = os.path.join(SRCDIR, "lua-free-rules", "elb-v1.yaml")
JOBGATE_WRAPPER = shlex.split(os.environ.get("JOBGATE_WRAPPER", ""))
TIME_SCALE = float(os.environ.get("JOBGATE_TIME_SCALE") or 1)
WRAPPER_ERROR_EXIT = 99  # valgrind --error-exitcode in tests/valgrind/run


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


class TestFailure(AssertionError):
    pass


def check(cond, what):
    if not cond:
        raise TestFailure(what)


def eq(actual, expected, what=""):
    if actual != expected:
        raise TestFailure("%s: expected %r, got %r" % (what or "value", expected, actual))


def hex32():
    return secrets.token_hex(16)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10.0, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise TestFailure("process exited with %s before listening on %d" % (proc.returncode, port))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TestFailure("nothing listening on port %d after %.0fs" % (port, timeout))


def wait_until(cond, timeout=10.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise TestFailure("timed out waiting for " + what)


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # lower-case names
        self.body = body

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def header(self, name):
        return self.headers.get(name.lower())

    def __repr__(self):
        return "<%d %r %r>" % (self.status, self.headers, self.body[:200])


def request(port, path, method="GET", headers=None, body=None, timeout=15.0, token=TOKEN):
    """One HTTP request on a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        h = {}
        if token is not None:
            h["X-Auth-Token"] = token
        h.update(headers or {})
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
    finally:
        conn.close()


def assert_documented_error(r, what=""):
    """An error answer: a documented status, JSON with string code and message."""
    check(r.status in DOCUMENTED and r.status != 200, "%s: status %d outside the documented table" % (what, r.status))
    eq(r.header("content-type"), "application/json;charset=UTF-8", what + " content-type")
    try:
        doc = r.json()
    except ValueError:
        raise TestFailure("%s: error body is not JSON: %r" % (what, r.body[:200]))
    check(isinstance(doc.get("code"), str) and doc["code"], "%s: no string code in %r" % (what, doc))
    check(isinstance(doc.get("message"), str) and doc["message"], "%s: no string message in %r" % (what, doc))
    return doc


# ------------------------------------------------------------------ processes


class Redis:
    def __init__(self, port=None):
        self.port = port or free_port()
        self.proc = None
        self.dir = tempfile.mkdtemp(prefix="jg-redis-")

    def start(self):
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", self.dir, "--daemonize", "no", "--loglevel", "warning", "--enable-debug-command", "local"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, proc=self.proc)
        wait_until(lambda: self.cli("PING") == "PONG", 5, "redis PING")
        return self

    def cli(self, *args):
        out = subprocess.run([REDIS_CLI, "-p", str(self.port), "--raw"] + [str(a) for a in args],
                             capture_output=True, timeout=10)
        return out.stdout.decode("utf-8", "replace").strip()

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self):
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class Sim:
    """The job-API simulator (tests/sim/jobsim)."""

    def __init__(self, init_ms=1000, running_ms=2000, tls=None, api=None):
        self.port = free_port()
        self.api = api  # jobsim --api: which job API's shape it plays
        self.init_ms = init_ms
        self.running_ms = running_ms
        self.tls = tls  # (cert, key) or None
        self.proc = None
        self.log = tempfile.NamedTemporaryFile(prefix="jg-sim-", suffix=".log", delete=False)

    @property
    def url(self):
        return "%s://%s:%d" % ("https" if self.tls else "http", "localhost" if self.tls else "127.0.0.1", self.port)

    def start(self):
        args = [JOBSIM_BIN, "--listen", "127.0.0.1:%d" % self.port, "--init-ms", str(self.init_ms),
                "--running-ms", str(self.running_ms), "--quiet"]
        if self.tls:
            args += ["--tls-cert", self.tls[0], "--tls-key", self.tls[1]]
        if self.api:
            args += ["--api", self.api]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self.log)
        wait_port(self.port, proc=self.proc)
        return self

    def _control(self, method, path):
        if self.tls:
            import ssl
            ctx = ssl.create_default_context(cafile=self.tls[2]) if len(self.tls) > 2 else ssl._create_unverified_context()
            conn = http.client.HTTPSConnection("localhost", self.port, timeout=10, context=ctx)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path)
            r = conn.getresponse()
            data = r.read()
            check(r.status == 200, "simulator %s %s answered %d %r" % (method, path, r.status, data))
            return json.loads(data) if data else None
        finally:
            conn.close()

    def define_job(self, job, init_ms=None, running_ms=None, final="SUCCESS", **extra):
        """extra: sub_jobs, sub_lag_ms, init_state (see jobsim's control API)."""
        q = "final=%s" % final
        if init_ms is not None:
            q += "&init_ms=%d" % init_ms
        if running_ms is not None:
            q += "&running_ms=%d" % running_ms
        for k, v in extra.items():
            q += "&%s=%s" % (k, v)
        self._control("POST", "/_sim/jobs/%s?%s" % (job, q))

    def fault(self, job="*", kind="status", **params):
        q = "job=%s&kind=%s" % (job, kind)
        for k, v in params.items():
            q += "&%s=%s" % (k, v)
        self._control("POST", "/_sim/faults?" + q)

    def clear_faults(self):
        self._control("DELETE", "/_sim/faults")

    def count(self, job):
        return self._control("GET", "/_sim/stats")["jobs"].get(job, 0)

    def total(self):
        return self._control("GET", "/_sim/stats")["total"]

    def last(self):
        return self._control("GET", "/_sim/last")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                rc = self.proc.wait()
            check(rc == 0, "simulator exited with %s (log %s)" % (rc, self.log.name))


def rule_file(tmpdir, name="elb-v1.yaml", **replace):
    """The shipped seed rule, with some lines replaced (e.g. timeout for tests)."""
    text = open(SEED_RULE).read()
    for old, new in replace.items():
        check(old in text, "rule text has no %r" % old)
        text = text.replace(old, new)
    path = os.path.join(tmpdir, name)
    with open(path, "w") as f:
        f.write(text)
    return path


class Jobgate:
    """proxy/jobgate with an inline configuration."""

    def __init__(self, upstream, redis=None, rules=None, extra_config="", args=None, port=None, ca_file=None,
                 upstream_token=None):
        self.port = port or free_port()
        self.tmp = tempfile.mkdtemp(prefix="jg-gate-")
        self.rules = rules or [SEED_RULE]
        self.redis = redis  # a Redis, a URL string, or None for the embedded cache
        self.upstream = upstream
        self.extra_config = extra_config
        self.ca_file = ca_file
        # jobgate's own cloud token (token mode); None: pass-through of the client's X-Auth-Token
        self.upstream_token = upstream_token
        self.upstream_auth = None
        self.args = args or []
        self.proc = None
        self.log_path = os.path.join(self.tmp, "jobgate.log")

    def config_text(self):
        if self.redis is None:
            redis = "none"
        elif isinstance(self.redis, str):
            redis = self.redis
        else:
            redis = "redis://127.0.0.1:%d" % self.redis.port
        upstream = ""
        if self.upstream:  # None: every rule goes to its own upstream url
            upstream += "  url: %s\n" % self.upstream
        if self.ca_file:
            upstream += "  ca_file: %s\n" % self.ca_file
        if self.upstream_auth:  # YAML lines for upstream.auth, already indented by 4
            upstream += "  auth:\n" + self.upstream_auth
        if self.upstream_token:
            token_path = os.path.join(self.tmp, "upstream-token")
            with os.fdopen(os.open(token_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
                f.write(self.upstream_token + "\n")
            upstream += "  token_file: %s\n" % token_path
        # One worker unless a test asks for more: counts read from /metrics are per worker.
        workers = "" if "workers:" in self.extra_config else "workers: 1\n"
        # Upstream protection out of the way unless a test sets its own: most tests
        # provoke upstream faults on purpose and count every call they cause.
        if "upstream_limits:" not in self.extra_config:
            workers += "upstream_limits:\n  rate: 100000\n  burst: 100000\n  breaker_threshold: 1000\n"
        # A test that lists its own listeners puts self.port among them.
        listen = "" if "listeners:" in self.extra_config else "listen: 127.0.0.1:%d\n" % self.port
        # Under valgrind (TIME_SCALE > 1) a Redis reply takes far longer than the 50 ms budget.
        if TIME_SCALE > 1:
            redis += "\n  redis_budget: %dms" % int(50 * TIME_SCALE)
        return ("%slog_level: debug\n%srules: [%s]\ncache:\n  redis: %s\n"
                "upstream:\n%sshutdown_timeout: 5s\n%s"
                % (listen, workers, ", ".join(self.rules), redis, upstream or "  max_body: 1MiB\n",
                   self.extra_config))

    def start(self, wait=True):
        self.config = os.path.join(self.tmp, "jobgate.yaml")
        with open(self.config, "w") as f:
            f.write(self.config_text())
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(jobgate_command("-c", self.config, *self.args), stdout=self.log, stderr=self.log)
        if wait:
            wait_port(self.port, timeout=10.0 * TIME_SCALE, proc=self.proc)
            if JOBGATE_WRAPPER and isinstance(self.redis, Redis) and self.redis.proc and self.redis.proc.poll() is None:
                self.wait_cache_up(10.0 * TIME_SCALE)
        return self

    def wait_cache_up(self, timeout):
        """Under JOBGATE_WRAPPER start-up takes longer than listening: give
        jobgate up to `timeout` s to connect to its Redis (/healthz "ok"), as
        it does at once when it runs natively. Never fails: the test decides."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if self.get("/healthz", timeout=timeout).json().get("status") == "ok":
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.05)

    def get(self, path, **kw):
        return request(self.port, path, **kw)

    def job_path(self, project, job):
        return "/v1.0/%s/jobs/%s" % (project, job)

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self, expect_rc=0):
        """SIGTERM, wait, and check a clean exit (sanitizers report through the exit code and log)."""
        if not self.proc or self.proc.poll() is not None:
            rc = self.proc.returncode if self.proc else None
        else:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(15 * TIME_SCALE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                rc = self.proc.wait()
                raise TestFailure("jobgate did not exit within %.0fs of SIGTERM" % (15 * TIME_SCALE))
        self.log.close()
        log = self.log_text()
        for marker in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
            check(marker not in log, "sanitizer report in jobgate's log:\n" + log[-4000:])
        check_wrapper_report(rc, log)
        if expect_rc is not None:
            check(rc == expect_rc, "jobgate exited with %r, expected %r; log tail:\n%s" % (rc, expect_rc, log[-2000:]))
        return rc


def jobgate_command(*args):
    """The command line that runs jobgate with `args`, under JOBGATE_WRAPPER if set."""
    return JOBGATE_WRAPPER + [JOBGATE_BIN] + list(args)


def check_wrapper_report(rc, log):
    """Under JOBGATE_WRAPPER (valgrind memcheck), fail on what it reported in
    jobgate's log: an error exit, errors, or definitely lost bytes."""
    if not JOBGATE_WRAPPER:
        return
    lost = [int(n.replace(",", "")) for n in re.findall(r"definitely lost: ([0-9,]+) bytes", log)]
    errors = [int(n.replace(",", "")) for n in re.findall(r"ERROR SUMMARY: ([0-9,]+) errors", log)]
    check(rc != WRAPPER_ERROR_EXIT and not any(lost) and not any(errors),
          "%s reported errors or leaks (exit %r):\n%s" % (JOBGATE_WRAPPER[0], rc, log[-6000:]))


def stop_all(env):
    """Teardown for a test file: stop every jobgate, simulator and Redis in
    `env` (values, or dicts of them), jobgates first, each checked for a
    clean exit."""
    found = []
    for value in (env or {}).values():
        found.extend(value.values() if isinstance(value, dict) else [value])
    failure = None
    for kind in (Jobgate, Sim, Redis):
        for proc in found:
            if isinstance(proc, kind):
                try:
                    proc.stop()
                except Exception as e:  # stop the others anyway, then report the first
                    failure = failure or e
    if failure:
        raise failure


def concurrent_get(gate, paths, **kw):
    """GET every path at once, one thread and connection each; the responses in order."""
    import threading
    out = [None] * len(paths)

    def one(i):
        out[i] = gate.get(paths[i], **kw)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(paths))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def seed_path(project, job):
    """The seed API's job path (classic ELB)."""
    return "/v1.0/%s/jobs/%s" % (project, job)


# ----------------------------------------------------------------------- TAP

_tests = []


def test(fn):
    _tests.append(fn)
    return fn


def run(setup=None, teardown=None):
    """Run every @test in order as TAP, then teardown as one more test (every
    process must exit cleanly: sanitizer reports and leaks fail it).
    setup() returns an env passed to each test and to teardown."""
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
        if teardown:
            teardown(env)
        print("ok %d - teardown: every process exits cleanly" % total, flush=True)
    except Exception:
        failed += 1
        print("not ok %d - teardown: every process exits cleanly" % total)
        for line in traceback.format_exc().splitlines():
            print("# " + line)
    sys.stdout.flush()
    sys.exit(1 if failed else 0)
