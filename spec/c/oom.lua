-- Run by spec/c/harness (see there): sweeps the allocation that fails over
-- every allocation an upload and a download make, on one session.
--   harness oom.lua BASE_URL API_KEY DIR (DIR: a folder of 40 files)
-- luacheck: read globals harness
local core = require "fileapi.core"
local base, key = arg[1], arg[2]

local session = assert(core.session())

local function post_admin(path, json)
  local res = assert(session:perform({ method = "POST", url = base .. path, body = json,
    headers = { "Content-Type: application/json" } }))
  assert(res.status == 200, path)
end

local function upload_request()
  local chunks, i = { ("a"):rep(5000), ("b"):rep(5000), ("c"):rep(5000), ("d"):rep(5000) }, 0
  local body = assert(core.multipart({
    { name = "file", filename = "r.bin", content_type = "application/octet-stream", size = 20000,
      reader = function()
        i = i + 1
        return chunks[i]
      end,
      rewind = function()
        i = 0
        return true
      end },
  }))
  return { method = "POST", url = base .. "/v1/files", multipart = body,
    headers = { "Authorization: Bearer " .. key, "Content-Type: " .. body:content_type() },
    on_progress = function(sent, total) return sent <= total end }
end

local function download_request()
  local got = 0
  return { method = "GET", url = base .. "/conf/download",
    decide = function(status) return status == 200 and "sink" or "buffer", 0 end,
    sink = function(chunk)
      got = got + #chunk
      return true
    end,
    on_received = function(n) return n >= 0 end }
end

-- After any outcome the session answers a plain request, or is closed.
local function still_works()
  if not session:is_open() then return "closed" end
  local res, err = session:perform({ method = "GET", url = base .. "/v1/files/fsf_none",
    headers = { "Authorization: Bearer " .. key } })
  assert(res, "the session no longer works: " .. tostring(err and err.message))
  assert(res.status == 404, "unexpected status " .. tostring(res.status))
  return "works"
end

local function outcome(ok, res, err)
  if not ok then
    assert(tostring(res):find("not enough memory", 1, true), "raised something else: " .. tostring(res))
    return "memory error"
  end
  if res then return "result" end
  assert(core.is_error(err), "neither a result nor an error object")
  return "error (" .. tostring(err.kind) .. ")"
end

local function sweep(name, make, run)
  collectgarbage()
  local req = make()
  harness.arm(0)
  local res = session:perform(req)
  local total = harness.disarm()
  assert(res and res.status >= 200 and res.status < 300, name .. ": the dry run failed")
  local seen, runs = {}, 0
  for n = 1, total + 8 do
    req = make()
    collectgarbage()
    harness.arm(n, run)
    local ok, r, e = pcall(session.perform, session, req)
    local _, failed = harness.disarm()
    local what = outcome(ok, r, e)
    if failed > 0 then
      seen[what] = (seen[what] or 0) + 1
      runs = runs + 1
    end
    still_works()
    if req.multipart then req.multipart:close() end
  end
  local parts = {}
  for what, count in pairs(seen) do parts[#parts + 1] = what .. " " .. count end
  table.sort(parts)
  print(("%s: %d allocations in a transfer, %d runs with a failed allocation (%d in a row): %s")
    :format(name, total, runs, run, table.concat(parts, ", ")))
  assert(runs > 0, name .. ": no allocation failed")
end

-- a 64-bit inode is kept whole (it was cut to an int)
assert(harness.inode_id(2049, 5000000123) == "2049:5000000123", harness.inode_id(2049, 5000000123))

-- A listing whose allocations fail part way must still close its folder
-- (LeakSanitizer reports an open DIR at exit).
local function sweep_listing(dir)
  harness.arm(0)
  assert(#core.list_dir(dir) == 40)
  local total = harness.disarm()
  local raised = 0
  for n = 1, total + 4 do
    harness.arm(n, 1000000)
    local ok, list = pcall(core.list_dir, dir)
    harness.disarm()
    if not ok then raised = raised + 1 else assert(#list == 40) end
    collectgarbage()
  end
  print(("list_dir: %d allocations, %d runs raised a memory error"):format(total, raised))
  assert(raised > 0)
end

local listed = arg[3]
sweep_listing(listed)

post_admin("/_mock/faults", '[{"type":"file","size":200000,"path":"/conf","count":1000000}]')
for _, run in ipairs({ 2, 1000000 }) do
  sweep("upload", upload_request, run)
  sweep("download", download_request, run)
end
session:close()
print("ok")
