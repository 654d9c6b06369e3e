-- A client's libcurl sessions: one per call in flight, all on one
-- core.share(), so that connections, the DNS cache and TLS sessions are
-- the client's whichever session a call runs on.  A call takes a session
-- (an idle one if any, else a new one) and gives it back when it is over;
-- a client used one call at a time keeps using the one session it always
-- had.  Idle sessions are kept up to the share's own cache of idle
-- connections: more would hold easy handles with nothing to reuse.
local core = require "fileapi.core"
local util = require "fileapi.util"

local setmetatable, pairs, ipairs = setmetatable, pairs, ipairs

local M = {}
local Pool = {}
Pool.__index = Pool

M.MAX_IDLE = 64

-- -> pool | nil, err
function M.new()
  local share, err = core.share()
  if not share then return nil, err end
  -- busy is weak: a session whose call was dropped mid-way (a group
  -- abandoned with its functions parked) goes with it
  return setmetatable({ share = share, idle = {}, busy = setmetatable({}, { __mode = "k" }), count = 0 }, Pool)
end

-- A session for one call: nil, err once the pool is closed (the call it was
-- for ends aborted) or when libcurl cannot make one.
function Pool:take()
  if self.closed then
    return nil, util.new_error("aborted", "the client was closed during the call", { request_sent = false })
  end
  local idle = self.idle
  local session = idle[#idle]
  if session then
    idle[#idle] = nil
  else
    local err
    session, err = core.session(self.share)
    if not session then return nil, err end
    self.count = self.count + 1
  end
  self.busy[session] = true
  return session
end

-- The call is over: its session waits for the next one (closed instead
-- once the pool is, or when enough are idle).
function Pool:give(session)
  if not self.busy[session] then return end
  self.busy[session] = nil
  if self.closed or #self.idle >= M.MAX_IDLE or not session:is_open() then
    session:close()
    self.count = self.count - 1
    return
  end
  self.idle[#self.idle + 1] = session
end

-- Whether the session is one of this pool's calls in flight.
function Pool:owns(session)
  return self.busy[session] == true
end

-- How many sessions the pool holds (busy and idle).
function Pool:size()
  return self.count
end

-- Closes every session: idle ones at once; the core ends a busy one's
-- transfer aborted (deferred while one of its callbacks runs) and closes
-- it once that transfer is over.  Idempotent.
function Pool:close()
  if self.closed then return end
  self.closed = true
  for _, session in ipairs(self.idle) do session:close() end
  self.idle = {}
  for session in pairs(self.busy) do session:close() end
  self.share:close()
end

return M
