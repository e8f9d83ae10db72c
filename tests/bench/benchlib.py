#!/usr/bin/env python3
"""Helpers of tests/bench/run (Python standard library only).

The shell script starts and stops the servers; this file does what is easier
in Python: free ports, the job bodies, an HTTP client that warms caches, fills
jobgate and fires a burst of simultaneous requests, the wrk runs with their
before/after counters, and the report (table, markdown, JSON). Ports, waits,
the HTTP client loop and the simulator's control API are the shared test
support's (tests/lib: procs.py, load.py, sim.py).

Subcommands (all print JSON or plain lines on stdout):
  ports N                          N free TCP ports on 127.0.0.1
  wait HOST:PORT SECONDS           until something accepts connections there
  gen WWW OUTDIR                   the 10,000 job files, path lists, nginx body template
  warm HOST:PORT PATHFILE [--concurrency N] [--out FILE]
                                   one GET per path; exit 1 unless every answer is 200
  burst HOST:PORT PATH N           N connections, opened first, then N GETs sent at once
  http METHOD HOST:PORT PATH       one request; prints the body
  metrics HOST:PORT                jobgate's /metrics (its admin listener), summed into a few counters
  rss PID                          VmRSS of a process, in bytes
  wrk ...                          one wrk run, recorded (see cmd_wrk)
  record FILE KEY=VALUE...         append a record (values parsed as JSON when they are)
  render TEMPLATE OUT KEY=VALUE... a config from its template (@KEY@; KEY=@FILE reads a file)
  report RESULTS META OUTDIR       the table on stdout, OUTDIR/latest.md and latest.json
"""

import argparse
import hashlib
import json
import os
import re
import statistics
import string
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from load import fetch as _fetch  # noqa: E402
from procs import TestFailure, free_ports, wait_port  # noqa: E402
from sim import SimControl  # noqa: E402

TOKEN = "bench"

# The classic ELB job body, SUCCESS, as the "query job status" API documents
# it (see docs/huawei-api.md section 1 and tests/sim/jobsim.c). The same text is
# a Python string.Template and an nginx string: ${...} means the same in both.
BODY_TEMPLATE = (
    '{"status":"SUCCESS","entities":{"elb":{"id":"${j8}-${j4a}-${j4b}-${j4c}-${j12}",'
    '"name":"elb-${j8}","description":"load balancer created for the jobgate benchmark",'
    '"type":"External","status":"ACTIVE","bandwidth":10,"vip_address":"192.0.2.10",'
    '"tenant_id":"${project}","admin_state_up":1,'
    '"vpc_id":"7c4fa3ce-85b5-4a1d-9e0f-2b6d2f9c1e53"}},'
    '"job_id":"${j8}${j4a}${j4b}${j4c}${j12}","job_type":"createELB",'
    '"begin_time":"2024-05-06 07:08:09","end_time":"2024-05-06 07:09:42",'
    '"error_code":null,"fail_reason":null,"sub_jobs":[]}'
)
# The nginx location that makes bodies on the fly captures these names.
NGINX_GEN_REGEX = (
    r"^/v1\.0/(?<project>[0-9a-f]{32})/jobs/"
    r"(?<j8>[0-9a-f]{8})(?<j4a>[0-9a-f]{4})(?<j4b>[0-9a-f]{4})(?<j4c>[0-9a-f]{4})(?<j12>[0-9a-f]{12})$"
)


def hexid(text):
    return hashlib.md5(text.encode()).hexdigest()


def job_body(project, job):
    return string.Template(BODY_TEMPLATE).substitute(
        project=project, j8=job[0:8], j4a=job[8:12], j4b=job[12:16], j4c=job[16:20], j12=job[20:32]
    )


def job_path(project, job):
    return "/v1.0/%s/jobs/%s" % (project, job)


def parse_hostport(text):
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


# ---------------------------------------------------------------- ports, wait


def cmd_ports(args):
    print(" ".join(str(p) for p in free_ports(args.n)))


def cmd_wait(args):
    host, port = parse_hostport(args.addr)
    try:
        wait_port(port, timeout=args.seconds, host=host)
    except TestFailure:
        print("nothing listens on %s:%d after %.0f s" % (host, port, args.seconds), file=sys.stderr)
        return 1
    return 0


# ------------------------------------------------------------------- the data


def cmd_gen(args):
    """10 projects x 1,000 jobs as files under WWW; the path lists; the nginx template."""
    os.makedirs(args.outdir, exist_ok=True)
    paths = []
    sizes = []
    for p in range(10):
        project = hexid("bench-project-%d" % p)
        d = os.path.join(args.www, "v1.0", project, "jobs")
        os.makedirs(d, exist_ok=True)
        for j in range(1000):
            job = hexid("bench-job-%d-%d" % (p, j))
            body = job_body(project, job)
            with open(os.path.join(d, job), "w") as f:
                f.write(body)
            paths.append(job_path(project, job))
            sizes.append(len(body))
    # Interleave projects so that any prefix of the list spans them all.
    order = [paths[(i % 10) * 1000 + i // 10] for i in range(10000)]
    with open(os.path.join(args.outdir, "paths-10k.txt"), "w") as f:
        f.write("\n".join(order) + "\n")
    with open(os.path.join(args.outdir, "paths-100.txt"), "w") as f:
        f.write("\n".join(order[:100]) + "\n")
    # 100,000 other jobs for the memory scenario, answered by nginx's generator.
    mem = []
    for p in range(100):
        project = hexid("bench-mem-project-%d" % p)
        for j in range(1000):
            mem.append(job_path(project, hexid("bench-mem-job-%d-%d" % (p, j))))
    with open(os.path.join(args.outdir, "paths-100k.txt"), "w") as f:
        f.write("\n".join(mem) + "\n")
    with open(os.path.join(args.outdir, "nginx-gen-body.txt"), "w") as f:
        f.write(BODY_TEMPLATE)
    with open(os.path.join(args.outdir, "nginx-gen-regex.txt"), "w") as f:
        f.write(NGINX_GEN_REGEX)
    print(json.dumps({"files": len(sizes), "body_min": min(sizes), "body_max": max(sizes),
                      "body_mean": round(sum(sizes) / len(sizes), 1)}))


# ---------------------------------------------------------------- HTTP client


def fetch(addr, paths, concurrency, timeout=60.0, simultaneous=False, extra_headers=None):
    """GET every path once over `concurrency` keep-alive connections, or as a
    burst (simultaneous): tests/lib/load.py's fetch with the bench's token."""
    return _fetch(addr, paths, concurrency, TOKEN, timeout=timeout, simultaneous=simultaneous,
                  extra_headers=extra_headers)


def summarize(results):
    statuses, xcache, errors = {}, {}, {}
    for r in results:
        statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
        if r["xcache"]:
            xcache[r["xcache"]] = xcache.get(r["xcache"], 0) + 1
        if r["error"]:
            errors[r["error"]] = errors.get(r["error"], 0) + 1
    return {"requests": len(results), "status": statuses, "x_cache": xcache, "errors": errors,
            "body_bytes": sum(r["body_len"] for r in results if r["status"] == 200)}


def read_paths(fname):
    with open(fname) as f:
        return [line.strip() for line in f if line.strip()]


def cmd_warm(args):
    paths = read_paths(args.pathfile)
    t0 = time.monotonic()
    res = fetch(parse_hostport(args.addr), paths, args.concurrency, timeout=args.timeout)
    out = summarize(res)
    out["seconds"] = round(time.monotonic() - t0, 3)
    bad = [r for r in res if r["status"] != 200]
    if bad:
        out["first_bad"] = bad[:3]
    text = json.dumps(out)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)
    return 1 if bad or len(res) != len(paths) else 0


def pct(values, p):
    """Nearest-rank percentile."""
    if not values:
        return None
    v = sorted(values)
    k = max(0, min(len(v) - 1, int(round(p / 100.0 * len(v) + 0.5)) - 1))
    return v[k]


def involuntary_switches(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("nonvoluntary_ctxt_switches:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def cmd_burst(args):
    paths = [args.path] * args.n
    root = bench_root()
    load_before = sample_idle(0.5, root)
    before = involuntary_switches(args.pid) if args.pid else None
    snap_a = proc_snapshot()
    res = fetch(parse_hostport(args.addr), paths, args.n, timeout=args.timeout, simultaneous=True)
    snap_b = proc_snapshot()
    after = involuntary_switches(args.pid) if args.pid else None
    out = summarize(res)
    # A burst lasts well under a second: it is marked, not rerun (there are several).
    out["load"] = {"before": load_before, "during": other_load(snap_a, snap_b, root)}
    out["marked"] = load_verdict(out["load"]["before"], out["load"]["during"])
    if before is not None and after is not None:
        # the server was preempted this many times during the burst (other work on its CPU)
        out["server_preempted"] = after - before
    ok = [r for r in res if r["status"] == 200]
    if ok:
        # An answer's time: when its first bytes were read (the whole answer,
        # ~600 bytes, comes in one segment on loopback).
        lat = [(r["t_first"] - r["t_send"]) * 1000.0 for r in ok]
        done = sorted(r["t_first"] for r in ok)
        sends = [r["t_send"] for r in res]
        out.update({
            "latency_ms": {"min": round(min(lat), 2), "p50": round(pct(lat, 50), 2), "max": round(max(lat), 2)},
            # How long after the first answer (~ when upstream answered) the last waiter was answered.
            "spread_ms": round((done[-1] - done[0]) * 1000.0, 2),
            "send_window_ms": round((max(sends) - min(sends)) * 1000.0, 2),
            "kernel_receive_times": all(r.get("t_kernel") for r in ok),
        })
    if args.results:
        rec = json.loads(args.meta) if args.meta else {}
        rec.update(out)
        if args.jobsim:
            rec["upstream_requests"] = sim_stats(args.jobsim)["jobs"].get(args.job, 0)
        with open(args.results, "a") as f:
            f.write(json.dumps(rec) + "\n")
        out = rec
    print("  " + json.dumps({k: out.get(k) for k in ("server", "upstream_requests", "status", "latency_ms",
                                                      "spread_ms", "send_window_ms", "server_preempted", "errors",
                                                      "marked")}),
          file=sys.stderr, flush=True)


def cmd_http(args):
    host, port = parse_hostport(args.addr)
    import http.client
    c = http.client.HTTPConnection(host, port, timeout=10)
    c.request(args.method, args.path, headers={"X-Auth-Token": TOKEN})
    r = c.getresponse()
    body = r.read().decode("utf-8", "replace")
    print(body)
    return 0 if 200 <= r.status < 300 else 1


def jobgate_metrics(addr):
    import http.client
    host, port = parse_hostport(addr)
    c = http.client.HTTPConnection(host, port, timeout=10)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    out = {"requests": {}, "upstream": {}, "memory_cache_entries": None, "memory_cache_bytes": None}
    for line in text.splitlines():
        m = re.match(r'jobgate_requests_total\{[^}]*status="([^"]*)",cache="([^"]*)"\} (\d+)', line)
        if m:
            k = "%s/%s" % (m.group(1), m.group(2))
            out["requests"][k] = out["requests"].get(k, 0) + int(m.group(3))
            continue
        m = re.match(r'jobgate_upstream_requests_total\{[^}]*status="([^"]*)"\} (\d+)', line)
        if m:
            out["upstream"][m.group(1)] = out["upstream"].get(m.group(1), 0) + int(m.group(2))
            continue
        m = re.match(r"jobgate_memory_cache_(entries|bytes) (\d+)", line)
        if m:
            out["memory_cache_" + m.group(1)] = int(m.group(2))
    return out


def cmd_metrics(args):
    print(json.dumps(jobgate_metrics(args.addr)))


def rss_bytes(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return None


def cmd_rss(args):
    print(rss_bytes(args.pid))


def count_lines(fname):
    try:
        with open(fname, "rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


def delta(before, after):
    out = {}
    for k, v in after.items():
        d = v - before.get(k, 0)
        if d:
            out[k] = d
    return out


# ------------------------------------------------------------ machine load
#
# A figure taken while other work used the CPUs says little about the servers.
# So every measured run samples the machine before and during the run: the CPU
# time of the whole machine (/proc/stat: user, nice, system and steal, not
# irq/softirq, which loopback traffic of the run itself costs) minus that of
# the bench's own processes (the process tree under BENCH_ROOT_PID, the
# `run` script: every server, wrk and the Python helpers), in CPUs. A run
# where that was above BUSY_CPU is marked; cmd_wrk reruns it up to --tries.

BUSY_CPU = 0.10  # other processes' CPU use, in CPUs, above which a run is marked


def proc_snapshot(proc="/proc"):
    """(time, busy ticks of the machine, steal ticks, {pid: (ppid, ticks, comm)})"""
    with open(os.path.join(proc, "stat")) as f:
        cpu = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...
    busy = cpu[0] + cpu[1] + cpu[2] + (cpu[7] if len(cpu) > 7 else 0)
    steal = cpu[7] if len(cpu) > 7 else 0
    procs = {}
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        try:
            with open(os.path.join(proc, name, "stat")) as f:
                text = f.read()
        except OSError:
            continue  # gone meanwhile
        comm = text[text.index("(") + 1:text.rindex(")")]
        fields = text[text.rindex(")") + 2:].split()
        # fields[0] is field 3 (state): ppid is field 4, utime 14, stime 15
        procs[int(name)] = (int(fields[1]), int(fields[11]) + int(fields[12]), comm)
    return time.monotonic(), busy, steal, procs


def tree_of(procs, root):
    """The pids of `root` and its descendants in a snapshot's process table."""
    children = {}
    for pid, (ppid, _, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in out:
            continue
        out.add(pid)
        todo.extend(children.get(pid, []))
    return out


def other_load(a, b, root, hz=None, top=3):
    """What processes outside `root`'s tree used between snapshots a and b:
    {"cpu": CPUs, "steal": CPUs, "own": CPUs, "seconds", "busiest": [[comm, pid, CPUs]...]}."""
    hz = hz or os.sysconf("SC_CLK_TCK")
    t0, busy0, steal0, p0 = a
    t1, busy1, steal1, p1 = b
    secs = max(t1 - t0, 1e-3)
    own_pids = tree_of(p0, root) | tree_of(p1, root)
    own = sum(p1[pid][1] - (p0[pid][1] if pid in p0 else 0) for pid in own_pids if pid in p1)
    per = []
    for pid, (_, ticks, comm) in p1.items():
        if pid not in own_pids:
            d = ticks - (p0[pid][1] if pid in p0 else 0)
            if d > 0:
                per.append((d, comm, pid))
    per.sort(reverse=True)
    other = max(busy1 - busy0 - own, 0)
    return {"cpu": round(other / hz / secs, 3), "steal": round((steal1 - steal0) / hz / secs, 3),
            "own": round(own / hz / secs, 3), "seconds": round(secs, 2),
            "busiest": [[c, pid, round(d / hz / secs, 3)] for d, c, pid in per[:top]]}


def bench_root():
    return int(os.environ.get("BENCH_ROOT_PID") or os.getppid())


def sample_idle(seconds, root, top=3):
    """The others' load over the next `seconds` (nothing of the bench's measured meanwhile)."""
    a = proc_snapshot()
    time.sleep(seconds)
    return other_load(a, proc_snapshot(), root, top=top)


def load_verdict(before, during):
    """Is a run marked (taken on a busy machine)? `before`/`during` from other_load."""
    return max(before["cpu"], during["cpu"]) > BUSY_CPU


def cmd_load(args):
    """Print the others' load over SECONDS, as JSON (a look before a run)."""
    print(json.dumps(sample_idle(args.seconds, args.root or bench_root())))


# ---------------------------------------------------------------------- wrk


def cmd_wrk(args):
    """One wrk run with the bench Lua script; appends one record to --results.

    Counters read before and after: jobgate's /metrics (--jobgate), a log
    whose lines are upstream requests (--origin-log), jobsim's per-job counts
    (--jobsim), so that each record says what reached upstream.
    """
    meta = json.loads(args.meta)
    outfile = args.results + ".wrk.tmp"
    if os.path.exists(outfile):
        os.unlink(outfile)
    env = dict(os.environ, BENCH_PATHS=args.paths, BENCH_OUT=outfile)
    cmd = (args.pin.split() if args.pin else []) + [
        "timeout", str(args.duration + 60), "wrk", "-t%d" % args.threads, "-c%d" % args.connections,
        "-d%ds" % args.duration, "--latency", "-s", args.script, "http://%s" % args.addr]
    root = bench_root()
    rc = 0
    for attempt in range(1, args.tries + 1):
        rec = run_wrk_once(args, meta, cmd, env, outfile, root)
        rec["try"] = attempt
        marked = rec["marked"]
        rec["rerun"] = marked and attempt < args.tries
        with open(args.results, "a") as f:
            f.write(json.dumps(rec) + "\n")
        short = {k: rec.get(k) for k in ("scenario", "server", "pass", "round", "rep", "rps", "p50_ms", "p99_ms",
                                         "non2xx")}
        short["load"] = "others %.2f CPU before, %.2f during%s" % (
            rec["load"]["before"]["cpu"], rec["load"]["during"]["cpu"],
            ": MARKED busy (%s)" % ", ".join("%s %.2f" % (c, u) for c, _, u in rec["load"]["during"]["busiest"])
            if marked else "")
        if rec.get("failed"):
            short["failed"] = rec["wrk_output"][-300:]
        print("  " + json.dumps(short), file=sys.stderr, flush=True)
        rc = 1 if rec.get("failed") else 0
        if not marked or rec.get("failed"):
            break
        time.sleep(1.0)  # let a passing spike pass before the next try
    return rc


def run_wrk_once(args, meta, cmd, env, outfile, root):
    """One wrk run, its counters and the machine's load before and during it: the record."""
    before_m = jobgate_metrics(args.jobgate) if args.jobgate else None
    before_log = count_lines(args.origin_log) if args.origin_log else None
    before_sim = sim_stats(args.jobsim) if args.jobsim else None
    load_before = sample_idle(0.5, root)
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    # The window: from wrk's start (connections made) to just before its end,
    # while every process of the bench is alive (an exited one's time would
    # count as others').
    margin = min(0.3, args.duration * 0.1)
    time.sleep(margin)
    snap_a = proc_snapshot()
    time.sleep(max(args.duration - 2 * margin, 0.1))
    snap_b = proc_snapshot()
    stdout, _ = p.communicate()
    load_during = other_load(snap_a, snap_b, root)
    rec = dict(meta)
    rec["load"] = {"before": load_before, "during": load_during}
    rec["marked"] = load_verdict(load_before, load_during)
    rec["wrk_cmd"] = " ".join(cmd[cmd.index("wrk"):])
    rec["wrk_rc"] = p.returncode
    with open("/proc/loadavg") as f:
        rec["loadavg_1m"] = float(f.read().split()[0])
    try:
        with open(outfile) as f:
            w = json.loads(f.read().strip().splitlines()[-1])
        os.unlink(outfile)
    except (OSError, ValueError, IndexError):
        w = None
    if w is None or p.returncode != 0:
        rec["failed"] = True
        rec["wrk_output"] = stdout[-2000:]
    else:
        secs = w["duration_us"] / 1e6
        rec.update({
            "requests": w["requests"], "rps": round(w["requests"] / secs, 1),
            "p50_ms": w["latency_us"]["p50"] / 1000.0, "p99_ms": w["latency_us"]["p99"] / 1000.0,
            "p999_ms": w["latency_us"]["p999"] / 1000.0, "max_ms": w["latency_us"]["max"] / 1000.0,
            "errors": w["errors"], "non2xx": w["errors"]["status"],
        })
        m = re.search(r"Non-2xx or 3xx responses: (\d+)", stdout)
        rec["non2xx"] = int(m.group(1)) if m else 0
    if args.jobgate:
        after = jobgate_metrics(args.jobgate)
        rec["jobgate_requests"] = delta(before_m["requests"], after["requests"])
        rec["jobgate_upstream"] = delta(before_m["upstream"], after["upstream"])
    if args.origin_log:
        rec["origin_requests"] = count_lines(args.origin_log) - before_log
    if args.jobsim:
        after = sim_stats(args.jobsim)
        rec["upstream_requests"] = after["total"] - before_sim["total"]
        if args.job:
            rec["job_upstream_requests"] = after["jobs"].get(args.job, 0) - before_sim["jobs"].get(args.job, 0)
    return rec


def sim_stats(addr):
    host, port = parse_hostport(addr)
    return SimControl(port, host=host).stats()


def cmd_record(args):
    rec = {}
    for kv in args.kv:
        k, _, v = kv.partition("=")
        try:
            rec[k] = json.loads(v)
        except ValueError:
            rec[k] = v
    with open(args.file, "a") as f:
        f.write(json.dumps(rec) + "\n")


def cmd_render(args):
    """Copy a template, replacing @KEY@ by its value (KEY=VALUE, or KEY=@FILE for a file's text)."""
    with open(args.template) as f:
        text = f.read()
    for kv in args.kv:
        k, _, v = kv.partition("=")
        if v.startswith("@"):
            with open(v[1:]) as f:
                v = f.read().strip()
        text = text.replace("@%s@" % k, v)
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        print("render %s: no value for %s" % (args.template, " ".join(sorted(set(left)))), file=sys.stderr)
        return 1
    with open(args.out, "w") as f:
        f.write(text)
    return 0


# ------------------------------------------------------------------- report

SERVER_NAMES = {
    "jobgate-redis": "jobgate (Redis backend)",
    "jobgate-mem": "jobgate --redis none (in-process)",
    "jobgate-redis-w2": "jobgate (Redis backend), 2 workers",
    "jobgate-redis-cold": "jobgate (Redis, in-process tier cold at start)",
    "jobgate-redis-tiny": "jobgate (Redis, in-process tier 64 KiB)",
    "nginx-cache": "nginx proxy_cache",
    "varnish": "varnish",
    "nginx-direct": "nginx static files (ceiling)",
    "jobsim-direct": "jobsim directly (no proxy)",
    "jobgate-miss": "jobgate, nothing cached (pending_ttl 0)",
}
SCENARIOS = [
    ("s1", "1. hot hits (100 jobs, all cached)", "nginx-cache"),
    ("s2", "2. Redis hits (10,000 jobs)", "nginx-cache"),
    ("s3c64", "3. miss path, wrk -c64 (upstream: jobsim, RUNNING jobs)", "jobsim-direct"),
    ("s3c1", "3. miss path, wrk -c1 (unloaded)", "jobsim-direct"),
]


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, nd=2):
    if v is None:
        return "-"
    if isinstance(v, float):
        return ("%%.%df" % nd) % v
    return str(v)


def signed(v):
    return "-" if v is None else "%+.3f" % v


def final(r):
    """The last try of a measured run (an earlier one was marked and rerun)."""
    return not r.get("failed") and not r.get("rerun")


def kept(r):
    """A run taken on a quiet machine: its figures count, and may PASS a target."""
    return final(r) and not r.get("marked")


def slot(r):
    return (r.get("round"), r.get("rep", 1))


def wrk_entry(rows, s, ref):
    """One row of a wrk table: figures from the kept runs, or from the marked
    ones (flagged) when none was kept; the ratio paired by round and rep."""
    mine = [r for r in rows if r["server"] == s]
    kept_rs = [r for r in mine if kept(r)]
    used = kept_rs or [r for r in mine if final(r)]
    refs = {slot(x): x for x in rows if x["server"] == ref and (kept(x) if kept_rs else final(x))}
    ratios = []
    for r in used:
        x = refs.get(slot(r))
        if x and x["rps"]:
            ratios.append(r["rps"] / x["rps"])
    up = []
    for r in used:
        if "origin_requests" in r:
            up.append(r["origin_requests"])
        elif "upstream_requests" in r:
            up.append(r["upstream_requests"])
        elif "jobgate_upstream" in r:
            up.append(sum(r["jobgate_upstream"].values()))
    loads = [r["load"]["during"]["cpu"] for r in used if "load" in r]
    return {
        "rps": median([r["rps"] for r in used]), "p50_ms": median([r["p50_ms"] for r in used]),
        "p99_ms": median([r["p99_ms"] for r in used]), "ratio": median(ratios),
        "ratio_range": [min(ratios), max(ratios)] if ratios else None, "ratio_pairs": len(ratios),
        "ratio_measured": bool(kept_rs) and bool(ratios),
        "non2xx": sum(r["non2xx"] for r in used),
        "errors": sum(sum(v for k, v in r["errors"].items() if k != "status") for r in used),
        "upstream_requests_median": median(up) if up else None,
        "kept": len(kept_rs), "marked": len([r for r in mine if r.get("marked")]),
        "load_cpu": median(loads), "load_cpu_max": max(loads) if loads else None,
        "rounds": len(used), "failed_runs": len([r for r in mine if r.get("failed")]),
        "samples": [{k: r.get(k) for k in ("round", "rep", "try", "rps", "p50_ms", "p99_ms", "marked", "load")}
                    for r in mine if not r.get("failed")],
        "used": used,
    }


def load_cell(e):
    if e["load_cpu"] is None:
        return "-"
    return "%s (max %s)%s" % (fmt(e["load_cpu"]), fmt(e["load_cpu_max"]), "" if e["kept"] else " BUSY")


def busy_note(*entries):
    if all(e and e["kept"] for e in entries):
        return ""
    return "; from runs marked busy only (others' load %s CPU)" % "/".join(
        fmt(e["load_cpu"]) for e in entries if e)


def cmd_report(args):
    recs = []
    with open(args.results) as f:
        for line in f:
            if line.strip():
                recs.append(json.loads(line))
    with open(args.meta) as f:
        meta = json.load(f)
    passes = [p for p in ("pinned", "unpinned") if any(r.get("pass") == p for r in recs)]
    out = {"meta": meta, "wrk": {}, "burst": {}, "poll": {}, "memory": None, "targets": [], "problems": []}
    lines = []  # markdown

    def add(text=""):
        lines.append(text)

    add("# jobgate benchmark: %s" % meta.get("started", ""))
    add("")
    add("- jobgate: `%s` (%s; %s)" % (meta.get("jobgate_bin"), meta.get("jobgate_version", ""), meta.get("build", "")))
    add("- host: %s, %s CPUs; rounds: %s; wrk duration: %s s; wrk: `%s`"
        % (meta.get("host"), meta.get("cpus"), meta.get("rounds"), meta.get("duration"), meta.get("wrk_settings")))
    add("- pinned pass: every server process on CPU %s, wrk and the Python client on CPU %s; unpinned pass: no affinity."
        % (meta.get("server_cpu"), meta.get("client_cpu")))
    add("- values are medians over rounds; `ratio` is the median over rounds (and interleaved repeats) of (row req/s"
        " / reference req/s in the same round, pass and repeat), with its min-max; reference: nginx proxy_cache"
        " (scenarios 1, 2), jobsim directly (scenario 3). Servers are measured interleaved (A B A B).")
    add("- *others' load*: CPUs used by processes outside the bench during the run (median, max), from /proc."
        " A run where that was above %.2f CPU (before or during it) is **marked** and rerun (up to %s tries);"
        " figures and PASS come from kept runs only; a row with none kept shows its marked runs, flagged BUSY,"
        " and its target is NOT MEASURED." % (BUSY_CPU, meta.get("tries", 3)))
    nrun = [r for r in recs if r.get("kind") in ("wrk", "poll") and not r.get("failed")]
    add("- measured runs: %d kept, %d marked busy (of which %d rerun); bursts: %d kept, %d marked" % (
        len([r for r in nrun if kept(r)]), len([r for r in nrun if r.get("marked")]),
        len([r for r in nrun if r.get("rerun")]),
        len([r for r in recs if r.get("kind") == "burst" and not r.get("marked")]),
        len([r for r in recs if r.get("kind") == "burst" and r.get("marked")])))
    if meta.get("note"):
        add("- " + meta["note"])
    add("")

    for ps in passes:
        add("## wrk scenarios, %s" % ps)
        add("")
        add("| scenario | server | req/s | req/s min-max | p50 ms | p99 ms | ratio | ratio min-max "
            "| others' load, CPU | runs kept/marked | non-2xx | errors | upstream reqs |")
        add("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        out["wrk"][ps] = {}
        for sc, title, ref in SCENARIOS:
            rows = [r for r in recs if r.get("kind") == "wrk" and r.get("pass") == ps and r.get("scenario") == sc]
            if not rows:
                continue
            servers = []
            for r in rows:
                if r["server"] not in servers:
                    servers.append(r["server"])
            out["wrk"][ps][sc] = {}
            for s in servers:
                entry = wrk_entry(rows, s, ref)
                out["wrk"][ps][sc][s] = entry
                rs = entry["used"]
                rng = "%s-%s" % (fmt(min(r["rps"] for r in rs), 0), fmt(max(r["rps"] for r in rs), 0)) if rs else "-"
                rr = entry["ratio_range"]
                add("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                    title, SERVER_NAMES.get(s, s), fmt(entry["rps"], 0), rng, fmt(entry["p50_ms"]), fmt(entry["p99_ms"]),
                    fmt(entry["ratio"]), "%s-%s" % (fmt(rr[0]), fmt(rr[1])) if rr else "-",
                    load_cell(entry), "%d/%d" % (entry["kept"], entry["marked"]),
                    entry["non2xx"], entry["errors"], fmt(entry["upstream_requests_median"], 0)))
                del entry["used"]
                title = ""
                if entry["non2xx"] or entry["errors"] or entry["failed_runs"]:
                    out["problems"].append("%s %s %s: %d non-2xx, %d socket errors, %d failed wrk runs"
                                           % (ps, sc, s, entry["non2xx"], entry["errors"], entry["failed_runs"]))
        # miss path added latency
        for sc in ("s3c64", "s3c1"):
            d = out["wrk"][ps].get(sc, {})
            if "jobsim-direct" in d and "jobgate-miss" in d:
                added = {}
                for k in ("p50_ms", "p99_ms"):
                    per_round = []
                    for r in recs:
                        if r.get("kind") == "wrk" and r.get("pass") == ps and r.get("scenario") == sc \
                                and r["server"] == "jobgate-miss" and kept(r):
                            ref = [x for x in recs if x.get("kind") == "wrk" and x.get("pass") == ps
                                   and x.get("scenario") == sc and x["server"] == "jobsim-direct"
                                   and slot(x) == slot(r) and kept(x)]
                            if ref:
                                per_round.append(r[k] - ref[0][k])
                    added[k] = median(per_round)
                added["pairs"] = len(per_round)
                d["added_latency"] = added
        add("")
        add("Miss path, added latency (jobgate minus direct, median over rounds of the per-round difference):")
        add("")
        for sc in ("s3c1", "s3c64"):
            a = out["wrk"][ps].get(sc, {}).get("added_latency")
            if a and not a["pairs"]:
                add("- %s: not measured (every run marked: machine busy)" % sc)
            elif a:
                add("- %s: p50 %s ms, p99 %s ms" % ("wrk -c1 (unloaded)" if sc == "s3c1" else "wrk -c64 (loaded)",
                                                    signed(a["p50_ms"]), signed(a["p99_ms"])))
        add("")

        # burst
        bl = [r for r in recs if r.get("kind") == "burst" and r.get("pass") == ps]
        if bl:
            add("## 4a. pollers' burst (%s): %s clients at once, one cold job, upstream answers after 200 ms"
                % (ps, bl[0].get("clients")))
            add("")
            add("%d bursts per server; median over bursts (worst in brackets). An answer's time is when its first"
                " bytes reach the client's socket (kernel receive time); the first answer is taken as the upstream's."
                " *server preempted*: the server process's involuntary context switches during the burst"
                " (jobgate only): other work on its CPU." % len(
                    [r for r in bl if r["server"] == bl[0]["server"]]))
            add("")
            add("| server | upstream requests per burst | waiters p50 ms | waiters max ms | last - first answer ms "
                "| non-200 | server preempted | others' load, CPU | bursts kept/marked |")
            add("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
            out["burst"][ps] = {}
            for s in ("jobgate-sim", "nginx-cache", "varnish"):
                all_rs = [r for r in bl if r["server"] == s]
                if not all_rs:
                    continue
                rs = [r for r in all_rs if not r.get("marked")] or all_rs  # marked ones only when nothing else
                e = {
                    "upstream_requests": median([r["upstream_requests"] for r in rs]),
                    "upstream_requests_max": max(r["upstream_requests"] for r in rs),
                    "p50_ms": median([r.get("latency_ms", {}).get("p50") for r in rs]),
                    "max_ms": median([r.get("latency_ms", {}).get("max") for r in rs]),
                    "spread_ms": median([r.get("spread_ms") for r in rs]),
                    "spread_ms_max": max([r.get("spread_ms") or 0 for r in rs]),
                    "max_ms_max": max([r.get("latency_ms", {}).get("max") or 0 for r in rs]),
                    "non200": sum(r["requests"] - r["status"].get("200", 0) for r in rs),
                    "samples": rs, "kept": len([r for r in all_rs if not r.get("marked")]),
                    "marked": len([r for r in all_rs if r.get("marked")]),
                    "load_cpu": median([r["load"]["during"]["cpu"] for r in rs if "load" in r]),
                }
                out["burst"][ps][s] = e
                name = SERVER_NAMES.get(s, s) if s != "jobgate-sim" else "jobgate (Redis backend)"
                pre = [r["server_preempted"] for r in rs if r.get("server_preempted") is not None]
                e["server_preempted_median"] = median(pre) if pre else None
                add("| %s | %s (%s) | %s | %s (%s) | %s (%s) | %s | %s | %s | %d/%d |" % (
                    name, fmt(e["upstream_requests"], 0), e["upstream_requests_max"], fmt(e["p50_ms"]),
                    fmt(e["max_ms"]), fmt(e["max_ms_max"]), fmt(e["spread_ms"]), fmt(e["spread_ms_max"]),
                    e["non200"], fmt(e["server_preempted_median"], 0), fmt(e["load_cpu"]), e["kept"], e["marked"]))
                if e["non200"]:
                    out["problems"].append("%s burst %s: %d answers were not 200: %s"
                                           % (ps, s, e["non200"], [r["status"] for r in rs]))
            add("")
        pl_all = [r for r in recs if r.get("kind") == "poll" and r.get("pass") == ps and final(r)]
        pl = [r for r in pl_all if not r.get("marked")] or pl_all
        if pl:
            dur = pl[0]["duration"]
            ttl = pl[0]["ttl_s"]
            e = {
                "duration_s": dur, "ttl_s": ttl, "limit": int(dur / ttl) + 1,
                "job_upstream_requests": median([r["job_upstream_requests"] for r in pl]),
                "job_upstream_requests_max": max(r["job_upstream_requests"] for r in pl),
                "rps": median([r["rps"] for r in pl]), "p50_ms": median([r["p50_ms"] for r in pl]),
                "p99_ms": median([r["p99_ms"] for r in pl]),
                "non2xx": sum(r["non2xx"] for r in pl),
                "errors": sum(sum(v for k, v in r["errors"].items() if k != "status") for r in pl),
                "x_cache": {},
                "samples": pl, "kept": len([r for r in pl if kept(r)]),
                "marked": len([r for r in recs if r.get("kind") == "poll" and r.get("pass") == ps and r.get("marked")]),
                "load_cpu": median([r["load"]["during"]["cpu"] for r in pl if "load" in r]),
            }
            for r in pl:
                for k, v in r.get("jobgate_requests", {}).items():
                    k = k.split("/")[-1]
                    e["x_cache"][k] = e["x_cache"].get(k, 0) + v
            out["poll"][ps] = e
            add("## 4b. %s clients polling one RUNNING job for %s s, pending TTL %s s (%s)"
                % (pl[0]["connections"], dur, ttl, ps))
            add("")
            add("| server | upstream requests (median, max) | limit | req/s | p50 ms | p99 ms | non-2xx | errors "
                "| others' load, CPU | runs kept/marked | X-Cache, all rounds |")
            add("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
            add("| jobgate (Redis backend) | %s, %s | %d | %s | %s | %s | %s | %s | %s | %d/%d | %s |" % (
                fmt(e["job_upstream_requests"], 0), e["job_upstream_requests_max"], e["limit"], fmt(e["rps"], 0),
                fmt(e["p50_ms"]), fmt(e["p99_ms"]), e["non2xx"], e["errors"], fmt(e["load_cpu"]), e["kept"],
                e["marked"],
                " ".join("%s %d" % kv for kv in sorted(e["x_cache"].items()))))
            add("")
            if e["non2xx"] or e["errors"]:
                out["problems"].append("%s poll: %d non-2xx, %d socket errors" % (ps, e["non2xx"], e["errors"]))

    mem = [r for r in recs if r.get("kind") == "memory"]
    if mem:
        m = mem[-1]
        out["memory"] = m
        add("## 5. memory: jobgate --redis none, %s distinct SUCCESS jobs in process" % m.get("jobs"))
        add("")
        add("| RSS before | RSS after | RSS growth | cached body bytes | entries (metrics) | cache bytes (metrics) "
            "| limit 32 MiB + 2 x bodies |")
        add("|---:|---:|---:|---:|---:|---:|---:|")
        mb = lambda v: "-" if v is None else "%.1f MiB" % (v / 1048576.0)  # noqa: E731
        add("| %s | %s | %s | %s | %s | %s | %s |" % (mb(m.get("rss_before")), mb(m.get("rss_after")),
                                                       mb((m.get("rss_after") or 0) - (m.get("rss_before") or 0)),
                                                       mb(m.get("body_bytes")), m.get("entries"),
                                                       mb(m.get("cache_bytes")), mb(m.get("limit"))))
        add("")
        if m.get("fill_status") and set(m["fill_status"]) != {"200"}:
            out["problems"].append("memory fill: answers %s" % m["fill_status"])

    # targets
    def target(name, ok, detail, measured=True):
        """A target, judged only from runs on a quiet machine: else NOT MEASURED."""
        out["targets"].append({"target": name, "pass": ok if measured else None, "measured": measured,
                               "detail": detail})

    for ps in passes:
        w = out["wrk"].get(ps, {})
        s1 = w.get("s1", {})
        ng = s1.get("nginx-cache")
        for s in ("jobgate-redis", "jobgate-mem"):
            j = s1.get(s)
            if j and ng and j["ratio"] is not None:
                target("hot hits, %s, %s: req/s >= 1.1 x nginx proxy_cache" % (SERVER_NAMES[s], ps),
                       j["ratio"] >= 1.1, "ratio %.2f (%s-%s over %d pairs)%s" % (
                           j["ratio"], fmt(j["ratio_range"][0]), fmt(j["ratio_range"][1]), j["ratio_pairs"],
                           busy_note(j, ng)), j["ratio_measured"])
                target("hot hits, %s, %s: p99 <= nginx proxy_cache's" % (SERVER_NAMES[s], ps),
                       j["p99_ms"] <= ng["p99_ms"], "p99 %.2f ms vs %.2f ms%s" % (j["p99_ms"], ng["p99_ms"],
                                                                                 busy_note(j, ng)),
                       j["kept"] > 0 and ng["kept"] > 0)
        s2 = w.get("s2", {})
        for s in ("jobgate-redis-cold", "jobgate-redis-tiny"):
            j = s2.get(s)
            if j and j["ratio"] is not None:
                target("Redis hits, %s, %s: req/s >= 0.5 x nginx proxy_cache" % (SERVER_NAMES[s], ps),
                       j["ratio"] >= 0.5, "ratio %.2f%s" % (j["ratio"], busy_note(j, s2.get("nginx-cache"))),
                       j["ratio_measured"])
        a = w.get("s3c1", {}).get("added_latency")
        if a:
            target("miss path, %s: added p50 <= 0.3 ms (wrk -c1)" % ps, a["p50_ms"] is not None and a["p50_ms"] <= 0.3,
                   "p50 %s ms, p99 %s ms (%d pairs of runs on a quiet machine)"
                   % (signed(a["p50_ms"]), signed(a["p99_ms"]), a["pairs"]), a["pairs"] > 0)
        b = out["burst"].get(ps, {}).get("jobgate-sim")
        if b:
            target("burst, %s: exactly 1 upstream request for the waiters" % ps,
                   all(r["upstream_requests"] == 1 for r in b["samples"]),
                   "upstream requests per burst: %s" % [r["upstream_requests"] for r in b["samples"]])
            # (a count: the machine's load does not change it)
            target("burst, %s: waiters answered within 5 ms of the first answer (median over bursts)" % ps,
                   b["spread_ms"] is not None and b["spread_ms"] <= 5.0 and b["non200"] == 0,
                   "last - first answer %s ms median, %s ms worst; waiters max %s ms"
                   % (fmt(b["spread_ms"]), fmt(b["spread_ms_max"]), fmt(b["max_ms"]))
                   + "; %d bursts kept, %d marked busy" % (b["kept"], b["marked"]), b["kept"] > 0)
        p = out["poll"].get(ps)
        if p:
            target("polling, %s: upstream requests <= duration/TTL + 1 = %d" % (ps, p["limit"]),
                   p["job_upstream_requests_max"] <= p["limit"],
                   "per round: %s (a count: judged whatever the load)" % [r["job_upstream_requests"]
                                                                          for r in p["samples"]])
    if out["memory"]:
        m = out["memory"]
        if m.get("rss_after"):
            target("memory: RSS <= 32 MiB + 2 x cached body bytes", m["rss_after"] <= m["limit"],
                   "RSS %.1f MiB, limit %.1f MiB (bodies %.1f MiB, %s entries)"
                   % (m["rss_after"] / 1048576.0, m["limit"] / 1048576.0, m["body_bytes"] / 1048576.0,
                      m.get("entries")))
    out["problems"] += meta.get("problems", [])

    add("## Targets")
    add("")
    add("| target | result | measured |")
    add("|---|---|---|")
    for t in out["targets"]:
        add("| %s | %s | %s |" % (t["target"], "NOT MEASURED (machine busy)" if not t["measured"]
                                   else "PASS" if t["pass"] else "**FAIL**", t["detail"]))
    add("")
    add("## Problems seen")
    add("")
    for p in out["problems"] or ["none"]:
        add("- " + p)
    add("")

    md = "\n".join(lines)
    os.makedirs(args.outdir, exist_ok=True)
    with open(os.path.join(args.outdir, "latest.md"), "w") as f:
        f.write(md)
    with open(os.path.join(args.outdir, "latest.json"), "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
        f.write("\n")
    print(render_text(md))
    plot(out, args.outdir)


def render_text(md):
    """The markdown, with its tables aligned for a terminal."""
    out, table = [], []

    def flush():
        if not table:
            return
        rows = [[c.strip() for c in r.strip().strip("|").split("|")] for r in table if not re.match(r"^\|[-:| ]+\|$", r)]
        widths = [max(len(r[i]) if i < len(r) else 0 for r in rows) for i in range(max(len(r) for r in rows))]
        for n, r in enumerate(rows):
            out.append("  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip())
            if n == 0:
                out.append("  ".join("-" * w for w in widths))
        table.clear()

    for line in md.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        out.append(line.replace("**", "").replace("`", ""))
    flush()
    return "\n".join(out)


def plot(out, outdir):
    """latest.png (hot hits req/s per server and pass) when gnuplot is installed; silent otherwise."""
    from shutil import which
    if not which("gnuplot"):
        return
    rows = []
    for ps in ("pinned", "unpinned"):
        for s, e in out["wrk"].get(ps, {}).get("s1", {}).items():
            rows.append((ps, s, e["rps"] or 0))
    if not rows:
        return
    dat = os.path.join(outdir, "latest-s1.dat")
    servers = []
    for _, s, _ in rows:
        if s not in servers:
            servers.append(s)
    with open(dat, "w") as f:
        for s in servers:
            vals = [str(next((r for p, sv, r in rows if p == ps and sv == s), 0)) for ps in ("pinned", "unpinned")]
            f.write('"%s" %s\n' % (s, " ".join(vals)))
    script = (
        'set terminal png size 900,500; set output "%s";'
        'set title "hot hits, req/s (median)"; set style data histograms; set style fill solid 0.8;'
        'set boxwidth 0.9; set yrange [0:*]; set xtics rotate by -20;'
        'plot "%s" using 2:xtic(1) title "pinned", "" using 3 title "unpinned"'
        % (os.path.join(outdir, "latest.png"), dat))
    subprocess.run(["gnuplot", "-e", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        os.unlink(dat)
    except OSError:
        pass


# --------------------------------------------------------------- self-test


def cmd_selftest(args):
    """The load detection, checked: arithmetic on made-up /proc snapshots
    (an idle machine, another process busy, the bench's own process busy),
    then live: a busy loop outside the bench's process tree must be seen
    above BUSY_CPU, and the same loop inside the tree must not count."""
    failures = []

    def check(cond, what):
        print("%s - %s" % ("ok" if cond else "not ok", what))
        if not cond:
            failures.append(what)

    hz = 100
    root = 1000
    # (time, busy, steal, {pid: (ppid, ticks, comm)}): the bench is 1000 -> 1001 (a server)
    a = (0.0, 10000, 0, {1: (0, 50, "init"), 1000: (1, 10, "run"), 1001: (1000, 500, "jobgate"),
                         2000: (1, 700, "other")})
    # 2 s later: the server used 1.5 CPU (300 ticks), "other" 0.05 CPU (10), the rest 0
    b = (2.0, 10000 + 300 + 10, 0, {1: (0, 50, "init"), 1000: (1, 10, "run"), 1001: (1000, 800, "jobgate"),
                                    2000: (1, 710, "other")})
    ld = other_load(a, b, root, hz)
    check(abs(ld["cpu"] - 0.05) < 1e-6 and abs(ld["own"] - 1.5) < 1e-6,
          "an idle machine (others 0.05 CPU) while the bench's server works: %s" % ld)
    check(not load_verdict(ld, ld), "... is not marked busy")
    # the same, but "other" used 0.8 CPU (160 ticks)
    b2 = (2.0, 10000 + 300 + 160, 0, {**b[3], 2000: (1, 860, "other")})
    ld = other_load(a, b2, root, hz)
    check(abs(ld["cpu"] - 0.8) < 1e-6 and ld["busiest"][0][:2] == ["other", 2000],
          "another process at 0.8 CPU is seen, and named: %s" % ld)
    check(load_verdict(ld, ld), "... and the run is marked busy")
    # short-lived processes (a compiler) leave only /proc/stat's total: 0.5 CPU of them
    b3 = (2.0, 10000 + 300 + 10 + 100, 0, b[3])
    ld = other_load(a, b3, root, hz)
    check(abs(ld["cpu"] - 0.55) < 1e-6 and load_verdict(ld, ld),
          "processes that came and went between the samples still count: %s" % ld)
    # a child the bench started meanwhile (wrk) is the bench's own
    b4 = (2.0, 10000 + 300 + 10 + 180, 0, {**b[3], 1002: (1000, 180, "wrk")})
    ld = other_load(a, b4, root, hz)
    check(abs(ld["cpu"] - 0.05) < 1e-6 and not load_verdict(ld, ld),
          "a process the bench started during the run is its own: %s" % ld)

    # Live: a busy loop reparented away from us (sh exits at once) is another's.
    me = os.getpid()
    loop = "import time\nt = time.time() + 20\nwhile time.time() < t: pass\n"
    sh = subprocess.run(["sh", "-c", 'python3 -c "$0" >/dev/null 2>&1 & echo $!', loop],
                        stdout=subprocess.PIPE, universal_newlines=True, check=True)
    busy_pid = int(sh.stdout.strip())
    try:
        time.sleep(0.3)
        ld = sample_idle(2.0, me, top=100000)
        mine = [u for c, pid, u in ld["busiest"] if pid == busy_pid]
        check(ld["cpu"] > BUSY_CPU and load_verdict(ld, ld),
              "live: a busy loop outside the bench: others %.2f CPU > %.2f, marked" % (ld["cpu"], BUSY_CPU))
        check(bool(mine) and mine[0] > BUSY_CPU, "live: the loop (pid %d) itself used %s CPU" % (busy_pid, mine))
        # The same loop counted as the bench's own (its tree's root is the loop itself):
        ld_own = sample_idle(2.0, busy_pid)
        check(ld_own["own"] > BUSY_CPU,
              "live: counted as the bench's own, the loop is in 'own' (%.2f CPU), not others'" % ld_own["own"])
    finally:
        try:
            os.kill(busy_pid, 15)
        except OSError:
            pass
    time.sleep(0.3)
    ld = sample_idle(2.0, me)
    print("# the machine now, with the loop gone: others %.2f CPU (%s)%s"
          % (ld["cpu"], ", ".join("%s %.2f" % (c, u) for c, _, u in ld["busiest"]) or "nothing",
             ": busy, other work runs here" if load_verdict(ld, ld) else ": idle"))
    print("# self-test: %s" % ("FAILED: " + "; ".join(failures) if failures else "the load detection works"))
    return 1 if failures else 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd")
    p = sub.add_parser("ports"); p.add_argument("n", type=int); p.set_defaults(f=cmd_ports)  # noqa: E702
    p = sub.add_parser("wait"); p.add_argument("addr"); p.add_argument("seconds", type=float)  # noqa: E702
    p.set_defaults(f=cmd_wait)
    p = sub.add_parser("gen"); p.add_argument("www"); p.add_argument("outdir"); p.set_defaults(f=cmd_gen)  # noqa
    p = sub.add_parser("warm")
    p.add_argument("addr"); p.add_argument("pathfile")  # noqa: E702
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--out")
    p.set_defaults(f=cmd_warm)
    p = sub.add_parser("burst")
    p.add_argument("addr"); p.add_argument("path"); p.add_argument("n", type=int)  # noqa: E702
    p.add_argument("--timeout", type=float, default=30)
    p.add_argument("--results")
    p.add_argument("--meta")
    p.add_argument("--jobsim", help="jobsim's address: count the upstream requests for --job")
    p.add_argument("--job")
    p.add_argument("--pid", type=int, help="the server's process: count its involuntary context switches")
    p.set_defaults(f=cmd_burst)
    p = sub.add_parser("http")
    p.add_argument("method"); p.add_argument("addr"); p.add_argument("path")  # noqa: E702
    p.set_defaults(f=cmd_http)
    p = sub.add_parser("metrics"); p.add_argument("addr"); p.set_defaults(f=cmd_metrics)  # noqa: E702
    p = sub.add_parser("rss"); p.add_argument("pid", type=int); p.set_defaults(f=cmd_rss)  # noqa: E702
    p = sub.add_parser("wrk")
    p.add_argument("--results", required=True)
    p.add_argument("--meta", required=True, help="JSON object merged into the record")
    p.add_argument("--addr", required=True)
    p.add_argument("--paths", required=True)
    p.add_argument("--script", required=True)
    p.add_argument("--duration", type=int, required=True)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--pin", default="")
    p.add_argument("--jobgate")
    p.add_argument("--origin-log")
    p.add_argument("--jobsim")
    p.add_argument("--job")
    p.add_argument("--tries", type=int, default=3, help="runs taken on a busy machine are rerun, up to this many")
    p.set_defaults(f=cmd_wrk)
    p = sub.add_parser("load"); p.add_argument("seconds", type=float)  # noqa: E702
    p.add_argument("--root", type=int, help="the bench's root process (default: BENCH_ROOT_PID, else the parent)")
    p.set_defaults(f=cmd_load)
    p = sub.add_parser("selftest"); p.set_defaults(f=cmd_selftest)  # noqa: E702
    p = sub.add_parser("record"); p.add_argument("file"); p.add_argument("kv", nargs="*")  # noqa: E702
    p.set_defaults(f=cmd_record)
    p = sub.add_parser("render")
    p.add_argument("template"); p.add_argument("out"); p.add_argument("kv", nargs="*")  # noqa: E702
    p.set_defaults(f=cmd_render)
    p = sub.add_parser("report")
    p.add_argument("results"); p.add_argument("meta"); p.add_argument("outdir")  # noqa: E702
    p.set_defaults(f=cmd_report)
    args = ap.parse_args()
    if not getattr(args, "f", None):
        ap.print_help()
        return 2
    return args.f(args) or 0


if __name__ == "__main__":
    sys.exit(main())
