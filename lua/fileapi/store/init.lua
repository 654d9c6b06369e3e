-- The fleet's shared store (the `store` option): the rate budget's log,
-- the fleet-wide "wait until" mark and OAuth's token and refresh lock, in
-- one Redis that every machine using the same key points at.  Opened by
-- fileapi.client_options and handed to those who use it: the engine
-- (Store:budget) and OAuth's keeper (Store:token_record).
--
--   store = { url = "redis://[[user]:password@]host[:port][/db]", prefix = "fileapi:",
--             timeout = 0.1, on_unavailable = "local" | "wait" }
--
-- A store that fails (refused, slow, killed, READONLY, an auth error) is
-- taken as unavailable for a second: with "local" the callers fall back to
-- their own state at once, with "wait" they wait for it, a few seconds at
-- most (Store:wait_limit) and never past their call's timeout.  A
-- connection Redis dropped is opened again once before anything counts as
-- a failure (fileapi.store.redis).  The first failure of an outage is
-- warned about once per process (nginx's error log inside nginx); the
-- URL's password never shows.  One Redis primary is supported: a Redis
-- Cluster's answer (MOVED, ASK, CLUSTERDOWN) says so, plainly.
local util = require "fileapi.util"
local core = require "fileapi.core"
local redis = require "fileapi.store.redis"
local fleet_budget = require "fileapi.store.budget"
local tokens = require "fileapi.store.tokens"

local type, tonumber, tostring, format, max = type, tonumber, tostring, string.format, math.max
local pairs, ipairs, setmetatable = pairs, ipairs, setmetatable

local M = {}

M.FIELDS = { "url", "prefix", "timeout", "on_unavailable" }
M.RETRY_AFTER = 1 -- seconds an unavailable store is left alone
M.DEFAULT_TIMEOUT = 0.1
-- "wait" waits for a store that does not answer this long at most: a
-- restart or a dropped connection is back well within it, and a store that
-- is gone fails the call in seconds, not after rate_window + max_retry_wait.
-- A slower store (a larger timeout) is given proportionally longer.
M.WAIT_AT_LEAST, M.WAIT_TIMEOUTS = 2, 20

local Store = {}
Store.__index = Store

local function pct_decode(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

-- redis://[[user]:password@]host[:port][/db]
local function parse_url(url)
  local scheme, rest = url:match("^(%a[%w+.-]*)://(.*)$")
  if scheme == "rediss" then
    return nil, "store: rediss:// (TLS) is not supported by the Redis clients of Debian 12 "
      .. "(hiredis 0.14, lua-resty-redis 0.27): reach Redis over loopback, a private network or a TLS tunnel"
  end
  if scheme ~= "redis" then return nil, "store.url must look like redis://host:port/db" end
  local cfg = {}
  local auth, hostpart = rest:match("^(.*)@([^@]*)$")
  if auth then
    local user, password = auth:match("^([^:]*):(.*)$")
    if not user then user, password = nil, auth end
    cfg.user = user ~= "" and user and pct_decode(user) or nil
    cfg.password = pct_decode(password)
    if cfg.password == "" then cfg.password = nil end
  else
    hostpart = rest
  end
  local host, port, db = hostpart:match("^%[?([%w%.%-:]-)%]?:(%d+)/?(%d*)$")
  if not host then host, db = hostpart:match("^([%w%.%-]+)/?(%d*)$") end
  if not host or host == "" then return nil, "store.url must name a host: redis://host:port/db" end
  cfg.host, cfg.port, cfg.db = host, tonumber(port) or 6379, tonumber(db) or 0
  if cfg.port < 1 or cfg.port > 65535 then return nil, "store.url's port must be from 1 to 65535" end
  return cfg
end

-- The store option, checked: a wrong type raises (as every option does), a
-- bad value is nil, message.  Returns the configuration for M.open.
function M.check(store, fname)
  if store == nil then return false end
  if type(store) ~= "table" then
    error(format("bad option 'store' to '%s' (table expected, got %s)", fname, type(store)), 4)
  end
  util.check_keys(store, fname .. " store", M.FIELDS, 5)
  local url = util.check_field(store, "url", "string", fname, 5)
  local prefix = util.check_field(store, "prefix", "string", fname, 5) or "fileapi:"
  local timeout = util.check_field(store, "timeout", "number", fname, 5) or M.DEFAULT_TIMEOUT
  local mode = util.check_field(store, "on_unavailable", "string", fname, 5) or "local"
  if not url then return nil, "store.url is required (redis://host:port/db)" end
  if not core.sha256 then
    return nil, "store needs fileapi built with libcrypto (Debian: libssl-dev), for its key names and sealed tokens"
  end
  if util.has_control(url) or util.has_control(prefix) then return nil, "store.url and store.prefix must be plain text" end
  if not (timeout > 0 and timeout <= 60) then return nil, "store.timeout must be more than 0 and at most 60 seconds" end
  if mode ~= "local" and mode ~= "wait" then return nil, 'store.on_unavailable must be "local" or "wait"' end
  local cfg, why = parse_url(url)
  if not cfg then return nil, why end
  cfg.prefix, cfg.timeout, cfg.on_unavailable = prefix, timeout, mode
  cfg.pool = format("fileapi-store:%s:%d:%d:%s", cfg.host, cfg.port, cfg.db, core.sha256 and cfg.password
    and core.sha256(cfg.password):sub(1, 16) or "")
  return cfg
end

-- One store per configuration per process (per nginx worker), whichever
-- clients use it: one connection, one health, one warning.
local opened = {}

function M.open(cfg)
  local id = cfg.pool .. "\0" .. cfg.prefix .. "\0" .. cfg.on_unavailable .. "\0" .. cfg.timeout
  local s = opened[id]
  if not s then
    s = setmetatable({ cfg = cfg, link = redis.link(cfg), down_until = 0, warned = false,
      where = format("redis %s:%d/%d", cfg.host, cfg.port, cfg.db), failures = 0 }, Store)
    opened[id] = s
  end
  return s
end

-- The name of a shared key: the prefix, a kind, and a hash of what it is
-- about (a credential never goes to the store in clear).  The braces keep
-- one subject's keys in one Redis Cluster slot.
function Store:key(kind, subject, part)
  return format("%s%s:{%s}:%s", self.cfg.prefix, kind, core.sha256(subject), part)
end

local warn = util.warn

function Store:usable()
  return core.time() >= self.down_until
end

-- What callers do while the store is away, for its warning.
function Store:fallback()
  if self.cfg.on_unavailable ~= "wait" then return "pacing and tokens fall back to this process's own" end
  if self.misconfigured then return "calls fail with invalid_argument" end
  return format("calls wait for it, %g s at most (and within their timeout)", self:wait_limit())
end

-- The clients' on_event handlers, told when the store goes down and comes
-- back: handler -> the secrets its warnings must not show (weak: a client
-- collected takes its handler with it).  deliver(handler, ev, secrets) is
-- the engine's safe call (fileapi.http.events), handed in with them.
function Store:listen(handler, secrets, deliver)
  self.listeners = self.listeners or setmetatable({}, { __mode = "k" })
  self.listeners[handler] = secrets
  self.deliver = deliver
end

local function tell(self, ev)
  if not self.listeners then return end
  local list = {} -- a handler may make a client (a new listener) meanwhile
  for handler, secrets in pairs(self.listeners) do list[#list + 1] = { handler, secrets } end
  for _, l in ipairs(list) do self.deliver(l[1], ev, l[2]) end
end

function Store:failed(message, how)
  self.down_until = core.time() + M.RETRY_AFTER
  self.failures = self.failures + 1
  self.last_error = message
  -- a Redis Cluster: waiting brings nothing; the configuration is wrong
  self.misconfigured = how == "cluster" or nil
  if not self.warned then
    self.warned = true
    -- redacted before it is cut: a cut through the password would keep its start
    local why = tostring(message)
    if self.cfg.password then why = util.redact(why, { self.cfg.password }) end
    why = why:sub(1, 200):gsub("%c", " ")
    warn(format("fileapi: the store (%s) is unavailable (%s); %s until it answers again", self.where,
      why, self:fallback()))
    tell(self, { type = "store", state = "down", reason = why })
  end
end

function Store:answered()
  self.misconfigured = nil
  if self.warned then
    self.warned = false
    if os.getenv("FILEAPI_DEBUG") then warn(format("fileapi: the store (%s) answers again", self.where)) end
    tell(self, { type = "store", state = "up" })
  end
end

-- Runs a script (fileapi.store.redis's script()); reply, or nil and a
-- message once the store has been marked unavailable.
-- One operation under the store's health: its reply, or nil and a message
-- once the store has been marked unavailable (a raise counts as a failure).
local function guarded(self, fn, ...)
  if not self:usable() then return nil, self.last_error or "unavailable" end
  local ok, reply, err, how = pcall(fn, ...)
  if not ok then reply, err = nil, reply end
  if reply == nil then
    self:failed(err, how)
    return nil, err
  end
  self:answered()
  return reply
end

function Store:eval(script, keys, args)
  return guarded(self, redis.eval, self.link, script, keys, args)
end

-- Plain commands, for the token record: same health as eval.
function Store:call(...)
  return guarded(self, self.link.call, ...)
end

-- For "wait": how long a caller waits for a store that does not answer,
-- at most (its call's timeout may cut it shorter).
function Store:wait_limit()
  return max(M.WAIT_AT_LEAST, M.WAIT_TIMEOUTS * self.cfg.timeout)
end

-- For "wait": sleeps (yielding in nginx) until the store may be tried
-- again, if that is before the deadline, first telling on_wait(seconds,
-- "store") when given.  Returns whether it slept.  A Redis Cluster is not
-- waited for.
function Store:wait_until_usable(sleep, deadline, on_wait)
  local at = self.down_until
  if at > deadline or self.misconfigured then return false end
  local d = at - core.time()
  if d <= 0 then return true end
  -- nginx sleeps whole milliseconds: less would be a sleep(0), spinning
  d = max(d, 0.002)
  if on_wait then pcall(on_wait, d, "store") end
  return sleep(d) ~= false
end

-- The error a "wait" caller returns when the store stayed away (waited:
-- the seconds it waited, if known), or answered as a Redis Cluster.
function Store:unavailable_error(waited)
  local why = tostring(self.last_error or "unavailable"):sub(1, 200)
  if self.misconfigured then
    return util.new_error("invalid_argument", format("the store (%s): %s", self.where, why), { request_sent = false })
  end
  return util.new_error("network", format("the store (%s) did not answer within %s (%s)", self.where,
    waited and format("%.1f s", waited) or "the call's time", why), { retryable = true, request_sent = false })
end

-- What this store offers those it is handed to.  The engine: the fleet's
-- rate budget over `loc`, the process's own (fileapi.store.budget).
function Store:budget(loc, rate_key, opts)
  return fleet_budget.new(loc, self, rate_key, opts)
end

-- OAuth's keeper: the grant's shared record and refresh lock
-- (fileapi.store.tokens), over `fallback` (the nginx's token_dict record,
-- or nil) while the store is away.
function Store:token_record(own, seal_key, fallback)
  return tokens.record(self, { own = own, seal_key = seal_key, fallback = fallback, mode = self.cfg.on_unavailable })
end

M.Store = Store
return M
