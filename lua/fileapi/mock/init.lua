-- `require "fileapi.mock"`: the mock of both services for a program's own
-- tests (docs/testing.md), and what `fileapi mock` runs.
--   local mock = require "fileapi.mock"
--   local server = assert(mock.start{ latency = 0.05, rate_limit = 5, rate_window = 2 })
--   server.env.MKP_BASE_URL ... server:faults{ { type = "status", status = 503, retry_after = 1 } }
--   server:stop()
-- start() runs the mock (fileapi.mock.server) in a process of its own, on
-- loopback, and returns a handle: its URLs, the variables a client reads,
-- and the admin paths as methods.  from_env() is a handle on a mock that
-- `fileapi mock` started, from the variables it printed.  This module runs
-- on any Lua (5.1 and LuaJIT too); the mock's process needs Lua 5.3 or
-- later, and starts on lua5.4 (or lua5.3) when this Lua is older.
local socket = require "socket"
local cjson = require "cjson"
local accounts = require "fileapi.mock.accounts"
local proc = require "fileapi.mock.proc"
-- LuaSec: only to reach a mock that serves HTTPS (a probe)
local has_ssl, ssl_lib = pcall(require, "ssl")
local ssl = has_ssl and ssl_lib or nil

local M = {}

-- what the mock's process runs, after its module paths are set
local SERVE = "os.exit(require('fileapi.mock.server').main(%s))"

for _, name in ipairs({ "API_KEY", "CLIENT_ID", "CLIENT_SECRET", "EDITOR_SHARE", "OWNER_TOKEN", "OWNER_EMAIL",
    "OWNER_PASSWORD" }) do
  M[name] = accounts[name]
end


-- os.execute's success, as Lua 5.1 (a status) and 5.2+ (true) say it.
local function succeeded(r) return r == true or r == 0 end



local quote, read_command, own_pid, running = proc.quote, proc.read_command, proc.own_pid, proc.running

local function wait_gone(pid, since, seconds)
  local deadline = socket.gettime() + seconds
  while running(pid, since) and socket.gettime() < deadline do socket.sleep(0.05) end
  return not running(pid, since)
end

-- The folder this module's tree starts at (…/lua, or a rock's share/lua/5.x).
local function lua_root()
  local src = debug.getinfo(1, "S").source:gsub("^@", "")
  -- a checkout has fileapi/mock/init.lua; a rock installs it as fileapi/mock.lua
  local root = src:match("^(.*)/fileapi/mock/init%.lua$") or src:match("^(.*)/fileapi/mock%.lua$") or "."
  if root:sub(1, 1) ~= "/" then root = (read_command("pwd") or ".") .. "/" .. root end
  return root
end

-- The interpreter the mock runs on, and whether it is this process's own
-- (then it gets this process's module paths, the C modules included).
local function interpreter(wanted)
  local own = proc.own_exe()
  local function resolve(name)
    return read_command(("p=$(command -v %s) && readlink -f \"$p\""):format(quote(name)))
  end
  if wanted then
    local path = resolve(wanted)
    if not path then return nil, "no Lua interpreter named " .. wanted end
    return wanted, path == own
  end
  if _VERSION >= "Lua 5.3" and not rawget(_G, "jit") and own then return own, true end
  for _, name in ipairs({ "lua5.4", "lua5.3" }) do
    if resolve(name) then return name, false end
  end
  return nil, "the mock runs on Lua 5.3 or later, and neither lua5.4 nor lua5.3 is installed"
end

-- A Lua table constructor for the server's options (strings, numbers, booleans).
local function serialize(t)
  local parts = {}
  for k, v in pairs(t) do
    local value = type(v) == "string" and ("%q"):format(v) or type(v) == "number" and ("%.17g"):format(v)
      or tostring(v)
    parts[#parts + 1] = k .. "=" .. value
  end
  table.sort(parts)
  return "{" .. table.concat(parts, ",") .. "}"
end

-- ---- the handle ---------------------------------------------------------------

local Mock = {}
Mock.__index = Mock

local function connect(self)
  local deadline = socket.gettime() + self.admin_wait
  while true do
    local c, err = socket.connect("127.0.0.1", self.port)
    -- a refuse fault closes the port for a while: the admin paths wait it out
    if c or err ~= "connection refused" or socket.gettime() > deadline then return c, err end
    socket.sleep(0.05)
  end
end

-- One admin call (the mock closes the connection after answering); raises
-- unless the mock answers 200: a test's set-up went wrong.
function Mock:admin(method, path, body)
  local payload = body and cjson.encode(body) or ""
  local c, err = connect(self)
  if not c then error(("mock admin %s: %s"):format(path, tostring(err)), 2) end
  c:settimeout(30)
  if self.base:find("^https") then
    if not ssl then error("the mock serves HTTPS: its admin paths need LuaSec (Debian: lua-sec)", 2) end
    c = assert(ssl.wrap(c, { mode = "client", protocol = "any", verify = "none" }))
    assert(c:dohandshake())
  end
  c:send(("%s %s HTTP/1.1\r\nHost: mock\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s")
    :format(method, path, #payload, payload))
  local resp = c:receive("*a") or ""
  c:close()
  local status, rest = resp:match("^HTTP/1%.1 (%d+).-\r\n\r\n(.*)$")
  if status ~= "200" then
    error(("mock admin %s answered %s: %s"):format(path, tostring(status), tostring(rest)), 2)
  end
  return cjson.decode(rest)
end

-- The admin paths (docs/internals/mock.md has them all).
function Mock:faults(list) return self:admin("POST", "/_mock/faults", list) end
function Mock:config(t) return self:admin("POST", "/_mock/config", t) end
function Mock:reset() return self:admin("POST", "/_mock/reset") end
function Mock:requests() return self:admin("GET", "/_mock/requests") end
function Mock:stats() return self:admin("GET", "/_mock/stats") end
function Mock:add_share(t) return self:admin("POST", "/_mock/shares", t).root_id end
function Mock:folder(id) return self:admin("POST", "/_mock/folders", { id = id }) end
function Mock:files() return self:admin("GET", "/_mock/files") end
function Mock:mkp_items() return self:admin("GET", "/_mock/mkp_items") end
function Mock:storage_faults(list) return self:admin("POST", "/_mock/storage_faults", list) end
-- A file of the Files API whose bytes are the local file at `path`.
function Mock:add_mkp_file(t) return self:admin("POST", "/_mock/mkp_file", t) end
function Mock:seed(t) return self:admin("POST", "/_mock/seed", t) end
function Mock:oauth_grant() return self:admin("POST", "/_mock/oauth_grant") end
-- Every access token the mock gave so far lapses at once.
function Mock:oauth_expire() return self:admin("POST", "/_mock/oauth_expire") end
function Mock:oauth_authorize() return self:admin("GET", "/_mock/oauth_authorize") end
-- files.ro's owner side: a sparse file of zeros, seeded team folders, and
-- what the owner routes recorded (mails, shares, remote URLs, zips).
function Mock:drive_big_file(t) return self:admin("POST", "/_mock/drive_big_file", t).id end
function Mock:drive_seed(t) return self:admin("POST", "/_mock/drive_seed", t).ids end
function Mock:drive() return self:admin("GET", "/_mock/drive") end

function Mock:last_request()
  local reqs = self:requests()
  return reqs[#reqs]
end

-- The variables as `export NAME=value` lines a shell can eval.
function Mock:exports()
  return accounts.export_lines(self.variables)
end

-- Stops the mock and waits until its process is gone (its ports closed).
function Mock:stop()
  if self.stopped then return true end
  self.stopped = true
  -- (the process as it was when this handle was made: not another given its id since)
  local pid, since = self.pid, self.since
  if self.stop_by_signal and pid then
    proc.signal(pid, "TERM", since)
  else
    pcall(self.admin, self, "POST", "/_mock/shutdown")
  end
  if pid and not wait_gone(pid, since, 10) then
    proc.signal(pid, "TERM", since)
    if not wait_gone(pid, since, 5) then proc.signal(pid, "KILL", since) end
  end
  return true
end

local function handle(fields)
  local self = setmetatable(fields, Mock)
  self.since = self.pid and proc.start_time(self.pid)
  self.mkp_url = self.base .. "/v1"
  self.variables = accounts.variables(self.base, self.oauth_url)
  self.env = {}
  for _, v in ipairs(self.variables) do self.env[v[1]] = v[2] end
  self.admin_wait = self.admin_wait or 30
  return self
end

-- ---- start ----------------------------------------------------------------------

local function check_opts(opts)
  if type(opts) ~= "table" then error("mock.start: opts must be a table", 3) end
  for _, k in ipairs({ "port", "latency", "rate_limit", "rate_window", "max_seconds", "wait" }) do
    if opts[k] ~= nil and type(opts[k]) ~= "number" then error("mock.start: " .. k .. " must be a number", 3) end
  end
  for _, k in ipairs({ "lua", "log" }) do
    if opts[k] ~= nil and type(opts[k]) ~= "string" and not (k == "log" and opts[k] == true) then
      error("mock.start: " .. k .. " must be a string", 3)
    end
  end
  if opts.tls ~= nil and (type(opts.tls) ~= "table" or type(opts.tls.cert) ~= "string"
      or type(opts.tls.key) ~= "string") then
    error("mock.start: tls must be { cert = PATH, key = PATH }", 3)
  end
end

-- The server's options and the shell command that starts its process.
local function command(opts, port_file)
  local lua, same = interpreter(opts.lua)
  if not lua then return nil, same end
  local port = opts.port and opts.port > 0 and math.floor(opts.port) or nil
  local server_opts = { port_file = port_file, port = port, oauth_port = port and port + 1,
    storage_port = port and port + 2, parent = not opts.detach and own_pid() or nil, latency = opts.latency,
    rate_limit = opts.rate_limit, rate_window = opts.rate_window, max_seconds = opts.max_seconds,
    tls_cert = opts.tls and opts.tls.cert, tls_key = opts.tls and opts.tls.key, signals = same }
  local root = lua_root()
  local paths = ("package.path = %q .. %s\n"):format(root .. "/?.lua;" .. root .. "/?/init.lua;",
    same and ("%q"):format(package.path) or "package.path")
  if same then paths = paths .. ("package.cpath = %q\n"):format(package.cpath) end
  local code = paths .. SERVE:format(serialize(server_opts))
  local out = opts.log == true and "" or (" >>%s 2>&1"):format(quote(opts.log or "/dev/null"))
  -- a session of its own when detached; and on another Lua, which cannot
  -- catch a terminal's Ctrl-C (it would die saying "interrupted!"): then
  -- this process stops it, or it stops when this process is gone
  local own_session = opts.detach or not same
  local detach = own_session and succeeded(os.execute("command -v setsid >/dev/null 2>&1")) and "setsid " or ""
  -- on another Lua than this process's, the unversioned LUA_PATH and
  -- LUA_CPATH are this Lua's (a 5.1 tree's C modules would not load)
  local clear = same and "" or "env -u LUA_PATH -u LUA_CPATH "
  return ("%s%s%s -e %s </dev/null%s &"):format(detach, clear, quote(lua), quote(code), out)
end

local function read_port_file(path)
  local f = io.open(path)
  if not f then return nil end
  local line = f:read("*l")
  f:close()
  return line
end

--- mock.start(opts) -> a handle on a running mock, or nil, message
-- opts: port (the API port; 0 or absent: a free one; the manage host then
-- on port + 1 and the storage host on port + 2), latency (seconds every
-- API answer waits), rate_limit and rate_window (N requests per so many
-- seconds, for every service), tls = { cert, key } (HTTPS on the API
-- port; needs LuaSec), log (a file for the mock's messages; true: this
-- process's stderr), lua (the interpreter), detach (outlives this process;
-- else it stops when this process is gone), wait (seconds to wait for it
-- to listen, default 30).
function M.start(opts)
  opts = opts or {}
  check_opts(opts)
  local port_file = os.tmpname()
  os.remove(port_file)
  local cmd, why = command(opts, port_file)
  if not cmd then return nil, why end
  os.execute(cmd)
  local deadline = socket.gettime() + (opts.wait or 30)
  local line = read_port_file(port_file)
  while not line and socket.gettime() < deadline do
    socket.sleep(0.05)
    line = read_port_file(port_file)
  end
  os.remove(port_file)
  if not line then return nil, ("the mock did not start within %g s"):format(opts.wait or 30) end
  local port, pid, storage_port, oauth_port = line:match("^(%d+) (%d+) (%d+) (%d+)$")
  if not port then return nil, "the mock could not start: " .. (line:match("^error (.*)$") or line) end
  return handle({ port = tonumber(port), pid = pid, storage_port = tonumber(storage_port),
    oauth_port = tonumber(oauth_port), base = (opts.tls and "https" or "http") .. "://127.0.0.1:" .. port,
    oauth_url = "http://127.0.0.1:" .. oauth_port })
end

--- mock.from_env([getenv]) -> a handle on the mock whose variables are set
-- (`eval "$(fileapi mock --daemon)"`), or nil, message; its stop() ends
-- the process FILEAPI_MOCK_PID names.
function M.from_env(getenv)
  getenv = getenv or os.getenv
  local base, oauth = getenv("FILESRO_BASE_URL"), getenv("MKP_OAUTH_BASE_URL")
  local port = base and base:match("^https?://127%.0%.0%.1:(%d+)$")
  if not port or not oauth then return nil, "no mock's variables (FILESRO_BASE_URL, MKP_OAUTH_BASE_URL) are set" end
  return handle({ port = tonumber(port), base = base, oauth_url = oauth, pid = getenv("FILEAPI_MOCK_PID"),
    stop_by_signal = true })
end

return M
