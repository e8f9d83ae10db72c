"""The process harness shared by every Python test of jobgate: a real
redis-server, proxy/jobgate with an inline configuration, free loopback
ports, waiting for a listener, and teardown.

Every process is registered the moment it is spawned, before any wait that
may fail, so that it is stopped whatever happens next:
  - stop_started() stops every registered process that still runs (jobgates
    first, each checked for a clean exit); harness.run() calls it after a
    test file's teardown, so a set-up that fails half-way leaves nothing;
  - at interpreter exit (an uncaught exception, a script's sys.exit) every
    registered process still running is killed with SIGKILL.

Paths come from the environment set by `make check` (JOBGATE_BIN,
JOBSIM_BIN, JOBGATE_SRCDIR, REDIS_SERVER, OPENSSL_BIN). `make valgrind`
(tests/valgrind/run) also sets JOBGATE_WRAPPER, a command put in front of
every jobgate started here (valgrind memcheck, exiting 99 on an error), and
JOBGATE_TIME_SCALE, a factor on the waits for jobgate to start and to exit.

Python standard library only; tests/bench/benchlib.py runs as a plain script.
"""
import atexit
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from client import request

SRCDIR = os.environ.get("JOBGATE_SRCDIR") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
JOBGATE_BIN = os.environ.get("JOBGATE_BIN", os.path.join(SRCDIR, "proxy", "jobgate"))
JOBSIM_BIN = os.environ.get("JOBSIM_BIN", os.path.join(SRCDIR, "tests", "sim", "jobsim"))
REDIS_SERVER = os.environ.get("REDIS_SERVER") or shutil.which("redis-server") or "redis-server"
REDIS_CLI = shutil.which("redis-cli") or "redis-cli"
OPENSSL = os.environ.get("OPENSSL_BIN") or shutil.which("openssl") or "openssl"
SHIPPED_RULES = os.path.join(SRCDIR, "lua-free-rules")
SEED_RULE = os.path.join(SHIPPED_RULES, "elb-v1.yaml")
JOBGATE_WRAPPER = shlex.split(os.environ.get("JOBGATE_WRAPPER", ""))
TIME_SCALE = float(os.environ.get("JOBGATE_TIME_SCALE") or 1)
WRAPPER_ERROR_EXIT = 99  # valgrind --error-exitcode in tests/valgrind/run


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


# ------------------------------------------------------------ ports, waits


def free_port():
    return free_ports(1)[0]


def free_ports(n):
    """`n` distinct free TCP ports on 127.0.0.1 (all bound at once, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def listening(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_port(port, timeout=10.0, proc=None, host="127.0.0.1"):
    """Until something accepts connections on host:port; fails early if
    `proc` (a Popen) exits first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise TestFailure("process exited with %s before listening on %d" % (proc.returncode, port))
        if listening(port, host):
            return
        time.sleep(0.02)
    raise TestFailure("nothing listening on port %d after %.0fs" % (port, timeout))


def wait_until(cond, timeout=10.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise TestFailure("timed out waiting for " + what)


# ------------------------------------------------------- the registry

_started = []  # every Process spawned in this interpreter, in order


class Process:
    """A child process the tests own. Subclasses spawn through spawn(),
    which registers the process before anything can fail; stop() must set
    `stopped`. stop_order: lower stops first (clients of a server before
    the server)."""

    proc = None
    stopped = False
    stop_order = 5

    def spawn(self, args, **popen_kw):
        self.stopped = False
        self.proc = subprocess.Popen(args, **popen_kw)
        _started.append(self)
        return self.proc

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def terminate(self, timeout=10):
        """SIGTERM, then SIGKILL after `timeout` s; the exit code (None if never started)."""
        self.stopped = True
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def stop(self):
        self.terminate()


def started():
    """The registered processes not stopped yet (started and not stop()ped)."""
    return [p for p in _started if not p.stopped]


def stop_started():
    """Stop every registered process that still runs and was not stopped, in
    stop_order, each checked as its stop() checks; raise the first failure
    once all are stopped. Processes that already exited without stop() are
    left as they are: their test looked at them."""
    failure = None
    for p in sorted(started(), key=lambda p: p.stop_order):
        if not p.running():
            p.stopped = True
            continue
        try:
            p.stop()
        except Exception as e:  # stop the others anyway, then report the first
            failure = failure or e
    del _started[:]
    if failure:
        raise failure


def stop_each(procs):
    """stop() each of `procs` (any order; stopped in stop_order), the first
    failure raised once all are stopped."""
    failure = None
    for p in sorted((p for p in procs if p is not None), key=lambda p: p.stop_order):
        try:
            p.stop()
        except Exception as e:
            failure = failure or e
    if failure:
        raise failure


@atexit.register
def _kill_leftovers():
    """At interpreter exit nothing started here may outlive the tests."""
    for p in _started:
        if p.proc is not None and p.proc.poll() is None:
            p.proc.kill()
            try:
                p.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass


# --------------------------------------------------------------- Redis


def redis_cli(port, *args):
    out = subprocess.run([REDIS_CLI, "-p", str(port), "--raw"] + [str(a) for a in args],
                         capture_output=True, timeout=10)
    return out.stdout.decode("utf-8", "replace").strip()


class Redis(Process):
    """A redis-server on a free loopback port, no persistence; `extra`:
    more arguments (--replicaof ...); `debug`: allow DEBUG from loopback."""

    stop_order = 9

    def __init__(self, port=None, extra=(), debug=True):
        self.port = port or free_port()
        self.extra = [str(a) for a in extra]
        self.debug = debug
        self.dir = tempfile.mkdtemp(prefix="jg-redis-")

    def start(self):
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", self.dir, "--daemonize", "no", "--loglevel", "warning"]
        if self.debug:
            args += ["--enable-debug-command", "local"]
        self.spawn(args + self.extra, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, proc=self.proc)
        wait_until(lambda: self.cli("PING") == "PONG", 5, "redis PING")
        return self

    def cli(self, *args):
        return redis_cli(self.port, *args)

    def info_field(self, section, field):
        for line in self.cli("INFO", section).splitlines():
            if line.startswith(field + ":"):
                return line.split(":", 1)[1].strip()
        return None

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self):
        self.stopped = True
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def redis_command(port, *args):
    """One command over RESP, the reply decoded (bulk strings as bytes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        s.sendall(out)
        f = s.makefile("rb")

        def read():
            line = f.readline()
            kind, rest = line[:1], line[1:-2]
            if kind == b"+":
                return rest.decode()
            if kind == b"-":
                raise RuntimeError("redis: " + rest.decode())
            if kind == b":":
                return int(rest)
            if kind == b"$":
                n = int(rest)
                if n < 0:
                    return None
                data = f.read(n + 2)
                return data[:-2]
            if kind == b"*":
                n = int(rest)
                return None if n < 0 else [read() for _ in range(n)]
            raise RuntimeError("redis: bad reply %r" % line)

        return read()


def redis_keys(port, pattern):
    keys, cursor = [], b"0"
    while True:
        cursor, batch = redis_command(port, "SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
        keys.extend(k.decode() for k in batch)
        if cursor == b"0":
            return keys


# ------------------------------------------------------------- jobgate


def rule_file(tmpdir, name="elb-v1.yaml", source=SEED_RULE, **replace):
    """A shipped rule (the seed rule by default), with some text replaced
    (e.g. its timeout for tests); each old text must occur."""
    with open(source) as f:
        text = f.read()
    for old, new in replace.items():
        check(old in text, "rule text has no %r" % old)
        text = text.replace(old, new)
    path = os.path.join(tmpdir, name)
    with open(path, "w") as f:
        f.write(text)
    return path


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


class Jobgate(Process):
    """proxy/jobgate with an inline configuration. `token`: the X-Auth-Token
    that get() sends by default (harness.Jobgate sets the tests' token)."""

    stop_order = 0
    token = None

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
        self.log = None
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
        self.spawn(jobgate_command("-c", self.config, *self.args), stdout=self.log, stderr=self.log)
        if wait:
            wait_port(self.port, timeout=10.0 * TIME_SCALE, proc=self.proc)
            if JOBGATE_WRAPPER and isinstance(self.redis, Redis) and self.redis.running():
                self.wait_cache_up(10.0 * TIME_SCALE)
        return self

    def wait_cache_up(self, timeout):
        """Under JOBGATE_WRAPPER start-up takes longer than listening: give
        jobgate up to `timeout` s to connect to its Redis (/healthz "ok"), as
        it does at once when it runs natively. Never fails: the test decides."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if request(self.port, "/healthz", timeout=timeout, token=None).json().get("status") == "ok":
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.05)

    def get(self, path, **kw):
        kw.setdefault("token", self.token)
        return request(self.port, path, **kw)

    def job_path(self, project, job):
        return "/v1.0/%s/jobs/%s" % (project, job)

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self, expect_rc=0):
        """SIGTERM, wait, and check a clean exit (sanitizers report through the exit code and log)."""
        self.stopped = True
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
        if self.log:
            self.log.close()
        log = self.log_text()
        for marker in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
            check(marker not in log, "sanitizer report in jobgate's log:\n" + log[-4000:])
        check_wrapper_report(rc, log)
        if expect_rc is not None:
            check(rc == expect_rc, "jobgate exited with %r, expected %r; log tail:\n%s" % (rc, expect_rc, log[-2000:]))
        return rc
