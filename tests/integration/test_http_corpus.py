#!/usr/bin/env python3
"""Raw requests as data: every tests/data/http/*.http file is one test. Its
bytes are sent byte-exact on a fresh socket to a real jobgate (before the
simulator), and what comes back is checked: the answers expected and no
other (a smuggled request would be a second answer), each JSON from the
documented table with an X-Request-Id and its Connection header, each with
its audit line, and the upstream calls expected (a smuggled request that
reached the simulator shows in /_sim/stats). The format is described in
tests/data/http/README.md; adding a case is adding a file."""
import json
import os
import re
import socket
import time

from harness import (test_files, DOCUMENTED, SRCDIR, Jobgate, Sim, TestFailure, check, eq, hex32, run, stop_all, test,
                     wait_until)
from client import parse_response

CASES = os.path.join(SRCDIR, "tests", "data", "http")
KEYS = {"what": False, "gate": False, "answer": True, "audit": True, "upstream": False, "half-close": False,
        "pause-ms": False}
ESCAPES = {"r": b"\r", "n": b"\n", "t": b"\t", "0": b"\0", "\\": b"\\", "s": b" "}


class CaseError(TestFailure):
    pass


def unescape(text, where):
    """The raw bytes of a case: the file's own line ends are not sent; \\r \\n
    \\t \\0 \\s \\\\ and \\xHH are."""
    out = bytearray()
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\n":
            i += 1
            continue
        if ch != "\\":
            out += ch.encode("utf-8")
            i += 1
            continue
        esc = text[i + 1:i + 2]
        if esc in ESCAPES:
            out += ESCAPES[esc]
            i += 2
        elif esc == "x" and re.fullmatch(r"[0-9a-fA-F]{2}", text[i + 2:i + 4]):
            out.append(int(text[i + 2:i + 4], 16))
            i += 4
        else:
            raise CaseError("%s: unknown escape \\%s" % (where, esc))
    return bytes(out)


class Case:
    def __init__(self, path):
        self.name = os.path.basename(path)[:-len(".http")]
        where = os.path.relpath(path, SRCDIR)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        head, sep, raw = text.partition("\n--\n")
        if not sep:
            raise CaseError("%s: no '--' line between the expectations and the bytes" % where)
        self.items = {k: [] for k in KEYS}
        for n, line in enumerate(head.splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            key, colon, value = line.partition(":")
            key = key.strip()
            if not colon or key not in KEYS:
                raise CaseError("%s:%d: expected one of %s, got %r" % (where, n, ", ".join(KEYS), line))
            if not KEYS[key] and self.items[key]:
                raise CaseError("%s:%d: %r given twice" % (where, n, key))
            self.items[key].append(value.strip())
        if not self.items["what"]:
            raise CaseError("%s: no 'what:'" % where)
        self.what = self.items["what"][0]
        self.answers = []
        for a in self.items["answer"]:
            parts = a.split()
            if len(parts) != 3 or not parts[0].isdigit() or parts[2] not in ("close", "keep-alive", "closed"):
                raise CaseError("%s: 'answer: STATUS CODE close|keep-alive|closed', got %r" % (where, a))
            self.answers.append((int(parts[0]), parts[1], parts[2]))
        self.audits = [a.split() for a in self.items["audit"]]
        if len(self.audits) != len(self.answers) or any(len(a) != 2 for a in self.audits):
            raise CaseError("%s: one 'audit: METHOD PATH' per answer, in order" % where)
        self.gate = self.items["gate"][0] if self.items["gate"] else "strict"
        if self.gate not in ("strict", "bare-lf"):
            raise CaseError("%s: 'gate: strict|bare-lf'" % where)
        self.upstream = int(self.items["upstream"][0]) if self.items["upstream"] else None
        self.half_close = bool(self.items["half-close"]) and self.items["half-close"][0] == "yes"
        self.pause_ms = int(self.items["pause-ms"][0]) if self.items["pause-ms"] else 0
        self.raw = raw
        self.where = where
        unescape(self.substitute("0" * 32, "1" * 32, "2" * 32), where)  # escapes checked at load

    def substitute(self, project, job, job2):
        return (self.raw.replace("{project}", project).replace("{job}", job).replace("{job2}", job2))


def read_answers(sock, want, settle_s):
    """Answers until the connection closes, or `settle_s` after the `want`th
    (a further answer there would be a smuggled request's). Returns
    (answers, closed)."""
    buf, answers, closed = b"", [], False
    deadline = time.time() + 15
    quiet_until = None
    while time.time() < deadline:
        if quiet_until and time.time() >= quiet_until:
            break
        sock.settimeout(max(0.05, (quiet_until or deadline) - time.time()))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            closed = True
            break
        if not chunk:
            closed = True
            break
        buf += chunk
        while True:
            got = parse_response(buf)
            if got is None:
                break
            status, headers, body, used, _ = got
            answers.append((status, headers, body))
            buf = buf[used:]
        if len(answers) >= want and quiet_until is None:
            quiet_until = time.time() + settle_s
    check(not buf.strip(), "bytes that are no whole answer: %r" % buf[:200])
    return answers, closed


def audit_lines(path):
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return {rec["request_id"]: rec for rec in map(json.loads, f)}


def run_case(env, case):
    gate, audit = env["gates"][case.gate]
    sim = env["sim"]
    project, job, job2 = hex32(), hex32(), hex32()
    raw = unescape(case.substitute(project, job, job2), case.where)
    before = sim.total()
    sock = socket.create_connection(("127.0.0.1", gate.port), timeout=5)
    try:
        if case.pause_ms:  # sent in two parts: the head, then what follows its empty line
            cut = raw.find(b"\r\n\r\n") + 4
            sock.sendall(raw[:cut])
            time.sleep(case.pause_ms / 1000.0)
            raw = raw[cut:]
        sock.sendall(raw)
        if case.half_close:
            sock.shutdown(socket.SHUT_WR)
        answers, closed = read_answers(sock, len(case.answers), 0.5)
    finally:
        sock.close()
    eq(len(answers), len(case.answers), "answers (%s)" % [a[0] for a in answers])
    if not case.answers or case.answers[-1][2] != "keep-alive" or case.half_close:
        check(closed, "the connection closed after the last answer")
    ids = []
    for i, ((status, headers, body), (want_status, want_code, want_conn)) in enumerate(zip(answers, case.answers)):
        what = "answer %d" % (i + 1)
        eq(status, want_status, what + " status")
        check(status in DOCUMENTED, "%s: %d outside the documented table" % (what, status))
        eq(headers.get("content-type"), "application/json;charset=UTF-8", what + " content-type")
        doc = json.loads(body.decode("utf-8")) if body else {}
        if want_code != "-":  # either error shape (apigw {"error_code"}, elb {"error": {"code"}})
            code = doc.get("error_code") or (doc.get("error") or {}).get("code") if isinstance(doc, dict) else None
            eq(code, want_code, what + " code")
        # closed: no Connection header, and the connection closes (HTTP/1.0)
        eq(headers.get("connection", "closed" if want_conn == "closed" else "keep-alive").lower(), want_conn,
           what + " Connection")
        check(headers.get("x-request-id"), what + ": no X-Request-Id")
        ids.append(headers["x-request-id"])
    wait_until(lambda: all(i in audit_lines(audit) for i in ids), 5, "an audit line for every answer")
    recs = audit_lines(audit)
    for i, (rid, (method, path), (want_status, _, _)) in enumerate(zip(ids, case.audits, case.answers)):
        rec = recs[rid]
        path = path.replace("{project}", project).replace("{job}", job)
        eq((rec["status"], rec["method"], rec["path"]), (want_status, method, path), "audit line %d" % (i + 1))
    if case.upstream is not None:
        time.sleep(0.2)
        eq(sim.total() - before, case.upstream, "upstream calls (a smuggled request would add one)")


def load_cases():
    return test_files(CASES, ".http", Case, CaseError, run_case, "http")


def setup():
    env = {"sim": Sim(init_ms=0, running_ms=0).start(), "gates": {}}
    for name, extra in (("strict", ""), ("bare-lf", "  allow_bare_lf: true\n")):
        gate = Jobgate(env["sim"].url, redis=None, upstream_token="corpus-token")
        audit = os.path.join(gate.tmp, "audit.log")
        gate.extra_config = ("audit:\n  file: %s\n  flush_interval: 50ms\nclient:\n  max_header_bytes: 4KiB\n%s"
                             % (audit, extra))
        env["gates"][name] = (gate.start(), audit)
        env[name] = gate  # stopped by stop_all
    return env


teardown = stop_all


if __name__ == "__main__":
    check(load_cases(), "no case files in %s" % CASES)
    run(setup, teardown)
