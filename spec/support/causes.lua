-- What a callback raised and why an io call failed, as each transport
-- reports it: the same scenarios run through libcurl in the busted process
-- and through cosockets inside nginx, and the summaries are compared.
local files = require "fileapi.files"

local M = {}

local function raised_value()
  return setmetatable({ code = 42 }, { __tostring = function() return "boom 42" end })
end

local function summary(value, result, err)
  if result then return { ok = true } end
  return { kind = err.kind, message = err.message, cause_is_raised = value ~= nil and err.cause == value,
    errno_name = err.errno_name, has_errno = type(err.errno) == "number" }
end

-- spec: { base_url (the mock's /v1), download_url, transport, missing_dir }
function M.run(spec)
  local client = assert(files.new({ api_key = "test-key", base_url = spec.base_url, transport = spec.transport,
    retries = 0, timeout = 10 }))
  local t = client.engine
  local out = {}
  local v = raised_value()
  out.on_progress = summary(v, client:upload({ data = ("x"):rep(100000), filename = "p.bin" },
    { on_progress = function() error(v) end }))
  v = raised_value()
  out.reader = summary(v, client:upload({ size = 3, filename = "r.bin", reader = function() error(v) end }))
  v = raised_value()
  out.writer = summary(v, t:send({ url = spec.download_url, sink = function() error(v) end }))
  v = raised_value()
  out.on_download = summary(v, t:send({ url = spec.download_url, sink = function() return true end,
    on_download = function() error(v) end }))
  out.sink_path = summary(nil, t:send({ url = spec.download_url, sink = spec.missing_dir .. "/f.bin" }))
  client:close()
  return out
end

return M
