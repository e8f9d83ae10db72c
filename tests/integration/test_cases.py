#!/usr/bin/env python3
"""Gateway behaviour cases as data: every tests/data/gateway/*.case file is
one test, run against a real jobgate, the simulator and redis-server.

A case is a rule (a shipped rule, optionally edited), what the simulator
does (jobs, faults), requests, and the answers expected (status, headers,
body fields, upstream calls, cache entries). The format is described in
tests/data/gateway/README.md; adding a case is adding a file.

One redis-server and one simulator per job API serve every case (each case
has its own project and job ids); each case has its own jobgate, started
with the case's rule and stopped, checked for a clean exit, at its end."""
import json
import os
import tempfile
import time

from harness import (cache_key, test_files, SRCDIR, Jobgate, Redis, Sim, TestFailure, assert_documented_error, check, eq, hex32, run,
                     stop_all, test)
from procs import SHIPPED_RULES

CASES = os.path.join(SRCDIR, "tests", "data", "gateway")
SECTIONS = {
    # section: (keys it takes, keys that may repeat)
    "case": ({"what", "rule", "edit", "config"}, {"edit", "config"}),
    "job": (None, set()),  # any key: a parameter of POST /_sim/jobs/{job}
    "fault": (None, set()),  # any key: a parameter of POST /_sim/faults
    "clear-faults": (set(), set()),
    "wait": ({"ms"}, set()),
    "request": ({"method", "path", "header", "token", "body", "repeat"}, {"header"}),
    "expect": ({"status", "header", "json", "upstream", "cached", "upstream-header", "upstream-path"},
               {"header", "json", "upstream-header"}),
}
ANY, NONE = "(any)", "(none)"


class CaseError(TestFailure):
    pass


def parse(path):
    """The case file as a list of (section, line number, [(key, value, line number)])."""
    steps = []
    with open(path) as f:
        for n, raw in enumerate(f, 1):
            line = raw.rstrip("\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            where = "%s:%d" % (os.path.relpath(path, SRCDIR), n)
            if line.startswith("["):
                name = line.strip()[1:-1] if line.strip().endswith("]") else None
                if name not in SECTIONS:
                    raise CaseError("%s: unknown section %r (one of %s)" % (where, line.strip(), ", ".join(SECTIONS)))
                steps.append((name, n, []))
                continue
            if not steps:
                raise CaseError("%s: a line before the first [section]" % where)
            key, sep, value = line.partition(":")
            key = key.strip()
            # Edits and config lines keep their spaces (but the one after the colon).
            value = value[1:] if key in ("edit", "config") and value.startswith(" ") else value.strip()
            section, _, items = steps[-1]
            allowed, repeatable = SECTIONS[section]
            if not sep or not key:
                raise CaseError("%s: expected 'key: value', got %r" % (where, line))
            if allowed is not None and key not in allowed:
                raise CaseError("%s: [%s] takes no %r (%s)" % (where, section, key, ", ".join(sorted(allowed)) or
                                                              "nothing"))
            if key not in repeatable and any(k == key for k, _, _ in items):
                raise CaseError("%s: %r given twice in [%s]" % (where, key, section))
            items.append((key, value, n))
    if not steps or steps[0][0] != "case":
        raise CaseError("%s: the file must open with [case]" % os.path.relpath(path, SRCDIR))
    if any(s[0] == "case" for s in steps[1:]):
        raise CaseError("%s: one [case] per file" % os.path.relpath(path, SRCDIR))
    return steps


def first(items, key, default=None):
    return next((v for k, v, _ in items if k == key), default)


def every(items, key):
    return [(v, n) for k, v, n in items if k == key]


class Case:
    def __init__(self, path):
        self.path = path
        self.name = os.path.basename(path)[:-len(".case")]
        self.steps = parse(path)
        head = self.steps[0][2]
        self.what = first(head, "what", "")
        self.rule = first(head, "rule", "elb-v1")
        self.edits = []
        for value, n in every(head, "edit"):
            old, sep, new = value.partition(" => ")
            if not sep:
                raise CaseError("%s:%d: edit is 'OLD => NEW'" % (self.rel, n))
            self.edits.append((old.replace("\\n", "\n"), new.replace("\\n", "\n"), n))
        self.config = "".join(v.replace("\\n", "\n") + "\n" for v, _ in every(head, "config"))
        self.project, self.job = hex32(), hex32()

    @property
    def rel(self):
        return os.path.relpath(self.path, SRCDIR)

    def fill(self, text):
        return text.replace("{project}", self.project).replace("{job}", self.job)

    def rule_file(self, tmpdir):
        """The rule with the case's edits, written to tmpdir; its name."""
        with open(os.path.join(SHIPPED_RULES, self.rule + ".yaml")) as f:
            text = f.read()
        for old, new, n in self.edits:
            if old not in text:
                raise CaseError("%s:%d: the rule %s has no %r" % (self.rel, n, self.rule, old))
            text = text.replace(old, new)
        name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("name:")), None)
        path = os.path.join(tmpdir, "%s.yaml" % self.name)
        with open(path, "w") as f:
            f.write(text)
        return path, name


def sim_for(env, api):
    if api not in env["sims"]:
        # Jobs never defined stay in their init state for the whole case.
        env["sims"][api] = Sim(init_ms=60000, running_ms=60000, api=None if api == "elb-v1" else api).start()
    return env["sims"][api]


def header_matches(value, expected):
    if expected == ANY:
        return bool(value)
    if expected == NONE:
        return value is None
    return value == expected


def json_field(doc, dotted):
    for part in dotted.split("."):
        if isinstance(doc, list) and part.isdigit() and int(part) < len(doc):
            doc = doc[int(part)]
        elif isinstance(doc, dict) and part in doc:
            doc = doc[part]
        else:
            return NONE
    return doc if isinstance(doc, str) else json.dumps(doc)


def expect(case, items, r, what, sim, redis, rule_name, upstream_before):
    for key, value, n in items:
        at = "%s:%d: %s" % (case.rel, n, what)
        value = case.fill(value)
        if key == "status":
            eq(r.status, int(value), at + " status")
        elif key == "header":
            name, _, want = value.partition(":")
            got = r.header(name.strip())
            check(header_matches(got, want.strip()), "%s header %s: expected %r, got %r"
                  % (at, name.strip(), want.strip(), got))
        elif key == "json":
            field, sep, want = value.partition(" = ")
            if not sep:
                raise CaseError("%s: json is 'FIELD = VALUE'" % at)
            try:
                doc = r.json()
            except ValueError:
                raise TestFailure("%s: the body is not JSON: %r" % (at, r.body[:200]))
            eq(json_field(doc, field.strip()), want.strip(), at + " body field " + field.strip())
        elif key == "upstream":
            eq(sim.total() - upstream_before, int(value), at + " job requests the simulator saw in this case")
        elif key == "cached":
            if value not in ("yes", "no"):
                raise CaseError("%s: cached is yes or no" % at)
            prefix = cache_key(case.project, case.job, rule=rule_name)
            n_keys = int(redis.cli("EXISTS", prefix + ":t", prefix + ":p"))
            eq("yes" if n_keys else "no", value, at + " a cache entry for the job")
        elif key == "upstream-header":
            name, _, want = value.partition(":")
            last = {k.lower(): v for k, v in sim.last()["headers"].items()}
            got = last.get(name.strip().lower())
            check(header_matches(got, want.strip()), "%s upstream request header %s: expected %r, got %r"
                  % (at, name.strip(), want.strip(), got))
        elif key == "upstream-path":
            eq(sim.last()["path"], value, at + " upstream request path")


def run_case(env, case):
    sim = sim_for(env, case.rule)
    redis = env["redis"]
    rule, rule_name = case.rule_file(env["tmp"])
    upstream_before = sim.total()
    gate = Jobgate(sim.url, redis=redis, rules=[rule], extra_config=case.config)
    try:
        gate.start()
        answers, last_request = [], None
        for section, line, items in case.steps[1:]:
            at = "%s:%d" % (case.rel, line)
            if section == "job":
                params = {k: case.fill(v) for k, v, _ in items}
                sim.define_job(case.job, final=params.pop("final", "SUCCESS"), **params)
            elif section == "fault":
                params = {k: case.fill(v) for k, v, _ in items}
                sim.fault(case.job, **params)
            elif section == "clear-faults":
                sim.clear_faults()
            elif section == "wait":
                time.sleep(int(first(items, "ms")) / 1000.0)
            elif section == "request":
                path = first(items, "path")
                if path is None and case.rule != "elb-v1":
                    raise CaseError("%s: [request] needs a path for rule %s" % (at, case.rule))
                path = case.fill(path or "/v1.0/{project}/jobs/{job}")
                headers = {}
                for value, _ in every(items, "header"):
                    name, _, v = value.partition(":")
                    headers[name.strip()] = case.fill(v.strip())
                kw = {"method": first(items, "method", "GET"), "headers": headers}
                if first(items, "token") == "none":
                    kw["token"] = None
                body = first(items, "body")
                if body is not None:
                    kw["body"] = case.fill(body).encode()
                last_request = "request at line %d (%s %s)" % (line, kw["method"], path)
                answers = [gate.get(path, **kw) for _ in range(int(first(items, "repeat", "1")))]
            elif section == "expect":
                if not answers:
                    raise CaseError("%s: [expect] with no [request] before it" % at)
                for i, r in enumerate(answers):
                    what = last_request + (" #%d" % (i + 1) if len(answers) > 1 else "")
                    # Every error answer is from the documented table, with a code and a message.
                    if r.status != 200:
                        assert_documented_error(r, "%s: %s" % (at, what))
                    expect(case, items, r, what, sim, redis, rule_name, upstream_before)
    except BaseException:
        try:  # the case's own failure is the one to report
            sim.clear_faults()
            gate.stop()
        except Exception:
            pass
        raise
    sim.clear_faults()
    gate.stop()


def load_cases():
    return test_files(CASES, ".case", Case, CaseError, run_case, "case")


def setup():
    return {"tmp": tempfile.mkdtemp(prefix="jg-cases-"), "redis": Redis().start(), "sims": {}}


def teardown(env):
    stop_all(env)


if __name__ == "__main__":
    check(load_cases(), "no case files in %s" % CASES)
    run(setup, teardown)
