-- wrk script: every request takes the next line of a prepared file, and no line is used twice.
--   wrk ... -s walk.lua URL -- FILE METHOD THREADS [PATH]
-- GET: each line is a path (with query). POST: each line is a JSON body sent to PATH.
-- Thread k of n takes lines k, k+n, k+2n, ... When its share runs out it repeats its last
-- line and counts it as "exhausted", so a too-short list shows up instead of skewing results.

local counter = 0
local threads = {}

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local file, nthreads = args[1], tonumber(args[3])
  method, path = args[2], args[4]
  mine, idx, exhausted, bad = {}, 0, 0, 0
  local i = 0
  for line in io.lines(file) do
    if i % nthreads == tid then
      table.insert(mine, line)
    end
    i = i + 1
  end
  headers = { ["Content-Type"] = "application/json" }
end

function request()
  idx = idx + 1
  local line = mine[idx]
  if line == nil then
    exhausted = exhausted + 1
    line = mine[#mine]
  end
  if method == "GET" then
    return wrk.format("GET", line)
  end
  return wrk.format("POST", path, headers, line)
end

function response(status, headers, body)
  if status ~= 200 then
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local exhausted_total, bad_total, used = 0, 0, 0
  for _, t in ipairs(threads) do
    exhausted_total = exhausted_total + t:get("exhausted")
    bad_total = bad_total + t:get("bad")
    used = used + t:get("idx")
  end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"non200":%d,"exhausted":%d,"issued":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    bad_total, exhausted_total, used, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
