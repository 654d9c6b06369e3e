-- A TCP relay in front of a Redis that forgets its connections the way a
-- firewall, a NAT or a proxy does: told to (a file <port-file>.forget
-- appears), it closes every relayed connection's Redis side at once and its
-- client side only when the client next sends, so that an idle client (a
-- connection in nginx's keep-alive pool) hears nothing until it tries.
--   lua5.4 spec/support/forgetful_relay.lua --to PORT --port-file F --parent PID
-- Writes "<port> <pid>" to the port file once it listens; exits when the
-- parent process is gone.
local socket = require "socket"

local opts = {}
for i = 1, #arg, 2 do opts[arg[i]:gsub("^%-%-", "")] = arg[i + 1] end
local to = assert(tonumber(opts.to), "--to PORT")

local listener = assert(socket.bind("127.0.0.1", 0))
listener:settimeout(0)
local _, port = listener:getsockname()
local f = assert(io.open(opts["port-file"] .. ".tmp", "w"))
f:write(port, " ", io.open("/proc/self/stat"):read("*l"):match("^(%d+)"), "\n")
f:close()
os.rename(opts["port-file"] .. ".tmp", opts["port-file"])
local forget_file = opts["port-file"] .. ".forget"

local pairs_of = {} -- socket -> { client =, redis =, forgotten = }

local function drop(p)
  for _, s in ipairs({ p.client, p.redis }) do
    if s then
      pairs_of[s] = nil
      s:close()
    end
  end
  p.client, p.redis = nil, nil
end

local function accept()
  local client = listener:accept()
  if not client then return end
  local redis = socket.connect("127.0.0.1", to)
  if not redis then
    client:close()
    return
  end
  client:settimeout(0)
  redis:settimeout(0)
  local p = { client = client, redis = redis }
  pairs_of[client], pairs_of[redis] = p, p
end

-- Everything that can be read from `from` now, sent on to `to`.
local function relay(p, from, to_sock)
  local data, err, partial = from:receive(65536)
  data = data or partial
  if p.forgotten and from == p.client then return drop(p) end
  if data and #data > 0 and to_sock then
    to_sock:settimeout(5)
    to_sock:send(data)
    to_sock:settimeout(0)
  end
  if err == "closed" then drop(p) end
end

local function forget_all()
  for s, p in pairs(pairs_of) do
    if s == p.redis then
      pairs_of[s] = nil
      s:close()
      p.redis, p.forgotten = nil, true
    end
  end
end

local last_check = socket.gettime()
while true do
  local readers = { listener }
  for s in pairs(pairs_of) do readers[#readers + 1] = s end
  local ready = socket.select(readers, nil, 0.05)
  for _, s in ipairs(ready or {}) do
    if s == listener then
      accept()
    else
      local p = pairs_of[s]
      if p then relay(p, s, s == p.client and p.redis or p.client) end
    end
  end
  if os.remove(forget_file) then forget_all() end
  if socket.gettime() - last_check > 1 then
    last_check = socket.gettime()
    if opts.parent and not io.open("/proc/" .. opts.parent .. "/stat") then break end
  end
end
