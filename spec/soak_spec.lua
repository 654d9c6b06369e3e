-- Many requests on one client, and many transfers on a multi: RSS must not
-- grow.  SOAK_COUNT sets the
-- count (2,000 by default; `make soak` runs 20,000).
local helper = require "helper"

-- What a soak script starts with: rss(), the process's resident set in kB.
local RSS = [[
  local function rss()
    collectgarbage(); collectgarbage()
    for line in io.lines("/proc/self/status") do
      local kb = line:match("^VmRSS:%s*(%d+) kB")
      if kb then return tonumber(kb) end
    end
  end
]]

-- Runs `body` (after RSS) in a child against the mock with arg[1] its base
-- URL and arg[2] the count; it writes the RSS after the warm-up and at the
-- end.  Prints them and checks that the growth stays under 2 MiB.
local function soak(mock, what, count, body)
  local script = helper.write_text(helper.tmpname(".lua"), RSS .. body)
  local code, out = helper.run_lua(helper.sh_quote(script) .. " " .. mock.mkp_url .. " " .. count)
  os.remove(script)
  assert.same(0, code, out)
  local before, after = out:match("^(%d+) (%d+)$")
  before, after = tonumber(before), tonumber(after)
  print(("\n  %s: %d %s, RSS %.1f MiB after warm-up, %.1f MiB at the end (growth %d kB)")
    :format(what[1], count, what[2], before / 1024, after / 1024, after - before))
  assert.is_true(after - before < 2048, out)
end

describe("soak #soak", function()
  local mock
  setup(function() mock = helper.start_mock() end)
  teardown(function() mock:stop() end)

  it("keeps RSS growth under 2 MiB over many requests on one connection", function()
    local count = tonumber(os.getenv("SOAK_COUNT") or "2000")
    soak(mock, { "soak", "requests" }, count, [[
      local files = require "fileapi.files"
      local count = tonumber(arg[2])
      local client = assert(files.new({ api_key = "test-key", base_url = arg[1] }))
      local warm = math.floor(count / 10)
      local before
      for i = 1, count do
        if i % 2 == 0 then
          assert(client:mkdir("d" .. i))
        else
          assert(client:upload({ data = "payload " .. i, filename = "f" .. i .. ".txt" }))
        end
        if i == warm then before = rss() end
      end
      io.write(before, " ", rss())
    ]])
    local stats = mock:stats()
    assert.same(count, stats.requests)
    assert.same(1, stats.connections)
  end)

  it("keeps RSS growth under 2 MiB over many transfers four at a time on a multi", function()
    mock:reset()
    local count = tonumber(os.getenv("SOAK_COUNT") or "2000")
    soak(mock, { "multi soak", "transfers" }, count, [[
      local core = require "fileapi.core"
      local base, count = arg[1], tonumber(arg[2])
      local share, m = assert(core.share()), assert(core.multi())
      local idle = {}
      for i = 1, 4 do idle[i] = assert(core.session(share)) end
      local function request(i)
        local req = { method = "POST", url = base .. "/files", on_progress = function() end,
          headers = { "Authorization: Bearer test-key" } }
        if i % 2 == 0 then
          req.body = '{"directory":"d' .. i .. '"}'
          req.headers[2] = "Content-Type: application/json"
        else
          req.multipart = assert(core.multipart({ { name = "file", filename = "f" .. i, data = "payload " .. i } }))
          req.headers[2] = "Content-Type: " .. req.multipart:content_type()
        end
        return req
      end
      local warm, started, done, before = math.floor(count / 10), 0, 0, nil
      while done < count do
        while #idle > 0 and started < count do
          started = started + 1
          assert(m:add(table.remove(idle), request(started)))
        end
        for _, r in ipairs(m:run(5)) do
          assert(r[2] and r[2].status == 201, tostring(r[3]))
          done = done + 1
          idle[#idle + 1] = r[1]
          if done == warm then before = rss() end
        end
      end
      io.write(before, " ", rss())
    ]])
    local stats = mock:stats()
    assert.same(count, stats.requests)
    assert.is_true(stats.connections <= 4, stats.connections)
  end)
end)
