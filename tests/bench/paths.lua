-- wrk script of tests/bench/run: walk a fixed list of paths, one request after
-- another round the list, each with X-Auth-Token (jobgate refuses requests
-- without one); at the end append one JSON line with the results to $BENCH_OUT.
--   BENCH_PATHS  file of paths, one a line (100, 10,000 or just one)
--   BENCH_OUT    file the JSON line is appended to
local requests_ = {}
local count = 0
local next_ = 0

function init(args)
   local file = os.getenv("BENCH_PATHS")
   for line in io.lines(file) do
      if #line > 0 then
         count = count + 1
         requests_[count] = wrk.format("GET", line, { ["X-Auth-Token"] = "bench" })
      end
   end
   if count == 0 then
      error("no paths in " .. tostring(file))
   end
end

function request()
   next_ = next_ % count + 1
   return requests_[next_]
end

function done(summary, latency, requests)
   local e = summary.errors
   local f = assert(io.open(os.getenv("BENCH_OUT"), "a"))
   f:write(string.format(
      '{"requests":%d,"duration_us":%d,"bytes":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"latency_us":{"min":%d,"max":%d,"mean":%.1f,"stdev":%.1f,' ..
      '"p50":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.min, latency.max, latency.mean, latency.stdev,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
   f:close()
end
