-- Functions run side by side outside nginx: each in a coroutine, all driven
-- by one loop on one core.multi (one OS thread).  A function waits by
-- yielding to the loop instead of blocking: a transfer is added to the
-- multi and its coroutine parked until a run reports that session; a
-- sleep (a budget wait, a backoff, a Retry-After, an OAuth refresh under
-- way elsewhere) parks it until its wake time, and the run's timeout is the
-- nearest wake.  fileapi.group is built on this (inside nginx, on the light
-- threads of fileapi.http.threads, which answer the engine the same way).
--
-- The engine asks current() which runner the running code belongs to: a
-- function of a group, where it may yield; nil outside any group, inside a
-- transfer's callback (those run inside multi:run, which cannot be yielded
-- across), or past a C boundary.  Code that gets nil blocks as it always
-- did.
local core = require "fileapi.core"
local util = require "fileapi.util"

local setmetatable, pairs, ipairs, error, pcall = setmetatable, pairs, ipairs, error, pcall
local max, min = math.max, math.min
local running, yield, resume, status = coroutine.running, coroutine.yield, coroutine.resume, coroutine.status
-- nginx's Lua module replaces the coroutine table with one that has none
-- (its light threads may always yield)
local isyieldable = coroutine.isyieldable or function() return true end
local unpack = table.unpack or unpack -- luacheck: ignore 143 (LuaJIT's global)

local M = {}

-- The runner a coroutine's function belongs to (a scheduler here, or the
-- light threads of fileapi.http.threads).
local owner = setmetatable({}, { __mode = "k" })
-- The schedulers inside multi:run now, innermost last: Lua that runs
-- meanwhile is one of their transfers' callbacks.
local driving = {}

-- What a parked function yields: anything else is a yield of its own, and
-- it runs again at the next turn.
local PARK = setmetatable({}, { __tostring = function() return "fileapi: parked" end })

-- Whether a coroutine may yield from inside pcall, as the engine's waits
-- do (Lua 5.2 on, LuaJIT).  Lua 5.1 may not: there a group's functions
-- run one at a time, each call blocking as it does outside a group.
-- (nginx runs LuaJIT, whose coroutines there are its Lua module's own.)
M.CONCURRENT = rawget(_G, "ngx") ~= nil or (function()
  local probe = {}
  local co = coroutine.create(function() return pcall(yield, probe) end)
  local ok, value = resume(co)
  return ok and value == probe
end)()

function M.register(co, runner) owner[co] = runner end

function M.runner_of(co) return co and owner[co] end

-- The runner of the function running now, where it may wait by yielding
-- to it; nil elsewhere.
function M.current()
  if driving[1] then return nil end
  local co = running()
  local r = co and owner[co]
  if r and M.CONCURRENT and isyieldable() then return r end
  return nil
end

-- Whether one of `pool`'s sessions (fileapi.http.pool) has a callback
-- running now: a call from it on the same client is a call from inside one
-- of that client's own calls.
function M.in_callback_of(pool)
  for i = #driving, 1, -1 do
    local session = driving[i].multi:current()
    if session and pool:owns(session) then return true end
  end
  return false
end

-- A sleep of the coroutine's, cut short (its client was closed).
function M.cut(co)
  local r = owner[co]
  if r then r:cut(co) end
end

-- The error of a call that a stopped runner refuses or ends.
function M.stop_error(reason)
  if reason == "interrupted" then
    return util.new_error("aborted", "interrupted", { interrupted = true, request_sent = false })
  end
  return util.new_error("aborted", "the group was cancelled", { cancelled = true, request_sent = false })
end

local Scheduler = {}
Scheduler.__index = Scheduler

-- -> scheduler | nil, err
function M.new()
  local multi, err = core.multi()
  if not multi then return nil, err end
  local s = setmetatable({ multi = multi, parked = {}, sleepers = {}, ready = {}, live = 0, ended = 0 }, Scheduler)
  s.sleep_fn = function(seconds) return s:sleep(seconds) end
  return s
end

-- ---- what a function calls (through the engine) ------------------------------

-- The request on the session, while the other functions go on: what
-- session:perform would have returned.
function Scheduler:perform(session, creq)
  if self.stop then return nil, M.stop_error(self.stop) end
  local ok, err = self.multi:add(session, creq)
  if not ok then return nil, err end
  self.parked[session] = running()
  return yield(PARK)
end

-- true once `seconds` have passed; false when cut short (cancel, Ctrl-C,
-- the client closed).
function Scheduler:sleep(seconds)
  if self.stop then return false end
  self.sleepers[running()] = core.now() + max(seconds, 0)
  return yield(PARK)
end

-- ---- what the group calls ----------------------------------------------------

-- A new function: it runs from the next turn on.
function Scheduler:launch(job)
  local co = coroutine.create(job)
  owner[co] = self
  self.live = self.live + 1
  self.ready[#self.ready + 1] = { co, n = 0 }
end

-- Something changed beside the functions (one was queued): the next turn
-- does not wait.
function Scheduler:poke()
  self.poked = true
end

function Scheduler:cut(co)
  if self.sleepers[co] then
    self.sleepers[co] = nil
    self.ready[#self.ready + 1] = { co, n = 1, false }
  end
end

-- No function waits any longer: transfers in flight end aborted (reported
-- by the next run), sleeps are cut, and what asks to wait from now on is
-- refused.  reason: "cancelled" or "interrupted".
function Scheduler:halt(reason)
  if self.stop then return end
  self.stop = reason
  for session in pairs(self.parked) do self.multi:remove(session) end
  for co in pairs(self.sleepers) do self:cut(co) end
end

-- Raises when called from where waiting would deadlock: one of this
-- scheduler's own functions, or a callback of its transfers.
function Scheduler:check_outside(what)
  for _, s in ipairs(driving) do
    if s == self then error("group: " .. what .. " from a callback of one of its own calls", 4) end
  end
  if owner[running() or PARK] == self then
    error("group: " .. what .. " from inside one of its own functions would wait for itself", 4)
  end
end

local function resume_one(self, entry)
  local co = entry[1]
  local ok, what = resume(co, unpack(entry, 2, entry.n + 1))
  if status(co) == "dead" then
    owner[co] = nil
    self.live = self.live - 1
    self.ended = self.ended + 1
    if not ok then error(what, 0) end -- the group's own bookkeeping failed (out of memory)
  elseif what ~= PARK then
    self.ready[#self.ready + 1] = { co, n = 0 }
  end
end

local function collect(self, results)
  for _, r in ipairs(results) do
    local co = self.parked[r[1]]
    self.parked[r[1]] = nil
    local res, err = r[2], r[3]
    if err and self.stop == "cancelled" and err.kind == "aborted" then
      err.message, err.cancelled = "the group was cancelled", true
    end
    if co then self.ready[#self.ready + 1] = { co, n = 2, res, err } end
  end
end

local function wake_due(self)
  local now = core.now()
  for co, at in pairs(self.sleepers) do
    if at <= now then
      self.sleepers[co] = nil
      self.ready[#self.ready + 1] = { co, n = 1, true }
    end
  end
end

local function nearest_wake(self)
  local nearest
  for _, at in pairs(self.sleepers) do
    if not nearest or at < nearest then nearest = at end
  end
  return nearest
end

-- Waits for the network or a wake time, at most `timeout` seconds (nil:
-- until something happens), and readies whoever may go on.
local function wait(self, timeout)
  local nearest = nearest_wake(self)
  if nearest then
    local left = max(0, nearest - core.now())
    timeout = timeout and min(timeout, left) or left
  end
  if self.multi:count() > 0 then
    driving[#driving + 1] = self
    local ok, results, err = pcall(self.multi.run, self.multi, timeout)
    driving[#driving] = nil
    if not ok then error(results, 0) end
    if not results then error(tostring(err), 0) end
    collect(self, results)
  elseif timeout and timeout > 0 then
    core.sleep(timeout)
  end
  if core.interrupted() then self:halt("interrupted") end
  wake_due(self)
end

-- One turn of the loop: every function that may go on runs until it
-- waits again or ends; then, unless that changed anything, one wait.
function Scheduler:turn()
  local ended = self.ended
  local ready = self.ready
  self.ready = {}
  for _, entry in ipairs(ready) do resume_one(self, entry) end
  if core.interrupted() then self:halt("interrupted") end
  local busy = self.ended ~= ended or #self.ready > 0 or self.poked
  self.poked = false
  wait(self, busy and 0 or nil)
end

return M
