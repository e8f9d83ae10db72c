#!/bin/sh
# The quick start (`make demo`): the bundled job-API simulator plus jobgate in
# front of it, on Redis when one answers on 127.0.0.1:6379, else on the
# embedded cache. Ctrl-C stops both.
set -eu
builddir=$1
srcdir=$2
port=${JOBGATE_DEMO_PORT:-8080}
sim_port=${JOBSIM_DEMO_PORT:-9090}
admin_port=${JOBGATE_DEMO_ADMIN_PORT:-9100}
tmp=$(mktemp -d)

"$builddir/tests/sim/jobsim" --listen "127.0.0.1:$sim_port" --init-ms 5000 --running-ms 10000 --quiet &
sim_pid=$!
trap 'kill $sim_pid 2>/dev/null; rm -rf "$tmp"' EXIT INT TERM

if command -v redis-cli >/dev/null 2>&1 && redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then
    redis="redis://127.0.0.1:6379"
else
    redis="none"
fi
cat >"$tmp/jobgate.yaml" <<CONF
listen: 127.0.0.1:$port
admin: {listen: "127.0.0.1:$admin_port"}
rules: [$srcdir/lua-free-rules/*.yaml]
cache: {redis: "$redis"}
upstream: {url: "http://127.0.0.1:$sim_port"}
CONF

cat <<MSG

jobgate is starting on 127.0.0.1:$port in front of the job-API simulator (127.0.0.1:$sim_port),
cache: $redis. Each job runs INIT 5 s, RUNNING 10 s, then SUCCESS. Try, and repeat:

  curl -i -H 'X-Auth-Token: demo' http://127.0.0.1:$port/v1.0/ff8080825ecc523f015ecd0a98f82f77/jobs/8a0b9c1d2e3f40516273849506a7b8c9

  curl -s http://127.0.0.1:$admin_port/metrics | grep jobgate_requests_total    # the admin listener
  curl -s http://127.0.0.1:$admin_port/healthz                                   # details; :$port/healthz says ok only

Ctrl-C stops both.

MSG
"$builddir/proxy/jobgate" -c "$tmp/jobgate.yaml"
