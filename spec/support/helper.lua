-- Test helpers: start and stop the mock on a free loopback port, talk to its
-- admin endpoints, run child Lua processes with this checkout's paths.
local socket = require "socket"
local cjson = require "cjson"
local mock_api = require "fileapi.mock"
local proc = require "fileapi.mock.proc"

local M = {}

local function script_dir()
  local src = debug.getinfo(1, "S").source:sub(2)
  return src:match("^(.*)/[^/]*$") or "."
end

local function absolute(dir)
  local p = assert(io.popen("cd '" .. dir:gsub("'", "'\\''") .. "' && pwd"))
  local path = p:read("*l")
  p:close()
  return path
end

M.support = absolute(script_dir())
M.root = absolute(M.support .. "/../..")
M.lua = os.getenv("LUA_BIN") or "lua5.4"
M.mock_lua = "lua5.4"
-- what the mock accepts (fileapi.mock.accounts): the API key, the files.ro
-- owner's token and sign-in, the OAuth application, an editor share
M.API_KEY = mock_api.API_KEY
M.DRIVE_TOKEN = mock_api.OWNER_TOKEN
M.DRIVE_EMAIL, M.DRIVE_PASSWORD = mock_api.OWNER_EMAIL, mock_api.OWNER_PASSWORD
M.OAUTH_CLIENT_ID, M.OAUTH_CLIENT_SECRET = mock_api.CLIENT_ID, mock_api.CLIENT_SECRET
M.EDITOR_SHARE = mock_api.EDITOR_SHARE

function M.pid()
  return io.open("/proc/self/stat"):read("*l"):match("^(%d+)")
end

function M.tmpname(suffix)
  local name = os.tmpname()
  os.remove(name)
  return name .. (suffix or "")
end

local function sh_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
M.sh_quote = sh_quote

-- The shell words that run the fileapi command with this checkout's paths.
M.FILEAPI = ("sh %s %s %s"):format(sh_quote(M.root .. "/tools/with-paths.sh"), M.lua, sh_quote(M.root .. "/bin/fileapi"))

-- env(1)'s words that set `env`'s variables, and `extra`'s over them.
function M.env_words(env, extra)
  local merged, parts = {}, {}
  for k, v in pairs(env or {}) do merged[k] = v end
  for k, v in pairs(extra or {}) do merged[k] = v end
  for k, v in pairs(merged) do parts[#parts + 1] = k .. "=" .. sh_quote(v) end
  table.sort(parts)
  return table.concat(parts, " ")
end

-- opts.tls = { cert = , key = } serves HTTPS; opts.port: that port (default: a free one).
-- Server pid files go where spec/run.sh can find them: it stops whatever
-- is left when the run ends, even if a spec died before its teardown.  A
-- file holds the id and the process's start time: ids come round on a
-- busy machine, and a server stopped long ago must not be taken for the
-- process (another suite's, a curl) that has its id now.
local function remember_pid(name, pid)
  local dir = os.getenv("FILEAPI_RUN_DIR")
  local since = pid and proc.start_time(pid)
  if not (dir and since) then return end
  local f = io.open(dir .. "/" .. name .. ".pid", "w")
  if f then f:write(pid, " ", since, "\n") f:close() end
end
M.remember_pid = remember_pid

-- The mock (fileapi.mock), on lua5.4 whatever Lua runs the suite; its
-- handle has the admin paths as methods (mock:faults{...}, mock:requests()).
function M.start_mock(opts)
  opts = opts or {}
  local mock = assert(mock_api.start({ port = opts.port, tls = opts.tls, lua = M.mock_lua,
    log = os.getenv("FILEAPI_MOCK_LOG"), max_seconds = 3600 }))
  remember_pid("mock-" .. mock.port, mock.pid)
  return mock
end

-- The rock as a user installs it: `luarocks make` of a copy of the checkout
-- into a fresh tree, once per run of the suite (the specs that use it share
-- it), under the run's folder (spec/run.sh removes it).  Returns { dir,
-- tree, lua_version, ok, log }; path() is the shell line that puts the
-- tree's modules on the paths (luarocks path), bin the tree's commands.
local rock
function M.installed_rock()
  if rock then return rock end
  local q = sh_quote
  local lua_version = (os.getenv("LUA_BIN") or "lua5.4"):match("lua(5%.%d)") or "5.1"
  local run_dir = os.getenv("FILEAPI_RUN_DIR")
  local dir = run_dir and (run_dir .. "/rock") or M.tmpname(".rock")
  -- what the rock's build reads (the Makefile's `rock` target runs tools/features.sh)
  assert(os.execute(("mkdir -p %s && cp -r %s %s %s %s %s %s %s"):format(q(dir), q(M.root .. "/lua"), q(M.root .. "/csrc"),
    q(M.root .. "/bin"), q(M.root .. "/tools"), q(M.root .. "/fileapi-0.1.0-1.rockspec"), q(M.root .. "/Makefile"), q(dir))))
  local code, log = M.run_sh(("cd %s && luarocks --lua-version=%s make --tree %s --deps-mode=none fileapi-0.1.0-1.rockspec")
    :format(q(dir), lua_version, q(dir .. "/tree")))
  rock = { dir = dir, tree = dir .. "/tree", bin = dir .. "/tree/bin", lua_version = lua_version, ok = code == 0,
    log = log }
  function rock.path()
    return ("eval \"$(luarocks --lua-version=%s --tree %s path)\""):format(lua_version, q(rock.tree))
  end
  return rock
end

-- A self-signed certificate for 127.0.0.1 and localhost, in dir.
function M.make_cert(dir, name)
  local cert, key = dir .. "/" .. name .. ".pem", dir .. "/" .. name .. ".key"
  assert(os.execute(("mkdir -p %s && openssl req -x509 -newkey rsa:2048 -nodes -keyout %s -out %s -days 2 "
    .. "-subj /CN=localhost -addext subjectAltName=IP:127.0.0.1,DNS:localhost >/dev/null 2>&1")
    :format(sh_quote(dir), sh_quote(key), sh_quote(cert))))
  return { cert = cert, key = key }
end

local Nginx = {}
Nginx.__index = Nginx

function Nginx:url(path) return self.base .. path end

-- The end of nginx's error log, for a failing spec's message.
function Nginx:log_tail(lines)
  local f = io.open(self.prefix .. "/error.log")
  if not f then return "" end
  local all = {}
  for line in f:lines() do all[#all + 1] = line end
  f:close()
  return table.concat(all, "\n", math.max(1, #all - (lines or 10) + 1))
end

function Nginx:stop()
  if self.stopped then return end
  self.stopped = true
  local f = io.open(self.prefix .. "/nginx.pid")
  if f then
    os.execute("kill " .. f:read("*l") .. " 2>/dev/null")
    f:close()
  end
  os.execute("sleep 0.3; rm -rf " .. sh_quote(self.prefix))
end

-- The `env` arguments that start nginx: the mock's addresses and
-- credentials, with opts.env's names set over them (false: unset).
local function nginx_env(mock, extra)
  local vars = { MKP_API_KEY = M.API_KEY, MKP_BASE_URL = mock.mkp_url, FILESRO_BASE_URL = mock.base,
    FILESRO_TOKEN = "editor-token", MKP_OAUTH_BASE_URL = mock.oauth_url, MKP_CLIENT_ID = M.OAUTH_CLIENT_ID,
    MKP_CLIENT_SECRET = M.OAUTH_CLIENT_SECRET }
  for k, v in pairs(extra or {}) do vars[k] = v end
  local unset, set = {}, {}
  for k, v in pairs(vars) do
    if v == false then unset[#unset + 1] = "-u " .. k else set[#set + 1] = k .. "=" .. sh_quote(v) end
  end
  table.sort(set)
  return table.concat(unset, " ") .. " " .. table.concat(set, " ")
end

-- nginx with the example config and handlers, fileapi copied beside them so
-- the workers (user nobody) can read everything, the API pointed at the mock.
-- opts.ca_file: what cosocket TLS trusts (default: Debian's CA bundle);
-- opts.env: environment variables set (or, false, unset) over the mock's;
-- opts.edit: a function given the config's text, returning the one to run.
function M.start_nginx(mock, opts)
  opts = opts or {}
  local q = sh_quote
  local prefix = M.tmpname(".nginx")
  local lib = prefix .. "/lib"
  local core = M.root .. "/build/luajit/fileapi/core.so"
  assert(io.open(core), "build the LuaJIT core first (make LUA=luajit build)")
  -- opts.conf and opts.handlers: another config template and the Lua files
  -- it needs (the specs' own; by default the example's)
  local handlers = opts.handlers or { M.root .. "/examples/nginx/fileapi_handlers.lua" }
  local copies = {}
  for i, h in ipairs(handlers) do copies[i] = q(h) end
  assert(os.execute(("mkdir -p %s && cp -r %s %s && cp %s %s && cp %s %s && chmod -R a+rX %s")
    :format(q(lib), q(M.root .. "/lua/fileapi"), q(lib .. "/"), q(core), q(lib .. "/fileapi/"),
      table.concat(copies, " "), q(lib .. "/"), q(prefix))))
  local port = M.closed_port()
  local conf = io.open(opts.conf or (M.root .. "/examples/nginx/nginx.conf")):read("*a")
    :gsub("@PREFIX@", prefix):gsub("@PORT@", tostring(port)):gsub("@LIB@", lib)
    :gsub("@CA_FILE@", opts.ca_file or "/etc/ssl/certs/ca-certificates.crt")
    :gsub("worker_processes 1;", "worker_processes " .. (opts.workers or 1) .. ";")
  if opts.edit then conf = opts.edit(conf) end
  local f = assert(io.open(prefix .. "/nginx.conf", "w"))
  f:write(conf)
  f:close()
  local cmd = ("env %s nginx -p %s -c %s -e %s >%s 2>&1"):format(nginx_env(mock, opts.env),
    q(prefix), q(prefix .. "/nginx.conf"), q(prefix .. "/error.log"), q(prefix .. "/start.log"))
  local ok = os.execute(cmd)
  local server = setmetatable({ prefix = prefix, port = port, base = "http://127.0.0.1:" .. port }, Nginx)
  if not (ok == true or ok == 0) then
    local log = io.open(prefix .. "/start.log"):read("*a")
    server:stop()
    error("nginx did not start: " .. log)
  end
  for _ = 1, 100 do
    local pf = io.open(prefix .. "/nginx.pid")
    if pf then
      remember_pid("nginx-" .. port, pf:read("*l"))
      pf:close()
      local c = socket.connect("127.0.0.1", port)
      if c then c:close() return server end
    end
    socket.sleep(0.05)
  end
  server:stop()
  error("nginx did not answer")
end

-- The JSON lines of a child's output (but a closing {"done":true}), and the
-- rest of its lines (what fileapi warned), joined.
function M.json_lines(text)
  local docs, other = {}, {}
  for line in text:gmatch("[^\n]+") do
    local ok, d = pcall(cjson.decode, line)
    if ok and type(d) == "table" then
      if not d.done then docs[#docs + 1] = d end
    else
      other[#other + 1] = line
    end
  end
  return docs, table.concat(other, "\n")
end

-- nginx with the specs' own config (spec/support/nginx/test.conf) and
-- handlers; opts as for start_nginx (workers, say).
function M.start_test_nginx(mock, opts)
  opts = opts or {}
  opts.conf = M.support .. "/nginx/test.conf"
  opts.handlers = { M.support .. "/test_handlers.lua", M.support .. "/conformance.lua", M.support .. "/causes.lua",
    M.support .. "/group_body.lua" }
  return M.start_nginx(mock, opts)
end

-- A POST of a JSON document to nginx; returns the decoded answer.
function M.post_json(url, doc, timeout)
  local http = require "socket.http"
  local ltn12 = require "ltn12"
  http.TIMEOUT = timeout or 30
  local payload = cjson.encode(doc)
  local out = {}
  local _, status = http.request({ url = url, method = "POST", source = ltn12.source.string(payload),
    sink = ltn12.sink.table(out),
    headers = { ["Content-Type"] = "application/json", ["Content-Length"] = #payload } })
  local body = table.concat(out)
  local ok, decoded = pcall(cjson.decode, body)
  if status ~= 200 or not ok then return nil, ("HTTP %s: %s"):format(tostring(status), body) end
  return decoded
end

-- A GET, timed; returns status, body, seconds.
function M.http_get(url, timeout)
  local http = require "socket.http"
  http.TIMEOUT = timeout or 10
  local t = socket.gettime()
  local body, status = http.request(url)
  return status, body, socket.gettime() - t
end

-- A MijnKlantportaal client of the mock with the test key: `opts` over
-- `defaults` over those two.
function M.mkp_client(mock, opts, defaults)
  local all = { api_key = M.API_KEY, base_url = mock.mkp_url }
  for k, v in pairs(defaults or {}) do all[k] = v end
  for k, v in pairs(opts or {}) do all[k] = v end
  return assert(require("fileapi.files").new(all))
end

-- The environment the examples and the command read, pointed at the mock.
function M.mock_env(mock)
  return { MKP_API_KEY = M.API_KEY, MKP_BASE_URL = mock.mkp_url, FILESRO_BASE_URL = mock.base,
    MKP_OAUTH_BASE_URL = mock.oauth_url, FILESRO_API_TOKEN = M.DRIVE_TOKEN }
end

-- A port with nothing listening: bind, read the number, close.
function M.closed_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return port
end

-- Runs a shell command; returns its exit status and its output (stdout and
-- stderr together).
function M.run_sh(cmd)
  local out = M.tmpname(".out")
  local ok, _, code = os.execute("{ " .. cmd .. "\n} >" .. sh_quote(out) .. " 2>&1")
  local f = io.open(out)
  local text = f and f:read("*a") or ""
  if f then f:close() end
  os.remove(out)
  if type(ok) == "number" then return math.floor(ok / 256), text end -- Lua 5.1: a wait status
  return ok == true and 0 or (code or 1), text
end

-- Runs a Lua file in a child process with this checkout's module paths and
-- the given environment (and working folder); returns its exit status and output.
function M.run_lua(script_args, env, cwd)
  return M.run_sh(((cwd and "cd " .. sh_quote(cwd) .. " && " or "") .. "env %s sh %s %s %s"):format(M.env_words(env),
    sh_quote(M.root .. "/tools/with-paths.sh"), M.lua, script_args))
end

-- Ctrl-C to a running script: SIGINT to `pid`, then its output file `out`
-- read until it holds an "exit N" line (10 s at most).  Returns the text
-- and the seconds from the signal to that line.
function M.interrupt(pid, out)
  local t = socket.gettime()
  os.execute("kill -INT " .. pid)
  local text = ""
  while socket.gettime() - t < 10 do
    text = M.read_file(out) or ""
    if text:find("exit %d+") then break end
    socket.sleep(0.02)
  end
  return text, socket.gettime() - t
end

-- What fileapi warned on stderr while fn ran (util.warn writes there outside
-- nginx), and fn's results; a raise in fn is the test's failure.
function M.warnings_of(fn)
  local saved, said = io.stderr, {}
  rawset(io, "stderr", { write = function(self, ...)
    for _, s in ipairs({ ... }) do said[#said + 1] = tostring(s) end
    return self
  end })
  local ok, a, b = pcall(fn)
  rawset(io, "stderr", saved)
  assert(ok, a)
  return table.concat(said), a, b
end

-- Runs the fileapi command with `args` (shell words), in a child process
-- with `env` and `extra` over it; returns its exit status and output.
function M.run_fileapi(args, env, extra, cwd)
  return M.run_sh(((cwd and "cd " .. sh_quote(cwd) .. " && " or "") .. "env %s %s %s"):format(M.env_words(env, extra),
    M.FILEAPI, args))
end

-- SHA-256 of a file, by sha256sum.
function M.sha256(path)
  local p = assert(io.popen("sha256sum " .. sh_quote(path) .. " 2>/dev/null"))
  local line = p:read("*l") or ""
  p:close()
  return line:match("^(%x+)")
end

-- SHA-256 of `size` bytes of the mock's pattern (what write_file writes).
local pattern_sums = {}
function M.sha256_of_pattern(size)
  if not pattern_sums[size] then
    local path = M.write_file(M.tmpname(".pattern"), size)
    pattern_sums[size] = M.sha256(path)
    os.remove(path)
  end
  return pattern_sums[size]
end

-- Polls fn until it gives a truthy value or `seconds` pass (a loaded
-- machine is slow: the bounds are generous, the polls short); returns that
-- value, or fn's answer at the deadline.
function M.wait_for(fn, seconds)
  local deadline = socket.gettime() + seconds
  repeat
    local v = fn()
    if v then return v end
    socket.sleep(0.05)
  until socket.gettime() > deadline
  return fn()
end

-- The first line of a file, or nil while it has none (a child still
-- writing its pid or exit status there).
function M.first_line(path)
  return (M.read_file(path) or ""):match("^([^\n]+)")
end

-- A file's text, or nil when there is none.
function M.read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local text = f:read("*a")
  f:close()
  return text
end

-- Writes text to path (mode: chmod's, as "755", when given); returns path.
function M.write_text(path, text, mode)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  if mode then assert(os.execute("chmod " .. mode .. " " .. sh_quote(path))) end
  return path
end

-- The mock's MijnKlantportaal items as relative paths under the directory
-- `top` (nil: the root): { file = { [path] = count }, directory = { ... } }.
function M.mkp_paths(mock, top)
  local items = mock:mkp_items()
  local by_id = {}
  for _, it in ipairs(items) do by_id[it.id] = it end
  local function path_of(it)
    local parts = { it.name }
    local parent = it.parent
    while parent and parent ~= top do
      local p = by_id[parent]
      if not p then return nil end
      table.insert(parts, 1, p.name)
      parent = p.parent
    end
    return table.concat(parts, "/")
  end
  local out = { file = {}, directory = {} }
  for _, it in ipairs(items) do
    local p = path_of(it)
    if p then out[it.type][p] = (out[it.type][p] or 0) + 1 end
  end
  return out
end

-- A small tree under root: 4 files at the top, folders d1 and d2 of 2 files
-- and subfolders s1 and s2 of `per_sub` files each (default 3); every file
-- name is unique.  Returns the files (relative path -> size) and the
-- folders (relative path -> true).
function M.small_tree(root, per_sub)
  local files, folders = {}, {}
  local function file(rel, size)
    M.write_file(root .. "/" .. rel, size)
    files[rel] = size
  end
  assert(os.execute("mkdir -p " .. sh_quote(root)))
  for i = 1, 4 do file(("top-%d.txt"):format(i), 100 + i) end
  for _, d in ipairs({ "d1", "d2" }) do
    folders[d] = true
    for _, s in ipairs({ "s1", "s2" }) do
      local sub = d .. "/" .. s
      assert(os.execute("mkdir -p " .. sh_quote(root .. "/" .. sub)))
      folders[sub] = true
      for i = 1, per_sub or 3 do file(("%s/%s-%s-%d.txt"):format(sub, d, s, i), 300 + i) end
    end
    for i = 1, 2 do file(("%s/%s-%d.txt"):format(d, d, i), 200 + i) end
  end
  return files, folders
end

-- A file of `size` bytes of a repeating pattern (default: hex digits).
function M.write_file(path, size, fill)
  local f = assert(io.open(path, "wb"))
  local chunk = (fill or "0123456789abcdef"):rep(65536):sub(1, 1024 * 1024)
  local left = size
  while left > 0 do
    local n = math.min(left, #chunk)
    f:write(chunk:sub(1, n))
    left = left - n
  end
  f:close()
  return path
end

-- Redis and a relay in front of it: M.start_redis, M.REDIS_DROPS,
-- M.start_forgetful_relay (a file of their own, for its length).
require("redis_helper")(M)

return M
