-- Requests over nginx cosockets (ngx.socket.tcp), for request handlers and
-- timers inside OpenResty/nginx, where a blocking libcurl call would freeze
-- every request on the worker.  It takes the same request table as the C
-- session's perform and answers in the same shape, so validation, the
-- multipart body (the same C object, read in pull mode), error mapping and
-- the retry policy are shared with the libcurl transport.
local core = require "fileapi.core"

local M = {}

local ngx = rawget(_G, "ngx")
local tonumber, tostring, pcall, type = tonumber, tostring, pcall, type
local concat, min, floor, ceil = table.concat, math.min, math.floor, math.ceil

-- Phases where cosockets and ngx.sleep may be used.
local YIELDING = { rewrite = true, access = true, content = true, timer = true,
  ssl_cert = true, ssl_session_fetch = true }

local POOL_SIZE, POOL_IDLE_MS = 32, 60000

function M.available()
  return type(ngx) == "table" and type(ngx.get_phase) == "function"
    and YIELDING[ngx.get_phase()] == true
end

local function is_ip(host)
  return host:find("^%d+%.%d+%.%d+%.%d+$") ~= nil or host:find(":", 1, true) ~= nil
end

-- nginx verifies a peer certificate against a host name only, never an IP
-- address: such https URLs are left to libcurl.
function M.can_verify(url)
  local scheme, host = url:match("^(https?)://%[?([^/?#%]]+)")
  if scheme ~= "https" or not host then return true end
  host = host:gsub(":%d+$", "")
  return not is_ip(host)
end

function M.sleep(seconds)
  ngx.sleep(seconds)
end

local function fail(kind, message, facts)
  local err = core.error({ kind = kind, message = message })
  err.request_sent = facts.sent
  err.body_sent = facts.body_sent
  err.uploaded = facts.uploaded
  err.status = facts.status
  return nil, err
end

local function parse_url(url)
  local scheme, authority, rest = url:match("^(https?)://([^/?#]+)(.*)$")
  if not scheme then return nil end
  local host, port = authority:match("^%[(.+)%]:?(%d*)$")
  if not host then host, port = authority:match("^([^:]+):?(%d*)$") end
  port = tonumber(port) or (scheme == "https" and 443 or 80)
  if rest == "" then rest = "/" end
  return scheme, host, port, rest, authority
end

-- The whole-attempt timeout caps each socket operation's idle timeout.
local function deadline_timer(creq)
  ngx.update_time()
  local started = ngx.now()
  local idle = (creq.idle_timeout and creq.idle_timeout > 0) and creq.idle_timeout or 3600
  local whole = (creq.timeout and creq.timeout > 0) and creq.timeout or nil
  -- nginx keeps time and socket timeouts in whole milliseconds: round up,
  -- and allow the one the clock may have cut, so no timeout fires early.
  return function()
    if not whole then return ceil(idle * 1000), false end
    ngx.update_time()
    local left = whole - (ngx.now() - started)
    if left <= 0 then return 1, true end
    return ceil(min(idle, left) * 1000) + 1, left < idle
  end
end

local function timeout_message(op, whole)
  return whole and ("operation timed out (timeout) while " .. op) or ("no data moved while " .. op .. " (idle_timeout)")
end

local function connect(creq, scheme, host, port, budget, fresh)
  local sock = ngx.socket.tcp()
  local connect_ms = (creq.connect_timeout and creq.connect_timeout > 0) and creq.connect_timeout * 1000 or 60000
  local op_ms = budget()
  sock:settimeouts(min(connect_ms, op_ms), op_ms, op_ms)
  -- a retry after a stale pooled connection must not draw another one
  local pool = scheme .. ":" .. host .. ":" .. port .. (fresh and ":fresh" or "")
  -- "localhost" is loopback by definition (RFC 6761); anything else goes to
  -- nginx's resolver, which needs the `resolver` directive.
  local address = host == "localhost" and "127.0.0.1" or host
  local ok, err = sock:connect(address, port, { pool = pool })
  if not ok then return nil, err == "timeout" and "timeout" or "network", "connect failed: " .. tostring(err) end
  if scheme == "https" and sock:getreusedtimes() == 0 then
    -- When the handshake completes at once and verification then fails,
    -- Debian's lua-resty-core raises an assertion instead of returning the
    -- error (lua-resty-core #499).  A raise here is that failed verification.
    -- The reused_session argument stays nil: false would make the same
    -- version return true and lose the verification error.
    local called
    called, ok, err = pcall(sock.sslhandshake, sock, nil, host, true)
    if not called then ok, err = nil, "certificate verification failed" end
    if not ok then
      sock:close()
      return nil, "tls", "TLS handshake failed: " .. tostring(err)
    end
  end
  return sock
end

local function request_head(creq, host_header, path, length)
  local lines = { (creq.method or "GET") .. " " .. path .. " HTTP/1.1", "Host: " .. host_header }
  if creq.user_agent then lines[#lines + 1] = "User-Agent: " .. creq.user_agent end
  for _, h in ipairs(creq.headers or {}) do lines[#lines + 1] = h end
  if length then lines[#lines + 1] = "Content-Length: " .. length end
  return concat(lines, "\r\n") .. "\r\n\r\n"
end

-- Sends the body; returns true, or nil, kind, message.
local function send_body(sock, creq, facts, budget)
  local body = creq.multipart
  if not body then
    if creq.body then
      local ok, err = sock:send(creq.body)
      if not ok then return nil, err == "timeout" and "timeout" or "network", "send failed: " .. tostring(err) end
      facts.uploaded = #creq.body
    end
    return true
  end
  local total, progress = body:length(), creq.on_progress
  while true do
    local chunk, part = body:pull(262144)
    if chunk == false then
      local reader = creq.readers and creq.readers[part]
      local ok, value = pcall(reader)
      if not ok then return nil, "callback", "reader raised: " .. tostring(value) end
      body:feed(value)
    elseif chunk == nil then
      if part then return nil, part.kind, part.message end
      return true
    else
      local op_ms = budget()
      sock:settimeouts(op_ms, op_ms, op_ms)
      local ok, err = sock:send(chunk)
      if not ok then return nil, err == "timeout" and "timeout" or "network", "send failed: " .. tostring(err) end
      facts.uploaded = facts.uploaded + #chunk
      if progress then
        local pok, verdict = pcall(progress, facts.uploaded, total)
        if not pok then return nil, "callback", "on_progress raised: " .. tostring(verdict) end
        if verdict == false then return nil, "aborted", "the progress callback returned false" end
      end
    end
  end
end

local function read_headers(sock)
  local status_line, err = sock:receive("*l")
  if not status_line then return nil, err end
  local status = tonumber(status_line:match("^HTTP/%d%.?%d? (%d%d%d)"))
  if not status then return nil, "bad status line" end
  local headers, size = {}, #status_line
  while true do
    local line, lerr = sock:receive("*l")
    if not line then return nil, lerr end
    if line == "" then break end
    size = size + #line
    if size > 65536 then return nil, "the response headers are too large" end
    local name, value = line:match("^([^:]+):%s*(.-)%s*$")
    if name then
      name = name:lower()
      headers[name] = headers[name] and (headers[name] .. ", " .. value) or value
    end
  end
  return status, headers
end

local function read_chunked(sock, max)
  local parts, got = {}, 0
  while true do
    local line, err = sock:receive("*l")
    if not line then return nil, err end
    local size = tonumber(line:match("^%x+"), 16)
    if not size then return nil, "bad chunk size" end
    if size == 0 then
      repeat line, err = sock:receive("*l") until not line or line == ""
      if not line then return nil, err end
      return concat(parts)
    end
    got = got + size
    if got > max then return nil, "too large" end
    local data, derr = sock:receive(size)
    if not data then return nil, derr end
    parts[#parts + 1] = data
    sock:receive(2)
  end
end

local function read_body(sock, headers, max)
  if (headers["transfer-encoding"] or ""):lower():find("chunked", 1, true) then return read_chunked(sock, max) end
  local length = tonumber(headers["content-length"])
  if length then
    if length > max then return nil, "too large" end
    if length == 0 then return "" end
    return sock:receive(length)
  end
  local parts, got = {}, 0
  while true do
    local data, err, partial = sock:receive(8192)
    data = data or partial
    if data and #data > 0 then
      got = got + #data
      if got > max then return nil, "too large" end
      parts[#parts + 1] = data
    end
    if err == "closed" then return concat(parts), nil, true end
    if err then return nil, err end
  end
end

local function read_response(sock, creq, facts, budget)
  local op_ms, whole = budget()
  sock:settimeouts(op_ms, op_ms, op_ms)
  local status, headers = read_headers(sock)
  while status == 100 do status, headers = read_headers(sock) end
  if not status then
    local err = headers
    if err == "timeout" then return nil, "timeout", timeout_message("waiting for the response", whole) end
    if err == "closed" then return nil, "network", "the server closed the connection without a response" end
    return nil, (err == "bad status line" or err:find("too large")) and "protocol" or "network", tostring(err)
  end
  facts.status = status
  local max = floor(creq.max_response or 1048576)
  local body, err, closed = read_body(sock, headers, max)
  if not body then
    if err == "too large" then return nil, "protocol", ("the response body is larger than %d bytes"):format(max) end
    if err == "timeout" then return nil, "timeout", timeout_message("reading the response", whole) end
    return nil, "protocol", "the response body is incomplete: " .. tostring(err)
  end
  local keep = not closed and (headers.connection or ""):lower() ~= "close"
  return { status = status, headers = headers, body = body }, keep
end

-- One attempt.  Returns the response, or nil, kind, message; kind "stale"
-- means a pooled connection could not even take the request line, so the
-- server cannot have acted.  Once a request is out, a connection closed
-- without an answer is an error, not a reason to send it again: a POST may
-- have created something.  (nginx drops pooled connections the peer closes
-- while they wait, which covers the usual stale case.)
local function attempt(creq, facts, fresh)
  local scheme, host, port, path, authority = parse_url(creq.url)
  if not scheme then return nil, "invalid_argument", "not an http(s) URL" end
  local budget = deadline_timer(creq)
  local sock, kind, message = connect(creq, scheme, host, port, budget, fresh)
  if not sock then return nil, kind, message end
  local reused = sock:getreusedtimes() > 0
  local length = creq.multipart and creq.multipart:length() or (creq.body and #creq.body) or nil
  local ok, err = sock:send(request_head(creq, authority, path, length))
  if not ok then
    sock:close()
    return nil, reused and "stale" or "network", "send failed: " .. tostring(err)
  end
  facts.sent = true
  ok, kind, message = send_body(sock, creq, facts, budget)
  if not ok and kind ~= "network" then
    sock:close()
    return nil, kind, message
  end
  -- A server may answer before taking the whole body (a quota refusal, say):
  -- its answer, if it sent one, says more than the failed send.
  facts.body_sent = ok == true
  local res, rkind, rmessage = read_response(sock, creq, facts, budget)
  if not res then
    sock:close()
    if not ok then return nil, kind, message end
    return nil, rkind, rmessage
  end
  if rkind then sock:setkeepalive(POOL_IDLE_MS, POOL_SIZE) else sock:close() end
  return res
end

-- perform(request) -> response | nil, err, as session:perform does.
function M.perform(creq)
  for try = 1, 2 do
    local facts = { sent = false, body_sent = false, uploaded = 0 }
    if creq.multipart and try > 1 then
      local ok, err = creq.multipart:rewind()
      if not ok then return nil, err end
    end
    local res, kind, message = attempt(creq, facts, try > 1)
    if res then
      res.request_sent, res.body_sent, res.uploaded = true, facts.body_sent, facts.uploaded
      return res
    end
    if kind ~= "stale" then return fail(kind, message, facts) end
  end
  return fail("network", "the pooled connection was closed by the server", { sent = true })
end

return M
