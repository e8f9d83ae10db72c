#!/usr/bin/env python3
"""The audit log: one JSON line per request, whatever its answer (200, 401,
403, 404 ...), with who asked, from where, what, the cache result, the
upstream call and the answer; none lost under load; SIGUSR1 reopens the file
after logrotate renamed it; a failing sink shows in /healthz and /metrics,
and with on_failure: refuse requests get 503 until it recovers. No secret
(client key, token) appears in the audit log, the error log, an answer or
/metrics."""
import hashlib
import json
import os
import signal
import threading
import time

from harness import Jobgate, Sim, check, eq, hex32, run, seed_path, stop_all, test, wait_until

P1, P2 = hex32(), hex32()
KEY = "audit-client-key-secret"
TOKEN = "audit-cloud-token-secret"


def setup():
    env = {}
    env["sim"] = Sim(init_ms=0, running_ms=0).start()
    gate = Jobgate(env["sim"].url, redis=None, upstream_token=TOKEN)
    keys = os.path.join(gate.tmp, "keys.yaml")
    with open(keys, "w") as f:
        f.write("clients:\n  - name: ci-runner\n    key_sha256: %s\n    projects: [\"%s\"]\n"
                % (hashlib.sha256(KEY.encode()).hexdigest(), P1))
    env["audit_path"] = os.path.join(gate.tmp, "audit.log")
    gate.extra_config = ("client_keys: %s\naudit:\n  file: %s\n  flush_interval: 100ms\n"
                         % (keys, env["audit_path"]))
    env["gate"] = gate.start()
    return env


teardown = stop_all


def lines(path):
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def by_request_id(env):
    return {rec["request_id"]: rec for rec in lines(env["audit_path"])}


@test
def every_answer_leaves_one_line(env):
    """200 MISS, 200 HIT, 403, 401, 404 and 400: one line each, with the right fields"""
    gate = env["gate"]
    job = hex32()
    cases = [
        ("miss", seed_path(P1, job), {"X-Api-Key": KEY}, 200),
        ("hit", seed_path(P1, job), {"X-Api-Key": KEY}, 200),
        ("forbidden", seed_path(P2, job), {"X-Api-Key": KEY}, 403),
        ("unknown", seed_path(P1, job), {"X-Api-Key": "nobody"}, 401),
        ("noroute", "/nothing/here", {"X-Api-Key": KEY}, 404),
        ("badid", "/v1.0/%s/jobs/not-hex" % P1, {"X-Api-Key": KEY}, 400),
    ]
    answers = {}
    for name, path, headers, status in cases:
        headers = dict(headers, **{"X-Request-Id": "audit-%s-%s" % (name, job[:8])})
        r = gate.get(path, headers=headers)
        eq(r.status, status, name)
        answers[name] = r
    wait_until(lambda: all(("audit-%s-%s" % (n, job[:8])) in by_request_id(env) for n, *_ in cases), 5,
               "the lines flushed")
    recs = by_request_id(env)
    for name, path, _, status in cases:
        rec = recs["audit-%s-%s" % (name, job[:8])]
        eq(rec["status"], status, "%s status" % name)
        eq(rec["method"], "GET", "%s method" % name)
        eq(rec["path"], path, "%s path" % name)
        check(rec["source"].startswith("127.0.0.1:"), "%s source %r" % (name, rec["source"]))
        check(rec["time"].endswith("Z"), "%s time" % name)
        eq(rec["bytes"], len(answers[name].body), "%s bytes" % name)
    eq((recs["audit-miss-%s" % job[:8]]["cache"], recs["audit-miss-%s" % job[:8]]["upstream_status"]), ("MISS", 200),
       "miss")
    check(recs["audit-miss-%s" % job[:8]]["upstream_us"] > 0, "upstream latency")
    eq((recs["audit-hit-%s" % job[:8]]["cache"], recs["audit-hit-%s" % job[:8]]["upstream_status"]), ("HIT", 0), "hit")
    eq(recs["audit-hit-%s" % job[:8]]["client"], "ci-runner", "client name")
    eq((recs["audit-hit-%s" % job[:8]]["project_id"], recs["audit-hit-%s" % job[:8]]["job_id"]), (P1, job), "ids")
    eq((recs["audit-forbidden-%s" % job[:8]]["cache"], recs["audit-forbidden-%s" % job[:8]]["client"]),
       ("DENIED", "ci-runner"), "403 names who asked")
    eq((recs["audit-unknown-%s" % job[:8]]["cache"], recs["audit-unknown-%s" % job[:8]]["client"]), ("DENIED", None),
       "401 names nobody")


@test
def none_lost_under_load(env):
    """1,500 requests from 30 threads: exactly 1,500 new lines, each request id once"""
    gate = env["gate"]
    before = len(lines(env["audit_path"]))
    jobs = [hex32() for _ in range(50)]
    ids = []
    lock = threading.Lock()

    def worker(t):
        for i in range(50):
            rid = "load-%d-%d" % (t, i)
            r = gate.get(seed_path(P1, jobs[(t + i) % 50]), headers={"X-Api-Key": KEY, "X-Request-Id": rid})
            check(r.status == 200, "status %d" % r.status)
            with lock:
                ids.append(rid)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wait_until(lambda: len(lines(env["audit_path"])) - before >= 1500, 10, "1,500 lines")
    time.sleep(0.3)
    new = lines(env["audit_path"])[before:]
    eq(len(new), 1500, "new lines")
    eq(sorted(r["request_id"] for r in new), sorted(ids), "one line per request")


@test
def sigusr1_reopens_after_logrotate(env):
    """rename the file, SIGUSR1, more requests: the old file has the earlier lines, the new one the later, none lost"""
    gate, path = env["gate"], env["audit_path"]
    gate.get(seed_path(P1, hex32()), headers={"X-Api-Key": KEY, "X-Request-Id": "before-rotate"})
    wait_until(lambda: "before-rotate" in by_request_id(env), 5, "flushed")
    os.rename(path, path + ".1")
    os.kill(gate.proc.pid, signal.SIGUSR1)
    wait_until(lambda: os.path.exists(path), 5, "the new file")
    for i in range(5):
        gate.get(seed_path(P1, hex32()), headers={"X-Api-Key": KEY, "X-Request-Id": "after-rotate-%d" % i})
    wait_until(lambda: len(lines(path)) == 5, 5, "5 lines in the new file")
    old = [r["request_id"] for r in lines(path + ".1")]
    check("before-rotate" in old, "the old file keeps its lines")
    check(not any(r.startswith("after-rotate") for r in old), "no later line in the old file")
    eq(sorted(r["request_id"] for r in lines(path)), ["after-rotate-%d" % i for i in range(5)], "new file")


@test
def a_failing_sink_is_reported_and_refuse_means_503(env):
    """audit to /dev/full: continue keeps answering 200 and counts drops; refuse answers 503 JG.AUDIT_UNAVAILABLE"""
    sim = env["sim"]
    for policy, want in (("continue", 200), ("refuse", 503)):
        gate = Jobgate(sim.url, redis=None, upstream_token=TOKEN, extra_config=(
            "audit:\n  file: /dev/full\n  on_failure: %s\n  flush_interval: 50ms\n  buffer: 64KiB\n" % policy))
        env["gate_" + policy] = gate.start()
        gate.get(seed_path(P1, hex32()))
        wait_until(lambda: gate.get("/healthz", token=None).json()["audit"]["ok"] is False, 5, "sink failing")
        eq(gate.get("/healthz", token=None).json()["status"], "degraded", "%s: healthz" % policy)
        check("jobgate_audit_ok 0" in gate.get("/metrics", token=None).body.decode(), "%s: metric" % policy)
        r = gate.get(seed_path(P1, hex32()))
        eq(r.status, want, "%s: answer while failing" % policy)
        if want == 503:
            eq(r.error()["code"], "JG.AUDIT_UNAVAILABLE", "code")
        gate.stop(expect_rc=None)


@test
def no_secret_anywhere(env):
    """the client key and the cloud token appear in no audit line, no log line, no answer and not in /metrics"""
    gate = env["gate"]
    with open(env["audit_path"], encoding="utf-8") as f:
        audit = f.read()
    log = gate.log_text()
    metrics = gate.get("/metrics", token=None).body.decode()
    health = gate.get("/healthz", token=None).body.decode()
    answer = gate.get(seed_path(P1, hex32()), headers={"X-Api-Key": KEY}).body.decode()
    for secret in (KEY, TOKEN, hashlib.sha256(KEY.encode()).hexdigest()):
        for name, text in (("audit log", audit), ("error log", log), ("metrics", metrics), ("healthz", health),
                           ("answer", answer)):
            check(secret not in text, "a secret in the %s" % name)


if __name__ == "__main__":
    run(setup, teardown)
