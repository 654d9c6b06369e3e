-- The rate budget of a fleet: the rolling log of sends that
-- fileapi.http.budget keeps per process, kept once in the store for every
-- machine that uses the same key, so that together they stay within the
-- service's limit.  The engine hands it the process's own budget, which it
-- wraps (Store:budget): the store never imports the engine's modules.
--
-- One atomic script per request takes a slot (ACQUIRE): its clock is Redis's
-- TIME, so machines whose clocks disagree still agree on the log.  A slot
-- that went unused is given back: a request never sent, or one the server
-- refused with 429 (a throttle counts what it lets through).  A 429's
-- Retry-After, and Remaining 0 with a Reset, set a fleet-wide "wait until"
-- mark: one machine's 429 slows the others too.  The limit the server names
-- is kept in the store as well, so a machine that has not heard the server
-- yet paces by what another heard.
--
-- The process's own budget keeps observing every answer and records every
-- send, so that when the store fails it takes over at once ("local"), still
-- obeying the server's headers.
local core = require "fileapi.core"
local redis = require "fileapi.store.redis"

local tonumber, tostring, format, max, min = tonumber, tostring, string.format, math.max, math.min
local running = coroutine.running

local M = {}

-- A send is counted on the server's clock when it arrives, which is later
-- than Redis's TIME when the slot was taken, by a delay that differs between
-- processes and machines.  The slot after the limit's oldest is taken as
-- free only this much after the window; see docs/internals/pacing.md for
-- the delays measured here.
function M.margin(window)
  return max(0.15, window * 0.01)
end

-- Until anyone has heard the server (no limit known fleet-wide), one
-- request goes first and brings the limit back; the others wait for it this
-- long at most.
local PROBE = 2

M.ACQUIRE = redis.script([[
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local window, margin, cap, probe = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[5])
local learned = redis.call('GET', KEYS[3])
local limit = tonumber(learned or '')
if limit == 0 then limit = nil end
if cap > 0 and (not limit or cap < limit) then limit = cap end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window - margin)
local wait = tonumber(redis.call('GET', KEYS[2]) or '0') - now
local n = redis.call('ZCARD', KEYS[1])
if limit and n >= limit then
  local r = redis.call('ZRANGE', KEYS[1], n - limit, n - limit, 'WITHSCORES')
  wait = math.max(wait, tonumber(r[2]) + window + margin - now)
elseif not learned and n > 0 then
  local r = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  if tonumber(r[2]) > now - probe then wait = math.max(wait, 0.02) end
end
if ARGV[6] ~= '' then
  redis.call('ZADD', KEYS[4], now, ARGV[6])
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - 2 * window)
  redis.call('PEXPIRE', KEYS[4], math.ceil(2000 * window) + 1000)
end
local peers = redis.call('ZCARD', KEYS[4])
if wait > 0 then return {0, string.format('%.4f', wait), learned or '', peers, n} end
redis.call('ZADD', KEYS[1], now, ARGV[4])
redis.call('PEXPIRE', KEYS[1], math.ceil((window + margin) * 1000) + 1000)
return {1, string.format('%.6f', now), learned or '', peers, n + 1}
]])

-- KEYS: the log, the mark, the limit, the peers (who took part in the last
-- two windows: while the store is away each takes its share of the limit).
-- What an answer told: give the slot back (429), block the fleet for a
-- while, the server's limit ('0': it names none).
M.OBSERVE = redis.script([[
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
if ARGV[2] == '1' then redis.call('ZREM', KEYS[1], ARGV[1]) end
local block = tonumber(ARGV[3])
if block > 0 then
  local untilt = now + block
  if untilt > tonumber(redis.call('GET', KEYS[2]) or '0') then
    redis.call('SET', KEYS[2], string.format('%.4f', untilt), 'PX', math.ceil(block * 1000) + 1000)
  end
end
if ARGV[4] ~= '' then redis.call('SET', KEYS[3], ARGV[4], 'EX', 3600) end
return 1
]])

-- Sends a process made on its own while the store was away, put into the
-- log when it answers again (a Redis that restarted empty would otherwise
-- let the whole limit go at once): ARGV: Redis's clock minus the process's,
-- then pairs of a local time and a member.
M.REPLAY = redis.script([[
local offset = tonumber(ARGV[1])
for i = 2, #ARGV - 1, 2 do redis.call('ZADD', KEYS[1], tonumber(ARGV[i]) + offset, ARGV[i + 1]) end
redis.call('PEXPIRE', KEYS[1], 600000)
return 1
]])
local MAX_REPLAY = 100

-- A slot moved to Redis's now, if it is still in the log.
M.SETTLE = redis.script([[
local t = redis.call('TIME')
redis.call('ZADD', KEYS[1], 'XX', tonumber(t[1]) + tonumber(t[2]) / 1e6, ARGV[1])
return 1
]])

local Fleet = {}
Fleet.__index = Fleet
local replay

local MAIN = {}

-- A name for this process's sends in the shared log, unique fleet-wide.
local process_id
local sends = 0
local function new_member()
  if not process_id then process_id = core.random_token(12) or tostring(core.time()) end
  sends = sends + 1
  return process_id .. ":" .. sends
end

-- Who shares one local budget: this process, or every worker of an nginx
-- whose budget lives in a lua_shared_dict.
local function peer_id(loc)
  new_member()
  if not loc.dict then return process_id end
  local key = loc.dict_key .. ":peer"
  loc.dict:add(key, process_id)
  return loc.dict:get(key) or process_id
end

-- loc: the process's own budget (fileapi.http.budget); store: an open
-- fileapi.store; rate_key: what the service counts by; opts: the checked
-- transport options.
function M.new(loc, store, rate_key, opts)
  local f = setmetatable({ loc = loc, store = store, window = loc.window, cap = loc.cap or 0, own_cap = loc.cap,
    max_wait = loc.max_wait, wait_for = opts.timeout, held = {}, peer = peer_id(loc), peers = 1 }, Fleet)
  f:rekey(rate_key)
  return f
end

-- The store's keys for a rate key (again when an OAuth grant's name is
-- learnt: a slot taken under the old name stays there until it expires).
function Fleet:rekey(rate_key)
  local store = self.store
  self.keys = { store:key("rate", rate_key, "log"), store:key("rate", rate_key, "until"),
    store:key("rate", rate_key, "limit"), store:key("rate", rate_key, "peers") }
  if self.loc.rekey then self.loc:rekey(rate_key) end
end

-- While the store is away, this budget's share of the limit: the others
-- that took part lately are taking theirs.
local function share_cap(self)
  -- the limit the server named last to any worker sharing this budget; a
  -- server that names none ("0" in the store) leaves nothing to share out,
  -- and no window to wait for
  local _, server = self.loc:load(core.time())
  local limit = server and server.limit or tonumber(self.known_limit or "")
  if limit and limit <= 0 then limit = nil end
  local cap = self.own_cap
  if limit and self.peers > 1 then
    local share = math.max(1, math.floor(limit / self.peers))
    cap = cap and min(cap, share) or share
  end
  -- in the outage's first window, the server still counts the fleet's
  -- sends before it: each sends again as its own leave the window, and its
  -- share of what the fleet left unused (a process that never reached the
  -- store knows nothing of that window, and takes its share)
  if self.first_window_until and core.time() < self.first_window_until and limit and self.fleet_count then
    local unused = math.max(0, limit - self.fleet_count)
    cap = min(cap or math.huge, math.max(1, self.own_recent + math.floor(unused / math.max(1, self.peers))))
  end
  return cap
end

-- One try on this process's own budget while the store is away: true
-- (taken), or seconds to wait, or false and seconds when the wait is past
-- what the client can justify.  Waits are cut at the store's next try, so
-- that a call asleep here notices the store's return.
local function try_own(self, sleep, on_wait)
  if not self.away_since then
    -- the sends the store last counted leave the server's window a window
    -- after that contact
    local now = core.time()
    self.away_since, self.first_window_until = now, (self.last_contact or 0) + self.window
    self.own_recent = #self.loc:load(now)
  end
  self.loc.cap = share_cap(self)
  local wait, too_long = self.loc:wait_time()
  if too_long then return false, wait end
  if wait <= 0 then return self.loc:acquire(sleep, on_wait) end
  return min(wait, max(self.store.down_until - core.time(), 0.01))
end

-- From the store's return to a window after, the others may still be on
-- their own budgets, which the store's log does not hold: a send needs
-- this budget's share as well as the store's slot.
local function share_wait(self)
  if not (self.settling_until or self.away_since) then return 0 end
  if self.settling_until and core.time() >= self.settling_until then
    self.settling_until = nil
    return 0
  end
  self.loc.cap = share_cap(self)
  local wait = self.loc:wait_time()
  self.loc.cap = self.own_cap
  return wait
end

local function took(self, member)
  self.held[running() or MAIN] = { member = member, at = core.time() }
  self.loc:record()
  return true
end

-- Back from an outage: what this process sent alone goes into the log.
replay = function(self)
  local since = self.away_since
  self.away_since = nil
  self.settling_until = core.time() + self.window + M.margin(self.window)
  if not self.offset then return end
  local log = self.loc:load(core.time())
  local args = { format("%.6f", self.offset) }
  for i = math.max(1, #log - MAX_REPLAY + 1), #log do
    if log[i] > since then
      args[#args + 1] = format("%.6f", log[i])
      args[#args + 1] = new_member()
    end
  end
  if #args > 1 then self.store:eval(M.REPLAY, self.keys, args) end
end

-- One try at a slot: true (taken), or seconds to wait, or nil when the
-- store failed (it is then marked unavailable).
local function try_slot(self)
  local own = share_wait(self)
  if own > 0 then return own end
  local member = new_member()
  -- this budget's presence among the peers, renewed a few times a window
  local now, peer = core.time(), ""
  if now - (self.peer_told or 0) >= min(1, self.window / 4) then peer, self.peer_told = self.peer, now end
  local r = self.store:eval(M.ACQUIRE, self.keys, { self.window, M.margin(self.window), self.cap, member, PROBE, peer })
  if not r then return nil end
  if self.away_since then replay(self) end
  self.loc.cap = self.own_cap
  self.known_limit = r[3] ~= "" and r[3] or nil
  self.peers, self.fleet_count, self.last_contact = tonumber(r[4]) or 1, tonumber(r[5]), now
  if tonumber(r[1]) ~= 1 then return max(tonumber(r[2]) or 0.05, 0.001) end
  self.offset = tonumber(r[2]) - core.time()
  return took(self, member)
end

-- As fileapi.http.budget's acquire: true; or false, seconds (too long to
-- wait); or false when a sleep was interrupted; or false, nil, err when the
-- store stayed away from a "wait" caller: it waits within the call's
-- timeout and the store's own limit (Store:wait_limit), counted from when
-- the store went missing.  on_wait(seconds, reason) is told of
-- each wait: reason nil for pacing, "store" for the store's return.
function Fleet:acquire(sleep, on_wait)
  local waited = 0
  local call_deadline = self.wait_for and core.time() + self.wait_for or math.huge
  local missing_since
  while true do
    local got, too_long
    if self.store:usable() then
      got = try_slot(self)
      if got ~= nil then missing_since = nil end
    elseif self.store.cfg.on_unavailable ~= "wait" then
      got, too_long = try_own(self, sleep, on_wait)
      if got == false then return false, too_long end
    else
      missing_since = missing_since or core.time()
      if not self.store:wait_until_usable(sleep, min(call_deadline, missing_since + self.store:wait_limit()),
          on_wait) then
        return false, nil, self.store:unavailable_error(core.time() - missing_since)
      end
    end
    if got == true then return true end
    if got then
      if waited + got > self.window + self.max_wait then return false, got end
      if on_wait and got >= 0.05 then pcall(on_wait, got) end
      if sleep(got) == false then return false end
      waited = waited + got
    end
  end
end

-- How long the fleet is to hold off after an answer: what the process's
-- own budget took from its headers (checked there).
local function said_block(self, said, status, now)
  local block = 0
  if status == 429 and said.retry then block = min(said.retry, self.max_wait) end
  local reset = said.reset
  if said.remaining == 0 and reset then
    local until_reset = reset + self.loc.RESET_MARGIN - now
    -- a reset past a whole window is nothing a window explains: the
    -- process's own budget answers rate_limited for it instead
    if until_reset > 0 and until_reset <= self.window + M.margin(self.window) + self.loc.RESET_SLACK then
      block = max(block, until_reset)
    end
  end
  return block
end

-- What a response said: to the process's own budget, and to the fleet
-- when it changes anything there (a 429, a block, a limit not yet shared).
function Fleet:observe(headers, status, sleep)
  local said = self.loc:observe(headers, status, sleep)
  if not said then return end
  local held = self.held[running() or MAIN]
  local member = held and held.member
  local block = said_block(self, said, status, core.time())
  local limit = said.limit and tostring(said.limit) or (self.known_limit == nil and "0" or "")
  if limit == self.known_limit then limit = "" end
  local give_back = status == 429 and member
  if not (give_back or block > 0 or limit ~= "") or not self.store:usable() then return end
  if give_back then self.held[running() or MAIN] = nil end
  self.store:eval(M.OBSERVE, self.keys, { member or "", give_back and "1" or "0", format("%.4f", block), limit })
  if limit ~= "" then self.known_limit = limit end
end

-- An attempt is over.  One that never left gives its slot back.  One that
-- took long (a new connection, a slow server, a big body) may have reached
-- the server well after its slot's time, by more than the margin covers:
-- its slot is moved to now, when it has surely arrived.  Fast ones, most of
-- them, cost nothing more.
function Fleet:done(res, err, sleep)
  self.loc:done(res, err, sleep)
  local co = running() or MAIN
  local held = self.held[co]
  self.held[co] = nil
  if not held or not self.store:usable() then return end
  if not res and err and err.request_sent == false then
    self.store:call("ZREM", self.keys[1], held.member)
  elseif core.time() - held.at >= M.margin(self.window) / 2 then
    self.store:eval(M.SETTLE, self.keys, { held.member })
  end
end

function Fleet:said() return self.loc:said() end

return M
