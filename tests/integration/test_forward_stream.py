#!/usr/bin/env python3
"""Forward routes stream their answers (proxy/forward.h): the head goes to
the client as soon as upstream's is in, the body piece by piece, and the
upstream transfer pauses while the client is slow to read, so jobgate holds
a few hundred KiB of an answer whatever its size. Request bodies are read
whole (evhttp) up to the rule's forward.max_body, and sent exactly once.

jobgate runs the shipped ECS rule (forward.max_body raised to 8 MiB, a 2 s
timeout) against jobsim, whose streaming routes (tests/sim/stream.h) send a
large body slowly (/_stream/blob) and read one (/_stream/sink). The memory
checks read jobgate's VmHWM (peak resident set) from /proc: a buffered
answer would raise it by about the body's size.
"""
import hashlib
import json
import os
import shutil
import socket
import time

from harness import Jobgate, Sim, check, eq, hex32, request, run, stop_all, test
from harness import SRCDIR, wait_until
from procs import JOBGATE_WRAPPER

P1 = hex32()
KEY = "stream-key-0001"
UPSTREAM_TOKEN = "jobgate-own-token-" + hex32()
RULES = os.path.join(SRCDIR, "lua-free-rules")
MAX_BODY = 8 * 1024 * 1024
TIMEOUT = "2s"  # the rule's upstream.timeout: each wait for upstream, not a slow reader's time
MiB = 1024 * 1024
# Under valgrind (tests/valgrind/run) freed blocks wait in its own queue and
# the resident size says little: the memory bounds are only printed there.
CHECK_MEMORY = not JOBGATE_WRAPPER


def blob_bytes(offset, n):
    """jobsim's blob body from `offset`, `n` bytes: 16-byte lines "%015x\\n"."""
    first, last = offset // 16, (offset + n + 15) // 16
    text = b"".join(b"%015x\n" % i for i in range(first, last))
    skip = offset - first * 16
    return text[skip:skip + n]


def blob_sha256(size):
    h = hashlib.sha256()
    step = 4 * MiB
    for off in range(0, size, step):
        h.update(blob_bytes(off, min(step, size - off)))
    return h.hexdigest()


def memory(gate):
    """jobgate's (VmRSS, VmHWM) in bytes."""
    out = {}
    with open("/proc/%d/status" % gate.pid) as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, value = line.split(":")
                out[name] = int(value.split()[0]) * 1024
    return out["VmRSS"], out["VmHWM"]


def rule_copy(tmp, sim):
    """The shipped ECS rule pointed at `sim`: forward.max_body 8 MiB, a 2 s timeout."""
    shared = os.path.join(tmp, "shared")
    if not os.path.isdir(shared):
        shutil.copytree(os.path.join(RULES, "shared"), shared)
    lines = []
    for line in open(os.path.join(RULES, "ecs.yaml")).read().splitlines():
        if line.startswith("  url: https://"):
            line = "  url: " + sim.url
        if line.startswith("  timeout: "):
            line = "  timeout: " + TIMEOUT
        lines.append(line)
        if line.startswith("  prefix: /ecs"):
            lines.append("  max_body: 8MiB")
    dest = os.path.join(tmp, "ecs.yaml")
    with open(dest, "w") as f:
        f.write("\n".join(lines) + "\n")
    return dest


def setup():
    env = {"sim": Sim(init_ms=0, running_ms=0, api="ecs").start()}
    gate = Jobgate(None, redis=None, upstream_token=UPSTREAM_TOKEN)
    gate.rules = [rule_copy(gate.tmp, env["sim"])]
    keys_path = os.path.join(gate.tmp, "keys.yaml")
    with open(keys_path, "w") as f:
        f.write("clients:\n  - name: stream\n    key_sha256: %s\n    projects: [\"%s\"]\n    routes: [\"*\"]\n"
                % (hashlib.sha256(KEY.encode()).hexdigest(), P1))
    gate.audit_path = os.path.join(gate.tmp, "audit.log")
    gate.extra_config = "client_keys: %s\naudit:\n  file: %s\n  flush_interval: 50ms\n" % (keys_path, gate.audit_path)
    # ASan keeps freed memory in quarantine (256 MiB by default): every piece
    # streamed would stay resident and look like buffering. No quarantine
    # for this jobgate: its resident size is then what it really holds.
    saved = os.environ.get("ASAN_OPTIONS")
    os.environ["ASAN_OPTIONS"] = (saved + ":" if saved else "") + "quarantine_size_mb=0:thread_local_quarantine_size_kb=0"
    try:
        env["gate"] = gate.start()
    finally:
        if saved is None:
            del os.environ["ASAN_OPTIONS"]
        else:
            os.environ["ASAN_OPTIONS"] = saved
    return env


def blob_path(size, **params):
    query = "&".join("%s=%s" % kv for kv in sorted(dict(size=size, **params).items()))
    return "/ecs/v1/%s/_stream/blob?%s" % (P1, query)


def stream_stats(sim):
    return sim._control("GET", "/_stream/stats")


def metric(gate, name, **labels):
    """The value of one series on /metrics (0 when absent)."""
    want = name + "{" + ",".join('%s="%s"' % kv for kv in sorted(labels.items())) + "}"
    for line in gate.admin("/metrics").body.decode().splitlines():
        series, _, value = line.rpartition(" ")
        if series.startswith(name + "{"):
            inner = series[len(name) + 1:-1].split(",")
            if name + "{" + ",".join(sorted(inner)) + "}" == want:
                return float(value)
    return 0.0


def audit_lines(gate):
    try:
        with open(gate.audit_path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def audit_of(gate, request_id):
    """The audit line of `request_id` (waits for the writer's flush)."""
    found = []

    def written():
        found[:] = [a for a in audit_lines(gate) if a.get("request_id") == request_id]
        return found

    wait_until(written, 5, "the audit line of " + request_id)
    return found[-1]


class RawGet:
    """A GET on a raw socket, read at the test's own pace."""

    def __init__(self, gate, path, rcvbuf=None):
        self.sock = socket.create_connection(("127.0.0.1", gate.port), timeout=30)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.sendall(("GET %s HTTP/1.1\r\nHost: jobgate\r\nX-Api-Key: %s\r\n\r\n" % (path, KEY)).encode())
        self.buf = bytearray()  # bytes += would copy the whole body at each read
        while b"\r\n\r\n" not in self.buf:
            self.more()
        head, rest = bytes(self.buf).split(b"\r\n\r\n", 1)
        self.buf = bytearray(rest)
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}

    def more(self, n=65536):
        data = self.sock.recv(n)
        if not data:
            raise EOFError
        self.buf += data
        return len(data)

    def read_until_eof(self, n=65536, pause=0.0):
        while True:
            try:
                self.more(n)
            except EOFError:
                return bytes(self.buf)
            if pause:
                time.sleep(pause)

    def close(self):
        self.sock.close()


def dechunk(data):
    """The body of a chunked message (bytes after the head), and whether its last chunk came."""
    body, pos = [], 0
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            return b"".join(body), False
        size = int(data[pos:eol].split(b";")[0], 16)
        if size == 0:
            return b"".join(body), True
        if len(data) < eol + 2 + size + 2:
            body.append(data[eol + 2:eol + 2 + size])
            return b"".join(body), False
        body.append(data[eol + 2:eol + 2 + size])
        pos = eol + 2 + size + 2


@test
def a_large_answer_streams_through(env):
    """16 MiB from upstream, with its Content-Length and chunked: the client gets it whole, as sent; jobgate's peak memory grows by far less than the body (streamed, not held)"""
    gate, sim = env["gate"], env["sim"]
    size = 16 * MiB
    want = blob_sha256(size)
    warm = request(gate.port, blob_path(64 * 1024), headers={"X-Api-Key": KEY}, token=None)
    eq(warm.status, 200, "warm-up: %r" % warm)
    rss0, hwm0 = memory(gate)
    answered = metric(gate, "jobgate_requests_total", route="ecs", status="200", cache="BYPASS")
    upstream = metric(gate, "jobgate_upstream_requests_total", route="ecs", status="200")
    for length in (1, 0):
        r = request(gate.port, blob_path(size, length=length), headers={"X-Api-Key": KEY}, token=None, timeout=60)
        eq(r.status, 200, "status")
        eq(len(r.body), size, "length=%d: the whole body" % length)
        eq(hashlib.sha256(r.body).hexdigest(), want, "length=%d: the body, byte for byte" % length)
        eq(r.headers.get("content-type"), "application/octet-stream", "upstream's type")
        eq(r.headers.get("etag"), '"blob"', "upstream's ETag")
        eq(r.headers.get("x-cache"), "BYPASS", "never cached")
        check(r.headers.get("x-request-id"), "a request id")
        if length:
            eq(r.headers.get("content-length"), str(size), "upstream's Content-Length kept")
            check("transfer-encoding" not in r.headers, "not chunked: %r" % r.headers)
        else:
            eq(r.headers.get("transfer-encoding"), "chunked", "no length from upstream: chunked")
        line = audit_of(gate, r.headers["x-request-id"])
        eq((line["status"], line["bytes"], line["upstream_status"], line["cache"]), (200, size, 200, "BYPASS"),
           "audit line %r" % line)
        check(line["upstream_us"] > 0, "upstream duration audited: %r" % line)
    eq(metric(gate, "jobgate_requests_total", route="ecs", status="200", cache="BYPASS") - answered, 2,
       "two answers counted")
    eq(metric(gate, "jobgate_upstream_requests_total", route="ecs", status="200") - upstream, 2,
       "two upstream calls counted")
    rss1, hwm1 = memory(gate)
    print("# VmHWM %.1f -> %.1f MiB, VmRSS %.1f -> %.1f MiB after 2 x %d MiB"
          % (hwm0 / MiB, hwm1 / MiB, rss0 / MiB, rss1 / MiB, size // MiB))
    check(not CHECK_MEMORY or hwm1 - hwm0 < size // 2, "peak memory grew by %.1f MiB for a %d MiB answer: buffered?"
          % ((hwm1 - hwm0) / MiB, size // MiB))


@test
def a_slow_reader_gets_it_all_and_upstream_waits(env):
    """a client that reads slowly: the upstream transfer pauses (jobsim has sent far less than the body while the client sleeps, longer than the rule's timeout), jobgate's memory stays flat, and the body arrives whole"""
    gate, sim = env["gate"], env["sim"]
    size = 48 * MiB
    want = blob_sha256(size)
    before = stream_stats(sim)
    rss0, hwm0 = memory(gate)
    g = RawGet(gate, blob_path(size, length=1), rcvbuf=64 * 1024)
    eq(g.status, 200, "status")
    while len(g.buf) < 512 * 1024:
        g.more()
    time.sleep(3.0)  # reads nothing for longer than the rule's timeout: upstream's sends pile up somewhere
    sent = stream_stats(sim)["blob_bytes_sent"] - before["blob_bytes_sent"]
    rss1, hwm1 = memory(gate)
    print("# while the client slept: jobsim had sent %.1f MiB of %d; jobgate VmRSS %.1f -> %.1f MiB"
          % (sent / MiB, size // MiB, rss0 / MiB, rss1 / MiB))
    # Socket buffers on loopback hold a few MiB on each side; without
    # backpressure jobgate would have read all of it.
    check(sent < size - 16 * MiB, "jobsim sent %.1f MiB of %d MiB to a paused stream" % (sent / MiB, size // MiB))
    check(not CHECK_MEMORY or rss1 - rss0 < 16 * MiB, "jobgate's memory grew by %.1f MiB while the client slept" % ((rss1 - rss0) / MiB))
    # Then read it all, slowly.
    body = g.read_until_eof(256 * 1024, pause=0.002) if g.headers.get("connection") == "close" else None
    while body is None and len(g.buf) < size:
        g.more(256 * 1024)
    body = bytes(g.buf[:size])
    g.close()
    eq(len(body), size, "the whole body")
    eq(hashlib.sha256(body).hexdigest(), want, "byte for byte")
    rss2, hwm2 = memory(gate)
    print("# after %d MiB to a slow reader: VmHWM %.1f -> %.1f MiB" % (size // MiB, hwm0 / MiB, hwm2 / MiB))
    check(not CHECK_MEMORY or hwm2 - hwm0 < 16 * MiB, "peak memory grew by %.1f MiB" % ((hwm2 - hwm0) / MiB))
    wait_until(lambda: stream_stats(sim)["blobs_completed"] == before["blobs_completed"] + 1, 10,
               "jobsim to finish the blob")


@test
def a_client_that_leaves_stops_the_transfer(env):
    """the client closes mid-body: jobgate stops the upstream transfer (jobsim sees its connection close before the last byte), audits CLIENT_GONE with the bytes sent, counts the connection closed_unanswered, and serves on"""
    gate, sim = env["gate"], env["sim"]
    size = 256 * MiB
    before = stream_stats(sim)
    unanswered = metric(gate, "jobgate_events_total", event="closed_unanswered")
    g = RawGet(gate, blob_path(size, piece=65536, delay_ms=2))
    eq(g.status, 200, "status")
    request_id = g.headers["x-request-id"]
    while len(g.buf) < 1 * MiB:
        g.more()
    g.close()
    wait_until(lambda: stream_stats(sim)["blobs_closed_early"] > before["blobs_closed_early"], 10,
               "jobsim to see the upstream connection close")
    after = stream_stats(sim)
    eq(after["blobs_completed"], before["blobs_completed"], "the blob never finished")
    check(after["blob_bytes_sent"] - before["blob_bytes_sent"] < size // 2, "jobsim stopped early")
    line = audit_of(gate, request_id)
    eq(line["cache"], "CLIENT_GONE", "audited as the client gone: %r" % line)
    check(1 * MiB <= line["bytes"] < size, "the bytes sent before: %r" % line)
    eq(line["upstream_status"], 200, "upstream's status: %r" % line)
    wait_until(lambda: metric(gate, "jobgate_events_total", event="closed_unanswered") > unanswered, 5,
               "the connection counted as closed unanswered")
    r = request(gate.port, blob_path(1000), headers={"X-Api-Key": KEY}, token=None)
    eq((r.status, r.body), (200, blob_bytes(0, 1000)), "jobgate serves on")


@test
def a_client_that_half_closes_still_gets_it_all(env):
    """a client that shuts down its sending side after the request (shutdown(SHUT_WR)) still reads the whole streamed answer"""
    gate = env["gate"]
    size = 4 * MiB
    s = socket.create_connection(("127.0.0.1", gate.port), timeout=30)
    try:
        s.sendall(("GET %s HTTP/1.1\r\nHost: jobgate\r\nX-Api-Key: %s\r\n\r\n"
                   % (blob_path(size, length=1, delay_ms=1), KEY)).encode())
        s.shutdown(socket.SHUT_WR)
        buf = bytearray()
        while True:
            data = s.recv(65536)
            if not data:
                break
            buf += data
    finally:
        s.close()
    head, _, body = bytes(buf).partition(b"\r\n\r\n")
    check(head.startswith(b"HTTP/1.1 200"), "status: %r" % head[:100])
    eq(len(body), size, "the whole body after a half-close")
    eq(body, blob_bytes(0, size), "byte for byte")


@test
def an_upstream_that_fails_mid_body_cuts_the_client(env):
    """upstream closes after 1 MiB of 4, or goes quiet longer than the rule's timeout: the head is out, so jobgate cuts the client's connection (short body, no last chunk) and audits CUT; an upstream error status streams back as sent"""
    gate = env["gate"]
    for length in (1, 0):
        g = RawGet(gate, blob_path(4 * MiB, cut_after=MiB, length=length))
        eq(g.status, 200, "the head came first")
        data = g.read_until_eof()
        g.close()
        if length:
            eq(len(data), MiB, "length=1: a short body, then the close")
        else:
            body, ended = dechunk(data)
            eq((len(body), ended), (MiB, False), "chunked: the bytes sent, no last chunk")
        line = audit_of(gate, g.headers["x-request-id"])
        eq((line["cache"], line["status"], line["bytes"]), ("CUT", 200, MiB), "audited CUT: %r" % line)
    # An upstream that goes quiet mid-body for longer than the rule's timeout: cut too.
    g = RawGet(gate, blob_path(MiB, piece=65536, delay_ms=6000, length=1))
    eq(g.status, 200, "the head came first")
    t0 = time.time()
    data = g.read_until_eof()
    g.close()
    eq(len(data), 65536, "one piece, then the close")
    check(time.time() - t0 < 5.5, "cut at the rule's 2 s timeout, not at the next piece (6 s)")
    line = audit_of(gate, g.headers["x-request-id"])
    eq((line["cache"], line["bytes"]), ("CUT", 65536), "audited CUT: %r" % line)
    r = request(gate.port, blob_path(1000, piece=0), headers={"X-Api-Key": KEY}, token=None)
    eq((r.status, r.body), (400, b'"bad size, piece or delay_ms"'), "an upstream 400 comes back as sent: %r" % r)


@test
def a_large_post_arrives_whole_once(env):
    """a 6 MiB POST (forward.max_body 8 MiB) reaches jobsim whole, byte for byte, exactly once; the answer comes back"""
    gate, sim = env["gate"], env["sim"]
    body = os.urandom(6 * MiB)
    tag = "post-" + hex32()[:8]
    r = request(gate.port, "/ecs/v1/%s/_stream/sink?tag=%s" % (P1, tag), method="POST", body=body,
                headers={"X-Api-Key": KEY, "Content-Type": "application/octet-stream"}, token=None, timeout=60)
    eq(r.status, 200, "POST: %r" % r)
    doc = r.json()
    eq(doc["length"], len(body), "the length jobsim read")
    eq(doc["sha256"], hashlib.sha256(body).hexdigest(), "the body, byte for byte")
    eq(stream_stats(sim)["sinks"].get(tag), 1, "exactly once")
    line = audit_of(gate, r.headers["x-request-id"])
    eq((line["method"], line["status"], line["bytes"]), ("POST", 200, len(r.body)), "audit %r" % line)


@test
def a_body_over_the_limit_is_refused(env):
    """one byte over forward.max_body: 413 in the API's error shape, nothing sent upstream; far over twice it: refused before it is read"""
    gate, sim = env["gate"], env["sim"]
    tag = "big-" + hex32()[:8]
    r = request(gate.port, "/ecs/v1/%s/_stream/sink?tag=%s" % (P1, tag), method="PUT", body=b"x" * (MAX_BODY + 1),
                headers={"X-Api-Key": KEY}, token=None, timeout=60)
    eq(r.status, 413, "over the limit: %r" % r)
    # 413 is not in proxy/statuses.h's table (only forward routes send it): the shape is checked here.
    eq(r.header("content-type"), "application/json;charset=UTF-8", "an error body")
    doc = r.error()
    eq((doc["shape"], doc["code"]), ("apigw", "JG.BODY_TOO_LARGE"), "in the API's shape (ECS: apigw)")
    eq(doc["request_id"], r.header("x-request-id"), "with its request id")
    eq(r.body.count(b"8388608"), 1, "the limit is said: %r" % r.body)
    check(tag not in stream_stats(sim)["sinks"], "never sent upstream")
    ok = request(gate.port, "/ecs/v1/%s/_stream/sink?tag=%s" % (P1, tag), method="PUT", body=b"x" * MAX_BODY,
                 headers={"X-Api-Key": KEY}, token=None, timeout=60)
    eq((ok.status, ok.json()["length"]), (200, MAX_BODY), "at the limit: sent")
    # Beyond twice the rules' largest max_body, the framing filter refuses
    # the announced length before reading it.
    s = socket.create_connection(("127.0.0.1", gate.port), timeout=10)
    try:
        s.sendall(("PUT /ecs/v1/%s/_stream/sink HTTP/1.1\r\nHost: j\r\nX-Api-Key: %s\r\nContent-Length: %d\r\n\r\n"
                   % (P1, KEY, 2 * MAX_BODY + 1)).encode())
        head = s.recv(4096)
    finally:
        s.close()
    check(head.startswith(b"HTTP/1.1 400"), "refused at once, unread: %r" % head[:100])


if __name__ == "__main__":
    run(setup=setup, teardown=stop_all)
