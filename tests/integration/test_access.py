#!/usr/bin/env python3
"""Client keys and grants: keys × projects × routes → 200/401/403, decided
before any cache lookup or upstream call (the simulator's request count
proves denied requests never left); a listener with client_auth off asks for
no key; the keys file reloads on SIGHUP; --hash-key prints what the file
stores."""
import hashlib
import os
import shutil
import signal
import subprocess

from harness import (JOBGATE_BIN, wait_port, Jobgate, Sim, check, eq, free_port, hex32, request, run, stop_all, test,
                     wait_until)

P1, P2, P3 = hex32(), hex32(), hex32()
KEYS = {"alice": "alice-key-0001", "bob": "bob-key-0002", "carol": "carol-key-0003"}
ECS_RULE = os.path.join(os.environ.get("JOBGATE_SRCDIR", "."), "lua-free-rules", "ecs.yaml")
ELB_RULE = os.path.join(os.environ.get("JOBGATE_SRCDIR", "."), "lua-free-rules", "elb-v1.yaml")


def sha(key):
    return hashlib.sha256(key.encode()).hexdigest()


def keys_file(grants):
    """grants: name -> (projects, routes)."""
    lines = ["clients:"]
    for name, (projects, routes) in grants.items():
        lines.append("  - name: %s" % name)
        lines.append("    key_sha256: %s" % sha(KEYS[name]))
        lines.append("    projects: [%s]" % ", ".join('"%s"' % p for p in projects))
        lines.append("    routes: [%s]" % ", ".join('"%s"' % r for r in routes))
    return "\n".join(lines) + "\n"


GRANTS = {
    "alice": ([P1], ["*"]),
    "bob": ([P1, P2], ["elb-v1"]),
    "carol": (["*"], ["ecs"]),
}


def rule_for(tmp, source, url_line, sim):
    """A shipped rule pointed at `sim`."""
    text = open(source).read()
    check(url_line in text, "rule text has %r" % url_line)
    shared = os.path.join(tmp, "shared")
    if not os.path.isdir(shared):  # rules name their shared error maps relative to themselves
        shutil.copytree(os.path.join(os.path.dirname(source), "shared"), shared)
    dest = os.path.join(tmp, os.path.basename(source))
    with open(dest, "w") as f:
        f.write(text.replace(url_line, "url: " + sim.url))
    return dest


def setup():
    env = {}
    env["sim"] = Sim(init_ms=0, running_ms=0).start()
    env["ecs_sim"] = Sim(init_ms=0, running_ms=0, api="ecs").start()
    env["trusted_port"] = free_port()
    gate = Jobgate(None, redis=None)
    gate.rules = [rule_for(gate.tmp, ELB_RULE, "url: https://elb.eu-west-0.myhuaweicloud.com", env["sim"]),
                  rule_for(gate.tmp, ECS_RULE, "url: https://ecs.eu-west-0.myhuaweicloud.com", env["ecs_sim"])]
    env["keys_path"] = os.path.join(gate.tmp, "keys.yaml")
    with open(env["keys_path"], "w") as f:
        f.write(keys_file(GRANTS))
    gate.extra_config = ("client_keys: %s\nlisteners:\n  - listen: 127.0.0.1:%d\n"
                         "  - listen: 127.0.0.1:%d\n    client_auth: false\n"
                         % (env["keys_path"], gate.port, env["trusted_port"]))
    env["gate"] = gate.start()
    wait_port(env["trusted_port"], proc=gate.proc)  # the second listener
    return env


teardown = stop_all


def path(route, project):
    job = hex32()
    return "/v1.0/%s/jobs/%s" % (project, job) if route == "elb-v1" else "/ecs/v1/%s/jobs/%s" % (project, job)


def allowed(name, project, route):
    projects, routes = GRANTS[name]
    return (project in projects or "*" in projects) and (route in routes or "*" in routes)


@test
def the_access_matrix(env):
    """3 keys x 3 projects x 2 routes: 200-class answers exactly where granted, 403 elsewhere, no upstream call when denied"""
    gate = env["gate"]
    checked = 0
    for name, key in KEYS.items():
        for project in (P1, P2, P3):
            for route in ("elb-v1", "ecs"):
                sim = env["sim"] if route == "elb-v1" else env["ecs_sim"]
                before = sim.total()
                r = gate.get(path(route, project), headers={"Authorization": "Bearer " + key})
                what = "%s %s %s" % (name, project[:6], route)
                if allowed(name, project, route):
                    eq(r.status, 200, "%s: allowed (%r)" % (what, r.body[:200]))
                    eq(sim.total(), before + 1, "%s: upstream calls" % what)
                else:
                    eq((r.status, r.error()["code"]), (403, "JG.FORBIDDEN"), what)
                    eq(sim.total(), before, "%s: upstream calls" % what)
                checked += 1
    eq(checked, 18, "cases")


@test
def missing_unknown_and_malformed_keys_get_401(env):
    """no key, an unknown key, an empty Bearer, two keys at once: 401 before routing, nothing sent upstream"""
    gate, sim = env["gate"], env["sim"]
    before = sim.total()
    cases = [{}, {"Authorization": "Bearer nobody-holds-this"}, {"X-Api-Key": "nobody-holds-this"},
             {"Authorization": "Bearer "}, {"Authorization": "Bearer " + KEYS["alice"], "X-Api-Key": KEYS["alice"]},
             {"Authorization": "Basic " + KEYS["alice"]}]
    for headers in cases:
        r = gate.get(path("elb-v1", P1), headers=headers)
        eq((r.status, r.error()["code"]), (401, "JG.UNAUTHENTICATED"), "headers %r" % list(headers))
        check(KEYS["alice"] not in r.body.decode(), "the key is not echoed")
    r = gate.get("/no/such/route", headers={"X-Api-Key": "nobody-holds-this"})
    eq(r.status, 401, "an unknown key learns nothing of the routes")
    r = gate.get("/no/such/route", headers={"X-Api-Key": KEYS["alice"]})
    eq(r.status, 404, "a known key gets the 404")
    eq(sim.total(), before, "upstream calls")


@test
def x_api_key_works_like_bearer(env):
    """X-Api-Key presents the same key as Authorization: Bearer"""
    gate = env["gate"]
    r = gate.get(path("elb-v1", P1), headers={"X-Api-Key": KEYS["alice"]})
    eq(r.status, 200, "status")


@test
def a_denied_request_does_not_read_the_cache(env):
    """a job cached for alice is still 403 for bob's other project and 401 without a key"""
    gate = env["gate"]
    p = path("elb-v1", P1)
    eq(gate.get(p, headers={"X-Api-Key": KEYS["alice"]}).status, 200, "alice caches it")
    eq(gate.get(p, headers={"X-Api-Key": KEYS["alice"]}).header("x-cache"), "HIT", "cached")
    eq(gate.get(p, headers={"X-Api-Key": KEYS["carol"]}).status, 403, "carol: ecs only")
    eq(gate.get(p).status, 401, "no key")


@test
def a_trusted_listener_asks_for_no_key(env):
    """the listener with client_auth: false serves without a key"""
    r = request(env["trusted_port"], path("elb-v1", P3))
    eq(r.status, 200, "status")


@test
def the_keys_file_reloads_on_sighup(env):
    """SIGHUP after granting carol elb-v1: her next request is allowed; a broken keys file is refused and the old one kept"""
    gate = env["gate"]
    eq(gate.get(path("elb-v1", P1), headers={"X-Api-Key": KEYS["carol"]}).status, 403, "before")
    grants = dict(GRANTS, carol=(["*"], ["ecs", "elb-v1"]))
    with open(env["keys_path"], "w") as f:
        f.write(keys_file(grants))
    os.kill(gate.proc.pid, signal.SIGHUP)
    wait_until(lambda: gate.get(path("elb-v1", P1), headers={"X-Api-Key": KEYS["carol"]}).status == 200, 5,
               "carol allowed after reload")
    with open(env["keys_path"], "w") as f:
        f.write("clients:\n  - name: broken\n    key: plain-text\n")
    os.kill(gate.proc.pid, signal.SIGHUP)
    wait_until(lambda: "store key_sha256, never the key" in gate.log_text(), 5, "the refusal logged")
    eq(gate.get(path("elb-v1", P1), headers={"X-Api-Key": KEYS["carol"]}).status, 200, "old keys kept")
    check("plain-text" not in gate.log_text(), "the plain key is not logged")


@test
def hash_key_prints_the_stored_form(env):
    """jobgate --hash-key reads the key on stdin and prints its SHA-256"""
    out = subprocess.run([JOBGATE_BIN, "--hash-key"], input=b"alice-key-0001\n", capture_output=True, check=True)
    eq(out.stdout.decode().strip(), sha("alice-key-0001"), "hash")


if __name__ == "__main__":
    run(setup, teardown)
