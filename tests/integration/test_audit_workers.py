#!/usr/bin/env python3
"""Audit lines never interleave: 4 workers append to one audit file while
10,000 requests are answered and the disk fills up in the middle (a small
tmpfs mounted by the test; where mounting is not allowed, a file size limit,
RLIMIT_FSIZE with SIGXFSZ ignored; JG_NO_MOUNT=1 forces that way). A write cut short by the full disk must
not leave half a line for another worker's line to follow: every line of the
file parses as JSON, and no request id is torn or written twice. With the
tmpfs, space comes back half-way (a filler file is removed) and the lines
held meanwhile are written whole."""
import http.client
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import tempfile
import threading
import time

from harness import Jobgate, Redis, Sim, check, eq, hex32, run, seed_path, stop_all, test, wait_until

PROJECT = hex32()
REQUESTS = 10000
CLIENTS = 16
FREE_BYTES = 900 * 1024  # room for the first ~2,500 lines; then the disk is full
RLIMIT_BYTES = 1024 * 1024  # the fallback: the file may not grow past this


class LimitedJobgate(Jobgate):
    """jobgate whose files may grow to RLIMIT_BYTES only (the fallback when no tmpfs can be mounted)."""

    def spawn(self, args, **kw):
        def limit():
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
            resource.setrlimit(resource.RLIMIT_FSIZE, (RLIMIT_BYTES, RLIMIT_BYTES))
        return super().spawn(args, preexec_fn=limit, **kw)


def mount_tmpfs(path, size):
    if os.geteuid() != 0 or os.environ.get("JG_NO_MOUNT"):
        return False
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%d" % size, "tmpfs", path], capture_output=True)
    return r.returncode == 0


def setup():
    env = {"dir": tempfile.mkdtemp(prefix="jg-audit-disk-")}
    env["tmpfs"] = mount_tmpfs(env["dir"], 8 * 1024 * 1024)
    if env["tmpfs"]:
        # Leave FREE_BYTES free: the rest is a filler file the test removes half-way.
        st = os.statvfs(env["dir"])
        with open(os.path.join(env["dir"], "filler"), "wb") as f:
            f.write(b"\0" * (st.f_bavail * st.f_frsize - FREE_BYTES))
    env["redis"] = Redis().start()
    env["sim"] = Sim(init_ms=0, running_ms=0).start()
    env["audit_path"] = os.path.join(env["dir"], "audit.log")
    cls = Jobgate if env["tmpfs"] else LimitedJobgate
    env["gate"] = cls(env["sim"].url, redis=env["redis"], upstream_token="cloud-token",
                      extra_config="workers: 4\naudit:\n  file: %s\n  flush_interval: 20ms\n" % env["audit_path"]).start()
    return env


def teardown(env):
    try:
        stop_all(env)
    finally:
        if env.get("tmpfs"):
            subprocess.run(["umount", env["dir"]])
        shutil.rmtree(env["dir"], ignore_errors=True)


def send_all(gate, jobs, on_half):
    """REQUESTS GETs over CLIENTS keep-alive connections; on_half() runs once half are answered."""
    answered, statuses, lock = [0], {}, threading.Lock()

    def client(k):
        conn = None
        for i in range(k, REQUESTS, CLIENTS):
            for attempt in range(3):
                try:
                    conn = conn or http.client.HTTPConnection("127.0.0.1", gate.port, timeout=30)
                    conn.request("GET", seed_path(PROJECT, jobs[i % len(jobs)]), headers={"X-Auth-Token": gate.token})
                    r = conn.getresponse()
                    r.read()
                    break
                except (OSError, http.client.HTTPException):
                    conn.close()
                    conn = None
            else:
                raise
            with lock:
                statuses[r.status] = statuses.get(r.status, 0) + 1
                answered[0] += 1
                if answered[0] == REQUESTS // 2:
                    on_half()
        conn.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses


@test
def lines_stay_whole_when_the_disk_fills(env):
    """10,000 requests on 4 workers, disk full half-way: every line is JSON, every request id once"""
    gate, path = env["gate"], env["audit_path"]
    children = "/proc/%d/task/%d/children" % (gate.proc.pid, gate.proc.pid)
    wait_until(lambda: len(open(children).read().split()) == 4, 20, "4 workers")
    jobs = [hex32() for _ in range(50)]
    full_seen = []

    def on_half():
        full_seen.append(os.path.getsize(path))
        if env["tmpfs"]:
            os.unlink(os.path.join(env["dir"], "filler"))  # room again: held lines go out

    statuses = send_all(gate, jobs, on_half)
    eq(set(statuses), {200}, "answers (fail-open: a full disk never refuses a request)")
    check(sum(statuses.values()) == REQUESTS, "every request answered")
    # The disk was full: the file stopped growing before the space came back.
    check("No space left on device" in gate.log_text() or "File too large" in gate.log_text(),
          "the audit writer never met a full disk (the test did not test)")
    if env["tmpfs"]:
        check(full_seen[0] <= FREE_BYTES, "the file outgrew the free space: %d" % full_seen[0])

    def contents():
        with open(path, "rb") as f:
            return f.read()
    if env["tmpfs"]:
        # Room came back long before the buffer's bound was reached: nothing is lost.
        wait_until(lambda: contents().count(b'"/v1.0/') >= REQUESTS, 30, "every line written once space was back")
    else:
        time.sleep(1.0)
    data = contents()
    check(data.endswith(b"\n"), "the file ends inside a line: %r" % data[-200:])
    ids, bad = [], []
    for n, line in enumerate(data.split(b"\n")[:-1], 1):
        try:
            ids.append(json.loads(line)["request_id"])
        except ValueError:
            bad.append((n, line[:300]))
    check(not bad, "%d torn line(s), the first: %r" % (len(bad), bad[:3]))
    torn = [i for i in ids if not re.fullmatch(r"[0-9a-f]{32}", i)]
    check(not torn, "request ids not whole: %r" % torn[:5])
    eq(len(ids) - len(set(ids)), 0, "request ids written twice")
    check(len(ids) > 0, "no line written at all")

if __name__ == "__main__":
    run(setup, teardown)
