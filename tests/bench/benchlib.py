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
  metrics HOST:PORT                jobgate's /metrics, summed into a few counters
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
    before = involuntary_switches(args.pid) if args.pid else None
    res = fetch(parse_hostport(args.addr), paths, args.n, timeout=args.timeout, simultaneous=True)
    after = involuntary_switches(args.pid) if args.pid else None
    out = summarize(res)
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
                                                      "spread_ms", "send_window_ms", "server_preempted", "errors")}),
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
    before_m = jobgate_metrics(args.jobgate) if args.jobgate else None
    before_log = count_lines(args.origin_log) if args.origin_log else None
    before_sim = sim_stats(args.jobsim) if args.jobsim else None
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    rec = dict(meta)
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
        rec["wrk_output"] = p.stdout[-2000:]
    else:
        secs = w["duration_us"] / 1e6
        rec.update({
            "requests": w["requests"], "rps": round(w["requests"] / secs, 1),
            "p50_ms": w["latency_us"]["p50"] / 1000.0, "p99_ms": w["latency_us"]["p99"] / 1000.0,
            "p999_ms": w["latency_us"]["p999"] / 1000.0, "max_ms": w["latency_us"]["max"] / 1000.0,
            "errors": w["errors"], "non2xx": w["errors"]["status"],
        })
        m = re.search(r"Non-2xx or 3xx responses: (\d+)", p.stdout)
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
    with open(args.results, "a") as f:
        f.write(json.dumps(rec) + "\n")
    short = {k: rec.get(k) for k in ("scenario", "server", "pass", "round", "rps", "p50_ms", "p99_ms", "non2xx")}
    if rec.get("failed"):
        short["failed"] = rec["wrk_output"][-300:]
    print("  " + json.dumps(short), file=sys.stderr, flush=True)
    return 1 if rec.get("failed") else 0


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
    add("- values are medians over rounds; `ratio` is the median over rounds of (row req/s / reference req/s in the"
        " same round and pass); reference: nginx proxy_cache (scenarios 1, 2), jobsim directly (scenario 3).")
    if meta.get("note"):
        add("- " + meta["note"])
    add("")

    for ps in passes:
        add("## wrk scenarios, %s" % ps)
        add("")
        add("| scenario | server | req/s | req/s min-max | p50 ms | p99 ms | ratio | non-2xx | errors | upstream reqs |")
        add("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
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
                rs = [r for r in rows if r["server"] == s and not r.get("failed")]
                ratios = []
                for r in rs:
                    refr = [x for x in rows if x["server"] == ref and x["round"] == r["round"] and not x.get("failed")]
                    if refr and refr[0]["rps"]:
                        ratios.append(r["rps"] / refr[0]["rps"])
                up = []
                for r in rs:
                    if "origin_requests" in r:
                        up.append(r["origin_requests"])
                    elif "upstream_requests" in r:
                        up.append(r["upstream_requests"])
                    elif "jobgate_upstream" in r:
                        up.append(sum(r["jobgate_upstream"].values()))
                entry = {
                    "rps": median([r["rps"] for r in rs]), "p50_ms": median([r["p50_ms"] for r in rs]),
                    "p99_ms": median([r["p99_ms"] for r in rs]), "ratio": median(ratios),
                    "non2xx": sum(r["non2xx"] for r in rs),
                    "errors": sum(sum(v for k, v in r["errors"].items() if k != "status") for r in rs),
                    "upstream_requests_median": median(up) if up else None,
                    "rounds": len(rs), "failed_runs": len([r for r in rows if r["server"] == s and r.get("failed")]),
                    "samples": [{k: r.get(k) for k in ("round", "rps", "p50_ms", "p99_ms")} for r in rs],
                }
                out["wrk"][ps][sc][s] = entry
                rng = "%s-%s" % (fmt(min(r["rps"] for r in rs), 0), fmt(max(r["rps"] for r in rs), 0)) if rs else "-"
                add("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                    title, SERVER_NAMES.get(s, s), fmt(entry["rps"], 0), rng, fmt(entry["p50_ms"]), fmt(entry["p99_ms"]),
                    fmt(entry["ratio"]), entry["non2xx"], entry["errors"], fmt(entry["upstream_requests_median"], 0)))
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
                                and r["server"] == "jobgate-miss" and not r.get("failed"):
                            ref = [x for x in recs if x.get("kind") == "wrk" and x.get("pass") == ps
                                   and x.get("scenario") == sc and x["server"] == "jobsim-direct"
                                   and x["round"] == r["round"] and not x.get("failed")]
                            if ref:
                                per_round.append(r[k] - ref[0][k])
                    added[k] = median(per_round)
                d["added_latency"] = added
        add("")
        add("Miss path, added latency (jobgate minus direct, median over rounds of the per-round difference):")
        add("")
        for sc in ("s3c1", "s3c64"):
            a = out["wrk"][ps].get(sc, {}).get("added_latency")
            if a:
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
                "| non-200 | server preempted |")
            add("|---|---:|---:|---:|---:|---:|---:|")
            out["burst"][ps] = {}
            for s in ("jobgate-sim", "nginx-cache", "varnish"):
                rs = [r for r in bl if r["server"] == s]
                if not rs:
                    continue
                e = {
                    "upstream_requests": median([r["upstream_requests"] for r in rs]),
                    "upstream_requests_max": max(r["upstream_requests"] for r in rs),
                    "p50_ms": median([r.get("latency_ms", {}).get("p50") for r in rs]),
                    "max_ms": median([r.get("latency_ms", {}).get("max") for r in rs]),
                    "spread_ms": median([r.get("spread_ms") for r in rs]),
                    "spread_ms_max": max([r.get("spread_ms") or 0 for r in rs]),
                    "max_ms_max": max([r.get("latency_ms", {}).get("max") or 0 for r in rs]),
                    "non200": sum(r["requests"] - r["status"].get("200", 0) for r in rs),
                    "samples": rs,
                }
                out["burst"][ps][s] = e
                name = SERVER_NAMES.get(s, s) if s != "jobgate-sim" else "jobgate (Redis backend)"
                pre = [r["server_preempted"] for r in rs if r.get("server_preempted") is not None]
                e["server_preempted_median"] = median(pre) if pre else None
                add("| %s | %s (%s) | %s | %s (%s) | %s (%s) | %s | %s |" % (
                    name, fmt(e["upstream_requests"], 0), e["upstream_requests_max"], fmt(e["p50_ms"]),
                    fmt(e["max_ms"]), fmt(e["max_ms_max"]), fmt(e["spread_ms"]), fmt(e["spread_ms_max"]),
                    e["non200"], fmt(e["server_preempted_median"], 0)))
                if e["non200"]:
                    out["problems"].append("%s burst %s: %d answers were not 200: %s"
                                           % (ps, s, e["non200"], [r["status"] for r in rs]))
            add("")
        pl = [r for r in recs if r.get("kind") == "poll" and r.get("pass") == ps and not r.get("failed")]
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
                "samples": pl,
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
                "| X-Cache, all rounds |")
            add("|---|---:|---:|---:|---:|---:|---:|---:|---|")
            add("| jobgate (Redis backend) | %s, %s | %d | %s | %s | %s | %s | %s | %s |" % (
                fmt(e["job_upstream_requests"], 0), e["job_upstream_requests_max"], e["limit"], fmt(e["rps"], 0),
                fmt(e["p50_ms"]), fmt(e["p99_ms"]), e["non2xx"], e["errors"],
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
    def target(name, ok, detail):
        out["targets"].append({"target": name, "pass": ok, "detail": detail})

    for ps in passes:
        w = out["wrk"].get(ps, {})
        s1 = w.get("s1", {})
        ng = s1.get("nginx-cache")
        for s in ("jobgate-redis", "jobgate-mem"):
            j = s1.get(s)
            if j and ng and j["ratio"] is not None:
                target("hot hits, %s, %s: req/s >= 1.1 x nginx proxy_cache" % (SERVER_NAMES[s], ps),
                       j["ratio"] >= 1.1, "ratio %.2f" % j["ratio"])
                target("hot hits, %s, %s: p99 <= nginx proxy_cache's" % (SERVER_NAMES[s], ps),
                       j["p99_ms"] <= ng["p99_ms"], "p99 %.2f ms vs %.2f ms" % (j["p99_ms"], ng["p99_ms"]))
        s2 = w.get("s2", {})
        for s in ("jobgate-redis-cold", "jobgate-redis-tiny"):
            j = s2.get(s)
            if j and j["ratio"] is not None:
                target("Redis hits, %s, %s: req/s >= 0.5 x nginx proxy_cache" % (SERVER_NAMES[s], ps),
                       j["ratio"] >= 0.5, "ratio %.2f" % j["ratio"])
        a = w.get("s3c1", {}).get("added_latency")
        if a and a["p50_ms"] is not None:
            target("miss path, %s: added p50 <= 0.3 ms (wrk -c1)" % ps, a["p50_ms"] <= 0.3,
                   "p50 %s ms, p99 %s ms" % (signed(a["p50_ms"]), signed(a["p99_ms"])))
        b = out["burst"].get(ps, {}).get("jobgate-sim")
        if b:
            target("burst, %s: exactly 1 upstream request for the waiters" % ps,
                   all(r["upstream_requests"] == 1 for r in b["samples"]),
                   "upstream requests per burst: %s" % [r["upstream_requests"] for r in b["samples"]])
            target("burst, %s: waiters answered within 5 ms of the first answer (median over bursts)" % ps,
                   b["spread_ms"] is not None and b["spread_ms"] <= 5.0 and b["non200"] == 0,
                   "last - first answer %s ms median, %s ms worst; waiters max %s ms"
                   % (fmt(b["spread_ms"]), fmt(b["spread_ms_max"]), fmt(b["max_ms"])))
        p = out["poll"].get(ps)
        if p:
            target("polling, %s: upstream requests <= duration/TTL + 1 = %d" % (ps, p["limit"]),
                   p["job_upstream_requests_max"] <= p["limit"],
                   "per round: %s" % [r["job_upstream_requests"] for r in p["samples"]])
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
        add("| %s | %s | %s |" % (t["target"], "PASS" if t["pass"] else "**FAIL**", t["detail"]))
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
    p.set_defaults(f=cmd_wrk)
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
