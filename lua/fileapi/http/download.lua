-- A download's policy across attempts: where the body goes (a path through
-- the core's file sink, or a writer), how much the sink already holds, and
-- what the server said about resuming: Range/If-Range on the next attempt,
-- a 206 appended, a 200 that starts over (a path is truncated; a writer
-- skips what it has, unless the file changed).
local core = require "fileapi.core"

local type, tonumber, format = type, tonumber, string.format

local M = {}

local function parse_content_range(value)
  local first, last, size = (value or ""):match("^%s*bytes%s+(%d+)%-(%d+)/([%d*]+)")
  return tonumber(first), tonumber(last), tonumber(size)
end

-- State of a download across attempts: the sink, how much it holds, and
-- what the server said about resuming.
function M.new(req)
  local d = { offset = 0, writer = nil, file = nil, on_progress = req.on_download }
  if type(req.sink) == "function" then
    d.writer = req.sink
  else
    local file, err = core.file_sink(req.sink, req.overwrite)
    if not file then return nil, err end
    d.file = file
  end
  return d
end

local function validator(headers)
  return headers.etag or headers["last-modified"]
end

-- Called when a 2xx (or any final) response's headers are in: where the
-- body goes, and how many of its bytes the sink already holds.
function M.decide_for(d)
  return function(status, headers)
    if status < 200 or status >= 300 then return "buffer" end
    if d.offset > 0 and status == 206 then
      local first, _, size = parse_content_range(headers["content-range"])
      if first ~= d.offset then return nil, "the server resumed at another offset than asked" end
      d.total = size
      return "sink", 0
    end
    local length, tag = tonumber(headers["content-length"]), validator(headers)
    if d.offset > 0 then -- the server sent the whole file again
      if d.file then
        local ok, err = d.file:truncate()
        if not ok then return nil, err.message end
        d.offset = 0
      elseif tag == nil or tag ~= d.validator then
        return nil, "the file changed on the server during the download, and the writer already has part of it"
      else
        d.total = length
        return "sink", d.offset
      end
    end
    d.validator = tag
    d.resumable = (headers["accept-ranges"] or ""):lower():find("bytes", 1, true) ~= nil and d.validator ~= nil
    d.total = length
    return "sink", 0
  end
end

-- Only with a caller's on_progress: a Lua call per piece of a download
-- costs (what an attempt delivered comes back in res/err.received).
function M.received_for(d)
  if not d.on_progress then return nil end
  return function(n) return d.on_progress(d.offset + n, d.total) end
end

-- Headers for the next attempt: resume where the sink stands, or start over.
function M.resume_headers(d, headers)
  local out = {}
  for i = 1, #headers do out[i] = headers[i] end
  if d.offset > 0 and d.resumable then
    out[#out + 1] = "Range: bytes=" .. format("%d", d.offset) .. "-"
    out[#out + 1] = "If-Range: " .. d.validator
  elseif d.offset > 0 and d.file then
    local ok = d.file:truncate()
    if ok then d.offset = 0 end
  end
  return out
end

-- After an attempt: what it added to the sink counts from now on.
function M.settle(d, res_or_err)
  d.offset = d.offset + (res_or_err and res_or_err.received or 0)
  d.resumed = (d.resumed or 0) + ((res_or_err and res_or_err.status == 206) and 1 or 0)
end

return M
