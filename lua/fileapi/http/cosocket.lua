-- Requests over nginx cosockets (ngx.socket.tcp), for request handlers and
-- timers inside OpenResty/nginx, where a blocking libcurl call would freeze
-- every request on the worker.  It takes the same request table as the C
-- session's perform (checked by fileapi.http.request) and answers in the same
-- shape, so validation, the multipart body (the same C object, read in pull
-- mode), sinks, error mapping and the retry policy are shared with libcurl.
local core = require "fileapi.core"
local request = require "fileapi.http.request"
local options = require "fileapi.http.options"
local ngx_phase = require "fileapi.ngx_phase"

local M = {}

local ngx = rawget(_G, "ngx")
local tonumber, tostring, pcall, type = tonumber, tostring, pcall, type
local concat, min, floor, ceil = table.concat, math.min, math.floor, math.ceil

local POOL_SIZE, POOL_IDLE_MS = 32, 60000
-- 64 KiB pieces: larger strings cost more in allocation and page faults
-- than they save in calls (measured: a 256 KiB pull used twice the CPU).
local PIECE = 65536
-- ...sent eight at a time: one send(2) and one wake-up of the peer per
-- 512 KiB, as libcurl's upload buffer does.
local BATCH = 8 * PIECE
local MAX_HEADERS = 128 * 1024
local EXPECT_WAIT_MS = 1000
-- an absent max_response means the default, as in the C core (`missing`)
local MAX_RESPONSE = options.BY_NAME.max_response.default

-- Whether requests may go over cosockets here (fileapi.ngx_phase).
M.available = ngx_phase.cosockets_usable

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

-- nginx counts whole milliseconds: a shorter sleep would be a sleep(0),
-- which Debian's nginx (without OpenResty's delayed-events patch) warns of
-- in its error log at every call.
M.SHORTEST_SLEEP = 0.001

function M.sleep(seconds)
  ngx.sleep(seconds > M.SHORTEST_SLEEP and seconds or M.SHORTEST_SLEEP)
end

local function fail(kind, message, facts)
  local err = core.error({ kind = kind, message = message })
  -- what a callback raised, as raised; an io failure's system reason
  err.cause, err.errno, err.errno_name = facts.cause, facts.errno, facts.errno_name
  err.request_sent = facts.sent
  err.body_sent = facts.body_sent
  err.uploaded = facts.uploaded
  err.received = facts.received
  err.downloaded, err.reused = facts.downloaded, facts.reused
  err.status = facts.status
  err.partial = facts.partial
  return nil, err
end

local function parse_url(url)
  local scheme, authority, rest = url:match("^(https?)://([^/?#]+)(.*)$")
  if not scheme then return nil end
  local host, port = authority:match("^%[(.+)%]:?(%d*)$")
  if not host then host, port = authority:match("^([^:]+):?(%d*)$") end
  if not host then return nil end
  port = tonumber(port) or (scheme == "https" and 443 or 80)
  rest = rest:gsub("#.*$", "")
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

local function io_kind(err)
  return err == "timeout" and "timeout" or "network"
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
  if not ok then return nil, io_kind(err), "connect failed: " .. tostring(err) end
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
  local headers = creq.headers or {}
  for i = 1, #headers do lines[#lines + 1] = headers[i] end
  if length then lines[#lines + 1] = "Content-Length: " .. length end
  if creq.expect_continue then lines[#lines + 1] = "Expect: 100-continue" end
  return concat(lines, "\r\n") .. "\r\n\r\n"
end

-- A callback's raise: kept whole in facts (err.cause), named in the
-- message as the C core names it, in at most as many bytes.
local function describe(value)
  local ok, text = pcall(tostring, value)
  if not ok or type(text) ~= "string" then text = "(a " .. type(value) .. " that cannot be shown)" end
  return text:sub(1, 399)
end

local function raised(facts, what, value)
  facts.cause = value
  return "callback", what .. " raised: " .. describe(value)
end

-- `cancelled` says why the call must end (its client closed, its group
-- stopped), or nil.
local function stopped(creq)
  local why = creq.cancelled and creq.cancelled()
  if why then
    return "aborted", type(why) == "string" and why or "the client was closed by a callback during the call"
  end
end

local function report_upload(creq, facts, body, total)
  local progress = creq.on_progress
  if not progress then return end
  local sent = body and body:payload_at(facts.uploaded) or facts.uploaded
  if sent <= facts.reported then return end
  facts.reported = sent
  local ok, verdict = pcall(progress, sent, total)
  if not ok then return raised(facts, "on_progress", verdict) end
  if verdict == false then return "aborted", "the progress callback returned false" end
  return stopped(creq)
end

-- piece: a string, or a list of strings (nginx copies them into one buffer)
local function send_piece(sock, piece, length, facts, budget)
  local op_ms = budget()
  sock:settimeouts(op_ms, op_ms, op_ms)
  local ok, err = sock:send(piece)
  if not ok then return io_kind(err), "send failed: " .. tostring(err) end
  facts.uploaded = facts.uploaded + length
end

-- Sends the body; returns nil, or kind, message.
local function send_body(sock, creq, facts, budget)
  local body = creq.multipart
  if not body then
    local data = creq.body
    if not data then return nil end
    if data == "" then return report_upload(creq, facts, nil, 0) end
    local kind, message = send_piece(sock, data, #data, facts, budget)
    if kind then return kind, message end
    return report_upload(creq, facts, nil, #data)
  end
  local total = body:payload_length()
  local batch, batched = {}, 0
  local function flush()
    if batched == 0 then return nil end
    local kind, message = send_piece(sock, batch, batched, facts, budget)
    batch, batched = {}, 0
    if kind then return kind, message end
    return report_upload(creq, facts, body, total)
  end
  while true do
    local piece, reader = body:pull(PIECE)
    if piece == false then
      local kind, message = flush()
      if kind then return kind, message end
      -- a reader runs here, in this light thread: it may yield
      local ok, value = pcall(reader)
      if not ok then return raised(facts, "reader", value) end
      kind, message = stopped(creq)
      if kind then return kind, message end
      body:feed(value)
    elseif piece == nil then
      if reader then
        facts.errno, facts.errno_name, facts.cause = reader.errno, reader.errno_name, reader.cause
        return reader.kind, reader.message
      end
      local kind, message = flush()
      if kind then return kind, message end
      if facts.reported < total then return report_upload(creq, facts, body, total) end
      return nil
    else
      batch[#batch + 1] = piece
      batched = batched + #piece
      if batched >= BATCH then
        local kind, message = flush()
        if kind then return kind, message end
      end
    end
  end
end

-- The status line and header block; interim (1xx) answers are the caller's.
-- Returns status, headers, version ("1.0", "1.1").
local function read_head(sock, carry)
  local line, err, partial = sock:receive("*l")
  if not line then return nil, err, (carry or "") .. (partial or "") end
  line = (carry or "") .. line
  local version, code = line:match("^HTTP/(%d%.?%d?) (%d%d%d)")
  local status = tonumber(code)
  if not status then return nil, "bad status line" end
  local headers, size = {}, #line
  while true do
    local hline, herr = sock:receive("*l")
    if not hline then return nil, herr end
    if hline == "" or hline == "\r" then break end
    size = size + #hline
    if size > MAX_HEADERS then return nil, "the response headers are too large" end
    local name, value = hline:match("^([^:%s]+):%s*(.-)%s*$")
    if name then
      name = name:lower()
      headers[name] = headers[name] and (headers[name] .. ", " .. value) or value
    end
  end
  return status, headers, version
end

-- Where the body goes: memory (an error body, or no sink) or the sink.
local function body_target(creq, facts, status, headers)
  if not creq.sink then return { buffer = {}, got = 0, read = 0 } end
  local ok, mode, skip = pcall(creq.decide, status, headers)
  if not ok then return nil, raised(facts, "decide", mode) end
  if not mode then return nil, "protocol", tostring(skip or "the response cannot be used") end
  if mode ~= "sink" then return { buffer = {}, got = 0, read = 0 } end
  return { sink = creq.sink, skip = tonumber(skip) or 0, sunk = 0, read = 0, facts = facts }
end

local function deliver(creq, target, data, max)
  target.read = target.read + #data
  if target.buffer then
    target.got = target.got + #data
    if target.got > max then return "protocol", ("the response body is larger than %d bytes"):format(max) end
    target.buffer[#target.buffer + 1] = data
    return nil
  end
  if target.skip > 0 then
    if #data <= target.skip then
      target.skip = target.skip - #data
      return nil
    end
    data = data:sub(target.skip + 1)
    target.skip = 0
  end
  local sink = target.sink
  if type(sink) == "function" then
    local ok, written, why = pcall(sink, data)
    if not ok then return raised(target.facts, "the writer", written) end
    if not written then return "io", "the writer failed: " .. tostring(why or "(no message)") end
  else
    local written, why = sink:write(data)
    if not written then
      target.facts.errno, target.facts.errno_name = why.errno, why.errno_name
      return "io", why.message
    end
  end
  target.sunk = target.sunk + #data
  if creq.on_received then
    local ok, verdict = pcall(creq.on_received, target.sunk)
    if not ok then return raised(target.facts, "on_progress", verdict) end
    if verdict == false then return "aborted", "the progress callback returned false" end
  end
  return stopped(creq)
end

-- RFC 9112 9.3: an HTTP/1.1 connection stays open unless either side said
-- close; an HTTP/1.0 one only when the server said keep-alive.
local function persistent(version, connection)
  local tokens = (connection or ""):lower()
  if tokens:find("close", 1, true) then return false end
  if version == "1.1" then return true end
  return version == "1.0" and tokens:find("keep-alive", 1, true) ~= nil
end

-- Reads up to `left` bytes (nil: to the end of the connection) in pieces.
local function read_stream(sock, creq, target, left, max)
  while left == nil or left > 0 do
    local data, err = sock:receiveany(left and min(left, PIECE) or PIECE)
    if not data then
      if err == "closed" and left == nil then return nil, true end
      return "read", err
    end
    if left then left = left - #data end
    local kind, message = deliver(creq, target, data, max)
    if kind then return kind, message end
  end
  return nil
end

local function read_chunked(sock, creq, target, max)
  while true do
    local line, err = sock:receive("*l")
    if not line then return "read", err end
    local size = tonumber(line:match("^%s*(%x+)%s*[;\r]?") or "", 16)
    if not size or #line > 1024 then return "protocol", "bad chunk size line" end
    if size == 0 then
      repeat line, err = sock:receive("*l") until not line or line == "" or line == "\r"
      if not line then return "read", err end
      return nil
    end
    local kind, message = read_stream(sock, creq, target, size, max)
    if kind then return kind, message end
    local crlf
    crlf, err = sock:receive("*l")
    if not crlf then return "read", err end
    if crlf ~= "" and crlf ~= "\r" then return "protocol", "bad chunk terminator" end
  end
end

-- Returns kind, message on failure; nil, closed (true when the body ended
-- with the connection) on success.
local function read_body(sock, creq, method, status, headers, target, max)
  if request.has_no_body(method, status) then return nil, false end
  local te = headers["transfer-encoding"]
  if te then
    if te:lower():find("chunked%s*$") then return read_chunked(sock, creq, target, max) end
    return read_stream(sock, creq, target, nil, max)
  end
  local cl = headers["content-length"]
  if cl then
    local length = tonumber(cl:match("^%s*(%d+)%s*$"))
    if not length then return "protocol", "bad Content-Length" end
    if target.buffer and length > max then
      return "protocol", ("the response body is larger than %d bytes"):format(max)
    end
    return read_stream(sock, creq, target, length, max)
  end
  return read_stream(sock, creq, target, nil, max)
end

local function read_failure(err, whole, what)
  if err == "timeout" then return "timeout", timeout_message(what, whole) end
  if err == "closed" then
    if what == "waiting for the response" then
      return "network", "the server closed the connection without a response"
    end
    return "protocol", "the response body is incomplete: the connection closed"
  end
  if err == "bad status line" or tostring(err):find("too large") then return "protocol", tostring(err) end
  return "network", tostring(err)
end

-- The final response's head, after any interim (1xx) ones.
local function final_head(sock, facts, budget, carry)
  while true do
    local op_ms, whole = budget()
    sock:settimeouts(op_ms, op_ms, op_ms)
    local status, headers, partial = read_head(sock, carry)
    carry = nil
    if not status then
      local kind, message = read_failure(headers, whole, "waiting for the response")
      return nil, kind, message, partial
    end
    if status >= 200 or status == 101 then
      facts.status, facts.version = status, partial
      return status, headers
    end
  end
end

local function read_response(sock, creq, facts, budget, status, headers)
  local method = creq.method or "GET"
  local max = floor(creq.max_response or MAX_RESPONSE)
  local target, tkind, tmessage = body_target(creq, facts, status, headers)
  if not target then return nil, tkind, tmessage end
  local kind, message = read_body(sock, creq, method, status, headers, target, max)
  facts.received = target.sunk or 0
  facts.downloaded = target.read
  if kind == "read" then
    facts.partial = true
    local _, whole = budget()
    kind, message = read_failure(message, whole, "reading the response")
  end
  if kind then return nil, kind, message end
  local closed = message
  local keep = not closed and persistent(facts.version, headers.connection)
  local res = { status = status, headers = headers, body = target.buffer and concat(target.buffer) or "",
    sunk = target.sink ~= nil }
  return res, keep
end

-- Expect: 100-continue: wait briefly for the server's word before the body.
-- Returns "send" (go on), or the final status and headers it answered with.
local function await_continue(sock, facts, budget)
  local op_ms = budget()
  sock:settimeouts(op_ms, op_ms, min(op_ms, EXPECT_WAIT_MS))
  local status, headers, partial = read_head(sock)
  if status == 100 then return "send" end
  if status then
    if status < 200 and status ~= 101 then return "send" end
    facts.status, facts.version = status, partial
    return status, headers
  end
  if headers == "timeout" then return "send", nil, partial end
  return nil, read_failure(headers, false, "waiting for the response")
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
  facts.reused = reused
  local ok, err = sock:send(request_head(creq, authority, path, request.body_length(creq)))
  if not ok then
    sock:close()
    return nil, reused and "stale" or "network", "send failed: " .. tostring(err)
  end
  facts.sent = true
  facts.body_sent = request.body_length(creq) == nil
  local status, headers, carry
  if creq.expect_continue then
    local verdict, h, partial = await_continue(sock, facts, budget)
    if verdict == nil then
      sock:close()
      return nil, h, partial
    end
    if verdict ~= "send" then status, headers = verdict, h end
    carry = partial
  end
  if not status then
    kind, message = send_body(sock, creq, facts, budget)
    if kind and kind ~= "network" and kind ~= "timeout" then
      sock:close()
      return nil, kind, message
    end
    -- A server may answer before taking the whole body (a quota refusal,
    -- say): its answer, if it sent one, says more than the failed send.
    facts.body_sent = kind == nil
    local rkind, rmessage
    status, rkind, rmessage = final_head(sock, facts, budget, carry)
    if not status then
      sock:close()
      if kind then return nil, kind, message end
      return nil, rkind, rmessage
    end
    headers = rkind
  end
  local res, keep, rmessage = read_response(sock, creq, facts, budget, status, headers)
  if not res then
    sock:close()
    return nil, keep, rmessage
  end
  -- A body refused before it was sent leaves the connection out of step.
  if keep == true and facts.body_sent then
    sock:setkeepalive(POOL_IDLE_MS, POOL_SIZE)
  else
    sock:close()
  end
  return res
end

-- perform(request) -> response | nil, err, as session:perform does.
function M.perform(creq)
  request.check(creq)
  for try = 1, 2 do
    local facts = { sent = false, body_sent = false, uploaded = 0, received = 0, downloaded = 0, reused = false,
      reported = -1 }
    if creq.multipart and try > 1 then
      local ok, err = creq.multipart:restart()
      if not ok then return nil, err end
    end
    local res, kind, message = attempt(creq, facts, try > 1)
    if res then
      res.request_sent, res.body_sent, res.uploaded = true, facts.body_sent, facts.uploaded
      res.received, res.downloaded, res.reused = facts.received, facts.downloaded, facts.reused
      return res
    end
    if kind ~= "stale" then return fail(kind, message, facts) end
  end
  return fail("network", "the pooled connection was closed by the server", { sent = true })
end

return M
