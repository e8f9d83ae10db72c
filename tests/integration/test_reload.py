#!/usr/bin/env python3
"""SIGHUP under load: the new rules take effect, a broken rule set is refused
with the old one kept, and no request fails meanwhile."""
import os
import signal
import tempfile
import threading
import time

from harness import Jobgate, Redis, Sim, check, eq, hex32, rule_file, run, seed_path, stop_all, test, wait_until

PROJECT = hex32()


def setup():
    env = {"tmp": tempfile.mkdtemp(prefix="jg-reload-")}
    env["redis"] = Redis().start()
    env["sim"] = Sim(init_ms=0, running_ms=0).start()
    env["rule"] = rule_file(env["tmp"], **{"  timeout: 10s": '  timeout: 10s\n  headers: { add: { X-Rule-Generation: "1" } }'})
    env["gate"] = Jobgate(env["sim"].url, redis=env["redis"], rules=[env["rule"]]).start()
    return env


teardown = stop_all


def path(job):
    return seed_path(PROJECT, job)


def generation(sim):
    headers = {k.lower(): v for k, v in sim.last()["headers"].items()}
    return headers.get("x-rule-generation")


def rewrite_rule(env, **replace):
    tmp = env["rule"] + ".new"
    os.rename(rule_file(env["tmp"], name=os.path.basename(tmp), **replace), tmp)
    os.replace(tmp, env["rule"])  # atomic, as an operator's deploy tool would


class Load:
    """Clients polling fresh and cached jobs until stopped; every answer recorded."""

    def __init__(self, gate, threads=6):
        self.gate = gate
        self.stop_flag = threading.Event()
        self.statuses = []
        self.errors = []
        self.threads = [threading.Thread(target=self.loop, args=(i,)) for i in range(threads)]
        self.hot = hex32()

    def loop(self, i):
        while not self.stop_flag.is_set():
            job = self.hot if i % 2 else hex32()
            try:
                self.statuses.append(self.gate.get(path(job)).status)
            except Exception as e:  # a dropped connection is exactly what must not happen
                self.errors.append(repr(e))

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        for t in self.threads:
            t.join()


@test
def reload_under_load_applies_new_rules_and_drops_nothing(env):
    """SIGHUP with a changed rule under load: new policy visible, every request answered 200"""
    gate, sim = env["gate"], env["sim"]
    gate.get(path(hex32()))
    eq(generation(sim), "1", "generation before")
    slow = hex32()
    sim.fault(slow, kind="delay", delay_ms=800, count=1)
    in_flight = {}
    with Load(gate) as load:
        t = threading.Thread(target=lambda: in_flight.update(r=gate.get(path(slow))))
        t.start()
        time.sleep(0.3)
        rewrite_rule(env, **{"  timeout: 10s": '  timeout: 10s\n  headers: { add: { X-Rule-Generation: "2" } }'})
        gate.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: gate.get(path(hex32())).status == 200 and generation(sim) == "2", 10, "generation 2")
        t.join()
        time.sleep(0.3)
    eq(in_flight["r"].status, 200, "the request in flight across the reload")
    check(not load.errors, "connection errors during reload: %s" % load.errors[:3])
    check(len(load.statuses) > 50, "load ran: %d requests" % len(load.statuses))
    eq(set(load.statuses), {200}, "statuses during reload")
    check("reloaded" in gate.log_text(), "the log says it reloaded")


@test
def broken_rules_are_refused_and_the_old_ones_kept(env):
    """SIGHUP with a rule that maps to 429: logged with FILE:LINE, old rules keep serving, nothing dropped"""
    gate, sim = env["gate"], env["sim"]
    with Load(gate) as load:
        rewrite_rule(env, **{'"429": { status: 503': '"429": { status: 429',
                             "  timeout: 10s": '  timeout: 10s\n  headers: { add: { X-Rule-Generation: "3" } }'})
        gate.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "reload failed" in gate.log_text(), 10, "the reload to fail")
        time.sleep(0.3)
    gate.get(path(hex32()))
    eq(generation(sim), "2", "the old rules still apply")
    log = gate.log_text()
    check("%s:" % env["rule"] in log and "documented table" in log, "the log names file and line")
    check(not load.errors, "connection errors: %s" % load.errors[:3])
    eq(set(load.statuses), {200}, "statuses")


@test
def reload_with_a_fixed_rule_recovers(env):
    """after a refused reload, a fixed rule set loads on the next SIGHUP"""
    gate, sim = env["gate"], env["sim"]
    rewrite_rule(env, **{"  timeout: 10s": '  timeout: 10s\n  headers: { add: { X-Rule-Generation: "4" } }'})
    gate.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: gate.get(path(hex32())).status == 200 and generation(sim) == "4", 10, "generation 4")


if __name__ == "__main__":
    run(setup, teardown)
