#!/usr/bin/env python3
"""The in-process tier in front of Redis: a Redis hit fills it, later hits
cost Redis nothing (counted with INFO commandstats), and a still-changing
copy lives there only for what remains of its TTL."""
import re
import time

from harness import Jobgate, Redis, Sim, eq, hex32, run, seed_path, stop_all, test, wait_until

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
    """How many lookups Redis has run: MGET, or the lookup-and-lease script
    (EVALSHA; EVAL, which loads it, on a new connection; EVAL also releases
    leases, which the tests below never take between two counts). The fleet
    guard's heartbeat is a script too, once a second per process: each run
    makes exactly one ZADD, which no lookup does, so ZADDs are taken off."""
    stats = redis.cli("INFO", "commandstats")
    scripts = sum(int(m.group(1)) for m in re.finditer(r"cmdstat_(?:mget|evalsha|eval):calls=(\d+)", stats))
    heartbeats = sum(int(m.group(1)) for m in re.finditer(r"cmdstat_zadd:calls=(\d+)", stats))
    return scripts - heartbeats


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
