#!/usr/bin/env python3
"""The front end: what a client sees for good, bad and odd requests.

Real redis-server, real simulator, real jobgate; the simulator's request
counts prove which requests reached upstream. The simple request -> answer
cases (bad ids, unknown paths, other methods, a query string, a body, no
token) are data in tests/data/gateway, run by test_cases.py.
"""
import re
import socket

from harness import cache_key, Jobgate, Redis, Sim, TOKEN, assert_documented_error, check, eq, hex32, run, stop_all, test

PROJECT = hex32()


def setup():
    env = {}
    env["redis"] = Redis().start()
    env["sim"] = Sim(init_ms=60000, running_ms=60000).start()
    env["gate"] = Jobgate(env["sim"].url, redis=env["redis"]).start()
    return env


teardown = stop_all


def path(job, project=PROJECT):
    return "/v1.0/%s/jobs/%s" % (project, job)


@test
def miss_then_hit(env):
    """a first GET goes upstream (MISS), the next is answered from cache (HIT, Age)"""
    gate, sim = env["gate"], env["sim"]
    job = hex32()
    r = gate.get(path(job))
    eq(r.status, 200, "status")
    eq(r.header("content-type"), "application/json;charset=UTF-8", "content-type")
    eq(r.header("x-cache"), "MISS", "x-cache")
    check(r.header("x-request-id"), "no X-Request-Id")
    check(r.header("age") is None, "Age on a miss")
    doc = r.json()
    eq(doc["job_id"], job, "job_id")
    eq(doc["status"], "INIT", "status field")
    r2 = gate.get(path(job))
    eq(r2.status, 200, "second status")
    eq(r2.header("x-cache"), "HIT", "second x-cache")
    check(r2.header("age") is not None and int(r2.header("age")) >= 0, "Age on a hit: %r" % r2.headers)
    eq(r2.body, r.body, "cached body is the original")
    eq(sim.count(job), 1, "upstream requests")


@test
def request_id_and_headers_upstream(env):
    """the client's X-Request-Id is echoed and sent upstream with the token and jobgate's User-Agent"""
    gate, sim = env["gate"], env["sim"]
    job = hex32()
    r = gate.get(path(job), headers={"X-Request-Id": "trace-abc.123"})
    eq(r.header("x-request-id"), "trace-abc.123", "echoed id")
    last = sim.last()
    headers = {k.lower(): v for k, v in last["headers"].items()}
    eq(headers.get("x-request-id"), "trace-abc.123", "id sent upstream")
    eq(headers.get("x-auth-token"), TOKEN, "token forwarded")
    check(headers.get("user-agent", "").startswith("jobgate/"), "user agent %r" % headers.get("user-agent"))
    eq(last["path"], path(job), "upstream path")


@test
def upstream_connection_is_kept_alive(env):
    """successive misses reuse one upstream connection (keep-alive)"""
    gate, sim = env["gate"], env["sim"]
    peers = set()
    for _ in range(5):
        eq(gate.get(path(hex32())).header("x-cache"), "MISS", "a miss")
        peers.add(sim.last()["peer"])
    eq(len(peers), 1, "upstream connections used for 5 sequential misses: %s" % peers)


@test
def unsafe_request_id_replaced(env):
    """an X-Request-Id with unsafe characters is replaced by a generated one"""
    r = env["gate"].get(path(hex32()), headers={"X-Request-Id": "bad id\twith<stuff>"})
    eq(r.status, 200, "status")
    rid = r.header("x-request-id")
    check(rid and rid != "bad id\twith<stuff>" and len(rid) == 32, "generated id %r" % rid)


@test
def head_has_headers_only(env):
    """HEAD answers with GET's headers and Content-Length, without a body"""
    gate = env["gate"]
    job = hex32()
    get = gate.get(path(job))
    head = gate.get(path(job), method="HEAD")
    eq(head.status, 200, "status")
    eq(head.body, b"", "HEAD body")
    eq(head.header("content-length"), str(len(get.body)), "content-length")
    eq(head.header("x-cache"), "HIT", "x-cache")


@test
def cache_key_is_route_project_job(env):
    """the Redis key holds rule name, project and job, nothing else"""
    gate, redis = env["gate"], env["redis"]
    job = hex32()
    gate.get(path(job) + "?x=1", headers={"X-Request-Id": "k1"})
    keys = redis.cli("KEYS", "*%s*" % job).split()
    eq(keys, [cache_key(PROJECT, job, "p")], "keys")


@test
def malformed_requests_get_400(env):
    """a malformed request line or header gets 400, never a crash"""
    gate = env["gate"]
    for raw in (b"GARBAGE\r\n\r\n", b"GET /x HTTP/9.9\r\n\r\n", b"GET / HTTP/1.1\r\nNoColonHeader\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", gate.port), timeout=5) as s:
            s.sendall(raw)
            data = s.recv(4096)
        check(data.startswith(b"HTTP/1.1 400") or data.startswith(b"HTTP/1.0 400"), "%r answered %r" % (raw, data[:80]))
    eq(gate.admin("/healthz").status, 200, "still alive")


@test
def healthz_and_metrics(env):
    """/healthz reports the cache; /metrics counts requests by route, status and cache result"""
    gate = env["gate"]
    # A refused id and an unknown path, so that their counters exist (the earlier tests gave a HIT and a MISS).
    eq(gate.get(path("x" * 32)).status, 400, "a refused id")
    eq(gate.get("/favicon.ico").status, 404, "an unknown path")
    h = gate.admin("/healthz")
    eq(h.status, 200, "healthz status")
    doc = h.json()
    eq(doc["status"], "ok", "health")
    eq(doc["cache"]["backend"], "redis", "backend")
    eq(doc["cache"]["state"], "up", "cache state")
    m = gate.admin("/metrics")
    eq(m.status, 200, "metrics status")
    text = m.body.decode()
    check(m.header("content-type").startswith("text/plain"), "metrics content type")
    for needle in ('jobgate_requests_total{route="elb-v1",status="200",cache="HIT"}',
                   'jobgate_requests_total{route="elb-v1",status="200",cache="MISS"}',
                   'jobgate_requests_total{route="elb-v1",status="400",cache="BYPASS"}',
                   'jobgate_requests_total{route="none",status="404",cache="BYPASS"}',
                   'jobgate_upstream_requests_total{route="elb-v1",status="200"}',
                   'jobgate_request_duration_seconds_bucket{le="+Inf"}',
                   'jobgate_cache_up{backend="redis"} 1', "jobgate_redis_errors_total 0"):
        check(needle in text, "metrics lack %s" % needle)
    check(TOKEN not in text, "token in metrics")
    # Every series named, and each exactly once (a name table that lost a row prints "(null)").
    check("(null)" not in text, "metrics print (null): %s" % [l for l in text.splitlines() if "(null)" in l])
    series = [line.rsplit(" ", 1)[0] for line in text.splitlines() if line and not line.startswith("#")]
    duplicated = sorted({s for s in series if series.count(s) > 1})
    check(not duplicated, "metrics series given twice: %s" % duplicated)
    check('jobgate_events_total{event="audit_dropped"} 0' in text, "every event has its series")
    eq(gate.admin("/metrics", method="POST").status, 405, "POST /metrics")


@test
def client_listener_keeps_the_admin_endpoints_apart(env):
    """the client listener answers /healthz with the status word only and /metrics as an unknown route (404 JSON);
    the admin listener serves both and 404 for anything else"""
    gate = env["gate"]
    h = gate.get("/healthz", token=None)
    eq(h.status, 200, "client /healthz")
    eq(h.json(), {"status": "ok"}, "client /healthz body")
    for secret in (b"pid", b"version", b"endpoint", b"redis", b"connections", str(env["redis"].port).encode()):
        check(secret not in h.body, "client /healthz shows %r: %r" % (secret, h.body))
    for token in (None, TOKEN):
        m = gate.get("/metrics", token=token)
        eq(m.status, 404, "client /metrics (token %r)" % token)
        eq(assert_documented_error(m, "client /metrics")["code"], "JG.NO_ROUTE", "client /metrics code")
        check(m.header("x-request-id"), "client /metrics has no X-Request-Id")
        check(b"jobgate_" not in m.body, "client /metrics leaks a series")
    eq(gate.admin("/metrics").status, 200, "admin /metrics")
    detail = gate.admin("/healthz").json()
    eq(detail["cache"]["endpoint"], "127.0.0.1:%d" % env["redis"].port, "admin /healthz names the Redis endpoint")
    check("pid" in detail and "version" in detail, "admin /healthz details: %r" % detail)
    other = gate.admin(path(hex32()), token=TOKEN)
    eq(other.status, 404, "a job path on the admin listener")
    eq(assert_documented_error(other, "admin 404")["code"], "JG.NO_ROUTE", "admin 404 code")


@test
def keep_alive_serves_many_requests(env):
    """one client connection serves many requests (keep-alive)"""
    import http.client
    gate = env["gate"]
    conn = http.client.HTTPConnection("127.0.0.1", gate.port, timeout=10)
    job = hex32()
    for i in range(20):
        conn.request("GET", path(job), headers={"X-Auth-Token": TOKEN})
        r = conn.getresponse()
        r.read()
        eq(r.status, 200, "request %d" % i)
    conn.close()


def read_answer(sock, head_only=False):
    """One answer from a kept-alive socket: (status, [(name, value)] in order, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        check(chunk, "connection closed before a whole head: %r" % data)
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = [tuple(part.strip() for part in line.split(":", 1)) for line in lines[1:]]
    length = 0 if head_only else int(dict((k.lower(), v) for k, v in fields)["content-length"])
    while len(rest) < length:
        rest += sock.recv(4096)
    return int(lines[0].split()[1]), fields, rest[:length]


@test
def answer_headers_exactly(env):
    """every header of a miss, a hit, a HEAD hit and an error, once each, with its value (reply.c writes most of them as one block)"""
    gate = env["gate"]
    job = hex32()
    ask = ("%s %s HTTP/1.1\r\nHost: gw\r\nX-Auth-Token: " + TOKEN + "\r\nX-Request-Id: %s\r\n\r\n")
    with socket.create_connection(("127.0.0.1", gate.port), timeout=10) as s:
        answers = []
        for method, target, rid in (("GET", path(job), "r-miss"), ("GET", path(job), "r-hit"),
                                    ("HEAD", path(job), "r-head"), ("GET", "/nowhere", "r-404")):
            s.sendall((ask % (method, target, rid)).encode())
            answers.append(read_answer(s, head_only=method == "HEAD"))
    miss, hit, head, missing = answers
    names = ["content-length", "date", "content-type", "x-request-id", "x-cache"]
    for (status, fields, body), want_status, extra, rid, cache in (
            (miss, 200, [], "r-miss", "MISS"), (hit, 200, ["age"], "r-hit", "HIT"),
            (head, 200, ["age"], "r-head", "HIT"), (missing, 404, [], "r-404", "BYPASS")):
        eq(status, want_status, "status (%s)" % rid)
        eq(sorted(k.lower() for k, _ in fields), sorted(names + extra), "header names, each once (%s)" % rid)
        h = dict((k.lower(), v) for k, v in fields)
        eq(h["content-type"], "application/json;charset=UTF-8", "content-type (%s)" % rid)
        eq(h["x-request-id"], rid, "x-request-id")
        eq(h["x-cache"], cache, "x-cache (%s)" % rid)
        check(re.match(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
                       r"\d{4} \d\d:\d\d:\d\d GMT$", h["date"]), "date: %r" % h["date"])
        if "age" in extra:
            check(re.match(r"^\d+$", h["age"]) and int(h["age"]) < 60, "age: %r" % h["age"])
    eq(int(dict(hit[1])["Content-Length"]), len(miss[2]), "hit content-length")
    eq(hit[2], miss[2], "hit body")
    eq(int(dict(head[1])["Content-Length"]), len(miss[2]), "HEAD: the GET's content-length")
    eq(int(dict(missing[1])["Content-Length"]), len(missing[2]), "error content-length")


if __name__ == "__main__":
    run(setup, teardown)
