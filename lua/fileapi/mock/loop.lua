-- A small coroutine scheduler over LuaSocket's select, so the mock serves
-- many connections at once: stalls, trickles and kept-alive connections never
-- block the admin requests a test makes meanwhile.
local socket = require "socket"
-- LuaSec, for a mock that serves HTTPS only (a probe: plain HTTP needs none)
local has_ssl, ssl_lib = pcall(require, "ssl")
local ssl = has_ssl and ssl_lib or nil

local M = {}

local waiting_read, waiting_write = {}, {}   -- socket -> coroutine
local sleepers = {}                          -- { co = , wake = }
local runnable = {}

function M.now() return socket.gettime() end

function M.spawn(fn, ...)
  local args = { n = select("#", ...), ... }
  local co = coroutine.create(function() return fn(table.unpack(args, 1, args.n)) end)
  runnable[#runnable + 1] = co
  return co
end

local function resume(co)
  local ok, err = coroutine.resume(co)
  if not ok then io.stderr:write("mock: ", tostring(err), "\n", debug.traceback(co), "\n") end
end

function M.sleep(seconds)
  sleepers[#sleepers + 1] = { co = coroutine.running(), wake = M.now() + seconds }
  coroutine.yield()
end

-- Waits until sock is readable (or writable); false when the deadline passed.
local function wait(set, sock, deadline)
  local co = coroutine.running()
  set[sock] = co
  local entry
  if deadline then
    entry = { co = co, wake = deadline, sock = sock, set = set }
    sleepers[#sleepers + 1] = entry
  end
  coroutine.yield()
  set[sock] = nil
  if entry then
    entry.cancelled = true
    return not entry.fired
  end
  return true
end

function M.wait_readable(sock, deadline) return wait(waiting_read, sock, deadline) end

-- Ends a wait for sock at once (its socket closed meanwhile, say): the
-- waiting coroutine runs again as if sock were ready.
function M.wake(sock)
  for _, set in ipairs({ waiting_read, waiting_write }) do
    local co = set[sock]
    if co then
      set[sock] = nil
      runnable[#runnable + 1] = co
    end
  end
end
function M.wait_writable(sock, deadline) return wait(waiting_write, sock, deadline) end

local function keys(set)
  local list = {}
  for s in pairs(set) do list[#list + 1] = s end
  return list
end

local function wake_sleepers(now)
  local keep = {}
  for _, s in ipairs(sleepers) do
    if s.cancelled then -- luacheck: ignore 542 (a socket wait that ended first)
    elseif s.wake <= now then
      if s.set then
        s.fired = true
        s.set[s.sock] = nil
      end
      runnable[#runnable + 1] = s.co
    else
      keep[#keep + 1] = s
    end
  end
  sleepers = keep
end

local function next_timeout(now)
  if #runnable > 0 then return 0 end
  local t = 1
  for _, s in ipairs(sleepers) do
    if not s.cancelled then t = math.min(t, math.max(0, s.wake - now)) end
  end
  return t
end

-- Runs until stop() says so; `tick` is called about once a second.
function M.run(stop, tick)
  local last_tick = M.now()
  while not stop() do
    local batch = runnable
    runnable = {}
    for _, co in ipairs(batch) do resume(co) end
    local now = M.now()
    local r, w = socket.select(keys(waiting_read), keys(waiting_write), next_timeout(now))
    for _, s in ipairs(r or {}) do
      local co = waiting_read[s]
      if co then waiting_read[s] = nil; resume(co) end
    end
    for _, s in ipairs(w or {}) do
      local co = waiting_write[s]
      if co then waiting_write[s] = nil; resume(co) end
    end
    now = M.now()
    wake_sleepers(now)
    if tick and now - last_tick >= 1 then
      last_tick = now
      tick()
    end
  end
end

-- A connection with a read buffer; every call may yield.
local Conn = {}
Conn.__index = Conn

function M.wrap(sock)
  sock:settimeout(0)
  if sock.setoption then sock:setoption("tcp-nodelay", true) end
  return setmetatable({ sock = sock, buf = "", closed = false }, Conn)
end

-- A server's TLS context (LuaSec) from PEM files.
function M.tls_context(cert, key)
  if not ssl then error("the mock serves HTTPS with LuaSec (Debian: lua-sec), which is not installed", 0) end
  return assert(ssl.newcontext({ mode = "server", protocol = "any", key = key, certificate = cert,
    options = { "all", "no_sslv2", "no_sslv3" } }))
end

-- Server side of TLS over a non-blocking socket (LuaSec); nil on failure.
function M.tls_accept(sock, ctx)
  sock:settimeout(0)
  sock:setoption("tcp-nodelay", true)
  local s = ssl.wrap(sock, ctx)
  if not s then return nil end
  s:settimeout(0)
  local deadline = M.now() + 5
  while true do
    local ok, err = s:dohandshake()
    if ok then return s end
    if err == "wantread" then
      if not M.wait_readable(s, deadline) then break end
    elseif err == "wantwrite" then
      if not M.wait_writable(s, deadline) then break end
    else
      break
    end
  end
  s:close()
  return nil
end

-- Pulls more bytes into the buffer; false when the peer closed or timed out.
function Conn:fill(deadline)
  while true do
    local data, err, partial = self.sock:receive(65536)
    data = data or partial
    if data and #data > 0 then
      self.buf = self.buf .. data
      return true
    end
    if err == "closed" then self.closed = true; return false end
    if err ~= "timeout" and err ~= "wantread" and err ~= "wantwrite" then return false end
    local waiter = err == "wantwrite" and M.wait_writable or M.wait_readable
    if not waiter(self.sock, deadline) then return false, "timeout" end
  end
end

function Conn:read_line(deadline)
  while true do
    local i = self.buf:find("\n", 1, true)
    if i then
      local line = self.buf:sub(1, i - 1):gsub("\r$", "")
      self.buf = self.buf:sub(i + 1)
      return line
    end
    if #self.buf > 65536 then return nil, "line too long" end
    local ok, err = self:fill(deadline)
    if not ok then return nil, err or "closed" end
  end
end

-- Up to max bytes, whatever is there (waits for at least one).
function Conn:read_some(max, deadline)
  if #self.buf == 0 then
    local ok, err = self:fill(deadline)
    if not ok then return nil, err or "closed" end
  end
  local chunk = self.buf:sub(1, max)
  self.buf = self.buf:sub(max + 1)
  return chunk
end

function Conn:send(data)
  local i = 1
  while i <= #data do
    local last, err, partial = self.sock:send(data, i)
    last = last or partial
    if err == "closed" then self.closed = true; return nil, "closed" end
    if err and err ~= "timeout" and err ~= "wantread" and err ~= "wantwrite" then return nil, err end
    if last and last >= i then i = last + 1 end
    if i <= #data then (err == "wantread" and M.wait_readable or M.wait_writable)(self.sock) end
  end
  return true
end

function Conn:close()
  if not self.closed then self.closed = true end
  self.sock:close()
end

return M
