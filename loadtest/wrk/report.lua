-- wrk report script for loadtest/run.sh: counts every non-2xx response and prints one
-- machine-readable line at the end:
--   WRK_RESULT {"requests":N,"duration_us":D,"rps":R,"non2xx":N,"connect_errors":N,
--               "read_errors":N,"write_errors":N,"timeouts":N,"status_errors":N,
--               "p50_us":N,"p90_us":N,"p99_us":N,"max_us":N}
-- wrk's own error counters only count statuses >= 400; `response` below also catches 1xx/3xx.
-- Other scripts (post.lua) load this file with dofile() and then set method/body.
--
-- Each wrk thread runs its own Lua state, so the per-thread counters are collected in
-- `done` through the thread objects kept by `setup`.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  non2xx = 0
end

-- WRK_STATUS_CHECK=fast leaves `response` undefined: wrk then skips its per-response Lua
-- call (about 15% of a raw hyper server's throughput with -t1) and only statuses >= 400 are
-- counted (status_errors). The runner uses it only for the raw hyper row, which always answers 200.
if os.getenv("WRK_STATUS_CHECK") ~= "fast" then
  function response(status, headers, body)
    if status < 200 or status > 299 then
      non2xx = non2xx + 1
    end
  end
end

function done(summary, latency, requests)
  local non2xx_total = 0
  for _, thread in ipairs(threads) do
    non2xx_total = non2xx_total + (thread:get("non2xx") or 0)
  end
  local errors = summary.errors
  local seconds = summary.duration / 1e6
  io.write(string.format(
    'WRK_RESULT {"requests":%d,"duration_us":%d,"rps":%.2f,"non2xx":%d,' ..
    '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d,"status_errors":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, summary.requests / seconds, non2xx_total,
    errors.connect, errors.read, errors.write, errors.timeout, errors.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
