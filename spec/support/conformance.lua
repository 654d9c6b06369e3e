-- Runs one request of the transport conformance table through
-- fileapi.http.engine and sums up what came back.  The same code runs in the
-- busted process (libcurl) and inside nginx (cosockets), so the two
-- transports are compared on equal terms.
local engine = require "fileapi.http.engine"

local M = {}

local PATTERN = "0123456789abcdef"
local BLOCK = PATTERN:rep(4097)

-- A writer that checks every byte against the mock's pattern as it comes.
local function pattern_writer(out)
  out.writer_bytes, out.writer_ok = 0, true
  return function(chunk)
    local pos = 1
    while pos <= #chunk do
      local start = out.writer_bytes % 16
      local n = math.min(#chunk - pos + 1, 65536)
      if chunk:sub(pos, pos + n - 1) ~= BLOCK:sub(start + 1, start + n) then out.writer_ok = false end
      out.writer_bytes = out.writer_bytes + n
      pos = pos + n
    end
    return true
  end
end

local function now()
  local ngx = rawget(_G, "ngx")
  if ngx then
    ngx.update_time()
    return ngx.now()
  end
  return require("fileapi.core").now()
end

-- spec: { url, method, transport, timeout, max_response, retries, sink =
-- "path"|"writer", path, headers, body, then_url, then_again }
function M.run(spec)
  local out = { waits = {}, events = {} }
  local opts = assert(engine.check_options({
    transport = spec.transport, timeout = spec.timeout or 5, max_response = spec.max_response,
    retries = spec.retries or 0, backoff = 0.01, max_retry_wait = spec.max_retry_wait, rate_window = spec.rate_window,
    on_wait = function(_, reason) out.waits[#out.waits + 1] = reason end,
    on_event = function(ev) out.events[#out.events + 1] = ev end,
  }, "new"))
  local t = assert(engine.new(opts, {}))
  local req = { method = spec.method or "GET", url = spec.url, headers = spec.headers or {}, body = spec.body }
  if spec.sink == "path" then
    req.sink, req.overwrite = spec.path, true
  elseif spec.sink == "writer" then
    req.sink = pattern_writer(out)
  end
  local started = now()
  local res, err = t:send(req)
  out.seconds = now() - started
  if res then
    out.ok, out.status, out.headers = true, res.status, res.headers
    out.body_length = #res.body
    if #res.body <= 4096 then out.body = res.body end
    out.download = res.download
    out.attempts = res.attempts
  else
    out.ok = false
    out.kind, out.status, out.message, out.attempts = err.kind, err.status, err.message, err.attempts
  end
  -- the next request on the same client must still work (framing kept)
  if spec.then_url then
    local again, aerr = t:send({ method = "GET", url = spec.then_url })
    out.then_status = again and again.status or (aerr and aerr.kind)
    out.then_body = again and again.body
    -- and once more, on the connection that one kept (then_again)
    if spec.then_again then
      again, aerr = t:send({ method = "GET", url = spec.then_url })
      out.again_status = again and again.status or (aerr and aerr.kind)
    end
  end
  out.total_seconds = now() - started
  t:close()
  return out
end

return M
