#!/usr/bin/env python3
"""The simulator's upstream authentication (jobsim POST /_sim/auth), driven
directly: AK/SK signatures, IAM tokens, fixed tokens.

Three implementations of SDK-HMAC-SHA256 meet here and must agree: the one
written below in Python (hmac, hashlib), jobgate's signer in C (proxy/aksk.c,
through tests/unit/aksk_sign_cli), and the simulator's verifier (jobsim.c).
"""
import hashlib
import hmac
import http.client
import json
import os
import subprocess
import threading
import time
import urllib.parse

from harness import JOBSIM_BIN, Sim, check, eq, hex32, run, stop_all, test

AK = "sim-access-key"
SK = "sim-secret-" + hex32()
PROJECT = hex32()
SIGN_CLI = os.environ.get("AKSK_SIGN_CLI") or os.path.join(
    os.path.dirname(os.path.dirname(JOBSIM_BIN)), "unit", "aksk_sign_cli")

# ------------------------------------------------- SDK-HMAC-SHA256 in Python

UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-~.")


def encode(data):
    return "".join(chr(b) if b in UNRESERVED else "%%%02X" % b for b in data)


def canonical_uri(path):
    uri = "/".join(encode(urllib.parse.unquote_to_bytes(segment)) for segment in path.split("/"))
    return uri if uri.endswith("/") else uri + "/"


def canonical_query(query):
    pairs = []
    for part in query.split("&"):
        key, _, value = part.partition("=")
        if key:
            pairs.append((urllib.parse.unquote_to_bytes(key), urllib.parse.unquote_to_bytes(value)))
    return "&".join(encode(k) + "=" + encode(v) for k, v in sorted(pairs))


def sign(method, url, ak, sk, date, headers, body=b""):
    """Sign every header in `headers` (name -> value): returns
    (Authorization value, canonical request, string to sign)."""
    u = urllib.parse.urlsplit(url)
    signed = sorted((name.lower(), value.strip(" \t")) for name, value in headers.items())
    canonical = "\n".join([
        method, canonical_uri(u.path or "/"), canonical_query(u.query),
        "".join("%s:%s\n" % h for h in signed), ";".join(name for name, _ in signed),
        hashlib.sha256(body).hexdigest()])
    to_sign = "SDK-HMAC-SHA256\n%s\n%s" % (date, hashlib.sha256(canonical.encode()).hexdigest())
    signature = hmac.new(sk.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
    names = ";".join(name for name, _ in signed)
    return "SDK-HMAC-SHA256 Access=%s, SignedHeaders=%s, Signature=%s" % (ak, names, signature), canonical, to_sign


def default_host(url):
    """The Host a client sends: the URL's, without the scheme's default port."""
    u = urllib.parse.urlsplit(url)
    if u.port is None or u.port == {"https": 443, "http": 80}[u.scheme]:
        return u.hostname if ":" not in u.hostname else "[%s]" % u.hostname
    return u.netloc


def sdk_date(offset_s=0):
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() + offset_s))


# ------------------------------------------------------------- HTTP helpers


def call(sim, method, path, body=None, headers=None):
    """One request to the simulator; returns (status, lower-case headers, parsed JSON or raw bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=10)
    try:
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        try:
            doc = json.loads(data) if data else None
        except ValueError:
            doc = data
        return r.status, {k.lower(): v for k, v in r.getheaders()}, doc
    finally:
        conn.close()


def set_auth(sim, settings):
    status, _, doc = call(sim, "POST", "/_sim/auth", settings)
    eq(status, 200, "POST /_sim/auth %r: %r" % (settings.get("mode"), doc))


def auth_state(sim):
    status, _, doc = call(sim, "GET", "/_sim/auth")
    eq(status, 200, "GET /_sim/auth")
    return doc


def job_path(job=None, project=PROJECT, query=""):
    return "/v1.0/%s/jobs/%s%s" % (project, job or hex32(), "?" + query if query else "")


def signed_get(sim, path, ak=AK, sk=SK, date=None, project=PROJECT, sign_path=None, send_date=None,
               omit_host=False):
    """GET `path` signed by the Python signer; sign_path and send_date sign
    one thing and send another (tampering)."""
    date = date or sdk_date()
    url = "http://127.0.0.1:%d%s" % (sim.port, sign_path or path)
    headers = {"X-Sdk-Date": date}
    if not omit_host:
        headers["Host"] = default_host(url)
    if project is not None:
        headers["X-Project-Id"] = project
    authorization, _, _ = sign("GET", url, ak, sk, date, headers)
    sent = dict(headers, Authorization=authorization)
    sent["X-Sdk-Date"] = send_date or date
    return call(sim, "GET", path, headers=sent)


def expect_refused(result, status, code, what):
    got_status, headers, doc = result
    eq(got_status, status, what + ": status")
    eq(headers.get("content-type"), "application/json;charset=UTF-8", what + ": content-type")
    check(isinstance(doc, dict), what + ": body %r is not a JSON object" % (doc,))
    eq(sorted(doc), ["error_code", "error_msg", "request_id"], what + ": flat API-gateway shape")
    eq(doc["error_code"], code, what + ": error_code (%s)" % doc.get("error_msg"))
    check(SK not in json.dumps(doc), what + ": the SK shows in the answer")
    return doc


def c_sign(*args):
    """The C signer (aksk_sign_cli --trace): (Authorization, signed headers, canonical request, string to sign)."""
    check(os.access(SIGN_CLI, os.X_OK), "no C signer at %s (make check builds it)" % SIGN_CLI)
    out = subprocess.run([SIGN_CLI, "--trace"] + list(args), capture_output=True, text=True, timeout=10)
    eq(out.returncode, 0, "aksk_sign_cli %r: %s" % (args[:2], out.stderr))
    parts = out.stdout[:-1].split("\n--\n")
    eq(len(parts), 4, "aksk_sign_cli output parts")
    return parts


# -------------------------------------------------------------------- tests


def setup():
    return {"sim": Sim(init_ms=60000, running_ms=60000).start()}


teardown = stop_all


@test
def python_signer_reproduces_public_vector(env):
    """the Python signer gives the SDK's public test vector"""
    authorization, canonical, to_sign = sign("GET", "https://example.huaweicloud.com/path?limit=1", "AccessKey",
                                             "SecretKey", "20060102T150405Z", {"X-Sdk-Date": "20060102T150405Z"})
    eq(canonical, "GET\n/path/\nlimit=1\nx-sdk-date:20060102T150405Z\n\nx-sdk-date\n" + hashlib.sha256(b"").hexdigest(),
       "canonical request")
    eq(authorization, "SDK-HMAC-SHA256 Access=AccessKey, SignedHeaders=x-sdk-date, "
       "Signature=5a2ce64c865e0e6046321c6f3d5a77ba8413eeaf355c3166c03d58d02ac79624", "Authorization")


@test
def c_and_python_signers_agree(env):
    """the C signer (proxy/aksk.c) and the Python signer give the same canonical request and signature"""
    cases = [
        # (url, project, extra headers, body)
        ("https://example.huaweicloud.com/path?limit=1", None, {}, ""),
        ("https://elb.example:8443/v1.0/%s/jobs/j%%7e1%%2Fx/?b=2&a=3&a=1&c&k%%20y=a+b" % PROJECT, PROJECT, {}, ""),
        ("http://127.0.0.1:80/a%20b/!*'()@:,;=/", None, {"Content-Type": "  application/json "}, "{}"),
        ("https://ecs.example:443/v1/p/jobs/x?z=%C3%A9&=skip&&y", "p", {"X-Request-Id": "r-1"}, "body"),
    ]
    for url, project, extra, body in cases:
        date = "20260102T030405Z"
        args = []
        headers = {"Host": default_host(url), "X-Sdk-Date": date}
        if project:
            args += ["--project", project]
            headers["X-Project-Id"] = project
        for name, value in extra.items():
            args += ["--header", "%s:%s" % (name, value)]
            headers[name] = value
        if body:
            args += ["--body", body]
        c_auth, c_names, c_canonical, c_to_sign = c_sign(*(args + ["GET", url, AK, SK, date]))
        py_auth, py_canonical, py_to_sign = sign("GET", url, AK, SK, date, headers, body.encode())
        eq(c_canonical, py_canonical, url + ": canonical request")
        eq(c_to_sign, py_to_sign, url + ": string to sign")
        eq(c_auth, py_auth, url + ": Authorization")
        check("host" in c_names.split(";"), url + ": host signed")


@test
def none_mode_checks_nothing(env):
    """by default nothing is checked, and IAM's path is unknown"""
    sim = env["sim"]
    call(sim, "POST", "/_sim/reset")
    status, _, _ = call(sim, "GET", job_path())
    eq(status, 200, "unauthenticated GET")
    state = auth_state(sim)
    eq(state["mode"], "none", "mode")
    eq(state["last_authorization_seen"], False, "last_authorization_seen")
    eq(state["rejected"], 0, "rejected")
    status, _, doc = call(sim, "POST", "/v3/auth/tokens", {"auth": {}})
    eq(status, 404, "IAM outside iam mode")
    eq(doc["error_code"], "APIGW.0101", "IAM outside iam mode: code")


@test
def aksk_python_signed_request_accepted(env):
    """aksk: a request signed by the Python signer passes (host, x-sdk-date, x-project-id, sorted query)"""
    sim = env["sim"]
    set_auth(sim, {"mode": "aksk", "ak": AK, "sk": SK})
    job = hex32()
    status, _, doc = signed_get(sim, job_path(job, query="offset=2&limit=10&limit=1"))
    eq(status, 200, "signed GET: %r" % (doc,))
    eq(doc["job_id"], job, "job body")
    status, _, doc = signed_get(sim, job_path(job), project=None)
    eq(status, 200, "signed GET without X-Project-Id: %r" % (doc,))
    state = auth_state(sim)
    eq((state["sig_ok"], state["sig_bad"], state["rejected"]), (2, 0, 0), "sig_ok, sig_bad, rejected")
    eq(state["last_authorization_seen"], True, "last_authorization_seen")
    last = call(sim, "GET", "/_sim/last")[2]
    check(last["headers"].get("Authorization", "").startswith("SDK-HMAC-SHA256 Access=" + AK),
          "/_sim/last shows the Authorization header: %r" % last["headers"])


@test
def aksk_c_signed_request_accepted(env):
    """aksk: requests signed by the C signer pass the simulator's independent check"""
    sim = env["sim"]
    set_auth(sim, {"mode": "aksk", "ak": AK, "sk": SK})
    for path in [job_path(), job_path("j%7E1%201", query="b=2&a=1&a=0&k=x%2Fy"), job_path("A-b_c.d~e")]:
        url = "http://127.0.0.1:%d%s" % (sim.port, path)
        date = sdk_date()
        authorization = c_sign("--project", PROJECT, "GET", url, AK, SK, date)[0]
        status, _, doc = call(sim, "GET", path, headers={"X-Sdk-Date": date, "X-Project-Id": PROJECT,
                                                         "Authorization": authorization})
        eq(status, 200, path + ": %r" % (doc,))
    eq(auth_state(sim)["sig_ok"], 3, "sig_ok")


@test
def aksk_tampered_requests_refused(env):
    """aksk: changed path, changed date, wrong SK or AK, stale date, unsigned host, no signature: 401 APIGW.0301"""
    sim = env["sim"]
    set_auth(sim, {"mode": "aksk", "ak": AK, "sk": SK})
    path = job_path()
    cases = [
        ("changed path", dict(sign_path=job_path())),
        ("changed query", dict(sign_path=path + "?limit=1")),
        ("changed date", dict(send_date=sdk_date(-60))),
        ("wrong SK", dict(sk=SK + "x")),
        ("wrong AK", dict(ak="other-key")),
        ("stale date", dict(date=sdk_date(-20 * 60))),
        ("future date", dict(date=sdk_date(+20 * 60))),
        ("host not signed", dict(omit_host=True)),
        ("X-Project-Id of another project", dict(project=hex32())),
    ]
    for what, tamper in cases:
        expect_refused(signed_get(sim, path, **tamper), 401, "APIGW.0301", what)
    expect_refused(call(sim, "GET", path), 401, "APIGW.0301", "no Authorization")
    expect_refused(call(sim, "GET", path, headers={"Authorization": "Basic dXNlcjpwYXNz"}), 401, "APIGW.0301",
                   "another scheme")
    state = auth_state(sim)
    eq((state["sig_ok"], state["sig_bad"], state["rejected"]), (0, len(cases) + 2, len(cases) + 2),
       "sig_ok, sig_bad, rejected")
    eq(state["last_authorization_seen"], True, "last_authorization_seen")
    check(SK not in json.dumps(state), "the SK shows in /_sim/auth")
    # A good signature still passes after all that.
    eq(signed_get(sim, path)[0], 200, "good signature")


def iam_body(user="u", password="p", domain="d", project={"name": "cn-north-4"}):
    return {"auth": {"identity": {"methods": ["password"], "password": {
        "user": {"name": user, "password": password, "domain": {"name": domain}}}},
        "scope": {"project": project}}}


def issue_token(sim, **kw):
    status, headers, doc = call(sim, "POST", "/v3/auth/tokens", iam_body(**kw))
    eq(status, 201, "token issue: %r" % (doc,))
    token = headers.get("x-subject-token")
    check(token, "no X-Subject-Token")
    return token, doc


@test
def iam_token_issue_use_expire(env):
    """iam: a token is issued (201, X-Subject-Token, expires_at), used, expired (0307) and replaced"""
    sim = env["sim"]
    set_auth(sim, {"mode": "iam", "user": "u", "password": "p", "domain": "d"})
    token, doc = issue_token(sim)
    expires = time.mktime(time.strptime(doc["token"]["expires_at"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    check(abs(expires - (time.time() + 86400)) < 120, "expires_at %r is not 24 h away" % doc["token"]["expires_at"])
    eq(doc["token"]["project"], {"name": "cn-north-4"}, "token project")
    path = job_path()
    status, _, body = call(sim, "GET", path, headers={"X-Auth-Token": token})
    eq(status, 200, "GET with the token: %r" % (body,))
    expect_refused(call(sim, "GET", path), 401, "APIGW.0301", "no token")
    expect_refused(call(sim, "GET", path, headers={"X-Auth-Token": token + "x"}), 401, "APIGW.0301", "unknown token")
    eq(call(sim, "POST", "/_sim/auth/expire")[2]["expired"], 1, "tokens expired")
    doc = expect_refused(call(sim, "GET", path, headers={"X-Auth-Token": token}), 401, "APIGW.0307", "expired token")
    eq(doc["error_msg"], "The token must be updated.", "expired token message")
    fresh, _ = issue_token(sim, project={"id": PROJECT})
    check(fresh != token, "a new token differs")
    eq(call(sim, "GET", path, headers={"X-Auth-Token": fresh})[0], 200, "GET with the new token")
    state = auth_state(sim)
    eq((state["iam_calls"], state["rejected"], state["issued_tokens"]), (2, 3, 2), "iam_calls, rejected, issued")
    eq(state["last_authorization_seen"], False, "last_authorization_seen")


@test
def iam_refuses_wrong_credentials(env):
    """iam: wrong password, user or domain: 401; malformed body: 400; each counted"""
    sim = env["sim"]
    set_auth(sim, {"mode": "iam", "user": "u", "password": "p", "domain": "d"})
    for what, body in [("wrong password", iam_body(password="P")), ("longer password", iam_body(password="pp")),
                       ("wrong user", iam_body(user="v")), ("wrong domain", iam_body(domain="e"))]:
        status, headers, doc = call(sim, "POST", "/v3/auth/tokens", body)
        eq(status, 401, what)
        check("x-subject-token" not in headers, what + ": a token was issued")
        eq(doc["error"]["code"], 401, what + ": Keystone-shaped error")
    for what, body in [("not JSON", "{"), ("no scope", {"auth": iam_body()["auth"]["identity"]}),
                       ("token method", {"auth": {"identity": {"methods": ["token"]}}})]:
        eq(call(sim, "POST", "/v3/auth/tokens", body)[0], 400, what)
    state = auth_state(sim)
    eq((state["iam_calls"], state["issued_tokens"]), (7, 0), "iam_calls, issued_tokens")


@test
def iam_token_ttl_and_delay(env):
    """iam: token_ttl_s 0 issues tokens already expired (0307); iam_delay_ms delays IAM, not the rest"""
    sim = env["sim"]
    set_auth(sim, {"mode": "iam", "user": "u", "password": "p", "domain": "d", "token_ttl_s": 0})
    token, _ = issue_token(sim)
    expect_refused(call(sim, "GET", job_path(), headers={"X-Auth-Token": token}), 401, "APIGW.0307", "ttl 0")

    set_auth(sim, {"mode": "iam", "user": "u", "password": "p", "domain": "d", "iam_delay_ms": 400})
    results = {}

    def ask_iam():
        started = time.time()
        results["token"] = issue_token(sim)[0]
        results["elapsed"] = time.time() - started

    thread = threading.Thread(target=ask_iam)
    thread.start()
    time.sleep(0.1)
    started = time.time()
    eq(auth_state(sim)["iam_calls"], 1, "IAM call received while it waits")
    check(time.time() - started < 0.3, "the control API waited for IAM's delay")
    thread.join(10)
    check(results.get("elapsed", 0) >= 0.39, "IAM answered after %.3fs, not 0.4s" % results.get("elapsed", 0))
    eq(call(sim, "GET", job_path(), headers={"X-Auth-Token": results["token"]})[0], 200, "delayed token works")


@test
def tokens_mode(env):
    """tokens: a listed token for its project passes; another project 403 APIGW.0302; unknown 401 APIGW.0301"""
    sim = env["sim"]
    set_auth(sim, {"mode": "tokens", "tokens": {"tokA": ["proj1", "proj2"], "tokB": ["*"]}})
    for token, project in [("tokA", "proj1"), ("tokA", "proj2"), ("tokB", "proj1"), ("tokB", hex32())]:
        eq(call(sim, "GET", job_path(project=project), headers={"X-Auth-Token": token})[0], 200, token + " " + project)
    expect_refused(call(sim, "GET", job_path(project="proj3"), headers={"X-Auth-Token": "tokA"}), 403, "APIGW.0302",
                   "tokA on proj3")
    expect_refused(call(sim, "GET", job_path(project="proj1"), headers={"X-Auth-Token": "tokC"}), 401, "APIGW.0301",
                   "unknown token")
    expect_refused(call(sim, "GET", job_path(project="proj1")), 401, "APIGW.0301", "no token")
    eq(auth_state(sim)["rejected"], 3, "rejected")


@test
def control_refuses_bad_settings(env):
    """POST /_sim/auth refuses bad settings (400) and keeps the mode it had"""
    sim = env["sim"]
    set_auth(sim, {"mode": "tokens", "tokens": {"tokA": ["*"]}})
    for what, body in [
            ("not JSON", "{"), ("no mode", {}), ("unknown mode", {"mode": "oauth"}),
            ("unknown member", {"mode": "aksk", "ak": "a", "sk": "s", "region": "x"}),
            ("aksk without sk", {"mode": "aksk", "ak": "a"}), ("empty ak", {"mode": "aksk", "ak": "", "sk": "s"}),
            ("iam without domain", {"mode": "iam", "user": "u", "password": "p"}),
            ("negative ttl", {"mode": "iam", "user": "u", "password": "p", "domain": "d", "token_ttl_s": -1}),
            ("fractional delay", {"mode": "iam", "user": "u", "password": "p", "domain": "d", "iam_delay_ms": 1.5}),
            ("tokens not an object", {"mode": "tokens", "tokens": ["tokA"]}),
            ("project not a string", {"mode": "tokens", "tokens": {"tokA": [1]}})]:
        status, _, doc = call(sim, "POST", "/_sim/auth", body)
        eq(status, 400, what + ": %r" % (doc,))
        check(SK not in json.dumps(doc), what + ": the answer shows the SK")
    eq(auth_state(sim)["mode"], "tokens", "mode kept")
    eq(call(sim, "GET", "/_sim/auth/expire")[0], 405, "GET /_sim/auth/expire")


@test
def reset_returns_to_none(env):
    """/_sim/reset: mode none, counters zero; /_sim/last still records the latest request's headers"""
    sim = env["sim"]
    set_auth(sim, {"mode": "tokens", "tokens": {"tokA": ["*"]}})
    expect_refused(call(sim, "GET", job_path()), 401, "APIGW.0301", "before reset")
    call(sim, "POST", "/_sim/reset")
    state = auth_state(sim)
    eq((state["mode"], state["rejected"], state["iam_calls"], state["sig_ok"], state["sig_bad"]),
       ("none", 0, 0, 0, 0), "after reset")
    path = job_path()
    eq(call(sim, "GET", path, headers={"X-Auth-Token": "anything", "X-Custom": "1"})[0], 200, "after reset")
    last = call(sim, "GET", "/_sim/last")[2]
    eq(last["path"], path, "/_sim/last path")
    eq(last["headers"].get("X-Custom"), "1", "/_sim/last headers")


if __name__ == "__main__":
    run(setup, teardown)
