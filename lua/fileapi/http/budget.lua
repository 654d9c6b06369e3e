-- Pacing within a service's rate limit, so that a batch waits instead of
-- drawing 429s.  Two sources decide when the next request may go:
-- * the server's word, where it gives one: an answer with
--   X-RateLimit-Remaining and -Reset says how many may go and when the
--   next slot frees, whatever the client's own window (Remaining counts
--   down with each send until the next answer; requests still on their way
--   are taken as not yet counted by the server); Retry-After blocks every
--   request until it has passed;
-- * where the server is silent (MijnKlantportaal names no reset until the
--   limit is hit), a log of this client's own sends over a rolling window:
--   the next request waits while it holds `limit` sends (the server's
--   limit, or the caller's number if lower).  The caller's number always
--   applies.
-- Header values that make no sense (Limit 0, -5 or 2.5, Remaining -1) are
-- ignored and noted once.  No wait is longer than the client can justify: a
-- reset farther away than the rate window is answered with rate_limited at
-- once instead of a sleep.
-- Inside nginx, with rate_limit_dict, the log lives in a lua_shared_dict
-- under a hash of the key, so every worker draws from the same window.
local core = require "fileapi.core"

local tonumber, tostring, concat, max, min, format = tonumber, tostring, table.concat, math.max, math.min, string.format
local abs = math.abs
local floor, type, pcall, running = math.floor, type, pcall, coroutine.running

local M = {}
local Budget = {}
Budget.__index = Budget

-- Header values beyond these are not a limit anyone sends.
local MAX_COUNT = 1000000
-- A send is counted on the server's clock a little after it leaves, more so
-- when many go at once: a slot is taken as free only this much later.
local function margin(window)
  return max(0.1, window * 0.01)
end
-- A wait for the server's Reset: the server named the moment itself.
local RESET_MARGIN = 0.05
M.RESET_MARGIN = RESET_MARGIN
-- A Reset in whole seconds (a UNIX time, rounded up) can name a moment up
-- to a second past the window it closes.
M.RESET_SLACK = 1
-- How long the others wait for the answer of the one request sent after a
-- Reset passed with nothing remaining, at most.
local AFTER_RESET = 2
local AWAIT_POLL = 0.05
M.margin = margin
-- ...and on every budget, for the fleet's budget it is handed to
-- (fileapi.store.budget), which does not import this module.
Budget.RESET_MARGIN, Budget.RESET_SLACK = M.RESET_MARGIN, M.RESET_SLACK

-- The key a thread's slot is held under (the main thread is nil in 5.1).
local MAIN = {}
local function holder() return running() or MAIN end

local function whole_count(text)
  local v = tonumber(text)
  if v and v == floor(v) and v >= 0 and v <= MAX_COUNT then return v end
  return nil
end

local function parse_log(text, since)
  local log = {}
  for t in (text or ""):gmatch("[^ ]+") do
    local v = tonumber(t)
    if v and v > since then log[#log + 1] = v end
  end
  return log
end

-- opts: rate_limit ("auto" | N | false), rate_window, max_retry_wait,
-- rate_limit_dict; key: the credential the service counts by (hashed for
-- the shared dict).
function M.new(opts, key)
  if opts.rate_limit == false then return nil end
  local b = setmetatable({ cap = tonumber(opts.rate_limit), window = opts.rate_window or 60,
    log = {}, server = nil, blocked_until = 0, max_wait = opts.max_retry_wait or 60 }, Budget)
  if opts.rate_limit_dict then
    b.dict = rawget(_G, "ngx").shared[opts.rate_limit_dict]
    b:rekey(key)
  end
  return b
end

-- The shared dict's entries are named by a hash of the key.
function Budget:rekey(key)
  if self.dict then self.dict_key = "fileapi:rate:" .. rawget(_G, "ngx").md5(key or "") end
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

-- server: limit, remaining (what may still go, as this budget counts),
-- reset, said (the newest answer's Remaining as sent), await (see try_take)
local SERVER_FIELDS = { "limit", "remaining", "reset", "said", "await" }

local function encode_server(server)
  local parts = {}
  for i, k in ipairs(SERVER_FIELDS) do parts[i] = tostring(server[k] or "") end
  return concat(parts, " ")
end

local function decode_server(s)
  if not s then return nil end
  local server, i = {}, 0
  for value in (s .. " "):gmatch("([^ ]*) ") do
    i = i + 1
    if SERVER_FIELDS[i] then server[SERVER_FIELDS[i]] = tonumber(value) end
  end
  return server
end

-- The log of sends still holding a slot: a slot is free a margin after its
-- send left the window (log_wait's rule), so it is kept until then.
function Budget:load(now)
  local since = now - self.window - margin(self.window)
  if not self.dict then
    local log = self.log
    if #log > 0 and log[1] <= since then
      local keep = {}
      for i = 1, #log do
        if log[i] > since then keep[#keep + 1] = log[i] end
      end
      self.log = keep
    end
    return self.log, self.server
  end
  local log = parse_log(self.dict:get(self.dict_key .. ":log"), since)
  return log, decode_server(self.dict:get(self.dict_key .. ":server"))
end

function Budget:save(log, server)
  if not self.dict then
    self.log, self.server = log, server
    return
  end
  local parts = {}
  for i, t in ipairs(log) do parts[i] = format("%.3f", t) end
  self.dict:set(self.dict_key .. ":log", concat(parts, " "), self.window + margin(self.window) + 1)
  if server then self.dict:set(self.dict_key .. ":server", encode_server(server), 3600) end
end

local UNKNOWN_KEEP = 256

-- Runs fn on the log and server facts under the shared dict's lock: waiting
-- for it when given a sleep (which yields in nginx), else only when nobody
-- else holds it (a missed update is corrected by the next response).
function Budget:if_unlocked(fn, sleep)
  if not self.dict then return fn() end
  if sleep then return with_lock(self, sleep, fn) end
  local lock = self.dict_key .. ":lock"
  if self.dict:add(lock, true, 0.5) then
    pcall(fn)
    self.dict:delete(lock)
  end
end

-- When the log of own sends lets the next one go (0: now).
local function log_wait(b, log, limit, now)
  if not limit or #log < limit then return 0 end
  return log[#log - limit + 1] + b.window + margin(b.window) - now
end

-- What the server's word says of the next request: a wait (0: go), or nil
-- where it said nothing that decides.
local function server_wait(server, now)
  if not (server and server.remaining and server.reset) then return nil end
  if server.remaining > 0 then return 0 end
  local wait = server.reset + RESET_MARGIN - now
  -- waiting on an answer, which may come at any moment: looked at often
  if server.await and server.await > now then wait = max(wait, min(server.await - now, AWAIT_POLL)) end
  return wait
end

-- The caller's number or the server's limit, whichever is lower (nil:
-- neither is known).
local function limit_of(b, server)
  local limit = b.cap
  if server and server.limit then limit = limit and min(limit, server.limit) or server.limit end
  return limit
end

-- Only the newest `limit` sends matter (UNKNOWN_KEEP before the server
-- has named its limit): the log never grows with the number of calls.
local function append(log, now, limit)
  log[#log + 1] = now
  local keep = limit or UNKNOWN_KEEP
  if #log > keep + 64 then -- trimmed in batches, not on every call
    local newest = {}
    for i = #log - keep + 1, #log do newest[#newest + 1] = log[i] end
    log = newest
  end
  return log
end

-- Seconds until a request may go, and whether that wait is past what the
-- client can justify; 0 records one as sent now.
local function try_take(b, now, peek)
  local log, server = b:load(now)
  local limit = limit_of(b, server)
  local wait = b.blocked_until - now
  local said = server_wait(server, now)
  if said then
    -- a reset farther than a whole window away is nothing a rate window
    -- explains: say so instead of sleeping on it
    if said > b.window + margin(b.window) + M.RESET_SLACK then return said, true end
    wait = max(wait, said, log_wait(b, log, b.cap, now))
  else
    wait = max(wait, log_wait(b, log, limit, now))
  end
  if wait > 0 then return wait, wait > b.window + b.max_wait end
  if peek then return 0 end
  log = append(log, now, limit)
  -- this send takes one of what the server said remains, until it says again
  if server and server.remaining and server.remaining > 0 then
    server.remaining = server.remaining - 1
  elseif server and server.remaining == 0 and server.reset and server.reset <= now then
    -- the Reset that passed freed the oldest counted request's slot, and
    -- perhaps no other (a rolling window): this one goes, the others wait
    -- for a newer answer to say what remains (or a while, should none come)
    server.await = now + min(b.window, AFTER_RESET)
  end
  b:save(log, server)
  return 0
end

-- Waits (through sleep, which yields in nginx) until the budget allows one
-- more request, then records it.  on_wait(seconds) is told of each wait.
-- Returns true; or false when a sleep was interrupted; or false, seconds
-- when the wait would be longer than the client can justify (the caller
-- answers rate_limited without sending).
function Budget:acquire(sleep, on_wait)
  local waited = 0
  while true do
    local now = core.time()
    local wait, too_long
    if self.dict then
      wait, too_long = with_lock(self, sleep, function() return try_take(self, now) end)
    else
      wait, too_long = try_take(self, now)
    end
    if wait <= 0 then
      self:hold(now)
      return true
    end
    -- however the facts move, one call never waits past window + max_wait
    if too_long or waited + wait > self.window + self.max_wait then return false, wait end
    if on_wait then pcall(on_wait, wait) end
    if sleep(wait) == false then return false end
    waited = waited + wait
  end
end

-- Seconds until one more request may go (0: now), taking nothing, and
-- whether that wait is past what the client can justify.
function Budget:wait_time()
  return try_take(self, core.time(), true)
end

-- A send the fleet's store let go: in the own log too, so that this
-- process can take over at once when the store fails.
function Budget:record()
  local now = core.time()
  self:if_unlocked(function()
    local log, server = self:load(now)
    self:save(append(log, now, limit_of(self, server)), server)
  end)
  self:hold(now)
end

-- The slot taken at `at` is this thread's until its attempt is over.
function Budget:hold(at)
  -- weak: a group's function dropped mid-call (its group abandoned) holds nothing
  self.held = self.held or setmetatable({}, { __mode = "k" })
  self.held[holder()] = at
  self:in_flight(1)
end

-- Requests sent and not yet answered, by this process (per worker in
-- nginx: a shared count would outlive a worker that died mid-request).
function Budget:in_flight(delta)
  self.flying = max(0, (self.flying or 0) + delta)
  return self.flying
end

-- The slot at `at` moved to `to` (nil: given back), in log order.  The
-- shared dict keeps milliseconds: its nearest entry is the slot.
local function move_slot(log, at, to)
  local best
  for i = #log, 1, -1 do
    if abs(log[i] - at) < 0.0015 and (not best or abs(log[i] - at) < abs(log[best] - at)) then best = i end
  end
  if not best then return false end
  table.remove(log, best)
  if to then
    local i = #log
    while i > 0 and log[i] > to do i = i - 1 end
    table.insert(log, i + 1, to)
  end
  return true
end

-- An attempt is over (answered or not).  One that never left, or that the
-- server refused with 429 (a throttle counts what it lets through), gives
-- its slot back.  One that took long (a new connection, a loaded machine, a
-- big body) may have reached the server well after its slot's time, by more
-- than the margin covers: its slot moves to now, when it has surely
-- arrived.  Fast ones, most of them, cost nothing more.  sleep: for the
-- shared dict's lock (it yields in nginx).
function Budget:done(res, err, sleep)
  self:in_flight(-1)
  local at = self.held and self.held[holder()]
  if not at then return end
  self.held[holder()] = nil
  local now = core.time()
  local give_back = (res and res.status == 429) or (not res and err and err.request_sent == false)
  if not give_back and now - at < margin(self.window) / 2 then return end
  local to = not give_back and now or nil
  local function settle()
    local log, server = self:load(now)
    if move_slot(log, at, to) then self:save(log, server) end
  end
  self:if_unlocked(settle, sleep)
end

-- A header value that is ignored, noted once per budget: in nginx's log, or
-- on stderr with FILEAPI_DEBUG set; rate_limit().ignored lists them.
function Budget:ignore(name, value)
  self.ignored = self.ignored or {}
  local note = name .. ": " .. tostring(value):sub(1, 40):gsub("[%c]", "?")
  for _, seen in ipairs(self.ignored) do
    if seen == note then return end
  end
  if #self.ignored >= 8 then return end
  self.ignored[#self.ignored + 1] = note
  local text = "fileapi: ignoring a rate limit header that makes no sense: " .. note
  local ngx = rawget(_G, "ngx")
  if type(ngx) == "table" and ngx.log then
    ngx.log(ngx.NOTICE, text)
  elseif os.getenv("FILEAPI_DEBUG") then
    io.stderr:write(text, "\n")
  end
end

-- The three X-RateLimit values, each nil unless it makes sense: whole
-- counts from 0 (Limit from 1) to a million; Reset a finite time.
local function parse_headers(self, headers)
  local raw_limit, raw_remaining, raw_reset =
    headers["x-ratelimit-limit"], headers["x-ratelimit-remaining"], headers["x-ratelimit-reset"]
  local limit, remaining, reset = whole_count(raw_limit), whole_count(raw_remaining), tonumber(raw_reset)
  if raw_limit and not (limit and limit >= 1) then
    limit = nil
    self:ignore("X-RateLimit-Limit", raw_limit)
  end
  if raw_remaining and not remaining then self:ignore("X-RateLimit-Remaining", raw_remaining) end
  if raw_reset and not (reset and reset == reset and reset > -1e12 and reset < 1e12) then
    reset = nil
    self:ignore("X-RateLimit-Reset", raw_reset)
  end
  return limit, remaining, reset
end

-- With several requests in flight their answers may be read in another
-- order than the server counted them: an answer overtaken by a later one
-- says more remains than does.  Its Reset tells: the moment the oldest
-- counted request frees its slot only moves forward, and under one Reset
-- (one window) what remains only shrinks.  Whether an answer's word is at
-- least as new as the one known (`said`: its Remaining as sent).
local function newer_word(server, said, reset)
  if not (said and reset and server.said and server.reset) then return true end
  if reset ~= server.reset then return reset > server.reset end
  return said <= server.said
end

-- What a response said.  Reset is a UNIX time; Retry-After (seconds or a
-- date) blocks every request until it has passed, capped by max_retry_wait.
-- Returns what it took from the headers, checked: { limit, remaining,
-- reset, retry (seconds) }, each nil where absent or senseless.
function Budget:observe(headers, status, sleep)
  if not headers then return nil end
  local now = core.time()
  local limit, remaining, reset = parse_headers(self, headers)
  local retry = headers["retry-after"] and core.retry_after(headers["retry-after"], now)
  local facts = { limit = limit, remaining = remaining, reset = reset, retry = retry }
  if status == 429 and retry then self.blocked_until = max(self.blocked_until, now + min(retry, self.max_wait)) end
  if not (limit or remaining or reset) then return facts end
  self:if_unlocked(function()
    local log, server = self:load(now)
    server = server or {}
    server.limit = limit or server.limit
    local said = remaining
    if said and server.limit then said = min(said, server.limit) end
    if not newer_word(server, said, reset) then return end
    -- a request after a Reset waits for a word about a later one
    if reset and server.reset and reset > server.reset then server.await = nil end
    -- the others on their way may not be counted in this answer yet
    server.remaining = said and max(0, said - max(0, (self.flying or 1) - 1))
    server.said, server.reset = said, reset
    self:save(log, server)
  end, sleep)
  self.last = { limit = limit, remaining = remaining, reset = reset }
  return facts
end

-- { limit, remaining, reset, ignored } as the server last said, or nil.
function Budget:said()
  if self.last then self.last.ignored = self.ignored end
  return self.last or (self.ignored and { ignored = self.ignored })
end

return M
