-- One fileapi.group body, run in the busted process (coroutines on a
-- libcurl multi) and inside nginx (light threads on cosockets), summed up
-- so that the two can be compared: uploads on one client, one function that
-- raises and one the API refuses; then a group that cancels itself.  The
-- client's on_event counts the attempts, and whether its calls ever overlap.
local fileapi = require "fileapi"

local M = {}

local function outcome(res, err)
  if res then return { ok = true, name = res.name } end
  local cause = err.cause
  -- the message, but for the raise's place (the file's path differs)
  return { ok = false, kind = err.kind, cause = type(cause) == "table" and cause.code or nil,
    message = err.message:gsub("table: 0x%x+", "table") }
end

-- spec: { base_url, api_key, parallel, n, raise_at, fail_at }
function M.run(spec)
  local events = { requests = 0, not_found = 0, overlapped = false }
  local depth = 0
  local function on_event(ev)
    depth = depth + 1
    if depth > 1 then events.overlapped = true end
    if ev.type == "request" then events.requests = events.requests + 1 end
    if ev.status == 404 then events.not_found = events.not_found + 1 end
    depth = depth - 1
  end
  local mkp = assert(fileapi.files.new({ api_key = spec.api_key, base_url = spec.base_url, timeout = 30,
    on_event = on_event }))
  local g = assert(fileapi.group({ parallel = spec.parallel }))
  local handles = {}
  for i = 1, spec.n do
    handles[i] = g:spawn(function()
      if i == spec.raise_at then error({ code = "raised " .. i }) end
      if i == spec.fail_at then return mkp:mkdir("refused", { directory = "fsd_missing000000" }) end
      return mkp:upload({ data = ("g"):rep(4096), filename = "g" .. i .. ".txt" })
    end)
  end
  local out = { completed = {}, same_handles = true, results = {}, cancelled = {}, events = events }
  for h, res, err in g:results() do
    out.completed[#out.completed + 1] = h.index
    if handles[h.index] ~= h then out.same_handles = false end
    if (res == nil) == (err == nil) then out.same_handles = false end
  end
  for i, r in ipairs(g:wait()) do out.results[i] = outcome(r[1], r[2]) end
  -- one at a time: the first function cancels its own group, the rest never start
  local g2 = assert(fileapi.group({ parallel = 1 }))
  g2:spawn(function()
    local res, err = mkp:mkdir("before cancel")
    g2:cancel()
    return res, err
  end)
  for i = 2, 3 do g2:spawn(function() return mkp:mkdir("never " .. i) end) end
  for i, r in ipairs(g2:wait()) do out.cancelled[i] = r[1] and "ok" or r[2].kind end
  mkp:close()
  return out
end

return M
