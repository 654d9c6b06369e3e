-- The mock's process: both services on loopback, one coroutine per
-- connection (mock.loop).  fileapi.mock starts it in a process of its own:
--   require("fileapi.mock.server").run{ port_file = F, ... }
-- The API port answers MijnKlantportaal's API (/v1) and files.ro (/api/v1,
-- visitor and owner) and the admin paths (/_mock/, mock.admin); the manage
-- host (OAuth) and the storage host (download links) have ports of their
-- own.  When it listens it writes "PORT PID STORAGE_PORT OAUTH_PORT" to the
-- port file (or "error MESSAGE"), and it serves until /_mock/shutdown, a
-- SIGINT or SIGTERM (where fileapi.core loads), or its parent is gone.
-- State lives in memory; the uploads' bytes in a temporary folder removed
-- at the end.  Runs on Lua 5.3 or later (integers, bit operators).
local socket = require "socket"
local loop = require "fileapi.mock.loop"
local http = require "fileapi.mock.http"
local mkp = require "fileapi.mock.mkp"
local filesro = require "fileapi.mock.filesro"
local storage = require "fileapi.mock.storage"
local oauth = require "fileapi.mock.oauth"
local drive = require "fileapi.mock.drive"
local drive_routes = require "fileapi.mock.drive_sharing"
local faults = require "fileapi.mock.faults"
local admin = require "fileapi.mock.admin"
local accounts = require "fileapi.mock.accounts"
local proc = require "fileapi.mock.proc"
-- the interrupt flag (a probe: a mock on another Lua than the core's has none)
local has_core, core = pcall(require, "fileapi.core")

local M = {}

local function alive(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if f then f:close() end
  return f ~= nil
end

local state = { pid = proc.own_pid() }
local stop = false
-- the settings the mock was started with: a reset returns to them
local base_config = {}

local function reset()
  state.requests, state.faults, state.storage_faults = {}, {}, {}
  state.connections, state.api_requests, state.rejected = 0, 0, 0
  -- requests being answered at once: now, and at most, since the reset
  -- (those still running from before it count in the table they began in)
  state.flight = { now = 0, max = 0 }
  state.generation = (state.generation or 0) + 1
  state.rejected_at = {}
  state.keep = 1024 * 1024
  state.config = { keys = { [accounts.API_KEY] = true } }
  for k, v in pairs(base_config) do state.config[k] = v end
  mkp.reset(state)
  filesro.reset(state)
  drive.reset(state)
  oauth.reset(state)
end

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

-- ---- connections ----------------------------------------------------------

local next_conn = 0

-- The service's answer: status, headers, body, close (or "streamed").
local function service_answer(conn, req)
  -- files.ro's owner and visitor calls, one store; the rest MijnKlantportaal
  local app = req.path:find("^/api/v1/") and drive_routes or mkp
  local status, headers, body, close = app.handle(state, conn, req)
  if status and status ~= "streamed" then
    local has_type = false
    for _, h in ipairs(headers) do if h[1]:lower() == "content-type" then has_type = true end end
    if not has_type then headers[#headers + 1] = { "Content-Type", "application/json" } end
  end
  return status, headers, body, close
end

local function answer(conn, req, conn_id)
  local rec = record(conn_id, req)
  -- config.latency: seconds every API request waits before it is answered;
  -- one that a reset overtook meanwhile belongs to an earlier test: dropped
  if state.config.latency then
    local generation = state.generation
    loop.sleep(state.config.latency)
    if state.generation ~= generation then return false end
  end
  local f = faults.take(state, req)
  if f and f.type ~= "drop" then
    local keep = faults.play(conn, req, f, state.keep)
    if keep ~= nil then -- nil: a delay, then the usual answer
      complete_record(rec, req)
      return keep
    end
  end
  local status, headers, body, close = service_answer(conn, req)
  complete_record(rec, req)
  if status == "streamed" then return headers end -- the handler sent it; whole or not
  if not status then return false end
  if f and f.type == "drop" then
    faults.cut(conn, f, status, headers, body)
    return false
  end
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
  local f = faults.take(state, req)
  if f and f.type ~= "drop" then
    local keep = faults.play(conn, req, f, state.keep)
    if keep ~= nil then return keep end
  end
  local status, headers, body = oauth.handle(state, conn, req)
  complete_record(rec, req)
  if not status then return false end
  if f and f.type == "drop" then
    faults.cut(conn, f, status, headers, body)
    return false
  end
  http.respond(conn, status, headers, body, false)
  return true
end)

local tls_ctx
-- API connections waiting for their next request: a refusal closes them
local idle = {}
local control = { reset = reset, stop = function() stop = true end }

local function serve(sock)
  if tls_ctx then
    sock = loop.tls_accept(sock, tls_ctx)
    if not sock then return end
  end
  local conn = loop.wrap(sock)
  next_conn = next_conn + 1
  local conn_id, counted = next_conn, false
  while true do
    idle[conn] = true
    local req = http.read_request(conn)
    idle[conn] = nil
    if not req then break end
    if req.path:find("^/_mock/") then
      admin.handle(state, conn, req, control)
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

-- ---- listeners ------------------------------------------------------------

local function listen(port)
  local sock, err = socket.bind("127.0.0.1", port or 0)
  if not sock then return nil, ("port %d: %s"):format(port or 0, tostring(err)) end
  sock:settimeout(0)
  local _, bound = sock:getsockname()
  return { sock = sock, port = tonumber(bound) }
end

local function accept_loop(listener, handler)
  loop.spawn(function()
    while true do
      loop.wait_readable(listener.sock)
      local client = listener.sock:accept()
      if client then loop.spawn(handler, client) end
    end
  end)
end

-- The API port closed while state.refusing_until lasts, then bound again.
local function refuse_a_while(api)
  api.sock:close()
  while state.refusing_until and socket.gettime() < state.refusing_until do
    loop.sleep(state.refusing_until - socket.gettime())
  end
  state.refusing_until = nil
  for _ = 1, 200 do
    local again = listen(api.port)
    if again then
      api.sock = again.sock
      return
    end
    loop.sleep(0.05)
  end
  error("the mock could not listen on port " .. api.port .. " again")
end

local function accept_api(api)
  state.refuse = function()
    for conn in pairs(idle) do
      conn:close()
      loop.wake(conn.sock)
    end
    idle = {}
    loop.wake(api.sock)
  end
  loop.spawn(function()
    while true do
      if state.refusing_until then refuse_a_while(api) end
      loop.wait_readable(api.sock)
      local client = not state.refusing_until and api.sock:accept()
      if client then loop.spawn(serve, client) end
    end
  end)
end

local function write_atomically(path, text)
  local tmp = path .. ".tmp"
  local f = assert(io.open(tmp, "w"))
  f:write(text)
  f:close()
  os.rename(tmp, path)
end

-- The settings a start takes (fileapi.mock.start's): latency in seconds,
-- every service's rate limit (N requests per `rate_window` seconds).
local function start_config(opts)
  base_config.latency = opts.latency
  if opts.rate_limit then
    local window = opts.rate_window or 60
    base_config.rate_limit, base_config.rate_window = opts.rate_limit, window
    base_config.share_rate_limit, base_config.share_rate_window = opts.rate_limit, window
    base_config.drive_rate_limit, base_config.drive_rate_window = opts.rate_limit, window
  end
end

local function bind_all(opts)
  local api, why = listen(opts.port)
  local oauth_l, storage_l
  if api then oauth_l, why = listen(opts.oauth_port) end
  if oauth_l then storage_l, why = listen(opts.storage_port) end
  return api, oauth_l, storage_l, why
end

-- opts: port_file (required), port, oauth_port, storage_port (0 or
-- absent: free ones), parent (a pid: stop when it is gone), tls_cert and
-- tls_key (serve the API port over HTTPS), latency, rate_limit,
-- rate_window, max_seconds, signals (stop on SIGINT/SIGTERM).
-- Returns true when it stopped, false when it could not start.
function M.run(opts)
  start_config(opts)
  reset()
  if opts.tls_cert then tls_ctx = loop.tls_context(opts.tls_cert, opts.tls_key) end
  local api, oauth_l, storage_l, why = bind_all(opts)
  if not storage_l then
    write_atomically(opts.port_file, "error " .. why .. "\n")
    return false
  end
  state.storage_base = "http://127.0.0.1:" .. storage_l.port
  accept_api(api)
  accept_loop(storage_l, serve_storage)
  accept_loop(oauth_l, serve_oauth)
  if opts.signals and has_core then core.catch_interrupts() end
  write_atomically(opts.port_file, ("%d %s %d %d\n"):format(api.port, state.pid, storage_l.port, oauth_l.port))
  local started = os.time()
  loop.run(function() return stop or (opts.signals and has_core and core.interrupted()) end, function()
    if opts.parent and not alive(opts.parent) then stop = true end
    if opts.max_seconds and os.time() - started > opts.max_seconds then stop = true end
  end)
  api.sock:close()
  storage_l.sock:close()
  oauth_l.sock:close()
  if state.upload_dir then os.execute("rm -rf '" .. state.upload_dir .. "'") end
  return true
end

-- run(opts) in a process of its own: a failure to start is written to the
-- port file, where the starter reads it.  Returns the exit status.
function M.main(opts)
  local ok, result = pcall(M.run, opts)
  if ok then return result and 0 or 1 end
  pcall(write_atomically, opts.port_file, "error " .. tostring(result):gsub("\n", " ") .. "\n")
  io.stderr:write("fileapi mock: ", tostring(result), "\n")
  return 1
end

return M
