-- fileapi.group: many calls at once, inside the clients' rate budgets.
--
--   local g = fileapi.group{ parallel = 8 }      -- at most 8 functions at once (default 4)
--   local h = g:spawn(function() return mkp:upload(path) end)   -- h.index: spawn order
--   for h, res, err in g:results() do ... end    -- completion order
--   local all = g:wait()                         -- spawn order: { { res, err }, ... }
--   g:cancel()                                   -- queued never start, running end aborted
--
-- Functions start when results() or wait() drives the group, at most
-- `parallel` at once, in spawn order.  Inside one, fileapi calls are written
-- as anywhere else; where one would block it lets the others run instead:
-- outside nginx the functions are coroutines of one loop on one libcurl
-- multi handle (fileapi.http.scheduler), inside nginx light threads on
-- cosockets (fileapi.http.threads).  A function may spawn more on its own
-- group: they are queued behind the rest.
local core = require "fileapi.core"
local util = require "fileapi.util"
local engine = require "fileapi.http.engine"

local setmetatable, pcall, tostring, type, floor = setmetatable, pcall, tostring, type, math.floor

local M = {}
local Group = {}
Group.__index = Group

M.DEFAULT_PARALLEL = 4
M.MAX_PARALLEL = 1000

local Handle = {}
Handle.__index = Handle
Handle.__tostring = function(h) return "fileapi.group handle #" .. h.index end

-- What a function's raise becomes: kind callback, the value as err.cause.
local function raised(value)
  local shown, text = pcall(tostring, value)
  if not shown or type(text) ~= "string" then text = "(a " .. type(value) .. " that cannot be shown)" end
  return util.new_error("callback", "the spawned function raised: " .. text:sub(1, 400), { cause = value })
end

-- What a function that never started says.
local function not_started(reason)
  local err = engine.stop_error(reason)
  err.message = reason == "interrupted" and "interrupted before it started" or "the group was cancelled before it started"
  return err
end

-- Why n is no group size, or nil: for every option that takes one.
function M.bad_parallel(n)
  if n ~= n or n < 1 or n > M.MAX_PARALLEL or n ~= floor(n) then
    return "parallel must be a whole number from 1 to " .. M.MAX_PARALLEL
  end
end

--- fileapi.group{ parallel = N } -> group | nil, err
function M.new(opts)
  opts = util.check_type(opts, "table", 1, "group", true) or {}
  util.check_keys(opts, "group", { "parallel" })
  local n = util.check_field(opts, "parallel", "number", "group")
  if n == nil then n = M.DEFAULT_PARALLEL end
  local bad = M.bad_parallel(n)
  if bad then return util.invalid(bad) end
  local runner, err = engine.group_runner()
  if not runner then return nil, err end
  return setmetatable({ parallel = n, runner = runner, handles = {}, outcomes = {}, queue = {}, head = 1,
    tail = 0, running = 0, finished = {}, reported = 0 }, Group)
end

local function finish(self, h, res, err)
  self.outcomes[h.index] = { res, err }
  self.finished[#self.finished + 1] = h
end

-- Nothing more starts; what is queued ends at once, what runs at its
-- runner's next chance.
local function halt(self, reason)
  if self.stop then return end
  self.stop = reason
  for i = self.head, self.tail do
    finish(self, self.queue[i][1], nil, not_started(reason))
    self.queue[i] = nil
  end
  self.head = self.tail + 1
  self.runner:halt(reason)
end

local function job(self, h, fn)
  return function()
    local ok, res, err = pcall(fn)
    if not ok then res, err = nil, raised(res) end
    self.running = self.running - 1
    finish(self, h, res, err)
  end
end

--- g:spawn(fn) -> handle (h.index: its spawn order); fn runs later
function Group:spawn(fn)
  util.check_type(fn, "function", 1, "spawn")
  local h = setmetatable({ index = #self.handles + 1 }, Handle)
  self.handles[h.index] = h
  if self.stop then
    finish(self, h, nil, not_started(self.stop))
  else
    self.tail = self.tail + 1
    self.queue[self.tail] = { h, fn }
    self.runner:poke()
  end
  return h
end

-- Starts queued functions while there is room.
local function fill(self)
  if core.interrupted() then halt(self, "interrupted") end
  while not self.stop and self.running < self.parallel and self.head <= self.tail do
    local item = self.queue[self.head]
    self.queue[self.head] = nil
    self.head = self.head + 1
    self.running = self.running + 1
    self.runner:launch(job(self, item[1], item[2]))
  end
end

-- One round: start what may start, then let the functions run until
-- something changed.  false when nothing runs any more.
local function round(self, what)
  self.runner:check_outside(what)
  fill(self)
  if self.running == 0 then return false end
  self.runner:turn()
  if self.runner.stop and not self.stop then halt(self, self.runner.stop) end
  return true
end

--- g:results() -> iterator over h, res, err in completion order
function Group:results()
  return function()
    while true do
      local h = self.finished[self.reported + 1]
      if h then
        self.reported = self.reported + 1
        local o = self.outcomes[h.index]
        return h, o[1], o[2]
      end
      if not round(self, "results()") then return nil end
    end
  end
end

--- g:wait() -> { { res, err }, ... } in spawn order
function Group:wait()
  while round(self, "wait()") do end
  local all = {}
  for i = 1, #self.handles do
    local o = self.outcomes[i]
    all[i] = { o[1], o[2] }
  end
  return all
end

--- g:cancel(): returns at once
function Group:cancel()
  halt(self, "cancelled")
end

return M
