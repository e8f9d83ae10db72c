#!/usr/bin/env python3
"""Limits against hostile and broken clients, each answered from the
documented table or by closing, and counted in jobgate_events_total:
oversized URI and headers (400), slowloris (header_timeout), idle keep-alive
(keepalive_timeout), max_requests_per_connection (Connection: close),
max_connections (the listener pauses; a waiting client is served once a
slot frees)."""
import os
import re
import socket
import time

from harness import (Jobgate, Sim, assert_documented_error, check, eq, hex32, request, run, seed_path, stop_all,
                     test, wait_until)

PROJECT = hex32()


def setup():
    env = {}
    env["sim"] = Sim(init_ms=0, running_ms=0).start()
    env["gate"] = Jobgate(env["sim"].url, redis=None, extra_config=(
        "client:\n  header_timeout: 1s\n  keepalive_timeout: 2s\n  max_requests_per_connection: 3\n"
        "  max_connections: 20\n  max_header_bytes: 2KiB\n  max_uri_bytes: 512\n")).start()
    return env


teardown = stop_all


def events(gate, name):
    text = gate.get("/metrics", token=None).body.decode()
    m = re.search(r'jobgate_events_total\{event="%s"\} (\d+)' % name, text)
    check(m, "metric %s" % name)
    return int(m.group(1))


def connect(gate):
    s = socket.create_connection(("127.0.0.1", gate.port))
    s.settimeout(10)
    return s


def read_response(s):
    """One response (headers + Content-Length body) from socket s; b"" if closed first."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    m = re.search(rb"(?i)content-length: *(\d+)", head)
    need = int(m.group(1)) if m else 0
    while len(rest) < need:
        chunk = s.recv(65536)
        if not chunk:
            break
        rest += chunk
    return head + b"\r\n\r\n" + rest


def closed_by_peer(s, within):
    s.settimeout(within)
    try:
        return s.recv(1) == b""
    except (socket.timeout, TimeoutError):
        return False
    except ConnectionResetError:
        return True


def job_request(job, extra=""):
    return ("GET %s HTTP/1.1\r\nHost: x\r\nX-Auth-Token: t\r\n%s\r\n" % (seed_path(PROJECT, job), extra)).encode()


@test
def an_oversized_uri_gets_400_from_the_table(env):
    """a 600-byte URI (limit 512): 400 JG.URI_TOO_LONG, counted; no upstream call"""
    gate, sim = env["gate"], env["sim"]
    before, calls = events(gate, "request_too_large"), sim.total()
    r = gate.get(seed_path(PROJECT, hex32()) + "?" + "a" * 600)
    assert_documented_error(r, "long URI")
    eq((r.status, r.error()["code"]), (400, "JG.URI_TOO_LONG"), "answer")
    eq(events(gate, "request_too_large") - before, 1, "counted")
    eq(sim.total(), calls, "upstream calls")


@test
def oversized_headers_get_400_from_the_table(env):
    """3 KiB of headers (limit 2 KiB): 400 JG.HEADERS_TOO_LARGE; no upstream call"""
    gate, sim = env["gate"], env["sim"]
    calls = sim.total()
    r = gate.get(seed_path(PROJECT, hex32()), headers={"X-Padding": "p" * 3000})
    assert_documented_error(r, "large headers")
    eq((r.status, r.error()["code"]), (400, "JG.HEADERS_TOO_LARGE"), "answer")
    eq(sim.total(), calls, "upstream calls")


@test
def slowloris_is_closed_after_header_timeout(env):
    """a client that sends half a request and stalls is closed (header_timeout 1 s) and counted"""
    gate = env["gate"]
    before = events(gate, "header_timeout")
    s = connect(gate)
    s.sendall(b"GET /v1.0/ HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    check(closed_by_peer(s, 4), "connection closed by jobgate")
    s.close()
    eq(events(gate, "header_timeout") - before, 1, "header timeouts")


@test
def a_byte_trickle_does_not_keep_a_connection(env):
    """one header byte every 300 ms never completes a request: closed all the same"""
    gate = env["gate"]
    s = connect(gate)
    s.sendall(b"GET /healthz HTTP/1.1\r\n")
    closed = False
    for _ in range(20):
        try:
            s.sendall(b"X")
        except (BrokenPipeError, ConnectionResetError):
            closed = True
            break
        if closed_by_peer(s, 0.3):
            closed = True
            break
    s.close()
    check(closed, "the trickling connection was closed within 6 s")


@test
def an_idle_keepalive_connection_is_closed(env):
    """after one answer, a connection idle beyond keepalive_timeout (2 s) is closed and counted"""
    gate = env["gate"]
    before = events(gate, "keepalive_timeout")
    s = connect(gate)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    check(read_response(s).startswith(b"HTTP/1.1 200"), "first answer")
    check(not closed_by_peer(s, 1.0), "still open after 1 s")
    check(closed_by_peer(s, 4), "closed after the keep-alive timeout")
    s.close()
    eq(events(gate, "keepalive_timeout") - before, 1, "keep-alive timeouts")


@test
def the_last_request_of_a_connection_says_close(env):
    """max_requests_per_connection 3: the third answer carries Connection: close and the socket closes"""
    gate = env["gate"]
    s = connect(gate)
    heads = []
    for _ in range(3):
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        heads.append(read_response(s).split(b"\r\n\r\n")[0].lower())
    check(all(h.startswith(b"http/1.1 200") for h in heads), "three answers")
    check(b"connection: close" not in heads[0] and b"connection: close" not in heads[1], "first two keep alive")
    check(b"connection: close" in heads[2], "third says close")
    check(closed_by_peer(s, 3), "closed after the third")
    s.close()


def connections_seen(gate):
    """jobgate's open connections, read from its log-free side: /proc of its fds would do too."""
    fds = os.listdir("/proc/%d/fd" % gate.proc.pid)
    socks = 0
    for fd in fds:
        try:
            socks += os.readlink("/proc/%d/fd/%s" % (gate.proc.pid, fd)).startswith("socket:")
        except OSError:
            pass
    return socks - 2  # the listener and the upstream connection


@test
def at_max_connections_new_clients_wait_their_turn(env):
    """20 idle connections fill max_connections: a 21st client is not served until one of them closes"""
    gate = env["gate"]
    wait_until(lambda: gate.get("/healthz", token=None).json()["connections"] <= 1, 5, "earlier connections gone")
    before = events(gate, "accept_paused")
    idle = [connect(gate) for _ in range(20)]
    wait_until(lambda: connections_seen(gate) >= 20, 5, "20 connections accepted")
    late = connect(gate)  # the kernel completes the handshake; jobgate does not accept it yet
    late.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    late.settimeout(1.0)
    try:
        early = late.recv(1)
    except (socket.timeout, TimeoutError):
        early = b""
    eq(early, b"", "no answer while 20 connections are open")
    idle[0].close()
    late.settimeout(5)
    check(read_response(late).startswith(b"HTTP/1.1 200"), "served once a slot freed")
    late.close()
    for s in idle[1:]:
        s.close()
    check(events(gate, "accept_paused") - before >= 1, "the pause is counted")


if __name__ == "__main__":
    run(setup, teardown)
