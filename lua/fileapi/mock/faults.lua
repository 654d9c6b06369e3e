-- The mock's faults (POST /_mock/faults): a queue, taken in order, each by
-- the next request it matches (`path`: a prefix; `skip`: let that many
-- through first; `count`: how many it takes, default 1).  A `refuse` is no
-- request's: when it comes first in the queue the API port closes for
-- `seconds` (new connections refused, idle kept-alive ones closed), as a
-- server that went away; the faults queued after it wait for their turn.
-- A `drop` lets the request be handled, then cuts its answer mid-body.
local cjson = require "cjson"
local socket = require "socket"
local loop = require "fileapi.mock.loop"
local http = require "fileapi.mock.http"

local M = {}

-- Starts the refusals at the head of the queue (state.refuse does it).
local function advance(state)
  while state.faults[1] and state.faults[1].type == "refuse" do
    local f = table.remove(state.faults, 1)
    local now = socket.gettime()
    state.refusing_until = math.max(state.refusing_until or 0, now) + (tonumber(f.seconds) or 1)
    if state.refuse then state.refuse() end
  end
end

function M.queue(state, list)
  for _, f in ipairs(list) do state.faults[#state.faults + 1] = f end
  advance(state)
end

-- The fault this request takes, if any (nothing behind a refusal to come).
function M.take(state, req)
  for i, f in ipairs(state.faults) do
    if f.type == "refuse" then return nil end
    local matches = not f.path or req.path:sub(1, #f.path) == f.path
    -- skip: let that many matching requests through first
    if matches and (f.skip or 0) > 0 then
      f.skip = f.skip - 1
      matches = false
    end
    if matches then
      f.count = (f.count or 1) - 1
      if f.count <= 0 then
        table.remove(state.faults, i)
        advance(state)
      end
      return f
    end
  end
end

local function send_slowly(conn, data, interval)
  for i = 1, #data do
    if not conn:send(data:sub(i, i)) then return end
    loop.sleep(interval)
  end
end

-- The 16-byte pattern helper.write_file writes: a served file's bytes can be
-- checked against a file the test writes itself.
local PATTERN = "0123456789abcdef"
local BLOCK = PATTERN:rep(4096)

-- `count` bytes of the pattern starting at `offset`, in 64 KiB sends.
local function send_pattern(conn, offset, count)
  while count > 0 do
    local start = offset % 16
    local n = math.min(count, #BLOCK - start)
    if not conn:send(BLOCK:sub(start + 1, start + n)) then return false end
    offset, count = offset + n, count - n
  end
  return true
end

-- A scripted response: { send = "..." }, { pause = seconds },
-- { pattern = { offset, count } }; then the connection closes unless `keep`.
local function play_steps(conn, f)
  for _, step in ipairs(f.steps) do
    if step.send and not conn:send(step.send) then return false end
    if step.pause then loop.sleep(step.pause) end
    if step.pattern and not send_pattern(conn, math.floor(step.pattern[1]), math.floor(step.pattern[2])) then
      return false
    end
  end
  return f.keep == true
end

-- A download: `size` bytes of the pattern, with Range/If-Range when `ranges`;
-- `drop_at` closes the connection after that many body bytes.
local function play_file(conn, req, f)
  local size, first = math.floor(f.size), 0 -- JSON numbers arrive as floats
  local etag = f.etag or '"v1"'
  local range = req.headers.range
  local status, headers = 200, { { "Content-Type", "application/octet-stream" } }
  if f.ranges then
    headers[#headers + 1] = { "Accept-Ranges", "bytes" }
    headers[#headers + 1] = { "ETag", etag }
    local from = range and range:match("^bytes=(%d+)%-$")
    local if_range = req.headers["if-range"]
    if from and (not if_range or if_range == etag) and tonumber(from) < size then
      first = tonumber(from)
      status = 206
      headers[#headers + 1] = { "Content-Range", ("bytes %d-%d/%d"):format(first, size - 1, size) }
    end
  end
  conn:send(http.response_head(status, headers, size - first, false))
  local count = size - first
  if f.drop_at then count = math.min(count, math.floor(f.drop_at)) end
  if not send_pattern(conn, first, count) then return false end
  return count == size - first
end

-- A status with its headers and body; retry_after: a Retry-After in
-- seconds; close: Connection: close; drop_after: says keep-alive, then
-- closes (a stale pooled connection).
local function play_status(conn, f)
  local headers = { { "Content-Type", f.content_type or "application/json" } }
  for k, v in pairs(f.headers or {}) do headers[#headers + 1] = { k, v } end
  if f.retry_after then headers[#headers + 1] = { "Retry-After", ("%d"):format(math.ceil(f.retry_after)) } end
  local body = f.body or cjson.encode({ message = f.message or "fault" })
  http.respond(conn, math.floor(f.status or 503), headers, body, f.close)
  return not (f.close or f.drop_after)
end

local function play_oversized(conn, f)
  local size = f.size or 2 * 1024 * 1024
  conn:send(http.response_head(201, { { "Content-Type", "application/json" } }, size, true))
  local chunk = ("x"):rep(65536)
  local sent = 0
  while sent < size do
    if not conn:send(chunk:sub(1, math.min(#chunk, size - sent))) then return false end
    sent = sent + #chunk
  end
  return false
end

-- Plays a fault; returns true to keep the connection open, nil for a
-- delay (then the usual answer).  `keep`: the bytes of a body recorded.
function M.play(conn, req, f, keep)
  local t = f.type
  if t == "delay" then
    loop.sleep(f.seconds or 1)
    return nil
  end
  if t == "drop_upload" then
    http.read_body(conn, req, keep, f.after or 65536)
    return false
  end
  if t ~= "stall_before_body" then http.read_body(conn, req, keep) end
  if t == "stall" or t == "stall_before_body" then
    loop.sleep(f.seconds or 30)
    return false
  elseif t == "status" then
    return play_status(conn, f)
  elseif t == "steps" then
    return play_steps(conn, f)
  elseif t == "file" then
    return play_file(conn, req, f)
  elseif t == "raw" then
    conn:send(f.raw)
    if f.seconds then loop.sleep(f.seconds) end
    return false
  elseif t == "oversized" then
    return play_oversized(conn, f)
  elseif t == "stall_response" then
    conn:send(http.response_head(201, { { "Content-Type", "application/json" } }, 200, false)
      .. '{"id":"fsf_')
    loop.sleep(f.seconds or 30)
    return false
  elseif t == "trickle" then
    local body = f.body or '{"id":"fsd_trickle0001","type":"directory","name":"slow"}'
    conn:send(http.response_head(f.status or 201, { { "Content-Type", "application/json" } }, #body, true))
    send_slowly(conn, body, f.interval or 1)
    return false
  end
  return false
end

-- A drop: the answer's head (its whole length announced) and `after`
-- bytes of its body (default: half), then the connection closes.
function M.cut(conn, f, status, headers, body)
  local after = math.min(#body, math.floor(tonumber(f.after) or #body / 2))
  conn:send(http.response_head(status, headers, #body, true) .. body:sub(1, after))
end

return M
