"""tests/cluster's machinery: several jobgate instances on one shared Redis
tier, on loopback, with real processes only.

Three topologies, each a scenario that yields a small markdown table:

  - twemproxy: three redis-servers behind nutcracker (fnv1a_64, ketama,
    auto_eject_hosts false), three jobgate instances pointed at nutcracker
    with cache.redis_notify: poll, and many clients polling jobs through
    their lifecycle. Asserted: each job's upstream calls (counted from the
    simulator's own request log, which names the state it answered) are
    exactly one once it turned terminal and at most duration/TTL + 1 before;
    every client sees the states in order; nutcracker refused nothing.
  - sentinel: a master, a replica and three sentinels, two jobgate
    instances on sentinel://, a steady load, then kill -9 of the master.
    Asserted: no answer outside the documented table, no connection error,
    and caching resumes on the new master (a job fetched through one
    instance is a HIT through the other, and its key is on the new master).
  - rcluster: a Redis Cluster of 3 masters and 3 replicas built with
    redis-cli --cluster create, three jobgate instances on cluster://:
    one upstream call per job, terminal answers on every master, a slot
    moved between masters (ASK, MOVED), and kill -9 of a master under load.

Every process is started here or by the shared test support (tests/lib),
which registers each for teardown; the exact configurations are those
tests/cluster/README.md shows.
"""
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import harness  # noqa: E402  (puts tests/lib on the path)
from harness import (DOCUMENTED, OPENSSL, REDIS_CLI, REDIS_SERVER, TOKEN, Jobgate, Redis, Sim, TestFailure, free_port, hex32,  # noqa: E402
                     request, seed_path, wait_port, wait_until)
from load import Pollers  # noqa: E402
from procs import Process  # noqa: E402

SBIN_PATH = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
NUTCRACKER = os.environ.get("NUTCRACKER") or shutil.which("nutcracker", path=SBIN_PATH)
REDIS_SENTINEL = os.environ.get("REDIS_SENTINEL") or shutil.which("redis-sentinel")

# jobgate holds the cloud credentials (token mode): answers are shared across
# instances. In pass-through mode each client token is judged upstream first.
CLOUD_TOKEN = "cloud-token"
MASTER_NAME = "jobgate-cache"
KEY_PREFIX = "jobgate:"
RULE = "elb-v1"
PENDING_TTL_S = 2.0  # the seed rule's pending_ttl (lua-free-rules/elb-v1.yaml)
STATE_RANK = {"INIT": 0, "RUNNING": 1, "SUCCESS": 2, "FAIL": 2}
TERMINAL = {"SUCCESS", "FAIL"}


def missing_tools():
    """The programs a scenario needs that are not installed (Debian:
    apt-get install nutcracker redis-sentinel)."""
    return [name for name, path in (("nutcracker", NUTCRACKER), ("redis-sentinel", REDIS_SENTINEL)) if not path]


# ------------------------------------------------------------ processes


class RedisNode(Redis):
    """A redis-server as the harness starts one (DEBUG not enabled), plus
    `extra` arguments (--replicaof ...)."""

    def __init__(self, extra=(), password=None):
        super().__init__(extra=list(extra) + (["--requirepass", password] if password else []), debug=False)
        self.password = password  # requirepass, and what the test's own commands send

    def cli(self, *args):
        if not self.password:
            return super().cli(*args)
        out = subprocess.run([REDIS_CLI, "-p", str(self.port), "--no-auth-warning", "-a", self.password, "--raw"] +
                             [str(a) for a in args], capture_output=True, timeout=10)
        return out.stdout.decode("utf-8", "replace").strip()

    def jobgate_keys(self):
        return [k for k in self.cli("--scan", "--pattern", KEY_PREFIX + "*").splitlines() if k]


class Nutcracker(Process):
    """twemproxy in front of `servers` (RedisNode), one pool named jobgate."""

    stop_order = 7

    def __init__(self, servers, password=None):
        self.servers = servers
        self.password = password  # redis_auth: what clients must send, and what it sends the servers
        self.port = free_port()
        self.stats_port = free_port()
        self.dir = tempfile.mkdtemp(prefix="jg-nutcracker-")
        self.conf = os.path.join(self.dir, "nutcracker.yml")
        self.log_path = os.path.join(self.dir, "nutcracker.log")
        self.proc = None

    def config_text(self):
        return ("jobgate:\n"
                "  listen: 127.0.0.1:%d\n" % self.port +
                "  hash: fnv1a_64\n"
                "  distribution: ketama\n"
                "  redis: true\n"
                "  auto_eject_hosts: false\n"
                "  timeout: 1000\n"
                + ("  redis_auth: %s\n" % self.password if self.password else "")
                + "  servers:\n"
                + "".join("    - 127.0.0.1:%d:1 redis%d\n" % (s.port, i + 1) for i, s in enumerate(self.servers)))

    def start(self):
        with open(self.conf, "w") as f:
            f.write(self.config_text())
        test = subprocess.run([NUTCRACKER, "-t", "-c", self.conf], capture_output=True, timeout=10)
        if test.returncode != 0:
            raise TestFailure("nutcracker -t refused its configuration: %r" % (test.stdout + test.stderr))
        # -v 6: nutcracker logs every command it refuses ("parsed unsupported command").
        self.spawn([NUTCRACKER, "-c", self.conf, "-o", self.log_path, "-v", "6", "-a", "127.0.0.1",
                    "-s", str(self.stats_port), "-i", "500"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, proc=self.proc)
        return self

    def stats(self):
        """The pool's counters (aggregated every 500 ms)."""
        with socket.create_connection(("127.0.0.1", self.stats_port), timeout=5) as s:
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        return json.loads(data.decode())["jobgate"]

    def refusals(self):
        """Log lines where nutcracker refused or failed a client's command."""
        with open(self.log_path, errors="replace") as f:
            return [line.rstrip() for line in f
                    if re.search(r"unsupported command|parsed bad req|bad req|req .* error", line)]

    def stop(self):
        self.terminate()
        shutil.rmtree(self.dir, ignore_errors=True)


class Sentinel(Process):
    """A Redis Sentinel watching the master at `master_port` as MASTER_NAME."""

    stop_order = 8

    def __init__(self, master_port, quorum=2, down_after_ms=1000, failover_timeout_ms=3000):
        self.port = free_port()
        self.master_port = master_port
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.dir = tempfile.mkdtemp(prefix="jg-sentinel-")
        self.conf = os.path.join(self.dir, "sentinel.conf")  # sentinel rewrites it: must be writable
        self.log_path = os.path.join(self.dir, "sentinel.log")
        self.proc = None

    def config_text(self):
        return ("port %d\n"
                "bind 127.0.0.1\n"
                "daemonize no\n"
                "dir %s\n"
                "sentinel monitor %s 127.0.0.1 %d %d\n"
                "sentinel down-after-milliseconds %s %d\n"
                "sentinel failover-timeout %s %d\n"
                "sentinel parallel-syncs %s 1\n"
                % (self.port, self.dir, MASTER_NAME, self.master_port, self.quorum, MASTER_NAME,
                   self.down_after_ms, MASTER_NAME, self.failover_timeout_ms, MASTER_NAME))

    def start(self):
        with open(self.conf, "w") as f:
            f.write(self.config_text())
        with open(self.log_path, "ab") as log:
            self.spawn([REDIS_SENTINEL, self.conf], stdout=log, stderr=log)
        wait_port(self.port, proc=self.proc)
        return self

    def cli(self, *args):
        out = subprocess.run([REDIS_CLI, "-p", str(self.port), "--raw"] + [str(a) for a in args],
                             capture_output=True, timeout=10)
        return out.stdout.decode("utf-8", "replace").strip()

    def master_port_named(self):
        lines = self.cli("SENTINEL", "get-master-addr-by-name", MASTER_NAME).splitlines()
        return int(lines[1]) if len(lines) == 2 and lines[1].isdigit() else None

    def master_info(self):
        flat = self.cli("SENTINEL", "master", MASTER_NAME).splitlines()
        return dict(zip(flat[0::2], flat[1::2]))

    def stop(self):
        self.terminate()
        shutil.rmtree(self.dir, ignore_errors=True)


def LoggingSim(**kw):
    """The simulator with its request log on (Sim.answers() counts upstream
    calls per job and per state)."""
    return Sim(request_log=True, **kw)


class ClusterJobgate(Jobgate):
    """A jobgate instance of the cluster: holds the cloud credentials (token
    mode) and takes extra `cache:` lines (cache.redis_notify)."""

    def __init__(self, upstream, redis, cache_extra="", **kw):
        super().__init__(upstream, redis=redis, upstream_token=CLOUD_TOKEN, **kw)
        self.cache_extra = cache_extra

    def config_text(self):
        text = super().config_text()
        line = "  redis: %s\n" % self.redis
        return text.replace(line, line + self.cache_extra, 1)

    def cache_health(self):
        return self.admin("/healthz").json()["cache"]


# ----------------------------------------------------------------- load


def out_of_order(answers):
    """Does this client's sequence of states ever go back (RUNNING to INIT,
    away from a terminal state)?"""
    best = -1
    last_terminal = None
    for _, status, state, _ in answers:
        if status != 200 or state not in STATE_RANK:
            continue
        rank = STATE_RANK[state]
        if rank < best or (last_terminal and state != last_terminal):
            return True
        best = max(best, rank)
        if state in TERMINAL:
            last_terminal = state
    return False


# ------------------------------------------------------------ the report


class Report:
    """A scenario's measures: (name, value, bound) rows, the failed ones kept."""

    def __init__(self, scenario, topology):
        self.scenario = scenario
        self.topology = topology
        self.rows = []
        self.failures = []

    def add(self, name, value, bound="", ok=True):
        self.rows.append((name, value, bound, ok))
        if not ok:
            self.failures.append("%s: %s (bound %s)" % (name, value, bound))

    def fail(self, what):
        self.failures.append(what)

    @property
    def passed(self):
        return not self.failures

    def markdown(self):
        out = ["**%s** (%s): %s" % (self.scenario, self.topology, "PASS" if self.passed else "FAIL"), "",
               "| measure | value | bound | |", "|---|---:|---|---|"]
        for name, value, bound, ok in self.rows:
            out.append("| %s | %s | %s | %s |" % (name, value, bound, "ok" if ok else "**FAIL**"))
        for f in self.failures:
            if not any(f.startswith(r[0] + ":") for r in self.rows):
                out.append("| %s | | | **FAIL** |" % f.replace("|", "/"))
        return "\n".join(out) + "\n"


def stop_quietly(procs, report):
    """Stop everything (jobgates first, each checked for a clean exit)."""
    for p in sorted(procs, key=lambda p: p.stop_order):
        try:
            p.stop()
        except Exception as e:  # the others still stop; the report says which failed
            report.fail("%s did not stop cleanly: %s" % (type(p).__name__, str(e).splitlines()[0][:300]))


def x_cache_text(counter):
    return ", ".join("%s %d" % (k or "(none)", n) for k, n in counter.most_common())


def job_path(project, job):
    return seed_path(project, job)


# ---------------------------------------------------- the twemproxy scenario


def twemproxy(clients=300, jobs=100, instances=3, interval=0.2, init_ms=1000, running_ms=2000, tail_s=2.0,
              redis_budget=None, password=None):
    """`clients` clients spread over `instances` jobgates on 3 redis-servers
    behind nutcracker (poll mode) poll `jobs` jobs through their lifecycle,
    then `tail_s` more once each job's answer could have expired.
    `redis_budget`: cache.redis_budget (default 50ms); a lookup past it goes
    upstream by design, beyond the bound, so a busy test machine may want
    more. `password`: the servers' requirepass and nutcracker's redis_auth,
    which jobgate sends (cache.redis_password_file) and never shows."""
    report = Report("twemproxy", "%d jobgate, nutcracker%s, 3 redis-server; %d clients, %d jobs"
                    % (instances, " (redis_auth)" if password else "", clients, jobs))
    procs = []
    try:
        shards = [RedisNode(password=password).start() for _ in range(3)]
        procs += shards
        nut = Nutcracker(shards, password=password).start()
        procs.append(nut)
        sim = LoggingSim(init_ms=init_ms, running_ms=running_ms).start()
        procs.append(sim)
        url = "redis://127.0.0.1:%d" % nut.port
        extra = "  redis_notify: poll\n" + ("  redis_budget: %s\n" % redis_budget if redis_budget else "")
        if password:
            secret = os.path.join(nut.dir, "redis-password")
            with os.fdopen(os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
                f.write(password + "\n")
            extra += "  redis_password_file: %s\n" % secret
        gates = [ClusterJobgate(sim.url, url, cache_extra=extra).start() for _ in range(instances)]
        procs += gates
        for g in gates:
            wait_until(lambda: g.cache_health()["state"] == "up", 10, "jobgate up on nutcracker")
            h = g.cache_health()
            if h["coalescing"] != "poll" or h.get("endpoint") != "127.0.0.1:%d" % nut.port:
                report.fail("jobgate's cache health on nutcracker: %r" % h)

        project = hex32()
        job_ids = [hex32() for _ in range(jobs)]
        for j in job_ids:
            sim.define_job(j, init_ms=init_ms, running_ms=running_ms)
        lifecycle_s = (init_ms + running_ms) / 1000.0
        targets = [(gates[i % instances].port, job_path(project, job_ids[i % jobs])) for i in range(clients)]
        load = Pollers(targets, interval, TOKEN).start()
        started = time.monotonic()
        time.sleep(lifecycle_s + PENDING_TTL_S + tail_s)
        load.stop()
        elapsed = time.monotonic() - started
        time.sleep(0.6)  # nutcracker's stats are aggregated every 500 ms

        answers = sim.answers()
        pending = [sum(n for s, n in answers[j].items() if s not in TERMINAL) for j in job_ids]
        after = [sum(n for s, n in answers[j].items() if s in TERMINAL) for j in job_ids]
        statuses = load.statuses()
        undocumented = sum(n for s, n in statuses.items() if s not in DOCUMENTED)
        saw_final = sum(1 for c in load.clients if any(a[2] in TERMINAL for a in c.data.answers))
        disordered = sum(1 for c in load.clients if out_of_order(c.data.answers))
        bound = lifecycle_s / PENDING_TTL_S + 1
        stats = nut.stats()
        refusals = nut.refusals()
        keys = [len(s.jobgate_keys()) for s in shards]
        xc = load.x_cache()

        report.add("client requests", load.requests(), "")
        report.add("client requests/s", "%.0f" % (load.requests() / elapsed), "")
        report.add("X-Cache", x_cache_text(xc), "")
        redis_timeouts = sum(g.cache_health()["timeouts"] for g in gates)
        report.add("Redis lookups over the budget (all instances)", redis_timeouts, "")
        report.add("answers outside the documented table", undocumented, "0", undocumented == 0)
        report.add("non-200 answers", sum(n for s, n in statuses.items() if s != 200), "0",
                   all(s == 200 for s in statuses))
        report.add("connection errors", sum(load.errors.values()), "0", not load.errors)
        report.add("clients that saw the final state", "%d/%d" % (saw_final, clients), "all", saw_final == clients)
        report.add("clients that saw states out of order", disordered, "0", disordered == 0)
        report.add("upstream calls, all jobs", sum(pending) + sum(after), "")
        report.add("upstream calls per job once terminal (min-max)", "%d-%d" % (min(after), max(after)), "exactly 1",
                   min(after) == 1 and max(after) == 1)
        report.add("upstream calls per job before (max)", max(pending),
                   "<= %.1f (%.0f s / %.0f s TTL + 1)" % (bound, lifecycle_s, PENDING_TTL_S), max(pending) <= bound)
        # ketama spreads keys unevenly (one shard may take 15 % of them): with
        # the quick run's 10 jobs a shard holds none about one run in ten, so
        # there the bound is "spread over shards", and "every shard" from 50.
        if len(job_ids) >= 50:
            report.add("entries per shard", " / ".join(str(k) for k in keys), "each > 0", all(k > 0 for k in keys))
        else:
            report.add("entries per shard", " / ".join(str(k) for k in keys), ">= 2 shards > 0",
                       sum(1 for k in keys if k > 0) >= 2)
        report.add("nutcracker client_err / forward_error", "%d / %d" % (stats["client_err"], stats["forward_error"]),
                   "0 / 0", stats["client_err"] == 0 and stats["forward_error"] == 0)
        report.add("commands nutcracker refused (its log)", len(refusals), "0", not refusals)
        for line in refusals[:3]:
            report.fail("nutcracker: " + line)
        if password:
            shown = [g.port for g in gates if password in g.log_text() or password in g.admin(
                "/healthz").body.decode() or password in g.admin("/metrics").body.decode()]
            report.add("instances showing the password (log, /healthz, /metrics)", len(shown), "0", not shown)
        if redis_timeouts and max(pending) > bound:
            report.fail("%d Redis lookups ran past the budget (a busy machine?): those requests went upstream by "
                        "design" % redis_timeouts)
    except Exception as e:
        report.fail("%s: %s" % (type(e).__name__, e))
    finally:
        stop_quietly(procs, report)
    return report


# ----------------------------------------------------- the sentinel scenario


def sentinel(instances=2, clients=40, jobs=40, interval=0.1, settle_s=2.0, after_s=3.0, recover_within_s=30.0):
    """A master, a replica and three sentinels; `instances` jobgates on
    sentinel://; `clients` clients polling `jobs` jobs (half of them never
    finish, so that they keep going to Redis and upstream); kill -9 of the
    master after `settle_s`; measured until caching resumes on the new
    master, then `after_s` more of load."""
    report = Report("sentinel", "%d jobgate, 1 master + 1 replica, 3 sentinels; %d clients, kill -9 of the master"
                    % (instances, clients))
    procs = []
    try:
        master = RedisNode().start()
        procs.append(master)
        replica = RedisNode(["--replicaof", "127.0.0.1", master.port]).start()
        procs.append(replica)
        wait_until(lambda: replica.info_field("replication", "master_link_status") == "up", 10, "replica in sync")
        sentinels = [Sentinel(master.port) for _ in range(3)]
        procs += sentinels
        for s in sentinels:
            s.start()

        def sentinels_ready():
            infos = [s.master_info() for s in sentinels]
            return all(i.get("num-other-sentinels") == "2" and i.get("num-slaves") == "1" for i in infos)

        wait_until(sentinels_ready, 20, "sentinels know each other and the replica")
        sim = LoggingSim().start()
        procs.append(sim)
        url = "sentinel://%s/%s" % (",".join("127.0.0.1:%d" % s.port for s in sentinels), MASTER_NAME)
        gates = [ClusterJobgate(sim.url, url).start() for _ in range(instances)]
        procs += gates
        for g in gates:
            wait_until(lambda: g.cache_health()["state"] == "up", 10, "jobgate up on the master")
            endpoint = g.cache_health().get("endpoint")
            if endpoint != "127.0.0.1:%d" % master.port:
                report.fail("endpoint before the failover: %r, expected the master's" % endpoint)

        project = hex32()
        job_ids = [hex32() for _ in range(jobs)]
        for i, j in enumerate(job_ids):  # half of them stay pending: their answers keep expiring
            sim.define_job(j, init_ms=600000 if i % 2 else 1000, running_ms=2000)
        targets = [(gates[i % instances].port, job_path(project, job_ids[i % jobs])) for i in range(clients)]
        load = Pollers(targets, interval, TOKEN).start()
        time.sleep(settle_s)

        killed = time.monotonic()
        master.kill()
        new_master = "127.0.0.1:%d" % replica.port
        switched = resumed = None
        probes = 0
        while time.monotonic() - killed < recover_within_s and resumed is None:
            now = time.monotonic()
            if switched is None and all(g.cache_health().get("endpoint") == new_master for g in gates):
                switched = now
            job = hex32()
            first = request(gates[0].port, job_path(project, job))
            second = request(gates[-1].port, job_path(project, job))
            probes += 1
            key = "%s{%s:%s:%s}:p" % (KEY_PREFIX, RULE, project, job)
            if (first.status == 200 and second.header("x-cache") == "HIT" and replica.cli("EXISTS", key) == "1"):
                resumed = time.monotonic()
                switched = switched or resumed
                break
            time.sleep(0.1)
        time.sleep(after_s)
        load.stop()

        statuses = load.statuses()
        undocumented = sum(n for s, n in statuses.items() if s not in DOCUMENTED)
        xc = load.x_cache()
        named = [s.master_port_named() for s in sentinels]
        report.add("client requests", load.requests(), "")
        report.add("X-Cache", x_cache_text(xc), "")
        report.add("failed requests (answers outside the documented table)", undocumented, "0", undocumented == 0)
        report.add("connection errors", sum(load.errors.values()), "0", not load.errors)
        report.add("non-200 answers", sum(n for s, n in statuses.items() if s != 200), "")
        report.add("sentinels naming the replica as master", "%d/3" % named.count(replica.port), "3/3",
                   named.count(replica.port) == 3)
        report.add("kill -9 to every jobgate on the new master (s)",
                   "%.2f" % (switched - killed) if switched else "never", "< %.0f" % recover_within_s, bool(switched))
        report.add("kill -9 to caching resumed (s)", "%.2f" % (resumed - killed) if resumed else "never",
                   "< %.0f" % recover_within_s, bool(resumed))
        report.add("probes until then", probes, "")
        for g in gates:
            h = g.cache_health()
            report.add("jobgate :%d cache state, endpoint" % g.port, "%s, %s" % (h["state"], h.get("endpoint")),
                       "up, " + new_master, h["state"] == "up" and h.get("endpoint") == new_master)
    except Exception as e:
        report.fail("%s: %s" % (type(e).__name__, e))
    finally:
        stop_quietly(procs, report)
    return report


# ----------------------------------------------- the Redis Cluster scenario


def cluster_port():
    """A free loopback port P whose cluster bus port, P + 10000, is free
    too (and below 65536)."""
    for _ in range(200):
        port = random.randint(20000, 55000)
        socks = []
        try:
            for p in (port, port + 10000):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise TestFailure("no free port pair P, P+10000 for a cluster node")


def make_pki(folder):
    """A CA and, signed by it, a server certificate for 127.0.0.1 (openssl
    CLI). Returns {name: path}."""
    p = {n: os.path.join(folder, n) for n in ("ca.crt", "ca.key", "server.crt", "server.key", "server.csr",
                                              "san.cnf")}
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def openssl(*args):
        out = subprocess.run([OPENSSL] + list(args), capture_output=True, timeout=60)
        if out.returncode != 0:
            raise TestFailure("openssl %s: %s" % (args[0], out.stderr.decode()))

    openssl("req", "-x509", *ec, "-keyout", p["ca.key"], "-out", p["ca.crt"], "-days", "2", "-subj", "/CN=jobgate ca")
    with open(p["san.cnf"], "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("req", "-new", *ec, "-keyout", p["server.key"], "-out", p["server.csr"], "-subj", "/CN=redis")
    openssl("x509", "-req", "-CA", p["ca.crt"], "-CAkey", p["ca.key"], "-CAcreateserial", "-in", p["server.csr"],
            "-out", p["server.crt"], "-days", "2", "-extfile", p["san.cnf"])
    return p


class ClusterNode(RedisNode):
    """A redis-server with --cluster-enabled yes (its nodes.conf in its own
    temp dir), node timeout 1 s, on a port whose bus port (+10000) is free;
    `password`: requirepass and masterauth; `pki` (make_pki): TLS only
    (--port 0 --tls-port), for clients, the cluster bus and replication."""

    def __init__(self, password=None, pki=None):
        extra = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "1000"]
        if password:
            extra += ["--masterauth", password]
        super().__init__(extra=extra, password=password)
        self.port = cluster_port()
        self.pki = pki

    def start(self):
        if not self.pki:
            return super().start()
        args = [REDIS_SERVER, "--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", self.dir, "--daemonize", "no", "--loglevel", "warning",
                "--tls-cert-file", self.pki["server.crt"], "--tls-key-file", self.pki["server.key"],
                "--tls-ca-cert-file", self.pki["ca.crt"], "--tls-auth-clients", "no", "--tls-cluster", "yes",
                "--tls-replication", "yes"] + self.extra
        self.spawn(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, proc=self.proc)
        wait_until(lambda: self.cli("PING") == "PONG", 10, "redis PING over TLS")
        return self

    def cli_args(self):
        """redis-cli's options to reach this node (TLS, password)."""
        args = ["-p", str(self.port)]
        if self.pki:
            args += ["--tls", "--cacert", self.pki["ca.crt"]]
        if self.password:
            args += ["--no-auth-warning", "-a", self.password]
        return args

    def cli(self, *args):
        out = subprocess.run([REDIS_CLI] + self.cli_args() + ["--raw"] + [str(a) for a in args], capture_output=True,
                             timeout=10)
        return out.stdout.decode("utf-8", "replace").strip()

    def addr(self):
        return "127.0.0.1:%d" % self.port

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def cluster_info(self):
        return dict(line.split(":", 1) for line in self.cli("CLUSTER", "INFO").splitlines() if ":" in line)

    def role(self):
        lines = self.cli("ROLE").splitlines()
        return lines[0] if lines else None

    def keys(self, pattern):
        """This node's own keys matching `pattern` (SCAN: not the cluster's)."""
        return [k for k in self.cli("--scan", "--pattern", pattern).splitlines() if k]


def redis_cluster(password=None, pki=None):
    """6 redis-servers joined by `redis-cli --cluster create --cluster-replicas
    1` (3 masters, 3 replicas); returns the nodes once every one says
    cluster_state:ok and knows the 6, and every replica's link to its
    master is up."""
    nodes = [ClusterNode(password=password, pki=pki).start() for _ in range(6)]
    try:
        args = [REDIS_CLI] + nodes[0].cli_args()[2:] + ["--cluster", "create"] + [n.addr() for n in nodes] + [
            "--cluster-replicas", "1", "--cluster-yes"]
        out = subprocess.run(args, capture_output=True, timeout=60)
        if out.returncode != 0:
            raise TestFailure("redis-cli --cluster create failed: %r" % (out.stdout + out.stderr)[-600:])

        def formed():
            infos = [n.cluster_info() for n in nodes]
            return all(i.get("cluster_state") == "ok" and i.get("cluster_known_nodes") == "6" for i in infos) and \
                sorted(n.role() for n in nodes) == ["master"] * 3 + ["slave"] * 3

        wait_until(formed, 60, "the cluster formed (state ok, 6 nodes known, 3 masters)")
        # A replica that has not synced with its master yet would not take
        # over from it (cluster-replica-validity-factor): wait for the links.
        wait_until(lambda: all(n.info_field("replication", "master_link_status") == "up"
                               for n in nodes if n.role() == "slave"), 60, "every replica in sync with its master")
    except Exception:
        for n in nodes:
            n.stop()
        raise
    return nodes


def masters_of(nodes):
    return [n for n in nodes if n.alive() and n.role() == "master"]


def rcluster(instances=3, jobs=24, interval=0.25, init_ms=1000, running_ms=2000, tail_s=1.0, redis_budget=None,
             password=None, kill=True, fail_clients=24, settle_s=1.0, after_s=1.0, recover_within_s=45.0,
             clients=None, tls=False):
    """A Redis Cluster of 3 masters and 3 replicas, `instances` jobgates on
    cluster://. Coalescing: each of `jobs` jobs is polled through every
    instance through its lifecycle (one upstream call per job once terminal,
    at most duration/TTL + 1 before); terminal answers on all 3 masters.
    With `kill`: `fail_clients` clients poll jobs (half never finish), a
    master is killed with kill -9, and the time until caching resumes on
    its promoted replica is measured; no answer outside the documented
    table, no connection error. `clients` (tests/cluster/run --clients)
    stands for `fail_clients`. `tls`: the nodes speak TLS only (clients,
    bus, replication), and jobgate verifies them against the test's CA."""
    fail_clients = clients or fail_clients
    report = Report("rcluster", "%d jobgate, Redis Cluster 3 masters + 3 replicas%s%s; %d jobs x %d instances%s"
                    % (instances, " (requirepass)" if password else "", " (TLS)" if tls else "", jobs, instances,
                       ", kill -9 of a master" if kill else ""))
    procs = []
    try:
        started = time.monotonic()
        pki_dir = tempfile.mkdtemp(prefix="jg-cluster-pki-") if tls else None
        pki = make_pki(pki_dir) if tls else None
        nodes = redis_cluster(password=password, pki=pki)
        procs += nodes
        report.add("cluster formed in (s)", "%.1f" % (time.monotonic() - started), "")
        sim = LoggingSim(init_ms=init_ms, running_ms=running_ms).start()
        procs.append(sim)
        url = "cluster://" + ",".join(n.addr() for n in nodes[:3])
        extra = "  redis_budget: %s\n" % redis_budget if redis_budget else ""
        if tls:
            extra += "  redis_tls: on\n  redis_tls_ca_file: %s\n" % pki["ca.crt"]
        if password:
            secret = os.path.join(nodes[0].dir, "redis-password")
            with os.fdopen(os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
                f.write(password + "\n")
            extra += "  redis_password_file: %s\n" % secret
        gates = [ClusterJobgate(sim.url, url, cache_extra=extra).start() for _ in range(instances)]
        procs += gates
        for g in gates:
            wait_until(lambda: g.cache_health()["state"] == "up", 20, "jobgate up on the cluster")
            h = g.cache_health()
            cl = h.get("cluster") or {}
            if cl.get("masters") != 3 or cl.get("slots_covered") != 16384 or cl.get("masters_up") != 3:
                report.fail("jobgate's cache health on the cluster: %r" % h)
        wait_until(lambda: all(g.cache_health()["coalescing"] == "pubsub" for g in gates), 20,
                   "every instance subscribed")

        # --- one upstream call per job, across the instances and the slots
        project = hex32()
        job_ids = [hex32() for _ in range(jobs)]
        for j in job_ids:
            sim.define_job(j, init_ms=init_ms, running_ms=running_ms)
        lifecycle_s = (init_ms + running_ms) / 1000.0
        targets = [(g.port, job_path(project, j)) for j in job_ids for g in gates]
        load = Pollers(targets, interval, TOKEN).start()
        began = time.monotonic()
        time.sleep(lifecycle_s + PENDING_TTL_S + tail_s)
        load.stop()
        elapsed = time.monotonic() - began
        answers = sim.answers()
        pending = [sum(n for s, n in answers[j].items() if s not in TERMINAL) for j in job_ids]
        after = [sum(n for s, n in answers[j].items() if s in TERMINAL) for j in job_ids]
        statuses = load.statuses()
        undocumented = sum(n for s, n in statuses.items() if s not in DOCUMENTED)
        saw_final = sum(1 for c in load.clients if any(a[2] in TERMINAL for a in c.data.answers))
        disordered = sum(1 for c in load.clients if out_of_order(c.data.answers))
        bound = lifecycle_s / PENDING_TTL_S + 1
        masters = masters_of(nodes)
        # Each job's terminal key, on the master that serves its slot now
        # (asked without -c: a MOVED means another master serves it).
        terminal_keys = [0] * len(masters)
        misplaced = []
        for j in job_ids:
            key = "%s{%s:%s:%s}:t" % (KEY_PREFIX, RULE, project, j)
            owners = [i for i, m in enumerate(masters) if owner_is(m, key)]
            if len(owners) == 1 and masters[owners[0]].cli("EXISTS", key) == "1":
                terminal_keys[owners[0]] += 1
            else:
                misplaced.append(key)
        epochs = [n.cluster_info().get("cluster_current_epoch") for n in masters]
        redis_timeouts = sum(g.cache_health()["timeouts"] for g in gates)
        report.add("client requests", load.requests(), "")
        report.add("client requests/s", "%.0f" % (load.requests() / elapsed), "")
        report.add("X-Cache", x_cache_text(load.x_cache()), "")
        report.add("Redis lookups over the budget (all instances)", redis_timeouts, "")
        report.add("answers outside the documented table", undocumented, "0", undocumented == 0)
        report.add("connection errors", sum(load.errors.values()), "0", not load.errors)
        report.add("clients that saw the final state", "%d/%d" % (saw_final, len(targets)), "all",
                   saw_final == len(targets))
        report.add("clients that saw states out of order", disordered, "0", disordered == 0)
        report.add("upstream calls per job once terminal (min-max)", "%d-%d" % (min(after), max(after)), "exactly 1",
                   min(after) == 1 and max(after) == 1)
        report.add("upstream calls per job before (max)", max(pending),
                   "<= %.1f (%.0f s / %.0f s TTL + 1)" % (bound, lifecycle_s, PENDING_TTL_S), max(pending) <= bound)
        report.add("terminal answers per master (on the master of their slot)",
                   " / ".join(str(k) for k in terminal_keys), "3 masters, each > 0, %d in all" % jobs,
                   len(terminal_keys) == 3 and all(k > 0 for k in terminal_keys) and sum(terminal_keys) == jobs)
        for key in misplaced[:3]:
            report.fail("%s: not found on the master of its slot" % key)
        # 6 after --cluster create; more means a failover (a node timed out on a busy machine)
        report.add("cluster_current_epoch (masters)", " / ".join(str(e) for e in epochs), "")
        if redis_timeouts and max(pending) > bound:
            report.fail("%d Redis lookups ran past the budget (a busy machine?): those requests went upstream by "
                        "design" % redis_timeouts)
        if password:
            shown = [g.port for g in gates if password in g.log_text() or password in g.admin(
                "/healthz").body.decode() or password in g.admin("/metrics").body.decode()]
            report.add("instances showing the password (log, /healthz, /metrics)", len(shown), "0", not shown)
        redirections(report, nodes, gates, sim, project)
        if kill:
            failover(report, nodes, gates, sim, project, fail_clients, interval, settle_s, after_s, recover_within_s)
    except Exception as e:
        report.fail("%s: %s" % (type(e).__name__, e))
    finally:
        stop_quietly(procs, report)
        if tls:
            shutil.rmtree(pki_dir, ignore_errors=True)
    return report


def redirections(report, nodes, gates, sim, project):
    """A slot moves from master A to master B while the instances' maps
    still say A: during the migration (A MIGRATING, B IMPORTING) A answers
    ASK for the job's keys, which is followed (ASKING, then the command on
    B: the answer is stored there); a lookup of several keys of which B has
    only some is refused with TRYAGAIN, as Redis does mid-migration, and
    goes upstream. Once the slot is B's, A answers MOVED, followed too: the
    answer stored through ASK is a HIT through the third instance."""
    a, b = masters_of(nodes)[:2]
    job = None
    for _ in range(500):  # a job whose keys live on A
        candidate = hex32()
        if owner_is(a, "%s{%s:%s:%s}:t" % (KEY_PREFIX, RULE, project, candidate)):
            job = candidate
            break
    if job is None:
        report.fail("no job found on master A")
        return
    key = "%s{%s:%s:%s}:t" % (KEY_PREFIX, RULE, project, job)
    slot = a.cli("CLUSTER", "KEYSLOT", key)
    id_a, id_b = a.cli("CLUSTER", "MYID"), b.cli("CLUSTER", "MYID")
    sim.define_job(job, init_ms=0, running_ms=0)

    def redirects():
        return sum(g.cache_health()["cluster"]["redirects"] for g in gates)

    before = redirects()
    b.cli("CLUSTER", "SETSLOT", slot, "IMPORTING", id_a)
    a.cli("CLUSTER", "SETSLOT", slot, "MIGRATING", id_b)
    first = request(gates[0].port, job_path(project, job))
    second = request(gates[1].port, job_path(project, job))
    asked = redirects() - before
    report.add("ASK (slot migrating): two requests through two instances",
               "%d %s, %d %s" % (first.status, first.header("x-cache"), second.status, second.header("x-cache")),
               "200, 200", first.status == 200 and second.status == 200)
    report.add("ASK redirections followed", asked, "> 0", asked > 0)
    for m in masters_of(nodes):
        m.cli("CLUSTER", "SETSLOT", slot, "NODE", id_b)
    before = redirects()
    third = request(gates[2].port, job_path(project, job))
    moved = redirects() - before
    report.add("MOVED (slot moved to B): a HIT through the third instance",
               "%d %s" % (third.status, third.header("x-cache")), "200 HIT",
               third.status == 200 and third.header("x-cache") == "HIT")
    report.add("MOVED redirections followed", moved, "> 0", moved > 0)
    calls = sum(sim.answers()[job].values())
    report.add("upstream calls for the moving job", calls, "<= 2 (TRYAGAIN mid-migration goes upstream)",
               1 <= calls <= 2)


def failover(report, nodes, gates, sim, project, clients, interval, settle_s, after_s, recover_within_s):
    """kill -9 of one master under load; measured until caching resumes."""
    job_ids = [hex32() for _ in range(clients)]
    for i, j in enumerate(job_ids):  # half of them stay pending: their answers keep expiring
        sim.define_job(j, init_ms=600000 if i % 2 else 1000, running_ms=2000)
    targets = [(gates[i % len(gates)].port, job_path(project, job_ids[i])) for i in range(clients)]
    load = Pollers(targets, interval, TOKEN).start()
    time.sleep(settle_s)
    victim = masters_of(nodes)[0]
    heir = next((n for n in nodes if n.role() == "slave" and n.cli("ROLE").splitlines()[2:3] == [str(victim.port)]),
                None)
    refreshes_before = sum(g.cache_health()["cluster"]["map_refreshes"] for g in gates)
    killed = time.monotonic()
    victim.kill()
    survivor = next(n for n in nodes if n.alive())
    promoted = resumed = None
    probes = 0
    while time.monotonic() - killed < recover_within_s and resumed is None:
        if promoted is None and survivor.cluster_info().get("cluster_state") == "ok" and len(masters_of(nodes)) == 3:
            promoted = time.monotonic()
        job = hex32()
        first = request(gates[0].port, job_path(project, job))
        second = request(gates[-1].port, job_path(project, job))
        probes += 1
        key = "%s{%s:%s:%s}:p" % (KEY_PREFIX, RULE, project, job)
        if first.status == 200 and second.header("x-cache") == "HIT" and \
                survivor.cli("-c", "EXISTS", key) == "1":
            resumed = time.monotonic()
        else:
            time.sleep(0.1)
    # caching resumed on the slots the killed master served: a job whose key
    # lives there (now on its promoted replica) is a HIT through another instance
    slot_job = None
    if resumed is not None and heir is not None:
        wait_until(lambda: heir.role() == "master", recover_within_s, "the killed master's replica promoted")
        for _ in range(500):
            job = hex32()
            if owner_is(heir, "%s{%s:%s:%s}:p" % (KEY_PREFIX, RULE, project, job)):
                slot_job = job
                break
    slot_hit = False
    if slot_job:
        first = request(gates[0].port, job_path(project, slot_job))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not slot_hit:
            second = request(gates[-1].port, job_path(project, slot_job))
            slot_hit = first.status == 200 and second.header("x-cache") == "HIT"
            if not slot_hit:
                time.sleep(0.1)
    time.sleep(after_s)
    load.stop()
    statuses = load.statuses()
    undocumented = sum(n for s, n in statuses.items() if s not in DOCUMENTED)
    refreshes = sum(g.cache_health()["cluster"]["map_refreshes"] for g in gates) - refreshes_before
    report.add("failover: client requests", load.requests(), "")
    report.add("failover: X-Cache", x_cache_text(load.x_cache()), "")
    report.add("failover: answers outside the documented table", undocumented, "0", undocumented == 0)
    report.add("failover: connection errors", sum(load.errors.values()), "0", not load.errors)
    report.add("failover: non-200 answers", sum(n for s, n in statuses.items() if s != 200), "")
    report.add("kill -9 to replica promoted, cluster_state ok (s)",
               "%.2f" % (promoted - killed) if promoted else "never", "< %.0f" % recover_within_s, bool(promoted))
    report.add("kill -9 to caching resumed (s)", "%.2f" % (resumed - killed) if resumed else "never",
               "< %.0f" % recover_within_s, bool(resumed))
    report.add("probes until then", probes, "")
    report.add("a job on the promoted replica's slots cached across instances", "yes" if slot_hit else "no", "yes",
               slot_hit)
    report.add("slot map refreshes (all instances)", refreshes, "> 0", refreshes > 0)
    for g in gates:
        h = g.cache_health()
        cl = h.get("cluster") or {}
        report.add("jobgate :%d cache state, masters up, slots" % g.port,
                   "%s, %s, %s" % (h["state"], cl.get("masters_up"), cl.get("slots_covered")), "up, 3, 16384",
                   h["state"] == "up" and cl.get("masters_up") == 3 and cl.get("slots_covered") == 16384)


def owner_is(node, key):
    """Does `node` serve `key`'s slot (it answers for the key without MOVED)?"""
    out = subprocess.run([REDIS_CLI] + node.cli_args() + ["EXISTS", key], capture_output=True, timeout=10)
    return b"MOVED" not in out.stdout + out.stderr


SCENARIOS = {
    "twemproxy": twemproxy,
    "sentinel": sentinel,
    "rcluster": rcluster,
}
