-- bench/api.py --loadgen wrk: the request (method, auth header, body from the environment) and one
-- machine-readable line of results. wrk counts a non-2xx/3xx answer in errors.status.
wrk.method = os.getenv("BENCH_METHOD")
wrk.headers["Authorization"] = os.getenv("BENCH_AUTH")
local body = os.getenv("BENCH_BODY")
if body ~= nil and body ~= "" then
    wrk.body = body
    wrk.headers["Content-Type"] = "application/json"
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        'WRKJSON {"requests": %d, "duration_us": %d, "non_2xx_3xx": %d, "socket_errors": %d, '
            .. '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
        summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
        latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
