-- Functions run side by side inside nginx: each on a light thread
-- (ngx.thread.spawn), the cosockets doing the concurrency.  The same runner
-- face as fileapi.http.scheduler, so that fileapi.group is one code on both:
-- launch, turn (wait until something changed), poke, halt, cut, sleep.  A
-- sleep waits on a semaphore of its own, so that cancel() and close() can
-- cut it short; a transfer in flight ends at the cosocket transport's next
-- look at the request's `cancelled`.
local scheduler = require "fileapi.http.scheduler"
local cosocket = require "fileapi.http.cosocket"

local setmetatable, pairs, pcall, error, tostring = setmetatable, pairs, pcall, error, tostring
local running = coroutine.running

local M = {}
local Threads = {}
Threads.__index = Threads

local ngx = rawget(_G, "ngx")
-- nginx's own module: there is none outside nginx, where no group runs on
-- light threads (a probe, not a dependency)
local has_semaphore, semaphore = pcall(require, "ngx.semaphore")

-- Below this a sleep is a yield to the others, not worth a semaphore (and
-- shorter than a semaphore's millisecond clock).
local SHORTEST = 0.002

-- -> runner | nil, err
function M.new()
  if not has_semaphore then return nil, "light threads need nginx's ngx.semaphore" end
  local sema, err = semaphore.new()
  if not sema then return nil, err end
  local t = setmetatable({ semaphore = semaphore, changed = sema, sleepers = {}, live = 0 }, Threads)
  t.sleep_fn = function(seconds) return t:sleep(seconds) end
  return t
end

-- A new function on a light thread of its own; spawn runs it until it
-- first waits.
function Threads:launch(job)
  self.live = self.live + 1
  local ok, why = pcall(ngx.thread.spawn, function()
    scheduler.register(running(), self)
    local done, err = pcall(job)
    self.live = self.live - 1
    self.changed:post(1)
    if not done then ngx.log(ngx.ERR, "fileapi: a group's bookkeeping failed: ", tostring(err)) end
  end)
  if not ok then
    self.live = self.live - 1
    error(why, 0)
  end
end

function Threads:poke()
  self.changed:post(1)
end

-- Waits until a function ends or something is queued (a second at most:
-- nothing is lost by looking again).
function Threads:turn()
  self.changed:wait(1)
end

function Threads:sleep(seconds)
  if self.stop then return false end
  if seconds < SHORTEST then
    cosocket.sleep(seconds) -- (never a sleep(0), which nginx warns of)
    return not self.stop
  end
  local co = running()
  local sema = self.semaphore.new()
  self.sleepers[co] = sema
  local cut = sema:wait(seconds) -- true: posted by cut(), not timed out
  self.sleepers[co] = nil
  return not (cut or self.stop)
end

function Threads:cut(co)
  local sema = self.sleepers[co]
  if sema then
    self.sleepers[co] = nil
    sema:post(1)
  end
end

function Threads:halt(reason)
  if self.stop then return end
  self.stop = reason
  for co in pairs(self.sleepers) do self:cut(co) end
end

function Threads:check_outside(what)
  if scheduler.runner_of(running()) == self then
    error("group: " .. what .. " from inside one of its own functions would wait for itself", 4)
  end
end

return M
