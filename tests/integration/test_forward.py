#!/usr/bin/env python3
"""Forward routes (lua-free-rules/README.md, "forward"): the rest of a
service's calls go upstream as sent and come back as the cloud sent them,
never cached, never coalesced, never retried.

jobgate runs the shipped ECS, EVS, VPC and ELB classic rules, forwarding
and caching at once, in token mode with client keys (one granted project)
and an audit log. jobsim plays ECS (the create call, counted per project in
/_sim/stats "posts") and ELB classic. The exactly-once tests bend the create
call with jobsim's on=create faults: a client that gives up while the
upstream answers late, an upstream slower than the rule's timeout, a reset.
"""
import json
import os
import shutil
import socket
import time

from harness import Jobgate, Sim, check, eq, hex32, request, run, stop_all, test, wait_until
from harness import SRCDIR, TestFailure

P1, P2 = hex32(), hex32()
KEY = "forward-key-0001"
UPSTREAM_TOKEN = "jobgate-own-token-" + hex32()
RULES = os.path.join(SRCDIR, "lua-free-rules")
SERVER = {"server": {"imageRef": "i", "flavorRef": "f", "name": "n", "vpcid": "v", "nics": [{"subnet_id": "s"}],
                     "root_volume": {"volumetype": "SSD"}}}


def rule_copy(tmp, name, sim, timeout=None):
    """A shipped rule pointed at `sim` (and its upstream timeout set)."""
    shared = os.path.join(tmp, "shared")
    if not os.path.isdir(shared):
        shutil.copytree(os.path.join(RULES, "shared"), shared)
    text = open(os.path.join(RULES, name)).read()
    lines = []
    for line in text.splitlines():
        if line.startswith("  url: https://"):
            line = "  url: " + sim.url
        if timeout and line.startswith("  timeout: "):
            line = "  timeout: " + timeout
        lines.append(line)
    dest = os.path.join(tmp, name)
    with open(dest, "w") as f:
        f.write("\n".join(lines) + "\n")
    return dest


def keys_text(projects):
    import hashlib
    return ("clients:\n  - name: fwd\n    key_sha256: %s\n    projects: [%s]\n    routes: [\"*\"]\n"
            % (hashlib.sha256(KEY.encode()).hexdigest(), ", ".join('"%s"' % p for p in projects)))


def make_gate(env, extra="", keys=(P1,), timeout="2s"):
    gate = Jobgate(None, redis=None, upstream_token=UPSTREAM_TOKEN)
    ecs = env["ecs_sim"]
    gate.rules = [rule_copy(gate.tmp, "ecs.yaml", ecs, timeout), rule_copy(gate.tmp, "evs.yaml", ecs),
                  rule_copy(gate.tmp, "vpc.yaml", ecs), rule_copy(gate.tmp, "elb-v1.yaml", env["elb_sim"])]
    keys_path = os.path.join(gate.tmp, "keys.yaml")
    with open(keys_path, "w") as f:
        f.write(keys_text(keys))
    gate.audit_path = os.path.join(gate.tmp, "audit.log")
    gate.extra_config = ("client_keys: %s\naudit:\n  file: %s\n  flush_interval: 50ms\n%s"
                         % (keys_path, gate.audit_path, extra))
    return gate.start()


def setup():
    env = {}
    env["ecs_sim"] = Sim(init_ms=0, running_ms=0, api="ecs").start()
    env["elb_sim"] = Sim(init_ms=0, running_ms=0, request_log=True).start()
    env["gate"] = make_gate(env)
    return env


def fwd(gate, method, path, body=None, headers=None, key=KEY, timeout=15.0):
    h = {"X-Api-Key": key} if key else {}
    h.update(headers or {})
    if isinstance(body, dict):
        body = json.dumps(body)
        h.setdefault("Content-Type", "application/json")
    return request(gate.port, path, method=method, headers=h, body=body, timeout=timeout)


def posts(sim, project):
    return sim.stats().get("posts", {}).get(project, 0)


def without_request_id(body):
    """An answer's JSON without its request_id (each call has its own), else the bytes."""
    try:
        doc = json.loads(body)
    except ValueError:
        return body
    if isinstance(doc, dict):
        doc.pop("request_id", None)
    return doc


def audit_lines(gate):
    try:
        with open(gate.audit_path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


@test
def a_create_call_is_forwarded_once_as_sent(env):
    """POST /ecs/v1.1/{p}/cloudservers: upstream gets the path, query, body and passed headers, jobgate's token, never the client's key; the answer comes back as sent"""
    gate, sim = env["gate"], env["ecs_sim"]
    before = posts(sim, P1)
    body = json.dumps(SERVER)
    r = fwd(gate, "POST", "/ecs/v1.1/%s/cloudservers?dry=0" % P1, body=body,
            headers={"Content-Type": "application/json", "X-Client-Token": "idem-1", "X-Auth-Token": "client-tok",
                     "X-Language": "en-us"})
    eq(r.status, 200, "create: %r" % r.body)
    doc = r.json()
    eq(sorted(doc), ["job_id", "serverIds"], "jobsim's answer")
    eq(r.headers.get("x-cache"), "BYPASS", "never cached")
    eq(posts(sim, P1) - before, 1, "POSTs upstream")
    last = sim.last()
    eq((last["method"], last["path"], last["query"]), ("POST", "/v1.1/%s/cloudservers" % P1, "dry=0"), "request")
    eq(last["body"], body, "the body, byte for byte")
    sent = {k.lower(): v for k, v in last["headers"].items()}
    eq(sent.get("x-auth-token"), UPSTREAM_TOKEN, "jobgate's token, not the client's")
    eq(sent.get("x-client-token"), "idem-1", "X-Client-Token passed on")
    eq(sent.get("x-language"), "en-us", "X-Language passed on")
    check("x-api-key" not in sent and "authorization" not in sent, "client credentials kept back: %r" % sent)
    # The job it made is polled through the job route, cached.
    job = fwd(gate, "GET", "/ecs/v1/%s/jobs/%s" % (P1, doc["job_id"]))
    eq(job.status, 200, "poll: %r" % job.body)
    again = fwd(gate, "GET", "/ecs/v1/%s/jobs/%s" % (P1, doc["job_id"]))
    eq(again.headers.get("x-cache"), "HIT", "the job route still caches")


@test
def other_methods_come_back_as_sent(env):
    """PUT, DELETE and a list GET are forwarded with their method, path and body; status, body and type come back as jobsim sent them"""
    gate, sim = env["gate"], env["ecs_sim"]
    for method, path, body in (("GET", "/v1/%s/cloudservers" % P1, None),
                               ("DELETE", "/v1/%s/cloudservers" % P1, None),
                               ("PUT", "/v1/%s/cloudservers" % P1, '{"server":{"name":"x"}}'),
                               ("GET", "/v1/%s/cloudservers/detail?limit=2" % P1, None),
                               ("DELETE", "/v1/%s/nosuch/%s" % (P1, hex32()), None)):
        direct = request(sim.port, path, method=method, body=body,
                         headers={"Content-Type": "application/json"} if body else None)
        through = fwd(gate, method, "/ecs" + path, body=body,
                      headers={"Content-Type": "application/json"} if body else None)
        what = "%s %s" % (method, path)
        eq(through.status, direct.status, what + " status")
        eq(without_request_id(through.body), without_request_id(direct.body), what + " body")
        eq(through.headers.get("content-type"), direct.headers.get("content-type"), what + " type")
        if direct.status == 405:
            eq(through.headers.get("allow"), direct.headers.get("allow"), what + " Allow")
        check(direct.status in (404, 405), "jobsim answers %s with %d" % (what, direct.status))
        if path.endswith("/cloudservers"):  # jobsim's /_sim/last shows the create path's requests only
            last = sim.last()
            eq((last["method"], last["path"]), (method, path), what + " seen upstream")
            if body:
                eq(last.get("body"), body, what + " body upstream")
    r = fwd(gate, "POST", "/ecs/v1.1/%s/cloudservers" % P1, body="not json", headers={"Content-Type": "text/plain"})
    eq((r.status, r.json()["error"]["code"]), (400, "Ecs.0005"), "ECS's own 400 as sent")
    r = fwd(gate, "GET", "/v1.0/%s/elbaas/loadbalancers" % P1)  # ELB classic: the prefix kept
    eq(r.status, 404, "ELB list on jobsim: %r" % r.body)
    wanted = "GET /v1.0/%s/elbaas/loadbalancers" % P1
    wait_until(lambda: wanted in open(env["elb_sim"].log.name, errors="replace").read(), 5,
               "jobsim's log to show " + wanted + " (the ELB path kept whole)")


@test
def a_post_runs_once_when_the_client_gives_up(env):
    """the client times out, the upstream answers late: the POST reached jobsim exactly once, and jobgate goes on"""
    gate, sim = env["gate"], env["ecs_sim"]
    before, creates = posts(sim, P1), sim.stats()["creates"]
    sim._control("POST", "/_sim/faults?on=create&kind=delay&delay_ms=1200&count=1")
    try:
        try:
            fwd(gate, "POST", "/ecs/v1/%s/cloudservers" % P1, body=SERVER, timeout=0.3)
            raise TestFailure("answered before the upstream did")
        except (socket.timeout, TimeoutError):
            pass
        time.sleep(1.6)  # the late answer arrives and is thrown away
        eq(posts(sim, P1) - before, 1, "POSTs upstream")
        eq(sim.stats()["creates"] - creates, 1, "jobs made")
        r = fwd(gate, "POST", "/ecs/v1/%s/cloudservers" % P1, body=SERVER)
        eq(r.status, 200, "the next create")
        eq(posts(sim, P1) - before, 2, "the next POST, once")
    finally:
        sim.clear_faults()


@test
def a_post_is_never_retried(env):
    """an upstream slower than the rule's timeout: 504 in the API's shape; a reset: 502; each POST reached jobsim once"""
    gate, sim = env["gate"], env["ecs_sim"]
    try:
        before = posts(sim, P1)
        sim._control("POST", "/_sim/faults?on=create&kind=hang&count=1")
        r = fwd(gate, "POST", "/ecs/v1/%s/cloudservers" % P1, body=SERVER)
        eq(r.status, 504, "hang past the rule's 2s timeout: %r" % r.body)
        check(r.json().get("code") or r.json().get("error") or r.json().get("error_code"), "an error body")
        eq(posts(sim, P1) - before, 1, "POSTs after a timeout")
        sim._control("POST", "/_sim/faults?on=create&kind=reset&count=1")
        r = fwd(gate, "POST", "/ecs/v1/%s/cloudservers" % P1, body=SERVER)
        eq(r.status, 502, "reset: %r" % r.body)
        eq(posts(sim, P1) - before, 2, "POSTs after a reset")
    finally:
        sim.clear_faults()


@test
def each_post_goes_on_a_fresh_connection(env):
    """GETs reuse kept-alive upstream connections; a POST never does (libcurl would resend it on a dead one)"""
    gate, sim = env["gate"], env["ecs_sim"]
    peers = []
    for _ in range(3):
        eq(fwd(gate, "POST", "/ecs/v1/%s/cloudservers" % P1, body=SERVER).status, 200, "create")
        peers.append(sim.last()["peer"])
    eq(len(set(peers)), 3, "three POSTs, three connections: %r" % peers)
    gets = []
    for _ in range(3):
        fwd(gate, "GET", "/ecs/v1/%s/cloudservers/detail" % P1)
        gets.append(sim.last()["peer"])
    check(len(set(gets)) < 3, "GETs reuse a connection: %r" % gets)


@test
def forwarded_calls_are_checked_and_audited(env):
    """no key: 401; a project not granted: 403; neither leaves jobgate; each call has its audit line"""
    gate, sim = env["gate"], env["ecs_sim"]
    before1, before2 = posts(sim, P1), posts(sim, P2)
    eq(fwd(gate, "POST", "/ecs/v1/%s/cloudservers" % P1, body=SERVER, key=None).status, 401, "no key")
    eq(fwd(gate, "POST", "/ecs/v1/%s/cloudservers" % P2, body=SERVER).status, 403, "project not granted")
    eq(fwd(gate, "POST", "/ecs/v1/servers-without-project", body=SERVER).status, 403, "no project: '*' only")
    eq((posts(sim, P1) - before1, posts(sim, P2) - before2), (0, 0), "nothing went upstream")
    rid = "fwd-audit-" + hex32()[:8]
    r = fwd(gate, "POST", "/ecs/v1/%s/cloudservers" % P1, body=SERVER, headers={"X-Request-Id": rid})
    eq(r.status, 200, "granted")
    wait_until(lambda: any(a.get("request_id") == rid for a in audit_lines(gate)), 5, "the audit line")
    line = next(a for a in audit_lines(gate) if a.get("request_id") == rid)
    eq((line["method"], line["path"], line["project_id"], line["status"], line["upstream_status"], line["client"]),
       ("POST", "/ecs/v1/%s/cloudservers" % P1, P1, 200, 200, "fwd"), "audit line %r" % line)
    denied = [a for a in audit_lines(gate) if a.get("project_id") == P2]
    check(denied and denied[-1]["status"] == 403, "the refused call is audited too: %r" % denied)


@test
def forward_refusals(env):
    """a method the route does not forward: 405; dot segments: 400; a body over forward.max_body: 413; none goes upstream"""
    gate, sim = env["gate"], env["ecs_sim"]
    total = sim.stats()["total"]
    before = posts(sim, P1)
    r = fwd(gate, "OPTIONS", "/ecs/v1/%s/cloudservers" % P1)
    eq(r.status, 405, "OPTIONS")
    eq(r.headers.get("allow"), "GET, HEAD, POST, PUT, PATCH, DELETE", "Allow")
    for path in ("/ecs/v1/%s/../%s/cloudservers" % (P1, P2), "/ecs/v1/%s/%%2e%%2e/x" % P1,
                 "/ecs/v1/%s/a%%2Fb" % P1):
        eq(fwd(gate, "GET", path).status, 400, path)
    big = json.dumps({"server": {"name": "x" * (1024 * 1024)}})
    r = fwd(gate, "POST", "/ecs/v1/%s/cloudservers" % P1, body=big, headers={"Content-Type": "application/json"})
    check(r.status == 413, "a body over 1 MiB: %d" % r.status)
    eq(posts(sim, P1), before, "no POST upstream")
    eq(sim.stats()["total"], total, "no job request upstream")


@test
def forwarded_calls_are_rate_limited(env):
    """the guard of the upstream holds forwarded calls too: over the rate, 503 with Retry-After, not sent"""
    gate = make_gate(env, extra="upstream_limits:\n  rate: 0.2\n  burst: 1\n  queue: 0\n")
    try:
        sim = env["ecs_sim"]
        before = posts(sim, P1)
        eq(fwd(gate, "POST", "/ecs/v1/%s/cloudservers" % P1, body=SERVER).status, 200, "first")
        r = fwd(gate, "POST", "/ecs/v1/%s/cloudservers" % P1, body=SERVER)
        eq(r.status, 503, "second, over the rate: %r" % r.body)
        check(r.headers.get("retry-after"), "Retry-After")
        eq(posts(sim, P1) - before, 1, "one POST upstream")
    finally:
        gate.stop()


@test
def aksk_signs_the_forwarded_body(env):
    """in aksk mode a forwarded POST is signed over its body: jobsim verifies it"""
    sim = Sim(init_ms=0, running_ms=0, api="ecs").start()
    try:
        sk = "forward-sk-" + hex32()
        sim._control("POST", "/_sim/auth", body=json.dumps({"mode": "aksk", "ak": "AKFWD", "sk": sk}))
        gate = Jobgate(None, redis=None)
        gate.rules = [rule_copy(gate.tmp, "ecs.yaml", sim)]
        sk_path = os.path.join(gate.tmp, "sk")
        with os.fdopen(os.open(sk_path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(sk + "\n")
        gate.upstream_auth = "    mode: aksk\n    ak: AKFWD\n    sk_file: %s\n" % sk_path
        gate.start()
        try:
            r = fwd(gate, "POST", "/ecs/v1.1/%s/cloudservers" % P1, body=SERVER, key=None)
            eq(r.status, 200, "signed create: %r" % r.body)
            other = {"server": dict(SERVER["server"], name="another body")}
            r = fwd(gate, "POST", "/ecs/v1/%s/cloudservers?x=1" % P1, body=other, key=None)
            eq(r.status, 200, "signed create with a query: %r" % r.body)
            auth = sim._control("GET", "/_sim/auth")
            eq((auth["sig_ok"], auth["sig_bad"]), (2, 0), "signatures checked: %r" % auth)
        finally:
            gate.stop()
    finally:
        sim.stop()


@test
def regions_from_the_host_and_the_project_map(env):
    """{region} in the upstream url: from the project map, from the Host (SERVICE.REGION.DOMAIN); unknown region 404, unknown project 400, never sent"""
    sim = env["ecs_sim"]
    gate = Jobgate(None, redis=None, upstream_token=UPSTREAM_TOKEN)
    path = rule_copy(gate.tmp, "ecs.yaml", sim)
    text = open(path).read().replace("url: " + sim.url, "url: http://ecs.{region}.myhuaweicloud.com")
    with open(path, "w") as f:
        f.write(text)
    gate.rules = [path]
    gate.extra_config = ("regions:\n  host_domain: jobgate.example\n  names: [ap-southeast-1]\n"
                         "  projects: {\"%s\": eu-west-0}\n" % P1)
    # Every region's host name goes to the loopback simulator, never through DNS (tests only).
    plain = gate.config_text
    gate.config_text = lambda: plain().replace("upstream:\n", "upstream:\n  connect_to: [\"::127.0.0.1:%d\"]\n"
                                                % sim.port, 1)
    gate.start()
    try:
        def host_seen():
            return {k.lower(): v for k, v in sim.last()["headers"].items()}.get("host")

        r = fwd(gate, "POST", "/ecs/v1/%s/cloudservers" % P1, body=SERVER, key=None)
        eq(r.status, 200, "mapped project: %r" % r.body)
        eq(host_seen(), "ecs.eu-west-0.myhuaweicloud.com", "the project's region")
        job = r.json()["job_id"]
        eq(fwd(gate, "GET", "/ecs/v1/%s/jobs/%s" % (P1, job), key=None).status, 200, "job poll")
        eq(host_seen(), "ecs.eu-west-0.myhuaweicloud.com", "job poll, the project's region")

        r = fwd(gate, "POST", "/ecs/v1/%s/cloudservers" % P2, body=SERVER, key=None,
                headers={"Host": "ecs.ap-southeast-1.jobgate.example"})
        eq(r.status, 200, "region from the Host: %r" % r.body)
        eq(host_seen(), "ecs.ap-southeast-1.myhuaweicloud.com", "the Host's region")

        total, before = sim.stats()["total"], posts(sim, P2)
        for headers, status, code, what in (
                ({}, 400, "JG.UNKNOWN_PROJECT_REGION", "project not mapped, no region in the Host"),
                ({"Host": "ecs.nowhere-9.jobgate.example"}, 404, "JG.UNKNOWN_REGION", "unknown region"),
                ({"Host": "ecs.ap-southeast-1.jobgate.example"}, 400, "JG.REGION_MISMATCH", "Host against the map")):
            project = P1 if code == "JG.REGION_MISMATCH" else P2
            r = fwd(gate, "POST", "/ecs/v1/%s/cloudservers" % project, body=SERVER, key=None, headers=headers)
            eq(r.status, status, what + ": %r" % r.body)
            check(code.encode() in r.body, what + ": %r" % r.body)
            r = fwd(gate, "GET", "/ecs/v1/%s/jobs/%s" % (project, hex32()), key=None, headers=headers)
            eq(r.status, status, what + " (job poll): %r" % r.body)
        eq((posts(sim, P2) - before, sim.stats()["total"]), (0, total), "nothing sent to a guessed host")
    finally:
        gate.stop()


if __name__ == "__main__":
    run(setup=setup, teardown=stop_all)
