#!/usr/bin/env python3
"""Production Redis (issue 14) and the lease leak (issue 13), end to end:
a password-protected Redis and an ACL user (the secret given in a file or
the environment, never in the URL, and never shown in the log, /healthz,
/metrics or an error); a wrong password (requests go upstream, /healthz
says why); entries checked on read (a planted answer about another job is
not served; with an entry key, an entry without its MAC is not either); and
a lease granted after its Redis budget, whose holder's upstream call then
failed, released rather than left to expire."""
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time

from harness import (cache_key, JOBGATE_BIN, REDIS_CLI, SEED_RULE, Jobgate, Redis, Sim, check, eq, hex32, run, seed_path,
                     stop_all, test, wait_until)

PROJECT = hex32()
PASSWORD = "pw-" + hex32()[:20]  # what must never show
ACL_USER = "jobgate"
ENTRY_KEY = hex32() + hex32()
CLOUD_TOKEN = "cloud-token"  # token mode: answers are shared by every client, and a miss takes the lease


def readme_acl_rules():
    """The ACL rules the README gives an ACL user ("ACL SETUSER jobgate on
    >PASSWORD RULES..."), so that the user tested is the one documented."""
    with open(os.path.join(os.path.dirname(__file__), "..", "..", "README.md")) as f:
        text = f.read()
    m = re.search(r"`ACL SETUSER jobgate on >PASSWORD ([^`]+)`", text)
    if not m:
        raise RuntimeError("README.md gives no ACL SETUSER line")
    return m.group(1).split()


class AuthRedis(Redis):
    """A redis-server that wants a password (and, with `user`, an ACL user
    allowed only the commands the README lists); DEBUG allowed from loopback."""

    def __init__(self, password, user=None):
        extra = ["--requirepass", password]
        if user:
            extra += ["--user", user, "on", ">" + password] + readme_acl_rules()
        super().__init__(extra=extra)
        self.password = password

    def cli(self, *args):
        out = subprocess.run([REDIS_CLI, "-p", str(self.port), "--no-auth-warning", "-a", self.password, "--raw"] +
                             [str(a) for a in args], capture_output=True, timeout=10)
        return out.stdout.decode("utf-8", "replace").strip()


def secret_file(env, name, text):
    path = os.path.join(env["tmp"], name)
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(text + "\n")
    return path


def redis_setting(redis, *lines):
    """The cache section's value for `redis` and extra keys under it."""
    return "redis://127.0.0.1:%d%s" % (redis.port, "".join("\n  " + line for line in lines))


def setup():
    env = {"tmp": tempfile.mkdtemp(prefix="jg-redis-auth-")}
    env["sim"] = Sim(init_ms=0, running_ms=0).start()  # jobs are SUCCESS at once
    env["redis"] = AuthRedis(PASSWORD).start()
    env["acl_redis"] = AuthRedis(PASSWORD, user=ACL_USER).start()
    password_file = secret_file(env, "redis-password", PASSWORD)
    env["gate"] = Jobgate(env["sim"].url, upstream_token=CLOUD_TOKEN, redis=redis_setting(
        env["redis"], "redis_password_file: %s" % password_file, "redis_budget: 500ms")).start()
    return env


def teardown(env):
    try:
        stop_all(env)
    finally:
        shutil.rmtree(env["tmp"], ignore_errors=True)


def path(job):
    return seed_path(PROJECT, job)


def key(job, slot):
    return cache_key(PROJECT, job, slot)


def cache_health(gate):
    return gate.admin("/healthz").json()["cache"]


def metric(gate, name):
    m = re.search(r"^%s (\d+)$" % name, gate.admin("/metrics").body.decode(), re.M)
    check(m, "%s in /metrics" % name)
    return int(m.group(1))


def no_secret_anywhere(gate, *secrets):
    """The secrets are in none of: the log, /healthz, /metrics."""
    texts = {"the log": gate.log_text(), "/healthz": gate.admin("/healthz").body.decode(),
             "/metrics": gate.admin("/metrics").body.decode()}
    for where, text in texts.items():
        for secret in secrets:
            check(secret not in text, "a secret shows in %s" % where)


@test
def password_from_a_file(env):
    """requirepass: jobgate AUTHs on every connection; answers are cached and shared"""
    gate, sim, redis = env["gate"], env["sim"], env["redis"]
    wait_until(lambda: cache_health(gate)["state"] == "up", 10, "jobgate up on a password-protected Redis")
    job = hex32()
    eq(gate.get(path(job)).header("x-cache"), "MISS", "first poll")
    wait_until(lambda: redis.cli("EXISTS", key(job, "t")) == "1", 5, "the answer stored in Redis")
    eq(gate.get(path(job)).header("x-cache"), "HIT", "second poll")
    eq(sim.count(job), 1, "upstream calls")
    # Another instance on the same Redis reads what this one stored.
    other = Jobgate(sim.url, upstream_token=CLOUD_TOKEN, redis=redis_setting(
        redis, "redis_password_file: %s" % os.path.join(env["tmp"], "redis-password"), "redis_budget: 500ms")).start()
    try:
        wait_until(lambda: cache_health(other)["state"] == "up", 10, "the second instance up")
        eq(other.get(path(job)).header("x-cache"), "HIT", "the other instance's read")
        eq(sim.count(job), 1, "upstream calls")
        no_secret_anywhere(other, PASSWORD)
    finally:
        other.stop()
    no_secret_anywhere(gate, PASSWORD)


@test
def acl_user_from_the_environment(env):
    """an ACL user with only jobgate's commands, the password in an environment variable"""
    sim, redis = env["sim"], env["acl_redis"]
    os.environ["JOBGATE_TEST_REDIS_PASSWORD"] = PASSWORD
    gate = Jobgate(sim.url, upstream_token=CLOUD_TOKEN, redis=redis_setting(
        redis, "redis_user: %s" % ACL_USER, "redis_password_env: JOBGATE_TEST_REDIS_PASSWORD",
        "redis_budget: 500ms")).start()
    try:
        wait_until(lambda: cache_health(gate)["state"] == "up", 10, "jobgate up as an ACL user")
        wait_until(lambda: cache_health(gate)["coalescing"] == "pubsub", 10, "subscribed as the ACL user")
        job = hex32()
        eq(gate.get(path(job)).header("x-cache"), "MISS", "first poll")
        wait_until(lambda: redis.cli("EXISTS", key(job, "t")) == "1", 5, "the answer stored")
        eq(gate.get(path(job)).header("x-cache"), "HIT", "second poll")
        eq(cache_health(gate)["errors"], 0, "commands the ACL refused")
        guard = gate.admin("/healthz").json()["guard"]
        eq((guard["store"], guard["fallback"]), ("redis", False), "the fleet guard in Redis")
        metrics = gate.admin("/metrics").body.decode()
        check(guard["fallback_admissions"] == 0 and "jobgate_guard_fleet_admissions_total 0\n" not in metrics,
              "admissions answered by Redis: %r" % guard)
        check("NOPERM" not in gate.log_text(), "no command refused: %s" % gate.log_text()[-400:])
        no_secret_anywhere(gate, PASSWORD)
    finally:
        gate.stop()
        del os.environ["JOBGATE_TEST_REDIS_PASSWORD"]


@test
def wrong_password(env):
    """a wrong password: logged clearly at start, requests go upstream, /healthz degraded, no secret shown"""
    sim, redis = env["sim"], env["redis"]
    wrong = "wrong-" + hex32()[:16]
    wrong_file = secret_file(env, "wrong-password", wrong)
    gate = Jobgate(sim.url, upstream_token=CLOUD_TOKEN, redis=redis_setting(redis, "redis_password_file: %s" % wrong_file)).start()
    try:
        wait_until(lambda: "AUTH refused" in gate.log_text(), 10, "the refusal logged")
        check("WRONGPASS" in gate.log_text(), "the log names WRONGPASS")
        check("redis_password_file" in gate.log_text(), "the log says what to check")
        job = hex32()
        r = gate.get(path(job))
        eq((r.status, r.header("x-cache")), (200, "BYPASS"), "answered from upstream")
        health = gate.admin("/healthz").json()
        eq(health["status"], "degraded", "health status")
        eq(health["cache"]["last_error"], "WRONGPASS on AUTH", "health's last error")
        no_secret_anywhere(gate, wrong, PASSWORD)
    finally:
        gate.stop()


@test
def config_test_names_the_line(env):
    """-t: a missing password file is FILE:LINE:COL, with the secret's file name, never a secret"""
    config = os.path.join(env["tmp"], "bad.yaml")
    with open(config, "w") as f:
        f.write("rules: [%s]\ncache:\n  redis: redis://127.0.0.1:6379\n  redis_user: jobgate\n"
                "  redis_password_file: /nonexistent/redis-password\n" % SEED_RULE)
    out = subprocess.run([JOBGATE_BIN, "-t", "-c", config], capture_output=True, timeout=20)
    text = (out.stdout + out.stderr).decode()
    check(out.returncode != 0, "-t refused it")
    check("%s:5:24: cannot read redis_password file '/nonexistent/redis-password'" % config in text,
          "FILE:LINE:COL in %r" % text)


@test
def forged_entry_is_not_served(env):
    """a hand-written entry holding another job's answer: a 200 from upstream with the real job, counted"""
    gate, sim, redis = env["gate"], env["sim"], env["redis"]
    other, job = hex32(), hex32()
    eq(gate.get(path(other)).status, 200, "another job, cached")
    wait_until(lambda: redis.cli("EXISTS", key(other, "t")) == "1", 5, "its answer stored")
    body = gate.get(path(other)).json()
    rejected = metric(gate, "jobgate_cache_rejected_total")
    plant = "JG1 %d 1 200\n%s" % (int(time.time() * 1000), json.dumps(body))
    redis.cli("SET", key(job, "t"), plant)
    r = gate.get(path(job))
    eq(r.status, 200, "status")
    eq(r.json()["job_id"], job, "the job asked for, not the plant")
    eq(r.header("x-cache"), "MISS", "X-Cache")
    eq(sim.count(job), 1, "upstream calls")
    eq(metric(gate, "jobgate_cache_rejected_total"), rejected + 1, "jobgate_cache_rejected_total")
    check("the answer about another job" in gate.log_text(), "the rejection logged")


@test
def entry_key_signs_entries(env):
    """entry_key_file: entries carry a MAC; one without it (or moved from another key) is not served"""
    sim, redis = env["sim"], env["redis"]
    entry_key = secret_file(env, "entry-key", ENTRY_KEY)
    gate = Jobgate(sim.url, upstream_token=CLOUD_TOKEN, redis=redis_setting(
        redis, "redis_password_file: %s" % os.path.join(env["tmp"], "redis-password"),
        "entry_key_file: %s" % entry_key, "redis_budget: 500ms")).start()
    try:
        wait_until(lambda: cache_health(gate)["state"] == "up", 10, "jobgate up")
        a, b, c = hex32(), hex32(), hex32()
        eq(gate.get(path(a)).status, 200, "job a")
        wait_until(lambda: redis.cli("EXISTS", key(a, "t")) == "1", 5, "a's answer stored")
        signed = redis.cli("GET", key(a, "t"))
        check(" m=" in signed.split("\n")[0], "a MAC in the head: %r" % signed[:120])
        body = signed.split("\n", 1)[1].replace(a, b)
        redis.cli("SET", key(b, "t"), "JG1 %d 1 200 0 0\n%s" % (int(time.time() * 1000), body))  # b's, unsigned
        redis.cli("SET", key(c, "t"), signed.replace(a, c))  # a's signature, c's name
        for job in (b, c):
            r = gate.get(path(job))
            eq((r.status, r.json()["job_id"], r.header("x-cache")), (200, job, "MISS"), "job %s" % job[:6])
            eq(sim.count(job), 1, "upstream calls for %s" % job[:6])
        eq(metric(gate, "jobgate_cache_rejected_total"), 2, "rejected")
        no_secret_anywhere(gate, ENTRY_KEY, PASSWORD)
    finally:
        gate.stop()


@test
def late_lease_is_released(env):
    """Redis stalls past the budget, the upstream call fails: the lease granted late is released, not kept"""
    gate, sim, redis = env["gate"], env["sim"], env["redis"]
    wait_until(lambda: cache_health(gate)["state"] == "up", 10, "redis up")
    wait_until(lambda: cache_health(gate)["coalescing"] == "pubsub", 10, "subscribed: the lookup takes the lease")
    job = hex32()
    sim.fault(job=job, kind="status", status=500, count=1)
    sleeper = threading.Thread(target=lambda: redis.cli("DEBUG", "SLEEP", "1.5"))
    sleeper.start()
    time.sleep(0.3)
    r = gate.get(path(job))
    check(r.status >= 500, "upstream failed: %d" % r.status)
    eq(r.header("x-cache"), "BYPASS", "Redis over its budget")
    eq(sim.count(job), 1, "upstream calls")
    sleeper.join()
    time.sleep(0.5)  # Redis woke up and granted the lease; jobgate released it
    eq(redis.cli("EXISTS", key(job, "l")), "0", "the lease left behind")
    r = gate.get(path(job))
    eq((r.status, r.header("x-cache")), (200, "MISS"), "the next poll calls upstream at once")


if __name__ == "__main__":
    run(setup, teardown)
