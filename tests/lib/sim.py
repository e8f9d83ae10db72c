"""The job-API simulator (tests/sim/jobsim) from the tests' side: its
control API as a client (SimControl: jobs with a timeline, faults, request
counts, the last request), and the process itself (Sim), registered for
teardown like every process of procs.py. jobsim.c's header comment
documents the control API. Python standard library only."""
import collections
import http.client
import json
import re
import ssl
import subprocess
import tempfile
import urllib.parse

from procs import JOBSIM_BIN, Process, check, free_port, wait_port


class SimControl:
    """A client of a running simulator's control API (/_sim/...) at
    host:port; tls: (cert, key[, ca]) when it speaks HTTPS."""

    def __init__(self, port, host="127.0.0.1", tls=None):
        self.host = host
        self.port = port
        self.tls = tls

    def _control(self, method, path, body=None):
        if self.tls:
            ctx = (ssl.create_default_context(cafile=self.tls[2]) if len(self.tls) > 2
                   else ssl._create_unverified_context())
            conn = http.client.HTTPSConnection("localhost", self.port, timeout=10, context=ctx)
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            conn.request(method, path, body=body)
            r = conn.getresponse()
            data = r.read()
            check(r.status == 200, "simulator %s %s answered %d %r" % (method, path, r.status, data))
            return json.loads(data) if data else None
        finally:
            conn.close()

    @staticmethod
    def _query(params):
        return "&".join("%s=%s" % (k, urllib.parse.quote(str(v), safe="*%")) for k, v in params)

    def define_job(self, job, init_ms=None, running_ms=None, final="SUCCESS", **extra):
        """(Re)start a job's timeline; extra: sub_jobs, sub_lag_ms, init_state."""
        params = [("final", final)]
        if init_ms is not None:
            params.append(("init_ms", int(init_ms)))
        if running_ms is not None:
            params.append(("running_ms", int(running_ms)))
        params += list(extra.items())
        self._control("POST", "/_sim/jobs/%s?%s" % (job, self._query(params)))

    def fault(self, job="*", kind="status", **params):
        """Install a fault for one job or every job ("*"). Values are sent
        percent-encoded, except that a '%' passes as it is (already encoded)."""
        self._control("POST", "/_sim/faults?" + self._query([("job", job), ("kind", kind)] + list(params.items())))

    def clear_faults(self):
        self._control("DELETE", "/_sim/faults")

    def stats(self):
        """{"total": N, "jobs": {job: N}}: job requests seen so far."""
        return self._control("GET", "/_sim/stats")

    def count(self, job):
        return self.stats()["jobs"].get(job, 0)

    def total(self):
        return self.stats()["total"]

    def last(self):
        return self._control("GET", "/_sim/last")


class Sim(Process, SimControl):
    """jobsim on a free loopback port. init_ms, running_ms: the timeline of
    jobs never defined; tls: (cert, key[, ca]); api: the job API it plays
    (jobsim --api); request_log: log every request (answers() reads it)."""

    stop_order = 5

    def __init__(self, init_ms=1000, running_ms=2000, tls=None, api=None, request_log=False):
        SimControl.__init__(self, free_port(), tls=tls)
        self.api = api
        self.init_ms = init_ms
        self.running_ms = running_ms
        self.request_log = request_log
        self.proc = None
        self.log = tempfile.NamedTemporaryFile(prefix="jg-sim-", suffix=".log", delete=False)

    @property
    def url(self):
        return "%s://%s:%d" % ("https" if self.tls else "http", "localhost" if self.tls else "127.0.0.1", self.port)

    def start(self):
        args = [JOBSIM_BIN, "--listen", "127.0.0.1:%d" % self.port, "--init-ms", str(self.init_ms),
                "--running-ms", str(self.running_ms)]
        if not self.request_log:
            args.append("--quiet")
        if self.tls:
            args += ["--tls-cert", self.tls[0], "--tls-key", self.tls[1]]
        if self.api:
            args += ["--api", self.api]
        self.spawn(args, stdout=subprocess.DEVNULL, stderr=self.log)
        wait_port(self.port, proc=self.proc)
        return self

    ANSWER = re.compile(r"^jobsim: GET /v1\.0/[0-9a-f]+/jobs/([0-9a-f]+) -> (\d+) (\S+)")

    def answers(self):
        """With request_log: {job: Counter(state, or status if not 200: upstream calls)}
        for the seed API's GETs."""
        out = collections.defaultdict(collections.Counter)
        with open(self.log.name, errors="replace") as f:
            for line in f:
                m = self.ANSWER.match(line)
                if m:
                    out[m.group(1)][m.group(3) if m.group(2) == "200" else m.group(2)] += 1
        return out

    def stop(self):
        rc = self.terminate()
        check(rc in (0, None), "simulator exited with %s (log %s)" % (rc, self.log.name))
