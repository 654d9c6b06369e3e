-- The local mock of both APIs, for the tests, the examples and `make demo`.
--   lua5.4 spec/support/mock.lua [--port N] [--port-file F] [--parent PID]
-- Listens on 127.0.0.1 (port 0: a free one), writes "PORT PID" to the port
-- file, and exits when told to, or when the parent process is gone.
-- Admin endpoints under /_mock/ let a test read what was sent, count TCP
-- connections and the requests answered at once, add latency, set a quota,
-- add shares and queue faults.
local here = arg[0]:match("^(.*)/[^/]*$") or "."
package.path = here .. "/../../?.lua;" .. package.path

local socket = require "socket"
local cjson = require "cjson"
local loop = require "fileapi.mock.loop"
local http = require "fileapi.mock.http"
local mkp = require "fileapi.mock.mkp"
local filesro = require "fileapi.mock.filesro"
local storage = require "fileapi.mock.storage"
local oauth = require "fileapi.mock.oauth"
local drive = require "fileapi.mock.drive"
local drive_routes = require "fileapi.mock.drive_sharing"

local opts = { port = 0 }
do
  local i = 1
  while arg[i] do
    local k, v = arg[i]:match("^%-%-([%w-]+)$"), arg[i + 1]
    if k == "port" then opts.port = tonumber(v)
    elseif k == "port-file" then opts.port_file = v
    elseif k == "parent" then opts.parent = v
    elseif k == "tls-cert" then opts.tls_cert = v
    elseif k == "tls-key" then opts.tls_key = v
    end
    i = i + 2
  end
end

math.randomseed(os.time() + math.floor(socket.gettime() * 1000) % 100000)

local state = {}
local stop = false

local function reset()
  state.requests, state.faults, state.storage_faults = {}, {}, {}
  state.connections, state.api_requests, state.rejected = 0, 0, 0
  -- requests being answered at once: now, and at most, since the reset
  -- (those still running from before it count in the table they began in)
  state.flight = { now = 0, max = 0 }
  state.generation = (state.generation or 0) + 1
  state.rejected_at = {}
  state.keep = 1024 * 1024
  state.config = { keys = { ["test-key"] = true }, quota = nil, rate_limit = nil }
  mkp.reset(state)
  filesro.reset(state)
  drive.reset(state)
  oauth.reset(state)
end
reset()

-- Recorded when the request arrives (a stalled one still counts at once);
-- the body and parts are filled in when the handler is done with them.
local function record(conn_id, req)
  state.api_requests = state.api_requests + 1
  local rec = {
    conn = conn_id, method = req.method, target = req.target, path = req.path,
    query = req.query, headers = req.headers, header_list = req.header_list,
    body = "", body_length = req.length, body_read = false, at = socket.gettime(),
  }
  state.requests[#state.requests + 1] = rec
  return rec
end

local function complete_record(rec, req)
  rec.body, rec.body_read = req.body or "", req.body_read or false
  if req.parts then
    rec.parts = {}
    for i, p in ipairs(req.parts) do
      rec.parts[i] = { name = p.name, filename = p.filename, filename_ext = p.filename_ext,
        content_type = p.content_type, size = p.size, headers = p.headers,
        data = p.data and #p.data <= 4096 and p.data or nil }
    end
  end
end

-- ---- faults ---------------------------------------------------------------

local function take_fault(req)
  for i, f in ipairs(state.faults) do
    local matches = not f.path or req.path:sub(1, #f.path) == f.path
    -- skip: let that many matching requests through first
    if matches and (f.skip or 0) > 0 then
      f.skip = f.skip - 1
      matches = false
    end
    if matches then
      f.count = (f.count or 1) - 1
      if f.count <= 0 then table.remove(state.faults, i) end
      return f
    end
  end
end

local function send_slowly(conn, data, interval)
  for i = 1, #data do
    if not conn:send(data:sub(i, i)) then return end
    loop.sleep(interval)
  end
end

-- The 16-byte pattern helper.write_file writes: a served file's bytes can be
-- checked against a file the test writes itself.
local PATTERN = "0123456789abcdef"
local BLOCK = PATTERN:rep(4096)

-- `count` bytes of the pattern starting at `offset`, in 64 KiB sends.
local function send_pattern(conn, offset, count)
  while count > 0 do
    local start = offset % 16
    local n = math.min(count, #BLOCK - start)
    if not conn:send(BLOCK:sub(start + 1, start + n)) then return false end
    offset, count = offset + n, count - n
  end
  return true
end

-- A scripted response: { send = "..." }, { pause = seconds },
-- { pattern = { offset, count } }; then the connection closes unless `keep`.
local function play_steps(conn, f)
  for _, step in ipairs(f.steps) do
    if step.send and not conn:send(step.send) then return false end
    if step.pause then loop.sleep(step.pause) end
    if step.pattern and not send_pattern(conn, math.floor(step.pattern[1]), math.floor(step.pattern[2])) then
      return false
    end
  end
  return f.keep == true
end

-- A download: `size` bytes of the pattern, with Range/If-Range when `ranges`;
-- `drop_at` closes the connection after that many body bytes.
local function play_file(conn, req, f)
  local size, first = math.floor(f.size), 0 -- JSON numbers arrive as floats
  local etag = f.etag or '"v1"'
  local range = req.headers.range
  local status, headers = 200, { { "Content-Type", "application/octet-stream" } }
  if f.ranges then
    headers[#headers + 1] = { "Accept-Ranges", "bytes" }
    headers[#headers + 1] = { "ETag", etag }
    local from = range and range:match("^bytes=(%d+)%-$")
    local if_range = req.headers["if-range"]
    if from and (not if_range or if_range == etag) and tonumber(from) < size then
      first = tonumber(from)
      status = 206
      headers[#headers + 1] = { "Content-Range", ("bytes %d-%d/%d"):format(first, size - 1, size) }
    end
  end
  conn:send(http.response_head(status, headers, size - first, false))
  local count = size - first
  if f.drop_at then count = math.min(count, math.floor(f.drop_at)) end
  if not send_pattern(conn, first, count) then return false end
  return count == size - first
end

-- Plays a fault; returns true to keep the connection open.
local function play(conn, req, f)
  local t = f.type
  if t == "delay" then
    loop.sleep(f.seconds or 1)
    return nil
  end
  if t == "drop_upload" then
    http.read_body(conn, req, state.keep, f.after or 65536)
    return false
  end
  if t ~= "stall_before_body" then http.read_body(conn, req, state.keep) end
  if t == "stall" or t == "stall_before_body" then
    loop.sleep(f.seconds or 30)
    return false
  elseif t == "status" then
    local headers = { { "Content-Type", f.content_type or "application/json" } }
    for k, v in pairs(f.headers or {}) do headers[#headers + 1] = { k, v } end
    local body = f.body or cjson.encode({ message = f.message or "fault" })
    http.respond(conn, f.status, headers, body, f.close)
    -- drop_after: says keep-alive, then closes (a stale pooled connection)
    return not (f.close or f.drop_after)
  elseif t == "steps" then
    return play_steps(conn, f)
  elseif t == "file" then
    return play_file(conn, req, f)
  elseif t == "raw" then
    conn:send(f.raw)
    if f.seconds then loop.sleep(f.seconds) end
    return false
  elseif t == "oversized" then
    local size = f.size or 2 * 1024 * 1024
    conn:send(http.response_head(201, { { "Content-Type", "application/json" } }, size, true))
    local chunk = ("x"):rep(65536)
    local sent = 0
    while sent < size do
      if not conn:send(chunk:sub(1, math.min(#chunk, size - sent))) then return false end
      sent = sent + #chunk
    end
    return false
  elseif t == "stall_response" then
    conn:send(http.response_head(201, { { "Content-Type", "application/json" } }, 200, false)
      .. '{"id":"fsf_')
    loop.sleep(f.seconds or 30)
    return false
  elseif t == "trickle" then
    local body = f.body or '{"id":"fsd_trickle0001","type":"directory","name":"slow"}'
    conn:send(http.response_head(f.status or 201, { { "Content-Type", "application/json" } }, #body, true))
    send_slowly(conn, body, f.interval or 1)
    return false
  end
  return false
end

-- ---- admin ----------------------------------------------------------------

local function admin(conn, req)
  http.read_body(conn, req, 16 * 1024 * 1024)
  local body = req.body ~= "" and cjson.decode(req.body) or {}
  local out = { ok = true }
  local p = req.path
  if p == "/_mock/requests" then
    out = state.requests
    if #out == 0 then out = cjson.empty_array or {} end
  elseif p == "/_mock/stats" then
    out = { connections = state.connections, requests = state.api_requests, chunks = state.chunks,
      rejected = state.rejected or 0, rejected_at = state.rejected_at or {},
      in_flight = state.flight.now, max_in_flight = state.flight.max,
      token_requests = state.oauth.token_requests, refreshes = state.oauth.refreshes,
      refresh_refused = state.oauth.refused, refresh_reused = state.oauth.reused }
  elseif p == "/_mock/reset" then
    reset()
  elseif p == "/_mock/config" then
    for k, v in pairs(body) do
      if k == "keys" then
        state.config.keys = {}
        for _, key in ipairs(v) do state.config.keys[key] = true end
      else
        state.config[k] = v
      end
    end
    for k, v in pairs(body) do if v == cjson.null then state.config[k] = nil end end
  elseif p == "/_mock/faults" then
    for _, f in ipairs(body) do state.faults[#state.faults + 1] = f end
  elseif p == "/_mock/shares" then
    out = { root_id = filesro.add_share(state, body) }
  elseif p == "/_mock/folders" then
    local f = state.folders[body.id]
    out = f and { id = f.id, name = f.name, parent_id = f.parent_id } or {}
  elseif p == "/_mock/storage_faults" then
    for _, f in ipairs(body) do state.storage_faults[#state.storage_faults + 1] = f end
  elseif p == "/_mock/mkp_file" then
    out = mkp.add_file(state, body)
  elseif p == "/_mock/seed" then
    out = mkp.seed(state, body)
  elseif p == "/_mock/mkp_items" then
    out = {}
    for _, it in pairs(state.items) do
      out[#out + 1] = { id = it.id, type = it.type, name = it.name, parent = it.parent, size = it.size }
    end
    if #out == 0 then out = cjson.empty_array or {} end
  elseif p == "/_mock/files" then
    out = {}
    for _, f in pairs(state.files) do out[#out + 1] = f end
    if #out == 0 then out = cjson.empty_array or {} end
  elseif p == "/_mock/drive_big_file" then
    out = drive.big_file(state, body)
  elseif p == "/_mock/drive_seed" then
    out = drive.seed(state, body)
  elseif p == "/_mock/drive" then
    out = drive.dump(state)
  elseif p == "/_mock/oauth_grant" then
    out = oauth.grant(state)
  elseif p == "/_mock/oauth_expire" then
    oauth.expire(state)
  elseif p == "/_mock/oauth_authorize" then
    out = state.oauth.last_authorize or {}
  elseif p == "/_mock/shutdown" then
    stop = true
  else
    http.respond(conn, 404, {}, "{}", true)
    return
  end
  http.respond(conn, 200, { { "Content-Type", "application/json" } }, cjson.encode(out), true)
end

-- ---- connections ----------------------------------------------------------

local next_conn = 0

local function answer(conn, req, conn_id)
  local rec = record(conn_id, req)
  -- config.latency: seconds every API request waits before it is answered;
  -- one that a reset overtook meanwhile belongs to an earlier test: dropped
  if state.config.latency then
    local generation = state.generation
    loop.sleep(state.config.latency)
    if state.generation ~= generation then return false end
  end
  local f = take_fault(req)
  if f then
    local keep = play(conn, req, f)
    if keep ~= nil then -- nil: a delay, then the usual answer
      complete_record(rec, req)
      return keep
    end
  end
  -- files.ro's owner and visitor calls, one store; the rest MijnKlantportaal
  local app = req.path:find("^/api/v1/") and drive_routes or mkp
  local status, headers, body, close = app.handle(state, conn, req)
  complete_record(rec, req)
  if status == "streamed" then return headers end -- the handler sent it; whole or not
  if not status then return false end
  local has_type = false
  for _, h in ipairs(headers) do if h[1]:lower() == "content-type" then has_type = true end end
  if not has_type then headers[#headers + 1] = { "Content-Type", "application/json" } end
  -- A body the client was told not to send (refused before 100 Continue)
  -- is still on its way: this connection cannot carry another request.
  close = close or not req.body_read or req.version == "1.0"
    or (req.headers.connection or ""):lower() == "close"
  http.respond(conn, status, headers, body, close)
  return not close
end

-- Answers one API request, counted among those in flight meanwhile.
local function dispatch(conn, req, conn_id)
  local flight = state.flight
  flight.now = flight.now + 1
  flight.max = math.max(flight.max, flight.now)
  local ok, keep = pcall(answer, conn, req, conn_id)
  flight.now = flight.now - 1
  if not ok then error(keep, 0) end
  return keep
end

local tls_ctx
if opts.tls_cert then
  local ssl = require "ssl"
  tls_ctx = assert(ssl.newcontext({ mode = "server", protocol = "any", key = opts.tls_key,
    certificate = opts.tls_cert, options = { "all", "no_sslv2", "no_sslv3" } }))
end

-- A side host's connections (the storage host's download links, the
-- manage host's OAuth), recorded with `mark` set; handle(conn, req, rec)
-- answers and says whether the connection stays open.
local function serve_side(mark, handle)
  return function(sock)
    local conn = loop.wrap(sock)
    next_conn = next_conn + 1
    local conn_id = next_conn
    while true do
      local req = http.read_request(conn)
      if not req then break end
      local rec = record(conn_id, req)
      rec[mark] = true
      if not handle(conn, req, rec) then break end
    end
    conn:close()
  end
end

local serve_storage = serve_side("storage", function(conn, req, rec)
  local keep = storage.handle(state, conn, req)
  complete_record(rec, req)
  return keep
end)

-- OAuth takes the queued faults too (a slow or failing token endpoint).
local serve_oauth = serve_side("manage", function(conn, req, rec)
  local f = take_fault(req)
  if f then
    local keep = play(conn, req, f)
    if keep ~= nil then return keep end
  end
  local status, headers, body = oauth.handle(state, conn, req)
  complete_record(rec, req)
  if not status then return false end
  http.respond(conn, status, headers, body, false)
  return true
end)

local function serve(sock)
  if tls_ctx then
    sock = loop.tls_accept(sock, tls_ctx)
    if not sock then return end
  end
  local conn = loop.wrap(sock)
  next_conn = next_conn + 1
  local conn_id, counted = next_conn, false
  while true do
    local req = http.read_request(conn)
    if not req then break end
    if req.path:find("^/_mock/") then
      admin(conn, req)
      break
    end
    if not counted then
      counted = true
      state.connections = state.connections + 1
    end
    if not dispatch(conn, req, conn_id) then break end
  end
  conn:close()
end

local server = assert(socket.bind("127.0.0.1", opts.port))
server:settimeout(0)
local _, port = server:getsockname()
local storage_server = assert(socket.bind("127.0.0.1", 0))
storage_server:settimeout(0)
local _, storage_port = storage_server:getsockname()
state.storage_base = "http://127.0.0.1:" .. storage_port
local oauth_server = assert(socket.bind("127.0.0.1", 0))
oauth_server:settimeout(0)
local _, oauth_port = oauth_server:getsockname()

local function accept_loop(listener, handler)
  loop.spawn(function()
    while true do
      loop.wait_readable(listener)
      local client = listener:accept()
      if client then loop.spawn(handler, client) end
    end
  end)
end
accept_loop(server, serve)
accept_loop(storage_server, serve_storage)
accept_loop(oauth_server, serve_oauth)

if opts.port_file then
  local tmp = opts.port_file .. ".tmp"
  local f = assert(io.open(tmp, "w"))
  local pid = io.open("/proc/self/stat"):read("*l"):match("^(%d+)")
  f:write(port, " ", pid, " ", storage_port, " ", oauth_port, "\n")
  f:close()
  os.rename(tmp, opts.port_file)
else
  print("mock listening on http://127.0.0.1:" .. port .. " (download links on port " .. storage_port
    .. ", OAuth on port " .. oauth_port .. ")")
  io.stdout:flush()
end

local started = os.time()
loop.run(function() return stop end, function()
  if opts.parent and not io.open("/proc/" .. opts.parent .. "/stat") then stop = true end
  if os.time() - started > 3600 then stop = true end
end)
server:close()
storage_server:close()
oauth_server:close()
if state.upload_dir then os.execute("rm -rf '" .. state.upload_dir .. "'") end
