-- The two Redis clients the store talks through, behind one call:
-- lua-resty-redis on cosockets inside nginx (OpenResty's `resty.redis`,
-- Debian's `nginx.redis`), where a blocking socket would stall every
-- request of the worker; and hiredis from the C core elsewhere (and in the
-- nginx phases that allow no cosockets).  Both answer as lua-resty-redis
-- does: a reply, or nil and a message, with "server" for an error reply
-- (READONLY, NOAUTH, NOSCRIPT...) and "io" for a connection that failed.
-- Neither client's choice is home-made protocol code: hiredis is the C
-- client Redis itself ships with (Debian's lua-redis is a 2014 snapshot for
-- Lua 5.1-5.3), lua-resty-redis the one OpenResty ships.
local core = require "fileapi.core"
local cosocket = require "fileapi.http.cosocket"

local unpack = table.unpack or unpack -- luacheck: ignore 143
local type, tostring, pcall, floor, rawget = type, tostring, pcall, math.floor, rawget

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

-- ---- outside nginx: hiredis, one connection per store per process ---------

local function hiredis_call(link, cfg, ...)
  if not core.redis then
    return nil, "the store needs hiredis: install libhiredis-dev and rebuild fileapi", "io"
  end
  if not link.conn then
    local conn, err = core.redis(cfg.host, cfg.port, cfg.timeout)
    if not conn then return nil, err, "io" end
    local ok, herr, how = hello(function(...) return conn:call(...) end, cfg)
    if not ok then
      conn:close()
      return nil, herr, how
    end
    link.conn = conn
  end
  local reply, err, how = link.conn:call(...)
  if reply == nil and how == "io" then link.conn = nil end
  return reply, err, how
end

-- ---- inside nginx: lua-resty-redis, a pooled connection per call ----------

local function resty_call(cfg, ...)
  local redis = resty_module()
  if not redis then
    return nil, "the store needs lua-resty-redis inside nginx (Debian: lua-nginx-redis)", "io"
  end
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
  local call = function(name, ...)
    local fn = red[name:lower()]
    local r, e = fn(red, ...)
    if r == nil then return nil, "redis: " .. tostring(e), "io" end
    if r == false and e then return nil, e, "server" end
    if r == rawget(_G, "ngx").null then return false end
    return r
  end
  if (red:get_reused_times() or 0) == 0 then
    local hok, herr, how = hello(call, cfg)
    if not hok then
      red:close()
      return nil, herr, how
    end
  end
  local args = { ... }
  local reply, rerr, how = call(args[1], unpack(args, 2))
  if how == "io" then
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
  return reply, rerr, how
end

-- A link for one store: call(name, args...) -> reply | nil, message, how.
function M.link(cfg)
  local link = {}
  function link.call(...)
    if cosocket.available() and resty_module() then return resty_call(cfg, ...) end
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
