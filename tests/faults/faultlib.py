"""The fault suite's machinery: the scenarios, and the table row each one
yields.

Each scenario starts its own redis-server, simulator (tests/sim/jobsim) and
jobgate through the shared test support (tests/lib), defines a set of jobs with
known timelines, runs a steady load against jobgate while it breaks
something, then checks the row's columns:

  - every answer has a status from the documented table;
  - no request failed at the connection level (reset, EOF, timeout);
  - the simulator saw no more job requests than the scenario allows;
  - every entry in Redis under jobgate's key prefix agrees with the
    simulator: a terminal entry holds the job's final state, a still-changing
    one a state the job really was in when jobgate stored it.

Why a Python load generator (tests/lib/load.py's Load) rather than wrk: the
table needs exact numbers per request (every request sent is answered with a
status or counted as a connection error, and the SIGTERM row must tell
requests sent before the signal from those after). wrk's Lua hooks see
answers but not the requests it abandons when its run ends, nor a socket
error's request; here each request is one record. The load is paced (a few
hundred requests/s on keep-alive connections), well within what one Python
thread sustains.
"""
import collections
import json
import math
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import harness  # noqa: E402  (puts tests/lib on the path)
from harness import DOCUMENTED, TOKEN, Jobgate, Redis, Sim, hex32, rule_file, seed_path  # noqa: E402
from load import Load  # noqa: E402
from procs import REDIS_CLI, redis_command, redis_keys  # noqa: E402

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
        # Each assigned before it starts, so that teardown stops it even if its start fails.
        self.sim = Sim(init_ms=1000, running_ms=3000)
        self.sim.start()
        self.redis = Redis()
        self.redis.start()
        self.tmp_rules = tempfile.mkdtemp(prefix="jg-faults-")
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
        self.load = Load(self.gate.port, self.paths, TOKEN, conns=self.conns, rate=self.rate).start()
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
        if key.startswith(KEY_PREFIX + ":grant:"):
            continue  # a pass-through grant (a token's hash), not a cache entry
        if key.startswith(KEY_PREFIX + "guard:"):
            continue  # the upstream guard's own state (proxy/guardredis.h), not an answer
        parts = key[len(KEY_PREFIX):].replace("{", "", 1).replace("}", "", 1).split(":")  # PREFIX{RULE:P:J}:S
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
        _, project, job_id, _ = key[len(KEY_PREFIX):].replace("{", "", 1).replace("}", "", 1).split(":")
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
    sleeper = subprocess.Popen([REDIS_CLI, "-p", str(ctx.redis.port), "DEBUG", "SLEEP", "2"],
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


# client.header_timeout at its default: a new connection must send its first byte within it.
HEADER_TIMEOUT = 10.0


def sc_idle_connections(ctx, d, n=10000):
    """n connections that never send a byte, opened at the start: the load is
    served alongside them, and jobgate closes each header_timeout after it
    accepted it (before the first-byte deadline it held them for
    client.timeout, and max_connections of them locked real clients out)."""
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
        opened = time.monotonic()
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
        held = time.monotonic() - opened
        ctx.notes.append("%d/%d idle connections open at the end, %.0f s after they were opened" % (alive, n, held))
        if held > HEADER_TIMEOUT + 2 and alive:
            ctx.fail("%d idle connections still open %.0f s after they were opened (header_timeout %.0f s)"
                     % (alive, held, HEADER_TIMEOUT))
        elif held < HEADER_TIMEOUT - 1 and alive < n:
            ctx.fail("%d idle connections closed before header_timeout" % (n - alive))
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
    ("idle-10k", (sc_idle_connections, account_bound,
                  "10,000 silent client connections, closed after header_timeout (10 s)", {})),
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
