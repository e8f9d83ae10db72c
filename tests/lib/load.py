"""Load generators: keep-alive HTTP/1.1 clients on one selector loop, with
exact per-request accounting (every request sent ends as exactly one
answer or one connection error). Python standard library only.

ClientLoop is the loop: it connects, writes, reads, parses (client.py),
times requests out and reconnects. What to send and when, and what to do
with an answer, is the subclass's:
  Load     the fault suite's paced load: `rate` requests/s in all over a
           list of paths, statuses counted, a mark to tell requests sent
           before a signal from those after;
  Pollers  the cluster scenarios' clients, each polling one path every
           `interval` s, each answer kept (status, job state, X-Cache);
  fetch()  the bench's: every path once over N connections, or a burst
           (N connections opened first, then every request written at
           once), each answer timed, by the kernel's receive time if asked.

Why not wrk or http.client: the tables need exact numbers per request (a
request abandoned at the end of a run or lost to a reset is one record
here), and one Python thread sustains the few hundred requests/s these
loads pace themselves to.
"""
import collections
import json
import selectors
import socket
import struct
import threading
import time

from client import parse_response

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux: the kernel's receive time on recvmsg


class Client:
    """One keep-alive connection of a ClientLoop (subclasses keep their own
    fields in `data`)."""

    __slots__ = ("addr", "sock", "out", "inbuf", "req", "connected", "retry_at", "t_first", "t_kernel", "data")

    def __init__(self, addr, data=None):
        self.addr = addr  # (host, port)
        self.sock = None
        self.out = b""
        self.inbuf = b""
        self.req = None  # the request in flight: (path, sent_at), else None
        self.connected = False
        self.retry_at = 0.0
        self.t_first = None  # when the first bytes of the answer being read arrived
        self.t_kernel = False  # ... stamped by the kernel
        self.data = data


class ClientLoop:
    """Clients on one selector loop, at most one request in flight each.

    Hooks for subclasses (called on the loop's thread):
      due(c, now)                   may client c send a request now?
      take(c, now)                  the path c sends (called once c is connected or connecting)
      wake(now)                     when due() may next say yes (caps the select timeout)
      answered(c, path, sent_at, status, headers, body, t)
      failed(c, path, sent_at, kind, t)  a request that got no answer; kind: timeout,
                                    connect, write, reset, eof, eof-mid-answer, garbage,
                                    unasked-answer, unfinished (still in flight at the end)
      connect_failed(c, now)        connect() refused at once, before any request
      finished(now)                 end the loop now?
    """

    def __init__(self, clients, token, timeout=25.0, headers=None, kernel_time=False, clock=time.monotonic):
        self.clients = clients
        self.timeout = timeout
        self.kernel_time = kernel_time
        self.clock = clock
        extra = "X-Auth-Token: %s\r\n" % token if token is not None else ""
        for k, v in (headers or {}).items():
            extra += "%s: %s\r\n" % (k, v)
        self._extra = extra
        self._stop = False
        self._thread = None
        self.turns = 0  # loop turns done
        self.sel = selectors.DefaultSelector()

    # -- hooks
    def due(self, c, now):
        return False

    def take(self, c, now):
        raise NotImplementedError

    def wake(self, now):
        return now + 0.01

    def answered(self, c, path, sent_at, status, headers, body, t):
        pass

    def failed(self, c, path, sent_at, kind, t):
        pass

    def connect_failed(self, c, now):
        c.retry_at = now + 0.05

    def finished(self, now):
        return False

    # -- control
    def start(self):
        """Run the loop on a thread of its own."""
        self._thread = threading.Thread(target=self.run, daemon=True)
        self._thread.start()
        return self

    def stop(self, join=10):
        self._stop = True
        if self._thread is not None:
            self._thread.join(join)

    def in_flight(self):
        return sum(1 for c in self.clients if c.req is not None)

    # -- connections
    def open(self, c, blocking=False):
        """Connect c (non-blocking unless asked); False if refused at once."""
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.kernel_time:
            try:
                s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            except OSError:
                pass
        try:
            if blocking:
                s.settimeout(10)
                s.connect(c.addr)
                s.setblocking(False)
                c.connected = True
            else:
                s.setblocking(False)
                s.connect(c.addr)
        except BlockingIOError:
            pass
        except OSError:
            s.close()
            return False
        c.sock = s
        c.inbuf = b""
        self.sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
        return True

    def close(self, c, retry_in=0.0):
        if c.sock is not None:
            try:
                self.sel.unregister(c.sock)
            except (KeyError, ValueError):
                pass
            c.sock.close()
        c.sock = None
        c.connected = False
        c.out = b""
        c.inbuf = b""
        c.retry_at = self.clock() + retry_in

    def fail(self, c, kind, t=None):
        """The request in flight on c (if any) ends as error `kind`; c reconnects a moment later."""
        req, c.req = c.req, None
        if req is not None:
            self.failed(c, req[0], req[1], kind, self.clock() if t is None else t)
        self.close(c, 0.05)

    def send(self, c, now):
        """Ask take() for c's next path and queue the request (connecting first if need be)."""
        if c.sock is None and not self.open(c):
            self.connect_failed(c, now)
            return False
        path = self.take(c, now)
        c.out = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\n%s\r\n" % (path, c.addr[0], c.addr[1], self._extra)).encode()
        c.req = (path, self.clock())
        c.t_first = None
        try:
            self.sel.modify(c.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
        except (KeyError, ValueError):
            pass
        return True

    def write_now(self, c):
        """Write c's request at once (a burst); what is left goes through the loop."""
        c.req = (c.req[0], self.clock())
        try:
            c.out = c.out[c.sock.send(c.out):]
        except BlockingIOError:
            pass
        if not c.out:
            self.sel.modify(c.sock, selectors.EVENT_READ, c)

    # -- the loop
    def _read(self, c):
        """(data, error kind, time): one read, stamped at once."""
        try:
            if self.kernel_time:
                data, anc, _, _ = c.sock.recvmsg(65536, 64)
                for level, kind, value in anc:
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
                        sec, nsec = struct.unpack("qq", value[:16])
                        return data, None, (sec + nsec / 1e9, True)
            else:
                data = c.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return None, None, None
        except ConnectionRefusedError:
            return None, "connect", (self.clock(), False)
        except OSError:
            return None, "reset", (self.clock(), False)
        return data, None, (self.clock(), False)

    def _received(self, c, data, t):
        if not data:
            if c.req is not None:
                self.fail(c, "eof" if not c.inbuf else "eof-mid-answer", t[0])
            else:
                self.close(c)  # an idle keep-alive connection closed: fine
            return
        if not c.inbuf:
            c.t_first, c.t_kernel = t
        c.inbuf += data
        while c.sock is not None and c.inbuf:
            try:
                parsed = parse_response(c.inbuf)
            except ValueError:
                self.fail(c, "garbage", t[0])
                return
            if parsed is None:
                return
            status, headers, body, used, close = parsed
            if c.req is None:
                self.fail(c, "unasked-answer", t[0])
                return
            (path, sent_at), c.req = c.req, None
            c.inbuf = c.inbuf[used:]
            self.answered(c, path, sent_at, status, headers, body, t[0])
            if close:
                self.close(c)

    def run(self):
        sel = self.sel
        while not self._stop:
            now = self.clock()
            if self.finished(now):
                break
            for c in self.clients:
                if c.req is not None:
                    if now - c.req[1] > self.timeout:
                        self.fail(c, "timeout", now)
                elif c.retry_at <= now and self.due(c, now):
                    self.send(c, now)
            self.turns += 1
            wait = max(0.0, min(self.wake(now) - self.clock(), 0.01))
            events = sel.select(wait)
            # Reads first, each stamped as it is made, so that parsing does
            # not show as spread between answers that arrived together.
            got = []
            for key, ev in events:
                c = key.data
                if ev & selectors.EVENT_READ and c.sock is not None and key.fileobj is c.sock:
                    data, err, t = self._read(c)
                    if err is not None:
                        self.fail(c, err, t[0])
                    elif data is not None:
                        got.append((c, c.sock, data, t))
            for key, ev in events:
                c = key.data
                if not ev & selectors.EVENT_WRITE or c.sock is None or key.fileobj is not c.sock:
                    continue
                if not c.connected:
                    if c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                        self.fail(c, "connect")
                        continue
                    c.connected = True
                if c.out:
                    try:
                        c.out = c.out[c.sock.send(c.out):]
                    except BlockingIOError:
                        pass
                    except OSError:
                        self.fail(c, "write")
                        continue
                if not c.out:
                    sel.modify(c.sock, selectors.EVENT_READ, c)
            for c, sock, data, t in got:
                if c.sock is sock:
                    self._received(c, data, t)
        for c in self.clients:
            if c.req is not None:
                self.fail(c, "unfinished")
            self.close(c)
        sel.close()


# --------------------------------------------------------- the fault suite


class Load(ClientLoop):
    """`conns` keep-alive connections to port sending GETs round a list of
    paths at `rate` requests/s in all (closed loop: one request in flight
    per connection at most). Every request sent ends as exactly one status
    or one connection error."""

    def __init__(self, port, paths, token, conns=16, rate=400.0, timeout=25.0):
        super().__init__([Client(("127.0.0.1", port)) for _ in range(conns)], token, timeout=timeout)
        self.port = port
        self.paths = paths
        self.rate = rate
        self.sent = 0
        self.statuses = collections.Counter()
        self.errors = collections.Counter()  # kind -> count
        self.errors_before_mark = 0  # connection errors of requests sent before mark()
        self.sent_before_mark = 0
        self.answered_before_mark = 0
        self.mark_time = None
        self.latencies = []
        self._sending = True
        self._next = 0
        self._next_send = time.monotonic()
        # Reentrant: send() holds it while take() counts the request, so that
        # `sent` and the request's time move together (see mark).
        self._lock = threading.RLock()

    def mark(self):
        """Note the time (before a signal): requests sent until now are 'before'."""
        with self._lock:
            self.mark_time = time.monotonic()
            self.sent_before_mark = self.sent

    def stop_sending(self):
        with self._lock:
            self._sending = False

    def finish(self, wait=None):
        """Stop sending, wait for the requests in flight (at most `wait` s), then stop."""
        self.stop_sending()
        deadline = time.monotonic() + (wait if wait is not None else self.timeout + 1)
        # Two whole loop turns after stop_sending: the in-flight count then
        # covers any request a turn that began before it had just sent.
        turn = self.turns
        while time.monotonic() < deadline and (self.turns < turn + 2 or self.in_flight()):
            time.sleep(0.02)
        self.stop()

    def due(self, c, now):
        with self._lock:
            return self._sending and self._next_send <= now

    def wake(self, now):
        return self._next_send if self._sending else now + 0.01

    def take(self, c, now):
        path = self.paths[self._next % len(self.paths)]
        self._next += 1
        self._next_send = max(self._next_send + 1.0 / self.rate, now - 0.1)
        self.sent += 1
        return path

    def send(self, c, now):
        with self._lock:
            return super().send(c, now)

    def _before(self, sent_at):
        return self.mark_time is None or sent_at <= self.mark_time  # no mark yet: all are before it

    def answered(self, c, path, sent_at, status, headers, body, t):
        with self._lock:
            self.statuses[status] += 1
            self.latencies.append(t - sent_at)
            if self._before(sent_at):
                self.answered_before_mark += 1

    def failed(self, c, path, sent_at, kind, t):
        with self._lock:
            self.errors[kind] += 1
            if self._before(sent_at):
                self.errors_before_mark += 1


# ------------------------------------------------------ the cluster scenarios


class Poller:
    """One polling client's own fields: its path, when it polls next, its answers."""

    __slots__ = ("path", "next_at", "answers")

    def __init__(self, path, first_at):
        self.path = path
        self.next_at = first_at
        self.answers = []  # (sent_at, status, job state or None, X-Cache)


class Pollers(ClientLoop):
    """Clients, each on its own keep-alive connection, polling a path every
    `interval` s (closed loop: one request in flight at most); `targets`:
    (port, path) each. Every request sent ends as exactly one answer or one
    connection error."""

    def __init__(self, targets, interval, token, timeout=10.0):
        now = time.monotonic()
        # Spread the first requests over one interval.
        clients = [Client(("127.0.0.1", port), Poller(path, now + interval * i / max(1, len(targets))))
                   for i, (port, path) in enumerate(targets)]
        super().__init__(clients, token, timeout=timeout)
        self.interval = interval
        self.errors = collections.Counter()
        self._sending = True

    def stop(self, join=10):
        """Stop sending, let the requests in flight finish, then stop."""
        self._sending = False
        deadline = time.monotonic() + self.timeout + 1
        while time.monotonic() < deadline and self.in_flight():
            time.sleep(0.02)
        time.sleep(0.05)
        super().stop(join)

    def due(self, c, now):
        return self._sending and c.data.next_at <= now

    def wake(self, now):
        idle = [c.data.next_at for c in self.clients if c.req is None]
        return min(idle) if idle and self._sending else now + 0.01

    def take(self, c, now):
        c.data.next_at = now + self.interval
        return c.data.path

    def connect_failed(self, c, now):
        self.errors["connect"] += 1
        c.retry_at = now + 0.05

    def answered(self, c, path, sent_at, status, headers, body, t):
        state = None
        if status == 200:
            try:
                state = json.loads(body).get("status")
            except ValueError:
                state = "?"
        c.data.answers.append((sent_at, status, state, headers.get("x-cache", "")))

    def failed(self, c, path, sent_at, kind, t):
        self.errors[kind] += 1

    @property
    def all_answers(self):
        return [a for c in self.clients for a in c.data.answers]

    def statuses(self):
        return collections.Counter(a[1] for a in self.all_answers)

    def x_cache(self):
        return collections.Counter(a[3] for a in self.all_answers)

    def requests(self):
        return len(self.all_answers) + sum(self.errors.values())


# ------------------------------------------------------------------ the bench


class _Fetch(ClientLoop):
    def __init__(self, addr, paths, concurrency, token, timeout, simultaneous, headers):
        n = len(paths) if simultaneous else min(concurrency, len(paths))
        # A burst is timed on the wall clock, as the kernel stamps what it
        # receives (SO_TIMESTAMPNS): an answer's time is then when it reached
        # the client's socket, whenever this process got round to reading it.
        super().__init__([Client(addr) for _ in range(n)], token, timeout=timeout,
                         headers=dict({"Accept": "*/*"}, **(headers or {})), kernel_time=simultaneous,
                         clock=time.time if simultaneous else time.monotonic)
        self.queue = list(reversed(paths))
        self.results = []
        self.deadline = self.clock() + timeout

    def due(self, c, now):
        return bool(self.queue)

    def take(self, c, now):
        return self.queue.pop()

    def finished(self, now):
        return now > self.deadline or (not self.queue and not self.in_flight())

    def answered(self, c, path, sent_at, status, headers, body, t):
        self.results.append({"path": path, "status": status, "xcache": headers.get("x-cache"),
                             "body_len": len(body), "t_send": sent_at, "t_first": c.t_first,
                             "t_kernel": c.t_kernel, "t_done": t, "error": None})

    def failed(self, c, path, sent_at, kind, t):
        self.results.append({"path": path, "status": 0, "error": "timeout" if kind == "unfinished" else kind,
                             "t_send": sent_at, "t_first": None, "t_done": t, "body_len": 0, "xcache": None})


def fetch(addr, paths, concurrency, token, timeout=60.0, simultaneous=False, extra_headers=None):
    """GET every path once over `concurrency` keep-alive connections to addr
    (host, port).

    simultaneous: one connection per path, all connected before any request
    is sent, then every request written in one tight loop (a burst), and
    answers timed by the kernel's receive time where it gives one.
    Returns a list of dicts: path, status, xcache, body_len, t_send, t_first,
    t_kernel, t_done, error.
    """
    f = _Fetch(addr, paths, concurrency, token, timeout, simultaneous, extra_headers)
    if simultaneous:
        for c in f.clients:
            if not f.open(c, blocking=True):
                raise OSError("cannot connect to %s:%d" % addr)
        now = f.clock()
        for c in f.clients:
            f.send(c, now)
        for c in f.clients:  # the burst: every request written at once
            f.write_now(c)
    f.run()
    return f.results
