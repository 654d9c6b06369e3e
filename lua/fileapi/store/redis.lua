-- The two Redis clients the store talks through, behind one call:
-- lua-resty-redis on cosockets inside nginx (OpenResty's `resty.redis`,
-- Debian's `nginx.redis`), where a blocking socket would stall every
-- request of the worker; and hiredis from the C core elsewhere (and in the
-- nginx phases that allow no cosockets).  Both answer as lua-resty-redis
-- does: a reply, or nil and a message, with "server" for an error reply
-- (READONLY, NOAUTH, NOSCRIPT...), "cluster" for a Redis Cluster's answer
-- (MOVED, ASK, CLUSTERDOWN: neither client follows them) and "io" for a
-- connection that failed.  A connection Redis had dropped (CLIENT KILL, its
-- idle timeout, a restart) is opened again once before anything fails.
-- Neither client's choice is home-made protocol code: hiredis is the C
-- client Redis itself ships with (Debian's lua-redis is a 2014 snapshot for
-- Lua 5.1-5.3), lua-resty-redis the one OpenResty ships.
local core = require "fileapi.core"
local ngx_phase = require "fileapi.ngx_phase"

local unpack = table.unpack or unpack -- luacheck: ignore 143
local type, tostring, pcall, floor, rawget, ipairs = type, tostring, pcall, math.floor, rawget, ipairs

local M = {}

local resty_redis
local function resty_module()
  if resty_redis == nil then
    local ok, mod = pcall(require, "resty.redis")
    if not ok then ok, mod = pcall(require, "nginx.redis") end
    resty_redis = ok and mod or false
  end
  return resty_redis
end

-- What the client needs after a fresh connection: the password, the db.
local function hello(call, cfg)
  if cfg.password then
    local ok, err, how
    if cfg.user then
      ok, err, how = call("AUTH", cfg.user, cfg.password)
    else
      ok, err, how = call("AUTH", cfg.password)
    end
    if not ok then return nil, err, how end
  end
  if cfg.db ~= 0 then
    local ok, err, how = call("SELECT", cfg.db)
    if not ok then return nil, err, how end
  end
  return true
end

-- Redis Cluster answers a client that follows no redirect (neither does)
-- with these: said once, plainly, instead of an outage's riddle.
local CLUSTER = { "^MOVED ", "^ASK ", "^CLUSTERDOWN", "^CROSSSLOT", "not allowed in cluster mode" }
M.CLUSTER_MESSAGE = "Redis Cluster is not supported: point store.url at a single primary"

-- An error reply as the layer above takes it: a Cluster's is "cluster".
local function server_error(err)
  local text = tostring(err)
  for _, pattern in ipairs(CLUSTER) do
    if text:find(pattern) then return M.CLUSTER_MESSAGE .. " (Redis answered: " .. text:sub(1, 80) .. ")", "cluster" end
  end
  return err, "server"
end

-- One call's outcome, as the layer above takes it: a reply, or nil, a
-- message and "server", "cluster" or "io" (a dropped connection is "io"
-- once the one retry is spent).
local function outcome(reply, err, how)
  if reply ~= nil then return reply end
  if how == "server" then return nil, server_error(err) end
  return nil, err, "io"
end

-- ---- outside nginx: hiredis, one connection per store per process ---------

local function hiredis_connect(link, cfg)
  local conn, err = core.redis(cfg.host, cfg.port, cfg.timeout)
  if not conn then return nil, err, "io" end
  local ok, herr, how = hello(function(...) return conn:call(...) end, cfg)
  if not ok then
    conn:close()
    return nil, herr, how
  end
  link.conn = conn
  return conn
end

local function hiredis_call(link, cfg, ...)
  if not core.redis then
    return nil, "the store needs hiredis: install libhiredis-dev and rebuild fileapi", "io"
  end
  local reused = link.conn ~= nil
  if not reused then
    local ok, err, how = hiredis_connect(link, cfg)
    if not ok then return outcome(nil, err, how) end
  end
  local reply, err, how = link.conn:call(...)
  if how == "closed" and reused then
    -- Redis dropped the idle connection (CLIENT KILL, its own timeout, a
    -- restart) and never read the command: once more on a new one
    link.conn = nil
    local ok, cerr, chow = hiredis_connect(link, cfg)
    if not ok then return outcome(nil, cerr, chow) end
    reply, err, how = link.conn:call(...)
  end
  if reply == nil and how ~= "server" then link.conn = nil end
  return outcome(reply, err, how)
end

-- ---- inside nginx: lua-resty-redis, a pooled connection per call ----------

-- A socket error on a connection that was open: "closed" when Redis had
-- dropped it (the command never reached a server that reads it), "io" for
-- the rest (a timeout: the command may have run).
local function socket_failure(e)
  e = tostring(e)
  if e == "closed" or e:find("reset by peer", 1, true) or e:find("broken pipe", 1, true) then return "closed" end
  return "io"
end

local function resty_open(redis, cfg)
  local red = redis:new()
  local ms = floor(cfg.timeout * 1000 + 0.5)
  -- lua-resty-redis 0.27 (Debian's) has set_timeout only; an unknown
  -- method name would be sent to Redis as a command
  if rawget(redis, "set_timeouts") then
    red:set_timeouts(ms, ms, ms)
  else
    red:set_timeout(ms)
  end
  local ok, err = red:connect(cfg.host, cfg.port, { pool = cfg.pool })
  if not ok then return nil, "redis: " .. tostring(err), "io" end
  return red
end

-- One command on one connection (from the pool, or new and greeted):
-- reply, err, how, and whether the connection came from the pool.
local function resty_once(redis, cfg, args)
  local red, err, how = resty_open(redis, cfg)
  if not red then return nil, err, how, false end
  local call = function(name, ...)
    local fn = red[name:lower()]
    local r, e = fn(red, ...)
    if r == nil then return nil, "redis: " .. tostring(e), socket_failure(e) end
    if r == false and e then return nil, e, "server" end
    if r == rawget(_G, "ngx").null then return false end
    return r
  end
  local reused = (red:get_reused_times() or 0) > 0
  if not reused then
    local hok, herr, hhow = hello(call, cfg)
    if not hok then
      red:close()
      return nil, herr, hhow, false
    end
  end
  local reply, rerr, rhow = call(args[1], unpack(args, 2))
  if rhow == "io" or rhow == "closed" then
    red:close()
  else
    red:set_keepalive(60000, 64)
  end
  if type(reply) == "table" then
    local null = rawget(_G, "ngx").null
    for i = 1, #reply do
      if reply[i] == null then reply[i] = false end
    end
  end
  return reply, rerr, rhow, reused
end

-- nginx drops a pooled connection that Redis closes while it idles, but a
-- close not yet seen, or a connection the network forgot (a firewall, a
-- NAT), comes back dead: it costs a round trip, and the call goes on with
-- the next (a new one, most likely).  A new connection gets one try.
local POOLED_TRIES = 4

local function resty_call(cfg, ...)
  local redis = resty_module()
  if not redis then
    return nil, "the store needs lua-resty-redis inside nginx (Debian: lua-nginx-redis)", "io"
  end
  local args = { ... }
  local reply, err, how, reused
  for _ = 1, POOLED_TRIES do
    reply, err, how, reused = resty_once(redis, cfg, args)
    if not (how == "closed" and reused) then break end
  end
  return outcome(reply, err, how)
end

-- A link for one store: call(name, args...) -> reply | nil, message, how.
function M.link(cfg)
  local link = {}
  function link.call(...)
    if ngx_phase.cosockets_usable() and resty_module() then return resty_call(cfg, ...) end
    return hiredis_call(link, cfg, ...)
  end
  function link.close()
    if link.conn then link.conn:close() end
    link.conn = nil
  end
  return link
end

-- Runs a script by its SHA-1, loading it with EVAL when Redis does not
-- know it (a new or restarted server: NOSCRIPT).
function M.eval(link, script, keys, args)
  local argv = { "EVALSHA", script.sha, #keys }
  for i = 1, #keys do argv[#argv + 1] = keys[i] end
  for i = 1, #args do argv[#argv + 1] = args[i] end
  local reply, err, how = link.call(unpack(argv))
  if reply == nil and how == "server" and tostring(err):find("^NOSCRIPT") then
    argv[1], argv[2] = "EVAL", script.source
    reply, err, how = link.call(unpack(argv))
  end
  return reply, err, how
end

-- A script: its text and the name EVALSHA knows it by.
function M.script(source)
  return { source = source, sha = core.sha1 and core.sha1(source) or "" }
end

return M
