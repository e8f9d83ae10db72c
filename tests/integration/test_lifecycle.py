#!/usr/bin/env python3
"""Jobs through their whole lifecycle: what pollers see, what Redis holds,
and how many requests reach upstream (before and after a restart)."""
import threading
import time

from harness import cache_key, Jobgate, Redis, Sim, TOKEN, check, eq, hex32, run, seed_path, test, wait_until

PROJECT = hex32()
ORDER = {"INIT": 0, "RUNNING": 1, "SUCCESS": 2, "FAIL": 2}


def setup():
    env = {}
    env["redis"] = Redis().start()
    env["sim"] = Sim(init_ms=600, running_ms=900).start()
    env["gate"] = Jobgate(env["sim"].url, redis=env["redis"], upstream_token="cloud-token").start()
    return env


def teardown(env):
    gate = env.get("gate")
    if gate:
        gate.stop()
        check(TOKEN not in gate.log_text(), "the client token reached the log")
    if env.get("sim"):
        env["sim"].stop()
    if env.get("redis"):
        env["redis"].stop()


def path(job):
    return seed_path(PROJECT, job)


@test
def concurrent_pollers_see_states_in_order(env):
    """40 concurrent pollers each see INIT -> RUNNING -> SUCCESS, never backwards"""
    gate, sim = env["gate"], env["sim"]
    job = hex32()
    # Each state lasts longer than the 2 s pending TTL, so every poller can see it.
    sim.define_job(job, init_ms=2500, running_ms=2500)
    seen = {}
    errors = []

    def poller(n):
        states = []
        deadline = time.time() + 15
        try:
            while time.time() < deadline:
                r = gate.get(path(job))
                if r.status != 200:
                    errors.append("poller %d got %d %r" % (n, r.status, r.body[:100]))
                    return
                state = r.json()["status"]
                states.append(state)
                if state == "SUCCESS":
                    break
                time.sleep(0.05)
        except Exception as e:  # reported below
            errors.append("poller %d: %r" % (n, e))
        seen[n] = states

    threads = [threading.Thread(target=poller, args=(n,)) for n in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check(not errors, "; ".join(errors[:5]))
    for n, states in seen.items():
        eq(states[-1], "SUCCESS", "poller %d final state" % n)
        ranks = [ORDER[s] for s in states]
        check(ranks == sorted(ranks), "poller %d saw states out of order: %s" % (n, states))
    all_states = set(s for states in seen.values() for s in states)
    check({"INIT", "RUNNING", "SUCCESS"} <= all_states, "states seen: %s" % all_states)
    # 40 pollers for ~5 s at a 2 s TTL: one upstream request per TTL window
    # (t = 0, 2, 4 and the one that sees SUCCESS), not hundreds.
    check(sim.count(job) <= 4, "upstream requests for 40 pollers: %d" % sim.count(job))


@test
def terminal_entry_never_expires_pending_one_does(env):
    """Redis TTL is -1 for a terminal entry; a pending one is fresh for the rule's 2 s, then kept 10 min as stale"""
    gate, sim, redis = env["gate"], env["sim"], env["redis"]
    job = hex32()
    sim.define_job(job, init_ms=0, running_ms=60000)
    eq(gate.get(path(job)).json()["status"], "RUNNING", "state")
    pending = cache_key(PROJECT, job, "p")
    pttl = int(redis.cli("PTTL", pending))
    check(600000 < pttl <= 602000, "pending PTTL %d: 2 s fresh + 10 min stale window" % pttl)
    head = redis.cli("GET", pending).split("\n")[0].split(" ")  # JG1 stored_at terminal status expires_at ...
    stored_at, expires_at = head[1], head[4]
    check(0 < int(expires_at) - int(stored_at) <= 2100, "fresh for at most 2 s: %s" % redis.cli("GET", pending)[:60])
    eq(redis.cli("EXISTS", cache_key(PROJECT, job, "t")), "0", "no terminal entry yet")

    done = hex32()
    sim.define_job(done, init_ms=0, running_ms=0, final="FAIL")
    eq(gate.get(path(done)).json()["status"], "FAIL", "state")
    eq(redis.cli("TTL", cache_key(PROJECT, done, "t")), "-1", "terminal TTL")


@test
def pending_entry_expires_and_is_refetched(env):
    """a still-changing answer is served from cache within its TTL, refetched after"""
    gate, sim = env["gate"], env["sim"]
    job = hex32()
    sim.define_job(job, init_ms=60000)
    eq(gate.get(path(job)).header("x-cache"), "MISS", "first")
    eq(gate.get(path(job)).header("x-cache"), "HIT", "within TTL")
    eq(sim.count(job), 1, "upstream after hit")
    time.sleep(2.2)
    eq(gate.get(path(job)).header("x-cache"), "MISS", "after TTL")
    eq(sim.count(job), 2, "upstream after TTL")


@test
def success_cached_for_good_also_after_restart(env):
    """after SUCCESS is cached, no further upstream request, even after jobgate restarts"""
    gate, sim, redis = env["gate"], env["sim"], env["redis"]
    job = hex32()
    sim.define_job(job, init_ms=0, running_ms=0)
    first = gate.get(path(job))
    eq(first.json()["status"], "SUCCESS", "state")
    eq(sim.count(job), 1, "upstream requests")
    for _ in range(20):
        r = gate.get(path(job))
        eq(r.header("x-cache"), "HIT", "x-cache")
        eq(r.body, first.body, "body")
    eq(sim.count(job), 1, "upstream requests after 20 hits")

    gate.stop()
    env["gate"] = gate = Jobgate(sim.url, redis=redis, port=gate.port, upstream_token="cloud-token").start()
    time.sleep(0.3)  # let the Redis connection come up
    wait_until(lambda: gate.admin("/healthz").json()["cache"]["state"] == "up", 5, "redis up")
    r = gate.get(path(job))
    eq(r.status, 200, "status after restart")
    eq(r.header("x-cache"), "HIT", "x-cache after restart")
    eq(r.body, first.body, "body after restart")
    eq(sim.count(job), 1, "upstream requests after restart")


@test
def late_pending_answer_never_replaces_terminal(env):
    """a slow still-changing answer arriving after SUCCESS was cached does not hide it"""
    gate, sim, redis = env["gate"], env["sim"], env["redis"]
    job = hex32()
    # Write the terminal entry first, then a pending one as a late answer would.
    sim.define_job(job, init_ms=0, running_ms=0)
    eq(gate.get(path(job)).json()["status"], "SUCCESS", "terminal")
    key = cache_key(PROJECT, job)
    pending = redis.cli("GET", key + ":t").replace('"SUCCESS"', '"RUNNING"').replace("JG1 ", "JG1 ", 1)
    redis.cli("SET", key + ":p", pending.replace(" 1\n", " 0\n", 1), "PX", "5000")
    r = gate.get(path(job))
    eq(r.json()["status"], "SUCCESS", "the terminal entry wins")


@test
def age_grows_on_hits(env):
    """Age counts seconds since jobgate received the answer"""
    gate, sim = env["gate"], env["sim"]
    job = hex32()
    sim.define_job(job, init_ms=0, running_ms=0)
    gate.get(path(job))
    time.sleep(1.2)
    r = gate.get(path(job))
    check(int(r.header("age")) >= 1, "Age %r" % r.header("age"))


if __name__ == "__main__":
    run(setup, teardown)
