-- wrk POST script: sends a fixed body of BODY_BYTES bytes (env, default 65536) to the
-- URL given on the command line, e.g. examples/hello's /api/binary_echo, and reports
-- through report.lua (same WRK_RESULT line, non-2xx counted as errors).
--   BODY_BYTES=1048576 wrk -t1 -c8 -d10s -s loadtest/wrk/post.lua http://127.0.0.1:PORT/api/binary_echo

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "report.lua")

local size = tonumber(os.getenv("BODY_BYTES") or "65536")
wrk.method = "POST"
wrk.body = string.rep("x", size)
wrk.headers["Content-Type"] = "application/octet-stream"
