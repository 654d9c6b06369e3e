-- What a client tells its on_event handler: one table per thing that
-- happened -- an HTTP attempt that ended (`request`), a wait about to begin
-- (`wait`), an OAuth refresh that ended (`refresh`), the fleet's store going
-- down or coming back (`store`).  Events are data, and carry no secret: a
-- URL has the client's secrets replaced (a share token in the path) and a
-- signed link's query cut.  They are built only when there is a handler,
-- without string formatting, so that watching costs a table per event.
--
-- Every event reaches the handler through deliver(): a handler that raises
-- never breaks the call it watches.  Its first raise is warned about once
-- (scrubbed of the client's secrets); it is still told of what follows,
-- and any later raise is dropped unsaid.
local util = require "fileapi.util"

local type, pcall, tostring, setmetatable = type, pcall, tostring, setmetatable
local gsub = string.gsub

local M = {}

-- Handlers whose raise was warned about (weak: a handler dropped is gone).
local reported = setmetatable({}, { __mode = "k" })

local function warn_raised(handler, why, secrets)
  reported[handler] = true
  local shown, text = pcall(tostring, why)
  if not (shown and type(text) == "string") then text = "an error that cannot be shown" end
  if secrets then text = util.redact(text, secrets) end
  util.warn("fileapi: on_event raised: " .. gsub(text, "%c", " "):sub(1, 300)
    .. " (the call goes on; this handler's later raises are not reported)")
end

-- Tells handler of ev; secrets: what its warning must not show.
function M.deliver(handler, ev, secrets)
  local ok, why = pcall(handler, ev)
  if not ok and not reported[handler] then warn_raised(handler, why, secrets) end
end

-- The URL a request event shows: the client's secrets replaced; for a
-- signed link (its query is its credential) the query and fragment cut.
function M.url(url, secrets, signed)
  if signed then url = gsub(url, "[?#].*$", "") end
  return util.redact(url, secrets)
end

-- One attempt that ended: r is its response, or its error.  status: the
-- HTTP status when a final answer came (an error body too); kind: the
-- error's, when the attempt got no whole response.
function M.request(method, url, attempt, res, err, seconds)
  local r = res or err
  return { type = "request", method = method, url = url, status = r.status, kind = not res and err.kind or nil,
    attempt = attempt, bytes_sent = r.uploaded or 0, bytes_received = r.downloaded or 0, seconds = seconds,
    reused = r.reused == true }
end

return M
