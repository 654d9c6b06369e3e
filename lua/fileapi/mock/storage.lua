-- The storage host behind MijnKlantportaal's download links, on a port of
-- its own: GET /storage/<id>?token=…, valid link_ttl seconds (then 403, as
-- signed-URL storage answers), with Accept-Ranges, an ETag, Range/If-Range
-- and 206.  Faults (state.storage_faults, one per request): drop_at = N
-- closes after N body bytes, ignore_range answers 200 whatever was asked,
-- expire answers as if the link had expired.
local http = require "fileapi.mock.http"

local M = {}

local function xml_error(status, code, message)
  return status, { { "Content-Type", "application/xml" } },
    ("<?xml version=\"1.0\"?><Error><Code>%s</Code><Message>%s</Message></Error>"):format(code, message)
end

-- A link for item `id`: remembered with its expiry time.
function M.link(state, base, id)
  local token = ("%08x%08x"):format(math.random(0, 0x7fffffff), math.random(0, 0x7fffffff))
  local ttl = state.config.link_ttl or 300
  local expires = os.time() + ttl
  state.links[token] = { id = id, expires = expires }
  return ("%s/storage/%s?token=%s&expires=%d"):format(base, id, token, expires), expires
end

local function etag(item)
  return ('"%s-%d"'):format(item.id, item.size)
end

-- Sends `count` bytes of the item's file from `first`, in 64 KiB pieces.
local function send_file(conn, item, first, count)
  local f = io.open(item.path, "rb")
  if not f then return false end
  f:seek("set", first)
  while count > 0 do
    local piece = f:read(math.min(65536, count))
    if not piece then break end
    if not conn:send(piece) then f:close() return false end
    count = count - #piece
  end
  f:close()
  return count == 0
end

-- Returns true to keep the connection.
function M.handle(state, conn, req)
  http.read_body(conn, req, 65536)
  local fault = table.remove(state.storage_faults, 1) or {}
  local id = req.path:match("^/storage/([%w_]+)$")
  local link = state.links[req.query.token or ""]
  local item = id and state.items[id]
  local status, headers, body
  if not link or not item or link.id ~= id then
    status, headers, body = xml_error(404, "NoSuchKey", "The specified key does not exist.")
  elseif fault.expire or os.time() > link.expires then
    status, headers, body = xml_error(403, "AccessDenied", "Request has expired")
  end
  if status then
    conn:send(http.response_head(status, headers, #body, false) .. body)
    return true
  end
  local size, first = item.size, 0
  headers = { { "Content-Type", item.mime or "application/octet-stream" }, { "Accept-Ranges", "bytes" },
    { "ETag", etag(item) } }
  status = 200
  local from = (req.headers.range or ""):match("^bytes=(%d+)%-$")
  local if_range = req.headers["if-range"]
  if from and not fault.ignore_range and (not if_range or if_range == etag(item)) and tonumber(from) < size then
    first, status = tonumber(from), 206
    headers[#headers + 1] = { "Content-Range", ("bytes %d-%d/%d"):format(first, size - 1, size) }
  end
  local count = size - first
  conn:send(http.response_head(status, headers, count, false))
  if req.method == "HEAD" then return true end
  local send = count
  if fault.drop_at then send = math.min(count, math.floor(fault.drop_at)) end
  if not send_file(conn, item, first, send) then return false end
  return send == count
end

return M
