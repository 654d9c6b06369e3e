-- Pacing within a service's rate limit, so that a batch waits instead of
-- drawing 429s.  The budget keeps a log of its own send times over a rolling
-- window and reads what every response says (X-RateLimit-Limit, -Remaining,
-- -Reset, Retry-After).  The next request waits when the log holds `limit`
-- sends within the window (the limit being the server's, or the caller's
-- number if lower), or when the server said none remain and the log cannot
-- explain it (another client on the same key) until the server's reset.
-- Inside nginx, with rate_limit_dict, the log lives in a lua_shared_dict
-- under a hash of the key, so every worker draws from the same window.
local core = require "fileapi.core"

local tonumber, tostring, concat, max, min, format = tonumber, tostring, table.concat, math.max, math.min, string.format

local M = {}
local Budget = {}
Budget.__index = Budget

-- A send is counted on the server's clock a little after it leaves, more so
-- when many go at once: a slot is taken as free only this much later.
local function margin(window)
  return max(0.1, window * 0.01)
end

local function parse_log(text, since)
  local log = {}
  for t in (text or ""):gmatch("[^ ]+") do
    local v = tonumber(t)
    if v and v > since then log[#log + 1] = v end
  end
  return log
end

-- opts: rate_limit ("auto" | N | false), rate_window, rate_limit_dict;
-- key: the credential the service counts by (hashed for the shared dict).
function M.new(opts, key)
  if opts.rate_limit == false then return nil end
  local b = setmetatable({ cap = tonumber(opts.rate_limit), window = opts.rate_window or 60,
    log = {}, server = nil, blocked_until = 0, max_wait = opts.max_retry_wait or 60 }, Budget)
  if opts.rate_limit_dict then
    local ngx = rawget(_G, "ngx")
    b.dict = ngx.shared[opts.rate_limit_dict]
    b.dict_key = "fileapi:rate:" .. ngx.md5(key or "")
  end
  return b
end

-- The dict's log and server facts, under a lock shared by the workers.
local function with_lock(b, sleep, fn)
  local lock = b.dict_key .. ":lock"
  for _ = 1, 2000 do
    if b.dict:add(lock, true, 0.5) then
      local ok, a, c = pcall(fn)
      b.dict:delete(lock)
      if not ok then error(a, 0) end
      return a, c
    end
    sleep(0.001)
  end
  return fn() -- a lock held past its expiry: go on without it
end

function Budget:load(now)
  if not self.dict then
    local log, since = self.log, now - self.window
    if #log > 0 and log[1] <= since then
      local keep = {}
      for i = 1, #log do
        if log[i] > since then keep[#keep + 1] = log[i] end
      end
      self.log = keep
    end
    return self.log, self.server
  end
  local log = parse_log(self.dict:get(self.dict_key .. ":log"), now - self.window)
  local s = self.dict:get(self.dict_key .. ":server")
  local limit, remaining, reset = (s or ""):match("^(%-?[%d.]*) (%-?[%d.]*) (%-?[%d.]*)$")
  local server = s and { limit = tonumber(limit), remaining = tonumber(remaining), reset = tonumber(reset) } or nil
  return log, server
end

function Budget:save(log, server)
  if not self.dict then
    self.log, self.server = log, server
    return
  end
  local parts = {}
  for i, t in ipairs(log) do parts[i] = format("%.3f", t) end
  self.dict:set(self.dict_key .. ":log", concat(parts, " "), self.window + 1)
  if server then
    self.dict:set(self.dict_key .. ":server", format("%s %s %s", tostring(server.limit or ""),
      tostring(server.remaining or ""), tostring(server.reset or "")), 3600)
  end
end

local UNKNOWN_KEEP = 256

-- Runs fn on the log and server facts when nobody else holds them; never
-- waits for the shared dict's lock (a missed update is corrected by the
-- next response).
function Budget:if_unlocked(fn)
  if not self.dict then return fn() end
  local lock = self.dict_key .. ":lock"
  if self.dict:add(lock, true, 0.5) then
    pcall(fn)
    self.dict:delete(lock)
  end
end

-- Seconds until a request may go; 0 records one as sent now.
local function try_take(b, now)
  local log, server = b:load(now)
  local limit = b.cap
  if server and server.limit then limit = limit and min(limit, server.limit) or server.limit end
  local wait = b.blocked_until - now
  if limit and #log >= limit then
    wait = max(wait, log[#log - limit + 1] + b.window + margin(b.window) - now)
  end
  if server and server.remaining and server.remaining <= 0 and server.reset and server.reset > now then
    -- none left, and not by our own sends (see observe)
    wait = max(wait, min(server.reset - now, b.max_wait))
  end
  if wait > 0 then return wait end
  -- Only the newest `limit` sends matter (UNKNOWN_KEEP before the server
  -- has named its limit): the log never grows with the number of calls.
  log[#log + 1] = now
  local keep = limit or UNKNOWN_KEEP
  if #log > keep + 64 then -- trimmed in batches, not on every call
    local newest = {}
    for i = #log - keep + 1, #log do newest[#newest + 1] = log[i] end
    log = newest
  end
  b:save(log, server)
  return 0
end

-- Waits (through sleep, which yields in nginx) until the budget allows one
-- more request, then records it.  on_wait(seconds) is told of each wait.
-- Returns false when a sleep was interrupted.
function Budget:acquire(sleep, on_wait)
  while true do
    local now = core.time()
    local wait
    if self.dict then
      wait = with_lock(self, sleep, function() return try_take(self, now) end)
    else
      wait = try_take(self, now)
    end
    if wait <= 0 then return true end
    if on_wait then pcall(on_wait, wait) end
    if sleep(wait) == false then return false end
  end
end

-- What a response said.  Reset is a UNIX time; Retry-After (seconds or a
-- date) blocks every request until it has passed.
function Budget:observe(headers, status)
  if not headers then return end
  local now = core.time()
  local limit = tonumber(headers["x-ratelimit-limit"])
  local remaining = tonumber(headers["x-ratelimit-remaining"])
  local reset = tonumber(headers["x-ratelimit-reset"])
  local retry = headers["retry-after"] and core.retry_after(headers["retry-after"], now)
  if status == 429 and retry then self.blocked_until = max(self.blocked_until, now + min(retry, self.max_wait)) end
  if status == 429 then self:forget_last() end
  if not (limit or remaining or reset) then return end
  local update = function()
    local log, server = self:load(now)
    server = server or {}
    server.limit = limit or server.limit
    server.remaining = remaining
    server.reset = reset
    -- none left because of our own log's sends: the log paces those,
    -- precisely; the reset time only matters for someone else's
    local cap = server.limit and (self.cap and min(self.cap, server.limit) or server.limit)
    if remaining and remaining <= 0 and cap and #log >= cap then server.remaining = nil end
    self:save(log, server)
  end
  self:if_unlocked(update)
  self.last = { limit = limit, remaining = remaining, reset = reset }
end

-- A request the server refused with 429 took no slot of its window (a
-- throttle counts the requests it lets through): out of the log.
function Budget:forget_last()
  self:if_unlocked(function()
    local log, server = self:load(core.time())
    table.remove(log)
    self:save(log, server)
  end)
end

-- { limit, remaining, reset } as the server last said, or nil.
function Budget:said()
  return self.last
end

return M
