#!/usr/bin/env python3
"""The upstream guard is kept once for the fleet (issue 13): rate and burst
are the fleet's, and a 429 or an open circuit seen by one process holds every
process, whether the processes are the workers of one jobgate (shared memory)
or several jobgates on one Redis (one Lua script per admission). When Redis
dies each process keeps rate / fleet_size. A reload that changes
upstream_limits while a call is out frees nothing that call still uses.

Every count comes from the simulator's own record of when each upstream call
arrived (GET /_sim/times), so "per 1 s window" is measured where the cloud
would measure it."""
import os
import signal
import threading
import time

from harness import Jobgate, Redis, Sim, check, eq, hex32, run, seed_path, stop_all, test, wait_until

PROJECT = hex32()
RATE, BURST = 5, 5


def limits(rate=RATE, burst=BURST, extra=""):
    return ("upstream_limits:\n  rate: %s\n  burst: %s\n  queue: 0s\n%s" % (rate, burst, extra))


def setup():
    return {"sim": Sim(init_ms=60000, running_ms=60000).start()}


teardown = stop_all


def times(sim):
    return sim._control("GET", "/_sim/times")["ms"]


def reset(sim):
    sim.clear_faults()
    sim._control("POST", "/_sim/reset")


def max_per_window(ts, window_ms=1000.0):
    """The most calls any window [t, t + window) holds, t ranging over the calls."""
    ts = sorted(ts)
    best, j = 0, 0
    for i in range(len(ts)):
        while ts[i] - ts[j] >= window_ms:
            j += 1
        best = max(best, i - j + 1)
    return best


def hammer(gates, seconds, threads_per_gate=3, pause=0.02):
    """Misses (a new job id each time) on every gate for `seconds`; the statuses seen."""
    stop_at = time.monotonic() + seconds
    statuses = []
    lock = threading.Lock()

    def one(gate):
        while time.monotonic() < stop_at:
            try:
                r = gate.get(seed_path(PROJECT, hex32()), timeout=10)
                with lock:
                    statuses.append(r.status)
            except OSError:
                with lock:
                    statuses.append(0)
            time.sleep(pause)

    ts = [threading.Thread(target=one, args=(g,)) for g in gates for _ in range(threads_per_gate)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return statuses


class GuardGate(Jobgate):
    """A jobgate whose Redis calls may take 400 ms (the shipped budget is 50 ms): on this
    shared 2-core test machine a Redis reply can be late, and an admission Redis does not
    answer in time is decided by the fallback (rate / fleet_size, checked below on its own)."""

    def config_text(self):
        text = super().config_text()
        if self.redis is not None and "redis_budget" not in text:
            text = text.replace("\nupstream:\n", "\n  redis_budget: 400ms\nupstream:\n", 1)
        return text


def start_gates(env, name, n, redis=None, extra=""):
    gates = [GuardGate(env["sim"].url, redis=redis, extra_config=extra, upstream_token="cloud-token").start()
             for _ in range(n)]
    env[name] = {i: g for i, g in enumerate(gates)}
    return gates


def stop_gates(env, name):
    for g in env.pop(name, {}).values():
        g.stop()


def healthz(gate):
    return gate.admin("/healthz").json()


# ------------------------------------------------------------- rate limit


def workers_share_one_rate(env, n):
    """n workers, no Redis, rate 5 burst 5: no 1 s window has more than rate + burst upstream calls."""
    sim = env["sim"]
    reset(sim)
    name = "w%d" % n
    gate, = start_gates(env, name, 1, extra="workers: %d\n" % n + limits())
    wait_until(lambda: len({healthz(gate)["pid"] for _ in range(10 * n)}) == n, 15, "all %d workers answer" % n)
    statuses = hammer([gate], 3.0, threads_per_gate=3 * n)
    ts = times(sim)
    peak = max_per_window(ts)
    print("# %d workers (shared memory): %d calls in 3 s, at most %d in a 1 s window; %d answers, %d refused 503"
          % (n, len(ts), peak, len(statuses), statuses.count(503)))
    eq(healthz(gate)["guard"]["store"], "shared-memory", "guard store")
    check(statuses.count(503) > 0, "the load went past the rate")
    check(peak <= RATE + BURST, "at most rate + burst calls per 1 s window, saw %d" % peak)
    check(len(ts) <= RATE * 3 + BURST + 1, "at most rate x 3 s + burst calls in all, saw %d" % len(ts))
    stop_gates(env, name)


@test
def two_workers_share_one_rate(env):
    """2 workers, no Redis, rate 5 burst 5: no 1 s window has more than 10 upstream calls; misses of both workers"""
    workers_share_one_rate(env, 2)


@test
def four_workers_share_one_rate(env):
    """4 workers, no Redis, rate 5 burst 5: no 1 s window has more than 10 upstream calls"""
    workers_share_one_rate(env, 4)


@test
def three_instances_on_one_redis_share_one_rate(env):
    """3 jobgates on one Redis, rate 5 burst 5: no 1 s window has more than 10 upstream calls, fleet-wide"""
    sim = env["sim"]
    env["redis"] = Redis().start()
    reset(sim)
    gates = start_gates(env, "i3", 3, redis=env["redis"], extra=limits())
    for g in gates:
        wait_until(lambda: healthz(g)["status"] == "ok", 10, "Redis up")
    statuses = hammer(gates, 3.0, threads_per_gate=2)
    ts = times(sim)
    peak = max_per_window(ts)
    print("# 3 instances (Redis): %d calls in 3 s, at most %d in a 1 s window; %d answers, %d refused 503"
          % (len(ts), peak, len(statuses), statuses.count(503)))
    check(statuses.count(503) > 0, "the load went past the rate")
    check(peak <= RATE + BURST, "at most rate + burst calls per 1 s window, saw %d" % peak)
    check(len(ts) <= RATE * 3 + BURST + 1, "at most rate x 3 s + burst calls in all, saw %d" % len(ts))
    h = healthz(gates[0])["guard"]
    eq((h["store"], h["fallback"]), ("redis", False), "guard store")
    print("# admissions the fallback decided (Redis late): %s"
          % [healthz(g)["guard"]["fallback_admissions"] for g in gates])


# -------------------------------------------------------------- 429 storm


def storm(env, gates, label):
    sim = env["sim"]
    reset(sim)
    sim.fault(kind="status", status=429, retry_after=2, count=1, shape="apigw", code="APIGW.0308")
    # The first miss that reaches upstream gets the 429 (an earlier test may have left the rate
    # limit without a token for up to a second: those misses are refused without a call).
    deadline = time.monotonic() + 5
    while not times(sim) and time.monotonic() < deadline:
        r = gates[0].get(seed_path(PROJECT, hex32()))
        check(r.status != 200, "no job before the 429: %d" % r.status)
        time.sleep(0.1)
    t429 = times(sim)[-1]
    hammer(gates, 2.6, threads_per_gate=2)
    after = [t - t429 for t in times(sim) if t > t429]
    quiet = [d for d in after if d < 1990]
    print("# %s: after the 429 (Retry-After: 2), calls at +%s ms" % (label, ", +".join("%.0f" % d for d in after[:8])))
    eq(quiet, [], "no upstream call within the Retry-After, by any process")
    check(after, "calls resume once the Retry-After has passed")


@test
def a_429_holds_every_instance(env):
    """3 jobgates on Redis: one sees 429 Retry-After 2; none calls upstream for 2 s, then calls resume"""
    gates = [g for g in env["i3"].values()]
    storm(env, gates, "3 instances (Redis)")


@test
def a_429_holds_every_worker(env):
    """2 workers, no Redis: one sees 429 Retry-After 2; neither calls upstream for 2 s"""
    gate, = start_gates(env, "w2b", 1, extra="workers: 2\n" + limits(rate=1000, burst=1000))
    storm(env, [gate, gate], "2 workers (shared memory)")
    stop_gates(env, "w2b")


# ---------------------------------------------------------------- breaker


BREAKER = "  breaker_threshold: 2\n  breaker_cooldown: 1s\n  breaker_max_cooldown: 1s\n"


def one_probe_per_cooldown(env, gates, label):
    sim = env["sim"]
    reset(sim)
    # 500s (breaker_counts_5xx, on by default) rather than resets: libcurl sends a request again,
    # at once, when a kept-alive connection it reused is reset, and one admission would reach
    # upstream twice.
    sim.fault(kind="status", status=500)
    start = time.monotonic() * 1000
    hammer(gates, 3.6, threads_per_gate=2)
    ts = sorted(times(sim))
    opening = [t for t in ts if t < ts[0] + 500]  # the calls out before the circuit opened
    probes = [t for t in ts if t >= ts[0] + 500]
    gaps = [b - a for a, b in zip(probes, probes[1:])]
    print("# %s: %d calls before the circuit opened; probes at +%s ms (from the first call)"
          % (label, len(opening), ", +".join("%.0f" % (p - ts[0]) for p in probes)))
    print("# admissions the fallback decided (Redis late): %s"
          % [healthz(g)["guard"]["fallback_admissions"] for g in gates])
    check(ts[0] >= start - 50, "calls came from this test")
    if not (2 <= len(probes) <= 4 and all(g >= 950 for g in gaps)):
        for g in set(gates):
            print("# log of :%d: %s" % (g.port, [ln[-150:] for ln in g.log_text().splitlines()
                                              if "guard" in ln or "probe" in ln or "Redis" in ln][-12:]))
    check(2 <= len(probes) <= 4, "one probe per 1 s cool-down over 3.6 s: %d" % len(probes))
    check(all(g >= 950 for g in gaps), "probes at least a cool-down apart: %r" % gaps)
    check(probes[0] - ts[0] >= 950, "the first probe waits for the cool-down (it opened after the first call)")
    sim.clear_faults()


@test
def an_open_circuit_holds_every_instance(env):
    """3 jobgates on Redis, upstream failing (500): the circuit opens once for all; exactly one probe per cool-down"""
    gates = list(env["i3"].values())
    for g in gates:  # new limits: a reload
        g.extra_config = limits(rate=1000, burst=1000, extra=BREAKER)
        with open(g.config, "w") as f:
            f.write(g.config_text())
        g.proc.send_signal(signal.SIGHUP)
    for g in gates:
        wait_until(lambda: "reloaded" in g.log_text(), 10, "reload")
    one_probe_per_cooldown(env, gates, "3 instances (Redis)")


@test
def an_open_circuit_holds_every_worker(env):
    """2 workers, no Redis, upstream failing (500): exactly one probe per cool-down for both"""
    gate, = start_gates(env, "w2c", 1, extra="workers: 2\n" + limits(rate=1000, burst=1000, extra=BREAKER))
    one_probe_per_cooldown(env, [gate, gate], "2 workers (shared memory)")
    stop_gates(env, "w2c")


@test
def a_success_resets_the_fleets_failures(env):
    """3 jobgates on Redis, breaker_threshold 2: failure, success, failure, each on another instance, leaves the
    circuit closed (a success is reported while the fleet counts failures); two failures in a row open it"""
    sim = env["sim"]
    gates = list(env["i3"].values())  # the limits of the test above: breaker_threshold 2
    reset(sim)
    wait_until(lambda: gates[0].get(seed_path(PROJECT, hex32())).status == 200, 10, "the circuit closed again")

    def call(gate, fail):
        if fail:
            sim.fault(kind="status", status=500, count=1)
        n = len(times(sim))
        r = gate.get(seed_path(PROJECT, hex32()))
        return r.status, len(times(sim)) - n

    eq(call(gates[0], True), (500, 1), "a failure")
    eq(call(gates[1], False), (200, 1), "a success, on another instance")
    eq(call(gates[2], True), (500, 1), "a failure, on a third")
    eq(call(gates[0], False), (200, 1), "still closed: the success reset the count")
    eq(call(gates[1], True), (500, 1), "a failure")
    eq(call(gates[2], True), (500, 1), "a second in a row")
    status, calls = call(gates[0], False)
    eq((status, calls), (503, 0), "open: refused without a call")


# ---------------------------------------------------------- Redis killed


@test
def redis_killed_each_process_keeps_its_share(env):
    """Redis dies under 3 jobgates (rate 5): each keeps 5/3 per s (fleet size from the heartbeats); fleet under 6/s"""
    sim = env["sim"]
    gates = list(env["i3"].values())
    for g in gates:
        g.extra_config = limits()
        with open(g.config, "w") as f:
            f.write(g.config_text())
        g.proc.send_signal(signal.SIGHUP)
    for g in gates:
        wait_until(lambda: healthz(g)["guard"]["fleet_size"] == 3, 10, "the heartbeats count 3 processes")
    env["redis"].kill()
    for g in gates:
        wait_until(lambda: healthz(g)["status"] == "degraded", 10, "Redis seen down")
    reset(sim)
    hammer(gates, 1.0, threads_per_gate=2)  # the local buckets' bursts go
    t0 = time.monotonic() * 1000
    hammer(gates, 3.0, threads_per_gate=2)
    t1 = time.monotonic() * 1000
    steady = [t for t in times(sim) if t0 <= t < t1]
    per_s = len(steady) / ((t1 - t0) / 1000)
    print("# Redis killed: %d calls in %.1f s (%.2f/s) for rate %d; at most %d in a 1 s window"
          % (len(steady), (t1 - t0) / 1000, per_s, RATE, max_per_window(steady)))
    check(per_s <= RATE * 1.2, "the fallback keeps the fleet under rate x 1.2: %.2f/s" % per_s)
    check(per_s >= RATE * 0.5, "the fallback still calls: %.2f/s" % per_s)
    h = healthz(gates[0])["guard"]
    check(h["fallback"] and h["fallback_admissions"] > 0, "/healthz says the fallback: %r" % h)
    metrics = gates[0].admin("/metrics").body.decode()
    check('jobgate_guard_fallback{store="redis"} 1' in metrics, "/metrics says the fallback")
    check("jobgate_guard_fallback_admissions_total 0\n" not in metrics, "/metrics counts the fallback")
    stop_gates(env, "i3")


# ---------------------------------------------------------------- reload


@test
def reload_with_new_limits_while_a_call_is_out(env):
    """SIGHUP changes upstream_limits while a slow call is out and another is queued: both end, nothing freed early"""
    sim = env["sim"]
    reset(sim)
    gate, = start_gates(env, "r", 1, extra=limits(rate=1, burst=1).replace("queue: 0s", "queue: 3s"))
    slow, queued = hex32(), hex32()
    sim.fault(job=slow, kind="delay", delay_ms=1500)
    answers = {}

    def get(job):
        answers[job] = gate.get(seed_path(PROJECT, job), timeout=20)

    threads = [threading.Thread(target=get, args=(j,)) for j in (slow, queued)]
    threads[0].start()
    wait_until(lambda: sim.count(slow) == 1, 5, "the slow call is out")
    threads[1].start()
    time.sleep(0.2)  # the second one waits for a token (rate 1/s)
    gate.extra_config = limits(rate=2, burst=3).replace("queue: 0s", "queue: 3s")  # the queued call may still wait
    with open(gate.config, "w") as f:
        f.write(gate.config_text())
    gate.proc.send_signal(signal.SIGHUP)
    for t in threads:
        t.join()
    eq((answers[slow].status, answers[queued].status), (200, 200),
       "both answered (%r, %r)" % (answers[slow].body[:120], answers[queued].body[:120]))
    check("reloaded" in gate.log_text(), "the reload happened while they were out")
    r = gate.get(seed_path(PROJECT, hex32()))
    eq(r.status, 200, "a call after the reload")
    stop_gates(env, "r")  # stop() fails on any AddressSanitizer report


if __name__ == "__main__":
    run(setup, teardown)
