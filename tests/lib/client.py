"""HTTP on the client side: one request on a fresh connection (request),
the parser of an HTTP/1.1 answer that the keep-alive loops of load.py share
(parse_response), and a handful of requests at once (concurrent_get).
Python standard library only."""
import http.client
import json
import threading


def normalize_error(doc):
    """{"code", "message", "request_id", "shape"} of an error body in either
    shape (see Response.error); ValueError for any other document."""
    if isinstance(doc, dict) and set(doc) <= {"error", "request_id"} and isinstance(doc.get("error"), dict) \
            and set(doc["error"]) == {"code", "message"}:
        out = {"code": doc["error"]["code"], "message": doc["error"]["message"], "shape": "elb"}
    elif isinstance(doc, dict) and set(doc) - {"request_id"} == {"error_code", "error_msg"}:
        out = {"code": doc["error_code"], "message": doc["error_msg"], "shape": "apigw"}
    else:
        raise ValueError("not an error body in the elb or apigw shape: %r" % (doc,))
    if "request_id" in doc:
        out["request_id"] = doc["request_id"]
    return out


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # lower-case names
        self.body = body

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def header(self, name):
        return self.headers.get(name.lower())

    def error(self):
        """The error body, normalized: {"code", "message", "request_id", "shape"}
        from either of the shapes jobgate answers in (lua-free-rules/README.md,
        errors.shape): apigw {"error_code", "error_msg", "request_id"} or elb
        {"error": {"code", "message"}, "request_id"}. Anything else: ValueError."""
        return normalize_error(self.json())

    def __repr__(self):
        return "<%d %r %r>" % (self.status, self.headers, self.body[:200])


def request(port, path, method="GET", headers=None, body=None, timeout=15.0, token=None, host="127.0.0.1"):
    """One HTTP request on a fresh connection; `token`: sent as X-Auth-Token
    unless None (headers may override it)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        h = {}
        if token is not None:
            h["X-Auth-Token"] = token
        h.update(headers or {})
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
    finally:
        conn.close()


def concurrent_get(gate, paths, **kw):
    """GET every path at once through gate.get, one thread and connection
    each; the responses in order."""
    out = [None] * len(paths)

    def one(i):
        out[i] = gate.get(paths[i], **kw)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(paths))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def parse_response(buf):
    """A whole answer at the start of `buf` (bytes): (status, headers with
    lower-case names, body, bytes used, close), where close says the server
    will close the connection after it; None while incomplete (an answer
    delimited by the connection's end is incomplete until then: the caller
    handles EOF). ValueError on a status line that is not HTTP/1.x."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buf[:end].decode("latin-1").split("\r\n")
    parts = head[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ValueError("bad status line %r" % head[0])
    status = int(parts[1])
    headers = {}
    for line in head[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    close = headers.get("connection", "").lower() == "close" or parts[0] == "HTTP/1.0"
    pos = end + 4
    if "content-length" in headers:
        n = int(headers["content-length"])
        if len(buf) < pos + n:
            return None
        return status, headers, buf[pos:pos + n], pos + n, close
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                return None
            size = int(buf[pos:eol].split(b";")[0], 16)
            if len(buf) < eol + 2 + size + 2:
                return None
            body += buf[eol + 2:eol + 2 + size]
            pos = eol + 2 + size + 2
            if size == 0:
                return status, headers, body, pos, close
    if status in (204, 304) or 100 <= status < 200:
        return status, headers, b"", pos, close
    return None
