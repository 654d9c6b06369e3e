-- Run by spec/c/harness (see there): sweeps the allocation that fails over
-- every allocation an upload and a download make, on one session, and
-- three transfers at once on a multi.
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

local function plain_request()
  return { method = "GET", url = base .. "/v1/files/fsf_none", headers = { "Authorization: Bearer " .. key } }
end

-- After any outcome the session answers a plain request, or is closed.
local function still_works(s)
  s = s or session
  if not s:is_open() then return "closed" end
  local res, err = s:perform(plain_request())
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

-- Three transfers at once on one multi (an upload, a download, a plain
-- GET) on sessions of one share: each added one is reported exactly once
-- (a result, or nil, err), add and run raise nothing but a memory error,
-- and after it all the sessions and the multi work.
local share = assert(core.share())
local multi = assert(core.multi())
local msessions = { assert(core.session(share)), assert(core.session(share)), assert(core.session(share)) }

-- Called paused (harness.pause): only the core's calls run armed.
local function multi_round(reqs, seen)
  local added, reported, failing = {}, {}, true
  local function armed(fn, ...)
    if failing then harness.resume() end
    local ok, a, b = pcall(fn, ...)
    harness.pause()
    return ok, a, b
  end
  local function count(what)
    if seen then seen[what] = (seen[what] or 0) + 1 end
  end
  for i, s in ipairs(msessions) do
    local ok, r, e = armed(multi.add, multi, s, reqs[i])
    local what = outcome(ok, r, e)
    if ok and r then added[s] = true else count("add: " .. what) end
  end
  local rounds = 0
  while multi:count() > 0 do
    rounds = rounds + 1
    assert(rounds < 10000, "the multi never emptied")
    local ok, results = armed(multi.run, multi, 5)
    if not ok then
      outcome(ok, results)
      failing = false -- from here the rest must still be reported
      count("run: memory error")
    else
      for _, r in ipairs(results) do
        assert(added[r[1]], "a transfer that was not added, or reported twice")
        added[r[1]], reported[r[1]] = nil, true
        count(outcome(true, r[2], r[3]))
      end
    end
  end
  assert(next(added) == nil, "an added transfer was never reported")
  return reported
end

local function multi_requests()
  return { upload_request(), download_request(), plain_request() }
end

local function sweep_multi(run)
  collectgarbage()
  local reqs = multi_requests()
  harness.arm(0)
  harness.pause()
  local reported = multi_round(reqs)
  local total = harness.disarm()
  for _, s in ipairs(msessions) do assert(reported[s], "multi: the dry run failed") end
  reqs[1].multipart:close()
  local seen, runs = {}, 0
  for n = 1, total + 8 do
    reqs = multi_requests()
    collectgarbage()
    harness.arm(n, run)
    harness.pause()
    multi_round(reqs, seen)
    local _, failed = harness.disarm()
    if failed > 0 then runs = runs + 1 end
    for _, s in ipairs(msessions) do still_works(s) end
    reqs[1].multipart:close()
  end
  -- and the multi itself
  assert(multi:add(msessions[1], plain_request()))
  local results = multi:run(30)
  assert(#results == 1 and results[1][2] and results[1][2].status == 404, "the multi no longer works")
  local parts = {}
  for what, count in pairs(seen) do parts[#parts + 1] = what .. " " .. count end
  table.sort(parts)
  print(("multi: %d allocations for three transfers, %d runs with a failed allocation (%d in a row): %s")
    :format(total, runs, run, table.concat(parts, ", ")))
  assert(runs > 0, "multi: no allocation failed")
end

local listed = arg[3]
sweep_listing(listed)

post_admin("/_mock/faults", '[{"type":"file","size":200000,"path":"/conf","count":1000000}]')
for _, run in ipairs({ 2, 1000000 }) do
  sweep("upload", upload_request, run)
  sweep("download", download_request, run)
  sweep_multi(run)
end
session:close()
multi:close()
for _, s in ipairs(msessions) do s:close() end
share:close()
print("ok")
