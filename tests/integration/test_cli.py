#!/usr/bin/env python3
"""The command line: -t, flags over the file, --version/--help, graceful
SIGTERM with requests in flight, and clear errors at start-up."""
import os
import signal
import subprocess
import tempfile
import threading
import time

from harness import (JOBGATE_BIN, Jobgate, SEED_RULE, SRCDIR, Sim, check, eq, free_port, hex32, request, run,
                     stop_all, test, wait_port)

PROJECT = hex32()


def setup():
    env = {"tmp": tempfile.mkdtemp(prefix="jg-cli-")}
    env["sim"] = Sim(init_ms=0, running_ms=0).start()
    return env


teardown = stop_all


def jobgate(*args, timeout=20):
    return subprocess.run([JOBGATE_BIN] + list(args), capture_output=True, timeout=timeout)


def write(env, name, text):
    p = os.path.join(env["tmp"], name)
    with open(p, "w") as f:
        f.write(text)
    return p


@test
def version_and_help(env):
    """--version prints the version, --help the usage; an unknown flag exits non-zero"""
    r = jobgate("--version")
    eq(r.returncode, 0, "rc")
    check(r.stdout.decode().startswith("jobgate "), "version: %r" % r.stdout)
    h = jobgate("--help")
    eq(h.returncode, 0, "help rc")
    for flag in (b"-c", b"-t", b"--listen", b"--upstream", b"--redis"):
        check(flag in h.stdout, "help lacks %r" % flag)
    check(jobgate("--no-such-flag").returncode != 0, "unknown flag accepted")


@test
def check_shipped_example_config(env):
    """-t accepts the example configuration with the shipped rules"""
    text = open(os.path.join(SRCDIR, "conf", "jobgate.yaml")).read()
    check("rules.d/*.yaml" in text, "example names rules.d")
    conf = write(env, "example.yaml", text.replace("rules.d/*.yaml", os.path.join(SRCDIR, "lua-free-rules", "*.yaml")))
    r = jobgate("-t", "-c", conf)
    eq(r.returncode, 0, "rc (stderr %r)" % r.stderr)
    check(b"valid" in r.stderr, "says valid: %r" % r.stderr)


@test
def check_reports_file_line_and_key(env):
    """-t reports every mistake as FILE:LINE:COL: message and exits 1"""
    conf = write(env, "bad.yaml", "listen: 127.0.0.1:8080\nrules: [%s]\ncache:\n  redis: none\n  redis_budget: soon\n"
                                  "upstrem:\n  url: http://x\n" % SEED_RULE)
    r = jobgate("-t", "-c", conf)
    eq(r.returncode, 1, "rc")
    err = r.stderr.decode()
    check("%s:5:17: 'redis_budget' must be a duration" % conf in err, "budget error in %r" % err)
    check("%s:6:1: unknown key 'upstrem'" % conf in err, "unknown key error in %r" % err)
    seed = open(SEED_RULE).read()
    line = seed[:seed.index('"429": { status: 503')].count("\n") + 1
    bad_rule = write(env, "rule.yaml", seed.replace('"429": { status: 503', '"429": { status: 429'))
    conf2 = write(env, "bad2.yaml", "rules: [%s]\n" % bad_rule)
    r2 = jobgate("-t", "-c", conf2)
    eq(r2.returncode, 1, "rc for a bad rule")
    check("%s:%d:" % (bad_rule, line) in r2.stderr.decode() and "documented table" in r2.stderr.decode(),
          "rule error at line %d: %r" % (line, r2.stderr))
    missing = jobgate("-t", "-c", os.path.join(env["tmp"], "nope.yaml"))
    eq(missing.returncode, 1, "missing file rc")
    check(b"cannot open" in missing.stderr, "missing file message %r" % missing.stderr)


@test
def flags_override_the_file(env):
    """--listen, --upstream and --redis override the configuration file"""
    sim = env["sim"]
    port = free_port()
    conf = write(env, "over.yaml", "listen: 127.0.0.1:1\nrules: [%s]\ncache: {redis: 'redis://127.0.0.1:1'}\n"
                                   "upstream: {url: 'http://127.0.0.1:1'}\n" % SEED_RULE)
    proc = subprocess.Popen([JOBGATE_BIN, "-c", conf, "--listen", "127.0.0.1:%d" % port, "--upstream", sim.url,
                             "--redis", "none"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_port(port, proc=proc)
        job = hex32()
        r = request(port, "/v1.0/%s/jobs/%s" % (PROJECT, job))
        eq(r.status, 200, "answered via --upstream")
        eq(request(port, "/healthz", token=None).json()["cache"]["backend"], "memory", "--redis none")
    finally:
        proc.send_signal(signal.SIGTERM)
        eq(proc.wait(15), 0, "exit code")
        proc.stderr.close()


@test
def bad_flags_are_reported(env):
    """--redis and --listen with bad values: exit 1 with a message naming the flag"""
    conf = write(env, "good.yaml", "rules: [%s]\n" % SEED_RULE)
    r = jobgate("-c", conf, "--redis", "mongodb://x", "--listen", "nowhere")
    eq(r.returncode, 1, "rc")
    err = r.stderr.decode()
    check("--redis" in err and "--listen" in err, "messages: %r" % err)


@test
def sigterm_finishes_requests_in_flight(env):
    """SIGTERM: stop accepting, finish the slow request in flight (200), exit 0"""
    sim = env["sim"]
    gate = Jobgate(sim.url).start()
    job = hex32()
    sim.fault(job, kind="delay", delay_ms=800, count=1)
    result = {}
    t = threading.Thread(target=lambda: result.update(r=gate.get("/v1.0/%s/jobs/%s" % (PROJECT, job))))
    t.start()
    time.sleep(0.3)
    gate.proc.send_signal(signal.SIGTERM)
    t.join()
    eq(result["r"].status, 200, "the in-flight request")
    eq(gate.proc.wait(10), 0, "exit code")
    gate.stop()
    check("no longer accepting" in gate.log_text(), "log says it drains")


@test
def shutdown_timeout_bounds_the_drain(env):
    """a request still in flight at shutdown_timeout is answered 503, and jobgate exits 0"""
    sim = env["sim"]
    gate = Jobgate(sim.url, extra_config="").start()
    # The harness sets shutdown_timeout: 5s; a request hanging upstream for longer is cut at 5 s.
    job = hex32()
    sim.fault(job, kind="hang", count=1)
    result = {}
    t = threading.Thread(target=lambda: result.update(r=gate.get("/v1.0/%s/jobs/%s" % (PROJECT, job))))
    t.start()
    time.sleep(0.3)
    started = time.time()
    gate.proc.send_signal(signal.SIGTERM)
    t.join()
    eq(gate.proc.wait(15), 0, "exit code")
    check(time.time() - started < 9, "drain took %.1fs" % (time.time() - started))
    eq(result["r"].status, 503, "the request cut at the deadline")
    eq(result["r"].error()["code"], "JG.SHUTTING_DOWN", "code")
    gate.stop()


@test
def port_in_use_is_a_clear_error(env):
    """a listen address in use: exit 1 with a message"""
    sim = env["sim"]
    conf = write(env, "busy.yaml", "rules: [%s]\ncache: {redis: none}\n" % SEED_RULE)
    r = jobgate("-c", conf, "--listen", "127.0.0.1:%d" % sim.port)
    eq(r.returncode, 1, "rc")
    check(b"cannot listen on 127.0.0.1:%d" % sim.port in r.stderr, "message: %r" % r.stderr)


if __name__ == "__main__":
    run(setup, teardown)
