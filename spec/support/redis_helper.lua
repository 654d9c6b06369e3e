-- The specs' Redis: a real redis-server on a free loopback port
-- (start_redis), the ways it drops a client (REDIS_DROPS), and a relay in
-- front of it that forgets connections (start_forgetful_relay).  They use
-- spec/support/helper.lua's helpers and join its table (a file of their
-- own for the length): require("redis_helper")(helper).
local socket = require "socket"
local proc = require "fileapi.mock.proc"

local H -- helper's table, once installed

-- A real Redis (Debian's redis-server) on a free loopback port, with no
-- persistence; stopped by :stop(), or by spec/run.sh if a spec dies first.
local Redis = {}
Redis.__index = Redis

function Redis:url(db) return ("redis://127.0.0.1:%d/%d"):format(self.port, db or 0) end

-- redis-cli's answer to one command (its arguments given as a list).
function Redis:cli(args)
  local parts = {}
  for i, a in ipairs(args) do parts[i] = H.sh_quote(tostring(a)) end
  local p = assert(io.popen(("redis-cli -p %d %s%s 2>&1"):format(self.port,
    self.password and ("-a " .. H.sh_quote(self.password) .. " --no-auth-warning ") or "", table.concat(parts, " "))))
  local out = p:read("*a")
  p:close()
  return (out:gsub("%s+$", ""))
end

function Redis:pid()
  local f = io.open(self.dir .. "/redis.pid")
  if not f then return nil end
  local pid = f:read("*l")
  f:close()
  return pid
end

function Redis:signal(name)
  local pid = self:pid()
  if pid then os.execute(("kill -%s %s 2>/dev/null"):format(name, pid)) end
end

function Redis:start()
  assert(os.execute(("redis-server --port %d --bind 127.0.0.1 --save '' --appendonly no --daemonize yes"
    .. " --pidfile %s --logfile %s --dir %s%s%s"):format(self.port, H.sh_quote(self.dir .. "/redis.pid"),
    H.sh_quote(self.dir .. "/redis.log"), H.sh_quote(self.dir),
    self.password and (" --requirepass " .. H.sh_quote(self.password)) or "", self.args)))
  for _ = 1, 100 do
    local pid = self:pid()
    if pid then
      H.remember_pid("redis-" .. self.port, pid)
      local c = socket.connect("127.0.0.1", self.port)
      if c then
        c:close()
        -- another run beside this one may have taken the port between its
        -- choice and the bind: the Redis that answers must be this one
        if self:cli({ "INFO", "server" }):match("process_id:(%d+)") == pid then return self end
        if not self.retried then
          self.retried, self.port = true, tonumber(H.closed_port())
          return self:start()
        end
      end
    end
    socket.sleep(0.05)
  end
  -- ours never wrote its pid (its bind failed) while another answers there
  local c = not self.retried and socket.connect("127.0.0.1", self.port)
  if c then
    c:close()
    self.retried, self.port = true, tonumber(H.closed_port())
    return self:start()
  end
  error("redis-server did not start")
end

-- How many sends the rate budgets' logs in this Redis hold
-- (fileapi.store.budget: a sorted set per key, named ...:log).
function Redis:logged_sends()
  return tonumber(self:cli({ "EVAL", "local n = 0 for _, k in ipairs(redis.call('KEYS', '*:log'))"
    .. " do n = n + redis.call('ZCARD', k) end return n", 0 }))
end

-- Ways Redis drops a client's connection, for the specs of both Redis
-- clients (hiredis outside nginx, store_spec; lua-resty-redis inside,
-- fleet_spec): the test's name, the sends the budget's log holds after one
-- call before the drop and one after (a restarted Redis starts empty), and
-- the drop itself.
local REDIS_DROPS = {
  { name = "CLIENT KILL: the next call opens a new connection, with no warning and no fallback", logged = 2,
    drop = function(redis)
      local said = redis:cli({ "CLIENT", "KILL", "TYPE", "normal" })
      if said ~= "1" then error("CLIENT KILL answered " .. said) end
    end },
  { name = "a restart (SIGKILL, then started again empty): the next call reconnects once", logged = 1,
    drop = function(redis)
      redis:kill()
      redis:start()
    end },
  { name = "Redis's idle timeout: the next call reconnects", logged = 2,
    drop = function(redis)
      redis:cli({ "CONFIG", "SET", "timeout", "1" })
      -- Redis closes idle clients in its cron: until only redis-cli is left
      local deadline = socket.gettime() + 20
      repeat
        socket.sleep(0.2)
        local _, clients = redis:cli({ "CLIENT", "LIST" }):gsub("\n", "")
      until clients == 0 or socket.gettime() > deadline
      redis:cli({ "CONFIG", "SET", "timeout", "0" })
    end },
}

-- Gone at once, as a crash: SIGKILL.
function Redis:kill()
  self:signal("CONT")
  self:signal("KILL")
  for _ = 1, 100 do
    local c = socket.connect("127.0.0.1", self.port)
    if not c then break end
    c:close()
    socket.sleep(0.02)
  end
  os.remove(self.dir .. "/redis.pid")
end

function Redis:stop()
  if self.stopped then return end
  self.stopped = true
  self:kill()
  os.execute("rm -rf " .. H.sh_quote(self.dir))
end

-- opts.password: started with requirepass; opts.debug: DEBUG allowed from
-- loopback (DEBUG SLEEP stalls it); opts.args: more of redis-server's
-- options, a list ({ "--cluster-enabled", "yes" }).
local function start_redis(opts)
  opts = opts or {}
  local dir = H.tmpname(".redis")
  assert(os.execute("mkdir -p " .. H.sh_quote(dir)))
  local args = {}
  for i, a in ipairs(opts.args or {}) do args[i] = " " .. H.sh_quote(a) end
  if opts.debug then args[#args + 1] = " --enable-debug-command local" end
  local r = setmetatable({ port = H.closed_port(), dir = dir, password = opts.password, args = table.concat(args) },
    Redis)
  return r:start()
end

-- A relay in front of a Redis that forgets its connections as a firewall
-- or a NAT does (spec/support/forgetful_relay.lua): relay:url(), and
-- relay:forget(), after which each relayed connection is closed when its
-- client next sends.
local Relay = {}
Relay.__index = Relay

function Relay:url(db) return ("redis://127.0.0.1:%d/%d"):format(self.port, db or 0) end

function Relay:forget()
  local forget = self.port_file .. ".forget"
  io.open(forget, "w"):close()
  for _ = 1, 200 do
    if not io.open(forget) then return end
    socket.sleep(0.05)
  end
  error("the relay did not forget")
end

function Relay:stop()
  proc.signal(self.pid, "TERM", self.since)
  os.remove(self.port_file)
end

local function start_forgetful_relay(to_port)
  local port_file = H.tmpname(".relay")
  assert(os.execute(("%s %s --to %d --port-file %s --parent %s >/dev/null 2>&1 &"):format(H.mock_lua,
    H.sh_quote(H.support .. "/forgetful_relay.lua"), to_port, H.sh_quote(port_file), H.pid())))
  for _ = 1, 200 do
    local f = io.open(port_file)
    if f then
      local port, pid = f:read("*l"):match("^(%d+) (%d+)$")
      f:close()
      H.remember_pid("relay-" .. port, pid)
      return setmetatable({ port = tonumber(port), pid = pid, since = proc.start_time(pid), port_file = port_file },
        Relay)
    end
    socket.sleep(0.05)
  end
  error("the relay did not start")
end

return function(helper)
  H = helper
  helper.start_redis, helper.REDIS_DROPS, helper.start_forgetful_relay = start_redis, REDIS_DROPS, start_forgetful_relay
end
