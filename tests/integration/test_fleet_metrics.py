#!/usr/bin/env python3
"""One /metrics per instance: a real Prometheus server scrapes jobgate on 4
workers every 0.5 s while clients send N requests, each on a new connection
(so SO_REUSEPORT spreads them, and the scrapes, over every worker); a worker
is killed and restarted half-way. Prometheus must have seen exactly N
answered requests and no counter reset: every worker adds to one set of
counters in shared memory, and a restarted worker resets none of them."""
import json
import os
import shutil
import signal
import tempfile
import threading
import time
import urllib.parse
import urllib.request

from harness import (Jobgate, Redis, Sim, TestFailure, check, eq, free_port, hex32, procs, run, seed_path, stop_all,
                     test, wait_port, wait_until)

PROJECT = hex32()
N = 800            # answered requests, each on its own connection
CLIENTS = 8
PROMETHEUS = shutil.which("prometheus")


class Prometheus(procs.Process):
    """Debian's prometheus on a free loopback port, scraping `target` every 0.5 s."""

    stop_order = 1

    def __init__(self, target):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="jobgate-prom-")
        self.config = os.path.join(self.dir, "prometheus.yml")
        with open(self.config, "w") as f:
            f.write("global:\n  scrape_interval: 500ms\n  scrape_timeout: 400ms\n"
                    "scrape_configs:\n  - job_name: jobgate\n    metrics_path: /metrics\n"
                    "    static_configs:\n      - targets: ['%s']\n" % target)

    def start(self):
        self.log = open(os.path.join(self.dir, "log"), "w")
        self.spawn([PROMETHEUS, "--config.file=" + self.config, "--storage.tsdb.path=" + os.path.join(self.dir, "data"),
                    "--web.listen-address=127.0.0.1:%d" % self.port, "--log.level=warn"],
                   stdout=self.log, stderr=self.log)
        wait_port(self.port, timeout=60, proc=self.proc)
        wait_until(self.ready, 60, "Prometheus ready")
        return self

    def ready(self):
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/-/ready" % self.port, timeout=5) as r:
                return r.status == 200
        except OSError:
            return False

    def query(self, expr):
        url = "http://127.0.0.1:%d/api/v1/query?%s" % (self.port, urllib.parse.urlencode({"query": expr}))
        with urllib.request.urlopen(url, timeout=10) as r:
            doc = json.load(r)
        eq(doc["status"], "success", "query %s" % expr)
        return doc["data"]["result"]

    def scalar(self, expr):
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def scrapes(self):
        """Scrapes that succeeded so far."""
        return self.scalar('sum_over_time(up{job="jobgate"}[10m])') or 0

    def stop(self):
        self.terminate()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def setup():
    env = {}
    env["redis"] = Redis().start()
    env["sim"] = Sim(init_ms=0, running_ms=0).start()
    env["gate"] = Jobgate(env["sim"].url, redis=env["redis"], extra_config="workers: 4\n",
                          upstream_token="cloud-token").start()
    return env


teardown = stop_all


def children(pid):
    with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
        return sorted(int(p) for p in f.read().split())


def send(gate, count, jobs, failures):
    """`count` GETs spread over CLIENTS threads, each on a new connection."""
    def one(k):
        for i in range(k, count, CLIENTS):
            r = gate.get(seed_path(PROJECT, jobs[i % len(jobs)]))
            if r.status != 200:
                failures.append(r.status)
    threads = [threading.Thread(target=one, args=(k,)) for k in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


@test
def prometheus_sees_every_request_of_every_worker(env):
    """sum(jobgate_requests_total) == N as Prometheus scraped it, resets() == 0 across a worker restart"""
    if PROMETHEUS is None:
        raise TestFailure("prometheus is not installed (.ci/install-deps installs it)")
    gate = env["gate"]
    wait_until(lambda: len(children(gate.proc.pid)) == 4, 20, "4 workers")
    prom = env["prometheus"] = Prometheus("127.0.0.1:%d" % gate.admin_port).start()
    wait_until(lambda: prom.scrapes() >= 2, 60, "Prometheus's first scrapes")
    baseline = prom.scalar("sum(jobgate_requests_total)") or 0
    eq(baseline, 0, "requests counted before the clients start")

    jobs = [hex32() for _ in range(20)]
    sim_before = env["sim"].total()
    failures = []
    send(gate, N // 2, jobs, failures)
    # A worker killed between the halves: the supervisor starts another, which must reset nothing.
    victim = children(gate.proc.pid)[1]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: len(children(gate.proc.pid)) == 4 and victim not in children(gate.proc.pid), 20,
               "the worker restarted")
    send(gate, N - N // 2, jobs, failures)
    eq(failures, [], "statuses other than 200")

    # Every scrape sees the instance: the last ones must all say N.
    done = prom.scrapes()
    wait_until(lambda: prom.scrapes() >= done + 6, 30, "6 more scrapes")
    eq(prom.scalar("sum(jobgate_requests_total)"), float(N), "sum(jobgate_requests_total)")
    eq(prom.scalar("min_over_time(sum(jobgate_requests_total)[1s:250ms])"), float(N), "the last scrapes' sums")
    for name in ("jobgate_requests_total", "jobgate_upstream_requests_total", "jobgate_events_total",
                 "jobgate_request_duration_seconds_count", "jobgate_redis_errors_total"):
        eq(prom.scalar("sum(resets(%s[10m]))" % name), 0.0, "resets(%s)" % name)
    # Upstream calls as the simulator counted them (about one per job: the lease may lose a race under load).
    eq(prom.scalar("sum(jobgate_upstream_requests_total)"), float(env["sim"].total() - sim_before),
       "upstream calls")
    eq(prom.scalar("sum(jobgate_request_duration_seconds_count)"), float(N), "the latency histogram's count")
    ups = prom.query('up{job="jobgate"}')
    eq([u["value"][1] for u in ups], ["1"], "the target is up")


@test
def every_exposition_is_whole(env):
    """every worker's exposition: no (null), no series twice"""
    gate = env["gate"]
    for _ in range(12):
        text = gate.admin("/metrics").body.decode()
        check("(null)" not in text, "metrics print (null)")
        series = [line.rsplit(" ", 1)[0] for line in text.splitlines() if line and not line.startswith("#")]
        duplicated = sorted({s for s in series if series.count(s) > 1})
        check(not duplicated, "metrics series given twice: %s" % duplicated)


if __name__ == "__main__":
    run(setup, teardown)
