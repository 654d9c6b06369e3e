-- HTTP/1.1 for the mock: requests with keep-alive and Expect: 100-continue,
-- bodies read in chunks (a 200 MiB upload is never held whole), multipart
-- parsing of what was kept, and responses.
local M = {}

local REASONS = {
  [100] = "Continue", [200] = "OK", [201] = "Created", [400] = "Bad Request",
  [401] = "Unauthorized", [403] = "Forbidden", [404] = "Not Found", [411] = "Length Required",
  [413] = "Payload Too Large",
  [204] = "No Content", [206] = "Partial Content", [422] = "Unprocessable Content", [426] = "Upgrade Required",
  [429] = "Too Many Requests", [500] = "Internal Server Error", [502] = "Bad Gateway",
  [503] = "Service Unavailable", [504] = "Gateway Timeout",
}

local function unescape(s)
  return (s:gsub("+", " "):gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end
M.unescape = unescape

local function parse_query(q)
  local out = {}
  for pair in (q or ""):gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    out[unescape(k)] = unescape(v)
  end
  return out
end

-- Reads the request line and headers; nil at a clean end of the connection.
function M.read_request(conn, deadline)
  local line, err = conn:read_line(deadline)
  if not line then return nil, err end
  if line == "" then line, err = conn:read_line(deadline); if not line then return nil, err end end
  local method, target, version = line:match("^(%u+) (%S+) HTTP/(1%.[01])$")
  if not method then return nil, "bad request line" end
  local req = { method = method, target = target, version = version, header_list = {}, headers = {} }
  -- absolute-form, as a client sends it to a proxy
  local origin_form = target:match("^https?://[^/]+(/.*)$") or target
  req.path, req.raw_query = origin_form:match("^([^?]*)%??(.*)$")
  req.query = parse_query(req.raw_query)
  while true do
    local h = conn:read_line(deadline)
    if not h then return nil, "closed in headers" end
    if h == "" then break end
    local name, value = h:match("^([^:]+):%s*(.-)%s*$")
    if not name then return nil, "bad header" end
    req.header_list[#req.header_list + 1] = { name, value }
    local key = name:lower()
    req.headers[key] = req.headers[key] and (req.headers[key] .. ", " .. value) or value
  end
  req.length = tonumber(req.headers["content-length"] or "0") or 0
  return req
end

-- Sends 100 Continue when the client waits for it.
function M.continue(conn, req)
  if req.continued then return end
  req.continued = true
  if (req.headers.expect or ""):lower() == "100-continue" then
    conn:send("HTTP/1.1 100 Continue\r\n\r\n")
  end
end

-- Reads the whole body, keeping the first `keep` bytes and the last 1 KiB.
-- `stop_after` ends reading early (fault injection): returns false then.
function M.read_body(conn, req, keep, stop_after)
  if req.body_read then return true end
  M.continue(conn, req)
  local head, tail, got = {}, "", 0
  local head_len = 0
  while got < req.length do
    if stop_after and got >= stop_after then return false end
    local want = math.min(262144, req.length - got)
    if stop_after then want = math.min(want, stop_after - got) end
    local chunk = conn:read_some(want)
    if not chunk then return false end
    got = got + #chunk
    if head_len < keep then
      local piece = chunk:sub(1, keep - head_len)
      head[#head + 1] = piece
      head_len = head_len + #piece
    end
    tail = (tail .. chunk):sub(-1024)
  end
  req.body = table.concat(head)
  req.body_tail = tail
  req.body_complete = got <= keep
  req.body_read = true
  return true
end

local function parse_disposition(value)
  local out = {}
  for k, v in value:gmatch(';%s*([%w*]+)="([^"]*)"') do out[k] = v end
  for k, v in value:gmatch(';%s*([%w*]+)=([^";%s]+)') do out[k] = out[k] or v end
  return out
end

function M.parse_part_head(text)
  local headers = {}
  for line in (text .. "\r\n"):gmatch("(.-)\r\n") do
    local name, value = line:match("^([^:]+):%s*(.-)%s*$")
    if name then headers[name:lower()] = value end
  end
  local disp = parse_disposition(headers["content-disposition"] or "")
  return { headers = headers, name = disp.name, filename = disp.filename,
    filename_ext = disp["filename*"], content_type = headers["content-type"] }
end

-- Parts of a multipart body.  A body too big to keep is read from its kept
-- head and tail: the first part's headers, and its size from the total length.
function M.parse_multipart(req)
  local boundary = (req.headers["content-type"] or ""):match("boundary=\"?([^\";]+)\"?")
  if not boundary then return nil, "no boundary" end
  local delim = "--" .. boundary
  local body = req.body
  if body:sub(1, #delim + 2) ~= delim .. "\r\n" then return nil, "body does not start with the boundary" end
  local closing = "\r\n" .. delim .. "--\r\n"
  if not req.body_complete then
    if req.body_tail:sub(-#closing) ~= closing then return nil, "body does not end with the boundary" end
    local hend = body:find("\r\n\r\n", 1, true)
    if not hend then return nil, "part headers not found" end
    local part = M.parse_part_head(body:sub(#delim + 3, hend - 1))
    part.size = req.length - (hend + 3) - #closing
    part.data = body:sub(hend + 4, hend + 3 + 65536)
    return { part }
  end
  if body:sub(-#closing) ~= closing then return nil, "body does not end with the boundary" end
  local parts, pos = {}, #delim + 3
  while true do
    local hend = body:find("\r\n\r\n", pos, true)
    if not hend then return nil, "part headers not found" end
    local part = M.parse_part_head(body:sub(pos, hend - 1))
    local nexti = body:find("\r\n" .. delim, hend + 4, true)
    if not nexti then return nil, "part not terminated" end
    part.data = body:sub(hend + 4, nexti - 1)
    part.size = #part.data
    parts[#parts + 1] = part
    local after = body:sub(nexti + 2 + #delim, nexti + 3 + #delim)
    if after == "--" then break end
    if after ~= "\r\n" then return nil, "bad delimiter" end
    pos = nexti + 4 + #delim
  end
  return parts
end

-- Reads a multipart body as it arrives: small fields are collected, and the
-- bytes of a part with a filename go to on_file(part, bytes) piece by piece
-- (a 200 MiB chunk is never held).  Returns fields, the file part's head;
-- or nil, message (the rest of the body is still read).
function M.read_multipart_stream(conn, req, on_file, keep)
  M.continue(conn, req)
  keep = keep or 65536
  local boundary = (req.headers["content-type"] or ""):match("boundary=\"?([^\";]+)\"?")
  local left = req.length
  local buf = "\r\n" -- every delimiter is then CRLF "--" boundary
  local raw, raw_len = {}, 0 -- the body's first `keep` bytes, for the record
  local function more()
    if left <= 0 then return false end
    local chunk = conn:read_some(math.min(262144, left))
    if not chunk then return false end
    left = left - #chunk
    buf = buf .. chunk
    if raw_len < keep then
      raw[#raw + 1] = chunk:sub(1, keep - raw_len)
      raw_len = raw_len + #raw[#raw]
    end
    return true
  end
  local function finish(...)
    while left > 0 do
      local chunk = conn:read_some(math.min(262144, left))
      if not chunk then return nil, "closed" end
      left = left - #chunk
    end
    req.body_read = left == 0
    req.body = table.concat(raw)
    return ...
  end
  if not boundary then return finish(nil, "no boundary") end
  local delim = "\r\n--" .. boundary
  local fields, file = {}, nil
  while true do
    while #buf < #delim + 2 do if not more() then return finish(nil, "body ended early") end end
    if buf:sub(1, #delim) ~= delim then return finish(nil, "bad delimiter") end
    local after = buf:sub(#delim + 1, #delim + 2)
    if after == "--" then return finish(fields, file) end
    if after ~= "\r\n" then return finish(nil, "bad delimiter") end
    buf = buf:sub(#delim + 3)
    local hend = buf:find("\r\n\r\n", 1, true)
    while not hend do
      if #buf > 65536 or not more() then return finish(nil, "part headers not found") end
      hend = buf:find("\r\n\r\n", 1, true)
    end
    local part = M.parse_part_head(buf:sub(1, hend - 1))
    buf = buf:sub(hend + 4)
    local value, file_bytes = {}, 0
    while true do
      local i = buf:find(delim, 1, true)
      local take = i and i - 1 or math.max(0, #buf - #delim)
      if take > 0 then
        local piece = buf:sub(1, take)
        buf = buf:sub(take + 1)
        if part.filename then
          -- the first bytes are kept for the request record
          if file_bytes <= 4096 then value[#value + 1] = piece:sub(1, 4097 - file_bytes) end
          file_bytes = file_bytes + #piece
          on_file(part, piece)
        else
          value[#value + 1] = piece
        end
      end
      if i then break end
      if not more() then return finish(nil, "part not terminated") end
    end
    req.parts = req.parts or {}
    if part.filename then
      file = part
      part.data, part.size = file_bytes <= 4096 and table.concat(value) or nil, file_bytes
    else
      part.data = table.concat(value)
      part.size = #part.data
      fields[part.name or ""] = part.data
    end
    req.parts[#req.parts + 1] = part
  end
end

function M.response_head(status, headers, length, close)
  local lines = { ("HTTP/1.1 %d %s"):format(status, REASONS[status] or "Status") }
  for _, h in ipairs(headers or {}) do lines[#lines + 1] = h[1] .. ": " .. h[2] end
  if length then lines[#lines + 1] = "Content-Length: " .. length end
  lines[#lines + 1] = "Connection: " .. (close and "close" or "keep-alive")
  return table.concat(lines, "\r\n") .. "\r\n\r\n"
end

function M.respond(conn, status, headers, body, close)
  return conn:send(M.response_head(status, headers, #body, close) .. body)
end

return M
