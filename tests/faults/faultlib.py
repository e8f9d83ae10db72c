"""The fault suite's machinery: a load generator with exact per-request
accounting, the scenarios, and the table row each one yields.

Each scenario starts its own redis-server, simulator (tests/sim/jobsim) and
jobgate through tests/integration/harness.py, defines a set of jobs with
known timelines, runs a steady load against jobgate while it breaks
something, then checks the row's columns:

  - every answer has a status from the documented table;
  - no request failed at the connection level (reset, EOF, timeout);
  - the simulator saw no more job requests than the scenario allows;
  - every entry in Redis under jobgate's key prefix agrees with the
    simulator: a terminal entry holds the job's final state, a still-changing
    one a state the job really was in when jobgate stored it.

Why a Python load generator rather than wrk: the table needs exact numbers
per request (every request sent is answered with a status or counted as a
connection error, and the SIGTERM row must tell requests sent before the
signal from those after). wrk's Lua hooks see answers but not the requests
it abandons when its run ends, nor a socket error's request; here each
request is one record. The load is paced (a few hundred requests/s on
keep-alive connections), well within what one Python thread sustains.
"""
import collections
import json
import math
import os
import resource
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import harness  # noqa: E402
from harness import DOCUMENTED, TOKEN, Jobgate, Redis, Sim, hex32, rule_file, seed_path  # noqa: E402

# The cloud account's limit: Huawei's API gateway allows 200 requests/s per API.
ACCOUNT_RATE = 200
# jobgate's configured limit (upstream_limits rate + burst, set explicitly below): what no second may exceed
CONFIGURED_RATE = 100
CONFIGURED_BURST = 20
# The guard's defaults (proxy/guard.h) that the bounds below rely on.
BREAKER_THRESHOLD = 5
BREAKER_COOLDOWN_S = 5
# Longest a client connection may take to send its request headers before
# jobgate closes it (the slowloris row's bound).
HEADER_DEADLINE_S = 10
# the seed rule's cache settings (lua-free-rules/elb-v1.yaml)
PENDING_TTL_MS = 2000
STALE_TTL_MS = 600000
KEY_PREFIX = "jobgate:"
RULE = "elb-v1"
TERMINAL = {"SUCCESS", "FAIL"}


# ---------------------------------------------------------------- load


class Conn:
    __slots__ = ("sock", "out", "inbuf", "req", "connected", "retry_at", "idle")

    def __init__(self):
        self.sock = None
        self.out = b""
        self.inbuf = b""
        self.req = None  # the request in flight: [path, sent_at]
        self.connected = False
        self.retry_at = 0.0
        self.idle = True


class Load:
    """`conns` keep-alive connections sending GETs round a list of paths at
    `rate` requests/s in all (closed loop: never more than one request in
    flight per connection). Every request sent ends as exactly one status
    or one connection error."""

    def __init__(self, port, paths, conns=16, rate=400.0, timeout=25.0):
        self.port = port
        self.paths = paths
        self.nconns = conns
        self.rate = rate
        self.timeout = timeout
        self.sent = 0
        self.statuses = collections.Counter()
        self.errors = collections.Counter()  # kind -> count
        self.errors_before_mark = 0  # connection errors of requests sent before mark()
        self.sent_before_mark = 0
        self.answered_before_mark = 0
        self.mark_time = None
        self.latencies = []
        self._sending = True
        self._stop = False
        self._thread = None
        self._next = 0
        self._in_flight = 0
        self._turns = 0  # loop turns done
        self._lock = threading.Lock()

    # -- control (from the scenario's thread)
    def start(self):
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def mark(self):
        """Note the time (before a signal): requests sent until now are 'before'."""
        with self._lock:
            self.mark_time = time.monotonic()
            self.sent_before_mark = self.sent

    def stop_sending(self):
        with self._lock:
            self._sending = False

    def finish(self, wait=None):
        """Stop sending, wait for the requests in flight (at most `wait` s), then stop."""
        self.stop_sending()
        deadline = time.monotonic() + (wait if wait is not None else self.timeout + 1)
        # Two whole loop turns after stop_sending: the in-flight count then
        # covers any request a turn that began before it had just sent.
        turn = self._turns
        while time.monotonic() < deadline and (self._turns < turn + 2 or self.in_flight()):
            time.sleep(0.02)
        self._stop = True
        self._thread.join(10)

    def in_flight(self):
        return self._in_flight

    # -- the loop
    def _record(self, conn, status=None, error=None):
        path, sent_at = conn.req
        conn.req = None
        before = self.mark_time is None or sent_at <= self.mark_time  # no mark yet: all are before it
        with self._lock:
            if status is not None:
                self.statuses[status] += 1
                self.latencies.append(time.monotonic() - sent_at)
                if before:
                    self.answered_before_mark += 1
            else:
                self.errors[error] += 1
                if before:
                    self.errors_before_mark += 1

    def _close(self, sel, conn, retry_in=0.0):
        if conn.sock is not None:
            try:
                sel.unregister(conn.sock)
            except (KeyError, ValueError):
                pass
            conn.sock.close()
        conn.sock = None
        conn.connected = False
        conn.out = b""
        conn.inbuf = b""
        conn.retry_at = time.monotonic() + retry_in

    def _fail(self, sel, conn, kind):
        if conn.req is not None:
            self._record(conn, error=kind)
        self._close(sel, conn, 0.05)

    def _send(self, sel, conn, now):
        if conn.sock is None:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                s.connect(("127.0.0.1", self.port))
            except BlockingIOError:
                pass
            except OSError:
                s.close()
                conn.retry_at = now + 0.05
                return False
            conn.sock = s
            sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)
        path = self.paths[self._next % len(self.paths)]
        self._next += 1
        conn.out = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nX-Auth-Token: %s\r\n\r\n"
                    % (path, self.port, TOKEN)).encode()
        with self._lock:  # sent and the request's time move together (see mark)
            conn.req = [path, time.monotonic()]
            self.sent += 1
        try:
            sel.modify(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)
        except (KeyError, ValueError):
            pass
        return True

    def _parse(self, conn):
        """A whole response in conn.inbuf: (status, close?, bytes used), else None."""
        buf = conn.inbuf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = buf[:end].decode("latin-1").split("\r\n")
        parts = head[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise ValueError("bad status line %r" % head[0])
        status = int(parts[1])
        headers = {}
        for line in head[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        body_start = end + 4
        close = headers.get("connection", "").lower() == "close" or parts[0] == "HTTP/1.0"
        if "content-length" in headers:
            n = int(headers["content-length"])
            if len(buf) < body_start + n:
                return None
            return status, close, body_start + n
        if headers.get("transfer-encoding", "").lower() == "chunked":
            pos = body_start
            while True:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    return None
                size = int(buf[pos:eol].split(b";")[0], 16)
                if len(buf) < eol + 2 + size + 2:
                    return None
                pos = eol + 2 + size + 2
                if size == 0:
                    return status, close, pos
        if status in (204, 304) or 100 <= status < 200:
            return status, close, body_start
        return None  # read until close: handled on EOF

    def _loop(self):
        sel = selectors.DefaultSelector()
        conns = [Conn() for _ in range(self.nconns)]
        interval = 1.0 / self.rate
        next_send = time.monotonic()
        self._in_flight = 0
        while not self._stop:
            now = time.monotonic()
            # time out requests that took too long
            for c in conns:
                if c.req is not None and now - c.req[1] > self.timeout:
                    self._fail(sel, c, "timeout")
            with self._lock:
                sending = self._sending
            if sending:
                for c in conns:
                    if next_send > now:
                        break
                    if c.req is None and c.retry_at <= now:
                        if self._send(sel, c, now):
                            next_send = max(next_send + interval, now - 0.1)
            self._in_flight = sum(1 for c in conns if c.req is not None)
            self._turns += 1
            wait = max(0.0, min(next_send - now, 0.01)) if sending else 0.01
            for key, ev in sel.select(wait):
                c = key.data
                if c.sock is None or key.fileobj is not c.sock:
                    continue
                if ev & selectors.EVENT_WRITE:
                    if not c.connected:
                        err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                        if err:
                            self._fail(sel, c, "connect")
                            continue
                        c.connected = True
                    if c.out:
                        try:
                            n = c.sock.send(c.out)
                            c.out = c.out[n:]
                        except BlockingIOError:
                            pass
                        except OSError:
                            self._fail(sel, c, "write")
                            continue
                    if not c.out:
                        sel.modify(c.sock, selectors.EVENT_READ, c)
                if ev & selectors.EVENT_READ:
                    try:
                        data = c.sock.recv(65536)
                    except BlockingIOError:
                        continue
                    except ConnectionRefusedError:
                        self._fail(sel, c, "connect")
                        continue
                    except OSError:
                        self._fail(sel, c, "reset")
                        continue
                    if not data:
                        if c.req is not None:
                            self._fail(sel, c, "eof" if not c.inbuf else "eof-mid-answer")
                        else:
                            self._close(sel, c)  # idle keep-alive connection closed: fine
                        continue
                    c.inbuf += data
                    try:
                        parsed = self._parse(c)
                    except ValueError:
                        self._fail(sel, c, "garbage")
                        continue
                    if parsed is None:
                        continue
                    status, close, used = parsed
                    if c.req is None:
                        self._fail(sel, c, "unasked-answer")
                        continue
                    self._record(c, status=status)
                    c.inbuf = c.inbuf[used:]
                    if close:
                        self._close(sel, c)
        for c in conns:
            if c.req is not None:
                self._record(c, error="unfinished")
            self._close(sel, c)
        sel.close()


# ------------------------------------------------------------ raw Redis


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


# ------------------------------------------------------------- scenarios


class Job:
    def __init__(self, project, job, init_ms, running_ms, final):
        self.project, self.job = project, job
        self.init_ms, self.running_ms, self.final = init_ms, running_ms, final
        self.defined_wall_ms = None

    def states_between(self, t0_ms, t1_ms):
        """The states the job showed between t0 and t1 (ms since it was defined)."""
        out = set()
        if t0_ms < self.init_ms:
            out.add("INIT")
        if t1_ms >= self.init_ms and t0_ms < self.init_ms + self.running_ms:
            out.add("RUNNING")
        if t1_ms >= self.init_ms + self.running_ms:
            out.add(self.final)
        return out


class Context:
    """One scenario's processes, jobs and load."""

    def __init__(self, name, rate, conns, jobs=64, upstream_timeout="2s", extra_config=""):
        self.name = name
        self.rate = rate
        self.conns = conns
        self.njobs = jobs
        self.upstream_timeout = upstream_timeout
        # The shipped protections, said explicitly: the integration harness
        # loosens them for tests that provoke upstream faults on purpose.
        if "upstream_limits:" not in extra_config:
            extra_config = ("upstream_limits:\n  rate: %d\n  burst: %d\n  breaker_threshold: %d\n"
                            % (CONFIGURED_RATE, CONFIGURED_BURST, BREAKER_THRESHOLD)) + extra_config
        self.extra_config = extra_config
        self.sim = self.redis = self.gate = self.load = None
        self.dead_redis = []
        self.jobs = []
        self.notes = []
        self.failures = []  # scenario-specific checks that failed
        self.post_checks = []  # run once the load has finished
        self.allowed = None  # (number, why)
        self.started = self.ended = None

    def setup(self):
        self.sim = Sim(init_ms=1000, running_ms=3000).start()
        self.redis = Redis().start()
        self.tmp_rules = harness.tempfile.mkdtemp(prefix="jg-faults-")
        rules = rule_file(self.tmp_rules, **{"timeout: 10s": "timeout: %s" % self.upstream_timeout})
        self.gate = Jobgate(self.sim.url, redis=self.redis, rules=[rules], extra_config=self.extra_config)
        self.gate.start()
        projects = [hex32(), hex32()]
        for i in range(self.njobs):
            # a mix: quick and slow, successes and failures, some still running at the end
            job = Job(projects[i % 2], hex32(), 300 + (i % 4) * 700, 1000 + (i % 8) * 2500,
                      "FAIL" if i % 5 == 0 else "SUCCESS")
            job.defined_wall_ms = int(time.time() * 1000)
            self.sim.define_job(job.job, init_ms=job.init_ms, running_ms=job.running_ms, final=job.final)
            self.jobs.append(job)
        self.paths = [seed_path(j.project, j.job) for j in self.jobs]

    def start_load(self):
        self.samples = [(time.monotonic(), self.sim.total())]
        self._sampling = True
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()
        self.load = Load(self.gate.port, self.paths, conns=self.conns, rate=self.rate).start()
        self.started = time.monotonic()

    def _sample(self):
        """The simulator's job-request count every 0.2 s, for the peak rate."""
        while self._sampling:
            time.sleep(0.2)
            try:
                self.samples.append((time.monotonic(), self.sim.total()))
            except Exception:  # noqa: BLE001 - a missed sample only blurs the peak
                pass

    def finish_load(self, wait=None):
        self.load.finish(wait)
        self.ended = time.monotonic()
        self._sampling = False
        self._sampler.join(5)

    def peak_upstream_rate(self):
        """Most upstream requests in any window of at most 1 s between two samples."""
        peak, i = 0, 0
        for j in range(len(self.samples)):
            while self.samples[j][0] - self.samples[i][0] > 1.0:
                i += 1
            peak = max(peak, self.samples[j][1] - self.samples[i][1])
        return peak

    def fail(self, what):
        self.failures.append(what)

    def teardown(self):
        for proc in [self.gate, self.sim, self.redis] + self.dead_redis:
            if proc is None:
                continue
            try:
                proc.stop()
            except Exception as e:  # noqa: BLE001 - every process must be stopped, the first failure kept
                self.fail("%s: %s" % (type(proc).__name__.lower(), str(e).splitlines()[0][:160]))


def check_cache(ctx):
    """Wrong entries in Redis under jobgate's prefix, as a list of reasons
    (ctx.checked_entries: how many were looked at)."""
    wrong = []
    ctx.checked_entries = 0
    if ctx.redis is None or ctx.redis.proc is None or ctx.redis.proc.poll() is not None:
        return wrong
    by_id = {(j.project, j.job): j for j in ctx.jobs}
    for key in redis_keys(ctx.redis.port, KEY_PREFIX + "*"):
        if key.startswith(KEY_PREFIX + "guard:"):
            continue  # the upstream guard's own state (proxy/guardredis.h), not an answer
        parts = key[len(KEY_PREFIX):].split(":")
        if len(parts) != 4 or parts[0] != RULE or parts[3] not in ("t", "p"):
            wrong.append("%s: not a job key" % key)
            continue
        job = by_id.get((parts[1], parts[2]))
        if job is None:
            wrong.append("%s: a job no one asked for" % key)
            continue
        raw = redis_command(ctx.redis.port, "GET", key)
        if raw is None:
            continue  # expired meanwhile
        ctx.checked_entries += 1
        head, _, body = raw.partition(b"\n")
        fields = head.decode("latin-1").split(" ")
        try:
            if fields[0] != "JG1":
                raise ValueError
            stored_at, terminal = int(fields[1]), fields[2] == "1"
            status = int(fields[3]) if len(fields) > 3 else 200
            expires_at = int(fields[4]) if len(fields) > 4 else 0
            doc = json.loads(body)
        except (ValueError, IndexError):
            wrong.append("%s: not jobgate's entry format: %r" % (key, raw[:80]))
            continue
        state = doc.get("status") if isinstance(doc, dict) else None
        if status != 200:
            wrong.append("%s: a cached %d (every job exists)" % (key, status))
        elif doc.get("job_id") != job.job:
            wrong.append("%s: body about job %r" % (key, doc.get("job_id")))
        elif terminal != (parts[3] == "t") or terminal != (state in TERMINAL):
            wrong.append("%s: state %r stored as %s" % (key, state, "terminal" if terminal else "changing"))
        elif terminal and state != job.final:
            wrong.append("%s: terminal %r, the job ends %r" % (key, state, job.final))
        elif not terminal:
            # what the job showed when jobgate stored it (with 300 ms for clocks and transit)
            at = stored_at - job.defined_wall_ms
            if state not in job.states_between(at - 300, at + 300):
                wrong.append("%s: %r stored %d ms in, when the job was %s" % (key, state, at,
                                                                            sorted(job.states_between(at, at))))
            # fresh for the rule's 2 s TTL, then kept for its stale window (serve-stale)
            pttl = redis_command(ctx.redis.port, "PTTL", key)
            if pttl is not None and (pttl < 0 or pttl > PENDING_TTL_MS + STALE_TTL_MS):
                wrong.append("%s: changing entry with PTTL %r" % (key, pttl))
            elif not 0 < expires_at - stored_at <= PENDING_TTL_MS + 100:  # stamped a moment before stored
                wrong.append("%s: changing entry fresh for %d ms" % (key, expires_at - stored_at))
    # the simulator's word on the finished jobs (asked last: these requests count upstream)
    for key in redis_keys(ctx.redis.port, KEY_PREFIX + "*:t"):
        _, project, job_id, _ = key[len(KEY_PREFIX):].split(":")
        if (project, job_id) not in by_id:
            continue
        r = harness.request(ctx.sim.port, seed_path(project, job_id), token="sim")
        state = r.json().get("status") if r.status == 200 else None
        entry = json.loads(redis_command(ctx.redis.port, "GET", key).partition(b"\n")[2])
        if state != entry.get("status"):
            wrong.append("%s: cached %r, the simulator says %r" % (key, entry.get("status"), state))
    return wrong


# ------------------------------------------------------------ the rows


def account_bound(ctx):
    seconds = math.ceil(ctx.ended - ctx.started) + 1
    return ACCOUNT_RATE * seconds, "%d/s account limit x %d s" % (ACCOUNT_RATE, seconds)


def calls_between(ctx, t0, t1):
    """Upstream requests between two moments, from the load's samples of /_sim/stats."""
    before = max((c for t, c in ctx.samples if t <= t0), default=ctx.samples[0][1])
    after = min((c for t, c in ctx.samples if t >= t1), default=ctx.samples[-1][1])
    return after - before


def breaker_bound(ctx):
    """While every call fails: the threshold, plus what was already in flight, per opening.
    Counted over the fault window only (before and after it upstream is healthy)."""
    t0, t1 = ctx.fault_window
    openings = 1 + math.ceil((t1 - t0) / BREAKER_COOLDOWN_S)
    n = (BREAKER_THRESHOLD + ctx.conns) * openings
    return (n, "during the fault: breaker (%d failures + %d in flight) x %d openings"
            % (BREAKER_THRESHOLD, ctx.conns, openings), calls_between(ctx, t0, t1))


def backoff_bound(ctx, retry_after):
    """While upstream throttles: what was in flight, per Retry-After window (fault window only)."""
    t0, t1 = ctx.fault_window
    windows = 1 + math.ceil((t1 - t0) / retry_after)
    return (ctx.conns * windows, "during the fault: 429 backoff, %d in flight x %d Retry-After windows"
            % (ctx.conns, windows), calls_between(ctx, t0, t1))


def steady(ctx, seconds):
    time.sleep(seconds)


def sc_redis_kill(ctx, d):
    steady(ctx, d * 0.3)
    ctx.redis.kill()
    ctx.dead_redis.append(ctx.redis)
    steady(ctx, d * 0.3)
    ctx.redis = Redis(port=ctx.redis.port).start()
    steady(ctx, d * 0.4)


def sc_redis_sleep(ctx, d):
    steady(ctx, d * 0.3)
    sleeper = subprocess.Popen([harness.REDIS_CLI, "-p", str(ctx.redis.port), "DEBUG", "SLEEP", "2"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    steady(ctx, d * 0.3)
    sleeper.wait(10)
    steady(ctx, d * 0.4)


def sc_redis_pause(ctx, d):
    steady(ctx, d * 0.3)
    if ctx.redis.cli("CLIENT", "PAUSE", "2000") != "OK":
        ctx.fail("CLIENT PAUSE refused")
    steady(ctx, d * 0.7)


def upstream_fault(kind, **params):
    def scenario(ctx, d):
        steady(ctx, d * 0.2)
        ctx.sim.fault(kind=kind, **params)
        start = time.monotonic()
        steady(ctx, d * 0.6)
        ctx.sim.clear_faults()
        ctx.fault_window = (start, time.monotonic())
        steady(ctx, d * 0.2)
    return scenario


def sc_idle_connections(ctx, d, n=10000):
    socks = []
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < n + 1000:
        ctx.fail("RLIMIT_NOFILE hard limit %d: cannot hold %d connections" % (hard, n))
        steady(ctx, d)
        return
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", ctx.gate.port))
            except BlockingIOError:
                pass
            socks.append(s)
        time.sleep(1)
        steady(ctx, d)
        # still holding them: how many did jobgate keep?
        alive = 0
        for s in socks:
            try:
                alive += s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
            except BlockingIOError:
                alive += 1
            except OSError:
                pass
        ctx.notes.append("%d/%d idle connections open at the end" % (alive, n))
    finally:
        for s in socks:
            s.close()


def sc_slowloris(ctx, d, n=1000):
    """n connections each sending a request's headers one byte a second."""
    req = ("GET %s HTTP/1.1\r\nHost: x\r\nX-Auth-Token: %s\r\nX-Padding: %s\r\n\r\n"
           % (ctx.paths[0], TOKEN, "a" * 200)).encode()
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", ctx.gate.port))
        except BlockingIOError:
            pass
        socks.append([s, 0, None])  # socket, bytes sent, time closed by jobgate
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < d:
            for entry in socks:
                s, sent, closed = entry
                if closed is not None:
                    continue
                try:
                    if s.recv(4096, socket.MSG_DONTWAIT) == b"":
                        entry[2] = time.monotonic() - t0
                        continue
                except BlockingIOError:
                    pass
                except OSError:
                    entry[2] = time.monotonic() - t0
                    continue
                try:
                    s.send(req[sent % len(req):sent % len(req) + 1])
                    entry[1] += 1
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    entry[2] = time.monotonic() - t0
            time.sleep(max(0.0, 1.0 - (time.monotonic() - t0) % 1.0))
        cut = [e[2] for e in socks if e[2] is not None]
        ctx.notes.append("%d/%d slow connections closed by jobgate (latest at %.0f s)"
                         % (len(cut), n, max(cut) if cut else 0))
        if d > HEADER_DEADLINE_S + 2 and (len(cut) < n or max(cut) > HEADER_DEADLINE_S + 2):
            ctx.fail("slow connections not closed within the %d s header deadline (%d of %d still open)"
                     % (HEADER_DEADLINE_S, n - len(cut), n))
    finally:
        for e in socks:
            e[0].close()


def sc_sighup(ctx, d):
    for _ in range(int(d)):
        time.sleep(1)
        ctx.gate.proc.send_signal(signal.SIGHUP)
    if ctx.gate.proc.poll() is not None:
        ctx.fail("jobgate exited on SIGHUP")


def sc_sigterm(ctx, d):
    steady(ctx, d * 0.6)
    # Clients keep sending after the signal (those may be refused); what was
    # sent before it must be answered.
    ctx.load.mark()
    ctx.gate.proc.send_signal(signal.SIGTERM)
    try:
        rc = ctx.gate.proc.wait(15)
    except subprocess.TimeoutExpired:
        ctx.fail("jobgate still running 15 s after SIGTERM")
        return
    if rc != 0:
        ctx.fail("jobgate exited with %d on SIGTERM" % rc)
    time.sleep(0.5)  # clients knock on the closed door for a while

    def answered(ctx):  # once the load has collected its last answers
        load = ctx.load
        ctx.notes.append("%d sent before SIGTERM, %d answered, %d sent after" % (
            load.sent_before_mark, load.answered_before_mark, load.sent - load.sent_before_mark))
        if load.answered_before_mark != load.sent_before_mark:
            ctx.fail("%d requests sent before SIGTERM got no answer"
                     % (load.sent_before_mark - load.answered_before_mark))
    ctx.post_checks.append(answered)


# name: (function, bound, what it shows, options)
SCENARIOS = collections.OrderedDict([
    ("redis-kill", (sc_redis_kill, account_bound, "redis-server kill -9, restarted 30% later", {})),
    ("redis-sleep", (sc_redis_sleep, account_bound, "Redis blocked by DEBUG SLEEP 2", {})),
    ("redis-pause", (sc_redis_pause, account_bound, "Redis CLIENT PAUSE 2000", {})),
    ("upstream-reset", (upstream_fault("reset"), breaker_bound, "every upstream call reset", {})),
    ("upstream-hang", (upstream_fault("hang"), breaker_bound, "upstream never answers (2 s timeout)", {})),
    ("upstream-500", (upstream_fault("status", status=500), account_bound, "500 storm", {})),
    ("upstream-429", (upstream_fault("status", status=429, shape="apigw", code="APIGW.0308",
                                     message="throttled", retry_after=2),
                      lambda ctx: backoff_bound(ctx, 2), "429 APIGW.0308 storm, Retry-After: 2", {})),
    ("upstream-truncated", (upstream_fault("truncated"), account_bound, "bodies cut in half", {})),
    ("upstream-oversized", (upstream_fault("oversized", size=2 * 1024 * 1024), account_bound,
                            "2 MiB bodies (max_body 1 MiB)", {})),
    ("idle-10k", (sc_idle_connections, account_bound, "10,000 idle client connections held", {})),
    ("slowloris", (sc_slowloris, account_bound, "1,000 connections sending headers at 1 byte/s",
                   {"duration": 15})),
    ("sighup", (sc_sighup, account_bound, "SIGHUP every second", {})),
    ("sigterm", (sc_sigterm, account_bound, "SIGTERM mid-load: every request sent before it answered", {})),
    # The same bounds with 4 workers sharing one guard (issue 13): rate, burst, backoff and breaker are
    # the instance's (through Redis), not each worker's.
    ("w4-upstream-429", (upstream_fault("status", status=429, shape="apigw", code="APIGW.0308",
                                        message="throttled", retry_after=2),
                         lambda ctx: backoff_bound(ctx, 2), "4 workers: 429 storm, Retry-After: 2",
                         {"workers": 4})),
    ("w4-upstream-reset", (upstream_fault("reset"), breaker_bound, "4 workers: every upstream call reset",
                           {"workers": 4})),
    ("w4-upstream-500", (upstream_fault("status", status=500), account_bound,
                         "4 workers: 500 storm (nothing cached: the rate limit is the bound)", {"workers": 4})),
    ("w4-redis-kill", (sc_redis_kill, account_bound,
                       "4 workers: redis-server kill -9 (each worker falls back to rate / 4), restarted",
                       {"workers": 4})),
])

QUICK = ["redis-kill", "redis-sleep", "sighup", "sigterm"]


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def run_scenario(name, duration=12.0, rate=400.0, conns=16, workers=1):
    """Run one scenario (with `workers` worker processes unless it says its own); its row as a dict."""
    fn, bound, what, opts = SCENARIOS[name]
    duration = opts.get("duration", duration)
    workers = opts.get("workers", workers)
    ctx = Context(name, rate, conns, extra_config="workers: %d\n" % workers if workers > 1 else "")
    row = {"scenario": name if workers == 1 or name.startswith("w4-") else "%s (%d workers)" % (name, workers),
           "what": what}
    try:
        ctx.setup()
        ctx.start_load()
        fn(ctx, duration)
        ctx.finish_load()
        for check in ctx.post_checks:
            check(ctx)
        row["upstream"] = ctx.sim.total()
        row["peak"] = ctx.peak_upstream_rate()
        bounded = bound(ctx)
        row["allowed"], row["allowed_why"] = bounded[0], bounded[1]
        if len(bounded) > 2:  # the bound is on part of the run: compare that part
            row["upstream"] = bounded[2]
        wrong = check_cache(ctx)
        ctx.notes.append("%d cache entries checked" % ctx.checked_entries)
    except Exception as e:  # noqa: BLE001 - a broken scenario is a FAIL row, not a crash
        import traceback
        ctx.fail("scenario error: %s" % traceback.format_exc().strip().splitlines()[-1])
        wrong = []
        if ctx.load is not None and ctx.ended is None:
            ctx.finish_load(1)
    finally:
        ctx.teardown()
    load = ctx.load
    row["sent"] = load.sent if load else 0
    row["statuses"] = dict(sorted(load.statuses.items())) if load else {}
    row["outside"] = sum(n for s, n in row["statuses"].items() if s not in DOCUMENTED)
    row["conn_errors"] = sum(load.errors.values()) if load else 0
    row["conn_error_kinds"] = dict(load.errors) if load else {}
    if name == "sigterm" and load:
        # only requests sent before the signal count; after it, refusals are expected
        row["conn_errors"] = load.errors_before_mark
    row["wrong_cached"] = len(wrong)
    row["wrong_examples"] = wrong[:3]
    row["notes"] = ctx.notes
    row["failures"] = list(ctx.failures)
    if row["outside"]:
        row["failures"].append("%d answers outside the documented table" % row["outside"])
    if row["conn_errors"]:
        row["failures"].append("%d connection errors %s" % (row["conn_errors"], row["conn_error_kinds"]))
    if "allowed" in row and row["upstream"] > row["allowed"]:
        row["failures"].append("%d upstream requests, allowed %d (%s)" % (row["upstream"], row["allowed"],
                                                                       row["allowed_why"]))
    if row.get("peak", 0) > CONFIGURED_RATE + CONFIGURED_BURST:
        row["failures"].append("upstream peaked at %d requests in 1 s (configured rate + burst: %d)"
                               % (row["peak"], CONFIGURED_RATE + CONFIGURED_BURST))
    if wrong:
        row["failures"].append("%d wrong cached entries, e.g. %s" % (len(wrong), wrong[0]))
    if row["sent"] == 0:
        row["failures"].append("no request was sent")
    row["result"] = "FAIL" if row["failures"] else "PASS"
    return row


def row_markdown(r):
    statuses = " ".join("%d:%d" % (s, n) for s, n in r["statuses"].items()) or "-"
    upstream = "%s / %s, peak %s/s / %d/s" % (r.get("upstream", "?"), r.get("allowed", "?"), r.get("peak", "?"),
                                              CONFIGURED_RATE + CONFIGURED_BURST)
    why = "; ".join(r["failures"] + r["notes"])
    return "| %s | %d | %s | %d | %d | %s | %d | **%s** | %s |" % (
        r["scenario"], r["sent"], statuses, r["outside"], r["conn_errors"], upstream, r["wrong_cached"],
        r["result"], why.replace("|", "/"))


TABLE_HEAD = ("| scenario | sent | answered (status:count) | outside table | conn errors | upstream / allowed "
              "| wrong cached | result | notes |\n|---|---:|---|---:|---:|---|---:|---|---|")


def table(rows):
    return "\n".join([TABLE_HEAD] + [row_markdown(r) for r in rows])
