#!/usr/bin/env python3
"""The official Huawei Cloud Node.js SDK (tests/clients, from npm, pinned),
unmodified, against the simulator playing ECS's create-then-poll flow in aksk
mode: tests/clients/sdk_ecs.test.js runs under Node's own test runner, and
each of its tests is reported here as one TAP point.

It runs twice: straight at the simulator, then through jobgate (JG_GATEWAY=1):
the SDK signs with an AK/SK that jobgate's client keys file issues (an
access_key with its secret_file), jobgate verifies that signature and calls
the simulator with its own AK/SK, the simulator checks jobgate's signature.
Through jobgate createServers goes through the ECS rule's forward route
(uncached, never retried: each POST reaches the simulator once), and its
jobs are polled through the cached job route.

A third run goes through jobgate by Host, as Terraform calls it: the SDK's
endpoint is http://ecs.eu-west-0.jobgate.example (no /ecs), jobgate's
regions.host_domain is jobgate.example and the ECS rule claims host_service
ecs. That name does not resolve here: the SDK's own proxy setting
(withProxyAgent) and a CONNECT proxy in the node test (JG_CONNECT_TO) take
it to jobgate's loopback port, as a wildcard DNS name would. The request,
its Host and its signature are the SDK's, for that name.

The CCE SDK (tests/clients/sdk_cce.test.js) polls CCE jobs (status.phase)
the same way, on a jobsim playing CCE: straight at it, then through jobgate
with the shipped CCE rule (CCE's paths are jobgate's own: the endpoint is
jobgate's root), the SDK signing with the same jobgate-issued AK/SK.

Then the simulator's create call is checked without the SDK, on a second
jobsim with no authentication: the paths, body checks and on=create faults
the SDK test does not reach.

Nothing is skipped: without node (18 or later) or without
tests/clients/node_modules (.ci/install-deps runs `npm ci` there), this test
fails and says what to install.
"""
import http.client
import json
import os
import re
import shutil
import subprocess
import time
import traceback

import harness
from harness import Jobgate, Redis, SRCDIR, Sim, TestFailure, check, eq, hex32, run, stop_all

CLIENTS = os.path.join(SRCDIR, "tests", "clients")
NODE_TEST = "sdk_ecs.test.js"
CCE_NODE_TEST = "sdk_cce.test.js"
AK = "sdk-test-ak-" + hex32()[:8]
SK = "sdk-test-sk-" + hex32()
PROJECT = hex32()
# Through jobgate: the SDK's AK/SK are jobgate's to issue (client keys), the
# simulator holds jobgate's own (upstream.auth, mode aksk).
GATE_AK = "JGSDK" + hex32()[:12].upper()
GATE_SK = "jg-sdk-sk-" + hex32()
OTHER_AK = "JGOTHER" + hex32()[:10].upper()
OTHER_SK = "jg-other-sk-" + hex32()
NODE_TIMEOUT_S = 300
# The packages tests/clients/package.json pins, which must be installed as pinned.
PINNED = ("@huaweicloud/huaweicloud-sdk-core", "@huaweicloud/huaweicloud-sdk-ecs", "@huaweicloud/huaweicloud-sdk-cce",
          "uuid")
INSTALL_HINT = "run .ci/install-deps (it installs nodejs and npm and runs `npm ci` in tests/clients)"


def node_binary():
    return shutil.which("node") or shutil.which("nodejs")


def prerequisites():
    """None when node and the pinned SDKs are installed, else what is missing."""
    node = node_binary()
    if node is None:
        return "no node on PATH: " + INSTALL_HINT
    out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30)
    m = re.match(r"v(\d+)\.", out.stdout)
    if not m or int(m.group(1)) < 18:
        return "node %r is too old: node:test with --test-reporter needs 18 or later" % out.stdout.strip()
    with open(os.path.join(CLIENTS, "package.json")) as f:
        wanted = json.load(f)["dependencies"]
    for name in PINNED:
        installed = os.path.join(CLIENTS, "node_modules", name, "package.json")
        if not os.path.exists(installed):
            return "%s is not installed in %s/node_modules: %s" % (name, CLIENTS, INSTALL_HINT)
        with open(installed) as f:
            version = json.load(f)["version"]
        if version != wanted[name]:
            return "%s %s is installed, package.json pins %s: %s" % (name, version, wanted[name], INSTALL_HINT)
    return None


def start_sim(api="ecs"):
    """jobsim playing `api` (ECS by default), in aksk mode with AK/SK."""
    sim = Sim(init_ms=300, running_ms=600, api=api).start()
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=10)
    try:
        conn.request("POST", "/_sim/auth", body=json.dumps({"mode": "aksk", "ak": AK, "sk": SK}))
        r = conn.getresponse()
        eq(r.status, 200, "POST /_sim/auth: %r" % r.read())
    finally:
        conn.close()
    return sim


TAP_POINT = re.compile(r"^(ok|not ok) (\d+) - (.*?)(?: # (SKIP|TODO)\b ?(.*))?$")
NODE_VARIABLES = ("JG_ENDPOINT", "JG_SIM_URL", "JG_GATEWAY", "JG_EXPECT_BAD_SIGNATURE_CODE", "JG_SKIP_CREATE",
                  "JG_CONNECT_TO",
                  "JG_SIM_AK", "JG_SIM_SK", "JG_OTHER_AK", "JG_OTHER_SK", "JG_AK", "JG_SK", "JG_PROJECT_ID")


def secret_file(folder, name, value):
    path = os.path.join(folder, name)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(value + "\n")
    return path


def start_gate(sim, redis, rule="ecs.yaml"):
    """jobgate in front of `sim` with the shipped ECS rule (or `rule`), caching in
    `redis`: client keys with two AK/SK clients (the SDK's, granted PROJECT;
    another, granted another project), its own AK/SK upstream, an audit log."""
    gate = Jobgate(sim.url, redis=redis, rules=[os.path.join(SRCDIR, "lua-free-rules", rule)])
    gate.upstream_auth = "    mode: aksk\n    ak: %s\n    sk_file: %s\n" % (AK, secret_file(gate.tmp, "upstream-sk", SK))
    keys = os.path.join(gate.tmp, "keys.yaml")
    with open(keys, "w") as f:
        f.write("clients:\n"
                "  - name: sdk-user\n    access_key: %s\n    secret_file: sdk-sk\n    projects: [\"%s\"]\n"
                "  - name: other-team\n    access_key: %s\n    secret_file: other-sk\n    projects: [\"%s\"]\n"
                % (GATE_AK, PROJECT, OTHER_AK, hex32()))
    secret_file(gate.tmp, "sdk-sk", GATE_SK)
    secret_file(gate.tmp, "other-sk", OTHER_SK)
    gate.audit_path = os.path.join(gate.tmp, "audit.log")
    # A cloud 429 backs the upstream off briefly (the node tests wait it out, sdk_ecs.test.js afterThrottle).
    # By Host: ecs.eu-west-0.jobgate.example is the ECS rule (route.host_service), with ECS's own paths.
    gate.extra_config = ("regions:\n  host_domain: jobgate.example\n  names: [eu-west-0]\n"
                         "client_keys: %s\naudit:\n  file: %s\n  flush_interval: 100ms\n"
                         "upstream_limits:\n  rate: 100000\n  burst: 100000\n  breaker_threshold: 1000\n"
                         "  throttle_backoff: 100ms\n" % (keys, gate.audit_path))
    return gate.start()


def run_node(sim, gate=None, by_host=False, node_test=NODE_TEST, gate_prefix="/ecs"):
    """Run the node test `node_test` against `sim`, or through `gate` in
    front of it at `gate_prefix` (`by_host`: at
    http://ecs.eu-west-0.jobgate.example, reached through the SDK's proxy
    setting); returns (exit code, [(ok, name, directive, reason, detail
    lines)], output)."""
    env = {k: v for k, v in os.environ.items() if k not in NODE_VARIABLES}  # whatever the caller's shell says
    env.update(JG_ENDPOINT=sim.url, JG_AK=AK, JG_SK=SK, JG_PROJECT_ID=PROJECT)
    if gate is not None:
        env.update(JG_ENDPOINT="http://127.0.0.1:%d%s" % (gate.port, gate_prefix), JG_SIM_URL=sim.url, JG_GATEWAY="1",
                   JG_AK=GATE_AK, JG_SK=GATE_SK, JG_EXPECT_BAD_SIGNATURE_CODE="JG.SIGNATURE_MISMATCH",
                   JG_SIM_AK=AK, JG_SIM_SK=SK, JG_OTHER_AK=OTHER_AK, JG_OTHER_SK=OTHER_SK)
    if by_host:
        env.update(JG_ENDPOINT="http://ecs.eu-west-0.jobgate.example", JG_CONNECT_TO="127.0.0.1:%d" % gate.port)
    out = subprocess.run([node_binary(), "--test", "--test-reporter=tap", node_test], cwd=CLIENTS, env=env,
                         capture_output=True, text=True, timeout=NODE_TIMEOUT_S)
    results = []
    for line in out.stdout.splitlines():
        m = TAP_POINT.match(line)  # top level only: subtests are indented
        if m:
            results.append([m.group(1) == "ok", m.group(3).replace("\\#", "#"), m.group(4), m.group(5) or "", []])
        elif results and line.startswith("  "):
            results[-1][4].append(line)
    return out.returncode, results, out.stdout + out.stderr


# The only skips accepted, by run: a test for the other kind of endpoint.
ACCEPTED_SKIPS = {"sdk": ("jobgate only",), "sdk via jobgate": ("direct to jobsim only",),
                  "sdk via jobgate by host": ("direct to jobsim only",), "cce sdk": ("jobgate only",),
                  "cce sdk via jobgate": ("direct to jobsim only",)}


def node_point(run_name, ok, name, directive, reason, detail):
    def point(env):
        accepted = directive == "SKIP" and reason.startswith(ACCEPTED_SKIPS[run_name])
        check(directive is None or accepted,
              "the node test was marked %s (%s): a test not run is a failure here" % (directive, reason))
        check(ok, "the node test failed:\n" + "\n".join(detail))

    point.__name__ = "%s: %s%s" % (run_name, name, " (skipped: %s)" % reason if directive else "")
    return point


# ------------------------------------------- the create call, without the SDK


def call(sim, method, path, body=None, headers=None, timeout=10):
    """(status, lower-case headers, parsed JSON or None) of one request to `sim`."""
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=timeout)
    try:
        conn.request(method, path, body=json.dumps(body) if isinstance(body, dict) else body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, json.loads(data) if data else None
    finally:
        conn.close()


def server_body(**extra):
    server = {"imageRef": "i", "flavorRef": "f", "name": "n", "vpcid": "v", "nics": [{"subnet_id": "s"}],
              "root_volume": {"volumetype": "SSD"}}
    server.update(extra)
    return {"server": server}


def sim_create_call(env):
    """jobsim's ECS create call: both paths, the body checked, sub-jobs carrying the serverIds, POSTs counted"""
    sim, project = env["plain"], hex32()
    status, _, doc = call(sim, "POST", "/v1/%s/cloudservers" % project, server_body(count=3))
    eq(status, 200, "v1 create: %r" % doc)
    eq(sorted(doc), ["job_id", "serverIds"], "answer members")
    check(re.fullmatch("[0-9a-f]{32}", doc["job_id"]), "job id %r" % doc["job_id"])
    eq(len(doc["serverIds"]), 3, "serverIds")
    status, _, job = call(sim, "GET", "/v1/%s/jobs/%s" % (project, doc["job_id"]))
    eq(status, 200, "poll")
    eq(job["entities"]["sub_jobs_total"], 3, "sub-jobs")
    eq(sorted(s["entities"]["server_id"] for s in job["entities"]["sub_jobs"]), sorted(doc["serverIds"]),
       "the sub-jobs create the servers the answer named")
    status, _, doc = call(sim, "POST", "/v1.1/%s/cloudservers" % project, server_body())
    eq((status, len(doc["serverIds"])), (200, 1), "v1.1 create, count 1 by default")

    for body, what in ((b"not json", "not JSON"), (server_body(count=101), "count over 100"),
                       (server_body(nics=[]), "no nic"), ({"servers": {}}, "no server")):
        status, _, doc = call(sim, "POST", "/v1/%s/cloudservers" % project, body)
        eq(status, 400, what)
        eq(doc["error"]["code"], "Ecs.0005", what)
    status, headers, doc = call(sim, "GET", "/v1/%s/cloudservers" % project)
    eq((status, headers.get("allow"), doc["error_code"]), (405, "POST", "APIGW.0105"), "GET on the create path")
    stats = sim._control("GET", "/_sim/stats")
    eq(stats["posts"].get(project), 6, "POSTs counted (the 405 is not a POST)")
    eq(stats["creates"], 2, "jobs made")


def sim_create_faults(env):
    """on=create faults: a status refuses before the job, delay and reset bend the answer of a job made"""
    sim, project = env["plain"], hex32()
    path = "/v1/%s/cloudservers" % project
    sim.clear_faults()
    try:
        before = sim._control("GET", "/_sim/stats")["creates"]
        sim.fault(job="*", kind="status", status=500)  # job faults never touch the create call
        eq(call(sim, "POST", path, server_body())[0], 200, "a job=* fault")
        sim._control("POST", "/_sim/faults?on=create&kind=delay&delay_ms=400&count=1")
        started = time.time()
        eq(call(sim, "POST", path, server_body())[0], 200, "delayed create")
        check(time.time() - started >= 0.35, "answered %.2fs late" % (time.time() - started))
        sim._control("POST", "/_sim/faults?on=create&kind=reset&count=1")
        try:
            call(sim, "POST", path, server_body())
            raise TestFailure("a reset create call was answered")
        except (ConnectionError, http.client.HTTPException):
            pass
        sim._control("POST", "/_sim/faults?on=create&kind=status&status=503&shape=apigw&code=APIGW.0201&count=1")
        status, _, doc = call(sim, "POST", path, server_body())
        eq((status, doc["error_code"]), (503, "APIGW.0201"), "status fault")
        stats = sim._control("GET", "/_sim/stats")
        eq(stats["creates"] - before, 3, "jobs made: the delayed and the reset one too, not the refused one")
        eq(stats["posts"][project], 4, "every POST counted once")
        for query in ("on=create&job=x&kind=delay&delay_ms=1", "on=create&kind=wrongid", "on=elsewhere&kind=hang",
                      "on=create&kind=status&status=500&shape=json"):
            status, _, doc = call(sim, "POST", "/_sim/faults?" + query)
            eq(status, 400, "refused fault %s: %r" % (query, doc))
    finally:
        sim.clear_faults()


def main():
    env = {}
    problem = prerequisites()
    results, gate_results, host_results, cce_results, cce_gate_results = [], [], [], [], []
    node_failure = gate_failure = host_failure = cce_failure = cce_gate_failure = None
    if problem is None:
        try:
            env["sim"] = start_sim()
            env["node_rc"], results, env["node_output"] = run_node(env["sim"])
        except Exception:
            node_failure = traceback.format_exc()
        try:
            env["gate_sim"] = start_sim()
            env["redis"] = Redis().start()
            env["gate"] = start_gate(env["gate_sim"], env["redis"])
            env["gate_node_rc"], gate_results, env["gate_node_output"] = run_node(env["gate_sim"], env["gate"])
        except Exception:
            gate_failure = traceback.format_exc()
        try:
            env["host_sim"] = start_sim()
            env["host_gate"] = start_gate(env["host_sim"], env["redis"])
            env["host_node_rc"], host_results, env["host_node_output"] = run_node(env["host_sim"], env["host_gate"],
                                                                                  by_host=True)
        except Exception:
            host_failure = traceback.format_exc()
        try:
            env["cce_sim"] = start_sim("cce")
            env["cce_node_rc"], cce_results, env["cce_node_output"] = run_node(env["cce_sim"], node_test=CCE_NODE_TEST)
        except Exception:
            cce_failure = traceback.format_exc()
        try:
            env["cce_gate_sim"] = start_sim("cce")
            env["cce_gate"] = start_gate(env["cce_gate_sim"], env["redis"], rule="cce.yaml")
            env["cce_gate_node_rc"], cce_gate_results, env["cce_gate_node_output"] = run_node(
                env["cce_gate_sim"], env["cce_gate"], node_test=CCE_NODE_TEST, gate_prefix="")
        except Exception:
            cce_gate_failure = traceback.format_exc()

    def node_and_sdk_installed(env):
        """node 18+ and the pinned SDKs in tests/clients/node_modules"""
        check(problem is None, problem)

    harness.test(node_and_sdk_installed)
    for ok, name, directive, reason, detail in results:
        harness.test(node_point("sdk", ok, name, directive, reason, detail))
    for ok, name, directive, reason, detail in gate_results:
        harness.test(node_point("sdk via jobgate", ok, name, directive, reason, detail))
    for ok, name, directive, reason, detail in host_results:
        harness.test(node_point("sdk via jobgate by host", ok, name, directive, reason, detail))
    for ok, name, directive, reason, detail in cce_results:
        harness.test(node_point("cce sdk", ok, name, directive, reason, detail))
    for ok, name, directive, reason, detail in cce_gate_results:
        harness.test(node_point("cce sdk via jobgate", ok, name, directive, reason, detail))

    def node_run_complete(env):
        """the node runner ran every test of sdk_ecs.test.js and passed them"""
        check(problem is None, "not run: " + str(problem))
        check(node_failure is None, "could not run the node test:\n" + str(node_failure))
        check(len(results) >= 8, "the node runner reported %d tests; output:\n%s" % (len(results), env["node_output"]))
        eq(env["node_rc"], 0, "node --test exit code; output tail:\n" + env["node_output"][-3000:])

    def simulator_checked_the_sdk_signatures(env):
        """jobsim verified the SDK's own AK/SK signatures, and refused the wrong SK"""
        check("sim" in env, "the simulator did not start")
        auth = env["sim"]._control("GET", "/_sim/auth")
        eq(auth["mode"], "aksk", "mode")
        check(auth["sig_ok"] >= 10, "signatures verified: %r" % auth)
        check(auth["sig_bad"] >= 3, "bad signatures refused (wrong SK, tampered replays): %r" % auth)
        stats = env["sim"]._control("GET", "/_sim/stats")
        check(stats["posts"].get(PROJECT, 0) >= 6, "POSTs counted for the project: %r" % stats["posts"])

    def gateway_run_complete(env):
        """through jobgate: the node runner ran every test of sdk_ecs.test.js and passed them"""
        check(problem is None, "not run: " + str(problem))
        check(gate_failure is None, "could not run the node test through jobgate:\n" + str(gate_failure))
        check(len(gate_results) >= 8, "the node runner reported %d tests; output:\n%s"
              % (len(gate_results), env["gate_node_output"]))
        eq(env["gate_node_rc"], 0, "node --test exit code; output tail:\n" + env["gate_node_output"][-3000:])

    def gateway_verified_and_resigned(env):
        """through jobgate: the simulator saw only jobgate's own AK, signed right"""
        check("gate" in env, "jobgate did not start")
        auth = env["gate_sim"]._control("GET", "/_sim/auth")
        check(auth["sig_ok"] >= 3, "jobgate's upstream signatures verified by the simulator: %r" % auth)
        stats = env["gate_sim"]._control("GET", "/_sim/stats")
        # createServers through the forward route, each POST once: the first, the throttled poll's job, the
        # throttled create, the bad body, two with one X-Client-Token (none for the refused signatures).
        check(6 <= stats["posts"].get(PROJECT, 0) <= 8, "POSTs through jobgate: %r" % stats["posts"])
        eq(auth["sig_bad"], 0, "upstream signatures the simulator refused (jobgate signs with its own AK/SK)")
        check(int(env["redis"].cli("DBSIZE")) > 0, "the polls were cached in Redis")

    def host_run_complete(env):
        """through jobgate by Host (ecs.eu-west-0.jobgate.example, ECS's own paths): every test passed, the calls reached the simulator"""
        check(problem is None, "not run: " + str(problem))
        check(host_failure is None, "could not run the node test by host:\n" + str(host_failure))
        check(len(host_results) >= 8, "the node runner reported %d tests; output:\n%s"
              % (len(host_results), env["host_node_output"]))
        eq(env["host_node_rc"], 0, "node --test exit code; output tail:\n" + env["host_node_output"][-3000:])
        stats = env["host_sim"]._control("GET", "/_sim/stats")
        check(6 <= stats["posts"].get(PROJECT, 0) <= 8, "POSTs by host: %r" % stats["posts"])
        eq(env["host_sim"]._control("GET", "/_sim/auth")["sig_bad"], 0, "jobgate's signatures")
        with open(env["host_gate"].audit_path, errors="replace") as f:
            check('"/v1/%s/jobs/' % PROJECT in f.read(), "the audit log has ECS's own job path (no /ecs)")

    def no_client_secret_anywhere(env):
        """the client SKs (and jobgate's own) appear in no log line, audit line, /metrics, /healthz or Redis value"""
        check("gate" in env, "jobgate did not start")
        gate, redis = env["gate"], env["redis"]
        with open(gate.audit_path, errors="replace") as f:
            audit = f.read()
        check("sdk-user" in audit and "other-team" in audit, "the audit log names the AK/SK clients")
        stored = "\n".join(redis.cli("GET", key) if redis.cli("TYPE", key) == "string" else redis.cli("TYPE", key)
                           for key in redis.cli("KEYS", "*").split())
        stored += "\n" + redis.cli("KEYS", "*")
        texts = (("error log", gate.log_text()), ("audit log", audit),
                 ("metrics", gate.admin("/metrics").body.decode()),
                 ("healthz", gate.admin("/healthz").body.decode()), ("redis", stored))
        for secret in (GATE_SK, OTHER_SK, SK):
            for name, text in texts:
                check(secret not in text, "a secret key in the %s" % name)

    harness.test(node_run_complete)
    harness.test(simulator_checked_the_sdk_signatures)
    harness.test(gateway_run_complete)
    harness.test(gateway_verified_and_resigned)
    harness.test(host_run_complete)
    harness.test(no_client_secret_anywhere)

    def cce_run_complete(env):
        """the CCE SDK: the node runner ran every test of sdk_cce.test.js, straight at jobsim and through jobgate"""
        check(problem is None, "not run: " + str(problem))
        for failure, results_, rc, output, what in (
                (cce_failure, cce_results, "cce_node_rc", "cce_node_output", "direct"),
                (cce_gate_failure, cce_gate_results, "cce_gate_node_rc", "cce_gate_node_output", "through jobgate")):
            check(failure is None, "could not run the CCE node test %s:\n%s" % (what, failure))
            check(len(results_) >= 5, "%s: the node runner reported %d tests; output:\n%s"
                  % (what, len(results_), env[output]))
            eq(env[rc], 0, "%s: node --test exit code; output tail:\n%s" % (what, env[output][-3000:]))
        auth = env["cce_gate_sim"]._control("GET", "/_sim/auth")
        check(auth["sig_ok"] >= 3, "jobgate's upstream signatures verified by the CCE simulator: %r" % auth)
        eq(auth["sig_bad"], 0, "upstream signatures the CCE simulator refused")
        with open(env["cce_gate"].audit_path, errors="replace") as f:
            check('"/api/v3/projects/%s/jobs/' % PROJECT in f.read(), "the audit log has CCE's job path")

    harness.test(cce_run_complete)
    for fn in (sim_create_call, sim_create_faults):
        harness.test(fn)

    def setup():
        env["plain"] = Sim(init_ms=300, running_ms=600, api="ecs").start()
        return env

    run(setup=setup, teardown=stop_all)


if __name__ == "__main__":
    main()
