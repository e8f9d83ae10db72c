#!/usr/bin/env python3
"""The in-process tier in front of Redis: a Redis hit fills it, later hits
cost Redis nothing (counted with INFO commandstats), and a still-changing
copy lives there only for what remains of its TTL. A miss costs one round
trip to Redis before its upstream call, and one command after it (read with
redis-cli MONITOR)."""
import re
import shlex
import subprocess
import time

from harness import REDIS_CLI, Jobgate, Redis, Sim, check, eq, hex32, run, seed_path, stop_all, test, wait_until

PROJECT = hex32()


def setup():
    env = {}
    env["redis"] = Redis().start()
    env["sim"] = Sim(init_ms=0, running_ms=0).start()
    env["gate"] = Jobgate(env["sim"].url, redis=env["redis"], upstream_token="cloud-token").start()
    return env


teardown = stop_all


def path(job):
    return seed_path(PROJECT, job)


def redis_reads(redis):
    """How many lookups Redis has run: each reads the key's two entries with
    one MGET, on its own or inside the lookup-and-lease script (INFO
    commandstats counts what scripts call). Nothing else the tests below do
    between two counts runs an MGET: they take no lease (a hit takes none),
    so neither the guard's admission nor a release runs, and the guard's
    heartbeat script reads no entries."""
    stats = redis.cli("INFO", "commandstats")
    m = re.search(r"cmdstat_mget:calls=(\d+)", stats)
    return int(m.group(1)) if m else 0


def restart(env):
    env["gate"].stop()
    env["gate"] = Jobgate(env["sim"].url, redis=env["redis"], port=env["gate"].port, upstream_token="cloud-token").start()
    wait_until(lambda: env["gate"].admin("/healthz").json()["cache"]["state"] == "up", 10, "redis up")
    return env["gate"]


@test
def redis_hit_fills_the_in_process_tier(env):
    """after a restart the first hit reads Redis once; the next 20 read nothing from it"""
    gate, sim, redis = env["gate"], env["sim"], env["redis"]
    job = hex32()
    gate.get(path(job))  # SUCCESS, stored in both tiers
    gate = restart(env)  # in-process tier empty again
    before = redis_reads(redis)
    eq(gate.get(path(job)).header("x-cache"), "HIT", "first hit, from Redis")
    eq(redis_reads(redis), before + 1, "Redis lookups for the first hit")
    for _ in range(20):
        eq(gate.get(path(job)).header("x-cache"), "HIT", "hit")
    eq(redis_reads(redis), before + 1, "Redis lookups for 20 more hits")
    eq(sim.count(job), 1, "upstream requests")


@test
def hits_on_fresh_answers_never_ask_redis(env):
    """an answer jobgate fetched itself is served from memory: no Redis lookup"""
    gate, redis = env["gate"], env["redis"]
    job = hex32()
    gate.get(path(job))
    before = redis_reads(redis)
    for _ in range(10):
        eq(gate.get(path(job)).header("x-cache"), "HIT", "hit")
    eq(redis_reads(redis), before, "Redis lookups")


def monitor(redis, action, lua=False):
    """The commands jobgate's connections sent Redis while `action` ran, as
    argument lists; with `lua`, what scripts ran inside (MONITOR's "lua"
    lines) instead."""
    mon = subprocess.Popen([REDIS_CLI, "-p", str(redis.port), "monitor"], stdout=subprocess.PIPE, text=True)
    try:
        eq(mon.stdout.readline().strip(), "OK", "MONITOR started")
        action()
        time.sleep(0.3)  # the settling commands sent after the answer
    finally:
        mon.terminate()
    out, _ = mon.communicate(timeout=10)
    commands = []
    for line in out.splitlines():
        m = re.match(r"^[0-9.]+ \[\d+ ([^\]]+)\] (.*)$", line)
        if m and (m.group(1) == "lua") == lua:
            commands.append(shlex.split(m.group(2)))
    return commands


@test
def a_miss_is_one_round_trip_before_its_call(env):
    """5 misses: one script each before the call (lookup, lease, the guard's admission), a SET and one script after
    (the lease released and the key published in it); no command of the guard's alone (no admission apart, no
    report of a success)"""
    gate, sim = env["gate"], env["sim"]
    jobs = [hex32() for _ in range(5)]

    def misses():
        for job in jobs:
            eq(gate.get(path(job)).header("x-cache"), "MISS", "a new job")

    commands, inside = monitor(env["redis"], misses), []
    guard_alone = [c for c in commands if len(c) > 3 and "guard:{" in c[3] and not c[3].endswith("guard:fleet")]
    eq(guard_alone, [], "commands of the guard's alone")
    for job in jobs:
        mine = [c for c in commands if any(job in a for a in c)]
        eq([c[0].upper() for c in mine], ["EVALSHA" if mine[0][0].upper() == "EVALSHA" else "EVAL", "SET",
                                          "EVALSHA" if mine[-1][0].upper() == "EVALSHA" else "EVAL"],
           "the commands of job %s" % job[:8])
        first = mine[0]
        nkeys = int(first[2])
        check(nkeys == 9 and first[3].endswith(":t") and "guard:{" in first[6] and first[6].endswith(":rate"),
              "the lookup carries the admission (the guard's keys after the job's): %r" % first[2:10])
        eq(sim.count(job), 1, "upstream requests for job %s" % job[:8])
    print("# a miss: %s" % ", ".join(c[0] + (" (%s keys)" % c[2] if c[0].upper().startswith("EVAL") else "")
                                     for c in commands if any(jobs[-1] in a for a in c)))
    gate_b = Jobgate(sim.url, redis=env["redis"], upstream_token="cloud-token").start()  # another, subscribed
    try:
        jobs[:] = [hex32() for _ in range(3)]
        inside = monitor(env["redis"], misses, lua=True)
    finally:
        gate_b.stop()
    published = [c for c in inside if c[0].upper() == "PUBLISH"]
    eq(published, [], "PUBLISH for misses no other process waits on (another instance is subscribed)")


@test
def changing_copy_lives_only_its_remaining_ttl(env):
    """a RUNNING answer read from Redis 1.2 s into its 2 s TTL lives ~0.8 s in memory, not 2 s"""
    gate, sim, redis = env["gate"], env["sim"], env["redis"]
    job = hex32()
    sim.define_job(job, init_ms=0, running_ms=60000)
    gate.get(path(job))  # RUNNING, 2 s TTL in both tiers
    stored = time.time()
    gate = restart(env)
    time.sleep(max(0.0, stored + 1.2 - time.time()))
    r = gate.get(path(job))
    eq(r.header("x-cache"), "HIT", "read from Redis")
    time.sleep(1.0)  # past the Redis entry's end: the memory copy must be gone too
    r = gate.get(path(job))
    eq(r.header("x-cache"), "MISS", "the in-process copy expired with the Redis entry")
    eq(sim.count(job), 2, "upstream requests")


if __name__ == "__main__":
    run(setup, teardown)
