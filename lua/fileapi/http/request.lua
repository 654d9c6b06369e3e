-- The one request contract both transports take: libcurl (the C session)
-- and nginx cosockets.  check() is called by each before it sends anything;
-- a wrong field is a programming error and raises, naming the field.
local options = require "fileapi.http.options"

local type, pairs, error, format = type, pairs, error, string.format

local M = {}

-- field -> the Lua types it may have: the call's own fields, then the
-- transport options that travel in the request (from the one list)
local FIELDS = {
  method = { string = true },
  url = { string = true },
  headers = { table = true },
  body = { string = true },
  multipart = { userdata = true },
  sink = { userdata = true, ["function"] = true },
  decide = { ["function"] = true },
  on_progress = { ["function"] = true },
  on_received = { ["function"] = true },
  cancelled = { ["function"] = true },
  expect_continue = { boolean = true },
}
M.CALL_FIELDS = {}
for k in pairs(FIELDS) do M.CALL_FIELDS[k] = true end
for _, opt in ipairs(options.LIST) do
  if opt.request then FIELDS[opt.name] = { [opt.type] = true } end
end
M.FIELDS = FIELDS

M.METHODS = { GET = true, HEAD = true, POST = true, PUT = true, PATCH = true, DELETE = true, OPTIONS = true }

-- RFC 9110 9.2.2: these may be sent again without changing the outcome.
M.IDEMPOTENT = { GET = true, HEAD = true, PUT = true, DELETE = true, OPTIONS = true }

-- Methods whose request always carries a body (an empty one: Content-Length: 0).
M.WITH_BODY = { POST = true, PUT = true, PATCH = true }

-- Bodies from this size on ask for 100 Continue, on both transports.
M.EXPECT_THRESHOLD = 1024 * 1024

local function bad(field, why)
  error(format("request: '%s' %s", field, why), 3)
end

function M.check(creq)
  if type(creq) ~= "table" then error("request: a table expected", 2) end
  for k, v in pairs(creq) do
    local allowed = FIELDS[k]
    if not allowed then bad(tostring(k), "is not a request field") end
    if not allowed[type(v)] then bad(k, "has the wrong type (" .. type(v) .. ")") end
  end
  if not creq.url then bad("url", "is required") end
  local method = creq.method or "GET"
  if not M.METHODS[method] then bad("method", "is not one of GET HEAD POST PUT PATCH DELETE OPTIONS") end
  if creq.body and creq.multipart then bad("body", "and 'multipart' exclude each other") end
  if method == "HEAD" and (creq.body or creq.multipart) then bad("body", "is not allowed on HEAD") end
  if creq.sink and not creq.decide then bad("decide", "is required with a sink") end
  for _, h in ipairs(creq.headers or {}) do
    if type(h) ~= "string" or h:find("[%z\1-\8\10-\31\127]") then bad("headers", "must be strings without control characters") end
  end
  return creq
end

-- The body's length on the wire, or nil when there is none.
function M.body_length(creq)
  if creq.multipart then return creq.multipart:length() end
  if creq.body then return #creq.body end
  if M.WITH_BODY[creq.method or "GET"] then return 0 end
  return nil
end

-- Statuses whose response never has a body (RFC 9110 6.4.1), and HEAD.
function M.has_no_body(method, status)
  return method == "HEAD" or status == 204 or status == 304 or (status >= 100 and status < 200)
end

return M
